"""ImageNet in the ILSVRC CLS-LOC layout: 8 classes, train folders per wnid, a flat val folder.

Each class is built from one real subject (a bundled photo, or frames of a bundled clip) by
random crops, flips, exposure changes and rescales, the way photos of one class differ. Crops
cover 15-60% of the subject, so that two photos of a class are rarely near duplicates of each
other (a handful are, as in real data). Class sizes vary so that the sentence remainder policy is
exercised; one broken JPEG and one val image missing from the labels CSV exercise the reject
paths. Planted duplicates exercise deduplication: a val image copied byte for byte into its
class's train folder (the train/val leak a dedup step must catch) and a train image copied
within its folder.
"""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
from PIL import Image

from uvd_pipeline.sample import media

# (wnid, synset name, where the pictures come from: ("photo", names) or ("clip", name))
CLASSES: tuple[tuple[str, str, tuple[str, tuple[str, ...]]], ...] = (
    ("n02123045", "tabby, tabby cat", ("photo", ("chelsea",))),
    ("n03063599", "coffee mug", ("photo", ("coffee",))),
    ("n04266014", "space shuttle", ("photo", ("rocket",))),
    ("n03785016", "moped", ("photo", ("motorcycle_left", "motorcycle_right"))),
    ("n04350905", "suit, suit of clothes", ("photo", ("grace_hopper", "astronaut"))),
    ("n04485082", "tripod", ("photo", ("camera",))),
    ("n03792782", "mountain bike, all-terrain bike", ("clip", ("bikes",))),
    ("n02325366", "wood rabbit, cottontail, cottontail rabbit", ("clip", ("bigbuckbunny",))),
)
EXTRA_SYNSETS = (("n01440764", "tench, Tinca tinca"),)  # in the mapping, no images: as in real subsets
TRUNCATED = ("n03063599", 3)  # (wnid, train index) written cut short
UNLABELLED_VAL = 20  # this val image (of a class with 17) is left out of LOC_val_solution.csv
# Planted duplicates, written in place of a train image (class sizes stay as above):
# (class index, train index) -> ("val", val index of the same class) or ("train", train index)
PLANTED_COPIES = {(4, 9): ("val", 2), (5, 11): ("train", 3)}


def train_count(class_index: int) -> int:
    return 32 + (class_index * 3) % 11  # 32..42: two sentences each and remainders of 0..10


def val_count(class_index: int) -> int:
    return 16 + class_index % 3


def _subjects(kind: str, names: tuple[str, ...]) -> list[np.ndarray]:
    if kind == "photo":
        return [media.photo(n) for n in names]
    return list(media.clip_frames(names[0], 26, every=5))


def _augment(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    h, w = base.shape[:2]
    area = rng.uniform(0.15, 0.6) * h * w
    aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    out = base[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(0.8, 1.2)
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    short = int(rng.integers(240, 400))
    scale = short / min(ch, cw)
    size = (max(16, round(cw * scale)), max(16, round(ch * scale)))
    return cv2.resize(np.ascontiguousarray(out), size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _jpeg(rng: np.random.Generator, rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(rng.integers(85, 96)))
    return buf.getvalue()


def val_jpeg(seed: int, class_index: int, i: int, subjects: list[np.ndarray] | None = None) -> tuple[np.ndarray, bytes]:
    """The pixels and file bytes of the i-th val image of a class."""
    if subjects is None:
        _, _, (kind, names) = CLASSES[class_index]
        subjects = _subjects(kind, names)
    rng = np.random.default_rng([seed, 3, class_index, i])
    image = _augment(rng, subjects[(i * 5 + 3) % len(subjects)])
    return image, _jpeg(rng, image)


def train_jpeg(seed: int, class_index: int, i: int, subjects: list[np.ndarray]) -> bytes:
    """The file bytes of the i-th train image of a class (planted copies included)."""
    planted = PLANTED_COPIES.get((class_index, i))
    if planted is not None:
        split, j = planted
        if split == "val":
            return val_jpeg(seed, class_index, j, subjects)[1]
        return train_jpeg(seed, class_index, j, subjects)
    rng = np.random.default_rng([seed, 2, class_index, i])
    return _jpeg(rng, _augment(rng, subjects[i % len(subjects)]))


def write(root: str, seed: int = 0) -> dict:
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    with open(os.path.join(root, "LOC_synset_mapping.txt"), "w") as handle:
        for wnid, name in sorted([(c[0], c[1]) for c in CLASSES] + list(EXTRA_SYNSETS)):
            handle.write(f"{wnid} {name}\n")
    val_rows: list[str] = []
    val_number = 0
    counts = {"classes": len(CLASSES), "train": 0, "val": 0, "broken": 0, "planted_duplicates": 0}
    for class_index, (wnid, _, (kind, names)) in enumerate(CLASSES):
        subjects = _subjects(kind, names)
        class_dir = os.path.join(root, "train", wnid)
        os.makedirs(class_dir, exist_ok=True)
        for i in range(train_count(class_index)):
            data = train_jpeg(seed, class_index, i, subjects)
            counts["planted_duplicates"] += int((class_index, i) in PLANTED_COPIES)
            if (wnid, i) == TRUNCATED:
                data = data[: len(data) // 2]
                counts["broken"] += 1
            with open(os.path.join(class_dir, f"{wnid}_{1000 + i * 7}.JPEG"), "wb") as handle:
                handle.write(data)
            counts["train"] += 1
        for i in range(val_count(class_index)):
            image, data = val_jpeg(seed, class_index, i, subjects)
            val_number += 1
            image_id = f"ILSVRC2012_val_{val_number:08d}"
            with open(os.path.join(root, "val", image_id + ".JPEG"), "wb") as handle:
                handle.write(data)
            counts["val"] += 1
            if val_number == UNLABELLED_VAL:
                counts["broken"] += 1
                continue
            h, w = image.shape[:2]
            val_rows.append(f"{image_id},{wnid} 0 0 {w - 1} {h - 1} ")
    with open(os.path.join(root, "LOC_val_solution.csv"), "w") as handle:
        handle.write("ImageId,PredictionString\n")
        handle.write("\n".join(sorted(val_rows)) + "\n")
    return counts
