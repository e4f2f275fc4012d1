"""What `tokenizer.fit` and `tokenizer.evaluate` read: files that are no image file (a pipe, a link
to a device, a sparse file or tar member over the cap), formats by name, 16-bit and float pixels,
and checkpoints whose tensors the loader did not foresee. Every file is made by a real tool (mkfifo,
`tar -S`, Pillow, ImageMagick's, in tests/fixtures/magick) and read back through the CLIs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import evaluate as evaluate_cli
from tokenizer.checkpoint import CheckpointError, load, save
from tokenizer.config import TINY
from tokenizer.model import build


def _photo(path: Path, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


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
