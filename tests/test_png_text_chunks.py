"""A PNG whose text chunks (a comment, XMP, a caption: zTXt, iTXt, tEXt) inflate past Pillow's
1 MiB limit or hold over 64 MiB together was rejected `corrupt_header` ("Decompressed data too large
for PngImagePlugin.MAX_TEXT_CHUNK"), though no pixel depends on them and ImageMagick, browsers and
libpng show the picture. The picture is now decoded without them, as Pillow decodes the same
PNG written without the text; a colour profile (iCCP) past the limit is read and applied (up to
16 MiB, the most a JPEG carries; past that a counted reject), since the colours depend on it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from transforms.decode import DecodeError, decode_rgb


def _photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def _png(info: PngImagePlugin.PngInfo | None = None, **kwargs) -> bytes:
    out = io.BytesIO()
    _photo().save(out, "PNG", pnginfo=info, **kwargs)
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _after_idat(data: bytes, chunk: bytes) -> bytes:
    """`chunk` put before IEND, after the pixels (where ImageMagick writes its tEXt dates)."""
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


BIG = "A" * (3 << 20)  # 3 MiB of text, deflating to a few KiB

CASES = {
    "zTXt comment (Pillow zip=True)": lambda: _png(_info(lambda i: i.add_text("Comment", BIG, zip=True))),
    "iTXt XMP, compressed": lambda: _png(_info(lambda i: i.add_itxt("XML:com.adobe.xmp", BIG, zip=True))),
    "zTXt after the pixels": lambda: _after_idat(_png(), _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(BIG.encode()))),
    "many tEXt over 64 MiB together": lambda: _png(_info(
        lambda i: [i.add_text(f"k{n}", "B" * ((1 << 20) - 8)) for n in range(70)])),
}


def _info(fill) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    fill(info)
    return info


@pytest.mark.parametrize("case", list(CASES))
def test_a_png_with_huge_text_chunks_decodes_as_without_them(case):
    data = CASES[case]()
    reference = np.asarray(Image.open(io.BytesIO(_png())).convert("RGB"))
    assert np.array_equal(np.asarray(_photo()), reference)
    assert np.array_equal(decode_rgb(data), reference), case


def _with_private_tag(profile: bytes, tag: bytes) -> bytes:
    """An ICC profile with one more (private, `zzzz`) tag holding `tag`: how a printer's or camera's
    profile grows past a MiB (its LUTs); lcms, ImageMagick and browsers skip a tag they do not know."""
    count = struct.unpack(">I", profile[128:132])[0]
    table = [struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    body = profile[132 + 12 * count :]
    table = [(sig, offset + 12, size) for sig, offset, size in table]
    offset = (132 + 12 * (count + 1) + len(body) + 3) & ~3
    table.append((b"zzzz", offset, 8 + len(tag)))
    out = bytearray(profile[:128] + struct.pack(">I", count + 1)
                    + b"".join(struct.pack(">4sII", *entry) for entry in table) + body)
    out += bytes(offset - len(out)) + b"zzzz" + bytes(4) + tag
    out[0:4] = struct.pack(">I", len(out))
    out[84:100] = bytes(16)  # no profile ID (its MD5) claimed
    return bytes(out)


_A98 = "/usr/share/color/icc/ghostscript/a98.icc"


def _magick_with_profile(tmp_path, profile: bytes, name: str = "p.png") -> bytes:
    import subprocess

    (tmp_path / "big.icc").write_bytes(profile)
    out = tmp_path / name
    subprocess.run(["convert", "-size", "64x48", "xc:rgb(128,64,200)", "-depth", "8", "-profile",
                    str(tmp_path / "big.icc"), str(out)], check=True)
    return out.read_bytes()


def test_a_png_with_a_colour_profile_past_pillows_limit_decodes_in_its_colours(tmp_path):
    """ImageMagick's PNG of an Adobe RGB profile grown to 1.5 MiB (a private tag of LUT-like bytes)
    was `corrupt_header` ("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK"), where
    ImageMagick, libpng and browsers show it; it decodes in the sRGB ImageMagick converts it to, as
    the same PNG with the plain 564-byte profile does, and the JPEG with the same big profile."""
    import subprocess

    from transforms.decode import load_image

    big = _with_private_tag(open(_A98, "rb").read(), np.random.default_rng(45).bytes(3 << 19))
    data = _magick_with_profile(tmp_path, big)
    assert b"iCCP" in data and len(data) > 1 << 20
    magick = subprocess.run(["convert", str(tmp_path / "p.png"), "-profile", "/usr/share/color/icc/ghostscript/srgb.icc",
                             "-depth", "8", "rgb:-"], check=True, capture_output=True).stdout
    expected = np.frombuffer(magick, np.uint8).reshape(48, 64, 3)
    decoded = load_image(data, 64, "squash")
    assert decoded.colour_profile == "Artifex Software A98 ICC Profile"
    assert np.abs(decoded.pixels[8:56].astype(int) - expected).max() <= 1
    assert decoded.pixels[32, 32].tolist() != [128, 64, 200]  # converted, not read as sRGB
    small = _magick_with_profile(tmp_path, open(_A98, "rb").read(), "small.png")
    assert np.array_equal(decode_rgb(data), decode_rgb(small))
    assert np.array_equal(decode_rgb(data), decode_rgb(_magick_with_profile(tmp_path, big, "p.jpg")))


def test_a_png_whose_colour_profile_inflates_past_what_a_jpeg_can_carry_is_image_too_large(tmp_path):
    """A profile inflating past 16 MiB (255 JPEG APP2 segments: no JPEG carries more) is refused
    `image_too_large` naming the iCCP chunk, inflated no further than that; it never reaches Pillow."""
    data = _magick_with_profile(tmp_path, _with_private_tag(open(_A98, "rb").read(), bytes(255 * 65_519)))
    assert len(data) < 1 << 20  # zeros deflate: a small file
    with pytest.raises(DecodeError) as refused:
        decode_rgb(data)
    assert refused.value.reason == "image_too_large" and "iCCP colour profile" in str(refused.value), refused.value


def _before_idat(data: bytes, chunk: bytes) -> bytes:
    """`chunk` put right after IHDR, before the pixels (where Photoshop and exiftool write XMP)."""
    return data[:33] + chunk + data[33:]


_BIG_COMMENT = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (2 << 20)))  # inflates past 1 MiB


def test_a_map_with_a_huge_text_chunk_is_judged_on_its_budget_before_decoding():
    """A 16-bit depth PNG (OpenCV's, 9000x9000) past the map memory budget, with a zTXt comment
    inflating to 2 MiB: Pillow refused its header (MAX_TEXT_CHUNK), the budget check was skipped
    and OpenCV decoded it (+772 MiB peak RSS over a 768 MiB budget). Now it is refused on its
    header as the same PNG without the comment is."""
    import cv2

    from transforms.maps import MapError, decode_depth

    ok, encoded = cv2.imencode(".png", np.zeros((9000, 9000), np.uint16))
    assert ok
    plain = encoded.tobytes()
    for data in (plain, _before_idat(plain, _BIG_COMMENT)):
        with pytest.raises(MapError) as refused:
            decode_depth(data, "png16")
        assert refused.value.reason == "annotation_too_large", refused.value


def test_a_palette_label_map_with_a_huge_text_chunk_reads_its_indices_and_an_unreadable_png_is_refused():
    """A PASCAL VOC-style palette label PNG with a 2 MiB zTXt comment was `corrupt_annotation`
    (Pillow refused it); it reads the indices it reads without the comment. A PNG whose header
    Pillow cannot read at all is refused, never decoded with no budget judged."""
    from transforms.maps import MapError, decode_label_map

    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 20:50] = 15
    image = Image.fromarray(labels, "P")
    image.putpalette([value for index in range(256) for value in (index * 7 % 256, index * 3 % 256, 0)])
    out = io.BytesIO()
    image.save(out, "PNG")
    plain = out.getvalue()
    expected = decode_label_map(plain)
    assert (expected == labels).all()
    assert (decode_label_map(_before_idat(plain, _BIG_COMMENT)) == expected).all()
    broken = bytearray(plain)
    broken[29] ^= 0xFF  # IHDR's CRC: Pillow refuses the header
    with pytest.raises(MapError) as refused:
        decode_label_map(bytes(broken))
    assert refused.value.reason == "corrupt_annotation", refused.value


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "pHYs"])
def test_a_png_whose_ancillary_chunk_fails_its_crc_decodes_as_libpng_decodes_it(tmp_path, kind):
    """A bit flipped in a PNG's comment (tEXt or zTXt, written by Pillow before the pixels) or its
    pHYs: libpng (ImageMagick) drops the chunk with a warning and shows the picture. A bad-CRC tEXt
    was `not_an_image` ("no image format recognises these bytes") while a bad-CRC zTXt decoded;
    both decode now, to the pixels ImageMagick gives."""
    import subprocess

    info = PngImagePlugin.PngInfo()
    if kind == "tEXt":
        info.add_text("Comment", "a scanned page")
    elif kind == "zTXt":
        info.add_text("Comment", "a scanned page", zip=True)
    data = bytearray(_png(info, dpi=(300, 300)))
    at = data.index(kind.encode())
    assert at < data.index(b"IDAT")
    data[at + 8] ^= 0x01  # a bit of the chunk's body: its CRC no longer matches
    path = tmp_path / "page.png"
    path.write_bytes(bytes(data))
    magick = subprocess.run(["convert", str(path), "rgb:-"], capture_output=True, check=True)
    assert b"CRC error" in magick.stderr
    expected = np.asarray(_photo())
    assert magick.stdout == expected.tobytes()
    assert np.array_equal(decode_rgb(bytes(data)), expected)


def test_a_png_whose_critical_chunk_fails_its_crc_is_a_corrupt_header_never_not_an_image():
    """A bad CRC in IHDR: libpng refuses it too. It is the PNG's `corrupt_header`, naming the
    chunk, not `not_an_image` ("no image format recognises these bytes")."""
    data = bytearray(_png())
    data[29] ^= 0xFF  # IHDR's CRC
    with pytest.raises(DecodeError) as refused:
        decode_rgb(bytes(data))
    assert refused.value.reason == "corrupt_header" and "IHDR" in str(refused.value), refused.value


def _flip_crc(data: bytes, kind: bytes, nth: int = 0) -> bytes:
    """`data` with the CRC of its `nth` `kind` chunk wrong (its last bit flipped)."""
    pos, seen = 8, 0
    while True:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == kind:
            if seen == nth:
                broken = bytearray(data)
                broken[pos + 11 + length] ^= 0x01
                return bytes(broken)
            seen += 1
        pos += 12 + length


def test_an_apng_whose_later_frame_chunk_fails_its_crc_still_decodes_its_whole_first_frame(tmp_path):
    """An ffmpeg APNG with a bad CRC in its second fcTL (after the first frame's IDAT): dropping it
    broke the next fdAT's sequence and Pillow refused the whole file ("APNG contains frame sequence
    errors"), where ImageMagick and ffmpeg show it. The frame chunks are left for Pillow: the first
    frame decodes as it does from the intact file."""
    import subprocess

    path = tmp_path / "a.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
                    "-plays", "0", "-f", "apng", str(path)], check=True)
    whole = path.read_bytes()
    broken = _flip_crc(whole, b"fcTL", 1)
    assert broken.index(b"fcTL", broken.index(b"IDAT")) > 0
    path.write_bytes(broken)
    magick = subprocess.run(["convert", f"{path}[0]", "-depth", "8", "rgb:-"], capture_output=True, check=True)
    first = decode_rgb(broken)
    assert np.array_equal(first, decode_rgb(whole))
    assert magick.stdout == first.tobytes()


def _magick_png(tmp_path, *options: str, prefix: str = "") -> bytes:
    import subprocess

    path = tmp_path / "m.png"
    subprocess.run(["convert", "-size", "64x48", *options, prefix + str(path)], check=True)
    return path.read_bytes()


@pytest.mark.parametrize("made", ["iCCP", "gAMA", "tRNS", "eXIf"])
def test_a_png_whose_pixel_chunk_fails_its_crc_is_a_corrupt_header_naming_it(tmp_path, made):
    """A bad CRC in a chunk the pixels depend on was dropped silently: an ImageMagick Adobe RGB
    PNG (iCCP) decoded as sRGB with no profile ([0, 201, 0] became [0, 200, 0]), a gAMA 1.0 grey
    133 became 60, a palette PNG's tRNS lost its transparency, an eXIf's turn was applied from the
    bad chunk anyway. Each is `corrupt_header`, naming the chunk; the intact file decodes as before."""
    from transforms.decode import _png_exif, load_image

    if made == "iCCP":
        whole = _magick_png(tmp_path, "xc:rgb(0,200,0)", "-depth", "8", "-profile", "/usr/share/color/icc/ghostscript/a98.icc")
        assert load_image(whole, 256, "squash").colour_profile
    elif made == "gAMA":
        whole = _magick_png(tmp_path, "xc:rgb(60,60,60)", "-depth", "8", "-set", "gamma", "1.0", "-define",
                            "png:exclude-chunk=iCCP,sRGB,cHRM,bKGD,tIME,tEXt,zTXt")
        assert decode_rgb(whole)[0, 0].tolist() == [133, 133, 133]
    elif made == "tRNS":
        whole = _magick_png(tmp_path, "xc:rgba(255,0,0,0)", "-fill", "blue", "-draw", "rectangle 0,0 10,10",
                            prefix="PNG8:")
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        out = io.BytesIO()
        Image.new("RGB", (64, 32), (255, 0, 0)).save(out, "PNG", exif=exif.tobytes())
        whole = out.getvalue()
        assert decode_rgb(whole).shape[:2] == (64, 32)  # turned
    assert made.encode() in whole
    decode_rgb(whole)
    broken = _flip_crc(whole, made.encode())
    with pytest.raises(DecodeError) as refused:
        decode_rgb(broken)
    assert refused.value.reason == "corrupt_header"
    assert f"its {made} chunk fails its CRC" in str(refused.value), refused.value
    if made == "eXIf":  # the orientation read from the chunk agrees with the decode: none from a bad one
        assert _png_exif(whole) is not None and _png_exif(broken) is None


def test_a_png_whose_unused_chunk_fails_its_crc_decodes_and_a_label_map_keeps_its_indices(tmp_path):
    """A bad CRC in bKGD or tIME (ImageMagick writes both; Pillow composites nothing on bKGD) is
    dropped as libpng drops it; a palette label map's bad tRNS (no class depends on it) is read
    by its indices, not refused."""
    from transforms.maps import decode_label_map

    whole = _magick_png(tmp_path, "xc:rgb(10,20,30)", "-depth", "8")
    for kind in (b"bKGD", b"tIME"):
        assert np.array_equal(decode_rgb(_flip_crc(whole, kind)), decode_rgb(whole)), kind
    labels = np.zeros((40, 60), np.uint8)
    labels[10:30, 20:50] = 15
    image = Image.fromarray(labels, "P")
    image.putpalette([value for index in range(256) for value in (index * 7 % 256, index * 3 % 256, 0)])
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    assert b"tRNS" in out.getvalue()
    assert (decode_label_map(_flip_crc(out.getvalue(), b"tRNS")) == labels).all()
