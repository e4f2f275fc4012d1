"""Memory judged from what a file declares: each hostile input is handled in a child process
whose peak RSS (VmHWM, else ru_maxrss) must stay under 1.5 GB, and must end as a rendered unit or a reject
with the expected reason. Before the budget, the 13000 x 13000 16-bit PNG took 3.1 GB and the
RGBA one 4.9 GB. Videos decode in the child's own decoding process (`sources.budget`), whose peak
counts too (ru_maxrss of the waited-for children): before the video budget, an 8192 x 8192 H.264
took 1.9 GB there (8.1 GB through decord's batches) and an 8192 x 4320 one 1.1 GB.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import struct
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, features

from hostile_corpus import icns_with_png, ico_with_png, png_bytes, progressive_jpeg, write_gzip_of_blanks, write_png
from transforms.decode import DecodeError, decode_cost, load_image, to_rgb_array
from transforms.headers import coefficient_bytes, jpeg_layout
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
    if case in ("icon_bomb", "progressive13000"):
        name = {"icon_bomb": "bomb.ico", "progressive13000": "progressive.jpg"}[case]
        return render_image(ImageRecord(case, "web", case, uri=str(folder / name)), SETTINGS)
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
    # an ICO whose directory says 16 x 16, holding a complete 14000 x 14000 RGBA PNG (3 MB): Pillow
    # decoded it inside Image.open, 750 MB, before any check saw its size
    (folder / "bomb.ico").write_bytes(ico_with_png(png_bytes(14000, 14000, 8, 6)))
    # a valid 13000 x 13000 progressive JPEG of 1 MB: libjpeg holds 967 MiB of coefficients for it at
    # any decode scale (accepted before, 1 GB at 1/8 scale)
    (folder / "progressive.jpg").write_bytes(progressive_jpeg(13000, 13000, 3))
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
    ("zero", "reject:not_a_file"),  # a link to /dev/zero: a character device, never opened
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


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("icon_bomb", "reject:decompression_bomb"),  # judged on the embedded PNG's header
    ("progressive13000", "reject:image_too_large"),  # judged on the coefficients its frame declares
])
def test_declared_work_refused_before_decoding(corpus: Path, case: str, expected: str):
    result = measure(case, corpus)
    assert result["outcome"] == expected, result
    assert result["peak_mb"] < 400, result  # the child's imports alone: nothing was decoded


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
    from transforms.decode_budget import _jpeg_held
    from transforms.headers import jpeg_header

    header = _jpeg_held(jpeg_header(data)).bytes  # what Pillow keeps of its JFIF segment
    budget = decode_cost(800, 600, "RGB", held=header) + 1  # room for half the size only
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



def _spy_png_decode(monkeypatch) -> None:
    """Make any PNG pixel buffer allocation fail loudly: a check that runs first never reaches it."""
    from PIL import PngImagePlugin

    def refuse(self):
        raise AssertionError("a PNG was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_prepare", refuse)


def _with_short_tags(tiff: bytes, values: dict[int, int]) -> bytes:
    """A little-endian TIFF with SHORT entries of its first IFD set to `values` (tag -> value)."""
    out, ifd = bytearray(tiff), int.from_bytes(tiff[4:8], "little")
    for i in range(int.from_bytes(tiff[ifd:ifd + 2], "little")):
        at = ifd + 2 + 12 * i
        tag = int.from_bytes(tiff[at:at + 2], "little")
        if tag in values:
            assert int.from_bytes(tiff[at + 2:at + 4], "little") == 3  # SHORT, as ImageMagick writes them
            out[at + 8:at + 10] = values.pop(tag).to_bytes(2, "little")
    assert not values
    return bytes(out)


def test_a_tiff_tile_is_judged_at_its_declared_size():
    """libtiff decodes a compressed tiled TIFF into a buffer of one whole tile at its declared size
    (filled when the data falls short): ImageMagick's 32 x 24 deflate TIFF of 16 x 16 tiles with its
    TileWidth and TileLength raised to 4096 (64 MiB at libtiff's RGBA 4 bytes; 16384 held 800 MB
    in the fuzz that found it) is refused on its header, where it was decoded and came out as
    `unsupported_format`; the file as written decodes under the same budget."""
    data = (Path(__file__).parent / "fixtures" / "magick" / "tiff_tiled.tif").read_bytes()
    assert load_image(data, 32, "pad", max_bytes=64 << 20).pixels.shape == (32, 32, 3)
    with pytest.raises(DecodeError) as caught:
        load_image(_with_short_tags(data, {322: 4096, 323: 4096}), 32, "pad", max_bytes=64 << 20)
    assert caught.value.reason == "image_too_large"
    assert "64 MiB are the 4096x4096 tile libtiff decodes this TIFF into" in caught.value.detail

def _with_entries(tiff: bytes, values: dict[int, tuple[int, int]]) -> bytes:
    """A little-endian TIFF with entries of its first IFD set to (count, value): the value written
    in the entry's own field, at the size of its SHORT or LONG type."""
    out, ifd = bytearray(tiff), int.from_bytes(tiff[4:8], "little")
    for i in range(int.from_bytes(tiff[ifd:ifd + 2], "little")):
        at = ifd + 2 + 12 * i
        tag = int.from_bytes(tiff[at:at + 2], "little")
        if tag in values:
            count, value = values.pop(tag)
            size = {3: 2, 4: 4}[int.from_bytes(tiff[at + 2:at + 4], "little")]
            out[at + 4:at + 8] = count.to_bytes(4, "little")
            out[at + 8:at + 12] = value.to_bytes(size, "little").ljust(4, b"\0")
    assert not values
    return bytes(out)


def test_a_tiff_tile_is_judged_at_all_its_samples_when_bits_per_sample_is_written_once():
    """TIFF lets BitsPerSample be written once for all samples (count 1; libtiff and Pillow read it):
    a 16-bit RGBA tile so written was judged at 2 bytes a pixel (then libtiff's RGBA 4) where
    libtiff allocates 8, and under the default 768 MiB budget a file judged at 535 MiB peaked at
    1023 MiB. tifffile's deflate TIFF of 16 x 16 tiles, its tiles raised to 2048 x 2048, is judged
    at the tile tifffile reads back from its tags (width x length x samples x bits / 8), written
    once or per sample alike."""
    import tifffile

    buf = io.BytesIO()
    pixels = (np.arange(24 * 32 * 4).reshape(24, 32, 4) * 37 % 65536).astype(np.uint16)
    tifffile.imwrite(buf, pixels, tile=(16, 16), photometric="rgb", extrasamples=["unassalpha"], compression="zlib")
    per_sample = _with_entries(buf.getvalue(), {322: (1, 2048), 323: (1, 2048)})
    once = _with_entries(per_sample, {258: (1, 16)})
    page = tifffile.TiffFile(io.BytesIO(once)).pages[0]
    assert (page.bitspersample, page.samplesperpixel) == (16, 4)
    tile = page.tilewidth * page.tilelength * page.samplesperpixel * page.bitspersample // 8
    for data in (per_sample, once):
        with pytest.raises(DecodeError) as caught:
            load_image(data, 32, "pad", max_bytes=tile)
        assert caught.value.reason == "image_too_large"
        assert f"{tile >> 20} MiB are the 2048x2048 tile libtiff decodes this TIFF into" in caught.value.detail


@pytest.mark.parametrize("container", [ico_with_png, icns_with_png])
def test_icon_judged_on_the_image_it_embeds(monkeypatch, container):
    """An ICO or ICNS sized by its directory (16 x 16, 128 x 128) holding a 3000 x 2000 RGBA PNG is
    refused on the PNG's header, before Pillow decodes it (an ICO's inside `Image.open`)."""
    data = container(png_bytes(3000, 2000, 8, 6))
    _spy_png_decode(monkeypatch)
    with pytest.raises(DecodeError) as caught:
        load_image(data, 64, "pad", max_pixels=1_000_000)
    assert (caught.value.reason, caught.value.detail) == (
        "decompression_bomb", "an embedded PNG of 3000x2000 exceeds max_pixels=1000000")
    with pytest.raises(DecodeError) as caught:
        load_image(data, 64, "pad", max_bytes=32 << 20)  # 3000 x 2000 x (4 + 3) bytes: 40 MiB
    assert caught.value.reason == "image_too_large" and "embedded PNG of 3000x2000" in caught.value.detail


def test_icons_pillow_writes_decode_as_before(tmp_path: Path):
    """Ordinary icons (Pillow writes PNG frames in both containers) pass the check and decode to
    Pillow's own pixels, composited on white."""
    rng = np.random.default_rng(2)
    rgba = Image.fromarray(rng.integers(0, 256, (256, 256, 4), dtype=np.uint8), "RGBA")
    for fmt, options in (("ICO", {"sizes": [(16, 16), (48, 48), (256, 256)]}), ("ICNS", {})):
        rgba.save(tmp_path / "icon", fmt, **options)
        data = (tmp_path / "icon").read_bytes()
        reference = Image.open(tmp_path / "icon")
        reference.load()
        white = Image.new("RGBA", reference.size, (255, 255, 255, 255))
        expected = np.asarray(Image.alpha_composite(white, reference.convert("RGBA")).convert("RGB"))
        out = load_image(data, reference.width, "squash").pixels
        assert np.abs(out.astype(int) - expected).max() <= 1, fmt


def _photo_jpeg(progressive: bool, mode: str = "RGB", **options) -> bytes:
    import io

    from uvd_pipeline.sample import media

    image = Image.fromarray(cv2.resize(media.photo("coffee"), (2400, 1600), interpolation=cv2.INTER_CUBIC))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", quality=90, progressive=progressive, **options)
    return buffer.getvalue()


def test_progressive_jpeg_coefficients_count_in_the_budget():
    """libjpeg holds a progressive JPEG's coefficients at full size whatever the DCT scale: 2400 x
    1600 at 4:2:0 is 11.5 MB, where its 1/4-scale decode takes 7 MB. A budget that holds the
    reduced decode but not both refuses the progressive file and keeps the baseline one."""
    baseline, progressive = _photo_jpeg(False), _photo_jpeg(True)
    assert coefficient_bytes(jpeg_layout(progressive)) == (300 * 200 + 2 * 150 * 100) * 128
    assert coefficient_bytes(jpeg_layout(baseline)) == 0  # one interleaved scan: a row of blocks at a time
    budget = decode_cost(600, 400, "RGB") + (4 << 20)
    assert load_image(baseline, 256, "center_crop", max_bytes=budget).reduced_decode == 4
    with pytest.raises(DecodeError) as caught:
        load_image(progressive, 256, "center_crop", max_bytes=budget)
    assert caught.value.reason == "image_too_large"
    assert "10 MiB are the DCT coefficients of a 2400x1600 progressive JPEG" in caught.value.detail


@pytest.mark.parametrize("mode, options", [("RGB", {}), ("RGB", {"subsampling": 0}), ("L", {}), ("CMYK", {})])
def test_progressive_jpegs_decode_to_the_baseline_pixels(mode, options):
    """A progressive file holds the same coefficients as the baseline one of the same quality:
    both decode to the same pixels, on the fast path and at full size."""
    baseline, progressive = _photo_jpeg(False, mode, **options), _photo_jpeg(True, mode, **options)
    for fast in (True, False):
        ours = load_image(progressive, 256, "center_crop", fast=fast)
        assert np.array_equal(ours.pixels, load_image(baseline, 256, "center_crop", fast=fast).pixels)


def test_coefficient_model_is_what_libjpeg_holds(tmp_path: Path):
    """The model against the decoder: a 4000 x 4000 4:4:4 progressive JPEG decoded at 1/8 scale in a
    child raises its peak by the coefficients counted (91 MiB), where the output is 0.7 MiB."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((4000, 4000))
    path = tmp_path / "p.jpg"
    image.save(path, "JPEG", quality=90, progressive=True, subsampling=0)
    code = ("import sys; from PIL import Image\n"
            "peak = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) << 10\n"
            "image = Image.open(sys.argv[1]); before = peak(); image.draft('RGB', (500, 500)); image.load()\n"
            "print(image.size[0], peak() - before)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    width, rise = map(int, done.stdout.split())
    counted = coefficient_bytes(jpeg_layout(path.read_bytes()))
    assert width == 500 and counted == 500 * 500 * 128 * 3
    assert 0.9 * counted < rise < counted + (16 << 20), (rise, counted)


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG2000"])
def test_decoder_working_memory_is_counted(tmp_path: Path, fmt: str):
    """libwebp keeps two RGBA canvases beside Pillow's buffer, OpenJPEG 32-bit samples: Pillow's
    load of a 3000 x 2000 RGB file in a child rises by 4 times its own buffer or more, and the budget
    counts that (it counted the buffer alone: 6000 x 6000 took 554 and 669 MB, judged 264)."""
    from transforms.decode import _STRIP_COST

    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).resize((3000, 2000)).save(tmp_path / "i", fmt)
    data = (tmp_path / "i").read_bytes()
    code = ("import sys; from PIL import Image\n"
            "peak = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) << 10\n"
            "image = Image.open(sys.argv[1]); before = peak(); image.load(); print(peak() - before)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "i")], capture_output=True, text=True, timeout=60)
    rise, pixels = int(done.stdout), 3000 * 2000
    assert rise > 3.9 * pixels * 4, rise  # Pillow's own RGB buffer is 4 bytes a pixel
    needed = rise + pixels * 3 + _STRIP_COST  # the decoder's peak, then our RGB array and a strip
    with pytest.raises(DecodeError) as caught:
        load_image(data, 64, "pad", max_bytes=needed - (1 << 20))
    assert caught.value.reason == "image_too_large" and f"the {fmt} decoder's working buffers" in caught.value.detail
    assert load_image(data, 64, "pad", max_bytes=needed + (8 << 20)).pixels.shape == (64, 64, 3)


def _avif(path: Path, variant: str) -> Path | None:
    """A 3000 x 2000 photo as AVIF: 8-bit ones from Pillow (libavif + aom), 10- and 12-bit ones from
    ffmpeg's libaom (None where it has none)."""
    import shutil
    from uvd_pipeline.sample import media

    photo = cv2.resize(media.photo("coffee"), (3000, 2000), interpolation=cv2.INTER_CUBIC)
    if variant in ("rgb420", "rgb444", "rgba"):
        image = Image.fromarray(photo)
        if variant == "rgba":
            alpha = np.tile(np.linspace(0, 255, 3000).astype(np.uint8), (2000, 1))
            image = Image.fromarray(np.dstack([photo, alpha]))
        image.save(path, "AVIF", quality=70, speed=10, subsampling="4:4:4" if variant == "rgb444" else "4:2:0")
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None or b"libaom-av1" not in subprocess.run([ffmpeg, "-hide_banner", "-encoders"],
                                                              capture_output=True).stdout:
        return None
    source = path.with_suffix(".png")
    Image.fromarray(photo).save(source)
    pix = {"ten_bit": "yuv420p10le", "twelve_bit_444": "yuv444p12le"}[variant]
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(source), "-pix_fmt", pix, "-c:v", "libaom-av1",
                    "-usage", "allintra", "-cpu-used", "8", "-still-picture", "1", "-crf", "30", str(path)],
                   check=True, timeout=300)  # libaom's mode for stills (avifenc's): a fifth of the CPU of `good`
    return path


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
@pytest.mark.parametrize("variant, bits, planes", [("rgb420", 8, 1), ("rgb444", 8, 1), ("rgba", 8, 2),
                                                   ("ten_bit", 10, 1), ("twelve_bit_444", 12, 1)])
def test_avif_working_memory_is_counted(tmp_path: Path, variant: str, bits: int, planes: int):
    """libavif holds the YUV planes its av1C boxes declare (alpha in a second bitstream), dav1d its own
    buffers, and an 8-bit RGB copy for Pillow: Pillow's load of a 3000 x 2000 AVIF in a child rises
    by 9.2-13.9 bytes a pixel (its own buffer 4), where the budget counted 4 before. The count
    (read from the boxes, before decoding) covers the rise without being far over it, and a budget
    just under the count refuses the file naming the decoder's buffers."""
    from transforms import decode
    from transforms.headers import avif_planes

    path = _avif(tmp_path / f"{variant}.avif", variant)
    if path is None:
        pytest.skip("ffmpeg with libaom-av1 is needed for high bit depths")
    data = path.read_bytes()
    declared = avif_planes(data)
    assert len(declared) == planes and declared[0].bit_depth == bits
    code = ("import sys; import transforms.decode; from PIL import Image\n"  # its decoder settings (one thread)
            "peak = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) << 10\n"
            "image = Image.open(sys.argv[1]); before = peak(); image.load(); print(peak() - before)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    rise, pixels = int(done.stdout), 3000 * 2000
    image = Image.open(path)
    counted = decode.decode_cost(3000, 2000, image.mode, held=decode._held(image, data).bytes)
    needed = rise + pixels * 3 + decode._STRIP_COST  # the decoder's peak, then our RGB array and a strip
    assert rise > 8.5 * pixels, rise  # what the budget did not count: all but Pillow's own 4 bytes a pixel
    print(variant, "rise", round(rise / pixels, 2), "B/px; needed", needed >> 20, "MiB, counted", counted >> 20, "MiB")
    assert needed <= counted < 1.35 * needed, (needed, counted)
    with pytest.raises(DecodeError) as caught:
        load_image(data, 64, "pad", max_bytes=counted - 1)
    assert caught.value.reason == "image_too_large" and "the AVIF decoder's working buffers" in caught.value.detail
    assert load_image(data, 64, "pad", max_bytes=counted).pixels.shape == (64, 64, 3)


def test_a_small_annotation_file_is_read_under_a_small_address_space_limit(tmp_path: Path):
    """`ulimit -v` (RLIMIT_AS), as shared machines and batch schedulers set it: reading a 9-byte
    JSON asked for a buffer of its whole cap (512 MB for an annotation file, `fsio.read_bytes`'
    `limit` too), which such a limit refuses: MemoryError for a file of a few bytes."""
    import resource

    (tmp_path / "a.json").write_text('{"a": 1}')
    script = ("import resource, sys\n"
              "from sources import fsio\n"
              "from sources.annotation_files import load_json\n"
              "peak = lambda: int(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])\n"
              "before = peak()\n"
              "resource.setrlimit(resource.RLIMIT_AS, ((before + 256 * 1024) * 1024, resource.RLIM_INFINITY))\n"
              f"print(load_json({str(tmp_path / 'a.json')!r}), fsio.read_bytes({str(tmp_path / 'a.json')!r}, "
              "limit=1 << 30))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0 and "{'a': 1} b'{\"a\": 1}'" in proc.stdout, proc.stderr[-800:]
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # this process untouched


def test_a_co3d_sequence_of_many_frames_is_placed_in_bounded_memory(tmp_path: Path):
    """The orbit's plane came from a full SVD of the n camera centres, whose n x n U nobody used:
    7,200 frames asked for 415 MB, a sequence of 100k frames for 74.5 GiB (MemoryError, or the
    kernel's OOM killer without a limit). Under an address-space limit of 256 MB over the start,
    the sequence gives its sentence."""
    import gzip
    import resource

    frames, folder = [], tmp_path / "co3d" / "toy" / "s1" / "images"
    folder.mkdir(parents=True)
    for n in range(7_200):
        turn = 2 * np.pi * n / 7_200
        rotation = [[np.cos(turn), 0, np.sin(turn)], [0, 1, 0], [-np.sin(turn), 0, np.cos(turn)]]
        (folder / f"frame{n:06d}.jpg").touch()  # listed, never opened while reading
        frames.append({"sequence_name": "s1", "frame_number": n, "image": {"path": f"toy/s1/images/frame{n:06d}.jpg"},
                       "viewpoint": {"R": rotation, "T": [0.0, 0.0, 3.0]}})
    (tmp_path / "co3d" / "toy" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    script = ("import resource, sys\n"
              "from sources.multiview import Co3dSource\n"
              "peak = lambda: int(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])\n"
              "resource.setrlimit(resource.RLIMIT_AS, ((peak() + 256 * 1024) * 1024, resource.RLIM_INFINITY))\n"
              f"(record,) = Co3dSource('co3d', {str(tmp_path / 'co3d')!r}).read({str(tmp_path / 'co3d' / 'toy')!r})\n"
              "print(len(record.view_uris), record.azimuths_deg[:3])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert proc.returncode == 0 and proc.stdout.startswith("24 (0.0, 15.0, 30.0)"), proc.stderr[-800:]
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # this process untouched


LARGE_HEADER_CHILD = r'''
import json, sys
from pathlib import Path
from sources.imagenet import ImageNetSource
from sources.laion import LaionSource
from sources.records import Reject
from sources.video import VideoSource

def peak_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024

folder, results = Path(sys.argv[1]), {}
for case in sorted(p.name for p in folder.iterdir()):
    reader, kind = case.split("-")
    root = str(folder / case)
    source = {"web": lambda: LaionSource("web", root, "webdataset"), "video": lambda: VideoSource("v", root),
              "imagenet": lambda: ImageNetSource("inet", root, ("train",))}[reader]()
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM back to the present size: this case's own peak
    before = peak_mb()
    items = [i for u in source.units() for i in source.read(u)]
    results[case] = {"rise_mb": round(peak_mb() - before),
                     "rejects": [(i.reason, i.detail) for i in items if isinstance(i, Reject)],
                     "records": sum(not isinstance(i, Reject) for i in items)}
print(json.dumps(results))
'''


def test_a_tar_header_declaring_a_huge_long_name_or_pax_block_is_refused_unread(tmp_path: Path):
    """A GNU long-name ('L') or pax ('x') header declares its own block's size, and `tarfile` read
    that whole block into memory before any check of ours: 192 MiB declared raised the peak by
    192 MB in each of the three tar readers (img2dataset's, video2dataset's, ImageNet's class
    archives). Real long names are at most PATH_MAX (4096 bytes) and real pax headers small: the
    block is refused from its header, the tar one `corrupt_archive` naming the kind and the size."""
    from hostile_corpus import write_tar_with_a_large_header

    declared = 192 << 20
    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(jpeg, "JPEG")
    where = {"web": ("00000.tar", "k" * 150 + ".jpg"), "video": ("00000.tar", "v" * 150 + ".mp4"),
             "imagenet": ("train/n01440764.tar", "n01440764_" + "1" * 150 + ".JPEG")}
    kinds = {"L": tarfile.GNUTYPE_LONGNAME, "x": tarfile.XHDTYPE}
    for reader, (tar_name, member) in where.items():
        for label, kind in kinds.items():
            path = tmp_path / f"{reader}-{label}" / tar_name
            path.parent.mkdir(parents=True)
            write_tar_with_a_large_header(path, kind, declared, member, jpeg.getvalue())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, "-c", LARGE_HEADER_CHILD, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    print(results)
    assert sorted(results) == sorted(f"{r}-{k}" for r in where for k in kinds)
    for case, result in results.items():
        assert result["rise_mb"] < 32, (case, result)
        assert result["records"] == 0, (case, result)
        name = {"L": "GNU long name", "x": "pax extended header"}[case[-1]]
        assert [reason for reason, _ in result["rejects"]] == ["corrupt_archive"], (case, result)
        assert name in result["rejects"][0][1] and f"{declared} bytes" in result["rejects"][0][1], (case, result)


def test_the_headers_of_a_tar_are_let_go_as_it_is_read(tmp_path: Path):
    """`tarfile` keeps every member header it has read to the end of the walk, with its pax records:
    32 members each after a 2 MiB pax header (each under the cap on one header) held 64 MiB more
    in the img2dataset and the ImageNet readers, as much as the archive's headers; a header is now
    let go once its member is visited (Python's own allocations, traced)."""
    import tracemalloc

    from hostile_corpus import write_tar_of_large_pax_headers
    from sources.imagenet import ImageNetSource
    from sources.laion import LaionSource
    from sources.records import Reject

    (tmp_path / "web").mkdir()
    (tmp_path / "inet" / "train").mkdir(parents=True)
    write_tar_of_large_pax_headers(tmp_path / "web" / "00000.tar", [f"{i:09d}.jpg" for i in range(32)], b"x",
                                   2 << 20)
    write_tar_of_large_pax_headers(tmp_path / "inet" / "train" / "n01440764.tar",
                                   [f"n01440764_{i}.JPEG" for i in range(32)], b"x", 2 << 20)
    for source in (LaionSource("web", str(tmp_path / "web"), "webdataset"),
                   ImageNetSource("inet", str(tmp_path / "inet"), ("train",))):
        units = source.units()
        tracemalloc.start()
        try:
            items = [i for u in units for i in source.read(u)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(items) == 32 and not any(isinstance(i, Reject) for i in items), (source.name, items[:3])
        assert peak < 24 << 20, (source.name, peak >> 20)


def _long_named_tar(path: Path, stems: list[str], ext: str) -> None:
    """GNU tar's layout for long names ('L' records before each member), one JPEG-ish member a stem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for stem in stems:
            info = tarfile.TarInfo(stem + ext)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"\xff\xd8x"))


def test_long_member_names_are_capped_and_not_held_for_the_walk(tmp_path: Path):
    """Every name read was held to the end of the walk (ImageNet's taken stems, the web walk's
    ended keys): 96 members of 60,000-byte names held 5.8 MB more, and names up to the 4 MiB
    header cap were taken (3 MiB a member). A name over 64 KiB (PATH_MAX is 4096) is refused
    from its header, and what is held of each name is bounded (Python's allocations, traced)."""
    import tracemalloc

    from sources import tar_members
    from sources.imagenet import ImageNetSource
    from sources.records import Reject

    stems = [f"n01440764_{i}" + "9" * 60_000 for i in range(96)]
    _long_named_tar(tmp_path / "inet" / "train" / "n01440764.tar", stems, ".JPEG")
    _long_named_tar(tmp_path / "web.tar", [f"{i}" + "9" * 60_000 for i in range(96)], ".jpg")
    inet = ImageNetSource("inet", str(tmp_path / "inet"), ("train",))
    units = inet.units()

    def keep(tar, info, sample, ext):
        sample.members[ext] = b""

    walks = {"imagenet": lambda: (i for u in units for i in inet.read(u)),
             "web": lambda: tar_members.samples(str(tmp_path / "web.tar"), "web", "00000", keep)}
    for label, walk in walks.items():
        count = 0
        tracemalloc.start()
        try:
            for item in walk():
                assert not isinstance(item, Reject), item
                count += 1
                del item
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert count == 96 and peak < 3 << 20, (label, count, peak >> 10)

    long_name, big = "n01440764_1" + "9" * (65 << 10), tmp_path / "big" / "n01440764.tar"
    writers = {"GNU long name": lambda: _long_named_tar(big, [long_name], ".JPEG"),
               "pax name record": lambda: _pax_named_tar(big, long_name)}
    for kind, write in writers.items():
        write()
        source = ImageNetSource("inet", str(big.parent), ("train",))
        items = [i for u in source.units() for i in source.read(u)]
        assert [i.reason for i in items] == ["corrupt_archive"] and kind in items[0].detail, items


def _pax_named_tar(path: Path, stem: str) -> None:
    """A pax tar (GNU tar's --format=posix, bsdtar's default) whose one member's name is `stem`.JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(stem + ".JPEG")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"\xff\xd8x"))


def test_a_tiff_of_a_million_strips_is_refused_before_pillow_opens_it(tmp_path: Path, monkeypatch):
    """Pillow writes a 2 x 600,000 TIFF a row a strip (`tiffinfo={278: 1}`): 1.2 MB, 1.2 Mpx, and
    1.2 million numbers in its IFD (strip offsets and byte counts), each an int of a tuple once
    Pillow opens it, each strip a tile of its own (a 2 x 4,000,000 one, 40 MB, took 1.59 GB and
    14 CPU-s to open, under every pixel budget). Counted from the header before `Image.open` and
    weighed against the decoder's budget (`TIFF_VALUE_BYTES` each), it is `image_too_large` now;
    ImageMagick's TIFF of a row a strip (400 strips) decodes as before."""
    from transforms import decode
    from transforms.headers import tiff_values

    stripped = io.BytesIO()
    Image.new("L", (2, 600_000), 128).save(stripped, "TIFF", tiffinfo={278: 1})
    data = stripped.getvalue()
    budget = 128 << 20  # scaled down: the default 768 MiB budget refuses 4 Mi numbers
    assert tiff_values(data) * decode.TIFF_VALUE_BYTES > budget
    opened, image_open = [], Image.open
    monkeypatch.setattr(decode.Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    with pytest.raises(DecodeError) as refused:
        load_image(data, 64, "center_crop", max_bytes=budget)
    assert refused.value.reason == "image_too_large" and "1200007 numbers" in str(refused.value), refused.value
    assert not opened
    from transforms import maps  # a map of it too: only `load_image` counted them (1 x 2,000,000: +659 MiB)

    monkeypatch.setattr(maps, "DEFAULT_MAX_DECODE_BYTES", budget)
    for decoder in (maps.decode_gray, maps.decode_label_map, lambda map_bytes: maps.decode_depth(map_bytes, "tiff")):
        with pytest.raises(maps.MapError) as refused_map:
            decoder(data)
        assert refused_map.value.reason == "annotation_too_large" and "1200007 numbers" in refused_map.value.detail
    assert not opened
    magick = subprocess.run(["convert", "-size", "600x400", "gradient:red-blue", "-depth", "8", "-define", "tiff:rows-per-strip=1",
                             "-compress", "none", "tiff:-"], capture_output=True, check=True).stdout
    assert 800 <= tiff_values(magick) < 1000
    decoded = load_image(magick, 64, "center_crop")
    assert (decoded.width, decoded.height, decoded.format) == (600, 400, "TIFF") and opened


@pytest.mark.slow
def test_an_honest_tiff_of_16_pixel_tiles_decodes_within_the_budget(tmp_path: Path):
    """tifffile writes a 12,000 x 12,000 scan in 16 x 16 tiles (`tile=(16, 16)`, zlib): 562,500
    tiles, 1,125,000 numbers in its IFD, over the flat 2**20 the numbers were capped at (refused
    `image_too_large`). Weighed against the decoder's budget (about 215 MiB of 768) it decodes, its
    rows as written."""
    import tifffile

    from transforms.headers import tiff_values

    pixels = np.zeros((12000, 12000), np.uint8)
    pixels[::7] = 200
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, pixels, tile=(16, 16), compression="zlib")
    data = path.read_bytes()
    assert tiff_values(data) > 1 << 20
    decoded = load_image(data, 64, "center_crop")
    assert (decoded.width, decoded.height, decoded.format) == (12000, 12000, "TIFF")
    assert abs(decoded.pixels.mean() - 200 / 7) < 1.5  # a row in 7 at 200, averaged down


def _jpeg_of_empty_segments(segments: int, marker: bytes = b"\xff\xe5") -> tuple[bytes, bytes]:
    """A 64 x 48 JPEG as Pillow writes it, and the same with `segments` empty APPn (or COM) segments
    after its start of image: what a hostile upload carries (4 bytes each)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 220)).save(out, "JPEG", quality=95)
    plain = out.getvalue()
    return plain, plain[:2] + (marker + b"\x00\x02") * segments + plain[2:]


def test_a_jpeg_of_many_empty_segments_is_refused_before_pillow_opens_it(monkeypatch):
    """Pillow's JPEG open keeps every APPn and COM segment before the first scan (a tuple, a name and
    a bytes object in `applist`): a 37 MB JPEG of 64 x 48 pixels made of 9.25 M empty APP5 segments
    took 1.2 GB in the rendering process, judged on its pixels alone, and was accepted. The segments
    are counted from the header (`JPEG_SEGMENT_BYTES` each, at least what Pillow's open allocates,
    measured here with tracemalloc) and weighed against the budget before `Image.open`; the same
    picture without them decodes under that budget."""
    import tracemalloc

    from transforms import decode

    plain, flooded = _jpeg_of_empty_segments(200_000)
    assert plain[2:4] == b"\xff\xe0" and plain.count(b"\xff\xe1") == 0  # Pillow's JFIF segment, no other
    budget = 30 << 20  # scaled down: 200,000 segments of the 9.25 M are judged 33 MiB
    opened, image_open = [], Image.open
    monkeypatch.setattr(decode.Image, "open", lambda *a, **k: opened.append(a) or image_open(*a, **k))
    with pytest.raises(DecodeError) as refused:
        load_image(flooded, 64, "center_crop", max_bytes=budget)
    assert refused.value.reason == "image_too_large", refused.value
    assert "the 200,001 APPn and COM segments before its first scan" in refused.value.detail
    assert not opened
    decoded = load_image(plain, 64, "center_crop", max_bytes=budget)
    assert np.abs(decoded.pixels.astype(int) - (30, 140, 220)).max() <= 3 and opened

    from transforms.decode_budget import JPEG_SEGMENT_BYTES

    tracemalloc.start()
    image_open(io.BytesIO(flooded)).close()
    allocated = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 50 * 200_000 < allocated <= JPEG_SEGMENT_BYTES * 200_000 + len(flooded)


def test_a_png_of_many_private_chunks_decodes_without_pillow_keeping_them():
    """Pillow's PNG open keeps each private chunk (its kind's second letter lower case) it reads
    nothing from, in `private_chunks`: a 36 MB PNG of 3 M empty `prVt` chunks took 345 MB and 13
    CPU-s opening. No pixel depends on one: they are taken out before Pillow opens it, as text
    chunks are, and the picture decodes as the same PNG without them does."""
    from transforms.png_chunks import without_png_text

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(out, "PNG")
    plain = out.getvalue()
    chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    flooded = plain[:33] + chunk * 20_000 + plain[33:]  # after IHDR
    assert without_png_text(flooded) == plain
    decoded = load_image(flooded, 64, "center_crop")
    assert np.array_equal(decoded.pixels, load_image(plain, 64, "center_crop").pixels)
    assert np.abs(decoded.pixels.astype(int) - (200, 10, 10)).max() == 0
