"""The whole build config (`BuildConfig`: its sections, its sources, the checks across them) and
its content hash: what makes two builds the same configuration, with the format version and the
render revision that the hash holds."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, PrivateAttr, StrictInt, field_validator, model_validator

from uvd_pipeline.config_base import Strict
from uvd_pipeline.config_beam import BeamConfig
from uvd_pipeline.config_sections import DedupConfig, ImageConfig, MixtureConfig, SplitConfig, TokenizerConfig
from uvd_pipeline.config_sources import SourceConfig


FORMAT_VERSION = 1
# source fields that say how a build runs, not what it outputs: a build resumed with another value
# (say a higher limit on a bigger machine) is the same configuration, so they stay out of the hash
RUN_ONLY_FIELDS: set[str] = {"index_memory_mb", "layout_check"}
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
# 12 (2026-12-06): joined MPEG-TS whose later parts open with an open GOP and chained Ogg Theora
# read part by part; forward clock jumps over 10 s closed in the stamps as the CLI does (`jumped`);
# a stream declaring no average rate timed at its mean shown rate; PASCAL VOC (`layout: voc`);
# KITTI's rules per frame; a depth or SGBM target with no valid pixel `empty_target`; one split per
# VOC image; a killed img2dataset download's half-written shards left out; tar members named
# `/x.jpg` keyed as extracted; Hugging Face lineage values over 4 KiB left out, marked.
# 13 (2026-12-06): chained Ogg with sound and H.264 in MPEG-PS/VOB (whole or joined end to end)
# read as the CLI shows each part; a link's largest Theora kept; canny and SGBM targets drawn on
# the image's own pixels of a padded canvas, an edge map with no edge `empty_target`; SBD's
# augmented VOC and `layout: sbd`; VOC trees with trainval.txt alone; ImageNet val by the devkit;
# every image of a multi-image webdataset sample (cover and pages) read; files shards read with
# their subfolders; img2dataset and ImageFolder lineage values over 4 KiB left out, marked; a
# 0-byte parquet cell `empty_file`; samples over 256 MiB `sample_too_large`.
# 14 (2026-12-06): video deeper than 8 bits rounded to 8 bits before its RGB conversion; animated
# GIFs read as videos, composited as browsers show them, and animated WebP through Pillow; an
# open-GOP VOB cut's dropped leading frames hidden; COCO panoptic and LVIS read; hard-link tar
# members read within budgets; 16-bit XPM colours; FITS/PAM/16-bit PSD refused; non-UTF-8
# captions decoded with U+FFFD (img2dataset's bytes captions too), one bad metadata line alone lost.
# 15 (2026-12-06): JPEGs damaged inside their scan `decode_error` (zero padding before a marker
# decodes); a cut BigTIFF `truncated`; GIFs of 256 colours composited without FFmpeg's background
# fill; a cut animated WebP keeps its whole frames; every frame of an AV1 clip delivered and its
# lineage naming the codec (`av1`, not `libdav1d`); non-UTF-8 captions in string columns read
# with U+FFFD, their rows built.
# 16 (2026-12-07): a Deflate TIFF whose strip or tile holds no whole zlib stream (libtiff decoded
# it garbled, without a word) `decode_error`; a whole PNG or GIF whose data breaks `decode_error`,
# not `truncated`; a TIFF cut and padded with zeros to its length `truncated`, so an AVIF, HEIC or
# RLE BMP whose coded data ends in 16 or more zero bytes (libavif and libde265 decoded it garbled),
# and a PNG with no IEND ending in zeros whose image stream does not end.
# 17 (2026-12-07): lineage text bounded (`sources.lineage_text`): a caption past 4,096 UTF-8 bytes
# cut (`caption_truncated`), a record's metadata past 16,384 bytes cut to the fields that fit
# (`<name>_truncated`), a plain folder's `.json` capped as a tar's; a `.json` caption past the
# value cap carried as its head, not a `truncated` mark. Smaller captions and records as before.
# Also: a JPEG 2000 of 9-16 bit RGB(A) samples scaled from its full precision (Pillow wrapped full
# scale to 0); a JPEG TIFF damaged inside a strip `decode_error`; a JPEG's or WebP's XMP-only
# orientation ignored; parquet rows without a key keyed by file and row, not all `None`; a binary
# `image` column read as images; a video's alpha (QuickTime RLE, ProRes 4444) composited on white.
# 18 (2026-12-07): colour declared beyond ICC-in-Pillow applied: an AVIF/HEIC nclx box's SDR
# primaries and transfer, a PNG's cICP, a JPEG 2000's (colr method 2), a still GIF's and a BMP V5's
# ICC profile; a 16-bit RGB PNG/TIFF's matrix/TRC profile from its 16 bits; a Lab TIFF's white
# point; a profile whose tables overrun it ignored before LittleCMS reads it. A VP8/VP9 WebM's
# alpha composited on white. Annotated targets: class colours spread in CIELAB (ids 1-255); a crop
# that cuts off every box or label `empty_target`; 1-bit label maps read as 0/1; CO3D masks by
# luma; an undeclared COCO category `bad_annotation`; VOC names of another case one class; ADE20K
# and Cityscapes images of every extension read. Objaverse views picked evenly in azimuth.
# 19 (2026-12-07): H.264 intra refresh decoded from complete recovery points (all clips were
# `decode_failed`, decord's frames late); frames decoded from a damaged packet held back to the next
# key frame, decord's mid-file failures finished by PyAV; .dv .divx .ogm .nut .ivf .apng and raw
# H.264/HEVC read; other files in a video folder counted. EPS never opened (Ghostscript); JPEG
# segment floods and EXIF IFD bombs judged before opening; a miscounted MPO read as its JPEG; X11
# colour names in XPM; a width-0 PNG `no_pixels`; a video container read as an image names itself.
# Parquet row groups over the budget read a few rows at a time; nested Image structs rejected.
# 20 (2026-12-07): COCO/VOC objects that draw nothing (a box without area or outside the image, a
# polygon of under 3 points, a mask painting nothing, a person wholly outside) counted in the
# lineage and the image's other objects kept; an absolute name through a linked folder read; a
# listed image not on disk `missing_image`. CO3D categories without frame annotations rejected,
# frames naming one image one; Objaverse, Taskonomy and KITTI twins of one stem (case, Unicode
# form) one read and the rest `duplicate_key`; a bad Objaverse camera loses its view only; KITTI
# .jpeg and maps of any case. Parquet image columns read from their pages (a too-large row its
# own reject); raw H.264 cut in its last slice; an H.264 SPS sent as new-extradata side data read;
# TIFF IFD bombs behind every header Pillow takes and AVIF/HEIF Exif items judged before opening.
# 21 (2026-12-07): ImageNet-layout keys one per file (a `-` inside a class or file name gets a
# digest: `t/shirt-1` and `t-shirt/1` shared one key and one was dropped as its twin's copy), their
# lineage `file` the path under the split (`train/cat/1.jpg`, not `train/1`); units sharing a key
# with different pixels never decided as one in dedup. VOC names of one's own drawn in one colour
# per dataset, far from every other class's. img2dataset files left by an earlier, killed run
# (`stale_download`) never built. MP4/MOV claiming more samples than the memory budget holds, and
# Y4M frames over max_pixels, `video_too_large`; a decode starting past frame 0 keeps the stream's
# palette and orientation. Parquet pages of every codec read one at a time within the budget.
# 22 (2026-12-07): a local name holding `::` read as itself (fsspec read the name before the `::`,
# even a link leading out of the root); CVAT VOC exports' RGB masks read by their labelmap.txt
# colours (black always unlabelled), own classes past 235 one distinct colour each; COCO-named
# keypoints in another order drawn by their names with or without a skeleton; an ICC profile whose
# name is not ASCII converted (it was ignored whole); a panoptic RGB PNG with tRNS read as RGB;
# video2dataset files left by a killed run `stale_download`; a second moov skipped as FFmpeg does.
RENDER_REVISION = 22


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
        return saved_config_hash(self.model_dump(mode="json", exclude={"beam": True}), self._output_roots)


def saved_config_hash(config: dict[str, Any], roots: dict[str, str]) -> str:
    """`BuildConfig.content_hash` of a config as `build.json` saves it (its JSON dump less `beam`)
    with its sources' earlier roots (`source_roots`), so that `verify` can hold the record's config
    to its hash. Raises KeyError, TypeError or AttributeError for a dict that is no such dump."""
    content = {k: v for k, v in config.items() if k not in ("beam", "output", "tokenizer", "mixture")}
    content["sources"] = [{f: v for f, v in source.items() if f not in RUN_ONLY_FIELDS}
                          for source in config["sources"]]
    for source in content["sources"]:
        source["path"] = roots.get(source["name"], source["path"])
    content["format_version"] = FORMAT_VERSION
    content["render_revision"] = RENDER_REVISION
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
