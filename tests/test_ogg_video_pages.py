"""Chained Ogg with sound read through its video's pages (`sources.ogg_video_pages`), on files the
ffmpeg CLI writes and `cat` joins: what may be read part by part is, each frame equal to the CLI's
decode of its part alone; what may not (a part holding VP8) is a counted reject, never a file kept
in part; a damaged page is found by its CRC; junk costs bounded work.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import video_zoo

from sources import ogg_video_pages
from sources.ogg_video_pages import VideoPages, ogg_crc
from sources.records import Reject, VideoRecord
from sources.video import VideoSource
from sources.video_decode import VideoError, decode_frames, probe

MULTISTREAM = "a chained Ogg whose parts hold several streams"


def _part(tmp_path: Path, name: str, video: list[str], first: int = 0, *muxing: str) -> Path:
    """30 frames of the pattern from frame `first` in `video`'s codec, 1.2 s of Vorbis beside them,
    written by the CLI as an Ogg (the usual `.ogv`)."""
    path = tmp_path / name
    video_zoo.ffmpeg("-i", str(video_zoo._source(tmp_path, first + 30)), "-f", "lavfi", "-i", "sine=f=440:d=1.2",
                     "-map", "0:v", "-map", "1:a", "-vf", f"select=gte(n\\,{first}),setpts=N/25/TB,scale=64:48",
                     "-frames:v", "30", *video, "-c:a", "libvorbis", *muxing, "-f", "ogg", str(path))
    return path


THEORA = ["-c:v", "libtheora", "-q:v", "7", "-g", "10"]
VP8 = ["-c:v", "libvpx", "-b:v", "200k", "-g", "10"]


def _joined(tmp_path: Path, name: str, parts: list[Path]) -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    return path


def _cli_md5s(path: Path) -> list[str]:
    """The md5 of each frame the ffmpeg CLI shows of the file alone (the stream it picks itself:
    the highest resolution), rgb24, on one thread."""
    listing = subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-an", "-autoscale", "0",
                              "-vsync", "passthrough", "-pix_fmt", "rgb24", "-f", "framemd5", "-"],
                             capture_output=True, text=True, check=True).stdout
    return [line.split(",")[5].strip() for line in listing.splitlines() if line.startswith("0,")]


def _md5s(path: Path, wanted) -> dict[int, str]:
    return {i: hashlib.md5(f.tobytes()).hexdigest() for i, f in decode_frames(str(path), wanted)}


def _pages(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, length, serial, flags) of each page of a whole Ogg file."""
    out, at = [], 0
    while at < len(data):
        segments = data[at + 26]
        length = 27 + segments + sum(data[at + 27:at + 27 + segments])
        out.append((at, length, int.from_bytes(data[at + 14:at + 18], "little"), data[at + 5]))
        at += length
    return out


def _refused(path: Path) -> str:
    """The reject's detail, by probe and by the `video` source alike (a counted reject)."""
    with pytest.raises(VideoError) as refusal:
        probe(str(path))
    assert refusal.value.reason == "unsupported_container", refusal.value
    (record,) = list(VideoSource("pages", str(path.parent), strides=(1,)).read(str(path)))
    assert isinstance(record, Reject) and record.reason == "unsupported_container", record
    return refusal.value.detail


@pytest.mark.parametrize("codecs", [("theora", "vp8"), ("theora", "vp8", "theora")])
def test_a_chain_with_a_vp8_part_is_refused_not_kept_in_part(tmp_path, codecs):
    """`cat theora.ogv vp8.ogv` (each with Vorbis): the VP8 part cannot be read through the video's
    pages (only Theora is kept there), so its frames were dropped silently: 30 frames of 60 kept as
    if whole, and theora/vp8/theora joined parts 1 and 3 as `chained`. Refused, as before the
    pages' view, with the multistream detail, naming VP8."""
    video_zoo.require_ffmpeg()
    parts = [_part(tmp_path, f"_{k}.ogv", THEORA if codec == "theora" else VP8, 30 * k)
             for k, codec in enumerate(codecs)]
    detail = _refused(_joined(tmp_path, "chain.ogv", parts))
    assert detail.startswith(f"ogg/theora: {MULTISTREAM}") and "VP8" in detail, detail


def test_a_chain_of_vp8_with_sound_is_refused_as_multistream(tmp_path):
    """`cat a.ogv b.ogv` of VP8 + Vorbis: FFmpeg's demuxer stops at the second part, and the retry
    through the video's pages (Theora alone) found no video and passed 0 bytes: `unreadable:
    EOFError ... '<none>'`. The reject says why again: a chained Ogg with several streams."""
    video_zoo.require_ffmpeg()
    parts = [_part(tmp_path, f"_{k}.ogv", VP8, 30 * k) for k in range(2)]
    assert _refused(_joined(tmp_path, "vp8chain.ogv", parts)).startswith(f"ogg/vp8: {MULTISTREAM}")


def test_a_part_with_two_theora_streams_gives_the_one_the_cli_shows_of_it_alone(tmp_path):
    """A part holding two Theora streams (64x48 first, 96x64 second) and Vorbis: the CLI shows the
    larger of that part alone (and so does `probe` of it), while the chain passed on the link's
    first Theora stream: other frames than each part's. Now the largest Theora of each link is
    passed on: 60 frames, each equal to the CLI's of its part alone."""
    video_zoo.require_ffmpeg()
    parts = []
    for k in range(2):
        source = str(video_zoo._source(tmp_path, 30 * k + 30))
        path = tmp_path / f"_two{k}.ogv"
        chosen = f"select=gte(n\\,{30 * k}),setpts=N/25/TB"
        video_zoo.ffmpeg("-i", source, "-f", "lavfi", "-i", "sine=f=440:d=1.2", "-filter_complex",
                         f"[0:v]{chosen},split[a][b];[a]scale=64:48[small];[b]scale=96:64[large]",
                         "-map", "[small]", "-map", "[large]", "-map", "1:a", "-frames:v", "30", *THEORA,
                         "-c:a", "libvorbis", "-f", "ogg", str(path))
        assert (probe(str(path)).width, probe(str(path)).height) == (96, 64)
        parts.append(path)
    path = _joined(tmp_path, "twochain.ogv", parts)
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    assert len(expected) == 60
    info = probe(str(path))
    assert (info.n_frames, info.restamped, info.width) == (60, "chained", 96)
    assert _md5s(path, range(60)) == dict(enumerate(expected))


def test_ogg_crc_is_the_crc_the_cli_writes():
    """Each page's CRC field, as libogg (through the CLI) writes it, is `ogg_crc` of the page."""
    video_zoo.require_ffmpeg()
    data = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:d=1", "-f", "lavfi",
                           "-i", "sine=d=1", "-c:v", "libtheora", "-c:a", "libvorbis", "-f", "ogg", "-"],
                          capture_output=True, check=True).stdout
    pages = _pages(data)
    assert len(pages) > 5
    for at, length, _, _ in pages:
        assert ogg_crc(data[at:at + length]) == int.from_bytes(data[at + 22:at + 26], "little")
    damaged = bytearray(data[:pages[0][1]])
    damaged[40] ^= 1
    assert ogg_crc(bytes(damaged)) != int.from_bytes(damaged[22:26], "little")


def test_a_sound_page_whose_length_is_damaged_is_found_by_its_crc(tmp_path):
    """One bit flipped in the segment count of the first Vorbis page after its headers in the second
    part: its declared length is wrong. Skipped by that length, the view lost the video's next pages and the file was refused
    ("a chained stream part begins at packet 22, which is not a key frame"); the page's CRC now
    fails, the view resyncs from its next byte (as FFmpeg's demuxer does on a CRC failure), and every
    frame equals the CLI's of each part alone (the damaged part read by the CLI alone too)."""
    video_zoo.require_ffmpeg()
    first = _part(tmp_path, "_0.ogv", THEORA)
    second = _part(tmp_path, "_1.ogv", THEORA, 30, "-page_duration", "200000")  # sound pages of 0.2 s
    data = bytearray(second.read_bytes())
    pages = _pages(bytes(data))
    video = pages[0][2]
    at = [at for at, _, serial, _ in pages if serial != video][2]  # sound, past its headers
    data[at + 26] |= 0x80
    damaged = tmp_path / "_1d.ogv"
    damaged.write_bytes(bytes(data))
    path = _joined(tmp_path, "damaged.ogv", [first, damaged])
    expected = _cli_md5s(first) + _cli_md5s(damaged)
    assert len(expected) == 60  # the CLI alone finds the CRC mismatch and every frame of the part
    info = probe(str(path))
    assert (info.n_frames, info.restamped) == (60, "chained")
    assert _md5s(path, range(60)) == dict(enumerate(expected))


def test_junk_of_capture_patterns_between_the_parts_is_skipped(tmp_path):
    """1 MB of `OggS\\x01` (capture patterns of no Ogg version) between the parts: FFmpeg's demuxer
    hops over it to the second part (so the retry through the video's pages is made), and so does
    the view, searching for a page start (`OggS\\x00`) in C rather than hopping in Python pattern by
    pattern (2.3 CPU-s for 16 MB before): 60 frames. (Zeros over ~64 KB stop FFmpeg's demuxer
    itself: the CLI shows the first part alone, and so does `probe`.)"""
    video_zoo.require_ffmpeg()
    parts = [_part(tmp_path, f"_{k}.ogv", THEORA, 30 * k) for k in range(2)]
    expected = _cli_md5s(parts[0]) + _cli_md5s(parts[1])
    path = tmp_path / "junk.ogv"
    path.write_bytes(parts[0].read_bytes() + b"OggS\x01" * 200_000 + parts[1].read_bytes())
    assert probe(str(path)).n_frames == 60
    assert _md5s(path, [0, 29, 30, 59]) == {i: expected[i] for i in (0, 29, 30, 59)}


def test_forged_pages_past_the_junk_cap_are_a_counted_reject(tmp_path):
    """Page headers forged back to back between the parts (27 bytes each, no segment, a CRC that
    fails): each was a page to parse in Python, and the view went on through any number of them.
    Each now counts 4 KiB of junk; past 16 MiB (4,096 of them: 110 KB) the file is refused."""
    video_zoo.require_ffmpeg()
    parts = [_part(tmp_path, f"_{k}.ogv", THEORA, 30 * k) for k in range(2)]
    forged = b"OggS\x00\x00" + bytes(8) + (99).to_bytes(4, "little") + bytes(9)
    count = ogg_video_pages.MAX_JUNK_BYTES // ogg_video_pages.FAILED_PAGE_COST + 1
    path = tmp_path / "forged.ogv"
    path.write_bytes(parts[0].read_bytes() + forged * count + parts[1].read_bytes())
    assert "MiB of bytes that are no Ogg page" in _refused(path)
    fewer = tmp_path / "fewer.ogv"
    fewer.write_bytes(parts[0].read_bytes() + forged * 100 + parts[1].read_bytes())
    assert probe(str(fewer)).n_frames == 60
    with VideoPages(open(path, "rb")) as pages:
        assert len(pages.read()) < path.stat().st_size and pages.refusal
