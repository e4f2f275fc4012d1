"""The unit store hands its images over to committed shards (`uvd_pipeline.unit_relocation`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sources import fsio
from uvd_pipeline.rendered_shards import STATS_SUFFIX, ShardAddress, iter_shard, write_shard
from uvd_pipeline.sentences import Sentence
from uvd_pipeline.unit_relocation import (drop_previous, each_file, keep_previous, previous_lookup, record_placement,
                                          relocate, release)
from uvd_pipeline.unit_store import StoredImageError, StoreReader, UnitStore, unit_id_of


def _png(seed: int) -> bytes:
    """A 256x256 noise PNG (about 200 KB: it spans many disk blocks)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _sentence(key: str, images: tuple) -> Sentence:
    return Sentence(key, "web", "image", "none", "train", images, ({"key": key},))


def _write(out: Path, address: ShardAddress, sentences: list[Sentence], reader: StoreReader):
    result = write_shard(str(out), address, sentences, config_hash="h", num_shards=2, image_size=256,
                         format_version=1, read_image=reader.read)
    record_placement(str(out), address, result.stats["tar_sha256"], result.placed)
    return result


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512 if path.exists() else 0


def test_images_move_into_shards_and_come_back_from_there(tmp_path):
    out = tmp_path / "out"
    source_file = tmp_path / "in.txt"
    source_file.write_text("input")
    store = UnitStore(str(out), "web", "h")
    unit = str(source_file)
    pngs = [_png(i) for i in range(3)]
    writer = store.writer(unit)
    with fsio.recording_inputs() as record:
        fsio.read_bytes(unit)
        outputs = [("sentences", writer.stored(_sentence(f"s{i}", (png,)))) for i, png in enumerate(pngs)]
    writer.commit(outputs, record)
    images_file = Path(writer.images_uri)
    full = _allocated(images_file)
    loaded, _ = store.load(unit)
    first, second = ShardAddress("web", "train", 0), ShardAddress("web", "train", 1)

    # shard 0 takes two images: the store's copies are punched out (the file keeps its size)
    reader = StoreReader()
    result = _write(out, first, [loaded[0][1], loaded[1][1]], reader)
    assert release(result.placed) == len(pngs[0]) + len(pngs[1])
    assert images_file.stat().st_size == sum(map(len, pngs))
    assert _allocated(images_file) < full - len(pngs[0]) - len(pngs[1]) + 3 * 8192
    assert [s.images[0] for s in iter_shard(str(out / "rendered/web/train/web-train-00000.tar"))] == pngs[:2]

    # after relocation the refs point into the tar, and read the same bytes
    moved = relocate(str(out), [first])
    assert (moved.units, moved.moved_images, moved.forgotten) == (1, 2, 0)
    loaded, _ = store.load(unit, verify_images=True)
    paths = [item.images[0].path for _, item in loaded]
    assert paths[0].endswith("web-train-00000.tar") and paths[2] == writer.images_uri
    assert [StoreReader().read(item.images[0]) for _, item in loaded] == pngs

    # shard 0 is rewritten (its input changed) while its old tar is still needed by a ref: the
    # old tar is kept for the run, and a read falls back to it when the bytes at the ref changed
    keep_previous(str(out), first)
    (out / "rendered/web/train/web-train-00000.stats.json").unlink()
    fallback = StoreReader(previous_lookup(str(out)))
    _write(out, first, [_sentence("other", (pngs[2][::-1],))], StoreReader())
    assert fallback.read(loaded[0][1].images[0]) == pngs[0]
    drop_previous(str(out))
    with pytest.raises(StoredImageError, match="web-train-00000.tar"):
        StoreReader(previous_lookup(str(out))).read(loaded[0][1].images[0])

    # those two images are now nowhere intact: relocation forgets the unit (it renders again)
    assert relocate(str(out), [first]).forgotten == 1
    assert store.load(unit) is None and not images_file.exists()


def test_a_unit_whose_images_all_moved_loses_its_image_file(tmp_path):
    out = tmp_path / "out"
    source_file = tmp_path / "in.txt"
    source_file.write_text("input")
    store = UnitStore(str(out), "web", "h")
    writer = store.writer(str(source_file))
    pngs = [_png(10), _png(11)]
    with fsio.recording_inputs() as record:
        outputs = [("sentences", writer.stored(_sentence(f"s{i}", (png,)))) for i, png in enumerate(pngs)]
    writer.commit(outputs, record)
    loaded, _ = store.load(str(source_file))
    address = ShardAddress("web", "train", 0)
    _write(out, address, [item for _, item in loaded], StoreReader())
    # no punching here (as on a disk that cannot): the file goes when relocation sees it is empty
    assert relocate(str(out), [address]).files_removed == 1
    assert not Path(writer.images_uri).exists()
    loaded, _ = store.load(str(source_file), verify_images=True)
    assert [StoreReader().read(item.images[0]) for _, item in loaded] == pngs
    # a shard whose stats are gone is not trusted: its images are nowhere else, so the unit goes
    os.unlink(address.path(str(out), STATS_SUFFIX))
    assert relocate(str(out), []).forgotten == 1


def test_relocation_in_passes_holds_a_share_of_the_placements_and_ends_the_same(tmp_path, monkeypatch):
    """A build's placement records are read in passes, each holding the entries of a share of
    the units only (the driver's memory must not grow with the images a build has), and the
    store ends as one pass that holds them all leaves it."""
    import shutil

    from uvd_pipeline import unit_relocation

    out = tmp_path / "out"
    store = UnitStore(str(out), "web", "h")
    items = []
    for u in range(12):
        source_file = tmp_path / f"in{u}.txt"
        source_file.write_text(str(u))
        writer = store.writer(str(source_file))
        with fsio.recording_inputs() as record:
            outputs = [("sentences", writer.stored(_sentence(f"u{u:02d}s{i}", (f"png {u} {i} ".encode() * 40,))))
                       for i in range(4)]
        writer.commit(outputs, record)
        items += [item for _, item in store.load(str(source_file))[0]]
    addresses = [ShardAddress("web", "train", i) for i in range(3)]
    for index, address in enumerate(addresses):  # the last three images stay in the store
        _write(out, address, items[:-3][index::3], StoreReader())
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    held: list[int] = []
    placements = unit_relocation._placements

    def counting(*args):
        located, doubtful = placements(*args)
        held.append(sum(map(len, located.values())) + sum(map(len, doubtful.values())))
        return located, doubtful

    monkeypatch.setattr(unit_relocation, "_placements", counting)
    one = relocate(str(out), addresses)
    assert held == [len(items) - 3]
    held.clear()
    records = sum(p.stat().st_size for p in (out / "_inputs").rglob("*.placed.json"))
    several = relocate(str(copy), addresses, pass_bytes=records // 4 + 1)
    # each pass holds exactly its share of the units' placed images (unit ids are hashes of the
    # input paths, so how the 12 units fall over the 4 shares differs from run to run)
    placed = [ref.unit for item in items[:-3] for ref in item.images]
    shares = [sum(unit_relocation._share(unit_id_of(unit), 4) == part for unit in placed) for part in range(4)]
    assert held == shares and sum(held) == len(items) - 3 and max(held) < len(items) - 3
    assert several == one and (one.units, one.moved_images, one.files_removed) == (12, 45, 11)

    def store_files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "_units").rglob("*"))
                if p.is_file() and not p.name.endswith(".png.bin")}

    assert store_files(copy) == store_files(out)
    assert sorted(p.name for p in (copy / "_units").rglob("*.png.bin")) == sorted(
        p.name for p in (out / "_units").rglob("*.png.bin"))


def test_background_release_punches_one_shard_at_a_time(tmp_path, monkeypatch):
    """A writer hands a committed shard's store copies to the process's release thread and goes
    on; the next hand-over waits till those punches are done (so at most one shard's copies are
    pending), and the blocks are freed once `wait` returns."""
    import threading
    import time

    from uvd_pipeline import unit_relocation
    from uvd_pipeline.unit_relocation import BackgroundRelease, background_release

    out = tmp_path / "out"
    source_file = tmp_path / "in.txt"
    source_file.write_text("input")
    store = UnitStore(str(out), "web", "h")
    pngs = [_png(20 + i) for i in range(4)]
    writer = store.writer(str(source_file))
    with fsio.recording_inputs() as record:
        outputs = [("sentences", writer.stored(_sentence(f"s{i}", (png,)))) for i, png in enumerate(pngs)]
    writer.commit(outputs, record)
    images_file = Path(writer.images_uri)
    full = _allocated(images_file)
    loaded, _ = store.load(str(source_file))
    shards = [_write(out, ShardAddress("web", "train", i), [loaded[2 * i][1], loaded[2 * i + 1][1]], StoreReader())
              for i in range(2)]

    punched: list[tuple[float, float]] = []
    real_punch = unit_relocation.punch
    opened = threading.Event()  # punches wait for it: a writer that waited for its own would hang (30 s guard)

    def slow_punch(uri, ranges):
        started = time.perf_counter()
        opened.wait(30)
        time.sleep(0.3)
        freed = real_punch(uri, ranges)
        punched.append((started, time.perf_counter()))
        return freed

    monkeypatch.setattr(unit_relocation, "punch", slow_punch)
    releaser = BackgroundRelease()
    assert releaser.submit(shards[0].placed) == len(pngs[0]) + len(pngs[1])
    assert not punched  # the writer does not wait for its own punches: they are held back till now
    opened.set()
    handed: list[float] = []
    second = threading.Thread(target=lambda: handed.append((releaser.submit(shards[1].placed), time.perf_counter())))
    second.start()
    second.join()
    assert handed[0][0] == len(pngs[2]) + len(pngs[3])
    assert handed[0][1] >= punched[0][1]  # the second hand-over waited for the first shard's punches
    releaser.wait()
    assert len(punched) == 2 and punched[1][0] >= punched[0][1]
    assert releaser.released == sum(map(len, pngs))
    assert images_file.stat().st_size == sum(map(len, pngs)) and _allocated(images_file) < full - sum(map(len, pngs)) + 4 * 8192
    assert [s.images[0] for s in iter_shard(str(out / "rendered/web/train/web-train-00001.tar"))] == pngs[2:]

    assert background_release() is background_release()  # one per process (`PerProcess`)


def test_each_file_runs_the_calls_together_in_order_and_waits_for_all():
    """The store's per-file calls (a shard's punches, `relocate`'s units) run at once: on ext4 each
    may wait for a journal commit, which calls issued together share. Results come in call order,
    and an error is raised only once every call has ended (no punch still running behind it)."""
    import threading
    import time

    together = threading.Barrier(3, timeout=10)  # calls made one after another never pass it
    ended: list[int] = []
    failing: set[int] = set()

    def call(i: int) -> int:
        together.wait()
        time.sleep(0.02 * (3 - i))  # the first call ends last
        if i in failing:
            raise OSError("a store file gone")
        ended.append(i)
        return 10 * i

    assert each_file(call, [(i,) for i in range(3)]) == [0, 10, 20]
    ended.clear()
    failing.add(1)
    with pytest.raises(OSError, match="gone"):
        each_file(call, [(i,) for i in range(3)])
    assert sorted(ended) == [0, 2]
    assert each_file(call, []) == []


def test_store_reader_keeps_a_bounded_set_of_files_open(tmp_path):
    """A shard's images alternate between the files of the units that rendered them: the reader
    keeps up to `OPEN_FILES` of them open (one `pread` per image on a local disk, the least
    recently used closed first), checks each image's sha256, and closes everything at the end; a
    file that is gone, short or changed is an error naming it."""
    import hashlib

    from uvd_pipeline.unit_store import StoredRef

    payloads = {}
    refs = []
    for f in range(StoreReader.OPEN_FILES + 8):
        path = tmp_path / f"unit{f}.png.bin"
        parts = [os.urandom(1000 + 37 * i + f) for i in range(3)]
        path.write_bytes(b"".join(parts))
        offset = 0
        for part in parts:
            ref = StoredRef(str(path), offset, len(part), hashlib.sha256(part).hexdigest())
            refs.append(ref)
            payloads[ref] = part
            offset += len(part)
    order = [refs[(i * 7) % len(refs)] for i in range(3 * len(refs))]  # files interleaved, each many times
    open_before = len(os.listdir("/proc/self/fd"))
    reader = StoreReader()
    most = 0
    for ref in order:
        assert reader.read(ref) == payloads[ref]
        most = max(most, len(os.listdir("/proc/self/fd")) - open_before)
    assert 0 < most <= StoreReader.OPEN_FILES
    reader.close()
    assert len(os.listdir("/proc/self/fd")) == open_before
    # gone, short, changed
    gone = StoredRef(str(tmp_path / "nothing.png.bin"), 0, 10, "0" * 64)
    short = StoredRef(refs[0].path, 0, 10 ** 6, refs[0].sha256)
    changed = StoredRef(refs[0].path, 1, refs[0].length, refs[0].sha256)
    for ref, why in ((gone, "is short"), (short, "is short"), (changed, "does not match its sha256")):
        with pytest.raises(StoredImageError, match=f"{ref.path}.*{why}"):
            reader.read(ref)
    reader.close()
