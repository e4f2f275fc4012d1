"""The one atomic writer (`tokenizer.atomic`): a reader sees the old file or the whole new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import fsspec
import pytest

from tokenizer import atomic
from tokenizer.atomic import TMP_MARK, AtomicFile, atomic_folder, atomic_path, commit_file, open_atomic, write_bytes


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_replaces_a_local_file_and_creates_its_folder(tmp_path: Path):
    target = tmp_path / "a" / "b" / "x.json"
    write_bytes(str(target), b"one")
    write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two" and _names(target.parent) == ["x.json"]


def test_write_bytes_through_an_fsspec_url():
    fs = fsspec.filesystem("memory")
    write_bytes("memory://atomic-test/sub/x.bin", b"payload")
    assert fs.cat_file("/atomic-test/sub/x.bin") == b"payload"
    assert fs.ls("/atomic-test/sub", detail=False) == ["/atomic-test/sub/x.bin"]
    fs.rm("/atomic-test", recursive=True)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "x.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with open_atomic(str(target)) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["x.txt"]
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as temporary:
            Path(temporary).write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["x.txt"]


FULL_DISK = """
import os, resource, signal, sys
from tokenizer.atomic import write_bytes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), as on a full disk (ENOSPC)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
for size in (6000, 70000):  # buffered until the commit's flush; written at once
    try:
        write_bytes(os.path.join(sys.argv[1], "x.json"), b"n" * size)
    except OSError as exc:
        print(exc.errno)
"""


def test_a_write_the_disk_refuses_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    """A full disk (here a file size limit, `ulimit -f`: the same failing write) refuses the
    bytes either when they are written or only when the file is closed, at the commit (a small
    file sits in the buffer until then): the write fails, the old file stays, and no temporary is
    left holding the space (the commit's failed flush left it, as a build on a full disk did
    with a unit's `.results`)."""
    import errno
    import subprocess
    import sys

    target = tmp_path / "x.json"
    target.write_bytes(b"old")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.stdout.split() == [str(errno.EFBIG)] * 2, done.stderr
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["x.json"]


def test_the_temporary_carries_the_mark_the_sweep_removes(tmp_path: Path):
    file = AtomicFile(str(tmp_path / "x.bin"))
    file.write(b"abc")
    assert TMP_MARK in os.path.basename(file.temporary) and _names(tmp_path) == [os.path.basename(file.temporary)]
    file.commit()
    assert _names(tmp_path) == ["x.bin"]


def test_an_atomic_file_never_written_commits_an_empty_file_and_abandons_to_nothing(tmp_path: Path):
    AtomicFile(str(tmp_path / "empty.bin")).commit()
    assert (tmp_path / "empty.bin").read_bytes() == b""
    file = AtomicFile(str(tmp_path / "gone.bin"))
    file.write(b"x")
    file.abandon()
    assert _names(tmp_path) == ["empty.bin"]


def test_commit_file_gives_a_new_files_mode_renamed_or_copied(tmp_path: Path, monkeypatch):
    """A temporary file is private (0600); once in place it has the mode any new file gets here,
    whether it was renamed (same filesystem) or copied (a rename across filesystems fails)."""
    expected = atomic.new_file_mode()
    for name, cross_device in (("renamed.bin", False), ("copied.bin", True)):
        local = tmp_path / f"scratch-{name}"
        local.write_bytes(name.encode())
        local.chmod(0o600)
        if cross_device:
            real_replace = os.replace

            def replace(src, dst, real=real_replace, local=str(local)):
                if os.fspath(src) == local:
                    raise OSError(18, "Invalid cross-device link")
                return real(src, dst)

            monkeypatch.setattr(atomic.os, "replace", replace)
        commit_file(str(local), str(tmp_path / "out" / name))
        monkeypatch.undo()
        placed = tmp_path / "out" / name
        assert placed.read_bytes() == name.encode()
        assert stat.S_IMODE(placed.stat().st_mode) == expected
    assert _names(tmp_path / "out") == ["copied.bin", "renamed.bin"]


def test_atomic_folder_replaces_a_folder_as_a_whole(tmp_path: Path):
    final = tmp_path / "ckpt"
    with atomic_folder(final) as temporary:
        (temporary / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as temporary:
            (temporary / "b").write_text("2")
            raise RuntimeError("killed")
    assert _names(final) == ["a"] and _names(tmp_path) == ["ckpt"]
    with atomic_folder(final) as temporary:
        (temporary / "c").write_text("3")
    assert _names(final) == ["c"] and _names(tmp_path) == ["ckpt"]


def test_a_failed_rename_leaves_no_temporary(tmp_path: Path):
    """The rename is the last step and can fail too (the target is a folder): the temporary went
    with it only when the block raised, so a `NAME.tmp-XXXX` stayed beside the folder."""
    (tmp_path / "target").mkdir()
    with pytest.raises(IsADirectoryError):
        write_bytes(str(tmp_path / "target"), b"payload")
    assert _names(tmp_path) == ["target"]
    (tmp_path / "finished").write_bytes(b"payload")  # commit_file moves a finished file the same way
    with pytest.raises(IsADirectoryError):
        commit_file(str(tmp_path / "finished"), str(tmp_path / "target"))
    assert _names(tmp_path) == ["finished", "target"] and not list((tmp_path / "target").iterdir())
