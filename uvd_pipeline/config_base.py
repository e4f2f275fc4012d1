"""What every module of the build config builds on: the strict model base (unknown fields are
errors, sections are frozen) and the guess at what a misspelt name meant, which the models' own
checks and the error messages both offer. It imports nothing of the config, so every config module
may import it without a cycle."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _closest(word: Any, choices: Any) -> str | None:
    """The one choice a misspelt `word` most likely meant (`sorces` -> `sources`), if any is close."""
    if not isinstance(word, str):
        return None
    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None
