"""The cache: `<name>.npz` + `<name>.manifest.json`, written together under a folder lock, checked for currency, loaded.

The .npz holds `images` uint8 (N, S, S), `labels` int64 (0 NORMAL, 1 PNEUMONIA), `split` str and `patient` str;
the manifest records the provenance of every image, the skipped files and the duplicate audit.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASS_NAMES
from ..errors import UserError
from ..files import atomic_save_npz, atomic_write_json, load_npz, read_json
from .messages import one_line
from .splits import SPLITS, TEST_FRACTION, VAL_FRACTION, split_counts

# bump when the cache layout, the preprocessing or the split rule changes: older caches are then rebuilt, with a note.
# 2: grouped_split seeds every split with one patient per class; the official-test patient rule is a recorded choice
FORMAT_VERSION = 2


def manifest_path(npz: str | os.PathLike) -> Path:
    """`<name>.manifest.json` beside `<name>.npz`."""
    npz = Path(npz)
    return npz.with_name(npz.name[:-4] + ".manifest.json" if npz.name.endswith(".npz") else npz.name + ".manifest.json")


def cache_key(source: str, size: int, seed: int, fingerprint: str, test_patients: str) -> str:
    """sha256 of everything a cache depends on: format, source, size, seed, raw-file fingerprint, split fractions and
    the official-test patient rule."""
    spec = {"format": FORMAT_VERSION, "source": source, "size": size, "seed": seed, "fingerprint": fingerprint,
            "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION, "test_patients": test_patients}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _manifest_of(npz: Path) -> dict[str, Any] | None:
    try:
        return read_json(manifest_path(npz))
    except (OSError, ValueError):
        return None


def cache_format(npz: str | os.PathLike) -> int | None:
    """The format version a cache's manifest records (None: no readable manifest, or none recorded)."""
    m = _manifest_of(Path(npz))
    v = m.get("format") if m else None
    return v if isinstance(v, int) else None


def format_note(npz: str | os.PathLike) -> str | None:
    """"an older format (1 < 2)" (or "a newer ...") when the cache was built by another format version, else None."""
    v = cache_format(npz)
    if v is None or v == FORMAT_VERSION:
        return None
    older = v < FORMAT_VERSION
    return f"{'an older' if older else 'a newer'} format ({v} {'<' if older else '>'} {FORMAT_VERSION})"


def recorded_test_patients(npz: str | os.PathLike) -> str | None:
    """The test-patient rule a current-format cache was built with (None: no such cache)."""
    m = _manifest_of(Path(npz))
    return m.get("test_patients") if m and m.get("format") == FORMAT_VERSION else None


def cache_is_current(npz: Path, key: str | None, source: str, size: int, seed: int, test_patients: str) -> bool:
    """True if npz + manifest exist, belong together, and match `key` (or, with key None, the same parameters)."""
    if not (npz.is_file() and manifest_path(npz).is_file()):
        return False
    m = _manifest_of(npz)
    if m is None or m.get("format") != FORMAT_VERSION or m.get("npz_size") != npz.stat().st_size:
        return False  # e.g. a crash between writing the .npz and its manifest
    if key is None:  # raw files gone: a pinned download source is trusted if the parameters match
        return (m.get("source"), m.get("size"), m.get("seed"), m.get("test_patients")) == (source, size, seed, test_patients)
    return m.get("cache_key") == key


@contextlib.contextmanager
def cache_lock(out: Path, exclusive: bool) -> Iterator[None]:
    """flock on the cache's folder: writers exclusive, readers shared, so nobody sees half an (.npz, manifest) pair.

    The folder itself is locked (Linux allows flock on a directory) so no lock file litters the cache folder.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out.parent, os.O_RDONLY)
    except OSError:  # unreadable folder: reading unlocked is all we can do
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock (also when the process is killed)


@dataclass(frozen=True)
class CacheWrite:
    """What one cache write carries: the arrays and the builder's meta (`test_patients` recorded), the provenance the
    manifest states (source, why it was chosen, size, seed, cache key, origin) and the duplicate audit."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    source: str
    reason: str
    size: int
    seed: int
    key: str
    origin: dict[str, Any]
    duplicates: dict[str, Any]


def _write_cache_files(out: Path, w: CacheWrite) -> None:
    atomic_save_npz(out, **w.arrays)
    meta = w.meta
    manifest = {
        "format": FORMAT_VERSION, "source": w.source, "source_reason": w.reason, "size": w.size, "seed": w.seed,
        "test_patients": meta["test_patients"], "test_overlap": meta.get("test_overlap"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "cache_key": w.key,
        "npz": out.name, "npz_size": out.stat().st_size, "n_images": int(len(w.arrays["labels"])),
        "class_names": list(CLASS_NAMES), "counts": split_counts(w.arrays["labels"], w.arrays["split"]),
        "origin": w.origin, "root": meta["root"], "split_policy": meta["split_policy"],
        "patient_ids": meta["patient_ids"], "decode_methods": meta["decode_methods"], "notes": meta["notes"],
        "skipped": meta["skipped"], "excluded": meta["excluded"], "duplicates": w.duplicates, "images": meta["entries"],
    }
    for k in ("md5", "md5_matches_official"):
        if k in meta:
            manifest[k] = meta[k]
    atomic_write_json(manifest_path(out), manifest)  # last: a manifest always describes a complete .npz


def write_cache(out: Path, w: CacheWrite) -> None:
    """Write the .npz and then its manifest under the folder's exclusive lock (`w.meta` as the builders return it)."""
    with cache_lock(out, exclusive=True):  # the .npz and its manifest change together, never interleaved
        _write_cache_files(out, w)


@dataclass
class CXRDataset:
    """A loaded cache: uint8 images (N,S,S), int64 labels, split and patient strings, and the manifest."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    patient: np.ndarray
    manifest: dict[str, Any]
    path: Path | None = None

    def __len__(self) -> int:
        return int(len(self.labels))

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one split."""
        if split not in SPLITS:
            raise UserError(f"split {split!r}: unknown; choose one of {', '.join(SPLITS)}")
        m = self.split == split
        return self.images[m], self.labels[m]


def load(npz: str | os.PathLike) -> CXRDataset:
    """Load a cache written by `prepare` (no pickle); the manifest is attached when present. A cache of another
    format version still loads (a run trained on it stays evaluable on it) but says so in one line on stderr."""
    npz = Path(npz)
    if not npz.is_file():
        raise UserError(f"--data {npz}: file not found; run `python -m cxr_utils prepare` first")
    try:
        with cache_lock(npz, exclusive=False):
            z = load_npz(npz)
            mp = manifest_path(npz)
            manifest = read_json(mp) if mp.is_file() else {}
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--data {npz}: not a readable .npz ({type(e).__name__}: {one_line(e)}); rebuild it with prepare --force") from None
    missing = [k for k in ("images", "labels", "split") if k not in z]
    if missing:
        raise UserError(f"--data {npz}: has no '{missing[0]}' array; rebuild it with `python -m cxr_utils prepare --force`")
    images = z["images"]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    patient = z["patient"] if "patient" in z else np.array([f"image-{i}" for i in range(len(images))])
    note = format_note(npz) if manifest else None
    if note:
        print(f"note: {npz} was built by {note}: its split follows that format's rule; `python -m cxr_utils prepare` "
              "(the same --source/--out) rebuilds it", file=sys.stderr)
    return CXRDataset(images=images.astype(np.uint8, copy=False), labels=z["labels"].astype(np.int64),
                      split=z["split"].astype(str), patient=patient.astype(str), manifest=manifest, path=npz)
