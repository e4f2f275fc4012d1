"""The paths of a validated config made absolute (`~`, `$VAR` and relative paths taken from the
config file's folder, so a config works from whatever directory it is run) and checked apart:
no output inside a source, no source inside the output."""

from __future__ import annotations

import os
import re
from typing import Any

from uvd_pipeline.config_build import BuildConfig
from uvd_pipeline.config_file import ConfigError
from uvd_pipeline.config_labelers import LabelerParams, MmposeLabeler


WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]|\\\\")  # C:\data, C:/data, \\server\share


def is_url(path: str) -> bool:
    """An fsspec URL (`gs://b/x`, `s3://...`, `file:///x`): a scheme of two letters or more before
    `://`. One letter is a Windows drive (`C://data/out`), which POSIX reads as a relative name."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and len(scheme) > 1


def windows_hint(written: str) -> str | None:
    """What to say of a path written the Windows way, which POSIX reads as a relative name
    (`<config folder>/C:\\data\\imgs`); None for any other."""
    if not WINDOWS_PATH.match(written):
        return None
    return (f"{written!r} looks like a Windows path; this runs on POSIX paths: give the folder as this "
            "machine names it, such as /mnt/c/data under WSL")


def _check_windows_output(written: str, resolved: str) -> None:
    """Refuse `output: C:\\data\\out`, which a build made as a folder of that name beside the config, as
    a missing source `path:` written so is refused; a folder of that very name that exists (an earlier
    build's) is kept, as it is for a source."""
    hint = windows_hint(written)
    if hint and not is_url(resolved) and not os.path.lexists(resolved):
        raise ConfigError(f"output: {hint}")


def _resolve(path: str, base_dir: str, field: str) -> str:
    """A local path with `~` and `$VAR` / `${VAR}` expanded, relative to `base_dir`; a URL as is.
    An unset variable is refused, naming `field`: left in place it named a folder `$HOME`."""
    if is_url(path) or (os.path.isabs(path) and "$" not in path):
        return path  # as written: an absolute path is part of the config hash
    expanded = os.path.expandvars(os.path.expanduser(path))
    unset = re.search(r"\$(\w+|\{[^}]*\})", expanded)
    if unset:
        raise ConfigError(f"{field}: {unset.group(0)} in {path!r} is not set in the environment; set it, or "
                          "write the path out")
    return os.path.normpath(os.path.join(os.path.abspath(base_dir), expanded))  # absolute: fsio lists absolute paths


def _resolve_labeler(labeler: LabelerParams | None, base_dir: str, field: str) -> LabelerParams | None:
    """An mmpose labeler's config and checkpoint files, resolved like every other path of the config."""
    if not isinstance(labeler, MmposeLabeler):
        return labeler
    files = {name: _resolve(getattr(labeler, name), base_dir, f"{field}.{name}") for name in ("config", "checkpoint")
             if getattr(labeler, name) is not None}
    return labeler.model_copy(update=files)


def _resolve_source(source: Any, base_dir: str, field: str) -> Any:
    update = {"path": _resolve(source.path, base_dir, f"{field}.path")}
    if getattr(source, "labeler", None) is not None:
        update["labeler"] = _resolve_labeler(source.labeler, base_dir, f"{field}.labeler")
    return source.with_resolved_path(update)  # the path as written kept aside: in no dump, no hash


def _resolve_paths(config: BuildConfig, base_dir: str) -> BuildConfig:
    sources = tuple(_resolve_source(s, base_dir, f"sources[{i}]") for i, s in enumerate(config.sources))
    tokenizer = config.tokenizer
    if tokenizer.checkpoint != "embedded":
        tokenizer = tokenizer.model_copy(update={"checkpoint": _resolve(tokenizer.checkpoint, base_dir,
                                                                        "tokenizer.checkpoint")})
    output = _resolve(config.output, base_dir, "output")
    _check_windows_output(config.output, output)
    return config.model_copy(update={"output": output, "sources": sources,
                                     "tokenizer": tokenizer})


def _comparable(path: str) -> str:
    """A path with links resolved (local) or a normalised URL, ending in a separator."""
    if is_url(path):
        return path.rstrip("/") + "/"
    return os.path.join(os.path.realpath(path), "")


def _check_output_apart(config: BuildConfig, origin: str) -> None:
    """Refuse an output inside a source (the next build would read this build's files) and a
    source inside the output (a rebuild with --overwrite would delete its own input)."""
    output = _comparable(config.output)
    for index, source in enumerate(config.sources):
        path = _comparable(source.path)
        if output.startswith(path):
            raise ConfigError(f"{origin}: output {config.output!r} lies inside sources[{index}].path "
                              f"{source.path!r}; put the output outside every source folder")
        if path.startswith(output):
            raise ConfigError(f"{origin}: sources[{index}].path {source.path!r} lies inside output "
                              f"{config.output!r}; put the output outside every source folder")
