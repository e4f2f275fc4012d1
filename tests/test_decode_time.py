"""An image's decode time is bounded (`image.decode_time_s`): judged from what the file declares where
that bounds it (`transforms.decode.declared_decode_s`), else by decoding in a process that is
killed at the limit (`uvd_pipeline.image_decode`). The slow input is a real one: a lossless JPEG
2000 of a noisy photo (as OpenJPEG writes an archive's master copy of a grainy scan), which decodes
at about 0.65 CPU-seconds a megapixel here."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import tarfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageFile

from sources import budget
from sources.records import ImageRecord, Reject
from transforms.decode import declared_decode_s, load_image
from transforms.headers import png_size, webp_still_size
from uvd_pipeline import image_decode
from uvd_pipeline.render import RenderSettings, render_image
from uvd_pipeline.sample import media
from uvd_pipeline.sentences import RenderedUnit

TINY_LIMIT = 0.3  # CPU seconds: the slow file takes several times that, a photo far less


def _noisy_photo(name: str, width: int, height: int, seed: int = 0) -> np.ndarray:
    photo = cv2.resize(media.photo(name), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grain = np.random.default_rng(seed).integers(-20, 20, photo.shape, dtype=np.int16)
    return np.clip(photo + grain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slow_j2k() -> bytes:
    """A lossless JPEG 2000 (OpenJPEG's default, reversible 5/3) of a grainy 1600 x 1600 photo:
    about a CPU-second to decode here, within every memory budget."""
    buffer = io.BytesIO()
    Image.fromarray(_noisy_photo("astronaut", 1600, 1600)).save(buffer, "JPEG2000")
    return buffer.getvalue()


def _jpeg(name: str, size: tuple[int, int], **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(cv2.resize(media.photo(name), size, interpolation=cv2.INTER_AREA)).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def _settings(decode_time_s: float = image_decode.DEFAULT_DECODE_TIME_S) -> RenderSettings:
    return RenderSettings(64, "center_crop", 0, 178_956_970, 1, 0, 0.0, decode_time_s)


def _render(data: bytes, settings: RenderSettings, key: str = "k"):
    return render_image(ImageRecord(key, "web", key, data=data), settings)


def _cpu(fn) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


# -- the declaration ----------------------------------------------------------------------------
def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _worst_cases() -> dict[str, bytes]:
    """The slowest files for their declaration that we know how to make, small: noise at the
    highest quality (the decoders' costliest pixels), and Python's loops over chunks or segments
    (the costliest bytes)."""
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (1200, 1200, 4), dtype=np.uint8)
    cases = {}
    buffer = io.BytesIO()
    block = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(block, 1 << 26)  # a progressive save of noise needs room
    try:  # Pillow's global: left raised, later decodes in this process are fed 64 MB at a time
        Image.fromarray(noise[..., :3]).save(buffer, "JPEG", quality=100, subsampling=0, progressive=True)
    finally:
        ImageFile.MAXBLOCK = block
    cases["progressive noise JPEG"] = buffer.getvalue()
    small = _jpeg("coffee", (300, 200))
    cases["JPEG of 200k empty COM segments"] = small[:2] + b"\xff\xfe\x00\x02" * 200_000 + small[2:]
    png = cv2.imencode(".png", cv2.resize(media.photo("coffee"), (300, 200)))[1].tobytes()
    cases["PNG of 200k empty chunks"] = png[:33] + _chunk(b"abCd", b"") * 200_000 + png[33:]
    cases["16-bit RGBA noise PNG"] = cv2.imencode(".png", rng.integers(0, 65536, (800, 800, 4), dtype=np.uint16),
                                                  [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "WEBP", quality=100, method=0)
    cases["lossy WebP of noise with alpha"] = buffer.getvalue()
    return cases


@pytest.mark.parametrize("case", sorted(_worst_cases()))
def test_the_declared_bound_covers_the_decoders_worst_cases(case: str):
    """What `declared_decode_s` allows is more than the decode takes, on the fast path and at full
    size, for the worst files we can make of each kind: files this judges fit the limit need no
    process to kill."""
    data = _worst_cases()[case]
    bound = declared_decode_s(data)
    assert bound is not None
    for fast in (True, False):
        taken = _cpu(lambda: load_image(data, 256, "center_crop", fast=fast))
        print(case, f"fast={fast} took {taken:.3f} CPU-s, bound {bound:.2f}")  # the figures, under -s
        assert taken < bound, (case, fast, taken, bound)


def test_the_declaration_is_read_where_the_format_bounds_it():
    """Sizes come from the headers (lossy, lossless and extended WebP alike); formats whose headers
    do not bound their decoders' work are not judged (None): JPEG 2000, AVIF, TIFF, GIF, BMP, an
    animated WebP, an arithmetic-coded JPEG."""
    photo = cv2.resize(media.photo("rocket"), (333, 222), interpolation=cv2.INTER_AREA)
    image = Image.fromarray(photo)

    def saved(fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    for options in ({"quality": 80}, {"lossless": True}, {"quality": 80, "exif": b"Exif\x00\x00"}):
        assert webp_still_size(saved("WEBP", **options)) == (333, 222), options
    assert png_size(saved("PNG")) == (333, 222)
    jpeg = saved("JPEG", quality=90)
    expected = 4 * (333 * 222 * (150 + 5) + len(jpeg) * 400) * 1e-9
    assert declared_decode_s(jpeg) == pytest.approx(expected)
    progressive = saved("JPEG", quality=90, progressive=True)  # libjpeg's script: 10 scans for colour
    scans = 4 * (333 * 222 * (150 + 5 * 10) + len(progressive) * 400) * 1e-9
    assert declared_decode_s(progressive) == pytest.approx(scans)
    sof0 = jpeg.index(b"\xff\xc0")
    arithmetic = jpeg[:sof0] + b"\xff\xc9" + jpeg[sof0 + 2:]
    animated = io.BytesIO()
    image.save(animated, "WEBP", save_all=True, append_images=[image.rotate(90)], duration=100)
    unbounded = {"JPEG2000": saved("JPEG2000"), "AVIF": saved("AVIF"), "TIFF": saved("TIFF"),
                 "GIF": saved("GIF"), "BMP": saved("BMP"), "animated WebP": animated.getvalue(),
                 "arithmetic JPEG": arithmetic}
    assert {name: declared_decode_s(data) for name, data in unbounded.items()} == dict.fromkeys(unbounded)
    assert webp_still_size(animated.getvalue()) is None
    assert image_decode.in_process(jpeg, 60.0) and not image_decode.in_process(jpeg, 0.01)
    big = b"\xff\xd8\xff" + bytes(40 << 20)  # judged on its length alone: too long to walk for this limit
    assert declared_decode_s(big, over=60.0) == float("inf")


# -- the decoding process -----------------------------------------------------------------------
def test_a_slow_decode_is_killed_at_the_limit_and_the_next_image_decodes(slow_j2k: bytes):
    """The real slow file, under a limit it takes several times over: a `decode_timeout` reject naming
    the limit, soon; then a photo decoded in a fresh decoding process gives the bytes it gives in
    this process. Under the default limit the slow file renders, to the pixels of a decode here."""
    photo = _jpeg("coffee", (1600, 1066), quality=92)
    assert declared_decode_s(slow_j2k) is None and not image_decode.in_process(photo, TINY_LIMIT)
    started = time.monotonic()
    reject = _render(slow_j2k, _settings(TINY_LIMIT))
    assert isinstance(reject, Reject), reject
    assert (reject.stage, reject.reason) == ("decode", "decode_timeout")
    assert f"over the budget of {TINY_LIMIT:g} CPU-seconds" in reject.detail
    assert f"image.decode_time_s: {TINY_LIMIT:g}" in reject.detail
    assert time.monotonic() - started < 15
    apart = _render(photo, _settings(TINY_LIMIT))
    here = _render(photo, _settings())
    assert isinstance(apart, RenderedUnit) and apart.images == here.images
    slow = _render(slow_j2k, _settings())
    assert isinstance(slow, RenderedUnit)
    assert np.array_equal(cv2.imdecode(np.frombuffer(slow.images[0], np.uint8), cv2.IMREAD_COLOR)[..., ::-1],
                          load_image(slow_j2k, 64, "center_crop").pixels)


def test_a_decoder_that_dies_costs_its_image_only(slow_j2k: bytes):
    """The decoding process killed from outside while it decodes (as a segfaulting decoder ends):
    that image is a `decoder_crashed` reject, and the next one decodes in a fresh process."""
    photo = _jpeg("chelsea", (900, 600))
    settings = _settings(0.01)  # everything to the decoding process
    assert isinstance(_render(photo, settings), RenderedUnit)  # its process started and warm
    victim = budget._worker(image_decode.POOL).process.pid
    killer = threading.Timer(0.4, os.kill, (victim, signal.SIGKILL))
    killer.start()
    try:
        reject = _render(slow_j2k, _settings(30.0))
    finally:
        killer.cancel()
    assert isinstance(reject, Reject) and (reject.stage, reject.reason) == ("decode", "decoder_crashed")
    assert "SIGKILL" in reject.detail
    assert budget._worker(image_decode.POOL).process.pid != victim
    assert _render(photo, settings).images == _render(photo, _settings()).images


# -- the build ----------------------------------------------------------------------------------
def _web_folder(folder: Path, slow_j2k: bytes) -> None:
    folder.mkdir(parents=True)
    for i, (name, size) in enumerate([("astronaut", (512, 512)), ("coffee", (1800, 1200)), ("rocket", (640, 427)),
                                      ("chelsea", (451, 300)), ("hubble", (1000, 872)), ("horse", (400, 328))]):
        (folder / f"{name}.jpg").write_bytes(_jpeg(name, size, quality=88 + i))
    cv2.imwrite(str(folder / "coins.png"), media.photo("coins")[..., ::-1])
    Image.fromarray(media.photo("moon")).save(folder / "moon.webp", quality=85)
    (folder / "scan.jp2").write_bytes(slow_j2k)


def _build(tmp_path: Path, name: str, web: Path, decode_time_s: float | None, mode: str) -> Path:
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    image = {"size": 64, **({"decode_time_s": decode_time_s} if decode_time_s is not None else {})}
    config = {"version": 1, "output": str(tmp_path / name), "seed": 0, "image": image,
              "split": {"val_fraction": 0.0}, "dedup": {"enabled": False}, "tokenizer": {"enabled": False},
              "sources": [{"name": "web", "type": "laion", "path": str(web), "num_shards": 2}],
              "beam": {"runner": "DirectRunner", "direct_num_workers": 2 if mode != "in_memory" else 1,
                       "direct_running_mode": mode}}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    run_build(load_config(str(tmp_path / f"{name}.yaml")))
    return tmp_path / name


def _images_by_path(output: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted((output / "rendered").rglob("*.tar")):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        for member, data in members.items():
            if member.endswith(".json"):
                header = json.loads(data)
                found[header["members"][0]["path"]] = members[member[: -len("json")] + "00.png"]
    return found


@pytest.mark.slow
def test_a_build_counts_the_slow_image_and_writes_the_others_unchanged(tmp_path: Path, slow_j2k: bytes):
    """Three builds of one folder of real images and the slow file: under a tiny limit (render workers
    as threads with their render processes, as a local build runs) the slow file is one counted
    `decode_timeout` reject and every other image is written; a second such build writes the same
    bytes; under the default limit (one in-memory worker) the slow file is rendered too, and every
    other image is byte for byte the image the limited builds wrote (those decoded in the killable
    process, the larger photos, too)."""
    from conftest import shard_digests

    web = tmp_path / "web"
    _web_folder(web, slow_j2k)
    assert sum(not image_decode.in_process(p.read_bytes(), TINY_LIMIT) for p in web.iterdir()) >= 3
    limited = _build(tmp_path, "limited", web, TINY_LIMIT, "multi_threading")
    again = _build(tmp_path, "again", web, TINY_LIMIT, "multi_threading")
    unlimited = _build(tmp_path, "unlimited", web, None, "in_memory")

    summary = json.loads((limited / "summary.json").read_text())
    assert summary["sources"]["web"]["rejects_by_reason"] == {"decode_timeout": 1}
    (reject,) = [json.loads(line) for line in (limited / "rejects.jsonl").read_text().splitlines()]
    assert (reject["source"], reject["stage"], reject["reason"]) == ("web", "decode", "decode_timeout")
    assert f"image.decode_time_s: {TINY_LIMIT:g}" in reject["detail"]
    assert reject["key"] == "web-scan--jp2"
    assert json.loads((unlimited / "summary.json").read_text())["sources"]["web"].get("rejects_by_reason", {}) == {}

    assert shard_digests(again) == shard_digests(limited)
    kept, everything = _images_by_path(limited), _images_by_path(unlimited)
    assert sorted(everything) == sorted(p.name for p in web.iterdir())
    assert sorted(kept) == sorted(set(everything) - {"scan.jp2"})
    assert all(kept[path] == everything[path] for path in kept)


# -- dense annotations --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def map_folder(tmp_path_factory) -> Path:
    """A depth pair as depth datasets ship them: a photo and its 16-bit depth map, once as a PNG and
    once as a JPEG 2000 (OpenCV's writer, lossy: what an archive's compressed copy holds) of 3200 x
    3200, which OpenJPEG takes about 0.8 CPU-seconds to decode here."""
    folder = tmp_path_factory.mktemp("maps")
    cv2.imwrite(str(folder / "photo.png"), cv2.resize(media.photo("astronaut"), (400, 400))[..., ::-1])
    green = media.photo("astronaut")[..., 1].astype(np.float32)
    for name, size in (("depth.jp2", 3200), ("depth.png", 800)):
        smooth = cv2.resize(green, (size, size), interpolation=cv2.INTER_CUBIC) * 200
        noisy = smooth + np.random.default_rng(1).normal(0, 300, smooth.shape)
        cv2.imwrite(str(folder / name), np.clip(noisy, 1, 60000).astype(np.uint16))
    cv2.imwrite(str(folder / "colour.jp2"), media.photo("chelsea")[:300, :300])
    return folder


def _depth_pair(folder: Path, depth: str, settings: RenderSettings):
    from sources.records import PairRecord
    from uvd_pipeline.render_annotated import render_pair

    record = PairRecord("d", "kitti", "d", "depth", image_uri=str(folder / "photo.png"),
                        annotation={"depth_uri": str(folder / depth), "format": "png16"})
    return render_pair(record, settings)


def test_a_slow_depth_map_is_an_annotation_reject_and_renders_under_the_default(map_folder: Path, monkeypatch):
    """Maps are decoded by OpenCV, whose JPEG 2000 and TIFF work no header bounds: under a limit it
    takes several times over, the JPEG 2000 depth map is a counted `annotation_decode_timeout` reject
    naming the limit; under the default it renders, to the pixels of a decode in this process."""
    data = (map_folder / "depth.jp2").read_bytes()
    assert declared_decode_s(data) is None
    reject = _depth_pair(map_folder, "depth.jp2", _settings(TINY_LIMIT))
    assert isinstance(reject, Reject), reject
    assert (reject.stage, reject.reason) == ("annotation", "annotation_decode_timeout")
    assert f"image.decode_time_s: {TINY_LIMIT:g}" in reject.detail
    apart = _depth_pair(map_folder, "depth.jp2", _settings())
    monkeypatch.setattr(image_decode, "in_process", lambda data, limit, header=None: True)
    here = _depth_pair(map_folder, "depth.jp2", _settings())
    assert isinstance(apart, RenderedUnit) and apart.images == here.images
    depth = cv2.imdecode(np.frombuffer(apart.images[1], np.uint8), cv2.IMREAD_COLOR)
    assert depth.std() > 20  # a depth map drawn, not a blank


def test_a_png_map_decodes_here_and_a_refusal_from_the_decoding_process_keeps_its_reason(map_folder: Path,
                                                                                       monkeypatch):
    """A PNG map's declaration bounds its decode: under a limit it fits, no job goes to the decoding
    process. A map refused there (an 8-bit colour JPEG 2000 given as a 16-bit
    depth map) is the `bad_depth_map` reject it is in this process."""
    from transforms.maps import decode_depth

    calls: list[str] = []
    real_call = budget.call
    monkeypatch.setattr(budget, "call", lambda function, *a, **k: calls.append(function) or real_call(function, *a, **k))
    assert image_decode.in_process((map_folder / "depth.png").read_bytes(), 5.0)
    assert isinstance(_depth_pair(map_folder, "depth.png", _settings(5.0)), RenderedUnit)
    assert calls == []
    wrong = _depth_pair(map_folder, "colour.jp2", _settings())
    assert isinstance(wrong, Reject) and (wrong.stage, wrong.reason) == ("annotation", "bad_depth_map")
    assert calls == ["transforms.maps:decode_depth"]
    with pytest.raises(Exception) as here:
        decode_depth((map_folder / "colour.jp2").read_bytes(), "png16")
    assert wrong.detail == here.value.detail
