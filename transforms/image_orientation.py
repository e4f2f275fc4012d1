"""Where the picture is in an opened image: its EXIF (or irot/imir) orientation (`_orientation`),
an AVIF's clean aperture or a GIF's logical screen (`_aperture`), and the resize plan of a JPEG
decoded at reduced DCT scale and turned (`_plan_at_scale`). Part of `transforms.decode`."""

from __future__ import annotations

import functools
import io

from PIL import Image

from transforms.exif_ifd import EXIF_ORIENTATION, exif_orientation
from transforms.headers import clean_aperture, gif_screen
from transforms.png_chunks import _png_exif
from transforms.resize import ResizePlan



@functools.cache
def pillow_turns_tiffs() -> bool:
    """Whether this Pillow turns a TIFF by its Orientation tag itself: Pillow 12's TiffImagePlugin
    reports the turned size from the open and turns the pixels as it loads them (`load_end`)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buf = io.BytesIO()
    Image.new("L", (2, 1)).save(buf, "TIFF", exif=exif.tobytes())
    with Image.open(buf) as probe:
        opened = probe.size
        probe.load()
        return opened == probe.size == (1, 2)


def _turned_on_load(image: Image.Image) -> bool:
    """Whether Pillow turns this opened image by its EXIF orientation as it loads it: the turn is
    then not ours to make (a TIFF of orientation 6 was planned on its size turned twice), though it
    still copies Pillow's buffer (`decode_cost`)."""
    if image.format != "TIFF" or not pillow_turns_tiffs():  # asked once, at the first TIFF
        return False
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1)) in range(2, 9)
    except Exception:
        return False


def _orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF orientation (1-8) to apply after decoding; 1 for an image Pillow turns itself as it
    loads it (`_turned_on_load`: a TIFF, whose size it reports turned). An AVIF's or HEIF's is its container's
    `irot`/`imir` only: the HEIF spec has readers ignore EXIF and XMP orientation there. libheif
    (pillow-heif) applies irot/imir itself and resets the EXIF tag to 1; Pillow's AVIF plugin
    writes irot/imir as the EXIF tag of `info["exif"]` (over a contradicting one) and leaves the
    pixels as coded. Any other file's is its EXIF tag alone (a TIFF's as Pillow reads it): `getexif`
    would also read an XMP `tiff:Orientation` where the EXIF has none, which browsers, libvips,
    ImageMagick and libheif ignore: an AVIF with no irot, or a JPEG or WebP with no EXIF
    orientation, but such an XMP packet (an editor's export) was turned 90 degrees where they
    show it as stored. Read by a bounded walk of IFD0 (`exif_ifd`): Pillow's `Exif.load` copies
    every entry's data (1 GB for a 1 MB eXIf whose entries all point at one block)."""
    if image.format == "HEIF" or _turned_on_load(image):
        return 1
    try:
        if image.format == "TIFF":  # as Pillow's own turn of a TIFF reads it
            exif = image.getexif()
        else:
            raw = image.info.get("exif") or (_png_exif(data) if image.format == "PNG" else None)
            return exif_orientation(raw) if raw else 1  # never Pillow's Exif.load: it copies every entry's data
        value = int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _aperture(image: Image.Image, data: bytes) -> tuple[int, int, int, int] | None:
    """The box of the opened image that is the picture, None for the whole: an AVIF's clean
    aperture (`clap`): libheif crops a HEIF itself, but Pillow's AVIF plugin hands over the whole
    coded frame (an AVIF whose clap keeps 200 x 160 of 320 x 240 was decoded 320 x 240, where
    heif-convert gives the crop); a GIF's logical screen (`_gif_screen_box`)."""
    if image.format == "AVIF":
        return clean_aperture(data, *image.size)
    return _gif_screen_box(image, data) if image.format == "GIF" else None


def _gif_screen_box(image: Image.Image, data: bytes) -> tuple[int, int, int, int] | None:
    """A GIF's logical screen, when its first frame reaches past it: Pillow grows its canvas to
    hold the frame (a 32 x 24 frame at +10+6 of a 32 x 24 screen was decoded 42 x 30), where
    ImageMagick's `-coalesce` and browsers show the screen, the frame cut at its edge. A screen
    declared 0 x 0 (some writers') is no box: the frame is then the picture."""
    screen = gif_screen(data)
    if screen is None or min(screen) < 1 or (screen[0] >= image.width and screen[1] >= image.height):
        return None
    return 0, 0, min(screen[0], image.width), min(screen[1], image.height)


def _cropped(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """The loaded image cut to `box`, keeping its `format` (`hdr_colour` reads it). The HEIF
    spec applies clap before irot/imir, so this comes before `_oriented`."""
    if box is None:
        return image
    cut = image.crop(box)
    cut.format = image.format
    return cut


# the turn that shows an image of each EXIF orientation (as `ImageOps.exif_transpose` makes it)
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    """The loaded image turned by its EXIF `orientation` (the one the plan was made with), keeping
    the opened image's `format`: `hdr_colour` reads it, and Pillow's transposed copy has none (a
    rotated HDR AVIF, whose irot/imir reach Pillow as EXIF, was shown untone-mapped). Turned by
    `transpose`, not `ImageOps.exif_transpose`, which also writes the EXIF back without its
    Orientation: a tag of a non-standard type (a FLOAT ResolutionUnit) raised struct.error
    there. The caller drops the opened image, so one Pillow buffer stays beside the RGB array
    (`decode_cost`)."""
    if orientation not in _TURNS:
        return image
    turned = image.transpose(_TURNS[orientation])
    turned.format = image.format
    return turned


# the axes of the shown image that an EXIF orientation reverses from the coded one's, (x, y)
_REVERSED_AXES = {2: (True, False), 3: (True, True), 4: (False, True), 6: (True, False), 7: (True, True),
                  8: (False, True)}


def _plan_at_scale(plan: ResizePlan, shape: tuple[int, ...], scale: int, orientation: int) -> ResizePlan:
    """`plan` for a JPEG decoded at 1/`scale` (DCT scaling) and turned by `orientation`: a coded
    pixel j of the reduced image shows input pixels [j * scale, (j + 1) * scale), its last column
    and row partly the encoder's padding (1207 = 150 x 8 + 7), and that column or row comes first
    on an axis the turn reverses. Stretched uniformly over the input, the canvas was moved by up
    to 7/8 of a reduced pixel (27 dB from the full decode)."""
    if scale == 1:
        return plan
    h, w = shape[:2]
    flip_x, flip_y = _REVERSED_AXES.get(orientation, (False, False))
    shift = (w - plan.in_w / scale if flip_x else 0.0, h - plan.in_h / scale if flip_y else 0.0)
    return plan.for_scaled_input(h, w, (1 / scale, 1 / scale), shift)
