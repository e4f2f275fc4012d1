"""Image files damaged the way disks, copies and downloads damage them, decoded as the build does.

Each is made by the world's tools (ImageMagick, Pillow's libjpeg, `dd`) from a real photo and
judged against an independent reader (ImageMagick's libjpeg warnings), not against this code."""

from __future__ import annotations

import io
import random
import re
import subprocess
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from transforms.decode import DecodeError, load_image

PHOTO = Path(__file__).parent / "fixtures" / "coco" / "000000000785.jpg"  # 640 x 425, 133 KB


def _magick_warnings(path: Path) -> str:
    """What ImageMagick's libjpeg says decoding the file (its warnings go to stderr)."""
    return subprocess.run(["convert", str(path), "null:"], capture_output=True, text=True, check=False).stderr


def _decoded(path: Path) -> np.ndarray:
    return load_image(path.read_bytes(), 64, "center_crop").pixels


def _scan_start(data: bytes) -> int:
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def test_jpeg_damaged_inside_its_scan_is_rejected_as_damaged(tmp_path):
    """A 4 KiB block of zeros over the middle (`dd conv=notrunc`, a bad sector, a torrent's hole),
    a burst of flipped bits, a restart marker overwritten: libjpeg only warns and decodes grey or
    garbled blocks, which Pillow took silently into a sentence. Each is `decode_error` ("damaged")
    now, as ImageMagick's libjpeg says "Corrupt JPEG data" of each; so is a whole JPEG whose scan
    libjpeg refuses outright (Pillow's "broken data stream"), which was `truncated`, as if cut."""
    zeros = tmp_path / "zeros.jpg"
    zeros.write_bytes(PHOTO.read_bytes())
    subprocess.run(["dd", "if=/dev/zero", f"of={zeros}", "bs=4096", "seek=16", "count=1", "conv=notrunc"],
                   check=True, capture_output=True)
    flipped = tmp_path / "flipped.jpg"
    data = bytearray(PHOTO.read_bytes())
    chance = random.Random(1)
    for at in range(len(data) // 2 & ~4095, (len(data) // 2 & ~4095) + 64):
        data[at] ^= 1 << chance.randrange(8)
    flipped.write_bytes(bytes(data))
    restarts = tmp_path / "restarts.jpg"  # a restart marker every MCU row, as cameras write them
    subprocess.run(["convert", str(PHOTO), "-quality", "85", str(restarts)], check=True)
    from PIL import Image

    with Image.open(restarts) as image:
        image.save(restarts, quality=85, restart_marker_rows=1)
    data = bytearray(restarts.read_bytes())
    fifth = data.index(b"\xff\xd4", _scan_start(bytes(data)))
    data[fifth : fifth + 2] = b"\x00\x00"
    restarts.write_bytes(bytes(data))
    marker = tmp_path / "marker.jpg"  # two bytes of the scan become a marker libjpeg refuses: it errs, was `truncated`
    data = PHOTO.read_bytes()
    marker.write_bytes(data[: len(data) // 2] + b"\xff\xa9" + data[len(data) // 2 + 2 :])
    junk = tmp_path / "junk.jpg"  # ImageNet's: bytes before the EOI no row needed ("extraneous bytes before marker 0xd9")
    data = PHOTO.read_bytes()
    junk.write_bytes(data[:-2] + bytes(random.Random(2).randrange(1, 255) for _ in range(240)) + data[-2:])
    unused = "bytes before its end of image the decoder did not use"  # whole, or damaged to end its data early
    for damaged, said in ((zeros, "damaged"), (flipped, unused), (restarts, "damaged"), (marker, "damaged"),
                          (junk, unused)):
        assert "Corrupt JPEG data" in _magick_warnings(damaged), damaged.name
        with pytest.raises(DecodeError) as caught:
            _decoded(damaged)
        assert caught.value.reason == "decode_error" and caught.value.detail.startswith(said), damaged.name
    from PIL import Image

    crafted = io.BytesIO()  # a warning every 3 bytes before its first restart marker: libjpeg's decode is all it costs
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        crafted, "JPEG", restart_marker_blocks=1)
    data = crafted.getvalue()
    first = data.index(b"\xff\xd0")
    started = time.process_time()
    with pytest.raises(DecodeError) as caught:
        load_image(data[:first] + b"\x00\xff\x02" * 100_000 + data[first:], 64, "center_crop")
    assert caught.value.detail.startswith("damaged: libjpeg met 100005 warnings")
    assert time.process_time() - started < 0.5  # 0.01 CPU s; a Python call per warning took 3.3 s


def test_whole_jpegs_that_libjpeg_or_encoders_vary_still_decode(tmp_path):
    """No false rejects: bytes after the end of image (a camera's, a download's padding), an old
    encoder's stray bytes between header segments (libjpeg warns "extraneous bytes before marker",
    Pillow issue 630: every browser shows it whole), a progressive, a restart-interval and a CMYK
    (Adobe) JPEG all decode, the first two to the very pixels of the photo."""
    whole = _decoded(PHOTO)
    data = PHOTO.read_bytes()
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(data + b"\x00" * 3000 + b"garbage after EOI")
    first_segment = 4 + int.from_bytes(data[4:6], "big")
    stray = tmp_path / "stray.jpg"
    stray.write_bytes(data[:first_segment] + b"\xff\x00\x17" + data[first_segment:])
    assert "extraneous bytes" in _magick_warnings(stray)
    sos = data.index(b"\xff\xda")  # a Samsung phone's baseline scan header: Se=0 (libjpeg: "Invalid SOS parameters")
    samsung = tmp_path / "samsung.jpg"
    samsung.write_bytes(data[: sos + 6 + 2 * data[sos + 4]] + b"\x00" + data[sos + 7 + 2 * data[sos + 4] :])
    eoi_padded = tmp_path / "eoi_padded.jpg"  # a webcam's frame: padding bytes between the scan and its EOI
    eoi_padded.write_bytes(data[:-2] + b"\x00" * 600 + data[-2:])
    assert "Invalid SOS parameters" in _magick_warnings(samsung)
    assert "extraneous bytes before marker 0xd9" in _magick_warnings(eoi_padded)
    for path in (trailing, stray, samsung, eoi_padded):
        assert np.array_equal(_decoded(path), whole), path.name
    made = {"progressive.jpg": ["-interlace", "JPEG"], "cmyk.jpg": ["-colorspace", "CMYK"]}
    for name, options in made.items():
        subprocess.run(["convert", str(PHOTO), *options, "-quality", "80", str(tmp_path / name)], check=True)
    from PIL import Image

    with Image.open(PHOTO) as image:
        image.save(tmp_path / "restarts.jpg", quality=85, restart_marker_blocks=5)
    for name in (*made, "restarts.jpg"):
        assert _magick_warnings(tmp_path / name) == "", name
        assert abs(_decoded(tmp_path / name).astype(int) - whole).mean() < 8, name
    restarts = (tmp_path / "restarts.jpg").read_bytes()  # an IP camera's: zero bytes before each restart marker
    scan = _scan_start(restarts)
    padded = tmp_path / "rst_padded.jpg"
    zeros = iter(range(1 << 20))  # 0 to 3 zeros, marker to marker: libjpeg-turbo names a later marker for them
    padded.write_bytes(restarts[:scan] + re.sub(rb"(\xff[\xd0-\xd7])", lambda m: b"\x00" * (next(zeros) % 4) + m[1],
                                                restarts[scan:]))
    assert "extraneous bytes before marker 0xd" in _magick_warnings(padded)
    assert np.array_equal(_decoded(padded), _decoded(tmp_path / "restarts.jpg"))
    cmyk = bytearray((tmp_path / "cmyk.jpg").read_bytes())  # Adobe transform 1 on 4 components: libjpeg assumes YCCK
    cmyk[cmyk.index(b"Adobe") + 11] = 1
    (tmp_path / "cmyk_xform1.jpg").write_bytes(bytes(cmyk))
    assert "Unknown Adobe color transform" in _magick_warnings(tmp_path / "cmyk_xform1.jpg")
    assert np.array_equal(_decoded(tmp_path / "cmyk_xform1.jpg"), _decoded(tmp_path / "cmyk.jpg"))


def test_cut_bigtiff_is_truncated_as_a_cut_tiff_is(tmp_path):
    """A BigTIFF (ImageMagick's `TIFF64:`, its IFD after the pixels, as libtiff writes it) cut by
    `head -c` before or inside its IFD, or in its header's first-IFD offset, was `not_an_image`:
    the classic TIFF's rule for a cut (`truncated`, by its IFD and what that points at) now reads
    BigTIFF's 8-byte offsets and 20-byte entries too. The whole file still decodes."""
    for name, prefix in (("classic.tif", ""), ("big.tif", "TIFF64:")):
        subprocess.run(["convert", str(PHOTO), "-resize", "64x64", "-compress", "zip", f"{prefix}{tmp_path / name}"],
                       check=True)
        whole = (tmp_path / name).read_bytes()
        assert whole[:4] == (b"II+\x00" if prefix else b"II*\x00")
        assert load_image(whole, 64, "center_crop").format == "TIFF"
        for keep in (12, len(whole) // 2, len(whole) - 20):
            cut = tmp_path / f"cut-{keep}-{name}"
            with open(cut, "wb") as out:
                subprocess.run(["head", "-c", str(keep), str(tmp_path / name)], stdout=out, check=True)
            with pytest.raises(DecodeError) as caught:
                load_image(cut.read_bytes(), 64, "center_crop")
            assert caught.value.reason == "truncated", (name, keep, caught.value)


def test_jpeg_warning_reader_survives_a_fork_and_says_when_it_is_off(monkeypatch, caplog):
    """A fork while another thread proves the decoder layout (its lock held) left the child's first
    JPEG decode waiting on that lock for ever; a Pillow whose layout is not proved turned the
    damage check off without a word: now it says so once, naming Pillow's version. A proof that
    failed for want of file descriptors is tried again, not kept for the process's life."""
    import errno
    import logging
    import os
    import signal

    import PIL
    from transforms import jpeg_warnings

    monkeypatch.setattr(jpeg_warnings, "_ERR_OFFSET", [])
    jpeg_warnings._LOCK.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # the child: proves the layout itself, or SIGALRM kills it (never back into pytest)
            try:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(3)
                os._exit(0 if jpeg_warnings._calibrated() is not None else 1)
            finally:
                os._exit(2)
    finally:
        jpeg_warnings._LOCK.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    with monkeypatch.context() as patched:  # out of file descriptors for a moment (each read opens a pipe)
        patched.setattr(os, "pipe", lambda: (_ for _ in ()).throw(OSError(errno.EMFILE, "Too many open files")))
        assert jpeg_warnings._calibrated() is None
    assert jpeg_warnings._calibrated() is not None  # proved once descriptors are back: the failure was not kept
    monkeypatch.setattr(jpeg_warnings, "_ERR_OFFSET", [])
    caplog.clear()
    monkeypatch.setattr(jpeg_warnings, "_CONTEXT_AT", jpeg_warnings._CONTEXT_AT + 8)
    with caplog.at_level(logging.WARNING, logger="transforms.jpeg_warnings"):
        assert jpeg_warnings._calibrated() is None and jpeg_warnings._calibrated() is None
    said = [record.getMessage() for record in caplog.records if record.name == "transforms.jpeg_warnings"]
    assert len(said) == 1 and PIL.__version__ in said[0], said


def _mpo_claiming(images: int) -> bytes:
    """A two-picture MPO as Pillow writes it (the MPF index in APP2), its NumberOfImages made
    `images`: an index that lists fewer entries than it counts, as an editor leaves one."""
    first, second = Image.new("RGB", (64, 48), (200, 40, 40)), Image.new("RGB", (64, 48), (40, 40, 200))
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second], quality=95)
    data = out.getvalue()
    mpf = data.index(b"MPF\x00") + 4
    order = "big" if data[mpf : mpf + 2] == b"MM" else "little"
    count = data.index((0xB001).to_bytes(2, order), mpf)  # NumberOfImages: tag, type, count, value
    assert int.from_bytes(data[count + 8 : count + 12], order) == 2
    return data[: count + 8] + images.to_bytes(4, order) + data[count + 12 :]


def test_a_jpeg_whose_mpo_index_miscounts_decodes_as_the_jpeg_it_is():
    """Pillow's JPEG opener reads the MPF index to make an MPO, and failed inside it where the index
    counts 50 pictures and lists 2: no reader took the file (`not_an_image`). OpenCV (libjpeg, as
    ffmpeg and ImageMagick) decodes it as the JPEG it is; so does the build now, its first picture."""
    data = _mpo_claiming(50)
    decoded = load_image(data, 64, "squash")
    assert (decoded.width, decoded.height, decoded.format) == (64, 48, "JPEG")
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(decoded.pixels.astype(int) - cv2.resize(shown, (64, 64), interpolation=cv2.INTER_AREA)).max() <= 2
    assert abs(decoded.pixels[..., 0].mean() - 200) < 3  # the first picture, red


@pytest.mark.parametrize("side", ["width", "height"])
def test_a_png_declaring_no_width_or_height_is_no_pixels(side: str):
    """A PNG whose IHDR declares a width or height of 0 (its CRC right: a writer's bug, not damage)
    was `corrupt_header` ("SyntaxError: not identified by this driver", Pillow's refusal); it is
    an image of no pixels, the reason such an image has."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(out, "PNG")
    data = out.getvalue()
    ihdr = bytearray(data[12:29])  # the kind, width, height, depth, colour type, ...
    ihdr[4 if side == "width" else 8 : 8 if side == "width" else 12] = bytes(4)
    made = data[:12] + bytes(ihdr) + zlib.crc32(bytes(ihdr)).to_bytes(4, "big") + data[33:]
    with pytest.raises(DecodeError) as caught:
        load_image(made, 32, "squash")
    assert (caught.value.reason, caught.value.detail) == ("no_pixels", "0x48" if side == "width" else "64x0")
