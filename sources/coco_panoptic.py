"""COCO panoptic (`panoptic_<split>.json` + its PNG folder), read as panopticapi reads it.

The JSON holds one annotation per image: `file_name` (its PNG in the PNG folder) and
`segments_info` (each segment's `id`, `category_id`, `iscrowd`, `bbox`, `area`); the PNG holds
each pixel's segment id as R + 256 G + 256^2 B, 0 void. A segmentation pair draws each segment
in its category's colour (as a COCO instances pair draws its objects), a detection pair the boxes
of its thing segments (`isthing` 1 or true), crowd regions left out as an instances pair leaves them.
"""

from __future__ import annotations

from typing import Any

from sources.annotation_files import as_int
from transforms.annotations import MAX_CLASS_ID

# where an index keeps an image's panoptic entry among its annotations (no instance annotation
# shares its index: a panoptic file is read alone, `load_index`)
PANOPTIC_KEY = "panoptic"
PNG_DIR = "_png_dir"  # the entry's PNG folder: its JSON's name without `.json`, as panopticapi's


def is_panoptic_file(entries: list[Any]) -> bool:
    """A panoptic file's annotations: one per image with `segments_info`, no ids of their own."""
    return bool(entries) and isinstance(entries[0], dict) and "segments_info" in entries[0] \
        and "id" not in entries[0]


def default_png_dir(uri: str) -> str:
    """panopticapi's own default (`pq_compute`: `gt_json_file.replace('.json', '')`): the folder
    beside the JSON named as it is, `annotations/panoptic_val2017/`, where the official
    `panoptic_val2017.zip` unpacks."""
    return uri[: -len(".json")] if uri.endswith(".json") else uri


def png_name(entry: dict[str, Any]) -> str | None:
    """The entry's PNG under its folder (a text), else None."""
    name = entry.get("file_name")
    return name if isinstance(name, str) and name else None


def indexed_segments(entry: dict[str, Any]) -> list[tuple[int, Any]]:
    """Its segments with their places in `segments_info`, one per id: an id listed twice (of one
    category: detection2panoptic_coco_format gives two stuff objects of a category its one colour)
    is one segment, its last entry, as panopticapi's `{el['id']: el for el in segments_info}`."""
    value = entry.get("segments_info")
    if not isinstance(value, list):
        return []
    ident = [as_int(s.get("id")) if isinstance(s, dict) else None for s in value]
    last = {key: i for i, key in enumerate(ident) if key is not None}
    return [(i, s) for i, s in enumerate(value) if ident[i] is None or last[ident[i]] == i]


def segments(entry: dict[str, Any]) -> list[Any]:
    return [segment for _, segment in indexed_segments(entry)]


def segments_problem(entry: dict[str, Any], categories: dict[int, dict[str, Any]]) -> str | None:
    """What makes an entry's segments unreadable, as panopticapi would fail on it: no PNG name, no
    list of segments, a segment without a positive integer id (0 is void) or used twice, a
    category the file does not declare (its `categories[category_id]` raises KeyError), or one
    outside the target palette's 1..MAX_CLASS_ID."""
    if png_name(entry) is None:
        return "file_name (its PNG) is not a text"
    if not isinstance(entry.get("segments_info"), list):
        return "segments_info is not a list"
    seen: dict[int, Any] = {}
    for i, segment in enumerate(entry["segments_info"]):
        ident = as_int(segment.get("id")) if isinstance(segment, dict) else None
        if ident is None or not 0 < ident < 1 << 24:
            return f"segments_info[{i}] has no segment id 1..16777215 (R + 256 G + 256^2 B; 0 is void)"
        if ident in seen and as_int(seen[ident]) != as_int(segment.get("category_id")):
            return f"segments_info[{i}] repeats segment id {ident} with another category_id " \
                   f"({segment.get('category_id')!r}, not {seen[ident]!r})"
        seen[ident] = segment.get("category_id")
        category = as_int(segment.get("category_id"))
        if category is None or category not in categories:
            return f"segments_info[{i}] (id {ident}) has category_id {segment.get('category_id')!r}, " \
                   f"which categories does not list"
        if not 1 <= category <= MAX_CLASS_ID:  # its colour: 0 is void's black, past the palette another's
            return f"segments_info[{i}] (id {ident}) has category_id {category}, outside 1..{MAX_CLASS_ID} " \
                   f"(the ids the target palette colours)"
        if thing_flag(categories[category]) is None:
            return f"segments_info[{i}] (id {ident}): category {category} has isthing " \
                   f"{categories[category].get('isthing')!r}, neither 0/false (stuff) nor 1/true (thing)"
    return None


def thing_flag(category: dict[str, Any]) -> bool | None:
    """A category's `isthing`: 0 or JSON false is stuff, 1 or true a thing (panopticapi compares it
    to 0 and 1, and `json.dump` writes Python's False as false); absent, a thing; else None."""
    value = category.get("isthing", 1)
    if isinstance(value, bool):
        return value
    return {0: False, 1: True}.get(as_int(value))  # type: ignore[arg-type]


def is_thing(segment: dict[str, Any], categories: dict[int, dict[str, Any]]) -> bool:
    """A segment of a thing category (an object with a box); `isthing` 0/false is stuff (sky, road)."""
    return thing_flag(categories.get(as_int(segment.get("category_id")), {})) is not False


def segmentation_payload(entry: dict[str, Any], png_uri: str) -> dict[str, Any]:
    """What the renderer needs: the PNG and each listed segment's id and category."""
    listed = segments(entry)
    return {"panoptic_uri": png_uri, "segment_ids": [int(as_int(s["id"])) for s in listed],
            "segment_categories": [int(as_int(s["category_id"])) for s in listed]}
