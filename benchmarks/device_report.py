"""`python -m benchmarks --device-report`: what the trainer does on the machine at hand, and how fast its step runs.

For the default X-ray recipe and the seed recipe it prints (and with --out writes as JSON) the devices TensorFlow
sees, the precision and XLA setting `--precision auto` / `--jit auto` choose here, the device strategy, the steps per
host sync of a full-size epoch, and the measured bare D+G step in fp32 and in the chosen precision; then how often the
host syncs at the training-set sizes users run (device.epoch_steps). On a GPU (a Colab runtime, say) it measures the
GPU; the tables are short enough to paste into an issue.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

KAGGLE_TRAIN_IMAGES = 4200  # about the Kaggle train split after the grouped val split: sets the steps per epoch shown
# training-set sizes shown in the host-sync table: the recipes' row above, a Kaggle-sized train split, PneumoniaMNIST's
SYNC_SIZES = ((KAGGLE_TRAIN_IMAGES, "Kaggle train split, about (the rows above)"), (4186, "a Kaggle-sized train split"),
              (4708, "PneumoniaMNIST train (1,214 + 3,494)"))


def plan(recipe: str, batch_size: int = 64, image_size: int = 64, n_train: int = KAGGLE_TRAIN_IMAGES) -> dict[str, Any]:
    """What `train` decides for `recipe` here (precision, XLA, strategy, steps per host sync), without training."""
    import tensorflow as tf

    from cxr_utils.config import GANConfig
    from cxr_utils.gan import device

    cfg = GANConfig().with_recipe(recipe).replace(batch_size=batch_size, image_size=image_size)
    strategy = device.make_strategy()
    steps = max(1, device.epoch_steps(n_train, batch_size))
    return {
        "recipe": recipe,
        "batch_size": batch_size,
        "image_size": image_size,
        "precision": device.resolve_precision(cfg.precision, cfg.deterministic),
        "xla": device.resolve_jit(cfg.jit),
        "replicas": int(strategy.num_replicas_in_sync),
        "strategy": type(strategy).__name__,
        "devices": [d.name for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU", "TPU")],
        "steps_per_epoch": steps,
        "steps_per_execution": device.steps_per_execution(steps, int(strategy.num_replicas_in_sync)),
        "n_train": n_train,
    }


def host_sync(batch_size: int = 64, replicas: int = 1,
              sizes: tuple[tuple[int, str], ...] = SYNC_SIZES) -> list[dict[str, Any]]:
    """Per training-set size: the full batches, the steps train() runs per epoch and per host sync, and the images an
    epoch leaves out (the part batch plus the batches dropped so that a sync of 8..16 steps divides the epoch)."""
    from cxr_utils.gan import device

    rows = []
    for n, what in sizes:
        steps = device.epoch_steps(n, batch_size)
        per_call = device.steps_per_execution(steps, replicas)
        rows.append({"n_train": n, "what": what, "batch_size": batch_size, "full_batches": n // batch_size,
                     "steps_per_epoch": steps, "steps_per_execution": per_call, "syncs_per_epoch": steps // per_call,
                     "images_left_out": n - steps * batch_size, "replicas": replicas})
    return rows


def measure(p: dict[str, Any], rounds: int = 3, chunk: int = 4, **overrides: Any) -> dict[str, Any]:
    """The bare step of plan `p` in fp32 and in its chosen precision (best of `rounds` rounds of `chunk` steps)."""
    from cxr_utils.config import GANConfig

    from .train_step import bare_step

    cfg = GANConfig().with_recipe(p["recipe"]).replace(batch_size=p["batch_size"], image_size=p["image_size"], **overrides)
    out: dict[str, Any] = {}
    for precision in dict.fromkeys(("fp32", p["precision"])):  # once if the choice is fp32
        r = bare_step(cfg, precision, rounds=rounds, chunk=chunk)
        out[precision] = {"seconds_per_step": r["seconds_per_step"], "images_per_second": r["images_per_second"]}
    if p["precision"] != "fp32":
        out["speedup_vs_fp32"] = out["fp32"]["seconds_per_step"] / out[p["precision"]]["seconds_per_step"]
    return out


def report(recipes: tuple[str, ...] | None = None, batch_size: int = 64, image_size: int = 64, rounds: int = 3,
           chunk: int = 4, measure_steps: bool = True, **overrides: Any) -> dict[str, Any]:
    """Plans (and measured steps) for each recipe, with the machine they ran on."""
    from cxr_utils.config import DEFAULT_RECIPE

    from .machine import machine_info

    rows = []
    for recipe in recipes or (DEFAULT_RECIPE, "seed"):
        p = plan(recipe, batch_size, image_size)
        if measure_steps:
            p["measured"] = measure(p, rounds, chunk, **overrides)
        rows.append(p)
    replicas = rows[0]["replicas"] if rows else 1
    return {"machine": machine_info(), "recipes": rows, "host_sync": host_sync(batch_size, replicas)}


def _cell(r: dict[str, Any] | None) -> str:
    return f"{r['seconds_per_step']:.3f} s ({r['images_per_second']:.0f} img/s)" if r else "not measured"


def markdown(rep: dict[str, Any]) -> str:
    """The report as a machine line and one table row per recipe."""
    from .report import machine_line

    lines = [machine_line(rep["machine"]), "",
             "| Recipe | Devices (replicas) | Precision | XLA | Steps per host sync | fp32 step | Chosen-precision step | Speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for p in rep["recipes"]:
        m = p.get("measured") or {}
        fp32 = m.get("fp32")
        chosen = m.get(p["precision"])
        speed = f"{m['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in m else ("-" if m else "not measured")
        lines.append(f"| {p['recipe']} (batch {p['batch_size']}, {p['image_size']} px) | {', '.join(p['devices'])} "
                     f"({p['replicas']}) | {p['precision']} | {'on' if p['xla'] else 'off'} | {p['steps_per_execution']} of "
                     f"{p['steps_per_epoch']} per epoch | {_cell(fp32)} | {_cell(chosen) if p['precision'] != 'fp32' else '-'} "
                     f"| {speed} |")
    if rep.get("host_sync"):
        lines += ["", "| Training images | Full batches | Steps per epoch | Steps per host sync | Host syncs per epoch | "
                      "Images an epoch leaves out |", "|---|---|---|---|---|---|"]
        for r in rep["host_sync"]:
            lines.append(f"| {r['n_train']:,} ({r['what']}; batch {r['batch_size']}) | {r['full_batches']} | "
                         f"{r['steps_per_epoch']} | {r['steps_per_execution']} | {r['syncs_per_epoch']} | "
                         f"{r['images_left_out']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the device report; --out also writes it as JSON (atomically)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks --device-report", description=__doc__)
    ap.add_argument("--device-report", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="also write the report as JSON here")
    ap.add_argument("--no-measure", action="store_true", help="only what the trainer would choose; no step timing")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per precision (best kept)")
    args = ap.parse_args(argv)
    rep = report(rounds=max(1, args.rounds), measure_steps=not args.no_measure)
    if args.out:
        from cxr_utils.files import atomic_write_json

        atomic_write_json(Path(args.out), rep)
    sys.stdout.write(markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
