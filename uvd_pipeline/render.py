"""Render records into canvas images: decode, resize, encode losslessly. Rejects, never raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from sources.fsio import FileTooLarge, NotAFile
from sources.paths import NOT_A_FILE
from sources.records import FILE_TOO_LARGE, ImageRecord, Reject, VideoClipRecord, VideoRecord
from sources.video import VideoError, clip_frames
from transforms.decode import DecodeError
from transforms.errors import exception_detail
from transforms.phash import phash64, pixel_sha256
from transforms.resize import Canvas
from uvd_pipeline.dedup import Fingerprint
from uvd_pipeline.image_decode import DEFAULT_DECODE_TIME_S, load_image
from uvd_pipeline.keys import split_of
from uvd_pipeline.png_fast import encode_rgb_png
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
    decode_time_s: float = DEFAULT_DECODE_TIME_S  # CPU seconds one image's decode may take (`image_decode`)

    @classmethod
    def from_config(cls, config) -> "RenderSettings":
        image = config.image
        return cls(image.size, image.resize, image.pad_value, image.max_pixels, image.png_compression,
                   config.seed, config.split.val_fraction, image.decode_time_s)

    def split(self, group: str, hint: str | None = None) -> str:
        return split_of(group, self.seed, self.val_fraction, hint)


# PNG row filters by zlib level. At the speed levels one fixed filter instead of libpng's adaptive
# choice among all five per row: on the sample corpus's renders (every source kind) level 1 with
# the Avg filter encodes in 63% of the time for 3% more bytes; at level 6 it would save only 13%
# for the same 3%, so the levels a user picks for size keep the adaptive choice. Level 0 stores
# the rows uncompressed: filtering them would only cost time.
# Level 1 (the default) is encoded by `png_fast` (the Avg filter, deflated by zlib-ng).
_SPEED_FILTERS = {0: cv2.IMWRITE_PNG_FILTER_NONE, 1: cv2.IMWRITE_PNG_FILTER_AVG}


def png_params(compression: int) -> list[int]:
    """OpenCV's PNG parameters for a zlib level (`_SPEED_FILTERS`)."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, compression]
    if compression in _SPEED_FILTERS:
        params += [cv2.IMWRITE_PNG_FILTER, _SPEED_FILTERS[compression]]
    return params


def encode_png(rgb: np.ndarray, compression: int) -> bytes:
    if compression == 1:  # the default
        return encode_rgb_png(rgb)
    # OpenCV's channel swap: 3 us for a 256x256 image, where numpy's copy of the reversed view
    # took 165 us (2.5% of rendering a web image)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), png_params(compression))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# OpenCV >= 4.10 decodes straight to RGB: one call (and one release of Python's lock) per image
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def decode_png(data: bytes) -> np.ndarray:
    """Rendered PNG bytes back to RGB uint8 (a contiguous array)."""
    buffer = np.frombuffer(data, np.uint8)
    if _IMREAD_RGB is not None:
        rgb = cv2.imdecode(buffer, _IMREAD_RGB)
        if rgb is None:
            raise ValueError("not a PNG image")
        return rgb
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a PNG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def render_image(record: ImageRecord, settings: RenderSettings, fingerprint: bool = False) -> RenderedUnit | Reject:
    """One image on the canvas; with `fingerprint`, its dedup fingerprint taken on these pixels."""
    split = settings.split(record.group, record.split_hint)
    try:
        data = record.read_bytes()
    except FileTooLarge as exc:
        return Reject(record.key, record.source, record.group, "read", FILE_TOO_LARGE, str(exc), split_hint=split)
    except NotAFile as exc:  # a followed link to /dev/zero, a fifo: never opened (`fsio.refuse_special`)
        return Reject(record.key, record.source, record.group, "read", NOT_A_FILE, str(exc), split_hint=split)
    except (OSError, ValueError) as exc:
        return Reject(record.key, record.source, record.group, "read", "unreadable_file",
                      exception_detail(exc), split_hint=split)
    try:
        decoded = load_image(data, settings.size, settings.resize, settings.decode_time_s,  # type: ignore[arg-type]
                             max_pixels=settings.max_pixels, pad_value=settings.pad_value)
    except DecodeError as exc:
        return Reject(record.key, record.source, record.group, "decode", exc.reason, exc.detail, split_hint=split)
    member = {"key": record.key, "width": decoded.width, "height": decoded.height, "format": decoded.format}
    if decoded.colour_profile:
        member["colour_profile"] = decoded.colour_profile  # converted to sRGB from this
    if decoded.pages.count > 1:  # the image is the first page or frame; the others are not used
        member["pages" if decoded.pages.exact else "pages_at_least"] = decoded.pages.count
    member.update(record.lineage)
    identity = None
    if fingerprint:
        identity = Fingerprint(record.key, record.source, split, pixel_sha256(decoded.pixels), phash64(decoded.pixels))
    return RenderedUnit(record.key, record.source, split, record.group,
                        (encode_png(decoded.pixels, settings.png_compression),), (member,), record.label,
                        "category", identity)


def render_video(record: VideoRecord, settings: RenderSettings) -> list[Sentence | Reject]:
    """Every sentence of one video from one read of the file; a clip whose frames are lost (budget
    spent, frames that do not decode) becomes a reject with the reason, the others are kept."""
    split = settings.split(record.group)
    fit = Canvas(settings.size, settings.resize, settings.pad_value)  # type: ignore[arg-type]
    results: list[Sentence | Reject] = []
    # a frame several clips share (strides 10, 20 and 30 all start at frame 0) is encoded once;
    # its PNG is kept until the last clip that uses it has it
    users: dict[int, int] = {}
    for clip in record.clips:
        for i in set(clip.frame_indices):
            users[i] = users.get(i, 0) + 1
    shared: dict[int, bytes] = {}

    def png(i: int, frame: np.ndarray) -> bytes:
        data = shared.pop(i, None) if users[i] == 1 else shared.get(i)
        if data is None:
            data = encode_png(frame, settings.png_compression)
            if users[i] > 1:
                shared[i] = data
        users[i] -= 1
        return data

    for clip, frames in clip_frames(record, fit, settings.max_pixels):
        if isinstance(frames, VideoError):
            results.append(Reject(clip.key, clip.source, clip.group, "decode", frames.reason, frames.detail,
                                  split_hint=split))
        else:
            results.append(clip_sentence(clip, frames, settings, split, png))
    return results


def clip_sentence(record: VideoClipRecord, frames: np.ndarray, settings: RenderSettings, split: str,
                  png: Callable[[int, np.ndarray], bytes] | None = None) -> Sentence:
    """A clip's sentence from its frames, already on the canvas; `png(index, frame)` encodes a frame
    (default: `encode_png` at the settings' compression)."""
    if png is None:
        images = tuple(encode_png(frame, settings.png_compression) for frame in frames)
    else:
        images = tuple(png(int(i), frame) for i, frame in zip(record.frame_indices, frames))
    times = record.frame_times or (None,) * len(record.frame_indices)
    members = tuple({"frame": int(i), "time_s": t} for i, t in zip(record.frame_indices, times))
    meta = {
        "video": record.group,
        "stride": record.stride,
        "requested_stride": record.requested_stride,
        "start": record.start,
        "decoder": record.decoder,
        **record.lineage,
    }
    return Sentence(record.key, record.source, "video", "none", split, images, members, meta)


def render_clip(record: VideoClipRecord, settings: RenderSettings) -> Sentence | Reject:
    """One clip on its own (a build renders whole `VideoRecord`s)."""
    video = VideoRecord(record.key, record.source, record.group, record.uri, (record,), record.decoder,
                        int(record.lineage.get("frames_total", max(record.frame_indices) + 1)),
                        member=record.member)
    (result,) = render_video(video, settings)
    return result
