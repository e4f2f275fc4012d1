"""What the parquet tests write into the files they make: the `huggingface` schema metadata of an
Image and a caption column as `datasets` stores it, and photos whose bytes parquet cannot shrink."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

HF_METADATA = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


def noise_photo(seed: int, size: int) -> bytes:
    """A JPEG of noise (incompressible, as a photo's bytes are to parquet's codec)."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        out, "JPEG", quality=92)
    return out.getvalue()


def snappy_length(size: int) -> bytes:
    """A raw-snappy stream's head: its decompressed `size`, a varint."""
    head = bytearray()
    while size >= 0x80:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head)


def _snappy_literal(piece: bytes) -> bytes:
    """One raw-snappy literal element of `piece` (1 to 65,536 bytes)."""
    n = len(piece) - 1
    return (bytes([n << 2]) if n < 60 else bytes([61 << 2]) + n.to_bytes(2, "little")) + piece


def _snappy_copy(length: int, stored: int) -> bytes:
    """A raw-snappy copy of `length` (4 or 5) bytes from 1 byte back, in `stored` bytes (2, 3 or 5)."""
    if stored == 2:
        return bytes([((length - 4) << 2) | 1, 1])
    return bytes([((length - 1) << 2) | (2 if stored == 3 else 3)]) + (1).to_bytes(stored - 1, "little")


def snappy_of_copies(page: bytes, spans: list[tuple[int, int]], target: int) -> bytes:
    """Raw snappy of `page` (valid: pyarrow decodes it), as a hostile writer may: each span
    (start, length) of one byte repeated is that byte, then 4- and 5-byte copies from 1 byte back
    in turn (never one element repeated: no run), one element a 4.5 bytes, the rest literals;
    copies written 3 or 5 bytes long, not 2, until the stream is `target` bytes."""
    pieces: list[bytes | tuple[int, int]] = []  # literals, and (copy length, index) to size later
    at = copies = 0
    for start, length in sorted(spans) + [(len(page), 0)]:
        for i in range(at, start + (1 if length else 0), 1 << 16):
            pieces.append(_snappy_literal(page[i: min(i + (1 << 16), start + (1 if length else 0))]))
        left, turn = length - 1, 0
        while left >= 4:
            take = 4 + turn if left >= 4 + turn else 4
            pieces.append((take, copies))
            copies, left, turn = copies + 1, left - take, 1 - turn
        if left > 0:  # the last 1 to 3 bytes: a literal
            pieces.append(_snappy_literal(page[start + length - left: start + length]))
        at = start + length
    head = snappy_length(len(page))
    base = len(head) + sum(len(p) if isinstance(p, bytes) else 2 for p in pieces)
    extra = target - base
    wide, rest = divmod(extra, 3)  # copies of 5 bytes (3 more each), then of 3 (1 more)
    if extra < 0 or wide + rest > copies:
        raise ValueError(f"{target} bytes cannot hold this page so (it takes {base} to {base + 3 * copies})")
    out = bytearray(head)
    for piece in pieces:
        if isinstance(piece, bytes):
            out += piece
        else:
            length, index = piece
            out += _snappy_copy(length, 5 if index < wide else 3 if index < wide + rest else 2)
    return bytes(out)


def hostile_copies_file(path, groups: int, rows: int, length: int, tail: list[bytes] = ()) -> list[bytes]:
    """A parquet file as pyarrow writes it (snappy, plain pages: `groups` row groups of `rows`
    values of `length` bytes, one page a group, then the values `tail` in a group of their own),
    each of the first groups' values then made `length` bytes of b"A" and its page's snappy
    rewritten in place as `snappy_of_copies` (one element a 4.5 bytes: within the Python
    decoder's bound of one a 3 bytes a chunk); pyarrow reads it. The file's values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources import parquet_pages

    rng = np.random.default_rng(0)
    values = [rng.bytes(length) for _ in range(groups * rows)] + list(tail)
    table = pa.table({"image": pa.array(values, pa.binary()), "caption": [f"c{i}" for i in range(len(values))]})
    with pq.ParquetWriter(path, table.schema, use_dictionary=False) as writer:
        for group in range(groups):
            writer.write_table(table.slice(group * rows, rows))
        if tail:
            writer.write_table(table.slice(groups * rows))
    data = bytearray(open(path, "rb").read())
    meta = pq.ParquetFile(path).metadata
    for group in range(groups):
        chunk = meta.row_group(group).column(0)
        header = parquet_pages.page_layout(io.BytesIO(bytes(data)), chunk.data_page_offset).header
        body = chunk.data_page_offset + header.size
        page = bytearray(pa.decompress(bytes(data[body: body + header.compressed_page_size]),
                                       header.uncompressed_page_size, codec="snappy", asbytes=True))
        spans = []
        for value in values[group * rows: (group + 1) * rows]:
            start = page.index(value[:64])
            page[start: start + length] = b"A" * length
            spans.append((start, length))
        data[body: body + header.compressed_page_size] = snappy_of_copies(bytes(page), spans,
                                                                          header.compressed_page_size)
    with open(path, "wb") as out:
        out.write(bytes(data))
    return [b"A" * length] * (groups * rows) + list(tail)
