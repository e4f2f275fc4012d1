"""The VQGAN tokenizer: released-format config and checkpoints, exact codes, batched codec, metrics.

Code equality is checked against a reference forward written here from the published
architecture with torch.nn.functional only, straight from the state dict (no tokenizer module
code), on the full LVM preset and on the tiny one.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import math
import os
import pickle
import re
import struct
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokenizer import checkpoint
from tokenizer.checkpoint import CheckpointError, load, save, weights_hash
from tokenizer.codec import Tokenizer, code_agreement, eager_encode, inductor_options
from tokenizer.config import LVM, TINY, VQGANConfig, preset
from tokenizer.metrics import (codebook_usage, colour_shift_per_image, perplexity, psnr_per_image, ssim_per_image,
                               usage_histogram)
from tokenizer.model import VQGAN, build, parameter_count, state_shapes
from torch_work import torch_work
from uvd_pipeline.sample.media import square_photos


# What the released "vqgan-f16-8192-laion" config.json holds (open-muse ConfigMixin output).
RELEASED_CONFIG = {
    "_class_name": "VQGANModel",
    "_version": "0.0.1",
    "attn_resolutions": [],
    "channel_mult": [1, 2, 2, 4, 6],
    "commitment_cost": 0.25,
    "dropout": 0.0,
    "hidden_channels": 128,
    "no_attn_mid_block": True,
    "num_channels": 3,
    "num_embeddings": 8192,
    "num_res_blocks": 2,
    "quantized_embed_dim": 64,
    "resample_with_conv": True,
    "resolution": 256,
    "z_channels": 64,
}


def photos(size: int, names=("astronaut", "coffee", "chelsea", "rocket")) -> np.ndarray:
    """Real bundled photos, centre-cropped and resized to size x size, NHWC uint8."""
    return square_photos(names, size)


# ---------------------------------------------------------------------------------------------
# The independent reference: the published architecture as plain functional calls.
# ---------------------------------------------------------------------------------------------
def _gn(sd, key, x):
    channels = x.shape[1]
    groups = 32 if channels % 32 == 0 else math.gcd(channels, 32)
    return F.group_norm(x, groups, sd[key + ".weight"], sd[key + ".bias"], eps=1e-6)


def _conv(sd, key, x, stride=1, padding=1):
    return F.conv2d(x, sd[key + ".weight"], sd[key + ".bias"], stride=stride, padding=padding)


def _resnet(sd, key, x):
    h = _conv(sd, key + ".conv1", F.silu(_gn(sd, key + ".norm1", x)))
    h = _conv(sd, key + ".conv2", F.silu(_gn(sd, key + ".norm2", h)))
    if key + ".nin_shortcut.weight" in sd:
        x = _conv(sd, key + ".nin_shortcut", x, padding=0)
    return x + h


def reference_latent(sd, cfg: VQGANConfig, x: torch.Tensor) -> torch.Tensor:
    h = _conv(sd, "encoder.conv_in", x)
    levels = len(cfg.channel_mult)
    for i in range(levels):
        for j in range(cfg.num_res_blocks):
            h = _resnet(sd, f"encoder.down.{i}.block.{j}", h)
        if i != levels - 1:
            h = _conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, padding=0)
    h = _resnet(sd, "encoder.mid.block_2", _resnet(sd, "encoder.mid.block_1", h))
    h = _conv(sd, "encoder.conv_out", F.silu(_gn(sd, "encoder.norm_out", h)))
    return _conv(sd, "quant_conv", h, padding=0)


def reference_codes(sd, cfg: VQGANConfig, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, h*w) of latent `z` and, per token, the float64 gap between the best and
    second-best code."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    book = sd["quantize.embedding.weight"].double()
    if cfg.codebook_l2_norm:
        flat, book = flat / flat.norm(dim=1, keepdim=True), book / book.norm(dim=1, keepdim=True)
    dist = (flat * flat).sum(1, keepdim=True) + (book * book).sum(1) - 2 * flat @ book.t()
    best2 = dist.topk(2, dim=1, largest=False).values
    codes = dist.argmin(dim=1).view(z.shape[0], -1)
    return codes, (best2[:, 1] - best2[:, 0]).view(z.shape[0], -1)


def reference_decode(sd, cfg: VQGANConfig, codes: torch.Tensor) -> torch.Tensor:
    book = sd["quantize.embedding.weight"]
    if cfg.codebook_l2_norm:
        book = book / book.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n, tokens = codes.shape
    side = math.isqrt(tokens)
    h = book[codes].view(n, side, side, -1).permute(0, 3, 1, 2)
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", h, padding=0))
    h = _resnet(sd, "decoder.mid.block_2", _resnet(sd, "decoder.mid.block_1", h))
    for i in reversed(range(len(cfg.channel_mult))):
        for j in range(cfg.num_res_blocks + 1):
            h = _resnet(sd, f"decoder.up.{i}.block.{j}", h)
        if i != 0:
            h = _conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return _conv(sd, "decoder.conv_out", F.silu(_gn(sd, "decoder.norm_out", h))).clamp(0, 1)


def assert_codes_match(ours: np.ndarray, ref: torch.Tensor, gap: torch.Tensor, scale: float) -> None:
    """Equal everywhere the reference is not a near-tie (gap below fp32 noise), and >= 99% overall."""
    ours_t = torch.as_tensor(ours.astype(np.int64))
    differ = ours_t != ref
    clear = gap > 1e-4 * scale
    assert not (differ & clear).any(), f"{int((differ & clear).sum())} clear-cut codes differ"
    assert differ.double().mean() <= 0.01


def _well_conditioned_codebook(model, pixels: torch.Tensor, seed: int = 0) -> None:
    """Give a random model a codebook spread like its features (as a trained one is), so argmin
    is meaningful; the open-muse init (+-1/8192) puts every code at the origin."""
    with torch.no_grad():
        z = model.encode_latent(pixels)
        g = torch.Generator().manual_seed(seed)
        book = torch.randn(model.config.num_embeddings, z.shape[1], generator=g)
        model.quantize.embedding.weight.copy_(book * z.std(dim=(0, 2, 3)) + z.mean(dim=(0, 2, 3)))


@pytest.fixture(scope="module")
def lvm_model():
    model = build(LVM, seed=0).eval()
    _well_conditioned_codebook(model, torch.from_numpy(photos(64, ("astronaut",))).permute(0, 3, 1, 2) / 255.0)
    return model


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------
def test_released_config_reads_as_the_lvm_preset(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**RELEASED_CONFIG, "_name_or_path": "vqgan", "decoder_res_blocks": None,
                                "extra_mid_res_blocks": None, "decoder_channel_mult": None}))
    assert VQGANConfig.from_json(path) == LVM == preset("lvm")
    assert VQGANConfig.from_json(tmp_path) == LVM  # the folder works too
    written = json.loads(LVM.to_json())
    assert written == {k: v for k, v in RELEASED_CONFIG.items() if k != "_version"}
    assert VQGANConfig.from_json(TINY.to_json()) == TINY
    assert LVM.tokens_per_image == 256 and LVM.downsample_factor == 16
    assert TINY.tokens_per_image == 256 and TINY.num_embeddings == 8192


@pytest.mark.parametrize("change, words", [
    ({"num_layers": 4}, "unknown config key(s) ['num_layers']"),
    ({"attn_resolutions": [16]}, "attn_resolutions"),
    ({"no_attn_mid_block": False}, "no_attn_mid_block"),
    ({"decoder_channel_mult": [1, 2]}, "decoder_channel_mult"),
    ({"hidden_channels": "128"}, "hidden_channels"),
    ({"channel_mult": 4}, "channel_mult"),
    ({"resolution": 250}, "multiple"),
])
def test_bad_configs_are_refused_with_the_reason(change, words):
    with pytest.raises(ValueError) as err:
        VQGANConfig.from_dict({**RELEASED_CONFIG, **change})
    assert words in str(err.value)


# ---------------------------------------------------------------------------------------------
# the LVM architecture
# ---------------------------------------------------------------------------------------------
def test_lvm_preset_has_the_released_parameter_count_and_key_pattern(lvm_model):
    count = parameter_count(lvm_model)
    print(f"LVM preset parameters: {count:,} ({count * 4 / 1e6:.0f} MB fp32)")
    assert count == 146_244_675
    sd = lvm_model.state_dict()
    assert len(sd) == 277
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["quantize.embedding.weight"] == (8192, 64)
    assert shapes["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert shapes["encoder.conv_out.weight"] == (64, 768, 3, 3)
    assert shapes["quant_conv.weight"] == (64, 64, 1, 1) and shapes["post_quant_conv.weight"] == (64, 64, 1, 1)
    assert shapes["encoder.down.4.block.0.nin_shortcut.weight"] == (768, 512, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (768, 64, 3, 3)
    assert shapes["decoder.up.4.block.0.conv1.weight"] == (768, 768, 3, 3)
    assert shapes["decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert shapes["decoder.norm_out.weight"] == (128,)
    # downsample after every encoder level but the last, upsample on every decoder level but 0
    assert [f"encoder.down.{i}.downsample.conv.weight" in sd for i in range(5)] == [True] * 4 + [False]
    assert [f"decoder.up.{i}.upsample.conv.weight" in sd for i in range(5)] == [False] + [True] * 4
    assert sum(k.startswith("decoder.up.3.block.") and k.endswith("conv1.weight") for k in sd) == 3
    assert sum(k.startswith("encoder.down.3.block.") and k.endswith("conv1.weight") for k in sd) == 2
    allowed = ("encoder.conv_in.", "encoder.down.", "encoder.mid.block_1.", "encoder.mid.block_2.",
               "encoder.norm_out.", "encoder.conv_out.", "quant_conv.", "quantize.embedding.weight",
               "post_quant_conv.", "decoder.conv_in.", "decoder.mid.block_1.", "decoder.mid.block_2.",
               "decoder.up.", "decoder.norm_out.", "decoder.conv_out.")
    assert all(k.startswith(allowed) for k in sd)
    leaf = {k.split(".")[-2] for k in sd if ".block." in k}
    assert leaf == {"norm1", "conv1", "norm2", "conv2", "nin_shortcut"}


def test_lvm_codes_equal_an_independent_functional_forward(lvm_model):
    images = photos(256, ("astronaut",))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    sd = lvm_model.state_dict()
    with torch.inference_mode():
        ref_latent = reference_latent(sd, LVM, x)
        ref, gap = reference_codes(sd, LVM, ref_latent)
        latent = lvm_model.encode_latent(x)
        ours = lvm_model.encode_codes(x).numpy()
    assert ours.shape == (1, 256)
    assert torch.allclose(latent, ref_latent, atol=1e-4, rtol=1e-4)
    assert_codes_match(ours, ref, gap, scale=float(ref_latent.pow(2).sum(1).mean()))
    assert len(np.unique(ours)) > 16  # a meaningful lookup, not one code everywhere
    fast = Tokenizer(lvm_model, "lvm-random", device="cpu").encode(images)  # the codec's default path
    assert fast.dtype == np.uint16
    assert_codes_match(fast, ref, gap, scale=float(ref_latent.pow(2).sum(1).mean()))


def test_tiny_codes_and_decode_equal_the_functional_reference():
    model = build(TINY, seed=3).eval()
    images = photos(64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    sd = model.state_dict()
    with torch.inference_mode():
        ref, gap = reference_codes(sd, TINY, reference_latent(sd, TINY, x))
        ours = model.encode_codes(x)
        assert_codes_match(ours.numpy(), ref, gap, scale=2.0)
        ref_pixels = reference_decode(sd, TINY, ref)
        pixels = model.decode_codes(ref)
    assert ours.shape == (4, 16) and pixels.shape == (4, 3, 64, 64)
    assert torch.allclose(pixels, ref_pixels, atol=1e-4)
    assert pixels.min() >= 0 and pixels.max() <= 1


# ---------------------------------------------------------------------------------------------
# checkpoints
def test_weights_hash_is_computed_once_for_threads_that_ask_together(monkeypatch):
    """A build's Tokenize threads all ask for the tokenizer's id as they start: one computes it,
    the others wait for it (each hashing an LVM-size model held a GPU build's start for 1.7 s)."""
    model = build(TINY, seed=3)
    tok = Tokenizer(model, "tiny")
    calls = []

    def slow(source):
        calls.append(1)
        time.sleep(0.2)
        return weights_hash(source)

    monkeypatch.setattr(checkpoint, "weights_hash", slow)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: tok.weights_hash, range(8)))
    assert len(calls) == 1 and set(ids) == {weights_hash(model)}


def test_weights_hash_covers_every_dtype_byte_for_byte():
    """The id hashes each tensor's raw bytes (bf16 and empty tensors too) as a buffer, no copy:
    checked against the same digest built from byte copies."""
    import hashlib

    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
             "c": torch.zeros(0, 4), "d": torch.arange(5, dtype=torch.int64)[::2]}
    digest = hashlib.sha256()
    for key, tensor in state.items():
        t = tensor.contiguous()
        digest.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
        digest.update(bytes(t.reshape(-1).view(torch.uint8).tolist()))
    assert weights_hash(state) == digest.hexdigest()


# ---------------------------------------------------------------------------------------------
def test_save_load_round_trip_in_muse_format(tmp_path):
    model = build(TINY, seed=1)
    digest = save(model, tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["config.json", "pytorch_model.bin"]
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["_class_name"] == "VQGANModel"
    state = torch.load(tmp_path / "tok" / "pytorch_model.bin", weights_only=True)
    assert list(state) == list(model.state_dict())  # a plain state dict, muse key order
    loaded = load(tmp_path / "tok")
    assert loaded.config == TINY and not loaded.training
    assert digest == weights_hash(model) == weights_hash(loaded) == weights_hash(state)
    assert weights_hash(build(TINY, seed=1)) == digest  # same seed, same weights, same id
    assert weights_hash(build(TINY, seed=2)) != digest
    assert save(loaded, tmp_path / "again") == digest
    assert not [n for n in os.listdir(tmp_path / "tok") if ".tmp-" in n]
    images = photos(64, ("coffee",))
    assert np.array_equal(eager_encode(model, images), eager_encode(loaded, images))


def test_decoder_level_path_adds_each_images_level_and_round_trips(tmp_path):
    """`decoder_level`: the decoder's output moves by a linear map of each image's mean features
    (taken before `norm_out`), which is zero at first; the key is ours and written only when set."""
    plain = build(TINY, seed=3).eval()
    levelled = build(dataclasses.replace(TINY, decoder_level=True), seed=3).eval()
    missing, unexpected = levelled.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["decoder.level_out.weight", "decoder.level_out.bias"] and unexpected == []
    assert "decoder_level" not in TINY.to_dict() and "decoder_level" not in LVM.to_dict()
    latent = torch.randn(2, TINY.quantized_embed_dim, 4, 4)
    with torch.no_grad():
        before = plain.decode_latent(latent)
        assert torch.equal(levelled.decode_latent(latent), before)  # zero path: nothing changes
        levelled.decoder.level_out.bias.copy_(torch.tensor([0.25, 0.0, -0.5]))
        features = {}
        levelled.decoder.norm_out.register_forward_hook(lambda m, args, out: features.update(x=args[0]))
        levelled.decoder.level_out.weight[1, 0] = 2.0  # green follows channel 0's per-image mean
        after = levelled.decode_latent(latent)
    offset = after - before
    per_image_mean = features["x"][:, 0].mean(dim=(1, 2))
    assert torch.allclose(offset[:, 0], torch.full_like(offset[:, 0], 0.25), atol=1e-6)
    assert torch.allclose(offset[:, 2], torch.full_like(offset[:, 2], -0.5), atol=1e-6)
    assert torch.allclose(offset[:, 1], 2.0 * per_image_mean[:, None, None].expand_as(offset[:, 1]), atol=1e-5)
    assert not torch.allclose(per_image_mean[0], per_image_mean[1])  # a level per image, not one constant
    digest = save(levelled, tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["decoder_level"] is True
    loaded = load(tmp_path / "tok")
    assert loaded.config.decoder_level and weights_hash(loaded) == digest
    with torch.no_grad():
        assert torch.equal(loaded.decode_latent(latent), after)
    with pytest.raises(ValueError, match="decoder_level"):
        VQGANConfig.from_dict({**RELEASED_CONFIG, "decoder_level": "yes"})


def _broken_checkpoint(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "bad"
    save(build(TINY, seed=0), folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    edit(state)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("encoder.conv_out.bias"), ["missing keys", "encoder.conv_out.bias"]),
    (lambda s: s.update({"encoder.mid.attn_1.q.weight": torch.zeros(1)}),
     ["unexpected keys", "encoder.mid.attn_1.q.weight"]),
    (lambda s: s.update({"quantize.embedding.weight": torch.zeros(1024, 8)}),
     ["shape mismatches", "quantize.embedding.weight", "(1024, 8)", "(8192, 8)"]),
])
def test_mismatched_checkpoints_are_refused_with_the_keys(tmp_path, edit, words):
    with pytest.raises(CheckpointError) as err:
        load(_broken_checkpoint(tmp_path, edit))
    for word in words:
        assert word in str(err.value)


def test_many_missing_keys_are_summarised(tmp_path):
    folder = _broken_checkpoint(tmp_path, lambda s: [s.pop(k) for k in list(s) if k.startswith("decoder.")])
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\..*\(\d+ in all\)"):
        load(folder)


def test_bad_config_in_a_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "tok"
    save(build(TINY, seed=0), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "use_attention": True}))
    with pytest.raises(CheckpointError, match="bad config.*use_attention"):
        load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad config"):
        load(folder)


# A small muse config (hidden 8): its checkpoint files are written and loaded in milliseconds.
SMALL_CONFIG = {"_class_name": "VQGANModel", "resolution": 256, "num_channels": 3, "hidden_channels": 8,
                "channel_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1, "z_channels": 4, "quantized_embed_dim": 4,
                "num_embeddings": 16}


def _muse_folder(folder: Path, config: dict, weights: dict[str, bytes]) -> Path:
    """A checkpoint folder as open-muse/HF write it: config.json (json.dump) and weight files."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name, data in weights.items():
        (folder / name).write_bytes(data)
    return folder


def _torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _small_state() -> dict[str, torch.Tensor]:
    return build(VQGANConfig.from_dict(SMALL_CONFIG), seed=0).state_dict()


def _safetensors_header_declaring(nbytes: int) -> bytes:
    """A safetensors file whose header declares one tensor of `nbytes` over 64 bytes of data."""
    header = json.dumps({"quantize.embedding.weight": {"dtype": "F32", "shape": [nbytes // 4 // 4, 4],
                                                       "data_offsets": [0, nbytes]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


@pytest.mark.parametrize("case", ["integer weights", "truncated safetensors", "safetensors declaring 1 TiB",
                                  "hidden_channels 1e12"])
def test_broken_checkpoint_files_are_refused_naming_file_and_problem(tmp_path, case):
    """What escaped as RuntimeError / SafetensorError is a CheckpointError naming the file."""
    from safetensors.torch import save as safetensors_bytes

    state = _small_state()
    good = safetensors_bytes({k: v.contiguous() for k, v in state.items()})
    folder, file, words = {
        "integer weights": (
            lambda: _muse_folder(tmp_path / "int", SMALL_CONFIG,
                                 {"pytorch_model.bin": _torch_bytes({k: v.to(torch.int64) for k, v in state.items()})}),
            "pytorch_model.bin", ["tensors that are not floating point", "encoder.conv_in.weight (int64)"]),
        "truncated safetensors": (
            lambda: _muse_folder(tmp_path / "short", SMALL_CONFIG, {"model.safetensors": good[:-100]}),
            "model.safetensors", ["cannot be read as safetensors"]),
        "safetensors declaring 1 TiB": (
            lambda: _muse_folder(tmp_path / "huge", SMALL_CONFIG,
                                 {"model.safetensors": _safetensors_header_declaring(1 << 40)}),
            "model.safetensors", ["cannot be read as safetensors"]),
        "hidden_channels 1e12": (
            lambda: _muse_folder(tmp_path / "wide", {**SMALL_CONFIG, "hidden_channels": 10**12},
                                 {"pytorch_model.bin": _torch_bytes(state)}),
            "config.json", ["hidden_channels", "1000000000000", "more than 8192"]),
    }[case]
    folder = folder()
    with pytest.raises(CheckpointError) as err:
        load(folder)
    assert str(folder / file) in str(err.value)
    for word in words:
        assert word in str(err.value)
    _muse_folder(tmp_path / "fine", SMALL_CONFIG, {"model.safetensors": good})
    assert weights_hash(load(tmp_path / "fine")) == weights_hash(state)  # the same format, intact, loads


@pytest.mark.parametrize("make, words", [
    ("sparse", "2147483648 bytes, more than the 4 MiB a config.json may have (real ones are a few KB)"),
    ("/dev/zero", "a character device, not a file; pass a config.json file itself"),
])
def test_a_config_too_big_to_be_one_is_refused_before_it_is_read(tmp_path, never_read, make, words):
    """A tokenizer folder's config.json was read whole: 2 GB (sparse) took its size in memory before
    json refused it; linked to /dev/zero it was called missing. Now one line from its size or kind."""
    folder = _muse_folder(tmp_path / "tok", SMALL_CONFIG, {"pytorch_model.bin": _torch_bytes(_small_state())})
    path = folder / "config.json"
    path.unlink()
    if make == "sparse":
        with open(path, "wb") as handle:
            handle.truncate(2**31)
    else:
        path.symlink_to(make)
    never_read(path)
    with pytest.raises(CheckpointError) as error:
        load(folder)
    message = str(error.value)
    assert f"{path}: {words}" in message and "\n" not in message, message

def _deflated(torch_file: bytes) -> bytes:
    """The same torch file re-zipped with its tensor records deflated (as `zip -r` or a hub
    mirror's repacking makes it); torch.save stores every record uncompressed."""
    source, out = zipfile.ZipFile(io.BytesIO(torch_file)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            packed = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            archive.writestr(info.filename, source.read(info.filename), compress_type=packed)
    return out.getvalue()


def test_a_torch_file_whose_records_are_compressed_is_refused_before_torch_reads_it(tmp_path, monkeypatch):
    """torch allocates a deflated record's declared size before inflating it: a 950 KiB
    pytorch_model.bin declaring one 1 GB tensor took 1176 MiB of peak RSS before the key check
    refused it (25 MB of zeros deflated is more than this machine's memory). Judged from the zip's
    directory, before torch.load."""
    state = _small_state()
    folder = _muse_folder(tmp_path / "deflated", SMALL_CONFIG, {"pytorch_model.bin": _deflated(_torch_bytes(state))})
    calls = []
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: calls.append(a) or pytest.fail("torch.load ran"))
    with pytest.raises(CheckpointError) as error:
        load(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: ") and "compressed" in message
    assert "archive/data/0" in message and not calls
    monkeypatch.undo()
    (folder / "pytorch_model.bin").write_bytes(_torch_bytes(state))  # as torch writes it: loads
    assert weights_hash(load(folder)) == weights_hash(state)


def _zip_with(path: Path, records: int, last: bytes, method: int) -> Path:
    """A zip as zipfile writes it: `records` empty stored records, then one of `last` bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(records):
            archive.writestr(zipfile.ZipInfo(f"archive/e/{i}"), b"")
        archive.writestr("archive/data/0", last, compress_type=method)
    return path


def test_the_compressed_record_check_keeps_memory_flat_over_a_long_directory(tmp_path):
    """zipfile built an object per record: a 35 MB directory (400k records) took 220 MB of RSS
    before torch (26 MB for the same file) was asked. Walked record by record, the directory now
    costs a fraction of the file."""
    import tracemalloc

    path = _zip_with(tmp_path / "long.bin", 10_000, bytes(4000), zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    problem = checkpoint.torch_file_problem(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problem is not None and "archive/data/0; 4000 bytes declared" in problem
    assert peak < 400_000 < path.stat().st_size  # the tail and two 64 KiB chunks, whatever the length
    _zip_with(path, 10, bytes(4000), zipfile.ZIP_STORED)
    assert checkpoint.torch_file_problem(path) is None


def test_record_sizes_held_in_zip64_extra_fields_are_read(tmp_path, monkeypatch):
    """Past 4 GB (a 7B shard) a record's sizes move to its zip64 extra field, and the directory's
    place to the zip64 end record: zipfile writes both past ZIP64_LIMIT, lowered here to keep the
    file small (a 5 GiB sparse one was judged the same way, reading 19 KB)."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    path = _zip_with(tmp_path / "z64.bin", 3, bytes(5000), zipfile.ZIP_DEFLATED)
    monkeypatch.undo()
    assert b"\xff\xff\xff\xff" in path.read_bytes()[-300:] and b"PK\x06\x06" in path.read_bytes()
    assert "archive/data/0; 5000 bytes declared" in checkpoint.torch_file_problem(path)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    _zip_with(path, 3, bytes(5000), zipfile.ZIP_STORED)
    monkeypatch.undo()
    assert checkpoint.torch_file_problem(path) is None


def test_files_torch_reads_as_no_zip_are_not_searched_for_a_zip_directory(tmp_path, monkeypatch):
    """torch reads a file as a zip only when it opens with `PK\\x03\\x04`; the compressed-record
    check read the last 64 KiB of safetensors and legacy torch files too, for a directory none
    holds. They are now left to their readers from the first bytes; a zip is still walked."""
    from safetensors.torch import save_file

    state = {"w": torch.ones(2, 3)}
    save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "zip.bin").write_bytes(_torch_bytes(state))
    walked = []
    monkeypatch.setattr(checkpoint, "_zip_directory", lambda handle: walked.append(handle.name) or iter(()))
    assert [checkpoint.weight_file_problem(tmp_path / name) for name in ("model.safetensors", "legacy.bin",
                                                                        "zip.bin")] == [None] * 3
    assert walked == [str(tmp_path / "zip.bin")]


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e9ca24d17e2393\nsize 584904591\n")


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_a_git_lfs_pointer_instead_of_the_weights_is_named_as_one(tmp_path, name):
    """The hub's repository cloned without Git LFS leaves 130-byte pointer files: torch called it
    "Unsupported operand 118", safetensors "header too large". Now the message says what it is."""
    folder = _muse_folder(tmp_path / "clone", SMALL_CONFIG, {name: LFS_POINTER})
    with pytest.raises(CheckpointError) as error:
        load(folder)
    assert str(error.value).startswith(f"{folder / name}: a Git LFS pointer") and "git lfs pull" in str(error.value)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_a_pipe_in_place_of_the_weights_is_refused_not_waited_on(tmp_path, name):
    """A named pipe called pytorch_model.bin (a download streamed through mkfifo) blocked the load
    forever in open(), before any check. Refused from its kind now. Should a regression open it
    again, the test writes nothing into the pipe after 10 s to let it go; for model.safetensors it
    asks only the check that runs before safetensors' reader (which blocks holding the GIL)."""
    import threading

    folder = _muse_folder(tmp_path / "piped", SMALL_CONFIG, {})
    os.mkfifo(folder / name)
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(checkpoint.weight_file_problem(folder / name) if name.endswith(".safetensors") else load(folder))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # blocked in open(): a writer that closes at once lets it go
        os.close(os.open(folder / name, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail(f"{name} as a pipe blocked the load")
    reason = "a pipe, not a file; pass the weights file itself"
    if name.endswith(".safetensors"):
        assert outcome == [reason]
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], CheckpointError), outcome
        assert str(outcome[0]) == f"{folder / name}: {reason}"


class _LightningCallback:  # pickled by reference, as pytorch_lightning's ModelCheckpoint is in a .ckpt
    def __init__(self):
        self.monitor = "val/rec_loss"


def _lightning_ckpt(state: dict, **extra) -> bytes:
    """A PyTorch Lightning / taming-transformers `.ckpt`: the weights under `state_dict`, beside the
    epoch, optimizer states and whatever the run pickled (callbacks, an argparse Namespace)."""
    return _torch_bytes({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.9.0",
                         "state_dict": state, "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
                         "lr_schedulers": [], **extra})


def test_a_lightning_ckpt_is_named_as_one_and_the_refusal_says_the_fix(tmp_path):
    """A Lightning .ckpt passed as pytorch_model.bin: one holding a callback object was refused with
    no way out ("its pickle calls or builds ...ModelCheckpoint ... no code in a file is ever run"),
    one of plain dicts as 195 missing keys and "unexpected keys: epoch, global_step, ...". Both
    messages now say what the file is and how to get the state dict out of it."""
    state = _small_state()
    folder = _muse_folder(tmp_path / "cb", SMALL_CONFIG,
                          {"pytorch_model.bin": _lightning_ckpt(state, callbacks={"ModelCheckpoint": _LightningCallback()})})
    with pytest.raises(CheckpointError) as error:
        load(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: its pickle calls or builds ") and "\n" not in message
    assert "_LightningCallback" in message and "weights-only" in message and "'state_dict'" in message
    assert "torch.save" in message and "weights_only" not in message
    folder = _muse_folder(tmp_path / "plain", SMALL_CONFIG, {"pytorch_model.bin": _lightning_ckpt(state)})
    with pytest.raises(CheckpointError) as error:
        load(folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: a training checkpoint") and "missing keys" not in message
    assert "'state_dict'" in message and "torch.save" in message
    (folder / "pytorch_model.bin").write_bytes(_torch_bytes(state))  # its state dict alone: loads
    assert weights_hash(load(folder)) == weights_hash(state)


def test_a_file_that_is_no_pickle_is_not_called_a_refused_pickle(tmp_path):
    """An HTML error page saved as pytorch_model.bin: unreadable, not code that was refused."""
    folder = _muse_folder(tmp_path / "html", SMALL_CONFIG, {"pytorch_model.bin": b"<!DOCTYPE html><html>403</html>"})
    with pytest.raises(CheckpointError) as error:
        load(folder)
    assert "not a torch weights file" in str(error.value) and "calls or builds" not in str(error.value)


def test_check_turns_a_broken_tokenizer_into_one_error_line(tmp_path, capsys):
    """`uvd_pipeline check` names the field and exits 2 for a truncated model.safetensors."""
    from safetensors.torch import save as safetensors_bytes
    from PIL import Image

    from uvd_pipeline.cli import main

    (tmp_path / "imgs").mkdir()
    Image.fromarray(photos(64, ("coffee",))[0]).save(tmp_path / "imgs" / "0.jpg")
    good = safetensors_bytes({k: v.contiguous() for k, v in _small_state().items()})
    folder = _muse_folder(tmp_path / "short", SMALL_CONFIG, {"model.safetensors": good[: len(good) // 2]})
    config = tmp_path / "c.yaml"
    config.write_text(f"version: 1\noutput: {tmp_path / 'out'}\nsources:\n"
                      f"  - {{name: web, type: laion, path: {tmp_path / 'imgs'}}}\n")
    assert main(["check", str(config), "--set", f"tokenizer.checkpoint={folder}"]) == 2
    err = capsys.readouterr().err
    assert f"error: tokenizer.checkpoint: {folder / 'model.safetensors'}: cannot be read as safetensors" in err
    assert "Traceback" not in err


def test_state_shapes_are_the_built_models():
    """The arithmetic `state_shapes` a loader checks first is the model's state dict, in order."""
    configs = [LVM, TINY, dataclasses.replace(TINY, decoder_level=True, resample_with_conv=False),
               VQGANConfig(resolution=64, hidden_channels=8, channel_mult=(3, 1, 2), num_res_blocks=3),
               VQGANConfig.from_dict(SMALL_CONFIG)]
    for config in configs:
        with torch.device("meta"):
            model = VQGAN(config)
        assert list(state_shapes(config).items()) == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("blocks, words", [(64, "missing keys: encoder.conv_in.weight"),
                                           (1500, "'num_res_blocks' = 1500 is more than 64")])
def test_a_declared_depth_costs_nothing_before_the_file_is_compared(tmp_path, monkeypatch, blocks, words):
    """A few hundred bytes declaring thousands of blocks took 36 s and 216 MiB before the refusal:
    the file is compared with the config's arithmetic shapes, no module is built for a mismatch.
    Bounded by the work, not the clock: no module at all, and no more torch work than refusing the
    same file under a one-block config takes (reading the file), whatever depth is declared."""
    weights = {"pytorch_model.bin": _torch_bytes({"x": torch.zeros(1)})}
    folder = _muse_folder(tmp_path / "deep", {**SMALL_CONFIG, "num_res_blocks": blocks}, weights)
    shallow = _muse_folder(tmp_path / "shallow", {**SMALL_CONFIG, "num_res_blocks": 1}, weights)
    monkeypatch.setattr(checkpoint, "VQGAN", lambda config: pytest.fail("built a model for a mismatched file"))
    with pytest.raises(CheckpointError, match=re.escape(words)):
        load(folder)
    deep, reference = torch_work(lambda: load(folder), monkeypatch), torch_work(lambda: load(shallow), monkeypatch)
    assert deep.modules == reference.modules == 0
    assert 0 < reference.functions and deep.functions <= reference.functions, (deep, reference)
    assert deep.operations <= reference.operations and deep.bytes <= reference.bytes, (deep, reference)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_unpickles_code(tmp_path, monkeypatch):
    folder = tmp_path / "tok"
    save(build(TINY, seed=0), folder)
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"encoder.conv_in.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only") as error:
        load(folder)
    # one line naming what the pickle calls, not torch's page advising weights_only=False
    assert f"calls or builds {os.system.__module__}.system" in str(error.value)
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    save(build(TINY, seed=0), folder)
    monkeypatch.setattr(checkpoint.torch, "load", spy)
    load(folder)
    assert seen == [True]


def test_source_calls_torch_load_only_weights_only_and_imports_no_beam():
    for path in sorted(Path(checkpoint.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                    getattr(node.func, "value", None) is not None and getattr(node.func.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, path
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("apache_beam", "uvd_pipeline") for n in names), path


def _torch_load_calls(path: Path) -> list[str]:
    """'file:function' of each call of torch's `load` in `path` (an AST walk: a call spelt `torch.load`)."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [f"{path.name}:{function.name}" for node in ast.walk(function)
                      if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load"
                      and getattr(getattr(node.func, "value", None), "id", "") == "torch"]
    return found


def test_every_weights_file_is_read_by_one_function():
    """The weights-only load (first-bytes check, torch.load, refusal wording) had near-copies in
    tokenizer/checkpoint.py, tokenizer/fit.py (resume), trainer/checkpoint_io.py and
    trainer/checkpoint.py, each with its own wording of the same refusals. One reader now:
    `tokenizer.checkpoint.read_weights` (its callers word the refusal their way)."""
    root = Path(checkpoint.__file__).parents[1]
    calls = [call for package in ("tokenizer", "trainer") for path in sorted((root / package).glob("*.py"))
             for call in _torch_load_calls(path)]
    assert calls == ["checkpoint.py:read_weights"], calls


# ---------------------------------------------------------------------------------------------
# the batched codec
# ---------------------------------------------------------------------------------------------
def test_codec_fast_path_matches_eager_and_batches_do_not_matter():
    model = build(TINY, seed=0)
    images = photos(256)
    ref = eager_encode(model, images)
    tok = Tokenizer(model, "tiny", device="cpu", batch_size=3)
    codes = tok.encode(images)
    assert codes.shape == (4, 256) and codes.dtype == np.uint16
    assert code_agreement(codes, ref) == 1.0
    assert np.array_equal(Tokenizer(model, "tiny", batch_size=1).encode(images), codes)
    assert np.array_equal(tok.encode(images[2]), codes[2:3])  # a single HWC image
    pixels = tok.decode(codes)
    assert pixels.shape == images.shape and pixels.dtype == np.uint8
    assert tok.tokens_per_image == 256 and tok.codebook_size == 8192 and tok.image_size == 256
    assert tok.weights_hash == weights_hash(model)
    assert tok.decode(np.zeros((0, 256), np.uint16)).shape == (0, 256, 256, 3)


def test_codec_streams_and_layouts_agree_and_leave_the_model_alone():
    model = build(TINY, seed=0)
    images = photos(128)
    ref = eager_encode(model, images)
    streams = Tokenizer(model, "tiny", batch_size=1, streams=2)
    try:
        assert code_agreement(streams.encode(images), ref) >= 0.99  # 1-thread streams: ulp-level drift
    finally:
        streams.close()
    # eager channels_last: allowed, not a default (torch's channels-last GroupNorm drifts more)
    assert code_agreement(Tokenizer(model, "tiny", channels_last=True).encode(images), ref) >= 0.99
    padded = Tokenizer(model, "tiny", batch_size=3, pad_batches=True)
    assert np.array_equal(padded.encode(images), ref) and padded.decode(ref[:1]).shape == (1, 128, 128, 3)
    with ThreadPoolExecutor(2) as pool:  # one Tokenizer shared by threads (Beam's Shared)
        outs = list(pool.map(padded.encode, [images, images[::-1]]))
    assert np.array_equal(outs[0], ref) and np.array_equal(outs[1], ref[::-1])
    assert all(p.requires_grad for p in model.parameters())
    assert model.encoder.conv_in.weight.is_contiguous()


@pytest.mark.parametrize("shape, groups", [((2, 128, 12, 10), 32), ((3, 96, 8, 8), 32), ((2, 3, 9, 7), 3)])
def test_group_norm_by_channels_is_group_norm(shape, groups):
    """The per-channel-statistics GroupNorm (the GPU tokenizer's compiled path) is the same
    function as `F.group_norm`, to fp32 rounding, in both layouts and for activations whose
    mean is far from zero (where a plain sum-of-squares variance would cancel)."""
    from tokenizer.model import group_norm_by_channels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 0.5 + torch.linspace(-40, 40, shape[1])[None, :, None, None]
    weight, bias = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    reference = F.group_norm(x.double(), groups, weight.double(), bias.double(), eps=1e-6)
    for layout in (torch.contiguous_format, torch.channels_last):
        ours = group_norm_by_channels(x.contiguous(memory_format=layout), groups, weight, bias, 1e-6)
        assert ours.dtype == torch.float32 and ours.shape == x.shape
        assert (ours.double() - reference).abs().max() < 5e-5
    half = group_norm_by_channels(x.half(), groups, weight, bias, 1e-6)  # fp16 in, fp32 out (autocast's habit)
    of_half = F.group_norm(x.half().double(), groups, weight.double(), bias.double(), eps=1e-6)
    assert half.dtype == torch.float32 and (half.double() - of_half).abs().max() < 5e-5


def test_channel_statistics_switch_keeps_the_codes():
    """`channel_statistics` swaps every GroupNorm's arithmetic and nothing else: on CPU it is off
    by default, asked for it gives the plain forward's codes, and the caller's model keeps torch's."""
    from tokenizer.model import GroupNorm

    model = build(TINY, seed=0)
    images = photos(128)
    ref = eager_encode(model, images)
    assert not Tokenizer(model, "tiny", device="cpu").channel_statistics
    tok = Tokenizer(model, "tiny", device="cpu", channel_statistics=True)
    norms = [m for m in tok.model.modules() if isinstance(m, GroupNorm)]
    assert norms and all(m.by_channels for m in norms)
    assert not any(m.by_channels for m in model.modules() if isinstance(m, GroupNorm))
    assert np.array_equal(tok.encode(images), ref)


def test_kernel_tuning_is_a_cuda_compile_option(monkeypatch):
    """CUDA compiles tune inductor's kernels when asked (`tune_kernels=True`), passed as torch.compile
    options so Tokenizers that differ in it never share a compiled graph; CPU compiles freeze
    weights instead, for the first (warm-up) compile only."""
    import torch._inductor.config as inductor_config

    from tokenizer import codec

    assert inductor_options(True) == {"coordinate_descent_tuning": True} and inductor_options(False) is None
    model = build(TINY, seed=0)
    assert not Tokenizer(model, "tiny", compile=True, device="cpu", tune_kernels=True).tune_kernels
    assert not Tokenizer(model, "tiny", device="cpu").tune_kernels
    compiled = []
    monkeypatch.setattr(codec.torch, "compile", lambda fn, **options: compiled.append(options) or fn)
    Tokenizer(model, "tiny", compile=True, device="cpu")
    assert compiled == [{"dynamic": False, "options": None}] * 2  # encoder and decoder
    monkeypatch.setattr(codec, "inductor_options", lambda tune: {"coordinate_descent_tuning": True})
    Tokenizer(model, "tiny", compile=True, device="cpu")
    assert compiled[2:] == [{"dynamic": False, "options": {"coordinate_descent_tuning": True}}] * 2
    monkeypatch.undo()
    cpu = Tokenizer(model, "tiny", compile=True, device="cpu")
    probe = lambda chunk, real: inductor_config.freezing  # noqa: E731
    assert cpu._warm(probe, np.zeros((1, 16, 16, 3), np.uint8), 1) is True and probe(None, 1) is False


def test_low_precision_codec_and_the_fp16_overflow_fallback():
    """fp16 moves few codes; a model whose fp16 features overflow falls back to fp32 per batch
    (through the per-batch path and the queued path the GPU uses) and then gives fp32's codes."""
    model = build(TINY, seed=0)
    images = photos(64)
    reference = eager_encode(model, images)
    half = Tokenizer(model, "tiny", precision="fp16", batch_size=2, device="cpu")  # explicit: kept on CPU
    assert half.precision == "fp16" and code_agreement(half.encode(images), reference) >= 0.9
    if not torch.cuda.is_available():  # device left to the codec, no GPU: exact (and fast) fp32
        assert Tokenizer(model, "tiny", precision="fp16").precision == "fp32"
        assert Tokenizer(model, "tiny", precision="tf32").precision == "fp32"
        with pytest.raises(ValueError, match="tf32 needs a CUDA device"):
            Tokenizer(model, "tiny", precision="tf32", device="cpu")
    with torch.no_grad():
        model.encoder.conv_in.weight.mul_(1e5)  # activations beyond fp16's 65504
    reference = eager_encode(model, images)
    tok = Tokenizer(model, "tiny", precision="fp16", batch_size=3, device="cpu")
    assert np.array_equal(tok.encode(images), reference) and tok.fp32_fallbacks == 2
    queued = np.concatenate(tok._encode_queued(tok._batches(images, 64 * 64), ("encode",) + images.shape[1:]))
    assert np.array_equal(queued, reference) and tok.fp32_fallbacks == 4
    with pytest.raises(ValueError, match="precision must be one of"):
        Tokenizer(model, "tiny", precision="fp8")


def test_codec_refuses_bad_input():
    tok = Tokenizer(build(TINY, seed=0), "tiny")
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        tok.encode(np.zeros((1, 40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="codes must lie"):
        tok.decode(np.full((1, 4), 9000))
    with pytest.raises(ValueError, match="square"):
        tok.decode(np.zeros((1, 5), np.int64))
    assert tok.decode(np.zeros((1, 8), np.int64), grid=(2, 4)).shape == (1, 32, 64, 3)


def test_code_agreement():
    assert code_agreement(np.array([[1, 2, 3, 4]]), np.array([[1, 2, 0, 4]])) == 0.75
    with pytest.raises(ValueError):
        code_agreement(np.zeros((1, 2)), np.zeros((2, 1)))


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def test_ssim_and_psnr_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = photos(64, ("astronaut", "coffee"))
    rng = np.random.default_rng(0)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    ours = ssim_per_image(a, b)
    for i in range(2):
        theirs = structural_similarity(a[i] / 255.0, b[i] / 255.0, data_range=1.0, channel_axis=-1,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(ours[i] - theirs) < 1e-6
        assert abs(psnr_per_image(a, b)[i] - peak_signal_noise_ratio(a[i], b[i], data_range=255)) < 1e-6
    tall = ssim_per_image(a[:, :, :37], b[:, :, :37])  # not square: each axis blurred along itself
    theirs = structural_similarity(a[0, :, :37] / 255.0, b[0, :, :37] / 255.0, data_range=1.0, channel_axis=-1,
                                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(tall[0] - theirs) < 1e-6
    assert np.allclose(ssim_per_image(a, a), 1.0) and np.isinf(psnr_per_image(a, a)).all()


def test_colour_shift_is_the_mean_signed_difference_per_channel():
    a = photos(64, ("astronaut", "coffee")).astype(np.int16)
    b = np.clip(a + np.array([6, 0, -9]), 0, 255).astype(np.uint8)
    clipped = b.astype(np.int16) - a  # what the shift became where it hit 0 or 255
    expected = clipped.reshape(2, -1, 3).mean(axis=1)
    assert np.allclose(colour_shift_per_image(a.astype(np.uint8), b), expected, atol=1e-9)
    assert expected[:, 0].min() > 5 and expected[:, 2].max() < -7 and np.all(expected[:, 1] == 0)  # clipping bites


def test_usage_and_perplexity():
    hist = usage_histogram(np.array([[0, 0, 1, 3]]), 8)
    assert hist.tolist() == [2, 1, 0, 1, 0, 0, 0, 0]
    assert codebook_usage(hist) == 3 / 8
    assert abs(perplexity(usage_histogram(np.arange(8), 8)) - 8) < 1e-9
    assert perplexity(np.zeros(4, np.int64)) == 0.0
