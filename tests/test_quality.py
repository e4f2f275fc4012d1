"""Data-quality bookkeeping: input-size histograms, sentence lengths, stage throughput, progress."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from uvd_pipeline.quality import (
    ASPECT_EDGES,
    SIDE_EDGES,
    ShardQuality,
    bin_index,
    bin_labels,
    empty_inputs,
    input_sizes,
    merge_inputs,
    stage_throughput,
)


def test_bins_are_half_open_and_the_last_is_open_ended():
    assert bin_index(0, SIDE_EDGES) == 0
    assert bin_index(255, SIDE_EDGES) == SIDE_EDGES.index(192)
    assert bin_index(256, SIDE_EDGES) == SIDE_EDGES.index(256)
    assert bin_index(10**6, SIDE_EDGES) == len(SIDE_EDGES) - 1
    assert bin_index(1.0, ASPECT_EDGES) == ASPECT_EDGES.index(0.95)
    labels = bin_labels(SIDE_EDGES)
    assert len(labels) == len(SIDE_EDGES) and labels[5] == "256-320" and labels[-1] == ">=8192"


def test_inputs_are_the_pictures_a_sentence_is_made_of():
    # a video: every frame has the clip's size (recorded once, in the meta)
    assert input_sizes("video", [{"frame": i} for i in range(16)], {"width": 320, "height": 180}) == [(320, 180)] * 16
    # pairs: the input carries its size, the target does not
    pair = [{"key": "a", "role": "input", "width": 640, "height": 480}, {"key": "a", "role": "target"}]
    assert input_sizes("pairs", pair * 8, {}) == [(640, 480)] * 8
    # multitask: the image of each tuple, not its four annotations
    tuple_ = [{"key": "t", "task": "image", "width": 512, "height": 512}] + [{"key": "t", "task": t} for t in "abcd"]
    assert input_sizes("multitask", tuple_ * 3, {}) == [(512, 512)] * 3


def test_shard_quality_counts_and_merges():
    quality = ShardQuality(canvas=256)
    quality.add("image", "image", [{"width": 100, "height": 400}], {}, 1)
    quality.add("video", "video", [{"frame": i} for i in range(16)], {"width": 1920, "height": 1080}, 16)
    stats = quality.stats()
    inputs = stats["inputs"]
    assert inputs["count"] == 17 and inputs["pixels"] == 100 * 400 + 16 * 1920 * 1080
    assert inputs["below_canvas"] == 1  # the 100-px short side
    assert inputs["short_side"][bin_index(100, SIDE_EDGES)] == 1
    assert inputs["short_side"][bin_index(1080, SIDE_EDGES)] == 16
    assert inputs["aspect"][bin_index(0.25, ASPECT_EDGES)] == 1
    assert inputs["aspect"][bin_index(16 / 9, ASPECT_EDGES)] == 16
    assert stats["sentence_lengths"] == {"image": {"1": 1}, "video": {"16": 1}}
    assert stats["images_by_kind_task"] == {"image": 1, "video": 16}
    total = merge_inputs(merge_inputs(empty_inputs(), inputs), inputs)
    assert total["count"] == 34 and sum(total["long_side"]) == 34
    assert merge_inputs(empty_inputs(), {"count": 5, "short_side": [5]})["count"] == 0  # other bins: left out


def test_stage_throughput_from_distributions():
    stages = stage_throughput({
        "stage.read_us": {"count": 2, "sum": 500_000, "min": 1, "max": 2},
        "stage.read_records": {"count": 2, "sum": 100, "min": 40, "max": 60},
        "stage.render_us": {"count": 100, "sum": 2_000_000, "min": 1, "max": 2},
    })
    assert list(stages) == ["read", "render"]
    assert stages["read"] == {"calls": 2, "items": 100, "unit": "records", "seconds": 0.5, "items_per_s": 200.0}
    assert stages["render"]["items"] == 100 and stages["render"]["items_per_s"] == 50.0


def test_progress_reports_rendered_and_token_shards(tmp_path: Path, caplog, monkeypatch):
    import sys
    import time

    from uvd_pipeline.build import _ShardProgress

    module = sys.modules[_ShardProgress.__module__]
    polls = []
    counted = module.stats_files
    monkeypatch.setattr(module, "stats_files", lambda output: polls.append(1) or counted(output))

    out = tmp_path / "out"
    (out / "rendered" / "web" / "train").mkdir(parents=True)
    (out / "tokens" / "web" / "train").mkdir(parents=True)
    (out / "rendered" / "web" / "train" / "web-train-00000.stats.json").write_text("{}")
    (out / "rendered" / "web" / "train" / "web-train-00001.stats.json").write_text("{}")
    (out / "tokens" / "web" / "train" / "web-train-00000.stats.json").write_text("{}")
    (out / "tokens" / "web" / "train" / "web-train-00001.stats.json.tmp-1234").write_text("{}")
    with caplog.at_level(logging.INFO, logger="uvd_pipeline.build"):
        with _ShardProgress(str(out), interval=0.01, most=4, tokens=True):
            deadline = time.monotonic() + 30
            while len(polls) < 5 and time.monotonic() < deadline:  # the folder is looked at 5 times
                time.sleep(0.01)
    assert len(polls) >= 5
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]
    # "of at most": a shard no input lands in is never written (the sample build ends at 30 of
    # at most 36, after "30/36" sat in the log through the whole tokenize phase, as if 6 were lost)
    assert lines and "write 2 of at most 4, tokenize 1 of at most 4" in lines[0]
    assert len(lines) == 1  # only changes are logged


@pytest.mark.parametrize("width,height,bin_", [(64, 64, "64-128"), (8192, 100, ">=8192")])
def test_long_side_labels(width, height, bin_):
    quality = ShardQuality(canvas=64)
    quality.add("image", "image", [{"width": width, "height": height}], {}, 1)
    long_side = quality.stats()["inputs"]["long_side"]
    assert bin_labels(SIDE_EDGES)[long_side.index(1)] == bin_
