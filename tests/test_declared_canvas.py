"""An AVIF or HEIC whose primary item declares a huge size (its `ispe`, damaged or hostile) is a
`decompression_bomb` judged from its header, as a PNG, GIF or WebP canvas over `max_pixels` is:
libavif refused it inside Pillow's open, which then named no format, and the reject read
`unsupported_format: AVIF: a real image format this build cannot decode` (this build decodes
AVIF: the advice to find a decoder was wrong)."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from transforms.decode import DecodeError, load_image


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """`data` with every `ispe` property saying `width` x `height`."""
    out, at = bytearray(data), data.find(b"ispe")
    while at > 0:
        out[at + 8 : at + 16] = struct.pack(">II", width, height)
        at = data.find(b"ispe", at + 1)
    return bytes(out)


def _made(tmp_path, kind: str) -> bytes:
    if kind == "avif":
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=1",
                        "-frames:v", "1", "-c:v", "libaom-av1", "-still-picture", "1", str(tmp_path / "x.avif")],
                       check=True)
    else:
        if shutil.which("heif-enc") is None:
            pytest.fail("heif-enc (libheif-examples) is needed to make a HEIC")
        subprocess.run(["convert", "-size", "64x48", "gradient:red-blue", str(tmp_path / "x.png")], check=True)
        subprocess.run(["heif-enc", "-q", "50", str(tmp_path / "x.png"), "-o", str(tmp_path / "x.heic")], check=True,
                       capture_output=True)
    return (tmp_path / f"x.{kind}").read_bytes()


@pytest.mark.parametrize("kind", ["avif", "heic"])
def test_an_avif_or_heic_declaring_a_huge_size_is_a_decompression_bomb(tmp_path, kind):
    data = _made(tmp_path, kind)
    assert (load_image(data, 64, "squash").width, load_image(data, 64, "squash").height) == (64, 48)
    with pytest.raises(DecodeError) as refused:
        load_image(_with_size(data, 60_000, 60_000), 64, "squash")
    assert refused.value.reason == "decompression_bomb", refused.value
    assert "60000x60000 exceeds max_pixels" in str(refused.value)
