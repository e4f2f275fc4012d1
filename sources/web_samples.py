"""What a web sample is made of: which member of a tar sample (or file of a folder) is its
picture, which its caption, metadata and label sidecars, which a photo tool's sidecar that is
never read; a folder's files paired into samples by stem; and the lineage a sample's caption,
`.json` and listing row give its record (a caption cell as text: `caption_text`)."""

from __future__ import annotations

import ast
import re
from typing import Any, Callable

from sources.img2dataset_listing import caption_cell, parse_json
from sources.lineage_text import caption_lineage, jsonable, metadata_lineage
from sources.paths import relative_to_root
from sources.records import twin_groups

# extensions an image member or file may carry; the decoder sniffs content, these only say
# which member of a sample is its picture
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "heic", "heif",
                    "svg", "jxl", "jp2", "ico")
SIDECARS = ("txt", "json")  # a caption and metadata next to an image of the same stem
# a webdataset sample's class label (`ShardWriter({"jpg": ..., "cls": 3})`; webdataset decodes
# these as integers): in a tar or files-layout sample read into the lineage (`sample_classes`), never an
# `unexpected_file`. img2dataset writes none.
LABEL_MEMBERS = ("cls", "cls2", "class")
SAMPLE_SIDECARS = (*SIDECARS, *LABEL_MEMBERS)
# what photo tools write beside each photo, never read (`METADATA_SIDECAR`): Lightroom's, darktable's
# or Capture One's XMP, Apple Photos' edits (`.AAE`); and Google Takeout's `{photo}.json`, also as
# `{photo}.supplemental-metadata.json` (cut short in long names) or `{photo}(1).json`. Their fields
# (places, people's names) are no caption and are never published.
METADATA_SIDECAR = "metadata_sidecar"
TOOL_SIDECARS = {"xmp": "an XMP sidecar (Lightroom's, darktable's: a photo's edits and metadata)",
                 "aae": "Apple Photos' edit sidecar"}
_MEDIA_EXTENSIONS = (*IMAGE_EXTENSIONS, "dng", "cr2", "cr3", "nef", "arw", "raf", "orf", "rw2", "mp4", "mov", "m4v",
                     "3gp", "mkv", "webm", "avi", "mts")
TAKEOUT_JSON = re.compile(r"(?P<photo>.+?\.(?:%s))(?:\.[a-z-]*)?(?:\(\d+\))?\.json" % "|".join(_MEDIA_EXTENSIONS),
                          re.IGNORECASE)


def stem_of(relative: str) -> str:
    """A folder file's pairing stem: the path without its last extension."""
    directory, _, base = relative.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return f"{directory}/{stem}" if directory else stem


def ext_of(relative: str) -> str:
    base = relative.rpartition("/")[2]
    return base.rsplit(".", 1)[1].lower() if "." in base else ""


def folder_groups(files: list[str], root: str) -> list[list[str]]:
    """A folder's files grouped by stem (an image with its caption and metadata), in path order.
    Stems are compared in NFC (`nfc`), as keys are: files whose names differ only in Unicode form
    (one copied from a Mac in NFD beside one in NFC) share a group, where they are told apart:
    a file named in NFC comes first, the one read."""
    groups = twin_groups(files, lambda uri: relative_to_root(root, uri),
                         by=lambda uri: stem_of(relative_to_root(root, uri)))
    return [groups[stem] for stem in sorted(groups)]


def image_members(members: dict[str, Any]) -> list[str]:
    """A sample's picture candidates: image extensions in preference order, then members whose
    last extension is one (`0001.jpg` of `c.0001.jpg`, a key with a dot: webdataset decodes a
    member by its last extension), else any member that is not a sidecar (the decoder judges it)."""
    images = [e for e in IMAGE_EXTENSIONS if e in members]
    dotted = sorted((e for e in members if "." in e and e.rsplit(".", 1)[1] in IMAGE_EXTENSIONS),
                    key=lambda e: (IMAGE_EXTENSIONS.index(e.rsplit(".", 1)[1]), e))
    return images + dotted or sorted(e for e in members if e not in SAMPLE_SIDECARS)[:1]


def sample_pictures(images: list[str]) -> tuple[list[str], list[str]]:
    """(the pictures read, the twins that are `duplicate_key` rejects) of a sample's `image_members`.
    Members named with a second extension (`doc.0.jpg`, `doc.1.png` of an interleaved document,
    MMC4- or OBELICS-style; `pair.left.png`, `pair.right.png` of a stereo pair) are each a picture
    of its own, as webdataset's users name several images of one sample, and so is a cover beside
    them (`mix.jpg` with `mix.0.jpg`: webdataset reads all three). Twins without a second extension
    (`x.jpg` beside `x.png`) are two encodings of the sample's one picture: the first is read."""
    plain = [e for e in images if "." not in e]
    if len(images) < 2 or len(plain) == len(images):
        return images[:1], images[1:]
    return plain[:1] + [e for e in images if "." in e], plain[1:]


def sample_classes(members: dict[str, Any]) -> dict[str, dict[str, int | str]]:
    """{"classes": {member: label}} of a sample's `LABEL_MEMBERS` (an integer, as webdataset
    decodes it, or else the text), or {} without any."""
    labels: dict[str, int | str] = {}
    for ext in LABEL_MEMBERS:
        if isinstance(members.get(ext), bytes):
            text = members[ext].decode("utf-8", errors="replace").strip()
            labels[ext] = int(text) if re.fullmatch(r"-?\d{1,18}", text) else text[:200]
    return {"classes": labels} if labels else {}


def sample_lineage(text: bytes | None, meta: bytes | None, row: dict[str, Any] | None = None,
                   value: Callable[[Any], Any] = jsonable, txt_file: bool = True,
                   text_bytes: int | None = None) -> dict:
    """Caption and URL at the top (as before), and everything img2dataset recorded under
    `img2dataset`: its parquet row, overlaid by the sample's `.json`; each recorded value as
    `value` makes it (`lineage_text.lineage_value`: capped), the whole within
    `lineage_text.MAX_METADATA_BYTES`, the caption within `MAX_CAPTION_BYTES` (`text_bytes`: what
    its `.txt` held where only its head was read). A `.txt` (`txt_file`) of a sample without
    `.json` that is one bytes literal is the caption it spells (`bytes_literal`)."""
    lineage: dict = {}
    if text:
        literal = bytes_literal(text) if meta is None and txt_file and text_bytes is None else None
        lineage.update(_caption(caption_cell(text if literal is None else literal), text_bytes))
    parsed = parse_json(meta)
    recorded = {**(row or {}), **parsed}
    for field in ("url", "caption", "original_width", "original_height"):
        if recorded.get(field) is not None and field not in lineage:
            made = value(recorded[field])
            if field == "caption" and isinstance(recorded[field], str) and not isinstance(made, str):
                lineage.update(_caption(recorded[field]))  # past the value cap: its head, not a mark
            else:
                lineage[field] = made
    if recorded:
        lineage.update(metadata_lineage("img2dataset", recorded, value))
        width, height = recorded.get("width"), recorded.get("height")
        original = (recorded.get("original_width"), recorded.get("original_height"))
        if width and height and all(original) and (width, height) != original:
            lineage["resized_from"] = [int(original[0]), int(original[1])]  # type: ignore[arg-type]
    return lineage


def _caption(text: str, stored_bytes: int | None = None) -> dict[str, Any]:
    """`lineage_text.caption_lineage`, a blank caption kept as "" (as it always was: a `.txt` of
    spaces stands, the `.json`'s caption does not take its place)."""
    return caption_lineage(text, stored_bytes) or {"caption": ""}


# img2dataset 1.47's files format writes a caption of a `binary` column (a URL list read from a
# non-UTF-8 CSV) as `str(bytes)`, `b'caf\xe9 au lait'`, and no `.json` (its writer failed there):
# read back as the bytes it spells, at most this many characters (a longer `.txt` is text as it is)
MAX_BYTES_LITERAL_CHARS = 1 << 16
_BYTES_LITERAL = re.compile(rb"b(['\"]).*\1", re.DOTALL)


def bytes_literal(text: bytes) -> bytes | None:
    """The bytes a `.txt` spells when it is exactly one Python bytes literal (`b'...'` or
    `b"..."`, parsed with `ast.literal_eval`: no code runs), else None."""
    if len(text) > MAX_BYTES_LITERAL_CHARS or not _BYTES_LITERAL.fullmatch(text):
        return None
    try:
        value = ast.literal_eval(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, bytes) else None


def caption_text(text: Any) -> str | None:
    """A caption cell as text: of several captions (COCO's five) the first, blank as none; bytes
    (a `binary` column) as `utf8_text` makes them (they were their Python repr, `b'...'`)."""
    if isinstance(text, list):
        text = next((t for t in text if isinstance(t, str) and t.strip()), None)
    text = utf8_text(text)
    return str(text).strip() or None if text is not None else None


def utf8_text(value: Any) -> Any:
    """Bytes (a caption cell of a `binary` column) as `caption_cell` reads them; any other
    value as it is. img2dataset keeps a URL list's caption column as pyarrow's CSV reader typed it:
    `binary` when one caption of a Latin-1 CSV is not UTF-8, and every caption was lost (bytes are
    no lineage value); then the Latin-1 one was lost (None) where a `.txt` kept it with U+FFFD."""
    if isinstance(value, (bytes, bytearray)):
        return caption_cell(bytes(value))
    return value

