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
the unpadded file's pixels. So the rare file whose count its header does not explain is decoded
again at the smallest scale without those zeros, counted the same way (`judge`); good files pay
nothing more. No callback is put into libjpeg: its own decode is all a file costs, however many
warnings it draws.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import functools
import io
import itertools
import logging
import os
import re
import sys
import threading
from contextvars import ContextVar
from typing import Any, Iterator

import PIL
from PIL import Image

from transforms.errors import DecodeError
from transforms.headers import _HEADER_STEPS, _STANDALONE
from transforms.pillow_open import open_input

_JPEG = ("JPEG",)  # what these decodes read: a file the decode opened as a JPEG (MPO: Pillow's JPEG opener)

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
        open_input(io.BytesIO(data), _JPEG).load()
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
            except OSError as exc:  # out of file descriptors (a pipe per read): this moment's, not Pillow's
                log.warning("libjpeg's warnings not read for now (%s): proved again on the next JPEG", exc)
                return None
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


# a marker after fill bytes: not a stuffed FF 00 (an RST too, which `headers`' own pattern skips)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")
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
    of later scans (a multi-scan file's odd SOS parameters too) is judged by `judge`."""
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
        if marker == 0xDA:  # the first scan: what follows is entropy-coded data, judged by `judge`
            if adobe is not None and not (components == 3 and jfif):
                count += adobe not in _ADOBE_SILENT.get(components, (adobe,))
            return count + (bool(frame) and _odd_scan(frame, body))
        pos += 2 + max(length, 2)
    return count


def _counts_small(data: bytes, offset: int, stops: list[int]) -> tuple[list[int | None], bool]:
    """libjpeg's warning counts decoding `data` at the smallest DCT scale (the warnings come from the
    entropy-coded data, alike at every scale), read once it is fed up to each of `stops` (rising),
    and whether every row decoded; ([], False) where the decode went otherwise."""
    image = open_input(io.BytesIO(data), _JPEG)  # a file made here: its Exif segments counted again
    image.draft(image.mode, (1, 1))
    if len(image.tile) != 1 or image.tile[0][0] != "jpeg":
        return [], False
    name, extents, at, args = image.tile[0]
    decoder = _pillow_getdecoder(image.mode, name, args, image.decoderconfig)
    decoder.setimage(Image.core.new(image.mode, image.size), extents)
    counts: list[int | None] = []
    pending, finished, ended = b"", False, False
    try:
        for stop in stops:
            if not ended:  # past Pillow's end nothing more is fed: the count stands
                pending, at = pending + data[at:max(at, stop)], max(at, stop)
            while pending and not ended:
                consumed, status = decoder.decode(pending)
                if consumed < 0:  # Pillow's end: every row decoded (status 0) or libjpeg refused the data
                    finished, ended = status == 0, True
                elif consumed == 0:  # waiting for bytes past this stop
                    break
                pending = pending[max(consumed, 0):]
            counts.append(_count_at(decoder, offset, False))
    finally:
        decoder.cleanup()
    return counts, finished


def scan_warnings(decoder: Any, data: bytes) -> int | None:
    """The warnings libjpeg counted decoding `data` through `decoder` past those its header explains
    (`header_warnings`): each says its entropy-coded data is damaged. None where unknown."""
    count = warnings_of(decoder)
    if not count:
        return count
    return max(0, count - header_warnings(data))


_PADDING = re.compile(rb"(?<=[^\xff])\x00+(?=\xff+[\xd0-\xd7\xd9])")  # zeros before an RST or the EOI, not a stuffed FF 00's
_MARKER_AFTER = re.compile(rb"\xff+[\xd0-\xd7\xd9]")
_LOCATED_MAX = 1 << 14  # zero runs told apart one by one (a camera's file has one an interval), a Python call each
_SLICE = 1 << 16
_ROUNDS = 6  # decodes that try each located run with its first zero kept or not


def _unpadded(data: bytes, keep: dict[int, int] | None = None, located: bool = True) -> tuple[bytes, list[int]]:
    """`data` without the zero bytes a camera put before its restart markers and end of image (as
    many as `keep` says left at the start of the runs it numbers), and, `located`, where each
    run's marker ends in the result."""
    sos = data.find(b"\xff\xda")
    if sos < 0:
        return data, []
    if not located:  # in slices ending at a marker: `re.sub` holds a piece per run, 200 MB for a crafted million
        pieces, at = [data[:sos]], sos
        while at < len(data):
            marker = _MARKER_AFTER.search(data, at + _SLICE)
            end = marker.end() if marker else len(data)
            pieces.append(_PADDING.sub(b"", data[at - 1 : end])[1:])  # the byte before: a run's lookbehind
            at = end
        return b"".join(pieces), []
    pieces, ends, at, size = [], [], 0, 0
    for number, run in enumerate(_PADDING.finditer(data, sos)):
        kept = min(run.start() + (keep or {}).get(number, 0), run.end())
        marker = _MARKER_AFTER.match(data, run.end())
        pieces.append(data[at:kept])
        size += kept - at
        at = run.end()
        ends.append(size + (marker.end() - at if marker else 0))
    pieces.append(data[at:])
    return b"".join(pieces), ends


def judge(data: bytes) -> str:
    """What libjpeg's warnings past its header say of `data`, a JPEG whose decode warned:

    "padding": the file without the zero bytes before its restart markers and end of image decodes
    without a warning: a webcam's or IP camera's padding (OpenCV issue 9477), whatever marker
    libjpeg-turbo names (it carries a padded marker's bytes into a later one's count). An interval
    whose own data ends in bytes 0x00 (one in 36 of a photo's) loses them with the padding: the runs
    where libjpeg then warns are located (the warning count read as each marker is fed) and keep one
    zero more, a round at most `_ROUNDS` times, until the file decodes without a warning;
    "unused": its data decodes every row without a warning, but bytes before its end of image the
    decoder did not use follow (ImageNet's "extraneous bytes before marker 0xd9"): the picture may
    be whole, or damaged so that its data ended early (half of real damage shows only this);
    "damaged": anything else, the picture garbled or grey past the damage.
    Each is a decode at the smallest DCT scale counted with the proved counter (libjpeg's own cost,
    paid only by a file whose decode warned); "damaged" where the layout was not proved."""
    offset = _calibrated()
    if offset is None:
        return "damaged"
    try:
        header = header_warnings(data)
        sos = data.find(b"\xff\xda")
        runs = sum(1 for _ in itertools.islice(_PADDING.finditer(data, max(sos, 0)), _LOCATED_MAX + 1))
        located = runs <= _LOCATED_MAX
        unpadded, _ = _unpadded(data, located=False)
        keep: dict[int, int] = {}
        tried: dict[int, int] = {}
        for _ in range(_ROUNDS if located else 1):
            if not runs:
                break
            kept, ends = _unpadded(data, keep, located)
            counts, _ = _counts_small(kept, offset, [*ends, len(kept)])
            if counts and counts[-1] == header:
                return "padding"
            if len(counts) != len(ends) + 1 or None in counts:
                break
            warned = [i for i, count in enumerate(counts[:-1]) if count > (counts[i - 1] if i else header)]
            if not warned:
                break
            holding = sorted(j for j, zeros in keep.items() if zeros)
            for i in warned:  # its interval's data ended in a zero byte, or the kept one was padding
                tried[i] = tried.get(i, 0) + 1
                if tried[i] > 2:  # warned either way: a kept zero before it was padding, its count carried here
                    before = bisect.bisect_left(holding, i)
                    keep[i] = 0
                    if before:
                        keep[holding[before - 1]] = 0
                else:
                    keep[i] = 1 - keep.get(i, 0)
        end = unpadded.rfind(b"\xff\xd9")
        counts, finished = _counts_small(unpadded, offset, [end if end > 0 else len(unpadded)])
    except DecodeError:  # `too_many_exif_segments`: refused, as the file itself would be
        raise
    except Exception:  # a file Pillow opened once and not twice (another thread's bomb check)
        return "damaged"
    return "unused" if finished and counts == [header] else "damaged"


_CUT_ZEROS = 32  # the run of zeros ending a JPEG with no end of image that is judged
_LOOKAHEAD = 16  # zeros left after its data: libjpeg-turbo reads up to 8 bytes past the bits it decodes


def cut_into_zeros(data: bytes) -> tuple[int, int] | None:
    """(where its zeros start, how many) for a JPEG with no end of image, ending in zeros, whose
    rows do not all decode from the bytes before them: cut, then padded with zeros to its length, as
    a failed or preallocated download leaves it. libjpeg decodes a cut sequential one's zeros as
    coefficients without a warning: a low-quality photo came out with 20-75% of its pixels garbled.
    A whole one missing only its end of image, zeros after, decodes every row from its own bytes
    (it may itself end in a zero byte or two: `_LOOKAHEAD` of them are left), unless its data end
    in more zero bytes of its own: with an optimised Huffman table whose zero codes are flat blocks
    (DC difference 0, end of block), a flat band at its bottom ending at a byte boundary (a review
    found 14 of 585 whole files without their end of image so ending). Such a one, cut by its
    2-byte end of image, is `truncated` too: its zeros cannot be told from a cut's, which decode
    to the same flat band (ImageMagick's tables are such; judging only other tables let 237 of
    2,320 cut files decode garbled). A progressive one never gets
    here: with no end of image libjpeg's first pass never ends, and its decode says `truncated`.
    None otherwise; a decode at the smallest DCT scale, paid only by a file so ending."""
    body = data.rstrip(b"\x00")
    zeros = len(data) - len(body)
    if zeros < _CUT_ZEROS or body.endswith(b"\xff\xd9"):
        return None
    try:
        # a prefix of `data`, whose Exif segments the caller's open counted (`open_input`): no more of them
        image = open_input(io.BytesIO(body + bytes(_LOOKAHEAD)), _JPEG, segments_counted=True)
        image.draft(image.mode, (1, 1))
        image.load()
    except OSError as exc:
        return (len(body), zeros) if "truncated" in str(exc) else None
    except Exception:  # a file Pillow opened once and not twice (another thread's bomb check)
        return None
    return None
