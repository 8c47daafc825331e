"""Generator quality during training: scores of the EMA generator against real images, the best-generator rule
and the collapse alarm.

Every `eval_every` epochs the trainer asks a `QualityProbe` to score the EMA generator. The probe draws the same
noise every time (so epochs are comparable), renders `n_per_class` images per class and measures:

- diversity (per class, and their mean): within-class pixel spread of the synthetic images relative to the real
  training images of that class (1.0 = as varied as the real images; ~0 = one image per class, i.e. collapse);
- train coverage: the share of real training images that are the nearest same-class neighbour (pixel RMS distance)
  of at least one synthetic image (a collapsed generator is nearest to one or two of them);
- fidelity: the share of synthetic images that a classifier trained on the real train split (classes weighted)
  labels as intended;
- KID and precision / recall / density / coverage (PRDC) against the held-out reference split (val when the
  source has one), in the feature space of that classifier (named in every row).

Rows go to the run folder's quality.csv (one per evaluated epoch; trimmed to the checkpoint on resume like
metrics.csv) and to TensorBoard. `select_best` is the rule that keeps generator-best.keras (see its docstring).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import io as cio
from .config import CLASS_NAMES, SMOKE
from .data import gray_images
from .sample import generate, noise_for

# thresholds of the collapse alarm: far below the real images' variety (the seed recipe on the 16-image sample
# reaches 0.10 diversity and 2 of 10 training images covered: both trip it; a learning generator sits near 0.4+)
ALARM_DIVERSITY = 0.2
ALARM_TRAIN_COVERAGE = 0.3
# "learned" (the make-run check of issue 10): varied images that reproduce most of the training images' variety
LEARNED_DIVERSITY = 0.4
LEARNED_TRAIN_COVERAGE = 0.7


def min_fidelity(num_classes: int) -> float:
    """The fidelity gate of select_best for K classes: halfway from chance to perfect, (1 + 1/K) / 2.

    A generator whose images a classifier of the real ones cannot tell apart by class is not "best", whatever its KID
    says. (At 0.5, chance for two classes, the rule kept a step-500 generator of blurred blobs on the sample, fidelity
    0.57, because 4 val images make KID noisy: benchmarks/xray_recipes.py, issue 14.)
    """
    return (1.0 + 1.0 / max(1, int(num_classes))) / 2.0


MIN_FIDELITY = min_fidelity(len(CLASS_NAMES))  # 0.75 for NORMAL vs PNEUMONIA
# the quality classifier: at least this many steps, early stopping only on a reference split this large
MIN_CLASSIFIER_STEPS = 30 if SMOKE else 300  # smoke (CI): fewer steps, same code path
MIN_EARLY_STOPPING = 50
# auto eval_every: about this many generator steps between evaluations
AUTO_EVAL_STEPS = 500
QUALITY_FILE = "quality.csv"
BEST_FILE = "generator-best.keras"
BEST_JSON = "best.json"
CLASSIFIER_FILE = "quality-classifier.keras"
SUMMARY_KEYS = ("diversity", "train_coverage", "fidelity", "kid", "precision", "recall", "density", "coverage")


def eval_interval(eval_every: int, steps_per_epoch: int) -> int:
    """Epochs between evaluations: eval_every if > 0; 0 = auto (about AUTO_EVAL_STEPS steps); < 0 = never (0)."""
    if eval_every < 0:
        return 0
    if eval_every > 0:
        return eval_every
    return max(1, round(AUTO_EVAL_STEPS / max(1, steps_per_epoch)))


def is_eval_epoch(epoch: int, interval: int, last_epoch: int) -> bool:
    """True if `epoch` (1-based) is scored: every `interval` epochs and always the last one (interval 0: never)."""
    return interval > 0 and (epoch % interval == 0 or epoch == last_epoch)


# ------------------------------------------------------------------------------------------ pixel scores


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def diversity(x_syn: np.ndarray, y_syn: np.ndarray, x_real: np.ndarray, y_real: np.ndarray,
              num_classes: int) -> list[float | None]:
    """Per class: mean per-pixel std of the synthetic images / that of the real images (None if either lacks 2)."""
    xs, xr = _flat(x_syn), _flat(x_real)
    ys, yr = np.asarray(y_syn), np.asarray(y_real)
    out: list[float | None] = []
    for c in range(num_classes):
        s, r = xs[ys == c], xr[yr == c]
        if len(s) < 2 or len(r) < 2:
            out.append(None)
            continue
        real_spread = r.std(axis=0).mean()
        out.append(float(s.std(axis=0).mean() / real_spread) if real_spread > 0 else None)
    return out


def train_coverage(x_syn: np.ndarray, y_syn: np.ndarray, x_train: np.ndarray, y_train: np.ndarray,
                   num_classes: int) -> tuple[list[int], list[int]]:
    """Per class: (training images that are some same-class synthetic image's nearest neighbour, training images)."""
    from .metrics import nearest_real

    ys, yt = np.asarray(y_syn), np.asarray(y_train)
    covered, total = [], []
    for c in range(num_classes):
        ti = np.flatnonzero(yt == c)
        total.append(int(len(ti)))
        s = np.asarray(x_syn)[ys == c]
        if not len(ti) or not len(s):
            covered.append(0)
            continue
        idx, _ = nearest_real(s, np.asarray(x_train)[ti])
        covered.append(int(len(np.unique(idx))))
    return covered, total


# ------------------------------------------------------------------------------------------ the probe


@dataclass
class QualityProbe:
    """Everything an evaluation needs, built once per run: real images, the classifier, reference features, noise."""

    class_names: tuple[str, ...]
    x_train: np.ndarray  # uint8 (N, S, S): the training images diversity and coverage compare with
    y_train: np.ndarray
    y_ref: np.ndarray  # labels of the held-out real images (val) the reference features come from
    ref_feats: np.ndarray
    reference: str  # e.g. "val split (4 images)"
    classifier: Any
    extractor: Any  # metrics.Extractor: the classifier's penultimate features
    noise: np.ndarray  # (K * n_per_class, latent): the same noise at every evaluation
    labels: np.ndarray
    seed: int = 0

    @property
    def n_per_class(self) -> int:
        """Synthetic images per class in every evaluation."""
        return len(self.labels) // len(self.class_names)

    def score_images(self, x_syn: np.ndarray) -> dict[str, Any]:
        """Every score of synthetic uint8 images (K * n_per_class, S, S) rendered from self.noise/self.labels."""
        from .features import predict_proba
        from .metrics import kid_and_prdc, label_fidelity

        k, ys = len(self.class_names), self.labels
        div = diversity(x_syn, ys, self.x_train, self.y_train, k)
        cov, tot = train_coverage(x_syn, ys, self.x_train, self.y_train, k)
        fid = label_fidelity(predict_proba(self.classifier, x_syn), ys, self.class_names)
        feats = self.extractor(x_syn)
        valid_div = [d for d in div if d is not None]
        row: dict[str, Any] = {"diversity": float(np.mean(valid_div)) if valid_div else None,
                               "train_coverage": sum(cov) / sum(tot) if sum(tot) else None,
                               "train_covered": int(sum(cov)), "train_images": int(sum(tot)), "fidelity": fid["overall"]}
        scopes = [("", np.ones(len(ys), bool), np.ones(len(self.y_ref), bool))]
        scopes += [(f"_{n}", ys == c, self.y_ref == c) for c, n in enumerate(self.class_names)]
        for suffix, ms, mr in scopes:
            m = kid_and_prdc(self.ref_feats[mr], feats[ms], k=5, kid_subsets=50, seed=self.seed)
            row[f"kid{suffix}"] = m["kid_mean"]
            for name in ("precision", "recall", "density", "coverage"):
                row[f"{name}{suffix}"] = (m["prdc"] or {}).get(name)
        for c, n in enumerate(self.class_names):
            row[f"diversity_{n}"] = div[c]
            row[f"train_coverage_{n}"] = cov[c] / tot[c] if tot[c] else None
            row[f"fidelity_{n}"] = fid["per_class"][n]
        return row

    def score(self, generator: Any) -> dict[str, Any]:
        """Render the probe's noise with `generator` and score the images."""
        return self.score_images(generate(generator, self.noise, self.labels))


def build_probe(class_names: Sequence[str], x_train: np.ndarray, y_train: np.ndarray, x_ref: np.ndarray | None,
                y_ref: np.ndarray | None, reference: str, latent_dim: int, n_per_class: int, seed: int,
                classifier_path: Path | None = None, coverage_keep: np.ndarray | None = None,
                features: str = "domain") -> QualityProbe:
    """A probe for one run; the classifier is trained on the real train split (or loaded from classifier_path).

    features: the space of KID and PRDC, "domain" (the classifier's penultimate layer) or "vgg16" (ImageNet VGG16,
    features.vgg16_extractor; ExtractorUnavailable when its weights cannot be had).

    The classifier uses the whole train split; diversity and train coverage use the training images at
    `coverage_keep` (all if None). The trainer keeps at most n_per_class // 4 per class there, so that n_per_class
    synthetic images can cover them at any data size (128 images cannot cover a 2,000-image class); the 10-image
    sample keeps all of its images. Without a held-out reference (x_ref None or empty) the training images serve.
    """
    import keras

    from .features import domain_extractor, train_domain_classifier, vgg16_extractor

    if features not in ("domain", "vgg16"):
        raise ValueError(f"build_probe: features must be domain or vgg16, got {features!r}")
    x_all, y_all = gray_images(x_train), np.asarray(y_train).astype(np.int64)
    held_out = x_ref is not None and len(x_ref) > 0
    x_ref, y_ref = (gray_images(x_ref), np.asarray(y_ref).astype(np.int64)) if held_out else (x_all, y_all)
    clf = None
    if classifier_path is not None and classifier_path.is_file():
        try:
            clf = keras.models.load_model(classifier_path, safe_mode=True, compile=False)
        except Exception:  # an unreadable file (e.g. an older format): retrain, it is a pure function of the data
            clf = None
    if clf is None:
        # the reference split doubles as the classifier's early-stopping set only when it is really held out and
        # large enough to choose an epoch (4 val images would stop a 10-image classifier at a constant guess)
        stop_on = held_out and len(y_ref) >= MIN_EARLY_STOPPING
        clf = train_domain_classifier(x_all, y_all, x_ref if stop_on else None, y_ref if stop_on else None, epochs=15,
                                      seed=seed, num_classes=len(class_names), min_steps=MIN_CLASSIFIER_STEPS)
        if classifier_path is not None:
            with cio.atomic_path(classifier_path) as tmp:
                clf.save(tmp)
    extractor = vgg16_extractor() if features == "vgg16" else domain_extractor(clf)
    keep = np.arange(len(y_all)) if coverage_keep is None else np.asarray(coverage_keep)
    return QualityProbe(tuple(class_names), x_all[keep], y_all[keep], y_ref, extractor(x_ref), reference, clf, extractor,
                        noise_for(seed + 7919, len(class_names) * n_per_class, latent_dim),  # never the training noise
                        np.repeat(np.arange(len(class_names), dtype=np.int32), n_per_class), seed)


# ------------------------------------------------------------------------------------------ rule and alarm


def collapse_alarm(row: dict[str, Any]) -> str | None:
    """One line when diversity or train coverage is far below the real images' (thresholds above), else None."""
    why = []
    d, c = row.get("diversity"), row.get("train_coverage")
    if d is not None and d < ALARM_DIVERSITY:
        why.append(f"within-class diversity {d:.2f} of the real images' (alarm below {ALARM_DIVERSITY})")
    if c is not None and c < ALARM_TRAIN_COVERAGE:
        why.append(f"only {row.get('train_covered')} of {row.get('train_images')} training images are a synthetic "
                   f"image's nearest neighbour (alarm below {ALARM_TRAIN_COVERAGE:.0%})")
    if not why:
        return None
    return (f"quality alarm at epoch {row.get('epoch')}: " + " and ".join(why) + ": the generator has collapsed (or "
            "has not learned yet). Try another recipe (--recipe / RECIPE), fewer epochs (generator-best.keras keeps the "
            "best evaluation so far) or more augmentation (diffaugment).")


def learned_check(scores: dict[str, Any] | None) -> tuple[bool, str]:
    """(passed, one line) for the "learned" bar: diversity >= 0.4 of the real images' and >= 70 % of the training
    images covered by a same-class synthetic nearest neighbour."""
    if not scores:
        return False, "no quality evaluation recorded (quality tracking off?)"
    d, c = _num(scores.get("diversity")), _num(scores.get("train_coverage"))
    n, of = scores.get("train_covered"), scores.get("train_images")
    ok = d is not None and c is not None and d >= LEARNED_DIVERSITY and c >= LEARNED_TRAIN_COVERAGE
    dtxt = "n/a" if d is None else f"{d:.2f}"
    ntxt = f"{int(float(n))} of {int(float(of))}" if n not in (None, "") and of not in (None, "") else "n/a"
    return ok, (f"{'learned' if ok else 'NOT learned'}: within-class diversity {dtxt} of the real images' (bar "
                f"{LEARNED_DIVERSITY}), {ntxt} training images covered by a same-class synthetic nearest neighbour "
                f"(bar {LEARNED_TRAIN_COVERAGE:.0%})")


def select_best(rows: Sequence[dict[str, Any]], num_classes: int = len(CLASS_NAMES)) -> dict[str, Any] | None:
    """The evaluation whose generator is kept as generator-best.keras.

    Rule: among evaluations without a collapse alarm and with fidelity >= min_fidelity(K), the lowest KID against the
    held-out reference split; a tie goes to the later epoch; with no such evaluation, the lowest KID of all.
    Why: KID is unbiased at small sample sizes (FID is not when images < feature dimensions) and is what keras-io's
    gan_ada monitors; it compares whole distributions, so it rewards fidelity and variety together. The gates stop it
    from preferring images a person would reject: a collapsed generator (one image per class) or one that draws the
    wrong class can still sit close to the reference in a feature space built from a handful of images.
    """
    scored = [r for r in rows if _num(r.get("kid")) is not None]
    if not scored:
        return None
    gate = min_fidelity(num_classes)
    ok = [r for r in scored if not r.get("alarm") and (_num(r.get("fidelity")) or 0.0) >= gate]
    pool = ok or scored
    return min(pool, key=lambda r: (_num(r["kid"]), -int(r["epoch"])))


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    return f if math.isfinite(f) else None


# ------------------------------------------------------------------------------------------ quality.csv


def columns(class_names: Sequence[str]) -> list[str]:
    """quality.csv columns: epoch, step, the overall scores, per-class scores, bookkeeping."""
    cols = ["epoch", "step", *SUMMARY_KEYS, "train_covered", "train_images"]
    cols += [f"{m}_{n}" for n in class_names for m in SUMMARY_KEYS]
    return [*cols, "n_per_class", "reference", "features", "seconds", "alarm"]


def read_rows(path: Path, max_epoch: int | None = None) -> list[dict[str, str]]:
    """Rows of quality.csv (epoch <= max_epoch if given)."""
    return cio.read_epoch_csv(path, max_epoch)


def write_rows(path: Path, rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Rewrite quality.csv atomically (a kill mid-write leaves the previous whole file)."""
    cio.atomic_write_csv(path, rows, columns(class_names))


def summary(row: dict[str, Any]) -> str:
    """One line of an evaluation's headline scores."""
    parts = []
    for k in SUMMARY_KEYS:
        v = _num(row.get(k))
        if v is not None:
            parts.append(f"{k} {v:.3f}" if k != "kid" else f"kid {v:.4f}")
    cov = f" ({row.get('train_covered')}/{row.get('train_images')} training images covered)" if row.get("train_images") else ""
    return f"quality @ epoch {row.get('epoch')}: " + ", ".join(parts) + cov


def describe_run(run_dir: str | os.PathLike) -> list[str]:
    """Lines for a person: the kept generator (epoch, scores, rule), the last alarm if any, and the learned verdict."""
    rows = read_rows(Path(run_dir) / QUALITY_FILE)
    if not rows:
        return ["no quality evaluation in this run (quality tracking off: eval_every -1)"]
    best = load_best(run_dir)
    lines = []
    if best is not None:
        lines.append(f"kept generator: epoch {best['epoch']} (step {best['step']}) of {len(rows)} evaluations; "
                     f"rule: {best['rule']}")
        lines.append("its scores: " + ", ".join(f"{k} {v:.3g}" for k, v in best["scores"].items() if v is not None))
    alarm = rows[-1].get("alarm")
    if alarm:
        lines.append(alarm)
    lines.append(learned_check(best["scores"] if best else None)[1])
    return lines


def load_best(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """best.json of a run (epoch and scores of generator-best.keras), or None."""
    p = Path(run_dir) / BEST_JSON
    return cio.read_json(p) if p.is_file() else None


# ------------------------------------------------------------------------------------------ the tracker


class QualityTracker:
    """Evaluations during a run: quality.csv rows, TensorBoard scalars, the alarm line and generator-best.keras.

    Order at an evaluated epoch (the trainer checkpoints that epoch first): score -> quality.csv (atomic) ->
    generator-best.keras + best.json when the rule picks this epoch. After a kill, `reconcile` (on resume) trims the
    rows to the restored checkpoint, scores that epoch if its row is missing and saves its generator if the rule picks
    it and best.json does not say so yet: each evaluation appears once and best.json always matches quality.csv.
    """

    def __init__(self, run_dir: Path, probe: QualityProbe, interval: int, last_epoch: int, writer: Any = None,
                 log: Any = print):
        self.run_dir, self.probe, self.interval, self.last_epoch = Path(run_dir), probe, interval, last_epoch
        self.writer, self.log = writer, log
        self.num_classes = len(probe.class_names)
        self.path = self.run_dir / QUALITY_FILE
        self.rows: list[dict[str, Any]] = []

    def due(self, epoch: int) -> bool:
        """True if this epoch is scored."""
        return is_eval_epoch(epoch, self.interval, self.last_epoch)

    def reconcile(self, start_epoch: int, step: int, generator: Any) -> None:
        """On (re)start at `start_epoch`: trim, catch up a missed evaluation of that epoch, re-save a missed best."""
        self.rows = read_rows(self.path, start_epoch)
        write_rows(self.path, self.rows, self.probe.class_names)
        if start_epoch > 0 and self.due(start_epoch) and not any(int(r["epoch"]) == start_epoch for r in self.rows):
            self.evaluate(start_epoch, step, generator)
            return
        best = select_best(self.rows, self.num_classes)
        want = None if best is None else int(best["epoch"])
        saved_epoch = (load_best(self.run_dir) or {}).get("epoch")
        if saved_epoch == want:
            return
        if want == start_epoch:  # the kill came between the row and the best-save: the state is at hand
            self._save_best(best, generator)
        elif saved_epoch is not None:  # the kept file is from epochs a resume lost: drop it rather than mislead
            for name in (BEST_JSON, BEST_FILE):
                (self.run_dir / name).unlink(missing_ok=True)
            self.log(f"quality: {BEST_FILE} of epoch {saved_epoch} belonged to epochs this resume re-runs; removed "
                     f"until the next evaluation")

    def evaluate(self, epoch: int, step: int, generator: Any) -> dict[str, Any]:
        """Score the generator now, record the row, say so (and the alarm), keep it if it is the best."""
        import time

        t0 = time.perf_counter()
        row = self.probe.score(generator)
        row.update(epoch=int(epoch), step=int(step), n_per_class=self.probe.n_per_class,
                   reference=self.probe.reference, features=self.probe.extractor.name,
                   seconds=round(time.perf_counter() - t0, 3))
        alarm = collapse_alarm(row)
        row["alarm"] = alarm or ""
        self.rows.append(row)
        write_rows(self.path, self.rows, self.probe.class_names)
        self._tensorboard(row)
        was = bool(self.rows[-2]["alarm"]) if len(self.rows) > 1 else False
        # the whole alarm once when it starts; while it lasts, a tag on the summary line
        self.log(summary(row) + (" [quality alarm continues]" if alarm and was else ""))
        if alarm and not was:
            self.log(alarm)
        elif was and not alarm:
            self.log(f"quality alarm cleared at epoch {epoch}")
        best = select_best(self.rows, self.num_classes)
        if best is not None and int(best["epoch"]) == int(epoch):
            self._save_best(row, generator)
        return row

    def _save_best(self, row: dict[str, Any], generator: Any) -> None:
        with cio.atomic_path(self.run_dir / BEST_FILE) as tmp:
            generator.save(tmp)
        scores = {k: _num(row.get(k)) for k in (*SUMMARY_KEYS, "train_covered", "train_images")}
        cio.atomic_write_json(self.run_dir / BEST_JSON, {
            "epoch": int(row["epoch"]), "step": int(row["step"]), "file": BEST_FILE, "scores": scores,
            "reference": row.get("reference"), "features": row.get("features"),
            "rule": "lowest KID against the held-out reference among evaluations without a collapse alarm and with "
                    f"fidelity >= {min_fidelity(self.num_classes):.3g} (cxr_utils.quality.select_best)"})

    def _tensorboard(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        import tensorflow as tf

        with self.writer.as_default():
            for k, v in row.items():
                f = _num(v) if not isinstance(v, str) else None
                if f is not None and k not in ("epoch", "step"):
                    tf.summary.scalar(f"quality/{k}", f, step=int(row["epoch"]))
        self.writer.flush()
