"""The ImageNet source on the ILSVRC CLS-LOC layout."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sources.annotation_files import AnnotationFileError
from sources.imagenet import ImageNetSource
from sources.records import ImageRecord, Reject
from uvd_pipeline.sample import imagenet as sample_imagenet


def test_reads_train_folders_and_val_csv(sample_corpus: Path):
    source = ImageNetSource("inet", str(sample_corpus / "imagenet"))
    items = [i for u in source.units() for i in source.read(u)]
    records = [i for i in items if isinstance(i, ImageRecord)]
    rejects = [i for i in items if isinstance(i, Reject)]
    per_class = Counter((r.split_hint, r.label) for r in records)
    for index, (wnid, name, _) in enumerate(sample_imagenet.CLASSES):
        assert per_class[("train", wnid)] == sample_imagenet.train_count(index)
    assert sum(n for (split, _), n in per_class.items() if split == "val") == 134
    assert [r.reason for r in rejects] == ["missing_label"]
    tabby = next(r for r in records if r.label == "n02123045")
    assert tabby.lineage["class_name"] == "tabby, tabby cat"
    assert len({r.key for r in records}) == len(records)


def test_val_folders_per_class_and_unknown_labels(sample_corpus: Path, tmp_path: Path):
    root = tmp_path / "inet"
    (root / "train").mkdir(parents=True)
    shutil.copytree(sample_corpus / "imagenet" / "train" / "n04266014", root / "val" / "n04266014")
    shutil.copytree(sample_corpus / "imagenet" / "train" / "n03063599", root / "train" / "n99999999")
    shutil.copy(sample_corpus / "imagenet" / "LOC_synset_mapping.txt", root)
    source = ImageNetSource("inet", str(root))
    items = [i for u in source.units() for i in source.read(u)]
    assert {i.reason for i in items if isinstance(i, Reject)} == {"unknown_label"}
    assert {(i.split_hint, i.label) for i in items if isinstance(i, ImageRecord)} == {("val", "n04266014")}


def test_flat_val_without_labels_file_fails_early(sample_corpus: Path, tmp_path: Path):
    root = tmp_path / "inet"
    shutil.copytree(sample_corpus / "imagenet" / "val", root / "val")
    with pytest.raises(FileNotFoundError, match="LOC_val_solution.csv"):
        ImageNetSource("inet", str(root), ("val",)).units()
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        ImageNetSource("inet", str(root)).units()


def _jpeg(path: Path, shade: int, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16, 3), shade, np.uint8)).save(path, fmt)


def _val_solution(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8",
                  header: tuple[str, str] = ("ImageId", "PredictionString")) -> None:
    """LOC_val_solution.csv as Kaggle ships it (`encoding="utf-8-sig"`: as Excel saves it)."""
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows((image_id, f"{wnid} 10 12 40 44 {wnid} 3 4 20 30") for image_id, wnid in rows)


def test_index_files_with_a_byte_order_mark(tmp_path: Path):
    root = tmp_path / "inet"
    ids = ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    for i, image_id in enumerate(ids):
        _jpeg(root / "val" / f"{image_id}.JPEG", 40 * i)
    _val_solution(root / "LOC_val_solution.csv", [(ids[0], "n01440764"), (ids[1], "n01443537")], "utf-8-sig")
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n",
                                                 encoding="utf-8-sig")
    source = ImageNetSource("inet", str(root), ("val",))
    items = [i for u in source.units() for i in source.read(u)]
    assert [(i.key, i.label, i.lineage["class_name"]) for i in items] == [
        ("inet-val-n01440764-ILSVRC2012_val_00000001", "n01440764", "tench, Tinca tinca"),
        ("inet-val-n01443537-ILSVRC2012_val_00000002", "n01443537", "goldfish")]


def test_val_solution_header_and_rows_checked_up_front(tmp_path: Path):
    root = tmp_path / "inet"
    _jpeg(root / "val" / "ILSVRC2012_val_00000001.JPEG", 1)
    csv_path = root / "LOC_val_solution.csv"
    _val_solution(csv_path, [("ILSVRC2012_val_00000001", "n01440764")], header=("ImageID", "Prediction"))
    with pytest.raises(AnnotationFileError, match=r"LOC_val_solution\.csv: header is 'ImageID,Prediction', "
                                                  r"expected ImageId,PredictionString"):
        ImageNetSource("inet", str(root), ("val",)).units()
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,\n")
    with pytest.raises(AnnotationFileError, match="none of its 1 rows has an ImageId and a PredictionString"):
        ImageNetSource("inet", str(root), ("val",)).units()
    _val_solution(csv_path, [("ILSVRC2012_val_00000001", "n01440764")], header=("ImageID", "Prediction"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
                                      "sources": [{"name": "inet", "type": "imagenet", "path": str(root),
                                                   "splits": ["val"]}]}))
    check = subprocess.run([sys.executable, "-m", "uvd_pipeline", "check", str(config)], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 2 and f"{csv_path}: header is 'ImageID,Prediction'" in check.stderr, check.stderr
