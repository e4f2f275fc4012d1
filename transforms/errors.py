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


class DecodeError(Rejected):
    """An input that cannot become an image; `reason` is a short stable code for reports
    (raised by `transforms.decode` and its parts, which all import it from here)."""


def exception_detail(exc: BaseException, prefix: str = "", limit: int | None = DETAIL_CHARS) -> str:
    """`{prefix}{ExceptionType}: {message}` cut to `limit` characters: the detail of a reject that an
    unexpected exception caused. A path the exception carries (an OSError's or FFmpeg's `filename`)
    is shown by its base name: the whole path would make the output's bytes depend on where the
    input lies (the same dataset built from another folder or machine) and publish that folder."""
    text = f"{prefix}{type(exc).__name__}: {_without_folders(exc)}"
    return text if limit is None else text[:limit]


def _without_folders(exc: BaseException) -> str:
    """The exception's message with each path it carries cut to its base name. An OSError (and
    PyAV's errors) quote the path as its `repr`, which escapes what is not printable UTF-8: a
    folder named in latin-1 (`caf\\udce9`), a backslash, a newline, or a path given as bytes
    (`b'...'`); the path then did not match its quoted text and the whole folder was published.
    The base name is quoted as itself (reject files show a latin-1 byte as `\\xe9`)."""
    message = str(exc)
    for attribute in ("filename", "filename2"):
        given = getattr(exc, attribute, None)
        path = given.decode("utf-8", "surrogateescape") if isinstance(given, bytes) else given
        if isinstance(path, str) and path:
            name = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path
            message = message.replace(repr(given), f"'{name}'").replace(path, name)
    return message
