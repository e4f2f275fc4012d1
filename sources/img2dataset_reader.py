"""Reading img2dataset's shards in its three layouts: a webdataset tar (whole, or the part of a
big one a unit owns), an `output_format=files` folder, an `output_format=parquet` file with the
images; each checked against the shard's listing (its failed downloads, the successes the shard
lacks, the bytes img2dataset hashed)."""

from __future__ import annotations

import functools
import math
import tarfile
from typing import Any, Callable, Iterator

from sources import fsio, hf_parquet
from sources.lineage_text import CAPTION_READ_BYTES, lineage_value
from sources.img2dataset_listing import (CAPTION_CELLS, HASH_MISMATCH, ShardListing, download_status, hash_problem,
                                         listing_rejects, missing_rejects, parse_json, recorded_hash, shard_of)
from sources.img2dataset_stale import LEFT_IN_FOLDER, PUT_IN_TAR, STALE_DOWNLOAD, stale_detail
from sources.paths import collapse_set_aside, folder_link_problem, path_problem, relative_to_root
from sources.records import MAX_INPUT_FILE_BYTES, ImageRecord, Reject, SourceItem, data_key, nfc, read_input_bytes
from sources.tar_members import (MEMBER_TOO_LARGE, Sample, member_bytes, member_too_large, samples, split_member,
                                 tar_mode)
from sources.parquet_columns import stored_image_column as _image_column
from sources.web_reader import WebReader, row_lists as _row_lists
from sources.web_samples import (SAMPLE_SIDECARS, image_members as _image_members, sample_classes as _classes,
                                 sample_lineage, sample_pictures as _pictures, utf8_text)

# each value recorded capped as a parquet row's: a document's json (550 KiB) rode whole in the
# lineage of each of its images (500 of them: 269 MiB)
_lineage = functools.partial(sample_lineage, value=lineage_value)


# a sample's members are held until its last one (its `.json` may come last; each image's lineage
# and hash check take it): at most this many bytes, as their headers declare, judged before each is
# read; past it, `SAMPLE_TOO_LARGE` (2,000 images of 250 KB in one document peaked at 544 MiB)
MAX_SAMPLE_BYTES = MAX_INPUT_FILE_BYTES
SAMPLE_TOO_LARGE = "sample_too_large"


class Img2datasetReader(WebReader):
    """The items of one img2dataset shard, by its layout (`LaionSource.read` picks the reader)."""

    def _read_tar(self, uri: str, owns: Callable[[str], bool] | None = None) -> Iterator[SourceItem]:
        """Every item of a tar; with `owns` (a part of the tar), samples whose key it does not own
        are read as usual but not made records (the caller drops their items)."""
        shard, base = shard_of(uri)
        listing = ShardListing.read(base + ".parquet", base + "_stats.json", self.path, self.follow_links)
        yield from listing_rejects(self.name, listing, shard, self._at(base + ".parquet"))
        tar = self._at(uri)
        problem = path_problem(self.path, uri, self.follow_links)
        if problem:  # a link out of the root, or a fifo: never opened; one reject for what it holds
            yield self._reject(self._shard_key(shard), "read", problem.reason, problem.detail, where=tar)
            return
        seen: set[str] = set()  # keys whose sample has been yielded (or rejected whole, or cut short)
        keep = functools.partial(self._keep_member, shard, owns, tar)
        for item in samples(uri, self.name, shard, keep, lambda handle: _read_mode(handle, owns), tar):
            if not isinstance(item, Sample):
                yield item
                continue
            stale = None if item.cut or item.dropped else \
                stale_detail(listing, shard, item.key, [item.member_name(e) for e in item.members], PUT_IN_TAR)
            if stale:  # not its listing's download: not built, nor counted as the listed sample it lacks
                images = _image_members(item.members) or sorted(item.members)
                yield self._reject(self._key(shard, item.key), "read", STALE_DOWNLOAD, stale,
                                   where=f"{tar}:{item.member_name(images[0])}")
                continue
            if not (item.cut or item.dropped) and (owns is None or owns(self._key(shard, item.key))):
                yield from self._sample(shard, item.key, item.members, listing, tar, item.member_name,
                                        item.sizes.get("txt"))
            seen.add(item.key)
        yield from missing_rejects(self.name, listing, shard, seen, fsio.basename(uri), tar + ":")

    def _keep_member(self, shard: str, owns: Callable[[str], bool] | None, where: str, tar: tarfile.TarFile,
                     info: tarfile.TarInfo, sample: Sample, ext: str) -> Reject | None:
        """A member's bytes (`tar_members.Keep`), of a `.txt` past `CAPTION_READ_BYTES` its head
        alone; one over `MAX_INPUT_FILE_BYTES`, or that would take its sample past
        `MAX_SAMPLE_BYTES`, drops its sample whole, never read into memory (what the sample kept is
        let go); a sample another part owns keeps b"" (that part reads it)."""
        too_large = member_too_large(info, MAX_INPUT_FILE_BYTES)
        if too_large:
            sample.dropped = True
            return self._reject(self._key(shard, sample.key), "read", MEMBER_TOO_LARGE, too_large,
                                where=f"{where}:{info.name}")
        if owns is not None and not owns(self._key(shard, sample.key)):
            sample.members[ext] = b""
            return None
        head = CAPTION_READ_BYTES if ext == "txt" and info.size > CAPTION_READ_BYTES else None
        if sample.kept_bytes + (head or info.size) > MAX_SAMPLE_BYTES:
            sample.dropped = True
            sample.members = dict.fromkeys(sample.members, b"")  # its bytes let go, its members' names kept
            return self._reject(self._key(shard, sample.key), "read", SAMPLE_TOO_LARGE,
                                f"key {sample.key}: its members pass the {MAX_SAMPLE_BYTES} byte budget of one sample "
                                f"at {info.name} ({len(sample.members) + 1} members, {sample.kept_bytes + info.size} "
                                "bytes): not read; write a document's images as samples of their own, or fewer in "
                                "each", where=f"{where}:{info.name}")
        sample.members[ext] = member_bytes(tar, info, head)
        sample.kept_bytes += head or info.size
        if head is not None:  # a caption's head, never its whole (`lineage_text`): its size said
            sample.sizes[ext] = info.size
        return None

    def _sample(self, shard: str, sample_key: str, members: dict[str, bytes], listing: "ShardListing", tar: str,
                named: Callable[[str], str], text_bytes: int | None = None) -> Iterator[SourceItem]:
        """A read sample's record and rejects; `named` gives a member's name as the tar spells it;
        `text_bytes`: its `.txt` member's size where only its head was kept."""
        key = self._key(shard, sample_key)
        at = f"{tar}:{sample_key}"  # the sample; a member is `{tar}:{named(ext)}` (`X.JPG`, not `x.jpg`)
        images = _image_members(members)
        if not images:
            yield self._reject(key, "read", "missing_image", f"members: {', '.join(sorted(members)) or 'none'}",
                               where=at)
            return
        pictures, twins = _pictures(images)
        for extra in twins:
            yield self._reject(key, "read", "duplicate_key",
                               f"{named(extra)}: key {sample_key} already has an image ({named(pictures[0])})",
                               where=f"{tar}:{named(extra)}")
        yield from self._unexpected_members(key, members, images, named, lambda ext: f"{tar}:{named(ext)}")
        # the sample's json and lineage made once, not for each of a document's (500) images
        recorded = {**(listing.rows.get(sample_key) or {}), **parse_json(members.get("json"))}
        shared = _lineage(members.get("txt"), members.get("json"), listing.rows.get(sample_key), text_bytes=text_bytes)
        classes = _classes(members)
        for image_ext in pictures:
            # a page of several: its own key (no sample's key holds a dot in its name), its sample's group
            own = _own_key(self._key, shard, sample_key, image_ext, pictures)
            changed = hash_problem(recorded, members[image_ext], f"{sample_key}.{image_ext}")
            if changed:
                yield self._reject(own, "read", HASH_MISMATCH, changed, where=f"{tar}:{named(image_ext)}", group=key)
                continue
            lineage = {**shared, "shard": shard, "sample_key": sample_key, "file_ext": image_ext, **classes}
            yield ImageRecord(key=own, source=self.name, group=key, data=members[image_ext], lineage=lineage,
                              input=f"{tar}:{named(image_ext)}")

    def _unexpected_members(self, key: str, members: dict[str, Any], images: list[str],
                            named: Callable[[str], str], at: Callable[[str], str]) -> Iterator[Reject]:
        """An `unexpected_file` reject for each member of a sample that is neither an image nor a
        sidecar (a `000.npy` put in by hand): img2dataset writes one image (`--encode_format`), its
        `.txt` and its `.json` (extra columns go in the json), nothing else; never dropped unsaid.
        `named` spells a member as its tar or folder does (`000.NPY`)."""
        for other in sorted(e for e in members if e not in images and e not in SAMPLE_SIDECARS):
            yield self._reject(key, "read", "unexpected_file",
                               f"{named(other)}: not read (a sample's image, .txt and .json are)",
                               where=at(other))

    def _read_files(self, folder: str) -> Iterator[SourceItem]:
        shard = fsio.basename(folder)
        base = fsio.join(self.path, shard)
        listing = ShardListing.read(base + ".parquet", base + "_stats.json", self.path, self.follow_links)
        yield from listing_rejects(self.name, listing, shard, self._at(base + ".parquet"))
        problem = path_problem(self.path, folder, self.follow_links)
        if problem:  # a shard folder linking out of the root: one reject for what it holds
            yield self._reject(self._shard_key(shard), "read", problem.reason, problem.detail,
                               where=self._at(folder) + "/")
            return
        by_key: dict[str, dict[str, str]] = {}
        refused: set[str] = set()  # samples with a file that links out of the root (never read)
        # walked below: a webdataset tar whose keys hold a folder (`sub/b.jpg`), extracted by GNU tar,
        # is keyed by each file's path in the folder, as its tar's members are (`split_member`)
        for uri in collapse_set_aside(folder, fsio.list_files(folder, recursive=True, follow_links=self.follow_links,
                                                              links=True)):
            relative = relative_to_root(folder, uri)
            aside = self._set_aside(lambda: self._key(shard, relative), folder, uri)
            if aside:  # a Mac's `._00000.jpg` beside `00000.jpg`: no sample of key ''
                yield aside
                continue
            key, ext = split_member(relative)
            problem = path_problem(self.path, uri, self.follow_links) or folder_link_problem(self.path, uri,
                                                                                             self.follow_links)
            if problem:
                yield self._reject(self._key(shard, key), "read", problem.reason, problem.detail, where=self._at(uri))
                refused.add(key)
                continue
            if ext in by_key.setdefault(key, {}):
                yield self._reject(self._key(shard, key), "read", "duplicate_key",
                                   f"{relative}: key {key} already has a {ext} file", where=self._at(uri))
                continue
            by_key[key][ext] = uri
        stale: set[str] = set()  # samples an earlier, killed run left (`img2dataset_stale`)
        for sample_key in sorted(by_key):
            files = by_key[sample_key]
            key = self._key(shard, sample_key)
            images = _image_members(files)
            left = stale_detail(listing, shard, sample_key, [fsio.basename(u) for u in files.values()], LEFT_IN_FOLDER)
            if left:
                yield self._reject(key, "read", STALE_DOWNLOAD, left, where=self._at(files[(images or sorted(files))[0]]))
                stale.add(sample_key)
                continue
            if not images:
                if sample_key not in refused:  # else its image is the `outside_root` reject above
                    yield self._reject(key, "read", "missing_image", f"members: {', '.join(sorted(files))}",
                                       where=self._at(next(iter(sorted(files.values())))))
                continue
            pictures, twins = _pictures(images)
            for extra in twins:
                yield self._reject(key, "read", "duplicate_key",
                                   f"{fsio.basename(files[extra])}: key {sample_key} already has an image "
                                   f"({fsio.basename(files[pictures[0]])})", where=self._at(files[extra]))
            yield from self._unexpected_members(key, files, images, lambda ext: fsio.basename(files[ext]),
                                                lambda ext: self._at(files[ext]))
            texts, sizes, unread = self._sidecar_texts({e: files[e] for e in SAMPLE_SIDECARS if e in files},
                                                       lambda _: key)
            yield from unread
            recorded = {**(listing.rows.get(sample_key) or {}), **parse_json(texts.get("json"))}
            for image_ext in pictures:
                own = _own_key(self._key, shard, sample_key, image_ext, pictures)  # as a tar's (`_sample`)
                data, changed = self._checked_file(recorded, files[image_ext])
                if changed:
                    yield self._reject(own, "read", HASH_MISMATCH, changed, where=self._at(files[image_ext]),
                                       group=key)
                    continue
                lineage = _lineage(texts.get("txt"), texts.get("json"), listing.rows.get(sample_key),
                                   text_bytes=sizes.get("txt"))
                lineage.update({"shard": shard, "sample_key": sample_key, "file_ext": image_ext, **_classes(texts)})
                # `input` named whether the bytes are in hand (hash checked) or the decoder reads the file
                yield ImageRecord(key=own, source=self.name, group=key, lineage=lineage,
                                  input=self._at(files[image_ext]),
                                  **({"data": data} if data is not None else {"uri": files[image_ext]}))
        yield from missing_rejects(self.name, listing, shard, (set(by_key) - stale) | refused, f"folder {shard}/",
                                   self._at(folder) + "/")

    def _checked_file(self, recorded: dict[str, Any], uri: str) -> tuple[bytes | None, str | None]:
        """A files-layout image's bytes and `hash_problem`, read only when its hash is to be checked
        (then the record carries the bytes: the decoder does not read the file again); (None, None)
        otherwise, and for an unreadable or too large file, which the decoder rejects with its reason."""
        if recorded_hash(recorded) is None:
            return None, None
        try:
            data = read_input_bytes(uri)  # too many open files: the machine's MachineError, never unchecked
        except (OSError, fsio.FileTooLarge):
            return None, None
        return data, hash_problem(recorded, data, fsio.basename(uri))

    def _row_key(self, shard: str, index: int) -> str:
        """The key of a parquet row that lists none (`_listed_key`): its file and index, stable
        from the input alone, as a `datasets` row's (`hf_repo_reader`); `row` set apart so that it
        never meets a listed key (`data_key`: ("00000", "row", "7") is no ("00000", "7"))."""
        return data_key(self.name, shard, "row", str(index))

    def _parquet_items(self, uri: str, shard: str) -> Iterator[SourceItem]:
        with fsio.open_file(uri, read_ahead=False) as handle:  # opened once: its column named from its schema
            parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
            column = _image_column(parquet.schema_arrow)
            # a caption cell that is not UTF-8 comes as its bytes, read as a `binary` column's (`utf8_text`)
            batches = hf_parquet.row_batches(parquet, f"{shard}.parquet", ("key",), source=handle,
                                             captions=CAPTION_CELLS)
            at = self._at(uri)
            for first, rows in _row_lists(batches):
                for offset, row in enumerate(rows):
                    index = (first.first_row if isinstance(first, hf_parquet.TooLarge) else first) + offset
                    sample_key = _listed_key(row)
                    key = self._key(shard, sample_key) if sample_key is not None else self._row_key(shard, index)
                    where = _row_input(at, index, row)
                    if isinstance(first, hf_parquet.TooLarge):
                        yield self._reject(key, "read", first.reason, first.detail, where=where)
                        continue
                    data = row.pop(column, None) if column else None
                    caption = utf8_text(row.pop("txt", None))
                    if "caption" in row:
                        row["caption"] = utf8_text(row["caption"])
                    state = download_status(row)
                    if state != "success":
                        yield self._reject(key, "download", state, str(row.get("error_message") or ""), where=where)
                        continue
                    if data is None:  # b"" (a 0-byte body img2dataset stored) is the decoder's `empty_file`, as in a tar
                        yield self._reject(key, "read", "missing_image", f"{shard}.parquet row without {column} bytes",
                                           where=where)
                        continue
                    named = sample_key if sample_key is not None else f"row {index}"
                    changed = hash_problem(row, data, f"{shard}.parquet {column} of {named}")
                    if changed:
                        yield self._reject(key, "read", HASH_MISMATCH, changed, where=where)
                        continue
                    lineage = _lineage(caption.encode() if caption else None, None, row, txt_file=False)
                    lineage.update({"shard": shard, **({"sample_key": sample_key} if sample_key is not None
                                                       else {"row": index}), "file_ext": column})
                    yield ImageRecord(key=key, source=self.name, group=key, data=data, lineage=lineage, input=where)


def _listed_key(row: dict[str, Any]) -> str | None:
    """The key a parquet row lists (img2dataset's `key`, in NFC), or None for a row without one (a
    null cell, an empty one, no `key` column: a pandas or pyarrow export of images): such a row is
    keyed by its index (`_row_key`). As `str(None)` every such row was key `None`: one sentence,
    the file's other keyless rows `duplicate_key` rejects though their images differ. pandas writes
    a key column with gaps as floats: a missing key is NaN (None here too, not key `nan`), a whole
    number its digits (`3`, not `3.0`); blank text is none either."""
    listed = row.get("key")
    if isinstance(listed, float):
        listed = None if not math.isfinite(listed) else int(listed) if listed.is_integer() else listed
    return None if listed is None or str(listed).strip() == "" else nfc(str(listed))


def _own_key(keyed: Callable[[str, str], str], shard: str, sample_key: str, image_ext: str,
             pictures: list[str]) -> str:
    """The key of picture `image_ext` of a sample read as `pictures`: a page of several (`0.jpg`)
    its own, from its member's name; the sample's one picture, or its cover (`jpg`), the sample's."""
    return keyed(shard, f"{sample_key}.{image_ext}") if len(pictures) > 1 and "." in image_ext else \
        keyed(shard, sample_key)


def _read_mode(handle, owns: Callable[[str], bool] | None) -> str:
    """tarfile mode for one reading whose headers are read again (a plain tar's that `scan` kept
    are walked seekably: `tar_members.KeptHeaders`): a part of a plain local tar opens it seekably,
    so the data of samples other parts own is skipped, not read; a whole tar, or a compressed one,
    is streamed (the end-of-archive check then sees the same stream whichever part reads it)."""
    return "r|*" if owns is None else tar_mode(handle)


def _row_input(parquet: str, index: int, row: dict[str, Any]) -> str:
    """A parquet row's reject `input`: the file, the row's index (from 0) and the URL it lists."""
    url = row.get("url")
    return f"{parquet} row {index}" + (f": {url}" if isinstance(url, str) and url else "")
