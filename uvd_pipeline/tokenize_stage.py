"""The Tokenize stage: rendered-sentence shards -> Arrow token shards.

One token shard per rendered shard (same source, split and index). The model is loaded once per
worker process (Beam's `Shared` handle, so the DoFn instances of a process's threads share it)
and images are encoded in fixed-size batches across sentence boundaries. A token shard is
skipped when it is already committed for the same tokenizer weights and build config, so a
rerun (or `--retokenize` with the same weights) only fills in what is missing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sources import fsio
from tokenizer.atomic import is_temporary
from uvd_pipeline.config import TokenizerConfig
from uvd_pipeline.daemon_pool import DaemonPool, PerProcess, cores
from uvd_pipeline.render import decode_png
from uvd_pipeline.integrity import REBUILD_HINT, ShardDamaged, check_file, named_files, token_file
from uvd_pipeline.rendered_shards import (TAR_SUFFIX, iter_shard, read_stats, stats_files,
                                          tar_recorded, uncommit)
from uvd_pipeline.shards import ARROW_SUFFIX, STATS_SUFFIX, TOKENS_DIR, TokenRow, TokenShardMeta, write_token_shard

log = logging.getLogger(__name__)
EMBEDDED = "embedded"


def _default(name: str) -> Any:
    """The build config's default for `tokenizer.<name>`: the one source of these settings."""
    return TokenizerConfig.model_fields[name].default


@dataclass(frozen=True)
class TokenizeSettings:
    checkpoint: str
    batch_size: int = _default("batch_size")
    device: str = _default("device")
    compile: bool = _default("compile")
    threads: int | None = _default("threads")
    precision: str = _default("precision")
    tune_kernels: bool = _default("tune_kernels")

    @classmethod
    def of(cls, config: Any) -> "TokenizeSettings":
        """From the build config's `tokenizer` section (a `TokenizerConfig`)."""
        return cls(checkpoint=config.checkpoint, batch_size=config.batch_size, device=config.device,
                   compile=config.compile, threads=config.threads, precision=config.precision,
                   tune_kernels=config.tune_kernels)

    @property
    def path(self) -> str:
        if self.checkpoint != EMBEDDED:
            return self.checkpoint
        from tokenizer.checkpoint import embedded_checkpoint  # torch loads only where it is needed

        return embedded_checkpoint()


def token_shard_path(output: str, source: str, split: str, stem: str) -> str:
    return fsio.join(output, TOKENS_DIR, source, split, stem + ARROW_SUFFIX)


RENDERED_FIELDS = ("source", "split", "shard", "tar", "sentences", "config_hash", "image_size")
CHECK_FIELDS = ("tar_bytes", "tar_sha256")  # what the tar is checked against (older stats lack them)


def rendered_fields(stats: dict[str, Any]) -> dict[str, Any]:
    """What the Tokenize step needs of a rendered shard's stats."""
    return {**{k: stats[k] for k in RENDERED_FIELDS}, **{k: stats[k] for k in CHECK_FIELDS if k in stats}}


def committed_rendered(output: str, config_hash: str) -> list[dict[str, Any]]:
    """Stats of every rendered shard an earlier run committed (what `--retokenize` reads). One
    that cannot be read stops it before anything runs (`ShardDamaged`, naming the file and the
    repair): retokenizing only the readable shards would lose the other's tokens silently."""
    found = []
    for uri in stats_files(output):
        try:
            stats = read_stats(uri)
        except (OSError, ValueError) as exc:
            raise ShardDamaged(uri, f"unreadable stats ({exc})"[:200] + f"; {REBUILD_HINT}, then retokenize") from None
        if stats.get("config_hash") == config_hash:
            found.append(rendered_fields(stats))
    return sorted(found, key=lambda s: s["tar"])


def token_stats_files(output: str) -> list[str]:
    """The committed token-shard stats of a build (temporary files of unfinished writes left out)."""
    root = fsio.join(output, TOKENS_DIR)
    if not fsio.exists(root):
        return []
    return [f for f in fsio.list_files(root, (STATS_SUFFIX,), recursive=True) if not is_temporary(f)]


def _lineage(header: dict[str, Any]) -> dict[str, Any]:
    members = [m.get("key", m.get("frame", m.get("view"))) for m in header.get("members", [])]
    return {"members": members, "meta": header.get("meta", {})}


def load_tokenizer(settings: TokenizeSettings):
    from tokenizer.codec import Tokenizer

    device = None if settings.device == "auto" else settings.device
    return Tokenizer.from_pretrained(settings.path, batch_size=settings.batch_size, device=device,
                                     compile=settings.compile, threads=settings.threads,
                                     precision=settings.precision, tune_kernels=settings.tune_kernels)


def arithmetic_of(tok) -> dict[str, Any]:
    """How a tokenizer computes, as token stats record it: codes made otherwise may differ by
    rounding (precision, compile, tuned kernels, GroupNorm from per-channel statistics; on CPU the
    torch threads of a forward and the images in it, which split its sums otherwise)."""
    arithmetic = {"precision": getattr(tok, "precision", "fp32"),
                  "tuned_kernels": bool(getattr(tok, "tune_kernels", False)),
                  "compiled": bool(getattr(tok, "compile", False)),
                  "channel_statistics": bool(getattr(tok, "channel_statistics", False))}
    if getattr(getattr(tok, "device", None), "type", "cpu") == "cpu":
        arithmetic.update(cpu_forward(tok))
    return arithmetic


CPU_FIELDS = ("threads", "batch_size")  # what a CPU forward's rounding depends on beyond the above


def cpu_forward(tok) -> dict[str, Any]:
    """The torch threads each CPU forward runs on (they split its sums) and, eager, the images a
    batch holds (the forwards it is cut into: compiled codes did not move with it; the cut also
    depends on the image and model size, which the build and tokenizer hashes cover). Neither was
    recorded nor compared: a rerun with threads=3 kept a threads=1 build's shards (a fresh encode
    differed by 1 code of 9,728)."""
    forward = {"threads": getattr(tok, "threads_per_stream", None)}
    if not getattr(tok, "compile", False):
        forward["batch_size"] = getattr(tok, "batch_size", None)
    return forward


def recorded_arithmetic(stats: dict[str, Any]) -> dict[str, Any]:
    """`arithmetic_of` as a token shard's stats recorded it (older stats: fp32, untuned, eager,
    torch's GroupNorm; the CPU fields only where recorded, so a CPU tokenizer redoes those once)."""
    return {"precision": stats.get("precision", "fp32"), "tuned_kernels": bool(stats.get("tuned_kernels", False)),
            "compiled": bool(stats.get("compiled", False)),
            "channel_statistics": bool(stats.get("channel_statistics", False)),
            **{k: stats[k] for k in CPU_FIELDS if k in stats}}


def arithmetic_label(arithmetic: dict[str, Any]) -> str:
    return (arithmetic["precision"] + (" compiled" if arithmetic.get("compiled") else "")
            + (" with tuned kernels" if arithmetic["tuned_kernels"] else "")
            + (" with per-channel GroupNorm statistics" if arithmetic.get("channel_statistics") else "")
            + (f" on {arithmetic['threads']} CPU thread{'s' if arithmetic['threads'] != 1 else ''}"
               if arithmetic.get("threads") else "")
            + (f" in batches of {arithmetic['batch_size']}" if arithmetic.get("batch_size") else ""))


def decode_pool() -> DaemonPool:
    """One pool per process, a thread per core, that the Tokenize threads of a GPU build share for
    their PNG decodes (OpenCV lets go of Python's lock while it decodes). A worker thread alone
    decodes one PNG at a time: on a 16-core H200 machine eight of them kept 6.7 cores busy and the
    GPU waited, most of all at the end, when the last shard decoded on one thread."""
    return _DECODE_POOL.get()


_DECODE_POOL = PerProcess(lambda: DaemonPool(max(2, cores()), "uvd-decode"))


def decode_batch(pngs: list[bytes], pool: DaemonPool | None = None, chunk: int = 8) -> np.ndarray:
    """PNG bytes -> one (N, H, W, 3) uint8 array, written in place (no stacking copy); on `pool`
    in slices of `chunk` images when given (fewer hand-overs than one task per image). Raises
    ValueError for bytes that are not a PNG of the first one's size."""
    first = decode_png(pngs[0])
    batch = np.empty((len(pngs), *first.shape), np.uint8)
    batch[0] = first

    def fill(start: int) -> None:
        for i in range(start, min(start + chunk, len(pngs))):
            image = decode_png(pngs[i])
            if image.shape != first.shape:
                raise ValueError(f"a rendered image of {image.shape[1]}x{image.shape[0]} among "
                                 f"{first.shape[1]}x{first.shape[0]} ones")
            batch[i] = image

    starts = range(1, len(pngs), chunk)
    if pool is None:
        for start in starts:
            fill(start)
    else:
        for future in [pool.submit(fill, start) for start in starts]:
            future.result()
    return batch


class EncodeFailed(RuntimeError):
    """The codec refused or failed a batch (not the shard's fault: it is not reported as damaged)."""


class BatchEncoder:
    """Encodes batches in order, optionally one at a time on a background thread, so the caller
    decodes the next batch's PNGs while the device computes this one (a GPU otherwise waits for
    the CPU between batches). Results and `on_batch(seconds, images)` reach the caller's thread
    (Beam metrics live there), in submission order; an encode error is raised there too."""

    def __init__(self, tok, on_batch: Callable[[float, int], None] | None, overlap: bool) -> None:
        self.tok, self.on_batch = tok, on_batch
        self.codes: list[np.ndarray] = []
        self.waited = 0.0  # seconds the caller spent blocked on the codec (all of it without overlap)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="encode") if overlap else None
        self._in_flight: Future | None = None

    def _encode(self, batch: np.ndarray) -> tuple[np.ndarray, float, int]:
        start = time.perf_counter()
        try:
            codes = self.tok.encode(batch)
        except ValueError as exc:  # the caller reads ValueError as a sentence that does not decode
            raise EncodeFailed(f"the tokenizer refused a batch of {batch.shape}: {exc}") from exc
        return codes, time.perf_counter() - start, len(batch)

    def _take(self, result: tuple[np.ndarray, float, int]) -> None:
        codes, seconds, images = result
        self.codes.extend(codes)
        if self.on_batch is not None:
            self.on_batch(seconds, images)

    def _take_when_done(self, result: Callable[[], tuple[np.ndarray, float, int]]) -> None:
        """Take what `result()` returns, counting the time it blocks the caller in `waited`."""
        started = time.perf_counter()
        done = result()
        self.waited += time.perf_counter() - started
        self._take(done)

    def submit(self, images: list[np.ndarray] | np.ndarray) -> None:
        batch = images if isinstance(images, np.ndarray) else np.stack(images)
        if self._pool is None:
            self._take_when_done(lambda: self._encode(batch))
            return
        self.wait()
        self._in_flight = self._pool.submit(self._encode, batch)

    def wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            self._take_when_done(future.result)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def tokenize_shard(output: str, stats: dict[str, Any], tok, config_hash: str,
                   on_batch: Callable[[float, int], None] | None = None,
                   overlap: bool | None = None, timings: dict[str, float] | None = None,
                   run_id: str | None = None) -> dict[str, Any]:
    """Encode every image of one rendered shard and write its token shard (stats last).
    `on_batch(seconds, images)` is told how long each encoded batch took (Beam metrics).
    `overlap`: decode the next batch while this one encodes (default: when the codec runs on a
    GPU); the batches, and so the token bytes, are the same either way. `timings`, when given,
    gets where the shard's wall time went (seconds): `wait` (blocked on the codec), `write`
    (the token shard), `read` (the rest: the tar, its digest, PNG decodes): what a GPU stage
    that falls short of the codec's rate is short of. `run_id`: nothing is committed once that run
    no longer holds the output's lock (`output_lock.LockLost`)."""
    started = time.perf_counter()
    stem = stats["tar"][: -len(TAR_SUFFIX)]
    path = token_shard_path(output, stats["source"], stats["split"], stem)
    stats_uri = path[: -len(ARROW_SUFFIX)] + STATS_SUFFIX
    arithmetic = arithmetic_of(tok)  # fp16/bf16, compiled or tuned kernels round differently: redo on a change
    existing = None
    if fsio.exists(stats_uri):
        try:
            existing = read_stats(stats_uri)
        except ValueError as exc:  # as an unreadable rendered stats file: the shard is written again
            log.warning("damaged: %s: unreadable stats (%s); it is tokenized again", stats_uri, exc)
    if existing is not None:
        if (existing.get("tokenizer_hash") == tok.tokenizer_hash and existing.get("config_hash") == config_hash
                and recorded_arithmetic(existing) == arithmetic
                and existing.get("rendered_sha256") == stats.get("tar_sha256")):  # a rewritten tar: redo
            # a committed token shard is small next to its tar: its digest is checked every time
            why = check_file(token_file(stats_uri, existing), full=True)
            if not why:
                return {**existing, "skipped": True}
            log.warning("damaged: %s: %s; it is tokenized again", path, why)
    image_size = int(stats["image_size"])
    grid = image_size // tok.config.downsample_factor
    meta = TokenShardMeta(tok.name, tok.tokenizer_hash, tok.codebook_size, grid * grid, image_size, config_hash)
    headers: list[dict[str, Any]] = []
    pending: list[np.ndarray] = []
    owners: list[int] = []
    if overlap is None:
        overlap = getattr(getattr(tok, "device", None), "type", "cpu") == "cuda"
    encoder = BatchEncoder(tok, on_batch, overlap)
    pool = decode_pool() if overlap else None  # a GPU waits for decodes; a CPU codec has the cores busy
    tar = tar_recorded(output, stats)
    try:  # the tar's size is checked before, its sha256 after the last sentence (`iter_shard`)
        for sentence in iter_shard(tar):
            headers.append(sentence.header)
            for png in sentence.images:
                pending.append(png)
                owners.append(len(headers) - 1)
                if len(pending) >= tok.batch_size:
                    encoder.submit(decode_batch(pending, pool))
                    pending = []
        if pending:
            encoder.submit(decode_batch(pending, pool))
        encoder.wait()
    except ShardDamaged:
        raise
    except ValueError as exc:  # a PNG or header that does not decode: say which tar, and whether it changed
        why = check_file(tar, full=True)
        raise ShardDamaged(tar.uri, f"{why}; {REBUILD_HINT}" if why else
                           f"holds a sentence that does not decode ({exc})"[:300]) from None
    finally:
        encoder.close()
    encoded = time.perf_counter()
    codes = encoder.codes
    per_sentence: list[list[np.ndarray]] = [[] for _ in headers]
    for owner, code in zip(owners, codes):
        per_sentence[owner].append(code)
    rows = [
        TokenRow(h["sentence_id"], h["source"], h["kind"], h["task"], h["split"],
                 np.concatenate(parts).astype(np.uint16) if parts else np.zeros(0, np.uint16), _lineage(h))
        for h, parts in zip(headers, per_sentence)
    ]
    from uvd_pipeline.output_lock import check_held

    check_held(output, run_id)  # the token shard, then its stats, within moments
    written = write_token_shard(path, rows, meta, extra_stats={"rendered": stats["tar"], "rendered_sha256": stats.get("tar_sha256"),
                                                                  "tokenizer_weights_hash": tok.weights_hash, **arithmetic})
    if timings is not None:
        timings.update(wait=encoder.waited, read=encoded - started - encoder.waited,
                       write=time.perf_counter() - encoded)
    return {**written, "skipped": False}


def summarize_tokens(output: str, config_hash: str | None = None, claimed: set[str] | None = None,
                     tars: dict[tuple[str, str, str], str | None] | None = None) -> dict[str, Any]:
    """Token totals per source (and per split) from the committed token stats, for the build
    summary; with `config_hash`, shards of another configuration are left out. `claimed`: gets
    every file the stats files name, the stats files included (`named_files`), for the stray
    check, which then reads none again. Runs in a build, lock held: an unreadable stats file is
    removed with a warning naming it (as `committed_shards` does with a rendered one), so that
    its token shard is written again; its `.arrow` is a stray till then. `tars`: the committed
    rendered shards' tar sha256 by (source, split, stem); a token shard made from another tar
    (a --no-tokenize build rewrote it) is warned of as stale, as `verify` names it: the totals
    count its old sentences."""
    files = token_stats_files(output)
    if not files and not fsio.exists(fsio.join(output, TOKENS_DIR)):
        return {}
    totals = TokenTotals()
    for uri in files:
        try:
            stats = read_stats(uri)
        except ValueError as exc:
            log.warning("damaged: %s: unreadable stats (%s); removed, its token shard not counted; %s",
                        uri, exc, REBUILD_HINT)
            uncommit(uri)
            continue
        if claimed is not None:
            claimed.update(named_files(uri, stats, "token"))
        if config_hash is not None and stats.get("config_hash") not in (None, config_hash):
            continue
        if tars is not None:
            _warn_stale(uri, stats, tars)
        totals.add(uri, stats)
    return totals.summary()


STALE_HINT = ("tokenize it again: run the same build command without --no-tokenize (it re-encodes every token shard "
              "of a rewritten tar), or python -m uvd_pipeline build CONFIG --retokenize")


def _warn_stale(uri: str, stats: dict[str, Any], tars: dict[tuple[str, str, str], str | None]) -> None:
    """Warn of a token shard made from an earlier tar of its rendered shard (`tars`: as
    `summarize_tokens` takes them)."""
    source, split, name = uri.rstrip("/").rsplit("/", 3)[-3:]
    place = (source, split, name.split(".", 1)[0])
    tar = tars.get(place)
    if tar is not None and stats.get("rendered_sha256") != tar:
        log.warning("%s: stale: made from a tar of sha256 %s, rendered shard %s is now %s (rewritten since, by a build "
                    "that did not tokenize): the trainer would take tokens of sentences the shard no longer holds; "
                    "%s", token_file(uri, stats).uri, stats.get("rendered_sha256"), "/".join(place), tar, STALE_HINT)


class TokenTotals:
    """The summary's `tokens` section, added up one token stats file at a time: the build writes
    it (`summarize_tokens`), `verify` holds the written one to the stats it checked."""

    def __init__(self) -> None:
        self.per_source: dict[str, dict[str, Any]] = {}
        self.tokenizers: Counter[tuple] = Counter()  # ((field, value), ...) of name, hash, arithmetic -> shards

    def add(self, uri: str, stats: dict[str, Any]) -> None:
        *_, source, split, _ = uri.rstrip("/").split("/")
        entry = self.per_source.setdefault(source, {"shards": 0, "sentences": 0, "images": 0, "tokens": 0,
                                                    "by_split": {}})
        split_entry = entry["by_split"].setdefault(split, {"sentences": 0, "images": 0, "tokens": 0})
        entry["shards"] += 1
        for key in ("sentences", "images", "tokens"):
            entry[key] += int(stats.get(key, 0))
            split_entry[key] += int(stats.get(key, 0))
        made_by = {"name": stats.get("tokenizer_name"), "weights_hash": stats.get("tokenizer_hash"),
                   **recorded_arithmetic(stats)}
        self.tokenizers[tuple(made_by.items())] += 1

    def summary(self) -> dict[str, Any]:
        """The section as `summary.json` holds it."""
        per_source = {name: {**entry, "by_split": dict(sorted(entry["by_split"].items()))}
                      for name, entry in sorted(self.per_source.items())}
        return {"sources": per_source,
                "tokenizers": [{**dict(made_by), "shards": count} for made_by, count in sorted(self.tokenizers.items())]}
