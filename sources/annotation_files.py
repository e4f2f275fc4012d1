"""Read annotation files (JSON, gzipped JSON) defensively, and check the values inside them.

An annotation file is input like any image: it can be huge, nested a million deep, or hold a
string where a number belongs. Whole-file problems raise `AnnotationFileError`, one line that
names the file and, for a bad entry that cannot be attributed to any image, its index.
Entry-level checks (`entry_problem` helpers) return a short text instead, so that a reader can
reject that entry's own image or pair and keep the rest. No message quotes the file's bytes.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from typing import Any

from sources import fsio

# COCO train's instances JSON is 448 MB; a CO3D frame_annotations.jgz expands to far less
MAX_ANNOTATION_BYTES = 512 << 20
GUNZIP_STEP = 16 << 20  # bytes inflated at a time
BAD_ANNOTATION = "bad_annotation"  # the reject reason of an entry that fails its checks


class AnnotationFileError(ValueError):
    """An annotation file that cannot be used at all; the message names the file."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"annotation file {uri}: {problem}")
        self.uri = uri
        self.problem = problem


def _read_capped(uri: str, limit: int) -> bytes:
    try:
        with fsio.open_file(uri) as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise AnnotationFileError(uri, f"cannot be read ({type(exc).__name__})") from None
    if len(data) > limit:
        raise AnnotationFileError(uri, f"larger than {limit} bytes (the limit of one annotation file)")
    return data


def _gunzip_capped(uri: str, data: bytes, limit: int) -> bytes:
    """Decompress a gzip file as gzip itself reads it, without letting a small bomb expand past
    `limit`. Every member is read (`cat a.gz b.gz` is one file to gzip and Python, and its
    second member's frames used to vanish); one that ends before its trailer is truncated (its
    CRC never checked: it used to pass); zero bytes after the last member are padding."""
    out = bytearray()
    pending = data
    try:
        while True:
            pending = _inflate_member(uri, pending, out, limit)
            if not pending.strip(b"\0"):
                return bytes(out)
    except zlib.error:
        raise AnnotationFileError(uri, "is not a valid gzip stream") from None


def _inflate_member(uri: str, data: bytes, out: bytearray, limit: int) -> bytes:
    """Inflate one gzip member onto `out` (in steps, so that zlib's own output buffers never
    hold more than a step beyond what is kept); returns the bytes after it."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    pending = data
    while True:
        out += inflater.decompress(pending, GUNZIP_STEP)
        if len(out) > limit:
            raise AnnotationFileError(uri, f"expands past {limit} bytes (the limit of one annotation file)")
        pending = inflater.unconsumed_tail
        if not pending:
            if inflater.eof or not (tail := inflater.flush()):
                break
            out += tail
    if len(out) > limit:
        raise AnnotationFileError(uri, f"expands past {limit} bytes (the limit of one annotation file)")
    if not inflater.eof:
        raise AnnotationFileError(uri, "is a truncated gzip stream (it ends before its trailer)")
    return inflater.unused_data


def parse_json(uri: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise AnnotationFileError(uri, "nests too deep to be an annotation file") from None
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(uri, f"is not UTF-8 text (at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(uri, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError:  # an integer of more digits than Python's int parser takes (4300)
        raise AnnotationFileError(uri, "holds a number too long to read (more digits than "
                                       f"{sys.get_int_max_str_digits()})") from None


def load_json(uri: str, *, gzipped: bool = False, limit: int = MAX_ANNOTATION_BYTES) -> Any:
    """The parsed JSON of an annotation file, at most `limit` bytes read (and, gzipped, expanded)."""
    data = _read_capped(uri, limit)
    if gzipped:
        data = _gunzip_capped(uri, data, limit)
    return parse_json(uri, data)


# -- value checks: None when fine, else a short description without the offending value ------
def as_int(value: Any) -> int | None:
    """An integer id: an int, or a float with an integral value (some exporters write 1.0)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numbers(value: Any, length: int | None = None, multiple_of: int | None = None) -> bool:
    """A list of finite numbers, of `length` or of a length that is a multiple of `multiple_of`."""
    if not isinstance(value, list) or not all(is_number(v) for v in value):
        return False
    if length is not None and len(value) != length:
        return False
    return multiple_of is None or len(value) % multiple_of == 0


def where(name: str, index: int, entry: Any) -> str:
    """`annotations[12] (id 99)`: how a message points at an entry."""
    ident = as_int(entry.get("id")) if isinstance(entry, dict) else None
    return f"{name}[{index}]" + (f" (id {ident})" if ident is not None else "")
