"""Render annotated records: pairs, tuples, multi-view objects and annotated clips.

Every image and its annotation go through one `ResizePlan` (computed on the image): geometry
through `apply_points`, dense maps through `apply_image(nearest=True)`. Pairs decode at full
resolution (no reduced JPEG decode) so that the two are transformed exactly alike.
A missing or broken annotation rejects that pair with a reason; nothing raises.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from sources.fsio import FileTooLarge
from sources.multitask import DEPTH_SCALE, EDGE_THRESHOLD
from sources.records import (FILE_TOO_LARGE, AnnotatedClipRecord, MultiViewRecord, PairRecord, Reject, TupleRecord,
                             read_input_bytes)
from sources.sbd import MAX_SBD_MAT_BYTES, SbdMapError, sbd_class_map
from transforms.annotations import (
    MAX_BOXES,
    MAX_POSE_STEPS,
    SKELETONS,
    Skeleton,
    clip_to_rect,
    colourize_labels,
    depth_to_colour,
    draw_boxes,
    draw_outlines,
    draw_skeletons,
    edge_map_to_rgb,
    image_region,
    normals_to_rgb,
    polygon_area,
    transform_boxes,
    transform_keypoints,
    turned_box_corners,
    xywh_to_xyxy,
)
from transforms.decode import DEFAULT_MAX_DECODE_BYTES, DecodeError
from transforms.degrade import synthetic_pair
from transforms.errors import Rejected, exception_detail
from transforms.maps import MapError, masked_depth
from transforms.resize import ResizePlan
from uvd_pipeline.image_decode import decode_map, decode_through, load_image
from uvd_pipeline.keys import seed_for
from uvd_pipeline.labelers import LabelContext, LabelerError, NoLabel, canny_within, get_labeler
from uvd_pipeline.render import RenderSettings, encode_png
from uvd_pipeline.sentences import RenderedUnit, Sentence

ASPECT_TOLERANCE = 0.01
SEGMENT_MAP_BYTES = 8  # per pixel while drawing segments: the int32 map (column-major) and its row-major copy
# pycocotools' rleFrPoly walks a polygon's outline at 5x in C ints, holding ~24 bytes a point
POLYGON_UPSAMPLE = 5
POLYGON_POINT_BYTES = 24
MAX_OUTLINE_POINTS = DEFAULT_MAX_DECODE_BYTES // POLYGON_POINT_BYTES  # one target's polygons (~2.5 s)
POLYGON_REACH = 16  # how far past the border (in the image's longer side) a polygon's vertex may lie
RLE_DIGITS = 6  # 5-bit digits of one compressed RLE count: 30 bits hold any count of a budgeted map
# where a pair's render writes what its lineage gains (a dict in its annotation's copy, `render_pair`)
RENDER_NOTES = "_render_notes"
PANOPTIC_EMPTY_SEGMENTS = "panoptic_segments_without_pixels"  # listed segments its PNG does not hold
# objects of a drawn pair that draw nothing, counted in its lineage as the panoptic ones are
BOXES_OUTSIDE = "boxes_outside_image"  # boxes wholly outside the image (a mask painting none: SEGMENTS_EMPTY)
SEGMENTS_EMPTY = "segments_without_pixels"  # polygons or RLE masks that paint no pixel of it
PEOPLE_OUTSIDE = "people_outside_image"  # people none of whose labelled points lies on it
# VIPSeg's panomask: a value up to 124 is a stuff class id as it stands (0: void); above, a thing's
# class * 100 + instance (its README: person 61 -> 6100, 6101, ...)
# a target's drawing work (`MAX_BOXES`, `MAX_POSE_STEPS`: transforms.annotations); each turned
# outline visits every canvas pixel of its window (~0.1 us a pixel)
MAX_MASK_TEXT = 4_000_000  # RLE counts' characters or run lengths one segmentation target reads (~1.5 s)
MAX_MASK_RUNS = 4_000_000  # runs it paints (~2 s)
MAX_MASK_AREA = 4 << 30  # pixels it paints, all its masks (~2 s)
OUTLINE_BUDGET_CANVASES = 64  # turned outlines' windows, summed, in canvases (~0.4 s at most)
VIPSEG_STUFF_MAX = 124
# a label map that may draw black: an annotated clip's frame, a tuple's domain, where the unit's other
# images hold what it teaches (one frame, or a view of a bare wall, is no reason to drop them all)
EMPTY_LABELS_KEPT = "_empty_labels_kept"


class AnnotationError(Rejected):
    """An annotation that cannot become a target image."""


def _read(uri: str) -> bytes:
    try:
        return read_input_bytes(uri)  # too many open files: the machine's MachineError, not a reject
    except FileTooLarge as exc:
        raise AnnotationError("annotation_too_large", str(exc)) from None
    except (OSError, ValueError) as exc:
        raise AnnotationError(_unread_reason(exc), exception_detail(exc)) from None


def _unread_reason(exc: BaseException) -> str:
    """The reject of an annotation file that could not be read: `missing_annotation` where it is
    not there, `unreadable_file` where it is but may not be read (mode 000, another user's) or the
    disk failed (EIO): a label map this user may not read was `missing_annotation`, sending the
    user to look for a file that was there."""
    gone = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
    return "missing_annotation" if isinstance(exc, gone) or not isinstance(exc, OSError) else "unreadable_file"


def _note_left_out(annotation: dict[str, Any], name: str, count: int) -> None:
    """Count, in the pair's lineage (`RENDER_NOTES`), objects of a drawn target that draw nothing:
    beside objects that draw, they vanished unsaid (a pair of nothing but them is `empty_target`)."""
    if count and RENDER_NOTES in annotation:
        annotation[RENDER_NOTES][name] = count


def _unread_image_reason(exc: BaseException) -> str:
    """The reject of a pair's image that could not be read: `missing_image` where it is not there
    (a COCO or MPII JSON lists it, the disk lacks it: `unreadable_file` sent the user to look at
    permissions or the disk), else `unreadable_file` (mode 000, EIO, a folder of its name)."""
    return "missing_image" if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else "unreadable_file"


def _fit_map(plan: ResizePlan, values: np.ndarray, *, nearest: bool = True) -> np.ndarray:
    """A dense map through the image's plan; a map of another size must share its aspect ratio."""
    h, w = values.shape[:2]
    if (h, w) != (plan.in_h, plan.in_w):
        if abs(w / h - plan.in_w / plan.in_h) > ASPECT_TOLERANCE * plan.in_w / plan.in_h:
            raise AnnotationError("annotation_size_mismatch", f"map {w}x{h} vs image {plan.in_w}x{plan.in_h}")
    return plan.apply_image(values, nearest=nearest)


def _check_polygons(polygons: list, h: int, w: int) -> int:
    """Judge a polygon before pycocotools rasterises it: its C code allocates in proportion to
    the outline's length and converts coordinates to int, so a vertex at 1e7 costs gigabytes and
    one past the int range crashes the process. Polygons within reach pass unchanged, so their
    rasterisation is pycocotools' own. Returns the outline's points (what rasterising costs)."""
    reach = POLYGON_REACH * max(h, w)
    points = 0
    for polygon in polygons:
        try:
            xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise AnnotationError("bad_segmentation", "a polygon is not a list of x, y numbers") from None
        if not np.isfinite(xy).all():
            raise AnnotationError("bad_segmentation", "a polygon coordinate is not a finite number")
        if (xy < -reach).any() or (xy[:, 0] > w + reach).any() or (xy[:, 1] > h + reach).any():
            raise AnnotationError("bad_segmentation", f"a polygon vertex lies more than {reach} pixels "
                                                      f"({POLYGON_REACH} image sizes) outside the {w}x{h} image")
        corners = np.trunc(POLYGON_UPSAMPLE * np.vstack([xy, xy[:1]]) + 0.5)  # as rleFrPoly rounds them
        points += int((np.abs(np.diff(corners, axis=0)).max(axis=1) + 1).sum())
    return points


def _rle_string_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' rleFrString does
    (6-bit digits from '0', 5 value bits, a continuation bit, the last digit's sign bit, counts
    after the third stored as differences), refusing what its C code would misread: a character
    outside the alphabet, a count cut short at the end, or one too long for its int arithmetic."""
    counts: list[int] = []
    digits = 0
    value = 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise AnnotationError("bad_segmentation", "RLE counts hold a character outside '0'..'o'")
        value |= (code & 0x1F) << (5 * digits)
        digits += 1
        if code & 0x20:
            if digits == RLE_DIGITS:
                raise AnnotationError("bad_segmentation", f"an RLE count runs past {RLE_DIGITS} digits")
            continue
        if code & 0x10:
            value |= -1 << (5 * digits)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        digits = value = 0
    if digits:
        raise AnnotationError("bad_segmentation", "RLE counts end inside a count")
    return counts


def _check_rle_counts(counts: Any, h: int, w: int) -> list[int]:
    """The run lengths, which must cover the image exactly: pycocotools refuses more than h*w, but
    paints fewer and leaves the rest of its mask uninitialised (a different target every run)."""
    if isinstance(counts, str):
        runs = _rle_string_counts(counts)
    elif isinstance(counts, list) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts):
        runs = [int(c) for c in counts]
    else:
        raise AnnotationError("bad_segmentation", "RLE counts are neither a string nor a list of run lengths")
    if any(run < 0 for run in runs):
        raise AnnotationError("bad_segmentation", "an RLE run length is negative")
    if sum(runs) != h * w:
        raise AnnotationError("bad_segmentation", f"RLE run lengths sum to {sum(runs)}, "
                                                  f"the {w}x{h} image has {h * w} pixels")
    return runs


def _check_declared_size(annotation: dict[str, Any], h: int, w: int) -> None:
    """A declared height or width (the source passes only positive integers) names the image the
    coordinates were drawn on: another size than the decoded image's rejects the pair."""
    declared = annotation.get("height"), annotation.get("width")
    if any(d is not None and d != actual for d, actual in zip(declared, (h, w))):
        shown = ["?" if d is None else str(d) for d in declared]
        raise AnnotationError("annotation_size_mismatch", f"annotation declares {shown[1]}x{shown[0]}, image is {w}x{h}")


def _labels_from_segments(annotation: dict[str, Any], plan: ResizePlan) -> np.ndarray:
    """COCO polygons / RLE -> one class-id map, larger masks first so that smaller objects stay
    visible on top (by the masks' own pixels: exporters write `area: 0` or none; equal ones in
    the given order).

    The map has the decoded image's size, never the size the JSON declares (a declared
    20000 x 20000 would cost gigabytes before any check); a declaration that differs from the
    image means the coordinates refer to another image, so the pair is rejected. Each mask is
    painted from its runs (the column-major run lengths pycocotools decodes), straight into the
    map: decoded whole, every mask of an image was held at once (a Segment Anything photo, 1500 x
    2250 with up to ~400 masks: 1.4 GB, while the memory budget judged the map alone), and even one
    at a time each cost a pass over the whole image (an iSAID aerial image, 16 MP with hundreds of
    small instances: over a minute). The work is budgeted: `MAX_MASK_TEXT` characters or run
    lengths read, `MAX_MASK_RUNS` runs and `MAX_MASK_AREA` pixels painted.
    """
    h, w = plan.in_h, plan.in_w
    _check_declared_size(annotation, h, w)
    if h * w * SEGMENT_MAP_BYTES > DEFAULT_MAX_DECODE_BYTES:
        raise AnnotationError("annotation_too_large", f"a {w}x{h} label map is over the memory budget")
    masks = _segment_masks(annotation["segments"], h, w)
    if not any(area for _, _, area in masks):
        raise AnnotationError("empty_target", "no segment covers a pixel of the image")
    _note_left_out(annotation, SEGMENTS_EMPTY, sum(1 for _, _, area in masks if not area))
    columns = np.zeros((w, h), np.int32)  # the map transposed: its flat index is the runs' column-major one
    flat = columns.reshape(-1)
    for order in sorted(range(len(masks)), key=lambda i: -masks[i][2]):
        lengths, category_id, _ = masks[order]
        ends = np.cumsum(lengths)
        for start, stop in zip(ends[0::2].tolist(), ends[1::2].tolist()):  # runs of 0s, then 1s, alternate
            flat[start:stop] = category_id
    return np.ascontiguousarray(columns.T)


def _segment_masks(segments: list[dict[str, Any]], h: int, w: int) -> list[tuple[np.ndarray, int, int]]:
    """Each segment's runs, class and area, read within one target's budgets: `MAX_MASK_TEXT`
    characters or run lengths and `MAX_OUTLINE_POINTS` polygon points judged before any is
    decoded, then `_budgeted_masks`."""
    text = sum(_counts_length(segment["segmentation"]) for segment in segments)
    if text > MAX_MASK_TEXT:
        raise AnnotationError("annotation_too_large", f"RLE counts of {text} characters or runs, over the "
                                                      f"{MAX_MASK_TEXT} one target reads")
    outline = sum(_outline_points(segment["segmentation"], h, w) for segment in segments)
    if outline > MAX_OUTLINE_POINTS:
        raise AnnotationError("annotation_too_large", f"polygon outlines of {outline} points, over the "
                                                      f"{MAX_OUTLINE_POINTS} one target rasterises")
    return _budgeted_masks(segments, h, w)


def _budgeted_masks(segments: list[dict[str, Any]], h: int, w: int) -> list[tuple[np.ndarray, int, int]]:
    """Each segment's runs, class and area (its pixels, which order the painting), decoded one at
    a time and refused as soon as the target passes `MAX_MASK_RUNS` runs or `MAX_MASK_AREA`
    pixels: judged once all were decoded, 50 comb
    polygons of 6M runs each (8,000 vertices, 100 KB of JSON apiece; one took 2.35 s) cost ~2 minutes and 2.4 GB."""
    masks: list[tuple[np.ndarray, int, int]] = []
    runs = painted = 0
    for segment in segments:
        lengths = _segment_runs(segment["segmentation"], h, w)
        area = int(lengths[1::2].sum())
        runs, painted = runs + len(lengths), painted + area
        if runs > MAX_MASK_RUNS or painted > MAX_MASK_AREA:
            raise AnnotationError("annotation_too_large", f"masks of over {MAX_MASK_RUNS} runs or {MAX_MASK_AREA} "
                                                          "pixels, the most one target paints")
        masks.append((lengths, segment["category_id"], area))
    return masks


def _outline_points(seg: Any, h: int, w: int) -> int:
    """The outline points a segment's polygons cost pycocotools (RLE: 0, budgeted by its text);
    each is judged alone by `_check_polygons`, and the sum over a target bounds its time."""
    if not isinstance(seg, list):
        return 0
    try:
        return _check_polygons([p for p in seg if len(p) >= 6], h, w)
    except AnnotationError:
        raise
    except Exception as exc:
        raise AnnotationError("bad_segmentation", type(exc).__name__) from None


def _counts_length(seg: Any) -> int:
    """What reading a segment's RLE counts costs: its characters or run lengths (polygons: 0,
    budgeted by their points)."""
    counts = seg.get("counts") if isinstance(seg, dict) else None
    return len(counts) if isinstance(counts, (str, list)) else 0


def _segment_runs(seg: Any, h: int, w: int) -> np.ndarray:
    """One segment (polygons, or RLE with compressed or uncompressed counts) as its run lengths
    over the image (column-major, starting with a run of 0s), checked before anything reads them
    (its polygons by `_outline_points`, which the whole target passed first)."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(seg, list):
            polygons = [p for p in seg if len(p) >= 6]
            if not polygons:
                raise AnnotationError("bad_segmentation", "no polygon of 3 or more points")
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
            return np.asarray(_rle_string_counts(rle["counts"].decode("ascii")), dtype=np.int64)
        if list(seg.get("size") or ()) != [h, w]:
            raise AnnotationError("bad_segmentation", f"RLE size {seg.get('size')} vs image {[h, w]}")
        return np.asarray(_check_rle_counts(seg.get("counts"), h, w), dtype=np.int64)
    except AnnotationError:
        raise
    except Exception as exc:
        raise AnnotationError("bad_segmentation", type(exc).__name__) from None


def _detection(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
               right: np.ndarray | None) -> np.ndarray:
    """Boxes clipped to the image (a box reaching past it would be drawn into the padding, one
    wholly outside on the border); a pair none of whose boxes overlaps the image, or the part of
    it the resize policy's crop keeps, is `empty_target`: the target would be the input itself.
    A box with a `rotations` entry (degrees, CVAT's rotated rectangle) is outlined turned about
    its centre, on the image's part of the canvas only; one with a `box_masks` entry (an object
    given only as a mask) is its mask's box (`_mask_boxes`)."""
    h, w = plan.in_h, plan.in_w
    _check_declared_size(annotation, h, w)
    if len(annotation["boxes"]) > MAX_BOXES:
        raise AnnotationError("annotation_too_large", f"{len(annotation['boxes'])} boxes, over the {MAX_BOXES} "
                                                      "one target draws")
    boxes = np.array([xywh_to_xyxy(b) for b in annotation["boxes"]], dtype=np.float64).reshape(-1, 4)
    painted = np.ones(len(boxes), dtype=bool)
    if annotation.get("box_masks"):
        boxes, painted = _mask_boxes(boxes, annotation["box_masks"], h, w)
    degrees = np.asarray(annotation.get("rotations") or [0.0] * len(boxes), dtype=np.float64) % 360
    turned = degrees != 0
    with np.errstate(over="ignore", invalid="ignore"):  # a box near 1e308 turns into inf and nan: not shown
        corners = [turned_box_corners(box, d) for box, d in zip(boxes[turned], degrees[turned])]
        shown = np.array([polygon_area(clip_to_rect(c, (0, 0, w, h))) > 0 for c in corners], dtype=bool)
    flat = np.clip(boxes[~turned], 0, [w, h, w, h])
    inside = (flat[:, 2] > flat[:, 0]) & (flat[:, 3] > flat[:, 1])
    if not inside.any() and not shown.any():
        raise AnnotationError("empty_target", f"no box overlaps the {w}x{h} image")
    _note_left_out(annotation, BOXES_OUTSIDE, int(np.count_nonzero(~inside & painted[~turned]) + np.count_nonzero(~shown)))
    _note_left_out(annotation, SEGMENTS_EMPTY, int(np.count_nonzero(~painted)))
    crop = plan.crop
    kept_flat = np.minimum(flat[inside], [crop[2], crop[3]] * 2)
    kept_flat = np.maximum(kept_flat, [crop[0], crop[1]] * 2)
    reached = (kept_flat[:, 2] > kept_flat[:, 0]) & (kept_flat[:, 3] > kept_flat[:, 1])
    if not reached.any() and not any(polygon_area(clip_to_rect(c, crop)) > 0
                                     for c, keep in zip(corners, shown) if keep):
        raise AnnotationError("empty_target", "the resize policy's crop cuts off every box")
    categories = np.asarray(annotation["categories"])
    target = draw_boxes(canvas, transform_boxes(plan, flat[inside]), categories[~turned][inside].tolist())
    if shown.any():
        kept = [(clip_to_rect(c, plan.crop), int(k)) for c, k, keep in zip(corners, categories[turned], shown) if keep]
        kept = [(plan.apply_points(c), k) for c, k in kept if len(c)]  # what the crop keeps of each
        work = sum(_window_pixels(c, plan.size) for c, _ in kept)
        if work > OUTLINE_BUDGET_CANVASES * plan.size ** 2:
            raise AnnotationError("annotation_too_large", f"turned boxes covering {work / plan.size ** 2:.0f} "
                                                          f"canvases, over the {OUTLINE_BUDGET_CANVASES} one target draws")
        target = draw_outlines(target, [c for c, _ in kept], [k for _, k in kept], image_region(plan, plan.size))
    return target


def _mask_boxes(boxes: np.ndarray, box_masks: list[Any], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """`boxes` (x0, y0, x1, y1) with each object given only as a mask (`box_masks[i]` not None: a
    brush mask exported without `bbox`) boxed by its mask, read within the segmentation budgets;
    and which paint a pixel (a mask of none lies nowhere: `segments_without_pixels`, not outside)."""
    masks = iter(_segment_masks([{"segmentation": s, "category_id": 0} for s in box_masks if s is not None], h, w))
    out, painted = boxes.copy(), np.ones(len(boxes), dtype=bool)
    for i, seg in enumerate(box_masks):
        if seg is not None:
            runs, _, area = next(masks)
            out[i], painted[i] = xywh_to_xyxy(runs_box(runs, h)), bool(area)
    return out, painted


def runs_box(lengths: np.ndarray, h: int) -> list[int]:
    """The x, y, width, height of a mask's pixels from its column-major runs (0s first), as
    pycocotools' `toBbox` measures it: pixel edges around its first and last columns, and its
    rows, all of them where a run crosses from one column to the next; no pixel: all 0."""
    ends = np.cumsum(lengths)
    starts, stops = ends[0::2][: len(ends) // 2], ends[1::2]
    starts, last = starts[stops > starts], stops[stops > starts] - 1
    if not starts.size:
        return [0, 0, 0, 0]
    x0, x1 = int(starts.min() // h), int(last.max() // h)
    if (starts // h != last // h).any():
        y0, y1 = 0, h - 1
    else:
        y0, y1 = int((starts % h).min()), int((last % h).max())
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def _window_pixels(polygon: np.ndarray, size: int) -> int:
    """The canvas pixels `draw_outlines` visits for one outline: its bounding window on the canvas."""
    low = np.clip(np.floor(polygon.min(axis=0)), 0, size)
    high = np.clip(np.ceil(polygon.max(axis=0)), 0, size)
    return int(np.prod(np.maximum(high - low, 0)))


def _segmentation(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
                  right: np.ndarray | None) -> np.ndarray:
    """Polygons or RLE (`segments`), a binary mask (`mask_uri`) or a label/panoptic map (`label_uri`,
    its `unlabeled_ids` drawn as 0; with `value_ids`, value i stands for id `value_ids[i]` and any
    other value, an ignore mark, is drawn as 0; with `colour_ids`, an RGB map's colours stand for ids)."""
    if "segments" in annotation:
        labels = _labels_from_segments(annotation, plan)
    elif "panoptic_uri" in annotation:
        labels = _panoptic_classes(annotation, plan, settings)
    elif "mask_uri" in annotation:
        grey = decode_map("decode_luma", _read(annotation["mask_uri"]), settings.decode_time_s)
        labels = np.where(grey > 127, annotation.get("class_id", 1), 0)  # CO3D's loader: convert("L") > 127
    elif "label_mat_uri" in annotation:  # SBD's cls/<id>.mat
        labels = _sbd_class_map(annotation["label_mat_uri"])
    else:
        labels = decode_map("decode_label_map", _read(annotation["label_uri"]), settings.decode_time_s,
                            annotation.get("encoding", "ids"), annotation.get("colour_ids", ()))
        if annotation.get("unlabeled_ids"):  # a dataset's void ids, drawn as its unlabeled (0)
            labels = np.where(np.isin(labels, annotation["unlabeled_ids"]), 0, labels)
        if annotation.get("value_ids"):  # a map of train ids (Cityscapes' 0..18, 255 ignore): the ids they stand for
            labels = _ids_of_values(labels, annotation["value_ids"])
        divisor = int(annotation.get("panoptic_divisor", 0))
        if divisor:  # things: class * divisor + instance; stuff up to `panoptic_stuff_max`: the class itself
            labels = np.where(labels > int(annotation.get("panoptic_stuff_max", 0)), labels // divisor, labels)
    labels = labels.astype(np.int32, copy=False)
    fitted = _fit_map(plan, labels)
    if not annotation.get(EMPTY_LABELS_KEPT):
        _check_drawn_labels(labels, fitted)
    return colourize_labels(fitted)


def _check_drawn_labels(labels: np.ndarray, fitted: np.ndarray) -> None:
    """A label map that draws nothing but black (0: background, unlabelled or void) is no target:
    it would teach that the image holds no class, so it is `empty_target`, as a depth map with no
    depth is (`_drawn_depth`). `labels` (the map as read) says whether it held none or the crop
    cut off all it held."""
    if fitted.any():
        return
    if labels.any():
        raise AnnotationError("empty_target", "the resize policy's crop cuts off every labelled pixel of the map")
    raise AnnotationError("empty_target", "no pixel of the map holds a label (every one background, unlabelled "
                                          "or void)")


def _panoptic_classes(annotation: dict[str, Any], plan: ResizePlan, settings: RenderSettings) -> np.ndarray:
    """A COCO panoptic PNG's segments as their categories (void, id 0, as 0). An id the PNG holds
    that `segments_info` does not list rejects the pair (`panoptic_unlisted_segment`: the PNG and
    its JSON disagree, as panopticapi's `pq_compute` fails on a prediction's). A listed segment no
    pixel holds draws nothing: panopticapi's detection2panoptic_coco_format writes one for each
    sub-pixel object (area 0); the pair's lineage counts them (`PANOPTIC_EMPTY_SEGMENTS`, through
    the annotation's `RENDER_NOTES`)."""
    _check_declared_size(annotation, plan.in_h, plan.in_w)
    png = annotation["panoptic_uri"].rsplit("/", 1)[-1]  # the reject's `input` is the image: name the PNG
    try:
        ids = decode_map("decode_panoptic_ids", _read(annotation["panoptic_uri"]), settings.decode_time_s,
                         plan.in_h, plan.in_w)
    except MapError as exc:
        raise AnnotationError(exc.reason, f"{png}: {exc.detail}" if exc.detail else png) from None
    listed = np.asarray(annotation["segment_ids"], np.int32)
    order = np.argsort(listed, kind="stable")
    listed, classes = listed[order], np.asarray(annotation["segment_categories"], np.int32)[order]
    if not len(listed):
        listed, classes = np.zeros(1, np.int32), np.zeros(1, np.int32)  # void alone: id 0 is no segment
    at = np.searchsorted(listed, ids)
    np.minimum(at, len(listed) - 1, out=at)
    found = listed[at] == ids
    unlisted = ~found & (ids != 0)
    if unlisted.any():
        del at, found  # 9 bytes a pixel the distinct ids may take instead (`PANOPTIC_WORK_BYTES`)
        shown, count = _first_distinct(ids[unlisted], 5)
        raise AnnotationError("panoptic_unlisted_segment", f"{png} holds segment id(s) "
                              f"{', '.join(map(str, shown))}{' ...' if count > 5 else ''} "
                              f"({count} in all) that segments_info does not list")
    counts = np.bincount(at[found & (ids != 0)], minlength=len(listed))
    absent = int(np.count_nonzero((counts == 0) & (listed != 0)))
    if absent and RENDER_NOTES in annotation:
        annotation[RENDER_NOTES][PANOPTIC_EMPTY_SEGMENTS] = absent
    labels = np.where(found, classes[at], 0).astype(np.int32, copy=False)
    if not labels.any():
        raise AnnotationError("empty_target", f"every pixel of {png} is void (id 0)")
    return labels


def _first_distinct(values: np.ndarray, shown: int) -> tuple[list[int], int]:
    """The `shown` smallest distinct values and how many there are, by sorting `values` in place:
    np.unique hashes, which took 69 bytes a pixel of a PNG of 2^24 ids, outside any budget, and
    43 s; a sort takes the 1 byte a value of its boundary mask and seconds."""
    values.sort()
    starts = np.empty(values.size, bool)
    starts[:1] = True
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    count = int(np.count_nonzero(starts))
    first, at = [int(values[0])], 0
    while len(first) < min(shown, count):  # each next start: a scan of the mask, not a copy
        at += 1 + int(np.argmax(starts[at + 1:]))
        first.append(int(values[at]))
    return first, count


def _sbd_class_map(uri: str) -> np.ndarray:
    """An SBD class map, the file's size and its variables' inflated size judged before scipy reads it."""
    try:
        return sbd_class_map(read_input_bytes(uri, MAX_SBD_MAT_BYTES))
    except FileTooLarge:
        raise AnnotationError("annotation_too_large", f"over the {MAX_SBD_MAT_BYTES >> 20} MiB an SBD class map "
                                                      "may take") from None
    except SbdMapError as exc:
        raise AnnotationError(exc.reason, str(exc)[:200]) from None
    except (OSError, ValueError) as exc:
        raise AnnotationError(_unread_reason(exc), exception_detail(exc)) from None


def _ids_of_values(values: np.ndarray, ids: list[int] | tuple[int, ...]) -> np.ndarray:
    """Each value i of a map as `ids[i]`; a value past the table (an ignore mark such as 255) as 0."""
    table = np.append(np.asarray(ids, np.int64), 0)  # the last entry: anything out of the table
    return table[np.where((values >= 0) & (values < len(ids)), values, len(ids))]


def _pose(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
          right: np.ndarray | None) -> np.ndarray:
    """People on one skeleton (`skeleton` names it), or each on its own `limbs` (0-based pairs:
    a COCO category's own skeleton)."""
    _check_declared_size(annotation, plan.in_h, plan.in_w)
    _check_pose_work(annotation)
    given = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in annotation["people"]]
    _note_left_out(annotation, PEOPLE_OUTSIDE, sum(_outside(p, plan.in_h, plan.in_w) for p in given))
    people = [transform_keypoints(plan, p, settings.size) for p in given]
    if "limbs" not in annotation:
        skeleton = SKELETONS[annotation["skeleton"]]
        if any(len(p) != len(skeleton.joints) for p in people):
            raise AnnotationError("bad_keypoints", f"{skeleton.name} needs {len(skeleton.joints)} joints")
        return draw_skeletons(settings.size, people, skeleton)
    target = None
    for person, limbs in zip(people, annotation["limbs"]):
        if any(not (0 <= a < len(person) and 0 <= b < len(person)) for a, b in limbs):
            raise AnnotationError("bad_keypoints", f"a limb joins a point beyond the person's {len(person)}")
        skeleton = Skeleton(annotation["skeleton"], ("",) * len(person), tuple((a, b) for a, b in limbs))
        target = draw_skeletons(settings.size, [person], skeleton, background=target)
    return target if target is not None else np.zeros((settings.size, settings.size, 3), np.uint8)


def _outside(person: np.ndarray, h: int, w: int) -> bool:
    """A person with labelled points (v > 0), none of them on the h x w image (pixel-edge
    coordinates): `transform_keypoints` hides each, so the person draws nothing."""
    labelled = person[:, 2] > 0
    on = (person[:, 0] >= 0) & (person[:, 0] < w) & (person[:, 1] >= 0) & (person[:, 1] < h)
    return bool(labelled.any() and not (labelled & on).any())


def _check_pose_work(annotation: dict[str, Any]) -> None:
    """Refuse a pose target over the drawing budget (`MAX_BOXES` people, `MAX_POSE_STEPS` joints
    and limbs) before any of it is drawn."""
    people = annotation["people"]
    if len(people) > MAX_BOXES:
        raise AnnotationError("annotation_too_large", f"{len(people)} people, over the {MAX_BOXES} one target draws")
    joints = sum(len(p) // 3 for p in people)
    if "limbs" in annotation:
        limbs = sum(len(each) for each in annotation["limbs"])
    else:
        limbs = len(people) * len(SKELETONS[annotation["skeleton"]].limbs)
    if joints + limbs > MAX_POSE_STEPS:
        raise AnnotationError("annotation_too_large", f"{joints} joints and {limbs} limbs, over the "
                                                      f"{MAX_POSE_STEPS} one target draws")


def _depth(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
           right: np.ndarray | None) -> np.ndarray:
    """A disparity map (`disparity_uri`, stereo datasets) or a depth map (`depth_uri`)."""
    if "disparity_uri" in annotation:
        values = decode_map("decode_depth", _read(annotation["disparity_uri"]), settings.decode_time_s, "png16",
                            float(annotation.get("scale", 1.0)))
        return depth_to_colour(_drawn_depth(values, _fit_map(plan, values)), disparity=True)
    values = decode_map("decode_depth", _read(annotation["depth_uri"]), settings.decode_time_s,
                        annotation.get("format", "png16"), float(annotation.get("scale", 1.0)))
    if "valid_mask_uri" in annotation:  # CO3D's depth mask: depth only where it is set
        values = masked_depth(values, decode_map("decode_depth_mask", _read(annotation["valid_mask_uri"]),
                                                 settings.decode_time_s))
    return depth_to_colour(_drawn_depth(values, _fit_map(plan, values)))


def _drawn_depth(values: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """`fitted` (the map on the canvas) when some pixel of it holds depth (finite, > 0); else no
    target: an all-black one would teach that the image has no depth, so it is `empty_target`,
    as a depth mask that leaves nothing is (`masked_depth`). `values` (the map as stored) says
    whether it held none or the crop cut off all it held."""
    if (np.isfinite(fitted) & (fitted > 0)).any():
        return fitted
    if (np.isfinite(values) & (values > 0)).any():
        raise AnnotationError("empty_target", "the resize policy's crop cuts off every pixel of the map that holds "
                                              "depth")
    raise AnnotationError("empty_target", "no pixel of the map holds depth (every one 0, or its format's no-depth "
                                          "value)")


def _normals(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
             right: np.ndarray | None) -> np.ndarray:
    normals = decode_map("decode_normals", _read(annotation["normals_uri"]), settings.decode_time_s,
                         annotation.get("format", "rgb"))
    return normals_to_rgb(_fit_map(plan, normals))


def _edges(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
           right: np.ndarray | None) -> np.ndarray:
    """A given edge map (`edges_uri`: an edge where it holds more than `threshold`, default 0),
    else Canny edges of the input."""
    if "edges_uri" in annotation:
        edges = decode_map("decode_gray", _read(annotation["edges_uri"]), settings.decode_time_s)
        on = (edges > annotation.get("threshold", 0)).astype(np.float32)
        return edge_map_to_rgb(_fit_map(plan, on, nearest=False))
    edges = canny_within(canvas, _content_box(plan))
    if not edges.any():  # as the canny labeler's: an all-black map would say the image has no edge
        raise AnnotationError("empty_target", "Canny found no edge in the image (one colour, a blank or faded "
                                              "frame, or a grey too flat for its thresholds)")
    return edges


def _content_box(plan: ResizePlan) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 of the image's pixels on the canvas, where the plan pads it (else None)."""
    (x, y), (w, h) = plan.offset, plan.scaled
    box = (max(x, 0), max(y, 0), min(x + w, plan.size), min(y + h, plan.size))
    if box == (0, 0, plan.size, plan.size) or box[0] >= box[2] or box[1] >= box[3]:
        return None
    return box


def _stereo(annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan, settings: RenderSettings,
            right: np.ndarray | None) -> np.ndarray:
    return right if right is not None else _decode_on(plan, _read(annotation["right_uri"]), settings)


# task -> how its target image is drawn from the annotation, on the input's canvas
TARGETS: dict[str, Callable[[dict[str, Any], np.ndarray, ResizePlan, RenderSettings, np.ndarray | None],
                            np.ndarray]] = {
    "detection": _detection, "segmentation": _segmentation, "pose": _pose, "depth": _depth,
    "normals": _normals, "edges": _edges, "stereo": _stereo,
}


def target_for(task: str, annotation: dict[str, Any], canvas: np.ndarray, plan: ResizePlan,
               settings: RenderSettings, key: str, right: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) canvas images of one pair: a pseudo-labeler's or a synthetic pair's when the
    annotation names one, else the task's entry of `TARGETS`."""
    if "labeler" in annotation:
        try:
            return canvas, get_labeler(annotation["labeler"])(canvas, LabelContext(right=right,
                                                                                   content=_content_box(plan)))
        except LabelerError as exc:
            raise AnnotationError("labeler_failed", str(exc)[:200]) from None
        except NoLabel as exc:
            raise AnnotationError("empty_target", str(exc)[:200]) from None
    if "synthetic" in annotation:
        return synthetic_pair(task, canvas, np.random.default_rng(seed_for(settings.seed, key)))
    draw = TARGETS.get(task)
    if draw is None:
        raise AnnotationError("unknown_task", task)
    return canvas, draw(annotation, canvas, plan, settings, right)


def _decode_on(plan: ResizePlan, data: bytes, settings: RenderSettings) -> np.ndarray:
    """Another image of the same scene (a right view) through the same plan."""
    try:
        return decode_through(data, plan, settings.decode_time_s, max_pixels=settings.max_pixels,
                              pad_value=settings.pad_value)
    except DecodeError as exc:  # `size_mismatch` too: annotation_size_mismatch
        raise AnnotationError(f"annotation_{exc.reason}", exc.detail) from None


def _load(uri: str | None, data: bytes | None, settings: RenderSettings, fast: bool = False):
    """Decode onto the canvas. `fast` (reduced-size JPEG decode) only where the target is made
    from the canvas itself: ground-truth geometry needs the exact full-resolution plan."""
    raw = data if data is not None else read_input_bytes(uri)  # type: ignore[arg-type]
    return load_image(raw, settings.size, settings.resize, settings.decode_time_s,  # type: ignore[arg-type]
                      max_pixels=settings.max_pixels, pad_value=settings.pad_value, fast=fast)


def derived_from_canvas(annotation: dict[str, Any]) -> bool:
    """Targets made from the rendered image alone (synthetic, single-view labelers)."""
    return ("synthetic" in annotation or "labeler" in annotation) and "right_uri" not in annotation


def render_pair(record: PairRecord, settings: RenderSettings) -> RenderedUnit | Reject:
    split = settings.split(record.group, record.split_hint)

    def reject(stage: str, reason: str, detail: str = "") -> Reject:
        return Reject(record.key, record.source, record.group, stage, reason, detail, split_hint=split)

    try:
        decoded = _load(record.image_uri, record.image_data, settings, fast=derived_from_canvas(record.annotation))
    except FileTooLarge as exc:
        return reject("read", FILE_TOO_LARGE, str(exc))
    except (OSError, ValueError) as exc:
        return reject("read", _unread_image_reason(exc), exception_detail(exc))
    except DecodeError as exc:
        return reject("decode", exc.reason, exc.detail)
    try:
        right = None
        if "right_uri" in record.annotation:
            right = _decode_on(decoded.plan, _read(record.annotation["right_uri"]), settings)
        notes: dict[str, Any] = {}
        source, target = target_for(record.task, {**record.annotation, RENDER_NOTES: notes}, decoded.pixels,
                                    decoded.plan, settings, record.key, right)
        if record.task == "pose" and not target.any():  # a black target teaches nothing of pose
            raise AnnotationError("empty_target", "no labelled joint lies inside the image")
    except AnnotationError as exc:
        return reject("annotation", exc.reason, exc.detail)
    except MapError as exc:
        return reject("annotation", exc.reason, exc.detail)
    # the input's width/height are what was decoded, whatever a lineage says (a COCO JSON's
    # `height: "abc"` or 9999 must not reach the report's histograms)
    member = {"key": record.key, "task": record.task, "role": "input", **record.lineage, **notes,
              "width": decoded.width, "height": decoded.height}
    pngs = (encode_png(source, settings.png_compression), encode_png(target, settings.png_compression))
    return RenderedUnit(record.key, record.source, split, record.group, pngs,
                        (member, {"key": record.key, "task": record.task, "role": "target"}), record.task, "pairs")


def _reject(record, split: str, exc: Exception) -> Reject:
    """A failed read or annotation as a counted reject of the whole record."""
    if isinstance(exc, (DecodeError, AnnotationError, MapError)):
        return Reject(record.key, record.source, record.group, "annotation", exc.reason, exc.detail, split_hint=split)
    if isinstance(exc, FileTooLarge):
        return Reject(record.key, record.source, record.group, "read", FILE_TOO_LARGE, str(exc), split_hint=split)
    return Reject(record.key, record.source, record.group, "read", "unreadable_file",
                  exception_detail(exc), split_hint=split)


def render_tuple(record: TupleRecord, settings: RenderSettings) -> RenderedUnit | Reject:
    """The image and its annotations, in the canonical task order (image first)."""
    split = settings.split(record.group, record.split_hint)
    uris = dict(record.uris)
    formats = dict(record.formats)
    try:
        decoded = _load(uris["image"], None, settings)
        images = [decoded.pixels]
        for task, uri in record.uris[1:]:
            annotation: dict[str, Any] = {
                "normals": {"normals_uri": uri},
                "edges": {"edges_uri": uri, "threshold": EDGE_THRESHOLD},
                "depth": {"depth_uri": uri, "format": formats.get("depth", "png16"), "scale": DEPTH_SCALE},
                "segmentation": {"label_uri": uri, EMPTY_LABELS_KEPT: True},
            }[task]
            images.append(target_for(task, annotation, decoded.pixels, decoded.plan, settings, record.key)[1])
    except (OSError, ValueError, DecodeError, AnnotationError, MapError) as exc:
        return _reject(record, split, exc)
    # the image's original size (before resizing) is recorded for the report's input histograms
    size = {"width": decoded.width, "height": decoded.height}
    members = tuple({"key": record.key, "task": task,
                     **({**record.lineage, **size} if task == "image" else {})}
                    for task, _ in record.uris)
    pngs = tuple(encode_png(image, settings.png_compression) for image in images)
    return RenderedUnit(record.key, record.source, split, record.group, pngs, members, "multitask", "multitask")


def render_multiview(record: MultiViewRecord, settings: RenderSettings) -> Sentence | Reject:
    split = settings.split(record.group, record.split_hint)
    images, sizes = [], []
    for uri in record.view_uris:
        try:
            view = _load(uri, None, settings)
        except FileTooLarge as exc:
            return Reject(record.key, record.source, record.group, "read", FILE_TOO_LARGE, str(exc), split_hint=split)
        except (OSError, ValueError) as exc:
            return Reject(record.key, record.source, record.group, "read", "unreadable_file",
                          f"{uri.rsplit('/', 1)[-1]}: {type(exc).__name__}"[:200], split_hint=split)
        except DecodeError as exc:
            return Reject(record.key, record.source, record.group, "decode", exc.reason,
                          f"{uri.rsplit('/', 1)[-1]}: {exc.detail}"[:200], split_hint=split)
        images.append(encode_png(view.pixels, settings.png_compression))
        sizes.append((view.width, view.height))
    members = tuple({"view": i, "azimuth_deg": a, "width": w, "height": h}
                    for i, (a, (w, h)) in enumerate(zip(record.azimuths_deg, sizes)))
    return Sentence(record.key, record.source, "multiview", "none", split, tuple(images), members,
                    dict(record.lineage))


def render_annotated_clip(record: AnnotatedClipRecord, settings: RenderSettings) -> Sentence | Reject:
    split = settings.split(record.group, record.split_hint)
    annotation = record.annotation
    frames, targets, sizes = [], [], []
    try:
        for index, uri in enumerate(record.frame_uris):
            decoded = _load(uri, None, settings)
            sizes.append({"width": decoded.width, "height": decoded.height})
            if annotation["kind"] == "mask":
                payload = {"label_uri": annotation["uris"][index], "panoptic_divisor": annotation.get("divisor", 100),
                           "panoptic_stuff_max": annotation.get("stuff_max", VIPSEG_STUFF_MAX),
                           EMPTY_LABELS_KEPT: True}
                task = "segmentation"
            else:
                payload = {"skeleton": annotation["skeleton"], "people": [annotation["points"][index]]}
                task = "pose"
            frames.append(decoded.pixels)
            targets.append(target_for(task, payload, decoded.pixels, decoded.plan, settings, record.key)[1])
    except (OSError, ValueError, DecodeError, AnnotationError, MapError) as exc:
        return _reject(record, split, exc)
    if record.layout == "interleaved":
        order = [img for pair in zip(frames, targets) for img in pair]
        roles = [r for i in range(len(frames)) for r in (("frame", i), ("annotation", i))]
    else:
        order = frames + targets
        roles = [("frame", i) for i in range(len(frames))] + [("annotation", i) for i in range(len(targets))]
    frame_numbers = record.lineage.get("frames", list(range(len(frames))))
    members = tuple({"role": role, "frame": int(frame_numbers[i]), **(sizes[i] if role == "frame" else {})}
                    for role, i in roles)
    meta = {"layout": record.layout, "stride": record.stride, "start": record.start, **record.lineage}
    pngs = tuple(encode_png(image, settings.png_compression) for image in order)
    return Sentence(record.key, record.source, "annotated_video", "segmentation" if annotation["kind"] == "mask" else "pose",
                    split, pngs, members, meta)

