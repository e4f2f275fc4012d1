"""How many pages, frames or pictures an opened file holds (`pages_of`), judged without decoding
any: the image is its first. Part of `transforms.decode`."""

from __future__ import annotations

from PIL import Image

from transforms.headers import Pages, gif_frames, icon_entries, png_frames, tiff_pages


# formats whose opened image knows its frame count from what it read to open it: libwebp's
# demuxer, libavif's and libheif's image lists (GIF's and TIFF's Pillow counts by seeking through
# every frame or IFD, an APNG's it takes from the acTL, which may be anything: those are walked in
# the bytes, `headers.gif_frames`, `tiff_pages`, `png_frames`)
# Pillow counts these at open: WebP's, AVIF's and HEIF's frames, an MPO's pictures (a phone's JPEG
# with a second one, its MP index: the first is the photo, as Pillow's default frame)
_FRAMES_KNOWN_AT_OPEN = ("WEBP", "AVIF", "HEIF", "MPO")


def pages_of(image: Image.Image, data: bytes) -> Pages:
    """How many pages (a TIFF's) or frames (an animated GIF's, APNG's, WebP's, an AVIF's image
    sequence) or pictures (an MPO's, an icon's) the opened file holds, judged without decoding any:
    the image is its first, as `convert F[0]` shows (an icon's largest, as Pillow decodes it), and
    the sentence header says how many there were (`uvd_pipeline.render`)."""
    if image.format == "GIF":
        return gif_frames(data)
    if image.format == "TIFF":
        return tiff_pages(data)
    if image.format == "PNG":
        return png_frames(data)
    if image.format == "ICO":  # its directory's images: the largest is decoded, as Pillow's default
        return Pages(max(icon_entries(data), 1))
    if image.format in _FRAMES_KNOWN_AT_OPEN:
        count = getattr(image, "n_frames", 1)
        return Pages(count) if isinstance(count, int) and count > 1 else Pages()
    return Pages()
