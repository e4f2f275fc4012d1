"""The text a record carries into its lineage, bounded: a caption cut to `MAX_CAPTION_BYTES` at a
UTF-8 boundary (the lineage saying so, with the length it had), and a record's metadata fields (a
sample's `.json` and listing row, a parquet row's other columns) kept within `MAX_METADATA_BYTES`
as a whole, each value already within `LINEAGE_VALUE_BYTES` (`lineage_value`).

Why: a record's lineage is copied into its unit's stored results, pickled through the runner's
groupings (held until each is read) and written into every sentence header that holds the image.
A web tar of 150 samples with 2 MiB captions put 2,097,413-byte headers in its shard and peaked at
1.75 GB of RSS (300 samples: 3.28 GB, about 5.8 times the text), and a `.json` of 2,000 values of
1 KB each (every value under the per-value cap) did the same. Real captions are far smaller: web
alt text is a sentence or two (COYO-700M dropped any over 1,000 characters; LAION's and DataComp's
are Common Crawl alt text too), a model's recaption a paragraph or two; text of a document's
length in a caption slot is a scraped page, no caption. The caps leave every such caption and
record as it was, byte for byte. Now: 174 MB, 4.4 KB headers (`benchmarks/bench_lineage_text.py`)."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

# a caption's UTF-8 bytes in the lineage, at most: past it cut at a character's boundary, and
# `caption_truncated` says so (about 700 English words; CLIP's tokenizer reads 77 tokens)
MAX_CAPTION_BYTES = 4096
# a record's metadata fields as compact UTF-8 JSON, at most (an img2dataset `.json` with its EXIF,
# ~600 bytes a camera photo, and `--save_additional_columns` takes ~1-2 KB): past it the fields
# that do not fit, in name order, are left out and `<name>_truncated` counts and names them
MAX_METADATA_BYTES = 16384
# of a caption file or tar member, the bytes read at most: the caption kept is far less, and a
# `.txt` img2dataset wrote as a bytes literal (`web_samples.bytes_literal`) is read up to its cap
CAPTION_READ_BYTES = 1 << 16
_NAMES_SHOWN = 8  # of the metadata fields left out, the first names given in the lineage


def caption_lineage(text: str, stored_bytes: int | None = None) -> dict[str, Any]:
    """{"caption": text} cut to `MAX_CAPTION_BYTES`, with `caption_truncated` when cut: the bytes
    the caption had (stripped), or `stored_bytes`, what its file or member held where only its
    head was read, and the bytes kept; {} for a blank caption."""
    text = text.strip()
    if not text:
        return {}
    data = text.encode("utf-8", "surrogatepass")  # a JSON `\\ud800` parses to a lone surrogate
    if len(data) <= MAX_CAPTION_BYTES and stored_bytes is None:
        return {"caption": text}
    kept = utf8_head(data, MAX_CAPTION_BYTES)
    return {"caption": kept.decode("utf-8", "surrogatepass"),
            "caption_truncated": {"bytes": len(data) if stored_bytes is None else stored_bytes,
                                  "kept_bytes": len(kept), "budget": MAX_CAPTION_BYTES}}


def utf8_head(data: bytes, limit: int) -> bytes:
    """The first `limit` bytes of UTF-8 `data`, ending at a character's boundary (never inside a
    multi-byte character, which would read back as U+FFFD)."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # a continuation byte: the character began before
        end -= 1
    return data[:end]


def metadata_lineage(name: str, fields: dict[str, Any], value: Callable[[Any], Any]) -> dict[str, Any]:
    """{name: fields} with each value as `value` makes it (capped), in name order while the whole
    stays within `MAX_METADATA_BYTES` as JSON; the fields past it are left out, and
    `<name>_truncated` counts them and names the first few (never silently dropped). A record
    within the cap, every real one, is measured once whole, not field by field (48 -> 14 us a
    15-field img2dataset record, a per-sample cost of every web build)."""
    made = {field: value(fields[field]) for field in sorted(fields)}
    if _json_bytes(made) < MAX_METADATA_BYTES:  # as the loop below counts it: its last comma too
        return {name: made}
    kept: dict[str, Any] = {}
    left_out: list[str] = []
    used = 2  # the braces
    for field, field_value in made.items():
        size = _json_bytes({field: field_value}) - 1  # `"field":value,`: less the braces, plus the comma
        if used + size <= MAX_METADATA_BYTES:
            kept[field] = field_value
            used += size
        else:
            left_out.append(field)
    if not left_out:
        return {name: kept}
    return {name: kept, f"{name}_truncated": {"fields_left_out": len(left_out), "names": left_out[:_NAMES_SHOWN],
                                              "budget": MAX_METADATA_BYTES}}


def _json_bytes(fields: dict[str, Any]) -> int:
    """What `fields` takes as compact UTF-8 JSON, as a sentence header writes it."""
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def jsonable(value: Any) -> Any:
    """A metadata value as plain JSON (bytes are never carried; NaN becomes null)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


# A column's value in a record's lineage, roughly as JSON (each number, boolean or null 8 bytes, a
# string its characters, a key its own): past this it is left out, marked. Each record's lineage is
# held by its unit until the unit ends: a 768-float CLIP embedding a row held 2.4 GB more at
# 100,000 rows, 16 rows of 500,000 tags each 470 MB.
LINEAGE_VALUE_BYTES = 4096


def lineage_value(value: Any) -> Any:
    """`value` as plain JSON for the lineage, or, past `LINEAGE_VALUE_BYTES`, the mark
    `{"truncated": "<what it was>, ..."}` in its place (walked only as far as the budget)."""
    if _json_size(value, LINEAGE_VALUE_BYTES) <= LINEAGE_VALUE_BYTES:
        return jsonable(value)
    what = f"a list of {len(value)} items" if isinstance(value, (list, tuple)) else \
        f"a text of {len(value)} characters" if isinstance(value, str) else \
        f"a struct of {len(value)} fields" if isinstance(value, dict) else type(value).__name__
    return {"truncated": f"{what}, over the {LINEAGE_VALUE_BYTES} byte budget of a lineage value: left out"}


def _json_size(value: Any, stop: int) -> int:
    """About what `value` takes as JSON, counted until past `stop`."""
    size, pending = 0, [value]
    while pending and size <= stop:
        item = pending.pop()
        if isinstance(item, str):  # a non-ASCII character up to 6 bytes as JSON (`\\u4e2d`)
            size += (len(item) if item.isascii() else 6 * len(item)) + 2
        elif isinstance(item, (dict, list, tuple)) and len(item) > stop // 2:  # each item 2 bytes or more
            size += stop + 1
        elif isinstance(item, dict):
            size += 2 + sum(len(str(k)) + 4 for k in item)
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            size += 2
            pending.extend(item)
        else:
            size += 8
    return size
