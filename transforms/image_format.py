"""What a file Pillow does not open is, by its first bytes (`sniff_format`: a real format this
build cannot decode, not junk), and whether it is cut short of what its container declares. Part of `transforms.decode`."""

from __future__ import annotations

from transforms.errors import DecodeError
from transforms.headers import (JPEG_LS_SOF, camera_raw, coded_data_in_zeros, declared_length, jpeg_layout,
                                tiff_ifd_in_zeros, tiff_samples)
from transforms.tiff_head import tiff_layout


_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF",
                b"crx ": "CR3 (Canon camera raw)", b"qt  ": "QuickTime video (an iPhone Live Photo's, or a clip)",
                b"mp41": "MP4 video", b"mp42": "MP4 video", b"isom": "MP4 video", b"M4V ": "MP4 video"}


# ISO media brands of video files (an image's are HEIF's and AVIF's above): ffmpeg's mp4/mov/3gp/m4v
# muxers, cameras and phones (MP4 isom/mp41/mp42, QuickTime qt, 3GPP 3gp4-6/3g2a, iTunes M4V, DASH)
_VIDEO_BRANDS = {b"qt  ", b"mp41", b"mp42", b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"avc1", b"M4V ",
                 b"M4VH", b"M4VP", b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"dash", b"mp71", b"f4v ", b"XAVC",
                 b"MSNV"}
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"pnot")  # an old QuickTime .mov has no ftyp box
# brands (major or compatible) of still images and image sequences in ISO media: HEIF/HEIC and their
# sequences, MIAF, AVIF (still, sequence, intra), AVC/VVC/EVC/JPEG/JPEG 2000 in HEIF, Canon's CR3, the
# JPEG 2000 and JPEG XL families. A sequence has a moov box as a video does: its brand tells it apart
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"mif2",
                 b"msf1", b"miaf", b"MiHA", b"MiHB", b"MiHE", b"MiPr", b"MA1A", b"MA1B", b"avif", b"avis",
                 b"avio", b"avci", b"avcs", b"vvic", b"vvis", b"evbi", b"evbs", b"jpeg", b"jpgs", b"j2ki",
                 b"j2is", b"crx ", b"jp2 ", b"jpx ", b"jpm ", b"jph ", b"jxl "}
ISO_TOP_BOXES = 64  # top-level boxes walked looking for moov (a camera's MP4: ftyp, free, mdat, moov)
# other video containers by their first bytes (ffmpeg writes each so)
_VIDEO_MAGICS = ((b"FLV\x01", "FLV video"), (b"0&\xb2u\x8ef\xcf\x11", "ASF/WMV video"),
                 (b"YUV4MPEG2 ", "Y4M video"), (b"\x00\x00\x01\xba", "MPEG program stream video"),
                 (b"\x00\x00\x01\xb3", "MPEG video"), (b"\x06\x0e+4\x02\x05\x01\x01", "MXF video"))
TS_PACKET = 188  # MPEG-TS packets start with 0x47; Blu-ray's M2TS puts a 4-byte time code before each


def sniff_video(data: bytes) -> str | None:
    """The name of a video container recognised by its first bytes: such a file in an image
    source (a clip in a photo folder, `type: laion` on a folder of videos) is no damaged image,
    and its reject says to read it with a video source. MP4/MOV/3GP by their ISO brand, Matroska
    and WebM by their EBML magic 1A45DFA3 and DocType, AVI by its RIFF form, MPEG-TS by its sync
    bytes, and the magics of `_VIDEO_MAGICS`."""
    head = data[:512]
    brand = head[8:12]
    if head[4:8] == b"ftyp" and (brand in _VIDEO_BRANDS or _unnamed_video(data)):
        return _FTYP_BRANDS.get(brand) or ("3GPP video" if brand.startswith(b"3g") else
                                           f"MP4 video ({brand.decode('latin-1')!r} brand)")
    if head[4:8] in _QUICKTIME_ATOMS:
        return "QuickTime video"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM video" if b"webm" in head[:64] else "Matroska video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI video"
    if head[:4] == b"OggS" and b"\x80theora" in head:
        return "Ogg Theora video"
    for offset, packet in ((0, TS_PACKET), (4, TS_PACKET + 4)):  # three sync bytes: one 0x47 is any file's "G"
        if len(head) > offset + 2 * packet and head[offset] == head[offset + packet] == head[offset + 2 * packet] \
                == 0x47 and not head.startswith(b"GIF8"):
            return "MPEG transport stream video"
    for magic, name in _VIDEO_MAGICS:
        if head.startswith(magic):
            return name
    return None


def _unnamed_video(data: bytes) -> bool:
    """An ISO media file whose brands name no image (no list of video brands is whole: Canon's EOS
    MP4s say `CAEP`, Smooth Streaming's ISMV `isml`) and which holds a movie (a top-level moov box)."""
    size = int.from_bytes(data[:4], "big")
    brands = {data[i:i + 4] for i in range(8, min(size, 512) - 3, 4) if i != 12}  # major, then compatible
    if brands & _IMAGE_BRANDS:
        return False
    at = 0
    for _ in range(ISO_TOP_BOXES):
        if at + 8 > len(data):
            return False
        if data[at + 4:at + 8] == b"moov":
            return True
        size = int.from_bytes(data[at:at + 4], "big")
        if size == 1 and at + 16 <= len(data):  # a 64-bit size follows the type
            size = int.from_bytes(data[at + 8:at + 16], "big")
        if size < 8:  # 0: the box runs to the end; less: no box
            return False
        at += size
    return False


# what ImageMagick, image editors and HDR tools write that Pillow does not read, by their first
# bytes: such a file was `not_an_image` ("no image format recognises these bytes")
_OTHER_MAGICS = ((b"v/1\x01", "OpenEXR"), (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"),
                 (b"id=ImageMagick", "MIFF (ImageMagick)"), (b"SDPX", "DPX"), (b"XPDS", "DPX"),
                 (b"gimp xcf", "XCF (GIMP)"))


# an EPS's first bytes, as Pillow's EPS reader accepts them: PostScript text, or the DOS binary header
_POSTSCRIPT = (b"%!PS", b"\xc5\xd0\xd3\xc6")


# the record numbers of an IPTC/NAA field, as Pillow's IPTC reader takes them (IptcImagePlugin.field)
_IPTC_RECORDS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 240})


def _iptc_record(head: bytes) -> bool:
    """Whether the file starts as a bare IPTC/NAA record, by its first field's header as Pillow's
    IPTC reader checks it: the 0x1C tag marker, a record number it knows, a length it takes."""
    return len(head) >= 5 and head[0] == 0x1C and head[1] in _IPTC_RECORDS and head[3] <= 132


def sniff_format(data: bytes) -> str | None:
    """The name of a real image format recognised by its first bytes, for formats that Pillow may
    not open (vector, HEIF family, JPEG XL, PDF, TIFF variants): such a file is a picture we
    cannot use, not junk, and its reject says which format it is."""
    head = data[:512]
    if head[:3] == b"\xff\xd8\xff":
        return _undecodable_jpeg(data)
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], f"ISO media ({head[8:12].decode('latin-1')!r} brand)")
    raw = camera_raw(data)
    if raw:
        return raw
    tiff = tiff_layout(head)  # a classic TIFF, by every header Pillow's open takes (`tiff_layout`)
    if tiff and not tiff.big:  # the samples named: a float RGB TIFF's said nothing of float
        samples = tiff_samples(data)
        return f"TIFF ({samples + ', ' if samples else ''}a sample layout Pillow cannot read)"
    if tiff and tiff.big and head[:4] == b"MM\x00+":  # Pillow reads its header as a classic TIFF's
        return "TIFF (BigTIFF, big-endian: a layout Pillow cannot read)"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JPEG XL"
    if head[:5] == b"%PDF-":
        return "PDF"
    if head[:4] in _POSTSCRIPT:  # never offered to Pillow, whose EPS reader runs Ghostscript (`pillow_open`)
        return "EPS (PostScript: drawn only by a PostScript interpreter, which is never run on input)"
    if _iptc_record(head):  # never offered to Pillow, whose IPTC reader opens what it wraps with every reader
        return "IPTC/NAA record (a news agency's metadata record; the image data it wraps is never opened)"
    for magic, name in _OTHER_MAGICS:
        if head.startswith(magic):
            return name
    if head[:2] in (b"PF", b"Pf") and head[2:3].isspace():
        return "PFM (portable float map)"
    if head[:2] == b"P7" and head[2:3].isspace():  # Netpbm's PAM: ImageMagick's `convert x.png x.pam`
        return "PAM (portable arbitrary map)"
    if head[:4] == b"8BPS":
        return _photoshop(head)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "SVG (vector graphics)"
    if text.startswith(b"<!doctype svg") or text.startswith(b"<!-- ") and b"<svg" in head.lower():
        return "SVG (vector graphics)"
    return None


_PSD_MODES = {0: "bitmap", 1: "greyscale", 2: "indexed", 3: "RGB", 4: "CMYK", 7: "multichannel", 8: "duotone",
              9: "Lab"}


def _photoshop(head: bytes) -> str:
    """A Photoshop file Pillow does not open, named by its header: Pillow reads PSD (version 1)
    of 8 bits a channel; ImageMagick writes a 16-bit image's PSD in 16 (`convert x16.png x.psd`),
    and PSB (version 2) is Photoshop's large document format."""
    if psd_header_cut(head):
        return "PSD (Photoshop, cut inside its 26-byte header)"
    version, depth = int.from_bytes(head[4:6], "big"), int.from_bytes(head[22:24], "big")
    mode = _PSD_MODES.get(int.from_bytes(head[24:26], "big"), "an unknown colour mode")
    kind = "PSB (Photoshop large document" if version == 2 else "PSD (Photoshop"
    return f"{kind}, {mode}, {depth} bits a channel)"


# (colour mode, bits a channel) of the PSDs Pillow reads (its PsdImagePlugin's MODES)
_PILLOW_PSD = {(0, 1), (1, 8), (2, 8), (3, 8), (4, 8), (7, 8), (8, 8), (9, 8)}


def psd_header_cut(data: bytes) -> bool:
    """Whether `data` is a Photoshop file cut inside its 26-byte header (a partial download):
    damaged, its layout unknown, never a format this build lacks."""
    return data[:4] == b"8BPS" and len(data) < 26


def pillow_reads_psd(data: bytes) -> bool:
    """Whether `data` is a PSD of a layout Pillow reads: one it cannot open is damaged or cut short
    (its `corrupt_header`), not a format this build lacks."""
    head = data[:26]
    layout = (int.from_bytes(head[24:26], "big"), int.from_bytes(head[22:24], "big"))
    return head[:6] == b"8BPS\x00\x01" and len(head) == 26 and layout in _PILLOW_PSD


_FITS_CARD = 80  # a FITS header is cards of 80 characters, `KEYWORD = value / comment`, up to `END`
# cards looked at for END: 1024 blocks of 2880 bytes (ImageMagick writes one; a survey's header a few
# dozen); a header longer than that is refused, not judged on its first cards (BZERO after 576
# COMMENT cards was missed, the samples read without it)
_FITS_HEADER_CARDS = 36 * 1024


def fits_misread(data: bytes) -> str | None:
    """What Pillow would misread in a FITS file it opens, named for its `unsupported_format`, else
    None. Pillow reads the stored integers as they are, without BZERO and BSCALE: ImageMagick stores
    16-bit samples as FITS does unsigned ones (BITPIX 16, BZERO 32768), which Pillow read wrapped
    (a red plane of mean 68 of 255 came out 124, without a word). Only 8-bit samples (BITPIX 8)
    with no offset or scale are read as stored; any other layout is named."""
    cards: dict[str, str] = {}
    for at in range(0, min(len(data), _FITS_CARD * _FITS_HEADER_CARDS), _FITS_CARD):
        card = data[at:at + _FITS_CARD].decode("latin-1")
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] == "= ":
            cards[key] = card[10:].split("/")[0].strip()
    else:
        return f"FITS (no END card within its first {_FITS_HEADER_CARDS} header cards: its BZERO and BSCALE unknown)"
    bits = cards.get("BITPIX", "")
    zero, scale = cards.get("BZERO", "0"), cards.get("BSCALE", "1")
    try:
        plain = int(bits) == 8 and float(zero) == 0 and float(scale) == 1
    except ValueError:
        plain = False
    if plain:
        return None
    return f"FITS (BITPIX {bits or '?'}, BZERO {zero}, BSCALE {scale}: Pillow reads the stored numbers without them)"


def _undecodable_jpeg(data: bytes) -> str | None:
    """What a JPEG Pillow does not open is, when its frame says it is a real one it cannot decode:
    a JPEG-LS, or samples of other than 8 bits (12-bit, 16-bit lossless); None for one broken or
    cut before its frame."""
    layout = jpeg_layout(data)
    if layout is None:
        return None
    if layout.sof == JPEG_LS_SOF:
        return "JPEG-LS"
    return f"JPEG ({layout.precision}-bit samples)" if layout.precision != 8 else None


def _cut_short(data: bytes) -> bool:
    """Whether the file is shorter than its container says (`declared_length`)."""
    declared = declared_length(data)
    return declared is not None and declared > len(data)


def _raise_if_cut_short(data: bytes) -> None:
    """`truncated` for a file shorter than its container says (`declared_length`): what Pillow
    says of a cut WebP, AVIF, TIFF or icon names no truncation ("could not create decoder object",
    or no format at all); and for a TIFF whose IFD lies in zeros that go on to its end
    (`tiff_ifd_in_zeros`: cut, then padded), which was `unsupported_format`."""
    declared = declared_length(data)
    if declared is not None and declared > len(data):
        raise DecodeError("truncated", f"the file is cut short: it holds {len(data)} of the {declared} or more "
                                       f"bytes it declares")
    ifd = tiff_ifd_in_zeros(data)
    if ifd is not None:
        raise DecodeError("truncated", f"the file is cut short, zeros after the cut (a failed download): its IFD, at "
                                       f"{ifd}, lies in the {len(data) - len(data.rstrip(bytes(1)))} zero bytes that go "
                                       f"on to its end")


def raise_if_zeros_after_cut(data: bytes, max_pixels: int | None = None, max_bytes: int | None = None) -> None:
    """`truncated` for an AVIF or HEIC whose coded image data end in a run of zeros no encoder
    writes, an RLE BMP whose pixels end in zeros with no end-of-bitmap escape, or a PNG ending in
    zeros with no IEND whose image stream does not end (`coded_data_in_zeros`): cut, then padded
    with zeros to its length or past it, as a failed or preallocated download leaves it. libavif,
    libde265, libpng and OpenCV decoded some to garbage without a word."""
    found = coded_data_in_zeros(data, max_pixels, max_bytes)  # past the budgets: theirs to judge, uninflated
    if found is None:
        return
    name, start, zeros = found
    if name == "RLE BMP":
        where = f"it ends in {zeros} zero bytes from {start}, with no end-of-bitmap escape"
    elif name == "PNG":
        where = f"it ends in {zeros} zero bytes from {start}, with no IEND, its image data's zlib stream unended"
    else:
        where = f"its {name} data ends in {zeros} zero bytes from {start}"
    raise DecodeError("truncated", f"the file is cut short, zeros after the cut (a failed or preallocated download): "
                                   f"{where}")
