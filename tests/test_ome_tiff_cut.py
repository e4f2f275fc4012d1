"""A cut OME-TIFF as tifffile writes it (`ome=True`): the first page's IFD first, then every page's
pixels, the later pages' IFDs, and last the OME-XML the first IFD's ImageDescription points at."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from transforms.decode import DecodeError, load_image


def _planes(count: int, ome: bool) -> bytes:
    """tifffile's uncompressed 80 x 64 grey stack of `count` planes (one page each): the first 40,
    the others 200."""
    planes = np.full((count, 64, 80), 200, np.uint8)
    planes[0] = 40
    out = io.BytesIO()
    tifffile.imwrite(out, planes, ome=ome, photometric="minisblack")
    return out.getvalue()


def _reason(data: bytes) -> str:
    try:
        load_image(data, 32, "squash")
    except DecodeError as exc:
        return exc.reason
    return "decoded"


@pytest.mark.parametrize("count", [3, 40])
def test_an_ome_tiff_cut_after_its_first_page_is_truncated(count: int):
    """Cut anywhere after its first page's pixels (in the other pages', in their IFDs, in the OME-XML),
    Pillow cannot open it (the ImageDescription runs past the end) and the file was
    `unsupported_format`, "a sample layout Pillow cannot read", where a plain TIFF cut so is
    `truncated`. Its IFD chain running past the end, then the text after it, is a cut's layout: now
    `truncated`. The whole file decodes to its first plane; tifffile's plain stack (each IFD before
    its pixels) cut after its first page still decodes to that page, as before."""
    data = _planes(count, ome=True)
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        first_end = tiff.pages[0].dataoffsets[0] + tiff.pages[0].databytecounts[0]
        later_ifds = tiff.pages[1].offset
        xml = tiff.pages[0].tags["ImageDescription"].valueoffset
        assert tiff.is_ome and first_end < later_ifds < xml < len(data)
    assert (load_image(data, 32, "squash").pixels == 40).all()
    for cut in (first_end + 100, (first_end + later_ifds) // 2, later_ifds + 30, (later_ifds + xml) // 2,
                xml + 20, len(data) - 1):
        assert _reason(data[:cut]) == "truncated", cut
    plain = _planes(count, ome=False)
    with tifffile.TiffFile(io.BytesIO(plain)) as tiff:
        cut = tiff.pages[1].dataoffsets[0] + 100
    assert (load_image(plain[:cut], 32, "squash").pixels == 40).all()


def test_a_whole_ome_tiff_whose_xml_offset_is_damaged_is_not_truncated():
    """The same whole file with its ImageDescription's offset pointed past the end (a damaged field,
    every IFD of its chain in the file) is no cut: not `truncated`."""
    data = bytearray(_planes(3, ome=True))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        field = tiff.pages[0].tags["ImageDescription"].offset + 8  # the entry's value offset
    data[field : field + 4] = (len(data) + 5000).to_bytes(4, "little")
    assert _reason(bytes(data)) not in ("truncated", "decoded")
