"""Trainer checkpoints are sealed with a manifest of sizes and digests and verified by every reader.

Checkpoints here are written by the real fit loop and then damaged the way disks and people
damage them: 4 KiB overwritten in place (same size), a truncated file, a deleted file. Every
reader (load_checkpoint, load_pretrained, export, evaluate, generate) refuses naming the file;
resume falls back to the newest intact step with a warning; old checkpoints without a manifest
load with a warning.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from trainer_shards import structured_sentences, write_shards

from trainer import checkpoint as ckpt
from trainer import evaluate as evaluate_cli
from trainer import generate as generate_cli
from trainer.checkpoint_io import load_pretrained, save_pretrained
from trainer.fit import FitOptions, fit
from trainer.integrity import MANIFEST, CheckpointDamaged, CheckpointError, CheckpointWarning, write_manifest
from trainer.interop import main as interop_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("integrity_shards")
    write_shards(folder / "a", "a", structured_sentences(16, seed=0), shards=2)
    return str(folder)


def _options(shards: str, out: Path, **kwargs) -> FitOptions:
    base = {"data": [f"{shards}/a/*.arrow"], "out": str(out), "preset": "tiny", "seq_len": 64, "batch_size": 2,
            "max_steps": 5, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 1,
            "quiet": True, "threads": 1}
    return FitOptions(**{**base, **kwargs})


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict:
    """A 5-step run stopped after step 3 with a checkpoint per step, and the whole run (reference)."""
    root = tmp_path_factory.mktemp("integrity_runs")
    fit(_options(shards, root / "run", stop_at=3))
    whole = fit(_options(shards, root / "whole"))
    return {"run": root / "run", "whole": whole}


def _copy(runs: dict, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(runs["run"], out)
    return out


def _step(out: Path, step: int) -> Path:
    return Path(ckpt.checkpoint_dir(str(out), step))


def overwrite(path: Path) -> None:
    """4 KiB (half of a smaller file) of 0xFF in the middle of the file: same size, other bytes."""
    size = path.stat().st_size
    count = min(4096, size // 2)
    with open(path, "r+b") as handle:
        handle.seek((size - count) // 2)
        handle.write(b"\xff" * count)
    assert path.stat().st_size == size


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def delete(path: Path) -> None:
    path.unlink()


DAMAGE = [("model.pt", overwrite, "sha256 differs"), ("model.pt", truncate, "recorded"),
          ("optimizer.pt", delete, "missing"), ("config.json", overwrite, "sha256 differs"),
          ("rng.pt", truncate, "recorded")]


def test_manifest_records_every_file_and_is_written_last(runs):
    folder = _step(runs["run"], 3)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(ckpt.FILES)
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    # the commit mark: no file of the folder is newer than the manifest
    assert all((folder / n).stat().st_mtime_ns <= (folder / MANIFEST).stat().st_mtime_ns for n in ckpt.FILES)
    assert json.loads((folder / "state.json").read_text())["format_version"] == 2


@pytest.mark.parametrize("name, damage, reason", DAMAGE, ids=[f"{n}-{d.__name__}" for n, d, _ in DAMAGE])
def test_every_reader_refuses_a_damaged_checkpoint_naming_the_file(runs, shards, tmp_path, capsys,
                                                                     name, damage, reason):
    out = _copy(runs, tmp_path)
    bad = _step(out, 3) / name
    damage(bad)
    with pytest.raises(CheckpointDamaged, match=reason) as error:
        ckpt.load_checkpoint(str(_step(out, 3)))
    assert error.value.path == str(bad) and str(error.value).startswith(str(bad))
    for source in (out, _step(out, 3)):  # the run folder (its newest step) and the step folder
        with pytest.raises(CheckpointDamaged, match=reason) as error:
            load_pretrained(source)
        assert error.value.path == str(bad)
    assert interop_main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "hf")]) == 2
    assert f"error: {bad}: " in capsys.readouterr().err and not (tmp_path / "hf").exists()
    assert evaluate_cli.main(["--checkpoint", str(out), "--data", f"{shards}/a/*.arrow", "--split", "all"]) == 2
    assert f"error: {bad}: " in capsys.readouterr().err
    assert generate_cli.main(["--checkpoint", str(out), "--tokenizer", str(tmp_path / "unused"),
                              "--out", str(tmp_path / "strip.png")]) == 2
    assert f"error: {bad}: " in capsys.readouterr().err and not (tmp_path / "strip.png").exists()


@pytest.mark.parametrize("name, damage", [("model.pt", overwrite), ("optimizer.pt", truncate), ("state.json", delete)])
def test_resume_falls_back_to_the_newest_intact_step(runs, shards, tmp_path, name, damage):
    out = _copy(runs, tmp_path)
    damage(_step(out, 3) / name)
    with pytest.warns(CheckpointWarning, match=f"step-00000003/{name}: .*set aside") as caught:
        summary = fit(_options(shards, out))
    assert len([w for w in caught if issubclass(w.category, CheckpointWarning)]) == 1
    assert summary["resumed_from"] == str(_step(out, 2)) and summary["start_step"] == 2
    assert summary["set_aside"] == [str(_step(out, 3)) + ".damaged"]
    assert (out / "checkpoints" / "step-00000003.damaged" / name).exists() or damage is delete
    # redoing step 3 from step 2 gives the uninterrupted run's losses bit for bit
    assert summary["losses"] == runs["whole"]["losses"][2:]
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [3, 4, 5]
    fresh = ckpt.load_checkpoint(str(_step(out, 5)))
    reference = ckpt.load_checkpoint(runs["whole"]["checkpoint"])
    assert all(torch.equal(fresh["model"][k], reference["model"][k]) for k in reference["model"])


def test_no_intact_checkpoint_and_an_explicit_damaged_one_are_errors(runs, shards, tmp_path):
    out = _copy(runs, tmp_path)
    for step in (1, 2, 3):
        truncate(_step(out, step) / "model.pt")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*step-00000003/model.pt.*step-00000001/model.pt"):
        fit(_options(shards, out))
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [1, 2, 3]  # nothing moved, nothing deleted
    with pytest.raises(CheckpointDamaged, match="step-00000002/model.pt"):
        fit(_options(shards, out, resume=str(_step(out, 2))))


def _make_legacy(out: Path) -> None:
    """What format 1 wrote: the same files, no manifest, format_version 1."""
    for _, folder in ckpt.list_checkpoints(str(out)):
        os.remove(os.path.join(folder, MANIFEST))
        state_path = os.path.join(folder, "state.json")
        state = json.loads(Path(state_path).read_text())
        Path(state_path).write_text(json.dumps({**state, "format_version": 1}))


def test_checkpoints_without_a_manifest_load_with_a_warning(runs, shards, tmp_path):
    out = _copy(runs, tmp_path)
    _make_legacy(out)
    expected = ckpt.load_checkpoint(str(_step(runs["run"], 3)))
    with pytest.warns(CheckpointWarning, match="no manifest.json"):
        loaded = ckpt.load_checkpoint(str(_step(out, 3)))
    assert all(torch.equal(loaded["model"][k], v) for k, v in expected["model"].items())
    with pytest.warns(CheckpointWarning, match="no manifest.json"):
        model = load_pretrained(out)
    assert torch.equal(model.lm_head.weight, expected["model"]["lm_head.weight"])
    # unverifiable, but a short file is still an error naming it, not a raw torch traceback
    truncate(_step(out, 3) / "model.pt")
    with pytest.warns(CheckpointWarning), pytest.raises(CheckpointDamaged, match="model.pt: cannot be read"):
        load_pretrained(out)
    with pytest.warns(CheckpointWarning) as caught:
        summary = fit(_options(shards, out, stop_at=4))
    messages = [str(w.message) for w in caught]
    assert [m for m in messages if re.search(r"step-00000003/model.pt: cannot be read .*set aside", m)], messages
    assert [m for m in messages if re.search(r"step-00000002: no manifest.json", m)], messages
    assert summary["resumed_from"] == str(_step(out, 2)) and summary["losses"] == runs["whole"]["losses"][2:4]


def test_a_checkpoint_without_a_manifest_warns_once_per_command(runs, shards, tmp_path):
    """`trainer.evaluate` of a pre-manifest checkpoint printed its CheckpointWarning 3 times (the
    state, the packing and the weights each verify the folder): once now."""
    out = _copy(runs, tmp_path)
    _make_legacy(out)
    done = subprocess.run([sys.executable, "-m", "trainer.evaluate", "--checkpoint", str(out), "--data",
                           f"{shards}/a/*.arrow", "--split", "all", "--limit", "1", "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("CheckpointWarning") == 1, done.stderr
    assert f"{_step(out, 3)}: no manifest.json" in done.stderr


def test_a_sealed_checkpoint_that_lost_its_manifest_is_damaged(runs, tmp_path):
    out = _copy(runs, tmp_path)
    os.remove(_step(out, 3) / MANIFEST)
    with pytest.raises(CheckpointDamaged, match=f"{MANIFEST}: missing"):
        load_pretrained(out)


def test_model_folders_we_write_are_sealed_and_verified(runs, tmp_path, capsys):
    assert interop_main(["export", "--checkpoint", str(runs["run"]), "--out", str(tmp_path / "hf")]) == 0
    manifest = json.loads((tmp_path / "hf" / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "model.safetensors"]
    model = load_pretrained(tmp_path / "hf")
    overwrite(tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointDamaged, match="model.safetensors: sha256 differs"):
        load_pretrained(tmp_path / "hf")
    assert interop_main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 2
    assert "model.safetensors: sha256 differs" in capsys.readouterr().err
    # a deliberate edit is resealed; an HF folder from elsewhere (no manifest) loads without a warning
    save_pretrained(model, tmp_path / "ours")
    os.remove(tmp_path / "ours" / MANIFEST)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_pretrained(tmp_path / "ours")
    write_manifest(tmp_path / "ours")
    load_pretrained(tmp_path / "ours")


def test_trainer_modules_import_without_a_cycle():
    """Run state (checkpoint.py) builds on the HF format (checkpoint_io.py), never the reverse;
    imports inside functions count too."""
    graph: dict[str, set[str]] = {}
    for path in (REPO / "trainer").glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                edges.update([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer."):
                edges.add(node.module.split(".")[1])

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"trainer modules in an import cycle: {cycles}"


def test_integrity_command_checks_and_reseals(runs, tmp_path, capsys):
    from trainer.integrity import main as integrity_main

    out = _copy(runs, tmp_path)
    assert integrity_main([str(_step(out, 2)), str(_step(out, 3))]) == 0
    assert capsys.readouterr().out.count(": intact") == 2
    overwrite(_step(out, 3) / "model.pt")
    assert integrity_main([str(_step(out, 2)), str(_step(out, 3))]) == 1
    assert f"damaged: {_step(out, 3) / 'model.pt'}: sha256 differs" in capsys.readouterr().out
    assert integrity_main(["--seal", str(_step(out, 3))]) == 0
    assert integrity_main([str(_step(out, 3))]) == 0


def test_integrity_command_refuses_mistakes_and_checks_a_run_folder(runs, tmp_path, capsys):
    """A typo'd folder, a misspelt flag or --help were taken as folders and reported "nothing to
    check" with exit 0; a run's --out too; --seal created a missing folder with an empty manifest."""
    from trainer.integrity import main as integrity_main

    out = _copy(runs, tmp_path)
    steps = [Path(path) for _, path in ckpt.list_checkpoints(str(out))]
    assert len(steps) >= 2
    for argv, words in (([str(tmp_path / "no_such_ckpt")], "no_such_ckpt: no such folder"),
                        (["--chek", str(out)], "unrecognized arguments: --chek"),
                        ([str(out / "log.jsonl")], "log.jsonl: not a folder"),
                        (["--seal", str(tmp_path / "no_such_ckpt")], "no_such_ckpt: no such folder"),
                        (["--seal", str(out)], "seal the checkpoint folder you edited, not the run folder")):
        with pytest.raises(SystemExit) as exit_:
            integrity_main(argv)
        assert exit_.value.code == 2 and words in capsys.readouterr().err, argv
    assert not (tmp_path / "no_such_ckpt").exists() and not (out / MANIFEST).exists()

    assert integrity_main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"holds {len(steps)} sealed checkpoint folder(s)" in printed and "checkpoints/" in printed
    assert all(f"{step}: intact" in printed for step in steps)
    overwrite(steps[-1] / "model.pt")
    assert integrity_main([str(out)]) == 1
    assert f"damaged: {steps[-1] / 'model.pt'}: sha256 differs" in capsys.readouterr().out

    helped = subprocess.run([sys.executable, "-m", "trainer.integrity", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert helped.returncode == 0 and "usage: python -m trainer.integrity" in helped.stdout
    assert "nothing to check" not in helped.stdout
    missing = subprocess.run([sys.executable, "-m", "trainer.integrity", str(tmp_path / "typo")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 2 and "typo: no such folder" in missing.stderr and "Traceback" not in missing.stderr


def _listings(monkeypatch, root: Path, action) -> Counter:
    """How often `action()` lists (os.scandir) each directory at or below `root`."""
    calls: list[Path] = []
    scandir = os.scandir

    def counting(path="."):
        calls.append(Path(os.fspath(path)))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    try:
        action()
    finally:
        monkeypatch.setattr(os, "scandir", scandir)
    return Counter(path for path in calls if path == root or root in path.parents)


def test_seal_walks_the_folder_once(tmp_path, monkeypatch, capsys):
    """`--seal` walked the tree for its checks (nested manifests, any file at all) and again for the
    manifest: up to three walks of what may be a whole run. Now one walk, each directory listed
    once, on the path that seals and on the one that refuses."""
    from trainer.integrity import main as integrity_main

    checkpoint = tmp_path / "step_3"
    (checkpoint / "tokenizer").mkdir(parents=True)
    for name in ("model.pt", "config.json", "tokenizer/config.json", "tokenizer/pytorch_model.bin"):
        (checkpoint / name).write_bytes(name.encode())
    listed = _listings(monkeypatch, checkpoint, lambda: integrity_main(["--seal", str(checkpoint)]))
    assert listed == {checkpoint: 1, checkpoint / "tokenizer": 1}
    sealed = json.loads((checkpoint / MANIFEST).read_text())["files"]
    assert sorted(sealed) == ["config.json", "model.pt", "tokenizer/config.json", "tokenizer/pytorch_model.bin"]
    assert sealed["model.pt"] == {"bytes": 8, "sha256": hashlib.sha256(b"model.pt").hexdigest()}
    assert integrity_main([str(checkpoint)]) == 0  # the manifest it wrote checks out

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoint, run / "checkpoints" / "step_3")
    (run / "log.jsonl").write_text("{}\n")

    def refused() -> None:
        with pytest.raises(SystemExit) as exit_:
            integrity_main(["--seal", str(run)])
        assert exit_.value.code == 2

    listed = _listings(monkeypatch, run, refused)
    assert set(listed) == {run, run / "checkpoints", run / "checkpoints" / "step_3",
                           run / "checkpoints" / "step_3" / "tokenizer"} and set(listed.values()) == {1}
    assert f"holds sealed checkpoint folders ({run / 'checkpoints' / 'step_3'}, ...)" in capsys.readouterr().err
    assert not (run / MANIFEST).exists()


def test_a_resumed_step_whose_torch_file_is_compressed_is_refused_before_torch_reads_it(runs, tmp_path, monkeypatch):
    """model.pt re-zipped with deflated records (and resealed, so the digests agree): torch
    would allocate each record's declared size before inflating it; load_checkpoint names the file."""
    import zipfile

    step = _step(_copy(runs, tmp_path), 3)
    path = step / "model.pt"
    with zipfile.ZipFile(path) as source:
        records = [(info.filename, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records:
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    write_manifest(step)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    with pytest.raises(CheckpointDamaged, match=re.escape(f"{path}: records compressed (")):
        ckpt.load_checkpoint(str(step))


def _killed_saves(out: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """What fits SIGKILLed while saving leave in `out`, named as `tokenizer.atomic` names them
    (hunt53a tmp_leak: `.step-N.tmp-X` holds a whole model and optimizer, ~10 MB for the tiny
    preset), beside files that only look alike and are not the writer's."""
    checkpoints = out / "checkpoints"
    made = {"writing": checkpoints / ".step-00000004.tmp-1a2b3c4d",       # sealed, not yet renamed
            "moved_aside": checkpoints / ".step-00000003.old-0badf00d",   # step-3 exists again
            "pruning": checkpoints / ".step-00000001.del-abcdef01",       # a pruned step, being removed
            "curve": out / "losses.json.tmp-5e6f7a8b",
            "log": out / "log.jsonl.tmp-00c0ffee"}
    shutil.copytree(_step(out, 3), made["writing"])
    shutil.copytree(_step(out, 3), made["moved_aside"])
    shutil.copytree(_step(out, 3), made["pruning"])
    made["curve"].write_bytes((out / "losses.json").read_bytes()[:20])
    made["log"].write_bytes(b"")
    keep = {"only_copy": checkpoints / ".step-00000009.old-12345678",  # step-9 is gone: its only copy
            "not_hex": checkpoints / ".step-00000004.tmp-mine",
            "not_ours": out / "notes.txt.tmp-1a2b3c4d",
            "plain": out / "losses.json.bak"}
    keep["only_copy"].mkdir()
    keep["not_hex"].mkdir()
    keep["not_ours"].write_text("mine")
    keep["plain"].write_text("mine")
    return made, keep


def test_a_resume_removes_what_killed_saves_left_and_integrity_names_it(runs, shards, tmp_path, capsys):
    """A fit killed mid-save left its temporaries for good (a kill every few minutes fills a disk)
    and `trainer.integrity` called the run intact without a word of them."""
    from trainer.integrity import main as integrity_main

    out = _copy(runs, tmp_path)
    made, keep = _killed_saves(out)
    capsys.readouterr()
    assert integrity_main([str(out)]) == 0  # leftovers are no damage to any checkpoint
    printed = capsys.readouterr().out
    for path in made.values():
        assert f"leftover: {path}: a temporary of a write that was killed, part of no checkpoint" in printed
    cut = out / "checkpoints" / "step-00000000"  # an older version's prune cut short in place
    cut.mkdir()
    (cut / "rng.pt").write_bytes(b"x")
    assert integrity_main([str(out)]) == 0
    assert f"leftover: {cut}: part of a step folder whose removal was cut short" in capsys.readouterr().out
    shutil.rmtree(cut)  # not a name the writer gives a temporary: named, never removed by a fit
    assert f"{made['writing']}: intact" not in printed  # a temporary is no checkpoint to vouch for
    assert printed.count(": intact") == 3

    resumed = fit(_options(shards, out))
    assert resumed["start_step"] == 3 and resumed["losses"] == runs["whole"]["losses"][3:]
    err = capsys.readouterr().err
    assert "note: removed what an interrupted fit left half-written in" in err
    for path in made.values():
        assert not path.exists() and str(path) in err
    for path in keep.values():
        assert path.exists() and str(path) not in err
    assert [step for step, _ in ckpt.list_checkpoints(str(out))] == [3, 4, 5]  # the newest 3 kept


def test_a_second_fit_on_a_run_being_written_is_refused_and_removes_nothing(runs, shards, tmp_path, capsys):
    """Two fits on one --out (a requeue while the first still runs) were told apart only by luck:
    the second resumed from a step the first then passed. The one holding the folder's lock may be
    mid-save in a `.tmp-` folder, so the refused one must not sweep."""
    from tokenizer.run_folder import sole_writer
    from trainer.fit import main

    out = _copy(runs, tmp_path)
    made, _ = _killed_saves(out)
    with sole_writer(str(out), "trainer.fit"):
        code = main(["--data", f"{shards}/a/*.arrow", "--out", str(out), "--seq-len", "64", "--batch-size", "2",
                     "--max-steps", "5", "--threads", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out}: another trainer.fit (pid {os.getpid()}) is writing this run; wait for it to "
                   "finish (rerunning then resumes), or give another --out\n")
    assert all(path.exists() for path in made.values())
    assert [step for step, _ in ckpt.list_checkpoints(str(out))] == [1, 2, 3]


def test_a_prune_cut_short_leaves_a_name_the_next_fit_removes(shards, tmp_path, monkeypatch):
    """Pruning removed an old step folder in place: a fit killed inside that `rmtree` left
    `step-N/` holding some of its files (hunt53a tmp_leak rerun: step-00000115 with config.json and
    rng.pt), no longer listed as a checkpoint, so never pruned nor removed. It is renamed first now."""
    out = tmp_path / "run"
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda path, *args, **kwargs: None)  # killed before it removed a file
    fit(_options(shards, out, max_steps=3, keep_checkpoints=1))
    names = sorted(os.listdir(out / "checkpoints"))
    assert names[-1] == "step-00000003" and len(names) == 3
    assert all(re.fullmatch(r"\.step-0000000[12]\.del-[0-9a-f]{8}", name) for name in names[:-1]), names
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    fit(_options(shards, out, max_steps=4, keep_checkpoints=1))
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000004"]


def test_a_fit_killed_right_after_a_checkpoint_keeps_that_step_in_its_loss_curve(runs, shards, tmp_path, monkeypatch):
    """losses.json was written after the checkpoint committed: a fit killed between the two resumed
    from that step with a curve one step short, the step's loss gone for good (hunt53a tmp_leak
    rerun: step 117 missing of 200)."""
    out = tmp_path / "run"
    save = ckpt.save_checkpoint

    def killed_after_commit(folder, step, *args, **kwargs):
        path = save(folder, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt  # the process dies here
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_after_commit)
    with pytest.raises(KeyboardInterrupt):
        fit(_options(shards, out))
    monkeypatch.undo()
    resumed = fit(_options(shards, out))
    assert resumed["start_step"] == 3
    curve = json.loads((out / "losses.json").read_text())
    assert curve["step"] == [1, 2, 3, 4, 5] and curve["loss"] == runs["whole"]["losses"]


def test_a_run_folder_that_cannot_be_locked_resumes_unlocked_and_removes_nothing(runs, shards, tmp_path, capsys,
                                                                                  monkeypatch):
    """rev53b flock_enosys: a filesystem without flock (Lustre without -o flock: ENOSYS) made every
    fit a traceback. It resumes now with one warning, and sweeps nothing: unlocked, a temporary
    could be a live fit's."""
    import errno

    from tokenizer import run_folder

    def flock(handle, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(run_folder.fcntl, "flock", flock)
    out = _copy(runs, tmp_path)
    made, keep = _killed_saves(out)
    capsys.readouterr()
    resumed = fit(_options(shards, out))
    assert resumed["start_step"] == 3 and resumed["losses"] == runs["whole"]["losses"][3:]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"warning: --out {out}: this filesystem cannot lock files" in err
    assert "removed what an interrupted fit left" not in err
    assert all(path.exists() for path in [*made.values(), *keep.values()])


def test_a_resume_drops_log_lines_torn_by_a_crash(runs, shards, tmp_path, capsys):
    """The log trim of a resume json-parsed every line: a last line cut short (a crash or a full
    disk mid-append) or left NULs made the resume a JSONDecodeError traceback."""
    out = _copy(runs, tmp_path)
    with open(out / "log.jsonl", "ab") as handle:
        handle.write(b"\0" * 30 + b'\n{"step": 4, "loss": 1.')
    capsys.readouterr()
    resumed = fit(_options(shards, out))
    assert resumed["start_step"] == 3 and resumed["losses"] == runs["whole"]["losses"][3:]
    assert f"note: {out / 'log.jsonl'}: dropped 2 lines that are no whole JSON record" in capsys.readouterr().err
    steps = [json.loads(line).get("step") for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("code, why", [(30, "a read-only filesystem"), (13, "Permission denied")])
def test_a_run_folder_that_cannot_be_written_is_one_error_line(shards, tmp_path, capsys, monkeypatch, code, why):
    """rev53b ro_rerun: a read-only --out (EROFS) or one whose lock file this user may not create
    (EACCES; faked, as root would pass a chmod) was a traceback."""
    from tokenizer import run_folder
    from trainer.fit import main

    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if os.path.basename(path) == run_folder.LOCK_NAME and flags & (os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(run_folder.os, "open", open_)
    out = tmp_path / "run"
    assert main(["--data", f"{shards}/a/*.arrow", "--out", str(out), "--seq-len", "64", "--batch-size", "2",
                 "--max-steps", "1", "--threads", "1", "--quiet"]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: cannot write the run folder there ({why}): a fit writes "
                                       "its checkpoints and log in it; give a folder you can write\n")
