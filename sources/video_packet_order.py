"""A file's index read once per process (`read_index`), with what only the decoder can tell it:
the order it outputs frames of packets the demuxer gives no stamp (`_decoder_order`), and which
of a cut file's partial packets it shows (`_decoder_shows`). Part of `sources.video_decode`."""

from __future__ import annotations

import logging
from dataclasses import replace

from sources import fsio
from sources.video_index import MultistreamChain, UnsupportedVideo, VideoIndex, build_index, decode_plan
from sources.video_index_cache import IndexCache, KeptIndex, file_identity
from sources.video_memory import (DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB, decoder_max_pixels, fitting_pixels,
                                  judge_stream)
from sources.video_open import VideoError, _raise_pages_refusal, open_stream
from sources.video_sample_tables import judge_sample_tables
from sources.video_y4m import judge_y4m_header
from sources.video_session import DecodeSession

log = logging.getLogger(__name__)


_INDEXES = IndexCache()  # indexes this process built by decoding (`sources.video_index_cache`)


def read_index(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB) -> VideoIndex:
    """The file's index (`video_index.build_index`). One whose building decoded frames (unstamped
    packets placed by the decoder's output order; a cut file's partial packets) is kept for the
    next read of the same local file in this process, keyed by its identity (`file_identity`).
    A chained Ogg whose links hold sound too, which FFmpeg's demuxer cannot read past its first
    link, is indexed again through `VideoPages` (its video's pages alone: a chain FFmpeg reads).
    An MP4/MOV declaring more samples than its memory budget or its bytes hold is refused unopened
    (`video_sample_tables`), a Y4M declaring frames over `max_pixels` too (`video_y4m`)."""
    key = _key(uri, max_pixels, memory_mb)
    path, identity = key[0], key[1]
    cached = _INDEXES.get(key) if identity else None
    if cached is not None:
        return cached
    judge_y4m_header(uri, max_pixels)  # before FFmpeg refuses a size past its own limit as unreadable
    judge_sample_tables(uri, memory_mb)  # before FFmpeg indexes every sample an MP4/MOV declares
    decoded = False

    def shows(index: VideoIndex, positions: list[int]) -> set[int]:
        nonlocal decoded
        decoded = True
        return _decoder_shows(uri, max_pixels, memory_mb, index, positions)

    video_pages = False

    def order(last: int, joins: tuple[int, ...] = ()) -> list[int]:
        nonlocal decoded
        decoded = True
        return _decoder_order(uri, max_pixels, memory_mb, last, video_pages, joins)

    try:
        try:
            index = _built_index(uri, shows, order, video_pages)
        except MultistreamChain as chain:
            video_pages = True
            try:
                index = _built_index(uri, shows, order, video_pages)
            except VideoError as exc:
                if exc.reason not in ("unreadable", "no_video_stream"):
                    raise
                raise chain from None  # no Theora found through its pages: the file as FFmpeg reads it
    except UnsupportedVideo as exc:
        raise VideoError(exc.reason, exc.detail) from None
    if decoded and identity and file_identity(path) == identity:  # unchanged while indexed
        _INDEXES.put(key, index)
    return index


def _key(uri: str, max_pixels: int, memory_mb: int) -> tuple:
    """What an index of `uri` is kept under: its local path, the file's identity (None for a file
    that is not local or cannot be read: never kept), and the budgets its decode was judged with."""
    path = fsio.local_path(uri)
    return path, file_identity(path) if path else None, max_pixels, memory_mb


def kept_index(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB) -> KeptIndex | None:
    """The index of `uri` this process built by decoding and keeps (`read_index`), to hand to
    another process reading the same file; None where it keeps none (most files: their index
    comes from demuxing alone)."""
    key = _key(uri, max_pixels, memory_mb)
    index = _INDEXES.get(key) if key[1] else None
    return KeptIndex(key, index) if index is not None else None


def keep_index(kept: KeptIndex) -> None:
    """Keep an index another process built by decoding (`kept_index`), as if this one had: its
    next `read_index` of the same file and budgets decodes nothing. Not kept when the file is
    not the version it was built for (written anew since)."""
    path, identity = kept.key[0], kept.key[1]
    if identity and file_identity(path) == identity:
        _INDEXES.put(kept.key, kept.index)


def counted_outputs(uri: str, index: VideoIndex, max_pixels: int = DEFAULT_MAX_PIXELS,
                    memory_mb: int = DEFAULT_MEMORY_MB) -> VideoIndex:
    """`index` with `outputs_named` counted where frames are named by the decoder's output order
    (`decode_order_stamps`) and it is not yet: a whole decode, without conversion (the probe's
    own decode counts it and hands it over through `kept_index`, so a build seldom pays this).
    Kept for the next read of the same file, as an index built by decoding is."""
    if not index.decode_order_stamps or index.outputs_named is not None:
        return index
    shown = index.presented
    session = DecodeSession(uri, index, {p: i for i, p in enumerate(shown)}, None, False, 1 << 62, max_pixels,
                            memory_mb, convert=False)
    try:
        for _ in session.run(decode_plan(index, list(range(len(shown))))):
            pass
    except VideoError as exc:
        if exc is not session.too_large:
            raise
    return keep_counted(uri, max_pixels, memory_mb, replace(index, outputs_named=session.outputs_named()))


def keep_counted(uri: str, max_pixels: int, memory_mb: int, index: VideoIndex) -> VideoIndex:
    """Keep an index whose outputs a decode counted (`counted_outputs`) as one built by decoding
    (`read_index`, `kept_index`: handed to the process decoding the clips); returns it."""
    key = _key(uri, max_pixels, memory_mb)
    if key[1] and file_identity(key[0]) == key[1]:
        _INDEXES.put(key, index)
    return index


def _built_index(uri: str, shows, order, video_pages: bool) -> VideoIndex:
    container, stream = open_stream(uri, video_pages)
    try:
        try:
            index = build_index(container, stream, shows, order, video_pages)
        except UnsupportedVideo:
            _raise_pages_refusal(container)  # the cause, where the view was refused
            raise
        _raise_pages_refusal(container)
        return index
    finally:
        container.close()


def _decoder_shows(uri: str, max_pixels: int, memory_mb: int, index: VideoIndex, positions: list[int]) -> set[int]:
    """The stamps of the packets at `positions` (a cut file's partial ones) that the decoder
    outputs a frame for, decoded from their key frame as any frame is (`DecodeSession`, budgets
    judged first). Only cut files pay it: one GOP. A decode that fails shows none of them."""
    shown = index.presented
    place = {p: i for i, p in enumerate(shown)}
    wanted = {index.pts[i]: place[index.pts[i]] for i in positions}
    session = DecodeSession(uri, index, dict(wanted), None, True, 1 << 62, max_pixels, memory_mb, convert=False)
    try:
        got = {w for w, _ in session.run(decode_plan(index, sorted(wanted.values())))}
    except VideoError as exc:
        log.debug("partial packets not decoded: %s", exc)
        return set()
    return {shown[w] for w in got}


def _decoder_order(uri: str, max_pixels: int, memory_mb: int, last: int, video_pages: bool = False,
                   joins: tuple[int, ...] = ()) -> list[int]:
    """The positions (decode order) of packets 0..`last` in the order the decoder outputs their
    frames: each packet is stamped with its position before decoding (`build_index` asks it of
    Matroska blocks and MPEG-TS/PS packets the demuxer gives no stamp). Budgets judged first; a packet that does not
    decode is missing from the list. At each of `joins` (where a later part of a joined file begins)
    the decoder is drained and flushed first, as the decoding session does there."""
    container, stream = open_stream(uri, video_pages)
    try:
        judge_stream(stream, max_pixels, memory_mb, convert=False)
        codec = stream.codec_context
        codec.options = {"max_pixels": str(decoder_max_pixels(fitting_pixels(stream, max_pixels, memory_mb,
                                                                             convert=False)))}
        order: list[int] = []
        position = -1
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            position += 1
            if position > last:
                break
            if position in joins:
                order += _drained(codec)
                codec.flush_buffers()
            packet.pts, packet.dts = position, None
            try:
                order += [frame.pts for frame in codec.decode(packet)]
            except Exception as exc:  # a damaged packet: its frame is missing from the order
                log.debug("decode error at packet %d: %s", position, exc)
        order += _drained(codec)
    finally:
        container.close()
    return [p for p in order if p is not None]


def _drained(codec) -> list[int | None]:
    """The stamps of the frames the decoder still holds, drained (none where draining fails)."""
    try:
        return [frame.pts for frame in codec.decode(None)]
    except Exception as exc:
        log.debug("flush error: %s", exc)
        return []
