"""Image fingerprints for deduplication: an exact pixel digest and a 64-bit perceptual hash.

- `pixel_sha256`: sha256 of the decoded pixels (shape and dtype included). Two files with the
  same pixels (a byte copy, a PNG of a decoded image) agree; any change to a pixel does not.
- `phash64`: the published DCT perceptual hash: the image in grayscale (BT.601 luma, in float),
  area-averaged to 32x32, a 2-D DCT-II, the 8x8 block of the lowest frequencies *after* the DC
  row and column (coefficients [1:9, 1:9]; the DC term is mean brightness and would swamp the
  rest), one bit per coefficient: above the block's median or not. Bits are read row-major, the
  first coefficient the most significant bit. Re-encoding, rescaling, exposure and contrast
  changes move few bits; a mirror image or a different picture moves about half of them.
  The values are not interchangeable with other libraries' (compare distances, not hashes):
  pHash.org's `ph_dct_imagehash` takes the same coefficients but runs a 7x7 mean filter and a
  resize instead of the area average and puts the first coefficient in the *least* significant
  bit; `imagehash.phash` keeps the DC row and column ([0:8, 0:8]) and resizes 8-bit grey with
  Lanczos. On 256 px canvases of real photos and their copies (JPEG at quality 30-95 from
  Pillow, OpenCV and ffmpeg, thumbnails to 128 px, brightness, EXIF turns, grey) both this hash
  and `imagehash.phash` put the copies at 0-4 bits, 2% crops or borders at 2-8, mirror images
  at 30-32.

Matching by Hamming distance at scale uses banding with multi-index probing (`bands`,
`band_probes`): the 64 bits are cut into `m` bands; two hashes within distance `r` must agree,
by pigeonhole, to within `r // m` bits on at least one band. So an item is indexed under its
exact value of every band and looks itself up under every *larger* value within `r // m` bits
of it (of two values within the radius, the smaller looks up the larger: each such pair meets
once, with half the lookups of probing both ways); every pair within `r` meets in at least one
(band, value) bucket, and only pairs in a bucket are compared in full.

numpy and OpenCV; no global state. Everything is deterministic for a given input array.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from itertools import combinations

import cv2
import numpy as np

HASH_BITS = 64
HASH_SIDE = 32  # the grayscale thumbnail the DCT runs on
LOW_FREQ = 8  # 8 x 8 low-frequency coefficients -> 64 bits
LUMA = np.array([0.299, 0.587, 0.114])


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hex sha256 of an image array's shape, dtype and pixel bytes (C order)."""
    array = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@lru_cache(maxsize=32)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that average each output cell's share of the input (area resize)."""
    weights = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        start, stop = i * scale, (i + 1) * scale
        first, last = int(np.floor(start)), int(np.ceil(stop))
        for j in range(first, min(last, n_in)):
            weights[i, j] = min(stop, j + 1) - max(start, j)
        weights[i] /= weights[i].sum()
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: dct(x) = D @ x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= np.sqrt(2.0)
    d.setflags(write=False)
    return d


def _block_means(image: np.ndarray, side: int) -> np.ndarray | None:
    """Exact (side, side[, C]) block means of a uint8 image whose blocks have a power-of-two number
    of pixels (a 256 px canvas: 8 x 8): OpenCV's area resize in float32 sums a block's integers
    exactly (they stay below 2**24) and scales by 1/n, exact for a power of two. A third of the
    time of the float64 matrix products below; the thumbnail differs from theirs by rounding only
    (about 1e-13). None where that does not hold."""
    h, w = image.shape[:2]
    if image.dtype != np.uint8 or h % side or w % side:
        return None
    area = (h // side) * (w // side)
    if area & (area - 1) or area > 1 << 16:  # power of two, and sums below 2**24
        return None
    return cv2.resize(image.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)


def grayscale_thumbnail(pixels: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """(side, side) float64 luma of an (H, W) or (H, W, C) uint8 image, area-averaged."""
    image = np.asarray(pixels)
    if image.ndim in (2, 3) and image.size:
        channels = image if image.ndim == 2 else image[:, :, 0] if image.shape[2] == 1 else image[:, :, :3]
        means = _block_means(channels, side)
        if means is not None:
            return means if means.ndim == 2 else means @ LUMA
    return _matrix_thumbnail(image, side)


def _matrix_thumbnail(image: np.ndarray, side: int) -> np.ndarray:
    """`grayscale_thumbnail` for any size: per-pixel luma, then area weights as two matrix products."""
    if image.ndim == 3:
        if image.shape[2] == 1:
            gray = image[:, :, 0].astype(np.float64)
        else:
            gray = image[:, :, :3].astype(np.float64) @ LUMA
    elif image.ndim == 2:
        gray = image.astype(np.float64)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    h, w = gray.shape
    if h < 1 or w < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return _area_matrix(h, side) @ gray @ _area_matrix(w, side).T


def phash64(pixels: np.ndarray) -> int:
    """The 64-bit DCT perceptual hash of an image, as an int in [0, 2**64)."""
    thumb = grayscale_thumbnail(pixels)
    d = _dct_matrix(HASH_SIDE)
    coefficients = d @ thumb @ d.T
    block = coefficients[1 : 1 + LOW_FREQ, 1 : 1 + LOW_FREQ].ravel()
    middle = np.sort(block)[HASH_BITS // 2 - 1 : HASH_BITS // 2 + 1]
    bits = block > (middle[0] + middle[1]) / 2  # the median, as np.median computes it
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two 64-bit hashes."""
    return bin(a ^ b).count("1")


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_rows(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(len(rows), len(values)) differing bits of every pair of two uint64 hash arrays, as uint8:
    a block of a distance matrix without Python's per-pair cost."""
    xor = rows[:, None] ^ values[None, :]
    if hasattr(np, "bitwise_count"):  # numpy 2
        return np.bitwise_count(xor)
    return _BYTE_BITS[xor.view(np.uint8)].reshape(*xor.shape, 8).sum(axis=-1, dtype=np.uint8)


def band_width(bands: int) -> int:
    if bands < 1 or HASH_BITS % bands:
        divisors = ", ".join(str(d) for d in range(1, HASH_BITS + 1) if HASH_BITS % d == 0)
        raise ValueError(f"bands must divide {HASH_BITS} ({divisors}), got {bands}")
    return HASH_BITS // bands


def bands_of(value: int, bands: int) -> tuple[int, ...]:
    """The `bands` band values of a hash, most significant band first."""
    width = band_width(bands)
    mask = (1 << width) - 1
    return tuple((value >> (HASH_BITS - width * (i + 1))) & mask for i in range(bands))


def probe_radius(threshold: int, bands: int) -> int:
    """Bits a matching band may differ by: two hashes within `threshold` agree to within this
    many bits on at least one of `bands` bands (pigeonhole)."""
    return threshold // bands


def probes_per_band(threshold: int, bands: int) -> int:
    """At most how many bucket values one band of one hash looks up: sum_{i<=radius} C(width, i)
    (its own and every value within the radius; `band_probes` looks up the larger ones only,
    about half)."""
    width, radius = band_width(bands), probe_radius(threshold, bands)
    total, term = 0, 1
    for i in range(radius + 1):
        total += term
        term = term * (width - i) // (i + 1)
    return total


def band_probes(value: int, bands: int, threshold: int) -> list[tuple[int, int, bool]]:
    """(band index, band value, is own value) of every bucket a hash is looked up in.

    Its own value of each band comes first (`True`: the hash is also *stored* there); then every
    value within `probe_radius` bits of it that is larger than its own (`False`: looked up only).
    Two band values within the radius of each other meet where the smaller probes the larger's
    stored bucket; the larger need not probe the smaller's too.
    """
    width = band_width(bands)
    radius = probe_radius(threshold, bands)
    out = []
    for index, own in enumerate(bands_of(value, bands)):
        out.append((index, own, True))
        for flips in range(1, radius + 1):
            for positions in combinations(range(width), flips):
                probe = own
                for p in positions:
                    probe ^= 1 << p
                if probe > own:
                    out.append((index, probe, False))
    return out
