"""Read and render one input unit and commit it to the unit store: the work of the build's Render
step (`render_step.RenderUnit`), without Beam, so that it can also start before Beam is imported
(`uvd_pipeline.early_render`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from sources import fsio
from sources.records import (
    AnnotatedClipRecord,
    ImageRecord,
    MachineError,
    MultiViewRecord,
    PairRecord,
    Reject,
    TupleRecord,
    VideoClipRecord,
    VideoRecord,
    record_input,
    safe_key,
)
from transforms.errors import exception_detail
from uvd_pipeline.config import BuildConfig, ConfigError
from uvd_pipeline.config_paths import windows_hint
from uvd_pipeline.keys import stable_hash
from uvd_pipeline.render import RenderSettings, render_clip, render_image, render_video
from uvd_pipeline.render_annotated import render_annotated_clip, render_multiview, render_pair, render_tuple
from uvd_pipeline.sentences import RenderedUnit, image_sentence
from uvd_pipeline.source_factory import deduplicated, labeler_specs, make_source, one_image_sentences
from uvd_pipeline.step_metrics import PROGRESS, count, distribution, timed
from uvd_pipeline.tagged import MAIN, REJECTS, UNITS
from uvd_pipeline.unit_store import UnitStore, UnitStoreError, UnitWriter

RENDERERS = {
    VideoClipRecord: render_clip,
    VideoRecord: render_video,  # all clips of one video from one read: a list of results
    MultiViewRecord: render_multiview,
    AnnotatedClipRecord: render_annotated_clip,
    PairRecord: render_pair,
    TupleRecord: render_tuple,
    ImageRecord: render_image,
}


@dataclass(frozen=True)
class UnitInputs:
    """The input digest of one rendered unit (what the shards of its source were built from)."""

    source: str
    unit: str
    digest: str


class RenderCancelled(Exception):
    """A unit's rendering was stopped between two records (the build ended first); nothing of it
    is committed."""


Outputs = list[tuple[str, Any]]  # (tag, item): tags of `uvd_pipeline.tagged`


def unit_label(source, unit) -> str:
    """A unit's inputs as its `unit_failed` reject names them: paths as the source's root sees
    them. Absolute, the reject published the machine's folders, and its key (a digest of this)
    changed when the same dataset lay elsewhere."""
    root = str(getattr(source, "path", "") or "").rstrip("/")

    def inside(part: Any) -> Any:  # each path cut before it is quoted: its repr escapes what the root's text holds
        if isinstance(part, str) and root and part.startswith(root + "/"):
            return part[len(root) + 1:]
        return tuple(map(inside, part)) if isinstance(part, (tuple, list)) else part

    return str(inside(getattr(unit, "uris", unit)))


class UnitRenderer:
    """One source's unit rendering: a unit committed by an earlier run whose input is unchanged
    is taken from the store without reading or decoding anything; any other is read, rendered
    and committed before its results are returned. A unit that fails part-way keeps what it
    rendered and adds a `unit_failed` reject: bad input never stops the build. An error of the
    machine (`sources.records.MachineError`: a full temporary folder, too many open files) is
    raised, the unit uncommitted, as a full output disk is: the input is not at fault, and a rerun
    once mended reads it again.

    Results: whole sentences (web images, clips, objects) tagged `MAIN`, units that still need
    grouping (class images, pairs, tuples) `UNITS`, rejects `REJECTS`."""

    def __init__(self, source, settings: RenderSettings, web_images: bool, fingerprint: bool,
                 output: str, config_hash: str, verify: bool = False, root: str = "", named_root: str = "",
                 run_id: str | None = None) -> None:
        self.source = source
        self.run_id = run_id  # the run whose lock the store's commits check
        self.settings = settings
        self.web_images = web_images  # an ImageRecord is a whole one-image sentence
        self.fingerprint = fingerprint  # image units carry their dedup fingerprint
        self.output = output
        self.config_hash = config_hash
        self.verify = verify  # a stored unit's images are checked by sha256 too, not only by size
        # the source's root and the one the output names its units under (`BuildConfig.output_root`)
        self.root, self.named_root = root, named_root
        self.memo: dict = {}  # this run's `fsio.once_per_run` values: each unit's read and check share them
        self._store: UnitStore | None = None

    def __getstate__(self) -> dict[str, Any]:
        """What a pickled renderer carries to a worker: its settings, not the store made from them
        (the worker makes its own on first use)."""
        return {**self.__dict__, "_store": None}

    def store(self) -> UnitStore:
        """The source's unit store, made on first use and kept: each unit's key and render ask it,
        and making one works out the forms of the source's roots again (fsspec's URL parsing)."""
        if self._store is None:
            self._store = UnitStore(self.output, self.source.name, self.config_hash, self.root, self.named_root,
                                    run_id=self.run_id)
        return self._store

    def _input_root(self) -> str:
        """The root a reject's `input` is named under, as the source joins its paths to it."""
        return str(getattr(self.source, "path", "") or self.root)

    def unit_key(self, unit) -> str:
        return self.store().uid(unit)

    def render(self, unit, cancelled: Callable[[], bool] | None = None) -> tuple[Outputs, UnitInputs]:
        """The unit's results and input digest. `cancelled`, asked before each record: when it
        says so, the unit is abandoned uncommitted (`RenderCancelled`)."""
        name = self.source.name
        store = self.store()
        with fsio.run_memo(self.memo):
            loaded = store.load(unit, verify_images=self.verify)
            if loaded is None:
                outputs, digest = self._render_unit(store, unit, cancelled)
                count(name, "units_rendered")
        if loaded is not None:
            outputs, digest = loaded
            count(name, "units_reused")
            count(name, "outputs_reused", len(outputs))
        return outputs, UnitInputs(name, self.unit_key(unit), digest)

    def _render_unit(self, store: UnitStore, unit, cancelled: Callable[[], bool] | None) -> tuple[Outputs, str]:
        name = self.source.name
        writer = store.writer(unit)
        outputs: Outputs = []
        clock, records = [0.0], 0
        try:
            # names listed as the store names them
            with fsio.recording_inputs(rename=store.named if store.moved else None) as inputs_read:
                try:
                    for item in timed(self.source.read(unit), clock):
                        if cancelled is not None and cancelled():
                            raise RenderCancelled(self.unit_key(unit))
                        if isinstance(item, Reject):
                            count(name, f"rejects.{item.reason}")
                            outputs.append((REJECTS, item))
                            continue
                        records += 1
                        count(name, "records")
                        PROGRESS.add("read records")
                        outputs.extend(self._render(item, writer))
                except (UnitStoreError, RenderCancelled, MachineError):
                    raise  # MachineError: the machine's (a full TMPDIR), never the input's: nothing committed
                except Exception as exc:  # a broken unit must not stop the build
                    label = unit_label(self.source, unit)
                    key = safe_key(name, "unit", f"{stable_hash(label):016x}")
                    count(name, "rejects.unit_failed")
                    outputs.append((REJECTS, Reject(key, name, key, "read", "unit_failed",
                                                    exception_detail(exc, f"{label[:120]}: ", limit=300),
                                                    input=label)))
            digest = writer.commit(outputs, inputs_read)
        except BaseException:
            writer.abandon()
            raise
        distribution("stage.read_us", clock[0] * 1e6)
        distribution("stage.read_records", records)
        return outputs, digest

    def _render(self, record, writer: UnitWriter) -> Iterator[tuple[str, Any]]:
        start = time.perf_counter()
        try:
            result: Any
            if self.fingerprint and isinstance(record, ImageRecord):
                result = render_image(record, self.settings, fingerprint=True)
            else:
                result = RENDERERS[type(record)](record, self.settings)
            if self.web_images and isinstance(result, RenderedUnit):
                result = image_sentence(result)
        except MachineError:
            raise
        except Exception as exc:  # decoders can fail in ways no reason code foresaw
            result = Reject(record.key, record.source, record.group, "render", "internal_error",
                            exception_detail(exc, limit=300))
        distribution("stage.render_us", (time.perf_counter() - start) * 1e6)
        clips = {clip.key: clip for clip in record.clips} if isinstance(record, VideoRecord) else {}
        for one in result if isinstance(result, list) else [result]:
            if isinstance(one, Reject):
                count(record.source, f"rejects.{one.reason}")
                yield REJECTS, one.located(record_input(clips.get(one.key, record), self._input_root()))
                continue
            PROGRESS.add("rendered")
            if isinstance(one, RenderedUnit):  # a later reject of it (a duplicate, a clash) names its input
                one = replace(one, input=record_input(record, self._input_root()))
            stored = writer.stored(one)
            if isinstance(one, RenderedUnit):
                count(record.source, "rendered_units")
                yield UNITS, stored
            else:
                count(record.source, "rendered_sentences")
                yield MAIN, stored


def unit_renderers(config: BuildConfig, verify: bool = False, run_id: str | None = None) -> dict[str, UnitRenderer]:
    """Each enabled source's renderer, as the build's Render step and the early render both use it.
    `run_id`: the run whose lock each commit checks (`output_lock.check_held`)."""
    settings = RenderSettings.from_config(config)
    renderers = {}
    for source_config in config.enabled_sources:
        together = deduplicated(config, source_config)
        renderers[source_config.name] = UnitRenderer(
            make_source(source_config, config.seed, config.image.max_pixels), settings,
            web_images=one_image_sentences(source_config) and not together, fingerprint=together,
            output=config.output, config_hash=config.content_hash(), verify=verify,
            root=source_config.path, named_root=config.output_root(source_config.name), run_id=run_id)
    return renderers


def root_problem(path: str, written: str | None = None) -> str | None:
    """Why a source's local root cannot be read, said plainly (a reader's 'not a directory' does
    not tell a misspelt folder from a file), or None. `written`: the path as the config wrote it,
    whose form says what to hint (`_missing_hint`)."""
    if "://" in path or os.path.isdir(path):
        return None
    if not os.path.exists(path):
        what = "is a link to nothing" if os.path.islink(path) else "does not exist"
        return f"{path} {what}{_missing_hint(written)}"
    return f"{path} is a file; give the folder that holds the source's files"


def _missing_hint(written: str | None) -> str:
    """Where a missing root was looked for: a relative path from the config file's folder (said
    for it alone: an absolute or `~` path was read as written). A Windows path (`C:\\data\\imgs`)
    was read as a relative name, `<config folder>/C:\\data\\imgs`."""
    if written is None:
        return ""
    if hint := windows_hint(written):
        return f" ({hint})"
    if os.path.isabs(os.path.expandvars(os.path.expanduser(written))):
        return ""
    return " (relative paths in a config are taken from the config file's folder)"


def list_units(config: BuildConfig) -> dict[str, list]:
    """Every source's work units, listed before anything is written: a wrong path fails here,
    naming the config field."""
    from sources.annotation_files import AnnotationFileError
    from sources.layout_fit import misfit
    from sources.paths import ConfiguredValueMismatch, resolving
    from uvd_pipeline.labelers import LabelerError, check_spec

    units = {}
    for index, source_config in enumerate(config.sources):
        if not source_config.enabled:
            continue
        for field, spec, task in labeler_specs(source_config):
            try:
                check_spec(spec, task)
            except LabelerError as exc:
                raise ConfigError(f"sources[{index}].{field} ({source_config.name}): {exc}") from None
        problem = misfit(source_config.type, source_config.path) if source_config.layout_check else None
        if problem:
            raise ConfigError(f"sources[{index}].type ({source_config.name}): {problem}; set "
                              f"sources[{index}].layout_check: false if type: {source_config.type} is right")
        try:
            with resolving():  # each folder's links resolved once for this listing, anew for the next
                units[source_config.name] = make_source(source_config, config.seed, config.image.max_pixels).units()
        except (FileNotFoundError, NotADirectoryError, AnnotationFileError, ConfiguredValueMismatch) as exc:
            field = getattr(exc, "field", "path")  # sources.paths.ConfiguredPathMissing names its own
            # a reader's message may start with the source's name, which the field's line names already
            problem = root_problem(source_config.path, source_config.written_path) or str(exc).removeprefix(f"{source_config.name}: ")
            raise ConfigError(f"sources[{index}].{field} ({source_config.name}): {problem}") from None
        except PermissionError as exc:  # the root, or an index file, that this user may not read
            raise ConfigError(f"sources[{index}].path ({source_config.name}): cannot read {exc.filename} "
                              f"({exc.strerror}); give this user read access to it (chmod a+rX), or name "
                              "another folder") from None
        if not units[source_config.name]:
            raise ConfigError(f"sources[{index}].path ({source_config.name}): nothing to read at "
                              f"{source_config.path}")
    return units
