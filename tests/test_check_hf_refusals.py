"""`check` stops in one `error:` line naming the field, never a traceback nor a build of nothing,
on a `datasets` layout it cannot build as configured: Image or caption columns the files do not
fit, or the `datasets` library's own cache folder given as the path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from uvd_pipeline.cli import main

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 10)).save(out, "PNG")
    return out.getvalue()


def _segmentation_repo(root: Path) -> None:
    """A `push_to_hub` layout of a segmentation dataset: an image and a mask (two `Image`
    columns, as `datasets` declares them in the schema metadata) and a caption."""
    metadata = {b"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "mask": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}
    schema = pa.schema([("image", IMAGE), ("mask", IMAGE), ("text", pa.string())], metadata=metadata)
    rows = [{"image": {"bytes": _png(i), "path": None}, "mask": {"bytes": _png(9), "path": None}, "text": f"p{i}"}
            for i in range(3)]
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "data" / "train-00000-of-00001.parquet")


def _check(tmp_path: Path, capsys, root: Path, **fields) -> tuple[int, str]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "seg", "type": "laion", "path": str(root), **fields}]}))
    code = main(["check", str(config)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("fields, expected", [
    ({}, "sources[0].image_column (seg): train-00000-of-00001.parquet has 2 Image columns (image, mask): set "
         "image_column to the one to build (format: huggingface)"),
    ({"image_column": "img"}, "sources[0].image_column (seg): train-00000-of-00001.parquet has no Image column 'img' "
                              "(its Image columns: image, mask) (format: huggingface)"),
    ({"image_column": "image", "caption_column": "captoin"},
     "sources[0].caption_column (seg): train-00000-of-00001.parquet has no caption column 'captoin' (its columns: "
     "image, mask, text) (format: huggingface)"),
])
def test_columns_a_datasets_repo_lacks_stop_check_naming_the_field(tmp_path: Path, capsys, fields: dict,
                                                                    expected: str):
    """Each was a ValueError traceback out of `check` (exit 1), its list shown as Python's repr."""
    _segmentation_repo(tmp_path / "repo")
    code, err = _check(tmp_path, capsys, tmp_path / "repo", **fields)
    assert (code, err) == (2, f"error: {expected}\n")


def test_the_datasets_librarys_own_cache_folder_is_refused_by_name(tmp_path: Path, capsys):
    """What `load_dataset("parquet", data_files=..., cache_dir=...)` leaves: its Arrow stream
    (`parquet-train.arrow`) beside `dataset_info.json`, under <builder>/<config>/<version>/<hash>/,
    and `.lock` files. It passed `check` and built 0 sentences, each Arrow file `not_an_image`;
    refused by name now, as a `save_to_disk` folder is."""
    schema = pa.schema([("image", IMAGE), ("text", pa.string())],
                       metadata={b"huggingface": b'{"info": {"features": {"image": {"_type": "Image"}}}}'})
    cache = tmp_path / "cache"
    prepared = cache / "parquet" / "default-c8cb7fa6b5f2b0cb" / "0.0.0" / ("a8" * 32)
    prepared.mkdir(parents=True)
    with pa.ipc.new_stream(prepared / "parquet-train.arrow", schema) as writer:
        writer.write_table(pa.Table.from_pylist([{"image": {"bytes": _png(1), "path": None}, "text": "a"}], schema))
    (prepared / "dataset_info.json").write_text(json.dumps({"builder_name": "parquet", "config_name": "default"}))
    (prepared.parent / f"{'a8' * 32}_builder.lock").write_text("")
    (cache / f"_cache_parquet_default-c8cb7fa6b5f2b0cb_0.0.0_{'a8' * 32}.lock").write_text("")
    code, err = _check(tmp_path, capsys, cache)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: sources[0].path (seg): parquet/default-c8cb7fa6b5f2b0cb/0.0.0/{'a8' * 32}/"
                          f"dataset_info.json in {cache} is the Hugging Face datasets library's own cache"), err
    assert "to_parquet('train.parquet')" in err


def _nested_repo(root: Path, top_level: bool) -> list[bytes]:
    """A `datasets` parquet whose features nest `Image`s in a dict, as `datasets` writes
    `Features({"image": Image(), "aux": {"mask": Image(), "score": Value("float32")}})` (a struct
    column of the Image struct; the dict declared as a plain dict of features), or a stereo pair
    `{"pair": {"left": Image(), "right": Image()}}` alone."""
    if top_level:
        declared = {"image": {"_type": "Image"}, "aux": {"mask": {"_type": "Image"},
                                                         "score": {"dtype": "float32", "_type": "Value"}}}
        aux = pa.struct([("mask", IMAGE), ("score", pa.float32())])
        schema = pa.schema([("image", IMAGE), ("aux", aux), ("text", pa.string())])
        rows = [{"image": {"bytes": _png(i), "path": None}, "aux": {"mask": {"bytes": _png(9), "path": None},
                                                                     "score": 0.5}, "text": f"p{i}"} for i in range(3)]
    else:
        declared = {"pair": {"left": {"_type": "Image"}, "right": {"_type": "Image"}}}
        schema = pa.schema([("pair", pa.struct([("left", IMAGE), ("right", IMAGE)])), ("text", pa.string())])
        rows = [{"pair": {"left": {"bytes": _png(i), "path": None}, "right": {"bytes": _png(i + 1), "path": None}},
                 "text": f"p{i}"} for i in range(3)]
    schema = schema.with_metadata({b"huggingface": json.dumps({"info": {"features": declared}}).encode()})
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "data" / "train-00000-of-00001.parquet")
    return [r["image"]["bytes"] for r in rows] if top_level else []


def test_images_nested_in_a_struct_are_one_reject_a_file_beside_the_top_level_image(tmp_path: Path):
    """`aux.mask` beside the top-level `image` was neither built nor rejected (its cell rode in
    the lineage as nulls): now the file's one `nested_image_column` reject names it; the
    top-level images are built as before."""
    from sources.laion import LaionSource
    from sources.records import ImageRecord, Reject

    images = _nested_repo(tmp_path / "repo", top_level=True)
    source = LaionSource("seg", str(tmp_path / "repo"))
    items = [i for unit in source.units() for i in source.read(unit)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [i.data for i in items if isinstance(i, ImageRecord)] == images
    assert [(r.reason, r.input) for r in rejects] == [("nested_image_column",
                                                       "data/train-00000-of-00001.parquet column aux")]
    assert "holds images inside a struct (aux.mask), their bytes not read: those images of its 3 rows" \
        in rejects[0].detail
    assert [i.lineage["huggingface"] for i in items if isinstance(i, ImageRecord)] == \
        [{"aux": {"mask": {"bytes": None, "path": None}, "score": 0.5}}] * 3


def test_the_fields_beside_a_nested_image_ride_in_the_lineage_its_bytes_never_read(tmp_path: Path, monkeypatch):
    """`Features({"image": Image(), "text": Value("string"), "meta": {"mask": Image(), "label":
    Value("string"), "score": Value("float32")}})` as `datasets`' `to_parquet` writes it: the whole
    `meta` column was left out, its label and score gone from the lineage without a word (they were
    there, the mask's bytes nulled, before the `nested_image_column` reject). Now they are, and the
    masks' bytes are neither read nor judged: a budget below them builds every row."""
    from sources.records import ImageRecord, Reject

    declared = {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
                "meta": {"mask": {"_type": "Image"}, "label": {"dtype": "string", "_type": "Value"},
                         "score": {"dtype": "float32", "_type": "Value"}}}
    meta = pa.struct([("mask", IMAGE), ("label", pa.string()), ("score", pa.float32())])
    schema = pa.schema([("image", IMAGE), ("text", pa.string()), ("meta", meta)],
                       metadata={b"huggingface": json.dumps({"info": {"features": declared}}).encode()})
    mask = np.random.default_rng(0).bytes(200_000)  # incompressible: the chunk is as large read
    rows = [{"image": {"bytes": _png(i), "path": f"i{i}.png"}, "text": f"c{i}",
             "meta": {"mask": {"bytes": mask + bytes([i]), "path": "m.png"}, "label": f"cat{i}", "score": i / 2}}
            for i in range(4)]
    items = _read_with_a_budget_under_the_masks(tmp_path, monkeypatch, schema, rows, len(mask))
    built = [i for i in items if isinstance(i, ImageRecord)]
    assert [i.data for i in built] == [_png(i) for i in range(4)]
    assert [i.lineage["huggingface"] for i in built] == [
        {"meta": {"mask": {"bytes": None, "path": "m.png"}, "label": f"cat{i}", "score": i / 2}} for i in range(4)]
    assert [i.lineage["caption"] for i in built] == [f"c{i}" for i in range(4)]
    assert [(r.reason, r.input) for r in items if isinstance(r, Reject)] == [
        ("nested_image_column", "data/train-00000-of-00001.parquet column meta")]


def _read_with_a_budget_under_the_masks(tmp_path: Path, monkeypatch, schema, rows: list[dict], budget: int) -> list:
    """`rows` written by pyarrow as `data/train-00000-of-00001.parquet` and read by a `laion`
    source whose row-group budget is `budget` (under the nested masks' bytes, over the rest): every
    item and reject it gives."""
    from sources import hf_parquet
    from sources.laion import LaionSource

    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "data" / "train-00000-of-00001.parquet")
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", budget)
    source = LaionSource("web", str(tmp_path))
    return [i for unit in source.units() for i in source.read(unit)]


@pytest.mark.parametrize("column, field, shown", [("meta", "mask.v1", "meta.'mask.v1'"),
                                                  ("meta.v2", "mask", "'meta.v2'.mask")])
def test_a_nested_image_under_a_name_with_a_dot_is_read_without_its_bytes(tmp_path: Path, monkeypatch, column: str,
                                                                         field: str, shown: str):
    """`datasets` names a struct's fields and columns as the dict's keys, dots and all. A field
    `mask.v1` of `meta` lost its `bytes: null` from the lineage (the dotted path walked
    meta -> mask -> v1); a column `meta.v2` was taken for `meta`: its masks' bytes were read
    (a budget below them rejected every row) and the reject named column 'meta'. Now each path
    is its fields' names, shown quoted where a name holds a dot."""
    from sources.records import ImageRecord, Reject

    declared = {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
                column: {field: {"_type": "Image"}, "label": {"dtype": "string", "_type": "Value"}}}
    meta = pa.struct([(field, IMAGE), ("label", pa.string())])
    schema = pa.schema([("image", IMAGE), ("text", pa.string()), (column, meta)],
                       metadata={b"huggingface": json.dumps({"info": {"features": declared}}).encode()})
    mask = np.random.default_rng(0).bytes(200_000)  # incompressible: the chunk is as large read
    rows = [{"image": {"bytes": _png(i), "path": f"i{i}.png"}, "text": f"c{i}",
             column: {field: {"bytes": mask + bytes([i]), "path": f"m{i}.png"}, "label": f"cat{i}"}}
            for i in range(3)]
    items = _read_with_a_budget_under_the_masks(tmp_path, monkeypatch, schema, rows, len(mask))
    built = [i for i in items if isinstance(i, ImageRecord)]
    assert [i.data for i in built] == [_png(i) for i in range(3)]
    assert [i.lineage["huggingface"] for i in built] == [
        {column: {field: {"bytes": None, "path": f"m{i}.png"}, "label": f"cat{i}"}} for i in range(3)]
    rejects = [(r.reason, r.input, r.detail) for r in items if isinstance(r, Reject)]
    assert rejects == [("nested_image_column", f"data/train-00000-of-00001.parquet column {column}",
                        f"data/train-00000-of-00001.parquet: column {column!r} holds images inside a struct ({shown}), "
                        "their bytes not read: those images of its 3 rows are not built (one top-level image column "
                        "a row); its other fields ride in each row's lineage")]


def test_a_datasets_repo_of_nested_images_alone_stops_check_naming_them(tmp_path: Path, capsys):
    """Only `pair.left` and `pair.right`: the stop said the file had 'no column of image bytes'."""
    _nested_repo(tmp_path / "repo", top_level=False)
    code, err = _check(tmp_path, capsys, tmp_path / "repo")
    assert (code, err) == (2, "error: sources[0].image_column (seg): train-00000-of-00001.parquet has no Image "
                              "columns; pair.left, pair.right are Images inside a struct column, which this source "
                              "does not read (one top-level image column a row) (format: huggingface)\n")


def test_an_image_folder_without_the_caption_column_stops_check_naming_the_field_once(tmp_path: Path, capsys):
    """An ImageFolder whose `metadata.csv` has no `title` column: the line named the field twice
    ("error: sources[0].caption_column (seg): ... (format: folder; field caption_column)")."""
    root = tmp_path / "folder" / "train"
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(_png(1))
    (root / "metadata.csv").write_text("file_name,text\na.png,a red square\n")
    code, err = _check(tmp_path, capsys, tmp_path / "folder", caption_column="title")
    assert (code, err) == (2, "error: sources[0].caption_column (seg): train/metadata.csv has no caption column "
                              "'title' (its columns: file_name, text) (format: folder)\n")
