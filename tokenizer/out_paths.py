"""Output paths a command line writes, judged before any work: one place for the CLIs' rules.

`trainer.generate` (the strip, --codes-out), `trainer.evaluate` (--out) and `tokenizer.evaluate`
(--out, --sheet) wrote their files only after the model was loaded and every image sampled or
measured; a folder given as --out, a strip name without an extension Pillow knows, or a missing
folder for --codes-out then failed with a traceback and the work was lost. Each path is now judged
first: not a folder, its parent a folder (or one that can be made there: missing folders are made
at write time, as every CLI of the project does), and an image's extension one whose format Pillow
writes RGB in (tried on one pixel, so `.xbm`, a 1-bit format, is refused as well as `.txt`).

Lives in `tokenizer/` so `trainer/` may share it (tests/test_layering.py); stdlib only, Pillow
imported where an image path is judged.
"""

from __future__ import annotations

import io
import os


def _parent_problem(path: str) -> str | None:
    """Why the folders above `path` cannot hold it: the nearest existing one is a file or is
    not writable. None when they can (missing folders below it are made at write time)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, so no folder can be made there"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable"
    return None


def image_format_problem(path: str) -> str | None:
    """Why Pillow cannot write an RGB image named `path` (from its extension), else None."""
    from PIL import Image

    Image.init()
    extension = os.path.splitext(path)[1].lower()
    if not extension:
        return "no file extension; name the image format, e.g. .png"
    fmt = Image.registered_extensions().get(extension)
    if fmt is None or fmt not in Image.SAVE:
        return f"Pillow writes no image format with the extension {extension}; use .png (or .jpg, .webp)"
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError) as exc:
        return f"Pillow's {fmt} writer cannot write an RGB image ({exc}); use .png"
    return None


def output_problem(path: str, image: bool = False) -> str | None:
    """Why `path` cannot be written as an output file (`image`: an RGB picture Pillow encodes
    from the extension), else None. Judged from the path alone: nothing is made or written."""
    if not path:
        return "an empty path; give a file name"
    if os.path.isdir(path):
        return "is a folder; give a file name inside it"
    if path.endswith(("/", os.sep)):
        return "ends with a slash; give a file name, not a folder"
    # a file there already that may be written (`/dev/stdout`, a pipe, an earlier result) is written
    # in place: its folder need not be writable
    writable_in_place = os.path.exists(path) and os.access(path, os.W_OK)
    problem = None if writable_in_place else _parent_problem(path)
    if problem is None and image:
        problem = image_format_problem(path)
    return problem


def make_parent(path: str) -> None:
    """Make the folders above `path` (judged writable by `output_problem` before the work)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
