"""Checkpoint I/O and HF interop: our logits equal `transformers.LlamaForCausalLM`'s both ways."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach for the Hub

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.checkpoint_io import (CheckpointDamaged, CheckpointError, checked_tensors, load_pretrained,
                                  save_pretrained, stored_tensors, weight_files)
from trainer.integrity import write_manifest
from trainer.config import preset
from trainer.interop import export_hf, import_hf, main
from trainer.model import LVMTransformer, state_shapes
from torch_work import torch_work

transformers = pytest.importorskip("transformers")


def _config(**overrides):
    values = dict(hidden_size=64, intermediate_size=160, num_attention_heads=4, num_hidden_layers=2,
                  max_position_embeddings=256, rope_theta=5000.0, rms_norm_eps=1e-5)
    values.update(overrides)
    return preset("tiny", **values)


def _random_model(seed: int = 0, **overrides) -> LVMTransformer:
    torch.manual_seed(seed)
    model = LVMTransformer(_config(**overrides)).eval()
    with torch.no_grad():  # non-trivial norms, so a norm that is dropped or swapped shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _ids(n: int = 2, t: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 8292, (n, t), generator=torch.Generator().manual_seed(seed))


def _hf_logits(folder: Path, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    hf = transformers.LlamaForCausalLM.from_pretrained(str(folder), local_files_only=True, **kwargs).eval()
    with torch.no_grad():
        return hf(ids).logits.float()


def test_save_load_round_trip_and_atomic_replace(tmp_path: Path):
    model = _random_model()
    folder = tmp_path / "ckpt"
    save_pretrained(model, folder, max_shard_size="100KB")
    files = sorted(os.listdir(folder))
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 1
    loaded = load_pretrained(folder)
    assert loaded.config == model.config and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    # saving again replaces the folder as a whole: a single file now, no stale shards or temp folders
    save_pretrained(model, folder, dtype="bfloat16", write_extra=lambda d: (d / "trainer_state.json").write_text("{}"))
    assert sorted(os.listdir(folder)) == ["config.json", "manifest.json", "model.safetensors", "trainer_state.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert load_pretrained(folder, dtype="auto").model.embed_tokens.weight.dtype == torch.bfloat16


def test_export_loads_in_transformers_with_equal_logits(tmp_path: Path):
    model = _random_model(num_key_value_heads=2)  # grouped-query attention too
    save_pretrained(model, tmp_path / "ours")
    summary = export_hf(tmp_path / "ours", tmp_path / "hf", max_shard_size="200KB")
    assert len(summary["files"]) > 1 and summary["dtype"] == "float32"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["vocab_size"] == 8292 and config["tie_word_embeddings"] is False
    assert (config["bos_token_id"], config["eos_token_id"]) == (8192, 8193)
    assert config["rope_theta"] == 5000.0 and config["rms_norm_eps"] == 1e-5
    ids = _ids()
    with torch.no_grad():
        ours = model(ids)
    theirs = _hf_logits(tmp_path / "hf", ids, dtype=torch.float32)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    # with a KV cache, continuing after a prefix gives the same logits as HF's full forward
    from trainer.model import KVCache

    cache = KVCache()
    with torch.no_grad():
        model(ids[:, :25], cache)
        tail = model(ids[:, 25:], cache)
    assert torch.allclose(tail, theirs[:, 25:], atol=1e-5, rtol=0)


def test_import_transformers_saves_fp32_and_sharded_fp16(tmp_path: Path):
    torch.manual_seed(3)
    hf_config = transformers.LlamaConfig(vocab_size=8292, hidden_size=64, intermediate_size=160,
                                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=128,
                                         rope_theta=20000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.save_pretrained(tmp_path / "hf32")
    ids = _ids(t=64)
    with torch.no_grad():
        expected = hf(ids).logits
    ours = load_pretrained(tmp_path / "hf32")
    assert ours.config.rope_theta == 20000.0
    with torch.no_grad():
        assert torch.allclose(ours(ids), expected, atol=1e-5, rtol=0)

    hf.to(torch.float16).save_pretrained(tmp_path / "hf16", max_shard_size="150KB")
    assert (tmp_path / "hf16" / "model.safetensors.index.json").is_file()
    summary = import_hf(tmp_path / "hf16", tmp_path / "ours16", dtype="float32")
    assert summary["dtype"] == "float32" and summary["tensors"] == len(ours.state_dict())
    imported = load_pretrained(tmp_path / "ours16")
    assert imported.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    reference = _hf_logits(tmp_path / "hf16", ids, dtype=torch.float32)  # HF on the same fp16-rounded weights
    with torch.no_grad():
        assert torch.allclose(imported(ids), reference, atol=1e-5, rtol=0)
    # and fp16 kept as stored when asked
    half = load_pretrained(tmp_path / "hf16", dtype="auto")
    assert half.lm_head.weight.dtype == torch.float16


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_import_tied_and_untied_transformers_models_at_the_default_dtype(tmp_path: Path, capsys, tied: bool):
    """The default import keeps fp32 as fp32, so a tied head would reach the writer as the very
    embedding tensor (safetensors refuses shared memory): it must be written as its own copy."""
    torch.manual_seed(5)
    hf_config = transformers.LlamaConfig(vocab_size=8292, hidden_size=64, intermediate_size=160,
                                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=128,
                                         tie_word_embeddings=tied)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    assert (hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()) == tied
    hf.save_pretrained(tmp_path / "hf")
    assert ("lm_head.weight" in load_file(str(tmp_path / "hf" / "model.safetensors"))) != tied  # stored once if tied
    ids = _ids(t=48)
    with torch.no_grad():
        expected = hf(ids).logits
    assert main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"
    ours = load_pretrained(tmp_path / "ours")
    assert torch.equal(ours.lm_head.weight, hf.lm_head.weight)
    assert torch.equal(ours.model.embed_tokens.weight, hf.model.embed_tokens.weight)
    with torch.no_grad():
        assert torch.allclose(ours(ids), expected, atol=1e-5, rtol=0)
    # back to transformers: our export has an explicit head and gives the same logits
    export_hf(tmp_path / "ours", tmp_path / "back")
    assert torch.allclose(_hf_logits(tmp_path / "back", ids), expected, atol=1e-5, rtol=0)
    if tied:  # a pytorch_model.bin keeps the sharing on disk: both keys, one storage
        (tmp_path / "bin").mkdir()
        torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
        (tmp_path / "bin" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        import_hf(tmp_path / "bin", tmp_path / "from_bin")
        with torch.no_grad():
            assert torch.allclose(load_pretrained(tmp_path / "from_bin")(ids), expected, atol=1e-5, rtol=0)


def test_import_legacy_bin_with_rotary_buffers_and_tied_embeddings(tmp_path: Path):
    model = _random_model()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old transformers saved it
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    config = json.loads(json.dumps({"model_type": "llama", "tie_word_embeddings": True,
                                    **model.config.to_dict(), "rope_scaling": None}))
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_pretrained(folder)
    assert torch.equal(loaded.lm_head.weight, model.model.embed_tokens.weight)
    assert torch.equal(loaded.model.layers[1].self_attn.o_proj.weight, model.model.layers[1].self_attn.o_proj.weight)


def test_a_sparse_tensor_in_a_bin_is_refused_naming_it(tmp_path: Path):
    """A sparse tensor in pytorch_model.bin reached the finite check, whose reshape torch has no
    kernel for: a RuntimeError traceback out of `trainer.evaluate`, not a refusal."""
    model = _random_model()
    save_pretrained(model, tmp_path / "sparse")
    for name in ("model.safetensors", "manifest.json"):  # a .bin in their place, as Hugging Face's older ones
        (tmp_path / "sparse" / name).unlink()
    state = dict(model.state_dict(), **{"model.norm.weight": model.model.norm.weight.detach().to_sparse()})
    torch.save(state, tmp_path / "sparse" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: tensors not stored dense: model.norm.weight "
                                              r"\(sparse_coo\)"):
        load_pretrained(tmp_path / "sparse")
    torch.save(model.state_dict(), tmp_path / "sparse" / "pytorch_model.bin")
    assert torch.equal(load_pretrained(tmp_path / "sparse").model.norm.weight, model.model.norm.weight)


def test_wrong_shape_and_missing_keys_are_named(tmp_path: Path):
    model = _random_model()
    save_pretrained(model, tmp_path / "ok")
    tensors = load_file(str(tmp_path / "ok" / "model.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 100)
    del tensors["model.norm.weight"]
    tensors["model.layers.9.extra.weight"] = torch.zeros(3)
    save_file(tensors, str(tmp_path / "ok" / "model.safetensors"))
    write_manifest(tmp_path / "ok")  # edited on purpose: reseal, so the shape check is what refuses it
    with pytest.raises(CheckpointError) as error:
        load_pretrained(tmp_path / "ok")
    message = str(error.value)
    assert "model.layers.1.mlp.down_proj.weight: checkpoint (64, 100) vs model (64, 160)" in message
    assert "missing keys: model.norm.weight" in message and "unexpected keys: model.layers.9.extra.weight" in message
    with pytest.raises(CheckpointError, match="down_proj"):
        import_hf(tmp_path / "ok", tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("field, value", [("hidden_act", "gelu"), ("attention_bias", True),
                                          ("rope_scaling", {"rope_type": "linear", "factor": 2.0}),
                                          ("model_type", "mistral")])
def test_unsupported_config_fields_are_named(tmp_path: Path, field, value):
    save_pretrained(_random_model(), tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    write_manifest(tmp_path / "m")
    with pytest.raises(CheckpointError, match=f"field '{field}'"):
        load_pretrained(tmp_path / "m")


def test_cli_export_import(tmp_path: Path, capsys):
    model = _random_model()
    save_pretrained(model, tmp_path / "ours")
    assert main(["export", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"),
                 "--dtype", "bfloat16"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    back = load_pretrained(tmp_path / "back")
    expected = model.model.embed_tokens.weight.to(torch.bfloat16).float()
    assert torch.equal(back.model.embed_tokens.weight, expected)
    with pytest.raises(SystemExit):
        main(["import", "--hf", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert "nothing: no config.json" in capsys.readouterr().err


def test_fit_run_folder_loads_and_exports(tmp_path: Path):
    """The fit loop's step folders (model.pt + config.json) and its run folder (newest step) load
    everywhere a checkpoint is asked for."""
    from trainer.checkpoint import save_checkpoint

    old, new = _random_model(seed=1), _random_model(seed=2)
    for step, model in ((10, old), (20, new)):
        save_checkpoint(str(tmp_path / "run"), step, model.state_dict(), {}, model.config, {"tokens_seen": 0})
    loaded = load_pretrained(tmp_path / "run")
    assert torch.equal(loaded.lm_head.weight, new.lm_head.weight)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    ids = _ids(t=16)
    with torch.no_grad():
        assert torch.allclose(_hf_logits(tmp_path / "hf", ids), new(ids), atol=1e-5, rtol=0)


def _edited_config_folder(folder: Path, **fields) -> Path:
    """A real checkpoint (our writer: HF LlamaConfig keys, safetensors) whose config.json then gets
    `fields` the way a hand edit or a foreign tool writes them, resealed so the config is what is judged."""
    save_pretrained(_random_model(), folder)
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))
    write_manifest(folder)
    return folder


@pytest.mark.parametrize("fields, words", [
    ({"num_attention_heads": 0, "head_dim": None}, "field 'num_attention_heads' = 0: must be a positive integer"),
    ({"hidden_size": "64"}, "field 'hidden_size' = '64': must be a positive integer, not str"),
    ({"num_attention_heads": -4, "num_key_value_heads": -4, "head_dim": None},
     "field 'num_attention_heads' = -4: must be a positive integer"),
    ({"num_hidden_layers": 2.0}, "field 'num_hidden_layers' = 2.0: must be a positive integer, not float"),
    ({"num_key_value_heads": 3}, "field 'num_key_value_heads' = 3: num_attention_heads 4 is not a multiple of it"),
    ({"rms_norm_eps": "1e-5"}, "field 'rms_norm_eps' = '1e-5': must be a finite number"),
    ({"rope_theta": 0, "rope_parameters": None}, "field 'rope_theta' = 0: must be positive"),
    ({"num_hidden_layers": 20000}, "field 'num_hidden_layers' = 20000: more than 1024"),
    ({"tie_word_embeddings": "false"}, "field 'tie_word_embeddings' = 'false': must be true or false"),
    ({"torch_dtype": ["float16"]}, "field 'torch_dtype' = ['float16'] is not a dtype we load"),
], ids=["heads_zero", "hidden_str", "heads_negative", "layers_float", "kv_heads", "eps_str", "theta_zero",
        "layers_huge", "tie_str", "dtype_list"])
def test_bad_config_values_are_checkpoint_errors_naming_the_field(tmp_path: Path, capsys, fields, words):
    """Values that escaped as ZeroDivisionError, a string-formatting TypeError, or loaded and then
    failed inside RoPE, are refused on load, and the CLIs say so in one line with exit 2."""
    from trainer.generate import main as generate_main

    folder = _edited_config_folder(tmp_path / "m", **fields)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(folder, dtype="auto")
    assert str(folder / "config.json") in str(error.value) and words in str(error.value)
    assert main(["export", "--checkpoint", str(folder), "--out", str(tmp_path / "hf")]) == 2
    assert f"error: {folder / 'config.json'}" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    if "torch_dtype" not in fields:  # generate loads in float32 on CPU, whatever the file stores
        assert generate_main(["--checkpoint", str(folder), "--tokenizer", str(tmp_path / "unused"), "--out",
                              str(tmp_path / "strip.png"), "--device", "cpu"]) == 2
        assert words in capsys.readouterr().err


def test_state_shapes_are_the_built_models():
    """The arithmetic shapes a load compares the file with first are the model's state dict."""
    for config in (_config(), _config(num_key_value_heads=2), preset("7b")):
        with torch.device("meta"):
            model = LVMTransformer(config)
        assert list(state_shapes(config).items()) == [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_loads_compare_with_the_models_own_state_shapes_under_one_name():
    """`checkpoint_io.expected_shapes` was a bare alias of `model.state_shapes`: two names for one
    function. The loader uses `state_shapes` itself, and the alias is gone."""
    from trainer import checkpoint_io, model

    assert not hasattr(checkpoint_io, "expected_shapes")
    assert checkpoint_io.state_shapes is model.state_shapes


@pytest.mark.parametrize("layers, words", [(1000, "missing keys: model.embed_tokens.weight"),
                                           (4000, "field 'num_hidden_layers' = 4000: more than 1024")])
def test_a_declared_depth_costs_nothing_before_the_file_is_compared(tmp_path: Path, monkeypatch, layers, words):
    """741 bytes declaring 4000 layers took 29 s and 142 MiB before the refusal: the headers are
    compared with arithmetic shapes, and no module is built for a file that does not fill it.
    Bounded by the work, not the clock: no module at all, and no more torch work than refusing the
    same file under a one-layer config takes (reading its header), whatever depth is declared."""
    from trainer import checkpoint_io

    folders = {}
    for name, depth in (("deep", layers), ("shallow", 1)):
        folder = folders[name] = tmp_path / name
        folder.mkdir()
        config = {**checkpoint_io.hf_config_dict(_config(), torch.float32), "num_hidden_layers": depth}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"))
    monkeypatch.setattr(checkpoint_io, "LVMTransformer", lambda config: pytest.fail("built a model first"))
    with pytest.raises(CheckpointError, match=re.escape(words)):
        load_pretrained(folders["deep"])
    deep = torch_work(lambda: load_pretrained(folders["deep"]), monkeypatch)
    reference = torch_work(lambda: load_pretrained(folders["shallow"]), monkeypatch)
    assert deep.modules == reference.modules == 0
    assert deep.functions <= reference.functions and deep.operations <= reference.operations, (deep, reference)
    assert deep.bytes <= reference.bytes, (deep, reference)


@pytest.mark.parametrize("shard", ["ABSOLUTE", "../elsewhere/secret.safetensors", "sub/model.safetensors"])
def test_a_shard_index_naming_files_outside_the_folder_is_refused(tmp_path: Path, shard):
    """model.safetensors.index.json may name only plain files of its folder (as HF writes them):
    an absolute path or ../ was followed, reading any file of the machine as weights."""
    elsewhere = tmp_path / "elsewhere"
    save_pretrained(_random_model(seed=3), elsewhere)
    os.rename(elsewhere / "model.safetensors", elsewhere / "secret.safetensors")
    (tmp_path / "downloaded" / "sub").mkdir(parents=True)
    shutil.copy(elsewhere / "secret.safetensors", tmp_path / "downloaded" / "sub" / "model.safetensors")
    shard = str(elsewhere / "secret.safetensors") if shard == "ABSOLUTE" else shard
    folder = tmp_path / "downloaded"
    shutil.copy(elsewhere / "config.json", folder / "config.json")
    weight_map = {name: shard for name in load_file(str(elsewhere / "secret.safetensors"))}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for read in (load_pretrained, lambda f: import_hf(f, tmp_path / "imported")):
        with pytest.raises(CheckpointError) as error:
            read(folder)
        message = str(error.value)
        assert str(folder / "model.safetensors.index.json") in message and repr(shard) in message
        assert "plain file names" in message
    assert not (tmp_path / "imported").exists()


def test_the_command_line_refuses_a_flag_in_one_line_and_a_bug_keeps_its_traceback(tmp_path: Path, capsys,
                                                                                    monkeypatch):
    """An unreadable --max-shard-size is a one-line error naming it, exit 2, nothing written; a
    ValueError from inside the conversion (a bug, not the user's input) is not dressed up as one."""
    from trainer import interop

    model = LVMTransformer(preset("tiny"))
    save_pretrained(model, tmp_path / "ours")
    assert main(["export", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "hf"),
                 "--max-shard-size", "lots"]) == 2
    assert "error: max shard size 'lots': cannot read it; write e.g. 5GB" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(interop, "checked_tensors", broken)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["export", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "hf")])


# -- folders as transformers writes them, then altered the way a bad download or a hand edit does --
def _hf_shards(folder: Path, seed: int = 7) -> transformers.LlamaForCausalLM:
    """A tiny `LlamaForCausalLM` saved by transformers in several safetensors shards with its index."""
    torch.manual_seed(seed)
    hf_config = transformers.LlamaConfig(vocab_size=8292, hidden_size=64, intermediate_size=160,
                                         num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=128,
                                         tie_word_embeddings=False)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.save_pretrained(folder, max_shard_size="500KB")
    assert len(set(_weight_map(folder).values())) >= 3
    return hf


def _weight_map(folder: Path) -> dict[str, str]:
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]


def _shard_of(folder: Path, key: str) -> Path:
    return folder / _weight_map(folder)[key]


def _refused(folder: Path, tmp_path: Path, capsys) -> str:
    """The one-line error the import command prints (exit 2, nothing written); `load_pretrained`
    refuses the folder with the same message."""
    capsys.readouterr()  # transformers' progress bars while the fixture was saved
    assert main(["import", "--hf", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError) as error:
        load_pretrained(folder)
    assert f"error: {error.value}\n" == err
    return err


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_calls_a_function_is_refused_in_our_words(tmp_path: Path, capsys):
    """`pytorch_model.bin` shards whose pickle calls os.system: weights-only loading refuses it, and
    the message names the file and the function it calls. It was torch's boilerplate cut at 200
    characters ("Re-running `torch.load` with `weights_onl"), the culprit cut off."""
    hf = _hf_shards(tmp_path / "st")
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tmp_path / "st" / "config.json", folder)
    state, names = hf.state_dict(), sorted(hf.state_dict())
    halves = {"pytorch_model-00001-of-00002.bin": names[:5], "pytorch_model-00002-of-00002.bin": names[5:]}
    for name, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folder / name)
    weight_map = {k: name for name, keys in halves.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert torch.equal(load_pretrained(folder).lm_head.weight, hf.lm_head.weight)  # the real layout loads
    evil = folder / "pytorch_model-00002-of-00002.bin"
    torch.save({**{k: state[k] for k in names[5:]}, names[6]: _Shell()}, evil)
    err = _refused(folder, tmp_path, capsys)
    assert f"error: {evil}: " in err and f"{os.system.__module__}.system" in err
    assert "weights_only" not in err and "Re-running" not in err



def test_a_training_checkpoint_in_place_of_the_state_dict_is_named_as_one(tmp_path: Path, capsys):
    """A Lightning-style fine-tune saved as pytorch_model.bin (the weights under 'state_dict', beside
    epoch and optimizer states) was refused as "values that are not tensors: epoch, global_step, ...".
    The message now says what the file is and how to get the state dict out."""
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    save_pretrained(_random_model(), folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    (folder / "manifest.json").unlink()  # an HF download has none
    torch.save({"epoch": 1, "global_step": 10, "state_dict": state, "optimizer_states": []},
               folder / "pytorch_model.bin")
    err = _refused(folder, tmp_path, capsys)
    assert err.startswith(f"error: {folder / 'pytorch_model.bin'}: a training checkpoint (keys epoch, ")
    assert "'state_dict' alone with torch.save" in err and "not tensors" not in err

@pytest.mark.parametrize("dtype, shown", [(torch.int64, "int64"), (torch.bool, "bool"),
                                          (torch.float8_e4m3fn, "float8_e4m3fn")])
def test_tensors_in_a_dtype_we_do_not_load_are_refused_from_the_headers(tmp_path: Path, capsys, dtype, shown):
    """An I64, BOOL or F8 tensor in a shard was copied into the fp32 model without a word by
    `load_pretrained` (evaluate, generate); now the headers refuse it by name before any copy.
    BF16 in an fp32 folder is a real layout and loads."""
    folder = tmp_path / "hf"
    _hf_shards(folder)
    key = "model.layers.1.mlp.up_proj.weight"
    shard = _shard_of(folder, key)
    tensors = load_file(str(shard))
    original = tensors[key].clone()
    tensors[key] = original.to(torch.bfloat16)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    assert torch.equal(load_pretrained(folder).model.layers[1].mlp.up_proj.weight, original.to(torch.bfloat16).float())
    tensors[key] = (original * 100).to(dtype)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    err = _refused(folder, tmp_path, capsys)
    assert f"{_shard_of(folder, key)}: tensors in a dtype we do not load: {key} ({shown})" in err
    assert "float32, float16 or bfloat16" in err


def test_two_shards_holding_one_tensor_are_refused_naming_both(tmp_path: Path, capsys):
    """The last shard's copy won silently (transformers does the same): which one is the model?"""
    folder = tmp_path / "hf"
    _hf_shards(folder)
    key, other = "model.norm.weight", "model.embed_tokens.weight"
    home, elsewhere = _shard_of(folder, key), _shard_of(folder, other)
    assert home != elsewhere
    tensors = load_file(str(elsewhere))
    save_file({**tensors, key: torch.full((64,), 7.0)}, str(elsewhere), metadata={"format": "pt"})
    err = _refused(folder, tmp_path, capsys)
    assert f"{key} is stored twice" in err and home.name in err and elsewhere.name in err


def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path: Path, capsys):
    """The index puts a tensor in a shard that does not hold it (a shard from another download): the
    message said the key was missing, or nothing when the index listed a key no shard held."""
    folder = tmp_path / "hf"
    _hf_shards(folder)
    index = folder / "model.safetensors.index.json"
    raw = json.loads(index.read_text())
    key = "model.layers.0.self_attn.q_proj.weight"
    wrong = next(name for name in raw["weight_map"].values() if name != raw["weight_map"][key])
    right, raw["weight_map"][key] = raw["weight_map"][key], wrong
    index.write_text(json.dumps(raw))
    err = _refused(folder, tmp_path, capsys)
    assert f"{index}: it puts {key} in {wrong}, which does not hold it (it is in {right})" in err
    raw["weight_map"][key] = right
    raw["weight_map"]["model.layers.9.mlp.up_proj.weight"] = wrong
    index.write_text(json.dumps(raw))
    err = _refused(folder, tmp_path, capsys)
    assert f"it puts model.layers.9.mlp.up_proj.weight in {wrong}, which does not hold it" in err
    del raw["weight_map"]["model.layers.9.mlp.up_proj.weight"]
    index.write_text(json.dumps(raw))
    shard = folder / wrong
    save_file({**load_file(str(shard)), "model.extra.weight": torch.ones(2)}, str(shard), metadata={"format": "pt"})
    err = _refused(folder, tmp_path, capsys)
    assert f"{index}: it does not name model.extra.weight, stored in {wrong}" in err


def test_a_bin_whose_records_are_compressed_is_refused_before_torch_reads_it(tmp_path: Path, capsys, monkeypatch):
    """A pytorch_model.bin re-zipped with deflated records: torch allocates each record's declared
    size before inflating it (950 KiB took 1180 MiB of peak RSS). Refused from the zip directory."""
    import io
    import zipfile

    hf = _hf_shards(tmp_path / "st")
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tmp_path / "st" / "config.json", folder)
    buffer, packed = io.BytesIO(), io.BytesIO()
    torch.save(hf.state_dict(), buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(packed, "w") as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    (folder / "pytorch_model.bin").write_bytes(packed.getvalue())
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    err = _refused(folder, tmp_path, capsys)
    assert f"error: {folder / 'pytorch_model.bin'}: records compressed (" in err
    monkeypatch.undo()
    (folder / "pytorch_model.bin").write_bytes(buffer.getvalue())  # as torch.save wrote it: loads
    assert torch.equal(load_pretrained(folder).model.norm.weight, hf.model.norm.weight)


def test_a_shard_that_is_a_git_lfs_pointer_is_named_as_one(tmp_path: Path, capsys):
    """A clone of the hub repository without Git LFS: each shard is a pointer of ~130 bytes, and
    safetensors said "header too large"."""
    folder = tmp_path / "hf"
    _hf_shards(folder)
    shard = _shard_of(folder, "model.norm.weight")
    shard.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 4938985248\n")
    err = _refused(folder, tmp_path, capsys)
    assert err.startswith(f"error: {shard}: a Git LFS pointer") and "git lfs pull" in err


def _small_hf_model(seed: int) -> "transformers.LlamaForCausalLM":
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                      num_hidden_layers=2, max_position_embeddings=128, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config).eval()


def _sharded_folders(tmp_path: Path, hf) -> dict[str, Path]:
    """The model as transformers' save_pretrained shards it (safetensors + model.safetensors.index.json)
    and as huggingface_hub's save_torch_state_dict (transformers 4's writer) shards .bin files."""
    from huggingface_hub import save_torch_state_dict

    hf.save_pretrained(tmp_path / "safe", max_shard_size="20KB")
    (tmp_path / "bin").mkdir()
    shutil.copy(tmp_path / "safe" / "config.json", tmp_path / "bin" / "config.json")
    save_torch_state_dict(hf.state_dict(), tmp_path / "bin", safe_serialization=False, max_shard_size="20KB")
    return {"safe": tmp_path / "safe", "bin": tmp_path / "bin"}


def _as_stored(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of `folder` by safetensors' and torch's own readers."""
    found: dict[str, torch.Tensor] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            found.update(load_file(str(path)))
        elif path.suffix == ".bin":
            found.update(torch.load(path, weights_only=True))
    return found


@pytest.mark.parametrize("kind, index", [("safe", "model.safetensors.index.json"), ("bin", "pytorch_model.bin.index.json")])
def test_a_sharded_checkpoint_reads_its_index_and_each_file_once(tmp_path: Path, monkeypatch, kind, index):
    """load_pretrained parsed a shard index three times (file list, headers, index check; four in a
    sealed folder) and torch-loaded each .bin twice (headers, then tensors). Each is read once now, and
    the values are those safetensors' and torch's own readers give for the same files."""
    folder = _sharded_folders(tmp_path, _small_hf_model(7))[kind]
    assert (folder / index).is_file() and len(list(folder.glob(f"*.{'safetensors' if kind == 'safe' else 'bin'}"))) > 2
    expected = _as_stored(folder)
    if kind == "safe":  # sealed, as our writes are: the manifest check read the index once more
        write_manifest(folder)
    parsed, loaded = [], []
    real_loads, real_load = json.loads, torch.load
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(text) or real_loads(text, *a, **k))
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: loaded.append(Path(path).name) or real_load(path, *a, **k))
    model = load_pretrained(folder)
    monkeypatch.undo()
    assert sum(b"weight_map" in (t if isinstance(t, bytes) else t.encode()) for t in parsed) == 1, len(parsed)
    assert sorted(loaded) == sorted(path.name for path in folder.glob("*.bin")), loaded
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)


@pytest.mark.parametrize("file, make, words", [
    ("config.json", "padded", "4194305 bytes, more than the 4 MiB a config.json may have (real ones are a few KB)"),
    ("config.json", "sparse", "2147483648 bytes, more than the 4 MiB a config.json may have"),
    ("config.json", "/dev/zero", "a character device, not a file; pass a config.json file itself"),
    ("model.safetensors.index.json", "sparse", "2147483648 bytes, more than the 32 MiB a shard index may have"),
    ("manifest.json", "sparse", "2147483648 bytes, more than the 32 MiB a manifest may have"),
])
def test_a_config_or_index_too_big_to_be_one_is_refused_from_its_size(tmp_path: Path, never_read, file, make, words):
    """config.json and the shard index were read whole, whatever their size: a 2 GB config.json took
    its size in memory (and a second copy to decode) before json saw it was no config, and a
    config.json linked to /dev/zero was called missing (read forever where a flag names it). They, and
    a folder's manifest, are refused from what the file system says, before a byte is read, in one
    line naming the file (bounds: 4 MiB for a config, 32 MiB for an index or manifest)."""
    folder = _sharded_folders(tmp_path, _small_hf_model(8))["safe"]
    if file == "manifest.json":  # sealed, as the folders we write are: the manifest is read first
        write_manifest(folder)
    path = folder / file
    if make == "padded":  # still valid JSON, one byte past the bound
        text = path.read_text()
        path.write_text(text + " " * (4 * 2**20 + 1 - len(text.encode())))
    elif make == "sparse":
        path.unlink()
        with open(path, "wb") as handle:
            handle.truncate(2**31)
        never_read(path)
    else:
        path.unlink()
        path.symlink_to(make)
        never_read(make)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(folder)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message, message


def test_legacy_bin_shards_are_read_again_rather_than_held_together(tmp_path: Path, monkeypatch):
    """A legacy (pre-zip) torch file cannot be memory-mapped: keeping every shard's state dict from
    the header read to the stream would hold the whole model in memory twice over. Among several
    such shards each is read again when streamed (one at a time); one legacy file alone is read once."""
    hf = _small_hf_model(9)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    folders = {"sharded": tmp_path / "sharded", "single": tmp_path / "single"}
    for folder in folders.values():
        folder.mkdir()
        hf.config.to_json_file(folder / "config.json")
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for name, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folders["sharded"] / name, _use_new_zipfile_serialization=False)
    (folders["sharded"] / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: name for name, keys in halves.items() for k in keys}}))
    torch.save(state, folders["single"] / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    real_load = torch.load
    for kind, reads in (("sharded", 2), ("single", 1)):
        loaded: list[str] = []
        monkeypatch.setattr(torch, "load", lambda path, *a, **k: loaded.append(Path(path).name) or real_load(path, *a, **k))
        model = load_pretrained(folders[kind])
        monkeypatch.undo()
        files = sorted(path.name for path in folders[kind].glob("*.bin"))
        assert sorted(loaded) == sorted(files * reads), (kind, loaded)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("how", ["in place", "renamed"])
def test_a_bin_shard_rewritten_during_a_load_is_named_rather_than_crashing(tmp_path: Path, how):
    """Each .bin shard's memory-mapped state dict is kept from the header read until it is streamed:
    one truncated in place meanwhile (`cp new.bin shard.bin` truncates first) killed the process with
    SIGBUS, no message, at the first touch of its pages. It is refused, naming it, before a page is
    touched (this test touches none, so a regression fails it rather than killing pytest); a file put
    in its place by rename leaves the mapped one whole, which is streamed as checked."""
    folder = _sharded_folders(tmp_path, _small_hf_model(10))["bin"]
    expected = _as_stored(folder)
    last = sorted(folder.glob("pytorch_model-*.bin"))[-1]
    _, _, stream = checked_tensors(folder)
    streamed = dict([next(stream)])
    if how == "in place":
        with open(last, "r+b") as handle:
            handle.truncate(0)
        with pytest.raises(CheckpointDamaged) as error:
            for name, _ in stream:  # names only: no page of the truncated file is touched
                pass
        assert str(error.value) == (f"{last}: changed while being read (rewritten in place); "
                                    "load again once it is complete")
    else:
        torch.save({"other": torch.zeros(3)}, tmp_path / "new.bin")
        os.replace(tmp_path / "new.bin", last)
        streamed.update(stream)
        assert sorted(streamed) == sorted(expected)
        assert all(torch.equal(streamed[key], expected[key]) for key in expected)


def _file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, file) of this process's memory mapped from files (Linux's /proc/self/maps)."""
    found = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end, fields[5]))
    return found


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc/self/maps")
def test_bin_shards_kept_from_the_header_read_are_mapped_not_read(tmp_path: Path):
    """The .bin state dicts kept from the header read for the stream cost no memory only because
    their tensors map the files: read instead, a load would hold the whole model once more (`convert`
    of a 212 MB checkpoint peaked at 215 MB rather than 51). Every kept tensor lies in its file's mapping."""
    folder = _sharded_folders(tmp_path, _small_hf_model(11))["bin"]
    weights = weight_files(folder)
    _, kept = stored_tensors(weights, folder)
    assert sorted(kept) == sorted(weights.files) and len(kept) > 2
    mappings = _file_mappings()
    for path, shard in kept.items():
        real = os.path.realpath(path)
        unmapped = [key for key, tensor in shard.state.items()
                    if not any(start <= tensor.data_ptr() < end and name == real for start, end, name in mappings)]
        assert not unmapped, (path.name, unmapped)



def test_a_bin_shard_is_opened_once_for_its_first_bytes(tmp_path: Path, monkeypatch):
    """Reading a .bin shard opened it for its first bytes twice: for the weights-file check before
    torch read it, and again after, to tell whether its tensors map the file (`mappable`). They are
    read once now, from the stat taken before the load, and tell both; a zip is still mapped (its
    identity kept for the stream's check), a legacy pickle read (and not kept: it is read again)."""
    from tokenizer import checkpoint

    folder = _sharded_folders(tmp_path, _small_hf_model(13))["bin"]
    legacy = sorted(folder.glob("pytorch_model-*.bin"))[0]
    torch.save(torch.load(legacy, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    weights = weight_files(folder)
    opened: list[str] = []
    real_open = open
    monkeypatch.setattr(checkpoint, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k),
                        raising=False)
    _, kept = stored_tensors(weights, folder)
    monkeypatch.undo()
    zips = sorted(path.name for path in weights.files if path != legacy)
    assert len(zips) > 1
    # each file's first bytes once, then a zip's directory (`torch_file_problem`)
    assert sorted(opened) == sorted([legacy.name] + zips * 2), opened
    assert sorted(path.name for path in kept) == zips and all(shard.identity for shard in kept.values())


def test_a_bin_shard_replaced_by_a_pipe_is_refused_not_waited_on(tmp_path: Path):
    """A .bin shard put in place of the file the folder listed, as a named pipe (a download streamed
    through mkfifo), is judged from its stat, never opened (an open blocks until a writer comes):
    refused, naming it. Should a regression open it, the test lets it go after 10 s by opening the
    pipe's other end, and fails."""
    import threading

    folder = _sharded_folders(tmp_path, _small_hf_model(14))["bin"]
    weights = weight_files(folder)
    piped = weights.files[-1]
    piped.unlink()
    os.mkfifo(piped)
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(stored_tensors(weights, folder))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(piped, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail(f"{piped.name} as a pipe blocked the load")
    assert len(outcome) == 1 and isinstance(outcome[0], CheckpointDamaged), outcome
    assert str(outcome[0]) == f"{piped}: a pipe, not a file; pass the weights file itself"


def test_model_safetensors_beside_a_bin_index_without_its_shards_loads(tmp_path: Path):
    """`huggingface-cli download --include "*.safetensors" "*.json"` of a repo shipping both formats
    gives model.safetensors beside pytorch_model.bin.index.json whose shards are absent: transformers
    loads it, we refused it (the .bin index was tried before the single safetensors file)."""
    from huggingface_hub import save_torch_state_dict

    hf = _small_hf_model(12)
    folder = tmp_path / "both"
    hf.save_pretrained(folder)
    save_torch_state_dict(hf.state_dict(), folder, safe_serialization=False, max_shard_size="20KB")
    expected = load_file(str(folder / "model.safetensors"))
    for shard in folder.glob("pytorch_model-*.bin"):
        shard.unlink()
    assert (folder / "pytorch_model.bin.index.json").is_file()
    state = load_pretrained(folder).state_dict()
    assert sorted(state) == sorted(expected) and all(torch.equal(state[k], expected[k]) for k in expected)


def test_weight_files_are_chosen_in_transformers_order(tmp_path: Path):
    """transformers' order (modeling_utils): model.safetensors, model.safetensors.index.json,
    pytorch_model.bin, pytorch_model.bin.index.json; each is taken while the ones before are absent."""
    order = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"]
    for name in order:
        (tmp_path / name).write_text("")
        if name.endswith(".index.json"):  # one shard, there (its bytes are not read to choose)
            shard = name.removesuffix(".index.json").replace("model.", "model-00001-of-00001.")
            (tmp_path / name).write_text(json.dumps({"weight_map": {"w": shard}}))
            (tmp_path / shard).write_text("")
    for name in order:
        chosen = weight_files(tmp_path)
        read = chosen.index.name if chosen.index is not None else chosen.files[0].name
        assert read == name, (name, chosen)
        (tmp_path / name).unlink()


def test_a_nan_weight_is_refused_naming_its_file_and_tensor(tmp_path: Path, capsys):
    """One NaN in model.norm.weight of a transformers folder loaded without a word: `trainer.evaluate`
    printed `ppl nan` (exit 0), `generate` crashed in torch.multinomial, `import` copied it. Every
    load now refuses it, naming the shard and the tensor (exit 2)."""
    hf = _small_hf_model(2)
    with torch.no_grad():
        hf.model.norm.weight[3] = float("nan")
    hf.save_pretrained(tmp_path / "st", max_shard_size="20KB")
    err = _refused(tmp_path / "st", tmp_path, capsys)
    shard = _shard_of(tmp_path / "st", "model.norm.weight")
    assert len(set(_weight_map(tmp_path / "st").values())) > 1
    assert err == (f"error: {shard}: tensor model.norm.weight holds 1 of 32 values that are not finite (1 NaN): "
                   "weights of a diverged training run or of a conversion that overflowed; use an earlier or "
                   "another copy of the checkpoint\n")


def test_a_conversion_to_float16_that_overflows_is_refused_naming_the_tensor(tmp_path: Path, capsys):
    """A bfloat16 folder holding a weight of 1e5 (float16's largest is 65504): `import --dtype float16`
    stored inf and exited 0. Now the conversion is refused naming the tensor (exit 2, nothing written);
    float32 keeps the value, and a load to float16 is refused as the import is."""
    hf = _small_hf_model(3).to(torch.bfloat16)
    with torch.no_grad():
        hf.model.norm.weight[0] = 1e5
    hf.save_pretrained(tmp_path / "bf16")
    capsys.readouterr()
    assert main(["import", "--hf", str(tmp_path / "bf16"), "--out", str(tmp_path / "fp16"), "--dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'bf16'}: tensor model.norm.weight does not fit float16: 1 of its 32 values "
                   "exceed its range (largest 99840, float16 holds at most 65504); choose bfloat16 or float32\n")
    assert not (tmp_path / "fp16").exists()
    with pytest.raises(CheckpointError, match="tensor model.norm.weight does not fit float16"):
        load_pretrained(tmp_path / "bf16", dtype="float16")
    assert main(["import", "--hf", str(tmp_path / "bf16"), "--out", str(tmp_path / "fp32"), "--dtype", "float32"]) == 0
    assert load_file(tmp_path / "fp32" / "model.safetensors")["model.norm.weight"][0].item() == 99840.0


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_weights_follow_the_umask_as_config_json_does(tmp_path: Path, capsys, umask: int):
    """safetensors' save_file creates its file 0600: an export or import under umask 022 left
    model.safetensors owner-only beside a 0644 config.json, so a colleague could not load a shared
    folder. Every weight file now gets the mode the umask gives, sharded or not."""
    save_pretrained(_random_model(), tmp_path / "ours")
    old = os.umask(umask)
    try:
        assert main(["export", "--checkpoint", str(tmp_path / "ours"), "--out", str(tmp_path / "one")]) == 0
        assert main(["import", "--hf", str(tmp_path / "one"), "--out", str(tmp_path / "shards"),
                     "--max-shard-size", "200KB"]) == 0
    finally:
        os.umask(old)
    for folder in (tmp_path / "one", tmp_path / "shards"):
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
        assert sum(name.endswith(".safetensors") for name in modes) == (1 if folder.name == "one" else len(modes) - 3)
        assert set(modes.values()) == {0o666 & ~umask}, modes
