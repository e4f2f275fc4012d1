"""Token-shard data for the trainer: a weighted mixture of shard globs (`trainer.mixture_spec` reads
the `--data` values and mixture files), packed into windows.

The trainer sees only committed token shards (`uvd_pipeline.shards`) and a mixture spec: globs with
weights, plus a split filter. Shards are memory-mapped; a sentence is a zero-copy uint16 view and
only the windows this rank trains on are ever copied out (a shard with IPC compression is held
decompressed instead, within `uvd_pipeline.shards.COMPRESSED_SHARD_BUDGET`, judged by
`read_token_shard` before it is read, and those held open together within it too). A shard another
tool wrote is held to the
contract before its tokens are used: the columns and each sentence's n_images whole images when it
is listed (offsets only), its ids inside the codebook when its tokens are first read (with the
sha256); anything else is a `UsageError` naming the file and sentence.

The token stream, the same on every rank:
  - mixture: for each next sentence a seeded generator picks a source with probability
    weight / sum(weights);
  - within a source, sentences come in a permutation drawn from (seed, source, epoch); when a
    source runs out its epoch advances and a new permutation starts;
  - packing: `paper` mode puts BOS before and EOS after every sentence (the paper's recipe),
    `stream` mode concatenates plain sentences (the released code);
  - windows: window w is stream[w*T : w*T + T + 1] (inputs = first T, targets = last T), so every
    transition of the stream is trained on exactly once; a sentence longer than a window
    continues in the next one; attention is not masked at sentence borders (as in LVM).
Micro-batch m of the global stream is windows [m*B*W, (m+1)*B*W) for B windows per rank and W
ranks; rank r takes the contiguous slice [r*B, (r+1)*B) of it, and skips the others without
reading their tokens. So one process with batch B*W sees exactly the union of W ranks' batches.

`state_dict()` is a few integers plus the generator state; loading it into a fresh loader over the
same shards replays the identical batch sequence (exact resume). It carries a fingerprint of the
data (each source's shard and sentence counts and a sha256 over its shards' recorded digests, the
tokenizer, packing) and refuses to load over other data (a glob spelt otherwise that names shards
of the same counts and digest is the same data); a state from before the digests compares counts
only, with a warning.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uvd_pipeline.shards import (ARROW_SUFFIX, COMPRESSED_SHARD_BUDGET, REBUILD_HINT, SCHEMA, STATS_SUFFIX,
                                 UNCOMPRESSED_HINT, TokenShardMeta, decompressed_bytes, find_shards,
                                 read_token_shard, verify_token_shard)

from .config import BOS_ID, EOS_ID, VOCAB_SIZE, UsageError
from .data_overlap import EntryShards, overlap_note, shared_shards
from .data_regroup import Named, regroup
from .integrity import CheckpointError, CheckpointWarning
from .mixture_spec import Mixture, MixtureEntry, meant_weight
# moved to mixture_spec, still importable from here
from .mixture_spec import load_mixture_file, mixture_from_args, parse_data_arg  # noqa: F401

MODES = ("paper", "stream")
STATE_VERSION = 1
OPTIONAL_FINGERPRINT = ("tokenizer",)  # fingerprint keys that states of older versions lack
_MIX_STREAM, _PERMUTATION_STREAM = 1, 2  # sub-streams of the seed: never collide


# -- what a shard holds ----------------------------------------------------------------------
REWRITE_HINT = ("write token shards with uvd_pipeline.shards.write_token_shard, or turn LVM/EasyLM JSONL into one "
                "with python -m uvd_pipeline import-jsonl")


def _sentence_name(path: str, table: pa.Table, row: int) -> str:
    return f"{path}: sentence {table.column('sentence_id')[row].as_py()!r} (row {row})"


def _chunk_bases(tokens: pa.ChunkedArray) -> Iterator[tuple[pa.Array, int]]:
    """Each chunk of a column with the table row of its first element."""
    base = 0
    for chunk in tokens.chunks:
        yield chunk, base
        base += len(chunk)


def _chunk_lengths(path: str, table: pa.Table, chunk: pa.Array, base: int) -> np.ndarray:
    """Token count of each row of one tokens chunk, from its offsets, refusing offsets that run
    backwards or past the chunk's values: a file read without validation (as a memory map is)
    keeps them as written, and a sentence sliced out of them is short or empty, a numpy error
    deep in training."""
    if not len(chunk):  # an empty record batch may have no offsets at all
        return np.zeros(0, np.int64)
    offsets = chunk.offsets.to_numpy(zero_copy_only=True)
    lengths = np.diff(offsets)
    backwards = np.flatnonzero(lengths < 0)
    if offsets[0] < 0 or backwards.size:
        row = base + (int(backwards[0]) if backwards.size and offsets[0] >= 0 else 0)
        raise UsageError(f"{_sentence_name(path, table, row)}: its list offsets run backwards "
                         f"({int(offsets[row - base])} then {int(offsets[row - base + 1])}): not a valid Arrow "
                         f"list column; {REWRITE_HINT}")
    held = len(chunk.values)
    if offsets[-1] > held:
        row = base + int(np.searchsorted(offsets, held, side="right")) - 1
        raise UsageError(f"{_sentence_name(path, table, row)}: its list offsets run to token {int(offsets[-1])}, past "
                         f"the {held} tokens its record batch holds (offsets declared beyond the data): not a "
                         f"valid Arrow list column; {REWRITE_HINT}")
    if chunk.values.null_count:  # a null id has no value to train on (the buffer holds whatever was there)
        at = int(np.flatnonzero(chunk.values.is_null().to_numpy(zero_copy_only=False))[0])
        row = base + int(np.searchsorted(offsets, at, side="right")) - 1
        position = at - int(offsets[row - base])
        raise UsageError(f"{_sentence_name(path, table, row)} holds a null token id (position {position} of the "
                         f"sentence), which no model can read; {REWRITE_HINT}")
    return lengths


def check_token_layout(path: str, table: pa.Table, meta: TokenShardMeta) -> np.ndarray:
    """Refuse a shard whose columns are not the contract's (`uvd_pipeline.shards.SCHEMA`: tokens
    are uint16 lists) or whose token lists are not its `n_images` whole images; returns the token
    count of each row. Reads the offsets only. Another tool's shard with int64 ids or 255-token
    images went into batches as it was."""
    for expected in SCHEMA:
        index = table.schema.get_field_index(expected.name)
        if index < 0 or table.schema.field(index).type != expected.type:
            found = "missing" if index < 0 else f"of type {table.schema.field(index).type}"
            raise UsageError(f"{path}: column {expected.name!r} is {found}; a token shard's is {expected.type}; "
                             f"{REWRITE_HINT}")
    tokens = table.column("tokens")
    if tokens.null_count:
        row = int(np.flatnonzero(tokens.is_null().to_numpy(zero_copy_only=False))[0])
        raise UsageError(f"{_sentence_name(path, table, row)} has no tokens list (null); {REWRITE_HINT}")
    lengths = np.concatenate([_chunk_lengths(path, table, c, base) for c, base in _chunk_bases(tokens)]
                             or [np.zeros(0, np.int64)])
    images = pc.fill_null(table.column("n_images"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    tpi = meta.tokens_per_image
    if np.any(lengths == 0):
        row = int(np.flatnonzero(lengths == 0)[0])
        raise UsageError(f"{_sentence_name(path, table, row)} holds no images (0 tokens): packed it would train "
                         f"BOS straight to EOS; {REWRITE_HINT}")
    bad = np.flatnonzero(lengths != images * tpi)  # whole images, as many as n_images says
    if bad.size:
        row = int(bad[0])
        raise UsageError(f"{_sentence_name(path, table, row)} holds {int(lengths[row])} tokens, but n_images "
                         f"{int(images[row])} x {tpi} tokens per image = {int(images[row]) * tpi} "
                         f"({bad.size} sentence(s) of the shard disagree); {REWRITE_HINT}")
    return lengths


def check_token_values(path: str, table: pa.Table, meta: TokenShardMeta) -> None:
    """Refuse a shard holding an id outside the codebook its metadata names: such an id is a
    special token (BOS/EOS from 8192) trained as an image code, or has no embedding at all (an
    IndexError deep in torch). Reads every token: called where the sha256 is checked anyway."""
    base = 0
    for chunk in table.column("tokens").chunks:
        if not len(chunk):  # an empty record batch may have no offsets at all
            continue
        offsets = chunk.offsets.to_numpy(zero_copy_only=True)
        values = chunk.values.to_numpy(zero_copy_only=True)[int(offsets[0]):int(offsets[-1])]
        if values.size and int(values.max()) >= meta.codebook_size:
            at = int(np.flatnonzero(values >= meta.codebook_size)[0]) + int(offsets[0])
            row = base + int(np.searchsorted(offsets, at, side="right")) - 1
            raise UsageError(f"{_sentence_name(path, table, row)} holds token id {int(chunk.values[at].as_py())}, "
                             f"outside the codebook 0..{meta.codebook_size - 1} its metadata names (ids from "
                             f"{BOS_ID} are special tokens, from {VOCAB_SIZE} the model has none); {REWRITE_HINT}")
        base += len(chunk)


# -- shards and sources ----------------------------------------------------------------------
def _no_shard_hint(pattern: str) -> str:
    """Why a glob (a folder: every file below it) that matches no committed shard matches none:
    .arrow files without their stats (an unfinished build, or another tool's Arrow files) or
    files of another name (a Parquet copy), each with the way to a shard."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "**", "*")
    files = sorted(p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p))
    loose = [p for p in files if p.endswith(ARROW_SUFFIX)]
    if loose:
        return (f" ({len(loose)} .arrow file(s) match, e.g. {loose[0]}, but none has its {STATS_SUFFIX}: an "
                f"unfinished build (resume it), or Arrow files another tool wrote (pyarrow, HF datasets save_to_disk); "
                f"the {STATS_SUFFIX} is written with the shard, its size and sha256, not by hand: {REWRITE_HINT})")
    others = [p for p in files if not p.endswith(STATS_SUFFIX)]
    if others:
        return (f" ({len(others)} file(s) match, e.g. {others[0]}, but a token shard's name ends in {ARROW_SUFFIX}; "
                f"{REWRITE_HINT})")
    if files:  # stats whose shards are gone
        return (f" ({len(files)} {STATS_SUFFIX} file(s) match, e.g. {files[0]}, with no {ARROW_SUFFIX} shard beside it; "
                f"{REBUILD_HINT})")
    return ""


class _OpenShards:
    """A small LRU of memory-mapped shards: thousands of shards never hold thousands of maps. A
    compressed shard cannot be mapped and is held decompressed while open, so those held together
    stay within one `COMPRESSED_SHARD_BUDGET` (each alone is within it: `read_token_shard`), the
    oldest closed before a shard that would pass it is read, its size judged from its headers; a
    mapped shard costs nothing held. A shard read again after being closed for the budget is
    decompressed again each time: told once, since a mixture that does not fit re-reads on every window."""

    def __init__(self, limit: int = 64, budget: int | None = None) -> None:
        self.limit = limit
        self.budget = COMPRESSED_SHARD_BUDGET if budget is None else budget
        self._open: OrderedDict[str, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()
        self._held: dict[str, int] = {}  # decompressed bytes of each open compressed shard
        self._values_checked: set[str] = set()  # a shard evicted and mapped again is not read twice
        self._closed_for_budget: set[str] = set()
        self._told_rereads = False

    def chunks(self, path: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(offsets int64, values uint16) per Arrow chunk of the tokens column, all zero-copy."""
        found = self._open.get(path)
        if found is not None:
            self._open.move_to_end(path)
            return found
        held = self._judged(path)
        while self._open and (len(self._open) >= self.limit or sum(self._held.values()) + held > self.budget):
            oldest = self._open.popitem(last=False)[0]  # closed before the next is read, not after
            if self._held.pop(oldest, None) and len(self._open) < self.limit - 1:
                self._closed_for_budget.add(oldest)
        if path in self._closed_for_budget and not self._told_rereads:
            self._told_rereads = True
            warnings.warn(f"{path}: compressed token shards are read and decompressed again each time they are "
                          f"used, since those in use together ({held} bytes decompressed for this one, "
                          f"{len(self._closed_for_budget)} closed so far) do not fit the {self.budget}-byte budget "
                          f"(COMPRESSED_SHARD_BUDGET): training runs many times slower; {UNCOMPRESSED_HINT}",
                          stacklevel=2)
        table, meta = read_token_shard(path)  # the sha256 is checked here, before any token is used
        if path not in self._values_checked:
            check_token_values(path, table, meta)
            self._values_checked.add(path)
        found = [(np.asarray(c.offsets.to_numpy(zero_copy_only=True)),
                  np.asarray(c.values.to_numpy(zero_copy_only=True)))
                 for c in table.column("tokens").chunks]
        self._open[path] = found
        if held:
            self._held[path] = held
        return found

    @staticmethod
    def _judged(path: str) -> int:
        """The decompressed bytes `path` will hold once read, from its headers only; a file whose
        size cannot be judged counts 0 here and is refused by `read_token_shard`, with its reason."""
        try:
            return decompressed_bytes(path)
        except (ValueError, OSError):
            return 0


@dataclass
class _Shard:
    path: str
    rows: np.ndarray | None  # selected row numbers, None when every row is selected
    count: int               # selected rows
    chunk_rows: np.ndarray   # first row of each Arrow chunk


class SentenceSource:
    """The sentences of one mixture entry (split-filtered), addressed 0..len-1."""

    def __init__(self, entry: MixtureEntry, split: str | None, cache: _OpenShards, window: int | None = None,
                 paths: Sequence[str] | None = None) -> None:
        """`window`: tokens of a training window, to count the sentences (as packed) longer than one;
        `paths`: the entry's shards where known (a resume's regrouping), else those its glob matches."""
        self.entry = entry
        self.paths = list(paths) if paths is not None else find_shards(entry.glob)
        if not self.paths:
            weight = meant_weight(entry.glob)
            if weight is not None:
                raise UsageError(f"--data {entry.glob!r}: the weight {weight!r} after the last ':' is not a number "
                                 f"(and {entry.glob!r} as a whole matches no committed token shard); write "
                                 f"GLOB:WEIGHT with a number, e.g. {entry.glob.rpartition(':')[0]}:2")
            hint = _no_shard_hint(entry.glob)
            raise UsageError(f"--data {entry.glob!r} matches no committed token shard{hint}")
        self._cache = cache
        self.metas: list[TokenShardMeta] = []
        self.digests: list[str] = []  # each shard's sha256 as its stats record it (checked when first read)
        self.shards: list[_Shard] = []
        self.tokens = 0
        all_rows = 0  # before the split filter
        self.longer = 0  # sentences longer than `window`: they go on in the next window, without their start
        for path in self.paths:
            # the size now; the digest when the shard's tokens are first used (`_OpenShards`), so a
            # run does not read every shard before its first step
            table, meta = read_token_shard(path, verify="size")
            try:
                lengths = check_token_layout(path, table, meta)
            except UsageError:  # a committed shard damaged since is damage, told with its rebuild hint
                verify_token_shard(path)
                raise
            self.metas.append(meta)
            self.digests.append(verify_token_shard(path, full=False)["sha256"])
            rows = None
            count = table.num_rows
            all_rows += count
            if split is not None:
                matches = pc.fill_null(pc.equal(table.column("split"), pa.scalar(split)), False)
                keep = np.flatnonzero(matches.to_numpy(zero_copy_only=False))
                if keep.size != table.num_rows:
                    rows, count = keep.astype(np.int64), int(keep.size)
            sizes = [len(c) for c in table.column("tokens").chunks]
            chunk_rows = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self.shards.append(_Shard(path, rows, count, chunk_rows))
            selected = lengths if rows is None else lengths[rows]
            self.tokens += int(selected.sum())
            if window is not None:
                self.longer += int(np.count_nonzero(selected > window))
            del table
        self.starts = np.concatenate([[0], np.cumsum([s.count for s in self.shards])]).astype(np.int64)
        if all_rows == 0:
            raise UsageError(f"--data {entry.glob!r} matches {len(self.paths)} shard(s) and every one is empty "
                             "(no sentences)")
        if self.starts[-1] == 0:
            raise UsageError(f"--data {entry.glob!r} matches {len(self.paths)} shard(s) but none holds "
                             f"sentences of split {split!r}")
        if self.tokens == 0:
            raise UsageError(f"--data {entry.glob!r}: its sentences hold no tokens")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def digest(self) -> str:
        """One sha256 over the shards' own (from their stats, in read order): a resume whose shards
        were replaced by others of the same counts reads other sentences at the saved positions."""
        return hashlib.sha256("\n".join(self.digests).encode()).hexdigest()

    def _locate(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        shard_no = int(np.searchsorted(self.starts, index, side="right")) - 1
        shard = self.shards[shard_no]
        local = index - int(self.starts[shard_no])
        row = int(shard.rows[local]) if shard.rows is not None else local
        chunk_no = int(np.searchsorted(shard.chunk_rows, row, side="right")) - 1
        offsets, values = self._cache.chunks(shard.path)[chunk_no]
        return offsets, values, row - int(shard.chunk_rows[chunk_no])

    def length(self, index: int) -> int:
        """Tokens of sentence `index`, read from the offsets only."""
        offsets, _, row = self._locate(index)
        return int(offsets[row + 1] - offsets[row])

    def sentence(self, index: int) -> np.ndarray:
        """Sentence `index` as a zero-copy uint16 view of the memory-mapped shard."""
        offsets, values, row = self._locate(index)
        return values[int(offsets[row]):int(offsets[row + 1])]


def check_metadata(sources: Sequence[SentenceSource], vocab_size: int = VOCAB_SIZE,
                   tokens_per_image: int | None = None) -> TokenShardMeta:
    """Refuse shards that the model cannot read or that cannot be mixed: codes must lie below the
    special ids (BOS = 8192) and inside the vocabulary, and every shard must come from one
    tokenizer with one codebook size and one number of tokens per image."""
    first_path, first = sources[0].paths[0], sources[0].metas[0]
    if first.codebook_size > BOS_ID or first.codebook_size > vocab_size:
        raise UsageError(f"{first_path}: codebook size {first.codebook_size} does not fit the model vocabulary "
                         f"(vocab_size {vocab_size}, special ids from {BOS_ID}): its codes would collide "
                         "with BOS/EOS or fall outside the embedding")
    if tokens_per_image is not None and first.tokens_per_image != tokens_per_image:
        raise UsageError(f"{first_path}: {first.tokens_per_image} tokens per image, the model expects "
                         f"{tokens_per_image}")
    for source in sources:
        for path, meta in zip(source.paths, source.metas):
            check_same_tokenizer(path, meta, first_path, first)
    return first


SAME_TOKENIZER = ("codebook_size", "tokens_per_image", "tokenizer_hash")  # what makes codes mean the same images


def check_same_tokenizer(path: str, meta: TokenShardMeta, first_path: str, first: TokenShardMeta) -> None:
    """Refuse a shard of another tokenizer than the first one's: its codes mean other images. The
    name is not compared (shards name their tokenizer's folder, and a copy of the same weights may
    be named anything: `tokenizer_names` says where they differ), as `check_trained_tokenizer`."""
    for name in SAME_TOKENIZER:
        if getattr(meta, name) != getattr(first, name):
            raise UsageError(
                f"token shards disagree on {name}: {path} has {getattr(meta, name)!r}, {first_path} has "
                f"{getattr(first, name)!r}; shards of different tokenizers cannot be mixed")


def tokenizer_names(sources: Sequence[SentenceSource]) -> str | None:
    """A note where shards of one tokenizer (`check_same_tokenizer`) record it under several names,
    naming a shard of each: the codes mean the same images, so they are mixed, but a user who
    meant two tokenizers learns it was one; None where they agree."""
    first: dict[str, str] = {}
    for source in sources:
        for path, meta in zip(source.paths, source.metas):
            first.setdefault(meta.tokenizer_name, path)
    if len(first) < 2:
        return None
    named = ", ".join(f"{name!r} ({path})" for name, path in first.items())
    return (f"token shards of one tokenizer (the same weights hash, codebook and tokens per image) record it "
            f"under {len(first)} names: {named}; they are mixed as one, and checkpoints record the first name")




def tokenizer_record(meta: TokenShardMeta) -> dict[str, Any]:
    """The shards' tokenizer as a checkpoint records it (`TokenWindows.fingerprint`'s 'tokenizer'),
    so evaluate and generate compare what a model was trained on with what they are given."""
    return {"name": meta.tokenizer_name, "hash": meta.tokenizer_hash, "codebook_size": meta.codebook_size,
            "tokens_per_image": meta.tokens_per_image}


def describe_tokenizer(record: Mapping[str, Any]) -> str:
    """'uvd-tiny' (weights 3f2a..., 8192 codes, 256 tokens per image): how an error names one; a
    part the record lacks (the hash of a tokenizer not loaded yet) is left out."""
    parts = [f"weights {str(record['hash'])[:16]}"] if record.get("hash") is not None else []
    parts += [f"{record.get('codebook_size')} codes", f"{record.get('tokens_per_image')} tokens per image"]
    return f"{record.get('name')!r} ({', '.join(parts)})"


UNKNOWN_HASH = "unknown"  # what `import-jsonl` records for shards of weights it was not told


def _comparable(field: str, recorded: Mapping[str, Any], given: Mapping[str, Any]) -> bool:
    """Whether `field` can be compared: a weights hash only where both sides know it."""
    return field != "hash" or all(value not in (None, "", UNKNOWN_HASH)
                                  for value in (recorded.get(field), given.get(field)))


def check_trained_tokenizer(checkpoint: str, recorded: Mapping[str, Any], given: Mapping[str, Any], what: str,
                            fields: Sequence[str] = ("hash", "codebook_size", "tokens_per_image")) -> None:
    """Refuse `given` (the tokenizer of `what`: shards, a --tokenizer folder) where it differs from
    the one `checkpoint` was trained on in any of `fields`: its codes mean other images, so a
    perplexity or a strip from it means nothing. Names are not compared (a copy of the same weights
    may be named anything: shards name their tokenizer's folder), nor a weights hash one side does
    not know (`import-jsonl`'s shards record `unknown` unless told: such a model was refused with
    every tokenizer); the sizes always are."""
    differ = [name for name in fields if name in recorded and _comparable(name, recorded, given)
              and recorded[name] != given.get(name)
              and not (name == "hash" and recorded[name] == given.get("weights_hash"))]  # shards before config ids
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        raise UsageError(f"{what} has tokenizer {describe_tokenizer(given)}, but {checkpoint} was trained on "
                         f"{describe_tokenizer(recorded)} ({', '.join(differ)} {verb}): its codes mean other "
                         f"images; give the tokenizer (or shards made with it) the model was trained on")


# -- the stream ------------------------------------------------------------------------------
@dataclass
class _Cursor:
    source: int = -1
    index: int = -1
    offset: int = 0
    length: int = 0  # of the current sentence as packed (with BOS/EOS in paper mode)


def _comparable_sources(saved: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`now`'s sources as a saved state can be compared with them: a state saved before sources
    carried their shards' digest compares counts only, and a warning says so."""
    if not saved or all("sha256" in source for source in saved):
        return now
    warnings.warn("this checkpoint's data state predates shard digests: the data is compared by glob and shard "
                  "and sentence counts only, so shards replaced by others of the same counts are not noticed",
                  CheckpointWarning, stacklevel=5)
    return [{k: v for k, v in source.items() if k != "sha256"} for source in now]


def _replaced_only(saved: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """The globs of the sources that differ, when each differs in its shards' digest alone."""
    if len(saved) != len(now):
        return []
    differing = [(a, b) for a, b in zip(saved, now) if a != b]
    if not all({**a, "sha256": None} == {**b, "sha256": None} for a, b in differing):
        return []
    return [b["glob"] for _, b in differing]


def _same_shards(saved: list[dict[str, Any]], now: list[dict[str, Any]]) -> bool:
    """Whether sources differ at most in how their globs are spelt, each naming shards of the same
    counts and digest as before (a relative path against an absolute one, a link to the folder or a
    copy of it, a glob against the name of the one shard it matches): the same sentences in the
    same order, so the saved positions hold. A state without digests (older than them) cannot show
    the shards are the same: its globs must match as before."""
    return len(saved) == len(now) and all("sha256" in a and "sha256" in b and {**a, "glob": None} == {**b, "glob": None}
                                          for a, b in zip(saved, now))


def _changed(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The fingerprint keys that differ, sources spelt otherwise over the same shards not among them."""
    changed = sorted(k for k in now if saved.get(k) != now.get(k))
    if "sources" in changed and _same_shards(saved.get("sources", []), now["sources"]):
        changed.remove("sources")
    return changed


def _data_change(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """The refusal of a resume whose data differs from the saved state's: sources whose shards hold
    other bytes under the same counts are named as such, anything else shown saved against now
    (`now` as the saved grouping reads it where the shell's expansion regroups: `_regrouped`)."""
    changed = _changed(saved, now)
    replaced = _replaced_only(saved.get("sources", []), now["sources"]) if changed == ["sources"] else []
    if replaced:
        return (f"the data changed since this checkpoint: the shards of {', '.join(repr(g) for g in replaced)} hold "
                "other bytes (the same shard and sentence counts, but the sha256 their stats record differ); "
                "resume with the same data, or start a fresh run")
    verb = "differs" if len(changed) == 1 else "differ"
    return (f"the data changed since this checkpoint ({', '.join(changed)} {verb}: saved "
            f"{ {k: saved.get(k) for k in changed} }, now { {k: now.get(k) for k in changed} }); "
            "resume with the same data, or start a fresh run")


@dataclass
class _SourceState:
    epoch: int = 0
    position: int = 0
    order: np.ndarray | None = field(default=None, repr=False)


class TokenWindows:
    """Micro-batches (batch_size, seq_len + 1) int64 of this rank, forever (see the module doc)."""

    def __init__(self, mixture: Mixture, seq_len: int, batch_size: int, mode: str = "paper", seed: int = 0,
                 rank: int = 0, world_size: int = 1, vocab_size: int = VOCAB_SIZE,
                 tokens_per_image: int | None = None, max_open_shards: int = 64) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown packing mode {mode!r}; choose from {', '.join(MODES)}")
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be positive, got {seq_len} and {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if mode == "paper" and vocab_size <= EOS_ID:
            raise ValueError(f"paper mode needs BOS/EOS ids {BOS_ID}/{EOS_ID} inside vocab_size {vocab_size}")
        self.mixture, self.seq_len, self.batch_size, self.mode, self.seed = mixture, seq_len, batch_size, mode, seed
        self.rank, self.world_size = rank, world_size
        self._cache = cache = _OpenShards(max_open_shards)
        self._extra = extra = 2 if mode == "paper" else 0
        self._vocab_size, self._tokens_per_image = vocab_size, tokens_per_image
        self._use(mixture, [SentenceSource(entry, mixture.split, cache, seq_len - extra) for entry in mixture.entries])
        self.reset()

    def _use(self, mixture: Mixture, sources: list[SentenceSource]) -> None:
        """Draw from `sources`, the entries of `mixture`, at its weights."""
        self.mixture, self.sources = mixture, sources
        self.meta = check_metadata(self.sources, self._vocab_size, self._tokens_per_image)
        weights = np.array([e.weight for e in mixture.entries], np.float64)
        self._cumulative = np.cumsum(weights / weights.sum())
        self._cumulative[-1] = 1.0

    def _comparable(self, saved: dict[str, Any]) -> dict[str, Any]:
        """This loader's fingerprint as `saved` can be compared with it: a key the saved state lacks
        was not recorded yet when it was written, and is not compared."""
        now = {k: v for k, v in self.fingerprint().items() if k in saved or k not in OPTIONAL_FINGERPRINT}
        now["sources"] = _comparable_sources(saved.get("sources", []), now["sources"])
        return now

    def _regrouped(self, saved: dict[str, Any]) -> dict[str, Any] | None:
        """Take the saved entries' grouping where this run names the same shards as a shell expansion
        regroups them (`data_regroup`), and return the fingerprint under it: the run goes on where it
        matches the saved one, and a refusal names only what else changed (a resume of the quoted
        glob as the shell's expansion with another --mode was told as 'mode, sources, weights
        differ'). None, with this run's grouping kept, where no regrouping fits."""
        named = [Named(tuple(s.paths), tuple(s.digests), s.entry.weight) for s in self.sources]
        groups = regroup(saved.get("sources", []), saved.get("weights", []), named)
        if groups is None:
            return None
        before = self.mixture, self.sources
        mixture = Mixture(tuple(MixtureEntry(glob, weight) for glob, weight, _ in groups), self.mixture.split)
        window = self.seq_len - self._extra
        self._use(mixture, [SentenceSource(entry, mixture.split, self._cache, window, paths)
                            for entry, (_, _, paths) in zip(mixture.entries, groups)])
        now = self._comparable(saved)
        if now != saved:
            self._use(*before)
        return now

    def notes(self) -> list[str]:
        """What a user should know of the data that is not refused: one tokenizer recorded under
        several names, shards named by more than one entry (`data_overlap`)."""
        return [note for note in (tokenizer_names(self.sources), overlap_note(self.shared_shards())) if note]

    def shared_shards(self) -> list[dict[str, Any]]:
        """The shards more than one mixture entry names, each with its effective share of the
        sentences drawn (`data_overlap.shared_shards`)."""
        return shared_shards([EntryShards(s.entry.glob, s.entry.weight, tuple(s.paths),
                                          tuple(shard.count for shard in s.shards)) for s in self.sources])

    # state ----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _MIX_STREAM])))
        self._source_states = [_SourceState() for _ in self.sources]
        self._cursor = _Cursor()
        self.windows = 0  # global windows consumed (all ranks)
        # packed tokens taken from each mixture entry since this loader started: the realised mix
        self.tokens_drawn = np.zeros(len(self.sources), np.int64)

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state is only valid for: the same sentences in the same order, same packing,
        codes of the same tokenizer (a build tokenized again keeps its shards and counts)."""
        return {"mode": self.mode, "seq_len": self.seq_len, "seed": self.seed,
                "sources": [{"glob": s.entry.glob, "shards": len(s.paths), "sentences": len(s), "sha256": s.digest()}
                            for s in self.sources],
                "weights": [e.weight for e in self.mixture.entries], "split": self.mixture.split,
                "tokenizer": tokenizer_record(self.meta)}

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able types: positions, epochs, the cursor and the mixture generator."""
        c = self._cursor
        return {
            "version": STATE_VERSION,
            "windows": self.windows,
            "cursor": {"source": c.source, "index": c.index, "offset": c.offset},
            "sources": [{"epoch": s.epoch, "position": s.position} for s in self._source_states],
            "rng": self._rng.bit_generator.state,
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise CheckpointError(f"data-loader state version {state.get('version')} is not {STATE_VERSION}")
        saved = state["fingerprint"]
        now = self._comparable(saved)
        if _changed(saved, now):  # one glob against the shell's expansion of it: the saved grouping
            now = self._regrouped(saved) or now
            if _changed(saved, now):
                raise UsageError(_data_change(saved, now))
        self.reset()
        self._rng.bit_generator.state = state["rng"]
        for source_state, saved_source in zip(self._source_states, state["sources"]):
            source_state.epoch, source_state.position = int(saved_source["epoch"]), int(saved_source["position"])
        cursor = state["cursor"]
        self._cursor = _Cursor(int(cursor["source"]), int(cursor["index"]), int(cursor["offset"]), 0)
        if self._cursor.source >= 0:
            self._cursor.length = self.sources[self._cursor.source].length(self._cursor.index) + self._extra
        self.windows = int(state["windows"])

    @property
    def epochs(self) -> list[int]:
        return [s.epoch for s in self._source_states]

    # the stream -----------------------------------------------------------------------------
    def _order(self, source: int) -> np.ndarray:
        state = self._source_states[source]
        if state.order is None:
            generator = np.random.default_rng([self.seed, _PERMUTATION_STREAM, source, state.epoch])
            state.order = generator.permutation(len(self.sources[source]))
        return state.order

    def _next_sentence(self) -> None:
        source = int(np.searchsorted(self._cumulative, self._rng.random(), side="right"))
        source = min(source, len(self.sources) - 1)
        state = self._source_states[source]
        if state.position >= len(self.sources[source]):
            state.epoch, state.position, state.order = state.epoch + 1, 0, None
        index = int(self._order(source)[state.position])
        state.position += 1
        self._cursor = _Cursor(source, index, 0, self.sources[source].length(index) + self._extra)

    def _copy(self, out: np.ndarray, start: int, count: int) -> None:
        """Tokens [start, start+count) of the current sentence as packed, into `out`."""
        c = self._cursor
        tokens = self.sources[c.source].sentence(c.index)
        if self.mode == "stream":
            out[:count] = tokens[start:start + count]
            return
        end = start + count
        pos = 0
        if start == 0:
            out[0] = BOS_ID
            pos = 1
        a, b = max(start, 1) - 1, min(end, c.length - 1) - 1
        if b > a:
            out[pos:pos + b - a] = tokens[a:b]
            pos += b - a
        if end == c.length:
            out[pos] = EOS_ID

    def _take(self, out: np.ndarray | None, count: int) -> None:
        filled = 0
        while filled < count:
            if self._cursor.offset >= self._cursor.length:
                self._next_sentence()
                continue
            n = min(count - filled, self._cursor.length - self._cursor.offset)
            self.tokens_drawn[self._cursor.source] += n
            if out is not None:
                self._copy(out[filled:filled + n], self._cursor.offset, n)
            self._cursor.offset += n
            filled += n

    def _window(self, out: np.ndarray | None) -> None:
        """The next global window into `out` (or skipped when None); the cursor moves by seq_len,
        so the window's last token is the next window's first."""
        self._take(None if out is None else out[:self.seq_len], self.seq_len)
        if self._cursor.offset >= self._cursor.length:
            self._next_sentence()
        if out is not None:
            self._copy(out[self.seq_len:], self._cursor.offset, 1)
        self.windows += 1

    def next_batch(self) -> np.ndarray:
        """This rank's next micro-batch (batch_size, seq_len + 1) int64; other ranks' windows of the
        same global micro-batch are skipped without reading their tokens."""
        batch = np.empty((self.batch_size, self.seq_len + 1), np.int64)
        for r in range(self.world_size):
            for i in range(self.batch_size):
                self._window(batch[i] if r == self.rank else None)
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next_batch()

    def describe(self) -> list[dict[str, Any]]:
        """Per mixture entry: shards, sentences and tokens after the split filter, and the sentences
        longer than a window as packed (BOS/EOS in paper mode): they are not cut or dropped but go on
        in the next window, whose first tokens then have no context from the sentence's start."""
        total = sum(e.weight for e in self.mixture.entries)
        return [{"glob": s.entry.glob, "weight": s.entry.weight, "share": s.entry.weight / total,
                 "shards": len(s.paths), "sentences": len(s), "tokens": s.tokens,
                 "longer_than_window": s.longer} for s in self.sources]
