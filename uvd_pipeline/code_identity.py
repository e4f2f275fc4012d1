"""Which code of the project a process runs: a digest of the build's packages' Python files, as
found on its path, and the versions of Python and of the libraries that shape rendered bytes. A
Dask worker on another machine (or with another PYTHONPATH, or another environment) imports its
own copy of the project and its own libraries; one of another version rendered its units with its
own code, and the build's bytes differed from what its config promised, without a word
(`dask_cluster.check_workers` asks the workers there at the start; `run_checked` is how each task
of the build's own code checks the worker it runs on, also one that joined later).

This module imports nothing outside Python's standard library, and nothing of the project: the
build sends `run_checked` to the workers as its code (cloudpickle, by value), so that a worker
with another copy of the project, an older one without this module included, runs this check and
not its own."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys

# the packages whose code a build's tasks run (pyproject's packages but the trainer)
BUILD_PACKAGES = ("uvd_pipeline", "sources", "transforms", "tokenizer")
# the installed libraries whose version can change what a task makes: decoders, resizers, PNG
# deflate, shard writers, the tokenizer's torch, and Beam and cloudpickle, which carry the tasks
DISTRIBUTIONS = ("apache-beam", "av", "cloudpickle", "decord", "numpy", "opencv-python-headless", "pillow",
                 "pillow-heif", "pyarrow", "pycocotools", "scikit-image", "torch", "webdataset", "zlib-ng")


def code_identity() -> dict:
    """{"digest": sha256 of the packages' .py files and the weights they ship (relative paths and
    bytes: `checkpoint: embedded` loads each worker's own copy of `tokenizer/weights/`), "where":
    the folder the project is imported from, "python": major.minor, "versions": {distribution:
    version or "missing"}}. Reads files, imports nothing of the project."""
    digest = hashlib.sha256()
    where = ""
    for package in BUILD_PACKAGES:
        spec = importlib.util.find_spec(package)
        folders = list(spec.submodule_search_locations or []) if spec else []
        digest.update(f"package {package} {len(folders)}\n".encode())
        for folder in folders[:1]:
            where = where or os.path.dirname(folder)
            for path in sorted(_identity_files(folder)):
                digest.update(f"{os.path.relpath(path, folder)}\n".encode())
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return {"digest": digest.hexdigest(), "where": where, "python": "%d.%d" % sys.version_info[:2],
            "versions": {name: _version(name) for name in DISTRIBUTIONS}}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _identity_files(folder: str):
    """The package's Python files, and every file below a `weights` folder of it."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        shipped = "weights" in os.path.relpath(root, folder).split(os.sep)
        for name in files:
            if name.endswith(".py") or shipped:
                yield os.path.join(root, name)


def difference(ours: dict, theirs: dict) -> str | None:
    """What another process's `code_identity` differs in from ours, in words; None if nothing."""
    if not theirs.get("where"):
        return "finds no copy of the project on its path (it cannot import uvd_pipeline)"
    if theirs.get("digest") != ours["digest"]:
        return (f"runs another version of the project (from {theirs.get('where')}, code digest "
                f"{str(theirs.get('digest', ''))[:12]}; this build's from {ours['where']}, {ours['digest'][:12]})")
    if theirs.get("python") != ours["python"]:
        return f"runs Python {theirs.get('python')} (this build: Python {ours['python']})"
    versions = theirs.get("versions") or {}
    differ = [f"{name} {versions.get(name, 'unknown')} (this build: {have})"
              for name, have in sorted(ours["versions"].items()) if versions.get(name) != have]
    return f"has other libraries: {', '.join(differ)}" if differ else None


FIX = ("install this project's version there, in an environment with the same libraries (or give the workers the "
       "same PYTHONPATH), or leave those workers out of the cluster")


# the key of a build's `code_identity` (`dask_cluster.bounded_dask_runner`) saying whether its scheduler was given
# (`beam.dask.address`): a local cluster's workers are this machine's processes, importing the build's own folder
GIVEN = "scheduler_given"


def worker_problem(worker: str, ours: dict, theirs: dict) -> str | None:
    """What the build says of a Dask worker whose `code_identity` is `theirs` (None: it runs ours).
    A worker reading the project from the build's own folder, at another digest, reads its files
    as they are now: they changed since the build started (an edit, a `git pull` mid-build). That
    was told as "another version of the project (from P; this build's from P)", with
    `beam.dask.address` and an install as the fix, where no address was given and nothing was to
    install. `beam.dask.address` is named only where it was given."""
    differs = difference(ours, theirs)
    if differs is None:
        return None
    given = ours.get(GIVEN, True)
    field = "beam.dask.address: " if given else ""
    if theirs.get("where") == ours["where"] and theirs.get("digest") != ours["digest"]:
        if not given:
            return (f"the project's files under {ours['where']} changed since this build started (the Dask worker "
                    f"{worker} read them at code digest {str(theirs.get('digest', ''))[:12]}, this build at "
                    f"{ours['digest'][:12]}): its work could differ from this build's, so the build stops; run the "
                    "same build command again (shards committed so far are kept)")
        return (f"{field}the Dask worker {worker} reads the project from {ours['where']}, as this build does, but at "
                f"code digest {str(theirs.get('digest', ''))[:12]} (this build: {ours['digest'][:12]}): the files "
                "there changed since this build started, or that worker's machine holds another copy at that path; "
                "its work could differ from this build's, so the build stops; run the same build command again "
                f"once they are the same, or {FIX}")
    return f"{field}the Dask worker {worker} {differs}: its work could differ from this build's, so the build stops; {FIX}"


class OtherProjectCode(RuntimeError):
    """A task of the build met a worker that runs other code (`difference`): what it made could
    differ from what the build's config gives."""


def run_checked(ours: dict, target: str, *args):
    """Call the function `target` ("module:name") with `args` once this worker is known to run the
    build's code and libraries (`ours`): asked on a worker's first task of the build, remembered on
    the worker by the whole identity (`identity_key`: a build with the same code but another Python
    or Pillow is asked again). Raises `OtherProjectCode` naming the worker, what differs and the fix."""
    worker = _current_worker()
    passed = getattr(worker, "uvd_code_passed", None)
    key = identity_key(ours)
    if passed is None or key not in passed:
        problem = worker_problem(getattr(worker, "address", None) or f"process {os.getpid()}", ours, code_identity())
        if problem is not None:
            raise OtherProjectCode(problem)
        if worker is not None:
            worker.uvd_code_passed = (passed or frozenset()) | {key}
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def identity_key(identity: dict) -> str:
    """A digest of all of a `code_identity` (code, Python, library versions, where it lies)."""
    import json

    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _current_worker():
    """The Dask worker running this task, or None outside one."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None
