"""Whether a Deflate TIFF's strips (or tiles) hold whole zlib streams. Part of `transforms.decode`.

libtiff inflates a strip only until its rows are full, and never checks that the zlib stream ended
or that its adler32 is right: 4 KiB of zeros or a few flipped bytes inside a strip (a bad sector, a
bad copy) decoded to garbled pixels without a word (ImageMagick is silent too), 17-62% of them off
by more than 16 levels in a 640 x 425 photo. After a decode that succeeded, each strip of the
decoded IFD (only those: the decode read them all, its budgets judged before) is inflated again
with zlib to its end, into a bounded buffer that is thrown away (no second copy of the pixels),
and one that does not end whole with a right adler32 makes the file `decode_error` 'damaged'
(`truncated` where its bytes run into zeros that go on to the end of the file: a cut download's)."""

from __future__ import annotations

from zlib_ng import zlib_ng  # the build's own deflater (`png_fast`): its inflate ~15% less CPU than zlib's

DEFLATE = (8, 32946)  # TIFF Compression: Adobe Deflate, and the older Deflate code (both zlib streams)
_OUT_CHUNK = 1 << 18  # bytes inflated at a time, then discarded: the buffer the check holds
_IN_CHUNK = 1 << 16  # compressed bytes given zlib at a time
# zero bytes at the end of a file, from inside a strip the file holds, that make its broken stream a
# cut one (a damaged IFD's byte count running a strip into a writer's last zero bytes is no cut)
_ZERO_TAIL = 16
_SPARE = 4096  # bytes a strip's stream may inflate past its rows before it is judged no strip's


def deflate_damage(data: bytes, offsets: tuple[int, ...], counts: tuple[int, ...], tiled: bool,
                   holds: int | None = None) -> tuple[str, str] | None:
    """(reason, detail) for the first strip (tile) whose zlib stream does not end whole within its
    byte count, with a right adler32, else None: `truncated` when the file holds it and its bytes
    run into `_ZERO_TAIL` or more zeros that go on to the end of the file (a download cut there, the
    zeros a failed one leaves after it: the file as long as it declares, but cut), else
    `decode_error` 'damaged'. Strips of 0 bytes (a sparse
    file's absent ones, which libtiff fills) are skipped; bytes after a stream's end (a writer's
    padding) are allowed. `holds`: the bytes a strip's (tile's) rows hold, all its samples, which
    no whole stream inflates past (4 KiB spared): the check stops there, never inflating a bomb
    libtiff stopped short of."""
    view = memoryview(data)
    pieces = len(offsets)
    for index, (offset, count) in enumerate(zip(offsets, counts)):
        if not count:
            continue
        problem = _stream_problem(view[offset : offset + count], holds)
        if problem:
            kind = "tile" if tiled else "strip"
            zeros_from = len(data.rstrip(b"\x00"))
            if offset <= zeros_from < offset + count <= len(data) and len(data) - zeros_from >= _ZERO_TAIL:
                return "truncated", (f"the file is cut short, zeros after the cut (a failed download): {kind} "
                                     f"{index + 1} of {pieces} runs into {len(data) - zeros_from} zero bytes that go "
                                     f"on to its end ({problem})")
            return "decode_error", f"damaged: {kind} {index + 1} of {pieces} holds no whole zlib stream ({problem})"
    return None


class BoundedInflate:
    """One zlib stream inflated a slice at a time into a buffer thrown away, stopping once it ends,
    passes `most` bytes of output, or zlib refuses it (`refused`): a TIFF strip's, or a PNG's IDAT
    data chunk after chunk (`headers._png_stream_unended`)."""

    def __init__(self, most: int | None) -> None:
        self._inflater, self.most, self.inflated, self.refused = zlib_ng.decompressobj(), most, 0, ""

    @property
    def ended(self) -> bool:
        return self._inflater.eof

    @property
    def past(self) -> bool:
        return self.most is not None and self.inflated > self.most

    def feed(self, piece: memoryview) -> None:
        """Inflates `piece` (a slice at a time: `unconsumed_tail` is a copy) until done or stopped."""
        try:
            for start in range(0, len(piece), _IN_CHUNK):
                tail = piece[start : start + _IN_CHUNK]
                while tail and not self.ended and not self.past:
                    self.inflated += len(self._inflater.decompress(tail, _OUT_CHUNK))
                    tail = self._inflater.unconsumed_tail
                if self.ended or self.past:
                    return
            while not self.ended and not self.past:  # what its last bytes still hold
                out = len(self._inflater.decompress(b"", _OUT_CHUNK))
                self.inflated += out
                if not out:
                    return
        except zlib_ng.error as exc:
            self.refused = f"zlib: {exc}"


def _stream_problem(piece: memoryview, holds: int | None) -> str | None:
    inflate = BoundedInflate(holds + _SPARE if holds else None)
    inflate.feed(piece)
    if inflate.refused:
        return inflate.refused
    if inflate.past:
        return f"its zlib stream inflates past the {holds} bytes its rows hold"
    return None if inflate.ended else "its zlib stream does not end within the strip's bytes"
