"""HDR (PQ or HLG, BT.2020) to SDR BT.709 pixels, as ffmpeg's standard tone-mapping recipe shows them.

Phones record HDR by default (HLG, HEVC 10-bit, BT.2020) and HDR10 video is PQ: converting such
frames like SDR ones (`rgb24` through swscale) gives washed-out, dim, desaturated pictures. A
player tone-maps them instead; the reference here is the ffmpeg recipe

    zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,
    tonemap=tonemap=hable:desat=0:peak=10,zscale=t=bt709:m=bt709:r=full

step by step: Y'CbCr (limited or full range) -> R'G'B' (the stream's matrix, BT.2020 non-constant
luminance for HDR) -> display light by the transfer's EOTF (PQ: SMPTE ST 2084; HLG: BT.2100's
inverse OETF and the OOTF's system gamma 1.2 for a 1000 cd/m2 display, per channel as zimg
applies it), scaled so that 1.0 is the nominal `REFERENCE_WHITE_NITS` (zscale's npl=100) ->
BT.709 primaries (3x3 matrix, D65 white kept) -> the Hable (Uncharted 2) curve applied to the
brightest channel and all three scaled by the same factor (ffmpeg's `tonemap`, no desaturation:
hues kept), white at `PEAK_NITS` -> the BT.1886 inverse EOTF (gamma 1/2.4, what zscale's t=bt709
applies to display light) -> 8 bits, rounded, clipped. Measured against that recipe's frames on
PQ and HLG HEVC clips: 0.01 mean abs error per channel, at most 1 level (tests/test_hdr_video.py).

The peak is fixed at 1000 cd/m2: the level most HDR10 masters and the HLG reference display use,
and what ffmpeg's tonemap takes when a frame carries no light level metadata. A PQ stream's
MaxCLL or mastering display metadata, which ffmpeg would use instead, is not read here: content
brighter than 1000 cd/m2 is clipped to white.

Pure NumPy in float32, elementwise per pixel (no reduction over the frame): the same bytes for
any band of rows, any thread count and every run.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

PQ = "pq"
HLG = "hlg"
# AVColorTransferCharacteristic values (what PyAV's frame.color_trc gives) of the HDR transfers
TRANSFER_NAMES = {16: PQ, 18: HLG}
REFERENCE_WHITE_NITS = 100.0  # linear 1.0 (zscale's npl=100)
PEAK_NITS = 1000.0  # the tone curve's white point
PQ_PEAK_NITS = 10000.0  # ST 2084 code 1.0
HLG_DISPLAY_NITS = 1000.0  # the nominal HLG display the OOTF is for
HLG_SYSTEM_GAMMA = 1.2  # BT.2100 at 1000 cd/m2
BAND_PIXELS = 1 << 18  # pixels converted at once by callers: the float32 work is per band
BAND_BYTES = 80 * BAND_PIXELS  # 72 a pixel measured (tracemalloc, HLG), and the band's input

# luma coefficients (Kr, Kb) by AVColorSpace: BT.709; BT.2020 non-constant (and constant
# luminance, rare, approximated by the same matrix); anything else in an HDR stream: BT.2020
_LUMA = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
BT2020_LUMA = (0.2627, 0.0593)
# (x, y) chromaticities of R, G, B and the D65 white
_BT2020_XY = ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046))
_BT709_XY = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))
_P3_XY = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))  # Display P3 / SMPTE EG 432-1 (D65)
_D65_XY = (0.3127, 0.3290)


def transfer_name(color_trc: int | None) -> str | None:
    """"pq" or "hlg" for a stream or frame declaring an HDR transfer, else None (SDR)."""
    return TRANSFER_NAMES.get(int(color_trc)) if color_trc is not None else None


def luma_coefficients(colorspace: int | None) -> tuple[float, float]:
    """(Kr, Kb) of the declared matrix; an HDR stream without a usable one is taken as BT.2020."""
    return _LUMA.get(int(colorspace or 0), BT2020_LUMA)


def _rgb_to_xyz(primaries, white) -> np.ndarray:
    """The linear RGB -> CIE XYZ matrix of a set of primaries (SMPTE RP 177)."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
    wx, wy = white
    scale = np.linalg.solve(xyz, np.array([wx / wy, 1.0, (1 - wx - wy) / wy]))
    return xyz * scale


def to_bt709_matrix(primaries=_BT2020_XY) -> np.ndarray:
    """Linear RGB of `primaries` (D65 white) -> linear BT.709 RGB, float64 3x3."""
    return np.linalg.solve(_rgb_to_xyz(_BT709_XY, _D65_XY), _rgb_to_xyz(primaries, _D65_XY))


BT2020_TO_BT709 = to_bt709_matrix(_BT2020_XY)
# by AVColorPrimaries: BT.709 (none needed), SMPTE EG 432-1 (P3 D65); anything else in an HDR
# stream (BT.2020, unspecified) is taken as BT.2020
_TO_BT709 = {1: None, 12: to_bt709_matrix(_P3_XY)}


def primaries_matrix(color_primaries: int | None) -> np.ndarray | None:
    """The 3x3 matrix to BT.709 of a frame's declared primaries (None: already BT.709)."""
    return _TO_BT709.get(int(color_primaries or 0), BT2020_TO_BT709)


def convert_primaries(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Linear (..., 3) RGB times a 3x3 matrix, written out per channel (a BLAS product may sum in
    another order with other threads: the bytes must not depend on them)."""
    m = matrix.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    out = np.empty_like(rgb)
    for i in range(3):
        out[..., i] = m[i, 0] * r + m[i, 1] * g + m[i, 2] * b
    return out


def normalise_yuv(yuv: np.ndarray, depth: int, full_range: bool) -> np.ndarray:
    """(..., 3) uint16 Y'CbCr samples, `depth`-bit codes shifted up to 16 bits (swscale's
    yuv444p16 output) -> float32 Y' in 0..1 and Cb, Cr in -0.5..0.5 (limited: 16-235 and 16-240
    scaled to the depth, as BT.2100 and zscale read them)."""
    code = yuv.astype(np.float32) * np.float32(1.0 / (1 << (16 - depth)))
    if full_range:
        top = np.float32((1 << depth) - 1)
        out = code / top
        out[..., 1:] -= np.float32((1 << (depth - 1)) / float(top))
        return out
    unit = np.float32(1 << (depth - 8))
    out = code
    out[..., 0] = (code[..., 0] - 16 * unit) / (219 * unit)
    out[..., 1:] = (code[..., 1:] - 128 * unit) / (224 * unit)
    return out


def yuv_to_rgb(yuv: np.ndarray, kr: float, kb: float) -> np.ndarray:
    """Normalised Y'CbCr (..., 3) float32 -> non-linear R'G'B' by the matrix with luma
    coefficients (kr, kb) (BT.2020 NCL: 0.2627, 0.0593)."""
    kg = 1.0 - kr - kb
    y, cb, cr = yuv[..., 0], yuv[..., 1], yuv[..., 2]
    rgb = np.empty_like(yuv)
    rgb[..., 0] = y + np.float32(2 * (1 - kr)) * cr
    rgb[..., 2] = y + np.float32(2 * (1 - kb)) * cb
    rgb[..., 1] = y - np.float32(2 * kb * (1 - kb) / kg) * cb - np.float32(2 * kr * (1 - kr) / kg) * cr
    return rgb


def pq_eotf(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084: non-linear code 0..1 -> display light, 1.0 = `PQ_PEAK_NITS` (10000 cd/m2)."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(signal, 0, 1, dtype=np.float32), np.float32(1 / m2))
    return np.power(np.maximum(p - np.float32(c1), 0) / (np.float32(c2) - np.float32(c3) * p), np.float32(1 / m1))


def hlg_inverse_oetf(signal: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 / BT.2100 HLG: non-linear 0..1 -> scene light 0..1."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.maximum(signal, np.float32(0))
    low = e * e / np.float32(3)
    high = (np.exp((np.maximum(e, np.float32(0.5)) - np.float32(c)) / np.float32(a)) + np.float32(b)) / np.float32(12)
    return np.where(e <= 0.5, low, high).astype(np.float32)


def hlg_eotf(rgb: np.ndarray) -> np.ndarray:
    """HLG R'G'B' -> display light, 1.0 = the nominal `HLG_DISPLAY_NITS` display's peak: the inverse
    OETF, then the OOTF's system gamma 1.2 applied to each channel, as zscale (zimg 3.0) does.
    BT.2100 applies it to the scene luminance instead (Ys ^ 0.2 times each channel); the two agree
    on greys, and per channel saturates colours a little more; the reference here is what ffmpeg
    shows (measured: 0.01 mean abs error per channel against it; the luminance form 1-11)."""
    scene = hlg_inverse_oetf(rgb)
    return np.power(scene, np.float32(HLG_SYSTEM_GAMMA))


def hable(x: np.ndarray | float) -> np.ndarray | float:
    """John Hable's filmic curve (ffmpeg's `tonemap=hable`), before normalising by the peak."""
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (x * a + b * c) + d * e) / (x * (x * a + b) + d * f) - e / f


def tone_map_hable(rgb: np.ndarray, peak: float) -> np.ndarray:
    """Linear RGB (1.0 = reference white) -> 0..1: hable(max channel) / hable(peak), applied to
    all three channels alike so hues are kept (ffmpeg's `tonemap`, desat=0). In place."""
    brightest = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    signal = np.maximum(brightest, np.float32(1e-6))
    scale = hable(signal) / np.float32(hable(np.float32(peak))) / signal
    rgb *= scale.astype(np.float32)[..., None]
    return rgb


def bt1886_inverse_eotf(light: np.ndarray) -> np.ndarray:
    """Display light 0..1 -> BT.709 code values (gamma 1/2.4, what zscale's t=bt709 applies)."""
    return np.power(np.clip(light, 0, 1, dtype=np.float32), np.float32(1 / 2.4))


def to_uint8(signal: np.ndarray) -> np.ndarray:
    """0..1 -> 0..255, rounded to nearest, clipped."""
    return np.clip(np.floor(signal * np.float32(255) + np.float32(0.5)), 0, 255).astype(np.uint8)


def row_bands(height: int, width: int, band_pixels: int = BAND_PIXELS) -> Iterator[slice]:
    """The rows of a picture in bands of about `band_pixels` (at least one row): the float32 work
    of a tone-mapping is held for one band at a time (`BAND_BYTES`), never the whole picture."""
    rows = max(1, band_pixels // max(1, width))
    for top in range(0, height, rows):
        yield slice(top, top + rows)


def tone_map_pixels(pixels: np.ndarray, transfer: str, primaries: np.ndarray | None = BT2020_TO_BT709
                    ) -> np.ndarray:
    """(H, W, 3) uint8 R'G'B' of a PQ or HLG picture (a still image as its decoder gives it: the
    matrix applied, full range) -> uint8 BT.709 RGB (`signal_to_sdr`), `BAND_PIXELS` at a time."""
    out = np.empty_like(pixels)
    for rows in row_bands(*pixels.shape[:2]):
        out[rows] = signal_to_sdr(pixels[rows].astype(np.float32) * np.float32(1 / 255), transfer, primaries)
    return out


def signal_to_sdr(rgb: np.ndarray, transfer: str, primaries: np.ndarray | None = BT2020_TO_BT709) -> np.ndarray:
    """Non-linear R'G'B' (..., 3) float32 of a PQ or HLG picture (0..1) -> uint8 BT.709 RGB tone-mapped
    as the ffmpeg recipe in the module docstring. `primaries`: the linear matrix to BT.709
    (`primaries_matrix`; None when the picture is BT.709 already)."""
    if transfer == PQ:
        light = pq_eotf(rgb) * np.float32(PQ_PEAK_NITS / REFERENCE_WHITE_NITS)
    elif transfer == HLG:
        light = hlg_eotf(rgb) * np.float32(HLG_DISPLAY_NITS / REFERENCE_WHITE_NITS)
    else:
        raise ValueError(f"not an HDR transfer: {transfer!r}")
    if primaries is not None:
        light = convert_primaries(light, primaries)
    light = tone_map_hable(light, PEAK_NITS / REFERENCE_WHITE_NITS)
    return to_uint8(bt1886_inverse_eotf(light))


def hdr_to_sdr(yuv: np.ndarray, transfer: str, depth: int = 10, full_range: bool = False,
               luma: tuple[float, float] = BT2020_LUMA, primaries: np.ndarray | None = BT2020_TO_BT709
               ) -> np.ndarray:
    """(H, W, 3) uint16 Y'CbCr (`depth`-bit codes shifted to 16 bits) of a PQ or HLG frame -> (H, W, 3)
    uint8 BT.709 RGB (`signal_to_sdr`)."""
    return signal_to_sdr(yuv_to_rgb(normalise_yuv(yuv, depth, full_range), *luma), transfer, primaries)
