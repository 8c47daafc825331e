"""Label fidelity: how often a classifier trained on real images agrees with the label the generator was asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import CLASS_NAMES


def label_fidelity(probs_or_preds: np.ndarray, generator_labels: np.ndarray,
                   class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """How often a classifier trained on real images agrees with the label the generator was asked for.

    Accepts class predictions (N,) int, probabilities (N, C), or positive-class probabilities (N,) float.
    """
    p = np.asarray(probs_or_preds)
    labels = np.asarray(generator_labels).astype(np.int64).ravel()
    if p.ndim == 2:
        preds = p.argmax(axis=1)
    elif np.issubdtype(p.dtype, np.floating):
        preds = (p >= 0.5).astype(np.int64)
    else:
        preds = p.astype(np.int64)
    if len(preds) != len(labels):
        raise ValueError(f"label_fidelity: {len(preds)} predictions for {len(labels)} labels")
    agree = preds == labels
    per_class = {name: (float(agree[labels == c].mean()) if (labels == c).any() else None)
                 for c, name in enumerate(class_names)}
    return {"overall": float(agree.mean()) if len(agree) else None, "per_class": per_class, "n": int(len(agree))}
