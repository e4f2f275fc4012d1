"""Multi-view and multi-annotation readers account for every input: a category, a twin, a view."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_sources_annotated import TASKONOMY_DOMAIN_IDS, _co3d_orbit, _objaverse_object, _write_jgz

from sources.multitask import MultiTaskSource
from sources.multiview import Co3dSource, ObjaverseSource
from sources.paths import ConfiguredValueMismatch
from sources.records import MultiViewRecord, PairRecord, Reject, TupleRecord
from sources.stereo import StereoSource
from uvd_pipeline.rendered_shards import duplicate_sentence
from uvd_pipeline.sentences import Sentence


def _co3d_category(root: Path, category: str, sequence: str, annotations: str | None = "frame_annotations.jgz") -> None:
    """A CO3D v2 category folder with one sequence of 6 frames, its frame annotations saved
    under `annotations` (None: not saved, as a zip extracted in part leaves it)."""
    frames = _co3d_orbit(root, np.arange(6) * 60.0, sequence)  # written under toy/
    (root / "toy").rename(root / category)
    for frame in frames:
        frame["image"]["path"] = frame["image"]["path"].replace("toy/", f"{category}/", 1)
    _write_jgz(root / category / "sequence_annotations.jgz", [{"sequence_name": sequence, "category": category}])
    if annotations:
        _write_jgz(root / category / annotations, frames)


def _read_all(source) -> list:
    return [item for unit in source.units() for item in source.read(unit)]


def test_co3d_category_without_frame_annotations_is_a_reject(tmp_path: Path):
    """A category whose frame_annotations.jgz never arrived (a zip extracted in part) vanished
    without a word, and one saved as `frame_annotations.JGZ` with it. The first is now one
    `missing_annotation` reject naming the file; the second is read. A folder that is no
    category (no annotations, no sequence folder) is no input and no reject."""
    _co3d_category(tmp_path, "apple", "s1")
    _co3d_category(tmp_path, "banana", "s2", annotations=None)
    _co3d_category(tmp_path, "cherry", "s3", annotations="frame_annotations.JGZ")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("downloaded 2026-12-01")
    items = _read_all(Co3dSource("co3d", str(tmp_path), views=4))
    assert sorted(i.key for i in items if isinstance(i, MultiViewRecord)) == ["co3d-apple-s1", "co3d-cherry-s3"]
    assert [(i.key, i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("co3d-banana", "missing_annotation",
         "banana/ has no frame_annotations.jgz: its sequences cannot be placed, none is read", "banana/")]


def test_co3d_configured_category_without_frame_annotations_is_refused_at_check(tmp_path: Path):
    """`categories: [banana]` naming a category folder without its frame annotations passed check
    (every unit then one `missing_annotation` reject, no sentence), where it was refused before;
    and several unknown names read `no banana, plum/frame_annotations.jgz`."""
    from sources.paths import ConfiguredPathMissing

    _co3d_category(tmp_path, "apple", "s1")
    _co3d_category(tmp_path, "banana", "s2", annotations=None)
    with pytest.raises(ConfiguredPathMissing) as refused:
        Co3dSource("co3d", str(tmp_path), views=4, categories=("banana", "plum")).units()
    assert refused.value.field == "categories"
    assert str(refused.value) == (f"banana/ holds no frame_annotations.jgz; no plum/frame_annotations.jgz under {tmp_path} "
                                  "(categories there: apple); name those, or leave categories out")
    assert [Path(u).name for u in Co3dSource("co3d", str(tmp_path), views=4, categories=("apple",)).units()] == ["apple"]


def test_co3d_sequence_rejects_name_the_annotations_as_spelt(tmp_path: Path):
    """Frame annotations saved as `frame_annotations.JGZ` are read, but a sequence's rejects named
    `frame_annotations.jgz`, a file that is not there."""
    frames = _co3d_orbit(tmp_path, np.arange(6) * 60.0, "s1")  # written under toy/
    _write_jgz(tmp_path / "toy" / "frame_annotations.JGZ", [*frames, {**frames[0], "sequence_name": "../../x"}])
    items = _read_all(Co3dSource("co3d", str(tmp_path), views=4))
    assert [i.key for i in items if isinstance(i, MultiViewRecord)] == ["co3d-toy-s1"]
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [
        ("outside_root", "toy/frame_annotations.JGZ sequence ../../x")]


def _taskonomy_view(building: Path, stem: str, value: int) -> None:
    """One Taskonomy view: a PNG of each of the five domains (depth 16-bit), as its tars hold them."""
    for folder, domain in TASKONOMY_DOMAIN_IDS.items():
        (building / folder).mkdir(parents=True, exist_ok=True)
        array = np.full((8, 8), value * 100, np.uint16) if folder == "depth_zbuffer" else np.full((8, 8, 3), value, np.uint8)
        assert cv2.imwrite(str(building / folder / f"{stem}_domain_{domain}.png"), array)


def test_multitask_twins_of_one_stem_are_duplicate_key_rejects(tmp_path: Path):
    """`x_domain_rgb.png` beside `x_domain_rgb.PNG` (a Windows round trip), or a view named in NFC
    beside its Mac's NFD copy, are one stem: the second overwrote the first without a word (NFD:
    two tuples of one key, met only by the writer). The one read is the one in NFC, then the one
    spelt `.png` as Taskonomy ships it (by name alone a stray `.PNG` copy was read and the shipped
    file rejected); each other is a `duplicate_key` reject."""
    building = tmp_path / "allensville"
    _taskonomy_view(building, "point_0_view_0", 10)
    assert cv2.imwrite(str(building / "rgb" / "point_0_view_0_domain_rgb.PNG"), np.full((8, 8, 3), 200, np.uint8))
    cafe = unicodedata.normalize("NFC", "café_view_1")
    _taskonomy_view(building, cafe, 20)
    assert cv2.imwrite(str(building / "rgb" / f"{unicodedata.normalize('NFD', cafe)}_domain_rgb.png"),
                       np.full((8, 8, 3), 90, np.uint8))
    items = _read_all(MultiTaskSource("tk", str(tmp_path)))
    tuples = {i.key: Path(dict(i.uris)["image"]).name for i in items if isinstance(i, TupleRecord)}
    assert tuples == {"tk-allensville-point_0_view_0": "point_0_view_0_domain_rgb.png",
                      "tk-allensville-caf__view_1_b49e18ed": f"{cafe}_domain_rgb.png"}
    rejects = [(i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)]
    assert rejects == [
        ("duplicate_key", f"{cafe}_domain_rgb.png (NFD) is the name of {cafe}_domain_rgb.png (NFC) in another Unicode "
         "form: that file is read", f"allensville/rgb/{unicodedata.normalize('NFD', cafe)}_domain_rgb.png"),
        ("duplicate_key", "point_0_view_0_domain_rgb.PNG (NFC) is the name of point_0_view_0_domain_rgb.png (NFC) "
         "with its extension in another case: that file is read", "allensville/rgb/point_0_view_0_domain_rgb.PNG")]
    (image,) = [dict(i.uris)["image"] for i in items if isinstance(i, TupleRecord) and "point_0" in i.key]
    assert cv2.imread(image)[0, 0].tolist() == [10, 10, 10]  # the shipped view's pixels, not the stray copy's 200


def test_objaverse_reads_renders_and_cameras_in_any_case(tmp_path: Path):
    """Renders saved as `000.PNG` (a Windows or zip round trip), cameras as `000.NPY`: matched by
    `.png`/`.npy` alone, an object of them was `too_few_views` (0 views) and views: 12 was never
    refused at check. Now read in any case, as the other folder readers list them; a render
    beside its twin in another case is one `duplicate_key` reject, the one spelt `.png` read (as
    before: by name alone a stray `000.PNG` was read and the shipped `000.png` rejected)."""
    for uid, render, camera in (("upper", ".PNG", ".npy"), ("both", ".PNG", ".NPY"), ("lower", ".png", ".npy")):
        _objaverse_object(tmp_path / uid)
        for i in range(4):
            (tmp_path / uid / f"{i:03d}.png").rename(tmp_path / uid / f"{i:03d}{render}")
            (tmp_path / uid / f"{i:03d}.npy").rename(tmp_path / uid / f"{i:03d}{camera}")
    (tmp_path / "lower" / "001.png").link_to(tmp_path / "lower" / "001.PNG")
    with pytest.raises(ConfiguredValueMismatch, match="hold 4, 4, 4 views with cameras"):
        ObjaverseSource("obj", str(tmp_path), views=12).units()
    items = _read_all(ObjaverseSource("obj", str(tmp_path), views=4))
    records = {i.key: [Path(u).name for u in i.view_uris] for i in items if isinstance(i, MultiViewRecord)}
    assert records == {"obj-upper": ["000.PNG", "001.PNG", "002.PNG", "003.PNG"],
                       "obj-both": ["000.PNG", "001.PNG", "002.PNG", "003.PNG"],
                       "obj-lower": ["000.png", "001.png", "002.png", "003.png"]}
    assert [(i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("duplicate_key", "001.PNG (NFC) is the name of 001.png (NFC) with its extension in another case: "
         "that file is read", "lower/001.PNG")]


def test_objaverse_judges_only_the_files_it_reads(tmp_path: Path):
    """A `LICENSE.txt` linked to a shared copy out of the root is no input: it rejected the whole
    object `outside_root`. Only renders and cameras are judged; a render leading out still is."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "LICENSE.txt").write_text("CC-BY 4.0")
    root = tmp_path / "views_release"
    for uid in ("licensed", "linked_view"):
        _objaverse_object(root / uid)
    (root / "licensed" / "LICENSE.txt").symlink_to("../../shared/LICENSE.txt")
    (root / "linked_view" / "003.png").unlink()
    (tmp_path / "shared" / "003.png").write_bytes((root / "licensed" / "003.png").read_bytes())
    (root / "linked_view" / "003.png").symlink_to("../../shared/003.png")
    items = _read_all(ObjaverseSource("obj", str(root), views=4))
    assert [i.key for i in items if isinstance(i, MultiViewRecord)] == ["obj-licensed"]
    assert [(i.key, i.reason) for i in items if isinstance(i, Reject)] == [("obj-linked_view", "outside_root")]


def test_objaverse_bad_camera_loses_its_view_not_the_object(tmp_path: Path):
    """One camera cut short rejected the whole object (`bad_camera`, "002.npy: ValueError"), where
    a missing camera loses its view alone. A bad camera now loses its view too, the object built
    from the others, and a cut .npy says it is cut short (in its data or in its header)."""
    for uid in ("cut", "cut_header"):
        _objaverse_object(tmp_path / uid, views=5)
    camera = (tmp_path / "cut" / "002.npy").read_bytes()
    (tmp_path / "cut" / "002.npy").write_bytes(camera[:-10])
    (tmp_path / "cut_header" / "002.npy").write_bytes(camera[:40])
    items = _read_all(ObjaverseSource("obj", str(tmp_path), views=4))
    records = {i.key: sorted(Path(u).name for u in i.view_uris) for i in items if isinstance(i, MultiViewRecord)}
    assert records == {"obj-cut": ["000.png", "001.png", "003.png", "004.png"],
                       "obj-cut_header": ["000.png", "001.png", "003.png", "004.png"]}
    header = len(camera) - 12 * 4  # 12 float32 numbers after it
    assert [(i.key, i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("obj-cut-002-camera", "bad_camera", f"002.npy: is cut short: {len(camera) - 10} of its {len(camera)} bytes",
         "cut/002.npy"),
        ("obj-cut_header-002-camera", "bad_camera", f"002.npy: is cut short in its header: 40 of its {header} header bytes",
         "cut_header/002.npy")]


def test_objaverse_object_folders_named_in_nfc_and_nfd_are_one_key(tmp_path: Path):
    """`café/` beside a Mac's `café/` in NFD: two sentences of one key, the NFD one kept by the
    writer's backstop with an empty detail. The NFC folder is read; the other is a `duplicate_key`
    reject naming its folder. The backstop, where it still meets twins, names their lineage."""
    nfc_name, nfd_name = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    _objaverse_object(tmp_path / nfc_name)
    _objaverse_object(tmp_path / nfd_name)
    items = _read_all(ObjaverseSource("obj", str(tmp_path), views=4))
    (record,) = [i for i in items if isinstance(i, MultiViewRecord)]
    assert record.lineage["uid"] == nfc_name and Path(record.view_uris[0]).parent.name == nfc_name
    assert [(i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("duplicate_key", "café/ (NFD) is the name of café/ (NFC) in another Unicode form: that folder is read",
         f"{nfd_name}/")]
    twin = Sentence(record.key, "obj", "multiview", "none", "train", (), ({"view": 0, "azimuth_deg": 10.0},),
                    {"uid": nfd_name, "views_available": 4})
    assert duplicate_sentence(twin).detail == (
        f"another sentence of this shard has id {record.key}; this one from uid café (NFD)")


def test_objaverse_nfd_folder_is_read_where_its_nfc_twin_cannot_be_or_is_not_listed(tmp_path: Path, monkeypatch):
    """The NFD folder's twin was found by `isdir` of its NFC name and taken unread: beside an NFC
    link leading out of the root (itself `outside_root`) the real NFD folder was its
    `duplicate_key`, the object lost; on a Mac's volume, which answers `isdir` of the NFC name for
    a lone NFD folder, that folder was its own `duplicate_key`. Twins come from the listing, the
    first that can be read is read."""
    from sources import fsio

    nfc_name, nfd_name = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    root, elsewhere = tmp_path / "views_release", tmp_path / "elsewhere"
    _objaverse_object(root / nfd_name)
    _objaverse_object(elsewhere)
    (root / nfc_name).symlink_to(elsewhere)
    items = _read_all(ObjaverseSource("obj", str(root), views=4))
    (record,) = [i for i in items if isinstance(i, MultiViewRecord)]
    assert Path(record.view_uris[0]).parent.name == nfd_name
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [("outside_root", f"{nfc_name}/")]
    (root / nfc_name).unlink()
    real_isdir = fsio.isdir  # as a Mac's volume answers: the NFC spelling finds the NFD folder
    monkeypatch.setattr(fsio, "isdir", lambda uri: real_isdir(unicodedata.normalize("NFD", uri)) or real_isdir(uri))
    items = _read_all(ObjaverseSource("obj", str(root), views=4))
    assert [type(i).__name__ for i in items] == ["MultiViewRecord"]


def _co3d_with_annotations(root: Path) -> list[dict]:
    """Six frames of toy/s1 with the depth and mask paths CO3D v2 gives each frame."""
    frames = _co3d_orbit(root, np.arange(6) * 60.0)
    for frame in frames:
        image = frame["image"]["path"]
        frame["depth"] = {"path": image.replace("/images/", "/depths/") + ".geometric.png", "scale_adjustment": 1.0,
                          "mask_path": image.replace("/images/", "/depth_masks/").replace(".jpg", ".png")}
        frame["mask"] = {"path": image.replace("/images/", "/masks/").replace(".jpg", ".png"), "mass": 10.0}
    return frames


def test_co3d_bad_depth_path_refuses_only_what_reads_it(tmp_path: Path):
    """A depth path leading out of the root rejected its whole frame, from the multi-view sentence
    too, though the build reads no depth without `pair_tasks: [depth]`. Only the paths a configured
    task reads are judged: the sentence keeps all six frames, and with depth pairs the frame's
    depth pair alone is refused (its segmentation pair is built)."""
    frames = _co3d_with_annotations(tmp_path)
    frames[2]["depth"]["path"] = "../outside/frame000003.jpg.geometric.png"
    _write_jgz(tmp_path / "toy" / "frame_annotations.jgz", frames)
    items = list(Co3dSource("co3d", str(tmp_path), views=6).read(str(tmp_path / "toy")))
    assert [(type(i).__name__, i.lineage.get("frames_available")) for i in items] == [("MultiViewRecord", 6)]
    both = list(Co3dSource("co3d", str(tmp_path), views=6, pair_tasks=("depth", "segmentation")).read(str(tmp_path / "toy")))
    assert [i.lineage["frames_available"] for i in both if isinstance(i, MultiViewRecord)] == [6]
    assert sorted(i.key for i in both if isinstance(i, PairRecord)) == sorted(
        [f"co3d-toy-s1-f{n:06d}-segmentation" for n in range(6)] + [f"co3d-toy-s1-f{n:06d}-depth" for n in (0, 1, 3, 4, 5)])
    (reject,) = [i for i in both if isinstance(i, Reject)]
    assert (reject.key, reject.reason, reject.input) == ("co3d-toy-s1-f000002-depth", "outside_root",
                                                         "toy/s1/images/frame000003.jpg")
    assert reject.detail.startswith("frame_annotations.jgz[2] depth.path: ")


def test_co3d_frames_naming_one_image_file_are_duplicates(tmp_path: Path):
    """Two frames of a sequence (other frame numbers) naming one image file were both views of the
    sentence, one picture twice. The second is a `duplicate_key` reject naming the first."""
    frames = _co3d_with_annotations(tmp_path)
    frames[4]["image"]["path"] = frames[1]["image"]["path"]
    _write_jgz(tmp_path / "toy" / "frame_annotations.jgz", frames)
    items = list(Co3dSource("co3d", str(tmp_path), views=4).read(str(tmp_path / "toy")))
    (record,) = [i for i in items if isinstance(i, MultiViewRecord)]
    assert record.lineage["frames_available"] == 5 and 4 not in record.lineage["frame_numbers"]
    assert [(i.key, i.reason, i.detail) for i in items if isinstance(i, Reject)] == [
        ("co3d-toy-frame-4", "duplicate_key",
         "frame_annotations.jgz[4]: image.path toy/s1/images/frame000002.jpg is already frame_annotations.jgz[1]'s")]


def test_kitti_views_and_maps_in_any_case_and_jpeg(tmp_path: Path):
    """A disparity map saved `000001_10.PNG` was "no disparity for 000001_10.png" (its path was the
    stem + `.png`), and a `.jpeg` left view was never listed (its right view and map then "no left
    view"). Views are `.png`, `.jpg` or `.jpeg`, maps `.png`, in any case; of a frame's two left
    views (`x.png` beside a stray `x.PNG`) the first (NFC, then `.png` before `.jpg` before `.jpeg` in
    any case, then spelt in lower case as KITTI ships it, then by name) is read, the other a
    `duplicate_key` reject: by name alone the stray `x.PNG`, another frame's pixels, was paired
    with `x`'s right view and disparity map."""
    split = tmp_path / "training"
    names = {"000000_10": (".png", ".png"), "000001_10": (".png", ".PNG"), "000002_10": (".jpeg", ".png"),
             "000003_10": (".png", ".png")}
    for folder in ("image_2", "image_3", "disp_noc_0"):
        (split / folder).mkdir(parents=True)
    for n, (stem, (view, disparity)) in enumerate(names.items()):
        assert cv2.imwrite(str(split / "image_2" / f"{stem}{view}"), np.full((8, 12, 3), 40 * n, np.uint8))
        assert cv2.imwrite(str(split / "image_3" / f"{stem}.png"), np.full((8, 12, 3), 40 * n + 5, np.uint8))
        assert cv2.imwrite(str(split / "disp_noc_0" / f"{stem}{disparity}"), np.full((8, 12), 256 * (n + 1), np.uint16))
    assert cv2.imwrite(str(split / "image_2" / "000003_10.PNG"), np.full((8, 12, 3), 250, np.uint8))
    items = _read_all(StereoSource("k", str(tmp_path)))
    pairs = {i.key: (Path(i.image_uri).name, Path(i.annotation.get("right_uri") or i.annotation["disparity_uri"]).name)
             for i in items if isinstance(i, PairRecord)}
    assert pairs == {
        "k-000000_10-stereo": ("000000_10.png", "000000_10.png"), "k-000000_10-depth": ("000000_10.png", "000000_10.png"),
        "k-000001_10-stereo": ("000001_10.png", "000001_10.png"), "k-000001_10-depth": ("000001_10.png", "000001_10.PNG"),
        "k-000002_10-stereo": ("000002_10.jpeg", "000002_10.png"), "k-000002_10-depth": ("000002_10.jpeg", "000002_10.png"),
        "k-000003_10-stereo": ("000003_10.png", "000003_10.png"), "k-000003_10-depth": ("000003_10.png", "000003_10.png")}
    assert [(i.reason, i.detail, i.input) for i in items if isinstance(i, Reject)] == [
        ("duplicate_key", "000003_10.PNG (NFC) is the name of 000003_10.png (NFC) with its extension in another case: "
         "that file is read", "training/image_2/000003_10.PNG")]
    left = next(i.image_uri for i in items if isinstance(i, PairRecord) and i.key == "k-000003_10-stereo")
    assert cv2.imread(left)[0, 0].tolist() == [120, 120, 120]  # the frame's own view, not the stray 250


@pytest.mark.parametrize("how", ["fifo", "dangling"])
def test_multitask_twin_that_is_no_file_keeps_its_own_reason(tmp_path: Path, how: str):
    """`x_domain_rgb.png` a fifo or a link to nothing beside a readable `x_domain_rgb.PNG`: the
    `.PNG` is read, and the `.png`, though never read, was called its `duplicate_key` ("that file
    is read"); it is now its own reason's reject, as a lone one is (`paths.twin_problem`)."""
    building = tmp_path / "tk" / "allensville"
    _taskonomy_view(building, "point_0_view_0", 10)
    rgb = building / "rgb" / "point_0_view_0_domain_rgb.png"
    rgb.with_suffix(".PNG").write_bytes(rgb.read_bytes())
    _refuse(rgb, how, tmp_path / "shared" / rgb.name)
    items = _read_all(MultiTaskSource("tk", str(tmp_path / "tk")))
    (image,) = [dict(i.uris)["image"] for i in items if isinstance(i, TupleRecord)]
    assert Path(image).name == "point_0_view_0_domain_rgb.PNG" and cv2.imread(image)[0, 0].tolist() == [10, 10, 10]
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [
        ("not_a_file", "allensville/rgb/point_0_view_0_domain_rgb.png")]


def test_kitti_frames_without_a_map_list_the_map_folder_once_and_record_their_stem_alone(tmp_path: Path, monkeypatch):
    """Each frame without a map (every `_11`) listed the disparity folder to find its map in any
    case (rev56e's kitti_mv_time.py: 3881 listings where 1 was, 8.0 s not 2.5 s), each listing
    recorded as the unit's input: one map added for another scene changed every such unit's input
    and rendered it again. The folder is listed once; a frame records the names of its stem alone."""
    from sources import fsio

    split = tmp_path / "training"
    for folder in ("image_2", "image_3", "disp_noc_0"):
        (split / folder).mkdir(parents=True)
    for scene in range(3):
        for frame in ("10", "11"):
            for folder in ("image_2", "image_3"):
                assert cv2.imwrite(str(split / folder / f"{scene:06d}_{frame}.png"), np.full((8, 12, 3), 30 * scene, np.uint8))
        assert cv2.imwrite(str(split / "disp_noc_0" / f"{scene:06d}_10.png"), np.full((8, 12), 512, np.uint16))
    listed = []
    real_list_files = fsio.list_files
    monkeypatch.setattr(fsio, "list_files", lambda uri, *a, **k: listed.append(Path(uri).name) or real_list_files(uri, *a, **k))
    source = StereoSource("k", str(tmp_path))
    (unit,) = source.units()
    listed.clear()
    with fsio.recording_inputs() as recorded:
        items = list(source.read(unit))
    assert listed == ["disp_noc_0"]
    assert sorted(i.key for i in items if isinstance(i, PairRecord)) == [
        f"k-{scene:06d}_{frame}-{task}" for scene in range(3) for frame in ("10", "11") for task in ("depth", "stereo")
        if (frame, task) != ("11", "depth")]
    assert [Path(str(key[1])).name for key in recorded.listings] == []
    derived = {key: value for key, value in recorded.derived.items() if key[0] == "sources.stereo.stem_names"}
    assert sorted(key[-1] for key in derived) == ["000000_11", "000001_11", "000002_11"]
    assert cv2.imwrite(str(split / "disp_noc_0" / "000500_10.png"), np.full((8, 12), 512, np.uint16))
    assert all(fsio.rederive(key) == value == [] for key, value in derived.items())


def test_objaverse_nfd_units_record_their_own_twins_not_the_roots_listing(tmp_path: Path):
    """rev56h B-1: the NFD folder's twins were looked up once per run with the whole root's listing
    recorded by the first unit alone: a second NFD unit recorded no twin relation (an NFC `naïve/`
    added later left it read though it was now a `duplicate_key`), and the first re-rendered when
    any unrelated object was added. Each unit now records its own name's folders (a derived input)."""
    import json

    from sources import fsio
    from uvd_pipeline.unit_manifest import changed_input, input_manifest

    nfd = lambda name: unicodedata.normalize("NFD", name)  # noqa: E731
    root = tmp_path / "views_release"
    for name in ("café", "naïve"):
        _objaverse_object(root / nfd(name))
    source = ObjaverseSource("obj", str(root), views=4)
    memo, manifests = {}, {}
    for unit in source.units():  # one run's memo, as one renderer's units share it
        with fsio.run_memo(memo), fsio.recording_inputs() as recorded:
            assert [type(i).__name__ for i in source.read(unit)] == ["MultiViewRecord"]
        manifests[Path(unit).name] = json.loads(json.dumps(input_manifest(recorded, unit)))
    _objaverse_object(root / "0a1b")  # an unrelated object downloaded since
    with fsio.run_memo({}):
        assert {name: changed_input(m) for name, m in manifests.items()} == {nfd("café"): None, nfd("naïve"): None}
    _objaverse_object(root / unicodedata.normalize("NFC", "naïve"))  # its NFC twin appears: naïve (NFD) is one now
    with fsio.run_memo({}):
        changed = {name: changed_input(m) for name, m in manifests.items()}
        assert changed[nfd("café")] is None and changed[nfd("naïve")] is not None, changed
        assert [i.reason for i in source.read(str(root / nfd("naïve")))] == ["duplicate_key"]


def test_kitti_left_view_png_in_upper_case_is_read_before_a_jpg(tmp_path: Path):
    """rev56h B-2: ranking lower-case extensions above the layout's order of kinds made a frame's
    `x.jpg` win over its `x.PNG` (before, `.png` came before `.jpg` in any case). The kind comes first
    (case-folded), then the spelling KITTI ships (`x.png` over `x.PNG`), then the name."""
    from sources.stereo import twin_rank

    split = tmp_path / "training"
    for folder in ("image_2", "image_3", "disp_noc_0"):
        (split / folder).mkdir(parents=True)
    assert cv2.imwrite(str(split / "disp_noc_0" / "000000_10.png"), np.full((8, 12), 512, np.uint16))
    assert cv2.imwrite(str(split / "image_2" / "000000_10.PNG"), np.full((8, 12, 3), 40, np.uint8))
    assert cv2.imwrite(str(split / "image_2" / "000000_10.jpg"), np.full((8, 12, 3), 200, np.uint8))
    assert cv2.imwrite(str(split / "image_3" / "000000_10.png"), np.full((8, 12, 3), 45, np.uint8))
    items = _read_all(StereoSource("k", str(tmp_path)))
    pairs = [i for i in items if isinstance(i, PairRecord)]
    assert [Path(p.image_uri).name for p in pairs] == ["000000_10.PNG"] * 2
    assert cv2.imread(pairs[0].image_uri)[0, 0].tolist() == [40, 40, 40]
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [
        ("duplicate_key", "training/image_2/000000_10.jpg")]
    names = ["x.jpeg", "x.jpg", "x.JPG", "x.PNG", "x.png", unicodedata.normalize("NFD", "é.png")]
    assert sorted(names, key=twin_rank) == ["x.png", "x.PNG", "x.jpg", "x.JPG", "x.jpeg",
                                            unicodedata.normalize("NFD", "é.png")]


def _refuse(path: Path, how: str, elsewhere: Path) -> None:
    """Make `path` a file no reader may open: a link leading out of the root to a copy of its
    bytes at `elsewhere`, a fifo (opening it would block), or a link to nothing."""
    import os

    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    if how == "link out":
        path.symlink_to(elsewhere)
    elif how == "dangling":
        path.symlink_to(path.parent / "gone.png")
    else:
        os.mkfifo(path)


REFUSED_REASON = {"link out": "outside_root", "fifo": "not_a_file", "dangling": "not_a_file"}


@pytest.mark.parametrize("how", ["link out", "fifo", "dangling"])
def test_objaverse_render_twin_read_where_the_preferred_one_cannot_be(tmp_path: Path, how: str):
    """`001.png` beside its twin `001.PNG`: `.png` comes first (`layout_twin_order`), and where it
    could not be read (a link leading out, a fifo) the whole object was that file's reject, the
    readable `001.PNG` lost with it. The first twin that can be read is read; the other keeps its
    own reason (a link to nothing was called the read file's `duplicate_key`)."""
    root = tmp_path / "views_release"
    _objaverse_object(root / "obj1")
    (root / "obj1" / "001.png").link_to(root / "obj1" / "001.PNG")
    _refuse(root / "obj1" / "001.png", how, tmp_path / "shared" / "001.png")
    items = _read_all(ObjaverseSource("obj", str(root), views=4))
    (record,) = [i for i in items if isinstance(i, MultiViewRecord)]
    assert sorted(Path(u).name for u in record.view_uris) == ["000.png", "001.PNG", "002.png", "003.png"]
    assert [(i.key, i.reason, i.input) for i in items if isinstance(i, Reject)] == [
        ("obj-obj1-001_png_1b56b4f0", REFUSED_REASON[how], "obj1/001.png")]


def _kitti_with_twin(base: Path, folder: str) -> Path:
    """A KITTI frame (left view 40, right view 45, disparity 2.0 px) whose file in `folder` has a
    `.PNG` twin, a copy of its bytes; the split folder."""
    split = base / "kitti" / "training"
    for each in ("image_2", "image_3", "disp_noc_0"):
        (split / each).mkdir(parents=True)
    assert cv2.imwrite(str(split / "image_2" / "000000_10.png"), np.full((8, 12, 3), 40, np.uint8))
    assert cv2.imwrite(str(split / "image_3" / "000000_10.png"), np.full((8, 12, 3), 45, np.uint8))
    assert cv2.imwrite(str(split / "disp_noc_0" / "000000_10.png"), np.full((8, 12), 512, np.uint16))
    (split / folder / "000000_10.PNG").write_bytes((split / folder / "000000_10.png").read_bytes())
    return split


@pytest.mark.parametrize("how", ["link out", "fifo", "dangling"])
def test_kitti_left_view_twin_read_where_the_preferred_one_cannot_be(tmp_path: Path, how: str):
    """`000000_10.png` beside a `000000_10.PNG` copy: the `.png` one was kept by name alone, so
    where it could not be read (a link leading out, a fifo) the frame was its reject and the
    readable `.PNG` a `duplicate_key`: the frame lost. The first twin that can be read is read;
    the other keeps its own reason (a link to nothing was called the read file's `duplicate_key`)."""
    split = _kitti_with_twin(tmp_path, "image_2")
    _refuse(split / "image_2" / "000000_10.png", how, tmp_path / "shared" / "000000_10.png")
    items = _read_all(StereoSource("k", str(tmp_path / "kitti")))
    pairs = [i for i in items if isinstance(i, PairRecord)]
    assert sorted(p.key for p in pairs) == ["k-000000_10-depth", "k-000000_10-stereo"]
    assert {Path(p.image_uri).name for p in pairs} == {"000000_10.PNG"}
    assert cv2.imread(pairs[0].image_uri)[0, 0].tolist() == [40, 40, 40]
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == [
        (REFUSED_REASON[how], "training/image_2/000000_10.png")]


@pytest.mark.parametrize("folder", ["image_3", "disp_noc_0"])
@pytest.mark.parametrize("how", ["link out", "fifo", "dangling"])
def test_kitti_right_view_or_map_twin_read_where_the_preferred_one_cannot_be(tmp_path: Path, folder: str, how: str):
    """A right view's or disparity map's `x.png` that cannot be read beside a readable `x.PNG`: the
    first name there was taken, so the stereo (or depth) pair was that file's reject (a fifo, a
    link leading out) or built from nothing; the pair reads the twin that can be read."""
    split = _kitti_with_twin(tmp_path, folder)
    _refuse(split / folder / "000000_10.png", how, tmp_path / "shared" / "000000_10.png")
    items = _read_all(StereoSource("k", str(tmp_path / "kitti")))
    assert [(i.reason, i.input) for i in items if isinstance(i, Reject)] == []
    pairs = {i.key: i for i in items if isinstance(i, PairRecord)}
    assert sorted(pairs) == ["k-000000_10-depth", "k-000000_10-stereo"]
    right = pairs["k-000000_10-stereo"].annotation["right_uri"]
    disparity = pairs["k-000000_10-depth"].annotation["disparity_uri"]
    assert Path(right if folder == "image_3" else disparity).name == "000000_10.PNG"
    assert cv2.imread(right)[0, 0].tolist() == [45, 45, 45]
    assert cv2.imread(disparity, cv2.IMREAD_UNCHANGED)[0, 0] == 512


_UNPRIVILEGED_KITTI = """
import json, sys
from sources.stereo import StereoSource
source = StereoSource("k", sys.argv[1])
items = [item for unit in source.units() for item in source.read(unit)]
print(json.dumps(sorted([type(i).__name__, i.key, getattr(i, "image_uri", ""), getattr(i, "reason", ""),
                         getattr(i, "input", "")] for i in items)))
"""


def test_kitti_left_view_twin_this_user_may_not_open_leaves_the_other_read(tmp_path: Path):
    """`000000_10.png` of mode 000 beside a readable `000000_10.PNG`: judged by its mode alone
    (stat), the `.png` was read, the frame an `unreadable_file` and the `.PNG` its `duplicate_key`.
    The twin is opened (never read) to judge it. Root ignores file modes (and `os.access` says yes
    to it), so the read runs with root's power over them dropped (`without_root_powers`)."""
    import json
    import subprocess
    import sys

    from conftest import without_root_powers

    split = _kitti_with_twin(tmp_path, "image_2")
    (split / "image_2" / "000000_10.png").chmod(0)
    proc = subprocess.run([*without_root_powers(), sys.executable, "-c", _UNPRIVILEGED_KITTI, str(tmp_path / "kitti")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [
        ["PairRecord", "k-000000_10-depth", str(split / "image_2" / "000000_10.PNG"), "", ""],
        ["PairRecord", "k-000000_10-stereo", str(split / "image_2" / "000000_10.PNG"), "", ""],
        ["Reject", "k-image_2-000000_10_png_cc676385", "", "unreadable_file", "training/image_2/000000_10.png"]]
