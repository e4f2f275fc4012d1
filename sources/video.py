"""Video clips as 16-frame sentences at fixed strides, every frame the one a player shows.

What operating systems and tools leave (a Mac's `._x.png`, `__MACOSX/`, `@eaDir/`, `.git/`) is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`), never probed by a decoder.

Planning (here, at read time) probes each file once: it counts the frames a player presents
(edit lists applied, presentation order; see `sources.video_index`), checks that the first and
the last of them decode, and yields one `VideoRecord` holding every (stride, start) sentence of
the file. Rendering decodes what all those sentences need in one read of the file
(`sources.video_decode`), so a clip is never decoded once per stride.

Every decoding job runs in a killable worker process under the source's time and memory budget
(`sources.budget`): a decoder stuck in C code or eating memory costs that video a reject
(`decode_timeout`, `decode_memory`), never the build. The memory budget is judged first from what
the stream declares (frame size, pixel format, frames its decoder holds; `video_decode.judge_memory`):
a video that cannot fit, or whose frames exceed `max_pixels`, is refused `video_too_large` before
a frame is decoded, and one that fits only with frames converted straight to the canvas's working
size is decoded that way.

The paper's rule: 16 frames at stride s span 15*s + 1 frames. A clip too short for s samples at
the reduced stride (T - 1) // 15 instead; a clip with fewer than 16 decodable frames is rejected,
never padded. Strides that reduce to the same value give one sentence, not duplicates.

video2dataset's output is read too (`sources.video_shards`): each `NNNNN.tar` of its
`output_format=webdataset` is a unit whose video members are probed and decoded as above, each job
from a private temporary copy of the member (`TarMember`, `_worker_uri`), removed after the job
whatever became of it (copies lie in the process's private `uvd-video-<pid>-<random>/` of the
temporary folder, TMPDIR, which it holds a lock on while it lives: a folder whose process is gone,
killed mid-job, is removed by the next process that copies). A copy that
cannot be made for want of room (or of file handles), or a tar that cannot be opened for too many
open files or no memory (`records.MACHINE_ERRNOS`), is this machine's `MachineError`: the unit
fails, the video is no reject of its own. So is a decoder's process that can open no more files
(EMFILE, ENFILE: `video_decode.DECODER_MACHINE_ERRNOS`) when it opens any video, a plain file too. The shard's parquet gives its failed downloads as
rejects. Its `output_format=files` is plain video files, plus its `NNNNN.parquet` as a unit of
failed downloads.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from sources import budget, fsio, video_shards
from sources.budget import Budget, BudgetExceeded, JobError, JobUse, cpu_budget
from sources.web_units import Unit
from sources.paths import (PathProblem, collapse_set_aside, path_problem, relative_to_root, set_aside_problem,
                           twin_problem, twin_to_read)
from sources.records import (MachineError, Reject, SourceItem, TarMember, VideoClipRecord, VideoRecord,
                             is_machine_error, nfc, safe_key, twin_detail, twin_groups)
from sources.video_webp import WEBP_CONTAINER
from sources.video_decode import (DECODER_MACHINE_ERRNOS, DEFAULT_MAX_PIXELS, FRAME_SIZE_CHANGES, Probe, VideoError,
                                  decord_exact)
from sources.video_decord import DecordFailed
from transforms.errors import exception_detail

log = logging.getLogger(__name__)

# with what cameras, discs and older phones write: AVCHD/Blu-ray (.mts, .m2ts), DVD (.vob), 3GPP, Windows Media;
# and animated GIF (TGIF and other GIF datasets: FFmpeg's GIF demuxer gives each frame its delay) and
# animated WebP (GIPHY-style and web-crawled clips: read through Pillow, `sources.video_webp`)
# and what tools write besides: raw DV (`.dv`, camcorder captures), DivX AVI (`.divx`), Ogg Media (`.ogm`),
# NUT (`.nut`), IVF (`.ivf`, libvpx's VP8/VP9/AV1), animated PNG (`.apng`, alpha shown on white), raw
# H.264/HEVC elementary streams (`.h264`, `.264`, `.h265`, `.hevc`: no time stamps, frames timed at the
# rate the stream declares, else 25: `video_index.raw_stream_rate`)
# names of video files; `.ogg` and `.mod` are left out (mostly sound, tracker music), as `.mp3` is: those
# and every other file in the folder that is not read are `unexpected_file` rejects (`unread_detail`)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".ogv",
                    ".mts", ".m2ts", ".vob", ".3gp", ".wmv", ".gif", ".webp",
                    ".mxf", ".asf", ".3g2", ".f4v", ".y4m", ".mk3d", ".m2v",
                    ".dv", ".divx", ".ogm", ".nut", ".ivf", ".apng", ".h264", ".264", ".h265", ".hevc")
# what HLS and DASH packagers write (ffmpeg's `-f hls -hls_segment_type fmp4` and `-f dash`, Shaka,
# Bento4): playlists (`.m3u8`, `.mpd`) and fMP4 fragments (`.m4s`), pieces of one video none of which
# is a whole video alone. Listed so that each is a counted reject saying how to join them; they were
# skipped without a word (an HLS folder built as its `init.mp4`'s `too_few_frames` alone)
STREAMING_SUFFIXES = (".m3u8", ".mpd", ".m4s")
DecoderChoice = Literal["auto", "decord", "pyav"]
PAPER_STRIDES = (10, 20, 30)
__all__ = ["MachineError", "VideoError", "VideoSource", "plan_clips", "probe_video", "clip_frames", "read_clip_frames"]


# -- planning (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class ClipPlan:
    stride: int  # the stride actually used
    requested_stride: int
    start: int
    indices: tuple[int, ...]


def plan_clips(
    n_frames: int,
    strides: Sequence[int],
    frames: int = 16,
    max_windows_per_stride: int | None = None,
) -> list[ClipPlan]:
    """Every (stride, start) sentence of a clip with `n_frames` frames; [] if it is too short.

    The frames at a stride are `range(0, n_frames, stride)`, cut into consecutive runs of
    `frames`: starts are 0, frames * stride, 2 * frames * stride, ... (windows never overlap, and
    the gap between two windows is the stride, as inside one). Every stride's frames then lie on
    the smallest stride's grid when the strides divide each other's multiples (10/20/30: the
    multiples of 10), so the strides share frames: the 3000-frame clip at 10/20/30 needs 288
    distinct frames decoded, converted and encoded, where starts spaced by the window's length
    ((frames - 1) * stride + 1) put each window off the others' grid and needed 512.
    """
    if n_frames < frames:
        return []
    plans: dict[tuple[int, int], ClipPlan] = {}
    for requested in strides:
        stride = requested
        if (frames - 1) * stride + 1 > n_frames:
            stride = (n_frames - 1) // (frames - 1)
        span = (frames - 1) * stride + 1
        starts = range(0, n_frames - span + 1, frames * stride)
        if max_windows_per_stride is not None:
            starts = starts[:max_windows_per_stride]
        for start in starts:
            if (stride, start) not in plans:
                indices = tuple(range(start, start + span, stride))
                plans[(stride, start)] = ClipPlan(stride, requested, start, indices)
    return sorted(plans.values(), key=lambda p: (p.stride, p.start))


# -- probing and decoding, each a budgeted job in the worker process ------------------------
def decord_available() -> bool:
    """Whether decord is installed, without importing it here: decord's bundled libraries break
    OpenCV's PNG decoding ("libpng error: bad parameters to zlib") in any process that loads it,
    so it is only ever imported inside its own worker process."""
    import importlib.util

    return importlib.util.find_spec("decord") is not None


def _job_error(exc: BudgetExceeded | JobError) -> VideoError:
    """The video's error that a budgeted job's failure is; raises the OSError of this machine that
    the decoder's process met opening the file (too many open files: `DECODER_MACHINE_ERRNOS`),
    which the caller makes a `MachineError`."""
    if isinstance(exc, JobError) and exc.errno in DECODER_MACHINE_ERRNOS:
        raise OSError(exc.errno, f"{os.strerror(exc.errno)} (in the decoder's process)") from exc
    if isinstance(exc, BudgetExceeded):
        return VideoError(exc.reason, exc.detail)
    return VideoError(exc.reason or "decode_failed", exc.detail or f"{exc.kind}: {exc.message}"[:200])


PROCESS_LOCAL = ("memory",)  # fsspec filesystems the worker process cannot see


SPILL_STEP = 1 << 20  # bytes copied at a time from a tar member to its temporary file
COPIES_PREFIX = "uvd-video-"  # + "<pid>-<random>": one process's folder of member copies in the temporary folder
# pid -> (temporary folder, its copies' folder, a descriptor of that folder holding its flock):
# made once per process (again if the folder is removed mid-run or TMPDIR changes), kept open for
# the process's lifetime; the kernel drops the lock when the process dies, whatever its pid namespace
_COPIES: dict[int, tuple[str, str, int]] = {}
# errors of this machine, not of the input, met making a copy: the unit fails (uncommitted work
# redone on a rerun), the video is never blamed; these name TMPDIR as the fix
_SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def copies_folder() -> str:
    """This process's folder for member copies: `uvd-video-<pid>-<random>` in the temporary folder
    (`tempfile.gettempdir()`, TMPDIR), made private (0700, never one that existed: a name planted
    in a shared /tmp is never used) on first use in each process, which holds an exclusive `flock`
    on it for as long as it lives. Making it removes the other such folders whose lock can be
    taken: their process is gone (a reader killed mid-job by the OOM killer, kill -9, a lost Beam
    worker never runs its `finally`, and its copy stayed in /tmp forever). The lock, not the pid,
    tells a live process: one in another pid namespace (a container sharing /tmp) has a pid that
    means nothing here. Raises OSError (a machine error) when the folder cannot be made."""
    pid = os.getpid()
    top = tempfile.gettempdir()
    made = _COPIES.get(pid)
    if made is not None and made[0] == top and _still_ours(made[1], made[2]):
        return made[1]
    if made is None:
        atexit.register(_remove_own)
    else:  # removed mid-run, or another TMPDIR: a fresh folder
        _COPIES.pop(pid)
        _close(made[2])
    _remove_dead_copies(top)
    while True:
        folder = tempfile.mkdtemp(prefix=f"{COPIES_PREFIX}{pid}-", dir=top)
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        # a sweep that locked it first (between mkdtemp and here) removes it before letting go
        fcntl.flock(handle, fcntl.LOCK_EX)
        if _still_ours(folder, handle):
            _COPIES[pid] = (top, folder, handle)
            return folder
        _close(handle)


def _still_ours(folder: str, handle: int) -> bool:
    """Whether `folder` is still the folder `handle` is open on (not removed, nor replaced)."""
    try:
        here, held = os.lstat(folder), os.fstat(handle)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _close(handle: int) -> None:
    with contextlib.suppress(OSError):
        os.close(handle)


def _remove_own() -> None:
    made = _COPIES.get(os.getpid())
    if made is not None:
        with contextlib.suppress(OSError):
            os.rmdir(made[1])  # empty once every job's copy is removed


def _remove_dead_copies(top: str) -> None:
    """Remove the `uvd-video-<pid>-<random>` folders in `top` whose owner is gone: their lock can be
    taken (best effort; a link, or a folder not ours to open, is left alone)."""
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        if not re.fullmatch(re.escape(COPIES_PREFIX) + r"[0-9]+-[^/]+", name):
            continue
        path = os.path.join(top, name)
        try:
            handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # a link, not a folder, or not ours
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process lives
            _close(handle)
            continue
        try:
            if _still_ours(path, handle):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            _close(handle)


@contextlib.contextmanager
def _worker_uri(uri: str, member: TarMember | None = None) -> Iterator[str]:
    """`uri` as the worker process can open it: a tar member (`member`), or a file on a
    process-local filesystem (fsspec's memory://), is copied to a private temporary file for the
    job (in `copies_folder()`), a megabyte at a time, and removed afterwards whatever became of the
    job (failed, killed for its budget, or the caller gone); every other URL is passed through.

    An error reading the input (the tar gone, cut, changed, forbidden) is the video's
    `VideoError`, save too many open files or no memory opening or reading it (`is_machine_error`,
    raised as it is); one writing the copy (a full or read-only temporary folder, a quota, too many
    open files) is this machine's: an OSError naming the member and the folder, never the copy's
    random name, so the unit fails uncommitted and a rerun reads the video again."""
    fs, _ = fsio.filesystem(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if member is None and not set(protocols) & set(PROCESS_LOCAL):
        fsio.opening(uri)  # the worker opens the path itself, unrecorded: its state as first read is the unit's
        yield uri
        return
    name = member.name if member is not None else uri
    offset, size = (member.offset, member.size) if member is not None else (0, None)
    try:
        source = fsio.open_file(uri)
    except OSError as exc:  # the tar or file went away, or may not be read
        if is_machine_error(exc):  # too many open files, no memory: the caller's MachineError
            raise
        raise VideoError("unreadable", exception_detail(exc)) from None
    with source:
        folder = _copy_room(name, size)
        try:
            handle, path = tempfile.mkstemp(suffix=os.path.splitext(name)[1][:16], dir=folder)
        except OSError as exc:
            raise _machine_error(exc, name, folder, size) from None
        try:
            with os.fdopen(handle, "wb") as out:
                try:
                    source.seek(offset)
                except OSError as exc:
                    if is_machine_error(exc):
                        raise
                    raise VideoError("unreadable", exception_detail(exc)) from None
                _copy(source, out, size, name, folder)
            try:
                yield path
            except VideoError as exc:  # a decoder's message names the copy: the reject names the video
                raise _renamed(exc, path, name) from None
        finally:
            with contextlib.suppress(FileNotFoundError):  # its folder swept, or removed by hand
                os.unlink(path)


def _copy_room(name: str, size: int | None) -> str:
    """The copies' folder, judged to have room for `size` bytes (a machine error if not)."""
    try:
        folder = copies_folder()
    except OSError as exc:
        raise _machine_error(exc, name, tempfile.gettempdir(), size) from None
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs here: the writes will tell
        return folder
    free = stat.f_bavail * stat.f_frsize
    if size is not None and size > free:
        raise _machine_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), name, folder, size,
                             f"{free} bytes free")
    return folder


def _machine_error(exc: OSError, name: str, folder: str, size: int | None, why: str = "") -> OSError:
    """`exc`, met copying `name` into `folder`, as the OSError of this machine that a unit fails
    on: it names the folder (not the copy's random name; `planned` names the member), and for a
    lack of space the way out."""
    code = exc.errno
    text = exc.strerror or str(exc)
    wanted = f"its {size} bytes" if size is not None else "it"
    how = f"copying {wanted} there{f', {why}' if why else ''}"
    if code in _SPACE_ERRORS:
        how += "; TMPDIR names this folder"
    # "[Errno 28] No space left on device (copying ...): '<folder>'": the build's one-line error
    # (`uvd_pipeline.refusals.os_refusal`) finds the number and the folder, even in a worker's text
    return OSError(code, f"{text} ({how})", folder) if code is not None else OSError(f"{text} ({how}): {folder}")


def _renamed(exc: VideoError, local: str, name: str) -> VideoError:
    """`exc` naming the video (`name`) where it named its temporary copy (`local`), whose random
    name would make reject files differ from run to run."""
    shown = fsio.basename(name)  # details name files by their base names (`exception_detail`) or whole paths
    return VideoError(exc.reason, exc.detail.replace(local, shown).replace(os.path.basename(local), shown))


def _copy(source, out, size: int | None, name: str, folder: str = "") -> None:
    """Copy `size` bytes (None: all) from `source` to `out`; a tar cut or changed since it was
    listed (fewer bytes than its header declared) is `changed_file`, an error reading it
    `unreadable`; an error writing the copy is this machine's (`_machine_error`)."""
    left = size
    while left is None or left > 0:
        try:
            chunk = source.read(SPILL_STEP if left is None else min(SPILL_STEP, left))
        except OSError as exc:
            if is_machine_error(exc):
                raise
            raise VideoError("unreadable", f"{fsio.basename(name)}: {exception_detail(exc)}") from None
        if not chunk:
            break
        try:
            out.write(chunk)
        except OSError as exc:
            raise _machine_error(exc, name, folder, size) from None
        if left is not None:
            left -= len(chunk)
    if left:
        raise VideoError("changed_file", f"{name}: {left} of its {size} bytes are no longer in the archive")


# A video's probe or decode waited on for this many times its CPU budget (`time_budget_s`) is
# killed all the same: a blocked decoder (decord seeking in some MPEG-TS files, a stalled read)
# uses no CPU. 3x covers a decode's wall time on a machine loaded 4 deep on 2 cores (1.5-2.3x its
# CPU time) and kills a blocked decoder within 30 minutes at the default budget.
VIDEO_WALL_FACTOR = 3


def video_budget(time_budget_s: float, memory_mb: int) -> Budget:
    """A video source's budget: `time_budget_s` CPU seconds of its decoding process a probe or a
    decode (not seconds waited: the same videos are refused on a busy machine as on an idle one),
    and `memory_mb` of resident memory."""
    return cpu_budget(time_budget_s, memory_mb, VIDEO_WALL_FACTOR)


def streaming_piece_detail(uri: str) -> str:
    """What an HLS/DASH playlist or fragment is, and the one command that makes it a video."""
    name = fsio.basename(uri)
    suffix = name.lower().rpartition(".")[2]
    if suffix == "m4s":
        what, playlist = "a fragment of an HLS or DASH stream (fMP4), no whole video alone", "PLAYLIST"
    else:  # an MPEG-TS segment is a video alone: read as one, and it would be read twice beside its join
        what, playlist = (f"an {'HLS' if suffix == 'm3u8' else 'DASH'} playlist, of pieces of one video (its .ts "
                          "segments, if any, are read each as a video of its own)"), name
    return (f"{what}: join the stream into one file (ffmpeg -i {playlist} -c copy joined.mp4), keep the pieces "
            "out of the source's folder, and build from that")


@dataclass(frozen=True)
class VideoProbe:
    decoder: str  # who decodes this file: "pyav", or "decord" where it is exact
    n_frames: int  # presented frames that decode, what plans are made against
    metadata_frames: int  # what the container claims (0: nothing; wrong for cut files)
    fps: float
    info: Probe
    note: str = ""  # why the requested decoder was not used


def probe_video(uri: str, decoder: DecoderChoice = "auto", limits: Budget = Budget(),
                max_pixels: int = DEFAULT_MAX_PIXELS, member: TarMember | None = None) -> VideoProbe:
    """Count the presented frames of `uri` (of its tar `member`) and choose who decodes it.
    Raises VideoError."""
    with _worker_uri(uri, member) as local:  # an OSError here is the machine's: the unit fails
        try:
            # every file, whatever its name, through `sources.video_webp`: WebP by its first bytes, else
            # FFmpeg, a GIF's cost judged before it is decoded (`video_gif.judge_gif`)
            info: Probe = budget.call("sources.video_webp:probe", local, max_pixels, limits.memory_mb,
                                      limits.cpu_s or limits.time_s, budget=limits)
            webp = info.container == WEBP_CONTAINER
            why = _decord_refusal(local, info, max_pixels, limits) if decoder == "decord" and not webp else None
        except (BudgetExceeded, JobError) as exc:
            raise _job_error(exc) from None
    if webp:  # FFmpeg has no animated WebP decoder, nor so decord
        note = "decord does not read WebP: Pillow decodes" if decoder == "decord" else ""
        return VideoProbe("pillow", info.n_frames, info.claimed, info.fps, info, note)
    chosen, note = "pyav", ""
    if decoder == "decord":
        if why is None:
            chosen = "decord"
        else:
            note = f"decord is not frame-exact here ({why}): PyAV decodes"
    return VideoProbe(chosen, info.n_frames, info.claimed, info.fps, info, note)


def _decord_refusal(uri: str, info: Probe, max_pixels: int, limits: Budget) -> str | None:
    """Why decord may not decode this file (None: it may). Then whether decord opens it and counts
    the frames the probe counted (`video_decode.decord_frame_count`: a WebM written live declares
    no duration, which decord refuses; each clip was then lost as `unreadable`). Last, since it
    decodes key frames (one per new H.264 SPS, each of other codecs whose header states no size:
    `video_decode.key_frame_sizes`), whether those have more than one size (an HLS recording
    switching up and back down: decord squashed the larger frames into the first one's size where
    the probe's first and last agreed). A check that fails, or runs over the budget (an all-intra
    stream of many frames), leaves the file to PyAV, said in the lineage: the video was probed
    fine, so it is never lost for it (it was a `decode_timeout` reject)."""
    if not decord_available():
        return "decord is not installed"
    why = decord_exact(info)
    if why is not None:
        return why
    try:  # in decord's own process, as its decoding job
        counted = budget.call("sources.video_decode:decord_frame_count", uri, budget=limits, pool="decord")
    except (BudgetExceeded, JobError) as exc:
        failure = _job_error(exc)  # raises this machine's OSError, as below
        # the reason only: decord's words hold the time of day and the file's path, and a budget's
        # the memory it measured; the note is in the lineage, which must not vary between runs
        return f"decord cannot open it ({failure.reason})"
    if counted != info.n_frames:  # its decoding job would refuse the file as changed (`changed_file`)
        return f"decord counts {counted} frames where {info.n_frames} are shown"
    try:
        sizes = budget.call("sources.video_decode:key_frame_sizes", uri, max_pixels, budget=limits)
    except (BudgetExceeded, JobError) as exc:
        failure = _job_error(exc)  # raises this machine's OSError (too many open files), as at the probe
        return f"its key frames could not be checked for size changes ({failure.reason})"
    return FRAME_SIZE_CHANGES if sizes > 1 else None


def clip_frames(record: VideoRecord, postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[VideoClipRecord, np.ndarray | VideoError]]:
    """Each clip of `record` with its frames (N, H, W, 3) uint8 RGB, or the error that lost them.

    One decoding job reads every frame any clip needs; each frame is copied into the clips that
    use it as it arrives, and a clip is yielded as soon as its frames are in (memory stays near a
    few clips).
    `postprocess` (picklable) runs on each frame inside the worker, e.g. the resize to the canvas
    (a `transforms.resize.Canvas` also lets frames too large for the budget at full size be
    converted at the canvas's working size). A video over `max_pixels` or the memory budget loses
    every clip to `video_too_large`, judged before decoding; one that grows past it mid-way loses
    the clips needing its larger frames. A clip whose frames differ in size (a stream that changes
    size, no canvas to fit them) is its own `decode_failed`: the clips after it go on. A clip
    losing frames to a damaged packet (its frame, or frames decoded from it) is `decode_failed`
    naming them, as is one whose frames come after frames the decoder dropped without a word
    where frames are named by its output order (`DecodeSession.outputs_named`). Where decord
    fails mid-way (`video_decord.DecordFailed`), PyAV decodes what the clips not yet finished
    need, within what decord left of the video's budget (it started afresh: a video's decode could
    take twice `time_budget_s`), each such clip said to be PyAV's in its lineage (`decoder_note`);
    with too little left for any decode (`budget.RETRY_FLOOR_S`) they are `decode_timeout` rejects.
    """
    users: dict[int, list[tuple[int, int]]] = {}  # frame -> (clip, place in the clip) of each use
    for c, clip in enumerate(record.clips):
        for k, i in enumerate(clip.frame_indices):
            users.setdefault(i, []).append((c, k))
    missing = [len(clip.frame_indices) for clip in record.clips]
    arrays: dict[int, np.ndarray] = {}  # clip -> its frames, filled as they arrive
    got: set[int] = set()
    done = [False] * len(record.clips)
    failure: VideoError | None = None
    shown = record.member.name if record.member else record.uri  # what an error names: the member, not its copy
    decoder, wanted = record.decoder, sorted(users)
    handed_to_pyav: dict[int, VideoClipRecord] = {}  # clip -> itself as PyAV finished it (decord failed mid-way)
    # the video's one budget: PyAV finishing what decord could not gets what decord left of it
    limits, used = record.limits, JobUse()
    handoff = ""  # set once PyAV takes over from decord: what decord used and could not decode

    def as_decoded(c: int) -> VideoClipRecord:
        return handed_to_pyav.get(c, record.clips[c])

    with contextlib.ExitStack() as spill:
        try:  # a tar member is copied out first: a tar changed since it was read loses every clip
            uri = spill.enter_context(_worker_uri(record.uri, record.member))
        except VideoError as exc:
            uri, failure = None, exc
        except OSError as exc:  # the machine's (a full temporary folder): the unit fails, no clip is blamed
            raise MachineError(f"decoding {fsio.basename(shown)}: {exc}") from exc
        while uri is not None:
            job_name = "decord_frames" if decoder == "decord" else "decode_frames"
            module = "video_webp" if decoder == "pillow" else "video_decode"
            # each frame is read into one reused buffer and copied straight into the clips that use it
            handed = {"kept": record.kept_index} if record.kept_index is not None and job_name == "decode_frames" else {}
            if decoder == "pillow":  # WebP's decode time is judged before decoding: `video_webp.judge_time`
                handed = {"time_budget_s": record.limits.cpu_s or record.limits.time_s}
            job = budget.run(f"sources.{module}:{job_name}", uri, wanted, record.n_frames, postprocess,
                             max_pixels=max_pixels, memory_mb=record.limits.memory_mb, budget=limits, use=used,
                             # decord's libraries stay in its own process; Pillow's WebP shares PyAV's
                             pool="pyav" if decoder == "pillow" else decoder, scratch=True, **handed)
            try:
                for i, pixels in job:
                    got.add(i)
                    for c, k in users.get(i, ()):
                        clip = record.clips[c]
                        if done[c]:  # lost to a frame of another size: the other clips go on
                            continue
                        frames = arrays.get(c)
                        if frames is None:
                            frames = arrays[c] = np.empty((len(clip.frame_indices),) + pixels.shape, pixels.dtype)
                        elif frames.shape[1:] != pixels.shape:
                            done[c] = True
                            del arrays[c]
                            yield as_decoded(c), VideoError("decode_failed", f"frame {i} is {pixels.shape}, the "
                                                                             f"clip's first {frames.shape[1:]}")
                            continue
                        frames[k] = pixels
                        missing[c] -= 1
                        if missing[c] == 0:
                            done[c] = True
                            yield as_decoded(c), arrays.pop(c)
            except (BudgetExceeded, JobError) as exc:
                rest = None
                if isinstance(exc, JobError) and exc.kind == DecordFailed.__name__:
                    try:  # nothing left worth a retry: the video is over its budget
                        rest = used.left(limits, "decord")
                    except BudgetExceeded as spent:  # saying what decord failed on, too
                        exc = BudgetExceeded(spent.reason, f"{spent.detail}; decord could not decode {exc.detail}")
                if rest is not None:
                    # a packet decord cannot decode (a damaged one): PyAV decodes what the clips not yet
                    # finished still need, and names the frames lost (every clip was lost, those wholly
                    # before the damage too, with decord's words naming no frame)
                    note = f"decord could not decode {exc.detail}: PyAV decodes"
                    for c, clip in enumerate(record.clips):
                        if not done[c]:
                            handed_to_pyav[c] = replace(clip, decoder="pyav",
                                                        lineage={**clip.lineage, "decoder_note": note})
                    wanted = sorted({i for c in handed_to_pyav for i in record.clips[c].frame_indices} - got)
                    decoder = "pyav"
                    # a retry that runs out of what is left says so, and what decord spent and failed on
                    handoff = f"PyAV's retry, after {used.spent(limits, 'decord')} and could not decode {exc.detail}"
                    limits, used = rest, JobUse()
                    continue
                if handoff and isinstance(exc, BudgetExceeded) and exc.reason == "decode_timeout":
                    exc = BudgetExceeded(exc.reason, f"{exc.detail} ({handoff})")
                try:
                    failure = _job_error(exc)
                except OSError as machine:  # too many open files in the decoder's process: as at planning
                    raise MachineError(f"decoding {fsio.basename(shown)}: {machine}") from machine
            except VideoError as exc:
                job.close()  # the worker is stopped mid-job
                failure = exc
            except OSError as exc:  # the machine's (too many open files starting the decoder): as at planning
                job.close()
                raise MachineError(f"decoding {fsio.basename(shown)}: {exc}") from exc
            if failure is not None and uri != record.uri:
                failure = _renamed(failure, uri, shown)
            break
    for c, clip in enumerate(record.clips):
        if not done[c]:
            if failure is None:
                lost = [i for i in clip.frame_indices if i not in got]
                yield as_decoded(c), VideoError("decode_failed", lost_frames_detail(lost, len(clip.frame_indices)))
            else:
                yield as_decoded(c), failure


def lost_frames_detail(lost: Sequence[int], clip_frames: int) -> str:
    """What a clip lost, its frames named in runs (`frames 20-31, 40 (13 of the clip's 16)`): a
    damaged packet's frame and those decoded from it (`DecodeSession.drop_damaged`), the frames
    after outputs the decoder dropped without a word (`DecodeSession.outputs_named`), or a frame
    past a cut the probe did not see."""
    runs: list[list[int]] = []
    for i in lost:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    named = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:8]) + (", ..." if len(runs) > 8 else "")
    what, were = ("frame", "was") if len(lost) == 1 else ("frames", "were")
    return (f"{what} {named} ({len(lost)} of the clip's {clip_frames}) did not decode, or {were} decoded from "
            "a damaged frame or after frames that went missing in decode")


def read_clip_frames(clip: VideoClipRecord, limits: Budget = Budget()) -> np.ndarray:
    """One clip's frames on its own (tests, tools); builds read whole `VideoRecord`s."""
    record = VideoRecord(clip.key, clip.source, clip.group, clip.uri, (clip,), clip.decoder,
                         int(clip.lineage.get("frames_total", max(clip.frame_indices) + 1)), limits, clip.member)
    ((_, result),) = list(clip_frames(record))
    if isinstance(result, VideoError):
        raise result
    return result


@dataclass(frozen=True)
class UnicodeTwins:
    """A unit of videos whose paths below the root are one name in different Unicode forms, so one
    key, in `records.twin_order`: the first that is a file to read (`paths.twin_to_read`) is read, each
    other that is a file too is a `duplicate_key` reject, each that is none (a fifo, a link to nothing:
    `paths.twin_problem`) its own reason's, as an image twin's is; when none is read, each is its own
    reject. A fifo twin was a `duplicate_key` saying "that file is read" of a file that is none."""

    uris: tuple[str, ...]


@dataclass(frozen=True)
class VideoSource:
    name: str
    path: str
    strides: tuple[int, ...] = PAPER_STRIDES
    frames: int = 16
    max_windows_per_stride: int | None = None
    decoder: DecoderChoice = "auto"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    limits: Budget = field(default_factory=Budget)
    max_pixels: int = DEFAULT_MAX_PIXELS  # per frame, as for images (rendering applies the build's own)
    follow_links: bool = False  # read videos and folders that are links leading out of `path`

    def units(self) -> list[str | UnicodeTwins | Unit]:
        """Every video file below the root, every video2dataset webdataset shard (`NNNNN.tar`: one
        unit, or parts of a big one, `video_shards.VIDEO_PART_BYTES`) and every files-layout
        listing (`NNNNN.parquet` beside `NNNNN/`: its failed downloads); `sources.video_shards`
        says how shards and listings are read."""
        if not fsio.exists(self.path):
            raise FileNotFoundError(f"{self.path} does not exist")
        if not fsio.isdir(self.path):
            return [self.path]
        # links, fifos and devices are listed too (a folder link whatever its name): `read` rejects
        # those it must not open, so none is skipped silently
        # every file: those not read are rejects (`unread_detail`), save what video2dataset writes beside
        # what is read (`video_shards.layout_sidecars`)
        listed = fsio.list_files(self.path, None, recursive=True, follow_links=self.follow_links, links=True)
        readable = self.extensions + video_shards.SHARD_SUFFIXES + STREAMING_SUFFIXES
        if not any(f.lower().endswith(readable) for f in listed):
            raise FileNotFoundError(f"{self.name}: no videos ({', '.join(self.extensions)}) and no video2dataset "
                                    f"shards (NNNNN.tar) under {self.path}")
        kept = video_shards.without_layout_sidecars(listed, readable)
        files = collapse_set_aside(self.path, video_shards.without_shard_listings(kept))
        return video_shards.as_units(self._with_twins(files), self.path)

    def unread_detail(self, uri: str) -> str:
        """Why a file in the source's folder is not read: its name is no video's the source reads."""
        shown = ", ".join(self.extensions[:8]) + (", ..." if len(self.extensions) > 8 else "")
        return (f"{fsio.basename(uri)} is not a video this source reads (by its name: {shown}; README, "
                "video sources), nor a video2dataset shard: not read")

    def relative(self, uri: str) -> str:
        """`uri` below the root; the file's name where the source's path is that file (or elsewhere)."""
        relative = relative_to_root(self.path, uri)
        return fsio.basename(uri) if relative == uri else relative

    def _with_twins(self, files: list[str]) -> list[str | UnicodeTwins]:
        """`files`, with the paths that one key takes (`café.mp4` in NFC beside a Mac's NFD copy, or
        two forms neither of them NFC) made one `UnicodeTwins` unit where the first of them stood:
        told apart here, each such file was read and the pair met only at assembly."""
        return [group[0] if len(group) == 1 else UnicodeTwins(tuple(group))
                for group in twin_groups(files, self.relative).values()]

    def video_key(self, uri: str) -> str:
        return safe_key(self.name, *self.relative(uri).split("/"))

    def read(self, unit: str | UnicodeTwins | Unit) -> Iterator[SourceItem]:
        if isinstance(unit, Unit) and unit.parts > 1:  # a part of a big tar: the items whose keys it owns
            yield from (item for item in self._read(unit.uris[0], unit.owns) if unit.owns(item.key))
            return
        if isinstance(unit, Unit):
            yield from self._read(unit.uris[0])
            return
        if not isinstance(unit, UnicodeTwins):
            yield from self._read(unit)
            return
        uri = twin_to_read(self.path, unit.uris, self.follow_links)
        for other in unit.uris:  # never opened (a fifo never is: `twin_problem`); the one read has its key
            if other != uri:
                key = self.video_key(other)
                problem = twin_problem(self.path, other, self.follow_links) or PathProblem(
                    "duplicate_key", twin_detail(self.relative(other), self.relative(uri or other)))
                yield Reject(key, self.name, key, "read", problem.reason, problem.detail, input=self.relative(other))
        if uri is not None:
            yield from self._read(uri)

    def _read(self, uri: str, owns: Callable[[str], bool] | None = None) -> Iterator[SourceItem]:
        video = self.video_key(uri)
        problem = set_aside_problem(self.path, uri) or path_problem(self.path, uri, self.follow_links)
        if problem:  # a Mac's `._clip.mp4`, a link leading out of the root, a fifo, a device: never opened
            yield Reject(video, self.name, video, "read", problem.reason, problem.detail,
                         input=self.relative(uri))
            return
        if uri.lower().endswith(STREAMING_SUFFIXES):
            yield Reject(video, self.name, video, "read", "unexpected_file", streaming_piece_detail(uri),
                         input=self.relative(uri))
            return
        if uri != self.path and not uri.lower().endswith(self.extensions + video_shards.SHARD_SUFFIXES):
            yield Reject(video, self.name, video, "read", "unexpected_file", self.unread_detail(uri),
                         input=self.relative(uri))
            return
        if video_shards.is_shard_input(uri):  # a video2dataset tar, or a files-layout listing
            yield from video_shards.read_input(self, uri, owns)
            return
        stale = video_shards.stale_file(self, uri)
        if stale:  # a killed video2dataset run's video its rerun's listing records as failed, or not at all
            yield Reject(video, self.name, video, "read", video_shards.STALE_DOWNLOAD, stale, input=self.relative(uri))
            return
        yield from self.planned(video, uri, {"file": nfc(fsio.basename(uri))})  # the name as the key takes it

    def planned(self, video: str, uri: str, named: dict[str, Any],
                member: TarMember | None = None) -> Iterator[VideoRecord | Reject]:
        """The `VideoRecord` of the video at `uri` (or its tar `member`) keyed `video`, its lineage
        starting with `named`; or the reject of a video that cannot be probed or is too short."""
        where = self.relative(uri) + (f":{member.name}" if member else "")
        try:
            probe = probe_video(uri, self.decoder, self.limits, self.max_pixels, member)
        except VideoError as exc:
            yield Reject(video, self.name, video, "plan", exc.reason, exc.detail, input=where)
            return
        except OSError as exc:  # the machine's (`_worker_uri`, starting the decoder): the unit fails
            raise MachineError(f"planning {named.get('file') or fsio.basename(uri)}: {exc}") from exc
        plans = plan_clips(probe.n_frames, self.strides, self.frames, self.max_windows_per_stride)
        if not plans:
            yield Reject(video, self.name, video, "plan", "too_few_frames",
                         f"{probe.n_frames} decodable frames < {self.frames}", input=where)
            return
        info = probe.info
        lineage = {
            **named,
            "frames_total": probe.n_frames,
            "frames_metadata": probe.metadata_frames,
            "packets": info.packets,
            "fps": round(probe.fps, 3),
            "container": info.container,
            "codec": info.codec,
            "width": info.width,
            "height": info.height,
        }
        if info.rotation or info.mirrored:  # applied: frames are stored as players show them
            lineage["rotation"] = info.rotation
            lineage["mirrored"] = info.mirrored
        if info.sample_aspect_ratio:  # non-square pixels: stretched to square (or, if implausible, not)
            lineage["sample_aspect_ratio"] = info.sample_aspect_ratio
            lineage["sample_aspect_ratio_applied"] = info.sar_applied
        if info.hdr:  # PQ or HLG: frames tone-mapped to SDR BT.709 (`transforms.hdr`)
            lineage["hdr"] = info.hdr
        if info.matrix_guessed:  # untagged HD: converted as BT.709, as players show it (`sources.video_decode`)
            lineage["matrix_guessed"] = info.matrix_guessed
        if info.interlaced:  # fields woven, not deinterlaced (`sources.video_decode`)
            lineage["interlaced"] = True
        if info.restamped:  # the demuxer's stamps repeat (joined parts) or are missing (before zero, split by the parser)
            lineage["restamped"] = info.restamped
        if info.hidden:  # by an edit list, or before the first key frame of a stream cut mid-GOP
            lineage["frames_hidden"] = info.hidden
        if probe.note:
            lineage["decoder_note"] = probe.note
        clips = tuple(
            VideoClipRecord(
                key=f"{video}-s{plan.stride}-f{plan.start:06d}",
                source=self.name,
                group=video,
                uri=uri,
                frame_indices=plan.indices,
                stride=plan.stride,
                requested_stride=plan.requested_stride,
                start=plan.start,
                decoder=probe.decoder,
                lineage=dict(lineage),
                frame_times=tuple(info.times[i] for i in plan.indices),
                member=member,
            )
            for plan in plans
        )
        kept = probe.info.kept_index if member is None else None  # a member's copy is another file each time
        yield VideoRecord(video, self.name, video, uri, clips, probe.decoder, probe.n_frames, self.limits, member, kept)
