"""Where decoding from an H.264 key frame gives whole pictures, read from NAL unit headers: its one job.

A demuxer flags as key frames the IDR pictures and the pictures an SEI recovery point marks
(H.264 D.2.8). With x264's periodic intra refresh (`-x264-params intra-refresh=1`: OBS and other
low-latency streamers, broadcast and IP cameras) every key frame but the first is such a recovery
point on a P picture: a column of intra blocks sweeps the picture over the next
`recovery_frame_cnt` reference pictures, and only the picture where the sweep ends (the recovery
point's frame_num plus that count) and those after it are whole. FFmpeg's decoder, started at
such a key frame, outputs nothing before that picture. Taken as a place to start decoding, such a
key frame left the frames of its sweep undecoded (every clip of an intra-refresh MP4 rejected,
`decode_failed`), and decord, which names what it outputs after a seek by its target, showed
frames `recovery_frame_cnt` places late.

`RecoveryPoints` follows the packets as the index demuxes them and says, for each key frame that
is no IDR and whose recovery point SEI gives a count (x264's open-GOP I pictures give 0: whole at
once, as before), the position of the packet whose picture completes it: the reference picture
whose frame_num is the recovery point's plus the count, counted by `nal_ref_idc` (frame_num grows
by one after each reference picture). Only a key frame's bytes and those of the packets of a
sweep under way are read, a few header bytes each: MP4 and Matroska length-prefixed (avcC), an
MPEG-TS's Annex B start codes.
"""

from __future__ import annotations

H264_SLICE, H264_IDR, H264_SEI = 1, 5, 6
SEI_RECOVERY_POINT = 6
HEADER_BYTES = 4096  # an Annex B packet's slice header lies after its AUD, SPS, PPS and SEI: read that much first


def length_size(extradata: bytes | None) -> int | None:
    """The NAL length field's size of an avcC stream (MP4, Matroska); None for Annex B (MPEG-TS)."""
    data = bytes(extradata or b"")
    return (data[4] & 3) + 1 if data[:1] == b"\x01" and len(data) > 5 else None


def nal_units(data, size: int | None, stop_at_slice: bool = False) -> list[bytes]:
    """The NAL units of a packet (bytes, or a memoryview read without copying it whole):
    length-prefixed (`size` bytes) or Annex B (start codes), up to the first slice when
    `stop_at_slice`, of which only the first bytes are kept (enough for its header)."""
    units: list[bytes] = []
    if size is None:
        for unit in bytes(data).split(b"\x00\x00\x01")[1:]:
            units.append(unit)
            if stop_at_slice and unit and unit[0] & 0x1F in (H264_SLICE, H264_IDR):
                break
        return units
    at = 0
    while at + size <= len(data):
        n = int.from_bytes(data[at:at + size], "big")
        at += size
        if n == 0 or at >= len(data):
            break
        is_slice = data[at] & 0x1F in (H264_SLICE, H264_IDR)
        units.append(bytes(data[at:at + (min(n, 64) if is_slice else n)]))
        at += n
        if stop_at_slice and is_slice:
            break
    return units


def _rbsp(unit: bytes) -> bytes:
    """A NAL unit's payload with its emulation prevention bytes (00 00 03) removed."""
    return unit.replace(b"\x00\x00\x03", b"\x00\x00")


def _ue(data: bytes, bit: int) -> tuple[int, int]:
    """An Exp-Golomb number at `bit` (MSB first) and the bit after it; IndexError past the data."""
    zeros = 0
    while not data[bit >> 3] >> (7 - (bit & 7)) & 1:
        zeros += 1
        bit += 1
    bit += 1
    value = 0
    for _ in range(zeros):
        value = value << 1 | data[bit >> 3] >> (7 - (bit & 7)) & 1
        bit += 1
    return (1 << zeros) - 1 + value, bit


def recovery_count(sei: bytes) -> int | None:
    """recovery_frame_cnt of the recovery point message in an SEI NAL unit, None without one."""
    data, at = _rbsp(sei)[1:], 0
    try:
        while at < len(data) and data[at] != 0x80:  # 0x80: the trailing bits
            kind = size = 0
            while data[at] == 0xFF:
                kind, at = kind + 255, at + 1
            kind, at = kind + data[at], at + 1
            while data[at] == 0xFF:
                size, at = size + 255, at + 1
            size, at = size + data[at], at + 1
            if kind == SEI_RECOVERY_POINT:
                return _ue(data[at:at + size], 0)[0]
            at += size
    except IndexError:
        return None
    return None


class RecoveryPoints:
    """The key frames of an H.264 stream that decode whole only some pictures later, followed packet
    by packet in decode order (`add`); `completed` gives (key position, position of the picture that
    completes it) for each, the packet count where the stream ends first."""

    def __init__(self, extradata: bytes | None) -> None:
        self.size = length_size(extradata)
        self.pending: list[list[int]] = []  # [key position, reference pictures still to come]
        self.done: list[tuple[int, int]] = []
        self.count = 0

    def add(self, position: int, packet, keyframe: bool) -> None:
        self.count = position + 1
        if not keyframe and not self.pending:
            return  # the common case: nothing read
        data = memoryview(packet)
        units = nal_units(data[:HEADER_BYTES] if self.size is None else data, self.size, stop_at_slice=True)
        if self.size is None and not any(u and u[0] & 0x1F in (H264_SLICE, H264_IDR) for u in units):
            units = nal_units(data, None, stop_at_slice=True)
        slice_unit = next((u for u in units if u and u[0] & 0x1F in (H264_SLICE, H264_IDR)), None)
        if slice_unit is None:
            return  # no picture here (unreadable): followed by the next packets
        reference = bool(slice_unit[0] >> 5 & 3)
        if slice_unit[0] & 0x1F == H264_IDR:
            for key, _ in self.pending:  # an IDR completes every sweep under way
                self.done.append((key, position))
            self.pending = []
            return
        if reference:  # one more reference picture: frame_num grows after it
            for entry in self.pending:
                entry[1] -= 1
        for entry in [e for e in self.pending if e[1] < 0]:
            self.done.append((entry[0], position))
            self.pending.remove(entry)
        if not keyframe:
            return
        counts = [recovery_count(u) for u in units if u[0] & 0x1F == H264_SEI]
        cnt = next((c for c in counts if c is not None), None)
        if not cnt:  # no recovery point message, or whole at once (x264's open-GOP I pictures)
            return
        # the picture with frame_num + cnt: this one counted as frame_num when it is a reference
        self.pending.append([position, cnt - 1 if reference else cnt])

    def completed(self) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(self.done + [(key, self.count) for key, _ in self.pending]))
