"""The whole evaluation of notebook 04 in one call: every VGG16 protocol, results.json, the generative metrics
(metrics.json) and the figures.

`python -m cxr_utils study` and notebooks/04_evaluate_vgg16.ipynb both call `run_study`, so a headless run writes the
same results.json as the notebook on the same inputs (only the recorded "command" differs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import evaluation, plots, report
from .config import SMOKE
from .errors import UserError
from .io import atomic_write_bytes, atomic_write_json

RESULTS_JSON = "results.json"
METRICS_JSON = "metrics.json"
# the figures a study-grade run copies into assets/ for the README
CURATED = ("04_protocol_comparison.png", "04_roc.png", "04_confusion_tstr.png", "04_history_tstr.png")


@dataclass
class Study:
    """What `run_study` computed and where it wrote it."""

    results: list[dict[str, Any]]  # one evaluation.run_protocol result per protocol
    seed_check: dict[str, Any]  # the seed repository's headline checked against every confusion matrix
    metrics: dict[str, Any]  # generative.run_metrics: FID/KID/PRDC/memorization/label fidelity
    results_json: Path
    metrics_json: Path
    figures: dict[str, Path] = field(default_factory=dict)  # file name -> PNG written


def parse_protocols(protocols: str | Sequence[str]) -> list[str]:
    """'trtr,tstr' or a sequence -> a list of known protocols in the given order; UserError on an unknown one."""
    names = [p.strip() for p in (protocols.split(",") if isinstance(protocols, str) else protocols) if p.strip()]
    bad = [p for p in names if p not in evaluation.PROTOCOLS]
    if bad or not names:
        raise UserError(f"--protocols {','.join(names) or '(empty)'}: use a comma-separated list of "
                        f"{', '.join(evaluation.PROTOCOLS)}")
    return list(dict.fromkeys(names))


def run_study(npz: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike,
              protocols: str | Sequence[str] = evaluation.PROTOCOLS, weights: str = "auto", seeds: int | None = 1,
              epochs: int | None = None, input_size: int | None = None, bootstrap: int | None = None,
              extractor: str = "auto", smoke: bool = SMOKE, figures_dir: str | os.PathLike | None = None,
              verbose: int = 0, command: str | None = None, log: Callable[[str], None] = print) -> Study:
    """Run every protocol and the generative metrics; write OUT/results.json, OUT/metrics.json and the figures
    (into figures_dir, default OUT/figures). epochs/input_size/bootstrap of None keep the (smoke) defaults; seeds None
    means 3 on the full data set and 1 on a small source or in smoke mode."""
    from . import generative

    names = parse_protocols(protocols)
    out = Path(out)
    figures_dir = Path(figures_dir) if figures_dir is not None else out / "figures"
    cfg = evaluation.eval_config(smoke, epochs=epochs, input_size=input_size, bootstrap=bootstrap)
    real, prov = evaluation.load_real(npz)
    syn, syn_prov = evaluation.load_synthetic_folder(synthetic, int(real["test"][0].shape[1]))
    prov.update(syn_prov, command=command, smoke=bool(smoke))
    if seeds is None:  # 3 seeds where the numbers mean something; a small source is a pipeline check
        seeds = 3 if prov["full_dataset"] and not smoke else 1
    log(f"real data  : {npz} (source {prov['source']}, {prov['n_images']} images; full data set: {prov['full_dataset']})")
    log(f"real splits: { {s: evaluation._class_counts(y) for s, (_, y) in real.items()} }")
    log(f"synthetic  : {synthetic} {prov['n_synthetic']}")
    log(f"classifier : {cfg}")

    results = []
    resolved = evaluation.resolve_weights(weights)  # once for every protocol: offline, each attempt waits ~15 s
    for protocol in names:
        res = evaluation.run_protocol(protocol, real, syn, weights=weights, seeds=seeds, cfg=cfg, provenance=prov,
                                      verbose=verbose, log=log, resolved=resolved)
        for note in res["notes"]:
            log(f"  note: {note}")
        results.append(res)
    if not all(evaluation.counts_consistent(e) for r in results for e in r["per_seed"]):
        raise RuntimeError("a protocol's metrics disagree with its confusion counts")  # a bug, never user input
    seed_check = report.search_confusion_matrices(**report.SEED_CLAIM, **report.KAGGLE_TEST)
    results_json = atomic_write_json(out / RESULTS_JSON, {"protocols": results, "seed_claim_check": seed_check})

    figures: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        figures[name] = plots.save_figure(fig, figures_dir / name)
        plots.plt.close(fig)

    save(plots.protocol_comparison(results), "04_protocol_comparison.png")
    for r in results:
        save(plots.classifier_history(r), f"04_history_{r['protocol']}.png")
        save(plots.confusion_heatmap(r), f"04_confusion_{r['protocol']}.png")
    save(plots.roc_curves(results), "04_roc.png")

    # the arrays the protocols used: the closest pairs below index exactly these
    gen = generative.metrics_of(real, syn, prov, synthetic, extractor=extractor, seed=0, smoke=smoke,
                                out=out / METRICS_JSON, command=command)
    for note in gen["notes"]:
        log(f"note: {note}")
    ex_name, ex_entry = next(iter(gen["extractors"].items()))
    pairs = ex_entry["overall"]["memorization"]["closest_pairs"][: (4 if smoke else 8)]
    x_train = real["train"][0]
    save(plots.image_grid([[syn[0][p["synthetic"]] for p in pairs], [x_train[p["train"]] for p in pairs]],
                          row_titles=["SYNTHETIC", "real train"],
                          title=f"closest pairs in {ex_name} features (distance "
                                + ", ".join(f"{p['distance']:.2f}" for p in pairs) + ")"), "04_closest_pairs.png")
    return Study(results, seed_check, gen, results_json, out / METRICS_JSON, figures)


def publish_figures(results: Sequence[dict[str, Any]], figures_dir: str | os.PathLike, assets_dir: str | os.PathLike,
                    names: Sequence[str] = CURATED) -> list[str] | None:
    """Copy the curated figures into assets_dir (the README's figures) if every result is study-grade (ImageNet
    weights, full data set, not smoke) and return their names; None, and assets_dir left alone, otherwise."""
    if not all(report.is_study_grade(r) for r in results):
        return None
    figures_dir, assets_dir = Path(figures_dir), Path(assets_dir)
    for name in names:
        if (figures_dir / name).is_file():
            atomic_write_bytes(assets_dir / name, (figures_dir / name).read_bytes())
    return list(names)
