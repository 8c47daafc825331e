"""Which generator does each feature space's KID keep? The quality tracker's evaluations re-scored in two spaces.

A run trained with a checkpoint at every evaluated epoch (`--train-steps`: the x-ray recipe on the real sample, an
evaluation and a checkpoint every 500 steps, `checkpoints.KEEP_CHECKPOINTS` raised so none is pruned) is re-scored here: each evaluated epoch's EMA generator
renders the tracker's own noise and labels (fit.quality_probe), and the images are scored in the tracker's feature
space (the run's domain classifier, penultimate 64-d) and in ImageNet VGG16's (block5 avg-pooled, 512-d): KID and PRDC
against the held-out val split (what the tracker uses) and against the train split (more images). The JSON says which
evaluation each space's KID keeps; `--grids` writes one image grid per evaluated epoch to judge them by eye.
`--cost` times the VGG16 features at full scale (256 synthetic + 1,050 val images, 64 px) on this machine.

    python -m cxr_utils prepare --source sample
    python benchmarks/feature_ranking.py --run runs/r19-rank/xray --data data/sample-64.npz --train-steps 6000 \
        --out runs/r19-rank/ranking.json --grids runs/r19-rank/grids --cost
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

import numpy as np  # noqa: E402

SPACES = ("domain", "vgg16")
KEYS = ("kid", "precision", "recall", "density", "coverage")


def train_run(run_dir: Path, npz: Path, steps: int, every: int = 500, seed: int = 0) -> dict[str, Any]:
    """Train the default x-ray recipe on the cache's train split, evaluating and checkpointing every `every` steps and
    keeping every checkpoint; fit.train_from_npz's summary."""
    from benchmarks.xray_recipes import recipe_config
    from cxr_utils import data
    from cxr_utils.gan import checkpoints, fit

    n_train = int(len(data.load(npz).subset("train")[1]))
    cfg = recipe_config("xray", steps, n_train, seed)
    spe = max(1, n_train // cfg.batch_size)
    ep = max(1, every // spe)
    cfg = cfg.replace(eval_every=ep, checkpoint_every=ep, sample_every=ep, checkpoint_minutes=0)
    keep, checkpoints.KEEP_CHECKPOINTS = checkpoints.KEEP_CHECKPOINTS, 10**6  # every evaluated epoch stays on disk
    try:
        return fit.train_from_npz(npz, run_dir, cfg, progress=False)
    finally:
        checkpoints.KEEP_CHECKPOINTS = keep


def evaluated_epochs(run_dir: Path) -> list[int]:
    """Epochs of quality.csv that have a checkpoint on disk."""
    from cxr_utils.gan import tracker
    from cxr_utils.gan.checkpoints import Checkpoints

    have = {Checkpoints(run_dir).epoch_of(p) for p in Checkpoints(run_dir).files()}
    return [int(r["epoch"]) for r in tracker.read_rows(run_dir / tracker.QUALITY_FILE) if int(r["epoch"]) in have]


def score_run(run_dir: Path, npz: Path, grids: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Every evaluated epoch scored in each feature space (val and train references) and the epoch each KID keeps."""
    from cxr_utils import data, drawing
    from cxr_utils.files import read_json
    from cxr_utils.gan import fit, generate, runs
    from cxr_utils.gan.run_folder import RunFolder
    from cxr_utils.metrics import distributions

    cfg = runs.config_of(read_json(RunFolder(run_dir).config))
    ds = data.load(npz)
    (x, y), (xv, yv) = ds.subset("train"), ds.subset("val")
    probes = {f: fit.quality_probe(cfg, x, y, (xv, yv, "val split"), run_dir, features=f) for f in SPACES}
    train_feats = {f: p.extractor(data.gray_images(x)) for f, p in probes.items()}
    rows = []
    for ep in evaluated_epochs(run_dir):
        gen, _ = runs.load_generator(run_dir, which=ep)
        p0 = probes[SPACES[0]]
        imgs = generate.generate(gen, p0.noise, p0.labels)
        row: dict[str, Any] = {"epoch": ep}
        for f, p in probes.items():
            t0 = time.perf_counter()
            s = p.score_images(imgs)
            row[f] = {k: s[k] for k in KEYS} | {"seconds": round(time.perf_counter() - t0, 3)}
            on_train = distributions.kid_and_prdc(train_feats[f], p.extractor(imgs), k=5, kid_subsets=50, seed=p.seed)
            row[f]["kid_vs_train"] = on_train["kid_mean"]
            row[f]["coverage_vs_train"] = (on_train["prdc"] or {}).get("coverage")
            for k in ("diversity", "train_coverage", "fidelity"):
                row[k] = s[k]
        rows.append(row)
        log(f"epoch {ep}: " + "  ".join(f"{f} KID {row[f]['kid']:+.4f} (vs train {row[f]['kid_vs_train']:+.4f})"
                                        for f in SPACES) + f"  diversity {row['diversity']:.3f} fidelity {row['fidelity']:.3f}")
        if grids is not None:
            n = 8
            real = [x[y == c][:n] for c in range(len(cfg.class_names))]
            syn = [imgs[p0.labels == c][:n] for c in range(len(cfg.class_names))]
            fig = drawing.image_grid([*real, *syn], [f"real {c} (train)" for c in cfg.class_names]
                                   + [f"SYNTHETIC {c}" for c in cfg.class_names],
                                   title=f"epoch {ep}: domain KID {row['domain']['kid']:+.3f}, VGG16 KID "
                                         f"{row['vgg16']['kid']:+.3f} (vs 4 val images)", cell_inches=0.9)
            drawing.save_figure(fig, grids / f"epoch-{ep:05d}.png", dpi=90)
            drawing.close(fig)
    kept = {}
    for f in SPACES:
        for ref in ("kid", "kid_vs_train"):
            best = min(rows, key=lambda r, f=f, ref=ref: r[f][ref])
            kept[f"{f}:{ref}"] = best["epoch"]
    ranks = {f: [r["epoch"] for r in sorted(rows, key=lambda r, f=f: r[f]["kid"])] for f in SPACES}
    return {"run": str(run_dir), "data": str(npz), "reference": probes["domain"].reference,
            "spaces": {f: p.extractor.name for f, p in probes.items()}, "n_synthetic": int(len(probes["domain"].labels)),
            "rows": rows, "kept_by_lowest_kid": kept, "kid_order": ranks,
            "spearman_domain_vs_vgg16": _spearman([r["domain"]["kid"] for r in rows], [r["vgg16"]["kid"] for r in rows])}


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def vgg16_cost(npz: Path, n_synthetic: int = 256, n_val: int = 1050, input_sizes: tuple[int, ...] = (64, 128),
               repeats: int = 2) -> dict[str, Any]:
    """Seconds of the VGG16 features for n_synthetic and n_val 64 px images (the sample tiled: timing only)."""
    from cxr_utils import data
    from cxr_utils.metrics import features

    x, _ = data.load(npz).subset("train")
    out: dict[str, Any] = {"note": "timing only: the real sample images tiled to full-scale counts",
                           "n_synthetic": n_synthetic, "n_val": n_val, "image_size": int(x.shape[1])}
    for size in input_sizes:
        ex = features.vgg16_extractor(input_size=size)
        ex(x[:2])  # build
        for name, n in (("synthetic", n_synthetic), ("val", n_val)):
            xs = np.resize(x, (n, *x.shape[1:]))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ex(xs)
                times.append(time.perf_counter() - t0)
            out[f"{name}_seconds_at_{size}px"] = round(min(times), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: score a run's evaluations in both feature spaces; JSON and optional grids."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder with a checkpoint at every evaluated epoch")
    ap.add_argument("--data", required=True, help="the cache .npz the run trained on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-steps", type=int, default=None, help="first train the run folder (must not exist) this long")
    ap.add_argument("--grids", default=None, help="write one image grid per evaluated epoch here")
    ap.add_argument("--cost", action="store_true", help="also time the VGG16 features at full-scale counts")
    args = ap.parse_args(argv)
    from benchmarks.machine import machine_info
    from cxr_utils.files import atomic_write_json

    trained = None
    if args.train_steps:
        if Path(args.run).exists():
            print(f"error: --run {args.run}: exists; --train-steps trains a new run folder", file=sys.stderr)
            return 2
        trained = {k: v for k, v in train_run(Path(args.run), Path(args.data), args.train_steps).items() if k != "metrics"}
    res = score_run(Path(args.run), Path(args.data), Path(args.grids) if args.grids else None)
    res["trained"] = trained
    if args.cost:
        res["vgg16_cost"] = vgg16_cost(Path(args.data))
    res["machine"] = machine_info()
    res["command"] = "python benchmarks/feature_ranking.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, res)
    print(f"kept by lowest KID: {res['kept_by_lowest_kid']}; Spearman(domain, VGG16 KID) {res['spearman_domain_vs_vgg16']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
