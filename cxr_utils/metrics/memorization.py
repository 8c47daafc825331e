"""Memorization: how close synthetic images come to training images, against how close unseen real ones come.

`memorization` works in any feature space; `nearest_real`, `pixel_memorization` and `real_to_real_nn` in pixel space
(RMS distance, pixels in [0, 1]), where 0 is a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError
from .neighbors import nearest


def memorization(train_feats: np.ndarray, synth_feats: np.ndarray, test_feats: np.ndarray,
                 percentile: float = 5.0, n_pairs: int = 8) -> dict[str, Any]:
    """Nearest-training-image distances of synthetic images against those of held-out real test images.

    A synthetic image closer to a training image than the `percentile`-th test-to-train distance is suspicious:
    real unseen images are rarely that close. Returns the suspicious fraction and the closest pairs.
    """
    syn_idx, syn_nn = nearest(synth_feats, train_feats)
    _, test_nn = nearest(test_feats, train_feats)
    threshold = float(np.percentile(test_nn, percentile))
    order = np.argsort(syn_nn, kind="stable")[:n_pairs]
    return {
        "threshold": threshold,
        "percentile": float(percentile),
        "fraction_below_threshold": float((syn_nn < threshold).mean()),
        "synth_to_train_median": float(np.median(syn_nn)),
        "test_to_train_median": float(np.median(test_nn)),
        "median_ratio": float(np.median(syn_nn) / np.median(test_nn)) if np.median(test_nn) > 0 else float("inf"),
        "closest_pairs": [{"synthetic": int(i), "train": int(syn_idx[i]), "distance": float(syn_nn[i])} for i in order],
        "n_synthetic": int(len(syn_nn)),
        "n_test": int(len(test_nn)),
    }


def _pixel_rows(images: np.ndarray) -> np.ndarray:
    """uint8 images -> (N, P) float64 rows with pixels in [0, 1]."""
    return np.asarray(images, np.float64).reshape(len(images), -1) / 255.0


def nearest_real(synthetic: np.ndarray, real: np.ndarray, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic image its nearest real image in pixel space -> (indices, RMS distances in [0, 1] units).

    The distance is the root-mean-square pixel difference with pixels scaled to [0, 1], so 0 means a
    copy and ~0.1 is a visibly different image of the same kind.
    """
    s, r = _pixel_rows(synthetic), _pixel_rows(real)
    if s.shape[1] != r.shape[1]:
        raise UserError(f"nearest_real: synthetic images have {s.shape[1]} pixels, real ones {r.shape[1]}; use the same size")
    idx, dist = nearest(s, r, chunk=chunk)
    return idx, dist / np.sqrt(s.shape[1])


def pixel_memorization(train: np.ndarray, synthetic: np.ndarray, held_out: np.ndarray) -> dict[str, Any]:
    """metrics.memorization in pixel space, scaled so that distances are the RMS distances of nearest_real."""
    def rms_space(x: np.ndarray) -> np.ndarray:
        return _pixel_rows(x) / np.sqrt(np.asarray(x[0]).size)

    return memorization(rms_space(train), rms_space(synthetic), rms_space(held_out))


def real_to_real_nn(real: np.ndarray) -> np.ndarray:
    """Each real image's RMS distance to its nearest *other* real image: the scale for nearest_real's numbers."""
    r = _pixel_rows(real)
    return nearest(r, r, exclude_self=True)[1] / np.sqrt(r.shape[1])
