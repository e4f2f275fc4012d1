"""Committing and verifying checkpoint folders.

A folder is written under a temporary name (`tokenizer.atomic.atomic_folder`, the project's one
atomic writer), sealed with `manifest.json` (size and sha256 of every
other file, written last: the commit mark) and renamed into place as a whole. Readers check the
files they use against the manifest before using them, so an altered byte or a short file is an
error that names the file, never NaN weights or a traceback from deep inside torch.

A leaf of trainer/: it imports no other trainer module, so the run-state and HF-format modules both
build on it without importing each other.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from tokenizer.atomic import atomic_folder, file_temporary_target, folder_temporary_target, write_bytes
from tokenizer.config import JSONFileRefused, read_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
MANIFEST_MAX_BYTES = 32 << 20  # 200,000 files: a checkpoint folder holds a few dozen
_REASON_CHARS = 200


class CheckpointError(ValueError):
    """A folder that is not a usable checkpoint, or whose tensors do not fit its config."""


class CheckpointDamaged(CheckpointError):
    """A checkpoint file that is missing, short, altered or unreadable; `path` names it."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {why}")


class CheckpointWarning(UserWarning):
    """A checkpoint read without digests to check, or skipped on resume because it is damaged."""


# -- writing ---------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def list_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under `folder` (its manifest included), sorted: one walk of the tree, each
    directory listed once (`rglob("*")` lists each twice on Python 3.11)."""
    found: list[Path] = []
    for parent, _, names in os.walk(folder):
        found += [path for name in names if (path := Path(parent) / name).is_file()]
    return sorted(found)


def describe_files(folder: str | os.PathLike[str], files: Iterable[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Relative path -> {bytes, sha256} of every file under `folder` except the manifest; `files`:
    the folder's `list_files`, when the caller has walked it already."""
    root = Path(folder)
    paths = list_files(root) if files is None else sorted(files)
    return {rel: {"bytes": p.stat().st_size, "sha256": file_digest(p)}
            for p in paths if (rel := p.relative_to(root).as_posix()) != MANIFEST}


def write_manifest(folder: str | os.PathLike[str], files: Iterable[Path] | None = None) -> dict[str, Any]:
    """Seal `folder`: record every file's size and digest in its manifest (replacing an old one);
    `files` as for `describe_files`."""
    manifest = {"version": MANIFEST_VERSION, "files": describe_files(folder, files)}
    write_bytes(os.fspath(Path(folder) / MANIFEST), (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


@contextlib.contextmanager
def sealed_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """`atomic_folder` whose contents are sealed with their manifest just before the rename."""
    with atomic_folder(folder) as temporary:
        yield temporary
        write_manifest(temporary)


# -- reading ---------------------------------------------------------------------------------
def read_manifest(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The manifest's file table, or None for a folder written before manifests existed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:  # judged from its size first: a manifest lists ~150 bytes per file
        files = read_json(path, MANIFEST_MAX_BYTES, "a manifest", "ours list ~150 bytes per file")["files"]
        if not all(isinstance(v, dict) and {"bytes", "sha256"} <= set(v) for v in files.values()):
            raise ValueError("an entry without bytes and sha256")
    except JSONFileRefused as exc:
        raise CheckpointDamaged(path, exc.reason) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointDamaged(path, f"not a readable manifest ({type(exc).__name__}: {exc})"[:_REASON_CHARS]) from None
    return files


def verify_folder(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> bool:
    """Check `folder` against its manifest: the size of every listed file, and the sha256 of the
    files in `names` (None: all), which must be listed. Returns False when there is no manifest
    (nothing to check against); raises `CheckpointDamaged` naming the first bad file."""
    files = read_manifest(folder)
    if files is None:
        return False
    root = Path(folder)
    for name, entry in files.items():
        path = root / name
        if not path.is_file():
            raise CheckpointDamaged(path, f"missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointDamaged(path, f"{size} bytes, {MANIFEST} recorded {entry['bytes']} (truncated or rewritten)")
    for name in files if names is None else names:
        if name not in files:
            raise CheckpointDamaged(root / name, f"not listed in {MANIFEST} (added after the folder was sealed)")
        if file_digest(root / name) != files[name]["sha256"]:
            raise CheckpointDamaged(root / name, f"sha256 differs from the one in {MANIFEST}: the bytes changed "
                                                 "after it was written (if on purpose, reseal the folder: "
                                                 f"python -m trainer.integrity --seal {root})")
    return True


def warn_unverified(folder: str | os.PathLike[str]) -> None:
    """Say once per command that `folder` is read unverified. Attributed to this line, not to its
    caller: Python shows a warning once per message and place, and the three places that verify a
    folder (the state, the packing, the weights) each showed it, 3 times for one `trainer.evaluate`."""
    warnings.warn(f"{folder}: no {MANIFEST} (written before checkpoints carried digests): read without "
                  f"verification; if you trust it, seal it: python -m trainer.integrity --seal {folder}",
                  CheckpointWarning, stacklevel=1)


@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn any failure to read `path` (torch, safetensors, JSON, OS) into `CheckpointDamaged` naming it."""
    try:
        yield
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointDamaged(path, "missing") from None
    except pickle.UnpicklingError as exc:  # torch's weights-only refusal: a page of text, culprit last
        from tokenizer.checkpoint import weights_only_refusal

        raise CheckpointDamaged(path, weights_only_refusal(exc)) from None
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types for a bad file
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:_REASON_CHARS]
        raise CheckpointDamaged(path, f"cannot be read ({reason})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.integrity",
        description="Check checkpoint folders against their manifest.json (exit 0: intact, 1: damaged), or "
                    "reseal one edited on purpose. A fit run's --out folder is not a checkpoint: its sealed "
                    "checkpoints are the step folders under checkpoints/, which are then checked one by one.")
    parser.add_argument("folders", nargs="+", metavar="FOLDER", help="a checkpoint folder (or a fit run's --out)")
    parser.add_argument("--seal", action="store_true",
                        help="write a new manifest.json over the folder's files as they are now")
    return parser


def sealed_below(folder: Path, files: Iterable[Path] | None = None) -> list[Path]:
    """Sealed checkpoint folders under `folder` (a fit run's --out keeps one per step under
    checkpoints/), sorted; none when `folder` is itself sealed. `files`: the folder's `list_files`,
    when the caller has walked it already."""
    files = list_files(folder) if files is None else files
    return sorted(path.parent for path in files if path.name == MANIFEST and path.parent != folder
                  and not any(folder_temporary_target(part) for part in path.parent.relative_to(folder).parts))


def leftovers(folder: Path) -> list[Path]:
    """Temporaries of writes that were killed under `folder` (`tokenizer.atomic` names: a step folder
    `.step-N.tmp-X` sealed or not, `log.jsonl.tmp-X`), and step folders a removal cut short in place
    left without their manifest and state, not looked into; sorted."""
    found = []
    for parent, dirs, names in os.walk(folder):
        kept = []
        for name in sorted(dirs):
            path = Path(parent) / name
            (found if folder_temporary_target(name) or _part_of_a_step(path) else kept).append(path)
        dirs[:] = [path.name for path in kept]
        found += [Path(parent) / name for name in names if file_temporary_target(name)]
    return sorted(found)


def _part_of_a_step(path: Path) -> bool:
    """A fit's `checkpoints/step-N` holding neither manifest.json nor state.json: what a prune cut
    short in place left before prunes renamed a folder first (no reader takes it for a checkpoint)."""
    return (path.parent.name == "checkpoints" and path.name.startswith("step-") and path.name[5:].isdigit()
            and not (path / MANIFEST).is_file() and not (path / "state.json").is_file())


def _report_leftovers(folder: Path) -> None:
    """One line per leftover temporary: no checkpoint is damaged by one, but each may hold a whole
    model and optimizer that nothing will ever read."""
    for path in leftovers(folder):
        what = ("part of a step folder whose removal was cut short" if _part_of_a_step(path)
                else "a temporary of a write that was killed")
        print(f"leftover: {path}: {what}, part of no checkpoint; safe to delete once no fit runs on this folder "
              "(a fit resuming it removes the temporaries it wrote)")


def _check(folder: Path) -> int:
    """Print one line per checked folder and per leftover temporary in it; 0 intact (or nothing
    recorded to check; leftovers are not damage), 1 damaged."""
    _report_leftovers(folder)
    targets = [folder]
    if not (folder / MANIFEST).is_file():
        targets = sealed_below(folder)
        if not targets:
            print(f"{folder}: no {MANIFEST}, nothing to check (a folder from before checkpoints carried "
                  f"digests, or from elsewhere; if you trust it: python -m trainer.integrity --seal {folder})")
            return 0
        print(f"{folder}: not a checkpoint itself (no {MANIFEST}) but holds {len(targets)} sealed checkpoint "
              "folder(s) (a fit run keeps one per step under checkpoints/): checking each")
    status = 0
    for target in targets:
        try:
            verify_folder(target)
            print(f"{target}: intact")
        except CheckpointDamaged as exc:
            print(f"damaged: {exc}")
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.integrity FOLDER... [--seal]`: check checkpoint folders, or reseal one
    after a deliberate edit (e.g. a hand-changed config.json). A path that is not a folder is a
    usage error (exit 2), never "nothing to check": a typo must not read as a pass."""
    parser = _parser()
    args = parser.parse_args(argv)
    folders = [Path(folder) for folder in args.folders]
    listings: dict[Path, list[Path]] = {}  # --seal: each folder walked once, for the checks and the manifest
    for folder in folders:
        if not folder.is_dir():
            parser.error(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
        if not args.seal:
            continue
        files = listings[folder] = list_files(folder)
        nested = sealed_below(folder, files)
        if folder / MANIFEST not in files and nested:
            parser.error(f"--seal {folder}: it holds sealed checkpoint folders ({nested[0]}, ...): "
                         "seal the checkpoint folder you edited, not the run folder around it")
        if not files:
            parser.error(f"--seal {folder}: an empty folder, nothing to seal")
    if args.seal:
        for folder in folders:
            print(f"{folder}: sealed {len(write_manifest(folder, listings[folder])['files'])} files")
        return 0
    return max(_check(folder) for folder in folders)


if __name__ == "__main__":
    sys.exit(main())
