"""The one shape of an expected failure on one input: a short stable `reason` code (what reports
count) and a `detail` for people. `DecodeError`, `MapError`, `VideoError` and `AnnotationError`
are `Rejected`s; the stage that catches one turns it into a reject row with the same two fields.
Here, at the bottom of the package graph, so that every package can share it."""

from __future__ import annotations

DETAIL_CHARS = 200  # a reject's detail is cut here: enough to diagnose, short enough to publish


class Rejected(Exception):
    """An input that cannot be used, and why: `reason` (a stable code) and `detail` (free text)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def exception_detail(exc: BaseException, prefix: str = "", limit: int | None = DETAIL_CHARS) -> str:
    """`{prefix}{ExceptionType}: {message}` cut to `limit` characters: the detail of a reject that an
    unexpected exception caused."""
    text = f"{prefix}{type(exc).__name__}: {exc}"
    return text if limit is None else text[:limit]
