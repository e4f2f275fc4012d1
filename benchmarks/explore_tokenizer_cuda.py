"""GPU experiments on the tokenizer's encode path: where the time goes, and which change helps.

Not part of `make bench`: a one-call script for a lent GPU (`python benchmarks/explore_tokenizer_cuda.py`),
kept so that the experiments behind the codec's CUDA defaults can be rerun. It profiles the main
path without kernel tuning (fp16 + channels_last + compile, batch 64, 512 distinct photo crops,
as in `bench_tokenizer.py --cuda-only`) and times variants of it in the same process, each
against that path and against the eager fp32 codes:

- `coordinate descent tuning` (`tune_kernels=True`; off by default, as in the build
  config, because its picks depend on timings):
  inductor tunes the launch configs of its generated kernels (GroupNorm reductions, fused
  pointwise) instead of taking its heuristics; on an H100: 1,679 vs 1,472 images/s;
- `conv_in padded to 8 channels`: the first conv reads 3 channels, which the tensor-core kernels
  do not take natively; zero channels (with zero weights) change no product;
- `max-autotune`: inductor benchmarks Triton conv/GEMM templates against cuDNN per shape;
- `batch 32`.

The other variants are untuned, except max-autotune, which includes coordinate-descent tuning. Writes `tokenizer_explore.json` (and the profile table) under $OUT (or bench_out/).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_tokenizer import CUDA_BATCH, CUDA_IMAGES, NAMES, best_rate, lvm_model, photo_crops  # noqa: E402
from tokenizer.codec import Tokenizer, code_agreement, eager_encode  # noqa: E402

OUT = os.environ.get("OUT") or "bench_out"
BUDGET_S = float(os.environ.get("UVD_EXPLORE_BUDGET_S", "330"))


def pad_conv_in(tok: Tokenizer, channels: int = 8) -> None:
    """Replace the encoder's first conv by one over `channels` inputs, the extra ones zero, and
    pad the pixels inside the compiled function."""
    old = tok.model.encoder.conv_in
    new = torch.nn.Conv2d(channels, old.out_channels, 3, padding=1).to(old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    tok.model.encoder.conv_in = new.to(memory_format=torch.channels_last).requires_grad_(False)
    extra = channels - old.in_channels
    body = tok._latent_low
    tok._encode_fn = torch.compile(lambda x: body(F.pad(x, (0, 0, 0, 0, 0, extra))), dynamic=False)


def profile_table(tok: Tokenizer, images: np.ndarray) -> str:
    from torch.profiler import ProfilerActivity, profile

    tok.encode(images)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        tok.encode(images)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    events = prof.key_averages()
    table = "(no profiler table: neither device-time column exists in this torch)"
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            table = events.table(sort_by=key, row_limit=40, max_name_column_width=90)
            break
        except Exception:  # noqa: BLE001 - the column's name changed across torch versions
            continue
    total_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
                   for e in events)
    return f"wall {wall * 1e3:.1f} ms for {len(images)} images; GPU busy (sum of kernels) {total_us / 1e3:.1f} ms\n{table}"


def main() -> None:
    started = time.perf_counter()
    os.makedirs(OUT, exist_ok=True)
    gpu = torch.cuda.get_device_name()
    images = photo_crops(NAMES, CUDA_IMAGES, seed=0)
    model = lvm_model(images).to("cuda")
    base_codes = eager_encode(model, images, batch_size=CUDA_BATCH)
    results: list[dict] = []

    def record(name: str, tok: Tokenizer, note: str = "") -> None:
        first = time.perf_counter()
        tok.encode(images[:CUDA_BATCH])
        warm = time.perf_counter() - first
        per_second, codes = best_rate(tok.encode, images)
        again, _ = best_rate(tok.encode, images)
        row = {"variant": name, "images_per_s": round(per_second, 1), "repeat": round(again, 1),
               "identical_pct": round(100 * code_agreement(codes, base_codes), 3), "first_call_s": round(warm, 1),
               "note": note}
        results.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(OUT, "tokenizer_explore.json"), "w") as handle:
            json.dump({"gpu": gpu, "torch": torch.__version__, "rows": results}, handle, indent=1)

    main_tok = Tokenizer(model, "lvm", device="cuda", batch_size=CUDA_BATCH, precision="fp16", compile=True,
                         tune_kernels=False)
    record("main: fp16+channels_last+compile", main_tok)
    table = profile_table(main_tok, images)
    print(table, flush=True)
    with open(os.path.join(OUT, "tokenizer_profile.txt"), "w") as handle:
        handle.write(f"{gpu}, torch {torch.__version__}\n{table}\n")

    variants = [
        ("conv_in padded to 8 channels", lambda tok: pad_conv_in(tok)),
        ("coordinate descent tuning", None),
        ("batch 32", None),
        ("max-autotune-no-cudagraphs", "max-autotune"),
    ]
    for name, change in variants:
        if time.perf_counter() - started > BUDGET_S:
            print(f"budget spent: skipping {name}", flush=True)
            continue
        torch._dynamo.reset()  # a fresh compile under each variant's settings
        tok = Tokenizer(model, "lvm", device="cuda", batch_size=32 if name == "batch 32" else CUDA_BATCH,
                        precision="fp16", compile=True, tune_kernels=name == "coordinate descent tuning")
        if change == "max-autotune":
            tok._encode_fn = torch.compile(tok._latent_low, dynamic=False, mode="max-autotune-no-cudagraphs")
        elif change is not None:
            change(tok)
        record(name, tok)
        del tok
    if time.perf_counter() - started < BUDGET_S + 60:
        torch._dynamo.reset()
        record("main again (recompiled; drift of the machine)", main_tok)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    for row in results:
        print(f"{row['variant']:<40} {row['images_per_s']:>8} {row['repeat']:>8} {row['identical_pct']:>8}% "
              f"first {row['first_call_s']} s")


if __name__ == "__main__":
    main()
