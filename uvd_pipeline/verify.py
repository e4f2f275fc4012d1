"""`python -m uvd_pipeline verify OUT [--quick]`: check a whole build output against its stats.

Every committed file (rendered tars and their rejects/fingerprints files, token shards) is checked
against the size and sha256 its stats file recorded (`--quick`: sizes only, no file is read);
unreadable stats files and an unreadable `build.json`/`summary.json` count as damaged too (and a
`build.json` whose config does not give the config hash it records: `build_record.record_problem`), and so
do files and folders the system refuses to read (no permission, a failing disk: named with its
reason; one refusal does not end the check) and unit store files (`OUT/_units/`) that differ from
their commit marks, or whose mark is gone (the next build renders such a unit again). The shard folders are held to
`summary.json` and the stats files both: a shard `summary.json` lists whose stats file (its commit
mark) is gone, and any file in `rendered/` or `tokens/` that no stats file names (a stray tar
beside the committed ones, a folder no build wrote: a glob reader would take them) are damage too;
these two need a finished build, so they are left out while a build holds the output; so is
`summary.json` itself held to the stats (`summary_checks`: its counts, every committed shard of its
config listed, and no token shard of another config or of no rendered shard in `tokens/`, nor one
made from an earlier tar of its rendered shard: stale), as are its `sources.X.type` and `resize` to
`build.json` and its `run` section to itself, and each listed shard's input digest (`_inputs/`) to
the unit store's commit marks (`record_checks`). Each damaged
file is printed with what is wrong, then one summary line; the exit code is 0 when the output is
intact and its build finished, 1 when something is damaged, and `UNFINISHED` (3) when what is
committed is intact but the build did not finish (no `summary.json`: killed or failed mid-build;
or a build holds the output): shards exist, yet not all of them, so `verify OUT && upload` must
not go on. A resumed `build --verify` rebuilds the damaged shards; the same build command
finishes an unfinished one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sources import fsio
from tokenizer.progress import Progress
from uvd_pipeline.integrity import EMPTY_SHA256, SHA_DIFFERS, Recorded, check_file, named_files, rendered_files, token_file
from uvd_pipeline.shards import NotFound
from uvd_pipeline.shown import shown
from uvd_pipeline.state_files import StateFileRefused, read_state_json
from uvd_pipeline.unit_store import check_unit, store_listing


@dataclass
class VerifyResult:
    output: str
    full: bool
    rendered_shards: int = 0
    token_shards: int = 0
    units: int = 0
    files: int = 0
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (file, what is wrong)
    holder: str | None = None  # the build holding the output's lock, if any
    holder_gone: bool = False  # that build's process is known to be gone (killed or crashed on this host)
    lock_unreadable: str | None = None  # a lock file that names nobody (empty: a build starting, or killed doing so)
    lock_starting: bool = False  # that lock file is young enough that a build may be writing it: held, as `build` says
    finished: bool = True  # summary.json is there: the last build finished (`build.unfinish`)
    stats: list[str] = field(default_factory=list)  # the rendered shards' stats files found (the report's listing)

    @property
    def intact(self) -> bool:
        return not self.damaged

    @property
    def unfinished(self) -> bool:
        """The output is not a whole build: its last build did not finish, or a build holds it."""
        return not self.finished or self.holder is not None

    def summary_line(self) -> str:
        checked = "sizes and sha256" if self.full else "sizes only (--quick)"
        counts = (f"{self.rendered_shards} rendered shards, {self.token_shards} token shards and "
                  f"{self.units} stored units ({self.files} files, {checked})")
        if self.intact and self.unfinished:
            return f"{self.output}: UNFINISHED: what is committed is intact, but the build is not whole: {counts}"
        if self.intact:
            return f"{self.output}: intact: {counts}"
        return f"{self.output}: DAMAGED: {len(self.damaged)} damaged files in {counts}"


def _json(uri: str) -> Any:
    data = read_state_json(uri)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


UNFINISHED = 3  # verify's exit code for an intact output whose build did not finish (or is running)


class OutputUnfinished(RuntimeError):
    """An output whose build did not finish (no summary.json) or that a build holds: not damaged,
    not whole; `report` exits `UNFINISHED` as `verify` does, so scripts read both alike."""

STRAY = "not a file of any committed shard (no stats file names it): a stray a glob reader would take"


def _claimed(output: str) -> set[str]:
    """Every file a stats file under `rendered/` or `tokens/` names, the stats files included (for
    callers that have not read them already)."""
    from uvd_pipeline.rendered_shards import stats_files
    from uvd_pipeline.tokenize_stage import token_stats_files

    claimed: set[str] = set()
    for listing, kind in ((stats_files(output), "rendered"), (token_stats_files(output), "token")):
        for uri in listing:
            claimed.add(uri)
            with contextlib.suppress(OSError, ValueError):
                claimed.update(named_files(uri, _json(uri), kind))
    return claimed


def files_below(output: str, folder: str) -> list[str]:
    """Every file below the output's `folder` (a shard folder), in one recursive listing; a sub-folder
    this user may not list is an entry (`fsio.list_files`)."""
    root = fsio.join(output, folder)
    return fsio.list_files(root, recursive=True) if fsio.isdir(root) else []


def stats_among(files: list[str]) -> list[str]:
    """The committed stats files (commit marks) of a `files_below` listing, as `stats_files` and
    `token_stats_files` list them."""
    from uvd_pipeline.rendered_shards import STATS_SUFFIX
    from tokenizer.atomic import is_temporary

    return [f for f in files if f.lower().endswith(STATS_SUFFIX) and not is_temporary(f)]


def unclaimed_files(output: str, claimed: set[str] | None = None, found: list[str] | None = None) -> list[str]:
    """Files in the shard folders (`rendered/`, `tokens/`) that no stats file names: a stray tar
    beside the committed ones, a shard folder no build wrote, the files of a shard whose commit
    mark is gone, a temporary of an interrupted write. Readers that glob the folders would take
    them; `build --verify` removes them (`remove_unclaimed`). `claimed`: every file the stats files
    name, with the stats files, from a caller that has just read them all (each is read again
    otherwise: a request per shard on an object store). `found`: the folders' `files_below`
    listings, from a caller that has just made them (listed again otherwise)."""
    from uvd_pipeline.rendered_shards import RENDERED_DIR
    from uvd_pipeline.shards import TOKENS_DIR

    if claimed is None:
        claimed = _claimed(output)
    if found is None:
        found = [uri for folder in (RENDERED_DIR, TOKENS_DIR) for uri in files_below(output, folder)]
    return sorted(uri for uri in found if uri not in claimed)


def remove_unclaimed(output: str, claimed: set[str] | None = None) -> list[str]:
    """Delete the `unclaimed_files` (`claimed`: as there) and the folders they leave empty;
    returns the files removed. Only while no shard is being written (the build's end, lock held,
    store settled)."""
    from uvd_pipeline.rendered_shards import RENDERED_DIR
    from uvd_pipeline.shards import TOKENS_DIR

    strays = unclaimed_files(output, claimed)
    fs, _ = fsio.filesystem(output)
    for uri in strays:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(fsio.filesystem(uri)[1])
    roots = [root for folder in (RENDERED_DIR, TOKENS_DIR) if (root := fsio.local_path(fsio.join(output, folder)))]
    for uri in strays:  # on a local disk (an object store has no empty folders)
        local = fsio.local_path(uri)
        if local is not None:
            _prune_empty(os.path.dirname(local), roots)
    return strays


def _prune_empty(folder: str, roots: list[str]) -> None:
    """Remove `folder` and then its parents while they are empty, up to (not including) a root."""
    while any(os.path.commonpath([root, folder]) == root != folder for root in roots):
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            return
        folder = os.path.dirname(folder)


def _gone(uri: str) -> bool:
    """Whether `uri` is known not to be there. A file in a local folder this user may not list is
    not known gone (`exists` says False there): its folder is named as unreadable instead."""
    local = fsio.local_path(uri)
    if local is None:
        return not fsio.exists(uri)
    try:
        os.stat(local)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def missing_marks(output: str, summary: Any = None) -> list[tuple[str, str]]:
    """(stats file, why) for each shard `summary.json` lists whose commit mark is gone, and for
    each source with fewer token shards than `summary.json` counts (its shards without one named).
    `summary`: its content, from a caller that has just read it (read here otherwise)."""
    from uvd_pipeline.rendered_shards import RENDERED_DIR, STATS_SUFFIX, TAR_SUFFIX
    from uvd_pipeline.summary import SUMMARY_FILE
    from uvd_pipeline.shards import ARROW_SUFFIX
    from uvd_pipeline.tokenize_stage import token_shard_path

    try:
        summary = _json(fsio.join(output, SUMMARY_FILE)) if summary is None else summary
        listed = [(str(s["source"]), str(s["split"]), str(s["tar"])[: -len(TAR_SUFFIX)]) for s in summary["shards"]]
        tokens = {str(k): int(v["shards"]) for k, v in ((summary.get("tokens") or {}).get("sources") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # no summary (an unfinished first build), or an unreadable one (reported as such)
    missing = []
    for source, split, stem in listed:
        uri = fsio.join(output, RENDERED_DIR, source, split, stem + STATS_SUFFIX)
        if _gone(uri):
            missing.append((uri, f"missing: {SUMMARY_FILE} lists shard {stem}, its stats file (the commit mark) is gone"))
    for source, count in sorted(tokens.items()):
        shards = [(split, stem) for s, split, stem in listed if s == source]
        marks = [token_shard_path(output, source, split, stem)[: -len(ARROW_SUFFIX)] + STATS_SUFFIX for split, stem in shards]
        absent = [uri for uri in marks if _gone(uri)]
        if len(marks) - len(absent) < count:
            missing += [(uri, f"missing: {SUMMARY_FILE} counts {count} token shards of {source}, "
                              f"{len(marks) - len(absent)} have stats") for uri in absent]
    return missing


UNIT_HINT = ("the same build command renders the unit again and commits it (its shards are kept if their input is "
             "the same)")
MERGED_HINT = "run the same build command again: it writes it anew from the committed shards"


def _line_digest(lines: Iterable[bytes]) -> tuple[int, int]:
    """(line count, order-free digest: the sum of the lines' sha256 mod 2**256) of JSONL lines,
    since `rejects.jsonl` holds the shards' lines in another order than the shards do."""
    count = total = 0
    for line in lines:
        if line.strip():
            count += 1
            total = (total + int.from_bytes(hashlib.sha256(line.rstrip(b"\n")).digest(), "big")) % (1 << 256)
    return count, total


def _shard_lines(recorded: Recorded) -> tuple[int, str | None]:
    """(order-free digest of a shard rejects file's lines, what is wrong with it: None, or a sha256
    other than its stats record), from one read: `verify --quick` checked its size alone, and an
    input renamed in it and in `rejects.jsonl` alike passed the report. One its stats record as
    0 bytes (its size checked) holds no line and is not opened."""
    if recorded.bytes == 0:
        return 0, None if recorded.sha256 in (None, EMPTY_SHA256) else SHA_DIFFERS
    sha = hashlib.sha256()

    def hashed(handle: Iterable[bytes]) -> Iterable[bytes]:
        for line in handle:
            sha.update(line)
            yield line

    with fsio.open_file(recorded.uri) as handle:
        digest = _line_digest(hashed(handle))[1]
    return digest, SHA_DIFFERS if recorded.sha256 and sha.hexdigest() != recorded.sha256 else None


def _lines_read(recorded: Recorded, lines: dict[str, int]) -> str | None:
    """A shard rejects file's check past its size, in the one read that also takes its lines'
    digest for `rejects.jsonl`'s check (kept in `lines` when its sha256 is the recorded one): a full
    `verify` read and hashed each one twice, once here and once for `rejects.jsonl`."""
    kind = fsio.special_at(recorded.uri)  # a fifo's size is 0, as an empty file's: never opened
    if kind:
        return f"{kind}, not the file its stats record"
    digest, why = _shard_lines(recorded)
    if why is None:
        lines[recorded.uri] = digest
    return why


def merged_rejects(output: str, summary: dict[str, Any], shard_rejects: dict[str, Recorded | None],
                   full: bool, lines: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """(file, why) for what is wrong with `rejects.jsonl` (none: nothing), held to the rejects files
    of the shards `summary.json` lists (`shard_rejects`: the intact ones' by stats file; None where a
    shard's own files are damaged, reported already). The report reads it (the examples of each
    reason); a trainer's data filter may too. Its size is the sum of theirs (one line each, merged in
    another order); with `full`, its lines are theirs, read and compared order-free, and theirs are
    hashed as they are read (a shard file whose sha256 its stats do not record is named instead).
    `lines`: shard rejects file -> its lines' digest, where the shard's own check read it already
    (and found its sha256 the recorded one): not read again."""
    from uvd_pipeline.rendered_shards import RENDERED_DIR, STATS_SUFFIX, TAR_SUFFIX
    from uvd_pipeline.summary import REJECTS_FILE, SUMMARY_FILE

    uri = fsio.join(output, REJECTS_FILE)

    def mine(why: str) -> list[tuple[str, str]]:
        return [(uri, why)]

    try:
        listed = [fsio.join(output, RENDERED_DIR, str(s["source"]), str(s["split"]),
                            str(s["tar"])[: -len(TAR_SUFFIX)] + STATS_SUFFIX) for s in summary["shards"]]
        counted = int(summary["totals"]["rejects"])
    except (KeyError, TypeError, ValueError):
        return []  # an unreadable summary is reported as such
    files = [shard_rejects.get(stats) for stats in listed]
    if any(f is None or f.bytes is None for f in files) or not shard_rejects.keys() <= set(listed):
        # a shard of the list is damaged or missing (reported), or its stats predate sizes; or the
        # summary lists not every committed shard (another config's, or the report names them)
        return []
    expected = sum(f.bytes for f in files)
    kind = fsio.special_at(uri)  # a fifo's size is 0: say what it is, not that it was cut short
    if kind:
        return mine(f"{kind}, not the file the build wrote; {MERGED_HINT}")
    fs, path = fsio.filesystem(uri)
    if fs.isdir(path):  # its size is the folder's (4096), no file's: not 'cut short'
        return mine(f"a folder, not the file the build wrote: remove it, then {MERGED_HINT}")
    try:
        size = fs.size(path)
    except FileNotFoundError:
        return [] if expected == 0 else mine(f"missing ({SUMMARY_FILE} counts {counted} rejects); {MERGED_HINT}")
    if size != expected:
        return mine(f"{size} bytes, the committed shards' rejects files hold {expected} ({SUMMARY_FILE} counts "
                    f"{counted} rejects): cut short or edited; {MERGED_HINT}")
    if not full:
        return []
    with fsio.open_file(uri) as handle:
        found, digest = _line_digest(handle)
    if found != counted:
        return mine(f"{found} rejects, {SUMMARY_FILE} counts {counted}; {MERGED_HINT}")
    wanted = 0
    changed = []
    for f in files:
        digest_of, why = (lines[f.uri], None) if lines and f.uri in lines else _shard_lines(f)
        wanted = (wanted + digest_of) % (1 << 256)
        if why:
            changed.append((f.uri, why))
    if changed:  # the shard files are damaged: what rejects.jsonl is held to is not the build's
        return changed
    if digest != wanted:
        return mine(f"its lines differ from the committed shards' rejects files (edited); {MERGED_HINT}")
    return []


def unreadable(refusal: OSError | str) -> str:
    """What is wrong with a file or folder the system refuses to read or list (no permission, a
    failing disk): its reason (the error, or its text as `fsio.unlistable` gives it), and the fix."""
    reason = refusal if isinstance(refusal, str) else refusal.strerror or type(refusal).__name__
    denied = reason in (os.strerror(errno.EACCES), os.strerror(errno.EPERM))
    fix = "give this user access to it (read, and list for a folder)" if denied else \
        "check the disk it is on (dmesg), then verify again"
    return f"cannot be read ({reason}); {fix}"


def _stray(uri: str) -> str:
    """Why a listed entry that no stats file names is damage: a stray, or a sub-folder of a shard
    folder that this user may not list (a listing names it as an entry)."""
    local = fsio.local_path(uri)
    reason = fsio.unlistable(local) if local is not None and os.path.isdir(local) else None
    return unreadable(reason) if reason else STRAY


def _refused(uri: str) -> str | None:
    """Why this user may not read a local file whose size is right (None: it may), asked without
    reading it (`--quick` reads nothing; a mode-000 shard passed it as intact, then stopped the
    trainer or the report)."""
    local = fsio.local_path(uri)
    if local is None or os.access(local, os.R_OK):
        return None
    return unreadable(PermissionError(errno.EACCES, os.strerror(errno.EACCES), local))


def no_output(output: str, why: str) -> NotFound:
    """The error for a command given `output` that is no build output: a path that is not there, or
    is a file, is said to be so (a mistyped folder is not 'a folder without build.json')."""
    local = fsio.local_path(output)
    if local is not None and not os.path.isdir(local):
        what = "is a file" if os.path.exists(local) else "does not exist"
        return NotFound(f"{output} {what}; give a build's output folder (the config's output), or run the "
                        "build first")
    if local is not None and (unreadable := fsio.unlistable(local)):  # its files look absent
        return NotFound(f"{output} cannot be read ({unreadable}); give this user access to it (read and list)")
    return NotFound(f"{output} {why}")


def absolute(output: str) -> str:
    """A local `output` as an absolute path, a URL as it is: a listing names files by absolute
    paths, and a check that held them to names joined from `build/sample` matched none of them
    (an emptied `rejects.jsonl` was intact under a relative path)."""
    return output if "://" in output else os.path.abspath(output)


def verify_output(output: str, quick: bool = False,
                  on_damage: Callable[[str, str], None] | None = None, units: bool = True,
                  mixture: bool = True, progress: Progress | None = None, rejects: bool = False) -> VerifyResult:
    """Check every committed file of `output`; `on_damage(file, why)` is told of each damaged one;
    `progress` counts the shards checked (their stats files: thousands on a big build).
    `rejects`: `rejects.jsonl`'s lines held to the shards' even when `quick` (the report shows
    them: an edit of its size passed a size check and was shown, or stopped it with a traceback).
    `units`: the unit store too (the build's cache: a mark read per input unit; the report, whose
    numbers do not come from it, leaves it out); `mixture`: that `mixture.yaml` is there (the
    trainer's file: the report shows the mix from the summary)."""
    from uvd_pipeline.build import BUILD_FILE
    from uvd_pipeline.build_record import record_problem
    from uvd_pipeline.summary import SUMMARY_FILE
    from uvd_pipeline.output_lock import read_holder, unreadable_lock
    from uvd_pipeline.record_checks import input_digest_problems, summary_field_problem
    from uvd_pipeline.rendered_shards import RENDERED_DIR, REJECTS_SUFFIX
    from uvd_pipeline.shards import TOKENS_DIR
    from uvd_pipeline.summary_checks import SummaryTally
    from uvd_pipeline.unit_relocation import pending_placements
    from uvd_pipeline.unit_store import UNITS_DIR

    if not fsio.exists(fsio.join(output, BUILD_FILE)):
        raise no_output(output, f"is not a build output (it has no {BUILD_FILE})")
    result = VerifyResult(output, full=not quick)  # named as given; its files by where they lie
    output = absolute(output)
    try:
        holder = read_holder(output)
    except OSError:  # one the system refuses is an unreadable lock (below)
        holder = None
    result.holder = holder.describe() if holder else None
    result.holder_gone = holder is not None and holder.is_alive() is False
    lock = unreadable_lock(output) if holder is None else None
    if holder is None and lock is None:  # written between the two reads (a build that just took it)
        with contextlib.suppress(OSError):
            holder = read_holder(output)
            result.holder = holder.describe() if holder else None
            result.holder_gone = holder is not None and holder.is_alive() is False
    if lock is not None:  # `build` waits a young one out (a build is starting) and takes an older one over
        result.lock_unreadable, result.lock_starting = lock.describe(), lock.starting
        if lock.starting:
            result.holder = lock.describe()
    held = result.holder is not None
    result.finished = fsio.exists(fsio.join(output, SUMMARY_FILE))

    named: set[tuple[str, str]] = set()

    def damaged(uri: str, why: str) -> None:
        if (uri, why) in named:  # a folder that refused two listings is named once
            return
        named.add((uri, why))
        result.damaged.append((uri, why))
        if on_damage is not None:
            on_damage(uri, why)

    lines: dict[str, int] = {}  # shard rejects file -> the order-free digest of its lines, from its one read

    def check(recorded: Recorded) -> None:
        result.files += 1
        try:
            if not quick and recorded.uri.endswith(REJECTS_SUFFIX):  # hashed as its lines are read, once
                why = check_file(recorded) or _lines_read(recorded, lines)
            else:
                why = check_file(recorded, full=not quick) or (_refused(recorded.uri) if quick else None)
        except OSError as exc:  # a refusal (mode 000, a failing disk): the other files are checked all the same
            why = unreadable(exc)
        if why:
            damaged(recorded.uri, why)

    def listed(listing: Callable[[str], list[str]], folder: str) -> list[str]:
        """A listing of the output's `folder`; one the system refuses is damage (named by the
        folder it refused), not the end of the check."""
        try:
            return listing(output)
        except OSError as exc:
            damaged(exc.filename or fsio.join(output, folder), unreadable(exc))
            return []

    read: dict[str, Any] = {}  # build.json and summary.json, each read once
    for name in (BUILD_FILE, SUMMARY_FILE):
        uri = fsio.join(output, name)
        if fsio.exists(uri):
            result.files += 1
            try:
                read[name] = _json(uri)
            except StateFileRefused as exc:  # a folder, a fifo in its place: said as what it is, with the fix
                damaged(uri, exc.why)
            except ValueError as exc:
                damaged(uri, f"unreadable JSON ({exc})"[:200])
            except OSError as exc:
                damaged(uri, unreadable(exc))
    build = read.get(BUILD_FILE)
    why = record_problem(build) if build is not None else None
    if why:
        damaged(fsio.join(output, BUILD_FILE), why)
    trusted = build if build is not None and not why else None  # build.json, held to its config hash
    tally = SummaryTally(read.get(SUMMARY_FILE) if not held else None,
                         build.get("config_hash") if build else None)  # the summary held to the stats read below
    claimed: set[str] = set()  # the files the stats files name, for the strays: each is read once
    shard_rejects: dict[str, Recorded | None] = {}  # intact rendered shard's stats file -> its rejects file
    intact_tars: dict[str, str | None] = {}  # committed tar (as placement records name it) -> its sha256
    # each shard folder listed once: its stats files, then (below) the files no stats file names
    found = {folder: listed(lambda out: files_below(out, folder), folder) for folder in (RENDERED_DIR, TOKENS_DIR)}
    result.stats = stats_among(found[RENDERED_DIR])
    token_stats = stats_among(found[TOKENS_DIR])
    tally.rendered_found(result.stats)
    if progress is not None:
        progress.total = len(result.stats) + len(token_stats)
    for listing, kind in ((result.stats, "rendered"), (token_stats, "token")):
        for uri in listing:
            if progress is not None:
                progress.advance()
            result.files += 1
            claimed.add(uri)
            try:
                stats = _json(uri)
                files = rendered_files(uri, stats) if kind == "rendered" else [token_file(uri, stats)]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                damaged(uri, f"unreadable stats ({type(exc).__name__}: {exc})"[:200])
                continue
            except OSError as exc:  # a stats file, or a folder below that cannot be listed (listed as an entry)
                damaged(uri, unreadable(exc))
                continue
            claimed.update(f.uri for f in files)
            if kind == "rendered":
                result.rendered_shards += 1
            else:
                result.token_shards += 1
            damage = len(result.damaged)
            for recorded in files:
                check(recorded)
            if kind == "rendered" and len(result.damaged) == damage:
                intact_tars[placed_name(uri, stats)] = stats.get("tar_sha256")
                shard_rejects[uri] = next((f for f in files if f.uri.endswith(REJECTS_SUFFIX)), None)
            if len(result.damaged) == damage:
                try:
                    tally.add_rendered(uri, stats) if kind == "rendered" else tally.add_token(uri, stats)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    damaged(uri, f"unreadable stats ({type(exc).__name__}: {exc})"[:200])
    if not held:
        strays = unclaimed_files(output, claimed, found[RENDERED_DIR] + found[TOKENS_DIR])
        for uri, why in missing_marks(output, read.get(SUMMARY_FILE, {})) + [(uri, _stray(uri)) for uri in strays]:
            damaged(uri, why)
        for shard, why in tally.foreign + tally.unlisted_damage() + (tally.stale if SUMMARY_FILE in read else []):
            damaged(shard, why)
        if SUMMARY_FILE in read:
            _check_merged(output, read[SUMMARY_FILE], shard_rejects, quick and not rejects, mixture, damaged, lines)
            counted = False  # the summary's counts are the committed shards' own (the counters are held to them)
            if not result.damaged:  # a damaged output's counts are off by its damage, named already
                if why := tally.count_problem():
                    damaged(fsio.join(output, SUMMARY_FILE), why)
                else:
                    counted = True
            if why := summary_field_problem(read[SUMMARY_FILE], trusted, counted):
                damaged(fsio.join(output, SUMMARY_FILE), why)

    unread: set[str] = set()  # sources of a mark or unit folder not read: their store gives no group digest

    def refused(folder: str, exc: OSError) -> None:  # a unit folder of a source
        unread.add(fsio.basename(folder))
        damaged(folder, unreadable(exc))

    placed = functools.cache(lambda: pending_placements(output, intact_tars))
    digests: dict[str, list[tuple[str, str]]] = {}  # source -> (unit id, input digest), each mark read once
    marks, unmarked = (listed(lambda out: store_listing(out, refused), UNITS_DIR) if units else None) or ([], {})
    for mark, files in sorted(unmarked.items()):
        unread.add(fsio.basename(mark.rsplit("/", 1)[0]))  # its source's store gives no whole group digest
        if not held and result.finished:  # a finished build commits each unit it stored (a mark each)
            damaged(mark, f"missing: the unit's commit mark is gone, its {len(files)} stored files are there "
                          f"({', '.join(fsio.basename(f) for f in files)}): the unit is not committed, so the "
                          f"shards' input digests cannot be held to its source's units; {UNIT_HINT}")
    for uri in marks:
        result.files += 1
        result.units += 1
        taken = sum(map(len, digests.values()))
        why = check_unit(output, uri, full=not quick, placed=placed, digests=digests)
        if sum(map(len, digests.values())) == taken:  # a mark damaged or refused: named, its digest unknown
            unread.add(fsio.basename(uri.rsplit("/", 1)[0]))
        if why:
            damaged(uri, why)
    if units and not held and tally.summary is not None and trusted is not None:
        for uri, why in input_digest_problems(output, trusted, tally.listed, digests, unread):  # what a rerun keeps
            damaged(uri, why)
    return result


def _check_merged(output: str, summary: dict[str, Any], shard_rejects: dict[str, Recorded | None], quick: bool,
                  mixture: bool, damaged: Callable[[str, str], None], lines: dict[str, int] | None = None) -> None:
    """The files a finished build writes beside its summary from the shards: `rejects.jsonl`
    (`merged_rejects`; `lines`: as there) and, where the summary records a token mix, the trainer's
    `mixture.yaml`, held to that mix (`record_checks.mixture_problem`: read with `quick` too, a
    small file as the summary is)."""
    from uvd_pipeline.mixture import MIXTURE_FILE
    from uvd_pipeline.record_checks import mixture_problem
    from uvd_pipeline.summary import REJECTS_FILE, SUMMARY_FILE

    uri = fsio.join(output, REJECTS_FILE)
    try:
        problems = merged_rejects(output, summary, shard_rejects, full=not quick, lines=lines)
    except OSError as exc:
        problems = [(uri, unreadable(exc))]
    for file, why in problems:
        damaged(file, why)
    mixture_uri = fsio.join(output, MIXTURE_FILE)
    if not mixture or not summary.get("mixture"):
        return
    if _gone(mixture_uri):
        damaged(mixture_uri, f"missing: {SUMMARY_FILE} records a token mix, the trainer's --data file; {MERGED_HINT}")
    elif why := mixture_problem(mixture_uri, summary["mixture"]):
        damaged(mixture_uri, why)


def placed_name(stats_uri: str, stats: dict[str, Any]) -> str:
    """A rendered shard's tar as placement records name it (`unit_relocation.tar_relative`)."""
    from uvd_pipeline.rendered_shards import RENDERED_DIR

    source, split = stats_uri.rsplit("/", 3)[1:3]
    return "/".join((RENDERED_DIR, source, split, stats["tar"]))


def main(output: str, quick: bool = False) -> int:
    """Print each damaged file and a summary line; 0 if intact and finished, 1 if damaged,
    `UNFINISHED` if intact but its build did not finish (or one holds the output)."""
    result = verify_output(output, quick, on_damage=lambda uri, why: print(shown(f"damaged: {uri}: {why}"), flush=True))
    if result.holder_gone:
        print(shown(f"note: the build that held this output ({result.holder}) is gone: it was killed or crashed "
                    "before it finished. Its uncommitted shards were not checked, nor were the shard folders held to "
                    "summary.json; run the same build command again to finish it (it takes the lock over)"))
    elif result.lock_starting:
        print(shown(f"note: a build may be starting on this output: {result.lock_unreadable}. As while a build "
                    "holds it, the shard folders were not held to summary.json (strays, missing marks); verify again "
                    "when that build is done (if none is starting, once the lock file is past that age)"))
    elif result.holder:
        print(shown(f"note: a build holds this output ({result.holder}); shards it is writing are not committed yet "
                    "and were not checked, nor were the shard folders held to summary.json (strays, missing marks)"))
    elif result.lock_unreadable:
        print(shown(f"note: this output is held by no build: {result.lock_unreadable}"))
    if not result.holder and not result.finished:
        print("note: the last build of this output did not finish (it has no summary.json: it failed or was "
              "stopped); what it committed was checked, the shard folders were not held to a summary; run the "
              "same build command again to finish it")
    print(shown(result.summary_line()))
    if not result.intact:
        print("a resumed build with --verify rebuilds the damaged shards and removes the strays: "
              "python -m uvd_pipeline build CONFIG --verify")
    return 1 if not result.intact else UNFINISHED if result.unfinished else 0
