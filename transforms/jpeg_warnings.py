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
None: no JPEG is judged damaged by this check, the decode goes on as it did before, and the log
says so once, naming Pillow's version.

A count cannot tell a camera's padding from damage: zero bytes before a restart marker or the end
of image (webcams, IP cameras) draw "extraneous bytes before marker" as damage does, and decode to
the unpadded file's pixels. So the rare file whose count its header does not explain is decoded a
second time with libjpeg's `emit_message` wrapped, to read each warning's own message and where
the input stood (`warnings_said`, `padding_only`); good files pay nothing more.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import re
import sys
import threading
from contextvars import ContextVar
from typing import Any, Iterator

import PIL
from PIL import Image

log = logging.getLogger(__name__)

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


def _new_lock_in_child() -> None:
    """A fork while another thread held the lock (proving the layout) leaves the child a lock no
    thread of its own will release: its first JPEG decode waited for ever. The child proves the
    layout again where the parent had not finished."""
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


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
            if found is None:
                log.warning("libjpeg's warnings cannot be read from Pillow %s's JPEG decoder (its memory layout "
                            "was not proved): JPEGs damaged inside their scan are not rejected", PIL.__version__)
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
_SEQUENTIAL = {0xC0: "huffman", 0xC1: "huffman", 0xC9: "arithmetic"}  # SOF markers of sequential DCT frames
_ADOBE_SILENT = {3: (0, 1), 4: (0, 2)}  # the Adobe transforms libjpeg takes without a word, by components


def _odd_scan(frame: str, body: bytes) -> bool:
    """libjpeg's "Invalid SOS parameters for sequential JPEG": a sequential frame's scan whose
    spectral range or approximation is not 0-63, 0 (a Samsung phone writes Se=0); the sequential
    decoder ignores them and decodes every coefficient, so the pixels are whole."""
    at = 1 + 2 * body[0] if body else len(body)
    if at + 3 > len(body):
        return False
    ss, se, approximation = body[at], body[at + 1], body[at + 2]
    if frame == "arithmetic":  # jdarith.c's rule: an Se of 64 or more passes
        return bool(ss or approximation or (se < 64 and se != 63))
    return bool(ss or se != 63 or approximation)


def header_warnings(data: bytes) -> int:
    """The warnings libjpeg gives a JPEG's header, up to its first scan, that say nothing of its
    pixels: a gap of bytes that are no marker between two segments (an old encoder's stray byte,
    `FF 00` there: "N extraneous bytes before marker 0xdb", one for each gap; Pillow issue 630),
    a JFIF major version other than 1, an Adobe colour transform libjpeg does not know for its
    components (it assumes YCbCr or YCCK), a first scan of a sequential frame with odd SOS
    parameters (`_odd_scan`). The picture decodes whole with them, as browsers show it. Nothing
    past the first scan header is walked: damaged scan data can hold any marker; what libjpeg says
    of later scans (a multi-scan file's odd SOS parameters too) is judged by `padding_only`."""
    count, pos, end = 0, 2, len(data)
    frame, components, jfif, adobe = None, 0, False, None
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
        if marker in (0xD8, 0xD9):
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
            frame, components = _SEQUENTIAL.get(marker, ""), body[5] if len(body) > 5 else 0
        if marker == 0xE0 and length >= 16 and body[:5] == b"JFIF\x00":
            jfif = True
            count += body[5] != 1
        if marker == 0xEE and length >= 14 and body[:5] == b"Adobe":
            adobe = body[11]
        if marker == 0xDA:  # the first scan: what follows is entropy-coded data, judged by `padding_only`
            if adobe is not None and not (components == 3 and jfif):
                count += adobe not in _ADOBE_SILENT.get(components, (adobe,))
            return count + (bool(frame) and _odd_scan(frame, body))
        pos += 2 + max(length, 2)
    return count


# jpeg_error_mgr's fields past num_warnings (its other offsets are above): the message table and its last code
_EMIT_AT = _POINTER  # emit_message, the second of its five methods
_MSG_CODE = 5 * _POINTER
_TABLE = _NUM_WARNINGS + ctypes.sizeof(ctypes.c_long)
_LAST_CODE = _TABLE + _POINTER
_SRC_AT = 4 * _POINTER + 8  # jpeg_decompress_struct's src, past err, mem, progress, client_data and two ints
_EMIT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)
# libjpeg's warnings that lose no pixel, by their format strings (jerror.h), read from the library's own
# table rather than by code, which differs between libjpeg versions
_HARMLESS = (b"Corrupt JPEG data: %u extraneous bytes before marker 0x%02x",  # JWRN_EXTRANEOUS_DATA
             b"Invalid SOS parameters for sequential JPEG",  # JWRN_NOT_SEQUENTIAL
             b"Unknown Adobe color transform code %d",  # JWRN_ADOBE_XFORM
             b"Warning: unknown JFIF revision number %d.%02d")  # JWRN_JFIF_MAJOR


def _message(err: int, code: int) -> bytes:
    """The format string of libjpeg's message `code` (b"" where its table has none), read through
    the kernel as the calibration reads: an unmapped address is b"", never a fault."""
    table = _word(err + _TABLE)
    last = _peek(err + _LAST_CODE, 4)
    if not table or last is None or not 0 <= code <= int.from_bytes(last, sys.byteorder, signed=True):
        return b""
    text = _peek(_word(table + code * _POINTER) or 0, 64)
    return text.split(b"\0")[0] if text and b"\0" in text else b""


def warnings_said(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """Each warning libjpeg gives decoding `data` (a JPEG Pillow opened whole): its format string and
    where in `data` its input stood (before the marker, for "extraneous bytes before marker").
    Decoded again at the smallest DCT scale (the warnings come from the entropy-coded data, alike at
    every scale) with libjpeg's `emit_message` wrapped to note every warning, since its error
    manager keeps only the count and the last message's code (a trace message overwrites it).
    None where the layout was not proved or the decode went otherwise than the first one."""
    offset = _calibrated()
    if offset is None:
        return None
    image = Image.open(io.BytesIO(data))
    image.draft(image.mode, (1, 1))
    if len(image.tile) != 1 or image.tile[0][0] != "jpeg":
        return None
    name, extents, start, args = image.tile[0]
    decoder = _pillow_getdecoder(image.mode, name, args, image.decoderconfig)
    decoder.setimage(Image.core.new(image.mode, image.size), extents)
    said: list[tuple[bytes, int, int]] = []
    base = [0, 0]  # where libjpeg's input buffer lies in memory, and in `data`
    try:
        decoder.decode(b"")  # libjpeg's error manager set up, nothing read yet
        context = _context(decoder)
        err = _count_at(decoder, offset, False) is not None and ctypes.c_void_p.from_address(context + offset).value
        if not err:
            return None
        slot = ctypes.c_void_p.from_address(err + _EMIT_AT)
        if not slot.value:
            return None
        emit = _EMIT(slot.value)

        def noted(cinfo: int, level: int) -> None:
            if level < 0:
                source = _word(cinfo + _SRC_AT)
                at = (_word(source) or 0) - base[0] + base[1] if source else -1
                said.append((_message(err, ctypes.c_int.from_address(err + _MSG_CODE).value), at,
                             ctypes.c_int.from_address(err + _MSG_CODE + 4).value))
            emit(cinfo, level)

        hook = _EMIT(noted)
        slot.value = ctypes.cast(hook, ctypes.c_void_p).value
        try:
            rest = data[start:]
            while rest:
                base[:] = [ctypes.cast(ctypes.c_char_p(rest), ctypes.c_void_p).value, len(data) - len(rest)]
                consumed, _status = decoder.decode(rest)
                if consumed <= 0:
                    break
                rest = rest[consumed:]
            counted = ctypes.c_long.from_address(err + _NUM_WARNINGS).value
        finally:
            slot.value = ctypes.cast(emit, ctypes.c_void_p).value
    finally:
        decoder.cleanup()
    return said if counted == len(said) else None


def scan_warnings(decoder: Any, data: bytes) -> int | None:
    """The warnings libjpeg counted decoding `data` through `decoder` past those its header explains
    (`header_warnings`): each says its entropy-coded data is damaged. None where unknown."""
    count = warnings_of(decoder)
    if not count:
        return count
    return max(0, count - header_warnings(data))


def _padding_before(data: bytes, at: int) -> int:
    """How many zero bytes a camera put before the marker at `at` (a stuffed `FF 00` is data)."""
    run = 0
    while run < at and data[at - run - 1] == 0:
        run += 1
    return run - 1 if run and data[at - run - 1] == 0xFF else run


_PADDED_MARKER = re.compile(rb"\xff+[\xd0-\xd7\xd9]")  # a restart marker or the end of image, after fill bytes


@functools.lru_cache(maxsize=1)
def _hook_proved() -> bool:
    """`warnings_said` proved once per process on the calibration's JPEGs: nothing of the whole one,
    libjpeg's "premature end of data segment" alone of the one cut in its scan."""
    try:
        whole, cut = _sample_jpegs()
        said = [message for message, _at, _count in warnings_said(cut) or ()]
        proved = warnings_said(whole) == [] and said == [b"Corrupt JPEG data: premature end of data segment"]
    except Exception:  # pragma: no cover - a Pillow whose decoders this cannot drive
        proved = False
    if not proved and _calibrated() is not None:
        log.warning("libjpeg's messages cannot be read from Pillow %s's JPEG decoder: a JPEG padded before "
                    "its markers (a webcam's) is rejected as damaged", PIL.__version__)
    return proved


def padding_only(data: bytes) -> bool:
    """Whether every warning libjpeg gives `data` loses no pixel: one of `_HARMLESS` about its
    header, or "extraneous bytes before marker" where zero bytes stand before that restart marker
    or end of image: a webcam's or IP camera's padding (OpenCV issue 9477), decoded to the pixels
    of the file without it. Damage makes libjpeg say the same of the interval it garbles
    ("premature end of data segment" or "bad Huffman code" as often), but before that interval's
    own last bytes, not zeros; the count in the message says nothing here (libjpeg-turbo carries
    its read-ahead into it). What it cannot tell: damage ending an interval early whose last byte
    is a legitimate 0x00 (2 of 231 damaged JPEGs that warned). Paid only by a file whose decode
    warned past its header (a second decode at the smallest DCT scale); False where unproved."""
    try:
        said = warnings_said(data) if _hook_proved() else None
    except Exception:  # a file Pillow opened once and not twice (another thread's bomb check): unproved
        return False
    if said is None:
        return False
    for message, at, _count in said:
        if message in _HARMLESS[1:]:
            continue
        marker = _PADDED_MARKER.match(data, at) if 0 < at < len(data) else None
        if message != _HARMLESS[0] or marker is None or not _padding_before(data, at):
            return False
    return True
