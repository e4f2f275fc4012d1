"""Decode exactly the presented frames a plan wants, once per file, touching as little as possible.

Runs inside the budget worker (`sources.budget`), so these are plain functions of picklable
arguments. The PyAV engine demuxes the file in order and sends the decoder only the packet
stretches that `video_index.decode_plan` says the wanted frames need; within a stretch, frames
nobody wants are skipped by the decoder when nothing references them (`skip_frame=NONREF`).
Long gaps between stretches are jumped with a container seek, checked against the index
(MPEG-TS/PS seeks land late or early) and retried earlier, or replaced by reading on.

Frames are named by time stamp through the index, so a frame is never taken for another; a
frame is returned in display orientation (the stream's rotation applied, as players do). A
decoder outputs frames in presentation order, so within one decoding run their stamps must rise:
where they do not, the stamps are not presentation times and the video is refused
(`unsupported_container`). That check only sees a fall once it happens, after frames named by
the stamps before it, so stamps that may not be presentation times are never used for names:
streams whose stamps only count packets in decode order (`VideoIndex.decode_order_stamps`: every
codec able to reorder in AVI, B-frames declared or not) are named by the decoder's output order.

Memory is judged before any frame is decoded, from what the stream declares (`judge_memory`):
width x height x the bytes a pixel takes in the decoder's format x the frames its decoder may
hold at once (reference and reorder frames; for H.264 and HEVC what the declared level allows),
plus the RGB conversion of one frame. A video whose frames exceed `max_pixels`, or whose cost is
over the memory budget even with frames converted straight to the working size, is refused
`video_too_large` before decoding; one that only fits that way is converted to the working size
in the scaler, frame by frame (never a full-size RGB frame). Within the budget, frames are
converted at full size, exactly as before.

A stream whose frames grow mid-way (an HLS or DASH recording switching quality, clips of two sizes
joined by a stream copy: the new size comes with a new SPS, the stream declares the first) is
judged again at each new size, frames keeping their own size. The decoder is told the largest
frame that `max_pixels` and the memory budget admit (FFmpeg's own `max_pixels` option, checked
before a frame's buffer is allocated; `fitting_pixels`: the same judgement, at the declared shape
and codec level), so a frame past it is never allocated: it does not decode, the frames before it
(and after it, should the stream shrink back) are delivered, and the wanted frames it cost are
`video_too_large` (naming `max_pixels` or the budget), never a silent gap. A decoded frame larger
than declared is judged again at its exact size: one that still does not fit (another shape than
declared) ends the decode `video_too_large` there (the frames before it delivered).

Non-square pixels (a sample aspect ratio other than 1:1, as in anamorphic DVD and broadcast
video) are shown as players show them: the frame is stretched to its display aspect ratio in the
RGB conversion, keeping its height (width x SAR), as `ffmpeg -vf scale=iw*sar:ih` does. Ratios
outside 1:4..4:1 are not believed (left unapplied, said in the lineage).

A frame is the picture the stream declares: the whole cropping rectangle of the coded frame
(H.264/HEVC frame cropping), its left edge included wherever it falls (`AV_CODEC_FLAG_UNALIGNED`;
by default FFmpeg keeps columns a crop off 32-byte alignment would hide, as decord does).

Colour: frames are converted to RGB with the matrix and range the stream declares (BT.709,
BT.601, BT.2020; limited or full), bit for bit what ffmpeg gives told the same
(`scale=in_color_matrix=...:in_range=...`, tests/test_video_zoo.py) for 8-bit 4:2:0, which swscale
converts by one fixed path whatever the flags. From more bits (x264 10-bit) its general path
upsamples the chroma, placed differently by PyAV's bilinear context and by the CLI (bicubic by
default, or bilinear): equal to a level or two where the chroma is flat, apart beside chroma
edges only (up to 116 levels on one pixel pair at testsrc2's yellow/blue border); neither is
nearer a numpy conversion of the decoded planes. A stream that declares no
matrix (H.273 "unspecified: determined by the application") is converted as players show it: by
its frame size, BT.709 for HD (at least 1280 wide or over 576 lines: mpv and libplacebo's
`pl_color_system_guess_ycbcr`, which Kodi uses too; Chromium and Firefox guess alike, from
720 lines), else BT.601 (`guessed_matrix`), named in the lineage. swscale, and so the ffmpeg CLI
and decord, take every untagged stream as BT.601 instead: untagged HD was 3.6-8.8 levels mean off
what players show on colour bars, so decord does not decode it. Both kinds exist: ffmpeg's own HD test
bars (`smptehdbars`) are BT.709 values left untagged, RGB it encodes without a matrix is BT.601
left untagged; a player shows the latter slightly off, and so do we. MJPEG and VP8 declare BT.601
in the bitstream: never guessed.

Interlaced video (frames coded as two fields: broadcast, camcorders, DVD) is not deinterlaced: a
frame is its two fields woven, as ffmpeg shows it without a deinterlacer, and swscale upsamples
each field's chroma on its own (what ffmpeg's `scale=interl=1` does), since 4:2:0 chroma of an
interlaced frame belongs to its fields. Named in the lineage (`interlaced`).

HDR streams (a declared PQ or HLG transfer, phones' default) are tone-mapped to SDR BT.709 as
ffmpeg's standard zscale/tonemap recipe shows them (`transforms.hdr`): converted like SDR frames
they come out washed out and dim, in the wrong gamut. The stream's declaration decides (judged
before decoding, named in the lineage); the conversion runs in float32 a band of rows at a time
from a 16-bit 4:4:4 copy of the frame, and is counted as such in `judge_memory`.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np

from sources import fsio
from sources.budget import SEND_AHEAD_BYTES
from sources.video_bitstream import ParameterSets, VP9Sizes, header_size
from sources.ogg_video_pages import VideoPages
from sources.video_index import (JUMPED, MultistreamChain, Stretch, UnsupportedVideo, VideoIndex, build_index,
                                  multistream_detail,
                                 decode_plan, key_of)
from sources.video_index_cache import IndexCache, file_identity
from transforms import hdr as hdr_colour
from transforms.errors import Rejected, exception_detail

log = logging.getLogger(__name__)

SEEK_BYTES = 8 << 20  # a gap holding more packet bytes than this is seeked over rather than read
DEFAULT_MAX_PIXELS = 178_956_970  # the image setting's default (transforms.decode), per frame
DEFAULT_MEMORY_MB = 1536  # one video's decoding process, judged from the declaration and watched
# that process before any frame (Python, PyAV, NumPy, OpenCV), plus the frames it may have sent
# ahead of the parent (`sources.budget.SEND_AHEAD_BYTES`)
DECODER_BASE_MB = 256 + (SEND_AHEAD_BYTES >> 20)
COLLECT_PIXELS = 1 << 20  # a first frame this large is freed at once (its side data ties it in a cycle)
RGB_CONVERSION_BYTES = 6  # per pixel: PyAV's RGB frame and its array (5.7 measured at 8192x8192)
INTERLACED_FIELD_ORDERS = (2, 3, 4, 5)  # AVFieldOrder: TT, BB, TB, BT (0 unknown, 1 progressive)
SAR_LIMITS = (Fraction(1, 4), Fraction(4))  # sample aspect ratios applied; others are not believed
# an untagged frame at least this wide, or taller than this, is HD: converted as BT.709 (`guessed_matrix`)
HD_WIDTH, SD_LINES = 1280, 576
UNTAGGED_MATRICES = (2, 3)  # AVColorSpace UNSPECIFIED, RESERVED: no matrix declared
SWS_CS_ITU709 = 1  # swscale's BT.709 matrix, told to the RGB conversion of a guessed frame
CROP_ALIGN = 32  # bytes: a plane cropped off this alignment is one decord's FFmpeg leaves uncropped
# HDR: per pixel the 16-bit 4:4:4 frame (6) and the RGB array (3); the float32 work of one band
HDR_CONVERSION_BYTES = 9
HDR_BAND_PIXELS = hdr_colour.BAND_PIXELS  # pixels tone-mapped at once
HDR_BAND_BYTES = hdr_colour.BAND_BYTES


def stream_hdr(stream) -> str | None:
    """"pq" or "hlg" when the stream declares an HDR transfer (its frames are tone-mapped), else None."""
    return hdr_colour.transfer_name(stream.codec_context.color_trc)


def sample_aspect_ratio(stream) -> Fraction | None:
    """The stream's pixel aspect ratio when it is applied (not 1:1, within `SAR_LIMITS`), else None."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not sar or sar == 1 or not SAR_LIMITS[0] <= sar <= SAR_LIMITS[1]:
        return None
    return Fraction(sar)


def sar_width(width: int, sar: Fraction | None) -> int:
    """A frame's width once its pixels are made square (height kept)."""
    return width if sar is None else max(1, int(round(width * sar)))


class VideoError(Rejected):
    """A video that cannot be opened or decoded."""


# FFmpeg checks its `max_pixels` against a buffer's width rounded up to its stride alignment (64
# bytes at most): the decoder is given this much room over ours, which then judges the exact size
DECODER_PIXEL_SLACK = 16  # 1/16 more: a 1024-wide frame rounds up by 6% at the most
# ... and never less than this: MPEG-4 Part 2's decoder asks for 125,440 pixels whatever its frames'
# size up to 352x288 (53,760 at 64x48), so a small `max_pixels` refused its first frame
DECODER_PIXEL_FLOOR = 1 << 17


def decoder_max_pixels(max_pixels: int) -> int:
    """The `max_pixels` told to FFmpeg's decoder: ours, plus its alignment's room."""
    return max_pixels + max(max_pixels // DECODER_PIXEL_SLACK + 64 * 64, DECODER_PIXEL_FLOOR)


def frames_too_large(width: int, height: int, max_pixels: int, memory_mb: int | None = None) -> VideoError:
    """The reject of the wanted frames a stream that grew past `max_pixels` (or, with `memory_mb`,
    past the largest frame that memory budget admits) did not decode."""
    over = f"max_pixels={max_pixels}" if memory_mb is None else \
        f"the {max_pixels} that the memory budget of {memory_mb} MiB admits"
    return VideoError("video_too_large", f"the frame size grows to {width}x{height} mid-stream ({width * height} "
                                         f"pixels, over {over}): frames of that size are not decoded, those "
                                         "before are kept")


# errors of this machine met by the decoder opening a file: too many open files (this process's
# limit, `ulimit -n`; the system's). Raised as the OSError they are, never a `VideoError`: the
# caller makes them a `records.MachineError`. Not ENOMEM: FFmpeg also says ENOMEM for an allocation
# a damaged or hostile stream declares, which is the input's (`unreadable`), and the memory budget's
DECODER_MACHINE_ERRNOS = (errno.EMFILE, errno.ENFILE)


def _machine_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DECODER_MACHINE_ERRNOS


def _quiet() -> None:
    import av.logging

    av.logging.set_level(av.logging.FATAL)


def open_stream(uri: str, video_pages: bool = False):
    """The file opened and its video stream (`video_stream`). `video_pages`: an Ogg read through
    `VideoPages`, only its video's pages (a chained Ogg with sound, `VideoIndex.video_pages`)."""
    import av

    _quiet()
    pages = None
    try:
        path = fsio.local_path(uri)
        pages = VideoPages(open(path, "rb") if path else fsio.open_file(uri)) if video_pages else None
        container = av.open(pages, format="ogg") if pages else av.open(path or fsio.open_file(uri))
    except Exception as exc:
        if _machine_error(exc):  # PyAV's av.error.OSError (an OSError) with the errno FFmpeg met
            raise
        if pages is not None and pages.refusal:
            raise VideoError("unsupported_container", _pages_refusal_detail(pages.refusal)) from None
        raise VideoError("unreadable", exception_detail(exc)) from None
    stream = video_stream(container)
    if stream is None:
        covers = len(container.streams.video)
        held = _streams_held(container)
        # only streams FFmpeg could not type (a track whose header a cut ended: moov at the end, cut inside)
        untyped = bool(held) and all(s.type in ("data", "unknown") for s in container.streams)
        container.close()
        raise VideoError("no_video_stream", f"only cover art ({covers} attached picture), no video" if covers else
                         f"the file holds {held or 'no streams'}, no video"
                         + (" (the file may be cut inside its index)" if untyped else ""))
    if stream.codec_context is None:  # PyAV makes none where FFmpeg has no decoder for the stream's codec
        container.close()
        raise VideoError("unsupported_codec", "FFmpeg has no decoder for the codec the video stream declares "
                                              "(none: a file cut inside its track's header, or a codec it lacks)")
    stream.thread_type = "NONE"  # skip_frame is switched per packet: it must apply to that packet
    # the whole cropping rectangle the stream declares: FFmpeg otherwise drops a left crop that
    # would leave the picture off its 32-byte alignment (H.264 `crop_left=8`: 8 columns too many)
    stream.codec_context.flags |= av.codec.context.Flags.unaligned
    return container, stream


def _pages_refusal_detail(refusal: str) -> str:
    return f"{multistream_detail('theora')}; {refusal}"


def _raise_pages_refusal(container) -> None:
    """The file's refusal where `container` reads it through `VideoPages` and that view refused it
    (a part holding video other than Theora, junk past its cap): its frames so read are not the file's."""
    pages = getattr(container.file, "file", None)  # PyAV's wrapper of a Python file, then that file
    if isinstance(pages, VideoPages) and pages.refusal:
        raise UnsupportedVideo("unsupported_container", _pages_refusal_detail(pages.refusal))


def _streams_held(container) -> str:
    """What a file without video holds, for the reject's detail: "1 audio stream", "2 audio
    streams and 1 subtitle stream" ("" for none)."""
    kinds: dict[str, int] = {}
    for stream in container.streams:
        kinds[stream.type] = kinds.get(stream.type, 0) + 1
    parts = [f"{n} {kind} stream{'s' if n > 1 else ''}" for kind, n in kinds.items()]
    return " and ".join(parts)


def video_stream(container):
    """The video the ffmpeg CLI picks (`ffmpeg -i in out`: the highest resolution, a stream flagged
    default counting 5,000,000 pixels more, the first of equals), never cover art, and among the
    streams FFmpeg can decode. A main track beside a smaller second angle was read as the second
    angle where that came first in Matroska (`av_find_best_stream`, taken before, ranks by the
    default flag, frames probed and bit rate, not size). ffmpeg's way of adding a cover
    (`-disposition:v:0 attached_pic`) leaves it in Matroska as a 1-frame MJPEG track, no longer
    flagged attached, nor default: the CLI may show it (a cover over 5 million pixels larger than
    a default video, or larger than a video not flagged). A track is taken for a still picture
    from what it declares (`_still`: one frame), never from its codec: a camera's MJPEG track
    beside a smaller H.264 one was passed over for its codec's name, where the CLI shows it. A
    still is the video only where no other track is left. In MP4 a cover is an attached picture.
    One undecodable track beside a decodable one lost the whole file to `unsupported_codec`: the
    best decodable one is read. The first moving stream (undecodable) when none can be decoded;
    None when the file holds no video but cover art (a song)."""
    import av

    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        return None
    decodable = [s for s in moving if s.codec_context is not None]
    if not decodable:
        return moving[0]
    best = container.streams.best("video")
    video = [s for s in decodable if not _still(s, best)]
    return max(video or decodable, key=_ffmpeg_score)  # max: the first of the best


# codecs of the still pictures a container holds as a video track (ffmpeg's covers in Matroska):
# only where a track declares neither its frames nor its duration (`_still`)
STILL_CODECS = ("mjpeg", "png", "bmp", "gif", "webp", "tiff")
# the tags Matroska muxers write for a track's length (ffmpeg: DURATION; mkvmerge: both)
_DURATION_TAG, _FRAMES_TAG = "DURATION", "NUMBER_OF_FRAMES"


def _still(stream, best) -> bool:
    """Whether a track is a still picture (a cover), from what it declares: a frame count (MP4,
    AVI; Matroska's NUMBER_OF_FRAMES tag) of one, or a duration (its own, or Matroska's DURATION
    tag: ffmpeg writes 0.04 s for its cover track) of at most one and a half frames. A track that
    declares neither (Matroska written to a pipe) is taken for a still when of a still-image codec
    (`STILL_CODECS`) and not the stream `av_find_best_stream` picks (it prefers one of several
    probed frames over a still)."""
    frames = stream.frames or _tag_number(stream, _FRAMES_TAG)
    if frames:
        return frames == 1
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    seconds = seconds or _tag_seconds(stream)
    rate = stream.average_rate or stream.guessed_rate
    if seconds and rate:
        return seconds * rate <= 1.5
    return stream.codec_context.name in STILL_CODECS and (best is None or stream.index != best.index)


def _tag(stream, name: str) -> str | None:
    """A stream's tag `name`, also as Matroska gives it with a language (`DURATION-eng`)."""
    for key, value in stream.metadata.items():
        if key.upper() == name or key.upper().startswith(name + "-"):
            return value
    return None


def _tag_number(stream, name: str) -> int:
    value = _tag(stream, name) or ""
    return int(value) if value.isdigit() else 0


def _tag_seconds(stream) -> float | None:
    """Matroska's DURATION tag ("HH:MM:SS.nnnnnnnnn") in seconds; None when absent or malformed."""
    parts = (_tag(stream, _DURATION_TAG) or "").split(":")
    try:
        return int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        return None


def _ffmpeg_score(stream) -> int:
    """The ffmpeg CLI's score of a video stream when it picks one (fftools `open_output_file`):
    width x height, plus 5,000,000 for the default flag. (Its bonus for a stream that had packets
    while probing is not visible here: every stream with frames has it.)"""
    import av

    codec = stream.codec_context
    return codec.width * codec.height + 5_000_000 * bool(stream.disposition & av.stream.Disposition.default)


# -- memory judged from the declaration ---------------------------------------------------
# H.264 (Annex A): by level_idc, the largest frame (macroblocks) and decoded picture buffer
_H264_MAX_FS = {9: 99, 10: 99, 11: 396, 12: 396, 13: 396, 20: 396, 21: 792, 22: 1620, 30: 1620, 31: 3600,
                32: 5120, 40: 8192, 41: 8192, 42: 8704, 50: 22080, 51: 36864, 52: 36864, 60: 139264,
                61: 139264, 62: 139264}
_H264_MAX_DPB_MBS = {9: 396, 10: 396, 11: 900, 12: 2376, 13: 2376, 20: 2376, 21: 4752, 22: 8100, 30: 8100,
                     31: 18000, 32: 20480, 40: 32768, 41: 32768, 42: 34816, 50: 110400, 51: 184320,
                     52: 184320, 60: 696320, 61: 696320, 62: 696320}
# HEVC (Annex A): by general_level_idc, the largest picture in luma samples (its DPB holds 6 such)
_HEVC_MAX_LUMA_PS = {30: 36864, 60: 122880, 63: 245760, 90: 552960, 93: 983040, 120: 2228224, 123: 2228224,
                     150: 8912896, 153: 8912896, 156: 8912896, 180: 35651584, 183: 35651584, 186: 35651584}
# reference frames other decoders keep (VP9 and AV1: 8 slots; VP8: last, golden, altref)
_REFERENCES = {"vp8": 3, "vp9": 8, "av1": 8, "libdav1d": 8, "mpeg1video": 2, "mpeg2video": 2, "mpeg4": 2,
               "h263": 2, "msmpeg4v3": 2, "flv1": 2, "theora": 2, "mjpeg": 0, "prores": 0, "ffv1": 0,
               "rawvideo": 0, "png": 0, "dnxhd": 0, "huffyuv": 0, "utvideo": 0}
MAX_REFERENCES = 16  # the most any codec here may keep: a level that cannot hold the frame is a lie


def frame_bytes(width: int, height: int, pix_fmt: str | None) -> int:
    """Bytes one decoded frame takes in the decoder's pixel format (4 a pixel when unknown)."""
    import av

    try:
        fmt = av.VideoFormat(pix_fmt or "")
    except (ValueError, TypeError):
        return width * height * 4
    total = 0
    for component in fmt.components:
        plane = width * height
        if component.is_chroma:
            plane = fmt.chroma_width(width) * fmt.chroma_height(height)
        total += plane * ((component.bits + 7) // 8)
    return total or width * height * 4


def frames_held(codec: str, level: int, width: int, height: int) -> int:
    """Frames the decoder may hold at once: its references (what the declared level allows for
    H.264 and HEVC) plus the frame being decoded and the one being converted."""
    refs = _REFERENCES.get(codec, MAX_REFERENCES)
    if codec == "h264":
        mbs = -(-width // 16) * -(-height // 16)
        refs = MAX_REFERENCES
        if mbs <= _H264_MAX_FS.get(level, 0):
            refs = max(1, min(MAX_REFERENCES, _H264_MAX_DPB_MBS[level] // mbs))
    elif codec == "hevc":
        limit, size = _HEVC_MAX_LUMA_PS.get(level, 0), width * height
        refs = MAX_REFERENCES
        if size <= limit:
            refs = 16 if size <= limit >> 2 else 12 if size <= limit >> 1 else 8 if size <= limit * 3 >> 2 else 6
    return refs + 2


@dataclass(frozen=True)
class Judgement:
    """What decoding one stream will cost, from its declaration; `reduce`: convert at working size."""

    width: int  # coded orientation
    height: int
    decoder_bytes: int
    conversion_bytes: int
    reduce: bool


def judge_memory(width: int, height: int, pix_fmt: str | None, codec: str, level: int, rotated: bool,
                 max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB,
                 working: tuple[int, int] | None = None, convert: bool = True, stretch: float = 1.0,
                 hdr: bool = False) -> Judgement:
    """Judge a stream before decoding; raises VideoError("video_too_large") when it cannot fit.

    `working`: (w, h) a frame may be converted at (display orientation), when the caller resizes
    anyway; `convert`: False when no frame is converted at all (the probe only looks at shapes);
    `hdr`: frames are tone-mapped (`HDR_CONVERSION_BYTES` a pixel and one float32 band)."""
    what = f"{width}x{height} {pix_fmt or '?'} {codec}"
    if width * height > max_pixels:
        raise VideoError("video_too_large", f"{what}: frames of {width * height} pixels exceed "
                                            f"max_pixels={max_pixels}")
    held = frames_held(codec, level, width, height)
    decoder = frame_bytes(width, height, pix_fmt) * held
    per_pixel = (HDR_CONVERSION_BYTES if hdr else RGB_CONVERSION_BYTES) + (3 if rotated else 0)  # turned: copied
    band = HDR_BAND_BYTES if hdr and convert else 0
    full = int(width * max(1.0, stretch)) * height * per_pixel + band if convert else 0  # stretched by the SAR
    budget = (memory_mb - DECODER_BASE_MB) << 20
    if decoder + full <= budget:
        return Judgement(width, height, decoder, full, False)
    if working is not None:
        reduced = working[0] * working[1] * per_pixel + band
        if decoder + reduced <= budget:
            return Judgement(width, height, decoder, reduced, True)
    else:
        reduced = full
    raise VideoError("video_too_large",
                     f"{what}: about {(DECODER_BASE_MB << 20) + decoder + min(full, reduced) >> 20} MiB to decode "
                     f"({held} frames of {frame_bytes(width, height, pix_fmt) >> 20} MiB held by the decoder), "
                     f"over the memory budget of {memory_mb} MiB")


def judge_stream(stream, max_pixels: int, memory_mb: int, canvas=None, convert: bool = True,
                 size: tuple[int, int] | None = None) -> Judgement:
    """`judge_memory` from what the opened stream declares (no frame decoded yet); `size`: (w, h)
    of a frame that came out larger than declared (the stream grew mid-way), judged instead."""
    codec = stream.codec_context
    width, height = size or (codec.width, codec.height)
    if width < 1 or height < 1:
        raise VideoError("unsupported_container", "the stream declares no frame size")
    pix_fmt = codec.pix_fmt or (codec.format.name if codec.format else None)
    sar = sample_aspect_ratio(stream)
    shown = sar_width(width, sar)
    working = None
    if canvas is not None and hasattr(canvas, "working_size"):
        # the display orientation is only known from a decoded frame: take the larger reduction
        working = max(canvas.working_size(height, shown), canvas.working_size(shown, height)[::-1],
                      key=lambda wh: wh[0] * wh[1])
    return judge_memory(width, height, pix_fmt, codec.name, int(codec.level or 0), True, max_pixels, memory_mb,
                        working, convert, float(sar or 1), stream_hdr(stream) is not None)


def fitting_pixels(stream, max_pixels: int, memory_mb: int, canvas=None, convert: bool = True) -> int:
    """The largest frame (pixels, at most `max_pixels`) of the stream's declared shape whose cost
    `judge_stream` admits within `memory_mb`: the `max_pixels` its decoder is told, so a frame the
    stream grows to that cannot fit is never allocated (a frame within it is judged again, exactly,
    once decoded). Searched by halving from the declared size, which was judged to fit."""
    codec = stream.codec_context
    declared = codec.width * codec.height
    low, high = min(declared, max_pixels), max_pixels
    while low < high:
        area = (low + high + 1) // 2
        width = max(1, round((area * codec.width / codec.height) ** 0.5))
        try:
            judge_stream(stream, max_pixels, memory_mb, canvas, convert, (width, max(1, area // width)))
            low = area
        except VideoError:
            high = area - 1
    return low


_INDEXES = IndexCache()  # indexes this process built by decoding (`sources.video_index_cache`)


def read_index(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB) -> VideoIndex:
    """The file's index (`video_index.build_index`). One whose building decoded frames (unstamped
    packets placed by the decoder's output order; a cut file's partial packets) is kept for the
    next read of the same local file in this process, keyed by its identity (`file_identity`).
    A chained Ogg whose links hold sound too, which FFmpeg's demuxer cannot read past its first
    link, is indexed again through `VideoPages` (its video's pages alone: a chain FFmpeg reads)."""
    path = fsio.local_path(uri)
    identity = file_identity(path) if path else None
    key = (path, identity, max_pixels, memory_mb)
    cached = _INDEXES.get(key) if identity else None
    if cached is not None:
        return cached
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
    outputs a frame for, decoded from their key frame as any frame is (`_Session`, budgets
    judged first). Only cut files pay it: one GOP. A decode that fails shows none of them."""
    shown = index.presented
    place = {p: i for i, p in enumerate(shown)}
    wanted = {index.pts[i]: place[index.pts[i]] for i in positions}
    session = _Session(uri, index, dict(wanted), None, True, 1 << 62, max_pixels, memory_mb, convert=False)
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


_REFORMATTER = None
# the display matrix's 2x2 part (signs of a, b, c, d) -> (quarter turns counterclockwise, mirror
# first), as the ffmpeg CLI shows such frames (checked by tests/test_video_zoo.py)
_ORIENTATIONS = {
    (1, 0, 0, 1): (0, False), (0, 1, -1, 0): (3, False), (-1, 0, 0, -1): (2, False), (0, -1, 1, 0): (1, False),
    (-1, 0, 0, 1): (0, True), (1, 0, 0, -1): (2, True), (0, 1, 1, 0): (1, True), (0, -1, -1, 0): (3, True),
}


def guessed_matrix(frame) -> str | None:
    """"bt709" for a YCbCr frame that declares no matrix and is HD (`HD_WIDTH` wide or more, or
    over `SD_LINES` lines), as players guess it; else None (its declared matrix, or swscale's
    BT.601, which players guess for SD too)."""
    if frame.colorspace not in UNTAGGED_MATRICES or frame.format.is_rgb or len(frame.format.components) < 3:
        return None  # RGB, grey or paletted: no matrix to apply
    return "bt709" if frame.width >= HD_WIDTH or frame.height > SD_LINES else None


def cropped_off_alignment(frame) -> bool:
    """Whether a plane of the frame starts off `CROP_ALIGN` in its buffer: a left crop that FFmpeg
    applies only when told `unaligned` (`open_stream`), as decord's FFmpeg is not. Decoders' frame
    buffers start 32-byte aligned (64 with AVX-512); where FFmpeg aligns them to 16 only (builds
    without AVX), an uncropped frame may be taken for one: PyAV then decodes it, never wrongly."""
    return any(plane.buffer_ptr % CROP_ALIGN for plane in frame.planes)


def orientation(frame) -> tuple[int, bool]:
    """(quarter turns, mirrored) that take a decoded frame to what a player shows."""
    matrix = frame.side_data.get("DISPLAYMATRIX")
    if matrix is None:
        return 0, False
    m = np.frombuffer(bytes(matrix), dtype="<i4")
    key = tuple(int(np.sign(v)) for v in (m[0], m[1], m[3], m[4]))
    if key not in _ORIENTATIONS:
        raise VideoError("unsupported_container", f"display matrix {m[:2].tolist() + m[3:5].tolist()} is not a "
                         "quarter turn or mirror")
    return _ORIENTATIONS[key]


def display(frame, turns_mirrored: tuple[int, bool] | None = None, size: tuple[int, int] | None = None,
            hdr: str | None = None) -> np.ndarray:
    """RGB pixels as a player shows them: the display matrix's rotation and mirroring applied.

    One reformatter serves every frame: it keeps its scaler context between frames of the same
    shape, where `frame.to_ndarray(format=...)` sets one up per frame (most of its cost).
    `turns_mirrored`: the frame's orientation when already known (reading a frame's side data
    ties the frame in a reference cycle: it stays in memory until Python's cyclic collector
    runs, a decoded frame per frame otherwise). `size`: (w, h) to scale to in the conversion, in
    the frame's coded orientation (area interpolation). One thread: the scaler's automatic threads
    (one per core) only add hand-offs on small frames and on a busy machine (512 frames of 320x240:
    0.021 s against 0.037 s, 0.1 s when other processes run; the same pixels). `hdr`: "pq" or
    "hlg": the frame is tone-mapped to SDR (`tone_mapped`)."""
    global _REFORMATTER
    if _REFORMATTER is None:
        from av.video.reformatter import VideoReformatter

        _REFORMATTER = VideoReformatter()
    matrix = SWS_CS_ITU709 if hdr is None and guessed_matrix(frame) else None  # None: the frame's own
    if hdr is not None:
        rgb = tone_mapped(frame, hdr, size)
    elif size is None or size == (frame.width, frame.height):
        rgb = _REFORMATTER.reformat(frame, format="rgb24", src_colorspace=matrix, threads=1).to_ndarray()
    else:
        rgb = _REFORMATTER.reformat(frame, format="rgb24", width=size[0], height=size[1], src_colorspace=matrix,
                                    interpolation="AREA", threads=1).to_ndarray()
    turns, mirrored = orientation(frame) if turns_mirrored is None else turns_mirrored
    if mirrored:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns or mirrored else rgb


def tone_mapped(frame, transfer: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """An HDR frame as SDR BT.709 RGB (`transforms.hdr.hdr_to_sdr`), in the coded orientation.

    swscale only upsamples the chroma (bilinear, as zscale does) and scales to `size` (area) into
    16-bit 4:4:4, codes kept (shifted up); the colour math runs on `HDR_BAND_PIXELS` at a time."""
    options = {"interpolation": "BILINEAR"} if size is None else {
        "width": size[0], "height": size[1], "interpolation": "AREA"}
    yuv = _REFORMATTER.reformat(frame, format="yuv444p16le", threads=1, **options)
    width, height = yuv.width, yuv.height
    planes = [np.frombuffer(plane, np.uint16).reshape(height, plane.line_size // 2)[:, :width]
              for plane in yuv.planes]
    depth = frame.format.components[0].bits
    full_range = frame.color_range == 2  # AVCOL_RANGE_JPEG
    luma = hdr_colour.luma_coefficients(frame.colorspace)
    primaries = hdr_colour.primaries_matrix(frame.color_primaries)
    rgb = np.empty((height, width, 3), np.uint8)
    for rows in hdr_colour.row_bands(height, width, HDR_BAND_PIXELS):
        band = np.stack([plane[rows] for plane in planes], axis=-1)
        rgb[rows] = hdr_colour.hdr_to_sdr(band, transfer, depth, full_range, luma, primaries)
    return rgb


@dataclass
class _Session:
    """One decoding pass over one file."""

    uri: str
    index: VideoIndex
    wanted: dict[int, int]  # pts -> presented index, still to deliver
    postprocess: Callable[[np.ndarray], np.ndarray] | None
    skip_nonref: bool
    seek_bytes: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_mb: int = DEFAULT_MEMORY_MB
    convert: bool = True  # False: deliver each frame's display (height, width), no pixels (the probe)
    _container: object = None
    orientation: tuple[int, bool] | None = None  # read from the first frame delivered
    judgement: Judgement | None = None
    _collect: bool = False
    _working: tuple[int, int] | None = None  # (w, h) frames are converted at, coded orientation
    sar: Fraction | None = None  # the stream's pixel aspect ratio, applied in the conversion
    hdr: str | None = None  # the stream's HDR transfer ("pq", "hlg"): frames are tone-mapped
    interlaced: bool = False  # a delivered frame was coded as two fields
    cropped_left: bool = False  # the first delivered frame is cropped off alignment (`cropped_off_alignment`)
    matrix_guessed: str = ""  # "bt709": a delivered frame declares no matrix and is HD (`guessed_matrix`)
    _last_pts: int | None = None  # the stamp of the decoder's last output in this run (they must rise)
    _outputs: int = 0  # frames the decoder gave since the stream's start (`decode_order_stamps`)
    _shown: tuple[int, ...] = ()
    _stream: object = None
    _working_for: tuple[int, int] | None = None  # the frame size `_working` was chosen for
    too_large: VideoError | None = None  # the stream grew past max_pixels: those frames never decoded
    _limit: int = 0  # the largest frame decoded: max_pixels, or less where the memory budget says so

    def run(self, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        self._shown = self.index.presented
        self._container, stream = self._open()
        try:
            self.sar = sample_aspect_ratio(stream)
            self.hdr = stream_hdr(stream)
            yield from self._run(stream, plan)
        finally:
            self._container.close()

    def _open(self):
        """The file opened, judged from its declaration the first time (`judge_stream`, raising
        when it cannot fit), its decoder told the largest frame that `max_pixels` and the memory
        budget admit (`fitting_pixels`): a frame over it is never allocated."""
        container, stream = open_stream(self.uri, self.index.video_pages)
        if self.judgement is None:
            try:
                self.judgement = judge_stream(stream, self.max_pixels, self.memory_mb, self.postprocess,
                                              self.convert)
            except VideoError:
                container.close()
                raise
            self._limit = fitting_pixels(stream, self.max_pixels, self.memory_mb, self.postprocess, self.convert)
        stream.codec_context.options = {"max_pixels": str(decoder_max_pixels(self._limit))}
        self._stream = stream
        return container, stream

    def _refusal(self, width: int, height: int) -> VideoError:
        """Why frames of a size past `_limit` are not decoded: over `max_pixels`, or the memory
        budget's judgement of that size."""
        if width * height > self.max_pixels:
            return frames_too_large(width, height, self.max_pixels)
        try:
            judge_stream(self._stream, self.max_pixels, self.memory_mb, self.postprocess, self.convert,
                         (width, height))
        except VideoError as exc:
            return exc
        return frames_too_large(width, height, self._limit, self.memory_mb)  # another shape than declared

    def _note_too_large(self, codec) -> None:
        """After a decode error: a new size past `_limit` that the decoder refused to allocate
        (its context holds the size). Frames named by output order cannot be named past it: the
        decode ends there."""
        if self.too_large is None and codec.width * codec.height > self._limit:
            self.too_large = self._refusal(codec.width, codec.height)
        if self.too_large is not None and self.index.decode_order_stamps:
            raise self.too_large

    def _name(self, frame) -> int | None:
        """The stamp that names a decoded frame in the index: its own, checked to rise within the
        run, or with `decode_order_stamps` that of its place in the decoder's output order."""
        if self.index.decode_order_stamps:
            k, self._outputs = self._outputs, self._outputs + 1
            if k >= len(self._shown):
                raise VideoError("unsupported_container", f"{self.index.container}/{self.index.codec}: the decoder "
                                 f"gives more frames than the {len(self._shown)} the stream holds")
            return self._shown[k]
        pts = frame.pts
        if pts is None:
            return None
        if self._last_pts is not None and pts <= self._last_pts:
            raise VideoError("unsupported_container", f"{self.index.container}/{self.index.codec}: the decoder gives "
                             f"the frame stamped {pts} after the one stamped {self._last_pts}: the stamps are not "
                             "presentation times, so decoded frames cannot be matched to their place")
        self._last_pts = pts
        return pts

    def _restart(self) -> None:
        """The decoder was flushed or reopened: a new run of rising stamps begins."""
        self._last_pts = None

    def _deliver(self, frames, trust: dict[int, int | None]) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            pts = self._name(frame)
            w = self.wanted.get(pts)
            if w is None:
                continue
            floor = trust.get(pts)
            if floor is not None and pts < floor:
                continue  # a leading frame whose references were skipped: not trusted
            if frame.width * frame.height > self._limit:  # within the decoder's alignment room
                self.too_large = self.too_large or self._refusal(frame.width, frame.height)
                continue
            del self.wanted[pts]
            self.interlaced = self.interlaced or frame.interlaced_frame
            if self.hdr is None:  # tone-mapped frames take `hdr.luma_coefficients`, never the guess
                self.matrix_guessed = self.matrix_guessed or guessed_matrix(frame) or ""
            judged = self.judgement
            if judged is not None and frame.width * frame.height > judged.width * judged.height:
                # larger than declared (a new SPS mid-stream): judged again; over the memory budget the
                # decode ends here (the frames before delivered), `video_too_large`
                try:
                    judged = self.judgement = judge_stream(self._stream, self.max_pixels, self.memory_mb,
                                                           self.postprocess, self.convert, (frame.width, frame.height))
                except VideoError as exc:
                    self.too_large = exc
                    raise
            if self.orientation is None:  # once: reading side data keeps the frame until a collection
                self.orientation = orientation(frame)
                self.cropped_left = cropped_off_alignment(frame)
                # worth a full collection (10 ms in a decoding process) only for a large frame
                self._collect = frame.width * frame.height >= COLLECT_PIXELS
            turns, _ = self.orientation
            shown = sar_width(frame.width, self.sar)  # coded orientation, square pixels
            if not self.convert:
                shape = (frame.height, shown) if turns % 2 == 0 else (shown, frame.height)
                yield w, shape
                continue
            size = None if shown == frame.width else (shown, frame.height)
            if judged is not None and judged.reduce:
                if self._working_for != (frame.width, frame.height):  # once per frame size
                    h, wd = (frame.height, shown) if turns % 2 == 0 else (shown, frame.height)
                    ww, wh = self.postprocess.working_size(h, wd)  # type: ignore[union-attr]
                    self._working = (ww, wh) if turns % 2 == 0 else (wh, ww)
                    self._working_for = (frame.width, frame.height)
                size = self._working
            pixels = display(frame, self.orientation, size, self.hdr)
            yield w, self.postprocess(pixels) if self.postprocess else pixels

    def _after(self) -> None:
        if self._collect:  # the first frame's side data cycle: free that frame now
            self._collect = False
            gc.collect()

    def _run(self, stream, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        index, codec = self.index, stream.codec_context
        packets = self._container.demux(stream)
        position = -1
        trust: dict[int, int | None] = {}
        seeked = False  # after a seek, packets are matched to the index by time stamp
        position_of = _positions_by_demuxed_stamp(index)
        # the demuxer's stamps repeat or are missing: read on, never seek (but where only forward jumps
        # were closed: matched by the demuxer's stamp, given the index's)
        restamped = bool(index.demuxed) and index.restamped != JUMPED
        joins = set(index.joins)  # a later part of a joined file begins: the decoder starts afresh
        headers = set(index.headers)  # decoder headers sent as packets: fed wherever they lie
        fed = False  # packets were sent to the decoder since it last started afresh
        for stretch in plan:
            if not self.wanted:
                break
            if 0 <= position and position + 1 < stretch.first:
                # a gap: the decoder starts afresh at the stretch's key frame (carried over the gap, it
                # may give frames out of order), its held frames drained first
                yield from self._deliver(codec.decode(None), trust)
                codec.flush_buffers()
                self._restart()
                fed = False
            if position + 1 < stretch.first and not restamped and \
                    sum(index.size[position + 1:stretch.first]) > self.seek_bytes:
                landed = self._seek(stream, stretch.first)
                if landed is None:
                    packets, position, stream, codec = self._reopen()
                else:
                    packets, position = landed
                    seeked = True
            while position < stretch.last and self.wanted:  # nothing left to deliver: stop reading
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.size == 0 or (packet.pts is None and not restamped):
                    continue
                if restamped:
                    at = _restamp(index, packet, position + 1)
                else:
                    at = position_of.get(packet.pts)
                    if at is not None and index.size[at] != packet.size:
                        at = None  # same time stamp, other bytes: after a seek, MPEG-PS can misplace stamps
                    if at is not None and index.demuxed:
                        at = _restamp(index, packet, at)
                if at != position + 1:
                    if not seeked:
                        raise VideoError("decode_failed",
                                         f"packet {position + 1} differs from the index (pts {packet.pts})")
                    if at is not None and at < stretch.first:
                        position = at  # still before the stretch: follow the demuxer
                        continue
                    if position + 1 < stretch.first and at is None:
                        continue
                    # the demuxer resumed in a way the index cannot follow: read from the start
                    yield from self._deliver(codec.decode(None), trust)
                    packets, position, stream, codec = self._reopen()
                    self._restart()
                    seeked = fed = False
                    continue
                position = at
                if position < stretch.first:
                    if position in headers:  # the decoder is configured for the part that follows
                        self._configure(codec, packet)
                    continue
                if position in joins and fed:  # each part decoded as it is alone (`VideoIndex.joins`)
                    yield from self._deliver(codec.decode(None), trust)
                    codec.flush_buffers()
                    self._restart()
                fed = True
                trust[packet.pts] = stretch.trusted_from
                if self.skip_nonref and not index.decode_order_stamps:  # a skipped frame would shift the names
                    codec.skip_frame = "DEFAULT" if packet.pts in self.wanted else "NONREF"
                try:
                    frames = codec.decode(packet)
                except Exception as exc:  # a damaged packet: its frame (and dependants) will be missing
                    log.debug("decode error at packet %d: %s", position, exc)
                    self._note_too_large(codec)
                    continue
                yield from self._deliver(frames, trust)
                if self._collect:
                    del frames
                    self._after()
        if self.wanted:
            codec.skip_frame = "DEFAULT"
            try:
                yield from self._deliver(codec.decode(None), trust)
            except Exception as exc:
                log.debug("flush error: %s", exc)
                self._note_too_large(codec)

    @staticmethod
    def _configure(codec, packet) -> None:
        """Send the decoder a header packet (`VideoIndex.headers`) met outside the wanted stretches:
        it gives no frame, and one it does not take (Theora's comment header) changes nothing."""
        codec.skip_frame = "DEFAULT"
        try:
            codec.decode(packet)
        except Exception as exc:
            log.debug("header packet not taken: %s", exc)

    def _reopen(self):
        """Start over from the beginning of the file, without seeking from here on."""
        self._container.close()
        self._container, stream = self._open()
        self.seek_bytes = 1 << 62
        self._outputs = 0
        return self._container.demux(stream), -1, stream, stream.codec_context

    def _seek(self, stream, target: int):
        """Seek so that reading resumes at or before packet `target`, checked against the index
        (MPEG-TS/PS seeks can land after it: then retry from earlier key frames). Returns the packet
        iterator and the position before its first packet, or None when no attempt lands."""
        index = self.index
        position_of = _positions_by_demuxed_stamp(index)
        stamps = index.demuxed or index.pts  # the demuxer's: what the container seeks by
        keys = [i for i, k in enumerate(index.keyframe) if k and i <= target]
        for attempt in range(3):
            key = keys[max(0, len(keys) - 1 - 2 * attempt)]
            try:
                self._container.seek(stamps[key], stream=stream, backward=True, any_frame=False)
            except Exception as exc:
                log.debug("seek failed: %s", exc)
                return None
            packets = self._container.demux(stream)
            for packet in packets:
                if packet.size and packet.pts in position_of and index.size[position_of[packet.pts]] == packet.size:
                    at = position_of[packet.pts]
                    if at <= target:
                        return _prepend(packet, packets), at - 1
                    break
        return None


def _positions_by_demuxed_stamp(index: VideoIndex) -> dict[int | None, int]:
    """Each packet's position by the stamp the demuxer gives it (seeking matches packets so)."""
    return {p: i for i, p in enumerate(index.demuxed or index.pts)}


def _restamp(index: VideoIndex, packet, at: int) -> int | None:
    """`at` when the packet is the index's packet there (the demuxer's stamp and its size), given
    the index's stamp (its decode stamp moved alike); None when it is not."""
    if at >= len(index.pts) or index.demuxed[at] != packet.pts or index.size[at] != packet.size:
        return None
    stamp = index.pts[at]
    if packet.pts is not None and packet.dts is not None:
        packet.dts = packet.dts + stamp - packet.pts
    packet.pts = stamp
    return at


def _prepend(first, rest):
    yield first
    yield from rest


def decode_frames(uri: str, wanted: Sequence[int], expected_frames: int | None = None,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None, skip_nonref: bool = True,
                  seek_bytes: int = SEEK_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                  memory_mb: int = DEFAULT_MEMORY_MB) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (presented index, RGB frame) for every index in `wanted`, in decoding order.

    `expected_frames`: the count the file was planned with; a file that changed since is refused.
    Frames that do not decode are simply not yielded: the caller names what is missing.
    `postprocess` runs on each frame as it decodes; one with a `working_size` (a
    `transforms.resize.Canvas`) lets a stream too large to convert at full size be converted at
    the working size instead. `max_pixels`, `memory_mb`: see `judge_memory`.
    """
    index = read_index(uri, max_pixels, memory_mb)
    shown = index.presented
    if expected_frames is not None and len(shown) < expected_frames:
        raise VideoError("changed_file", f"{len(shown)} frames now, {expected_frames} when planned")
    wanted = sorted(set(wanted))
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(shown)):
        raise VideoError("decode_failed", f"frame {wanted[-1]} is past the last of {len(shown)}")
    session = _Session(uri, index, {shown[w]: w for w in wanted}, postprocess, skip_nonref, seek_bytes, max_pixels,
                       memory_mb)
    yield from session.run(decode_plan(index, wanted))
    if session.wanted and session.too_large is not None:  # the frames a growth past max_pixels cost
        raise session.too_large


@dataclass(frozen=True)
class Probe:
    """What planning needs to know about one file."""

    n_frames: int  # presented frames that decode
    packets: int  # what the demuxer holds (more than n_frames with an edit list or a cut tail)
    claimed: int  # the container's frame count (0: none stored), often wrong for cut files
    times: tuple[float, ...]  # presentation time of each frame, seconds from the first
    width: int  # display orientation
    height: int
    fps: float
    container: str
    codec: str
    keyframes: int
    hidden: int  # packets decoded, never shown (edit list; before the first key frame), a cut's partial one not
    rotation: int  # degrees counterclockwise applied to show the frame
    mirrored: bool  # mirrored left-right before the rotation
    pixel_format: str
    full_size_fits: bool = True  # full-size RGB frames fit the memory budget (decord needs them)
    sample_aspect_ratio: str = ""  # "num:den" when not 1:1 ("" for square pixels)
    sar_applied: bool = False  # False for a ratio outside SAR_LIMITS (frames keep their coded shape)
    reordered: bool = False  # frames are shown in another order than decoded (by their stamps)
    open_gop: bool = False  # a frame after a key frame (decode order) is shown before it
    decode_order_stamps: bool = False  # stamps count packets in decode order; frames named by output order
    hdr: str = ""  # "pq" or "hlg": an HDR transfer declared, frames tone-mapped to SDR ("": SDR)
    video_streams: int = 1  # video streams in the file, cover art included (decord picks its own)
    interlaced: bool = False  # frames coded as two fields (declared, or a probed frame flagged so)
    size_changes: bool = False  # the probed frames are not all one size (clips joined by a stream copy)
    cropped_left: bool = False  # a left crop off alignment (decord shows the columns it hides)
    matrix_guessed: str = ""  # "bt709": untagged HD, converted as players show it (`guessed_matrix`)
    restamped: str = ""  # "joined" (MPEG-TS/PS parts joined end to end), "jumped" (an MPEG-TS/PS clock
    # jumping forward over 10 s, closed), "negative" (Matroska before zero), "split" (MPEG-TS/PS
    # packets the parser left unstamped), "chained" (chained Ogg Theora)


def probe(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB) -> Probe:
    """Count the frames a player shows and check the first and last of them decode.

    When the last does not (a cut file), the key frame stretches are tried from the end until
    one decodes, and the count stops at its first frame that does not. The stream's declared
    size is judged first (`judge_memory`, without conversion: no frame is converted here).
    """
    index = read_index(uri, max_pixels, memory_mb)
    shown = index.presented
    if not shown:
        raise VideoError("too_few_frames", "no frames")
    n = len(shown)
    if index.decode_order_stamps:  # named by output order: count what a whole decode gives
        session = _Session(uri, index, {p: i for i, p in enumerate(shown)}, None, False, 1 << 62, max_pixels,
                           memory_mb, convert=False)
        ends = _shapes(session, decode_plan(index, list(range(n))))
        n = len(ends) if session.too_large is None else n  # 0..n-1: outputs are named in order
        if 0 not in ends:
            raise session.too_large or VideoError("decode_failed", "the first frame does not decode")
    else:
        starts = key_of(index)
        session = _Session(uri, index, {shown[0]: 0, shown[n - 1]: n - 1}, None, True, 1 << 62, max_pixels,
                           memory_mb, convert=False)
        ends = _shapes(session, decode_plan(index, [0, n - 1], starts))
        if 0 not in ends:
            raise session.too_large or VideoError("decode_failed", "the first frame does not decode")
        if n - 1 not in ends and session.too_large is None:  # grown past max_pixels: its clips are rejects
            n = _decodable_count(uri, index, starts, max_pixels, memory_mb)
    height, width = ends[0]
    # first and last (or every) frame: not one size; or a size past max_pixels the decoder refused
    size_changes = len(set(ends.values())) > 1 or session.too_large is not None
    judged = session.judgement
    full_size_fits = judged is not None and (judged.decoder_bytes + judged.width * judged.height * (
        RGB_CONVERSION_BYTES + 3)) <= (memory_mb - DECODER_BASE_MB) << 20
    container, stream = open_stream(uri, index.video_pages)
    claimed = int(stream.frames or 0)
    declared_sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar_text = f"{declared_sar.numerator}:{declared_sar.denominator}" if declared_sar and declared_sar != 1 else ""
    pixel_format = stream.codec_context.format.name if stream.codec_context.format else ""
    transfer = stream_hdr(stream) or ""
    rate = stream.average_rate or _mean_rate(shown[:n], index.time_base) or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    video_streams = len(container.streams.video)
    interlaced = session.interlaced or stream.codec_context.field_order in INTERLACED_FIELD_ORDERS
    container.close()
    turns, mirrored = session.orientation or (0, False)
    base, num, den = shown[0], index.time_base.numerator, index.time_base.denominator
    times = tuple(round((p - base) * num / den, 6) for p in shown[:n])  # = float(Fraction): exactly rounded
    return Probe(n, len(index.pts), claimed, times, width, height, fps, index.container, index.codec,
                 sum(index.keyframe), sum(index.discard) - index.partial, 90 * turns, mirrored, pixel_format,
                 full_size_fits, sar_text,
                 session.sar is not None, index.reordered, index.open_gop, index.decode_order_stamps, transfer,
                 video_streams, interlaced, size_changes, session.cropped_left,
                 session.matrix_guessed, index.restamped)


def _mean_rate(stamps: Sequence[int], time_base: Fraction) -> Fraction | None:
    """Frames a second over the frames shown (their stamps, in order): the rate of a stream that
    declares no average (a WebM recorded live, as browsers' MediaRecorder writes it: no duration),
    whose guessed rate is its time base's where frames come 31-35 ms apart (1000 fps, a "1k tbr"
    in the CLI's words). None for fewer than two frames."""
    span = (stamps[-1] - stamps[0]) * time_base if len(stamps) > 1 else 0
    return (len(stamps) - 1) / span if span > 0 else None


def _shapes(session: _Session, plan: list[Stretch]) -> dict[int, tuple[int, int]]:
    """Each delivered frame's display (height, width); a stream grown past `max_pixels` whose
    frames are named by output order ends there (`session.too_large`), the frames before kept."""
    ends = {}
    try:
        for i, shape in session.run(plan):
            ends[i] = shape
    except VideoError as exc:
        if exc is not session.too_large:
            raise
    return ends


def decode_frames_indexed(uri: str, index: VideoIndex, wanted: Sequence[int], starts: list[int],
                          max_pixels: int = DEFAULT_MAX_PIXELS, memory_mb: int = DEFAULT_MEMORY_MB):
    """(presented index, display (height, width)) of each wanted frame that decodes; no conversion."""
    shown = index.presented
    session = _Session(uri, index, {shown[w]: w for w in wanted}, None, True, 1 << 62, max_pixels, memory_mb,
                       convert=False)
    yield from session.run(decode_plan(index, list(wanted), starts))


def _decodable_count(uri: str, index: VideoIndex, starts: list[int], max_pixels: int = DEFAULT_MAX_PIXELS,
                     memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """How many presented frames decode, searching key frame stretches from the end."""
    by_start: dict[int, list[int]] = {}
    for i, s in enumerate(starts):
        by_start.setdefault(s, []).append(i)
    for start in sorted(by_start, reverse=True):
        frames = by_start[start]
        got = {i for i, _ in decode_frames_indexed(uri, index, frames, starts, max_pixels, memory_mb)}
        if got:
            first_missing = next((i for i in frames if i not in got), frames[-1] + 1)
            return first_missing
    return 0


def key_frame_sizes(uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """How many frame sizes the stream's key frames have, each decoded alone (no other frame sent
    to the decoder; a size past `max_pixels` counted, never allocated). An H.264 or HEVC stream
    changes size only at a key frame (a new SPS), so this sees an HLS recording that switches up
    and back down, whose first and last frames agree (`Probe.size_changes` misses it).

    Every frame of an intra-only stream is a key frame: an MJPEG camera's 3000 frames at 720p took
    4.6 CPU-s to decode here (the probe: 0.08 s). MJPEG and ProRes frames are read from the size
    their header states instead (`header_size`: the JPEG frame header, ProRes's frame header),
    decoding only a frame whose header cannot be read. H.264 can only change size with a new SPS:
    a key frame is decoded only when it brings an SPS no key frame decoded before brought
    (`ParameterSets`): an all-intra x264 stream (`-g 1`, 3000 frames at 320x240) took as long
    as decoding it whole (1.7 CPU-s; the probe: 0.06 s); now one frame per SPS. Other streams
    coded all-intra are decoded frame by frame: the caller's budget bounds that, and a check over
    it leaves the file to PyAV (`sources.video._decord_refusal`). VP9 changes size on frames that
    are not key frames too (libvpx's dynamic resize: 640x480, then 480x360 from an inter frame,
    back without a key frame): decord stretched those frames to the first one's size. Every VP9
    frame's size is read from its header (`VP9Sizes`, none decoded); one that cannot be read ends
    the check (`decode_failed`: PyAV decodes)."""
    container, stream = open_stream(uri)
    codec = stream.codec_context
    codec.options = {"max_pixels": str(decoder_max_pixels(max_pixels))}
    sizes: set[tuple[int, int]] = set()
    parameter_sets = ParameterSets(codec.extradata) if codec.name == "h264" else None
    try:
        if codec.name == "vp9":
            return _vp9_size_count(container.demux(stream))
        for packet in container.demux(stream):
            if not packet.is_keyframe or packet.size == 0:
                continue
            stated = header_size(codec.name, packet)
            if stated is not None:
                sizes.add(stated)
                if len(sizes) > 1:
                    return len(sizes)
                continue
            if parameter_sets is not None and not parameter_sets.new_size_possible(packet):
                continue  # sized by an SPS a key frame decoded before brought: a size already counted
            try:
                sizes.update((frame.width, frame.height) for frame in codec.decode(packet))
            except Exception as exc:  # a damaged key frame, or one past max_pixels (its size is in the context)
                log.debug("key frame decode error: %s", exc)
                sizes.add((codec.width, codec.height))
            if len(sizes) > 1:
                return len(sizes)
        try:  # the frames the decoder still holds (it delays its output to reorder)
            sizes.update((frame.width, frame.height) for frame in codec.decode(None))
        except Exception as exc:
            log.debug("key frame flush error: %s", exc)
            sizes.add((codec.width, codec.height))
    finally:
        container.close()
    return len(sizes)


def _vp9_size_count(packets) -> int:
    """How many sizes a VP9 stream's frames have (up to 2), from every frame's header (`VP9Sizes`);
    VideoError("decode_failed") where a header cannot be read."""
    sizes, vp9 = set(), VP9Sizes()
    for k, packet in enumerate(packets):
        if not packet.size:
            continue
        try:
            sizes.update(vp9.shown(bytes(packet)))
        except ValueError as exc:
            raise VideoError("decode_failed", f"packet {k}: {exc}") from None
        if len(sizes) > 1:
            break
    return len(sizes)


# -- decord --------------------------------------------------------------------------------
def decord_frames(uri: str, wanted: Sequence[int], expected_frames: int,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                  memory_mb: int = DEFAULT_MEMORY_MB) -> Iterator[tuple[int, np.ndarray]]:
    """The same frames through decord, for files `decord_exact` admits (full-size frames within
    the memory budget, judged at the probe), in batches of at most `DECORD_BATCH_BYTES`."""
    reader = _decord_reader(uri)
    if len(reader) != expected_frames:
        raise VideoError("changed_file", f"decord counts {len(reader)} frames, planned with {expected_frames}")
    order = sorted(set(wanted))
    start, batch_size = 0, 1  # the first frame alone: its size sets the batch
    while start < len(order):  # bounded memory: a batch at a time
        chunk = order[start:start + batch_size]
        start += len(chunk)
        try:
            batch = reader.get_batch(chunk).asnumpy()
        except Exception as exc:
            raise VideoError("decode_failed", exception_detail(exc)) from None
        pixels_per_frame = batch.shape[1] * batch.shape[2]
        if pixels_per_frame > max_pixels:
            raise VideoError("video_too_large", f"{batch.shape[2]}x{batch.shape[1]}: frames of {pixels_per_frame} "
                                                f"pixels exceed max_pixels={max_pixels}")
        batch_size = max(1, min(32, DECORD_BATCH_BYTES // (pixels_per_frame * 3)))
        for i, pixels in zip(chunk, batch):
            yield i, postprocess(pixels) if postprocess else pixels


def _decord_reader(uri: str):
    """decord's reader of `uri` on one thread; VideoError("unreadable") where decord cannot open it
    (this machine's own errors, such as too many open files, raised as they are)."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    try:
        return decord.VideoReader(fsio.local_path(uri) or fsio.open_file(uri), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:
        if _machine_error(exc):
            raise
        _raise_if_cannot_open(uri)
        raise VideoError("unreadable", exception_detail(exc)) from None


def decord_frame_count(uri: str) -> int:
    """How many frames decord counts in `uri`, opened as `decord_frames` opens it (run in decord's
    own process). VideoError("unreadable") where decord cannot open it: a WebM written live
    (browsers' MediaRecorder, `ffmpeg -live 1`) declares no duration nor frame count, and decord
    refuses it ("Failed to measure duration/frame-count due to broken metadata") where PyAV
    reads every frame."""
    reader = _decord_reader(uri)
    return len(reader)


def _raise_if_cannot_open(uri: str) -> None:
    """Raise the OSError of this machine (`DECODER_MACHINE_ERRNOS`) that opening `uri` meets now:
    decord's error names no errno ("Error reading x.mp4...", its log says "Too many open files"),
    and the file, probed by PyAV already, is read by PyAV's rules, so a process that cannot open
    it again has run out of descriptors, not the file of frames."""
    path = fsio.local_path(uri)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        if _machine_error(exc):
            raise


# containers and codecs where decord's frame i is the presented frame i (checked by the zoo tests);
# elsewhere (MPEG-TS/PS, HEVC, edit lists, rotation, cut files, open GOPs, AVI with H.264 or
# B-frames, interlaced frames, frame sizes that change, cover art beside the video, a left crop off
# alignment, an odd frame height) PyAV decodes instead
DECORD_CONTAINERS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi")
DECORD_CODECS = ("h264", "vp8", "vp9", "mjpeg", "mpeg4", "prores")
DECORD_PIXEL_FORMATS = ("yuv420p", "yuvj420p")  # decord converts others (10-bit, 4:4:4) differently
DECORD_BATCH_BYTES = 64 << 20  # full-size RGB frames decord returns at once
FRAME_SIZE_CHANGES = "frame size changes mid-stream"


def decord_exact(probe: Probe) -> str | None:
    """None when decord reads this file exactly, else why not."""
    if probe.container not in DECORD_CONTAINERS:
        return f"container {probe.container}"
    if probe.codec not in DECORD_CODECS:
        return f"codec {probe.codec}"
    if probe.pixel_format not in DECORD_PIXEL_FORMATS:
        return f"pixel format {probe.pixel_format}"
    if probe.hdr:  # decord converts every frame as SDR
        return f"HDR transfer ({probe.hdr}), tone-mapped by PyAV"
    if probe.size_changes:  # decord stretches later frames to the first one's size (see `key_frame_sizes` too)
        return FRAME_SIZE_CHANGES
    if probe.interlaced:  # decord upsamples the chroma of both fields as one progressive frame
        return "interlaced frames (PyAV upsamples each field's chroma on its own)"
    if probe.matrix_guessed:  # decord's FFmpeg converts untagged frames as BT.601 whatever their size
        return "no colour matrix declared: HD converted as BT.709, as players show it (decord takes BT.601)"
    if probe.cropped_left:  # decord's FFmpeg keeps the columns and squashes them into the declared width
        return "cropped from the left off alignment (decord shows the columns the stream hides)"
    if probe.video_streams > 1:  # decord reads FFmpeg's best stream: it may be the cover
        return f"{probe.video_streams} video streams (cover art beside the video, say)"
    if probe.restamped:  # decord names frames by the demuxer's stamps: repeated, or missing
        return f"time stamps restamped ({probe.restamped})"
    if probe.hidden:
        return "edit list or a stream cut mid-GOP"
    if probe.decode_order_stamps:
        return "time stamps in decode order from a decoder that reorders frames"
    if probe.open_gop:  # decord's seeks then give frames of a neighbouring place (x264 open-gop, MPEG-4 ASP)
        return "open GOP (frames after a key frame shown before it)"
    if probe.container == "avi" and (probe.codec == "h264" or probe.reordered):
        return "H.264 or B-frames in AVI (decord's seeks there land on other frames)"
    if probe.rotation or probe.mirrored:
        return "display rotation"
    if probe.packets != probe.n_frames or probe.claimed not in (0, probe.n_frames):
        return "cut file"
    if not probe.full_size_fits:
        return "frames too large to convert at full size within the memory budget"
    if probe.sample_aspect_ratio:
        return "non-square pixels"
    if probe.height % 2:  # coded height here (no turn): swscale's scaling path, another FFmpeg's in decord
        return "odd frame height (decord's FFmpeg converts its 4:2:0 chroma differently)"
    return None
