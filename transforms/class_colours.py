"""Well-separated colours for the class ids datasets use most (1..`SEPARATED_IDS`).

Seeded random colours put near twins among a dataset's classes (ADE20K's 150: 32 pairs closer than
20 in RGB, 57 and 149 7.9 apart; COCO's 90: 11 pairs), which the VQGAN's tokens then merge. Here
each next id takes the colour farthest (in CIELAB, a perceptual space) from black and every colour
before it, so any first n ids are spread as far as the greedy pick allows: ids 1..150 at least
17.8 Delta E (24 in RGB) apart, 1..255 at least 14.1. Lab values are rounded to integer hundredths
before the pick, whose arithmetic is then exact: the same colours on every machine.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterable

import numpy as np

SEPARATED_IDS = 255  # ids 1..255 take picked colours; beyond, the seeded palette's
GRID_LEVELS = 32  # candidate levels per channel (0, 8, 16, ..., 255): 32,768 candidates
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) sRGB 0..255 -> CIELAB (D65), as skimage's rgb2lab gives it."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def separated_colours(count: int = SEPARATED_IDS) -> np.ndarray:
    """(count, 3) uint8 colours picked greedily from an RGB grid, each the farthest in Lab from
    black (the background) and all picked before it; ties go to the first candidate."""
    levels = np.round(np.arange(GRID_LEVELS) * 255 / (GRID_LEVELS - 1)).astype(np.int64)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = np.round(srgb_to_lab(grid) * 100).astype(np.int64)
    nearest = (lab ** 2).sum(axis=1)  # squared distance to black's Lab (0, 0, 0)
    picked = np.empty(count, np.int64)
    for i in range(count):
        picked[i] = int(np.argmax(nearest))
        np.minimum(nearest, ((lab - lab[picked[i]]) ** 2).sum(axis=1), out=nearest)
    return grid[picked].astype(np.uint8)


def spread_ids(names: Iterable[str], first: int, count: int, fallback: Callable[[str], int]) -> dict[str, int]:
    """Ids for classes known by name alone (a VOC-format set's own classes), for the names drawn
    together (one image's): each its hashed id among `first..first + count - 1` (the picked
    colours: apart from each other and from the ids before `first`), the same in every image and
    build; two names of one image hashed to one id are told apart, the later by name taking the
    next free id, so the same names draw the same colours whatever order they come in. Hashed
    straight onto the seeded palette, two names drew near twins (8.3 Delta E) or one colour.
    Past `count` names at once, the rest take `fallback(name)`."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for name in sorted(set(names)):
        if len(taken) >= count:
            ids[name] = fallback(name)
            continue
        slot = zlib.crc32(name.encode("utf-8")) % count
        while first + slot in taken:
            slot = (slot + 1) % count
        ids[name] = first + slot
        taken.add(first + slot)
    return ids
