"""What an Arrow IPC file's record batches will cost in memory, judged from their message headers
before any batch is read.

An uncompressed IPC file memory-maps: its token values are views of the file, and a buffer
declared past the file's end is refused by Arrow's own bounds check. A compressed one (pyarrow's
`IpcWriteOptions(compression="zstd" | "lz4")`) cannot be viewed: reading it decompresses every
buffer into memory, at the size each buffer declares in its first 8 bytes. A few kilobytes of zstd
can declare gigabytes, so those sizes are summed here, from the headers and the 8-byte prefixes
only, and a caller compares the sum with its budget before it reads the table.

The headers are flatbuffers (Arrow's format/Message.fbs): Message {version, header_type, header,
bodyLength, ...} whose header is a RecordBatch {length, nodes, buffers: [Buffer {offset, length}],
compression: BodyCompression, ...}, or a DictionaryBatch {id, data: RecordBatch, isDelta}: pyarrow
compresses a dictionary's values too, and reading decompresses them. Only those fields are read.
"""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.ipc as ipc

FILE_MAGIC = b"ARROW1"
UNCOMPRESSED = -1  # a compressed body's buffer prefix meaning "stored as is"


class _Table:
    """A flatbuffer table at `pos` of `data`: its fields by number, absent ones as None."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        self._vtable, self._vtable_size = vtable, struct.unpack_from("<H", data, vtable)[0]

    def _field(self, number: int) -> int | None:
        at = 4 + 2 * number
        if at + 2 > self._vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self._vtable + at)[0]
        return self.pos + offset if offset else None

    def table(self, number: int) -> "_Table | None":
        at = self._field(number)
        return None if at is None else _Table(self.data, at + struct.unpack_from("<I", self.data, at)[0])

    def struct_vector(self, number: int, item: str) -> list[tuple]:
        at = self._field(number)
        if at is None:
            return []
        start = at + struct.unpack_from("<I", self.data, at)[0]
        count = struct.unpack_from("<I", self.data, start)[0]
        size = struct.calcsize(item)
        return [struct.unpack_from(item, self.data, start + 4 + i * size) for i in range(count)]


def decompressed_bytes(path: str) -> int:
    """Bytes the record and dictionary batches of the IPC file `path` decompress to when read; 0 for a file whose
    batches are not compressed (they are memory-mapped, not copied). Raises `ValueError` for a
    file that is not an Arrow IPC file or whose headers do not parse."""
    with pa.memory_map(path, "r") as source:
        if source.read(len(FILE_MAGIC)) != FILE_MAGIC:
            raise ValueError("not an Arrow IPC file")
        source.seek(8)  # the magic, padded; then the messages, as in a stream
        total = 0
        try:
            for message in ipc.MessageReader.open_stream(source):
                if message.type not in ("record batch", "dictionary"):
                    continue
                total += _batch_decompressed_bytes(message.metadata.to_pybytes(), message.body,
                                                   message.type == "dictionary")
        except (pa.ArrowException, struct.error, IndexError) as exc:
            raise ValueError(f"unreadable record batch header ({type(exc).__name__}: {exc})") from None
    return total


def _batch_decompressed_bytes(metadata: bytes, body: pa.Buffer | None, dictionary: bool = False) -> int:
    """Sum of the declared sizes of one compressed batch's buffers (0 when it is not compressed);
    `dictionary`: the message is a DictionaryBatch, whose RecordBatch is its field 1 (data)."""
    message = _Table(metadata, struct.unpack_from("<I", metadata, 0)[0])
    batch = message.table(2)  # Message.header: the RecordBatch (or the DictionaryBatch holding one)
    if dictionary and batch is not None:
        batch = batch.table(1)
    if batch is None or batch.table(3) is None:  # RecordBatch.compression absent: stored as is
        return 0
    view = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    for offset, length in batch.struct_vector(2, "<qq"):  # RecordBatch.buffers
        if length < 8:  # an empty buffer carries no prefix
            continue
        if offset < 0 or offset + 8 > len(view):
            raise ValueError(f"a buffer at {offset} lies outside its batch's {len(view)}-byte body")
        declared = struct.unpack_from("<q", view, offset)[0]
        total += length - 8 if declared == UNCOMPRESSED else max(declared, 0)
    return total
