"""An EXIF block whose IFD0 entries all point at one block of data: Pillow's `Exif.load` copies the
block once per entry (a 1 MB PNG eXIf of 1,000 entries took 1 GB in the rendering process, 1.5 MB
2.4 GB). The decode reads the orientation by a bounded walk of IFD0 (`transforms.exif_ifd`)."""

from __future__ import annotations

import io
import struct
import subprocess
import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image

from transforms.decode import DecodeError, load_image
from transforms.exif_ifd import PILLOW_TIFF_FILE, exif_orientation, ifd0_copied_bytes

ENTRIES, BLOCK = 300, 100_000  # Pillow's load: 30 MB copied from a 100 KB block


def _exif(order: str, entries: int, block: int, orientation: int = 6) -> bytes:
    """IFD0 of an Orientation SHORT and `entries` UNDEFINED entries all pointing at one `block`."""
    endian = "<" if order == "II" else ">"
    head = (b"II*\x00" if order == "II" else b"MM\x00*") + struct.pack(endian + "I", 8)
    data_at = 8 + 2 + 12 * (entries + 1) + 4
    rows = [struct.pack(endian + "HHIHH", 0x0112, 3, 1, orientation, 0)]
    rows += [struct.pack(endian + "HHII", 0x9000 + i, 7, block, data_at) for i in range(entries)]
    return head + struct.pack(endian + "H", entries + 1) + b"".join(rows) + b"\0\0\0\0" + bytes(block)


def _picture() -> Image.Image:
    """64 x 48: its left half red, its right half blue."""
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt, order", [("PNG", "II"), ("WEBP", "MM")])
def test_an_exif_ifd_bomb_is_not_loaded_and_its_orientation_still_turns(fmt: str, order: str):
    """A PNG (eXIf chunk) and a lossless WebP (EXIF chunk), as Pillow writes them with this EXIF: the
    decode holds a few MB, not the 30 MB Pillow's `Exif.load` copies, and the picture is turned by
    its Orientation 6 as it is with an EXIF of that tag alone."""
    def saved(exif: bytes) -> bytes:
        out = io.BytesIO()
        _picture().save(out, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
        return out.getvalue()

    bomb, plain = saved(_exif(order, ENTRIES, BLOCK)), saved(_exif(order, 0, 0))
    tracemalloc.start()
    decoded = load_image(bomb, 32, "squash")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, f"{peak >> 20} MiB"
    assert (decoded.width, decoded.height) == (48, 64)  # turned
    top, bottom = decoded.pixels[:14].reshape(-1, 3).mean(0), decoded.pixels[18:].reshape(-1, 3).mean(0)
    assert top[0] > 250 and top[2] < 5 and bottom[2] > 250 and bottom[0] < 5  # the left half, red, on top
    assert np.array_equal(decoded.pixels, load_image(plain, 32, "squash").pixels)


@pytest.mark.parametrize("order", ["II", "MM"])
def test_orientation_is_read_as_pillow_reads_it(order: str):
    """The walk reads what Pillow's `Exif` reads of an EXIF Pillow writes: each orientation, in either
    byte order, with the JPEG's `Exif\\0\\0` prefix or without; none, when the tag is absent."""
    for value in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = value
        exif[0x010F] = "a camera maker"
        written = exif.tobytes()  # Pillow writes the prefix, little-endian; `_exif` writes `order`
        loaded = Image.Exif()
        loaded.load(written)
        assert exif_orientation(written) == loaded[0x0112] == value
        assert exif_orientation(_exif(order, 2, 16, value)) == value
    assert exif_orientation(_exif(order, 2, 16, 9)) == 1  # out of range
    without = Image.Exif()
    without[0x010F] = "a camera maker"
    assert exif_orientation(without.tobytes()) == 1


def _jpeg_with_split_exif(exif: bytes, piece: int = 60_000) -> bytes:
    """A 64 x 48 JPEG as Pillow writes it, without its JFIF segment (so Pillow's open reads the EXIF
    for a resolution), its EXIF split over APP1 segments as Pillow's open joins them."""
    out = io.BytesIO()
    _picture().save(out, "JPEG", quality=95)
    plain = out.getvalue()
    plain = plain[:2] + plain[4 + int.from_bytes(plain[4:6], "big"):]  # no JFIF APP0
    segments = b"".join(b"\xff\xe1" + (len(part) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + part
                        for part in (exif[i:i + piece] for i in range(0, len(exif), piece)))
    return plain[:2] + segments + plain[2:]


def _tiff_with_ifd_entries(entries: int, block: int) -> bytes:
    """An 8 x 8 grey TIFF whose IFD0 also holds `entries` UNDEFINED entries all pointing at one block."""
    pixels = bytes(range(64))
    tags = [(256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 0),
            (277, 3, 1, 1), (278, 3, 1, 8), (279, 4, 1, len(pixels))]
    count = len(tags) + entries
    block_at = 8 + 2 + 12 * count + 4
    rows = [struct.pack("<HHI", tag, kind, n) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                 struct.pack("<I", block_at + block if tag == 273 else value))
            for tag, kind, n, value in tags]
    rows += [struct.pack("<HHII", 0x9000 + i, 7, block, block_at) for i in range(entries)]
    return b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", count) + b"".join(rows) + bytes(4) + bytes(block) + pixels


def test_an_ifd_bomb_pillow_loads_itself_is_refused_before_it_opens_the_file(monkeypatch):
    """Pillow's JPEG open loads the EXIF's IFD0 (for a resolution, where no JFIF gives one), joined
    from however many APP1 segments it is split over (a 1 MB EXIF of 1,000 entries of one block in
    16 segments took 960 MB); its TIFF open loads IFD0, and its load again (300 entries of a 1 MB
    block: 575 MB). What those loads copy is counted from the entries and weighed against the budget
    before `Image.open` (scaled down here); the same files without the entries decode under it."""
    from transforms import decode

    budget = 30 << 20
    opened, image_open = [], Image.open
    monkeypatch.setattr(decode.Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    jpeg_bomb = _jpeg_with_split_exif(_exif("MM", 200, 200_000, orientation=1))  # 40 MB copied by Pillow's open
    tiff_bomb = _tiff_with_ifd_entries(100, 200_000)  # 20 MB copied, twice
    for bomb, kind in ((jpeg_bomb, "JPEG"), (tiff_bomb, "TIFF")):
        with pytest.raises(DecodeError) as refused:
            load_image(bomb, 32, "squash", max_bytes=budget)
        assert refused.value.reason == "image_too_large"
        assert refused.value.detail.startswith(f"a {kind} needing about 38 MiB to open"), refused.value.detail
    assert not opened
    tracemalloc.start()
    image_open(io.BytesIO(jpeg_bomb)).close()
    assert tracemalloc.get_traced_memory()[1] > 40_000_000  # what was judged: Pillow's open copies it
    tracemalloc.stop()
    jpeg = load_image(_jpeg_with_split_exif(_exif("MM", 0, 0, orientation=6)), 32, "squash", max_bytes=budget)
    assert (jpeg.width, jpeg.height) == (48, 64)
    tiff = load_image(_tiff_with_ifd_entries(0, 0), 8, "squash", max_bytes=budget)
    assert tiff.pixels[..., 0].ravel().tolist() == list(range(64))


def _with_exif_segments(jpeg: bytes, extra: int) -> bytes:
    """`jpeg` (Pillow's: JFIF's APP0, then its EXIF in one APP1 segment) with `extra` APP1 `Exif`
    segments of 10 zero bytes each after that one: Pillow's open joins each to the EXIF before it."""
    at = jpeg.index(b"Exif\x00\x00") - 4
    assert jpeg[at:at + 2] == b"\xff\xe1"
    first = at + 2 + struct.unpack(">H", jpeg[at + 2:at + 4])[0]
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 10) + b"Exif\x00\x00" + bytes(10)
    return jpeg[:first] + segment * extra + jpeg[first:]


def test_a_jpeg_of_many_exif_segments_is_refused_before_pillow_joins_them():
    """Pillow's JPEG open joins each APP1 `Exif` segment to those before it (`info["exif"] += s[6:]`,
    a new bytes object each time): 300,000 tiny ones took 13.6 CPU-s in the rendering process,
    900,000 (17 MB) 187 CPU-s, kept there by a decode time its pixels bound. More than
    `MAX_EXIF_SEGMENTS` are a `too_many_exif_segments` reject, counted before Pillow opens the file;
    a few extra ones, the rare extended form, still decode, turned by the orientation of the EXIF
    Pillow joins from them."""
    import time

    from uvd_pipeline.image_decode import load_image as build_load_image

    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    _picture().save(out, "JPEG", exif=exif.tobytes(), quality=95)
    camera = out.getvalue()
    started = time.process_time()
    with pytest.raises(DecodeError) as refused:
        build_load_image(_with_exif_segments(camera, 50_000), 32, "squash", 10.0, max_pixels=10**8)
    spent = time.process_time() - started
    assert refused.value.reason == "too_many_exif_segments"
    from transforms.pillow_open import MAX_EXIF_SEGMENTS
    assert "50,001 APP1 Exif segments" in refused.value.detail and f"{MAX_EXIF_SEGMENTS}" in refused.value.detail
    assert spent < 1.0, f"{spent:.2f} CPU-s"  # the walk of its segments; Pillow's open alone took 0.35 s
    decoded = build_load_image(_with_exif_segments(camera, 2), 32, "squash", 10.0, max_pixels=10**8)
    assert (decoded.width, decoded.height) == (48, 64)  # turned by its Orientation 6
    assert np.array_equal(decoded.pixels, build_load_image(camera, 32, "squash", 10.0, max_pixels=10**8).pixels)


def _grey_map_jpeg(extra: int) -> bytes:
    """A grey JPEG (an edge or depth map as Pillow saves one) with an EXIF and `extra` more APP1 Exif segments."""
    exif = Image.Exif()
    exif[0x0112] = 1
    out = io.BytesIO()
    Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))).save(out, "JPEG", exif=exif.tobytes())
    return _with_exif_segments(out.getvalue(), extra)


@pytest.mark.parametrize("decoder", ["decode_luma", "decode_gray"])
def test_a_map_of_many_exif_segments_is_refused_before_pillow_joins_them(decoder: str):
    """An annotation map is opened by Pillow for its declared size (`transforms.maps`) with no
    `check_header_held` before it: a grey JPEG of 200,000 tiny Exif segments took 5 CPU-s in the
    build's own process (900,000: 187). `open_input` counts them itself, so a map of more than
    `MAX_EXIF_SEGMENTS` is an annotation reject under the image's reason; a few still decode."""
    import time

    from transforms.maps import MapError
    from uvd_pipeline.image_decode import decode_map

    started = time.process_time()
    with pytest.raises(MapError) as refused:
        decode_map(decoder, _grey_map_jpeg(50_000), 10.0)
    spent = time.process_time() - started
    assert refused.value.reason == "too_many_exif_segments"
    assert "50,001 APP1 Exif segments" in refused.value.detail
    assert spent < 1.0, f"{spent:.2f} CPU-s"
    assert np.array_equal(decode_map(decoder, _grey_map_jpeg(2), 10.0), decode_map(decoder, _grey_map_jpeg(0), 10.0))


def test_the_tokenizer_refuses_an_image_of_many_exif_segments_before_pillow_joins_them():
    """The tokenizer's `decode_image` opened any JPEG with Pillow: 50,000 tiny Exif segments cost
    its open their joining (quadratic). It counts them first, as the build does, and refuses past
    `MAX_EXIF_SEGMENTS` under the build's reason; a few still decode."""
    import time

    from tokenizer.data import UnreadableImage, decode_image

    started = time.process_time()
    with pytest.raises(UnreadableImage) as refused:
        decode_image(_grey_map_jpeg(50_000))
    spent = time.process_time() - started
    assert refused.value.reason == "too_many_exif_segments"
    assert "255 APP1 Exif segments" in refused.value.detail
    assert spent < 0.5, f"{spent:.2f} CPU-s"
    assert np.array_equal(decode_image(_grey_map_jpeg(254)), decode_image(_grey_map_jpeg(0)))


def _exif_segments_past_a_walker_stop(variant: str, extra: int) -> bytes:
    """Pillow's JPEG (`_picture`, no EXIF of its own) with `extra` tiny APP1 Exif segments behind
    something a marker walk may stop at but Pillow's open (`JpegImageFile._open`) walks past,
    joining every one: a junk byte after one Exif segment (it skips what is not 0xFF), an EOI
    straight after the SOI (its `MARKER` table gives EOI no handler), an APP0 whose length is 0 (it
    reads nothing for it and goes on)."""
    out = io.BytesIO()
    _picture().save(out, "JPEG")
    real = out.getvalue()
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 1) + b"Exif\x00\x00A"
    stop = {"junk_byte": segment + b"\x00", "eoi_first": b"\xff\xd9", "empty_app0": b"\xff\xe0\x00\x00"}[variant]
    return real[:2] + stop + segment * extra + real[2:]


@pytest.mark.parametrize("variant", ["junk_byte", "eoi_first", "empty_app0"])
def test_exif_segments_behind_what_pillow_walks_past_are_counted_on_every_path(variant: str):
    """The build's walk (`transforms.headers`) broke on an EOI or an APPn of length 0 before the
    first scan and the tokenizer's (`exif_segments`) on any byte that is not 0xFF too, where
    Pillow's open reads on: 400,000 such segments cost 2.2 CPU-s in `decode_image`, `decode_rgb`
    or the map's open, and the map and the tokenizer took the file. Each now walks as Pillow does:
    `too_many_exif_segments` on all three paths before Pillow opens it."""
    import time

    from tokenizer.data import UnreadableImage, decode_image
    from transforms.maps import MapError
    from uvd_pipeline.image_decode import decode_map
    from uvd_pipeline.image_decode import load_image as build_load_image

    data = _exif_segments_past_a_walker_stop(variant, 50_000)
    started = time.process_time()
    with pytest.raises(DecodeError) as built:
        build_load_image(data, 32, "squash", 10.0, max_pixels=10**8)
    with pytest.raises(MapError) as mapped:
        decode_map("decode_luma", data, 10.0)
    with pytest.raises(UnreadableImage) as tokenized:
        decode_image(data)
    spent = time.process_time() - started
    assert [built.value.reason, mapped.value.reason, tokenized.value.reason] == ["too_many_exif_segments"] * 3
    expected = 50_001 if variant == "junk_byte" else 50_000
    assert f"{expected:,} APP1 Exif segments" in built.value.detail
    assert f"{expected:,} APP1 Exif segments" in mapped.value.detail
    assert spent < 1.0, f"{spent:.2f} CPU-s"
    few = _exif_segments_past_a_walker_stop(variant, 3)
    if variant == "eoi_first":  # a few are no refusal of theirs: libjpeg's own failure on the early EOI
        with pytest.raises(UnreadableImage) as failed:
            decode_image(few)
        assert failed.value.reason != "too_many_exif_segments"
    else:  # a few still decode, as Pillow reads them
        assert decode_image(few).shape == (48, 64, 3)


def test_exif_segments_behind_jpg_markers_pillow_reads_without_a_length_are_counted():
    """Pillow's open reads a JPG0-13 marker (0xFFF0-0xFFFD) as two bytes and goes on; the build's walk
    reads a length after it (JPEG-LS's LSE, 0xFFF8, has one), so `FF F0` then 5,955 tiny Exif segments
    (65,505 bytes, the length `FF E1` declares), 40 times, hid all 238,200 from it: 0.94 CPU-s in
    Pillow's open, then decode_error. The walk that met such a marker counts again as Pillow does."""
    import time

    from transforms.maps import MapError
    from uvd_pipeline.image_decode import decode_map
    from uvd_pipeline.image_decode import load_image as build_load_image

    out = io.BytesIO()
    _picture().save(out, "JPEG")
    real = out.getvalue()
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 1) + b"Exif\x00\x00A"
    assert 5_955 * len(segment) == 0xFFE1
    data = real[:2] + (b"\xff\xf0" + segment * 5_955) * 40 + real[2:]
    started = time.process_time()
    with pytest.raises(DecodeError) as built:
        build_load_image(data, 32, "squash", 10.0, max_pixels=10**8)
    with pytest.raises(MapError) as mapped:
        decode_map("decode_luma", data, 10.0)
    assert [built.value.reason, mapped.value.reason] == ["too_many_exif_segments"] * 2
    assert time.process_time() - started < 0.5
    with pytest.raises(DecodeError) as few:  # a few behind it: libjpeg's own refusal of the marker, not this one
        build_load_image(real[:2] + b"\xff\xf0" + segment * 3 + real[2:], 32, "squash", 10.0, max_pixels=10**8)
    assert few.value.reason == "decode_error"


def _tifffile_with_entries(entries: int, block: int, **written) -> bytearray:
    """An 8 x 8 grey TIFF as tifffile writes it (`written`: its byte order, BigTIFF or not), its IFD0
    also holding one UNDEFINED entry 0x9000 of `block` bytes and `entries` - 1 more of 9 bytes."""
    extra = [(0x9000, 7, block, bytes(block), False)] + [(0x9001 + i, 7, 9, bytes(9), False)
                                                         for i in range(entries - 1)]
    out = io.BytesIO()
    tifffile.imwrite(out, np.arange(64, dtype=np.uint8).reshape(8, 8), photometric="minisblack",
                     extratags=extra if entries else [], **written)
    return bytearray(out.getvalue())


def _bigtiff_with_ifd_entries(entries: int, block: int) -> bytes:
    """An 8 x 8 grey BigTIFF as tifffile writes it (`bigtiff=True`), its IFD0 also holding one
    UNDEFINED entry of `block` bytes and `entries` - 1 more, each then pointed at that block (20-byte
    entries, 8-byte counts and offsets: BigTIFF's layout)."""
    data = _tifffile_with_entries(entries, block, bigtiff=True)
    assert data[:4] == b"II+\x00"
    ifd = struct.unpack_from("<Q", data, 8)[0]
    rows = [ifd + 8 + 20 * i for i in range(struct.unpack_from("<Q", data, ifd)[0])]
    block_at = [struct.unpack_from("<Q", data, at + 12)[0] for at in rows if data[at : at + 2] == b"\x00\x90"]
    for at in rows:
        if struct.unpack_from("<H", data, at)[0] > 0x9000:
            struct.pack_into("<QQ", data, at + 4, block, block_at[0])
    return bytes(data)


def test_a_bigtiff_ifd_bomb_is_refused_before_pillow_opens_it(monkeypatch):
    """A BigTIFF's IFD0 (8-byte offsets, 20-byte entries) was not walked: 100 entries pointing at one
    200 KB block, which Pillow copies for each entry opening it and again loading it (40 MB traced
    here), passed unjudged. Now counted as a classic TIFF's are, refused before `Image.open`; the
    same file without the entries decodes to its pixels."""
    bomb = _bigtiff_with_ifd_entries(100, 200_000)
    assert 0 <= ifd0_copied_bytes(bomb, PILLOW_TIFF_FILE) - 100 * 200_000 < 100  # and tifffile's own ImageDescription
    _tiff_bomb_refused_unopened(monkeypatch, bomb, _bigtiff_with_ifd_entries(0, 0))


def _refused_unopened(monkeypatch, bomb: bytes, size: int, detail: str) -> None:
    """`bomb` is refused `image_too_large` (its detail starting `detail`) before `Image.open` is called."""
    from transforms import decode

    opened, image_open = [], Image.open
    monkeypatch.setattr(decode.Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    with pytest.raises(DecodeError) as refused:
        load_image(bomb, size, "squash", max_bytes=30 << 20)
    assert refused.value.reason == "image_too_large"
    assert refused.value.detail.startswith(detail), refused.value.detail
    assert not opened


def _tiff_bomb_refused_unopened(monkeypatch, bomb: bytes, plain: bytes) -> None:
    """A TIFF IFD bomb of 100 entries of one 200 KB block: Pillow copies the block for each entry twice
    (opening and loading), ours refuses it before the open, and `plain` (the same file without the
    entries) decodes to its gradient."""
    tracemalloc.start()
    Image.open(io.BytesIO(bomb)).load()
    assert tracemalloc.get_traced_memory()[1] > 2 * 100 * 200_000
    tracemalloc.stop()
    _refused_unopened(monkeypatch, bomb, 8, "a TIFF needing about 38 MiB to open")
    decoded = load_image(plain, 8, "squash", max_bytes=30 << 20)
    assert decoded.pixels[..., 0].ravel().tolist() == list(range(64))


def _magick_jpeg_tiff(tmp_path, extra: int) -> bytes:
    """ImageMagick's JPEG-compressed TIFF (`-compress jpeg`, one strip) of a 64 x 48 gradient, its
    strip moved to the file's end with `extra` APP1 `Exif` segments of 10 zero bytes after its start
    of image (libjpeg skips them; Pillow's open of the strip joins them)."""
    path = tmp_path / f"strip{extra}.tif"
    subprocess.run(["convert", "-size", "64x48", "gradient:red-blue", "-compress", "jpeg",
                    "-define", "tiff:rows-per-strip=48", str(path)], check=True)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    rows = {struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i
            for i in range(struct.unpack_from("<H", data, ifd)[0])}
    offset, count = (struct.unpack_from("<I", data, rows[tag] + 8)[0] for tag in (273, 279))
    strip = bytes(data[offset : offset + count])
    assert strip[:2] == b"\xff\xd8"
    segment = b"\xff\xe1" + struct.pack(">H", 2 + 6 + 10) + b"Exif\x00\x00" + bytes(10)
    strip = strip[:2] + segment * extra + strip[2:]
    struct.pack_into("<I", data, rows[273] + 8, len(data))
    struct.pack_into("<I", data, rows[279] + 8, len(strip))
    return bytes(data) + strip


def test_a_jpeg_tiff_strip_of_many_exif_segments_is_refused_as_a_jpeg_is(tmp_path):
    """A JPEG TIFF's strips are opened again by Pillow as JPEGs (`tiff_jpeg`, libjpeg's warnings
    counted), and that open skipped the count of APP1 `Exif` segments every other open makes: a
    strip of 300 decoded, its segments joined by Pillow one by one. Now it is `too_many_exif_segments`,
    as the same JPEG alone; the strip with 2 decodes to ImageMagick's picture."""
    from transforms import jpeg_warnings

    with pytest.raises(DecodeError) as refused:
        load_image(_magick_jpeg_tiff(tmp_path, 300), 16, "squash")
    assert refused.value.reason == "too_many_exif_segments"
    plain = load_image(_magick_jpeg_tiff(tmp_path, 0), 16, "squash").pixels
    assert np.array_equal(load_image(_magick_jpeg_tiff(tmp_path, 2), 16, "squash").pixels, plain)
    assert plain[0, 0, 0] > 200 and plain[-1, 0, 2] > 200  # red at the top, blue at the bottom
    out = io.BytesIO()
    _picture().save(out, "JPEG", exif=Image.Exif().tobytes())
    with pytest.raises(DecodeError) as judged:  # its judgement of damage opens it again: counted there too
        jpeg_warnings.judge(_with_exif_segments(out.getvalue(), 300))
    assert judged.value.reason == "too_many_exif_segments"


def test_a_jpeg_decode_walks_its_segments_once(monkeypatch):
    """The build's decode of a progressive JPEG (ImageMagick's, `-interlace Plane`) walked its
    segments 4 times (its time judgement, the header's cost, the decoder's, the DCT scaling): each
    walk of a progressive file runs to its end. One walk is made and handed down."""
    import subprocess as run

    from transforms import headers
    from uvd_pipeline.image_decode import load_image as build_load_image

    from transforms import jpeg_warnings

    jpeg = run.run(["convert", "-size", "320x240", "plasma:fractal", "-seed", "1", "-interlace", "Plane", "jpg:-"],
                   check=True, capture_output=True).stdout
    jpeg_warnings._calibrated()  # once a process, on its own two JPEGs: not this decode's walks
    walks, walk = [], headers._jpeg_walk
    monkeypatch.setattr(headers, "_jpeg_walk", lambda *a, **k: walks.append(1) or walk(*a, **k))
    decoded = build_load_image(jpeg, 32, "squash", 10.0, max_pixels=10**8)
    assert len(walks) == 1 and decoded.reduced_decode == 4
    monkeypatch.setattr(headers, "_jpeg_walk", walk)
    assert np.array_equal(decoded.pixels, load_image(jpeg, 32, "squash").pixels)


def _heif_with_exif(tmp_path, fmt: str, exif: bytes | None) -> bytes:
    """`_picture()` as an AVIF (heif-enc `-A` from a Pillow JPEG carrying `exif`, or from a Pillow
    PNG's eXIf chunk where it is past a JPEG's 64 KB segment: libheif copies the EXIF into its Exif
    item as it is) or a HEIC (pillow-heif's writer: its Exif item is `exif` as given)."""
    if fmt == "HEIF":
        out = io.BytesIO()
        _picture().save(out, "HEIF", exif=exif, quality=60)
        return out.getvalue()
    source = tmp_path / ("exif.png" if exif and len(exif) > 65_000 else "exif.jpg")
    avif = tmp_path / "exif.avif"
    _picture().save(source, exif=exif or b"")
    subprocess.run(["heif-enc", "-A", str(source), "-o", str(avif)], check=True, capture_output=True)
    return avif.read_bytes()


def _opens(monkeypatch) -> list:
    """The calls of `Image.open` from now on, by any caller, each still opening."""
    opened, image_open = [], Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    return opened


_BIG_EXIF_ITEM = b"Exif\x00\x00" + bytes(_exif("MM", 0, 0)) + bytes(12 << 20)  # a 12 MB Exif item, copied
_HEIF_EXIF_BOMBS = [
    ("AVIF", b"Exif\x00\x00" + _exif("II", 300, 60_000, orientation=1)),  # 18 MB loaded, rewritten by Pillow
    ("HEIF", _BIG_EXIF_ITEM),
]


@pytest.mark.parametrize("fmt, exif", _HEIF_EXIF_BOMBS)
def test_an_avif_or_heif_exif_item_is_judged_before_it_is_opened(tmp_path, monkeypatch, fmt, exif):
    """libavif and libheif read an AVIF's or HEIF's Exif item inside `Image.open`, and Pillow's AVIF
    open loads its IFD0 (and writes it again with the container's orientation): heif-enc's AVIF
    of a 64 KB EXIF of 300 entries pointing at one 60 KB block took 53 MiB opening it, a 30 MB Exif
    item 115 MiB (pillow-heif's HEIC of it 117), judged nowhere. Its size (iinf, iloc) and its
    IFD0 are now judged before the open, as a JPEG's EXIF is: over the budget (scaled down here)
    `image_too_large`; the same file without the EXIF decodes to its picture."""
    from transforms import decode

    bomb = _heif_with_exif(tmp_path, fmt, exif)
    assert bomb[4:8] == b"ftyp" and len(bomb) < len(exif) + 10_000  # the item as written, no larger
    image_open, opened = Image.open, _opens(monkeypatch)
    with pytest.raises(DecodeError) as refused:
        load_image(bomb, 32, "squash", max_bytes=40 << 20)
    assert refused.value.reason == "image_too_large"
    assert refused.value.detail.startswith(f"an {fmt} needing about"), refused.value.detail
    assert "Exif item" in refused.value.detail
    assert not opened
    monkeypatch.setattr(decode.Image, "open", image_open)
    plain = load_image(_heif_with_exif(tmp_path, fmt, None), 32, "squash", max_bytes=40 << 20)
    assert (plain.format, plain.width, plain.height) == (fmt, 64, 48)
    assert plain.pixels[16, 4, 0] > 200 and plain.pixels[16, 28, 2] > 200  # red left, blue right


@pytest.mark.parametrize("fmt, exif", _HEIF_EXIF_BOMBS)
def test_a_map_avif_or_heif_exif_item_is_judged_before_it_is_opened(tmp_path, monkeypatch, fmt, exif):
    """A label, depth or edge map is opened by Pillow for its declared size (`transforms.maps`) with
    no header judgement before it: a HEIC map of a 200 MB Exif item raised the process's peak by
    1,050 MiB inside `Image.open` before OpenCV refused the file. It is judged as an image's is
    (`check_header_held`), `annotation_too_large` over the map's budget (scaled down here) before
    any open; the same file without the EXIF opens to its size."""
    from transforms import maps

    bomb = _heif_with_exif(tmp_path, fmt, exif)
    monkeypatch.setattr(maps, "DEFAULT_MAX_DECODE_BYTES", 40 << 20)
    opened = _opens(monkeypatch)
    for decoder in (maps.decode_gray, maps.decode_label_map, lambda data: maps.decode_depth(data, "png16")):
        with pytest.raises(maps.MapError) as refused:
            decoder(bomb)
        assert refused.value.reason == "annotation_too_large"
        assert refused.value.detail.startswith(f"an {fmt} needing about"), refused.value.detail
        assert "Exif item" in refused.value.detail
    assert not opened
    assert maps._judged(_heif_with_exif(tmp_path, fmt, None)) == (64, 48, "RGB")
    assert len(opened) == 1


@pytest.mark.parametrize("fmt, exif", [("AVIF", _BIG_EXIF_ITEM), *_HEIF_EXIF_BOMBS])
def test_the_tokenizer_judges_an_avif_or_heif_exif_item_before_it_is_opened(tmp_path, monkeypatch, fmt, exif):
    """The tokenizer's `decode_image` opened any AVIF or HEIF (pillow-heif registered) unjudged: a HEIC
    of a 200 MB Exif item raised its peak by 1,016 MiB. Its Exif items are found by the tokenizer's
    own walk of iinf and iloc (`tokenizer.heif_exif`, which finds what the build's finds) and
    judged before the open, `image_too_large` as the build says, over the budget (scaled down
    here); the file decodes to its picture under the default budget, and without its EXIF. An
    AVIF's IFD0 is weighed as the build weighs it, which Pillow's AVIF open loads and rewrites:
    the tokenizer opened heif-enc's AVIF of 3,000 entries of one 1 MB block at +2,865 MiB."""
    from tokenizer.data import UnreadableImage, decode_image
    from tokenizer.heif_exif import heif_exif_bytes
    from transforms.headers import heif_exif_extents

    bomb = _heif_with_exif(tmp_path, fmt, exif)
    item = sum(length for _, length in heif_exif_extents(bomb))
    assert heif_exif_bytes(bomb) == item and abs(item - len(exif)) < 16  # the item as written
    with pytest.raises(DecodeError) as built:
        load_image(bomb, 32, "squash", max_bytes=40 << 20)
    opened = _opens(monkeypatch)
    with pytest.raises(UnreadableImage) as refused:
        decode_image(bomb, max_bytes=40 << 20)
    assert refused.value.reason == built.value.reason == "image_too_large"
    assert f"its Exif item ({item:,} bytes)" in refused.value.detail, refused.value.detail
    needing = [detail.split(" MiB")[0].split("about ")[1] for detail in (refused.value.detail, built.value.detail)]
    assert needing[0] == needing[1], (refused.value.detail, built.value.detail)  # the same weight as the build's
    assert not opened
    whole, built = decode_image(bomb), load_image(bomb, 64, "squash")  # the default budgets: both open it
    assert whole.shape == (built.height, built.width, 3)  # pillow-heif turns the HEIC by its Orientation 6
    assert whole[4, 4, 0] > 250 and whole[-4, -4, 2] > 250  # red at the top left, blue at the bottom right
    plain = decode_image(_heif_with_exif(tmp_path, fmt, None), max_bytes=40 << 20)
    assert plain.shape == (48, 64, 3) and plain[16, 4, 0] > 250 and plain[16, 60, 2] > 250  # red left, blue right


def _tifffile_bomb(byteorder: str, entries: int, block: int) -> bytes:
    """An 8 x 8 grey TIFF as tifffile writes it in `byteorder`, its IFD0 also holding one UNDEFINED
    entry of `block` bytes and `entries` - 1 more, each then pointed at that block."""
    data = _tifffile_with_entries(entries, block, byteorder=byteorder)
    ifd = struct.unpack_from(byteorder + "I", data, 4)[0]
    rows = [ifd + 2 + 12 * i for i in range(struct.unpack_from(byteorder + "H", data, ifd)[0])]
    tag = lambda at: struct.unpack_from(byteorder + "H", data, at)[0]  # noqa: E731
    block_at = [struct.unpack_from(byteorder + "I", data, at + 8)[0] for at in rows if tag(at) == 0x9000]
    for at in rows:
        if tag(at) > 0x9000:
            struct.pack_into(byteorder + "II", data, at + 4, block, block_at[0])
    return bytes(data)


# the first bytes Pillow's TIFF open takes besides II*\0 and MM\0* (TiffImagePlugin.PREFIXES), each
# walked as Pillow walks it: "MM\0+" as a classic TIFF (its third byte is not 0x2B), BigTIFF's offset
# size (bytes 4-5) never read
_ODD_HEADS = {
    "II\\0* (Pillow: 'invalid TIFF header, assume little-endian')": lambda entries: b"II\x00*" + _tifffile_bomb("<", entries, 200_000)[4:],
    "MM*\\0 (Pillow: 'assume big-endian')": lambda entries: b"MM*\x00" + _tifffile_bomb(">", entries, 200_000)[4:],
    "MM\\0+ laid out as a classic TIFF (Pillow reads it so)": lambda entries: b"MM\x00+" + _tifffile_bomb(">", entries, 200_000)[4:],
    "II+\\0, offset size 0": lambda entries: (lambda d: d[:4] + b"\x00\x00" + d[6:])(_bigtiff_with_ifd_entries(entries, 200_000)),
}


@pytest.mark.parametrize("head", list(_ODD_HEADS))
def test_an_ifd_bomb_behind_any_tiff_header_pillow_takes_is_refused(monkeypatch, head):
    """Pillow opens a TIFF by any of its PREFIXES and reads a BigTIFF's IFD offset whatever its
    offset-size field says; the IFD0 walk knew only II*\\0, MM\\0* and BigTIFF of offset size 8, so 100
    entries pointing at one 200 KB block (38 MiB traced in Pillow) passed behind the others. Now
    refused before `Image.open`; the same file without the entries decodes to its pixels."""
    _tiff_bomb_refused_unopened(monkeypatch, _ODD_HEADS[head](100), _ODD_HEADS[head](0))


@pytest.mark.parametrize("head, prefix", [(b"II\x00*", b""), (b"MM*\x00", b""), (b"MM\x00+", b""),
                                          (b"MM\x00*", b"Exif\x00\x00" * 2)])
def test_an_exif_ifd_bomb_behind_any_header_pillow_loads_is_refused(monkeypatch, head, prefix):
    """Pillow's `Exif.load` takes the same odd TIFF headers (MM\\0+ as a classic TIFF) and skips every
    leading `Exif\\0\\0`: a JPEG's EXIF of 200 entries of one 200 KB block so written was loaded by its
    open (40 MB copied), unjudged. Now refused before `Image.open` as the plain header's is."""
    plain = _exif("II" if head[:2] == b"II" else "MM", 200, 200_000, orientation=1)
    bomb = _jpeg_with_split_exif(prefix + head + plain[4:])
    tracemalloc.start()
    Image.open(io.BytesIO(bomb)).close()
    assert tracemalloc.get_traced_memory()[1] > 40_000_000  # Pillow's open loads it
    tracemalloc.stop()
    _refused_unopened(monkeypatch, bomb, 32, "a JPEG needing about 38 MiB to open")


def test_a_bigtiff_shaped_exif_is_neither_judged_nor_turned():
    """A JPEG whose EXIF is BigTIFF-shaped (II+\\0), orientation 6: Pillow's `Exif.load` fails on it
    (its 8-byte head holds no 8-byte offset), browsers read only II*\\0 and MM\\0*, so it is shown as
    stored, and an IFD Pillow never loads costs nothing. It was walked as a BigTIFF file's IFD0:
    the picture turned 90 degrees, its entries counted. An odd header Pillow loads is
    judged, not read for an orientation no viewer reads."""
    big = (b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 2) + struct.pack("<HHQQ", 0x0112, 3, 1, 6)
           + struct.pack("<HHQQ", 0x9000, 7, 300_000, 0) + struct.pack("<Q", 0))
    out = io.BytesIO()
    _picture().save(out, "JPEG", exif=b"Exif\x00\x00" + big)
    with Image.open(io.BytesIO(out.getvalue())) as opened:
        assert opened.getexif().get(0x0112) is None  # what Pillow reads of it
    decoded = load_image(out.getvalue(), 32, "squash")
    assert (decoded.width, decoded.height) == (64, 48)  # as stored
    assert decoded.pixels[16, 4, 0] > 200 and decoded.pixels[16, 28, 2] > 200  # red left, blue right
    assert ifd0_copied_bytes(b"Exif\x00\x00" + big) == 0
    odd = b"II\x00*" + _exif("II", 2, 16)[4:]  # orientation 6
    assert exif_orientation(odd) == 1 and ifd0_copied_bytes(odd) == 2 * 16


def test_an_avif_exif_behind_a_header_libavif_refuses_is_not_judged(tmp_path):
    """libavif takes an AVIF's Exif item only behind II*\\0 or MM\\0* ("Invalid Exif payload"), before
    Pillow loads anything: heif-enc's AVIF of a JPEG whose EXIF of 300 entries of one 60 KB block
    begins II\\0* is refused by the decoder as it stands, its IFD never weighed as Pillow's JPEG
    open (which loads it) has it weighed."""
    bomb = bytearray(_heif_with_exif(tmp_path, "AVIF", b"Exif\x00\x00II\x00*" + _exif("II", 300, 60_000, 1)[4:]))
    at = bytes(bomb).index(b"II\x00*")
    bomb[at - 4 : at] = bytes(4)  # the item's offset to its TIFF header, which heif-enc found none of
    with pytest.raises(DecodeError) as refused:
        load_image(bytes(bomb), 32, "squash", max_bytes=40 << 20)
    assert refused.value.reason != "image_too_large", refused.value.detail


def _meta_last(data: bytes, free: int) -> bytes:
    """pillow-heif's HEIC (ftyp, meta, mdat) with its `meta` moved to the end behind `free` empty
    `free` boxes, its old place a `free` box of its size: every iloc offset still holds."""
    at = int.from_bytes(data[:4], "big")  # past the ftyp
    end = at + int.from_bytes(data[at : at + 4], "big")
    assert data[at + 4 : at + 8] == b"meta" and data[end + 4 : end + 8] == b"mdat"
    hole = (end - at).to_bytes(4, "big") + b"free" + bytes(end - at - 8)
    return data[:at] + hole + data[end:] + b"\0\0\0\x08free" * free + data[at:end]


def test_an_exif_item_behind_more_boxes_than_the_walk_reads_is_refused_unopened(tmp_path, monkeypatch):
    """The walks that find an AVIF's or HEIF's Exif items read at most 4,096 boxes: behind 5,000 empty
    `free` boxes they found none, and a 200 MB item passed every check (the build's load_image
    +602 MiB, a map +628, the tokenizer +603). Where the walk's budget runs out before the boxes
    do, what the open costs cannot be judged: `image_too_large` unopened, under any budget, on
    every path. Behind 4,000 such boxes the item is found and weighed as before; libheif reads
    it whole behind either."""
    from tokenizer.data import UnreadableImage, decode_image
    from tokenizer.heif_exif import heif_exif_bytes
    from transforms import maps
    from transforms.headers import heif_exif_extents

    plain = _heif_with_exif(tmp_path, "HEIF", _BIG_EXIF_ITEM)
    item = sum(length for _, length in heif_exif_extents(plain))
    fewer, hidden = _meta_last(plain, 4000), _meta_last(plain, 5000)
    for data in (fewer, hidden):
        with Image.open(io.BytesIO(data)) as image:
            assert abs(len(image.info["exif"]) - item) < 16  # what the reader copies
    assert sum(length for _, length in heif_exif_extents(fewer)) == heif_exif_bytes(fewer) == item
    assert heif_exif_extents(hidden) is None and heif_exif_bytes(hidden) is None
    opened = _opens(monkeypatch)
    with pytest.raises(DecodeError) as refused:
        load_image(hidden, 32, "squash")
    assert refused.value.reason == "image_too_large" and "cannot be judged" in refused.value.detail
    with pytest.raises(maps.MapError) as refused_map:
        maps.decode_gray(hidden)
    assert refused_map.value.reason == "annotation_too_large" and "cannot be judged" in refused_map.value.detail
    with pytest.raises(UnreadableImage) as refused_tokens:
        decode_image(hidden)
    assert refused_tokens.value.reason == "image_too_large" and "cannot be judged" in refused_tokens.value.detail
    assert not opened
    decoded = load_image(fewer, 32, "squash")
    assert (decoded.format, decoded.width, decoded.height) == ("HEIF", 48, 64)  # turned by its Orientation 6
    assert decode_image(fewer).shape == (64, 48, 3) and opened
