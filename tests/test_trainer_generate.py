"""Visual prompting: seeded sampling, suppressed special ids, the sliding window, the PNG strip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.checkpoint_io import save_pretrained
from trainer.config import BOS_ID, ModelConfig, UsageError
from trainer.generate import GENERATED_FRAME, PROMPT_FRAME, generate, generate_codes, main, make_strip, sample_token
from trainer.model import LVMTransformer

TPI = 256
# Generation logic is the same for any image length; 16-token images keep slow references cheap.
SMALL = 16


def _tiny(max_positions: int = 1100, seed: int = 0) -> LVMTransformer:
    torch.manual_seed(seed)
    config = ModelConfig(hidden_size=32, intermediate_size=48, num_attention_heads=2, num_hidden_layers=1,
                         max_position_embeddings=max_positions)
    model = LVMTransformer(config).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init, so greedy choices are far apart
        model.lm_head.weight.mul_(50)
    return model


class _LovesSpecials(torch.nn.Module):
    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x)
        logits[..., 8192:] += 100.0
        return logits


def _codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 8192, (n, TPI)).astype(np.uint16)


def test_sample_token_filters():
    generator = torch.Generator().manual_seed(0)
    logits = torch.zeros(8292)
    logits[8200] = 100.0  # a special id the model loves
    logits[5] = 3.0
    logits[9] = 2.9
    assert sample_token(logits, generator, allowed=8192, temperature=0) == 5
    assert sample_token(logits, generator, allowed=8192, top_k=1) == 5
    assert sample_token(logits, generator, allowed=8192, top_p=1e-6) == 5
    picks = {sample_token(logits, generator, allowed=8192, top_k=2) for _ in range(50)}
    assert picks == {5, 9}
    assert sample_token(logits, generator, allowed=8, temperature=0) == 5
    assert all(sample_token(logits, generator, allowed=8192) < 8192 for _ in range(100))


def test_seeded_sampling_is_deterministic_and_suppresses_special_ids():
    model = _tiny()
    model.lm_head = _LovesSpecials(model.lm_head)  # special ids win every draw unless suppressed
    short = _codes(2)[:, :SMALL]
    b = generate_codes(model, short, 2, seed=7, tokens_per_image=SMALL)
    assert b.shape == (2, SMALL) and b.dtype == np.uint16 and b.max() < 8192
    assert np.array_equal(b, generate_codes(model, short, 2, seed=7, tokens_per_image=SMALL))
    assert not np.array_equal(b, generate_codes(model, short, 2, seed=8, tokens_per_image=SMALL))
    small = generate_codes(model, short % 1024, 2, seed=7, codebook_size=1024, top_k=50, top_p=0.9,
                           tokens_per_image=SMALL)
    assert small.max() < 1024  # a 1024-code tokenizer can decode everything sampled


def _reference_greedy(model: LVMTransformer, prompt: np.ndarray, n: int, keep: int, tpi: int) -> np.ndarray:
    """No cache: every token from a full forward over [BOS] + the last `keep` images + the partial image."""
    images = [row.astype(np.int64) for row in prompt]
    out = []
    for _ in range(n):
        context = np.concatenate([[BOS_ID]] + images[-keep:])
        codes: list[int] = []
        for _ in range(tpi):
            ids = torch.as_tensor(np.concatenate([context, np.asarray(codes, dtype=np.int64)]))[None]
            with torch.no_grad():
                codes.append(int(model(ids)[0, -1, :8192].argmax()))
        images.append(np.asarray(codes))
        out.append(codes)
    return np.asarray(out, dtype=np.uint16)


def test_sliding_window_rebuilds_and_matches_a_cacheless_reference():
    model = _tiny(max_positions=1 + 3 * SMALL + SMALL - 1)  # three context images fit beside a new one
    prompt = np.random.default_rng(0).integers(0, 8192, (17, SMALL))
    rebuilds: list[tuple[int, int]] = []
    out = generate_codes(model, prompt, 2, temperature=0, tokens_per_image=SMALL,
                         on_rebuild=lambda s, k: rebuilds.append((s, k)))
    assert rebuilds == [(14, 3), (15, 3)]  # the window slid for each new image
    assert np.array_equal(out, _reference_greedy(model, prompt, 2, keep=3, tpi=SMALL))
    # images that left the window do not matter; the last one does
    changed_first = prompt.copy()
    changed_first[0] = (changed_first[0] + 1) % 8192
    assert np.array_equal(generate_codes(model, changed_first, 2, temperature=0, tokens_per_image=SMALL), out)
    changed_last = prompt.copy()
    changed_last[-1] = (changed_last[-1] + 1) % 8192
    assert not np.array_equal(generate_codes(model, changed_last, 2, temperature=0, tokens_per_image=SMALL), out)


def test_window_that_still_fits_reuses_the_cache():
    model = _tiny(max_positions=1 + 3 * SMALL + SMALL - 1)
    prompt = np.random.default_rng(1).integers(0, 8192, (1, SMALL))
    rebuilds: list[tuple[int, int]] = []
    out = generate_codes(model, prompt, 4, temperature=0, tokens_per_image=SMALL,
                         on_rebuild=lambda s, k: rebuilds.append((s, k)))
    assert rebuilds == [(0, 1), (1, 3)]  # built once, reused for images 2 and 3, slid for image 4
    assert np.array_equal(out, _reference_greedy(model, prompt, 4, keep=3, tpi=SMALL))
    with pytest.raises(ValueError, match="no room"):
        generate_codes(_tiny(max_positions=400), _codes(1), 1)
    with pytest.raises(ValueError, match="stream mode"):
        generate_codes(model, np.zeros((0, SMALL), np.uint16), 1, bos=False, tokens_per_image=SMALL)


def test_lvm_window_of_15_images_at_4096_positions():
    model = _tiny(max_positions=4096)
    rebuilds: list[tuple[int, int]] = []
    out = generate_codes(model, _codes(17), 1, top_k=100, on_rebuild=lambda s, k: rebuilds.append((s, k)))
    assert rebuilds == [(2, 15)] and out.shape == (1, TPI)  # BOS + 3840 + 255 = 4096 positions, not one more
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):  # the model's own guard
        model(torch.zeros(1, 4097, dtype=torch.long))


class _PatchTokenizer:
    """A stand-in with the Tokenizer interface: one code per 16x16 patch (its mean grey level)."""

    image_size, tokens_per_image, codebook_size = 256, TPI, 1024

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images.shape)
        patches = images.reshape(len(images), 16, 16, 16, 16, 3).mean(axis=(2, 4, 5))
        return patches.reshape(len(images), TPI).astype(np.uint16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        grey = (codes.reshape(-1, 16, 16) % 256).astype(np.uint8)
        return np.repeat(np.repeat(grey, 16, axis=1), 16, axis=2)[..., None].repeat(3, axis=-1)


def test_generate_api_resizes_encodes_and_decodes(tmp_path: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    tokenizer = _PatchTokenizer()
    model = _tiny()
    codes, images = generate(model, tokenizer, [tmp_path / "a.png", rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)],
                             1, seed=3, resize="squash")
    assert tokenizer.seen == [(2, 256, 256, 3)]
    assert codes.shape == (1, TPI) and codes.max() < 1024  # the tokenizer's codebook bounds the samples
    assert images.shape == (1, 256, 256, 3) and images.dtype == np.uint8
    assert np.array_equal(images[0, ::16, ::16, 0], (codes[0].reshape(16, 16) % 256).astype(np.uint8))
    strip = make_strip(np.zeros((3, 256, 256, 3), np.uint8), images)
    assert strip.shape == (256 + 12, 4 * (256 + 12), 3)
    assert tuple(strip[0, 0]) == PROMPT_FRAME and tuple(strip[0, 3 * 268 + 1]) == GENERATED_FRAME
    assert np.array_equal(strip[6:262, 3 * 268 + 6:3 * 268 + 262], images[0])


@pytest.mark.slow
def test_cli_writes_the_strip(tmp_path: Path, tiny_tokenizer: Path, capsys):
    rng = np.random.default_rng(0)
    sizes = [(100, 150), (300, 200), (256, 256)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    model = _tiny()
    save_pretrained(model, tmp_path / "ckpt")
    out = tmp_path / "out" / "strip.png"
    code = main(["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer),
                 "--prompt", *map(str, paths), "--n", "1", "--out", str(out), "--seed", "1",
                 "--codes-out", str(tmp_path / "codes.npy"), "--device", "cpu"])
    assert code == 0
    strip = np.asarray(Image.open(out))
    assert strip.shape == (256 + 12, 4 * (256 + 12), 3)
    assert tuple(strip[0, 0]) == PROMPT_FRAME and tuple(strip[0, 3 * 268 + 1]) == GENERATED_FRAME
    saved = np.load(tmp_path / "codes.npy")
    assert saved.shape == (1, TPI) and saved.max() < 8192
    assert f"trainer generate: {TPI} tokens in " in capsys.readouterr().err  # its summary, on stderr
    assert main(["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer),
                 "--prompt", str(tmp_path / "missing.png"), "--out", str(out)]) == 2


def test_kv_cache_grows_in_place_and_returns_what_was_appended():
    from trainer.model import KVCache

    torch.manual_seed(0)
    cache, parts = KVCache(), []
    for size in (3, 1, 300, 1, 600):  # grows past its first 256 slots, twice
        k, v = torch.randn(2, 4, size, 8), torch.randn(2, 4, size, 8)
        parts.append((k, v))
        got_k, got_v = cache.append(0, k, v)
        assert torch.equal(got_k, torch.cat([p[0] for p in parts], dim=2))
        assert torch.equal(got_v, torch.cat([p[1] for p in parts], dim=2))
    assert cache.length == 905 and cache.keys[0].shape[2] >= 905
    held = cache.keys[0]
    cache.append(0, torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8))
    assert cache.keys[0] is held  # one more token: written in place, nothing copied


def test_cli_a_prompt_that_is_not_an_image_is_one_error_line(tmp_path: Path, tiny_tokenizer: Path, capsys):
    """A text file or a JPEG cut short given as --prompt escaped as a DecodeError traceback (exit 1):
    one `error:` line naming the file and the build's decode reason, exit 2, no strip written. The
    process itself (`python -m`, a Python start with torch: seconds) is run for one of the two."""
    import io
    import subprocess
    import sys

    save_pretrained(_tiny(), tmp_path / "ckpt")
    (tmp_path / "notimage.png").write_text("hi\n")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    argv = ["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--n", "1",
            "--out", str(tmp_path / "strip.png"), "--device", "cpu"]
    done = subprocess.run([sys.executable, "-m", "trainer.generate", *argv, "--prompt", str(tmp_path / "notimage.png")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: prompt image '{tmp_path / 'notimage.png'}': not_an_image"), done.stderr
    assert main([*argv, "--prompt", str(tmp_path / "cut.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: prompt image '{tmp_path / 'cut.jpg'}': truncated") and err.count("\n") == 1, err
    assert not (tmp_path / "strip.png").exists()


def test_cli_a_bad_prompt_fails_before_the_model_or_tokenizer_loads(tmp_path: Path, tiny_tokenizer: Path,
                                                                    monkeypatch, capsys):
    """The model (gigabytes) and the tokenizer were loaded before the prompt was read, so a typo in
    a prompt path failed only after them. Now a missing, unreadable or broken prompt file, or no
    prompt for --stream, fails before any weights are loaded, naming the file."""
    import io

    import tokenizer.codec
    import trainer.checkpoint_io

    def never(*args, **kwargs):
        raise AssertionError("weights loaded before the prompt was checked")

    monkeypatch.setattr(trainer.checkpoint_io, "model_from_checked", never)
    monkeypatch.setattr(tokenizer.codec.Tokenizer, "from_pretrained", never)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "notimage.png").write_text("hi\n")
    (tmp_path / "folder.png").mkdir()
    save_pretrained(_tiny(), tmp_path / "model")  # its config and state are read before the weights
    base = ["--checkpoint", str(tmp_path / "model"), "--tokenizer", str(tiny_tokenizer), "--out",
            str(tmp_path / "strip.png"), "--device", "cpu"]
    for prompt, words in (([good, tmp_path / "missing.png"], f"'{tmp_path / 'missing.png'}': No such file or directory"),
                          ([tmp_path / "folder.png"], f"'{tmp_path / 'folder.png'}': Is a directory"),
                          ([good, tmp_path / "notimage.png"], f"'{tmp_path / 'notimage.png'}': not_an_image"),
                          ([tmp_path / "cut.jpg"], f"'{tmp_path / 'cut.jpg'}': truncated"),
                          ([], "--stream (no BOS) needs at least one --prompt image")):
        stream = [] if prompt else ["--stream"]
        assert main(base + stream + ["--prompt", *map(str, prompt)]) == 2, prompt
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err, (prompt, err)
    assert not (tmp_path / "strip.png").exists()
    # a good prompt gets past the checks to the (refused) model load
    with pytest.raises(AssertionError, match="weights loaded"):
        main(base + ["--prompt", str(good)])


def test_a_value_error_from_inside_generation_is_a_traceback_not_a_flag_error(tmp_path: Path, tiny_tokenizer: Path,
                                                                             monkeypatch, capsys):
    """`main` printed every ValueError as a one-line user mistake (exit 2, no traceback), so a bug
    in sampling looked like a bad prompt or checkpoint: only usage errors are one line now."""
    import trainer.generate as generate_module

    def broken(*args, **kwargs):
        raise ValueError("a bug inside sampling")

    save_pretrained(_tiny(), tmp_path / "ckpt")
    monkeypatch.setattr(generate_module, "sample_token", broken)
    with pytest.raises(ValueError, match="a bug inside sampling") as raised:
        main(["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--n", "1",
              "--out", str(tmp_path / "strip.png"), "--device", "cpu"])
    assert not isinstance(raised.value, UsageError)
    assert "error:" not in capsys.readouterr().err and not (tmp_path / "strip.png").exists()


def test_cli_usage_errors_stay_one_line(tmp_path: Path, tiny_tokenizer: Path, capsys):
    """A flag, a tokenizer folder that is not one, a model too short for one image: one `error:`
    line, exit 2, no strip written."""
    save_pretrained(_tiny(), tmp_path / "ckpt")
    save_pretrained(_tiny(max_positions=200), tmp_path / "short")
    base = ["--n", "1", "--out", str(tmp_path / "strip.png"), "--device", "cpu"]
    for argv, words in (
            (["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--window", "0"],
             "error: --window 0: give at least 1 image"),
            (["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tmp_path / "none")],
             f"error: {tmp_path / 'none'}: no config.json"),
            (["--checkpoint", str(tmp_path / "short"), "--tokenizer", str(tiny_tokenizer)],
             "error: max_position_embeddings 200 leaves no room")):
        assert main(argv + base) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(words) and err.count("\n") == 1, err
    assert not (tmp_path / "strip.png").exists()


def test_a_model_without_special_ids_is_refused_with_bos_and_prompted_without(tmp_path: Path, tiny_tokenizer: Path,
                                                                               capsys):
    """A checkpoint whose vocabulary is the codebook alone (8192, e.g. an HF Llama trained in stream
    mode) has no BOS row: the old code fed BOS 8192 to its embedding, an IndexError deep in torch."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=8192, hidden_size=32, intermediate_size=48, num_attention_heads=2,
                         num_hidden_layers=1, max_position_embeddings=1100)
    save_pretrained(LVMTransformer(config).eval(), tmp_path / "codes-only")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    argv = ["--checkpoint", str(tmp_path / "codes-only"), "--tokenizer", str(tiny_tokenizer), "--prompt",
            str(tmp_path / "p.png"), "--n", "1", "--out", str(tmp_path / "strip.png"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model's vocab_size 8192 has no BOS id 8192") and "--stream" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "strip.png").exists()
    assert main(argv + ["--stream", "--codes-out", str(tmp_path / "codes.npy")]) == 0
    assert np.load(tmp_path / "codes.npy").max() < 8192


def test_a_model_folder_that_is_not_there_is_named_as_such(tmp_path: Path, capsys):
    """`--checkpoint runs/tyni` (a typo) said "runs/tyni: no weights; expected model.safetensors, ...",
    as if the folder were there and empty."""
    missing = tmp_path / "runs" / "tyni"
    assert main(["--checkpoint", str(missing), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err == (f"error: {missing} does not exist; give a model folder (ours, a fit run's "
                                       "--out, or a Hugging Face Llama folder)\n")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert main(["--checkpoint", str(tmp_path / "model.safetensors"), "--tokenizer", str(tmp_path),
                 "--out", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'model.safetensors'} is a file; give the folder")


def _trained_on(run: Path, tokenizer: dict, seed: int = 0, mode: str = "paper") -> Path:
    """A fit run's step folder whose state.json records `tokenizer` as its shards' and the packing
    `mode` (what `TokenWindows.fingerprint` writes), holding a tiny model."""
    from trainer.checkpoint import save_checkpoint

    model = _tiny(seed=seed)
    state = {"data": {"fingerprint": {"mode": mode, "tokenizer": tokenizer}}}
    return Path(save_checkpoint(str(run), 1, model.state_dict(), {}, model.config, state))


def _record_of(folder: Path) -> dict:
    from tokenizer.codec import Tokenizer

    tok = Tokenizer.from_pretrained(folder, device="cpu")
    return {"name": tok.name, "hash": tok.tokenizer_hash, "codebook_size": tok.codebook_size,
            "tokens_per_image": tok.tokens_per_image, "weights_hash": tok.weights_hash}


def test_a_tokenizer_other_than_the_one_the_checkpoint_records_is_refused(tmp_path: Path, tiny_tokenizer: Path,
                                                                           monkeypatch, capsys):
    """A checkpoint's state.json records the tokenizer of its training shards, but generate never
    compared it with --tokenizer: another tokenizer's codes were decoded into a strip (exit 0). Now
    one line names both, before the model loads; the recorded one generates; a copy of it under
    another folder name too; a model that records none (an HF download) generates with a note."""
    import shutil

    import trainer.checkpoint_io
    from trainer.interop import export_hf

    right = _record_of(tiny_tokenizer)
    wrong = {**right, "name": "uvd-test", "hash": "0" * 64}
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    base = ["--tokenizer", str(tiny_tokenizer), "--prompt", str(tmp_path / "p.png"), "--n", "1", "--device", "cpu",
            "--out", str(tmp_path / "strip.png")]
    other_run = tmp_path / "other"
    _trained_on(other_run, wrong)
    export_hf(other_run, tmp_path / "other-hf")  # an export keeps the record in its config.json
    other_sizes = _trained_on(tmp_path / "sizes", {**right, "tokens_per_image": 16})
    loaded = []
    real_load = trainer.checkpoint_io.model_from_checked
    monkeypatch.setattr(trainer.checkpoint_io, "model_from_checked",
                        lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    for folder, differ in ((other_run, "(hash differs)"), (tmp_path / "other-hf", "(hash differs)"),
                           (other_sizes, "(tokens_per_image differs)")):
        assert main(["--checkpoint", str(folder), *base]) == 2, folder
        err = capsys.readouterr().err
        assert err.startswith(f"error: --tokenizer {tiny_tokenizer} has tokenizer '{right['name']}' ("), err
        assert f"weights {right['hash'][:16]}, " in err or differ == "(tokens_per_image differs)", err  # hash: loaded
        assert f"but {folder} was trained on " in err and differ in err and err.count("\n") == 1, err
    assert not loaded and not (tmp_path / "strip.png").exists()  # refused before the model loaded
    copy = tmp_path / "renamed-copy"
    shutil.copytree(tiny_tokenizer, copy)
    _trained_on(tmp_path / "right", right)
    for tokenizer in (tiny_tokenizer, copy):
        assert main(["--checkpoint", str(tmp_path / "right"), *base[:1], str(tokenizer), *base[2:]]) == 0
        assert "note:" not in capsys.readouterr().err
    save_pretrained(_tiny(), tmp_path / "hf")
    assert main(["--checkpoint", str(tmp_path / "hf"), *base]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'hf'} records no tokenizer" in err and right["hash"][:16] in err, err
    # a model trained on shards of an earlier version: they recorded the weights hash alone
    _trained_on(tmp_path / "older", {**right, "hash": right["weights_hash"]})
    assert main(["--checkpoint", str(tmp_path / "older"), *base]) == 0
    _trained_on(tmp_path / "imported", {**right, "name": "vqgan-f16-8192-laion", "hash": "unknown"})
    assert main(["--checkpoint", str(tmp_path / "imported"), *base]) == 0  # import-jsonl's default: was refused


def test_output_paths_and_sampling_flags_are_judged_before_anything_loads(tmp_path: Path, tiny_tokenizer: Path,
                                                                          monkeypatch, capsys):
    """`--out strip` (no extension) or a folder, `--codes-out` under a file, `--top-p 0` (NaN
    probabilities), `--temperature -1` (silently greedy), `--top-k -5` (silently none), `--device
    tpu` or cuda without CUDA: tracebacks after the model was loaded and every image sampled, or
    quietly another sampler. Now one `error:` line naming the flag, exit 2, nothing loaded."""
    import tokenizer.codec
    import trainer.checkpoint_io

    def never(*args, **kwargs):
        raise AssertionError("weights loaded before the flags were checked")

    monkeypatch.setattr(trainer.checkpoint_io, "model_from_checked", never)
    monkeypatch.setattr(tokenizer.codec.Tokenizer, "from_pretrained", never)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    save_pretrained(_tiny(), tmp_path / "ckpt")
    base = ["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--n", "1"]
    strip = ["--out", str(tmp_path / "strip.png")]
    for argv, words in (
            (["--out", str(tmp_path / "strip")], f"--out {tmp_path / 'strip'}: no file extension"),
            (["--out", str(tmp_path / "folder")], f"--out {tmp_path / 'folder'}: is a folder"),
            (["--out", str(tmp_path / "strip.txt")], "Pillow writes no image format with the extension .txt"),
            (["--out", str(tmp_path / "strip.xbm")], "Pillow's XBM writer cannot write an RGB image"),
            ([*strip, "--codes-out", str(tmp_path / "file" / "codes.npy")],
             f"--codes-out {tmp_path / 'file' / 'codes.npy'}: {tmp_path / 'file'} is a file"),
            ([*strip, "--codes-out", str(tmp_path / "strip.png")], "is --out too"),
            ([*strip, "--top-p", "0"], "--top-p 0.0: give a mass above 0 and at most 1"),
            ([*strip, "--top-p", "1.5"], "--top-p 1.5: give a mass above 0"),
            ([*strip, "--temperature", "-1"], "--temperature -1.0: give 0 (greedy) or more"),
            ([*strip, "--temperature", "nan"], "--temperature nan: give 0"),
            ([*strip, "--top-k", "-5"], "--top-k -5: give 0 (no top-k) or more"),
            ([*strip, "--n", "0"], "--n 0: give at least 1"),
            ([*strip, "--device", "tpu"], "--device 'tpu' is no device; choose auto, cpu, cuda or cuda:N"),
            ([*strip, "--device", "cuda"], "--device cuda asked for, but torch sees no CUDA device"),
            ([*strip, "--device", "cpu", "--dtype", "int8"], "unknown dtype 'int8'")):
        assert main(base + argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "strip.png").exists()
    with pytest.raises(UsageError, match="--top-p 0"):  # the library call too: never NaN probabilities
        generate_codes(_tiny(), _codes(1), 1, top_p=0.0)


def test_codes_out_goes_where_it_is_named(tmp_path: Path, tiny_tokenizer: Path):
    """`--codes-out` into a missing folder raised FileNotFoundError after the strip was written;
    its folders are made as --out's are, and a name without `.npy` is that very file (np.save on a
    name adds `.npy`)."""
    save_pretrained(_tiny(), tmp_path / "ckpt")
    out, codes = tmp_path / "a" / "strip.jpg", tmp_path / "b" / "c" / "codes"
    assert main(["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--n", "1",
                 "--out", str(out), "--codes-out", str(codes), "--device", "cpu", "--temperature", "0"]) == 0
    assert Image.open(out).format == "JPEG"
    saved = np.load(codes)
    assert saved.shape == (1, _record_of(tiny_tokenizer)["tokens_per_image"]) and not codes.with_suffix(".npy").exists()


def test_a_prompt_that_is_no_regular_file_or_too_large_is_refused_unread(tmp_path: Path, tiny_tokenizer: Path,
                                                                          capsys):
    """A prompt file was read whole before any check: a 3 GB file of zeros peaked at 3.4 GB,
    /dev/zero was read until the kernel killed the process, a FIFO without a writer blocked for
    ever. Pipes and devices are refused by their type, unopened; a file over the build's cap on
    one input file (256 MiB) by its size, unread (a sparse file here: nothing is allocated)."""
    import sources.records
    from trainer.generate import PROMPT_MAX_BYTES, read_image_file

    assert PROMPT_MAX_BYTES == sources.records.MAX_INPUT_FILE_BYTES
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(PROMPT_MAX_BYTES + 1)
    save_pretrained(_tiny(), tmp_path / "ckpt")
    base = ["--checkpoint", str(tmp_path / "ckpt"), "--tokenizer", str(tiny_tokenizer), "--out",
            str(tmp_path / "s.png"), "--device", "cpu", "--prompt"]
    for path, words in ((fifo, "a pipe, not an image file"), ("/dev/zero", "a character device, not an image file"),
                        (big, f"{PROMPT_MAX_BYTES + 1} bytes, over the 256 MiB")):
        assert main(base + [str(path)]) == 2, path
        err = capsys.readouterr().err
        assert err == f"error: prompt image '{path}': {err.split(': ', 2)[2]}" and words in err, err
    small = tmp_path / "small.png"
    small.write_bytes(b"x" * 100)
    assert read_image_file(small, max_bytes=100) == b"x" * 100
    small.write_bytes(b"x" * 101)
    with pytest.raises(UsageError, match="101 bytes, over the"):
        read_image_file(small, max_bytes=100)
    # a path that looked like a file and is a pipe by the time it is opened: the open does not wait
    real_stat = os.stat
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(os, "stat", lambda path, *a, **k: real_stat(small if path == fifo else path, *a, **k))
        with pytest.raises(UsageError, match="a pipe, not an image file"):
            read_image_file(fifo)


def test_a_model_is_prompted_in_the_mode_it_was_fitted_in(tmp_path: Path, tiny_tokenizer: Path, capsys):
    """hunt57 #2: a model fitted with --mode stream was prompted with a BOS first unless told
    --stream, silently. The recorded mode is the default now: the codes are those of --stream;
    --mode paper against it samples with BOS, with a note; no prompt for such a model is refused
    before it loads."""
    run = tmp_path / "run"
    _trained_on(run, _record_of(tiny_tokenizer), mode="stream")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    base = ["--checkpoint", str(run), "--tokenizer", str(tiny_tokenizer), "--n", "1", "--device", "cpu",
            "--out", str(tmp_path / "strip.png"), "--temperature", "0"]

    def codes(*flags: str) -> tuple[np.ndarray, str]:
        assert main([*base, "--prompt", str(tmp_path / "p.png"), "--codes-out", str(tmp_path / "c.npy"), *flags]) == 0
        return np.load(tmp_path / "c.npy"), capsys.readouterr().err

    default, err = codes()
    assert "note:" not in err, err
    assert np.array_equal(default, codes("--stream")[0])
    paper, err = codes("--mode", "paper")
    assert not np.array_equal(default, paper)
    assert f"note: {run} was trained in stream mode (no BOS), but --mode paper" in err, err
    assert main(base) == 2
    assert capsys.readouterr().err == (f"error: {run} was trained in stream mode (no BOS): give at least one --prompt "
                                       "image to start the sequence (or --mode paper to start it with a BOS it never "
                                       "saw)\n")
