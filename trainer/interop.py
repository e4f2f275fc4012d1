"""Hugging Face interop: our checkpoints <-> `LlamaForCausalLM` folders.

Because our parameter names and RoPE layout are HF's, both directions are a streamed copy of
tensors: validate the config and every key/shape from the file headers first, then read one
tensor at a time, convert its dtype, and write shards of bounded size (sealed with a manifest of
digests, as every checkpoint folder we write; a damaged source is refused, naming the file). Nothing builds a model,
so importing the released 7B (fp16, sharded) needs memory for one shard, not for the model.
Only `safetensors` is needed at run time; `transformers` is a test dependency.

    python -m trainer.interop export --checkpoint runs/lvm-300m --out hf/lvm-300m --dtype bfloat16
    python -m trainer.interop import --hf LVM-7b --out ckpt/lvm-7b --dtype float16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from .checkpoint_io import (
    CONFIG_NAME,
    DEFAULT_SHARD_SIZE,
    CheckpointError,
    ShardWriter,
    UsageError,
    check_converted,
    checked_tensors,
    dtype_name,
    parse_dtype,
    parse_size,
    recorded_tokenizer,
    stored_dtype,
    write_config,
)
from .integrity import sealed_folder
from .packing import recorded_mode


def convert(source: str | os.PathLike[str], out: str | os.PathLike[str], *, dtype: str | torch.dtype | None = None,
            max_shard_size: int | str = DEFAULT_SHARD_SIZE, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stream `source` (any Llama folder we read) into `out` as an HF LlamaForCausalLM folder.

    `dtype` None/'auto' keeps the stored dtype. Returns a summary (files, tensors, bytes)."""
    shard_bytes = parse_size(max_shard_size)  # a bad flag fails before the checkpoint is read
    config, raw, tensors = checked_tensors(source)
    target = parse_dtype(dtype) or stored_dtype(raw, source)
    trained_on, mode = recorded_tokenizer(source), recorded_mode(source)
    if provenance is not None and trained_on is not None:  # evaluate and generate check it on the copy too
        provenance = {**provenance, "tokenizer": trained_on}
    if provenance is not None and mode is not None:  # and score and prompt it in the mode it was fitted in
        provenance = {**provenance, "mode": mode}
    count = 0
    with sealed_folder(out) as temporary:
        writer = ShardWriter(Path(temporary), shard_bytes)
        for name, tensor in tensors:  # dtypes were judged from the headers, values as they stream
            converted = tensor.to(target)
            check_converted(name, converted, tensor, source)
            writer.add(name, converted)
            count += 1
        files = writer.close()
        write_config(Path(temporary), config, target, {"uvd_provenance": provenance} if provenance else None)
    return {"out": str(out), "files": files, "tensors": count, "bytes": writer.total_bytes,
            "dtype": dtype_name(target), "parameters": config.num_parameters()}


def export_hf(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, dtype: str | torch.dtype | None = None,
              max_shard_size: int | str = DEFAULT_SHARD_SIZE) -> dict[str, Any]:
    """Our checkpoint -> a folder `LlamaForCausalLM.from_pretrained(out)` loads."""
    return convert(checkpoint, out, dtype=dtype, max_shard_size=max_shard_size,
                   provenance={"exported_from": os.path.abspath(checkpoint)})


def import_hf(hf_folder: str | os.PathLike[str], out: str | os.PathLike[str], *, dtype: str | torch.dtype | None = "float32",
              max_shard_size: int | str = DEFAULT_SHARD_SIZE) -> dict[str, Any]:
    """An HF Llama folder (e.g. the released LVM 7B) -> our checkpoint, converted to `dtype`.

    Fields our model cannot represent (biases, scaled RoPE, other activations) are refused
    by name; a tied-embedding checkpoint gets an explicit `lm_head`."""
    return convert(hf_folder, out, dtype=dtype, max_shard_size=max_shard_size,
                   provenance={"imported_from": os.path.abspath(hf_folder)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.interop", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export_help = "our checkpoint -> HF LlamaForCausalLM folder"
    export = commands.add_parser("export", help=export_help, description=export_help)
    export.add_argument("--checkpoint", required=True,
                        help="our checkpoint folder (config.json + weights) or a fit run's --out (newest step)")
    export.add_argument("--out", required=True, help="the HF folder to write (replaced as a whole)")
    export.add_argument("--dtype", default="auto",
                        help="float32 | bfloat16 | float16 | auto: keep stored (default: %(default)s)")
    export.add_argument("--max-shard-size", default=DEFAULT_SHARD_SIZE,
                        help="e.g. 5GB, 500MB, 2GiB (default: %(default)s)")
    import_help = "HF Llama folder -> our checkpoint"
    imp = commands.add_parser("import", help=import_help, description=import_help)
    imp.add_argument("--hf", required=True, help="HF folder (config.json + safetensors or pytorch_model.bin)")
    imp.add_argument("--out", required=True, help="our checkpoint folder to write (replaced as a whole)")
    imp.add_argument("--dtype", default="float32",
                     help="float32 | bfloat16 | float16 | auto: keep stored (default: %(default)s)")
    imp.add_argument("--max-shard-size", default=DEFAULT_SHARD_SIZE,
                     help="e.g. 5GB, 500MB, 2GiB (default: %(default)s)")
    args = parser.parse_args(argv)
    source = args.checkpoint if args.command == "export" else args.hf
    if not Path(source, CONFIG_NAME).is_file() and not Path(source, "checkpoints").is_dir():
        parser.error(f"{source}: no {CONFIG_NAME} there; pass a model folder (or a fit run's output folder)")
    try:
        run = export_hf if args.command == "export" else import_hf
        summary = run(source, args.out, dtype=args.dtype, max_shard_size=args.max_shard_size)
    except (UsageError, CheckpointError) as exc:  # a flag or the files it names; a bug keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
