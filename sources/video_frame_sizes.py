"""How many frame sizes a stream has (`key_frame_sizes`), read from frame headers where they
state it and decoding as few key frames as tell it. Part of `sources.video_decode`."""

from __future__ import annotations

import logging

from sources.video_bitstream import ParameterSets, VP9Sizes, header_size
from sources.video_memory import DEFAULT_MAX_PIXELS, decoder_max_pixels
from sources.video_open import VideoError, open_stream

log = logging.getLogger(__name__)


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
