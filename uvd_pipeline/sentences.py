"""Visual sentences and how they are assembled from rendered images (pure functions).

A sentence is an ordered list of size x size images (stored as lossless PNG bytes) plus the
lineage of every member. How each kind groups its images:

- image (web): one image per sentence.
- category (ImageNet): 16 images of one class and split.
- pairs: 8 (image, target) pairs of one task and split.
- multitask: 3 tuples (image, normals, edges, depth, segmentation); the annotation order is
  shuffled once per sentence (seeded by its id) and shared by its tuples.
  Grouped kinds put a group's units in a seeded hash order and cut runs; the remainder is either
  dropped, each leftover counted as a reject (`remainder_dropped`), or (`wrap`) the last run is
  completed with the group's first units. A group smaller than one sentence is rejected
  (`group_too_small`).
- video, multiview, annotated_video: whole sentences straight from one record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from sources.records import Reject, texts_of
from uvd_pipeline.keys import stable_hash


@dataclass(frozen=True)
class RenderedUnit:
    """What one record renders to before grouping: one image (ImageNet), an (image, target) pair,
    or a tuple of an image and its annotations. `label` is what units are grouped by (the class
    of an ImageNet image, the task of a pair)."""

    key: str
    source: str
    split: str
    group: str
    images: tuple[bytes, ...]
    members: tuple[dict[str, Any], ...]
    label: str | None = None
    kind: str = "category"  # the grouped sentence kind it belongs to: category | pairs | multitask
    fingerprint: Any = None  # a dedup.Fingerprint when the unit takes part in deduplication
    input: str = ""  # where its record's input lies (`sources.records.record_input`): its rejects name it


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
        """Strict JSON: a NaN or inf that reached a header raises here (a bug upstream) instead of
        being written as a bare NaN token that strict parsers refuse. UTF-8: lineage naming a file
        whose name is not UTF-8 shows its bytes escaped (`texts_of`)."""
        text = json.dumps(self.header(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(texts_of(self.header()), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode()


def image_sentence(unit: RenderedUnit) -> Sentence:
    return Sentence(unit.key, unit.source, "image", "none", unit.split, unit.images, unit.members)


@dataclass(frozen=True)
class Slot:
    """Where one unit goes: which sentence and at which position."""

    sentence_id: str
    position: int
    length: int
    label: str
    split: str = ""


def plan_group_sentences(
    source: str,
    label: str,
    split: str,
    unit_keys: Iterable[str],
    length: int,
    remainder: str,
    seed: int,
    inputs: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, Slot] | Reject]:
    """Cut one group's units (a class, a task) into sentences of `length` units.

    Units are put in a seeded hash order; yields (unit_key, Slot) pairs and, for units that fit
    no sentence, rejects (`remainder_dropped`, or `group_too_small` when not even one sentence
    can be made), each naming its unit's input from `inputs` (key -> `RenderedUnit.input`).
    """
    inputs = inputs or {}
    order = sorted(set(unit_keys), key=lambda k: (stable_hash("order", seed, k), k))
    if len(order) < length:
        for key in order:
            yield Reject(key, source, key, "assemble", "group_too_small",
                         f"{label} has {len(order)} {split} units < {length}", split_hint=split,
                         input=inputs.get(key, ""))
        return
    full, left = divmod(len(order), length)
    runs = [order[i * length : (i + 1) * length] for i in range(full)]
    if left:
        if remainder == "wrap":
            runs.append(order[full * length :] + order[: length - left])
        else:
            for key in order[full * length :]:
                yield Reject(key, source, key, "assemble", "remainder_dropped",
                             f"{label}: {left} {split} units left after {full} sentences of {length}",
                             split_hint=split, input=inputs.get(key, ""))
    for index, run in enumerate(runs):
        sentence_id = f"{source}-{split}-{safe_label(label)}-{index:04d}"
        for position, key in enumerate(run):
            yield key, Slot(sentence_id, position, length, label, split)


def place_units(
    units: Iterable[RenderedUnit], slots: Iterable[tuple[str, Slot]]
) -> tuple[list[tuple[str, Slot, RenderedUnit]], list[Reject]]:
    """The (kind, slot, unit) placements of the units that share one key, and a `duplicate_key`
    reject for each unit that clashes with another of its group (kind, label, split).

    Two inputs with one key would otherwise both land on the key's slots and the sentence would
    be refused whole (`incomplete_sentence`); instead one unit per group is kept, chosen by its
    content (not by arrival order), and only the others are lost, each with a reject of its own.
    """
    by_group: dict[tuple[str, str | None, str], list[RenderedUnit]] = {}
    for unit in units:
        by_group.setdefault((unit.kind, unit.label, unit.split), []).append(unit)
    kept: dict[tuple[str, str | None, str], RenderedUnit] = {}
    rejects: list[Reject] = []
    for group, members in by_group.items():
        ranked = sorted(members, key=_unit_rank) if len(members) > 1 else members
        kept[group] = ranked[0]
        rejects.extend(_clash_reject(unit, ranked[0], len(ranked)) for unit in ranked[1:])
    placements = []
    for kind, slot in slots:
        unit = kept.get((kind, slot.label, slot.split))
        if unit is not None:
            placements.append((kind, slot, unit))
    return placements, rejects


def _unit_rank(unit: RenderedUnit) -> tuple[str, tuple[tuple[str, str], ...]]:
    """By lineage, then by image content: units of one key can share their lineage (a class folder
    in NFC and in NFD is one class, and its `img0.jpg` one file name), and images held as store
    references (`StoredRef`) do not order (the build failed with a TypeError)."""
    return json.dumps(unit.members, sort_keys=True, default=str), tuple(_image_rank(i) for i in unit.images)


def _image_rank(image: Any) -> tuple[str, str]:
    """(content digest, reference) of an image held as bytes or as a reference to stored bytes."""
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest(), ""
    return getattr(image, "sha256", ""), repr(image)


def _describe(unit: RenderedUnit) -> str:
    member = unit.members[0] if unit.members else {}
    named = [f"{k} {member[k]}" for k in ("file", "format", "frame", "width", "height") if k in member]
    return ", ".join(named) or "no lineage"


def _clash_reject(unit: RenderedUnit, kept: RenderedUnit, count: int) -> Reject:
    return Reject(unit.key, unit.source, unit.group, "assemble", "duplicate_key",
                  f"{count} {unit.split} {unit.kind} units of {unit.label} share this key: "
                  f"kept ({_describe(kept)}), dropped ({_describe(unit)})", split_hint=unit.split, input=unit.input)


MAX_LABEL_BYTES = 160  # with the source, split and index, a grouped sentence id stays a file name's 255 bytes


def safe_label(label: str) -> str:
    """`label` for a sentence id: letters, digits, '_' and '-' kept, anything else '_', followed then
    by a short digest of the label, so that labels differing only there ("\U0001F431 cat" and
    "\U0001F436 cat" class folders) keep distinct ids: sharing one, their sentences met in one
    assembly and every image of both was refused as a single `incomplete_sentence`. A label over
    `MAX_LABEL_BYTES` of UTF-8 (a class folder of long names) is cut, before its digest: its members
    named files `tar -xf` could not create."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in label)
    if cleaned == label and len(label.encode()) <= MAX_LABEL_BYTES:
        return label
    cut = cleaned.encode()[: MAX_LABEL_BYTES - 9].decode("utf-8", "ignore")  # whole characters
    return f"{cut}_{hashlib.blake2b(label.encode('utf-8', 'surrogateescape'), digest_size=4).hexdigest()}"


MULTITASK_ANNOTATIONS = ("normals", "edges", "depth", "segmentation")


def arrange(kind: str, sentence_id: str, units: list[RenderedUnit], label: str, seed: int) -> Sentence:
    """The sentence made of `units` (in position order) for a grouped kind."""
    first = units[0]
    if kind == "category":
        meta = {"label": label, "class_name": first.members[0].get("class_name", label)}
        return Sentence(sentence_id, first.source, kind, "none", first.split,
                        tuple(u.images[0] for u in units), tuple(u.members[0] for u in units), meta)
    if kind == "pairs":
        images = tuple(png for u in units for png in u.images)
        members = tuple(m for u in units for m in u.members)
        return Sentence(sentence_id, first.source, kind, label, first.split, images, members, {"pairs": len(units)})
    if kind == "multitask":
        # one task order per sentence, the same for each of its tuples, image first
        order = list(np.random.default_rng(stable_hash("task_order", seed, sentence_id)).permutation(
            len(MULTITASK_ANNOTATIONS)))
        picks = [0] + [1 + int(i) for i in order]
        images = tuple(u.images[i] for u in units for i in picks)
        members = tuple(u.members[i] for u in units for i in picks)
        meta = {"task_order": ["image"] + [MULTITASK_ANNOTATIONS[int(i)] for i in order], "tuples": len(units)}
        return Sentence(sentence_id, first.source, kind, "multitask", first.split, images, members, meta)
    raise ValueError(f"no grouped assembly for kind {kind!r}")


def assemble(kind: str, sentence_id: str, label: str, seed: int,
             placed: Iterable[tuple[int, RenderedUnit]]) -> Sentence | Reject:
    """A grouped sentence from (position, unit) pairs; a gap means a unit went missing."""
    ordered = sorted(placed, key=lambda pair: pair[0])
    positions = [p for p, _ in ordered]
    source, split = ordered[0][1].source, ordered[0][1].split
    if positions != list(range(len(positions))):
        return Reject(sentence_id, source, sentence_id, "assemble", "incomplete_sentence",
                      f"positions {positions}", split_hint=split)
    return arrange(kind, sentence_id, [u for _, u in ordered], label, seed)
