"""PASCAL VOC's detection annotations (`Annotations/<id>.xml`) -> boxes, read safely.

A file is judged by its size first (`MAX_VOC_XML_BYTES`; VOC's are about 1 KB) and refused when
it declares a DTD: VOC's files have none, and a DTD is how an XML file declares entities (a
"billion laughs" file expands a few hundred bytes into gigabytes). expat itself says whether it
does (`declares_dtd`), so the check reads the file in whatever encoding it is (a search of the raw
bytes missed a UTF-16 file's); it stops at the root element, before any entity is expanded. The
standard library's expat parser then reads it: it never fetches external entities. expat reads
UTF-8, UTF-16 and single-byte encodings; a file declaring a multi-byte one (GBK, Shift_JIS, Big5:
what ElementTree's `write(encoding=...)` declares) is decoded by Python's codec first (`_as_utf8`).
Boxes follow detectron2's `load_voc_instances`: VOC's corners are 1-based pixel indices, inclusive,
so xmin - 1, ymin - 1 and the far corner as given; `difficult` and `truncated` objects are kept, as
there.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
import xml.parsers.expat as expat
import zlib
from typing import Any

from transforms.annotations import PALETTE_SIZE
from transforms.class_colours import SEPARATED_IDS, spread_ids
from transforms.errors import Rejected

MAX_VOC_XML_BYTES = 1 << 20
BAD_ANNOTATION = "bad_annotation"
# VOCdevkit's classes in its order: class i + 1 is the index SegmentationClass gives it, so a box and a
# label map of one class draw in one colour
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def class_id(name: str) -> int:
    """VOC's class index (1..20) of one of its names, whatever its case and surrounding blanks
    (LabelImg writes the label as typed: `Person` is VOC's person, index 15, the colour its
    SegmentationClass map draws, not a class of its own); another name (a VOC-format set of
    classes of its own) a stable id past the palette's picked colours, the same in every build:
    what a name of one's own takes when more than `OWN_IDS` of them are drawn together
    (`class_ids`)."""
    name = name.strip()
    if name.lower() in VOC_CLASSES:
        return VOC_CLASSES.index(name.lower()) + 1
    return SEPARATED_IDS + 1 + zlib.crc32(name.encode("utf-8")) % (PALETTE_SIZE - SEPARATED_IDS - 1)


OWN_IDS = SEPARATED_IDS - len(VOC_CLASSES)  # ids 21..255: the picked colours after VOC's 20


def class_ids(names: list[str]) -> list[int]:
    """The ids of one file's object names: VOC's own (`class_id`), and for names of one's own the
    palette's picked colours after VOC's (`class_colours.spread_ids`: apart from each other, from
    VOC's 20 and from black, two names of the file never one colour)."""
    own = spread_ids((n.strip() for n in names if n.strip().lower() not in VOC_CLASSES), len(VOC_CLASSES) + 1,
                     OWN_IDS, class_id)
    return [own[n.strip()] if n.strip() in own else class_id(n) for n in names]


class _Prologue(Exception):
    """Raised by `declares_dtd`'s handlers to stop expat as soon as it knows the answer."""

    def __init__(self, dtd: bool) -> None:
        super().__init__(dtd)
        self.dtd = dtd


def declares_dtd(data: bytes) -> bool:
    """Whether an XML file declares a DTD (`<!DOCTYPE`, hence maybe entities), as expat reads it in
    the file's own encoding. expat is stopped at the DTD's start, or at the root element (a DTD
    comes before it), so nothing is expanded; a file that is not well-formed before either says no,
    and ElementTree names what is wrong with it."""
    parser = expat.ParserCreate()

    def stop(dtd: bool) -> Any:
        def handler(*_: Any) -> None:
            raise _Prologue(dtd)
        return handler

    parser.StartDoctypeDeclHandler = stop(True)
    parser.EntityDeclHandler = stop(True)
    parser.StartElementHandler = stop(False)
    try:
        parser.Parse(data, True)
    except _Prologue as found:
        return found.dtd
    except expat.ExpatError:
        return False
    return False


# an XML declaration naming its encoding, and the codecs its text is looked for in (XML's
# appendix F: ASCII-like, UTF-16 and UTF-32 of either byte order)
_DECLARED_ENCODING = re.compile(r"""\A\ufeff?<\?xml[^>]*?\sencoding\s*=\s*(["'])([A-Za-z][A-Za-z0-9._-]*)\1""")
_DECLARATION_CODECS = ("latin-1", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")


def _as_utf8(data: bytes) -> bytes:
    """A file expat cannot read in the encoding it declares (a multi-byte one other than UTF-8 and
    UTF-16, or a name expat does not know, as `utf-16-le`) as UTF-8, declared so: decoded by Python's
    codec of that name. Raises `Rejected` for an encoding Python does not know either, or bytes that
    are not of it."""
    found = (_DECLARED_ENCODING.match(data[:400].decode(codec, "ignore")) for codec in _DECLARATION_CODECS)
    declared = next(filter(None, found), None)
    if declared is None:
        raise Rejected(BAD_ANNOTATION, "an encoding expat cannot read, and no XML declaration naming it")
    name = declared.group(2)
    try:
        text = data.decode(name)
    except LookupError:
        raise Rejected(BAD_ANNOTATION, f"declares the encoding {name[:40]!r}, which is none Python knows") from None
    except UnicodeError as exc:  # also a codec's bare UnicodeError (punycode, undefined): no byte to name
        at = f"byte {exc.start}" if isinstance(exc, UnicodeDecodeError) else str(exc)[:120]
        raise Rejected(BAD_ANNOTATION, f"not {name[:40]} text as it declares ({at})") from None
    declared = _DECLARED_ENCODING.match(text)
    if declared is None:
        raise Rejected(BAD_ANNOTATION, f"not {name[:40]} text as it declares (no declaration read in it)")
    return (text[:declared.start(2)] + "UTF-8" + text[declared.end(2):]).lstrip("\ufeff").encode()


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
    try:
        dtd = declares_dtd(data)
    except (ValueError, LookupError):  # a multi-byte encoding, or one expat does not know
        data = _as_utf8(data)
        dtd = declares_dtd(data)
    if dtd:
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
    boxes, names = [], []
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
        names.append(name)
    return {**declared, "boxes": boxes, "categories": class_ids(names), "names": names}
