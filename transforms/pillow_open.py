"""Pillow's `Image.open` for input bytes, offered only the readers that decode in this process.

Pillow's EPS reader draws an EPS by running Ghostscript, a PostScript interpreter, on it: input
from the web (an EPS saved as `.jpg`, as img2dataset stores any download) reached an interpreter
of a full programming language. A `{ } loop` ran in a process of its own, whose CPU no decode
budget counted, and ran on after the decoding process was killed, adopted by init (two such were
left running after a build). So no input is offered to a reader that runs another program
(`RUNS_A_PROGRAM`); such a file is refused by its first bytes (`image_format.sniff_format`:
`unsupported_format`). Part of `transforms.decode`."""

from __future__ import annotations

from typing import IO, Sequence

from PIL import Image

RUNS_A_PROGRAM = frozenset({"EPS"})  # EpsImagePlugin: Ghostscript (`gs`)


def input_formats() -> list[str]:
    """Every format Pillow reads (its plugins and those registered since, HEIF's), in Pillow's own
    order of trying them, less those that run another program."""
    Image.init()
    return [name for name in Image.ID if name not in RUNS_A_PROGRAM]


def open_input(fp: IO[bytes], formats: Sequence[str] | None = None) -> Image.Image:
    """`Image.open(fp)` through `formats` (default: `input_formats()`), never a reader that runs
    another program whatever `formats` names."""
    allowed = [name for name in (input_formats() if formats is None else formats) if name not in RUNS_A_PROGRAM]
    return Image.open(fp, formats=allowed)
