"""Safetensors files written by the real `safetensors` library, then damaged the ways disks, `head -c`
and people damage them: every reader of the project (tokenizer load, trainer header scan and tensor
stream) refuses them in words naming the file, judged from the header and the file size before
any tensor is touched; one that shrinks while being read is refused, not a SIGBUS.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenizer.checkpoint import CheckpointError, _read_state_dict
from tokenizer.safetensors_file import SafetensorsFileError, iter_tensors, read_header
from trainer.checkpoint_io import iter_tensors as trainer_iter_tensors
from trainer.checkpoint_io import stored_tensors, weight_files
from trainer.integrity import CheckpointDamaged

REPO = Path(__file__).resolve().parent.parent


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(64, 256, generator=g), "b.bias": torch.randn(300, generator=g).to(torch.bfloat16),
            "c.mask": torch.rand(7, 3, generator=g) > 0.5, "d.ids": torch.arange(-5, 5, dtype=torch.int16),
            "e.empty": torch.zeros(0, 4)}


def _written(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    save_file(_tensors(), str(path), metadata={"format": "pt"})
    return path


def _rewrite_header(path: Path, edit) -> None:
    """Edit the JSON header of a file the library wrote, keeping the data bytes as they were."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])


def _cut(path: Path, keep: int) -> None:
    subprocess.run(f"head -c {keep} {path} > {path}.cut && mv {path}.cut {path}", shell=True, check=True)


def _offsets(header: dict, name: str) -> list[int]:
    return header[name]["data_offsets"]


DAMAGES = {
    "cut by head -c": (lambda p: _cut(p, p.stat().st_size - 1000), "past the end of the file"),
    "cut inside the header": (lambda p: _cut(p, 40), "runs past the end of the file"),
    "cut to 5 bytes": (lambda p: _cut(p, 5), "shorter than the 8-byte header length"),
    "grown by zeros": (lambda p: subprocess.run(f"head -c 4096 /dev/zero >> {p}", shell=True, check=True),
                       "4096 bytes after the last tensor belong to no tensor"),
    "header length past the end": (lambda p: p.write_bytes(struct.pack("<Q", 1 << 40) + p.read_bytes()[8:]),
                                   "over the 100000000-byte limit"),
    "header length 1 MB over a small file": (lambda p: p.write_bytes(struct.pack("<Q", 1 << 20) + p.read_bytes()[8:]),
                                             "runs past the end of the file"),
    "offsets past the end": (lambda p: _rewrite_header(p, lambda h: h["a.weight"].update(
        data_offsets=[_offsets(h, "a.weight")[0] + (1 << 30), _offsets(h, "a.weight")[1] + (1 << 30)])),
        "past the end of the file"),
    "overlapping offsets": (lambda p: _rewrite_header(p, lambda h: h["d.ids"].update(
        data_offsets=[_offsets(h, "d.ids")[0] - 8, _offsets(h, "d.ids")[1] - 8])), "overlaps"),
    "dtype not matching the span": (lambda p: _rewrite_header(p, lambda h: h["a.weight"].update(dtype="F64")),
                                    "make 131072 bytes, but its data_offsets span 65536"),
    "shape not matching the span": (lambda p: _rewrite_header(p, lambda h: h["a.weight"].update(shape=[64, 4096])),
                                    "make 1048576 bytes, but its data_offsets span 65536"),
    "unknown dtype": (lambda p: _rewrite_header(p, lambda h: h["d.ids"].update(dtype="F4")), "dtype 'F4'"),
    "header not JSON": (lambda p: p.write_bytes(p.read_bytes()[:8] + b"\xff" * 20 + p.read_bytes()[28:]), "not JSON"),
}


def test_an_intact_file_reads_as_the_library_reads_it(tmp_path):
    path = _written(tmp_path)
    ours = dict(iter_tensors(path))
    theirs = load_file(str(path))
    assert list(ours) == [s.name for s in read_header(path)] and sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape
        assert torch.equal(ours[name], tensor), name
    trainer_stream = dict(trainer_iter_tensors(weight_files(tmp_path)))
    assert all(torch.equal(trainer_stream[k], v) for k, v in theirs.items())
    stored, _ = stored_tensors(weight_files(tmp_path), tmp_path)
    assert stored["b.bias"].dtype == "bfloat16" and stored["a.weight"].shape == (64, 256)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_is_refused_naming_it_before_any_tensor(tmp_path, damage):
    edit, reason = DAMAGES[damage]
    path = _written(tmp_path)
    edit(path)
    with pytest.raises(SafetensorsFileError, match=reason) as caught:
        next(iter_tensors(path))
    assert caught.value.path == str(path)
    with pytest.raises(CheckpointDamaged, match=f"{path}: .*{reason}"):  # the trainer's header scan
        stored_tensors(weight_files(tmp_path), tmp_path)
    with pytest.raises(CheckpointError, match=f"{path}: cannot be read as safetensors .*{reason}"):  # the tokenizer's
        _read_state_dict(str(tmp_path))


SHRINK = textwrap.dedent("""
    import os, sys
    from trainer.checkpoint_io import iter_tensors, weight_files
    from trainer.integrity import CheckpointDamaged
    folder = sys.argv[1]
    stream = iter_tensors(weight_files(folder))
    name, first = next(stream)
    os.truncate(os.path.join(folder, "model.safetensors"), 8192)  # a download restarted, a disk full
    try:
        for name, tensor in stream:
            float(tensor.float().sum())
    except CheckpointDamaged as exc:
        print("refused:", exc)
""")


def test_a_file_that_shrinks_while_streamed_is_refused_not_a_sigbus(tmp_path):
    """The old reader mapped the file: the next tensor's pages were gone and the process died of SIGBUS."""
    path = tmp_path / "model.safetensors"
    save_file({f"layer{i}.weight": torch.full((128, 128), float(i)) for i in range(4)}, str(path))
    done = subprocess.run([sys.executable, "-c", SHRINK, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert f"refused: {path}: " in done.stdout and "shrank while being read" in done.stdout, done.stdout


def test_a_file_rewritten_in_place_while_streamed_is_refused_not_mixed(tmp_path):
    """A checkpoint saved again over the file being streamed (same size, other values: a trainer's
    next save to the same name, written in place): the tensors after the rewrite came from the new
    file and those before from the old, a model of two checkpoints. The file's size and mtime are
    checked after each tensor's read: it is refused."""
    import os

    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(1000), "b": torch.zeros(1000)}, str(path))
    newer = tmp_path / "newer.safetensors"
    save_file({"a": torch.ones(1000), "b": torch.ones(1000)}, str(newer))
    assert newer.stat().st_size == path.stat().st_size
    stream = iter_tensors(path)
    name, first = next(stream)
    assert name == "a" and first.sum().item() == 0
    before = path.stat().st_mtime_ns
    with open(path, "r+b") as handle:  # in place: the same inode, as `open(path, "r+b")` or `dd conv=notrunc`
        handle.write(newer.read_bytes())
    os.utime(path, ns=(before + 10**9, before + 10**9))  # the rewrite's own mtime, a second on (coarse clocks)
    with pytest.raises(SafetensorsFileError, match="changed while being read"):
        dict(stream)


def test_a_folder_with_both_weight_files_says_which_it_read(tmp_path: Path):
    """A tokenizer folder holding pytorch_model.bin and a model.safetensors of other weights (a
    conversion left beside its source) was read from the .bin without a word (hunt53a tok_load2:
    both_differ). The .bin is still the one read, as documented, and a warning names it and the
    file left unread."""
    import warnings

    from tokenizer import TINY, build, save
    from tokenizer.checkpoint import WeightsChoiceWarning, load

    model = build(TINY, seed=0)
    save(model, tmp_path)
    save_file({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.warns(WeightsChoiceWarning, match="holds both pytorch_model.bin and model.safetensors; reading "
                                                   "pytorch_model.bin, model.safetensors is not read"):
        loaded = load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    (tmp_path / "pytorch_model.bin").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one file: nothing to say
        assert all(float(v.abs().max()) == 0 for v in load(tmp_path).state_dict().values() if v.is_floating_point())
