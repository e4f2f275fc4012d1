"""`code_identity`: what a Dask worker is asked before a build on a given scheduler, so that every
worker renders with this checkout's code and weights."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO
from uvd_pipeline.code_identity import BUILD_PACKAGES, code_identity


def _identity_of(copy) -> dict:
    """The `code_identity` a process importing the project from `copy` reports (its own interpreter)."""
    done = subprocess.run([sys.executable, "-c", "from uvd_pipeline.code_identity import code_identity; "
                           "import json; print(json.dumps(code_identity()))"],
                          cwd=copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    import json

    identity = json.loads(done.stdout)
    assert identity["where"] == str(copy)
    return identity


def _digest_of(copy) -> str:
    return _identity_of(copy)["digest"]


def _project_copy(copy):
    """The build's packages copied into the folder `copy`."""
    for package in BUILD_PACKAGES:
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_copy_differs_by_its_code_or_its_shipped_weights_never_by_where_it_lies(tmp_path):
    """A worker whose embedded tokenizer weights differ rendered other tokens while its code's digest
    matched (only .py files were hashed); the same code and weights at another path must pass."""
    copy = _project_copy(tmp_path / "copy")
    ours = code_identity()["digest"]
    assert _digest_of(copy) == ours
    weights = sorted((copy / "tokenizer" / "weights").rglob("*.bin"))[0]
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert _digest_of(copy) != ours
    weights.write_bytes(original)
    with open(copy / "transforms" / "resize.py", "a") as handle:
        handle.write("# edited here\n")
    assert _digest_of(copy) != ours


def test_a_process_with_another_pillow_is_told_apart_naming_it(tmp_path):
    """A worker whose environment had another Pillow (another resize, other PNG bytes) passed the
    check, which hashed only the project's files. The versions now count: an install of Pillow
    11.0.0 found first on the path is named, with this build's."""
    from uvd_pipeline.code_identity import difference

    shadow = tmp_path / "site"
    (shadow / "pillow-11.0.0.dist-info").mkdir(parents=True)
    (shadow / "pillow-11.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pillow\nVersion: 11.0.0\n")
    done = subprocess.run([sys.executable, "-c", "from uvd_pipeline.code_identity import code_identity; "
                           "import json; print(json.dumps(code_identity()))"],
                          env={"PYTHONPATH": f"{shadow}:{REPO}", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    import json

    import PIL

    theirs, ours = json.loads(done.stdout), code_identity()
    assert theirs["digest"] == ours["digest"] and theirs["versions"]["pillow"] == "11.0.0"
    assert difference(ours, theirs) == f"has other libraries: pillow 11.0.0 (this build: {PIL.__version__})"
    assert difference(ours, ours) is None


def test_a_process_without_the_project_is_told_so(tmp_path):
    """The check reaches a worker as code, so a worker without the project answers too: said as
    such, not as "another version from ''" (`-S`: a Python where no site installs the project)."""
    from uvd_pipeline.code_identity import difference

    done = subprocess.run([sys.executable, "-S", "-c", "import importlib.util, json, sys; "
                           "spec = importlib.util.spec_from_file_location('ci', sys.argv[1]); "
                           "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
                           "print(json.dumps(m.code_identity()))", str(REPO / "uvd_pipeline" / "code_identity.py")],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True)
    import json

    theirs = json.loads(done.stdout)
    assert theirs["where"] == ""
    assert difference(code_identity(), theirs) == "finds no copy of the project on its path (it cannot import uvd_pipeline)"


def test_a_worker_that_passed_one_build_is_checked_again_for_a_build_with_other_libraries():
    """A long-lived Dask worker remembers the builds whose code it was found to run, so that only
    its first task of a build asks: it remembered them by the code's digest alone, so a later build
    with the same project code but another Pillow (or Python) ran on it unchecked, its renders made
    with the worker's Pillow. Now the whole identity is what is remembered (an in-process worker
    that passed a build is sent a task of one whose Pillow differs)."""
    import re

    import distributed
    import pytest

    from uvd_pipeline.code_identity import OtherProjectCode, run_checked

    ours = code_identity()
    other = dict(ours, versions=dict(ours["versions"], pillow="9.0.0"))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert client.submit(run_checked, ours, "os:getpid", pure=False).result() > 0  # this worker passes
        with pytest.raises(OtherProjectCode, match=rf"pillow {re.escape(ours['versions']['pillow'])} \(this build: 9\.0\.0\)"):
            client.submit(run_checked, other, "os:getpid", pure=False).result()
        assert client.submit(run_checked, ours, "os:getpid", pure=False).result() > 0  # and still passes ours


def test_project_files_edited_mid_build_are_told_as_such_and_the_address_named_only_where_given(tmp_path):
    """A project file edited 16 s into a `--runner dask` build (no address): the build stopped naming
    `beam.dask.address` and "another version of the project (from P ...; this build's from P ...)",
    asking to install this project's version there, though both read the same folder. It now says
    the files there changed since the build started, and to run again; `beam.dask.address` is named
    only where a scheduler was given (where another machine may hold another copy at that path)."""
    from uvd_pipeline.code_identity import GIVEN, worker_problem

    copy = _project_copy(tmp_path / "copy")
    started = _identity_of(copy)
    with open(copy / "uvd_pipeline" / "keys.py", "a") as handle:
        handle.write("# edited\n")
    now = _identity_of(copy)
    worker = "tcp://127.0.0.1:43083"
    local = worker_problem(worker, {**started, GIVEN: False}, now)
    assert local == (f"the project's files under {copy} changed since this build started (the Dask worker {worker} "
                     f"read them at code digest {now['digest'][:12]}, this build at {started['digest'][:12]}): its work "
                     "could differ from this build's, so the build stops; run the same build command again (shards "
                     "committed so far are kept)")
    given = worker_problem(worker, {**started, GIVEN: True}, now)
    assert given.startswith(f"beam.dask.address: the Dask worker {worker} reads the project from {copy}, as this "
                            "build does, but at code digest ") and "changed since this build started" in given
    # another folder is another copy: named as before, without the address where none was given
    elsewhere = worker_problem(worker, {**code_identity(), GIVEN: False}, now)
    assert elsewhere.startswith(f"the Dask worker {worker} runs another version of the project (from {copy}, ")
    assert "install this project's version there" in elsewhere
    assert worker_problem(worker, {**now, GIVEN: False}, now) is None
