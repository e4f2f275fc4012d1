"""Config validation: errors name the field and what is allowed, before any work starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from uvd_pipeline.config import ConfigError, load_config, parse_config, parse_set_options

REPO = Path(__file__).resolve().parent.parent
BASE = {"output": "out", "sources": [{"name": "web", "type": "laion", "path": "data/laion"}]}


def _error(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_sample_config_is_valid_and_paths_are_relative_to_it():
    config = load_config(str(REPO / "configs" / "sample.yaml"))
    assert config.output == str(REPO / "build" / "sample")
    assert [s.type for s in config.sources][:3] == ["laion", "imagenet", "video"]
    assert config.sources[0].path == str(REPO / "data" / "sample" / "laion")
    assert config.sources[2].strides == (10, 20, 30)


def test_relative_paths_given_to_parse_config_are_made_absolute(tmp_path, monkeypatch):
    """`parse_config` (the API, base_dir "."): relative paths stayed relative while the file
    listings give absolute ones, so a source cutting its root off a listed path (the Omnidata
    layout's keys: `names_below`) kept the whole path in every key and found no building."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.source_factory import make_source

    monkeypatch.chdir(tmp_path)
    config = parse_config({"output": "out", "sources": [{"name": "t", "type": "multitask", "path": "omni"}]})
    assert config.output == str(tmp_path / "out") and config.sources[0].path == str(tmp_path / "omni")
    building = tmp_path / "omni" / "rgb" / "taskonomy" / "allensville"
    building.mkdir(parents=True)
    source = make_source(config.sources[0])
    assert [source._unit_key(u) for u in source.units()] == ["t-allensville"]


def test_mmpose_labeler_files_are_relative_to_the_config_like_every_other_path(tmp_path, monkeypatch):
    """The mmpose labeler's `config` and `checkpoint` stayed as written, so relative ones were read
    from wherever the build ran, while every other path of the config is relative to the file."""
    from uvd_pipeline.labelers import LabelerError, check_spec
    from uvd_pipeline.source_factory import labeler_specs

    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "pose.py").write_text("# an MMPose config")
    (folder / "models" / "pose.pth").write_bytes(b"0")
    weights = tmp_path / "elsewhere" / "w.pth"  # an absolute path stays as it is
    labeler = {"name": "mmpose", "config": "models/pose.py", "checkpoint": "models/pose.pth"}
    absolute = {"name": "mmpose", "config": "models/pose.py", "checkpoint": str(weights)}
    (folder / "build.yaml").write_text(yaml.safe_dump({"output": "out", "sources": [
        {"name": "p", "type": "pseudo_labeled", "path": "imgs", "task": "pose", "labeler": labeler},
        {"name": "s", "type": "stereo", "path": "pairs", "labeler": {"name": "sgbm", "block_size": 7}},
        {"name": "q", "type": "pseudo_labeled", "path": "more", "task": "pose", "labeler": absolute}]}))
    monkeypatch.chdir(tmp_path)  # not the config's folder: relative to the run, models/ is not there
    config = load_config(str(folder / "build.yaml"))
    pose = config.sources[0].labeler
    assert (pose.config, pose.checkpoint) == (str(folder / "models" / "pose.py"), str(folder / "models" / "pose.pth"))
    assert (config.sources[2].labeler.config, config.sources[2].labeler.checkpoint) == (
        str(folder / "models" / "pose.py"), str(weights))
    assert config.sources[1].labeler.model_dump() == {"name": "sgbm", "block_size": 7}  # other labelers: as written
    [(field, spec, task)] = labeler_specs(config.sources[0])  # what the build checks and the workers get
    assert spec == {"name": "mmpose", "config": str(folder / "models" / "pose.py"),
                    "checkpoint": str(folder / "models" / "pose.pth")}
    try:
        import mmpose  # noqa: F401
    except Exception:  # not installed: the files are found, so the check gets as far as the import
        with pytest.raises(LabelerError, match=r"pip install -e '\.\[mmpose\]'"):
            check_spec(spec, task)


def test_unknown_field_lists_allowed_ones():
    message = _error({**BASE, "sources": [{**BASE["sources"][0], "shards": 3}]})
    assert "sources[0].shards: unknown field" in message and "num_shards" in message
    assert "imag: unknown field" in _error({**BASE, "imag": {}})


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"image": {"size": 250}}, "image.size: must be a multiple of 16"),
        ({"image": {"resize": "stretch"}}, "image.resize: got 'stretch'; allowed: 'squash', 'center_crop' or 'pad'"),
        ({"split": {"val_fraction": 1.5}}, "split.val_fraction"),
        ({"sources": []}, "sources: needs at least 1 entry"),
        ({"sources": [{"name": "v", "type": "video", "path": "p", "strides": [0]}]},
         "sources[0].strides: every stride must be >= 1"),
        ({"sources": [{"name": "v", "type": "vidoe", "path": "p"}]}, "sources[0].type: got 'vidoe'; did you mean video? It must be one of laion, imagenet, video"),
        ({"sources": [{"name": "Web.1", "type": "laion", "path": "p"}]}, "sources[0].name: got 'Web.1'; use lower_snake_case"),
        ({"sources": [{"name": "a", "type": "laion", "path": "p"}, {"name": "a", "type": "video", "path": "q"}]},
         "sources[1].name: 'a' is used twice"),
        # the output's folders rendered/<name>/ and tokens/<name>/: no Windows file system holds these
        ({"sources": [{"name": "aux", "type": "laion", "path": "p"}]},
         "sources[0].name: 'aux' is a device name on Windows"),
        ({"sources": [{"name": "com1", "type": "video", "path": "p"}]}, "sources[0].name: 'com1' is a device name"),
        ({"sources": [{"name": "v", "type": "video", "path": "p", "time_budget_s": 0}]},
         "sources[0].time_budget_s: Input should be greater than 0"),
        ({"sources": [{"name": "v", "type": "video", "path": "p", "memory_budget_mb": 10}]},
         "sources[0].memory_budget_mb: Input should be greater than or equal to 512"),
        ({"image": {"decode_time_s": 0}}, "image.decode_time_s: Input should be greater than 0"),
        ({"image": {"decode_time_s": "fast"}}, "image.decode_time_s: Input should be a valid number"),
        ({"beam": {"options": ["project=x"]}}, "beam.options: each option must be a --flag"),
        ({"beam": {"direct_running_mode": "threads"}}, "beam.direct_running_mode: got 'threads'"),
        # a typo of a few zeros: torch would start that many threads in every worker process
        ({"tokenizer": {"threads": 100_000}}, "tokenizer.threads: Input should be less than or equal to 1024"),
        ({"tokenizer": {"threads": 0}}, "tokenizer.threads: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_name_field_and_fix(patch, expected):
    assert expected in _error({**BASE, **patch})


def test_tokenizer_threads_null_is_torchs_own_count_and_the_default_one():
    """`threads: null` is a documented choice (torch's own count, the machine's cores), not an
    error; left out, it is 1 (token bytes then never depend on the machine)."""
    assert parse_config({**BASE, "tokenizer": {"threads": None}}).tokenizer.threads is None
    assert parse_config(BASE).tokenizer.threads == 1


def test_missing_output_and_yaml_errors(tmp_path: Path):
    assert "output: required field is missing" in _error({"sources": BASE["sources"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_content_hash_ignores_how_it_runs(tmp_path: Path):
    a = parse_config({**BASE, "beam": {"direct_num_workers": 1}})
    b = parse_config({**BASE, "beam": {"direct_num_workers": 8, "options": ["--project=p"]}, "output": "elsewhere"})
    c = parse_config({**BASE, "image": {"resize": "pad"}})
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_auto_running_mode_follows_the_worker_count():
    """`auto` (the default): one worker in this process, two as threads, more as processes; an
    explicit mode is kept, and reaches the runner's flags."""
    from uvd_pipeline.build import pipeline_options

    def mode(**beam) -> str:
        return parse_config({**BASE, "beam": beam}).beam.running_mode

    assert parse_config(BASE).beam.direct_running_mode == "auto"
    assert [mode(direct_num_workers=n) for n in (1, 2, 3, 16)] == [
        "in_memory", "multi_threading", "multi_processing", "multi_processing"]
    assert mode(direct_num_workers=16, direct_running_mode="multi_threading") == "multi_threading"
    assert mode(direct_num_workers=1, direct_running_mode="multi_processing") == "multi_processing"
    from uvd_pipeline.config import config_summary

    assert "workers: 2 as threads of this process (beam.direct_running_mode: auto)" in config_summary(parse_config(BASE))
    for beam, flags in (({"direct_num_workers": 4}, ("multi_processing", 4)), ({}, ("multi_threading", 2))):
        options = pipeline_options(parse_config({**BASE, "beam": beam})).get_all_options()
        assert (options["direct_running_mode"], options["direct_num_workers"]) == flags


def test_urls_are_kept_as_is():
    config = parse_config({"output": "gs://bucket/uvd", "sources": [{"name": "w", "type": "laion",
                                                                      "path": "s3://b/laion"}]}, "/base")
    assert config.output == "gs://bucket/uvd" and config.sources[0].path == "s3://b/laion"


def test_cli_reports_config_errors(tmp_path: Path):
    from uvd_pipeline.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "image": {"size": 100}}))
    assert main(["check", str(path)]) == 2


@pytest.mark.parametrize("flags, field", [
    (["--workers", "0"], "beam.direct_num_workers"),
    (["--beam-option", "project=p"], "beam.options"),
    (["--workers", "100000"], "beam.direct_num_workers"),
])
def test_build_flags_are_validated_like_the_file(tmp_path: Path, capsys, flags, field):
    """A flag sets its field before validation: what the file may not hold, the flag may not set."""
    from uvd_pipeline.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "beam": {"direct_num_workers": 1}}))
    assert main(["build", str(path), *flags]) == 2
    assert f"{field}:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_set_nested_fields_and_extend_lists(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "beam": {"options": ["--project=a"]}}))
    config = load_config(str(path), {"beam.direct_num_workers": 3, "tokenizer.batch_size": 32,
                                     "beam.options": lambda old: [*old, "--region=b"]})
    assert config.beam.direct_num_workers == 3 and config.tokenizer.batch_size == 32
    assert config.beam.options == ("--project=a", "--region=b")
    assert yaml.safe_load(path.read_text())["beam"] == {"options": ["--project=a"]}  # the file is not touched


def test_set_options_set_typed_values_like_the_file(tmp_path: Path):
    """`--set KEY=VALUE`: values are YAML scalars, so they arrive typed as the file would give them."""
    from uvd_pipeline.cli import build_overrides, parser

    path = tmp_path / "c.yaml"
    two = {**BASE, "sources": [*BASE["sources"], {"name": "more", "type": "laion", "path": "data/more"}]}
    path.write_text(yaml.safe_dump(two))
    args = parser().parse_args(["build", str(path), "--set", "tokenizer.batch_size=32", "--set",
                                "beam.direct_num_workers=2", "--set", "sources.web.enabled=false",
                                "--set", "image.resize=pad", "--beam-option=--project=a"])
    config = load_config(str(path), build_overrides(args))
    assert config.tokenizer.batch_size == 32 and config.beam.direct_num_workers == 2
    assert config.sources[0].enabled is False and config.image.resize == "pad"
    assert config.beam.options == ("--project=a",)
    assert yaml.safe_load(path.read_text()) == two  # the file is not touched
    by_index = load_config(str(path), parse_set_options(["sources.0.num_shards=7"]))
    assert by_index.sources[0].num_shards == 7


@pytest.mark.parametrize("sets, expected", [
    (["tokenizer.batchsize=32"], "tokenizer.batchsize: unknown field; allowed fields here: enabled, checkpoint, batch_size"),
    (["tokenzer.batch_size=32"], "tokenzer: unknown field; allowed fields here: version, output, "),
    (["sources.wbe.enabled=false"], "sources.wbe.enabled: sources is a list of 1; name an entry by its index 0..0 "
                                    "or its name (web); did you mean web?"),
    (["beam.direct_num_workers=0"], "beam.direct_num_workers: Input should be greater than or equal to 1"),
    (["tokenizer.batch_size=many"], "tokenizer.batch_size: Input should be a valid integer"),
    (["image.resize=stretch"], "image.resize: got 'stretch'; allowed: 'squash', 'center_crop' or 'pad'"),
    (["tokenizer.batch_size"], "expected KEY=VALUE with KEY a dotted field path, e.g. --set tokenizer.batch_size=32"),
    (["tokenizer..batch_size=3"], "expected KEY=VALUE"),
    (["output.path=x"], "output.path: output holds the value 'out', not a section with fields; set output itself"),
    (["sources.3.enabled=false"], "sources.3.enabled: sources is a list of 1; name an entry by its index 0..0 "
                                  "or its name (web)"),
    (["beam.options=[--a=1]"], "--set beam.options: give one scalar value"),
    (["tokenizer.batch_size=8", "tokenizer.batch_size=16"], "--set tokenizer.batch_size is given twice"),
    (["beam.direct_num_workers=2", "--workers", "3"], "--set beam.direct_num_workers and a flag both set"),
])
def test_bad_set_options_fail_before_the_build_naming_the_field(tmp_path: Path, capsys, sets, expected):
    from uvd_pipeline.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    flags = [flag for item in sets for flag in ((item,) if item.startswith("-") or item.isdigit() else ("--set", item))]
    assert main(["build", str(path), *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_config_covers_every_source_type():
    from uvd_pipeline.config import SOURCE_TYPES

    config = load_config(str(REPO / "configs" / "sample.yaml"))
    assert {s.type for s in config.sources} == set(SOURCE_TYPES)


def test_labeler_errors_name_the_field(tmp_path: Path):
    from uvd_pipeline.build import run_build

    bad_name = {**BASE, "sources": [{"name": "e", "type": "pseudo_labeled", "path": "p", "task": "edges",
                                      "labeler": {"name": "dpt"}}]}
    assert "sources[0].labeler.name: got 'dpt'; allowed: 'canny', 'sgbm' or 'mmpose'" in _error(bad_name)
    images = tmp_path / "imgs"
    images.mkdir()
    import shutil

    shutil.copy(REPO / "tests" / "fixtures" / "coco" / "000000000785.jpg", images / "a.jpg")
    no_files = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "p", "type": "pseudo_labeled", "path": str(images), "task": "pose", "labeler": {"name": "mmpose"}}]})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.labeler \(p\): the mmpose labeler needs `config`"):
        run_build(no_files)
    wrong_task = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "p", "type": "pseudo_labeled", "path": str(images), "task": "depth", "labeler": {"name": "canny"}}]})
    with pytest.raises(ConfigError, match="makes edges targets, not depth"):
        run_build(wrong_task)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"beam": {"direct_num_workers": 100000}}, "beam.direct_num_workers: Input should be less than or equal to 1024"),
        ({"beam": {"direct_num_workers": 0}}, "beam.direct_num_workers: Input should be greater than or equal to 1"),
        ({"image": {"max_pixels": 10**12}}, "image.max_pixels: Input should be less than or equal to 1073741824"),
        ({"mixture": {"groups": {"single_images": float("inf")}}}, "mixture.groups: weight of 'single_images' must be a finite"),
        ({"mixture": {"groups": {"single_images": float("nan")}}}, "mixture.groups: weight of 'single_images' must be a finite"),
        ({"mixture": {"sources": {"web": float("inf")}}}, "mixture.sources: weight of 'web' must be a finite"),
    ],
)
def test_out_of_range_values_are_refused(patch, expected):
    assert expected in _error({**BASE, **patch})


@pytest.mark.parametrize("output,source", [("data/laion/out", "data/laion"), ("data", "data/laion"),
                                           ("data/laion", "data/laion")])
def test_output_and_sources_stay_apart(tmp_path: Path, output: str, source: str):
    data = {"output": output, "sources": [{"name": "web", "type": "laion", "path": source}]}
    with pytest.raises(ConfigError, match=r"sources\[0\]\.path .* output|output .* sources\[0\]\.path"):
        parse_config(data, str(tmp_path))
    parse_config({**data, "output": "elsewhere"}, str(tmp_path))  # apart: fine


def test_output_inside_a_source_through_a_link(tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    data = {"output": "link/out", "sources": [{"name": "web", "type": "laion", "path": "data"}]}
    with pytest.raises(ConfigError, match=r"lies inside sources\[0\]\.path"):
        parse_config(data, str(tmp_path))


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 500
    with pytest.raises(ConfigError, match="expands to more than 100000 values"):
        load_config(str(bomb))


def test_oversized_and_deeply_nested_yaml_are_refused(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_text("output: out\n" + "#" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="a config is at most"):
        load_config(str(big))
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply|not valid YAML"):
        load_config(str(deep))


def _pickled_code(path: Path) -> None:
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(path, "wb") as handle:
        pickle.dump({"encoder.conv_in.weight": Payload()}, handle, protocol=2)


def test_check_reads_sources_and_loads_the_tokenizer(tmp_path: Path, mini_corpus: Path, tiny_tokenizer: Path,
                                                     capsys):
    """`check` fails, in one line naming the field, on what the build would fail on later."""
    import shutil

    from uvd_pipeline.cli import main

    config = {"output": str(tmp_path / "out"),
              "sources": [{"name": "web", "type": "laion", "path": str(mini_corpus / "laion")}],
              "tokenizer": {"checkpoint": str(tiny_tokenizer)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", str(path)]) == 0
    assert "source web: 1 input units" in capsys.readouterr().out

    missing = {**config, "sources": [{**config["sources"][0], "path": str(tmp_path / "nope")}]}
    path.write_text(yaml.safe_dump(missing))
    assert main(["check", str(path)]) == 2
    assert "sources[0].path (web)" in capsys.readouterr().err

    hostile = tmp_path / "hostile-tokenizer"
    shutil.copytree(tiny_tokenizer, hostile)
    _pickled_code(hostile / "pytorch_model.bin")
    path.write_text(yaml.safe_dump({**config, "tokenizer": {"checkpoint": str(hostile)}}))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.checkpoint:" in err and "weights-only" in err and "code ran" not in err


def test_every_source_type_has_a_reader():
    from uvd_pipeline.config import SOURCE_TYPES
    from uvd_pipeline.source_factory import READERS

    assert set(READERS) == set(SOURCE_TYPES)


def _image(path: Path, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (16, 8), 40).save(path)


def _kitti(root: Path) -> None:
    for folder in ("image_2", "image_3"):
        _image(root / "training" / folder / "000000_10.png")
    _image(root / "training" / "disp_noc_0" / "000000_10.png", "I;16")


def _co3d(root: Path) -> None:
    import gzip
    import json

    for category in ("ball", "suitcase"):
        (root / category).mkdir(parents=True)
        frames = [{"sequence_name": "1_2_3", "frame_number": 0, "image": {"path": f"{category}/1_2_3/images/a.jpg"},
                   "viewpoint": {"R": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "T": [0, 0, 2]}}]
        (root / category / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))


def _mpii(root: Path) -> None:
    import json

    _image(root / "images" / "a.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "mpii_train.json").write_text(json.dumps(
        [{"image": "a.jpg", "joints": [[1.0, 1.0]] * 16, "joints_vis": [1] * 16}]))


def _coco(root: Path) -> None:
    import json

    _image(root / "images" / "val2017" / "000000000001.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 16, "height": 8}], "annotations": [],
         "categories": [{"id": 1, "name": "person"}]}))


def _ade(root: Path) -> None:
    _image(root / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000001.jpg")
    _image(root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png", "L")


@pytest.mark.parametrize(
    "writer,source,expected",
    [
        (_kitti, {"type": "stereo", "disparity_folder": "disp_occ_0"},
         ["sources[0].disparity_folder (s)", "KITTI layout: no disp_occ_0 under ", "holds: disp_noc_0/, image_2/, image_3/)",
          "name the folder of its disparity maps, or set a labeler"]),
        (_co3d, {"type": "co3d", "categories": ["dog"]},
         ["sources[0].categories (s)", "no dog/frame_annotations.jgz", "categories there: ball, suitcase"]),
        (_co3d, {"type": "co3d", "categories": ["ball", "dgo"]}, ["sources[0].categories (s)", "no dgo/"]),
        (_mpii, {"type": "mpii", "annotation_file": "annotations/mpii_val.json"},
         ["sources[0].annotation_file (s)", "no annotations/mpii_val.json", "annotations holds: mpii_train.json)"]),
        (_mpii, {"type": "mpii", "images_dir": "imgs"}, ["sources[0].images_dir (s)", "no imgs", "annotations/, images/"]),
        (_coco, {"type": "coco", "split": "val"},
         ["sources[0].split (s)", "no annotations/instances_val.json", "holds: instances_val2017.json",
          "set split or annotation_files"]),
        (_coco, {"type": "coco", "annotation_files": ["annotations/instances_train2017.json"]},
         ["sources[0].annotation_files (s)", "no annotations/instances_train2017.json"]),
        (_coco, {"type": "coco", "images_dir": "images/train2017"},
         ["sources[0].images_dir (s)", "no images/train2017", "holds: val2017/"]),
        (_ade, {"type": "segmentation", "layout": "cityscapes"},
         ["sources[0].layout (s)", "cityscapes layout: no leftImg8bit", "holds: ADEChallengeData2016/"]),
    ],
)
def test_a_missing_configured_name_is_blamed_on_its_field(tmp_path: Path, writer, source, expected):
    """A folder, file or category named by a field other than `path` that is not there fails
    `check` naming that field and what is there; it used to pass (every pair then rejected) or
    blame `path`, which was right."""
    from uvd_pipeline.unit_render import list_units

    root = tmp_path / "data"
    writer(root)
    config = parse_config({"output": str(tmp_path / "out"), "sources": [{"name": "s", "path": str(root), **source}]})
    with pytest.raises(ConfigError) as info:
        list_units(config)
    for text in expected:
        assert text in str(info.value)
    fine = {k: v for k, v in source.items() if k == "type"}  # the defaults fit the trees written
    config = parse_config({"output": str(tmp_path / "out"), "sources": [{"name": "s", "path": str(root), **fine}]})
    assert len(list_units(config)["s"]) >= 1
    missing = parse_config({"output": str(tmp_path / "out"),
                            "sources": [{"name": "s", "path": str(tmp_path / "nope"), **source}]})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.path \(s\)"):
        list_units(missing)


def test_a_missing_images_dir_outside_the_root_never_lists_the_filesystem_top(tmp_path: Path):
    """An absolute COCO `images_dir` outside the dataset root that is not there: the message said
    "no ... under" the root, climbed from the name up to `/` and listed the machine's top folders.
    It climbs to the first folder on the way that exists, and never lists `/` (it names the first
    missing folder instead). A URL `images_dir` (read as itself) was joined under the local root
    as a folder `memory:/...` and the root's files listed; its own filesystem is climbed now."""
    import fsspec

    from uvd_pipeline.unit_render import list_units

    root = tmp_path / "data"
    _coco(root)
    bucket = f"memory://uvd-paths-{tmp_path.name}"
    fsspec.filesystem("memory").pipe(f"{bucket}/images/train2017/a.jpg", b"x")
    cases = (("/uvd-no-such-folder/val2017", "(/uvd-no-such-folder does not exist)"),
             (str(tmp_path / "elsewhere" / "val2017"), f"({tmp_path} holds: data/)"),
             (f"{bucket}/images/val2017", f"({bucket}/images holds: train2017/)"),
             (f"{bucket}-none/val2017", f"({bucket}-none/val2017 does not exist)"))
    for images_dir, expected in cases:
        config = parse_config({"output": str(tmp_path / "out"), "sources": [
            {"name": "s", "type": "coco", "path": str(root), "images_dir": images_dir}]})
        with pytest.raises(ConfigError) as info:
            list_units(config)
        message = str(info.value)
        assert "/ holds" not in message, message
        assert "sources[0].images_dir (s)" in message and f"COCO: no {images_dir} {expected}" in message, message


def test_stereo_with_a_labeler_needs_no_disparity_folder(tmp_path: Path):
    from uvd_pipeline.unit_render import list_units

    _kitti(tmp_path / "kitti")
    config = parse_config({"output": str(tmp_path / "out"), "sources": [
        {"name": "s", "type": "stereo", "path": str(tmp_path / "kitti"), "disparity_folder": "disp_occ_0",
         "labeler": {"name": "sgbm"}}]})
    assert len(list_units(config)["s"]) == 1


def test_kitti_2012_folders_are_named_in_the_config(tmp_path: Path):
    """KITTI 2012's colour views are colored_0 / colored_1 and its disparity disp_occ: the 2015
    defaults fail `check` blaming `left_folder`; naming the folders reads the pair."""
    from uvd_pipeline.unit_render import list_units

    for folder in ("colored_0", "colored_1"):
        _image(tmp_path / "kitti" / "training" / folder / "000000_10.png")
    _image(tmp_path / "kitti" / "training" / "disp_occ" / "000000_10.png", "I;16")
    source = {"name": "s", "type": "stereo", "path": str(tmp_path / "kitti"), "disparity_folder": "disp_occ"}
    with pytest.raises(ConfigError, match=r"sources\[0\]\.left_folder \(s\).*colored_0/"):
        list_units(parse_config({"output": str(tmp_path / "out"), "sources": [source]}))
    named = {**source, "left_folder": "colored_0", "right_folder": "colored_1"}
    assert len(list_units(parse_config({"output": str(tmp_path / "out"), "sources": [named]}))["s"]) == 1


# -- configs that `check` passed and `build` crashed on (files written as YAML, run through the CLI) --
def _jpegs(folder: Path, count: int = 3) -> Path:
    """A folder of real JPEGs (Pillow), a `laion` folder source."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return folder


def _yaml_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("IMGS", str(_jpegs(tmp_path / "imgs"))).replace("OUT", str(tmp_path / "out")))
    return path


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from uvd_pipeline.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("write, expected", [
    (lambda p: p.write_bytes(b"version: 1\noutput: \xff\xfe\n"),
     "not UTF-8 text (byte 0xff on line 2); save the config as UTF-8"),
    (lambda p: p.mkdir(), "is a folder; give the path of the YAML config file itself"),
    # never opened: reading a fifo would block
    (lambda p: os.mkfifo(p), "not a regular file; give the path of a YAML config file"),
])
def test_a_config_file_that_cannot_be_read_is_one_line_error(tmp_path: Path, capsys, write, expected):
    path = tmp_path / "c.yaml"
    write(path)
    for command in ("check", "build"):
        code, err = _cli(capsys, command, str(path))
        assert code == 2 and err == f"error: {path}: {expected}\n"


def test_a_config_file_error_leaves_the_module_entry_point_without_a_traceback(tmp_path: Path):
    import subprocess
    import sys

    path = tmp_path / "c.yaml"
    path.write_bytes("version: 1\noutput: caf\u00e9\n".encode("latin-1"))
    proc = subprocess.run([sys.executable, "-m", "uvd_pipeline", "check", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {path}: not UTF-8 text (byte 0xe9 on line 2); save the config as UTF-8"


def test_a_utf8_config_with_a_byte_order_mark_reads(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(BASE).encode())
    assert load_config(str(path)).sources[0].name == "web"


OUTPUT_FILE = """version: 1
output: OUT
sources:
  - {name: web, type: laion, path: IMGS, num_shards: 1}
beam: {direct_num_workers: 1}
"""


@pytest.mark.parametrize("config, prepare, expected", [
    (OUTPUT_FILE, lambda out: out.write_text("keep me"),
     "error: output: {out} is a file; name a folder (it is made when missing)"),
    (OUTPUT_FILE.replace("output: OUT", "output: OUT/sub"), lambda out: out.write_text("keep me"),
     "error: output: {out} is a file, so no folder can be made at {out}/sub"),
    (OUTPUT_FILE.replace("num_shards: 1}", "num_shards: 1, enabled: false}"), lambda out: None,
     "sources: every source has enabled: false (web), so there is nothing to build; set enabled: true on at least "
     "one (or --set sources.web.enabled=true)"),
    (OUTPUT_FILE.replace("beam: {", "beam: {runner: DirectRuner, "), lambda out: None,
     "beam.runner: unknown runner 'DirectRuner'; did you mean DirectRunner? the runners known by name are DirectRunner, dask, DataflowRunner"),
    (OUTPUT_FILE.replace("beam: {", "beam: {runner: my_company.beam.CustomRunner, "), lambda out: None,
     "error: beam.runner: my_company.beam.CustomRunner cannot be loaded (ModuleNotFoundError: No module named "
     "'my_company')"),
    (OUTPUT_FILE.replace("beam: {", "beam: {runner: apache_beam.runners.portability.fn_api_runner.FnApiRuner, "),
     lambda out: None, "error: beam.runner: apache_beam.runners.portability.fn_api_runner has no FnApiRuner"),
])
def test_check_refuses_what_build_would_crash_on(tmp_path: Path, capsys, config, prepare, expected):
    """An output that is a file, every source disabled, a misspelt runner: `check` said "config OK"
    and `build` died in a traceback (the runner's after build.json was written). Both refuse now,
    naming the field and the fix, and the build writes nothing."""
    path = _yaml_config(tmp_path, config)
    out = tmp_path / "out"
    prepare(out)
    expected = expected.format(out=out)
    code, err = _cli(capsys, "check", str(path), "--set", "tokenizer.enabled=false")
    assert code == 2 and expected in err, err
    code, err = _cli(capsys, "build", str(path), "--no-tokenize")
    assert code == 2 and expected in err, err
    assert not out.exists() or (out.is_file() and out.read_text() == "keep me")


def test_an_output_folder_holding_other_files_and_no_build_is_refused(tmp_path: Path, capsys):
    """`output` naming a folder of the user's own (a home folder, a dataset, a stash of files)
    was built into without a word, rendered/ and _units/ beside the files (hunt54b L3). Refused
    now by check and build, writing nothing; an empty folder (a Mac's .DS_Store aside) and a
    build's own output are built into as before."""
    path = _yaml_config(tmp_path, OUTPUT_FILE)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("notes.txt", "photos", "a.jpg", "b.jpg", "c.jpg", "d.jpg", ".DS_Store"):
        (out / name).write_text("mine") if "." in name else (out / name).mkdir()
    before = sorted(p.name for p in out.iterdir())
    expected = (f"error: output: {out} holds 6 files or folders (a.jpg, b.jpg, c.jpg, d.jpg, notes.txt and 1 more) "
                f"and no build (no build.json, rendered/ or _units/); name a new or empty folder for the build, "
                f"e.g. {out}/uvd")
    for command in ("check", "build"):
        code, err = _cli(capsys, command, str(path), "--set", "tokenizer.enabled=false")
        assert code == 2 and expected in err, err
    assert sorted(p.name for p in out.iterdir()) == before
    for name in before:
        (out / name).rmdir() if (out / name).is_dir() else (out / name).unlink()
    # what may lie there before a first build (a review found each refused): a Mac's, a fresh
    # volume's, the log a shell redirects into it, the config, a killed first build's temporary
    for name in (".DS_Store", "build.log", "c.yaml", "build.json.tmp-1a2b3c4d"):
        (out / name).write_text("x")
    (out / "lost+found").mkdir()
    code, err = _cli(capsys, "check", str(path), "--set", "tokenizer.enabled=false")
    assert code == 0, err


def test_sources_of_one_type_over_one_folder_are_warned_of(tmp_path: Path, capsys):
    """Two web sources over one download (or one inside the other's folder) built without a word:
    every image read, rendered and counted twice, the second source's all duplicate rejects
    (hunt54b L2). `check` and the build's summary warn now; derived sources (synthetic) over the
    same folder share by design and are not warned of, nor are types that pick part of a root."""
    from uvd_pipeline.cli import main
    from uvd_pipeline.config import load_config
    from uvd_pipeline.source_factory import source_notices

    text = OUTPUT_FILE + """  - {name: web2, type: laion, path: IMGS, num_shards: 1}
  - {name: inner, type: laion, path: IMGS/sub, num_shards: 1}
  - {name: synth, type: synthetic, path: IMGS, tasks: [colorization], num_shards: 1}
  - {name: synth2, type: synthetic, path: IMGS, tasks: [inpainting], num_shards: 1}
"""
    path = _yaml_config(tmp_path, text.replace("beam: {direct_num_workers: 1}\n", ""))
    (tmp_path / "imgs" / "sub").mkdir()
    (tmp_path / "imgs" / "sub" / "x.jpg").write_bytes((next((tmp_path / "imgs").glob("*.jpg"))).read_bytes())
    imgs = tmp_path / "imgs"
    notices = source_notices(load_config(str(path), {"tokenizer": {"enabled": False}}))
    assert notices == {
        "web2": [f"web2: reads the folder source web reads ({imgs}): each shared file is read, rendered and counted "
                 "by both (a copy of an image is a duplicate reject); give the sources folders apart, or disable one"],
        "inner": [f"inner: lies inside source web's folder ({imgs}), which reads it too: each shared file is read, "
                  "rendered and counted by both (a copy of an image is a duplicate reject); give the sources folders "
                  "apart, or disable one",
                  f"inner: lies inside source web2's folder ({imgs}), which reads it too: each shared file is read, "
                  "rendered and counted by both (a copy of an image is a duplicate reject); give the sources folders "
                  "apart, or disable one"]}
    assert main(["check", str(path), "--set", "tokenizer.enabled=false"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("warning: ") == 3 and "warning: web2: reads the folder source web reads" in printed


def test_runner_names_are_beams_and_read_as_beam_reads_them(tmp_path: Path, capsys):
    """The names known without importing Beam are Beam's own; `direct` and `flinkrunner` are the
    runners Beam would pick (case and the Runner suffix are optional there), named properly."""
    from apache_beam.options.pipeline_options import StandardOptions

    from uvd_pipeline.config import BEAM_RUNNERS

    assert set(BEAM_RUNNERS) == set(StandardOptions.ALL_KNOWN_RUNNERS)
    assert parse_config({**BASE, "beam": {"runner": "direct"}}).beam.local
    assert parse_config({**BASE, "beam": {"runner": "flinkrunner"}}).beam.runner == "FlinkRunner"
    path = _yaml_config(tmp_path, OUTPUT_FILE)
    code, err = _cli(capsys, "check", str(path), "--set", "tokenizer.enabled=false", "--set",
                     "beam.runner=apache_beam.runners.portability.fn_api_runner.FnApiRunner")
    assert code == 0, err
    code, err = _cli(capsys, "build", str(path), "--runner", "DirectRuner")
    assert code == 2 and err.startswith("error: --runner DirectRuner: unknown runner 'DirectRuner'; did you mean DirectRunner? the runners known")
    assert not (tmp_path / "out").exists()


LAX = """version: 1
output: OUT
sources:
  - {name: web, type: laion, path: IMGS, num_shards: true, num_val_shards: yes, enabled: 1}
"""


def test_booleans_are_not_numbers_and_numbers_not_booleans(tmp_path: Path, capsys):
    """YAML reads `true`/`yes` as booleans: pydantic's lax mode took them as 1, and 1 as true."""
    code, err = _cli(capsys, "check", str(_yaml_config(tmp_path, LAX)), "--set", "tokenizer.enabled=false")
    assert code == 2
    assert "sources[0].num_shards: expects a whole number, got True (YAML reads true/false" in err
    assert "sources[0].num_val_shards: expects a whole number, got True" in err
    assert "sources[0].enabled: expects true or false, got 1" in err
    code, err = _cli(capsys, "check", str(tmp_path / "c.yaml"), "--set", "sources.web.num_shards=2", "--set",
                     "sources.web.num_val_shards=1", "--set", "sources.web.enabled=true", "--set",
                     "tokenizer.enabled=0")
    assert code == 2 and err.endswith("1 problem(s):\n  tokenizer.enabled: expects true or false, got 0\n")
    for patch, expected in (({"split": {"val_fraction": False}}, "split.val_fraction: expects a number, got False"),
                            ({"version": True}, "version: expects 1, got True"),
                            ({"beam": {"direct_num_workers": 2.0}},
                             "beam.direct_num_workers: Input should be a valid integer"),
                            ({"sources": [{**BASE["sources"][0], "type": "video", "strides": [10, True]}]},
                             "sources[0].strides[1]: expects a whole number, got True")):
        assert expected in _error({**BASE, **patch})
    assert parse_config({**BASE, "split": {"val_fraction": 0}}).split.val_fraction == 0.0  # an int is a number


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path: Path, capsys):
    """PyYAML keeps the last of two equal keys: the output moved silently to the second one."""
    text = "version: 1\noutput: OUT\noutput: OUT2\nsources:\n  - {name: web, type: laion, path: IMGS}\n"
    path = _yaml_config(tmp_path, text)
    code, err = _cli(capsys, "check", str(path))
    assert code == 2
    assert err == f"error: {path}: line 3: key 'output' is given twice in one mapping (first on line 2); give it once\n"
    path.write_text(f"version: 1\noutput: {tmp_path / 'out'}\nsources:\n"
                    f"  - {{name: web, type: laion, path: {tmp_path / 'imgs'}, num_shards: 1, num_shards: 2}}\n")
    code, err = _cli(capsys, "build", str(path))
    assert code == 2 and "line 4: key 'num_shards' is given twice in one mapping (first on line 4)" in err
    # a merge key brings defaults that a mapping may override, as the YAML spec allows
    from uvd_pipeline.config import read_yaml

    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {num_shards: 1, enabled: true}\nsources:\n  - <<: *b\n    num_shards: 3\n")
    assert read_yaml(str(merged))["sources"][0] == {"num_shards": 3, "enabled": True}
    assert not (tmp_path / "out").exists()


LABELER = """version: 1
output: OUT
sources:
  - {name: e, type: pseudo_labeled, path: IMGS, task: edges, labeler: LABELER, num_shards: 1}
beam: {direct_num_workers: 1}
"""


@pytest.mark.parametrize("labeler, expected", [
    ("{name: canny, sigma: abc, sigmaa: 0.5}",
     ["sources[0].labeler.sigma: Input should be a valid number (got 'abc')",
      "sources[0].labeler.sigmaa: unknown field; allowed fields here: name, sigma"]),
    ("{name: canny, sigma: 1.5}", ["sources[0].labeler.sigma: Input should be less than or equal to 1 (got 1.5)"]),
    ("{name: canny, sigma: .nan}", ["sources[0].labeler.sigma: Input should be"]),
    ("{name: dpt}", ["sources[0].labeler.name: got 'dpt'; allowed: 'canny', 'sgbm' or 'mmpose'"]),
    ("{sigma: 0.5}", ["sources[0].labeler.name: required field is missing; allowed: 'canny', 'sgbm' or 'mmpose'"]),
])
def test_labeler_parameters_are_checked_before_the_build(tmp_path: Path, capsys, labeler, expected):
    """`sigma: abc` passed `check`, and the build exited 0 with every pair an `internal_error`;
    a misspelt parameter was ignored."""
    path = _yaml_config(tmp_path, LABELER.replace("LABELER", labeler))
    for argv in (("check", str(path)), ("build", str(path), "--no-tokenize")):
        code, err = _cli(capsys, *argv)
        assert code == 2 and all(line in err for line in expected), err
    assert not (tmp_path / "out").exists()


def test_labeler_parameters_of_each_labeler(tmp_path: Path):
    stereo = {"name": "s", "type": "stereo", "path": "kitti"}
    for labeler, expected in (
            ({"name": "sgbm", "block_size": 4}, "sources[0].labeler.block_size: must be odd"),
            ({"name": "sgbm", "num_disparities": 0}, "sources[0].labeler.num_disparities: Input should be greater"),
            ({"name": "sgbm", "num_disparities": True}, "sources[0].labeler.num_disparities: expects a whole number"),
            ({"name": "sgbm", "sigma": 0.3}, "sources[0].labeler.sigma: unknown field; allowed fields here: name, "
                                             "num_disparities, block_size")):
        assert expected in _error({**BASE, "sources": [{**stereo, "labeler": labeler}]})
    pose = {"name": "p", "type": "pseudo_labeled", "path": "imgs", "task": "pose"}
    assert "sources[0].labeler.score_threshold: Input should be less than or equal to 1" in _error(
        {**BASE, "sources": [{**pose, "labeler": {"name": "mmpose", "score_threshold": 2}}]})
    assert "sources[0].labeler.device: expects cpu, cuda or cuda:N, got 'gpu'" in _error(
        {**BASE, "sources": [{**pose, "labeler": {"name": "mmpose", "device": "gpu"}}]})


def test_labeler_specs_dump_as_written(tmp_path: Path):
    """The spec reaches the labeler, the lineage and the config hash as written (defaults are not
    added), so configs that were valid hash and build as before."""
    config = parse_config({**BASE, "sources": [
        {"name": "e", "type": "pseudo_labeled", "path": "imgs", "task": "edges", "labeler": {"name": "canny"}},
        {"name": "s", "type": "stereo", "path": "kitti", "labeler": {"name": "sgbm", "num_disparities": 64}}]})
    dumped = config.model_dump(mode="json")["sources"]
    assert dumped[0]["labeler"] == {"name": "canny"}
    assert dumped[1]["labeler"] == {"name": "sgbm", "num_disparities": 64}
    assert config.sources[0].labeler.sigma == 0.33 and config.sources[1].labeler.block_size == 5


def test_a_labeler_with_checked_parameters_builds(tmp_path: Path, capsys):
    """A sigma in range reaches the labeler: every pair becomes a sentence, no `internal_error`."""
    import json

    path = _yaml_config(tmp_path, LABELER.replace("LABELER", "{name: canny, sigma: 0.5}").replace(
        "num_shards: 1}", "num_shards: 1, pairs_per_sentence: 1}"))
    code, err = _cli(capsys, "build", str(path), "--no-tokenize")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sources"]["e"]["sentences"] == 3 and not (tmp_path / "out" / "rejects.jsonl").read_text()
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from transforms.annotations import canny_edges

    (tar_path,) = (tmp_path / "out" / "rendered" / "e").glob("*/*.tar")
    with tarfile.open(tar_path) as tar:
        pngs = {m.name: np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())))
                for m in tar if m.name.endswith(".png")}
    for name, image in pngs.items():
        if name.endswith(".00.png"):  # the target is Canny at the configured sigma, not the default's
            target = pngs[name.replace(".00.png", ".01.png")]
            assert np.array_equal(target, canny_edges(image, 0.5))
            assert not np.array_equal(target, canny_edges(image, 0.33))


SMALL_VQGAN = dict(resolution=256, num_channels=3, hidden_channels=8, channel_mult=[1, 1, 1, 1, 1], num_res_blocks=1,
                   z_channels=4, quantized_embed_dim=4, num_embeddings=16)


@pytest.mark.parametrize("change, size, expected", [
    ({"num_channels": 4}, 256, "it encodes images of 4 channels; the build renders RGB images (3 channels)"),
    ({"num_embeddings": 70_000}, 256,
     "its codebook holds 70000 codes; token shards store uint16 codes (at most 65536)"),
    ({"channel_mult": [1] * 6}, 272, "it downsamples by 32; image.size 272 is not a multiple of it: set image.size to "
                                     "a multiple of 32"),
])
def test_a_tokenizer_that_cannot_tokenize_this_build_fails_check_and_build(tmp_path: Path, capsys, change, size,
                                                                          expected):
    """Well-formed checkpoints that load but cannot encode this build's images: `check` said OK and
    the build rendered everything, then died in Tokenize with a traceback."""
    from tokenizer.checkpoint import save
    from tokenizer.config import VQGANConfig
    from tokenizer.model import VQGAN

    checkpoint = tmp_path / "tokenizer"
    save(VQGAN(VQGANConfig.from_dict({**SMALL_VQGAN, **change})), checkpoint)
    path = _yaml_config(tmp_path, OUTPUT_FILE + f"image: {{size: {size}}}\ntokenizer: {{compile: false}}\n")
    for command in ("check", "build"):
        code, err = _cli(capsys, command, str(path), "--set", f"tokenizer.checkpoint={checkpoint}")
        assert code == 2 and err.startswith(f"error: tokenizer.checkpoint: {checkpoint}: {expected}"), err
    assert not (tmp_path / "out").exists()  # nothing rendered
    save(VQGAN(VQGANConfig.from_dict(SMALL_VQGAN)), checkpoint)  # the same build with a tokenizer that fits
    code, err = _cli(capsys, "check", str(path), "--set", f"tokenizer.checkpoint={checkpoint}",
                     "--set", "image.size=256")
    assert code == 0, err


def test_decode_time_limit_reaches_the_renderers():
    """`image.decode_time_s` (a whole number of seconds in YAML is fine) is what the renderers get,
    and its default is the decoding module's."""
    from uvd_pipeline.image_decode import DEFAULT_DECODE_TIME_S
    from uvd_pipeline.render import RenderSettings

    config = parse_config({**BASE, "image": {"decode_time_s": 5}})
    assert RenderSettings.from_config(config).decode_time_s == 5.0
    assert RenderSettings.from_config(parse_config(BASE)).decode_time_s == DEFAULT_DECODE_TIME_S
    assert config.content_hash() != parse_config(BASE).content_hash()  # it decides rejects


@pytest.mark.parametrize("make", [
    lambda p: p.write_text("my notes"),
    lambda p: (p.mkdir(), (p / "thesis.tex").write_text("years of work")),
])
def test_sample_never_replaces_what_is_not_a_sample_corpus(tmp_path: Path, capsys, make):
    """`sample OUT` writes through a folder swap that deletes what was at OUT: a file or a folder of
    the user's own (`sample .`, `sample ~/data`) was moved aside and removed, exit 0."""
    from uvd_pipeline.cli import main

    target = tmp_path / "target"
    make(target)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for flags in ([], ["--force"]):
        assert main(["sample", str(target), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(target) in err and "not a sample corpus" in err
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("patch, expected, unwanted", [
    ({"sorces": BASE["sources"], "sources": None},
     ["sorces: unknown field; allowed fields here: version, output, seed, image, split, sources, dedup, ",
      "; did you mean sources?"], "sources: required field is missing"),
    ({"image": {"szie": 256}}, ["image.szie: unknown field; allowed fields here: size, ", "; did you mean size?"], None),
    ({"sources": [{"name": "web", "type": "laion", "pth": "data/laion"}]},
     ["sources[0].pth: unknown field; allowed fields here: ", "; did you mean path?"],
     "sources[0].path: required field is missing"),
    ({"beam": {"direct_num_workrs": 2}}, ["beam.direct_num_workrs: unknown field", "did you mean direct_num_workers?"],
     None),
    ({"sources": [{"name": "web", "type": "lion", "path": "p"}]},
     ["sources[0].type: got 'lion'; did you mean laion? It must be one of laion, imagenet, video"], None),
    ({"image": {"resize": "centre_crop"}},
     ["image.resize: got 'centre_crop'; did you mean 'center_crop'? allowed: 'squash', 'center_crop' or 'pad'"], None),
])
def test_a_misspelt_key_or_choice_names_the_likely_one(patch, expected, unwanted):
    """A typo is answered with the one field or choice it is close to (after the full list), and
    the field it was meant for is not reported missing besides."""
    message = _error({k: v for k, v in {**BASE, **patch}.items() if v is not None})
    assert all(part in message for part in expected), message
    assert unwanted is None or unwanted not in message
    assert "1 problem(s)" in message and message.count("did you mean") == 1


@pytest.mark.parametrize("text, expected", [
    ("output: out\nimage:\n\tsize: 256\n", ["c.yaml line 3, column 1: not valid YAML: found character '\\t'",
                                             "indent with spaces, not tabs", "\tsize: 256"]),
    ("version: 1\noutput out\nimage:\n  size: 256\n", ["c.yaml line 2, column 1: not valid YAML: could not find "
                                                       "expected ':' "
                                           "after the key (write `key: value`)", "\n  output out\n  ^"]),
    ("output: out\nsources:\n  - name: web\n      path: p\n", ["c.yaml line 4, column 11: not valid YAML: mapping "
                                                             "values are not allowed here", "      path: p"]),
])
def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path, capsys, text, expected):
    """PyYAML's message named the file `<unicode string>` and put the position on a third line."""
    from uvd_pipeline.cli import main

    (tmp_path / "c.yaml").write_text(text)
    assert main(["check", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert all(part in err for part in expected) and "<unicode string>" not in err, err


def test_environment_variables_in_paths_are_expanded_like_a_tilde(tmp_path: Path, monkeypatch):
    """`~/data` was expanded but `$HOME/data` became `<config folder>/$HOME/data`, reported later as
    'not a directory'; an unset variable is named with its field before any work."""
    monkeypatch.setenv("UVD_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("UVD_UNSET", raising=False)
    config = parse_config({**BASE, "output": "${UVD_DATA}/../out",
                           "sources": [{"name": "web", "type": "laion", "path": "$UVD_DATA/laion"}]}, "/base")
    assert config.sources[0].path == str(tmp_path / "data" / "laion") and config.output == str(tmp_path / "out")
    message = _error({**BASE, "sources": [{"name": "web", "type": "laion", "path": "$UVD_UNSET/laion"}]})
    assert message == ("config: sources[0].path: $UVD_UNSET in '$UVD_UNSET/laion' is not set in the environment; "
                       "set it, or write the path out")


@pytest.mark.parametrize("make, expected", [
    (lambda root: None, "sources[0].path (web): {path} does not exist (relative paths in a config are taken "
                        "from the config file's folder)"),
    (lambda root: (root / "data").mkdir() or (root / "data" / "laion").write_text("x"),
     "sources[0].path (web): {path} is a file; give the folder that holds the source's files"),
])
def test_a_source_path_that_is_missing_or_a_file_says_so(tmp_path: Path, capsys, make, expected):
    """Both read 'not a directory: PATH', which for a typo'd folder hides that it does not exist."""
    make(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "tokenizer": {"enabled": False}}))
    code, err = _cli(capsys, "check", str(path))
    assert code == 2 and err == "error: " + expected.format(path=tmp_path / "data" / "laion") + "\n"


@pytest.mark.parametrize("written, shown, hint", [
    ("imgs", "{cfg}/imgs", " (relative paths in a config are taken from the config file's folder)"),
    ("{cfg}/imgs", "{cfg}/imgs", ""),
    ("~/uvd-no-such-folder/imgs", "{home}/uvd-no-such-folder/imgs", ""),
    ("$UVD_TEST_ROOT/imgs", "{cfg}/imgs", ""),
    ("C:\\data\\imgs", "{cfg}/C:\\data\\imgs", " ('C:\\\\data\\\\imgs' looks like a Windows path; this runs on "
     "POSIX paths: give the folder as this machine names it, such as /mnt/c/data under WSL)"),
    ("D:/data/imgs", "{cfg}/D:/data/imgs", " ('D:/data/imgs' looks like a Windows path; this runs on POSIX paths: "
     "give the folder as this machine names it, such as /mnt/c/data under WSL)"),
    # rev56b LOW-4: a one-letter "scheme" is a drive letter, not an fsspec URL
    ("C://data/imgs", "{cfg}/C:/data/imgs", " ('C://data/imgs' looks like a Windows path; this runs on POSIX paths: "
     "give the folder as this machine names it, such as /mnt/c/data under WSL)"),
])
def test_a_missing_source_path_is_hinted_by_how_it_was_written(tmp_path: Path, capsys, monkeypatch, written, shown,
                                                                hint):
    """A missing `~` or absolute path got the hint "relative paths in a config are taken from the
    config file's folder"; a Windows path was read as a relative name, `<config folder>/C:\\data\\imgs`."""
    monkeypatch.setenv("UVD_TEST_ROOT", str(tmp_path))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "sources": [{"name": "web", "type": "laion",
                                                         "path": written.format(cfg=tmp_path)}],
                                    "tokenizer": {"enabled": False}}))
    code, err = _cli(capsys, "check", str(path))
    expected = shown.format(cfg=tmp_path, home=os.path.expanduser("~")) + " does not exist" + hint
    assert code == 2 and err == f"error: sources[0].path (web): {expected}\n", err


@pytest.mark.parametrize("text, expected", [
    ("", "c.yaml: the file is empty; a config is a mapping of fields (version, output, sources, ...), as in "
         "configs/sample.yaml"),
    ("# only a comment\n", "c.yaml: the file is empty"),
    ("- output: out\n", "c.yaml: the top level is a list; a config is a mapping of fields (version, output, "
                        "sources, ...), as in configs/sample.yaml"),
    ("output: out\nsources:\n  web: {type: laion, path: p}\n",
     "sources: expects a list (entries starting with '- '), got a mapping"),
    ("output: out\nsources:\n  - {name: web, type: laion, path: p}\nimage:\n",
     "image: expects a section of fields (size, resize, ...), got nothing (the key has no value)"),
    ("output: out\nsources:\n  - {name: web, type: laion, path: p}\nimage: 256\n",
     "image: expects a section of fields (size, resize, ...), got 256"),
    ("output:\nsources:\n  - {name: web, type: laion, path: p}\n",
     "output: expects text, got nothing (the key has no value)"),
    ("output: out\nsources:\n  - data/laion\n",
     "sources[0]: expects a section of fields (name, type, path, ...), got 'data/laion'"),
    ("output: out\nsources:\n  - {name: web, type: laion, path: p}\nmixture: {sources: {nope: 1}}\n",
     "\n  mixture.sources.nope: no source is named 'nope'; sources are web\n"),
])
def test_a_config_of_the_wrong_shape_says_what_shape_is_wanted(tmp_path: Path, capsys, text, expected):
    """'expected a mapping at the top level, got NoneType' for an empty file, pydantic's 'valid
    dictionary or instance of ImageConfig' and 'valid tuple' for a section or list of the wrong shape."""
    (tmp_path / "c.yaml").write_text(text)
    code, err = _cli(capsys, "check", str(tmp_path / "c.yaml"))
    assert code == 2 and expected in err and "NoneType" not in err and "instance of" not in err, err
    assert "(top level)" not in err and "extract fields" not in err


def test_retokenize_of_an_output_never_built_is_refused_before_the_lock(tmp_path: Path, tiny_tokenizer: Path,
                                                                       capsys):
    """`build --retokenize` of a mistyped or never-built output created the folder and its lock,
    started the runner, and only then said it had no rendered shards."""
    config = {**BASE, "output": str(tmp_path / "never"), "tokenizer": {"checkpoint": str(tiny_tokenizer)}}
    (tmp_path / "data" / "laion").mkdir(parents=True)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    code, err = _cli(capsys, "build", str(path), "--retokenize")
    assert code == 2 and err == (f"error: --retokenize: {tmp_path / 'never'} does not exist; build it first "
                                 "(without --retokenize)\n")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("source, added, defaults", [
    ({"type": "laion", "path": "/data/web"}, {"image_column": "image", "caption_column": "caption"},
     {"image_column": None, "caption_column": None}),
    ({"type": "annotated_video", "path": "/data/jhmdb", "layout": "jhmdb"}, {"official_split": 2},
     {"official_split": 1}),
    ({"type": "segmentation", "path": "/data/voc", "layout": "voc"}, {"tasks": ["segmentation", "detection"]},
     {"tasks": ["segmentation"]}),
])
def test_fields_added_later_leave_the_saved_config_as_it_was_at_their_default(source, added, defaults):
    """A source's fields added after outputs were built (laion's `image_column` and
    `caption_column`, annotated video's `official_split`, segmentation's `tasks`) are left out of
    the saved config while at their default: a build record written before them matches the config
    again (`build._same_config`), so an earlier render revision's output is refused naming
    --replace-changed, not told it holds a different configuration (the two laion fields had made
    every laion output read as one; `tasks`, a tuple compared with the saved JSON's list, every
    segmentation output). Set, each is saved and changes the hash."""
    from uvd_pipeline.build import _same_config

    def config(**fields):
        return parse_config({"version": 1, "output": "/out", "sources": [{"name": "s", **source, **fields}]})

    plain = config()
    saved = plain.model_dump(mode="json")
    assert not set(added) & set(saved["sources"][0])  # the record an older version wrote had none of them
    assert _same_config(saved, config(**defaults).model_dump(mode="json"))
    assert config(**defaults).content_hash() == plain.content_hash()
    for name, value in added.items():
        changed = config(**{name: value})
        assert changed.model_dump(mode="json")["sources"][0][name] == value
        assert changed.content_hash() != plain.content_hash()


def test_a_number_written_as_text_names_the_number_to_write(tmp_path: Path, capsys):
    """`size: "256"` (quoted) and an unquoted `1e9` (YAML 1.1 reads an exponent without a dot as
    text) were "Input should be a valid integer (got '256')": the field, not the fix. The message
    says the value is text and which number to write; a word is still no number."""
    text = ('version: 1\noutput: OUT\nseed: 1e3\nimage: {size: "256", max_pixels: 1e9}\nsplit: {val_fraction: "0.1"}\n'
            'sources:\n  - {name: web, type: laion, path: IMGS}\n')
    code, err = _cli(capsys, "check", str(_yaml_config(tmp_path, text)), "--set", "tokenizer.batch_size=many")
    assert code == 2 and "Traceback" not in err
    for field, got, written in (("seed", "1e3", "1000"), ("image.size", "256", "256"),
                                ("image.max_pixels", "1e9", "1000000000"), ("split.val_fraction", "0.1", "0.1")):
        number = "a number" if field == "split.val_fraction" else "a whole number"
        assert f"  {field}: expects {number}, got the text '{got}'; write {written} without quotes" in err, err
    assert "tokenizer.batch_size: Input should be a valid integer (got 'many')" in err


def test_the_number_a_text_hint_names_is_read_as_that_number(tmp_path: Path, capsys):
    """`val_fraction: 1e-5` (text to YAML 1.1) was hinted "write 1e-05 without quotes", which PyYAML
    reads as text again: following the hint gave the same error. The hinted spellings are written
    into the config in place of the texts, and `check` then reads each as the number it meant."""
    import re

    texts = {"split.val_fraction": "1e-5", "mixture.groups.single_images": "2e20",
             "mixture.groups.image_sequences": "5E-324"}
    text = ("version: 1\noutput: OUT\nsplit: {val_fraction: 1e-5}\n"
            "mixture: {groups: {single_images: 2e20, image_sequences: 5E-324}}\n"
            "sources:\n  - {name: web, type: laion, path: IMGS}\n")
    path = _yaml_config(tmp_path, text)
    code, err = _cli(capsys, "check", str(path))
    hints = dict(re.findall(r"  ([\w.]+): expects a number, got the text '[^']*'; write (\S+) without quotes", err))
    assert code == 2 and set(hints) == set(texts), err
    followed = path.read_text()
    for field, written in texts.items():
        followed = followed.replace(f": {written}", f": {hints[field]}", 1)
    path.write_text(followed)
    loaded = yaml.safe_load(followed)
    assert (loaded["split"]["val_fraction"], loaded["mixture"]["groups"]) == (
        1e-5, {"single_images": 2e20, "image_sequences": 5e-324})
    code, err = _cli(capsys, "check", str(path))
    assert code == 0 and "expects a number" not in err, err


def test_an_output_path_with_bytes_that_are_not_utf8_names_the_field_and_the_fix(tmp_path: Path, capsys):
    """`--output` naming a folder whose name a latin-1 system wrote (`caf\\xe9`): refused with
    pydantic's own words ("Input should be a valid string, unable to parse raw data as a unicode
    string"), naming neither the cause nor a fix. It names the field, the name as readable text and
    what to do, and builds nothing."""
    from uvd_pipeline.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    latin1 = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    assert main(["build", str(path), "--output", latin1]) == 2
    err = capsys.readouterr().err
    assert f"output: {tmp_path}/caf\\xe9 holds bytes that are not UTF-8" in err, err
    assert "rename the folder to a UTF-8 name" in err and "unable to parse raw data" not in err
    assert not os.path.exists(os.fsencode(latin1))
    # `--set output=...`, bare or quoted as the YAML error advised: "is not a YAML value; quote text"
    for given in (f"output={latin1}", f'output="{latin1}"', f"sources.0.path='{latin1}'"):
        assert main(["build", str(path), "--set", given]) == 2
        err = capsys.readouterr().err
        field = given.partition("=")[0]
        assert f"--set {field}: {tmp_path}/caf\\xe9 holds bytes that are not UTF-8" in err, err
        assert "rename the folder to a UTF-8 name" in err and "YAML" not in err.replace("JSON, YAML and Arrow", "")
    assert not os.path.exists(os.fsencode(latin1))


@pytest.mark.parametrize("section,value,meant", [
    ("tokenizer", {"device": "gpu"}, "cuda"),
    ("tokenizer", {"device": "GPU"}, "cuda"),
    ("tokenizer", {"precision": "float32"}, "fp32"),
    ("tokenizer", {"precision": "float16"}, "fp16"),
    ("tokenizer", {"precision": "bfloat16"}, "bf16"),
])
def test_a_choice_by_another_common_name_is_told_its_name_here(section, value, meant):
    """`device: gpu` is a newcomer's word for CUDA, and `float32` is trainer.fit's and torch's name
    of fp32: the message names the choice meant, not the nearest spelling (`gpu` is one letter off `cpu`)."""
    field, given = next(iter(value.items()))
    message = _error({**BASE, section: value})
    assert f"{section}.{field}: got {given!r}; did you mean {meant!r}? allowed:" in message


def test_the_summary_tells_train_and_val_shard_counts_apart():
    """`check` printed `[4 shards/split]` for a source of 4 train shards and 1 val shard."""
    from uvd_pipeline.config import config_summary

    source = {"name": "web", "type": "laion", "path": "data/laion", "num_shards": 4, "num_val_shards": 1}
    summary = config_summary(parse_config({**BASE, "sources": [source]}))
    assert summary.splitlines()[2].endswith("data/laion [4 train + 1 val shards]")


def test_run_only_fields_leave_the_saved_config_the_same():
    """`layout_check` and `index_memory_mb` shape no output bytes (`RUN_ONLY_FIELDS`, not in the
    hash): an earlier render revision's output rerun with `layout_check: false` is refused naming
    --replace-changed, not told it holds a different configuration (`build._same_config`)."""
    from uvd_pipeline.build import _same_config

    def config(**fields):
        return parse_config({"version": 1, "output": "/out", "sources": [
            {"name": "s", "type": "coco", "path": "/data/coco", **fields}]}).model_dump(mode="json")

    saved = config()
    assert _same_config(saved, config(layout_check=False, index_memory_mb=1024))
    assert _same_config(config(layout_check=False), saved)
    assert not _same_config(saved, config(split="train2017"))


def test_the_paths_readme_says_are_taken_from_the_current_folder_are(tmp_path: Path, monkeypatch):
    """README said `build --output` was "the one path taken from the current folder"; `build
    --tokenizer` is too (a flag's path, as a shell user means it), while `--set` is read as the
    file's. Its sentence must name the flags that behave so, and they must."""
    import re

    from uvd_pipeline.cli import build_overrides, parser

    (tmp_path / "configs").mkdir()
    config_file = tmp_path / "configs" / "c.yaml"
    config_file.write_text(yaml.safe_dump({**BASE, "tokenizer": {"checkpoint": "tok_in_file"}}))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sentence = " ".join(readme.split("Relative paths are relative to the config file", 1)[1].split(";")[1].split())
    named = sorted(re.findall(r"`build (--[a-z-]+)`", sentence))
    assert named == ["--output", "--tokenizer"], sentence
    args = parser().parse_args(["build", str(config_file), "--output", "out", "--tokenizer", "tok"])
    config = load_config(str(config_file), build_overrides(args))
    assert config.output == str(tmp_path / "work" / "out")
    assert config.tokenizer.checkpoint == str(tmp_path / "work" / "tok")
    args = parser().parse_args(["build", str(config_file), "--set", "tokenizer.checkpoint=tok"])
    assert load_config(str(config_file), build_overrides(args)).tokenizer.checkpoint == str(tmp_path / "configs" / "tok")


@pytest.mark.parametrize("written", ["C:\\data\\out", "D:/data/out", "\\\\server\\share\\out", "C://data/out"])
def test_a_windows_output_is_hinted_as_a_windows_source_path_is(tmp_path: Path, capsys, written):
    """stop 56 #5: `output: C:\\data\\out` passed `check` (a Windows `path:` is refused with a hint)
    and the build wrote into `<config folder>/C:\\data\\out`, a folder named with backslashes. Both
    refuse it now, naming the field and the hint, and write nothing. rev56b LOW-4: `C://data/out`
    was taken for an fsspec URL (scheme `C`) and slipped past the hint."""
    path = _yaml_config(tmp_path, OUTPUT_FILE.replace("output: OUT", f"output: {written}"))
    expected = (f"c.yaml: output: {written!r} looks like a Windows path; this runs on POSIX paths: give the folder "
                "as this machine names it, such as /mnt/c/data under WSL\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in ("check", "build"):
        code, err = _cli(capsys, command, str(path))
        assert code == 2 and err.startswith("error: ") and err.endswith(expected) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
