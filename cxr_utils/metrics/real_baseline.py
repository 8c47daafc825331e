"""The real-vs-real baseline of the quality scores: held-out real images scored as if they were synthetic.

A score means little without the value real images reach: real images cover only part of the other real images
(nearest-neighbour hits are not one-to-one), and a classifier of the real images is not always right. When the probe
is built, real images that the GAN never saw stand in for synthetic ones and go through exactly the code that scores
synthetic images (`QualityProbe.measure`); each stand-in set is disjoint from what it is compared with:

- scores against the training images (diversity, train coverage, fidelity): the stand-ins are held-out (val)
  images, m_c = min(n_per_class, val images of class c) per class;
- scores against the held-out reference (KID, PRDC): the val split is cut in two per class (a seeded choice):
  m_c = min(n_per_class, half of class c) stand-ins against the rest as the reference. Training images would be
  disjoint from the reference too, but the features are those of a classifier fit to the training images, and they
  are not like unseen images there: on the sample (a run of the default recipe), the training NORMAL images' features
  sat farther from the val images than the synthetic ones did (KID about 4 against 0.3), a baseline no generator
  could fail to beat. The
  synthetic images' scores compared with this baseline are measured against the same half (KID, which is unbiased
  whatever the set sizes, against the whole val split).

Diversity, train coverage and PRDC depend on how many images are scored (more images cover more), so a synthetic
score is compared with its baseline at the same count: the mean over disjoint chunks of m_c of the probe's
n_per_class synthetic images per class. When m_c = n_per_class (full scale: 128 of ~260 val NORMAL images) that is
one chunk: the usual score (against the reference half, for PRDC). KID is compared at full count. Each ratio
(`<score>_vs_real`, 1.0 = what held-out real images reach; the two artefact scores, hf_share_vs_real and
stripe_vs_real, divide by the training images' instead: artefact_reference) goes into every quality.csv row beside the
absolute score;
the baseline itself is stored once per run in quality-baseline.json (read back on resume).

Fallback: without a held-out split, or with fewer than MIN_STAND_INS held-out images of a class (2 MIN_STAND_INS for
the reference side, which needs a reference besides), there are no stand-ins; with fewer than MIN_FOR_BARS the ratios
are recorded but are too coarse to judge by. Either way the file
and every row (`bars`) say why, and the collapse alarm and the learned bar use the fixed bars (cxr_utils.gan.tracker).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import files as cio

FORMAT_VERSION = 4  # 2: the train side holds hf_share (the artefact score); 3: the artefact reference (the training
# images' hf_share, `artefact`); 4: the stripe score's reference (their axis spectrum); an earlier file is measured again
MIN_STAND_INS = 2  # per class, for a baseline at all: one image has no spread and covers one training image
# per class, for the bars to be fractions of the baseline. Measured on real digits (benchmarks/quality_bars.py,
# tests/test_quality_baseline.py): with 2 held-out images per class, a generator that repeats 2 images per class
# reaches about 1.0x the real coverage at that count (2 real images cover no more than any 2 others), so no bar could
# tell it from a perfect one; with 10, it scores about 0.2x and trips the alarm (a generator that keeps only half of
# each class's variety still passes); with 55, that one scores about 0.55x and fails the learned bar
MIN_FOR_BARS = 10
# measured on the train side's stand-ins; hf_share (the artefact score) compares with nothing: its ratio divides by the
# training images' value (artefact_reference), so hf_share_vs_real > 1 is more high-frequency energy than the real X-rays
# G learns from (a checkerboard), and the stand-ins' own ratio is what unseen real images reach
TRAIN_SIDE = ("diversity", "train_coverage", "fidelity", "hf_share")
REFERENCE_SIDE = ("precision", "recall", "density", "coverage")  # measured against the held-out reference
# stripe_vs_real: the second artefact score (metrics.artefacts.stripe_ratio), a ratio to the training images by definition
VS_REAL_COLUMNS = (*(f"{k}_vs_real" for k in (*TRAIN_SIDE, *REFERENCE_SIDE)), "stripe_vs_real")
REAL_COLUMNS = ("kid_real", "kid_balanced_real")  # KID is a difference (~0 for real images): shown beside, not divided
SIDES = {"train": "against the training images", "reference": "against the held-out reference"}
REAL_BARS = "real baseline"  # a row's `bars` when the alarm and the learned bar are fractions of the baseline


def stand_in_indices(labels: np.ndarray, n_per_class: int, num_classes: int, seed: int,
                     halve: bool = False) -> tuple[np.ndarray, list[int], np.ndarray]:
    """A seeded choice of min(n_per_class, available) images per class (halve: of half the class) -> (stand-in indices
    grouped by class, count per class, the class's other indices: the reference of a halved split)."""
    y = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng([seed, 8191])
    idx, counts, rest = [], [], []
    for c in range(num_classes):
        pool = rng.permutation(np.flatnonzero(y == c))
        m = min(n_per_class, len(pool) // 2 if halve else len(pool))
        idx.append(np.sort(pool[:m]))
        rest.append(np.sort(pool[m:]))
        counts.append(int(m))
    return np.concatenate(idx).astype(np.int64), counts, np.concatenate(rest).astype(np.int64)


def compute(probe: Any, x_held: np.ndarray | None, y_held: np.ndarray | None) -> dict[str, Any]:
    """The baseline of one probe: each side's held-out stand-ins scored by probe.measure (see the module docstring).
    x_held / y_held: the held-out split whose features are probe.ref_feats (None: there is none)."""
    names = list(probe.class_names)
    k, n = len(names), probe.n_per_class
    out: dict[str, Any] = {
        "version": FORMAT_VERSION, "what": "real-vs-real baseline: held-out real images scored as if they were "
        "synthetic, with the code that scores synthetic images (cxr_utils.metrics.real_baseline)",
        "class_names": names, "n_per_class": n, "seed": int(probe.seed), "reference": probe.reference,
        "sides": {}, "scores": {}, "fallback": None}
    out["artefact"] = artefact_reference(probe)
    if x_held is None or not len(x_held):
        out["fallback"] = ("no held-out split: the quality reference is the training images, so no real image is left to "
                           "stand in for a synthetic one")
        return out
    y_held = np.asarray(y_held).astype(np.int64)
    stand_ins = None  # the train side's held-out stand-ins (x, y): the stripe score's calibration
    for side, offset, halve in (("train", 0, False), ("reference", 1, True)):
        idx, counts, rest = stand_in_indices(y_held, n, k, probe.seed + offset, halve)
        per_class = dict(zip(names, counts, strict=True))
        info: dict[str, Any] = {"stand_ins": "held-out val images", "per_class": per_class, "indices": idx.tolist()}
        if side == "train":
            info["against"] = f"{len(probe.y_train)} training images"
        else:
            info["against"] = "the other val images of each class"
            info["reference_indices"] = rest.tolist()
            info["reference_per_class"] = {nm: int((y_held[rest] == c).sum()) for c, nm in enumerate(names)}
        short = [f"{nm} ({(y_held == c).sum()} image{'s' if (y_held == c).sum() != 1 else ''})" for c, nm in
                 enumerate(names) if counts[c] < MIN_STAND_INS]
        if short:
            need = 2 * MIN_STAND_INS if halve else MIN_STAND_INS
            info["missing"] = (f"too few held-out images of {' and '.join(short)}: fewer than {need} per class"
                               + (" to split into stand-ins and a reference" if halve else " to stand in"))
        else:
            xs, ys = np.asarray(x_held)[idx], y_held[idx]
            stand_ins = (xs, ys) if side == "train" else stand_ins
            probs, feats = probe.predict(xs)
            ref = (probe.ref_feats[rest], probe.y_ref[rest]) if halve else None
            with one_blas_thread():  # as score_images scores synthetic images
                out["scores"].update(probe.measure(xs, ys, probs, feats, sides=(side,), ref=ref))
        out["sides"][side] = info
    train = out["sides"]["train"]
    few = [f"{m} {name}" for name, m in train["per_class"].items() if m < MIN_FOR_BARS]
    if "missing" in train:
        out["fallback"] = train["missing"]
    elif few:
        out["fallback"] = (f"only {' and '.join(few)} held-out images, fewer than {MIN_FOR_BARS} per class: too few "
                           "to judge by (the ratios are recorded)")
    if "kid" in out["scores"]:
        out["scores"]["kid_balanced"] = probe.balanced_kid(out["scores"])
    hf, ref = finite(out["scores"].get("hf_share")), out["artefact"]["hf_share"]
    # the calibration of the artefact bar: what held-out real images score against the training images
    out["artefact"]["held_out_vs_train"] = hf / ref if hf is not None and ref else None
    if stand_ins is not None:  # at the stand-ins' count (stand_in_count: a small set scores higher on a maximum)
        out["artefact"]["stripe_held_out_vs_train"] = stripe_vs_real(out["artefact"], *stand_ins, k)
    return out


def stripe_vs_real(artefact: dict[str, Any], x: np.ndarray, ys: np.ndarray, num_classes: int) -> float | None:
    """The stripe score (metrics.artefacts.stripe_ratio) of labelled images against the reference's axis spectrum
    (artefact_reference): the class-balanced axis spectra of both, the strongest row or column frequency's ratio."""
    from .artefacts import balanced_axis_spectrum, stripe_ratio

    ref = artefact.get("axis_spectrum")
    if ref is None or not len(ys):
        return None
    return stripe_ratio(balanced_axis_spectrum(x, ys, num_classes), ref)


def artefact_reference(probe: Any) -> dict[str, Any]:
    """The real value the artefact score (hf_share) is divided by: the class-balanced mean high-frequency share of the
    probe's training images (the images G learns to draw; per class too).

    Why the training images and not the held-out stand-ins the other ratios use: diversity and coverage are measured
    against the training images, so only images the GAN never saw can show what a real image reaches there; hf_share
    compares with nothing, so every real image is a fair reference, and the training images are many more (the
    sample: 10 against 4 held-out images, whose mean moved by 16 % (val) and 19 % (test) from the training images';
    per class up to 2.3x between the 2 test and 2 val PNEUMONIA images). The held-out images' own ratio to this
    reference is the bar's calibration (`held_out_vs_train`).
    The stripe score (stripe_vs_real) likewise divides by the training images' class-balanced axis spectrum
    (`axis_spectrum`, metrics.artefacts.axis_spectrum: [horizontal, vertical] x frequency); the held-out stand-ins' own
    stripe score is its calibration (`stripe_held_out_vs_train`)."""
    from .artefacts import balanced_axis_spectrum, balanced_share

    x, y = np.asarray(probe.x_train), np.asarray(probe.y_train)
    hf, per = balanced_share(x, y, probe.class_names)
    spec = balanced_axis_spectrum(x, y, len(probe.class_names))
    return {"what": "class-balanced mean high-frequency share of the probe's training images (metrics."
                    "high_frequency_share) and their class-balanced axis spectrum (metrics.axis_spectrum)",
            "hf_share": hf, "per_class": per, "images": int(len(y)), "held_out_vs_train": None,
            "axis_spectrum": None if spec is None else spec.tolist(), "stripe_held_out_vs_train": None}


def load_or_compute(path: Path | None, reuse: bool, probe: Any, x_held: np.ndarray | None,
                    y_held: np.ndarray | None) -> dict[str, Any]:
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
    base = compute(probe, x_held, y_held)
    if path is not None:
        cio.atomic_write_json(path, base)
    return base


def at_count(probe: Any, x: np.ndarray, ys: np.ndarray, probs: np.ndarray, feats: np.ndarray, side: str,
             info: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """Scores of one side for synthetic images at the baseline's count per class (info: the side's entry of the
    baseline): the mean over disjoint chunks (the first m_c, the next m_c, ... of each class), against the same
    reference as the stand-ins; `full` (the usual row) when that is one chunk against the usual reference."""
    counts = list(info["per_class"].values())
    ref = None
    if "reference_indices" in info:
        rest = np.asarray(info["reference_indices"], np.int64)
        ref = (probe.ref_feats[rest], probe.y_ref[rest])
    per_class = [np.flatnonzero(np.asarray(ys) == c) for c in range(len(counts))]
    if ref is None and all(len(i) == m for i, m in zip(per_class, counts, strict=True)):
        return full
    chunks = min(len(i) // m for i, m in zip(per_class, counts, strict=True))
    rows = []
    for j in range(chunks):
        sel = np.concatenate([i[j * m:(j + 1) * m] for i, m in zip(per_class, counts, strict=True)])
        rows.append(probe.measure(x[sel], ys[sel], probs[sel], feats[sel], sides=(side,), ref=ref, kid=False))
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
        at = at_count(probe, x, ys, probs, feats, side, info, row)
        for key in (k for k in keys if k != "hf_share"):  # hf_share: its own reference, below
            v, b = finite(at.get(key)), finite(scores.get(key))
            cols[f"{key}_vs_real"] = v / b if v is not None and b is not None and b > 0 else None
    # the artefact score against the training images (artefact_reference), with or without held-out stand-ins
    v, b = finite(row.get("hf_share")), finite((base.get("artefact") or {}).get("hf_share"))
    cols["hf_share_vs_real"] = v / b if v is not None and b is not None and b > 0 else None
    cols["stripe_vs_real"] = stripe_vs_real(base.get("artefact") or {}, x, ys, len(probe.class_names))
    cols["kid_real"], cols["kid_balanced_real"] = finite(scores.get("kid")), finite(scores.get("kid_balanced"))
    cols["bars"] = bars_label(base)
    return cols


def stand_in_count(base: dict[str, Any] | None) -> int | None:
    """How many held-out images stood in on the train side (what the stripe calibration is taken over), or None."""
    info = ((base or {}).get("sides") or {}).get("train") or {}
    return None if not info.get("per_class") or "missing" in info else int(sum(info["per_class"].values()))


def probe_count_text(base: dict[str, Any]) -> str:
    """How many synthetic images a row's stripe score is taken over (said beside the held-out images' count)."""
    n, k = base.get("n_per_class"), len(base.get("class_names") or [])
    return f"{n * k} images" if n and k else "the probe's images"


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
                   f"images covered, fidelity {_fmt(s.get('fidelity'))}, high-frequency share {_fmt(s.get('hf_share'), 4)}")
        else:
            got = (f"KID {_fmt(s.get('kid'), 4)} (class-balanced {_fmt(s.get('kid_balanced'), 4)}), coverage "
                   f"{_fmt(s.get('coverage'))}")
        ref = info.get("reference_per_class")
        against = f" ({' + '.join(f'{m} {n}' for n, m in ref.items())} other val images)" if ref else ""
        parts.append(f"{info['stand_ins']} ({counts}) {SIDES[side]}{against}: {got}")
    art = base.get("artefact") or {}
    if finite(art.get("hf_share")) is not None:
        cal = finite(art.get("held_out_vs_train"))
        parts.append(f"artefact score against the {art.get('images')} training images' high-frequency share "
                     f"{_fmt(art['hf_share'], 4)}" + (f" (held-out real images: {cal:.2f}x)" if cal is not None else ""))
        st = finite(art.get("stripe_held_out_vs_train"))
        if st is not None:
            n_st = stand_in_count(base)
            parts.append(f"stripe score of {n_st or 'the'} held-out real images against the training images' axis "
                         f"spectrum {st:.2f}x (the synthetic rows score {probe_count_text(base)})")
    head = "real-vs-real baseline (quality-baseline.json): " + "; ".join(parts) if parts else "real-vs-real baseline: none"
    return head + (f". Fallback to the fixed bars: {base['fallback']}" if base.get("fallback") else "")


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread. The scores multiply many small matrices (KID kernels of at
    most 1000 x 1000): there, BLAS threads only contend, with the trainer's own threads and with other work on the
    machine (the probe's KID and PRDC at full scale took 8.7-10.1 s with OpenBLAS's threads and 1.1-1.6 s with one,
    measured alternately on a shared 2-core AMD EPYC). threadpoolctl comes with scikit-learn; without it, no limit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, brings it
        return contextlib.nullcontext()
    return threadpool_limits(1)


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
