"""video2dataset's output read by the video source (`sources.video`): webdataset shards and listings.

video2dataset writes, per shard NNNNN (its `data_writer.py`): with `output_format=webdataset`
`NNNNN.tar` (webdataset's TarWriter: `{key}.mp4`, or the extension it encoded, `{key}.txt` the
caption, `{key}.json` its metadata; a failed download leaves only the `.txt` and `.json`), with
`output_format=files` a folder `NNNNN/` of the same files; and always `NNNNN.parquet` (one row per
attempted URL: `key`, `status`, `error_message`, the input's columns) and `NNNNN_stats.json`.

A tar is one unit (a big local one several: `VIDEO_PART_BYTES`), read member by member (headers
only; the data of a video is never read into memory): each video member is probed and decoded
through the same budgeted jobs as a video file, from a private temporary copy of its bytes made
for each job and removed after it (`video._worker_uri`); a member over `MAX_INPUT_FILE_BYTES` is
`member_too_large` (as in img2dataset tars), judged on its header and never copied; a `.txt` or
`.json` over it is `member_too_large` too, never read, and the video goes on without it. A video's key is
`data_key(source, shard, sample key)` (as the laion source keys img2dataset samples), its clips
`{key}-s{stride}-f{start}`; the same video given as a file keeps a file's key
(`safe_key(source, *path)`): only keys differ between the layouts, never the rendered frames.
Failed downloads the parquet lists are rejects (`download` stage, video2dataset's status as the
reason: `failed_to_download`, `failed_to_subsample`); successes it lists that the tar (or the
files layout's folder) lacks are
`missing_from_archive`; a video for a key it records as failed, or does not list though a `.json`
is beside it, is no download of its run (a killed run's left in the files layout's folder, one put
in a tar afterwards): one `stale_download` reject, never built (`stale_file`, `_sample`); a cut tar is `truncated_sample` for the sample it cuts and one
`corrupt_archive` for the shard, never a crash (too many open files or no memory reading it is
the machine's `MachineError`: the unit fails uncommitted, the shard is not blamed). A member of a sample beside its video that is none
of its sidecars (`.txt`, `.json`) nor audio video2dataset wrote (`AUDIO`) is an `unexpected_file`
reject (a `.jpg` thumbnail put in by hand), never dropped without a word. In the files layout the
videos are plain files (the `.txt`/`.json` beside them are not read); its `NNNNN.parquet` is a unit
of its own that yields the shard's failed downloads and missing videos. A parquet with neither
`NNNNN/` nor `NNNNN.tar` beside it (video2dataset's `output_format=parquet`, videos inside it) is
one `unexpected_file` reject. Gzipped tars are not read (video2dataset writes plain ones).
"""

from __future__ import annotations

import functools
import tarfile
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sources import fsio
from sources.lineage_text import lineage_value
from sources.lineage_text import CAPTION_READ_BYTES, caption_lineage
from sources.img2dataset_listing import (ShardListing, download_status, listing_rejects, missing_rejects,
                                         parse_json)
from sources.img2dataset_stale import STALE_DOWNLOAD, stale_detail
from sources.records import MAX_INPUT_FILE_BYTES, Reject, SourceItem, TarMember, data_key, nfc
from sources.paths import relative_to_root
from sources.tar_members import (MEMBER_TOO_LARGE, Sample, member_bytes, member_too_large, samples, shard_reject,
                                 split_member)
from sources.web_units import tar_units

if TYPE_CHECKING:
    from sources.video import VideoSource

TAR_SUFFIX = ".tar"
LISTING_SUFFIX = ".parquet"
SHARD_SUFFIXES = (TAR_SUFFIX, LISTING_SUFFIX)
SIDECARS = ("txt", "json")
# what video2dataset writes beside a video with `encode_formats: {audio: ...}`: part of the sample, not read
AUDIO = ("m4a", "mp3", "wav", "flac", "ogg", "opus")
# A local tar of this size or more is read as several units (`web_units.Unit.part`): each part reads
# every member header (seeking over the data) and probes and decodes only the videos whose key
# hashes to it, so a video2dataset shard (10000 videos by default, tens of GB) is committed, and
# redone after a kill, a part at a time, and its parts spread over the workers.
VIDEO_PART_BYTES = 512 << 20
MAX_VIDEO_PARTS = 64
UNEXPECTED_FILE = "unexpected_file"  # as the laion source names a file that is no input of its layout
# why a video its shard's listing records as no download of this run is there (`stale_detail`), by layout
LEFT_IN_FOLDER = ("left by an earlier, killed run of video2dataset (its rerun, --incremental_mode incremental, "
                  "redoes a shard without its _stats.json: it rewrites the listing and a failed sample's "
                  ".txt/.json, never clears the folder)")
PUT_IN_TAR = "put in the tar by hand or from another download (video2dataset writes a tar whole, with its listing)"


def is_shard_input(uri: str) -> bool:
    return uri.lower().endswith(SHARD_SUFFIXES)


def as_units(units: list[Any], root: str) -> list[Any]:
    """`units` with each tar's path made its units (parts of a big one: `VIDEO_PART_BYTES`)."""
    return [unit for u in units for unit in (tar_units(u, root, VIDEO_PART_BYTES, MAX_VIDEO_PARTS)
                                             if isinstance(u, str) and u.lower().endswith(TAR_SUFFIX) else [u])]


def without_layout_sidecars(files: list[str], readable: tuple[str, ...]) -> list[str]:
    """`files` without what video2dataset writes beside what the video source reads, parts of its
    layout rather than inputs (never rejects): a video's `.txt`/`.json` and audio (`SIDECARS`,
    `AUDIO`; the files layout's `NNNNN/key.mp4` beside `key.txt`, and there a failed download's
    `.txt`/`.json` alone, which its `NNNNN.parquet` reports) and a shard's `NNNNN_stats.json`
    (beside `NNNNN.tar` or `NNNNN.parquet`)."""
    stems = set()  # (folder, name without its extension) of each file read
    for f in files:
        if f.lower().endswith(readable):
            folder, _, name = f.rpartition("/")
            stems.add((folder, name.rpartition(".")[0]))
    shard_folders = {f[: -len(LISTING_SUFFIX)] for f in files if f.lower().endswith(LISTING_SUFFIX)}

    def sidecar(f: str) -> bool:
        folder, _, name = f.rpartition("/")
        stem, _, ext = name.rpartition(".")
        if ext.lower() in SIDECARS + AUDIO and ((folder, stem) in stems or folder in shard_folders):
            return True
        return name.endswith("_stats.json") and (folder, name[: -len("_stats.json")]) in stems

    return [f for f in files if f.lower().endswith(readable) or not sidecar(f)]


def without_shard_listings(files: list[str]) -> list[str]:
    """`files` without the parquet of each tar among them (the tar's unit reads its listing)."""
    tars = {f[: -len(TAR_SUFFIX)] for f in files if f.lower().endswith(TAR_SUFFIX)}
    return [f for f in files if not (f.lower().endswith(LISTING_SUFFIX) and f[: -len(LISTING_SUFFIX)] in tars)]


def shard_name(source: "VideoSource", uri: str) -> tuple[str, str]:
    """(the shard's name: its path below the root without the suffix, its path without the suffix)."""
    base = uri[: -len(next(s for s in SHARD_SUFFIXES if uri.lower().endswith(s)))]
    return nfc(source.relative(base)), base


def read_input(source: "VideoSource", uri: str, owns: Callable[[str], bool] | None = None) -> Iterator[SourceItem]:
    """The items of a listing or of a tar; `owns`: see `_read_tar`."""
    if uri.lower().endswith(TAR_SUFFIX):
        yield from _read_tar(source, uri, owns)
    else:
        yield from _read_listing(source, uri)


def _read_listing(source: "VideoSource", uri: str) -> Iterator[SourceItem]:
    """A files-layout shard's listing: its failed downloads, and successes its folder lacks."""
    shard, base = shard_name(source, uri)
    if not fsio.isdir(base):
        yield shard_reject(source.name, data_key(source.name, shard), "read", UNEXPECTED_FILE,
                      f"{shard}{LISTING_SUFFIX} has neither a {shard}/ folder nor a {shard}{TAR_SUFFIX} beside it "
                      "(video2dataset's output_format=parquet keeps videos inside the parquet): not read",
                      relative_to_root(source.path, uri))
        return
    listing = ShardListing.read(uri, base + "_stats.json", source.path, source.follow_links)
    yield from listing_rejects(source.name, listing, shard, relative_to_root(source.path, uri))
    present = {split_member(fsio.basename(f))[0] for f in fsio.list_files(base, source.extensions, links=True)}
    yield from missing_rejects(source.name, listing, shard, present, f"folder {shard}/",
                               relative_to_root(source.path, base) + "/")


def stale_file(source: "VideoSource", uri: str) -> str | None:
    """Why the video file `uri` in a files-layout shard folder (`NNNNN/key.mp4`, `NNNNN.parquet`
    beside the folder) is no download its listing records (`stale_detail`), else None. A killed
    video2dataset run leaves its videos in the folder; the rerun lists a URL that now fails as
    failed (and rewrites that key's .txt/.json), so the old video was built beside its row's
    `failed_to_download`: one URL both a reject and a sentence. The verdict, not the listing, is
    what the video's unit records (`listed_state`)."""
    folder, _, name = uri.rpartition("/")
    parquet = folder + LISTING_SUFFIX
    if uri == source.path or not folder or folder == source.path.rstrip("/") or not fsio.exists(parquet):
        return None
    return listed_state(parquet, source.path, source.follow_links, shard_name(source, parquet)[0], name)


@fsio.derived_input
def listed_state(parquet: str, root: str, follow_links: bool, shard: str, name: str) -> str | None:
    """`stale_file`'s verdict on the video `name` of the folder beside `parquet`: a derived input,
    so that a unit records this one value, not the listing every video of the shard consults (its
    parquet's and `_stats.json`'s states were in each video's manifest: a chmod of `00000.parquet`,
    or a column a user added to it, rendered all of the shard's videos again, 10,000 by default;
    and the `_stats.json` stood in the manifest of whichever unit parsed the listing first). The
    listing is read once per process while unchanged (`_folder_listing`); the files beside are
    judged by name, never read. Only video2dataset's listing is judged: a digit-named shard
    (`{shard_id:05d}`) whose parquet has a `status` column (a user's `clips.parquet` of YouTube
    ids beside `clips/` made every video there `stale_download`)."""
    folder = parquet[: -len(LISTING_SUFFIX)]
    if not fsio.basename(folder).isdigit():
        return None
    listing = _folder_listing(parquet, root, follow_links)
    if listing.rows and not any("status" in row for row in listing.rows.values()):
        return None  # no video2dataset listing (it always writes `status`)
    sample_key = nfc(split_member(name)[0])
    sidecars = [f"{sample_key}.{ext}" for ext in SIDECARS if fsio.exists(f"{folder}/{sample_key}.{ext}")]
    return stale_detail(listing, shard, sample_key, [nfc(name), *sidecars], LEFT_IN_FOLDER, "video2dataset")


@fsio.cached_input(maxsize=4)
def _folder_listing(parquet: str, root: str, follow_links: bool) -> ShardListing:
    """A files-layout shard's listing, which each video of its folder consults (`listed_state`)."""
    return ShardListing.read(parquet, parquet[: -len(LISTING_SUFFIX)] + "_stats.json", root, follow_links)


def _read_tar(source: "VideoSource", uri: str, owns: Callable[[str], bool] | None = None) -> Iterator[SourceItem]:
    """Every sample of a video2dataset tar, in archive order (see the module's docstring); with
    `owns` (a part of the tar), a video whose key it does not own is not probed (the caller drops
    the items of keys it does not own)."""
    shard, base = shard_name(source, uri)
    listing = ShardListing.read(base + LISTING_SUFFIX, base + "_stats.json", source.path, source.follow_links)
    yield from listing_rejects(source.name, listing, shard, relative_to_root(source.path, base + LISTING_SUFFIX))
    seen: set[str] = set()  # samples whose video was found (or cut): not missing from the archive
    tar = relative_to_root(source.path, uri)
    keep = functools.partial(_keep_member, source.name, shard, tar)
    for item in samples(uri, source.name, shard, keep, where=tar):
        if not isinstance(item, Sample):
            yield item
        elif item.cut:
            seen.add(item.key)
        else:
            yield from _sample(source, uri, shard, item.key, item.members, listing, seen, owns, item.member_name,
                               item.sizes.get("txt"))
    yield from missing_rejects(source.name, listing, shard, seen, fsio.basename(uri), tar + ":")


def _keep_member(name: str, shard: str, where: str, tar: tarfile.TarFile, info: tarfile.TarInfo, sample: Sample,
                 ext: str) -> Reject | None:
    """A sidecar's bytes (of a `.txt` past `CAPTION_READ_BYTES` its head, its size kept), any
    other member's header (`tar_members.Keep`: the data of a video is never read here); a sidecar
    over `MAX_INPUT_FILE_BYTES` is its `member_too_large` reject, never read, and the video goes on
    without it."""
    if ext not in SIDECARS:
        sample.members[ext] = info
        return None
    too_large = member_too_large(info, MAX_INPUT_FILE_BYTES)
    if too_large:
        sample.members[ext] = b""
        return shard_reject(name, data_key(name, shard, sample.key), "read", MEMBER_TOO_LARGE, too_large,
                            f"{where}:{info.name}")
    head = CAPTION_READ_BYTES if ext == "txt" and info.size > CAPTION_READ_BYTES else None
    sample.members[ext] = member_bytes(tar, info, head)  # a caption's head alone (`lineage_text`)
    if head is not None:
        sample.sizes[ext] = info.size
    return None


def _sample(source: "VideoSource", uri: str, shard: str, sample_key: str, members: dict[str, Any],
            listing: ShardListing, seen: set[str], owns: Callable[[str], bool] | None,
            named: Callable[[str], str], text_bytes: int | None = None) -> Iterator[SourceItem]:
    """A read sample's planned clips and rejects; `named` gives a member's name as the tar spells it;
    `text_bytes`: its `.txt`'s size where only its head was kept. Its lineage rides in each clip's
    sentence: its caption and URL are capped (`lineage_text`, `lineage_value`)."""
    key = data_key(source.name, shard, sample_key)
    tar = relative_to_root(source.path, uri)
    at = f"{tar}:{sample_key}"  # the sample; a member is `{tar}:{named(ext)}` (`X.MP4`, not `x.mp4`)
    videos = [e for e in members if e not in SIDECARS and f".{e}" in source.extensions]
    meta = parse_json(members.get("json"))
    if not videos:
        yield from _without_video(source, key, sample_key, members, meta, listing, at)
        return
    stale = stale_detail(listing, shard, sample_key, [named(e) for e in members], PUT_IN_TAR, "video2dataset")
    if stale:  # not its listing's download: never built, nor counted as a listed sample the tar holds
        yield shard_reject(source.name, key, "read", STALE_DOWNLOAD, stale, f"{tar}:{named(videos[0])}")
        return
    seen.add(sample_key)
    for extra in videos[1:]:
        yield shard_reject(source.name, key, "read", "duplicate_key",
                           f"{named(extra)}: key {sample_key} already has a video ({named(videos[0])})",
                           f"{tar}:{named(extra)}")
    for other in sorted(e for e in members if e not in videos and e not in SIDECARS and e not in AUDIO):
        yield shard_reject(source.name, key, "read", UNEXPECTED_FILE,
                           f"{named(other)}: not read (a sample's video, .txt, .json and audio are)",
                           f"{tar}:{named(other)}")
    info: tarfile.TarInfo = members[videos[0]]
    too_large = member_too_large(info, MAX_INPUT_FILE_BYTES)  # judged on the header: never copied out
    if too_large:
        yield shard_reject(source.name, key, "read", MEMBER_TOO_LARGE, too_large,
                           f"{relative_to_root(source.path, uri)}:{info.name}")
        return
    if owns is not None and not owns(key):  # another part's video: that part probes it
        return
    named: dict[str, Any] = {"file": nfc(info.name), "shard": shard, "sample_key": sample_key}
    named.update(caption_lineage(members.get("txt", b"").decode("utf-8", errors="replace"), text_bytes))
    url = meta.get("url") or (listing.rows.get(sample_key) or {}).get("url")
    named.update({"url": lineage_value(url)} if isinstance(url, str) and url else {})
    yield from source.planned(key, uri, named, TarMember(info.name, info.offset_data, info.size))


def _without_video(source: "VideoSource", key: str, sample_key: str, members: dict[str, Any], meta: dict,
                   listing: ShardListing, at: str = "") -> Iterator[Reject]:
    """A sample with no video member: a failed download (video2dataset writes its `.txt` and
    `.json` all the same), counted once: from the parquet's row when it lists the key (a failure
    there, or `missing_from_archive` for a success), else from the `.json`'s status."""
    if sample_key in listing.rows:
        return
    status = download_status(meta) if "status" in meta else ""
    if status and status != "success":
        yield shard_reject(source.name, key, "download", status, str(meta.get("error_message") or ""), at)
        return
    names = ", ".join(f"{sample_key}.{e}" for e in sorted(members)) or "none"
    shown = ", ".join(source.extensions[:6]) + (", ..." if len(source.extensions) > 6 else "")
    why = f"none is {sample_key} with a video extension ({shown})"  # all of them ran past the detail's cap
    dotted = [e for e in sorted(members) if "." in e and f".{e.rsplit('.', 1)[1]}" in source.extensions]
    if dotted:  # `clip.v2.mp4`: webdataset's key is `clip`, its field `v2.mp4`
        why += (f"; webdataset ends a key at its first dot, so {sample_key}.{dotted[0]} is field {dotted[0]} "
                f"of key {sample_key}, not a video")
    yield shard_reject(source.name, key, "read", "missing_video", f"members: {names} ({why})", at)
