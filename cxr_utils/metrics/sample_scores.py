"""Pixel scores of labelled synthetic images against real ones: within-class diversity and train coverage."""

from __future__ import annotations

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def diversity(x_syn: np.ndarray, y_syn: np.ndarray, x_real: np.ndarray, y_real: np.ndarray,
              num_classes: int) -> list[float | None]:
    """Per class: mean per-pixel std of the synthetic images / that of the real images (None if either lacks 2)."""
    xs, xr = _flat(x_syn), _flat(x_real)
    ys, yr = np.asarray(y_syn), np.asarray(y_real)
    out: list[float | None] = []
    for c in range(num_classes):
        s, r = xs[ys == c], xr[yr == c]
        if len(s) < 2 or len(r) < 2:
            out.append(None)
            continue
        real_spread = r.std(axis=0).mean()
        out.append(float(s.std(axis=0).mean() / real_spread) if real_spread > 0 else None)
    return out


def train_coverage(x_syn: np.ndarray, y_syn: np.ndarray, x_train: np.ndarray, y_train: np.ndarray,
                   num_classes: int) -> tuple[list[int], list[int]]:
    """Per class: (training images that are some same-class synthetic image's nearest neighbour, training images)."""
    from .memorization import nearest_real

    ys, yt = np.asarray(y_syn), np.asarray(y_train)
    covered, total = [], []
    for c in range(num_classes):
        ti = np.flatnonzero(yt == c)
        total.append(int(len(ti)))
        s = np.asarray(x_syn)[ys == c]
        if not len(ti) or not len(s):
            covered.append(0)
            continue
        idx, _ = nearest_real(s, np.asarray(x_train)[ti])
        covered.append(int(len(np.unique(idx))))
    return covered, total
