"""What operating systems, copies, archives and editors leave in a dataset folder, made the way
those tools make it, for the folder-listing sources' tests."""

from __future__ import annotations

from pathlib import Path

# an AppleDouble header (magic 0x00051607, version 2): what a Mac writes as `._x` beside `x`
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x02" + b"\x00" * 58


def mac_copy(folder: Path) -> list[Path]:
    """A Mac's copy to an exFAT/FAT disk or SMB share: `._x` beside every file, `.DS_Store` in
    every folder. Returns what it added."""
    added = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        double = path.with_name("._" + path.name)
        double.write_bytes(APPLEDOUBLE)
        added.append(double)
    for directory in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        (directory / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 32)
        added.append(directory / ".DS_Store")
    return added


def mac_zip(folder: Path, name: str) -> Path:
    """A Mac's zip extracted elsewhere: `__MACOSX/` mirroring the tree with `._x` files."""
    meta = folder / "__MACOSX" / name
    meta.mkdir(parents=True)
    (meta / f"._{name}").write_bytes(APPLEDOUBLE)
    return folder / "__MACOSX"


def windows(folder: Path) -> list[Path]:
    """Explorer's thumbnail cache and folder settings."""
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 56)
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\r\nIconResource=x\r\n")
    return [folder / "Thumbs.db", folder / "desktop.ini"]


def synology(folder: Path, name: str) -> Path:
    """A Synology NAS's `@eaDir/<file>/SYNOPHOTO_THUMB_M.jpg` thumbnails (real JPEG names)."""
    thumbs = folder / "@eaDir" / name
    thumbs.mkdir(parents=True)
    (thumbs / "SYNOPHOTO_THUMB_M.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 16)
    return folder / "@eaDir"


def editors(folder: Path, name: str) -> list[Path]:
    """A LibreOffice lock, an NFS silly-rename, an Office owner file, a `.git/` folder."""
    made = [folder / f".~lock.{name}#", folder / ".nfs000000000012345600000001", folder / f"~${name}"]
    for path in made:
        path.write_bytes(b"lock\n")
    (folder / ".git" / "objects").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return [*made, folder / ".git"]
