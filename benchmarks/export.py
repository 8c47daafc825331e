"""Benchmark c: PNG images/s written by cxr_utils.sample.export from a run folder's EMA generator."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_run(npz: Path, run_dir: Path, cfg: Any = None, per_class: int = 32) -> dict[str, Any]:
    """A real run folder to export from: the default model trained 1 epoch (one step) on real cached images."""
    from cxr_utils import data, train
    from cxr_utils.config import GANConfig

    cfg = (cfg or GANConfig()).replace(epochs=1, max_per_class=per_class, batch_size=2 * per_class, precision="fp32")
    images, labels = data.load(npz).subset("train")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return train.train(cfg, run_dir, images, np.asarray(labels), progress=False)


def run(npz: Path, work: Path, quick: bool = True, n_per_class: int | None = None, cfg: Any = None) -> dict[str, Any]:
    """Benchmark c end to end: train a one-step run, then time export of n_per_class PNGs per class."""
    from cxr_utils import sample

    n_per_class = n_per_class or (250 if quick else 1000)
    run_dir = work / "export-run"
    t0 = time.perf_counter()
    summary = make_run(npz, run_dir, cfg)
    train_seconds = time.perf_counter() - t0
    out = work / "export-out"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    folder = sample.export(run_dir, n_per_class, out, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    pngs = sum(1 for _ in Path(folder).rglob("*.png"))
    return {
        "run": {"train_seconds": train_seconds, "steps": summary.get("step"), "note": "default model, 1 training step: "
                "export speed does not depend on how well the generator is trained"},
        "n_per_class": n_per_class,
        "pngs": pngs,
        "seconds": seconds,
        "images_per_second": pngs / seconds,
        "call": f"cxr_utils.sample.export(run_dir, n_per_class={n_per_class}, out) (generate, PNG encode with text chunks, "
                "manifest, atomic swap into place)",
    }
