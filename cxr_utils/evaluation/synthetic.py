"""A folder of synthetic PNGs: `export` writes it from a run's EMA generator, `load_synthetic` reads it back.

An export folder looks like::

    OUT/NORMAL/syn-s<seed>-000001.png ...   8-bit grayscale, text chunks Synthetic=true, Description=<SYNTHETIC_TAG>
    OUT/PNEUMONIA/syn-s<seed>-000001.png ...
    OUT/manifest.csv                         file, class, label, seed, run, generator_sha256, synthetic, generator

It is built in a hidden sibling folder and renamed into place at the end, so a crash (or a full disk)
never leaves a half-written export or a manifest that lists missing files. Before the rename every file is made
durable with one syncfs(2) of the folder's file system instead of one fsync per PNG (`_StageFlush`), and the staging
folders an interrupted export left behind (a Colab reset mid-export leaves thousands of PNGs on Drive) are removed
by the next export into the same folder.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import math
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config import CLASS_NAMES, SYNTHETIC_TAG
from ..data import to_gray
from ..errors import UserError
from ..files import FSYNC_UNSUPPORTED, atomic_write_csv, file_digest, fsync_file, in_notebook, read_csv
from ..gan import runs
from ..gan.generate import generate, latent_dim_of, noise_for, png_bytes

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("file", "class", "label", "seed", "run", "generator_sha256", "synthetic", "generator")
SOFTWARE = f"cxr-utils {__version__} (cxr_utils.evaluation.synthetic.export)"


# ----------------------------------------------------------------------------- reading a synthetic folder


def load_synthetic(folder: str | os.PathLike, expected_size: int | None = None,
                   class_names: Sequence[str] = CLASS_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """Read FOLDER/<class>/*.png -> (images uint8 (N, S, S), labels int64); label = index in class_names."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: synthetic folder not found; write one with `python -m cxr_utils sample --out {folder} ...`")
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for label, name in enumerate(class_names):
        sub = folder / name
        if not sub.is_dir():
            raise UserError(f"{sub}: class folder missing (expected one folder per class: {', '.join(class_names)}); "
                            f"re-export with `python -m cxr_utils sample`")
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not files:
            raise UserError(f"{sub}: no .png images in this class folder; re-export with `python -m cxr_utils sample`")
        for p in files:
            try:
                with Image.open(p) as im:
                    im.load()
                    a = to_gray(im)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise UserError(f"{p}: unreadable PNG ({type(e).__name__}); delete it or re-export the folder") from None
            shape = (int(a.shape[0]), int(a.shape[1]))
            if shape[0] != shape[1]:
                raise UserError(f"{p}: image is {shape[1]}x{shape[0]}, not square; synthetic images must be S x S")
            if expected_size is not None and shape[0] != expected_size:
                raise UserError(f"{p}: image is {shape[0]}x{shape[0]} but {expected_size}x{expected_size} was expected; "
                                f"export from a generator trained at size {expected_size}")
            if first is None:
                first = (p, shape)
            elif shape != first[1]:
                raise UserError(f"{p}: image is {shape[0]}x{shape[0]} but {first[0]} is {first[1][0]}x{first[1][0]}; "
                                f"a synthetic folder must hold one image size")
            images.append(a)
            labels.append(label)
    return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def generators_of(folder: str | os.PathLike) -> list[str]:
    """The generator(s) a synthetic folder's manifest says made its images ("best (epoch 3000, ...)", ...)."""
    return sorted({r.get("generator") or "unknown (manifest without a generator column)" for r in read_manifest(folder)})


def read_manifest(folder: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of FOLDER/manifest.csv as dicts (empty list if there is no manifest)."""
    return read_csv(Path(folder) / MANIFEST_NAME)


def per_class_for_ratio(real_counts: Sequence[int], ratio: float) -> list[int]:
    """Synthetic images per class for a ratio: ratio x that class's real training images, rounded half up (so every
    class gets the same synthetic fraction ratio / (1 + ratio), to within half an image)."""
    return [int(math.floor(round(float(ratio) * int(n), 9) + 0.5)) for n in real_counts]


def first_per_class(images: np.ndarray, labels: np.ndarray, counts: Sequence[int], folder: str | os.PathLike | None,
                    class_names: Sequence[str] = CLASS_NAMES, why: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The first counts[k] images of each class k in file order (load_synthetic's order: the export's noise rows are
    fixed by its seed, so this is a reproducible subset); one UserError naming every class that has too few."""
    y = np.asarray(labels).astype(np.int64)
    have = [int((y == k).sum()) for k in range(len(class_names))]
    short = [k for k, (n, h) in enumerate(zip(counts, have, strict=True)) if n > h]
    if short:
        run = sorted({r.get("run", "") for r in read_manifest(folder)} - {""}) if folder is not None else []
        need = ", ".join(f"{class_names[k]} needs {counts[k]}, it holds {have[k]}" for k in short)
        enough = ",".join(str(max(c, h)) for c, h in zip(counts, have, strict=True))
        raise UserError(f"--synthetic{' ' + str(folder) if folder is not None else ''}: too few synthetic images "
                        f"({need}{'; ' + why if why else ''}); export enough: `python -m cxr_utils sample --run-dir RUN "
                        f"--n-per-class {enough} --out {folder if folder is not None else 'FOLDER'}` (RUN: the GAN run "
                        f"folder{' ' + repr(run[0]) if len(run) == 1 else ''}) or notebook 03 with a larger EXPORT_RATIO")
    keep = np.concatenate([np.flatnonzero(y == k)[:n] for k, n in enumerate(counts)]).astype(np.int64)
    return np.asarray(images)[keep], y[keep]


# ----------------------------------------------------------------------------- export


def _is_previous_export(out: Path, run_name: str) -> bool:
    """True if OUT holds exactly an export of this run (so replacing it loses nothing the user made)."""
    rows = read_manifest(out)
    if not rows or any(r.get("run") != run_name or r.get("synthetic") != "true" for r in rows):
        return False
    listed = {r["file"] for r in rows} | {MANIFEST_NAME}
    for p in out.rglob("*"):
        if p.is_file() and p.relative_to(out).as_posix() not in listed:
            return False  # a file we did not write: refuse rather than delete it
    return True


def _check_out(out: Path, run_name: str) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not _is_previous_export(out, run_name):
        raise UserError(f"--out {out}: folder is not empty and is not an export of run '{run_name}'; "
                        f"choose an empty or new folder (or delete this one)")


def export(run_dir: str | os.PathLike, n_per_class: int | Sequence[int], out: str | os.PathLike, seed: int = 0,
           batch_size: int = 256, progress: bool | str = "auto", which: str | int = "best") -> Path:
    """Write n_per_class PNGs per class (one count for every class, or one per class in class order) from the run's
    EMA generator (`which`: best | last | epoch) into OUT/<class>/ plus OUT/manifest.csv (its `generator` column says
    which one)."""
    run_dir = Path(run_dir)
    out = Path(out)
    counts = [int(n_per_class)] if isinstance(n_per_class, (int, np.integer)) else [int(n) for n in n_per_class]
    if not counts or min(counts) < 1:
        raise UserError(f"--n-per-class: must be >= 1 for every class, got {','.join(map(str, counts)) or 'nothing'}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {batch_size}")
    src, described = _generator_file(run_dir, which)
    run_name = run_dir.resolve().name
    _check_out(out, run_name)
    generator, cfg, sha = _load_unchanged(run_dir, src)
    class_names = tuple(getattr(cfg, "class_names", CLASS_NAMES))
    job = _Job(class_names, _per_class(counts, class_names), seed, batch_size, run_name, sha, described)
    show = (sys.stderr.isatty() or in_notebook()) if progress == "auto" else bool(progress)
    stage: Path | None = None
    flush: _StageFlush | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_stages(out)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
        flush = _StageFlush(stage)  # before the first PNG: it owns the stage and sees every write-back error
        rows = _write_pngs(stage, generator, job, f"export {out.name}", show)
        atomic_write_csv(stage / MANIFEST_NAME, rows, MANIFEST_FIELDS)
        flush()
        _swap_into_place(stage, out, run_name)
    except OSError as e:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        raise UserError(f"--out {out}: cannot write the export ({e.strerror or e}); free disk space or choose a writable "
                        f"folder (nothing was left half-written)") from None
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if flush is not None:
            flush.close()
    return out


def _generator_file(run_dir: Path, which: str | int) -> tuple[Path, str]:
    """(the generator file `which` names in the run folder, its description); UserError if either is missing.
    Resolved once: the manifest names the file that was loaded."""
    if not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: folder not found; train a GAN first (`python -m cxr_utils train ...`)")
    src, described = runs.generator_source(run_dir, which)
    if not src.is_file():
        raise UserError(f"--run-dir {run_dir}: no {src.name} in it; let the training finish (or resume it) first")
    return src, described


def _load_unchanged(run_dir: Path, src: Path) -> tuple[Any, Any, str]:
    """(generator, its config, the file's SHA-256), the digest taken before and checked after loading."""
    sha = file_digest(src)
    generator, cfg = runs.load_generator(run_dir, src)
    if file_digest(src) != sha:  # a trainer replaced it meanwhile (atomically): the hash must describe these weights
        raise UserError(f"{src}: replaced while it was being loaded (a trainer is still writing the run); export again")
    return generator, cfg, sha


def _per_class(counts: list[int], class_names: Sequence[str]) -> list[int]:
    """One count per class: a single count repeated; UserError if the number of counts fits neither."""
    if len(counts) == 1:
        counts = counts * len(class_names)
    if len(counts) != len(class_names):
        raise UserError(f"--n-per-class {','.join(map(str, counts))}: give one count, or one per class "
                        f"({', '.join(class_names)})")
    return counts


@dataclass(frozen=True)
class _Job:
    """What one export writes: the classes and their counts, the seed of all the noise, the batch size, and the
    provenance every PNG and manifest row carries."""

    class_names: tuple[str, ...]
    counts: list[int]
    seed: int
    batch_size: int
    run_name: str
    sha: str
    described: str


def _write_pngs(stage: Path, generator: Any, job: _Job, desc: str, show: bool) -> list[dict[str, str]]:
    """Generate and write every PNG of the job into stage/<class>/ (a progress bar `desc` if show); the manifest rows."""
    n_total = sum(job.counts)
    # one seed -> all the noise; image i of class k always gets the same noise row, whatever the batch size
    noise = noise_for(job.seed, n_total, latent_dim_of(generator))
    labels = np.repeat(np.arange(len(job.class_names)), job.counts)
    index_in_class = np.concatenate([np.arange(1, n + 1) for n in job.counts])
    for name in job.class_names:
        (stage / name).mkdir()
    rows: list[dict[str, str]] = []
    b = job.batch_size
    with _tqdm()(total=n_total, desc=desc, unit="img", disable=not show) as bar:
        for i in range(0, n_total, b):
            imgs = generate(generator, noise[i:i + b], labels[i:i + b], batch_size=b)
            for j, img in enumerate(imgs):
                k = int(labels[i + j])
                cls = job.class_names[k]
                rel = f"{cls}/syn-s{job.seed}-{int(index_in_class[i + j]):06d}.png"
                text = {"Synthetic": "true", "Description": SYNTHETIC_TAG, "Software": SOFTWARE,
                        "Source-Run": job.run_name, "Generator-SHA256": job.sha, "Generator": job.described,
                        "Class": cls, "Seed": str(job.seed)}
                (stage / rel).write_bytes(png_bytes(img, text))
                rows.append({"file": rel, "class": cls, "label": str(k), "seed": str(job.seed), "run": job.run_name,
                             "generator_sha256": job.sha, "synthetic": "true", "generator": job.described})
            bar.update(len(imgs))
    return rows


def _tqdm() -> Any:
    """Notebook widget bar when ipywidgets is there, else the text bar (tqdm.auto would warn about it)."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


def _syncfs() -> Any:
    """libc's syncfs(2) where it reports write-back errors (Linux 5.8 or newer), else None."""
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    if not sys.platform.startswith("linux") or m is None or (int(m[1]), int(m[2])) < (5, 8):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


class _StageFlush:
    """Owns a staged export (a shared flock on its folder) and makes its files durable before it becomes visible.

    One syncfs(2) of the folder's file system replaces one fsync per file: each fsync is a journal commit of its own
    (4.0 ms per PNG against 0.04 ms for one syncfs on the build machine's disk, assets/results/export_flush.json; on a
    FUSE mount such as Colab's Drive each fsync is also a round trip to the Drive client), while one syncfs commits
    them all at once (and any other dirty file of that file system: at worst a wait for those). It reports the
    write-back errors seen since the folder was opened, so it is opened before the first write; where syncfs is
    missing or too old to report errors, every file is fsynced as before. A failed flush raises (nothing is renamed).
    """

    def __init__(self, stage: Path) -> None:
        self.stage = stage
        self.fd: int | None = os.open(stage, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH)  # a live export: `_remove_abandoned_stages` leaves this folder alone
        except OSError:  # no locks on this file system: the clean-up cannot lock either, so it removes nothing
            pass

    def __call__(self) -> None:
        fn = _syncfs()
        if fn is not None and self.fd is not None:
            if fn(self.fd) == 0:
                return
            err = ctypes.get_errno()
            if err not in FSYNC_UNSUPPORTED and err != errno.ENOSYS:
                raise OSError(err, os.strerror(err), str(self.stage))
        for p in sorted(self.stage.rglob("*")):
            if p.is_file():
                fsync_file(p)

    def close(self) -> None:
        """Release the folder (closing the descriptor drops the lock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _remove_abandoned_stages(out: Path) -> list[Path]:
    """Delete the staging folders of OUT that no live export holds (left by a kill or a Colab reset mid-export)."""
    removed = []
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.part-*")):
        if not p.is_dir() or p.is_symlink():
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while an export holds it
        except OSError:
            continue
        else:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        finally:
            os.close(fd)
    return removed


def _swap_into_place(stage: Path, out: Path, run_name: str) -> None:
    """Rename the staged folder onto OUT; a previous export of the same run is moved aside, then removed."""
    old: Path | None = None
    if out.exists():
        _check_out(out, run_name)  # re-check: another process may have written into OUT meanwhile
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    try:
        os.replace(stage, out)
    except BaseException:
        if old is not None:  # put the previous export back: never leave the user with nothing
            os.replace(old / "x", out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
