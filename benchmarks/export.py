"""Benchmark c: PNG images/s written by cxr_utils.evaluation.synthetic.export from a run folder's EMA generator."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from cxr_utils import files as cio
from cxr_utils.gan.run_folder import RunFolder


def make_run_folder(run_dir: Path, cfg: Any = None) -> dict[str, Any]:
    """A run folder holding what export reads (config.json + generator.keras): the default generator, untrained.

    Export speed does not depend on the weights' values, and skipping training keeps --quick quick; the files
    are written exactly as cxr_utils.gan.fit writes them (config dict at top level, atomic Keras save).
    """
    from cxr_utils.config import GANConfig
    from cxr_utils.gan import networks

    cfg = cfg or GANConfig()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    g = networks.build_generator(cfg, dtype="float32", name="ema_generator")
    with cio.atomic_path(RunFolder(run_dir).generator) as tmp:
        g.save(tmp)
    cio.atomic_write_json(RunFolder(run_dir).config, {**cfg.to_dict(), "data": {"note": "benchmark run folder: untrained generator"}})
    return {"generator_params": int(g.count_params()), "weights": "untrained (random init): export speed does not depend on them"}


def run(work: Path, quick: bool = True, n_per_class: int | None = None, cfg: Any = None) -> dict[str, Any]:
    """Benchmark c: time cxr_utils.evaluation.synthetic.export of n_per_class PNGs per class (includes loading the generator)."""
    from cxr_utils.evaluation import synthetic

    n_per_class = n_per_class or (250 if quick else 1000)
    run_dir = work / "export-run"
    info = make_run_folder(run_dir, cfg)
    out = work / "export-out"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    folder = synthetic.export(run_dir, n_per_class, out, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    pngs = sum(1 for _ in Path(folder).rglob("*.png"))
    return {
        "run": info,
        "n_per_class": n_per_class,
        "pngs": pngs,
        "seconds": seconds,
        "images_per_second": pngs / seconds,
        "call": f"cxr_utils.evaluation.synthetic.export(run_dir, n_per_class={n_per_class}, out): load generator.keras (safe_mode), generate, "
                "encode PNGs with text chunks, manifest, atomic swap into place",
    }
