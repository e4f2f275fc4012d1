"""What `tokenizer.fit` and `tokenizer.evaluate` read: files that are no image file (a pipe, a link
to a device, a sparse file or tar member over the cap), formats by name, 16-bit and float pixels,
and checkpoints whose tensors the loader did not foresee. Every file is made by a real tool (mkfifo,
`tar -S`, Pillow, ImageMagick's, in tests/fixtures/magick) and read back through the CLIs."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import evaluate as evaluate_cli
from tokenizer.checkpoint import CheckpointError, load, save
from tokenizer.config import TINY
from tokenizer.data import decode_image
from tokenizer.model import build

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"


def _photo(path: Path, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


# ImageMagick's files of 16-bit, 32-bit, signed and float grey samples (Pillow's modes "I;16", "I",
# "F"), whose pixels `image.convert("RGB")` clipped at 255 (up to 252 levels off), and their 8-bit or
# alpha neighbours, which were right already; none carries a colour curve (the build applies gAMA and
# ICC profiles, the tokenizer does not)
WIDE = ("png16_grey.png", "pgm16.pgm", "pgm16_dark.pgm", "pgm10.pgm", "tiff16_signed.tif", "tiff32_grey.tif",
        "tiff32_signed.tif", "tiff_float_grey.tif")
ALREADY_RIGHT = ("png16_rgb.png", "png16_rgba.png", "png16_greya.png", "ppm16.ppm", "png_palette_trns.png",
                 "gif_trns.gif", "webp_lossless_alpha.webp", "tiff_rgba_assoc.tif", "bmp5_alpha.bmp")


@pytest.mark.parametrize("name", WIDE + ALREADY_RIGHT)
def test_wide_and_float_grey_pixels_are_the_builds(name):
    from transforms.decode import decode_rgb

    data = (MAGICK / name).read_bytes()
    ours, build_s = decode_image(data), decode_rgb(data)
    assert ours.dtype == np.uint8 and np.array_equal(ours, build_s), int(np.abs(ours.astype(int) - build_s).max())
    if name in WIDE:
        assert Image.open(MAGICK / name).mode in ("I;16", "I", "F")
        assert ours.mean() < 250  # not all white, as the clip made them


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """ImageMagick's 16-bit grey gradient: 99.2% white before (mean 253.6); now each sample's top 8 bits,
    within 1 of ImageMagick's own 8-bit reduction of the same file (which rounds)."""
    wide, narrow = tmp_path / "g16.png", tmp_path / "g8.png"
    subprocess.run(["convert", "-size", "64x256", "gradient:black-white", "-colorspace", "Gray", "-depth", "16",
                    "-define", "png:bit-depth=16", "-define", "png:color-type=0", str(wide)], check=True)
    subprocess.run(["convert", str(wide), "-depth", "8", str(narrow)], check=True)
    assert Image.open(wide).mode == "I;16"
    ours = decode_image(wide.read_bytes())
    samples = np.asarray(Image.open(wide)).astype(np.uint16)
    assert np.array_equal(ours[..., 0], (samples >> 8).astype(np.uint8)) and (ours == 255).mean() < 0.01
    assert np.abs(ours.astype(int) - np.asarray(Image.open(narrow).convert("RGB")).astype(int)).max() <= 1


def _safetensors(tensors: dict[str, torch.Tensor], odd: dict[str, dict]) -> bytes:
    """A safetensors file of float32 `tensors` with the header entries `odd` added at its front."""
    header, blobs, at = dict(odd), [], 0
    for name, tensor in tensors.items():
        blob = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def test_tensors_the_loader_did_not_foresee_are_one_error_line(tmp_path, capsys):
    """A sparse tensor in pytorch_model.bin, a zero-element safetensors tensor with a dimension of
    2**70, and a codebook over 65,536 codes each ended `tokenizer.evaluate` in a traceback (rc 1)."""
    model = build(TINY, seed=0)
    state = model.state_dict()
    photo = tmp_path / "one.png"
    _photo(photo)

    def evaluate(folder: Path) -> str:
        code = evaluate_cli.main(["--checkpoint", str(folder), "--data", str(photo), "--out",
                                  str(tmp_path / "e.json"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: --checkpoint: ") and err.count("\n") == 1, err
        return err

    sparse = tmp_path / "sparse"
    save(model, sparse)
    torch.save({**state, "decoder.conv_out.bias": state["decoder.conv_out.bias"].to_sparse()},
               sparse / "pytorch_model.bin")
    assert "tensors not stored dense: decoder.conv_out.bias (sparse_coo)" in evaluate(sparse)
    huge = tmp_path / "huge"
    save(model, huge)
    (huge / "pytorch_model.bin").unlink()
    (huge / "model.safetensors").write_bytes(_safetensors(
        {k: v.float() for k, v in state.items()}, {"zz": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}))
    assert f"tensor 'zz' has shape [0, {2**70}], not a list of sizes" in evaluate(huge)
    (huge / "model.safetensors").write_bytes(_safetensors({k: v.float() for k, v in state.items()}, {}))
    assert load(huge).state_dict().keys() == state.keys()  # the same file without it loads
    wide = tmp_path / "wide"
    config = TINY.to_dict() | {"num_embeddings": 70000}
    save(build(type(TINY).from_dict(config), seed=0), wide)
    assert ("its codebook holds 70000 codes; token shards store uint16 codes (at most 65536): use a tokenizer "
            "with a smaller codebook") in evaluate(wide)
    with pytest.raises(CheckpointError, match="not stored dense"):
        load(sparse)
