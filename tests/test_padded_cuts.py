"""Files cut short and then padded with zeros to their full length or past it (aria2c's default
preallocation, a BitTorrent client's file, `curl -C` over a preallocated one, ddrescue's unread
sectors): their container's declared length is met, so only the zeros ending their coded data tell
the cut. An AVIF and a HEIC so cut decoded to garbage without a word (an HEVC NAL unit never ends
in a zero byte, an AV1 OBU ends in its trailing one bit), so did a PNG at some cuts (its image
data's zlib stream then does not end) and a low-quality JPEG (libjpeg decodes the zeros as
coefficients; its rows then do not all decode from the bytes before them), an RLE BMP was
`decode_error`: each is
`truncated`, its detail naming the zeros. Whole files of the same encoders, flat, letterboxed or
padded with zeros after their end, decode as before, and so do whole files of the formats left
out because theirs may end in zeros: a lossless WebP of the fastest setting with a black band; and
a JPEG missing only its EOI, a PNG missing only its IEND (its stream whole), each then zero-padded. Files made by
ImageMagick, heif-enc and cwebp from a real photo."""

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

pytestmark = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("convert", "cwebp", "heif-enc")),
                                reason="needs ImageMagick, cwebp and heif-enc")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("padded")
    photo = tmp / "photo.png"
    _run("convert", str(PHOTO), "-resize", "320x", str(photo))
    _run("heif-enc", "-q", "50", str(photo), "-o", str(tmp / "photo.heic"))
    _run("convert", str(photo), "-quality", "50", str(tmp / "photo.avif"))
    _run("convert", str(photo), "-colors", "256", "-type", "Palette", "-compress", "RLE", f"BMP3:{tmp / 'rle.bmp'}")
    _run("convert", str(photo), "-depth", "16", str(tmp / "photo16.png"))
    _run("convert", str(photo), "-interlace", "PNG", str(tmp / "interlaced.png"))
    _run("convert", str(photo), "-quality", "30", str(tmp / "photo30.jpg"))  # a web thumbnail's quality
    _run("convert", str(photo), "-quality", "30", "-define", "jpeg:restart-interval=2", str(tmp / "restart.jpg"))
    return {name: tmp / name for name in ("photo.heic", "photo.avif", "rle.bmp", "photo.png", "photo16.png",
                                          "interlaced.png", "photo30.jpg", "restart.jpg")}


def _padded(data: bytes, fraction: float, extra: int) -> bytes:
    """Cut at `fraction` of the file, then zeros to its length plus `extra`."""
    cut = data[: int(len(data) * fraction)]
    return cut + bytes(len(data) + extra - len(cut))


@pytest.mark.parametrize("name", ["photo.avif", "photo.heic", "rle.bmp", "photo.png", "photo16.png", "interlaced.png",
                                  "photo30.jpg", "restart.jpg"])
def test_cut_then_padded_is_truncated(files, name):
    """Each was decoded to garbage without a word at some cut (libavif, libde265: 10-76% of its
    pixels wrong; a PNG cut at 99%, its last rows, an interlaced one at 90%), or was `decode_error`
    (libavif's failed colour planes, an RLE BMP's "not enough image data", a PNG's "broken PNG
    file"); all `truncated` now, the detail naming the zeros."""
    data = files[name].read_bytes()
    decode_rgb(data)  # whole, it decodes
    verdicts = {}
    for fraction in (0.3, 0.6, 0.9, 0.99):
        for extra in (0, 4096):  # aria2's length, and a preallocation past it
            try:
                decode_rgb(_padded(data, fraction, extra))
                verdicts[fraction, extra] = "decoded"
            except DecodeError as exc:
                said = "" if "zeros after the cut" in exc.detail else f": {exc.detail}"
                verdicts[fraction, extra] = exc.reason + said
    assert set(verdicts.values()) == {"truncated"}, verdicts


def test_whole_files_with_zeros_decode(files, tmp_path):
    """Whole files, flat black, letterboxed, and whole ones padded with zeros after their end (a
    finished preallocated download), are no cut ones: a HEIC or AVIF (nor one whose Exif item, last
    in its mdat, ends in zeros: only coded image items are judged), an RLE BMP; and the formats not
    judged, each
    whole with zeros after it: a lossless WebP of the fastest setting whose black band's codes are
    zero bits (`cwebp -z 0`, Pillow's `method=0`: its stream ends in thousands of zero bytes), a
    lossy one, a JPEG missing only its EOI, a PNG missing only its IEND (both decode whole)."""
    box = tmp_path / "box.png"
    _run("convert", str(files["photo.png"]), "-gravity", "north", "-background", "black", "-extent", "320x400",
         str(box))  # letterboxed: a black band at its bottom, last in each encoder's data
    black = tmp_path / "black.png"
    _run("convert", "-size", "320x240", "xc:black", "-type", "TrueColor", f"PNG24:{black}")
    made = []
    for source in (box, black):
        for args in (("-lossless",), ("-z", "0"), ("-q", "50")):
            out = tmp_path / f"{source.stem}{''.join(args)}.webp"
            _run("cwebp", *args, str(source), "-o", str(out))
            made.append(out)
        out = tmp_path / f"{source.stem}.heic"
        _run("heif-enc", "-q", "50", str(source), "-o", str(out))
        made.append(out)
        out = tmp_path / f"{source.stem}.avif"
        _run("convert", str(source), "-quality", "50", str(out))
        made.append(out)
    blobs = {path.name: path.read_bytes() for path in (*made, *(files[name] for name in files))}
    fastest = blobs["box-z0.webp"]
    assert len(fastest) - len(fastest.rstrip(b"\x00")) > 1000  # its VP8L data ends in thousands of zero bytes
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    for fmt in ("HEIF", "AVIF"):  # an Exif item padded with zeros: libheif writes it last in the mdat
        out = io.BytesIO()
        Image.open(files["photo.png"]).save(out, fmt, quality=50, exif=exif.tobytes() + bytes(256))
        blobs[f"exif {fmt}"] = out.getvalue()
    assert blobs["exif HEIF"].endswith(bytes(256))
    for name, data in blobs.items():
        expected = decode_rgb(data)
        assert np.array_equal(decode_rgb(data + bytes(4096)), expected), name
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.open(box).convert("RGB").save(jpeg, "JPEG", quality=85)
    Image.open(box).save(png, "PNG")
    wholes = [(jpeg.getvalue(), b"\xff\xd9"), (png.getvalue(), b"\x00\x00\x00\x00IEND\xaeB`\x82")]
    wholes += [(files[name].read_bytes(), b"\xff\xd9") for name in ("photo30.jpg", "restart.jpg")]  # libjpeg reads 8 bytes ahead
    for whole, end in wholes:
        assert whole.endswith(end)
        for padding in (4096, -len(whole) % 512 or 512):  # zeros after it, or to a 512-byte sector
            assert np.array_equal(decode_rgb(whole[: -len(end)] + bytes(padding)), decode_rgb(whole))


def _png(width: int, height: int, stream: bytes, colour: int = 6, depth: int = 16) -> bytes:
    """A PNG of that IHDR whose one IDAT holds `stream`, with no IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", stream))


def test_a_padded_png_past_the_budgets_is_judged_by_them_uninflated():
    """A PNG declaring 100000 x 100000 (or rows past the memory budget), its IDAT a zlib stream of
    zeros that never ends, no IEND, zeros after it: the zeros check inflated 2 MiB of it for 4.5
    CPU-s (16 MiB: 35) before the budgets said `decompression_bomb`; it is not inflated now, and
    the budgets say what they said. Data zlib refuses before the zeros (a wrong checksum) is left
    to the decoder, never called a cut by the zeros."""
    import time
    import zlib

    squeeze = zlib.compressobj(9)  # a full flush forgets the history: its blocks may be repeated
    first = squeeze.compress(bytes(1 << 20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block = squeeze.compress(bytes(1 << 20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    never_ends = first + block * 2000  # 2 GiB of zeros in ~2 MiB, its stream never ended
    for width, height, reason in ((100_000, 100_000, "decompression_bomb"), (13_000, 13_000, "image_too_large")):
        started = time.process_time()
        with pytest.raises(DecodeError) as caught:
            decode_rgb(_png(width, height, never_ends) + bytes(4096))
        assert caught.value.reason == reason and time.process_time() - started < 0.5, (caught.value, width)
    rows = (b"\x00" + bytes(300 * 4)) * 2  # two rows of a 300-wide 8-bit RGBA; its adler32 made wrong
    damaged = _png(300, 2, zlib.compress(rows)[:-4] + b"\x01\x02\x03\x04", colour=6, depth=8) + bytes(4096)
    with pytest.raises(DecodeError) as caught:  # the decoder's word on it (zlib's "incorrect data check")
        decode_rgb(damaged)
    assert "zeros after the cut" not in caught.value.detail, caught.value
