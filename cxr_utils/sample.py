"""Sampling from a run's EMA generator: galleries, interpolations, memorization check, PNG export.

An export folder looks like::

    OUT/NORMAL/syn-s<seed>-000001.png ...   8-bit grayscale, text chunks Synthetic=true, Description=<SYNTHETIC_TAG>
    OUT/PNEUMONIA/syn-s<seed>-000001.png ...
    OUT/manifest.csv                         file, class, label, seed, run, generator_sha256, synthetic, generator

It is built in a hidden sibling folder and renamed into place at the end, so a crash (or a full disk)
never leaves a half-written export or a manifest that lists missing files.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import CLASS_NAMES, SYNTHETIC_TAG
from .data import from_model_view as to_uint8  # generator output [-1, 1] -> uint8, channels averaged
from .errors import UserError
from .io import file_digest, fsync_file

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("file", "class", "label", "seed", "run", "generator_sha256", "synthetic", "generator")
SOFTWARE = f"cxr-utils {__version__} (cxr_utils.sample.export)"


# ----------------------------------------------------------------------------- reading a synthetic folder


def _png_to_gray(img: Any, path: Path) -> np.ndarray:
    """PIL image -> uint8 (H, W); colour is averaged over channels (as the generator's output is)."""
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.int64)
        hi = 65535 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255
        return np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
    if img.mode in ("LA", "1", "F"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    return np.clip(np.rint(rgb.mean(axis=-1)), 0, 255).astype(np.uint8)


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
                    a = _png_to_gray(im, p)
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
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- generating


def _load_generator(run_dir: Path, which: str | int | Path = "best") -> tuple[Any, Any]:
    """train.load_generator, imported lazily (TF is heavy); tests may replace this function."""
    from .train import load_generator

    return load_generator(run_dir, which)


def _generator_source(run_dir: Path, which: str | int | Path) -> tuple[Path, str]:
    """train.generator_source, imported lazily: (file, description) of the generator `which` names."""
    from .train import generator_source

    return generator_source(run_dir, which)


def latent_dim_of(generator: Any) -> int:
    """The noise length the generator expects (its first input)."""
    return int(generator.inputs[0].shape[-1])


def generate(generator: Any, noise: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the generator on (noise, labels) in batches -> uint8 (N, S, S)."""
    import keras

    noise = np.asarray(noise, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    out = []
    for i in range(0, len(noise), batch_size):
        y = generator([noise[i:i + batch_size], labels[i:i + batch_size]], training=False)
        out.append(to_uint8(keras.ops.convert_to_numpy(y)))
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.uint8)


def noise_for(seed: int, n: int, latent_dim: int) -> np.ndarray:
    """Standard-normal noise (n, latent_dim) that is a pure function of the seed."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def gallery(generator: Any, n_per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """n_per_class images per class -> uint8 (K, n, S, S); row k uses fresh noise per image."""
    z = noise_for(seed, num_classes * n_per_class, latent_dim_of(generator))
    labels = np.repeat(np.arange(num_classes), n_per_class)
    imgs = generate(generator, z, labels)
    return imgs.reshape(num_classes, n_per_class, *imgs.shape[1:])


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between noise vectors a and b at fractions t (keeps Gaussian-like norms)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:  # (anti)parallel vectors: the sphere formula divides by ~0, a straight line is exact enough
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def interpolation_strip(generator: Any, label: int, n_steps: int = 8, seed: int = 0) -> np.ndarray:
    """Same label, noise slerped between two random points -> uint8 (n_steps, S, S)."""
    z = noise_for(seed, 2, latent_dim_of(generator))
    path = slerp(z[0], z[1], np.linspace(0.0, 1.0, n_steps))
    return generate(generator, path, np.full(n_steps, label))


def class_swap(generator: Any, n: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Same n noise vectors rendered as every class -> uint8 (K, n, S, S): column j shares noise j."""
    z = noise_for(seed, n, latent_dim_of(generator))
    noise = np.tile(z, (num_classes, 1))
    labels = np.repeat(np.arange(num_classes), n)
    imgs = generate(generator, noise, labels)
    return imgs.reshape(num_classes, n, *imgs.shape[1:])


def load_run(run_dir: str | os.PathLike, hint: str = "run notebooks/02_train_cgan.ipynb (or `python -m cxr_utils train`) first",
             which: str | int = "best") -> tuple[Any, Any]:
    """(EMA generator named by `which`: best | last | epoch, GANConfig) of a finished run; a missing run is one clear
    UserError with `hint`."""
    run_dir = Path(run_dir)
    src, _ = _generator_source(run_dir, which)
    if not src.is_file():
        raise UserError(f"{run_dir}: no trained GAN here ({src.name} missing); {hint}")
    return _load_generator(run_dir, src)


def real_images(run_dir: str | os.PathLike, split: str = "train", source: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Real images of one split of the cache a run was trained on -> (images uint8 (N,S,S), labels, where from).

    The cache is the one named in the run's config.json (data.npz), so the memorization check compares against
    exactly what the GAN saw; if the run names none (or it moved), `data.prepare(source, size)` provides it.
    """
    from . import data
    from . import io as cio

    cfg_path = Path(run_dir) / "config.json"
    saved = cio.read_json(cfg_path) if cfg_path.is_file() else {}
    npz = (saved.get("data") or {}).get("npz")
    if not npz or not Path(npz).is_file():
        npz = data.prepare(source=source, size=int(saved.get("image_size", 64)), progress=False)
    images, labels = data.load(npz).subset(split)
    # with max_per_class the GAN saw a seeded subset of the train split; all of it is the stricter check
    return images, labels, f"{Path(npz).name} ({split} split, {len(labels)} images)"


def nearest_figure(synthetic: np.ndarray, syn_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                   class_names: Sequence[str], reference: float | None = None, title: str | None = None) -> Any:
    """Pairs (synthetic above, its nearest real training image below) with RMS distances: a memorization check."""
    from .metrics import nearest_real
    from .plots import _as_display, plt

    idx, dist = nearest_real(synthetic, real)
    n = len(synthetic)
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n + 1.4, 3.2), squeeze=False)
    for j in range(n):
        for i, (img, cap) in enumerate(((synthetic[j], f"syn {class_names[int(syn_labels[j])]}\nd={dist[j]:.3f}"),
                                        (real[idx[j]], f"real #{int(idx[j])}\n{class_names[int(real_labels[idx[j]])]}"))):
            ax = axes[i][j]
            ax.imshow(_as_display(img), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(cap, fontsize=7)
    axes[0][0].set_ylabel("synthetic", fontsize=9)
    axes[1][0].set_ylabel("nearest real\n(train)", fontsize=9)
    ref = f"; real-to-real nearest distance median {reference:.3f}" if reference is not None else ""
    fig.suptitle(title or f"Nearest real training image in pixel space (RMS distance, pixels in [0, 1]{ref})", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- export


def png_bytes(img: np.ndarray, text: dict[str, str]) -> bytes:
    """Encode a uint8 (S, S) image as an 8-bit grayscale PNG with the given tEXt chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="L").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


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


def export(run_dir: str | os.PathLike, n_per_class: int, out: str | os.PathLike, seed: int = 0,
           batch_size: int = 256, progress: bool | str = "auto", which: str | int = "best") -> Path:
    """Write n_per_class PNGs per class from the run's EMA generator (`which`: best | last | epoch) into
    OUT/<class>/ plus OUT/manifest.csv (its `generator` column says which one)."""
    run_dir = Path(run_dir)
    out = Path(out)
    if n_per_class < 1:
        raise UserError(f"--n-per-class: must be >= 1, got {n_per_class}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {batch_size}")
    if not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: folder not found; train a GAN first (`python -m cxr_utils train ...`)")
    src, described = _generator_source(run_dir, which)  # resolved once: the manifest names the file that was loaded
    if not src.is_file():
        raise UserError(f"--run-dir {run_dir}: no {src.name} in it; let the training finish (or resume it) first")
    run_name = run_dir.resolve().name
    _check_out(out, run_name)

    sha = file_digest(src)
    generator, cfg = _load_generator(run_dir, src)
    if file_digest(src) != sha:  # a trainer replaced it meanwhile (atomically): the hash must describe these weights
        raise UserError(f"{src}: replaced while it was being loaded (a trainer is still writing the run); export again")
    class_names = tuple(getattr(cfg, "class_names", CLASS_NAMES))
    latent = latent_dim_of(generator)
    n_total = n_per_class * len(class_names)
    # one seed -> all the noise; image i of class k always gets the same noise row, whatever the batch size
    noise = noise_for(seed, n_total, latent)
    labels = np.repeat(np.arange(len(class_names)), n_per_class)
    index_in_class = np.tile(np.arange(1, n_per_class + 1), len(class_names))

    rows: list[dict[str, str]] = []
    show = (sys.stderr.isatty() or "ipykernel" in sys.modules) if progress == "auto" else bool(progress)
    tqdm = _tqdm()
    stage: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
        for name in class_names:
            (stage / name).mkdir()
        with tqdm(total=n_total, desc=f"export {out.name}", unit="img", disable=not show) as bar:
            for i in range(0, n_total, batch_size):
                imgs = generate(generator, noise[i:i + batch_size], labels[i:i + batch_size], batch_size=batch_size)
                for j, img in enumerate(imgs):
                    k = int(labels[i + j])
                    rel = f"{class_names[k]}/syn-s{seed}-{int(index_in_class[i + j]):06d}.png"
                    text = {"Synthetic": "true", "Description": SYNTHETIC_TAG, "Software": SOFTWARE,
                            "Source-Run": run_name, "Generator-SHA256": sha, "Generator": described,
                            "Class": class_names[k], "Seed": str(seed)}
                    (stage / rel).write_bytes(png_bytes(img, text))
                    rows.append({"file": rel, "class": class_names[k], "label": str(k), "seed": str(seed),
                                 "run": run_name, "generator_sha256": sha, "synthetic": "true", "generator": described})
                bar.update(len(imgs))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        (stage / MANIFEST_NAME).write_text(buf.getvalue(), encoding="utf-8")
        _fsync_tree(stage)
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
    return out


def _tqdm() -> Any:
    """Notebook widget bar when ipywidgets is there, else the text bar (tqdm.auto would warn about it)."""
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a staged export before it becomes visible (one pass, not one fsync per write).

    A failed flush raises (the export is then discarded, never renamed into place as if whole).
    """
    for p in folder.rglob("*"):
        if p.is_file():
            fsync_file(p)


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
