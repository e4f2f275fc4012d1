"""Files cut short and then padded with zeros to their full length or past it (aria2c's default
preallocation, a BitTorrent client's file, `curl -C` over a preallocated one, ddrescue's unread
sectors): their container's declared length is met, so only the zeros ending their coded data tell
the cut. A lossless WebP (VP8L), a lossy one's VP8L-compressed alpha, an AVIF and a HEIC so cut
decoded to garbage without a word, so did an icon's PNG, a JPEG at some cuts (and a 16-bit
PNG, which OpenCV decodes); each is `truncated`, its detail naming the zeros. Whole files
of the same encoders, flat, letterboxed or padded with zeros after their end, decode as before.
Files made by cwebp, ImageMagick and heif-enc from a real photo; dwebp and heif-convert decode
the padded files garbled too (the damage is the file's, not our reader's)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transforms.decode import DecodeError, decode_rgb

PHOTO = Path(__file__).parent / "fixtures" / "coco" / "000000000785.jpg"  # 640 x 425

pytestmark = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("convert", "cwebp", "heif-enc", "dwebp")),
                                reason="needs ImageMagick, cwebp, dwebp and heif-enc")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("padded")
    photo, alpha = tmp / "photo.png", tmp / "alpha.png"
    _run("convert", str(PHOTO), "-resize", "320x", str(photo))
    _run("convert", str(photo), "(", "+clone", "-fx", "i/w", ")", "-alpha", "off", "-compose", "CopyOpacity",
         "-composite", str(alpha))
    made = {"lossless.webp": ("cwebp", "-lossless", str(photo)), "alpha.webp": ("cwebp", "-q", "80", str(alpha)),
            "photo.heic": ("heif-enc", "-q", "50", str(photo))}
    for name, command in made.items():
        _run(*command, "-o", str(tmp / name))
    _run("convert", str(photo), "-quality", "50", str(tmp / "photo.avif"))
    _run("convert", str(photo), "-quality", "85", str(tmp / "photo.jpg"))
    _run("convert", str(photo), "-depth", "16", str(tmp / "photo16.png"))
    Image.open(photo).resize((256, 170)).save(tmp / "photo.ico", sizes=[(256, 170)])  # a PNG inside, as Pillow's
    _run("convert", str(photo), "-colors", "256", "-type", "Palette", "-compress", "RLE", f"BMP3:{tmp / 'rle.bmp'}")
    names = (*made, "photo.avif", "photo.jpg", "photo16.png", "photo.ico", "rle.bmp")
    return {name: tmp / name for name in names} | {"photo.png": photo}


def _padded(data: bytes, fraction: float, extra: int, within: bytes = b"") -> bytes:
    """Cut at `fraction` of the file, or of its chunk `within` (a lossy WebP's alpha: cut in its
    VP8 data after it, the file is not judged), then zeros to its length plus `extra`."""
    start, end = 0, len(data)
    if within:
        start = data.index(within) + 8
        end = start + int.from_bytes(data[start - 4 : start], "little")
    cut = data[: start + int((end - start) * fraction)]
    return cut + bytes(len(data) + extra - len(cut))


@pytest.mark.parametrize("name", ["lossless.webp", "alpha.webp", "photo.avif", "photo.heic", "photo.jpg", "photo16.png",
                                  "photo.ico", "rle.bmp"])
def test_cut_then_padded_is_truncated(files, name):
    """Each was decoded to garbage without a word at some cut (a JPEG cut at 90% padded 4 KiB past
    its length: libjpeg's blocks filled from the zeros; an icon's PNG at every cut), or was
    `corrupt_header` (a lossy WebP cut in its alpha), `decode_error` (the 16-bit PNG: Pillow's
    "broken PNG file", libavif's failed colour planes, an RLE BMP's "not enough image data") or
    `truncated` by the decoder's word; all `truncated` now, the detail naming the zeros."""
    data = files[name].read_bytes()
    decode_rgb(data)  # whole, it decodes
    verdicts = {}
    for fraction in (0.3, 0.6, 0.9):
        for extra in (0, 4096):  # aria2's length, and a preallocation past it
            try:
                decode_rgb(_padded(data, fraction, extra, b"ALPH" if name == "alpha.webp" else b""))
                verdicts[fraction, extra] = "decoded"
            except DecodeError as exc:
                said = "" if "zeros after the cut" in exc.detail else f": {exc.detail}"
                verdicts[fraction, extra] = exc.reason + said
    assert set(verdicts.values()) == {"truncated"}, verdicts


def test_other_readers_decode_the_padded_webp_garbled(files, tmp_path):
    """dwebp decodes the cut, padded lossless WebP without an error, its pixels wrong: the zeros
    are damage no decoder reports, so the file's bytes must say it."""
    whole, padded = tmp_path / "whole.ppm", tmp_path / "padded.ppm"
    data = files["lossless.webp"].read_bytes()
    (tmp_path / "padded.webp").write_bytes(_padded(data, 0.9, 0))
    _run("dwebp", str(files["lossless.webp"]), "-ppm", "-o", str(whole))
    _run("dwebp", str(tmp_path / "padded.webp"), "-ppm", "-o", str(padded))
    a, b = (np.asarray(bytearray(path.read_bytes()[-320 * 213 * 3 :])) for path in (whole, padded))
    assert np.mean(np.abs(a.astype(int) - b) > 16) > 0.02


def test_whole_files_with_zeros_decode(files, tmp_path):
    """Whole files of these encoders, flat black, letterboxed, and whole ones padded with zeros
    after their end (a finished preallocated download), are no cut ones; nor a HEIC whose Exif
    item, last in its mdat, ends in zeros (only coded image items are judged), nor an MPO cut in
    its second frame (a JPEG is judged up to its first image's end). A lossy WebP's VP8
    data is not judged: a letterboxed photo's ends in hundreds of zero bytes, whole."""
    box = tmp_path / "box.png"
    _run("convert", str(files["photo.png"]), "-gravity", "south", "-background", "black", "-extent", "320x400",
         str(box))
    black = tmp_path / "black.png"
    _run("convert", "-size", "320x240", "xc:black", "-type", "TrueColor", f"PNG24:{black}")
    made = []
    for source in (box, black):
        for args in (("-lossless",), ("-q", "50")):
            out = tmp_path / f"{source.stem}{len(args)}.webp"
            _run("cwebp", *args, str(source), "-o", str(out))
            made.append(out)
        out = tmp_path / f"{source.stem}.heic"
        _run("heif-enc", "-q", "50", str(source), "-o", str(out))
        made.append(out)
        out = tmp_path / f"{source.stem}.avif"
        _run("convert", str(source), "-quality", "50", str(out))
        made.append(out)
    blobs = {path.name: path.read_bytes() for path in (*made, *(files[name] for name in files))}
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    for fmt in ("HEIF", "AVIF"):  # an Exif item padded with zeros: libheif writes it last in the mdat
        out = io.BytesIO()
        Image.open(files["photo.png"]).save(out, fmt, quality=50, exif=exif.tobytes() + bytes(256))
        blobs[f"exif {fmt}"] = out.getvalue()
    assert blobs["exif HEIF"].endswith(bytes(256))
    out = io.BytesIO()  # an MPO cut in its second frame and padded: its first picture is whole
    photo = Image.open(files["photo.png"]).convert("RGB")
    photo.save(out, "MPO", save_all=True, append_images=[photo.rotate(90)])
    mpo = out.getvalue()
    assert np.array_equal(decode_rgb(mpo[:-2000] + bytes(2000)), decode_rgb(mpo))
    for name, data in blobs.items():
        expected = decode_rgb(data)
        assert np.array_equal(decode_rgb(data + bytes(4096)), expected), name
