"""The progress line and summary the long commands print (`tokenizer.progress`), on a fake clock."""

from __future__ import annotations

import io

from tokenizer.progress import Progress


def test_a_line_every_interval_with_share_rate_and_time_left_then_a_summary():
    ticks = iter([0.0, 4.0, 10.0, 15.0, 25.0, 30.0])  # start, then one reading per advance, then done
    out = io.StringIO()
    progress = Progress("tokenizer evaluate", "images", total=40, every_s=10.0, stream=out, clock=lambda: next(ticks))
    for _ in range(4):
        progress.advance(5, "0 skipped")
    progress.done("0 skipped")
    assert out.getvalue().splitlines() == [
        "progress: tokenizer evaluate: 10 of 40 images (25%), 1.0/s, 10s, ~30s left, 0 skipped",
        "progress: tokenizer evaluate: 20 of 40 images (50%), 0.8/s, 25s, ~25s left, 0 skipped",
        "tokenizer evaluate: 20 images in 30.0s (0.7 images/s), 0 skipped"]


def test_short_work_prints_only_its_summary_and_an_unknown_total_only_counts():
    ticks = iter([0.0, 1.0, 2.0, 12.0, 13.0])
    out = io.StringIO()
    progress = Progress("report", "shards", every_s=10.0, stream=out, clock=lambda: next(ticks))
    progress.advance()
    progress.advance()
    progress.advance()
    progress.done()
    assert out.getvalue().splitlines() == ["progress: report: 3 shards, 0.2/s, 12s",
                                           "report: 3 shards in 13.0s (0.2 shards/s)"]


def test_stop_ends_the_timed_work_before_what_follows():
    """The report checks its shards, then writes its pages (minutes of decoding): its summary's
    rate is shards per second of checking, not of the whole report."""
    ticks = iter([0.0, 2.0, 4.0, 4.0, 300.0])  # start, two advances, stop, then done after the pages
    out = io.StringIO()
    progress = Progress("report", "shards", every_s=10.0, stream=out, clock=lambda: next(ticks))
    progress.advance()
    progress.advance()
    progress.stop()
    progress.done("pages written")
    assert out.getvalue().splitlines() == ["report: 2 shards in 4.0s (0.5 shards/s), pages written"]
