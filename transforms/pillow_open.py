"""Pillow's `Image.open` for input bytes, offered only the readers that decode in this process.

Pillow's EPS reader draws an EPS by running Ghostscript, a PostScript interpreter, on it: input
from the web (an EPS saved as `.jpg`, as img2dataset stores any download) reached an interpreter
of a full programming language. A `{ } loop` ran in a process of its own, whose CPU no decode
budget counted, and ran on after the decoding process was killed, adopted by init (two such were
left running after a build). So no input is offered to a reader that runs another program
(`RUNS_A_PROGRAM`); such a file is refused by its first bytes (`image_format.sniff_format`:
`unsupported_format`). Nor to Pillow's IPTC/NAA reader (`OPENS_ANY_READER`), which opens the image
data it wraps with every reader: an EPS inside one still ran Ghostscript (80 s, to the decode limit).
And Ghostscript is switched off for any process that imports this module
(`EpsImagePlugin.gs_binary = False`: Pillow's `Ghostscript` then raises OSError "Unable to locate
Ghostscript on paths"), so no nested open, of any reader, can run it. A JPEG of more than
`MAX_EXIF_SEGMENTS` APP1 `Exif` segments is refused here too (`too_many_exif_segments`), before
Pillow's open joins them, so that no caller (an annotation map's, a strip's) can open one unchecked.
Part of `transforms.decode`."""

from __future__ import annotations

from typing import IO, Sequence

from PIL import EpsImagePlugin, Image

from transforms.errors import DecodeError
from transforms.headers import jpeg_app_segments

RUNS_A_PROGRAM = frozenset({"EPS"})  # EpsImagePlugin: Ghostscript (`gs`)
# IptcImagePlugin: registered with no test of a file's first bytes, so tried on every input; its load
# opens the image data it wraps with `Image.open` and no formats. No web image is a bare IPTC/NAA
# record (the IPTC metadata of a JPEG or TIFF is read by their own readers, never this one).
OPENS_ANY_READER = frozenset({"IPTC"})
NEVER_OFFERED = RUNS_A_PROGRAM | OPENS_ANY_READER

EpsImagePlugin.gs_binary = False  # for the whole process: `has_ghostscript()` is False, `gs` never looked up


# APP1 `Exif` segments a JPEG may have before its first scan. Pillow's open joins each to those before
# it (`info["exif"] += s[6:]`: a new bytes object, every byte so far copied again), so their time grows
# with their number squared: 300,000 tiny ones took 13.6 CPU-s, 900,000 (17 MB) 187 CPU-s, in a
# rendering process whose decode time the pixels bound; 1,024 full ones (64 MiB) 20.6 CPU-s. A camera
# writes one, of at most 64 KiB; the rare extended form a few. At 255 full ones (16 MiB) the join
# takes 0.2 CPU-s.
MAX_EXIF_SEGMENTS = 255


def check_exif_segments(exif_segments: int) -> None:
    """Refuse a JPEG of more than `MAX_EXIF_SEGMENTS` APP1 `Exif` segments (`too_many_exif_segments`)."""
    if exif_segments > MAX_EXIF_SEGMENTS:
        raise DecodeError("too_many_exif_segments", f"a JPEG of {exif_segments:,} APP1 Exif segments before its "
                                                    f"first scan, over {MAX_EXIF_SEGMENTS} (a camera writes one): "
                                                    "Pillow's open joins each to all those before it")


def input_formats() -> list[str]:
    """Every format Pillow reads (its plugins and those registered since, HEIF's), in Pillow's own
    order of trying them, less those never offered an input (`NEVER_OFFERED`)."""
    Image.init()
    return [name for name in Image.ID if name not in NEVER_OFFERED]


def open_input(fp: IO[bytes], formats: Sequence[str] | None = None, *, segments_counted: bool = False) -> Image.Image:
    """`Image.open(fp)` through `formats` (default: `input_formats()`), never a reader of
    `NEVER_OFFERED` whatever `formats` names; a JPEG's Exif segments counted first
    (`check_exif_segments`: `DecodeError` past `MAX_EXIF_SEGMENTS`), whoever the caller, unless
    `segments_counted`: the caller's own header judgement (`decode_budget.check_header_held`) has
    just walked them, and a second walk copied the file's bytes again on every decode."""
    start = fp.tell()
    if not segments_counted and fp.read(3) == b"\xff\xd8\xff":
        fp.seek(start)
        check_exif_segments(jpeg_app_segments(fp.read()).exif)
    fp.seek(start)
    allowed = [name for name in (input_formats() if formats is None else formats) if name not in NEVER_OFFERED]
    return Image.open(fp, formats=allowed)
