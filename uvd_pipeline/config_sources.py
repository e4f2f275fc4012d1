"""The config of each source type (`sources:` entries, told apart by `type`): where its input
lies, how its sentences are made and what it may cost, each field checked before the build
starts. `sources/` reads the inputs; these models only say what was asked for."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, field_validator,
                      model_serializer, model_validator)

from sources.coco import INDEX_MEMORY_MB
from uvd_pipeline.config_base import Strict
from uvd_pipeline.config_labelers import LabelerSpec
from uvd_pipeline.mixture import NAME_PATTERN


# names Windows keeps for devices, whatever the case or extension (lower-case: a source name's form)
WINDOWS_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"{port}{n}" for port in ("com", "lpt")
                                                                  for n in range(10))})


class LaterFields(BaseModel):
    """A source config that gained fields after builds were made with it: each left out of the
    saved config (and its hash) while at the default it had when added (`LATER_DEFAULTS`), so an
    output built before the field existed is still the same configuration: it resumes, or, built
    by an earlier render revision, is refused naming `--replace-changed` (not `--overwrite`)."""

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {}
    EVERY_SOURCE_LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"layout_check": True}  # `SourceBase`'s

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name, default in {**self.EVERY_SOURCE_LATER_DEFAULTS, **self.LATER_DEFAULTS}.items():
            # a tuple default matches its JSON dump (a list) and its python dump (a tuple) alike
            if name in data and _as_lists(data[name]) == _as_lists(default):
                del data[name]
        return data


def _as_lists(value: Any) -> Any:
    """`value` with each tuple as a list: `mode="json"` dumps a tuple field as a list."""
    return [_as_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


class SourceBase(Strict, LaterFields):
    name: str = Field(pattern=NAME_PATTERN, description="lower_snake_case, unique within the build")
    path: str = Field(min_length=1, description="local path or fsspec URL")
    num_shards: StrictInt = Field(4, ge=1, le=1_000_000, description="output shards of the train split")
    num_val_shards: StrictInt = Field(1, ge=1, le=1_000_000, description="output shards of the val split")
    enabled: StrictBool = True
    layout_check: StrictBool = Field(True, description="refuse a `type` that does not fit what `path` holds "
                                     "(`sources.layout_fit`); false where the path is right for the type")
    # `path` as the config wrote it, before `config_paths` made it absolute: a missing root's error
    # says how it was read from that (`unit_render.root_problem`); None for a model made otherwise
    _written_path: str | None = PrivateAttr(None)

    def with_resolved_path(self, update: dict[str, Any]) -> "SourceBase":
        """This source with `update` (its absolute `path`, ...), remembering the path as written."""
        resolved = self.model_copy(update=update)
        resolved._written_path = self.path
        return resolved

    @property
    def written_path(self) -> str | None:
        return self._written_path

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


class LaionSourceConfig(SourceBase, LinkOptions):
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


class CocoSourceConfig(SourceBase, LinkOptions, PairSource):
    # index_memory_mb is not in the content hash (`RUN_ONLY_FIELDS`); left out of the saved config at
    # its first default so that a build record from before it still reads as the same configuration
    # (panoptic_dir likewise, at its first default)
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"index_memory_mb": 6144, "panoptic_dir": None}
    type: Literal["coco"]
    split: str = Field("val2017", min_length=1,
                       description="names the files: instances_<split>.json (else panoptic_<split>.json), images")
    annotation_files: tuple[str, ...] = Field((), description="default: annotations/{instances,person_keypoints}_<split>.json")
    images_dir: str | None = Field(None, description="default: images/<split> or <split>")
    tasks: tuple[Literal["detection", "segmentation", "pose"], ...] = ("detection", "segmentation", "pose")
    panoptic_dir: str | None = Field(None, description="a COCO panoptic file's PNG folder; default: beside the JSON, "
                                     "its name without .json (annotations/panoptic_<split>/)")
    index_memory_mb: StrictInt = Field(INDEX_MEMORY_MB, ge=64, le=1_048_576, description="memory the parsed annotation files "
                                 "may take in each worker process, judged before any parse from what they hold (one "
                                 "pass counting their objects, strings and numbers; about 5x a COCO-like file of "
                                 "polygons, 11x one of small boxes; over it the build stops naming the files)")


class MpiiSourceConfig(SourceBase, LinkOptions, PairSource):
    type: Literal["mpii"]
    annotation_file: str = "annotations/mpii_train.json"
    images_dir: str = "images"


class SegmentationSourceConfig(SourceBase, LinkOptions, PairSource):
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"tasks": ("segmentation",)}
    type: Literal["segmentation"]
    layout: Literal["ade20k", "ade20k_full", "cityscapes", "voc", "sbd"] = "ade20k"
    tasks: tuple[Literal["segmentation", "detection"], ...] = Field(
        ("segmentation",), min_length=1, description="voc only: also detection, the boxes of Annotations/<id>.xml "
        "for the ids of ImageSets/Main/")

    @model_validator(mode="after")
    def _detection_of_voc(self) -> "SegmentationSourceConfig":
        if "detection" in self.tasks and self.layout != "voc":
            raise ValueError(f"tasks: detection is read from PASCAL VOC's Annotations/ (layout: voc); {self.layout} "
                             "holds label maps only: remove detection")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: {list(self.tasks)} names a task twice")
        return self


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


class AnnotatedVideoSourceConfig(SourceBase, LinkOptions):
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
