"""Whole image files damaged inside their compressed data (a bad sector's 4 KiB of zeros, flipped
bits from a bad copy), made by the world's tools from a real photo: each is a `decode_error`
'damaged', never garbage pixels taken silently, nor `truncated` (a file cut short, which a user
downloads again); a file cut by `head -c` (with a failed download's zeros after it, or without)
stays `truncated`. Judged against independent readers: tifffile (its own zlib) and ImageMagick."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transforms.decode import DecodeError, decode_rgb

PHOTO = Path(__file__).parent / "fixtures" / "coco" / "000000000785.jpg"  # 640 x 425, 133 KB


def _reject(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_rgb(data)
    return caught.value


def _names_the_damaged_piece(damaged: bytes, name: str, which: str, prefix: str) -> None:
    """`damaged` is a `decode_error` whose detail starts with `prefix` and names its strip (a tile
    for the tiled file) `which` ("8 of 27")."""
    reject = _reject(damaged)
    assert reject.reason == "decode_error" and reject.detail.startswith(prefix), (name, reject)
    assert f"{'tile' if name == 'tiled' else 'strip'} {which}" in reject.detail, (name, reject.detail)


def _zeros(data: bytes, at: int) -> bytes:
    return data[:at] + bytes(4096) + data[at + 4096 :]


def _flips(data: bytes, at: int, span: int) -> bytes:
    damaged = bytearray(data)
    for index in np.random.default_rng(1).integers(at, at + span, 20):
        damaged[index] ^= 0xFF
    return bytes(damaged)


def _strips(data: bytes) -> list[tuple[int, int]]:
    """(offset, byte count) of each strip or tile of the first IFD, as Pillow reads them."""
    with Image.open(io.BytesIO(data)) as image:
        tags = image.tag_v2
        offsets, counts = (324, 325) if 324 in tags else (273, 279)
        return list(zip(tags[offsets], tags[counts]))


def _deflate_tiffs(tmp_path: Path) -> dict[str, bytes]:
    """Deflate TIFFs as ImageMagick (one strip, predictor 2), Pillow's libtiff (13 strips), a
    GDAL-style writer (8-row strips, predictor 2) and tifffile (64 x 64 tiles) write them."""
    made = {}
    for name, options in (("magick", []), ("gdal", ["-define", "tiff:predictor=2", "-define",
                                                    "tiff:rows-per-strip=8"])):
        subprocess.run(["convert", str(PHOTO), *options, "-compress", "zip", str(tmp_path / f"{name}.tif")], check=True)
        made[name] = (tmp_path / f"{name}.tif").read_bytes()
    with Image.open(PHOTO) as photo:
        photo.save(tmp_path / "pillow.tif", compression="tiff_adobe_deflate")
        rgb = np.asarray(photo.convert("RGB"))
    made["pillow"] = (tmp_path / "pillow.tif").read_bytes()
    try:
        import tifffile
    except ImportError:  # the tiled case needs tifffile; the others stand without it
        return made
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, photometric="rgb", compression="zlib", tile=(64, 64))
    made["tiled"] = (tmp_path / "tiled.tif").read_bytes()
    # the older Deflate code (32946), which libtiff reads as Adobe's (8)
    tifffile.imwrite(tmp_path / "old_code.tif", rgb, photometric="rgb", compression=32946, rowsperstrip=32)
    made["old_code"] = (tmp_path / "old_code.tif").read_bytes()
    return made


def _tifffile_refuses(data: bytes) -> bool | None:
    """Whether tifffile (inflating each strip whole with zlib) refuses the file; None without it."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        tifffile.imread(io.BytesIO(data))
    except Exception:  # zlib.error: "incorrect data check", "incomplete or truncated stream"
        return True
    return False


def test_deflate_tiff_damaged_inside_a_strip_is_damaged_not_garbage(tmp_path):
    """libtiff stops inflating a strip once its rows are full and never checks that the zlib stream
    ended or its adler32: ImageMagick's zip TIFF with 4 KiB of zeros or 20 flipped bytes in its strip
    decoded to pixels, 17-62% of them off by more than 16 levels, without a word (ImageMagick is
    silent too); tifffile refuses each. Each is now `decode_error` 'damaged', naming the strip; the
    whole files, which tifffile reads, decode as before. Cut ones stay `truncated`: tifffile's
    (its IFD first) cut in its last strip and padded with zeros as a failed download leaves it (as
    long as it declares) was `unsupported_format`, "a sample layout Pillow cannot read", and so was
    ImageMagick's so cut and padded, its IFD (written last) lying in the zeros."""
    made = _deflate_tiffs(tmp_path)
    assert "tiled" not in made or Image.open(io.BytesIO(made["old_code"])).tag_v2[259] == 32946
    for name, data in made.items():
        whole = decode_rgb(data)
        assert whole.shape == (425, 640, 3), name
        assert _tifffile_refuses(data) in (False, None), name
        strips = _strips(data)
        index = len(strips) // 2
        offset, count = strips[index]
        for damaged in (_zeros(data, offset + count // 2 - 2048 * (count > 8192)),
                        _flips(data, offset + count // 4, count // 2)):
            assert _tifffile_refuses(damaged) in (True, None), name
            _names_the_damaged_piece(damaged, name, f"{index + 1} of {len(strips)}", "damaged")
    cut = made["magick"]
    assert _reject(cut[: len(cut) // 2]).reason == "truncated"  # `head -c`: shorter than it declares
    padded = _reject(cut[: len(cut) - 4096] + bytes(65536))  # its IFD (written last) in the zeros: was unsupported_format
    assert padded.reason == "truncated" and "zeros after the cut" in padded.detail, padded
    try:
        import tifffile
    except ImportError:
        return
    first = io.BytesIO()  # tifffile writes its IFD first: a cut download padded with zeros is as long as it declares
    with Image.open(PHOTO) as photo:
        tifffile.imwrite(first, np.asarray(photo), photometric="rgb", compression="zlib", rowsperstrip=16)
    data = first.getvalue()
    for padding in (4096, 65536):
        reject = _reject(data[: len(data) - 4096] + bytes(padding))
        assert reject.reason == "truncated" and "zeros after the cut" in reject.detail, reject
    start = _strips(data)[13][0]  # cut right where a strip starts, zeros to its full length (aria2's preallocation)
    reject = _reject(data[:start] + bytes(len(data) - start))
    assert reject.reason == "truncated" and "strip 14 of" in reject.detail, reject


def _jpeg_tiffs(tmp_path: Path) -> dict[str, bytes]:
    """JPEG-compressed TIFFs (compression 7) as ImageMagick (one RGB strip; 16-row strips; 64 x 64
    tiles) and Pillow's libtiff (YCbCr, 4:2:0, 40-row strips) write them."""
    made = {}
    for name, options in (("magick", []), ("strips", ["-define", "tiff:rows-per-strip=16"]),
                          ("tiled", ["-define", "tiff:tile-geometry=64x64"])):
        subprocess.run(["convert", str(PHOTO), *options, "-quality", "90", "-compress", "jpeg",
                        str(tmp_path / f"{name}.tif")], check=True)
        made[name] = (tmp_path / f"{name}.tif").read_bytes()
    with Image.open(PHOTO) as photo:
        photo.convert("YCbCr").save(tmp_path / "pillow.tif", compression="jpeg", quality=90)
    made["pillow"] = (tmp_path / "pillow.tif").read_bytes()
    return made


def _magick_says_corrupt(path: Path) -> bool:
    said = subprocess.run(["convert", str(path), "null:"], capture_output=True, text=True).stderr
    return "Corrupt JPEG data" in said


def test_jpeg_tiff_damaged_inside_a_strip_is_damaged_not_garbage(tmp_path):
    """libtiff decodes a JPEG TIFF's strips through libjpeg and keeps libjpeg's warnings to itself:
    ImageMagick's `-compress jpeg` file with 3 bytes changed built garbled in 56 of 60 cases, where
    the same damage to a `.jpg` is rejected. Each damaged strip or tile (4 KiB of zeros, 20 flipped
    bytes), which ImageMagick's libjpeg calls corrupt, is now `decode_error` 'damaged', naming it;
    the whole files decode as ImageMagick decodes them."""
    made = _jpeg_tiffs(tmp_path)
    with Image.open(PHOTO) as photo:
        rgb = np.asarray(photo.convert("RGB")).astype(int)
    for name, data in made.items():
        assert Image.open(io.BytesIO(data)).tag_v2[259] == 7, name
        whole = decode_rgb(data).astype(int)
        assert whole.shape == (425, 640, 3) and np.abs(whole - rgb).mean() < 4, name  # quality 90 of the photo
        strips = _strips(data)
        index = len(strips) // 2
        offset, count = strips[index]
        zeros = min(4096, count // 2)
        for damaged in (data[: offset + count // 4] + bytes(zeros) + data[offset + count // 4 + zeros :],
                        _flips(data, offset + count // 4, count // 2)):
            (tmp_path / "damaged.tif").write_bytes(damaged)
            assert _magick_says_corrupt(tmp_path / "damaged.tif"), name
            _names_the_damaged_piece(damaged, name, f"{index + 1} of {len(strips)}", "damaged: JPEG")
    cut = made["strips"]
    assert _reject(cut[: len(cut) // 2]).reason == "truncated"  # `head -c`: shorter than it declares
    for short in (2, 1):  # a writer whose byte counts leave out each strip's end of image, or its last byte
        counted = _strip_counts_shortened(cut, short)  # libtiff supplies it: every row decodes (a review's false reject)
        assert np.array_equal(decode_rgb(counted), decode_rgb(cut)), short


def _strip_counts_shortened(data: bytes, by: int) -> bytes:
    """A little-endian TIFF with each StripByteCounts value of its first IFD `by` bytes less."""
    import struct

    assert data[:2] == b"II"
    out = bytearray(data)
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        tag, kind, count, value = struct.unpack_from("<HHII", data, ifd + 2 + 12 * index)
        if tag == 279:
            size = {3: 2, 4: 4}[kind]
            at = value if count * size > 4 else ifd + 2 + 12 * index + 8
            fmt = "<H" if size == 2 else "<I"
            for k in range(count):
                struct.pack_into(fmt, out, at + k * size, struct.unpack_from(fmt, data, at + k * size)[0] - by)
    return bytes(out)


def test_whole_png_damaged_inside_its_pixels_is_damaged_not_truncated(tmp_path):
    """The photo as ImageMagick's PNG, one byte xor 0x10 at 50, 80 or 95% of the file: zlib refuses
    its data (Pillow's "broken data stream"), which was `truncated`, as if cut, though the file ends
    with its IEND chunk (4 KiB of zeros gave `decode_error` "unrecognized data stream contents").
    `decode_error` 'damaged' now; `head -c` cuts stay `truncated`."""
    png = tmp_path / "photo.png"
    subprocess.run(["convert", str(PHOTO), str(png)], check=True)
    data = png.read_bytes()
    for fraction in (0.3, 0.5, 0.8, 0.95):
        damaged = bytearray(data)
        damaged[int(len(data) * fraction)] ^= 0x10
        if fraction == 0.3:  # "unrecognized data stream contents": `decode_error` already, its detail now says why
            damaged = bytearray(_zeros(data, int(len(data) * fraction)))
        (tmp_path / "damaged.png").write_bytes(bytes(damaged))
        assert subprocess.run(["convert", str(tmp_path / "damaged.png"), "null:"], capture_output=True).returncode
        for after in (b"", b"\r\n"):  # bytes after IEND (a text-mode copy's line end): its chunks walk to IEND
            reject = _reject(bytes(damaged) + after)
            assert reject.reason == "decode_error" and reject.detail.startswith("damaged"), (fraction, after, reject)
    for fraction in (0.5, 0.9):
        for padding in (0, 4096):  # a failed download leaves zeros after the cut
            assert _reject(data[: int(len(data) * fraction)] + bytes(padding)).reason == "truncated", fraction


def test_whole_gif_damaged_inside_its_lzw_data_is_damaged_not_truncated(tmp_path):
    """The photo as ImageMagick's GIF, 4 KiB of zeros or 20 flipped bytes in its LZW data: Pillow's
    "broken data stream" was `truncated`, though the file ends with its trailer (ImageMagick says
    "corrupt image" of the zeros). `decode_error` 'damaged' now; `head -c` cuts stay `truncated`."""
    gif = tmp_path / "photo.gif"
    subprocess.run(["convert", str(PHOTO), str(gif)], check=True)
    data = gif.read_bytes()
    for fraction in (0.3, 0.8):
        at = int(len(data) * fraction)
        (tmp_path / "zeros.gif").write_bytes(_zeros(data, at))
        assert "corrupt image" in subprocess.run(["convert", str(tmp_path / "zeros.gif"), "null:"],
                                                 capture_output=True, text=True).stderr
        for damaged in (_zeros(data, at), _flips(data, at, 2000)):
            reject = _reject(damaged)
            assert reject.reason == "decode_error" and reject.detail.startswith("damaged"), (fraction, reject)
    for fraction in (0.5, 0.9):
        for padding in (0, 4096):
            assert _reject(data[: int(len(data) * fraction)] + bytes(padding)).reason == "truncated", fraction
    # flipped LZW bytes that leave every sub-block's size as it was, a line end after the trailer:
    # its blocks still walk to the trailer
    sizes, at = set(), data.index(b"\x2c")  # the image descriptor (ImageMagick writes no extension first)
    at += 10 + (3 << ((data[at + 9] & 7) + 1) if data[at + 9] & 0x80 else 0) + 1
    while data[at]:
        sizes.add(at)
        at += data[at] + 1
    spots = [i for i in range(int(len(data) * 0.3), int(len(data) * 0.6)) if i not in sizes][::97][:20]
    damaged = bytearray(data)
    for spot in spots:
        damaged[spot] ^= 0xFF
    reject = _reject(bytes(damaged) + b"\n")
    assert reject.reason == "decode_error" and reject.detail.startswith("damaged"), reject


def test_deflate_strip_check_stops_where_the_rows_end():
    """A strip whose zlib stream inflates far past its rows (a bomb: libtiff stops once the rows
    are full) is judged when it passes them, never inflated to its end; a whole one is none."""
    import time
    import zlib

    from transforms.deflate_strips import deflate_damage

    rows = bytes(64 * 1024)
    bomb = zlib.compress(bytes(128 << 20), 1)  # 128 MiB of zeros in 0.6 MB
    data = b"II*\x00" + zlib.compress(rows) + bomb
    whole = (4, len(data) - len(bomb) - 4)
    assert deflate_damage(data, (whole[0],), (whole[1],), False, len(rows)) is None
    spent = []
    for holds in (None, len(rows)):  # without the rows' size it inflates all 128 MiB, and finds it whole
        started = time.process_time()
        judged = deflate_damage(data, (whole[0], sum(whole)), (whole[1], len(bomb)), False, holds)
        spent.append(time.process_time() - started)
    assert judged is not None and judged[0] == "decode_error", judged
    assert judged[1].startswith("damaged: strip 2 of 2") and "inflates past the 65536 bytes" in judged[1]
    assert spent[1] < spent[0] / 5, spent


def _grey_zip_tiff(side: int, stream: bytes, entries: int) -> bytes:
    """A side x side grey TIFF of one strip, Adobe Deflate, whose StripOffsets and StripByteCounts
    list `entries` entries all naming `stream` (libtiff reads the first alone)."""
    import struct

    body = bytearray(b"II*\x00\0\0\0\0") + stream
    if entries == 1:
        strips = [(273, 4, 1, 8), (279, 4, 1, len(stream))]
    else:
        offsets_at = len(body)
        body += struct.pack(f"<{entries}I", *([8] * entries))
        counts_at = len(body)
        body += struct.pack(f"<{entries}I", *([len(stream)] * entries))
        strips = [(273, 4, entries, offsets_at), (279, 4, entries, counts_at)]
    tags = sorted([(256, 3, 1, side), (257, 3, 1, side), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
                   (277, 3, 1, 1), (278, 3, 1, side), *strips])
    ifd = len(body)
    body += struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + bytes(4)
    body[4:8] = struct.pack("<I", ifd)
    return bytes(body)


def test_deflate_strip_check_is_bounded_by_the_strips_libtiff_reads(monkeypatch):
    """Through the whole decode: a strip whose stream inflates to 128 MiB where its rows hold 64 KiB
    (libtiff stops once they are full) is judged damaged when it passes them, in a fraction of a
    full inflate's CPU; and a file listing 1,000 strip entries all naming one stream (libtiff reads
    the one its rows need) decodes as libtiff reads it, its one stream inflated once (each entry
    was: 33 CPU-s for a 23 KiB file of a 4000 x 4000 image libtiff decodes in 0.1)."""
    import time
    import zlib

    from transforms import deflate_strips

    bomb = zlib.compress(bytes(128 << 20), 1)
    started = time.process_time()
    zlib.decompress(bomb)
    whole_inflate = time.process_time() - started
    started = time.process_time()
    reject = _reject(_grey_zip_tiff(256, bomb, 1))
    assert time.process_time() - started < whole_inflate / 4
    assert reject.reason == "decode_error" and "inflates past the 65536 bytes" in reject.detail, reject
    inflaters = []
    real = deflate_strips.zlib_ng.decompressobj
    monkeypatch.setattr(deflate_strips.zlib_ng, "decompressobj", lambda: inflaters.append(1) or real())
    decoded = decode_rgb(_grey_zip_tiff(500, zlib.compress(bytes(500 * 500), 9), 1000))
    assert decoded.shape == (500, 500, 3) and not decoded.any()
    assert len(inflaters) == 1
