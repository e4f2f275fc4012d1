"""PASCAL VOC as VOCdevkit unpacks it (`type: segmentation`, `layout: voc`), on a small tree of
real photographs (scikit-image's bundled ones, JPEG-encoded by Pillow) and SegmentationClass
palette PNGs carrying VOCdevkit's colour map, read back with Pillow and OpenCV."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sources.records import PairRecord, Reject
from sources.segmentation import SegmentationSource
from test_sources_annotated import _voc_colormap  # VOCdevkit's labelcolormap(256)

SIZE = (64, 64)  # h, w: square, so the squash policy draws the map as it is


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    image = np.stack([image] * 3, axis=2) if image.ndim == 2 else image[..., :3]
    return cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_AREA)


def _labels(cls: int, seed: int) -> np.ndarray:
    """An object of class `cls` ringed by VOC's void border (255) on background (0)."""
    labels = np.zeros(SIZE, np.uint8)
    top = 8 + seed * 2
    labels[top - 2: top + 22, 10: 40] = 255
    labels[top: top + 20, 12: 38] = cls
    return labels


def _write_voc(root: Path, pairs: dict[str, tuple[str, int]], lists: dict[str, list[str]],
               extra_images: tuple[str, ...] = (), extra_labels: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 with JPEGImages/<id>.jpg, SegmentationClass/<id>.png (mode P, VOC's colour
    map), SegmentationObject/<id>.png and ImageSets/Segmentation/<list>.txt; returns each id's labels."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation", "Annotations"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    made = {}
    for n, (image_id, (photo, cls)) in enumerate(pairs.items()):
        if image_id not in extra_labels:
            Image.fromarray(_photo(photo)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        labels = made[image_id] = _labels(cls, n)
        if image_id in extra_images:
            continue
        label = Image.fromarray(labels, "P")
        label.putpalette(_voc_colormap())
        label.save(voc / "SegmentationClass" / f"{image_id}.png")
        objects = Image.fromarray(np.where(labels == cls, 1, labels).astype(np.uint8), "P")
        objects.putpalette(_voc_colormap())
        objects.save(voc / "SegmentationObject" / f"{image_id}.png")
    for name, ids in lists.items():
        (voc / "ImageSets" / "Segmentation" / name).write_text("".join(f"{i}\n" for i in ids))
    return made


def _render_target(record: PairRecord) -> np.ndarray:
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    rendered = render_pair(record, RenderSettings(SIZE[1], "squash", 0, 10**9, 1, 0, 0.0))
    assert not isinstance(rendered, Reject), rendered
    return decode_png(rendered.images[1])


def _read_all(source) -> list:
    return [i for unit in source.units() for i in source.read(unit)]


PAIRS = {"2007_000032": ("astronaut", 1), "2007_000039": ("coffee", 15), "2007_000063": ("chelsea", 8),
         "2008_000008": ("rocket", 7), "2011_003271": ("camera", 20)}


def test_voc2012_segmentation_pairs_follow_its_lists_and_draw_palette_indices(tmp_path: Path):
    """Old code had no VOC layout (`layout: voc` failed the config; `ade20k` on VOCdevkit failed
    `check`). Each listed id is one pair in its list's split; its target draws the class indices
    of the palette PNG (never its colours: VOC's aeroplane, 1, is (128, 0, 0) there, its car, 7,
    grey (128, 128, 128)) with the 255 void border unlabelled; an id listed in train and val is
    read once, in val; JPEGImages' images no list names (the detection set) are not read."""
    from transforms.annotations import palette

    made = _write_voc(tmp_path, PAIRS, {"train.txt": ["2007_000032", "2007_000039", "2011_003271"],
                                        "val.txt": ["2007_000063", "2008_000008", "2011_003271"],
                                        "trainval.txt": list(PAIRS)})
    Image.fromarray(_photo("moon")).save(
        tmp_path / "VOCdevkit/VOC2012/JPEGImages/2012_004331.jpg")  # detection only: no list names it
    label_file = tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2008_000008.png"
    with Image.open(label_file) as written:  # read back independently: the indices Pillow reads
        assert written.mode == "P" and np.array_equal(np.asarray(written), made["2008_000008"])
        assert written.getpalette()[7 * 3: 8 * 3] == [128, 128, 128]
    colours = cv2.imread(str(label_file), cv2.IMREAD_UNCHANGED)  # OpenCV expands the palette: colours
    assert colours.ndim == 3 and tuple(colours[20, 20]) == (128, 128, 128) and tuple(colours[0, 0]) == (0, 0, 0)
    assert tuple(colours[made["2008_000008"] == 255][0]) == (192, 224, 224)  # VOC's void, BGR
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    assert not [i for i in items if isinstance(i, Reject)], items
    splits = {i.key: i.split_hint for i in items}
    assert splits == {"voc-2007_000032-segmentation": "train", "voc-2007_000039-segmentation": "train",
                      "voc-2007_000063-segmentation": "val", "voc-2008_000008-segmentation": "val",
                      "voc-2011_003271-segmentation": "val"}
    for record in items:
        labels = made[record.key.split("-")[1]]
        assert np.array_equal(_render_target(record), palette()[np.where(labels == 255, 0, labels)])
    # the same from VOCdevkit/ and from VOC2012/ itself
    for path in (tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        assert sorted(i.key for i in _read_all(SegmentationSource("voc", str(path), "voc"))) == sorted(splits)


def test_voc_listed_ids_with_files_gone_and_unlisted_maps_are_counted(tmp_path: Path):
    """A tar extracted in part, and lists edited by hand: an id whose JPEG is gone is
    `missing_image`, one whose class map is gone `missing_annotation`, a line that is no id (a
    path, two words) `bad_split_list` naming it (the list's other ids are read), a class map no
    list names `unlisted_label_map`; test.txt's ids without their map (labels withheld)
    `unlabeled_split` in val;
    a Mac's `._x.png` among the maps `os_metadata`."""
    _write_voc(tmp_path, PAIRS, {"train.txt": ["2007_000032", "2007_000039", "../../etc/passwd", "2099_000001"],
                                 "val.txt": ["2007_000063"], "test.txt": ["2008_000008"]},
               extra_images=("2007_000039",))
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages" / "2007_000032.jpg").unlink()
    (voc / "SegmentationClass" / "2008_000008.png").unlink()  # VOC2012test.tar: no maps
    (voc / "SegmentationClass" / "._2011_003271.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    rejects = {(r.input, r.reason, r.split_hint) for r in items if isinstance(r, Reject)}
    at = "VOCdevkit/VOC2012/"
    assert rejects == {
        (at + "JPEGImages/2007_000032.jpg", "missing_image", "train"),
        (at + "JPEGImages/2007_000039.jpg", "missing_annotation", "train"),
        (at + "JPEGImages/2099_000001.jpg", "missing_image", "train"),
        (at + "ImageSets/Segmentation/train.txt", "bad_split_list", None),
        (at + "JPEGImages/2008_000008.jpg", "unlabeled_split", "val"),
        (at + "SegmentationClass/2011_003271.png", "unlisted_label_map", None),
        (at + "SegmentationClass/._2011_003271.png", "os_metadata", None),
    }
    by_reason = {r.reason: r for r in items if isinstance(r, Reject)}
    assert "line 3: '../../etc/passwd'" in by_reason["bad_split_list"].detail
    assert "no label map SegmentationClass/2007_000039.png" in by_reason["missing_annotation"].detail
    assert [i.key for i in items if isinstance(i, PairRecord)] == ["voc-2007_000063-segmentation"]
    assert Counter(r.reason for r in items if isinstance(r, Reject))["missing_image"] == 2


def test_voc_layout_through_the_config_and_check(tmp_path: Path):
    """`layout: voc` is a config value; a VOC tree without its lists (or without SegmentationClass,
    the detection-only VOC2007 test tar) fails `check` naming `layout`, and two VOC sets under
    one VOCdevkit name both."""
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    def units(path: Path):
        return list_units(parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "s", "type": "segmentation", "path": str(path), "layout": "voc"}]}))

    _write_voc(tmp_path / "data", PAIRS, {"val.txt": list(PAIRS)})
    assert units(tmp_path / "data")
    lists = tmp_path / "data/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    lists.rename(lists.with_name("trainval_aug.txt"))
    with pytest.raises(ConfigError) as info:
        units(tmp_path / "data")
    assert "sources[0].layout (s)" in str(info.value) and "train.txt" in str(info.value)
    assert "trainval_aug.txt" in str(info.value)
    lists.with_name("trainval_aug.txt").rename(lists)
    (tmp_path / "data/VOCdevkit/VOC2007/JPEGImages").mkdir(parents=True)
    with pytest.raises(ConfigError, match="several VOC sets \\(VOC2007, VOC2012\\)"):
        units(tmp_path / "data")


def test_voc_build_end_to_end_counts_every_listed_id(tmp_path: Path, tiny_tokenizer: Path):
    """The build reads `layout: voc` through its units: each listed id is a sentence member or a
    reject in summary.json, and the sentences' targets are the palette indices' colours."""
    import json

    import yaml

    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config
    from uvd_pipeline.render import decode_png
    from uvd_pipeline.rendered_shards import iter_shard
    from transforms.annotations import palette

    made = _write_voc(tmp_path / "data", PAIRS, {"train.txt": list(PAIRS)[:3], "val.txt": list(PAIRS)[3:],
                                                 "test.txt": ["2012_000001"]})
    (tmp_path / "data/VOCdevkit/VOC2012/JPEGImages/2007_000039.jpg").unlink()
    voc_root = tmp_path / "data/VOCdevkit/VOC2012"
    (voc_root / "ImageSets/Main").mkdir()
    (voc_root / "ImageSets/Main/val.txt").write_text("2008_000008\n2011_003271\n")
    boxes = {"2008_000008": [("car", (5, 6, 30, 40), 0)], "2011_003271": [("tvmonitor", (20, 10, 60, 50), 1)]}
    for image_id, objects in boxes.items():
        _voc_xml(voc_root / "Annotations" / f"{image_id}.xml", image_id, objects)
    config = {"output": str(tmp_path / "out"), "image": {"size": 64}, "split": {"val_fraction": 0.0},
              "sources": [{"name": "voc", "type": "segmentation", "layout": "voc", "path": str(tmp_path / "data"),
                           "tasks": ["segmentation", "detection"],
                           "num_shards": 1, "pairs_per_sentence": 2, "remainder": "wrap"}],
              "tokenizer": {"checkpoint": str(tiny_tokenizer), "batch_size": 8, "compile": False},
              "beam": {"direct_num_workers": 1, "direct_running_mode": "in_memory"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(str(tmp_path / "c.yaml")))
    voc = json.loads((tmp_path / "out" / "summary.json").read_text())["sources"]["voc"]
    assert voc["rejects_by_reason"] == {"missing_image": 1, "unlabeled_split": 1}
    assert {split: counts["images"] for split, counts in voc["by_split"].items()} == {"train": 4, "val": 8}
    assert voc["by_kind_task"] == {"pairs/segmentation": 2, "pairs/detection": 1}
    drawn = set()
    for tar in sorted((tmp_path / "out" / "rendered").rglob("*.tar")):
        for sentence in iter_shard(str(tar)):
            members = sentence.header["members"]
            for member, image, target in zip(members[1::2], sentence.images[::2], sentence.images[1::2]):
                if member["task"] == "segmentation":
                    labels = made[member["key"].split("-")[1]]
                    assert np.array_equal(decode_png(target), palette()[np.where(labels == 255, 0, labels)])
                else:  # the boxes outlined over the image, the rest of it as it is
                    changed = np.any(decode_png(target) != decode_png(image), axis=2)
                    assert 0 < changed.mean() < 0.5
                drawn.add(member["key"])
    assert drawn == {f"voc-{i}-segmentation" for i in PAIRS} - {"voc-2007_000039-segmentation"} | {
        "voc-2008_000008-detection", "voc-2011_003271-detection"}


def _voc_xml(path: Path, image_id: str, objects: list[tuple[str, tuple[int, int, int, int], int]],
             size: tuple[int, int] = SIZE) -> None:
    """An Annotations/<id>.xml as VOC's files are laid out (folder, filename, source, size,
    segmented, then each object's name, pose, truncated, difficult, bndbox), written by the
    standard library's ElementTree as LabelImg-style tools write them."""
    import xml.etree.ElementTree as ET

    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "The VOC2007 Database"
    ET.SubElement(source, "annotation").text = "PASCAL VOC2007"
    dims = ET.SubElement(root, "size")
    for name, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(dims, name).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for name, (x0, y0, x1, y1), difficult in objects:
        item = ET.SubElement(root, "object")
        ET.SubElement(item, "name").text = name
        ET.SubElement(item, "pose").text = "Frontal"
        ET.SubElement(item, "truncated").text = "0"
        ET.SubElement(item, "difficult").text = str(difficult)
        box = ET.SubElement(item, "bndbox")
        for field, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(box, field).text = str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""


def test_voc_detection_boxes_from_annotations_xml_as_detectron2_reads_them(tmp_path: Path):
    """`tasks: [segmentation, detection]` also reads ImageSets/Main's ids with their
    Annotations/<id>.xml: each object's box as detectron2's `load_voc_instances` takes it (1-based
    inclusive corners: xmin - 1, ymin - 1 to xmax, ymax), difficult objects kept, VOC's class i
    drawn as label map index i's colour; an image's two tasks share its group. A billion-laughs
    file, an external entity, a file that is no XML, one over 1 MiB, one without objects and an
    id without its XML are counted rejects, each at once (no entity is expanded); a test id whose
    XML holds no object (VOC2012test.tar's) is `unlabeled_split`."""
    from transforms.annotations import draw_boxes
    from sources.voc_xml import VOC_CLASSES

    _write_voc(tmp_path, PAIRS, {"train.txt": ["2007_000032"], "val.txt": ["2007_000039"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    boxes = {"2007_000032": [("aeroplane", (10, 12, 40, 30), 0), ("person", (30, 5, 64, 64), 1)],
             "2007_000039": [("bottle", (1, 1, 20, 50), 0)]}
    for image_id, objects in boxes.items():
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, objects)
    (voc / "Annotations" / "2007_000063.xml").write_bytes(BILLION_LAUGHS)
    (voc / "Annotations" / "2008_000008.xml").write_bytes(XXE)
    (voc / "Annotations" / "2011_003271.xml").write_bytes(b"<annotation><object><name>cat</name>")
    for image_id, photo in (("2012_000001", "moon"), ("2012_000002", "moon"), ("2012_000003", "moon")):
        Image.fromarray(_photo(photo)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    _voc_xml(voc / "Annotations" / "2012_000001.xml", "2012_000001", [])
    (voc / "Annotations" / "2012_000002.xml").write_bytes(b"<annotation>" + b" " * (1 << 20) + b"</annotation>")
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text(
        "2007_000032\n2007_000063\n2008_000008\n2011_003271\n2012_000001\n2012_000002\n2012_000003\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2007_000039\n")
    Image.fromarray(_photo("moon")).save(voc / "JPEGImages" / "2012_000004.jpg")
    _voc_xml(voc / "Annotations" / "2012_000004.xml", "2012_000004", [])  # VOC2012test.tar: no objects
    (voc / "ImageSets" / "Main" / "test.txt").write_text("2012_000004\n2007_000039\n")  # a val id too: read once
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("segmentation", "detection")))
    detection = {i.key: i for i in items if i.key.endswith("-detection")}
    rejects = {k: (r.reason, r.input.rsplit("/", 2)[-2:]) for k, r in detection.items() if isinstance(r, Reject)}
    assert rejects == {"voc-2007_000063-detection": ("bad_annotation", ["Annotations", "2007_000063.xml"]),
                       "voc-2008_000008-detection": ("bad_annotation", ["Annotations", "2008_000008.xml"]),
                       "voc-2011_003271-detection": ("bad_annotation", ["Annotations", "2011_003271.xml"]),
                       "voc-2012_000001-detection": ("no_detection_annotations", ["Annotations", "2012_000001.xml"]),
                       "voc-2012_000002-detection": ("file_too_large", ["Annotations", "2012_000002.xml"]),
                       "voc-2012_000003-detection": ("missing_annotation", ["JPEGImages", "2012_000003.jpg"]),
                       "voc-2012_000004-detection": ("unlabeled_split", ["Annotations", "2012_000004.xml"])}
    assert "DTD" in detail_of(detection, "voc-2007_000063-detection") and "passwd" not in str(items)
    assert "not well-formed" in detail_of(detection, "voc-2011_003271-detection")
    pairs = {k: r for k, r in detection.items() if isinstance(r, PairRecord)}
    assert sorted(pairs) == ["voc-2007_000032-detection", "voc-2007_000039-detection"]
    assert {r.split_hint for r in pairs.values()} == {"train", "val"}
    segmentation = {i.key: i for i in items if i.key.endswith("-segmentation")}
    for key, record in pairs.items():
        image_id = key.split("-")[1]
        assert record.group == segmentation[f"voc-{image_id}-segmentation"].group
        objects = boxes[image_id]
        assert record.annotation["boxes"] == [[x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]
                                              for _, (x0, y0, x1, y1), _ in objects]
        classes = [VOC_CLASSES.index(name) + 1 for name, _, _ in objects]
        assert record.annotation["categories"] == classes
        assert (record.annotation["width"], record.annotation["height"]) == (SIZE[1], SIZE[0])
        with Image.open(record.image_uri) as photo:  # the image as Pillow decodes it, boxes drawn
            expected = draw_boxes(np.asarray(photo.convert("RGB")),
                                  np.array([[x0 - 1, y0 - 1, x1, y1] for _, (x0, y0, x1, y1), _ in objects]), classes)
        drawn = _render_target(record)
        assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 2  # JPEG decoders within 2 levels
        outline = np.any(expected != np.asarray(Image.open(record.image_uri).convert("RGB")), axis=2)
        assert outline.any() and np.array_equal(drawn[outline], expected[outline])


def test_voc_class_names_as_labelimg_writes_them_are_voc_classes_whatever_their_case(tmp_path: Path):
    """LabelImg writes a label as it was typed: `<name>Person</name>` got a hashed id (3310) and a
    colour of its own, while SegmentationClass's person (15) drew another: one class, two colours.
    VOC's names are now matched without case or surrounding blanks; a name of one's own keeps its
    stable id past them."""
    from transforms.annotations import colour_of

    _write_voc(tmp_path, {"2007_000039": ("coffee", 15)}, {"train.txt": ["2007_000039"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    _voc_xml(voc / "Annotations" / "2007_000039.xml", "2007_000039",
             [("Person", (5, 5, 30, 30), 0), (" DiningTable ", (35, 35, 60, 60), 0), ("Forklift", (2, 40, 20, 60), 0)])
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2007_000039\n")
    items = {i.key: i for i in _read_all(SegmentationSource("voc", str(tmp_path), "voc",
                                                            tasks=("segmentation", "detection")))}
    record = items["voc-2007_000039-detection"]
    assert record.annotation["categories"][:2] == [15, 11] and record.annotation["categories"][2] > 20
    drawn = _render_target(record)
    painted = _render_target(items["voc-2007_000039-segmentation"])
    assert (drawn[4, 4:30] == colour_of(15)).all() and (painted == colour_of(15)).all(axis=2).sum() == 20 * 26
    assert (drawn[34, 34:60] == colour_of(11)).all()


def test_voc_classes_of_ones_own_draw_in_colours_far_apart_whatever_their_order(tmp_path: Path):
    """A VOC-format set of one's own classes (a fruit counter's `apple`, `corn`, `grape`, `tomato`,
    `banana`): each name took a hashed id past 255, a seeded random colour, so `grape` and `tomato`
    drew 8.3 Delta E apart (one colour, once tokenised), and any two names could hash to one id.
    Names of one's own now take the palette's well-spread colours (ids 21..255, 14 Delta E apart at
    the closest, and from VOC's 20), each its hashed one; two names of one image hashed to one
    (`apple` and `corn`) are told apart, the later by name taking the next free one: the same
    colours whatever order the file lists its objects in."""
    from skimage.color import rgb2lab

    from transforms.annotations import colour_of

    names = ["apple", "corn", "grape", "tomato", "banana"]
    images = {"2007_000032": names, "2007_000039": names[::-1]}
    _write_voc(tmp_path, {i: PAIRS[i] for i in images}, {})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id, order in images.items():
        boxes = {name: (3 + 12 * names.index(name), 5, 11 + 12 * names.index(name), 55) for name in names}
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [(name, boxes[name], 0) for name in order])
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in images))
    records = [i for i in _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("detection",)))
               if isinstance(i, PairRecord)]
    assert len(records) == 2
    drawn = []
    for record in records:
        target = _render_target(record)
        colours = {name: tuple(int(c) for c in target[4, 5 + 12 * names.index(name)]) for name in names}
        drawn.append(colours)
        assert sorted(colour_of(i) for i in record.annotation["categories"]) == sorted(colours.values())
    assert drawn[0] == drawn[1]
    lab = rgb2lab(np.array([list(drawn[0].values()) + [colour_of(i) for i in range(21)]], np.float64) / 255)[0]
    apart = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(axis=-1))[np.triu_indices(len(lab), 1)]
    assert apart.min() > 14, apart.min()


def test_a_voc_box_wholly_outside_its_image_is_counted_beside_the_drawn_ones(tmp_path: Path):
    """A VOC object whose box lies wholly outside the image (a box kept from a larger original)
    drew nothing beside the others and was not counted: the pair's member counts it
    (`boxes_outside_image`), the target is the one drawn without it."""
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    _write_voc(tmp_path, {"2007_000039": ("coffee", 15)}, {"train.txt": ["2007_000039"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2007_000039\n")
    drawn = {}
    for name, objects in (("with", [("person", (5, 5, 30, 30), 0), ("cat", (80, 70, 120, 100), 0)]),
                          ("without", [("person", (5, 5, 30, 30), 0)])):
        _voc_xml(voc / "Annotations" / "2007_000039.xml", "2007_000039", objects)
        items = {i.key: i for i in _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("detection",)))}
        drawn[name] = render_pair(items["voc-2007_000039-detection"], RenderSettings(SIZE[1], "squash", 0, 10**9, 1,
                                                                                     0, 0.0))
    assert drawn["with"].members[0]["boxes_outside_image"] == 1
    assert "boxes_outside_image" not in drawn["without"].members[0]
    assert drawn["with"].images == drawn["without"].images


def detail_of(items: dict, key: str) -> str:
    return items[key].detail


def test_voc_detection_asked_of_another_layout_or_without_main_lists_fails_early(tmp_path: Path):
    """`tasks: [detection]` is VOC's: with `layout: ade20k` the config names `tasks`; a VOC tree
    without ImageSets/Main (the segmentation lists alone) fails `check` naming `tasks`."""
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    def config(layout: str) -> object:
        return parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "s", "type": "segmentation", "path": str(tmp_path / "data"), "layout": layout,
             "tasks": ["segmentation", "detection"]}]})

    _write_voc(tmp_path / "data", PAIRS, {"val.txt": list(PAIRS)})
    with pytest.raises(ConfigError, match="tasks: detection is read from PASCAL VOC's Annotations/"):
        config("ade20k")
    with pytest.raises(ConfigError) as info:
        list_units(config("voc"))
    assert "sources[0].tasks (s)" in str(info.value) and "ImageSets/Main/train.txt" in str(info.value)


def test_voc_split_list_of_a_converted_coco_is_read_whole(tmp_path: Path):
    """COCO train2017 converted to VOC's format (its 118,287 ids, 12 digits each: a 1.5 MB
    ImageSets/Segmentation/train.txt): the list was over a 1 MiB cap, so all its ids were dropped
    for one `bad_split_list` reject. Every id is read now; a list over the byte cap (a sparse file,
    judged by its size before any byte is read) or the id cap (judged before an id is taken) is
    still one reject naming the cap."""
    from sources.voc import LIST_UNIT, MAX_VOC_LIST_BYTES, MAX_VOC_LIST_IDS

    ids = [f"{i:012d}" for i in range(1, 118_288)]
    _write_voc(tmp_path / "coco", dict(list(PAIRS.items())[:1]), {"train.txt": ids})
    listed = tmp_path / "coco/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    assert listed.stat().st_size > 1 << 20
    source = SegmentationSource("coco", str(tmp_path / "coco"), "voc")
    units = source.units()
    assert [i for folder, files in units if folder.startswith("segmentation:") for i in files] == [
        str(tmp_path / "coco/VOCdevkit/VOC2012/JPEGImages" / f"{i}.jpg") for i in ids]
    (lists,) = [u for u in units if u[0] == LIST_UNIT]
    assert list(source.read(lists)) == []
    listed.write_bytes(b"1\n" * (MAX_VOC_LIST_IDS + 1))
    units = source.units()
    assert not [u for u in units if u[0].startswith("segmentation:")]
    (reject,) = [i for u in units for i in source.read(u) if isinstance(i, Reject) and i.reason == "bad_split_list"]
    assert f"more than {MAX_VOC_LIST_IDS} lines" in reject.detail
    with listed.open("r+b") as handle:
        handle.truncate(MAX_VOC_LIST_BYTES + 1)
    (reject,) = [i for u in source.units() for i in source.read(u)
                 if isinstance(i, Reject) and i.reason == "bad_split_list"]
    assert f"larger than {MAX_VOC_LIST_BYTES} bytes" in reject.detail


def _in_encoding(document: bytes, encoding: str) -> bytes:
    """`document` (declared UTF-8) re-encoded and declared as `encoding`, as an editor saves it."""
    text = document.decode().replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding}"?>')
    return text.encode(encoding)


INTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY c "cat">]>
<annotation><object><name>&c;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""
BARE_DOCTYPE = b"""<?xml version="1.0"?>
<!DOCTYPE annotation SYSTEM "voc.dtd">
<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>
"""


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16", "UTF-16LE", "UTF-16BE", "ISO-8859-1"])
@pytest.mark.parametrize("document", [BILLION_LAUGHS, XXE, INTERNAL_ENTITY, BARE_DOCTYPE],
                         ids=["billion_laughs", "xxe", "internal_entity", "bare_doctype"])
def test_voc_xml_declaring_a_dtd_is_refused_in_every_encoding(document: bytes, encoding: str):
    """A DTD was refused by a regex over the raw bytes: saved as UTF-16 (an editor's choice) the
    same file passed it, expat expanded a billion-laughs file (12 -> 79 MB RSS before its
    amplification limit stopped it) and an internal entity's text was read as the class name.
    expat itself now says whether a DTD is declared, in whatever encoding the file is: each is
    refused with this module's words, before any entity is expanded."""
    from sources.voc_xml import parse_voc_xml
    from transforms.errors import Rejected

    data = _in_encoding(document, encoding)
    if encoding.startswith("UTF-16"):
        assert b"<!DOCTYPE" not in data  # the bytes a regex over them searched for are not there
    with pytest.raises(Rejected) as info:
        parse_voc_xml(data)
    assert (info.value.reason, info.value.detail) == (
        "bad_annotation", "the XML declares a DTD (entities are refused: VOC's files have none)")


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16"])
def test_voc_xml_without_a_dtd_reads_in_any_encoding(encoding: str):
    """The DTD check passes an XML file without one, UTF-8 or UTF-16 (its boxes read), and leaves a
    file that is no XML to ElementTree's words."""
    from sources.voc_xml import parse_voc_xml
    from transforms.errors import Rejected

    plain = BARE_DOCTYPE.replace(b'<!DOCTYPE annotation SYSTEM "voc.dtd">\n', b"")
    assert parse_voc_xml(_in_encoding(plain, encoding))["boxes"] == [[0.0, 0.0, 9.0, 9.0]]
    with pytest.raises(Rejected, match="not well-formed XML"):
        parse_voc_xml(_in_encoding(b'<?xml version="1.0"?>\n<annotation><object>', encoding))


@pytest.mark.parametrize("encoding", ["punycode", "undefined"])
def test_voc_xml_declaring_a_codec_that_fails_with_unicode_error_is_a_bad_annotation(encoding: str):
    """An XML file declaring `punycode` or `undefined` (codecs Python knows, whose decoding raises a
    bare UnicodeError, no UnicodeDecodeError): parse_voc_xml raised it, so the detection reader
    counted the file `unreadable_file` (and any other caller crashed). It is one `bad_annotation`
    naming the encoding, as for bytes that are not of a declared encoding."""
    from sources.voc_xml import parse_voc_xml
    from transforms.errors import Rejected

    document = (f'<?xml version="1.0" encoding="{encoding}"?>\n<annotation><object><name>cat</name><bndbox>'
                "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>\n")
    with pytest.raises(Rejected) as info:
        parse_voc_xml(document.encode())
    assert info.value.reason == "bad_annotation" and f"not {encoding} text as it declares" in info.value.detail


def test_voc_tree_as_windows_tools_and_voc2012_write_it(tmp_path: Path):
    """Lists saved by Notepad (UTF-8 with a byte order mark, CRLF line ends) or edited by hand
    (a trailing space), and VOC2012's XML files whose corners are decimals (`<xmin>273.3</xmin>`,
    as some of its 2011 images have): each listed id is read in its list's split, and the boxes are
    detectron2's `load_voc_instances` (float corners, xmin - 1 and ymin - 1)."""
    import xml.etree.ElementTree as ET

    from sources.voc import LIST_UNIT

    _write_voc(tmp_path, {i: PAIRS[i] for i in ("2007_000032", "2007_000039", "2007_000063", "2011_003271")}, {})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    notepad = {"train.txt": ["2007_000032", "2007_000039"], "val.txt": ["2007_000063 ", "2011_003271  "]}
    (voc / "ImageSets" / "Main").mkdir()
    for folder in ("Segmentation", "Main"):
        for name, ids in notepad.items():
            (voc / "ImageSets" / folder / name).write_bytes("\r\n".join(ids).encode("utf-8-sig") + b"\r\n")
    corners = {"2007_000032": (10, 12, 40, 30), "2007_000039": (1, 1, 64, 64),
               "2007_000063": ("12.5", "3.25", "40.75", "60"), "2011_003271": ("20.0", "10.5", "60.2", "50.9")}
    for image_id, corner in corners.items():
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [("cat", corner, 0)])
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("segmentation", "detection")))
    assert not [i for i in items if isinstance(i, Reject)], items
    splits = {i.key: i.split_hint for i in items}
    assert splits == {f"voc-{i}-{task}": "train" if i in notepad["train.txt"] else "val"
                      for i in corners for task in ("segmentation", "detection")}
    for record in items:
        if record.task != "detection":
            continue
        box = ET.parse(voc / "Annotations" / f"{record.key.split('-')[1]}.xml").find("object/bndbox")
        x0, y0, x1, y1 = (float(box.find(f).text) for f in ("xmin", "ymin", "xmax", "ymax"))  # detectron2's
        assert record.annotation["boxes"] == [[x0 - 1.0, y0 - 1.0, x1 - x0 + 1, y1 - y0 + 1]]
    source = SegmentationSource("voc", str(tmp_path), "voc", tasks=("segmentation", "detection"))
    assert not list(source.read(next(u for u in source.units() if u[0] == LIST_UNIT)))


def test_voc_xml_in_a_multibyte_encoding_is_read_and_an_unknown_one_counted(tmp_path: Path):
    """A VOC-format set made with Chinese class names, its XML written by ElementTree in GBK (or
    Shift_JIS, Big5, `utf-16-le`: `write(encoding=...)` declares it): expat reads encodings other
    than UTF-8, UTF-16 and Latin-1 through Python's codecs and refused a multi-byte one with a
    ValueError, and a file
    declaring an encoding Python does not know raised LookupError: either out of the reader, so in
    a build the unit's 256 ids were one `unit_failed` reject. The first is read (its class name as
    written), the second one `bad_annotation` naming it."""
    import xml.etree.ElementTree as ET

    from sources.voc_xml import class_ids

    _write_voc(tmp_path, {i: PAIRS[i] for i in ("2007_000032", "2007_000039", "2007_000063", "2008_000008")}, {})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    encodings = {"2007_000032": "gbk", "2007_000039": "shift_jis", "2007_000063": "big5", "2008_000008": "utf-16-le"}
    for image_id, encoding in encodings.items():
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [("猫", (3, 4, 30, 40), 0)])
        tree = ET.parse(voc / "Annotations" / f"{image_id}.xml")
        tree.write(voc / "Annotations" / f"{image_id}.xml", encoding=encoding, xml_declaration=True)
        assert f"encoding='{encoding}'".encode(encoding) in (voc / "Annotations" / f"{image_id}.xml").read_bytes()
    Image.fromarray(_photo("moon")).save(voc / "JPEGImages" / "2012_000001.jpg")
    (voc / "Annotations" / "2012_000001.xml").write_bytes(
        b'<?xml version="1.0" encoding="x-klingon"?>\n<annotation><object><name>cat</name></object></annotation>')
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in [*encodings, "2012_000001"]))
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("detection",)))
    pairs = {i.key: i for i in items if isinstance(i, PairRecord)}
    assert sorted(pairs) == [f"voc-{i}-detection" for i in sorted(encodings)]
    for record in pairs.values():
        assert record.lineage["classes"] == ["猫"] and record.annotation["categories"] == class_ids(["猫"])
        assert record.annotation["boxes"] == [[2.0, 3.0, 28.0, 37.0]]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert (reject.key, reject.reason) == ("voc-2012_000001-detection", "bad_annotation")
    assert "x-klingon" in reject.detail


def test_voc_image_in_one_tasks_train_and_anothers_val_is_val_for_both(tmp_path: Path):
    """VOC's segmentation and detection lists are drawn separately: an image in
    Segmentation/train.txt and Main/val.txt rendered its segmentation pair in train and its
    detection pair in val, the same photograph on both sides of the split. Each image id has one
    split across the tasks, held out winning (as for an id in two lists of one task): both val,
    also where the other task cannot read it (its missing annotation counted in val). Ids in one
    task's lists only keep their list's split."""
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    _write_voc(tmp_path, PAIRS, {"train.txt": ["2007_000032", "2007_000039", "2008_000008"],
                                 "val.txt": ["2007_000063"], "test.txt": ["2011_003271"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id in PAIRS:
        if image_id != "2008_000008":
            _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [("cat", (3, 4, 30, 40), 0)])
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2007_000063\n2011_003271\n2007_000039\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2007_000032\n2008_000008\n")
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc", tasks=("segmentation", "detection")))
    settings = RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.5)
    splits = {i.key: render_pair(i, settings).split if isinstance(i, PairRecord) else i.split_hint for i in items
              if not i.key.startswith("voc-SegmentationClass")}
    assert splits == {
        "voc-2007_000032-segmentation": "val", "voc-2007_000032-detection": "val",  # Main/val.txt
        "voc-2007_000063-segmentation": "val", "voc-2007_000063-detection": "val",  # Segmentation/val.txt
        "voc-2011_003271-segmentation": "val", "voc-2011_003271-detection": "val",  # Segmentation/test.txt
        "voc-2008_000008-segmentation": "val", "voc-2008_000008-detection": "val",  # no XML: a reject in val
        "voc-2007_000039-segmentation": "train", "voc-2007_000039-detection": "train"}
    assert {i.key: i.reason for i in items if isinstance(i, Reject)}["voc-2008_000008-detection"] == \
        "missing_annotation"


def test_voc_id_cap_holds_for_all_the_lists_a_run_reads_together(tmp_path: Path, monkeypatch):
    """The id cap was per list: segmentation and detection with train, val and test each at the
    cap (4M ids, 52 MB a list) took 5.3 GB to plan. It holds for every list a run reads together,
    judged before a list's ids are taken: the list that would pass it is one `bad_split_list`
    reject naming the cap and none of its ids is read; the lists before it are read whole (here
    with the cap at 10: 4 + 5 segmentation ids, then Main/train.txt's 3 would make 12)."""
    import sources.voc as voc_module
    from sources.voc import LIST_UNIT

    monkeypatch.setattr(voc_module, "MAX_VOC_LIST_IDS", 10)
    ids = [f"2007_{i:06d}" for i in range(12)]
    _write_voc(tmp_path, dict(list(PAIRS.items())[:1]), {"val.txt": ids[:4], "train.txt": ids[4:9]})
    main = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main"
    main.mkdir()
    (main / "train.txt").write_text("".join(f"{i}\n" for i in ids[9:]))
    source = SegmentationSource("voc", str(tmp_path), "voc", tasks=("segmentation", "detection"))
    units = source.units()
    assert sorted(_stem(f) for folder, files in units if folder != LIST_UNIT and folder.startswith(
        ("segmentation:", "detection:")) for f in files) == sorted(ids[:9])
    assert not [u for u in units if u[0].startswith("detection:")]
    (lists,) = [u for u in units if u[0] == LIST_UNIT]
    (reject,) = list(source.read(lists))
    assert (reject.reason, reject.input) == ("bad_split_list", "VOCdevkit/VOC2012/ImageSets/Main/train.txt")
    assert "3 lines, more than the 1 ids left of the 10 the split lists read may hold together" in reject.detail
    monkeypatch.setattr(voc_module, "MAX_VOC_LIST_IDS", 12)
    assert len([f for folder, files in source.units() if folder.startswith("detection:") for f in files]) == 3


def _stem(uri: str) -> str:
    return uri.rsplit("/", 1)[1].rsplit(".", 1)[0]


def _sbd_cls_mat(path: Path, labels: np.ndarray) -> None:
    """A class map as SBD's benchmark_RELEASE/dataset/cls/<id>.mat holds it: a GTcls struct of
    Segmentation (uint8 class indices 0..20, no void border), Boundaries and CategoriesPresent."""
    from scipy.io import savemat

    classes = np.unique(labels[(labels > 0) & (labels < 255)]).astype(np.uint8)
    boundaries = np.empty((len(classes), 1), object)
    for n, cls in enumerate(classes):  # SBD's are sparse matrices of each class's edge pixels
        boundaries[n, 0] = (labels == cls).astype(np.uint8)
    savemat(str(path), {"GTcls": {"Segmentation": labels, "Boundaries": boundaries,
                                  "CategoriesPresent": classes.reshape(-1, 1)}}, do_compression=True)


def _mmseg_voc_aug(mat: Path, out: Path) -> None:
    """mmsegmentation's tools/dataset_converters/voc_aug.py `convert_mat`, as it writes
    VOC2012/SegmentationClassAug/<id>.png (a grey, mode L PNG)."""
    from scipy.io import loadmat

    mask = loadmat(str(mat))["GTcls"][0]["Segmentation"][0]
    Image.fromarray(mask).save(out, "PNG")


def _voc_aug_tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """VOCtrainval's tree (train.txt, val.txt, SegmentationClass) plus SBD's augmented set as
    mmseg's voc_aug.py leaves it: SegmentationClassAug/ with every SBD map (a val image's too) and
    ImageSets/Segmentation/trainaug.txt (train and SBD's, val left out) and aug.txt (SBD's alone)."""
    made = _write_voc(tmp_path, {k: PAIRS[k] for k in ("2007_000032", "2007_000063")},
                      {"train.txt": ["2007_000032"], "val.txt": ["2007_000063"]})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClassAug").mkdir()
    sbd = {"2008_000008": ("rocket", 7), "2011_003271": ("camera", 20), "2007_000063": ("chelsea", 8)}
    for n, (image_id, (photo, cls)) in enumerate(sbd.items()):
        Image.fromarray(_photo(photo)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        labels = np.where(_labels(cls, n + 3) == 255, cls, _labels(cls, n + 3)).astype(np.uint8)  # SBD: no void
        _sbd_cls_mat(tmp_path / f"{image_id}.mat", labels)
        _mmseg_voc_aug(tmp_path / f"{image_id}.mat", voc / "SegmentationClassAug" / f"{image_id}.png")
        made.setdefault(image_id, labels)
        made[f"aug:{image_id}"] = labels
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "trainaug.txt").write_text("2007_000032\n2008_000008\n2011_003271\n")
    (lists / "aug.txt").write_text("2008_000008\n2011_003271\n")
    return voc, made


def test_voc_augmented_with_sbd_reads_the_aug_list_as_train(tmp_path: Path):
    """The set most VOC segmentation models train on: VOC2012 with SBD's maps, as mmseg's
    voc_aug.py converts them (SegmentationClassAug/<id>.png, trainaug.txt, aug.txt) and
    DeepLab-style repos ship them (train_aug.txt). Old code read train.txt alone: the 10,582 aug
    ids became 1,464, the rest passed over without a word. Now each id of an aug list is a train
    pair with its SegmentationClass map where VOC has one (its void border), else its
    SegmentationClassAug map (read back with Pillow: mode L, the SBD .mat's indices); val stays
    val.txt's with VOC's own maps, and an SBD map of a val image (no aug list names it) is not read."""
    from transforms.annotations import palette

    voc, made = _voc_aug_tree(tmp_path)
    with Image.open(voc / "SegmentationClassAug" / "2011_003271.png") as written:
        assert written.mode == "L" and np.array_equal(np.asarray(written), made["aug:2011_003271"])
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    assert not [i for i in items if isinstance(i, Reject)], items
    records = {i.key.split("-")[1]: i for i in items}
    assert {k: (r.split_hint, r.lineage["voc_list"]) for k, r in records.items()} == {
        "2007_000032": ("train", "ImageSets/Segmentation/train.txt"),
        "2007_000063": ("val", "ImageSets/Segmentation/val.txt"),
        "2008_000008": ("train", "ImageSets/Segmentation/trainaug.txt"),
        "2011_003271": ("train", "ImageSets/Segmentation/trainaug.txt")}
    assert records["2007_000063"].annotation["label_uri"].endswith("/SegmentationClass/2007_000063.png")
    for image_id, record in records.items():
        labels = made[image_id]
        assert np.array_equal(_render_target(record), palette()[np.where(labels == 255, 0, labels)]), image_id
    # DeepLab's name for the list, and an aug id whose map is in neither folder
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "trainaug.txt").unlink()
    (lists / "aug.txt").rename(lists / "train_aug.txt")
    (voc / "SegmentationClassAug" / "2008_000008.png").unlink()
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    rejects = [(r.reason, r.split_hint, r.detail) for r in items if isinstance(r, Reject)]
    assert rejects == [("missing_annotation", "train", "ImageSets/Segmentation/train_aug.txt lists 2008_000008; no "
                        "label map SegmentationClass/2008_000008.png nor SegmentationClassAug/2008_000008.png")]
    assert sorted(i.key for i in items if isinstance(i, PairRecord)) == [
        "voc-2007_000032-segmentation", "voc-2007_000063-segmentation", "voc-2011_003271-segmentation"]


def test_voc_segmentation_class_aug_with_its_list_beside_vocdevkit_or_none(tmp_path: Path):
    """DeepLab-style repos ship train_aug.txt beside VOCdevkit/, not in ImageSets/Segmentation/, in
    their form (`/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png` a line). Such a tree built
    before aug lists were read (train.txt's ids); the last code failed its `check`. Now the list
    beside VOCdevkit/ is the aug list: its ids are train. Without any aug list the tree reads as it
    did, and each SegmentationClassAug map whose id no list names is an `unlisted_label_map`
    reject naming the fix (an SBD map of a val image, which val.txt names, is not one)."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    voc, _ = _voc_aug_tree(tmp_path / "data")
    for name in ("trainaug.txt", "aug.txt"):
        (voc / "ImageSets" / "Segmentation" / name).unlink()
    config = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "segmentation", "path": str(tmp_path / "data"), "layout": "voc"}]})
    assert list_units(config)
    items = _read_all(SegmentationSource("s", str(tmp_path / "data"), "voc"))
    assert {i.key: i.split_hint for i in items if isinstance(i, PairRecord)} == {
        "s-2007_000032-segmentation": "train", "s-2007_000063-segmentation": "val"}
    rejects = sorted((r.input, r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert [(at, reason) for at, reason, _ in rejects] == [
        ("VOCdevkit/VOC2012/SegmentationClassAug/2008_000008.png", "unlisted_label_map"),
        ("VOCdevkit/VOC2012/SegmentationClassAug/2011_003271.png", "unlisted_label_map")]
    assert "no list of ImageSets/Segmentation/ names it (SBD's map: an aug list, DeepLab's train_aug.txt" in rejects[0][2]
    (tmp_path / "data" / "train_aug.txt").write_text("".join(
        f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ("2007_000032", "2008_000008", "2011_003271")))
    assert list_units(config)
    items = _read_all(SegmentationSource("s", str(tmp_path / "data"), "voc"))
    assert not [i for i in items if isinstance(i, Reject)], items
    assert {i.key: (i.split_hint, i.lineage["voc_list"]) for i in items} == {
        "s-2007_000032-segmentation": ("train", "ImageSets/Segmentation/train.txt"),
        "s-2007_000063-segmentation": ("val", "ImageSets/Segmentation/val.txt"),
        "s-2008_000008-segmentation": ("train", "train_aug.txt"),
        "s-2011_003271-segmentation": ("train", "train_aug.txt")}


def test_voc_deeplab_aug_list_of_image_and_map_paths_is_read(tmp_path: Path):
    """DeepLab's train_aug.txt (DeepLab-v2, kazuto1011/deeplab-pytorch, DrSleep's) names each pair
    by its two paths, `/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`: old code made the list
    one `bad_split_list` reject and read none of its ids (10,582 of them; here 2). Now the id is the
    line's, and a line of another form is still one reject naming it."""
    voc, _ = _voc_aug_tree(tmp_path)
    lists = voc / "ImageSets" / "Segmentation"
    for name in ("trainaug.txt", "aug.txt"):
        (lists / name).unlink()
    (lists / "train_aug.txt").write_text("/JPEGImages/2008_000008.jpg /SegmentationClassAug/2008_000008.png\n"
                                         "JPEGImages/2011_003271.jpg  SegmentationClassAug/2011_003271.png\n")
    expected = {"voc-2007_000032-segmentation": ("train", "ImageSets/Segmentation/train.txt"),
                "voc-2007_000063-segmentation": ("val", "ImageSets/Segmentation/val.txt"),
                "voc-2008_000008-segmentation": ("train", "ImageSets/Segmentation/train_aug.txt"),
                "voc-2011_003271-segmentation": ("train", "ImageSets/Segmentation/train_aug.txt")}
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    assert not [i for i in items if isinstance(i, Reject)], items
    assert {i.key: (i.split_hint, i.lineage["voc_list"]) for i in items} == expected
    (voc / "ImageSets" / "SegmentationAug").mkdir()  # where kazuto1011/deeplab-pytorch keeps it
    (lists / "train_aug.txt").rename(voc / "ImageSets" / "SegmentationAug" / "train_aug.txt")
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    assert {i.key: (i.split_hint, i.lineage["voc_list"]) for i in items} == {
        **expected, **{k: ("train", "VOCdevkit/VOC2012/ImageSets/SegmentationAug/train_aug.txt")
                       for k in ("voc-2008_000008-segmentation", "voc-2011_003271-segmentation")}}
    (voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").rename(lists / "train_aug.txt")
    (lists / "train_aug.txt").write_text("/JPEGImages/2008_000008.jpg /SegmentationClassAug/2011_003271.png\n"
                                         "2011_003271\n")
    items = _read_all(SegmentationSource("voc", str(tmp_path), "voc"))
    rejects = sorted((r.reason, r.detail) for r in items if isinstance(r, Reject))
    assert [reason for reason, _ in rejects] == ["bad_split_list", "unlisted_label_map"]
    assert rejects[0][1].startswith("1 line is not an image id (line 1: '/JPEGImages/2008_000008.jpg /Segmentation")
    assert rejects[1][1].startswith("'2008_000008.png': no list of ImageSets/Segmentation/ names it (SBD's map")


def test_voc_tree_with_trainval_txt_alone_splits_its_ids_by_val_fraction(tmp_path: Path):
    """A VOC-format set whose lists hold trainval.txt alone (what many converters write for a
    dataset of one set): old code failed `check` ("no train.txt ... nor val.txt") with no fix
    named. Now its ids are the set, with no split of their own: each is hashed into val by
    `split.val_fraction`, as a dataset without splits is; beside train.txt or val.txt it is
    still not read. An id another task's list holds out is val, one it trains on train (one
    split per image)."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    _write_voc(tmp_path / "data", PAIRS, {"trainval.txt": list(PAIRS)})
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    items = _read_all(SegmentationSource("voc", str(tmp_path / "data"), "voc"))
    assert not [i for i in items if isinstance(i, Reject)], items
    assert {i.key: (i.split_hint, i.lineage["voc_list"]) for i in items} == {
        f"voc-{k}-segmentation": (None, "ImageSets/Segmentation/trainval.txt") for k in PAIRS}
    assert list_units(parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "segmentation", "path": str(tmp_path / "data"), "layout": "voc"}]}))
    # detection's lists split two of the ids: the segmentation pairs follow
    for image_id in PAIRS:
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [("cat", (5, 5, 40, 40), 0)])
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("2007_000032\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2007_000039\n")
    items = _read_all(SegmentationSource("voc", str(tmp_path / "data"), "voc", tasks=("segmentation", "detection")))
    splits = {i.key: i.split_hint for i in items if i.key.endswith("-segmentation")}
    assert splits == {"voc-2007_000032-segmentation": "train", "voc-2007_000039-segmentation": "val",
                      "voc-2007_000063-segmentation": None, "voc-2008_000008-segmentation": None,
                      "voc-2011_003271-segmentation": None}


@pytest.mark.parametrize("tasks", [["segmentation"], ["detection"]])
def test_voc_test_tar_alone_fails_check_naming_the_fix(tmp_path: Path, tasks: list[str]):
    """VOC2012test.tar unpacked alone: JPEGImages, Annotations without objects and test.txt lists
    (no SegmentationClass, no train.txt or val.txt). Old code failed `check` on the missing
    SegmentationClass or train.txt as if the tree were damaged; now the message says it is VOC's
    test set and how to read a labelled one."""
    from uvd_pipeline.config import ConfigError, parse_config
    from uvd_pipeline.unit_render import list_units

    _write_voc(tmp_path / "data", PAIRS, {"test.txt": list(PAIRS)})
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    for folder in ("SegmentationClass", "SegmentationObject"):
        for file in (voc / folder).iterdir():
            file.unlink()
        (voc / folder).rmdir()
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in PAIRS))
    for image_id in PAIRS:
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id, [])
    with pytest.raises(ConfigError) as info:
        list_units(parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "s", "type": "segmentation", "path": str(tmp_path / "data"), "layout": "voc", "tasks": tasks}]}))
    message = str(info.value)
    assert f"sources[0].{'layout' if tasks == ['segmentation'] else 'tasks'} (s)" in message
    assert "test.txt alone" in message and "VOCtrainval" in message, message


def _write_sbd(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """benchmark_RELEASE/dataset/ as SBD's benchmark.tgz unpacks: img/<id>.jpg, cls/<id>.mat (GTcls,
    written by scipy's savemat, compressed as MATLAB's -v7 is), inst/ and train.txt, val.txt."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    for folder in ("img", "cls", "inst"):
        (dataset / folder).mkdir(parents=True)
    made = {}
    for n, (image_id, (photo, cls)) in enumerate(PAIRS.items()):
        Image.fromarray(_photo(photo)).save(dataset / "img" / f"{image_id}.jpg", quality=90)
        labels = made[image_id] = np.where(_labels(cls, n) == 255, cls, _labels(cls, n)).astype(np.uint8)
        _sbd_cls_mat(dataset / "cls" / f"{image_id}.mat", labels)
    (dataset / "train.txt").write_text("2007_000032\n2007_000039\n2008_000008\n")
    (dataset / "val.txt").write_text("2007_000063\n2011_003271\n")
    return dataset, made


def test_sbd_layout_reads_gtcls_maps_as_torchvision_does(tmp_path: Path):
    """SBD as its benchmark.tgz unpacks (`layout: sbd`; old code had none: the config refused it).
    Each id of train.txt / val.txt is a pair in that split whose target draws GTcls.Segmentation,
    the array torchvision's SBDataset and mmseg's voc_aug.py read with scipy's loadmat (read back
    here the same way); from the folder above, benchmark_RELEASE/ or dataset/ alike."""
    from scipy.io import loadmat

    from transforms.annotations import palette
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    dataset, made = _write_sbd(tmp_path / "data")
    for image_id, labels in made.items():
        assert np.array_equal(loadmat(str(dataset / "cls" / f"{image_id}.mat"))["GTcls"][0]["Segmentation"][0], labels)
    items = _read_all(SegmentationSource("sbd", str(tmp_path / "data"), "sbd"))
    assert not [i for i in items if isinstance(i, Reject)], items
    assert {i.key: i.split_hint for i in items} == {
        "sbd-2007_000032-segmentation": "train", "sbd-2007_000039-segmentation": "train",
        "sbd-2008_000008-segmentation": "train", "sbd-2007_000063-segmentation": "val",
        "sbd-2011_003271-segmentation": "val"}
    for record in items:
        assert np.array_equal(_render_target(record), palette()[made[record.key.split("-")[1]]]), record.key
    for path in (dataset.parent, dataset):
        assert len(_read_all(SegmentationSource("sbd", str(path), "sbd"))) == 5
    assert list_units(parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "segmentation", "path": str(tmp_path / "data"), "layout": "sbd"}]}))


def test_sbd_maps_damaged_gone_or_unlisted_are_counted(tmp_path: Path):
    """A class map cut short, one in MATLAB's v7.3 (HDF5, which scipy does not read), one holding
    another struct, one whose variables inflate past the budget (judged before scipy reads it),
    an id without its map, and a map no list names: each one counted reject, the rest drawn."""
    from scipy.io import savemat

    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    dataset, made = _write_sbd(tmp_path)
    cls = dataset / "cls"
    whole = (cls / "2007_000032.mat").read_bytes()
    (cls / "2007_000032.mat").write_bytes(whole[: len(whole) // 2])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    v73 = header.ljust(116) + bytes(8) + (0x0200).to_bytes(2, "little") + b"IM"  # MATLAB's -v7.3 userblock
    (cls / "2007_000039.mat").write_bytes(v73.ljust(512, b"\x00") + b"\x89HDF\r\n\x1a\n" + bytes(600))
    savemat(str(cls / "2008_000008.mat"), {"GTinst": {"Segmentation": made["2008_000008"]}})
    savemat(str(cls / "2007_000063.mat"), {"GTcls": {"Segmentation": np.zeros((9000, 9000), np.uint8)}},
            do_compression=True)
    (cls / "2011_003271.mat").rename(cls / "2012_000001.mat")
    items = _read_all(SegmentationSource("sbd", str(tmp_path), "sbd"))
    read_rejects = {(r.input, r.reason) for r in items if isinstance(r, Reject)}
    assert read_rejects == {("benchmark_RELEASE/dataset/img/2011_003271.jpg", "missing_annotation"),
                            ("benchmark_RELEASE/dataset/cls/2012_000001.mat", "unlisted_label_map")}
    settings = RenderSettings(SIZE[1], "squash", 0, 10**9, 1, 0, 0.0)
    rendered = {r.key.split("-")[1]: render_pair(r, settings) for r in items if isinstance(r, PairRecord)}
    expected = {"2007_000032": ("bad_annotation", "not a readable MAT file"),
                "2007_000039": ("bad_annotation", "a MAT v7.3 (HDF5) file: save it in MATLAB's default -v7"),
                "2008_000008": ("bad_annotation", "holds no GTcls.Segmentation map of class indices"),
                "2007_000063": ("annotation_too_large", "its variables inflate past 64 MiB")}
    assert {k: r.reason for k, r in rendered.items()} == {k: reason for k, (reason, _) in expected.items()}
    for image_id, (_, detail) in expected.items():
        assert rendered[image_id].detail.startswith(detail), rendered[image_id].detail


def test_sbd_map_with_millions_of_boundary_cells_is_refused_before_scipy_builds_them(tmp_path: Path):
    """A cls/<id>.mat whose GTcls.Boundaries is a cell of 200,000 empty matrices: 3 KB on disk, 1.6 MB
    inflated (far within the 64 MiB budget), but scipy built an ndarray of each (old code drew it;
    at 8M cells, a 93 KB file, a worker grew by 1.3 GB over 19 s). SBD's Boundaries is 20 x 1 at
    most: the cells are counted from the headers first, and the map is `annotation_too_large`."""
    from mat_forge import EMPTY, MI_UINT8, MX_CELL, MX_STRUCT, MX_UINT8, element, mat_file, matrix, struct_body

    from sources.sbd import SbdMapError, sbd_class_map

    labels = np.arange(16, dtype=np.uint8).reshape(4, 4) % 21
    segmentation = matrix(MX_UINT8, [4, 4], b"", element(MI_UINT8, labels.T.tobytes()))  # MATLAB: column-major

    def gtcls(cells: int) -> bytes:
        boundaries = matrix(MX_CELL, [cells, 1], b"", EMPTY * cells)
        return mat_file(matrix(MX_STRUCT, [1, 1], b"GTcls", struct_body([b"Segmentation", b"Boundaries"],
                                                                         segmentation + boundaries)))

    assert np.array_equal(sbd_class_map(gtcls(20)), labels)
    bomb = gtcls(200_000)
    assert len(bomb) < 4096
    with pytest.raises(SbdMapError) as caught:
        sbd_class_map(bomb)
    assert caught.value.reason == "annotation_too_large"
    assert str(caught.value).startswith("GTcls holds more than 100000 cells and fields")


def test_sbd_map_one_row_high_stays_two_dimensional(tmp_path: Path):
    """A 1 x W class map (a strip image) read with squeeze_me=True became 1-D and was refused as
    `bad_annotation`; read unsqueezed, as torchvision's `GTcls[0]["Segmentation"][0]`, it is drawn."""
    from scipy.io import loadmat

    from sources.sbd import sbd_class_map

    labels = np.array([[0, 3, 3, 0, 15, 15, 0, 0]], np.uint8)
    _sbd_cls_mat(tmp_path / "strip.mat", labels)
    torchvision = loadmat(str(tmp_path / "strip.mat"))["GTcls"][0]["Segmentation"][0]
    assert torchvision.shape == (1, 8)
    assert np.array_equal(sbd_class_map((tmp_path / "strip.mat").read_bytes()), torchvision)


def test_a_bad_list_beside_vocdevkit_keeps_its_key_when_the_dataset_moves(tmp_path: Path):
    """A train_aug.txt beside VOCdevkit/ with a bad line: its `bad_split_list` key was made of the
    last 3 folders of its absolute path, the user's own folders above the source's path, so moving
    the dataset changed it. Now it is made of the path under the source's path."""
    keys = []
    for where in (tmp_path / "a" / "data", tmp_path / "b" / "moved" / "elsewhere"):
        voc, _ = _voc_aug_tree(where)
        for name in ("trainaug.txt", "aug.txt"):
            (voc / "ImageSets" / "Segmentation" / name).unlink()
        (where / "train_aug.txt").write_text("/JPEGImages/2008_000008.jpg /SegmentationClassAug/2008_000008.png\n"
                                             "not an id line\n")
        items = _read_all(SegmentationSource("s", str(where), "voc"))
        keys += [(r.key, r.input) for r in items if isinstance(r, Reject) and r.reason == "bad_split_list"]
    assert len(keys) == 2 and keys[0] == keys[1], keys
    assert keys[0][1] == "train_aug.txt" and "data" not in keys[0][0] and "moved" not in keys[0][0]


@pytest.mark.parametrize("listed", ["Annotations", "labelmap.txt", "empty classes.txt", "numbered classes.txt"])
def test_voc_own_classes_draw_one_colour_in_every_image(tmp_path: Path, listed: str):
    """Classes of one's own (not VOC's 20) took their colours per file: `corn` and `apple` hash to
    one slot, so `corn` drew id 90 beside `apple` and 89 (`apple`'s own) alone or beside `grape`:
    one class two colours, one colour two classes across the dataset. The dataset's names are
    settled once (CVAT's `labelmap.txt` where shipped, else every `Annotations/*.xml`), each name
    one id in every image, names of one image still apart; each unit records the ids it drew, so
    a class added that moves no slot leaves them as they were."""
    from sources import fsio
    from sources.voc_xml import class_ids

    assert class_ids(["apple", "corn"])[1] != class_ids(["corn"])[0]  # the clash the old per-file ids met
    files = {"2007_000032": ["apple", "corn"], "2007_000039": ["corn"], "2007_000063": ["corn", "grape", "Person"]}
    _write_voc(tmp_path, {i: PAIRS[i] for i in files}, {})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for image_id, names in files.items():
        _voc_xml(voc / "Annotations" / f"{image_id}.xml", image_id,
                 [(name, (3 + 5 * n, 4, 30 + 5 * n, 40), 0) for n, name in enumerate(names)])
    if listed == "labelmap.txt":  # CVAT's Pascal VOC 1.1 export: its labels, the XMLs not read for them
        (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\napple:250,50,83::\n"
                                          "corn:51,221,255::\ngrape:245,147,49::\nperson:0,0,0::\n")
    # a label file that names no class, or in another tool's shape (`0 apple`, YOLO converters'):
    # not trusted, the XMLs read instead (rev57i M1: every own class took a fallback colour)
    if listed == "empty classes.txt":
        (voc / "classes.txt").write_text("\n")
    if listed == "numbered classes.txt":
        (voc / "Annotations" / "classes.txt").write_text("0 apple\n1 corn\n2 grape\n")
    (voc / "ImageSets" / "Main").mkdir()
    (voc / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in files))
    source = SegmentationSource("voc", str(tmp_path), "voc", tasks=("detection",))
    with fsio.recording_inputs() as recorded:
        items = [i for unit in source.units() for i in source.read(unit)]
    drawn: dict[str, set[int]] = {}
    for record in items:
        assert isinstance(record, PairRecord), record
        for name, category in zip(files[record.key.split("-")[1]], record.annotation["categories"], strict=True):
            drawn.setdefault(name, set()).add(category)
    assert drawn["Person"] == {15}  # VOC's own person
    ids = {name: ids.pop() for name, ids in drawn.items() if len(ids) == 1}
    assert sorted(ids) == ["Person", "apple", "corn", "grape"], drawn
    assert len({ids["apple"], ids["corn"], ids["grape"]}) == 3 and all(21 <= ids[n] <= 255 for n in ("apple", "corn"))
    derived = {key[-1]: value for key, value in recorded.derived.items() if key[0].endswith("own_class_id")}
    assert derived == {"apple": ids["apple"], "corn": ids["corn"], "grape": ids["grape"]}
    _voc_xml(voc / "Annotations" / "2012_000001.xml", "2012_000001", [("zucchini", (3, 4, 30, 40), 0)])
    assert all(fsio.rederive(key) == value for key, value in recorded.derived.items())


# a CVAT task's labels in its order, each with the colour CVAT gave it (hex in its label editor)
CVAT_LABELS = {"corn": (51, 221, 255), "apple": (250, 50, 83), "person": (255, 204, 51)}


def _cvat_voc_export(root: Path, export: str, labels: dict[str, tuple[int, int, int]] = CVAT_LABELS
                     ) -> dict[str, dict[str, tuple[int, int, int]]]:
    """CVAT 2.x's VOC exports as datumaro's VocConverter writes them: `segmentation_mask` ("Segmentation
    mask 1.1": `label_map` its `labels`' own colours, background #000000 added where no label has that
    name (CVAT's `make_colormap`), sorted by name, the first black label moved to index 0, its
    background, whose colour paints unlabelled pixels) or
    `pascal_voc` ("PASCAL VOC 1.1": `label_map='source'`, no colours, so background first and
    VOC's bit colour map by line). labelmap.txt as `VocLabelMap.dump_to_file`, SegmentationClass/
    RGB PNGs painted in its colours (`paint_mask`, saved by OpenCV), ImageSets/Segmentation/default.txt;
    "PASCAL VOC 1.1" also its boxes (Annotations/, ImageSets/Main/default.txt). Returns each image's
    painted colour of each class."""
    from test_sources_annotated import _voc_colormap

    if export == "segmentation_mask":
        labelmap = dict(sorted(({"background": (0, 0, 0)} | labels).items()))
        black = next(name for name, colour in labelmap.items() if colour == (0, 0, 0))
        labelmap = {black: labelmap.pop(black), **labelmap}
    else:
        flat = _voc_colormap()
        labelmap = {name: tuple(flat[3 * i: 3 * i + 3]) for i, name in enumerate(["background", *CVAT_LABELS])}
    lines = "".join(f"{name}:{','.join(map(str, colour))}::\n" for name, colour in labelmap.items())
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + lines)
    objects = {"frame_000000": ["apple", "corn"], "frame_000001": ["person", "corn"]}
    tasks = ("Main", "Segmentation") if export == "pascal_voc" else ("Segmentation",)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations", "ImageSets/Main",
                   "ImageSets/Segmentation"):  # `make_dirs` makes them all, whatever the tasks
        (root / folder).mkdir(parents=True, exist_ok=True)
    for n, (image_id, names) in enumerate(objects.items()):
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), _photo(("chelsea", "coffee")[n])[..., ::-1])
        painted = np.zeros((*SIZE, 3), np.uint8)
        boxes = []
        for turn, name in enumerate(names):
            y0, x0 = 6 + 28 * turn, 8 + 20 * turn
            painted[y0: y0 + 20, x0: x0 + 24] = labelmap[name]
            boxes.append((name, (x0, y0, x0 + 24, y0 + 20), 0))
        cv2.imwrite(str(root / "SegmentationClass" / f"{image_id}.png"), painted[..., ::-1])
        if export == "pascal_voc":
            _voc_xml(root / "Annotations" / f"{image_id}.xml", image_id, boxes)
    for task in tasks:
        (root / "ImageSets" / task / "default.txt").write_text("".join(f"{i}\n" for i in objects))
    return {i: {name: labelmap[name] for name in names} for i, names in objects.items()}


@pytest.mark.parametrize("export,black", [("segmentation_mask", ""), ("pascal_voc", ""),
                                          ("segmentation_mask", "_background_"), ("segmentation_mask", "Void"),
                                          ("segmentation_mask", "no line")])
def test_a_cvat_export_draws_its_maps_by_its_labelmap_colours_and_boxes_alike(tmp_path: Path, export: str,
                                                                             black: str):
    """CVAT's VOC exports paint SegmentationClass/ in RGB, each class in labelmap.txt's colour (its
    own task colours, or VOC's bit colours in its label order): every pair was `bad_label_map`
    ('expected one channel, got 3'), the labelmap read for names alone. Each colour is now the class
    labelmap.txt gives it, drawn in the id its boxes draw (`apple` and `corn` the dataset's own
    colours, `person` VOC's 15), so a class's mask and box are one colour; a colour the file lists
    for no class is a `bad_label_map` reject naming it. Black is unlabelled whatever names it: a
    label coloured black (labelme's `_background_`, a `Void`: datumaro's index 0) drew every
    unlabelled pixel as its class, and a labelmap.txt without its black line (hand-trimmed) made
    every map `bad_label_map`."""
    from sources.voc_classes import own_class_id
    from transforms.annotations import palette
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    named = black and black != "no line"
    painted = _cvat_voc_export(tmp_path, export, {**CVAT_LABELS, black: (0, 0, 0)} if named else CVAT_LABELS)
    labelmap = (tmp_path / "labelmap.txt").read_text().splitlines()
    if black == "no line":
        (tmp_path / "labelmap.txt").write_text("\n".join(line for line in labelmap if ":0,0,0:" not in line) + "\n")
    elif named:
        assert labelmap[1] == f"{black}:0,0,0::"  # datumaro's index 0
    tasks = ("segmentation", "detection") if export == "pascal_voc" else ("segmentation",)
    for task in ("Main", "Segmentation")[2 - len(tasks):]:  # CVAT's subset list, renamed as `check`'s refusal says
        (tmp_path / "ImageSets" / task / "default.txt").rename(tmp_path / "ImageSets" / task / "trainval.txt")
    ids = {"apple": own_class_id(str(tmp_path), "apple"), "corn": own_class_id(str(tmp_path), "corn"), "person": 15}
    assert len(set(ids.values())) == 3
    source = SegmentationSource("cvat", str(tmp_path), "voc", tasks=tasks)
    records = {(r.key, r.task): r for r in _read_all(source)}
    assert len(records) == 2 * len(tasks) and all(isinstance(r, PairRecord) for r in records.values()), records
    for image_id, colours in painted.items():
        if export == "pascal_voc":
            boxes = records[f"cvat-{image_id}-detection", "detection"].annotation["categories"]
            assert boxes == [ids[name] for name in colours]  # the XML's names, in its order
        target = _render_target(records[f"cvat-{image_id}-segmentation", "segmentation"])
        painted_map = cv2.cvtColor(cv2.imread(str(tmp_path / "SegmentationClass" / f"{image_id}.png")), cv2.COLOR_BGR2RGB)
        expected = np.zeros_like(painted_map)
        for name, colour in colours.items():
            expected[(painted_map == colour).all(axis=2)] = palette()[ids[name]]
        assert np.array_equal(target, expected), image_id
    stray = cv2.imread(str(tmp_path / "SegmentationClass" / "frame_000001.png"))
    stray[0, 0] = (7, 8, 9)  # BGR: the colour (9, 8, 7), no line of labelmap.txt
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "frame_000001.png"), stray)
    rejected = render_pair(records["cvat-frame_000001-segmentation", "segmentation"],
                           RenderSettings(SIZE[1], "squash", 0, 10**9, 1, 0, 0.0))
    assert isinstance(rejected, Reject) and rejected.reason == "bad_label_map", rejected
    assert "1 pixels of colours no label file line gives ((9, 8, 7))" in rejected.detail


def test_three_hundred_own_classes_draw_three_hundred_colours_whatever_the_line_order(tmp_path: Path):
    """Past the 235 picked colours a class took its hashed id of the wider palette: of 300 classes
    (a CVAT labelmap.txt's), `zz266` and `zz714` drew one id, `zz1098` and `zz9873` one colour at two
    ids (the seeded palette repeats colours). Each name past them now takes, by name order, the next
    id whose colour no class drew: 300 colours, none of ids 0..255's, the same for the file's lines
    in any order; boxes and the labelmap's colours draw those ids."""
    import random

    from sources.voc_classes import own_class_id
    from sources.voc_xml import class_id
    from transforms.annotations import palette

    names = [f"a{i:03d}" for i in range(296)] + ["zz266", "zz714", "zz1098", "zz9873"]
    assert class_id("zz266") == class_id("zz714")  # the clashes the hashed ids met
    assert (palette()[class_id("zz1098")] == palette()[class_id("zz9873")]).all()
    drawn = []
    for order in (names, random.Random(7).sample(names, len(names))):
        (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n" + "".join(
            f"{name}:{n % 256},{n // 256},9::\n" for n, name in enumerate(order)))
        drawn.append({name: own_class_id(str(tmp_path), name) for name in names})
    assert drawn[0] == drawn[1]
    assert len({tuple(palette()[i]) for i in drawn[0].values()}) == 300
    wider = {tuple(palette()[i]) for i in drawn[0].values() if i > 255}
    assert len(wider) == 65 and not wider & {tuple(c) for c in palette()[:256]}
    from sources.voc_classes import labelmap_colour_ids

    by_colour = {tuple(row[:3]): row[3] for row in labelmap_colour_ids(str(tmp_path))}
    assert by_colour[0, 0, 0] == 0 and len(by_colour) == 301
    assert sorted(by_colour.values())[1:] == sorted(drawn[0].values())


def test_a_labelmaps_colours_take_the_class_table_once(tmp_path: Path, monkeypatch):
    """`labelmap_colour_ids` outside a run (a script, `check`) took the dataset's class table again for
    each own class (each `own_class_id` its own `once_per_run` with no memo): 68.7 CPU-s at 5,000
    classes. It takes the table once, and draws each class as `own_class_id` does."""
    from sources import voc_classes

    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n" + "".join(
        f"c{n:03d}:{n},9,9::\n" for n in range(1, 201)))
    real, calls = voc_classes.own_class_table, []
    monkeypatch.setattr(voc_classes, "own_class_table", lambda root: calls.append(root) or real(root))
    rows = voc_classes.labelmap_colour_ids(str(tmp_path))
    assert len(calls) == 1 and len(rows) == 201
    table = real(str(tmp_path))
    assert {(r, i) for r, _, _, i in rows[1:]} == {(n, table[f"c{n:03d}"]) for n in range(1, 201)}


def test_two_classes_of_one_labelmap_colour_are_a_notice_naming_both(tmp_path: Path):
    """CVAT lets two labels take one colour; datumaro paints both alike, so a map cannot tell them
    apart and both were drawn as the first line's class without a word. The build's notices (and
    `check`'s) now name both and the class they are drawn as."""
    import yaml

    from uvd_pipeline.config import load_config
    from uvd_pipeline.source_factory import source_notices

    (tmp_path / "cvat").mkdir()
    _cvat_voc_export(tmp_path / "cvat", "segmentation_mask", {**CVAT_LABELS, "apple": CVAT_LABELS["corn"]})
    (tmp_path / "cvat" / "ImageSets" / "Segmentation" / "default.txt").rename(
        tmp_path / "cvat" / "ImageSets" / "Segmentation" / "trainval.txt")
    config = {"output": str(tmp_path / "out"), "image": {"size": 64}, "split": {"val_fraction": 0.0},
              "sources": [{"name": "cvat", "type": "segmentation", "layout": "voc", "path": str(tmp_path / "cvat"),
                           "num_shards": 1, "pairs_per_sentence": 2, "remainder": "wrap"}],
              "tokenizer": {"enabled": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert source_notices(load_config(str(tmp_path / "c.yaml")))["cvat"] == [
        "cvat: labelmap.txt gives apple, corn one colour (51, 221, 255): their SegmentationClass/ pixels cannot be "
        "told apart and are all drawn as apple (the first line's)"]


def test_a_grey_map_stored_as_rgb_beside_a_labelmap_is_read_as_its_greys(tmp_path: Path):
    """A class map of greys written as RGB (OpenCV's `imwrite` of a 3-channel index map) beside a
    labelmap.txt of colours: greys the file lists for no class are the map's classes, as they were
    before the file's colours were read (VOC's bit colours: car is (128, 128, 128), grey 7 none)."""
    from transforms.annotations import palette

    _cvat_voc_export(tmp_path, "pascal_voc")
    grey = np.zeros(SIZE, np.uint8)
    grey[10:30, 10:30] = 7
    cv2.imwrite(str(tmp_path / "SegmentationClass" / "frame_000000.png"), np.stack([grey] * 3, axis=2))
    (tmp_path / "ImageSets" / "Segmentation" / "default.txt").rename(tmp_path / "ImageSets" / "Segmentation" / "train.txt")
    record = next(r for r in _read_all(SegmentationSource("g", str(tmp_path), "voc"))
                  if r.key == "g-frame_000000-segmentation")
    assert record.annotation["colour_ids"][0] == [0, 0, 0, 0]
    assert np.array_equal(_render_target(record), palette()[grey])
