"""Annotated video: frames with per-frame masks (VIPSeg layout) or poses (JHMDB layout).

A sentence holds `frames` frames and their annotations (16 images for 8 frames), laid out
interleaved {f1, a1, f2, a2, ...} or separated {f1, f2, ..., a1, a2, ...}. Windows at one stride
do not overlap; a video with fewer frames than a window is rejected, never padded.

Frames are ordered by the number in their names (the last run of digits: `00012.png`, `12.png`
and `frame_12.jpg` are all frame 12), never by a text sort, which puts `10.png` before `2.png`.
JHMDB numbers every frame of its clip (`00001.png` is the clip's first frame, pos_img's first
column; a folder holding a frame numbered 0 counts from 0, as ffmpeg's `-start_number 0` writes
it), so a number absent from the folder is a missing frame: a window holding it is rejected
(`missing_frame`), never closed up over the gap with the poses of other frames. VIPSeg samples
its videos sparsely (`00000976.jpg`), so its frames follow one another by number, frames and
masks paired by number; a mask whose frame is gone still takes its place (its window is
rejected `missing_frame`). Two files of one number (`00014.png` and `00014.jpg`) reject the
windows holding it (`duplicate_frame`, `duplicate_annotation`); a file with no number in its
name is rejected on its own (`unnumbered_frame`). What operating systems and tools leave is one
`os_metadata` or `hidden_file` reject each (`sources.paths.set_aside`): a Mac's `._00001.png` is no
frame 1 (it made frame 1 a `duplicate_frame`), `__MACOSX/` or `@eaDir/` no video.
The datasets' own splits are honoured (`split_list`): VIPSeg's `train.txt` / `val.txt` / `test.txt`
beside `imgs/`, JHMDB's `splits/<action>_test_split<N>.txt` (N = `official_split`, 1 by default: JHMDB
reports results on split 1 or averaged over all three); without them every video was hashed, and
most of the videos they evaluate on were trained on.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Iterator, Literal, Sequence

import numpy as np

from sources import fsio
from sources.annotation_files import BAD_ANNOTATION
from sources.mat_files import MatTooLarge, MatUnreadable, mat_inflated_bytes, read_mat_variable, scipy_read
from sources.paths import (OutsideRoot, check_inside, names_below, path_problem, set_aside, set_aside_problem,
                           shown_name)
from sources.records import AnnotatedClipRecord, Reject, SourceItem, read_input_bytes, relative_input, safe_key
from transforms.errors import Rejected

VideoLayout = Literal["vipseg", "jhmdb"]
SentenceLayout = Literal["interleaved", "separated"]
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIPSEG_FRAME_FOLDERS = ("imgs", "images")  # VIPSeg as released; VIPSeg_720P
# The official splits: a video the dataset evaluates on goes to our val split, never to train (an
# unlisted video takes the seeded hash). VIPSeg ships its lists beside imgs/ (one video a line; the
# test videos' masks are withheld); JHMDB ships splits/<action>_test_split<1|2|3>.txt, a line
# `<clip>.avi 1` (training) or `<clip>.avi 2` (testing); results are reported on split 1 or averaged
# over the three, so the one read is the source's `official_split`
VIPSEG_SPLIT_LISTS = {"train.txt": "train", "val.txt": "val", "test.txt": "val"}
VIPSEG_TEST_LIST = "test.txt"
JHMDB_SPLITS_FOLDER = "splits"
JHMDB_SPLITS = (1, 2, 3)
JHMDB_SPLIT_FLAGS = {"1": "train", "2": "val"}
_JHMDB_SPLIT_LIST = re.compile(r"(.+)_test_split[123]\.txt")
MAX_SPLIT_LIST_BYTES = 1 << 20  # VIPSeg's train.txt: 2,806 names, ~60 KB
BAD_SPLIT_LIST = "bad_split_list"


def jhmdb_split_suffix(split: int) -> str:
    """The end of the name of JHMDB's list of split `split` of an action: `_test_split<N>.txt`."""
    return f"_test_split{split}.txt"


def frame_windows(n_frames: int, frames: int, stride: int) -> list[tuple[int, ...]]:
    """Non-overlapping windows of `frames` indices `stride` apart."""
    span = (frames - 1) * stride + 1
    return [tuple(range(start, start + span, stride)) for start in range(0, n_frames - span + 1, span)]


def windows_holding(present: list[int], n_frames: int, frames: int, stride: int) -> list[tuple[int, ...]]:
    """The windows of `frame_windows(n_frames, ...)` that hold at least one of the indices
    `present`, in order: a window of absent frames only is no input, and a stray large number
    must not make millions of them."""
    span = (frames - 1) * stride + 1
    starts = {i - i % span for i in present if i % span % stride == 0 and i - i % span + span <= n_frames}
    return [tuple(range(start, start + span, stride)) for start in sorted(starts)]


_NUMBER = re.compile(r"(\d+)\D*$")


def _digits(uri: str) -> str | None:
    match = _NUMBER.search(fsio.basename(uri).rsplit(".", 1)[0])
    return match.group(1) if match else None


def frame_number(uri: str) -> int | None:
    """The number a frame or mask file's name gives it: its last run of digits."""
    digits = _digits(uri)
    return None if digits is None else int(digits)


@dataclass
class _Slot:
    """One place of a video's timeline: the frame files and annotation files of its number."""

    number: int
    frames: list[str]
    masks: list[str]


# JHMDB's joint_positions.mat holds a few (2, 15, T) arrays of a clip of 15 to 40 frames: kilobytes.
# The file cap alone would let a compressed MAT element inflate about 1000-fold (256 MB, 2 GB as
# float64), so what the compressed elements inflate to is counted before scipy reads them
MAX_JOINTS_BYTES = 1 << 18
MAX_JOINTS_INFLATED_BYTES = 1 << 22
MAX_JHMDB_FRAMES = 4096  # the frames a pos_img may declare
MATLAB_OFFSET = 0.5  # JHMDB's pos_img is in MATLAB's 1-based pixel-centre coordinates
MAT_NUMERIC = frozenset({"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})


def _check_inflation(data: bytes) -> None:
    """Refuse a MAT file whose compressed variables inflate past `MAX_JOINTS_INFLATED_BYTES`
    (`mat_inflated_bytes`)."""
    try:
        total = mat_inflated_bytes(data, MAX_JOINTS_INFLATED_BYTES)
    except ValueError as exc:
        raise Rejected(BAD_ANNOTATION, str(exc)) from None
    if total > MAX_JOINTS_INFLATED_BYTES:
        raise Rejected("annotation_too_large", f"its compressed variables inflate past {MAX_JOINTS_INFLATED_BYTES} bytes")


def _pos_img_frames(data: bytes) -> int:
    """The frames pos_img declares, judged from the variable headers alone (loadmat allocates what a
    header declares: a cell of 10^9 entries costs gigabytes before any of its data is read)."""
    from scipy.io import whosmat

    try:
        declared = {name: (tuple(shape), kind) for name, shape, kind in scipy_read(lambda: whosmat(io.BytesIO(data)))}
    except MatUnreadable as exc:
        raise Rejected(BAD_ANNOTATION, str(exc)) from None
    if "pos_img" not in declared:
        raise Rejected(BAD_ANNOTATION, "has no pos_img")
    shape, kind = declared["pos_img"]
    if kind not in MAT_NUMERIC:
        raise Rejected(BAD_ANNOTATION, f"pos_img is a {kind} array, not a numeric array")
    shape = shape + (1,) if shape == (2, 15) else shape  # MATLAB drops a one-frame clip's last dimension
    if len(shape) != 3 or shape[:2] != (2, 15):
        raise Rejected(BAD_ANNOTATION, f"pos_img must be 2 x 15 x T, is {' x '.join(map(str, shape))}")
    if shape[2] > MAX_JHMDB_FRAMES:
        raise Rejected("annotation_too_large", f"pos_img declares {shape[2]} frames, more than {MAX_JHMDB_FRAMES}")
    return shape[2]


def load_jhmdb_points(data: bytes) -> np.ndarray:
    """joint_positions.mat -> (T, 15, 2) pixel-edge coordinates from its `pos_img` (2, 15, T).

    The file is judged before scipy reads its data (`_check_inflation`, `_pos_img_frames`); a file
    scipy cannot read is a `Rejected` naming the problem, never scipy's exception."""
    _check_inflation(data)
    frames = _pos_img_frames(data)
    try:  # a numeric array: one object (`read_mat_variable`)
        pos = read_mat_variable(data, "pos_img", MAX_JOINTS_INFLATED_BYTES, 1, squeeze_me=False)
    except MatTooLarge as exc:
        raise Rejected("annotation_too_large", str(exc)) from None
    except MatUnreadable as exc:
        raise Rejected(BAD_ANNOTATION, str(exc)) from None
    try:
        if np.iscomplexobj(pos):
            raise Rejected(BAD_ANNOTATION, "pos_img holds complex numbers")
        return np.asarray(pos, dtype=np.float64).reshape(2, 15, frames).transpose(2, 1, 0) - MATLAB_OFFSET
    except Rejected:
        raise
    except Exception as exc:  # scipy's messages can quote the file's header bytes: name the problem only
        raise Rejected(BAD_ANNOTATION, f"not a readable MAT file ({type(exc).__name__})") from None


@fsio.cached_input(maxsize=64)
def split_list(uri: str, layout: str) -> tuple[dict[str, str], str]:
    """One official split list: video name (NFC) -> our split, and what is wrong with the list
    ('' when nothing). A VIPSeg list gives its file's split to every name; a JHMDB line is
    `<clip>.avi <flag>` (a clip's name may hold spaces). A list that cannot be read at all gives no
    names and says why: cached as a good list is, not read again for each of its videos. Too many
    open files or no memory reading it is this machine's `MachineError` (`read_input_bytes`),
    never cached: its `bad_split_list` would be committed for good, and every later video of the
    process would take the seeded hash's split, an evaluation video landing in train."""
    try:
        text = read_input_bytes(uri, MAX_SPLIT_LIST_BYTES).decode("utf-8-sig")
    except fsio.FileTooLarge:
        return {}, f"larger than {MAX_SPLIT_LIST_BYTES} bytes (a split list is a page of names)"
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except (OSError, ValueError) as exc:
        return {}, f"unreadable ({type(exc).__name__})"
    names: dict[str, str] = {}
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        # JHMDB's flag is the last word: `clip b.avi 2` is the clip `clip b`
        words = line.split() if layout == "vipseg" else line.strip().rsplit(None, 1)
        if not words:
            continue
        if layout == "vipseg":
            if len(words) != 1:
                bad.append((number, line.strip()))
                continue
            name, split = words[0], VIPSEG_SPLIT_LISTS[fsio.basename(uri)]
        else:
            if len(words) != 2 or words[1] not in JHMDB_SPLIT_FLAGS:
                bad.append((number, line.strip()))
                continue
            name, split = words[0].removesuffix(".avi"), JHMDB_SPLIT_FLAGS[words[1]]
        name = unicodedata.normalize("NFC", name)
        names[name] = "val" if "val" in (split, names.get(name)) else split  # held out wins
    problem = ""
    if bad:
        form = "a video name" if layout == "vipseg" else "'<clip>.avi 1|2'"
        problem = (f"{len(bad)} line{'s are' if len(bad) > 1 else ' is'} not {form} "
                   f"(line {bad[0][0]}: {bad[0][1][:60]!r})")
    return names, problem


@fsio.derived_input
def official_split(root: str, layout: str, split: int, follow_links: bool, video: str) -> tuple[str | None, bool]:
    """The split the dataset's lists give a video (None: unlisted), and whether VIPSeg lists it as
    a test video (its masks withheld). A list that cannot be read gives nothing (its own unit is
    the reject). A unit records this value, not the lists' files: a line fixed in a list renders
    again only the videos whose split it changes."""
    if layout == "vipseg":
        lists = [fsio.join(root, name) for name in VIPSEG_SPLIT_LISTS]
        name = video
    else:
        action, name = video.split("/", 1)
        lists = [fsio.join(root, JHMDB_SPLITS_FOLDER, action + jhmdb_split_suffix(split))]
    name = unicodedata.normalize("NFC", name)
    found, test = [], False
    for uri in lists:
        if not fsio.exists(uri) or path_problem(root, uri, follow_links):
            continue
        given = split_list(uri, layout)[0].get(name)
        if given is not None:
            found.append(given)
            test = test or fsio.basename(uri) == VIPSEG_TEST_LIST and layout == "vipseg"
    return ("val" if "val" in found else found[0] if found else None), test


@dataclass(frozen=True)
class AnnotatedVideoSource:
    name: str
    path: str
    layout: VideoLayout = "vipseg"
    sentence_layout: SentenceLayout = "interleaved"
    frames: int = 8
    stride: int = 1
    follow_links: bool = False  # read frames and annotations that are links leading out of `path`
    official_split: int = 1  # JHMDB: which of its three splits' lists is read (`JHMDB_SPLITS`)

    def __post_init__(self) -> None:
        if self.official_split not in JHMDB_SPLITS:
            raise ValueError(f"official_split must be one of {JHMDB_SPLITS}, got {self.official_split!r}")
        if self.official_split != 1 and self.layout != "jhmdb":
            raise ValueError(f"official_split is JHMDB's (layout jhmdb); {self.layout} has one set of lists")

    @property
    def _split_suffix(self) -> str:
        return jhmdb_split_suffix(self.official_split)

    def units(self) -> list[str]:
        if self.layout == "vipseg":
            # VIPSeg ships imgs/; its 720P conversion (change2_720p.py, what most code reads) images/
            folder = next((fsio.join(self.path, f) for f in VIPSEG_FRAME_FOLDERS
                           if fsio.exists(fsio.join(self.path, f))), None)
            videos = fsio.list_dirs(folder, links=True) if folder else []
        else:
            folder = fsio.join(self.path, "Rename_Images")
            videos = self._two_levels(folder)
        if not videos:
            expected = ("imgs/<video>/ (or images/<video>/)" if self.layout == "vipseg"
                        else "Rename_Images/<action>/<video>/")
            raise FileNotFoundError(f"no videos in the {self.layout} layout under {self.path} (expected {expected})")
        # a video annotated but without its frame folder is a unit too: read, it is one reject, so
        # its annotations never vanish silently
        have = {self._video(v) for v in videos}
        if self.layout == "vipseg":
            annotated = fsio.join(self.path, "panomasks")
            dirs = fsio.list_dirs(annotated, links=True) if fsio.exists(annotated) else []
        else:
            dirs = self._two_levels(fsio.join(self.path, "joint_positions"))
        # `__MACOSX/`, `@eaDir/`, `.git/` among the annotations: a unit each, read as one reject
        aside = [d for d in dirs if set_aside_problem(self.path, d)]
        names = [self._video(d) for d in dirs if d not in aside]
        return videos + [fsio.join(folder, *name.split("/")) for name in names  # type: ignore[arg-type]
                         if name not in have] + aside + self._split_lists()

    def _split_lists(self) -> list[str]:
        """The official split lists there are (JHMDB's lists of the split read, and what a tool left
        beside them): a unit each, read as a reject when it cannot be read, as nothing otherwise.
        JHMDB's list of the split read of an action whose other splits are there is a unit too:
        missing, one reject."""
        if self.layout == "vipseg":
            return [uri for uri in (fsio.join(self.path, name) for name in VIPSEG_SPLIT_LISTS) if fsio.exists(uri)]
        folder = fsio.join(self.path, JHMDB_SPLITS_FOLDER)
        listed = fsio.list_files(folder, links=True) if fsio.exists(folder) else []
        lists = [uri for uri in listed if fsio.basename(uri).endswith(self._split_suffix)]
        actions = {found.group(1) for uri in listed if (found := _JHMDB_SPLIT_LIST.fullmatch(fsio.basename(uri)))}
        missing = [fsio.join(folder, action + self._split_suffix) for action in sorted(actions)]
        return lists + [uri for uri in missing if uri not in lists]

    def _is_split_list(self, unit: str) -> bool:
        if self.layout == "vipseg":
            return fsio.basename(unit) in VIPSEG_SPLIT_LISTS and unit == fsio.join(self.path, fsio.basename(unit))
        return unit == fsio.join(self.path, JHMDB_SPLITS_FOLDER, fsio.basename(unit))

    def _read_split_list(self, uri: str) -> Iterator[SourceItem]:
        key = safe_key(self.name, *names_below(self.path, uri))
        problem = set_aside_problem(self.path, uri) or path_problem(self.path, uri, self.follow_links)
        if problem:  # a Mac's `._walk_test_split1.txt`, a list that is a link leading out
            yield Reject(key, self.name, key, "read", problem.reason, problem.detail,
                         input=relative_input(uri, self.path))
            return
        if self.layout == "jhmdb" and not fsio.exists(uri):  # `_split_lists`: other splits, not the one read
            action = fsio.basename(uri).removesuffix(self._split_suffix)
            detail = (f"{JHMDB_SPLITS_FOLDER}/ holds {action}'s other splits but not {fsio.basename(uri)}, the "
                      f"split read (official_split: {self.official_split}): {action}'s clips take the seeded "
                      "hash's split")
        else:
            _, detail = split_list(uri, self.layout)
        if detail:
            yield Reject(key, self.name, key, "read", BAD_SPLIT_LIST, detail[:200], input=relative_input(uri, self.path))

    def _official_split(self, video: str) -> tuple[str | None, bool]:
        return official_split(self.path, self.layout, self.official_split, self.follow_links, video)

    @staticmethod
    def _two_levels(root: str) -> list[str]:
        """<root>/<action>/<video> folders (JHMDB); an action folder an operating system or a tool
        left (`@eaDir/`) is itself an entry, never descended into."""
        return [v for action in (fsio.list_dirs(root, links=True) if fsio.exists(root) else [])
                for v in ([action] if set_aside(fsio.basename(action)) else fsio.list_dirs(action, links=True))]

    def _video(self, video_dir: str) -> str:
        if self.layout == "vipseg":
            return fsio.basename(video_dir)
        return f"{fsio.basename(video_dir.rsplit('/', 1)[0])}/{fsio.basename(video_dir)}"

    def read(self, unit: str) -> Iterator[SourceItem]:
        if self._is_split_list(unit):
            yield from self._read_split_list(unit)
            return
        # the lists name videos, never open them: a video folder that is a link out or set aside is
        # still one reject (`_read_video` checks it), counted in the split its list gives it
        split, test = self._official_split(self._video(unit))
        for item in self._read_video(unit, test):
            yield item if split is None else replace(item, split_hint=split)

    def _read_video(self, video_dir: str, test: bool) -> Iterator[SourceItem]:
        at = relative_input(video_dir, self.path) + "/"  # rejects' `input`: the video's folder
        aside = set_aside_problem(self.path, video_dir)
        if aside:  # `__MACOSX/`, `@eaDir/`: one reject, never a video of no frames
            key = safe_key(self.name, *names_below(self.path, video_dir))
            yield Reject(key, self.name, key, "read", aside.reason, aside.detail, input=at)
            return
        video = self._video(video_dir)
        group = safe_key(self.name, *video.split("/"))
        outside = path_problem(self.path, video_dir, self.follow_links)
        if outside:  # not listed: the linked video folder is one rejected item
            yield Reject(group, self.name, group, "read", outside.reason, outside.detail, input=at)
            return
        if not fsio.exists(video_dir):  # listed from its annotations alone
            annotations = f"panomasks/{video}/" if self.layout == "vipseg" else f"joint_positions/{video}/"
            yield Reject(group, self.name, group, "read", "missing_frame",
                         f"{annotations} has no frame folder {shown_name(video)}", input=at)
            return
        files = fsio.list_files(video_dir, FRAME_SUFFIXES, links=True)
        masks: list[str] = []
        if self.layout == "vipseg":
            masks_dir = fsio.join(self.path, "panomasks", video)
            masks = fsio.list_files(masks_dir, (".png",), links=True) if fsio.exists(masks_dir) else []
            if test and not masks:  # VIPSeg withholds its test masks: one reject, not one per window
                yield Reject(group, self.name, group, "read", "unlabeled_split",
                             f"{VIPSEG_TEST_LIST} lists {shown_name(video)}: VIPSeg's test masks are withheld", input=at)
                return
        slots: dict[int, _Slot] = {}
        for what, uris in (("frame", files), ("annotation", masks)):
            for uri in uris:
                aside = set_aside_problem(self.path, uri)
                if aside:  # a Mac's `._00001.png`: never frame 1's twin
                    yield Reject(safe_key(group, fsio.basename(uri)), self.name, group, "read", aside.reason,
                                 aside.detail, input=relative_input(uri, self.path))
                    continue
                number = frame_number(uri)
                if number is None:  # its place in time is unknown: never guessed from a text sort
                    name = fsio.basename(uri)
                    yield Reject(safe_key(group, name), self.name, group, "read", f"unnumbered_{what}",
                                 f"{shown_name(name)} has no frame number in its name",
                                 input=relative_input(uri, self.path))
                    continue
                slot = slots.setdefault(number, _Slot(number, [], []))
                (slot.frames if what == "frame" else slot.masks).append(uri)
        if self.layout == "vipseg":  # sparse numbers: frames follow one another by number
            timeline = [slots[number] for number in sorted(slots)]
            present, n_frames = list(range(len(timeline))), len(timeline)
            place = timeline.__getitem__
            number_of = lambda i: timeline[i].number  # noqa: E731
        else:  # every frame numbered: a number absent is a frame missing
            base = 0 if 0 in slots else 1
            present = [number - base for number in sorted(slots)]
            n_frames = present[-1] + 1 if present else 0
            place = lambda i: slots.get(i + base)  # noqa: E731
            number_of = lambda i: i + base  # noqa: E731
        windows = windows_holding(present, n_frames, self.frames, self.stride)
        if not windows:
            yield Reject(group, self.name, group, "plan", "too_few_frames", f"{n_frames} frames < {self.frames}"
                         if n_frames < (self.frames - 1) * self.stride + 1 else
                         f"no window of {self.frames} frames at stride {self.stride} holds any of them", input=at)
            return
        points = None
        if self.layout == "jhmdb":
            try:
                points = self._points(video)
            except OutsideRoot as exc:
                yield Reject(group, self.name, group, "read", exc.reason, exc.detail, input=at)
                return
            except FileNotFoundError as exc:
                yield Reject(group, self.name, group, "read", "missing_annotation", str(exc)[:200], input=at)
                return
            except Rejected as exc:
                yield Reject(group, self.name, group, "read", exc.reason, f"joint_positions.mat: {exc.detail}", input=at)
                return
            except OSError as exc:
                yield Reject(group, self.name, group, "read", "unreadable_file",
                             f"joint_positions.mat: {type(exc).__name__}", input=at)
                return
            if len(points) > n_frames:
                # poses past the last frame file are frames missing at the clip's end: rejected as a gap is
                present, n_frames = present + list(range(n_frames, len(points))), len(points)
                windows = windows_holding(present, n_frames, self.frames, self.stride)
        widths = {len(_digits(f) or "") for slot in slots.values() for f in slot.frames}
        width = widths.pop() if len(widths) == 1 else 0  # a missing frame named as its neighbours are

        def window_at(window: Sequence[int]) -> str:
            """A window's rejects' `input`: the video's folder and its frames' numbers."""
            return f"{at} frames {number_of(window[0]):0{width}d}..{number_of(window[-1]):0{width}d}"
        for window in windows:
            key = f"{group}-s{self.stride}-f{window[0]:05d}"
            places = [place(i) for i in window]
            used = [u for p in places if p is not None for u in (*p.frames, *p.masks)]
            outside = next(filter(None, (path_problem(self.path, u, self.follow_links) for u in used)), None)
            if outside:
                yield Reject(key, self.name, group, "read", outside.reason, outside.detail,
                             input=window_at(window))
                continue
            gone = [(i, p) for i, p in zip(window, places) if p is None or not p.frames]
            if gone:
                orphans = [fsio.basename(m) for _, p in gone if p is not None for m in p.masks]
                yield Reject(key, self.name, group, "read", "missing_frame", (
                    f"no frame for {', '.join(orphans)}" if orphans else
                    f"no frame file numbered {', '.join(f'{number_of(i):0{width}d}' for i, _ in gone)}")[:200],
                             input=window_at(window))
                continue
            doubled = next((p for p in places if len(p.frames) > 1), None)
            if doubled:
                yield Reject(key, self.name, group, "read", "duplicate_frame",
                             f"frame {doubled.number}: {', '.join(fsio.basename(f) for f in doubled.frames)}"[:200],
                             input=window_at(window))
                continue
            frame_uris = tuple(p.frames[0] for p in places)  # type: ignore[union-attr]
            if self.layout == "vipseg":
                lost = [p.frames[0] for p in places if not p.masks]  # type: ignore[union-attr]
                if lost:
                    yield Reject(key, self.name, group, "read", "missing_annotation",
                                 f"no mask for {', '.join(fsio.basename(f) for f in lost)}"[:200],
                             input=window_at(window))
                    continue
                doubled = next((p for p in places if len(p.masks) > 1), None)  # type: ignore[union-attr]
                if doubled:
                    yield Reject(key, self.name, group, "read", "duplicate_annotation",
                                 f"frame {doubled.number}: {', '.join(fsio.basename(m) for m in doubled.masks)}"[:200],
                             input=window_at(window))
                    continue
                annotation = {"kind": "mask", "uris": [p.masks[0] for p in places]}  # type: ignore[union-attr]
            else:
                if window[-1] >= len(points):  # type: ignore[arg-type]
                    yield Reject(key, self.name, group, "read", "missing_annotation",
                                 f"joint_positions covers {len(points)} frames",  # type: ignore[arg-type]
                                 input=window_at(window))
                    continue
                annotation = {"kind": "pose", "skeleton": "jhmdb15",  # type: ignore[index]
                              "points": [[v for x, y in points[i] for v in (float(x), float(y), 2.0)]
                                         for i in window]}
            yield AnnotatedClipRecord(
                key=key, source=self.name, group=group, frame_uris=frame_uris,
                annotation=annotation, layout=self.sentence_layout, stride=self.stride, start=window[0],
                lineage={"video": video, "frames_total": n_frames, "frames": list(window)},
            )

    def _points(self, video: str) -> np.ndarray:
        mat = fsio.join(self.path, "joint_positions", video, "joint_positions.mat")
        if not fsio.exists(mat):
            raise FileNotFoundError(f"no joint_positions.mat for {video}")
        check_inside(self.path, mat, self.follow_links)
        try:
            data = read_input_bytes(mat, MAX_JOINTS_BYTES)  # too many open files: the machine's MachineError
        except fsio.FileTooLarge:
            raise Rejected("annotation_too_large", f"larger than {MAX_JOINTS_BYTES} bytes (a clip's poses are kilobytes)") from None
        return load_jhmdb_points(data)
