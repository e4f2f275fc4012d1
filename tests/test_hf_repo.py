"""A Hugging Face Hub repo read as `datasets` reads it: the costs and the splits that the layout tests
in test_source_laion.py leave out (how often the repo is listed, image folders under a card's
`data_dir`, split names `datasets` refuses)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sources import fsio
from sources.laion import LaionSource
from uvd_pipeline.render import RenderSettings
from uvd_pipeline.unit_render import UnitRenderer


def _parquet(path: Path, text: str = "a") -> None:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": None}], image), "text": [text]}), path)


def _renderer(root: Path, out: Path) -> UnitRenderer:
    """One run's renderer of the repo (a rerun: another one into the same output)."""
    settings = RenderSettings(32, "center_crop", 0, 1 << 24, 1, 0, 0.0)
    return UnitRenderer(LaionSource("hf", str(root), "huggingface"), settings, web_images=True, fingerprint=False,
                        output=str(out), config_hash="h", root=str(root))


def _run(root: Path, out: Path, monkeypatch) -> tuple[int, dict[str, bool]]:
    """Recursive listings of the repo in one run (planning, reads, rerun checks), and per unit
    file whether it was rendered (not taken from the store)."""
    listed, calls = fsio.list_files, _recursive_listings(monkeypatch)
    renderer = _renderer(root, out)
    rendered = {}
    for unit in renderer.source.units():
        with fsio.run_memo(renderer.memo):  # as `render` asks it
            before = renderer.store().load(unit) is None
        renderer.render(unit)
        rendered.update({Path(u).name: before for u in unit.uris})
    monkeypatch.setattr(fsio, "list_files", listed)
    return len(calls), rendered


def _recursive_listings(monkeypatch) -> list[str]:
    """The folders `fsio.list_files` lists recursively from now on."""
    listed, calls = fsio.list_files, []
    monkeypatch.setattr(fsio, "list_files",
                        lambda uri, *a, **k: (calls.append(uri) if k.get("recursive") else None) or listed(uri, *a, **k))
    return calls


def test_a_many_shard_repo_is_listed_once_per_run_not_once_per_unit(tmp_path: Path, monkeypatch):
    """Each unit's split (`hf_card.file_split`) asked the default pattern set, which listed the whole
    repo: once per unit at the build and again per unit at every rerun's check (`fsio.rederive`),
    quadratic in the shards (1500 shards: 20 s against 4). A run judges it once (`fsio.run_memo`,
    as `UnitRenderer.render` holds it), reads and checks alike."""
    root = tmp_path / "repo"
    for i in range(12):
        _parquet(root / "data" / f"train-{i:05d}-of-00012.parquet")
    source = LaionSource("hf", str(root), "huggingface")
    units = source.units()
    calls, keys = _recursive_listings(monkeypatch), []
    with fsio.run_memo({}):
        for unit in units:
            with fsio.recording_inputs() as record:
                assert [type(i).__name__ for i in source.read(unit)] == ["ImageRecord"]
            keys += [k for k in record.derived if k[0] == "sources.hf_card.file_split"]
    assert len(keys) == 12 and calls == [str(root)]
    with fsio.run_memo({}):  # a rerun's check
        assert [fsio.rederive(k) for k in keys] == ["train"] * 12
    assert calls == [str(root)] * 2


def test_a_file_that_flips_the_pattern_set_renders_the_units_it_moves(tmp_path: Path, monkeypatch):
    """A run judges the pattern set once, yet the next run (a memo of its own) sees a file that flips
    it: test-2.parquet leaves the name set (train.parquet's unit is taken from the store); a shard
    under data/ makes `datasets` load by the sharded set, train.parquet and test.parquet of no split."""
    root, out = tmp_path / "repo", tmp_path / "out"
    for name in ["train.parquet", "test.parquet"]:
        _parquet(root / name)
    _run(root, out, monkeypatch)
    _parquet(root / "test-2.parquet")
    listings, rendered = _run(root, out, monkeypatch)
    assert not rendered["train.parquet"] and not rendered["test.parquet"]
    assert listings <= 3  # planning's, and one for every unit's read and check
    _parquet(root / "data" / "train-00000-of-00001.parquet")
    _, rendered = _run(root, out, monkeypatch)
    assert rendered["train-00000-of-00001.parquet"] and rendered["train.parquet"] and rendered["test.parquet"]


def test_an_image_folder_cards_data_dir_loads_what_its_pattern_set_names(tmp_path: Path):
    """A card config with `data_dir` alone: `datasets` loads its images by the first default pattern
    set naming a file under it (here the split folders), `imgs/other/c.png` by none; it was trained
    on, its own path read as `train`. An image outside `data_dir` is no data file either."""
    from PIL import Image

    for name in ["imgs/train/a.png", "imgs/test/b.png", "imgs/other/c.png", "loose/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_dir: imgs\n---\n")
    source = LaionSource("f", str(tmp_path), "folder")
    with fsio.run_memo({}):
        items = [i for unit in source.units() for i in source.read(unit)]
    found = {i.key: i.lineage["hf_split"] if hasattr(i, "lineage") else i.reason for i in items}
    assert found == {"f-imgs-train-a--png": "train", "f-imgs-test-b--png": "test",
                     "f-imgs-other-c--png": "other_hf_config", "f-loose-d--png": "other_hf_config",
                     "f-README--md": "unexpected_file"}


def test_a_file_over_its_cap_is_refused_before_any_byte_is_read(monkeypatch):
    """`fsio.read_bytes` judges the size the opened file states (a remote card of 3 MiB against the
    1 MiB budget of a card): nothing is read. Read, then checked, it fetched the cap and one byte more."""
    import fsspec
    import pytest
    from fsspec.implementations.memory import MemoryFile

    memory = fsspec.filesystem("memory")
    memory.pipe("/test_hf_repo/big/README.md", b"x" * (3 << 20))
    read, counted = MemoryFile.read, []
    monkeypatch.setattr(MemoryFile, "read", lambda self, *a: counted.append(len(out := read(self, *a))) or out)
    try:
        with pytest.raises(fsio.FileTooLarge, match="larger than 1048576 bytes"):
            fsio.read_bytes("memory:///test_hf_repo/big/README.md", 1 << 20)
        assert sum(counted) == 0
        assert fsio.read_bytes("memory:///test_hf_repo/big/README.md", 3 << 20) == b"x" * (3 << 20)
    finally:
        memory.rm("/test_hf_repo", recursive=True)


def test_a_repo_whose_parquet_all_lie_in_dunder_folders_says_so(tmp_path: Path):
    """Without a card, every parquet file in a `__x/` folder (never loaded by default, as in
    `datasets`): the build stopped blaming "config None of its README.md", a card that is not there."""
    import pytest

    _parquet(tmp_path / "__export__" / "train.parquet")
    with pytest.raises(FileNotFoundError, match=r"folder named __x .*'__export__/train.parquet'.*set path") as error:
        LaionSource("hf", str(tmp_path), "huggingface").units()
    assert "README.md" not in str(error.value) and "config None" not in str(error.value)


def test_a_sharded_name_whose_split_datasets_refuses_stops_the_build(tmp_path: Path):
    """`data/my-train-00000-of-00001.parquet`: `datasets` reads the split `my-train` and refuses the
    repo ("Split name should match '^\\w+(\\.\\w+)*$'"); the build trained on it as `train` (the
    sharded pattern took `train` alone, the file's name then). It stops, naming the file and split."""
    import pytest

    from sources import hf_parquet

    _parquet(tmp_path / "data" / "my-train-00000-of-00001.parquet")
    _parquet(tmp_path / "other.parquet")
    assert hf_parquet.hf_split("data/my-train-00000-of-00001.parquet") == "my-train"
    with pytest.raises(ValueError, match=r"data/my-train-00000-of-00001.parquet names split 'my-train', no split name"):
        LaionSource("hf", str(tmp_path), "huggingface").units()


# The `huggingface` schema metadata `datasets` 5.2 writes (`Dataset.to_parquet`) for a multi-label
# column (`List(ClassLabel(...))`), a detection dataset's `objects` (a dict of lists, cppe-5's
# layout) and a plain `ClassLabel`; and `datasets` 2.x's spelling of the same lists (`Sequence`,
# a `Sequence` of a dict stored as a dict of lists).
_LABELS_5 = {"image": {"_type": "Image"},
             "labels": {"feature": {"names": ["cat", "dog", "car"], "_type": "ClassLabel"}, "_type": "List"},
             "objects": {"category": {"feature": {"names": ["x", "y"], "_type": "ClassLabel"}, "_type": "List"},
                         "bbox": {"feature": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "List"},
                                  "_type": "List"}},
             "fine": {"names": ["a", "b"], "_type": "ClassLabel"}}
_LABELS_2 = {"image": {"_type": "Image"},
             "labels": {"feature": {"num_classes": 3, "names": ["cat", "dog", "car"], "_type": "ClassLabel"},
                        "length": -1, "_type": "Sequence"},
             "objects": {"feature": {"category": {"num_classes": 2, "names": ["x", "y"], "_type": "ClassLabel"},
                                     "bbox": {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4,
                                              "_type": "Sequence"}},
                         "length": -1, "_type": "Sequence"},
             "fine": {"num_classes": 2, "names": ["a", "b"], "_type": "ClassLabel"}}


@pytest.mark.parametrize("declared", [_LABELS_5, _LABELS_2], ids=["datasets-5", "datasets-2"])
def test_class_labels_inside_lists_and_dicts_are_named(tmp_path: Path, declared: dict):
    """A multi-label column (`List(ClassLabel)`) and the `ClassLabel`s of a detection dataset's
    `objects` rode in the lineage as bare integers, named only for a top-level `ClassLabel`: each
    is named now, in the value's own shape (an integer no name has: null; a top-level one: left out)."""
    import json

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    objects = pa.struct([("category", pa.list_(pa.int64())), ("bbox", pa.list_(pa.list_(pa.float32())))])
    table = pa.table({
        "image": pa.array([{"bytes": b"x", "path": None}] * 3, image),
        "labels": pa.array([[0, 2], [], [1, 7]], pa.list_(pa.int64())),
        "objects": pa.array([{"category": [0, 1], "bbox": [[0, 0, 1, 1], [1, 1, 2, 2]]},
                             {"category": [], "bbox": []}, {"category": [1], "bbox": [[0, 0, 2, 2]]}], objects),
        "fine": pa.array([0, 1, -1], pa.int64())})
    metadata = {b"huggingface": json.dumps({"info": {"features": declared}}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "train.parquet")
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u)]
    assert [r.lineage.get("class_names") for r in records] == [
        {"labels": ["cat", "car"], "objects": {"category": ["x", "y"]}, "fine": "a"},
        {"labels": [], "objects": {"category": []}, "fine": "b"},
        {"labels": ["dog", None], "objects": {"category": ["y"]}}]
    assert records[0].lineage["huggingface"]["labels"] == [0, 2]  # the integers stay as they were


_CARD_FEATURES = """---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: labels
    list:
      class_label:
        names:
          '0': cat
          '1': dog
          '2': car
  - name: objects
    struct:
    - name: category
      list:
        class_label:
          names:
            '0': x
            '1': y
    - name: bbox
      list:
        list: float32
  - name: fine
    dtype:
      class_label:
        names:
          '0': a
          '1': b
  splits:
  - name: train
    num_examples: 3
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# a card as push_to_hub writes it (datasets 5.2 `Features._to_yaml_list`)
"""


def test_class_labels_come_from_the_card_when_the_parquet_declares_no_features(tmp_path: Path):
    """Parquet files without `datasets`' schema metadata (written by pandas or pyarrow, uploaded
    beside a card): `load_dataset` (5.2) takes the features from the card's `dataset_info` and names
    the labels (`ClassLabel(names=['cat', 'dog', 'car'])`); the lineage had bare integers."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    objects = pa.struct([("category", pa.list_(pa.int64())), ("bbox", pa.list_(pa.list_(pa.float32())))])
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({
        "image": pa.array([{"bytes": b"x", "path": None}] * 2, image),
        "labels": pa.array([[0, 2], [1]], pa.list_(pa.int64())),
        "objects": pa.array([{"category": [1], "bbox": [[0, 0, 1, 1]]}, {"category": [], "bbox": []}], objects),
        "fine": pa.array([1, 0], pa.int64())}), tmp_path / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(_CARD_FEATURES)
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert [r.lineage.get("class_names") for r in records] == [
        {"labels": ["cat", "car"], "objects": {"category": ["y"]}, "fine": "b"},
        {"labels": ["dog"], "objects": {"category": []}, "fine": "a"}]


def _unlabelled_parquet(root: Path) -> None:
    """One row, written by pyarrow (no `datasets` metadata): its labels are the card's to name."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": None}], image), "text": ["x"], "label": [0]}),
                   root / "data" / "train-00000-of-00001.parquet")


def _aliased_card(depth: int) -> str:
    """A card whose `dataset_info` features fan out through YAML aliases: 10 references to the
    alias below at each of `depth` levels (10**depth leaves from ~200 bytes a level)."""
    lines = ["---", "x0: &x0 [{name: c, dtype: {class_label: {names: [a, b]}}}]"]
    for i in range(1, depth + 1):
        lines.append(f"x{i}: &x{i} [" + ", ".join(f"{{name: c{j}, list: *x{i - 1}}}" for j in range(10)) + "]")
    return "\n".join([*lines, "dataset_info:", f"  features: *x{depth}", "---", ""])


_SELF_ALIAS_CARD = "---\ndataset_info:\n  features: &f\n  - name: label\n    list: *f\n---\n"


@pytest.mark.parametrize("card", [_SELF_ALIAS_CARD, _aliased_card(5)], ids=["self-alias", "fan-out-10^5"])
def test_a_card_whose_features_alias_themselves_or_fan_out_names_no_labels(tmp_path: Path, card: str):
    """YAML aliases in a card's `dataset_info`: one naming itself (66 bytes) raised RecursionError
    and stopped the build; one fanning out (2 KB, 10**8 leaves) walked for minutes and recorded
    tens of MB as the unit's derived input (10**5 here: 9.3 MB recorded). Now the walk ends a cycle
    and stops past a node budget: no labels, the row read, the recorded value small."""
    import json

    from sources import hf_card

    _unlabelled_parquet(tmp_path)
    (tmp_path / "README.md").write_text(card)
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert len(records) == 1 and "class_names" not in records[0].lineage
    assert len(json.dumps(hf_card.card_class_labels(str(tmp_path), None))) < 1000


def test_a_card_sharing_one_alias_a_few_times_still_names_its_labels(tmp_path: Path):
    """Aliases within the budget (10**2 leaves) are read as `datasets` reads them: labels named."""
    _unlabelled_parquet(tmp_path)
    (tmp_path / "README.md").write_text(_aliased_card(2).replace("features: *x2", "features: [{name: label, "
                                                                  "dtype: {class_label: {names: [cat, dog]}}}, "
                                                                  "{name: more, list: *x2}]"))
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert records[0].lineage["class_names"] == {"label": "cat"}


def test_a_card_of_many_honest_configs_names_the_built_configs_labels(tmp_path: Path):
    """One node budget was shared by all of a card's `dataset_info` entries: a 500 KB card of 1,100
    configs (each a ClassLabel, a sequence of ClassLabels and a few more features, as the Hub's
    NER and QA cards have them) passed it, and no config was named. Each entry is walked alone now,
    within its own budget: the built config's labels are named, the last config's as the first's."""
    from sources import hf_card, hf_parquet

    lines = ["---", "dataset_info:"]
    for c in range(1_100):
        lines += [f"- config_name: c{c}", "  features:", "  - name: image", "    dtype: image",
                  "  - name: tokens", "    sequence: string", "  - name: ner_tags", "    sequence:",
                  "      class_label:", "        names:", "          '0': O", "          '1': B-PER",
                  "  - name: label", "    dtype:", "      class_label:", "        names:", "          '0': cat",
                  f"          '1': dog{c}", "  - name: answers", "    sequence:", "    - name: text",
                  "      dtype: string", "    - name: start", "      dtype: int32"]
    card = tmp_path / "README.md"
    card.write_text("\n".join([*lines, "---", "card"]))
    assert card.stat().st_size > 400_000
    for config in ("c0", "c1099"):
        labels = hf_card.read_card_labels(str(card), config)
        assert sorted(labels) == ["label", "ner_tags"], labels
        assert hf_parquet.label_names(labels["label"], 1) == f"dog{config[1:]}"
    assert hf_card.read_card_labels(str(card), "c1100") is None  # no entry: the parquet's own labels


def test_a_parquet_whose_features_nest_past_the_stack_is_read_without_labels(tmp_path: Path):
    """`huggingface` metadata nesting `List` 600 deep (json reads it): `holds_class_label` recursed
    past Python's limit and the RecursionError stopped the build. Past a depth bound: no label."""
    import json

    deep: dict = {"_type": "ClassLabel", "names": ["a"]}
    for _ in range(600):
        deep = {"_type": "List", "feature": deep}
    features = {"image": {"_type": "Image"}, "text": {"_type": "Value", "dtype": "string"}, "deep": deep,
                "label": {"_type": "ClassLabel", "names": ["cat", "dog"]}}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array([{"bytes": b"x", "path": None}], image), "text": ["x"], "deep": [0],
                      "label": [1]})
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}),
                   tmp_path / "train.parquet")
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert [r.lineage.get("class_names") for r in records] == [{"label": "dog"}]


def test_label_names_stops_at_the_depth_bound_in_structs_each_holding_a_label():
    """A struct holding a label and a struct holding a label... 1500 deep: each level holds one
    within the bound, so only `label_names`' own depth bound keeps it within the stack (1500 levels:
    past Python's default limit of 1000 frames)."""
    from sources import hf_parquet

    feature: dict = {"a": {"_type": "ClassLabel", "names": ["x"]}}
    value: dict = {"a": 0}
    for _ in range(1500):
        feature, value = {"a": {"_type": "ClassLabel", "names": ["x"]}, "b": feature}, {"a": 0, "b": value}
    named = hf_parquet.label_names(feature, value)
    assert named["a"] == "x" and named["b"]["b"]["a"] == "x"


@pytest.mark.parametrize("card_label, named", [
    ("    dtype:\n      class_label:\n        names:\n          '0': lion\n          '1': tiger\n", ["lion", "tiger"]),
    ("    dtype: int64\n", [None, None])], ids=["card-names", "card-int64"])
def test_the_cards_features_win_over_the_parquets_as_load_dataset_reads_them(tmp_path: Path, card_label: str,
                                                                             named: list):
    """A parquet `datasets` wrote (`ClassLabel(names=['cat', 'dog'])` in its `huggingface` metadata)
    beside a card declaring the config's features: `load_dataset` (5.2) gives the card's
    (`ClassLabel(names=['lion', 'tiger'])`; `dtype: int64`: `Value('int64')`, no names). The
    lineage named the parquet's labels."""
    import json

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}, "text": {"dtype": "string", "_type": "Value"},
                "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}  # as `Dataset.to_parquet` writes it
    table = pa.table({"image": pa.array([{"bytes": b"x", "path": None}] * 2, image), "text": ["a", "b"],
                      "label": pa.array([0, 1], pa.int64())})
    (tmp_path / "data").mkdir()
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n  - name: text\n    dtype: string\n"
        f"  - name: label\n{card_label}configs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: data/train-*\n---\n")
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert [r.lineage.get("class_names", {}).get("label") for r in records] == named


def test_a_card_declaring_another_configs_features_leaves_the_parquets_labels(tmp_path: Path):
    """The card's `dataset_info` names only config `other`: the built `default` config keeps the
    parquet's own features, as `load_dataset` does."""
    import json

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}, "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}
    table = pa.table({"image": pa.array([{"bytes": b"x", "path": None}], image), "text": ["a"], "label": [1]})
    (tmp_path / "data").mkdir()
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    (tmp_path / "README.md").write_text(
        "---\ndataset_info:\n  config_name: other\n  features:\n  - name: label\n    dtype: int64\n---\n")
    source = LaionSource("hf", str(tmp_path), "huggingface")
    records = [i for u in source.units() for i in source.read(u) if getattr(i, "lineage", None)]
    assert [r.lineage.get("class_names") for r in records] == [{"label": "dog"}]


def test_a_card_is_parsed_once_for_its_configs_and_each_configs_labels(tmp_path: Path, monkeypatch):
    """The card's YAML was parsed once for its `configs` and once more for each config whose labels
    were asked (`read_card_labels(uri, config)`): building 3 configs of a 430 KB card of 1,100
    configs loaded it 4 times (1.55 CPU-s against 0.42). Now once per card per process, while the
    card is unchanged; rewritten, it is parsed again."""
    import yaml

    from sources import hf_card

    lines = ["---", "configs:"]
    for c in range(3):
        lines += [f"- config_name: c{c}", f"  data_files: c{c}/*.parquet"]
    lines += ["dataset_info:"]
    for c in range(3):
        lines += [f"- config_name: c{c}", "  features:", "  - name: label", "    dtype:", "      class_label:",
                  "        names:", "          '0': cat", f"          '1': dog{c}"]
    card = tmp_path / "README.md"
    card.write_text("\n".join([*lines, "---", "card"]))
    loads, load = [], yaml.load
    monkeypatch.setattr(yaml, "load", lambda *a, **k: loads.append(1) or load(*a, **k))
    assert [c.name for c in hf_card.read_card(str(card))] == ["c0", "c1", "c2"]
    for c in range(3):
        assert hf_card.read_card_labels(str(card), f"c{c}")["label"]["names"] == ["cat", f"dog{c}"]
    assert len(loads) == 1
    card.write_text("\n".join([*lines, "---", "card, edited"]))
    assert hf_card.read_card_labels(str(card), "c2")["label"]["names"] == ["cat", "dog2"] and len(loads) == 2


@pytest.mark.parametrize("layout", ["folder", "huggingface"])
def test_a_card_linking_out_of_the_root_is_never_read_without_follow_links(tmp_path: Path, layout: str):
    """`README.md` a link to a file elsewhere: its `configs:` steered the build (here: two configs,
    none the default, so the build stopped, naming a config from the outside file). It is now an
    unreadable card naming `follow_links`, nothing of the outside text shown; with
    `follow_links: true` it is read as before."""
    from PIL import Image

    outside = tmp_path / "outside.md"
    outside.write_text("---\nconfigs:\n- config_name: SECRET_hf_abc123\n- config_name: other\n---\n")
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    if layout == "folder":
        Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "train" / "0.png")
    else:
        _parquet(root / "train" / "train-00000-of-00001.parquet")
    (root / "README.md").symlink_to(outside)
    linked_out = "README.md.* link leading out of the source root.*follow_links.*field follow_links"
    with pytest.raises(ValueError, match=linked_out) as raised:
        LaionSource("web", str(root)).units()
    assert "SECRET" not in str(raised.value)
    with pytest.raises(ValueError, match="several configs and none is the default \\(SECRET_hf_abc123, other\\)"):
        LaionSource("web", str(root), follow_links=True).units()


def test_a_hub_snapshots_card_still_gives_the_splits(tmp_path: Path):
    """In a Hub cache snapshot `README.md` is the cache's link to its blob: inside, its configs read."""
    from test_hub_cache import _cache_file, _parquet as _hf_parquet, _png

    cache = tmp_path / "hub"
    rows = _hf_parquet([{"bytes": _png(0), "path": "a.png"}])
    _cache_file(cache, "org/cats", "first/train-00000-of-00001.parquet", rows)
    _cache_file(cache, "org/cats", "second/train-00000-of-00001.parquet", rows)
    card = _cache_file(cache, "org/cats", "README.md", b"---\nconfigs:\n- config_name: first\n  data_files: first/*\n"
                       b"- config_name: second\n  data_files: second/*\n---\n", lfs=False)
    source = LaionSource("hf", str(card.parent), hf_config="second")
    items = [i for u in source.units() for i in source.read(u)]
    assert [i.input for i in items if getattr(i, "reason", None) is None] == ["second/train-00000-of-00001.parquet row 0"]
    assert ("other_hf_config", "first/train-00000-of-00001.parquet") in {(getattr(i, "reason", ""), i.input) for i in items}


def test_the_card_cache_keeps_configs_and_features_not_the_whole_parse(tmp_path: Path):
    """The parse cache kept each card's whole YAML: two 1 MiB cards of small mappings (within the
    card budget) held 24.7 MiB after they were read, two of 100 KB 2.7 MiB. Only the configs and each
    config's features are kept now; the labels and configs read as before."""
    import gc
    import tracemalloc

    from sources import hf_card

    junk = "".join(f"- {{a: {i}, b: x}}\n" for i in range(6000))
    head = ("---\nconfigs:\n- config_name: default\n  data_files: '*.parquet'\ndataset_info:\n  features:\n"
            "  - name: label\n    dtype:\n      class_label:\n        names:\n          '0': cat\n          '1': dog\n"
            "junk:\n")
    text = head + junk + "---\n"
    cards = [tmp_path / f"c{n}" / "README.md" for n in range(2)]
    for card in cards:
        card.parent.mkdir()
        card.write_text(text)
    gc.collect()
    tracemalloc.start()
    try:
        for card in cards:
            assert [c.name for c in hf_card.read_card(str(card))] == ["default"]
            assert hf_card.read_card_labels(str(card), "default") == {"label": {"_type": "ClassLabel",
                                                                                "names": ["cat", "dog"]}}
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hf_card.card_yaml.weight(str(cards[1])) is not None  # kept
    assert held < 1 << 20, f"{held / 2**20:.1f} MiB held by 2 cached cards"
