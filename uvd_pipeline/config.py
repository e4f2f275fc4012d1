"""The build configuration: typed, validated YAML that fails before any work starts.

Every error names the field path (``sources[2].strides[0]``) and what is allowed, and unknown
fields are errors, not silently ignored typos. Relative paths are taken from the config file's
folder, so a config works from whatever directory it is run. The file itself (a regular UTF-8
file, safe YAML, no key given twice, aliases bounded) is read by `uvd_pipeline.config_file`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, ValidationError,
                      field_validator, model_serializer, model_validator)

from sources.coco import INDEX_MEMORY_MB
from sources.records import name_text
from transforms.phash import band_width, probes_per_band
from uvd_pipeline.config_file import ConfigError, read_yaml
from uvd_pipeline.mixture import GROUPS, NAME_PATTERN, PAPER_MIX
# moved to config_file, still importable from here
from uvd_pipeline.config_file import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, DuplicateKey, UniqueKeyLoader  # noqa: F401

FORMAT_VERSION = 1
# source fields that say how a build runs, not what it outputs: a build resumed with another value
# (say a higher limit on a bigger machine) is the same configuration, so they stay out of the hash
RUN_ONLY_FIELDS: set[str] = {"index_memory_mb"}
# Bumped whenever the same input and config render to other bytes (a decoder, resize or ordering
# fix), and part of the config hash: a build resumed by a newer version must not mix the earlier
# version's stored units and committed shards with its own renders, so it is refused as changed
# (--replace-changed renders it again). 2 (2026-12-05): label maps resized at pixel centres, palette
# label PNGs read by index, Cityscapes void ids, Taskonomy edge threshold, 16-bit grey transparency,
# multi-view azimuths about the object, class-folder names in NFC, COCO boxes clipped to the image
# and masks layered by their pixels, COCO keypoints at their pixels' centres, joints outside the
# image not drawn on the padding, what operating systems and tools leave in a dataset read as
# os_metadata / hidden_file rejects (a Mac's `._x` files made frames, views, pairs and samples),
# keys over 200 characters and labels over 160 bytes cut with a digest (tar member names that
# GNU tar can create). 3 (2026-12-05, later): DCT-scaled JPEG decodes placed where the full decode
# puts their pixels (sizes not a multiple of 8 x the scale, turns that reverse an axis), TIFF
# orientations 5-8 turned once, MPO photos on the JPEG paths; a sentence's shard from its key as a
# case-insensitive file system sees it (twins in case or Unicode form share a shard and are told
# apart there), members named beyond ASCII in pax headers; video: cover art never read as the
# video, interlaced and size-changing streams decoded by PyAV. 4 (2026-12-05, evening): MPII's
# shoulders joined to the upper neck as MMPose draws them, CVAT's rotated boxes drawn turned, COCO
# crowd regions left out counted in the detection lineage, file names in keys and lineage taken in
# NFC (a Mac's NFD copy), KITTI depth pairs without the right view, Taskonomy labels under their
# real name, MMPose's mpii_val.json in the val split, Cityscapes JPEG images paired, COCO text ids
# and Windows-separated file names read, an unreadable caption its own reject, unit_failed
# rejects keyed by the unit's files inside the source root, drawing budgets for detection, pose
# and mask targets (annotation_too_large), video cropped off the left edge shown as declared and
# odd-height 4:2:0 video decoded by PyAV, Kaggle's ImageNet download and Omnidata's read as they lie,
# CO3D views ordered along the walk and picked evenly in azimuth (its set lists' evaluation
# sequences in val, cameras at one point a bad_camera), web images whose bytes differ from
# img2dataset's recorded hash a hash_mismatch reject. 5 (2026-12-05, night): 16-bit PGM/PPM and
# 32-bit TIFF samples scaled by the depth their file declares, CMYK images with their CMYK profile
# converted by it, PNG gAMA applied where no profile or sRGB chunk is (to the colour before
# alpha is composited on white, a 16-bit grey PNG's from its 16 bits), signed 16-bit and 32-bit
# TIFF samples offset by half their range (they were clipped at 0); VIPSeg's and JHMDB's official
# split lists honoured (their evaluation videos in val, VIPSeg's unlabelled test videos one reject each);
# camera raws (DNG, CR2, NEF, ARW, ...) an unsupported_format reject, never their preview rendered;
# Cityscapes images with only _labelTrainIds rendered; link loops, photo-library sidecars (a Takeout
# .jpg.json, .xmp, .AAE) and Android's .trashed-/.pending- files rejects of their own. 6 (2026-12-05,
# late): a GIF frame past its logical screen cut at the screen's edge, grey ICC profiles applied,
# a 16-bit colour PNG's gAMA applied from its 16 bits, a PNG's non-sRGB cHRM converted as Chromium
# does, members of multi-page and animated files recording their page count. 7 (2026-12-05,
# night): a tar member appended again (`tar -r`) built as extraction keeps it (the last copy), MPO
# and ICO page counts; of several video tracks the one the ffmpeg CLI picks, a stream growing
# mid-way keeping its frames before the growth; COCO: Label Studio's 0-based ids read one up
# whether class 0 is used or not, one file under two image ids rejected; web images: a Hub repo's
# card `configs:` giving splits and files, `metadata.parquet` and `*_file_name` columns read, a
# split layout's held-out folders (`test/`, `validation/`) in val; ImageNet-style class folders:
# every held-out folder of class folders read as val. 8 (2026-12-06): untagged HD video converted
# as BT.709 as players guess it (the sample's bigbuckbunny.mp4), VP9 that changes size on an inter
# frame decoded by PyAV at each frame's size; COCO brush masks without a box drawn from their runs,
# detectron2's rotated boxes drawn, 17 keypoints named otherwise than COCO's person drawn without
# its skeleton; a Hub repo without card configs building only the files `datasets` loads.
# 9 (2026-12-06): label maps' 255 (VOC's void border) drawn unlabelled, not as class 255; a label
# map or KITTI view without its image counted; a `memory://x` root read, not refused as outside.
# 10 (2026-12-06): every reject names its `input`; nested ADE20K and Cityscapes pairs keyed by
# their folders; the full ADE20K release (`ade20k_full`); label maps stored as a wholly grey palette
# read as their greys; a cut video's partial packet shown before whole frames is no frame unless
# its decoder shows one; PNGs whose text chunks pass Pillow's limits decoded without them, a bad CRC
# on a chunk that changes pixels refused; a gzip tail judged alike on every path.
# 11 (2026-12-06): KITTI pairs split by scene (`_10` and `_11` together), CO3D depth drawn only
# where its depth mask says (read as CO3D's loader reads it); MPEG-TS/PS files joined end to end
# read part by part (an open GOP's leading frames at a part's start hidden); Matroska frames
# before zero shown; PNG colour profiles past 1 MiB applied; Hugging Face ClassLabels inside lists
# and dicts, or declared by the card (the card's winning over the parquet's, as in `datasets`),
# named; an ImageFolder's top-level metadata.parquet read; tar members named `./x` keyed `x`;
# an MPEG-TS whose SEI follows the slice (split access units) read as the CLI shows it.
RENDER_REVISION = 11
MAX_DEDUP_PROBES = 1024  # index buckets one image may look up (bands x probes per band)
MAX_WORKERS = 1024  # local workers; more is a typo, not a machine
MAX_TORCH_THREADS = 1024  # torch threads per worker process; more is a typo (each one a thread of every worker)
MAX_THREAD_WORKERS = 2  # `beam.direct_running_mode: auto` runs up to this many local workers as threads
MAX_PIXELS_LIMIT = 1 << 30  # a header guard above this (3 GiB of RGB) guards nothing


# names Windows keeps for devices, whatever the case or extension (lower-case: a source name's form)
WINDOWS_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"{port}{n}" for port in ("com", "lpt")
                                                                  for n in range(10))})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageConfig(Strict):
    size: StrictInt = Field(256, ge=16, le=4096, description="side of the square images (LVM: 256)")
    resize: Literal["squash", "center_crop", "pad"] = Field(
        "center_crop", description="squash = the LVM scripts' plain resize; center_crop / pad keep aspect"
    )
    pad_value: StrictInt = Field(0, ge=0, le=255, description="grey level of the padding under `pad`")
    max_pixels: StrictInt = Field(178_956_970, ge=1, le=MAX_PIXELS_LIMIT,
                            description="decompression-bomb guard on header size")
    png_compression: StrictInt = Field(1, ge=0, le=9, description="zlib level of the lossless rendered images; 0 and 1 "
                                 "(speed) use one PNG row filter, 2-9 (size) libpng's adaptive choice; 1 "
                                 "(the default) deflates with zlib-ng, faster than zlib for no larger files")
    decode_time_s: StrictFloat = Field(60.0, gt=0, le=86_400, description="CPU seconds one input image's (or "
                                 "annotation map's) decode may take: a JPEG, PNG or still WebP whose header bounds its decode within it decodes "
                                 "in the rendering process, any other image in a decoding process killed past it (the "
                                 "image a `decode_timeout` reject). CPU, not wall, seconds: the same on a busy machine. "
                                 "A lossless JPEG 2000 of a grainy photo at the memory budget took 21 s here")

    @field_validator("size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"must be a multiple of 16 (the VQGAN downsamples by 16), got {value}")
        return value


class SplitConfig(Strict):
    val_fraction: StrictFloat = Field(0.05, ge=0.0, lt=1.0, description="share of groups hashed into 'val'")


class SourceBase(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="lower_snake_case, unique within the build")
    path: str = Field(min_length=1, description="local path or fsspec URL")
    num_shards: StrictInt = Field(4, ge=1, le=1_000_000, description="output shards of the train split")
    num_val_shards: StrictInt = Field(1, ge=1, le=1_000_000, description="output shards of the val split")
    enabled: StrictBool = True

    @field_validator("name")
    @classmethod
    def _not_a_device(cls, value: str) -> str:
        """A source's name is a folder of the output (`rendered/<name>/`, `tokens/<name>/`): one that
        Windows reserves for a device could not be copied or extracted there."""
        if value in WINDOWS_DEVICE_NAMES:
            raise ValueError(f"{value!r} is a device name on Windows, where the output's folder rendered/{value}/ "
                             f"could not exist; choose another (e.g. {value}_data)")
        return value


class LinkOptions(Strict):
    """For sources whose readers check where every path leads (`sources.paths`)."""

    follow_links: StrictBool = Field(False, description="read files and folders that are symbolic links leading "
                               "out of `path` (default: each is a reject `outside_root`)")


class LaterFields(BaseModel):
    """A source config that gained fields after builds were made with it: each left out of the
    saved config (and its hash) while at the default it had when added (`LATER_DEFAULTS`), so an
    output built before the field existed is still the same configuration: it resumes, or, built
    by an earlier render revision, is refused naming `--replace-changed` (not `--overwrite`)."""

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name, default in self.LATER_DEFAULTS.items():
            if name in data and data[name] == default:
                del data[name]
        return data


class LaionSourceConfig(SourceBase, LinkOptions, LaterFields):
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"image_column": None, "caption_column": None, "hf_config": None}
    type: Literal["laion"]
    format: Literal["auto", "webdataset", "files", "parquet", "huggingface", "folder"] = "auto"
    image_column: str | None = Field(None, min_length=1, description="`huggingface`: the Image column to build "
                                     "(default: the files' only one)")
    caption_column: str | None = Field(None, min_length=1, description="`huggingface`, or a `folder` with "
                                       "`metadata.jsonl`/`metadata.csv`: the caption's column "
                                       "(default: `text`, else `caption`, else `txt`, else none)")
    hf_config: str | None = Field(None, min_length=1, description="`huggingface` (or a `folder` with a card): "
                                  "the config of the repo's README.md `configs:` to build (default: the card's "
                                  "default config)")


class ImageNetSourceConfig(SourceBase, LinkOptions):
    type: Literal["imagenet"]
    splits: tuple[Literal["train", "val"], ...] = ("train", "val")
    sentence_length: StrictInt = Field(16, ge=1, le=64)
    remainder: Literal["drop", "wrap"] = Field(
        "drop", description="drop: leftover images of a class are counted as rejects; "
        "wrap: the last sentence is completed with the class's first images"
    )


class VideoSourceConfig(SourceBase, LinkOptions):
    type: Literal["video"]
    strides: tuple[StrictInt, ...] = Field((10, 20, 30), min_length=1)
    frames: StrictInt = Field(16, ge=2, le=64)
    max_windows_per_stride: StrictInt | None = Field(None, ge=1)
    decoder: Literal["auto", "decord", "pyav"] = Field(
        "auto", description="auto/pyav: PyAV, frame-exact in every accepted container; decord: used where it is "
        "frame-exact too (the rest falls back to PyAV, noted in the lineage)")
    time_budget_s: StrictFloat = Field(600.0, gt=0, le=86_400, description="CPU seconds one video's probe or "
                                 "decode may take before its decoder is killed and its clips become `decode_timeout` "
                                 "rejects: its decoding process's work, not the seconds waited, so the same on a busy "
                                 "machine (one waiting without working is killed after 3x, at least 60 s); ample for "
                                 "clips of minutes, raise it for hour-long high-resolution videos")
    memory_budget_mb: StrictInt = Field(1536, ge=512, le=1_048_576, description="resident memory of one video's "
                                  "decoding process: judged before decoding from what the stream declares (frame "
                                  "size, pixel format, frames the decoder holds; over it: `video_too_large` rejects, "
                                  "or frames converted straight to the working size where that fits) and watched "
                                  "while decoding (the process is killed past it: `decode_memory` rejects)")

    @field_validator("strides")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 1 for s in value):
            raise ValueError(f"every stride must be >= 1, got {list(value)}")
        return value


class GroupedOptions(Strict):
    """Options of sources whose units (pairs, tuples) are grouped into sentences."""

    remainder: Literal["drop", "wrap"] = Field(
        "drop", description="drop: leftover units are counted as rejects; wrap: the last sentence is "
        "completed with the group's first units"
    )


class PairSource(GroupedOptions):
    pairs_per_sentence: StrictInt = Field(8, ge=1, le=32, description="LVM: 8 (image, target) pairs = 16 images")


class LabelerParams(Strict):
    """A labeler spec: its `name` and parameters, each checked before the build starts (a bad
    value would otherwise fail every pair of the source inside the workers). Dumped as written (the
    parameters given, not the defaults), as the spec was before its parameters were checked: the
    dump is what the labeler gets and what the build's config hash and lineage hold."""

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k == "name" or k in self.model_fields_set}


class CannyLabeler(LabelerParams):
    name: Literal["canny"]
    sigma: StrictFloat = Field(0.33, ge=0.0, le=1.0, description="Canny's thresholds are (1 - sigma) and "
                               "(1 + sigma) times the image's median grey")


class SgbmLabeler(LabelerParams):
    name: Literal["sgbm"]
    num_disparities: StrictInt = Field(64, ge=1, le=1024, description="disparity search range in pixels (rounded up "
                                       "to a multiple of 16, at most half the image width)")
    block_size: StrictInt = Field(5, ge=1, le=51, description="side of the matched blocks, odd")

    @field_validator("block_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd (OpenCV's StereoSGBM matches blocks around a centre pixel), got {value}")
        return value


class MmposeLabeler(LabelerParams):
    name: Literal["mmpose"]
    config: str | None = Field(None, min_length=1, description="the model's MMPose config file (a local path)")
    checkpoint: str | None = Field(None, min_length=1, description="the model's weights (a local path)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    score_threshold: StrictFloat = Field(0.3, ge=0.0, le=1.0, description="keypoints scored at or below it are "
                                         "not drawn")

    @field_validator("device")
    @classmethod
    def _torch_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"expects cpu, cuda or cuda:N, got {value!r}")
        return value


LABELER_MODELS: dict[str, type[LabelerParams]] = {"canny": CannyLabeler, "sgbm": SgbmLabeler, "mmpose": MmposeLabeler}
LabelerSpec = Annotated[Union[tuple(LABELER_MODELS.values())], Field(discriminator="name")]  # type: ignore[valid-type]


class ObjaverseSourceConfig(SourceBase, LinkOptions):
    type: Literal["objaverse"]
    views: StrictInt = Field(24, ge=2, le=64, description="views per sentence, ordered by azimuth")


class Co3dSourceConfig(SourceBase, LinkOptions):
    type: Literal["co3d"]
    views: StrictInt = Field(24, ge=2, le=64)
    categories: tuple[str, ...] = ()
    pair_tasks: tuple[Literal["depth", "segmentation"], ...] = Field(
        (), description="also emit (frame, depth) and (frame, mask) pairs"
    )
    pairs_per_sentence: StrictInt = Field(8, ge=1, le=32)
    remainder: Literal["drop", "wrap"] = "drop"


class CocoSourceConfig(SourceBase, LinkOptions, PairSource, LaterFields):
    # index_memory_mb is not in the content hash (`RUN_ONLY_FIELDS`); left out of the saved config at
    # its first default so that a build record from before it still reads as the same configuration
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"index_memory_mb": 6144}
    type: Literal["coco"]
    split: str = Field("val2017", min_length=1, description="names the files: instances_<split>.json, images")
    annotation_files: tuple[str, ...] = Field((), description="default: annotations/{instances,person_keypoints}_<split>.json")
    images_dir: str | None = Field(None, description="default: images/<split> or <split>")
    tasks: tuple[Literal["detection", "segmentation", "pose"], ...] = ("detection", "segmentation", "pose")
    index_memory_mb: StrictInt = Field(INDEX_MEMORY_MB, ge=64, le=1_048_576, description="memory the parsed annotation files "
                                 "may take in each worker process, judged before any parse from their sizes (about "
                                 "9x; over it the build stops naming the files): COCO train2017's two files take "
                                 "~5.9 GiB")


class MpiiSourceConfig(SourceBase, LinkOptions, PairSource):
    type: Literal["mpii"]
    annotation_file: str = "annotations/mpii_train.json"
    images_dir: str = "images"


class SegmentationSourceConfig(SourceBase, LinkOptions, PairSource):
    type: Literal["segmentation"]
    layout: Literal["ade20k", "ade20k_full", "cityscapes"] = "ade20k"


class StereoSourceConfig(SourceBase, LinkOptions, PairSource):
    type: Literal["stereo"]
    tasks: tuple[Literal["stereo", "depth"], ...] = ("stereo", "depth")
    disparity_folder: str = "disp_noc_0"
    left_folder: str = Field("image_2", description="the left views' folder (KITTI 2012: colored_0)")
    right_folder: str = Field("image_3", description="the right views' folder (KITTI 2012: colored_1)")
    labeler: LabelerSpec | None = Field(None, description="depth targets for pairs without disparity, e.g. {name: sgbm}")


class MultiTaskSourceConfig(SourceBase, LinkOptions, GroupedOptions):
    type: Literal["multitask"]
    tuples_per_sentence: StrictInt = Field(3, ge=1, le=12, description="LVM: 3 tuples of 5 = 15 images")


class AnnotatedVideoSourceConfig(SourceBase, LinkOptions, LaterFields):
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"official_split": 1}
    type: Literal["annotated_video"]
    layout: Literal["vipseg", "jhmdb"]
    sentence_layout: Literal["interleaved", "separated"] = "interleaved"
    frames: StrictInt = Field(8, ge=1, le=32, description="frames per sentence (each with its annotation)")
    stride: StrictInt = Field(1, ge=1)
    official_split: StrictInt = Field(1, ge=1, le=3, description="JHMDB only: the official split whose lists "
                                      "(splits/<action>_test_split<N>.txt) put its clips in train or val; results "
                                      "are reported on split 1 or averaged over builds of 1, 2 and 3")

    @model_validator(mode="after")
    def _split_of_jhmdb(self) -> "AnnotatedVideoSourceConfig":
        if "official_split" in self.model_fields_set and self.layout != "jhmdb":
            raise ValueError(f"official_split: only JHMDB numbers its splits (layout: jhmdb); {self.layout} has one "
                             "set of lists (train.txt, val.txt, test.txt), always read: remove official_split")
        return self


class SyntheticSourceConfig(SourceBase, PairSource, LinkOptions):
    type: Literal["synthetic"]
    format: Literal["auto", "webdataset", "files", "folder"] = "auto"
    tasks: tuple[Literal["colorization", "inpainting", "denoising", "low_light", "deraining", "style"], ...] = (
        "colorization", "inpainting", "denoising", "low_light", "deraining", "style")
    tasks_per_image: StrictInt = Field(1, ge=1, le=6)


class PseudoLabeledSourceConfig(SourceBase, PairSource, LinkOptions):
    type: Literal["pseudo_labeled"]
    format: Literal["auto", "webdataset", "files", "folder"] = "auto"
    task: Literal["edges", "pose", "depth"]
    labeler: LabelerSpec


SOURCE_MODELS = {
    "laion": LaionSourceConfig, "imagenet": ImageNetSourceConfig, "video": VideoSourceConfig,
    "objaverse": ObjaverseSourceConfig, "co3d": Co3dSourceConfig, "coco": CocoSourceConfig,
    "mpii": MpiiSourceConfig, "segmentation": SegmentationSourceConfig, "stereo": StereoSourceConfig,
    "multitask": MultiTaskSourceConfig, "annotated_video": AnnotatedVideoSourceConfig,
    "synthetic": SyntheticSourceConfig, "pseudo_labeled": PseudoLabeledSourceConfig,
}
SOURCE_TYPES = tuple(SOURCE_MODELS)
SourceConfig = Annotated[
    Union[tuple(SOURCE_MODELS.values())], Field(discriminator="type")  # type: ignore[valid-type]
]


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam finds it only by this full name
# The runners Beam knows by name (`StandardOptions.ALL_KNOWN_RUNNERS`; a test holds them equal), kept
# here so that validating a config does not import Beam (a second on a small machine).
BEAM_RUNNERS = tuple(f"apache_beam.runners.{path}" for path in (
    "dataflow.dataflow_runner.DataflowRunner", "direct.direct_runner.BundleBasedDirectRunner",
    "direct.direct_runner.DirectRunner", "direct.direct_runner.SwitchingDirectRunner",
    "interactive.interactive_runner.InteractiveRunner", "portability.flink_runner.FlinkRunner",
    "portability.fn_api_runner.FnApiRunner", "portability.kafka_streams_runner.KafkaStreamsRunner",
    "portability.portable_runner.PortableRunner", "portability.prism_runner.PrismRunner",
    "portability.spark_runner.SparkRunner", "test.TestDirectRunner", "test.TestDataflowRunner"))
RUNNER_NAMES = {path.rpartition(".")[2]: path for path in BEAM_RUNNERS}
DOTTED_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"


def runner_name(value: str) -> str | None:
    """The runner Beam would pick for `value` by name, as its class name (Beam ignores case and
    lets the "Runner" suffix go: `direct`, `flinkrunner`); None for a name Beam does not know."""
    by_lower = {name.lower(): name for name in RUNNER_NAMES}
    return by_lower.get(value.lower(), by_lower.get(value.lower() + "runner"))


MEMORY_PATTERN = r"^(auto|0|\d+(\.\d+)?\s*([kKMGT]i?B|B)?)$"
# Default partitions of a Dask grouping: each costs n x n split tasks (64: 4096, a scheduler round
# trip each), while a local cluster past 64 threads has more threads than one machine has cores.
MAX_DEFAULT_GROUPINGS = 64


class DaskConfig(Strict):
    """Where `beam.runner: dask` runs: an existing scheduler, or a cluster of local worker processes
    that the build starts and stops (the worker settings are for that local cluster only)."""

    address: str | None = Field(None, description="scheduler address, e.g. tcp://10.0.0.5:8786; "
                                "none: start a local cluster for this build")
    workers: StrictInt = Field(2, ge=1, le=256, description="worker processes of the local cluster")
    threads_per_worker: StrictInt = Field(1, ge=1, le=64, description="threads per local worker process")
    memory_limit: str = Field("auto", description="per local worker, e.g. 4GiB; auto: the machine's memory "
                              "shared out; 0: no limit")
    partition_size: StrictInt = Field(1, ge=1, description="work units per Dask partition (one task per "
                                "partition and step: small partitions spread the work over workers)")
    shuffle_partitions: StrictInt | None = Field(None, ge=1, le=4096, description="partitions of every grouping "
                                           "(at least the cluster's worker threads, so each step's work spreads; each "
                                           "costs tasks); none: the local cluster's threads up to 64, 8 on a given "
                                           "scheduler")

    @property
    def groupings(self) -> int:
        """Partitions of every grouping. The local cluster's threads by default: a grouping of n
        partitions is n x n split tasks, and 8 on a 2-thread cluster made 272 of a 300-image
        build's 583 tasks, each a scheduler round trip; a given scheduler's threads are not
        known before it runs, so 8 there. At most `MAX_DEFAULT_GROUPINGS`: 256 workers x 64 threads
        made 16,384 partitions, past the field's own limit of 4096, and 16,384^2 split tasks."""
        if self.shuffle_partitions is not None:
            return self.shuffle_partitions
        return 8 if self.address else min(self.workers * self.threads_per_worker, MAX_DEFAULT_GROUPINGS)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^([a-z]+://)?[^\s:/]+:\d+$", value):
            raise ValueError(f"a scheduler address is [tcp://]host:port, got {value!r}")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.match(MEMORY_PATTERN, value.strip()):
            raise ValueError(f"memory_limit is a size like 4GiB or 512MB, 'auto' or 0, got {value!r}")
        return value.strip()


class BeamConfig(Strict):
    runner: str = Field("DirectRunner", description="DirectRunner (local processes), dask, any Beam runner by "
                        "name (DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...), or a runner class "
                        "by its full dotted path")
    dask: DaskConfig | None = Field(None, description="with runner: dask (default: a 2-worker local cluster)")
    direct_num_workers: StrictInt = Field(2, ge=1, le=MAX_WORKERS, description="local workers (DirectRunner)")
    direct_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = Field(
        "auto", description="local workers as threads of this process or as processes; auto: in_memory for 1 "
        f"worker, multi_threading up to {MAX_THREAD_WORKERS}, multi_processing beyond (see `running_mode`)")
    early_render: StrictBool = Field(True, description="with the local workers as threads (multi_threading): render "
                               "input units in a pool that starts before Beam does; same output bytes "
                               "(see uvd_pipeline.early_render)")
    early_render_in: Literal["auto", "threads"] = Field(
        "auto", description="where the early render pool renders; auto: in forked processes (no render "
        "waits for Python's lock beside the build's own Python work) where the platform forks (Linux) "
        "and the build's process runs no other thread yet, else in threads")
    options: tuple[str, ...] = Field((), description="pass-through Beam flags, e.g. --project=...")

    @property
    def local(self) -> bool:
        return self.runner == "DirectRunner"

    @property
    def running_mode(self) -> str:
        """The local runner's mode, `auto` resolved. Worker processes cost a fixed ~1 s a build on 2
        cores (each imports Beam and our modules, then is stopped): a 12-image build took 2.6-2.9 s
        in processes, 1.6-1.7 s as threads, 900 JPEGs 7.0-8.1 s against 6.2-6.7 (same bytes). Threads
        share one GIL, which rendering holds for about a tenth of its time (py-spy --gil: 0.7 of ~7
        worker-seconds), so a few threads lose little to it and many would queue on it: processes
        beyond `MAX_THREAD_WORKERS`."""
        if self.direct_running_mode != "auto":
            return self.direct_running_mode
        if self.direct_num_workers == 1:
            return "in_memory"
        return "multi_threading" if self.direct_num_workers <= MAX_THREAD_WORKERS else "multi_processing"

    @property
    def is_dask(self) -> bool:
        return self.runner == "dask"

    @property
    def dask_settings(self) -> DaskConfig:
        return self.dask or DaskConfig()

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        """A runner Beam knows by name (written as its class name), `dask`, or a runner class by its
        full dotted path (loaded by `build.check_runner` before the build starts). A misspelt name
        would fail only once the output was prepared."""
        if value in ("DaskRunner", DASK_RUNNER):
            raise ValueError("write runner: dask (the build passes Beam's DaskRunner by its full name)")
        if value == "dask" or re.match(DOTTED_PATH, value):
            return value
        known = runner_name(value)
        if known is None:
            guess = _closest(value, ["dask", *RUNNER_NAMES])
            raise ValueError(
                f"unknown runner {value!r}; " + (f"did you mean {guess}? " if guess else "") +
                "the runners known by name are DirectRunner, dask, "
                f"{', '.join(name for name in RUNNER_NAMES if name != 'DirectRunner')}; any other Beam runner is "
                "accepted by its full dotted class path (module.Class, e.g. my_company.beam.CustomRunner)")
        return known

    @model_validator(mode="after")
    def _dask_section(self) -> "BeamConfig":
        if self.dask is not None and not self.is_dask:
            raise ValueError(f"dask: is read only with runner: dask (runner is {self.runner!r}); remove it or set "
                             "runner: dask")
        return self

    @field_validator("options")
    @classmethod
    def _flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for flag in value:
            if not flag.startswith("--"):
                raise ValueError(f"each option must be a --flag[=value], got {flag!r}")
            if flag.split("=", 1)[0] == "--dask_client_address":  # Beam's own flag: the build never saw it
                raise ValueError(f"{flag}: give the scheduler as beam.dask.address (with runner: dask), not as Beam's "
                                 "flag: the build then checks that it answers and that its workers run this project's "
                                 "code, and starts no local cluster beside it")
        return value


class MixtureConfig(Strict):
    """The token mix to train on (see `uvd_pipeline.mixture`); it shapes `mixture.yaml` only."""

    groups: dict[str, StrictFloat] = Field(
        default_factory=lambda: dict(PAPER_MIX),
        description="token share per group: single_images, image_sequences, annotated_images, annotated_video "
        "(default: the paper's UVDv1 mix)")
    sources: dict[str, StrictFloat] = Field(
        default_factory=dict, description="weight of a source within its group (default: the tokens it holds)")
    mode: Literal["paper", "stream"] = Field("paper", description="paper: BOS/EOS counted per sentence")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if name not in GROUPS:
                raise ValueError(f"unknown group {name!r}; allowed: {', '.join(GROUPS)}")
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one group needs a positive weight")
        return value

    @field_validator("sources")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of {name!r} must be a finite number > 0, got {weight}")
        return value


class DedupConfig(Strict):
    """Deduplication of image units (web and class images) across all sources; see
    `uvd_pipeline.dedup` for the scope, the fingerprints and which copy is kept."""

    enabled: StrictBool = Field(True, description="drop duplicate web and class images before sentences are made")
    exact: StrictBool = Field(True, description="drop copies whose rendered pixels are identical (sha256)")
    near: StrictBool = Field(True, description="drop copies whose 64-bit pHash is within hamming_threshold bits")
    hamming_threshold: StrictInt = Field(6, ge=0, le=32, description="largest pHash Hamming distance of a near copy")
    bands: StrictInt = Field(4, ge=1, le=64, description="pHash bands of the near-duplicate index (a divisor of 64)")

    @field_validator("bands")
    @classmethod
    def _divides_64(cls, value: int) -> int:
        band_width(value)  # the index's own check (a ValueError that names the rule)
        return value

    @model_validator(mode="after")
    def _usable(self) -> "DedupConfig":
        if self.enabled and not (self.exact or self.near):
            raise ValueError("enabled, but neither exact nor near is on; set dedup.enabled: false instead")
        if self.enabled and self.near:
            probes = self.bands * probes_per_band(self.hamming_threshold, self.bands)
            if probes > MAX_DEDUP_PROBES:
                raise ValueError(
                    f"bands {self.bands} with hamming_threshold {self.hamming_threshold} make every "
                    f"image look up {probes} index buckets (at most {MAX_DEDUP_PROBES}); use more bands (each band "
                    f"may then differ by hamming_threshold // bands bits)")
        return self


class TokenizerConfig(Strict):
    enabled: StrictBool = Field(True, description="write Arrow token shards after the rendered shards")
    checkpoint: str = Field("embedded", min_length=1, description="'embedded' (the repo's small tokenizer) or a "
                            "muse-format folder (config.json + pytorch_model.bin), e.g. the LVM tokenizer")
    batch_size: StrictInt = Field(16, ge=1, le=4096, description="images per forward pass")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: StrictBool = Field(True, description="torch.compile the encoder (with zero-padded last batches: one "
                          "static shape): the sample build's Tokenize ran 2.7x faster on this project's 2-core CPU machine "
                          "(7.7 against 2.8 images per worker-second), for 12-35 s of compile per worker process; "
                          "codes differ from the eager forward's by rounding in about 2 of 100,000 (near ties), so "
                          "token stats record it and switching it re-tokenizes. Off for tiny runs or exact eager codes")
    precision: Literal["fp32", "tf32", "fp16", "bf16"] = Field(
        "fp32", description="GPU arithmetic: fp32 (codes of the plain forward), tf32, fp16 or bf16 (faster; "
        "some codes differ by rounding, fp16 fewest: see `make bench`); with device auto and no GPU the "
        "codec computes in fp32")
    tune_kernels: StrictBool = Field(
        False, description="GPU with compile: inductor times launch configs of its generated kernels (faster "
        "encode, a much longer compile; figures in the README); the pick can differ between processes, so codes "
        "may differ by rounding between workers: off, so token bytes never depend on where they were made")
    threads: StrictInt | None = Field(1, ge=1, le=MAX_TORCH_THREADS, description="torch threads per worker process (one worker per "
                                "core is the default; worker threads of one process each run on this "
                                "many; fixed so token bytes never depend on the machine: CPU codes differ "
                                "by rounding at near ties between thread counts, and null, torch's own "
                                "count, is the machine's cores)")
    accelerator: str | None = Field(None, description="Beam resource hint for the tokenize step only, e.g. "
                                    "'type:nvidia-l4;count:1;install-nvidia-driver'")

    @model_validator(mode="after")
    def _precision_fits_device(self) -> "TokenizerConfig":
        if self.precision == "tf32" and self.device == "cpu":
            raise ValueError("precision tf32 is a GPU mode; with device: cpu use fp32 (exact) or fp16/bf16")
        return self


class BuildConfig(Strict):
    version: Literal[1] = 1
    output: str = Field(min_length=1, description="local path or fsspec URL of the build")
    seed: StrictInt = Field(0, ge=0)
    image: ImageConfig = ImageConfig()
    split: SplitConfig = SplitConfig()
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    dedup: DedupConfig = DedupConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    mixture: MixtureConfig = MixtureConfig()
    beam: BeamConfig = BeamConfig()

    @field_validator("version", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # Literal[1] would take True for 1
            raise ValueError(f"expects 1, got {value}")
        return value

    @model_validator(mode="after")
    def _something_enabled(self) -> "BuildConfig":
        if not self.enabled_sources:
            names = ", ".join(s.name for s in self.sources)
            raise ValueError(f"sources: every source has enabled: false ({names}), so there is nothing to build; "
                             "set enabled: true on at least one (or --set "
                             f"sources.{self.sources[0].name}.enabled=true)")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "BuildConfig":
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise ValueError(f"sources[{index}].name: {source.name!r} is used twice; names must be unique")
            seen.add(source.name)
        for name in self.mixture.sources:
            if name not in seen:
                raise ValueError(f"mixture.sources.{name}: no source is named {name!r}; sources are "
                                 f"{', '.join(sorted(seen))}")
        return self

    @property
    def enabled_sources(self) -> tuple[Any, ...]:
        return tuple(s for s in self.sources if s.enabled)

    # source name -> the root its output was first built from, where the input has moved since
    # (`with_output_roots`): the output keeps its config hash and its unit store's names
    _output_roots: dict[str, str] = PrivateAttr(default_factory=dict)

    def with_output_roots(self, roots: dict[str, str]) -> "BuildConfig":
        """This config, its hash (and its unit store's names) taken with each named source's input
        at its earlier root: a dataset moved since (`mv`, a disk mounted elsewhere) is the same input."""
        copy = self.model_copy()
        copy._output_roots = dict(roots)
        return copy

    def output_root(self, name: str) -> str:
        """The root a source's units are named under in the output (its `path` unless it moved)."""
        return self._output_roots.get(name) or next(s.path for s in self.sources if s.name == name)

    @property
    def output_roots(self) -> dict[str, str]:
        return dict(self._output_roots)

    def content_hash(self) -> str:
        """A digest of everything that shapes the output bytes (not how or where it runs)."""
        # the tokenizer is not part of it: retokenizing keeps the rendered shards valid; nor is
        # the mixture, which shapes only mixture.yaml (rewritten at the end of every build)
        content = self.model_dump(mode="json", exclude={"beam": True, "output": True, "tokenizer": True,
                                                        "mixture": True, "sources": {"__all__": RUN_ONLY_FIELDS}})
        for source in content["sources"]:
            source["path"] = self._output_roots.get(source["name"], source["path"])
        content["format_version"] = FORMAT_VERSION
        content["render_revision"] = RENDER_REVISION
        blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _union_tag(loc: tuple[Any, ...], index: int) -> bool:
    """Whether `loc[index]` is the branch pydantic names inside a tagged union (a source's `type`,
    a labeler's `name`), which the user never wrote as a key."""
    part = loc[index]
    if part in LABELER_MODELS:
        return index > 0 and loc[index - 1] == "labeler"
    return part in SOURCE_TYPES and index > 0 and isinstance(loc[index - 1], int)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif _union_tag(loc, index):
            continue  # pydantic names the union branch; the user never wrote it
        elif isinstance(part, str) and part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`, to list its allowed fields."""
    model: type[BaseModel] | None = BuildConfig
    node = data
    for index, part in enumerate(loc[:-1]):
        if isinstance(part, int):
            node = node[part] if isinstance(node, (list, tuple)) and part < len(node) else None
            continue
        if _union_tag(loc, index):
            model = SOURCE_MODELS.get(part) or LABELER_MODELS[part]
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        if part == "sources":
            model = None
            continue
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _describe(error: dict[str, Any], data: Any) -> str:
    loc = tuple(error["loc"])
    where = _location(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc, data)
        allowed = ", ".join(model.model_fields) if model else "see configs/sample.yaml"
        guess = _closest(loc[-1], model.model_fields if model else ())
        return f"{where}: unknown field; allowed fields here: {allowed}" + (f"; did you mean {guess}?" if guess else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = error.get("ctx", {}).get("tag")
        if error.get("ctx", {}).get("discriminator") == "'name'":  # a labeler
            names = [repr(name) for name in LABELER_MODELS]
            got = f"got {tag!r}" if kind == "union_tag_invalid" else "required field is missing"
            guess = _closest(tag, LABELER_MODELS) if kind == "union_tag_invalid" else None
            got += f"; did you mean {guess!r}?" if guess else ""
            return f"{where}.name: {got}; allowed: {', '.join(names[:-1])} or {names[-1]}"
        guess = _closest(tag, SOURCE_TYPES) if kind == "union_tag_invalid" else None
        if guess:
            return f"{where}.type: got {tag!r}; did you mean {guess}? It must be one of {', '.join(SOURCE_TYPES)}"
        return f"{where}.type: must be one of {', '.join(SOURCE_TYPES)}"
    if kind in ("int_type", "float_type") and isinstance(error.get("input"), bool):
        number = "a whole number" if kind == "int_type" else "a number"
        return f"{where}: expects {number}, got {error['input']} (YAML reads true/false, yes/no, on/off as booleans)"
    if kind in ("int_type", "float_type") and (written := _number_as_text(error.get("input"), kind == "int_type")):
        number = "a whole number" if kind == "int_type" else "a number"
        return (f"{where}: expects {number}, got the text {error['input']!r}; write {written} without quotes (YAML "
                "reads a quoted value, and an exponent without a dot such as 1e9, as text)")
    if kind in SHAPES:
        return f"{where}: expects {_shape_wanted(kind, loc, data)}, got {_shape_got(error.get('input'))}"
    if kind == "bool_type":
        return f"{where}: expects true or false, got {error.get('input')!r}"
    if kind == "string_unicode":  # a path with a name in another encoding: `os` hands its bytes over as surrogates
        return not_utf8(where, str(error.get("input")))
    if kind == "too_short":
        return f"{where}: needs at least {error.get('ctx', {}).get('min_length', 1)} entry; got none"
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        guess = _closest(error.get("input"), re.findall(r"'([^']*)'", expected))
        return f"{where}: got {error.get('input')!r}; " + (f"did you mean {guess!r}? " if guess else "") + f"allowed: {expected}"
    if kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{where}: got {error.get('input')!r}; use lower_snake_case (a-z, 0-9, _) starting with a letter"
    message = error["msg"].removeprefix("Value error, ")
    if where == "(top level)" and re.match(r"[\w.\[\]]+: ", message):
        return message  # a check of the whole config that names its field itself
    shown = repr(error.get("input"))
    return f"{where}: {message}" + (f" (got {shown})" if len(shown) <= 60 and shown not in message else "")


def _number_as_text(value: Any, whole: bool) -> str | None:
    """The number a text field value spells (`"256"`, an unquoted `1e9`), written as YAML reads it
    as a number; None if it spells none (or, for a whole number, a fraction)."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip().replace("_", ""))
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if whole:
        return str(int(number)) if number.is_integer() else None
    return repr(number)


def _closest(word: Any, choices: Any) -> str | None:
    """The one choice a misspelt `word` most likely meant (`sorces` -> `sources`), if any is close."""
    if not isinstance(word, str):
        return None
    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None


SHAPES = {"model_type": "a section of fields", "model_attributes_type": "a section of fields",
          "dict_type": "a mapping", "tuple_type": "a list",
          "list_type": "a list", "string_type": "text"}


# the first fields of a tagged union's entry (a source, a labeler), which `_model_at` cannot name
UNION_FIELDS = {"sources": ["name", "type", "path"], "labeler": ["name"]}


def _union_name(loc: tuple[Any, ...]) -> str | None:
    """`sources` for a source entry (`sources[2]`), `labeler` for a labeler, else None."""
    if len(loc) == 2 and loc[0] == "sources" and isinstance(loc[1], int):
        return "sources"
    return "labeler" if loc[-1] == "labeler" else None


def _shape_wanted(kind: str, loc: tuple[Any, ...], data: Any) -> str:
    """What a field of the wrong shape should hold, as the YAML would write it."""
    if kind in ("tuple_type", "list_type"):
        return "a list (entries starting with '- ')"
    if kind in ("model_type", "model_attributes_type"):
        model = _model_at((*loc, None), data)
        names = list(model.model_fields)[:2] if model else UNION_FIELDS.get(_union_name(loc), [])
        return SHAPES[kind] + (f" ({', '.join(names)}, ...)" if names else "")
    return SHAPES[kind]


def _shape_got(value: Any) -> str:
    """A value of the wrong shape, named as YAML wrote it."""
    if value is None:
        return "nothing (the key has no value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _relevant(errors: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """Drop a list's length complaint when its items already failed (pydantic reports both), and a
    required field's absence when an unknown field beside it is its misspelling (`pth` for `path`):
    the unknown field's message already says which one was meant."""
    item_error_parents = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
    meant = set()
    for e in errors:
        if e["type"] == "extra_forbidden":
            model = _model_at(tuple(e["loc"]), data)
            guess = _closest(e["loc"][-1], model.model_fields if model else ())
            meant.add((*e["loc"][:-1], guess))
    return [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in item_error_parents)
            and not (e["type"] == "missing" and tuple(e["loc"]) in meant)]


def parse_config(data: Any, base_dir: str = ".", origin: str = "config") -> BuildConfig:
    """Validate a config mapping; relative paths are resolved against `base_dir`."""
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"the top level is {_shape_got(data)}"
        raise ConfigError(f"{origin}: {what}; a config is a mapping of fields (version, output, sources, ...), "
                          "as in configs/sample.yaml")
    try:
        config = BuildConfig.model_validate(data)
    except ValidationError as exc:
        errors = _relevant(exc.errors(), data)
        problems = "\n  ".join(_describe(e, data) for e in errors)
        raise ConfigError(f"{origin}: {len(errors)} problem(s):\n  {problems}") from None
    try:
        config = _resolve_paths(config, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    _check_output_apart(config, origin)
    return config


def _resolve(path: str, base_dir: str, field: str) -> str:
    """A local path with `~` and `$VAR` / `${VAR}` expanded, relative to `base_dir`; a URL as is.
    An unset variable is refused, naming `field`: left in place it named a folder `$HOME`."""
    if "://" in path or (os.path.isabs(path) and "$" not in path):
        return path  # as written: an absolute path is part of the config hash
    expanded = os.path.expandvars(os.path.expanduser(path))
    unset = re.search(r"\$(\w+|\{[^}]*\})", expanded)
    if unset:
        raise ConfigError(f"{field}: {unset.group(0)} in {path!r} is not set in the environment; set it, or "
                          "write the path out")
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), expanded))  # absolute: fsio lists absolute paths


def _resolve_labeler(labeler: LabelerParams | None, base_dir: str, field: str) -> LabelerParams | None:
    """An mmpose labeler's config and checkpoint files, resolved like every other path of the config."""
    if not isinstance(labeler, MmposeLabeler):
        return labeler
    files = {name: _resolve(getattr(labeler, name), base_dir, f"{field}.{name}") for name in ("config", "checkpoint")
             if getattr(labeler, name) is not None}
    return labeler.model_copy(update=files)


def _resolve_source(source: Any, base_dir: str, field: str) -> Any:
    update = {"path": _resolve(source.path, base_dir, f"{field}.path")}
    if getattr(source, "labeler", None) is not None:
        update["labeler"] = _resolve_labeler(source.labeler, base_dir, f"{field}.labeler")
    return source.model_copy(update=update)


def _resolve_paths(config: BuildConfig, base_dir: str) -> BuildConfig:
    sources = tuple(_resolve_source(s, base_dir, f"sources[{i}]") for i, s in enumerate(config.sources))
    tokenizer = config.tokenizer
    if tokenizer.checkpoint != "embedded":
        tokenizer = tokenizer.model_copy(update={"checkpoint": _resolve(tokenizer.checkpoint, base_dir,
                                                                        "tokenizer.checkpoint")})
    return config.model_copy(update={"output": _resolve(config.output, base_dir, "output"), "sources": sources,
                                     "tokenizer": tokenizer})


def _comparable(path: str) -> str:
    """A path with links resolved (local) or a normalised URL, ending in a separator."""
    if "://" in path:
        return path.rstrip("/") + "/"
    return os.path.join(os.path.realpath(path), "")


def _check_output_apart(config: BuildConfig, origin: str) -> None:
    """Refuse an output inside a source (the next build would read this build's files) and a
    source inside the output (a rebuild with --overwrite would delete its own input)."""
    output = _comparable(config.output)
    for index, source in enumerate(config.sources):
        path = _comparable(source.path)
        if output.startswith(path):
            raise ConfigError(f"{origin}: output {config.output!r} lies inside sources[{index}].path "
                              f"{source.path!r}; put the output outside every source folder")
        if path.startswith(output):
            raise ConfigError(f"{origin}: sources[{index}].path {source.path!r} lies inside output "
                              f"{config.output!r}; put the output outside every source folder")


def with_overrides(data: Any, overrides: dict[str, Any]) -> Any:
    """The raw config mapping with `overrides` set: dotted keys name nested fields
    (`beam.direct_num_workers`; `sources.0.num_shards` or `sources.web.num_shards` for a list entry by
    index or name); a callable value gets the current value
    (None when unset) and returns the new one. The result is validated like the file itself, so an
    override can never make a config the file could not be. A key that cannot be set (its parent is
    a value, or a list index past the end) is refused here, since validation would never see it."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for dotted, value in overrides.items():
        *parents, name = dotted.split(".")
        node: Any = data
        for depth, part in enumerate(parents):
            node = _child_for_update(node, part, dotted, ".".join(parents[:depth + 1]))
        if isinstance(node, list):
            index = _list_index(node, name, dotted, ".".join(parents))
            node[index] = value(node[index]) if callable(value) else value
        else:
            node[name] = value(node.get(name)) if callable(value) else value
    return data


def _list_index(node: list, part: str, dotted: str, where: str) -> int:
    """The entry of a list that `part` names: its index, or the `name` of a mapping in it (a source)."""
    if part.isdigit() and int(part) < len(node):
        return int(part)
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in node]
    if part in names:
        return names.index(part)
    known = ", ".join(str(n) for n in names if n is not None)
    guess = _closest(part, [n for n in names if n is not None])
    raise ConfigError(f"{dotted}: {where} is a list of {len(node)}; name an entry by its index "
                      f"0..{len(node) - 1}" + (f" or its name ({known})" if known else "")
                      + (f"; did you mean {guess}?" if guess else ""))


def _child_for_update(node: Any, part: str, dotted: str, where: str) -> Any:
    """A copy of `node[part]` put back in place (so the file's own data is never changed), to set a
    field under it: a missing or empty section becomes a new mapping."""
    if isinstance(node, list):
        index = _list_index(node, part, dotted, where.rpartition(".")[0])
        child = node[index]
        node[index] = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else child
        return node[index]
    child = node.get(part)
    if child is None:
        child = {}
    elif isinstance(child, (dict, list)):
        child = type(child)(child)
    else:
        raise ConfigError(f"{dotted}: {where} holds the value {child!r}, not a section with fields; "
                          f"set {where} itself")
    node[part] = child
    return child


def not_utf8(where: str, value: str) -> str:
    """The message for a path whose name holds bytes that are not UTF-8 (`os` hands them over as
    lone surrogates), whether the config file, `--output` or `--set` gave it."""
    return (f"{where}: {name_text(value)} holds bytes that are not UTF-8 (a name written in another encoding, "
            "such as latin-1); the build writes its paths into JSON, YAML and Arrow, which hold UTF-8 text only: "
            "rename the folder to a UTF-8 name (convmv -f latin1 -t utf8 --notest PATH) or give another path")


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options as overrides for `load_config`: KEY is a dotted field path
    (`tokenizer.batch_size`, `sources.0.enabled`, `sources.web.enabled`), VALUE a YAML scalar (`32`, `true`, `null`,
    `text`), so a value means what it would mean written in the file."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY a dotted field path, "
                              "e.g. --set tokenizer.batch_size=32")
        if key in overrides:
            raise ConfigError(f"--set {key} is given twice; give it once")
        if any("\udc80" <= c <= "\udcff" for c in text):  # a shell word of non-UTF-8 bytes: YAML reads no such text
            raise ConfigError(not_utf8(f"--set {key}", text.strip().strip("'\"")))
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: {text!r} is not a YAML value; quote text in the shell, "
                              f"e.g. --set '{key}=\"...\"'") from None
        if isinstance(value, (dict, list)):
            raise ConfigError(f"--set {key}: give one scalar value (a number, true/false, null or "
                              "text); write lists and sections in the config file")
        overrides[key] = value
    return overrides


def load_config(path: str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read and validate a YAML config file. `overrides` (see `with_overrides`) are set before
    validation; errors then name the overridden field."""
    data = read_yaml(path)
    origin = path
    if overrides:
        data = with_overrides(data, overrides)
        origin = f"{path} with {', '.join(overrides)} from the command line"
    return parse_config(data, os.path.dirname(os.path.abspath(path)), origin=origin)


def config_summary(config: BuildConfig) -> str:
    lines = [f"output: {config.output}", f"image: {config.image.size}px {config.image.resize}"]
    for s in config.enabled_sources:
        lines.append(f"source {s.name} ({s.type}) <- {s.path} [{s.num_shards} shards/split]")
    beam = config.beam
    if beam.local:
        how = {"in_memory": "in this process", "multi_threading": "as threads of this process",
               "multi_processing": "as processes"}[beam.running_mode]
        lines.append(f"workers: {beam.direct_num_workers} {how} (beam.direct_running_mode: {beam.direct_running_mode})")
    return "\n".join(lines)
