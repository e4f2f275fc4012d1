"""Synthetic degradations: (input, target) pairs made from any clean image.

Each takes the clean RGB image and a numpy Generator (seeded from the image key by the caller,
so a rebuild gives the same pairs) and returns the degraded input; the clean image is the
target, except for `stylize`, whose stylized image is the target of the clean input.
"""

from __future__ import annotations

import cv2
import numpy as np

LUMA = np.array([0.2989, 0.5870, 0.1140])
INPAINT_PATCH = 32


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """The colorization input: Y = 0.2989 R + 0.5870 G + 0.1140 B copied to three channels."""
    y = np.clip(np.round(rgb.astype(np.float64) @ LUMA), 0, 255).astype(np.uint8)
    return np.repeat(y[:, :, None], 3, axis=2)


def inpainting_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """True where pixels are removed: the LVM release's recipe.

    With p = 0.3 one square of side U[0.1, 0.5) * min(H, W); otherwise a grid of 32-px patches,
    each removed with probability 1 - r, r ~ U(0, 1).
    """
    mask = np.zeros((h, w), bool)
    if rng.random() < 0.3:
        side = int(rng.uniform(0.1, 0.5) * min(h, w))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        mask[y0 : y0 + side, x0 : x0 + side] = True
        return mask
    keep = rng.uniform(0, 1)
    for y in range(0, h, INPAINT_PATCH):
        for x in range(0, w, INPAINT_PATCH):
            if rng.random() < 1 - keep:
                mask[y : y + INPAINT_PATCH, x : x + INPAINT_PATCH] = True
    return mask


def inpaint_input(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = rgb.copy()
    out[inpainting_mask(*rgb.shape[:2], rng)] = 0
    return out


def gaussian_noise(rgb: np.ndarray, rng: np.random.Generator, sigma_range=(10.0, 50.0)) -> np.ndarray:
    sigma = rng.uniform(*sigma_range)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def poisson_noise(rgb: np.ndarray, rng: np.random.Generator, peak_range=(5.0, 60.0)) -> np.ndarray:
    """Shot noise: photon counts at a random peak level (lower peak = noisier)."""
    peak = rng.uniform(*peak_range)
    return np.clip(rng.poisson(rgb.astype(np.float64) / 255 * peak) / peak * 255, 0, 255).astype(np.uint8)


def denoise_input(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return gaussian_noise(rgb, rng) if rng.random() < 0.5 else poisson_noise(rgb, rng)


def low_light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark exposure: a gain, a gamma curve and read noise, as a night shot looks."""
    gain = rng.uniform(0.1, 0.4)
    gamma = rng.uniform(1.5, 3.0)
    dark = (rgb.astype(np.float64) / 255) ** gamma * gain
    noisy = dark + rng.normal(0, rng.uniform(0.005, 0.02), rgb.shape)
    return np.clip(noisy * 255, 0, 255).astype(np.uint8)


def rain(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic rain: motion-blurred streaks of one slant, screen-blended over the image."""
    h, w = rgb.shape[:2]
    density = rng.uniform(0.002, 0.01)
    drops = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.5, 1.0)
    length = int(rng.integers(max(5, h // 20), max(8, h // 6)))
    angle = rng.uniform(-30, 30)
    kernel = np.zeros((length, length), np.float32)
    kernel[:, length // 2] = 1.0
    rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    kernel /= max(kernel.sum(), 1e-6)
    streaks = cv2.filter2D(drops, -1, kernel) * length * 0.6
    streaks = np.clip(cv2.GaussianBlur(streaks, (3, 3), 0), 0, 1)[:, :, None]
    base = rgb.astype(np.float32) / 255
    out = 1 - (1 - base) * (1 - streaks * 0.8)
    return np.clip(out * 255, 0, 255).astype(np.uint8)


STYLES = ("stylization", "pencil_color", "pencil_gray", "detail", "cartoon")


def stylize(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A classical non-photorealistic filter (OpenCV's NPR filters and a cartoon pass)."""
    style = STYLES[int(rng.integers(0, len(STYLES)))]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if style == "stylization":
        out = cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)
    elif style in ("pencil_color", "pencil_gray"):
        gray, colour = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
        out = colour if style == "pencil_color" else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    elif style == "detail":
        out = cv2.detailEnhance(bgr, sigma_s=10, sigma_r=0.15)
    else:
        smooth = cv2.bilateralFilter(bgr, 9, 75, 75)
        quantised = (smooth // 48) * 48 + 24
        edges = cv2.adaptiveThreshold(cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 5), 255,
                                      cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 2)
        out = cv2.bitwise_and(quantised.astype(np.uint8), quantised.astype(np.uint8), mask=edges)
    return np.ascontiguousarray(out[:, :, ::-1])


# task -> (make the input from the clean image, or None when the clean image is the input)
SYNTHETIC_TASKS = ("colorization", "inpainting", "denoising", "low_light", "deraining", "style")


def synthetic_pair(task: str, rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) for a synthetic task."""
    if task == "colorization":
        return grayscale(rgb), rgb
    if task == "inpainting":
        return inpaint_input(rgb, rng), rgb
    if task == "denoising":
        return denoise_input(rgb, rng), rgb
    if task == "low_light":
        return low_light(rgb, rng), rgb
    if task == "deraining":
        return rain(rgb, rng), rgb
    if task == "style":
        return rgb, stylize(rgb, rng)
    raise ValueError(f"unknown synthetic task {task!r}; allowed: {', '.join(SYNTHETIC_TASKS)}")
