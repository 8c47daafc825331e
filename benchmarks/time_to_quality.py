"""Time to quality before and after issue 14, measured in one run: seconds of training until a generator is good.

- digits: training seconds until the generator the real validation split would keep reaches TSTR/TRTR >= 0.97
  (benchmarks/digits_tstr.py: the same data, probe and selection rule; a measurement every 250 steps; the seconds
  are the epochs' own, from metrics.csv, as for x-ray: the benchmark's restart per measurement is reported beside);
- x-ray: training seconds until the default recipe first reaches the "learned" bar on the real sample (diversity
  >= 0.4 of real, >= 7 of 10 training images covered; benchmarks/xray_recipes.py, a quality evaluation every 100
  steps, the evaluations themselves not counted), and until the bar has held at HOLD evaluations in a row (one
  evaluation over a bar scored on 10 images is often luck).

"before" is the configuration this project trained with before issue 14 (BEFORE: the optimiser settings, and fp32
for digits), "after" is today's (digits_tstr.digits_config, config.RECIPES[DEFAULT_RECIPE]). Both run on the same
seeds, one after the other in the same process, with the same cadence; a run that never reaches the bar counts its
whole training time, so the after/before ratio is then an upper bound (`before_reached` says which).

    python -m benchmarks.time_to_quality --out assets/results/time_to_quality.json     # about 35 minutes on 2 cores
    python -m benchmarks.time_to_quality --quick                                       # a pipeline check, labelled
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

TARGET_RATIO = 0.5  # issue 14: half of the time before it
# what the configurations were before issue 14 (commit 109fcc3): digits_tstr.digits_config and RECIPES["xray"]
BEFORE: dict[str, dict[str, Any]] = {
    "digits": {"g_lr": 1e-4, "d_lr": 4e-4, "beta_1": 0.5, "beta_2": 0.999, "precision": "fp32"},
    "xray": {"g_lr": 2e-4, "d_lr": 2e-4, "beta_1": 0.5, "beta_2": 0.999},
}
DIGITS_STEPS, DIGITS_CHUNKS = 3000, 12
XRAY_STEPS, XRAY_EVAL_EVERY = 2500, 100
# x-ray, second measure: the bar met at this many evaluations in a row (300 steps). Scored on 10 training images,
# coverage moves in steps of 1/10, so a single evaluation over the bar is often luck; a generator that stays over
# it has learned
HOLD = 3


def digits_time(seed: int, overrides: dict[str, Any], steps: int, chunks: int, n_per_class: int) -> dict[str, Any]:
    """One digits run; the seconds until the validation-kept generator reaches the target (else the whole run)."""
    from . import digits_tstr

    plan = digits_tstr.Plan(steps=steps, chunks=chunks, n_per_class=n_per_class, budget_seconds=None)
    d = digits_tstr.run(seed=seed, plan=plan, **overrides)
    t = digits_tstr.time_to_target(d["curve"])
    last = d["curve"][-1]
    curve = [{k: pt[k] for k in ("step", "fit_seconds", "train_seconds", "tstr_val", "ratio")} for pt in d["curve"]]
    # seconds: the epochs' own time (metrics.csv), as the x-ray measure and as one uninterrupted run pays it; the
    # benchmark's restart per measurement (model build, restore, retracing) is in train_seconds, kept beside it
    return {"reached": t is not None, "seconds": (t or last)["fit_seconds"],
            "train_seconds_with_restarts": (t or last)["train_seconds"], "step": (t or last)["step"],
            "kept_step": t and t["kept_step"], "ratio": t and t["ratio"], "precision": d["config"]["precision"],
            "curve": curve}


def xray_time(seed: int, overrides: dict[str, Any], steps: int, eval_every: int, work: Path) -> dict[str, Any]:
    """One x-ray run of the default recipe; the seconds until it first reaches the learned bar (else the whole run)."""
    from cxr_utils import data
    from cxr_utils.config import DEFAULT_RECIPE

    from . import xray_recipes

    npz = Path(data.prepare(source="sample", size=64, progress=False))
    n_train = int((data.load(npz).split == "train").sum())
    # checkpoints and grids rarely: an evaluated epoch is checkpointed anyway (quality.QualityTracker)
    cadence = {"eval_every": eval_every, "checkpoint_every": steps, "sample_every": steps}
    r = xray_recipes.run_recipe(DEFAULT_RECIPE, npz, n_train, work, steps, seed, **cadence, **overrides)
    t = r["time_to_bar"]
    curve = [{k: pt[k] for k in ("step", "train_seconds", "diversity", "train_coverage", "train_covered")}
             for pt in r["curve"]]
    h = held(curve)
    return {"reached": t is not None, "seconds": t["train_seconds"] if t else r["train_seconds"],
            "step": t["step"] if t else r["steps"], "held_reached": h is not None,
            "held_seconds": h["seconds"] if h else r["train_seconds"], "held_step": h["step"] if h else r["steps"],
            "precision": r["precision"], "curve": curve}


def held(curve: list[dict[str, Any]], n: int = HOLD) -> dict[str, Any] | None:
    """The last of the first n evaluations in a row that all meet the learned bar (when that is known): its step and
    training seconds; None if the bar never holds n times in a row."""
    from .xray_recipes import meets_bar

    streak = 0
    for pt in curve:
        streak = streak + 1 if meets_bar(pt) else 0
        if streak >= n:
            return {"step": pt["step"], "seconds": pt["train_seconds"]}
    return None


def summarize(runs: list[dict[str, Any]], seconds: str = "seconds", reached: str = "reached") -> dict[str, Any]:
    """Per seed after/before; the whole: total after seconds / total before seconds over the seeds (None if an
    'after' run never reached the bar). A 'before' run that never reached it counts its whole training time, which
    makes the ratio an upper bound. `seconds` / `reached` name the measure (x-ray's held bar: held_seconds...)."""
    by_seed: dict[int, dict[str, Any]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["which"]] = r
    per_seed, before_s, after_s, ok = [], 0.0, 0.0, True
    for seed, pair in sorted(by_seed.items()):
        b, a = pair.get("before"), pair.get("after")
        if not (b and a):
            continue
        ok = ok and a[reached]
        before_s, after_s = before_s + b[seconds], after_s + a[seconds]
        per_seed.append({"seed": seed, "before_seconds": b[seconds], "before_reached": b[reached],
                         "after_seconds": a[seconds], "after_reached": a[reached],
                         "ratio": a[seconds] / b[seconds] if a[reached] else None})
    ratio = after_s / before_s if ok and before_s > 0 and per_seed else None
    all_reached = all(p["before_reached"] for p in per_seed)
    return {"per_seed": per_seed, "before_seconds": before_s, "after_seconds": after_s, "before_all_reached": all_reached,
            "ratio": {"value": ratio, "target": TARGET_RATIO, "met": None if ratio is None else ratio <= TARGET_RATIO,
                      "lower_is_better": True, "upper_bound": not all_reached}}


def run(seeds: tuple[int, ...] = (0, 1), quick: bool = False, only: tuple[str, ...] = ("digits", "xray"),
        progress: bool = True) -> dict[str, Any]:
    """Before and after, alternately, for every seed; the JSON-ready result."""
    d_steps, d_chunks, n_pc = (400, 2, 100) if quick else (DIGITS_STEPS, DIGITS_CHUNKS, 300)
    x_steps, x_every = (200, 100) if quick else (XRAY_STEPS, XRAY_EVAL_EVERY)
    out: dict[str, Any] = {"benchmark": "time to quality, before / after issue 14", "quick": quick, "seeds": list(seeds),
                           "before": BEFORE, "target_ratio": TARGET_RATIO}
    with tempfile.TemporaryDirectory(prefix="ttq-") as tmp:
        for bench in only:
            runs = []
            for seed in seeds:
                # alternate who goes first, so a slow spell of the shared machine does not always hit one side
                order = ("before", "after") if seed % 2 == 0 else ("after", "before")
                for which in order:
                    over = BEFORE[bench] if which == "before" else {}
                    t0 = time.perf_counter()
                    if bench == "digits":
                        r = digits_time(seed, over, d_steps, d_chunks, n_pc)
                    else:
                        r = xray_time(seed, over, x_steps, x_every, Path(tmp) / f"{which}-{seed}")
                    r.update(seed=seed, which=which, wall_seconds=round(time.perf_counter() - t0, 1))
                    runs.append(r)
                    if progress:
                        print(f"[time-to-quality] {bench} seed {seed} {which}: "
                              f"{'reached' if r['reached'] else 'NOT reached'} at step {r['step']} after "
                              f"{r['seconds']:.0f} s of training", file=sys.stderr, flush=True)
            out[bench] = {"runs": runs, **summarize(runs)}
            if bench == "xray":
                out[bench]["held"] = {"evaluations": HOLD, **summarize(runs, "held_seconds", "held_reached")}
    if "digits" in out:
        out["digits"]["plan"] = {"steps": d_steps, "measurements": d_chunks, "n_per_class": n_pc}
    if "xray" in out:
        out["xray"]["plan"] = {"steps": x_steps, "eval_every_steps": x_every}
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: run, write the JSON atomically, print one line per benchmark."""
    from cxr_utils.files import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    ap.add_argument("--seeds", default="0,1", help="comma-separated GAN seeds")
    ap.add_argument("--only", default="digits,xray", help="digits, xray or both")
    ap.add_argument("--quick", action="store_true", help="a pipeline check in a couple of minutes (not the measurement)")
    args = ap.parse_args(argv)
    only = tuple(s for s in args.only.split(",") if s)
    if not set(only) <= {"digits", "xray"}:
        print(f"error: --only {args.only}: choose digits, xray or digits,xray", file=sys.stderr)
        return 2
    res = run(tuple(int(s) for s in args.seeds.split(",")), args.quick, only)
    res["command"] = "python -m benchmarks.time_to_quality " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        atomic_write_json(args.out, res)
    for bench in only:
        for name, s in ((bench, res[bench]), (f"{bench}, held {HOLD} evaluations", res[bench].get("held"))):
            if s:
                r = s["ratio"]
                v = "-" if r["value"] is None else f"{r['value']:.2f}"
                print(f"{name}: before {s['before_seconds']:.0f} s, after {s['after_seconds']:.0f} s, after/before "
                      f"{v}{' (upper bound)' if r['upper_bound'] else ''} (target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
