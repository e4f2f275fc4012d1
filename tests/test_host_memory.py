"""The build keeps freed memory for reuse while its worker threads run the CPU tokenizer
(`uvd_pipeline.host_memory`): a thread's second 128 MB buffer, allocated after the first was
freed, is then the same memory again, not pages the kernel must zero-fill anew."""

from __future__ import annotations

import subprocess
import sys

import pytest

from uvd_pipeline.build import tokenizes_in_process
from uvd_pipeline.config import load_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")

# a new thread (as Beam's workers are) allocates, frees and allocates again a 128 MB buffer, each
# filled; prints the minor page faults of the second fill (resource.RUSAGE_THREAD)
PROBE = r"""
import ctypes, resource, sys, threading
from uvd_pipeline.host_memory import freed_memory_kept

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 128 << 20

def second_fill(out):  # plain malloc, as torch's CPU allocator (numpy asks for huge pages)
    first = libc.malloc(SIZE); ctypes.memset(first, 1, SIZE); libc.free(first)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    second = libc.malloc(SIZE); ctypes.memset(second, 2, SIZE)
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    libc.free(second)

def faults():
    out = []
    worker = threading.Thread(target=second_fill, args=(out,)); worker.start(); worker.join()
    return out[0]

with freed_memory_kept(sys.argv[1] == "keep") as took:
    inside = faults()
print(took, inside, faults())
"""


def probe(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    took, inside, after = out.split()
    return took, int(inside), int(after)


def test_a_thread_reuses_freed_memory_inside_the_block_only():
    took, kept, after = probe("keep")
    _, default, _ = probe("default")
    assert took == "True"
    # 128 MB is 32,768 pages of 4 KiB: glibc's default unmaps the freed buffer and the second one
    # faults in again; kept, it is the same memory
    assert default > 20 * max(kept, 50), (default, kept)
    assert after > 20 * max(kept, 50), (after, kept)  # the defaults are back after the block


@pytest.mark.parametrize("mode, tokenize, expected", [
    ("auto", True, True), ("multi_threading", True, True), ("in_memory", True, True),
    ("multi_processing", True, False), ("auto", False, False)])
def test_builds_that_encode_in_their_own_process_keep_freed_memory(tmp_path, mode, tokenize, expected):
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"""version: 1
output: {tmp_path / 'out'}
sources: [{{name: web, type: laion, path: {tmp_path / 'in'}}}]
tokenizer: {{enabled: {str(tokenize).lower()}}}
beam: {{runner: DirectRunner, direct_num_workers: 2, direct_running_mode: {mode}}}
""")
    assert tokenizes_in_process(load_config(str(config))) is expected
