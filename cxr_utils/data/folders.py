"""Folder layout: find the NORMAL/ and PNEUMONIA/ images of a source folder (optionally under train/ val/ test/).

What is not an image (hidden files, macOS resource forks, linked folders) is listed as skipped, with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CLASS_NAMES
from ..errors import UserError
from .splits import SPLITS


@dataclass
class _Item:
    path: Path  # absolute path of the file on disk
    rel: str  # path relative to the source root (what the manifest records)
    label: int
    official: str | None  # 'train' | 'val' | 'test' when the source has official splits


@dataclass
class Scan:
    root: Path
    items: list[_Item] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _skip_reason_by_name(name: str) -> str | None:
    if name.startswith("._"):
        return "macOS resource fork (._*), not an image"
    if name.startswith("."):
        return "hidden file (e.g. .DS_Store), not an image"
    return None


def _find_child(parent: Path, name: str) -> Path | None:
    """A child folder matched case-insensitively (NORMAL, normal, Normal)."""
    if not parent.is_dir():
        return None
    for c in sorted(parent.iterdir()):
        if c.is_dir() and c.name.upper() == name.upper():
            return c
    return None


def _scan_class_dir(scan: Scan, class_dir: Path, label: int, official: str | None) -> int:
    n = 0
    for p in sorted(class_dir.rglob("*")):
        if "__MACOSX" in p.parts:
            continue
        rel = p.relative_to(scan.root).as_posix()
        if p.is_symlink() and p.is_dir():  # never followed (it could loop or reach another class); say so
            scan.skipped.append({"path": rel, "reason": "linked folder (symlink), not followed"})
            continue
        if p.is_dir():
            continue
        reason = _skip_reason_by_name(p.name)
        if reason:
            scan.skipped.append({"path": rel, "reason": reason})
            continue
        if not p.is_file():
            scan.skipped.append({"path": rel, "reason": "not a regular file"})
            continue
        scan.items.append(_Item(p, rel, label, official))
        n += 1
    return n


def scan_folder(root: str | os.PathLike, flag: str = "--path") -> Scan:
    """Find NORMAL/ and PNEUMONIA/ under `root`, optionally under train/ val/ test/; check none is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{flag} {root}: folder not found; pass a folder holding NORMAL/ and PNEUMONIA/ "
                        "(optionally under train/ val/ test/)")
    scan = Scan(root=root)
    split_dirs = {s: d for s in SPLITS if (d := _find_child(root, s)) is not None}
    if split_dirs:
        for s, d in split_dirs.items():
            for label, cname in enumerate(CLASS_NAMES):
                cd = _find_child(d, cname)
                if cd is None:
                    raise UserError(f"{d}: missing class folder {cname}/; every split folder needs "
                                    f"{'/ and '.join(CLASS_NAMES)}/")
                if _scan_class_dir(scan, cd, label, s) == 0:
                    raise UserError(f"{cd}: class folder holds no files; add {cname} images or remove the folder")
    else:
        for label, cname in enumerate(CLASS_NAMES):
            cd = _find_child(root, cname)
            if cd is None:
                raise UserError(f"{root}: missing class folder {cname}/; expected {'/ and '.join(CLASS_NAMES)}/ "
                                "(optionally under train/ val/ test/)")
            if _scan_class_dir(scan, cd, label, None) == 0:
                raise UserError(f"{cd}: class folder holds no files; add {cname} images")
    return scan
