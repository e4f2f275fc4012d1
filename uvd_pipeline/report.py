"""Report v0: what a build holds and what it rejected, as `report.html` plus `report.json`.

It reads only what the build committed (summary, stats, rejects, rendered tars), so it can be
run on any finished output, local or remote. Contact sheets show whole sentences, one per row,
so a person sees at a glance whether frames are in order and classes are coherent.
"""

from __future__ import annotations

import html
import io
import json
from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sources import fsio
from uvd_pipeline.build import REJECTS_FILE, SUMMARY_FILE
from uvd_pipeline.render import decode_png
from uvd_pipeline.rendered_shards import iter_shard, read_json, sentence_group, write_bytes_atomic

REPORT_DIR = "report"
TRAINER_DIR = "trainer"  # written by `python -m trainer.demo` (the report only reads it)
THUMB = 64
LABEL_WIDTH = 260
EXAMPLES_PER_REASON = 3


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
        uri = fsio.join(output, "rendered", shard["source"], shard["split"], shard["tar"])
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
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tokenizer_html(section: dict[str, Any] | None) -> str:
    if not section:
        return "<h2>Tokenizer</h2><p>No token shards in this build.</p>"
    rows = [["all", *section["all"].values()]] + [[k, *v.values()] for k, v in section["by_source"].items()]
    html_rows = _table(["source", "tokens", "codes used", "usage", "perplexity"], rows)
    sample = ""
    if "reconstruction_sheet" in section:
        sample = (f"<p>Original (left) and decoded from the stored tokens (right): PSNR "
                  f"{section['sample_psnr']} dB, SSIM {section['sample_ssim']}.</p>"
                  f"<img src=\"{section['reconstruction_sheet']}\" alt=\"reconstructions\">")
    return (f"<h2>Tokenizer</h2><p>{html.escape(section['tokenizer'])} (weights "
            f"{section['weights_hash'][:16]}), codebook {section['codebook_size']}.</p>{html_rows}"
            f"<p>Code frequencies, sorted, log scale:</p><img src=\"{section['usage_plot']}\" alt=\"usage\">{sample}")


def trainer_section(output: str, report_dir: str) -> dict[str, Any] | None:
    """The demo fit that `make build-uvd` ends with (`python -m trainer.demo`): its loss curve,
    plotted here, and its generation strip, copied next to the page."""
    demo_uri = fsio.join(output, TRAINER_DIR, "demo.json")
    if not fsio.exists(demo_uri):
        return None
    demo = read_json(demo_uri)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3), dpi=100)
    axis.plot(demo["curve"]["step"], demo["curve"]["loss"], linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("train loss (nats/token)")
    axis.set_title(f"{demo['preset']} on this build's token shards")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    plt.close(figure)
    write_bytes_atomic(fsio.join(report_dir, "trainer_loss.png"), buf.getvalue())
    section = {k: demo[k] for k in ("preset", "parameters", "steps", "seq_len", "tokens_seen", "tokens_per_s",
                                    "final_loss", "prompts", "legend")}
    section["first_loss"] = demo["curve"]["loss"][0] if demo["curve"]["loss"] else None
    section["loss_plot"] = "trainer_loss.png"
    if demo.get("generation_png"):
        strip = fsio.read_bytes(fsio.join(output, TRAINER_DIR, demo["generation_png"]))
        write_bytes_atomic(fsio.join(report_dir, "trainer_generation.png"), strip)
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


def _duplicates_html(duplicates: dict[str, Any] | None) -> str:
    if not duplicates:
        return ""
    rows = [[name, d["inputs"], d["exact"], d["near"], f"{100 * d['rate']:.1f}%"] for name, d in duplicates.items()]
    return ("<h2>Duplicates</h2><p>Web and class images dropped as copies of a kept twin (rendered pixels "
            "identical, or pHash within the configured Hamming distance); inputs = images in sentences + "
            "rejects.</p>" + _table(["source", "inputs", "exact", "near", "dup rate"], rows))


def render_html(data: dict[str, Any], sheets: dict[str, str]) -> str:
    source_rows = []
    for name, s in data["sources"].items():
        split = s["by_split"]
        source_rows.append([name, s["type"], ", ".join(s["by_kind"]), s["sentences"], s["images"],
                            split.get("train", {}).get("sentences", 0), split.get("val", {}).get("sentences", 0),
                            s["rejects"]])
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
<h2>Sentences by source</h2>
{_table(['source', 'type', 'kinds', 'sentences', 'images', 'train', 'val', 'rejects'], source_rows)}
<h2>Sentences by kind</h2>
{_table(['kind', 'sentences'], [[k, n] for k, n in data['sentences_by_kind'].items()])}
<h2>Sentences by kind and task</h2>
{_table(['kind / task', 'sentences'], [[k, n] for k, n in data['sentences_by_task'].items()])}
<h2>Sentences by split</h2>
{_table(['split', 'sentences'], [[k, n] for k, n in data['sentences_by_split'].items()])}
<h2>Rejects by reason</h2>
{_table(['reason', 'count', 'examples'], reject_rows)}
{_duplicates_html(data.get("duplicates"))}
<h2>Contact sheets (one row per sentence, one sheet per kind and task)</h2>
{sections}
{_tokenizer_html(data.get("tokenizer"))}
{_mixture_html(data.get("mixture"))}
{_trainer_html(data.get("trainer"))}
</body></html>
"""


def tokenizer_section(output: str, report_dir: str, sample_images: int = 8) -> dict[str, Any] | None:
    """Codebook usage and code perplexity per source from the token shards, and an original vs
    reconstruction sheet decoded from the stored tokens with the build's tokenizer."""
    from uvd_pipeline.shards import find_shards, read_token_shard, sentence_tokens

    local = fsio.local_path(output)
    if local is None:
        return None  # token shards are memory-mapped: local outputs only
    paths = find_shards(fsio.join(local, "tokens"))
    if not paths:
        return None
    histograms: dict[str, np.ndarray] = {}
    meta = None
    for path in paths:
        table, meta = read_token_shard(path)
        source = table.column("source")[0].as_py() if table.num_rows else None
        if source is None:
            continue
        values = np.concatenate([c.values.to_numpy() for c in table.column("tokens").chunks])
        counts = np.bincount(values, minlength=meta.codebook_size)
        histograms[source] = histograms.get(source, 0) + counts
    assert meta is not None
    total = sum(histograms.values())

    def stats(hist: np.ndarray) -> dict[str, float]:
        p = hist[hist > 0] / hist.sum()
        return {"tokens": int(hist.sum()), "codes_used": int((hist > 0).sum()),
                "usage": round(float((hist > 0).mean()), 4),
                "perplexity": round(float(np.exp(-(p * np.log(p)).sum())), 1)}

    section: dict[str, Any] = {"tokenizer": meta.tokenizer_name, "weights_hash": meta.tokenizer_hash,
                               "codebook_size": meta.codebook_size, "all": stats(total),
                               "by_source": {k: stats(v) for k, v in sorted(histograms.items())}}
    from tokenizer.evaluate import comparison_sheet, usage_plot

    buf = io.BytesIO()
    usage_plot(total).save(buf, "PNG")
    write_bytes_atomic(fsio.join(report_dir, "tokenizer_usage.png"), buf.getvalue())
    section["usage_plot"] = "tokenizer_usage.png"
    reconstruction = _reconstruction(output, paths[0], sample_images)
    if reconstruction is not None:
        originals, decoded = reconstruction
        from tokenizer.metrics import psnr_per_image, ssim_per_image

        section["sample_psnr"] = round(float(np.mean(psnr_per_image(originals, decoded))), 2)
        section["sample_ssim"] = round(float(np.mean(ssim_per_image(originals, decoded))), 4)
        buf = io.BytesIO()
        comparison_sheet(originals, decoded).save(buf, "PNG")
        write_bytes_atomic(fsio.join(report_dir, "tokenizer_reconstruction.png"), buf.getvalue())
        section["reconstruction_sheet"] = "tokenizer_reconstruction.png"
    return section


def _reconstruction(output: str, token_path: str, count: int):
    """Rendered images of one shard next to the images its stored tokens decode to."""
    from uvd_pipeline.shards import read_token_shard, sentence_tokens
    from uvd_pipeline.tokenize_stage import TokenizeSettings, _load_tokenizer

    build = read_json(fsio.join(output, "build.json"))
    checkpoint = build.get("config", {}).get("tokenizer", {}).get("checkpoint", "embedded")
    try:
        tok = _load_tokenizer(TokenizeSettings(checkpoint, batch_size=8))
    except Exception:  # the checkpoint moved since the build: the usage numbers still stand
        return None
    table, meta = read_token_shard(token_path)
    parts = token_path.split("/")
    tar = fsio.join(output, "rendered", parts[-3], parts[-2], parts[-1].replace(".arrow", ".tar"))
    originals, codes = [], []
    for index, sentence in enumerate(iter_shard(tar)):
        tokens = sentence_tokens(table, index).reshape(-1, meta.tokens_per_image)
        for png, image_codes in zip(sentence.images, tokens):
            originals.append(decode_png(png))
            codes.append(image_codes)
            if len(originals) >= count:
                break
        if len(originals) >= count:
            break
    if not originals:
        return None
    side = int(round(meta.tokens_per_image ** 0.5))
    return np.stack(originals), tok.decode(np.stack(codes).astype(np.int64), grid=(side, side))


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
        write_bytes_atomic(fsio.join(report_dir, name), buf.getvalue())
        sheets[title] = name
    data["contact_sheets"] = sheets
    data["tokenizer"] = tokenizer_section(output, report_dir)
    data["trainer"] = trainer_section(output, report_dir)
    json_uri = fsio.join(report_dir, "report.json")
    html_uri = fsio.join(report_dir, "report.html")
    write_bytes_atomic(json_uri, json.dumps(data, indent=1, sort_keys=True).encode())
    write_bytes_atomic(html_uri, render_html(data, sheets).encode())
    return {"html": html_uri, "json": json_uri}
