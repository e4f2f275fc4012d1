"""From validated source configs to reader objects, and how each source's units are grouped.

Readers hold plain values only, so they pickle to Beam workers.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Callable

from sources import fsio
from sources.laion import LaionSource
from sources.paths import missing_under
from uvd_pipeline.dedup import DEDUP_SOURCE_TYPES

if TYPE_CHECKING:
    from sources.coco import CocoSource
    from sources.video import VideoSource

# kind -> how the config names its number of units per sentence
UNITS_PER_SENTENCE_FIELD = {"category": "sentence_length", "pairs": "pairs_per_sentence",
                            "multitask": "tuples_per_sentence"}


def _labeler(spec) -> tuple[tuple[str, Any], ...] | None:
    return None if spec is None else tuple(sorted(spec.model_dump().items()))


def _coco_files(c) -> tuple[tuple[str, ...], str]:
    files = tuple(c.annotation_files)
    if not files:
        candidates = (f"annotations/instances_{c.split}.json", f"annotations/person_keypoints_{c.split}.json")
        files = tuple(f for f in candidates if fsio.exists(fsio.join(c.path, f)))
        panoptic = f"annotations/panoptic_{c.split}.json"  # read alone, where neither of the others is there
        files = files or tuple(f for f in (panoptic,) if fsio.exists(fsio.join(c.path, f)))
        if not files:  # the split names the default files
            raise missing_under("split", c.path, candidates[0], "COCO: ",
                                f"; nor {candidates[1]}, nor {panoptic}: set split or annotation_files")
    images = c.images_dir
    if images is None:
        nested = f"images/{c.split}"
        images = nested if fsio.exists(fsio.join(c.path, nested)) else c.split
    return files, images


# source types that read every file below their path; others pick part of a shared root by a
# field (a COCO root's `split`, ImageNet's `splits`) or derive from another's images by design
WHOLE_FOLDER_TYPES = frozenset({"laion", "video"})


def overlap_notices(config) -> dict[str, list[str]]:
    """Two enabled sources of one type over one folder, or one inside the other's: every file of
    the shared part is read, rendered and counted by both (a second web source over the same
    download gave 20 of 20 images as its duplicates), which is seldom meant (`WHOLE_FOLDER_TYPES`)."""
    found: dict[str, list[str]] = {}
    local = [(c, os.path.abspath(path)) for c in config.enabled_sources if (path := fsio.local_path(c.path))]
    for i, (first, first_path) in enumerate(local):
        for second, second_path in local[i + 1:]:
            if first.type != second.type or first.type not in WHOLE_FOLDER_TYPES:
                continue
            if second_path == first_path:
                what = f"reads the folder source {first.name} reads ({second.path})"
            elif second_path.startswith(first_path.rstrip(os.sep) + os.sep):
                what = f"lies inside source {first.name}'s folder ({first.path}), which reads it too"
            elif first_path.startswith(second_path.rstrip(os.sep) + os.sep):
                what = f"holds source {first.name}'s folder ({first.path}) and reads it too"
            else:
                continue
            found.setdefault(second.name, []).append(
                f"{second.name}: {what}: each shared file is read, rendered and counted by both (a copy of an image is a "
                "duplicate reject); give the sources folders apart, or disable one")
    return found


def source_notices(config) -> dict[str, list[str]]:
    """Warnings about each enabled source's input as a whole (img2dataset-resized images, a
    folder another source of its type reads too, a VOC export's labelmap.txt giving two classes
    one colour), once per source; a source that cannot tell says
    nothing (its own errors surface while listing)."""
    notices = overlap_notices(config)
    for c in config.enabled_sources:
        voc = c.type == "segmentation" and c.layout == "voc"  # its labelmap.txt's shared colours
        if c.type != "laion" and not voc:
            continue
        try:
            found = (make_source(c) if voc else _web_images(c)).notices()
        except (OSError, ValueError):
            continue
        if found:
            notices.setdefault(c.name, []).extend(found)
    return notices


def _web_images(c) -> LaionSource:
    return LaionSource(c.name, c.path, c.format, c.follow_links, getattr(c, "image_column", None),
                       getattr(c, "caption_column", None), getattr(c, "hf_config", None))


def _coco(c, seed: int, max_pixels: int | None) -> CocoSource:
    files, images = _coco_files(c)
    return _reader("coco", "CocoSource")(c.name, c.path, files, images, tuple(c.tasks), c.follow_links,
                                         c.index_memory_mb, c.panoptic_dir)


def _video(c, seed: int, max_pixels: int | None) -> VideoSource:
    from sources.video import VideoSource, video_budget

    extra = {} if max_pixels is None else {"max_pixels": max_pixels}
    return VideoSource(c.name, c.path, tuple(c.strides), c.frames, c.max_windows_per_stride, c.decoder,
                       limits=video_budget(c.time_budget_s, c.memory_budget_mb), follow_links=c.follow_links, **extra)


def _reader(module: str, name: str) -> Any:
    """Class `name` of `sources.<module>`, imported when a source of its type is made: a build
    imports the readers of the types it reads, not all of them (every build paid for the
    segmentation, multiview, MPII, ImageNet, multitask and annotated-video modules; issue 18's
    startup)."""
    return getattr(importlib.import_module(f"sources.{module}"), name)


# source type -> its reader, from the validated source config, the build seed and the build's
# `image.max_pixels` (None: the reader's default)
READERS: dict[str, Callable[[Any, int, int | None], Any]] = {
    "laion": lambda c, seed, max_pixels: _web_images(c),
    "imagenet": lambda c, seed, max_pixels: _reader("imagenet", "ImageNetSource")(
        c.name, c.path, tuple(c.splits), c.follow_links),
    "video": _video,
    "objaverse": lambda c, seed, max_pixels: _reader("multiview", "ObjaverseSource")(
        c.name, c.path, c.views, c.follow_links),
    "co3d": lambda c, seed, max_pixels: _reader("multiview", "Co3dSource")(
        c.name, c.path, c.views, tuple(c.categories), tuple(c.pair_tasks), c.follow_links),
    "coco": _coco,
    "mpii": lambda c, seed, max_pixels: _reader("mpii", "MpiiSource")(
        c.name, c.path, c.annotation_file, c.images_dir, c.follow_links),
    "segmentation": lambda c, seed, max_pixels: _reader("segmentation", "SegmentationSource")(
        c.name, c.path, c.layout, c.follow_links, c.tasks),
    "stereo": lambda c, seed, max_pixels: _reader("stereo", "StereoSource")(
        c.name, c.path, tuple(c.tasks), disparity_folder=c.disparity_folder, left_folder=c.left_folder,
        right_folder=c.right_folder, labeler=_labeler(c.labeler), follow_links=c.follow_links),
    "multitask": lambda c, seed, max_pixels: _reader("multitask", "MultiTaskSource")(
        c.name, c.path, follow_links=c.follow_links),
    "annotated_video": lambda c, seed, max_pixels: _reader("annotated_video", "AnnotatedVideoSource")(
        c.name, c.path, c.layout, c.sentence_layout, c.frames, c.stride, c.follow_links, c.official_split),
    "synthetic": lambda c, seed, max_pixels: _reader("derived", "DerivedPairsSource")(
        c.name, _web_images(c), tuple(c.tasks), c.tasks_per_image, seed),
    "pseudo_labeled": lambda c, seed, max_pixels: _reader("derived", "DerivedPairsSource")(
        c.name, _web_images(c), (c.task,), 1, seed, _labeler(c.labeler)),
}


def make_source(c, seed: int = 0, max_pixels: int | None = None):
    """The reader for one configured source. `max_pixels` (the build's `image.max_pixels`) lets a
    video source refuse oversized frames when planning; rendering applies it in any case."""
    reader = READERS.get(c.type)
    if reader is None:
        raise ValueError(f"unknown source type {c.type!r}")
    return reader(c, seed, max_pixels)


def one_image_sentences(c) -> bool:
    """Whether each image of the source is a whole sentence of its own (web images), rather than
    a unit grouped with others (classes, pairs, tuples) or a sentence by itself (clips, objects)."""
    return c.type == "laion"


def deduplicated(config, c) -> bool:
    """Whether the source's images take part in the build's deduplication (`uvd_pipeline.dedup`)."""
    return config.dedup.enabled and c.type in DEDUP_SOURCE_TYPES


def units_per_sentence(c) -> dict[str, int]:
    """For each grouped kind a source can produce, how many units make one sentence."""
    lengths = {}
    for kind, field in UNITS_PER_SENTENCE_FIELD.items():
        if hasattr(c, field):
            lengths[kind] = int(getattr(c, field))
    return lengths


def labeler_specs(c) -> list[tuple[str, dict[str, Any], str | None]]:
    """(config field, spec, task) of every labeler a source uses, for checks before the build."""
    specs = []
    if getattr(c, "labeler", None) is not None:
        task = c.task if c.type == "pseudo_labeled" else "depth"
        specs.append(("labeler", c.labeler.model_dump(), task))
    return specs
