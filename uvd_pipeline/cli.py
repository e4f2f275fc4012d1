"""`python -m uvd_pipeline` (or `uvd`): sample, check, build, verify, report, export-jsonl, import-jsonl."""

from __future__ import annotations

import argparse
import atexit
import codecs
import logging
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Iterator, NoReturn

from uvd_pipeline import interrupts, startup_gc
from uvd_pipeline.config import ConfigError, not_utf8
from uvd_pipeline.dask_cluster import SchedulerLost, WorkersKilled
from uvd_pipeline.local_runner import WorkerExited
from uvd_pipeline.interrupts import interruption
from uvd_pipeline.log_filters import LOG_DATEFMT, LOG_FORMAT, BeamRefusalNoise, quiet_handlers
from uvd_pipeline.refusals import refusal
from uvd_pipeline.shards import JsonlError, NotFound, ShardDamaged
from uvd_pipeline.shown import shown

DEFAULT_SAMPLE_DIR = os.path.join("data", "sample")
DEFAULT_SHOWN = " (default: %(default)s)"  # an option's help ends with its default (tests/test_cli_help.py)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
        datefmt=LOG_DATEFMT,
    )
    # Beam's own INFO lines are about its internals; keep ours readable.
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if verbose else logging.ERROR)
    if not verbose:
        # so are a Dask cluster's (its scheduler's and nannies' comings and goings): distributed
        # sets its loggers' levels from its config when imported, here and in the local workers,
        # which inherit the environment
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        quiet_handlers(logging.getLogger().handlers)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.seed < 0:  # numpy's generators refuse it, after seconds of writing, in a traceback
        raise ConfigError(f"--seed {args.seed}: a seed is a whole number >= 0 (default 0; each seed gives its own "
                          "corpus)")
    from uvd_pipeline.sample import write_sample_corpus

    try:
        with terminate_as_interrupt():  # SIGTERM as Ctrl-C: the writing processes killed, the staging folder removed
            path = write_sample_corpus(args.out, seed=args.seed, force=args.force)
    except KeyboardInterrupt as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"\n{how}: no sample corpus written (its unfinished copy is removed); run the same command again",
              file=sys.stderr)
        _flush_and_exit(TERMINATED_EXIT if isinstance(stop, Terminated) else INTERRUPTED_EXIT)
    print(f"sample corpus: {path}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from uvd_pipeline.build import run_build
    from uvd_pipeline.summary import format_summary
    from uvd_pipeline.config import config_summary, load_config

    config = load_config(args.config, build_overrides(args))
    args.out = config.output  # the folder an operating system refusal without a file name is about
    logging.getLogger("uvd").info("build config:\n%s", config_summary(config))
    try:
        with terminate_as_interrupt():
            result = run_build(config, overwrite=args.overwrite, replace_changed=args.replace_changed,
                               retokenize=args.retokenize, verify=args.verify, force_unlock=args.force_unlock)
    except BaseException as error:  # noqa: BLE001 - Ctrl-C may come wrapped by Beam (`interrupts`)
        stop = interruption(error)
        if stop is None:
            raise
        interrupted(_terminated_first(error, stop), config.output)
    print(format_summary(result.summary))
    print(f"summary: {result.summary_path}")
    if args.report:
        from uvd_pipeline.report import write_report

        paths = write_report(config.output)
        print(f"report: {paths['html']}")
    return 0


INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
TERMINATED_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (`docker stop`, Kubernetes, systemd, a scheduler's preemption) raised in the main
    thread: a KeyboardInterrupt, so that every path that lets go of a Ctrl-C'd build (the lock, the
    run's temporaries, the render pool) lets go of a terminated one the same way."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` in the main thread, as SIGINT raises
    KeyboardInterrupt (Python's default for SIGTERM ends the process at once: lock and temporaries
    left behind); each marks the interrupt under way first (`interrupts.mark`: Beam's errors of
    worker threads it leaves behind are kept off the log). Elsewhere than the main thread nothing
    is installed; an ignored SIGINT (`nohup`) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts.begin()

    def terminate(signum, frame) -> NoReturn:
        interrupts.mark()
        raise Terminated()

    def interrupt(signum, frame) -> NoReturn:
        interrupts.mark()
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, terminate)
    ctrl_c = signal.getsignal(signal.SIGINT)
    if ctrl_c is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ctrl_c is signal.default_int_handler:
            signal.signal(signal.SIGINT, ctrl_c)


def _terminated_first(error: BaseException, stop: KeyboardInterrupt) -> KeyboardInterrupt:
    """The SIGTERM (`Terminated`) in `error`'s chain, or the interrupt found (`stop`): SIGTERM then
    SIGINT at once reached the command as the Ctrl-C raised while the SIGTERM unwound, and exited
    130 where thread workers (Beam's re-raise, the SIGTERM first in its chain) exited 143 (rev58f
    L4). A SIGTERM asked the process to end: it is what the exit says."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:  # every link, what each was raised while handling too
        seen.add(id(link))
        if isinstance(link, Terminated):
            return link
        link = link.__cause__ if link.__cause__ is not None else link.__context__
    return stop


def interrupted(stop: BaseException | None = None, output: str | None = None) -> NoReturn:
    """Ctrl-C or SIGTERM: say what is kept and leave at once (130, or 143 for SIGTERM). The output's
    lock is already released (the interrupt came through `run_build`); the local runner's workers
    may be threads of this process, still inside a bundle, beside the runner's gRPC servers:
    waiting for them at interpreter exit would finish their bundles first, and tearing gRPC down
    under them aborts the process. Nothing is lost by not waiting: what they did not commit is
    redone by the next run."""
    how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
    try:
        counts = committed_so_far(output) if output else None
    except KeyboardInterrupt:  # a second Ctrl-C while counting (a slow disk): the line without counts, not
        counts = None  # Beam's tracebacks of the first one and no line at all (rev58f L2)
    kept = f" ({counts[0]} input units, {counts[1]} rendered shards)" if counts else ""
    print(f"\n{how}: the units and shards committed so far are kept{kept}; run the same command again "
          "to finish the build (it redoes only the rest)", file=sys.stderr)
    _flush_and_exit(TERMINATED_EXIT if isinstance(stop, Terminated) else INTERRUPTED_EXIT)


def committed_so_far(output: str) -> tuple[int, int] | None:
    """(input units, rendered shards) committed in a local `output` (this run's and earlier runs'),
    for the interrupted build's last line (a file:// or local:// URL is the local folder it names); None for a
    remote output (no listing over the network after Ctrl-C) or one that cannot be listed."""
    from tokenizer.atomic import is_temporary
    from uvd_pipeline.rendered_shards import RENDERED_DIR, STATS_SUFFIX
    from uvd_pipeline.unit_store import MARK_SUFFIX, UNITS_DIR

    if output.startswith(("file://", "local://")):
        output = output.split("://", 1)[1]
    elif "://" in output:
        return None
    try:
        units = sum(1 for source in os.scandir(os.path.join(output, UNITS_DIR)) if source.is_dir()
                    for entry in os.scandir(source.path)
                    if entry.name.endswith(MARK_SUFFIX) and not is_temporary(entry.name))
    except FileNotFoundError:
        units = 0
    except OSError:
        return None
    shards = sum(1 for _, _, files in os.walk(os.path.join(output, RENDERED_DIR)) for name in files
                 if name.endswith(STATS_SUFFIX) and not is_temporary(name))
    return units, shards


def leave(code: int) -> NoReturn:
    """End the command's process with `code` without the interpreter's teardown: freeing every
    module and object of a process that imported Beam took 0.3 s after a 900-image build had
    finished (10 s in all on 2 cores), with nothing left to do. Everything a command writes is
    committed and flushed before it returns; the `atexit` functions still run (the decode
    workers of `sources.budget` are stopped there). A thread that is not a daemon, if any is
    still running, is waited for the usual way instead."""
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    _flush_and_exit(code)


READER_GONE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def run() -> NoReturn:
    """The `uvd` command and `python -m uvd_pipeline`."""
    startup_gc.pause()  # until a build's run starts, or another command's work (`startup_gc`)
    in_utf8_mode()
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        code = reader_gone()
    leave(code)


def reader_gone() -> int:
    """stdout's reader left (`verify OUT | head -1`, a pager quit): Python raised BrokenPipeError
    with a traceback where a Unix tool just ends. What is left to print goes nowhere; 141, as
    for a tool SIGPIPE ended."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return READER_GONE_EXIT


def in_utf8_mode() -> None:
    """Run this command again in Python's UTF-8 mode (`PYTHONUTF8=1`, inherited by worker
    processes) when this process decodes file names in another charset: a Latin-1 or Latin-9
    locale, or ASCII with UTF-8 mode turned off. There, `os.listdir` and `tarfile` read a name's
    UTF-8 bytes as other characters (keys, digests and lineage text unlike a UTF-8 machine's), and
    a name read from an annotation file (COCO `file_name`) is encoded into other bytes and not
    found, or fails its whole unit. UTF-8 mode reads names as their UTF-8 bytes whatever the
    locale (bytes that are not UTF-8 kept by surrogateescape). Once only: a `-X utf8=0` given
    on the command line wins."""
    if codecs.lookup(sys.getfilesystemencoding()).name == "utf-8" or os.environ.get("PYTHONUTF8") == "1":
        return
    os.environ["PYTHONUTF8"] = "1"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _flush_and_exit(code: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_overrides(args: argparse.Namespace) -> dict:
    """The config fields that `build`'s flags and `--set` options set, validated with the file
    (`load_config`). A field set both ways is refused rather than one silently winning."""
    from uvd_pipeline.config import parse_set_options

    overrides: dict = {}
    if args.output:
        overrides["output"] = os.path.abspath(args.output)
    if args.workers is not None:
        overrides["beam.direct_num_workers"] = args.workers
    if args.beam_option:
        refuse_runner_option(args.beam_option)
        overrides["beam.options"] = lambda options: [*(options or ()), *args.beam_option]
    if args.no_tokenize:
        overrides["tokenizer.enabled"] = False
    if args.tokenizer:
        overrides["tokenizer.checkpoint"] = args.tokenizer if args.tokenizer == "embedded" else os.path.abspath(
            args.tokenizer)
    dotted = parse_set_options(args.set)
    runner = runner_overrides(args.runner) if args.runner else {}
    clash = sorted((overrides.keys() | runner.keys()) & dotted.keys())
    if clash:
        raise ConfigError(f"--set {clash[0]} and a flag both set {clash[0]}; give one of them")
    return {**runner, **dotted, **overrides}  # --runner first: a --set beam.dask.X is read with it


def refuse_runner_option(beam_options: list[str]) -> None:
    """`--beam-option=--runner=FlinkRunner` (as the README once showed) went unread: the build
    takes its runner from beam.runner alone, so it ran locally and exited 0. The flag that does it
    is named instead, before the file is read."""
    from uvd_pipeline.config_beam import runner_flag

    runner = runner_flag(beam_options)
    if runner is not None:
        written, name = runner
        raise ConfigError(f"--beam-option={written}: name the runner with --runner {name} (or --set "
                          f"beam.runner={name}), not as a Beam flag: the build picks its runner from beam.runner "
                          "alone")


def runner_overrides(runner: str) -> dict:
    """`--runner` as overrides set before the file is validated (`build_overrides`), the file's
    `beam.dask` section dropped for another runner than dask. Applied after validation, a `--set
    beam.dask.X` was judged against the file's runner: `--runner dask --set beam.dask.workers=1`
    was refused as if the runner were DirectRunner. The name is checked first, the error naming
    the flag."""
    from pydantic import ValidationError

    from uvd_pipeline.config import BeamConfig

    try:
        BeamConfig.model_validate({"runner": runner})
    except ValidationError as exc:
        raise ConfigError(f"--runner {runner}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return {"beam.runner": runner, **({} if runner == "dask" else {"beam.dask": lambda _section: None})}


def cmd_report(args: argparse.Namespace) -> int:
    from tokenizer.omp_wait import prefer_short_spin

    prefer_short_spin()  # before the reconstructions load torch (`tokenizer.omp_wait`)
    from tokenizer.progress import Progress
    from uvd_pipeline.report import write_report
    from uvd_pipeline.verify import UNFINISHED, OutputUnfinished

    if args.sentences < 0:
        raise ConfigError(f"--sentences {args.sentences}: must be 0 or more")
    if any("\ud800" <= c <= "\udfff" for c in args.out):  # report.json is UTF-8: it crashed writing the name
        raise ConfigError(not_utf8("report OUT", args.out))
    try:
        progress = Progress("report", "shards")
        paths = write_report(args.out, max_sentences_per_group=args.sentences, progress=progress)
    except OutputUnfinished as exc:  # not damage: the exit code verify gives it
        print(shown(f"error: {exc}"), file=sys.stderr)
        return UNFINISHED
    progress.done("each checked against its stats; pages written")
    print(shown(f"report: {paths['html']}"))
    print(shown(f"report data: {paths['json']}"))
    return 0


def cmd_export_jsonl(args: argparse.Namespace) -> int:
    from uvd_pipeline.held_output import holding_build
    from uvd_pipeline.shards import export_jsonl, export_shards
    from uvd_pipeline.verify import UNFINISHED

    try:
        shards = [p for pattern in args.shards for p in export_shards(pattern)]
        if not shards:
            raise NotFound(f"no committed token shards match {', '.join(args.shards)}")
        count = export_jsonl(shards, args.out)
    except ShardDamaged as exc:  # a build writing it: unfinished, as verify says (exit 3), not damaged
        held = holding_build(exc.path)
        if held is None:
            raise
        print(shown(f"error: {held[0]}: UNFINISHED: a build holds this output ({held[1]}); {exc.path} is not "
                    "committed yet; export once the build is done"), file=sys.stderr)
        return UNFINISHED
    print(shown(f"wrote {count} sentences from {len(shards)} token shards to {args.out}"))
    return 0


def cmd_import_jsonl(args: argparse.Namespace) -> int:
    from uvd_pipeline.shards import ImportSettingError, TokenShardMeta, import_jsonl

    meta = TokenShardMeta(args.tokenizer_name, args.tokenizer_hash, args.codebook_size, args.tokens_per_image,
                          args.image_size, "imported")
    try:
        stats = import_jsonl(args.jsonl, meta, args.out, source=args.source, split=args.split, kind=args.kind)
    except ImportSettingError as exc:  # the library checks the settings: name the flag that gave one
        raise JsonlError(f"--{exc.field.replace('_', '-')} {exc.value}: {exc.rule}") from None
    print(shown(f"wrote {stats['sentences']} sentences ({stats['tokens']} tokens) to {args.out}"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from uvd_pipeline.verify import main as verify_main

    return verify_main(args.out, quick=args.quick)


def cmd_check(args: argparse.Namespace) -> int:
    """Everything a build checks before it starts: the config, every source's input, the tokenizer."""
    from uvd_pipeline.build import check_before_build, check_tokenizer
    from uvd_pipeline.build_record import check_record
    from uvd_pipeline.config import config_summary, load_config, parse_set_options
    from uvd_pipeline.graph import list_units
    from uvd_pipeline.source_factory import source_notices

    config = load_config(args.config, parse_set_options(args.set))
    print(config_summary(config))
    notices = check_before_build(config)
    for name, units in list_units(config).items():
        print(f"source {name}: {len(units)} input units")
    for warnings in source_notices(config).values():  # what the build would warn of, each naming its source
        for warning in warnings:
            print(f"warning: {warning}")
    for notice in notices:
        print(f"note: {notice}")
    check_tokenizer(config)
    # last, so an edited config's sources and tokenizer are checked first (rev57h M1: a path typo went
    # unreported behind it); the flags `build` takes replace an output of another configuration
    if not (args.overwrite or args.replace_changed):
        check_record(config)  # another configuration's build or a damaged record: the build refuses it
    print("config OK")
    return 0


def _add_set_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="set a config field (repeatable): KEY a dotted path such as tokenizer.batch_size or "
                          "sources.web.enabled (a source by name or index), VALUE a YAML scalar; validated with the file, paths relative to it")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m uvd_pipeline", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logs (Beam's too), and the traceback behind an operating system's error line")
    sub = p.add_subparsers(dest="command", required=True)

    sample_help = "write the embedded sample corpus (once; reused afterwards)"
    s = sub.add_parser("sample", help=sample_help, description=sample_help)
    s.add_argument("out", nargs="?", default=DEFAULT_SAMPLE_DIR,
                   help="a new or empty folder, or an earlier sample corpus (it is replaced as a whole)"
                        + DEFAULT_SHOWN)
    s.add_argument("--seed", type=int, default=0,
                   help="random seed of the corpus (default 0; a seed always gives the same bytes)")
    s.add_argument("--force", action="store_true", help="rewrite even if a complete corpus is there")
    s.set_defaults(func=cmd_sample)

    build_help = "run the Beam build described by a config file"
    b = sub.add_parser("build", help=build_help, description=build_help)
    b.add_argument("config", help="the YAML config file (configs/sample.yaml is one; docs/config.md lists every field)")
    b.add_argument("--output", help="override the config's output location (relative to the current folder)")
    b.add_argument("--runner", help="override beam.runner: DirectRunner, dask (beam.dask, or a 2-worker local "
                   "cluster), or any Beam runner name")
    b.add_argument("--workers", type=int, help="override beam.direct_num_workers")
    b.add_argument("--overwrite", action="store_true", help="delete the output first and build anew")
    b.add_argument("--replace-changed", action="store_true",
                   help="if the output holds a build of another config, replace it; else resume")
    b.add_argument("--report", action="store_true", help="write the report when the build ends")
    b.add_argument("--retokenize", action="store_true",
                   help="only tokenize the committed rendered shards again (e.g. with another tokenizer)")
    b.add_argument("--tokenizer", help="override tokenizer.checkpoint (a muse-format folder, or 'embedded')")
    b.add_argument("--no-tokenize", action="store_true", help="stop after the rendered shards")
    b.add_argument("--beam-option", action="append", default=[], metavar="--FLAG=VALUE",
                   help="extra Beam pipeline flag (repeatable), e.g. --beam-option=--project=my-proj")
    b.add_argument("--verify", action="store_true",
                   help="on resume, check the sha256 of every committed shard (sizes are always checked); "
                        "damaged shards are rebuilt")
    b.add_argument("--force-unlock", action="store_true",
                   help="take the output's lock even if another build holds it (one on another host that died)")
    _add_set_option(b)
    b.set_defaults(func=cmd_build)

    verify_help = ("check every committed file of a build output against its stats (exit 0 intact, 1 damaged, "
                   "2 no build output there or it cannot be read, 3 unfinished: what is committed is intact but the "
                   "build did not finish or is running; do not publish it)")
    v = sub.add_parser("verify", help=verify_help, description=verify_help)
    v.add_argument("out", help="a build's output folder (the config's output)")
    v.add_argument("--quick", action="store_true", help="sizes only: read no file")
    v.set_defaults(func=cmd_verify)

    report_help = ("write report.html and report.json for a build output (exit 0 written, 1 damaged, 2 no build "
                   "output there, 3 unfinished: its build did not finish or is running, as verify says)")
    r = sub.add_parser("report", help=report_help, description=report_help)
    r.add_argument("out", help="a build's output folder (the config's output)")
    r.add_argument("--sentences", type=int, default=4, help="sentences per kind/task in the contact sheets (default 4)")
    r.set_defaults(func=cmd_report)

    export_help = ("token shards -> LVM/EasyLM JSONL ({'tokens': base64 int32}) (exit 0 written, 1 damaged, 2 no "
                   "shard or a bad --out, 3 unfinished: a build is writing the output the shards lie in)")
    e = sub.add_parser("export-jsonl", help=export_help, description=export_help)
    e.add_argument("shards", nargs="+", help="token shard files, globs or folders")
    e.add_argument("--out", required=True, help="the JSONL file to write (none of its inputs, no .arrow name)")
    e.set_defaults(func=cmd_export_jsonl)

    import_help = "LVM/EasyLM JSONL -> one token shard"
    i = sub.add_parser("import-jsonl", help=import_help, description=import_help)
    i.add_argument("jsonl", help="LVM/EasyLM JSONL, one {'tokens': base64 int32} per line")
    i.add_argument("--out", required=True, help="the token shard to write (a name ending in .arrow)")
    i.add_argument("--source", default="jsonl",
                   help="source name (lower_snake_case), the start of every sentence id" + DEFAULT_SHOWN)
    i.add_argument("--split", default="train", choices=["train", "val"],
                   help="the split its sentences are in (default train)")
    i.add_argument("--kind", default="image", help="sentence kind: image, video, multiview, category, pairs, "
                   "multitask or annotated_video" + DEFAULT_SHOWN)
    i.add_argument("--tokenizer-name", default="vqgan-f16-8192-laion",
                   help="name of the tokenizer that made the codes" + DEFAULT_SHOWN)
    i.add_argument("--tokenizer-hash", default="unknown",
                   help="weights hash of the tokenizer that made the codes" + DEFAULT_SHOWN)
    # bounds are the library's (`check_import`): the command names the flag of a value it refuses
    i.add_argument("--codebook-size", type=int, default=8192,
                   help="codes of the tokenizer that made the tokens (at most 65536: shards store uint16)"
                        + DEFAULT_SHOWN)
    i.add_argument("--tokens-per-image", type=int, default=256, help="codes per image (default 256: 16x16)")
    i.add_argument("--image-size", type=int, default=256,
                   help="side in pixels of the images the codes decode to (default 256)")
    i.set_defaults(func=cmd_import_jsonl)

    check_help = "validate a config file, its sources and its tokenizer; print what it would build"
    c = sub.add_parser("check", help=check_help, description=check_help)
    c.add_argument("config", help="the YAML config file (configs/sample.yaml is one; docs/config.md lists every field)")
    _add_set_option(c)
    c.add_argument("--overwrite", action="store_true",
                   help="the build will be run with --overwrite: do not refuse an output holding another build")
    c.add_argument("--replace-changed", action="store_true",
                   help="the build will be run with --replace-changed: do not refuse an output of another config")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.func is not cmd_build:  # a build turns the collector back on where its run starts
        startup_gc.resume()
    try:
        return args.func(args)
    except ConfigError as exc:  # may span lines (one a field)
        print(shown(f"error: {exc}", kept="\n\t"), file=sys.stderr)
        return 2
    except JsonlError as exc:
        print(shown(f"error: {exc}"), file=sys.stderr)
        return 2
    except NotFound as exc:  # a path the user gave; any other FileNotFoundError is ours: its traceback stays
        print(shown(f"error: {exc}"), file=sys.stderr)
        return 2
    except (SchedulerLost, WorkersKilled) as exc:  # a Dask scheduler gone, workers dying: the message says what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerExited as exc:  # a local worker process gone; it may name the interpreter's path
        print(shown(f"error: {exc}"), file=sys.stderr)
        return 2
    except ShardDamaged as exc:  # names a file of the output: whatever its name holds is shown as codes
        print(shown(f"error: damaged: {exc}"), file=sys.stderr)
        return 1
    except Exception as exc:
        line = refusal(exc, getattr(args, "out", None))
        if line is None:
            raise
        if args.verbose:  # where it was met: a file left open by our own code looks like a low ulimit -n
            traceback.print_exc()
        print(shown(f"error: {line}", kept="\n"), file=sys.stderr)
        return 2
