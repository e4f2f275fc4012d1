"""One video2dataset shard written in `output_format=files` as its download worker and
`FilesSampleWriter` write it, in a process of its own so that a test can kill it mid-shard
(SIGKILL, as an OOM killer or a lost node does) and run it again over the same folder.

    python tests/video2dataset_writer.py OUT SHARD_ID URLS.json HOLD_AT

URLS.json: [[url, caption], ...]; a url is the path of a local video ("downloaded": its bytes
copied) or of none (a 404: `failed_to_download`). What video2dataset 1.3 does, and a rerun
meets: the shard folder `NNNNN/` is made only if missing (never cleared); `NNNNN.parquet` is
opened for writing at the start (pyarrow's ParquetWriter, rows flushed 100 at a time, its
footer written at the end: a killed run leaves a file with no footer); each sample's files are
written as it ends (a success `{key}.mp4`, `.txt`, `.json`; a failure `.txt` and `.json` with
its status); `NNNNN_stats.json` comes last, the mark `--incremental_mode incremental` takes
for a shard done. Keys as its `compute_key`: shard id * 10**4 + index, 9 digits. After each
sample it prints its key (flushed); after the HOLD_AT-th (0: none) it waits a minute, so that
the test kills it there, between two samples.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()),
                    ("status", pa.string()), ("error_message", pa.string())])


def write_shard(out: str, shard_id: int, urls: list[list[str]], hold_at: int) -> None:
    shard = f"{shard_id:05d}"
    folder = os.path.join(out, shard)
    os.makedirs(folder, exist_ok=True)
    writer = pq.ParquetWriter(os.path.join(out, f"{shard}.parquet"), SCHEMA)
    buffer: list[dict] = []
    successes = 0
    start = time.time()
    for index, (url, caption) in enumerate(urls):
        key = f"{shard_id * 10**4 + index:09d}"
        ok = os.path.exists(url)
        meta = {"url": url, "caption": caption, "key": key, "status": "success" if ok else "failed_to_download",
                "error_message": None if ok else "HTTP Error 404: Not Found", "yt_meta_dict": None}
        if ok:
            successes += 1
            with open(url, "rb") as source, open(os.path.join(folder, f"{key}.mp4"), "wb") as video:
                video.write(source.read())
        with open(os.path.join(folder, f"{key}.txt"), "w") as text:
            text.write(caption)
        with open(os.path.join(folder, f"{key}.json"), "w") as described:
            described.write(json.dumps(meta, indent=4))
        buffer.append(meta)
        if len(buffer) >= 100:
            writer.write_table(pa.Table.from_pylist(buffer, SCHEMA))
            buffer = []
        print(key, flush=True)
        if index + 1 == hold_at:
            time.sleep(60)
    if buffer:
        writer.write_table(pa.Table.from_pylist(buffer, SCHEMA))
    writer.close()
    stats = {"count": len(urls), "successes": successes, "failed_to_download": len(urls) - successes,
             "failed_to_subsample": 0, "duration": time.time() - start, "bytes_downloaded": 0,
             "start_time": start, "end_time": time.time(), "status_dict": {"success": successes}}
    with open(os.path.join(out, f"{shard}_stats.json"), "w") as marked:
        marked.write(json.dumps(stats, indent=4))


if __name__ == "__main__":
    with open(sys.argv[3]) as listed:
        write_shard(sys.argv[1], int(sys.argv[2]), json.load(listed), int(sys.argv[4]))
