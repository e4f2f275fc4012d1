"""A JPEG-compressed TIFF's strips or tiles judged by libjpeg's own count of its warnings.

libtiff decodes each strip (tile) of a TIFF of compression 7 (scanners', GeoTIFFs', ImageMagick's
`-compress jpeg`) through libjpeg and hands libjpeg's warnings to its own warning handler, which
Pillow leaves silent: a strip damaged inside its entropy-coded data decodes garbled or grey past the
damage without a word. Three bytes changed in ImageMagick's file: 56 of 60 such files built
garbled, where the same damage to a `.jpg` is a `decode_error` (`transforms.jpeg_warnings`).

So each strip the decode read is made a whole JPEG again, as libtiff feeds it to libjpeg (the
tables of its `JPEGTables` tag spliced after its start of image), and decoded at the smallest DCT
scale through Pillow with libjpeg's warnings counted (`jpeg_warnings`): the entropy-coded data is
read whole at any scale. A strip whose count its header does not explain, and that is no camera's
zero padding (`jpeg_warnings.judge`), is damage, and so is one libjpeg refuses: libtiff leaves it
undecoded and Pillow builds the rest (every strip and tile of 40 whole files of ImageMagick and
Pillow, RGB, YCbCr, grey and CMYK, decodes alone without a warning). Paid only by JPEG-compressed TIFFs: about a third of
their decode again (libjpeg's entropy decoding, not its inverse DCT and colour conversion).
"""

from __future__ import annotations

import io

from transforms import jpeg_warnings
from transforms.errors import DecodeError
from transforms.pillow_open import open_input

JPEG_COMPRESSION = 7  # "new-style" JPEG, TIFF Technical Note 2 (6, the old style, is not judged)
_TABLES = 347  # JPEGTables: an abbreviated datastream of the tables every strip shares
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"


def whole_jpeg(piece: bytes, tables: bytes | None) -> bytes:
    """A strip's (tile's) abbreviated JPEG with the shared tables it relies on, as one JPEG file,
    ending with its end of image: libtiff supplies a missing one itself (a writer whose byte count
    leaves it out, or its last byte: each row decodes, libtiff's warning only), so it is no damage."""
    if tables and tables.startswith(_SOI) and tables.endswith(_EOI) and piece.startswith(_SOI):
        piece = tables[:-2] + piece[2:]
    return piece if piece.rstrip(b"\x00").endswith(_EOI) else piece + _EOI


def _warned(jpeg: bytes) -> str | None:
    """libjpeg's verdict on one strip's JPEG: "damaged" or "unused" (`jpeg_warnings.judge`),
    "refused" where libjpeg stops at its data (libtiff then leaves that strip or tile undecoded,
    and Pillow builds the rest without a word: 20 flipped bytes in a tile); None for one that
    decodes without a warning past its header, or camera padding."""
    try:
        with jpeg_warnings.collecting() as decoders:
            # a strip's bytes: never another reader, its Exif segments counted (`too_many_exif_segments`)
            image = open_input(io.BytesIO(jpeg), ("JPEG",))
            image.draft(image.mode, (1, 1))
            image.load()
    except DecodeError:  # refused as the same bytes in a .jpg are
        raise
    except (OSError, SyntaxError, ValueError):  # "broken data stream", an unknown marker
        return "refused"
    except Exception:  # anything else is not the data's doing: not judged
        return None
    damage = jpeg_warnings.scan_warnings(decoders[-1], jpeg) if decoders else None
    if not damage:
        return None
    verdict = jpeg_warnings.judge(jpeg)
    return None if verdict == "padding" else verdict


def damaged_piece(data: bytes, tags, offsets: tuple[int, ...], counts: tuple[int, ...],
                  tiled: bool) -> str | None:
    """For a TIFF of JPEG compression, the detail naming the first strip (tile) libjpeg found
    damaged, else None."""
    tables = tags.get(_TABLES)
    tables = bytes(tables) if isinstance(tables, (bytes, bytearray)) else None
    piece_name = "tile" if tiled else "strip"
    for index, (offset, count) in enumerate(zip(offsets, counts)):
        if not isinstance(offset, int) or not isinstance(count, int) or count <= 0 or offset + count > len(data):
            continue
        verdict = _warned(whole_jpeg(data[offset : offset + count], tables))
        if verdict:
            said = {"unused": "bytes before its end of image the decoder did not use",
                    "refused": "libjpeg refuses its data, and libtiff left it undecoded"}.get(
                verdict, "libjpeg warned of its entropy-coded data (djpeg's \"Corrupt JPEG data\")")
            return f"damaged: JPEG {piece_name} {index + 1} of {len(offsets)}: {said}"
    return None
