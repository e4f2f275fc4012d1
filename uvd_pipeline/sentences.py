"""Visual sentences and how they are assembled from rendered images (pure functions).

A sentence is an ordered list of size x size images (stored as lossless PNG bytes) plus the
lineage of every member. How each kind groups its images:

- image (web): one image per sentence.
- category (ImageNet): 16 images of one class and split. The class's members are put in a seeded
  hash order and cut into runs of 16; the remainder is either dropped, each leftover image
  counted as a reject (`class_remainder`), or (`wrap`) the last run is completed with the first
  images of the order. A class smaller than one sentence is rejected (`class_too_small`).
- video: the 16 planned frames of one (clip, stride, start), in time order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from sources.records import Reject
from uvd_pipeline.keys import stable_hash

KINDS = ("image", "video", "multiview", "category", "pairs", "multitask", "annotated_video")


@dataclass(frozen=True)
class RenderedImage:
    """One decoded image on the canvas, waiting to be grouped into a sentence."""

    key: str
    source: str
    split: str
    group: str
    png: bytes
    member: dict[str, Any]
    label: str | None = None


@dataclass(frozen=True)
class Sentence:
    sentence_id: str
    source: str
    kind: str
    task: str
    split: str
    images: tuple[bytes, ...]  # PNG bytes, in sentence order
    members: tuple[dict[str, Any], ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def header(self) -> dict[str, Any]:
        return {
            "sentence_id": self.sentence_id,
            "source": self.source,
            "kind": self.kind,
            "task": self.task,
            "split": self.split,
            "n_images": self.n_images,
            "members": list(self.members),
            "meta": self.meta,
        }

    def header_json(self) -> bytes:
        return json.dumps(self.header(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def image_sentence(image: RenderedImage) -> Sentence:
    return Sentence(image.key, image.source, "image", "none", image.split, (image.png,), (image.member,))


@dataclass(frozen=True)
class Slot:
    """Where one member image goes: which sentence and at which position."""

    sentence_id: str
    position: int
    length: int
    label: str


def plan_class_sentences(
    source: str,
    label: str,
    split: str,
    member_keys: Iterable[str],
    length: int,
    remainder: str,
    seed: int,
) -> Iterator[tuple[str, Slot] | Reject]:
    """Cut one class's members into sentences; yields (member_key, Slot) pairs and rejects."""
    order = sorted(set(member_keys), key=lambda k: (stable_hash("order", seed, k), k))
    if len(order) < length:
        for key in order:
            yield Reject(key, source, key, "assemble", "class_too_small",
                         f"{label} has {len(order)} {split} images < {length}", split_hint=split)
        return
    full, left = divmod(len(order), length)
    runs = [order[i * length : (i + 1) * length] for i in range(full)]
    if left:
        if remainder == "wrap":
            runs.append(order[full * length :] + order[: length - left])
        else:
            for key in order[full * length :]:
                yield Reject(key, source, key, "assemble", "class_remainder",
                             f"{label}: {left} {split} images left after {full} sentences of {length}",
                             split_hint=split)
    for index, run in enumerate(runs):
        sentence_id = f"{source}-{split}-{label}-{index:04d}"
        for position, key in enumerate(run):
            yield key, Slot(sentence_id, position, length, label)


def category_sentence(sentence_id: str, source: str, split: str, label: str,
                      placed: Iterable[tuple[int, RenderedImage]]) -> Sentence | Reject:
    """Assemble a class sentence from (position, image) pairs; a gap means a member went missing."""
    ordered = sorted(placed, key=lambda pair: pair[0])
    positions = [p for p, _ in ordered]
    if positions != list(range(len(positions))):
        return Reject(sentence_id, source, sentence_id, "assemble", "incomplete_sentence",
                      f"positions {positions}", split_hint=split)
    images = tuple(image.png for _, image in ordered)
    members = tuple(image.member for _, image in ordered)
    meta = {"label": label, "class_name": members[0].get("class_name", label)}
    return Sentence(sentence_id, source, "category", "none", split, images, members, meta)
