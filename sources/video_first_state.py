"""Whether a stream's first packet hands the decoder state a later key frame lacks
(`needs_prime`): a palette (a pal8 stream's first packet's side data) or an H.264/HEVC
display-orientation SEI (payload type 47) sent with the first key frame alone. Only then does
`DecodeSession._prime` decode that packet: decoding it for every session cost ~140 ms a clip on a
1080p HEVC file whose first packet carries neither. Part of `sources.video_decode`."""

from __future__ import annotations

SEI_DISPLAY_ORIENTATION = 47  # H.264 D.1.27, HEVC D.2.x: the same payload type in both
_SEI_TYPES = {"h264": (6,), "hevc": (39, 40)}  # SEI NAL unit types (HEVC: prefix, suffix)
_HEADER_BYTES = {"h264": 1, "hevc": 2}
# codecs whose key frames decode alone (parameter sets in the extradata or with each key frame): any
# other is primed (a GIF's first packet holds its global palette, an AVI's MPEG-4 its VOL header)
_SELF_CONTAINED = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg2video", "mjpeg", "prores"}
START_CODE = b"\x00\x00\x01"


def needs_prime(codec: str, pixel_format: str | None, extradata: bytes | None, packet: bytes) -> bool:
    """Whether the first packet must be decoded for a decode starting later to match one from the
    start: a palette format (or one not known yet), a codec not known to start at any key frame, or
    an orientation SEI in an H.264/HEVC packet."""
    if pixel_format in (None, "pal8") or codec not in _SELF_CONTAINED:
        return True
    if codec not in _SEI_TYPES:
        return False
    try:
        return any(_orients(codec, unit) for unit in _units(packet, _length_size(codec, extradata)))
    except IndexError:  # a unit cut short: decode it, as before
        return True


def _length_size(codec: str, extradata: bytes | None) -> int | None:
    """The NAL length field's size of an avcC/hvcC stream (MP4, Matroska); None for Annex B."""
    data = bytes(extradata or b"")
    if data[:1] != b"\x01":
        return None
    at = 4 if codec == "h264" else 21
    return (data[at] & 3) + 1 if len(data) > at else None


def _units(packet: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [unit.rstrip(b"\x00") for unit in packet.split(START_CODE)[1:]]
    units, at = [], 0
    while at + size <= len(packet):
        n = int.from_bytes(packet[at:at + size], "big")
        units.append(packet[at + size:at + size + n])
        at += size + n
    return units


def _orients(codec: str, unit: bytes) -> bool:
    """Whether an SEI NAL unit holds a display-orientation message (its messages walked)."""
    if not unit:
        return False
    kind = unit[0] & 0x1F if codec == "h264" else unit[0] >> 1 & 0x3F
    if kind not in _SEI_TYPES[codec]:
        return False
    data = unit[_HEADER_BYTES[codec]:].replace(b"\x00\x00\x03", b"\x00\x00")
    at = 0
    while at < len(data) and data[at:] != b"\x80":  # the RBSP's trailing bits end it
        payload_type = 0
        while data[at] == 0xFF:
            payload_type, at = payload_type + 255, at + 1
        payload_type, at = payload_type + data[at], at + 1
        size = 0
        while data[at] == 0xFF:
            size, at = size + 255, at + 1
        size, at = size + data[at], at + 1
        if payload_type == SEI_DISPLAY_ORIENTATION:
            return True
        at += size
    return False
