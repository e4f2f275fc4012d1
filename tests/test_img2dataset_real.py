"""Real img2dataset 1.47 output of an image zoo served on 127.0.0.1, built and read back.

img2dataset lives in its own venv (`make img2dataset`, a dependency of `make test`): its pins
clash with ours. Two downloads of the same URL list: webdataset format with `resize_mode=no` and
`disable_all_reencoding` (what the README recommends), and files format with img2dataset's
defaults (256 px letterboxed, re-encoded). One build reads both; the test checks every case by
reading the rendered shards back.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from sources.laion import LaionSource
from sources.records import ImageRecord, Reject

REPO = Path(__file__).resolve().parent.parent
IMG2DATASET = REPO / ".venv-img2dataset" / "bin" / "img2dataset"
RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)

pytestmark = pytest.mark.slow


def _require_img2dataset() -> None:
    if not IMG2DATASET.exists():
        if os.environ.get("UVD_REQUIRE_IMG2DATASET"):
            pytest.fail(f"{IMG2DATASET} is missing: run `make img2dataset`")
        pytest.skip("img2dataset venv missing (`make img2dataset`; `make test` builds it)")


def _jpeg(pixels: np.ndarray, mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def _halves(h: int, w: int, first=RED, second=BLUE, vertical: bool = True, seed: int = 0) -> np.ndarray:
    """Top (or left) half `first`, the rest `second`, with a seeded texture (so that no two zoo
    images look alike to the dedup pHash): orientation shows in the rendered pixels."""
    out = np.empty((h, w, 3), np.int16)
    if vertical:
        out[: h // 2], out[h // 2 :] = first, second
    else:
        out[:, : w // 2], out[:, w // 2 :] = first, second
    texture = np.random.default_rng(seed).integers(-20, 21, (h // 8 + 1, w // 8 + 1, 1))
    out += np.kron(texture, np.ones((8, 8, 1), np.int16))[:h, :w]
    return out.clip(0, 255).astype(np.uint8)


def write_zoo(folder: Path) -> dict[str, bytes]:
    """Odd images as the web serves them; returns name -> bytes (what each URL returns)."""
    zoo: dict[str, bytes] = {}
    landscape = _halves(64, 96)
    zoo["landscape.jpg"] = _jpeg(landscape)
    zoo["copy.jpg"] = zoo["landscape.jpg"]  # the same file under another URL
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; "rotate 90 clockwise to display"
    zoo["rot6.jpg"] = _jpeg(np.ascontiguousarray(np.rot90(_halves(64, 96, seed=1), 1)), exif=exif.tobytes())
    zoo["cmyk.jpg"] = _jpeg(np.full((48, 48, 3), (200, 40, 40), np.uint8), "CMYK")
    gradient = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (40, 1))
    buf = io.BytesIO()
    Image.fromarray(gradient.astype(np.int32), "I").convert("I;16").save(buf, "PNG")
    zoo["deep.png"] = buf.getvalue()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3], rgba[:, 20:, 3] = _halves(40, 40, RED, RED, seed=2), 255  # left half transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    zoo["alpha.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), (30, 160, 60), np.uint8)).save(buf, "AVIF", quality=90)
    zoo["photo.avif"] = buf.getvalue()
    from pillow_heif import register_heif_opener

    register_heif_opener()  # whether or not a module that registers it was imported before
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), (40, 60, 170), np.uint8)).save(buf, "HEIF", quality=90)
    zoo["photo.heic"] = buf.getvalue()
    zoo["wide.jpg"] = _jpeg(_halves(160, 640, vertical=False, seed=3))
    zoo["logo.svg"] = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">' \
                      b'<rect width="64" height="64" fill="red"/></svg>\n'
    whole = _jpeg(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8))
    zoo["broken.jpg"] = whole[: len(whole) * 2 // 5]
    zoo["page.jpg"] = b"<html><body>403 Forbidden</body></html>\n"
    for name, data in zoo.items():
        (folder / name).write_bytes(data)
    return zoo


URLS = ["landscape.jpg", "copy.jpg", "rot6.jpg", "cmyk.jpg", "deep.png", "alpha.png", "photo.avif", "photo.heic",
        "wide.jpg",
        "logo.svg", "broken.jpg", "page.jpg", "gone.jpg"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _download(url_list: Path, out: Path, *extra: str, per_shard: int = 100) -> None:
    command = [str(IMG2DATASET), "--url_list", str(url_list), "--input_format", "csv", "--url_col", "url",
               "--caption_col", "caption", "--save_additional_columns", '["license"]', "--output_folder", str(out),
               "--processes_count", "1", "--thread_count", "4", "--timeout", "5", "--retries", "0",
               "--number_sample_per_shard", str(per_shard), *extra]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def _url_list(path: Path, base: str, names: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption", "license"])
        for i, name in enumerate(names):
            writer.writerow([f"{base}/{name}", f"zoo {name}", f"cc-by-{i}"])
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The zoo served on 127.0.0.1 while this module's tests run: (folder, base URL, zoo)."""
    _require_img2dataset()
    root = tmp_path_factory.mktemp("img2dataset")
    folder = root / "site"
    folder.mkdir()
    zoo = write_zoo(folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", zoo
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def downloads(site):
    """The zoo downloaded twice by the real img2dataset."""
    root, base, zoo = site
    url_list = _url_list(root / "urls.csv", base, URLS)
    raw, default = root / "raw", root / "default"
    _download(url_list, raw, "--output_format", "webdataset", "--resize_mode", "no",
              "--disable_all_reencoding", "True")
    _download(url_list, default, "--output_format", "files")
    return {"root": root, "raw": raw, "default": default, "zoo": zoo}


def _build(downloads, name: str, output: Path | None = None, beam: dict | None = None):
    """A build of one download (dedup spans sources, and the two downloads hold the same images);
    one in-process worker unless `beam` says otherwise."""
    from uvd_pipeline.build import run_build
    from uvd_pipeline.config import load_config

    root = downloads["root"]
    output = output or root / f"out-{name}"
    config = {
        "version": 1, "output": str(output), "seed": 0,
        "image": {"size": 64, "resize": "center_crop"},
        "split": {"val_fraction": 0.0},
        "sources": [{"name": name, "type": "laion", "path": str(downloads[name]), "num_shards": 1}],
        "tokenizer": {"enabled": False},
        "beam": beam or {"runner": "DirectRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"},
    }
    (output.parent / f"{output.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_build(load_config(str(output.parent / f"{output.name}.yaml")))
    return result.summary, output


@pytest.fixture(scope="module")
def raw_build(downloads):
    return _build(downloads, "raw")


@pytest.fixture(scope="module")
def default_build(downloads):
    return _build(downloads, "default")


def _sentences(out: Path, source: str) -> dict[str, dict]:
    """URL file name -> (header, RGB pixels) of every sentence of a source, read with webdataset."""
    from uvd_pipeline.render import decode_png

    shards = sorted(str(p) for p in (out / "rendered" / source).rglob("*.tar"))
    found = {}
    for sample in wds.WebDataset(shards, shardshuffle=False):
        header = json.loads(sample["json"])
        member = header["members"][0]
        found[member["url"].rsplit("/", 1)[1]] = {"member": member, "pixels": decode_png(sample["00.png"]),
                                                  "png": sample["00.png"]}
    return found


def _rejects(out: Path, source: str) -> dict[str, dict]:
    rows = [json.loads(l) for l in (out / "rejects.jsonl").read_text().splitlines()]
    return {r["key"]: r for r in rows if r["source"] == source}


def _parquet_rows(folder: Path) -> list[dict]:
    return [row for path in sorted(folder.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def _mean(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


def test_raw_download_renders_every_odd_image_right(raw_build, downloads):
    summary, out = raw_build
    found = _sentences(out, "raw")
    rejects = _rejects(out, "raw")
    rows = {r["key"]: r for r in _parquet_rows(downloads["raw"])}
    by_name = {r["url"].rsplit("/", 1)[1]: r for r in rows.values()}
    reasons = {name: rejects[f"raw-00000-{row['key']}"]["reason"] for name, row in by_name.items()
               if f"raw-00000-{row['key']}" in rejects}
    assert set(found) | set(reasons) == set(URLS) and not set(found) & set(reasons)
    assert reasons == {"copy.jpg": "duplicate_exact", "logo.svg": "unsupported_format",
                       "broken.jpg": "truncated", "page.jpg": "not_an_image", "gone.jpg": "failed_to_download"} or \
        reasons == {"landscape.jpg": "duplicate_exact", "logo.svg": "unsupported_format",
                    "broken.jpg": "truncated", "page.jpg": "not_an_image", "gone.jpg": "failed_to_download"}
    svg = next(r for r in rejects.values() if r["reason"] == "unsupported_format")
    assert svg["detail"].startswith("SVG")
    # pixels: EXIF orientation applied, CMYK colours, 16-bit not white, alpha on white, AVIF and
    # HEIC decoded
    rot = found["rot6.jpg"]["pixels"]
    assert np.abs(_mean(rot[:8]) - RED).max() < 30 and np.abs(_mean(rot[-8:]) - BLUE).max() < 30
    assert np.abs(_mean(found["cmyk.jpg"]["pixels"]) - (200, 40, 40)).max() < 25
    deep = found["deep.png"]["pixels"]
    # the centre crop keeps the middle half of the 0..65535 ramp: about 64 to 191 in 8 bits
    assert 50 < deep[:, 0].mean() < 80 and 175 < deep[:, -1].mean() < 205 and 110 < deep.mean() < 145
    alpha = found["alpha.png"]["pixels"]
    assert np.abs(_mean(alpha[:, :24]) - WHITE).max() < 10 and np.abs(_mean(alpha[:, -24:]) - RED).max() < 10
    assert np.abs(_mean(found["photo.avif"]["pixels"]) - (30, 160, 60)).max() < 20
    assert np.abs(_mean(found["photo.heic"]["pixels"]) - (40, 60, 170)).max() < 20
    assert found["rot6.jpg"]["member"]["width"] == 96 and found["rot6.jpg"]["member"]["height"] == 64
    # img2dataset's metadata rides along: sha256 of the served bytes, extra columns, exif
    for name, entry in found.items():
        meta = entry["member"]["img2dataset"]
        assert meta["sha256"] == hashlib.sha256(downloads["zoo"][name]).hexdigest()
        assert meta["license"] == f"cc-by-{URLS.index(name)}" and meta["status"] == "success"
        assert "exif" in meta and entry["member"]["caption"] == f"zoo {name}"
    assert "resized_from" not in found["wide.jpg"]["member"]
    assert "warnings" not in summary["sources"]["raw"]
    # every URL is one sentence or one reject; the duplicate rate counts images only
    assert summary["sources"]["raw"]["sentences"] + summary["sources"]["raw"]["rejects"] == len(rows) == len(URLS)
    assert summary["sources"]["raw"]["duplicates"]["inputs"] == len(URLS) - 1


def test_rendered_pngs_of_the_real_download_read_back_with_pillow(raw_build):
    """The shards' PNGs (the build's default level 1: one Avg row filter) decode in Pillow, whose
    PNG reader is not OpenCV's libpng, to the pixels the build read back, every row filtered Avg."""
    from conftest import png_row_filters

    _, out = raw_build
    found = _sentences(out, "raw")
    assert len(found) >= 8
    for name, entry in found.items():
        pillow = np.asarray(Image.open(io.BytesIO(entry["png"])).convert("RGB"))
        assert np.array_equal(pillow, entry["pixels"]), name
        assert set(png_row_filters(entry["png"])) == {3}, name


def test_default_download_is_warned_about_and_sized_by_originals(default_build, downloads):
    summary, out = default_build
    source = summary["sources"]["default"]
    rows = _parquet_rows(downloads["default"])
    assert source["sentences"] + source["rejects"] == len(rows) == len(URLS)
    (warning,) = source["warnings"]
    assert "img2dataset resized" in warning and "--resize_mode no --disable_all_reencoding True" in warning
    assert "1 of them img2dataset's exif column records with an EXIF orientation" in warning  # rot6.jpg
    from uvd_pipeline.summary import format_summary

    assert f"warning: {warning}" in format_summary(summary)
    found = _sentences(out, "default")
    wide = found["wide.jpg"]["member"]
    assert wide["resized_from"] == [640, 160] and (wide["width"], wide["height"]) == (256, 256)
    # the histogram counts the original 640 px long side, not img2dataset's 256
    from uvd_pipeline.quality import SIDE_EDGES, bin_index

    long_sides = source["inputs"]["long_side"]
    assert long_sides[bin_index(640, SIDE_EDGES)] == 1
    # every picture the renderer got is img2dataset's 256 px copy, scaled down to the 64 canvas,
    # but 4 originals are smaller: their 40-48 px of detail are enlarged whoever scaled them, so
    # they count below the canvas (rev56j: judged by the copy alone, none did), and the short-side
    # histogram keeps the originals
    members = [f["member"] for f in found.values()]
    assert all((m["width"], m["height"]) == (256, 256) for m in members)
    small = sorted(tuple(m["resized_from"]) for m in members if min(m["resized_from"]) < 64)
    assert small == [(40, 40), (48, 32), (48, 48), (80, 40)]
    assert sum(source["inputs"]["short_side"][:bin_index(64, SIDE_EDGES)]) == len(small)
    assert source["inputs"]["below_canvas"] == len(small)
    # what img2dataset's defaults did: letterboxed white bars
    pixels = found["wide.jpg"]["pixels"]
    assert pixels.shape == (64, 64, 3)
    from uvd_pipeline.report import write_report

    paths = write_report(str(out), max_sentences_per_group=1)
    data = json.loads(Path(paths["json"]).read_text())
    assert data["warnings"] == {"default": [warning]}
    share = data["inputs"]["by_source"]["default"]["below_canvas_share"]
    assert share == round(len(small) / source["inputs"]["count"], 4) and share > 0.5, share
    page = Path(paths["html"]).read_text()
    assert "<h2>Warnings</h2>" in page and "img2dataset resized 8 of 8 images" in page


def test_cut_real_tar_accounts_for_every_success(downloads, tmp_path: Path):
    _require_img2dataset()
    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):
        (tmp_path / name).write_bytes((downloads["raw"] / name).read_bytes())
    tar = tmp_path / "00000.tar"
    with tarfile.open(tar) as whole:
        offsets = [m.offset for m in whole.getmembers() if m.name.endswith(".jpg")]
    tar.write_bytes(tar.read_bytes()[: offsets[len(offsets) // 2] + 700])  # inside a member's header+data
    items = [i for u in LaionSource("web", str(tmp_path)).units() for i in LaionSource("web", str(tmp_path)).read(u)]
    reasons = Counter(i.reason for i in items if isinstance(i, Reject))
    successes = sum(r["status"] == "success" for r in _parquet_rows(tmp_path))
    records = sum(isinstance(i, ImageRecord) for i in items)
    assert reasons["corrupt_archive"] == 1 and reasons["missing_from_archive"] >= 4
    assert records + reasons["truncated_sample"] + reasons["missing_from_archive"] == successes


def test_killed_real_download_keeps_its_tar_samples(downloads, tmp_path: Path):
    """A killed img2dataset leaves its tar cut at a 10 KiB record (its tar writer's block) and a
    0-byte parquet, no _stats.json: the samples the tar holds are built, the cut one is counted,
    and the parquet is one `bad_parquet` reject."""
    _require_img2dataset()
    whole = (downloads["raw"] / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").write_bytes(whole[: len(whole) // 2 // tarfile.RECORDSIZE * tarfile.RECORDSIZE])
    (tmp_path / "00000.parquet").write_bytes(b"")
    source = LaionSource("web", str(tmp_path))
    items = [i for u in source.units() for i in source.read(u)]
    reasons = Counter(i.reason for i in items if isinstance(i, Reject))
    assert reasons["bad_parquet"] == 1 and reasons["corrupt_archive"] == 1
    shas = {row["sha256"] for row in _parquet_rows(downloads["raw"]) if row["status"] == "success"}
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert len(records) >= 2 and all(hashlib.sha256(r.data).hexdigest() in shas for r in records)
    assert all(r.lineage["url"].startswith("http://127.0.0.1:") for r in records)  # from each sample's .json


@pytest.mark.parametrize("made_by", ["img2dataset", "img2dataset, cut", "GNU tar"])
def test_parts_of_a_real_tar_yield_what_the_whole_tar_does(downloads, tmp_path: Path, monkeypatch, made_by: str):
    """A big local tar is read as parts, each seeking over the samples other parts own: on the
    tar img2dataset wrote, the same tar cut inside a member, and its members packed again by GNU
    tar (its own header layout), the parts together yield exactly the whole tar's items."""
    _require_img2dataset()
    import sources.web_units as web_units

    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):
        (tmp_path / name).write_bytes((downloads["raw"] / name).read_bytes())
    tar = tmp_path / "00000.tar"
    if made_by == "img2dataset, cut":
        with tarfile.open(tar) as whole:
            offsets = [m.offset for m in whole.getmembers() if m.name.endswith(".jpg")]
        tar.write_bytes(tar.read_bytes()[: offsets[len(offsets) // 2] + 700])
    elif made_by == "GNU tar":
        members = tmp_path / "members"
        members.mkdir()
        subprocess.run(["tar", "-xf", str(tar), "-C", str(members)], check=True)
        names = sorted(p.name for p in members.iterdir())
        subprocess.run(["tar", "--format=gnu", "-cf", str(tar), "-C", str(members), *names], check=True)
        shutil.rmtree(members)  # a folder beside the shards would be a reject of its own
    source = LaionSource("web", str(tmp_path))
    whole = [repr(i) for u in source.units() for i in source.read(u)]
    monkeypatch.setattr(web_units, "TAR_PART_BYTES", max(1, tar.stat().st_size // 4))
    units = source.units()
    assert len(units) >= 4 and all(u.parts > 1 for u in units)
    parts = [repr(i) for u in units for i in source.read(u)]
    assert whole and sorted(parts) == sorted(whole)
    # the bytes a part read are whole samples: each one's sha256 is one img2dataset recorded
    shas = {row["sha256"] for row in _parquet_rows(tmp_path) if row["status"] == "success"}
    records = [i for u in units for i in source.read(u) if isinstance(i, ImageRecord)]
    assert records and all(hashlib.sha256(r.data).hexdigest() in shas for r in records)


def test_a_grown_or_shrunk_download_renders_only_what_changed(site, tmp_path: Path):
    """img2dataset's incremental mode adds shards to an existing output; a rerun of the same build
    renders the new shards only (the others come from the unit store), loses none of their rows,
    and gives the bytes of a fresh build of the grown folder. A removed input shard takes its
    sentences with it, again as a fresh build would."""
    from conftest import shard_digests

    _, base, _ = site
    grow = tmp_path / "grow"
    raw = ("--output_format", "webdataset", "--resize_mode", "no", "--disable_all_reencoding", "True")
    _download(_url_list(tmp_path / "first.csv", base, URLS[:8]), grow, *raw, per_shard=4)
    assert len(list(grow.glob("*.tar"))) == 2
    downloads = {"root": tmp_path, "grow": grow}
    first, out = _build(downloads, "grow", tmp_path / "out")
    _download(_url_list(tmp_path / "all.csv", base, URLS), grow, *raw, per_shard=4)  # incremental: the default
    assert len(list(grow.glob("*.tar"))) == 4
    grown, _ = _build(downloads, "grow", out)
    counters = grown["run"]["counters"]
    assert (counters.get("grow.units_reused"), counters.get("grow.units_rendered")) == (2, 2)
    successes = sum(r["status"] == "success" for r in _parquet_rows(grow))
    assert grown["totals"]["sentences"] > first["totals"]["sentences"]
    assert grown["totals"]["sentences"] + grown["sources"]["grow"]["rejects"] >= successes
    fresh, fresh_out = _build(downloads, "grow", tmp_path / "fresh")
    assert fresh["totals"] == grown["totals"]
    assert shard_digests(out) == shard_digests(fresh_out)

    for path in grow.glob("00001*"):  # a shard deleted between runs
        path.unlink()
    shrunk, _ = _build(downloads, "grow", out)
    assert "grow.units_rendered" not in shrunk["run"]["counters"]
    assert shrunk["totals"]["sentences"] < grown["totals"]["sentences"]
    assert len(list((out / "_units" / "grow").glob("*.json"))) == 3
    again, again_out = _build(downloads, "grow", tmp_path / "fresh-shrunk")
    assert shard_digests(out) == shard_digests(again_out)


@pytest.mark.slow
def test_two_worker_threads_build_the_real_download_to_the_same_bytes(raw_build, downloads, tmp_path: Path,
                                                                       caplog):
    """The default local mode (2 workers as threads of the build's process, every unit rendered by
    the early render pool) on the real img2dataset download of the odd-image zoo: the same shards,
    rejects and counters as one in-process worker (no pool)."""
    import logging

    from conftest import early_rendered, shard_digests

    summary, out = raw_build
    caplog.set_level(logging.INFO, logger="uvd_pipeline.build")
    threaded, threaded_out = _build(downloads, "raw", tmp_path / "threads", beam={"direct_num_workers": 2})
    assert threaded["run"]["worker_mode"] == "multi_threading"
    rendered, listed = early_rendered(caplog)
    assert rendered == listed > 0
    assert shard_digests(threaded_out) == shard_digests(out)
    assert threaded["run"]["counters"] == summary["run"]["counters"]
    assert _rejects(threaded_out, "raw") == _rejects(out, "raw") and _rejects(out, "raw")


@pytest.fixture(scope="module")
def reencoded(site):
    """The zoo downloaded with `--resize_mode no` alone (no `--disable_all_reencoding`), as
    `output_format=parquet` with `--encode_format webp`: sizes kept, every image re-encoded."""
    root, base, _ = site
    out = root / "reencoded"
    _download(_url_list(root / "urls-reencoded.csv", base, URLS), out, "--output_format", "parquet",
              "--encode_format", "webp", "--resize_mode", "no")
    return out


def _flip_a_byte(data: bytes) -> bytes:
    """The image with one byte of its entropy-coded middle changed: it still decodes."""
    middle = len(data) * 3 // 4
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


@pytest.mark.parametrize("layout", ["webdataset", "files"])
def test_a_member_whose_bytes_differ_from_the_recorded_hash_is_a_reject(downloads, tmp_path: Path, layout: str):
    """With `--disable_all_reencoding True` img2dataset stores the downloaded bytes and records their
    sha256 (its default `--compute_hash`): a tar member (or, in the files layout, `NNNNN/{key}.jpg`)
    changed since (a bad disk, a bad copy) that still decodes is a `hash_mismatch` reject, not a
    sentence of wrong pixels. The others pass."""
    _require_img2dataset()
    for name in ("00000.parquet", "00000_stats.json"):
        (tmp_path / name).write_bytes((downloads["raw"] / name).read_bytes())
    by_url = {r["key"]: r["url"].rsplit("/", 1)[1] for r in _parquet_rows(downloads["raw"])}
    (tmp_path / "00000").mkdir()
    with tarfile.open(downloads["raw"] / "00000.tar") as src, tarfile.open(tmp_path / "00000.tar", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".jpg") and by_url[member.name.split(".")[0]] == "wide.jpg":
                data = _flip_a_byte(data)
                Image.open(io.BytesIO(data)).load()  # still a picture
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
            (tmp_path / "00000" / member.name).write_bytes(data)  # the same shard as output_format=files
    if layout == "files":
        (tmp_path / "00000.tar").unlink()
    else:
        shutil.rmtree(tmp_path / "00000")
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == layout
    items = [i for u in source.units() for i in source.read(u)]
    (bad,) = [i for i in items if isinstance(i, Reject) and i.reason == "hash_mismatch"]
    wide_key = next(k for k, name in by_url.items() if name == "wide.jpg")
    assert bad.key == f"web-00000-{wide_key}" and "sha256" in bad.detail
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert len(records) == sum(r["status"] == "success" for r in _parquet_rows(tmp_path)) - 1


def test_a_parquet_image_whose_bytes_differ_from_the_recorded_hash_is_a_reject(downloads, tmp_path: Path):
    """The same for `output_format=parquet` images stored as downloaded (`disable_all_reencoding`)."""
    _require_img2dataset()
    import pyarrow as pa

    table = pq.read_table(downloads["raw"] / "00000.parquet")
    with tarfile.open(downloads["raw"] / "00000.tar") as tar:
        images = {m.name.split(".")[0]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")}
    keys = table.column("key").to_pylist()
    flipped = sorted(images)[0]
    column = [(_flip_a_byte(images[k]) if k == flipped else images[k]) if k in images else None for k in keys]
    pq.write_table(table.append_column("jpg", pa.array(column, pa.binary())), tmp_path / "00000.parquet")
    source = LaionSource("web", str(tmp_path))
    assert source.resolved_format() == "parquet"
    items = [i for u in source.units() for i in source.read(u)]
    (bad,) = [i for i in items if isinstance(i, Reject) and i.reason == "hash_mismatch"]
    assert bad.key == f"web-00000-{flipped}"
    assert sum(isinstance(i, ImageRecord) for i in items) == len(images) - 1


def test_reencoded_download_is_warned_about_and_its_rotation_loss_named(reencoded, site, tmp_path: Path):
    """`--resize_mode no` without `--disable_all_reencoding` keeps every size but decodes and
    re-encodes each image (OpenCV, EXIF dropped): the photo img2dataset's own exif column records
    as 'Rotated 90 CW' is stored, and renders, sideways. The build says so in a warning."""
    site_zoo = site[2]
    rows = [r for r in _parquet_rows(reencoded) if r["status"] == "success"]
    rot = next(r for r in rows if r["url"].endswith("rot6.jpg"))
    assert json.loads(rot["exif"])["Image Orientation"] == "Rotated 90 CW"
    stored = Image.open(io.BytesIO(rot["webp"]))
    assert stored.size == (64, 96) and not stored.getexif().get(0x0112)  # sideways, no tag left
    (notice,) = LaionSource("web", str(reencoded)).notices()
    assert f"decoded and re-encoded {len(rows)} of {len(rows)} images" in notice
    assert "1 of them" in notice and "EXIF orientation" in notice
    assert "--resize_mode no --disable_all_reencoding True" in notice

    # the same listing beside images stored as downloaded (`--skip_reencode True` kept them, a
    # hand-made shard): their bytes have the recorded hash, so nothing was re-encoded, and no warning
    import pyarrow as pa

    kept = tmp_path / "kept"
    kept.mkdir()
    table = pq.read_table(reencoded / "00000.parquet")
    served = [site_zoo[r["url"].rsplit("/", 1)[1]] if r["status"] == "success" else None for r in table.to_pylist()]
    table = table.set_column(table.column_names.index("webp"), "webp", pa.array(served, pa.binary()))
    table = table.set_column(table.column_names.index("sha256"), "sha256",
                             pa.array([hashlib.sha256(d).hexdigest() if d else None for d in served]))
    pq.write_table(table, kept / "00000.parquet")
    assert LaionSource("web", str(kept)).notices() == []


def test_samples_img2dataset_counted_but_wrote_nowhere_are_rejects(site, tmp_path: Path):
    """img2dataset counts a download a success before its writer runs, and a writer that raises
    loses the sample: its webdataset writer's `json.dumps` fails on a `--save_additional_columns`
    column of dates (`TypeError: datetime is not JSON serializable`), so the tar and the parquet
    both lack the sample while `_stats.json` counts it among `successes`. Each such sample is a
    `missing_from_archive` reject of its own: every URL img2dataset tried is a sentence or a reject."""
    import datetime

    import pyarrow as pa

    _, base, _ = site
    names = ["landscape.jpg", "wide.jpg", "rot6.jpg", "gone.jpg"]
    (tmp_path / "urls").mkdir()
    pq.write_table(pa.table({"URL": [f"{base}/{n}" for n in names], "TEXT": [f"zoo {n}" for n in names],
                             "created": pa.array([datetime.datetime(2020, 1, 1)] * len(names), pa.timestamp("us"))}),
                   tmp_path / "urls" / "part-0.parquet")
    out = tmp_path / "web"
    command = [str(IMG2DATASET), "--url_list", str(tmp_path / "urls"), "--input_format", "parquet", "--url_col", "URL",
               "--caption_col", "TEXT", "--save_additional_columns", '["created"]', "--output_folder", str(out),
               "--output_format", "webdataset", "--resize_mode", "no", "--disable_all_reencoding", "True",
               "--processes_count", "1", "--thread_count", "2", "--timeout", "5", "--retries", "0"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((out / "00000_stats.json").read_text())
    assert (stats["count"], stats["successes"]) == (4, 3)  # what img2dataset says it did
    assert [r["status"] for r in _parquet_rows(out)] == ["failed_to_download"]  # what it wrote
    with tarfile.open(out / "00000.tar") as tar:
        assert tar.getmembers() == []

    source = LaionSource("web", str(out))
    items = [i for u in source.units() for i in source.read(u)]
    reasons = Counter(i.reason for i in items if isinstance(i, Reject))
    assert reasons == {"failed_to_download": 1, "missing_from_archive": 3}
    lost = [i for i in items if isinstance(i, Reject) and i.reason == "missing_from_archive"]
    assert len({r.key for r in lost}) == 3
    assert all("00000_stats.json counts 3 successes" in r.detail and "00000.parquet" in r.detail for r in lost)


def test_a_resumed_files_download_builds_no_file_its_earlier_run_left(site, downloads, tmp_path: Path):
    """img2dataset (`output_format=files`) stopped in shard 00000 before its `_stats.json` (as a
    kill leaves it) and run again (`--incremental_mode incremental`, its default) downloads the
    shard again and rewrites 00000.parquet, but never clears 00000/: where a URL it saved before
    now fails (404), and past the end of a URL list that now ends sooner, the earlier run's
    .jpg/.txt/.json stay. Each was built: key 1 both a `failed_to_download` reject and a sentence
    (its old .json's status over the row's), the keys from 4 on sentences no listing row names, and a
    warning that img2dataset 'wrote no row nor .json' for them. Now each such key is one
    `stale_download` reject naming its files, never built; the keys the listing says it saved
    are built, from this run's files."""
    out = tmp_path / "files"
    shutil.copytree(downloads["default"], out)  # the earlier run: 13 URLs, the images it saved in 00000/
    (out / "00000_stats.json").unlink()  # shard 00000 not ended, as img2dataset killed in it leaves it
    keys = sorted(p.stem for p in (out / "00000").glob("*.jpg"))
    names = [URLS[0], "gone.jpg", *URLS[2:4]]  # the URL of key 1 now fails; the list ends at key 3
    _download(_url_list(tmp_path / "four.csv", site[1], names), out, "--output_format", "files")
    assert sorted(p.stem for p in (out / "00000").glob("*.jpg")) == keys and len(keys) > 5
    listed = {row["key"]: row["status"] for row in _parquet_rows(out)}
    assert listed == {keys[0]: "success", keys[1]: "failed_to_download", keys[2]: "success", keys[3]: "success"}

    source = LaionSource("web", str(out))
    items = [i for u in source.units() for i in source.read(u)]
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert sorted(r.lineage["sample_key"] for r in records) == [keys[0], keys[2], keys[3]]
    assert all(r.lineage["url"].endswith(names[int(r.lineage["sample_key"])]) for r in records)
    rejects = sorted((i.reason, i.key) for i in items if isinstance(i, Reject))
    assert rejects == [("failed_to_download", f"web-00000-{keys[1]}")] + \
        [("stale_download", f"web-00000-{k}") for k in (keys[1], *keys[4:])]
    stale = {i.key: i for i in items if isinstance(i, Reject) and i.reason == "stale_download"}
    assert all(f"{k}.jpg, {k}.json, {k}.txt" in stale[f"web-00000-{k}"].detail and "earlier" in
               stale[f"web-00000-{k}"].detail and stale[f"web-00000-{k}"].input == f"00000/{k}.jpg"
               for k in (keys[1], *keys[4:])), stale
    assert not any("not hash-checked" in n for n in source.notices())


def test_a_sample_added_to_a_real_tar_that_its_listing_does_not_record_is_never_built(downloads, tmp_path: Path):
    """img2dataset writes a shard's tar whole beside its listing, so a tar sample whose listed
    row failed (the key of `gone.jpg`, a 404), or with a `.json` and no row, is none of that
    download's: another run's sample added with GNU `tar -rf`. The failed key was built beside its
    `failed_to_download` reject (its .json's `success` overriding the row), the unlisted one as a
    sample of its own. Each is now one `stale_download` reject naming its members, never built;
    every other sample is as in the tar untouched."""
    _require_img2dataset()
    shard = tmp_path / "raw"
    shutil.copytree(downloads["raw"], shard)
    alone = LaionSource("web", str(shard))
    expected = [repr(i) for u in alone.units() for i in alone.read(u)]
    rows = _parquet_rows(shard)
    (gone,) = [r["key"] for r in rows if r["status"] != "success"]
    unlisted = f"{max(int(r['key']) for r in rows) + 1:0{len(gone)}d}"
    with tarfile.open(shard / "00000.tar") as tar:  # another download's sample, written under each key
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()
                   if m.name.startswith(rows[0]["key"] + ".")}
    for key in (gone, unlisted):
        for ext, data in members.items():
            (tmp_path / f"{key}.{ext}").write_bytes(data)
        subprocess.run(["tar", "-rf", str(shard / "00000.tar"), "-C", str(tmp_path),
                        *(f"{key}.{ext}" for ext in sorted(members))], check=True)
    source = LaionSource("web", str(shard))
    items = [i for u in source.units() for i in source.read(u)]
    added = [i for i in items if repr(i) not in expected]
    assert [(i.reason, i.key, i.input) for i in added] == [("stale_download", f"web-00000-{k}", f"00000.tar:{k}.jpg")
                                                           for k in (gone, unlisted)]
    assert f"{gone}.jpg, {gone}.json, {gone}.txt: put in the tar by hand" in added[0].detail
    assert f"records key {gone} as failed_to_download" in added[0].detail
    assert f"lists no key {unlisted} though its .json says img2dataset saved it" in added[1].detail
    assert len(items) == len(expected) + 2

_ANSWER_LATE = threading.Event()  # set by `_killed_download` while its download runs


class _Slow(_Quiet):
    """Each answer a fifth of a second late while a download is to be killed: it is still running
    when it is killed. The same command run again after the kill is answered at once (its waits
    were seconds of the suite's wall time, and what it is checked for is where it ends)."""

    def do_GET(self) -> None:
        import time

        if _ANSWER_LATE.is_set():
            time.sleep(0.2)
        try:
            super().do_GET()
        except (BrokenPipeError, ConnectionResetError):  # its client killed mid-answer: the point
            pass


def _killed_download(url_list: Path, out: Path, until: str, *extra: str) -> list[str]:
    """img2dataset killed (SIGKILL to its whole process group, as the OOM killer or a lost session
    ends it: Ctrl-C would run its handler, which removes `_tmp/`) once `until` (a glob under `out`)
    is there; returns what it left."""
    import signal
    import time

    command = [str(IMG2DATASET), "--url_list", str(url_list), "--input_format", "csv", "--url_col", "url",
               "--caption_col", "caption", "--output_folder", str(out), "--processes_count", "1",
               "--thread_count", "4", "--timeout", "10", "--retries", "0", "--number_sample_per_shard", "13", *extra]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}
    _ANSWER_LATE.set()
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not list(out.glob(until)) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _ANSWER_LATE.clear()
    assert list(out.glob(until)), f"img2dataset never wrote {until}"
    return sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def slow_site(site):
    """The zoo served again, each answer late, with a URL list of 5 shards of 13 URLs."""
    root, _, _ = site
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Slow, directory=str(root / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        names = [u for u in URLS if u != "gone.jpg"] * 6
        yield _url_list(root / "slow.csv", f"http://127.0.0.1:{server.server_address[1]}", names[:65])
    finally:
        server.shutdown()


def test_a_really_killed_download_is_an_unfinished_download_never_images(slow_site, tmp_path: Path):
    """img2dataset killed before any shard ended leaves `_tmp/` with a feather per shard it
    planned, nothing else: it was read as a plain folder, each feather an image the decoder failed.
    Now it is one `unfinished_download` reject naming the 5 shards. (Killed once shard 0 ended,
    and the same command run again: `test_a_download_really_killed_in_a_shard_...`, each format.)"""
    _require_img2dataset()
    early = tmp_path / "early"
    assert _killed_download(slow_site, early, "_tmp/4.feather", "--output_format", "webdataset") == ["_tmp"]
    assert sorted(p.name for p in (early / "_tmp").iterdir()) == [f"{n}.feather" for n in range(5)]
    source = LaionSource("web", str(early))
    (reject,) = [i for u in source.units() for i in source.read(u)]
    assert reject.reason == "unfinished_download" and reject.input == "_tmp"
    assert "5 shards it planned (00000, 00001, 00002... 00004) not finished" in reject.detail



def test_folders_beside_real_files_shards_are_rejects_never_shards(downloads, tmp_path: Path):
    """Beside img2dataset's real `files` shards (`00000/`), a user's `notes/` holding a photo and a
    `.ipynb_checkpoints/` from a notebook: `notes/` was read as a shard (its photo a sample). Only
    img2dataset's digit-named folders are shards: the same records as the download alone."""
    _require_img2dataset()
    shutil.copytree(downloads["default"], tmp_path / "files")
    alone = LaionSource("web", str(tmp_path / "files"))
    expected = sorted(repr(i) for u in alone.units() for i in alone.read(u))
    (tmp_path / "files" / "notes").mkdir()
    (tmp_path / "files" / "notes" / "look.jpg").write_bytes(downloads["zoo"]["landscape.jpg"])
    (tmp_path / "files" / "notes" / "todo.txt").write_text("check the rotated one")
    (tmp_path / "files" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "files" / ".ipynb_checkpoints" / "look-checkpoint.ipynb").write_text("{}")
    source = LaionSource("web", str(tmp_path / "files"))
    assert source.resolved_format() == "files"
    items = [i for u in source.units() for i in source.read(u)]
    added = [i for i in items if repr(i) not in expected]
    assert sorted((i.reason, i.input) for i in added) == [("hidden_file", ".ipynb_checkpoints"),
                                                          ("unexpected_file", "notes")]


@pytest.mark.parametrize("output_format", ["webdataset", "parquet", "files"])
def test_a_download_really_killed_in_a_shard_builds_the_ended_ones_and_its_rerun_the_rest(slow_site, tmp_path: Path,
                                                                                        output_format: str):
    """img2dataset killed in its first shard: with `--output_format parquet` its 0-byte
    `00000.parquet` crashed the format's detection (ArrowInvalid); every format is now the one
    `unfinished_download` reject. Killed in a later shard, the shard it was writing was built half
    (its cut tar's samples, then `corrupt_archive`, `bad_parquet`): now left out and named, the
    build holds the ended shards' samples alone (each ended shard read, and `_tmp/` naming only the
    shards to come). The same img2dataset command then finishes the download (the advice the
    reject gives), and the same build, rerun, renders the new shards to the bytes of a fresh build
    and has no such reject."""
    from conftest import shard_digests

    _require_img2dataset()
    extra = ("--output_format", output_format, "--resize_mode", "no", "--disable_all_reencoding", "True")
    early = tmp_path / "early"
    left = _killed_download(slow_site, early, "00000.parquet", *extra)
    assert "00000_stats.json" not in left and "_tmp" in left
    source = LaionSource("web", str(early))
    (reject,) = [i for u in source.units() for i in source.read(u)]
    assert (reject.reason, reject.input) == ("unfinished_download", "_tmp") and "00000.parquet" in reject.detail

    later = tmp_path / "killed"
    left = _killed_download(slow_site, later, "00000_stats.json", *extra)
    ended = {p.name.removesuffix("_stats.json") for p in later.glob("*_stats.json")}
    writing = sorted(n for n in left if n[:5].isdigit() and n[:5] not in ended)
    source = LaionSource("web", str(later))
    items = [i for u in source.units() for i in source.read(u)]
    (reject,) = [i for i in items if isinstance(i, Reject)]  # no feather read as a failed image either
    assert reject.reason == "unfinished_download" and all(n in reject.detail for n in writing[:1])
    assert "_tmp" in left and ended and not any(f"{n}," in reject.detail for n in ended)
    successes = {(shard, row["key"]) for shard in ended
                 for row in pq.read_table(later / f"{shard}.parquet", columns=["status", "key"]).to_pylist()
                 if row["status"] == "success"}
    records = [i for i in items if isinstance(i, ImageRecord)]
    assert successes and len(records) == len(successes)
    assert {(r.lineage["shard"], r.lineage["sample_key"]) for r in records} == successes
    downloads = {"root": tmp_path, "killed": later}
    _build(downloads, "killed", tmp_path / "out")
    out = tmp_path / "out"
    reasons = Counter(r["reason"] for r in _rejects(out, "killed").values())
    assert reasons["unfinished_download"] == 1 and not {"corrupt_archive", "truncated_sample", "bad_parquet"} & set(reasons)

    _download(slow_site, later, *extra, per_shard=13)  # the same command: its incremental mode ends the rest
    assert not (later / "_tmp").exists() and len(list(later.glob("*_stats.json"))) == 5
    finished, _ = _build(downloads, "killed", out)
    counters = finished["run"]["counters"]
    assert counters.get("killed.units_reused") == len(ended) and counters.get("killed.units_rendered") == 5 - len(ended)
    fresh, fresh_out = _build(downloads, "killed", tmp_path / "fresh")
    assert fresh["totals"] == finished["totals"] and "unfinished_download" not in str(_rejects(out, "killed"))
    assert shard_digests(out) == shard_digests(fresh_out)


def test_a_0_byte_body_is_an_empty_file_in_every_output_format(tmp_path: Path):
    """A server answering 200 with a 0-byte body: img2dataset 1.47 (`--disable_all_reencoding`)
    counts it a success and stores b"" (a 0-byte `.jpg` member or file, an empty `jpg` cell). Its
    tar and files layouts built it as the decoder's `empty_file`; its parquet layout said
    `missing_image` ("row without jpg bytes"), as if img2dataset had stored nothing. Each layout
    now says `empty_file`; every listed row is a sentence or a reject."""
    _require_img2dataset()
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(_jpeg(_halves(48, 64, seed=9)))
    (folder / "empty.jpg").write_bytes(b"")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    downloads = {"root": tmp_path}
    try:
        url_list = _url_list(tmp_path / "urls.csv", f"http://127.0.0.1:{server.server_address[1]}",
                             ["ok.jpg", "empty.jpg", "gone.jpg"])
        for layout in ("webdataset", "files", "parquet"):
            downloads[layout] = tmp_path / layout
            _download(url_list, downloads[layout], "--output_format", layout, "--resize_mode", "no",
                      "--disable_all_reencoding", "True")
    finally:
        server.shutdown()
    for layout in ("webdataset", "files", "parquet"):
        rows = _parquet_rows(downloads[layout])
        assert Counter(r["status"] for r in rows) == {"success": 2, "failed_to_download": 1}
        summary, out = _build(downloads, layout)
        rejects = {r["key"].rsplit("-", 1)[1]: (r["stage"], r["reason"]) for r in _rejects(out, layout).values()}
        empty = next(r["key"] for r in rows if r["url"].endswith("/empty.jpg"))
        assert rejects[empty] == ("decode", "empty_file"), (layout, rejects)
        assert summary["sources"][layout]["sentences"] + len(rejects) == len(rows) == 3, (layout, rejects)


@pytest.mark.parametrize("splits", [None, ["train"]])
def test_a_download_read_as_imagenet_is_refused_naming_type_laion(downloads, tmp_path, splits):
    """A newcomer's slip: `type: imagenet` on an img2dataset download. Its `00000.tar` shards would
    pass for ImageNet-21k's `<wnid>.tar` class archives, each shard a "class" of unrelated web
    images (and without `splits` the error sent the user to `splits: [train]`, into that trap):
    `check` refuses it before anything is read, naming the field and `type: laion`."""
    source = {"name": "web", "type": "imagenet", "path": str(downloads["raw"])}
    if splits:
        source["splits"] = splits
    config = tmp_path / "web.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "sources": [source]}))
    done = subprocess.run([sys.executable, "-m", "uvd_pipeline", "check", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "config OK" not in done.stdout
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: sources[0].path (web): /") and "(web): web:" not in error
    assert "img2dataset" in error and "00000_stats.json" in error and "type: laion" in error
    assert "splits: [train]" not in error


def test_an_output_format_parquet_shard_over_the_budget_is_built(site, tmp_path: Path, monkeypatch):
    """img2dataset's own `--output_format parquet` writes a shard's images (100 by default) in one
    row group, their bytes in one dictionary page (pyarrow's defaults), which pyarrow decodes whole:
    a shard over the budget (100 photos of 3 MB, 298 MB, against 256 MiB) was 100
    `row_group_too_large` rejects. Its image column is now read a value at a time from its pages
    (`parquet_paged`): under a budget of half its group, every photo is built, its bytes those
    served, its caption the listed one."""
    from sources import hf_parquet

    root, base, _ = site
    served = {}
    for i in range(12):
        served[f"noise{i}.jpg"] = _jpeg(np.random.default_rng(40 + i).integers(0, 255, (96, 96, 3), dtype=np.uint8))
        (root / "site" / f"noise{i}.jpg").write_bytes(served[f"noise{i}.jpg"])
    out = tmp_path / "shards"
    _download(_url_list(tmp_path / "urls.csv", base, sorted(served)), out, "--output_format", "parquet",
              "--resize_mode", "no", "--disable_all_reencoding", "True")
    (shard,) = out.glob("*.parquet")
    group = pq.ParquetFile(shard).metadata.row_group(0)
    assert group.num_rows == 12 and group.column(group.num_columns - 1).path_in_schema == "jpg"
    monkeypatch.setattr(hf_parquet, "ROW_GROUP_BYTES", hf_parquet.declared_bytes(group) // 2)
    source = LaionSource("web", str(out))
    items = [i for u in source.units() for i in source.read(u)]
    assert {type(i) for i in items} == {ImageRecord}, [getattr(i, "detail", "") for i in items][:1]
    by_caption = {i.lineage["caption"]: i.data for i in items}
    assert by_caption == {f"zoo {name}": data for name, data in served.items()}
