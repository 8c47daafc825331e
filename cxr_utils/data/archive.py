"""The Kaggle tree: extract the one chest_xray tree of a Kaggle-layout archive (refusing members that could escape
it), or find it in a folder that was already extracted (kagglehub's); the same rules pick the tree in both."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import CLASS_NAMES
from ..errors import UserError
from .messages import one_line
from .splits import SPLITS

KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"


def member_is_unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member could write outside its folder (absolute, `..`, symlink), or None if it is safe."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "parent-directory (..) path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _chest_xray_root(names: Iterable[str]) -> tuple[str, ...] | None:
    """The shallowest folder that holds train|val|test/NORMAL|PNEUMONIA (skips __MACOSX and nested copies)."""
    best: tuple[str, ...] | None = None
    for name in names:
        parts = PurePosixPath(name).parts
        if "__MACOSX" in parts:
            continue
        for i in range(len(parts) - 2):
            if parts[i].lower() in SPLITS and parts[i + 1].upper() in CLASS_NAMES:
                root = parts[:i]
                if best is None or (len(root), root) < (len(best), best):
                    best = root
                break
    return best


def _kind(parts: tuple[str, ...], root: tuple[str, ...]) -> str:
    """Which count a file at `parts` goes to: inside the tree ("extracted"), under __MACOSX, or outside the tree."""
    n = len(root)
    if "__MACOSX" in parts:
        return "ignored_macosx"
    if tuple(parts[:n]) != root or len(parts) <= n + 2 or parts[n].lower() not in SPLITS:
        return "ignored_outside_tree"  # e.g. the nested duplicate chest_xray/chest_xray/
    return "extracted"


def _tree_stats(root: tuple[str, ...]) -> dict[str, Any]:
    return {"tree": "/".join(root) or ".", "extracted": 0, "ignored_macosx": 0, "ignored_outside_tree": 0}


def find_tree(folder: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The chest_xray tree inside an already extracted Kaggle download, with the counts `safe_extract_tree` reports.

    The same choice as for an archive: the shallowest train|val|test/NORMAL|PNEUMONIA root, `__MACOSX/` and the
    nested duplicate `chest_xray/chest_xray/` left out (`folders.scan_folder` then reads only the split folders).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: the Kaggle download folder does not exist; download it again")
    names = [Path(d, f).relative_to(folder).as_posix() for d, _, files in os.walk(folder) for f in files]
    root = _chest_xray_root(names)
    if root is None:
        raise UserError(f"{folder}: no train|val|test/NORMAL|PNEUMONIA folders inside; expected the Kaggle "
                        f"{KAGGLE_DATASET} data set")
    stats = _tree_stats(root)
    for name in names:
        stats[_kind(PurePosixPath(name).parts, root)] += 1
    return folder.joinpath(*root), stats


def safe_extract_tree(archive: str | os.PathLike, target: str | os.PathLike) -> dict[str, Any]:
    """Extract the one chest_xray tree of a Kaggle-layout zip into `target` (temp folder + rename).

    Refuses archives with absolute, `..` or symlink members; ignores `__MACOSX/`, `._*` and the nested
    duplicate `chest_xray/chest_xray/`. Returns counts of what was extracted and ignored.
    """
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive}: not a readable zip archive ({one_line(e)}); re-download it or pass the right --path") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            why = member_is_unsafe(info)
            if why:
                raise UserError(f"{archive}: member {info.filename!r} is a {why}; refusing to extract an archive "
                                "that could write outside its folder (use the original Kaggle archive)")
        files = [i for i in infos if not i.is_dir()]
        root = _chest_xray_root(i.filename for i in files)
        if root is None:
            raise UserError(f"{archive}: no train|val|test/NORMAL|PNEUMONIA folders inside; expected the Kaggle "
                            f"{KAGGLE_DATASET} archive")
        n_root = len(root)
        # `._*` files inside the tree are extracted (tiny) so the scan names them as skipped in the summary
        stats = _tree_stats(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
        try:
            tmp_resolved = tmp.resolve()
            for info in files:
                parts = PurePosixPath(info.filename).parts
                kind = _kind(parts, root)
                if kind != "extracted":
                    stats[kind] += 1
                    continue
                dest = tmp.joinpath(*parts[n_root:])
                if not dest.resolve().is_relative_to(tmp_resolved):  # belt and braces after the member checks
                    raise UserError(f"{archive}: member {info.filename!r} resolves outside the target; refusing")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                stats["extracted"] += 1
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return stats
