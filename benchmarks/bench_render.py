"""Annotation renderers: rendered (image, target) pairs per second on one core, per task.

Records come from the embedded sample corpus through the real sources (COCO, KITTI, Taskonomy
tuples, img2dataset images for the synthetic tasks); each task's renderer runs on the same
records several times. The baseline column is the bare decode + resize of the same images, so
the cost of making and encoding the target is the difference (speedup < 1 by nature).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cv2

from common import emit  # noqa: E402

SAMPLE = os.environ.get("UVD_SAMPLE_DIR", "data/sample")
SIZE = 256
MIN_SECONDS = 1.0


def _records() -> dict[str, list]:
    from sources.coco import CocoSource
    from sources.derived import DerivedPairsSource
    from sources.laion import LaionSource
    from sources.records import PairRecord
    from sources.stereo import StereoSource
    from transforms.degrade import SYNTHETIC_TASKS

    out: dict[str, list] = {}

    def add(items, limit=24):
        for item in items:
            if isinstance(item, PairRecord) and len(out.setdefault(_name(item), [])) < limit:
                out[_name(item)].append(item)

    coco = CocoSource("coco", f"{SAMPLE}/coco", ("annotations/instances_val.json",
                                                  "annotations/person_keypoints_val.json"), "images/val")
    add(i for u in coco.units() for i in coco.read(u))
    kitti = StereoSource("kitti", f"{SAMPLE}/kitti", labeler=(("name", "sgbm"),))
    add(i for u in kitti.units() for i in kitti.read(u))
    laion = LaionSource("web", f"{SAMPLE}/laion")
    synthetic = DerivedPairsSource("syn", laion, SYNTHETIC_TASKS, len(SYNTHETIC_TASKS))
    add((i for u in synthetic.units()[:1] for i in synthetic.read(u)), 12)
    edges = DerivedPairsSource("edges", laion, ("edges",), 1, labeler=(("name", "canny"),))
    add((i for u in edges.units()[:1] for i in edges.read(u)), 12)
    return out


def _name(record) -> str:
    annotation = record.annotation
    if "labeler" in annotation:
        return f"{record.task} ({annotation['labeler']['name']} labeler)"
    return record.task


def _rate(fn, records) -> float:
    fn(records[0])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < MIN_SECONDS:
        for record in records:
            fn(record)
        done += len(records)
    return done / (time.perf_counter() - started)


def main() -> None:
    cv2.setNumThreads(1)
    from sources.records import Reject
    from uvd_pipeline.render import RenderSettings, encode_png
    from uvd_pipeline.render_annotated import _load, derived_from_canvas, render_pair

    settings = RenderSettings(SIZE, "center_crop", 0, 10**9, 1, 0, 0.0)
    rows = []
    for task, records in sorted(_records().items()):
        records = [r for r in records if not isinstance(render_pair(r, settings), Reject)]
        if not records:
            continue
        ours = _rate(lambda r: render_pair(r, settings), records)
        image_only = _rate(lambda r: encode_png(_load(r.image_uri, r.image_data, settings,
                                                      derived_from_canvas(r.annotation)).pixels, 1), records)
        rows.append({"metric": f"render pairs/s per core: {task}", "ours": round(ours, 1),
                     "baseline": round(image_only, 1), "baseline_name": "the input image alone (decode, resize, PNG)",
                     "speedup": round(ours / image_only, 2), "target": "report", "met": "",
                     "note": f"{len(records)} records"})
    emit("render", rows)


if __name__ == "__main__":
    main()
