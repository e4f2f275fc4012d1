"""ICC profiles written tag by tag as the specification lays them out, for tests that need a
profile no tool here writes (a known Adobe RGB, a hostile table)."""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)  # the profile connection space's illuminant


def s15(value: float) -> bytes:
    """An s15Fixed16Number."""
    return struct.pack(">i", round(value * 65536))


def icc_profile(tags: list[tuple[bytes, bytes]], space: bytes = b"RGB ", version: int = 0x04300000) -> bytes:
    """A display-class profile (XYZ PCS, D50) of these (signature, payload) tags, each padded to 4
    bytes and listed in the tag table in order."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, payload in tags:
        payload += b"\0" * (-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    header = (struct.pack(">I", offset + len(body)) + b"\0" * 4 + struct.pack(">I", version) + b"mntr" + space
              + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(map(s15, D50))
              + b"\0" * 48)
    assert len(header) == 128
    return header + table + body
