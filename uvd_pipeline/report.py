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

An output whose files no longer match its summary (damaged, or a build that did not finish) gets
a page naming what is wrong instead of numbers (`write_report`).

This module puts the page together; the figures come from `report_data`, the pictures from
`report_plots`, the HTML from `report_page`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

import numpy as np

from sources import fsio
from tokenizer.atomic import write_bytes
from tokenizer.host_memory import freed_memory_kept
from tokenizer.progress import Progress
from uvd_pipeline.rendered_shards import read_stats
from uvd_pipeline.report_data import (RECONSTRUCTION_IMAGES, TRAINER_DIR, build_tokenizer, output_problems,
                                      pick_sentences, reconstructions, report_data, token_usage, trainer_demo,
                                      trainer_figures)
from uvd_pipeline.report_page import damaged_html, render_html
from uvd_pipeline.shards import REBUILD_HINT, ShardDamaged
from uvd_pipeline.shown import shown
from uvd_pipeline.state_files import StateFileRefused, read_state
from uvd_pipeline.report_plots import (contact_sheet, inputs_plot, lengths_plot, loss_plot, save_image,
                                       throughput_plot, tokens_plot)
from uvd_pipeline.summary import SUMMARY_FILE
from uvd_pipeline.output_lock import lock_uri
from uvd_pipeline.verify import OutputUnfinished, no_output

REPORT_DIR = "report"
log = logging.getLogger(__name__)  # one line per phase: decoding the samples takes minutes on a CPU


def tokenizer_section(output: str, report_dir: str,
                      sample_images: int = RECONSTRUCTION_IMAGES) -> dict[str, Any] | None:
    """Per source: code statistics with a histogram plot, and PSNR/SSIM of a sample decoded from
    its stored tokens with the build's tokenizer against the rendered originals, with an original
    vs decoded sheet."""
    from tokenizer.evaluate import comparison_sheet

    usage = token_usage(output)
    if usage is None:
        return None
    section, histograms, shards_of = usage
    if not histograms:  # no tokens: nothing to plot, nor to decode
        return section
    section["usage_plot"] = tokens_plot(histograms, report_dir)
    tok = build_tokenizer(output)
    if tok is None:
        return section
    if not tok.made(section["weights_hash"]):
        # the checkpoint the config names was retrained since: its decodings would not be these tokens'
        section["reconstruction_skipped"] = (f"the tokenizer at the build's checkpoint has weights "
                                             f"{tok.tokenizer_hash[:16]}, the tokens were made by "
                                             f"{section['weights_hash'][:16]}")
        return section
    reconstruction, psnrs, ssims = {}, [], []
    log.info("report: token statistics; decoding a sample of each source (%d) with the build's tokenizer "
             "for PSNR/SSIM", len(shards_of))
    with freed_memory_kept(tok.device.type == "cpu"):  # the decoder's activations reused, not faulted in again
        for sample in reconstructions(output, tok, shards_of, sample_images):
            source = sample["source"]
            psnrs += list(sample["psnr"])
            ssims += list(sample["ssim"])
            name = save_image(comparison_sheet(sample["originals"], sample["decoded"]), report_dir,
                              f"reconstruction_{source}.png")
            reconstruction[source] = {"images": len(sample["originals"]),
                                      "shards": [p.rsplit("/", 1)[-1] for p in sample["used"]],
                                      "psnr": round(float(np.mean(sample["psnr"])), 4),
                                      "ssim": round(float(np.mean(sample["ssim"])), 5), "sheet": name}
            log.info("report: decoded %s: PSNR %.2f dB", source, reconstruction[source]["psnr"])
    if reconstruction:
        section["reconstruction"] = reconstruction
        section["sample_psnr"] = round(float(np.mean(psnrs)), 2)
        section["sample_ssim"] = round(float(np.mean(ssims)), 4)
    return section


def trainer_section(output: str, report_dir: str) -> dict[str, Any] | None:
    """The demo fit that `make build-uvd` ends with (`python -m trainer.demo`): its loss curve,
    plotted here, and its generation strip, copied next to the page."""
    demo = trainer_demo(output)
    if demo is None:
        return None
    section = trainer_figures(demo)
    section["loss_plot"] = loss_plot(demo, report_dir)
    if demo.get("generation_png"):
        strip = read_state(_strip_uri(output, demo["generation_png"]))  # a fifo or a huge file refused
        write_bytes(fsio.join(report_dir, "trainer_generation.png"), strip)
        section["generation"] = "trainer_generation.png"
    return section


def _strip_uri(output: str, name: Any) -> str:
    """The demo's generation strip: a file of `OUT/trainer/` its demo.json names by its plain name
    (`trainer.demo` writes `generation.png`); a path, `..` or no text is refused naming the field,
    never copied into the report from wherever it leads."""
    if not isinstance(name, str) or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{fsio.join(output, TRAINER_DIR, 'demo.json')}: generation_png {str(name)[:80]!r} is no "
                         "file name in its folder; run python -m trainer.demo again (it writes the file anew)")
    return fsio.join(output, TRAINER_DIR, name)


def contact_sheets(output: str, summary: dict[str, Any], report_dir: str, per_group: int) -> dict[str, str]:
    """An overview sheet (the first sentence of every kind and task), then one sheet per group:
    title -> file name."""
    picked = {k: v for k, v in pick_sentences(output, summary, per_group).items() if v}
    groups = {"all kinds and tasks": [sentences[0] for sentences in picked.values()], **picked}
    sheets: dict[str, str] = {}
    for title, sentences in groups.items():
        if not sentences:
            continue
        name = "contact_sheet.png" if title == "all kinds and tasks" else f"contact_{title.replace('/', '_')}.png"
        sheets[title] = save_image(contact_sheet(sentences), report_dir, name)
    return sheets


PAGES = ("report.html", "report.json")


def clear_report_dir(report_dir: str, kept: Iterable[str] = ()) -> None:
    """Remove what an earlier report wrote (its page, data and pictures) but the files `kept` (by
    name: what the report just written shows): a picture no page shows any more must not stay
    behind. Called once the new page is written, never before: a report that failed (a name it
    could not write) took the earlier one with it and left none."""
    if not fsio.isdir(report_dir):
        return
    fs, _ = fsio.filesystem(report_dir)
    keep = set(kept)
    for uri in fsio.list_files(report_dir, (".png", ".html", ".json")):
        if uri.rsplit("/", 1)[-1] not in keep:
            fs.rm_file(fsio.filesystem(uri)[1])


def _pictures(data: Any) -> set[str]:
    """The picture files a report's data names (its plots, sheets and strips: `save_image` names)."""
    if isinstance(data, dict):
        return set().union(*(_pictures(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(_pictures(v) for v in data)) if data else set()
    return {data} if isinstance(data, str) and data.endswith(".png") and "/" not in data else set()


def write_damaged(output: str, report_dir: str, problems: list[tuple[str, str]]) -> dict[str, str]:
    """A page and report.json that name what is damaged or unfinished, and no numbers."""
    json_uri = fsio.join(report_dir, "report.json")
    html_uri = fsio.join(report_dir, "report.html")
    damaged = [{"file": shown(uri), "why": shown(why)} for uri, why in problems]  # no lone surrogate in UTF-8
    write_bytes(json_uri, json.dumps({"output": output, "damaged": damaged}, indent=1, sort_keys=True).encode())
    write_bytes(html_uri, damaged_html(output, problems).encode())
    return {"html": html_uri, "json": json_uri}


def write_report(output: str, max_sentences_per_group: int = 4, progress: Progress | None = None) -> dict[str, str]:
    """report/report.html, report/report.json and their pictures for a finished build at `output`:
    {"html": uri, "json": uri}. A damaged or unfinished output gets a page that says what is wrong
    instead of the summary's numbers, and `ShardDamaged` naming the first problem; an unfinished or
    held one (intact) `OutputUnfinished`. `progress` counts the shards checked (and is stopped after them)."""
    from uvd_pipeline.build import BUILD_FILE

    summary_uri = fsio.join(output, SUMMARY_FILE)
    if not fsio.exists(summary_uri):
        if fsio.exists(fsio.join(output, BUILD_FILE)):  # a build started here and did not finish (or runs)
            raise OutputUnfinished(f"{output}: UNFINISHED: it has no {SUMMARY_FILE}: its last build did not finish "
                                   "(it failed, was stopped, or is running); run the same build command again to "
                                   "finish it, then write the report")
        raise no_output(output, f"has no {SUMMARY_FILE}: run the build (to completion) first")
    report_dir = fsio.join(output, REPORT_DIR)
    try:
        summary = read_stats(summary_uri)  # a JSON object, or ValueError
    except StateFileRefused as exc:  # a folder, a fifo in its place: said as what it is, with the fix
        problems = [(summary_uri, exc.why)]
    except ValueError as exc:
        problems = [(summary_uri, f"unreadable JSON ({exc})"[:200])]
    else:
        log.info("report: checking %s against its summary and stats files", output)
        problems = output_problems(output, summary, progress)
        if progress is not None:
            progress.stop()  # its rate is the shard checks', not the pages' below
    try:
        if not problems:
            return _write_pages(output, summary, report_dir, max_sentences_per_group)
    except ShardDamaged as exc:  # found while reading (a tar of the recorded size, other bytes)
        problems = [(exc.path, exc.why)]
    write_damaged(output, report_dir, problems)
    clear_report_dir(report_dir, PAGES)
    if all(uri == lock_uri(output) for uri, _ in problems):  # held, its files intact: not damage
        raise OutputUnfinished(f"{output}: UNFINISHED: {problems[0][1]}; write the report once the build is done")
    path, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    hint = "" if REBUILD_HINT in why else f"; {REBUILD_HINT}"
    raise ShardDamaged(path, f"{why}{more}{hint}; the report page lists what is wrong")


def _write_pages(output: str, summary: dict[str, Any], report_dir: str, max_sentences_per_group: int) -> dict[str, str]:
    """The report of an intact output (`write_report`)."""
    log.info("report: counts, histograms and contact sheets")
    data = report_data(output, summary)
    sheets = contact_sheets(output, summary, report_dir, max_sentences_per_group)
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
    write_bytes(html_uri, render_html(data, sheets, sheets_asked=max_sentences_per_group > 0).encode())
    clear_report_dir(report_dir, {*PAGES, *_pictures(data)})
    return {"html": html_uri, "json": json_uri}
