"""Whether a source's `type` fits what its `path` holds, judged from a bounded glance.

Every reader takes what it finds: a web source reads any folder of images (a COCO tree, CO3D's
frames, an ImageNet download), the video source any `NNNNN.tar` (an img2dataset download), the
Objaverse reader any folder of folders. A wrong `type` then built 0 sentences or thousands of
rejects, and `check` said "config OK". This module looks at the path's top folder and a few of
its sub-folders (at most `TOP_ENTRIES` and `SUB_ENTRIES` names each, `SUB_FOLDERS` folders, the
first members of one tar, the first 21 bytes of a few `.webp` files: never a full walk, never a decode) for the marks each published layout
leaves, and names the type that fits when the configured one's marks are absent. A folder that
holds marks of both (images beside videos) fits both.

A false refusal of a real dataset costs more than a misfit passing, so web-vs-video is refused on
strong evidence alone: the media at the path's own level (or in its first shard tar) are all of
the other kind and nothing of the configured kind is seen anywhere in the glance; never from a
listing cut at its bound (what is absent from it may lie past it), nor while the top holds folders
the glance could not see into (`unseen`). `synthetic` and `pseudo_labeled` make tasks from any image:
only the marks of non-photo folders (`NON_PHOTO`) refuse them. An fsspec listing comes whole
(`fs.ls` fetches every name of a folder), so it is judged whole. `layout_check: false` on a
source skips the judgement (`uvd_pipeline.unit_render.list_units`)."""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from itertools import islice

from sources import fsio
from sources.img2dataset_listing import LISTING_SUFFIXES, WORK_FOLDER
from sources.paths import set_aside
from sources.video import VIDEO_EXTENSIONS
from sources.video_webp import ANIMATION_FLAG
from sources.web_samples import IMAGE_EXTENSIONS
from transforms.headers import GIF_SIGNATURES

TOP_ENTRIES = 2000  # names read from the path's own folder (a 1M-file folder: its first 2000)
SUB_ENTRIES = 200  # names read from each sub-folder looked into
SUB_FOLDERS = 8  # sub-folders looked into (the named ones of `LOOK_INTO` first)
TAR_MEMBERS = 8  # headers read from the first shard tar
LOOK_INTO = ("annotations", "train", "val", "training")  # where COCO's, MPII's, ImageNet's and KITTI's marks lie
STATS_BYTES = 65536  # read of the first `NNNNN_stats.json` (img2dataset's is ~400 bytes)
IMG2DATASET_STAT = "failed_to_resize"  # img2dataset's stats count it; video2dataset's `failed_to_subsample`
DATASET_CARD = "README.md"  # a Hugging Face dataset repo's card
WEBP_HEADS = 8  # `.webp` files whose first bytes are read: a web crawl's still images share the name
WEBP_HEAD_BYTES = 21  # RIFF, size, WEBP, VP8X, its size, its flags

WEB_TYPES = ("laion", "synthetic", "pseudo_labeled")  # readers of web images (`sources.web_reader`)
ANY_IMAGE_TYPES = ("synthetic", "pseudo_labeled")  # make tasks from any image: a photo dataset's root too
NON_PHOTO = ("co3d", "segmentation", "multitask", "annotated_video", "stereo")  # frames, label maps, renders
MEDIA_FOLDERS = ("videos", "video", "clips", "images", "photos")  # named for what they hold
SIDECARS = (".txt", ".json", ".csv")  # what video datasets keep beside their clips (captions, metadata, labels)
IMAGES = tuple(f".{e}" for e in IMAGE_EXTENSIONS)
SHARD = re.compile(r"\d+(\.tar|\.tar\.gz|\.tgz|\.parquet|_stats\.json)?")  # img2dataset's / video2dataset's names
WNID = re.compile(r"n\d{8}(\.tar)?")
COCO_INDEX = re.compile(r"(instances|person_keypoints)_.+\.json")
VIEW_CAMERA = re.compile(r"\d{3}\.npy")


@dataclass
class Glance:
    """Names seen: the top folder's (name -> is a folder) and each looked-into sub-folder's."""

    top: dict[str, bool]
    sub: dict[str, dict[str, bool]] = field(default_factory=dict)
    tar: str = ""  # the first shard tar's name, whose first members `tar_members` are
    tar_members: list[str] = field(default_factory=list)
    cut: bool = False  # a listing stopped at its bound: what it lacks may lie past it
    stats: str = ""  # the first `NNNNN_stats.json`'s name, whose top-level keys `stats_keys` are
    stats_keys: frozenset[str] = frozenset()
    animated_webp: frozenset[str] = frozenset()  # `.webp` names (under their sub-folder) read as animations


def _entries(path: str, limit: int) -> tuple[dict[str, bool], bool] | None:
    """Names of a folder with whether each is a folder (links judged by their target), and whether
    the listing was cut: a local folder's first `limit`; an fsspec folder's all, as `fs.ls` fetched
    them anyway. None when it is no folder or cannot be listed (the reader then says why)."""
    local = fsio.local_path(path)
    try:
        if local is not None:
            with os.scandir(local) as listing:
                names = {e.name: e.is_dir() for e in islice(listing, limit)}
                return names, next(listing, None) is not None
        fs, inner = fsio.filesystem(path)
        return {fsio.basename(e["name"].rstrip("/")): e["type"] == "directory"
                for e in fs.ls(inner, detail=True)}, False
    except (OSError, ValueError, ImportError):
        return None


def _json_keys(uri: str) -> frozenset[str]:
    """The top-level keys of a small JSON object file (its first `STATS_BYTES`); none when it is
    no such file (a fifo or device is never opened)."""
    try:  # one ranged read; a fifo or device refused unopened, a folder an OSError
        value = json.loads(fsio.head_bytes(uri, STATS_BYTES))
    except (OSError, ValueError, UnicodeDecodeError):
        return frozenset()
    return frozenset(value) if isinstance(value, dict) else frozenset()


def _is_animation(uri: str) -> bool:
    """Whether a `.webp` file is a video: its VP8X chunk declares an animation, or it is no WebP at
    all (a GIF saved as `.webp`: the video reader sniffs it). A still WebP is an image."""
    try:  # one ranged read (a remote file's read-ahead would fetch 5 MiB); a fifo or device never opened
        head = fsio.head_bytes(uri, WEBP_HEAD_BYTES)
    except (OSError, ValueError):
        return False
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return head[:6] in GIF_SIGNATURES
    return head[12:16] == b"VP8X" and len(head) == WEBP_HEAD_BYTES and bool(head[20] & ANIMATION_FLAG)


def _animated_webp(path: str, listings: dict[str, dict[str, bool]]) -> frozenset[str]:
    """Of the first `WEBP_HEADS` `.webp` files of the listings (by folder: "" the top), those that
    are animations (`_is_animation`), named as `video_mark` names them."""
    names = [where + n for where, entries in listings.items() for n in sorted(_files(entries, (".webp",)))]
    return frozenset(n for n in names[:WEBP_HEADS] if _is_animation(fsio.join(path, n)))


def _tar_members(uri: str) -> list[str]:
    """The first member names of a plain tar (headers only; a fifo or device is never opened)."""
    try:
        fsio.refuse_special(uri)  # a fifo or device never opened (`NotAFile`, an OSError)
        fs, inner = fsio.filesystem(uri)
        with fs.open(inner, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            return [m.name for m in islice(tar, TAR_MEMBERS)]
    except (OSError, tarfile.TarError, ValueError, EOFError):
        return []


def glance(path: str) -> Glance | None:
    """What `path` holds, bounded (see the module's docstring); None when it is no folder."""
    listed = _entries(path, TOP_ENTRIES)
    if listed is None:
        return None
    top, cut = listed
    folders = sorted(n for n, is_dir in top.items() if is_dir and not n.startswith("."))
    chosen = [n for n in LOOK_INTO if n in top and top[n]] + [n for n in folders if n not in LOOK_INTO]
    sub = {}
    for name in chosen[:SUB_FOLDERS]:
        listed = _entries(fsio.join(path, name), SUB_ENTRIES)
        if listed is not None:
            sub[name], sub_cut = listed
            cut = cut or sub_cut
    tars = sorted(n for n, is_dir in top.items() if not is_dir and SHARD.fullmatch(n) and n.endswith(".tar"))
    members = _tar_members(fsio.join(path, tars[0])) if tars else []
    stats = sorted(n for n, is_dir in top.items() if not is_dir and SHARD.fullmatch(n) and n.endswith("_stats.json"))
    keys = _json_keys(fsio.join(path, stats[0])) if stats else frozenset()
    animated = _animated_webp(path, {"": top, **{f"{s}/": e for s, e in sub.items()}})
    return Glance(top, sub, tars[0] if tars else "", members, cut, stats[0] if stats else "", keys, animated)


def _files(entries: dict[str, bool], suffixes: tuple[str, ...]) -> list[str]:
    return [n for n, is_dir in entries.items() if not is_dir and n.lower().endswith(suffixes)]


def dataset_marks(g: Glance) -> list[tuple[str, str]]:
    """(type, the mark seen) of each annotated layout whose mark the glance holds."""
    marks = []
    coco = [n for n in g.sub.get("annotations", {}) if COCO_INDEX.fullmatch(n)]
    if coco:
        marks.append(("coco", f"annotations/{sorted(coco)[0]}"))
    imagenet = sorted(n for n in g.top if n.startswith(("LOC_synset_mapping", "LOC_val_solution"))
                      or n in ("ILSVRC", "ILSVRC2012_devkit_t12"))
    imagenet += [f"{s}/{n}" for s in ("train", "val") for n in sorted(g.sub.get(s, {})) if WNID.fullmatch(n)][:1]
    imagenet += sorted(n for n, is_dir in g.top.items() if not is_dir and WNID.fullmatch(n))[:1]
    if imagenet:
        marks.append(("imagenet", imagenet[0]))
    co3d = sorted(f"{s}/frame_annotations.jgz" for s, names in g.sub.items() if "frame_annotations.jgz" in names)
    if co3d:
        marks.append(("co3d", co3d[0]))
    objaverse = sorted(f"{s}/{n}" for s, names in g.sub.items() for n in names if VIEW_CAMERA.fullmatch(n))
    if objaverse:
        marks.append(("objaverse", objaverse[0]))
    mpii = sorted(n for n in g.sub.get("annotations", {}) if n.startswith("mpii_") and n.endswith(".json"))
    if mpii:
        marks.append(("mpii", f"annotations/{mpii[0]}"))
    stereo = sorted(n for n in g.sub.get("training", {}) if n in ("disp_noc_0", "disp_occ_0", "disp_noc", "disp_occ"))
    if stereo:
        marks.append(("stereo", f"training/{stereo[0]}"))
    labels = sorted(n for n in ("ADEChallengeData2016", "gtFine", "SegmentationClass") if g.top.get(n))
    if labels:
        marks.append(("segmentation", f"{labels[0]}/"))
    domains = sorted(f"{s}/{d}" for s, names in g.sub.items() if names.get("rgb")
                     for d in ("normal", "depth_zbuffer", "edge_occlusion", "segment_semantic") if names.get(d))
    if domains:
        marks.append(("multitask", domains[0] + "/"))
    clips = sorted(n for n in ("panomasks", "joint_positions") if g.top.get(n))
    if clips:
        marks.append(("annotated_video", f"{clips[0]}/"))
    return marks


def _videos(g: Glance, where: str, entries: dict[str, bool]) -> list[str]:
    """The video files of a listing, sorted: a `.webp` only when read as an animation (a crawl's
    still WebP images are no video mark)."""
    return sorted(n for n in _files(entries, VIDEO_EXTENSIONS)
                  if not n.lower().endswith(".webp") or where + n in g.animated_webp)


def video_mark(g: Glance) -> str | None:
    """A video file at the top or one folder down (an animated `.webp`), or a video in the first
    shard's members."""
    for where, entries in (("", g.top), *((f"{s}/", e) for s, e in g.sub.items())):
        videos = _videos(g, where, entries)
        if videos:
            return where + videos[0]
    videos = [m for m in g.tar_members if m.lower().endswith(VIDEO_EXTENSIONS)]
    return f"{g.tar} holding {videos[0]}" if videos else None


def web_mark(g: Glance) -> str | None:
    """An image at the top, a shard tar holding images, an img2dataset listing or `_tmp/`, parquet
    files: the shapes a web source reads at its root."""
    images = sorted(_files(g.top, IMAGES))
    if images:
        return images[0]
    pictures = [m for m in g.tar_members if m.lower().endswith(IMAGES)]
    stats = sorted(n for n in g.top if n.endswith("_stats.json"))
    if pictures:
        return f"{g.tar} holding {pictures[0]}" + (f" beside {stats[0]} (img2dataset output)" if stats else "")
    listings = sorted(n for n in g.top if n.endswith(LISTING_SUFFIXES) or n == WORK_FOLDER)
    if listings and not video_mark(g):
        return listings[0]
    return None


def _is_listing(mark: str) -> bool:
    return mark.endswith((*LISTING_SUFFIXES, WORK_FOLDER))


def web_like(g: Glance) -> str | None:
    """Anything a web source reads, anywhere in the glance: an image at the top or one folder down,
    a parquet file one folder down or at the top (but a shard's listing beside video shards:
    video2dataset's), a shard tar holding images, an img2dataset listing, a dataset card (a
    Hugging Face repo's `README.md`: its parquet files may lie deeper)."""
    found = [web_mark(g), *sorted(n for n in _files(g.top, (*IMAGES, ".parquet")) if not SHARD.fullmatch(n)),
             *sorted(f"{s}/{n}" for s, e in g.sub.items() for n in _files(e, (*IMAGES, ".parquet"))),
             *(DATASET_CARD,) * (g.top.get(DATASET_CARD) is False)]
    return next((mark for mark in found if mark), None)


def top_videos(g: Glance) -> str | None:
    """A video at the path's own level or among the first shard tar's members."""
    videos = _videos(g, "", g.top)
    if videos:
        return videos[0]
    videos = [m for m in g.tar_members if m.lower().endswith(VIDEO_EXTENSIONS)]
    return f"{g.tar} holding {videos[0]}" if videos else None


def _other_file(name: str, clips: list[str]) -> bool:
    """Whether a looked-into folder's file is neither one of its clips, a clip's sidecar (`SIDECARS`)
    nor an operating system's or tool's leftover: a file an image source may read (a camera's
    `.MPO`, a `.jfif`, `.jpe`, a `.jpg_large`, a name without an extension, an `.apng` either reader
    takes) or anything unknown, which the refusal must not overrule."""
    if name in clips:
        return name.lower().endswith(".apng")  # the web reader decodes it too, as it does a GIF
    return not (name.lower().endswith(SIDECARS) or set_aside(name))


def class_folder_clips(g: Glance) -> str | None:
    """A clip in the first looked-into folder of a tree of class folders of clips (Kinetics',
    UCF101's, Something-Something's `train/<class>/<clip>.mp4`): the top holds folders, every one
    looked into holds clips and no folder (what lies deeper was not seen), every file in them is a
    clip or a clip's sidecar (`_other_file`: photos of an extension no list names, a 3DS's `.MPO`
    beside its `.AVI` clips, were refused), and no image, parquet, card or tar shows anywhere. Those
    folders are a sample of the classes and their first `SUB_ENTRIES` names a sample of each: clips
    alone in every one is the evidence, a cut listing no bar to it. A top folder listed to its bound
    is (files past it may be images)."""
    if len(g.top) >= TOP_ENTRIES or not g.sub or web_like(g) or top_videos(g):
        return None
    if any(is_dir for entries in g.sub.values() for is_dir in entries.values()):
        return None
    if _files(g.top, (".tar", ".tar.gz", ".tgz")):
        return None
    clips = {s: _videos(g, f"{s}/", e) for s, e in sorted(g.sub.items())}
    if not all(clips.values()):
        return None
    if any(_other_file(name, clips[s]) for s, entries in g.sub.items() for name in entries):
        return None
    first = next(iter(clips))
    return f"{first}/{clips[first][0]} (clips in each of the {len(clips)} class folders looked into)"


def top_images(g: Glance) -> str | None:
    """An image at the path's own level or a shard tar holding images (a listing is no image:
    video2dataset writes `_stats.json` and parquet too); or img2dataset's own stats file."""
    web = web_mark(g)
    if web and not _is_listing(web):
        return web
    if IMG2DATASET_STAT in g.stats_keys:
        return f"{g.stats} (img2dataset's stats: {IMG2DATASET_STAT})"
    return None


def unseen(g: Glance) -> str | None:
    """What may hold media the glance did not see: a top folder not looked into, a folder within a
    looked-into one, a dataset card, a folder named for media, a tar it did not open. Absence of a
    kind cannot be shown then."""
    folders = sorted(n for n, is_dir in g.top.items() if is_dir and not n.startswith("."))
    named = [n for n in folders if n.lower() in MEDIA_FOLDERS]
    missed = [n for n in folders if n not in g.sub]
    deeper = [f"{s}/{n}" for s in sorted(g.sub) for n, is_dir in sorted(g.sub[s].items()) if is_dir]
    card = [DATASET_CARD] * (g.top.get(DATASET_CARD) is False)
    # a tar not opened (webdataset's `train-000000.tar`, any name but img2dataset's digits) may hold either
    tars = sorted(n for n in _files(g.top, (".tar", ".tar.gz", ".tgz")) if n != g.tar)
    return next(iter(named + missed + deeper + card + tars), None)


def misfit(source_type: str, path: str) -> str | None:
    """Why `source_type` does not fit what `path` holds, naming the type that does; None when it
    fits, when another type's marks are not seen either, or when `path` is no folder."""
    g = glance(path)
    if g is None:
        return None
    marks = dataset_marks(g)
    video = video_mark(g)
    web = web_mark(g)
    if source_type in WEB_TYPES:
        if web:
            return None
        if source_type in ANY_IMAGE_TYPES:
            marks = [(kind, mark) for kind, mark in marks if kind in NON_PHOTO]
            if marks:
                return _message(source_type, path, *marks[0], " (to make its tasks from the images alone, set "
                                "path: <the images folder>)")
        if marks:
            kind, mark = marks[0]
            return _message(source_type, path, kind, mark, " (to read its images alone as web images, point path at "
                            "the folder holding them)")
        clips = top_videos(g)
        if clips and not g.cut and not web_like(g) and not unseen(g):
            return _message(source_type, path, "video", clips)
        classes = class_folder_clips(g)
        return _message(source_type, path, "video", classes) if classes else None
    if source_type == "video":
        if video or g.cut:
            return None
        if marks:
            return _message(source_type, path, *marks[0])
        # a shard whose first members are failed downloads (`.txt`, `.json`) shows no video
        other = top_images(g)
        return _message(source_type, path, "laion", other) if other and not unseen(g) else None
    own = [mark for kind, mark in marks if kind == source_type] or ("frame_annotations.jgz" in g.top) * [source_type]
    if own or source_type not in ("co3d", "objaverse"):
        # the other readers find their own index files and folders and name what they lack (COCO
        # exports name theirs in `annotation_files`, beside the images: no mark of their own here)
        return None
    others = [(kind, mark) for kind, mark in marks if kind != source_type]
    if others:
        return _message(source_type, path, *others[0])
    if web:
        return _message(source_type, path, "laion", web)
    if video:
        return _message(source_type, path, "video", video)
    return None


def _message(source_type: str, path: str, kind: str, mark: str, hint: str = "") -> str:
    return (f"type: {source_type}, but {path} holds {mark}, the layout of type: {kind}, and no mark of "
            f"{source_type}'s (docs/layouts.md); did you mean type: {kind}?{hint}")
