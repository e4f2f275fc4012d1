"""`python -m uvd_pipeline verify OUT [--quick]`: check a whole build output against its stats.

Every committed file (rendered tars and their rejects/fingerprints files, token shards) is checked
against the size and sha256 its stats file recorded (`--quick`: sizes only, no file is read);
unreadable stats files and an unreadable `build.json`/`summary.json` count as damaged too, and so
do unit store files (`OUT/_units/`) that differ from their commit marks (the next build renders
such a unit again). Each
damaged file is printed with what is wrong, then one summary line; the exit code is 0 when the
output is intact and 1 when something is damaged. A resumed `build --verify` rebuilds the damaged
shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from sources import fsio
from uvd_pipeline.integrity import Recorded, check_file, rendered_files, token_file
from uvd_pipeline.unit_store import check_unit, unit_marks


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

    @property
    def intact(self) -> bool:
        return not self.damaged

    def summary_line(self) -> str:
        checked = "sizes and sha256" if self.full else "sizes only (--quick)"
        counts = (f"{self.rendered_shards} rendered shards, {self.token_shards} token shards and "
                  f"{self.units} stored units ({self.files} files, {checked})")
        if self.intact:
            return f"{self.output}: intact: {counts}"
        return f"{self.output}: DAMAGED: {len(self.damaged)} damaged files in {counts}"


def _json(uri: str) -> Any:
    data = json.loads(fsio.read_bytes(uri))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def verify_output(output: str, quick: bool = False,
                  on_damage: Callable[[str, str], None] | None = None) -> VerifyResult:
    """Check every committed file of `output`; `on_damage(file, why)` is told of each damaged one."""
    from uvd_pipeline.build import BUILD_FILE
    from uvd_pipeline.summary import SUMMARY_FILE
    from uvd_pipeline.output_lock import read_holder
    from uvd_pipeline.rendered_shards import stats_files
    from uvd_pipeline.tokenize_stage import token_stats_files

    if not fsio.exists(fsio.join(output, BUILD_FILE)):
        raise FileNotFoundError(f"{output} is not a build output (it has no {BUILD_FILE})")
    result = VerifyResult(output, full=not quick)
    holder = read_holder(output)
    result.holder = holder.describe() if holder else None

    def damaged(uri: str, why: str) -> None:
        result.damaged.append((uri, why))
        if on_damage is not None:
            on_damage(uri, why)

    def check(recorded: Recorded) -> None:
        result.files += 1
        why = check_file(recorded, full=not quick)
        if why:
            damaged(recorded.uri, why)

    for name in (BUILD_FILE, SUMMARY_FILE):
        uri = fsio.join(output, name)
        if fsio.exists(uri):
            result.files += 1
            try:
                _json(uri)
            except ValueError as exc:
                damaged(uri, f"unreadable JSON ({exc})"[:200])
    for listing, kind in ((stats_files(output), "rendered"), (token_stats_files(output), "token")):
        for uri in listing:
            result.files += 1
            try:
                stats = _json(uri)
                files = rendered_files(uri, stats) if kind == "rendered" else [token_file(uri, stats)]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                damaged(uri, f"unreadable stats ({type(exc).__name__}: {exc})"[:200])
                continue
            if kind == "rendered":
                result.rendered_shards += 1
            else:
                result.token_shards += 1
            for recorded in files:
                check(recorded)
    for uri in unit_marks(output):
        result.files += 1
        result.units += 1
        why = check_unit(output, uri, full=not quick)
        if why:
            damaged(uri, why)
    return result


def main(output: str, quick: bool = False) -> int:
    """Print each damaged file and a summary line; 0 if intact, 1 if damaged."""
    result = verify_output(output, quick, on_damage=lambda uri, why: print(f"damaged: {uri}: {why}", flush=True))
    if result.holder:
        print(f"note: a build holds this output ({result.holder}); shards it is writing are not committed yet "
              "and were not checked")
    print(result.summary_line())
    if not result.intact:
        print("a resumed build with --verify rebuilds the damaged shards: python -m uvd_pipeline build CONFIG --verify")
    return 0 if result.intact else 1
