"""What `tokenizer.fit` and `tokenizer.evaluate` read: files that are no image file (a pipe, a link
to a device, a sparse file or tar member over the cap), formats by name, 16-bit and float pixels,
and checkpoints whose tensors the loader did not foresee. Every file is made by a real tool (mkfifo,
`tar -S`, Pillow, ImageMagick's, in tests/fixtures/magick) and read back through the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenizer import evaluate as evaluate_cli
from tokenizer import fit as fit_cli
from tokenizer.checkpoint import CheckpointError, load, save
from tokenizer.config import TINY
from tokenizer.data import IMAGE_SUFFIXES, ImageReader, ImageRef, decode_image, find_images, iter_images
from tokenizer.image_files import MAX_IMAGE_FILE_BYTES
from tokenizer.model import build

MAGICK = Path(__file__).resolve().parent / "fixtures" / "magick"
CAP = MAX_IMAGE_FILE_BYTES


def _photo(path: Path, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _hostile_folder(folder: Path) -> Path:
    """One real PNG (and its caption, and a notes.md) beside a FIFO named pipe.png, a link to /dev/zero named zero.jpg, a sparse
    file of the cap plus one byte named big.png, a FIFO named shard.tar and a GNU sparse tar
    (`tar -S`) of a PNG and a member declaring 4 GiB."""
    folder.mkdir()
    _photo(folder / "one.png")
    (folder / "one.txt").write_text("a caption")
    (folder / "notes.md").write_text("not an image")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "shard.tar")
    os.symlink("/dev/zero", folder / "zero.jpg")
    with open(folder / "big.png", "wb") as handle:
        handle.truncate(CAP + 1)
    src = folder.parent / "src"
    src.mkdir()
    _photo(src / "small.png", seed=1)
    with open(src / "huge.png", "wb") as handle:
        handle.truncate(4 << 30)
    subprocess.run(["tar", "-S", "-C", str(src), "-cf", str(folder / "sparse.tar"), "small.png", "huge.png"],
                   check=True)
    shutil.rmtree(src)
    return folder


@pytest.mark.timeout(60)
def test_pipes_devices_and_files_over_the_cap_are_counted_never_read(tiny_tokenizer, tmp_path, capsys):
    """A FIFO named pipe.png blocked `tokenizer.evaluate` and `fit` for good, a link to /dev/zero
    was read until MemoryError, and a 4 GiB GNU sparse member in a 10 KB tar was inflated whole:
    each is now a counted `skipped` with the build's reason, never opened or read."""
    folder = _hostile_folder(tmp_path / "data")
    assert os.path.getsize(folder / "sparse.tar") < 64 << 10
    left_out: list = []
    refs = find_images(str(folder), left_out)
    assert refs == [ImageRef(str(folder / "one.png")), ImageRef(str(folder / "sparse.tar"), "small.png")]
    assert {str(ref): reason for ref, reason, _ in left_out} == {
        str(folder / "big.png"): "file_too_large", str(folder / "notes.md"): "unexpected_file",
        str(folder / "pipe.png"): "not_a_file",
        str(folder / "shard.tar"): "not_a_file", f"{folder / 'sparse.tar'}:huge.png": "member_too_large",
        str(folder / "zero.jpg"): "not_a_file"}
    out = tmp_path / "eval.json"
    assert evaluate_cli.main(["--checkpoint", str(tiny_tokenizer), "--data", str(folder), "--out", str(out),
                              "--device", "cpu"]) == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 2
    assert summary["skipped"] == {"file_too_large": 1, "member_too_large": 1, "not_a_file": 3, "unexpected_file": 1}
    err = capsys.readouterr().err
    assert f"skipped {folder / 'notes.md'}: unexpected_file: not an image or a tar by its name" in err
    assert f"skipped {folder / 'pipe.png'}: not_a_file: a pipe, not an image file" in err
    assert f"skipped {folder / 'zero.jpg'}: not_a_file: a character device, not an image file" in err
    assert f"skipped {folder / 'sparse.tar'}:huge.png: member_too_large: {4 << 30} bytes, over the" in err
    # the reader refuses them too when handed them (a path swapped after the listing)
    skipped: list = []
    assert list(iter_images([ImageRef(str(folder / "pipe.png")), ImageRef(str(folder / "big.png")),
                             ImageRef(str(folder / "sparse.tar"), "huge.png")], 64, skipped)) == []
    assert [reason for _, reason, _ in skipped] == ["not_a_file", "file_too_large", "member_too_large"]
    # fit: the same files left out, each named on stderr and counted in its start record
    run = tmp_path / "run"
    assert fit_cli.main(["--data", str(folder), "--out", str(run), "--preset", "tiny", "--batch-size", "2",
                         "--crop", "32", "--max-steps", "1", "--threads", "1", "--device", "cpu"]) == 0
    start = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["images"] == 2
    assert start["skipped"] == {"file_too_large": 1, "member_too_large": 1, "not_a_file": 3, "unexpected_file": 1}
    assert f"skipped {folder / 'shard.tar'}: not_a_file: a pipe, not an image file" in capsys.readouterr().err


def test_the_image_file_cap_is_the_builds():
    import sources.records
    import sources.web_samples

    assert CAP == sources.records.MAX_INPUT_FILE_BYTES
    assert IMAGE_SUFFIXES == tuple(f".{e}" for e in sources.web_samples.IMAGE_EXTENSIONS)


def test_every_format_the_build_reads_is_offered_whatever_the_case_of_its_name(tmp_path):
    """TIFF, GIF, HEIC, AVIF and JPEG 2000 files (and `.TAR`, `.PNG`) were passed over without a word:
    they are read as the build reads them, and a file named as no image is counted `unexpected_file`
    (a caption `.txt` beside an image is not; the CLIs' counts: the test above)."""
    folder = tmp_path / "formats"
    folder.mkdir()
    pixels = _photo(folder / "a.PNG")
    image = Image.fromarray(pixels)
    for name, options in (("b.tif", {}), ("c.TIFF", {"compression": "tiff_lzw"}), ("d.gif", {}),
                          ("e.avif", {"quality": 100}), ("f.jp2", {"irreversible": False}), ("g.heic", {"quality": -1})):
        image.save(folder / name, **options)
    shard = tmp_path / "shard"
    shard.mkdir()
    image.save(shard / "0.00.webp", lossless=True)
    (shard / "0.json").write_text("{}")
    subprocess.run(["tar", "-C", str(shard), "-cf", str(folder / "s.TAR"), "0.00.webp", "0.json"], check=True)
    (folder / "a.txt").write_text("a caption")
    (folder / "notes.md").write_text("not an image")
    left_out: list = []
    refs = find_images(str(folder), left_out)
    assert [Path(ref.path).name + (f":{ref.member}" if ref.member else "") for ref in refs] == [
        "a.PNG", "b.tif", "c.TIFF", "d.gif", "e.avif", "f.jp2", "g.heic", "s.TAR:0.00.webp"]
    assert [(Path(ref.path).name, reason) for ref, reason, _ in left_out] == [("notes.md", "unexpected_file")]
    decoded = {str(ref): image for ref, image in iter_images(refs, 64)}
    lossless = [ref for ref in refs if Path(ref.path).suffix.lower() in (".png", ".tif", ".tiff", ".jp2", ".tar")]
    for ref in lossless:  # the same pixels back, centre-cropped and resized alike
        assert np.array_equal(decoded[str(ref)], decoded[str(refs[0])]), ref
    assert len(decoded) == 8
    assert find_images(str(folder / "*")) == refs  # a glob finds the same


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


def test_a_shard_over_the_image_cap_hard_links_and_labels_are_read_as_the_build_reads_them(tmp_path):
    """The 256 MiB cap is on one image, never on a shard (rev57g: a 300 MB img2dataset-sized tar was
    `file_too_large` whole, and `evaluate` found no image). GNU tar's hard link to an earlier member
    is read as that member's bytes, as the build reads it; a webdataset `.cls` label beside an image
    is part of its sample, never a skipped file."""
    src = tmp_path / "src"
    src.mkdir()
    pixels = _photo(src / "a.png")
    (src / "a.cls").write_text("3")
    os.link(src / "a.png", src / "b.png")
    shard = tmp_path / "big.tar"
    subprocess.run(["tar", "-C", str(src), "-cf", str(shard), "a.png", "a.cls", "b.png"], check=True)
    os.truncate(shard, CAP + (44 << 20))  # zero blocks past the archive's end: a shard of 300 MiB
    left_out: list = []
    refs = find_images(str(shard), left_out)
    assert refs == [ImageRef(str(shard), "a.png"), ImageRef(str(shard), "b.png")] and left_out == []
    reader = ImageReader()
    try:
        images = [reader.read(ref) for ref in refs]
    finally:
        reader.close()
    assert len(images) == 2 and all(np.array_equal(image, pixels) for image in images)
