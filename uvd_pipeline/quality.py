"""Data-quality numbers recorded while a build runs, for the report (pure functions, no Beam).

Input sizes. Every committed shard's stats hold compact histograms of the size of its input
pictures *before* resizing, so the report never re-reads the inputs. An input is a picture a
sentence image was made from: the image of a web, class, pair or multitask unit, each frame of
a video or annotated video, each view of a multi-view object; annotation targets are not
inputs. Renderers record the size (after EXIF orientation) as `width`/`height` in the member's
lineage (web images that img2dataset resized first: its recorded original size, `resized_from`)
(videos: once, in the sentence meta, for all their frames). `below_canvas` counts the inputs
enlarged to the canvas, judged by the picture the renderer scaled (img2dataset's copy, not the
original it was made from). An image a sentence holds
twice (class sentences under `remainder: wrap`) counts twice: the histograms describe what the
sentences are made of.

Histograms have fixed bins, so shards merge by adding counts: the short side (what a centre
crop scales to the canvas) and the long side in pixels, and the aspect ratio width / height.

Stage throughput. Beam Distribution metrics record, per element, the wall time of each stage's
own work (in microseconds) and how many items it handled; `stage_throughput` turns them into
items per busy second (one worker's rate; the build's wall time is in `summary.run.seconds`).
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, Iterable

SIDE_EDGES = (0, 32, 64, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 3072, 4096, 8192)
ASPECT_EDGES = (0.0, 0.25, 0.33, 0.5, 0.67, 0.8, 0.95, 1.05, 1.25, 1.5, 2.0, 3.0, 4.0)
INPUT_BINS = {"short_side": SIDE_EDGES, "long_side": SIDE_EDGES, "aspect": ASPECT_EDGES}

# stage -> (Distribution of microseconds per call, Distribution of items per call or None when
# each call is one item, what an item is)
STAGES = {
    "read": ("stage.read_us", "stage.read_records", "records"),
    "render": ("stage.render_us", None, "records"),
    "assemble": ("stage.assemble_us", None, "sentences"),
    "write": ("stage.write_us", "stage.write_sentences", "sentences"),
    "tokenize": ("stage.tokenize_us", "stage.tokenize_images", "images"),
}


def bin_index(value: float, edges: tuple) -> int:
    """The bin of `value`: [edges[i], edges[i + 1]), the last bin open-ended."""
    return max(0, bisect.bisect_right(edges, value) - 1)


def bin_labels(edges: tuple) -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:])] + [f">={edges[-1]:g}"]


def input_sizes(kind: str, members: Iterable[dict[str, Any]], meta: dict[str, Any]) -> list[tuple[int, int]]:
    """(width, height) of every input picture of a sentence or rendered unit (see above)."""
    return [(width, height) for width, height, _ in _inputs(kind, members, meta)]


def _inputs(kind: str, members: Iterable[dict[str, Any]], meta: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(width, height, least short side) of every input picture: the picture's own size for the
    histograms, and the least detail anywhere in its chain, which tells an enlargement: the short
    side of what the renderer scaled to the canvas (img2dataset's 128 px keep_ratio copy of a
    1200 px original, enlarged to a 256 canvas) or of the original where that is smaller (its
    256 px copy of a 40 px original holds 40 px of detail on a 64 canvas, whoever enlarged it)."""
    members = list(members)
    if kind == "video":
        if meta.get("width") and meta.get("height"):
            width, height = int(meta["width"]), int(meta["height"])
            return [(width, height, min(width, height))] * len(members)
        return []
    return [(*_original_size(m), min(*_original_size(m), int(m["width"]), int(m["height"])))
            for m in members if m.get("width") and m.get("height")]


def _original_size(member: dict[str, Any]) -> tuple[int, int]:
    """The picture's own size: img2dataset's recorded original when it resized the image before
    we saw it (`resized_from`), else what we decoded."""
    if member.get("resized_from"):
        width, height = member["resized_from"]
        return int(width), int(height)
    return int(member["width"]), int(member["height"])


def empty_inputs() -> dict[str, Any]:
    return {"count": 0, "pixels": 0, "below_canvas": 0,
            **{name: [0] * len(edges) for name, edges in INPUT_BINS.items()}}


def add_input(hist: dict[str, Any], width: int, height: int, canvas: int, rendered_short: int | None = None) -> None:
    """Count one input of `width` x `height`; `rendered_short`: the least short side of its chain
    (the original's or the renderer's copy's, `_inputs`), the original's when not given."""
    hist["count"] += 1
    hist["pixels"] += width * height
    short = min(width, height) if rendered_short is None else rendered_short
    hist["below_canvas"] += int(short < canvas)  # upscaled by a centre crop
    hist["short_side"][bin_index(min(width, height), SIDE_EDGES)] += 1
    hist["long_side"][bin_index(max(width, height), SIDE_EDGES)] += 1
    hist["aspect"][bin_index(width / height, ASPECT_EDGES)] += 1


def merge_inputs(total: dict[str, Any], part: dict[str, Any] | None) -> dict[str, Any]:
    """Add a shard's input histograms to `total` (in place); shards of other bins are left out."""
    if not part or any(len(part.get(k, ())) != len(e) for k, e in INPUT_BINS.items()):
        return total
    for key in ("count", "pixels", "below_canvas"):
        total[key] += part[key]
    for key in INPUT_BINS:
        total[key] = [a + b for a, b in zip(total[key], part[key])]
    return total


class ShardQuality:
    """What one rendered shard adds to its stats: input-size histograms, the number of sentences
    per length (images per sentence) of each kind, and images per kind/task."""

    def __init__(self, canvas: int) -> None:
        self.canvas = canvas
        self.inputs = empty_inputs()
        self.lengths: dict[str, Counter[int]] = {}
        self.images_by_group: Counter[str] = Counter()

    def add(self, kind: str, group: str, members: Iterable[dict[str, Any]], meta: dict[str, Any],
            n_images: int) -> None:
        for width, height, rendered_short in _inputs(kind, members, meta):
            add_input(self.inputs, width, height, self.canvas, rendered_short)
        self.lengths.setdefault(kind, Counter())[n_images] += 1
        self.images_by_group[group] += n_images

    def stats(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "sentence_lengths": {k: {str(n): c for n, c in sorted(v.items())} for k, v in sorted(self.lengths.items())},
            "images_by_kind_task": dict(sorted(self.images_by_group.items())),
        }


def merge_lengths(total: dict[str, Counter], part: dict[str, dict[str, int]] | None) -> None:
    for kind, counts in (part or {}).items():
        total.setdefault(kind, Counter()).update({str(n): c for n, c in counts.items()})


def sorted_lengths(lengths: dict[str, Counter]) -> dict[str, dict[str, int]]:
    """Sentence-length counts per kind, kinds sorted and lengths in numeric order (JSON keys are strings)."""
    return {kind: dict(sorted(counts.items(), key=lambda kv: int(kv[0]))) for kind, counts in sorted(lengths.items())}


def stage_throughput(distributions: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Items, busy seconds and items per busy second of each stage that ran."""
    stages = {}
    for stage, (time_name, items_name, unit) in STAGES.items():
        timing = distributions.get(time_name)
        if not timing or not timing.get("count"):
            continue
        items = distributions.get(items_name, {}).get("sum", 0) if items_name else timing["count"]
        seconds = timing["sum"] / 1e6
        stages[stage] = {"calls": int(timing["count"]), "items": int(items), "unit": unit,
                         "seconds": round(seconds, 6),
                         "items_per_s": round(items / seconds, 2) if seconds > 0 else None}
    return stages
