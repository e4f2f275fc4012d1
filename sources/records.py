"""The typed records that sources yield, and the stable keys they carry.

A source never decodes pixels into the pipeline's shapes; it says *what* to render (bytes or a
URI plus lineage) and, for videos, *which frames*. Every record has a stable, dot-free key
derived from the input (webdataset cuts keys at the first dot), and a `group` key that decides
the train/val split so that no group spans two splits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Union

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(*parts: str) -> str:
    """Join `parts` into a dot-free key; characters outside [A-Za-z0-9_-] become '_'.

    When anything had to be replaced, a short digest of the original text is appended so that
    two inputs differing only in punctuation ("a.b" vs "a_b") still get different keys.
    """
    cleaned_parts = [_UNSAFE.sub("_", part).strip("_") or "_" for part in parts]
    cleaned = "-".join(cleaned_parts)
    if cleaned_parts != list(parts):
        raw = "\0".join(parts)
        cleaned += "_" + hashlib.blake2b(raw.encode(), digest_size=4).hexdigest()
    return cleaned


@dataclass(frozen=True)
class ImageRecord:
    """One image to decode. Exactly one of `data` (bytes in hand) or `uri` (fsspec URL) is set."""

    key: str
    source: str
    group: str
    data: bytes | None = None
    uri: str | None = None
    split_hint: str | None = None  # an official split from the dataset layout (ImageNet val/)
    label: str | None = None  # class id (ImageNet wnid) when the source has one
    lineage: dict[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        from sources.fsio import read_bytes

        assert self.uri is not None
        return read_bytes(self.uri)


@dataclass(frozen=True)
class VideoClipRecord:
    """One planned video sentence: which frames of which file, already validated against length."""

    key: str  # the sentence id: video key + stride + start
    source: str
    group: str  # the video key: every clip of one video lands in the same split
    uri: str
    frame_indices: tuple[int, ...]
    stride: int
    requested_stride: int
    start: int
    decoder: str  # "decord" or "pyav", fixed at planning so renders are reproducible
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reject:
    """An input that did not become (part of) a sentence, and why. Never dropped silently."""

    key: str
    source: str
    group: str
    stage: str  # read | decode | plan | assemble
    reason: str  # short stable code: truncated, not_an_image, too_few_frames, ...
    detail: str = ""
    split_hint: str | None = None  # the official split when the layout has one

    def as_row(self) -> dict[str, str]:
        return {
            "key": self.key,
            "source": self.source,
            "stage": self.stage,
            "reason": self.reason,
            "detail": clean_detail(self.detail),
        }


_VOLATILE = (
    (re.compile(r"\[\d{2}:\d{2}:\d{2}\] ?"), ""),  # log timestamps some decoders put in messages
    (re.compile(r" at 0x[0-9a-fA-F]+"), ""),  # object addresses in reprs
)


def clean_detail(text: str) -> str:
    """A reject's detail without run-specific noise, so reject files are reproducible too."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


SourceItem = Union[ImageRecord, VideoClipRecord, Reject]
