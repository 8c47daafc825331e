"""The real-vs-real baseline of the quality scores: held-out real images scored as if they were synthetic.

A score means little without the value real images reach: real images cover only part of the other real images
(nearest-neighbour hits are not one-to-one), and a classifier of the real images is not always right. When the probe
is built, real images that the GAN never saw stand in for synthetic ones and go through exactly the code that scores
synthetic images (`QualityProbe.measure`); each stand-in set is disjoint from what it is compared with:

- scores against the training images (diversity, train coverage, fidelity): the stand-ins are held-out (val)
  images, m_c = min(n_per_class, val images of class c) per class;
- scores against the held-out reference (KID, PRDC): the stand-ins are training images, m_c = min(n_per_class,
  training images of class c) per class. (The probe's feature classifier was fit to the training images, so their
  features may sit a little farther from the reference than unseen images would: that baseline errs high.)

Diversity, train coverage and PRDC depend on how many images are scored (more images cover more), so a synthetic
score is compared with its baseline at the same count: the mean over disjoint chunks of m_c of the probe's
n_per_class synthetic images per class. When m_c = n_per_class (full scale: 128 of ~270 val NORMAL images) that is
simply the usual score. KID is unbiased, so it is compared at full count. Each ratio (`<score>_vs_real`, 1.0 = what
held-out real images reach) goes into every quality.csv row beside the absolute score; the baseline itself is stored
once per run in quality-baseline.json (read back on resume).

Fallback: without a held-out split, or with fewer than MIN_STAND_INS held-out images of a class, there are no
stand-ins; with fewer than MIN_FOR_BARS the ratios are recorded but are too coarse to judge by. Either way the file
and every row (`bars`) say why, and the collapse alarm and the learned bar use the fixed bars (cxr_utils.quality).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import io as cio

BASELINE_FILE = "quality-baseline.json"
FORMAT_VERSION = 1
MIN_STAND_INS = 2  # per class, for a baseline at all: one image has no spread and covers one training image
# per class, for the bars to be fractions of the baseline. Measured on real digits (tests/test_quality_baseline.py):
# with 2 held-out images per class, a generator that repeats 2 images per class reaches ~1.1x the real coverage at
# that count (2 real images cover no more than any 2 others), so the bar could not tell it from a perfect one; with
# 10, it scores ~0.2x and trips the alarm; with 50+ a generator that drops half of each class's modes scores ~0.5x
MIN_FOR_BARS = 10
TRAIN_SIDE = ("diversity", "train_coverage", "fidelity")  # measured against the training images
REFERENCE_SIDE = ("precision", "recall", "density", "coverage")  # measured against the held-out reference
VS_REAL_COLUMNS = tuple(f"{k}_vs_real" for k in (*TRAIN_SIDE, *REFERENCE_SIDE))
REAL_COLUMNS = ("kid_real", "kid_balanced_real")  # KID is a difference (~0 for real images): shown beside, not divided
SIDES = {"train": "against the training images", "reference": "against the held-out reference"}
REAL_BARS = "real baseline"  # a row's `bars` when the alarm and the learned bar are fractions of the baseline


def stand_in_indices(labels: np.ndarray, n_per_class: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """A seeded choice of min(n_per_class, available) images per class -> (indices grouped by class, count per class)."""
    y = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng([seed, 8191])
    idx, counts = [], []
    for c in range(num_classes):
        pool = np.flatnonzero(y == c)
        pick = rng.permutation(pool)[:min(n_per_class, len(pool))]
        idx.append(np.sort(pick))
        counts.append(int(len(pick)))
    return np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64), counts


def compute(probe: Any, x_held: np.ndarray | None, y_held: np.ndarray | None, x_train: np.ndarray,
            y_train: np.ndarray) -> dict[str, Any]:
    """The baseline of one probe: each side's stand-ins scored by probe.measure (see the module docstring)."""
    names = list(probe.class_names)
    k, n = len(names), probe.n_per_class
    out: dict[str, Any] = {
        "version": FORMAT_VERSION, "what": "real-vs-real baseline: held-out real images scored as if they were "
        "synthetic, with the code that scores synthetic images (cxr_utils.quality_baseline)",
        "class_names": names, "n_per_class": n, "seed": int(probe.seed), "reference": probe.reference,
        "sides": {}, "scores": {}, "fallback": None}
    if x_held is None or not len(x_held):
        out["fallback"] = ("no held-out split: the quality reference is the training images, so no real image is left to "
                           "stand in for a synthetic one")
        return out
    plan = {"train": (x_held, y_held, 0, "held-out val images", f"{len(probe.y_train)} training images"),
            "reference": (x_train, y_train, 1, "training images (disjoint from the reference)", probe.reference)}
    for side, (x, y, offset, what, against) in plan.items():
        idx, counts = stand_in_indices(y, n, k, probe.seed + offset)
        info: dict[str, Any] = {"stand_ins": what, "against": against, "per_class": dict(zip(names, counts, strict=True)),
                                "indices": idx.tolist()}
        short = [f"{m} {name} image{'s' if m != 1 else ''}" for name, m in zip(names, counts, strict=True) if m < MIN_STAND_INS]
        if short:
            info["missing"] = f"{' and '.join(short)} to stand in (fewer than {MIN_STAND_INS})"
        else:
            xs, ys = np.asarray(x)[idx], np.asarray(y).astype(np.int64)[idx]
            probs, feats = probe.predict(xs)
            out["scores"].update(probe.measure(xs, ys, probs, feats, sides=(side,)))
        out["sides"][side] = info
    train = out["sides"]["train"]
    few = [f"{m} {name}" for name, m in train["per_class"].items() if m < MIN_FOR_BARS]
    if "missing" in train:
        out["fallback"] = f"the held-out split has {train['missing']}"
    elif few:
        out["fallback"] = (f"only {' and '.join(few)} held-out images stand in, fewer than {MIN_FOR_BARS} per class: "
                           "too few for a calibrated bar (the ratios are recorded, the fixed bars judge)")
    if "kid" in out["scores"]:
        out["scores"]["kid_balanced"] = probe.balanced_kid(out["scores"])
    return out


def load_or_compute(path: Path | None, reuse: bool, probe: Any, x_held: np.ndarray | None, y_held: np.ndarray | None,
                    x_train: np.ndarray, y_train: np.ndarray) -> dict[str, Any]:
    """The run's baseline: read back from `path` when reuse (a resume with the same classifier) and it fits this
    probe, else computed and written there atomically (if a path is given)."""
    if reuse and path is not None and path.is_file():
        try:
            saved = cio.read_json(path)
        except (ValueError, OSError):  # a damaged file: recompute, it is a pure function of the data and the classifier
            saved = None
        if (isinstance(saved, dict) and saved.get("version") == FORMAT_VERSION and saved.get("n_per_class") ==
                probe.n_per_class and saved.get("class_names") == list(probe.class_names)):
            return saved
    base = compute(probe, x_held, y_held, x_train, y_train)
    if path is not None:
        cio.atomic_write_json(path, base)
    return base


def at_count(probe: Any, x: np.ndarray, ys: np.ndarray, probs: np.ndarray, feats: np.ndarray, counts: Sequence[int],
             side: str, full: dict[str, Any]) -> dict[str, Any]:
    """Scores of one side for synthetic images at `counts` images per class: the mean over disjoint chunks (the
    first m_c, the next m_c, ... of each class); `full` (the usual row) when every class has exactly m_c images."""
    per_class = [np.flatnonzero(np.asarray(ys) == c) for c in range(len(counts))]
    if all(len(i) == m for i, m in zip(per_class, counts, strict=True)):
        return full
    chunks = min(len(i) // m for i, m in zip(per_class, counts, strict=True))
    rows = []
    for j in range(chunks):
        sel = np.concatenate([i[j * m:(j + 1) * m] for i, m in zip(per_class, counts, strict=True)])
        rows.append(probe.measure(x[sel], ys[sel], probs[sel], feats[sel], sides=(side,)))
    keys = {key for r in rows for key in r}
    return {key: _mean([r.get(key) for r in rows]) for key in keys}


def vs_real(probe: Any, x: np.ndarray, ys: np.ndarray, probs: np.ndarray, feats: np.ndarray,
            row: dict[str, Any]) -> dict[str, Any]:
    """The quality.csv columns that set a synthetic row beside the baseline: `<score>_vs_real` (the score at the
    baseline's count / the baseline), kid_real, kid_balanced_real and `bars` (which bars judge the row, and why)."""
    base = probe.baseline or {}
    cols: dict[str, Any] = dict.fromkeys((*VS_REAL_COLUMNS, *REAL_COLUMNS))
    scores = base.get("scores") or {}
    for side, keys in (("train", TRAIN_SIDE), ("reference", REFERENCE_SIDE)):
        info = (base.get("sides") or {}).get(side)
        if not info or "missing" in info:
            continue
        at = at_count(probe, x, ys, probs, feats, list(info["per_class"].values()), side, row)
        for key in keys:
            v, b = finite(at.get(key)), finite(scores.get(key))
            cols[f"{key}_vs_real"] = v / b if v is not None and b is not None and b > 0 else None
    cols["kid_real"], cols["kid_balanced_real"] = finite(scores.get("kid")), finite(scores.get("kid_balanced"))
    cols["bars"] = bars_label(base)
    return cols


def bars_label(base: dict[str, Any] | None) -> str:
    """'real baseline' when the bars are fractions of it, else 'fixed: <why>'."""
    if not base:
        return "fixed: no real-vs-real baseline was measured"
    if base.get("fallback"):
        return f"fixed: {base['fallback']}"
    return REAL_BARS


def describe(base: dict[str, Any] | None) -> str:
    """One line for a person: what the baseline is made of and what real images reach, or why there is none."""
    if not base:
        return "no real-vs-real baseline in this run (it predates them); the quality bars are the fixed ones"
    s = base.get("scores") or {}
    parts = []
    for side in ("train", "reference"):
        info = (base.get("sides") or {}).get(side)
        if not info:
            continue
        counts = " + ".join(f"{m} {n}" for n, m in info["per_class"].items())
        if "missing" in info:
            parts.append(f"{SIDES[side]}: none ({info['missing']})")
            continue
        if side == "train":
            got = (f"diversity {_fmt(s.get('diversity'))}, {s.get('train_covered')} of {s.get('train_images')} training "
                   f"images covered, fidelity {_fmt(s.get('fidelity'))}")
        else:
            got = (f"KID {_fmt(s.get('kid'), 4)} (class-balanced {_fmt(s.get('kid_balanced'), 4)}), coverage "
                   f"{_fmt(s.get('coverage'))}")
        parts.append(f"{info['stand_ins']} ({counts}) {SIDES[side]}: {got}")
    head = "real-vs-real baseline (quality-baseline.json): " + "; ".join(parts) if parts else "real-vs-real baseline: none"
    return head + (f". Fallback to the fixed bars: {base['fallback']}" if base.get("fallback") else "")


def finite(v: Any) -> float | None:
    """A number read from a row (float, numpy scalar or CSV string) as a finite float; None if empty, nan or inf."""
    if v is None or v == "":
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _mean(vals: list[Any]) -> float | None:
    got = [f for f in (finite(v) if not isinstance(v, str) else None for v in vals) if f is not None]
    return float(np.mean(got)) if got else None


def _fmt(v: Any, digits: int = 2) -> str:
    f = finite(v)
    return "n/a" if f is None else f"{f:.{digits}f}"
