"""The typed records that sources yield, and the stable keys they carry.

A source never decodes pixels into the pipeline's shapes; it says *what* to render (bytes or a
URI plus lineage) and, for videos, *which frames*. Every record has a stable, dot-free key
derived from the input (webdataset cuts keys at the first dot), and a `group` key that decides
the train/val split so that no group spans two splits.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Union

from sources.budget import Budget
from sources.paths import relative_to_root

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# one input file read whole; above it the bytes alone would crowd the decode's memory budget
MAX_INPUT_FILE_BYTES = 256 << 20
FILE_TOO_LARGE = "file_too_large"
# a key's length: a sentence id made of it (a video clip's adds `-s30-f000000`, a case twin's
# `-c` and 8 hex digits) and a member's `.00.png` stay within a file name's 255 bytes, which
# `tar -xf` must create. Windows' 260-character MAX_PATH is not a bound we cut to: a member name
# reaches ~230 characters only for an input named with ~150 or more, and Windows' own `tar.exe`
# (libarchive) and 7-Zip write through `\\?\` long paths; what stops at MAX_PATH is a program
# without them (Python's tarfile, for one) on a system without LongPathsEnabled, which then
# needs the shard extracted to a short folder (`C:\x\`). Cutting keys to fit a typical prefix
# (`C:\Users\name\Downloads\web-train-00000\`, 40 characters) would rename every such input's
# sentences in every build for that one case.
MAX_KEY_CHARS = 200


# errors of this machine, not of the input, met opening or reading one: too many open files (this
# process's limit, the system's), no memory. Never an input's reject: `MachineError`.
MACHINE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


class MachineError(RuntimeError):
    """An error of this machine, not of the input, met reading, planning or decoding it (a full or
    missing temporary folder, a quota, too many open files opening a tar or starting a decoder),
    raised from the OSError: the input is never blamed with a reject of its own, and the build
    stops uncommitted (`uvd_pipeline.unit_render`), as on a full output disk, so that a rerun once
    the machine is mended reads the input again. Not an OSError, so that a tar's reader, which
    takes an OSError for a cut or unreadable archive, lets it through."""


def is_machine_error(exc: BaseException) -> bool:
    """Whether `exc` is an OSError of this machine (`MACHINE_ERRNOS`), not of the input."""
    return isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS


def read_input_bytes(uri: str, limit: int = MAX_INPUT_FILE_BYTES) -> bytes:
    """An input file's bytes (`fsio.read_bytes`, at most `limit`): too many open files or no memory
    opening or reading it (`MACHINE_ERRNOS`) is this machine's `MachineError`, which no reader's
    `except OSError` takes for the file's reject (`unreadable_file`, committed for good)."""
    from sources.fsio import read_bytes

    try:
        return read_bytes(uri, limit)
    except OSError as exc:
        raise_machine_error(exc, uri)
        raise


def read_input_head(uri: str, count: int, limit: int = MAX_INPUT_FILE_BYTES) -> tuple[bytes, int]:
    """An input file's first `count` bytes and its size (`fsio.read_head`: `FileTooLarge` past
    `limit`), its machine errors as `read_input_bytes` raises them."""
    from sources.fsio import read_head

    try:
        return read_head(uri, count, limit)
    except OSError as exc:
        raise_machine_error(exc, uri)
        raise


def raise_machine_error(exc: BaseException, uri: str, verb: str = "reading") -> None:
    """Raise this machine's `MachineError` when `exc`, met `verb` `uri` (or the file the OSError
    names), is one (`is_machine_error`), for a reader whose `except OSError` would otherwise make it
    a verdict on the file."""
    from sources.fsio import basename

    if is_machine_error(exc):
        named = getattr(exc, "filename", None)
        raise MachineError(f"{verb} {basename(named if isinstance(named, str) else uri)}: {exc}") from exc


def nfc(name: str) -> str:
    """`name` in Unicode NFC, as keys and lineage hold a file name: macOS (HFS+, and copies made
    from it over SMB or NFS) hands `café` over as `cafe` + U+0301 (NFD), other systems and index
    files as one `é`; keyed raw, the same dataset copied from a Mac got other keys and other
    output bytes. Files are still opened by the name the file system gave."""
    return unicodedata.normalize("NFC", name)


def unicode_form(name: str) -> str:
    """How `name` writes its letters: `NFC`, `NFD` (as macOS names files), or `mixed`."""
    return next((form for form in ("NFC", "NFD") if unicodedata.is_normalized(form, name)), "mixed")


def twin_order(name: str) -> tuple[bool, str]:
    """The sort key of names that one key takes (`nfc`: `café` in NFC, NFD, or mixed): the one in
    NFC first (the form keys take, and how other systems name it), then by the name itself, so
    that which one is read never depends on listing order. The first is read; each other is a
    `duplicate_key` reject (`twin_detail`)."""
    return unicodedata.is_normalized("NFC", name) is False, name


def layout_twin_order(name: str, suffixes: tuple[str, ...]) -> tuple[bool, int, bool, str]:
    """The sort key of a layout's files of one stem whose extensions differ in case or kind
    (`000.png` beside a stray `000.PNG`, `x.png` beside `x.jpg`), `suffixes` in lower case and in
    the layout's order: NFC first (`twin_order`), then the extension's kind by `suffixes` in any
    case (`x.PNG` before `x.jpg`, as `.png` came first before case was judged), then the extension
    spelt as the layout spells it (lower case), then by name. By `twin_order` alone `.PNG` sorted
    before `.png`: the stray copy was read and the file the dataset ships was its `duplicate_key`."""
    lowered = name.lower()
    rank = next((i for i, suffix in enumerate(suffixes) if lowered.endswith(suffix)), len(suffixes))
    return twin_order(name)[0], rank, not name.endswith(suffixes), name


def twin_groups(uris: Iterable[str], name: Callable[[str], str],
                by: Callable[[str], str] | None = None) -> dict[str, list[str]]:
    """`uris` grouped by the key their names take (`nfc` of `by(uri)`, by default of `name(uri)`),
    the groups in the order their first uri comes, each in `twin_order` of its `name`s: where
    twins (`café` in NFC beside a Mac's NFD copy) are told apart, and the first is the one read."""
    groups: dict[str, list[str]] = {}
    for uri in uris:
        groups.setdefault(nfc((by or name)(uri)), []).append(uri)
    return {key: sorted(group, key=lambda uri: twin_order(name(uri))) for key, group in groups.items()}


def twin_detail(name: str, kept: str, how: str = "in another Unicode form") -> str:
    """The detail of the `duplicate_key` reject of `name`, a twin of `kept`, the one read."""
    return (f"{nfc(name)} ({unicode_form(name)}) is the name of {nfc(kept)} ({unicode_form(kept)}) {how}: "
            "that file is read")


def safe_key(*parts: str) -> str:
    """Join `parts` into a dot-free key; characters outside [A-Za-z0-9_-] become '_'.

    When anything had to be replaced, a short digest of the original text is appended so that
    two inputs differing only in punctuation ("a.b" vs "a_b") still get different keys. Parts are
    taken in NFC (`nfc`): a name in NFC and in NFD is one key.
    """
    parts = tuple(nfc(part) for part in parts)
    cleaned_parts = _cleaned(parts)
    cleaned = "-".join(cleaned_parts)
    if cleaned_parts != list(parts):
        raw = "\0".join(parts)  # a name that is not UTF-8 (a latin-1 tar member) keeps its bytes
        cleaned += "_" + hashlib.blake2b(raw.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    return bounded(cleaned)


def bounded(key: str) -> str:
    """`key` if it has at most `MAX_KEY_CHARS` characters, else its start and `--` with a 64-bit
    digest of the whole key, `MAX_KEY_CHARS` in all: distinct keys stay distinct (up to the
    digest), and one made of a 250-character file name or a deep folder still names a file that
    GNU tar can extract (a longer one failed with 'File name too long')."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return f"{key[: MAX_KEY_CHARS - len(digest) - 2]}--{digest}"


def _cleaned(parts: tuple[str, ...]) -> list[str]:
    return [_UNSAFE.sub("_", part).strip("_") or "_" for part in parts]


def data_key(source: str, *parts: str) -> str:
    """`safe_key(source, *parts)` made one-to-one for `parts` taken from the data (a shard name,
    a webdataset key), which may hold '-', the separator: ("cc3m", "train-0001") and
    ("cc3m-train", "0001") would both join to `src-cc3m-train-0001`.

    A key `safe_key` already marked with its digest, and a key whose parts hold no '-', is
    `safe_key`'s unchanged (those could not meet before). Clean parts holding a '-' get `--` and a
    64-bit digest of the parts: no other key holds `--` followed by 16 hex digits at its end
    (unmarked keys hold no `--`, source names no '-'; `safe_key`'s digest is `_` and 8). Not fully
    one-to-one: a clean name can spell `safe_key`'s digest (`a_b/1_9ccafe8f` is the key of `a b/1`),
    so hostile names may share a key; a reader catches the clashes it can see, and dedup and
    assembly handle the rest. Parts are taken in NFC (`nfc`).
    """
    parts = tuple(nfc(part) for part in parts)
    if not any("-" in part for part in parts) or _cleaned(parts) != list(parts):
        return safe_key(source, *parts)
    raw = "\0".join(parts).encode("utf-8", "surrogateescape")
    return bounded(f"{safe_key(source, *parts)}--{hashlib.blake2b(raw, digest_size=8).hexdigest()}")


_PLAIN_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_]*[A-Za-z0-9])?")
PLAIN_EXTENSION = "jpg"  # the one extension a plain path's key leaves out


def path_key(source: str, relative: str) -> str:
    """The key of a file at `relative` (a '/'-separated path under a source root): injective.

    A *plain* path (directories and stem of letters, digits and inner '_', one extension of up
    to 10 letters or digits) keeps the key it always had, `source-dir-stem`, with `--ext` (case
    kept) added unless the extension is `jpg`: `x.jpg` -> `s-x`, `x.png` -> `s-x--png`,
    `x.JPEG` -> `s-x--JPEG`. Plain parts hold no '-', so '-' separates them unambiguously and
    '--' only ever marks the extension. Every other path (`sub-x.jpg`, `a b.jpg`, `a.b.jpg`)
    gets its cleaned text plus `--` and a 64-bit digest of the whole relative path (16 hex
    digits, longer than any plain extension). Distinct paths thus get distinct keys; the writer
    still checks per shard. Keys over `MAX_KEY_CHARS` are cut (`bounded`). The path is taken in
    NFC (`nfc`): a name in NFC and in NFD is one key.
    """
    relative = nfc(relative)
    directory, _, base = relative.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    parts = (directory.split("/") if directory else []) + [stem]
    prefix = _UNSAFE.sub("_", source).strip("_") or "_"
    if all(_PLAIN_PART.fullmatch(p) for p in parts) and re.fullmatch(r"[A-Za-z0-9]{1,10}", ext):
        key = "-".join([prefix, *parts])
        return bounded(key if ext == PLAIN_EXTENSION else f"{key}--{ext}")
    cleaned = "-".join(_UNSAFE.sub("_", p).strip("_") or "_" for p in parts + ([ext] if ext else []))
    digest = hashlib.blake2b(relative.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return bounded(f"{prefix}-{cleaned}--{digest}")


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same on every machine, process and Python version. A
    name that is not UTF-8 (a latin-1 file name) is hashed by its bytes: encoded strictly, it raised
    UnicodeEncodeError (in the handler that makes a failed unit's reject, so the build crashed)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")


FOLDER_FILES_PER_UNIT = 256  # a folder's files per unit on average (`unit_ends_after`)
FOLDER_UNIT_MOST = 4  # times that: a unit ends there whatever its names (its cost in flight stays bounded)


def units_cut_by_name(groups: Iterable[list[str]], name_of: Callable[[list[str]], str],
                      mean: int = FOLDER_FILES_PER_UNIT, most: int = FOLDER_UNIT_MOST) -> list[tuple[str, ...]]:
    """A folder's files in units of about `mean`, ended after the group whose name (`name_of`)
    `unit_ends_after` picks, or at `most` times `mean`: one file added moves no other file's unit.
    A group (files one key is made of, or that clash) is never split between units."""
    units: list[tuple[str, ...]] = []
    chunk: list[str] = []
    for group in groups:
        chunk += group
        if len(chunk) >= most * mean or unit_ends_after(name_of(group), mean):
            units.append(tuple(chunk))
            chunk = []
    return units + [tuple(chunk)] if chunk else units


def unit_ends_after(name: str, mean: int) -> bool:
    """Whether a unit of a folder's files ends after the file (or stem) `name`, relative to the
    source's root: about one name in `mean` ends a unit, chosen by the name itself, so one file
    added or removed changes only the unit it falls in. Cut by count, every later unit's files
    shifted and a rerun rendered them all again (one image added to a 520-image folder: 3 of 3)."""
    return stable_hash("unit end", name) % max(1, mean) == 0


@dataclass(frozen=True)
class ImageRecord:
    """One image to decode. Exactly one of `data` (bytes in hand) or `uri` (fsspec URL) is set."""

    key: str
    source: str
    group: str
    data: bytes | None = None
    uri: str | None = None
    split_hint: str | None = None  # an official split from the dataset layout (ImageNet val/)
    label: str | None = None  # class id (ImageNet wnid) when the source has one
    lineage: dict[str, Any] = field(default_factory=dict)
    input: str = ""  # where bytes in hand came from (`shard.tar:member`, a parquet row): its rejects' `input`

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.uri is not None
        return read_input_bytes(self.uri)


@dataclass(frozen=True)
class TarMember:
    """A video stored inside an uncompressed tar (a video2dataset webdataset shard): its member
    name and where its bytes lie. Decoding jobs copy those bytes to a private temporary file
    (`sources.video`), so the record stays valid whatever reads the tar meanwhile."""

    name: str
    offset: int  # of the member's data in the tar
    size: int


@dataclass(frozen=True)
class VideoClipRecord:
    """One planned video sentence: which frames of which file, already validated against length."""

    key: str  # the sentence id: video key + stride + start
    source: str
    group: str  # the video key: every clip of one video lands in the same split
    uri: str
    frame_indices: tuple[int, ...]
    stride: int
    requested_stride: int
    start: int
    decoder: str  # "decord" or "pyav", fixed at planning so renders are reproducible
    lineage: dict[str, Any] = field(default_factory=dict)
    frame_times: tuple[float, ...] = ()  # presentation time of each frame, seconds from the first
    member: TarMember | None = None  # the video is this member of the tar `uri`


@dataclass(frozen=True)
class VideoRecord:
    """Every planned sentence of one video, rendered together so the file is read once."""

    key: str  # the video key
    source: str
    group: str
    uri: str
    clips: tuple[VideoClipRecord, ...]
    decoder: str
    n_frames: int  # presented frames when planned: a file that has changed since is refused
    limits: Budget = Budget()  # the source's time and memory budget for decoding this video
    member: TarMember | None = None  # the video is this member of the tar `uri`
    # the index its probe built by decoding (`sources.video_index_cache.KeptIndex`), handed to the
    # clips' decoding process so the file is decoded for its index once per build; None for most
    kept_index: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PairRecord:
    """One (image, annotation) pair of one task, before rendering.

    `annotation` holds plain values and URIs (boxes, polygons, keypoints, the URI of a depth or
    label map...); `render_pair` in the pipeline turns it into the target image. The group is
    the image, not the pair, so one image's pairs of every task share a split.
    """

    key: str
    source: str
    group: str
    task: str
    image_uri: str | None = None
    image_data: bytes | None = None
    annotation: dict[str, Any] = field(default_factory=dict)
    split_hint: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    input: str = ""  # where `image_data` came from (a tar member, a parquet row): its rejects' `input`


@dataclass(frozen=True)
class TupleRecord:
    """One image and its dense annotations of several tasks, matched by file stem."""

    key: str
    source: str
    group: str
    uris: tuple[tuple[str, str], ...]  # (task, uri), the image first
    formats: tuple[tuple[str, str], ...] = ()  # (task, map format) where the task needs one
    split_hint: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MultiViewRecord:
    """One object's views, already ordered by azimuth: a whole multi-view sentence."""

    key: str  # the sentence id
    source: str
    group: str  # the object or sequence: all its views share a split
    view_uris: tuple[str, ...]
    azimuths_deg: tuple[float, ...]
    lineage: dict[str, Any] = field(default_factory=dict)
    split_hint: str | None = None  # the official split when the layout has one (CO3D's set lists)


@dataclass(frozen=True)
class AnnotatedClipRecord:
    """Frames of one video with a per-frame annotation, laid out as one sentence."""

    key: str  # the sentence id: video + stride + start
    source: str
    group: str  # the video
    frame_uris: tuple[str, ...]
    annotation: dict[str, Any]  # {"kind": "mask", "uris": [...]} or {"kind": "pose", "skeleton", "points"}
    layout: str  # interleaved | separated
    stride: int = 1
    start: int = 0
    lineage: dict[str, Any] = field(default_factory=dict)
    split_hint: str | None = None  # the official split when the layout has one (VIPSeg's lists, JHMDB's splits/)


@dataclass(frozen=True)
class Reject:
    """An input that did not become (part of) a sentence, and why. Never dropped silently."""

    key: str
    source: str
    group: str
    stage: str  # read, download, plan, decode, render, annotation, dedup, assemble, write: docs/rejects.md
    reason: str  # short stable code: truncated, not_an_image, too_few_frames, ...
    detail: str = ""
    split_hint: str | None = None  # the official split when the layout has one
    input: str = ""  # where the input lies, as a user finds it (`input_text`): the key is cleaned

    def as_row(self) -> dict[str, str]:
        return {
            "key": self.key,
            "source": self.source,
            "stage": self.stage,
            "reason": self.reason,
            "input": input_text(self.input),
            "detail": clean_detail(self.detail),
        }

    def located(self, where: str) -> "Reject":
        """This reject naming `where` as its input, unless it already names one."""
        return self if self.input or not where else replace(self, input=where)


MAX_INPUT_CHARS = 1024  # a reject's `input` longer than this keeps its start and end (`input_text`)
INPUT_CUT = " ... "


def input_text(where: str) -> str:
    """A reject's `input` as the rejects file holds it: UTF-8 text that reads back to the name's
    bytes (`input_name`): a '\\' doubled, each byte of a name that is not UTF-8 (a latin-1 tar
    member) as `\\xNN`. A longer one than `MAX_INPUT_CHARS` keeps its start and its end (the file's
    own name) around `INPUT_CUT`, so a reject line stays bounded whatever a path holds."""
    text = _SURROGATE.sub(_escaped, where.replace("\\", "\\\\"))
    if len(text) <= MAX_INPUT_CHARS:
        return text
    half = (MAX_INPUT_CHARS - len(INPUT_CUT)) // 2
    return text[:half] + INPUT_CUT + text[-half:]


_INPUT_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def input_name(text: str) -> str:
    """The name an `input_text` stands for, with each escaped byte back as Python's `os` holds it
    (`os.fsencode` gives the bytes on disk)."""
    def back(match: re.Match) -> str:
        code = match.group(1)
        if code == "\\":
            return "\\"
        return chr(0xDC00 + int(code[1:], 16)) if code[0] == "x" else chr(int(code[1:], 16))
    return _INPUT_ESCAPE.sub(back, text)


def relative_input(uri: str | None, root: str) -> str:
    """`uri` as a path under the source's `root` ('/'-separated), or `uri` itself when it lies
    elsewhere (another root a config names), as `sources.paths.relative_to_root` has it."""
    if not uri:
        return ""
    if uri == root.rstrip("/"):  # a source whose path is the file itself (one video): its name
        return uri.rsplit("/", 1)[-1]
    return relative_to_root(root, uri) if root.rstrip("/") else uri


def folder_input(uri: str, root: str, folder: str) -> str:
    """`uri` as a path under the source's `root`, or, when `folder` (a config field's folder, as
    COCO's or MPII's `images_dir` given as an absolute path) holds it outside the root, as the
    folder's own name and the path below it (`val2017/000000013551.jpg`): never the machine's
    folders above it, which named no file a user of the rejects file could tell apart."""
    root, folder = root.rstrip("/"), folder.rstrip("/")
    inside_root = bool(root) and uri.startswith(root + "/")
    if not inside_root and folder and uri.startswith(folder + "/"):
        return folder.rsplit("/", 1)[-1] + uri[len(folder):]
    return relative_input(uri, root)


_VOLATILE = (
    (re.compile(r"\[\d{2}:\d{2}:\d{2}\] ?"), ""),  # log timestamps some decoders put in messages
    (re.compile(r" at 0x[0-9a-fA-F]+"), ""),  # object addresses in reprs
    # bytes reprs that library messages embed (numpy quotes a bad .npy's magic, float() a
    # bad number): input bytes never reach a published reject file
    (re.compile(r"""\bb(?:'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?)"""), "<bytes>"),
)


def clean_detail(text: str) -> str:
    """A reject's detail without run-specific noise or quoted input bytes, so reject files are
    reproducible and publish nothing of the input's content; UTF-8 text (`name_text`)."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return name_text(text)


def name_text(name: str) -> str:
    """`name` as text every UTF-8 writer takes. A file name that is not UTF-8 (latin-1 bytes from an
    old archive or camera) reaches Python with each such byte as a lone surrogate (`os`'s
    surrogateescape), which no UTF-8 encoder, JSON file or Beam string coder takes: each is shown as
    the escape of its byte (`caf\\xe9.jpg`) instead, any other lone surrogate as `\\udxxx`."""
    return _SURROGATE.sub(_escaped, name)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def texts_of(value: Any) -> Any:
    """`value` (JSON-like lineage) with every string, key or value, made `name_text`."""
    if isinstance(value, str):
        return name_text(value)
    if isinstance(value, dict):
        return {texts_of(k): texts_of(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [texts_of(v) for v in value]
    return value


def record_input(record: Any, root: str) -> str:
    """Where a record's input lies under its source's `root`, as its rejects name it (`Reject.input`):
    an image's file or `shard.tar:member`, a video's file (with its tar member) and a clip's time span,
    a pair's or tuple's image, a multi-view object's or annotated clip's folder (with its frames)."""
    if isinstance(record, ImageRecord):
        return record.input or relative_input(record.uri, root)
    if isinstance(record, (VideoClipRecord, VideoRecord)):
        where = relative_input(record.uri, root) + (f":{record.member.name}" if record.member else "")
        if isinstance(record, VideoClipRecord) and record.frame_times:
            where += f" at {record.frame_times[0]:.3f}-{record.frame_times[-1]:.3f}s"
        return where
    if isinstance(record, PairRecord):
        return record.input or relative_input(record.image_uri, root) or str(record.lineage.get("file") or "")
    if isinstance(record, TupleRecord):
        return relative_input(record.uris[0][1], root) if record.uris else ""
    if isinstance(record, MultiViewRecord):
        return _folder_of(record.view_uris, root)
    if isinstance(record, AnnotatedClipRecord):
        if not record.frame_uris:
            return ""
        first, last = (relative_input(u, root).rpartition("/")[2] for u in (record.frame_uris[0], record.frame_uris[-1]))
        return f"{_folder_of(record.frame_uris, root)} frames {first}..{last}"
    return ""


def _folder_of(uris: tuple[str, ...], root: str) -> str:
    """The folder under `root` that holds all of `uris` (an object's views, a clip's frames)."""
    if not uris:
        return ""
    common = os.path.commonprefix([relative_input(u, root).split("/")[:-1] for u in uris])  # folder by folder
    return "/".join(common) + "/" if common else "./"


SourceItem = Union[ImageRecord, VideoClipRecord, VideoRecord, PairRecord, TupleRecord, MultiViewRecord,
                   AnnotatedClipRecord, Reject]
