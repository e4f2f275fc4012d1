"""The build keeps freed memory for reuse while its worker threads run the CPU tokenizer
(`tokenizer.host_memory`): a thread's second 48 MB buffer, allocated after the first was
freed, is then the same memory again, not pages the kernel must zero-fill anew."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from uvd_pipeline.build import tokenizes_in_process
from uvd_pipeline.config import load_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")

# a new thread (as Beam's workers are) allocates, frees and allocates again a 48 MB buffer, each
# filled; prints the minor page faults of the second fill (resource.RUSAGE_THREAD). 48 MB: over
# glibc's largest dynamic mmap threshold (32 MiB), under what a thread's own arena holds (64 MiB)
PROBE = r"""
import ctypes, resource, sys, threading
from tokenizer.host_memory import freed_memory_kept

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = int(sys.argv[2]) << 20

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

with freed_memory_kept(sys.argv[1] != "default") as took:
    inside = faults()
print(took, inside, faults())
"""
HELPERS = PROBE[: PROBE.index("with freed_memory_kept")]


def untuned(**env: str) -> dict[str, str]:
    """This process's environment without malloc settings, plus `env`: distributed's Nanny writes
    `MALLOC_TRIM_THRESHOLD_` into its parent's environment when it starts a worker, so a pytest
    worker that ran the Dask tests first passed it on (the fresh-clone CI's three failures here)."""
    plain = {name: value for name, value in os.environ.items()
             if not name.startswith("MALLOC_") and name not in ("GLIBC_TUNABLES", "UVD_KEEP_FREED_MEMORY")}
    return {**plain, **env}


def probe(mode: str, megabytes: int = 48, **env: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(megabytes)], capture_output=True, text=True, check=True,
                         env=untuned(**env)).stdout
    took, inside, after = out.split()
    return took, int(inside), int(after)


def test_a_thread_reuses_freed_memory_inside_the_block_only():
    took, kept, after = probe("keep")
    _, default, _ = probe("default")
    assert took == "True"
    # 48 MB is 12,288 pages of 4 KiB: glibc's default unmaps the freed buffer and the second one
    # faults in again; kept, it is the same memory
    assert default > 20 * max(kept, 50), (default, kept)
    assert after > 20 * max(kept, 50), (after, kept)  # the defaults are back after the block


NESTED = HELPERS + """
with freed_memory_kept() as outer:
    with freed_memory_kept() as inner:
        pass
    between = faults()
print(outer, inner, between, faults())
"""


def test_an_inner_block_leaves_the_settings_to_the_outermost():
    """A block inside another (the report's reconstructions inside a build's) gave glibc's
    defaults back as it ended, under the outer block still running."""
    outer, inner, between, after = subprocess.run([sys.executable, "-c", NESTED, "keep", "48"], capture_output=True,
                                                  text=True, check=True, env=untuned()).stdout.split()
    assert outer == inner == "True"
    assert int(between) < 2_000 and int(after) > 12_000, (between, after)


FOR_GOOD = HELPERS + """
from tokenizer.host_memory import keep_for_good

took = keep_for_good()
with freed_memory_kept():  # a block opened and closed after it (the report's, say) gives nothing back
    pass
print(took, faults())
"""


def test_a_block_ending_leaves_memory_kept_for_good():
    took, after = subprocess.run([sys.executable, "-c", FOR_GOOD, "keep", "48"], capture_output=True, text=True,
                                 check=True, env=untuned()).stdout.split()
    assert took == "True" and int(after) < 2_000, after


def build_config(folder, mode: str, tokenize: bool):
    (folder / "in").mkdir(exist_ok=True)
    config = folder / f"{mode}-{tokenize}.yaml"
    config.write_text(f"""version: 1
output: {folder / 'out'}
sources: [{{name: web, type: laion, path: {folder / 'in'}}}]
tokenizer: {{enabled: {str(tokenize).lower()}}}
beam: {{runner: DirectRunner, direct_num_workers: 2, direct_running_mode: {mode}}}
""")
    return load_config(str(config))


@pytest.mark.parametrize("mode, tokenize, expected", [
    ("auto", True, True), ("multi_threading", True, True), ("in_memory", True, True),
    ("multi_processing", True, False), ("auto", False, False)])
def test_builds_that_encode_in_their_own_process_keep_freed_memory(tmp_path, mode, tokenize, expected):
    assert tokenizes_in_process(build_config(tmp_path, mode, tokenize)) is expected


# a build's Tokenize step set up in this process: made here (the graph's process, as the build's
# in-process workers) or made in the test's process and sent over (a worker process, as Beam sends it)
WORKER = HELPERS + """
import pickle
from uvd_pipeline.tokenize_stage import TokenizeSettings
from uvd_pipeline.write_steps import TokenizeShard

if sys.argv[3] == "here":
    step = TokenizeShard("unused", TokenizeSettings(sys.argv[4], device="cpu", compile=False), "0")
else:
    step = pickle.loads(bytes.fromhex(sys.argv[3]))
step.setup()
print(faults())
"""


def test_a_worker_process_keeps_freed_memory_once_its_cpu_tokenizer_loads(tiny_tokenizer):
    """Worker processes (`multi_processing`) encoding tokens faulted each batch's activations in
    afresh (900 web images, 2 processes: 78-80 s, 29-30 s of it system time; kept: 60-61 s, 4.5):
    the Tokenize step keeps freed memory for good in a process that is not the graph's, from its
    setup on; in the graph's own process (in-process workers) it leaves that to the build's block."""
    import pickle

    from uvd_pipeline.tokenize_stage import TokenizeSettings
    from uvd_pipeline.write_steps import TokenizeShard

    sent = pickle.dumps(TokenizeShard("unused", TokenizeSettings(str(tiny_tokenizer), device="cpu", compile=False),
                                      "0")).hex()

    def second_fill(how: str) -> int:
        return int(subprocess.run([sys.executable, "-c", WORKER, "keep", "48", how, str(tiny_tokenizer)],
                                  capture_output=True, text=True, check=True, env=untuned()).stdout)

    assert second_fill(sent) < 2_000
    assert second_fill("here") > 12_000


# glibc's mallinfo2 (its `hblks`: blocks mmap'd now), for the scripts below
MALLINFO = r"""
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
"""

# whether a 48 MB block is mmap'd (mallinfo2's hblks) at each encode `tokenizer.evaluate` asks for
EVALUATE = MALLINFO + r"""
import sys
from tokenizer import TINY, Tokenizer, build
from tokenizer.data import find_images
from tokenizer.evaluate import evaluate

tokenizer = Tokenizer(build(TINY, seed=0), "tiny", batch_size=2, device="cpu")
plain, mapped = tokenizer.encode, []

def encode(images):
    before = libc.mallinfo2().hblks
    block = libc.malloc(48 << 20)
    mapped.append(libc.mallinfo2().hblks - before)
    libc.free(block)
    return plain(images)

tokenizer.encode = encode
evaluate(tokenizer, find_images(sys.argv[1]), batch_size=2)
print(*mapped)
"""


def test_evaluate_on_cpu_keeps_freed_memory_while_it_runs(tmp_path):
    """`tokenizer.evaluate` of 64 photos at batch 16 spent 16.8 of its 34.9 s faulting the
    decoder's activations (over 500 MB a tensor) in afresh each batch: 20.0 s kept. Each
    encode now runs with blocks from the heap; opted out, they are mmap'd as before."""
    from uvd_pipeline.sample.media import square_photos

    for number, photo in enumerate(square_photos(("astronaut", "coffee", "chelsea", "rocket"), 64)):
        Image.fromarray(photo).save(tmp_path / f"{number}.png")
    runs = {}
    for setting in ("1", "0"):
        runs[setting] = subprocess.run([sys.executable, "-c", EVALUATE, str(tmp_path)], capture_output=True, text=True,
                                       check=True, env=untuned(UVD_KEEP_FREED_MEMORY=setting)).stdout.split()
    assert runs == {"1": ["0", "0"], "0": ["1", "1"]}, runs


@pytest.mark.parametrize("env", [{"UVD_KEEP_FREED_MEMORY": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"MALLOC_TRIM_THRESHOLD_": "4194304"},
                                 {"GLIBC_TUNABLES": "glibc.rtld.nns=4:glibc.malloc.mmap_threshold=4194304"}])
def test_a_user_who_opts_out_or_tunes_malloc_himself_keeps_his_settings(env):
    took, inside, _ = probe("keep", **env)
    assert took == "False"
    assert inside > 12_000, inside  # the 48 MB buffer faulted in again: nothing was changed


def test_tunables_of_other_parts_of_glibc_do_not_turn_it_off():
    took, kept, _ = probe("keep", GLIBC_TUNABLES="glibc.rtld.nns=4")
    assert took == "True" and kept < 2_000, kept


# how many malloc arenas 8 threads, each allocating while the others do, have after the block
# (glibc fixes its limit on arenas the first time a thread needs a new one, for good)
ARENAS = r"""
import ctypes, os, re, tempfile, threading
from tokenizer.host_memory import freed_memory_kept

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fdopen.restype = ctypes.c_void_p

def arenas():
    fd, path = tempfile.mkstemp()
    stream = ctypes.c_void_p(libc.fdopen(fd, b"w"))
    libc.malloc_info(0, stream); libc.fclose(stream)
    with open(path) as report:
        text = report.read()
    os.unlink(path)
    return len(re.findall(r'<heap nr="[0-9]+"', text))

def allocate_together(threads):
    start = threading.Barrier(threads)
    def work():
        start.wait()
        for block in [libc.malloc(1000) for _ in range(2000)]:
            libc.free(block)
    running = [threading.Thread(target=work) for _ in range(threads)]
    for thread in running: thread.start()
    for thread in running: thread.join()

with freed_memory_kept() as took:
    allocate_together(4)  # a build's worker threads
for _ in range(5):
    allocate_together(8)
print(took, arenas())
"""


def test_threads_after_the_block_still_get_arenas_of_their_own():
    """Limiting glibc to one arena inside the block (M_ARENA_MAX 1) limited the whole process to
    one for good, whatever was set after it: every later thread of a program that had called
    run_build contended for one heap."""
    took, arenas = subprocess.run([sys.executable, "-c", ARENAS], capture_output=True, text=True,
                                  check=True, env=untuned()).stdout.split()
    assert took == "True"
    assert int(arenas) > 1, arenas


# whether a 512 KiB block is mmap'd (mallinfo2's hblks) after the block, under the user's settings
USERS_THRESHOLD = MALLINFO + r"""
from tokenizer.host_memory import freed_memory_kept


with freed_memory_kept():
    pass
before = libc.mallinfo2().hblks
block = libc.malloc(512 * 1024)
print(libc.mallinfo2().hblks - before)
"""


def test_the_users_mmap_threshold_holds_after_the_block():
    """A user's MALLOC_MMAP_THRESHOLD_ (1 MiB: a 512 KiB block comes from the heap) was replaced by
    glibc's default after the block (128 KiB: the block mmap'd)."""
    env = untuned(MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    mapped = subprocess.run([sys.executable, "-c", USERS_THRESHOLD], capture_output=True, text=True, check=True,
                            env=env).stdout.split()
    assert mapped == ["0"]


# a worker thread's second encode of 8 photo-sized images with the embedded tokenizer, in batches
# of 8, inside the build's block: its codes' sum and the thread's minor page faults
THREAD_ENCODE = r"""
import resource, threading
import numpy as np
from tokenizer import Tokenizer
from tokenizer.checkpoint import embedded_checkpoint
from tokenizer.host_memory import freed_memory_kept

tokenizer = Tokenizer.from_pretrained(embedded_checkpoint(), batch_size=8, threads=1)
images = np.random.default_rng(0).integers(0, 255, (8, 256, 256, 3), dtype=np.uint8)
out = []

def work():
    tokenizer.encode(images)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    out.append(int(tokenizer.encode(images).astype(np.int64).sum()))
    out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

with freed_memory_kept():
    worker = threading.Thread(target=work); worker.start(); worker.join()
print(*out)
"""


def test_a_worker_threads_cpu_encode_reuses_its_activations():
    """A worker thread's arena cannot hold a block over 64 MiB: the embedded tokenizer's 256 px
    activations at the build's batch of 16 (134 MB) were mapped and zero-filled again at every
    batch, kept memory or not (two threads encoding together, compiled: 19.2 images/s; 295,000
    faults for this encode of 8 in one batch, every run). A CPU forward pass now takes at most as
    many images as keep an activation within 32 MiB (`cpu_forward_images`): 27.4 images/s, and
    8,300 faults here (86,000 in one run of four: a freed heap of the thread's arena unmapped)."""
    from tokenizer.codec import cpu_forward_images
    from tokenizer.config import LVM, TINY

    assert (cpu_forward_images(LVM, 256 * 256), cpu_forward_images(TINY, 256 * 256),
            cpu_forward_images(TINY, 64 * 64)) == (1, 4, 64)
    _, faults = subprocess.run([sys.executable, "-c", THREAD_ENCODE], capture_output=True, text=True, check=True,
                                   env=untuned()).stdout.split()
    assert int(faults) < 150_000, faults
