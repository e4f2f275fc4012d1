"""What img2dataset did to the images it stored, read from a shard's listing: resized them,
decoded and re-encoded them (losing transparency, 16-bit depth and EXIF), dropped their EXIF
rotation; stored captions as bytes (a URL list not in UTF-8) and wrote no listing row for the
images of a files-layout folder. The laion source warns of it once per build (`LaionSource.notices`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sources import fsio, hf_parquet
from sources.img2dataset_listing import MAX_LISTING_BYTES, download_status, parse_json
from sources.records import nfc
from sources.tar_members import split_member
from sources.web_samples import IMAGE_EXTENSIONS

RESIZE_ADVICE = ("download with img2dataset --resize_mode no --disable_all_reencoding True "
                 "(README: Getting LAION with img2dataset)")


def _first_decoded_row(handle: Any, parquet: Any) -> dict[str, Any] | None:
    """The first success row img2dataset decoded (its `width` recorded), read a batch at a time; a
    row group whose values pass `hf_parquet.ROW_GROUP_BYTES` is passed over, as the read passes it."""
    for index in range(parquet.num_row_groups):
        if hf_parquet.value_bytes(handle, parquet, index) > hf_parquet.ROW_GROUP_BYTES:
            continue
        for batch in parquet.iter_batches(batch_size=64, row_groups=[index], use_threads=False):
            for row in _rows(batch):
                if download_status(row) == "success" and row.get("width") is not None:
                    return row
    return None


def _rows(batch) -> list[dict[str, Any]]:
    """A batch's rows, a value that is not UTF-8 (a caption a writer did not check) None in its row
    alone: it made the shard's first decoded row unknown, and so its re-encoding unchecked."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        columns = [hf_parquet.readable_values(column)[0] for column in batch.columns]
        return [dict(zip(batch.schema.names, values)) for values in zip(*columns)]


LISTING_NOTICE_COLUMNS = ("status", "width", "height", "original_width", "original_height", "exif", "key")


@dataclass
class ListingNotes:
    """What the notices judge of one img2dataset listing, read in one open of it (`listing_notes`)."""

    rows: list[dict[str, Any]]  # its `LISTING_NOTICE_COLUMNS`, those it has
    # its `caption` column is `binary`: img2dataset read its URL list with pyarrow's CSV reader,
    # which types the whole column so when one caption is not UTF-8 (a Latin-1 CSV); each caption
    # is then read by `img2dataset_listing.caption_cell` (U+FFFD for a byte that is not UTF-8)
    binary_captions: bool
    captions_not_utf8: int  # rows a caption of which (the `captions` string columns asked for) is not UTF-8
    decoded_row: dict[str, Any] | None  # `_first_decoded_row`, read where the rows say decoded, not resized


def listing_notes(parquet_uri: str, captions: tuple[str, ...] = ()) -> ListingNotes:
    """An img2dataset listing's `ListingNotes`, its file opened once (its notices opened it three
    times: its rows, its schema, its first decoded row; a footer fetch each from a remote store).
    `captions`: the string columns whose text is built as a caption (`output_format=parquet`'s
    `txt` and `caption`; none where a tar's `.txt` is), counted where not UTF-8. Judged before any
    row is read: its notice columns and captions past `MAX_LISTING_BYTES` are a ValueError (no
    notice from it)."""
    with fsio.open_file(parquet_uri, read_ahead=False) as handle:
        parquet = hf_parquet.open_parquet(handle, pre_buffer=False)
        schema = parquet.schema_arrow
        columns = [c for c in LISTING_NOTICE_COLUMNS if c in schema.names]
        text = [c for c in captions if c in schema.names and hf_parquet.is_text(schema.field(c).type)]
        held = sum(hf_parquet.value_bytes(handle, parquet, index, columns + text)
                   for index in range(parquet.num_row_groups))
        if held > MAX_LISTING_BYTES:  # judged before any row is read: no notice from it
            raise ValueError(f"its notice columns hold {held} bytes of values, over {MAX_LISTING_BYTES}")
        table = parquet.read(columns=columns + text, use_threads=False)
        bad = captions_not_utf8(table, text)
        # a key that is not UTF-8 (its writer did not check it) None in its row alone: its
        # UnicodeDecodeError lost every notice of the shard (`key` read for `unlisted_images`)
        rows = [row for batch in table.select(columns).to_batches() for row in _rows(batch)]
        table = None
        caption = schema.field("caption").type if "caption" in schema.names else None
        binary = caption is not None and hf_parquet.is_binary(caption)
        decoded = _first_decoded_row(handle, parquet) if decoded_samples(rows) and not resized_samples(rows) else None
    return ListingNotes(rows, binary, bad, decoded)


def captions_not_utf8(table: Any, captions: list[str]) -> int:
    """The rows of `table` a caption of which (its string columns `captions`) is not UTF-8."""
    import pyarrow as pa

    bad: set[int] = set()
    for name in captions:
        try:
            table.column(name).validate(full=True)  # UTF-8 checked in C++, no Python string made
        except pa.ArrowInvalid:
            bad |= hf_parquet.not_utf8_rows(table.column(name))
    return len(bad)


def resized_samples(rows: list[dict[str, Any]]) -> tuple[int, int, str] | None:
    """(resized, successes, an example) when img2dataset stored other sizes than the originals."""
    if not rows or not all(c in rows[0] for c in LISTING_NOTICE_COLUMNS[:5]):
        return None
    done = [r for r in rows if r["status"] == "success" and r["width"] and r["original_width"]]
    resized = [r for r in done if (r["width"], r["height"]) != (r["original_width"], r["original_height"])]
    if not resized:
        return None
    r = resized[0]
    return len(resized), len(done), f"{r['width']}x{r['height']} of {r['original_width']}x{r['original_height']}"


def decoded_samples(rows: list[dict[str, Any]]) -> tuple[int, int, int] | None:
    """(decoded, successes, rotated) when img2dataset decoded the images it stored, and so encoded
    them again (every mode but `--disable_all_reencoding True`, whose rows have a null `width`;
    `--skip_reencode True` keeps the bytes of a file already in its format, not told apart here);
    `rotated`: those its `exif` column records with an EXIF orientation other than normal, which
    OpenCV's decoding there ignored and its encoding dropped: stored, and built, as shot (sideways)."""
    if not rows or not all(c in rows[0] for c in ("status", "width")):
        return None
    done = [r for r in rows if r["status"] == "success"]
    decoded = [r for r in done if r["width"] is not None]
    if not decoded:
        return None
    return len(decoded), len(done), sum(_exif_rotated(r.get("exif")) for r in decoded)


def _exif_rotated(exif: Any) -> bool:
    """Whether img2dataset's `exif` column (exifread's tags as JSON) records a turned or mirrored photo."""
    parsed = parse_json(exif.encode() if isinstance(exif, str) else None)
    orientation = parsed.get("Image Orientation")
    return isinstance(orientation, str) and bool(orientation) and not orientation.startswith("Horizontal")


def rotation_clause(rotated: int) -> str:
    if not rotated:
        return ""
    return (f"; {rotated} of them img2dataset's exif column records with an EXIF orientation that "
            "re-encoding drops: re-encoded, they are stored, and built, as shot (sideways or mirrored)")


def unlisted_images(parquet_uri: str, rows: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(unlisted, images) when the `output_format=files` folder beside a listing holds images
    whose key it lists in no row and that have no `.json`: img2dataset 1.47 writes a sample's
    file, then fails its `.json` and its listing row on a caption of bytes (a Latin-1 URL list).
    Those images are built, with no hash to check and no metadata. An image with a `.json` and no
    row, or whose row failed, an earlier, killed run left: never built (`img2dataset_stale`), so
    not counted (they were: 'wrote no row nor .json' of images that had both). One listing of the
    folder; `rows` as `listing_notes` read them."""
    folder = parquet_uri.removesuffix(".parquet")
    if not fsio.isdir(folder):
        return None
    members = [split_member(fsio.basename(f)) for f in fsio.list_files(folder)]
    images = {key for key, ext in members if ext in IMAGE_EXTENSIONS}
    described = {key for key, ext in members if ext == "json"}
    listed = {nfc(str(r["key"])) for r in rows if r.get("key") is not None}
    unlisted = images - listed - described
    return (len(unlisted), len(images)) if unlisted else None
