"""Classification metrics of a binary classifier (positive class PNEUMONIA = 1): counts, metrics, threshold, CI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

HEADLINE = ("accuracy", "precision", "recall", "f1")


METRICS = (*HEADLINE, "roc_auc")


COUNTS = ("tn", "fp", "fn", "tp")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """tn, fp, fn, tp with PNEUMONIA (1) as the positive class."""
    t, p = np.asarray(y_true).astype(np.int64).ravel(), np.asarray(y_pred).astype(np.int64).ravel()
    return {"tn": int(((t == 0) & (p == 0)).sum()), "fp": int(((t == 0) & (p == 1)).sum()),
            "fn": int(((t == 1) & (p == 0)).sum()), "tp": int(((t == 1) & (p == 1)).sum())}


def metrics_from_counts(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (fractions) implied by confusion counts; 0 where undefined (as sklearn)."""
    n = tn + fp + fn + tp
    return {"accuracy": (tp + tn) / n if n else 0.0, "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0}


def counts_consistent(entry: dict[str, Any], tol: float = 1e-9) -> bool:
    """True if the entry's accuracy/precision/recall/F1 are exactly those implied by its tn/fp/fn/tp."""
    implied = metrics_from_counts(*(int(entry[k]) for k in COUNTS))
    return all(abs(float(entry[k]) - implied[k]) <= tol for k in HEADLINE)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Counts, the four headline metrics implied by them, and ROC AUC (None if test holds one class only)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, np.float64).ravel()
    counts = confusion_counts(y, (p >= threshold).astype(np.int64))
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {**metrics_from_counts(**counts), "roc_auc": auc, **counts}


def tune_threshold(y_val: np.ndarray, probs_val: np.ndarray, default: float = 0.5) -> float:
    """The decision threshold with the highest balanced accuracy (Youden's J) on the real val split.

    Candidates are midpoints between sorted distinct probabilities (plus the default); ties go to the candidate
    nearest `default`. A val split with one class only cannot rank, so the default is returned.
    """
    y = np.asarray(y_val).astype(np.int64).ravel()
    p = np.asarray(probs_val, np.float64).ravel()
    if len(np.unique(y)) < 2:
        return float(default)
    u = np.unique(p)
    cands = np.unique(np.concatenate([[default], (u[1:] + u[:-1]) / 2.0, [u[0] - 1e-6, u[-1] + 1e-6]]))
    pos, neg = y == 1, y == 0
    tpr = ((p[None, :] >= cands[:, None]) & pos[None, :]).sum(1) / pos.sum()
    tnr = ((p[None, :] < cands[:, None]) & neg[None, :]).sum(1) / neg.sum()
    j = tpr + tnr
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(cands[best[np.argmin(np.abs(cands[best] - default))]])


def bootstrap_ci(y_true: np.ndarray, probs_per_seed: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
                 threshold: float = 0.5) -> dict[str, list[float] | None]:
    """95% percentile interval of the seed-mean metrics, resampling test images with replacement."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(np.int64).ravel()
    if n_boot <= 0 or len(y) == 0:
        return {k: None for k in METRICS}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in METRICS}
    preds = [(np.asarray(p).ravel() >= threshold).astype(np.int64) for p in probs_per_seed]
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        per = [metrics_from_counts(**confusion_counts(yb, pr[idx])) for pr in preds]
        for k in HEADLINE:
            draws[k].append(float(np.mean([d[k] for d in per])))
        if len(np.unique(yb)) == 2:
            draws["roc_auc"].append(float(np.mean([roc_auc_score(yb, np.asarray(p).ravel()[idx]) for p in probs_per_seed])))
    return {k: ([float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None) for k, v in draws.items()}
