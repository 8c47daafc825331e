"""A trained generator's images held against the real ones: what notebook 03 shows, as plain functions.

The real-beside-synthetic gallery rows, the class-swap pixel difference, the nearest-real-neighbour figure, the
pixel-space memorization check and its table, and how many images per class an export writes. Generation lives in
cxr_utils.gan.generate, the distances in cxr_utils.metrics.memorization; this module only puts them together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..gan import generate, runs
from ..metrics import memorization
from . import charts, synthetic

MIN_EXPORT = 16  # images per class an export writes at least, however small the real training split
EXPORT_RATIO = 2.0  # notebook 03 exports 2 x real per class: enough for notebook 04's sweep 0 / 0.5 / 1 / 2


def real_vs_synthetic_rows(real_x: np.ndarray, real_y: np.ndarray, synthetic: np.ndarray, class_names: Sequence[str],
                           n: int) -> tuple[list[np.ndarray], list[str]]:
    """Gallery rows (real training images of class k, then the SYNTHETIC row k of a generate.gallery) and their titles."""
    rows: list[np.ndarray] = []
    titles: list[str] = []
    for k, c in enumerate(class_names):
        rows += [real_x[real_y == k][:n], synthetic[k]]
        titles += [f"real {c}\n(train)", f"SYNTHETIC\n{c}"]
    return rows, titles


def class_swap_difference(swap: np.ndarray) -> np.ndarray:
    """Mean |pixel difference| (0-255) per column between the first and the last class of a generate.class_swap."""
    return np.abs(swap[0].astype(int) - swap[-1].astype(int)).mean(axis=(1, 2))


def held_out_images(run_dir: str | os.PathLike, source: str = "auto") -> tuple[np.ndarray, str]:
    """The real val and test images of a run's cache, together (the GAN never saw them), and where they came from."""
    held = [runs.real_images(run_dir, s, source=source) for s in ("val", "test")]
    return np.concatenate([h[0] for h in held]), ", ".join(h[2] for h in held)


def nearest_real_figure(generator: Any, real_x: np.ndarray, real_y: np.ndarray, class_names: Sequence[str],
                        n_per_class: int, seed: int = 0) -> Any:
    """Fresh synthetic images of every class above their nearest real training images, with the real-to-real scale."""
    k = len(class_names)
    pairs = generate.gallery(generator, n_per_class, k, seed=seed)
    ref = float(np.median(memorization.real_to_real_nn(real_x))) if len(real_x) > 1 else None
    return charts.nearest_figure(pairs.reshape(-1, *pairs.shape[2:]), np.repeat(np.arange(k), n_per_class), real_x,
                                 real_y, class_names, reference=ref)


def memorization_check(generator: Any, num_classes: int, train_x: np.ndarray, held_x: np.ndarray, n_per_class: int,
                       seed: int = 0) -> dict[str, Any]:
    """memorization.pixel_memorization of n_per_class fresh synthetic images per class against the training images, with
    the held-out real images as the yardstick."""
    syn = generate.gallery(generator, n_per_class, num_classes, seed=seed)
    return memorization.pixel_memorization(train_x, syn.reshape(num_classes * n_per_class, *train_x.shape[1:]), held_x)


def memorization_table(memo: dict[str, Any]) -> Any:
    """pandas table of a pixel_memorization result: median nearest distance and image count, synthetic vs held-out."""
    import pandas as pd

    return pd.DataFrame({
        "synthetic -> train": [memo["synth_to_train_median"], memo["n_synthetic"]],
        "held-out real -> train": [memo["test_to_train_median"], memo["n_test"]],
    }, index=["median nearest distance (RMS, pixels in [0, 1])", "images"])


def export_size(n_per_class: int | None, real_labels: np.ndarray, num_classes: int,
                ratio: float = EXPORT_RATIO) -> list[int]:
    """Images per class to export, in class order: n_per_class for every class if given, else `ratio` x that class's
    real training images (at least MIN_EXPORT), so notebook 04 can take, per class, any synthetic ratio up to `ratio`
    of the real images (synthetic.per_class_for_ratio, the rule notebook 04 applies)."""
    if n_per_class:
        return [int(n_per_class)] * num_classes
    real = np.bincount(np.asarray(real_labels, np.int64), minlength=num_classes)[:num_classes]
    return [max(MIN_EXPORT, n) for n in synthetic.per_class_for_ratio(real.tolist(), ratio)]
