"""Web images exactly as img2dataset writes them (output_format=webdataset).

Per shard NNNNN: `NNNNN.tar` with `{key}.jpg|png|webp`, `{key}.txt`, `{key}.json`; `NNNNN.parquet`
with one row per attempted URL; `NNNNN_stats.json`. The images are crops and rescales of the
real bundled photos in many sizes, aspect ratios, formats and colour modes, and a few broken
entries so that a default build exercises every reject path. A few entries of the last shard
are planted duplicates, as web crawls hold them (`PLANTED`): a byte copy of an earlier image, a
lossy re-encode, a slightly downscaled copy, and a byte copy of an ImageNet val image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from uvd_pipeline.sample import media
from uvd_pipeline.tarfiles import add_member, open_writer

SHARDS = 3
SAMPLES_PER_SHARD = 72  # 216 tar entries in all
FAILED_DOWNLOADS_PER_SHARD = 2
URL_ROOT = "http://sample.invalid/uvd-laion"  # .invalid: a reserved name that never resolves
# Broken entries: (shard, index) -> what is wrong with them.
BROKEN = {
    (0, 5): "zero_byte",
    (0, 17): "not_an_image",
    (1, 9): "truncated_jpeg",
    (1, 30): "corrupt_header",
    (2, 11): "decompression_bomb",
    (2, 40): "caption_only",
}
# Planted duplicates: (shard, index) -> (how, what of). The originals are entries written earlier
# (shard, index), or an ImageNet val image (class index, val index).
# zlib level of the corpus's PNGs: OpenCV's default (`cv2.imwrite`), as common on the web as
# Pillow's 6 and a fifth of its encode time on the corpus's multi-megapixel PNGs (the pixels, all
# a build reads, are the same at every level).
PNG_LEVEL = 1
PLANTED = {
    (2, 50): ("byte_copy", (0, 1)),
    (2, 51): ("reencoded", (0, 20)),
    (2, 52): ("downscaled", (1, 14)),
    (2, 53): ("imagenet_val_copy", (2, 5)),
}


def _crop_and_scale(rng: np.random.Generator, base: np.ndarray, index: int) -> np.ndarray:
    h, w = base.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(0.33), np.log(3.0))))
    area = rng.uniform(0.3, 1.0) * h * w
    cw = int(min(w, max(16, round(np.sqrt(area * aspect)))))
    ch = int(min(h, max(16, round(np.sqrt(area / aspect)))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    crop = base[y0 : y0 + ch, x0 : x0 + cw]
    if index % 24 == 7:
        long_side = int(rng.integers(2100, 3200))  # large web images: the fast-path case
    elif index % 15 == 4:
        long_side = int(rng.integers(40, 96))  # thumbnails, upsampled by the build
    else:
        long_side = int(rng.integers(160, 1400))
    scale = long_side / max(ch, cw)
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(crop, size, interpolation=interp)


def _exif_orientation_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _encode(rng: np.random.Generator, rgb: np.ndarray, index: int) -> tuple[bytes, str, str]:
    """Encode in a format and mode chosen by index; returns (bytes, file extension, description)."""
    image = Image.fromarray(rgb)
    buf = io.BytesIO()
    quality = int(rng.integers(70, 96))
    if index % 11 == 3:
        image.convert("L").save(buf, "JPEG", quality=quality)
        return buf.getvalue(), "jpg", "jpeg-gray"
    if index % 13 == 5:
        image.convert("CMYK").save(buf, "JPEG", quality=quality)
        return buf.getvalue(), "jpg", "jpeg-cmyk"
    if index % 10 == 2:
        # Stored rotated; EXIF orientation 6 says "rotate 90 degrees clockwise to display".
        Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(
            buf, "JPEG", quality=quality, exif=_exif_orientation_bytes(6)
        )
        return buf.getvalue(), "jpg", "jpeg-exif-rot6"
    if index % 9 == 4:
        image.save(buf, "PNG", compress_level=PNG_LEVEL)
        return buf.getvalue(), "png", "png-rgb"
    if index % 17 == 6:
        image.quantize(64, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", compress_level=PNG_LEVEL)
        return buf.getvalue(), "png", "png-palette"
    if index % 19 == 7:
        alpha = np.tile(np.linspace(0, 255, rgb.shape[1], dtype=np.uint8), (rgb.shape[0], 1))
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, "PNG", compress_level=PNG_LEVEL)
        return buf.getvalue(), "png", "png-rgba"
    if index % 23 == 8:
        wide = rgb.astype(np.uint16) * 257
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(wide[:, :, ::-1]))
        assert ok
        return encoded.tobytes(), "png", "png-16bit"
    if index % 29 == 9:
        image.save(buf, "WEBP", quality=quality, method=4)
        return buf.getvalue(), "webp", "webp"
    if index % 31 == 10:
        # PNG bytes under a .jpg name: decoders must sniff content, not trust extensions.
        image.save(buf, "PNG", compress_level=PNG_LEVEL)
        return buf.getvalue(), "jpg", "png-named-jpg"
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue(), "jpg", "jpeg"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decompression_bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny file whose header promises 3.6 gigapixels: what the max_pixels guard is for."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _broken(kind: str, rng: np.random.Generator) -> tuple[bytes | None, str]:
    if kind == "zero_byte":
        return b"", "jpg"
    if kind == "not_an_image":
        return b"<html><body>403 Forbidden</body></html>\n", "jpg"
    if kind == "truncated_jpeg":
        buf = io.BytesIO()
        Image.fromarray(media.photo("astronaut")).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        return data[: len(data) * 2 // 5], "jpg"
    if kind == "corrupt_header":
        noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        return b"\xff\xd8\xff\xe0" + noise, "jpg"
    if kind == "decompression_bomb":
        return decompression_bomb_png(), "png"
    if kind == "caption_only":
        return None, ""
    raise KeyError(kind)


def _planted(how: str, of: tuple[int, int], written: dict[tuple[int, int], tuple[bytes, str, np.ndarray]],
             seed: int) -> tuple[bytes, str, np.ndarray]:
    """A duplicate of an earlier entry (or of an ImageNet val image): bytes, extension, pixels."""
    if how == "imagenet_val_copy":
        from uvd_pipeline.sample import imagenet

        pixels, data = imagenet.val_jpeg(seed, *of)
        return data, "jpg", pixels
    data, ext, pixels = written[of]
    if how == "byte_copy":
        return data, ext, pixels
    buf = io.BytesIO()
    if how == "reencoded":
        Image.fromarray(pixels).save(buf, "JPEG", quality=55)
        return buf.getvalue(), "jpg", pixels
    if how == "downscaled":
        h, w = pixels.shape[:2]
        smaller = cv2.resize(pixels, (round(w * 0.85), round(h * 0.85)), interpolation=cv2.INTER_AREA)
        Image.fromarray(smaller).save(buf, "JPEG", quality=90)
        return buf.getvalue(), "jpg", smaller
    raise KeyError(how)


PARQUET_SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()),
                            ("status", pa.string()), ("error_message", pa.string()),
                            ("width", pa.int64()), ("height", pa.int64()),
                            ("original_width", pa.int64()), ("original_height", pa.int64()),
                            ("exif", pa.string()), ("sha256", pa.string())])


class ShardWriter:
    """One shard as img2dataset writes it: `NNNNN.tar` (`{key}.{ext}`, `{key}.txt`, `{key}.json` per
    sample), then on `close` `NNNNN.parquet` (one row per attempted URL) and `NNNNN_stats.json`."""

    def __init__(self, root: str, shard: int) -> None:
        self.root, self.shard = root, shard
        self.rows: list[dict] = []
        self._handle = open(os.path.join(root, f"{shard:05d}.tar"), "wb")
        self._tar = open_writer(self._handle)

    def add(self, key: str, data: bytes | None, ext: str, caption: str, url: str,
            size: tuple[int, int] | None, note: str | None = None) -> None:
        """A downloaded sample (`data` None: a caption without its image); `size` (width, height)."""
        width, height = size if size else (None, None)
        meta = {
            "url": url,
            "caption": caption,
            "key": key,
            "status": "success",
            "error_message": None,
            "width": width,
            "height": height,
            "original_width": width,
            "original_height": height,
            "exif": None,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        }
        if note is not None:
            meta["sample_note"] = note
        if data is not None:
            add_member(self._tar, f"{key}.{ext}", data)
        add_member(self._tar, f"{key}.txt", caption.encode())
        add_member(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self.rows.append({k: meta[k] for k in PARQUET_SCHEMA.names})

    def add_failed(self, key: str, url: str, error: str, caption: str = "lost image") -> None:
        """A URL that did not download: a parquet row only."""
        self.rows.append({"url": url, "caption": caption, "key": key, "status": "failed_to_download",
                          "error_message": error, "width": None, "height": None, "original_width": None,
                          "original_height": None, "exif": None, "sha256": None})

    def close(self) -> None:
        self._tar.close()
        self._handle.close()
        rows = self.rows
        pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA),
                       os.path.join(self.root, f"{self.shard:05d}.parquet"))
        successes = sum(r["status"] == "success" for r in rows)
        stats = {
            "count": len(rows),
            "successes": successes,
            "failed_to_download": len(rows) - successes,
            "failed_to_resize": 0,
            "duration": 0.0,
            "start_time": 0.0,
            "end_time": 0.0,
            "status_dict": {"success": successes, **{
                e: sum(r["error_message"] == e for r in rows)
                for e in sorted({r["error_message"] for r in rows if r["error_message"]})}},
        }
        with open(os.path.join(self.root, f"{self.shard:05d}_stats.json"), "w") as handle:
            json.dump(stats, handle, indent=2, sort_keys=True)


def write(root: str, seed: int = 0) -> dict:
    """Write the img2dataset-style corpus under `root`; returns counts for the corpus README."""
    os.makedirs(root, exist_ok=True)
    photos = [name for name, _, _ in media.PHOTOS]
    counts = {"images": 0, "broken": 0, "failed_downloads": 0, "large": 0, "planted_duplicates": 0}
    written: dict[tuple[int, int], tuple[bytes, str, np.ndarray]] = {}
    for shard in range(SHARDS):
        writer = ShardWriter(root, shard)
        for index in range(SAMPLES_PER_SHARD):
            global_index = shard * SAMPLES_PER_SHARD + index
            rng = np.random.default_rng([seed, 1, global_index])
            key = f"{shard:05d}{index:04d}"
            name = photos[global_index % len(photos)]
            caption = f"a photo of {name.replace('_', ' ')} (crop {global_index})"
            broken = BROKEN.get((shard, index))
            planted = PLANTED.get((shard, index))
            size = None
            if broken:
                data, ext = _broken(broken, rng)
                counts["broken"] += 1
                description = broken
            elif planted:
                data, ext, pixels = _planted(*planted, written, seed)
                description = f"duplicate: {planted[0]} of {planted[1]}"
                size = (pixels.shape[1], pixels.shape[0])
                counts["images"] += 1
                counts["planted_duplicates"] += 1
            else:
                pixels = _crop_and_scale(rng, media.photo(name), global_index)
                data, ext, description = _encode(rng, pixels, global_index)
                written[(shard, index)] = (data, ext, pixels)
                size = (pixels.shape[1], pixels.shape[0])
                counts["images"] += 1
                counts["large"] += int(max(pixels.shape[:2]) >= 2000)
            writer.add(key, data, ext, caption, f"{URL_ROOT}/{key}.jpg", size, description)
        for failed in range(FAILED_DOWNLOADS_PER_SHARD):
            key = f"{shard:05d}{SAMPLES_PER_SHARD + failed:04d}"
            error = "HTTP Error 404: Not Found" if failed % 2 == 0 else "The read operation timed out"
            writer.add_failed(key, f"{URL_ROOT}/{key}.jpg", error)
            counts["failed_downloads"] += 1
        writer.close()
    return counts
