"""A stream's decoding memory judged from what it declares, before any frame is decoded
(`judge_memory`, `judge_stream`), and the largest frame its decoder is told to allocate
(`fitting_pixels`, `decoder_max_pixels`). Part of `sources.video_decode`."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from sources.budget import SEND_AHEAD_BYTES
from sources.video_display import eight_bit_format, has_alpha
from sources.video_alpha import decoded_format
from sources.video_open import VideoError
from transforms import hdr as hdr_colour


DEFAULT_MAX_PIXELS = 178_956_970  # the image setting's default (transforms.decode), per frame
DEFAULT_MEMORY_MB = 1536  # one video's decoding process, judged from the declaration and watched


# that process before any frame (Python, PyAV, NumPy, OpenCV), plus the frames it may have sent
# ahead of the parent (`sources.budget.SEND_AHEAD_BYTES`)
DECODER_BASE_MB = 256 + (SEND_AHEAD_BYTES >> 20)
RGB_CONVERSION_BYTES = 6  # per pixel: PyAV's RGB frame and its array (5.7 measured at 8192x8192)
# a frame with alpha: PyAV's RGBA frame and its array (8), and the RGB composited on white (3)
ALPHA_CONVERSION_BYTES = 11
SAR_LIMITS = (Fraction(1, 4), Fraction(4))  # sample aspect ratios applied; others are not believed


# HDR: per pixel the 16-bit 4:4:4 frame (6) and the RGB array (3); the float32 work of one band
HDR_CONVERSION_BYTES = 9
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
               "rawvideo": 0, "png": 0, "dnxhd": 0, "huffyuv": 0, "utvideo": 0,
               # GIF: the screen it paints on, its copy for disposal 3, and a frame's transparent pixels made
               # white (`gif_screen.on_white`: a copy and a mask, 9 bytes a pixel): a 4000x4000 probe rose
               # 139 MB, decoding 3 frames 398 MB with their RGB (6 held: 480 MB judged; it was 18)
               "gif": 4}
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
    `hdr`: frames are tone-mapped (`HDR_CONVERSION_BYTES` a pixel and one float32 band); an SDR
    frame deeper than 8 bits is first reduced to 8 bits at full size (`eight_bit_format`)."""
    what = f"{width}x{height} {pix_fmt or '?'} {codec}"
    if width * height > max_pixels:
        raise VideoError("video_too_large", f"{what}: frames of {width * height} pixels exceed "
                                            f"max_pixels={max_pixels}")
    held = frames_held(codec, level, width, height)
    decoder = frame_bytes(width, height, pix_fmt) * held
    per_pixel = (HDR_CONVERSION_BYTES if hdr else ALPHA_CONVERSION_BYTES if has_alpha(pix_fmt) else
                 RGB_CONVERSION_BYTES) + (3 if rotated else 0)  # turned: copied
    eight_bit = None if hdr else eight_bit_format(pix_fmt)
    # whatever the working size: one float32 band (HDR), or the full-size 8-bit copy and its rounding (deeper SDR)
    band = HDR_BAND_BYTES if hdr and convert else \
        frame_bytes(width, height, eight_bit) + 2 * width * height if eight_bit and convert else 0
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
                 size: tuple[int, int] | None = None, alpha: bool = False) -> Judgement:
    """`judge_memory` from what the opened stream declares (no frame decoded yet); `size`: (w, h)
    of a frame that came out larger than declared (the stream grew mid-way), judged instead."""
    codec = stream.codec_context
    width, height = size or (codec.width, codec.height)
    if width < 1 or height < 1:
        raise VideoError("unsupported_container", "the stream declares no frame size")
    pix_fmt = decoded_format(stream, alpha)  # `alpha`: `VideoIndex.alpha`
    sar = sample_aspect_ratio(stream)
    shown = sar_width(width, sar)
    working = None
    if canvas is not None and hasattr(canvas, "working_size"):
        # the display orientation is only known from a decoded frame: take the larger reduction
        working = max(canvas.working_size(height, shown), canvas.working_size(shown, height)[::-1],
                      key=lambda wh: wh[0] * wh[1])
    return judge_memory(width, height, pix_fmt, codec.name, int(codec.level or 0), True, max_pixels, memory_mb,
                        working, convert, float(sar or 1), stream_hdr(stream) is not None)


def fitting_pixels(stream, max_pixels: int, memory_mb: int, canvas=None, convert: bool = True,
                   alpha: bool = False) -> int:
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
            judge_stream(stream, max_pixels, memory_mb, canvas, convert, (width, max(1, area // width)), alpha)
            low = area
        except VideoError:
            high = area - 1
    return low
