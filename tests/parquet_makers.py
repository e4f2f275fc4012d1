"""What the parquet tests write into the files they make: the `huggingface` schema metadata of an
Image and a caption column as `datasets` stores it, and photos whose bytes parquet cannot shrink."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

HF_METADATA = {b"huggingface": json.dumps({"info": {"features": {
    "image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"}}}}).encode()}


def noise_photo(seed: int, size: int) -> bytes:
    """A JPEG of noise (incompressible, as a photo's bytes are to parquet's codec)."""
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
        out, "JPEG", quality=92)
    return out.getvalue()
