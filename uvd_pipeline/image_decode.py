"""The build's image decodes, each bounded in CPU time (`image.decode_time_s`, default 60 s).

A decoder is C code (libjpeg, zlib, libwebp, OpenJPEG, dav1d, libde265, libtiff): a thread cannot
be stopped inside it, and what a file declares bounds its memory (`transforms.decode`), but for
some formats not its time: OpenJPEG's work grows with code blocks and layers no header costs (a
lossless JPEG 2000 of a grainy 5800 x 5800 photo, the most the memory budget lets one have, took
20.8 CPU-s here with OpenJPEG's default settings; with 4 x 4 code blocks and 9 quality layers a
megapixel took 1.1 CPU-s, not 0.62), and a PNG or JPEG of a million empty chunks or segments
keeps Pillow's Python loops busy for seconds. So the time is judged like the memory:

- where what the file declares bounds its decode time within the limit (`transforms.decode.
  declared_decode_s`: a Huffman-coded JPEG's pixels and scans, a PNG's or still WebP's pixels,
  and the file's length, at worst-case costs measured here times 4), it decodes in this process:
  the web's JPEGs, PNGs and WebPs, at no cost but that judgment (10 us an image);
- every other image (JPEG 2000, AVIF, HEIC, TIFF, GIF, BMP, icons, ... and a JPEG, PNG or WebP
  whose declaration allows more than the limit) decodes in a long-lived decoding process of the
  rendering thread (`sources.budget`, pool "image") under the limit: past it the process is
  killed, the image is a `decode_timeout` reject (stage `decode`), and the next image starts a
  fresh process. A decoder crashing there costs its image a `decoder_crashed` reject, not the
  rendering process. The file's bytes go there and the canvas comes back through pipes, and each
  image waits for another process to be scheduled twice: ~1 ms of CPU an image on this 2-core
  machine, more under load (`benchmarks/bench_image_decode.py`), which is why the images whose
  time is bounded anyway stay here.

The limit counts the decoding process's CPU seconds, not the seconds waited: a decode does the
same work on a busy machine as on an idle one, where the seconds it waits for a core grow with
the load (the large decodes here took 1.5-2.3x their CPU time in wall time at a load of 4 on 2
cores). So a file is refused, or not, on a busy or an idle machine alike, and the output stays
the same bytes. The default is far above what any image within the budgets took here (2026-12-05,
CPU seconds: a 100-megapixel PNG or LZW TIFF 3.5, a 49-megapixel AVIF 2.3, a 34-megapixel lossy
JPEG 2000 4.3; the lossless JPEG 2000 above is the one that comes near). An image that close to
the limit can still go either way on another CPU (a slower core, another decoder build): each
refusal is a counted reject naming the limit, visible in the summary and the report, and a
committed unit keeps its outcome on reruns. A process waiting without working (never seen) is
killed after `WALL_FACTOR` times the limit (not below `sources.budget.WALL_FLOOR_S`); where /proc is missing
(not Linux), that wall time is all that is judged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sources import budget
from sources.budget import Budget, BudgetExceeded, JobError, cpu_budget
from transforms import decode, maps
from transforms.decode import DEFAULT_MAX_DECODE_BYTES, DecodedImage, DecodeError, declared_decode_s
from transforms.decode_budget import length_over
from transforms.headers import JpegHeader, jpeg_header
from transforms.errors import Rejected
from transforms.maps import MapError
from transforms.resize import ResizePlan, ResizePolicy

DEFAULT_DECODE_TIME_S = 60.0  # CPU seconds one image's decode may take (`image.decode_time_s`)
WALL_FACTOR = 10  # a decode waited on for this many times its CPU limit is killed all the same
# the decoding process's resident memory, watched while it works: a backstop, the budget proper
# (DEFAULT_MAX_DECODE_BYTES) being judged before decoding from what the file declares
MEMORY_MB = 2 * (DEFAULT_MAX_DECODE_BYTES >> 20)
POOL = "image"


class DecoderFailed(RuntimeError):
    """The decoder raised something no reason foresaw (the caller's catch-all reports it)."""


def limits(decode_time_s: float) -> Budget:
    return cpu_budget(decode_time_s, MEMORY_MB, WALL_FACTOR)


def _call(function: str, decode_time_s: float, *args: Any, error: type[Rejected] = DecodeError, prefix: str = "",
          **kwargs: Any) -> Any:
    """`function` in the decoding process; its refusals come back as `error`, and the limit's own
    (`decode_timeout`, `decode_memory`, `decoder_crashed`) as `error` with `prefix` before them."""
    try:
        return budget.call(function, *args, budget=limits(decode_time_s), pool=POOL, **kwargs)
    except BudgetExceeded as exc:  # decode_timeout, decode_memory (the backstop) or decoder_crashed
        limit = f" (image.decode_time_s: {decode_time_s:g})" if exc.reason == "decode_timeout" else ""
        killed = "; the decoding process was killed" if exc.reason != "decoder_crashed" else ""
        raise error(prefix + exc.reason, f"decoding: {exc.detail}{limit}{killed}") from None
    except JobError as exc:
        if exc.reason is not None:  # a DecodeError or MapError: the reject it always was
            raise error(exc.reason, exc.detail or "") from None
        raise DecoderFailed(f"{exc.kind}: {exc.message}") from None


def in_process(data: bytes, decode_time_s: float, header: JpegHeader | None = None) -> bool:
    """Whether what the file declares bounds its decode within the limit (`declared_decode_s`);
    `header`, a JPEG's walk already made (`walked`)."""
    bound = declared_decode_s(data, over=decode_time_s, header=header)
    return bound is not None and bound <= decode_time_s


def walked(data: bytes, decode_time_s: float) -> JpegHeader | None:
    """A JPEG's segments walked once (`headers.jpeg_header`), for the judgement here and the decode
    after it, which walked them again (2-4 walks a decode); None for another file, or one whose
    length alone sends it to the decoding process (never walked here)."""
    return None if length_over(data, decode_time_s) else jpeg_header(data)


def load_image(data: bytes, size: int, policy: ResizePolicy, decode_time_s: float = DEFAULT_DECODE_TIME_S, *,
               max_pixels: int, pad_value: int = 0, fast: bool = True) -> DecodedImage:
    """`transforms.decode.load_image` within `decode_time_s` CPU seconds: here when the file's
    declaration bounds it so, else in the decoding process."""
    header = walked(data, decode_time_s)
    if in_process(data, decode_time_s, header):
        return decode.load_image(data, size, policy, max_pixels=max_pixels, pad_value=pad_value, fast=fast,
                                 header=header)
    return _call("transforms.decode:load_image", decode_time_s, data, size, policy, max_pixels=max_pixels,
                 pad_value=pad_value, fast=fast)


def decode_through(data: bytes, plan: ResizePlan, decode_time_s: float = DEFAULT_DECODE_TIME_S, *,
                   max_pixels: int, pad_value: int = 0) -> np.ndarray:
    """`transforms.decode.decode_through` (another view of a scene through its image's plan) within
    `decode_time_s` CPU seconds: here when the file's declaration bounds it so, else in the
    decoding process."""
    header = walked(data, decode_time_s)
    if in_process(data, decode_time_s, header):
        return decode.decode_through(data, plan, max_pixels, pad_value, header=header)
    return _call("transforms.decode:decode_through", decode_time_s, data, plan, max_pixels=max_pixels,
                 pad_value=pad_value)


MAP_DECODERS = ("decode_label_map", "decode_depth", "decode_normals", "decode_gray", "decode_depth_mask",
                "decode_luma", "decode_panoptic_ids")
NUMPY_MAP_FORMATS = ("npy", "pfm")  # parsed by NumPy: the work is a copy of the file's bytes


def decode_map(decoder: str, data: bytes, decode_time_s: float = DEFAULT_DECODE_TIME_S, *args: Any) -> np.ndarray:
    """A dense annotation (`transforms.maps.<decoder>(data, *args)`: a label, depth, normal or edge
    map) within `decode_time_s` CPU seconds, like an image: a PNG, JPEG or WebP whose declaration
    bounds its decode, and the NumPy formats (`npy`, `pfm`), here; a TIFF, JPEG 2000 or anything
    else OpenCV reads, in the decoding process. Past the limit the map is an
    `annotation_decode_timeout` reject (stage `annotation`)."""
    if decoder not in MAP_DECODERS:
        raise ValueError(f"unknown map decoder {decoder!r}; allowed: {', '.join(MAP_DECODERS)}")
    if (args and args[0] in NUMPY_MAP_FORMATS) or in_process(data, decode_time_s):
        return getattr(maps, decoder)(data, *args)
    return _call(f"transforms.maps:{decoder}", decode_time_s, data, *args, error=MapError, prefix="annotation_")
