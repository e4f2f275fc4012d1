"""The report's page: report.html from the figures of `report_data` and the file names of
`report_plots`, every value escaped. A template and small section renderers, nothing else: what a
section shows is decided by the data it is given."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from uvd_pipeline.quality import bin_labels
from uvd_pipeline.shown import shown
from uvd_pipeline.report_data import ALL_SOURCES, RECONSTRUCTION_PER_SENTENCE
from uvd_pipeline.tokenize_stage import arithmetic_label


def _text(value: Any, kept: str = "\t\n") -> str:
    """`value` as page text: HTML-escaped, and every control, format or line/paragraph separator
    character (a right-to-left override turns the rest of its table cell around) and lone surrogate
    (a byte of a name that is not UTF-8: the page could not be encoded) but those `kept` shown as its
    code (`shown`), since names and details come from the data."""
    return shown(html.escape(str(value)), kept)


def _data_text(value: Any) -> str:
    """A file's name or a detail in a cell or list item: a tab or newline in it shown as its code
    too (HTML shows `new\\nline.jpg` as "new line.jpg", a name no file has)."""
    return _text(value, kept="")


# text from the data may be one unbroken word of hundreds of characters (a reject's key, from a long
# file name): allowed to break anywhere, it wraps instead of widening the page past the window; cells
# of numbers and headers keep theirs whole
WRAP_CSS = "p,li,td.wrap{overflow-wrap:anywhere}td.wrap{min-width:16em}"


def _table(headers: list[str], rows: list[list[Any]], wrap: int | None = None) -> str:
    """A table of `rows`; column `wrap` holds text from the data, wrapped anywhere (`WRAP_CSS`)."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"wrap\">{_data_text(c)}</td>" if i == wrap
                                    else f"<td>{_data_text(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


NO_SENTENCES = "<p>No sentences in this build.</p>"
NO_SHEETS_ASKED = "<p>No contact sheets: none were asked for (--sentences 0).</p>"


def _table_or_none(headers: list[str], rows: list[list[Any]]) -> str:
    """`_table`, or a line saying there is nothing, where a table would show its header row alone."""
    return _table(headers, rows) if rows else NO_SENTENCES


def _nothing_built(totals: dict[str, Any]) -> str:
    """The line under the title of a build without a sentence: why its sections are empty."""
    if totals["sentences"]:
        return ""
    why = (f"every input was rejected ({totals['rejects']} rejects, by reason below)" if totals["rejects"]
           else "its sources held no input")
    return f"<p class=\"nothing\"><strong>No sentences: {why}.</strong></p>"


def _tokenizer_html(section: dict[str, Any] | None) -> str:
    if not section:
        return "<h2>Tokenizer</h2><p>No token shards in this build.</p>"
    columns = ("tokens", "codes_used", "usage", "perplexity", "entropy_bits")
    rows = [[k, *(v[c] for c in columns)] for k, v in [(ALL_SOURCES, section["all"]), *section["by_source"].items()]]
    html_rows = _table(["source", "tokens", "codes used", "usage", "perplexity", "entropy (bits/token)"], rows)
    sample = ""
    reconstruction = section.get("reconstruction") or {}
    if reconstruction:
        rows = [[name, r["images"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"] for name, r in reconstruction.items()]
        sheets = "".join(f"<h3>{_text(name)}</h3><img src=\"{_text(r['sheet'])}\" "
                         f"alt=\"original and decoded images of {_text(name)}\">"
                         for name, r in reconstruction.items())
        sample = (f"<h3>Reconstruction from the stored tokens</h3><p>Per source, a sample from its first token "
                  f"shards (up to {RECONSTRUCTION_PER_SENTENCE} images per sentence) decoded with the build's "
                  f"tokenizer and compared with the rendered images: mean PSNR {section['sample_psnr']} dB, "
                  f"SSIM {section['sample_ssim']} over all samples.</p>"
                  f"{_table(['source', 'images', 'PSNR (dB)', 'SSIM'], rows)}"
                  f"<p>Original (left) and decoded (right) pairs:</p>{sheets}")
    elif section.get("reconstruction_skipped"):
        sample = f"<p>No reconstruction: {_text(section['reconstruction_skipped'])}.</p>"
    made_in = ", ".join(f"{t['shards']} in {arithmetic_label(t)}" for t in section.get("made_by", []))
    plot = (f"<img src=\"{section['usage_plot']}\" alt=\"code frequencies and token histogram per source\">"
            if section.get("usage_plot") else "<p>The token shards hold no tokens: no sentence was tokenized.</p>")
    return (f"<h2>Tokenizer</h2><p>{_text(section['tokenizer'])} (weights "
            f"{_text(section['weights_hash'][:16])}), codebook {section['codebook_size']} "
            f"(at most {np.log2(section['codebook_size']):.2f} bits/token); token shards computed: "
            f"{_text(made_in)}.</p>{html_rows}{plot}{sample}")


def _inputs_html(inputs: dict[str, Any], plot: str | None) -> str:
    if not inputs["by_source"]:
        return "<h2>Input sizes</h2><p>No input sizes recorded in this build's shard stats.</p>"
    rows = []
    for name, h in inputs["by_source"].items():
        rows.append([name, h["count"], f"{h['mean_megapixels']:.3f}", f"{100 * h['below_canvas_share']:.1f}%"])
    labels = {k: bin_labels(tuple(e)) for k, e in inputs["bins"].items()}
    detail = "".join(
        f"<h3>{_text(title)}</h3>" + _table(["source", *labels[key]],
                                                  [[n, *h[key]] for n, h in inputs["by_source"].items()])
        for key, title in (("short_side", "Short side (px)"), ("aspect", "Aspect ratio (width / height)")))
    img = f"<img src=\"{plot}\" alt=\"input resolution and aspect ratio\">" if plot else ""
    return ("<h2>Input sizes</h2><p>The source pictures before resizing (every input image of a committed "
            "sentence: each frame of a video, each view of an object; annotation targets are not inputs). "
            "Below canvas: the short side is smaller than the canvas, so the image was enlarged.</p>"
            + _table(["source", "inputs", "mean megapixels", "below canvas"], rows) + img + detail)


def _lengths_html(lengths: dict[str, dict[str, int]], plot: str | None) -> str:
    if not lengths:
        return ""
    rows = [[kind, sum(c.values()), ", ".join(f"{n} images: {k}" for n, k in c.items())] for kind, c in lengths.items()]
    img = f"<img src=\"{plot}\" alt=\"sentence lengths\">" if plot else ""
    return "<h2>Sentence lengths</h2>" + _table(["kind", "sentences", "sentences by length"], rows) + img


def _throughput_html(throughput: dict[str, Any], plot: str | None) -> str:
    stages = throughput.get("stages") or {}
    metrics = throughput.get("metrics") or {}
    if metrics.get("reported") is False:
        missing = "".join(f"<li>{_text(item)}</li>" for item in metrics.get("not_reported", []))
        return (f"<h2>Throughput</h2><p>The last run: {_text(throughput['seconds'])} s wall time on "
                f"{_text(str(throughput['runner']))}, which reports no Beam metrics. Every count in this "
                f"report comes from the committed shards' stats; not reported by the runner:</p><ul>{missing}</ul>")
    if not stages:
        return ("<h2>Throughput</h2><p>No stage timings in this build's summary (the runner reported no "
                "Beam distribution metrics).</p>")
    rows = [[name, s["items"], s["unit"], s["calls"], f"{s['seconds']:.3f}", f"{s['items_per_s'] or 0:,.1f}"]
            for name, s in stages.items()]
    img = f"<img src=\"{plot}\" alt=\"stage throughput\">" if plot else ""
    return (f"<h2>Throughput</h2><p>The last run: {_text(throughput['seconds'])} s wall time on {_text(throughput['runner'])}"
            f"{'' if throughput.get('workers') is None else ', ' + _text(throughput['workers']) + ' workers'}. "
            "Busy seconds are each stage's own work summed over workers (Beam distribution metrics); items per "
            "busy second is one worker's rate. Shards an earlier run committed are not counted.</p>"
            + _table(["stage", "items", "item", "calls", "busy seconds", "items per busy second"], rows) + img)


def _mixture_html(plan: dict[str, Any] | None) -> str:
    """The asked token mix next to what the trainer draws with `mixture.yaml` and what the data
    holds (train split, packed tokens)."""
    if not plan:
        return ""
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    groups = _table(["group", "asked", "effective", "natural"],
                    [[g, pct(v["asked"]), pct(v["effective"]), pct(v["natural"])] for g, v in plan["groups"].items()])
    sources = _table(["source", "group", "train tokens", "weight", "effective", "natural", "upsampling"],
                     [[n, v["group"], f"{v['tokens']:,}", f"{v['weight']:.4g}", pct(v["effective_share"]),
                       pct(v["natural_share"]), f"{v['upsampling']:.2f}x" if v.get("upsampling") else ""]
                      for n, v in plan["sources"].items()])
    absent = (f"<p>Asked for but absent from this build (their share went to the others): "
              f"{_text(', '.join(plan['absent_groups']))}.</p>" if plan.get("absent_groups") else "")
    return (f"<h2>Token mix</h2><p>Train with <code>python -m trainer.fit --data mixture.yaml</code>: the "
            f"trainer draws sentences with these weights, which give the effective token shares.</p>"
            f"{groups}{absent}{sources}")


def _trainer_html(section: dict[str, Any] | None) -> str:
    if not section:
        return ""
    rate = f"{section['tokens_per_s']:,.0f} tokens/s" if section.get("tokens_per_s") else ""
    prompts = _table(["sentence", "source", "kind", "task", "context images", "codes equal to truth"],
                     [[p["sentence_id"], p["source"], p["kind"], p["task"], p["context_images"],
                       f"{p['codes_equal_to_truth']:.3f}"] for p in section["prompts"]])
    generation = (f"<p>{_text(section['legend'])}</p><img src=\"{section['generation']}\" alt=\"generation\">"
                  if section.get("generation") else "")
    return (f"<h2>Trainer</h2><p>{_text(section['preset'])} ({section['parameters'] / 1e6:.1f}M parameters), "
            f"{section['steps']} steps of {section['seq_len']} tokens, {section['tokens_seen']:,} tokens seen, {rate}; "
            f"loss {section['first_loss']:.3f} -> {section['final_loss']:.3f}.</p>"
            f"<img src=\"{section['loss_plot']}\" alt=\"loss curve\">{prompts}{generation}")


def _warnings_html(warnings: dict[str, list[str]] | None) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_text(w)}</li>" for found in warnings.values() for w in found)
    return f"<h2>Warnings</h2><ul class=\"warnings\">{items}</ul>"


def _duplicates_html(duplicates: dict[str, Any] | None) -> str:
    if not duplicates:
        return ""
    rows = [[name, d["inputs"], d["exact"], d["near"], f"{100 * d['rate']:.1f}%"] for name, d in duplicates.items()]
    return ("<h2>Duplicates</h2><p>Web and class images dropped as copies of a kept twin (rendered pixels "
            "identical, or pHash within the configured Hamming distance); inputs = images in sentences + "
            "rejects, less failed downloads.</p>" + _table(["source", "inputs", "exact", "near", "dup rate"], rows))


def _or_dash(value: Any) -> Any:
    return "-" if value is None else value


def damaged_html(output: str, problems: list[tuple[str, str]]) -> str:
    """The page of an output whose files no longer match its summary: what is wrong and how to
    mend it, no numbers (they would describe files that are not there any more)."""
    items = "".join(f"<li><code>{_data_text(uri)}</code>: {_text(why)}</li>" for uri, why in problems)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UVD build report: damaged output</title><style>{WRAP_CSS}</style></head><body>
<h1>UVD build report</h1>
<p>Output <code>{_data_text(output)}</code> is damaged or unfinished: its summary's numbers no longer
describe its files, so this page shows none. {len(problems)} problems:</p>
<ul class="damaged">{items}</ul>
<p><code>python -m uvd_pipeline verify OUT</code> lists every damaged file; a resumed build with
<code>--verify</code> rebuilds damaged shards and finishes an unfinished build; then write the report again.</p>
</body></html>
"""


def _reject_example(row: dict[str, str]) -> str:
    """One reject as the report's table shows it (as text, escaped by `_table`): where its input
    lies, after its source's name (two sources' `00000.tar:000000017.jpg` are two files), so that a
    user finds the file (its key, which starts with the source's name, where the reject names none
    or a rejects file written before `input` was), and the start of its detail."""
    where = f"{row['source']}: {row['input']}" if row.get("input") else row["key"]
    return f"{where} ({row['detail'][:60]})"


def render_html(data: dict[str, Any], sheets: dict[str, str], sheets_asked: bool = True) -> str:
    """The page; `sheets_asked`: False where the report was asked for no contact sheets
    (`--sentences 0`), which a build of sentences must not read as "no sentences"."""
    source_rows = []
    for name, s in data["sources"].items():
        split = s["by_split"]
        source_rows.append([name, s["type"], ", ".join(s["by_kind"]), s["sentences"], s["images"],
                            split.get("train", {}).get("sentences", 0), split.get("val", {}).get("sentences", 0),
                            s["rejects"], _or_dash(data["counts"]["by_source"][name]["tokens"])])
    group_rows = [[g, c["sentences"], _or_dash(c["images"]), _or_dash(c["tokens"])]
                  for g, c in data["counts"]["by_kind_task"].items()]
    reject_rows = [[reason, n, "; ".join(_reject_example(e) for e in data["reject_examples"].get(reason, []))]
                   for reason, n in data["rejects_by_reason"].items()]
    rejects = (_table(["reason", "count", "examples"], reject_rows, wrap=2) if reject_rows
               else "<p>No rejects: every input is part of a sentence.</p>")
    sections = "".join(
        f"<h3>{_text(name)}</h3><img src=\"{_text(path)}\" alt=\"contact sheet of {_text(name)}\">"
        for name, path in sheets.items()
    )
    t = data["totals"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UVD build report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%;border:1px solid #ddd}}{WRAP_CSS}</style>
</head><body>
<h1>UVD build report</h1>
<p>Output <code>{_data_text(data['output'])}</code>, config {_text(data['config_hash'])}, images {_text(data['image_size'])}px.
{t['sentences']} sentences, {t['images']} images, {t['rejects']} rejects in {t['shards']} shards.</p>
{_nothing_built(t)}
{_warnings_html(data.get("warnings"))}
<h2>Sentences by source</h2>
{_table(['source', 'type', 'kinds', 'sentences', 'images', 'train', 'val', 'rejects', 'tokens'], source_rows)}
<h2>Sentences by kind</h2>
{_table_or_none(['kind', 'sentences'], [[k, n] for k, n in data['sentences_by_kind'].items()])}
<h2>Sentences, images and tokens by kind and task</h2>
{_table_or_none(['kind / task', 'sentences', 'images', 'tokens'], group_rows)}
<h2>Sentences by split</h2>
{_table(['split', 'sentences'], [[k, n] for k, n in data['sentences_by_split'].items()])}
<h2>Rejects by reason</h2>
{rejects}
{_duplicates_html(data.get("duplicates"))}
{_inputs_html(data["inputs"], data.get("plots", {}).get("inputs"))}
{_lengths_html(data["sentence_lengths"], data.get("plots", {}).get("sentence_lengths"))}
<h2>Contact sheets (one row per sentence, one sheet per kind and task)</h2>
{sections or (NO_SENTENCES if sheets_asked or not t["sentences"] else NO_SHEETS_ASKED)}
{_tokenizer_html(data.get("tokenizer"))}
{_throughput_html(data["throughput"], data.get("plots", {}).get("throughput"))}
{_mixture_html(data.get("mixture"))}
{_trainer_html(data.get("trainer"))}
</body></html>
"""
