"""Report v0 on a finished build: counts, rejects, contact sheets that show real sentences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from uvd_pipeline.render import decode_png
from uvd_pipeline.report import LABEL_WIDTH, THUMB, write_report
from uvd_pipeline.rendered_shards import iter_shard


def test_report_counts_and_sheets(mini_build):
    config, summary = mini_build
    paths = write_report(config.output, max_sentences_per_group=2)
    data = json.loads(Path(paths["json"]).read_text())
    assert data["totals"] == summary["totals"]
    assert data["sentences_by_kind"] == {"category": 6, "image": 67, "video": 3}
    assert data["rejects_by_reason"]["remainder_dropped"] == 8
    assert data["rejects_by_reason"]["duplicate_near"] == 5
    assert data["reject_examples"]["too_few_frames"][0]["key"].startswith("clips-short_10f")
    page = Path(paths["html"]).read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert "contact_sheet.png" in images and len(images) == 6  # overview, image, category, video, 2 tokenizer
    report_dir = Path(paths["html"]).parent
    for name in images:
        with Image.open(report_dir / name) as sheet:
            sheet.verify()
    assert data["sentences_by_task"] == {"category": 6, "image": 67, "video": 3}
    sheet = np.asarray(Image.open(report_dir / "contact_video.png").convert("RGB"))
    assert sheet.shape[0] == 2 * (THUMB + 4)  # one row per sentence
    # the first thumbnail of the first row is the first frame of the first video sentence
    first_tar = sorted((Path(config.output) / "rendered" / "clips").rglob("*.tar"))
    sentence = next(s for tar in first_tar for s in iter_shard(str(tar)))
    frame = np.asarray(Image.fromarray(np.ascontiguousarray(decode_png(sentence.images[0]))).resize((THUMB, THUMB), Image.BILINEAR))
    thumb = sheet[2 : 2 + THUMB, LABEL_WIDTH : LABEL_WIDTH + THUMB]
    assert np.abs(thumb.astype(int) - frame).mean() < 1.0


def test_report_tokenizer_section(mini_build):
    config, summary = mini_build
    paths = write_report(config.output, max_sentences_per_group=1)
    data = json.loads(Path(paths["json"]).read_text())
    section = data["tokenizer"]
    assert section["tokenizer"] == "tiny-seed0" and section["codebook_size"] == 8192
    # 64 px images at f16: 16 tokens each, every rendered image tokenized
    assert section["all"]["tokens"] == summary["totals"]["images"] * 16
    assert set(section["by_source"]) == {"web", "inet", "clips"}
    assert 0 < section["all"]["usage"] <= 1 and section["all"]["perplexity"] >= 1
    assert 0 < section["sample_psnr"] < 60
    report_dir = Path(paths["html"]).parent
    for name in (section["usage_plot"], section["reconstruction_sheet"]):
        with Image.open(report_dir / name) as image:
            image.verify()
    assert "reconstruction_sheet" in section and section["reconstruction_sheet"] in Path(paths["html"]).read_text()
