"""Memory judged from what a file declares: each hostile input is handled in a child process
whose peak RSS (VmHWM, else ru_maxrss) must stay under 1.5 GB, and must end as a rendered unit or a reject
with the expected reason. Before the budget, the 13000 x 13000 16-bit PNG took 3.1 GB and the
RGBA one 4.9 GB. Videos decode in the child's own decoding process (`sources.budget`), whose peak
counts too (ru_maxrss of the waited-for children): before the video budget, an 8192 x 8192 H.264
took 1.9 GB there (8.1 GB through decord's batches) and an 8192 x 4320 one 1.1 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hostile_corpus import write_gzip_of_blanks, write_png
from transforms.decode import DecodeError, decode_cost, load_image, to_rgb_array
from transforms.maps import MapError, decode_depth

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 1536

CHILD = r'''
import json, resource, sys, traceback
from pathlib import Path
case, folder = sys.argv[1], Path(sys.argv[2])
from sources.records import ImageRecord, PairRecord, Reject
from uvd_pipeline.render import RenderSettings, render_image
from uvd_pipeline.render_annotated import render_pair
SETTINGS = RenderSettings(64, "center_crop", 0, 178_956_970, 1, 0, 0.0)

def run():
    if case in ("png16", "png16_11k", "rgba", "sparse", "zero"):
        return render_image(ImageRecord(case, "web", case, uri=str(folder / f"{case}.png")), SETTINGS)
    if case == "coco20000":
        from sources.coco import CocoSource
        source = CocoSource("coco", str(folder / "coco"), ("ann.json",), "images", ("segmentation",))
        (pair,) = [i for u in source.units() for i in source.read(u)]
        return render_pair(pair, SETTINGS)
    if case == "depth20000":
        pair = PairRecord("d", "kitti", "d", "depth", image_uri=str(folder / "small.png"),
                          annotation={"depth_uri": str(folder / "depth.png"), "format": "png16"})
        return render_pair(pair, SETTINGS)
    if case == "jpeg_pair":
        pair = PairRecord("j", "coco", "j", "detection", image_uri=str(folder / "big.jpg"),
                          annotation={"boxes": [[100.0, 100.0, 4000.0, 4000.0]], "categories": [1]})
        return render_pair(pair, SETTINGS)
    if case == "nesting":
        from sources.coco import CocoSource
        return CocoSource("coco", str(folder / "coco"), ("bomb.json",), "images").units()
    if case == "huge_member":
        from sources.laion import LaionSource
        source = LaionSource("web", str(folder / "big_member"), "webdataset")
        items = [i for u in source.units() for i in source.read(u)]
        rendered = [render_image(i, SETTINGS) for i in items if isinstance(i, ImageRecord)]
        return [r for r in items if isinstance(r, Reject)] + rendered
    if case == "jgz":
        from sources.multiview import Co3dSource
        return list(Co3dSource("co3d", str(folder / "co3d")).read(str(folder / "co3d" / "toy")))
    if case in ("h264_8k", "h264_8k_tight"):
        from sources.budget import Budget
        from sources.video import VideoSource
        from uvd_pipeline.render import render_video
        name, memory = ("8k.mp4", 1536) if case == "h264_8k" else ("8k_wide.mp4", 768)
        source = VideoSource("v", str(folder), limits=Budget(memory_mb=memory))
        items = list(source.read(str(folder / name)))
        return [r for i in items for r in ([i] if isinstance(i, Reject) else render_video(i, SETTINGS))]
    raise ValueError(case)

try:
    result = run()
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    if isinstance(result, list):
        result = [f"reject:{r.reason}" if isinstance(r, Reject) else f"ok:{type(r).__name__}" for r in result]
    outcome = " ".join(result) if isinstance(result, list) else \
        f"reject:{result.reason}" if isinstance(result, Reject) else f"ok:{type(result).__name__}"
except Exception as exc:
    outcome = f"error:{type(exc).__name__}: {exc}"[:300]
# VmHWM is this process image's own peak; ru_maxrss can carry the parent's peak over fork and exec
try:
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from sources import budget
budget._stop_all()  # decoding processes end and are waited for: their peaks count below
decoder = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"outcome": outcome, "peak_mb": round(max(peak, decoder)), "self_mb": round(peak),
                  "decoder_mb": round(decoder)}))
'''


def measure(case: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", CHILD, case, str(folder)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(case, result)  # the figures, under `pytest -s`
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    write_png(folder / "png16.png", 13000, 13000, 16, 0)  # 1.5 MB on disk, just under max_pixels
    write_png(folder / "png16_11k.png", 11000, 11000, 16, 0)
    with open(folder / "sparse.png", "wb") as sparse:  # 1 GiB that takes no disk
        sparse.truncate(1 << 30)
    (folder / "zero.png").symlink_to("/dev/zero")  # what a followed link can lead to: endless bytes
    write_png(folder / "rgba.png", 13000, 13000, 8, 6)
    write_png(folder / "depth.png", 20000, 20000, 16, 0)  # a depth map declaring 400 MP
    cv2.imwrite(str(folder / "small.png"), np.zeros((40, 60, 3), np.uint8))
    coco = folder / "coco"
    (coco / "images").mkdir(parents=True)
    cv2.imwrite(str(coco / "images" / "1.jpg"), np.zeros((40, 60, 3), np.uint8))
    (coco / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 20000, "height": 20000}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                         "segmentation": [[0, 0, 19000, 0, 19000, 19000]]}],
        "categories": [{"id": 1, "name": "x"}]}))
    (coco / "bomb.json").write_bytes(b'{"images": ' + b"[" * 500_000 + b"]" * 500_000 + b"}")
    (folder / "co3d" / "toy").mkdir(parents=True)
    write_gzip_of_blanks(folder / "co3d" / "toy" / "frame_annotations.jgz", 1 << 30)
    # 13000 x 13000 RGB: 1.1 GiB at full size, over the budget; written by a child to keep this process small
    subprocess.run([sys.executable, "-c", "import sys; from PIL import Image; "
                    "Image.new('RGB', (13000, 13000), (90, 120, 200)).save(sys.argv[1], quality=50)",
                    str(folder / "big.jpg")], check=True, timeout=120)
    # an img2dataset-style shard declaring a 1.5 GiB member (the size of the xz bomb that once took
    # 3.3 GB), then a real sample: the member's data is a hole, so the file costs nothing on disk
    (folder / "big_member").mkdir()
    write_tar_with_a_huge_member(folder / "big_member" / "00000.tar", 3 << 29)
    return folder


def write_tar_with_a_huge_member(path: Path, size: int) -> None:
    """A tar whose first member declares `size` bytes of zeros (a sparse hole), then a caption and a
    real JPEG sample: what a reader that trusts the header would read whole."""
    import io
    import tarfile

    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(jpeg, "JPEG")
    with path.open("wb") as out:
        def header(name: str, length: int) -> None:
            info = tarfile.TarInfo(name)
            info.size = length
            out.write(info.tobuf(tarfile.USTAR_FORMAT))

        header("000000000.jpg", size)
        out.seek(-(-size // 512) * 512, os.SEEK_CUR)
        for name, data in (("000000000.txt", b"huge"), ("000000001.jpg", jpeg.getvalue())):
            header(name, len(data))
            out.write(data + bytes(-len(data) % 512))
        out.write(bytes(1024))  # the end-of-archive blocks
        out.write(bytes(-out.tell() % tarfile.RECORDSIZE))


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("png16", "reject:image_too_large"),  # 845 MB declared: refused from the header
    ("png16_11k", "ok:RenderedUnit"),  # 605 MB declared: decoded, converted in strips
    ("rgba", "reject:image_too_large"),  # 1.15 GB declared
    ("sparse", "reject:file_too_large"),  # read up to the cap, never whole
    ("zero", "reject:file_too_large"),
    ("coco20000", "reject:annotation_size_mismatch"),  # the mask takes the decoded image's size
    ("depth20000", "reject:annotation_too_large"),
    ("jpeg_pair", "ok:RenderedUnit"),  # over budget at full size: a DCT-reduced decode
    ("nesting", "error:AnnotationFileError: annotation file"),
    ("jgz", "reject:bad_annotation_file"),  # a 1 MB .jgz expanding to 1 GiB
    ("huge_member", "reject:member_too_large ok:RenderedUnit"),  # 1.5 GiB member skipped, the next kept
])
def test_peak_memory_of_one_hostile_input(corpus: Path, case: str, expected: str):
    result = measure(case, corpus)
    assert result["outcome"].startswith(expected), result
    assert result["peak_mb"] < PEAK_LIMIT_MB, result


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from video_zoo import ffmpeg, require_ffmpeg

    require_ffmpeg()
    folder = tmp_path_factory.mktemp("hostile_video")
    # 8192 x 8192: larger than H.264's highest level allows, so its decoder may hold 16 references;
    # judged from the declaration, so two frames make the case as well as the 17
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=8192x8192", "-frames:v", "2", "-c:v", "libx264", "-preset",
           "ultrafast", str(folder / "8k.mp4"))
    # 8192 x 4320 (level 6.2) under a 768 MB budget: fits only with frames converted at working size
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=8192x4320", "-frames:v", "17", "-c:v", "libx264", "-preset",
           "ultrafast", str(folder / "8k_wide.mp4"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("case, expected, limit_mb", [
    ("h264_8k", "reject:video_too_large", 400),  # refused before a frame is decoded
    ("h264_8k_tight", "ok:Sentence", 768),  # decoded, each frame converted straight to working size
])
def test_peak_memory_of_a_large_frame_video(videos: Path, case: str, expected: str, limit_mb: int):
    result = measure(case, videos)
    assert result["outcome"] == expected, result
    assert result["peak_mb"] < limit_mb, result


def test_cost_is_in_bytes_by_mode_not_pixels():
    grey, grey16, rgba = (decode_cost(1000, 1000, mode) for mode in ("L", "I;16", "RGBA"))
    assert grey < grey16 < rgba
    assert decode_cost(1000, 1000, "RGBA", transposed=True) - rgba == 4_000_000


def test_over_budget_is_refused_from_the_header(tmp_path: Path):
    path = write_png(tmp_path / "wide.png", 4000, 3000, 16, 6)  # RGBA 16-bit: Pillow holds 4 bytes a pixel
    with pytest.raises(DecodeError) as caught:
        load_image(path.read_bytes(), 64, "pad", max_bytes=40 << 20)
    assert caught.value.reason == "image_too_large" and "4000x3000 RGBA" in caught.value.detail
    assert load_image(path.read_bytes(), 64, "pad").pixels.shape == (64, 64, 3)  # within the default budget


def test_jpeg_over_budget_decodes_reduced_on_the_exact_path(tmp_path: Path):
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    full = load_image(data, 64, "center_crop", fast=False)
    budget = decode_cost(800, 600, "RGB") + 1  # room for half the size only
    reduced = load_image(data, 64, "center_crop", fast=False, max_bytes=budget)
    assert (full.reduced_decode, reduced.reduced_decode) == (1, 2)
    assert reduced.plan == full.plan and (reduced.width, reduced.height) == (1600, 1200)
    difference = np.abs(reduced.pixels.astype(int) - full.pixels.astype(int)).mean()
    assert difference < 4  # the same picture on the same geometry
    with pytest.raises(DecodeError, match="image_too_large"):
        load_image(data, 64, "center_crop", fast=False, max_bytes=decode_cost(150, 100, "RGB"))  # under 1/8


def test_strip_conversion_matches_whole_image_rules():
    rng = np.random.default_rng(1)
    # 1500 x 1200 spans two strips of 2**20 pixels
    values16 = rng.integers(0, 65536, (1200, 1500), dtype=np.uint16)
    rgb = to_rgb_array(Image.fromarray(values16))
    assert np.array_equal(rgb[..., 0], (values16 >> 8).astype(np.uint8)) and np.array_equal(rgb[..., 2], rgb[..., 0])
    small = np.zeros((1200, 1500), np.int32)
    small[-1, -1] = 200  # the only value above zero sits in the last strip: still 8-bit data
    assert to_rgb_array(Image.fromarray(small, "I"))[-1, -1, 0] == 200
    rgba = rng.integers(0, 256, (1200, 1500, 4), dtype=np.uint8)
    out = to_rgb_array(Image.fromarray(rgba, "RGBA"))
    alpha = rgba[..., 3:].astype(np.uint16)
    expected = ((rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    assert np.array_equal(out, expected)


def test_png_exif_orientation_found_without_decoding(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    image.save(tmp_path / "o.png", exif=exif.tobytes())
    decoded = load_image((tmp_path / "o.png").read_bytes(), 32, "squash")
    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.pixels[2, 16, 2] > 200 and decoded.pixels[-3, 16, 0] > 200  # blue on top after rotation


def test_rle_declaring_another_size_is_refused_before_decoding(tmp_path: Path):
    from sources.records import PairRecord, Reject
    from uvd_pipeline.render import RenderSettings
    from uvd_pipeline.render_annotated import render_pair

    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((40, 60, 3), np.uint8))
    rle = {"size": [40000, 40000], "counts": "0" * 10}  # pycocotools would allocate 1.6 GB for it
    pair = PairRecord("k", "coco", "g", "segmentation", str(tmp_path / "i.png"),
                      annotation={"segments": [{"segmentation": rle, "category_id": 1}]})
    result = render_pair(pair, RenderSettings(32, "pad", 0, 10**9, 1, 0, 0.0))
    assert isinstance(result, Reject) and result.reason == "bad_segmentation" and "40000" in result.detail


def test_declared_map_size_checked_before_decoding(tmp_path: Path):
    path = write_png(tmp_path / "depth.png", 30000, 30000, 16, 0)
    with pytest.raises(MapError) as caught:
        decode_depth(path.read_bytes(), "png16")
    assert caught.value.reason == "annotation_too_large"
    ok = cv2.imencode(".png", np.full((30, 40), 512, np.uint16))[1].tobytes()
    assert decode_depth(ok, "png16", 0.5)[0, 0] == 256

