"""Issue 20 measured: the generator and discriminator of the literature against the ones before, in one run per part.

Parts (each run written into the same JSON as soon as it is measured, re-read first, so parts and seeds can run in
separate processes; a run replaces only an earlier run of its part, seed and arm):

- `digits16`, `digits32`, `imbalanced`: the digits benchmark (benchmarks/digits_tstr.py, its own plan: 9,000 steps,
  a 600 s budget, the generator kept by its real validation split) with its own config ("before") and with the change
  of the default recipe that config does not have yet ("after": class-conditional LayerNorm in G; it already upsamples
  by resize + convolution and makes one channel, and like the default it keeps spectral norm on D's convolutions
  only). Same seeds for both arms; per seed
  the arm that goes first alternates, so a slow spell of the shared machine hits both alike.
- `step`: seconds per D+G train step of the default recipe's model before (`xray-v1`) and after (`xray`), fp32 and
  bf16, batch 64, 64 px (benchmarks/train_step.py's timing: model.fit on one in-memory batch), in alternating rounds
  in one process, best round each; FLOPs per step of both (TF's per-op registry over the traced step), and what the
  planned full-scale run (train.plan_steps) costs: measured here, and estimated from FLOPs for a T4.

The x-ray side (every variant on the real sample) is benchmarks/xray_recipes.py's JSON; the README section reads both.

    python -m benchmarks.generator_upgrade --parts digits16,digits32,imbalanced,step --out assets/results/generator_upgrade.json
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

PARTS = ("digits16", "digits32", "imbalanced", "step")
# the digits config already has g_upsample "upsample" and one channel: "after" adds the rest of the default's changes
ARMS: dict[str, dict[str, Any]] = {"before": {}, "after": {"g_norm": "class_layer"}}
DIGITS_PARTS: dict[str, dict[str, Any]] = {"digits16": {"size": 16, "imbalance": False, "seeds": (0, 1)},
                                           "digits32": {"size": 32, "imbalance": False, "seeds": (0,)},
                                           "imbalanced": {"size": 16, "imbalance": True, "seeds": (0,)}}
STEP_RECIPES = {"before": "xray-v1", "after": "xray"}
KAGGLE_TRAIN_IMAGES = 4180  # about 1,080 NORMAL + 3,100 PNEUMONIA after the grouped re-split (the project's brief)
# NVIDIA T4 datasheet: 65 TFLOPS mixed precision (FP16/FP32, tensor cores), 8.1 TFLOPS FP32. Small 64 px convolutions
# at batch 64 reach a fraction of it; the range below is an assumption, labelled as such wherever it is shown
T4_PEAK_FP16 = 65e12
T4_UTILISATION = (0.05, 0.25)


def arm_order(seed: int) -> tuple[str, ...]:
    """Before first for even seeds, after first for odd ones."""
    return ("before", "after") if seed % 2 == 0 else ("after", "before")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def digits_run(part: str, seed: int, arm: str) -> dict[str, Any]:
    """One digits benchmark run of an arm; what the JSON keeps of it."""
    from . import digits_tstr

    spec = DIGITS_PARTS[part]
    plan = digits_tstr.Plan(size=spec["size"], imbalance=spec["imbalance"])
    load_before = _load()
    r = digits_tstr.run(seed=seed, plan=plan, **ARMS[arm])
    keys = ("seed", "size", "tstr", "trtr", "ratio", "tstr_matched", "ratio_matched", "selected_step", "steps",
            "seconds", "train_seconds", "stopped_by_budget", "target_met", "n_train_real", "n_train_real_per_class")
    sel = next((c for c in r["curve"] if c["step"] == r["selected_step"]), {})
    out = {"arm": arm, **{k: r[k] for k in keys}, "fidelity": sel.get("fidelity"), "spread": sel.get("spread"),
           "load_average_before": load_before, "load_average_after": _load(),
           "curve": [{k: pt[k] for k in ("step", "fit_seconds", "tstr_val", "tstr", "ratio", "fidelity", "spread")}
                     for pt in r["curve"]]}
    if spec["imbalance"]:
        out["per_class"] = r["per_class"]
    return out


def step_part(rounds: int = 6, chunk: int = 4, batch_size: int = 64, image_size: int = 64) -> dict[str, Any]:
    """The default recipe's bare D+G step before / after, fp32 and bf16, alternating rounds; FLOPs; the plan's cost."""
    import keras

    from cxr_utils.config import GANConfig
    from cxr_utils.gan.fit import plan_steps

    from .train_step import build_gan, step_flops, synthetic_dataset, time_fit

    cfgs = {arm: GANConfig().with_recipe(r).replace(batch_size=batch_size, image_size=image_size)
            for arm, r in STEP_RECIPES.items()}
    models = {}
    for arm, cfg in cfgs.items():
        for p in ("fp32", "bf16"):
            keras.utils.set_random_seed(0)
            models[arm, p] = build_gan(cfg, p)[0]
            models[arm, p].fit(synthetic_dataset(cfg, 2), epochs=1, verbose=0, shuffle=False)  # trace before timing
    load_before = _load()
    per_round: dict[str, list[float]] = {f"{a}/{p}": [] for a, p in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for arm, p in order:
            per_round[f"{arm}/{p}"].append(time_fit(models[arm, p], synthetic_dataset(cfgs[arm], chunk), warmup=1))
    flops = {arm: step_flops(models[arm, "fp32"], cfgs[arm])["total"] for arm in cfgs}
    models.clear()
    keras.backend.clear_session()
    best = {k: min(v) for k, v in per_round.items()}
    steps = plan_steps(KAGGLE_TRAIN_IMAGES, batch_size)
    after_bf16 = best["after/bf16"]
    lo, hi = (flops["after"] * steps / (T4_PEAK_FP16 * u) / 3600 for u in reversed(T4_UTILISATION))
    return {
        "recipes": STEP_RECIPES, "batch_size": batch_size, "image_size": image_size, "rounds": rounds,
        "steps_per_round": chunk, "timing": "model.fit on one in-memory batch; seconds between consecutive batch ends "
        "(the first of each round excluded); rounds alternate the four models, forwards then backwards; best round",
        "seconds_per_step": best, "seconds_per_step_by_round": per_round, "flops_per_step": flops,
        "load_average_before": load_before, "load_average_after": _load(),
        "plan": {"n_train": KAGGLE_TRAIN_IMAGES, "batch_size": batch_size, "steps": steps,
                 "kimg": steps * batch_size / 1000, "cpu_hours_bf16": steps * after_bf16 / 3600,
                 "t4_hours_estimate": [lo, hi], "t4_peak_fp16": T4_PEAK_FP16, "t4_utilisation_assumed": list(T4_UTILISATION),
                 "t4_note": "an estimate from FLOPs, not a measurement: FLOPs per step x steps / (65 TFLOPS fp16 peak x "
                            f"{T4_UTILISATION[0]:.0%}-{T4_UTILISATION[1]:.0%} assumed utilisation); quality evaluations "
                            "and the input pipeline not included"},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per part and arm: mean TSTR/TRTR, the lowest, whether every seed met the target, mean fidelity and spread."""
    out: dict[str, Any] = {}
    for part in DIGITS_PARTS:
        mine = [r for r in runs if r["part"] == part]
        for arm in ARMS:
            rs = [r for r in mine if r["arm"] == arm]
            if not rs:
                continue
            mean = lambda k, rs=rs: sum(r[k] for r in rs if r[k] is not None) / len(rs)  # noqa: E731
            out.setdefault(part, {})[arm] = {
                "seeds": [r["seed"] for r in rs], "ratio": mean("ratio"), "ratio_min": min(r["ratio"] for r in rs),
                "ratio_matched": mean("ratio_matched"), "tstr": mean("tstr"), "fidelity": mean("fidelity"),
                "spread": mean("spread"), "seconds": mean("seconds"), "steps": mean("steps"),
                "all_met": all(r["target_met"] for r in rs)}
    return out


def update(out: Path, meta: dict[str, Any], commands: dict[str, str], run: dict[str, Any] | None = None,
           step: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read OUT again (another process may have written other parts or seeds since), put in one digits run (it
    replaces an earlier run of the same part, seed and arm) or the step part, re-summarise, write atomically."""
    from cxr_utils.files import atomic_write_json, read_json

    res: dict[str, Any] = read_json(out) if out.is_file() else {}
    res.update(meta)
    runs = list(res.get("digits_runs", []))
    if run is not None:
        same = (run["part"], run["seed"], run["arm"])
        runs = [r for r in runs if (r["part"], r["seed"], r["arm"]) != same] + [run]
    res["digits_runs"] = runs
    res["digits"] = summarize(runs)
    res["commands"] = {**(res.get("commands") or {}), **commands}
    if step is not None:
        res["step"] = step
    atomic_write_json(out, res)
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; the JSON is updated (read, merged, written atomically) after every run."""
    from .machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--out", required=True, help="the JSON (an existing one keeps every run not re-run)")
    ap.add_argument("--rounds", type=int, default=6, help="step part: alternating rounds")
    ap.add_argument("--seeds", default=None, help="digits parts: comma-separated seeds (default: each part's own)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        print(f"error: --parts {','.join(bad)}: unknown; choose from {','.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        print(f"error: --seeds {args.seeds}: expected comma-separated integers, e.g. 0,1", file=sys.stderr)
        return 2
    out = Path(args.out)
    m = machine_info()
    meta = {"benchmark": "issue 20: the generator and discriminator of the literature, before / after",
            "arms": {"before": "the configuration as it was (digits: its own config; x-ray step: xray-v1)",
                     "after": "with issue 20's generator (digits: + class-conditional LayerNorm in G; x-ray step: "
                              "the xray recipe)"},
            "digits_changes": ARMS["after"],
            "machine": {"cpu_model": m["cpu_model"], "cores": m["cores"], "flags": m.get("flags"), "shared": True,
                        "note": "other jobs shared the machine (load averages recorded per run): seconds are "
                                "indicative, ratios measured in one run"}}
    command = "python -m benchmarks.generator_upgrade " + " ".join(argv if argv is not None else sys.argv[1:])
    for part in parts:
        t0 = time.perf_counter()
        if part == "step":
            update(out, meta, {part: command}, step=step_part(rounds=args.rounds))
        else:
            part_seeds = seeds or DIGITS_PARTS[part]["seeds"]
            # the command that measured these seeds (other seeds' runs, and the commands that measured them, stay)
            key = part if seeds is None else f"{part} seeds {','.join(map(str, part_seeds))}"
            for seed in part_seeds:
                for arm in arm_order(seed):
                    r = {"part": part, **digits_run(part, seed, arm)}
                    update(out, meta, {key: command}, run=r)
                    print(f"[generator-upgrade] {part} seed {seed} {arm}: TSTR/TRTR {r['ratio']:.4f} at step "
                          f"{r['selected_step']} of {r['steps']} in {r['seconds']:.0f} s (load {r['load_average_before']})",
                          file=sys.stderr, flush=True)
        print(f"[generator-upgrade] {part} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
