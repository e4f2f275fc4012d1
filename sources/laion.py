"""Web images: img2dataset outputs (webdataset tars, or parquet + files) and plain image folders.

img2dataset writes, per shard NNNNN: `NNNNN.tar` holding `{key}.jpg`, `{key}.txt` (caption),
`{key}.json` (url, key, sizes...), or with `output_format=files` a folder `NNNNN/` with the same
files, plus `NNNNN.parquet` (one row per attempted URL with its status) and `NNNNN_stats.json`.
We read tars as streams (never a whole shard in memory), keep caption and URL as lineage, and
turn the parquet's failed rows into counted rejects so that nothing vanishes silently.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator, Literal

from sources import fsio
from sources.records import ImageRecord, Reject, SourceItem, safe_key

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
LaionFormat = Literal["auto", "webdataset", "files", "folder"]
FOLDER_FILES_PER_UNIT = 256


@dataclass(frozen=True)
class Unit:
    """One parallel work item: a tar, a files-layout shard folder, or a slice of an image folder."""

    kind: str  # "tar" | "files" | "folder"
    uris: tuple[str, ...]
    root: str


def _split_member(name: str) -> tuple[str, str]:
    """webdataset convention: the key is the path up to the first dot of the file name."""
    directory, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(directory, stem) if directory else stem, ext.lower()


def detect_format(root: str) -> LaionFormat:
    files = fsio.list_files(root)
    if any(f.endswith(".tar") for f in files):
        return "webdataset"
    if any(f.endswith(".parquet") for f in files) and fsio.list_dirs(root):
        return "files"
    return "folder"


@dataclass(frozen=True)
class LaionSource:
    name: str
    path: str
    format: LaionFormat = "auto"

    def units(self) -> list[Unit]:
        fmt = detect_format(self.path) if self.format == "auto" else self.format
        if fmt == "webdataset":
            tars = fsio.list_files(self.path, (".tar",))
            if not tars:
                raise FileNotFoundError(f"{self.name}: no .tar shards in {self.path}")
            return [Unit("tar", (t,), self.path) for t in tars]
        if fmt == "files":
            return [Unit("files", (d,), self.path) for d in fsio.list_dirs(self.path)]
        images = fsio.list_files(self.path, tuple("." + e for e in IMAGE_EXTENSIONS), recursive=True)
        if not images:
            raise FileNotFoundError(f"{self.name}: no images under {self.path}")
        step = FOLDER_FILES_PER_UNIT
        return [Unit("folder", tuple(images[i : i + step]), self.path) for i in range(0, len(images), step)]

    def read(self, unit: Unit) -> Iterator[SourceItem]:
        if unit.kind == "tar":
            yield from self._read_tar(unit.uris[0])
        elif unit.kind == "files":
            yield from self._read_files(unit.uris[0])
        else:
            yield from self._read_folder(unit)

    # -- img2dataset webdataset shards -------------------------------------------------
    def _read_tar(self, uri: str) -> Iterator[SourceItem]:
        shard = fsio.basename(uri).removesuffix(".tar")
        yield from self._upstream_failures(uri[: -len(".tar")] + ".parquet", shard)
        current: str | None = None
        members: dict[str, bytes] = {}
        try:
            with fsio.open_file(uri) as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, ext = _split_member(info.name)
                    if key != current and current is not None:
                        yield self._sample(shard, current, members)
                        members = {}
                    current = key
                    extracted = tar.extractfile(info)
                    members[ext] = extracted.read() if extracted is not None else b""
        except (tarfile.TarError, EOFError, OSError) as exc:
            if current is not None and members:
                yield Reject(
                    safe_key(self.name, shard, current), self.name, safe_key(self.name, shard, current),
                    "read", "truncated_sample", f"{type(exc).__name__}: {exc}"[:200],
                )
                current = None
            yield Reject(safe_key(self.name, shard), self.name, safe_key(self.name, shard),
                         "read", "corrupt_archive", f"{type(exc).__name__}: {exc}"[:200])
        if current is not None:
            yield self._sample(shard, current, members)

    def _sample(self, shard: str, sample_key: str, members: dict[str, bytes]) -> SourceItem:
        key = safe_key(self.name, shard, sample_key)
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if image_ext is None:
            return Reject(key, self.name, key, "read", "missing_image",
                          f"members: {', '.join(sorted(members)) or 'none'}")
        lineage = _lineage(members.get("txt"), members.get("json"))
        lineage.update({"shard": shard, "sample_key": sample_key, "file_ext": image_ext})
        return ImageRecord(key=key, source=self.name, group=key, data=members[image_ext], lineage=lineage)

    def _upstream_failures(self, parquet_uri: str, shard: str) -> Iterator[Reject]:
        """img2dataset's parquet lists every URL it tried; failed ones become counted rejects."""
        if not fsio.exists(parquet_uri):
            return
        import pyarrow.parquet as pq

        with fsio.open_file(parquet_uri) as handle:
            table = pq.read_table(handle, columns=None)
        names = table.column_names
        if "status" not in names or "key" not in names:
            return
        status = table.column("status").to_pylist()
        keys = table.column("key").to_pylist()
        errors = table.column("error_message").to_pylist() if "error_message" in names else [None] * len(keys)
        for sample_key, state, error in zip(keys, status, errors):
            if state != "success":
                key = safe_key(self.name, shard, str(sample_key))
                yield Reject(key, self.name, key, "download", str(state or "failed"), str(error or "")[:200])

    # -- img2dataset files layout --------------------------------------------------------
    def _read_files(self, folder: str) -> Iterator[SourceItem]:
        shard = fsio.basename(folder)
        yield from self._upstream_failures(fsio.join(self.path, shard + ".parquet"), shard)
        by_key: dict[str, dict[str, str]] = {}
        for uri in fsio.list_files(folder):
            key, ext = _split_member(fsio.basename(uri))
            by_key.setdefault(key, {})[ext] = uri
        for sample_key in sorted(by_key):
            files = by_key[sample_key]
            key = safe_key(self.name, shard, sample_key)
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
            if image_ext is None:
                yield Reject(key, self.name, key, "read", "missing_image",
                             f"members: {', '.join(sorted(files))}")
                continue
            text = fsio.read_bytes(files["txt"]) if "txt" in files else None
            meta = fsio.read_bytes(files["json"]) if "json" in files else None
            lineage = _lineage(text, meta)
            lineage.update({"shard": shard, "sample_key": sample_key, "file_ext": image_ext})
            yield ImageRecord(key=key, source=self.name, group=key, uri=files[image_ext], lineage=lineage)

    # -- plain folders -------------------------------------------------------------------
    def _read_folder(self, unit: Unit) -> Iterator[SourceItem]:
        root = unit.root.rstrip("/")
        for uri in unit.uris:
            relative = uri[len(root) :].lstrip("/")
            stem = relative.rsplit(".", 1)[0]
            key = safe_key(self.name, *stem.split("/"))
            caption_uri = uri.rsplit(".", 1)[0] + ".txt"
            caption = fsio.read_text(caption_uri).strip() if fsio.exists(caption_uri) else None
            lineage = {"path": relative}
            if caption:
                lineage["caption"] = caption
            yield ImageRecord(key=key, source=self.name, group=key, uri=uri, lineage=lineage)


def _lineage(text: bytes | None, meta: bytes | None) -> dict:
    lineage: dict = {}
    if text:
        lineage["caption"] = text.decode("utf-8", errors="replace").strip()
    if meta:
        try:
            parsed = json.loads(meta)
        except (ValueError, UnicodeDecodeError):
            parsed = {}
        if isinstance(parsed, dict):
            for field in ("url", "caption", "original_width", "original_height"):
                if parsed.get(field) is not None and field not in lineage:
                    lineage[field] = parsed[field]
    return lineage
