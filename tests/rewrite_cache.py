"""Writes pytest's assertion-rewritten bytecode of the test modules once, before `make test`'s workers
start, on every core.

Why: pytest rewrites each test module's asserts at import and caches the result beside it
(`tests/__pycache__/test_x.cpython-311-pytest-V.pyc`), but only where bytecode may be written. Where
the environment sets PYTHONDONTWRITEBYTECODE (this machine's does) nothing is cached, so every
pytest-xdist worker rewrote all ~120 test modules from source: ~9 CPU-s of each worker's ~14 CPU-s
of collection, three times over at the start of every run. pytest reads a cached file whatever
PYTHONDONTWRITEBYTECODE says, checking it against its source's hash: an edited module is rewritten
afresh by pytest, never run stale, and a pytest of another version looks for another name.

Uses pytest's own rewriter (`_pytest.assertion.rewrite`), so the bytes are the ones pytest would
write itself; without the ini `enable_assertion_pass_hook` (this project sets none) its rewrite does
not depend on the config. Usage: `python tests/rewrite_cache.py [FOLDER]` (default: this folder)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def rewritten_pyc(module: Path) -> Path:
    """Where pytest looks for `module`'s rewritten bytecode."""
    from _pytest.assertion.rewrite import PYC_TAIL, get_cache_dir

    return get_cache_dir(module) / (module.name[:-3] + PYC_TAIL)


def write_rewritten(module: Path) -> Path | None:
    """Rewrite `module` as pytest does and write its cache file (atomically, as pytest does);
    None where a cache file for the same source is already there."""
    from _pytest.assertion.rewrite import _read_pyc, _rewrite_test, _write_pyc_fp

    pyc = rewritten_pyc(module)
    if _read_pyc(module, pyc) is not None:
        return None
    source_hash, code = _rewrite_test(module, None)
    pyc.parent.mkdir(exist_ok=True)
    partial = pyc.with_name(f"{pyc.name}.{os.getpid()}")
    with open(partial, "wb") as handle:
        _write_pyc_fp(handle, source_hash, code)
    os.replace(partial, pyc)
    return pyc


def rewritten_modules(folder: Path) -> list[Path]:
    """The modules pytest rewrites in `folder`: its test files (pyproject's default `test_*.py`)
    and its conftest.py."""
    return sorted(folder.glob("test_*.py")) + sorted(folder.glob("conftest.py"))


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent
    modules = rewritten_modules(folder)
    with ProcessPoolExecutor() as pool:
        written = [pyc for pyc in pool.map(write_rewritten, modules, chunksize=4) if pyc is not None]
    print(f"pytest's rewritten test modules: {len(written)} of {len(modules)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
