"""Colour declared by ITU-T H.273 code points (an AVIF or HEIF `colr` box of type nclx, a PNG's
cICP chunk) taken to sRGB: the primaries and transfer a file names, where it carries no ICC
profile that would say it instead.

Read as sRGB, a Display P3 photo (Android and Samsung HEIC, CDN AVIF) came out dull, 10 levels
on average from its colours, a BT.2020 one 17, a linear one 37 levels; Chrome converts them. An
SDR picture goes to sRGB as Chromium's `gfx::ColorSpace` takes it: its samples to light by the
transfer's curve (the BT.709-like ones, 1, 6, 14 and 15, by sRGB's curve, as Chromium does;
gamma 2.2, 2.8 and linear by their powers), to linear sRGB by the primaries' matrix (Bradford
adapted where the white is not D65), sRGB-encoded (`colour_profile.PrimariesConversion`, the
arithmetic of a PNG's cHRM). BT.709 primaries with an sRGB-like transfer need nothing: such
files keep their bytes. A PQ or HLG one is tone-mapped as HDR video is (`transforms.hdr`).
Unspecified primaries are BT.709's and an unspecified transfer sRGB's (MIAF's defaults, and
Chromium's); a code point named here for neither is not understood, and the file is read as
though it declared nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transforms import hdr
from transforms.colour_profile import SRGB_CHROMATICITIES, PrimariesConversion, primaries_to_xyz_d50

UNSPECIFIED = 2
# (white x, y, red x, y, green x, y, blue x, y) by ColourPrimaries (H.273 table 2)
PRIMARIES: dict[int, tuple[float, ...]] = {
    1: SRGB_CHROMATICITIES,  # BT.709, sRGB
    4: (0.310, 0.316, 0.67, 0.33, 0.21, 0.71, 0.14, 0.08),  # BT.470 System M (illuminant C)
    5: (0.3127, 0.3290, 0.64, 0.33, 0.29, 0.60, 0.15, 0.06),  # BT.601 625, BT.470 System B, G
    6: (0.3127, 0.3290, 0.630, 0.340, 0.310, 0.595, 0.155, 0.070),  # BT.601 525, SMPTE 170M
    7: (0.3127, 0.3290, 0.630, 0.340, 0.310, 0.595, 0.155, 0.070),  # SMPTE 240M
    8: (0.310, 0.316, 0.681, 0.319, 0.243, 0.692, 0.145, 0.049),  # generic film (illuminant C)
    9: (0.3127, 0.3290, 0.708, 0.292, 0.170, 0.797, 0.131, 0.046),  # BT.2020, BT.2100
    11: (0.314, 0.351, 0.680, 0.320, 0.265, 0.690, 0.150, 0.060),  # SMPTE RP 431-2 (DCI-P3)
    12: (0.3127, 0.3290, 0.680, 0.320, 0.265, 0.690, 0.150, 0.060),  # SMPTE EG 432-1 (Display P3)
    22: (0.3127, 0.3290, 0.630, 0.340, 0.295, 0.605, 0.155, 0.077),  # EBU Tech 3213-E
}
SRGB_CURVE = None
# an SDR TransferCharacteristics' curve as `PrimariesConversion` takes it: the power gamma of
# light = sample ** (1 / gamma), None for sRGB's curve (IEC 61966-2-1, and the BT.709-like ones)
SDR_TRANSFERS: dict[int, float | None] = {
    1: SRGB_CURVE, 6: SRGB_CURVE, 14: SRGB_CURVE, 15: SRGB_CURVE,  # BT.709, BT.601, BT.2020 10 and 12-bit
    13: SRGB_CURVE,  # sRGB
    4: 1 / 2.2,  # BT.470 System M: gamma 2.2
    5: 1 / 2.8,  # BT.470 System B, G: gamma 2.8
    8: 1.0,  # linear
}


@dataclass(frozen=True, eq=False)
class CodedColour:
    """How samples that code points describe are shown in sRGB: tone-mapped (`hdr_transfer`, "pq"
    or "hlg", with `to_bt709`, its primaries' matrix), converted (`sdr`), or kept as they are
    (neither: sRGB already)."""

    hdr_transfer: str | None
    to_bt709: np.ndarray | None
    sdr: PrimariesConversion | None
    description: str

    @property
    def converts(self) -> bool:
        """Whether the samples change at all (an sRGB declaration keeps them)."""
        return self.hdr_transfer is not None or self.sdr is not None

    def apply(self, samples: np.ndarray, bits: int) -> np.ndarray:
        """(H, W, 3) samples of `bits` bits (uint8 or uint16) -> uint8 sRGB; an HDR picture's
        float32 work a band of rows at a time (`hdr.row_bands`)."""
        if self.hdr_transfer is None:
            return self.sdr.apply(samples, bits) if self.sdr is not None else samples
        out = np.empty(samples.shape, np.uint8)
        scale = np.float32(1 / ((1 << bits) - 1))
        for rows in hdr.row_bands(*samples.shape[:2]):
            out[rows] = hdr.signal_to_sdr(samples[rows].astype(np.float32) * scale, self.hdr_transfer, self.to_bt709)
        return out


_SRGB_TO_D50 = primaries_to_xyz_d50(SRGB_CHROMATICITIES)


def coded_colour(primaries: int, transfer: int, source: str) -> CodedColour | None:
    """What code points (`source`: "nclx", "cICP") ask the samples to become; None for ones not
    understood (`PRIMARIES`, `SDR_TRANSFERS`, PQ and HLG): the file is then read as before."""
    transfer_name = hdr.transfer_name(transfer)
    if transfer_name is not None:
        return CodedColour(transfer_name, hdr.primaries_matrix(primaries), None,
                           f"HDR {transfer_name.upper()} ({source}), tone-mapped")
    primaries = 1 if primaries == UNSPECIFIED else primaries
    transfer = 13 if transfer == UNSPECIFIED else transfer
    if primaries not in PRIMARIES or transfer not in SDR_TRANSFERS:
        return None
    gamma = SDR_TRANSFERS[transfer]
    if primaries == 1 and gamma is SRGB_CURVE:
        return CodedColour(None, None, None, "")
    to_d50 = primaries_to_xyz_d50(PRIMARIES[primaries])
    if to_d50 is None or _SRGB_TO_D50 is None:
        return None
    description = f"{source} primaries {primaries} transfer {transfer}"
    return CodedColour(None, None, PrimariesConversion(np.linalg.inv(_SRGB_TO_D50) @ to_d50, gamma, description),
                       description)
