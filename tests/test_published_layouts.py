"""Annotated datasets laid out as their publishers ship them, written by the tools that make them
(ImageMagick for images and label maps, gzip'd JSON for CO3D, pycocotools for COCO masks) and
read back through the source readers and renderers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from sources.records import PairRecord, Reject
from sources.segmentation import SegmentationSource


def _magick_grey(path: Path, values: np.ndarray, *options: str) -> None:
    """A grey 8-bit PNG as ImageMagick writes it from raw samples (`convert -depth 8 gray:-`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = values.shape
    subprocess.run(["convert", "-size", f"{w}x{h}", "-depth", "8", "gray:-", *options, str(path)],
                   input=values.astype(np.uint8).tobytes(), check=True)


def _magick_photo(path: Path, colour: str, w: int = 32, h: int = 16) -> None:
    """An image of one colour as ImageMagick encodes it (JPEG or PNG by the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["convert", "-size", f"{w}x{h}", f"xc:{colour}", str(path)], check=True)


def _render_target(record: PairRecord) -> np.ndarray:
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    rendered = render_pair(record, RenderSettings(32, "squash", 0, 10**9, 1, 0, 0.0))
    assert not isinstance(rendered, Reject), rendered
    return decode_png(rendered.images[1])


def _read_all(source) -> list:
    return [i for unit in source.units() for i in source.read(unit)]


def test_nested_ade20k_pairs_of_one_file_name_each_render_their_own_label_map(tmp_path: Path):
    """ADE20K sorted into scene folders (`images/training/indoor/0001.jpg` beside
    `outdoor/0001.jpg`, each with its label map under annotations/ in the same folders): old code
    keyed both pairs `ade-training-0001-segmentation`, so assemble kept one and dropped the other
    as a `duplicate_key`. Each is now keyed by its path below the split, and renders its own map."""
    from transforms.annotations import palette

    base = tmp_path / "ADEChallengeData2016"
    classes = {"indoor": 7, "outdoor": 12, "": 3}
    for folder, value in classes.items():
        stem = f"{folder}/0001" if folder else "0001"
        _magick_photo(base / "images" / "training" / f"{stem}.jpg", "rgb(90,90,90)")
        _magick_grey(base / "annotations" / "training" / f"{stem}.png", np.full((16, 32), value))
    items = _read_all(SegmentationSource("ade", str(tmp_path)))
    assert not [i for i in items if isinstance(i, Reject)]
    keys = [i.key for i in items]
    assert len(set(keys)) == 3, keys
    assert "ade-training-0001-segmentation" in keys  # a flat pair keeps the key it had
    for record in items:
        folder = Path(record.image_uri).parent.name
        value = classes[folder if folder != "training" else ""]
        assert Path(record.annotation["label_uri"]).relative_to(base / "annotations" / "training") == \
            Path(record.image_uri).relative_to(base / "images" / "training").with_suffix(".png")
        assert np.array_equal(_render_target(record), np.broadcast_to(palette()[value], (32, 32, 3)))


def test_cityscapes_pairs_below_their_city_folder_keep_distinct_keys(tmp_path: Path):
    """Cityscapes as released (leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png):
    keys stay the file stem (its city is its first word); a copy with one more folder below the
    city (a re-sorted mirror) no longer gives two frames of one name one key."""
    stems = {("aachen", "aachen_000000_000019"): 7, ("bochum", "bochum_000000_000313"): 8,
             ("zurich/day1", "zurich_000000_000019"): 11, ("zurich/day2", "zurich_000000_000019"): 21}
    for (city, stem), value in stems.items():
        _magick_photo(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", "rgb(20,40,60)")
        _magick_grey(tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", np.full((16, 32), value))
    items = _read_all(SegmentationSource("cs", str(tmp_path), "cityscapes"))
    assert not [i for i in items if isinstance(i, Reject)]
    keys = sorted(i.key for i in items)
    assert len(set(keys)) == 4, keys
    assert keys[:2] == ["cs-train-aachen_000000_000019-segmentation", "cs-train-bochum_000000_000313-segmentation"]
    from transforms.annotations import palette

    for record in items:
        city = str(Path(record.image_uri).parent.relative_to(tmp_path / "leftImg8bit" / "train"))
        stem = Path(record.image_uri).name.removesuffix("_leftImg8bit.png")
        assert np.array_equal(_render_target(record), np.broadcast_to(palette()[stems[city, stem]], (32, 32, 3)))


# -- CO3D v2 as its release writes it ---------------------------------------------------------
def _co3d_release(root: Path, sequences: dict[str, np.ndarray]) -> list[dict]:
    """A CO3D v2 category `toy` as the release lays it out: per sequence its JPEG frames and
    masks (ImageMagick), frame annotations with every field `FrameAnnotation` writes."""
    import test_sources_annotated as annotated

    frames = []
    for sequence, degrees in sequences.items():
        for frame in annotated._co3d_orbit(root, degrees, sequence):
            number = frame["frame_number"]
            stem = f"toy/{sequence}"
            frame["image"]["size"] = [8, 8]
            frame["mask"] = {"path": f"{stem}/masks/frame{number + 1:06d}.png", "mass": 32.0}
            frame["depth"] = {"path": f"{stem}/depths/frame{number + 1:06d}.jpg.geometric.png",
                              "scale_adjustment": 1.0, "mask_path": f"{stem}/depth_masks/frame{number + 1:06d}.png"}
            frame["meta"] = {"frame_type": "train_known"}
            _magick_grey(root / frame["mask"]["path"], np.full((8, 8), 255))
            frames.append(frame)
    return frames


def test_co3d_frame_annotations_left_decompressed_under_their_jgz_name_read_as_json(tmp_path: Path):
    """A frame_annotations.jgz whose gzip was undone under its name (a browser's download sent
    with `Content-Encoding: gzip`, `gunzip -c x.jgz > x.jgz.tmp && mv`) holds the same JSON list:
    it was the whole category's `bad_annotation_file` ('is not a valid gzip stream'). It is read
    as the JSON it is; a file that is neither gzip nor JSON is still refused, and the gzip one
    reads the same."""
    import gzip
    import json

    from sources.multiview import Co3dSource
    from sources.records import MultiViewRecord

    frames = _co3d_release(tmp_path, {"s1": np.arange(8) * 45.0})
    jgz = tmp_path / "toy" / "frame_annotations.jgz"
    source = Co3dSource("co3d", str(tmp_path), views=4, pair_tasks=("segmentation",))
    got = {}
    for kind, data in (("gzip", gzip.compress(json.dumps(frames).encode())), ("plain", json.dumps(frames).encode()),
                       ("plain_indented", json.dumps(frames, indent=2).encode())):
        jgz.write_bytes(data)
        got[kind] = list(source.read(str(tmp_path / "toy")))
    assert isinstance(got["gzip"][0], MultiViewRecord) and len(got["gzip"]) == 9
    assert got["plain"] == got["gzip"] and got["plain_indented"] == got["gzip"]
    jgz.write_bytes(b"<html>502 Bad Gateway</html>")
    (reject,) = list(source.read(str(tmp_path / "toy")))
    assert (reject.reason, reject.detail) == ("bad_annotation_file",
                                               "annotation file toy/frame_annotations.jgz: is not a valid gzip stream")


def test_co3d_plain_json_jgz_after_long_whitespace_or_over_the_cap_is_named_as_plain_json(tmp_path: Path):
    """A decompressed .jgz whose JSON follows 64 bytes of whitespace or more (blank lines a script
    printed first) was refused as 'not a valid gzip stream' (only its first 64 bytes were looked
    at); one over the size cap as 'expands past' it, though nothing was expanded. The first reads
    as its JSON, the second 'is larger than' the cap; a gzip one over the cap still expands past it."""
    import gzip
    import json

    from sources.annotation_files import AnnotationFileError, iter_json_list

    frames = [{"frame_number": i, "image": {"path": f"toy/s1/images/frame{i + 1:06d}.jpg"}} for i in range(40)]
    body = json.dumps(frames).encode()
    jgz = tmp_path / "frame_annotations.jgz"
    for lead in (b"\n" * 70, b"\xef\xbb\xbf" + b"\r\n" * 40, b" " * 200_000):
        jgz.write_bytes(lead + body)
        assert list(iter_json_list(str(jgz), gzipped=True)) == frames, lead[:8]
    limit = len(body) // 2
    jgz.write_bytes(body)
    with pytest.raises(AnnotationFileError, match=f"frame_annotations.jgz: is larger than {limit} bytes"):
        list(iter_json_list(str(jgz), gzipped=True, limit=limit))
    jgz.write_bytes(gzip.compress(body))
    with pytest.raises(AnnotationFileError, match=f"frame_annotations.jgz: expands past {limit} bytes"):
        list(iter_json_list(str(jgz), gzipped=True, limit=limit))


def test_co3d_release_with_frames_missing_a_lone_frame_and_numbers_out_of_order(tmp_path: Path):
    """A CO3D v2 category as released, gzip'd JSON written as `dump_dataclass_jgzip` does, with what
    partial downloads and other tools leave: frame numbers out of capture order (a re-exported
    file), a listed frame whose JPEG is not on disk, a sequence of one frame. Each frame's pair
    keeps its own frame number and mask, the sentence orders views by azimuth whatever the
    numbers, the lost frame is named, and the lone frame is a whole pair."""
    import gzip
    import json

    from sources.multiview import Co3dSource
    from sources.records import MultiViewRecord

    frames = _co3d_release(tmp_path, {"s1": np.arange(8) * 45.0, "s2": np.array([30.0])})
    numbers = [5, 0, 7, 2, 6, 1, 4, 3]  # s1's frames, in capture (azimuth) order
    for frame, number in zip(frames[:8], numbers):
        frame["frame_number"] = number
    (tmp_path / frames[3]["image"]["path"]).unlink()  # number 2, at 135 degrees
    order = np.random.default_rng(1).permutation(len(frames))
    with gzip.GzipFile(tmp_path / "toy" / "frame_annotations.jgz", "wb") as out:
        out.write(json.dumps([frames[i] for i in order]).encode())
    items = list(Co3dSource("co3d", str(tmp_path), views=4, pair_tasks=("segmentation",)).read(str(tmp_path / "toy")))
    rejects = sorted((i.key, i.reason, i.detail) for i in items if isinstance(i, Reject))
    assert rejects == [("co3d-toy-s1-missing", "missing_frames", "1 annotated frames have no image file: frame000004.jpg"),
                       ("co3d-toy-s2", "too_few_views", "1 frames < 4")]
    (record,) = [i for i in items if isinstance(i, MultiViewRecord)]
    azimuth_of = {number: 45.0 * index for index, number in enumerate(numbers)}
    walked = [azimuth_of[n] for n in record.lineage["frame_numbers"]]
    assert np.allclose((np.array(walked) - walked[0]) % 360, record.azimuths_deg, atol=0.01)
    assert list(record.azimuths_deg) == sorted(record.azimuths_deg) and 2 not in record.lineage["frame_numbers"]
    pairs = {i.key: i for i in items if isinstance(i, PairRecord)}
    assert sorted(pairs) == sorted([f"co3d-toy-s1-f{n:06d}-segmentation" for n in numbers if n != 2] +
                                   ["co3d-toy-s2-f000000-segmentation"])
    for key, pair in pairs.items():
        assert Path(pair.annotation["mask_uri"]).name == Path(pair.image_uri).name.replace(".jpg", ".png")


def _magick_label_maps(folder: Path, labels: np.ndarray) -> dict[str, Path]:
    """One grey label map and its palette re-saves as ImageMagick writes them: `PNG8:` and
    `-type Palette -define png:color-type=3` (bare `-type Palette` keeps a grey PNG), each a
    palette in the order colours first appear, so its indices are not the classes."""
    grey = folder / "grey.png"
    _magick_grey(grey, labels)
    made = {"grey": grey, "png8": folder / "png8.png", "color_type_3": folder / "ct3.png"}
    subprocess.run(["convert", str(grey), f"PNG8:{made['png8']}"], check=True)
    subprocess.run(["convert", str(grey), "-type", "Palette", "-define", "png:color-type=3", str(made["color_type_3"])],
                   check=True)
    return made


def test_label_map_resaved_as_a_grey_palette_by_imagemagick_keeps_its_classes(tmp_path: Path):
    """`convert label.png PNG8:label.png` writes a palette whose entries are the map's greys in
    the order they first appear (0, 150, 3, 255, 12 here), and no other entry: old code read the
    indices (0..4), as Pillow and mmseg do, so ADE20K class 150 became class 1. A palette grey in
    every entry, one grey to each used entry, is read as its greys, as every viewer shows the file
    and as a grey map stored as RGB was already read; a palette with any colour in it is read as
    indices (`test_colour_palette_whose_pixels_use_only_its_grey_entries_reads_its_indices`)."""
    from PIL import Image

    from transforms.maps import decode_label_map

    labels = np.zeros((16, 32), np.uint8)
    labels[:, 8:], labels[:, 16:], labels[:, 24:], labels[8:, :4] = 150, 3, 255, 12
    made = _magick_label_maps(tmp_path, labels)
    for kind, path in made.items():
        with Image.open(path) as image:
            assert (image.mode == "P") == (kind != "grey"), kind
            if kind != "grey":
                assert not np.array_equal(np.asarray(image), labels)  # the indices are not the classes
        # as ImageMagick itself reads the file back: `-type Palette` dithers, so its re-save is
        # not always the map it was given (2 of 512 pixels of class 3 came back 0 in 6.9.11)
        shown = subprocess.run(["convert", str(path), "-depth", "8", "gray:-"], capture_output=True, check=True).stdout
        assert np.array_equal(decode_label_map(path.read_bytes()), np.frombuffer(shown, np.uint8).reshape(labels.shape))
        if kind != "color_type_3":
            assert np.array_equal(decode_label_map(path.read_bytes()), labels), kind
    voc = Image.fromarray(np.where(labels == 255, 4, labels % 5).astype(np.uint8), "P")
    voc.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 224, 224, 192])
    voc.save(tmp_path / "voc.png")
    assert np.array_equal(decode_label_map((tmp_path / "voc.png").read_bytes()), np.asarray(voc))
    indices = (labels == 150) + 2 * (labels == 3)  # 0, 1 and 2 used; 0 and 1 of one grey: no grey map's re-save
    shared = Image.fromarray(indices.astype(np.uint8), "P")
    shared.putpalette([9, 9, 9, 9, 9, 9, 40, 40, 40])
    shared.save(tmp_path / "shared.png")
    assert np.array_equal(decode_label_map((tmp_path / "shared.png").read_bytes()), indices)


# ADE20K's usual colour palette: 0 ('other') black, then mmseg's ADE20KDataset PALETTE (its first
# entries: wall (1) and windowpane (9) grey, the rest of its 150 colours are not)
ADE_COLOUR_PALETTE_HEAD = [0, 0, 0, 120, 120, 120, 180, 120, 120, 6, 230, 230, 80, 50, 50, 4, 200, 3,
                           120, 120, 80, 140, 140, 140, 204, 5, 255, 230, 230, 230, 4, 250, 7]


@pytest.mark.parametrize("case", ["voc_car_and_background", "voc_car_only", "ade_wall_and_window"])
def test_colour_palette_whose_pixels_use_only_its_grey_entries_reads_its_indices(tmp_path: Path, case: str):
    """PASCAL VOC's colour map (VOCdevkit's labelcolormap, 256 entries, as SegmentationClass PNGs
    carry it) holds greys too: 0 background, 7 car (128, 128, 128), 56 and 63. A mask of only
    a car and background (no void border: a crop, a re-save) used only grey entries, so it was
    read as a grey map's re-save and car became class 128; so did ADE20K's colour palette (wall
    120, windowpane 230). A palette with any colour in it is read as its indices, as Pillow and
    mmseg read it; a grey map quantized by Pillow (which writes only its greys) still reads greys."""
    from PIL import Image
    from test_sources_annotated import _voc_colormap

    from transforms.maps import decode_label_map

    indices = {"voc_car_and_background": np.where(np.arange(32) < 20, 7, 0),
               "voc_car_only": np.full(32, 7), "ade_wall_and_window": np.array([0, 1, 9, 1] * 8)}[case]
    indices = np.tile(indices, (16, 1)).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(ADE_COLOUR_PALETTE_HEAD if case.startswith("ade") else _voc_colormap())
    image.save(tmp_path / "label.png")
    with Image.open(tmp_path / "label.png") as written:  # as Pillow (and so mmseg) reads it back
        assert written.mode == "P" and np.array_equal(np.asarray(written), indices)
        colours = np.asarray(written.getpalette()).reshape(-1, 3)[np.unique(indices)]
        assert (colours == colours[:, :1]).all()  # every used entry grey, as the old test asked
    assert np.array_equal(decode_label_map((tmp_path / "label.png").read_bytes()), indices)
    greys = np.tile(np.array([0, 150, 3, 255, 12, 12, 3, 0] * 4, np.uint8), (16, 1))
    Image.fromarray(greys).quantize().save(tmp_path / "quantized.png")
    with Image.open(tmp_path / "quantized.png") as quantized:
        assert quantized.mode == "P" and not np.array_equal(np.asarray(quantized), greys)
    assert np.array_equal(decode_label_map((tmp_path / "quantized.png").read_bytes()), greys)


def test_ade20k_pair_whose_label_map_imagemagick_resaved_as_a_palette_renders_its_classes(tmp_path: Path):
    """The same through the ADE20K reader and renderer: the target draws classes 3, 12 and 150
    (and 255, the void mark, as unlabelled), not the palette's indices 0..4."""
    from transforms.annotations import palette

    labels = np.zeros((32, 32), np.uint8)
    labels[:, 8:], labels[:, 16:], labels[:, 24:], labels[16:, :4] = 150, 3, 255, 12
    base = tmp_path / "ADEChallengeData2016"
    made = _magick_label_maps(tmp_path / "made", labels)
    _magick_photo(base / "images" / "training" / "ADE_train_00000001.jpg", "rgb(90,90,90)", 32, 32)
    (base / "annotations" / "training").mkdir(parents=True)
    made["png8"].rename(base / "annotations" / "training" / "ADE_train_00000001.png")
    (record,) = _read_all(SegmentationSource("ade", str(tmp_path)))
    assert np.array_equal(_render_target(record), palette()[np.where(labels == 255, 0, labels)])


# -- COCO as released: val2017/ and annotations/{instances,person_keypoints}_val2017.json --------
COCO_PERSON = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle"]


def test_coco_val2017_as_released_matches_pycocotools(tmp_path: Path):
    """COCO 2017 as its zips unpack: JPEGs in val2017/, instances and person_keypoints files that
    both list every image and repeat each person (one annotation id in both), crowd people as
    uncompressed RLE (`iscrowd: 1`), category ids with gaps (1, 18, 90), an image without
    objects, an object whose image id no entry has, keypoints of v 0, 1 and 2. Each image's
    segmentation target is pycocotools' `annToMask` of its objects (each id once) under every
    resize policy; what has nothing to draw, or no image, is counted."""
    import contextlib
    import io
    import json

    from PIL import Image
    from pycocotools.coco import COCO

    import test_coco_exports as coco_tests
    from sources.coco import CocoSource, load_index
    from transforms.annotations import colourize_labels
    from transforms.resize import plan_resize

    w, h = coco_tests.W, coco_tests.H
    (tmp_path / "annotations").mkdir()
    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": "", "height": h, "width": w,
               "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": i} for i in (139, 285, 632, 724)]
    for image in images:
        pixels = np.random.default_rng(image["id"]).integers(0, 255, (h, w, 3), dtype=np.uint8)
        (tmp_path / "val2017").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "val2017" / image["file_name"], quality=90)
    crowd = np.zeros((h, w), bool)
    crowd[5:40, 30:70] = True
    crowd_person = {"segmentation": coco_tests.fortran_rle(crowd, False), "area": float(crowd.sum()), "iscrowd": 1,
                    "image_id": 139, "bbox": [30, 5, 40, 35], "category_id": 1, "id": 900100139}
    person = {"segmentation": [[20, 10, 40, 10, 40, 55, 20, 55]], "area": 900.0, "iscrowd": 0, "image_id": 724,
              "bbox": [20, 10, 20, 45], "category_id": 1, "id": 10}
    keypoints = [30, 20, 2, 32, 18, 1, 5, 5, 0] + [0] * 42
    categories = [{"supercategory": "person", "id": 1, "name": "person", "keypoints": COCO_PERSON,
                   "skeleton": coco_tests.COCO_SKELETON},
                  {"supercategory": "animal", "id": 18, "name": "dog"},
                  {"supercategory": "indoor", "id": 90, "name": "toothbrush"}]
    instances = [{"segmentation": [[10, 10, 40, 10, 40, 50, 10, 50]], "area": 1200.0, "iscrowd": 0, "image_id": 139,
                  "bbox": [10, 10, 30, 40], "category_id": 18, "id": 1}, crowd_person, person,
                 {"segmentation": [[50, 20, 70, 20, 60, 55]], "area": 350.0, "iscrowd": 0, "image_id": 285,
                  "bbox": [50, 20, 20, 35], "category_id": 90, "id": 2},
                 {"segmentation": [[1, 1, 5, 1, 5, 5]], "area": 8.0, "iscrowd": 0, "image_id": 999,
                  "bbox": [1, 1, 4, 4], "category_id": 90, "id": 3}]
    people = [{**person, "num_keypoints": 2, "keypoints": keypoints},
              {**crowd_person, "num_keypoints": 0, "keypoints": [0] * 51}]
    info = {"description": "COCO 2017 Dataset", "version": "1.0", "year": 2017}
    files = {"instances_val2017.json": (instances, categories), "person_keypoints_val2017.json": (people, categories[:1])}
    for name, (annotations, cats) in files.items():
        (tmp_path / "annotations" / name).write_text(json.dumps(
            {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": cats}))
    load_index.cache_clear()
    source = CocoSource("coco", str(tmp_path), tuple(f"annotations/{name}" for name in files), "val2017")
    items = {i.key: i for unit in source.units() for i in source.read(unit)}
    assert {k: (i.stage, i.reason) for k, i in items.items() if isinstance(i, Reject)} == {
        "coco-139-pose": ("read", "no_pose_annotations"), "coco-285-pose": ("read", "no_pose_annotations"),
        **{f"coco-632-{t}": ("read", f"no_{t}_annotations") for t in ("detection", "segmentation", "pose")},
        **{f"coco-999-{t}": ("read", "bad_annotation") for t in ("detection", "segmentation")}}  # a box, no person
    assert items["coco-139-detection"].lineage["crowd_regions_left_out"] == 1  # once, though in both files
    objects = {}
    for name in files:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(tmp_path / "annotations" / name))
        objects.update({a["id"]: (coco, a) for a in coco.dataset["annotations"] if a["image_id"] in coco.imgs})
    for image_id in (139, 285, 724):
        masks = [(coco.annToMask(a).astype(bool), a["category_id"]) for coco, a in objects.values()
                 if a["image_id"] == image_id]
        labels = np.zeros((h, w), np.int32)
        for mask, category in sorted(masks, key=lambda m: -int(m[0].sum())):
            labels[mask] = category
        for policy in coco_tests.POLICIES:
            _, target = coco_tests.rendered(items[f"coco-{image_id}-segmentation"], policy)
            expected = colourize_labels(plan_resize(h, w, 64, policy).apply_image(labels, nearest=True))
            assert np.array_equal(target, expected), (image_id, policy)
    _, pose = coco_tests.rendered(items["coco-724-pose"])
    assert pose.any()


# -- the full ADE20K release (ADE20K_2021_17_01, ADE20K_2016_07_26) ----------------------------
def _ade_full_seg(path: Path, classes: np.ndarray) -> None:
    """A `_seg.png` as the release codes it (its utils_ade20k.loadAde20K reads class =
    R / 10 * 256 + G): R = class // 256 * 10, G = class % 256, B the instance mask."""
    from PIL import Image

    seg = np.zeros((*classes.shape, 3), np.uint8)
    seg[..., 0], seg[..., 1] = classes // 256 * 10, classes % 256
    seg[..., 2] = np.where(classes > 0, 7, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(seg).save(path)


def _ade_full_release(root: Path, version: str) -> tuple[Path, dict[str, np.ndarray]]:
    """The release's tree: images/ADE/<split>/<scene group>/<scene>/ (2021) or images/<split>/<letter>/<scene>/
    (2016), each JPEG with its `_seg.png`, a `_parts_1.png` and (2021) a `.json` beside it, its index at the top."""
    top = root / f"ADE20K_{version}"
    images = top / ("images/ADE" if version == "2021_17_01" else "images")
    scenes = {"training": ("home_or_hotel/bathroom", "cultural/abbey"), "validation": ("urban/street",)}
    made = {}
    for split, folders in scenes.items():
        for number, folder in enumerate(folders, 1):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{number:08d}"
            classes = np.zeros((24, 32), np.int64)
            classes[:, 10:], classes[12:, 20:] = 2978, 165 + number  # 2978 (wall) needs R: over 255
            _magick_photo(images / split / folder / f"{name}.jpg", "rgb(90,120,150)", 32, 24)
            _ade_full_seg(images / split / folder / f"{name}_seg.png", classes)
            _ade_full_seg(images / split / folder / f"{name}_parts_1.png", classes // 3)
            if version == "2021_17_01":
                (images / split / folder / f"{name}.json").write_text('{"annotation": {}}')
            made[f"{split}/{folder}/{name}"] = classes
    (top / ("index_ade20k.pkl" if version == "2021_17_01" else "index_ade20k.mat")).write_bytes(b"\0")
    return top, made


@pytest.mark.parametrize("version", ["2021_17_01", "2016_07_26"])
def test_full_ade20k_release_renders_the_classes_its_seg_png_codes(tmp_path: Path, version: str):
    """`layout: ade20k_full` reads the full release (which `ade20k` refuses): each JPEG of
    images/ADE/<split>/.../ with the `_seg.png` beside it, class = R / 10 * 256 + G (3000+
    classes), drawn through the one palette; `_parts_N.png`, `.json` and the index are not read.
    A `_seg.png` without its image is `missing_image`, an image without one `missing_annotation`."""
    from transforms.annotations import palette
    from transforms.resize import plan_resize

    top, made = _ade_full_release(tmp_path, version)
    images = top / ("images/ADE" if version == "2021_17_01" else "images")
    _magick_photo(images / "training/cultural/abbey/ADE_train_00000009.jpg", "white")  # its _seg.png not there
    _ade_full_seg(images / "validation/urban/street/ADE_val_00000009_seg.png", np.ones((24, 32), np.int64))
    for path in (top, images):
        items = _read_all(SegmentationSource("ade", str(path), "ade20k_full"))
        pairs = [i for i in items if isinstance(i, PairRecord)]
        rejects = sorted((i.reason, i.split_hint, i.detail) for i in items if isinstance(i, Reject))
        assert rejects == [("missing_annotation", "train", "no label map ADE_train_00000009_seg.png"),
                           ("missing_image", "val", "label map 'urban/street/ADE_val_00000009_seg.png' has no image in "
                            f"{images.relative_to(path) / 'validation' if path == top else 'validation'}/")], rejects
        assert len(pairs) == len(made) == len({p.key for p in pairs})
        for pair in pairs:
            name = str(Path(pair.image_uri).relative_to(images).with_suffix(""))
            assert pair.split_hint == ("train" if name.startswith("training/") else "val")
            assert pair.annotation["label_uri"] == pair.image_uri.removesuffix(".jpg") + "_seg.png"
            fitted = plan_resize(24, 32, 32, "squash").apply_image(made[name], nearest=True)
            assert np.array_equal(_render_target(pair), palette()[fitted])


def test_full_ade20k_release_is_listed_through_the_config(tmp_path: Path):
    """The config takes `layout: ade20k_full` and lists its units; `ade20k` on the same tree
    still refuses it, now naming the layout that reads it."""
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    top, made = _ade_full_release(tmp_path, "2021_17_01")
    for layout in ("ade20k_full", "ade20k"):
        config = parse_config({"output": str(tmp_path / "out"),
                               "sources": [{"name": "s", "type": "segmentation", "path": str(top), "layout": layout}]})
        if layout == "ade20k":
            with pytest.raises(ConfigError, match="set `layout: ade20k_full` to read it"):
                list_units(config)
        else:
            assert list_units(config)


def test_lineage_of_released_layouts_is_unchanged_and_nested_pairs_name_their_folders(tmp_path: Path):
    """Lineage reaches every sentence header: Cityscapes as released and flat ADE20K keep the
    `<split>/<file name>` they had (their output bytes unchanged); a nested pair names its folders."""
    _magick_photo(tmp_path / "cs/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png", "red")
    _magick_grey(tmp_path / "cs/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png", np.full((16, 32), 7))
    (pair,) = _read_all(SegmentationSource("cs", str(tmp_path / "cs"), "cityscapes"))
    assert pair.lineage == {"file": "train/aachen_000000_000019_leftImg8bit.png"}
    base = tmp_path / "ade/ADEChallengeData2016"
    for stem in ("ADE_train_00000001", "indoor/0001"):
        _magick_photo(base / f"images/training/{stem}.jpg", "red")
        _magick_grey(base / f"annotations/training/{stem}.png", np.full((16, 32), 7))
    files = sorted(i.lineage["file"] for i in _read_all(SegmentationSource("ade", str(tmp_path / "ade"))))
    assert files == ["training/ADE_train_00000001.jpg", "training/indoor/0001.jpg"]


def test_full_ade20k_seg_png_that_is_not_rgb_is_a_counted_bad_label_map(tmp_path: Path):
    """A `_seg.png` re-saved grey (a SceneParsing-style map put beside the image) codes no class
    in R and G: its pair is one `bad_label_map` reject at rendering, never drawn as ids."""
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    top, _ = _ade_full_release(tmp_path, "2021_17_01")
    seg = top / "images/ADE/validation/urban/street/ADE_val_00000001_seg.png"
    _magick_grey(seg, np.full((24, 32), 12))
    (pair,) = [i for i in _read_all(SegmentationSource("ade", str(top), "ade20k_full"))
               if i.image_uri.endswith("ADE_val_00000001.jpg")]
    rejected = render_pair(pair, RenderSettings(32, "squash", 0, 10**9, 1, 0, 0.0))
    assert isinstance(rejected, Reject) and (rejected.stage, rejected.reason) == ("annotation", "bad_label_map")


@pytest.mark.parametrize("version", ["2021_17_01", "2016_07_26"])
def test_full_ade20k_release_given_its_images_folder_reads_as_from_its_top(tmp_path: Path, version: str):
    """docs/layouts.md lets `path` be the release's `images` folder: 2021's (images/ADE/<split>/)
    was refused ('no images/ADE under .../images'); it now reads the pairs its top reads."""
    top, made = _ade_full_release(tmp_path, version)
    from_top = sorted((i.key, i.image_uri) for i in _read_all(SegmentationSource("ade", str(top), "ade20k_full")))
    from_images = sorted((i.key, i.image_uri)
                         for i in _read_all(SegmentationSource("ade", str(top / "images"), "ade20k_full")))
    assert len(from_top) == len(made) and from_images == from_top


def test_full_ade20k_release_reads_only_its_training_and_validation_folders(tmp_path: Path):
    """The full release has training/ and validation/ only; a test/ (or Cityscapes' demoVideo/,
    train_extra/) folder beside them, JPEGs and `_seg.png` in it, is not read: before 2fd3f51 it
    was listed too, and its images read as pairs (counted in val, demoVideo's and test's)."""
    top, made = _ade_full_release(tmp_path, "2021_17_01")
    for folder in ("test", "demoVideo", "train_extra"):
        _magick_photo(top / f"images/ADE/{folder}/urban/street/ADE_test_00000001.jpg", "white", 32, 24)
        _ade_full_seg(top / f"images/ADE/{folder}/urban/street/ADE_test_00000001_seg.png", np.ones((24, 32), np.int64))
    items = _read_all(SegmentationSource("ade", str(top), "ade20k_full"))
    assert all(isinstance(i, PairRecord) for i in items), [(i.reason, i.detail) for i in items if isinstance(i, Reject)]
    assert sorted(i.lineage["file"] for i in items) == sorted(f"{name}.jpg" for name in made)


def test_full_ade20k_orphan_seg_png_in_upper_case_is_one_missing_image(tmp_path: Path):
    """A `_seg.PNG` without its image (a copy through a tool that upper-cases suffixes) was listed
    as an orphan label map (that listing ignores case) but then read as an image, named by a
    second, phantom label map: `missing_annotation` 'no label map ADE_train_00000003_seg_seg.png'.
    It is one `missing_image` reject, keyed as its image would be."""
    top, made = _ade_full_release(tmp_path, "2021_17_01")
    _ade_full_seg(top / "images/ADE/training/cultural/abbey/ADE_train_00000003_seg.PNG", np.ones((24, 32), np.int64))
    items = _read_all(SegmentationSource("ade", str(top), "ade20k_full"))
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert (reject.reason, reject.detail) == ("missing_image", "label map 'cultural/abbey/ADE_train_00000003_seg.PNG' "
                                                               "has no image in images/ADE/training/")
    assert "ADE_train_00000003_" in reject.key and "_seg" not in reject.key, reject.key
    assert len(items) == len(made) + 1


def _scene_parsing_benchmark(root: Path) -> Path:
    """ADEChallengeData2016 as ADEChallengeData2016.zip extracts: images/ and annotations/ of
    class indices, no `_seg.png` anywhere."""
    base = root / "ADEChallengeData2016"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        _magick_photo(base / "images" / split / f"{stem}.jpg", "rgb(90,90,90)")
        _magick_grey(base / "annotations" / split / f"{stem}.png", np.full((16, 32), 5))
    return base


def test_scene_parsing_benchmark_given_as_ade20k_full_fails_check_naming_ade20k(tmp_path: Path):
    """`layout: ade20k_full` given ADEChallengeData2016 passed `check`, and every image was a
    `missing_annotation` reject (no `_seg.png` beside it): 0 pairs. `check` now refuses it,
    naming `layout: ade20k` (the opposite mistake was already refused), from the benchmark's
    folder, its parent or its images/ folder; `ade20k` reads it."""
    from sources.paths import ConfiguredPathMissing
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    base = _scene_parsing_benchmark(tmp_path)
    for path in (tmp_path, base, base / "images"):
        with pytest.raises(ConfiguredPathMissing, match=r"holds the SceneParsing benchmark.* set `layout: ade20k`"):
            SegmentationSource("ade", str(path), "ade20k_full").units()
    config = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "segmentation", "path": str(base), "layout": "ade20k_full"}]})
    with pytest.raises(ConfigError, match="layout"):
        list_units(config)
    assert all(isinstance(i, PairRecord) for i in _read_all(SegmentationSource("ade", str(base)))) and \
        len(_read_all(SegmentationSource("ade", str(base)))) == 2
