"""`python -m trainer.demo`, the last step of `make build-uvd`: a tiny fit on a real build's token
shards, a generation from held-out prompts, and the report's trainer section."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer import demo
from uvd_pipeline.report import write_report


@pytest.fixture(scope="module")
def demo_build(mini_build, tmp_path_factory) -> Path:
    config, _ = mini_build
    out = tmp_path_factory.mktemp("demo") / "out"
    shutil.copytree(config.output, out)  # the shared build stays as other tests expect it
    return out


@pytest.fixture(scope="module")
def demo_tokenizer(mini_build) -> str:
    """The checkpoint the mini build encoded with."""
    return mini_build[0].tokenizer.checkpoint


def test_demo_fits_generates_and_reports(demo_build: Path, demo_tokenizer: str):
    # 64 px images: 16 tokens each, so 256-token windows hold 16 images as at 256 px
    assert demo.main([str(demo_build), "--tokenizer", demo_tokenizer, "--steps", "40", "--seq-len", "256",
                      "--batch-size", "4", "--context-images", "3", "--threads", "1"]) == 0
    result = json.loads((demo_build / "trainer" / "demo.json").read_text())
    losses = result["curve"]["loss"]
    assert result["steps"] == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5  # it learnt the token statistics
    kinds = [p["kind"] for p in result["prompts"]]
    assert kinds == ["video", "category"]  # what the mini build holds, next-frame first
    assert all(p["context_images"] == 3 for p in result["prompts"])
    strip = np.asarray(Image.open(demo_build / "trainer" / "generation.png").convert("RGB"))
    cell = 64 + 2 * 6
    assert strip.shape == (2 * cell, 5 * cell, 3)  # 3 prompt + sample + truth, one row per prompt
    from trainer.generate import GENERATED_FRAME, PROMPT_FRAME

    assert [tuple(strip[0, i * cell + 1]) for i in range(5)] == [PROMPT_FRAME] * 3 + [GENERATED_FRAME,
                                                                                   demo.TRUTH_FRAME]

    paths = write_report(str(demo_build), max_sentences_per_group=1)
    data = json.loads(Path(paths["json"]).read_text())
    section = data["trainer"]
    assert section["final_loss"] == losses[-1] and section["first_loss"] == losses[0]
    page = Path(paths["html"]).read_text()
    assert "<h2>Trainer</h2>" in page
    report_dir = Path(paths["html"]).parent
    for name in ("trainer_loss.png", "trainer_generation.png"):
        assert name in re.findall(r'<img src="([^"]+)"', page)
        with Image.open(report_dir / name) as image:
            image.verify()

    # a rerun resumes the finished run instead of training again, and gives the same strip
    before = (demo_build / "trainer" / "generation.png").read_bytes()
    assert demo.main([str(demo_build), "--tokenizer", demo_tokenizer, "--steps", "40", "--seq-len", "256",
                      "--batch-size", "4", "--threads", "1"]) == 0
    assert (demo_build / "trainer" / "generation.png").read_bytes() == before


def test_demo_refuses_another_tokenizer(demo_build: Path, tmp_path: Path, capsys):
    from tokenizer import TINY, build, save

    other = tmp_path / "other"
    save(build(TINY, seed=1), other)
    assert demo.main([str(demo_build), "--tokenizer", str(other), "--steps", "2"]) == 2
    assert "is not the tokenizer of these shards" in capsys.readouterr().err


def test_demo_names_the_strip_only_when_it_wrote_one(monkeypatch, tmp_path: Path, capsys):
    """A build whose sentences are all too short for a prompt (no val, one-image sentences) gets no
    generation.png (demo.json says `generation_png: null`); the last line named that file anyway."""
    result = {"steps": 2, "preset": "tiny", "final_loss": 8.5, "prompts": [], "generation_png": None}
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: result)
    assert demo.main([str(tmp_path), "--steps", "2"]) == 0
    line = capsys.readouterr().out
    assert str(tmp_path / "trainer" / "generation.png") not in line and "no prompt" in line
    result.update(prompts=[{}], generation_png=demo.STRIP_PNG)
    assert demo.main([str(tmp_path), "--steps", "2"]) == 0
    assert f"1 prompts -> {tmp_path / 'trainer' / 'generation.png'}" in capsys.readouterr().out
