"""Shared fixtures: the embedded sample corpus (written once per session) and small builds.

Nothing here is autouse: a test asks for what it needs (`tiny_tokenizer`, `mini_build`, ...), so a
test of pure functions pays for no model and no build. `mini_build` is shared by the whole session
and read-only: a test that reruns, resumes or writes a report asks for `mini_build_copy` (its own
copy) instead; the build's files are checked unchanged when the session ends."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MINI_LAION_SHARD = 1  # the one img2dataset shard of the sample corpus that the mini corpus holds
# Web images of that shard dropped as near duplicates: nothing planted them (the corpus's planted
# duplicates are all in shard 2); crops of the same bundled photos land within the pHash threshold.
MINI_WEB_NEAR_DUPLICATES = 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test files longest first (`file_order`): `make test`'s workers take whole files in this
    order, so the long ones start first instead of running alone at the end."""
    from file_order import longest_first, measured_seconds

    paths = [item.nodeid.split("::")[0] for item in items]
    items[:] = [items[index] for index in longest_first(paths, measured_seconds())]


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, torch's intra-op pool gets the worker's share of the cores (one
    each under `make test`'s two workers on two cores): torch sizes it to every core per process,
    and two workers' pools spinning for the same cores made a fit of a few steps cost 7x the CPU
    time of one thread. Only this process's pool: subprocesses and code that sets threads (a
    build's `threads: 1`, `Tokenizer(threads=...)`) choose their own as before."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _imagemagick_missing() -> str | None:
    """Why the `convert` on PATH is not ImageMagick, or None. A machine may carry a stand-in under
    that name (one that only shows PNGs), so its own `-version` is asked, not `shutil.which`."""
    try:
        said = subprocess.run(["convert", "-version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`convert -version` failed: {error}"
    return None if "ImageMagick" in said else f"`convert -version` says {said.strip()[:80]!r}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under `make test` (UVD_REQUIRE_IMAGEMAGICK, UVD_REQUIRE_WEBP_TOOLS) a missing tool that makes
    the tests' files the way the world makes them stops the run at once with the fix, instead of a
    hundred tests failing on a CalledProcessError each."""
    missing = []
    if os.environ.get("UVD_REQUIRE_IMAGEMAGICK"):
        why = _imagemagick_missing()
        if why:
            missing.append(f"ImageMagick ({why}): `make imagemagick` or `apt-get install imagemagick libgs-common`")
    if os.environ.get("UVD_REQUIRE_WEBP_TOOLS"):
        absent = [tool for tool in ("img2webp", "gif2webp", "webpmux") if shutil.which(tool) is None]
        if absent:
            missing.append(f"libwebp's {', '.join(absent)}: `make webp-tools` or `apt-get install webp`")
    if missing:
        pytest.exit("the tests need " + "; ".join(missing), returncode=4)


def mini_web_sentences() -> int:
    """Web sentences of the mini build, from the corpus generator's tables: one per tar entry of
    the shard, less its broken entries and the near duplicates."""
    from uvd_pipeline.sample import web

    assert not [key for key in web.PLANTED if key[0] == MINI_LAION_SHARD]
    broken = [key for key in web.BROKEN if key[0] == MINI_LAION_SHARD]
    return web.SAMPLES_PER_SHARD - len(broken) - MINI_WEB_NEAR_DUPLICATES


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A tiny VQGAN with fixed random weights in muse format: fast, and independent of the
    embedded trained one, so the build's tokenize stage runs in every end-to-end test."""
    from tokenizer import TINY, build, save

    shared = made_once_for_all_workers(tmp_path_factory, "tokenizer",
                                       lambda folder: save(build(TINY, seed=0), folder / "tiny-seed0"))
    return shared / "tiny-seed0"


def made_once_for_all_workers(tmp_path_factory, name: str, make) -> Path:
    """`make(folder)` run once per test run, not once per pytest-xdist worker: the first worker
    to ask makes it under a file lock in the run's shared temp folder, the other waits and reads
    it. (The sample corpus is 30 s of one core; both workers wrote it before.)"""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-N/, shared by this run's workers (pytest-N/popen-gwK/ is one's)
    folder, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """The full embedded sample corpus, written by the real generator into a temp folder (once
    for both test workers; tests only read it)."""
    from uvd_pipeline.sample import write_sample_corpus

    return made_once_for_all_workers(tmp_path_factory, "sample-corpus", lambda folder: write_sample_corpus(str(folder)))


@pytest.fixture(scope="session")
def mini_corpus(sample_corpus: Path, tmp_path_factory) -> Path:
    """A small slice of the sample corpus in the same layouts, for fast end-to-end builds:
    one img2dataset shard, two ImageNet classes (train and their val images), five videos (once
    for both test workers; tests only read it)."""
    return made_once_for_all_workers(tmp_path_factory, "mini", lambda root: _write_mini_corpus(sample_corpus, root))


def _write_mini_corpus(sample_corpus: Path, root: Path) -> None:
    laion = root / "laion"
    laion.mkdir(parents=True)
    for name in (f"{MINI_LAION_SHARD:05d}.tar", f"{MINI_LAION_SHARD:05d}.parquet", f"{MINI_LAION_SHARD:05d}_stats.json"):
        shutil.copy(sample_corpus / "laion" / name, laion / name)
    imagenet = root / "imagenet"
    (imagenet / "train").mkdir(parents=True)
    (imagenet / "val").mkdir()
    classes = ("n03063599", "n04266014")  # the second has no broken files; the first has one
    for wnid in classes:
        shutil.copytree(sample_corpus / "imagenet" / "train" / wnid, imagenet / "train" / wnid)
    shutil.copy(sample_corpus / "imagenet" / "LOC_synset_mapping.txt", imagenet)
    rows = (sample_corpus / "imagenet" / "LOC_val_solution.csv").read_text().splitlines()
    kept = [rows[0]] + [r for r in rows[1:] if r.split(",")[1].split()[0] in classes]
    (imagenet / "LOC_val_solution.csv").write_text("\n".join(kept) + "\n")
    for row in kept[1:]:
        image_id = row.split(",")[0]
        shutil.copy(sample_corpus / "imagenet" / "val" / f"{image_id}.JPEG", imagenet / "val")
    video = root / "video"
    video.mkdir()
    for name in ("short_20f.webm", "clip_40f.avi", "short_10f.mp4", "truncated_faststart.mp4", "not_a_video.mp4"):
        shutil.copy(sample_corpus / "video" / name, video / name)


def write_config(path: Path, corpus: Path, output: Path, tokenizer: Path | str, **beam) -> Path:
    """A build config over `corpus` (mini or full layout) encoding with the `tokenizer` checkpoint
    (the `tiny_tokenizer` fixture), with in-process Beam by default."""
    config = {
        "version": 1,
        "output": str(output),
        "seed": 0,
        "image": {"size": 64, "resize": "center_crop"},
        "split": {"val_fraction": 0.1},
        "sources": [
            {"name": "web", "type": "laion", "path": str(corpus / "laion"), "num_shards": 3},
            {"name": "inet", "type": "imagenet", "path": str(corpus / "imagenet"), "num_shards": 2},
            {"name": "clips", "type": "video", "path": str(corpus / "video"), "num_shards": 2,
             "strides": [10, 20, 30]},
        ],
        # eager: a compile costs 10-30 s per worker process, more than these builds' whole Tokenize
        "tokenizer": {"checkpoint": str(tokenizer), "batch_size": 8, "threads": 1, "compile": False},
        "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory", **beam},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_web_source(tmp_path: Path, name: str, path: Path, size: int = 32, tokenizer: Path | None = None) -> dict:
    """A whole in-process build (no tokenizer unless a `tokenizer` checkpoint is given, no dedup,
    nothing in val by hash) of one `laion` source reading `path` into `tmp_path/out`: its summary."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config = {"version": 1, "output": str(tmp_path / "out"), "seed": 0, "image": {"size": size},
              "split": {"val_fraction": 0.0}, "dedup": {"enabled": False},
              "tokenizer": ({"checkpoint": str(tokenizer), "batch_size": 8, "threads": 1, "compile": False}
                            if tokenizer else {"enabled": False}),
              "sources": [{"name": name, "type": "laion", "path": str(path), "num_shards": 1}],
              "beam": {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return run_build(load_config(str(tmp_path / "c.yaml"))).summary


@pytest.fixture(scope="session")
def mini_build(mini_corpus: Path, tiny_tokenizer: Path, tmp_path_factory):
    """One finished in-process build of the mini corpus, shared by read-only tests (checked
    unchanged, file by file, when the session ends). Built once for both test workers: the other
    reads the config, the summary (kept as JSON) and the digests the builder took."""
    import json

    from uvd_pipeline.config import load_config

    work = made_once_for_all_workers(tmp_path_factory, "mini_build",
                                     lambda folder: _build_mini(folder, mini_corpus, tiny_tokenizer))
    config = load_config(str(work / "config.yaml"))
    summary = json.loads((work / "summary.json").read_text())
    before = json.loads((work / "digests.json").read_text())
    yield config, summary
    changed = sorted(set(before.items()) ^ set(file_digests(Path(config.output)).items()))
    assert not changed, f"a test wrote into the shared mini_build (use mini_build_copy): {changed[:5]}"


def _build_mini(work: Path, corpus: Path, tokenizer: Path) -> None:
    """The mini build into `work/out`, with its config, its summary as JSON (the same dict read
    back, or this fails) and the digests of its files beside it."""
    import json

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    work.mkdir()
    config = load_config(str(write_config(work / "config.yaml", corpus, work / "out", tokenizer)))
    summary = run_build(config).summary
    text = json.dumps(summary)
    assert json.loads(text) == summary, "the mini build's summary does not read back equal from JSON"
    (work / "summary.json").write_text(text)
    (work / "digests.json").write_text(json.dumps(file_digests(Path(config.output))))


@pytest.fixture
def mini_build_copy(mini_build, tmp_path: Path):
    """The shared mini build copied into this test's own folder: (config pointing at the copy,
    summary), for tests that rerun, resume or add files."""
    config, summary = mini_build
    out = tmp_path / "mini_build"
    shutil.copytree(config.output, out)
    return config.model_copy(update={"output": str(out)}), summary


def file_digests(output: Path) -> dict[str, str]:
    """sha256 of every file under `output` (relative path -> digest)."""
    import hashlib

    return {str(p.relative_to(output)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(output.rglob("*")) if p.is_file()}


def shard_digests(output: Path) -> dict[str, str]:
    """sha256 of every shard file (rendered tars, token shards, rejects, stats) under a build."""
    import hashlib

    digests = {}
    for folder in ("rendered", "tokens"):
        for path in sorted((output / folder).rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(output))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def without_root_powers() -> list[str]:
    """A command prefix that keeps root's uid but drops its power to ignore file modes (CAP_DAC_*):
    the worktree and the venv stay readable, and a mode-000 file is as unreadable as for a user."""
    if os.geteuid() != 0:
        return []  # a user already obeys file modes
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root's power over file modes")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


@contextmanager
def busy_machine(processes: int | None = None) -> Iterator[None]:
    """Busy-looping processes, one per core by default, for as long as the block runs (and at most
    10 minutes): determinism on a loaded machine. At the lowest priority (nice 19): on an idle
    machine they take every core the test leaves, as a user's other work would; under `make test`
    the other pytest workers keep the cores busy already, and burners at full priority took a
    core's worth of CPU from them for each second of the tests that use them."""
    loop = "import os, time\nos.nice(19)\nend = time.time() + 600\nwhile time.time() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(processes or os.cpu_count() or 2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def png_row_filters(png: bytes) -> list[int]:
    """The filter type byte of every row, from the PNG's own chunks (8-bit RGB, not interlaced)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 2, 0)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    return [raw[row * stride] for row in range(height)]


def early_rendered(caplog) -> tuple[int, int] | None:
    """(units the early render pool rendered, units listed) from the build's log line, or None
    where no pool ran (`uvd_pipeline.early_render`); `caplog` must capture `uvd_pipeline.build` at INFO."""
    import re

    for record in caplog.records:
        found = re.fullmatch(r"early render: (\d+) of (\d+) input units rendered by the pool \(in (?:processes|threads)\)",
                             record.getMessage())
        if found:
            return int(found[1]), int(found[2])
    return None


@pytest.fixture
def never_read(monkeypatch):
    """`never_read(*paths)`: make opening any of `paths` fail the test, so a file that must be refused
    from its size or kind (a sparse 2 GB config.json, /dev/zero) is never read even by a regression
    (which would read gigabytes or forever): the refusal is then in words other than the expected."""
    import builtins
    import io

    forbidden: set[str] = set()
    real_open = io.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) in forbidden:
            raise AssertionError(f"{file} was opened")
        return real_open(file, *args, **kwargs)

    def forbid(*paths: str | os.PathLike[str]) -> None:
        forbidden.update(os.path.realpath(path) for path in paths)
        monkeypatch.setattr(builtins, "open", guarded)
        monkeypatch.setattr(io, "open", guarded)

    return forbid


@contextmanager
def lock_being_written(lock: Path, user: int | None = None) -> Iterator[subprocess.Popen]:
    """A process that has created `lock` exclusively and not written it yet, as a build before
    output_lock's linked write did (O_EXCL, then its write): held open until the block ends.
    `user`: run it as that uid (through `setpriv`), another user's build."""
    code = ("import os, sys; os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644); "
            "print('open', flush=True); sys.stdin.read()")
    become = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    process = subprocess.Popen([*become, sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "open\n"
        yield process
    finally:
        process.kill()
        process.wait()
