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
converts by one fixed path whatever the flags, at an even width and height. At an odd one (321x241
square pixels, VP9 or AV1) its general path upsamples the chroma, the ffmpeg 5.1 CLI's otherwise
than PyAV's: 0.9 levels mean apart, up to 46 at chroma edges, ours the nearer to a NumPy BT.601
conversion of the decoded planes with centred bilinear chroma (2.0 levels mean off it, the CLI's
2.3). From more bits (x264 10-bit) its general path
upsamples the chroma, placed differently by PyAV's bilinear context and by the CLI (bicubic by
default, or bilinear): up to 3 levels apart where the chroma is flat (our rounding to 8 bits
first: there the CLI told `accurate_rnd` is within a level of a NumPy conversion of the decoded
planes, ours up to 3 off it, on testsrc2 in 10-, 12- and 16-bit x264, x265, VP9, AV1 and FFV1),
far apart beside chroma edges only (up to 116 levels on one pixel pair at testsrc2's yellow/blue
border). A stream that declares no
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

This module is the entry point (`decode_frames`, and every name below, re-exported); its parts,
one job each: `video_open` (open a file, pick its video stream, `VideoError`), `video_memory`
(memory judged from the declaration), `video_packet_order` (the index, with the decoder's output
order where stamps are missing), `video_sample_tables` and `video_y4m` (an MP4/MOV judged on
the samples it declares, a Y4M on its frame size, before either is opened), `video_session`
(one decoding pass: packets sent, frames named and delivered; `video_first_state`: whether it
decodes the stream's first packet first), `video_display` (RGB as a player
shows it: turn, colour matrix, HDR), `video_probe` (what planning needs), `video_frame_sizes`
(`key_frame_sizes`), `video_decord` (the same frames through decord, where it reads them exactly).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from sources.video_decord import (DECORD_BATCH_BYTES, DECORD_CODECS, DECORD_CONTAINERS, DECORD_PIXEL_FORMATS,
                                  FRAME_SIZE_CHANGES, decord_exact, decord_frame_count, decord_frames)
from sources.video_display import (CROP_ALIGN, HD_WIDTH, HDR_BAND_PIXELS, SD_LINES, SWS_CS_ITU709,
                                   UNTAGGED_MATRICES, cropped_off_alignment, display, guessed_matrix, orientation,
                                   tone_mapped)
from sources.video_frame_sizes import key_frame_sizes
from sources.video_index import decode_plan
from sources.video_memory import (DECODER_BASE_MB, DECODER_PIXEL_FLOOR, DECODER_PIXEL_SLACK, DEFAULT_MAX_PIXELS,
                                  DEFAULT_MEMORY_MB, HDR_BAND_BYTES, HDR_CONVERSION_BYTES, MAX_REFERENCES,
                                  RGB_CONVERSION_BYTES, SAR_LIMITS, Judgement, decoder_max_pixels, fitting_pixels,
                                  frame_bytes, frames_held, frames_too_large, judge_memory, judge_stream,
                                  sample_aspect_ratio, sar_width, stream_hdr)
from sources.video_open import DECODER_MACHINE_ERRNOS, STILL_CODECS, VideoError, open_stream, video_stream
from sources.video_index_cache import KeptIndex
from sources.video_packet_order import counted_outputs, keep_index, read_index
from sources.video_probe import (INTERLACED_FIELD_ORDERS, Probe, decode_frames_indexed, probe)
from sources.video_session import COLLECT_PIXELS, DecodeSession

# the names this module has always offered (`sources.video`, the budget worker's jobs by name, tests)
__all__ = [
    "COLLECT_PIXELS", "CROP_ALIGN", "DECODER_BASE_MB", "DECODER_MACHINE_ERRNOS", "DECODER_PIXEL_FLOOR",
    "DECODER_PIXEL_SLACK", "DECORD_BATCH_BYTES", "DECORD_CODECS", "DECORD_CONTAINERS", "DECORD_PIXEL_FORMATS",
    "DEFAULT_MAX_PIXELS", "DEFAULT_MEMORY_MB", "DecodeSession", "FRAME_SIZE_CHANGES", "HDR_BAND_BYTES",
    "HDR_BAND_PIXELS", "HDR_CONVERSION_BYTES", "HD_WIDTH", "INTERLACED_FIELD_ORDERS", "Judgement", "MAX_REFERENCES",
    "Probe", "RGB_CONVERSION_BYTES", "SAR_LIMITS", "SD_LINES", "SEEK_BYTES", "STILL_CODECS", "SWS_CS_ITU709",
    "UNTAGGED_MATRICES", "VideoError", "cropped_off_alignment", "decode_frames", "decode_frames_indexed",
    "decoder_max_pixels", "decord_exact", "decord_frame_count", "decord_frames", "display", "fitting_pixels",
    "frame_bytes", "frames_held", "frames_too_large", "guessed_matrix", "judge_memory", "judge_stream",
    "key_frame_sizes", "open_stream", "orientation", "probe", "read_index", "sample_aspect_ratio", "sar_width",
    "stream_hdr", "tone_mapped", "video_stream",
]

SEEK_BYTES = 8 << 20  # a gap holding more packet bytes than this is seeked over rather than read


def decode_frames(uri: str, wanted: Sequence[int], expected_frames: int | None = None,
                  postprocess: Callable[[np.ndarray], np.ndarray] | None = None, skip_nonref: bool = True,
                  seek_bytes: int = SEEK_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                  memory_mb: int = DEFAULT_MEMORY_MB, kept: KeptIndex | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (presented index, RGB frame) for every index in `wanted`, in decoding order.

    `expected_frames`: the count the file was planned with; a file that changed since is refused.
    Frames that do not decode are simply not yielded: the caller names what is missing. So are
    the frames decoded from a reference a damaged packet left broken (`DecodeSession.drop_damaged`).
    `postprocess` runs on each frame as it decodes; one with a `working_size` (a
    `transforms.resize.Canvas`) lets a stream too large to convert at full size be converted at
    the working size instead. `max_pixels`, `memory_mb`: see `judge_memory`. `kept`: the index
    the probe's process built by decoding (`Probe.kept_index`), used while the file is unchanged.
    """
    if kept is not None:
        keep_index(kept)
    # where frames are named by output order, the outputs counted against the packets first
    index = counted_outputs(uri, read_index(uri, max_pixels, memory_mb), max_pixels, memory_mb)
    shown = index.presented
    if expected_frames is not None and len(shown) < expected_frames:
        raise VideoError("changed_file", f"{len(shown)} frames now, {expected_frames} when planned")
    wanted = sorted(set(wanted))
    if wanted and (wanted[0] < 0 or wanted[-1] >= len(shown)):
        raise VideoError("decode_failed", f"frame {wanted[-1]} is past the last of {len(shown)}")
    session = DecodeSession(uri, index, {shown[w]: w for w in wanted}, postprocess, skip_nonref, seek_bytes, max_pixels,
                       memory_mb, drop_damaged=True)
    yield from session.run(decode_plan(index, wanted))
    if session.wanted and session.too_large is not None:  # the frames a growth past max_pixels cost
        raise session.too_large
