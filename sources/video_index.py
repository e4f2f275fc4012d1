"""Which frames a player presents, learned by demuxing only (no decoding).

"Frame i" is the i-th frame a player shows: packets that an edit list hides (the pre-roll of a
cut that starts between key frames, flagged *discard* by the demuxer) still have to be decoded
as references but are not counted, nor are frames before the first key frame of a stream cut
mid-GOP; the order is presentation order (time stamps), not decode order. Every packet must carry a unique time stamp so a decoded frame can be named; a
file where they do not is refused rather than guessed at.

Some containers store no presentation stamps: AVI gives each packet the next tick in decode
order, so H.264 with B-frames there has stamps that rise in decode order while its decoder
reorders. Such stamps name no shown frame: the index marks the stream `decode_order_stamps`, and
its frames are named by the order the decoder gives them (presentation order), decoding from the
first key frame with nothing skipped. In AVI that holds for every codec able to reorder, B-frames
declared or not: the reorder delay can first appear mid-stream (an IPP stream and one with
B-frames copied into one file: the decoder learns of it from the later SPS), and the stamps the
MPEG-4 parser guesses for DivX/XviD's packed B-frames are wrong. Named by those stamps, frames
came out misnamed before the stamps were seen to fall.

Where the demuxer's stamps cannot name frames but the ffmpeg CLI still shows them all, the index
restamps the packets (`VideoIndex.demuxed` keeps what the demuxer said; the decoding session gives
each packet its index stamp before decoding, and reads such a file from the start, never seeking,
but for one recording whose clock only jumps forward, `restamped: jumped`: its demuxer's stamps are
unique, so it is seeked by them):
- MPEG-TS/PS files joined end to end (`cat a.ts b.ts`): the second recording's clock starts again.
  The CLI shows every frame of the first part, then every frame of the second, in decode order
  (its decoder is fed on; `ffmpeg` itself moves later stamps by a new offset, "timestamp
  discontinuity"). Each part from where the decode stamps fall is moved after the part before (a
  jump forward over 10 s, which the CLI closes too, is closed up, decoded on)
  (`_joined_stamps`; a 33-bit clock wrapping within a part is undone); a part must begin at a key
  frame, else the file is refused, and the leading frames of an open GOP that begins a part are
  hidden, as at the file's start. Each part is decoded as it is alone (the decoder drained and
  flushed where it begins, `VideoIndex.joins`): where a part starts with an open GOP (an H.264 key
  frame that is no IDR, an HEVC CRA), the CLI's one decoder carries the part before's frame order
  over the join, drops and mixes frames; the frames here are those the CLI shows of each part
  alone. Only MPEG-TS/PS here; other formats whose stamps may jump are refused, but for:
- Chained Ogg Theora (`cat a.ogv b.ogv`): each part after the one before, its headers (packets
  from FFmpeg's demuxer) hidden and sent to the decoder wherever they lie (`_chained_stamps`). Where
  the parts carry sound too, FFmpeg's demuxer stops at the second part (`MultistreamChain`: Theora's
  only; VP8 and others are refused): the file is then read through its video's pages alone
  (`sources.ogg_video_pages`, `VideoIndex.video_pages`; a part holding other video refuses it there).
- Matroska written with negative first stamps (`-avoid_negative_ts disabled` after an `-ss` copy
  cut with B-frames; an HEVC cut so even by default): FFmpeg's demuxer gives no stamp to a block
  before its cluster's time zero, while the CLI decodes and shows those frames first (those its
  decoder drops, HEVC's leading RASL frames, not at all: hidden). Their order is asked of the decoder
  (`_stamp_negative_blocks`), and they are stamped before the first stamped frame.
- MPEG-TS/PS packets FFmpeg's parser cut out of PES packets without a stamp (an H.264 SEI after the
  slice, as `h264_metadata=sei_user_data=` puts it at x264's IDRs): the CLI shows their frames where
  its decoder outputs them, so the decoder's output order places each between its stamped
  neighbours (`_stamp_split_access_units`); so too two packets the parser gave one PES's stamp
  (`_unstamp_repeated_pes`: x264 into `-f vob`). In files joined end to end, each part's packets are
  so placed by the decoder's output order of that part alone, then the parts one after another
  (`_joined_split_parts`).
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

from sources.video_alpha import alpha_decoder_name, carries_alpha
from sources.video_mpeg4_vops import NotCodedVops
from sources.video_parameter_record import parameter_record
from sources.video_recovery import RecoveryPoints

log = logging.getLogger(__name__)


# the largest new extradata (`VideoIndex.new_extradata`) kept: an avcC/hvcC record with its
# parameter sets is some tens to hundreds of bytes; 64 KiB leaves room for many
MAX_EXTRADATA_BYTES = 64 << 10
# the most bytes of new extradata one index holds where a larger payload parses as no avcC/hvcC
# record to trim (`VideoIndex.new_extradata`): past it the file is refused, not its frames lost
MAX_HELD_EXTRADATA_BYTES = 4 << 20


class UnsupportedVideo(Exception):
    """The file cannot be read frame-exactly; `reason` is a reject code, `detail` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MultistreamChain(UnsupportedVideo):
    """A chained Ogg whose links hold several streams, read as it is: FFmpeg's demuxer stops at the
    second link. Read through `sources.ogg_video_pages.VideoPages` instead, it is a chain of video
    alone (`VideoIndex.video_pages`)."""


def multistream_detail(codec: str) -> str:
    """Why a chained Ogg whose parts hold several streams cannot be read (its video's codec named)."""
    return (f"ogg/{codec}: a chained Ogg whose parts hold several streams (video with sound, the usual .ogv "
            "joined end to end): FFmpeg's demuxer stops where the second part begins (\"Changing stream "
            "parameters in multistream ogg is not implemented\"), so the later parts' frames cannot be read")


@dataclass(frozen=True)
class VideoIndex:
    """Packets in decode order and the presented frames they hold."""

    pts: tuple[int, ...]  # per packet, decode order
    keyframe: tuple[bool, ...]
    discard: tuple[bool, ...]  # hidden by an edit list: decoded as reference, never shown
    size: tuple[int, ...]  # bytes: what skipping a stretch saves in reading
    time_base: Fraction
    clean_end: bool  # demuxing reached the end without an error
    container: str
    codec: str
    # the stamps rise in decode order while the decoder reorders (H.264 with B-frames in AVI):
    # the k-th frame the decoder outputs is presented frame k, whatever its stamp
    decode_order_stamps: bool = False
    partial: int = 0  # the last packets, read short from a cut file, the decoder gives no frame for: hidden
    # per packet, the demuxer's own stamp where `pts` was given by the index instead (() when not):
    # "joined" MPEG-TS/PS parts, or Matroska blocks stamped before zero ("negative"), see `restamped`
    demuxed: tuple[int | None, ...] = ()
    # why `pts` is not the demuxer's: "joined", "jumped" (one part, forward jumps closed: seekable),
    # "negative", "split", "chained", "raw" (an elementary stream, `RAW_STREAMS`) ("" when it is)
    restamped: str = ""
    # packet positions where a later part of a joined file begins: the decoder starts afresh there
    # (drained and flushed), so each part decodes as it does alone
    joins: tuple[int, ...] = ()
    # packet positions of decoder headers that come as packets (a chained Ogg's later Theora
    # headers): no frames (hidden), sent to the decoder wherever they lie, so it is configured as
    # the part that follows needs
    headers: tuple[int, ...] = ()
    # read through `sources.ogg_video_pages.VideoPages` (the video's pages of a chained Ogg with
    # sound): every open of the file for this index must read it so
    video_pages: bool = False
    # a VP8/VP9 WebM declaring alpha whose every packet carries its alpha picture: decoded by
    # libvpx with its alpha (`video_open.frame_decoder`); one that does not is decoded opaque
    alpha: bool = False
    # H.264 key frames that are recovery points decoding whole only pictures later (x264's periodic
    # intra refresh, `sources.video_recovery`): (key position, position of the packet whose picture
    # completes it, or a later key frame's, whichever comes first; the packet count when the stream
    # ends first: never falling from one key frame to the next). A decode started there gives no
    # whole picture before that one, so frames before it are started from an earlier key frame
    recovery: tuple[tuple[int, int], ...] = ()
    # with `decode_order_stamps`: how many of the decoder's outputs, in order, are named right (a
    # whole decode counted them against the packets, `DecodeSession.outputs_named`): from where the
    # outputs fell behind the packets for good (a damaged packet the decoder dropped without a
    # word), every later output would take the name of a frame shown after it. None: not counted
    outputs_named: int | None = None
    # packet positions that give no frame by design (MPEG-4 Part 2 not-coded VOPs, `NotCodedVops`):
    # hidden and never key frames; sent to the decoder, yet not counted against its outputs
    not_coded: tuple[int, ...] = ()
    # (packet position, bytes) of each new extradata a packet's side data brings (an FLV's sequence
    # header re-sent mid-stream): a decode started after one is given the latest (`DecodeSession`).
    # Kept only where it differs from the one before (the stream's extradata before the first): an
    # RTMP stream may re-send the same header before every frame
    new_extradata: tuple[tuple[int, bytes], ...] = ()
    # new extradata payloads larger than `MAX_EXTRADATA_BYTES` cut to the avcC/hvcC record they
    # start with (`parameter_record`): a decoder reads the record and ignores the rest, and keeping
    # each whole held 2 MB a frame of a padded one. Sent to the decoder whole with their packet
    extradata_trimmed: int = 0

    @property
    def presented(self) -> tuple[int, ...]:
        """Time stamps of the shown frames, in presentation order (with `decode_order_stamps`,
        the names of the decoder's outputs in the order it gives them)."""
        return tuple(sorted(p for p, d in zip(self.pts, self.discard) if not d))

    @property
    def reordered(self) -> bool:
        """Whether frames are shown in another order than they are decoded (by their stamps)."""
        return any(b <= a for a, b in zip(self.pts, self.pts[1:]))

    @property
    def open_gop(self) -> bool:
        """Whether a frame after a key frame in decode order is shown before it (an open GOP:
        that frame references the GOP before the key frame)."""
        later = float("inf")  # the smallest stamp after the current packet
        for p, key in zip(reversed(self.pts), reversed(self.keyframe)):
            if key and later < p:
                return True
            later = min(later, p)
        return False


def _held_detail(label: str, held: int) -> str:
    """Why a stream whose new parameter sets hold too many bytes is refused."""
    return (f"{label}: new parameter sets sent mid-stream hold {held} bytes "
            f"(payloads that parse as no avcC/hvcC record, kept whole), over the {MAX_HELD_EXTRADATA_BYTES} "
            "an index keeps to restart decoding after them")


def build_index(container, stream, decoder_shows: Callable[[VideoIndex, list[int]], set[int]] | None = None,
                decoder_order: Callable[..., list[int]] | None = None, video_pages: bool = False) -> VideoIndex:
    """Demux every packet of `stream` once (cheap: no decoding). `decoder_shows(index, positions)`:
    the stamps of the packets at `positions` (a cut's partial ones, shown in `index`) that the
    decoder outputs a frame for; those not are hidden (`_partial_shown_before`). Without it every
    such packet is hidden. `decoder_order(last)`: the positions of packets 0..last in the order the
    decoder outputs their frames (asked only of packets without stamps: Matroska, MPEG-TS/PS); without it such
    a file is refused. `video_pages`: the container reads an Ogg's video pages alone (kept in the index)."""
    raw: list[int | None] = []
    dts: list[int | None] = []
    keyframe: list[bool] = []
    discard: list[bool] = []
    size: list[int] = []
    pes: list[int | None] = []  # where the packet's stamp came from (MPEG-PS: its PES packet's position)
    corrupt: list[bool] = []
    headers: list[int] = []  # a chained Ogg's later Theora headers (`_theora_header`)
    chained = container.format.name == "ogg" and stream.codec_context.name == "theora"
    alpha_candidate = alpha_decoder_name(stream) is not None
    with_alpha = 0  # packets carrying an alpha picture, counted only where the stream declares alpha
    recovery = RecoveryPoints(stream.codec_context.extradata) if stream.codec_context.name == "h264" else None
    vops = NotCodedVops(stream.codec_context.extradata) if stream.codec_context.name == "mpeg4" else None
    not_coded: list[int] = []  # packets giving no frame by design (`VideoIndex.not_coded`)
    new_extradata: list[tuple[int, bytes]] = []  # only where it changes (`VideoIndex.new_extradata`)
    extradata = bytes(stream.codec_context.extradata or b"")
    held = 0  # bytes in `new_extradata`
    extradata_trimmed = 0
    clean = True
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            raw.append(None if packet.pts is None else int(packet.pts))
            dts.append(None if packet.dts is None else int(packet.dts))
            keyframe.append(bool(packet.is_keyframe))
            discard.append(bool(packet.is_discard))
            size.append(int(packet.size))
            pes.append(packet.pos if packet.pos is not None and packet.pos >= 0 else None)
            corrupt.append(bool(packet.is_corrupt))
            if packet.has_sidedata("new_extradata"):  # parameter sets sent beside the packet, not in it
                data = bytes(packet.get_sidedata("new_extradata"))
                if recovery is not None:  # the decoder reads each, re-sent or padded
                    recovery.new_extradata(data)
                if len(data) > MAX_EXTRADATA_BYTES:
                    record = parameter_record(data, stream.codec_context.name)
                    extradata_trimmed += record is not None
                    data = data if record is None else record
                if data != (new_extradata[-1][1] if new_extradata else extradata):  # not re-sent as it was
                    new_extradata.append((len(raw) - 1, data))
                    held += len(data)
                    if held > MAX_HELD_EXTRADATA_BYTES:
                        raise UnsupportedVideo("unsupported_container", _held_detail(f"{container.format.name}/{stream.codec_context.name}", held))
            if recovery is not None:
                recovery.add(len(raw) - 1, packet, keyframe[-1])
            if vops is not None and vops.add(packet, keyframe[-1]):
                not_coded.append(len(raw) - 1)
                keyframe[-1] = False  # nothing to start decoding from
            with_alpha += alpha_candidate and carries_alpha(packet)
            if chained and packet.is_keyframe and _theora_header(bytes(memoryview(packet)[:7])):
                headers.append(len(raw) - 1)
    except UnsupportedVideo:
        raise
    except Exception as exc:  # a truncated file ends the index early; the tail check finds the rest
        if container.format.name == "ogg" and getattr(exc, "errno", None) == AVERROR_PATCHWELCOME:
            # only Theora is read again through its pages alone (`VideoPages` keeps Theora alone)
            refusal = MultistreamChain if chained else UnsupportedVideo
            raise refusal("unsupported_container", multistream_detail(stream.codec_context.name)) from exc
        log.debug("demux stopped early: %s", exc)
        clean = False
    fmt = container.format.name
    # the codec as ffprobe names it (`av1`), not the decoder FFmpeg picked for it (`libdav1d`)
    codec = stream.codec_context.codec.canonical_name
    label = f"{fmt}/{codec}"
    restamped = ""
    joins: list[int] = []
    time_base = stream.time_base or Fraction(1)
    # where FFmpeg's decoder started at a key frame begins to output (a refresh under way: later)
    shown = recovery.shown_from() if recovery is not None else {}
    known = _unstamp_repeated_pes(raw, pes) if fmt in JOINABLE else raw
    if None in known and fmt in JOINABLE and stream.time_base == MPEG_CLOCK:
        known = _unwrapped_stamps(known)
    starts = _split_part_starts(known, dts, keyframe, stream.time_base or Fraction(1)) \
        if None in known and fmt in JOINABLE else []
    if starts:  # MPEG-PS/TS parts joined end to end, with unstamped packets (x264 into .mpg/.vob)
        pts, leading = _joined_split_parts(known, starts, keyframe, label, decoder_order, shown)
        discard = [d or i in leading for i, d in enumerate(discard)]
        joins, restamped = starts, JOINED
    elif None in known and fmt in JOINABLE:
        pts = _stamp_split_access_units(known, label, decoder_order)
        restamped = "split"
    elif fmt in RAW_STREAMS and raw and all(p is None for p in raw):  # Annex B: no stamps at all
        pts, time_base = list(range(len(raw))), 1 / raw_stream_rate(stream)
        restamped = RAW
    elif None in raw:
        pts, dropped = _stamp_negative_blocks(raw, keyframe, label, decoder_order)
        discard = [d or i in dropped for i, d in enumerate(discard)]
        restamped = "negative"
    elif headers and headers[-1] >= len(headers):  # headers after a frame: a later part's
        pts = _chained_stamps(raw, keyframe, headers, label)
        keyframe = [k and i not in headers for i, k in enumerate(keyframe)]
        discard = [d or i in headers for i, d in enumerate(discard)]
        restamped = "chained"
    else:
        pts, leading, joins, restamped = _joined_stamps(raw, dts, keyframe, label, fmt in JOINABLE,
                                                        stream.time_base or Fraction(1), shown)
        discard = [d or i in leading for i, d in enumerate(discard)]
    if len(set(pts)) != len(pts):
        joined = " (files joined end to end?)" if fmt in JOINABLE else \
            " (a chained stream whose clock starts again: only MPEG-TS/PS parts and chained Ogg Theora are " \
            "placed one after another)" if container.format.flags & TS_DISCONT else ""
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: packets share time stamps{joined}, so frames cannot be told apart")
    if pts and not any(keyframe):
        raise UnsupportedVideo("unsupported_container", f"{label}: no key frame in the stream")
    if pts:
        # a stream cut mid-GOP (captured MPEG-TS, say) starts with frames whose references are
        # gone: decoders drop them and players start at the first key frame, so they are hidden
        # too, like the leading frames of an open GOP that key frame begins
        first = keyframe.index(True)
        # a stream cut where a gradual refresh begins (`VideoIndex.recovery`): the decoder gives no
        # frame before the picture that completes it, nor does the CLI show one: hidden too
        whole = shown.get(first, first)
        floor = pts[whole] if whole < len(pts) else max(pts) + 1
        discard = [d or i < first or p < max(pts[first], floor) for i, (d, p) in enumerate(zip(discard, pts))]
    in_decode_order = restamped == RAW or _stamps_in_decode_order(pts, stream.codec_context, fmt)
    if in_decode_order and any(discard[keyframe.index(True):]):
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: time stamps in decode order from a decoder that reorders frames, "
                               "with frames an edit list hides: the shown frames cannot be named")
    # a packet giving no frame (an N-VOP) is no frame: the decoder's outputs are the others' frames
    if not_coded:
        nothing = set(not_coded)
        discard = [d or i in nothing for i, d in enumerate(discard)]
    index = VideoIndex(tuple(pts), tuple(keyframe), tuple(discard), tuple(size), time_base,
                       clean, fmt, codec, in_decode_order, demuxed=tuple(raw) if restamped else (),
                       restamped=restamped, joins=tuple(joins) if restamped == "joined" else (),
                       headers=tuple(headers) if restamped == "chained" else (), video_pages=video_pages,
                       alpha=alpha_candidate and 0 < with_alpha == len(raw),
                       recovery=recovery.completed() if recovery is not None else (), not_coded=tuple(not_coded),
                       new_extradata=tuple(new_extradata), extradata_trimmed=extradata_trimmed)
    partial = 0 if in_decode_order else _partial_shown_before(pts, corrupt)
    tail = [i for i in range(len(pts) - partial, len(pts)) if not discard[i]]
    if not tail:
        return index
    output = decoder_shows(index, tail) if decoder_shows is not None else set()
    hide = [i for i in tail if pts[i] not in output]
    for i in hide:
        discard[i] = True
    return replace(index, discard=tuple(discard), partial=len(hide))


# AVERROR_PATCHWELCOME as PyAV's errors carry it: FFmpeg's Ogg demuxer raises it where a chained
# Ogg holding several streams begins its next part (`ogg_replace_stream`)
AVERROR_PATCHWELCOME = int.from_bytes(b"PAWE", "little")
TS_DISCONT = 0x200  # AVFMT_TS_DISCONT: a format whose stamps may jump (MPEG-TS/PS, Ogg, ...), as the CLI knows it
JOINABLE = ("mpegts", "mpeg")  # where parts joined end to end are placed one after another: MPEG-TS and MPEG-PS
JOIN_FALL = Fraction(1, 10)  # seconds: a decode stamp falling more is a new part (the CLI's discontinuity)
JOIN_JUMP = Fraction(10)  # seconds: a decode stamp jumping forward more is closed up (the CLI's dts_delta_threshold)
# raw elementary streams (Annex B H.264 or HEVC: `.h264`, `.264`, `.h265`, `.hevc`): packets carry no
# time stamp at all. Stamped by decode order and named by the decoder's output order
# (`decode_order_stamps`), frame k shown at k / `raw_stream_rate`: lineage `restamped: raw`
RAW_STREAMS = ("h264", "hevc")
RAW = "raw"
RAW_STREAM_RATE = Fraction(25)  # what FFmpeg's raw demuxers assume (`-framerate`) where the stream declares none


def raw_stream_rate(stream) -> Fraction:
    """The frame rate a raw stream's sequence header declares (H.264/HEVC VUI timing, x264 and
    x265 write it), else 25 as FFmpeg's raw demuxers assume: the stream holds nothing else that
    says when a frame is shown (the demuxer's own `average_rate` is that 25 whatever is declared)."""
    rate = stream.codec_context.framerate
    return Fraction(rate) if rate else RAW_STREAM_RATE


JOINED, JUMPED = "joined", "jumped"  # `VideoIndex.restamped` of MPEG-TS/PS: parts placed; forward jumps closed
MPEG_CLOCK = Fraction(1, 90000)  # MPEG-TS/PS stamps: 33 bits of 90 kHz ticks, wrapping after 26.5 hours
MPEG_WRAP = 1 << 33
MATROSKA = "matroska,webm"


def _frame_step(stamps: list[int]) -> int:
    """The most common gap between consecutive presented stamps (a frame's duration; of equals the
    smallest), at least 1."""
    ordered = sorted(stamps)
    gaps = Counter(b - a for a, b in zip(ordered, ordered[1:]) if b > a)
    return max(1, max(gaps, key=lambda g: (gaps[g], -g))) if gaps else 1


def _joined_stamps(raw: list[int], dts: list[int | None], keyframe: list[bool], label: str,
                   joinable: bool, time_base: Fraction,
                   shown: dict[int, int] | None = None) -> tuple[list[int], set[int], list[int], str]:
    """Stamps that place the parts of MPEG-TS/PS files joined end to end one after another, in
    file order, the positions of the packets to hide, the positions where a later part begins,
    and what was done (`VideoIndex.restamped`: "" when the stamps are `raw`, as where the format is
    not MPEG-TS/PS, `joinable`; "jumped" when only forward jumps were closed, the demuxer's stamps
    still unique and so fit to seek by; else "joined").

    A part begins where a packet's decode stamp (DTS) falls by more than `JOIN_FALL` below the
    previous packet's, its presentation stamp too (the CLI's own test, `ts_discontinuity_detect`,
    compares each packet with the one before). A packet whose decode stamp lies after its own
    presentation stamp is astray and compared with nothing (one PES whose DTS jumped up would
    otherwise make the next frames look like a new part); a decode stamp alone astray, presentation
    stamps going on, is no join either. A jump of about 2^33 ticks is the MPEG clock wrapping (after
    26.5 hours, also in a later part): the rest of that part is moved by 2^33, wherever it lies. A
    decode stamp jumping forward by more than `JOIN_JUMP` past one frame after the one before (10 s:
    parts recorded apart on one running clock, a later one started far after the one before; a
    DVD's clock jumping between cells) is closed up, as the CLI does (`dts_delta_threshold` past its
    `next_dts`: it moves the stamps back by that much and feeds its decoder on, so the frames are
    unchanged, a B-frame after the jump kept among those decoded before it: `_closed_gaps`); such a
    jump alone, within one part, is no join (`restamped: jumped`); a shorter jump the CLI keeps (`-vsync passthrough`
    shows it; its default for frame-rate outputs fills it with copies of the frame before), and so
    do we. A part must begin at a key frame (else its first frames reference the part before:
    refused). Each part is decoded as it is alone: the decoder is drained and flushed where it
    begins (`VideoIndex.joins`), so an H.264 part starting at a key frame that is no IDR (x264's
    `open-gop` recovery points) or an HEVC CRA gives its own frames in its own order (the CLI's one
    decoder carries the part before's frame order over such a join, drops frames and mixes the
    parts' frames; what it shows of each part alone is what is shown here). Its packets shown before
    that key frame (an open GOP's leading frames: MPEG-2, HEVC RASL, x264's B-frames before a
    recovery point) reference the part before: hidden, as at the file's start, so the part gives
    what it gives alone; so are a part's frames before the picture its decoder outputs first, where
    it begins at a recovery point whose refresh is under way (`shown`: key position -> that
    picture's, `RecoveryPoints.shown_from`). Each part is moved so that its first shown frame comes
    one frame after the last frame so far."""
    if not joinable:
        return raw, set(), [], ""
    stamps, starts, jumps = _unwrapped_parts(raw, dts, JOIN_FALL / time_base,
                                             MPEG_WRAP if time_base == MPEG_CLOCK else 0, JOIN_JUMP / time_base)
    wrapped = stamps != raw
    stamps = _closed_gaps(stamps, jumps, starts)
    if not starts:
        # one part whose clock only jumps forward: no join, seekable by the demuxer's own stamps
        jumped_only = jumps and not wrapped and len(set(raw)) == len(raw)
        return stamps, set(), [], "" if stamps == raw else JUMPED if jumped_only else JOINED
    placed, hidden = _parts_placed(stamps, starts, keyframe, label, shown or {})
    return placed, hidden, starts, JOINED


def _parts_placed(stamps: list[int], starts: list[int], keyframe: list[bool], label: str,
                  shown: dict[int, int]) -> tuple[list[int], set[int]]:
    """`stamps` (each part on its own clock) with each part from `starts` on moved after the one
    before, and the positions of the packets to hide (see `_joined_stamps`; `shown`: where the
    decoder started at a key frame outputs its first picture, where not at that key frame)."""
    for i in starts:
        if not keyframe[i]:
            raise UnsupportedVideo("unsupported_container",
                                   f"{label}: the time stamps start again at packet {i}, which is not a key frame "
                                   "(files joined end to end, the later one cut mid-GOP): its frames cannot be "
                                   "placed")
    bounds = [0, *starts, len(stamps)]
    placed = list(stamps[:bounds[1]])
    latest, step = max(placed), _frame_step(placed)  # of the part before: linear in the packets, however many parts
    hidden: set[int] = set()
    for a, b in zip(bounds[1:], bounds[2:]):
        part = stamps[a:b]
        key = part[0]  # the part's key frame
        leading = sorted((p, j) for j, p in enumerate(part) if p < key)
        moved = [p + latest + step - key for p in part]
        for rank, (_, j) in enumerate(leading):  # hidden: stamped between the part before and the key frame
            moved[j] = latest + (rank + 1) * step // (len(leading) + 1)
            hidden.add(a + j)
        first = shown.get(a, a) - a  # a part starting where a refresh is under way: nothing shown before it
        if first > 0:
            hidden.update(a + j for j, p in enumerate(part) if first >= len(part) or p < part[first])
        placed += moved
        latest, step = max(moved), _frame_step([p for p in moved if p >= moved[0]])
    return placed, hidden


THEORA_HEADERS = (0x80, 0x81, 0x82)  # identification, comment, setup


def _theora_header(start: bytes) -> bool:
    """Whether a Theora packet (its first 7 bytes) is a header: a type byte with its top bit set,
    then "theora"."""
    return len(start) == 7 and start[0] in THEORA_HEADERS and start[1:] == b"theora"


def _chained_stamps(raw: list[int], keyframe: list[bool], headers: list[int], label: str) -> list[int]:
    """Stamps for a chained Ogg (`cat a.ogv b.ogv`: Ogg streams one after another, each with its
    own headers and its clock from zero), placing each part's frames one frame after the part
    before, in file order, as VLC plays it and the ffmpeg CLI shows it decoding on one thread
    (`-threads 1`: FFmpeg's Theora decoder reconfigures itself at the headers; on several threads
    it cannot, and the CLI shows the first part only, with errors). FFmpeg's demuxer gives the
    later parts' headers as packets (the first part's are the stream's extradata): they give no
    frame and are stamped before every frame (hidden). A part begins at its headers and must go
    on with a key frame, else the file is refused."""
    header_set = set(headers)
    starts = [i for i in headers if i > 0 and i - 1 not in header_set]
    bounds = [0, *starts, len(raw)]
    placed = list(raw)
    latest: int | None = None
    step = 1
    for a, b in zip(bounds, bounds[1:]):
        part = [i for i in range(a, b) if i not in header_set]
        if not part:
            continue
        if latest is not None:
            if not keyframe[part[0]]:
                raise UnsupportedVideo("unsupported_container",
                                       f"{label}: a chained stream part begins at packet {part[0]}, which is not "
                                       "a key frame: its frames cannot be placed")
            shift = latest + step - min(raw[i] for i in part)
            for i in part:
                placed[i] = raw[i] + shift
        latest, step = max(placed[i] for i in part), _frame_step([placed[i] for i in part])
    low = min((placed[i] for i in range(len(raw)) if i not in header_set), default=0)
    for rank, i in enumerate(headers):
        placed[i] = low - len(headers) + rank
    return placed


def _unwrapped_parts(raw: list[int], dts: list[int | None], fall: Fraction, wrap: int,
                     jump: Fraction | None = None) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """The stamps with each wrap of a `wrap`-tick clock undone (0: a clock that never wraps), the
    positions where a new part begins (a fall, see `_joined_stamps`), and (position, ticks) where
    the decode stamp jumps forward by more than `jump` ticks (None: never) past where the CLI
    expects it, one frame after the previous decode stamp (its `next_dts`; the frame being the
    most common step of the part's stamps before): by `ticks` past it."""
    stamps: list[int] = []
    starts: list[int] = []
    jumps: list[tuple[int, int]] = []
    offset = 0  # added to the raw stamps from here: multiples of `wrap`
    previous: int | None = None  # the decode stamp of the last packet whose stamps are in order
    part = 0  # where the current part begins

    def near(stamp: int, to: int | None) -> int:  # `stamp` moved by whole wraps to lie nearest `to`
        return stamp if not wrap or to is None else stamp + round(Fraction(to - stamp, wrap)) * wrap

    for i, (d, p) in enumerate(zip(dts, raw)):
        if d is None:
            stamps.append(near(p + offset, previous))
            continue
        d = near(d + offset, previous)
        offset = d - dts[i]  # type: ignore[operator]
        p = near(p + offset, d)  # a presentation stamp wrapped before its decode stamp
        if d > p:  # a decode stamp after its own presentation: astray, compared with nothing
            stamps.append(p)
            continue
        if previous is not None and d + fall < previous and p + fall < previous:
            starts.append(i)
            part = i
        elif previous is not None and jump is not None and d - previous > jump:  # rare: only then the step
            past = d - previous - _frame_step(stamps[max(part, i - STEP_WINDOW):i])
            if past > jump:
                jumps.append((i, past))
        previous = d
        stamps.append(p)
    return stamps, starts, jumps


STEP_WINDOW = 256  # packets before a jump whose stamps give the frame step there


def _closed_gaps(stamps: list[int], gaps: list[tuple[int, int]], starts: list[int]) -> list[int]:
    """The stamps with each forward jump of `gaps` (position, ticks past the expected decode stamp)
    closed as the CLI closes it: every packet from there to the part's end (the next of `starts`)
    moved back by those ticks, so the jump's decode stamp comes one frame after the one before.
    Presentation stamps move alike, so a B-frame decoded after the jump, shown before the frames
    decoded before it, keeps its place among them. A packet before the jump whose presentation
    stamp already lies past it (an MPEG-PS VOB, its PES packets not aligned with frames: a P-frame
    stamped on the new clock, the B-frames after it still on the old one) is moved back too, as
    the decoder shows it after them: left, it would lie the jump above every frame after it."""
    closed = list(stamps)
    bounds = sorted(starts)
    begin = 0  # where the packets not yet closed begin: the part's start or the last jump
    for g, ticks in gaps:
        end = next((b for b in bounds if b > g), len(closed))
        closed[g:end] = [p - ticks for p in closed[g:end]]
        begin = max(begin, max((b for b in bounds if b <= g), default=0))
        past = closed[g] + ticks // 2  # halfway between the two clocks: ticks is over `JOIN_JUMP`
        closed[begin:g] = [p - ticks if p > past else p for p in closed[begin:g]]
        begin = g
    return closed


def _stamp_negative_blocks(raw: list[int | None], keyframe: list[bool], label: str,
                           decoder_order: Callable[[int], list[int]] | None) -> tuple[list[int], set[int]]:
    """Stamps for Matroska blocks the demuxer gives none because they lie before zero (the CLI
    shows them first, in the order its decoder outputs them), and the positions of those the
    decoder gives no frame for (an HEVC cut's leading RASL frames, which the CLI does not show
    either: hidden, stamped before all others). Accepted only where that is all it can be:
    Matroska, every stamp the demuxer gives at least zero, the file starting at a key frame, and
    the decoder outputting every unstamped frame it shows before any stamped one. They are stamped
    one frame apart before the first stamped frame, in the decoder's output order. Anything else
    is refused: its frames cannot be named."""
    missing = [i for i, p in enumerate(raw) if p is None]
    stamped = [p for p in raw if p is not None]
    refusal = UnsupportedVideo("unsupported_container",
                               f"{label}: {len(missing)} of {len(raw)} packets carry no time stamp, so decoded "
                               "frames cannot be matched to their place")
    if label.split("/")[0] != MATROSKA or not keyframe[0] or min(stamped, default=0) < 0 or decoder_order is None:
        raise refusal
    order = decoder_order(missing[-1])
    shown = [i for i in order if raw[i] is None]
    if order[:len(shown)] != shown or len(set(shown)) != len(shown):
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: {len(missing)} packets carry no time stamp and the decoder shows some of "
                               "them after stamped ones, so they cannot be placed")
    dropped = sorted(set(missing) - set(shown))
    step, first = _frame_step(stamped), min(stamped, default=0)
    stamps: list[int] = [p for p in raw]  # type: ignore[misc]
    for rank, i in enumerate(dropped + shown):
        stamps[i] = first - (len(dropped) + len(shown) - rank) * step
    return stamps, set(dropped)


def _stamp_split_access_units(raw: list[int | None], label: str,
                              decoder_order: Callable[[int], list[int]] | None) -> list[int]:
    """Stamps for MPEG-TS/PS packets that FFmpeg's parser cut out of the PES packets without one.

    An H.264 SEI after a slice (`h264_metadata=sei_user_data=` at x264's IDRs with `aud=0`) ends
    the access unit for the parser, which glues the SEI to the next PES's picture: that packet
    starts in a PES whose stamp was spent, so it gets none (and the next PES's stamp is lost).
    The CLI decodes it and shows its frame where the decoder outputs it. So the decoder names the
    place: the whole stream is decoded once (no conversion), each packet stamped with its position
    (`decoder_order`), and each unstamped frame is stamped evenly between the stamped frames
    output before and after it (one frame between two stamps a frame apart: the lost stamp
    itself). Accepted only where that is all it can be: every unstamped packet gives exactly one
    frame, and the stamped frames come out in their stamps' order with room between them; anything
    else is refused: its frames cannot be named. A packet the decoder gives no frame (an open-GOP
    cut's leading B-frame whose references were cut away, which the CLI does not show either) is
    hidden as every leading frame is: stamped, it keeps its stamp, before its key frame's; else it
    is stamped before every frame shown, where it comes between the decoder's first output and the
    others (`_leading`); an unstamped one anywhere else is refused."""
    missing = [i for i, p in enumerate(raw) if p is None]
    stamped = [p for p in raw if p is not None]
    if decoder_order is None or not stamped:
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: {len(missing)} of {len(raw)} packets carry no time stamp, so decoded "
                               "frames cannot be matched to their place")
    order = decoder_order(len(raw) - 1)
    shown = Counter(i for i in order if raw[i] is None)
    lost = sorted(set(missing) - set(shown))
    if max(shown.values(), default=0) > 1 or lost and not _leading(lost, order):
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: {len(missing)} packets carry no time stamp and the decoder gives "
                               f"{len(lost)} of them no frame, so the others cannot be told where they lie")
    outputs = [raw[i] for i in order]
    known = [p for p in outputs if p is not None]
    if not known or any(b <= a for a, b in zip(known, known[1:])):
        raise UnsupportedVideo("unsupported_container",
                               f"{label}: {len(missing)} packets carry no time stamp and the decoder outputs "
                               "stamped frames out of their stamps' order, so they cannot be placed")
    step = _output_step(outputs) or _frame_step(stamped)
    stamps: list[int] = [p for p in raw]  # type: ignore[misc]
    run: list[int] = []  # unstamped positions output since the last stamped frame
    before: int | None = None
    for i, p in [*zip(order, outputs), (None, None)]:
        if i is not None and p is None:
            run.append(i)
            continue
        if run:
            if before is None:  # before the first stamped frame: a frame apart, ending one before it
                new = [p - (len(run) - k) * step for k in range(len(run))]  # type: ignore[operator]
            elif p is None:  # after the last one: a frame apart
                new = [before + (k + 1) * step for k in range(len(run))]
            elif p - before > len(run):
                new = [before + (k + 1) * (p - before) // (len(run) + 1) for k in range(len(run))]
            else:
                raise UnsupportedVideo("unsupported_container",
                                       f"{label}: {len(run)} frames without a time stamp come out between "
                                       f"stamps {before} and {p}: no room to place them")
            for at, stamp in zip(run, new):
                stamps[at] = stamp
            run = []
        before = p
    first = min(stamp for stamp in stamps if stamp is not None)  # a dropped stamped packet's own too
    for rank, i in enumerate(lost):  # stamped before every other packet: hidden as leading frames are
        stamps[i] = first - (len(lost) - rank) * step
    return stamps


def _leading(lost: list[int], order: list[int]) -> bool:
    """Whether the packets the decoder gives no frame (`lost`, positions in decode order) are an
    open-GOP cut's leading frames, whose references were cut away: all of them come after the
    first frame the decoder outputs (its key frame) and before every other frame it outputs."""
    return bool(order) and order[0] < lost[0] and lost[-1] < min(order[1:], default=len(order) + lost[-1] + 1)


def _output_step(outputs: list[int | None]) -> int:
    """A frame's duration from the decoder's output order: the smallest gap between two stamped
    frames divided among the frames output between them and the later one (0 when no two stamped
    frames come out). Where few packets carry a stamp (x264 into VOB: one in 9 or more), the gaps
    between stamped frames alone span many frames."""
    steps = []
    before, between = None, 0
    for p in outputs:
        if p is None:
            between += 1
            continue
        if before is not None and p > before:
            steps.append((p - before) // (between + 1))
        before, between = p, 0
    return max(1, min(steps)) if steps else 0


def _split_part_starts(known: list[int | None], dts: list[int | None], keyframe: list[bool],
                       time_base: Fraction) -> list[int]:
    """Where the later parts of MPEG-TS/PS files joined end to end begin, in a stream with unstamped
    packets (`_stamp_split_access_units`): the stamped packets' clock falls there (`_joined_stamps`'s
    test); the part begins at the first key frame after the last stamped packet of the part before
    (an unstamped IDR starts it where its SEI left it unstamped), else at the packet that falls."""
    stamped = [i for i, (p, d) in enumerate(zip(known, dts)) if p is not None and d is not None]
    _, falls, _ = _unwrapped_parts([known[i] for i in stamped], [dts[i] for i in stamped],  # type: ignore[misc]
                                   JOIN_FALL / time_base, MPEG_WRAP if time_base == MPEG_CLOCK else 0)
    starts = []
    for f in falls:
        after, at = stamped[f - 1] + 1, stamped[f]
        starts.append(next((i for i in range(after, at + 1) if keyframe[i]), at))
    return starts


def _joined_split_parts(known: list[int | None], starts: list[int], keyframe: list[bool], label: str,
                        decoder_order: Callable[..., list[int]] | None,
                        shown: dict[int, int]) -> tuple[list[int], set[int]]:
    """Stamps of MPEG-TS/PS parts joined end to end whose parser left packets unstamped: each part's
    unstamped packets placed by the decoder's output order of that part alone (the decoder drained
    and flushed where a part begins, as the decoding session does, `VideoIndex.joins`), then each
    part moved after the one before (`_parts_placed`); and the positions to hide."""
    if decoder_order is None:
        raise UnsupportedVideo("unsupported_container", f"{label}: packets carry no time stamp, so decoded "
                                                        "frames cannot be matched to their place")
    order = decoder_order(len(known) - 1, tuple(starts))
    bounds = [0, *starts, len(known)]
    stamps: list[int] = []
    for a, b in zip(bounds, bounds[1:]):
        part = known[a:b]
        local = [i - a for i in order if a <= i < b]
        stamps += _stamp_split_access_units(part, label, lambda last: local) if None in part else part  # type: ignore[misc]
    return _parts_placed(stamps, starts, keyframe, label, shown)


def _unwrapped_stamps(known: list[int | None]) -> list[int | None]:
    """MPEG stamps with each wrap of the 33-bit clock undone: every stamp moved by whole wraps to lie
    nearest the stamp before it (a part recorded across the wrap, 26.5 hours into a broadcast's
    clock, rises on; a later part that starts again still falls). FFmpeg undoes a wrap only
    relative to the file's first stamp, so a later part of a joined file keeps it; the stamps of
    files whose parser leaves packets unstamped are placed by their order (`_stamp_split_access_units`)."""
    unwrapped: list[int | None] = []
    previous: int | None = None
    for p in known:
        if p is not None and previous is not None:
            p += round(Fraction(previous - p, MPEG_WRAP)) * MPEG_WRAP
        unwrapped.append(p)
        previous = p if p is not None else previous
    return unwrapped


def _unstamp_repeated_pes(raw: list[int | None], pes: list[int | None]) -> list[int | None]:
    """The stamps with those the parser gave twice left out: two packets stamped alike from one PES
    packet (the same stamp and position). A PES's stamp names the one access unit that starts in
    it; FFmpeg's parser, cutting an MPEG-PS H.264 stream whose access units straddle 2 KB VOB packs,
    gives it to the next packet too, so one of them carries another frame's stamp (x264 with
    `aud=1`, `--tff` or `-preset veryslow` into `-f vob`: the decoder then gave stamped frames out
    of their stamps' order and the file was refused, where the CLI shows every frame). Both are
    placed by the decoder's output order instead (`_stamp_split_access_units`), as unstamped
    packets are."""
    seen = Counter((p, at) for p, at in zip(raw, pes) if p is not None and at is not None)
    return [None if p is not None and at is not None and seen[p, at] > 1 else p for p, at in zip(raw, pes)]


def _partial_shown_before(pts: list[int], corrupt: list[bool]) -> int:
    """How many packets at the end of the file to hide: the ones the demuxer read short (a file
    cut mid-packet, an interrupted download; FFmpeg flags them corrupt, MP4 says "partial file")
    where every one of them is shown before a whole packet's frame (a P-frame cut after the
    B-frames shown before it came whole). Whether one is a frame is the decoder's to say
    (`build_index`'s `decoder_shows`): H.264 and HEVC in MP4 refuse a NAL unit that runs past its
    packet and output nothing (the ffmpeg CLI shows no frame for it; counted, it was a hole and
    every frame shown after it was named one too far), while FFmpeg's MPEG-4 Part 2 decoder
    conceals the missing part and outputs a frame the CLI shows (hidden by its place alone, that
    frame went missing and the next was misnamed). A partial frame shown last stays counted: the
    probe checks it decodes, as a JPEG missing its last bytes does (the CLI shows it), and counts
    back where it does not. Corrupt packets with whole ones after them (MPEG-TS continuity errors)
    stay frames."""
    whole = len(corrupt)
    while whole and corrupt[whole - 1]:
        whole -= 1
    if whole in (0, len(pts)):
        return 0
    last_whole = max(pts[:whole])
    return len(pts) - whole if all(p < last_whole for p in pts[whole:]) else 0


def _stamps_in_decode_order(pts: list[int], codec_context, container: str) -> bool:
    """Stamps that only count packets in decode order, from a decoder that may output frames in
    another order: then a frame's stamp is not its place. AVI's stamps are always such counts (or
    the MPEG-4 parser's guesses), so there any codec that can reorder (`Codec.reorder`: H.264,
    MPEG-4 Part 2, MPEG-2, ...) counts, whatever delay the stream declares when opened. Elsewhere,
    stamps rising in decode order from a decoder that declares a reorder delay (`has_b_frames`):
    an MP4 remuxed from AVI without presentation stamps. Stamps that rise in decode order from a
    decoder that never reorders are presentation stamps too."""
    if len(pts) < 2:
        return False
    if container == "avi":
        return bool(codec_context.codec.reorder)
    return all(a < b for a, b in zip(pts, pts[1:])) and bool(codec_context.has_b_frames)


@dataclass(frozen=True)
class Stretch:
    """Packets [first, last] (decode order) sent to the decoder in one go; frames from them are
    trusted when their time stamp is at least `trusted_from` (earlier ones may be leading frames
    that reference what was skipped before `first`)."""

    first: int
    last: int
    trusted_from: int | None  # None: decoding starts at the stream's beginning, all frames trusted


def key_of(index: VideoIndex) -> list[int]:
    """For each presented frame, the packet position of the key frame its decode starts from:
    the last key frame at or before it in decode order whose time stamp is not after it (leading
    frames of an open GOP, RASL and the like, belong to the key frame before), and, where that key
    frame is a recovery point decoding whole only later (`VideoIndex.recovery`), whose picture
    completing it comes at or before the frame in decode order and in time (the frames of its
    refresh belong to the key frame before). Those positions never fall from one key frame to the
    next, so the key frames whole by a packet are the first ones: a recovery point that never
    completes (a stream ending mid-refresh) is not walked past frame after frame."""
    position = {p: i for i, p in enumerate(index.pts)}
    keys = [i for i, k in enumerate(index.keyframe) if k]
    whole = dict(index.recovery)
    ready = [whole.get(key, key) for key in keys]

    def starts_it(k: int, pts: int) -> bool:
        return index.pts[keys[k]] <= pts and index.pts[ready[k]] <= pts

    starts = []
    for pts in index.presented:
        at = position[pts]
        k = min(bisect.bisect_right(keys, at), bisect.bisect_right(ready, at)) - 1
        while k > 0 and not starts_it(k, pts):
            k -= 1
        starts.append(keys[k] if k >= 0 and starts_it(k, pts) else 0)
    return starts


def trusted_from(index: VideoIndex, start: int, whole: dict[int, int] | None = None) -> int:
    """The earliest time stamp a decode started at key frame `start` gives whole: the key frame's
    own (earlier ones are leading frames referencing what came before), or, for a recovery point,
    that of the picture completing it (`whole`: `dict(index.recovery)`, made once by a caller
    asking for many)."""
    done = (dict(index.recovery) if whole is None else whole).get(start, start)
    return index.pts[done] if done < len(index.pts) else max(index.pts) + 1


def decode_plan(index: VideoIndex, wanted: list[int], starts: list[int] | None = None) -> list[Stretch]:
    """The packet stretches that yield the presented frames `wanted` (indices), fewest packets first.

    A frame needs the decode from its key frame (`key_of`) up to its own packet; overlapping or
    adjacent needs merge into one stretch. Packets between stretches are not decoded at all.
    With `decode_order_stamps`, frames are named by the order they come out, so everything is
    decoded from the first key frame (until the wanted frames are out).
    """
    if index.decode_order_stamps:
        return [Stretch(index.keyframe.index(True), len(index.pts) - 1, None)] if wanted else []
    shown = index.presented
    position = {p: i for i, p in enumerate(index.pts)}
    starts = key_of(index) if starts is None else starts
    needs = sorted((starts[w], position[shown[w]]) for w in set(wanted))
    stretches: list[list[int]] = []  # [first, last, trusted from]
    whole = dict(index.recovery)
    for start, end in needs:
        floor = trusted_from(index, start, whole)
        if stretches and start <= stretches[-1][1] + 1:
            # decoded on from the stretch's first key frame: a later recovery point may complete
            # a refresh first (the decoder takes the earlier), so the lower floor of the two holds
            stretches[-1][1] = max(stretches[-1][1], end)
            stretches[-1][2] = min(stretches[-1][2], floor)
        else:
            stretches.append([start, end, floor])
    return [Stretch(a, b, None if a == 0 else floor) for a, b, floor in stretches]
