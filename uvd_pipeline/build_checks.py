"""What a build refuses before any work starts, besides the config and the sources: an output
that cannot be a folder, a runner that does not load, a tokenizer checkpoint that is missing or
cannot tokenize this build. Each names the field to fix, in one line."""

from __future__ import annotations

import os
from typing import Any

from sources import fsio
from uvd_pipeline.build_runner import _dask_runner, check_dask_extra
from uvd_pipeline.config import BuildConfig, ConfigError


def check_output(config: BuildConfig) -> None:
    """The output must be a folder the build can make: an existing file there (or a file where a
    folder above it would go) failed only when the lock was taken, in a traceback."""
    local = fsio.local_path(config.output)
    if local is None:
        return  # an object store makes "folders" under any key
    path = os.path.abspath(local)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.isdir(path):
        if path == os.path.abspath(local):
            _check_a_builds_folder(config.output, path)
        _check_writable(config.output, path)
        return
    what = "is a file" if os.path.isfile(path) else "exists and is not a folder"
    if path == os.path.abspath(local):
        raise ConfigError(f"output: {config.output} {what}; name a folder (it is made when missing), e.g. "
                          f"{config.output}.build")
    raise ConfigError(f"output: {path} {what}, so no folder can be made at {config.output}; name a folder "
                      "elsewhere")


def _check_writable(output: str, folder: str) -> None:
    """The output's nearest existing folder must take the build's files: on a read-only file
    system (or in a folder this user may not write in) `check` said "config OK" and the build was
    refused only when it took the lock. Said as the build's lock said it."""
    if os.access(folder, os.W_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise ConfigError(f"{output}: Read-only file system (EROFS); {folder} is mounted read-only: remount it "
                          "read-write, or name an `output` on a writable file system")
    raise ConfigError(f"{output}: Permission denied (EACCES); this user may not write in {folder}: give this user "
                      "access to it, or name another `output`")


def _build_names() -> frozenset[str]:
    """The names a build (or its run, or its report) writes at the top of its output."""
    from uvd_pipeline.build_record import BUILD_OUTPUT_NAMES
    from uvd_pipeline.mixture import MIXTURE_FILE
    from uvd_pipeline.output_lock import LOCK_FILE, TMP_DIR

    return frozenset({*BUILD_OUTPUT_NAMES, MIXTURE_FILE, LOCK_FILE, TMP_DIR, "report.html", "report.json"})


# what may lie in a build's folder before its first build: a fresh volume's `lost+found`, the log
# a shell redirects into it before the build starts (`uvd build c.yaml > OUT/build.log`), the config
OWN_FOLDER_NAMES = ("lost+found",)
OWN_FOLDER_SUFFIXES = (".log", ".yaml", ".yml")


def _beside_a_build(name: str) -> bool:
    """Whether `name` may lie in an output folder before its first build: hidden (`.DS_Store`,
    `.git`), `OWN_FOLDER_NAMES`/`_SUFFIXES`, or a temporary of an interrupted write (a first build
    killed writing `build.json`: the rerun removes it after this check)."""
    from tokenizer.atomic import is_temporary

    return (name.startswith(".") or name in OWN_FOLDER_NAMES or name.lower().endswith(OWN_FOLDER_SUFFIXES)
            or is_temporary(name))


def _check_a_builds_folder(output: str, path: str) -> None:
    """An existing output must be empty or a build's: one holding other files and nothing a build
    writes (a home folder, a dataset, a mistyped path that exists) was built into without a word,
    the build's folders beside the user's files (`_beside_a_build` names count as none)."""
    try:
        names = sorted(name for name in os.listdir(path) if not _beside_a_build(name))
    except OSError:
        return  # the lock says what this user may not do there
    if not names or not _build_names().isdisjoint(names):
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ConfigError(f"output: {output} holds {len(names)} files or folders ({shown}) and no build (no "
                      "build.json, rendered/ or _units/); name a new or empty folder for the build, e.g. "
                      f"{output.rstrip('/')}/uvd")


def check_runner(config: BuildConfig) -> list[str]:
    """The runner class must load before anything is written: a runner given by its full dotted path,
    or a Beam runner whose extra is missing (DataflowRunner without apache-beam[gcp]), failed only
    when the pipeline started, with the output already prepared. So did a Dask scheduler address
    where none answers (`dask_cluster.check_address`). Returns what `check` says of the runner's
    options without refusing them (`_check_runner_options`)."""
    beam = config.beam
    if beam.is_dask:  # ours (`make_runner`): the dask extra is checked there, before any cluster starts
        if beam.dask_settings.address:
            _dask_runner(beam.dask_settings.groupings)  # the extra, before its scheduler is asked
            from uvd_pipeline.dask_cluster import check_address

            check_address(beam.dask_settings.address)
        return []
    if beam.local:
        return []  # ours (`make_runner`)
    from uvd_pipeline.config import RUNNER_NAMES

    path = RUNNER_NAMES.get(beam.runner, beam.runner)
    module_name, _, class_name = path.rpartition(".")
    try:
        import importlib

        runner = getattr(importlib.import_module(module_name), class_name)
    except AttributeError:
        raise ConfigError(f"beam.runner: {module_name} has no {class_name}; name a runner class by its full "
                          "dotted path (module.Class)") from None
    except Exception as exc:  # ImportError (a missing extra, a misspelt module), or the module's own failure
        raise ConfigError(f"beam.runner: {path} cannot be loaded ({type(exc).__name__}: {exc}); install what it "
                          "needs (DataflowRunner: apache-beam[gcp]) or correct the name") from None
    from apache_beam.runners.runner import PipelineRunner

    if not (isinstance(runner, type) and issubclass(runner, PipelineRunner)):
        raise ConfigError(f"beam.runner: {path} is not a Beam runner (a PipelineRunner subclass)")
    return _check_runner_options(config, runner)


STORAGE_FLAGS = ("temp_location", "staging_location")
# what Beam's validator is shown in place of absent storage flags: a valid gs:// path it never reaches
PLACEHOLDER_TEMP = "gs://uvd-check-placeholder/tmp"


def _can_make_default_bucket() -> bool:
    """Whether Beam could make Dataflow's default bucket: its GCS client imports (apache-beam[gcp]);
    without it Beam's validator reports the storage flags missing. An import, no request."""
    import importlib

    try:
        importlib.import_module("apache_beam.io.gcp.gcsio")
    except ImportError:
        return False
    return True


def _check_runner_options(config: BuildConfig, runner_class: type) -> list[str]:
    """Beam judges a runner's options (Dataflow's project, region, a gs:// temp_location) when the
    pipeline is made: `build --runner DataflowRunner` without them wrote build.json, then died in
    a 25-line traceback, exit 1. Judged here the same way (`PipelineOptionsValidator`, with the
    runner made as Beam makes one by name), in one line. Without a usable temp or staging
    location Beam's validator makes (or looks up) Dataflow's default bucket, and with one it asks
    the bucket for its soft-delete policy: network calls, one of them creating a bucket, from a
    read-only `check`. So it sees dry_run and a placeholder in their place; a location given but
    no gs:// path is refused in Beam's words, and absence is returned as a notice (refused as Beam
    refuses it where its GCS client is not installed to make the bucket)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from uvd_pipeline.build_runner import pipeline_options

    try:
        runner = runner_class()
    except Exception:  # a runner class that wants arguments: Beam judges it when the pipeline starts
        return []
    options = pipeline_options(config)  # this copy is only judged: the build makes its own
    options.view_as(TestOptions).dry_run = True  # Beam then leaves the buckets' soft-delete policy unasked
    validator = PipelineOptionsValidator(options, runner)
    errors, notices = [], []
    if validator.is_service_runner():
        cloud = options.view_as(GoogleCloudOptions)
        given = {name: getattr(cloud, name, None) for name in STORAGE_FLAGS}
        problems = {name: validator.validate_gcs_path(cloud, name) for name in STORAGE_FLAGS}
        if all(problems.values()):  # Beam would turn to the default bucket over the network
            errors = [e for name, said in problems.items() if given[name] is not None for e in said]
            if not errors and not _can_make_default_bucket():  # Beam says both are missing then
                errors = [e for said in problems.values() for e in said]
            elif not errors:
                notices.append(f"beam.options give no --temp_location or --staging_location: {config.beam.runner} "
                               "makes (or reuses) its default bucket gs://dataflow-staging-<region>-<project number> "
                               "when the build starts (check did not reach Cloud Storage); give "
                               "--beam-option=--temp_location=gs://BUCKET/tmp to choose one")
            cloud.temp_location = PLACEHOLDER_TEMP
    errors += validator.validate()
    if errors:
        said = "; ".join(" ".join(error.split()).rstrip(".") for error in errors)
        raise ConfigError(f"beam.options: {config.beam.runner} refuses them: {said}; give each as "
                          "--beam-option=--NAME=VALUE or in beam.options")
    return notices


def check_before_build(config: BuildConfig) -> list[str]:
    """What `check` and `build` refuse before any work, besides the sources (`list_units`) and
    the tokenizer: where the output goes and which runner runs it. Returns the runner's notices
    (`check` shows them; a build's runner acts on them itself)."""
    check_output(config)
    notices = check_flags(config)
    return check_runner(config) + notices


def check_flags(config: BuildConfig) -> list[str]:
    """Options whose flag Beam's option classes do not define (`--runne=DataflowRunner`): refused
    for a runner that drops them (`drops_unknown_flags`: the local runner, Dask's, by name or path), a note for
    one close to a known flag elsewhere (a cluster runner takes its job server's own flags). Here,
    not in the config's check, since it imports Beam (a second), as the build does anyway."""
    if not config.beam.options:
        return []
    from uvd_pipeline.config_beam import (beam_flag_names, drops_unknown_flags, typo_of, unknown_flag_problem,
                                          unknown_flags)

    runner = config.beam.runner
    unknown = unknown_flags(config.beam.options)
    if unknown and config.beam.is_dask:  # without the extra Dask's own flags are unknown too: say what is missing
        check_dask_extra()
    if unknown and drops_unknown_flags(runner):
        raise ConfigError(f"beam.options: {unknown_flag_problem(*unknown[0], runner)}")
    known = sorted(beam_flag_names())
    return [f"beam.options: {unknown_flag_problem(flag, guess, runner)}" for flag, guess in unknown
            if guess and typo_of(flag.split("=", 1)[0], known)]


def check_tokenizer(config: BuildConfig) -> None:
    """The tokenizer checkpoint must load before anything runs (it loads in every worker, after
    all rendering): a missing, damaged or unsafe checkpoint fails here in one line, and so does
    one that loads but cannot tokenize this build (`tokenizer_fits`)."""
    if not config.tokenizer.enabled:
        return
    from uvd_pipeline.tokenize_stage import TokenizeSettings

    path = TokenizeSettings(config.tokenizer.checkpoint).path
    for name in ("config.json",):
        if not fsio.exists(fsio.join(path, name)):
            hint = ("run `make tokenizer` to train the embedded one" if config.tokenizer.checkpoint == "embedded"
                    else "point it at a folder holding config.json and pytorch_model.bin")
            raise ConfigError(f"tokenizer.checkpoint: no {name} in {path}; {hint}, or set tokenizer.enabled: false")
    if "://" in path:
        return  # a remote checkpoint is loaded by the workers that can reach it
    from tokenizer.checkpoint import CheckpointError, load

    try:
        model = load(path)
    except CheckpointError as exc:
        raise ConfigError(f"tokenizer.checkpoint: {exc}") from None
    problem = tokenizer_fits(model.config, config)
    if problem:
        raise ConfigError(f"tokenizer.checkpoint: {path}: {problem}")


def tokenizer_fits(model_config: Any, config: BuildConfig) -> str | None:
    """Why a loaded tokenizer cannot tokenize this build (None when it can): the checks that
    `tokenizer.codec.Tokenizer` and its `encode` make, which otherwise failed in every worker after
    all the rendering. The build renders RGB images of `image.size`."""
    from tokenizer.config import codebook_problem

    if model_config.num_channels != 3:
        return (f"it encodes images of {model_config.num_channels} channels; the build renders RGB images "
                "(3 channels): use a tokenizer trained on RGB")
    if problem := codebook_problem(model_config.num_embeddings):
        return problem
    factor = model_config.downsample_factor
    if config.image.size % factor:
        return (f"it downsamples by {factor}; image.size {config.image.size} is not a multiple of it: set "
                f"image.size to a multiple of {factor}")
    if config.tokenizer.device == "cuda" and config.beam.local:
        import torch

        if not torch.cuda.is_available():
            return "tokenizer.device is cuda, but this machine has no CUDA device: set tokenizer.device: auto or cpu"
    return None
