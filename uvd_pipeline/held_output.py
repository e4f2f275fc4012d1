"""Which live build holds the output a path lies in: a command given a file of a build still being
written (a token shard renamed into place before its stats file, its commit mark) says the build is
unfinished, as `verify` does (exit 3), not that the file is damaged (exit 1)."""

from __future__ import annotations

import os


def holding_build(path: str) -> tuple[str, str] | None:
    """(output, its holder described) for the build output `path` lies in (the nearest folder above
    it with a `build.json`), when a build not known to be gone holds its lock; else None."""
    from uvd_pipeline.build_record import BUILD_FILE
    from uvd_pipeline.output_lock import read_holder

    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isfile(os.path.join(folder, BUILD_FILE)):
        if os.path.dirname(folder) == folder:
            return None
        folder = os.path.dirname(folder)
    holder = read_holder(folder)
    if holder is None or holder.is_alive() is False:  # gone: what it left is judged as it is
        return None
    return folder, holder.describe()
