"""A build's own files read back on a rerun, by `verify` and by `report` (commit marks, `.moved`
records, shard inputs, stats, rejects files, `build.json`) are judged before they are read: a fifo,
socket or device in their place is never opened (opening a fifo blocks, `/dev/zero` never ends),
and no more than a cap is read. A unit whose record is refused is rendered again, a shard whose
file is refused is rebuilt, and the output comes out byte for byte as before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shard_digests, write_config


def _copy(mini_corpus: Path, mini_build, tmp_path: Path) -> tuple[Path, Path]:
    config, _ = mini_build
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    return write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint), out


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The command line in a child with a deadline: a read that blocks fails the test, never hangs it."""
    return subprocess.run([sys.executable, "-m", "uvd_pipeline", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=240)


def _in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """The command line's `main` in this process, for states with no fifo or device to block on:
    a child costs 2-7 CPU-s of imports (Beam, torch) before it reads a file."""
    from uvd_pipeline.cli import main

    capsys.readouterr()
    code = main(list(args))
    shown = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, shown.out, shown.err)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _biggest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_size)


def test_a_rerun_renders_again_what_a_fifo_device_or_huge_file_replaced(mini_corpus, mini_build, tmp_path):
    config, out = _copy(mini_corpus, mini_build, tmp_path)
    reference = shard_digests(out)
    mark = _biggest(out / "_units" / "inet", "*.json")
    moved = _biggest(out / "_units" / "clips", "*.moved")
    inputs = out / "_inputs" / "web" / "web-train-00000.txt"
    empty_rejects = next(p for p in (out / "rendered").rglob("*.rejects.jsonl") if p.stat().st_size == 0)
    stats = out / "rendered" / "inet" / "val" / "inet-val-00000.stats.json"
    _fifo(mark)
    _to_dev_zero(moved)
    _to_dev_zero(inputs)
    _fifo(empty_rejects)  # its stats record 0 bytes: the size check alone passes a fifo
    with open(stats, "r+b") as handle:  # a sparse 80 MiB file: past the cap, no JSON
        handle.truncate(80 << 20)

    run = _cli("build", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stderr
    assert f"unit {mark.stem} of inet: unreadable commit mark ({mark} is a fifo (named pipe), not a file this build " \
           "wrote: delete it" in log
    assert f"{empty_rejects}: a fifo (named pipe), not the file its stats record" in log
    assert f"{stats}: unreadable stats ({stats} is larger than the 64 MiB" in log
    assert str(moved) in log
    summary = json.loads((out / "summary.json").read_text())
    counters = summary["run"]["counters"]
    assert counters["inet.units_rendered"] >= 1 and counters["clips.units_rendered"] >= 1
    for path in (mark, empty_rejects, stats, inputs):
        assert path.is_file() and not path.is_symlink(), f"{path} written anew as a file"
    assert shard_digests(out) == reference
    check = _cli("verify", str(out))
    assert check.returncode == 0 and "intact" in check.stdout, check.stdout + check.stderr


def test_verify_and_report_name_a_fifo_or_device_in_place_of_a_committed_file(mini_corpus, mini_build, tmp_path):
    _, out = _copy(mini_corpus, mini_build, tmp_path)
    mark = _biggest(out / "_units" / "web", "*.json")
    empty_rejects = next(p for p in (out / "rendered").rglob("*.rejects.jsonl") if p.stat().st_size == 0)
    _to_dev_zero(mark)
    _fifo(empty_rejects)
    check = _cli("verify", str(out))
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"damaged: {empty_rejects}: a fifo (named pipe), not the file its stats record" in check.stdout
    assert f"{mark} is a character device, not a file this build wrote" in check.stdout

    _fifo(out / "rejects.jsonl")
    report = _cli("report", str(out))
    assert report.returncode != 0 and "rejects.jsonl: a fifo (named pipe), not the file the build wrote" in report.stderr, report.stderr[-2000:]

    rejects = out / "rejects.jsonl"
    rejects.unlink()
    with open(rejects, "wb") as handle:  # a sparse 80 MiB file without a line end: never read whole
        handle.truncate(80 << 20)
    report = _cli("report", str(out))
    # held to the shards' rejects files by its size first (`verify.merged_rejects`), before a line is read
    assert report.returncode != 0 and f"damaged: {rejects}: {80 << 20} bytes, the committed shards' rejects" \
        in report.stderr, report.stderr[-2000:]


def test_a_build_record_past_its_cap_fails_the_build_naming_it(mini_corpus, mini_build, tmp_path):
    config, out = _copy(mini_corpus, mini_build, tmp_path)
    build = out / "build.json"
    with open(build, "r+b") as handle:
        handle.truncate(100 << 20)
    run = _cli("build", str(config))
    assert run.returncode != 0
    assert f"{build} is larger than the 64 MiB this file may have; not a file this build wrote: delete it" in run.stderr, \
        run.stderr[-2000:]


def test_the_report_copies_no_generation_strip_from_outside_the_trainer_folder(tmp_path):
    """`OUT/trainer/demo.json` names the demo's generation strip the report copies next to its page:
    a name that climbs out (`../../secret`) is refused naming the field, never copied; a fifo in
    the strip's place is refused unopened."""
    from uvd_pipeline.report import trainer_section
    from uvd_pipeline.state_files import StateFileRefused

    out, report = tmp_path / "out", tmp_path / "out" / "report"
    (out / "trainer").mkdir(parents=True)
    report.mkdir()
    (tmp_path / "secret").write_bytes(b"private bytes")
    demo = {"preset": "tiny", "parameters": 1, "steps": 2, "seq_len": 8, "tokens_seen": 16, "tokens_per_s": 1.0,
            "final_loss": 8.5, "prompts": [], "legend": "", "curve": {"step": [1, 2], "loss": [9.0, 8.5]},
            "generation_png": "../../secret"}
    (out / "trainer" / "demo.json").write_text(json.dumps(demo))
    with pytest.raises(ValueError, match=r"demo.json: generation_png '\.\./\.\./secret' is no file name in its folder"):
        trainer_section(str(out), str(report))
    assert not (report / "trainer_generation.png").exists()
    os.mkfifo(out / "trainer" / "generation.png")
    (out / "trainer" / "demo.json").write_text(json.dumps({**demo, "generation_png": "generation.png"}))
    with pytest.raises(StateFileRefused, match="generation.png is a fifo"):
        trainer_section(str(out), str(report))


def test_reject_lines_are_read_within_their_bound(tmp_path):
    """The report's reader of `rejects.jsonl` (reached once its size agrees with the shards'):
    a line past `MAX_REJECT_LINE_BYTES` is refused naming the file, never read whole."""
    from uvd_pipeline import report_data
    from uvd_pipeline.shards import ShardDamaged

    rejects = tmp_path / "rejects.jsonl"
    with open(rejects, "wb") as handle:  # a sparse 80 MiB file without a line end
        handle.write(b'{"key": "a"}\n')
        handle.truncate(80 << 20)
    lines = report_data._reject_lines(str(rejects))
    assert next(lines) == b'{"key": "a"}'
    with pytest.raises(ShardDamaged, match="a line longer than 1 MiB"):
        next(lines)


def test_a_folder_in_place_of_rejects_jsonl_or_mixture_yaml_is_named_as_a_folder(mini_corpus, mini_build, tmp_path):
    """A folder where the build wrote `rejects.jsonl` (its size the folder's 4096 bytes) is named
    as a folder by `verify`, not as a file 'cut short' whose fix is a rerun; and the rerun, which
    rewrites `rejects.jsonl` and `mixture.yaml` at the end, stops naming the folder and the fix
    (it was a ValueError traceback: 'Cannot delete directory'), never deleting what it never wrote.
    Once the folder is removed, the rerun writes the files again and `verify` finds it intact."""
    config, out = _copy(mini_corpus, mini_build, tmp_path)
    for name in ("rejects.jsonl", "mixture.yaml"):
        (out / name).unlink()
        (out / name).mkdir()
        (out / name / "notes.txt").write_text("a user's file")
    check = _cli("verify", str(out))
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"{out / 'rejects.jsonl'}: a folder, not the file the build wrote: remove it" in check.stdout, check.stdout
    assert "cut short" not in check.stdout
    run = _cli("build", str(config))
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert f"{out / 'rejects.jsonl'} is a folder, not the file the build writes there; remove it" in run.stderr, \
        run.stderr[-3000:]
    assert (out / "rejects.jsonl" / "notes.txt").read_text() == "a user's file"
    assert (out / "summary.json").is_file()  # refused before anything is taken away: still a finished output
    shutil.rmtree(out / "rejects.jsonl")
    run = _cli("build", str(config))
    assert run.returncode != 0 and f"{out / 'mixture.yaml'} is a folder" in run.stderr, run.stderr[-3000:]
    shutil.rmtree(out / "mixture.yaml")
    run = _cli("build", str(config))
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "rejects.jsonl").is_file() and (out / "mixture.yaml").is_file()
    check = _cli("verify", str(out))
    assert check.returncode == 0 and "intact" in check.stdout, check.stdout + check.stderr


def test_a_folder_in_place_of_summary_json_is_named_as_a_folder_with_its_fix(mini_corpus, mini_build, tmp_path, capsys):
    """`summary.json` made a folder (a sync tool's conflict, a `mkdir` by mistake): `verify` said
    "cannot be read (Is a directory); check the disk it is on (dmesg)", sending the user to a disk
    that was fine. It names the folder in place of the file and what to do; so does `report`."""
    _, out = _copy(mini_corpus, mini_build, tmp_path)
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    check = _in_process(capsys, "verify", str(out))
    assert check.returncode == 1, check.stdout + check.stderr
    assert (f"damaged: {out / 'summary.json'}: a folder in place of the file the build wrote: move it away (or "
            "remove it), then run the same build command again") in check.stdout, check.stdout
    assert "check the disk" not in check.stdout and "Is a directory" not in check.stdout
    report = _in_process(capsys, "report", str(out))
    assert report.returncode != 0 and "Traceback" not in report.stderr, report.stderr
    assert f"{out / 'summary.json'}: a folder in place of the file the build wrote" in report.stderr, report.stderr


@pytest.mark.parametrize("damage", ["cut", "empty", "list"])
def test_a_damaged_build_record_is_refused_naming_it_and_the_flag_that_replaces_it(
        mini_corpus, mini_build, tmp_path, capsys, damage):
    """`build.json` cut short, emptied or not a JSON object: `build` (plain, --verify as `verify`
    advises, --overwrite) died in a traceback (JSONDecodeError; AttributeError 'list' object has no
    'get') and `check` said "config OK". Which configuration the shards there are of is unknown:
    `check` and `build` refuse naming the file and --replace-changed; `verify` reports build.json
    alone (every token shard was blamed too: "another configuration ... this build's is None")."""
    config, out = _copy(mini_corpus, mini_build, tmp_path)
    record = out / "build.json"
    whole = record.read_bytes()
    record.write_bytes({"cut": whole[:300], "empty": b"", "list": b"[1]"}[damage])
    said = {"cut": "is no JSON (cut short or overwritten: ", "empty": "is no JSON (cut short or overwritten: ",
            "list": "holds a JSON list, not a build record"}[damage]
    for command in (["check", str(config)], ["build", str(config)], ["build", str(config), "--verify"]):
        run = _in_process(capsys, *command)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert f"error: {record} {said}" in run.stderr and "pass --replace-changed (or --overwrite) to build it anew" \
            in run.stderr, run.stderr[-2000:]
    assert record.read_bytes() == {"cut": whole[:300], "empty": b"", "list": b"[1]"}[damage]  # refused untouched
    verify = _in_process(capsys, "verify", str(out))
    damaged = [line for line in verify.stdout.splitlines() if line.startswith("damaged: ")]
    assert verify.returncode == 1 and len(damaged) == 1 and damaged[0].startswith(f"damaged: {record}: "), verify.stdout


def test_replace_changed_rebuilds_over_a_damaged_build_record_byte_for_byte(mini_corpus, mini_build, tmp_path, capsys):
    """--replace-changed (and --overwrite) replace an output whose `build.json` cannot be read: the
    shards come out as the shared build's, the record is this config's again and `verify` passes."""
    from uvd_pipeline.build_record import prepare_output

    config, out = _copy(mini_corpus, mini_build, tmp_path)
    record = out / "build.json"
    whole = json.loads(record.read_text())
    record.write_text("[1]")
    run = _in_process(capsys, "build", str(config), "--replace-changed")
    assert run.returncode == 0, run.stderr[-2000:]
    assert shard_digests(out) == shard_digests(Path(mini_build[0].output))
    assert json.loads(record.read_text())["config_hash"] == whole["config_hash"]
    assert _in_process(capsys, "verify", str(out)).returncode == 0
    record.write_bytes(b"")  # --overwrite: the output emptied before the build, the record written anew
    prepare_output(mini_build[0].model_copy(update={"output": str(out)}), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["build.json"]
    assert json.loads(record.read_text())["config_hash"] == whole["config_hash"]


def test_check_refuses_an_output_of_another_configuration_as_the_build_does(mini_corpus, mini_build, tmp_path, capsys):
    """`check` said "config OK" (exit 0) of an output holding another configuration's build (here
    another seed), which `build` refused at once (exit 2): it now refuses it in the build's words."""
    config, out = _copy(mini_corpus, mini_build, tmp_path)
    check = _in_process(capsys, "check", str(config), "--set", "seed=5")
    assert check.returncode == 2, check.stdout + check.stderr
    said = f"error: output {out} holds a build of a different configuration (config hash "
    assert said in check.stderr and "pass --overwrite (or --replace-changed) to replace it" in check.stderr, check.stderr
    build = _in_process(capsys, "build", str(config), "--set", "seed=5")
    assert build.returncode == 2 and build.stderr.strip() == check.stderr.strip(), build.stderr[-2000:]
    assert _in_process(capsys, "check", str(config)).returncode == 0  # its own configuration: OK
    for flag in ("--replace-changed", "--overwrite"):  # the build to come replaces it (rev57h M1)
        assert _in_process(capsys, "check", str(config), "--set", "seed=5", flag).returncode == 0, flag
