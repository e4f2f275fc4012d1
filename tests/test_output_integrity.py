"""Commits you can trust: every committed file is checked against its stats (resume rebuilds what is
damaged; tokenize, report, export and the trainer refuse it, naming the file), `verify` checks a
whole output, one build holds an output at a time, and a dead run's temporaries are removed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, lock_being_written, shard_digests, write_config
from uvd_pipeline.shards import ShardDamaged


def _copy(mini_corpus: Path, mini_build, tmp_path: Path):
    """A copy of the session's mini build and a config (same config hash) that points at it."""
    from uvd_pipeline.config import load_config

    config, summary = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    return (load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint))),
            out, summary)


def _flip(path: Path, count: int, at: float = 0.5) -> None:
    """Invert `count` bytes in the middle of a file: same size, other bytes."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvd_pipeline", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*.tar"))}


def test_resume_rebuilds_exactly_the_damaged_shards(mini_corpus, mini_build, tmp_path, caplog, capsys):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    reference = shard_digests(out)
    total = summary["totals"]["shards"]
    assert main(["verify", str(out)]) == 0
    assert "intact: %d rendered shards" % total in capsys.readouterr().out

    tars = sorted((out / "rendered").rglob("*.tar"))
    flipped, deleted = tars[0], tars[-1]
    _flip(flipped, 64)  # same size: only a digest finds it
    deleted.unlink()  # its stats kept
    tokens = sorted((out / "tokens").rglob("*.arrow"))
    _flip(tokens[1], 32)
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    for path, why in ((flipped, "sha256 differs"), (deleted, "missing"), (tokens[1], "sha256 differs")):
        assert f"damaged: {path}: {why}" in printed
    assert "DAMAGED: 3 damaged files" in printed
    assert main(["verify", str(out), "--quick"]) == 1  # sizes only: just the missing tar
    printed = capsys.readouterr().out
    assert f"damaged: {deleted}: missing" in printed and str(flipped) not in printed and str(tokens[1]) not in printed

    untouched = {k: v for k, v in _stamps(out / "rendered").items() if k not in (
        str(flipped.relative_to(out / "rendered")), str(deleted.relative_to(out / "rendered")))}
    caplog.set_level(logging.INFO)
    # a plain resume checks sizes: it rebuilds the missing tar (and re-tokenizes the token shard,
    # whose digest is always checked), and keeps the flipped tar
    again = run_build(config).summary
    assert again["run"]["shards_resumed"] == total - 1
    assert f"damaged: {deleted}: missing" in caplog.text
    assert f"damaged: {tokens[1]}: sha256 differs" in caplog.text
    # --verify checks digests: the flipped tar is rebuilt
    caplog.clear()
    again = run_build(config, verify=True).summary
    assert again["run"]["shards_resumed"] == total - 1
    assert f"damaged: {flipped}: sha256 differs" in caplog.text
    assert shard_digests(out) == reference
    assert {k: v for k, v in _stamps(out / "rendered").items() if k in untouched} == untouched, \
        "only the damaged shards are written again"
    assert main(["verify", str(out)]) == 0
    capsys.readouterr()

    # a damaged unit in the store: verify names it; a plain resume (sizes) reuses it, --verify
    # renders that unit again
    # (the images the shards hold left the store; what is still there are images no shard holds)
    unit_images = next(p for p in sorted((out / "_units").glob("*/*.png.bin")) if b"\x89PNG" in p.read_bytes())
    data = bytearray(unit_images.read_bytes())
    data[data.index(b"\x89PNG") + 16] ^= 0xFF
    unit_images.write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 1
    assert f"{unit_images} (offset" in capsys.readouterr().out
    counters = run_build(config).summary["run"]["counters"]
    assert not any(k.endswith(".units_rendered") for k in counters)
    counters = run_build(config, verify=True).summary["run"]["counters"]
    assert sum(v for k, v in counters.items() if k.endswith(".units_rendered")) == 1
    assert shard_digests(out) == reference and main(["verify", str(out)]) == 0
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.stat().st_mode & 0o777 for p in (out / "rendered").rglob("*.tar")}
    assert modes == {0o666 & ~umask}, "tars get the mode of a new file, not a private temporary's"


def _flip_in_place(path: Path, offset: int) -> None:
    """Invert one bit at `offset`, as a failing disk would: same size, other bytes."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x01]))


def _damage_every_way(out: Path) -> dict[Path, str]:
    """A tar cut short (an interrupted copy), a bit flipped in a PNG member of a tar and in the
    tokens of an Arrow shard (a failing disk), a tar and a token folder this user may not read, a
    deleted tar: damaged file -> the start of what `verify` must say of it. Each damage is checked
    with tarfile and pyarrow to be what it claims."""
    import tarfile

    import pyarrow as pa

    def whole_members(path: Path) -> list[str]:
        """The members whose data reads whole (tarfile ends a tar cut inside a header without a word)."""
        names = []
        with contextlib.suppress(tarfile.ReadError), tarfile.open(path) as archive:
            for member in archive:
                archive.extractfile(member).read()
                names.append(member.name)
        return names

    tars = sorted((out / "rendered").rglob("*.tar"))
    cut, flipped, locked, deleted = tars[:4]
    size, members = cut.stat().st_size, whole_members(cut)
    os.truncate(cut, size // 2 + 100)
    assert 0 < len(whole_members(cut)) < len(members)
    with tarfile.open(flipped) as archive:
        png = next(m for m in archive.getmembers() if m.name.endswith(".png"))
        before = archive.extractfile(png).read()
    _flip_in_place(flipped, png.offset_data + png.size // 2)
    with tarfile.open(flipped) as archive:  # still a whole tar: only the recorded digest finds it
        assert archive.extractfile(png.name).read() != before
    shard = sorted((out / "tokens").rglob("*.arrow"))[0]
    values = pa.ipc.open_file(str(shard)).read_all().column("tokens").combine_chunks().values
    data = shard.read_bytes()
    _flip_in_place(shard, data.index(values.to_numpy().tobytes()) + 7)
    assert not pa.ipc.open_file(str(shard)).read_all().column("tokens").combine_chunks().values.equals(values)
    deleted.unlink()
    folder = out / "tokens" / "web" / "val"
    locked.chmod(0)
    folder.chmod(0)
    return {cut: f"{size // 2 + 100} bytes, its stats record {size}", flipped: "sha256 differs",
            shard: "sha256 differs", deleted: "missing", locked: "cannot be read (Permission denied); give this user",
            folder: "cannot be read (Permission denied)"}


def test_verify_names_every_damaged_file_in_one_run(mini_corpus, mini_build, tmp_path):
    """An output with a tar cut by a copy, bits flipped by a bad disk, a file and a folder this
    user may not read and a deleted tar: `verify` stopped at the first file it could not read
    (exit 2, its one `error:` line, the rest never checked). Now it names every damaged file with
    what is wrong, in one run, and exits 1 (damaged)."""
    from conftest import without_root_powers

    _, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    prefix = without_root_powers()
    expected = _damage_every_way(out)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "uvd_pipeline", "verify", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    finally:
        for path in expected:
            if path.exists():
                path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    for path, why in expected.items():
        assert f"damaged: {path}: {why}" in done.stdout, done.stdout
    assert f"DAMAGED: {len(expected)} damaged files" in done.stdout, done.stdout


def test_verify_holds_the_shard_folders_to_the_summary_and_the_stats(mini_corpus, mini_build, tmp_path, caplog,
                                                                     capsys):
    """A commit mark (stats file) deleted and files no stats file names (a stray tar beside the
    committed ones, a folder no build wrote) are damage: `verify` names them and exits 1; a plain
    resume writes the unmarked shard again and warns of the strays, `build --verify` removes them."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    reference = shard_digests(out)
    rendered_mark = sorted((out / "rendered").rglob("*.stats.json"))[0]
    token_mark = sorted((out / "tokens").rglob("*.stats.json"))[-1]
    rendered_mark.unlink()
    token_mark.unlink()
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    stem = rendered_mark.name[: -len(".stats.json")]
    assert f"damaged: {rendered_mark}: missing: summary.json lists shard {stem}" in printed
    assert f"damaged: {token_mark}: missing: summary.json counts" in printed
    assert f"damaged: {rendered_mark.with_name(stem + '.tar')}: not a file of any committed shard" in printed
    assert f"damaged: {token_mark.with_name(token_mark.name.replace('.stats.json', '.arrow'))}: not a file" in printed
    run_build(config)
    assert shard_digests(out) == reference and main(["verify", str(out)]) == 0
    capsys.readouterr()

    committed = sorted((out / "rendered").rglob("*-train-*.tar"))[0]
    stray = committed.with_name(committed.name.rsplit("-", 1)[0] + "-00099.tar")
    ghost = out / "rendered" / "ghost" / "train" / "ghost-train-00000.tar"
    ghost.parent.mkdir(parents=True)
    for path in (stray, ghost):
        shutil.copy(committed, path)
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    for path in (stray, ghost):
        assert f"damaged: {path}: not a file of any committed shard" in printed
    assert "DAMAGED: 2 damaged files" in printed
    caplog.set_level(logging.WARNING)
    run_build(config)
    assert stray.exists() and ghost.exists()
    assert f"found 2 files in the shard folders that no committed shard names: {stray}, {ghost}" in caplog.text
    caplog.clear()
    again = run_build(config, verify=True).summary
    assert f"removed 2 files in the shard folders that no committed shard names: {stray}, {ghost}" in caplog.text
    assert not stray.exists() and not (out / "rendered" / "ghost").exists()
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"]
    assert shard_digests(out) == reference and main(["verify", str(out)]) == 0
    caplog.clear()
    run_build(config)
    assert "shard folders" not in caplog.text  # a finished build's folders hold its shards only


def _stats_opens(monkeypatch, suffix: str = ".stats.json") -> Counter[str]:
    """Every open of a stats file (or another file whose name ends in `suffix`) from now on, by path
    (`open`: what fsspec's local files use)."""
    import builtins

    opened: Counter[str] = Counter()
    real = builtins.open

    def counting(file, *args, **kwargs):
        if str(file).endswith(suffix):
            opened[str(file)] += 1
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    return opened


def test_the_stray_check_reads_no_stats_file_again(mini_corpus, mini_build, tmp_path, monkeypatch, caplog):
    """Finding strays (files no stats file names) read every stats file again, after `verify`
    had just read them all to check the shards (and, at a build's end, after the shards' check
    and the token summary had): N more reads per verify, each a request on an object store. Now
    the names come from the reads already made: `verify` opens each stats file once, and the
    build's stray check opens none; the strays found are the same."""
    from uvd_pipeline import build as build_module
    from uvd_pipeline.build import run_build
    from uvd_pipeline.verify import STRAY, verify_output

    config, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    committed = sorted((out / "rendered").rglob("*-train-*.tar"))[0]
    stray = committed.with_name(committed.name.rsplit("-", 1)[0] + "-00099.tar")
    shutil.copy(committed, stray)
    marks = sorted(str(p) for p in out.rglob("*.stats.json") if "_units" not in p.parts)
    tokens = [m for m in marks if "/tokens/" in m]
    assert tokens and len(tokens) < len(marks)

    opened = _stats_opens(monkeypatch)
    result = verify_output(str(out))
    assert result.damaged == [(str(stray), STRAY)]
    assert {m: opened[m] for m in marks} == {m: 1 for m in marks}

    real_end, real_strays = build_module.remove_temporaries, build_module.clear_strays
    during_strays = Counter()

    def run_end(output):  # the run is over: what the build's end opens from here
        opened.clear()
        return real_end(output)

    def strays(*args, **kwargs):
        before = Counter(opened)
        try:
            return real_strays(*args, **kwargs)
        finally:
            during_strays.update(Counter(opened) - before)

    monkeypatch.setattr(build_module, "remove_temporaries", run_end)
    monkeypatch.setattr(build_module, "clear_strays", strays)
    caplog.set_level(logging.WARNING)
    run_build(config)
    assert f"found 1 files in the shard folders that no committed shard names: {stray}" in caplog.text
    assert not during_strays
    assert {m: opened[m] for m in tokens} == {m: 1 for m in tokens}  # the token summary's read, no other
    assert all(opened[m] for m in marks)  # the counting sees the build end's reads


def test_a_full_verify_reads_each_shard_rejects_file_once(mini_build_copy, monkeypatch, capsys):
    """A full `verify` read and hashed each shard's rejects file twice: its own check (sha256), then
    `rejects.jsonl`'s (its lines, hashed again): 20 opens and 13,281 bytes read on the mini build
    (strace). Now its one read gives both: 10 opens, `rejects.jsonl`'s and the 9 non-empty ones (the
    empty one is held to its recorded size and sha256 unopened), 8,854 bytes; an edit of one is
    still named once, by its sha256."""
    from uvd_pipeline.integrity import SHA_DIFFERS
    from uvd_pipeline.verify import verify_output

    config, summary = mini_build_copy
    out = Path(config.output)
    files = sorted(str(p) for p in (out / "rendered").rglob("*.rejects.jsonl"))
    empty = [f for f in files if not os.path.getsize(f)]
    assert len(files) == summary["totals"]["shards"] and len(empty) == 1
    opened = _stats_opens(monkeypatch, "rejects.jsonl")
    assert verify_output(str(out)).damaged == []
    assert opened == Counter({f: 1 for f in files if f not in empty} | {str(out / "rejects.jsonl"): 1})
    edited = Path(files[-1])
    _flip(edited, 1)
    opened.clear()
    assert verify_output(str(out)).damaged == [(str(edited), SHA_DIFFERS)]
    assert opened[str(edited)] == 1


def test_a_resumed_build_reads_each_stats_file_once_before_its_run_and_once_after(mini_corpus, mini_build, tmp_path,
                                                                                 monkeypatch):
    """Before the run a resumed build read each rendered stats file three times (the shards'
    check, `relocate` for the tar's sha256, the Tokenize step's listing of the earlier shards) and
    after it three times (the shards' check, `relocate`, the summary): each a request on an
    object store. Now the shards' check hands what the others need on: one read before the run
    and one after; the token stats files are read once after it (the token summary). The summary
    is the one a fresh read gives."""
    from uvd_pipeline import build as build_module
    from uvd_pipeline.build import run_build

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    rendered = sorted(str(p) for p in (out / "rendered").rglob("*.stats.json"))
    tokens = sorted(str(p) for p in (out / "tokens").rglob("*.stats.json"))
    assert rendered and tokens
    opened = _stats_opens(monkeypatch)
    before_run: Counter[str] = Counter()
    real_run, real_end = build_module.run_pipeline, build_module.remove_temporaries

    def run(pipeline):
        before_run.update(opened)
        return real_run(pipeline)

    def run_end(output):  # the run is over: what the build's end opens from here
        opened.clear()
        return real_end(output)

    monkeypatch.setattr(build_module, "run_pipeline", run)
    monkeypatch.setattr(build_module, "remove_temporaries", run_end)
    again = run_build(config).summary
    assert again["run"]["shards_resumed"] == len(rendered)
    assert {m: before_run[m] for m in rendered} == {m: 1 for m in rendered}
    assert {m: opened[m] for m in rendered + tokens} == {m: 1 for m in rendered + tokens}
    for key in ("totals", "sources", "shards", "tokens", "mixture"):
        assert again[key] == summary[key], key


def test_an_unreadable_token_stats_file_is_named_and_tokenized_again(mini_corpus, mini_build, tmp_path, monkeypatch,
                                                                      caplog, capsys):
    """A token shard's stats file cut short (not JSON any more) stopped a resumed build with a
    JSONDecodeError traceback (its Tokenize step, or the summary when it broke after that step).
    Now it is handled as an unreadable rendered stats file is: `verify` and `report` name it and
    the fix, the Tokenize step tokenizes the shard again, and one the summary meets is removed
    with a warning naming it and the fix; a resumed build with --verify writes it back, the same
    bytes."""
    from uvd_pipeline import build as build_module
    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    reference = shard_digests(out)
    mark = sorted((out / "tokens").rglob("*.stats.json"))[0]
    arrow = mark.with_name(mark.name.replace(".stats.json", ".arrow"))
    mark.write_bytes(mark.read_bytes()[:100])
    hint = "a resumed build with --verify rebuilds damaged shards"
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {mark}: unreadable stats (JSONDecodeError" in printed and "build CONFIG --verify" in printed
    assert main(["report", str(out)]) == 1
    printed = capsys.readouterr().err
    assert f"error: damaged: {mark}: unreadable stats (JSONDecodeError" in printed and hint in printed
    assert "Traceback" not in printed

    caplog.set_level(logging.WARNING)
    run_build(config, verify=True)
    assert f"damaged: {mark}: unreadable stats (" in caplog.text and "it is tokenized again" in caplog.text
    assert shard_digests(out) == reference and main(["verify", str(out)]) == 0
    capsys.readouterr()

    # damaged after the Tokenize step read it (as the build settles): the summary's read finds it
    real_drop = build_module.drop_stale

    def drop_stale(*args, **kwargs):
        mark.write_bytes(b"{")
        return real_drop(*args, **kwargs)

    monkeypatch.setattr(build_module, "drop_stale", drop_stale)
    caplog.clear()
    counted = run_build(config).summary["tokens"]["sources"]
    source = mark.relative_to(out / "tokens").parts[0]
    assert counted[source]["shards"] == summary["tokens"]["sources"][source]["shards"] - 1
    assert f"damaged: {mark}: unreadable stats (" in caplog.text and hint in caplog.text
    assert f"files in the shard folders that no committed shard names: {arrow}" in caplog.text
    assert not mark.exists()
    monkeypatch.setattr(build_module, "drop_stale", real_drop)
    assert run_build(config, verify=True).summary["tokens"] == summary["tokens"]
    assert shard_digests(out) == reference and main(["verify", str(out)]) == 0


def test_an_edited_rejects_file_is_never_merged(mini_corpus, mini_build, tmp_path, caplog):
    """A committed shard's rejects file edited in place (same size, another reason): a plain
    resume checks its sha256 (every build merges it into `rejects.jsonl`), rebuilds that shard and
    merges the true lines; merging it unchecked is refused, naming the file."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.integrity import Recorded
    from uvd_pipeline.summary import write_rejects

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    reference, merged = shard_digests(out), (out / "rejects.jsonl").read_bytes()
    edited = next(p for p in sorted((out / "rendered").rglob("*.rejects.jsonl")) if b'"reason": "' in p.read_bytes())
    original = edited.read_bytes()
    reason = json.loads(original.splitlines()[0])["reason"]
    edited.write_bytes(original.replace(f'"reason": "{reason}"'.encode(), f'"reason": "{reason[:-1]}X"'.encode(), 1))
    assert len(edited.read_bytes()) == len(original) != 0
    caplog.set_level(logging.WARNING)
    again = run_build(config).summary
    assert f"damaged: {edited}: sha256 differs from its stats" in caplog.text
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"] - 1
    assert (out / "rejects.jsonl").read_bytes() == merged and shard_digests(out) == reference
    assert again["totals"] == summary["totals"]

    stats = json.loads(edited.with_name(edited.name.replace(".rejects.jsonl", ".stats.json")).read_text())
    recorded = stats["files"][edited.name]
    edited.write_bytes(original.replace(f'"reason": "{reason}"'.encode(), f'"reason": "{reason[:-1]}X"'.encode(), 1))
    with pytest.raises(ShardDamaged, match="sha256 differs"):
        write_rejects(str(tmp_path / "merged"), [Recorded(str(edited), recorded["bytes"], recorded["sha256"])])
    assert not (tmp_path / "merged" / "rejects.jsonl").exists()


def test_damaged_tar_in_tokenize_and_report_names_the_file(mini_corpus, mini_build, tmp_path):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.report import write_report

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    first = min(summary["shards"], key=lambda s: (s["split"] != "train", s["source"], s["split"], s["shard"]))
    tar = out / "rendered" / first["source"] / first["split"] / first["tar"]
    _flip(tar, 64, at=0.3)
    with pytest.raises(ShardDamaged, match=f"{tar}: sha256 differs"):
        write_report(str(out))
    # a forced re-tokenize reads the tar: the error names it (not "not a PNG image")
    (out / "tokens" / first["source"] / first["split"] / first["tar"].replace(".tar", ".stats.json")).unlink()
    with pytest.raises(Exception, match=f"{tar}: sha256 differs") as error:
        run_build(config, retokenize=True)
    assert "PNG" not in str(error.value)
    assert not (out / "_lock.json").exists(), "the lock is released when a build fails"


def test_a_committed_tar_is_read_and_hashed_in_large_reads(mini_build, monkeypatch):
    """Reading a rendered tar (Tokenize, report, export) checks its sha256 as the bytes stream, in
    reads of about 1 MiB, not tarfile's 10 KB: each raw read lets go of Python's lock and takes it
    back, and in a GPU build's eight Tokenize threads those hand-overs cost 9.6 ms of a worker's
    time per image. The sentences and the digest check are the same either way."""
    from uvd_pipeline import integrity
    from uvd_pipeline.rendered_shards import iter_shard, tar_recorded

    config, summary = mini_build
    reads: list[int] = []
    raw_read = integrity.HashingReader.read

    def counted(self, size=-1):
        data = raw_read(self, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(integrity.HashingReader, "read", counted)
    checked = 0
    for stats in summary["shards"]:
        stats = json.loads((Path(config.output) / "rendered" / stats["source"] / stats["split"]
                            / stats["tar"].replace(".tar", ".stats.json")).read_text())
        reads.clear()
        sentences = list(iter_shard(tar_recorded(config.output, stats)))  # raises if the digest differs
        assert len(sentences) == stats["sentences"] and sum(reads) == stats["tar_bytes"]
        assert len(reads) <= -(-stats["tar_bytes"] // (1 << 20)) + 2, (stats["tar"], stats["tar_bytes"], len(reads))
        checked += stats["tar_bytes"] > 100_000  # where 10 KB reads would have been dozens
    assert checked


def test_a_tar_made_by_gnu_tar_reads_and_checks_the_same(tmp_path):
    """The buffered, hashing tar reader on a webdataset tar made by the `tar` command (GNU format,
    its own member order and padding), its digest taken by hashlib over the file: every member
    comes back in order with its bytes, and a changed byte near the end (after the last member's
    data) is still caught."""
    import hashlib
    import shutil

    from uvd_pipeline.integrity import Recorded
    from uvd_pipeline.rendered_shards import iter_shard

    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    folder = tmp_path / "members"
    folder.mkdir()
    names, payloads = [], {}
    for i in range(3):
        header = json.dumps({"sentence_id": f"s{i}"}).encode()
        image = os.urandom(700_000 + 4099 * i)  # spans the reader's 1 MiB buffer
        for name, data in ((f"s{i}.json", header), (f"s{i}.00.png", image)):
            (folder / name).write_bytes(data)
            names.append(name)
            payloads[name] = data
    tar = tmp_path / "made.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(tar), "-C", str(folder), *names], check=True)
    data = tar.read_bytes()
    recorded = Recorded(str(tar), len(data), hashlib.sha256(data).hexdigest())
    sentences = list(iter_shard(recorded))
    assert [s.header["sentence_id"] for s in sentences] == ["s0", "s1", "s2"]
    assert [s.images[0] for s in sentences] == [payloads[f"s{i}.00.png"] for i in range(3)]
    damaged = bytearray(data)
    damaged[-100] ^= 0xFF  # in the end-of-archive padding: only the digest can tell
    tar.write_bytes(bytes(damaged))
    with pytest.raises(ShardDamaged, match="sha256 differs"):
        list(iter_shard(recorded))


def test_damaged_token_shard_fails_export_and_training_naming_it(tmp_path):
    import numpy as np
    from trainer_shards import numbered_sentences, write_shards

    from trainer.data import Mixture, MixtureEntry, TokenWindows
    from uvd_pipeline.cli import main
    from uvd_pipeline.shards import export_jsonl, read_token_shard

    paths = [Path(p) for p in write_shards(tmp_path, "web", numbered_sentences(40), shards=3)]
    flipped, truncated = paths[0], paths[2]
    _flip(flipped, 32, at=0.4)
    with pytest.raises(ShardDamaged, match=f"{flipped}: sha256 differs"):
        export_jsonl([str(flipped)], str(tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()
    assert main(["export-jsonl", str(tmp_path), "--out", str(tmp_path / "cli.jsonl")]) == 1
    with pytest.raises(ShardDamaged, match=f"{flipped}: sha256 differs"):
        windows = TokenWindows(Mixture((MixtureEntry(str(tmp_path / "*.arrow")),)), seq_len=32, batch_size=4)
        for _ in range(20):  # the digest is checked when a shard's tokens are first used
            windows.next_batch()
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(ShardDamaged, match=f"{truncated}: .* bytes, its stats record"):
        TokenWindows(Mixture((MixtureEntry(str(truncated)),)), seq_len=32, batch_size=4)
    table, _ = read_token_shard(str(paths[1]))  # an intact one reads as before
    assert table.num_rows and np.all(np.isin(table.column("n_images").to_numpy(), [1, 2, 3]))


def test_a_second_build_fails_while_the_lock_is_held(mini_corpus, mini_build, tmp_path):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.output_lock import OutputLocked, acquire, read_holder

    config, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    before = shard_digests(out)
    with acquire(str(out)) as held:
        pattern = f"locked by another build .*pid {os.getpid()}.*run {held.run_id}"
        with pytest.raises(OutputLocked, match=pattern):
            run_build(config)
        cli = _cli("build", str(tmp_path / "c.yaml"))
        assert cli.returncode == 2 and f"pid {os.getpid()}" in cli.stderr and held.run_id in cli.stderr, cli.stderr
        assert read_holder(str(out)) == held.holder, "a refused build leaves the holder's lock alone"
    assert not (out / "_lock.json").exists()
    assert shard_digests(out) == before


def test_stale_lock_is_taken_over_and_dead_run_temporaries_are_removed(mini_corpus, mini_build, tmp_path, caplog):
    from uvd_pipeline.build import run_build

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    reference = shard_digests(out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "_lock.json").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                "started": "2026-01-01T00:00:00+00:00", "run_id": "dead-run"}))
    leftovers = out / "_tmp" / "dead-run"
    leftovers.mkdir(parents=True)
    (leftovers / "tmpa1b2.tar").write_bytes(b"x" * 5000)
    (leftovers / "tmpc3d4").write_bytes(b"y" * 100)
    token_tmp = next((out / "tokens").rglob("*.arrow"))
    (token_tmp.parent / (token_tmp.name + ".tmp-deadbeef")).write_bytes(b"z" * 10)
    (out / "summary.json.tmp-cafe0001").write_bytes(b"{")
    caplog.set_level(logging.INFO)
    again = run_build(config).summary
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"]
    assert "taking over the stale lock of host" in caplog.text and "run dead-run" in caplog.text
    assert "removed 2 temporary files (0.0 MB) of dead runs" in caplog.text
    assert not (out / "_tmp").exists() and not (out / "_lock.json").exists()
    assert not list(out.rglob("*.tmp-*"))
    assert shard_digests(out) == reference


def test_an_empty_lock_file_refuses_only_while_a_process_writes_it(mini_corpus, mini_build, tmp_path, caplog):
    """An empty `_lock.json` is a build starting only while a process has it open (a build before the
    linked write created it, then wrote it): the build is refused naming that cause and
    --force-unlock, not "other builds keep taking it"; with --force-unlock it runs. One no process has
    open (a start killed in between) was judged by its age, which `cp -r` refreshes: refused for a
    minute after a copy; it is taken over at once now, whatever its age."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.output_lock import OutputLocked

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    lock = out / "_lock.json"
    with lock_being_written(lock):
        with pytest.raises(OutputLocked) as refused:
            run_build(config)
        message = str(refused.value)
        assert f"could not take the lock {lock}: the lock file is empty and a process of this host has it open" \
            in message, message
        assert "keep taking it" not in message and "--force-unlock" in message
        assert run_build(config, force_unlock=True).summary["run"]["shards_resumed"] == summary["totals"]["shards"]
    assert not lock.exists()
    lock.write_bytes(b"")  # young, open in no process
    caplog.set_level(logging.WARNING)
    assert run_build(config).summary["run"]["shards_resumed"] == summary["totals"]["shards"]
    assert re.search(rf"removing the unreadable lock file {re.escape(str(lock))} \(\d+ s old, open in no process of "
                     r"this user\)", caplog.text), caplog.text  # its age: 1 s on a loaded machine, not 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to start another user's build")
def test_an_empty_lock_another_user_holds_open_waits_out_its_age(tmp_path):
    """Another user's build starting (its lock created, not written yet): this user cannot list its
    descriptors, and the scan skipped it and said 'open in no process': a build took the lock over at
    once (rev58d M1). Whose file it is cannot be told from here: the age rule judges it."""
    import tempfile

    from uvd_pipeline.output_lock import OutputLocked, acquire, read_holder, unreadable_lock

    shared = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        shared.chmod(0o1777)
        lock = shared / "_lock.json"
        with lock_being_written(lock, user=1000):
            assert lock.stat().st_uid == 1000 and lock.stat().st_size == 0
            seen = unreadable_lock(str(shared))
            assert seen.open_now is None and seen.starting, seen
            with pytest.raises(OutputLocked, match=r"the lock file is empty, \d+ s old; .* wait \d+ s and run again"):
                acquire(str(shared))
            assert lock.stat().st_uid == 1000, "the other user's lock is left alone"
            os.utime(lock, (lock.stat().st_atime - 120, lock.stat().st_mtime - 120))
            with acquire(str(shared)) as taken:  # two minutes old: a start killed in between
                assert read_holder(str(shared)) == taken.holder
    finally:
        shutil.rmtree(shared)


def test_an_empty_lock_on_a_network_disk_is_judged_by_its_age(tmp_path, monkeypatch):
    """On an NFS, SMB or FUSE disk a process of another host may hold the lock open, unseen in this
    host's /proc: that it is open nowhere here says nothing, and the age rule judges it. The disk's
    type is statfs's, as `stat -f` reads it."""
    from uvd_pipeline import output_lock

    stat = subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True, check=True)
    assert output_lock._filesystem_type(str(tmp_path)) == int(stat.stdout, 16)
    lock = tmp_path / "_lock.json"
    with lock_being_written(lock):
        assert output_lock.unreadable_lock(str(tmp_path)).open_now is True
        monkeypatch.setattr(output_lock, "_filesystem_type", lambda local: 0x6969)  # NFS_SUPER_MAGIC
        seen = output_lock.unreadable_lock(str(tmp_path))
        assert seen.open_now is None and seen.starting
    seen = output_lock.unreadable_lock(str(tmp_path))
    assert seen.open_now is None and seen.starting, "closed, still young: a build may be writing it from another host"


def test_an_empty_lock_a_reader_has_open_is_taken_over(tmp_path, caplog):
    """A copied output's stale empty lock that a viewer (`tail -f`) has open: only a writer's
    descriptor is a build starting, but every one was counted, and builds were refused for as long as
    the viewer ran (rev58d L2)."""
    import time

    from uvd_pipeline.output_lock import acquire, read_holder, unreadable_lock

    lock = tmp_path / "_lock.json"
    lock.write_bytes(b"")
    viewer = subprocess.Popen(["tail", "-f", str(lock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while str(lock) not in {os.path.realpath(f"/proc/{viewer.pid}/fd/{fd}")
                                for fd in os.listdir(f"/proc/{viewer.pid}/fd")} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unreadable_lock(str(tmp_path)).open_now is False
        caplog.set_level(logging.WARNING)
        with acquire(str(tmp_path)) as taken:
            assert read_holder(str(tmp_path)) == taken.holder
        assert "open in no process of this user" in caplog.text
    finally:
        viewer.kill()
        viewer.wait()


def test_a_start_being_written_is_looked_for_once_among_the_lock_owners_processes(tmp_path, monkeypatch):
    """`acquire` scanned every process's descriptors on each of its 5 tries (1.08 s a scan on a host
    of 6,150 processes: rev58d L3): it scans once, only the processes of the lock's owner, and asks
    again of the writer it found alone."""
    from uvd_pipeline import output_lock

    lock = tmp_path / "_lock.json"
    others = []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        others = [subprocess.Popen(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sleep", "30"])]
    listed, real = [], os.listdir

    def listing(path="."):
        listed.append(str(path))
        return real(path)

    try:
        with lock_being_written(lock) as writer:
            monkeypatch.setattr(output_lock.os, "listdir", listing)
            with pytest.raises(output_lock.OutputLocked, match="a process of this host has it open"):
                output_lock.acquire(str(tmp_path))
            monkeypatch.undo()
    finally:
        for other in others:
            other.kill()
            other.wait()
    fds = [path for path in listed if path.endswith("/fd")]
    assert listed.count("/proc") == 1 and fds.count(f"/proc/{writer.pid}/fd") == 5, listed.count("/proc")
    assert len(fds) == len(set(fds)) + 4, "after the first scan only the writer is asked again"
    assert not [other for other in others if f"/proc/{other.pid}/fd" in fds], "another user's process is not listed"


def test_no_reader_sees_a_lock_before_it_is_written(tmp_path):
    """A lock made by `O_EXCL` was there empty until its write: a reader of that moment (`verify`,
    another build's `acquire`) found a lock that names nobody (rev57h L1; 144 of 27,736 reads while
    470 builds took and gave back the lock in 5 s). It is written whole beside, then linked into place."""
    import threading
    import time

    from uvd_pipeline.output_lock import acquire

    out, seen, stop = tmp_path / "out", [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:  # a lock removed between two reads was counted too (missing, there, removed: rev58d)
                json.loads((out / "_lock.json").read_bytes())["run_id"]
            except FileNotFoundError:
                continue
            except (ValueError, KeyError):
                seen.append("unreadable")

    reader = threading.Thread(target=read)
    reader.start()
    taken, end = 0, time.monotonic() + 120  # a count of takes, not a time window: a loaded machine took fewer than 50 in 1.5 s
    try:
        while taken < 200 and time.monotonic() < end:
            acquire(str(out)).release()
            taken += 1
    finally:
        stop.set()
        reader.join()
    assert taken == 200 and seen == [], (taken, len(seen))
    assert not list(out.iterdir()), "no temporary is left beside the lock"


def test_the_lock_file_mode_does_not_follow_the_umask(tmp_path):
    """The lock written beside and linked was made by open(), 0o666 less the umask: under umask 000
    anybody could rewrite it (rev58d L4; the O_EXCL lock before was 0o644)."""
    import stat

    from uvd_pipeline.output_lock import acquire

    before = os.umask(0)
    try:
        with acquire(str(tmp_path)):
            assert stat.S_IMODE((tmp_path / "_lock.json").stat().st_mode) == 0o644
    finally:
        os.umask(before)


def test_lock_on_an_fsspec_output_and_force_unlock(tmp_path, caplog):
    from uvd_pipeline.output_lock import OutputLocked, acquire, read_holder

    output = f"memory://uvd-lock-{tmp_path.name}/out"
    with acquire(output) as first:
        with pytest.raises(OutputLocked, match=first.run_id):
            acquire(output)
    assert read_holder(output) is None
    (tmp_path / "_lock.json").write_text(json.dumps({"host": "another-host", "pid": 1, "started": "t",
                                                    "run_id": "far-away"}))
    with pytest.raises(OutputLocked, match="host another-host .*--force-unlock"):
        acquire(str(tmp_path))
    caplog.set_level(logging.WARNING)
    with acquire(str(tmp_path), force=True) as taken:
        assert read_holder(str(tmp_path)).run_id == taken.run_id
    assert "--force-unlock: removing the lock of host another-host" in caplog.text


def test_an_interrupted_build_sweeps_only_while_it_still_holds_the_lock(tmp_path, caplog):
    """A build that took the output with --force-unlock was mid-commit (`open_atomic`'s `.tmp-`
    beside its shard) when the build it took the lock from was interrupted: that one's exit swept
    every `.tmp-` in the output, the new holder's in-flight shard included (rev56g). An interrupted
    run sweeps only while the lock is still its own; one that holds it sweeps its own commits."""
    from tokenizer.atomic import open_atomic
    from uvd_pipeline.build import lock_output
    from uvd_pipeline.output_lock import read_holder

    out = tmp_path / "out"
    shard = out / "rendered/web/train/web-train-00000.tar"
    caplog.set_level(logging.INFO)
    first = contextlib.ExitStack()
    lock_output(first, str(out))
    with contextlib.ExitStack() as second:
        taker = lock_output(second, str(out), force=True)
        with open_atomic(str(shard)) as writing:
            writing.write(b"the taker's shard, half written")
            with pytest.raises(KeyboardInterrupt), first:
                raise KeyboardInterrupt
            assert os.path.exists(writing.temporary)
            assert "temporary files of" not in caplog.text
            assert "left the temporary files in %s as they are: its lock is no longer this run's" % out in caplog.text
            writing.write(b", and finished")
        assert shard.read_bytes() == b"the taker's shard, half written, and finished"
        assert read_holder(str(out)).run_id == taker
        (shard.parent / "web-train-00001.tar.tmp-0123abcd").write_bytes(b"its own, interrupted")
        with pytest.raises(KeyboardInterrupt), second:
            raise KeyboardInterrupt
    assert sorted(p.name for p in shard.parent.iterdir()) == ["web-train-00000.tar"]
    assert "removed 1 temporary files of this run's interrupted commits" in caplog.text
    assert read_holder(str(out)) is None


def test_verify_and_report_say_why_a_path_is_no_output(tmp_path: Path, capsys):
    """A mistyped output folder read '... is not a build output (it has no build.json)', as if it
    were there; a file likewise. `report --sentences -1` was not refused."""
    from uvd_pipeline.cli import main

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = [
        (["verify", str(tmp_path / "nope")], f"{tmp_path / 'nope'} does not exist; give a build's output folder "
                                             "(the config's output), or run the build first"),
        (["verify", str(tmp_path / "notes.txt")], f"{tmp_path / 'notes.txt'} is a file; give a build's output folder "
                                                  "(the config's output)"),
        (["verify", str(tmp_path / "folder")], f"{tmp_path / 'folder'} is not a build output (it has no build.json)"),
        (["report", str(tmp_path / "nope")], f"{tmp_path / 'nope'} does not exist; give a build's output folder"),
        (["report", str(tmp_path / "folder"), "--sentences", "-1"], "--sentences -1: must be 0 or more"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {expected}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"]


def test_an_internal_file_not_found_keeps_its_traceback(tmp_path: Path, monkeypatch, capsys):
    """The command turned every FileNotFoundError into 'error: ...', exit 2: one from a bug inside a
    report or a build read as the user's mistake, without its traceback. Only what names a path the
    user gave (not there, not an output, not a committed shard) is a one-line error."""
    import uvd_pipeline.report as report
    from uvd_pipeline.cli import main

    def broken(output, max_sentences_per_group=4, progress=None):
        raise FileNotFoundError(2, "No such file or directory", "/tmp/run-tmp/sheet-0.png")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(FileNotFoundError, match="sheet-0.png"):
        main(["report", str(tmp_path)])
    assert "error:" not in capsys.readouterr().err
    assert main(["export-jsonl", str(tmp_path / "none"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: no committed token shards match {tmp_path / 'none'}\n"


def test_verify_holds_rejects_jsonl_and_mixture_yaml_to_the_shards(mini_corpus, mini_build, tmp_path, capsys):
    """`rejects.jsonl` cut short, grown, deleted or edited, and the trainer's `mixture.yaml`
    deleted: `verify` said intact (exit 0), while the report refused the same output (its reject
    count) and `trainer.fit --data mixture.yaml` found no file. Its size is held to the shards'
    rejects files (`--quick`), its lines to theirs in any order (full); the same build command
    writes both again."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main

    config, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    rejects, mixture = out / "rejects.jsonl", out / "mixture.yaml"
    merged, plan = rejects.read_bytes(), mixture.read_bytes()
    lines = merged.splitlines(keepends=True)
    counted = summary["totals"]["rejects"]
    assert len(lines) == counted > 2 and summary["mixture"]

    def verify(*flags: str) -> tuple[int, str]:
        code = main(["verify", *flags, str(out)])
        return code, capsys.readouterr().out

    rejects.write_bytes(b"".join(lines[:1]))  # cut short by a copy
    for flags in ((), ("--quick",)):
        code, printed = verify(*flags)
        assert code == 1 and (f"damaged: {rejects}: {len(lines[0])} bytes, the committed shards' rejects files hold "
                              f"{len(merged)} (summary.json counts {counted} rejects)") in printed, printed
    rejects.write_bytes(merged + lines[0])  # a line twice
    assert verify("--quick")[0] == 1
    first = json.loads(lines[0])
    edited = lines[0].replace(f'"key": "{first["key"]}"'.encode(), f'"key": "{first["key"][:-1]}X"'.encode())
    rejects.write_bytes(edited + b"".join(lines[1:]))  # same size, another key: only the lines tell
    assert len(rejects.read_bytes()) == len(merged)
    assert verify("--quick")[0] == 0
    code, printed = verify()
    assert code == 1 and f"damaged: {rejects}: its lines differ from the committed shards' rejects files" in printed
    rejects.write_bytes(b"".join(reversed(lines)))  # the same lines in another order: intact
    code, printed = verify()
    assert code == 0 and "intact" in printed, printed
    rejects.unlink()
    mixture.unlink()
    code, printed = verify()
    assert code == 1 and f"damaged: {rejects}: missing (summary.json counts {counted} rejects)" in printed
    assert f"damaged: {mixture}: missing: summary.json records a token mix" in printed
    assert "run the same build command again" in printed
    run_build(config)
    assert rejects.read_bytes() == merged and mixture.read_bytes() == plan
    assert verify()[0] == 0


def test_verify_of_a_build_stopped_before_its_summary_is_unfinished_not_intact(mini_corpus, mini_build, tmp_path,
                                                                                 capsys):
    """A build killed mid-way leaves committed shards and no `summary.json`: `verify` printed a
    note and `intact`, exit 0, so `verify OUT && upload` uploaded half a build. It says UNFINISHED
    and exits 3 (documented in --help and the README); damage still exits 1."""
    _, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    (out / "summary.json").unlink()
    command = f"{sys.executable} -m uvd_pipeline verify {out} && echo uploaded"
    done = subprocess.run(["sh", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3 and "uploaded" not in done.stdout, done.stdout + done.stderr
    assert f"{out}: UNFINISHED: what is committed is intact" in done.stdout and "did not finish" in done.stdout
    from uvd_pipeline import cli

    # the command's help and its exit status on damage, in this process (the entry point's exit
    # status is the one `sh` saw above): no interpreter to start for each
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["verify", "--help"])
    assert "3 unfinished" in " ".join(capsys.readouterr().out.split())
    next(out.glob("rendered/*/*/*.tar")).write_bytes(b"cut")
    assert cli.cmd_verify(cli.parser().parse_args(["verify", str(out)])) == 1


def test_verify_of_an_output_named_by_a_relative_path_holds_rejects_jsonl(mini_corpus, mini_build, tmp_path,
                                                                          monkeypatch, capsys):
    """`verify build/sample` (a relative path, as `make build-uvd` names it) said intact with
    `rejects.jsonl` emptied: the shards it held the file to were named from the relative path, the
    listing's by absolute paths, so the two never matched and the check was skipped."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    rejects = out / "rejects.jsonl"
    held = rejects.stat().st_size
    rejects.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for given in ("out", "./out"):
        assert main(["verify", given]) == 1
        printed = capsys.readouterr().out
        assert (f"damaged: {rejects}: 0 bytes, the committed shards' rejects files hold {held} (summary.json counts "
                f"{summary['totals']['rejects']} rejects)") in printed, printed
        assert printed.splitlines()[-2].startswith(f"{given}: DAMAGED: 1 damaged files in ")


def test_export_names_a_token_shard_whose_stats_file_is_gone(mini_corpus, mini_build, tmp_path, capsys):
    """A token shard whose stats file was deleted: `verify` calls it damage, yet `export-jsonl`
    left its sentences out without a word, even when the shard was named on the command line
    (exit 0, a JSONL of the other shards). Now it stops naming the shard and writes nothing; an
    interrupted write's `.tmp-` temporary is still no shard of the export."""
    from uvd_pipeline.cli import main
    from uvd_pipeline.shards import find_shards

    _, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    shards = sorted((out / "tokens").rglob("*.arrow"))
    assert len(shards) > 1
    (out / "tokens" / "stray.arrow.tmp-1234abcd").write_bytes(b"half")
    target = tmp_path / "all.jsonl"
    assert main(["export-jsonl", str(out / "tokens"), "--out", str(target)]) == 0
    capsys.readouterr()
    target.unlink()
    gone = shards[0]
    gone.with_name(gone.name.replace(".arrow", ".stats.json")).unlink()
    for given in (str(out / "tokens"), str(gone), str(out / "tokens" / "*" / "*" / "*.arrow")):
        assert main(["export-jsonl", given, "--out", str(target)]) == 1
        assert capsys.readouterr().err == (
            f"error: damaged: {gone}: its .stats.json file (the commit mark) is missing: not a committed token shard; "
            "the export stops rather than leave its sentences out; a resumed build with --verify rebuilds damaged "
            "shards (python -m uvd_pipeline build CONFIG --verify); python -m uvd_pipeline verify OUT lists them\n")
        assert not target.exists()
    assert str(gone) not in find_shards(str(out / "tokens"))  # the trainer still reads what is committed


def _foreign_shard(out: Path, tmp_path: Path, target: Path, *flags: str) -> None:
    """A shard as `import-jsonl` writes it from this build's own export, placed at `target` in the
    build's `tokens/` (another tokenizer's, as an import of released data is)."""
    from uvd_pipeline.cli import main

    jsonl = tmp_path / "released.jsonl"
    stats = json.loads(next((out / "tokens").rglob("*.stats.json")).read_text())
    assert main(["export-jsonl", str(out / "tokens"), "--out", str(jsonl)]) == 0
    assert main(["import-jsonl", str(jsonl), "--out", str(target), "--source", target.parts[-3], "--tokens-per-image",
                 str(stats["tokens_per_image"]), "--image-size", str(stats["image_size"]), *flags]) == 0


def test_verify_and_report_refuse_a_foreign_token_shard_in_tokens(mini_corpus, mini_build, tmp_path, capsys):
    """A shard imported into the build's `tokens/` (its own stats: so no stray) passed `verify` as
    intact, and `report` stopped with a numpy traceback (two codebooks in one histogram); one
    imported over a committed shard (its stats replaced) passed too, its tokens counted as the
    build's. Both are named as another configuration's, by `verify` and by `report`."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    shard = sorted((out / "tokens").rglob("*.arrow"))[0]
    extra = shard.with_name("extra.arrow")
    _foreign_shard(out, tmp_path, extra, "--tokenizer-name", "other", "--codebook-size", "16384")
    capsys.readouterr()
    why = (f"a token shard of another configuration (config hash 'imported', this build's is "
           f"{summary['config_hash']}): an import or another build's; the trainer's mixture and the report would "
           "take it as this build's; move it out of tokens/ (import into a folder of its own)")
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {extra}: {why}\n" in printed and "DAMAGED: 1 damaged files" in printed, printed
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {extra}: {why}; ")
    extra.unlink()
    extra.with_name("extra.stats.json").unlink()
    assert main(["verify", str(out)]) == 0
    _foreign_shard(out, tmp_path, shard)  # over a committed shard: its stats file replaced too
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert f"damaged: {shard}: {why}\n" in capsys.readouterr().out


def test_verify_holds_the_summary_counts_to_the_stats(mini_corpus, mini_build, tmp_path, capsys):
    """summary.json's counts were never read back: totals.sentences 96 of 16 passed `verify`, and
    the report printed 96. Each count that differs from the committed shards' stats is named."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    path = out / "summary.json"
    edited = json.loads(path.read_text())
    source = sorted(edited["sources"])[0]
    sentences, source_sentences = edited["totals"]["sentences"], edited["sources"][source]["sentences"]
    edited["totals"]["sentences"] = 96
    edited["sources"][source]["sentences"] += 80
    edited["tokens"]["sources"][source]["tokens"] += 1
    path.write_text(json.dumps(edited))
    why = (f"counts other than the committed shards', edited since the build: totals.sentences 96 (the committed "
           f"shards' stats hold {sentences}); sources.{source}.sentences {source_sentences + 80} (the committed "
           f"shards' stats hold {source_sentences}); tokens.sources ")
    assert main(["verify", "--quick", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {path}: {why}" in printed and "DAMAGED: 1 damaged files" in printed, printed
    assert printed.splitlines()[0].endswith("; run the same build command again: it writes it anew from the "
                                            "committed shards")
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {path}: {why}")
    assert "totals" not in json.loads((out / "report" / "report.json").read_text())
    path.write_text(json.dumps(summary))
    assert main(["verify", str(out)]) == 0


def test_verify_and_report_show_a_name_holding_terminal_escapes_as_codes(mini_corpus, mini_build, tmp_path, capsys):
    """A stray whose name holds a terminal's escape sequences (a title set, the screen cleared, red
    text) and a right-to-left override: `verify` and `report` printed it raw, so the terminal ran
    them. Each such character is printed as its code, on every line that names the file."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    first = summary["shards"][0]
    folder = out / "rendered" / first["source"] / first["split"]
    (folder / "\x1b]0;PWNED\x07\x1b[2J\u202etxt.tar").write_bytes(b"")
    seen = f"{folder}/\\u001b]0;PWNED\\u0007\\u001b[2J\\u202etxt.tar"
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {seen}: {STRAY_WHY}\n" in printed and "\x1b" not in printed and "\u202e" not in printed
    assert main(["report", str(out)]) == 1
    said = capsys.readouterr().err
    assert said.startswith(f"error: damaged: {seen}: {STRAY_WHY}; ") and "\x1b" not in said, said


STRAY_WHY = "not a file of any committed shard (no stats file names it): a stray a glob reader would take"


def test_verify_names_a_committed_shard_the_summary_leaves_out(mini_corpus, mini_build, tmp_path, capsys):
    """A summary with one shard's row deleted and its total edited (999) passed `verify` as intact:
    a shard it does not list was taken for a build stopped before its summary, and the counts went
    unjudged. A finished output's summary lists every committed shard of its config; the shard left
    out is named (the report names it too) and the exit code is 1."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    path = out / "summary.json"
    edited = json.loads(path.read_text())
    left_out = edited["shards"].pop()
    edited["totals"]["sentences"] = 999
    path.write_text(json.dumps(edited))
    stats = out / "rendered" / left_out["source"] / left_out["split"] / left_out["tar"].replace(".tar", ".stats.json")
    count = len(summary["shards"])
    why = (f"committed, but summary.json does not list it (it lists {count - 1} of the {count} committed shards of "
           "this config): edited since the build; run the same build command again: it writes it anew from the "
           "committed shards")
    assert main(["verify", "--quick", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {stats}: {why}\n" in printed and "DAMAGED: 1 damaged files" in printed, printed
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {stats}: {why}; ")


def test_verify_holds_the_summary_image_size_to_the_shards(mini_corpus, mini_build, tmp_path, capsys):
    """summary.json's `image_size` edited (64 -> 256) passed `verify` as intact and the report
    printed 256 (hunt56c): every rendered shard's stats record the size its images were rendered
    at. The edited field is named; the summary put back, the output is intact again."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    assert summary["image_size"] == 64
    path = out / "summary.json"
    path.write_text(json.dumps({**summary, "image_size": 256}))
    why = ("counts other than the committed shards', edited since the build: image_size 256 (the committed shards' "
           "stats hold 64); run the same build command again")
    assert main(["verify", "--quick", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {path}: {why}" in printed and "DAMAGED: 1 damaged files" in printed, printed
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {path}: {why}")
    path.write_text(json.dumps(summary))
    assert main(["verify", "--quick", str(out)]) == 0


@pytest.mark.parametrize("edit", ["image.size", "a source's frames", "no config"])
def test_verify_holds_build_json_to_its_config_hash(mini_corpus, mini_build, tmp_path, capsys, edit):
    """build.json's config edited (image.size 64 -> 128) with its config_hash left as it was passed
    `verify` (hunt56c), though the hash, which decides what a rerun keeps, no longer says what the
    record says the output was built with. The record's config is held to its hash; the rerun
    writes the record anew from its config, and the output is intact again."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main

    config, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    path = out / "build.json"
    record = json.loads(path.read_text())
    assert main(["verify", "--quick", str(out)]) == 0
    edited = json.loads(path.read_text())
    if edit == "image.size":
        edited["config"]["image"]["size"] = 128
    elif edit == "no config":
        del edited["config"]
    else:
        video = next(s for s in edited["config"]["sources"] if "frames" in s)
        video["frames"] += 1
    path.write_text(json.dumps(edited, indent=1))
    capsys.readouterr()
    assert main(["verify", "--quick", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {path}: " in printed and "DAMAGED: 1 damaged files" in printed, printed
    if edit != "no config":
        assert (f"its config gives config hash {edited['config_hash']}" not in printed
                and f"not the {edited['config_hash']} it records" in printed), printed
    run_build(config)
    rewritten = json.loads(path.read_text())
    assert rewritten["config_hash"] == record["config_hash"]
    assert {k: v for k, v in rewritten["config"].items() if k != "output"} == {
        k: v for k, v in record["config"].items() if k != "output"}  # the copy's own folder
    assert main(["verify", "--quick", str(out)]) == 0


def test_verify_holds_input_sizes_lengths_and_duplicates_to_the_shards(mini_corpus, mini_build, tmp_path, capsys):
    """A summary whose source's input-size histogram, pixel count, sentence lengths or duplicate
    figures were edited passed `verify` (only the counts of COUNTED were held to the stats), and
    the report showed the edited figures. Each is named with what the shards' stats hold."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    path = out / "summary.json"
    name, source = next((n, s) for n, s in sorted(summary["sources"].items()) if s.get("duplicates"))
    edited = json.loads(path.read_text())
    entry = edited["sources"][name]
    entry["inputs"]["short_side"] = list(reversed(entry["inputs"]["short_side"]))
    entry["inputs"]["pixels"] = 10 ** 9
    entry["sentence_lengths"] = {"image": {"7": 3}}
    entry["duplicates"] = {**entry["duplicates"], "exact": entry["duplicates"]["exact"] + 3}
    path.write_text(json.dumps(edited))
    assert main(["verify", "--quick", str(out)]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"damaged: {path}: counts other than the committed shards', edited since the build: "), line
    for field in ("inputs", "sentence_lengths", "duplicates"):
        found = json.dumps(source[field])
        assert f"; sources.{name}.{field} " in line or f": sources.{name}.{field} " in line, line
        assert f"(the committed shards' stats hold {found[:40]}".replace('"', "'") in line, (field, line)
    path.write_text(json.dumps(summary))
    assert main(["verify", "--quick", str(out)]) == 0


def test_verify_names_the_counted_fields_deleted_from_the_summary(mini_corpus, mini_build, tmp_path, capsys):
    """A summary whose `tokens` section was emptied and whose source lost by_split, by_kind and
    rejects_by_reason passed `verify` (a field was held to the stats only when present), then the
    report stopped on a KeyError. Each is named; an empty `tokens` section is right only where
    `tokens/` holds no shard of the build."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    path = out / "summary.json"
    edited = json.loads(path.read_text())
    source = sorted(edited["sources"])[0]
    edited["tokens"] = {}
    for key in ("by_split", "by_kind", "rejects_by_reason"):
        del edited["sources"][source][key]
    path.write_text(json.dumps(edited))
    assert main(["verify", "--quick", str(out)]) == 1
    printed = capsys.readouterr().out
    line = printed.splitlines()[0]
    assert line.startswith(f"damaged: {path}: counts other than the committed shards', edited since the build: "
                           f"sources.{source}.by_split absent (the committed shards' stats hold "), printed
    for field in (f"sources.{source}.by_kind", f"sources.{source}.rejects_by_reason", "tokens.sources",
                  "tokens.tokenizers"):
        assert f"; {field} absent (the committed shards' stats hold " in line, line
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {path}: counts other than the committed shards'")
    summary = {**summary, "tokens": {}}  # as a build of no tokens/ folder writes it
    path.write_text(json.dumps(summary))
    shutil.rmtree(out / "tokens")
    assert main(["verify", "--quick", str(out)]) == 0, capsys.readouterr().out


def test_verify_names_a_token_shard_of_an_earlier_tar_stale(mini_corpus, tiny_tokenizer, tmp_path, capsys, caplog):
    """A rerun with --no-tokenize over grown input rewrote a rendered shard (another sha256, more
    sentences) and left its token shard of the old tar: `verify` said intact, and the trainer would
    train on the old sentences' codes. It is named stale with the command that tokenizes it again;
    that build makes the output intact. The rerun itself printed the old token count and said
    nothing; it warns of the stale shard in its log as verify names it."""
    import logging

    import yaml

    from uvd_pipeline.build import run_build
    from uvd_pipeline.cli import main
    from uvd_pipeline.config import load_config

    imagenet = tmp_path / "imagenet"
    shutil.copytree(mini_corpus / "imagenet", imagenet)
    out = tmp_path / "out"
    config = {"version": 1, "output": str(out), "seed": 0, "image": {"size": 64}, "split": {"val_fraction": 0.0},
              "dedup": {"enabled": False},  # the grown input is copies of its images
              "sources": [{"name": "inet", "type": "imagenet", "path": str(imagenet), "num_shards": 1,
                           "num_val_shards": 1}],
              "tokenizer": {"checkpoint": str(tiny_tokenizer), "batch_size": 8, "threads": 1, "compile": False},
              "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    run_build(load_config(str(path)))
    train = sorted(p for p in (imagenet / "train").iterdir() if p.is_dir())[-1]
    for i, image in enumerate(sorted(train.iterdir())[:20]):
        shutil.copy(image, train / f"{train.name}_grown{i}.JPEG")
    with caplog.at_level(logging.WARNING):
        run_build(load_config(str(path), {"tokenizer.enabled": False}))  # as `build --no-tokenize`
    warned = [r.getMessage() for r in caplog.records if "stale" in r.getMessage()]
    shard = out / "tokens" / "inet" / "train" / "inet-train-00000.arrow"
    stats = json.loads(shard.with_name("inet-train-00000.stats.json").read_text())
    tar = json.loads((out / "rendered" / "inet" / "train" / "inet-train-00000.stats.json").read_text())["tar_sha256"]
    assert stats["rendered_sha256"] != tar
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert (f"damaged: {shard}: stale: made from a tar of sha256 {stats['rendered_sha256']}, rendered shard "
            f"inet/train/inet-train-00000 is now {tar} (rewritten since, by a build that did not tokenize): the "
            "trainer would take tokens of sentences the shard no longer holds; tokenize it again: run the same build "
            "command without --no-tokenize (it re-encodes every token shard of a rewritten tar), or python -m "
            "uvd_pipeline build CONFIG --retokenize\n") in printed, printed
    assert warned == [f"{shard}: stale: made from a tar of sha256 {stats['rendered_sha256']}, rendered shard "
                      f"inet/train/inet-train-00000 is now {tar} (rewritten since, by a build that did not tokenize): "
                      "the trainer would take tokens of sentences the shard no longer holds; tokenize it again: run "
                      "the same build command without --no-tokenize (it re-encodes every token shard of a rewritten "
                      "tar), or python -m uvd_pipeline build CONFIG --retokenize"]
    caplog.clear()
    run_build(load_config(str(path)))
    assert not [r for r in caplog.records if "stale" in r.getMessage()]
    assert main(["verify", str(out)]) == 0, capsys.readouterr().out


def test_export_of_a_build_still_writing_says_unfinished(mini_corpus, mini_build, tmp_path, capsys):
    """A token shard renamed into place before its stats file (a build writing it, its lock held by
    a live process): `export-jsonl` called it damaged, exit 1, where `verify` says UNFINISHED, exit
    3. It says unfinished and exits 3; once the lock's process is gone it is damage again."""
    from dataclasses import asdict, replace

    from uvd_pipeline.cli import main
    from uvd_pipeline.output_lock import LockHolder
    from uvd_pipeline.verify import UNFINISHED

    _, out, _ = _copy(mini_corpus, mini_build, tmp_path)
    shard = sorted((out / "tokens").rglob("*.arrow"))[0]
    shard.with_name(shard.name.replace(".arrow", ".stats.json")).unlink()
    holder = LockHolder.this_process()
    (out / "_lock.json").write_text(json.dumps(asdict(holder)))
    target = tmp_path / "all.jsonl"
    assert main(["export-jsonl", str(out / "tokens"), "--out", str(target)]) == UNFINISHED
    assert capsys.readouterr().err == (f"error: {out}: UNFINISHED: a build holds this output ({holder.describe()}); "
                                       f"{shard} is not committed yet; export once the build is done\n")
    assert main(["verify", "--quick", str(out)]) == UNFINISHED
    capsys.readouterr()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "_lock.json").write_text(json.dumps(asdict(replace(holder, pid=int(gone.stdout), pid_start=None))))
    assert main(["export-jsonl", str(out / "tokens"), "--out", str(target)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {shard}: its .stats.json file (the commit mark) is "
                                              "missing")
    assert not target.exists()


def test_verify_shows_a_tab_in_a_name_as_a_shell_writes_it(mini_corpus, mini_build, tmp_path, capsys):
    """A stray named with a tab and a newline was printed `a\\u0009b\\u000a.tar`: safe, yet hard to
    read and to type back. Tab, newline and carriage return are shown as `\\t`, `\\n`, `\\r` (as
    `$'...'` in a shell takes them); other control characters keep their code."""
    from uvd_pipeline.cli import main

    _, out, summary = _copy(mini_corpus, mini_build, tmp_path)
    first = summary["shards"][0]
    folder = out / "rendered" / first["source"] / first["split"]
    (folder / "a\tb\n\x07.tar").write_bytes(b"")
    assert main(["verify", "--quick", str(out)]) == 1
    assert f"damaged: {folder}/a\\tb\\n\\u0007.tar: {STRAY_WHY}\n" in capsys.readouterr().out


def test_a_new_starting_lock_in_a_removed_ones_inode_is_still_looked_for(tmp_path):
    """`acquire` remembers who writes an empty lock by its inode and asks only them again: ext4 and
    tmpfs give a freed inode number to the next file at once, so a new build's starting lock in the
    old one's place was judged by the dead writer's pid, 'open in no process', and removed under it
    (rev58f L1, 4 of 4 on ext4). The memo is keyed by change time too: the new writer is found."""
    from uvd_pipeline.output_lock import unreadable_lock

    lock = tmp_path / "_lock.json"
    seen: dict = {}
    with lock_being_written(lock):
        first = lock.stat().st_ino
        assert unreadable_lock(str(tmp_path), seen).open_now is True
    lock.unlink()  # that build is gone; another starts
    with lock_being_written(lock):
        assert unreadable_lock(str(tmp_path), seen).open_now is True, (first, lock.stat().st_ino)


def test_a_temporary_gone_between_the_sweeps_listing_and_its_removal_is_no_crash(tmp_path, monkeypatch):
    """After SIGTERM a worker thread still inside a bundle may rename its temporary under the
    sweep: its FileNotFoundError made the interrupted build a crash (exit 1, 1 of 4 runs with
    thread workers). The sweep removes what is still there and counts it."""
    from sources import fsio
    from uvd_pipeline import rendered_shards

    (tmp_path / "a.tar.tmp-0001").write_bytes(b"x")
    listing = fsio.list_files

    def listed_then_renamed(uri, recursive=False):
        return [*listing(uri, recursive=recursive), str(tmp_path / "b.placed.json.tmp-0002")]

    monkeypatch.setattr(fsio, "list_files", listed_then_renamed)
    assert rendered_shards.remove_temporaries(str(tmp_path)) == 1
    assert not list(tmp_path.iterdir())
