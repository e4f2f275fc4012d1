"""The config of where and how the Beam job runs (`beam:`, and `beam.dask:` for a Dask cluster):
the runner by name, checked without importing Beam (an option's flag is judged against Beam's own
flags by `build_checks.check_flags`, which does), and the local workers' mode. None of it
shapes the output bytes, so none of it is in the config hash."""

from __future__ import annotations

import difflib
import re
from typing import Literal, Sequence

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from uvd_pipeline.config_base import Strict, _closest


MAX_WORKERS = 1024  # local workers; more is a typo, not a machine
MAX_THREAD_WORKERS = 2  # `beam.direct_running_mode: auto` runs up to this many local workers as threads


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"  # Beam finds it only by this full name
# The runners Beam knows by name (`StandardOptions.ALL_KNOWN_RUNNERS`; a test holds them equal), kept
# here so that validating a config does not import Beam (a second on a small machine).
BEAM_RUNNERS = tuple(f"apache_beam.runners.{path}" for path in (
    "dataflow.dataflow_runner.DataflowRunner", "direct.direct_runner.BundleBasedDirectRunner",
    "direct.direct_runner.DirectRunner", "direct.direct_runner.SwitchingDirectRunner",
    "interactive.interactive_runner.InteractiveRunner", "portability.flink_runner.FlinkRunner",
    "portability.fn_api_runner.FnApiRunner", "portability.kafka_streams_runner.KafkaStreamsRunner",
    "portability.portable_runner.PortableRunner", "portability.prism_runner.PrismRunner",
    "portability.spark_runner.SparkRunner", "test.TestDirectRunner", "test.TestDataflowRunner"))
RUNNER_NAMES = {path.rpartition(".")[2]: path for path in BEAM_RUNNERS}
DOTTED_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"


def runner_flag(flags: Sequence[str]) -> tuple[str, str] | None:
    """Beam's `--runner=X` (or `--runner X`) among pass-through flags, as (the flag as written, X):
    the build takes its runner from `beam.runner` alone (the local runner object, Dask's, or Beam's
    by that name), so this flag went unread and a build meant for Flink ran locally, exit 0. A
    `--runner` word inside another item (`"--region=r --runner=FlinkRunner"`, one shell-quoted
    `--beam-option`, which Beam reads as the region's value) is found too (`packed_flags`)."""
    for index, flag in enumerate(flags):
        words = flag.split()
        for position, word in enumerate(words):
            name, equals, value = word.partition("=")
            if name != "--runner":
                continue
            if equals:
                return flag, value or "NAME"
            if position + 1 < len(words):  # "--runner FlinkRunner" as one item, which Beam drops unparsed
                return flag, words[position + 1]
            if position == 0 and index + 1 < len(flags) and not flags[index + 1].startswith("--"):
                return f"{flag} {flags[index + 1]}", flags[index + 1]
            return flag, "NAME"
    return None


# Beam flags whose value is a command line (SUBPROCESS_SDK's `--environment_config`, run by a shell; a
# PROCESS environment's JSON `{"command": ...}`; `--environment_options=process_command=...`): `--word`s
# inside it are that command's own flags
COMMAND_VALUED_FLAGS = frozenset({"--environment_config", "--environment_options"})


def packed_flags(flag: str) -> list[str]:
    """The words of one option item, after its first, that are flags Beam's parser knows: more flags
    written in the same item (`"--project=p --region=r"`), which Beam's parser reads as the first
    flag's value (its project `p --region=r`, no region). Other `--` words are a value's own (a JVM
    property `--add-opens=...`), and in a flag whose value is a command (`COMMAND_VALUED_FLAGS`)
    every word is. Beam is imported only when an item holds such a word at all."""
    words = flag.split()
    if not words or words[0].split("=", 1)[0] in COMMAND_VALUED_FLAGS:
        return []
    candidates = [word for word in words[1:] if word.startswith("--")]
    if not candidates:
        return []
    known = beam_flag_names()
    return [word for word in candidates if word.split("=", 1)[0] in known]


# modules of Beam's runners that define an options class of their own (outside pipeline_options):
# Beam registers it when the runner is imported, which a build for that runner does
RUNNER_OPTION_MODULES = ("apache_beam.runners.dask.dask_runner", "apache_beam.runners.render")


def beam_flag_names() -> frozenset[str]:
    """Every flag Beam's `PipelineOptions` parses: the option strings of its registered option
    classes' arguments, gathered as `PipelineOptions.get_all_options` gathers them, with the option
    classes of the runners' own modules (`RUNNER_OPTION_MODULES`: Dask's `--dask_*`) registered first."""
    global _BEAM_FLAG_NAMES
    if _BEAM_FLAG_NAMES is None:
        import importlib

        from uvd_pipeline.beam_import import import_beam

        import_beam()  # without the connectors, and their 'apitools not found' warning
        for module in RUNNER_OPTION_MODULES:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 its runner's extra (dask) is missing or broken (an ImportError, or a
                pass  # version mismatch's AttributeError): no build runs on it here, and its flags are unknown
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

        parser = _BeamArgumentParser(allow_abbrev=False)
        classes = {str(cls): cls for cls in reversed(PipelineOptions.__subclasses__())}
        for cls in classes.values():
            cls._add_argparse_args(parser)
        _BEAM_FLAG_NAMES = frozenset(name for name in parser._option_string_actions if name.startswith("--"))
    return _BEAM_FLAG_NAMES


_BEAM_FLAG_NAMES: frozenset[str] | None = None


# runners that read the options with Beam's own parser alone, which sets a flag it does not know aside
# (a "Discarding unparseable args" warning line) and runs without it. Every other runner keeps or passes
# on such a flag: PortableRunner (Flink's, Spark's) adds its job server's flags to the parser when it runs
# (`--checkpointing_interval`, `--object_reuse`), an uber jar, Prism and Dataflow forward unknown flags.
# InteractiveRunner runs on DirectRunner unless given another (Beam makes it by name with none).
FLAG_DROPPING_RUNNERS = frozenset({"DirectRunner", "dask", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                                   "FnApiRunner", "TestDirectRunner", "InteractiveRunner"})


def drops_unknown_flags(runner: str) -> bool:
    """Whether `runner` (as `beam.runner` holds it) reads the options with Beam's parser alone: a name
    of `FLAG_DROPPING_RUNNERS`, or a dotted path whose class is, or subclasses, one of theirs (Beam's
    DirectRunner by its path `apache_beam.runners.direct.DirectRunner` got a cluster runner's note and
    the build ran without the flag, exit 0). A path that does not load is `check_runner`'s to refuse."""
    if runner in FLAG_DROPPING_RUNNERS:
        return True
    if runner in RUNNER_NAMES or not re.match(DOTTED_PATH, runner):
        return False
    paths = [RUNNER_NAMES[name] for name in sorted(FLAG_DROPPING_RUNNERS) if name in RUNNER_NAMES]
    if runner in paths:  # InteractiveRunner's module needs pandas: known without loading it
        return True
    runner_class = _loaded_class(runner)
    if not isinstance(runner_class, type):
        return False
    dropping = tuple(cls for cls in map(_loaded_class, paths) if isinstance(cls, type))
    return issubclass(runner_class, dropping)


def _loaded_class(path: str) -> object | None:
    """The object a dotted path names, None where its module does not load or lacks it."""
    import importlib

    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except Exception:  # noqa: BLE001 a missing extra or a misspelt module: check_runner says which
        return None


def unknown_flags(flags: Sequence[str]) -> list[tuple[str, str | None]]:
    """Each option whose flag no option class of Beam defines, with the closest flag Beam knows (None
    when none is close). Imports Beam: called by the checks before a build, not by the config's."""
    known = beam_flag_names()
    names = sorted(known)
    return [(flag, _closest(flag.split("=", 1)[0], names)) for flag in flags if flag.split("=", 1)[0] not in known]


def typo_of(name: str, known: Sequence[str]) -> str | None:
    """The known flag `name` is a slip of, by a stricter measure than a refusal's hint: a note on a
    cluster runner's flag must not name `--project` for Flink's `--object_reuse` (0.6 alike)."""
    found = difflib.get_close_matches(name, known, n=1, cutoff=TYPO_CUTOFF)
    return found[0] if found else None


TYPO_CUTOFF = 0.85  # --flink_mastr / --flink_master 0.96, --object_reuse / --project 0.61


def unknown_flag_problem(flag: str, guess: str | None, runner: str) -> str:
    """What is said of an option whose flag Beam's option classes do not define: a refusal for a runner
    that drops it (`drops_unknown_flags`: `--runne=DataflowRunner`: the build ran locally, exit 0), a note for
    any other, which is given the flag as written (a job server's flag, or a typo of Beam's)."""
    name = flag.split("=", 1)[0]
    hint = f"did you mean {guess}?" if guess else "no flag Beam knows is close"
    if guess == "--runner":
        hint += " name the runner as beam.runner, with runner: NAME in the beam section or build --runner NAME"
    if drops_unknown_flags(runner):
        return (f"{flag!r}: Beam knows no flag {name} ({hint}); {runner} parses the options with Beam's own "
                "parser, which sets a flag it does not know aside (a warning line in the log), and the build would "
                "run without it")
    return (f"{flag!r}: Beam's own option classes define no flag {name} ({hint}); {runner} is given it as written, "
            "for its job server or its own options to take")


def runner_name(value: str) -> str | None:
    """The runner Beam would pick for `value` by name, as its class name (Beam ignores case and
    lets the "Runner" suffix go: `direct`, `flinkrunner`); None for a name Beam does not know."""
    by_lower = {name.lower(): name for name in RUNNER_NAMES}
    return by_lower.get(value.lower(), by_lower.get(value.lower() + "runner"))


MEMORY_PATTERN = r"^(auto|0|\d+(\.\d+)?\s*([kKMGT]i?B|B)?)$"
# Default partitions of a Dask grouping: each costs n x n split tasks (64: 4096, a scheduler round
# trip each), while a local cluster past 64 threads has more threads than one machine has cores.
MAX_DEFAULT_GROUPINGS = 64


class DaskConfig(Strict):
    """Where `beam.runner: dask` runs: an existing scheduler, or a cluster of local worker processes
    that the build starts and stops (the worker settings are for that local cluster only)."""

    address: str | None = Field(None, description="scheduler address, e.g. tcp://10.0.0.5:8786; "
                                "none: start a local cluster for this build")
    workers: StrictInt = Field(2, ge=1, le=256, description="worker processes of the local cluster")
    threads_per_worker: StrictInt = Field(1, ge=1, le=64, description="threads per local worker process")
    memory_limit: str = Field("auto", description="per local worker, e.g. 4GiB; auto: the machine's memory "
                              "shared out; 0: no limit")
    partition_size: StrictInt = Field(1, ge=1, description="work units per Dask partition (one task per "
                                "partition and step: small partitions spread the work over workers)")
    shuffle_partitions: StrictInt | None = Field(None, ge=1, le=4096, description="partitions of every grouping "
                                           "(at least the cluster's worker threads, so each step's work spreads; each "
                                           "costs tasks); none: the local cluster's threads up to 64, 8 on a given "
                                           "scheduler")

    @property
    def groupings(self) -> int:
        """Partitions of every grouping. The local cluster's threads by default: a grouping of n
        partitions is n x n split tasks, and 8 on a 2-thread cluster made 272 of a 300-image
        build's 583 tasks, each a scheduler round trip; a given scheduler's threads are not
        known before it runs, so 8 there. At most `MAX_DEFAULT_GROUPINGS`: 256 workers x 64 threads
        made 16,384 partitions, past the field's own limit of 4096, and 16,384^2 split tasks."""
        if self.shuffle_partitions is not None:
            return self.shuffle_partitions
        return 8 if self.address else min(self.workers * self.threads_per_worker, MAX_DEFAULT_GROUPINGS)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^([a-z]+://)?[^\s:/]+:\d+$", value):
            raise ValueError(f"a scheduler address is [tcp://]host:port, got {value!r}")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.match(MEMORY_PATTERN, value.strip()):
            raise ValueError(f"memory_limit is a size like 4GiB or 512MB, 'auto' or 0, got {value!r}")
        return value.strip()


class BeamConfig(Strict):
    runner: str = Field("DirectRunner", description="DirectRunner (local processes), dask, any Beam runner by "
                        "name (DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...), or a runner class "
                        "by its full dotted path")
    dask: DaskConfig | None = Field(None, description="with runner: dask (default: a 2-worker local cluster)")
    direct_num_workers: StrictInt = Field(2, ge=1, le=MAX_WORKERS, description="local workers (DirectRunner)")
    direct_running_mode: Literal["auto", "in_memory", "multi_threading", "multi_processing"] = Field(
        "auto", description="local workers as threads of this process or as processes; auto: in_memory for 1 "
        f"worker, multi_threading up to {MAX_THREAD_WORKERS}, multi_processing beyond (see `running_mode`)")
    early_render: StrictBool = Field(True, description="with the local workers as threads (multi_threading): render "
                               "input units in a pool that starts before Beam does; same output bytes "
                               "(see uvd_pipeline.early_render)")
    early_render_in: Literal["auto", "threads"] = Field(
        "auto", description="where the early render pool renders; auto: in forked processes (no render "
        "waits for Python's lock beside the build's own Python work) where the platform forks (Linux) "
        "and the build's process runs no other thread yet, else in threads")
    options: tuple[str, ...] = Field((), description="pass-through Beam flags, e.g. --project=...")

    @property
    def local(self) -> bool:
        return self.runner == "DirectRunner"

    @property
    def running_mode(self) -> str:
        """The local runner's mode, `auto` resolved. Worker processes cost a fixed ~1 s a build on 2
        cores (each imports Beam and our modules, then is stopped): a 12-image build took 2.6-2.9 s
        in processes, 1.6-1.7 s as threads, 900 JPEGs 7.0-8.1 s against 6.2-6.7 (same bytes). Threads
        share one GIL, which rendering holds for about a tenth of its time (py-spy --gil: 0.7 of ~7
        worker-seconds), so a few threads lose little to it and many would queue on it: processes
        beyond `MAX_THREAD_WORKERS`."""
        if self.direct_running_mode != "auto":
            return self.direct_running_mode
        if self.direct_num_workers == 1:
            return "in_memory"
        return "multi_threading" if self.direct_num_workers <= MAX_THREAD_WORKERS else "multi_processing"

    @property
    def is_dask(self) -> bool:
        return self.runner == "dask"

    @property
    def dask_settings(self) -> DaskConfig:
        return self.dask or DaskConfig()

    @field_validator("runner")
    @classmethod
    def _known_runner(cls, value: str) -> str:
        """A runner Beam knows by name (written as its class name), `dask`, or a runner class by its
        full dotted path (loaded by `build.check_runner` before the build starts). A misspelt name
        would fail only once the output was prepared."""
        if value in ("DaskRunner", DASK_RUNNER):
            raise ValueError("write runner: dask (the build passes Beam's DaskRunner by its full name)")
        if value == "dask" or re.match(DOTTED_PATH, value):
            return value
        known = runner_name(value)
        if known is None:
            guess = _closest(value, ["dask", *RUNNER_NAMES])
            raise ValueError(
                f"unknown runner {value!r}; " + (f"did you mean {guess}? " if guess else "") +
                "the runners known by name are DirectRunner, dask, "
                f"{', '.join(name for name in RUNNER_NAMES if name != 'DirectRunner')}; any other Beam runner is "
                "accepted by its full dotted class path (module.Class, e.g. my_company.beam.CustomRunner)")
        return known

    @model_validator(mode="after")
    def _dask_section(self) -> "BeamConfig":
        if self.dask is not None and not self.is_dask:
            raise ValueError(f"dask: is read only with runner: dask (runner is {self.runner!r}); remove it or set "
                             "runner: dask")
        return self

    @field_validator("options")
    @classmethod
    def _flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        runner = runner_flag(value)
        if runner is not None:
            written, name = runner
            raise ValueError(f"{written}: name the runner as beam.runner (runner: {name} in the beam section, or "
                             f"build --runner {name} / --set beam.runner={name}), not as a Beam flag: the build "
                             "picks its runner from beam.runner alone")
        for flag in value:
            if not flag.startswith("--"):
                raise ValueError(f"each option must be a --flag[=value], got {flag!r}")
            packed = packed_flags(flag)
            if packed:
                first = flag.split()[0]
                raise ValueError(f"{flag!r}: {len(packed) + 1} flags in one option ({first!r}, then "
                                 f"{', '.join(repr(word) for word in packed)}): Beam reads the rest as the first "
                                 "one's value and never sees them; give one flag per option (one list item or one "
                                 "--beam-option each)")
            name = flag.split("=", 1)[0]
            if re.search(r"\s", name):  # Beam's parser takes the item whole, finds no such flag and drops it
                fixed = "=".join(name.split(None, 1)) + flag[len(name):]
                raise ValueError(f"{flag!r}: a flag and its value apart by a space in one option are read by Beam as "
                                 f"no flag at all and dropped in silence; write {fixed!r}")
            if flag.split("=", 1)[0] == "--dask_client_address":  # Beam's own flag: the build never saw it
                raise ValueError(f"{flag}: give the scheduler as beam.dask.address (with runner: dask), not as Beam's "
                                 "flag: the build then checks that it answers and that its workers run this project's "
                                 "code, and starts no local cluster beside it")
        return value
