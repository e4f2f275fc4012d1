"""PASCAL VOC's detection annotations (`Annotations/<id>.xml`) -> boxes, read safely.

A file is judged by its size first (`MAX_VOC_XML_BYTES`; VOC's are about 1 KB) and refused when
it declares a DTD: VOC's files have none, and a DTD is how an XML file declares entities (a
"billion laughs" file expands a few hundred bytes into gigabytes). The standard library's expat
parser then reads it: it never fetches external entities. Boxes follow detectron2's
`load_voc_instances`: VOC's corners are 1-based pixel indices, inclusive, so xmin - 1, ymin - 1
and the far corner as given; `difficult` and `truncated` objects are kept, as there.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
import zlib
from typing import Any

from transforms.errors import Rejected

MAX_VOC_XML_BYTES = 1 << 20
BAD_ANNOTATION = "bad_annotation"
# VOCdevkit's classes in its order: class i + 1 is the index SegmentationClass gives it, so a box and a
# label map of one class draw in one colour
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
PALETTE_IDS = 65536  # transforms.annotations.PALETTE_SIZE: ids drawn in a colour of their own
_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def class_id(name: str) -> int:
    """VOC's class index (1..20) of one of its names; another name (a VOC-format set of classes of
    its own) a stable id past them, the same in every build."""
    if name in VOC_CLASSES:
        return VOC_CLASSES.index(name) + 1
    return len(VOC_CLASSES) + 1 + zlib.crc32(name.encode("utf-8")) % (PALETTE_IDS - len(VOC_CLASSES) - 1)


def _number(element: ElementTree.Element | None, field: str) -> float:
    text = element.findtext(field) if element is not None else None
    try:
        value = float(text) if text is not None else float("nan")
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise Rejected(BAD_ANNOTATION, f"{field} is not a number")
    return value


def parse_voc_xml(data: bytes) -> dict[str, Any]:
    """One VOC XML file -> `{"height", "width", "boxes": [[x, y, w, h]], "categories", "names"}` (size
    None where it says 0 or nothing). Raises `Rejected` (`file_too_large`, `bad_annotation`)."""
    if len(data) > MAX_VOC_XML_BYTES:
        raise Rejected("file_too_large", f"{len(data)} bytes, over the {MAX_VOC_XML_BYTES} a VOC annotation may take")
    if _DTD.search(data):
        raise Rejected(BAD_ANNOTATION, "the XML declares a DTD (entities are refused: VOC's files have none)")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:  # its message names a line and column, never the bytes
        raise Rejected(BAD_ANNOTATION, f"not well-formed XML ({exc})"[:200]) from None
    if root.tag != "annotation":
        raise Rejected(BAD_ANNOTATION, f"root element <{root.tag[:40]}>, not <annotation>")
    size = root.find("size")
    declared = {}
    for field in ("height", "width"):
        text = size.findtext(field) if size is not None else None
        declared[field] = int(text) if text is not None and text.strip().isdigit() and int(text) > 0 else None
    boxes, categories, names = [], [], []
    for index, item in enumerate(root.findall("object")):
        name = (item.findtext("name") or "").strip()
        if not name:
            raise Rejected(BAD_ANNOTATION, f"object {index} has no <name>")
        box = item.find("bndbox")
        if box is None:
            raise Rejected(BAD_ANNOTATION, f"object {index} ({name[:40]}) has no <bndbox>")
        x0, y0, x1, y1 = (_number(box, f) for f in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise Rejected(BAD_ANNOTATION, f"object {index} ({name[:40]}): xmax < xmin or ymax < ymin")
        boxes.append([x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1])
        categories.append(class_id(name))
        names.append(name)
    return {**declared, "boxes": boxes, "categories": categories, "names": names}
