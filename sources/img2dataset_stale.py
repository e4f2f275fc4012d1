"""Samples a shard holds that its img2dataset listing says this download did not write: left in
an `output_format=files` folder by an earlier, killed run (img2dataset's rerun, by default
`--incremental_mode incremental`, rewrites the shard's parquet but never clears its folder), or
put in a tar beside a listing of another download. Never built: each is one `stale_download`
reject naming its files, while the listing's row keeps its own outcome (`failed_to_download`)."""

from __future__ import annotations

from sources import hf_parquet
from sources.img2dataset_listing import ShardListing, download_status

STALE_DOWNLOAD = "stale_download"
# why such a sample is there, by layout: img2dataset writes each tar whole, so a tar's was put there
LEFT_IN_FOLDER = "left by an earlier, killed run of img2dataset (its rerun rewrote the listing, not the folder)"
PUT_IN_TAR = "put in the tar by hand or from another download (img2dataset writes a tar whole, with its listing)"


def stale_detail(listing: ShardListing, shard: str, sample_key: str, names: list[str], why: str,
                 tool: str = "img2dataset") -> str | None:
    """Why the sample `sample_key` (its files or members `names`) is no download its read
    listing records, or None: its row failed (img2dataset writes no file for a failed URL; its old
    `.json`'s `success` overrode the row and built it beside the row's reject), or, in a listing
    read whole, it has no row though its `.json` says img2dataset saved it (a run writes a
    sample's `.json` and its row together). A sample without a `.json` and without a row is built
    as before: img2dataset 1.47 writes the image, then fails its `.json` and row on a caption of
    bytes (`web_notices` says so). Without a readable listing nothing is judged. `tool`: the
    downloader that wrote the listing (video2dataset's is judged alike: `video_shards`)."""
    if not listing.parquet_read:
        return None
    shown = ", ".join(sorted(names)[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
    row = listing.rows.get(sample_key)
    if row is not None:
        state = download_status(row)
        if state == "success":
            return None
        return f"{shown}: {why}; {shard}.parquet records key {sample_key} as {state}: not built"
    unkeyed = any(reason == hf_parquet.TEXT_NOT_UTF8 for reason, _, _ in listing.problems)
    if unkeyed or not any(n.lower().endswith(".json") for n in names):
        return None
    return (f"{shown}: {why}; {shard}.parquet lists no key {sample_key} though its .json says {tool} "
            "saved it: not built")
