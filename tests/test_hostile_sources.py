"""Hostile datasets, written at test time: names and links that leave the source root, and
annotation files that are broken on purpose. Each must end as a reject with a reason (or, for a
file that is unusable as a whole, one error naming the file), never as a read of a file outside
the root, a traceback, or a lost unit."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sources import fsio
from sources.annotated_video import AnnotatedVideoSource
from sources.annotation_files import AnnotationFileError, load_json
from sources.coco import CocoSource, load_index
from sources.imagenet import ImageNetSource
from sources.laion import LaionSource
from sources.mpii import MpiiSource
from sources.multitask import MultiTaskSource
from sources.multiview import Co3dSource, ObjaverseSource
from sources.paths import OutsideRoot, check_inside, join_inside
from sources.records import PairRecord, Reject, clean_detail
from sources.segmentation import SegmentationSource
from sources.stereo import StereoSource
from transforms.decode import DecodeError, load_image
from transforms.maps import MapError, decode_depth

CANARY = b"root:x:0:0:CANARY-7f3a9 private bytes that must never be read"
LEAKS = ("root:x:0", "CANARY-7f3a9")  # what a leaked canary looks like in any text


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder next to the dataset root: a canary file and a real image nobody may read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_bytes(CANARY)
    _png(folder / "private.png", np.full((8, 8, 3), 200, np.uint8))
    (folder / "classdir").mkdir()
    _png(folder / "classdir" / "n0_9.png", np.zeros((8, 8, 3), np.uint8))
    return folder


def _items(source) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


def _rejects(items) -> dict[str, str]:
    return {r.key: r.reason for r in items if isinstance(r, Reject)}


def _no_canary(items) -> None:
    for item in items:
        assert not any(leak in repr(item) for leak in LEAKS)


def test_join_inside_refuses_absolute_and_climbing_names(tmp_path: Path):
    root = str(tmp_path / "root")
    assert join_inside(root, "a/b.jpg") == os.path.join(root, "a", "b.jpg")
    assert join_inside(root, "a/../b.jpg") == os.path.join(root, "b.jpg")
    for name in ("/etc/passwd", "../../../etc/passwd", "a/../../x.jpg", "gs://bucket/x.jpg", "C:\\x.jpg", "", 3):
        with pytest.raises(OutsideRoot):
            join_inside(root, name)  # type: ignore[arg-type]
    assert join_inside("gs://bucket/root", "a/b.jpg") == "gs://bucket/root/a/b.jpg"
    with pytest.raises(OutsideRoot):
        join_inside("gs://bucket/root", "../other/x.jpg")
    with pytest.raises(OutsideRoot):  # a sibling whose name starts like the root
        check_inside(root, str(tmp_path / "root2" / "x.jpg"))


def test_links_leading_out_are_listed_and_refused(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    _png(root / "sub" / "in.png", np.zeros((4, 4, 3), np.uint8))
    (root / "out.png").symlink_to(outside / "private.png")
    (root / "inside.png").symlink_to(root / "sub" / "in.png")
    (root / "outdir").symlink_to(outside / "classdir")
    (root / "sub" / "loop").symlink_to(root)
    assert [fsio.basename(f) for f in fsio.list_files(str(root), (".png",))] == []  # others' readers: as before
    listed = fsio.list_files(str(root), (".png",), links=True)
    assert [fsio.basename(f) for f in listed] == ["inside.png", "out.png"]  # links are listed, not skipped
    assert [fsio.basename(d) for d in fsio.list_dirs(str(root), links=True)] == ["outdir", "sub"]
    deep = [f[len(str(root)) + 1:] for f in fsio.list_files(str(root), (".png",), recursive=True, links=True)]
    assert deep == ["inside.png", "out.png", "outdir", "sub/in.png", "sub/loop"]  # folder links listed whatever their name
    followed = [f[len(str(root)) + 1:] for f in fsio.list_files(str(root), (".png",), recursive=True, follow_links=True,
                                                                                 links=True)]
    # the loop is not walked, but listed: its reader rejects it (`link_loop`), never drops it
    assert followed == ["inside.png", "out.png", "outdir/n0_9.png", "sub/in.png", "sub/loop"]
    check_inside(str(root), str(root / "inside.png"))
    with pytest.raises(OutsideRoot, match="follow_links") as caught:
        check_inside(str(root), str(root / "out.png"))
    assert str(outside) not in caught.value.detail  # the detail names the link, not where it leads
    check_inside(str(root), str(root / "out.png"), follow_links=True)


def test_a_listing_of_folders_with_loops_is_relisted_with_its_loops(tmp_path: Path):
    """`list_dirs(loops=True)` lists links to themselves too; its listing is recorded under a key
    holding `loops`, and `relist` lists again with it: a loop added since changes that listing, and
    only it (a key without `loops`, as every listing recorded before, is relisted without)."""
    (tmp_path / "building").mkdir()
    (tmp_path / "self").symlink_to("self")
    with fsio.recording_inputs() as record:
        fsio.list_dirs(str(tmp_path), links=True, loops=True)
        fsio.list_dirs(str(tmp_path), links=True)
    assert sorted(record.listings, key=len) == [("dirs", str(tmp_path), True), ("dirs", str(tmp_path), True, True)]
    assert all(fsio.relist(key) == digest for key, digest in record.listings.items())
    (tmp_path / "ring").symlink_to("ring")
    assert [fsio.relist(key) == digest for key, digest in sorted(record.listings.items(), key=lambda kv: len(kv[0]))] \
        == [True, False]


def test_links_swapped_between_two_checks_are_judged_as_they_are_now(tmp_path: Path, outside: Path):
    """What a path resolves to is judged at each check, never kept from an earlier one: a folder
    swapped for a link leading out, or the target of a link inside the root swapped so, is
    refused at the next check (a cache of resolved folders, tried for speed, let both pass)."""
    import shutil

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    for folder in (root / "real", outside):
        _png(folder / "1.png", np.zeros((4, 4, 3), np.uint8))
    check_inside(str(root), str(root / "real" / "1.png"))
    check_inside(str(root), str(root / "alias" / "1.png"))
    shutil.rmtree(root / "real")
    (root / "real").symlink_to(outside)
    for path in (root / "real" / "1.png", root / "alias" / "1.png"):
        with pytest.raises(OutsideRoot, match="follow_links"):
            check_inside(str(root), str(path))


def test_imagenet_links_become_outside_root_rejects(tmp_path: Path, outside: Path):
    root = tmp_path / "imagenet"
    _png(root / "train" / "n0" / "n0_1.png", np.zeros((8, 8, 3), np.uint8))
    (root / "train" / "n0" / "n0_2.png").symlink_to(outside / "private.png")
    (root / "train" / "n0" / "n0_3.png").symlink_to(outside / "passwd")
    (root / "train" / "n0" / "n0_4.png").symlink_to(root / "train" / "n0" / "n0_1.png")  # stays inside
    (root / "train" / "n9").symlink_to(outside / "classdir")
    items = _items(ImageNetSource("inet", str(root), ("train",)))
    assert sorted(i.key for i in items if not isinstance(i, Reject)) == ["inet-train-n0-n0_1", "inet-train-n0-n0_4"]
    assert _rejects(items) == {"inet-train-n0-n0_2": "outside_root", "inet-train-n0-n0_3": "outside_root",
                               "inet-train-n9-n9": "outside_root"}
    _no_canary(items)
    followed = _items(ImageNetSource("inet", str(root), ("train",), follow_links=True))
    assert not _rejects(followed) and len(followed) == 5  # the config can allow links explicitly


def _coco_tree(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    for n in (1, 2, 3):
        _png(root / "images" / f"{n}.jpg", np.full((40, 60, 3), 90, np.uint8))
    return root


def _coco_json(root: Path, images: list, annotations: list, name: str = "ann.json") -> str:
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    path = root / name
    path.write_text(json.dumps(data))
    return name


def _box(ann_id: int, image_id: int, **extra) -> dict:
    polygon = [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0, 5.0, 25.0]]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": [5.0, 5.0, 25.0, 20.0],
            "area": 500.0, "iscrowd": 0, "segmentation": polygon, **extra}


def test_coco_file_names_stay_inside_the_images_folder(tmp_path: Path, outside: Path):
    root = _coco_tree(tmp_path)
    (root / "images" / "link.jpg").symlink_to(outside / "private.png")
    images = [{"id": 1, "file_name": "1.jpg", "width": 60, "height": 40},
              {"id": 2, "file_name": str(outside / "private.png"), "width": 8, "height": 8},
              {"id": 3, "file_name": "../../outside/passwd", "width": 8, "height": 8},
              {"id": 4, "file_name": "link.jpg", "width": 8, "height": 8},
              {"id": 5, "file_name": {"not": "text"}, "width": 8, "height": 8}]
    name = _coco_json(root, images, [_box(i, i) for i in (1, 2, 3, 4, 5)])
    items = _items(CocoSource("coco", str(root), (name,), "images", ("detection", "segmentation")))
    assert sorted(i.key for i in items if isinstance(i, PairRecord)) == ["coco-1-detection", "coco-1-segmentation"]
    reasons = _rejects(items)
    assert {k: v for k, v in reasons.items() if not k.startswith("coco-5")} == {
        f"coco-{n}-{t}": "outside_root" for n in (2, 3, 4) for t in ("detection", "segmentation")}
    assert reasons["coco-5-detection"] == "bad_annotation"
    _no_canary(items)


@pytest.mark.parametrize("images, annotations, message", [
    ([{"file_name": "1.jpg"}], [], r"ann\.json: images\[0\] has no 'id' \(an integer or a text\)"),
    ([{"id": 1, "file_name": "1.jpg"}], [{"id": 7, "image_id": 1.5}], r"annotations\[0\] has no 'image_id'"),
    ([{"id": 1, "file_name": "1.jpg"}], [{"id": [7], "image_id": 1}], r"annotations\[0\] has no 'id'"),
    ([{"id": 1, "file_name": "1.jpg"}, {"id": ""}], [], r"images\[1\] has no 'id'"),
    ([{"id": True, "file_name": "1.jpg"}], [], r"images\[0\] has no 'id'"),
])
def test_coco_entries_without_ids_refuse_the_file_naming_it(tmp_path: Path, images, annotations, message):
    """An id that is neither an integer nor a text places the entry nowhere (a text id is an
    id: converters write them, `test_coco_exports`)."""
    root = _coco_tree(tmp_path)
    name = _coco_json(root, images, annotations)
    load_index.cache_clear()
    with pytest.raises(AnnotationFileError, match=message):
        CocoSource("coco", str(root), (name,), "images").units()


def test_annotation_files_nesting_bomb_size_and_gzip_bomb(tmp_path: Path):
    bomb = tmp_path / "bomb.json"
    bomb.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(AnnotationFileError, match=r"bomb\.json: nests too deep"):
        load_json(str(bomb))
    with pytest.raises(AnnotationFileError, match="larger than 1000 bytes"):
        load_json(str(bomb), limit=1000)
    (tmp_path / "bad.json").write_bytes(CANARY)
    with pytest.raises(AnnotationFileError, match=r"not valid JSON \(Expecting value at line 1 column 1\)") as caught:
        load_json(str(tmp_path / "bad.json"))
    assert not any(leak in str(caught.value) for leak in LEAKS)
    jgz = tmp_path / "frames.jgz"
    jgz.write_bytes(gzip.compress(b" " * 5_000_000 + b"[]"))  # 5 MB of blanks in a 5 KB file
    assert len(jgz.read_bytes()) < 10_000
    with pytest.raises(AnnotationFileError, match="expands past 100000 bytes"):
        load_json(str(jgz), gzipped=True, limit=100_000)
    assert load_json(str(jgz), gzipped=True) == []


@pytest.mark.parametrize("step", [1, 2, 3, 5, 8])
def test_a_list_read_item_by_item_is_what_json_reads(tmp_path: Path, monkeypatch, step: int):
    """`iter_json_list` parses where a step of the text ends: a number cut there (`4.5` of
    `4.5e10`, `-` of `-0.5`) is read again with the next step, never taken short; a BOM is skipped
    as json.loads skips it; a bad file raises as `load_json` does, naming the file and no bytes."""
    from sources import annotation_files

    monkeypatch.setattr(annotation_files, "TEXT_STEP", step)
    items = [4.5e10, -0.5, 12345678901234567890, 1e400, True, None, "a\"\u00e9\n", {"R": [[1, 2], []]}, [], 0, -7]
    text = "\ufeff" + json.dumps(items, indent=1, ensure_ascii=False)
    path = tmp_path / "f.jgz"
    path.write_bytes(gzip.compress(text.encode()))
    assert list(annotation_files.iter_json_list(str(path), gzipped=True)) == json.loads(text.encode())
    for bad, problem in ((b"[1, 2", "expecting ',' or ']'"), (b"[1,]", "Expecting value"), (b"{}", "not a JSON list"),
                         (b"[1] [2]", "extra data"), (b"[" * 100_000, "nests too deep"), (CANARY, "not a JSON list")):
        path.write_bytes(gzip.compress(bad))
        with pytest.raises(AnnotationFileError, match=re.escape(problem)) as caught:
            list(annotation_files.iter_json_list(str(path), gzipped=True))
        assert str(path) in str(caught.value) and not any(leak in str(caught.value) for leak in LEAKS)


def test_a_long_item_is_parsed_a_few_times_and_capped(tmp_path: Path, monkeypatch):
    """An item that a step of the text cuts was parsed again after each further step: 16 MB of
    empty lists in one item took 20 s (the square of its length), and a number, never held to
    the item cap, of 128 M digits 25 s and 400 MB. The text now doubles before each parse."""
    from sources import annotation_files

    monkeypatch.setattr(annotation_files, "TEXT_STEP", 100)
    monkeypatch.setattr(annotation_files, "MAX_ITEM_CHARS", 50_000)
    parses = []
    decode = json.JSONDecoder.raw_decode
    monkeypatch.setattr(json.JSONDecoder, "raw_decode", lambda self, *a: parses.append(1) or decode(self, *a))
    path = tmp_path / "frames.jgz"
    lists = [[[]] * 10_000, 7]  # an item of 40 KB: 400 steps
    path.write_bytes(gzip.compress(json.dumps(lists).encode()))
    assert list(annotation_files.iter_json_list(str(path), gzipped=True)) == lists
    assert len(parses) < 20, len(parses)
    path.write_bytes(gzip.compress(b"[1." + b"0" * 200_000 + b"]"))
    parses.clear()
    with pytest.raises(AnnotationFileError, match="a number over 50000 characters"):
        list(annotation_files.iter_json_list(str(path), gzipped=True))
    assert len(parses) < 20, len(parses)


def test_one_bad_coco_annotation_rejects_its_own_pair_only(tmp_path: Path):
    root = _coco_tree(tmp_path)
    images = [{"id": n, "file_name": f"{n}.jpg", "width": 60, "height": 40} for n in (1, 2, 3)]
    annotations = [_box(10, 1, category_id="abc"),  # image 1: detection and segmentation use it
                   _box(20, 2, segmentation=[[1.0, 1.0, 9.0, 9.0]]),  # image 2: a 2-point polygon
                   _box(30, 3), _box(31, 3, keypoints=[1.0, 2.0], num_keypoints=1)]
    name = _coco_json(root, images, annotations)
    items = _items(CocoSource("coco", str(root), (name,), "images"))
    rejects = {r.key: r for r in items if isinstance(r, Reject)}
    assert {k: r.reason for k, r in rejects.items()} == {
        "coco-1-detection": "bad_annotation", "coco-1-segmentation": "bad_annotation", "coco-1-pose": "no_pose_annotations",
        "coco-2-segmentation": "no_segmentation_annotations", "coco-2-pose": "no_pose_annotations",
        "coco-3-pose": "bad_annotation"}
    assert rejects["coco-1-detection"].detail == "ann.json annotations[0] (id 10): category_id is not an integer"
    assert rejects["coco-2-segmentation"].detail == "image 2: its 1 segment has no polygon of 3 or more points"
    assert "annotations[3] (id 31)" in rejects["coco-3-pose"].detail
    assert sorted(i.key for i in items if isinstance(i, PairRecord)) == [
        "coco-2-detection", "coco-3-detection", "coco-3-segmentation"]


def test_coco_ids_used_twice_in_one_file_reject_the_images_involved(tmp_path: Path):
    """An id used twice within one file is ambiguous (which entry is image 2? which object is
    annotation 30?): every pair of the images involved is rejected, naming the file and both
    entries, and the rest of the file builds. The same ids across files still merge."""
    root = _coco_tree(tmp_path)
    for n in (4, 5):
        _png(root / "images" / f"{n}.jpg", np.full((40, 60, 3), 90, np.uint8))
    images = [{"id": n, "file_name": f"{n}.jpg", "width": 60, "height": 40} for n in (1, 2, 3, 4, 5)]
    images.insert(2, {"id": 2, "file_name": "2b.jpg", "width": 60, "height": 40})  # images[2]: id 2 again
    annotations = [_box(10, 1), _box(20, 2), _box(30, 3), _box(30, 4),  # annotation 30 on images 3 and 4
                   _box(50, 5), _box(50, 5, bbox=[1.0, 1.0, 5.0, 5.0])]  # annotation 50 twice on image 5
    name = _coco_json(root, images, annotations)
    people = _coco_json(root, images[:1], [{"id": 10, "image_id": 1, "num_keypoints": 1,
                                             "keypoints": [float(v) for j in range(17) for v in (9 + j, 9, 2)]}],
                        name="person_keypoints.json")
    load_index.cache_clear()
    items = _items(CocoSource("coco", str(root), (name, people), "images"))
    rejects = {r.key: r for r in items if isinstance(r, Reject)}
    tasks = ("detection", "segmentation", "pose")
    assert {k: r.reason for k, r in rejects.items()} == {f"coco-{n}-{t}": "bad_annotation" for n in (2, 3, 4, 5)
                                                         for t in tasks}
    assert rejects["coco-2-detection"].detail == "image 2: ann.json images[1] and images[2] both have id 2"
    assert rejects["coco-3-pose"].detail == "image 3: ann.json annotations[2] and annotations[3] both have id 30"
    assert rejects["coco-4-segmentation"].detail == \
        "image 4: ann.json annotations[2] and annotations[3] both have id 30"
    assert rejects["coco-5-detection"].detail == "image 5: ann.json annotations[4] and annotations[5] both have id 50"
    pairs = {i.key: i for i in items if isinstance(i, PairRecord)}
    assert sorted(pairs) == ["coco-1-detection", "coco-1-pose", "coco-1-segmentation"]
    assert len(pairs["coco-1-pose"].annotation["people"]) == 1  # keypoints merged into annotation 10


def test_mpii_bad_entries_and_names_that_leave_the_root(tmp_path: Path):
    root = tmp_path / "mpii"
    _png(root / "images" / "a.jpg", np.zeros((16, 16, 3), np.uint8))
    joints = [[float(i), float(i)] for i in range(16)]
    person = {"joints": joints, "joints_vis": [1] * 16}
    entries = [{"image": "a.jpg", **person}, {"image": "../../outside/passwd", **person},
               {"image": "b.jpg", "joints": "x", "joints_vis": [1]}, {"joints": joints}, 7]
    (root / "annotations").mkdir()
    (root / "annotations" / "mpii_train.json").write_text(json.dumps(entries))
    items = _items(MpiiSource("mpii", str(root)))
    assert [i.key for i in items if isinstance(i, PairRecord)] == ["mpii-a-pose"]
    rejects = {r.key: r for r in items if isinstance(r, Reject)}
    assert sorted((k, r.reason) for k, r in rejects.items() if r.reason != "outside_root") == [
        ("mpii-b-pose", "bad_annotation"), ("mpii-entry-3", "bad_annotation"), ("mpii-entry-4", "bad_annotation")]
    (escape,) = [r for r in rejects.values() if r.reason == "outside_root"]
    assert "climbs out" in escape.detail
    assert rejects["mpii-entry-3"].detail == "annotations/mpii_train.json[3] has no image name"


def _mpii_person(image: str, shift: float) -> dict:
    """One MPII person entry as HRNet's JSON (the one MMPose ships) writes it (MATLAB 1-based pixel centres)."""
    return {"image": image, "center": [32.0, 24.0], "scale": 0.3,
            "joints": [[10.0 + j + shift, 20.0 + j] for j in range(16)], "joints_vis": [1] * 16}


def test_mpii_image_people_make_one_pair_across_unit_boundaries(tmp_path: Path):
    """An image's people at entries 511 and 512 (the unit boundary), and an image whose two
    people are far apart in the list, each become one pair with all their people: no key is read
    twice. A second image with a stem already taken is a `duplicate_key` reject."""
    from PIL import Image

    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(515):
        Image.fromarray(np.full((12, 16, 3), i % 255, np.uint8)).save(root / "images" / f"{i:05d}.jpg", quality=90)
        entries.append(_mpii_person(f"{i:05d}.jpg", 0.0))
        if i == 511:
            entries.append(_mpii_person("00511.jpg", 5.0))  # entry 512: the same image, the next unit
    entries.append(_mpii_person("00003.jpg", 7.0))  # the second person of image 3, far from its first
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "images" / "00007.png")
    entries.append(_mpii_person("00007.png", 0.0))  # stem 00007 is 00007.jpg's key already
    (root / "annotations").mkdir()
    with open(root / "annotations" / "mpii_train.json", "w") as handle:
        json.dump(entries, handle)
    source = MpiiSource("mpii", str(root))
    assert source.units() == [(0, 512), (512, 518)]
    items = _items(source)
    pairs = {i.key: i for i in items if isinstance(i, PairRecord)}
    assert len(pairs) == 515 == sum(isinstance(i, PairRecord) for i in items)
    for key, shifts in (("mpii-00511-pose", (0.0, 5.0)), ("mpii-00003-pose", (0.0, 7.0))):
        people = pairs[key].annotation["people"]
        assert pairs[key].lineage == {"file": f"{key[5:10]}.jpg", "people": 2}
        assert [person[:3] for person in people] == [[9.5 + shift, 19.5, 2.0] for shift in shifts]
    (clash,) = [i for i in items if isinstance(i, Reject)]
    assert (clash.key, clash.reason) == ("mpii-00007-pose", "duplicate_key")
    assert clash.detail == "00007.png: key mpii-00007-pose already taken by 00007.jpg"


def test_dense_layouts_refuse_links_out_of_the_root(tmp_path: Path, outside: Path):
    image = np.zeros((8, 8, 3), np.uint8)
    # ADE20K: an image that is a link out
    ade = tmp_path / "ade"
    _png(ade / "images/training/a1.jpg", image)
    _png(ade / "annotations/training/a1.png", np.ones((8, 8), np.uint8))
    (ade / "images/training/a2.jpg").symlink_to(outside / "private.png")
    _png(ade / "annotations/training/a2.png", np.ones((8, 8), np.uint8))
    items = _items(SegmentationSource("ade", str(ade)))
    assert _rejects(items) == {"ade-training-a2-segmentation": "outside_root"} and len(items) == 2
    # KITTI: a right view that is a link out
    kitti = tmp_path / "kitti"
    for n in ("0_10.png", "1_10.png"):
        _png(kitti / "training/image_2" / n, image)
    _png(kitti / "training/image_3/0_10.png", image)
    (kitti / "training/image_3/1_10.png").symlink_to(outside / "private.png")
    assert _rejects(_items(StereoSource("k", str(kitti), ("stereo",)))) == {"k-1_10-pair": "outside_root"}
    # Taskonomy: a linked building
    tk = tmp_path / "tk"
    _png(tk / "b1/rgb/p_domain_rgb.png", image)
    (tk / "b2").symlink_to(outside)
    (outside / "rgb").mkdir()
    assert _rejects(_items(MultiTaskSource("tk", str(tk), ("image",)))) == {"tk-b2": "outside_root"}
    # Objaverse: a view that is a link out
    obj = tmp_path / "obj"
    for i in range(3):
        _png(obj / "u1" / f"{i:03d}.png", image)
        np.save(obj / "u1" / f"{i:03d}.npy", np.eye(3, 4, dtype=np.float32))
    (obj / "u1" / "003.png").symlink_to(outside / "private.png")
    assert _rejects(_items(ObjaverseSource("obj", str(obj), views=2))) == {"obj-u1": "outside_root"}
    # VIPSeg: a mask that is a link out
    vip = tmp_path / "vip"
    for f in range(2):
        _png(vip / f"imgs/v1/{f:05d}.jpg", image)
    _png(vip / "panomasks/v1/00000.png", np.ones((8, 8), np.uint8))
    (vip / "panomasks/v1/00001.png").symlink_to(outside / "private.png")
    items = _items(AnnotatedVideoSource("vip", str(vip), "vipseg", frames=1))
    assert _rejects(items) == {"vip-v1-s1-f00001": "outside_root"} and len(items) == 2


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_web_layouts_refuse_links_out_of_the_root(tmp_path: Path, outside: Path):
    """Every img2dataset layout, and a plain folder, with links leading out of the root: a shard
    folder, an image no parquet lists, a caption, a tar, the parquet and _stats.json, a parquet
    of images. Each is an `outside_root` reject (never a silent gap), and none is opened."""
    jpg = cv2.imencode(".jpg", np.full((16, 24, 3), 90, np.uint8))[1].tobytes()
    (outside / "shard").mkdir()
    (outside / "shard" / "000000005.jpg").write_bytes(jpg)
    (outside / "shard" / "000000005.txt").write_bytes(CANARY)
    _tar(outside / "shard.tar", {"000000005.jpg": jpg, "000000005.txt": CANARY})
    (outside / "stats.json").write_text(json.dumps({"successes": 9, "note": CANARY.decode()}))
    row = {"key": "000000000", "status": "success", "url": "http://127.0.0.1/0.jpg", "caption": CANARY.decode()}
    pq.write_table(pa.Table.from_pylist([row]), outside / "listing.parquet")
    pq.write_table(pa.Table.from_pylist([{**row, "jpg": jpg}]), outside / "images.parquet")

    files = tmp_path / "files"  # output_format=files
    (files / "00000").mkdir(parents=True)
    (files / "00000" / "000000000.jpg").write_bytes(jpg)
    (files / "00000" / "000000000.txt").symlink_to(outside / "passwd")  # a caption leading out
    (files / "00000" / "000000007.jpg").symlink_to(outside / "private.png")  # an image no listing names
    (files / "00001").symlink_to(outside / "shard")  # a shard folder on another disk
    pq.write_table(pa.Table.from_pylist([{**row, "caption": "c"}]), files / "00000.parquet")
    pq.write_table(pa.Table.from_pylist([{**row, "key": "000000005"}]), files / "00001.parquet")
    wds = tmp_path / "wds"  # output_format=webdataset
    wds.mkdir()
    _tar(wds / "00000.tar", {"000000000.jpg": jpg})
    (wds / "00000.parquet").symlink_to(outside / "listing.parquet")
    (wds / "00000_stats.json").symlink_to(outside / "stats.json")
    (wds / "00001.tar").symlink_to(outside / "shard.tar")
    (wds / "00002.tar").symlink_to(wds / "gone.tar")  # dangling, inside: a shard that is not there
    (wds / "00003.tar").symlink_to(outside / "gone.tar")  # dangling, leading out
    images = tmp_path / "pq"  # output_format=parquet
    images.mkdir()
    pq.write_table(pa.Table.from_pylist([{**row, "caption": "c", "jpg": jpg}]), images / "00000.parquet")
    (images / "00001.parquet").symlink_to(outside / "images.parquet")
    folder = tmp_path / "folder"  # a plain folder
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpg)
    (folder / "a.txt").symlink_to(outside / "passwd")

    expected = {
        (files, "files"): [("web-00000-000000000", "outside_root"), ("web-00000-000000007", "outside_root"),
                           ("web-00001", "outside_root")],
        (wds, "webdataset"): [("web-00000", "outside_root"), ("web-00000", "outside_root"),
                              ("web-00001", "outside_root"), ("web-00002", "corrupt_archive"),
                              ("web-00003", "outside_root")],
        (images, "parquet"): [("web-00001", "outside_root")],
        (folder, "folder"): [("web-a--txt", "outside_root")],
    }
    for (root, layout), rejects in expected.items():
        source = LaionSource("web", str(root))
        assert source.resolved_format() == layout
        with fsio.recording_inputs() as opened:
            items = _items(source)
        assert sorted((r.key, r.reason) for r in items if isinstance(r, Reject)) == rejects, layout
        (record,) = [i for i in items if not isinstance(i, Reject)]
        assert record.key in ("web-00000-000000000", "web-a")
        assert record.lineage.get("caption") in (None, "c")  # never the one a link leads to
        assert not [f for f in opened.files if os.path.realpath(f).startswith(str(outside.resolve()))], layout
        _no_canary(items)
    # with `follow_links: true` (the config's field, through the factory) the links are read
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.source_factory import make_source

    config = parse_config({"version": 1, "output": str(tmp_path / "out"), "sources": [
        {"name": "web", "type": "laion", "path": str(wds), "follow_links": True}]})
    followed = _items(make_source(config.sources[0], config.seed, config.image.max_pixels))
    assert sorted((r.key, r.reason) for r in followed if isinstance(r, Reject)) == [
        # the _stats.json followed counts 9 successes, its listing and tar hold 1: 8 samples lost
        *[(f"web-00000-missing-{n}", "missing_from_archive") for n in range(1, 9)],
        ("web-00002", "corrupt_archive"), ("web-00003", "corrupt_archive")]  # and the dangling links
    linked = [i for i in followed if not isinstance(i, Reject) and i.lineage["shard"] == "00001"]
    assert [(i.key, i.data, i.lineage["caption"]) for i in linked] == [("web-00001-000000005", jpg, CANARY.decode())]


def test_co3d_frames_checked_one_by_one(tmp_path: Path, outside: Path):
    root = tmp_path / "co3d"
    frames = []
    for n in range(3):
        path = f"toy/s1/images/frame{n:06d}.jpg"
        _png(root / path, np.zeros((6, 6, 3), np.uint8))
        frames.append({"sequence_name": "s1", "frame_number": n, "image": {"path": path},
                       "viewpoint": {"R": np.eye(3).tolist(), "T": [float(n), 1.0, 2.0]}})
    frames += [{**frames[0], "frame_number": 3, "image": {"path": "../outside/private.png"}},
               {**frames[0], "frame_number": 4, "viewpoint": {"R": "abc", "T": [0, 0, 0]}},
               {"frame_number": 5}]
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    items = _items(Co3dSource("co3d", str(root), views=3))
    assert _rejects(items) == {"co3d-toy-frame-3": "outside_root", "co3d-toy-frame-4": "bad_annotation",
                               "co3d-toy-frame-5": "bad_annotation"}
    assert sum(not isinstance(i, Reject) for i in items) == 1  # the sequence still makes its sentence
    (root / "toy" / "frame_annotations.jgz").write_bytes(b"[" * 100_000)
    (reject,) = _items(Co3dSource("co3d", str(root), views=3))
    assert reject.reason == "bad_annotation_file" and "frame_annotations.jgz" in reject.detail


def _co3d_orbit(root: Path, sequence: str = "s1", count: int = 3) -> list[dict]:
    """A category `toy` of one sequence: its images on disk and its frame annotations."""
    frames = []
    for n in range(count):
        path = f"toy/{sequence}/images/frame{n:06d}.jpg"
        _png(root / path, np.zeros((6, 6, 3), np.uint8))
        frames.append({"sequence_name": sequence, "frame_number": n, "image": {"path": path},
                       "viewpoint": {"R": np.eye(3).tolist(), "T": [float(n), 1.0, 2.0]}})
    return frames


def test_co3d_frame_with_an_empty_image_path_is_its_own_reject(tmp_path: Path):
    """`"image": {"path": ""}` named no file: the frame was kept without an image and the whole
    category failed (AttributeError) when its sequence was listed."""
    root = tmp_path / "co3d"
    frames = _co3d_orbit(root) + [{**_co3d_orbit(root)[0], "frame_number": 3, "image": {"path": ""}}]
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    items = _items(Co3dSource("co3d", str(root), views=3))
    assert _rejects(items) == {"co3d-toy-frame-3": "bad_annotation"}
    assert [i.key for i in items if not isinstance(i, Reject)] == ["co3d-toy-s1"]


def test_co3d_frame_annotations_that_are_a_link_out_or_a_fifo_are_never_opened(tmp_path: Path, outside: Path):
    """The category folder was checked, its frame_annotations.jgz not: a link leading out of the
    root was read as the category's frames, and a fifo blocked the build for good."""
    root = tmp_path / "co3d"
    (outside / "frames.jgz").write_bytes(gzip.compress(json.dumps(_co3d_orbit(root)).encode()))
    jgz = root / "toy" / "frame_annotations.jgz"
    jgz.symlink_to(outside / "frames.jgz")
    with fsio.recording_inputs() as record:
        (reject,) = _items(Co3dSource("co3d", str(root), views=3))
    assert (reject.key, reject.reason) == ("co3d-toy", "outside_root") and not record.files
    jgz.unlink()
    os.mkfifo(jgz)
    (reject,) = _items(Co3dSource("co3d", str(root), views=3, follow_links=True))
    assert (reject.key, reject.reason) == ("co3d-toy", "not_a_file")


def test_co3d_cameras_all_at_one_point_are_a_bad_camera_not_an_orbit(tmp_path: Path):
    """Cameras that all stand at one point have no azimuth about anything: the sequence went out
    as an orbit of azimuths 0, 0, 0 in file order. Its frames' pairs are still made."""
    root = tmp_path / "co3d"
    frames = [{**frame, "viewpoint": {"R": np.eye(3).tolist(), "T": [0.5, 1.0, 2.0]}} for frame in _co3d_orbit(root)]
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    items = _items(Co3dSource("co3d", str(root), views=3))
    assert [(i.key, i.reason) for i in items] == [("co3d-toy-s1", "bad_camera")]
    assert "3 cameras stand on one line" in items[0].detail
    moved = [{**frame, "viewpoint": {"R": np.eye(3).tolist(), "T": [float(n), 1.0, 2.0]}}
             for n, frame in enumerate(frames)]  # apart, they make the sentence
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(moved).encode()))
    assert [type(i).__name__ for i in _items(Co3dSource("co3d", str(root), views=3))] == ["MultiViewRecord"]


def test_co3d_files_of_countless_tiny_items_are_refused_whole(tmp_path: Path, monkeypatch):
    """A 2 KB .jgz of `[0,0,...]` expands to a million frames, each a reject held in memory (8.6 s,
    362 MB; the expansion cap allows 256 million). Past the budgets the file is one reject; a set
    list keeps only the sequences that have frames (a million made-up names were each held)."""
    import sources.multiview as multiview

    monkeypatch.setattr(multiview, "MAX_BAD_FRAMES", 100, raising=False)
    monkeypatch.setattr(multiview, "MAX_CO3D_ITEMS", 1000, raising=False)
    root = tmp_path / "co3d"
    frames = _co3d_orbit(root)
    jgz = root / "toy" / "frame_annotations.jgz"
    bad = json.dumps(frames + [0] * 101).encode()  # each 0 is a frame that is not an object
    valid = json.dumps([{**frames[n % 3], "frame_number": n, "image": {"path": f"toy/s1/images/frame{n:06d}.jpg"}}
                        for n in range(1001)]).encode()  # too many (each its own picture: no duplicate_key)
    for text, limit in ((bad, "100 frames that fail"), (valid, "1000 items")):
        jgz.write_bytes(gzip.compress(text))
        (reject,) = _items(Co3dSource("co3d", str(root), views=3))
        assert (reject.reason, f"holds over {limit}" in reject.detail) == ("bad_annotation_file", True)
    jgz.write_bytes(gzip.compress(json.dumps(frames).encode()))
    lists = root / "toy" / "set_lists"
    lists.mkdir()
    made_up = [[f"x{n}", 0, "toy/x/images/a.jpg"] for n in range(500)]
    (lists / "set_lists_fewview_dev.json").write_text(json.dumps({"train": [], "val": made_up + [["s1", 0, "a"]]}))
    source = Co3dSource("co3d", str(root), views=3)
    held, rejects = source._held_out("toy", str(root / "toy"), frozenset({"s1"}))
    assert (held, rejects) == (frozenset({"s1"}), [])
    (lists / "set_lists_fewview_dev.json").write_text(json.dumps({"train": made_up * 3}))
    (reject,) = [r for r in _items(source) if isinstance(r, Reject)]
    assert (reject.reason, "set_lists_fewview_dev.json: holds over 1000 items" in reject.detail) == \
        ("bad_annotation_file", True)


def test_co3d_sequence_name_that_climbs_out_is_outside_root(tmp_path: Path, outside: Path):
    """A sequence_name is a folder name too: `../../outside` is refused before anything is
    listed (it used to list the folder outside and end as `too_few_views`)."""
    root = tmp_path / "co3d"
    for n in range(3):
        _png(outside / "images" / f"frame{n:06d}.jpg", np.zeros((6, 6, 3), np.uint8))
    frames = []
    for sequence in ("s1", "../../outside"):
        for n in range(3):
            path = f"toy/s1/images/frame{n:06d}.jpg"
            _png(root / path, np.zeros((6, 6, 3), np.uint8))
            frames.append({"sequence_name": sequence, "frame_number": n, "image": {"path": path},
                           "viewpoint": {"R": np.eye(3).tolist(), "T": [float(n), 1.0, 2.0]}})
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    with fsio.recording_inputs() as record:
        items = _items(Co3dSource("co3d", str(root), views=3))
    escaped = [r for r in items if isinstance(r, Reject)]
    assert [(r.reason, r.detail.startswith("sequence_name: ")) for r in escaped] == [("outside_root", True)]
    assert [i.key for i in items if not isinstance(i, Reject)] == ["co3d-toy-s1"]
    listed = [key[1] for key in record.listings]
    assert listed and not any(str(outside) in os.path.normpath(uri) for uri in listed)


def test_co3d_frame_number_listed_twice_rejects_the_later_frame(tmp_path: Path):
    root = tmp_path / "co3d"
    frames = []
    for n in range(4):
        path = f"toy/s1/images/frame{n:06d}.jpg"
        _png(root / path, np.full((6, 6, 3), 40 * n, np.uint8))
        mask = f"toy/s1/masks/frame{n:06d}.png"
        _png(root / mask, np.full((6, 6), 255, np.uint8))
        frames.append({"sequence_name": "s1", "frame_number": n, "image": {"path": path}, "mask": {"path": mask},
                       "viewpoint": {"R": np.eye(3).tolist(), "T": [float(n), 1.0, 2.0]}})
    frames[3]["frame_number"] = 1  # an exporter's slip: two frames called 1
    (root / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    items = _items(Co3dSource("co3d", str(root), views=3, pair_tasks=("segmentation",)))
    rejects = {r.key: r for r in items if isinstance(r, Reject)}
    assert {k: r.reason for k, r in rejects.items()} == {"co3d-toy-frame-3": "duplicate_key"}
    assert rejects["co3d-toy-frame-3"].detail == \
        "frame_annotations.jgz[3]: frame_number 1 of its sequence is already frame_annotations.jgz[1]"
    pairs = [i for i in items if isinstance(i, PairRecord)]
    assert [(p.key, p.image_uri.rsplit("/", 1)[1]) for p in pairs] == [
        (f"co3d-toy-s1-f{n:06d}-segmentation", f"frame{n:06d}.jpg") for n in range(3)]
    (views,) = [i for i in items if not isinstance(i, (Reject, PairRecord))]
    assert sorted(uri.rsplit("/", 1)[1] for uri in views.view_uris) == [f"frame{n:06d}.jpg" for n in range(3)]


def test_reject_details_never_quote_input_bytes(tmp_path: Path):
    with pytest.raises(DecodeError) as caught:
        load_image(CANARY, 32, "pad")
    assert caught.value.reason == "not_an_image" and not any(leak in caught.value.detail for leak in LEAKS)
    for data, fmt in ((CANARY, "npy"), (b"PF\n2 2\n" + CANARY, "pfm")):
        with pytest.raises(MapError) as map_error:
            decode_depth(data, fmt)  # type: ignore[arg-type]
        assert not any(leak in map_error.value.detail for leak in LEAKS)
    # library messages that quote bytes are scrubbed in every published reject row
    row = Reject("k", "s", "g", "render", "internal_error", "ValueError: could not convert: b'root:x:0:0'").as_row()
    assert row["detail"] == "ValueError: could not convert: <bytes>"
    assert clean_detail("expected b'\\x93NUMPY', got b'ro\\'ot:x'") == "expected <bytes>, got <bytes>"


@pytest.mark.slow
def test_build_on_a_hostile_corpus_reads_nothing_outside_and_drops_nothing(tmp_path: Path, outside: Path,
                                                                           tiny_tokenizer: Path):
    """A whole build over datasets that point out of their roots and hold broken annotations:
    it finishes, every planted fault is a reject with its reason, and the canary's bytes appear
    in no file of the output (shards, tokens, rejects, report)."""
    import yaml

    from uvd_pipeline.build import run_build
    from uvd_pipeline.summary import REJECTS_FILE
    from uvd_pipeline.config import load_config

    rng = np.random.default_rng(5)
    inet = tmp_path / "imagenet"
    for n in range(4):
        _png(inet / "train" / "n0" / f"n0_{n}.png", rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    (inet / "train" / "n0" / "n0_5.png").symlink_to(outside / "passwd")
    (inet / "train" / "n0" / "n0_6.png").write_bytes(CANARY)  # inside the root, but not an image
    (inet / "train" / "n9").symlink_to(outside / "classdir")
    (inet / "train" / "n0" / "n0_1.txt").write_text("a note next to an image of the same stem")
    coco = _coco_tree(tmp_path)
    images = [{"id": n, "file_name": f"{n}.jpg", "width": 60, "height": 40} for n in (1, 2, 3)]
    images += [{"id": 4, "file_name": "../../outside/passwd", "width": 8, "height": 8},
               {"id": 5, "file_name": str(outside / "private.png"), "width": 8, "height": 8}]
    annotations = [_box(1, 1), _box(2, 2, category_id="abc"), _box(3, 3), _box(4, 4), _box(5, 5)]
    name = _coco_json(coco, images, annotations)
    config = {
        "output": str(tmp_path / "out"), "image": {"size": 32}, "split": {"val_fraction": 0.0},
        "sources": [
            {"name": "inet", "type": "imagenet", "path": str(inet), "splits": ["train"], "sentence_length": 2,
             "num_shards": 1},
            {"name": "coco", "type": "coco", "path": str(coco), "annotation_files": [name], "images_dir": "images",
             "tasks": ["detection", "segmentation"], "pairs_per_sentence": 1, "num_shards": 1},
        ],
        "tokenizer": {"checkpoint": str(tiny_tokenizer), "batch_size": 8, "threads": 1, "compile": False},
        "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    summary = run_build(load_config(str(tmp_path / "c.yaml"))).summary
    reasons = {source: dict(s["rejects_by_reason"]) for source, s in summary["sources"].items()}
    assert reasons["inet"] == {"outside_root": 2, "not_an_image": 1, "unexpected_file": 1}
    assert reasons["coco"] == {"outside_root": 4, "bad_annotation": 2}
    assert summary["sources"]["inet"]["sentences"] == 2 and summary["sources"]["coco"]["sentences"] == 4
    rows = [json.loads(line) for line in (tmp_path / "out" / REJECTS_FILE).read_text().splitlines()]
    assert len(rows) == 10 and all(row["detail"] for row in rows)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(leak.encode() in data for leak in LEAKS), path


def test_imagenet_index_files_checked_up_front(tmp_path: Path):
    root = tmp_path / "imagenet"
    _png(root / "val" / "ILSVRC2012_val_00000001.png", np.zeros((8, 8, 3), np.uint8))
    (root / "LOC_val_solution.csv").write_bytes(b"ImageId,PredictionString\n" + CANARY + b"\xff\xfe\n")
    with pytest.raises(AnnotationFileError, match=r"LOC_val_solution\.csv: is not UTF-8 text") as caught:
        ImageNetSource("inet", str(root), ("val",)).units()
    assert not any(leak in str(caught.value) for leak in LEAKS)


def test_fifos_and_devices_are_rejects_never_opened(tmp_path: Path):
    """Opening a fifo blocks until a writer comes, and a device can stream forever: both are
    listed (never skipped silently) and rejected `not_a_file` without being opened."""
    root = tmp_path / "imagenet"
    _png(root / "train" / "n0" / "n0_1.png", np.zeros((8, 8, 3), np.uint8))
    os.mkfifo(root / "train" / "n0" / "n0_2.png")
    (root / "train" / "n0" / "n0_3.png").symlink_to("/dev/zero")
    items = _items(ImageNetSource("inet", str(root), ("train",)))
    assert _rejects(items) == {"inet-train-n0-n0_2": "not_a_file", "inet-train-n0-n0_3": "outside_root"}
    followed = _items(ImageNetSource("inet", str(root), ("train",), follow_links=True))
    assert _rejects(followed) == {"inet-train-n0-n0_2": "not_a_file", "inet-train-n0-n0_3": "not_a_file"}
    coco = _coco_tree(tmp_path)
    os.mkfifo(coco / "images" / "4.jpg")
    name = _coco_json(coco, [{"id": 4, "file_name": "4.jpg", "width": 8, "height": 8}], [_box(4, 4)])
    items = _items(CocoSource("coco", str(coco), (name,), "images", ("detection",)))
    assert _rejects(items) == {"coco-4-detection": "not_a_file"}


def test_mpii_joint_counts_named_in_the_reject(tmp_path: Path):
    """A person with 16 joints but 15 joints_vis is `bad_keypoints`, and the detail says which list
    is short (it said "expected 16 joints, got 16")."""
    root = tmp_path / "mpii"
    _png(root / "images" / "a.jpg", np.zeros((16, 16, 3), np.uint8))
    _png(root / "images" / "b.jpg", np.zeros((16, 16, 3), np.uint8))
    joints = [[float(i), float(i)] for i in range(16)]
    entries = [{"image": "a.jpg", "joints": joints, "joints_vis": [1] * 15},
               {"image": "b.jpg", "joints": joints[:14], "joints_vis": [1] * 14}]
    (root / "annotations").mkdir()
    (root / "annotations" / "mpii_train.json").write_text(json.dumps(entries))
    assert [(r.key, r.reason, r.detail) for r in _items(MpiiSource("mpii", str(root)))] == [
        ("mpii-a-pose", "bad_keypoints", "a.jpg: expected 16 joints and 16 joints_vis, got 16 and 15"),
        ("mpii-b-pose", "bad_keypoints", "b.jpg: expected 16 joints and 16 joints_vis, got 14 and 14")]


def _too_long_a_path(top: Path, file_name: str) -> None:
    """Folders nested past the operating system's longest path (4096 bytes on Linux), made one
    level at a time from the one above (`dir_fd`), with a file at the bottom: a layout a tool
    unpacked, which no full path can name (ENAMETOOLONG)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir("d" * 240, dir_fd=fd)
            fd, above = os.open("d" * 240, os.O_RDONLY, dir_fd=fd), fd
            os.close(above)
        os.close(os.open(file_name, os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)


_UNPRIVILEGED_READ = """
import json, sys
from sources.laion import LaionSource
from uvd_pipeline.config import ConfigError, load_config
from uvd_pipeline.unit_render import list_units
source = LaionSource("web", sys.argv[1], format="folder")
items = [item for unit in source.units() for item in source.read(unit)]
print(json.dumps({r.key: [r.reason, r.detail] for r in items if type(r).__name__ == "Reject"}))
import os
os.chmod(sys.argv[1], 0)
try:
    list_units(load_config(sys.argv[2]))
except ConfigError as exc:
    print(exc)
finally:
    os.chmod(sys.argv[1], 0o755)
"""


def test_too_many_open_files_listing_a_folder_is_the_machines_error_not_an_unreadable_folder(tmp_path: Path,
                                                                                            monkeypatch):
    """A sub-folder that could not be listed for want of a file descriptor (EMFILE: the listing
    opens it) was taken for one this user may not list: an `unreadable_folder` reject ("cannot
    list (Too many open files)") committed for good, its images left out. Listing it (the source's
    walk), or checking it before it is read (`paths.path_problem`, here with a real RLIMIT_NOFILE
    left no descriptor), is this machine's `MachineError`; with files to spare it is read."""
    import errno

    from budget_jobs import no_file_to_spare

    from sources.paths import path_problem
    from sources.records import ImageRecord, MachineError

    root = tmp_path / "web"
    for name in ("a.png", "open/d.png"):
        _png(root / name, np.zeros((8, 8, 3), np.uint8))
    with no_file_to_spare(), pytest.raises(MachineError, match=r"listing open: \[Errno 24\]"):
        path_problem(str(root), str(root / "open"))
    assert path_problem(str(root), str(root / "open")) is None
    real_scandir, full_once = os.scandir, []

    def scandir(path):  # the descriptor table full just as the walk reaches the sub-folder, a moment only
        if os.path.basename(path) == "open" and not full_once:
            full_once.append(path)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)
        return real_scandir(path)

    source = LaionSource("web", str(root), format="folder")
    with monkeypatch.context() as full:
        full.setattr(os, "scandir", scandir)
        with pytest.raises(MachineError, match=r"listing open: \[Errno 24\]"):
            [item for unit in source.units() for item in source.read(unit)]
    items = [item for unit in source.units() for item in source.read(unit)]
    assert sorted(i.uri.rsplit("/", 1)[1] for i in items if isinstance(i, ImageRecord)) == ["a.png", "d.png"], items


def test_folders_this_user_cannot_list_are_rejects_and_an_unreadable_root_names_the_field(tmp_path: Path):
    """fsspec's `find` skipped a sub-folder it could not list without a word (its images vanished
    from the build; so did one nested past the longest path the operating system takes) and an
    unreadable source root read as 'no images under ...'. Real modes, read
    by root without its power over them (CAP_DAC_*, dropped by setpriv) in a child process."""
    import shutil
    import subprocess
    import sys

    import yaml

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root's power over file modes")
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
              "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    root = tmp_path / "web"
    for name in ("a.png", "closed/b.png", "search_only/c.png", "open/d.png"):
        _png(root / name, np.zeros((8, 8, 3), np.uint8))
    _too_long_a_path(root / "deep", "e.png")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "web", "type": "laion", "path": str(root),
                                                   "format": "folder"}]}))
    (root / "closed").chmod(0)
    (root / "search_only").chmod(0o311)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", _UNPRIVILEGED_READ, str(root), str(config)],
                              capture_output=True, text=True, timeout=60)
    finally:
        (root / "closed").chmod(0o755)
        (root / "search_only").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    rejects, root_error = proc.stdout.splitlines()
    found = json.loads(rejects)
    assert sorted(reason for reason, _ in found.values()) == ["unreadable_file"] + ["unreadable_folder"] * 2, found
    details = sorted(detail for _, detail in found.values())
    assert details[0].startswith("'closed' is a folder this user cannot list (Permission denied): give read")
    assert details[1].startswith("'deep/ddd") and details[1].endswith("...' cannot be read (File name too long)")
    assert details[2].startswith("'search_only' is a folder this user cannot list"), details
    assert root_error == (f"sources[0].path (web): cannot read {root} (Permission denied); give this user read "
                          "access to it (chmod a+rX), or name another folder"), root_error


_UNPRIVILEGED_VIDEO = """
import json, sys
from sources.video import VideoSource
from uvd_pipeline.render_annotated import AnnotationError, _read
source = VideoSource("vid", sys.argv[1], strides=(1,), frames=2)
items = [item for unit in source.units() for item in source.read(unit)]
print(json.dumps([[type(i).__name__, getattr(i, "reason", ""), getattr(i, "detail", "")] for i in items]))
try:
    _read(sys.argv[2])
except AnnotationError as exc:
    print(json.dumps([exc.reason, exc.detail]))
"""


def test_a_video_or_label_map_this_user_may_not_read_is_an_unreadable_file(tmp_path: Path):
    """A mode-000 video (ffmpeg's, `chmod 000`) was the `unreadable` reject, the reason of a file
    no container demuxer opens (a text file named `.mp4`), and a mode-000 label map (an ADE20K
    annotation PNG) `missing_annotation`, though it was there: their details said PermissionError,
    their reasons sent the user looking elsewhere. Each is `unreadable_file`, as a picture's; read
    by root without its power over file modes."""
    import subprocess
    import sys

    import video_zoo
    from conftest import without_root_powers

    video_zoo.require_ffmpeg()
    folder = tmp_path / "vid"
    folder.mkdir()
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=5", "-frames:v", "3", "-pix_fmt", "yuv420p",
                     str(folder / "a.mp4"))
    (folder / "a.mp4").chmod(0)
    label_map = tmp_path / "ADE_train_00000001.png"
    _png(label_map, np.zeros((4, 4, 3), np.uint8))
    label_map.chmod(0)
    proc = subprocess.run([*without_root_powers(), sys.executable, "-c", _UNPRIVILEGED_VIDEO, str(folder),
                           str(label_map)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    video, annotation = proc.stdout.splitlines()
    assert json.loads(video) == [["Reject", "unreadable_file", "PermissionError: [Errno 13] Permission denied: "
                                  "'a.mp4': give this user read access to it (chmod a+r)"]]
    assert json.loads(annotation) == ["unreadable_file", "PermissionError: [Errno 13] Permission denied: "
                                                         "'ADE_train_00000001.png'"]


def _tar_of_extended_headers(path: Path, headers: list[tuple[bytes, bytes]], name: str, data: bytes) -> None:
    """A tar whose member `name` follows `headers` ((type, block) pairs: GNU long-name 'L', pax 'x'
    blocks), each written with `tarfile`'s own header function."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for kind, block in headers:
            header = tarfile.TarInfo("././@LongLink")
            header.type, header.size = kind, len(block)
            out.write(header.tobuf(tarfile.USTAR_FORMAT) + block + bytes(-len(block) % 512))
        member = tarfile.TarInfo(name[:99])
        member.size = len(data)
        out.write(member.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512) + bytes(10240))


def _pax_block(records: dict[str, str]) -> bytes:
    """pax records as POSIX writes them: "<length> <key>=<value>\\n", the length counting itself."""
    out = b""
    for key, value in records.items():
        record = f" {key}={value}\n".encode()
        length = len(record)
        while length != len(record) + len(str(length)):
            length = len(record) + len(str(length))
        out += str(length).encode() + record
    return out


_SPARSE_1_0 = [(tarfile.XHDTYPE, _pax_block({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                              "GNU.sparse.name": "x.jpg", "GNU.sparse.realsize": "10"}))]


@pytest.mark.parametrize("headers, data, expected", [
    # each long-name block read the next header within it: 1500 in a row ran out of Python's stack,
    # a RecursionError no reader caught, the build's crash (each block also held till the end)
    ([(tarfile.GNUTYPE_LONGNAME, b"n01440764_%04d.JPEG\0" % i) for i in range(1500)], None,
     "extended headers in a row"),
    # 2000 xattr records on one member: each member's dict of them held for the whole walk
    ([(tarfile.XHDTYPE, _pax_block({f"SCHILY.xattr.user.k{i}": "v" for i in range(2000)}))], None, "pax records"),
    # a GNU sparse 1.0 map (what `tar --format=posix -S` writes at the data's start) that is no
    # map: tarfile's ValueError, caught by no reader (a crash); a count it would read the archive for
    (_SPARSE_1_0, b"zz\n", "unreadable"),
    (_SPARSE_1_0, b"99\n1\n", "cut short"),
    (_SPARSE_1_0, b"1\n5\n", "cut short"),
    (_SPARSE_1_0, b"100000000\n" + b"1\n" * 2000, "fragments"),
    ([(tarfile.XHDTYPE, _pax_block({"GNU.sparse.map": ",".join(["0"] * 200_000), "GNU.sparse.realsize": "9"}))],
     None, "fragments"),
    # GNU sparse 0.0 (pax offset/numbytes records in turn, one dict key each): 70,000 fragments taken
    ([(tarfile.XHDTYPE, _pax_block({"GNU.sparse.size": "140000", "GNU.sparse.numblocks": "70000"}) + b"".join(
        _pax_block({"GNU.sparse.offset": str(2 * i)}) + _pax_block({"GNU.sparse.numbytes": "1"})
        for i in range(70_000)))], None, "70000 fragments"),
    ([(tarfile.XHDTYPE, b"2 2 2 2 2 2 2 2 2=\n")], None, "malformed"),  # a length not ending at a newline
    ([(tarfile.XHDTYPE, b"11 path=abc\n")], None, "malformed"),  # one that ends inside a whole `k=v` record
])
def test_extended_headers_no_tool_writes_are_one_corrupt_archive(tmp_path: Path, headers, data, expected):
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(jpeg, "JPEG")
    data = jpeg.getvalue() if data is None else data
    roots = {"web": tmp_path / "web", "imagenet": tmp_path / "inet"}
    _tar_of_extended_headers(roots["web"] / "00000.tar", headers, "000000000.jpg", data)
    _tar_of_extended_headers(roots["imagenet"] / "train" / "n01440764.tar", headers, "n01440764_1.JPEG", data)
    for source in (LaionSource("web", str(roots["web"]), "webdataset"),
                   ImageNetSource("inet", str(roots["imagenet"]), ("train",))):
        items = [i for u in source.units() for i in source.read(u)]
        assert [i.reason for i in items] == ["corrupt_archive"], (source.name, items)
        assert expected in items[0].detail, items[0].detail


def test_a_pax_record_of_digits_is_read_in_one_pass(tmp_path: Path):
    """CPython 3.11.7's tarfile searched each pax header's block for `\\d+ hdrcharset=`, quadratic in
    a run of digits (CVE-2024-6232, mended in CPython 3.11.10): one 64 KiB comment of digits took
    10 s to read, one of 4 MiB (under the cap on a header) hours: a build that hangs. Its records
    are read in one pass, the member after it read as usual."""
    import time

    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(jpeg, "JPEG")
    headers = [(tarfile.XHDTYPE, _pax_block({"comment": "1" * 65536, "path": "000000000.jpg"}))]
    _tar_of_extended_headers(tmp_path / "web" / "00000.tar", headers, "000000000.jpg", jpeg.getvalue())
    source = LaionSource("web", str(tmp_path / "web"), "webdataset")
    units = source.units()
    started = time.perf_counter()
    items = [i for u in units for i in source.read(u)]
    assert time.perf_counter() - started < 2.0  # 10 s before (30 ms a header of 4 KiB: the growth is quadratic)
    assert [type(i).__name__ for i in items] == ["ImageRecord"] and items[0].data == jpeg.getvalue()


def _old_gnu_sparse(name: str, extension_blocks: int) -> bytes:
    """GNU tar's old sparse member ('S', `tar --format=gnu -S`): its header (tarfile's, the
    `isextended` flag set) and `extension_blocks` blocks of 21 (offset, size) fragments each,
    each but the last flagged as followed by another; none when the archive is cut after the header."""
    info = tarfile.TarInfo(name)
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 0
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[482] = 1  # isextended: an extension block of fragments follows
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    fragment = b"%011o\0%011o\0" % (512, 512)
    blocks = [(fragment * 21).ljust(504, b"\0") + bytes([n + 1 < extension_blocks]).ljust(8, b"\0")
              for n in range(extension_blocks)]
    return bytes(header) + b"".join(blocks)


@pytest.mark.parametrize("blocks, expected", [(0, "cut short in its map"), (3200, "fragments")])
def test_an_old_gnu_sparse_member_cut_in_its_map_or_past_any_real_map_is_one_corrupt_archive(
        tmp_path: Path, blocks: int, expected: str):
    """A cut after the header was tarfile's IndexError, caught by no reader (a crash); a map of
    67,200 fragments (3,200 extension blocks) was read whole, as far as the archive went."""
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "00000.tar").write_bytes(_old_gnu_sparse("000000000.jpg", blocks))
    source = LaionSource("web", str(tmp_path / "web"), "webdataset")
    items = [i for u in source.units() for i in source.read(u)]
    assert [i.reason for i in items] == ["corrupt_archive"] and expected in items[0].detail, items


def _tar_declaring(path: Path, names: tuple[str, str, str], size: int) -> None:
    """Three members, the second's header declaring `size` bytes (GNU tar writes a size of 8 GiB or
    more in base-256, as `tarfile`'s GNU format does) with 300 bytes behind it: a corrupt or cut
    header, the file ending after the third member and tar's end blocks."""
    out = io.BytesIO()
    for name, data in zip(names, (b"\xff\xd8first", b"\xff\xd8x" * 100, b"\xff\xd8third")):
        info = tarfile.TarInfo(name)
        info.size = size if name == names[1] else len(data)
        out.write(info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE))
    out.write(bytes(2 * tarfile.BLOCKSIZE))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(out.getvalue(), mtime=0) if path.name.endswith(".gz") else out.getvalue())


@pytest.mark.parametrize("reader, tar_name", [("imagenet", "train/n01440764.tar"), ("web", "00000.tar"),
                                              ("web", "00000.tar.gz"), ("video", "00000.tar")])
@pytest.mark.parametrize("part_bytes", [None, 1024])
def test_a_member_declaring_more_than_the_file_holds_ends_the_tar_at_once(tmp_path: Path, monkeypatch, reader: str,
                                                                          tar_name: str, part_bytes: int | None):
    """A member header declaring 2**66 bytes in a 3 KiB tar: the streamed walk (a whole tar, a
    compressed one) skipped its data by reading nothing at the file's end once per 10 KiB, for
    ever, and the seekable one (a part of a big tar, a video2dataset shard) crashed on a ValueError
    seeking there. The tar now ends there as a cut one: the member before it built, the huge one
    `member_too_large` (judged on its header), the shard one `corrupt_archive`, within seconds."""
    import signal

    from sources import web_units
    from sources.video import VideoSource

    if part_bytes:
        monkeypatch.setattr(web_units, "TAR_PART_BYTES", part_bytes)
    names = {"imagenet": ("n01440764_1.JPEG", "n01440764_2.JPEG", "n01440764_3.JPEG"),
             "web": ("000000000.jpg", "000000001.jpg", "000000002.jpg"),
             "video": ("000000000.mp4", "000000001.mp4", "000000002.mp4")}[reader]
    _tar_declaring(tmp_path / reader / tar_name, names, 2 ** 66)
    source = {"imagenet": lambda root: ImageNetSource("inet", root, ("train",)),
              "web": lambda root: LaionSource("web", root, "webdataset"),
              "video": lambda root: VideoSource("v", root)}[reader](str(tmp_path / reader))

    class Hung(BaseException):  # no OSError (TimeoutError is one): no reader's except may take it for a cut tar
        pass

    def hung(signum, frame):
        raise Hung("the tar walk is still reading after 30 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        items = [i for u in source.units() for i in source.read(u)]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    rejects = {i.key.rsplit("-", 1)[-1]: i for i in items if isinstance(i, Reject)}
    if reader == "video":  # a video is never copied out: its sample is cut (the first one's bytes are no mp4)
        assert {k: r.reason for k, r in rejects.items()} == {
            "000000000": "unsupported_container", "000000001": "truncated_sample", "00000": "corrupt_archive"}
        return
    assert sorted(r.reason for r in rejects.values()) == ["corrupt_archive", "member_too_large"], items
    assert sum(not isinstance(i, Reject) for i in items) == 1, items
    too_large = next(r for r in rejects.values() if r.reason == "member_too_large")
    assert str(2 ** 66) in too_large.detail and names[1] in too_large.detail


def test_a_negative_member_size_is_refused_from_its_header(tmp_path: Path):
    """A pax `size` record of -5 (or a negative base-256 size field): `tarfile` took it, and the
    member was read as 0 bytes, an empty image record. No tar tool writes one: the archive's
    `corrupt_archive` names it, the member before it built."""
    train = tmp_path / "train"
    train.mkdir()
    with tarfile.open(train / "n01440764.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for index, pax in enumerate(({}, {"size": "-5"})):
            info = tarfile.TarInfo(f"n01440764_{index}.JPEG")
            info.size, info.pax_headers = 600, pax
            tar.addfile(info, io.BytesIO(b"\xff\xd8x" * 200))
    items = _items(ImageNetSource("inet", str(tmp_path), ("train",)))
    assert [i.key for i in items if not isinstance(i, Reject)] == ["inet-train-n01440764-n01440764_0"]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.reason == "corrupt_archive" and "declares -5 bytes" in reject.detail, reject


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_an_img2dataset_shard_that_is_a_fifo_or_device_is_rejected_as_such(sample_corpus: Path, tmp_path: Path,
                                                                            kind: str):
    """A webdataset shard beside its parquet and stats that is a fifo (or, links followed, a
    device): the folder is still img2dataset's layout, and the shard is one `not_a_file` reject
    saying what it is, never opened (a fifo blocks); not a plain folder whose `_stats.json` is an
    image without its file, with the parquet's samples gone unaccounted."""
    from conftest import MINI_LAION_SHARD

    root = tmp_path / "laion"
    root.mkdir()
    stem = f"{MINI_LAION_SHARD:05d}"
    for name in (f"{stem}.parquet", f"{stem}_stats.json"):
        (root / name).write_bytes((sample_corpus / "laion" / name).read_bytes())
    shard = root / f"{stem}.tar"
    if kind == "fifo":
        os.mkfifo(shard)
    else:
        shard.symlink_to("/dev/zero")
    items = _items(LaionSource("web", str(root), follow_links=True))
    reasons = [i.reason for i in items if isinstance(i, Reject)]
    assert reasons.count("not_a_file") == 1 and "missing_image" not in reasons, reasons
    assert not [i for i in items if not isinstance(i, Reject)]
    detail = next(i.detail for i in items if isinstance(i, Reject) and i.reason == "not_a_file")
    what = "a fifo (named pipe)" if kind == "fifo" else "a character device"
    assert detail == f"'{stem}.tar' is {what}, not a file (never opened)"
