"""How many warnings libjpeg met decoding a JPEG through Pillow: its own judgement of damage.

A JPEG damaged inside its entropy-coded data (a dd of zeros over a 4 KiB block, a burst of flipped
bits) decodes to grey or garbled blocks without any error: libjpeg only warns ("Corrupt JPEG data:
premature end of data segment", "N extraneous bytes before marker 0xd9", "bad Huffman code") and
counts each warning in its error manager's `num_warnings`, which djpeg and ImageMagick print.
Pillow silences the messages and never reads the count (its JpegDecode.c keeps the check
commented out; Pillow issue 9106), and a second decode to count them would double a JPEG's decode
time. So the count is read from Pillow's own decoder once it has decoded: the decoder objects
`Image._getdecoder` makes inside `collecting()` are kept (a wrapper, like `transforms.decode`'s
around Pillow's bomb check, that does nothing outside it), and `warnings_of` reads the counter
through the decoder's state (`ImagingCodecStateInstance.context`, the `JPEGSTATE` whose
`jpeg_decompress_struct` points at its error manager).

Those are Pillow's and libjpeg's memory layouts, not an API: they are found and proved once per
process (`_calibrated`) by decoding two small JPEGs made here, a whole one (no warning) and the
same cut by an early EOI in its scan (libjpeg's "premature end of data segment"), every address
read through the kernel (a `write` to a pipe refuses an address that is not mapped) until then.
Where the proof fails (another Pillow build, another Python object header) `warnings_of` says
None: no JPEG is judged damaged by this check, and the decode goes on as it did before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import re
import sys
import threading
from contextvars import ContextVar
from typing import Any, Iterator

from PIL import Image

_POINTER = ctypes.sizeof(ctypes.c_void_p)
# jpeg_error_mgr: five method pointers, msg_code (int), msg_parm (a union of int[8] and char[80]),
# trace_level (int), then num_warnings (long)
_NUM_WARNINGS = -(-(5 * _POINTER + 4 + 80 + 4) // ctypes.sizeof(ctypes.c_long)) * ctypes.sizeof(ctypes.c_long)
_ERR_SEARCH = 128  # bytes of JPEGSTATE before its jpeg_decompress_struct, whose first field is `err`
_STATE_SPAN = 1 << 16  # where the error manager lies inside the JPEGSTATE the context points at


class _CodecState(ctypes.Structure):
    """Pillow's `ImagingCodecStateInstance` (Imaging.h), up to its `context`."""

    _fields_ = [("ints", ctypes.c_int * 10), ("shuffle", ctypes.c_void_p), ("bits", ctypes.c_int),
                ("bytes", ctypes.c_int), ("buffer", ctypes.c_void_p), ("context", ctypes.c_void_p)]


class _DecoderObject(ctypes.Structure):
    """Pillow's `ImagingDecoderObject` (decode.c): the object header, two methods, its state."""

    _fields_ = [("header", ctypes.c_byte * object.__basicsize__), ("decode", ctypes.c_void_p),
                ("cleanup", ctypes.c_void_p), ("state", _CodecState)]


_COLLECTED: ContextVar[list[Any] | None] = ContextVar("transforms_jpeg_decoders", default=None)


def _getdecoder_kept(mode: str, decoder_name: str, args: Any, extra: tuple[Any, ...] = ()) -> Any:
    decoder = _pillow_getdecoder(mode, decoder_name, args, extra)
    kept = _COLLECTED.get()
    if kept is not None and decoder_name == "jpeg":
        kept.append(decoder)
    return decoder


# Pillow's own, wrapped once (a reload of this module finds the wrapper and wraps the original)
_pillow_getdecoder = getattr(Image._getdecoder, "__wrapped__", Image._getdecoder)
_getdecoder_kept.__wrapped__ = _pillow_getdecoder  # type: ignore[attr-defined]
Image._getdecoder = _getdecoder_kept


@contextlib.contextmanager
def collecting() -> Iterator[list[Any]]:
    """The JPEG decoders Pillow makes in this thread inside the block (an `image.load()`)."""
    token = _COLLECTED.set([])
    try:
        yield _COLLECTED.get()  # type: ignore[misc]
    finally:
        _COLLECTED.reset(token)


def _peek(address: int, size: int) -> bytes | None:
    """`size` bytes at `address`, or None where it is not mapped (the kernel's EFAULT: no fault)."""
    if address <= 0:
        return None
    read_end, write_end = os.pipe()
    try:
        written = _libc().write(write_end, ctypes.c_void_p(address), ctypes.c_size_t(size))
        return os.read(read_end, size) if written == size else None
    finally:
        os.close(read_end)
        os.close(write_end)


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    libc.write.restype = ctypes.c_ssize_t
    return libc


def _word(address: int) -> int | None:
    raw = _peek(address, _POINTER)
    return int.from_bytes(raw, sys.byteorder) if raw else None


_CONTEXT_AT = _DecoderObject.state.offset + _CodecState.context.offset


def _context(decoder: Any) -> int | None:
    if type(decoder).__basicsize__ < ctypes.sizeof(_DecoderObject):
        return None
    return ctypes.c_void_p.from_address(id(decoder) + _CONTEXT_AT).value or None


def _count_at(decoder: Any, err_offset: int, checked: bool) -> int | None:
    """num_warnings of the error manager the pointer `err_offset` bytes into the context names."""
    context = _context(decoder)
    if context is None:
        return None
    err = _word(context + err_offset) if checked else ctypes.c_void_p.from_address(context + err_offset).value
    if not err or not context < err < context + _STATE_SPAN:
        return None
    if checked:
        raw = _peek(err + _NUM_WARNINGS, ctypes.sizeof(ctypes.c_long))
        return ctypes.c_long.from_buffer_copy(raw).value if raw else None
    return ctypes.c_long.from_address(err + _NUM_WARNINGS).value


def _sample_jpegs() -> tuple[bytes, bytes]:
    """A whole 64x64 JPEG of noise and the same with an EOI 64 bytes into its scan."""
    noise = bytes((i * 7919 + (i >> 6) * 104729) % 251 for i in range(64 * 64 * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 64), noise).save(out, "JPEG", quality=90)
    whole = out.getvalue()
    sos = whole.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(whole[sos + 2 : sos + 4], "big")
    cut = whole[: scan + 64].rstrip(b"\xff") + b"\xff\xd9"
    return whole, cut


def _decoders_of(data: bytes) -> list[Any]:
    with collecting() as kept:
        Image.open(io.BytesIO(data)).load()
    return kept


_LOCK = threading.Lock()
_ERR_OFFSET: list[int | None] = []  # once found: the offset, or None where the proof failed


def _calibrated() -> int | None:
    """The offset of `err` inside the JPEG decoder's context, proved on two JPEGs; None if unproved."""
    if _ERR_OFFSET:
        return _ERR_OFFSET[0]
    with _LOCK:
        if not _ERR_OFFSET:
            found = None
            try:
                whole, cut = (_decoders_of(data) for data in _sample_jpegs())
                if len(whole) == 1 and len(cut) == 1:
                    for offset in range(0, _ERR_SEARCH, _POINTER):
                        if _count_at(whole[0], offset, True) == 0 and (_count_at(cut[0], offset, True) or 0) >= 1:
                            found = offset
                            break
            except Exception:  # pragma: no cover - a Pillow whose decoders this cannot read
                found = None
            _ERR_OFFSET.append(found)
    return _ERR_OFFSET[0]


def warnings_of(decoder: Any) -> int | None:
    """How many warnings libjpeg counted in `decoder` (a decoder `collecting` kept, done
    decoding), or None where this Pillow's layout was not proved."""
    offset = _calibrated()
    return None if offset is None else _count_at(decoder, offset, False)


_HEADER_STEPS = 4096  # segments walked before the first scan: a real file has tens
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7 carry no length
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")  # a marker after fill bytes: not a stuffed FF 00


def header_warnings(data: bytes) -> int:
    """The warnings libjpeg gives a JPEG's header, before its first scan, that say nothing of its
    pixels: a gap of bytes that are no marker between two segments (an old encoder's stray byte,
    `FF 00` there: "N extraneous bytes before marker 0xdb", one for each gap; Pillow issue 630),
    a JFIF major version other than 1, an Adobe colour transform other than 0-2. The picture
    decodes whole with them, as browsers show it."""
    count, pos, end = 0, 2, len(data)
    for _ in range(_HEADER_STEPS):
        if pos + 4 > end:
            break
        if data[pos] != 0xFF or data[pos + 1] == 0x00:  # libjpeg's next_marker skips to a marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            count, pos = count + 1, found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF or marker in _STANDALONE:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # the first scan: what follows is entropy-coded data
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and body[:5] == b"JFIF\x00" and len(body) > 5 and body[5] != 1:
            count += 1
        if marker == 0xEE and body[:5] == b"Adobe" and len(body) > 11 and body[11] > 2:
            count += 1
        pos += 2 + max(length, 2)
    return count


def scan_warnings(decoder: Any, data: bytes) -> int | None:
    """The warnings libjpeg counted decoding `data` through `decoder` past those its header explains
    (`header_warnings`): each says its entropy-coded data is damaged. None where unknown."""
    count = warnings_of(decoder)
    if not count:
        return count
    return max(0, count - header_warnings(data))
