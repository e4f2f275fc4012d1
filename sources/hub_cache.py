"""A Hugging Face Hub cache snapshot as `huggingface_hub` leaves it, read without `follow_links`.

What the user's own Hub client fetched earlier (this project never downloads) lies at
`<cache>/datasets--ORG--NAME/snapshots/<commit>/<path in repo>`, a relative link to
`../../blobs/<etag>` (the repo's blob: the file's sha256, or its git sha1 for a small file), and
with the cache's shared store (huggingface_hub 2.x, Xet files) that blob is itself a link to
`<cache>/blobs/<xx>/<xet hash>` beside a `.huggingface-shared-blobs` marker (`file_download.py`,
`utils/_shared_blobs.py`). Every file of a snapshot thus links out of it; with a root that is
such a snapshot (or a folder in one) a link counts as inside when it leads, hop by hop as the
cache writes it, to a blob of the same repo and nothing else (`is_cached_blob`): any other
link, and any folder link, is still `outside_root`.

A row's `hf://datasets/ORG/NAME@REV/path` (what `datasets` writes for a Hub file, its revision
percent-encoded) is the snapshot's file when the repo and revision are the snapshot's and the
file is there (`hf_file`); otherwise it stays out of the root.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from typing import NamedTuple
from urllib.parse import unquote

_REPO_FOLDER = re.compile(r"datasets--[^/]+")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_BLOB = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a git sha1 (small files) or a sha256 (LFS, Xet)
_STORE_ENTRY = re.compile(r"[0-9a-f]{64}")
SHARED_MARKER = ".huggingface-shared-blobs"  # huggingface_hub's `SHARED_BLOBS_MARKER_NAME`
SHARED_LAYOUT = "1\n"  # its `SHARED_BLOBS_LAYOUT_VERSION`, as the marker holds it
# datasets 5.2's `packaged_modules/vortex/vortex.py` `_HF_URI_PATTERN`: repo id, revision, path in repo
HF_URI = re.compile(r"^hf://datasets/([^/@]+/[^/@]+?)(?:@([^/]+))?/(.+)$")
_MAX_REF_BYTES = 256  # a `refs/<branch>` file holds a commit hash
# what a Hub cache folder holds (huggingface_hub's `scan_cache_dir`: repo folders, its version.txt,
# .locks, and the 2.x shared store): a folder holding anything else (a dataset's own files beside a
# stray repo folder) is no cache
_CACHE_ENTRY = re.compile(r"(?:datasets|models|spaces)--.+|version\.txt|\.locks|blobs|CACHEDIR\.TAG|"
                          + re.escape(SHARED_MARKER))
# what HF_HOME (`~/.cache/huggingface`, the Hub cache its `hub/`) holds beside it: huggingface_hub's
# and datasets' own, and the caches of the libraries that keep theirs there (lerobot, transformers,
# evaluate, diffusers) and a backup tool's CACHEDIR.TAG
_HOME_ENTRY = re.compile(r"hub|datasets|xet|assets|modules|accelerate|token|stored_tokens|\.locks|lerobot|"
                         r"transformers|evaluate|diffusers|CACHEDIR\.TAG")
# what an operating system or a user leaves in any folder (Finder's .DS_Store and ._ files, Windows'
# Thumbs.db and desktop.ini, dotfiles): passed over in judging what a cache folder holds
_JUNK_ENTRY = re.compile(r"\..*|thumbs\.db|ehthumbs\.db|desktop\.ini", re.IGNORECASE)


class Snapshot(NamedTuple):
    repo: str  # the cache's repo folder `.../datasets--ORG--NAME`, links resolved
    commit: str
    repo_id: str  # ORG/NAME as the Hub spells it

    @property
    def folder(self) -> str:
        return os.path.join(self.repo, "snapshots", self.commit)


def snapshot_of(root: str) -> Snapshot | None:
    """The Hub cache snapshot a local root is, or lies in (links resolved), else None."""
    if "://" in root:  # a bucket has no links: its files are the blobs themselves
        return None
    return _snapshot_at(os.path.realpath(root))


@functools.lru_cache(maxsize=64)
def _snapshot_at(real_root: str) -> Snapshot | None:
    parts = real_root.split(os.sep)
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == "snapshots" and _REPO_FOLDER.fullmatch(parts[index - 1]) \
                and _COMMIT.fullmatch(parts[index + 1]):
            repo = os.sep.join(parts[:index]) or os.sep
            return Snapshot(repo, parts[index + 1], parts[index - 1][len("datasets--"):].replace("--", "/"))
    return None


def repo_folder_problem(root: str) -> str | None:
    """Why a local root that is a Hub cache repo folder (`.../datasets--ORG--NAME`, holding
    `blobs/`, `refs/` and `snapshots/`), or its `snapshots/` folder, or the cache itself (a folder
    of such repo folders: `~/.cache/huggingface/hub`), is no dataset to read: every revision
    downloaded lies there side by side, each file a link into `blobs/` (read as a folder, its
    path-only rows were `missing_image`, every blob a reject of its own, two revisions, or every
    repo, built as one). Names the snapshot to give instead (of each repo, in a cache): the commit
    `refs/main` holds, else those there."""
    if "://" in root:
        return None
    real = os.path.realpath(root)
    if os.path.basename(real) == "snapshots" and _is_repo_folder(os.path.dirname(real)):
        repo, snapshots = os.path.dirname(real), root
    elif _is_repo_folder(real):
        repo, snapshots = real, os.path.join(root, "snapshots")
    else:
        return _cache_problem(root, real)
    commits = _commits(repo)
    main = _commit_of(Snapshot(repo, "", ""), "main")
    if main in commits:
        fix = f"set path to {os.path.join(snapshots, main)} (the commit its refs/main names)"
    elif commits:
        fix = (f"set path to one of its snapshots, {os.path.join(snapshots, commits[0])}"
               + (f" ({len(commits)} there)" if len(commits) > 1 else ""))
    else:
        fix = "it holds no snapshot: set path to a folder that holds the dataset's files"
    return (f"{root} is a Hugging Face Hub cache repo folder (blobs/, refs/, snapshots/: each revision "
            f"downloaded, its files links into blobs/), not one revision of the dataset: {fix}")


MAX_NAMED_REPOS = 4  # of a cache's dataset repos, the snapshots a refusal names (then how many more)


def _cache_problem(root: str, real: str) -> str | None:
    """Why a root that is a Hub cache, or HF_HOME (its `hub/` one), is no dataset; None for any
    other folder."""
    problem = _hub_problem(root, real)
    if problem is not None or not _only(real, _HOME_ENTRY):
        return problem
    problem = _hub_problem(os.path.join(root, "hub"), os.path.join(real, "hub"))
    return f"{root} is Hugging Face's home folder (HF_HOME), not a dataset; its hub/: {problem}" if problem else None


def _only(real: str, entries: re.Pattern) -> bool:
    """Whether folder `real` holds entries all of whose names `entries` matches (or are an OS's
    junk: a stray .DS_Store made a real cache read as a plain folder)."""
    try:
        return all(entries.fullmatch(n) or _JUNK_ENTRY.fullmatch(n) for n in os.listdir(real))
    except (OSError, ValueError):
        return False


def _hub_problem(root: str, real: str) -> str | None:
    """Why a root that is a Hub cache (a folder holding `datasets--ORG--NAME` repo folders as
    huggingface_hub writes them, `_is_repo_folder`, and nothing but what a cache holds) is no
    dataset, naming each repo's snapshot (`refs/main`'s commit, else its first); None for any
    other folder."""
    try:
        names = sorted(n for n in os.listdir(real) if _is_repo_folder(os.path.join(real, n)))
    except (OSError, ValueError):
        return None
    if not names or not _only(real, _CACHE_ENTRY):
        return None
    shown = []
    for name in names[:MAX_NAMED_REPOS]:
        commits = _commits(os.path.join(real, name))
        main = _commit_of(Snapshot(os.path.join(real, name), "", ""), "main")
        commit = main if main in commits else commits[0] if commits else None
        shown.append(os.path.join(root, name, "snapshots", commit) if commit else f"{os.path.join(root, name)} (no snapshot)")
    more = f" and {len(names) - MAX_NAMED_REPOS} more" if len(names) > MAX_NAMED_REPOS else ""
    return (f"{root} is a Hugging Face Hub cache (a folder of {len(names)} dataset repo folder"
            f"{'s' * (len(names) != 1)}, datasets--ORG--NAME, each of its revisions' files links into its blobs/), "
            f"not one dataset: set path to the snapshot of the one to build: {', '.join(shown)}{more}")


def _is_repo_folder(real: str) -> bool:
    """Whether `real` is a Hub cache repo folder as huggingface_hub writes it (`file_download`:
    `datasets--ORG--NAME` holding `blobs/` and `snapshots/` of commit folders only). By name and
    `snapshots/` alone, a user's own project (`hub/datasets--me--cats/snapshots/v1/`, beside
    `datasets/`) was refused as HF_HOME though no Hub client wrote it. What else the repo folder
    holds is not judged: each huggingface_hub version adds its own (`refs/`, `.no_exist/`, 2.4's
    `trees/<commit>.json`, its tree listing), and allowing only the names known once read
    every real 2.4 cache as a plain folder, each blob an image of its own."""
    if not _REPO_FOLDER.fullmatch(os.path.basename(real)) or not os.path.isdir(os.path.join(real, "blobs")):
        return False
    try:
        entries = os.listdir(os.path.join(real, "snapshots")) if os.path.isdir(os.path.join(real, "snapshots")) else None
        # an empty snapshots/ is a cache's only with refs/ beside it (rev57i L3: a user's own
        # datasets--me--cats/ of blobs/, an empty snapshots/ and images/ was refused)
        return entries is not None and all(_COMMIT.fullmatch(n) or _JUNK_ENTRY.fullmatch(n) for n in entries) and (
            any(_COMMIT.fullmatch(n) for n in entries) or os.path.isdir(os.path.join(real, "refs")))
    except (OSError, ValueError):
        return False


def _commits(repo: str) -> list[str]:
    """The snapshot commits of a cache repo folder, sorted."""
    try:
        return sorted(c for c in os.listdir(os.path.join(repo, "snapshots")) if _COMMIT.fullmatch(c))
    except OSError:
        return []


def is_cached_blob(root: str, path: str) -> bool:
    """Whether `path` (a local file below `root`, a link) is a file of the Hub cache snapshot
    `root` is, or lies in: a link in a folder of the root leading to `<repo>/blobs/<etag>`, a
    file, or through it to the cache's marked shared store, as huggingface_hub writes them."""
    snapshot = snapshot_of(root)
    if snapshot is None or not os.path.islink(path):
        return False
    folder = os.path.realpath(os.path.dirname(path))
    real_root = os.path.realpath(root)
    if not (folder == real_root or folder.startswith(real_root.rstrip(os.sep) + os.sep)):
        return False  # a folder on the way that links elsewhere: the cache writes none
    blobs = os.path.join(snapshot.repo, "blobs")
    blob = _hop(folder, path)
    if blob is None or os.path.dirname(blob) != blobs or not _BLOB.fullmatch(os.path.basename(blob)):
        return False
    end = blob
    if _is_link(blob):
        end = _hop(blobs, blob)
        store = os.path.join(os.path.dirname(snapshot.repo), "blobs")
        name = os.path.basename(end or "")
        if end is None or not _STORE_ENTRY.fullmatch(name) or os.path.dirname(end) != os.path.join(store, name[:2]) \
                or not _marked_store(store):
            return False
    # a blob gone (a cache cleaned by hand) is the reader's `missing` reject, as any dangling link
    return os.path.realpath(path) == end and (_is_file(end) or not os.path.lexists(end))


def _hop(folder: str, link: str) -> str | None:
    """Where one link leads, its text taken from the (real) folder it lies in, normalised."""
    try:
        return os.path.normpath(os.path.join(folder, os.readlink(link)))
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None


def _is_link(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return False


def _is_file(path: str) -> bool:
    """Whether `path` is a plain file (not through a link); a name holding a NUL (a row's
    `@ma%00in` revision, unquoted) names none, never a ValueError that lost the rest of its parquet."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def _marked_store(store: str) -> bool:
    """Whether the cache's shared blob folder carries huggingface_hub's marker (the folder it
    owns; an unmarked `blobs/` there is none of its)."""
    marker = os.path.join(store, SHARED_MARKER)
    if not _is_file(marker):
        return False
    try:
        with open(marker, "rb") as handle:
            return handle.read(len(SHARED_LAYOUT) + 1) == SHARED_LAYOUT.encode()
    except OSError:
        return False


def hf_file(root: str, uri: str) -> str | None:
    """The path under the snapshot folder that `uri` (`hf://datasets/ORG/NAME@REV/path`) names
    when `root` is, or lies in, a cache snapshot of that repo at that revision (no revision:
    `main`; a branch or tag as the cache's `refs/` records it) and the file is there; else None."""
    matched = HF_URI.match(uri)
    snapshot = snapshot_of(root) if matched else None
    if snapshot is None or matched is None:
        return None
    repo_id, revision, inside = matched.groups()
    if repo_id != snapshot.repo_id or _commit_of(snapshot, unquote(revision or "main")) != snapshot.commit:
        return None
    path = os.path.normpath(os.path.join(snapshot.folder, *inside.split("/")))  # (only the revision is quoted)
    if not path.startswith(snapshot.folder + os.sep) or not os.path.lexists(path):
        return None
    # as the root spells it (relative too, as a path-only row's file is): the snapshot folder was
    # found with links resolved
    real_root = os.path.realpath(root)
    if not path.startswith(real_root.rstrip(os.sep) + os.sep):
        return None  # another folder of the snapshot than the root's
    return os.path.join(root, path[len(real_root.rstrip(os.sep)) + 1:])


def _commit_of(snapshot: Snapshot, revision: str) -> str | None:
    """The commit a revision names in the cache: itself when a commit hash, else what the repo's
    `refs/<revision>` holds (huggingface_hub writes one per branch or tag downloaded)."""
    if _COMMIT.fullmatch(revision):
        return revision
    refs = os.path.join(snapshot.repo, "refs")
    ref = os.path.normpath(os.path.join(refs, *revision.split("/")))
    if not ref.startswith(refs + os.sep) or not _is_file(ref):
        return None
    try:
        with open(ref, "rb") as handle:
            text = handle.read(_MAX_REF_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if _COMMIT.fullmatch(text) else None
