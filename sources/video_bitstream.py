"""Frame sizes read from a video bitstream's own headers, without decoding a frame: its one job.

`sources.video_decode.key_frame_sizes` asks these to tell whether a stream changes frame size
(decord stretches such frames to the first one's size) at the cost of a few header bytes a frame:
which H.264 key frames bring a parameter set (SPS) not sized yet (`ParameterSets`), the size of
each frame a VP9 stream shows (`VP9Sizes`, from its uncompressed headers), and the size an MJPEG
or ProRes frame's header states (`header_size`). They read a packet's bytes (and an H.264
packet's new extradata) and nothing else: no file, no decoder; what they cannot read they say
(None, or ValueError), and the caller decodes the frame instead.
"""

from __future__ import annotations

from transforms.headers import jpeg_layout

H264_SPS, H264_NAL_TYPE = 7, 0x1F


class ParameterSets:
    """The H.264 SPSs a stream has brought (its extradata, in-band NAL units, new extradata in
    packet side data: a stream copy of clips joined), and which of them a decoded key frame has
    sized. A key frame is of a size already counted when every SPS it brings is sized, or, bringing
    none, every SPS the stream brought is. Bytes that do not parse as NAL units say nothing: the
    frame is decoded. (An SPS brought beside a key frame that does not use it would be sized
    wrongly: no encoder writes one.)"""

    def __init__(self, extradata: bytes | None) -> None:
        data = bytes(extradata or b"")
        self.length_size = (data[4] & 3) + 1 if data[:1] == b"\x01" and len(data) > 5 else None  # avcC; else Annex B
        self.seen: set[bytes] = set(_avcc_sps(data) if self.length_size else _sps_units(data, None) or ())
        self.sized: set[bytes] = set()

    def new_size_possible(self, packet) -> bool:
        """Whether decoding this key frame may show a size not counted yet; when it is decoded, its
        SPS (the one it brings, or the stream's only one) is taken as sized by it."""
        brought = _sps_units(bytes(packet), self.length_size)
        if brought is None:
            return True
        if packet.has_sidedata("new_extradata"):
            extra = bytes(packet.get_sidedata("new_extradata"))
            brought += _avcc_sps(extra) if extra[:1] == b"\x01" else _sps_units(extra, None) or [extra]
        self.seen.update(brought)
        candidates = set(brought) or self.seen  # none brought: sized by one the stream brought before
        if candidates and candidates <= self.sized:
            return False
        if len(candidates) == 1:
            self.sized |= candidates
        return True


def _sps_units(data: bytes, length_size: int | None) -> list[bytes] | None:
    """The SPS NAL units in `data`: length-prefixed (`length_size` bytes, MP4 and Matroska) or
    Annex B (start codes); None where the lengths run past the data."""
    if length_size is None:
        units = [unit.rstrip(b"\x00") for unit in data.split(b"\x00\x00\x01")[1:]]
    else:
        units, at = [], 0
        while at < len(data):
            size = int.from_bytes(data[at:at + length_size], "big")
            at += length_size
            if size == 0 or at + size > len(data):
                return None
            units.append(data[at:at + size])
            at += size
    return [unit for unit in units if unit and unit[0] & H264_NAL_TYPE == H264_SPS]


def _avcc_sps(data: bytes) -> list[bytes]:
    """The SPSs an avcC record (ISO/IEC 14496-15) holds: a count at byte 5, each 2-byte sized."""
    units, at = [], 6
    for _ in range(data[5] & 0x1F if len(data) > 5 else 0):
        size = int.from_bytes(data[at:at + 2], "big")
        units.append(data[at + 2:at + 2 + size])
        at += 2 + size
    return units


VP9_SYNC_CODE = 0x498342
VP9_CS_RGB = 7


class _Bits:
    """MSB-first bits of a byte string (a VP9 uncompressed header); IndexError past its end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.data[self.at >> 3] >> (7 - (self.at & 7)) & 1
            self.at += 1
        return value


class VP9Sizes:
    """The size of each frame a VP9 stream shows, from its frames' uncompressed headers (VP9
    bitstream spec 6.2), tracking the size in each of the 8 reference slots: VP9 changes size on
    any frame, a key frame or not (reference scaling: libvpx's dynamic resize in real-time
    encodes, as WebRTC's), so key frames alone do not tell. Reads a few bytes a frame."""

    def __init__(self) -> None:
        self.slots: list[tuple[int, int] | None] = [None] * 8

    def shown(self, packet: bytes) -> list[tuple[int, int]]:
        """The sizes of the frames a packet (a superframe: several) shows; ValueError when a header
        cannot be read."""
        try:
            return [size for frame in _vp9_frames(packet) if (size := self._frame(_Bits(frame))) is not None]
        except (IndexError, TypeError) as exc:
            raise ValueError(f"unreadable VP9 frame header ({type(exc).__name__})") from None

    def _frame(self, bits: _Bits) -> tuple[int, int] | None:
        if bits.read(2) != 2:
            raise ValueError("not a VP9 frame (frame marker)")
        profile = bits.read(1) | bits.read(1) << 1
        if profile == 3:
            bits.read(1)
        if bits.read(1):  # show_existing_frame: a slot's frame shown again
            return self.slots[bits.read(3)]
        key, show, error_resilient = bits.read(1) == 0, bits.read(1), bits.read(1)
        intra_only = not key and not show and bits.read(1)
        if not key and not error_resilient:
            bits.read(2)  # reset_frame_context
        if key or intra_only:
            if bits.read(24) != VP9_SYNC_CODE:
                raise ValueError("VP9 frame sync code missing")
            if key or profile > 0:
                _vp9_color_config(bits, profile)
            refresh = 0xFF if key else bits.read(8)
            size = (bits.read(16) + 1, bits.read(16) + 1)
        else:
            refresh = bits.read(8)
            refs = []
            for _ in range(3):
                refs.append(bits.read(3))
                bits.read(1)  # sign bias
            size = self._size_with_refs(bits, refs)
        for slot in range(8):
            if refresh >> slot & 1:
                self.slots[slot] = size
        return size if show else None

    def _size_with_refs(self, bits: _Bits, refs: list[int]) -> tuple[int, int]:
        """An inter frame's size: that of the first reference it names (found_ref), else its own."""
        for ref in refs:
            if bits.read(1):
                size = self.slots[ref]
                if size is None:
                    raise ValueError(f"VP9 frame takes its size from reference slot {ref}, never filled")
                return size
        return bits.read(16) + 1, bits.read(16) + 1


def _vp9_color_config(bits: _Bits, profile: int) -> None:
    if profile >= 2:
        bits.read(1)  # ten_or_twelve_bit
    rgb = bits.read(3) == VP9_CS_RGB
    if not rgb:
        bits.read(1)  # colour range
    if profile in (1, 3):
        bits.read(1 if rgb else 3)  # subsampling x and y (none for RGB), a reserved bit


def _vp9_frames(packet: bytes) -> list[bytes]:
    """The frames of a VP9 packet: a superframe's, by its index at the end (Annex B), else itself."""
    marker = packet[-1] if packet else 0
    if marker & 0xE0 == 0xC0:
        count, width = (marker & 7) + 1, (marker >> 3 & 3) + 1
        index = 2 + width * count
        if len(packet) >= index and packet[-index] == marker:
            frames, at = [], 0
            for k in range(count):
                start = len(packet) - index + 1 + k * width
                size = int.from_bytes(packet[start:start + width], "little")
                frames.append(packet[at:at + size])
                at += size
            return [frame for frame in frames if frame]
    return [packet]


JPEG_HEADER_BYTES = 1 << 16  # a JPEG frame header lies after at most one 64 KiB segment or so (EXIF)


def header_size(codec: str, packet) -> tuple[int, int] | None:
    """(width, height) a frame's own header states, for codecs whose every frame has one that is
    cheap to read (MJPEG, ProRes); None where it cannot be read (then the frame is decoded)."""
    data = memoryview(packet)
    if codec == "mjpeg":  # the same header walk as a still JPEG's (fill bytes, standalone markers, JPEG-LS)
        layout = jpeg_layout(bytes(data[:JPEG_HEADER_BYTES]))
        return (layout.width, layout.height) if layout and layout.width and layout.height else None
    if codec == "prores" and len(data) >= 20 and bytes(data[4:8]) == b"icpf":  # size, "icpf", 12 bytes, w, h
        width, height = int.from_bytes(data[16:18], "big"), int.from_bytes(data[18:20], "big")
        return (width, height) if width and height else None
    return None
