"""What one parquet file's row groups may decompress, all its read paths together (pyarrow's whole
and streamed group reads, and the image column read page by page), judged on each group's page
headers before it is read: a codec's output grows with no bound on its stored bytes, and no other
budget is the file's. A pyarrow file of brotli pages of zeros, 18,793 bytes, handed on 3.58 GiB of
values (8.2 CPU-s; ~0.44 CPU-ms a stored byte, ~450 CPU-s a stored MB), its groups each within the
memory budget; the page-by-page budget (`parquet_values.FileCost.c_most`) counts no value handed on.
Part of `sources.hf_parquet`."""

from __future__ import annotations

# A file's groups may decompress INFLATED_FLOOR bytes and INFLATED_PER_STORED a byte it stores:
# honest files of flat-colour bitmaps (the most compressible images) shrink ~4,500 (512x512 BMPs
# under zstd) to ~10,000 times (2048x2048), JPEG photos ~1; pages of zeros ~200,000 times under
# brotli. Brotli decompresses ~0.45 GB a CPU-s, so a hostile file costs ~0.07 CPU-s a stored KB.
INFLATED_FLOOR = 1 << 30
INFLATED_PER_STORED = 1 << 15


class Inflation:
    """The bytes a file's groups read so far decompress (`spent`, by their page headers: a footer
    patched to say less is not believed), and the most they may (`most`, by the file's `stored`
    bytes). Once a group would pass it, it and every later group are refused (`over`)."""

    def __init__(self, stored: int) -> None:
        self.stored, self.spent, self.over = stored, 0, False
        self.most = INFLATED_FLOOR + INFLATED_PER_STORED * stored

    def take(self, count: int) -> bool:
        """Whether `count` bytes more may be decompressed (then counted); past `most` none may."""
        if self.over or self.spent + count > self.most:
            self.over = True
            return False
        self.spent += count
        return True

    def spare(self, count: int) -> bool:
        """Whether `count` bytes more (a refused group's key columns) fit what is left (then counted)."""
        if self.spent + count > self.most:
            return False
        self.spent += count
        return True

    def detail(self, count: int) -> str:
        return (f"its file's row groups decompress past the {self.most} bytes they may together ({INFLATED_FLOOR} "
                f"and {INFLATED_PER_STORED} a byte of its {self.stored} stored; this group's pages {count} bytes, "
                f"{self.spent} read before it): not read, nor any later group of the file")
