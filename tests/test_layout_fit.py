"""`check` refuses a source whose `type` does not fit what its path holds, naming the type that does.

Every reader takes what it finds, so a wrong type passed `check`: a `type: video` on an img2dataset
download read its `00000.tar` as video2dataset shards, `type: laion` on a COCO tree or a folder of
videos built its images or rejected every file, `type: objaverse` on CO3D took each category for an
object. Inputs are made as the world makes them (ImageMagick, ffmpeg, GNU tar, numpy, gzip); the
glance that judges them reads a bounded number of names (`sources.layout_fit`)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from webdataset import ShardWriter

from sources import layout_fit
from uvd_pipeline.cli import main


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["convert", "-size", "16x16", "plasma:red-blue", str(path)], check=True)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    photos = root / "photos"
    _jpeg(photos / "a.jpg")
    _jpeg(photos / "b.jpg")

    videos = root / "videos"
    videos.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-frames:v", "3",
                    "-pix_fmt", "yuv420p", str(videos / "clip.mp4")], check=True)

    mixed = root / "mixed"  # a phone's camera folder: photos beside clips
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (mixed / "clip.mp4").write_bytes((videos / "clip.mp4").read_bytes())

    web = root / "web"  # one img2dataset webdataset shard: key.jpg/.txt/.json, its stats beside it
    members = web / "members"
    members.mkdir(parents=True)
    (members / "000000000.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (members / "000000000.txt").write_text("a caption")
    (members / "000000000.json").write_text(json.dumps({"key": "000000000", "status": "success"}))
    subprocess.run(["tar", "-cf", str(web / "00000.tar"), "-C", str(members), "000000000.jpg", "000000000.txt",
                    "000000000.json"], check=True)
    (web / "00000_stats.json").write_text(json.dumps({"count": 1, "successes": 1}))
    subprocess.run(["rm", "-r", str(members)], check=True)

    failed = root / "failed_first"  # video2dataset: a failed download's sample is its .txt and .json alone
    members = failed / "members"
    members.mkdir(parents=True)
    names = []
    for n in range(5):
        (members / f"{n:09d}.txt").write_text("a caption")
        (members / f"{n:09d}.json").write_text(json.dumps({"status": "failed_to_download"}))
        names += [f"{n:09d}.txt", f"{n:09d}.json"]
    (members / "000000005.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    subprocess.run(["tar", "-cf", str(failed / "00000.tar"), "-C", str(members), *names, "000000005.mp4"], check=True)
    (failed / "00000_stats.json").write_text(json.dumps({"count": 6, "successes": 1, "failed_to_download": 5,
                                                         "failed_to_subsample": 0}))  # video2dataset's keys
    subprocess.run(["rm", "-r", str(members)], check=True)

    v2d = root / "v2d"  # a video2dataset download: its shard of clips, the listing and stats beside it
    members = v2d / "members"
    members.mkdir(parents=True)
    (members / "000000000.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    (members / "000000000.txt").write_text("a caption")
    (members / "000000000.json").write_text(json.dumps({"status": "success"}))
    subprocess.run(["tar", "-cf", str(v2d / "00000.tar"), "-C", str(members), "000000000.mp4", "000000000.txt",
                    "000000000.json"], check=True)
    pq.write_table(pa.table({"url": ["http://x/a.mp4"], "caption": ["a caption"], "key": ["000000000"],
                             "status": ["success"], "error_message": [None]}), v2d / "00000.parquet")
    (v2d / "00000_stats.json").write_text(json.dumps({"count": 1, "successes": 1, "failed_to_download": 0,
                                                      "failed_to_subsample": 0}))
    subprocess.run(["rm", "-r", str(members)], check=True)

    # img2dataset 1.47 whose first shard failed whole (dead URLs): its samples' .json/.txt alone,
    # its stats with img2dataset's own keys (as its `write_stats` dumps them)
    i2d = root / "i2d_failed_first"
    members = i2d / "members"
    members.mkdir(parents=True)
    for n in range(2):
        (members / f"{n:09d}.txt").write_text("a caption")
        (members / f"{n:09d}.json").write_text(json.dumps({"status": "failed_to_download",
                                                            "error_message": "Connection refused"}))
    subprocess.run(["tar", "-cf", str(i2d / "00000.tar"), "-C", str(members), *sorted(p.name for p in members.iterdir())],
                   check=True)
    (i2d / "00000_stats.json").write_text(json.dumps({
        "count": 2, "successes": 0, "failed_to_download": 2, "failed_to_resize": 0, "duration": 0.1,
        "start_time": 1.0, "end_time": 1.1, "status_dict": {"Connection refused": 2}}, indent=4))
    subprocess.run(["rm", "-r", str(members)], check=True)

    coco = root / "coco"
    _jpeg(coco / "images" / "val2017" / "000000000001.jpg")
    (coco / "annotations").mkdir()
    (coco / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 16, "height": 16}],
         "annotations": [], "categories": [{"id": 1, "name": "person"}]}))

    objaverse = root / "objaverse"
    for view in range(2):
        _jpeg(objaverse / "0a1b" / f"{view:03d}.png")
        np.save(objaverse / "0a1b" / f"{view:03d}.npy", np.eye(3, 4, dtype=np.float32))

    co3d = root / "co3d"
    _jpeg(co3d / "ball" / "1_2_3" / "images" / "frame000001.jpg")
    with gzip.open(co3d / "ball" / "frame_annotations.jgz", "wt") as handle:
        json.dump([], handle)
    # a Hugging Face parquet repo (`push_to_hub`) whose card shows a clip from assets/
    hf = root / "hf_parquet"
    (hf / "data").mkdir(parents=True)
    pq.write_table(pa.table({"image": [{"bytes": (photos / "a.jpg").read_bytes(), "path": "a.jpg"}], "text": ["a"]}),
                   hf / "data" / "train-00000-of-00001.parquet")
    (hf / "README.md").write_text("---\nlicense: mit\n---\n# demo\n![](assets/demo.mp4)\n")
    (hf / "assets").mkdir()
    (hf / "assets" / "demo.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    teaser = root / "to_parquet_teaser"  # a `to_parquet` file beside its teaser clip
    teaser.mkdir()
    (teaser / "train.parquet").write_bytes((hf / "data" / "train-00000-of-00001.parquet").read_bytes())
    (teaser / "teaser.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    library = root / "Pictures"  # a photo library: year/month folders, screen recordings one down
    (library / "2019" / "01").mkdir(parents=True)
    (library / "2019" / "01" / "IMG_0001.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (library / "Screen Recordings").mkdir()
    (library / "Screen Recordings" / "rec1.mov").write_bytes((videos / "clip.mp4").read_bytes())
    thumbs = root / "vids_thumbs"  # clips two folders down, their posters one down
    (thumbs / "videos" / "train").mkdir(parents=True)
    (thumbs / "videos" / "train" / "a.mp4").write_bytes((videos / "clip.mp4").read_bytes())
    (thumbs / "thumbnails").mkdir()
    (thumbs / "thumbnails" / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    stills = root / "webp_stills"  # a crawl's still WebP images: `.webp` is a video name too
    stills.mkdir()
    for name in ("a", "b"):
        subprocess.run(["convert", str(photos / f"{name}.jpg"), str(stills / f"{name}.webp")], check=True)
    giphy = root / "giphy"  # animated WebP beside a still one
    giphy.mkdir()
    (giphy / "a.webp").write_bytes((stills / "a.webp").read_bytes())
    frames = [str(photos / "a.jpg"), str(photos / "b.jpg")]
    subprocess.run(["img2webp", "-d", "40", *frames, "-o", str(giphy / "b.webp")] if shutil.which("img2webp")
                   else ["convert", "-delay", "4", *frames, str(giphy / "b.webp")], check=True, capture_output=True)
    return {p.name: p for p in (photos, videos, mixed, web, failed, v2d, i2d, coco, objaverse, co3d, hf, teaser, library,
                                thumbs, stills, giphy)}


def _check(tmp_path: Path, source: dict) -> int:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "s", **source}]}))
    return main(["check", str(config)])


@pytest.mark.parametrize("source_type, tree, fits, mark", [
    ("video", "photos", "laion", "a.jpg"),
    ("video", "web", "laion", "00000.tar holding 000000000.jpg beside 00000_stats.json"),
    ("video", "i2d_failed_first", "laion", "00000_stats.json (img2dataset's stats: failed_to_resize)"),
    ("video", "webp_stills", "laion", "a.webp"),
    ("objaverse", "web", "laion", "00000.tar"),
    ("laion", "videos", "video", "clip.mp4"),
    ("laion", "v2d", "video", "00000.tar holding 000000000.mp4"),
    ("laion", "coco", "coco", "annotations/instances_val2017.json"),
    ("pseudo_labeled", "co3d", "co3d", "ball/frame_annotations.jgz"),
    ("laion", "objaverse", "objaverse", "0a1b/000.npy"),
    ("co3d", "objaverse", "objaverse", "0a1b/000.npy"),
    ("objaverse", "co3d", "co3d", "ball/frame_annotations.jgz"),
    ("objaverse", "coco", "coco", "annotations/instances_val2017.json"),
])
def test_a_type_that_does_not_fit_its_path_fails_check_naming_the_one_that_does(
        trees, tmp_path, capsys, source_type, tree, fits, mark):
    extra = {"task": "edges", "labeler": {"name": "canny"}} if source_type == "pseudo_labeled" else {}
    assert _check(tmp_path, {"type": source_type, "path": str(trees[tree]), **extra}) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: sources[0].type (s): type: {source_type}, but {trees[tree]} holds {mark}")
    assert error.count("did you mean type: ") == 1 and f"did you mean type: {fits}?" in error, error
    assert error.endswith(f"; set sources[0].layout_check: false if type: {source_type} is right"), error


@pytest.mark.parametrize("source_type, tree, extra", [
    ("laion", "mixed", {}), ("video", "mixed", {}), ("laion", "photos", {}), ("video", "videos", {}),
    ("laion", "web", {}), ("objaverse", "objaverse", {"views": 2}), ("video", "failed_first", {}),
    ("laion", "hf_parquet", {}), ("laion", "to_parquet_teaser", {}), ("laion", "Pictures", {}),
    ("video", "vids_thumbs", {}), ("video", "giphy", {}),
])
def test_a_type_that_fits_or_a_mixed_folder_passes(trees, tmp_path, capsys, source_type, tree, extra):
    assert _check(tmp_path, {"type": source_type, "path": str(trees[tree]), **extra}) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def test_the_glance_is_bounded_on_a_crowded_folder(tmp_path, monkeypatch):
    """A folder of many files is judged on its first `TOP_ENTRIES` names, never walked whole (a
    1M-file folder: 2-3 ms where a full listing took 280 ms; here the bound is lowered to 40); a
    listing cut there cannot show that no image lies past it, so it refuses nothing."""
    monkeypatch.setattr(layout_fit, "TOP_ENTRIES", 40)
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for n in range(60):
        (crowded / f"{n:06d}.mp4").touch()
    glance = layout_fit.glance(str(crowded))
    assert len(glance.top) == 40 and glance.cut
    assert layout_fit.misfit("laion", str(crowded)) is None


def test_a_camera_folder_cut_at_the_bound_before_its_clips_is_not_refused_as_video(trees, tmp_path, monkeypatch):
    """A camera's DCIM/100CANON: photos (IMG_n.JPG, .CR2) and a few clips (MVI_n.MOV). Where the
    clips lie past the listing's bound, `type: video` was refused as laion (4 of 20 cards of 800
    photo files and 4 clips): a cut listing shows no absence."""
    card = tmp_path / "DCIM" / "100CANON"
    card.mkdir(parents=True)
    photo = (trees["photos"] / "a.jpg").read_bytes()
    for n in range(12):
        (card / f"IMG_{n:04d}.JPG").write_bytes(photo)
        (card / f"IMG_{n:04d}.CR2").write_bytes(b"II*\0")
    clips = [f"MVI_{n:04d}.MOV" for n in range(12, 16)]
    for name in clips:
        (card / name).write_bytes((trees["videos"] / "clip.mp4").read_bytes())
    listed = [e.name for e in os.scandir(card)]  # the order the glance reads: the bound just before a clip
    while listed.index(min(clips, key=listed.index)) == 0:  # a clip first: take it away, the next is later
        first = min(clips, key=listed.index)
        (card / first).unlink()
        clips.remove(first)
        listed.remove(first)
    monkeypatch.setattr(layout_fit, "TOP_ENTRIES", listed.index(min(clips, key=listed.index)))
    assert layout_fit.misfit("video", str(card)) is None
    assert layout_fit.misfit("video", str(card.parent)) is None  # DCIM: photos one folder down are no refusal
    assert layout_fit.misfit("laion", str(card)) is None


def test_a_remote_tree_is_judged_too():
    """An fsspec URL (here the in-memory store) is listed, a level at a time, as a local folder is."""
    fs = fsspec.filesystem("memory")
    fs.pipe({"/fit48/coco/annotations/person_keypoints_train2017.json": b"{}",
             "/fit48/coco/train2017/000000000009.jpg": b"\xff\xd8"})
    try:
        problem = layout_fit.misfit("laion", "memory://fit48/coco")
        assert problem and "annotations/person_keypoints_train2017.json" in problem
        assert "did you mean type: coco?" in problem
        assert layout_fit.misfit("coco", "memory://fit48/coco") is None
    finally:
        fs.rm("/fit48", recursive=True)


def test_a_bucket_is_judged_on_the_whole_listing_it_fetched(monkeypatch):
    """`fs.ls` fetches a bucket folder's every name, sorted as S3 and GCS list: a camera dump's
    IMG_*.JPG before its MVI_*.MOV. Cut at the bound after the fetch, `type: video` was refused."""
    monkeypatch.setattr(layout_fit, "TOP_ENTRIES", 40)
    fs = fsspec.filesystem("memory")
    files = {f"/fit48m/card/IMG_{n:04d}.JPG": b"\xff\xd8" for n in range(50)}
    fs.pipe({**files, "/fit48m/card/MVI_0050.MOV": b"\0", "/fit48m/photos/IMG_0001.JPG": b"\xff\xd8"})
    try:
        assert layout_fit.misfit("video", "memory://fit48m/card") is None
        assert len(layout_fit.glance("memory://fit48m/card").top) == 51
        problem = layout_fit.misfit("video", "memory://fit48m/photos")  # whole, and no clip: refused
        assert problem and "did you mean type: laion?" in problem
    finally:
        fs.rm("/fit48m", recursive=True)


def test_layout_check_false_skips_the_judgement_and_keeps_the_config_hash(trees, tmp_path, capsys):
    """The way past a refusal the user knows is wrong: `layout_check: false` on the source. It shapes
    no output, so neither it nor its default changes a build's config hash or saved config."""
    from uvd_pipeline.config import load_config

    assert _check(tmp_path, {"type": "laion", "path": str(trees["videos"])}) == 2
    capsys.readouterr()
    assert _check(tmp_path, {"type": "laion", "path": str(trees["videos"]), "layout_check": False}) == 0, \
        capsys.readouterr().err
    config = tmp_path / "c.yaml"
    passed = load_config(str(config))
    config.write_text(config.read_text().replace("layout_check: false", ""))
    default = load_config(str(config))
    assert passed.sources[0].layout_check is False and default.sources[0].layout_check is True
    assert passed.content_hash() == default.content_hash()
    assert "layout_check" not in default.model_dump(mode="json")["sources"][0]


@pytest.fixture(scope="module")
def world(trees, tmp_path_factory) -> dict[str, Path]:
    """Roots the reviewers met: an ImageNet download, a video repo with its teaser image, a photo
    library with a clip at its top, a Hub parquet repo two folders deep beside a demo clip."""
    root = tmp_path_factory.mktemp("world")
    jpg, clip = (trees["photos"] / "a.jpg").read_bytes(), (trees["videos"] / "clip.mp4").read_bytes()
    imagenet = root / "imagenet"  # ILSVRC/CLS-LOC's top: the synset mapping beside train/<wnid>/
    (imagenet / "train" / "n01440764").mkdir(parents=True)
    (imagenet / "train" / "n01440764" / "n01440764_10026.JPEG").write_bytes(jpg)
    (imagenet / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    repo = root / "video_repo"  # README + teaser.png at the top, clips at videos/<split>/<class>/
    (repo / "videos" / "train" / "archery").mkdir(parents=True)
    (repo / "videos" / "train" / "archery" / "a.mp4").write_bytes(clip)
    subprocess.run(["convert", "-size", "16x16", "plasma:red-blue", str(repo / "teaser.png")], check=True)
    library = root / "Pictures"  # year/month folders of photos, a phone clip left at the top
    (library / "2019" / "01").mkdir(parents=True)
    (library / "2019" / "01" / "IMG_0002.jpg").write_bytes(jpg)
    (library / "IMG_0001.MOV").write_bytes(clip)
    hub = root / "hub_deep"  # a Hub repo: <config>/<split>/0000.parquet, its card, a demo clip at the top
    (hub / "default" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"image": [{"bytes": jpg, "path": "a.jpg"}], "text": ["c"]}),
                   hub / "default" / "train" / "0000.parquet")
    (hub / "README.md").write_text("---\nlicense: mit\n---\n![](demo.mp4)\n")
    (hub / "demo.mp4").write_bytes(clip)
    card = root / "card_only"  # a Hub repo whose card is all the glance can judge: its data may lie past it
    card.mkdir()
    (card / "README.md").write_text("---\nconfigs:\n- config_name: default\n---\n![](demo.mp4)\n")
    (card / "demo.mp4").write_bytes(clip)
    shards = root / "wds_named"  # webdataset's ShardWriter("train-%06d.tar") beside a demo clip
    shards.mkdir()
    with ShardWriter(str(shards / "train-%06d.tar"), maxcount=10, verbose=0) as sink:
        sink.write({"__key__": "a", "jpg": jpg, "txt": "a photo"})
    (shards / "demo.mp4").write_bytes(clip)
    return {p.name: p for p in (imagenet, repo, library, hub, card, shards)} | {"coco": trees["coco"]}


@pytest.mark.parametrize("source_type", ["synthetic", "pseudo_labeled"])
@pytest.mark.parametrize("tree", ["imagenet", "coco"])
def test_synthetic_tasks_on_a_photo_dataset_root_pass(world, source_type, tree):
    """`synthetic` and `pseudo_labeled` make their tasks from any image: an ImageNet or COCO root is
    a normal target (refused before as `did you mean type: imagenet?`)."""
    assert layout_fit.misfit(source_type, str(world[tree])) is None


def test_synthetic_tasks_on_non_photo_frames_name_the_images_folder(trees):
    error = layout_fit.misfit("synthetic", str(trees["co3d"]))
    assert error and "did you mean type: co3d?" in error and "path: <the images folder>" in error, error


@pytest.mark.parametrize("source_type, tree", [
    ("video", "video_repo"),  # clips two folders down, past the glance; only the teaser seen
    ("laion", "Pictures"),  # photos two folders down, past the glance; only the top clip seen
    ("laion", "hub_deep"),  # <config>/<split>/0000.parquet: deeper than the glance
    ("laion", "card_only"),  # the dataset card alone (docs/layouts.md's card rule)
    ("laion", "wds_named"),  # shards named train-000000.tar: a tar the glance does not open
])
def test_web_vs_video_is_not_refused_while_the_glance_missed_folders(world, source_type, tree):
    assert layout_fit.misfit(source_type, str(world[tree])) is None


CLIP_ENCODERS = {"mp4": ["-c:v", "libx264"], "webm": ["-c:v", "libvpx"], "mkv": ["-c:v", "libx264"],
                 "avi": ["-c:v", "mpeg4"], "mov": ["-c:v", "libx264"], "ts": ["-c:v", "libx264"],
                 "flv": ["-c:v", "flv"], "wmv": ["-c:v", "wmv2"], "mpg": ["-c:v", "mpeg2video"]}


def _clip(path: Path) -> Path:
    """A 3-frame clip as ffmpeg writes it, its container chosen by the name's suffix."""
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-frames:v", "3", *CLIP_ENCODERS[path.suffix[1:]],
           "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory) -> Path:
    """Kinetics' `train/<class>/<youtube id>_<start>_<end>.mp4` (and .webm, as yt-dlp fetches some)."""
    train = tmp_path_factory.mktemp("kinetics700") / "train"
    _clip(train / "abseiling" / "a1_000010_000021.mp4")
    _clip(train / "abseiling" / "a2_000003_000013.mp4")
    _clip(train / "bowling" / "b1_000001_000005.webm")
    return train


def test_laion_on_a_tree_of_class_folders_of_clips_is_refused_naming_video(kinetics, tmp_path, capsys):
    """README promises `check` refuses `type: laion` on a folder of videos; on Kinetics' class
    folders (clips one folder down, nothing at the top) it passed, and the build made 0 sentences."""
    assert _check(tmp_path, {"type": "laion", "path": str(kinetics)}) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: sources[0].type (s): type: laion, but {kinetics} holds abseiling/a")
    assert "(clips in each of the 2 class folders looked into)" in error and "did you mean type: video?" in error
    assert _check(tmp_path, {"type": "video", "path": str(kinetics)}) == 0, capsys.readouterr().err


def test_class_folders_with_an_image_or_without_clips_are_not_refused(kinetics, trees, tmp_path):
    """Clips must be all the class folders show: a folder with a photo, one with no clip, a folder
    deeper than the glance, or the dataset's root above `train/` is no refusal."""
    def tree(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(kinetics, copy)
        return copy

    with_photo = tree("with_photo")
    (with_photo / "bowling" / "poster.jpg").write_bytes((trees["photos"] / "a.jpg").read_bytes())
    without_clip = tree("without_clip")
    (without_clip / "annotations").mkdir()
    (without_clip / "annotations" / "train.csv").write_text("label,youtube_id\n")
    deeper = tree("deeper")
    (deeper / "bowling" / "thumbs").mkdir()
    for path in (with_photo, without_clip, deeper, kinetics.parent):
        assert layout_fit.misfit("laion", str(path)) is None, path
    assert layout_fit.misfit("laion", str(kinetics)) is not None


def test_class_folders_of_photos_under_names_no_list_holds_beside_clips_are_not_refused(kinetics, trees, tmp_path):
    """rev55b M1: a 3DS's or Fujifilm W3's DCIM folders (.MPO photos beside .AVI clips), .jfif, .jpe,
    .jpg_large or extensionless photos beside clips built at the parent and were then refused 'did
    you mean type: video?': only clips, their sidecars (.txt, .json, .csv) and OS leftovers in every
    looked-into folder refuse now; any other file is a photo the web reader may read."""
    from PIL import Image

    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "blue")]
    photo = (trees["photos"] / "a.jpg").read_bytes()
    avi = _clip(tmp_path / "clip.avi").read_bytes()  # the 3DS films MJPEG AVIs; ffmpeg's MPEG-4 AVI here
    cases = {"DSCF0001.MPO": None, "a.jfif": photo, "a.jpe": photo, "a.jpg_large": photo, "IMG_0001": photo}
    for name, data in cases.items():
        tree = tmp_path / name.replace(".", "_")
        for folder, clip in (("100NIN03", "HNI_0001.avi"), ("101NIN03", "HNI_0002.avi")):
            (tree / folder).mkdir(parents=True)
            if data is None:  # a stereo camera's MPO as Pillow writes one: two JPEGs under an MPF index
                frames[0].save(tree / folder / name, format="MPO", save_all=True, append_images=frames[1:])
            else:
                (tree / folder / name).write_bytes(data)
            (tree / folder / clip).write_bytes(avi)
        assert layout_fit.misfit("laion", str(tree)) is None, name
    assert Image.open(tmp_path / "DSCF0001_MPO" / "100NIN03" / "DSCF0001.MPO").format == "MPO"
    assert _check(tmp_path, {"type": "laion", "path": str(tmp_path / "DSCF0001_MPO")}) == 0
    sidecars = tmp_path / "with_sidecars"  # captions, metadata and a Mac's leftovers do not hide the clips
    shutil.copytree(kinetics, sidecars)
    for name in ("a1_000010_000021.txt", "a1_000010_000021.json", "labels.csv", ".DS_Store",
                 "._a1_000010_000021.mp4", "Thumbs.db"):
        (sidecars / "abseiling" / name).write_bytes(b"x")
    assert "did you mean type: video?" in layout_fit.misfit("laion", str(sidecars))


@pytest.mark.parametrize("suffix, container", [
    ("mp4", "MP4 video"), ("webm", "WebM video"), ("mkv", "Matroska video"), ("avi", "AVI video"),
    ("mov", "QuickTime video"), ("ts", "MPEG transport stream video"), ("flv", "FLV video"),
    ("wmv", "ASF/WMV video"), ("mpg", "MPEG program stream video"),
])
def test_a_clip_read_as_an_image_is_rejected_as_a_video_file(suffix, container, tmp_path):
    """A clip in an image source (Kinetics read as `type: laion`, a phone clip among photos): an
    MP4 was "a real image format this build cannot decode", a WebM, MKV or AVI `not_an_image`."""
    from sources.laion import LaionSource
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.tagged import REJECTS
    from uvd_pipeline.unit_render import UnitRenderer

    clip = _clip(tmp_path / "web" / f"clip.{suffix}")
    source = LaionSource("web", str(clip.parent))
    renderer = UnitRenderer(source, RenderSettings(32, "center_crop", 0, 1 << 24, 1, 0, 0.0), web_images=True,
                            fingerprint=False, output=str(tmp_path / "out"), config_hash="h", root=str(source.path))
    (row,) = [item.as_row() for unit in source.units() for tag, item in renderer.render(unit)[0] if tag == REJECTS]
    assert (row["reason"], row["input"]) == ("unsupported_format", f"clip.{suffix}")
    assert row["detail"].startswith(container) and row["detail"].endswith(
        ": a video file, not an image; a type: video source reads it"), row


@pytest.mark.parametrize("name, muxer_flags, brand", [
    ("eos.mp4", ["-brand", "CAEP"], "CAEP"),  # a Canon EOS camera's MP4 (ffmpeg given its brand)
    ("stream.ismv", ["-f", "ismv"], "isml"),  # Smooth Streaming, as ffmpeg's ismv muxer writes it
])
def test_a_clip_of_a_brand_no_list_names_is_rejected_as_a_video_file(name, muxer_flags, brand, tmp_path):
    """rev55b L3: an MP4 whose brand is on no list of video brands (Canon's CAEP, ISMV's isml) was
    "ISO media ('CAEP' brand): a real image format this build cannot decode"; an ftyp naming no
    image brand with a moov box is a video now."""
    from transforms.decode import DecodeError, decode_rgb
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x32:rate=5", "-frames:v", "3", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", *muxer_flags, str(tmp_path / name))
    data = (tmp_path / name).read_bytes()
    assert data[4:12] == b"ftyp" + brand.encode()
    with pytest.raises(DecodeError) as refused:
        decode_rgb(data)
    assert refused.value.reason == "unsupported_format"
    assert str(refused.value).endswith(f"MP4 video ('{brand}' brand): a video file, not an image; a type: video "
                                       "source reads it")


def test_heic_and_avif_stills_and_sequences_are_no_video(tmp_path):
    """The rule of the test above leaves HEIF's and AVIF's files alone, an animated AVIF's moov box
    included (its brand avis names it an image sequence): ffmpeg's still and animated AVIF, heif-enc's
    HEIC, ImageMagick's AVIF and HEIC are no video, and decode to their pixels."""
    from transforms.decode import decode_rgb
    from transforms.image_format import sniff_video
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    if shutil.which("heif-enc") is None or shutil.which("convert") is None:
        pytest.fail("heif-enc (libheif-examples) and ImageMagick's convert are needed to make HEIC and AVIF files")
    source = "testsrc=size=64x48:rate=5"
    ffmpeg("-f", "lavfi", "-i", source, "-frames:v", "1", "-c:v", "libaom-av1", "-still-picture", "1",
           str(tmp_path / "still.avif"))
    ffmpeg("-f", "lavfi", "-i", source, "-frames:v", "3", "-c:v", "libaom-av1", "-cpu-used", "8",
           str(tmp_path / "animated.avif"))
    subprocess.run(["convert", "-size", "64x48", "gradient:red-blue", str(tmp_path / "g.png")], check=True)
    subprocess.run(["heif-enc", "-q", "50", str(tmp_path / "g.png"), "-o", str(tmp_path / "heif-enc.heic")],
                   check=True, capture_output=True)
    for made in ("magick.avif", "magick.heic"):
        subprocess.run(["convert", str(tmp_path / "g.png"), str(tmp_path / made)], check=True)
    animated = (tmp_path / "animated.avif").read_bytes()
    assert animated[8:12] == b"avis" and b"moov" in animated  # a sequence holds a movie box as a video does
    for made in ("still.avif", "animated.avif", "heif-enc.heic", "magick.avif", "magick.heic"):
        data = (tmp_path / made).read_bytes()
        assert sniff_video(data) is None, made
        assert decode_rgb(data).shape == (48, 64, 3), made
