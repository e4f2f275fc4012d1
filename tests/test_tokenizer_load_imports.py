"""Loading a tokenizer for eager use (the report's reconstructions, the trainer demo's decode)
builds the model on the meta device and skips its random init: the codebook's `normal_` on a meta
tensor imported 822 modules (torch's Python meta kernels, sympy) for ~1.1 CPU-s, 6.7 s at load 11,
before weights that replace it were loaded."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import sys
import numpy as np
import tokenizer.codec  # noqa: F401 - the codec's own imports are not the load's
from uvd_pipeline.tokenize_stage import TokenizeSettings, load_tokenizer
before = set(sys.modules)
tok = load_tokenizer(TokenizeSettings("embedded", compile=False))
added = set(sys.modules) - before
codes = tok.encode(np.full((1, 256, 256, 3), 128, np.uint8))
print(len(added), "sympy" in sys.modules, codes.shape[1], int(codes.max()) < tok.codebook_size)
"""


def test_the_eager_tokenizer_loads_without_torchs_meta_kernels():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    added, sympy, tokens, in_codebook = int(out[0]), out[1], int(out[2]), out[3]
    assert sympy == "False" and added < 100, out  # 822 modules, sympy among them, before
    assert tokens == 256 and in_codebook == "True"  # a working codec: 16x16 codes of its codebook
