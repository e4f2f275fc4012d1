"""The report's tokenizer section at its edges: a tokenized build whose every input was rejected
(one empty token shard), and a source whose name is the overall row's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from uvd_pipeline.report import write_report


def test_report_of_a_tokenized_build_whose_every_input_was_rejected(tmp_path, tiny_tokenizer):
    """A folder of one text file named `.jpg`, built with the tokenizer on: the build commits one
    token shard of no rows. The report stopped with AttributeError ('int' object has no attribute
    'sum': no source's histogram to add up); it says there are no tokens, with zero counts."""
    from conftest import build_web_source
    from uvd_pipeline.shards import find_shards, read_token_shard

    images = tmp_path / "images"
    images.mkdir()
    (images / "x1.jpg").write_text("junk")
    summary = build_web_source(tmp_path, "bad", images, tokenizer=tiny_tokenizer)
    assert summary["totals"]["sentences"] == 0 and summary["totals"]["rejects"] == 1
    shards = find_shards(str(tmp_path / "out" / "tokens"))
    assert len(shards) == 1 and read_token_shard(shards[0])[0].num_rows == 0
    paths = write_report(str(tmp_path / "out"))
    page = Path(paths["html"]).read_text()
    section = json.loads(Path(paths["json"]).read_text())["tokenizer"]
    assert section["all"] == {"tokens": 0, "codes_used": 0, "usage": 0.0, "perplexity": 0.0, "entropy_bits": 0.0}
    assert section["by_source"] == {} and "usage_plot" not in section
    tokenizer = page[page.index("<h2>Tokenizer</h2>"):page.index("<h2>Throughput</h2>")]
    assert "The token shards hold no tokens: no sentence was tokenized." in tokenizer and "<img" not in tokenizer
    assert '<p class="nothing"><strong>No sentences: every input was rejected (1 rejects' in page


def test_a_source_named_all_keeps_the_overall_histogram_apart(tmp_path, tiny_tokenizer):
    """A source may be named `all` (lower_snake_case): the code histograms handed to the plot were
    {"all": overall, **per source}, so the source's replaced the overall one (one line, not two),
    and the page's table had two rows named all. The overall one is keyed "all sources"."""
    from conftest import build_web_source
    from uvd_pipeline.report_data import ALL_SOURCES, token_usage

    images = tmp_path / "images"
    images.mkdir()
    for seed in (1, 2):
        subprocess.run(["convert", "-size", "48x40", "-seed", str(seed), "plasma:fractal",
                        str(images / f"p{seed}.jpg")], check=True)
    summary = build_web_source(tmp_path, "all", images, tokenizer=tiny_tokenizer)
    assert summary["totals"]["images"] == 2
    section, histograms, _ = token_usage(str(tmp_path / "out"))
    per_image = section["tokens_per_image"]
    assert list(histograms) == [ALL_SOURCES, "all"]
    assert int(histograms[ALL_SOURCES].sum()) == int(histograms["all"].sum()) == 2 * per_image
    assert section["all"]["tokens"] == section["by_source"]["all"]["tokens"] == 2 * per_image
    page = Path(write_report(str(tmp_path / "out"))["html"]).read_text()
    assert page.count(f"<td>{ALL_SOURCES}</td><td>{2 * per_image}</td>") == 1
    assert page.count(f"<td>all</td><td>{2 * per_image}</td>") == 1
