"""Open a video file and pick its video stream as the ffmpeg CLI does (`video_stream`), never cover
art; `VideoError` is every video reject's type. Part of `sources.video_decode`."""

from __future__ import annotations

import errno

from sources import fsio
from sources.gif_screen import browser_view
from sources.ogg_video_pages import VideoPages
from sources.video_index import UnsupportedVideo, multistream_detail
from transforms.errors import Rejected, exception_detail
from sources.video_alpha import stream_tag as _tag
from transforms.headers import GIF_SCREEN


class VideoError(Rejected):
    """A video that cannot be opened or decoded."""


# errors of this machine met by the decoder opening a file: too many open files (this process's
# limit, `ulimit -n`; the system's). Raised as the OSError they are, never a `VideoError`: the
# caller makes them a `records.MachineError`. Not ENOMEM: FFmpeg also says ENOMEM for an allocation
# a damaged or hostile stream declares, which is the input's (`unreadable`), and the memory budget's
DECODER_MACHINE_ERRNOS = (errno.EMFILE, errno.ENFILE)


def _machine_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DECODER_MACHINE_ERRNOS


def _quiet() -> None:
    import av.logging

    av.logging.set_level(av.logging.FATAL)




UNREADABLE_FILE = "unreadable_file"  # the operating system refused to open it: the file's reject, as a picture's


def open_stream(uri: str, video_pages: bool = False):
    """The file opened and its video stream (`video_stream`). `video_pages`: an Ogg read through
    `VideoPages`, only its video's pages (a chained Ogg with sound, `VideoIndex.video_pages`)."""
    import av

    _quiet()
    pages = None
    fsio.opening(uri)  # PyAV reads the path itself: its state as first read, not as at the unit's commit
    try:
        path = fsio.local_path(uri)
        pages = VideoPages(open(path, "rb") if path else fsio.open_file(uri)) if video_pages else None
        gif = None if pages else _gif_cleared(path or uri)  # an animated GIF: its background cleared
        container = av.open(pages, format="ogg") if pages else av.open(gif, format="gif") if gif else \
            av.open(path or fsio.open_file(uri))
    except Exception as exc:
        if _machine_error(exc):  # PyAV's av.error.OSError (an OSError) with the errno FFmpeg met
            raise
        if pages is not None and pages.refusal:
            raise VideoError("unsupported_container", _pages_refusal_detail(pages.refusal)) from None
        if isinstance(exc, PermissionError):  # mode 000, another user's: no container the demuxer refused
            raise VideoError(UNREADABLE_FILE, f"{exception_detail(exc)}: give this user read access to it "
                                              "(chmod a+r)") from None
        raise VideoError("unreadable", exception_detail(exc)) from None
    stream = video_stream(container)
    if stream is None:
        covers = len(container.streams.video)
        held = _streams_held(container)
        # only streams FFmpeg could not type (a track whose header a cut ended: moov at the end, cut inside)
        untyped = bool(held) and all(s.type in ("data", "unknown") for s in container.streams)
        container.close()
        raise VideoError("no_video_stream", f"only cover art ({covers} attached picture), no video" if covers else
                         f"the file holds {held or 'no streams'}, no video"
                         + (" (the file may be cut inside its index)" if untyped else ""))
    if stream.codec_context is None:  # PyAV makes none where FFmpeg has no decoder for the stream's codec
        container.close()
        raise VideoError("unsupported_codec", "FFmpeg has no decoder for the codec the video stream declares "
                                              "(none: a file cut inside its track's header, or a codec it lacks)")
    stream.thread_type = "NONE"  # skip_frame is switched per packet: it must apply to that packet
    # the whole cropping rectangle the stream declares: FFmpeg otherwise drops a left crop that
    # would leave the picture off its 32-byte alignment (H.264 `crop_left=8`: 8 columns too many)
    stream.codec_context.flags |= av.codec.context.Flags.unaligned
    return container, stream


def _gif_cleared(uri: str):
    """The GIF at `uri` read through the view that leaves its background transparent
    (`gif_screen.browser_view`); None for any other file (opened as it is, by its path), and one
    this cannot open (a fifo: FFmpeg's open then blocks until the budget ends it, as before)."""
    try:  # one ranged read of any video
        return browser_view(fsio.head_bytes(uri, GIF_SCREEN), lambda: fsio.open_file(uri))
    except OSError:
        return None


def _pages_refusal_detail(refusal: str) -> str:
    return f"{multistream_detail('theora')}; {refusal}"


def _raise_pages_refusal(container) -> None:
    """The file's refusal where `container` reads it through `VideoPages` and that view refused it
    (a part holding video other than Theora, junk past its cap): its frames so read are not the file's."""
    pages = getattr(container.file, "file", None)  # PyAV's wrapper of a Python file, then that file
    if isinstance(pages, VideoPages) and pages.refusal:
        raise UnsupportedVideo("unsupported_container", _pages_refusal_detail(pages.refusal))


def _streams_held(container) -> str:
    """What a file without video holds, for the reject's detail: "1 audio stream", "2 audio
    streams and 1 subtitle stream" ("" for none)."""
    kinds: dict[str, int] = {}
    for stream in container.streams:
        kinds[stream.type] = kinds.get(stream.type, 0) + 1
    parts = [f"{n} {kind} stream{'s' if n > 1 else ''}" for kind, n in kinds.items()]
    return " and ".join(parts)


def video_stream(container):
    """The video the ffmpeg CLI picks (`ffmpeg -i in out`: the highest resolution, a stream flagged
    default counting 5,000,000 pixels more, the first of equals), never cover art, and among the
    streams FFmpeg can decode. A main track beside a smaller second angle was read as the second
    angle where that came first in Matroska (`av_find_best_stream`, taken before, ranks by the
    default flag, frames probed and bit rate, not size). ffmpeg's way of adding a cover
    (`-disposition:v:0 attached_pic`) leaves it in Matroska as a 1-frame MJPEG track, no longer
    flagged attached, nor default: the CLI may show it (a cover over 5 million pixels larger than
    a default video, or larger than a video not flagged). A track is taken for a still picture
    from what it declares (`_still`: one frame), never from its codec: a camera's MJPEG track
    beside a smaller H.264 one was passed over for its codec's name, where the CLI shows it. A
    still is the video only where no other track is left. In MP4 a cover is an attached picture.
    One undecodable track beside a decodable one lost the whole file to `unsupported_codec`: the
    best decodable one is read. The first moving stream (undecodable) when none can be decoded;
    None when the file holds no video but cover art (a song)."""
    import av

    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        return None
    decodable = [s for s in moving if s.codec_context is not None]
    if not decodable:
        return moving[0]
    best = container.streams.best("video")
    video = [s for s in decodable if not _still(s, best)]
    return max(video or decodable, key=_ffmpeg_score)  # max: the first of the best


# codecs of the still pictures a container holds as a video track (ffmpeg's covers in Matroska):
# only where a track declares neither its frames nor its duration (`_still`)
STILL_CODECS = ("mjpeg", "png", "bmp", "gif", "webp", "tiff")


# the tags Matroska muxers write for a track's length (ffmpeg: DURATION; mkvmerge: both)
_DURATION_TAG, _FRAMES_TAG = "DURATION", "NUMBER_OF_FRAMES"


def _still(stream, best) -> bool:
    """Whether a track is a still picture (a cover), from what it declares: a frame count (MP4,
    AVI; Matroska's NUMBER_OF_FRAMES tag) of one, or a duration (its own, or Matroska's DURATION
    tag: ffmpeg writes 0.04 s for its cover track) of at most one and a half frames. A track that
    declares neither (Matroska written to a pipe) is taken for a still when of a still-image codec
    (`STILL_CODECS`) and not the stream `av_find_best_stream` picks (it prefers one of several
    probed frames over a still)."""
    frames = stream.frames or _tag_number(stream, _FRAMES_TAG)
    if frames:
        return frames == 1
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    seconds = seconds or _tag_seconds(stream)
    rate = stream.average_rate or stream.guessed_rate
    if seconds and rate:
        return seconds * rate <= 1.5
    return stream.codec_context.name in STILL_CODECS and (best is None or stream.index != best.index)


def _tag_number(stream, name: str) -> int:
    value = _tag(stream, name) or ""
    return int(value) if value.isdigit() else 0


def _tag_seconds(stream) -> float | None:
    """Matroska's DURATION tag ("HH:MM:SS.nnnnnnnnn") in seconds; None when absent or malformed."""
    parts = (_tag(stream, _DURATION_TAG) or "").split(":")
    try:
        return int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        return None


def _ffmpeg_score(stream) -> int:
    """The ffmpeg CLI's score of a video stream when it picks one (fftools `open_output_file`):
    width x height, plus 5,000,000 for the default flag. (Its bonus for a stream that had packets
    while probing is not visible here: every stream with frames has it.)"""
    import av

    codec = stream.codec_context
    return codec.width * codec.height + 5_000_000 * bool(stream.disposition & av.stream.Disposition.default)
