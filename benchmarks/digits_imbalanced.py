"""Generated-label prior on imbalanced digits (issue 18): label_prior "balanced" vs "data", same seeds, in one run.

The digits benchmark (benchmarks/digits_tstr.py) with `imbalance` on: the odd digits keep a third of their training
images (1 : 3, digits_tstr.IMBALANCE_NOTE; the test split untouched). Per seed both arms train the same number of
steps (no time budget, so neither is cut short by the other's slow spell), the order alternating between seeds.
Per digit: fidelity (the real-trained probe's accuracy on that digit's synthetic images), spread (within-class
diversity ratio), and the recall on the real test digits of the TSTR probe beside TRTR's (digits_tstr.PER_CLASS_NOTE).

    python -m benchmarks.digits_imbalanced --out assets/results/digits_imbalanced.json     # ~4 runs of 5-8 minutes
    python -m benchmarks.digits_imbalanced --quick                                         # a pipeline check, labelled
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARMS = ("balanced", "data")  # before (every run until issue 18) and after (the default since)
STEPS, CHUNKS, N_PER_CLASS = 9000, 6, 300  # the digits benchmark's own plan (digits_tstr.Plan)
# per-digit measures averaged over seeds; trtr_recall is the same for both arms (same real data, same probe)
PER_CLASS_KEYS = ("fidelity", "spread", "tstr_recall", "tstr_matched_recall", "trtr_recall")
OVERALL_KEYS = ("tstr", "tstr_matched", "trtr", "ratio", "ratio_matched")


def arm_order(seed: int) -> tuple[str, ...]:
    """The order of the two arms for a seed: alternating, so a slow spell of the shared machine hits both alike."""
    return ARMS if seed % 2 == 0 else ARMS[::-1]


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: the overall numbers and every per-digit measure averaged over its seeds (with the seeds' min and max);
    the odd (cut) and even digits averaged apart."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r["label_prior"] == arm]
        if not mine:
            continue
        overall = {k: _mean([r[k] for r in mine]) for k in OVERALL_KEYS}
        per_class = []
        for c in range(len(mine[0]["per_class"])):
            rows = [r["per_class"][c] for r in mine]
            row: dict[str, Any] = {"digit": c, "n_real": rows[0]["n_real"]}
            for k in PER_CLASS_KEYS:
                vals = [x[k] for x in rows if x[k] is not None]
                row[k] = _mean(vals)
                row[f"{k}_range"] = [min(vals), max(vals)] if vals else None
            per_class.append(row)
        groups = {name: {k: _mean([row[k] for row in per_class if row["digit"] % 2 == odd]) for k in PER_CLASS_KEYS}
                  for name, odd in (("odd", 1), ("even", 0))}
        out[arm] = {"seeds": [r["seed"] for r in mine], **overall, "per_class": per_class, "groups": groups}
    return out


def _kept(res: dict[str, Any], arm: str) -> dict[str, Any]:
    """What the JSON keeps of one digits_tstr run (its config once, in the top level)."""
    keys = ("seed", "tstr", "tstr_matched", "trtr", "ratio", "ratio_matched", "selected_step", "steps", "seconds",
            "train_seconds", "n_train_real", "n_val_real", "n_test_real", "n_train_real_per_class", "per_class")
    curve = [{k: pt[k] for k in ("step", "fit_seconds", "tstr_val", "tstr", "fidelity", "spread")} for pt in res["curve"]]
    return {"label_prior": arm, **{k: res[k] for k in keys}, "curve": curve}


def run(seeds: tuple[int, ...] = (0, 1), steps: int = STEPS, chunks: int = CHUNKS, n_per_class: int = N_PER_CLASS,
        out_path: Path | None = None, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Both arms for every seed, alternating; the JSON-ready result (written after every run when out_path is set)."""
    from cxr_utils.files import atomic_write_json

    from . import digits_tstr
    from .machine import machine_info

    plan = digits_tstr.Plan(steps=steps, chunks=chunks, n_per_class=n_per_class, budget_seconds=None, imbalance=True)
    m = machine_info()
    res: dict[str, Any] = {
        "benchmark": "digits_imbalanced: generated-label prior balanced vs data on 1 : 3 imbalanced digits",
        "imbalance": digits_tstr.IMBALANCE_NOTE, "per_class_note": digits_tstr.PER_CLASS_NOTE,
        "arms": {"balanced": "label_prior=balanced: generated labels 1/10 each (every run before issue 18)",
                 "data": "label_prior=data: generated labels follow the GAN-training digits' frequencies"},
        "plan": {"steps": steps, "chunks": chunks, "n_per_class": n_per_class, "budget_seconds": None},
        "seeds": list(seeds), "overrides": overrides, "runs": [],
        "machine": {"cpu_model": m["cpu_model"], "cores": m["cores"], "shared": True,
                    "note": "other jobs shared the machine: seconds are indicative only"},
    }
    for seed in seeds:
        for arm in arm_order(seed):
            t0 = time.perf_counter()
            r = digits_tstr.run(seed=seed, plan=plan, label_prior=arm, **overrides)
            kept = _kept(r, arm)
            kept["wall_seconds"] = round(time.perf_counter() - t0, 1)
            res["runs"].append(kept)
            res["config"] = {k: v for k, v in r["config"].items() if k not in ("seed", "label_prior", "epochs")}
            res["summary"] = summarize(res["runs"])
            if out_path is not None:
                atomic_write_json(out_path, res)
            if progress:
                print(f"[digits-imbalanced] seed {seed} {arm}: TSTR {r['tstr']:.4f} (matched {r['tstr_matched']:.4f}) "
                      f"TRTR {r['trtr']:.4f} in {kept['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    """CLI: run both arms, write the JSON atomically, print one line per arm."""
    from . import digits_tstr

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the result JSON here (after every run)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated GAN seeds (default 0,1)")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--quick", action="store_true", help="a pipeline check in a few minutes (not the measurement)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a GANConfig field of the digits config for both arms (repeatable)")
    args = ap.parse_args(argv)
    from cxr_utils.errors import UserError

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    except ValueError:
        print(f"error: --seeds {args.seeds}: expected comma-separated integers, e.g. 0,1", file=sys.stderr)
        return 2
    steps, chunks, n_pc = (300, 2, 60) if args.quick else (args.steps, CHUNKS, N_PER_CLASS)
    try:
        overrides = digits_tstr.parse_overrides(args.set)
        if "label_prior" in overrides:
            raise UserError("--set label_prior: the two arms set it; drop it")
        res = run(seeds, steps, chunks, n_pc, Path(args.out) if args.out else None, **overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res["quick"] = args.quick
    res["command"] = "python -m benchmarks.digits_imbalanced " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        from cxr_utils.files import atomic_write_json

        atomic_write_json(args.out, res)
    for arm, s in res["summary"].items():
        print(f"{arm}: TSTR {s['tstr']:.4f} (count-matched {s['tstr_matched']:.4f}), TRTR {s['trtr']:.4f}, odd digits "
              f"fidelity {s['groups']['odd']['fidelity']:.3f} spread {s['groups']['odd']['spread']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
