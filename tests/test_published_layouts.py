"""Annotated datasets laid out as their publishers ship them, written by the tools that make them
(ImageMagick for images and label maps, gzip'd JSON for CO3D, pycocotools for COCO masks) and
read back through the source readers and renderers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

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
