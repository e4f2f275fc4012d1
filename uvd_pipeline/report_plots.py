"""The report's pictures: contact sheets of whole sentences and matplotlib plots, each written as
a PNG into the report folder; every function returns the file name the page links to."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline.quality import bin_labels
from uvd_pipeline.render import decode_png
from uvd_pipeline.report_data import ALL_SOURCES

THUMB = 64
LABEL_WIDTH = 260


def contact_sheet(sentences: list, thumb: int = THUMB) -> Image.Image:
    """One row per sentence: its id on the left, then every image in sentence order, so a person
    sees at a glance whether frames are in order and classes are coherent."""
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


def save_image(image: Image.Image, report_dir: str, name: str) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    write_bytes(fsio.join(report_dir, name), buf.getvalue())
    return name


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported only when a plot is drawn."""
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
        style = {"color": "black", "linewidth": 1.6} if name == ALL_SOURCES else {"linewidth": 1}
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


def loss_plot(demo: dict[str, Any], report_dir: str) -> str:
    """The trainer demo's loss curve."""
    figure, axis = _pyplot().subplots(figsize=(6, 3), dpi=100)
    axis.plot(demo["curve"]["step"], demo["curve"]["loss"], linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("train loss (nats/token)")
    axis.set_title(f"{demo['preset']} on this build's token shards")
    axis.grid(alpha=0.3)
    return _save_figure(figure, report_dir, "trainer_loss.png")
