"""The config of the build's own steps (`image:`, `split:`, `dedup:`, `tokenizer:`, `mixture:`):
the image size and resize policy with their budgets, the val share, deduplication, the tokenizer
and the token mix, each field checked before the build starts."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

from transforms.phash import band_width, probes_per_band
from uvd_pipeline.config_base import Strict
from uvd_pipeline.mixture import GROUPS, PAPER_MIX


MAX_DEDUP_PROBES = 1024  # index buckets one image may look up (bands x probes per band)
MAX_TORCH_THREADS = 1024  # torch threads per worker process; more is a typo (each one a thread of every worker)
MAX_PIXELS_LIMIT = 1 << 30  # a header guard above this (3 GiB of RGB) guards nothing


class ImageConfig(Strict):
    size: StrictInt = Field(256, ge=16, le=4096, description="side of the square images (LVM: 256)")
    resize: Literal["squash", "center_crop", "pad"] = Field(
        "center_crop", description="squash = the LVM scripts' plain resize; center_crop / pad keep aspect"
    )
    pad_value: StrictInt = Field(0, ge=0, le=255, description="grey level of the padding under `pad`")
    max_pixels: StrictInt = Field(178_956_970, ge=1, le=MAX_PIXELS_LIMIT,
                            description="decompression-bomb guard on header size")
    png_compression: StrictInt = Field(1, ge=0, le=9, description="zlib level of the lossless rendered images; 0 and 1 "
                                 "(speed) use one PNG row filter, 2-9 (size) libpng's adaptive choice; 1 "
                                 "(the default) deflates with zlib-ng, faster than zlib for no larger files")
    decode_time_s: StrictFloat = Field(60.0, gt=0, le=86_400, description="CPU seconds one input image's (or "
                                 "annotation map's) decode may take: a JPEG, PNG or still WebP whose header bounds its decode within it decodes "
                                 "in the rendering process, any other image in a decoding process killed past it (the "
                                 "image a `decode_timeout` reject). CPU, not wall, seconds: the same on a busy machine. "
                                 "A lossless JPEG 2000 of a grainy photo at the memory budget took 21 s here")

    @field_validator("size")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"must be a multiple of 16 (the VQGAN downsamples by 16), got {value}")
        return value


class SplitConfig(Strict):
    val_fraction: StrictFloat = Field(0.05, ge=0.0, lt=1.0, description="share of groups hashed into 'val'")


class MixtureConfig(Strict):
    """The token mix to train on (see `uvd_pipeline.mixture`); it shapes `mixture.yaml` only."""

    groups: dict[str, StrictFloat] = Field(
        default_factory=lambda: dict(PAPER_MIX),
        description="token share per group: single_images, image_sequences, annotated_images, annotated_video "
        "(default: the paper's UVDv1 mix)")
    sources: dict[str, StrictFloat] = Field(
        default_factory=dict, description="weight of a source within its group (default: the tokens it holds)")
    mode: Literal["paper", "stream"] = Field("paper", description="paper: BOS/EOS counted per sentence")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if name not in GROUPS:
                raise ValueError(f"unknown group {name!r}; allowed: {', '.join(GROUPS)}")
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one group needs a positive weight")
        return value

    @field_validator("sources")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of {name!r} must be a finite number > 0, got {weight}")
        return value


class DedupConfig(Strict):
    """Deduplication of image units (web and class images) across all sources; see
    `uvd_pipeline.dedup` for the scope, the fingerprints and which copy is kept."""

    enabled: StrictBool = Field(True, description="drop duplicate web and class images before sentences are made")
    exact: StrictBool = Field(True, description="drop copies whose rendered pixels are identical (sha256)")
    near: StrictBool = Field(True, description="drop copies whose 64-bit pHash is within hamming_threshold bits")
    hamming_threshold: StrictInt = Field(6, ge=0, le=32, description="largest pHash Hamming distance of a near copy")
    bands: StrictInt = Field(4, ge=1, le=64, description="pHash bands of the near-duplicate index (a divisor of 64)")

    @field_validator("bands")
    @classmethod
    def _divides_64(cls, value: int) -> int:
        band_width(value)  # the index's own check (a ValueError that names the rule)
        return value

    @model_validator(mode="after")
    def _usable(self) -> "DedupConfig":
        if self.enabled and not (self.exact or self.near):
            raise ValueError("enabled, but neither exact nor near is on; set dedup.enabled: false instead")
        if self.enabled and self.near:
            probes = self.bands * probes_per_band(self.hamming_threshold, self.bands)
            if probes > MAX_DEDUP_PROBES:
                raise ValueError(
                    f"bands {self.bands} with hamming_threshold {self.hamming_threshold} make every "
                    f"image look up {probes} index buckets (at most {MAX_DEDUP_PROBES}); use more bands (each band "
                    f"may then differ by hamming_threshold // bands bits)")
        return self


class TokenizerConfig(Strict):
    enabled: StrictBool = Field(True, description="write Arrow token shards after the rendered shards")
    checkpoint: str = Field("embedded", min_length=1, description="'embedded' (the repo's small tokenizer) or a "
                            "muse-format folder (config.json + pytorch_model.bin), e.g. the LVM tokenizer")
    batch_size: StrictInt = Field(16, ge=1, le=4096, description="images per forward pass (on CPU at most as "
                                 "many as keep an activation within 32 MiB: 4 for the embedded tokenizer, 1 for "
                                 "LVM's, so a worker thread's glibc arena reuses them)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: StrictBool = Field(True, description="torch.compile the encoder (with zero-padded last batches: one "
                          "static shape): the sample build's Tokenize ran 2.7x faster on this project's 2-core CPU machine "
                          "(7.7 against 2.8 images per worker-second), for 12-35 s of compile per worker process; "
                          "codes differ from the eager forward's by rounding in about 2 of 100,000 (near ties), so "
                          "token stats record it and switching it re-tokenizes. Off for tiny runs or exact eager codes")
    precision: Literal["fp32", "tf32", "fp16", "bf16"] = Field(
        "fp32", description="GPU arithmetic: fp32 (codes of the plain forward), tf32, fp16 or bf16 (faster; "
        "some codes differ by rounding, fp16 fewest: see `make bench`); with device auto and no GPU the "
        "codec computes in fp32")
    tune_kernels: StrictBool = Field(
        False, description="GPU with compile: inductor times launch configs of its generated kernels (faster "
        "encode, a much longer compile; figures in the README); the pick can differ between processes, so codes "
        "may differ by rounding between workers: off, so token bytes never depend on where they were made")
    threads: StrictInt | None = Field(1, ge=1, le=MAX_TORCH_THREADS, description="torch threads per worker process (one worker per "
                                "core is the default; worker threads of one process each run on this "
                                "many; fixed so token bytes never depend on the machine: CPU codes differ "
                                "by rounding at near ties between thread counts, and null, torch's own "
                                "count, is the machine's cores)")
    accelerator: str | None = Field(None, description="Beam resource hint for the tokenize step only, e.g. "
                                    "'type:nvidia-l4;count:1;install-nvidia-driver'")

    @model_validator(mode="after")
    def _precision_fits_device(self) -> "TokenizerConfig":
        if self.precision == "tf32" and self.device == "cpu":
            raise ValueError("precision tf32 is a GPU mode; with device: cpu use fp32 (exact) or fp16/bf16")
        return self
