"""Atomic file writes: a crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path in the target's folder; rename it onto `path` only if the block succeeds.

    The file gets `mode` (e.g. 0o600 for a secret) before the block writes anything; by default the mode a plain
    open() would give.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix so libraries that dispatch on extension (Keras, numpy) accept the temp name
    sfx = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; widen to what open() would give unless the caller asks for a mode (rename keeps it)
    os.chmod(tmp_path, mode if mode is not None else 0o666 & ~_umask())
    try:
        yield tmp_path
        fsync_file(tmp_path, report_as=path)  # a failed flush is a failed write: the old file stays
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask alone must set it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# fsync errors that only say "this file system cannot sync" (some FUSE / network mounts): nothing was lost
FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def fsync_file(path: str | os.PathLike, report_as: str | os.PathLike | None = None) -> None:
    """Flush a written file to disk; an OSError (disk full, I/O error) names `report_as` (default `path`).

    A failed fsync means the bytes may never reach the disk (ENOSPC/EDQUOT on delayed allocation, EIO), so it is
    raised like a failed write: the caller must not rename the file into place as if it were whole.
    """
    try:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    except OSError as e:
        if e.errno in FSYNC_UNSUPPORTED:
            return
        raise OSError(e.errno, e.strerror, str(report_as if report_as is not None else path)) from e


def _fsync_dir(path: Path) -> None:
    # Tolerated on purpose: the file is already whole and renamed into place when this runs; a folder fsync only
    # makes the rename itself durable, and several file systems refuse fsync on a directory (EINVAL). Reporting
    # "cannot write" here would be wrong about the file, and no caller could undo the rename anyway.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (NaN is refused: JSON has none)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, compress: bool = True, **arrays: np.ndarray) -> Path:
    """Save arrays as an .npz atomically (compressed unless compress=False: float weights barely compress)."""
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an .npz without unpickling anything."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks (sha256 by default; "md5" for checksums published as MD5)."""
    with open(path, "rb") as fh:
        if algorithm == "md5":
            return hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
        return hashlib.file_digest(fh, algorithm).hexdigest()


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with a header as dicts; [] if there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_epoch_csv(path: str | os.PathLike, max_epoch: int | None = None) -> list[dict[str, str]]:
    """Rows of a per-epoch CSV (metrics.csv, quality.csv) with epoch <= max_epoch if given; [] if there is none."""
    return [r for r in read_csv(path) if max_epoch is None or int(r["epoch"]) <= max_epoch]


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel (figures and progress bars are shown inline there)."""
    import sys

    return "ipykernel" in sys.modules


def atomic_write_csv(path: str | os.PathLike, rows: Any, columns: Any) -> Path:
    """Rewrite a CSV atomically with these columns: None is written empty, floats with 6 significant digits."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
