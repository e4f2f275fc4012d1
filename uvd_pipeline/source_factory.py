"""From validated source configs to reader objects, and how each source's units are grouped.

Readers hold plain values only, so they pickle to Beam workers.
"""

from __future__ import annotations

from typing import Any

from sources import fsio
from sources.annotated_video import AnnotatedVideoSource
from sources.budget import Budget
from sources.coco import CocoSource
from sources.derived import DerivedPairsSource
from sources.imagenet import ImageNetSource
from sources.laion import LaionSource
from sources.mpii import MpiiSource
from sources.multitask import MultiTaskSource
from sources.multiview import Co3dSource, ObjaverseSource
from sources.segmentation import SegmentationSource
from sources.stereo import StereoSource
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
        if not files:
            raise FileNotFoundError(f"no {' or '.join(candidates)} under {c.path}; set annotation_files")
    images = c.images_dir
    if images is None:
        nested = f"images/{c.split}"
        images = nested if fsio.exists(fsio.join(c.path, nested)) else c.split
    return files, images


def source_notices(config) -> dict[str, list[str]]:
    """Warnings about each enabled source's input as a whole (img2dataset-resized images), once
    per source; a source that cannot tell says nothing (its own errors surface while listing)."""
    notices = {}
    for c in config.enabled_sources:
        if c.type != "laion":
            continue
        try:
            found = LaionSource(c.name, c.path, c.format).notices()
        except (OSError, ValueError):
            continue
        if found:
            notices[c.name] = found
    return notices


def make_source(c, seed: int = 0, max_pixels: int | None = None):
    """The reader for one configured source. `max_pixels` (the build's `image.max_pixels`) lets a
    video source refuse oversized frames when planning; rendering applies it in any case."""
    if c.type == "laion":
        return LaionSource(c.name, c.path, c.format)
    if c.type == "imagenet":
        return ImageNetSource(c.name, c.path, tuple(c.splits), c.follow_links)
    if c.type == "video":
        extra = {} if max_pixels is None else {"max_pixels": max_pixels}
        return VideoSource(c.name, c.path, tuple(c.strides), c.frames, c.max_windows_per_stride, c.decoder,
                           limits=Budget(c.time_budget_s, c.memory_budget_mb), **extra)
    if c.type == "objaverse":
        return ObjaverseSource(c.name, c.path, c.views, c.follow_links)
    if c.type == "co3d":
        return Co3dSource(c.name, c.path, c.views, tuple(c.categories), tuple(c.pair_tasks), c.follow_links)
    if c.type == "coco":
        files, images = _coco_files(c)
        return CocoSource(c.name, c.path, files, images, tuple(c.tasks), c.follow_links)
    if c.type == "mpii":
        return MpiiSource(c.name, c.path, c.annotation_file, c.images_dir, c.follow_links)
    if c.type == "segmentation":
        return SegmentationSource(c.name, c.path, c.layout, c.follow_links)
    if c.type == "stereo":
        return StereoSource(c.name, c.path, tuple(c.tasks), disparity_folder=c.disparity_folder,
                            labeler=_labeler(c.labeler), follow_links=c.follow_links)
    if c.type == "multitask":
        return MultiTaskSource(c.name, c.path, follow_links=c.follow_links)
    if c.type == "annotated_video":
        return AnnotatedVideoSource(c.name, c.path, c.layout, c.sentence_layout, c.frames, c.stride, c.follow_links)
    if c.type == "synthetic":
        return DerivedPairsSource(c.name, LaionSource(c.name, c.path, c.format), tuple(c.tasks),
                                  c.tasks_per_image, seed)
    if c.type == "pseudo_labeled":
        return DerivedPairsSource(c.name, LaionSource(c.name, c.path, c.format), (c.task,), 1, seed,
                                  _labeler(c.labeler))
    raise ValueError(f"unknown source type {c.type!r}")


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
