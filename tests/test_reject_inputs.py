"""Every reject names where its input lies (`input`: the path under the source's root, a tar's
member, a parquet row, a video's clip, an annotation entry), not only its cleaned key: a user
with thousands of rejects finds the files to mend or delete from the rejects file alone. Inputs
are made the way the world makes them (`head -c`, ImageMagick, GNU tar, ffmpeg)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


from sources.records import MAX_INPUT_CHARS, Reject, folder_input, input_name, input_text
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.tagged import REJECTS
from uvd_pipeline.unit_render import UnitRenderer


def _rows(source, out: Path) -> list[dict[str, str]]:
    """The reject rows of every unit of `source`, as the build writes them."""
    settings = RenderSettings(32, "center_crop", 0, 1 << 24, 1, 0, 0.0)
    renderer = UnitRenderer(source, settings, web_images=True, fingerprint=False, output=str(out),
                            config_hash="h", root=str(source.path))
    rows = []
    for unit in source.units():
        outputs, _ = renderer.render(unit)
        rows += [item.as_row() for tag, item in outputs if tag == REJECTS]
    return rows


def _by_reason(rows: list[dict[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["reason"], []).append(row["input"])
    return {reason: sorted(inputs) for reason, inputs in found.items()}


def _magick(path: Path, spec: str = "gradient:red-blue", size: str = "40x30") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["convert", "-size", size, spec, str(path)], check=True)
    return path


def _cut(path: Path, keep: int) -> None:
    """`path` cut to its first `keep` bytes, as `head -c` cuts a copy short."""
    cut = subprocess.run(["head", "-c", str(keep), str(path)], check=True, capture_output=True).stdout
    path.write_bytes(cut)


def test_input_text_reads_back_to_the_name_and_is_bounded():
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    for name in ["a/<script>.png", latin1, "back\\slash\\x41.jpg", "d\u2028e.jpg"]:
        text = input_text(name)
        text.encode("utf-8")  # what every JSON writer takes
        assert input_name(text) == name
    assert input_text(latin1) == "caf\\xe9.jpg"
    assert os.fsencode(input_name(input_text(latin1))) == b"caf\xe9.jpg"
    long = "d/" * 2000 + "last.jpg"
    assert len(input_text(long)) == MAX_INPUT_CHARS - 1 and input_text(long).endswith("/last.jpg")
    assert Reject("k", "s", "g", "read", "r", input="a\\b").as_row()["input"] == "a\\\\b"


def test_image_folder_rejects_name_the_files(tmp_path: Path):
    root = tmp_path / "web"
    jpeg = _magick(root / "sub" / "<script>.jpg")
    _cut(jpeg, 200)  # a copy cut short
    (root / "notes" / "x.png").parent.mkdir()
    (root / "notes" / "x.png").write_text("<html>not an image</html>")
    (root / os.fsdecode(b"caf\xe9.png")).write_bytes(b"")
    _magick(root / "ok.png")
    from sources.laion import LaionSource

    rows = _rows(LaionSource("web", str(root)), tmp_path / "out")
    assert _by_reason(rows) == {"truncated": ["sub/<script>.jpg"], "not_an_image": ["notes/x.png"],
                                "empty_file": ["caf\\xe9.png"]}
    line = json.dumps(rows[0], ensure_ascii=False)
    assert str(tmp_path) not in line  # named under the root, never the machine's folders


def _gnu_tar(tar: Path, folder: Path, *names: str) -> None:
    subprocess.run(["tar", "--format=gnu", "-cf", str(tar), "-C", str(folder), *names], check=True)


def test_img2dataset_tar_and_listing_rejects_name_the_member_and_the_row(tmp_path: Path):
    """GNU tar's shard: a `.npy` nobody writes, a JPEG cut by `head -c` before it was tarred; its
    listing parquet's failed row names its URL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource

    files, root = tmp_path / "files", tmp_path / "shards"
    root.mkdir()
    _magick(files / "000000000.jpg")
    _cut(_magick(files / "000000001.jpg", size="64x48"), 300)
    (files / "000000000.npy").write_bytes(b"\x93NUMPY")
    _gnu_tar(root / "00000.tar", files, "000000000.jpg", "000000000.npy", "000000001.jpg")
    pq.write_table(pa.table({"key": ["000000000", "000000001", "000000002"],
                             "url": ["http://a/0.jpg", "http://a/1.jpg", "http://a/2.jpg"],
                             "status": ["success", "success", "failed_to_download"],
                             "error_message": [None, None, "404"]}), root / "00000.parquet")
    rows = _rows(LaionSource("web", str(root)), tmp_path / "out")
    assert _by_reason(rows) == {"unexpected_file": ["00000.tar:000000000.npy"],
                                "truncated": ["00000.tar:000000001.jpg"],
                                "failed_to_download": ["00000.parquet key 000000002: http://a/2.jpg"]}


def test_a_cut_tar_names_the_sample_it_ends_in_and_the_tar(tmp_path: Path):
    from sources.laion import LaionSource

    files, root = tmp_path / "files", tmp_path / "shards"
    root.mkdir()
    _magick(files / "a.jpg", size="8x8")
    _magick(files / "b.png", "plasma:", size="300x300")
    _gnu_tar(root / "00000.tar", files, "a.jpg", "b.png")
    _cut(root / "00000.tar", 3 * 512 + 1024)  # inside b.png's data
    found = _by_reason(_rows(LaionSource("web", str(root)), tmp_path / "out"))
    assert found == {"truncated_sample": ["00000.tar:b"], "corrupt_archive": ["00000.tar"]}


def test_hugging_face_parquet_rows_are_named_by_file_and_row(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    png = _magick(tmp_path / "x.png").read_bytes()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"bytes": png, "path": None}, {"bytes": None, "path": None}, {"bytes": png[:60], "path": None}]
    pq.write_table(pa.table({"image": pa.array(rows, image), "text": ["a", "b", "c"]}),
                   root / "data" / "train-00000-of-00001.parquet")
    found = _by_reason(_rows(LaionSource("hf", str(root), "huggingface"), tmp_path / "out"))
    assert found == {"missing_image": ["data/train-00000-of-00001.parquet row 1"],
                     "truncated": ["data/train-00000-of-00001.parquet row 2"]}


def _ffmpeg(path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10",
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_video_rejects_name_the_file(tmp_path: Path):
    from sources.video import VideoSource

    root = tmp_path / "videos"
    _ffmpeg(root / "short" / "ten.mp4", 10)
    (root / "notes.mp4").write_text("not a video")
    found = _by_reason(_rows(VideoSource("clips", str(root), strides=(1,), frames=16), tmp_path / "out"))
    assert found == {"too_few_frames": ["short/ten.mp4"], "unreadable": ["notes.mp4"]}


def test_video_clip_rejects_name_the_file_and_the_clip_span():
    from sources.records import VideoClipRecord, VideoRecord, record_input

    clip = VideoClipRecord("k-s1-0", "v", "k", "/d/v/a.mp4", (0, 1), 1, 1, 0, "pyav", frame_times=(0.5, 2.25))
    assert record_input(clip, "/d/v") == "a.mp4 at 0.500-2.250s"
    assert record_input(VideoRecord("k", "v", "k", "/d/v/a.mp4", (clip,), "pyav", 2), "/d/v/a.mp4") == "a.mp4"


def test_coco_rejects_name_the_annotation_entry(tmp_path: Path):
    from sources.coco import CocoSource

    _magick(tmp_path / "img" / "a.jpg")
    _magick(tmp_path / "img" / "b.jpg")
    _cut(tmp_path / "img" / "b.jpg", 200)
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
                        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 1, -5, 5], "area": 25, "iscrowd": 0},
                        {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    source = CocoSource("coco", str(tmp_path), ("ann.json",), "img", ("detection",))
    found = _by_reason(_rows(source, tmp_path / "out"))
    assert found["bad_annotation"] == ["ann.json annotations[1] (id 11) (image id 1)"]
    assert found["truncated"] == ["img/b.jpg"]


def test_imagenet_class_archive_members_are_named_in_their_archive(tmp_path: Path):
    from sources.imagenet import ImageNetSource

    files = tmp_path / "files"
    _magick(files / "n01440764_1.JPEG")
    (files / "readme.txt").write_text("hello")
    (tmp_path / "in" / "train").mkdir(parents=True)
    _gnu_tar(tmp_path / "in" / "train" / "n01440764.tar", files, "n01440764_1.JPEG", "readme.txt")
    found = _by_reason(_rows(ImageNetSource("inet", str(tmp_path / "in"), ("train",)), tmp_path / "out"))
    assert found == {"unexpected_file": ["train/n01440764.tar:readme.txt"]}


def test_mpii_and_segmentation_rejects_name_the_entry_and_the_file(tmp_path: Path):
    from sources.mpii import MpiiSource
    from sources.segmentation import SegmentationSource

    root = tmp_path / "mpii"
    _magick(root / "images" / "a.jpg")
    entry = {"image": "a.jpg", "joints": [[1, 1]] * 15, "joints_vis": [1] * 15, "center": [5, 5], "scale": 1}
    (root / "annotations").mkdir()
    (root / "annotations" / "mpii_train.json").write_text(json.dumps([entry, {"joints": []}]))
    found = _by_reason(_rows(MpiiSource("mpii", str(root)), tmp_path / "out1"))
    assert found["bad_annotation"] == ["annotations/mpii_train.json[1]"]
    assert found["bad_keypoints"] == ["annotations/mpii_train.json[0]: a.jpg"]

    ade = tmp_path / "ade" / "ADEChallengeData2016"
    _magick(ade / "images" / "training" / "x.jpg")
    _magick(ade / "annotations" / "training" / "x.png", "xc:black")
    _magick(ade / "annotations" / "training" / "gone.png", "xc:black")
    found = _by_reason(_rows(SegmentationSource("ade", str(tmp_path / "ade")), tmp_path / "out2"))
    assert found["missing_image"] == ["ADEChallengeData2016/annotations/training/gone.png"]


def test_multiview_object_rejects_name_the_folder_and_the_file(tmp_path: Path):
    import numpy as np

    from sources.multiview import ObjaverseSource

    for uid, views in (("uid0", 4), ("uid1", 3)):
        for i in range(views):
            angle = i * np.pi / 2
            rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
            _magick(tmp_path / "objs" / uid / f"{i:03d}.png")
            np.save(tmp_path / "objs" / uid / f"{i:03d}.npy", np.hstack([rotation, [[0], [0], [2.0]]]))
    _magick(tmp_path / "objs" / "uid1" / "003.png")
    found = _by_reason(_rows(ObjaverseSource("obj", str(tmp_path / "objs"), views=4), tmp_path / "out"))
    assert found == {"missing_camera": ["uid1/003.png"], "too_few_views": ["uid1/"]}


def test_every_reject_of_a_whole_build_names_its_input(mini_build):
    """The mini corpus's build (image folders, img2dataset shards, ImageNet, videos): each reject
    line of `rejects.jsonl` has an `input`, and each of the sources' (read, decode, plan) names one,
    as do the grouping's rejects of one unit (`remainder_dropped`, `group_too_small`: they were
    empty, though the unit carried its input)."""
    config, _ = mini_build
    rows = [json.loads(line) for line in Path(config.output, "rejects.jsonl").read_text().splitlines()]
    assert rows and all("input" in row for row in rows)
    unit_of_its_own = ("group_too_small", "remainder_dropped")  # the grouping's rejects of one unit each
    unnamed = [row for row in rows if not row["input"]
               and (row["stage"] in ("read", "download", "decode", "plan") or row["reason"] in unit_of_its_own)]
    assert unnamed == []
    grouped = [row for row in rows if row["reason"] in unit_of_its_own]
    assert grouped and {row["stage"] for row in grouped} == {"assemble"}
    imagenet = [row["input"] for row in grouped if row["source"] == "inet"]
    assert imagenet and all(name.endswith(".JPEG") and name.split("/")[0] in ("train", "val") for name in imagenet)
    assert str(config.output) not in json.dumps(rows) and "/tmp/" not in json.dumps([r["input"] for r in rows])
    too_short = [row["input"] for row in rows if row["reason"] == "too_few_frames"]
    assert too_short and all(name.endswith(".mp4") or name.endswith(".webm") for name in too_short)


def test_grouping_rejects_name_their_units_input_whatever_the_arrival_order():
    """A class of 3 images cut into sentences of 2 drops one (`remainder_dropped`), a class of 1
    is `group_too_small`: each reject names its unit's file. Two units clashing on one key give it
    the least of their inputs, in any order the runner delivers them."""
    from apache_beam.pvalue import TaggedOutput

    from uvd_pipeline.group_steps import _carried, _plan

    def rejects(group, pairs):
        carried = [(key, _carried(where)) for key, where in pairs]  # as the grouping carries them
        out = _plan((("category", group, "train"), carried), "inet", {"category": 2}, "drop", 0)
        return sorted((o.value.reason, o.value.key, o.value.as_row()["input"])
                      for o in out if isinstance(o, TaggedOutput))

    pairs = [("k0", "train/n01/a.JPEG"), ("k1", "train/n01/b.JPEG"), ("k2", "train/n01/c.JPEG")]
    dropped = rejects("n01", pairs)
    assert len(dropped) == 1 and dropped[0][0] == "remainder_dropped"
    assert dropped[0][2] == dict(pairs)[dropped[0][1]]
    latin1 = "train/n02/" + os.fsdecode(b"caf\xe9.JPEG")
    assert rejects("n02", [("k9", latin1)]) == [("group_too_small", "k9", "train/n02/caf\\xe9.JPEG")]
    clash = [("k9", "train/n02/b.JPEG"), ("k9", "train/n02/a.JPEG")]
    assert rejects("n02", clash) == rejects("n02", clash[::-1]) == [("group_too_small", "k9", "train/n02/a.JPEG")]


def test_an_images_folder_given_as_an_absolute_path_is_named_by_its_own_name(tmp_path: Path):
    """COCO's and MPII's `images_dir` may be an absolute path outside the source's root: their
    rejects named the machine's folders (`/tmp/.../elsewhere/val2017/b.jpg`); they name the folder
    and the file below it (`val2017/b.jpg`), as a user who downloaded `val2017` knows it."""
    from sources.coco import CocoSource
    from sources.mpii import MpiiSource

    images = tmp_path / "elsewhere" / "val2017"
    _magick(images / "b.jpg")
    _cut(images / "b.jpg", 200)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "ann.json").write_text(json.dumps({
        "images": [{"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    source = CocoSource("coco", str(tmp_path / "root"), ("ann.json",), str(images), ("detection",))
    assert _by_reason(_rows(source, tmp_path / "out1")) == {"truncated": ["val2017/b.jpg"]}

    far = tmp_path / "far" / "mpii_images"
    _magick(far / "a.jpg")
    _cut(far / "a.jpg", 200)
    entry = {"image": "a.jpg", "joints": [[5, 5]] * 16, "joints_vis": [1] * 16, "center": [5, 5], "scale": 1}
    (tmp_path / "mpii" / "annotations").mkdir(parents=True)
    (tmp_path / "mpii" / "annotations" / "mpii_train.json").write_text(json.dumps([entry]))
    source = MpiiSource("mpii", str(tmp_path / "mpii"), images_dir=str(far))
    assert _by_reason(_rows(source, tmp_path / "out2")) == {"truncated": ["mpii_images/a.jpg"]}
    assert folder_input(str(tmp_path / "root" / "img" / "x.jpg"), str(tmp_path / "root"), str(images)) == "img/x.jpg"


def test_a_listed_success_missing_from_its_shard_names_the_member_the_file_or_the_tar(tmp_path: Path):
    """img2dataset's parquet lists key 000000001 a success that its shard lacks (a GNU tar, a
    `files` folder), or its stats count two successes of a tar holding one: the reject names where
    the sample should be (`00000.tar:000000001`, `00000/000000001`), or the tar when no listing
    names the key."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource

    files = tmp_path / "made"
    _magick(files / "000000000.jpg")
    (files / "000000000.txt").write_text("a")
    listing = pa.table({"key": ["000000000", "000000001"], "url": ["http://a/0", "http://a/1"],
                        "status": ["success", "success"], "error_message": [None, None]})
    found = {}
    for layout in ("tar", "files", "stats-only"):
        root = tmp_path / layout
        root.mkdir()
        if layout == "files":
            shutil.copytree(files, root / "00000")
        else:
            _gnu_tar(root / "00000.tar", files, "000000000.jpg", "000000000.txt")
        if layout == "stats-only":
            (root / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 2}))
        else:
            pq.write_table(listing, root / "00000.parquet")
        found[layout] = _by_reason(_rows(LaionSource("web", str(root)), tmp_path / f"out-{layout}"))
    assert found == {"tar": {"missing_from_archive": ["00000.tar:000000001"]},
                     "files": {"missing_from_archive": ["00000/000000001"]},
                     "stats-only": {"missing_from_archive": ["00000.tar"]}}


def test_decode_rejects_of_a_files_download_name_the_file_its_hash_was_checked_in(tmp_path: Path):
    """img2dataset's `output_format=files` with `--disable_all_reencoding True` (what the README
    recommends): its listing records each download's sha256 (width null), so the build reads each
    image to check it; a JPEG the site served cut short and a 0-byte body then fail to decode. Their
    rejects name the file (`00000/000000001.jpg`), as the same shard's tar names its member: they
    said `""`, the bytes in hand without where they came from."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource

    shard = tmp_path / "files" / "00000"
    _magick(shard / "000000000.jpg")
    _cut(_magick(shard / "000000001.jpg", size="64x48"), 300)
    (shard / "000000002.jpg").write_bytes(b"")
    keys = ["000000000", "000000001", "000000002"]
    for key in keys:
        (shard / f"{key}.txt").write_text(f"caption {key}")
    digests = [hashlib.sha256((shard / f"{key}.jpg").read_bytes()).hexdigest() for key in keys]
    pq.write_table(pa.table({"key": keys, "url": [f"http://a/{k}.jpg" for k in keys], "status": ["success"] * 3,
                             "error_message": pa.array([None] * 3, pa.string()),
                             "width": pa.array([None] * 3, pa.int64()), "sha256": digests}),
                   tmp_path / "files" / "00000.parquet")
    (tmp_path / "files" / "00000_stats.json").write_text(json.dumps({"count": 3, "successes": 3,
                                                                    "failed_to_resize": 0}))
    source = LaionSource("web", str(tmp_path / "files"))
    assert source.resolved_format() == "files"
    assert _by_reason(_rows(source, tmp_path / "out")) == {"truncated": ["00000/000000001.jpg"],
                                                           "empty_file": ["00000/000000002.jpg"]}


def test_images_inside_a_parquet_are_named_by_file_row_and_url(tmp_path: Path):
    """img2dataset's `output_format: parquet` holds each image in its row: a cut JPEG, an HTML
    page, a failed download are each named `00000.parquet row N: URL`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sources.laion import LaionSource

    ok = _magick(tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "root").mkdir()
    pq.write_table(pa.table({"key": ["000000000", "000000001", "000000002", "000000003"],
                             "jpg": [ok, ok[:200], None, b"<html>"], "txt": ["a", "b", "c", "d"],
                             "url": ["http://a/0.jpg", "http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg"],
                             "status": ["success", "success", "failed_to_download", "success"],
                             "error_message": [None, None, "404", None]}), tmp_path / "root" / "00000.parquet")
    (tmp_path / "root" / "00000_stats.json").write_text(json.dumps({"count": 4, "successes": 3}))
    found = _by_reason(_rows(LaionSource("web", str(tmp_path / "root")), tmp_path / "out"))
    assert found == {"truncated": ["00000.parquet row 1: http://a/1.jpg"],
                     "failed_to_download": ["00000.parquet row 2: http://a/2.jpg"],
                     "not_an_image": ["00000.parquet row 3: http://a/3.jpg"]}
