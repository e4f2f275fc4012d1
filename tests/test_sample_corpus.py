"""The embedded sample corpus: real layouts, enough variety, the same bytes every time."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import busy_machine
from uvd_pipeline.sample import MANIFEST, videos, write_sample_corpus


def test_layouts_and_sizes(sample_corpus: Path):
    laion = sample_corpus / "laion"
    assert sorted(p.name for p in laion.iterdir()) == [
        f"{i:05d}{suffix}" for i in range(3) for suffix in (".parquet", ".tar", "_stats.json")]
    sizes = []
    for tar_path in sorted(laion.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            assert {n.split(".", 1)[1] for n in names} >= {"jpg", "txt", "json", "png"}
            for member in tar.getmembers():
                if member.name.endswith((".jpg", ".png", ".webp")) and member.size > 1000:
                    try:
                        with Image.open(tar.extractfile(member)) as image:
                            sizes.append(image.size)
                    except Exception:
                        pass
    assert len(sizes) >= 200
    assert sum(max(s) >= 2000 for s in sizes) >= 5
    aspects = [w / h for w, h in sizes]
    assert min(aspects) < 0.5 and max(aspects) > 2.0
    train = sample_corpus / "imagenet" / "train"
    classes = sorted(p.name for p in train.iterdir())
    assert len(classes) >= 8 and all(len(list((train / c).glob(f"{c}_*.JPEG"))) >= 20 for c in classes)
    assert (sample_corpus / "imagenet" / "LOC_val_solution.csv").read_text().startswith("ImageId,PredictionString")
    videos = {p.suffix for p in (sample_corpus / "video").iterdir()}
    assert videos == {".mp4", ".mkv", ".webm", ".avi"}


def test_reused_when_complete(sample_corpus: Path):
    before = (sample_corpus / MANIFEST).stat().st_mtime_ns
    write_sample_corpus(str(sample_corpus))
    assert (sample_corpus / MANIFEST).stat().st_mtime_ns == before


def _scramble_heap(rng: np.random.Generator) -> None:
    """Leave freed heap blocks full of random bytes, as a busy process does: a reader of
    uninitialised memory then sees something new on every call."""
    blocks = [bytearray(rng.bytes(int(n))) for n in rng.integers(1_000, 1 << 17, size=300)]
    del blocks


def test_x264_bytes_do_not_depend_on_heap_contents(tmp_path: Path):
    """The corpus's H.264 settings on a frame height that is not a multiple of 16 (x264's
    AVX-512 code reads uninitialised memory there): the same bytes whatever the heap held."""
    frames = videos._all_frames("bikes", 0.5, limit=48)
    assert frames[0].shape[0] % 16 != 0
    rng = np.random.default_rng(0)
    digests = set()
    for attempt in range(16):
        _scramble_heap(rng)
        path = tmp_path / f"bikes_{attempt}.mkv"
        videos.encode(str(path), frames, "libx264", codec_options=videos.X264)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


ENCODINGS = [("libx264", videos.X264, "yuv420p"), ("libvpx-vp9", videos.VPX, "yuv420p"),
             ("libvpx", videos.VP8, "yuv420p"), ("mjpeg", videos.MJPEG, "yuvj420p")]


@pytest.mark.parametrize("codec,options,pix_fmt", ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_encoders_give_the_same_bytes_on_a_busy_machine(tmp_path: Path, codec: str, options: dict, pix_fmt: str):
    """Each encoder setting of the corpus, idle and with every core busy: one set of bytes.
    (libvpx's VP8 realtime mode picks its speed from frame timings unless cpu-used is negative.)"""
    frames = videos._all_frames("bikes", 0.5, limit=20)

    def digest(path: Path) -> str:
        videos.encode(str(path), frames, codec, codec_options=options, pix_fmt=pix_fmt)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    idle = digest(tmp_path / "idle.mkv")
    with busy_machine():
        busy = {digest(tmp_path / f"busy_{attempt}.mkv") for attempt in range(3)}
    assert busy == {idle}


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_bytes_on_every_run(sample_corpus: Path, tmp_path: Path):
    """A second write in another process (other hash seed, thread counts, time zone), while a
    second process keeps a core busy, in a later wall-clock second, gives every file byte for byte.
    (Every core is kept busy in the encoder test above, where the encoders' choices are made.)"""
    again = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "TZ": "Pacific/Kiritimati"}
    first_written = (sample_corpus / MANIFEST).stat().st_mtime
    with busy_machine(1):
        subprocess.run([sys.executable, "-m", "uvd_pipeline", "sample", str(again)], env=env, check=True,
                       capture_output=True, timeout=600)
    assert int((again / MANIFEST).stat().st_mtime) > int(first_written)
    first, second = _file_bytes(sample_corpus), _file_bytes(again)
    assert len(first) > 300 and first.keys() == second.keys()
    differing = sorted(name for name in first if first[name] != second[name])
    assert differing == []


def _family_writer(name: str, after: str | None = None):
    def write(root: str, seed: int) -> dict:
        if after:  # writing until another process has written `after` (a fast family is not left to one process)
            _wait_for(lambda: (Path(root).parent / after / "seed.txt").exists(), 10)
        os.makedirs(root)
        (Path(root) / "seed.txt").write_text(f"{name} {seed}")
        return {"files": 1, "pid": os.getpid()}
    return write


def test_families_are_written_by_two_processes_into_one_corpus(tmp_path: Path, monkeypatch, caplog):
    """The families share nothing, so two forked processes write them side by side (the corpus took
    20 s of one core before the build): each family's folder and summary as one process writes them,
    the summaries in the families' own order whatever order the processes finish in, each family's
    "written in" line logged as it is done."""
    import uvd_pipeline.sample as sample

    names = ("b_slow", "a", "c")
    monkeypatch.setattr(sample, "_families", lambda: {n: _family_writer(n, "c" if n == "b_slow" else None) for n in names})
    monkeypatch.setattr(sample, "LONGEST_FIRST", ("b_slow", "c", "a"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with caplog.at_level(logging.INFO, logger="uvd_pipeline.sample"):
        written = sample._written_families(str(tmp_path), 7)
    assert [name for name, _ in written] == list(names)
    assert sorted(r.getMessage().split()[2] for r in caplog.records if "written in" in r.getMessage()) == sorted(names)
    assert len({summary["pid"] for _, (summary, _) in written} - {os.getpid()}) == 2
    assert {n: (tmp_path / n / "seed.txt").read_text() for n in names} == {n: f"{n} 7" for n in names}


def _pid_gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_for(condition, seconds: float = 30) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# `uvd sample` whose two families each record their process, then write for a long time (a real
# family takes up to 20 s on a loaded machine)
STUCK_CORPUS = """
import os, sys, time
from pathlib import Path
import uvd_pipeline.sample as sample
pids = Path(sys.argv[2])
def stuck_writer(name):
    def write(root, seed):
        os.makedirs(root)
        (pids / name).write_text(str(os.getpid()))
        time.sleep(60)
        return {"files": 1}
    return write
sample._families = lambda: {n: stuck_writer(n) for n in ("b", "a")}
sample.LONGEST_FIRST = ("b", "a")
os.sched_getaffinity = lambda pid: {0, 1}
sys.argv = ["uvd", "sample", sys.argv[1]]
from uvd_pipeline.cli import run
run()
"""


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_the_corpus_writers_at_once(tmp_path: Path, how: str):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to `uvd
    sample` alone (`kill PID`, a supervisor's stop) while both writing processes are busy: the
    command ends at once with 130 / 143, no writing process outlives it, no staging folder is left.
    (It went on writing every family after one Ctrl-C, hung after a second, and left both writers
    running after SIGTERM.)"""
    out, pids = tmp_path / "corpus", tmp_path / "pids"
    pids.mkdir()
    command = subprocess.Popen([sys.executable, "-c", STUCK_CORPUS, str(out), str(pids)],
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: len(list(pids.iterdir())) == 2), command.communicate(timeout=5)
        writers = [int(p.read_text()) for p in pids.iterdir()]
        if how == "ctrl_c":
            os.killpg(command.pid, signal.SIGINT)
        else:
            os.kill(command.pid, signal.SIGTERM)
        _, stderr = command.communicate(timeout=30)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
    assert command.returncode == (130 if how == "ctrl_c" else 143), stderr
    assert ("terminated (SIGTERM)" if how == "sigterm" else "interrupted") in stderr
    assert _wait_for(lambda: all(_pid_gone(pid) for pid in writers), 10)
    assert list(tmp_path.iterdir()) == [pids]  # no corpus, no .corpus.tmp-*


def _fake_families(monkeypatch, writers: dict) -> None:
    import uvd_pipeline.sample as sample

    monkeypatch.setattr(sample, "_families", lambda: writers)
    monkeypatch.setattr(sample, "LONGEST_FIRST", tuple(writers))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def _slow_writer(pids: Path, seconds: float):
    def write(root: str, seed: int) -> dict:
        os.makedirs(root)
        (pids / "slow").write_text(str(os.getpid()))
        time.sleep(seconds)
        (Path(root) / "done.txt").write_text("written")
        return {"files": 1}
    return write


def _failing_writer(pids: Path, how: str):
    def write(root: str, seed: int) -> dict:
        _wait_for(lambda: (pids / "slow").exists(), 10)  # fail while the other process is busy
        if how == "raise":
            raise ValueError("this family failed on purpose")
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer ends it
    return write


@pytest.mark.parametrize("how", ["raise", "killed"])
def test_a_failing_family_stops_the_corpus_at_once(tmp_path: Path, monkeypatch, how: str):
    """A family that fails (its error, or its process killed as the OOM killer does) is raised at
    once, naming the family (killed: how it ended, and a hint), and the process still writing
    another family is killed, not left to finish it first (it was: the error came only after every
    other family was written, and a killed writer gave a bare BrokenProcessPool)."""
    import uvd_pipeline.sample as sample

    pids = tmp_path / "pids"
    pids.mkdir()
    _fake_families(monkeypatch, {"slow": _slow_writer(pids, 8), "failing": _failing_writer(pids, how)})
    expected = "failed on purpose" if how == "raise" else r"writing failing \(process \d+, killed by SIGKILL\); out of memory\?"
    with pytest.raises(ValueError if how == "raise" else RuntimeError, match=expected):
        sample._written_families(str(tmp_path / "staging"), 0)
    assert _pid_gone(int((pids / "slow").read_text()))
    assert not (tmp_path / "staging" / "slow" / "done.txt").exists()


def _write_in_daemonic_process(staging: str, results) -> None:
    import uvd_pipeline.sample as sample

    try:
        results.put([(name, summary) for name, (summary, _) in sample._written_families(staging, 3)])
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")


def test_families_are_written_one_after_another_in_a_daemonic_process(tmp_path: Path, monkeypatch):
    """A daemonic process (a multiprocessing pool's task, as a library user may call the corpus
    writer from) may not have children: there the families are written one after another (it
    raised "daemonic processes are not allowed to have children")."""
    names = ("b", "a")
    _fake_families(monkeypatch, {n: _family_writer(n) for n in names})
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=_write_in_daemonic_process, args=(str(tmp_path), results), daemon=True)
    process.start()
    written = results.get(timeout=30)
    process.join()
    assert [(name, summary["pid"]) for name, summary in written] == [(n, process.pid) for n in names]
    assert {n: (tmp_path / n / "seed.txt").read_text() for n in names} == {n: f"{n} 3" for n in names}
