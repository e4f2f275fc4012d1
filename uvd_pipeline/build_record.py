"""The output's record of the config it was built with (`build.json`), and what a rerun does
with it: the same config resumes, a dataset moved since is the same input, an earlier render
revision or another config is refused unless replaced, and the finished build's files are taken
away before this run changes a shard."""

from __future__ import annotations

import json
import logging
from typing import Any

from sources import fsio
from tokenizer.atomic import write_bytes
from uvd_pipeline import unit_store
from uvd_pipeline.config import FORMAT_VERSION, RENDER_REVISION, RUN_ONLY_FIELDS, BuildConfig, ConfigError
from uvd_pipeline.config_build import saved_config_hash
from uvd_pipeline.rendered_shards import RENDERED_DIR, read_json
from uvd_pipeline.state_files import StateFileRefused
from uvd_pipeline.summary import REJECTS_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)


BUILD_FILE = "build.json"
# what a build writes at the top of its output and `--overwrite` removes (nothing else there)
BUILD_OUTPUT_NAMES = (RENDERED_DIR, "tokens", unit_store.UNITS_DIR, unit_store.SHARD_INPUTS_DIR, SUMMARY_FILE,
                      REJECTS_FILE, BUILD_FILE, "report")


def _same_config(recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a build record's config is `current` but for the output's location (moved or copied)
    and the sources' run-only fields (`RUN_ONLY_FIELDS`: they shape no output, as in the hash)."""
    return isinstance(recorded, dict) and _shaping(recorded) == _shaping(current)


def _shaping(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config less `output` and each source's run-only fields."""
    sources = config.get("sources")
    return {k: v for k, v in config.items() if k != "output"} | ({"sources": [
        {f: v for f, v in s.items() if f not in RUN_ONLY_FIELDS} if isinstance(s, dict) else s for s in sources]}
        if isinstance(sources, list) else {})


def recorded_roots(existing: dict[str, Any]) -> dict[str, str]:
    """Source name -> the root a build record names its units under: the one it was first built
    from (`source_roots`, written once an input moved), else its config's `path`."""
    config = existing.get("config")
    sources = config.get("sources") if isinstance(config, dict) else None
    roots = {s["name"]: s["path"] for s in sources or () if isinstance(s, dict)
             and isinstance(s.get("name"), str) and isinstance(s.get("path"), str)}
    moved = existing.get("source_roots")
    if isinstance(moved, dict):
        roots.update({k: v for k, v in moved.items() if isinstance(k, str) and isinstance(v, str)})
    return roots


def _build_record(output: str) -> dict[str, Any]:
    """The output's `build.json` ({} where there is none or it cannot be read)."""
    try:
        record = read_json(fsio.join(output, BUILD_FILE))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a build record read back (`verify`): its config must give the config
    hash it records, which decides what a rerun keeps (an edited `config.image.size` beside the
    hash left as it was passed as intact). A record of another format or render revision is left
    alone: its hash was taken another way."""
    if record.get("format_version") != FORMAT_VERSION or record.get("render_revision") != RENDER_REVISION:
        return None
    recorded = record.get("config_hash")
    try:
        roots = record.get("source_roots") or {}
        found = saved_config_hash(record["config"], roots)
    except (KeyError, TypeError, AttributeError) as exc:
        return (f"its config is not a build config ({type(exc).__name__}: {exc}) and cannot be held to the config "
                f"hash it records ({recorded}); {RECORD_HINT}")[:400]
    if found == recorded:
        return None
    return (f"its config gives config hash {found}, not the {recorded} it records: edited since the build; "
            f"{RECORD_HINT}")


RECORD_HINT = "run the same build command again: it writes the record anew from its config"


def _nested(one: str, other: str) -> bool:
    """Whether one root lies inside the other (compared as listed names are: `fsio.listed_root`):
    a path beside the new root but under the old one would be taken for the input's own, so such
    a change stays another config (`_refuse_nested_moves` says why)."""
    one, other = (fsio.listed_root(root).rstrip("/") + "/" for root in (one, other))
    return one != other and (one.startswith(other) or other.startswith(one))  # equal: one place spelt two ways


def _paths_moved(config: BuildConfig, existing: dict[str, Any]) -> dict[str, str]:
    """Source name -> the root the output names it under, for each source whose path differs."""
    roots = recorded_roots(existing)
    return {s.name: roots[s.name] for s in config.sources if roots.get(s.name, s.path) != s.path}


def classified_moves(config: BuildConfig, existing: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(moves kept, moves refused) when only sources' paths differ from the build recorded in
    `existing`, each a source name -> the root the output names it under; ({}, {}) when anything
    else differs. A source whose new path lies inside (or around) its old root makes the whole
    change refused (`_nested`); else every move is kept (`moved_inputs`)."""
    moved = _paths_moved(config, existing)
    if not moved or config.with_output_roots(moved).content_hash() != existing.get("config_hash"):
        return {}, {}
    nested = {name: root for name, root in moved.items() if _nested(root, _path_of(config, name))}
    return ({}, nested) if nested else (moved, {})


def _path_of(config: BuildConfig, name: str) -> str:
    return next(s.path for s in config.sources if s.name == name)


def moved_inputs(config: BuildConfig, existing: dict[str, Any]) -> BuildConfig:
    """`config` named after the roots the output was first built from, when only sources' paths
    differ from the build recorded there (the dataset moved: `mv`, a disk mounted elsewhere): the
    output keeps its config hash, its shards and its units, and a unit whose files are unchanged
    where they lie now is not rendered again. Any other difference (or a refused move:
    `classified_moves`) leaves `config` as it is."""
    return _named_after_moves(config, classified_moves(config, existing)[0])


def _named_after_moves(config: BuildConfig, moved: dict[str, str]) -> BuildConfig:
    if not moved:
        return config
    for source in config.sources:
        if source.name in moved:
            log.info("source %s: input moved from %s to %s: units whose files are unchanged are kept",
                     source.name, moved[source.name], source.path)
    return config.with_output_roots(moved)


def read_record(output: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the output's `build.json`, None); (None, None) where there is none; (None, why) where it
    cannot be read or is no build record (cut short, empty, a JSON list): a rerun read it unguarded
    and died in a traceback (JSONDecodeError, AttributeError) even under --overwrite."""
    uri = fsio.join(output, BUILD_FILE)
    fs, path = fsio.filesystem(uri)
    if not fs.exists(path):
        return None, None
    try:
        record = read_json(uri)
    except StateFileRefused as exc:
        return None, f"is {exc.why}"
    except ValueError as exc:
        return None, f"is no JSON (cut short or overwritten: {exc})"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not isinstance(record, dict):
        return None, f"holds a JSON {type(record).__name__}, not a build record"
    return record, None


def unreadable_record(output: str, why: str) -> ConfigError:
    """The refusal of an output whose `build.json` cannot be read (`read_record`): which
    configuration its shards are of is unknown, so they are neither resumed nor replaced unasked."""
    return ConfigError(f"{fsio.join(output, BUILD_FILE)} {why}, so which configuration output {output} holds a "
                       "build of is unknown; pass --replace-changed (or --overwrite) to build it anew, or choose a "
                       "new `output`")


def check_record(config: BuildConfig) -> None:
    """What `build` (without --overwrite or --replace-changed) refuses of the output's build record
    before any work, for `check`: it said "config OK" of an output holding another configuration's
    build, or a damaged record, where the build refused at once."""
    existing, why = read_record(config.output)
    if why is not None:
        raise unreadable_record(config.output, why)
    if existing is not None:
        _judged(config, existing, overwrite=False, replace_changed=False)


def _judged(config: BuildConfig, existing: dict[str, Any], overwrite: bool,
            replace_changed: bool) -> tuple[BuildConfig, dict[str, Any], bool]:
    """(the config the build goes on with, its record, whether the output is replaced) over an
    output whose record is `existing`; ConfigError where it holds another configuration's build
    and neither flag replaces it."""
    moved, refused_moves = classified_moves(config, existing) if not overwrite else ({}, {})
    config = _named_after_moves(config, moved)
    record = _record_of(config)
    changed = existing.get("config_hash") != record["config_hash"]
    if changed and replace_changed:
        log.info("output %s holds another configuration's build: replacing it", config.output)
        overwrite = True
    if changed and not overwrite:
        earlier = existing.get("render_revision", 1)
        if earlier != RENDER_REVISION and _same_config(existing.get("config"), record["config"]):
            raise ConfigError(
                f"output {config.output} holds a build of this configuration by an earlier version of the "
                f"pipeline (render revision {earlier}, now {RENDER_REVISION}), whose renders differ from "
                "this version's; pass --replace-changed to render it again, or choose a new `output`"
            )
        _refuse_nested_moves(config.output, config, refused_moves)
        raise ConfigError(
            f"output {config.output} holds a build of a different configuration "
            f"(config hash {existing.get('config_hash')} vs {record['config_hash']}); "
            "choose a new `output`, or pass --overwrite (or --replace-changed) to replace it"
        )
    return config, record, overwrite


def _record_of(config: BuildConfig) -> dict[str, Any]:
    record = {"format_version": FORMAT_VERSION, "render_revision": RENDER_REVISION,
              "config_hash": config.content_hash(), "config": config.model_dump(mode="json", exclude={"beam": True})}
    if config.output_roots:
        record["source_roots"] = config.output_roots
    return record


def prepare_output(config: BuildConfig, overwrite: bool, replace_changed: bool = False) -> BuildConfig:
    """Make the output ready for this build; returns the config the build goes on with
    (`moved_inputs`)."""
    output = config.output
    fs, root = fsio.filesystem(output)
    existing, why = read_record(output)
    if why is not None:
        if not (overwrite or replace_changed):
            raise unreadable_record(output, why)
        log.warning("output %s: its %s %s: replacing the build there", output, BUILD_FILE, why)
        overwrite = True
    if existing is not None:
        config, record, overwrite = _judged(config, existing, overwrite, replace_changed)
    else:
        record = _record_of(config)
    if overwrite:
        for name in BUILD_OUTPUT_NAMES:
            path = fsio.filesystem(fsio.join(output, name))[1]
            if fs.exists(path):
                fs.rm(path, recursive=True)
    fs.makedirs(root, exist_ok=True)
    write_bytes(fsio.join(output, BUILD_FILE), json.dumps(record, indent=1, sort_keys=True).encode())
    unfinish(output)
    return config


def _refuse_nested_moves(output: str, config: BuildConfig, nested: dict[str, str]) -> None:
    """Refuse, saying why, a config whose only change is a source moved inside (or around) its old
    root (`mkdir old/v1; mv old/* old/v1/`): the generic "another configuration" said nothing of it."""
    if not nested:
        return
    moves = "; ".join(f"source {name}: now {_path_of(config, name)}, built from {root}" for name, root in nested.items())
    raise ConfigError(
        f"output {output} holds this configuration's build with its input at another path, and the new "
        f"path lies inside the old one or around it ({moves}): a file beside the new folder but under "
        "the old one could not be told from the input's own by its name, so the output cannot be kept "
        "as a moved input's; pass --replace-changed to build it again from where the input lies now "
        "(every unit rendered again), or choose a new `output`"
    )


def unfinish(output: str) -> None:
    """Take the finished build's files away before this run changes a shard: `summary.json` (the
    mark of a finished build) first, then `rejects.jsonl` and `mixture.yaml`; the run writes them
    again when it finishes. A rerun over grown input that failed or was killed half-way left the
    earlier run's summary beside its rewritten shards: its totals, shard list and mixture described
    another output, and `verify`, seeing a finished build, called it intact. A folder in the place
    of one stops the build naming it (deleting a folder the build never wrote is not ours to do)."""
    from uvd_pipeline.mixture import MIXTURE_FILE

    places = [(uri, *fsio.filesystem(uri)) for uri in (fsio.join(output, name)
                                                        for name in (SUMMARY_FILE, REJECTS_FILE, MIXTURE_FILE))]
    for uri, fs, path in places:  # all judged before any is taken away: a refusal leaves a finished output finished
        if fs.isdir(path):  # never the build's: someone's folder, not ours to delete
            raise ConfigError(f"output: {uri} is a folder, not the file the build writes "
                              "there; remove it (or move it away), then run the same build command again")
    for uri, fs, path in places:
        if fs.exists(path):
            fs.rm(path)
