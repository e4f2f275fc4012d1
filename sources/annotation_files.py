"""Read annotation files (JSON, gzipped JSON) defensively, and check the values inside them.

An annotation file is input like any image: it can be huge, nested a million deep, or hold a
string where a number belongs. Whole-file problems raise `AnnotationFileError`, one line that
names the file and, for a bad entry that cannot be attributed to any image, its index.
Entry-level checks (`entry_problem` helpers) return a short text instead, so that a reader can
reject that entry's own image or pair and keep the rest. No message quotes the file's bytes.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import re
import sys
import zlib
from typing import Any, Callable, Iterator

from sources import fsio
from sources.paths import relative_to_root
from sources.records import MachineError, is_machine_error

# COCO train's instances JSON is 448 MB; a CO3D frame_annotations.jgz expands to far less
MAX_ANNOTATION_BYTES = 512 << 20
GUNZIP_STEP = 16 << 20  # bytes inflated at a time
BAD_ANNOTATION = "bad_annotation"  # the reject reason of an entry that fails its checks
BAD_ANNOTATION_FILE = "bad_annotation_file"  # the reject reason of a whole file that cannot be used


class AnnotationFileError(ValueError):
    """An annotation file that cannot be used at all; the message names the file."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"annotation file {uri}: {problem}")
        self.uri = uri
        self.filename = uri  # `transforms.errors.exception_detail` then shows it by its base name
        self.problem = problem

    def detail(self, root: str) -> str:
        """The `bad_annotation_file` reject's detail: the file named from the source's root, never
        by its absolute path (rejects are published, and their bytes must not depend on where the
        dataset lies)."""
        return f"annotation file {relative_to_root(root, self.uri)}: {self.problem}"[:300]


def _unreadable(uri: str, exc: OSError) -> Exception:
    """What an OSError reading an annotation file is: too many open files or no memory is this
    machine's `MachineError` (the unit stays uncommitted, a rerun reads the file again), any other
    the file's `AnnotationFileError` (its `bad_annotation_file` reject is committed for good)."""
    if is_machine_error(exc):
        return MachineError(f"reading {fsio.basename(uri)}: {exc}")
    return AnnotationFileError(uri, f"cannot be read ({type(exc).__name__})")


def _read_capped(uri: str, limit: int) -> bytes:
    try:
        with fsio.open_file(uri) as handle:
            data = fsio.read_at_most(handle, limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _unreadable(uri, exc) from None
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


def parse_json(uri: str, data: bytes | str, object_hook: Callable[[dict], Any] | None = None) -> Any:
    """`object_hook` as `json.loads` takes it: each object, as it is parsed, turned into what is kept."""
    try:
        return json.loads(data, object_hook=object_hook)
    except RecursionError:
        raise AnnotationFileError(uri, "nests too deep to be an annotation file") from None
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(uri, f"is not UTF-8 text (at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(uri, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError:  # an integer of more digits than Python's int parser takes (4300)
        raise AnnotationFileError(uri, "holds a number too long to read (more digits than "
                                       f"{sys.get_int_max_str_digits()})") from None


def load_json(uri: str, *, gzipped: bool = False, limit: int = MAX_ANNOTATION_BYTES,
              object_hook: Callable[[dict], Any] | None = None) -> Any:
    """The parsed JSON of an annotation file, at most `limit` bytes read (and, gzipped, expanded);
    `object_hook` as `parse_json` takes it."""
    data = _read_capped(uri, limit)
    if gzipped:
        data = _gunzip_capped(uri, data, limit)
    text = json_text(uri, data)
    del data  # held beside its text and its parse, the file's bytes took one file size more at the peak
    return parse_json(uri, text, object_hook)


def json_text(uri: str, data: bytes) -> str:
    """A JSON file's text, decoded as `json.loads` decodes bytes (UTF-8, a BOM skipped, UTF-16/32)."""
    try:
        return data.decode(json.detect_encoding(data), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(uri, f"is not UTF-8 text (at byte {exc.start})") from None


# -- a list read item by item ---------------------------------------------------------------------
TEXT_STEP = 1 << 20  # bytes read (and expanded) at a time when a list is read item by item
MAX_ITEM_CHARS = 16 << 20  # one item of such a list (a CO3D frame annotation is about 1 KB)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_NUMBER_GOES_ON = re.compile(r"[0-9eE.+\-]*\Z")  # the text's end may cut a number: `4.5` of `4.5e10`


def _text_steps(uri: str, gzipped: bool, limit: int) -> Iterator[str]:
    """The file's text a step at a time, at most `limit` bytes read (gzipped: expanded), gzip read
    as gzip itself reads it (every member, each trailer's CRC checked, zero padding after the last)."""
    text = codecs.getincrementaldecoder("utf-8-sig")()  # json.loads of bytes skips a BOM too
    done, data = 0, b""
    try:
        with fsio.open_file(uri) as handle:
            inflated = gzipped and not _plain_json(handle)  # a plain-JSON .jgz expands nothing
            stream = gzip.GzipFile(fileobj=handle, mode="rb") if inflated else handle
            while data := stream.read(TEXT_STEP):
                done += len(data)
                if done > limit:
                    raise AnnotationFileError(uri, f"{'expands past' if inflated else 'is larger than'} {limit} "
                                                   "bytes (the limit of one annotation file)")
                yield text.decode(data)
            yield text.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # its position counts from this step (and up to 3 bytes held from the last)
        raise AnnotationFileError(uri, f"is not UTF-8 text (near byte {done - len(data) + exc.start})") from None
    except EOFError:
        raise AnnotationFileError(uri, "is a truncated gzip stream (it ends before its trailer)") from None
    except (gzip.BadGzipFile, zlib.error):
        raise AnnotationFileError(uri, "is not a valid gzip stream") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _unreadable(uri, exc) from None


GZIP_MAGIC = b"\x1f\x8b"
_JSON_OPENINGS = (b"[", b"{")
_JSON_SPACE = b" \t\r\n"
SNIFF_STEP = 64 << 10  # bytes of leading whitespace read at a time when sniffing
MAX_SNIFF_BYTES = 1 << 20  # leading whitespace looked through at most: past it, left to gzip to refuse


def _plain_json(handle) -> bool:
    """Whether a file named as gzip (CO3D's `.jgz`) holds its JSON text unpacked, the gzip undone
    under its name (a browser saving a download sent with `Content-Encoding: gzip`): its first
    bytes are no gzip magic but a JSON list or object, after any BOM and whitespace (up to
    `MAX_SNIFF_BYTES` of it: only 64 bytes were looked at, and JSON after more blank lines was
    refused as 'not a valid gzip stream'). The text reads as it would have from the gzip; anything
    else (an HTML error page) is left to gzip to refuse. The handle is put back at its start."""
    head = handle.read(64)
    rest, looked = head.removeprefix(b"\xef\xbb\xbf").lstrip(_JSON_SPACE), len(head)
    while not rest and head and looked < MAX_SNIFF_BYTES and not head.startswith(GZIP_MAGIC):
        more = handle.read(SNIFF_STEP)
        rest, looked = more.lstrip(_JSON_SPACE), looked + len(more)
        if not more:
            break
    handle.seek(0)
    return not head.startswith(GZIP_MAGIC) and rest[:1] in _JSON_OPENINGS


class _JsonStream:
    """JSON text that arrives in steps: values are parsed where they stand, and what is parsed
    is let go when the next step comes."""

    def __init__(self, uri: str, steps: Iterator[str]) -> None:
        self.uri, self.steps = uri, steps
        self.text, self.at, self.offset, self.ended = "", 0, 0, False
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        step = None if self.ended else next(self.steps, None)
        if step is None:
            self.ended = True
            return False
        self.offset += self.at
        self.text, self.at = self.text[self.at:] + step, 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, not taken ('' at the end of the text)."""
        while True:
            self.at = _SPACE.match(self.text, self.at).end()
            if self.at < len(self.text):
                return self.text[self.at]
            if not self._more():
                return ""

    def take(self, expected: str) -> str:
        """The next character that is not whitespace, one of `expected`."""
        found = self.peek()
        if not found or found not in expected:
            self.fail(f"expecting {' or '.join(map(repr, expected))}", self.at)
        self.at += 1
        return found

    def fail(self, problem: str, at: int) -> None:
        raise AnnotationFileError(self.uri, f"is not valid JSON ({problem} at character {self.offset + at})")

    def _grow(self) -> bool:
        """Read on until the text from here is twice as long (a step more at least, `MAX_ITEM_CHARS`
        and a character at most); False when it cannot grow. An item parsed again after every
        step cost the square of its length: 16 MB of empty lists took 20 s, and a number (which
        had no cap) of 128 M digits 25 s and 400 MB."""
        held = len(self.text) - self.at
        if self.ended or held > MAX_ITEM_CHARS:
            return False
        pieces, size, want = [self.text[self.at:]], held, min(2 * held, MAX_ITEM_CHARS + 1)
        while size < want or len(pieces) == 1:
            step = next(self.steps, None)
            if step is None:
                self.ended = True
                break
            pieces.append(step)
            size += len(step)
        if len(pieces) == 1:
            return False
        self.offset += self.at
        self.text, self.at = "".join(pieces), 0
        return True

    def value(self) -> Any:
        """The value that starts here. One that fails, or a number the text's end may cut, is
        parsed again with its text doubled (`_grow`), up to `MAX_ITEM_CHARS`."""
        while True:
            self.peek()  # raw_decode takes no leading whitespace
            try:
                value, end = self.decoder.raw_decode(self.text, self.at)
            except json.JSONDecodeError as exc:
                if self._grow():
                    continue
                self.fail(exc.msg if self.ended else f"{exc.msg}, or an item over {MAX_ITEM_CHARS} characters",
                          exc.pos)
            except RecursionError:
                raise AnnotationFileError(self.uri, "nests too deep to be an annotation file") from None
            except ValueError:  # an integer of more digits than Python's int parser takes (4300)
                raise AnnotationFileError(self.uri, "holds a number too long to read (more digits than "
                                                    f"{sys.get_int_max_str_digits()})") from None
            cut = isinstance(value, (int, float)) and _NUMBER_GOES_ON.match(self.text, end)
            if cut and self._grow():
                continue
            if cut and not self.ended:
                self.fail(f"a number over {MAX_ITEM_CHARS} characters", self.at)
            self.at = end
            return value


def iter_json_list(uri: str, *, gzipped: bool = False, limit: int = MAX_ANNOTATION_BYTES) -> Iterator[Any]:
    """The items of an annotation file that is one JSON list, parsed one at a time: memory holds a
    step of the text and the items the caller keeps, never the whole file (`load_json` of a CO3D
    category of 100k frames, 104 MB of JSON, held 555 MB). Problems raise `AnnotationFileError`
    as `load_json`'s do; items before a problem have been yielded by then."""
    stream = _JsonStream(uri, _text_steps(uri, gzipped, limit))
    if stream.peek() != "[":
        raise AnnotationFileError(uri, "is not a JSON list")
    yield from _list_items(stream)
    if stream.peek():
        stream.fail("extra data", stream.at)


def _list_items(stream: _JsonStream) -> Iterator[Any]:
    """The items of the list that starts here, one at a time, its closing bracket taken."""
    stream.take("[")
    if stream.peek() == "]":
        stream.take("]")
        return
    while True:
        yield stream.value()
        if stream.take(",]") == "]":
            return


def iter_json_object_lists(uri: str, *, limit: int = MAX_ANNOTATION_BYTES) -> Iterator[tuple[str, Any]]:
    """(name, item) for each item of each list of a file that is one JSON object of lists (CO3D's
    set lists: {"train": [...], "val": [...], "test": [...]}, 100k items in a category), parsed one
    item at a time as `iter_json_list` does."""
    stream = _JsonStream(uri, _text_steps(uri, False, limit))
    if stream.peek() != "{":
        raise AnnotationFileError(uri, "is not a JSON object")
    stream.take("{")
    if stream.peek() == "}":
        stream.take("}")
    else:
        while True:
            if stream.peek() != '"':
                stream.fail("expecting a name", stream.at)
            name = stream.value()
            stream.take(":")
            if stream.peek() != "[":
                raise AnnotationFileError(uri, f"is not a JSON object of lists ({str(name)[:40]!r} is no list)")
            yield from ((str(name), item) for item in _list_items(stream))
            if stream.take(",}") == "}":
                break
    if stream.peek():
        stream.fail("extra data", stream.at)


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
