"""Decoding: image bytes -> one centre-cropped S x S uint8 grey array (the one preprocessing function of every source).

Also the grey conversion of any PIL image (`to_gray`), parallel decoding of many files, and the model view
(uint8 <-> float32 in [-1, 1]) that the GAN and the classifiers read.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .messages import log, one_line

MIN_SIDE = 8  # smaller images are skipped as unusable; already-small ones above this are upsampled
_CV2_MODES = {"L", "RGB"}  # 8-bit modes OpenCV decodes exactly like PIL; everything else goes through PIL
_CV2_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP"}


class BadImage(Exception):
    """One file could not be used as an image; the message is the reason shown in the summary."""


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


def to_gray(im) -> np.ndarray:
    """THE grey conversion of the package: any PIL image (CMYK, 16-bit, float, palette, alpha, 1-bit) -> uint8 (H, W).

    Colour goes through PIL's luma (ITU-R 601) weights, 16-bit is scaled by 1/257, transparency becomes black.
    """
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
        raise BadImage(f"not an image ({type(e).__name__}: {one_line(e)})") from None
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
        gray = to_gray(im)
    except Exception as e:  # noqa: BLE001
        raise BadImage(f"corrupt or truncated image ({type(e).__name__}: {one_line(e)})") from None
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
                log(f"{desc}: worker processes failed ({one_line(e)}); decoding the remaining files in this process")
                for c in chunks[done:]:
                    out.extend(_decode_chunk(c, size))
                    bar.update(len(c))
    finally:
        bar.close()
    return out


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


def gray_images(x: np.ndarray) -> np.ndarray:
    """uint8 image arrays (N, S, S[, C]) -> (N, S, S): channels averaged (X-rays are grey); to_gray is its PIL twin."""
    a = np.asarray(x)
    if a.ndim == 4:
        a = a[..., 0] if a.shape[-1] == 1 else np.rint(a.mean(axis=-1)).astype(np.uint8)
    return a.astype(np.uint8)


def from_model_view(x: np.ndarray) -> np.ndarray:
    """float (N,S,S,C) or (N,S,S) in [-1, 1] -> uint8 (N,S,S), channels averaged."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4:
        a = a.mean(axis=-1)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
