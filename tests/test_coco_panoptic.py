"""COCO panoptic as its official download unpacks (`annotations/panoptic_val2017.json` beside
`annotations/panoptic_val2017/*.png`, images in `val2017/`), made here as panopticapi's
`converters/detection2panoptic_coco_format.py` makes it from a COCO detection-format file, and
read back against independent computations: panopticapi's `rgb2id` in NumPy on the PNG, and the
targets that file's COCO instances pairs render (pycocotools' masks)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sources.coco import CocoSource, load_index
from sources.records import PairRecord, Reject
from transforms import maps
from transforms.annotations import colour_of
from uvd_pipeline.config import ConfigError
from uvd_pipeline.render import RenderSettings, decode_png
from uvd_pipeline.render_annotated import render_pair

SQUARE = RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0)  # a 64x64 image onto a 64 canvas: pixel for pixel
PERSON, SKY = 1, 187  # panoptic_coco_categories.json: person a thing, sky-other-merged stuff
CATEGORIES = [{"id": PERSON, "name": "person", "supercategory": "person", "isthing": 1, "color": [220, 20, 60]},
              {"id": SKY, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0, "color": [70, 130, 180]}]
PANOPTIC = "annotations/panoptic_val2017.json"


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """panopticapi.utils.rgb2id on an image array."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _detection_file(root: Path) -> dict:
    """A COCO detection-format file of one 64x64 image (two people, a crowd of people, sky), each
    object's bbox and area measured on its mask by pycocotools, as COCO's are."""
    from pycocotools import mask as mask_utils

    crowd = np.zeros((64, 64), np.uint8, order="F")
    crowd[50:61, 4:21] = 1
    shapes = [(PERSON, [[4, 4, 20, 4, 20, 30, 4, 30]], 0), (PERSON, [[30, 4, 44, 4, 44, 20, 30, 20]], 0),
              (PERSON, mask_utils.encode(crowd), 1), (SKY, [[48, 0, 64, 0, 64, 64, 48, 64]], 0)]
    anns = []
    for ann_id, (category, seg, crowded) in enumerate(shapes, 1):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, 64, 64)) if isinstance(seg, list) else seg
        if isinstance(seg, dict):
            seg = {"size": seg["size"], "counts": seg["counts"].decode("ascii")}
        anns.append({"id": ann_id, "image_id": 139, "category_id": category, "segmentation": seg, "iscrowd": crowded,
                     "bbox": mask_utils.toBbox(rle).tolist(), "area": int(mask_utils.area(rle))})
    (root / "val2017").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(pixels).save(root / "val2017" / "000000000139.jpg", quality=90)
    return {"info": {}, "licenses": [], "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 64,
                                                    "height": 64}],
            "annotations": anns, "categories": CATEGORIES}


def _to_panoptic(detection_json: Path, output_json: Path) -> None:
    """panopticapi's detection2panoptic_coco_format, one process: each object's mask (pycocotools'
    annToMask) painted in a colour from its category's (a thing's next one jittered, IdGenerator),
    its id R + 256 G + 256^2 B; the PNG saved by Pillow from the uint8 RGB array, the JSON by json."""
    from pycocotools.coco import COCO

    coco = COCO(str(detection_json))
    folder = output_json.with_suffix("")
    folder.mkdir()
    categories = {c["id"]: c for c in CATEGORIES}
    taken = {tuple(c["color"]) for c in CATEGORIES if c["isthing"] == 0}
    jitter = np.random.RandomState(0)
    records = []
    for img_id in coco.getImgIds():
        img = coco.loadImgs(img_id)[0]
        pan = np.zeros((img["height"], img["width"], 3), np.uint8)
        overlaps = np.zeros((img["height"], img["width"]), np.uint32)
        segments_info = []
        for ann in coco.loadAnns(coco.getAnnIds(img_id)):
            category = categories[ann["category_id"]]
            colour = tuple(category["color"])
            if category["isthing"]:
                while colour in taken:
                    colour = tuple(np.clip(np.array(category["color"]) + jitter.randint(-30, 31, 3), 0, 255))
                taken.add(colour)
            mask = coco.annToMask(ann)
            overlaps += mask
            pan[mask == 1] = colour
            segment = {k: v for k, v in ann.items() if k not in ("segmentation", "image_id")}
            segments_info.append({**segment, "id": int(colour[0] + 256 * colour[1] + 256 * 256 * colour[2])})
        assert not (overlaps > 1).any()
        file_name = "{}.png".format(img["file_name"].rsplit(".")[0])
        records.append({"image_id": img_id, "file_name": file_name, "segments_info": segments_info})
        Image.fromarray(pan).save(folder / file_name)
    data = json.loads(detection_json.read_text())
    data["annotations"], data["categories"] = records, CATEGORIES
    with open(output_json, "w") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The download as unpacked, and the detection-format files it was made from (all objects, and
    things only: what `instances_val2017.json` holds of them)."""
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    detection = _detection_file(root)
    (root / "annotations" / "detection_val2017.json").write_text(json.dumps(detection))
    things = {**detection, "annotations": [a for a in detection["annotations"] if a["category_id"] == PERSON]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(things))
    _to_panoptic(root / "annotations" / "detection_val2017.json", root / PANOPTIC)
    return root


def _pairs(root: Path, files: tuple[str, ...], tasks=("detection", "segmentation"), **fields) -> dict:
    load_index.cache_clear()
    source = CocoSource("coco", str(root), files, "val2017", tasks, **fields)
    return {i.key.rsplit("-", 1)[1]: i for unit in source.units() for i in source.read(unit)}


def _target(pair: PairRecord) -> np.ndarray:
    result = render_pair(pair, SQUARE)
    assert not isinstance(result, Reject), result
    return decode_png(result.images[1])


def test_panoptic_segmentation_is_its_pngs_segments_by_category(release: Path):
    """`check` refused the panoptic file (its annotations have no ids); now each PNG pixel's segment
    (rgb2id) is drawn in its category's colour, void black, pixel for pixel what the COCO
    instances pair of the same objects draws from pycocotools' masks."""
    pairs = _pairs(release, (PANOPTIC,))
    target = _target(pairs["segmentation"])
    info = json.loads((release / PANOPTIC).read_text())["annotations"][0]
    ids = rgb2id(np.asarray(Image.open(release / "annotations" / "panoptic_val2017" / info["file_name"])))
    expected = np.zeros((64, 64, 3), np.uint8)
    for segment in info["segments_info"]:
        expected[ids == segment["id"]] = colour_of(segment["category_id"])
    assert len(np.unique(ids)) == 5 and (ids == 0).any()  # 4 segments and void
    assert (target == expected).all()
    instances = _pairs(release, ("annotations/detection_val2017.json",), ("segmentation",))
    assert (target == _target(instances["segmentation"])).all()


def test_panoptic_detection_draws_its_things_as_the_instances_pair_does(release: Path):
    """A thing segment's box is an object's box (a crowd region left out and counted, stuff no
    object): the target is the instances file's detection target, byte for byte."""
    pairs = _pairs(release, (PANOPTIC,), ("detection", "segmentation", "pose"))
    instances = _pairs(release, ("annotations/instances_val2017.json",), ("detection",))
    assert (_target(pairs["detection"]) == _target(instances["detection"])).all()
    assert pairs["detection"].lineage["crowd_regions_left_out"] == 1 == instances["detection"].lineage[
        "crowd_regions_left_out"]
    assert isinstance(pairs["pose"], Reject) and pairs["pose"].reason == "no_pose_annotations"


def test_isthing_written_as_json_booleans_is_read_as_panopticapi_reads_it(release: Path, tmp_path: Path):
    """`json.dump` writes Python's False as `false`: sky (`"isthing": false`) was read as a thing
    and drawn as a box; panopticapi compares isthing to 0/1, so false is stuff, true a thing."""
    data = json.loads((release / PANOPTIC).read_text())
    for category in data["categories"]:
        category["isthing"] = bool(category["isthing"])
    written = tmp_path / "panoptic_bool.json"
    with open(written, "w") as f:
        json.dump(data, f)
    assert '"isthing": false' in written.read_text()
    pairs = _pairs(release, (str(written),), ("detection",), panoptic_dir="annotations/panoptic_val2017")
    instances = _pairs(release, ("annotations/instances_val2017.json",), ("detection",))
    assert pairs["detection"].annotation["categories"] == [PERSON, PERSON]
    assert (_target(pairs["detection"]) == _target(instances["detection"])).all()


def test_the_converters_empty_and_shared_segments_draw_what_the_instances_pair_draws(release: Path, tmp_path: Path):
    """detection2panoptic_coco_format lists a sub-pixel object (pycocotools draws no pixel of it)
    as a segment its PNG does not hold, and gives two stuff objects of one category one id: the
    pair was panoptic_missing_segment, then bad_annotation; now it draws what the detection-format
    file's instances pair draws, the empty segment counted in its lineage."""
    from pycocotools import mask as mask_utils

    detection = json.loads((release / "annotations" / "detection_val2017.json").read_text())
    for category, polygon in ((PERSON, [10.2, 40.1, 10.6, 40.1, 10.6, 40.5]), (SKY, [24, 30, 28, 30, 28, 48, 24, 48])):
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], 64, 64))
        detection["annotations"].append({"id": len(detection["annotations"]) + 1, "image_id": 139, "iscrowd": 0,
                                         "category_id": category, "segmentation": [polygon],
                                         "bbox": mask_utils.toBbox(rle).tolist(), "area": int(mask_utils.area(rle))})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").symlink_to(release / "val2017")
    (tmp_path / "annotations" / "detection_val2017.json").write_text(json.dumps(detection))
    _to_panoptic(tmp_path / "annotations" / "detection_val2017.json", tmp_path / PANOPTIC)
    listed = _segments(json.loads((tmp_path / PANOPTIC).read_text()))
    assert listed[4]["area"] == 0 and listed[5]["id"] == listed[3]["id"]  # the empty person; the second sky
    pair = _pairs(tmp_path, (PANOPTIC,), ("segmentation",))["segmentation"]
    instances = _pairs(tmp_path, ("annotations/detection_val2017.json",), ("segmentation",))["segmentation"]
    rendered = render_pair(pair, SQUARE)
    assert not isinstance(rendered, Reject), rendered
    assert rendered.members[0]["panoptic_segments_without_pixels"] == 1
    assert (decode_png(rendered.images[1]) == _target(instances)).all()


def test_panoptic_ids_are_read_as_rgb2id_reads_them():
    """Every byte of each channel counts in its place (R + 256 G + 256^2 B), up to id 2^24 - 1."""
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    assert (maps.decode_panoptic_ids(out.getvalue(), 7, 9) == rgb2id(rgb)).all()


def _png(rgb: np.ndarray, path: Path) -> str:
    Image.fromarray(rgb).save(path)
    return str(path)


@pytest.mark.parametrize("case, reason", [
    ("missing", "missing_annotation"), ("unlisted", "panoptic_unlisted_segment"), ("size", "annotation_size_mismatch"),
    ("rgba", "bad_panoptic_png"), ("grey", "bad_panoptic_png"), ("palette", "panoptic_unlisted_segment"),
])
def test_a_png_that_disagrees_with_its_json_is_a_counted_reject(release: Path, tmp_path: Path, case: str,
                                                                reason: str):
    """As panopticapi's pq_compute fails on them: an id the PNG holds that segments_info does not
    list; and a PNG missing, of another size than its image, or
    not RGB (no R + 256 G + 256^2 B ids in it); a palette of other colours (a lossy quantize) holds
    other ids."""
    pair = _pairs(release, (PANOPTIC,), ("segmentation",))["segmentation"]
    rgb = np.asarray(Image.open(pair.annotation["panoptic_uri"]))
    ids = rgb2id(rgb)
    made = {
        "missing": lambda: str(tmp_path / "gone.png"),
        "unlisted": lambda: _png(np.where((ids == 0)[..., None], np.uint8([57, 48, 0]), rgb), tmp_path / "u.png"),
        "size": lambda: _png(rgb[:32], tmp_path / "s.png"),
        "rgba": lambda: _png(np.dstack([rgb, np.full((64, 64), 255, np.uint8)]), tmp_path / "r.png"),
        "grey": lambda: _png(rgb[..., 0], tmp_path / "g.png"),
        "palette": lambda: Image.fromarray(rgb).quantize(3).save(tmp_path / "p.png") or str(tmp_path / "p.png"),
    }[case]()
    result = render_pair(dataclasses.replace(pair, annotation={**pair.annotation, "panoptic_uri": made}), SQUARE)
    assert isinstance(result, Reject) and result.reason == reason, result
    assert Path(made).name in result.detail  # the reject's input is the image: its detail names the PNG
    if case == "unlisted":
        assert "12345" in result.detail  # 57 + 256 * 48


def test_imagemagick_palette_resave_is_read_through_its_palette(release: Path, tmp_path: Path):
    """`convert pan.png -strip out.png` writes a PNG of few colours as a palette (colour type 3):
    it was bad_panoptic_png, while detectron2, Mask2Former and MMDetection read it as RGB; its
    ids are now its palette's colours', the target the RGB PNG's byte for byte."""
    import subprocess

    pair = _pairs(release, (PANOPTIC,), ("segmentation",))["segmentation"]
    resaved = tmp_path / "resaved.png"
    subprocess.run(["convert", pair.annotation["panoptic_uri"], "-strip", str(resaved)], check=True)
    assert resaved.read_bytes()[25] == 3  # IHDR colour type: palette
    as_rgb = rgb2id(np.asarray(Image.open(resaved).convert("RGB")))  # detectron2's read_image(..., "RGB")
    assert (maps.decode_panoptic_ids(resaved.read_bytes(), 64, 64) == as_rgb).all()
    again = dataclasses.replace(pair, annotation={**pair.annotation, "panoptic_uri": str(resaved)})
    assert (_target(again) == _target(pair)).all()


def test_an_rgb_png_with_a_transparent_colour_is_read_as_rgb(release: Path, tmp_path: Path):
    """ImageMagick's `convert pan.png -define png:color-type=2 -transparent black out.png` keeps the
    PNG 8-bit RGB (colour type 2) with a tRNS chunk naming black: OpenCV read that as 4 channels,
    and the pair was bad_panoptic_png ("got uint8 4 channel(s)"), while Pillow, panopticapi and
    detectron2 read it as RGB with the same ids. The transparency is now dropped: the target is the
    plain PNG's byte for byte."""
    import subprocess

    pair = _pairs(release, (PANOPTIC,), ("segmentation",))["segmentation"]
    resaved = tmp_path / "trns.png"
    subprocess.run(["convert", pair.annotation["panoptic_uri"], "-define", "png:color-type=2", "-transparent",
                    "black", str(resaved)], check=True)
    data = resaved.read_bytes()
    assert data[24:26] == bytes([8, 2]) and b"tRNS" in data  # IHDR: 8-bit truecolour, a transparent colour
    assert (maps.decode_panoptic_ids(data, 64, 64) == rgb2id(np.asarray(Image.open(resaved).convert("RGB")))).all()
    again = dataclasses.replace(pair, annotation={**pair.annotation, "panoptic_uri": str(resaved)})
    assert (_target(again) == _target(pair)).all()


def test_a_16_bit_rgb_png_is_refused_on_its_header(release: Path, tmp_path: Path, monkeypatch):
    """ImageMagick's `-depth 16 PNG48:` (Pillow calls it "RGB" too): refused from IHDR's bit depth,
    never decoded, as docs/rejects.md says."""
    import subprocess

    pair = _pairs(release, (PANOPTIC,), ("segmentation",))["segmentation"]
    deep = tmp_path / "deep.png"
    subprocess.run(["convert", pair.annotation["panoptic_uri"], "-depth", "16", f"PNG48:{deep}"], check=True)
    assert deep.read_bytes()[24:26] == bytes([16, 2])  # IHDR: 16-bit, truecolour
    monkeypatch.setattr(maps, "_opencv_decode", lambda data: pytest.fail("decoded before its header was judged"))
    with pytest.raises(maps.MapError) as caught:
        maps.decode_panoptic_ids(deep.read_bytes(), 64, 64)
    assert caught.value.reason == "bad_panoptic_png" and "16-bit RGB" in caught.value.detail


def test_a_panoptic_png_over_the_memory_budget_is_refused_on_its_header(monkeypatch):
    """Judged on the header's size before any decode: OpenCV never sees it. The budget lies between
    the decode's own cost and that plus the ids' work (`PANOPTIC_WORK_BYTES`): refused only while
    the work is charged."""
    from transforms.decode_budget import decode_cost

    out = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(out, format="PNG")
    monkeypatch.setattr(maps, "DEFAULT_MAX_DECODE_BYTES",
                        decode_cost(64, 64, "RGB") + 64 * 64 * maps.PANOPTIC_WORK_BYTES // 2)
    monkeypatch.setattr(maps, "_opencv_decode", lambda data: pytest.fail("decoded past its budget"))
    with pytest.raises(maps.MapError) as caught:
        maps.decode_panoptic_ids(out.getvalue(), 64, 64)
    assert caught.value.reason == "annotation_too_large"


def _peak_rss_growth(work) -> int:
    """Bytes the process's peak resident memory rises by during `work()` (Linux: the peak is reset
    through /proc/self/clear_refs), what a worker's memory limit sees: NumPy's own C++ allocations
    included, which tracemalloc does not trace."""
    def status(field: str) -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    work()
    return status("VmHWM:") - before


def test_a_png_of_millions_of_unlisted_ids_stays_within_its_charge(tmp_path: Path):
    """np.unique on the unlisted ids hashed them: 60-69 bytes a pixel of a 1536x1536 PNG of 2.4M
    ids (41 charged; 69 B/px and 43 s at 4096x4096); sorted (17 B/px), they stay within
    decode_cost + PANOPTIC_WORK_BYTES."""
    import types

    import cv2

    from transforms.decode_budget import decode_cost
    from uvd_pipeline import render_annotated

    n = 1536
    ids = (np.arange(n * n, dtype=np.uint32) * 7919 % (1 << 24)).reshape(n, n)  # each pixel its own id
    rgb = np.dstack([ids & 255, ids >> 8 & 255, ids >> 16]).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "many.png"), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del ids, rgb
    annotation = {"panoptic_uri": str(tmp_path / "many.png"), "segment_ids": [1], "segment_categories": [1]}
    caught = []

    def work():
        try:
            render_annotated._panoptic_classes(annotation, types.SimpleNamespace(in_h=n, in_w=n), SQUARE)
        except render_annotated.AnnotationError as exc:
            caught.append(exc)

    growth = _peak_rss_growth(work)
    assert caught and caught[0].reason == "panoptic_unlisted_segment"
    assert "9, 18, 27, 28, 37 ... (2359295 in all)" in caught[0].detail  # id 0 is void: all other ids unlisted
    assert growth <= decode_cost(n, n, "RGB") + n * n * maps.PANOPTIC_WORK_BYTES, growth / n / n


def _segments(data: dict) -> list[dict]:
    return data["annotations"][0]["segments_info"]


@pytest.mark.parametrize("change, detail", [
    (lambda d: _segments(d)[0].update(id=0), "segments_info[0] has no segment id"),
    (lambda d: _segments(d)[3].update(id=_segments(d)[0]["id"]), "segments_info[3] repeats segment id"),
    (lambda d: _segments(d)[2].update(category_id=5), "segments_info[2] (id"),
    (lambda d: _segments(d)[3].update(category_id=0), "outside 1..65535"),
    (lambda d: d["annotations"].append(d["annotations"][0]), "both give image 139 a panoptic PNG"),
    (lambda d: d["categories"][1].update(isthing="no"), "neither 0/false (stuff) nor 1/true (thing)"),
])
def test_segments_info_that_panopticapi_cannot_read_rejects_its_image(release: Path, tmp_path: Path, change,
                                                                      detail: str):
    """A segment of id 0 (void), an id listed twice with another category, a category the file does not declare or one the
    palette draws black (0), two entries of one image: each a bad_annotation of that image's pairs,
    the PNGs found through `panoptic_dir`."""
    data = json.loads((release / PANOPTIC).read_text())
    data["categories"].append({"id": 0, "name": "void?", "isthing": 0, "color": [0, 0, 0]})
    change(data)
    bad = tmp_path / "panoptic_bad.json"
    bad.write_text(json.dumps(data))
    pairs = _pairs(release, (str(bad),), panoptic_dir="annotations/panoptic_val2017")
    for pair in pairs.values():
        assert isinstance(pair, Reject) and pair.reason == "bad_annotation" and detail in pair.detail, pair


def test_folders_given_as_file_urls_are_those_folders(release: Path):
    """`panoptic_dir: file:///...` made every pair outside_root, `images_dir: file:///...` stopped
    `check` with a traceback (OutsideRoot): join_inside normalised `file:///x` to `file:/x`, a
    folder under the working directory. A file:// URL is its local folder, as fsspec reads it."""
    load_index.cache_clear()
    source = CocoSource("coco", str(release), (PANOPTIC,), f"file://{release / 'val2017'}", ("segmentation",),
                        panoptic_dir=f"file://{release / 'annotations' / 'panoptic_val2017'}")
    pairs = [record for unit in source.units() for record in source.read(unit)]
    assert len(pairs) == 1 and isinstance(pairs[0], PairRecord), pairs
    as_relative = _pairs(release, (PANOPTIC,), ("segmentation",))["segmentation"]
    assert (_target(pairs[0]) == _target(as_relative)).all()


def test_check_finds_the_panoptic_download_and_names_what_is_missing(release: Path, tmp_path: Path):
    """`split` alone finds `annotations/panoptic_<split>.json` where no instances file is there; a
    PNG folder not unzipped stops `check` naming `panoptic_dir`; a panoptic file beside an
    instances file (two drawings of one image's objects) names `annotation_files`."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.unit_render import list_units

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(release / "val2017", root / "val2017")
    shutil.copy(release / PANOPTIC, root / PANOPTIC)

    def units(**fields):
        load_index.cache_clear()
        return list_units(parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "coco", "type": "coco", "path": str(root), **fields}]}))

    with pytest.raises(ConfigError) as caught:
        units()
    assert str(caught.value).startswith("sources[0].panoptic_dir (coco): ") and "unzip" in str(caught.value)
    shutil.copytree(release / "annotations" / "panoptic_val2017", root / "annotations" / "panoptic_val2017")
    assert units() == {"coco": [(139,)]}
    shutil.copy(release / "annotations" / "instances_val2017.json", root / "annotations")
    with pytest.raises(ConfigError) as caught:
        units(annotation_files=[PANOPTIC, "annotations/instances_val2017.json"])
    assert str(caught.value).startswith("sources[0].annotation_files (coco): ") and "read alone" in str(caught.value)
    with pytest.raises(ConfigError) as caught:  # was read for nothing: the instances file draws without it
        units(annotation_files=["annotations/instances_val2017.json"], panoptic_dir="annotations/panoptic_val2017")
    assert str(caught.value).startswith("sources[0].panoptic_dir (coco): ") and "remove panoptic_dir" in str(caught.value)
