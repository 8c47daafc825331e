"""The quality bars of issue 18, calibrated and costed: what generators of known quality score against the
real-vs-real baseline, and what one quality evaluation costs at full scale.

- calibration (real data): scikit-learn's digits (1,797 real 8x8 handwritten digits, 10 classes of ~180). Per class,
  T training images (diversity and coverage compare with them), m held-out images (the baseline's stand-ins) and n
  more real images. Generators of known quality, each scored by the trainer's own probe code (QualityProbe.score_images
  with the baseline of cxr_utils.metrics.real_baseline.compute): "perfect" (the n unseen real images), "half the variety"
  (unseen real images from one side of the median of the class's first principal component, drawn with
  replacement), "two images" and "one image" per class (collapse). For each count (T, m, n) and generator: the
  ratios to the baseline over several random splits, and how often the learned bar and the collapse alarm fire.
- cost (timing only): one evaluation at Kaggle's full-scale sizes after the grouped re-split (4,200 training images
  at 1:3 NORMAL:PNEUMONIA, 1,050 val images at 1:3, 64 px), random uint8 images standing in for X-rays (the scores
  are meaningless; the arrays have the real sizes), the default recipe's generator, eval_n_per_class 128 (the
  default) and 512; the probe's build (classifier training and the baseline, once per run) and one bare train step
  at batch 64 in the same process: the share is eval / (eval + AUTO_EVAL_STEPS steps).

    python -m benchmarks.quality_bars --out assets/results/quality_bars.json    # about 15 minutes on 2 cores
    python -m benchmarks.quality_bars --quick                                    # a pipeline check, labelled
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TARGET_EVAL_SHARE = 0.10  # issue 10: quality tracking costs at most 10 % of training time at full scale
COUNTS = ((55, 55, 55), (30, 10, 55), (5, 2, 55))  # (T training, m held-out, n synthetic) per class
GENERATORS = ("perfect", "half the variety", "two images", "one image")
KAGGLE = {"train": (1050, 3150), "val": (263, 787)}  # 4,200 / 1,050 images at about 1:3 (README, issue 18)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8), y.astype(np.int64)


def _generators(x: np.ndarray, parts: list[np.ndarray], start: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices of n images per class for each generator of known quality (parts: each class's images, shuffled)."""
    half = []
    for p in parts:
        f = x[p].reshape(len(p), -1).astype(float)
        f -= f.mean(axis=0)
        z = f @ np.linalg.svd(f, full_matrices=False)[2][0]
        keep = np.intersect1d(p[start:], p[z < np.median(z)])  # unseen images of one half of the class
        half.append(rng.choice(keep, n, replace=len(keep) < n))
    return {"perfect": np.concatenate([p[start:start + n] for p in parts]), "half the variety": np.concatenate(half),
            "two images": np.concatenate([np.resize(p[start:start + 2], n) for p in parts]),
            "one image": np.concatenate([np.repeat(p[start:start + 1], n) for p in parts])}


def calibration(reps: int = 5, counts: tuple[tuple[int, int, int], ...] = COUNTS) -> dict[str, Any]:
    """The ratios and verdicts of generators of known quality on real digits (see the module docstring)."""
    from cxr_utils.gan import probe as gan_probe
    from cxr_utils.gan import tracker
    from cxr_utils.metrics import real_baseline as QB
    from cxr_utils.metrics.features import Extractor

    x, y = _digits()
    k = 10

    class Uniform:  # fidelity is not calibrated here (a digit classifier is another question)
        def predict(self, a: np.ndarray, **_: Any) -> np.ndarray:
            return np.full((len(a), k), 1 / k)

    ex = Extractor("pixels (64-d)", lambda a: np.asarray(a, np.float64).reshape(len(a), -1))
    rows = []
    for t, m, n in counts:
        got: dict[str, list[tuple[float, float, bool, bool]]] = {g: [] for g in GENERATORS}
        base_cov = []
        for rep in range(reps):
            rng = np.random.default_rng(rep)
            parts = [rng.permutation(np.flatnonzero(y == c)) for c in range(k)]
            tr = np.concatenate([p[:t] for p in parts])
            va = np.concatenate([p[t:t + m] for p in parts])
            probe = gan_probe.QualityProbe(tuple(str(c) for c in range(k)), x[tr], y[tr], y[va], ex(x[va]), "held out",
                                   Uniform(), ex, np.zeros((k * n, 1), np.float32),
                                   np.repeat(np.arange(k, dtype=np.int32), n), seed=rep)
            probe.baseline = QB.compute(probe, x[va], y[va])
            base_cov.append(probe.baseline["scores"]["train_coverage"])
            for g, idx in _generators(x, parts, t + m, n, rng).items():
                row = probe.score_images(x[idx])
                # the verdicts as a calibrated baseline would give them, also where this one is too small to judge
                judged = {**row, "bars": QB.REAL_BARS, "epoch": 0}
                got[g].append((row["diversity_vs_real"], row["train_coverage_vs_real"], tracker.learned_check(judged)[0],
                               tracker.collapse_alarm(judged) is not None))
        for g, vals in got.items():
            a = np.array(vals, float)
            rows.append({"train_per_class": t, "held_out_per_class": m, "synthetic_per_class": n, "generator": g,
                         "diversity_vs_real": _spread(a[:, 0]), "train_coverage_vs_real": _spread(a[:, 1]),
                         "learned": int(a[:, 2].sum()), "alarm": int(a[:, 3].sum()), "of": reps,
                         "baseline_train_coverage": round(float(np.mean(base_cov)), 3),
                         "judged_by_real_bars": m >= QB.MIN_FOR_BARS})
    return {"data": f"scikit-learn digits: {len(y):,} real 8x8 images, {k} classes", "reps": reps,
            "generators": {"perfect": "n unseen real images per class",
                           "half the variety": "unseen real images from one side of the median of the class's first "
                                               "principal component (drawn with replacement)",
                           "two images": "two real images per class, repeated", "one image": "one real image per class"},
            "bars": {"learned_diversity": tracker.LEARNED_DIVERSITY_VS_REAL, "learned_coverage": tracker.LEARNED_COVERAGE_VS_REAL,
                     "alarm_diversity": tracker.ALARM_DIVERSITY_VS_REAL, "alarm_coverage": tracker.ALARM_COVERAGE_VS_REAL,
                     "min_held_out_per_class": QB.MIN_FOR_BARS},
            "rows": rows}


def _spread(a: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(np.mean(a)), 3), "min": round(float(np.min(a)), 3), "max": round(float(np.max(a)), 3)}


def cost(n_per_class: tuple[int, ...] = (128, 512), batch_size: int = 64, repeats: int = 3,
         sizes: dict[str, tuple[int, int]] = KAGGLE) -> dict[str, Any]:
    """Seconds of one quality evaluation at full-scale sizes (random uint8 images: timing only) against the
    training seconds between two evaluations; the probe's one-off build beside it."""
    from cxr_utils.config import DEFAULT_RECIPE, GANConfig
    from cxr_utils.gan import device, fit, tracker
    from cxr_utils.metrics import real_baseline

    from .train_step import bare_step

    rng = np.random.default_rng(0)

    def images(counts: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(2), counts)
        return rng.integers(0, 256, (len(y), 64, 64), dtype=np.uint8), y

    xt, yt = images(sizes["train"])
    xv, yv = images(sizes["val"])
    cfg = GANConfig(batch_size=batch_size).with_recipe(DEFAULT_RECIPE)
    precision = device.resolve_precision(cfg.precision)
    gan = device.build_gan(cfg, precision)
    out: dict[str, Any] = {"recipe": DEFAULT_RECIPE, "n_train": int(len(yt)), "n_val": int(len(yv)),
                           "per_class": {"train": list(sizes["train"]), "val": list(sizes["val"])}, "image_size": 64,
                           "batch_size": batch_size, "precision": precision, "steps_between_evals": tracker.AUTO_EVAL_STEPS,
                           "target_share": TARGET_EVAL_SHARE,
                           "note": "timing only: random uint8 images at Kaggle's full-scale sizes (the scores are "
                                   "meaningless)", "by_n_per_class": []}
    step = bare_step(cfg, precision, rounds=repeats)["seconds_per_step"]
    out["step_seconds"] = round(step, 4)
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(n_per_class):
            c = cfg.replace(eval_n_per_class=n)
            t0 = time.perf_counter()
            probe = fit.quality_probe(c, xt, yt, (xv, yv, "random val"), run_dir=Path(tmp))  # the classifier once
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            real_baseline.compute(probe, xv, yv)
            base_s = time.perf_counter() - t0
            evals = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                probe.score(gan.ema_generator)
                evals.append(time.perf_counter() - t0)
            ev = min(evals)  # best of the repeats, as the step (a burst of other load inflates single timings)
            share = ev / (ev + tracker.AUTO_EVAL_STEPS * step)
            out["by_n_per_class"].append({
                "eval_n_per_class": n, "coverage_train_per_class": [int((probe.y_train == k).sum()) for k in (0, 1)],
                "stand_ins_per_class": {s: list(v["per_class"].values()) for s, v in probe.baseline["sides"].items()},
                "probe_build_seconds": round(build_s, 2), "classifier_trained": i == 0, "baseline_seconds": round(base_s, 2),
                "eval_seconds": round(ev, 3), "eval_seconds_all": [round(e, 3) for e in evals],
                "share_of_training": round(share, 4), "met": share <= TARGET_EVAL_SHARE})
    return out


def quality_cost(repeats: int = 3) -> dict[str, Any]:
    """The benchmark runner's row f: one evaluation at the default eval_n_per_class, in the keys it reports."""
    c = cost(n_per_class=(128,), repeats=repeats)
    e = c["by_n_per_class"][0]
    return {**{k: c[k] for k in ("recipe", "n_train", "n_val", "batch_size", "precision", "step_seconds",
                                 "steps_between_evals", "target_share", "note")},
            **{k: e[k] for k in ("eval_n_per_class", "probe_build_seconds", "eval_seconds", "met")},
            "share_of_training": e["share_of_training"], "coverage_train_per_class": e["coverage_train_per_class"]}


def run(quick: bool = False) -> dict[str, Any]:
    """Calibration and cost; the JSON-ready result."""
    from .machine import machine_info

    t0 = time.perf_counter()
    res: dict[str, Any] = {"benchmark": "quality bars: calibration on real digits, cost at full scale (issue 18)",
                           "quick": quick, "machine": machine_info()}
    res["calibration"] = calibration(reps=2 if quick else 5, counts=COUNTS[:1] if quick else COUNTS)
    res["cost"] = cost(n_per_class=(128,) if quick else (128, 512), repeats=1 if quick else 3)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    """CLI: measure and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ap.add_argument("--quick", action="store_true", help="fewer splits and sizes: a pipeline check, labelled")
    args = ap.parse_args(argv)
    from cxr_utils.files import atomic_write_json

    res = run(quick=args.quick)
    res["command"] = "python -m benchmarks.quality_bars " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        atomic_write_json(args.out, res)
        print(f"[quality-bars] wrote {args.out}", file=sys.stderr)
    for r in res["calibration"]["rows"]:
        print(f"T={r['train_per_class']} m={r['held_out_per_class']} n={r['synthetic_per_class']} {r['generator']}: "
              f"diversity {r['diversity_vs_real']['mean']}x, coverage {r['train_coverage_vs_real']['mean']}x, "
              f"learned {r['learned']}/{r['of']}, alarm {r['alarm']}/{r['of']}")
    for e in res["cost"]["by_n_per_class"]:
        print(f"eval_n_per_class {e['eval_n_per_class']}: {e['eval_seconds']} s per evaluation = "
              f"{100 * e['share_of_training']:.1f}% of {res['cost']['steps_between_evals']} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
