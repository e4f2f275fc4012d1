"""A rerun into the same output after the input changed gives the bytes of a fresh build of the new
input: every file a unit's items depend on is in its input manifest, index files parsed once and
served from a cache included (README "Reruns and growing input")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import shard_digests
from uvd_pipeline.rendered_shards import iter_shard


def _config(path: Path, out: Path, sources: list[dict], **beam) -> Path:
    """A small build config without the tokenizer (the rendered shards are what a rerun decides)."""
    config = {"version": 1, "output": str(out), "seed": 0, "image": {"size": 32}, "split": {"val_fraction": 0.0},
              "sources": sources, "tokenizer": {"enabled": False},
              "beam": {"runner": "DirectRunner", **beam}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _build(path: Path, output: Path | None = None) -> dict:
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    config = load_config(str(path))
    if output is not None:
        config = config.model_copy(update={"output": str(output)})
    return run_build(config).summary


def _units_rendered(summary: dict) -> int:
    return sum(v for k, v in summary["run"]["counters"].items() if k.endswith(".units_rendered"))


def _members(out: Path) -> dict[str, tuple[str, str]]:
    """file -> (wnid, class name) of every image in the build's rendered ImageNet shards."""
    return {m["file"]: (m["wnid"], m["class_name"])
            for tar in sorted((out / "rendered").rglob("*.tar")) for s in iter_shard(str(tar))
            for m in s.header["members"]}


def _relabel(imagenet: Path, old: str, new: str) -> list[str]:
    """Label the val images of class `old` as `new` in LOC_val_solution.csv (as a corrected release
    would); returns the image ids moved."""
    csv = imagenet / "LOC_val_solution.csv"
    rows, moved = csv.read_text().splitlines(), []
    for i, row in enumerate(rows[1:], start=1):
        image_id, prediction = row.split(",", 1)
        if prediction.startswith(old):
            rows[i], _ = f"{image_id},{new}{prediction[len(old):]}", moved.append(image_id)
    csv.write_text("\n".join(rows) + "\n")
    return moved


@pytest.mark.parametrize("workers", [1, 2])
def test_changed_imagenet_index_files_are_noticed_on_rerun(mini_corpus, tmp_path, workers):
    """The val labels CSV relabelled and a class renamed in the synset map: the units that read
    them are rendered again (their manifests list both files, though `units()` parsed them first,
    in the build's process) and the rerun equals a fresh build; with 2 workers (threads, their
    units rendered by the early-render pool's forked processes) as with 1."""
    imagenet = tmp_path / "imagenet"
    shutil.copytree(mini_corpus / "imagenet", imagenet)
    beam = {"direct_num_workers": 1, "direct_running_mode": "in_memory"} if workers == 1 else \
        {"direct_num_workers": 2, "direct_running_mode": "auto"}
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "inet", "type": "imagenet", "path": str(imagenet), "num_shards": 1, "sentence_length": 4,
         "remainder": "wrap"}], **beam)
    first = _build(path)
    # two class folders, the flat val folder, and the CSV's check for listed images not on disk
    assert _units_rendered(first) == 4
    for mark in (tmp_path / "out" / "_units" / "inet").glob("*.json"):
        files = json.loads(mark.read_text())["inputs"]["files"]
        listing_check = json.loads(mark.read_text())["unit"].endswith("LOC_val_solution.csv',))")
        assert (str(imagenet / "LOC_synset_mapping.txt") in files) != listing_check
        assert (str(imagenet / "LOC_val_solution.csv") in files) == ("'val'" in json.loads(mark.read_text())["unit"])

    moved = _relabel(imagenet, "n03063599", "n04266014")
    synsets = imagenet / "LOC_synset_mapping.txt"
    synsets.write_text(synsets.read_text().replace("n04266014 ", "n04266014 renamed: "))
    again = _build(path)
    assert _units_rendered(again) == 4
    members = _members(tmp_path / "out")
    assert moved and all(members[f"val/{i}.JPEG"][0] == "n04266014" for i in moved)
    assert all(name.startswith("renamed: ") for wnid, name in members.values() if wnid == "n04266014")
    fresh = _build(path, tmp_path / "fresh")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh")
    assert again["totals"] == fresh["totals"]


def test_a_shard_whose_input_is_gone_leaves_the_output_and_the_summary(mini_corpus, tmp_path, caplog):
    """Every val image gone (files and labels): the rerun removes the val shard, and its summary,
    which the build's end takes from its own read of the stats files unless a shard was removed
    after it (then it reads them again), counts what a fresh build of the new input counts."""
    import logging

    imagenet = tmp_path / "imagenet"
    shutil.copytree(mini_corpus / "imagenet", imagenet)
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "inet", "type": "imagenet", "path": str(imagenet), "num_shards": 1, "sentence_length": 4,
         "remainder": "wrap"}], direct_num_workers=1, direct_running_mode="in_memory")
    assert [row["split"] for row in _build(path)["shards"]] == ["train", "val"]
    for image in (imagenet / "val").iterdir():
        image.unlink()
    labels = imagenet / "LOC_val_solution.csv"
    labels.write_text(labels.read_text().splitlines()[0] + "\n")
    caplog.set_level(logging.INFO)
    again = _build(path)
    assert "removed inet-val-00000: its input is gone" in caplog.text
    fresh = _build(path, tmp_path / "fresh")
    assert [row["split"] for row in again["shards"]] == ["train"]
    for key in ("totals", "sources", "shards"):
        assert again[key] == fresh[key], key
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh")


def test_changed_coco_annotations_are_noticed_on_rerun(sample_corpus, tmp_path):
    """COCO's annotation JSON corrected (every box halved about its centre): the rerun renders the
    units again and its detection targets are the fresh build's."""
    coco = tmp_path / "coco"
    shutil.copytree(sample_corpus / "coco", coco)
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "coco", "type": "coco", "path": str(coco), "split": "val", "tasks": ["detection"],
         "num_shards": 1}], direct_num_workers=1, direct_running_mode="in_memory")
    first = _build(path)
    before = shard_digests(tmp_path / "out")
    annotations = coco / "annotations" / "instances_val.json"
    data = json.loads(annotations.read_text())
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [x + w * 0.25, y + h * 0.25, w * 0.5, h * 0.5]
    annotations.write_text(json.dumps(data))
    again = _build(path)
    assert _units_rendered(again) == _units_rendered(first) > 0
    fresh = _build(path, tmp_path / "fresh")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh") != before
    assert again["totals"] == fresh["totals"]


def test_cached_index_files_are_recorded_for_every_unit(sample_corpus):
    """Each read of a unit records the index files it depends on, also when the parse came from
    the cache (a second unit, a second read of the same unit): ImageNet, COCO and MPII."""
    from sources import fsio
    from sources.coco import CocoSource
    from sources.imagenet import ImageNetSource
    from sources.mpii import MpiiSource

    c = sample_corpus
    cases = [
        (ImageNetSource("inet", str(c / "imagenet")), [str(c / "imagenet" / "LOC_synset_mapping.txt")]),
        (CocoSource("coco", str(c / "coco"), ("annotations/instances_val.json",), "images/val"),
         [str(c / "coco" / "annotations" / "instances_val.json")]),
        (MpiiSource("mpii", str(c / "mpii")), [str(c / "mpii" / "annotations" / "mpii_train.json")]),
    ]
    val_labels = str(c / "imagenet" / "LOC_val_solution.csv")
    for source, index_files in cases:
        units = source.units()  # parses the index files, outside any recording
        for unit in [units[0], units[-1], units[0]] + units[-2:-1]:
            with fsio.recording_inputs() as record:
                list(source.read(unit))
            # ImageNet's last unit is the CSV's check for listed val images not on disk: the CSV alone
            expected = {val_labels} if getattr(unit, "uris", None) == (val_labels,) else set(index_files)
            assert expected <= record.files, (source.name, unit)


def _same_size_other_picture(path: Path) -> None:
    """Rewrite a JPEG in place with another picture (it, mirrored) of exactly its byte size, the
    tail padded after the end-of-image marker (decoders ignore it), and give it back its
    modification time: only its bytes (and the change time no program can set) differ."""
    import io
    import os

    from PIL import Image

    before, size = path.stat(), path.stat().st_size
    image = Image.open(path).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for quality in range(95, 5, -5):
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=quality)
        if len(encoded.getvalue()) <= size:
            break
    with open(path, "r+b") as handle:
        handle.write(encoded.getvalue().ljust(size, b"\0"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_rewrite_with_the_same_size_and_mtime_is_noticed(mini_corpus, tmp_path):
    """An input image replaced by other bytes of its size, its mtime set back (`touch -r`): the
    change time tells, so its unit is rendered again and the rerun equals a fresh build."""
    imagenet = tmp_path / "imagenet"
    shutil.copytree(mini_corpus / "imagenet", imagenet)
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "inet", "type": "imagenet", "path": str(imagenet), "num_shards": 1, "sentence_length": 4,
         "remainder": "wrap"}], direct_num_workers=1, direct_running_mode="in_memory")
    _build(path)
    before = shard_digests(tmp_path / "out")
    _same_size_other_picture(next(iter(sorted((imagenet / "val").glob("*.JPEG")))))
    again = _build(path)
    assert _units_rendered(again) == 1  # the val folder's unit only
    fresh = _build(path, tmp_path / "fresh")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh") != before


def test_shards_resumed_counts_only_the_shards_kept(mini_corpus, tmp_path, caplog):
    """Two class-folder sources, deduplication off (its sources' shards share one input digest),
    one val image of the second replaced by Pillow: the rerun writes the second's shards again (its
    input digest changed) and keeps the first's. summary.json's
    `run.shards_resumed` said 4, every shard committed before the run, the 2 rewritten with the
    2 kept (hunt58b: 5 of 5 rewritten, "resumed" 5); it counts the kept ones, as the log says."""
    import logging

    from PIL import Image

    sources = []
    for name in ("a", "b"):
        shutil.copytree(mini_corpus / "imagenet", tmp_path / name)
        sources.append({"name": name, "type": "imagenet", "path": str(tmp_path / name), "num_shards": 1,
                        "sentence_length": 4, "remainder": "wrap"})
    path = _config(tmp_path / "c.yaml", tmp_path / "out", sources, direct_num_workers=1,
                   direct_running_mode="in_memory")
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "dedup": {"enabled": False}}, sort_keys=False))
    first = _build(path)
    assert sorted((row["source"], row["split"]) for row in first["shards"]) == [
        ("a", "train"), ("a", "val"), ("b", "train"), ("b", "val")]
    image = sorted((tmp_path / "b" / "val").glob("*.JPEG"))[0]
    Image.open(image).convert("RGB").rotate(90).save(image, "JPEG", quality=90)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "rendered").rglob("*.tar")}
    caplog.set_level(logging.INFO)
    again = _build(path)
    rewritten = sorted(p.name for p in (tmp_path / "out" / "rendered").rglob("*.tar")
                       if p.stat().st_mtime_ns != before[p.name])
    assert rewritten == ["b-train-00000.tar", "b-val-00000.tar"]
    written = {k: v for k, v in again["run"]["counters"].items() if k.endswith(".shards_written")}
    assert written == {"b.shards_written": 2}
    assert again["run"]["shards_resumed"] == 2
    assert "kept 2 of the 4 shards committed earlier" in caplog.text


def _vipseg_tree(root: Path, videos: list[str]) -> None:
    """VIPSeg as released: imgs/<video>/<frame>.jpg (every third frame of a clip, named by its
    number, as VIPSeg's 00000976.jpg), extracted by ffmpeg, and panomasks/<video>/<frame>.png
    (uint16 panoptic ids). One clip is extracted, then copied under every video's name."""
    import numpy as np
    import video_zoo
    from PIL import Image

    video_zoo.require_ffmpeg()
    made = root / "made"
    made.mkdir(parents=True)
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc=size=128x72:rate=25", "-frames:v", "4", "-vf",
                     "select=not(mod(n\\,3))", "-fps_mode", "passthrough", "-frame_pts", "1", "-q:v", "3",
                     str(made / "%08d.jpg"))
    for video in videos:
        shutil.copytree(made, root / "imgs" / video)
        (root / "panomasks" / video).mkdir(parents=True)
        for frame in sorted(made.iterdir()):
            mask = np.full((72, 128), 6101, np.uint16)  # class 61, instance 1
            mask[:, : int(frame.stem) * 10 + 5] = 3  # a stuff class, wider in each frame
            Image.fromarray(mask).save(root / "panomasks" / video / f"{frame.stem}.png")
    shutil.rmtree(made)


def _renders(out: Path, source: str) -> dict[str, str]:
    """unit -> the id of its rendering (new each time the unit is rendered) from its commit mark."""
    marks = (json.loads(mark.read_text()) for mark in (out / "_units" / source).glob("*.json"))
    return {mark["unit"]: mark["render"] for mark in marks}


def test_one_line_of_a_vipseg_split_list_fixed_renders_only_its_video(tmp_path):
    """VIPSeg's val.txt with a misspelt name fixed: only the video that line now names changes
    split, so only it (and the list's own unit, which reports the list's problems) is rendered
    again; every video recorded the list files' state, so each was rendered again. The rerun
    equals a fresh build of the fixed tree, and the fixed video's sentences are in val."""
    vipseg = tmp_path / "VIPSeg"
    videos = ["1000_-jHuOIGCyuE", "1002_QGkA6vUsJsQ", "127_-hIVCYO4C90"]
    _vipseg_tree(vipseg, videos)
    (vipseg / "train.txt").write_text(f"{videos[0]}\n{videos[1]}\n")
    (vipseg / "val.txt").write_text("127_-hIVCYO4C9O\n")  # an O for the 0 at the end
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "vip", "type": "annotated_video", "path": str(vipseg), "layout": "vipseg", "frames": 2,
         "num_shards": 1}], direct_num_workers=1, direct_running_mode="in_memory")
    _build(path)
    before = _renders(tmp_path / "out", "vip")
    (vipseg / "val.txt").write_text(f"{videos[2]}\n")
    again = _build(path)
    after = _renders(tmp_path / "out", "vip")
    assert sorted(u for u in after if after[u] != before.get(u)) == sorted(
        [repr(str(vipseg / "imgs" / videos[2])), repr(str(vipseg / "val.txt"))])
    assert _units_rendered(again) == 2
    # a mark recording a split (not the lists) is of a store version the released one renders again
    versions = {json.loads(m.read_text())["unit"]: json.loads(m.read_text())["version"]
                for m in (tmp_path / "out" / "_units" / "vip").glob("*.json")}
    assert versions == {**{repr(str(vipseg / "imgs" / v)): 3 for v in videos}, repr(str(vipseg / "val.txt")): 2,
                        repr(str(vipseg / "train.txt")): 2}
    splits: dict[str, set[str]] = {}
    for tar in (tmp_path / "out" / "rendered").rglob("*.tar"):
        for shard in iter_shard(str(tar)):
            splits.setdefault(shard.header["meta"]["video"], set()).add(shard.header["split"])
    assert splits == {videos[0]: {"train"}, videos[1]: {"train"}, videos[2]: {"val"}}
    fresh = _build(path, tmp_path / "fresh")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh")
    assert again["totals"] == fresh["totals"]


@pytest.mark.slow  # three small builds: ~8 s on a loaded machine
def test_one_caption_edited_in_an_image_folders_metadata_renders_only_its_image(tmp_path, monkeypatch):
    """A Hub ImageFolder (`train/metadata.jsonl`) with one caption corrected: each image recorded
    the row it took (not the whole metadata file), so only the unit of the image whose row changed
    and the metadata file's own unit render again; the new caption is in the output, as in a
    fresh build."""
    from PIL import Image

    from sources import web_unit_plan

    monkeypatch.setattr(web_unit_plan, "FOLDER_FILES_PER_UNIT", 1)  # one image per unit
    root = tmp_path / "repo"
    (root / "train").mkdir(parents=True)
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        # noise, not a flat colour: flat colours' pHashes lie within dedup's reach of each other
        # by the JPEG encoder's ringing alone (c.jpg was a's near twin under Pillow 12.3)
        pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "train" / name, quality=90)
    rows = [{"file_name": n, "text": f"photo {n}"} for n in ("a.jpg", "b.jpg", "c.jpg")]
    meta = root / "train" / "metadata.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "imgs", "type": "laion", "path": str(root), "num_shards": 1}],
        direct_num_workers=1, direct_running_mode="in_memory")
    _build(path)
    before = _renders(tmp_path / "out", "imgs")
    rows[1]["text"] = "photo b, café corrigé"
    meta.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    again = _build(path)
    after = _renders(tmp_path / "out", "imgs")
    changed = sorted(u for u in after if after[u] != before.get(u))
    assert len(changed) == 2 and "metadata.jsonl" in changed[0] + changed[1] and "b.jpg" in changed[0] + changed[1]
    assert _units_rendered(again) == 2
    captions = {m["path"]: m.get("caption") for tar in sorted((tmp_path / "out" / "rendered").rglob("*.tar"))
                for s in iter_shard(str(tar)) for m in s.header["members"]}
    assert captions == {"train/a.jpg": "photo a.jpg", "train/b.jpg": "photo b, café corrigé",
                        "train/c.jpg": "photo c.jpg"}


@pytest.mark.slow  # two small builds and a rerun: about 5 s
def test_a_damaged_commit_mark_renders_its_unit_again_with_a_warning(tmp_path, caplog):
    """Commit marks edited on disk into the wrong shape (a VIPSeg video's derived split keyed by a
    list, not a name; a list's `inputs` gone; `files` a list): the rerun crashed the build
    ('unhashable type: list', KeyError); each unit is rendered again (the two whose mark lacks a
    field or holds the wrong type with a warning), and the rerun equals a fresh build."""
    import logging

    import numpy as np
    from PIL import Image

    vipseg = tmp_path / "VIPSeg"
    for video in ("127_c", "1000_a"):
        for number in (976, 1006):  # VIPSeg's sparse frame numbers; uint16 panoptic masks
            (vipseg / "imgs" / video).mkdir(parents=True, exist_ok=True)
            (vipseg / "panomasks" / video).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((72, 128, 3), 90, np.uint8)).save(vipseg / "imgs" / video / f"{number:08d}.jpg")
            Image.fromarray(np.full((72, 128), 6101, np.uint16)).save(vipseg / "panomasks" / video / f"{number:08d}.png")
    (vipseg / "val.txt").write_text("127_c\n")
    (vipseg / "train.txt").write_text("1000_a\n")
    path = _config(tmp_path / "c.yaml", tmp_path / "out", [
        {"name": "vip", "type": "annotated_video", "path": str(vipseg), "layout": "vipseg", "frames": 2,
         "num_shards": 1}], direct_num_workers=1, direct_running_mode="in_memory")
    _build(path)
    marks = {json.loads(m.read_text())["unit"]: m for m in (tmp_path / "out" / "_units" / "vip").glob("*.json")}
    damage = {repr(str(vipseg / "imgs" / "127_c")): lambda m: m["inputs"]["derived"][0][0].__setitem__(0, ["x"]),
              repr(str(vipseg / "val.txt")): lambda m: m.pop("inputs"),
              repr(str(vipseg / "train.txt")): lambda m: m["inputs"].__setitem__("files", [1, 2])}
    for unit, edit in damage.items():
        mark = json.loads(marks[unit].read_text())
        edit(mark)
        marks[unit].write_text(json.dumps(mark))
    with caplog.at_level(logging.WARNING, logger="uvd_pipeline.unit_store"):
        again = _build(path)
    assert _units_rendered(again) == 3
    # the list key is no derived value's name: changed; the other two are damaged, said as such
    assert sum("damaged commit mark" in r.getMessage() for r in caplog.records) == 2, caplog.text
    fresh = _build(path, tmp_path / "fresh")
    assert shard_digests(tmp_path / "out") == shard_digests(tmp_path / "fresh")


def _committed_unit(tmp_path: Path):
    """A store with one unit committed from one input file (a tiny PNG)."""
    from sources import fsio
    from uvd_pipeline.sentences import Sentence
    from uvd_pipeline.unit_store import UnitStore

    src = tmp_path / "in.txt"
    src.write_text("x")
    store = UnitStore(str(tmp_path / "out"), "web", "h")
    writer = store.writer(str(src))
    with fsio.recording_inputs() as record:
        item = Sentence("s0", "web", "image", "none", "train", (b"\x89PNG fake",), ({"key": "s0"},))
        outputs = [("sentences", writer.stored(item))]
    writer.commit(outputs, record)
    return store, str(src)


@pytest.mark.parametrize("where", ["changed_input", "_placed", "read_moved"])
def test_a_bug_of_ours_reading_a_committed_unit_shows_its_traceback(tmp_path, monkeypatch, where):
    """`load` caught TypeError/AttributeError/KeyError/... around `changed_input` and the stored
    outputs to tell a damaged commit mark: a typo of ours there (`fsio.file_sate`) rendered every
    unit again, exit 0, with only a warning. The mark's shape is now checked by itself
    (`mark_problem`), and a bug of ours propagates."""
    from uvd_pipeline import unit_store

    store, src = _committed_unit(tmp_path)
    assert store.load(src) is not None

    def bug(*args, **kwargs):
        raise AttributeError("module 'sources.fsio' has no attribute 'file_sate'")

    monkeypatch.setattr(unit_store, where, bug)
    with pytest.raises(AttributeError, match="file_sate"):
        store.load(src)


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("inputs"), lambda m: m["inputs"].__setitem__("files", [1, 2]),
    lambda m: m["inputs"].__setitem__("listings", [[["files", "x"], "d"]]),
    lambda m: m["inputs"].__setitem__("derived", [[[], 1]]), lambda m: m.__setitem__("results", None),
    lambda m: m["images"].__setitem__("bytes", "12")])
def test_a_commit_mark_of_the_wrong_shape_is_judged_damaged(tmp_path, damage):
    from uvd_pipeline.unit_store import mark_problem

    store, src = _committed_unit(tmp_path)
    (mark_path,) = (tmp_path / "out" / "_units" / "web").glob("*.json")
    mark = json.loads(mark_path.read_text())
    assert mark_problem(mark) is None
    damage(mark)
    assert mark_problem(mark)
    mark_path.write_text(json.dumps(mark))
    assert store.load(src) is None


def test_a_dataset_cards_prose_edited_renders_no_image_again_its_configs_edited_do(tmp_path):
    """An image repo whose card (`README.md`) gives its splits (`format: folder`): the card was a
    file of every folder unit and read whole by the reject of an image of no config, so a typo
    fixed in its prose rendered every image again. The card is now a unit of its own and a unit
    records the split (and the config's name) the card gives it, not the card: a prose edit
    changes the card's unit alone, a config edit the units whose images it moves."""
    from PIL import Image

    from sources import fsio
    from sources.laion import LaionSource
    from uvd_pipeline.unit_store import changed_input, input_manifest

    shade = 0
    for folder in ("train", "holdout", "other"):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for _ in range(2):
            shade += 1
            Image.new("RGB", (8, 8), (shade, 0, 0)).save(tmp_path / "images" / folder / f"{shade}.png")
    card = ('---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: "images/train/**"\n'
            '  - split: test\n    path: "images/holdout/**"\n---\n# My dataset\n')
    (tmp_path / "README.md").write_text(card)
    source = LaionSource("w", str(tmp_path))
    manifests = {}
    for unit in source.units():
        with fsio.recording_inputs() as record:
            list(source.read(unit))
        manifests[unit.kind] = input_manifest(record, unit)
    assert sorted(manifests) == ["card", "folder_card"]
    (tmp_path / "README.md").write_text(card.replace("# My dataset", "# My dataset, a typo fixed"))
    assert changed_input(manifests["folder_card"]) is None and changed_input(manifests["card"])
    (tmp_path / "README.md").write_text(card.replace("images/holdout/**", "images/other/**"))
    assert changed_input(manifests["folder_card"])


def _tars(out: Path) -> dict[str, str]:
    return {name: digest for name, digest in shard_digests(out).items() if name.endswith(".tar")}


@pytest.mark.slow  # four small builds: ~10 s on a loaded machine
def test_a_moved_dataset_keeps_its_units_and_its_output_bytes(mini_corpus, tmp_path):
    """The input folder moved (`mv`) and the config's path edited to the new place: no unit is
    rendered again and every shard file keeps its bytes (the build was refused as another config,
    and `--replace-changed` rendered everything again). One image added there afterwards renders
    only its class folder's unit, and the tars equal a fresh build's of the input where it lies."""
    first_place, new_place = tmp_path / "data" / "imagenet", tmp_path / "big" / "imagenet"
    shutil.copytree(mini_corpus / "imagenet", first_place)
    source = {"name": "inet", "type": "imagenet", "num_shards": 1, "sentence_length": 4, "remainder": "wrap"}
    beam = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
    out = tmp_path / "out"
    assert _units_rendered(_build(_config(tmp_path / "c.yaml", out, [{**source, "path": str(first_place)}], **beam))) == 4
    before = shard_digests(out)
    new_place.parent.mkdir()
    first_place.rename(new_place)
    moved = _config(tmp_path / "moved.yaml", out, [{**source, "path": str(new_place)}], **beam)
    assert _units_rendered(_build(moved)) == 0
    assert shard_digests(out) == before
    folder = new_place / "train" / "n04266014"
    shutil.copy(next(folder.iterdir()), folder / "n04266014_99999.JPEG")
    grown = _build(moved)
    assert _units_rendered(grown) == 1
    fresh = _build(moved, tmp_path / "fresh")
    assert _tars(out) == _tars(tmp_path / "fresh") and grown["totals"] == fresh["totals"]


def test_only_a_moved_path_keeps_the_outputs_config_hash():
    """A build record whose config differs only in a source's path is the same output (named after
    its first root); a path moved together with another change is another config, refused as ever."""
    from uvd_pipeline.build import moved_inputs
    from uvd_pipeline.config import parse_config

    def config(path: str, size: int = 32):
        return parse_config({"output": "/o", "image": {"size": size},
                             "sources": [{"name": "web", "type": "laion", "path": path},
                                         {"name": "inet", "type": "imagenet", "path": "/data/inet"}]})

    first = config("/data/laion")
    record = {"config_hash": first.content_hash(), "config": first.model_dump(mode="json")}
    moved = moved_inputs(config("/mnt/big/laion"), record)
    assert moved.content_hash() == first.content_hash() and moved.output_roots == {"web": "/data/laion"}
    assert moved.output_root("inet") == "/data/inet"
    assert moved_inputs(config("/mnt/big/laion", size=64), record).output_roots == {}
    assert moved_inputs(config("/data/laion/part"), record).output_roots == {}  # a root inside the other
    again = {"config_hash": moved.content_hash(), "config": moved.model_dump(mode="json"),
             "source_roots": moved.output_roots}  # moved once more: still named after the first root
    assert moved_inputs(config("/srv/laion"), again).output_roots == {"web": "/data/laion"}


def test_rebase_moves_only_paths_under_the_root():
    """A unit's and a manifest's paths under the old root go under the new one; a sibling folder
    whose name starts like the root's (`/data/ab` beside `/data/a`) and other values stay."""
    from sources.imagenet import Unit
    from uvd_pipeline.unit_store import rebase

    unit = Unit("train", "n1", ("/data/a/x.jpg", "/data/ab/y.jpg", "/data/a"))
    assert rebase(unit, "/data/a", "/mnt/a/") == Unit("train", "n1", ("/mnt/a/x.jpg", "/data/ab/y.jpg", "/mnt/a"))
    assert repr(rebase(rebase(unit, "/data/a", "/mnt/a"), "/mnt/a", "/data/a")) == repr(unit)
    assert rebase(["files", "gs://b/d/x", None, 3], "gs://b/d", "gs://c/d") == ["files", "gs://c/d/x", None, 3]


def test_a_source_moved_inside_its_old_folder_is_refused_saying_why(tmp_path):
    """`mkdir old/v1; mv old/* old/v1/`, the path edited: a config that differs only in sources'
    paths, which the output cannot keep (a file beside `v1` under the old folder would pass for the
    input's own). It was refused as "a different configuration" with no word of the move; the
    refusal now says the new path lies inside (or around) the old one and names --replace-changed.
    A move within memory:// counts too, whichever way the URL is spelt."""
    from uvd_pipeline.build import prepare_output
    from uvd_pipeline.config import ConfigError, parse_config

    def config(path: str, size: int = 32):
        return parse_config({"output": str(tmp_path / "out"), "image": {"size": size},
                             "sources": [{"name": "web", "type": "laion", "path": path}]})

    for old, new in [(tmp_path / "laion", tmp_path / "laion" / "v1"), (tmp_path / "x" / "v1", tmp_path / "x"),
                     ("memory://nested-test/web", "memory:///nested-test/web/v1/")]:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        prepare_output(config(str(old)), overwrite=False)
        with pytest.raises(ConfigError, match=r"lies inside the old one or around it \(source web: now ") as refused:
            prepare_output(config(str(new)), overwrite=False)
        assert "--replace-changed" in str(refused.value) and str(old) in str(refused.value)
        with pytest.raises(ConfigError, match="different configuration"):  # and another change: as before
            prepare_output(config(str(new), size=64), overwrite=False)
    # the same place spelt another way (a trailing slash, memory:// with two or three slashes) is no
    # move inside itself: it was refused as one (the final read); the output keeps its first root
    for old, new in [(str(tmp_path / "laion"), str(tmp_path / "laion") + "/"),
                     ("memory://same-test/web", "memory:///same-test/web")]:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        prepare_output(config(old), overwrite=False)
        assert prepare_output(config(new), overwrite=False).output_roots == {"web": old}


@pytest.mark.slow  # two small builds: ~2 s
def test_a_moved_memory_input_keeps_its_units(tmp_path):
    """An fsspec input (memory://) moved and its path edited: the roots as written
    (`memory://src/web`) matched none of the names its listing gives (`memory:///src/web/x.jpg`),
    so every unit rendered again (same bytes). Roots are now compared in the listed names' form:
    nothing renders and the shards keep their bytes."""
    import fsspec

    from interrupt_harness import jpeg

    fs, top = fsspec.filesystem("memory"), f"/moved-{tmp_path.name}"
    try:
        for i in range(6):
            fs.pipe(f"{top}/src/web/img{i}.jpg", jpeg(i, (40 + i, 36)))
        out, source = tmp_path / "out", {"name": "web", "type": "laion", "num_shards": 1}
        beam = {"direct_num_workers": 1, "direct_running_mode": "in_memory"}
        assert _units_rendered(_build(_config(tmp_path / "c.yaml", out, [{**source, "path": f"memory:/{top}/src/web"}],
                                              **beam))) == 1
        before = shard_digests(out)
        fs.mv(f"{top}/src", f"{top}/dst", recursive=True)
        moved = _config(tmp_path / "moved.yaml", out, [{**source, "path": f"memory:/{top}/dst/web"}], **beam)
        assert _units_rendered(_build(moved)) == 0 and shard_digests(out) == before
    finally:
        fs.rm(top, recursive=True)


def test_drop_stale_keeps_a_moved_inputs_units(tmp_path):
    """After a build of a moved input, `drop_stale` forgets units no longer in the input: it must
    name the units as the store does (under the output's first root), or it takes every unit of
    the moved input for gone and removes it (the next run renders everything again)."""
    from sources import fsio
    from uvd_pipeline.build import drop_stale
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.sentences import Sentence
    from uvd_pipeline.unit_store import UnitStore

    old, new, out = str(tmp_path / "data" / "web"), tmp_path / "big" / "web", str(tmp_path / "out")
    new.mkdir(parents=True)
    config = parse_config({"output": out, "sources": [{"name": "web", "type": "laion", "path": str(new)}]})
    config = config.with_output_roots({"web": old})
    store = UnitStore(out, "web", config.content_hash(), str(new), old)
    units = []
    for name in ("a", "b"):
        (new / name).write_text(name)
        units.append(str(new / name))
        writer = store.writer(units[-1])
        with fsio.recording_inputs() as record:
            item = Sentence(name, "web", "image", "none", "train", (b"\x89PNG fake",), ({"key": name},))
        writer.commit([("sentences", writer.stored(item))], record)
    drop_stale(config, {"web": units[:1]}, set())  # b is gone from the input
    assert store.load(units[0]) is not None and store.load(units[1]) is None


def test_a_stores_names_follow_a_moved_url_root_spelt_either_way():
    """A memory:// root as written (`memory://dst/web`) and as listed (`memory:///dst/web/x`): a
    store names paths of both forms under its first root and finds them again where they lie; the
    same place spelt two ways is no move."""
    from uvd_pipeline.unit_store import UnitStore

    store = UnitStore("/o", "web", "h", "memory://dst/web", "memory://src/web/")
    here = ["memory:///dst/web/a.jpg", "memory://dst/web/b.txt", "memory:///dst/webs/c"]
    named = ["memory:///src/web/a.jpg", "memory://src/web/b.txt", "memory:///dst/webs/c"]
    assert store.moved and store.named(here) == named and store.here(named) == here
    same = UnitStore("/o", "web", "h", "memory:///src/web", "memory://src/web")
    assert not same.moved and same.named(here) == here


def test_a_moved_memory_folders_units_are_found_again_in_the_store(tmp_path):
    """The store level of `test_a_moved_memory_input_keeps_its_units`, fast: a memory:// folder's
    units committed, the folder moved, its units listed again at the new place are found
    (committed under the root as written, `memory://src/web`, they were not: rendered again)."""
    import fsspec

    from interrupt_harness import jpeg
    from sources import fsio
    from sources.laion import LaionSource
    from uvd_pipeline.unit_store import UnitStore

    fs, top = fsspec.filesystem("memory"), f"/store-moved-{tmp_path.name}"
    old, new = f"memory:/{top}/src/web", f"memory:/{top}/dst/web"
    try:
        for i in range(3):
            fs.pipe(f"{top}/src/web/img{i}.jpg", jpeg(i, (40 + i, 36)))
        store, source = UnitStore(str(tmp_path), "web", "h", old), LaionSource("web", old)
        for unit in source.units():
            writer = store.writer(unit)
            with fsio.recording_inputs() as record:
                list(source.read(unit))
            writer.commit([], record)
        fs.mv(f"{top}/src", f"{top}/dst", recursive=True)
        units = LaionSource("web", new).units()
        assert units and all(UnitStore(str(tmp_path), "web", "h", new, old).load(u) is not None for u in units)
    finally:
        fs.rm(top, recursive=True)


def test_a_file_rewritten_while_its_unit_is_read_is_noticed_on_rerun(tmp_path):
    """An image a download or an editor rewrites after its unit read it, before the unit commits
    (ImageMagick's `convert` writing it again): its state was taken at the commit, the new one
    recorded beside what the old bytes rendered, so no rerun saw a change and the output kept
    the old picture for good. The state is the one the file had when the unit opened it."""
    import subprocess

    from sources import fsio
    from sources.laion import LaionSource
    from uvd_pipeline.unit_store import changed_input, input_manifest

    folder = tmp_path / "web"
    folder.mkdir()
    image = folder / "a.png"
    subprocess.run(["convert", "-size", "16x12", "xc:red", str(image)], check=True)
    source = LaionSource("web", str(folder), format="folder")
    (unit,) = source.units()
    with fsio.recording_inputs() as record:
        (item,) = source.read(unit)
        read = item.read_bytes()
        subprocess.run(["convert", "-size", "16x12", "xc:blue", str(image)], check=True)  # while it renders
    assert image.read_bytes() != read
    assert changed_input(input_manifest(record, unit)) == f"{image} changed"
