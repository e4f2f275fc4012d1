"""Trainer data: mixture spec, packing (paper / stream), shuffling, mixture sampling, rank sharding,
exact-resume state and refusals, on shards written by the real writer."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
from trainer_shards import META, numbered_sentences, write_foreign_shard, write_shards

from trainer.config import BOS_ID, EOS_ID, UsageError
from trainer.data import Mixture, MixtureEntry, TokenWindows, mixture_from_args, parse_data_arg
from uvd_pipeline.shards import ShardDamaged

T = 32  # seq_len


def _stream(loader: TokenWindows, batches: int) -> np.ndarray:
    """The token stream the windows cut: the first window whole, then each window minus its first
    token (which repeats the previous window's last)."""
    windows = [w for _ in range(batches) for w in loader.next_batch()]
    for a, b in zip(windows, windows[1:]):
        assert a[-1] == b[0]
    return np.concatenate([windows[0]] + [w[1:] for w in windows[1:]])


def _loader(glob: str, **kwargs) -> TokenWindows:
    args = {"seq_len": T, "batch_size": 2, "mode": "paper", "seed": 0, **kwargs}
    return TokenWindows(Mixture((MixtureEntry(glob),)), **args)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("numbered")
    sentences = numbered_sentences(24)
    write_shards(folder, "web", sentences, shards=3)
    return str(folder / "*.arrow"), sentences


def test_paper_mode_wraps_every_sentence_in_bos_eos(numbered):
    glob, sentences = numbered
    total = sum(s.size + 2 for s in sentences)
    stream = _stream(_loader(glob), batches=(2 * total) // (2 * T) + 2)
    assert stream.dtype == np.int64
    starts = np.flatnonzero(stream == BOS_ID)
    assert starts[0] == 0
    pieces = [stream[a:b] for a, b in zip(starts, starts[1:])]
    seen = []
    for piece in pieces:  # BOS, one sentence's tokens, EOS
        assert piece[-1] == EOS_ID and EOS_ID not in piece[1:-1] and BOS_ID not in piece[1:]
        body = piece[1:-1]
        assert body.size and np.all(body == body[0]) and body.size == sentences[body[0]].size
        seen.append(int(body[0]))
    n = len(sentences)
    assert sorted(seen[:n]) == list(range(n)), "an epoch is a permutation of all sentences"
    assert sorted(seen[n:2 * n]) == list(range(n))
    assert seen[:n] != list(range(n)) and seen[:n] != seen[n:2 * n], "shuffled, and anew each epoch"


def test_stream_mode_concatenates_plain_sentences(numbered):
    glob, sentences = numbered
    stream = _stream(_loader(glob, mode="stream"), batches=6)
    assert stream.max() < 8192, "no special ids in stream mode"
    # runs of equal values are whole sentences (neighbours never share a value within an epoch)
    change = np.flatnonzero(np.diff(stream)) + 1
    runs = np.split(stream, change)
    for run in runs[1:-1]:
        assert run.size == sentences[run[0]].size


@pytest.mark.parametrize("mode", ["paper", "stream"])
def test_sentences_longer_than_a_window_are_counted(numbered, mode: str):
    """They are neither cut nor dropped (they go on in the next window) but counted, as packed."""
    glob, sentences = numbered
    extra = 2 if mode == "paper" else 0
    described = _loader(glob, mode=mode).describe()[0]
    assert described["longer_than_window"] == sum(s.size + extra > T for s in sentences) > 0
    assert _loader(glob, mode=mode, seq_len=1000).describe()[0]["longer_than_window"] == 0


def test_sentences_are_zero_copy_views(numbered):
    glob, sentences = numbered
    source = _loader(glob).sources[0]
    view = source.sentence(3)
    assert not view.flags.owndata and not view.flags.writeable
    assert source.length(3) == view.size and len(source) == len(sentences)


def test_same_seed_same_batches_other_seed_other(numbered):
    glob, _ = numbered
    a, b, c = _loader(glob), _loader(glob), _loader(glob, seed=1)
    first = [a.next_batch() for _ in range(5)]
    assert all(np.array_equal(x, b.next_batch()) for x in first)
    assert not all(np.array_equal(x, c.next_batch()) for x in first)


def test_mixture_weights_are_respected(tmp_path: Path):
    write_shards(tmp_path / "a", "a", numbered_sentences(40, images=lambda i: 1, base=0), shards=2)
    write_shards(tmp_path / "b", "b", numbered_sentences(40, images=lambda i: 1, base=100), shards=1)
    mixture = mixture_from_args([f"{tmp_path}/a/*.arrow:3", f"{tmp_path}/b:1"])
    assert [e.weight for e in mixture.entries] == [3.0, 1.0]
    loader = TokenWindows(mixture, seq_len=16 * 8, batch_size=4, mode="stream", seed=7)
    stream = _stream(loader, batches=100)  # 100 * 4 * 8 = 3200 sentences of 16 tokens
    share_a = np.mean(stream < 100)
    assert abs(share_a - 0.75) < 0.03, share_a  # binomial sd ~0.008
    again = TokenWindows(mixture, seq_len=16 * 8, batch_size=4, mode="stream", seed=7)
    assert np.array_equal(_stream(again, batches=100), stream)
    # both sources cycle through their epochs on their own
    assert loader.epochs[0] > loader.epochs[1] > 0


def test_rank_slices_are_disjoint_and_cover_the_global_batch(numbered):
    glob, _ = numbered
    world, per_rank = 3, 2
    single = _loader(glob, batch_size=world * per_rank)
    ranks = [_loader(glob, batch_size=per_rank, rank=r, world_size=world) for r in range(world)]
    for _ in range(4):
        expected = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert np.array_equal(np.concatenate(parts), expected)
    # and the windows of different ranks are different windows
    a, b = (_loader(glob, batch_size=1, rank=r, world_size=2, mode="stream") for r in range(2))
    wa, wb = a.next_batch()[0], b.next_batch()[0]
    assert wa[-1] == wb[0] and not np.array_equal(wa, wb)


def test_state_resumes_the_identical_sequence(numbered):
    glob, _ = numbered
    loader = _loader(glob, batch_size=3)
    for _ in range(7):
        loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint stores
    expected = [loader.next_batch() for _ in range(12)]  # crosses epoch boundaries
    fresh = _loader(glob, batch_size=3)
    fresh.load_state_dict(state)
    assert all(np.array_equal(e, fresh.next_batch()) for e in expected)
    assert fresh.state_dict() == json.loads(json.dumps(loader.state_dict()))
    # a state belongs to its data
    other = _loader(glob, batch_size=3, seq_len=T * 2)
    with pytest.raises(ValueError, match="data changed since this checkpoint.*seq_len"):
        other.load_state_dict(state)


def test_a_state_refuses_the_same_sentences_retokenized(tmp_path: Path):
    """A build tokenized again with another tokenizer has the same shards and sentence counts; a
    resumed fit went on training on the new codes as if they were the old ones."""
    sentences = numbered_sentences(12)
    write_shards(tmp_path, "web", sentences)
    loader = _loader(str(tmp_path))
    loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    write_shards(tmp_path, "web", sentences, meta=dataclasses.replace(META, tokenizer_hash="retrained"))
    with pytest.raises(UsageError, match=r"data changed since this checkpoint.*tokenizer.*retrained"):
        _loader(str(tmp_path)).load_state_dict(state)
    # a state saved before the tokenizer (and the shards' digests) were recorded still resumes
    del state["fingerprint"]["tokenizer"]
    del state["fingerprint"]["sources"][0]["sha256"]
    with pytest.warns(UserWarning, match="predates shard digests: .* by glob and shard and sentence counts only"):
        _loader(str(tmp_path)).load_state_dict(state)


def test_a_state_refuses_shards_replaced_by_others_of_the_same_counts(tmp_path: Path):
    """The fingerprint held glob, shard and sentence counts only, so shards rewritten with other
    sentences of the same counts resumed at positions that now meant other data (hunt53a
    resume_data_change 'replaced': rc 0). The shards' sha256 from their stats are in it now."""
    write_shards(tmp_path / "a", "web", numbered_sentences(12), shards=2)
    write_shards(tmp_path / "b", "web", numbered_sentences(6), shards=1)
    mixture = mixture_from_args([f"{tmp_path}/a/*.arrow", f"{tmp_path}/b/*.arrow"])
    loader = TokenWindows(mixture, seq_len=T, batch_size=2)
    loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    TokenWindows(mixture, seq_len=T, batch_size=2).load_state_dict(state)  # the same shards resume
    write_shards(tmp_path / "a", "web", numbered_sentences(12)[::-1], shards=2)  # same counts, other order
    with pytest.raises(UsageError, match=r"^the data changed since this checkpoint: the shards of '.*/a/\*\.arrow' "
                                         r"hold other bytes \(the same shard and sentence counts, but the sha256"):
        TokenWindows(mixture, seq_len=T, batch_size=2).load_state_dict(state)
    # a state from before digests compares the counts, and says so
    for source in state["fingerprint"]["sources"]:
        del source["sha256"]
    with pytest.warns(UserWarning, match="predates shard digests"):
        TokenWindows(mixture, seq_len=T, batch_size=2).load_state_dict(state)


def test_split_filter(tmp_path: Path):
    sentences = numbered_sentences(20)
    write_shards(tmp_path, "web", sentences, split=lambda i: "val" if i % 4 == 0 else "train")
    train = _loader(str(tmp_path), mode="stream")
    assert len(train.sources[0]) == 15
    values = set(np.unique(_stream(train, batches=20)).tolist())
    assert values == {i for i in range(20) if i % 4}
    val = TokenWindows(Mixture((MixtureEntry(str(tmp_path)),), split="val"), seq_len=T, batch_size=2)
    assert len(val.sources[0]) == 5
    everything = TokenWindows(mixture_from_args([str(tmp_path)], split="all"), seq_len=T, batch_size=2)
    assert len(everything.sources[0]) == 20
    with pytest.raises(ValueError, match="none holds sentences of split 'test'"):
        TokenWindows(Mixture((MixtureEntry(str(tmp_path)),), split="test"), seq_len=T, batch_size=2)



def test_a_mixture_file_naming_no_split_keeps_the_split_flag(tmp_path: Path):
    """`--split val --data mix.yaml` trained on train when the file named no split (hunt53a
    mix_split: 8 sentences instead of 4): the file's split wins only when it names one."""
    write_shards(tmp_path, "web", numbered_sentences(20), split=lambda i: "val" if i % 4 == 0 else "train")
    (tmp_path / "mix.yaml").write_text("data:\n  - {glob: 'web-*.arrow', weight: 1}\n")
    (tmp_path / "val.yaml").write_text("split: val\ndata: ['web-*.arrow']\n")
    (tmp_path / "every.yaml").write_text("split: all\ndata: ['web-*.arrow']\n")
    counts = {}
    for files, flag in ((["mix.yaml"], "val"), (["mix.yaml"], "all"), (["mix.yaml"], "train"),
                        (["val.yaml"], "train"), (["every.yaml"], "train")):
        mixture = mixture_from_args([str(tmp_path / f) for f in files], split=flag)
        counts[files[0], flag] = (mixture.split, len(TokenWindows(mixture, seq_len=T, batch_size=1).sources[0]))
    assert counts == {("mix.yaml", "val"): ("val", 5), ("mix.yaml", "all"): (None, 20),
                      ("mix.yaml", "train"): ("train", 15), ("val.yaml", "train"): ("val", 5),
                      ("every.yaml", "train"): (None, 20)}
    with pytest.raises(UsageError, match=r"name different splits \(.*val.yaml: val, .*every.yaml: all\)"):
        mixture_from_args([str(tmp_path / "val.yaml"), str(tmp_path / "every.yaml")])


@pytest.mark.parametrize("text, message", [
    ("split: train\ndata:\n  - {glob: 'a/*.arrow', wieght: 9}\n",
     r"mixture entry .*'wieght'.* has unknown key\(s\) 'wieght'; the keys are glob, weight"),
    ("spilt: val\ndata: ['a/*.arrow']\n", r"the mixture file has unknown key\(s\) 'spilt'; the keys are split, data"),
    ("data:\n  - {glob: 'a/*.arrow', weight: true}\n", r"its weight is not a number"),
    ("data:\n  - {glob: 'a/*.arrow', weight: [2]}\n", r"its weight is not a number"),
    ("data:\n  - {glob: 'a/*.arrow', weight: 1.0e308}\n  - {glob: 'b/*.arrow', weight: 1.0e308}\n",
     r"weights add up to more than a float holds \(1e\+308, 1e\+308\); .*scale them down"),
    ("data:\n  - {glob: 'a/*.arrow', weight: 2}\n  - {glob: './a/*.arrow', weight: 1}\n",
     r"'.*/\./a/\*\.arrow' is named twice \(also as '.*/a/\*\.arrow'\)"),
])
def test_mixture_file_mistakes_are_refused(tmp_path: Path, text: str, message: str):
    """Each was taken in silence (hunt53a data_damage2/3, mix_split): a misspelt key dropped (its
    entry drawn at weight 1), `true` read as 1.0, two weights of 1e308 drawing every share 0.0, the
    same shards named twice drawn at the sum of both weights."""
    (tmp_path / "mix.yaml").write_text(text)
    with pytest.raises(UsageError, match=message):
        mixture_from_args([str(tmp_path / "mix.yaml")])


def test_a_weight_that_is_not_a_number_is_named_as_one(tmp_path: Path, numbered):
    """`--data 'g:abc'` said the glob matches no committed token shard; a weight in numeric text
    (PyYAML reads `1e3` as text) still counts, and URLs and paths with colons stay whole."""
    glob, _ = numbered
    with pytest.raises(UsageError, match=r"--data '.*\*\.arrow:abc': the weight 'abc' after the last ':' is not a "
                                         r"number .*e\.g\. .*\*\.arrow:2"):
        TokenWindows(mixture_from_args([f"{glob}:abc"]), seq_len=T, batch_size=1)
    with pytest.raises(UsageError, match=r"--data: 'a/\*\.arrow' is named twice \(also as 'a/\*\.arrow'\)"):
        mixture_from_args(["a/*.arrow:2", "a/*.arrow"])
    with pytest.raises(UsageError, match="more than a float holds"):
        mixture_from_args(["a/*.arrow:1e308", "b/*.arrow:1e308"])
    (tmp_path / "mix.yaml").write_text("data:\n  - {glob: 'a/*.arrow', weight: 1e3}\n")
    assert mixture_from_args([str(tmp_path / "mix.yaml")]).entries[0].weight == 1000.0
    with pytest.raises(UsageError, match=r"'/nowhere/a:b/x\.arrow' matches no committed token shard"):
        TokenWindows(mixture_from_args(["/nowhere/a:b/x.arrow"]), seq_len=T, batch_size=1)


def test_mixture_spec_parsing(tmp_path: Path):
    assert parse_data_arg("build/t/*.arrow:2.5") == MixtureEntry("build/t/*.arrow", 2.5)
    assert parse_data_arg("gs://bucket/t/*.arrow") == MixtureEntry("gs://bucket/t/*.arrow", 1.0)
    assert parse_data_arg("c:/t/x.arrow") == MixtureEntry("c:/t/x.arrow", 1.0)
    spec = tmp_path / "mix.yaml"
    spec.write_text("split: val\ndata:\n  - glob: a/*.arrow\n    weight: 2\n  - /abs/b/*.arrow:0.5\n")
    mixture = mixture_from_args([str(spec)])
    # relative globs in a file are relative to the file, absolute ones stay
    assert mixture == Mixture((MixtureEntry(f"{tmp_path}/a/*.arrow", 2.0), MixtureEntry("/abs/b/*.arrow", 0.5)),
                              split="val")
    (tmp_path / "mix.json").write_text(json.dumps([{"glob": "c/*.arrow"}]))
    assert mixture_from_args([str(tmp_path / "mix.json")]).entries == (MixtureEntry(f"{tmp_path}/c/*.arrow"),)
    with pytest.raises(ValueError, match="positive"):
        parse_data_arg("a/*.arrow:0")


def test_refusals(tmp_path: Path, numbered):
    glob, sentences = numbered
    with pytest.raises(ValueError, match=r"'/nowhere/\*\.arrow' matches no committed token shard"):
        _loader("/nowhere/*.arrow")
    # an .arrow without its stats file is not committed: the message says so
    write_shards(tmp_path / "loose", "x", sentences[:2], shards=1)
    (tmp_path / "loose" / "x-00000.stats.json").unlink()
    with pytest.raises(ValueError, match="none has its .stats.json"):
        _loader(str(tmp_path / "loose" / "*.arrow"))
    # shards of another tokenizer geometry cannot be mixed in
    write_shards(tmp_path / "other", "o", numbered_sentences(4, tokens_per_image=8), shards=1,
                 meta=dataclasses.replace(META, tokens_per_image=8))
    mixture = Mixture((MixtureEntry(glob), MixtureEntry(str(tmp_path / "other"))))
    with pytest.raises(ValueError, match="disagree on tokens_per_image: .*o-00000.arrow has 8"):
        TokenWindows(mixture, seq_len=T, batch_size=1)
    # codes that would collide with BOS/EOS
    write_shards(tmp_path / "big", "g", sentences[:2], shards=1, meta=dataclasses.replace(META, codebook_size=16384))
    with pytest.raises(ValueError, match="codebook size 16384 does not fit the model vocabulary"):
        _loader(str(tmp_path / "big"))
    with pytest.raises(ValueError, match="paper mode needs BOS/EOS"):
        _loader(glob, vocab_size=8192)
    # a shard of no sentences is told as empty, not as lacking the split
    write_shards(tmp_path / "empty", "e", [], shards=1)
    with pytest.raises(ValueError, match="1 shard\\(s\\) and every one is empty"):
        _loader(str(tmp_path / "empty"))


IMAGE = list(range(16))  # one image of META's 16 tokens per image
FOREIGN = {  # a shard another tool wrote: (token lists, tokens value type, n_images column, what the refusal says)
    "id_past_vocab": ([IMAGE, [9000] * 16], None, None, r"s00001.*token id 9000.*codebook"),
    "special_id_in_an_image": ([IMAGE, IMAGE[:5] + [8200] + IMAGE[6:]], None, None, r"s00001.*token id 8200"),
    "int64_tokens": ([IMAGE, IMAGE], pa.int64(), None, r"'tokens'.*large_list<item: int64>.*uint16"),
    "negative_int64": ([IMAGE, [-1] * 16], pa.int64(), None, r"'tokens'.*int64.*uint16"),
    "not_whole_images": ([IMAGE, IMAGE + [3]], None, [1, 1], r"s00001.*17 tokens.*16 tokens per image"),
    "n_images_disagrees": ([IMAGE, IMAGE * 2], None, [1, 3], r"s00001.*32 tokens.*n_images 3"),
    "null_tokens": ([IMAGE, None], None, [1, 0], r"s00001.*no tokens list \(null\)"),
    "no_images": ([IMAGE, []], None, [1, 0], r"s00001.*holds no images"),
    # pa.array([[.., None, ..]]): a null id inside a list (old code: ArrowInvalid from to_numpy deep in the loader)
    "null_id_in_a_list": ([IMAGE, IMAGE[:5] + [None] + IMAGE[6:]], None, None,
                          r"s00001.*null token id \(position 5 of the sentence\)"),
}


@pytest.mark.parametrize("case", FOREIGN, ids=list(FOREIGN))
@pytest.mark.parametrize("mode", ["paper", "stream"])
def test_a_foreign_shard_with_bad_tokens_is_refused_naming_file_and_sentence(tmp_path: Path, case: str, mode: str):
    """Ids the model has no embedding for (or that are BOS/EOS), another integer type, lists that are
    not whole images: refused with the file and sentence named, before any of them reaches a batch
    (they went into batches as they were: an IndexError deep in torch's embedding, or special ids
    trained as image codes)."""
    lists, value_type, n_images, message = FOREIGN[case]
    path = write_foreign_shard(tmp_path / "foreign-00000.arrow", lists, value_type, n_images)
    with pytest.raises(UsageError, match=message) as refused:
        loader = _loader(path, mode=mode, batch_size=1, seq_len=8)
        for _ in range(8):  # more than both sentences: every token would have been in a batch
            loader.next_batch()
    assert "foreign-00000.arrow" in str(refused.value)


def test_a_bad_id_is_named_in_a_shard_of_many_record_batches(tmp_path: Path):
    path = write_foreign_shard(tmp_path / "f-00000.arrow", [IMAGE, IMAGE, IMAGE[:-1] + [8193], IMAGE], batch_rows=1)
    with pytest.raises(UsageError, match=r"sentence 's00002' \(row 2\) holds token id 8193"):
        _loader(path, mode="stream", batch_size=1, seq_len=8).next_batch()


def test_a_committed_shard_damaged_in_its_layout_is_damaged_not_foreign(tmp_path: Path):
    """The layout is checked before the digest (which is read only when the tokens are used): a
    flipped n_images must still be told as damage with its rebuild hint, not as another tool's shard."""
    path = Path(write_shards(tmp_path, "web", numbered_sentences(6, images=lambda i: 1 + i % 3), shards=1)[0])
    data = bytearray(path.read_bytes())
    at = bytes(data).find(np.array([1, 2, 3, 1, 2, 3], "<i4").tobytes())
    assert at > 0
    data[at] = 7  # n_images of row 0: 7, while its tokens are one image
    path.write_bytes(bytes(data))  # same size: only the digest tells
    with pytest.raises(ShardDamaged, match=f"{path}: sha256 differs"):
        _loader(str(path))


def test_the_project_own_shards_pass_the_token_checks(numbered):
    glob, sentences = numbered
    loader = _loader(glob, mode="stream")
    stream = _stream(loader, batches=8)
    assert stream.max() == len(sentences) - 1



def _patch(path: str, arrays: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Replace each (written, declared) array's bytes in a shard and reseal its stats, as a tool that
    writes Arrow buffers itself could: pyarrow's own writers validate list offsets, a memory-mapped
    read does not."""
    import hashlib

    shard = Path(path)
    data = shard.read_bytes()
    for written, declared in arrays:
        assert data.count(written.tobytes()) == 1
        data = data.replace(written.tobytes(), declared.tobytes())
    shard.write_bytes(data)
    shard.with_name(shard.name[: -len(".arrow")] + ".stats.json").write_text(
        json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


@pytest.mark.parametrize("declared, message", [
    # the last sentence's end past the 48 tokens the batch holds: its view is short
    ([0, 16, 32, 64], r"sentence 's00002' \(row 2\): its list offsets run to token 64, past the 48 tokens"),
    # a billion images declared: refused from the offsets, nothing read or allocated
    ([0, 16, 32, 32 + 16 * 2**30], r"sentence 's00002' \(row 2\): its list offsets run to token 17179869216"),
    ([0, 32, 16, 48], r"sentence 's00001' \(row 1\): its list offsets run backwards \(32 then 16\)"),
])
def test_list_offsets_past_the_data_or_backwards_are_refused_naming_the_sentence(tmp_path: Path, declared, message):
    """n_images agrees with the declared offsets, so the old code took the shard, and the short or
    empty sentence views broke a batch copy deep in training ('could not broadcast')."""
    path = write_foreign_shard(tmp_path / "f-00000.arrow", [IMAGE] * 3)
    images = [(b - a) // 16 for a, b in zip(declared, declared[1:])]
    _patch(path, [(np.array([0, 16, 32, 48], "<i8"), np.array(declared, "<i8")),
                  (np.array([1, 1, 1], "<i4"), np.array(images, "<i4"))])
    with pytest.raises(UsageError, match=f"{path}: " + message):
        loader = _loader(path, mode="stream", batch_size=1, seq_len=8)
        for _ in range(12):
            loader.next_batch()


def _reseal(path: Path) -> None:
    """An honest stats file (size and sha256), so only the container is wrong."""
    import hashlib

    data = path.read_bytes()
    path.with_name(path.name[: -len(".arrow")] + ".stats.json").write_text(
        json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


def _write_ipc_stream(table: pa.Table, path: Path) -> None:
    """As HF datasets' ArrowWriter writes save_to_disk's data-*.arrow: an IPC stream, not a file."""
    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


@pytest.fixture
def foreign_table(tmp_path: Path) -> pa.Table:
    import pyarrow.ipc as ipc

    path = write_foreign_shard(tmp_path / "made" / "t.arrow", [IMAGE] * 3)
    return ipc.open_file(path).read_all()


def test_an_arrow_stream_or_parquet_with_stats_is_named_as_that_container(tmp_path: Path, foreign_table):
    """Old code: 'cannot be read as a token shard (ArrowInvalid: Not an Arrow file)', which reads as
    damage; the container is named now, with the rewrite."""
    import pyarrow.parquet as pq

    stream = tmp_path / "stream" / "s-00000.arrow"
    _write_ipc_stream(foreign_table, stream)
    _reseal(stream)
    with pytest.raises(ShardDamaged, match=f"{stream}: .*it is an Arrow IPC stream .*not an Arrow IPC file; "
                                           r"write it as an Arrow IPC file \(pyarrow.ipc.new_file"):
        _loader(str(stream))
    parquet = tmp_path / "parquet" / "p-00000.arrow"
    parquet.parent.mkdir()
    pq.write_table(foreign_table, str(parquet))
    _reseal(parquet)
    with pytest.raises(ShardDamaged, match=f"{parquet}: .*it is a Parquet file; write it as an Arrow IPC file"):
        _loader(str(parquet))


def test_a_folder_of_other_tools_files_names_one_and_the_way_to_shards(tmp_path: Path, foreign_table):
    """A save_to_disk folder (stream .arrow files, no stats) and a Parquet copy: the old hint asked
    'an unfinished build?' or said nothing."""
    import pyarrow.parquet as pq

    saved = tmp_path / "hf"
    _write_ipc_stream(foreign_table, saved / "data-00000-of-00001.arrow")
    (saved / "state.json").write_text("{}")
    with pytest.raises(UsageError, match=rf"1 .arrow file\(s\) match, e.g. {saved}/data-00000-of-00001.arrow, but "
                                         r"none has its .stats.json: .*HF datasets save_to_disk.*write_token_shard"):
        _loader(str(saved))
    pq.write_table(foreign_table, str(tmp_path / "tokens.parquet"))
    with pytest.raises(UsageError, match=rf"1 file\(s\) match, e.g. {tmp_path}/tokens.parquet, but a token shard's "
                                         r"name ends in .arrow; write token shards with"):
        _loader(str(tmp_path / "*.parquet"))
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "web-00000.stats.json").write_text("{}")  # its shard deleted: not a file of another name
    with pytest.raises(UsageError, match=rf"1 .stats.json file\(s\) match, e.g. {gone}/web-00000.stats.json, with "
                                         r"no .arrow shard beside it"):
        _loader(str(gone))


def _write_compressed(table: pa.Table, path: Path, compression: str, batch_rows: int | None = None) -> None:
    """pyarrow's own IPC compression, as a user might turn it on; sealed with honest stats."""
    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    options = ipc.IpcWriteOptions(compression=compression)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    _reseal(path)


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_a_compressed_shard_trains_on_the_tokens_written_and_its_size_is_judged_first(tmp_path: Path, compression):
    """Within budget a compressed shard trains on exactly its tokens; its decompressed size, read
    from the headers, is what reading it allocates."""
    import pyarrow.ipc as ipc

    from uvd_pipeline.shards import decompressed_bytes

    rng = np.random.default_rng(0)
    written = [rng.integers(0, 8192, 16 * (1 + i % 3)).tolist() for i in range(7)]
    source = write_foreign_shard(tmp_path / "plain" / "t.arrow", written)
    path = tmp_path / compression / "z-00000.arrow"
    _write_compressed(ipc.open_file(source).read_all(), path, compression, batch_rows=3)
    reader = ipc.open_file(pa.memory_map(str(path)))
    held = sum(-(-buffer.size // 64) * 64 for i in range(reader.num_record_batches)  # as allocated, in 64s
               for column in reader.get_batch(i).columns for buffer in column.buffers() if buffer is not None)
    assert decompressed_bytes(str(path)) == held > 0 and decompressed_bytes(source) == 0
    loader = _loader(str(path), mode="stream", seq_len=16, batch_size=1)
    order = loader._order(0).tolist()  # the first epoch's permutation of the sentences
    stream = _stream(loader, batches=sum(len(t) for t in written) // 16)
    assert stream[:sum(len(t) for t in written)].tolist() == [v for i in order for v in written[i]]


def test_a_compressed_shard_declaring_more_than_its_budget_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    """Old code: a zstd shard of zero tokens (4 MiB here, 68 KB of file for 2 GiB in the field) was
    decompressed whole when listed and held while open: 2.1 GB peak RSS for that 68 KB file,
    and up to 64 such shards at once."""
    import uvd_pipeline.shards as shards

    tokens = 2 * 2**20  # 4 MiB of uint16 zeros
    table = pa.table({"sentence_id": ["s0"], "source": ["x"], "kind": ["image"], "task": ["none"], "split": ["train"],
                      "n_images": pa.array([tokens // 16], pa.int32()),
                      "tokens": pa.LargeListArray.from_arrays(pa.array([0, tokens], pa.int64()),
                                                              pa.array(np.zeros(tokens, np.uint16))),
                      "lineage": ["{}"]}).replace_schema_metadata(META.to_metadata())
    path = tmp_path / "bomb" / "b-00000.arrow"
    _write_compressed(table, path, "zstd")
    assert path.stat().st_size < 64 * 1024
    monkeypatch.setattr(shards, "COMPRESSED_SHARD_BUDGET", 2**20)
    allocated = pa.total_allocated_bytes()
    with pytest.raises(shards.ShardTooLarge, match=rf"{path}: its record batches are compressed \(Arrow IPC zstd/lz4\) and "
                                         rf"declare 419[45][0-9]+ bytes decompressed, more than the 1048576 .*write it "
                                         r"uncompressed"):
        _loader(str(path), mode="stream")
    assert pa.total_allocated_bytes() - allocated < 2**20


def test_compressed_shards_held_open_together_stay_within_one_budget(tmp_path: Path, monkeypatch):
    """Old code's budget was per shard while the loader kept 64 shards open: six zstd shards each
    within the budget were all held decompressed at once (6 x one shard's bytes, up to 64 GiB
    with the 1 GiB default). Now the oldest are closed past one total; tokens read back the same."""
    import pyarrow.ipc as ipc

    import trainer.data as data
    from uvd_pipeline.shards import decompressed_bytes

    rng = np.random.default_rng(1)
    written, paths = [], []
    for i in range(6):
        tokens = [rng.integers(0, 8192, 16 * 2048).tolist() for _ in range(4)]  # 256 KiB of uint16 a shard
        plain = write_foreign_shard(tmp_path / "plain" / f"p{i}.arrow", tokens)
        path = tmp_path / "z" / f"z-{i:05d}.arrow"
        _write_compressed(ipc.open_file(plain).read_all(), path, "zstd")
        written.append(tokens)
        paths.append(str(path))
    each = decompressed_bytes(paths[0])
    assert each >= 4 * 16 * 2048 * 2
    monkeypatch.setattr(data, "COMPRESSED_SHARD_BUDGET", 2 * each + each // 2)
    cache = data._OpenShards(64)
    before = pa.total_allocated_bytes()
    for _ in range(2):
        for path, tokens in zip(paths, written):
            offsets, values = cache.chunks(path)[0]
            assert values[offsets[3]:offsets[4]].tolist() == tokens[3]
    assert pa.total_allocated_bytes() - before <= 2 * each + each // 2


def _compressed_shards(folder: Path, count: int) -> tuple[list[str], list[list[list[int]]]]:
    """`count` zstd shards of four 64 KiB sentences each, written by pyarrow and sealed."""
    import pyarrow.ipc as ipc

    rng = np.random.default_rng(1)
    written, paths = [], []
    for i in range(count):
        tokens = [rng.integers(0, 8192, 16 * 2048).tolist() for _ in range(4)]
        plain = write_foreign_shard(folder / "plain" / f"p{i}.arrow", tokens)
        path = folder / "z" / f"z-{i:05d}.arrow"
        _write_compressed(ipc.open_file(plain).read_all(), path, "zstd")
        written.append(tokens)
        paths.append(str(path))
    return paths, written


def test_the_oldest_compressed_shard_is_closed_before_the_next_is_read(tmp_path: Path, monkeypatch):
    """Old code evicted only after reading the new shard, so it held the old ones and the new one
    at once: up to twice the budget (t_peak.py: 1.90 x). The bytes held while a shard is read,
    that shard included, now stay within the budget."""
    import trainer.data as data
    from uvd_pipeline.shards import decompressed_bytes

    paths, written = _compressed_shards(tmp_path, 4)
    each = decompressed_bytes(paths[0])
    budget = each + each // 20  # one shard at a time
    cache = data._OpenShards(64, budget=budget)
    peaks = []
    reader = data.read_token_shard

    def reading(path, *args, **kwargs):
        peaks.append(sum(cache._held.values()) + decompressed_bytes(path))
        return reader(path, *args, **kwargs)

    monkeypatch.setattr(data, "read_token_shard", reading)
    for _ in range(2):
        for path, tokens in zip(paths, written):
            offsets, values = cache.chunks(path)[0]
            assert values[offsets[1]:offsets[2]].tolist() == tokens[1]
    assert len(peaks) == 8 and max(peaks) <= budget


def test_compressed_shards_read_again_for_want_of_budget_are_told_once(tmp_path: Path):
    """Old code re-read and re-decompressed shards that did not fit the budget together on every
    window, silently (t_budget.py: 2373 reads instead of 6 for 200 batches, ~30x slower). The first
    shard read again after being closed for the budget is told, with the budget and the fix."""
    import warnings

    import trainer.data as data
    from uvd_pipeline.shards import decompressed_bytes

    paths, _ = _compressed_shards(tmp_path, 3)
    each = decompressed_bytes(paths[0])
    cache = data._OpenShards(64, budget=each + each // 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in paths[:2] + paths:  # the first is read, closed for the second, read again
            cache.chunks(path)
    told = [str(w.message) for w in caught]
    assert len(told) == 1, told
    assert (f"{paths[0]}" in told[0] and f"{each + each // 2}-byte budget" in told[0]
            and "write it uncompressed" in told[0])


def test_a_compressed_shard_opened_has_its_footer_parsed_once(tmp_path: Path, monkeypatch):
    """Old code judged a shard inside read_token_shard and then again to count what it holds: two
    footer parses per open (34 ms each for a 10,000-batch file). Once now; a shard rewritten since
    is judged afresh."""
    import pyarrow.ipc as ipc

    import trainer.data as data
    import uvd_pipeline.arrow_body as arrow_body

    paths, _ = _compressed_shards(tmp_path, 2)
    parsed = []
    footer_blocks = arrow_body._footer_blocks
    monkeypatch.setattr(arrow_body, "_footer_blocks", lambda d: parsed.append(1) or footer_blocks(d))
    cache = data._OpenShards(64)
    cache.chunks(paths[0])
    assert len(parsed) == 1
    table = ipc.open_file(paths[1]).read_all()
    _write_compressed(table, Path(paths[0]), "lz4", batch_rows=1)  # rewritten in place: judged again
    data._OpenShards(64).chunks(paths[0])
    assert len(parsed) == 2


def test_shards_of_one_tokenizer_under_two_folder_names_mix_with_a_note(tmp_path: Path):
    """hunt57 #1: shards of the same weights (hash, codebook, tokens per image) made by two builds
    pointing at two copies of the tokenizer record two names (each its folder's basename); fit
    refused them as 'shards of different tokenizers cannot be mixed', though evaluate and generate
    compare no names. They mix now, with a note naming both; another hash is still refused."""
    write_shards(tmp_path / "x", "x", numbered_sentences(6), shards=1,
                 meta=dataclasses.replace(META, tokenizer_name="vqgan-f16-8192-laion"))
    write_shards(tmp_path / "y", "y", numbered_sentences(6, base=100), shards=1,
                 meta=dataclasses.replace(META, tokenizer_name="lvm_tokenizer_copy"))
    loader = TokenWindows(mixture_from_args([f"{tmp_path}/x/*.arrow", f"{tmp_path}/y/*.arrow"]), T, 2, mode="stream")
    drawn = np.concatenate([loader.next_batch().ravel() for _ in range(8)])
    assert (drawn < 100).any() and (drawn >= 100).any()  # sentences of both folders are trained on
    (note,) = loader.notes()
    assert "under 2 names: 'vqgan-f16-8192-laion' (" in note and f"'lvm_tokenizer_copy' ({tmp_path}/y/y-00000" in note
    assert loader.fingerprint()["tokenizer"]["name"] == "vqgan-f16-8192-laion"
    write_shards(tmp_path / "z", "z", numbered_sentences(6), shards=1,
                 meta=dataclasses.replace(META, tokenizer_hash="retrained"))
    with pytest.raises(UsageError, match="disagree on tokenizer_hash: .*z-00000.arrow has 'retrained'"):
        TokenWindows(mixture_from_args([f"{tmp_path}/x/*.arrow", f"{tmp_path}/z/*.arrow"]), T, 2)


def test_a_resume_refusal_names_only_what_changed(tmp_path: Path):
    """hunt57 #3: a run begun on a quoted glob, resumed with the shell's expansion of it and another
    --mode, was refused as 'mode, sources, weights differ' with four source lists (the regrouping of
    the expansion was judged only when nothing else changed); the quoted glob said 'mode differ'.
    Each now says 'mode differs' alone, as does the glob spelt as a relative path."""
    write_shards(tmp_path / "a", "a", numbered_sentences(12), shards=2)
    glob = f"{tmp_path}/a/*.arrow"
    loader = TokenWindows(mixture_from_args([glob]), T, 2, mode="paper")
    loader.next_batch()
    state = json.loads(json.dumps(loader.state_dict()))
    expanded = [str(p) for p in sorted((tmp_path / "a").glob("*.arrow"))]
    relative = os.path.relpath(glob)
    said = ("the data changed since this checkpoint (mode differs: saved {'mode': 'paper'}, now {'mode': 'stream'}); "
            "resume with the same data, or start a fresh run")
    for data in ([glob], expanded, [relative]):
        with pytest.raises(UsageError) as refused:
            TokenWindows(mixture_from_args(data), T, 2, mode="stream").load_state_dict(state)
        assert str(refused.value) == said, data
        TokenWindows(mixture_from_args(data), T, 2, mode="paper").load_state_dict(state)  # the same mode resumes
    with pytest.raises(UsageError, match=r"\(mode, seq_len differ: saved \{'mode': 'paper', 'seq_len': 32\}"):
        TokenWindows(mixture_from_args(expanded), 2 * T, 2, mode="stream").load_state_dict(state)


def test_shards_two_globs_name_are_noted_with_their_effective_share(tmp_path: Path):
    """hunt57 #4: 'd/[ab]/*.arrow' and 'd/a/*.arrow' drew a's shards through both (75% of the
    sentences) while each glob showed share 0.5, unsaid. Not refused (it may be meant), but a note
    names the shared shards and `shared_shards` gives each its effective share, which the draws
    bear out."""
    one_image = lambda i: 1  # noqa: E731 - equal sentences: the token share is the sentence share
    write_shards(tmp_path / "a", "a", numbered_sentences(16, images=one_image), shards=2)
    write_shards(tmp_path / "b", "b", numbered_sentences(16, images=one_image, base=1000), shards=2)
    both, a = f"{tmp_path}/[ab]/*.arrow", f"{tmp_path}/a/*.arrow"
    loader = TokenWindows(mixture_from_args([both, a]), T, 4, mode="stream")
    assert [d["share"] for d in loader.describe()] == [0.5, 0.5]
    shared = loader.shared_shards()
    assert [(Path(s["shard"]).name, s["globs"], s["share"]) for s in shared] == [
        ("a-00000.arrow", [both, a], 0.375), ("a-00001.arrow", [both, a], 0.375)]
    (note,) = loader.notes()
    assert note.startswith("2 shard(s) are named by more than one --data glob") and "75.0% of the sentences" in note
    assert f"{tmp_path}/a/a-00000.arrow ('{both}' and '{a}': 37.5%)" in note
    drawn = np.concatenate([loader.next_batch()[:, 1:].ravel() for _ in range(100)])
    assert abs(np.mean(drawn < 1000) - 0.75) < 0.05
    alone = TokenWindows(mixture_from_args([a, f"{tmp_path}/b/*.arrow"]), T, 2)
    assert alone.shared_shards() == [] and alone.notes() == []
