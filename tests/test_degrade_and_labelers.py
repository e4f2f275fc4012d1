"""Synthetic degradations and pseudo-labelers on real images."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.degrade import SYNTHETIC_TASKS, grayscale, inpainting_mask, synthetic_pair
from uvd_pipeline.labelers import LabelerError, check_spec, get_labeler, sgbm_disparity, LabelContext
from uvd_pipeline.sample import media


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import cv2

    return cv2.resize(media.photo("coffee"), (256, 256), interpolation=cv2.INTER_AREA)


def test_colorization_input_is_the_lvm_luma(photo):
    gray = grayscale(photo)
    expected = np.round(0.2989 * photo[..., 0] + 0.5870 * photo[..., 1] + 0.1140 * photo[..., 2])
    assert np.array_equal(gray[..., 0], expected.astype(np.uint8))
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_inpainting_mask_recipe():
    squares = 0
    for seed in range(400):
        mask = inpainting_mask(256, 256, np.random.default_rng(seed))
        blocks = mask.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1)
        if all(b.all() or not b.any() for b in blocks):
            continue  # the grid of 32-px patches
        ys, xs = np.nonzero(mask)  # otherwise it must be one filled square of side U[0.1, 0.5) * 256
        side = ys.max() - ys.min() + 1
        assert side == xs.max() - xs.min() + 1 and mask.sum() == side * side
        assert int(0.1 * 256) <= side < 0.5 * 256
        squares += 1
    assert 0.22 < squares / 400 < 0.38  # p = 0.3


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_synthetic_pairs_are_seeded_and_change_the_input(photo, task):
    first = synthetic_pair(task, photo, np.random.default_rng(7))
    again = synthetic_pair(task, photo, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    source, target = first
    assert source.shape == target.shape == photo.shape and source.dtype == np.uint8
    if task == "style":
        assert np.array_equal(source, photo) and not np.array_equal(target, photo)
    else:
        assert np.array_equal(target, photo) and not np.array_equal(source, photo)
    if task == "low_light":
        assert source.mean() < photo.mean() * 0.6


def test_sgbm_on_the_real_middlebury_pair():
    """Semi-global matching recovers the real ground-truth disparity of the motorcycle pair."""
    import cv2
    from PIL import Image

    left = np.asarray(Image.open(media.package_file("skimage", "data/motorcycle_left.png")).convert("RGB"))
    right = np.asarray(Image.open(media.package_file("skimage", "data/motorcycle_right.png")).convert("RGB"))
    truth = np.load(media.package_file("skimage", "data/motorcycle_disp.npz"))["arr_0"]
    scale = 0.5
    small = [cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for x in (left, right)]
    estimate = sgbm_disparity(*small, num_disparities=96)
    truth_small = cv2.resize(np.where(np.isfinite(truth), truth, 0), None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_NEAREST) * scale
    both = (estimate > 0) & (truth_small > 0)
    assert both.mean() > 0.5
    error = np.abs(estimate[both] - truth_small[both])
    assert np.median(error) < 1.5 and (error < 3).mean() > 0.75


def test_labeler_specs_are_checked_before_the_build(tmp_path):
    check_spec({"name": "canny"}, "edges")
    with pytest.raises(LabelerError, match="unknown labeler"):
        check_spec({"name": "dpt"})
    with pytest.raises(LabelerError, match="makes edges targets, not depth"):
        check_spec({"name": "canny"}, "depth")
    # parameters: names, types and ranges, whoever passes the spec (the config checks them too)
    with pytest.raises(LabelerError, match=r"^sigma: Input should be a valid number \(got 'abc'\); sigmaa: unknown "
                                           r"parameter; canny takes sigma$"):
        check_spec({"name": "canny", "sigma": "abc", "sigmaa": 0.5}, "edges")
    with pytest.raises(LabelerError, match="block_size: must be odd"):
        check_spec({"name": "sgbm", "block_size": 4}, "depth")
    with pytest.raises(LabelerError, match="sigma: Input should be less than or equal to 1"):
        get_labeler({"name": "canny", "sigma": 7.0})
    with pytest.raises(LabelerError, match="needs `config`"):
        check_spec({"name": "mmpose", "checkpoint": "x"}, "pose")
    (tmp_path / "c.py").write_text("# config")
    (tmp_path / "w.pth").write_bytes(b"0")
    try:
        import mmpose  # noqa: F401
    except Exception:
        with pytest.raises(LabelerError, match=r"pip install -e '\.\[mmpose\]'"):
            check_spec({"name": "mmpose", "config": str(tmp_path / "c.py"), "checkpoint": str(tmp_path / "w.pth")})


def test_canny_labeler_gives_white_edges(photo):
    edges = get_labeler({"name": "canny"})(photo, LabelContext())
    assert set(np.unique(edges)) == {0, 255} and 0.01 < (edges[..., 0] > 0).mean() < 0.4


def test_sgbm_target_with_no_matched_pixel_is_an_empty_target(tmp_path):
    """A KITTI-layout pair of a textureless view (a flat grey wall, as ImageMagick's `xc:` paints
    it) whose depth comes from the sgbm labeler: semi-global matching matches no pixel, and the
    all-black target was accepted as the depth of the image, where a disparity map with no
    measurement is `empty_target`. The same rule holds for the labeler's target; a textured pair
    (Middlebury's motorcycle) beside it still renders its depth."""
    import subprocess

    from PIL import Image

    from sources.records import PairRecord, Reject
    from sources.stereo import StereoSource
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    training = tmp_path / "training"
    for folder in ("image_2", "image_3"):
        (training / folder).mkdir(parents=True)
        subprocess.run(["convert", "-size", "192x64", "xc:gray(47%)", str(training / folder / "000000_10.png")],
                       check=True)
    for folder, view in (("image_2", "left"), ("image_3", "right")):
        with Image.open(media.package_file("skimage", f"data/motorcycle_{view}.png")) as image:
            image.convert("RGB").resize((192, 64), Image.BILINEAR).save(training / folder / "000001_10.png")
    source = StereoSource("kitti", str(tmp_path), tasks=("depth",), labeler=(("name", "sgbm"),))
    records = [i for u in source.units() for i in source.read(u)]
    assert all(isinstance(r, PairRecord) and "labeler" in r.annotation for r in records)
    rendered = {r.key: render_pair(r, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0)) for r in records}
    flat = rendered["kitti-000000_10-depth"]
    assert isinstance(flat, Reject) and (flat.stage, flat.reason) == ("annotation", "empty_target")
    assert "sgbm" in flat.detail
    textured = rendered["kitti-000001_10-depth"]
    assert not isinstance(textured, Reject) and decode_png(textured.images[1]).any()


@pytest.mark.parametrize("asked", ["labeler", "edges without a map"])
@pytest.mark.parametrize("view", ["flat", "luma_flat"])
def test_canny_target_with_no_edge_is_an_empty_target(tmp_path, view, asked):
    """A view Canny finds no edge in: one colour (ffmpeg's `color` source, a blank frame or a
    fade), or a frame whose grey is flat though its colours are not (`eq=contrast=0.05` keeps
    testsrc2's chroma): the all-black edge map was kept as the image's target, saying it has no
    edge where Canny saw nothing (the second plainly has structure). As the sgbm labeler's
    disparity that matched no pixel, it is now `empty_target`; a sharp frame beside it still draws.
    So for the canny labeler and for an edges pair without a map (`{}`: Canny of the input) alike."""
    import subprocess

    from sources.records import PairRecord, Reject
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    filters = {"flat": ["color=c=0x336699:s=320x240"], "luma_flat": ["testsrc2=s=320x240", "-vf", "eq=contrast=0.05"],
               "sharp": ["testsrc2=s=320x240"]}
    rendered = {}
    for name in (view, "sharp"):
        path = tmp_path / f"{name}.jpg"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", *filters[name], "-frames:v", "1",
                        str(path)], check=True)
        record = PairRecord(key=f"web-{name}-edges", source="web", group=name, task="edges", image_uri=str(path),
                            annotation={"labeler": {"name": "canny"}} if asked == "labeler" else {})
        rendered[name] = render_pair(record, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0))
    empty = rendered[view]
    assert isinstance(empty, Reject) and (empty.stage, empty.reason) == ("annotation", "empty_target"), empty
    assert "canny" in empty.detail.lower()
    sharp = rendered["sharp"]
    assert not isinstance(sharp, Reject) and decode_png(sharp.images[1]).any()


@pytest.mark.parametrize("labeled", ["canny labeler", "edges without a map"])
def test_canny_edges_of_a_padded_canvas_are_the_images_not_the_letterboxs(tmp_path, labeled):
    """`resize: pad` letterboxes a wide frame (ffmpeg: grey with a white box drawn on it) on a black
    canvas; Canny ran on the whole canvas and drew a line the width of the canvas where the image
    meets the pad (old code: rows 19 and 43 of 64 all edge), an edge of the letterbox, not of the
    image. Now the edges are the image's alone: those of its own pixels on the canvas, nothing
    in the pad or along its border."""
    import subprocess

    from sources.records import PairRecord, Reject
    from transforms.annotations import canny_edges
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    path = tmp_path / "wide.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=0x808080:s=640x240", "-vf",
                    "drawbox=x=200:y=60:w=200:h=100:color=white:t=fill", "-frames:v", "1", str(path)], check=True)
    annotation = {"labeler": {"name": "canny"}} if labeled == "canny labeler" else {}
    record = PairRecord(key="w-edges", source="w", group="w", task="edges", image_uri=str(path), annotation=annotation)
    rendered = render_pair(record, RenderSettings(64, "pad", 0, 10**9, 1, 0, 0.0))
    assert not isinstance(rendered, Reject), rendered
    image, target = (decode_png(i) for i in rendered.images)
    rows = np.nonzero(image.any(axis=(1, 2)))[0]
    top, bottom = rows[0], rows[-1] + 1  # the image's rows on the canvas: 240/640 of 64, centred
    assert (top, bottom) == (20, 44)
    expected = np.zeros_like(target)
    expected[top:bottom] = canny_edges(image[top:bottom])
    assert np.array_equal(target, expected)
    assert not target[:top + 1].any() and not target[bottom - 1:].any() and target.any()


def test_sgbm_depth_of_a_padded_stereo_pair_stays_on_the_image(tmp_path):
    """A KITTI-layout stereo pair (Middlebury's motorcycle, 372x112) under `resize: pad`: semi-global
    matching ran on the whole letterboxed canvas, and its disparity bled into the pad (old code:
    1,010 pad pixels of a 128 canvas drew depth where there is no image). Now it matches the
    image's own pixels alone: the target inside them is the labeler's depth of the two views'
    pixels, the pad black (no depth)."""
    from PIL import Image

    from sources.records import Reject
    from sources.stereo import StereoSource
    from transforms.annotations import depth_to_colour
    from uvd_pipeline.render import RenderSettings, decode_png
    from uvd_pipeline.render_annotated import render_pair

    training = tmp_path / "training"
    for folder, view in (("image_2", "left"), ("image_3", "right")):
        (training / folder).mkdir(parents=True)
        with Image.open(media.package_file("skimage", f"data/motorcycle_{view}.png")) as image:
            image.convert("RGB").resize((372, 112), Image.BILINEAR).save(training / folder / "000001_10.png")
    source = StereoSource("kitti", str(tmp_path), tasks=("depth",), labeler=(("name", "sgbm"),))
    [record] = [i for u in source.units() for i in source.read(u)]
    rendered = render_pair(record, RenderSettings(128, "pad", 0, 10**9, 1, 0, 0.0))
    assert not isinstance(rendered, Reject), rendered
    left, target = (decode_png(i) for i in rendered.images)
    rows = np.nonzero(left.any(axis=(1, 2)))[0]
    top, bottom = rows[0], rows[-1] + 1
    assert (top, bottom) == (44, 83)
    assert not target[:top].any() and not target[bottom:].any()
    right = render_pair(record.__class__(**{**record.__dict__, "key": "r", "task": "colorization",
                                            "image_uri": record.annotation["right_uri"],
                                            "annotation": {"synthetic": "colorization"}}),  # target: the view
                        RenderSettings(128, "pad", 0, 10**9, 1, 0, 0.0))
    expected = depth_to_colour(sgbm_disparity(left[top:bottom], decode_png(right.images[1])[top:bottom]),
                               disparity=True)
    assert np.array_equal(target[top:bottom], expected) and expected.any()


def test_sgbm_on_a_pair_too_narrow_on_its_padded_canvas_is_an_empty_target(tmp_path):
    """A portrait stereo pair (24x600, made by ffmpeg's testsrc2, the right view shifted by 4 px)
    under `resize: pad` on a 256 canvas: the views are 10 px wide there, narrower than semi-global
    matching's least search (16 px), and OpenCV failed to allocate 18446744073709550089 bytes: the
    build's `internal_error` (narrower still, the process crashed). Now it is `empty_target`
    naming the width; the same pair drawn squashed still has depth."""
    import subprocess

    from sources.records import PairRecord, Reject
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    left, right = tmp_path / "left.png", tmp_path / "right.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=24x600", "-frames:v", "1",
                    str(left)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(left), "-vf", "crop=20:600:4:0,pad=24:600:0:0",
                    str(right)], check=True)
    record = PairRecord(key="k-n-depth", source="k", group="n", task="depth", image_uri=str(left),
                        annotation={"labeler": {"name": "sgbm"}, "right_uri": str(right)})
    narrow = render_pair(record, RenderSettings(256, "pad", 0, 10**9, 1, 0, 0.0))
    assert isinstance(narrow, Reject) and (narrow.stage, narrow.reason) == ("annotation", "empty_target")
    assert "wider than 16 px; the image is 10 px wide" in narrow.detail
    assert not isinstance(render_pair(record, RenderSettings(64, "squash", 0, 10**9, 1, 0, 0.0)), Reject)
