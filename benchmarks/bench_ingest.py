"""Image ingest: decode + resize to 256 on large JPEGs, per core.

Ours: `transforms.decode.load_image` (JPEG DCT-scaled decode, then area resize).
Baseline: plain Pillow, full decode, convert to RGB, the same centre crop, resize to 256.
Both run in this process on one thread, on the same files, in the same run.
Also reported: how close our output is to a full-resolution decode + area resize (PSNR).
"""

from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cv2
import numpy as np
from PIL import Image

from common import emit, rate  # noqa: E402

SIZE = 256
TARGET_SPEEDUP = 3.0


def large_jpegs() -> list[bytes]:
    """JPEGs of 2000 to 4000 px on the long side, from the real bundled photos."""
    from uvd_pipeline.sample import media

    shapes = [(2048, 1536), (3000, 2000), (2400, 2400), (4000, 3000), (2000, 2600), (3264, 2448)]
    names = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "grace_hopper"]
    files = []
    for (w, h), name in zip(shapes, names):
        big = cv2.resize(media.photo(name), (w, h), interpolation=cv2.INTER_CUBIC)
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, "JPEG", quality=90)
        files.append(buf.getvalue())
    return files


def baseline(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(image.crop(box).resize((SIZE, SIZE), Image.BICUBIC))


def reference(data: bytes) -> np.ndarray:
    """Full decode and area resize: the quality our fast path should match."""
    from transforms.decode import load_image

    return load_image(data, SIZE, "center_crop", fast=False).pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    cv2.setNumThreads(1)
    from transforms.decode import load_image

    files = large_jpegs()

    def ours_batch() -> int:
        for data in files:
            load_image(data, SIZE, "center_crop")
        return len(files)

    def baseline_batch() -> int:
        for data in files:
            baseline(data)
        return len(files)

    ours = rate(ours_batch)
    base = rate(baseline_batch)
    quality = min(psnr(load_image(d, SIZE, "center_crop").pixels, reference(d)) for d in files)
    emit("ingest", [{
        "metric": "image ingest, JPEG >=2000px -> 256 (images/s per core)",
        "ours": round(ours, 1),
        "baseline": round(base, 1),
        "baseline_name": "Pillow full decode + crop + resize",
        "speedup": round(ours / base, 2),
        "target": f">= {TARGET_SPEEDUP}x",
        "met": ours / base >= TARGET_SPEEDUP,
        "note": f"min PSNR vs full-decode area resize: {quality:.1f} dB",
    }])


if __name__ == "__main__":
    main()
