"""Statistics over the VGG16 study's predictions: paired differences between two protocols on the same test images,
and the spread of a protocol across GAN runs beside its spread across classifier seeds.

Pure numpy/scipy on arrays of test labels and predicted probabilities (the results JSON holds both), so every number
can be recomputed and checked on constructed cases.

The paired interval (`paired_difference`) resamples the *test images*: each resample draws the same images for both
protocols, and the statistic is (seed-mean metric of A) - (seed-mean metric of B) on those images. Resampling is
stratified by class (NORMAL and PNEUMONIA test images are resampled separately, so every resample holds the test
split's 234 / 390): the test split's class counts are fixed by the data set, not sampled, and ROC AUC is defined in
every resample (an unstratified resample can lack a class, where AUC does not exist). The interval is scipy's BCa
(bias-corrected and accelerated, Efron 1987): second-order accurate where the percentile interval is first-order, and
differences of accuracy or AUC near the ceiling are skewed. Where BCa is undefined (a degenerate bootstrap
distribution, e.g. identical predictions), the percentile interval of the same resamples is used and named.

What the interval does NOT cover: the classifier seeds and the GAN runs are held fixed; their variation is reported
as spreads (`spread_across_folders`), a different source of variance.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import CLASS_NAMES

PAIRED_METRICS = ("accuracy", "roc_auc", "f1")
PAIRED_METHOD = ("paired bootstrap over the real test images, stratified by class ({n} resamples, scipy.stats.bootstrap "
                 "BCa; percentile where BCa is undefined): (seed-mean metric of the protocol) - (seed-mean metric of "
                 "trtr) on the same resampled images; classifier seeds and GAN runs held fixed")
BATCH = 200  # resamples per vectorised call: memory ~ BATCH x test images x 8 bytes per run


def _rng_kw(seed: int) -> dict[str, Any]:
    """scipy >= 1.15 takes `rng`; older releases (the project allows 1.11) call the same thing `random_state`."""
    from scipy.stats import bootstrap

    key = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


class _Runs:
    """The classifier runs of one protocol, prepared so that a resample of the test images, given as how many times
    each image was drawn (a multiplicity row), costs a few matrix products instead of a re-sort (ROC AUC)."""

    def __init__(self, y: np.ndarray, probs: np.ndarray, threshold: float, auc: bool):
        pred, pos = probs >= threshold, (y == 1)[None, :]
        self.terms = {k: v.astype(np.float64).T for k, v in  # each (n, runs)
                      (("correct", pred == pos), ("tp", pred & pos), ("fp", pred & ~pos), ("fn", ~pred & pos))}
        self.auc = auc
        if auc:
            self.pos, self.neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
            self.order, self.left, self.right = [], [], []
            for p in probs:  # per run: negatives sorted by score; where each positive's score falls among them
                o = self.neg[np.argsort(p[self.neg], kind="stable")]
                self.order.append(o)
                self.left.append(np.searchsorted(p[o], p[self.pos], "left"))
                self.right.append(np.searchsorted(p[o], p[self.pos], "right"))

    def metrics(self, c: np.ndarray) -> dict[str, np.ndarray]:
        """Accuracy, F1 and ROC AUC of every run on resamples c (B, n) of image multiplicities -> each (runs, B).

        AUC is the Mann-Whitney form, pairs of a drawn positive and a drawn negative weighted by their multiplicities
        and ties counted half: sklearn's roc_auc_score of the resampled images."""
        t = {k: (c @ v).T for k, v in self.terms.items()}
        den = 2 * t["tp"] + t["fp"] + t["fn"]
        out = {"accuracy": t["correct"] / c.sum(-1),
               "f1": np.where(den > 0, 2 * t["tp"] / np.maximum(den, 1e-300), 0.0)}  # 0 where undefined, as sklearn
        if self.auc:
            cp, n_pairs = c[:, self.pos], c[:, self.pos].sum(-1) * c[:, self.neg].sum(-1)
            rows = []
            for o, lo, hi in zip(self.order, self.left, self.right, strict=True):
                below = np.concatenate([np.zeros((len(c), 1)), np.cumsum(c[:, o], axis=-1)], axis=-1)  # negatives < s
                wins = below[:, lo] + 0.5 * (below[:, hi] - below[:, lo])
                rows.append((cp * wins).sum(-1) / n_pairs)
            out["roc_auc"] = np.stack(rows)
        return out


def _multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """Rows of drawn image indices (B, m) -> how often each of the n images was drawn (B, n)."""
    b = idx.shape[0]
    return np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def paired_difference(y_true: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                      threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, *, confidence: float = 0.95,
                      metrics: Sequence[str] = PAIRED_METRICS) -> dict[str, Any]:
    """(seed-mean metric of A) - (seed-mean metric of B) on the same test images, with a paired, class-stratified
    bootstrap interval (BCa). probs_a / probs_b: one probability vector per classifier run, aligned with y_true.

    Returns {"difference": {metric: d}, "ci95": {metric: [lo, hi] | None}, "a": {...}, "b": {...},
    "interval_method": {metric: "BCa" | "percentile" | "degenerate"}, ...}. AUC is None when the test split lacks a
    class; intervals are None when n_boot is 0 or no class has two test images to resample.
    Eight parameters as scipy.stats.bootstrap takes its own: the arrays, then the bootstrap's settings (the rarely
    changed confidence and metrics keyword-only).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    a = np.stack([np.asarray(p, np.float64).ravel() for p in probs_a])
    b = np.stack([np.asarray(p, np.float64).ravel() for p in probs_b])
    if a.shape[1] != len(y) or b.shape[1] != len(y):
        raise ValueError(f"paired_difference: {a.shape[1]} / {b.shape[1]} probabilities for {len(y)} test labels")
    strata = [np.flatnonzero(y == c) for c in (0, 1) if (y == c).any()]
    both = len(strata) == 2
    names = [k for k in metrics if k != "roc_auc" or both]
    ra, rb = _Runs(y, a, threshold, both), _Runs(y, b, threshold, both)

    def at(c: np.ndarray) -> np.ndarray:
        """(seed-mean A) - (seed-mean B) per metric for multiplicity rows c (B, n) -> (metrics, B)."""
        ma, mb = ra.metrics(c), rb.metrics(c)
        return np.stack([ma[k].mean(0) - mb[k].mean(0) for k in names])

    whole = np.ones((1, len(y)))
    ma, mb = ra.metrics(whole), rb.metrics(whole)
    point = dict(zip(names, at(whole)[:, 0], strict=True))
    res: dict[str, Any] = {
        "difference": {k: float(point[k]) if k in names else None for k in metrics},
        "ci95": {k: None for k in metrics}, "interval_method": {k: None for k in metrics},
        "a": {k: float(ma[k].mean()) if k in names else None for k in metrics},
        "b": {k: float(mb[k].mean()) if k in names else None for k in metrics},
        "n_boot": int(n_boot), "n_a": len(a), "n_b": len(b),
        "n_test": {name: int((y == c).sum()) for c, name in enumerate(CLASS_NAMES)},
    }
    resampled = [i for i, s in enumerate(strata) if len(s) >= 2]  # scipy needs two observations; one image is fixed
    if n_boot <= 0 or not resampled:
        return res

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        parts = list(strata)
        for i, s in zip(resampled, samples, strict=True):
            parts[i] = np.asarray(s).astype(np.intp)
        lead = np.broadcast_shapes(*(p.shape[:-1] for p in parts))
        idx = np.concatenate([np.broadcast_to(p, lead + p.shape[-1:]) for p in parts], axis=-1)
        flat = idx.reshape(-1, idx.shape[-1])
        return at(_multiplicities(flat, len(y))).reshape(len(names), *lead)

    data = tuple(strata[i] for i in resampled)
    for k, (ci, how) in zip(names, _intervals(statistic, data, len(names), n_boot, seed, confidence), strict=True):
        res["ci95"][k], res["interval_method"][k] = ci, how
    return res


def _intervals(statistic: Callable[..., np.ndarray], data: tuple[np.ndarray, ...], n_metrics: int, n_boot: int,
               seed: int, confidence: float) -> list[tuple[list[float], str]]:
    """Per metric, ([lo, hi], how) from n_boot resamples of `data` (the resampled strata's image indices): scipy's
    BCa, the percentile interval of the same resamples where BCa is undefined, the single value where every
    resample gives the same difference."""
    from scipy.stats import bootstrap

    kw = dict(batch=BATCH, vectorized=True, confidence_level=confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled below by the percentile fallback
        bca = bootstrap(data, statistic, method="BCa", n_resamples=int(n_boot), **kw, **_rng_kw(seed))
        pct = bootstrap(data, statistic, method="percentile", bootstrap_result=bca, n_resamples=0, **kw, **_rng_kw(seed))
    dist = np.atleast_2d(bca.bootstrap_distribution)
    out = []
    for j in range(n_metrics):
        lo, hi = np.atleast_1d(bca.confidence_interval.low)[j], np.atleast_1d(bca.confidence_interval.high)[j]
        how = "BCa"
        if np.ptp(dist[j]) == 0:  # every resample gives the same difference: that value is the interval
            lo = hi = dist[j][0]
            how = "degenerate"
        elif not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi = np.atleast_1d(pct.confidence_interval.low)[j], np.atleast_1d(pct.confidence_interval.high)[j]
            how = "percentile"
        out.append(([float(lo), float(hi)], how))
    return out


def excludes_zero(ci: Sequence[float] | None) -> bool | None:
    """True if a 95% interval lies entirely above or below 0 (None without an interval)."""
    return None if not ci else bool(ci[0] > 0 or ci[1] < 0)


def spread_across_folders(per_folder: Sequence[Sequence[float | None]]) -> dict[str, Any]:
    """Per-folder seed means, the spread across folders (std of those means, ddof 1) and the spread across classifier
    seeds (mean over folders of each folder's std over seeds, ddof 1) of one metric; per_folder[f] = that folder's
    per-seed values. None where a spread needs two folders / two seeds, or values are missing."""
    vals = [[float(v) for v in seeds if v is not None] for seeds in per_folder]
    means = [float(np.mean(v)) if v else None for v in vals]
    ok = [m for m in means if m is not None]
    within = [float(np.std(v, ddof=1)) for v in vals if len(v) > 1]
    return {"per_folder_mean": means, "mean": float(np.mean(ok)) if ok else None,
            "std_across_folders": float(np.std(ok, ddof=1)) if len(ok) > 1 else None,
            "std_across_seeds": float(np.mean(within)) if within and len(within) == len(vals) else None}
