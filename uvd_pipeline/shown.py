"""A name from an output folder (or a message holding one) as a terminal or a page may show it.

File names come from whoever filled the folder: an escape sequence in one (`\\e]0;...\\a`, a screen
clear) was printed raw by `verify` and `report`, and a name that is not UTF-8 (its bytes held as
lone surrogates by `os`) ended the report with a UnicodeEncodeError. Every character a reader cannot
see as itself is shown as its code instead, as the rejects files show a non-UTF-8 byte (`\\xNN`); a
tab, newline and carriage return as `\\t`, `\\n`, `\\r`."""

from __future__ import annotations

import unicodedata

HIDDEN = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format (a right-to-left override), surrogate, separators


WHITESPACE = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}  # as a shell's $'...' and Python write them: \u0009 read as noise


def _code(char: str) -> str:
    if char in WHITESPACE:
        return WHITESPACE[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a name that is not UTF-8 (surrogateescape), as `records.name_text`
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def shown(text: str, kept: str = "") -> str:
    """`text` with every control, format, lone surrogate and line/paragraph separator character
    but those `kept` shown as its code: one line of UTF-8 that changes nothing on a terminal."""
    return "".join(c if c in kept or unicodedata.category(c) not in HIDDEN else _code(c) for c in text)
