"""Deduplication across sources: which image units are duplicates, and of what (pure functions).

Scope. Only *image units* are deduplicated: web images (`laion`: each becomes a one-image
sentence) and class images (`imagenet`: each becomes a member of a 16-image class sentence).
They are independent samples, so two copies of one picture are a mistake in the data; dropping
one changes nothing else. Units are deduplicated after rendering and *before* class sentences
are assembled, so a class's sentences are cut from the images that survive and stay whole.
Everything else is left alone, on purpose:
- videos, annotated videos: frames of one clip are near-duplicates by nature, and the clips of
  one video at strides 10, 20 and 30 all start on the same frame, so a first-frame hash would
  drop sentences that differ in everything but their first image;
- multi-view objects: the views of one object are meant to look alike;
- pair, tuple, synthetic and pseudo-labelled sources: they reuse one image for several tasks by
  design (and `synthetic`/`pseudo_labeled` typically read the very images a `laion` source
  reads), so the same input image under a different target is not a duplicate.

Fingerprints (`transforms.phash`) are taken on the rendered size x size pixels, the pixels that
are stored and tokenized: `sha256` of the pixels for exact duplicates (byte copies, lossless
re-encodes that decode to the same canvas), the 64-bit DCT pHash for near duplicates (lossy
re-encodes, rescaled copies, small crops or exposure changes) within `hamming_threshold` bits.

Which copy is kept. Units are ranked by (split, key): an evaluation-split member before a train
one, then the smallest stable key; the rank depends on nothing a run can change. A unit is
dropped when a better-ranked unit is its exact copy, or (near) within the threshold. So no two
kept units are within the threshold of each other, in particular none across train and val.
The rule looks at pairs only, so it is the same whatever order or partition the units arrive
in; a chain (a ~ b ~ c with a and c far apart) drops both b and c. The reported twin of a
dropped unit is its best-ranked twin that is kept when there is one (an exact copy first, then
the closest, then the best-ranked); when every twin is itself dropped (a chain), the detail
says so. An exact copy is the exception: it names the best-ranked unit with its pixels, kept or
not (only that one is compared further, see below), and when that unit is itself dropped (a
Pillow and an OpenCV JPEG at one quality decode to the same pixels, and both are near copies of
a better-ranked original) the detail says so: follow that twin's own reject to the kept unit.

Exact duplicates are grouped by their sha256 first; only the best-ranked member of each exact
group takes part in the near search, which keeps the bands' buckets small when one picture is
copied thousands of times (a dropped exact copy would have dropped, and been dropped by, the
same units as its kept twin, which has its pHash). Likewise a bucket makes the twin records a
unit may report, not one per pair (`near_bucket`): copies of one pHash with different pixels (a
logo re-encoded thousands of times) each get one, to the best of their hash, and copies a few
bits apart (crops, rescales) one to each twin not dropped in the bucket and to the closest one
that is; the records grow with the copies (20,000 copies of one hash: 80,000 records; 20,000
over 6,800 hashes within 6 bits: 0.37 million, where every pair made 800 and 300 million; 18,000
copies of a logo below 2,000 variants 1-3 bits off: 0.19 million).

Keys. The decision joins on the unit key, so a source must give distinct pictures distinct keys.
Where two units of different pixels share one anyway, they are not decided as one (a copy of either
dropped both): an exact twin record drops the unit of its own pixels alone, and a near one the
unit of the pHash it compared (`Twin.phash`); the near search keeps every pHash of a key it is sent,
so what is compared never hangs on the order a runner hands a bucket's members over.

Resume. A unit committed to the unit store by an earlier run (see `uvd_pipeline.unit_store`) is
not read again, but its stored results carry its fingerprint, so every run decides from every
unit's fingerprint and a resumed build writes the bytes an uninterrupted one does. Each web
image's fingerprint is also written beside the shard its sentence (or duplicate reject) lands in,
`<shard>.fingerprints.jsonl`: the record of what dedup compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Iterator

import numpy as np

from sources.records import Reject
from transforms.phash import hamming, hamming_rows

# source types whose units are deduplicated (see the module docstring for why only these)
DEDUP_SOURCE_TYPES = ("laion", "imagenet")
# source types whose units' fingerprints are written beside their shards
PERSISTED_TYPES = ("laion",)
FINGERPRINTS_SUFFIX = ".fingerprints.jsonl"
EXACT = "duplicate_exact"
NEAR = "duplicate_near"
STAGE = "dedup"


@dataclass(frozen=True)
class DedupSettings:
    """What the dedup stage needs from the build config, as a small picklable value."""

    exact: bool
    near: bool
    threshold: int
    bands: int

    @classmethod
    def from_config(cls, dedup) -> "DedupSettings":
        return cls(dedup.exact, dedup.near, dedup.hamming_threshold, dedup.bands)


def rank_of(split: str, key: str) -> tuple[int, str]:
    """Of two duplicates the smaller rank is kept: the evaluation split first, then the smallest key."""
    return (0 if split == "val" else 1, key)


@dataclass(frozen=True)
class Fingerprint:
    """The identity of one rendered image unit for deduplication."""

    key: str
    source: str
    split: str
    sha256: str
    phash: int

    @property
    def rank(self) -> tuple[int, str]:
        return rank_of(self.split, self.key)

    def row(self) -> dict[str, str]:
        return {"key": self.key, "source": self.source, "split": self.split, "sha256": self.sha256,
                "phash": f"{self.phash:016x}"}


ProbeRow = str  # a fingerprint's key, source, split and pHash as one JSON string


def probe_row(entry: Fingerprint) -> ProbeRow:
    """What the near search needs of a fingerprint, as one string: the local runner keeps every
    grouped value as a Python object until its group is read, and one string is about 100 bytes
    where a tuple of three strings and an int is nearly 300 (a `Fingerprint` goes through pickle)."""
    return json.dumps([entry.key, entry.source, entry.split, entry.phash], ensure_ascii=False)


def from_probe_row(row: ProbeRow) -> Fingerprint:
    """A `probe_row` back as a fingerprint for the near search (its sha256 is not needed there)."""
    key, source, split, phash = json.loads(row)
    return Fingerprint(key, source, split, "", phash)


def fingerprint_lines(entries: Iterable[Fingerprint]) -> bytes:
    """The sidecar file of a shard: one JSON row per fingerprint, sorted by key."""
    rows = sorted((e.row() for e in entries), key=lambda r: r["key"])
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


@dataclass(frozen=True)
class Twin:
    """`key` should be dropped: `twin` ranks better and is its exact copy or within the threshold."""

    key: str
    source: str
    split: str
    twin: str
    twin_split: str
    reason: str  # duplicate_exact | duplicate_near
    distance: int
    sha256: str = ""  # the dropped unit's pixels: known to an exact record, not to a near one (`from_probe_row`)
    phash: int | None = None  # the dropped unit's pHash (a near record): which unit of a shared key it is

    def preference(self, twin_dropped: bool) -> tuple:
        """How good a reported twin is: kept first, exact first, closest, best-ranked."""
        return (twin_dropped, self.reason != EXACT, self.distance, rank_of(self.twin_split, self.twin))


def _twin(worse: Fingerprint, better: Fingerprint, reason: str, distance: int, sha256: str = "") -> Twin:
    return Twin(worse.key, worse.source, worse.split, better.key, better.split, reason, distance, sha256,
                None if sha256 else worse.phash)


def unique_by_key(entries: Iterable[Fingerprint]) -> list[Fingerprint]:
    """One entry per key (a key read twice, say from two listings, counts once), rank order."""
    by_key: dict[str, Fingerprint] = {}
    for entry in entries:
        by_key.setdefault(entry.key, entry)
    return sorted(by_key.values(), key=lambda e: e.rank)


def exact_group(entries: Iterable[Fingerprint]) -> tuple[Fingerprint, list[Twin]]:
    """One sha256 group: its best-ranked member, and a twin record for each other member."""
    ordered = unique_by_key(entries)
    best = ordered[0]
    return best, [_twin(e, best, EXACT, hamming(e.phash, best.phash), e.sha256) for e in ordered[1:]]


def near_bucket(members: Iterable[tuple[bool, Fingerprint]], threshold: int) -> Iterator[Twin]:
    """Twin records for the pairs within `threshold` among one (band, value) bucket's members:
    every record a dropped unit may report (`Twin.preference`), not one per pair.

    `members` are (stored, fingerprint): stored ones have this exact band value, the others only
    probe it. Stored pairs are compared, and probing x stored; two probing members meet in the
    bucket of one of their own band values, so they need no record here (`_many_hashes` still
    compares them, to know which hashes are dropped).

    Members are taken by pHash (`_by_hash`): one logo re-encoded into thousands of canvases is
    thousands of members with one hash, and a record per pair would be quadratic. A member's
    twins of one hash are all at one distance, and all but that hash's best-ranked member are
    dropped by it, so that best one is the member's preferred twin of them: only the hashes'
    best members are compared (`_few_hashes`). Where a bucket holds many hashes (thousands of
    copies a few bits apart), `_many_hashes` compares them by numpy rows and leaves out the
    records no unit would report.
    """
    stored: dict[tuple[str, int], Fingerprint] = {}  # by key and pHash: two pictures one source gave one
    probing: dict[tuple[str, int], Fingerprint] = {}  # key are both compared, whatever order they came in
    for is_stored, entry in members:
        (stored if is_stored else probing)[entry.key, entry.phash] = entry
    if not stored:  # a value only probed (every copy of one hash probes the same empty neighbours)
        return
    stored_groups, probing_groups = _by_hash(stored.values()), _by_hash(probing.values())
    if len(stored_groups) + len(probing_groups) > FEW_HASHES:
        yield from _many_hashes(stored_groups, probing_groups, threshold)
    else:
        yield from _few_hashes(stored_groups, probing_groups, threshold)


FEW_HASHES = 32  # hashes in a bucket compared pair by pair; above it, by numpy rows (`near_bucket`)
HASH_ROWS = 256  # hashes whose distances `_many_hashes` takes at once (a block of rows)


def _by_hash(entries: Iterable[Fingerprint]) -> list[list[Fingerprint]]:
    """Entries grouped by pHash, each group in rank order (its best-ranked member first), the
    groups in the order of their bests, then pHash (a key's two pictures: never arrival order)."""
    groups: dict[int, list[Fingerprint]] = {}
    for entry in sorted(entries, key=lambda e: (e.rank, e.phash)):
        groups.setdefault(entry.phash, []).append(entry)
    return list(groups.values())


def _few_hashes(stored: list[list[Fingerprint]], probing: list[list[Fingerprint]], threshold: int) -> Iterator[Twin]:
    """Each member's record to its own hash's best, and to the best of every hash within the
    threshold that ranks above it."""
    for group in stored:  # a probing hash's members meet in the buckets they are stored in
        yield from (_twin(worse, group[0], NEAR, 0) for worse in group[1:])
    for a, b in combinations(stored, 2):
        yield from _across(a, b, threshold)
    for probe in probing:
        for group in stored:
            yield from _across(probe, group, threshold)


def _across(a: list[Fingerprint], b: list[Fingerprint], threshold: int) -> Iterator[Twin]:
    """Two hash groups within the threshold: each member of one ranked below the other's best is
    that best's twin (see `near_bucket`)."""
    distance = hamming(a[0].phash, b[0].phash)
    if distance > threshold:
        return
    for group, other in ((a, b), (b, a)):
        best = other[0]
        for worse in group:
            if worse.rank > best.rank and worse.key != best.key:
                yield _twin(worse, best, NEAR, distance)


def _many_hashes(stored: list[list[Fingerprint]], probing: list[list[Fingerprint]],
                 threshold: int) -> Iterator[Twin]:
    """`_few_hashes`' decisions and reported twins, with the records no unit would report left out.

    A hash's best is dropped here when a better-ranked best in the bucket is within the
    threshold: any pair, two probing ones included (a pair within the threshold drops its worse
    unit wherever it is seen, so a drop decided here is the rule's). A member's preferred twin is
    a kept one, else the closest: so it is sent its own hash's best (distance 0, the closest a
    dropped twin can be), every better-ranked best it meets here (one side stored) that is not
    dropped here (kept, or dropped elsewhere: a kept twin is never dropped here, and every pair
    meets in some bucket), and a hash's best also its closest better-ranked dropped twin. Bests
    not dropped here are more than the threshold apart, so few are near any one hash: the
    records grow with the members, the comparisons (numpy rows) with the square of the hashes.

    Hashes go in rank order of their bests, `HASH_ROWS` at a time against the ones before them:
    a best ranked below another and within the threshold is dropped by it, so a hash only sends
    records to bests above it, whose drops are known by then; each block is computed against the
    hashes up to its end once (pairs inside a block twice, the upper half unused), and at most
    `HASH_ROWS` x hashes distances are held.
    """
    groups = stored + probing
    order = np.array(sorted(range(len(groups)), key=lambda i: (groups[i][0].rank, groups[i][0].phash)), dtype=np.int64)
    groups, is_stored = [groups[i] for i in order], order < len(stored)
    bests = [group[0] for group in groups]
    values = np.array([best.phash for best in bests], dtype=np.uint64)
    # each best's place among distinct ranks: two hashes of one key (a key's two pictures) rank alike,
    # and neither drops the other, as in `_across`
    tiers = np.cumsum([0] + [a.rank != b.rank for a, b in zip(bests, bests[1:])])
    dropped = np.zeros(len(groups), dtype=bool)
    for start in range(0, len(groups), HASH_ROWS):
        stop = min(start + HASH_ROWS, len(groups))
        distances = hamming_rows(values[start:stop], values[:stop])
        near = (distances <= threshold) & (tiers[None, :stop] < tiers[start:stop, None])
        dropped[start:stop] = near.any(axis=1)
        met = near & (is_stored[None, :stop] | is_stored[start:stop, None])
        for i in range(start, stop):
            yield from _many_hash_twins(groups[i], bool(is_stored[i]), bool(dropped[i]), bests,
                                        met[i - start], distances[i - start], dropped[:stop])


def _many_hash_twins(group: list[Fingerprint], stored: bool, dropped_here: bool, bests: list[Fingerprint],
                     met: np.ndarray, distances: np.ndarray, dropped: np.ndarray) -> Iterator[Twin]:
    """One hash's records in `_many_hashes` (`met`, `distances`, `dropped`: over the bests ranked
    above this hash's, in rank order)."""
    best = group[0]
    if stored:  # as in `_few_hashes`
        yield from (_twin(worse, best, NEAR, 0) for worse in group[1:])
    if not dropped_here:
        return  # nothing above it within the threshold
    for j in np.flatnonzero(met & ~dropped):
        other, distance = bests[j], int(distances[j])
        for member in group:
            if member.rank > other.rank and member.key != other.key:
                yield _twin(member, other, NEAR, distance)
    closest = np.flatnonzero(met & dropped)
    if closest.size:  # the closest, then the best-ranked (the first of the closest)
        j = closest[np.argmin(distances[closest])]
        yield _twin(best, bests[j], NEAR, int(distances[j]))


def choose_twin(candidates: Iterable[tuple[Twin, bool]]) -> tuple[Twin, bool]:
    """The twin to report for a dropped unit: (twin record, whether that twin is dropped too)."""
    return min(candidates, key=lambda pair: pair[0].preference(pair[1]))


def duplicate_reject(unit_key: str, group: str, twin: Twin, twin_dropped: bool) -> Reject:
    detail = f"twin {twin.twin} ({twin.twin_split}), hamming {twin.distance}"
    if twin_dropped:
        detail += "; the twin is itself a duplicate of another unit"
    return Reject(unit_key, twin.source, group, STAGE, twin.reason, detail, split_hint=twin.split)


def duplicate_counts(rejects_by_reason: dict[str, int], images: int, rejects: int,
                     failed_downloads: int = 0) -> dict[str, Any]:
    """A source's duplicate figures for the summary: exact, near, and their share of its inputs
    (inputs = images in its sentences + its rejects, less the URLs img2dataset failed to download
    (stage `download`): those never were images; one per input image where no class sentence
    wraps around)."""
    exact, near = rejects_by_reason.get(EXACT, 0), rejects_by_reason.get(NEAR, 0)
    inputs = images + rejects - failed_downloads
    return {"exact": exact, "near": near, "inputs": inputs,
            "rate": round((exact + near) / inputs, 4) if inputs else 0.0}
