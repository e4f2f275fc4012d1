"""The build end to end on the multi-view and annotated families of the sample corpus."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from uvd_pipeline.render import decode_png
from uvd_pipeline.rendered_shards import iter_shard


@pytest.fixture(scope="module")
def annotated_build(sample_corpus: Path, tmp_path_factory):
    """The rendered sentences of every annotated family: the tokenize stage is left out, it reads
    the rendered shards whatever their kind (tests/test_token_shards.py) and was 60% of this
    build's CPU (47 CPU-s with it, 20 without), for nothing these tests look at."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    work = tmp_path_factory.mktemp("annotated")
    c = str(sample_corpus)
    config = {
        "output": str(work / "out"),
        "image": {"size": 64},
        "split": {"val_fraction": 0.0},
        "sources": [
            {"name": "objaverse", "type": "objaverse", "path": f"{c}/objaverse", "num_shards": 1},
            {"name": "co3d", "type": "co3d", "path": f"{c}/co3d", "pair_tasks": ["depth", "segmentation"],
             "num_shards": 1},
            {"name": "coco", "type": "coco", "path": f"{c}/coco", "split": "val", "num_shards": 1},
            {"name": "mpii", "type": "mpii", "path": f"{c}/mpii", "num_shards": 1, "remainder": "wrap"},
            {"name": "ade", "type": "segmentation", "path": f"{c}/ade20k", "num_shards": 1},
            {"name": "kitti", "type": "stereo", "path": f"{c}/kitti", "labeler": {"name": "sgbm"}, "num_shards": 1,
             "remainder": "wrap"},
            {"name": "tk", "type": "multitask", "path": f"{c}/taskonomy", "num_shards": 1},
            {"name": "vip", "type": "annotated_video", "path": f"{c}/vipseg", "layout": "vipseg", "num_shards": 1},
            {"name": "jh", "type": "annotated_video", "path": f"{c}/jhmdb", "layout": "jhmdb",
             "sentence_layout": "separated", "stride": 2, "num_shards": 1},
            {"name": "edges", "type": "pseudo_labeled", "path": f"{c}/imagenet/val", "task": "edges",
             "labeler": {"name": "canny"}, "num_shards": 1},
        ],
        "tokenizer": {"enabled": False},
        "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"},
    }
    path = work / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(str(path))
    summary = run_build(loaded).summary
    sentences = [s for tar in sorted((work / "out" / "rendered").rglob("*.tar")) for s in iter_shard(str(tar))]
    return summary, sentences


def test_every_kind_and_task_is_built(annotated_build):
    summary, sentences = annotated_build
    groups = Counter(f"{s.header['kind']}/{s.header['task']}" for s in sentences)
    for expected in ("multiview/none", "pairs/detection", "pairs/segmentation", "pairs/pose", "pairs/depth",
                     "pairs/stereo", "pairs/edges", "multitask/multitask", "annotated_video/segmentation",
                     "annotated_video/pose"):
        assert groups[expected] > 0, expected
    for s in sentences:
        assert len(s.images) == s.header["n_images"]
        assert decode_png(s.images[0]).shape == (64, 64, 3)


def test_reject_reasons_of_the_planted_faults(annotated_build):
    summary, _ = annotated_build
    reasons = {source: s["rejects_by_reason"] for source, s in summary["sources"].items()}
    assert reasons["objaverse"].get("too_few_views") == 2
    assert reasons["objaverse"].get("missing_camera") == 1  # the 009.png without its .npy
    assert reasons["co3d"].get("missing_frames") == 1
    assert reasons["coco"].get("missing_image") == 3  # one missing image, three tasks
    assert reasons["ade"].get("missing_annotation") == 1
    assert reasons["tk"].get("incomplete_tuple") == 1
    assert reasons["vip"].get("missing_annotation") == 1
    assert reasons["jh"].get("too_few_frames") == 1


def test_multiview_views_in_azimuth_order(annotated_build):
    _, sentences = annotated_build
    views = [s for s in sentences if s.header["kind"] == "multiview"]
    assert len(views) >= 6
    for s in views:
        azimuths = [m["azimuth_deg"] for m in s.header["members"]]
        assert len(azimuths) == 24 and azimuths == sorted(azimuths)
        if s.header["source"] == "objaverse":
            steps = np.diff(azimuths)
            assert np.allclose(steps, 15.0, atol=0.01)  # the renders' 15-degree steps


def test_pairs_alternate_input_and_target_of_one_task(annotated_build):
    _, sentences = annotated_build
    by_image_split = defaultdict(set)
    for s in sentences:
        if s.header["kind"] != "pairs":
            continue
        members = s.header["members"]
        assert len(members) == 16 and [m["role"] for m in members] == ["input", "target"] * 8
        assert {m["task"] for m in members} == {s.header["task"]}
        for m in members[::2]:
            by_image_split[(s.header["source"], m["key"].rsplit("-", 1)[0])].add(s.header["split"])
    assert all(len(splits) == 1 for splits in by_image_split.values())  # an image's tasks share a split
    assert {split for splits in by_image_split.values() for split in splits} == {"train", "val"}


def test_multitask_order_is_shuffled_per_sentence_and_shared_by_tuples(annotated_build):
    _, sentences = annotated_build
    tuples = [s for s in sentences if s.header["kind"] == "multitask"]
    assert tuples and all(len(s.images) == 15 for s in tuples)
    orders = set()
    for s in tuples:
        order = s.header["meta"]["task_order"]
        assert order[0] == "image" and [m["task"] for m in s.header["members"]] == order * 3
        orders.add(tuple(order))
    assert len(orders) > 1


def test_annotated_video_layouts(annotated_build):
    _, sentences = annotated_build
    vip = [s for s in sentences if s.header["source"] == "vip"]
    jh = [s for s in sentences if s.header["source"] == "jh"]
    assert vip and jh
    for s in vip:
        assert [m["role"] for m in s.header["members"]] == ["frame", "annotation"] * 8
        frames = [m["frame"] for m in s.header["members"][::2]]
        assert frames == list(range(frames[0], frames[0] + 8))
    for s in jh:
        assert [m["role"] for m in s.header["members"]] == ["frame"] * 8 + ["annotation"] * 8
        frames = [m["frame"] for m in s.header["members"][:8]]
        assert np.all(np.diff(frames) == 2)
        skeleton = decode_png(s.images[8])
        assert skeleton.max() > 0 and (skeleton == 0).all(axis=2).mean() > 0.5  # drawn on black


def test_labelers_fill_missing_ground_truth(annotated_build):
    summary, sentences = annotated_build
    kitti_depth = [m for s in sentences if s.header["source"] == "kitti" and s.header["task"] == "depth"
                   for m in s.header["members"] if m.get("pseudo_label")]
    assert kitti_depth and {m["pseudo_label"] for m in kitti_depth} == {"sgbm"}
    assert summary["sources"]["edges"]["by_kind_task"] == {"pairs/edges": summary["sources"]["edges"]["sentences"]}


def test_input_sizes_of_every_kind(annotated_build):
    """The original size of every input picture is recorded (views, tuple images, clip frames, pair
    inputs; never annotation targets) and lands in the stats' input histograms."""
    from uvd_pipeline.quality import ASPECT_EDGES, SIDE_EDGES, bin_index

    summary, sentences = annotated_build
    images_per_input = {"multiview": 1, "pairs": 2, "multitask": 5, "annotated_video": 2}
    expected: Counter[str] = Counter()
    for s in sentences:
        inputs = s.header["n_images"] // images_per_input[s.header["kind"]]
        assert len([m for m in s.header["members"] if m.get("width") and m.get("height")]) == inputs
        expected[s.header["source"]] += inputs
    histograms = {name: source["inputs"] for name, source in summary["sources"].items()}
    assert {name: h["count"] for name, h in histograms.items()} == dict(expected)
    # the corpus renders objects and Taskonomy images at 256 x 256, JHMDB and VIPSeg frames at 320 x 240
    for name, (width, height) in {"objaverse": (256, 256), "tk": (256, 256), "jh": (320, 240),
                                  "vip": (320, 240)}.items():
        h = histograms[name]
        assert h["short_side"][bin_index(min(width, height), SIDE_EDGES)] == h["count"] > 0, name
        assert h["aspect"][bin_index(width / height, ASPECT_EDGES)] == h["count"], name
        assert h["pixels"] == h["count"] * width * height, name


def test_hostile_coco_values_end_as_counted_rejects(tmp_path: Path):
    """One COCO file holding every value that used to crash or corrupt a build (a declared height
    of "abc" or 0.5, a polygon to 1e9, RLE short of its image, category 2**40 and 65536, an image id
    used twice): the build finishes, each is a counted reject, and the report's input sizes are
    the decoded 64 x 48 of every image whatever its entry declares."""
    import json

    from PIL import Image

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.quality import SIDE_EDGES, bin_index

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for n in range(1, 13):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / f"{n}.jpg")
        images.append({"id": n, "file_name": f"{n}.jpg", "width": 64, "height": 48})
        annotations.append({"id": n, "image_id": n, "category_id": 1, "iscrowd": 0, "area": 400.0,
                            "bbox": [5.0, 5.0, 20.0, 20.0], "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]})
    images[1]["height"], images[2]["height"], images[3]["height"] = "abc", 0.5, 9999
    annotations[4]["segmentation"] = [[0, 0, 1e9, 0, 1e9, 1e9]]
    annotations[5].update(iscrowd=1, segmentation={"size": [48, 64], "counts": [5, 10]})
    annotations[6]["category_id"], annotations[7]["category_id"] = 2**40, 65536
    images.append({"id": 9, "file_name": "1.jpg", "width": 64, "height": 48})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                               "categories": [{"id": 1, "name": "thing"}]}))
    config = {"output": str(tmp_path / "out"), "image": {"size": 32}, "split": {"val_fraction": 0.0},
              "sources": [{"name": "coco", "type": "coco", "path": str(root), "annotation_files": ["ann.json"],
                           "images_dir": "images", "tasks": ["detection", "segmentation"],
                           "pairs_per_sentence": 1, "num_shards": 1}],
              "tokenizer": {"enabled": False}, "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    summary = run_build(load_config(str(tmp_path / "c.yaml"))).summary["sources"]["coco"]
    assert dict(summary["rejects_by_reason"]) == {
        # both tasks of images 2 and 3 (height "abc", 0.5), 7, 8, 9 and 1 (9's second entry names 1.jpg)
        "bad_annotation": 2 + 2 + 2 + 2 + 2 + 2,
        "annotation_size_mismatch": 2,  # both tasks of image 4 (declared 9999 high)
        "bad_segmentation": 2,  # images 5 and 6
        "no_detection_annotations": 1}  # image 6: its only object is a crowd
    assert summary["sentences"] == 12 * 2 - 17
    inputs = summary["inputs"]  # one per rendered pair, each the decoded 64x48 whatever its JSON said
    assert inputs["count"] == 7 and inputs["pixels"] == 7 * 64 * 48
    assert inputs["long_side"][bin_index(64, SIDE_EDGES)] == 7 and inputs["short_side"][bin_index(48, SIDE_EDGES)] == 7
