"""The build summary's merge of the committed shards (`uvd_pipeline.summary`)."""

from __future__ import annotations

import json
import random
import tracemalloc

from uvd_pipeline.summary import REJECTS_FILE, write_rejects


def test_rejects_are_merged_in_bounded_sorted_runs_with_the_same_bytes(tmp_path):
    """`rejects.jsonl` is every shard's rejects by source, then line; past `sort_bytes` of lines the
    sorted runs wait on disk, so what the driver holds does not grow with the build's rejects."""
    rng = random.Random(0)
    files, lines = [], []
    for shard in range(20):
        rows = [{"key": f"k{rng.randrange(10 ** 6):06d}", "source": rng.choice(["web", "coco", "video"]),
                 "stage": "read", "reason": "broken", "detail": "é" * rng.randrange(80) + rng.choice(["", "\u2028", "\x85", "\u2029\x1c"])}
                for _ in range(400)]  # separators str.splitlines cuts at: kept raw in a JSON string
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
        path = tmp_path / f"shard{shard}.rejects.jsonl"
        path.write_text(text, encoding="utf-8")
        files.append(str(path))
        lines += [line for line in text.split("\n") if line]
    expected = "".join(l + "\n" for l in sorted(lines, key=lambda l: (json.loads(l)["source"], l))).encode()
    total = len(expected)

    peaks = {}
    for name, sort_bytes in (("memory", None), ("runs", 16 << 10)):
        tracemalloc.start()
        write_rejects(str(tmp_path / name), files, sort_bytes=sort_bytes)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (tmp_path / name / REJECTS_FILE).read_bytes() == expected
    assert peaks["memory"] > total and peaks["runs"] < total / 2, (peaks, total)
    assert len(lines) == 20 * 400 and any("\u2028" in line for line in lines)
