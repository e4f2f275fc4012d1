"""A record's lineage text is bounded (`sources.lineage_text`): a caption cut at a UTF-8 boundary
to `MAX_CAPTION_BYTES`, saying so with the length it had, a record's metadata kept within
`MAX_METADATA_BYTES` as a whole, and a long caption file read only as far as its head. On the
code before, a web tar of 150 samples with 2 MiB captions wrote 2 MiB sentence headers and peaked
at 1.75 GB."""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from sources.laion import LaionSource
from sources.lineage_text import (CAPTION_READ_BYTES, MAX_CAPTION_BYTES, MAX_METADATA_BYTES, caption_lineage,
                                  metadata_lineage, utf8_head)
from sources.records import ImageRecord

# 4095 ASCII bytes then two-byte characters: the cap falls inside the first `é`
LONG_CAPTION = ("a" * (MAX_CAPTION_BYTES - 1) + "é" * 50_000).encode()
# a `.json` of 100 fields of 1 KB each: every value under the 4 KiB value cap, 100 KB in all
WIDE_JSON = {f"field_{j:03d}": "v" * 1000 for j in range(100)}


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), shade, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _tar(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A webdataset tar of `samples` (key -> extension -> bytes), members in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _records(root: Path) -> dict[str, ImageRecord]:
    source = LaionSource("web", str(root))
    items = [item for unit in source.units() for item in source.read(unit)]
    return {item.key: item for item in items if isinstance(item, ImageRecord)}


def test_a_short_caption_and_record_stay_as_they_were():
    assert caption_lineage("  a dog on a beach \n") == {"caption": "a dog on a beach"}
    assert caption_lineage(" \n") == {}
    fields = {"url": "http://x/1.jpg", "width": 3, "exif": "{" + "x" * 600 + "}"}
    assert metadata_lineage("img2dataset", fields, lambda v: v) == {"img2dataset": fields}


def test_a_long_caption_is_cut_at_a_character_boundary_and_says_so():
    made = caption_lineage(LONG_CAPTION.decode())
    assert made["caption"] == "a" * (MAX_CAPTION_BYTES - 1)  # the `é` across the cap is left out whole
    assert made["caption_truncated"] == {"bytes": len(LONG_CAPTION), "kept_bytes": MAX_CAPTION_BYTES - 1,
                                         "budget": MAX_CAPTION_BYTES}
    assert utf8_head("€€".encode(), 4) == "€".encode()  # 3-byte characters: never half of one
    # a caption of which only the head was read: the size its file held is the one said
    assert caption_lineage("short head", stored_bytes=10**9)["caption_truncated"]["bytes"] == 10**9


def test_a_record_s_metadata_is_kept_within_its_budget_naming_what_is_left_out():
    made = metadata_lineage("img2dataset", WIDE_JSON, lambda v: v)
    kept = made["img2dataset"]
    assert len(json.dumps(kept, separators=(",", ":")).encode()) <= MAX_METADATA_BYTES
    assert list(kept) == [f"field_{j:03d}" for j in range(len(kept))] and len(kept) == 16
    assert made["img2dataset_truncated"] == {"fields_left_out": 84, "names": [f"field_{j:03d}" for j in range(16, 24)],
                                             "budget": MAX_METADATA_BYTES}


def test_a_web_tar_s_long_caption_and_wide_json_are_bounded_in_the_sentence_header(tmp_path):
    """Built end to end: the header of the sample with a 100 KB caption holds its first 4,095 bytes
    and says it was cut from the member's size; the sample whose `.json` holds 100 values of 1 KB
    keeps 16 of them and counts the rest; a plain sample's header is as before."""
    from conftest import build_web_source
    from uvd_pipeline.rendered_shards import iter_shard

    _tar(tmp_path / "web" / "00000.tar", {
        "long": {"png": _png(10), "txt": LONG_CAPTION},
        "wide": {"png": _png(90), "txt": b"a wide one", "json": json.dumps(WIDE_JSON).encode()},
        "plain": {"png": _png(170), "txt": b"a plain caption", "json": b'{"url": "http://x/p.png"}'}})
    summary = build_web_source(tmp_path, "web", tmp_path / "web")
    assert summary["totals"]["rejects"] == 0
    tars = sorted((tmp_path / "out" / "rendered").rglob("*.tar"))
    members = {m["sample_key"]: m for tar in tars for sentence in iter_shard(str(tar))
               for m in sentence.header["members"]}
    assert members["long"]["caption"] == "a" * (MAX_CAPTION_BYTES - 1)
    assert members["long"]["caption_truncated"] == {"bytes": len(LONG_CAPTION), "kept_bytes": MAX_CAPTION_BYTES - 1,
                                                    "budget": MAX_CAPTION_BYTES}
    assert len(members["wide"]["img2dataset"]) == 16
    assert members["wide"]["img2dataset_truncated"]["fields_left_out"] == 84
    assert members["plain"]["caption"] == "a plain caption" and "caption_truncated" not in members["plain"]
    assert members["plain"]["img2dataset"] == {"url": "http://x/p.png"}


def test_a_huge_caption_member_or_file_is_read_only_as_far_as_its_head(tmp_path):
    """A 32 MiB `.txt` (in a tar, and in an `output_format=files` folder) costs the read no more
    than its head: the code before held it whole (and put it whole in the lineage)."""
    huge = b"word " * ((32 << 20) // 5)
    _tar(tmp_path / "tar" / "00000.tar", {"0": {"png": _png(40), "txt": huge}})
    (tmp_path / "files" / "00000").mkdir(parents=True)
    (tmp_path / "files" / "00000" / "0.png").write_bytes(_png(40))
    (tmp_path / "files" / "00000" / "0.txt").write_bytes(huge)
    for layout in ("tar", "files"):
        tracemalloc.start()
        try:
            (record,) = _records(tmp_path / layout).values()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * CAPTION_READ_BYTES + (4 << 20), (layout, peak)
        assert record.lineage["caption"] == huge[:MAX_CAPTION_BYTES].decode().strip()
        assert record.lineage["caption_truncated"]["bytes"] == len(huge)


def test_a_datasets_row_and_a_plain_folder_s_sidecars_are_capped_alike(tmp_path):
    """The caps hold beyond img2dataset's layouts: a Hugging Face `datasets` row's caption and
    columns (`huggingface`), and a plain folder's `.txt` and `.json` (`metadata`, which went whole
    into the lineage, uncapped, on the code before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "hf" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": pa.array([{"bytes": _png(30), "path": None}], image),
                             "text": [LONG_CAPTION.decode()], **{k: [v] for k, v in WIDE_JSON.items()}}),
                   tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.png").write_bytes(_png(60))
    (tmp_path / "folder" / "x.txt").write_bytes(LONG_CAPTION)
    (tmp_path / "folder" / "x.json").write_text(json.dumps(WIDE_JSON))
    source = LaionSource("hf", str(tmp_path / "hf"), "huggingface")
    (row,) = [i for u in source.units() for i in source.read(u) if isinstance(i, ImageRecord)]
    (plain,) = _records(tmp_path / "folder").values()
    for lineage, name in ((row.lineage, "huggingface"), (plain.lineage, "metadata")):
        assert lineage["caption"] == "a" * (MAX_CAPTION_BYTES - 1)
        assert lineage["caption_truncated"]["bytes"] == len(LONG_CAPTION)
        assert len(lineage[name]) == 16 and lineage[f"{name}_truncated"]["fields_left_out"] == 84


def test_an_imagefolder_row_s_caption_over_a_cut_txt_carries_no_stale_mark(tmp_path):
    """An ImageFolder row's caption takes the place of a `.txt` beside its image: the `.txt`'s
    `caption_truncated` goes with it; a row without a caption keeps the `.txt`'s, cut and marked."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(_png(20 if name == "a" else 200))
        (tmp_path / f"{name}.txt").write_bytes(LONG_CAPTION)
    rows = [{"file_name": "a.png", "text": "a row's caption"}, {"file_name": "b.png", "score": 1}]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    records = {r.lineage["path"]: r.lineage for r in _records(tmp_path).values()}
    assert records["a.png"]["caption"] == "a row's caption" and "caption_truncated" not in records["a.png"]
    assert records["b.png"]["caption"] == "a" * (MAX_CAPTION_BYTES - 1)
    assert records["b.png"]["caption_truncated"]["bytes"] == len(LONG_CAPTION)
