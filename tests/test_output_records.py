"""`verify` holds the build's own records to the rest of its output: each committed shard's input
digest (`_inputs/<source>/<shard>.txt`) to the unit store's commit marks, and the summary's
`sources.X.type` and `run` section to `build.json` and to themselves. Each was taken as written:
an edited one passed as intact (rev56: 'not held to anything')."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import lock_being_written
from uvd_pipeline.cli import main


def _verify(capsys, out: Path, *flags: str) -> tuple[int, str]:
    code = main(["verify", *flags, str(out)])
    return code, capsys.readouterr().out


def test_verify_holds_each_shard_input_digest_to_the_unit_store(mini_build_copy, capsys):
    """A shard's `_inputs` digest decides whether a rerun keeps it: an edited one (another source's,
    garbage) or a deleted one passed `verify`, and the next build wrote the shard again. Each is named
    with the digest the unit store's committed units give; the store deleted (a user reclaiming its
    space) leaves the digests held to one another only."""
    config, summary = mini_build_copy
    out = Path(config.output)
    inputs = out / "_inputs"
    assert _verify(capsys, out)[0] == 0
    web, clips = inputs / "web" / "web-train-00000.txt", inputs / "clips" / "clips-val-00000.txt"
    web_digest, clips_digest = web.read_text(), clips.read_text()
    assert web_digest != clips_digest and len(web_digest) == 64
    web.write_text(clips_digest)  # another group's digest: a rerun would build the shard again
    (inputs / "inet" / "inet-val-00000.txt").unlink()
    clips.write_text("not a digest\n")
    for flags in ((), ("--quick",)):
        code, printed = _verify(capsys, out, *flags)
        assert code == 1 and "DAMAGED: 3 damaged files" in printed, printed
        assert (f"damaged: {web}: input digest {clips_digest}, the unit store's committed units of inet, web give "
                f"{web_digest}: edited since the build") in printed, printed
        assert (f"damaged: {inputs / 'inet' / 'inet-val-00000.txt'}: missing: summary.json lists shard "
                "inet-val-00000, the input digest it was built from is gone") in printed, printed
        assert f"damaged: {clips}: 'not a digest' is no input digest (64 hex digits)" in printed, printed
        assert "a rerun builds the shard again" in printed
    clips.write_text(clips_digest)
    (inputs / "inet" / "inet-val-00000.txt").write_text(web_digest)
    shutil.rmtree(out / "_units")  # the store deleted: the digests are held to one another
    code, printed = _verify(capsys, out)
    assert code == 1 and printed.startswith(
        f"damaged: {web}: input digest {clips_digest}, the other shards of inet, web record {web_digest}"), printed
    web.write_text(web_digest)
    code, printed = _verify(capsys, out)
    assert code == 0 and "intact" in printed, printed


def test_a_store_that_cannot_give_a_group_digest_holds_the_shards_to_one_another(mini_build_copy, capsys):
    """The store's group digest is over every unit of the group: one damaged mark (its digest not
    read) or one source's store folder deleted (web and inet are one dedup group) made it a digest
    of part of the group, and every shard of the group was called edited since the build, though
    a rerun keeps them byte for byte. Such a group's shards are held to one another; the damaged
    mark alone is named."""
    config, summary = mini_build_copy
    out = Path(config.output)
    mark = sorted((out / "_units" / "clips").glob("*.json"))[0]
    kept = mark.read_bytes()
    mark.write_bytes(kept[:20])  # truncated
    code, printed = _verify(capsys, out)
    assert code == 1 and "DAMAGED: 1 damaged files" in printed and f"damaged: {mark}: JSONDecodeError" in printed, \
        printed
    mark.write_bytes(kept)
    shutil.rmtree(out / "_units" / "inet")
    code, printed = _verify(capsys, out)
    assert code == 0 and ": intact: " in printed, printed


def test_a_deleted_commit_mark_is_named_and_its_unit_rendered_again(mini_build_copy, capsys):
    """One unit's commit mark deleted among the others of its source (its stored files left): the
    store's group digest was over the other units, and every shard of the group was called edited
    since the build (clips: 3 input records named, the mark not at all), though the rerun keeps
    them. The mark is named, the group's shards are held to one another, and the same build
    command renders the unit again and commits it, its shards kept byte for byte."""
    from conftest import shard_digests
    from uvd_pipeline.build import run_build

    config, summary = mini_build_copy
    out = Path(config.output)
    before = shard_digests(out)
    mark = sorted((out / "_units" / "clips").glob("*.json"))[0]
    left = sorted(p.name for p in mark.parent.glob(mark.stem + ".*") if p != mark)
    mark.unlink()
    for flags in ((), ("--quick",)):
        code, printed = _verify(capsys, out, *flags)
        assert code == 1 and "DAMAGED: 1 damaged files" in printed, printed
        assert printed.startswith(f"damaged: {mark}: missing: the unit's commit mark is gone, its {len(left)} stored "
                                  f"files are there ({', '.join(left)}): the unit is not committed"), printed
    again = run_build(config).summary
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"] and mark.exists()
    assert again["run"]["counters"]["clips.units_rendered"] == 1
    assert shard_digests(out) == before
    assert _verify(capsys, out)[0] == 0


def test_files_other_programs_leave_in_the_unit_store_are_no_units(mini_build_copy, capsys):
    """Finder's `.DS_Store` (or SMB's browsing, or NFS's `.nfsXXXX` of a file open while removed) in a
    source's store folder was counted as a unit's file whose mark is gone: `verify` called a finished
    output damaged, naming a unit `.json` with an empty id (rev58d L1). Only the files the store
    writes (a unit id and its suffixes) are the store's; a unit's deleted mark is still named."""
    config, _ = mini_build_copy
    out = Path(config.output)
    folder = out / "_units" / "clips"
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(2042))
    (folder / ".nfs000000000123456700000001").write_bytes(b"x")
    (folder / "notes.json").write_text("{}")
    for flags in ((), ("--quick",)):
        code, printed = _verify(capsys, out, *flags)
        assert code == 0 and f"{out}: intact:" in printed, printed
    mark = sorted(folder.glob("[0-9a-f]*.json"))[0]
    mark.unlink()
    code, printed = _verify(capsys, out)
    assert code == 1 and "DAMAGED: 1 damaged files" in printed and f"damaged: {mark}: missing" in printed, printed


def test_shards_that_disagree_without_a_store_and_no_majority_are_all_named(mini_build_copy, capsys):
    """With the unit store deleted, a group's shards are held to one another: on a tie the most
    common digest was whichever shard came first, so an edited shard was the verdict and the honest
    one was named edited. Each is named now, without a verdict."""
    config, summary = mini_build_copy
    out = Path(config.output)
    shutil.rmtree(out / "_units")
    clips = sorted((out / "_inputs" / "clips").glob("*.txt"))
    assert len(clips) == 3, clips
    honest = clips[2].read_text()
    clips[0].write_text("0" * 64)
    clips[1].write_text("1" * 64)  # three digests, one each
    code, printed = _verify(capsys, out)
    assert code == 1 and "DAMAGED: 3 damaged files" in printed, printed
    for path, digest in zip(clips, ("0" * 64, "1" * 64, honest)):
        assert (f"damaged: {path}: input digest {digest}; the shards of clips record 3 input digests, none by "
                "most of them") in printed, printed
    assert "which cannot be told" in printed


def test_verify_holds_the_summary_source_types_and_run_section(mini_build_copy, capsys):
    """`sources.X.type` (the report's source table) and the `run` section (the report's throughput:
    seconds, stages, metrics) were held to nothing: edited ones passed `verify` and the report showed
    them; a deleted `run.runner` stopped the summary's text with a KeyError. Each is named by its field,
    with what the rest of the output says; the report refuses such an output as `verify` does."""
    config, summary = mini_build_copy
    out = Path(config.output)
    path = out / "summary.json"
    edited = json.loads(path.read_text())
    edited["sources"]["web"]["type"] = "video"
    run = edited["run"]
    run["seconds"] = run["seconds"] + 100
    run["stages"]["render"]["items_per_s"] = 1e6
    run["metrics"] = {"reported": False, "not_reported": []}
    run["shards_resumed"] = -1
    del run["runner"]
    path.write_text(json.dumps(edited))
    code, printed = _verify(capsys, out, "--quick")
    assert code == 1 and "DAMAGED: 1 damaged files" in printed, printed
    line = printed.splitlines()[0]
    assert line.startswith(f"damaged: {path}: fields other than the rest of the output says, edited since the build: "
                           "sources.web.type 'video' (build.json's config gives 'laion'); "), line
    phases = round(sum(summary["run"]["phases"].values()), 2)
    for part in (f"run.seconds {run['seconds']!r} (its run.phases add up to {phases})",
                 "run.stages {", "(its run.distributions give {",
                 "run.metrics {'reported': False, 'not_reported': []} (reported False names what was not reported: [",
                 "run.shards_resumed -1 (a count of shards)", "run.runner absent (a runner's name)"):
        assert part in line, (part, line)
    assert line.endswith("run the same build command again: it writes it anew from the committed shards"), line
    assert main(["report", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: damaged: {path}: fields other than the rest of the output says")
    path.write_text(json.dumps(summary))
    assert _verify(capsys, out, "--quick")[0] == 0


def test_verify_holds_the_run_counters_and_runner_fields_to_the_output(mini_build_copy, capsys):
    """`run.counters`, `runner` and `workers` were held to their kind only: a shard count or a
    sentence count edited, the runner renamed beside its local worker mode, workers nulled passed
    `verify` (exit 0) and the report's summary line showed them. A build that resumed nothing wrote
    every listed shard: its counters are held to them; the runner's fields to one another."""
    from uvd_pipeline.build import run_build

    config, summary = mini_build_copy
    out = Path(config.output)
    path = out / "summary.json"
    run = summary["run"]
    assert run["shards_resumed"] == 0 and run["runner"] == "DirectRunner" and run["worker_mode"]
    web_shards = sum(1 for row in summary["shards"] if row["source"] == "web")
    assert run["counters"]["web.shards_written"] == web_shards
    assert run["counters"]["inet.sentences_written"] == summary["sources"]["inet"]["sentences"]
    edits = {
        ("counters", "web.shards_written", web_shards + 1):
            f"run.counters['web.shards_written'] {web_shards + 1} (the summary lists {web_shards} shards of web",
        ("counters", "inet.sentences_written", 96): "run.counters['inet.sentences_written'] 96 (the summary lists "
                                                    f"{summary['sources']['inet']['sentences']} sentences of inet",
        ("runner", None, "FlinkRunner"): f"run.runner 'FlinkRunner' (its run.worker_mode {run['worker_mode']!r} is "
                                         "the DirectRunner's alone)",
        ("workers", None, None): "run.workers None (run.runner 'DirectRunner' runs the count of workers",
    }
    for (field, key, value), why in edits.items():
        edited = json.loads(json.dumps(summary))
        if key is None:
            edited["run"][field] = value
        else:
            edited["run"][field][key] = value
        path.write_text(json.dumps(edited))
        code, printed = _verify(capsys, out, "--quick")
        assert code == 1 and "DAMAGED: 1 damaged files" in printed and why in printed, (why, printed)
    path.write_text(json.dumps(summary))
    assert _verify(capsys, out)[0] == 0
    again = run_build(config).summary["run"]  # resumed: its counters count what it wrote, none
    assert again["shards_resumed"] == summary["totals"]["shards"] and "web.shards_written" not in again["counters"]
    assert _verify(capsys, out)[0] == 0


def test_an_earlier_revisions_summary_is_not_held_to_todays_run_fields(mini_build_copy, capsys):
    """An output of an earlier render revision (built before `run.workers_failed_to_start` was kept)
    was 'damaged' for that absent field, though its rerun is refused (--replace-changed asked): no
    way out but rendering it all again. Its `run` section is not held to today's fields, as its input
    digests are not; today's output missing that field is still named."""
    from uvd_pipeline.config_build import RENDER_REVISION

    config, summary = mini_build_copy
    out = Path(config.output)
    path, record_path = out / "summary.json", out / "build.json"
    edited = json.loads(path.read_text())
    del edited["run"]["workers_failed_to_start"]
    path.write_text(json.dumps(edited))
    code, printed = _verify(capsys, out)
    assert code == 1 and "run.workers_failed_to_start absent" in printed, printed
    record = json.loads(record_path.read_text())
    record["render_revision"] = RENDER_REVISION - 1  # what the earlier version wrote
    record_path.write_text(json.dumps(record))
    for flags in ((), ("--quick",)):
        code, printed = _verify(capsys, out, *flags)
        assert code == 0 and ": intact: " in printed.splitlines()[-1], printed
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "report.json").stat().st_size > 0


def test_verify_holds_mixture_yaml_to_the_summary_mix(mini_build_copy, capsys):
    """`mixture.yaml` (the trainer's `--data` file) was checked for being there only: emptied, or with
    other weights, it passed `verify` (exit 0) and trainer.fit then failed, or drew another mix than
    summary.json records. Its split, globs and weights are held to that mix, by value (the same mix
    written another way is intact); the same build command writes it again."""
    from trainer.mixture_spec import load_mixture_file
    from uvd_pipeline.build import run_build

    config, summary = mini_build_copy
    out = Path(config.output)
    path = out / "mixture.yaml"
    written = path.read_bytes()
    weights = {f"tokens/{name}/train/*.arrow": round(v["weight"], 12)
               for name, v in summary["mixture"]["sources"].items()}
    assert len(weights) >= 2 and {e.glob: e.weight for e in load_mixture_file(str(path)).entries} == {
        str(out / glob): weight for glob, weight in weights.items()}
    swapped = dict(zip(weights, reversed(list(weights.values()))))
    first, second = list(weights)[:2]
    damage = {
        b"": "empty",
        json.dumps({"split": "train", "data": [{"glob": g, "weight": w} for g, w in swapped.items()]}).encode():
            f"{first} weight {swapped[first]!r}, the summary's mix gives {weights[first]!r}",
        json.dumps({"split": "train", "data": [{"glob": second, "weight": weights[second]}]}).encode():
            f"no entry for {first} (weight {weights[first]!r})",
        written.replace(b"split: train", b"split: val"): "split 'val', not 'train'",
    }
    for text, why in damage.items():
        path.write_bytes(text)
        for flags in ((), ("--quick",)):
            code, printed = _verify(capsys, out, *flags)
            assert code == 1 and "DAMAGED: 1 damaged files" in printed, printed
            line = printed.splitlines()[0]
            assert line.startswith(f"damaged: {path}: {why}") and line.endswith(
                "not the token mix summary.json records (the trainer's --data file, edited since the build); run "
                "the same build command again: it writes it anew from the committed shards"), line
    path.write_text(json.dumps({"data": [{"weight": w, "glob": g} for g, w in reversed(weights.items())],
                                "split": "train"}))  # the same mix, as JSON (YAML reads it) in another order
    assert _verify(capsys, out)[0] == 0
    path.write_bytes(b"")
    run_build(config)
    assert path.read_bytes() == written
    assert _verify(capsys, out)[0] == 0


def test_verify_and_report_wait_out_an_empty_lock_as_build_does(mini_build_copy, capsys, tmp_path):
    """An empty `_lock.json`: `verify` and `report` took it for 'nobody holds it' (exit 0) while
    `build` refused it. A build starting has it open (one before the linked lock write, between its
    O_EXCL and its write): both say a build may be starting and exit `UNFINISHED`. One no process has
    open was judged by its age, which `cp -r` refreshes: a copied output's stale lock read as a build
    starting for a minute (L2); such a one holds nothing, whatever its age, and the output is judged."""
    import subprocess

    from uvd_pipeline.verify import UNFINISHED

    config, _ = mini_build_copy
    out = Path(config.output)
    lock = out / "_lock.json"
    for text, what in ((b"", "empty"), (b'{"host": ', "not readable as a lock (no host, pid and run id in it)")):
        lock.unlink(missing_ok=True)
        with lock_being_written(lock):
            lock.write_bytes(text)
            code, printed = _verify(capsys, out, "--quick")
            assert code == UNFINISHED and "UNFINISHED: what is committed is intact" in printed, printed
            assert printed.startswith(f"note: a build may be starting on this output: its lock file {lock} is {what} "
                                      "and a process of this host has it open: a build is starting"), printed
            assert main(["report", str(out)]) == UNFINISHED
            err = capsys.readouterr().err
            assert err.startswith(f"error: {out}: UNFINISHED: a build may be starting on this output: its lock file "
                                  f"{lock} is {what}"), err
        code, printed = _verify(capsys, out)  # open in no process now, a moment old
        assert code == 0 and printed.startswith(
            f"note: this output is held by no build: its lock file {lock} is {what}, and no process of this user on "
            "this host has it open"), printed
        assert f"{out}: intact:" in printed
    copied = tmp_path / "copied"
    subprocess.run(["cp", "-r", str(out), str(copied)], check=True)  # the copy's lock: young again
    code, printed = _verify(capsys, copied)
    assert code == 0 and "held by no build" in printed and f"{copied}: intact:" in printed, printed
