"""Parquet files written with pyarrow's Parquet Modular Encryption (`pyarrow.parquet.encryption`,
an in-memory KMS client as pyarrow's own tests use) among a build's inputs: with no key, pyarrow
answers an encrypted footer ("PARE") with an OSError but aborts the whole process (C++
`terminate`, exit 134) on the first column chunk metadata of a plaintext-footer file. Each source
that opens parquet is run in a child process here, so the old abort is a failed test, not a dead
pytest."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from sources import parquet_pages

REPO = Path(__file__).resolve().parents[1]
HF_FEATURES = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


class _InMemoryKms(pe.KmsClient):
    """A KMS that 'wraps' a key by base64 (pyarrow's test client): enough to write real files."""

    def __init__(self, config):
        pe.KmsClient.__init__(self)

    def wrap_key(self, key_bytes, master_key_identifier):
        return base64.b64encode(key_bytes)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        return base64.b64decode(wrapped_key)


def _png() -> bytes:
    return subprocess.run(["convert", "-size", "8x8", "xc:red", "png:-"], capture_output=True, check=True).stdout


def _write_encrypted(table: pa.Table, path: Path, column: str, plaintext_footer: bool) -> None:
    config = pe.KmsConnectionConfig(custom_kms_conf={"footer": "0123456789012345", "col": "1234567890123450"})
    encryption = pe.EncryptionConfiguration(footer_key="footer", column_keys={"col": [column]},
                                            plaintext_footer=plaintext_footer, double_wrapping=False)
    properties = pe.CryptoFactory(_InMemoryKms).file_encryption_properties(config, encryption)
    with pq.ParquetWriter(path, table.schema, encryption_properties=properties) as writer:
        writer.write_table(table)


def _hf_table(png: bytes, captions: str) -> pa.Table:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_FEATURES)
    return pa.Table.from_pylist([{"image": {"bytes": png, "path": None}, "text": c} for c in captions], schema=schema)


def _without_file_algorithm(path: Path) -> None:
    """Rewrite a plaintext-footer file's `FileMetaData` without its fields 8 and 9 (the file's
    encryption algorithm and signing key): only its column chunks still say they are encrypted."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    reader = parquet_pages._Reader(io.BytesIO(footer), 0)
    reader.limit, reader.buffer = length, footer
    last, cut = 0, None
    while True:
        at = reader.position
        number, kind = parquet_pages._field(reader, last)
        if kind == parquet_pages._STOP:
            break
        cut = at if number == 8 and cut is None else cut
        last = number
        parquet_pages._skip(reader, kind, 0)
    assert cut is not None
    kept = footer[:cut] + b"\x00"
    path.write_bytes(data[:-8 - length] + kept + len(kept).to_bytes(4, "little") + b"PAR1")
    assert pq.ParquetFile(path).metadata.num_rows == 3  # pyarrow still reads the footer


VARIANTS = ("encrypted footer", "plaintext footer", "encrypted columns only")


def _encrypted_file(path: Path, table: pa.Table, column: str, variant: str) -> None:
    _write_encrypted(table, path, column, plaintext_footer=variant != "encrypted footer")
    assert path.read_bytes()[-4:] == (b"PARE" if variant == "encrypted footer" else b"PAR1")
    if variant == "encrypted columns only":
        _without_file_algorithm(path)


_READ_ALL = """
import json, sys
from sources.laion import LaionSource
source = LaionSource("x", sys.argv[1], format=sys.argv[2])
for unit in source.units():
    for item in source.read(unit):
        print(json.dumps([type(item).__name__, getattr(item, "reason", None), getattr(item, "detail", None)]))
"""


def _read_in_child(root: Path, layout: str) -> list[list]:
    done = subprocess.run([sys.executable, "-c", _READ_ALL, str(root), layout], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/local/bin:/usr/bin:/bin"},
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_encrypted_datasets_parquet_is_one_bad_parquet_and_its_neighbour_is_built(tmp_path: Path, variant: str):
    """A `datasets` repo of two parquet files, the first with its image column encrypted: the
    build aborted (exit 134) on the plaintext-footer variants; now that file is one `bad_parquet`
    saying it is encrypted, and the other file's three rows are images."""
    png = _png()
    (tmp_path / "data").mkdir()
    _encrypted_file(tmp_path / "data" / "train-00000-of-00002.parquet", _hf_table(png, "abc"), "image", variant)
    pq.write_table(_hf_table(png, "def"), tmp_path / "data" / "train-00001-of-00002.parquet")
    items = _read_in_child(tmp_path, "huggingface")
    rejects = [i for i in items if i[0] == "Reject"]
    assert [i[0] for i in items].count("ImageRecord") == 3, items
    assert [r[1] for r in rejects] == ["bad_parquet"], items
    assert "encrypted" in rejects[0][2] and "train-00000-of-00002.parquet" in rejects[0][2]


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_encrypted_img2dataset_listing_leaves_its_tar_built(tmp_path: Path, variant: str):
    """An img2dataset shard whose `00000.parquet` listing has its `url` column encrypted: the
    listing is the shard's `bad_parquet` (encrypted) and the tar's two images are still built."""
    import tarfile

    png = _png()
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for key in ("000000000", "000000001"):
            sidecar = json.dumps({"key": key}).encode()
            for suffix, data in ((".png", png), (".txt", b"a red square"), (".json", sidecar)):
                member = tarfile.TarInfo(key + suffix)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    listing = pa.table({"key": ["000000000", "000000001", "000000002"], "status": ["success", "success", "failed"],
                        "url": ["http://a/0.png", "http://a/1.png", "http://a/2.png"]})
    _encrypted_file(tmp_path / "00000.parquet", listing, "url", variant)
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 3, "successes": 2, "failed_to_download": 1}))
    items = _read_in_child(tmp_path, "webdataset")
    assert [i[0] for i in items].count("ImageRecord") == 2, items
    bad = [i for i in items if i[1] == "bad_parquet"]
    assert len(bad) == 1 and "encrypted" in bad[0][2], items


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_encrypted_imagefolder_metadata_parquet_is_bad_metadata(tmp_path: Path, variant: str):
    """A Hugging Face ImageFolder whose `metadata.parquet` has its `text` column encrypted: the
    metadata file is `bad_metadata` saying it is encrypted, never a dead build."""
    png = _png()
    for name in ("0.png", "1.png"):
        (tmp_path / name).write_bytes(png)
    _encrypted_file(tmp_path / "metadata.parquet", pa.table({"file_name": ["0.png", "1.png", "0.png"],
                                                             "text": ["a", "b", "c"]}), "text", variant)
    items = _read_in_child(tmp_path, "folder")
    bad = [i for i in items if i[1] == "bad_metadata"]
    assert bad and all("encrypted" in i[2] for i in bad), items


def test_honest_files_are_not_called_encrypted(tmp_path: Path):
    """Files pyarrow writes without encryption (with a page index, statistics, key-value metadata,
    many row groups) pass; so does a file that is no parquet (pyarrow says why)."""
    table = pa.table({"n": list(range(1000)), "s": [str(i) for i in range(1000)]})
    for options in ({}, {"write_page_index": True, "row_group_size": 10}, {"write_statistics": False}):
        buffer = io.BytesIO()
        pq.write_table(table.replace_schema_metadata({"k": "v" * 1000}), buffer, **options)
        assert parquet_pages.encryption_problem(io.BytesIO(buffer.getvalue())) is None
        assert parquet_pages.encryption_problem(pa.BufferReader(buffer.getvalue())) is None
    assert parquet_pages.encryption_problem(io.BytesIO(b"not a parquet file at all")) is None
    assert parquet_pages.encryption_problem(io.BytesIO(b"PAR1" + b"\xff" * 40 + b"PAR1")) is None


def test_a_footer_nesting_past_the_walk_is_refused_where_pyarrow_would_read_it(tmp_path: Path):
    """pyarrow's Thrift reader skips a field it does not know, nested up to 64 structs deep: a
    footer with such a field 20 deep could hide a column's `crypto_metadata` from a walk that gives
    up at 16 and let pyarrow abort. It is refused, not waved through."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"n": [1, 2, 3]}), buffer)
    data = buffer.getvalue()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    assert footer[-1] == 0  # the FileMetaData's STOP
    deep = 20
    extra = b"\x0c" + bytes([200 << 1 & 0x7F | 0x80, 200 >> 6]) + b"\x1c" * (deep - 1) + b"\x00" * deep
    patched = footer[:-1] + extra + b"\x00"
    path = tmp_path / "deep.parquet"
    path.write_bytes(data[:-8 - length] + patched + len(patched).to_bytes(4, "little") + b"PAR1")
    assert pq.read_table(path).column("n").to_pylist() == [1, 2, 3]  # pyarrow reads it
    with open(path, "rb") as source:
        assert "nest past" in parquet_pages.encryption_problem(source)



_SIGNATURE_BYTES = 28  # a plaintext footer's nonce and GCM tag after its FileMetaData (Parquet encryption spec)


def _crafted(path: Path, how: str) -> None:
    """Rewrite a plaintext-footer encrypted file the way a hostile or odd writer might, each a shape
    pyarrow still parses (and aborts on): cut to its footer alone or with 3 bytes before it (no
    leading `PAR1`: pyarrow needs only `length <= size - 8`); a `FileMetaData` with one more field
    of Thrift's UUID type (compact type 13, 16 bytes, which pyarrow's Thrift passes over); its
    `row_groups` list naming i32 elements (Thrift's generated reader reads each as a struct anyway)."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    body, footer = data[:-8 - length], data[-8 - length:-8]
    assert footer[-1 - _SIGNATURE_BYTES] == 0  # the FileMetaData's STOP
    if how.startswith("footer"):
        path.write_bytes((b"PAR" if how == "footer and 3 bytes" else b"") + data[-8 - length:])
        return
    if how == "a UUID field":
        cut = len(footer) - 1 - _SIGNATURE_BYTES
        footer = footer[:cut] + bytes([0x0D, 30 << 1]) + bytes(range(16)) + footer[cut:]  # field 30, type 13
    else:
        reader = parquet_pages._Reader(io.BytesIO(footer), 0)
        reader.limit, reader.buffer = len(footer), footer
        last = 0
        while True:
            number, kind = parquet_pages._field(reader, last)
            if number == 4:
                break
            last = number
            parquet_pages._skip(reader, kind, 0)
        assert footer[reader.position] & 0x0F == 12  # field 4, row_groups: a list of structs
        footer = footer[:reader.position] + bytes([footer[reader.position] & 0xF0 | 5]) + footer[reader.position + 1:]
    path.write_bytes(body + footer + len(footer).to_bytes(4, "little") + b"PAR1")


@pytest.mark.parametrize("how", ["footer alone", "footer and 3 bytes", "a UUID field", "row groups listed as i32"])
def test_an_encrypted_footer_pyarrow_parses_past_the_old_walk_is_a_bad_parquet(tmp_path: Path, how: str):
    """Encrypted files the footer walk let through to pyarrow, which then aborted the build (exit
    -6): a file of just its footer (the walk wanted 4 bytes more than pyarrow does), a footer
    field of a type the walk did not know (it gave up and waved the file through), a list whose
    declared element type the walk believed. Each is now the one `bad_parquet` of its repo, its
    neighbour built."""
    png = _png()
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "train-00000-of-00002.parquet"
    _write_encrypted(_hf_table(png, "abc"), path, "image", plaintext_footer=True)
    _crafted(path, how)
    assert pq.ParquetFile(path).schema_arrow.names == ["image", "text"]  # pyarrow parses the footer
    pq.write_table(_hf_table(png, "def"), tmp_path / "data" / "train-00001-of-00002.parquet")
    items = _read_in_child(tmp_path, "huggingface")
    rejects = [i for i in items if i[0] == "Reject"]
    assert [i[0] for i in items].count("ImageRecord") == 3, items
    assert [r[1] for r in rejects] == ["bad_parquet"], items
    assert "encrypted" in rejects[0][2] and "train-00000-of-00002.parquet" in rejects[0][2], rejects


def test_a_footer_the_walk_cannot_read_to_its_end_is_refused(tmp_path: Path):
    """A footer cut short, or holding a field of a type Thrift does not know (14), is refused by
    the walk (pyarrow refuses it too): never waved through to pyarrow unread."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"n": [1, 2, 3]}), buffer)
    data = buffer.getvalue()
    length = int.from_bytes(data[-8:-4], "little")
    body, footer = data[:-8 - length], data[-8 - length:-8]
    for patched in (footer[:length // 2], footer[:-1] + bytes([0x0E, 60]) + b"\x00" * 20 + b"\x00"):
        damaged = body + patched + len(patched).to_bytes(4, "little") + b"PAR1"
        with pytest.raises(OSError):
            pq.read_table(io.BytesIO(damaged))
        assert "cannot be read to its end" in (parquet_pages.encryption_problem(io.BytesIO(damaged)) or "")



def test_a_layout_is_judged_by_checked_footers_alone(tmp_path: Path, monkeypatch):
    """The layout's detection read each parquet's schema with `pq.read_schema`, past the footer
    check: an encrypted file's schema was taken for its repo's, and a footer over its budget read
    whole. Now the first file whose footer passes speaks for the repo, the other is its unit's
    `bad_parquet`, and a footer over the budget is refused unread."""
    from sources import web_format

    png = _png()
    encrypted, honest = tmp_path / "a.parquet", tmp_path / "b.parquet"
    _write_encrypted(_hf_table(png, "abc"), encrypted, "image", plaintext_footer=True)
    pq.write_table(_hf_table(png, "def"), honest)
    found = web_format.first_schema(str(tmp_path), [str(encrypted), str(honest)], False)
    assert found is not None and found[0] == str(honest)
    shard = tmp_path / "00000.parquet"  # img2dataset's output_format=parquet, 2 MB of schema metadata
    pq.write_table(pa.table({"key": ["0"], "jpg": [png]}).replace_schema_metadata({"note": "x" * (2 << 20)}), shard)
    assert web_format.image_column(str(shard)) == "jpg"
    monkeypatch.setattr(parquet_pages, "MAX_FOOTER_BYTES", 1 << 20)
    with pytest.raises(pa.ArrowInvalid, match="over the 1048576-byte budget"):
        web_format.image_column(str(shard))


def _null_image_file(path: Path, groups: int, rows: int, statistics: bool, jpeg: bytes | None = None) -> None:
    """A `datasets` parquet of `groups` row groups of `rows` rows whose `Image` cell is null (the
    last row of each group an image when `jpeg` is given)."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [None] * (rows - 1) + [{"bytes": jpeg, "path": None} if jpeg else None]
    schema = pa.schema([("image", image)], metadata={b"huggingface": json.dumps(
        {"info": {"features": {"image": {"_type": "Image"}}}}).encode()})
    table = pa.Table.from_arrays([pa.array(cells * groups, image)], schema=schema)
    pq.write_table(table, path, row_group_size=rows, write_statistics=statistics)


@pytest.mark.parametrize("written", ["statistics say all null", "no statistics", "an image a group"])
def test_null_images_of_many_row_groups_are_listed_a_bounded_count_per_file(tmp_path: Path, monkeypatch,
                                                                            written: str):
    """The cap of `MAX_LISTED_ROWS` rejects one a row held per row group: pyarrow writes 10**6 null
    images in 100 groups of 10,000 as a 43 KB file, and it gave 10**6 `missing_image` rejects
    (12.9 CPU-s; 10**8 rows, 4 MB: ~20 minutes and 10**8 lines of rejects). The cap now holds for
    the file, its groups together: 25 groups of 40 null rows, capped at 30, give 30 rejects one a
    row and then one per group for the rest of it, each naming how many rows it stands for."""
    from sources import hf_parquet
    from sources.laion import LaionSource
    from sources.records import ImageRecord, Reject

    monkeypatch.setattr(hf_parquet, "MAX_LISTED_ROWS", 30)
    groups, rows = 25, 40
    (tmp_path / "data").mkdir()
    _null_image_file(tmp_path / "data" / "train-00000-of-00001.parquet", groups, rows,
                     statistics=written != "no statistics", jpeg=_png() if written == "an image a group" else None)
    source = LaionSource("hf", str(tmp_path))
    items = [item for unit in source.units() for item in source.read(unit)]
    images = groups if written == "an image a group" else 0
    assert sum(isinstance(i, ImageRecord) for i in items) == images
    rejects = [i for i in items if isinstance(i, Reject)]
    assert {r.reason for r in rejects} == {"missing_image"}
    singles = [r for r in rejects if "this one reject for them all" not in r.detail]
    assert len(singles) == 30, len(singles)
    stood_for = sum(int(r.detail.split(" rows", 1)[0].split("(")[-1].split()[-1]) for r in rejects
                    if "this one reject for them all" in r.detail)
    assert len(singles) + stood_for == groups * rows - images  # every null row accounted, once
    assert len(rejects) <= 30 + groups



def test_row_groups_too_large_are_listed_a_bounded_count_per_file(tmp_path: Path, monkeypatch):
    """`row_group_too_large` is capped per file as `missing_image` is: 25 groups of 40 rows, each
    over a budget patched to 1,000 bytes and a cap patched to 30, give 30 rejects one a row (the
    file's first 30 rows) and then one per group standing for the rest, every row accounted once
    (capped a group at a time, they were 25 x 30 one a row)."""
    from sources import hf_parquet
    from sources.laion import LaionSource
    from sources.records import ImageRecord, Reject

    monkeypatch.setattr(hf_parquet, "MAX_LISTED_ROWS", 30)
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", 1000)
    groups, rows = 25, 40
    png = _png()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_FEATURES)
    table = pa.Table.from_pylist([{"image": {"bytes": png + bytes([i % 256]), "path": None}, "text": f"row {i}"}
                                  for i in range(groups * rows)], schema=schema)
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet", row_group_size=rows,
                   use_dictionary=False)
    source = LaionSource("hf", str(tmp_path))
    items = [item for unit in source.units() for item in source.read(unit)]
    assert not any(isinstance(i, ImageRecord) for i in items)
    rejects = [i for i in items if isinstance(i, Reject)]
    assert {r.reason for r in rejects} == {"row_group_too_large"}
    singles = [r.input.rsplit(" row ", 1)[1] for r in rejects if "this one reject for them all" not in r.detail]
    assert singles == [str(i) for i in range(30)], singles
    stood_for = sum(int(r.detail.split(" rows", 1)[0].split("(")[-1].split()[-1]) for r in rejects
                    if "this one reject for them all" in r.detail)
    assert len(singles) + stood_for == groups * rows
    assert len(rejects) == 30 + groups  # group 0: 30 singles and one for its rest; groups 1-24 one each


def _not_utf8_strings(values: list[bytes]) -> pa.Array:
    """A pyarrow `string` array holding `values` unchecked (as a C++ or Rust writer may hand pyarrow
    bytes it never decoded): pyarrow writes and reads it; Python cannot decode it."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.array(offsets, pa.int32()).buffers()[1],
                                                             pa.py_buffer(b"".join(values))])


@pytest.mark.parametrize("layout", ["dictionary", "plain", "img2dataset"])
def test_a_caption_that_is_not_utf8_is_read_as_a_binary_one_and_its_row_built(tmp_path: Path, layout: str):
    """A `datasets` parquet whose `text` column holds Latin-1 bytes in one row of 6 (dictionary-
    encoded, as pyarrow writes by default, or plain), or an img2dataset `output_format=parquet`
    shard whose `caption` and `txt` do (a Spark or DuckDB rewrite of a Latin-1 URL list; pyarrow
    writes and reads them unchecked): the whole file was one `bad_parquet`, then that row a
    `text_not_utf8` reject, its image lost for a caption. Now the caption is read as a `binary`
    caption's is (UTF-8, each byte that is not as U+FFFD) and every image is built; a key that is
    not UTF-8 (no sample can be named by it) is still its row's `text_not_utf8`."""
    from sources.laion import LaionSource
    from sources.records import ImageRecord, Reject

    png = _png()
    captions = [b"a red square", b"red", b"caf\xe9 cr\xe8me", b"red", b"a red square", b"square"]
    if layout == "img2dataset":
        keys = [b"%09d" % i for i in range(5)] + [b"00000\xff005"]
        texts = captions[:4] + [b"a r\xe9d square", captions[5]]  # `txt` bad in row 4 too: built there
        table = pa.table({"key": _not_utf8_strings(keys), "caption": _not_utf8_strings(captions),
                          "txt": _not_utf8_strings(texts), "status": ["success"] * 6, "png": [png] * 6})
        path = tmp_path / "00000.parquet"
    else:
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        schema = pa.schema([("image", image), ("text", pa.string())], metadata=HF_FEATURES)
        table = pa.Table.from_arrays([pa.array([{"bytes": png, "path": None}] * 6, image),
                                      _not_utf8_strings(captions)], schema=schema)
        (tmp_path / "data").mkdir()
        path = tmp_path / "data" / "train-00000-of-00001.parquet"
    pq.write_table(table, path, use_dictionary=layout != "plain")
    with pytest.raises(UnicodeDecodeError):
        pq.read_table(path).to_pylist()
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert ("RLE_DICTIONARY" in column.encodings) == (layout != "plain")
    source = LaionSource("hf", str(tmp_path))
    items = [item for unit in source.units() for item in source.read(unit)]
    rejects = [(r.reason, r.input) for r in items if isinstance(r, Reject)]
    built = [i for i in items if isinstance(i, ImageRecord)]
    assert all(i.data == png for i in built)
    expected = [c.decode("utf-8", errors="replace") for c in captions]
    assert expected[2] == "caf\ufffd cr\ufffdme"
    notices = source.notices()  # said once: how many rows' captions, `txt` and `caption` alike
    if layout == "img2dataset":
        assert rejects == [("text_not_utf8", "00000.parquet row 5")]
        assert [i.lineage["caption"] for i in built] == [t.decode("utf-8", errors="replace") for t in texts[:5]]
        assert built[4].lineage["caption"] == "a r\ufffdd square"
        assert built[2].lineage["img2dataset"]["caption"] == expected[2]
        assert [n.split(" not UTF-8")[0] for n in notices] == ["hf: 00000.parquet holds 2 captions that are"]
    else:
        assert rejects == []
        assert [i.lineage["caption"] for i in built] == expected
        assert "text" not in built[2].lineage["huggingface"]
        assert [n.split(", which")[0] for n in notices] == [
            "hf: data/train-00000-of-00001.parquet holds 1 caption that is not UTF-8 in its string column 'text'"]
    assert "U+FFFD" in notices[0]


def test_rows_around_text_not_utf8_are_read_whole_and_come_as_a_row_at_a_time_would(tmp_path: Path, monkeypatch):
    """A file whose batches each hold a bad caption was read a row at a time (100,000 rows of 10
    string columns: 25 CPU-s against 1.98 honest). Now each column is read whole and a failing one
    halved to its bad rows: only the bad rows are judged one at a time, and what comes is what the
    row-at-a-time read gave: the good rows' values, each bad row's `text_not_utf8` naming its
    columns (a caption, an image's `path` inside its struct) and its good keys."""
    from sources import hf_parquet

    rows = 150
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    captions = [b"caf\xe9" if i % 64 in (3, 4, 40) else b"caption %d" % i for i in range(rows)]
    paths = [b"\xff.png" if i in (4, 70) else b"%d.png" % i for i in range(rows)]
    cells = pa.StructArray.from_arrays([pa.array([b"\x89PNG%d" % i for i in range(rows)]), _not_utf8_strings(paths)],
                                       fields=list(image))
    keys = [b"k%d" % i if i != 3 else b"k\xe9" for i in range(rows)]
    table = pa.table({"key": _not_utf8_strings(keys), "image": cells, "text": _not_utf8_strings(captions),
                      "n": list(range(rows))})
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path, row_group_size=rows)

    def read(parquet_path: Path) -> list:
        with open(parquet_path, "rb") as handle:
            parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
            return list(hf_parquet.row_batches(parquet, "bad.parquet", ("key",), source=handle))

    judged = []
    row_or_reject = hf_parquet._row_or_reject
    monkeypatch.setattr(hf_parquet, "_row_or_reject", lambda row, *a: judged.append(a[0]) or row_or_reject(row, *a))
    items = read(path)
    bad_rows = [3, 4, 40, 67, 68, 70, 104, 131, 132]
    assert judged == bad_rows  # one at a time: the bad rows alone (each of the 150 before)
    expected, rejects = {}, {}
    for i in range(rows):  # the row-at-a-time read, by hand
        if i not in bad_rows:
            expected[i] = {"key": f"k{i}", "image": {"bytes": b"\x89PNG%d" % i, "path": f"{i}.png"},
                           "text": f"caption {i}", "n": i}
    got = {}
    for item in items:
        if isinstance(item, hf_parquet.TooLarge):
            assert item.reason == "text_not_utf8" and item.first_row not in rejects
            rejects[item.first_row] = (item.rows, item.detail.split(": column ")[1].split(" holds")[0])
        else:
            got.update({item[0] + offset: row for offset, row in enumerate(item[1])})
    assert got == expected
    assert rejects == {3: ([{}], "'key', 'text'"), 4: ([{"key": "k4"}], "'image', 'text'"),
                       40: ([{"key": "k40"}], "'text'"), 67: ([{"key": "k67"}], "'text'"),
                       68: ([{"key": "k68"}], "'text'"), 70: ([{"key": "k70"}], "'image'"),
                       104: ([{"key": "k104"}], "'text'"), 131: ([{"key": "k131"}], "'text'"),
                       132: ([{"key": "k132"}], "'text'")}
    # `text` read as a caption: its bad cells come as their bytes, the column's bytes taken once (each
    # bad cell's taken alone: 100,000 rows, every other one Latin-1, 0.94 CPU-s against 0.12 honest)
    judged.clear()
    taken = []
    raw_text = hf_parquet.raw_text
    monkeypatch.setattr(hf_parquet, "raw_text", lambda column: taken.append(len(column)) or raw_text(column))
    with open(path, "rb") as handle:
        parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
        items = list(hf_parquet.row_batches(parquet, "bad.parquet", ("key",), source=handle, captions=("text",)))
    assert judged == [3, 4, 70], judged  # the rows whose key or path is bad: alone, as before
    assert taken == [64, 1, 1, 64, 22], taken  # once a batch of 64 rows (and in rows 3 and 4, alone)
    got = {item[0] + offset: row for item in items if not isinstance(item, hf_parquet.TooLarge)
           for offset, row in enumerate(item[1])}
    assert sorted(got) == [i for i in range(rows) if i not in (3, 4, 70)]
    assert [got[i]["text"] for i in (0, 40, 67, 68, 104, 131, 132)] == ["caption 0"] + [b"caf\xe9"] * 6


def test_a_footer_over_its_budget_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    """A footer is read whole (by pyarrow and by the walk) before any check of what it holds: one
    of 7 MB (3 MB of schema metadata, kept twice), over a budget patched to 1 MiB, is refused from its declared
    length (`MAX_FOOTER_BYTES`, 64 MiB), its bytes never read; the same file under the budget passes."""
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"n": [1]}).replace_schema_metadata({"note": "x" * (3 << 20)}), path)
    monkeypatch.setattr(parquet_pages, "MAX_FOOTER_BYTES", 1 << 20, raising=False)
    with open(path, "rb") as source:
        assert "over the 1048576-byte budget" in (parquet_pages.encryption_problem(source) or "")
    monkeypatch.setattr(parquet_pages, "MAX_FOOTER_BYTES", 16 << 20)  # 7 MB: kept twice (key-value, ARROW:schema)
    with open(path, "rb") as source:
        assert parquet_pages.encryption_problem(source) is None
