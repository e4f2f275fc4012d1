"""Which code of the project a process runs: a digest of the build's packages' Python files, as
found on its path. A Dask worker on another machine (or with another PYTHONPATH) imports its own
copy of the project; one of another version rendered its units with its own code, and the build's
bytes differed from what its config promised, without a word (`dask_cluster.check_workers`)."""

from __future__ import annotations

import hashlib
import importlib.util
import os

# the packages whose code a build's tasks run (pyproject's packages but the trainer)
BUILD_PACKAGES = ("uvd_pipeline", "sources", "transforms", "tokenizer")


def code_identity() -> dict[str, str]:
    """{"digest": sha256 of the packages' .py files and the weights they ship (relative paths and
    bytes: `checkpoint: embedded` loads each worker's own copy of `tokenizer/weights/`), "where":
    the folder the project is imported from}. Reads files, imports nothing of the project."""
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
    return {"digest": digest.hexdigest(), "where": where}


def _identity_files(folder: str):
    """The package's Python files, and every file below a `weights` folder of it."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        shipped = "weights" in os.path.relpath(root, folder).split(os.sep)
        for name in files:
            if name.endswith(".py") or shipped:
                yield os.path.join(root, name)
