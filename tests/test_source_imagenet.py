"""The ImageNet source on the ILSVRC CLS-LOC layout."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

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
