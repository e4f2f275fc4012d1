"""Where decoding from an H.264 key frame gives whole pictures, read from NAL unit headers: its one job.

A demuxer flags as key frames the IDR pictures and the pictures an SEI recovery point marks
(H.264 D.2.8). With x264's periodic intra refresh (`-x264-params intra-refresh=1`: OBS and other
low-latency streamers, broadcast and IP cameras) every key frame but the first is such a recovery
point on a P picture: a column of intra blocks sweeps the picture over the next
`recovery_frame_cnt` reference pictures, and only the picture where the sweep ends (the recovery
point's frame_num plus that count, modulo MaxFrameNum) and those after it are whole. FFmpeg's
decoder, started at such a key frame, outputs nothing before that picture. Taken as a place to
start decoding, such a key frame left the frames of its sweep undecoded (every clip of an
intra-refresh MP4 rejected, `decode_failed`), and decord, which names what it outputs after a seek
by its target, showed frames `recovery_frame_cnt` places late.

`RecoveryPoints` follows the packets as the index demuxes them and says, for each key frame that
is no IDR and whose recovery point SEI gives a count, the position of the packet whose picture
completes it: the reference picture whose frame_num is the recovery point's plus the count,
counted by `nal_ref_idc` (frame_num grows by one after each reference picture), as FFmpeg's
decoder counts it (h264_slice.c): the count taken modulo MaxFrameNum (the SPS's
log2_max_frame_num: 65535 on a stream whose frame_num wraps at 256 is 255 pictures on, not
65535), a count of 2^16 or more refused (no recovery point: nothing whole from there), and a later
recovery point whose picture comes first ending the wait (the decoder keeps the nearer). A count
of 0 on an I picture (x264's open-GOP I pictures) is whole at once, as before; on a P picture
FFmpeg's decoder outputs from it at once though its references are missing (its frames are not
the ones a decode from the start gives): it is never taken as whole, yet a file or a joined part
starting there shows its frames, as the CLI does (`shown_from`). Only a key frame's bytes and
those of the packets of a sweep under way are read, a few header bytes each (MP4 and Matroska
length-prefixed, avcC; an MPEG-TS's Annex B start codes), from a copy of the packet's first few
hundred bytes, never the whole packet; an all-intra MP4's IDR packets are passed on their first
NAL header alone. Parameter sets come from the extradata, a key frame's in-band NAL units, and a
packet's new extradata side data (`new_extradata`: an FLV's sequence header re-sent mid-stream).
"""

from __future__ import annotations

H264_SLICE, H264_IDR, H264_SEI, H264_SPS, H264_PPS = 1, 5, 6, 7, 8
SEI_RECOVERY_POINT = 6
MAX_FRAME_NUM = 1 << 16  # H.264's largest MaxFrameNum: FFmpeg refuses a recovery_frame_cnt at or past it
SCAN_BYTES = (256, 4096)  # a packet's slice lies after its AUD, SPS, PPS and SEI: looked for in these first
SLICE_HEADER_BYTES = 16  # first_mb_in_slice, slice_type and pic_parameter_set_id lie well within these
HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)  # SPS with chroma/depth fields
KNOWN_PARAMETER_SETS = 256  # parameter set units remembered as read already (a stream repeats the same few)
START_CODE = b"\x00\x00\x01"
SLICES, PARAMETER_SETS = (H264_SLICE, H264_IDR), (H264_SPS, H264_PPS)


def length_size(extradata: bytes | None) -> int | None:
    """The NAL length field's size of an avcC stream (MP4, Matroska); None for Annex B (MPEG-TS)."""
    data = bytes(extradata or b"")
    return (data[4] & 3) + 1 if data[:1] == b"\x01" and len(data) > 5 else None


def nal_units(data, size: int | None) -> list[bytes]:
    """The NAL units of a packet (bytes, or a memoryview of it) up to its first slice, of which
    only the first bytes are kept (`SLICE_HEADER_BYTES` at least: enough for its header), the
    slice last (none where the packet holds none): length-prefixed (`size` bytes: MP4,
    Matroska) or Annex B (start codes: MPEG-TS). Read from a copy of the packet's first bytes
    (`SCAN_BYTES`), of the whole packet only where its slice lies further: a copy of a few
    hundred bytes split in C costs less than reading a PyAV packet's memoryview a byte at a
    time, or copying and splitting kilobytes."""
    for limit in SCAN_BYTES:
        units = _units(bytes(data[:limit]), size)
        for k, unit in enumerate(units):
            if unit and unit[0] & 0x1F in SLICES:
                if len(unit) >= SLICE_HEADER_BYTES or limit >= len(data):
                    return units[:k + 1]
                break
        else:
            if limit >= len(data):
                return units
    units = _units(bytes(data), size)
    return next((units[:k + 1] for k, unit in enumerate(units) if unit and unit[0] & 0x1F in SLICES), units)


def _units(chunk: bytes, size: int | None) -> list[bytes]:
    """The NAL units in `chunk`, the first bytes of a packet (length-prefixed ones up to the
    first slice), the last one cut where the chunk ends."""
    if size is None:
        return chunk.split(START_CODE)[1:]
    units: list[bytes] = []
    at = 0
    while at + size <= len(chunk):
        n = int.from_bytes(chunk[at:at + size], "big")
        at += size
        if n == 0 or at >= len(chunk):
            break
        units.append(chunk[at:at + n])
        if chunk[at] & 0x1F in SLICES:
            break
        at += n
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
        if zeros > 32:
            raise IndexError("Exp-Golomb code longer than 32 bits")
    bit += 1
    value = 0
    for _ in range(zeros):
        value = value << 1 | data[bit >> 3] >> (7 - (bit & 7)) & 1
        bit += 1
    return (1 << zeros) - 1 + value, bit


def _flag(data: bytes, bit: int) -> int:
    return data[bit >> 3] >> (7 - (bit & 7)) & 1


def _skip_scaling_list(data: bytes, bit: int, size: int) -> int:
    """The bit after an SPS scaling list of `size` entries (H.264 7.3.2.1.1.1)."""
    last = following = 8
    for _ in range(size):
        if following:
            delta, bit = _ue(data, bit)  # se(v): only its length matters here
            following = (last + (delta + 1) // 2 * (1 if delta & 1 else -1) + 256) % 256
        last = following or last
    return bit


def sps_frame_num_bits(sps: bytes) -> tuple[int, int] | None:
    """(seq_parameter_set_id, log2_max_frame_num) of an SPS NAL unit; None where it cannot be read."""
    data = _rbsp(sps)
    try:
        profile = data[1]
        sps_id, bit = _ue(data, 32)  # after the NAL header, profile_idc, constraint flags, level_idc
        if profile in HIGH_PROFILES:
            chroma, bit = _ue(data, bit)
            bit += chroma == 3  # separate_colour_plane_flag
            _, bit = _ue(data, bit)  # bit_depth_luma_minus8
            _, bit = _ue(data, bit)  # bit_depth_chroma_minus8
            bit += 1  # qpprime_y_zero_transform_bypass_flag
            scaling, bit = _flag(data, bit), bit + 1
            for i in range((12 if chroma == 3 else 8) if scaling else 0):
                present, bit = _flag(data, bit), bit + 1
                if present:
                    bit = _skip_scaling_list(data, bit, 16 if i < 6 else 64)
        log2_minus4, _ = _ue(data, bit)
    except IndexError:
        return None
    return (sps_id, log2_minus4 + 4) if sps_id < 32 and log2_minus4 <= 12 else None


def _leading_ues(unit: bytes, count: int) -> list[int] | None:
    """The first `count` Exp-Golomb numbers after a NAL unit's header (a PPS's ids; a slice's
    first_mb_in_slice, slice_type and pic_parameter_set_id); None where they cannot be read."""
    data, bit, values = _rbsp(unit), 8, []
    try:
        for _ in range(count):
            value, bit = _ue(data, bit)
            values.append(value)
    except IndexError:
        return None
    return values


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


def _parameter_set(unit: bytes) -> tuple[int, int, int] | None:
    """(H264_SPS, its id, log2_max_frame_num) of an SPS, (H264_PPS, its id, the SPS id it names)
    of a PPS; None where it cannot be read."""
    if unit[0] & 0x1F == H264_SPS and (read := sps_frame_num_bits(unit)) is not None:
        return H264_SPS, read[0], read[1]
    if unit[0] & 0x1F == H264_PPS and (ids := _leading_ues(unit, 2)) is not None:
        return H264_PPS, ids[0], ids[1]
    return None


class RecoveryPoints:
    """The key frames of an H.264 stream that decode whole only some pictures later, followed packet
    by packet in decode order (`add`); `completed` gives (key position, position of the picture
    from which a decode started there is whole) for each, the packet count where the stream ends
    first; `shown_from` where FFmpeg's decoder started there begins to output."""

    def __init__(self, extradata: bytes | None) -> None:
        self.size = length_size(extradata)
        self.frame_num_bits: dict[int, int] = {}  # SPS id -> log2_max_frame_num
        self.pps_sps: dict[int, int] = {}  # PPS id -> SPS id
        # parameter set unit -> what it says, (SPS or PPS, its id, log2_max_frame_num or SPS id);
        # None where unreadable: read once, applied each time the unit comes (an id can be redefined)
        self.known: dict[bytes, tuple[int, int, int] | None] = {}
        self._read_extradata(bytes(extradata or b""))
        self.references = 0  # reference pictures so far
        # the reference picture count at which a sweep ends -> [(key position, whole there: False
        # where the decoder only shows from there, a count of 0 on a P picture)]; one entry per count
        self.pending: dict[int, list[tuple[int, bool]]] = {}
        self.done: dict[int, int | None] = {}  # key -> position whole from (None: never)
        self.shown: dict[int, int] = {}  # key -> position the decoder outputs from, where not that
        self.keys: list[int] = []
        self.count = 0

    def add(self, position: int, packet, keyframe: bool) -> None:
        self.count = position + 1
        if keyframe:
            self.keys.append(position)
        elif not self.pending:
            return  # the common case: nothing read
        data = memoryview(packet)
        if not self.pending and self.size is not None and len(data) > self.size and data[self.size] & 0x1F == H264_IDR:
            return  # an IDR slice first (all-intra MP4): no SEI nor parameter set before it, no sweep to end
        units = nal_units(data, self.size)
        if not units or not units[-1] or units[-1][0] & 0x1F not in SLICES:
            return  # no picture here (unreadable): followed by the next packets
        header = units[-1][0]
        if keyframe:
            for unit in units[:-1]:
                if unit and unit[0] & 0x1F in PARAMETER_SETS:
                    self._read_parameter_set(unit)
        if header & 0x1F == H264_IDR:
            for waiting in self.pending.values():  # an IDR completes every sweep under way
                for key, whole in waiting:
                    self._complete(key, whole, position)
            self.pending.clear()
            return
        reference = bool(header >> 5 & 3)
        if reference:  # one more reference picture: frame_num grows after it
            self.references += 1
            for key, whole in self.pending.pop(self.references, ()):
                self._complete(key, whole, position)
        if not keyframe:
            return
        counts = (recovery_count(unit) for unit in units[:-1] if unit and unit[0] & 0x1F == H264_SEI)
        cnt = next((c for c in counts if c is not None), None)
        if cnt is None:
            return  # no recovery point message: whole at once
        if cnt >= MAX_FRAME_NUM:  # refused by FFmpeg's decoder: no recovery point, nothing whole from it
            self.done[position] = None
            return
        fields = _leading_ues(units[-1], 3)  # first_mb_in_slice, slice_type, pic_parameter_set_id
        cnt %= self._max_frame_num(fields[2] if fields else None)
        if cnt == 0 and fields is not None and fields[1] % 5 in (2, 4):
            return  # an I (or SI) picture whole at once (x264's open-GOP I pictures)
        # the picture with frame_num + cnt: this one counted as frame_num when it is a reference
        target = self.references + cnt + (0 if reference else 1)
        whole = cnt > 0
        if not whole:
            self.done[position] = None
        if target == self.references:
            self.shown[position] = position
        else:
            self.pending.setdefault(target, []).append((position, whole))

    def _complete(self, key: int, whole: bool, position: int) -> None:
        if whole:
            self.done[key] = position
        else:
            self.shown[key] = position

    def _max_frame_num(self, pps_id: int | None) -> int:
        """MaxFrameNum of the SPS a slice's PPS names (the stream's only SPS where unnamed), else
        the largest H.264 allows."""
        sps_id = self.pps_sps.get(pps_id) if pps_id is not None else None
        if sps_id is None and len(self.frame_num_bits) == 1:
            sps_id = next(iter(self.frame_num_bits))
        return 1 << self.frame_num_bits[sps_id] if sps_id in self.frame_num_bits else MAX_FRAME_NUM

    def new_extradata(self, data: bytes) -> None:
        """Parameter sets a packet's new extradata side data brings, told before the packet is
        `add`ed (FFmpeg's FLV demuxer hands a sequence header re-sent mid-stream, as an RTMP
        encoder restarting sends it, to the next packet): read as those of the stream's extradata,
        and as an SPS in-band would be. Recovery counts are then taken modulo its MaxFrameNum (an
        FLV whose second part counts 18 pictures to a refresh was taken modulo the first part's
        16: whole 2 pictures on). An avcC record also sets the NAL length size of later packets."""
        size = length_size(data)
        if size is not None:
            self.size = size
        elif self.size is not None:
            return  # Annex B beside length-prefixed packets: nothing this reads
        self._read_extradata(data)

    def _read_extradata(self, data: bytes) -> None:
        """The SPSs and PPSs of an avcC record (ISO/IEC 14496-15: counted, each 2-byte sized) or
        of Annex B extradata."""
        units, at = data.split(START_CODE)[1:] if self.size is None else [], 5
        for mask in (0x1F, 0xFF) if self.size is not None else ():  # the SPS count's low 5 bits, then the PPS count
            count = data[at] & mask if at < len(data) else 0
            at += 1
            for _ in range(count):
                n = int.from_bytes(data[at:at + 2], "big")
                units.append(data[at + 2:at + 2 + n])
                at += 2 + n
        for unit in units:
            if unit and unit[0] & 0x1F in PARAMETER_SETS:
                self._read_parameter_set(unit)

    def _read_parameter_set(self, unit: bytes) -> None:
        """Map the id an SPS or PPS unit defines to what it says, every time the unit comes: joined
        streams (A, B, then A again) reuse an id for another set and back, so a unit read already
        must still take its id back (parsed once: the same few units repeat at every key frame)."""
        if unit in self.known:
            read = self.known[unit]
        else:
            if len(self.known) >= KNOWN_PARAMETER_SETS:
                self.known.clear()
            read = self.known[unit] = _parameter_set(unit)
        if read is None:
            return
        kind, set_id, value = read
        (self.frame_num_bits if kind == H264_SPS else self.pps_sps)[set_id] = value

    def _chain(self, own: dict[int, int | None]) -> tuple[tuple[int, int], ...]:
        """Per recovery point, the position its own sweep (`own`; the packet count where never)
        or the sweep of a later key frame met first ends: the decoder keeps the nearer recovery
        point, and a key frame without one (an IDR, an I picture) is whole at once. So the
        positions never fall from one key frame to the next."""
        recovery = set(own) | {key for waiting in self.pending.values() for key, _ in waiting}
        ready, chained = self.count, []
        for key in reversed(self.keys):
            if key in recovery:
                done = own.get(key)
                ready = min(ready, self.count if done is None else done)
                chained.append((key, ready))
            else:
                ready = key
        return tuple(reversed(chained))

    def completed(self) -> tuple[tuple[int, int], ...]:
        """(key position, position from which a decode started there gives whole pictures)."""
        return self._chain(self.done)

    def shown_from(self) -> dict[int, int]:
        """Key position -> position of the first picture FFmpeg's decoder, started there, outputs:
        where a file or a part joined to another starts, the CLI shows nothing before it."""
        return dict(self._chain({**self.done, **self.shown}))
