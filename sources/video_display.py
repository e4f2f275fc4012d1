"""A decoded frame as RGB pixels the way a player shows it (`display`): its display matrix's turn
and mirror, the colour matrix players guess for untagged HD (`guessed_matrix`), HDR tone-mapped
to SDR (`tone_mapped`). Part of `sources.video_decode`."""

from __future__ import annotations

import functools
import re

import numpy as np

from sources.video_open import VideoError
from transforms import hdr as hdr_colour
from transforms.rgb_array import STRIP_PIXELS, _on_white


# an untagged frame at least this wide, or taller than this, is HD: converted as BT.709 (`guessed_matrix`)
HD_WIDTH, SD_LINES = 1280, 576
UNTAGGED_MATRICES = (2, 3)  # AVColorSpace UNSPECIFIED, RESERVED: no matrix declared
SWS_CS_ITU709 = 1  # swscale's BT.709 matrix, told to the RGB conversion of a guessed frame
CROP_ALIGN = 32  # bytes: a plane cropped off this alignment is one decord's FFmpeg leaves uncropped
HDR_BAND_PIXELS = hdr_colour.BAND_PIXELS  # pixels tone-mapped at once
# a planar YCbCr format deeper than 8 bits -> its 8-bit twin (`eight_bit_format`)
_DEEP_YUV = re.compile(r"(yuva?4[024][024]p)(9|10|12|14|16)(le|be)")
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


def eight_bit_format(pix_fmt: str | None) -> str | None:
    """The 8-bit format of the same chroma layout for a planar YCbCr `pix_fmt` deeper than 8 bits
    (yuv420p10le -> yuv420p: HEVC Main10, ProRes, 10-bit H.264), else None.

    Why: the swscale PyAV bundles (libswscale 9) converts such frames to RGB with its chroma
    interpolated across each colour edge (a red/black edge 67-79 levels off in the pair of columns
    before it), where the ffmpeg CLI, and the same swscale on 8-bit frames, keep the edge; reduced
    to 8 bits first (`eight_bit_copy`), the frame converts as 8-bit frames do."""
    match = _DEEP_YUV.fullmatch(pix_fmt or "")
    return match.group(1) if match else None


@functools.lru_cache(maxsize=64)
def has_alpha(pix_fmt: str | None) -> bool:
    """Whether frames of `pix_fmt` carry an alpha channel (QuickTime RLE's argb, ProRes 4444's
    yuva444p12le, PNG or FFV1 in a .mov): they are shown composited on white (`display`), as the
    project shows a transparent image, GIF or animated WebP, and as a browser page shows such a
    video. An unknown name has none. Asked once a frame: kept per name."""
    from av.video.format import VideoFormat

    try:
        return any(component.is_alpha for component in VideoFormat(pix_fmt or "").components)
    except ValueError:
        return False


def _on_white_in_strips(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8 RGBA as (h, w, 3) RGB composited on white, a strip of rows at a time (the
    16-bit work of a strip, not of the frame: `video_memory.ALPHA_CONVERSION_BYTES`)."""
    height, width = rgba.shape[:2]
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        out[top : top + rows] = _on_white(rgba[top : top + rows, :, :3], rgba[top : top + rows, :, 3:])
    return out


def eight_bit_copy(frame, pix_fmt: str):
    """The frame's planes rounded to 8 bits (half up, no dither: swscale's own reduction dithers,
    4 levels off the CLI's RGB in flat colour where rounding is up to 3), as a `pix_fmt` frame with the
    frame's matrix and range. Transient memory: the frame in `pix_fmt` and 2 bytes a luma sample."""
    import av

    shift = frame.format.components[0].bits - 8
    order = ">u2" if frame.format.name.endswith("be") else "<u2"
    copy = av.VideoFrame(frame.width, frame.height, pix_fmt)
    for deep, plane in zip(frame.planes, copy.planes):
        samples = np.frombuffer(deep, order).reshape(deep.height, deep.line_size // 2)[:, :plane.width]
        rounded = samples >> (shift - 1)  # (v + half) >> shift without overflowing 16 bits
        rounded += 1
        rounded >>= 1
        np.minimum(rounded, 255, out=rounded)
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width] = rounded
    copy.colorspace, copy.color_range = frame.colorspace, frame.color_range
    return copy


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
    turns, mirrored = orientation(frame) if turns_mirrored is None else turns_mirrored
    eight_bit = eight_bit_format(frame.format.name) if hdr is None else None
    if eight_bit is not None:  # matrix and range tags travel with the frame
        frame = eight_bit_copy(frame, eight_bit)
    alpha = hdr is None and has_alpha(frame.format.name)
    target = "rgba" if alpha else "rgb24"
    if hdr is not None:
        rgb = tone_mapped(frame, hdr, size)
    elif size is None or size == (frame.width, frame.height):
        rgb = _REFORMATTER.reformat(frame, format=target, src_colorspace=matrix, threads=1).to_ndarray()
    else:
        rgb = _REFORMATTER.reformat(frame, format=target, width=size[0], height=size[1], src_colorspace=matrix,
                                    interpolation="AREA", threads=1).to_ndarray()
    if alpha:  # transparency on white, as every other path shows it (it came out on whatever colour lay under it)
        # an alpha of 0 throughout is a 32-bit AVI's unused fourth byte, as FFmpeg's BMP decoder and
        # Pillow take it (a review's uncompressed `bgra` AVI came out white): the picture, opaque
        rgb = _on_white_in_strips(rgb) if rgb[..., 3].any() else np.ascontiguousarray(rgb[..., :3])
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
