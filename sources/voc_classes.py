"""One colour per class name of a VOC-format dataset's own, the same in every image of it.

VOC's 20 classes draw VOC's colours (`voc_xml.class_id`). A set of classes of its own (LabelImg,
CVAT, a COCO-as-VOC conversion) takes the palette's picked colours after VOC's, a hashed slot each
(`class_colours.spread_ids`). Settled per file, two names of one hashed slot were told apart only
where they met: `corn` drew one colour beside `apple` and another alone, and one colour stood for
`toaster` in some images and `umbrella` in others. The names are now settled once for the dataset
(`own_class_table`): from the label file its export ships (CVAT's `labelmap.txt`, LabelImg's
`classes.txt`), else from one pass over `Annotations/*.xml`, collisions taken by sort order.
Each unit records the id of each name it draws (`own_class_id`, a derived input), so a class
added to the dataset renders again only the detection units whose names' colours it moved. Past the 235
picked colours a name takes a hashed id of the wider palette, moved by sort order to the next one
whose colour no class drew (`_colours_apart`): up to `MAX_OWN_CLASSES` names, as many colours.
CVAT's `labelmap.txt` also gives each class the colour its RGB SegmentationClass maps are painted
in (`labelmap_colour_ids`): each colour stands for the id that class's boxes draw, black for none.
A segmentation unit of such an export records that whole colour table (its maps' colours are
known only once decoded): a class added to labelmap.txt renders every segmentation unit again.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Iterable

from sources import fsio
from sources.paths import path_problem
from sources.records import raise_machine_error, read_input_bytes
from sources.voc_xml import MAX_VOC_XML_BYTES, OWN_IDS, VOC_CLASSES, class_id, parse_voc_xml
from transforms.annotations import PALETTE_SIZE, palette
from transforms.class_colours import SEPARATED_IDS, spread_ids
from transforms.errors import Rejected

# where a VOC export ships its class list, beside Annotations/ (CVAT's Pascal VOC export: `name:r,g,b:
# parts:actions` lines) or in it (LabelImg's save folder: a name a line)
LABEL_FILES = ("labelmap.txt", "classes.txt", "Annotations/classes.txt")
MAX_LABEL_FILE_BYTES = 1 << 20
# a `classes.txt` line that is no bare name: a YOLO converter's `0 apple`, a CSV's `apple,1`, a
# labelmap's `apple:r,g,b` (rev57i: trusted, no name matched and every class took a fallback colour)
_NOT_A_NAME_LINE = re.compile(r"^\d+\s|[:,\t]")
# the names a dataset's table holds, each a colour of its own (`_colours_apart`); a name past them (by
# sort order), or one the shipped label file lacks, takes its hashed colour, which another may draw
MAX_OWN_CLASSES = 4096
_KEPT_NAMES = 4 * MAX_OWN_CLASSES  # names held at once while the smallest are found: a bound, whatever the files


def is_own(name: str) -> bool:
    """Whether an object name is a class of the dataset's own (not one of VOC's 20, in any case)."""
    return name.strip().lower() not in VOC_CLASSES


@fsio.derived_input
def own_class_id(voc_root: str, name: str) -> int:
    """The id (colour) of class `name` of the dataset's own at `voc_root` (the folder holding
    `Annotations/`): its slot in the dataset's table, once a run (`once_per_run`); a name past the
    picked colours, or missing from the shipped label file, its stable hashed id (`class_id`)."""
    return _run_table(voc_root).get(name, class_id(name))


def _run_table(voc_root: str) -> dict[str, int]:
    """`own_class_table`, once per run (`once_per_run`; each call outside one)."""
    return fsio.once_per_run(("sources.voc_classes.own_class_table", voc_root), lambda: own_class_table(voc_root))


def own_class_table(voc_root: str) -> dict[str, int]:
    """The dataset's own class names -> ids: the palette's picked colours after VOC's, each name its
    hashed slot, two of one slot told apart by sort order (`spread_ids`) once for the dataset."""
    names = _label_file_names(voc_root)
    if names is None:
        names = _annotation_names(voc_root)
    return _colours_apart(spread_ids(names, len(VOC_CLASSES) + 1, OWN_IDS, class_id))


def _colours_apart(table: dict[str, int]) -> dict[str, int]:
    """`table` with each name past the picked colours (its hashed id, `class_id`) moved, by name
    order, to the next id of the wider palette whose colour neither ids 0..255 nor a name before it
    draws: of 300 names, the 65 hashed ones drew 64 ids (`zz266` and `zz714` one) and could draw
    one colour at two ids (the seeded palette repeats colours: `zz1098`, `zz9873`)."""
    colours = palette()
    ids = set(range(SEPARATED_IDS + 1))
    drawn = {tuple(c) for c in colours[: SEPARATED_IDS + 1].tolist()}
    apart: dict[str, int] = {}
    for name in sorted(table):
        ident = table[name]
        while ident > SEPARATED_IDS and (ident in ids or tuple(colours[ident].tolist()) in drawn):
            ident = SEPARATED_IDS + 1 + (ident - SEPARATED_IDS) % (PALETTE_SIZE - SEPARATED_IDS - 1)
        ids.add(ident)
        drawn.add(tuple(colours[ident].tolist()))
        apart[name] = ident
    return apart


def _label_lines(voc_root: str, relative: str) -> list[str] | None:
    """The lines of label file `relative` there, blank and `#` ones left out (None: not there, or
    unreadable)."""
    uri = fsio.join(voc_root, *relative.split("/"))
    if not fsio.exists(uri) or path_problem(voc_root, uri):
        return None
    try:
        text = read_input_bytes(uri, MAX_LABEL_FILE_BYTES).decode("utf-8-sig")
    except (OSError, UnicodeError, fsio.FileTooLarge):
        return None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@fsio.derived_input
def labelmap_colour_ids(voc_root: str) -> list[list[int]]:
    """`[r, g, b, id]` for each colour CVAT's `labelmap.txt` gives a class (`name:r,g,b:parts:actions`,
    as datumaro's VOC converter writes it and paints SegmentationClass/ in): black, and `background`
    (and VOC's `ignored`), 0; VOC's names their ids, the dataset's own the ids its boxes draw
    (`own_class_id`), so a class's mask and box draw one colour. A colour two lines give is the
    first's (`shared_colour_notices` says so); no file, or none with a colour (`name:::`), is `[]`:
    the maps are read as their indices."""
    return fsio.once_per_run(("sources.voc_classes.labelmap_colour_ids", voc_root), lambda: _colour_rows(voc_root))


def _colour_rows(voc_root: str) -> list[list[int]]:
    """`labelmap_colour_ids`, taken from the file. Black is 0, unlabelled, whatever line names it:
    datumaro moves the first black label to index 0, its background, and paints unlabelled pixels
    black. A black `_background_` (labelme's) or `Void` drew every unlabelled pixel as that class;
    a file without a black line (hand-trimmed) made every map `bad_label_map`. The dataset's table
    is taken once here: each name's `own_class_id` outside a run took it again (68.7 CPU-s at
    5,000 classes)."""
    colours = _labelmap_colours(voc_root)
    if not colours:
        return []
    rows: list[list[int]] = [[0, 0, 0, 0]]
    taken = {(0, 0, 0)}
    table: dict[str, int] | None = None
    for name, colour in colours:
        if colour in taken:
            continue
        taken.add(colour)
        if name.lower() in ("background", "ignored"):
            rows.append([*colour, 0])
        elif is_own(name):
            table = _run_table(voc_root) if table is None else table
            rows.append([*colour, table.get(name, class_id(name))])
        else:
            rows.append([*colour, class_id(name)])
    return rows


def _labelmap_colours(voc_root: str) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of each labelmap.txt line that gives a colour, in the file's order."""
    found = []
    for line in _label_lines(voc_root, "labelmap.txt") or ():
        fields = line.split(":")
        colour = _colour(fields[1] if len(fields) > 1 else "")
        if colour is not None:
            found.append((fields[0].strip(), colour))
    return found


def shared_colour_notices(voc_root: str) -> list[str]:
    """A sentence for each colour labelmap.txt gives two or more classes (CVAT lets two labels take
    one colour; datumaro paints both alike): their pixels cannot be told apart, and are drawn as the
    first line's class. Black is left out: it is unlabelled whatever names it (`_colour_rows`)."""
    named: dict[tuple[int, int, int], list[str]] = {}
    for name, colour in _labelmap_colours(voc_root):
        if colour != (0, 0, 0) and name not in named.setdefault(colour, []):
            named[colour].append(name)
    return [f"labelmap.txt gives {', '.join(names)} one colour {colour}: their SegmentationClass/ pixels "
            f"cannot be told apart and are all drawn as {names[0]} (the first line's)"
            for colour, names in named.items() if len(names) > 1]


def _colour(text: str) -> tuple[int, int, int] | None:
    """`r,g,b` of 0..255 each (None: no colour, or not one)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def _label_file_names(voc_root: str) -> list[str] | None:
    """The own class names of the first label file there that names classes in its tool's shape
    (None: none is there, or none can be read, names a class or has that shape)."""
    for relative in LABEL_FILES:
        lines = _label_lines(voc_root, relative)
        if lines is None:
            continue
        if relative == "labelmap.txt":
            names = [line.split(":", 1)[0].strip() for line in lines]
        elif any(_NOT_A_NAME_LINE.match(line) for line in lines):
            continue  # another tool's shape (`0 apple`, `apple,1`): its names are not these lines
        else:
            names = lines
        names = [n for n in names if n and n.lower() != "background"]  # CVAT's unlabelled pixels' label
        if not names:
            continue  # names no class (an empty file): the XMLs say what the dataset holds
        return _smallest(n for n in names if is_own(n))
    return None


def _annotation_names(voc_root: str) -> list[str]:
    """The own class names that `Annotations/*.xml` use (one pass: ~0.8-1.2 CPU-s per 10,000 files); a
    file that cannot be read is passed over here (its pair's own reject says why)."""
    folder = fsio.join(voc_root, "Annotations")
    if not fsio.isdir(folder):
        return []

    if path_problem(voc_root, folder):
        return []

    def names() -> Iterable[str]:
        for uri in fsio.list_files(folder, (".xml",)):
            try:
                data = _xml_bytes(voc_root, uri)
                if data is not None:
                    yield from (n.strip() for n in parse_voc_xml(data)["names"])
            except (Rejected, OSError, UnicodeError, fsio.FileTooLarge):
                continue

    return _smallest(n for n in names() if is_own(n))


def _xml_bytes(voc_root: str, uri: str) -> bytes | None:
    """An annotation file's bytes (None: one its pair's reader refuses, a link leading out, a fifo).
    A local plain file (no link: its folder judged once) is opened directly: through fsspec and
    `path_problem`, the pass took 1.9 CPU-s per 10,000 files, not 0.8."""
    if "://" in uri:
        return read_input_bytes(uri, MAX_VOC_XML_BYTES)
    if not stat.S_ISREG(os.lstat(uri).st_mode):
        return None if path_problem(voc_root, uri) else read_input_bytes(uri, MAX_VOC_XML_BYTES)
    try:
        with open(uri, "rb") as handle:
            data = handle.read(MAX_VOC_XML_BYTES + 1)
    except OSError as exc:
        raise_machine_error(exc, uri)
        raise
    return None if len(data) > MAX_VOC_XML_BYTES else data


def _smallest(names: Iterable[str]) -> list[str]:
    """The first `MAX_OWN_CLASSES` distinct names by sort order (the first `OWN_IDS` of them take a
    picked colour), held within `_KEPT_NAMES` whatever the dataset holds."""
    kept: set[str] = set()
    for name in names:
        kept.add(name)
        if len(kept) > _KEPT_NAMES:
            kept = set(sorted(kept)[:MAX_OWN_CLASSES])
    return sorted(kept)[:MAX_OWN_CLASSES]
