"""What a COCO annotation file's index will take, judged from its bytes before any parse.

`CocoSource.check_index_memory` once charged 9 bytes a byte of file: a file whose images carry a
field of empty objects or lists (`{},`: 3 bytes of JSON, a 64-byte dict and an 8-byte slot parsed)
took 25.1x its size (a 40 MiB file judged 360 MiB peaked 1003 MiB higher), and at the default
budget a 512 MiB file could take ~12.5 GB in every worker. What a parse takes is what the file
holds: its containers, strings, numbers and dict entries, each a Python object of a known size.
One streaming pass counts them with `bytes.count` (outside or inside strings alike: a comma in a
caption counts as a value, which only errs high) and charges each its object's bytes. The numbers
of a polygon, RLE counts, keypoints or a box are charged as the 8-byte array items
`coco.compact_lists` keeps them as; a span of ints beside floats (a Roboflow export's `[197, 199,
112.5, 87]`), which it leaves a list, is charged as a list's values (judged at 8 bytes, such a file
peaked 1.29x its judgment: 896 MiB for 695).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sources import fsio

JUDGED_FILES = 64  # files whose counts a process keeps (`judged`): a few hundred bytes each
SCAN_STEP = 16 << 20  # bytes read at a time: the scan holds one step (and its compact spans' copy)

# bytes charged for each thing the parse makes (CPython 3.11, 64-bit; a slot is the 8 bytes of a
# list or array holding a value):
DICT_BYTES = 192  # `{`: a dict of up to 5 entries is 184 bytes, and its slot
EMPTY_DICT_BYTES = 72  # `{}`: 64 bytes and its slot, no entry in the index
INDEX_ENTRY_BYTES = 128  # `{`: an annotation's place in the merged index and its `_at` text
ENTRY_BYTES = 32  # `":` (a key): a dict entry (a table of 11 took 464 bytes); the key text is shared
LIST_BYTES = 64  # `[`: an empty list is 56 bytes, and its slot
VALUE_BYTES = 40  # `,` outside a compact span: a slot and its value (an int past 256: 32 bytes)
STRING_BYTES = 64  # a value's `""`: a string of up to 7 characters (56 bytes) and its slot
ARRAY_ITEM_BYTES = 8  # `,` in a span `compact_lists` keeps as an array: one 8-byte item
# the number lists `compact_lists` keeps as arrays (segmentation polygons and RLE counts,
# keypoints, boxes): a key, then brackets and numbers only
_COMPACT_SPAN = re.compile(rb'"(?:segmentation|counts|keypoints|bbox)"\s*:\s*(\[[-+.0-9eE,\s\[\]]*\])')
_FRACTION = re.compile(rb"[.eE]")  # a JSON number with one of these parses as a float
_INT = re.compile(rb"(?<![-+.0-9eE])-?[0-9]+(?![-+.0-9eE])")  # a number without: an int
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: skipped by the decoder, no character of the text
_WIDE = re.compile(rb"[\xc4-\xef]")  # a UTF-8 lead byte of a character past Latin-1 (2 bytes a char)
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # a lead byte of a character past the BMP (4 bytes a char)


@dataclass
class Counts:
    """What one pass over a file found (`scan`)."""
    size: int = 0
    dicts: int = 0
    empty_dicts: int = 0
    lists: int = 0
    keys: int = 0
    commas: int = 0
    compact_commas: int = 0
    quotes: int = 0
    char_bytes: int = 1  # bytes a character of the file's text takes as one Python str

    def add(self, block: bytes) -> None:
        first = self.size == 0
        self.size += len(block)
        self.dicts += block.count(b"{")
        self.empty_dicts += block.count(b"{}")
        self.lists += block.count(b"[")
        self.keys += block.count(b'":')
        self.commas += block.count(b",")
        self.quotes += block.count(b'"')
        # a span cut by the step's end is charged as plain values: only errs high
        self.compact_commas += sum(span.count(b",") for span in _COMPACT_SPAN.findall(block) if not _mixed(span))
        if first and block.startswith(_BOM):
            block = block[len(_BOM):]
        if not block.isascii():
            wide = 4 if _ASTRAL.search(block) else 2 if _WIDE.search(block) else 1
            self.char_bytes = max(self.char_bytes, wide)

    def parsed_bytes(self) -> int:
        """The peak of parsing and indexing the file: its bytes beside its text while it is decoded
        (at most a character a byte, each of the widest character's bytes), then its text beside
        every object the parse makes. Charged as twice the file at that width, one emoji judged a
        file 11.28x its size (peak 6.32x)."""
        return self.size * (1 + self.char_bytes) + self._objects()

    def held_bytes(self) -> int:
        """What the parsed index holds once its text is freed (what a kept parse counts:
        `coco.load_index`): every object the parse makes and the strings' characters, at most a
        byte of the file each (a file of captions: 315 MiB held, judged 328)."""
        return self.size + self._objects()

    def _objects(self) -> int:
        strings = max(0, self.quotes - 2 * self.keys) // 2
        objects = ((self.dicts - self.empty_dicts) * (DICT_BYTES + INDEX_ENTRY_BYTES) + self.empty_dicts * EMPTY_DICT_BYTES
                   + self.keys * ENTRY_BYTES + self.lists * LIST_BYTES
                   + (self.commas - self.compact_commas) * VALUE_BYTES + self.compact_commas * ARRAY_ITEM_BYTES
                   + strings * STRING_BYTES)
        return objects


def _mixed(span: bytes) -> bool:
    """Whether a number list holds ints beside floats: `compact_lists` keeps it a list."""
    return _FRACTION.search(span) is not None and _INT.search(span) is not None


def scan(uri: str, limit: int) -> Counts:
    """One streaming pass over an annotation file, a step at a time, at most `limit` bytes and one
    more read (a larger file is refused when it is parsed: `annotation_files.load_json`)."""
    counts = Counts()
    with fsio.open_file(uri) as handle:
        while counts.size <= limit and (block := handle.read(SCAN_STEP)):
            counts.add(block)
    return counts


_judged: OrderedDict[tuple[str, tuple, int], Counts] = OrderedDict()  # (uri, file state, limit) -> its counts
_judged_lock = threading.Lock()


def judged(uri: str, limit: int, state: tuple | None = None) -> Counts:
    """`scan(uri, limit)`, kept by the file's state (`fsio.file_state`, or `state` where the
    caller has just taken it): `check_index_memory` and the parse cache's weight of the same
    file (`coco.load_index`) share one pass a process, not one each, nor one a unit."""
    state = tuple(fsio.file_state(uri)) if state is None else tuple(state)
    with _judged_lock:
        counts = _judged.get((uri, state, limit))
    if counts is None:
        counts = scan(uri, limit)
        if tuple(fsio.file_state(uri)) == state:  # not rewritten while it was read
            with _judged_lock:
                _judged[(uri, state, limit)] = counts
                while len(_judged) > JUDGED_FILES:
                    _judged.popitem(last=False)
    return counts
