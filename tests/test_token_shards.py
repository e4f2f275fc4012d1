"""Token shards (Arrow IPC) and the LVM/EasyLM JSONL interchange."""

from __future__ import annotations

import json
import os
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


@pytest.mark.parametrize("kept", [(), ("bytes",), ("sha256",)], ids=["empty", "no_sha256", "no_bytes"])
@pytest.mark.parametrize("verify", ["full", "size"])
def test_stats_without_their_digest_or_size_are_refused(tmp_path: Path, kept: tuple[str, ...], verify: str):
    """Old code skipped the check a stats field was missing for: a shard whose token changed, its
    stats `{}`, was read (and trained on, even with verify="full") with no word."""
    from uvd_pipeline.shards import ShardDamaged

    path = tmp_path / "web-train-00000.arrow"
    rows = _rows(2)
    written = write_token_shard(str(path), rows, META)
    data = bytearray(path.read_bytes())
    at = data.find(rows[-1].tokens[:4].tobytes())  # a token of the first sentence, still inside the codebook
    data[at:at + 2] = np.uint16((int(rows[-1].tokens[0]) + 1) % 8192).tobytes()
    path.write_bytes(bytes(data))
    stats_path = tmp_path / "web-train-00000.stats.json"
    stats_path.write_text(json.dumps({k: v for k, v in written.items() if k not in ("bytes", "sha256") or k in kept}))
    with pytest.raises(ShardDamaged, match=rf"{stats_path}: records no (sha256|bytes|sha256 and bytes) .*"
                                           r"write_token_shard.*import-jsonl"):
        read_token_shard(str(path), verify=verify)


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
    with pytest.raises(ValueError, match="bad.jsonl line 1: 10 tokens are not whole images of 256 codes"):
        import_jsonl(str(tmp_path / "bad.jsonl"), META, str(tmp_path / "bad.arrow"))


def test_memory_mapped_reading(tmp_path: Path):
    path = tmp_path / "m.arrow"
    write_token_shard(str(path), _rows(3), META)
    table, _ = read_token_shard(str(path))
    view = sentence_tokens(table, 0)
    assert not view.flags.owndata  # a view into the mapped file, not a copy
    with open(path, "rb") as handle:
        assert ipc.open_file(handle).num_record_batches == 1


# -- import-jsonl / export-jsonl through the CLI, on lines written as LVM/EasyLM writes them --------
def _lvm_line(tokens) -> str:
    """One line as the released LVM data (EasyLM's JSONL): base64 of little-endian int32 ids."""
    import base64

    return json.dumps({"tokens": base64.b64encode(np.asarray(tokens, dtype="<i4").tobytes()).decode("ascii")})


def _import(capsys, jsonl: Path, out: Path, *flags: str) -> tuple[int, str]:
    return _cli(capsys, "import-jsonl", str(jsonl), "--out", str(out), *flags)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from uvd_pipeline.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


GOOD = _lvm_line(np.arange(256) % 16)
HOSTILE = {
    "bad base64": ('{"tokens": "!!!notbase64@@"}', "'tokens' is not valid base64"),
    "length not a multiple of 4": (json.dumps({"tokens": "AQID"}), "'tokens' decodes to 3 bytes, not whole int32 "
                                                                    "tokens (a multiple of 4 bytes)"),
    "not JSON": ("hello", "not JSON (Expecting value at column 1)"),
    "a list": ("[1, 2]", "a JSON list, not an object with a 'tokens' field"),
    "no tokens": ('{"toks": "AAAA"}', "no 'tokens' field (it has 'toks')"),
    "tokens a number": ('{"tokens": 5}', "'tokens' is a JSON int, not a base64 string"),
    "id >= codebook": (_lvm_line(np.full(256, 9000)), "token id 9000 at position 0 is outside the codebook 0..8191 "
                                                      "(256 of the line's 256 ids are); give the codebook size of "
                                                      "the tokenizer that made them"),
    "negative id": (_lvm_line([*range(255), -1]), "token id -1 at position 255 is outside the codebook 0..8191 "
                                                          "(1 of the line's 256 ids are); give the codebook size of "
                                                          "the tokenizer that made them"),
    "no ids": (_lvm_line([]), "no tokens"),
    # str.strip() took it for a blank line: skipped, the shard one sentence short, exit 0
    "separators only": ("\x1c\x1d\x1e\x1f\x0b\x0c\x85\u2028", "not JSON (Expecting value at column 1)"),
    # json kept the last without a word
    "tokens twice": ('{"tokens": "AAAAAA==", "tokens": "AQAAAA=="}',
                     "'tokens' given twice; a reader keeps one of them, so no one sentence is meant"),
    # a RecursionError traceback, exit 1, before
    "nested 5,000 deep": ('{"a": ' + "[" * 5000 + "]" * 5000 + ', "tokens": "AAAA"}',
                          "JSON nested deeper than Python's reader goes, no sentence of token JSONL"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_import_jsonl_names_the_file_and_line_of_a_bad_line(tmp_path: Path, capsys, case):
    """Each hostile line ended in a traceback without its line number; now one line naming both,
    exit 2, and no shard (nor a temporary) is left: a shard without the line would be trained on as
    if it held the whole file."""
    line, expected = HOSTILE[case]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join([GOOD, GOOD, line, GOOD]) + "\n")
    code, err = _import(capsys, jsonl, tmp_path / "out" / "x.arrow")
    assert code == 2 and err == f"error: {jsonl} line 3: {expected}\n"
    assert not (tmp_path / "out").exists()


def test_import_jsonl_refuses_a_line_that_is_not_utf8(tmp_path: Path, capsys):
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_bytes((GOOD + "\n").encode() + b'{"tokens": "\xff"}\n')
    code, err = _import(capsys, jsonl, tmp_path / "x.arrow")
    assert code == 2 and err == f"error: {jsonl} line 2: not UTF-8 text\n"


def test_import_jsonl_refuses_codebooks_and_sizes_a_shard_cannot_hold(tmp_path: Path, capsys):
    """`--codebook-size 100000` let id 70000 through, stored as uint16 (read back 4464); a negative
    `--tokens-per-image` wrote n_images = -1 per sentence. The bounds are checked once, by the
    library (library callers are held to them too); the command's one-line error names the flag."""
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text(_lvm_line(np.full(256, 70_000)) + "\n")
    code, err = _import(capsys, jsonl, tmp_path / "big.arrow", "--codebook-size", "100000")
    assert code == 2 and err == "error: --codebook-size 100000: token shards store uint16 codes, so it must be 1..65536\n"
    code, err = _import(capsys, jsonl, tmp_path / "big.arrow", "--codebook-size", "65536")
    assert code == 2 and f"error: {jsonl} line 1: token id 70000 at position 0 is outside the codebook 0..65535 " in err
    for flag, rule in (("--tokens-per-image", "must be a positive integer"), ("--image-size", "must be a positive integer"),
                       ("--codebook-size", "token shards store uint16 codes, so it must be 1..65536")):
        for value in ("-256", "0"):
            code, err = _import(capsys, jsonl, tmp_path / "n.arrow", flag, value)
            assert code == 2 and err == f"error: {flag} {value}: {rule}\n"
        code, err = _import(capsys, jsonl, tmp_path / "n.arrow", flag, "many")
        assert code == 2 and f"argument {flag}: invalid int value: 'many'" in err  # argparse's own usage error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]
    from uvd_pipeline.shards import ImportSettingError

    for meta, field, message in ((TokenShardMeta("t", "h", 100_000, 256, 256, "c"), "codebook_size",
                                  "codebook size 100000: token shards store uint16 codes, so it must be 1..65536"),
                                 (TokenShardMeta("t", "h", 16, -256, 256, "c"), "tokens_per_image",
                                  "tokens per image -256: must be a positive integer"),
                                 (TokenShardMeta("t", "h", 16, 256, 0, "c"), "image_size",
                                  "image size 0: must be a positive integer")):
        with pytest.raises(ImportSettingError) as info:
            import_jsonl(str(jsonl), meta, str(tmp_path / "lib.arrow"))
        assert (info.value.field, str(info.value)) == (field, message)
    # the largest codebook uint16 holds: its last id survives the round trip
    jsonl.write_text(_lvm_line(np.full(256, 65_535)) + "\n")
    assert _import(capsys, jsonl, tmp_path / "max.arrow", "--codebook-size", "65536")[0] == 0
    assert _cli(capsys, "export-jsonl", str(tmp_path / "max.arrow"), "--out", str(tmp_path / "back.jsonl"))[0] == 0
    assert decode_jsonl_line((tmp_path / "back.jsonl").read_text()).tolist() == [65_535] * 256


def test_import_jsonl_writes_a_shard_named_arrow_with_its_stats_beside_it(tmp_path: Path, capsys):
    """`--out x/tokens.bin` wrote its stats as `toke.stats.json` (six characters cut as if from
    `.arrow`), a shard no reader finds: an output not named .arrow is refused."""
    jsonl = tmp_path / "good.jsonl"
    jsonl.write_text(GOOD + "\n" + GOOD + "\n")
    code, err = _import(capsys, jsonl, tmp_path / "d" / "tokens.bin", "--codebook-size", "16")
    assert code == 2 and err == (f"error: {tmp_path}/d/tokens.bin: a token shard's name ends in .arrow (readers find "
                                 f"shards, and their .stats.json beside them, by it), e.g. {tmp_path}/d/tokens.arrow\n")
    assert not (tmp_path / "d").exists()
    code, _ = _import(capsys, jsonl, tmp_path / "d" / "tokens.arrow", "--codebook-size", "16")
    assert code == 0 and sorted(p.name for p in (tmp_path / "d").iterdir()) == ["tokens.arrow", "tokens.stats.json"]
    assert find_shards(str(tmp_path / "d")) == [str(tmp_path / "d" / "tokens.arrow")]
    with pytest.raises(ValueError, match="a token shard's name ends in .arrow"):
        write_token_shard(str(tmp_path / "tokens.bin"), _rows(1), META)


def test_jsonl_commands_refuse_a_folder_as_out_and_leave_nothing(tmp_path: Path, capsys):
    """`--out` naming a folder: a traceback after the whole write, and a `outdir.tmp-XXXX` left."""
    jsonl = tmp_path / "good.jsonl"
    jsonl.write_text(GOOD + "\n")
    folder = tmp_path / "e" / "outdir"
    folder.mkdir(parents=True)
    code, err = _import(capsys, jsonl, folder, "--codebook-size", "16")
    assert code == 2 and err == (f"error: {folder} is a folder; name the token shard file to write, e.g. "
                                 f"{folder}/tokens.arrow\n")
    assert _import(capsys, jsonl, tmp_path / "t.arrow", "--codebook-size", "16")[0] == 0
    code, err = _cli(capsys, "export-jsonl", str(tmp_path / "t.arrow"), "--out", str(folder))
    assert code == 2 and err == f"error: {folder} is a folder; name the file to write, e.g. {folder}/tokens.jsonl\n"
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["outdir"] and not any(folder.iterdir())
    (tmp_path / "afile").write_text("x")
    code, err = _cli(capsys, "export-jsonl", str(tmp_path / "t.arrow"), "--out", str(tmp_path / "afile" / "x.jsonl"))
    assert code == 2 and err.startswith(f"error: {tmp_path}/afile/x.jsonl: cannot be written (")


def test_import_jsonl_refuses_a_kind_or_source_no_reader_knows(tmp_path: Path, capsys):
    """`--kind imgae` wrote a shard whose sentences every mixture silently counted as single images,
    and `--source my.web` sentence ids with a dot (webdataset cuts keys at the first dot); both
    exited 0. Checked by the library, named by the command as its flag; nothing is written."""
    jsonl = tmp_path / "ok.jsonl"
    jsonl.write_text(GOOD + "\n")
    code, err = _import(capsys, jsonl, tmp_path / "k.arrow", "--kind", "imgae")
    assert code == 2 and err == ("error: --kind imgae: must be one of image, video, multiview, category, pairs, "
                                 "multitask, annotated_video\n")
    code, err = _import(capsys, jsonl, tmp_path / "s.arrow", "--source", "my.web")
    assert code == 2 and err == ("error: --source my.web: use lower_snake_case (a-z, 0-9, _) starting with a letter, "
                                 "as a config's source names\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.jsonl"]
    assert _import(capsys, jsonl, tmp_path / "v.arrow", "--kind", "video", "--source", "web_2")[0] == 0


def test_import_jsonl_reads_each_line_within_the_longest_sentence(tmp_path: Path, capsys):
    """A 300 MB line (a binary file given by mistake) took 690 MB to read, and /dev/zero or a fifo
    was read until memory ran out. A line is read within the longest sentence a build writes (64
    images of the import's codes, base64, with room around it: 152,920 bytes for 256 codes), a
    longer one refused naming its number, and a fifo or device refused by its type, unopened."""
    from uvd_pipeline.shards import max_line_bytes

    limit = max_line_bytes(256)
    assert limit == 152_920
    longest = _lvm_line(np.arange(64 * 256) % 16)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text(longest + "\r\n" + GOOD + "\n")
    assert _import(capsys, jsonl, tmp_path / "x.arrow") == (0, "")
    jsonl.write_bytes((GOOD + "\n").encode() + b"A" * (limit + 1) + b"\n")
    code, err = _import(capsys, jsonl, tmp_path / "y.arrow")
    assert code == 2 and err == (f"error: {jsonl} line 2: longer than {limit} bytes, the longest a sentence of 64 "
                                 "images of 256 codes takes; no line of token JSONL\n")
    code, err = _import(capsys, Path("/dev/zero"), tmp_path / "z.arrow")
    assert code == 2 and err == "error: /dev/zero is a character device, not a JSONL file; save what it gives to a file first\n"
    assert not (tmp_path / "y.arrow").exists() and not (tmp_path / "z.arrow").exists()


def test_import_jsonl_reads_a_pipe(tmp_path: Path, capsys):
    """`zcat x.jsonl.gz | import-jsonl /dev/stdin` was refused as 'a fifo (named pipe)', as a device
    is; a pipe is read, within the same line limit (a device is still refused, above)."""
    import threading

    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as handle:
            handle.write((GOOD + "\n" + GOOD + "\n").encode())

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert _import(capsys, Path(f"/dev/fd/{read_end}"), tmp_path / "s.arrow") == (0, "")
    finally:
        writer.join()
        os.close(read_end)
    assert read_token_shard(str(tmp_path / "s.arrow"))[0].column("sentence_id").to_pylist() == [
        f"jsonl-{read_end}-000000000", f"jsonl-{read_end}-000000001"]


def test_export_jsonl_refuses_an_out_that_is_one_of_its_inputs(tmp_path: Path, capsys):
    """`export-jsonl A.arrow --out A.arrow` replaced the committed shard with JSONL (its stats left
    naming the old one), as did an --out that is the same file by another name (a hard link) or a
    shard's stats file. Each is refused, the shard untouched."""
    shard = tmp_path / "t.arrow"
    write_token_shard(str(shard), _rows(), META)
    before = shard.read_bytes()
    link = tmp_path / "t.jsonl"
    os.link(shard, link)
    stats = tmp_path / "t.stats.json"
    for out, said in ((shard, f"{shard}: --out names a token shard (.arrow); name the JSONL file to write, e.g. "
                              f"{tmp_path / 't.jsonl'}"),
                      (link, f"{link} is {shard}, one of the export's inputs; name another file to write"),
                      (stats, f"{stats} is {stats}, one of the export's inputs; name another file to write")):
        assert _cli(capsys, "export-jsonl", str(shard), "--out", str(out)) == (2, f"error: {said}\n")
    assert shard.read_bytes() == before and json.loads(stats.read_text())["file"] == "t.arrow"


@pytest.mark.parametrize("text", ["", "\n", " \t\r\n\n"])
def test_import_jsonl_of_no_sentence_writes_no_shard(tmp_path: Path, capsys, text):
    """An empty or all-blank JSONL became a committed shard of 0 sentences, exit 0 (a truncated
    download imported as data). Now an error, and nothing written."""
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text(text)
    code, err = _import(capsys, jsonl, tmp_path / "x.arrow")
    assert (code, err) == (2, f"error: {jsonl}: no sentence in it (empty, or blank lines only); nothing was written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_import_jsonl_takes_sentence_ids_from_the_whole_file_name(tmp_path: Path, capsys):
    """Sentence ids took the file's name up to its first dot: part.a.jsonl and part.b.jsonl gave
    the same ids, .hidden.jsonl an empty middle, and a name's escape sequences and HTML went into
    every id. Now the name less its last suffix. Names ids cannot hold as they are (`my data`,
    `café`, `日本`, `train+val`) were then refused; each becomes a safe name with a hash of the whole
    one (two made alike stay apart), and a name of safe characters (`_part`) is kept."""
    ids = {}
    names = ("part.a.jsonl", "part.b.jsonl", "_part.jsonl", "my data.jsonl", "my_data.jsonl", "café.jsonl",
             "日本.jsonl", "train+val.jsonl", ".hidden.jsonl", "\x1b[31m<b>x y.jsonl")
    for name in names:
        (tmp_path / name).write_text(GOOD + "\n" + GOOD + "\n")
        assert _import(capsys, tmp_path / name, tmp_path / f"{len(ids)}.arrow")[0] == 0
        table, _ = read_token_shard(str(tmp_path / f"{len(ids)}.arrow"))
        ids[name] = table.column("sentence_id").to_pylist()
    assert ids["part.a.jsonl"] == ["jsonl-part.a-000000000", "jsonl-part.a-000000001"]
    assert ids["part.b.jsonl"] == ["jsonl-part.b-000000000", "jsonl-part.b-000000001"]
    assert {name: got[1] for name, got in ids.items() if not name.startswith("part.")} == {
        "_part.jsonl": "jsonl-_part-000000001", "my data.jsonl": "jsonl-my_data-b2167b0a-000000001",
        "my_data.jsonl": "jsonl-my_data-000000001", "café.jsonl": "jsonl-caf_-850f7dc4-000000001",
        "日本.jsonl": "jsonl-__-cf2abf0c-000000001", "train+val.jsonl": "jsonl-train_val-50e3c321-000000001",
        ".hidden.jsonl": "jsonl-_hidden-16924190-000000001",
        "\x1b[31m<b>x y.jsonl": "jsonl-__31m_b_x_y-c4e3c25d-000000001"}


def test_import_jsonl_drops_a_utf8_bom_on_the_first_line(tmp_path: Path, capsys):
    """A JSONL saved with a UTF-8 byte order mark (Notepad, PowerShell's Out-File) was refused:
    'line 1: not JSON'. The mark is dropped from the first line; one inside a later line is no
    JSON still."""
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n" + GOOD + "\n").encode())
    assert _import(capsys, jsonl, tmp_path / "x.arrow") == (0, "")
    assert read_token_shard(str(tmp_path / "x.arrow"))[0].num_rows == 2
    jsonl.write_bytes((GOOD + "\n").encode() + b"\xef\xbb\xbf" + (GOOD + "\n").encode())
    code, err = _import(capsys, jsonl, tmp_path / "y.arrow")
    assert (code, err) == (2, f"error: {jsonl} line 2: not JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at column 1)\n")


def test_a_folder_whose_name_holds_glob_characters_is_read_whole(tmp_path: Path, capsys):
    """`export-jsonl "br [v2]/tokens"` exported nothing (exit 2, no shards match): the folder's name
    went into a glob, where `[v2]` is a character class; the trainer's `find_shards` found none
    either. A folder's name is taken as it is."""
    from uvd_pipeline.shards import find_shards

    folder = tmp_path / "br [v2]" / "tokens" / "web" / "train"
    folder.mkdir(parents=True)
    shard = folder / "web-train-00000.arrow"
    write_token_shard(str(shard), _rows(), META)
    assert find_shards(str(tmp_path / "br [v2]" / "tokens")) == [str(shard)]
    out = tmp_path / "all.jsonl"
    assert _cli(capsys, "export-jsonl", str(tmp_path / "br [v2]" / "tokens"), "--out", str(out)) == (0, "")
    assert len(out.read_text().splitlines()) == len(_rows())
