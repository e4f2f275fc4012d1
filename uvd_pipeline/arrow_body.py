"""What an Arrow IPC file's record batches will cost in memory, judged from their message headers
before any batch is read.

An uncompressed IPC file memory-maps: its token values are views of the file, and a buffer
declared past the file's end is refused by Arrow's own bounds check. A compressed one (pyarrow's
`IpcWriteOptions(compression="zstd" | "lz4")`) cannot be viewed: reading it decompresses every
buffer into memory, at the size each buffer declares in its first 8 bytes. A few kilobytes of zstd
can declare gigabytes, so those sizes are summed here, from the headers and the 8-byte prefixes
only, and a caller compares the sum with its budget before it reads the table.

The file reader follows the footer (format/File.fbs: Footer {version, schema, dictionaries: [Block],
recordBatches: [Block]}, Block {offset, metaDataLength, bodyLength}), not the messages in file
order, so the batches judged are the blocks the footer lists. The headers are flatbuffers (Arrow's
format/Message.fbs): Message {version, header_type, header,
bodyLength, ...} whose header is a RecordBatch {length, nodes, buffers: [Buffer {offset, length}],
compression: BodyCompression, ...}, or a DictionaryBatch {id, data: RecordBatch, isDelta}: pyarrow
compresses a dictionary's values too, and reading decompresses them. Only those fields are read.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading

FILE_MAGIC = b"ARROW1"
CONTINUATION = -1  # 0xFFFFFFFF before a message's metadata length
BLOCK = "<qi4xq"  # Footer Block {offset: long, metaDataLength: int, (padding), bodyLength: long}
HEADER_DICTIONARY_BATCH, HEADER_RECORD_BATCH = 2, 3  # MessageHeader union: Schema 1, DictionaryBatch 2, RecordBatch 3
MIN_MESSAGE_BYTES = 64  # a batch message: 8-byte prefix, a Message table and its RecordBatch, 8-aligned
BUFFER_ENTRY_BYTES = 16  # a Buffer {offset: long, length: long} in a RecordBatch header
ALLOCATION_ALIGNMENT = 64  # Arrow's memory pool rounds each buffer it allocates up to this
UNCOMPRESSED = -1  # a compressed body's buffer prefix meaning "stored as is"
# sizes judged, by (device, inode, size, mtime, ctime): a file changed since is judged again
_JUDGED: dict[tuple, int] = {}
_JUDGED_LIMIT = 4096
_JUDGED_LOCK = threading.Lock()


class _Table:
    """A flatbuffer table at `pos` of `data`, read in place (no copy) within the flatbuffer's bytes
    `data[lo:hi]`: its fields by number, absent ones as None. A position outside them raises
    ValueError (Python's struct would wrap a negative one to the end of the buffer)."""

    def __init__(self, data, pos: int, lo: int, hi: int) -> None:
        self.data, self.pos, self.lo, self.hi = data, pos, lo, hi
        self._check(pos, 4)
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        self._check(vtable, 4)
        self._vtable, self._vtable_size = vtable, struct.unpack_from("<H", data, vtable)[0]
        self._check(vtable, self._vtable_size)

    def _check(self, at: int, size: int) -> None:
        if at < self.lo or at + size > self.hi:
            raise ValueError(f"a flatbuffer position {at - self.lo} (+{size} bytes) outside its "
                             f"{self.hi - self.lo} bytes")

    def _field(self, number: int) -> int | None:
        at = 4 + 2 * number
        if at + 2 > self._vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self._vtable + at)[0]
        return self.pos + offset if offset else None

    def scalar(self, number: int, item: str) -> int | None:
        at = self._field(number)
        if at is None:
            return None
        self._check(at, struct.calcsize(item))
        return struct.unpack_from(item, self.data, at)[0]

    def table(self, number: int) -> "_Table | None":
        at = self._field(number)
        if at is None:
            return None
        self._check(at, 4)
        return _Table(self.data, at + struct.unpack_from("<I", self.data, at)[0], self.lo, self.hi)

    def struct_vector(self, number: int, item: str, allowance: "_Allowance | None" = None) -> list[tuple]:
        at = self._field(number)
        if at is None:
            return []
        self._check(at, 4)
        start = at + struct.unpack_from("<I", self.data, at)[0]
        self._check(start, 4)
        count = struct.unpack_from("<I", self.data, start)[0]
        size = struct.calcsize(item)
        self._check(start + 4, count * size)
        if allowance is not None:
            allowance.take(count)
        return [struct.unpack_from(item, self.data, start + 4 + i * size) for i in range(count)]


class _Allowance:
    """Buffer entries a file's batches may name in all: blocks may repeat one batch, so without a
    bound the entries walked grow with the square of the file's size; a file pyarrow writes names
    at most its size / 16 (each entry is 16 bytes of some header)."""

    def __init__(self, entries: int) -> None:
        self.left = entries

    def take(self, count: int) -> None:
        if count > self.left:
            raise ValueError("its batches name more buffers than its headers could hold (blocks repeating a batch)")
        self.left -= count


class NotArrowFile(ValueError):
    """The file lacks the Arrow IPC file magic at its end: `ipc.open_file` refuses it before it
    reads any batch, so there is nothing to judge. (Arrow checks only the trailing magic: a file
    that ends with it but does not start with it is read, so it is refused, not passed over.)"""


def decompressed_bytes(path: str) -> int:
    """Bytes the record and dictionary batches of the IPC file `path` decompress to when read; 0
    for a file whose batches are not compressed (they are memory-mapped, not copied). The batches
    judged are the blocks its footer lists, at their offsets: what `ipc.open_file` reads, whatever
    lies between them. Raises `NotArrowFile` for a file without the IPC file magic at its end,
    `ValueError` for one whose footer or batch headers do not parse, `OSError` for one that cannot
    be read. A size is judged once per version of a file (its inode, size, mtime and ctime): a
    file changed in place through a shared mapping keeps its times until written back, and such a
    change is for the shard's recorded size and sha256 to catch (`shards.verify_token_shard`)."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with _JUDGED_LOCK:  # a reader judges before it reads and its caller counts what it holds: one parse
            if key in _JUDGED:
                return _JUDGED[key]
        size = _judge(handle, stat.st_size)
        with _JUDGED_LOCK:
            if len(_JUDGED) >= _JUDGED_LIMIT:
                _JUDGED.pop(next(iter(_JUDGED)))
            _JUDGED[key] = size
        return size


def _judge(handle, file_size: int) -> int:
    """`decompressed_bytes` of the open file `handle`, parsed from its footer."""
    if file_size < 2 * len(FILE_MAGIC) + 4:  # mmap refuses an empty file
        raise NotArrowFile("not an Arrow IPC file")
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[-len(FILE_MAGIC):] != FILE_MAGIC:
            raise NotArrowFile("not an Arrow IPC file")
        if data[:len(FILE_MAGIC)] != FILE_MAGIC:  # Arrow reads it all the same: fail closed
            raise ValueError("it ends with the Arrow IPC file magic but starts without the Arrow IPC file magic")
        try:
            blocks = _footer_blocks(data)
            if len(blocks) > len(data) // MIN_MESSAGE_BYTES:  # blocks sharing one message: work without end
                raise ValueError(f"{len(blocks)} blocks in a file of {len(data)} bytes")
            allowance = _Allowance(len(data) // BUFFER_ENTRY_BYTES)
            return sum(_block_decompressed_bytes(data, offset, metadata_length, allowance)
                       for offset, metadata_length, _ in blocks)
        except (struct.error, IndexError, OverflowError) as exc:
            raise ValueError(f"a header that does not parse ({type(exc).__name__}: {exc})") from None


def _footer_blocks(data) -> list[tuple]:
    """The footer's dictionary and record batch Blocks {offset, metaDataLength, bodyLength}."""
    footer_length = struct.unpack_from("<i", data, len(data) - len(FILE_MAGIC) - 4)[0]
    footer_start = len(data) - len(FILE_MAGIC) - 4 - footer_length
    if footer_length <= 0 or footer_start < len(FILE_MAGIC):
        raise ValueError(f"a footer length of {footer_length} bytes does not fit the file")
    footer_end = footer_start + footer_length
    footer = _Table(data, footer_start + struct.unpack_from("<I", data, footer_start)[0], footer_start, footer_end)
    return footer.struct_vector(2, BLOCK) + footer.struct_vector(3, BLOCK)  # dictionaries, recordBatches


def _block_decompressed_bytes(data, offset: int, metadata_length: int, allowance: _Allowance) -> int:
    """The declared decompressed size of the batch message at `offset`, as the file reader reads
    it: its metadata in `metadata_length` bytes there, its body right after them."""
    if offset < 0 or metadata_length < 8 or offset + metadata_length > len(data):
        raise ValueError(f"a block at {offset} of {metadata_length} bytes lies outside the file")
    prefix = struct.unpack_from("<i", data, offset)[0]
    skip = 8 if prefix == CONTINUATION else 4  # the continuation mark, then the metadata's length
    flatbuffer_length = struct.unpack_from("<i", data, offset + skip - 4)[0]  # read in place: no copy
    if not 0 < flatbuffer_length <= metadata_length - skip:
        raise ValueError(f"the message at {offset} declares {flatbuffer_length} bytes of metadata, "
                         f"its block {metadata_length - skip}")
    start = offset + skip
    message = _Table(data, start + struct.unpack_from("<I", data, start)[0], start, start + flatbuffer_length)
    kind = message.scalar(1, "<B")  # Message.header_type
    if kind not in (HEADER_DICTIONARY_BATCH, HEADER_RECORD_BATCH):
        raise ValueError(f"the block at {offset} holds a message of type {kind}, not a batch")
    body_start, body_length = offset + metadata_length, message.scalar(3, "<q") or 0  # Message.bodyLength
    if body_length < 0 or body_start + body_length > len(data):
        raise ValueError(f"the body of the batch at {offset} ({body_length} bytes) lies outside the file")
    return _batch_decompressed_bytes(message, data, body_start, body_length, kind == HEADER_DICTIONARY_BATCH,
                                     allowance)


def _batch_decompressed_bytes(message: _Table, data, body_start: int, body_length: int, dictionary: bool,
                              allowance: _Allowance) -> int:
    """Sum of the declared sizes, each rounded up to 64 bytes as Arrow allocates it, of one
    compressed batch's buffers (0 when it is not compressed), its body the `body_length` bytes of `data` from `body_start`; `dictionary`: the message is a
    DictionaryBatch, whose RecordBatch is its field 1 (data)."""
    batch = message.table(2)  # Message.header: the RecordBatch (or the DictionaryBatch holding one)
    if dictionary and batch is not None:
        batch = batch.table(1)
    if batch is None or batch.table(3) is None:  # RecordBatch.compression absent: stored as is
        return 0
    total = 0
    for offset, length in batch.struct_vector(2, "<qq", allowance):  # RecordBatch.buffers
        if length < 8:  # an empty buffer carries no prefix
            continue
        if offset < 0 or offset + 8 > body_length:
            raise ValueError(f"a buffer at {offset} lies outside its batch's {body_length}-byte body")
        declared = struct.unpack_from("<q", data, body_start + offset)[0]
        size = length - 8 if declared == UNCOMPRESSED else max(declared, 0)
        total += -(-size // ALLOCATION_ALIGNMENT) * ALLOCATION_ALIGNMENT  # Arrow allocates in 64-byte steps
    return total
