"""The official splits of the annotated-video datasets, as they ship: a video the dataset
evaluates on lands in our val split, never in train, whatever the seeded hash says.

VIPSeg ships `train.txt`, `val.txt` and `test.txt` beside `imgs/` and `panomasks/` (one video
name a line; the test videos' masks are withheld). JHMDB ships `splits/<action>_test_split<N>.txt`
(`<clip>.avi 1` for training, `<clip>.avi 2` for testing); results are reported on split 1 or
averaged over the three, and the source reads the one its `official_split` names. The expected split of each sentence is read from the list files the test writes,
never from the source under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from sources.annotated_video import AnnotatedVideoSource
from sources.records import AnnotatedClipRecord, Reject
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.render_annotated import render_annotated_clip

FRAMES = 2


def _settings(val_fraction: float) -> RenderSettings:
    return RenderSettings(size=32, resize="squash", pad_value=0, max_pixels=1 << 24, png_compression=1, seed=0,
                          val_fraction=val_fraction)


def _items(source: AnnotatedVideoSource) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


def _rendered_splits(items: list, val_fraction: float) -> dict[str, set[str]]:
    """video -> the splits its sentences and rejects land in, through the real render path."""
    out: dict[str, set[str]] = {}
    for item in items:
        if isinstance(item, AnnotatedClipRecord):
            sentence = render_annotated_clip(item, _settings(val_fraction))
            assert not isinstance(sentence, Reject), (sentence.reason, sentence.detail)
            out.setdefault(item.lineage["video"], set()).add(sentence.split)
    return out


def _jhmdb(root: Path, action: str, clip: str) -> None:
    frames = root / "Rename_Images" / action / clip
    frames.mkdir(parents=True)
    for t in range(FRAMES):  # JHMDB's frames: 320x240 PNG, numbered from 00001
        Image.fromarray(np.full((240, 320, 3), 60 * t, np.uint8)).save(frames / f"{t + 1:05d}.png")
    joints = root / "joint_positions" / action / clip
    joints.mkdir(parents=True)
    pos = np.random.default_rng(len(clip)).uniform(20, 220, (2, 15, FRAMES))
    savemat(joints / "joint_positions.mat", {"pos_img": pos, "scale": np.ones((1, FRAMES))})


def _official(lines: list[str]) -> dict[str, str]:
    return {line.split()[0].removesuffix(".avi"): {"1": "train", "2": "val"}[line.split()[1]] for line in lines}


def test_jhmdb_clips_take_the_split_of_splits_test_split1(tmp_path: Path):
    clips = {"walk": ["20060723sfjffbartsinger_walk_f_cm_np1_ba_med_0", "50_FIRST_DATES_walk_f_cm_np1_fr_med_24"],
             "wave": ["Wave_my_hand_wave_h_nm_np1_fr_goo_0", "prelinger_they_grow_up_wave_u_cm_np1_fr_med_5"]}
    split1 = {"walk": [f"{clips['walk'][0]}.avi 1 ", f"{clips['walk'][1]}.avi 2 "],
              "wave": [f"{clips['wave'][0]}.avi 2\r", f"{clips['wave'][1]}.avi 1\r"]}
    (tmp_path / "splits").mkdir()
    for action, names in clips.items():
        for clip in names:
            _jhmdb(tmp_path, action, clip)
        (tmp_path / "splits" / f"{action}_test_split1.txt").write_text("\n".join(split1[action]) + "\n")
        for other in (2, 3):  # the other two splits swap train and test: split 1 is the one read
            swapped = [line.replace(" 1", " x").replace(" 2", " 1").replace(" x", " 2") for line in split1[action]]
            (tmp_path / "splits" / f"{action}_test_split{other}.txt").write_text("\n".join(swapped) + "\n")
    expected = {f"{action}/{clip}": split for action in clips
                for clip, split in _official([line.strip() for line in split1[action]]).items()}
    assert sorted(expected.values()) == ["train", "train", "val", "val"]
    items = _items(AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES))
    assert [i for i in items if isinstance(i, Reject)] == []
    for val_fraction in (0.0, 1.0):  # the hash would send every clip one way
        assert _rendered_splits(items, val_fraction) == {video: {split} for video, split in expected.items()}


def _jhmdb_release(root: Path, clips: dict[str, list[str]]) -> None:
    """JHMDB as released: ReCompress_Videos/<action>/<clip>.avi (Xvid AVI, 320x240), its frames
    as Rename_Images/<action>/<clip>/00001.png... (ffmpeg's numbering from 1), one pos_img column a
    frame. One clip is encoded and extracted, then copied under every clip's name: the split is
    decided by the names alone."""
    import shutil

    import video_zoo

    video_zoo.require_ffmpeg()
    root.mkdir()
    avi, frames = root / "made.avi", root / "made"
    video_zoo.ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-frames:v", str(FRAMES),
                     "-c:v", "mpeg4", "-vtag", "xvid", "-q:v", "5", str(avi))
    frames.mkdir()
    video_zoo.ffmpeg("-i", str(avi), "-fps_mode", "passthrough", str(frames / "%05d.png"))
    assert sorted(p.name for p in frames.iterdir()) == [f"{t + 1:05d}.png" for t in range(FRAMES)]
    for action, names in clips.items():
        for clip in names:
            (root / "ReCompress_Videos" / action).mkdir(parents=True, exist_ok=True)
            shutil.copy(avi, root / "ReCompress_Videos" / action / f"{clip}.avi")
            shutil.copytree(frames, root / "Rename_Images" / action / clip)
            joints = root / "joint_positions" / action / clip
            joints.mkdir(parents=True)
            pos = np.random.default_rng(len(clip)).uniform(20, 220, (2, 15, FRAMES))
            savemat(joints / "joint_positions.mat", {"pos_img": pos, "scale": np.ones((1, FRAMES))})
    avi.unlink()
    shutil.rmtree(frames)


def test_jhmdb_official_split_2_and_3_are_read_when_the_config_names_them(tmp_path: Path):
    """JHMDB reports results on split 1 or averaged over its three splits; only split 1 could be
    built (`splits/<action>_test_split1.txt` was the one list read). With `official_split: N` each
    clip lands where `<action>_test_split<N>.txt` puts it: its `2` clips in val, its `1` in train."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.source_factory import make_source

    clips = {"walk": ["20060723sfjffbartsinger_walk_f_cm_np1_ba_med_0", "50_FIRST_DATES_walk_f_cm_np1_fr_med_24",
                      "AMADEUS_walk_f_nm_np1_fr_med_5"],
             "wave": ["Wave_my_hand_wave_h_nm_np1_fr_goo_0", "prelinger_they_grow_up_wave_u_cm_np1_fr_med_5"]}
    root = tmp_path / "JHMDB"
    _jhmdb_release(root, clips)
    flags = {1: {"walk": "122", "wave": "21"}, 2: {"walk": "212", "wave": "12"}, 3: {"walk": "221", "wave": "11"}}
    (root / "splits").mkdir()
    for split, by_action in flags.items():
        for action, marks in by_action.items():  # as released: `<clip>.avi <flag> ` with a trailing space
            lines = "".join(f"{clip}.avi {mark} \n" for clip, mark in zip(clips[action], marks))
            (root / "splits" / f"{action}_test_split{split}.txt").write_text(lines)
    for split in (None, 1, 2, 3):
        expected = {f"{action}/{video}": name for action in clips for video, name in _official(
            (root / "splits" / f"{action}_test_split{split or 1}.txt").read_text().splitlines()).items()}
        options = {} if split is None else {"official_split": split}
        config = parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "jh", "type": "annotated_video", "path": str(root), "layout": "jhmdb", "frames": FRAMES,
             **options}]})
        items = _items(make_source(config.sources[0]))
        assert [i for i in items if isinstance(i, Reject)] == []
        for val_fraction in (0.0, 1.0):
            assert _rendered_splits(items, val_fraction) == {video: {name} for video, name in expected.items()}, split


def test_jhmdb_action_without_the_list_of_the_split_read_is_one_reject(tmp_path: Path):
    """With `official_split: 2`, an action that has split 1 and 3 but no split 2 is one
    `bad_split_list` naming the missing list and the field; its clips take the seeded hash."""
    _jhmdb(tmp_path, "walk", "clip_a")
    _jhmdb(tmp_path, "wave", "clip_b")
    (tmp_path / "splits").mkdir()
    for split in (1, 2, 3):
        (tmp_path / "splits" / f"walk_test_split{split}.txt").write_text(f"clip_a.avi {1 + (split == 2)} \n")
    for split in (1, 3):
        (tmp_path / "splits" / f"wave_test_split{split}.txt").write_text("clip_b.avi 1 \n")
    items = _items(AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES, official_split=2))
    (reject,) = [r for r in items if isinstance(r, Reject)]
    assert reject.key.startswith("jh-splits-wave_test_split2_txt") and reject.reason == "bad_split_list"
    assert "not wave_test_split2.txt" in reject.detail and "official_split: 2" in reject.detail, reject.detail
    assert _rendered_splits(items, 1.0) == {"walk/clip_a": {"val"}, "wave/clip_b": {"val"}}
    assert _rendered_splits(items, 0.0) == {"walk/clip_a": {"val"}, "wave/clip_b": {"train"}}


def test_official_split_is_refused_on_vipseg_and_left_out_of_the_hash_at_its_default(tmp_path: Path):
    """VIPSeg has one set of lists: `official_split` there is refused naming the field and the fix.
    Split 1, written or not, keeps the config hash a build made before the field existed had."""
    import pytest

    from uvd_pipeline.config import ConfigError, parse_config

    def config(**fields):
        return parse_config({"output": "/o", "sources": [
            {"name": "av", "type": "annotated_video", "path": "/d", **fields}]})

    with pytest.raises(ConfigError, match=r"sources\[0\]: official_split: .*remove official_split"):
        config(layout="vipseg", official_split=2)
    with pytest.raises(ConfigError, match=r"sources\[0\]\.official_split: .*less than or equal to 3"):
        config(layout="jhmdb", official_split=4)
    hashes = [config(layout="jhmdb", **f).content_hash() for f in ({}, {"official_split": 1}, {"official_split": 2})]
    assert hashes[0] == hashes[1] != hashes[2]
    assert "official_split" not in config(layout="jhmdb").sources[0].model_dump()


def _vipseg(root: Path, video: str, masks: bool = True) -> None:
    for number in (976, 1006):  # VIPSeg samples its videos sparsely; masks are uint16 panoptic ids
        frame = root / "imgs" / video / f"{number:08d}.jpg"
        frame.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((72, 128, 3), 90, np.uint8)).save(frame, quality=90)
        if masks:
            mask = root / "panomasks" / video / f"{number:08d}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((72, 128), 6101, np.uint16)).save(mask)


def test_vipseg_videos_take_the_split_of_their_list(tmp_path: Path):
    lists = {"train.txt": ["1000_-jHuOIGCyuE", "1002_QGkA6vUsJsQ"], "val.txt": ["127_-hIVCYO4C90"],
             "test.txt": ["1001_-AhoLSakKvE"]}
    for name, videos in lists.items():
        for video in videos:
            _vipseg(tmp_path, video, masks=name != "test.txt")  # the test set's masks are withheld
        (tmp_path / name).write_text("".join(f"{video}\n" for video in videos))
    _vipseg(tmp_path, "2000_unlisted0000")
    items = _items(AnnotatedVideoSource("vip", str(tmp_path), "vipseg", frames=FRAMES))
    for val_fraction in (0.0, 1.0):
        splits = _rendered_splits(items, val_fraction)
        assert {video: splits[video] for video in lists["train.txt"] + lists["val.txt"]} == {
            "1000_-jHuOIGCyuE": {"train"}, "1002_QGkA6vUsJsQ": {"train"}, "127_-hIVCYO4C90": {"val"}}
        assert splits["2000_unlisted0000"] == {"val" if val_fraction else "train"}  # unlisted: the hash
    # a test video (frames, no masks): one reject counted in val, not one per window in train
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.group, r.reason, r.split_hint) for r in rejects] == [("vip-1001_-AhoLSakKvE", "unlabeled_split", "val")]


def test_unreadable_split_list_is_a_reject_and_the_videos_still_read(tmp_path: Path):
    _vipseg(tmp_path, "127_-hIVCYO4C90")
    (tmp_path / "val.txt").write_bytes(b"127_-hIVCYO4C90\n\xff\xfe\n")  # not UTF-8
    (tmp_path / "splits").mkdir()
    jh = tmp_path / "jh"
    _jhmdb(jh, "walk", "clip_a")
    _jhmdb(jh, "walk", "clip_b")
    (jh / "splits").mkdir()
    (jh / "splits" / "walk_test_split1.txt").write_text("clip_a.avi 2\nclip_b.avi\n")  # the second line lacks its flag
    items = _items(AnnotatedVideoSource("vip", str(tmp_path), "vipseg", frames=FRAMES))
    (reject,) = [r for r in items if isinstance(r, Reject)]
    assert (reject.key.startswith("vip-val_txt"), reject.reason, reject.detail) == (True, "bad_split_list", "not UTF-8 text")
    assert len([i for i in items if isinstance(i, AnnotatedClipRecord)]) == 1
    items = _items(AnnotatedVideoSource("jh", str(jh), "jhmdb", frames=FRAMES))
    rejects = [(r.key.startswith("jh-splits-walk_test_split1_txt"), r.reason, r.detail) for r in items if isinstance(r, Reject)]
    assert rejects == [(True, "bad_split_list", "1 line is not '<clip>.avi 1|2' (line 2: 'clip_b.avi')")]
    assert _rendered_splits(items, 0.0) == {"walk/clip_a": {"val"}, "walk/clip_b": {"train"}}


def test_jhmdb_other_splits_without_split1_is_one_reject_per_action(tmp_path: Path):
    """`splits/` holding an action's split 2 and 3 but not its split 1 (the one read) was ignored
    silently, its clips taking the hash: one `bad_split_list` naming what is missing. Split 2 and
    3 are never read (a broken one is no reject), and a clip's name may hold a space."""
    _jhmdb(tmp_path, "walk", "clip a")
    _jhmdb(tmp_path, "wave", "clip_b")
    (tmp_path / "splits").mkdir()
    for n in (2, 3):
        (tmp_path / "splits" / f"walk_test_split{n}.txt").write_text("clip a.avi 2\n")
        (tmp_path / "splits" / f"wave_test_split{n}.txt").write_bytes(b"\xff not a list\n")
    (tmp_path / "splits" / "wave_test_split1.txt").write_text("clip_b.avi 2\n")
    items = _items(AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES))
    (reject,) = [r for r in items if isinstance(r, Reject)]
    assert reject.key.startswith("jh-splits-walk_test_split1_txt") and reject.reason == "bad_split_list"
    assert "not walk_test_split1.txt" in reject.detail and "seeded hash" in reject.detail, reject.detail
    assert _rendered_splits(items, 0.0) == {"walk/clip a": {"train"}, "wave/clip_b": {"val"}}
    (tmp_path / "splits" / "walk_test_split1.txt").write_text("clip a.avi 2\n")  # `<name with a space>.avi 2`
    items = _items(AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES))
    assert [i for i in items if isinstance(i, Reject)] == []
    assert _rendered_splits(items, 0.0) == {"walk/clip a": {"val"}, "wave/clip_b": {"val"}}


def test_a_video_listed_twice_is_held_out_and_list_names_match_in_any_unicode_form(tmp_path: Path):
    """A video in train.txt and val.txt (or `1` then `2` in one JHMDB list) goes to val, whichever
    comes first; a list's name in NFD matches the folder's NFC name (macOS writes NFD)."""
    _vipseg(tmp_path, "1_both")
    _vipseg(tmp_path, "2_caf\u00e9")
    (tmp_path / "train.txt").write_text("1_both\n2_cafe\u0301\n")
    (tmp_path / "val.txt").write_text("1_both\n")
    items = _items(AnnotatedVideoSource("vip", str(tmp_path), "vipseg", frames=FRAMES))
    for val_fraction in (0.0, 1.0):
        assert _rendered_splits(items, val_fraction) == {"1_both": {"val"}, "2_caf\u00e9": {"train"}}
    jh = tmp_path / "jh"
    _jhmdb(jh, "walk", "clip_a")
    (jh / "splits").mkdir()
    (jh / "splits" / "walk_test_split1.txt").write_text("clip_a.avi 2\nclip_a.avi 1\n")
    assert _rendered_splits(_items(AnnotatedVideoSource("jh", str(jh), "jhmdb", frames=FRAMES)), 0.0) == {
        "walk/clip_a": {"val"}}


def test_a_bad_split_list_is_read_once_for_all_its_videos(tmp_path: Path, monkeypatch):
    """A list that cannot be read was parsed again for every video (its failure never cached)."""
    from sources import annotated_video, fsio

    for i in range(3):
        _vipseg(tmp_path, f"{i}_v")
    (tmp_path / "val.txt").write_bytes(b"0_v\n\xff\n")
    reads = []
    real = fsio.read_bytes
    monkeypatch.setattr(fsio, "read_bytes", lambda uri, *a, **k: reads.append(uri) or real(uri, *a, **k))
    annotated_video.split_list.cache_clear()
    items = _items(AnnotatedVideoSource("vip", str(tmp_path), "vipseg", frames=FRAMES))
    assert [r.detail for r in items if isinstance(r, Reject)] == ["not UTF-8 text"]
    assert reads.count(str(tmp_path / "val.txt")) == 1, reads


def test_a_jhmdb_clip_records_its_split_not_the_list_so_a_fixed_line_changes_that_clip_only(tmp_path: Path):
    """Each clip's input manifest held `walk_test_split1.txt`'s file state: a line fixed in it
    changed every clip of the action. A clip records the split the list gives it; after one line's
    flag is flipped, only that clip's recorded input differs (and the list's own unit's)."""
    from sources import fsio
    from uvd_pipeline.unit_store import changed_input, input_manifest

    names = ["clip_a", "clip_b", "clip_c"]
    for clip in names:
        _jhmdb(tmp_path, "walk", clip)
    (tmp_path / "splits").mkdir()
    listed = tmp_path / "splits" / "walk_test_split1.txt"
    listed.write_text("".join(f"{clip}.avi 1 \n" for clip in names))
    source = AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES)
    manifests = {}
    for unit in source.units():
        with fsio.recording_inputs() as record:
            list(source.read(unit))
        manifests[fsio.basename(unit)] = input_manifest(record, unit)
    assert str(listed) not in manifests["clip_a"]["files"] and str(listed) in manifests[listed.name]["files"]
    assert manifests["clip_a"]["derived"] == [[["sources.annotated_video.official_split", str(tmp_path), "jhmdb",
                                                 1, False, "walk/clip_a"], ["train", False]]]
    listed.write_text(listed.read_text().replace("clip_b.avi 1", "clip_b.avi 2"))
    changed = {unit: changed_input(manifest) for unit, manifest in manifests.items()}
    assert {unit for unit, why in changed.items() if why} == {"clip_b", listed.name}, changed
    assert _rendered_splits(_items(source), 0.0) == {"walk/clip_a": {"train"}, "walk/clip_b": {"val"},
                                                     "walk/clip_c": {"train"}}


def test_too_many_open_files_reading_a_split_list_is_the_machines_error_and_never_cached(tmp_path: Path):
    """A VIPSeg `val.txt` that could not be opened for want of a file descriptor (a real EMFILE: the
    process's RLIMIT_NOFILE lowered to what it holds) was the list's `bad_split_list` reject
    ('unreadable (OSError)'), committed for good, and the failure was cached: every later video of
    the process took the seeded hash's split, the val video landing in train. It is this machine's
    `MachineError` (the unit stays uncommitted); with files to spare, the same process reads the
    list and gives the video its listed split."""
    import pytest
    from budget_jobs import no_file_to_spare

    from sources import annotated_video
    from sources.records import MachineError

    _vipseg(tmp_path, "127_c")
    _vipseg(tmp_path, "1000_a")
    (tmp_path / "val.txt").write_text("127_c\n")
    (tmp_path / "train.txt").write_text("1000_a\n")
    annotated_video.split_list.cache_clear()
    source = AnnotatedVideoSource("vip", str(tmp_path), "vipseg", frames=FRAMES)
    units = source.units()
    listed = str(tmp_path / "val.txt")
    with no_file_to_spare(), pytest.raises(MachineError, match=r"reading val\.txt: \[Errno 24\]"):
        list(source.read(listed))
    with no_file_to_spare(), pytest.raises(MachineError, match=r"\[Errno 24\]"):
        list(source.read(str(tmp_path / "imgs" / "127_c")))
    assert list(source.read(listed)) == []
    items = [item for unit in units for item in source.read(unit)]
    for val_fraction in (0.0, 1.0):
        assert _rendered_splits(items, val_fraction) == {"127_c": {"val"}, "1000_a": {"train"}}


def test_jhmdb_action_with_only_split_1_and_split_2_read_is_one_reject_naming_the_action(tmp_path: Path):
    """With `official_split: 2`, an action whose `splits/` holds only `_test_split1.txt` (the one
    most copies keep) is one `bad_split_list` naming the action by its name, not by the file's."""
    _jhmdb(tmp_path, "wave", "clip_b")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "wave_test_split1.txt").write_text("clip_b.avi 2 \n")
    items = _items(AnnotatedVideoSource("jh", str(tmp_path), "jhmdb", frames=FRAMES, official_split=2))
    assert [(r.reason, r.detail) for r in items if isinstance(r, Reject)] == [(
        "bad_split_list", "splits/ holds wave's other splits but not wave_test_split2.txt, the split read "
        "(official_split: 2): wave's clips take the seeded hash's split")]
    assert _rendered_splits(items, 0.0) == {"wave/clip_b": {"train"}}
