"""Token shards (Arrow IPC) and the LVM/EasyLM JSONL interchange."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from uvd_pipeline.shards import (
    SCHEMA,
    TokenRow,
    TokenShardMeta,
    decode_jsonl_line,
    encode_jsonl_line,
    export_jsonl,
    find_shards,
    import_jsonl,
    iter_rows,
    read_token_shard,
    sentence_tokens,
    write_token_shard,
)

META = TokenShardMeta("uvd-tiny", "abc123", 8192, 256, 256, "cfg1")


def _rows(n: int = 5) -> list[TokenRow]:
    rng = np.random.default_rng(0)
    return [TokenRow(f"s{i:03d}", "web", "image" if i % 2 else "video", "none", "train",
                     rng.integers(0, 8192, 256 * (1 + (i % 3)), dtype=np.uint16), {"members": [f"k{i}"]})
            for i in range(n)][::-1]


def test_schema_metadata_and_values(tmp_path: Path):
    rows = _rows()
    stats = write_token_shard(str(tmp_path / "a" / "web-train-00000.arrow"), rows, META)
    table, meta = read_token_shard(str(tmp_path / "a" / "web-train-00000.arrow"))
    assert meta == META and table.schema.remove_metadata() == SCHEMA
    assert table.column("sentence_id").to_pylist() == sorted(r.sentence_id for r in rows)
    by_id = {r.sentence_id: r for r in rows}
    for i, sid in enumerate(table.column("sentence_id").to_pylist()):
        assert np.array_equal(sentence_tokens(table, i), by_id[sid].tokens)
        assert table.column("n_images")[i].as_py() == by_id[sid].tokens.size // 256
    assert stats["sentences"] == 5 and stats["tokens"] == sum(r.tokens.size for r in rows)
    assert json.loads((tmp_path / "a" / "web-train-00000.stats.json").read_text())["sha256"] == stats["sha256"]
    # bytes are a pure function of the rows: order of arrival does not matter
    again = write_token_shard(str(tmp_path / "b" / "x.arrow"), list(reversed(rows)), META)
    assert again["sha256"] == stats["sha256"]


def test_uncommitted_and_invalid(tmp_path: Path):
    path = tmp_path / "x.arrow"
    write_token_shard(str(path), _rows(2), META)
    (tmp_path / "x.stats.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a committed token shard"):
        read_token_shard(str(path))
    assert find_shards(str(tmp_path)) == []
    bad = TokenRow("z", "web", "image", "none", "train", np.full(256, 9000, np.uint16), {})
    with pytest.raises(ValueError, match="codebook size"):
        write_token_shard(str(tmp_path / "y.arrow"), [bad], META)
    short = TokenRow("z", "web", "image", "none", "train", np.zeros(100, np.uint16), {})
    with pytest.raises(ValueError, match="multiple of 256"):
        write_token_shard(str(tmp_path / "y.arrow"), [short], META)


def test_jsonl_round_trip(tmp_path: Path):
    rows = _rows()
    shard = tmp_path / "web-train-00000.arrow"
    write_token_shard(str(shard), rows, META)
    assert export_jsonl([str(shard)], str(tmp_path / "out.jsonl")) == 5
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    first = sorted(rows, key=lambda r: r.sentence_id)[0]
    assert np.array_equal(decode_jsonl_line(lines[0]), first.tokens)
    # the released format: base64 of little-endian int32
    import base64

    raw = base64.b64decode(json.loads(lines[0])["tokens"])
    assert len(raw) == first.tokens.size * 4 and np.frombuffer(raw, "<i4")[0] == first.tokens[0]
    stats = import_jsonl(str(tmp_path / "out.jsonl"), META, str(tmp_path / "imported" / "jsonl-train-00000.arrow"))
    assert stats["sentences"] == 5
    back = list(iter_rows(str(tmp_path / "imported" / "jsonl-train-00000.arrow")))
    assert [r.tokens.tolist() for r in back] == [r.tokens.tolist() for r in sorted(rows, key=lambda r: r.sentence_id)]
    (tmp_path / "bad.jsonl").write_text(encode_jsonl_line(np.arange(10)) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        import_jsonl(str(tmp_path / "bad.jsonl"), META, str(tmp_path / "bad.arrow"))


def test_memory_mapped_reading(tmp_path: Path):
    path = tmp_path / "m.arrow"
    write_token_shard(str(path), _rows(3), META)
    table, _ = read_token_shard(str(path))
    view = sentence_tokens(table, 0)
    assert not view.flags.owndata  # a view into the mapped file, not a copy
    with open(path, "rb") as handle:
        assert ipc.open_file(handle).num_record_batches == 1
