"""The Beam build end to end: shards, rejects, splits, determinism, resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import MINI_WEB_NEAR_DUPLICATES, REPO, mini_web_sentences, shard_digests, write_config
from uvd_pipeline.rendered_shards import iter_shard


def _sentences(output: Path):
    for tar in sorted((output / "rendered").rglob("*.tar")):
        yield from iter_shard(str(tar))


def test_mini_build_counts_and_reject_reasons(mini_build):
    config, summary = mini_build
    sources = summary["sources"]
    # 72 entries: one truncated, one corrupt header, and three near duplicates (dropped: one of
    # another web image, two of ImageNet train images, whose keys rank first)
    assert sources["web"]["sentences"] == mini_web_sentences()
    assert sources["inet"]["by_split"] == {"train": {"sentences": 4, "images": 64},
                                           "val": {"sentences": 2, "images": 32}}
    assert sources["clips"]["sentences"] == 3
    assert sources["clips"]["images"] == 48
    reasons = defaultdict(int)
    for s in sources.values():
        for reason, n in s["rejects_by_reason"].items():
            reasons[reason] += n
    # duplicate_near: 3 web, 3 ImageNet (n04266014_1252 and _1091, two crops of one photo, came to
    # hamming 6 when DCT-scaled decodes were placed where the full decode puts them; it was 7)
    assert dict(reasons) == {"truncated": 2, "corrupt_header": 1, "failed_to_download": 2,
                             "remainder_dropped": 7, "too_few_frames": 1, "unreadable": 1,
                             "duplicate_near": 6}
    assert sources["web"]["rejects_by_reason"]["duplicate_near"] == MINI_WEB_NEAR_DUPLICATES
    rejects = [json.loads(line) for line in (Path(config.output) / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == summary["totals"]["rejects"] == sum(reasons.values())
    assert all(set(r) == {"key", "source", "stage", "reason", "input", "detail"} for r in rejects)
    assert {r["stage"] for r in rejects} == {"download", "decode", "assemble", "plan", "dedup"}


def test_rejects_name_no_folder_the_input_lies_in(mini_build, mini_corpus):
    """A reject's detail names a file by what the dataset calls it, never by where the dataset
    lies on this machine: an exception's path (PyAV's unreadable video, a missing file) is cut to
    its base name, so the same input built from another folder gives the same bytes."""
    config, _ = mini_build
    output = Path(config.output)
    files = [output / "rejects.jsonl", *sorted((output / "rendered").rglob("*.rejects.jsonl"))]
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    details = [row["detail"] for row in rows]
    assert any("not_a_video.mp4" in d for d in details)  # an exception that carries its path
    root = str(Path(mini_corpus).resolve())
    # nor does its input: the path under the source's root
    assert [d for d in details + [row["input"] for row in rows] if root in d or str(mini_corpus) in d] == []


def test_summary_splits_the_build_time_into_its_phases(mini_build):
    from uvd_pipeline.summary import format_summary

    _, summary = mini_build
    run = summary["run"]
    phases = run["phases"]
    assert set(phases) == {"prepare", "pipeline", "settle"}
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["pipeline"] > phases["prepare"] + phases["settle"]  # the mini build's work runs in Beam
    assert sum(phases.values()) == pytest.approx(run["seconds"], abs=0.03)  # rounded to 0.01 s each
    last = format_summary(summary).splitlines()[-1]
    assert last.endswith(f"({run['seconds']:.1f}s: prepare {phases['prepare']:.1f}s, "
                         f"pipeline {phases['pipeline']:.1f}s, settle {phases['settle']:.1f}s)")


def test_shards_read_back_with_webdataset(mini_build):
    import webdataset as wds

    config, summary = mini_build
    output = Path(config.output)
    tars = sorted(str(p) for p in (output / "rendered").rglob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False).decode("rgb8"))
    assert len(samples) == summary["totals"]["sentences"]
    for sample in samples:
        header = sample["json"]
        images = [sample[k] for k in sorted(k for k in sample if k.endswith(".png"))]
        assert len(images) == header["n_images"] == len(header["members"])
        assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for img in images)
        assert sample["__key__"] == header["sentence_id"]
    videos = [s for s in samples if s["json"]["kind"] == "video"]
    for sample in videos:
        frames = [m["frame"] for m in sample["json"]["members"]]
        assert frames == list(range(frames[0], frames[0] + 16 * sample["json"]["meta"]["stride"],
                                    sample["json"]["meta"]["stride"]))


def test_stats_are_the_commit_mark(mini_build):
    import hashlib

    config, summary = mini_build
    for stats_path in (Path(config.output) / "rendered").rglob("*.stats.json"):
        stats = json.loads(stats_path.read_text())
        tar = stats_path.with_name(stats["tar"])
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == stats["tar_sha256"]
        assert stats["sentences"] == sum(1 for _ in iter_shard(str(tar)))
        assert stats["config_hash"] == config.content_hash()


def test_no_group_spans_two_splits(mini_build):
    config, _ = mini_build
    split_of_member: dict[str, set[str]] = defaultdict(set)
    for sentence in _sentences(Path(config.output)):
        header = sentence.header
        if header["kind"] == "video":
            split_of_member[header["meta"]["video"]].add(header["split"])
        for member in header["members"]:
            if "key" in member:
                split_of_member[member["key"]].add(header["split"])
    assert split_of_member and all(len(splits) == 1 for splits in split_of_member.values())


def test_category_sentences_hold_one_class(mini_build):
    config, _ = mini_build
    for sentence in _sentences(Path(config.output)):
        if sentence.header["kind"] == "category":
            wnids = {m["wnid"] for m in sentence.header["members"]}
            assert wnids == {sentence.header["meta"]["label"]} and len(sentence.images) == 16
            assert len({m["key"] for m in sentence.header["members"]}) == 16


def test_rerun_skips_committed_shards_and_changed_config_is_refused(mini_build_copy):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import ConfigError

    config, summary = mini_build_copy
    before = shard_digests(Path(config.output))
    again = run_build(config).summary
    assert again["run"]["shards_resumed"] == summary["totals"]["shards"]
    # every unit comes from the unit store: no record read, nothing decoded, no shard written
    counters = again["run"]["counters"]
    assert not any(k.endswith((".units_rendered", ".records", ".rendered_units", ".rendered_sentences",
                               ".shards_written")) for k in counters), counters
    from uvd_pipeline.sample import web

    # one output per tar entry and per failed download the shard's parquet lists
    assert counters["web.units_reused"] == 1
    assert counters["web.outputs_reused"] == web.SAMPLES_PER_SHARD + web.FAILED_DOWNLOADS_PER_SHARD
    assert shard_digests(Path(config.output)) == before
    changed = config.model_copy(update={"seed": 1})
    with pytest.raises(ConfigError, match="different configuration"):
        run_build(changed)


def test_an_output_of_an_earlier_render_revision_is_refused_then_rendered_again(mini_build_copy, monkeypatch):
    """A version whose renders differ (`RENDER_REVISION`) never resumes an earlier version's output:
    its stored units and committed shards hold the old renders. The refusal names the revisions and
    the flag; --replace-changed renders everything again."""
    import json

    from uvd_pipeline import build, config_build as config_module  # BuildConfig.content_hash reads its revision
    from uvd_pipeline.config import ConfigError

    config, summary = mini_build_copy
    record_path = Path(config.output) / build.BUILD_FILE
    record = json.loads(record_path.read_text())
    assert record["render_revision"] == config_module.RENDER_REVISION and record["config_hash"] == config.content_hash()
    earlier = config_module.RENDER_REVISION - 1
    with monkeypatch.context() as patch:  # the record the previous version wrote: its hash and revision
        patch.setattr(config_module, "RENDER_REVISION", earlier)
        record["config_hash"] = config.content_hash()
    record["render_revision"] = earlier  # (revision 1 wrote no such field: read as 1)
    assert record["config_hash"] != config.content_hash()
    record_path.write_text(json.dumps(record))
    before = shard_digests(Path(config.output))
    with pytest.raises(ConfigError, match=rf"earlier version .*render revision {earlier}, now "
                                          rf"{config_module.RENDER_REVISION}.*--replace-changed"):
        build.run_build(config)
    again = build.run_build(config, replace_changed=True).summary
    assert again["run"]["shards_resumed"] == 0
    assert again["run"]["counters"]["web.units_rendered"] >= 1
    assert shard_digests(Path(config.output)) == before  # this test's renders did not change
    assert json.loads(record_path.read_text())["render_revision"] == config_module.RENDER_REVISION


def test_partial_output_is_completed_with_identical_bytes(mini_corpus, mini_build, tmp_path):
    """The states a kill leaves behind: shards missing, a tar without stats, temp files."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config, _ = mini_build
    reference = shard_digests(Path(config.output))
    out = tmp_path / "out"
    shutil.copytree(config.output, out)
    rendered = sorted((out / "rendered").rglob("*.stats.json"))
    rendered[0].unlink()  # tar renamed, stats not yet written
    for stats in rendered[1:3]:  # shards never written
        stats.unlink()
        stats.with_name(stats.name.replace(".stats.json", ".tar")).unlink()
    half = rendered[3].with_name(rendered[3].name.replace(".stats.json", ".tar"))
    (half.parent / (half.name + ".tmp-deadbeef")).write_bytes(half.read_bytes()[:1000])
    (out / "summary.json").unlink()
    resumed = load_config(str(write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint)))
    summary = run_build(resumed).summary
    assert summary["run"]["shards_resumed"] == len(rendered) - 3
    assert shard_digests(out) == reference


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uvd_pipeline", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _rerun(path: Path, **overrides) -> dict:
    """The rerun of a build in this process: what `uvd build` calls (`run_build`), without a
    fresh interpreter's imports (2-3 CPU-s each); the tests of the command itself start it."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    return run_build(load_config(str(path), overrides or None)).summary


def _signalled_cli(signal_name: str, after: int | str, flags: Path, *args: str, **kw) -> subprocess.Popen:
    """The command, sent `signal_name` by its own build right after its `after`th unit commit
    (`tests/signal_at_commit.py`; "shard:N": its Nth rendered shard): a signal from the test, on
    seeing a mark, came too late on a fast machine, after the whole build."""
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "signal_at_commit.py"), signal_name, str(after),
                             str(flags), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def _unit_marks(out: Path) -> dict[str, int]:
    """Commit mark -> its inode and mtime (a unit rendered again gets a new mark)."""
    if not (out / "_units").exists():
        return {}
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "_units").glob("*/*.json")}


@pytest.mark.slow
def test_kills_mid_render_and_mid_write_lose_only_units_in_flight(mini_corpus, mini_build, tmp_path):
    """kill -9 a 2-process build when half of its input units are committed (long before any
    output shard can be written), then its rerun while that writes shards, then let the next
    run finish: no committed unit is ever rendered again, at most one unit
    per worker was in flight at the kill, the last run renders exactly the units not committed at
    the last kill, takes over the dead run's lock, removes its temporaries (nothing left in the
    output or in $TMPDIR), and the bytes equal a build that was never interrupted. (Kills at a
    quarter and three quarters too were the same state of the same code, at 2 more command
    starts: 51.5 CPU-s against 37.7.)"""
    from uvd_pipeline.graph import list_units

    config, _ = mini_build
    total = sum(map(len, list_units(config).values()))
    out = tmp_path / "out"
    workers = 2
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint, direct_num_workers=workers,
                        direct_running_mode="multi_processing")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}

    def shards_committed() -> bool:
        return (out / "rendered").exists() and bool(list((out / "rendered").rglob("*.stats.json")))

    committed: dict[str, int] = {}
    kill_points = [lambda: len(_unit_marks(out)) >= total / 2, shards_committed]
    for reached in kill_points:
        proc = _cli("build", str(path), start_new_session=True, env=env)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not reached():
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "summary.json").exists(), "the build finished before it could be killed"
        assert reached() and (out / "_lock.json").exists(), "the killed run left its lock"
        marks = _unit_marks(out)
        assert {k: marks.get(k) for k in committed} == committed, "a committed unit was rendered again"
        in_flight = list((out / "_units").glob("*/*.png.bin.tmp-*"))
        assert len(in_flight) <= workers, in_flight
        committed = marks
    assert len(committed) == total  # the last kill came while shards were written
    rerun = _cli("build", str(path), env=env)
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert "taking over the stale lock" in log
    marks = _unit_marks(out)
    assert {k: marks[k] for k in committed} == committed
    counters = json.loads((out / "summary.json").read_text())["run"]["counters"]
    rendered = sum(v for k, v in counters.items() if k.endswith(".units_rendered"))
    reused = sum(v for k, v in counters.items() if k.endswith(".units_reused"))
    assert (rendered, reused) == (0, total)
    assert shard_digests(out) == shard_digests(Path(config.output))
    assert not (out / "_tmp").exists() and not (out / "_lock.json").exists()
    assert not list(out.rglob("*.tmp-*"))
    assert sorted(p.name for p in scratch.iterdir()) == []


def _allocated(folder: Path) -> int:
    """Bytes the disk gives `folder`'s files (holes punched out of a file are not counted)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass  # renamed or removed while we looked
    return total


@pytest.mark.slow
def test_disk_peak_is_the_output_plus_what_is_in_flight(mini_corpus, mini_build, tmp_path):
    """Sampled every few milliseconds through a whole build, the output folder never takes more
    than the finished output plus what is in flight (one worker): one unit, the shard being
    written and the store's copies of the shard committed before it, which a background thread is
    punching; the unit store gives its copy of each image up as soon as a shard holding it
    commits, instead of keeping a second copy of the output."""
    import threading

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config, _ = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint)
    raw = yaml.safe_load(path.read_text())
    for source, shards in zip(raw["sources"], (8, 6, 6)):
        source["num_shards"] = shards
    raw["tokenizer"]["enabled"] = False
    raw["image"]["size"] = 256  # images of the size a real build writes: the files dwarf the blocks
    path.write_text(yaml.safe_dump(raw))
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            if out.exists():
                peak[0] = max(peak[0], _allocated(out))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        summary = run_build(load_config(str(path))).summary
    finally:
        done.set()
        sampler.join()
    final = _allocated(out)
    largest_tar = max(p.stat().st_size for p in (out / "rendered").rglob("*.tar"))
    moved = sum(image[2] for p in (out / "_inputs").glob("*/*.placed.json")
                for image in json.loads(p.read_text())["images"])
    largest_unit = max(json.loads(p.read_text())["images"]["bytes"] for p in (out / "_units").glob("*/*.json"))
    in_flight = 2 * largest_tar + largest_unit + (256 << 10)
    assert summary["totals"]["sentences"] > 0 and in_flight < moved, "a second copy of the images would exceed the bound"
    assert peak[0] <= final + in_flight, (peak[0], final, in_flight, moved)


@pytest.mark.slow
def test_cli_end_to_end_with_report(mini_corpus, mini_build_copy, tmp_path):
    """The CLI on an output whose every unit and shard is committed: it renders nothing, says so,
    and writes the summary and the report."""
    config, summary = mini_build_copy
    out = Path(config.output)
    (out / "summary.json").unlink()
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint)
    proc = _cli("build", str(path), "--report")
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "report:" in log and "rejects by reason:" in log
    units = sum(v for k, v in summary["run"]["counters"].items() if k.endswith(".units_rendered"))
    assert f"input units: 0 rendered, {units} taken from the unit store" in log
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["totals"]["sentences"] == mini_web_sentences() + 6 + 3
    assert (out / "report" / "report.html").exists()
    missing = _cli("report", str(tmp_path / "nothing"))
    log, _ = missing.communicate(timeout=120)
    assert missing.returncode == 2 and "run the build" in log


NON_UTF8_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}  # file names decoded as ASCII


def test_cli_reads_file_names_as_utf8_whatever_the_locale(sample_corpus, tmp_path):
    """A build run in a locale whose charset is not UTF-8 (here ASCII; Latin-1 and other legacy
    charsets alike) reads file names as a UTF-8 machine does: a COCO `file_name` beyond ASCII is
    found (it was encoded into the locale's bytes: the whole unit failed under ASCII, the image was
    `unreadable_file` under Latin-9), and its lineage names the file as written."""
    corpus = tmp_path / "coco"
    shutil.copytree(sample_corpus / "coco", corpus)
    images = corpus / "images" / "val"
    old = sorted(p.name for p in images.iterdir())[0]
    new = "\u0130stanbul_\u0131\u015f\u0131k.jpg"
    (images / old).rename(images / new)
    renamed = set()
    for annotations in (corpus / "annotations").iterdir():
        data = json.loads(annotations.read_text())
        for image in data["images"]:
            if image["file_name"] == old:
                image["file_name"] = new
                renamed.add(f"coco-{image['id']}-detection")
        annotations.write_text(json.dumps(data))
    config = {"version": 1, "output": str(tmp_path / "out"), "image": {"size": 32},
              "sources": [{"name": "coco", "type": "coco", "path": str(corpus), "split": "val",
                           "tasks": ["detection"], "num_shards": 1}],
              "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory", "early_render": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "uvd_pipeline", "build", str(path), "--no-tokenize"], cwd=REPO,
                          env={**os.environ, **NON_UTF8_LOCALE}, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_bytes().splitlines()]
    assert len(renamed) == 1 and not [r for r in rejects if r["reason"] == "unit_failed" or r["key"] in renamed]
    files = {member.get("file") for _, meta in _sentence_metas(tmp_path / "out") for member in meta["members"]}
    assert new in files


def _sentence_metas(output: Path):
    """(tar member name, parsed sentence JSON) of every rendered shard, read with `tarfile`."""
    import tarfile

    for path in sorted((output / "rendered").rglob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    yield member.name, json.loads(tar.extractfile(member).read())


def test_any_fsspec_url_in_and_out(mini_corpus, mini_build, tmp_path):
    """Sources and output on a non-local fsspec filesystem give the same shards as local disk."""
    import fsspec
    import yaml

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config, summary = mini_build
    memory = fsspec.filesystem("memory")
    root = f"/uvd-test-{tmp_path.name}"
    for path in mini_corpus.rglob("*"):
        if path.is_file():
            memory.pipe(f"{root}/in/{path.relative_to(mini_corpus)}", path.read_bytes())
    path = write_config(tmp_path / "c.yaml", mini_corpus, tmp_path / "unused", config.tokenizer.checkpoint)
    data = yaml.safe_load(path.read_text())
    data["output"] = f"memory://{root}/out"
    for source in data["sources"]:
        source["path"] = source["path"].replace(str(mini_corpus), f"memory://{root}/in")
    path.write_text(yaml.safe_dump(data))
    remote = run_build(load_config(str(path))).summary
    digests = {s["tar"]: s["tar_sha256"] for s in remote["shards"]}
    assert digests == {s["tar"]: s["tar_sha256"] for s in summary["shards"]}
    assert memory.exists(f"{root}/out/summary.json") and memory.exists(f"{root}/out/rejects.jsonl")
    memory.rm(root, recursive=True)


def test_wrong_source_path_fails_before_writing(tmp_path, mini_corpus, tiny_tokenizer):
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import ConfigError, load_config

    path = write_config(tmp_path / "c.yaml", mini_corpus, tmp_path / "out", tiny_tokenizer)
    config = load_config(str(path))
    broken = config.model_copy(update={"sources": (
        config.sources[0], config.sources[1],
        config.sources[2].model_copy(update={"path": str(tmp_path / "no-such-folder")}))})
    with pytest.raises(ConfigError, match=r"sources\[2\]\.path \(clips\): .*does not exist"):
        run_build(broken)
    assert not (tmp_path / "out").exists()


def test_incomplete_shard_is_never_committed(tmp_path):
    from sources.records import Reject
    from uvd_pipeline.rendered_shards import IncompleteShardError, ShardAddress, write_shard

    address = ShardAddress("web", "train", 0)
    items = [Reject(f"k{i}", "web", f"k{i}", "decode", "truncated") for i in range(3)]
    with pytest.raises(IncompleteShardError, match="received 3 of 5 items"):
        write_shard(str(tmp_path), address, items, config_hash="h", num_shards=1, image_size=64,
                    format_version=1, expected_items=5)
    assert not list(tmp_path.rglob("*.stats.json"))
    result = write_shard(str(tmp_path), address, items, config_hash="h", num_shards=1, image_size=64,
                         format_version=1, expected_items=3)
    assert result.stats["rejects"] == 3 and address.path(str(tmp_path), ".stats.json")


def test_every_unit_is_committed_and_its_images_live_once(mini_build):
    """Render commits each input unit to OUT/_units/<source>/ (images, results, then the mark);
    once a shard commits, the store gives up its copy of the images the shard holds: every image
    of the shards is in a placement record, and the store keeps only what no shard holds (images
    dedup or assembly dropped) plus its small files and partial blocks."""
    from uvd_pipeline.graph import list_units
    from uvd_pipeline.unit_store import StoreReader, UnitStore, read_moved

    config, summary = mini_build
    counters = summary["run"]["counters"]
    out = Path(config.output)
    placed = [json.loads(p.read_text()) for p in (out / "_inputs").glob("*/*.placed.json")]
    assert sum(len(p["images"]) for p in placed) == sum(s["images"] for s in summary["shards"])
    kept = moved = 0
    for name, source_units in list_units(config).items():
        folder = out / "_units" / name
        marks = sorted(folder.glob("*.json"))
        assert len(marks) == len(source_units) == counters[f"{name}.units_rendered"]
        for mark_file in marks:
            mark = json.loads(mark_file.read_text())
            assert mark["inputs"]["files"], "the files the unit's reading touched are recorded"
            uid = mark_file.name[: -len(".json")]
            away = read_moved(str(folder / (uid + ".moved")), mark["render"])
            outputs = UnitStore(str(out), name, config.content_hash()).stored_outputs(uid, mark)
            refs = [r for _, item in outputs for r in getattr(item, "images", ())]
            assert {r.unit_offset for r in refs if r.path.endswith(".tar")} == set(away)
            still = [r for r in refs if not r.path.endswith(".tar")]
            images = folder / (uid + ".png.bin")
            assert images.exists() == bool(still) or mark["images"]["bytes"] == 0
            reader = StoreReader()
            assert all(reader.read(r) for r in refs), "every image reads back with its digest"
            reader.close()
            kept += sum(r.length for r in still)
            moved += len(away)
    allocated = sum(p.stat().st_blocks * 512 for p in (out / "_units").rglob("*.png.bin"))
    assert moved == sum(s["images"] for s in summary["shards"])
    assert allocated <= kept + 8192 * moved, "the store holds no second copy of the shards' images"


def test_unit_store_round_trip_and_damage(tmp_path):
    """A committed unit comes back with refs that read the same bytes; a changed input, a flipped
    byte in its images or a results file naming a foreign class makes it render again."""
    import dataclasses
    import pickle

    from sources import fsio
    from sources.records import Reject
    from uvd_pipeline.sentences import Sentence
    from uvd_pipeline.unit_store import StoredRef, StoreReader, UnitStore

    source_file = tmp_path / "in.txt"
    source_file.write_text("input")
    store = UnitStore(str(tmp_path / "out"), "web", "hash")
    unit = str(source_file)
    writer = store.writer(unit)
    sentence = Sentence("s", "web", "image", "none", "train", (b"\x89PNG one", b"two" * 1000), ({"key": "a"},))
    reject = Reject("k", "web", "g", "read", "corrupt_image", "")
    with fsio.recording_inputs() as record:
        fsio.read_bytes(str(source_file))
        outputs = [("sentences", writer.stored(sentence)), ("rejects", reject)]
    digest = writer.commit(outputs, record)
    loaded, again = store.load(unit)
    assert again == digest and loaded[1] == ("rejects", reject)
    refs = loaded[0][1].images
    assert all(isinstance(r, StoredRef) for r in refs) and refs[1].offset == 8
    reader = StoreReader()
    assert list(reader.resolve_all([loaded[0][1], reject])) == [sentence, reject]
    reader.close()
    with pytest.raises(IOError, match="short"):
        StoreReader().read(dataclasses.replace(refs[1], length=10**6))
    with pytest.raises(IOError, match="sha256"):
        StoreReader().read(dataclasses.replace(refs[1], offset=7))
    assert UnitStore(str(tmp_path / "out"), "web", "other config").load(unit) is None

    images = Path(refs[0].path)
    intact = images.read_bytes()
    images.write_bytes(intact[:3] + b"X" + intact[4:])  # same size, one byte flipped
    assert store.load(unit) is not None  # sizes only: what a plain resume checks
    assert store.load(unit, verify_images=True) is None
    images.write_bytes(intact[:-1])  # short: always found
    assert store.load(unit) is None
    images.write_bytes(intact)
    assert store.load(unit, verify_images=True) is not None
    results = next((tmp_path / "out" / "_units" / "web").glob("*.results"))
    mark_file = next((tmp_path / "out" / "_units" / "web").glob("*.json"))
    honest, mark = results.read_bytes(), mark_file.read_text()
    hostile = pickle.dumps([("rejects", print)])
    results.write_bytes(hostile)
    import hashlib, json
    forged = json.loads(mark)
    forged["results"] = {"bytes": len(hostile), "sha256": hashlib.sha256(hostile).hexdigest()}
    mark_file.write_text(json.dumps(forged))
    assert store.load(unit) is None  # refused by the unpickler, not run
    results.write_bytes(honest)
    mark_file.write_text(mark)
    source_file.write_text("input, grown")
    assert store.load(unit) is None


def test_stage_progress_counts_every_stage(caplog):
    import logging

    from uvd_pipeline.step_metrics import StageProgress

    progress = StageProgress(every_s=0)
    with caplog.at_level(logging.INFO, logger="uvd_pipeline.step_metrics"):
        progress.add("read records", 3)
        progress.add("tokenized images", 16)
        progress.add("rendered", 2)
    assert caplog.records[-1].getMessage().endswith("progress: read records 3, rendered 2, tokenized images 16")
    quiet = StageProgress(every_s=3600)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="uvd_pipeline.step_metrics"):
        quiet.add("rendered")
    assert not caplog.records and quiet.done["rendered"] == 1


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_in_process_workers_run_numpy_blas_on_one_thread(monkeypatch, tmp_path):
    """The in-process local modes run the workers as threads of this process, whose numpy read its
    environment long ago: the BLAS pool itself is set to one thread for the run, then restored, on
    every build of the process (the variable the first one set is not taken for the user's); a
    value the user gave the process is left alone. Worker processes inherit the variable instead."""
    from threadpoolctl import threadpool_limits

    from uvd_pipeline import build_runner
    from uvd_pipeline.build import one_thread_numerics, open_runner
    from uvd_pipeline.config import parse_config

    def config(**beam):
        return parse_config({"output": str(tmp_path / "out"), "beam": beam,
                             "sources": [{"name": "web", "type": "laion", "path": str(tmp_path / "in")}]})

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(build_runner, "_USER_BLAS_THREADS", None)  # the process started without it
    with threadpool_limits(limits=2, user_api="blas"):  # as on any machine of 2 cores or more
        assert _blas_threads() and set(_blas_threads()) == {2}
        for _ in range(2):
            with one_thread_numerics(in_process=True):
                assert set(_blas_threads()) == {1}
                assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
            assert set(_blas_threads()) == {2}
        with open_runner(config()):  # the default: 2 workers as threads
            assert set(_blas_threads()) == {1}
        with open_runner(config(direct_num_workers=4)):  # processes: they read the variable
            assert set(_blas_threads()) == {2}
            assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert "OPENBLAS_NUM_THREADS" not in os.environ  # given back after each build
        monkeypatch.setattr(build_runner, "_USER_BLAS_THREADS", "2")  # the process started with it
        with one_thread_numerics(in_process=True):
            assert set(_blas_threads()) == {2}


def test_a_local_build_gives_the_callers_environment_back(monkeypatch):
    """A program that calls `run_build` found `OPENBLAS_NUM_THREADS=1` set afterwards (written for
    the build's worker processes), and every process it started later ran one-thread BLAS. It is
    taken back when the outermost block ends (the build nests two), not where the program set the
    variable itself meanwhile, and never where the program had its own value."""
    from uvd_pipeline.build import one_thread_numerics

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    before = dict(os.environ)
    with one_thread_numerics(in_process=False):
        with one_thread_numerics(in_process=False):
            assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"  # the outer block's workers still start
    assert dict(os.environ) == before
    with one_thread_numerics(in_process=False):
        os.environ["OPENBLAS_NUM_THREADS"] = "3"  # the program's own, set while the build runs
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    with one_thread_numerics(in_process=False):
        assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert dict(os.environ) == dict(before, OPENBLAS_NUM_THREADS="3")


class _Run:
    """A pipeline's run result as `run_pipeline` uses it, noting what the collector had frozen."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.frozen = fail, None

    def wait_until_finish(self) -> None:
        import gc

        self.frozen = gc.get_freeze_count()
        if self.fail:
            raise RuntimeError("a stage failed")


def test_the_run_leaves_the_objects_made_before_it_out_of_garbage_collection(monkeypatch):
    """While the pipeline runs, what existed before it (modules, the graph) is frozen out of the
    collector's scans; afterwards, failed or not, it is collectable again, and a freeze the caller
    made is neither added to nor undone."""
    import gc

    from uvd_pipeline.build import run_pipeline

    made_before = [object() for _ in range(3)]
    for fail in (False, True):
        run = _Run(fail)
        pipeline = SimpleNamespace(runner=object(), run=lambda test_runner_api="AUTO", run=run: run)
        assert gc.get_freeze_count() == 0
        if fail:
            with pytest.raises(RuntimeError, match="a stage failed"):
                run_pipeline(pipeline)
        else:
            assert run_pipeline(pipeline) is run
        assert run.frozen >= len(made_before) and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        # made after the caller's freeze and alive through the run: a second freeze would add them
        # all. The count only grows by a freeze; a frozen object freed meanwhile (by another
        # thread: 897,922 against 897,924 once in the full suite) takes it down by one, so the
        # bounds below allow frees and nothing else.
        made_after = [[] for _ in range(1000)]
        run = _Run(False)
        run_pipeline(SimpleNamespace(runner=object(), run=lambda test_runner_api="AUTO": run))
        after = gc.get_freeze_count()
        assert frozen - len(made_after) < after <= run.frozen <= frozen, (frozen, run.frozen, after)
        assert len(made_after) == 1000
    finally:
        gc.unfreeze()


# Two worker threads (`direct_running_mode: auto`, the pool on by default) with every core kept busy
# give the one in-process worker's bytes and counters: tests/test_early_render.py's
# test_a_build_with_the_pool_writes_the_bytes_and_counts_of_one_without builds that configuration.


@pytest.mark.slow
def test_ctrl_c_on_a_threaded_build_keeps_what_is_committed(mini_corpus, mini_build, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) on a build whose 2
    workers are threads: the command stops at once with 130 and says how to finish, without the
    abort a teardown under the runner's threads would give; units committed so far are not
    rendered again, and the rerun gives the bytes of a build never interrupted."""
    config, _ = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint,
                        direct_num_workers=2, direct_running_mode="auto")
    proc = _signalled_cli("SIGINT", 2, tmp_path / "flags", "build", str(path), start_new_session=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, _ = proc.communicate(timeout=300)
    assert (tmp_path / "flags" / "sent").exists(), log[-3000:]
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted: the units and shards committed so far are kept" in log
    assert "terminate called" not in log and not (out / "summary.json").exists()
    marks = _unit_marks(out)
    assert len(marks) >= 2 and not (out / "_lock.json").exists()
    _rerun(path)
    assert {k: _unit_marks(out).get(k) for k in marks} == marks  # committed units were not redone
    assert shard_digests(out) == shard_digests(Path(config.output))


def test_sigterm_is_handled_like_ctrl_c(mini_corpus, mini_build, tmp_path):
    """SIGTERM (`docker stop`, Kubernetes, a scheduler's preemption) to a build whose 2 workers are
    threads, with render processes forked: exit 143 with a message, the lock released and the
    run's temporaries removed (a restarted container with another host name is not refused), and
    the rerun gives the bytes of a build never stopped."""
    config, _ = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint,
                        direct_num_workers=2, direct_running_mode="auto")
    proc = _signalled_cli("SIGTERM", 1, tmp_path / "flags", "build", str(path), "--no-tokenize")
    log, _ = proc.communicate(timeout=300)
    assert (tmp_path / "flags" / "sent").exists(), log[-3000:]
    assert proc.returncode == 143, log[-3000:]
    assert "terminated (SIGTERM): the units and shards committed so far are kept" in log
    assert "Traceback" not in log and not (out / "summary.json").exists()
    assert _unit_marks(out) and not (out / "_lock.json").exists() and not (out / "_tmp").exists()
    _rerun(path, **{"tokenizer.enabled": False})  # as `--no-tokenize`
    rendered = {k: v for k, v in shard_digests(Path(config.output)).items() if k.startswith("rendered")}
    assert shard_digests(out) == rendered


@pytest.mark.parametrize("signal_name, workers, mode", [
    pytest.param("SIGINT", 1, "in_memory", marks=pytest.mark.slow), ("SIGTERM", 1, "in_memory"),
    ("SIGTERM", 2, "multi_threading")])
def test_a_signal_while_shards_are_written_is_one_line(mini_corpus, mini_build, tmp_path, signal_name, workers,
                                                       mode):
    """Ctrl-C or SIGTERM right after the first rendered shard commits, a write bundle in flight in
    this process. One in-process worker runs it in the build's own thread, and Beam re-raised the
    interrupt as `RuntimeError: KeyboardInterrupt [while running 'Write shards']`: exit 1 and 3
    tracebacks (113-119 lines), lock released but temporaries left. Thread workers exited right but
    printed Beam's `KeyError: 'bundle_42'` twice (2-4 tracebacks) of the bundle its cleanup dropped
    (hunt58b). Now: 130/143, the one last line counting the shards on disk, nothing of Beam's."""
    import re

    config, _ = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint,
                        direct_num_workers=workers, direct_running_mode=mode)
    written = yaml.safe_load(path.read_text())
    written["sources"] = [s for s in written["sources"] if s["type"] != "video"]  # 5 image shards do
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    # a terminal's Ctrl-C reaches a command whose SIGINT is the default (pytest-xdist's workers
    # ignore it, and a child keeps an ignored SIGINT: the build then ran to its end, rc 0)
    proc = _signalled_cli(signal_name, "shard:1", tmp_path / "flags", "build", str(path), "--no-tokenize",
                          start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, _ = proc.communicate(timeout=300)
    assert (tmp_path / "flags" / "sent").exists(), log[-3000:]
    assert proc.returncode == (130 if signal_name == "SIGINT" else 143), log[-3000:]
    assert "Traceback" not in log and "Error" not in log, log[-3000:]
    last = log.strip().splitlines()[-1]
    how = "interrupted" if signal_name == "SIGINT" else r"terminated \(SIGTERM\)"
    kept = re.fullmatch(how + r": the units and shards committed so far are kept \((\d+) input units, (\d+) rendered "
                        r"shards\); run the same command again .*", last)
    assert kept, last
    committed = sorted(out.glob("rendered/*/*/*.stats.json"))
    assert len(committed) == int(kept[2]) >= 1
    for stats in committed:  # each committed shard whole: its tar read back holds what its stats count
        tar = stats.with_name(stats.name.replace(".stats.json", ".tar"))
        assert sum(1 for _ in iter_shard(str(tar))) == json.loads(stats.read_text())["sentences"]
    assert not (out / "_lock.json").exists() and not list(out.rglob("*.tmp-*"))
    assert not (out / "summary.json").exists()


def test_a_bug_met_after_a_signal_shows_its_traceback(mini_corpus, mini_build, tmp_path):
    """SIGTERM after the first rendered shard, thread workers, and every shard write after it
    raising ZeroDivisionError (a bug met as the interrupt unwinds): every error of Beam's was left
    out once an interrupt was under way, so the bug was never mentioned (0 tracebacks; 10 before
    the interrupt handling came, rev58f M1). Now its traceback shows, above the one `terminated`
    line, and the exit is still 143."""
    config, _ = mini_build
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", mini_corpus, out, config.tokenizer.checkpoint,
                        direct_num_workers=2, direct_running_mode="multi_threading")
    written = yaml.safe_load(path.read_text())
    written["sources"] = [s for s in written["sources"] if s["type"] != "video"]
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    proc = _signalled_cli("SIGTERM", "shard:1", tmp_path / "flags", "build", str(path), "--no-tokenize",
                          start_new_session=True, env={**os.environ, "SIGNAL_AT_COMMIT_BUG": "1"})
    log, _ = proc.communicate(timeout=300)
    assert (tmp_path / "flags" / "sent").exists(), log[-3000:]
    assert proc.returncode == 143, log[-3000:]
    assert "ZeroDivisionError: a bug after the signal" in log and "Traceback" in log, log[-3000:]
    assert "KeyError: 'bundle_" not in log, log[-3000:]
    assert log.strip().splitlines()[-1].startswith("terminated (SIGTERM): the units and shards committed"), log[-3000:]
    assert not (out / "_lock.json").exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_the_command_line_hides_beams_bigquery_warning_unless_verbose(verbose):
    """Importing Beam logs "apitools not found, ..." on the root logger: the command's log keeps it
    out (it printed on every build), and --verbose keeps it, so this test sees the real import."""
    code = ("import logging, sys; from uvd_pipeline.cli import _setup_logging; _setup_logging(sys.argv[1] == 'v'); "
            "import apache_beam; logging.getLogger('uvd').info('our line'); logging.warning('another warning')")
    done = subprocess.run([sys.executable, "-c", code, "v" if verbose else "q"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "our line" in done.stderr and "another warning" in done.stderr
    assert ("apitools not found" in done.stderr) == verbose


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "Terminated"])
def test_an_interrupted_run_removes_its_temporaries_before_it_lets_go_of_the_lock(mini_build_copy, monkeypatch,
                                                                                  stop):
    """Ctrl-C or SIGTERM while shard writers were between a temporary's write and its rename left
    `.tmp-` files in the output (`_inputs/web/web-val-00000.placed.json.tmp-...`, a rendered
    shard's fingerprints: hunt56c, 2 of 3 group Ctrl-Cs), swept only by the next build's start.
    The interrupted run removes them itself, while it still holds the lock (its workers stopped
    by then), and leaves what is committed as it was."""
    from tokenizer.atomic import temporary_name
    from uvd_pipeline import build, output_lock
    from uvd_pipeline.cli import Terminated

    config, _ = mini_build_copy
    out = Path(config.output)
    placed = sorted(out.glob("_inputs/*/*.placed.json"))[0]
    stats = sorted(out.glob("rendered/*/*/*.stats.json"))[0]
    before = shard_digests(out)
    raised = Terminated if stop == "Terminated" else stop
    seen: list[bool] = []

    def interrupted_mid_write(pipeline):  # as a writer stopped between its temporary's write and rename
        for target in (placed, stats):
            Path(temporary_name(str(target))).write_bytes(b"half")
        seen.append((out / "_lock.json").exists())
        raise raised()

    left_at_release: list[list[str]] = []
    release = output_lock.OutputLock.release

    def release_and_look(self):  # what is left the moment the lock goes
        left_at_release.append(sorted(p.name for p in out.rglob("*.tmp-*")))
        release(self)

    with monkeypatch.context() as patch:
        patch.setattr(build, "run_pipeline", interrupted_mid_write)
        patch.setattr(output_lock.OutputLock, "release", release_and_look)
        with pytest.raises(raised):
            build.run_build(config)
    assert seen == [True] and left_at_release == [[]] and not (out / "_lock.json").exists()
    assert not list(out.rglob("*.tmp-*"))
    assert shard_digests(out) == before


def test_a_rerun_that_fails_half_way_leaves_no_summary_of_another_output(mini_build_copy, monkeypatch, capsys):
    """A rerun over changed input that fails (a worker killed, a full disk) after rewriting some
    shards left the earlier run's summary.json, rejects.jsonl and mixture.yaml beside them: totals
    and a shard list of another output, and `verify`, seeing a finished build, said intact with
    nothing more. A run takes them away before it changes anything and writes them when it
    finishes; verify says the build did not finish, and exits 3 (unfinished), not 0: `verify && upload`
    uploaded the half build."""
    from uvd_pipeline import build, verify

    config, _ = mini_build_copy
    out = Path(config.output)
    before = shard_digests(out)
    finished = {name: (out / name).read_bytes() for name in ("summary.json", "rejects.jsonl", "mixture.yaml")}

    def fails(pipeline):
        raise RuntimeError("Worker subprocess exited with return code 137")

    with monkeypatch.context() as patch:
        patch.setattr(build, "run_pipeline", fails)
        with pytest.raises(RuntimeError, match="137"):
            build.run_build(config)
    assert not [name for name in finished if (out / name).exists()]
    assert verify.main(str(out)) == verify.UNFINISHED == 3
    printed = capsys.readouterr().out
    assert "did not finish" in printed and f"{out}: UNFINISHED: what is committed is intact" in printed
    build.run_build(config)
    assert shard_digests(out) == before
    summary = json.loads((out / "summary.json").read_text())
    mine = ("run", "output")  # this run's timings; the copy's folder
    assert {k: v for k, v in summary.items() if k not in mine} == {
        k: v for k, v in json.loads(finished["summary.json"]).items() if k not in mine}
    assert (out / "rejects.jsonl").read_bytes() == finished["rejects.jsonl"]
    assert (out / "mixture.yaml").read_bytes() == finished["mixture.yaml"]
