"""Render records into canvas images: decode, resize, encode losslessly. Rejects, never raises."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sources.fsio import FileTooLarge
from sources.records import FILE_TOO_LARGE, ImageRecord, Reject, VideoClipRecord
from sources.video import VideoError, read_clip_frames
from transforms.decode import DecodeError, load_image
from transforms.phash import phash64, pixel_sha256
from transforms.resize import fit_image
from uvd_pipeline.dedup import Fingerprint
from uvd_pipeline.keys import split_of
from uvd_pipeline.sentences import RenderedUnit, Sentence


@dataclass(frozen=True)
class RenderSettings:
    """What rendering needs from the build config, as a small picklable value."""

    size: int
    resize: str
    pad_value: int
    max_pixels: int
    png_compression: int
    seed: int
    val_fraction: float

    @classmethod
    def from_config(cls, config) -> "RenderSettings":
        image = config.image
        return cls(image.size, image.resize, image.pad_value, image.max_pixels, image.png_compression,
                   config.seed, config.split.val_fraction)

    def split(self, group: str, hint: str | None = None) -> str:
        return split_of(group, self.seed, self.val_fraction, hint)


def encode_png(rgb: np.ndarray, compression: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Rendered PNG bytes back to RGB uint8."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a PNG image")
    return bgr[:, :, ::-1]


def render_image(record: ImageRecord, settings: RenderSettings, fingerprint: bool = False) -> RenderedUnit | Reject:
    """One image on the canvas; with `fingerprint`, its dedup fingerprint taken on these pixels."""
    split = settings.split(record.group, record.split_hint)
    try:
        data = record.read_bytes()
    except FileTooLarge as exc:
        return Reject(record.key, record.source, record.group, "read", FILE_TOO_LARGE, str(exc), split_hint=split)
    except (OSError, ValueError) as exc:
        return Reject(record.key, record.source, record.group, "read", "unreadable_file",
                      f"{type(exc).__name__}: {exc}"[:200], split_hint=split)
    try:
        decoded = load_image(data, settings.size, settings.resize,  # type: ignore[arg-type]
                             max_pixels=settings.max_pixels, pad_value=settings.pad_value)
    except DecodeError as exc:
        return Reject(record.key, record.source, record.group, "decode", exc.reason, exc.detail, split_hint=split)
    member = {"key": record.key, "width": decoded.width, "height": decoded.height, "format": decoded.format}
    member.update(record.lineage)
    identity = None
    if fingerprint:
        identity = Fingerprint(record.key, record.source, split, pixel_sha256(decoded.pixels), phash64(decoded.pixels))
    return RenderedUnit(record.key, record.source, split, record.group,
                        (encode_png(decoded.pixels, settings.png_compression),), (member,), record.label,
                        "category", identity)


def render_clip(record: VideoClipRecord, settings: RenderSettings) -> Sentence | Reject:
    split = settings.split(record.group)
    try:
        frames = read_clip_frames(record)
    except VideoError as exc:
        return Reject(record.key, record.source, record.group, "decode", exc.reason, exc.detail, split_hint=split)
    images = tuple(
        encode_png(fit_image(frame, settings.size, settings.resize, settings.pad_value),  # type: ignore[arg-type]
                   settings.png_compression)
        for frame in frames
    )
    height, width = frames.shape[1:3]
    members = tuple({"frame": int(i)} for i in record.frame_indices)
    meta = {
        "video": record.group,
        "stride": record.stride,
        "requested_stride": record.requested_stride,
        "start": record.start,
        "decoder": record.decoder,
        "width": int(width),
        "height": int(height),
        **record.lineage,
    }
    return Sentence(record.key, record.source, "video", "none", split, images, members, meta)
