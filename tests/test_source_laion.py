"""The web-image source on img2dataset layouts (webdataset, parquet + files) and plain folders."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from sources.laion import LaionSource, detect_format
from sources.records import ImageRecord, Reject
from transforms.decode import DecodeError, load_image
from uvd_pipeline.sample import web

# what each broken entry of the corpus generator decodes to
DECODE_REASONS = {"zero_byte": "empty_file", "not_an_image": "not_an_image", "truncated_jpeg": "truncated",
                  "corrupt_header": "corrupt_header", "decompression_bomb": "decompression_bomb"}


def _read_all(source: LaionSource):
    return [item for unit in source.units() for item in source.read(unit)]


def test_webdataset_layout_records_and_rejects(sample_corpus: Path):
    source = LaionSource("web", str(sample_corpus / "laion"))
    assert detect_format(source.path) == "webdataset"
    items = _read_all(source)
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    caption_only = sum(kind == "caption_only" for kind in web.BROKEN.values())
    assert len(records) == web.SHARDS * web.SAMPLES_PER_SHARD - caption_only  # entries with no image member
    assert Counter(r.reason for r in rejects) == {"failed_to_download": web.SHARDS * web.FAILED_DOWNLOADS_PER_SHARD,
                                                  "missing_image": caption_only}
    assert len({r.key for r in records}) == len(records)
    assert all("." not in r.key for r in records)
    first = next(r for r in records if r.lineage["sample_key"] == "000000000")
    assert first.lineage["caption"].startswith("a photo of astronaut")
    assert first.lineage["url"] == "http://sample.invalid/uvd-laion/000000000.jpg"
    # what the tar holds decodes or fails with the reasons the corpus planted
    reasons = Counter()
    for r in records:
        try:
            load_image(r.data, 32, "center_crop")
        except DecodeError as exc:
            reasons[exc.reason] += 1
    assert reasons == Counter(DECODE_REASONS[kind] for kind in web.BROKEN.values() if kind != "caption_only")


def test_truncated_tar_keeps_earlier_samples(sample_corpus: Path, tmp_path: Path):
    data = (sample_corpus / "laion" / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(data[: len(data) // 3])
    items = _read_all(LaionSource("web", str(tmp_path), "webdataset"))
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert 5 < len(records) < 72
    assert "corrupt_archive" in {r.reason for r in rejects}


def test_files_layout_matches_webdataset(sample_corpus: Path, tmp_path: Path):
    """img2dataset output_format=files: NNNNN/{key}.jpg|txt|json plus NNNNN.parquet."""
    shard = tmp_path / "00002"
    shard.mkdir()
    with tarfile.open(sample_corpus / "laion" / "00002.tar") as tar:
        tar.extractall(shard, filter="data")
    shutil.copy(sample_corpus / "laion" / "00002.parquet", tmp_path)
    files = LaionSource("web", str(tmp_path))
    assert detect_format(files.path) == "files"
    tars = LaionSource("web", str(sample_corpus / "laion"))
    from_tar = {i.key: i for u in tars.units() if u.uris[0].endswith("00002.tar") for i in tars.read(u)}
    from_files = {i.key: i for i in _read_all(files)}
    assert from_files.keys() == from_tar.keys()
    for key, item in from_files.items():
        if isinstance(item, ImageRecord):
            assert item.read_bytes() == from_tar[key].data
            assert item.lineage["caption"] == from_tar[key].lineage["caption"]


def test_plain_folder_with_captions(tmp_path: Path, sample_corpus: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    jpg = sample_corpus / "imagenet" / "train" / "n04266014"
    first, second = sorted(jpg.iterdir())[:2]
    shutil.copy(first, tmp_path / "a" / "one.jpg")
    shutil.copy(second, tmp_path / "a" / "b" / "two.v2.jpeg")
    (tmp_path / "a" / "one.txt").write_text("a rocket on its pad\n")
    items = _read_all(LaionSource("folder_src", str(tmp_path)))
    assert [i.lineage["path"] for i in items] == ["a/b/two.v2.jpeg", "a/one.jpg"]
    assert items[1].lineage["caption"] == "a rocket on its pad"
    assert all("." not in i.key for i in items)


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no images"):
        LaionSource("web", str(tmp_path), "folder").units()


def test_parquet_failures_are_counted(sample_corpus: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(sample_corpus / "laion" / "00000.parquet")
    assert table.column_names[:4] == ["url", "caption", "key", "status"]
    stats = json.loads((sample_corpus / "laion" / "00000_stats.json").read_text())
    assert stats["count"] == table.num_rows and stats["failed_to_download"] == 2


@pytest.mark.parametrize("cut, gzipped", [(None, False), (3, False), (2, False), (None, True), (2, True)])
def test_parts_of_a_big_tar_yield_exactly_what_the_whole_tar_does(sample_corpus: Path, tmp_path: Path, monkeypatch,
                                                                  cut, gzipped):
    """A local tar over `TAR_PART_BYTES` is read as parts (so a few big tars spread over the
    workers): together they yield the same items, rejects of a cut tar included, each once; also
    when the `.tar` is gzip-compressed (then streamed), whole or cut."""
    import gzip

    import sources.laion as laion

    for name in ("00000.tar", "00000.parquet", "00000_stats.json", "00002.tar", "00002.parquet"):
        data = (sample_corpus / "laion" / name).read_bytes()
        if gzipped and name == "00000.tar":
            data = gzip.compress(data, mtime=0)
        (tmp_path / name).write_bytes(data[: len(data) // cut] if cut and name == "00000.tar" else data)
    source = LaionSource("web", str(tmp_path), "webdataset")
    whole = _read_all(source)
    assert [u.parts for u in source.units()] == [1, 1]
    monkeypatch.setattr(laion, "TAR_PART_BYTES", 1 << 18)
    units = source.units()
    assert len(units) > 4 and all(u.parts > 1 for u in units)
    assert "part=" in repr(units[0])
    assert "part=" not in repr(laion.Unit("tar", ("x.tar",), "r"))  # a whole unit keeps its store id
    extracted: list[str] = []  # members whose bytes a part read: only its own samples'
    real_extract = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile",
                        lambda tar, info: extracted.append(info.name) or real_extract(tar, info))
    per_part = []
    for unit in units:
        extracted.clear()
        per_part.append(list(source.read(unit)))
        shard = os.path.basename(unit.uris[0]).removesuffix(".tar")
        assert extracted and all(unit.owns(source._key(shard, name.partition(".")[0])) for name in extracted)
    assert all(per_part)  # every part has work
    assert sorted(map(repr, (item for part in per_part for item in part))) == sorted(map(repr, whole))
    if cut:
        assert "corrupt_archive" in {i.reason for i in whole if isinstance(i, Reject)}
