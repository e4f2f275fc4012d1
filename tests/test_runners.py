"""The build graph for remote runners: it must construct, pickle every DoFn and serialise to the
portable pipeline proto with Dataflow, Flink and Spark options, and only the tokenize step may
carry the GPU hint. (Those runners cannot execute here: their job servers are fetched at launch.)
The path Flink and Spark take for Python, Beam's portable job service with SDK workers started by
an external worker pool, does run here. The Dask runner: `test_dask.py`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import (FlinkRunnerOptions, GoogleCloudOptions, PortableOptions,
                                                  SetupOptions, SparkRunnerOptions, WorkerOptions)

from conftest import REPO, write_config
from uvd_pipeline.build import pipeline_options
from uvd_pipeline.config import load_config
from uvd_pipeline.graph import build_graph, list_units

GPU = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
RUNNERS = {
    "DataflowRunner": ["--project=uvd-demo", "--region=europe-west4", "--temp_location=gs://uvd-demo/tmp",
                       f"--setup_file={REPO / 'pyproject.toml'}", "--sdk_container_image=uvd:latest",
                       "--machine_type=n2-standard-8", "--max_num_workers=64"],
    "FlinkRunner": ["--flink_master=flink-host:8081", "--environment_type=DOCKER",
                    "--environment_config=uvd:latest", "--parallelism=32"],
    "SparkRunner": ["--spark_master_url=spark://spark-host:7077", "--environment_type=DOCKER",
                    "--environment_config=uvd:latest"],
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_graph_serialises_for_remote_runners(runner: str, mini_corpus: Path, tiny_tokenizer: Path, tmp_path: Path):
    path = write_config(tmp_path / "c.yaml", mini_corpus, tmp_path / "out", tiny_tokenizer, runner=runner,
                        options=RUNNERS[runner])
    text = path.read_text().replace("threads: 1", f"threads: 1\n  accelerator: '{GPU}'")
    path.write_text(text)
    config = load_config(str(path))
    options = pipeline_options(config)
    assert options.get_all_options()["runner"] == runner
    if runner == "DataflowRunner":
        assert options.view_as(GoogleCloudOptions).project == "uvd-demo"
        assert options.view_as(SetupOptions).setup_file.endswith("pyproject.toml")
        assert options.view_as(WorkerOptions).max_num_workers == 64
    elif runner == "FlinkRunner":
        assert options.view_as(FlinkRunnerOptions).flink_master == "flink-host:8081"
        assert options.view_as(PortableOptions).environment_type == "DOCKER"
    else:
        assert options.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-host:7077"

    pipeline = beam.Pipeline(options=options)  # constructed, never run
    build_graph(pipeline, config, {}, list_units(config))
    proto = pipeline.to_runner_api()  # pickles every DoFn and coder
    names = {t.unique_name: t for t in proto.components.transforms.values()}
    assert any(n.endswith("Write shards") for n in names)
    environments = proto.components.environments
    with_gpu = sorted(n for n, t in names.items() if t.environment_id and GPU.encode() in
                      environments[t.environment_id].resource_hints.values())
    # the hint sits on the tokenize step's environment (where remote runners read it), nowhere else
    assert with_gpu and all("Tokenize" in n for n in with_gpu), with_gpu
    assert any(n.endswith("/Render") for n in names)
    assert not any(n.endswith("/Render") for n in with_gpu)
    # the proto reads back into a pipeline (what a job service does first)
    again = beam.Pipeline.from_runner_api(proto, pipeline.runner, options)
    assert again.to_runner_api().components.transforms.keys() == proto.components.transforms.keys()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_portable_runner_with_external_worker_pool(mini_corpus, mini_build, tmp_path):
    """How Flink and Spark run Python: the job goes through Beam's portable job service (here the
    in-process one) to SDK workers that an outside worker pool starts (`--environment_type=EXTERNAL`)."""
    import os
    import subprocess
    import sys
    import time

    from conftest import shard_digests
    from uvd_pipeline.build import run_build

    reference_config, reference = mini_build
    port = _free_port()
    # the pool starts each SDK worker as `python -c ...`: this environment's python
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    log = (tmp_path / "worker_pool.log").open("w")  # a file: a pipe nobody reads would fill and block
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import socket

        deadline = time.time() + 60
        while True:  # the pool listens once its gRPC server is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert pool.poll() is None and time.time() < deadline, (tmp_path / "worker_pool.log").read_text()
                time.sleep(0.2)
        out = tmp_path / "out"
        path = write_config(tmp_path / "c.yaml", mini_corpus, out, reference_config.tokenizer.checkpoint,
                            runner="PortableRunner",
                            options=["--job_endpoint=embed", "--environment_type=EXTERNAL",
                                     f"--environment_config=localhost:{port}"])
        summary = run_build(load_config(str(path))).summary
    finally:
        pool.kill()
        pool.wait()
        log.close()
    assert shard_digests(out) == shard_digests(Path(reference_config.output))
    assert summary["totals"] == reference["totals"]
    assert summary["run"]["metrics"]["reported"] is True
    # the SDK workers' counters come back through the job service
    assert summary["run"]["counters"]["web.sentences_written"] == reference["sources"]["web"]["sentences"]


def _readme_runner_commands() -> list[list[str]]:
    """The `build` commands of the README's "Dataflow, Flink, Spark" section, as argv lists."""
    import shlex

    text = (REPO / "README.md").read_text().split("### Dataflow, Flink, Spark", 1)[1]
    block = text.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line.replace("$PWD", str(REPO)))[3:] for line in block.splitlines()
            if line.startswith("python -m uvd_pipeline build")]


def test_readme_cluster_commands_name_the_runner_they_run_on(tmp_path: Path):
    """The README's Dataflow/Flink/Spark commands gave the runner as `--beam-option=--runner=X`:
    the build read its runner from `beam.runner` alone (DirectRunner), ran locally and exited 0.
    Each command must resolve to the runner it names, with no local runner object made."""
    from uvd_pipeline.build import check_runner, make_runner
    from uvd_pipeline.cli import build_overrides, parser

    config_file = _empty_laion_config(tmp_path)
    commands = _readme_runner_commands()
    named = [next(word.split("=")[-1] for word in argv if word.endswith("Runner")) for argv in commands]
    assert sorted(named) == ["DataflowRunner", "FlinkRunner", "SparkRunner"]
    for argv, runner in zip(commands, named):
        assert argv[:2] == ["build", "my.yaml"]
        args = parser().parse_args([argv[0], str(config_file), *argv[2:]])
        config = load_config(str(config_file), build_overrides(args))
        options = pipeline_options(config)
        assert (config.beam.runner, options.get_all_options()["runner"]) == (runner, runner)
        assert make_runner(config, options) is None  # Beam finds it by name; no local runner
        check_runner(config)  # the class loads and takes these options (Dataflow's project, region, gs:// paths)
        if runner == "FlinkRunner":
            assert options.view_as(FlinkRunnerOptions).flink_master == "flink-host:8081"
        if runner == "SparkRunner":
            assert options.view_as(SparkRunnerOptions).spark_master_url == "spark://spark-host:7077"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, written, name", [
    (["--runner=FlinkRunner", "--flink_master=flink-host:8081"], "--runner=FlinkRunner", "FlinkRunner"),
    (["--project=p", "--runner", "DataflowRunner"], "--runner DataflowRunner", "DataflowRunner"),
])
def test_runner_as_a_beam_flag_is_refused_in_the_config(flags: list[str], written: str, name: str):
    """`beam.options: [--runner=FlinkRunner]` went unread: the local runner ran the build."""
    from uvd_pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config({"output": "out", "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
                      "beam": {"options": flags}})
    message = str(caught.value)
    assert f"beam.options: {written}: name the runner as beam.runner" in message
    assert f"--set beam.runner={name}" in message and f"--runner {name}" in message


SPACED = ("beam.options: '--project my-project': a flag and its value apart by a space in one option are read by "
          "Beam as no flag at all and dropped in silence; write '--project=my-project'")


def _empty_laion_config(tmp_path: Path) -> Path:
    """`my.yaml`: one laion source over an empty `imgs/`, tokenizer off, output `out/` (unwritten)."""
    (tmp_path / "imgs").mkdir()
    config_file = tmp_path / "my.yaml"
    config_file.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"),
                                           "tokenizer": {"enabled": False},
                                           "sources": [{"name": "web", "type": "laion", "path": "imgs"}]}))
    return config_file


def _refused_in_config_and_on_the_command_line(flags: list[str], refusal: str, tmp_path: Path, capsys) -> str:
    """Beam options `flags` refused by the config's check (`refusal`) and by `build --beam-option`
    (exit 2): the command's stderr."""
    from uvd_pipeline.cli import main
    from uvd_pipeline.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=re.escape(refusal)):
        parse_config({"output": "out", "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
                      "beam": {"options": flags}})
    config_file = _empty_laion_config(tmp_path)
    assert main(["build", str(config_file), *(f"--beam-option={flag}" for flag in flags)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flags, refusal, cli_refusal", [
    (["--runner FlinkRunner", "--flink_master=flink-host:8081"],
     "beam.options: --runner FlinkRunner: name the runner as beam.runner (runner: FlinkRunner",
     "error: --beam-option=--runner FlinkRunner: name the runner with --runner FlinkRunner (or --set "),
    (["--project my-project", "--region=us-central1"], SPACED, SPACED),
    (["--temp_location\tgs://bucket/tmp"], "write '--temp_location=gs://bucket/tmp'",
     "write '--temp_location=gs://bucket/tmp'"),
])
def test_a_flag_and_its_value_in_one_option_apart_by_a_space_are_refused(flags: list[str], refusal: str,
                                                                          cli_refusal: str, tmp_path: Path, capsys):
    """rev55b L1: `beam.options: ["--runner FlinkRunner"]` (or `--beam-option="--runner FlinkRunner"`)
    was taken, Beam's parser found no such flag and dropped it, and the build ran locally, exit 0;
    any flag written so was lost alike (Beam read no project). Each is refused, naming the fix."""
    from apache_beam.options.pipeline_options import PipelineOptions

    assert "runner" not in PipelineOptions(flags[:1]).get_all_options(drop_default=True)  # what Beam made of it
    assert "project" not in PipelineOptions(flags[:1]).get_all_options(drop_default=True)
    err = _refused_in_config_and_on_the_command_line(flags, refusal, tmp_path, capsys)
    assert err.startswith("error: ") and cli_refusal in err, err
    assert not (tmp_path / "out").exists()


def test_runner_as_a_beam_option_flag_is_refused_before_the_build(tmp_path: Path, capsys):
    """`build --beam-option=--runner=FlinkRunner` ran the build locally and exited 0."""
    from uvd_pipeline.cli import main

    config_file = _empty_laion_config(tmp_path)
    code = main(["build", str(config_file), "--beam-option=--runner=FlinkRunner",
                 "--beam-option=--flink_master=flink-host:8081"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --beam-option=--runner=FlinkRunner: name the runner with --runner FlinkRunner "
                          "(or --set beam.runner=FlinkRunner)"), err
    assert not (tmp_path / "out").exists()


def test_check_of_a_dataflow_build_asks_cloud_storage_nothing(tmp_path: Path, capsys, monkeypatch):
    """rev55b L2: `check` of a Dataflow config without --temp_location/--staging_location ran Beam's
    validator, which made (or looked up) Dataflow's default bucket through the GCS client, and with
    one it asked the bucket's soft-delete policy: requests, one of them creating a bucket, from a
    read-only check. The GCS client (apache-beam[gcp], not installed here) is stood in for by a
    module recording each call: none is made now, and the absence is said in a note; without the
    client the absence is refused as Beam refuses it."""
    import sys
    import types

    from uvd_pipeline.cli import main

    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "imgs" / "a.png")

    def check(*options: str) -> int:
        config_file = tmp_path / "my.yaml"
        config_file.write_text(yaml.safe_dump({
            "version": 1, "output": str(tmp_path / "out"), "tokenizer": {"enabled": False},
            "beam": {"runner": "DataflowRunner", "options": ["--project=my-project", "--region=us-east1", *options]},
            "sources": [{"name": "web", "type": "laion", "path": "imgs"}]}))
        return main(["check", str(config_file)])

    assert check() == 2  # no GCS client: no default bucket, as Beam says
    assert ("Missing GCS path option: temp_location; Missing GCS path option: staging_location"
            in capsys.readouterr().err)

    calls = []
    gcsio = types.ModuleType("apache_beam.io.gcp.gcsio")
    gcsio.get_or_create_default_gcs_bucket = lambda options: calls.append("create default bucket") or types.SimpleNamespace(
        id="dataflow-staging-us-east1-123")

    class GcsIO:
        def is_soft_delete_enabled(self, path):
            calls.append(f"soft delete of {path}")
            return False

    gcsio.GcsIO = GcsIO
    monkeypatch.setitem(sys.modules, "apache_beam.io.gcp.gcsio", gcsio)
    assert check() == 0
    out = capsys.readouterr().out
    assert ("note: beam.options give no --temp_location or --staging_location: DataflowRunner makes (or reuses) its "
            "default bucket gs://dataflow-staging-<region>-<project number> when the build starts") in out
    assert check("--temp_location=gs://my-bucket/tmp") == 0
    assert "note: beam.options give no" not in capsys.readouterr().out
    assert check("--temp_location=/tmp/x") == 2
    assert ("error: beam.options: DataflowRunner refuses them: Invalid GCS path (/tmp/x), given for the option: "
            "temp_location; give each") in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "out").exists()


def test_options_a_runner_refuses_are_one_error_line_before_anything_is_written(tmp_path: Path, capsys):
    """`build --runner DataflowRunner` without its project and region wrote build.json, then died
    in Beam's 25-line "Pipeline has validations errors" traceback, exit 1."""
    from uvd_pipeline.cli import main

    config_file = _empty_laion_config(tmp_path)
    code = main(["build", str(config_file), "--runner", "DataflowRunner", "--beam-option=--temp_location=gs://b/tmp",
                 "--beam-option=--region=europe-west4"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: beam.options: DataflowRunner refuses them: ") and "Invalid GCS bucket (gs://b/tmp)" in err
    assert "Missing required option: project;" in err and "region" not in err.split("project")[1], err
    assert err.rstrip().endswith("give each as --beam-option=--NAME=VALUE or in beam.options")
    assert not (tmp_path / "out").exists()


PACKED = ("beam.options: '--project=my-project --region=us-central1': 2 flags in one option ('--project=my-project', "
          "then '--region=us-central1'): Beam reads the rest as the first one's value and never sees them; give one "
          "flag per option (one list item or one --beam-option each)")


@pytest.mark.parametrize("flags, refusal, cli_refusal", [
    (["--region=us-central1 --runner=FlinkRunner"],
     "beam.options: --region=us-central1 --runner=FlinkRunner: name the runner as beam.runner (runner: FlinkRunner",
     "error: --beam-option=--region=us-central1 --runner=FlinkRunner: name the runner with --runner FlinkRunner"),
    (["--project=my-project --region=us-central1"], PACKED, PACKED),
    (["--flink_master=flink-host:8081 --parallelism=4 --max_parallelism=8"],
     "3 flags in one option ('--flink_master=flink-host:8081', then '--parallelism=4', '--max_parallelism=8')",
     "3 flags in one option ('--flink_master=flink-host:8081', then '--parallelism=4', '--max_parallelism=8')"),
])
def test_two_flags_in_one_option_are_refused(flags: list[str], refusal: str, cli_refusal: str, tmp_path: Path,
                                             capsys):
    """rg55 (rev55g MED-2): `--beam-option="--region=us-central1 --runner=FlinkRunner"` (one shell-quoted
    item) was taken: Beam read the region as `us-central1 --runner=FlinkRunner`, the runner stayed
    DirectRunner and the build ran locally. Such an item is refused, a --runner in it named as one."""
    from apache_beam.options.pipeline_options import PipelineOptions

    read = PipelineOptions(flags).get_all_options(drop_default=True)  # what Beam makes of it: one flag
    first, _, value = flags[0].split()[0].partition("=")
    assert read[first.removeprefix("--")] == flags[0].partition("=")[2] != value
    err = _refused_in_config_and_on_the_command_line(flags, refusal, tmp_path, capsys)
    assert err.startswith("error: ") and cli_refusal in err and err.count("error:") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_value_with_spaces_but_no_flag_in_it_is_kept():
    """One flag per option does not refuse a value holding spaces (JSON after `=`): Beam reads it whole."""
    from uvd_pipeline.config import parse_config
    from uvd_pipeline.config_beam import runner_flag

    flags = ['--environment_config={"os": "linux", "command": "/opt/apache/beam/boot"}', "--labels=team=vision"]
    config = parse_config({"output": "out", "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
                           "beam": {"runner": "PortableRunner", "options": flags}})
    assert config.beam.options == tuple(flags) and runner_flag(flags) is None
    assert pipeline_options(config).get_all_options()["environment_config"] == flags[0].partition("=")[2]


@pytest.mark.parametrize("flag", [
    "--environment_config=python -m apache_beam.runners.worker.sdk_worker_main --logging_level=DEBUG",
    '--environment_config={"command": "/opt/apache/beam/boot --worker_pool"}',
    "--environment_options=process_command=/opt/apache/beam/boot --x",
    "--job_server_jvm_properties=-Xmx4g --add-opens=java.base/java.nio=ALL-UNNAMED",
])
def test_a_value_holding_its_own_dash_dash_words_reaches_beam_whole(flag: str):
    """rev55j LOW-3: a later `--word` in an item was refused as a second flag, though a SUBPROCESS_SDK
    environment_config is a command line (Beam runs it with shell=True), a PROCESS one a JSON command,
    and a JVM property starts with `--`. A word is a second flag only where Beam's parser knows it
    (`--project=p --region=r`, still refused above), and never inside a command-valued flag."""
    from uvd_pipeline.config import parse_config

    config = parse_config({"output": "out", "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
                           "beam": {"runner": "PortableRunner", "options": [flag]}})
    name, _, value = flag.partition("=")
    assert config.beam.options == (flag,)
    assert pipeline_options(config).get_all_options()[name.removeprefix("--")] in (value, [value])


@pytest.mark.parametrize("flags, refusal", [
    (["--runne=DataflowRunner"], "beam.options: '--runne=DataflowRunner': Beam knows no flag --runne (did you mean "
                                 "--runner? name the runner as beam.runner"),
    (["--region=europe-west4", "--temp_locaton=gs://bucket/tmp"],
     "beam.options: '--temp_locaton=gs://bucket/tmp': Beam knows no flag --temp_locaton (did you mean "
     "--temp_location?); DirectRunner parses the options with Beam's own parser, which sets a flag it does not "
     "know aside (a warning line in the log), and the build would run without it"),
])
def test_a_flag_beam_does_not_know_is_refused_naming_the_closest(flags: list[str], refusal: str, tmp_path: Path,
                                                                 capsys):
    """stop 56 #4: `--beam-option=--runne=DataflowRunner` (a typo of a flag Beam knows) was set aside by
    the local runner's parser (a warning line) and the build ran locally, exit 0. Refused now before
    the build, in `check` and on the command line, naming the closest flag Beam knows."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from uvd_pipeline.build import check_before_build
    from uvd_pipeline.cli import main
    from uvd_pipeline.config import ConfigError, parse_config

    read = PipelineOptions(flags).get_all_options(drop_default=True)  # what Beam makes of it: nothing
    assert not {"runne", "runner", "temp_locaton", "temp_location"} & read.keys()
    config = parse_config({"output": str(tmp_path / "out"), "sources": [{"name": "web", "type": "laion",
                                                                          "path": "imgs"}], "beam": {"options": flags}})
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        check_before_build(config)
    config_file = _empty_laion_config(tmp_path)
    assert main(["build", str(config_file), *(f"--beam-option={flag}" for flag in flags)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and refusal in err and err.count("error:") == 1, err
    assert main(["build", str(config_file), "--runner", "dask", *(f"--beam-option={flag}" for flag in flags)]) == 2
    err = capsys.readouterr().err
    assert "Beam knows no flag" in err and "dask parses the options with Beam's own parser" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("runner", ["FlinkRunner", "SparkRunner", "PortableRunner",
                                    "apache_beam.runners.portability.flink_runner.FlinkRunner"])
def test_a_flag_a_cluster_runner_takes_from_its_job_server_is_kept(runner: str, tmp_path: Path, capsys):
    """rev56b HIGH-1: Flink's `--checkpointing_interval`, `--object_reuse` are no flags of Beam's own
    option classes: PortableRunner adds its job server's flags to Beam's parser when it runs
    (`DescribePipelineOptions`), and an uber jar, Prism and Dataflow keep and forward unknown flags.
    They were refused with no way around it; now taken as written, with a note naming the closest
    known flag for one that looks like a typo of it."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from uvd_pipeline.build import check_before_build
    from uvd_pipeline.cli import main
    from uvd_pipeline.config import parse_config

    flags = ["--flink_master=flink-host:8081", "--checkpointing_interval=60000", "--object_reuse"]
    config = parse_config({"output": str(tmp_path / "out"), "sources": [{"name": "web", "type": "laion",
                                                                          "path": "imgs"}],
                           "beam": {"runner": runner, "options": flags}})
    assert config.beam.options == tuple(flags)
    assert check_before_build(config) == []
    # what Beam keeps of them for a runner that forwards unknown flags (an uber jar, Prism, Dataflow)
    kept = PipelineOptions(list(config.beam.options)).get_all_options(retain_unknown_options=True)
    assert kept["checkpointing_interval"] == "60000" and kept["object_reuse"] is True
    config = config.model_copy(update={"beam": config.beam.model_copy(update={
        "options": ("--flink_mastr=flink-host:8081",)})})
    assert check_before_build(config) == [
        f"beam.options: '--flink_mastr=flink-host:8081': Beam's own option classes define no flag --flink_mastr "
        f"(did you mean --flink_master?); {runner} is given it as written, for its job server or its own options "
        "to take"]
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "imgs" / "a.jpg", quality=90)
    config_file = tmp_path / "my.yaml"
    config_file.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"),
                                           "tokenizer": {"enabled": False},
                                           "beam": {"runner": runner, "options": flags},
                                           "sources": [{"name": "web", "type": "laion", "path": "imgs"}]}))
    assert main(["check", str(config_file)]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "config OK" in out and "note: beam.options" not in out, out


def test_parsing_a_config_with_beam_options_imports_neither_beam_nor_dask():
    """rev56b LOW-2: `parse_config` with any beam.options imported apache_beam, dask and distributed
    (1.1-1.6 s) to know Beam's flags, where configs are checked without importing Beam. The flags
    are now judged by the checks before a build, which import Beam anyway."""
    code = ("import sys; from uvd_pipeline.config import parse_config; parse_config({'output': 'out', 'sources': "
            "[{'name': 'web', 'type': 'laion', 'path': 'imgs'}], 'beam': {'options': ['--project=p', "
            "'--checkpointing_interval=1', '--environment_config=/opt/apache/beam/boot']}}); "
            "print(sorted(m for m in ('apache_beam', 'dask', 'distributed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)


def test_a_broken_dask_extra_does_not_crash_the_flag_check(tmp_path: Path):
    """rev56b LOW-2: the flags of Dask's option class were gathered with only ImportError caught, so
    a dask extra that fails on import otherwise (a version mismatch: here a `distributed` package that
    raises AttributeError) crashed the check of every config's options. Its flags are left out then."""
    broken = tmp_path / "site" / "distributed"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise AttributeError(\"module 'dask' has no attribute 'config'\")\n")
    code = ("from uvd_pipeline.config_beam import beam_flag_names; names = beam_flag_names(); "
            "print('--project' in names, '--dask_npartitions' in names)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{REPO}"})
    assert done.returncode == 0 and done.stdout.strip() == "True False", (done.stdout, done.stderr)


def test_flags_of_beams_option_classes_and_its_runners_option_classes_are_taken():
    """What the refusal of unknown flags keeps: each a flag that an option class of Beam defines, those
    of runners' option classes (Dask's, the graph renderer's) among them, and Beam's boolean flags."""
    from uvd_pipeline.build import check_before_build
    from uvd_pipeline.config import parse_config

    flags = ("--project=my-project", "--temp_location=gs://b/tmp", "--flink_master=flink-host:8081",
             "--spark_master_url=local[4]", "--dask_connection_timeout=30", "--dask_npartitions=8",
             "--render_output=graph.svg", "--experiments=use_runner_v2", "--save_main_session",
             "--no_pipeline_type_check", "--environment_type=LOOPBACK", "--prism_location=/opt/prism")
    config = parse_config({"output": "out", "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
                           "beam": {"options": list(flags)}})
    assert config.beam.options == flags and check_before_build(config) == []


@pytest.mark.parametrize("runner", ["apache_beam.runners.direct.direct_runner.DirectRunner",
                                    "apache_beam.runners.direct.DirectRunner",
                                    "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
                                    "apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner"])
def test_a_local_runner_named_by_its_dotted_path_refuses_an_unknown_flag(runner: str, tmp_path: Path):
    """rev56h A-1: the refusal of a flag Beam does not know tested the runner's short name only, so
    Beam's DirectRunner named by its dotted path got a note ("given it as written, for its job
    server") and the build ran without the flag, exit 0. A dotted path is resolved to its class:
    one that is, or subclasses, a runner reading the options with Beam's parser alone is refused."""
    from uvd_pipeline.build import check_before_build
    from uvd_pipeline.config import ConfigError, parse_config

    config = parse_config({"output": str(tmp_path / "out"), "sources": [{"name": "web", "type": "laion",
                                                                          "path": "imgs"}],
                           "beam": {"runner": runner, "options": ["--temp_locaton=/tmp/x"]}})
    with pytest.raises(ConfigError, match=re.escape(
            "beam.options: '--temp_locaton=/tmp/x': Beam knows no flag --temp_locaton (did you mean --temp_location?); "
            f"{runner} parses the options with Beam's own parser")):
        check_before_build(config)


def test_which_runners_drop_a_flag_beam_does_not_know(tmp_path: Path, monkeypatch):
    """InteractiveRunner runs on DirectRunner unless given another, so it drops them too; a class of
    one's own that subclasses DirectRunner does; cluster runners and a path that does not load
    (refused by `check_runner` after) do not."""
    from uvd_pipeline.config_beam import drops_unknown_flags

    (tmp_path / "my_runners.py").write_text(
        "from apache_beam.runners.direct.direct_runner import DirectRunner\n"
        "from apache_beam.runners.runner import PipelineRunner\n"
        "class MyDirect(DirectRunner):\n    pass\n"
        "class MyOwn(PipelineRunner):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    drops = {name: drops_unknown_flags(name) for name in (
        "DirectRunner", "dask", "InteractiveRunner", "apache_beam.runners.interactive.interactive_runner.InteractiveRunner",
        "my_runners.MyDirect", "FlinkRunner", "PrismRunner", "my_runners.MyOwn", "no_such_module.Runner")}
    assert drops == {"DirectRunner": True, "dask": True, "InteractiveRunner": True,
                     "apache_beam.runners.interactive.interactive_runner.InteractiveRunner": True,
                     "my_runners.MyDirect": True, "FlinkRunner": False, "PrismRunner": False,
                     "my_runners.MyOwn": False, "no_such_module.Runner": False}


def test_a_dask_flag_without_the_dask_extra_names_the_missing_extra(tmp_path: Path):
    """rev56h A-3: without the dask extra Dask's own flags are unknown to Beam's parser, so
    `--dask_connection_timeout=30` with runner: dask was refused as a flag Beam does not know
    (pointing at another flag) before anything said the extra was missing. Said now, with how to
    install it. (A module set to None in sys.modules is one Python cannot import, as when absent.)"""
    config = {"output": str(tmp_path / "out"), "sources": [{"name": "web", "type": "laion", "path": "imgs"}],
              "beam": {"runner": "dask", "options": ["--dask_connection_timeout=30"]}}
    code = ("import sys; sys.modules.update(dask=None, distributed=None)\n"
            "from uvd_pipeline.build import check_before_build\n"
            "from uvd_pipeline.config import ConfigError, parse_config\n"
            f"try:\n    check_before_build(parse_config({config!r}))\n"
            "except ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert said.startswith("beam.runner: dask needs the dask extra (") and "pip install -e '.[dask]'" in said, said
    assert "Beam knows no flag" not in said and "did you mean" not in said, said


def test_build_warns_of_a_flag_that_looks_like_a_typo_as_check_notes_it(tmp_path: Path, monkeypatch, caplog):
    """rev56h A-2: the note on a cluster runner's flag that looks like a typo of Beam's was shown by
    `check` only: `build` dropped what `check_before_build` returned. Build logs each as a warning,
    as it does a source's notices (here a runner of one's own that hands the job to DirectRunner)."""
    import logging

    from PIL import Image

    from uvd_pipeline.cli import main

    (tmp_path / "handing_runner.py").write_text(
        "from apache_beam.runners.direct.direct_runner import DirectRunner\n"
        "from apache_beam.runners.runner import PipelineRunner\n"
        "class Handing(PipelineRunner):\n"
        "    def run_pipeline(self, pipeline, options):\n"
        "        return DirectRunner().run_pipeline(pipeline, options)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "imgs" / "a.jpg", quality=90)
    config_file = tmp_path / "my.yaml"
    config_file.write_text(yaml.safe_dump({"version": 1, "output": str(tmp_path / "out"),
                                           "tokenizer": {"enabled": False},
                                           "beam": {"runner": "handing_runner.Handing",
                                                    "options": ["--flink_mastr=flink-host:8081"]},
                                           "sources": [{"name": "web", "type": "laion", "path": "imgs"}]}))
    with caplog.at_level(logging.WARNING):
        assert main(["build", str(config_file)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "beam.options" in r.getMessage()]
    assert warned == ["beam.options: '--flink_mastr=flink-host:8081': Beam's own option classes define no flag "
                      "--flink_mastr (did you mean --flink_master?); handing_runner.Handing is given it as written, "
                      "for its job server or its own options to take"], caplog.text
