"""Generative metrics of a synthetic folder: what `python -m cxr_utils metrics` (and notebook 04) computes and writes.

Loads the real cache and the synthetic folder, turns both into features (cxr_utils.metrics.features), applies every metric
(cxr_utils.metrics.distributions) overall and per class, adds label fidelity, and writes the JSON.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import CLASS_NAMES
from ..errors import UserError
from ..files import atomic_write_json
from ..metrics.distributions import feature_metrics
from ..metrics.features import Extractor, build_extractors, predict_proba, train_domain_classifier
from ..metrics.fidelity import label_fidelity


def evaluate_synthetic(real_images: dict[str, np.ndarray], real_labels: dict[str, np.ndarray], synth_images: np.ndarray,
                       synth_labels: np.ndarray, extractors: Sequence[Extractor],
                       class_names: Sequence[str] = CLASS_NAMES, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """All feature metrics per extractor, overall and per class; real_* are dicts keyed 'train' and 'test'."""
    results: dict[str, Any] = {}
    for ex in extractors:
        f_tr, f_te, f_sy = ex(real_images["train"]), ex(real_images["test"]), ex(synth_images)
        entry = {"overall": feature_metrics(f_tr, f_te, f_sy, seed=seed, **kw), "per_class": {}}
        for c, name in enumerate(class_names):
            mtr, mte, msy = real_labels["train"] == c, real_labels["test"] == c, synth_labels == c
            entry["per_class"][name] = feature_metrics(f_tr[mtr], f_te[mte], f_sy[msy], seed=seed, **kw)
        results[ex.name] = entry
    return results


@dataclass(frozen=True)
class MetricsOptions:
    """How the metrics are computed: the feature extractor(s) (`build_extractors`), the seed of every random draw
    (domain classifier, KID subsets, random CNN) and smoke sizes (fewer domain-classifier epochs and KID subsets)."""

    extractor: str = "auto"
    seed: int = 0
    smoke: bool = False


def run_metrics(npz: str | os.PathLike, synthetic: str | os.PathLike, extractor: str = "auto", seed: int = 0,
                smoke: bool = False, out: str | os.PathLike | None = None, command: str | None = None) -> dict[str, Any]:
    """Everything `python -m cxr_utils metrics` reports for a cache and a synthetic folder; writes JSON if `out`."""
    from .inputs import load_real, load_synthetic_folder

    real, prov = load_real(npz)
    syn, _ = load_synthetic_folder(synthetic, int(real["train"][0].shape[1]))
    return metrics_of(real, syn, prov, synthetic, MetricsOptions(extractor, seed, smoke), out=out, command=command)


def metrics_of(real: dict[str, tuple[np.ndarray, np.ndarray]], syn: tuple[np.ndarray, np.ndarray], prov: dict[str, Any],
               synthetic: str | os.PathLike, options: MetricsOptions | None = None,
               out: str | os.PathLike | None = None, command: str | None = None) -> dict[str, Any]:
    """run_metrics on arrays already loaded (inputs.load_real / load_synthetic_folder), as the study holds them;
    options None: MetricsOptions() (auto extractor, seed 0, full sizes)."""
    o = options or MetricsOptions()
    extractor, seed, smoke = o.extractor, o.seed, o.smoke
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = real["train"], real["val"], real["test"]
    if len(x_tr) < 2 or len(x_te) < 1:
        raise UserError(f"--data {prov['data']}: needs real train and test images (train {len(x_tr)}, test {len(x_te)}); "
                        f"rebuild with `prepare`")
    s = int(x_tr.shape[1])
    syn_x, syn_y = syn
    domain = train_domain_classifier(x_tr, y_tr, x_va, y_va, epochs=2 if smoke else 15, seed=seed)
    exs, notes = build_extractors(extractor, s, x_tr, domain_model=domain, seed=seed)
    kw = dict(kid_subsets=10 if smoke else 100)
    res = {
        "data": prov["data"], "synthetic": str(synthetic), "source": prov["source"], "image_size": s, "seed": int(seed),
        "smoke": bool(smoke), "notes": notes, "command": command,
        "reference": "FID/KID/PRDC against the real train split; memorization: train vs held-out test",
        "extractors": evaluate_synthetic({"train": x_tr, "test": x_te}, {"train": y_tr, "test": y_te}, syn_x, syn_y, exs,
                                         seed=seed, **kw),
        "label_fidelity": {"classifier": "domain classifier trained on real train split",
                           "real_test_accuracy": float(((predict_proba(domain, x_te) >= 0.5) == y_te).mean()),
                           **label_fidelity(predict_proba(domain, syn_x), syn_y)},
    }
    if out is not None:
        atomic_write_json(out, _json_safe(res))
    return res


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN/inf)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def metrics_table(res: dict[str, Any]) -> Any:
    """A pandas table (one row per extractor x class) of a run_metrics result."""
    import pandas as pd

    rows = []
    for ex, entry in res["extractors"].items():
        for scope, m in [("overall", entry["overall"]), *entry["per_class"].items()]:
            p = m.get("prdc") or {}
            mem = m.get("memorization") or {}
            rows.append({"extractor": ex, "class": scope, "n_real": m.get("n_real"), "n_synthetic": m["n_synthetic"],
                         "FID": m.get("fid"),
                         "KID": m.get("kid_mean"), "precision": p.get("precision"), "recall": p.get("recall"),
                         "density": p.get("density"), "coverage": p.get("coverage"),
                         "memorized_frac": mem.get("fraction_below_threshold")})
    return pd.DataFrame(rows)
