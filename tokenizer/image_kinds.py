"""What a file Pillow will not open (or would misread) is, by its first bytes, as the build's
`transforms.image_format.sniff_format` and `fits_misread` tell it: a real image format the build
names `unsupported_format`, not junk. `tokenizer` may not import `transforms`
(tests/test_layering.py), so these are mirrors, held equal by tests/test_tokenizer_kinds.py on
ImageMagick's files (tests/fixtures/magick).

Unmirrored, the tokenizer called ImageMagick's OpenEXR, Radiance HDR, PFM, PAM, DPX and MIFF
files, a 16-bit PSD and a float TIFF `not_an_image` (junk), and decoded a 16-bit FITS (BZERO
32768) with its samples wrapped, which the build refuses.
"""

from __future__ import annotations

# (magic, name) of formats ImageMagick, editors and HDR tools write that Pillow does not read
# (the build's `image_format._OTHER_MAGICS`)
OTHER_MAGICS = ((b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"),
                (b"id=ImageMagick", "MIFF (ImageMagick)"), (b"SDPX", "DPX"), (b"XPDS", "DPX"),
                (b"gimp xcf", "XCF (GIMP)"))
# TIFF headers Pillow's open takes as a classic TIFF (the build's `tiff_head.TIFF_HEADS` but II+\0,
# a little-endian BigTIFF, which the build does not name here)
TIFF_CLASSIC_HEADS = (b"II*\x00", b"MM\x00*", b"MM*\x00", b"II\x00*", b"MM\x00+")
# (colour mode, bits a channel) of the PSDs Pillow reads (the build's `image_format._PILLOW_PSD`)
PILLOW_PSD = frozenset({(0, 1), (1, 8), (2, 8), (3, 8), (4, 8), (7, 8), (8, 8), (9, 8)})
PSD_HEADER = 26
CORRUPT, UNSUPPORTED = "corrupt_header", "unsupported_format"


def _photoshop(head: bytes) -> tuple[str, str]:
    """A Photoshop file Pillow refused: cut in its header, or of a layout Pillow reads (damaged:
    `corrupt_header`), else one it cannot read (16 bits a channel, a PSB)."""
    if len(head) < PSD_HEADER:
        return CORRUPT, "PSD (Photoshop, cut inside its 26-byte header)"
    layout = (int.from_bytes(head[24:26], "big"), int.from_bytes(head[22:24], "big"))
    if head[:6] == b"8BPS\x00\x01" and layout in PILLOW_PSD:
        return CORRUPT, "PSD (Photoshop): damaged or cut short (Pillow reads this layout, not this file)"
    kind = "PSB (Photoshop large document" if head[4:6] == b"\x00\x02" else "PSD (Photoshop"
    return UNSUPPORTED, f"{kind}, {layout[1]} bits a channel): a real image format this loader cannot decode"


def unopened_kind(data: bytes) -> tuple[str, str] | None:
    """(the build's reason, detail) for bytes Pillow's open refused that the build's
    `sniff_format` names (see the module); None for any other bytes."""
    head = data[:512]
    if head[:4] == b"8BPS":
        return _photoshop(head)
    name = next((name for magic, name in OTHER_MAGICS if head.startswith(magic)), None)
    if name is None and head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        name = "PFM (portable float map)"
    if name is None and head[:2] == b"P7" and head[2:3].isspace():
        name = "PAM (portable arbitrary map)"
    if name is None and head[:4] in TIFF_CLASSIC_HEADS:
        name = "TIFF (a sample layout Pillow cannot read)"
    return None if name is None else (UNSUPPORTED, f"{name}: a real image format this loader cannot decode")


def broken_tiff(data: bytes) -> bool:
    """Whether these are a TIFF's bytes whose open raised (not merely went unrecognised): the build
    says `unsupported_format` (a layout Pillow has no raw mode for), not `corrupt_header`."""
    return data[:4] in TIFF_CLASSIC_HEADS


FITS_CARD = 80  # a FITS header is cards of 80 characters up to `END` (the build's `image_format._FITS_CARD`)
FITS_HEADER_CARDS = 36 * 1024  # the build's `_FITS_HEADER_CARDS`


def fits_misread(data: bytes) -> str | None:
    """What Pillow would misread in a FITS file it opened (its stored integers read without BZERO
    and BSCALE: ImageMagick's 16-bit FITS came out wrapped), named, else None: only 8-bit samples
    with no offset or scale are read as stored (the build's `image_format.fits_misread`)."""
    cards: dict[str, str] = {}
    for at in range(0, min(len(data), FITS_CARD * FITS_HEADER_CARDS), FITS_CARD):
        card = data[at:at + FITS_CARD].decode("latin-1")
        if card[:8].strip() == "END":
            break
        if card[8:10] == "= ":
            cards[card[:8].strip()] = card[10:].split("/")[0].strip()
    else:
        return f"FITS (no END card within its first {FITS_HEADER_CARDS} header cards)"
    bits, zero, scale = cards.get("BITPIX", ""), cards.get("BZERO", "0"), cards.get("BSCALE", "1")
    try:
        if int(bits) == 8 and float(zero) == 0 and float(scale) == 1:
            return None
    except ValueError:
        pass
    return f"FITS (BITPIX {bits or '?'}, BZERO {zero}, BSCALE {scale}: Pillow reads the stored numbers without them)"
