"""The data-quality report of a build: `report/report.html` (plots as PNG files next to it)
plus `report/report.json` with every number shown.

It reads only what the build committed (summary, stats, rejects, rendered tars, token shards),
so it can be run on any finished output, local or remote (the token sections need a local
output: token shards are memory-mapped). Sections: counts, images and tokens per source and per
kind/task; rejects by reason with examples; duplicates; input resolution and aspect ratio (the
sizes before resizing, recorded in the shard stats: `uvd_pipeline.quality`); sentence lengths;
contact sheets of whole sentences, one per row, so a person sees at a glance whether frames are
in order and classes are coherent; per source, code usage, entropy and a code histogram, and
PSNR/SSIM of a sample decoded from the stored tokens next to the rendered originals; stage
throughput; the token mix; the trainer demo.
"""

from __future__ import annotations

import html
import io
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline.build import REJECTS_FILE, SUMMARY_FILE
from uvd_pipeline.quality import INPUT_BINS, STAGES, bin_labels, merge_lengths, sorted_lengths
from uvd_pipeline.render import decode_png
from uvd_pipeline.rendered_shards import iter_shard, read_json, sentence_group, verified_tar
from uvd_pipeline.tokenize_stage import arithmetic_label

REPORT_DIR = "report"
TRAINER_DIR = "trainer"  # written by `python -m trainer.demo` (the report only reads it)
THUMB = 64
LABEL_WIDTH = 260
EXAMPLES_PER_REASON = 3
# reconstruction sample of each source: its token shards in path order (train before val), the
# first RECONSTRUCTION_PER_SENTENCE images of each sentence in order, RECONSTRUCTION_IMAGES in all
RECONSTRUCTION_IMAGES = 8
RECONSTRUCTION_PER_SENTENCE = 2


def pick_sentences(output: str, summary: dict[str, Any], per_group: int) -> dict[str, list]:
    """The first sentences (in shard order, train first) of every kind/task group.

    Shards are opened only while some group they hold still wants sentences.
    """
    picked: dict[str, list] = defaultdict(list)
    shards = sorted(summary["shards"], key=lambda s: (s["split"] != "train", s["source"], s["split"], s["shard"]))
    for shard in shards:
        wanted = [g for g in shard.get("by_kind_task", {}) if len(picked[g]) < per_group]
        if not wanted:
            continue
        uri = verified_tar(output, shard["source"], shard["split"], shard["tar"])  # size and sha256
        for sentence in iter_shard(uri):
            group = sentence_group(sentence.header["kind"], sentence.header["task"])
            if len(picked[group]) < per_group:
                picked[group].append(sentence)
            if all(len(picked[g]) >= per_group for g in wanted):
                break
    return dict(sorted(picked.items()))


def contact_sheet(sentences: list, thumb: int = THUMB) -> Image.Image:
    """One row per sentence: its id on the left, then every image in sentence order."""
    columns = max(len(s.images) for s in sentences)
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * (thumb + 2), len(sentences) * (thumb + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, sentence in enumerate(sentences):
        y = row * (thumb + 4) + 2
        header = sentence.header
        draw.text((4, y + 2), header["sentence_id"][:40], fill="black")
        draw.text((4, y + 16), f"{header['kind']} / {header['split']} / {header['n_images']} images", fill="gray")
        for column, png in enumerate(sentence.images):
            small = Image.fromarray(np.ascontiguousarray(decode_png(png))).resize((thumb, thumb), Image.BILINEAR)
            sheet.paste(small, (LABEL_WIDTH + column * (thumb + 2), y))
    return sheet


def _reject_examples(output: str) -> dict[str, list[dict[str, str]]]:
    examples: dict[str, list[dict[str, str]]] = defaultdict(list)
    uri = fsio.join(output, REJECTS_FILE)
    if not fsio.exists(uri):
        return {}
    for line in fsio.iter_lines(uri):
        if not line:
            continue
        row = json.loads(line)
        if len(examples[row["reason"]]) < EXAMPLES_PER_REASON:
            examples[row["reason"]].append(row)
    return dict(sorted(examples.items()))


def report_data(output: str, summary: dict[str, Any]) -> dict[str, Any]:
    by_kind: dict[str, int] = defaultdict(int)
    by_kind_task: dict[str, int] = defaultdict(int)
    by_split: dict[str, int] = defaultdict(int)
    by_reason: dict[str, int] = defaultdict(int)
    for source in summary["sources"].values():
        for kind, n in source["by_kind"].items():
            by_kind[kind] += n
        for group, n in source.get("by_kind_task", {}).items():
            by_kind_task[group] += n
        for split, counts in source["by_split"].items():
            by_split[split] += counts["sentences"]
        for reason, n in source["rejects_by_reason"].items():
            by_reason[reason] += n
    return {
        "output": output,
        "config_hash": summary["config_hash"],
        "image_size": summary["image_size"],
        "totals": summary["totals"],
        "sources": summary["sources"],
        "sentences_by_kind": dict(sorted(by_kind.items())),
        "sentences_by_task": dict(sorted(by_kind_task.items())),
        "sentences_by_split": dict(sorted(by_split.items())),
        "rejects_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reject_examples": _reject_examples(output),
        "duplicates": {name: s["duplicates"] for name, s in summary["sources"].items() if "duplicates" in s},
        "warnings": {name: s["warnings"] for name, s in summary["sources"].items() if s.get("warnings")},
        "mixture": summary.get("mixture"),
        **_quality_data(summary, by_kind_task),
    }


def _quality_data(summary: dict[str, Any], sentences_by_group: dict[str, int]) -> dict[str, Any]:
    """Counts per source and per kind/task, input sizes, sentence lengths, stage throughput."""
    tokens = (summary.get("tokens") or {}).get("sources", {})
    images_by_group: Counter[str] = Counter()
    lengths: dict[str, Counter[str]] = {}
    for source in summary["sources"].values():
        images_by_group.update(source.get("images_by_kind_task", {}))
        merge_lengths(lengths, source.get("sentence_lengths"))
    inputs = {}
    for name, source in summary["sources"].items():
        hist = source.get("inputs")
        if hist and hist["count"]:
            inputs[name] = {**hist, "mean_megapixels": round(hist["pixels"] / hist["count"] / 1e6, 4),
                            "below_canvas_share": round(hist["below_canvas"] / hist["count"], 4)}
    run = summary.get("run", {})
    return {
        "counts": {
            "by_source": {name: {"sentences": s["sentences"], "images": s["images"],
                                 "tokens": tokens.get(name, {}).get("tokens")}
                          for name, s in summary["sources"].items()},
            # tokens per kind/task: images x tokens per image of the token shards (tokenizer section)
            "by_kind_task": {group: {"sentences": n, "images": images_by_group.get(group), "tokens": None}
                             for group, n in sorted(sentences_by_group.items())},
        },
        "inputs": {"bins": summary.get("input_bins", {k: list(v) for k, v in INPUT_BINS.items()}),
                   "by_source": inputs},
        "sentence_lengths": sorted_lengths(lengths),
        "throughput": {"seconds": run.get("seconds"), "runner": run.get("runner"), "workers": run.get("workers"),
                       "metrics": run.get("metrics", {"reported": True, "not_reported": []}),
                       # pipeline order (summary.json sorts keys)
                       "stages": {k: run["stages"][k] for k in STAGES if k in run.get("stages", {})},
                       "distributions": run.get("distributions", {})},
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save_figure(figure, report_dir: str, name: str) -> str:
    figure.tight_layout()
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    _pyplot().close(figure)
    write_bytes(fsio.join(report_dir, name), buf.getvalue())
    return name


def inputs_plot(inputs: dict[str, Any], report_dir: str) -> str | None:
    """Short side, long side and aspect ratio of the inputs, as shares of each source's inputs."""
    if not inputs["by_source"]:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.8), dpi=90)
    titles = {"short_side": "short side (px)", "long_side": "long side (px)", "aspect": "aspect ratio (width / height)"}
    for axis, (key, title) in zip(axes, titles.items()):
        labels = bin_labels(tuple(inputs["bins"][key]))
        x = np.arange(len(labels))
        for name, hist in inputs["by_source"].items():
            counts = np.asarray(hist[key], np.float64)
            axis.plot(x, counts / max(counts.sum(), 1), marker="o", markersize=3, linewidth=1, label=name)
        axis.set_xticks(x)
        axis.set_xticklabels(labels, rotation=60, fontsize=7)
        axis.set_title(title)
        axis.set_ylabel("share of the source's inputs")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save_figure(figure, report_dir, "input_sizes.png")


def lengths_plot(lengths: dict[str, dict[str, int]], report_dir: str) -> str | None:
    """Sentences per length (images per sentence), one bar series per kind."""
    if not lengths:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 3.2), dpi=90)
    width = 0.8 / len(lengths)
    for i, (kind, counts) in enumerate(lengths.items()):
        x = np.array([int(n) for n in counts], np.float64)
        axis.bar(x - 0.4 + (i + 0.5) * width, list(counts.values()), width=width, label=kind)
    axis.set_yscale("log")
    axis.set_ylim(bottom=0.5)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_xlabel("images per sentence")
    axis.set_ylabel("sentences")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _save_figure(figure, report_dir, "sentence_lengths.png")


def throughput_plot(stages: dict[str, Any], report_dir: str) -> str | None:
    """Busy seconds per stage (all workers together), labelled with items per busy second."""
    if not stages:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.5 + 0.5 * len(stages)), dpi=90)
    names = list(stages)
    seconds = [stages[n]["seconds"] for n in names]
    axis.barh(names, seconds, color="#4878a8")
    for y, name in enumerate(names):
        s = stages[name]
        axis.text(s["seconds"], y, f" {s['items_per_s'] or 0:,.1f} {s['unit']}/s", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("busy seconds (all workers)")
    axis.set_xlim(0, max(seconds) * 1.35 or 1)
    return _save_figure(figure, report_dir, "throughput.png")


def tokens_plot(histograms: dict[str, np.ndarray], report_dir: str) -> str:
    """Per source (and all): code frequencies sorted high to low (log-log), and the share of
    tokens over code ids in 64 bins."""
    plt = _pyplot()
    figure, (rank_axis, id_axis) = plt.subplots(1, 2, figsize=(13, 3.6), dpi=90)
    for name, hist in histograms.items():
        total = max(int(hist.sum()), 1)
        ranked = np.sort(hist)[::-1]
        ranked = ranked[ranked > 0]
        style = {"color": "black", "linewidth": 1.6} if name == "all" else {"linewidth": 1}
        rank_axis.loglog(np.arange(1, ranked.size + 1), ranked / total, label=name, **style)
        step = -(-hist.size // 64)
        starts = np.arange(0, hist.size, step)
        id_axis.step(starts, np.add.reduceat(hist, starts) / total, where="post", label=name, **style)
    rank_axis.set_xlabel("code rank")
    rank_axis.set_ylabel("share of tokens")
    rank_axis.set_title("code frequencies, sorted")
    rank_axis.grid(alpha=0.3)
    rank_axis.legend(fontsize=7)
    id_axis.set_xlabel(f"code id (bins of {step})")
    id_axis.set_ylabel("share of tokens")
    id_axis.set_title("token histogram")
    id_axis.grid(alpha=0.3)
    return _save_figure(figure, report_dir, "tokenizer_usage.png")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tokenizer_html(section: dict[str, Any] | None) -> str:
    if not section:
        return "<h2>Tokenizer</h2><p>No token shards in this build.</p>"
    columns = ("tokens", "codes_used", "usage", "perplexity", "entropy_bits")
    rows = [[k, *(v[c] for c in columns)] for k, v in [("all", section["all"]), *section["by_source"].items()]]
    html_rows = _table(["source", "tokens", "codes used", "usage", "perplexity", "entropy (bits/token)"], rows)
    sample = ""
    reconstruction = section.get("reconstruction") or {}
    if reconstruction:
        rows = [[name, r["images"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"] for name, r in reconstruction.items()]
        sheets = "".join(f"<h3>{html.escape(name)}</h3><img src=\"{html.escape(r['sheet'])}\" "
                         f"alt=\"original and decoded images of {html.escape(name)}\">"
                         for name, r in reconstruction.items())
        sample = (f"<h3>Reconstruction from the stored tokens</h3><p>Per source, a sample from its first token "
                  f"shards (up to {RECONSTRUCTION_PER_SENTENCE} images per sentence) decoded with the build's "
                  f"tokenizer and compared with the rendered images: mean PSNR {section['sample_psnr']} dB, "
                  f"SSIM {section['sample_ssim']} over all samples.</p>"
                  f"{_table(['source', 'images', 'PSNR (dB)', 'SSIM'], rows)}"
                  f"<p>Original (left) and decoded (right) pairs:</p>{sheets}")
    elif section.get("reconstruction_skipped"):
        sample = f"<p>No reconstruction: {html.escape(section['reconstruction_skipped'])}.</p>"
    made_in = ", ".join(f"{t['shards']} in {arithmetic_label(t)}" for t in section.get("made_by", []))
    return (f"<h2>Tokenizer</h2><p>{html.escape(section['tokenizer'])} (weights "
            f"{section['weights_hash'][:16]}), codebook {section['codebook_size']} "
            f"(at most {np.log2(section['codebook_size']):.2f} bits/token); token shards computed: "
            f"{html.escape(made_in)}.</p>{html_rows}"
            f"<img src=\"{section['usage_plot']}\" alt=\"code frequencies and token histogram per source\">"
            f"{sample}")


def _inputs_html(inputs: dict[str, Any], plot: str | None) -> str:
    if not inputs["by_source"]:
        return "<h2>Input sizes</h2><p>No input sizes recorded in this build's shard stats.</p>"
    rows = []
    for name, h in inputs["by_source"].items():
        rows.append([name, h["count"], f"{h['mean_megapixels']:.3f}", f"{100 * h['below_canvas_share']:.1f}%"])
    labels = {k: bin_labels(tuple(e)) for k, e in inputs["bins"].items()}
    detail = "".join(
        f"<h3>{html.escape(title)}</h3>" + _table(["source", *labels[key]],
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
        missing = "".join(f"<li>{html.escape(item)}</li>" for item in metrics.get("not_reported", []))
        return (f"<h2>Throughput</h2><p>The last run: {throughput['seconds']} s wall time on "
                f"{html.escape(str(throughput['runner']))}, which reports no Beam metrics. Every count in this "
                f"report comes from the committed shards' stats; not reported by the runner:</p><ul>{missing}</ul>")
    if not stages:
        return ("<h2>Throughput</h2><p>No stage timings in this build's summary (the runner reported no "
                "Beam distribution metrics).</p>")
    rows = [[name, s["items"], s["unit"], s["calls"], f"{s['seconds']:.3f}", f"{s['items_per_s'] or 0:,.1f}"]
            for name, s in stages.items()]
    img = f"<img src=\"{plot}\" alt=\"stage throughput\">" if plot else ""
    return (f"<h2>Throughput</h2><p>The last run: {throughput['seconds']} s wall time on {throughput['runner']}"
            f"{'' if throughput.get('workers') is None else ', ' + str(throughput['workers']) + ' workers'}. "
            "Busy seconds are each stage's own work summed over workers (Beam distribution metrics); items per "
            "busy second is one worker's rate. Shards an earlier run committed are not counted.</p>"
            + _table(["stage", "items", "item", "calls", "busy seconds", "items per busy second"], rows) + img)


def trainer_section(output: str, report_dir: str) -> dict[str, Any] | None:
    """The demo fit that `make build-uvd` ends with (`python -m trainer.demo`): its loss curve,
    plotted here, and its generation strip, copied next to the page."""
    demo_uri = fsio.join(output, TRAINER_DIR, "demo.json")
    if not fsio.exists(demo_uri):
        return None
    demo = read_json(demo_uri)
    figure, axis = _pyplot().subplots(figsize=(6, 3), dpi=100)
    axis.plot(demo["curve"]["step"], demo["curve"]["loss"], linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("train loss (nats/token)")
    axis.set_title(f"{demo['preset']} on this build's token shards")
    axis.grid(alpha=0.3)
    loss_plot = _save_figure(figure, report_dir, "trainer_loss.png")
    section = {k: demo[k] for k in ("preset", "parameters", "steps", "seq_len", "tokens_seen", "tokens_per_s",
                                    "final_loss", "prompts", "legend")}
    section["first_loss"] = demo["curve"]["loss"][0] if demo["curve"]["loss"] else None
    section["loss_plot"] = loss_plot
    if demo.get("generation_png"):
        strip = fsio.read_bytes(fsio.join(output, TRAINER_DIR, demo["generation_png"]))
        write_bytes(fsio.join(report_dir, "trainer_generation.png"), strip)
        section["generation"] = "trainer_generation.png"
    return section


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
              f"{html.escape(', '.join(plan['absent_groups']))}.</p>" if plan.get("absent_groups") else "")
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
    generation = (f"<p>{html.escape(section['legend'])}</p><img src=\"{section['generation']}\" alt=\"generation\">"
                  if section.get("generation") else "")
    return (f"<h2>Trainer</h2><p>{html.escape(section['preset'])} ({section['parameters'] / 1e6:.1f}M parameters), "
            f"{section['steps']} steps of {section['seq_len']} tokens, {section['tokens_seen']:,} tokens seen, {rate}; "
            f"loss {section['first_loss']:.3f} -> {section['final_loss']:.3f}.</p>"
            f"<img src=\"{section['loss_plot']}\" alt=\"loss curve\">{prompts}{generation}")


def _warnings_html(warnings: dict[str, list[str]] | None) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(w)}</li>" for found in warnings.values() for w in found)
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


def render_html(data: dict[str, Any], sheets: dict[str, str]) -> str:
    source_rows = []
    for name, s in data["sources"].items():
        split = s["by_split"]
        source_rows.append([name, s["type"], ", ".join(s["by_kind"]), s["sentences"], s["images"],
                            split.get("train", {}).get("sentences", 0), split.get("val", {}).get("sentences", 0),
                            s["rejects"], _or_dash(data["counts"]["by_source"][name]["tokens"])])
    group_rows = [[g, c["sentences"], _or_dash(c["images"]), _or_dash(c["tokens"])]
                  for g, c in data["counts"]["by_kind_task"].items()]
    reject_rows = [[reason, n, "; ".join(f"{e['key']} ({e['detail'][:60]})" for e in
                                         data["reject_examples"].get(reason, []))]
                   for reason, n in data["rejects_by_reason"].items()]
    sections = "".join(
        f"<h3>{html.escape(name)}</h3><img src=\"{html.escape(path)}\" alt=\"contact sheet of {html.escape(name)}\">"
        for name, path in sheets.items()
    )
    t = data["totals"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>UVD build report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%;border:1px solid #ddd}}</style>
</head><body>
<h1>UVD build report</h1>
<p>Output <code>{html.escape(data['output'])}</code>, config {data['config_hash']}, images {data['image_size']}px.
{t['sentences']} sentences, {t['images']} images, {t['rejects']} rejects in {t['shards']} shards.</p>
{_warnings_html(data.get("warnings"))}
<h2>Sentences by source</h2>
{_table(['source', 'type', 'kinds', 'sentences', 'images', 'train', 'val', 'rejects', 'tokens'], source_rows)}
<h2>Sentences by kind</h2>
{_table(['kind', 'sentences'], [[k, n] for k, n in data['sentences_by_kind'].items()])}
<h2>Sentences, images and tokens by kind and task</h2>
{_table(['kind / task', 'sentences', 'images', 'tokens'], group_rows)}
<h2>Sentences by split</h2>
{_table(['split', 'sentences'], [[k, n] for k, n in data['sentences_by_split'].items()])}
<h2>Rejects by reason</h2>
{_table(['reason', 'count', 'examples'], reject_rows)}
{_duplicates_html(data.get("duplicates"))}
{_inputs_html(data["inputs"], data.get("plots", {}).get("inputs"))}
{_lengths_html(data["sentence_lengths"], data.get("plots", {}).get("sentence_lengths"))}
<h2>Contact sheets (one row per sentence, one sheet per kind and task)</h2>
{sections}
{_tokenizer_html(data.get("tokenizer"))}
{_throughput_html(data["throughput"], data.get("plots", {}).get("throughput"))}
{_mixture_html(data.get("mixture"))}
{_trainer_html(data.get("trainer"))}
</body></html>
"""


def tokenizer_section(output: str, report_dir: str,
                      sample_images: int = RECONSTRUCTION_IMAGES) -> dict[str, Any] | None:
    """Per source: codebook usage, code perplexity and entropy from the token shards, a code
    histogram plot, and PSNR/SSIM of a sample decoded from its stored tokens with the build's
    tokenizer against the rendered originals, with an original vs decoded sheet."""
    from uvd_pipeline.shards import find_shards, read_token_shard

    local = fsio.local_path(output)
    if local is None:
        return None  # token shards are memory-mapped: local outputs only
    paths = find_shards(fsio.join(local, "tokens"))
    if not paths:
        return None
    histograms: dict[str, np.ndarray] = {}
    shards_of: dict[str, list[str]] = defaultdict(list)
    meta = None
    for path in paths:
        table, meta = read_token_shard(path)
        source = table.column("source")[0].as_py() if table.num_rows else None
        if source is None:
            continue
        shards_of[source].append(path)
        values = np.concatenate([c.values.to_numpy() for c in table.column("tokens").chunks])
        counts = np.bincount(values, minlength=meta.codebook_size)
        histograms[source] = histograms.get(source, 0) + counts
    assert meta is not None
    histograms = dict(sorted(histograms.items()))
    total = sum(histograms.values())
    from tokenizer.metrics import codebook_usage, entropy_bits, perplexity

    def stats(hist: np.ndarray) -> dict[str, float]:
        return {"tokens": int(hist.sum()), "codes_used": int((hist > 0).sum()),
                "usage": round(codebook_usage(hist), 4), "perplexity": round(perplexity(hist), 1),
                "entropy_bits": round(entropy_bits(hist), 4)}

    section: dict[str, Any] = {"tokenizer": meta.tokenizer_name, "weights_hash": meta.tokenizer_hash,
                               "codebook_size": meta.codebook_size, "all": stats(total),
                               "by_source": {k: stats(v) for k, v in histograms.items()},
                               "tokens_per_image": meta.tokens_per_image}
    section["usage_plot"] = tokens_plot({"all": total, **histograms}, report_dir)
    tok = _build_tokenizer(output)
    if tok is None:
        return section
    if tok.weights_hash != meta.tokenizer_hash:
        # the checkpoint the config names was retrained since: its decodings would not be these tokens'
        section["reconstruction_skipped"] = (f"the tokenizer at the build's checkpoint has weights "
                                             f"{tok.weights_hash[:16]}, the tokens were made by {meta.tokenizer_hash[:16]}")
        return section
    from tokenizer.evaluate import comparison_sheet
    from tokenizer.metrics import psnr_per_image, ssim_per_image

    reconstruction, psnrs, ssims = {}, [], []
    for source, source_paths in sorted(shards_of.items()):
        originals, codes, side, used = reconstruction_sample(output, source_paths, sample_images)
        if not originals.size:
            continue
        decoded = tok.decode(codes.astype(np.int64), grid=(side, side))
        psnr, ssim = psnr_per_image(originals, decoded), ssim_per_image(originals, decoded)
        psnrs += list(psnr)
        ssims += list(ssim)
        buf = io.BytesIO()
        comparison_sheet(originals, decoded).save(buf, "PNG")
        name = f"reconstruction_{source}.png"
        write_bytes(fsio.join(report_dir, name), buf.getvalue())
        reconstruction[source] = {"images": len(originals), "shards": [p.rsplit("/", 1)[-1] for p in used],
                                  "psnr": round(float(np.mean(psnr)), 4), "ssim": round(float(np.mean(ssim)), 5),
                                  "sheet": name}
    if reconstruction:
        section["reconstruction"] = reconstruction
        section["sample_psnr"] = round(float(np.mean(psnrs)), 2)
        section["sample_ssim"] = round(float(np.mean(ssims)), 4)
    return section


def _build_tokenizer(output: str):
    """The build's tokenizer, or None when its checkpoint cannot be loaded any more."""
    from uvd_pipeline.tokenize_stage import TokenizeSettings, _load_tokenizer

    build = read_json(fsio.join(output, "build.json"))
    checkpoint = build.get("config", {}).get("tokenizer", {}).get("checkpoint", "embedded")
    try:
        return _load_tokenizer(TokenizeSettings(checkpoint, batch_size=8, threads=None))  # all cores
    except Exception:  # the checkpoint moved since the build: the usage numbers still stand
        return None


def reconstruction_sample(output: str, token_paths: list[str], count: int,
                          per_sentence: int = RECONSTRUCTION_PER_SENTENCE):
    """Rendered images of token shards' rendered twins (the first `per_sentence` of each sentence,
    shard after shard, `count` in all) and their stored codes:
    (originals NHWC, codes N x tokens, grid side, the token shards used)."""
    from uvd_pipeline.shards import read_token_shard, sentence_tokens

    originals, codes, used, side = [], [], [], 0
    for token_path in token_paths:
        if len(originals) >= count:
            break
        table, meta = read_token_shard(token_path)
        side = int(round(meta.tokens_per_image ** 0.5))
        parts = token_path.split("/")
        tar = verified_tar(output, parts[-3], parts[-2], parts[-1].replace(".arrow", ".tar"))
        used.append(token_path)
        for index, sentence in enumerate(iter_shard(tar)):
            tokens = sentence_tokens(table, index).reshape(-1, meta.tokens_per_image)
            for png, image_codes in list(zip(sentence.images, tokens))[:per_sentence]:
                originals.append(decode_png(png))
                codes.append(image_codes)
                if len(originals) >= count:
                    break
            if len(originals) >= count:
                break
    if not originals:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.uint16), side, used
    return np.stack(originals), np.stack(codes), side, used


def write_report(output: str, max_sentences_per_group: int = 4) -> dict[str, str]:
    summary_uri = fsio.join(output, SUMMARY_FILE)
    if not fsio.exists(summary_uri):
        raise FileNotFoundError(f"{output} has no {SUMMARY_FILE}: run the build (to completion) first")
    summary = read_json(summary_uri)
    data = report_data(output, summary)
    report_dir = fsio.join(output, REPORT_DIR)
    sheets: dict[str, str] = {}
    picked = {k: v for k, v in pick_sentences(output, summary, max_sentences_per_group).items() if v}
    overview = [sentences[0] for sentences in picked.values()]
    groups = {"all kinds and tasks": overview, **picked}
    for title, sentences in groups.items():
        if not sentences:
            continue
        buf = io.BytesIO()
        contact_sheet(sentences).save(buf, "PNG")
        name = "contact_sheet.png" if title == "all kinds and tasks" else f"contact_{title.replace('/', '_')}.png"
        write_bytes(fsio.join(report_dir, name), buf.getvalue())
        sheets[title] = name
    data["contact_sheets"] = sheets
    data["tokenizer"] = tokenizer_section(output, report_dir)
    if data["tokenizer"]:  # fp16/bf16 (or tuned-kernel) tokens may differ by rounding: say what made them
        data["tokenizer"]["made_by"] = (summary.get("tokens") or {}).get("tokenizers", [])
    per_image = (data["tokenizer"] or {}).get("tokens_per_image")
    for counts in data["counts"]["by_kind_task"].values():  # every image is the same number of tokens
        if per_image and counts["images"] is not None:
            counts["tokens"] = counts["images"] * per_image
    data["plots"] = {name: path for name, path in (
        ("inputs", inputs_plot(data["inputs"], report_dir)),
        ("sentence_lengths", lengths_plot(data["sentence_lengths"], report_dir)),
        ("throughput", throughput_plot(data["throughput"]["stages"], report_dir))) if path}
    data["trainer"] = trainer_section(output, report_dir)
    json_uri = fsio.join(report_dir, "report.json")
    html_uri = fsio.join(report_dir, "report.html")
    write_bytes(json_uri, json.dumps(data, indent=1, sort_keys=True).encode())
    write_bytes(html_uri, render_html(data, sheets).encode())
    return {"html": html_uri, "json": json_uri}
