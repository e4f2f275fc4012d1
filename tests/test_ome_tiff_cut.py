"""A cut OME-TIFF as tifffile writes it (`ome=True`): the first page's IFD first, then every page's
pixels, the later pages' IFDs, and last the OME-XML the first IFD's ImageDescription points at."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from transforms.decode import DecodeError, load_image


def _planes(count: int, ome: bool, levels: int = 1, **written) -> bytes:
    """tifffile's uncompressed 80 x 64 grey stack of `count` planes (one page each): the first 40,
    the others 200; `written` as tifffile takes it (tiles, BigTIFF), with `levels` - 1 halved
    levels of a pyramid in SubIFDs."""
    planes = np.full((count, 64, 80), 200, np.uint8)
    planes[0] = 40
    out = io.BytesIO()
    with tifffile.TiffWriter(out, ome=ome, bigtiff=written.pop("bigtiff", False)) as tiff:
        tiff.write(planes, photometric="minisblack", subifds=levels - 1, **written)
        for level in range(1, levels):
            tiff.write(planes[:, :: 2**level, :: 2**level], photometric="minisblack", subfiletype=1, **written)
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


@pytest.mark.parametrize("written", [dict(bigtiff=True), dict(tile=(32, 32)), dict(tile=(32, 32), bigtiff=True),
                                     dict(tile=(16, 16), levels=2)])
def test_a_tiled_bigtiff_or_pyramid_ome_tiff_cut_after_its_first_page_is_truncated(written):
    """A tiled OME-TIFF (each page's IFD before its tiles) or a pyramid's (its halved levels in
    SubIFDs, their tiles after the pages', their IFDs after their tiles) cut in its last page, its
    levels or the OME-XML, was `unsupported_format` (a BigTIFF `not_an_image`): 28-65% of the cuts
    after the first page. Later IFDs' own tiles, values and SubIFDs count as read whole now, and a
    BigTIFF cut in the IFD after those held, where the XML starts past it: a cut in any of them is
    `truncated`, as the plain stripped one's are (not one in a writer's few bytes of padding before
    a span, read as a damaged offset is). The whole file decodes to its first plane."""
    data = _planes(4, True, **written)
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        first = tiff.pages[0]
        first_end = max(at + size for at, size in zip(first.dataoffsets, first.databytecounts))
        pages = [page.aspage() for level in tiff.series[0].levels for page in level.pages]
        xml = first.tags["ImageDescription"].valueoffset
        assert tiff.is_ome and tiff.is_bigtiff == bool(written.get("bigtiff")) and len(tiff.series[0].levels) == \
            written.get("levels", 1)
    # in every later page's and level's IFD and in each of its tiles or strips, in the XML, at its end
    cuts = {page.offset + 10 for page in pages[1:]} | {xml + 20, len(data) - 1} | {
        at + size // 2 for page in pages for at, size in zip(page.dataoffsets, page.databytecounts) if at > first_end}
    assert len(cuts) > 5 and min(cuts) > first_end
    assert (load_image(data, 32, "squash").pixels == 40).all()
    reasons = {cut: _reason(data[:cut]) for cut in sorted(cuts)}
    assert set(reasons.values()) == {"truncated"}, {cut: r for cut, r in reasons.items() if r != "truncated"}
