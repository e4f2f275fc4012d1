"""The text a record carries into its lineage, bounded: a caption cut to `MAX_CAPTION_BYTES` at a
UTF-8 boundary (the lineage saying so, with the length it had), and a record's metadata fields (a
sample's `.json` and listing row, a parquet row's other columns) kept within `MAX_METADATA_BYTES`
as a whole, each value already within `hf_repo_reader.LINEAGE_VALUE_BYTES`.

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
    `<name>_truncated` counts them and names the first few (never silently dropped)."""
    kept: dict[str, Any] = {}
    left_out: list[str] = []
    used = 2  # the braces
    for field in sorted(fields):
        made = value(fields[field])
        size = _json_bytes(field, made)
        if used + size <= MAX_METADATA_BYTES:
            kept[field] = made
            used += size
        else:
            left_out.append(field)
    if not left_out:
        return {name: kept}
    return {name: kept, f"{name}_truncated": {"fields_left_out": len(left_out), "names": left_out[:_NAMES_SHOWN],
                                              "budget": MAX_METADATA_BYTES}}


def _json_bytes(field: str, value: Any) -> int:
    """What `"field":value,` takes in a sentence header (compact UTF-8 JSON, as it is written)."""
    text = json.dumps({str(field): value}, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass")) - 1  # less the braces, plus the comma
