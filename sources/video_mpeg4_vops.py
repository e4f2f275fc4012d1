"""Which MPEG-4 Part 2 packets give no frame by design, read from their VOP headers: its one job.

A not-coded VOP (an N-VOP: `vop_coded` 0) says "the previous picture again": XviD and DivX write
one for a frame they drop or find unchanged, capture tools for a frame they missed. FFmpeg's
decoder gives no frame for it (`FRAME_SKIPPED`) and the ffmpeg CLI shows none, so such a packet
is no frame. Where frames are named by the decoder's output order (AVI), counting it as one named
every later frame after the one shown next, and counting outputs against packets took it for a
frame the decoder dropped: every clip from the first N-VOP on was rejected (`decode_failed`).

A packed bitstream's placeholder is an N-VOP too (DivX 5 and XviD "packed B-frames", user data
`DivX503b1393p`: a packet carries a P VOP and the B VOP shown before it, the next packet a
placeholder), yet the decoder decodes the stored B VOP in the placeholder's place and gives a
frame. So in a packed stream the packets are followed as FFmpeg's decoder follows them
(`ff_mpeg4_frame_end`): a packet decoded in the place of a stored VOP leaves its own I or B VOP
stored, one decoded itself the I or B VOP after its first.

Unpacked, only small packets are read (a not-coded VOP is its header and stuffing: a few bytes);
packed, every packet's VOP start codes are looked for (a copy and a search in C: 30 ms for 3000
frames of 640x360 XviD). The bits before `vop_coded` need `vop_time_increment_resolution`, read
from the VOL header (the stream's extradata, or the first packet bringing one). Where a header
cannot be read the packet is taken as a frame, as before.
"""

from __future__ import annotations

import re

VOP_START = b"\x00\x00\x01\xb6"
VOL_STARTS = tuple(bytes((0, 0, 1, code)) for code in range(0x20, 0x30))  # video_object_layer_start_code
NOT_CODED_BYTES = 64  # a packet larger than this carries a coded picture (an N-VOP is about 6 bytes)
GRAYSCALE_SHAPE = 3
HEADER_BYTES = 256  # a key frame's VOL header and user data lie in these (before its VOP)
USER_DATA = re.compile(rb"\x00\x00\x01\xb2DivX\d+(?:Build|b)\d+(p?)")  # DivX user data, as FFmpeg reads it


class _Bits:
    """Bits read MSB first from `data` at `bit`; IndexError past its end."""

    def __init__(self, data: bytes, bit: int = 0) -> None:
        self.data, self.bit = data, bit

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.data[self.bit >> 3] >> (7 - (self.bit & 7)) & 1
            self.bit += 1
        return value


def time_increment_bits(data: bytes) -> int | None:
    """The bit count of `vop_time_increment` (from `vop_time_increment_resolution`, ISO/IEC 14496-2
    6.2.3) of the first VOL header in `data`; None without one, or where it cannot be read."""
    at = min((i for i in (data.find(start) for start in VOL_STARTS) if i >= 0), default=-1)
    if at < 0:
        return None
    bits = _Bits(data, (at + 4) * 8)
    try:
        bits.read(9)  # random_accessible_vol, video_object_type_indication
        verid = 1
        if bits.read(1):  # is_object_layer_identifier
            verid = bits.read(4)
            bits.read(3)  # video_object_layer_priority
        if bits.read(4) == 15:  # aspect_ratio_info: extended PAR
            bits.read(16)
        if bits.read(1):  # vol_control_parameters
            bits.read(3)  # chroma_format, low_delay
            if bits.read(1):  # vbv_parameters
                bits.read(79)
        if bits.read(2) == GRAYSCALE_SHAPE and verid != 1:
            bits.read(4)  # video_object_layer_shape_extension
        if not bits.read(1):  # marker
            return None
        resolution = bits.read(16)
    except IndexError:
        return None
    return max(1, (resolution - 1).bit_length()) if resolution else None


def vops(data: bytes, time_bits: int) -> list[tuple[int, bool]]:
    """Per VOP header in `data`: (its position, whether it is coded: `vop_coded`); a header cut
    short counts as coded."""
    found, at = [], data.find(VOP_START)
    while at >= 0:
        bits = _Bits(data, (at + 4) * 8)
        try:
            bits.read(2)  # vop_coding_type
            while bits.read(1):  # modulo_time_base
                pass
            bits.read(1 + time_bits + 1)  # marker, vop_time_increment, marker
            found.append((at, bool(bits.read(1))))
        except IndexError:
            found.append((at, True))
        at = data.find(VOP_START, at + 4)
    return found


def divx_packed(data: bytes) -> bool | None:
    """What DivX user data in `data` says of packed B-frames (`DivX503b1393p`: the `p`), as FFmpeg's
    decoder reads it (`decode_user_data`); None without DivX user data."""
    said = None
    for match in USER_DATA.finditer(data):
        said = match.group(1) == b"p"
    return said


class NotCodedVops:
    """Follows an MPEG-4 Part 2 stream's packets in decode order (`add`): which give no frame."""

    def __init__(self, extradata: bytes | None) -> None:
        data = bytes(extradata or b"")
        self.time_bits = time_increment_bits(data)
        self.packed = bool(divx_packed(data))  # FFmpeg's `divx_packed`: a stored VOP is decoded next
        self._stored = False  # the packet before left a VOP stored to decode in this one's place

    def add(self, packet, keyframe: bool) -> bool:
        """Whether this packet gives no frame: its first VOP not coded, no VOP stored to decode in
        its place (FFmpeg's decoder returns `FRAME_SKIPPED` and stores nothing)."""
        if keyframe or self.time_bits is None:  # headers (VOL, user data) lie at a key frame's start
            head = bytes(memoryview(packet)[:HEADER_BYTES])
            # each VOL read anew: a `-f concat -c copy` join of files at 25 and 29.97 fps changes
            # the bits mid-stream (the first's kept: 8 packets counted where the CLI shows none)
            self.time_bits = time_increment_bits(head) or self.time_bits
            said = divx_packed(head)
            self.packed = self.packed if said is None else said
        if self.time_bits is None or (not self.packed and packet.size > NOT_CODED_BYTES):
            return False  # a coded picture (or a VOP header that cannot be read): a frame
        data = bytes(packet)
        found = vops(data, self.time_bits)
        if self._stored:  # the stored VOP decoded here; this packet's own I or B VOP stored next
            self._stored = any(_stored_kind(data, at) for at, _ in found)
            return False
        if found and not found[0][1]:
            return True
        self._stored = self.packed and any(_stored_kind(data, at) for at, _ in found[1:])
        return False


def _stored_kind(data: bytes, at: int) -> bool:
    """Whether the VOP at `at` is one FFmpeg stores from a packed packet: an I or B VOP (its
    coding type's low bit clear) with more than a few bytes."""
    return len(data) - at > 7 and at + 4 < len(data) and not data[at + 4] & 0x40
