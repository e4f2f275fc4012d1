"""The length of an avcC/hvcC parameter set record at the start of a payload.

An FLV sequence header (`new_extradata`) may carry bytes past its record: FFmpeg's decoder reads
the record and ignores the rest, so the index keeps the record alone (`video_index`) rather than
drop a header that really changes the parameter sets, or hold megabytes of padding per frame.
"""

from __future__ import annotations

# H.264 profiles whose avcC carries the chroma/bit depth extension (ISO/IEC 14496-15, 5.3.3.1.2)
HIGH_PROFILES = (100, 110, 122, 144)


def _units(data: bytes, pos: int, count: int) -> int | None:
    """The end of `count` 2-byte-length-prefixed units from `pos`, or None if they run past `data`."""
    for _ in range(count):
        if pos + 2 > len(data):
            return None
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    return pos if pos <= len(data) else None


def _avcc_length(data: bytes) -> int | None:
    if len(data) < 7 or data[0] != 1:
        return None
    pos = _units(data, 6, data[5] & 0x1F)  # configurationVersion..lengthSizeMinusOne, numSPS
    if pos is None or pos >= len(data):
        return None
    pos = _units(data, pos + 1, data[pos])  # numPPS
    if pos is not None and data[1] in HIGH_PROFILES and len(data) - pos >= 4:
        extended = _units(data, pos + 4, data[pos + 3])  # chroma, bit depths, numSPSExt
        pos = extended if extended is not None else pos
    return pos


def _hvcc_length(data: bytes) -> int | None:
    if len(data) < 23 or data[0] != 1:
        return None
    pos: int | None = 23
    for _ in range(data[22]):  # numOfArrays: NAL unit type, numNalus, the units
        if pos is None or pos + 3 > len(data):
            return None
        pos = _units(data, pos + 3, int.from_bytes(data[pos + 1:pos + 3], "big"))
    return pos


def parameter_record(data: bytes, codec: str) -> bytes | None:
    """The avcC (`codec` h264) or hvcC (hevc) record `data` starts with, without the bytes after
    it; None if `data` does not parse as one."""
    length = _avcc_length(data) if codec == "h264" else _hvcc_length(data) if codec == "hevc" else None
    return None if length is None else data[:length]
