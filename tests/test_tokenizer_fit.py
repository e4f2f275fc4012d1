"""Training a tokenizer (`tokenizer.fit`) and measuring one (`tokenizer.evaluate`), on real photos
and on rendered-sentence tars laid out like the build writes them."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import evaluate as evaluate_cli
from tokenizer import fit as fit_cli
from tokenizer.checkpoint import load, weights_hash
from tokenizer.codec import Tokenizer
from tokenizer.data import ImageRef, TrainBatches, find_images, merge_refs
from tokenizer.losses import NLayerDiscriminator, adaptive_weight, colour_loss, hinge_d_loss
from tokenizer.model import build
from tokenizer.progress import Progress
from tokenizer.config import TINY, TINY1K

SKIMAGE_DATA = Path(os.path.dirname(importlib.util.find_spec("skimage").origin)) / "data"
PHOTOS = str(SKIMAGE_DATA / "*.png")
COMMON = ["--data", PHOTOS, "--preset", "tiny", "--batch-size", "4", "--crop", "64", "--seed", "7",
          "--lr", "1e-3", "--disc-start", "3", "--restart-dead-every", "3", "--log-every", "1"]


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _fixed_batch_loss(model: torch.nn.Module) -> float:
    batch = TrainBatches(find_images(PHOTOS), 8, 64, seed=123).batch(0)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255.0)
    with torch.no_grad():
        return float((model.eval()(x).reconstruction - x).abs().mean())


# the discriminator and a dead-code restart in both halves of a run resumed at step 3: the resume
# carries the discriminator's optimiser state and the restart's generator (10 steps in all, not 16)
RUN = COMMON + ["--disc-start", "2", "--restart-dead-every", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run interrupted after 3 steps and resumed to 5, and one straight run to 5."""
    base = tmp_path_factory.mktemp("fit")
    resumed, straight = base / "resumed", base / "straight"
    fit_cli.main(RUN + ["--out", str(resumed), "--max-steps", "3", "--checkpoint-every", "3"])
    first_half = _log(resumed)
    fit_cli.main(RUN + ["--out", str(resumed), "--max-steps", "5", "--checkpoint-every", "3"])
    fit_cli.main(RUN + ["--out", str(straight), "--max-steps", "5", "--checkpoint-every", "5"])
    return resumed, straight, first_half


def test_a_short_fit_lowers_the_reconstruction_loss(runs):
    resumed, _, _ = runs
    before = _fixed_batch_loss(build(TINY, seed=7))
    after = _fixed_batch_loss(load(resumed))
    print(f"L1 on held images: {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before
    steps = [r for r in _log(resumed) if "loss" in r]
    assert steps[-1]["rec"] < steps[0]["rec"]
    assert {"psnr", "usage", "perplexity", "g", "d", "d_weight", "commit", "codebook"} <= set(steps[-1])
    assert [r["d"] > 0 for r in steps] == [False, False, True, True, True]  # the GAN on after warm-up
    assert [r["restarted"] > 0 for r in steps] == [False, True, False, True, False]  # dead codes moved


def test_resume_continues_at_the_saved_step_and_matches_a_straight_run(runs):
    resumed, straight, first_half = runs
    assert [r["step"] for r in first_half if "loss" in r] == [1, 2, 3]
    assert [r["d"] > 0 for r in first_half if "loss" in r][-1]  # the discriminator had trained
    log = _log(resumed)
    resume = [r for r in log if r.get("event") == "resume"]
    assert resume == [{"event": "resume", "step": 3}]
    after = log[log.index(resume[0]) + 1:]
    assert [r["step"] for r in after] == [4, 5]
    state = torch.load(resumed / "train_state.pt", weights_only=True)
    assert state["step"] == 5 and {"disc", "opt_g", "opt_d", "torch_rng"} <= set(state)
    assert not [n for n in os.listdir(resumed) if ".tmp-" in n]
    # every batch, crop, restart and optimiser step replayed exactly
    assert weights_hash(load(resumed)) == weights_hash(load(straight))
    straight_steps = [r for r in _log(straight) if "loss" in r]
    assert [r["loss"] for r in straight_steps[3:]] == [r["loss"] for r in after]


def test_fit_output_is_a_loadable_tokenizer_and_evaluates(runs, tmp_path):
    resumed, _, _ = runs
    tok = Tokenizer.from_pretrained(resumed)
    assert tok.name == "resumed" and tok.encode(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 16)
    out, sheet = tmp_path / "eval.json", tmp_path / "sheet.png"
    assert evaluate_cli.main(["--checkpoint", str(resumed), "--data", PHOTOS, "--limit", "3",
                              "--out", str(out), "--sheet", str(sheet), "--batch-size", "2"]) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 3 and summary["codebook_size"] == 8192
    assert 0 < summary["codebook_usage"] <= 1 and summary["perplexity"] >= 1
    assert 0 < summary["psnr"] < 60 and -1 <= summary["ssim"] <= 1
    with Image.open(sheet) as image:
        assert image.size[0] > 2 * 256 and image.size[1] >= 256


def test_fit_can_start_from_a_muse_checkpoint(runs, tmp_path):
    resumed, _, _ = runs
    fit_cli.main(["--data", PHOTOS, "--init", str(resumed), "--out", str(tmp_path / "ft"), "--max-steps", "1",
                  "--batch-size", "2", "--crop", "32", "--lr", "0", "--disc-start", "100",
                  "--export", str(tmp_path / "ship")])
    assert weights_hash(load(tmp_path / "ft")) == weights_hash(load(resumed))  # lr 0: weights kept
    assert sorted(os.listdir(tmp_path / "ship")) == ["config.json", "pytorch_model.bin"]
    assert weights_hash(load(tmp_path / "ship")) == weights_hash(load(resumed))


def test_fit_adds_a_decoder_level_path_to_init_weights(runs, tmp_path):
    """--decoder-level with --init: the init weights load into the larger model and decode exactly
    as before at first (lr 0); weights that miss anything else are refused, naming the keys."""
    resumed, _, _ = runs
    fit_cli.main(["--data", PHOTOS, "--init", str(resumed), "--out", str(tmp_path / "lv"), "--max-steps", "1",
                  "--batch-size", "2", "--crop", "32", "--lr", "0", "--disc-start", "100", "--decoder-level"])
    levelled, plain = load(tmp_path / "lv"), load(resumed)
    assert levelled.config.decoder_level and not plain.config.decoder_level
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(levelled(x).reconstruction, plain(x).reconstruction)
    options = fit_cli.parse_args(["--data", PHOTOS, "--out", "x", "--lr", "1e-3", "--level-lr-scale", "30"])
    trainer = fit_cli.Trainer(options, levelled.config, torch.device("cpu"))
    plain_group, level_group = trainer.opt_g.param_groups
    assert [p.shape for p in level_group["params"]] == [(3, 32), (3,)] and level_group["lr_scale"] == 30
    assert len(plain_group["params"]) + 2 == len(list(trainer.model.parameters()))
    trainer.train_step(TrainBatches(find_images(PHOTOS), 2, 32, seed=0).batch(0))
    assert plain_group["lr"] == 1e-3 and level_group["lr"] == pytest.approx(3e-2)
    assert len(fit_cli.Trainer(options, TINY, torch.device("cpu")).opt_g.param_groups) == 1  # no path: one group
    broken = build(TINY, seed=0)
    del broken.decoder.conv_out  # a model without a layer the target has
    with pytest.raises(ValueError, match=r"missing \['decoder.conv_out.weight', 'decoder.conv_out.bias'\]"):
        fit_cli.load_init(build(TINY, seed=0), broken)


def test_evaluate_reads_rendered_sentence_tars(tmp_path):
    """`{id}.json` + `{id}.NN.png` samples, as the build's rendered shards hold them."""
    rng = np.random.default_rng(0)
    shard = tmp_path / "rendered" / "src-train-00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for key in ("src-train-a-0000", "src-train-b-0001"):
            members = {f"{key}.json": json.dumps({"n_images": 2}).encode()}
            for i in range(2):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
                members[f"{key}.{i:02d}.png"] = buf.getvalue()
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    refs = find_images(str(tmp_path / "rendered" / "*.tar"))
    assert [r.member for r in refs] == ["src-train-a-0000.00.png", "src-train-a-0000.01.png",
                                        "src-train-b-0001.00.png", "src-train-b-0001.01.png"]
    assert find_images(str(tmp_path / "rendered")) == refs  # a folder is searched too
    tok = Tokenizer(build(TINY, seed=0), "tiny")
    result = evaluate_cli.evaluate(tok, refs, batch_size=3)
    assert result.images == 4 and result.histogram.sum() == 4 * 256
    assert result.originals.shape == (4, 256, 256, 3)
    print(evaluate_cli.format_table(result.summary()))


def test_training_batches_are_a_function_of_seed_and_step():
    refs = find_images(PHOTOS)
    a, b = TrainBatches(refs, 3, 32, seed=1), TrainBatches(refs, 3, 32, seed=1)
    assert np.array_equal(a.batch(5), b.batch(5)) and np.array_equal(a.batch(0), b.batch(0))
    assert not np.array_equal(a.batch(5), TrainBatches(refs, 3, 32, seed=2).batch(5))
    assert a.batch(1).shape == (3, 32, 32, 3)


def test_balanced_batches_draw_every_group_equally_often():
    """--balance-data: a one-image group is drawn as often as a group of many, once per round."""
    one = find_images(str(SKIMAGE_DATA / "astronaut.png"))
    many = [r for r in find_images(PHOTOS) if r not in one]
    assert len(one) == 1 and len(many) >= 10
    assert merge_refs([many, one, one]) == find_images(PHOTOS)  # the union, once each, in listing order
    plain = TrainBatches(one + many, 4, 32, seed=3)
    balanced = TrainBatches(one + many, 4, 32, seed=3, groups=[one, many])
    epoch = len(many) + 1
    assert sorted(map(str, (plain.ref_at(p) for p in range(epoch)))) == sorted(map(str, one + many))
    drawn = [balanced.ref_at(p) for p in range(2 * epoch)]
    rounds = [drawn[i:i + 2] for i in range(0, len(drawn), 2)]
    assert all(sum(r in one for r in pair) == 1 for pair in rounds)  # one of each group per round
    assert [pair.index(one[0]) for pair in rounds] != [0] * len(rounds)  # the order within rounds varies
    from_many = [r for r in drawn if r in many]
    assert sorted(map(str, from_many[:len(many)])) == sorted(map(str, many))  # the big group walks an epoch
    again = TrainBatches(one + many, 4, 32, seed=3, groups=[one, many])
    assert np.array_equal(balanced.batch(3), again.batch(3))
    assert not np.array_equal(balanced.batch(3), plain.batch(3))
    with pytest.raises(ValueError, match="hold no images"):
        TrainBatches(one + many, 4, 32, seed=3, groups=[one, []])


def test_balance_data_refuses_a_pattern_with_no_images(tmp_path, capsys):
    assert fit_cli.main(["--data", PHOTOS, "--data", str(tmp_path / "none" / "*.tar"), "--balance-data",
                         "--out", str(tmp_path / "o"), "--max-steps", "1", "--crop", "32"]) == 2
    assert re.search("error: --balance-data.*none", capsys.readouterr().err)


def test_discriminator_hinge_and_adaptive_weight():
    disc = NLayerDiscriminator(3, 16, 2)
    logits = disc(torch.rand(2, 3, 64, 64))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # one logit per patch
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    last = torch.nn.Parameter(torch.ones(3))
    rec, g = (last * 2).sum(), (last * 4).sum()
    assert abs(float(adaptive_weight(rec, g, last, scale=1.0)) - 0.5) < 1e-3


def test_dead_codes_restart_onto_encoder_outputs():
    model = build(TINY, seed=0)
    z = torch.randn(2, TINY.quantized_embed_dim, 4, 4)
    dead = torch.zeros(TINY.num_embeddings, dtype=torch.bool)
    dead[:5] = True
    before = model.quantize.embedding.weight[5:].clone()
    assert model.quantize.restart_dead_codes(dead, z, torch.Generator().manual_seed(0)) == 5
    assert torch.equal(model.quantize.embedding.weight[5:], before)
    moved = torch.nn.functional.normalize(model.quantize.embedding.weight[:5], dim=1)
    targets = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), dim=1)
    assert (moved @ targets.t()).max(dim=1).values.min() > 0.99  # each sits on a live latent


def test_autoencoder_warmup_then_seeds_the_codebook_from_encoder_outputs(tmp_path: Path):
    """`--ae-warmup-steps`: quantisation off for the first steps, then every code is moved onto
    an encoder output of real images, so the book starts where the data is. On `tiny1k` (`tiny`
    with 1024 codes; the later --preset wins over COMMON's): seeding encodes two latents per code,
    128 crops where `tiny`'s 8192 codes took 1024 and 70% of the test's time, for the same path."""
    out = tmp_path / "warm"
    before = build(TINY1K, seed=7).quantize.embedding.weight.detach().clone()
    fit_cli.main(COMMON + ["--out", str(out), "--max-steps", "4", "--ae-warmup-steps", "2", "--preset", "tiny1k",
                           "--checkpoint-every", "4", "--restart-dead-every", "0", "--disc-start", "100"])
    log = _log(out)
    seeded = [r for r in log if r.get("event") == "codebook_seeded"]
    assert seeded == [{"event": "codebook_seeded", "step": 2, "codes": TINY1K.num_embeddings}]
    steps = [r for r in log if "loss" in r]
    assert [r["codebook"] for r in steps[:2]] == [0.0, 0.0]  # no quantiser while warming up
    assert all(r["codebook"] > 0 for r in steps[2:])
    model = load(out)
    book = model.quantize.embedding.weight.detach()
    assert not torch.allclose(book, before)
    # seeded codes are (jittered) l2-normalised encoder outputs: unit length, not the init's
    assert torch.allclose(book.norm(dim=1).mean(), torch.tensor(1.0), atol=0.05)
    assert before.norm(dim=1).mean() < 0.5 or before.norm(dim=1).mean() > 1.5


def test_learning_rate_warms_up_then_follows_a_cosine_down_to_the_floor():
    options = fit_cli.parse_args(["--data", PHOTOS, "--out", "x", "--lr", "1e-3", "--max-steps", "110",
                                  "--warmup-steps", "10", "--lr-decay", "cosine", "--min-lr-ratio", "0.1"])
    rates = [fit_cli.learning_rate(options, step) for step in range(111)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)  # linear warm-up
    assert rates[10] == pytest.approx(1e-3) and rates[60] == pytest.approx(0.55e-3)  # half-way: the mean
    assert rates[110] == pytest.approx(1e-4)  # the floor at --max-steps
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    constant = fit_cli.parse_args(["--data", PHOTOS, "--out", "x", "--lr", "1e-3", "--max-steps", "50"])
    assert {fit_cli.learning_rate(constant, s) for s in range(50)} == {1e-3}
    warm = fit_cli.parse_args(["--data", PHOTOS, "--out", "x", "--lr", "1e-3", "--max-steps", "50",
                               "--warmup-steps", "5"])
    rates = [fit_cli.learning_rate(warm, s) for s in range(50)]
    assert rates[0] == pytest.approx(2e-4) and set(rates[4:]) == {1e-3}  # warm-up, then flat at --lr


@pytest.mark.parametrize("flags, named", [(["--lr-decay", "linear"], "--lr-decay"),
                                          (["--min-lr-ratio", "1.5"], "--min-lr-ratio"),
                                          (["--colour-weight", "-1"], "--colour-weight"),
                                          (["--level-lr-scale", "0"], "--level-lr-scale")])
def test_bad_schedule_or_weights_are_refused_before_reading_data(tmp_path, capsys, flags, named):
    assert fit_cli.main(["--data", str(tmp_path / "none" / "*.tar"), "--out", str(tmp_path / "o")] + flags) == 2
    assert f"error: {named}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """The real entry point, `python -m module`, from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)


def test_fit_mistakes_are_one_error_line_naming_the_flag(tmp_path, capsys):
    """A missing or broken --config, an unknown --preset, --out an existing file, --data matching
    nothing and a missing --init were tracebacks (exit 1): one `error:` line, exit 2, nothing written."""
    (tmp_path / "bad.json").write_text('{"hidden_channels": 0}')
    (tmp_path / "afile").write_text("not a folder")
    base = ["--max-steps", "1", "--crop", "32"]
    for flags, words in (
            (["--config", str(tmp_path / "no_such.json")], f"--config {tmp_path / 'no_such.json'}: cannot be read"),
            (["--config", str(tmp_path / "bad.json")], "'hidden_channels' must be a positive integer"),
            (["--init", str(tmp_path / "no_such_tok")], f"--init: {tmp_path / 'no_such_tok'}: no config.json"),
            (["--data", str(tmp_path / "nothing" / "*.png")], "--data"),
            (["--out", str(tmp_path / "afile")], f"--out {tmp_path / 'afile'}: exists and is not a folder")):
        extra = [*(["--data", PHOTOS] if flags[0] != "--data" else []), *(["--out", str(tmp_path / "o")]
                                                                       if flags[0] != "--out" else [])]
        assert fit_cli.main(base + flags + extra) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err, (flags, err)
        assert not (tmp_path / "o").exists()
    base += ["--data", PHOTOS]
    with pytest.raises(SystemExit) as preset:  # argparse's own exit, in this process: the entry point's is below
        fit_cli.main(base + ["--out", str(tmp_path / "o"), "--preset", "bogus"])
    assert preset.value.code == 2 and "argument --preset: invalid choice: 'bogus'" in capsys.readouterr().err
    missing = _cli("tokenizer.fit", *base, "--out", str(tmp_path / "o"), "--config", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: --config {tmp_path / 'none.json'}: cannot be read (No such file or directory)"


def test_a_value_error_from_inside_training_is_a_traceback_not_a_flag_error(tmp_path, monkeypatch, capsys):
    """`main` printed every ValueError as a one-line user mistake, so a bug deep in training looked
    like bad input (exit 2, no traceback): only `UsageError` is a user mistake now."""
    def broken_step(self, images):
        raise ValueError("a bug inside train_step")

    monkeypatch.setattr(fit_cli.Trainer, "train_step", broken_step)
    with pytest.raises(ValueError, match="a bug inside train_step") as raised:
        fit_cli.main(["--data", PHOTOS, "--out", str(tmp_path / "o"), "--max-steps", "1", "--batch-size", "1",
                      "--crop", "32"])
    assert not isinstance(raised.value, fit_cli.UsageError)
    assert "error:" not in capsys.readouterr().err


def test_a_value_error_from_inside_evaluation_is_a_traceback_not_a_flag_error(tiny_tokenizer, monkeypatch, capsys):
    """The same for `tokenizer.evaluate`: a ValueError from the codec became `error: --data ...`."""
    def broken_encode(self, images):
        raise ValueError("a bug inside encode")

    monkeypatch.setattr(Tokenizer, "encode", broken_encode)
    with pytest.raises(ValueError, match="a bug inside encode"):
        evaluate_cli.main(["--checkpoint", str(tiny_tokenizer), "--data", str(SKIMAGE_DATA / "astronaut.png"),
                           "--limit", "1"])
    assert "error:" not in capsys.readouterr().err


def _mixed_folder(folder: Path) -> Path:
    """Two real photos (JPEG and PNG, Pillow), a text file named .png and a PNG cut in half."""
    folder.mkdir()
    photos = [np.asarray(Image.open(SKIMAGE_DATA / name).convert("RGB")) for name in ("astronaut.png", "coffee.png")]
    Image.fromarray(photos[0]).save(folder / "a.jpg", quality=90)
    Image.fromarray(photos[1]).save(folder / "b.png")
    (folder / "c.png").write_text("hi\n")
    buffer = io.BytesIO()
    Image.fromarray(photos[1][:128, :128]).save(buffer, "PNG")
    (folder / "d.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return folder


def test_evaluate_skips_unreadable_images_counting_their_reasons(tiny_tokenizer, tmp_path, capsys):
    """One non-image file aborted the whole evaluation (UnidentifiedImageError): now it is skipped,
    counted by reason in the summary, and named on stderr; the readable images are measured."""
    folder = _mixed_folder(tmp_path / "mixed")
    out = tmp_path / "eval.json"
    assert evaluate_cli.main(["--checkpoint", str(tiny_tokenizer), "--data", str(folder), "--out", str(out),
                              "--batch-size", "2"]) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 2 and summary["skipped"] == {"not_an_image": 1, "truncated": 1}
    captured = capsys.readouterr()
    assert f"skipped {folder / 'c.png'}: not_an_image: UnidentifiedImageError" in captured.err
    assert f"skipped {folder / 'd.png'}: truncated: " in captured.err
    assert "1 not_an_image, 1 truncated" in captured.out
    # its summary counts every image read: the unreadable ones too (it ended at 2 of 4, 50%)
    assert "tokenizer evaluate: 4 images in " in captured.err and "/s), 2 measured, 2 skipped\n" in captured.err
    tokenizer = Tokenizer.from_pretrained(tiny_tokenizer)
    lines = io.StringIO()
    evaluate_cli.evaluate(tokenizer, find_images(str(folder)), batch_size=2,
                          progress=Progress("tokenizer evaluate", "images", 4, every_s=0.0, stream=lines))
    assert lines.getvalue().splitlines()[-1].startswith("progress: tokenizer evaluate: 4 of 4 images (100%)")
    lines = io.StringIO()
    limited = evaluate_cli.evaluate(tokenizer, find_images(str(folder / "*")), limit=2,
                                    progress=Progress("tokenizer evaluate", "images", 2, every_s=0.0, stream=lines))
    assert lines.getvalue().splitlines()[-1].startswith("progress: tokenizer evaluate: 2 of 2 images (100%)")
    assert limited.summary()["images"] == 2 and limited.summary()["skipped"] == {}  # c, d: past the limit, unread
    # a and b alone, nothing unreadable read: the same figures as the run that skipped c and d
    assert limited.summary()["psnr"] == summary["psnr"] and limited.summary()["ssim"] == summary["ssim"]


def _broken_images() -> dict[str, bytes]:
    """Broken image files, each a different failure of Pillow's open or load."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    encoded = {}
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt)
        encoded[fmt] = buffer.getvalue()
    png, jpeg = encoded["PNG"], encoded["JPEG"]
    stream = bytearray(png)  # a damaged zlib stream: Pillow's "broken data stream when reading image file"
    start = stream.index(b"IDAT") + 20
    stream[start:start + 40] = bytes(b ^ 0x55 for b in stream[start:start + 40])
    return {"empty.png": b"", "text.png": b"hi\n", "half.png": png[: len(png) // 2], "stream.png": bytes(stream),
            "cut.jpg": jpeg[: len(jpeg) // 2],
            "header.bmp": b"BM" + bytes(12) + (7).to_bytes(4, "little") + bytes(40)}  # a header size no BMP has


def _written_with_build_reasons(folder: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Each file written into `folder`, by name the reason the build (`decode_rgb`) rejects it with."""
    from transforms.decode import DecodeError, decode_rgb

    build = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        with pytest.raises(DecodeError) as rejected:
            decode_rgb(data)
        build[name] = rejected.value.reason
    return build


def test_evaluate_skips_with_the_reasons_the_build_rejects_the_same_files_with(tmp_path):
    """The tokenizer called a damaged compressed stream `decode_error` where the build says
    `truncated` (and an empty file `not_an_image`, a broken header `decode_error`): an evaluation's
    skipped counts now use the build's reasons (transforms.decode) for the same bytes."""
    from tokenizer.data import iter_images

    build = _written_with_build_reasons(tmp_path, _broken_images())
    # a whole PNG (its IEND) whose zlib stream is damaged: `decode_error` 'damaged', a cut one `truncated`
    assert build["stream.png"] == "decode_error" and build["half.png"] == "truncated"
    assert len(set(build.values())) == 5  # the cases differ
    skipped: list = []
    assert list(iter_images(find_images(str(tmp_path)), 64, skipped)) == []
    assert {Path(ref.path).name: reason for ref, reason, _ in skipped} == build
    gone: list = []
    assert list(iter_images([ImageRef(str(tmp_path / "gone.png"))], 64, gone)) == []
    assert [reason for _, reason, _ in gone] == ["unreadable_file"]  # the build's read failure


def _bad_crc_png() -> bytes:
    """A Pillow PNG whose IHDR CRC is wrong (a bit flipped on a disk or in a transfer)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[29] ^= 0xFF  # the last byte of IHDR's CRC (8 signature + 4 length + 4 type + 13 data)
    return bytes(data)


def test_fit_skips_corrupt_images_counting_them_and_goes_on(tmp_path, capsys):
    """A truncated JPEG, a PNG with a bad CRC or an empty file met while drawing a batch stopped
    `tokenizer.fit` with a traceback (UnreadableImage): each is now named on stderr, counted by the
    build's reason in the logged records and the summary line, and the next readable image of the
    stream is drawn instead; a folder of nothing readable is one `error:` line."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        Image.open(SKIMAGE_DATA / name).convert("RGB").save(folder / name.replace(".png", ".jpg"), quality=90)
    broken = {"cut.jpg": _broken_images()["cut.jpg"], "crc.png": _bad_crc_png(), "empty.png": b""}
    build = _written_with_build_reasons(folder, broken)
    out = tmp_path / "run"
    args = ["--data", str(folder), "--preset", "tiny", "--batch-size", "5", "--crop", "32", "--max-steps", "2",
            "--log-every", "1", "--seed", "7"]
    assert fit_cli.main(args + ["--out", str(out)]) == 0
    err = capsys.readouterr().err
    for name, reason in build.items():
        assert f"skipped {folder / name}: {reason}: " in err, err
    counts = dict(sorted({r: list(build.values()).count(r) for r in build.values()}.items()))
    assert counts == {"corrupt_header": 1, "empty_file": 1, "truncated": 1}
    assert _log(out)[-1]["unreadable"] == counts and _log(out)[-1]["step"] == 2
    assert "3 unreadable image(s) skipped (1 corrupt_header, 1 empty_file, 1 truncated)" in err
    for name in ("astronaut.jpg", "coffee.jpg"):
        (folder / name).unlink()
    assert fit_cli.main(args + ["--out", str(tmp_path / "none")]) == 2
    assert f"error: --data {folder}: none of the 3 images it draws from can be read (1 corrupt_header, " \
           "1 empty_file, 1 truncated)" in capsys.readouterr().err


def _one_readable_of_three(folder: Path) -> Path:
    """A Pillow JPEG beside an empty file and the JPEG cut short: 1 of 3 images readable."""
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
        folder / "good.jpg", quality=90)
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "good.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    return folder


def test_an_unreadable_image_is_replaced_across_epochs_as_a_fresh_stream_draws_it(tmp_path):
    """The replacement walk looked only len(images) positions on: across an epoch's end (3 images,
    1 readable) fit stopped with a false 'none of the 3 images can be read' in 100 of 100 seeds.
    Each batch drawn after several epochs of others equals the same step of a fresh stream."""
    refs = find_images(str(_one_readable_of_three(tmp_path / "b")))
    for seed in range(8):
        walked = TrainBatches(refs, 2, 32, seed)
        for step in range(6):  # 12 draws: 4 epochs of 3
            drawn = walked.batch(step)
            assert np.array_equal(drawn, TrainBatches(refs, 2, 32, seed).batch(step)), (seed, step)
        assert walked.unreadable_counts() == {"empty_file": 1, "truncated": 1}


def test_balance_data_with_one_readable_image_in_a_pattern_trains(tmp_path, capsys):
    """`--balance-data` with a pattern of 1 readable JPEG and 2 broken files ended with exit 2 and
    'none of the 3 images it draws from can be read' (seed 2); it trains, skipping both."""
    photos = tmp_path / "a"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        Image.open(SKIMAGE_DATA / name).convert("RGB").resize((64, 48)).save(photos / f"{name[:-4]}.jpg")
    broken = _one_readable_of_three(tmp_path / "b")
    args = ["--data", str(photos), str(broken), "--balance-data", "--preset", "tiny", "--batch-size", "2",
            "--crop", "32", "--max-steps", "4", "--log-every", "4", "--seed", "2", "--out", str(tmp_path / "run")]
    assert fit_cli.main(args) == 0, capsys.readouterr().err
    assert _log(tmp_path / "run")[-1]["unreadable"] == {"empty_file": 1, "truncated": 1}


def test_evaluate_mistakes_are_one_error_line_naming_the_flag(tiny_tokenizer, tmp_path, capsys):
    """A missing checkpoint, --data matching nothing or only unreadable files, --batch-size 0:
    tracebacks before (exit 1), now one `error:` line and exit 2."""
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("hi\n")
    for args, words in (
            (["--checkpoint", str(tmp_path / "no_such_tok"), "--data", PHOTOS],
             f"error: --checkpoint: {tmp_path / 'no_such_tok'}: no config.json"),
            (["--checkpoint", str(tiny_tokenizer), "--data", str(tmp_path / "nomatch" / "*.png")],
             f"error: --data {tmp_path / 'nomatch' / '*.png'}: no images there"),
            (["--checkpoint", str(tiny_tokenizer), "--data", str(tmp_path / "junk")],
             f"no images to evaluate (1 unreadable: {tmp_path / 'junk' / 'a.png'}: not_an_image")):
        assert evaluate_cli.main(args + ["--out", str(tmp_path / "e.json")]) == 2, args
        assert words in capsys.readouterr().err, args
    assert not (tmp_path / "e.json").exists()
    zero = _cli("tokenizer.evaluate", "--checkpoint", str(tiny_tokenizer), "--data", PHOTOS, "--batch-size", "0")
    assert zero.returncode == 2 and "error: --batch-size 0: give at least 1" in zero.stderr
    assert "Traceback" not in zero.stderr


def test_colour_term_weighs_each_images_mean_colour():
    """A uniform shift of (+3, 0, -6)/255 is all mean-colour error; texture changes of zero mean
    are none of it."""
    x = torch.rand(2, 3, 32, 32)
    shift = torch.tensor([3.0, 0.0, -6.0]).view(1, 3, 1, 1) / 255
    assert float(colour_loss(x + shift, x)) == pytest.approx(float((shift ** 2).mean()), rel=1e-4)
    checker = (torch.arange(32).view(1, 1, 32, 1) + torch.arange(32).view(1, 1, 1, 32)) % 2 * 0.2 - 0.1
    assert float(colour_loss(x + checker, x)) == pytest.approx(0.0, abs=1e-10)
    options = fit_cli.parse_args(["--data", PHOTOS, "--out", "x", "--colour-weight", "10", "--l1-weight", "0"])
    trainer = fit_cli.Trainer(options, TINY, torch.device("cpu"))
    expected = float((shift ** 2).mean() * 10 + (shift ** 2).mean())  # colour term + plain MSE
    assert float(trainer._reconstruction_loss(x + shift, x)) == pytest.approx(expected, rel=1e-4)


def test_the_embedded_tokenizer_reconstructs_held_out_photos(sample_corpus: Path):
    """The shipped `uvd-tiny` (what `make tokenizer` trains on the sample build's train splits) on
    64 ImageNet val photos of the sample corpus, which it never saw. The weights trained on 64-px
    crops only gave 14.9 dB, SSIM 0.47 and a cast of -28/-24/-20 on these images; the two-stage
    weights without the decoder's level path 18.9 dB, 0.57, -7.5/+9.3/+2.8; with it 19.7 dB, 0.575,
    -8.7/+8.1/+4.5 and each image's mean colour off by 12.0/255; these (sources drawn equally often
    too) 20.0 dB, 0.579, -6.8/+8.0/+3.0 and 9.6/255 (64 images: that per-image error makes the cast
    of so few swing by a few units; over the 136 held-out images it is -2.9/+3.0/+1.3)."""
    from tokenizer.checkpoint import embedded_checkpoint

    tokenizer = Tokenizer.from_pretrained(embedded_checkpoint(), batch_size=16, threads=1)
    refs = find_images(str(sample_corpus / "imagenet" / "val"))
    assert len(refs) >= 64
    summary = evaluate_cli.evaluate(tokenizer, refs[:64], batch_size=16).summary()
    print(evaluate_cli.format_table(summary))
    assert summary["psnr"] >= 19.85 and summary["ssim"] >= 0.57
    assert summary["colour_error"] <= 9.0 and summary["colour_error_per_image"] <= 10.8, summary["colour_shift"]


@pytest.mark.parametrize("damage", ["lfs", "truncated"])
def test_a_damaged_train_state_is_one_error_line_naming_it(tmp_path, capsys, damage):
    """`<out>/train_state.pt` as a Git LFS pointer (an out folder cloned from a hub without LFS) or
    cut short: the resume ended in torch's traceback (UnpicklingError whose first advice is
    weights_only=False; 'PytorchStreamReader failed reading zip archive'). Now one line names the
    file, what is wrong and the way out, before a step runs."""
    state = tmp_path / "out" / "train_state.pt"
    state.parent.mkdir()
    if damage == "lfs":
        state.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 9\n")
    else:
        buffer = io.BytesIO()
        torch.save({"step": torch.zeros(1000)}, buffer)
        state.write_bytes(buffer.getvalue()[:500])
    assert fit_cli.main(COMMON + ["--out", str(state.parent), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out: {state} cannot be resumed from (") and err.count("\n") == 1
    assert "move it away" in err and ("git lfs pull" in err) == (damage == "lfs") and "weights_only" not in err
    assert not (state.parent / "log.jsonl").exists()


@pytest.mark.parametrize("make", ["sparse", "/dev/zero"])
def test_a_config_flag_naming_no_config_file_is_refused_before_reading(tmp_path, capsys, never_read, make):
    """`--config /dev/zero` read zeros until memory ran out, and a 2 GB --config file was read whole
    before json refused it: one error line now, from the file's kind or size, before any read."""
    path = Path(make)
    if make == "sparse":
        path = tmp_path / "config.json"
        with open(path, "wb") as handle:
            handle.truncate(2**31)
    never_read(path)
    assert fit_cli.main(["--config", str(path), "--data", PHOTOS, "--out", str(tmp_path / "o"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {path}: {path}: ") and err.count("\n") == 1, err
    assert ("2147483648 bytes, more than the 4 MiB" if make == "sparse" else "a character device") in err, err
    assert not (tmp_path / "o").exists()


def test_a_fit_ends_with_a_summary_naming_the_tokenizer_it_wrote(tmp_path, capsys):
    """The run's last words say where the tokenizer is and how the last step went (trainer.fit ends
    with such a `done:` line; this one ended on a JSON record). Stdout stays JSON lines, for `jq`."""
    out, ship = tmp_path / "o", tmp_path / "ship"
    assert fit_cli.main(["--data", PHOTOS, "--out", str(out), "--max-steps", "2", "--batch-size", "1",
                         "--crop", "32", "--log-every", "1", "--export", str(ship)]) == 0
    said = capsys.readouterr()
    assert all(json.loads(line) for line in said.out.splitlines())
    last = _log(out)[-1]
    assert said.err.splitlines()[-1] == (
        f"done: step 2/2, loss {last['loss']:.4f}, PSNR {last['psnr']:.2f} dB; tokenizer (config.json + "
        f"pytorch_model.bin) in {out}, exported to {ship}")
    assert load(out).config == load(ship).config


def test_evaluate_output_paths_and_device_are_judged_before_the_work(tiny_tokenizer, tmp_path, monkeypatch, capsys):
    """`--out` a folder (IsADirectoryError), `--sheet` without an extension (Pillow's ValueError)
    and `--device tpu` (torch's RuntimeError) failed with tracebacks, the first two after every
    image was measured. Now one `error:` line naming the flag, exit 2, before the tokenizer loads;
    --out and --sheet in missing folders are written there."""
    def never(*args, **kwargs):
        raise AssertionError("the tokenizer loaded before the flags were checked")

    (tmp_path / "folder").mkdir()
    with monkeypatch.context() as patched:
        patched.setattr(Tokenizer, "from_pretrained", never)
        for args, words in ((["--out", str(tmp_path / "folder")], f"--out {tmp_path / 'folder'}: is a folder"),
                            (["--sheet", str(tmp_path / "sheet")], f"--sheet {tmp_path / 'sheet'}: no file extension"),
                            (["--sheet", str(tmp_path / "sheet.json")], "no image format with the extension .json"),
                            (["--device", "tpu"], "--device 'tpu' is no device; choose auto, cpu, cuda or cuda:N")):
            argv = ["--checkpoint", str(tiny_tokenizer), "--data", PHOTOS, "--out", str(tmp_path / "e.json"), *args]
            assert evaluate_cli.main(argv) == 2, args
            err = capsys.readouterr().err
            assert err.startswith("error: ") and words in err and err.count("\n") == 1, (args, err)
    out, sheet = tmp_path / "a" / "e.json", tmp_path / "b" / "sheet.png"
    assert evaluate_cli.main(["--checkpoint", str(tiny_tokenizer), "--data", PHOTOS, "--limit", "2", "--device", "cpu",
                              "--out", str(out), "--sheet", str(sheet)]) == 0
    assert json.loads(out.read_text())["images"] == 2 and Image.open(sheet).size[1] > 1


def test_a_resume_after_a_kill_logs_each_step_once_and_removes_the_killed_saves(tmp_path, capsys):
    """A fit killed after its last save had logged steps it will make again: log.jsonl kept both
    copies (trainer.fit's keeps one), and the temporaries of saves cut short stayed for good
    (hunt53a tmp_leak_tok: a 48 MB train_state.pt.tmp-X after 12 kills)."""
    import shutil

    out, saved = tmp_path / "o", tmp_path / "saved-at-2"
    args = ["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--log-every", "1",
            "--disc-start", "100", "--checkpoint-every", "2"]
    assert fit_cli.main(args + ["--max-steps", "2"]) == 0
    shutil.copytree(out, saved)
    assert fit_cli.main(args + ["--max-steps", "4"]) == 0
    straight = [r["loss"] for r in _log(out) if "loss" in r]
    for name in ("train_state.pt", "pytorch_model.bin", "config.json"):  # killed before step 4's save
        shutil.copy(saved / name, out / name)
    leftovers = [out / "train_state.pt.tmp-1a2b3c4d", out / "pytorch_model.bin.tmp-0badf00d", out / "config.json.tmp-00c0ffee"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    others = [out / "notes.tmp-1a2b3c4d", out / "train_state.pt.tmp-mine", out / "train_state.pt.bak"]
    for path in others:
        path.write_text("mine")
    capsys.readouterr()
    assert fit_cli.main(args + ["--max-steps", "4"]) == 0
    err = capsys.readouterr().err
    assert "note: removed what an interrupted fit left half-written in" in err and "(0.0 MB)" in err
    assert all(not path.exists() and str(path) in err for path in leftovers)
    assert all(path.exists() and str(path) not in err for path in others)
    log = _log(out)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r.get("event") for r in log if "event" in r] == ["start", "resume"]
    assert [r["loss"] for r in log if "loss" in r] == straight


def test_a_second_fit_on_a_folder_being_written_is_refused(tmp_path, capsys):
    """Two fits on one --out wrote the same train_state.pt in turns; the one holding the folder may
    be mid-save in a `.tmp-` file, so the refused one neither trains nor sweeps."""
    from tokenizer.run_folder import sole_writer

    out = tmp_path / "o"
    out.mkdir()
    saving = out / "train_state.pt.tmp-1a2b3c4d"
    saving.write_bytes(b"half")
    with sole_writer(str(out), "tokenizer.fit"):
        code = fit_cli.main(["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32",
                             "--max-steps", "1"])
    assert code == 2
    assert capsys.readouterr().err == (f"error: --out {out}: another tokenizer.fit (pid {os.getpid()}) is writing "
                                       "this run; wait for it to finish (rerunning then resumes), or give another --out\n")
    assert saving.exists() and sorted(os.listdir(out)) == [".writer.lock", "train_state.pt.tmp-1a2b3c4d"]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size 0: give a whole number >= 1"),
    (["--max-steps", "0"], "--max-steps 0: give a whole number >= 1"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0: give a whole number >= 1"),
    (["--log-every", "0"], "--log-every 0: give a whole number >= 1"),
    (["--disc-channels", "0"], "--disc-channels 0: give a whole number >= 1"),
    (["--disc-layers", "0"], "--disc-layers 0: give a whole number >= 1"),
    (["--warmup-steps", "-3"], "--warmup-steps -3: give a whole number >= 0 (0: none)"),
    (["--ae-warmup-steps", "-1"], "--ae-warmup-steps -1: give a whole number >= 0 (0: none)"),
    (["--restart-dead-every", "-1"], "--restart-dead-every -1: give a whole number >= 0 (0: off)"),
    (["--threads", "-1"], "--threads -1: give a whole number >= 0 (0: torch's default)"),
    (["--lr", "-1"], "--lr -1.0: give a learning rate >= 0 (0: the weights stay as they are)"),
    (["--lr", "nan"], "--lr nan: give a learning rate >= 0 (0: the weights stay as they are)"),
    (["--disc-lr", "-0.5"], "--disc-lr -0.5: give a learning rate >= 0 (0: the weights stay as they are)"),
    (["--l1-weight", "-1"], "--l1-weight -1.0: give a weight >= 0"),
    (["--disc-weight", "nan"], "--disc-weight nan: give a weight >= 0"),
    (["--device", "tpu"], "--device 'tpu' is no device; choose auto, cpu, cuda or cuda:N"),
])
def test_flags_out_of_range_are_one_error_line_before_any_work(tmp_path, capsys, flags, message):
    """hunt53a tokfit_flags/tokfit_disc: tracebacks (--batch-size 0, --lr -1, --checkpoint-every 0,
    --device tpu), a crash only when the GAN started (--disc-channels 0), or a run in silence
    (--l1-weight -1 trained to a loss of -0.12)."""
    assert fit_cli.main(["--data", PHOTOS, "--out", str(tmp_path / "o")] + flags) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "o").exists()


def test_an_export_onto_a_file_is_refused_before_training(tmp_path, capsys):
    """`--export` naming a file raised FileExistsError after the whole run."""
    (tmp_path / "taken.png").write_bytes(b"mine")
    assert fit_cli.main(["--data", PHOTOS, "--out", str(tmp_path / "o"), "--export", str(tmp_path / "taken.png")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --export {tmp_path / 'taken.png'}: exists and is not a folder")
    assert not (tmp_path / "o").exists() and (tmp_path / "taken.png").read_bytes() == b"mine"


def _no_flock(code: int):
    def flock(handle, operation):
        raise OSError(code, os.strerror(code))
    return flock


@pytest.mark.parametrize("code", ["ENOSYS", "EOPNOTSUPP"])
def test_a_folder_that_cannot_be_locked_runs_unlocked_and_keeps_the_temporaries(tmp_path, capsys, monkeypatch, code):
    """rev53b flock_enosys: on Lustre without -o flock (ENOSYS) or a FUSE/CIFS mount (EOPNOTSUPP)
    every fit was a traceback before any work. It runs now, warning once; unlocked it may not
    sweep, as a temporary there could be a live fit's."""
    import errno

    from tokenizer import run_folder

    monkeypatch.setattr(run_folder.fcntl, "flock", _no_flock(getattr(errno, code)))
    out = tmp_path / "o"
    out.mkdir()
    saving = out / "train_state.pt.tmp-1a2b3c4d"
    saving.write_bytes(b"half")
    assert fit_cli.main(["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--max-steps", "1"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: --out {out}: this filesystem cannot lock files ({os.strerror(getattr(errno, code))}), "
                      "so two fits on it are not kept apart (start one at a time) and temporaries that killed saves "
                      "left there are not removed (one could be a live fit's)"]
    assert saving.read_bytes() == b"half" and (out / "train_state.pt").exists()


def test_a_lock_that_cannot_be_taken_for_now_or_through_a_read_only_file_is_refused(tmp_path, capsys, monkeypatch):
    """rev53c: NFS's ENOLCK (its lock daemon out of reach, often for a moment) ran the fit unlocked,
    and a later fit that locked swept its live temporaries; NFS's EBADF for a read-only lock file
    (a group member's) ran it beside the owner's live fit. Both are one error line now; a fit
    stays the only writer wherever it runs. A leftover the sweep may not remove is said, not a
    traceback."""
    import errno

    from tokenizer import run_folder

    out = tmp_path / "o"
    out.mkdir()
    args = ["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--max-steps", "1"]
    with monkeypatch.context() as patched:
        patched.setattr(run_folder.fcntl, "flock", _no_flock(errno.ENOLCK))
        assert fit_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: its writer lock cannot be taken now (") and err.count("\n") == 1, err
    with monkeypatch.context() as patched:
        _lock_not_writable(patched)
        patched.setattr(run_folder.fcntl, "flock", _no_flock(errno.EBADF))
        assert fit_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "is not ours to write" in err and "chmod g+w" in err and err.count("\n") == 1, err
    assert not (out / "train_state.pt").exists()
    stuck = out / "train_state.pt.tmp-1a2b3c4d"
    stuck.write_bytes(b"half")
    real_unlink = os.unlink
    with monkeypatch.context() as patched:
        patched.setattr(run_folder.os, "unlink", lambda path: (_ for _ in ()).throw(PermissionError(
            errno.EACCES, "Permission denied")) if str(path) == str(stuck) else real_unlink(path))
        assert fit_cli.main(args) == 0
    assert f"note: could not remove {stuck} (Permission denied)" in capsys.readouterr().err
    assert stuck.exists() and (out / "train_state.pt").exists()


def _lock_not_writable(monkeypatch, code: int = 13) -> None:
    """Opening `.writer.lock` for writing fails as for a group member the file's mode shuts out
    (tests run as root, which a chmod would not stop)."""
    from tokenizer import run_folder

    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if os.path.basename(path) == run_folder.LOCK_NAME and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(run_folder.os, "open", open_)


def test_a_lock_file_this_user_cannot_write_still_locks_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """rev53b lock_perm: .writer.lock was made 0o644 and opened read-write, so another member of a
    group-shared run folder got a PermissionError traceback where it had resumed before. It is made
    0o666 less the umask, and opened read-only where it cannot be written (flock needs no more)."""
    from tokenizer.run_folder import sole_writer

    out = tmp_path / "o"
    args = ["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--checkpoint-every", "1"]
    old = os.umask(0o002)
    try:
        assert fit_cli.main(args + ["--max-steps", "1"]) == 0
    finally:
        os.umask(old)
    assert (out / ".writer.lock").stat().st_mode & 0o777 == 0o664
    with monkeypatch.context() as patched:
        _lock_not_writable(patched)
        assert fit_cli.main(args + ["--max-steps", "2"]) == 0
        assert [r["step"] for r in _log(out) if "loss" in r] == [1, 2]
        with sole_writer(str(out), "tokenizer.fit") as hold:  # a read-only holder
            patched.undo()
            assert hold.locked
            capsys.readouterr()
            assert fit_cli.main(args + ["--max-steps", "3"]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: another tokenizer.fit (its pid unrecorded: it could not "
                                       "write the lock file) is writing this run; wait for it to finish (rerunning "
                                       "then resumes), or give another --out\n")


@pytest.mark.parametrize("code, why", [(30, "a read-only filesystem"), (13, "Permission denied")])
def test_an_out_that_cannot_be_written_is_one_error_line(tmp_path, capsys, monkeypatch, code, why):
    """rev53b ro_rerun: a read-only --out (EROFS), or one whose lock this user may not create
    (EACCES), was a traceback."""
    _lock_not_writable(monkeypatch, code)
    out = tmp_path / "o"
    assert fit_cli.main(["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--max-steps", "1"]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: cannot write the run folder there ({why}): a fit writes "
                                       "its checkpoints and log in it; give a folder you can write\n")


def test_an_out_under_a_folder_that_cannot_be_written_is_one_error_line(tmp_path, capsys):
    """Creating --out itself failing (here: under a file) is the same one line, not a traceback."""
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "o"
    assert fit_cli.main(["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: cannot write the run folder there (Not a directory)") and err.count("\n") == 1


def test_a_resume_drops_log_lines_torn_by_a_crash(tmp_path, capsys):
    """rev53b tok_tornlog: the log trim of a resume json-parsed every line, so a last line cut short
    (a crash or a full disk mid-append, or NULs) made the resume a JSONDecodeError traceback."""
    out = tmp_path / "o"
    args = ["--data", PHOTOS, "--out", str(out), "--batch-size", "1", "--crop", "32", "--log-every", "1",
            "--checkpoint-every", "2"]
    assert fit_cli.main(args + ["--max-steps", "2"]) == 0
    with open(out / "log.jsonl", "ab") as handle:
        handle.write(b'{"step": 3, "loss": 0.12\n' + b"\0" * 40 + b"\n" + b'[3]\n{"step": 3, "lo')
    capsys.readouterr()
    assert fit_cli.main(args + ["--max-steps", "3"]) == 0
    assert f"note: {out / 'log.jsonl'}: dropped 4 lines that are no whole JSON record" in capsys.readouterr().err
    assert [r["step"] for r in _log(out) if "loss" in r] == [1, 2, 3]


def _noise_pngs(folder: Path, count: int = 8, size: int = 64) -> Path:
    """`count` PNGs of seeded noise written by Pillow, as a folder of training images."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    return folder


def test_a_diverged_fit_stops_at_the_first_non_finite_loss_saving_nothing_of_it(tmp_path, capsys):
    """--lr 1e8: the loss is NaN from step 2. The fit trained on to its last step, saved and exported
    a tokenizer whose 193 tensors were all NaN, and exited 0; a build then tokenized every image to
    code 0. Now it stops at step 2 naming it (exit 2): the step-1 checkpoint stays as it was, nothing
    is exported."""
    images = _noise_pngs(tmp_path / "images", count=4, size=32)
    out, export = tmp_path / "out", tmp_path / "export"
    code = fit_cli.main(["--data", str(images), "--out", str(out), "--export", str(export), "--max-steps", "6",
                         "--batch-size", "2", "--crop", "32", "--lr", "1e8", "--ae-warmup-steps", "3",
                         "--log-every", "1", "--checkpoint-every", "1", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.splitlines() == [err] and err.startswith("error: the loss is nan at step 2: training diverged")
    assert f"{out} keeps the checkpoint of step 1, and nothing was exported" in err and "--lr (now 1e+08)" in err
    assert not export.exists()
    assert [r["step"] for r in _log(out) if "loss" in r] == [1]  # no record of the NaN step
    assert torch.load(out / fit_cli.STATE_NAME, weights_only=True)["step"] == 1
    kept = load(out)  # the step-1 tokenizer: finite, so it loads
    assert all(torch.isfinite(v).all() for v in kept.state_dict().values())


def test_a_weight_gone_inf_at_a_checkpoint_leaves_no_log_record_of_its_step(tmp_path, capsys, monkeypatch):
    """rev55c L3: an update that overflows a weight under a finite loss is caught at the checkpoint;
    the error said "nothing of step 2 was saved" while log.jsonl already held step 2's record. The
    weights are judged before the record is written now. (The overflow is made by the real step
    followed by an inf in the discriminator's first weight, as an overflowed Adam update leaves it.)"""
    images = _noise_pngs(tmp_path / "images", count=4, size=32)
    out = tmp_path / "out"
    real_step = fit_cli.Trainer.train_step

    def overflowing_step(self, images):
        record = real_step(self, images)
        if self.step == 2:
            with torch.no_grad():
                next(self.disc.parameters()).view(-1)[0] = float("inf")
        return record

    monkeypatch.setattr(fit_cli.Trainer, "train_step", overflowing_step)
    code = fit_cli.main(["--data", str(images), "--out", str(out), "--max-steps", "4", "--batch-size", "2",
                         "--crop", "32", "--log-every", "1", "--checkpoint-every", "1", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: weight disc.") and "is not finite at step 2: training diverged; " \
        f"nothing of step 2 was saved ({out} keeps the checkpoint of step 1)" in err
    assert [r["step"] for r in _log(out) if "loss" in r] == [1]
    assert torch.load(out / fit_cli.STATE_NAME, weights_only=True)["step"] == 1


def test_a_tokenizer_with_non_finite_weights_is_refused_naming_the_tensor(tmp_path, capsys):
    """A tokenizer saved by a diverged fit (or any other way to NaN) loaded, and encoded every image
    to code 0: `load` now refuses it in one line naming the tensor, and a CLI that loads it exits 2."""
    from tokenizer.checkpoint import CheckpointError, save

    model = build(TINY, seed=0)
    with torch.no_grad():
        model.quantize.embedding.weight.fill_(float("nan"))  # a diverged codebook
        model.decoder.conv_out.weight[0, 0, 0, 0] = float("inf")
    save(model, tmp_path / "tok")
    with pytest.raises(CheckpointError) as refused:
        load(tmp_path / "tok")
    assert str(refused.value) == (  # the first in the file's order, the decoder's
        f"{tmp_path / 'tok' / 'pytorch_model.bin'}: tensor decoder.conv_out.weight holds 1 of "
        f"{model.decoder.conv_out.weight.numel()} values that are not finite (1 inf) (2 tensors in all hold such "
        "values): weights of a diverged training run; use an earlier checkpoint, or train again with a lower --lr")
    with torch.no_grad():
        model.decoder.conv_out.weight[0, 0, 0, 0] = 0.0  # the codebook alone, every value NaN
    save(model, tmp_path / "tok")
    codebook = model.quantize.embedding.weight.numel()
    with pytest.raises(CheckpointError, match=rf"tensor quantize\.embedding\.weight holds {codebook} of {codebook} "
                                              r"values that are not finite \(all NaN\): weights of a diverged"):
        load(tmp_path / "tok")
    assert evaluate_cli.main(["--checkpoint", str(tmp_path / "tok"), "--data", PHOTOS,
                              "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "tensor quantize.embedding.weight holds" in err
    assert not (tmp_path / "e.json").exists()
    with torch.no_grad():  # large but finite values, whose sum overflows float32: loaded as they are
        model.quantize.embedding.weight.fill_(0.5)
        model.decoder.conv_out.weight[0, 0, :2, 0] = 3e38
    save(model, tmp_path / "tok")
    assert float(load(tmp_path / "tok").decoder.conv_out.weight.detach()[0, 0, 1, 0]) == pytest.approx(3e38)


def _safetensors_tokenizer(folder: Path, dtype: torch.dtype, edit=None) -> dict[str, torch.Tensor]:
    """The tiny tokenizer stored as model.safetensors (safetensors' save_file) in `dtype`, `edit`
    changing the state first; returns the state written."""
    from safetensors.torch import save_file

    model = build(TINY, seed=0)
    state = {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    if edit:
        edit(state)
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    model.config.to_json(str(folder / "config.json"))
    return state


def test_float8_and_float16_tokenizers_of_finite_weights_load(tmp_path, monkeypatch):
    """rev55c M1/L1: a tokenizer stored in float8_e4m3fn (finite values) loaded before the NaN check
    and then crashed in it ('"sum_cpu" not implemented for Float8_e4m3fn'); a float16 codebook of
    all-positive values, whose sum passes 65504, took the exact count's chunked masks (256M values:
    2 s and 213 MiB where 46 ms). Now both load, the float16 one judged by its min and max alone
    (no mask of its values is made), and a float8_e5m2 inf or e4m3fn NaN is still refused by name."""
    from tokenizer import finite
    from tokenizer.checkpoint import CheckpointError

    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        state = _safetensors_tokenizer(tmp_path / str(dtype), dtype)
        loaded = load(tmp_path / str(dtype)).state_dict()
        assert torch.equal(loaded["quantize.embedding.weight"], state["quantize.embedding.weight"].float())

    def positive_codebook(state):
        state["quantize.embedding.weight"] = state["quantize.embedding.weight"].abs() + 8

    state = _safetensors_tokenizer(tmp_path / "f16", torch.float16, positive_codebook)
    assert not torch.isfinite(state["quantize.embedding.weight"].sum())  # the sum a check overflowed
    masked = []
    real_isfinite = torch.isfinite
    monkeypatch.setattr(finite.torch, "isfinite", lambda t: masked.append(t.numel()) or real_isfinite(t))
    loaded = load(tmp_path / "f16").state_dict()
    monkeypatch.undo()
    assert torch.equal(loaded["quantize.embedding.weight"], state["quantize.embedding.weight"].float())
    assert masked and max(masked) == 1  # min and max judged, never a mask of the values

    def bad(state, name, value):
        state[name] = state[name].clone()
        state[name].view(-1)[3] = value

    _safetensors_tokenizer(tmp_path / "e5m2_inf", torch.float8_e5m2,
                           lambda s: bad(s, "decoder.conv_out.weight", float("inf")))
    with pytest.raises(CheckpointError, match=r"tensor decoder\.conv_out\.weight holds 1 of \d+ values that are not "
                                              r"finite \(1 inf\)"):
        load(tmp_path / "e5m2_inf")
    _safetensors_tokenizer(tmp_path / "e4m3_nan", torch.float8_e4m3fn,
                           lambda s: bad(s, "quantize.embedding.weight", float("nan")))
    with pytest.raises(CheckpointError, match=r"tensor quantize\.embedding\.weight holds 1 of \d+ values that are "
                                              r"not finite \(1 NaN\)"):
        load(tmp_path / "e4m3_nan")


def test_the_finite_check_of_every_float8_byte_agrees_with_torchs_widening():
    """Each of the 256 bytes of each float8 kind judged alone and together as torch's float32
    widening shows it (e4m3fn: NaN at 0x7F/0xFF; e5m2: inf at 0x7C, NaN above; fnuz: NaN at 0x80),
    and a complex NaN is named NaN (was '1 inf')."""
    from tokenizer.finite import non_finite_count, non_finite_phrase

    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
        every = torch.arange(256, dtype=torch.uint8).view(getattr(torch, name))
        widened = every.float()
        assert non_finite_count(every) == int((~torch.isfinite(widened)).sum()), name
        assert [non_finite_count(every[i:i + 1]) for i in range(256)] == (~torch.isfinite(widened)).int().tolist()
    pair = torch.tensor([1 + 1j, complex(float("nan"), 0)], dtype=torch.complex64)
    assert non_finite_phrase("w", pair, non_finite_count(pair)) == "tensor w holds 1 of 2 values that are not finite (1 NaN)"


def test_float4_tensors_of_a_real_safetensors_file_pass_the_finite_check_and_a_float4_tokenizer_is_refused(tmp_path):
    """stop 56 #3: a float4_e2m1fn_x2 tensor (torch's packed 4-bit float, as safetensors' save_file
    writes and load_file reads it) crashed the finite check ('"copy_kernel" not implemented for
    Float4_e2m1fn_x2'): e2m1 has no NaN or inf, so every byte is finite and the count is 0. A
    tokenizer holding one (torch.save) is refused in one line naming the tensor and its dtype."""
    from safetensors.torch import load_file, save_file

    from tokenizer.checkpoint import CheckpointError
    from tokenizer.finite import non_finite_count

    every = torch.arange(256, dtype=torch.uint8).view(torch.float4_e2m1fn_x2).reshape(16, 16)
    save_file({"w": every}, str(tmp_path / "f4.safetensors"))
    read = load_file(str(tmp_path / "f4.safetensors"))["w"]
    assert read.dtype == torch.float4_e2m1fn_x2 and torch.equal(read.view(torch.uint8), every.view(torch.uint8))
    assert non_finite_count(read) == 0 and non_finite_count(read[3]) == 0
    model = build(TINY, seed=0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    name = "decoder.conv_out.weight"
    state[name] = torch.zeros(state[name].shape, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    (tmp_path / "tok").mkdir()
    torch.save(state, tmp_path / "tok" / "pytorch_model.bin")
    model.config.to_json(str(tmp_path / "tok" / "config.json"))
    with pytest.raises(CheckpointError, match=rf"tensors in a dtype we do not load: {name} "
                                              r"\(float4_e2m1fn_x2\) \(store float32"):
        load(tmp_path / "tok")


@pytest.mark.parametrize("key, tensor, value, named", [
    ("model", "quantize.embedding.weight", float("nan"), r"tensor model\.quantize\.embedding\.weight holds 1 of \d+ "
                                                          r"values that are not finite \(1 NaN\)"),
    ("opt_d", "exp_avg", float("inf"), r"tensor opt_d\.state\.0\.exp_avg holds 1 of \d+ values that are not "
                                       r"finite \(1 inf\)"),
])
def test_a_train_state_holding_nan_or_inf_is_refused_on_resume_naming_the_tensor(tmp_path, capsys, runs, key, tensor,
                                                                                value, named):
    """stop 56 #2: `<out>/train_state.pt` whose weights or optimizer moments hold NaN/inf (saved by an
    older version, copied, edited) was loaded on resume and trained on. Refused now in one line naming
    the file and the tensor, before a step runs or the log is touched."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(runs[1], out)  # the straight run's 5 steps: the discriminator's optimizer has moments
    path = out / "train_state.pt"
    state = torch.load(path, weights_only=True)
    target = state[key][tensor] if key == "model" else state[key]["state"][0][tensor]
    target.view(-1)[1] = value
    torch.save(state, path)
    log = (out / "log.jsonl").read_bytes()
    capsys.readouterr()
    assert fit_cli.main(RUN + ["--out", str(out), "--max-steps", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and re.fullmatch(rf"error: --out: {re.escape(str(path))} cannot be resumed from "
                                                      rf"\({named}: a diverged step's state\); move it away to "
                                                      r"train afresh", err), err
    assert (out / "log.jsonl").read_bytes() == log


def _first_writer_refused_at_the_seconds_open(monkeypatch, folder: str) -> list[str]:
    """A first writer holds `folder`; the next writer's first open of its lock file is followed by
    the first's refusal, which takes back the lock file and the folder it made. The paths that
    writer opened are listed in the list returned, as it opens them."""
    from tokenizer import run_folder

    first = run_folder.sole_writer(folder, "tokenizer.fit")
    first.__enter__()
    opened, tries = run_folder._open_lock, []

    def open_then_first_refused(path: str):
        result = opened(path)
        tries.append(path)
        if len(tries) == 1:
            assert first.__exit__(RuntimeError, RuntimeError("refused"), None) is False  # re-raised
            assert not os.path.exists(folder)  # taken back: it held only the lock file
        return result

    monkeypatch.setattr(run_folder, "_open_lock", open_then_first_refused)
    return tries


def test_a_lock_file_taken_back_by_a_refused_writer_is_not_held_by_the_next(tmp_path: Path, monkeypatch):
    """A writer refused before its first step now removes the `.writer.lock` (and folder) it made.
    A second writer that opened that file just before would then lock a file no one else can see,
    and a third would lock a new one beside it: the second sees its file unlinked and starts over."""
    import fcntl

    from tokenizer import run_folder

    folder = str(tmp_path / "run")
    tries = _first_writer_refused_at_the_seconds_open(monkeypatch, folder)
    with run_folder.sole_writer(folder, "tokenizer.fit") as hold:
        assert len(tries) == 2 and hold.locked and os.listdir(folder) == [run_folder.LOCK_NAME]
        with open(os.path.join(folder, run_folder.LOCK_NAME), "rb") as third, pytest.raises(BlockingIOError):
            fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_folder_taken_back_before_its_lock_file_is_opened_is_made_anew(tmp_path: Path, monkeypatch):
    """A refused first writer may take back the folder between the second's making it and opening
    its lock file (ENOENT there): that is the same race, so the second starts over and gets the
    folder, rather than calling a writable folder unwritable."""
    from tokenizer import run_folder

    folder = str(tmp_path / "run")
    first = run_folder.sole_writer(folder, "tokenizer.fit")
    first.__enter__()
    made = run_folder._make_folder

    def make_then_first_refused(path: str) -> None:
        made(path)
        monkeypatch.setattr(run_folder, "_make_folder", made)
        assert first.__exit__(RuntimeError, RuntimeError("refused"), None) is False
        assert not os.path.exists(folder)

    monkeypatch.setattr(run_folder, "_make_folder", make_then_first_refused)
    with run_folder.sole_writer(folder, "tokenizer.fit") as hold:
        assert hold.locked and os.listdir(folder) == [run_folder.LOCK_NAME]


def test_a_writer_that_started_over_and_fails_takes_back_the_folder_it_made_again(tmp_path: Path, monkeypatch):
    """The second writer found the folder made (by the first), so it was not its to remove; once the
    first took it back the second made it again, and failing in turn it removes it: no empty --out."""
    from tokenizer import run_folder

    folder = str(tmp_path / "run")
    tries = _first_writer_refused_at_the_seconds_open(monkeypatch, folder)
    with pytest.raises(RuntimeError, match="second refused"):
        with run_folder.sole_writer(folder, "tokenizer.fit"):
            raise RuntimeError("second refused before its first step")
    assert len(tries) == 2 and not os.path.exists(folder) and os.listdir(tmp_path) == []
