"""The VGG16 study: does a classifier gain from synthetic X-rays? Four protocols, all tested on the same real test split.

- trtr: train on real train.            - tstr: train on synthetic only (the seed's headline protocol).
- augment: real train + synthetic.      - pretrain: synthetic first, then real train.
Every synthetic phase holds, per class, `ratio` x that class's real training images (default 1): augment gives every
class the same synthetic fraction (no "looks synthetic => class" shortcut), tstr at ratio 1 trains on as many images
per class as trtr. The first images of each class in file order are taken (a reproducible subset of the export).
Model selection (early stopping) uses the real val split, never test. Positive class = PNEUMONIA (label 1).
Whenever VGG16 ran without ImageNet weights, every output says "random init"; with them, every output names the copy
(Keras's own file or the verified offline copy of cxr_utils.metrics.imagenet: `model`, `weights_source`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASS_NAMES, smoke_mode
from ..errors import UserError
from ..files import atomic_write_json
from ..metrics import imagenet
from ..metrics.classification import COUNTS, HEADLINE, METRICS, bootstrap_ci, classification_metrics, tune_threshold
from .classifier import EvalConfig, build_classifier, fit_two_stage, resolve_precision, resolve_weights, start_fit, to_vgg_input
from .inputs import _class_counts, load_real, load_synthetic_folder

PROTOCOLS: tuple[str, ...] = ("trtr", "tstr", "augment", "pretrain")
PROTOCOL_TEXT = {
    "trtr": "train on real, test on real",
    "tstr": "train on synthetic, test on real",
    "augment": "train on real + synthetic, test on real",
    "pretrain": "train on synthetic, then fine-tune on real, test on real",
}


# ------------------------------------------------------------------------------------------- counts


def check_ratio(protocol: str, ratio: float) -> float:
    """The synthetic ratio as a float; UserError if negative, or 0 for tstr (it would train on nothing)."""
    r = float(ratio)
    if not np.isfinite(r) or r < 0:
        raise UserError(f"--synthetic-ratio {ratio}: must be a number >= 0 (synthetic images per real training image)")
    if protocol == "tstr" and r == 0:
        raise UserError("--synthetic-ratio 0: tstr would train on no images; use a ratio > 0")
    return r


def select_synthetic(synthetic: tuple[np.ndarray, np.ndarray], real_labels: np.ndarray, ratio: float,
                     folder: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the first round(ratio x that class's real training images) synthetic images in file order."""
    from .synthetic import first_per_class, per_class_for_ratio

    counts = per_class_for_ratio(list(_class_counts(real_labels).values()), ratio)
    return first_per_class(*synthetic, counts, folder, why=f"synthetic ratio {ratio:g} x the real training images")


def train_set(protocol: str, real_train: tuple[np.ndarray, np.ndarray],
              synthetic: tuple[np.ndarray, np.ndarray] | None, ratio: float = 1.0,
              folder: str | os.PathLike | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The ordered training phases (name, images, labels) of a protocol. Every synthetic phase holds, per class,
    `ratio` x that class's real training images (select_synthetic): augment gives every class the same synthetic
    fraction, and tstr at ratio 1 trains per class on as many images as trtr."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: use one of {', '.join(PROTOCOLS)}")
    if protocol != "trtr" and synthetic is None:
        raise UserError(f"--synthetic: protocol {protocol} needs a synthetic folder (write one with `python -m cxr_utils sample`)")
    xr, yr = real_train
    if protocol == "trtr":
        return [("real", xr, yr)]
    xs, ys = select_synthetic(synthetic, yr, check_ratio(protocol, ratio), folder)  # type: ignore[arg-type]
    if protocol == "tstr":
        return [("synthetic", xs, ys)]
    if protocol == "augment":
        return [("real+synthetic", np.concatenate([xr, xs]), np.concatenate([yr, ys]))]
    return ([("synthetic", xs, ys)] if len(ys) else []) + [("real", xr, yr)]  # ratio 0: nothing to pretrain on


def phase_counts(phases: Sequence[tuple[str, np.ndarray, np.ndarray]], real_labels: np.ndarray) -> dict[str, Any]:
    """Per phase, the exact per-class counts of real and of synthetic training images."""
    real = _class_counts(real_labels)
    out = {}
    for name, _, yy in phases:
        r = real if "real" in name.split("+") else dict.fromkeys(real, 0)
        out[name] = {"real": r, "synthetic": {c: n - r[c] for c, n in _class_counts(yy).items()}}
    return out


@dataclass(frozen=True)
class RunOptions:
    """How a protocol is run (not what it trains on): the classifier's weights, seeds, config and log, and what a
    resumed study hands back.

    weights: "auto" | "imagenet" | "none" or a file (resolve_weights). cfg None: EvalConfig (smoke sizes under
    CXR_SMOKE). resolved: resolve_weights(weights) done once by the caller for several protocols (offline, each failed
    download attempt costs seconds: about 15 s here); None resolves here. done: seed -> a per-seed entry made earlier
    (a resumed study reads them back from disk): not trained again. on_seed(entry) runs as soon as a seed's
    classifier is tested (the study writes the entry to disk there).
    """

    weights: str = "auto"
    seeds: int = 1
    cfg: EvalConfig | None = None
    verbose: int = 0
    log: Callable[[str], Any] = print
    resolved: tuple[Path | None, str, str | None] | None = None
    done: dict[int, dict[str, Any]] | None = None
    on_seed: Callable[[dict[str, Any]], Any] | None = None


def run_protocol(protocol: str, real: dict[str, tuple[np.ndarray, np.ndarray]],
                 synthetic: tuple[np.ndarray, np.ndarray] | None = None, ratio: float = 1.0,
                 folder: str | os.PathLike | None = None, provenance: dict[str, Any] | None = None,
                 options: RunOptions | None = None) -> dict[str, Any]:
    """Train/test one protocol over `options.seeds` seeds; `real` maps 'train'|'val'|'test' to (uint8 images, labels).

    synthetic: (images, labels) of the synthetic folder `folder`, of which `ratio` x the real training images per
    class are used (train_set); provenance: extra fields of the result. Every number of the result is computed from
    the per-seed entries as stored (probabilities rounded to 6 decimals), so reused entries (options.done) give the
    same result."""
    o = options or RunOptions()
    cfg = (o.cfg or (EvalConfig.smoke() if smoke_mode() else EvalConfig())).validate()
    if o.seeds < 1:
        raise UserError(f"--seeds {o.seeds}: must be >= 1")
    x_te, y_te = real["test"]
    s = _check_images(x_te, synthetic)
    phases = train_set(protocol, real["train"], synthetic, ratio, folder)
    ratio_used = None if protocol == "trtr" else float(ratio)
    label = protocol if ratio_used is None else f"{protocol} x{ratio_used:g}"
    _check_phases(protocol, phases)
    weights_path, weights_label, note = o.resolved or resolve_weights(o.weights)
    tag = imagenet.model_tag(weights_path)  # says random init, or which ImageNet copy
    clf = _Classifier(cfg, weights_path, resolve_precision(cfg))
    notes = [note] if note else []
    x_va, y_va = real.get("val", (np.zeros((0, s, s), np.uint8), np.zeros(0, np.int64)))
    if not len(x_va):
        notes.append("no real val split: fixed epochs, no early stopping (test is never used for selection)")
    per_seed = _per_seed(o, clf, phases, (x_va, y_va), (x_te, y_te), f"{label} | {tag} | {clf.precision}")
    mean, std = _seed_stats(per_seed, (*METRICS, *COUNTS))
    tuned = [e["tuned"] for e in per_seed if "tuned" in e]
    mean_tuned = _seed_stats(tuned, ("threshold", *HEADLINE, *COUNTS))[0] if tuned else None  # AUC has no threshold
    probs_all = [np.asarray(e["test_probs"], np.float64) for e in per_seed]
    result = {
        "protocol": protocol, "protocol_text": PROTOCOL_TEXT[protocol], "model": tag,
        "weights": weights_label, "weights_requested": o.weights, "weights_source": imagenet.weights_source(weights_path),
        "precision": clf.precision, "notes": notes,
        "positive_class": CLASS_NAMES[1], "threshold": cfg.threshold,
        "threshold_tuning": ("per seed on the real val split: the threshold with the highest balanced accuracy "
                             "(Youden's J), ties to the one nearest 0.5; test never chooses it") if tuned else None,
        "mean_tuned": mean_tuned,
        "synthetic_ratio": ratio_used, "n_train": {name: _class_counts(yy) for name, _, yy in phases},
        "counts": phase_counts(phases, real["train"][1]),
        "n_val": _class_counts(y_va), "n_test": _class_counts(y_te), "image_size": s,
        "seeds": [e["seed"] for e in per_seed], "mean": mean, "std": std,
        "ci95": bootstrap_ci(y_te, probs_all, cfg.bootstrap, seed=cfg.seed, threshold=cfg.threshold),
        "ci95_method": f"percentile bootstrap over test images ({cfg.bootstrap} resamples) of the seed-mean",
        "per_seed": per_seed, "test_labels": [int(v) for v in np.asarray(y_te).ravel()],
        "config": dataclasses.asdict(cfg), "smoke": smoke_mode(), **(provenance or {}),
    }
    return result


def _check_images(x_te: np.ndarray, synthetic: tuple[np.ndarray, np.ndarray] | None) -> int:
    """The real image size S; UserError on an empty real test split or synthetic images of another size."""
    if len(x_te) == 0:
        raise UserError("--data: the real test split is empty; rebuild the cache with `python -m cxr_utils prepare`")
    s = int(x_te.shape[1])
    if synthetic is not None and (synthetic[0].ndim < 3 or synthetic[0].shape[1] != s):
        raise UserError(f"--synthetic: images are {synthetic[0].shape[1]}x{synthetic[0].shape[1]} but the real data is "
                        f"{s}x{s}; export from a generator trained at size {s}")
    return s


def _check_phases(protocol: str, phases: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """UserError naming a training phase that lacks a class."""
    for name, _, yy in phases:
        missing = [n for n, k in _class_counts(yy).items() if k == 0]
        if missing:
            raise UserError(f"protocol {protocol}: the {name} training set has no {', '.join(missing)} images; "
                            f"check --data / --synthetic")


@dataclass(frozen=True)
class _Classifier:
    """What every seed of a protocol builds and trains: the settings, the VGG16 start and the precision."""

    cfg: EvalConfig
    weights_path: Path | None
    precision: str


def _per_seed(o: RunOptions, clf: _Classifier, phases: Sequence[tuple[str, np.ndarray, np.ndarray]],
              val_split: tuple[np.ndarray, np.ndarray], test_split: tuple[np.ndarray, np.ndarray],
              prefix: str) -> list[dict[str, Any]]:
    """Every seed's entry, trained here or handed back in o.done; one log line each, `[prefix | seed N]`."""
    import keras

    cfg, (x_va, y_va), (x_te, y_te) = clf.cfg, val_split, test_split
    done = o.done or {}
    todo = [cfg.seed + i for i in range(o.seeds) if cfg.seed + i not in done]
    if todo:  # the VGG16 inputs (float32, 3 channels) only when a classifier is trained
        val = (to_vgg_input(x_va), np.asarray(y_va, np.float32)) if len(x_va) else None
        x_test = to_vgg_input(x_te)
        inputs = [(name, to_vgg_input(xx), np.asarray(yy).astype(np.int64)) for name, xx, yy in phases]
    per_seed = []
    for i in range(o.seeds):
        seed = cfg.seed + i
        if seed in done:
            entry, how = done[seed], " (finished earlier, not retrained)"
        else:
            t0 = time.perf_counter()
            start_fit(seed, cfg.deterministic)
            model, base = build_classifier(int(x_te.shape[1]), cfg, clf.weights_path, precision=clf.precision)
            stages: list[dict[str, Any]] = []
            for phase in inputs:
                stages += fit_two_stage(model, base, phase, val, cfg, o.verbose, clf.precision)
            entry = _seed_entry(seed, model, x_test, y_te, val, cfg.threshold, stages)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            keras.backend.clear_session()  # free the graph between seeds
            how = ""
            if o.on_seed is not None:
                o.on_seed(entry)
        per_seed.append(entry)
        o.log(f"[{prefix} | seed {seed}]{how} " + _seed_line(entry, cfg.threshold))
    return per_seed


def _seed_entry(seed: int, model: Any, x_test: np.ndarray, y_te: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None,
                threshold: float, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed's test (and val-tuned) results, from its probabilities rounded to 6 decimals as the JSON keeps them."""
    def probs_of(x: np.ndarray) -> np.ndarray:
        return np.round(model.predict(x, batch_size=256, verbose=0).ravel().astype(np.float64), 6)

    probs = probs_of(x_test)
    entry = {"seed": seed, **classification_metrics(y_te, probs, threshold), "stages": stages,
             "test_probs": [float(p) for p in probs]}
    if val is not None:
        val_probs = probs_of(val[0])
        t = tune_threshold(np.asarray(val[1]), val_probs, threshold)
        entry["tuned"] = {"threshold": t, **{k: v for k, v in classification_metrics(y_te, probs, t).items()
                                             if k != "roc_auc"}}  # AUC does not depend on the threshold
        entry["val_probs"] = [float(p) for p in val_probs]
    return entry


def _seed_line(entry: dict[str, Any], threshold: float) -> str:
    """The log line of one seed: metrics and counts at the threshold, and at the val-tuned one."""
    m = entry
    auc_txt = f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "n/a"
    tuned_txt = ""
    if "tuned" in entry:
        tm = entry["tuned"]
        tuned_txt = (f" | val-tuned threshold {tm['threshold']:.3f}: acc {tm['accuracy']:.4f} f1 {tm['f1']:.4f} "
                     f"tn/fp/fn/tp {tm['tn']}/{tm['fp']}/{tm['fn']}/{tm['tp']}")
    return (f"threshold {threshold}: acc {m['accuracy']:.4f} prec {m['precision']:.4f} rec {m['recall']:.4f} "
            f"f1 {m['f1']:.4f} auc {auc_txt} tn/fp/fn/tp {m['tn']}/{m['fp']}/{m['fn']}/{m['tp']}" + tuned_txt)


def _seed_stats(entries: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and std (ddof 1; 0 for one seed) over seeds of each key, skipping None; None where no seed has it."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for k in keys:
        vals = [e[k] for e in entries if e.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
        std[k] = float(np.std(vals, ddof=1)) if len(vals) > 1 else (0.0 if vals else None)
    return mean, std


# ------------------------------------------------------------------------------------------- files


def evaluate(npz: str | os.PathLike, protocol: str, synthetic: str | os.PathLike | None = None, ratio: float = 1.0,
             out: str | os.PathLike | None = None, extra: dict[str, Any] | None = None,
             options: RunOptions | None = None) -> dict[str, Any]:
    """Load data (and synthetic images), run one protocol at one synthetic ratio (synthetic images per class = ratio x
    real training images), and write the results JSON atomically if `out`. options None: ImageNet weights, one seed."""
    real, prov = load_real(npz)
    prov.update(extra or {})
    syn = None
    if protocol != "trtr" or synthetic is not None:
        if synthetic is None:
            raise UserError(f"--synthetic: protocol {protocol} needs a synthetic folder (write one with `python -m cxr_utils sample`)")
        syn, sprov = load_synthetic_folder(synthetic, int(real["test"][0].shape[1]))
        prov.update(sprov)
        if protocol == "trtr":
            syn = None  # loaded only to validate and record it; trtr never trains on it
    res = run_protocol(protocol, real, syn, ratio, synthetic, prov, options or RunOptions(weights="imagenet"))
    if out is not None:
        atomic_write_json(out, res)
    return res
