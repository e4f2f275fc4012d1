"""The embedded sample corpus: real layouts, enough variety, the same bytes every time."""

from __future__ import annotations

import hashlib
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


# `uvd sample` whose one family records its process, then writes for a long time (a real family
# takes up to 20 s on a loaded machine)
STUCK_CORPUS = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts it, whatever the test runner left
from pathlib import Path
import uvd_pipeline.sample as sample
pids = Path(sys.argv[2])
def stuck_writer(root, seed):
    os.makedirs(root)
    (pids / "writer").write_text(str(os.getpid()))
    time.sleep(60)
    return {"files": 1}
sample._families = lambda: {"stuck": stuck_writer}
sys.argv = ["uvd", "sample", sys.argv[1]]
from uvd_pipeline.cli import run
run()
"""


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_the_corpus_write_leaving_no_copy(tmp_path: Path, how: str):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM (`kill PID`, a
    supervisor's stop) while a family is written: `uvd sample` ends with 130 / 143 and one line,
    and no staging folder is left. (SIGTERM left its `.corpus.tmp-*` folder behind.)"""
    out, pids = tmp_path / "corpus", tmp_path / "pids"
    pids.mkdir()
    command = subprocess.Popen([sys.executable, "-c", STUCK_CORPUS, str(out), str(pids)],
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pids / "writer").exists() and time.monotonic() < deadline and command.poll() is None:
            time.sleep(0.05)
        assert (pids / "writer").exists(), command.communicate(timeout=5)
        if how == "ctrl_c":
            os.killpg(command.pid, signal.SIGINT)
        else:
            os.kill(command.pid, signal.SIGTERM)
        _, stderr = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
    assert command.returncode == (130 if how == "ctrl_c" else 143), stderr
    assert ("terminated (SIGTERM)" if how == "sigterm" else "interrupted") in stderr
    assert list(tmp_path.iterdir()) == [pids]  # no corpus, no .corpus.tmp-*


@pytest.mark.parametrize("seed", ["-1", "-4294967296"])
def test_a_negative_seed_is_one_error_line_before_any_work(tmp_path: Path, capsys, seed: str):
    """`sample --seed -1` wrote ~2 s of the corpus, then died in numpy's traceback ("expected
    non-negative integer", exit 1)."""
    from uvd_pipeline.cli import main

    started = time.perf_counter()
    code = main(["sample", "--seed", seed, str(tmp_path / "corpus")])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        f"error: --seed {seed}: a seed is a whole number >= 0 (default 0; each seed gives its own corpus)"], err
    assert elapsed < 0.5 and not (tmp_path / "corpus").exists() and os.listdir(tmp_path) == []
