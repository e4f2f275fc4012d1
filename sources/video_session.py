"""One decoding pass over one file (`DecodeSession`): the packet stretches a plan wants sent to
the decoder, gaps seeked over and checked against the index, each decoded frame named by its
stamp (or its place in the decoder's output order) and delivered at the size judged for it.
Part of `sources.video_decode`."""

from __future__ import annotations

import bisect
import gc
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np

from sources.gif_screen import on_white
from sources.video_display import cropped_off_alignment, display, guessed_matrix, orientation
from sources.video_first_state import needs_prime
from sources.video_index import JUMPED, Stretch, VideoIndex, key_of
from sources.video_memory import (DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_MB, Judgement, decoder_max_pixels,
                                  fitting_pixels, frames_too_large, judge_stream, sample_aspect_ratio, sar_width,
                                  stream_hdr)
from sources.video_alpha import frame_decoder
from sources.video_open import VideoError, open_stream

log = logging.getLogger(__name__)


# frames before the first a damaged packet's stamps name that are held back too where frames are
# named by output order and the decoder reorders (`DecodeSession._damage_from`): B-frames decoded
# after the damage, shown before it, whose stamps (decode-order counters in AVI) may not say so
REORDER_SLACK = 2
COLLECT_PIXELS = 1 << 20  # a first frame this large is freed at once (its side data ties it in a cycle)


def skips_per_packet(codec) -> bool:
    """Whether `skip_frame` may be switched per packet: FFmpeg's own decoders (`h264`, `hevc`,
    `mpeg2video`, `vp9`: the video zoo checks each) apply it to the packet being sent. A library's
    (`libdav1d` for AV1) queues packets and applies it later: a wanted frame came out skipped
    (frames 1 and 3 of an SVT-AV1 clip were never delivered)."""
    return codec.name == codec.codec.canonical_name


@dataclass
class DecodeSession:
    """One decoding pass over one file."""

    uri: str
    index: VideoIndex
    wanted: dict[int, int]  # pts -> presented index, still to deliver
    postprocess: Callable[[np.ndarray], np.ndarray] | None
    skip_nonref: bool
    seek_bytes: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_mb: int = DEFAULT_MEMORY_MB
    convert: bool = True  # False: deliver each frame's display (height, width), no pixels (the probe)
    _container: object = None
    # the stream's first frame's (`_prime`), else the decoder's first output's: a player shows every
    # frame so, an H.264 display-orientation SEI sent with the first key frame alone applying on
    orientation: tuple[int, bool] | None = None
    _delivered_one: bool = False
    judgement: Judgement | None = None
    _collect: bool = False
    _working: tuple[int, int] | None = None  # (w, h) frames are converted at, coded orientation
    sar: Fraction | None = None  # the stream's pixel aspect ratio, applied in the conversion
    hdr: str | None = None  # the stream's HDR transfer ("pq", "hlg"): frames are tone-mapped
    interlaced: bool = False  # a delivered frame was coded as two fields
    cropped_left: bool = False  # the first delivered frame is cropped off alignment (`cropped_off_alignment`)
    matrix_guessed: str = ""  # "bt709": a delivered frame declares no matrix and is HD (`guessed_matrix`)
    _last_pts: int | None = None  # the stamp of the decoder's last output in this run (they must rise)
    _outputs: int = 0  # frames the decoder gave since the stream's start (`decode_order_stamps`)
    _shown: tuple[int, ...] = ()
    _stream: object = None
    _codec: object = None  # the stream's decoder (`video_open.frame_decoder`)
    _working_for: tuple[int, int] | None = None  # the frame size `_working` was chosen for
    too_large: VideoError | None = None  # the stream grew past max_pixels: those frames never decoded
    _limit: int = 0  # the largest frame decoded: max_pixels, or less where the memory budget says so
    # True (clips' decoding): the frames decoded from a packet that does not decode, or from a
    # reference it left broken, are never delivered (`_damage_from`); False (the probe): every frame
    # the decoder gives counts, so a damaged middle never shortens the count as a cut end does
    drop_damaged: bool = False
    damaged: set[int] = field(default_factory=set)  # stamps of the frames `drop_damaged` holds back
    _starts: list[int] | None = None  # `key_of(index)`, made at the first damaged packet
    _presented_at: dict[int, int] = field(default_factory=dict)  # stamp -> presented index, with `_starts`
    # with `decode_order_stamps`, the decoder's outputs counted against the packets sent it
    # (`outputs_named`): packets sent, the most outputs it held back after one, how many outputs
    # were named right before it first held back more once it had begun to output, and before a
    # packet it refused or a frame it flagged corrupt
    _fed: int = 0
    _most_behind: int = 0
    _fell_behind: int | None = None
    _damaged_at: int | None = None
    _outputs_before_last: int = 0  # outputs given before the packet sent last
    _cut_fed: bool = False  # a packet the demuxer read short (a cut file's end) was sent
    _fell_at: int = 0  # packets sent up to and with the one where the outputs fell behind
    _empty_tail: int = 0  # the last packets sent that gave no output, counted back from the last
    _position_of: dict[int, int] | None = None  # stamp -> packet position, for a concealed frame
    # called with the container and stream at the session's first open, before any packet (the probe
    # reads what the stream declares there rather than opening the file again for it)
    on_open: Callable[[object, object], None] | None = None

    def run(self, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        self._shown = self.index.presented
        named = self.index.outputs_named
        if self.drop_damaged and self.index.decode_order_stamps and named is not None:
            self.damaged.update(self._shown[named:])  # their names are not theirs: never delivered
        self._container, stream = self._open()
        try:
            self.sar = sample_aspect_ratio(stream)
            self.hdr = stream_hdr(stream)
            yield from self._run(stream, plan)
        finally:
            self._container.close()

    def _open(self):
        """The file opened, judged from its declaration the first time (`judge_stream`, raising
        when it cannot fit), its decoder told the largest frame that `max_pixels` and the memory
        budget admit (`fitting_pixels`): a frame over it is never allocated."""
        container, stream = open_stream(self.uri, self.index.video_pages)
        if self.judgement is None:
            try:
                self.judgement = judge_stream(stream, self.max_pixels, self.memory_mb, self.postprocess,
                                              self.convert, alpha=self.index.alpha)
            except VideoError:
                container.close()
                raise
            self._limit = fitting_pixels(stream, self.max_pixels, self.memory_mb, self.postprocess, self.convert,
                                         self.index.alpha)
        if self.on_open is not None:
            inspect, self.on_open = self.on_open, None
            inspect(container, stream)
        self._codec = frame_decoder(stream, self.index.alpha)
        self._codec.options = {"max_pixels": str(decoder_max_pixels(self._limit))}
        self._stream = stream
        return container, stream

    def _refusal(self, width: int, height: int) -> VideoError:
        """Why frames of a size past `_limit` are not decoded: over `max_pixels`, or the memory
        budget's judgement of that size."""
        if width * height > self.max_pixels:
            return frames_too_large(width, height, self.max_pixels)
        try:
            judge_stream(self._stream, self.max_pixels, self.memory_mb, self.postprocess, self.convert,
                         (width, height), self.index.alpha)
        except VideoError as exc:
            return exc
        return frames_too_large(width, height, self._limit, self.memory_mb)  # another shape than declared

    def _note_too_large(self, codec) -> None:
        """After a decode error: a new size past `_limit` that the decoder refused to allocate
        (its context holds the size). Frames named by output order cannot be named past it: the
        decode ends there."""
        if self.too_large is None and codec.width * codec.height > self._limit:
            self.too_large = self._refusal(codec.width, codec.height)
        if self.too_large is not None and self.index.decode_order_stamps:
            raise self.too_large

    def _name(self, frame) -> int | None:
        """The stamp that names a decoded frame in the index: its own, checked to rise within the
        run, or with `decode_order_stamps` that of its place in the decoder's output order."""
        if self.index.decode_order_stamps:
            k, self._outputs = self._outputs, self._outputs + 1
            if k >= len(self._shown):
                raise VideoError("unsupported_container", f"{self.index.container}/{self.index.codec}: the decoder "
                                 f"gives more frames than the {len(self._shown)} the stream holds")
            return self._shown[k]
        pts = frame.pts
        if pts is None:
            return None
        if self._last_pts is not None and pts <= self._last_pts:
            raise VideoError("unsupported_container", f"{self.index.container}/{self.index.codec}: the decoder gives "
                             f"the frame stamped {pts} after the one stamped {self._last_pts}: the stamps are not "
                             "presentation times, so decoded frames cannot be matched to their place")
        self._last_pts = pts
        return pts

    def _restart(self) -> None:
        """The decoder was flushed or reopened: a new run of rising stamps begins."""
        self._last_pts = None

    def _deliver(self, frames, trust: dict[int, int | None]) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            pts = self._name(frame)
            if self.orientation is None:  # once: reading side data keeps the frame until a collection
                # the decoder's first output, wanted or not: an SEI sent with the first key frame turns
                # the frames after it (frame 1 alone came out unturned when read off frame 1)
                self.orientation = orientation(frame)
                self._collect = self._collect or frame.width * frame.height >= COLLECT_PIXELS
            floor = trust.get(pts)
            if floor is not None and pts < floor:
                continue  # a leading frame whose references were skipped: not trusted
            if frame.is_corrupt and not self._cut_fed and pts is not None:
                self._conceal(pts)  # wanted or not: the frames decoded from it may be
            w = self.wanted.get(pts)
            if w is None:
                continue
            if pts in self.damaged:
                continue  # a damaged packet's frame, or one predicted from it: its clips are rejects
            if frame.width * frame.height > self._limit:  # within the decoder's alignment room
                self.too_large = self.too_large or self._refusal(frame.width, frame.height)
                continue
            del self.wanted[pts]
            self.interlaced = self.interlaced or frame.interlaced_frame
            if self.hdr is None:  # tone-mapped frames take `hdr.luma_coefficients`, never the guess
                self.matrix_guessed = self.matrix_guessed or guessed_matrix(frame) or ""
            judged = self.judgement
            if judged is not None and frame.width * frame.height > judged.width * judged.height:
                # larger than declared (a new SPS mid-stream): judged again; over the memory budget the
                # decode ends here (the frames before delivered), `video_too_large`
                try:
                    judged = self.judgement = judge_stream(self._stream, self.max_pixels, self.memory_mb,
                                                           self.postprocess, self.convert, (frame.width, frame.height),
                                                           self.index.alpha)
                except VideoError as exc:
                    self.too_large = exc
                    raise
            if not self._delivered_one:
                self._delivered_one = True
                self.cropped_left = cropped_off_alignment(frame)
                # worth a full collection (10 ms in a decoding process) only for a large frame
                self._collect = self._collect or frame.width * frame.height >= COLLECT_PIXELS
            turns, _ = self.orientation
            shown = sar_width(frame.width, self.sar)  # coded orientation, square pixels
            if not self.convert:
                shape = (frame.height, shown) if turns % 2 == 0 else (shown, frame.height)
                yield w, shape
                continue
            size = None if shown == frame.width else (shown, frame.height)
            if judged is not None and judged.reduce:
                if self._working_for != (frame.width, frame.height):  # once per frame size
                    h, wd = (frame.height, shown) if turns % 2 == 0 else (shown, frame.height)
                    ww, wh = self.postprocess.working_size(h, wd)  # type: ignore[union-attr]
                    self._working = (ww, wh) if turns % 2 == 0 else (wh, ww)
                    self._working_for = (frame.width, frame.height)
                size = self._working
            if self.index.codec == "gif":  # transparent pixels white, as browsers show a GIF on a page
                frame = on_white(frame)
            pixels = display(frame, self.orientation, size, self.hdr)
            yield w, self.postprocess(pixels) if self.postprocess else pixels

    def _conceal(self, pts: int) -> None:
        """A frame the decoder flags corrupt (`AV_FRAME_FLAG_CORRUPT`: it concealed a packet it
        could not decode whole, and gave it without an error) from a packet the demuxer read whole:
        held back as a packet that does not decode is, with the frames decoded from it
        (`_damage_from`). An H.264 AVI whose packet 20 lost its last two thirds kept frame 19 showing
        18; MPEG-4 kept frames 13-16 showing 12. A cut file's last packet, read short, is exempt:
        the ffmpeg CLI shows the frame its decoder makes of it, and the probe counted it. Where
        frames are named by output order, the count stops before the packet before the one it came
        out at (`outputs_named`: the output that packet gave, MPEG-4 frame 11 before a corrupt 12,
        showed frame 12), and every frame from there is held back."""
        if self.index.decode_order_stamps:
            self._damage_at(self._outputs_before_last)
            if self.drop_damaged:
                self.damaged.update(self._shown[min(self._damaged_at or 0, self._shown.index(pts)):])
            return
        if not self.drop_damaged or pts in self.damaged:
            return
        if self._position_of is None:
            self._position_of = {p: i for i, p in enumerate(self.index.pts)}
        position = self._position_of.get(pts)
        if position is not None:
            self._damage_from(position)

    def outputs_named(self) -> int:
        """After a whole decode with `decode_order_stamps`: how many outputs are named right
        (`VideoIndex.outputs_named`). The decoder holds back as many outputs after each packet as
        its reorder delay (1 for MPEG-4 with B-frames, 2 for x264's and x265's), and gives them at
        the end: outputs fewer than the packets sent mean a frame it dropped without an error (x265
        with B-frames, a packet's bytes 4-9 overwritten: 38 frames of 48, and kept clips 14-35
        showing frames 24-45). From the packet where it first held back more than before, once it
        had begun to output, each output may be another frame's (the packet before it may be the
        damaged one, unless that packet raised), so the count stops at the outputs before it: the
        frames from there on are held back and their clips are `decode_failed` rejects, as if a
        damaged packet was refused there. Where no such packet is seen (the damage before the first
        output) none is named. All are where the outputs match the packets, or the decode ended at
        a frame past `max_pixels` (`too_large`). A packet the decoder refused, or a frame it flagged
        corrupt (`_conceal`), stops the count too, whatever the outputs."""
        if self.too_large is not None:
            return len(self._shown)
        if self._fed <= self._outputs or self._shortfall_shifts_nothing():
            named = len(self._shown)
        else:
            named = self._fell_behind or 0
        return named if self._damaged_at is None else min(named, self._damaged_at)

    def frames_given(self) -> int:
        """After a whole decode with `decode_order_stamps`: the frames the stream counts. Every
        packet's, save where the outputs fell short only before the first output or only at the
        end (`_shortfall_shifts_nothing`): then output i is still the ffmpeg CLI's frame i, and the
        frames are the outputs, as the CLI shows them."""
        if self.too_large is None and self._fed > self._outputs and self._shortfall_shifts_nothing():
            return min(self._outputs, len(self._shown))
        return len(self._shown)

    def _shortfall_shifts_nothing(self) -> bool:
        """Whether the packets the decoder gave nothing for (more sent than it output) shift no
        later name: a picture dropped before its first output (an x264 open-GOP stream cut mid-GOP,
        as DVR exports and streams grabbed mid-way start: 49 packets, 48 outputs, the CLI's 48),
        never seen falling behind once output had begun; or the last packets, each giving nothing
        (a raw stream cut short, its last access unit partial: HEVC with 33 packets, 32 outputs,
        the CLI's 32). A refused packet or a frame flagged corrupt is damage all the same."""
        if self._damaged_at is not None:
            return False
        return self._fell_behind is None or self._fed - self._fell_at < self._empty_tail

    def _damage_at(self, outputs: int) -> None:
        """Damage the outputs from `outputs` on may show (`outputs_named`)."""
        self._damaged_at = outputs if self._damaged_at is None else min(self._damaged_at, outputs)

    def _count_fed(self, before: int, refused: bool) -> None:
        """Count one packet sent to the decoder (`outputs_named`): `before`, the outputs before it;
        `refused`, whether the decoder raised on it."""
        self._fed += 1
        if refused:  # the outputs before it are of packets before it: whole
            self._damage_at(before)
        behind = self._fed - self._outputs
        if behind > self._most_behind:
            if before > 0 and self._fell_behind is None:
                self._fell_behind = before if refused else self._outputs_before_last
                self._fell_at = self._fed
            self._most_behind = behind
        self._outputs_before_last = before
        self._empty_tail = 0 if self._outputs > before else self._empty_tail + 1

    def _after(self) -> None:
        if self._collect:  # the first frame's side data cycle: free that frame now
            self._collect = False
            gc.collect()

    def _prime(self, packets, position_of: dict[int | None, int], codec) -> bool:
        """Decode the stream's first packet, its frame delivered to no one, where the plan starts
        later: state FFmpeg hands over there alone is the decoder's, as in a player's decode from the
        start (a pal8 AVI's palette, side data of its first packet; an H.264 display-orientation SEI
        sent with the first key frame: `orientation` read from its frame). A session starting at
        frame 30 gave a pal8 AVI's frame 30 a palette of zeros (63 off in mean), an SEI-turned H.264
        clip's unturned. Decoded only where it holds such state (`needs_prime`): ~140 ms a session of
        a 1080p HEVC file otherwise. False where the first packet read is not the index's first."""
        for packet in packets:
            if packet.size == 0 or packet.pts is None:
                continue
            if position_of.get(packet.pts) != 0 or self.index.size[0] != packet.size:
                return False
            if not needs_prime(self.index.codec, codec.pix_fmt, codec.extradata, bytes(packet)):
                return True  # nothing only it hands over: read past, not decoded
            codec.skip_frame = "DEFAULT"
            try:
                frames = list(codec.decode(packet)) + list(codec.decode(None))
            except Exception as exc:  # a damaged first packet (a cut head): no state to take from it
                log.debug("first packet not decoded: %s", exc)
                frames = []
            codec.flush_buffers()
            if frames and self.orientation is None:
                self.orientation = orientation(frames[0])
                self._collect = frames[0].width * frames[0].height >= COLLECT_PIXELS
            return True
        return False

    def _run(self, stream, plan: list[Stretch]) -> Iterator[tuple[int, np.ndarray]]:
        index, codec = self.index, self._codec
        # not where the decode order gives the names: a skipped frame would shift them
        switch_skips = self.skip_nonref and not index.decode_order_stamps and skips_per_packet(codec)
        packets = self._container.demux(stream)
        position = -1
        trust: dict[int, int | None] = {}
        seeked = False  # after a seek, packets are matched to the index by time stamp
        position_of = _positions_by_demuxed_stamp(index)
        # the demuxer's stamps repeat or are missing: read on, never seek (but where only forward jumps
        # were closed: matched by the demuxer's stamp, given the index's)
        restamped = bool(index.demuxed) and index.restamped != JUMPED
        joins = set(index.joins)  # a later part of a joined file begins: the decoder starts afresh
        headers = set(index.headers)  # decoder headers sent as packets: fed wherever they lie
        # packets giving no frame by design (N-VOPs): sent, not counted against the outputs
        counted = index.decode_order_stamps
        not_coded = set(index.not_coded)
        fed = False  # packets were sent to the decoder since it last started afresh
        if plan and plan[0].first > 0 and not (restamped or counted or index.joins or index.headers or
                                               index.new_extradata or index.video_pages):
            if self._prime(packets, position_of, codec):
                position = 0  # its frame held by no one: the gap to the first stretch flushes it
            else:
                packets, position, stream, codec = self._reopen()
        for stretch in plan:
            if not self.wanted:
                break
            if 0 <= position and position + 1 < stretch.first:
                # a gap: the decoder starts afresh at the stretch's key frame (carried over the gap, it
                # may give frames out of order), its held frames drained first
                yield from self._deliver(codec.decode(None), trust)
                codec.flush_buffers()
                self._restart()
                fed = False
            if position + 1 < stretch.first and not restamped and \
                    sum(index.size[position + 1:stretch.first]) > self.seek_bytes:
                landed = self._seek(stream, stretch.first)
                if landed is None:
                    packets, position, stream, codec = self._reopen()
                else:
                    packets, position = landed
                    seeked = True
            while position < stretch.last and self.wanted:  # nothing left to deliver: stop reading
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.size == 0 or (packet.pts is None and not restamped):
                    continue
                if restamped:
                    at = _restamp(index, packet, position + 1)
                else:
                    at = position_of.get(packet.pts)
                    if at is not None and index.size[at] != packet.size:
                        at = None  # same time stamp, other bytes: after a seek, MPEG-PS can misplace stamps
                    if at is not None and index.demuxed:
                        at = _restamp(index, packet, at)
                if at != position + 1:
                    if not seeked:
                        raise VideoError("decode_failed",
                                         f"packet {position + 1} differs from the index (pts {packet.pts})")
                    if at is not None and at < stretch.first:
                        position = at  # still before the stretch: follow the demuxer
                        continue
                    if position + 1 < stretch.first and at is None:
                        continue
                    # the demuxer resumed in a way the index cannot follow: read from the start
                    yield from self._deliver(codec.decode(None), trust)
                    packets, position, stream, codec = self._reopen()
                    self._restart()
                    seeked = fed = False
                    continue
                position = at
                if position < stretch.first:
                    if position in headers:  # the decoder is configured for the part that follows
                        self._configure(codec, packet)
                    continue
                if position in joins and fed:  # each part decoded as it is alone (`VideoIndex.joins`)
                    yield from self._deliver(codec.decode(None), trust)
                    codec.flush_buffers()
                    self._restart()
                if not fed and index.new_extradata:
                    _bring_extradata(index, packet, position)
                fed = True
                # a raw stream's demuxer never flags its last packet short: where frames are named
                # by output order the file's last packet is taken as possibly cut (a partial download
                # ends in a partial access unit, whose frame the CLI shows concealed)
                last = counted and position == len(index.pts) - 1
                self._cut_fed = self._cut_fed or packet.is_corrupt or last
                trust[packet.pts] = stretch.trusted_from
                before = self._outputs
                if switch_skips:
                    codec.skip_frame = "DEFAULT" if packet.pts in self.wanted else "NONREF"
                try:
                    frames = codec.decode(packet)
                except Exception as exc:  # a damaged packet: its frame (and dependants) will be missing
                    log.debug("decode error at packet %d: %s", position, exc)
                    self._note_too_large(codec)
                    if last:  # possibly cut short (its slice header): no frame, as in the CLI; none depends on it
                        if position not in not_coded:
                            self._count_fed(before, False)
                        continue
                    if self.drop_damaged and position not in headers:
                        self._damage_from(position)
                    if counted and position not in not_coded:
                        self._count_fed(before, True)
                    continue
                yield from self._deliver(frames, trust)
                if counted and position not in not_coded:
                    self._count_fed(before, False)
                if self._collect:
                    del frames
                    self._after()
        if self.wanted:
            codec.skip_frame = "DEFAULT"
            try:
                yield from self._deliver(codec.decode(None), trust)
            except Exception as exc:
                log.debug("flush error: %s", exc)
                self._note_too_large(codec)

    def _damage_from(self, position: int) -> None:
        """Hold back every frame whose decode passes through packet `position`, which did not
        decode: its own, and each one decoded after it from the same start (`key_of`: the key frame
        a frame's decode starts from) until the next. The decoder gives those from a broken
        reference (a VP8 clip showed frames 32-39 in the places of 40-47), as the ffmpeg CLI shows
        them; kept, they were sentences of wrong pictures beside the reject of the damaged frame's
        own clip. An intra-only stream (MJPEG, ProRes: every packet a key frame) loses that one.
        Frames after the next key frame are still looked at: an open GOP's leading frames, decoded
        after it, reference the frames before it. Where frames are named by the decoder's output
        order (`decode_order_stamps`: AVI with a decoder that reorders, raw H.264), every frame from
        the first that the packets from there on are stamped with (less `REORDER_SLACK` where the
        decoder reorders): a frame the decoder drops shifts the names of all that follow."""
        index = self.index
        if index.decode_order_stamps:  # frames named by output order: a frame lost shifts every later name
            ranks = {p: k for k, p in enumerate(self._shown)}
            first = min((ranks[p] for p in index.pts[position:] if p in ranks), default=len(self._shown))
            if self._codec is not None and self._codec.has_b_frames:
                first -= REORDER_SLACK  # B-frames decoded after it, shown before it, may reference it
            self.damaged.update(self._shown[max(0, first):])
            return
        if self._starts is None:
            self._starts = key_of(index)
            self._presented_at = {p: w for w, p in enumerate(self._shown)}
        keys_passed = 0
        for at in range(position, len(index.pts)):
            if at > position and index.keyframe[at]:
                keys_passed += 1
                if keys_passed == 2:  # leading frames lie before the key frame after next
                    break
            w = self._presented_at.get(index.pts[at])
            if w is not None and self._starts[w] <= position:
                self.damaged.add(index.pts[at])

    @staticmethod
    def _configure(codec, packet) -> None:
        """Send the decoder a header packet (`VideoIndex.headers`) met outside the wanted stretches:
        it gives no frame, and one it does not take (Theora's comment header) changes nothing."""
        codec.skip_frame = "DEFAULT"
        try:
            codec.decode(packet)
        except Exception as exc:
            log.debug("header packet not taken: %s", exc)

    def _reopen(self):
        """Start over from the beginning of the file, without seeking from here on."""
        self._container.close()
        self._container, stream = self._open()
        self.seek_bytes = 1 << 62
        self._outputs = self._fed = self._most_behind = self._outputs_before_last = 0
        self._fell_behind = self._damaged_at = None
        self._fell_at = self._empty_tail = 0
        return self._container.demux(stream), -1, stream, self._codec

    def _seek(self, stream, target: int):
        """Seek so that reading resumes at or before packet `target`, checked against the index
        (MPEG-TS/PS seeks can land after it: then retry from earlier key frames). Returns the packet
        iterator and the position before its first packet, or None when no attempt lands."""
        index = self.index
        position_of = _positions_by_demuxed_stamp(index)
        stamps = index.demuxed or index.pts  # the demuxer's: what the container seeks by
        keys = [i for i, k in enumerate(index.keyframe) if k and i <= target]
        for attempt in range(3):
            key = keys[max(0, len(keys) - 1 - 2 * attempt)]
            try:
                self._container.seek(stamps[key], stream=stream, backward=True, any_frame=False)
            except Exception as exc:
                log.debug("seek failed: %s", exc)
                return None
            packets = self._container.demux(stream)
            for packet in packets:
                if packet.size and packet.pts in position_of and index.size[position_of[packet.pts]] == packet.size:
                    at = position_of[packet.pts]
                    if at <= target:
                        return _prepend(packet, packets), at - 1
                    break
        return None


def _positions_by_demuxed_stamp(index: VideoIndex) -> dict[int | None, int]:
    """Each packet's position by the stamp the demuxer gives it (seeking matches packets so)."""
    return {p: i for i, p in enumerate(index.demuxed or index.pts)}


def _restamp(index: VideoIndex, packet, at: int) -> int | None:
    """`at` when the packet is the index's packet there (the demuxer's stamp and its size), given
    the index's stamp (its decode stamp moved alike); None when it is not."""
    if at >= len(index.pts) or index.demuxed[at] != packet.pts or index.size[at] != packet.size:
        return None
    stamp = index.pts[at]
    if packet.pts is not None and packet.dts is not None:
        packet.dts = packet.dts + stamp - packet.pts
    packet.pts = stamp
    return at


def _prepend(first, rest):
    yield first
    yield from rest


def _bring_extradata(index: VideoIndex, packet, position: int) -> None:
    """Give the first packet a (re)started decoder is sent the latest new extradata (its side data)
    that packets up to it brought (`VideoIndex.new_extradata`): read past or sought over (FLV's
    demuxer, seeking to the key frame after a sequence header, skips the header), it never reached
    the decoder, which then decoded with the stream's first parameter sets (an FLV whose
    second part's SPS came so, decoded from its recovery point at 44 of 94: nothing, where the CLI
    shows 32 frames)."""
    from av.packet import PacketSideData, packet_sidedata_type_from_literal

    # the latest at or before it (its own, where a seek lost it): positions rise, so found by bisection
    upto = bisect.bisect_right(index.new_extradata, position, key=lambda entry: entry[0])
    if upto and not packet.has_sidedata("new_extradata"):
        data = index.new_extradata[upto - 1][1]
        side = PacketSideData(packet_sidedata_type_from_literal("new_extradata"), len(data))
        side.update(data)
        packet.set_sidedata(side)
