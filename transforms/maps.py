"""Decode dense annotation files (label maps, depth, disparity, normals) from bytes.

Each raises `MapError` with a short reason when the bytes are not what the format promises, so
a bad annotation rejects its pair instead of crashing the build.
"""

from __future__ import annotations

import io
import re
from typing import Literal, Sequence

import cv2
import numpy as np
from PIL import Image

from transforms.decode import DEFAULT_MAX_DECODE_BYTES, pixels_judged_here
from transforms.decode_budget import check_header_held, decode_cost
from transforms.errors import DecodeError, Rejected
from transforms.pillow_open import open_input
from transforms.png_chunks import without_png_text

# per pixel while an RGB map's colours become ids (`_colour_labels`): the packed int32 colours, the
# int64 positions and their int64 look-up, the mask and the int32 ids
COLOUR_MAP_WORK_BYTES = 25
MAP_WORK_BYTES = 8  # per pixel beyond the decoded buffer: the float32 / int32 copies a map goes through

DepthFormat = Literal["png16", "npy", "pfm", "tiff", "co3d"]
DEPTH_FORMATS = ("png16", "npy", "pfm", "tiff", "co3d")


class MapError(Rejected):
    """A map (depth, mask, labels) that cannot be read or rendered."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open_map(data: bytes, max_bytes: int | None = None) -> Image.Image:
    """Pillow's image of a map's bytes (`open_input`, its text chunks set aside), its header judged
    first as an image's is (`check_header_held`): an AVIF's or HEIF's Exif item, which libavif or
    libheif copies inside `Image.open` (a 200 MB one in a HEIC map raised the process's peak by
    1,050 MiB before OpenCV refused the file), a JPEG's segments and the IFD0 Pillow's open loads, a
    TIFF's IFD0 and the numbers of its first IFD (strip offsets: a 1 x 2,000,000 map of a row a strip
    took 659 MiB opening); over `max_bytes` (default `DEFAULT_MAX_DECODE_BYTES`) `annotation_too_large`. What
    is refused before opening for any other reason (a JPEG of too many Exif segments) is the map's
    reject under the image's reason."""
    try:
        check_header_held(data, DEFAULT_MAX_DECODE_BYTES if max_bytes is None else max_bytes)
        return open_input(io.BytesIO(without_png_text(data, refuse_pixel_chunks=False)), segments_counted=True)
    except DecodeError as exc:
        reason = "annotation_too_large" if exc.reason == "image_too_large" else exc.reason
        raise MapError(reason, exc.detail) from None


def _declared(data: bytes, max_bytes: int | None = None) -> tuple[int, int, str] | None:
    """(width, height, mode) from the header alone, or None when Pillow does not know the format;
    at any size (Pillow's own pixel limit lifted): `_imdecode` judges it on its memory budget.
    A PNG's text chunks are set aside first (`without_png_text`: a zTXt past Pillow's 1 MiB
    `MAX_TEXT_CHUNK` made Pillow refuse it, and OpenCV then decoded a 9000x9000 16-bit map with
    no budget judged: +772 MiB); a PNG whose header Pillow still cannot read is refused, never
    decoded unjudged."""
    try:
        with pixels_judged_here(), _open_map(data, max_bytes) as image:
            return image.size[0], image.size[1], image.mode
    except MapError:
        raise
    except Exception as exc:
        if data.startswith(_PNG_SIGNATURE):
            raise MapError("corrupt_annotation", f"PNG header unreadable: {type(exc).__name__}") from None
        return None


def _judged(data: bytes, max_bytes: int | None = None, work_bytes: int = MAP_WORK_BYTES) -> tuple[int, int, str] | None:
    """What the header declares, after checking on it that the map fits the memory budget
    (`max_bytes`, default `DEFAULT_MAX_DECODE_BYTES` as it stands when called), `work_bytes` a pixel
    beyond the decoded buffer."""
    if not data:
        raise MapError("empty_annotation")
    max_bytes = DEFAULT_MAX_DECODE_BYTES if max_bytes is None else max_bytes
    declared = _declared(data, max_bytes)
    if declared is not None:
        w, h, mode = declared
        cost = decode_cost(w, h, mode) + w * h * work_bytes
        if cost > max_bytes:
            raise MapError("annotation_too_large", f"{w}x{h} {mode} map needs about {cost >> 20} MiB, "
                                                   f"over the budget of {max_bytes >> 20} MiB")
    return declared


def _imdecode(data: bytes, max_bytes: int | None = None) -> np.ndarray:
    """Decode a map after checking, on its header, that it fits the memory budget."""
    _judged(data, max_bytes)
    return _opencv_decode(data)


def _opencv_decode(data: bytes) -> np.ndarray:
    """OpenCV's decode of a map already judged on its header (bit depth and channels as stored)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise MapError("corrupt_annotation", "not a decodable image")
    return array


def _palette_labels(data: bytes) -> np.ndarray:
    """A palette (P) image's class ids: its indices, as Pillow reads them (OpenCV only gives their
    colours), or its greys where it is a grey map's palette re-save (`grey_palette_values`)."""
    try:
        with pixels_judged_here(), _open_map(data) as image:
            indices = np.asarray(image)
            entries = image.getpalette() or []
            counts = image.histogram()  # Pillow's C count of each index: a third of a bincount's time
    except MapError:
        raise
    except Exception as exc:  # a truncated or corrupt file: name the error only, never its bytes
        raise MapError("corrupt_annotation", f"palette image: {type(exc).__name__}") from None
    greys = grey_palette_values(np.flatnonzero(counts), entries)
    return indices if greys is None else greys[indices]


def _bilevel_labels(data: bytes) -> np.ndarray:
    """A 1-bit PNG's classes as Pillow reads them, 0 and 1 (`Image.fromarray(mask).save()` of a
    bool mask): OpenCV expands it to 0 and 255, and 255 is the void mark, so every foreground
    pixel was drawn as unlabelled."""
    try:
        with pixels_judged_here(), _open_map(data) as image:
            return np.asarray(image).astype(np.int32)
    except MapError:
        raise
    except Exception as exc:  # a truncated or corrupt file: name the error only, never its bytes
        raise MapError("corrupt_annotation", f"1-bit image: {type(exc).__name__}") from None


def grey_palette_values(used: np.ndarray, entries: list[int]) -> np.ndarray | None:
    """The grey of each palette index when the palette is a grey label map's re-save: every entry
    of the palette is grey (R = G = B), no two entries a pixel uses (`used`, the indices its
    pixels hold) share a grey, and some used index is not its grey; else None (the indices are
    the classes). ImageMagick's `convert x.png PNG8:x.png` (and `-define png:color-type=3`) of
    a grey map, and Pillow's `quantize`, write its greys and no other entry, in their own order,
    so index 1 held class 150: the file shows the greys, and a grey map stored as RGB is read as
    its grey. Pillow and mmseg read the indices; for a palette with any colour in it (PASCAL
    VOC's colour map, ADE20K's colour palette), even where the pixels use only its grey entries
    (VOC's car, 7, is (128, 128, 128); ADE20K's wall, 1, (120, 120, 120)), and for one of identity
    greys (Pillow's L to P), those stay indices."""
    colours = np.asarray(entries[: len(entries) // 3 * 3], np.int32).reshape(-1, 3)
    if used.size == 0 or used[-1] >= len(colours):
        return None  # an index past the palette: no colour to read
    picked = colours[used]
    if not (colours == colours[:, :1]).all() or len(np.unique(picked[:, 0])) != len(used) or \
            (picked[:, 0] == used).all():
        return None
    greys = np.arange(256, dtype=np.int32)
    greys[: len(colours)] = colours[:, 0]
    return greys


# the full ADE20K release's `_seg.png`: class = R / 10 * 256 + G (its utils_ade20k.loadAde20K), B the instance
ADE_FULL_ENCODING = "ade20k_full"
LABEL_ENCODINGS = ("ids", ADE_FULL_ENCODING)


def decode_ade20k_full_classes(data: bytes) -> np.ndarray:
    """A full-release ADE20K `_seg.png` -> int32 class ids (0 unlabelled, up to 3688 in 2021's): R
    holds class // 256 times 10, G class % 256 (`int(R / 10) * 256 + G`, as the release's own
    loader reads it); B, the instance, is not a class. Anything but an 8-bit RGB(A) PNG is no such map."""
    array = _opencv_decode(data)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] < 3:
        raise MapError("bad_label_map", f"a full ADE20K _seg.png is 8-bit RGB, got {array.dtype} "
                                        f"{array.shape[2] if array.ndim == 3 else 1} channel(s)")
    classes = (array[..., 2] // 10).astype(np.int32)  # OpenCV's BGR: R is [..., 2]
    classes *= 256  # in place: one int32 map beside the decoded one, within `MAP_WORK_BYTES`
    classes += array[..., 1]
    return classes


def decode_label_map(data: bytes, encoding: str = "ids", colour_ids: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """A single-channel 8- or 16-bit label PNG -> int32 class (or panoptic) ids; with `encoding`
    `ade20k_full`, a full ADE20K release's colour-coded `_seg.png` (`decode_ade20k_full_classes`);
    with `colour_ids` (`[r, g, b, id]` rows: a VOC export's `labelmap.txt`), an RGB map as the
    export painted it, each colour its class (`_colour_labels`).

    A palette (P) PNG, as PASCAL VOC and many converted ADE20K or LIP copies store labels, holds
    the class ids as its indices (what Pillow, and so mmseg and torchvision, read); its palette
    only says how a viewer shows them, so the indices are read, never the colours, but for a
    grey map re-saved as a palette (`grey_palette_values`), whose greys are its classes. A 1-bit
    PNG holds classes 0 and 1, as Pillow (and so mmseg) reads it (`_bilevel_labels`)."""
    if encoding not in LABEL_ENCODINGS:
        raise ValueError(f"unknown label map encoding {encoding!r}; allowed: {', '.join(LABEL_ENCODINGS)}")
    declared = _judged(data)
    if len(colour_ids) and declared is not None and declared[2] in ("RGB", "RGBA"):
        _judged(data, work_bytes=COLOUR_MAP_WORK_BYTES)  # its colours looked up: judged again for that
    if encoding == ADE_FULL_ENCODING:
        return decode_ade20k_full_classes(data)
    if declared is not None and declared[2] == "P":
        return _palette_labels(data).astype(np.int32)
    if declared is not None and declared[2] == "1":
        return _bilevel_labels(data)
    array = _opencv_decode(data)
    if array.ndim == 3 and array.shape[2] >= 3 and len(colour_ids):
        try:
            return _colour_labels(array, colour_ids)
        except MapError:
            if not (np.ptp(array[..., :3], axis=2) == 0).all():
                raise  # else a grey map stored as RGB, its greys no colours of the file: read as before
    if array.ndim == 3:
        if array.shape[2] >= 3 and (np.ptp(array[..., :3], axis=2) == 0).all():
            array = array[..., 0]  # grey stored as RGB
        else:
            raise MapError("bad_label_map", f"expected one channel, got {array.shape[2]}")
    return array.astype(np.int32)


def _colour_labels(array: np.ndarray, colour_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """An RGB map painted in a label file's colours (CVAT's VOC exports: datumaro's `paint_mask` of
    `labelmap.txt`'s colours) -> the ids those colours stand for, as datumaro's `unpaint_mask` reads
    it. A colour the file does not list is `bad_label_map`, naming it and its pixels: a map of
    another label file, whose classes cannot be told (black, CVAT's background, is listed as such)."""
    if array.dtype != np.uint8:
        raise MapError("bad_label_map", f"a {array.dtype} RGB map; a label file's colours are 8-bit")
    table = np.asarray(colour_ids, np.int64).reshape(-1, 4)
    listed = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    order = np.argsort(listed, kind="stable")
    listed, ids = listed[order], table[order, 3].astype(np.int32)
    packed = array[..., 2].astype(np.int32) << 16  # OpenCV's BGR: R is [..., 2]
    packed |= array[..., 1].astype(np.int32) << 8
    packed |= array[..., 0]
    at = np.minimum(np.searchsorted(listed, packed), len(listed) - 1)
    unlisted = listed[at] != packed
    if unlisted.any():
        shown = np.unique(packed[unlisted])[:3]
        named = ", ".join(f"({c >> 16}, {c >> 8 & 255}, {c & 255})" for c in shown.tolist())
        raise MapError("bad_label_map", f"{int(unlisted.sum())} pixels of colours no label file line gives "
                                        f"({named}{' ...' if len(shown) == 3 else ''})")
    return ids[at]


# per pixel beyond the decoded buffer while a panoptic PNG becomes class ids: its int32 ids, the
# int64 segment positions `render_annotated` looks them up at, masks, the int32 class map; a
# 1600x1200 PNG of 39 segments peaked at 23 bytes a pixel all told, its decoded RGB included
# (tracemalloc), charged 7 + 24 here; one of ids none listed (a 2048x2048 PNG of 2^22), the ids,
# its mask, their sorted copy and its boundary mask (`_first_distinct`): 17.4 (peak RSS)
PANOPTIC_WORK_BYTES = 24


def decode_panoptic_ids(data: bytes, height: int, width: int) -> np.ndarray:
    """A COCO panoptic PNG (panopticapi's, 8-bit RGB) -> int32 segment ids, read as panopticapi's
    `rgb2id` reads them: R + 256 G + 256^2 B (0: void). A palette PNG (ImageMagick's lossless
    re-save of one of at most 256 colours, `convert pan.png -strip out.png`) is read through its
    palette, as detectron2, Mask2Former and MMDetection read it (as RGB). Judged on its header
    before any decode: an image of another mode (grey, RGBA, 16-bit RGB: IHDR's bit depth and
    colour type) holds no such ids (`bad_panoptic_png`), one of another size than its image
    (`height` x `width`) names other pixels (`annotation_size_mismatch`), one over the memory
    budget is `annotation_too_large`."""
    if not data:
        raise MapError("empty_annotation")
    declared = _declared(data)
    if declared is None or not data.startswith(_PNG_SIGNATURE):
        raise MapError("bad_panoptic_png", "not a PNG (panopticapi writes its segment ids as RGB PNGs)")
    w, h, mode = declared
    depth, colour_type = _png_depth_and_colour_type(data)
    if mode not in ("RGB", "P") or (colour_type == _PNG_RGB and depth != 8):
        shown = f"{depth}-bit {mode}" if mode == "RGB" else mode
        raise MapError("bad_panoptic_png", f"a {shown} PNG; a panoptic PNG is 8-bit RGB (or a palette of its "
                                           f"colours), its ids R + 256 G + 256^2 B")
    if (h, w) != (height, width):
        raise MapError("annotation_size_mismatch", f"panoptic PNG {w}x{h} vs image {width}x{height}")
    cost = decode_cost(w, h, mode) + w * h * PANOPTIC_WORK_BYTES
    if cost > DEFAULT_MAX_DECODE_BYTES:
        raise MapError("annotation_too_large", f"{w}x{h} panoptic PNG needs about {cost >> 20} MiB, "
                                               f"over the budget of {DEFAULT_MAX_DECODE_BYTES >> 20} MiB")
    if mode == "P":
        return _palette_panoptic_ids(data)
    array = _opencv_decode(data)
    if colour_type == _PNG_RGB and array.ndim == 3 and array.shape[2] == 4:
        # a tRNS colour (ImageMagick's `-transparent black`) that OpenCV made an alpha channel of:
        # Pillow, panopticapi and detectron2 read the PNG as the RGB it is
        array = array[..., :3]
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:  # a header that lied
        raise MapError("bad_panoptic_png", f"a panoptic PNG is 8-bit RGB, got {array.dtype} "
                                           f"{array.shape[2] if array.ndim == 3 else 1} channel(s)")
    ids = array[..., 0].astype(np.int32)  # OpenCV's BGR: B is [..., 0]
    ids <<= 8
    ids += array[..., 1]
    ids <<= 8
    ids += array[..., 2]
    return ids


_PNG_RGB = 2  # IHDR colour type of truecolour without alpha


def _png_depth_and_colour_type(data: bytes) -> tuple[int, int]:
    """IHDR's bit depth and colour type (PNG spec: the first chunk, bytes 24 and 25): Pillow names
    a 16-bit RGB PNG "RGB" as it does an 8-bit one."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise MapError("corrupt_annotation", "PNG without IHDR as its first chunk")
    return data[24], data[25]


def _palette_panoptic_ids(data: bytes) -> np.ndarray:
    """A palette PNG's ids: each index's colour as R + 256 G + 256^2 B, what its RGB read holds
    (Pillow's `convert("RGB")`: an index past the palette black, transparency dropped), looked up
    from its 1-byte indices without an RGB copy (within `decode_cost` of P)."""
    try:
        with pixels_judged_here(), _open_map(data) as image:
            indices = np.asarray(image)
            entries = image.getpalette("RGB") or []
    except MapError:
        raise
    except Exception as exc:  # a truncated or corrupt file: name the error only, never its bytes
        raise MapError("corrupt_annotation", f"palette PNG: {type(exc).__name__}") from None
    colours = np.zeros((256, 3), np.int32)
    given = np.asarray(entries[: min(len(entries), 768) // 3 * 3], np.int32).reshape(-1, 3)
    colours[: len(given)] = given
    table = colours[:, 0] + 256 * colours[:, 1] + 256 * 256 * colours[:, 2]
    return table[indices]


def read_pfm(data: bytes) -> np.ndarray:
    """Portable float map (SceneFlow, Middlebury): header, dims, scale (sign = endianness), rows bottom-up."""
    stream = io.BytesIO(data)
    header = stream.readline().strip()
    if header not in (b"PF", b"Pf"):
        raise MapError("corrupt_annotation", "not a PFM file")
    dims = re.match(rb"^(\d+)\s+(\d+)\s*$", stream.readline())
    if not dims:
        raise MapError("corrupt_annotation", "bad PFM dimensions")
    width, height = int(dims.group(1)), int(dims.group(2))
    try:
        scale = float(stream.readline().strip())
    except ValueError:
        raise MapError("corrupt_annotation", "bad PFM scale line") from None
    channels = 3 if header == b"PF" else 1
    dtype = "<f4" if scale < 0 else ">f4"
    body = stream.read()
    if len(body) != width * height * channels * 4:  # judged in bytes: a cut float made NumPy raise ValueError
        raise MapError("truncated_annotation", f"PFM holds {len(body)} bytes of floats, header says "
                                               f"{width * height * channels} floats")
    values = np.frombuffer(body, dtype=dtype)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.flipud(values.reshape(shape)).astype(np.float32)


def decode_depth(data: bytes, fmt: DepthFormat, scale: float = 1.0) -> np.ndarray:
    """Depth (or disparity) as float32 in the dataset's units times `scale`; invalid <= 0 or non-finite."""
    if fmt == "png16":
        array = _imdecode(data)
        if array.dtype != np.uint16 or array.ndim != 2:
            raise MapError("bad_depth_map", f"expected a 16-bit single-channel PNG, got {array.dtype} {array.shape}")
        depth = array.astype(np.float32) * scale
        depth[array == 65535] = 0  # the conventional 'no depth' value of 16-bit depth maps
        return depth
    if fmt == "co3d":
        array = _imdecode(data)
        if array.dtype != np.uint16:
            raise MapError("bad_depth_map", f"CO3D depth must be 16-bit, got {array.dtype}")
        return array.view(np.float16).astype(np.float32) * scale
    if fmt == "npy":
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            # numpy's message quotes the file's first bytes: name the error only
            raise MapError("corrupt_annotation", f"npy: {type(exc).__name__}") from None
        return np.squeeze(array).astype(np.float32) * scale
    if fmt == "pfm":
        return read_pfm(data) * scale
    if fmt == "tiff":
        array = _imdecode(data)
        return array.astype(np.float32) * scale
    raise MapError("bad_format", f"unknown depth format {fmt!r}; allowed: {', '.join(DEPTH_FORMATS)}")


PILLOW_LUMA = (19595, 38470, 7471)  # Pillow's RGB -> "L" weights, in 1/65536ths (its L24 macro)
MASK_ASPECT_TOLERANCE = 0.01  # as a map's aspect against its image's (render_annotated.ASPECT_TOLERANCE)


def decode_luma(data: bytes) -> np.ndarray:
    """A mask's grey as CO3D's loader reads it (`Image.open(path).convert("L")`): a grey map as
    stored; a colour or palette one as Pillow's luma of its red, green and blue (alpha ignored),
    so a red or green mask keeps its pixels (its blue channel alone, which OpenCV's BGR put first,
    held none); a 16-bit colour one by their high bytes, which is all Pillow reads of them."""
    array = _imdecode(data)
    if array.ndim == 2:
        return array
    bgr = array[..., :3]
    if bgr.dtype == np.uint16:
        bgr = bgr >> 8
    blue, green, red = (bgr[..., i].astype(np.uint32) for i in range(3))
    luma = red * PILLOW_LUMA[0] + green * PILLOW_LUMA[1] + blue * PILLOW_LUMA[2] + 0x8000
    return (luma >> 16).astype(np.uint8)


def decode_depth_mask(data: bytes) -> np.ndarray:
    """A depth mask as CO3D's loader reads it (`Image.open(path).convert("L") > 0`): True where
    trusted, by `decode_luma`: red on black keeps the red pixels."""
    return decode_luma(data) > 0


def masked_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Depth kept where `valid` (a depth mask: nonzero = trusted) is set, 0 (no depth) elsewhere, as
    CO3D's loader keeps it. A mask of another size at the depth's aspect ratio is resized to it
    nearest (as CO3D's loader resizes it); one of another aspect says nothing of which pixels it
    means. Depth with no valid pixel left is no target: `empty_target`."""
    valid = valid if valid.ndim == 2 else valid[..., 0]
    (h, w), (mh, mw) = depth.shape[:2], valid.shape
    if (mh, mw) != (h, w):
        if abs(mw / mh - w / h) > MASK_ASPECT_TOLERANCE * w / h:
            raise MapError("annotation_size_mismatch", f"depth mask {mw}x{mh} vs depth map {w}x{h}: "
                                                       "another aspect ratio")
        valid = valid[(np.arange(h) * mh // h)[:, None], np.arange(w) * mw // w]
    kept = np.where(valid > 0, depth, np.float32(0)).astype(np.float32)
    if not (np.isfinite(kept) & (kept > 0)).any():
        raise MapError("empty_target", "no pixel of the depth map is valid (> 0) where its depth mask is set")
    return kept


def decode_normals(data: bytes, fmt: Literal["rgb", "npy"] = "rgb") -> np.ndarray:
    """Unit normals (H, W, 3) float32; RGB-encoded maps use n = rgb / 127.5 - 1."""
    if fmt == "npy":
        try:
            normals = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
        except Exception as exc:
            # numpy's message quotes the file's first bytes: name the error only
            raise MapError("corrupt_annotation", f"npy: {type(exc).__name__}") from None
    else:
        array = _imdecode(data)
        if array.ndim != 3 or array.shape[2] < 3:
            raise MapError("bad_normal_map", f"expected RGB, got shape {array.shape}")
        rgb = array[..., 2::-1] if array.dtype == np.uint8 else (array[..., 2::-1] >> 8).astype(np.uint8)
        normals = rgb.astype(np.float32) / 127.5 - 1
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise MapError("bad_normal_map", f"expected (H, W, 3), got {normals.shape}")
    return normals


def decode_gray(data: bytes) -> np.ndarray:
    """Any single-channel map (edges, masks) as its raw integer values."""
    array = _imdecode(data)
    return array if array.ndim == 2 else array[..., 0]
