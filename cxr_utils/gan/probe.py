"""The quality scores of images against real ones, and the probe that measures a generator with them.

Pixel scores against the training images (diversity, train coverage), the artefact score (hf_share: the share of
spectral energy above 3/4 of Nyquist, metrics.high_frequency_share, beside what held-out real images hold), the
classifier's label fidelity, KID and PRDC against the held-out reference; `QualityProbe.measure` scores any labelled images, synthetic ones during training and
real stand-ins for the real-vs-real baseline (cxr_utils.metrics.real_baseline), with the same code. The rule, the alarm,
quality.csv and the tracker are in cxr_utils.gan.tracker, which re-exports the names here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import files as cio
from ..config import smoke_mode
from ..data import gray_images
from ..metrics.real_baseline import REAL_COLUMNS, finite, one_blas_thread
from ..metrics.sample_scores import diversity, train_coverage
from .generate import generate, noise_for

# the quality classifier: at least this many steps, early stopping only on a reference split this large
MIN_CLASSIFIER_STEPS = 300
SMOKE_CLASSIFIER_STEPS = 30  # smoke (CI): fewer steps, same code path
MIN_EARLY_STOPPING = 50


# ------------------------------------------------------------------------------------------ pixel scores


# ------------------------------------------------------------------------------------------ the probe


@dataclass
class QualityProbe:
    """Everything an evaluation needs, built once per run: real images, the classifier, reference features, noise,
    and the real-vs-real baseline (cxr_utils.metrics.real_baseline; None: the fixed bars judge)."""

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
    baseline: dict[str, Any] | None = None

    @property
    def n_per_class(self) -> int:
        """Synthetic images per class in every evaluation."""
        return len(self.labels) // len(self.class_names)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classifier probabilities, features) of uint8 images: what fidelity and KID / PRDC read."""
        from ..metrics.features import predict_proba

        return predict_proba(self.classifier, x), self.extractor(x)

    def measure(self, x: np.ndarray, ys: np.ndarray, probs: np.ndarray, feats: np.ndarray,
                sides: Sequence[str] = ("train", "reference"), ref: tuple[np.ndarray, np.ndarray] | None = None,
                kid: bool = True) -> dict[str, Any]:
        """The scores of images x labelled ys (synthetic, or real stand-ins for the baseline): "train" = diversity,
        train coverage and fidelity (against the training images), "reference" = KID and PRDC (against the held-out
        reference, or `ref` = (features, labels) of a part of it; kid False: PRDC only); overall and per class."""
        from ..metrics.artefacts import high_frequency_share
        from ..metrics.distributions import kid_and_prdc, prdc
        from ..metrics.fidelity import label_fidelity

        k, ys = len(self.class_names), np.asarray(ys)
        row: dict[str, Any] = {}
        if "train" in sides:
            div = diversity(x, ys, self.x_train, self.y_train, k)
            cov, tot = train_coverage(x, ys, self.x_train, self.y_train, k)
            fid = label_fidelity(probs, ys, self.class_names)
            hf = high_frequency_share(x) if len(x) else np.zeros(0)
            valid_div = [d for d in div if d is not None]
            row.update(diversity=float(np.mean(valid_div)) if valid_div else None,
                       train_coverage=sum(cov) / sum(tot) if sum(tot) else None, train_covered=int(sum(cov)),
                       train_images=int(sum(tot)), fidelity=fid["overall"], hf_share=float(hf.mean()) if len(hf) else None)
            for c, n in enumerate(self.class_names):
                row[f"diversity_{n}"] = div[c]
                row[f"train_coverage_{n}"] = cov[c] / tot[c] if tot[c] else None
                row[f"fidelity_{n}"] = fid["per_class"][n]
                row[f"hf_share_{n}"] = float(hf[ys == c].mean()) if (ys == c).any() else None
        if "reference" in sides:
            rf, ry = ref if ref is not None else (self.ref_feats, self.y_ref)
            scopes = [("", np.ones(len(ys), bool), np.ones(len(ry), bool))]
            scopes += [(f"_{n}", ys == c, ry == c) for c, n in enumerate(self.class_names)]
            for suffix, ms, mr in scopes:
                if kid:
                    m = kid_and_prdc(rf[mr], feats[ms], k=5, kid_subsets=50, seed=self.seed)
                    row[f"kid{suffix}"] = m["kid_mean"]
                else:  # as kid_and_prdc lowers k to what the smaller set allows
                    kk = min(5, int(mr.sum()) - 1, int(ms.sum()) - 1)
                    m = {"prdc": prdc(rf[mr], feats[ms], kk) if kk >= 1 else None}
                for name in ("precision", "recall", "density", "coverage"):
                    row[f"{name}{suffix}"] = (m["prdc"] or {}).get(name)
        return row

    def balanced_kid(self, row: dict[str, Any]) -> float | None:
        """The class-balanced KID of a row: the mean of its per-class KIDs (see select_best)."""
        return balanced_kid(row, self.class_names)

    def score_images(self, x_syn: np.ndarray) -> dict[str, Any]:
        """Every score of synthetic uint8 images (K * n_per_class, S, S) rendered from self.noise/self.labels, and
        the columns that set them beside the real-vs-real baseline."""
        from ..metrics.real_baseline import vs_real

        probs, feats = self.predict(x_syn)
        with one_blas_thread():
            row = self.measure(x_syn, self.labels, probs, feats)
            row["kid_balanced"] = self.balanced_kid(row)
            row.update(vs_real(self, x_syn, self.labels, probs, feats, row))
        return row

    def score(self, generator: Any) -> dict[str, Any]:
        """Render the probe's noise with `generator` and score the images."""
        return self.score_images(generate(generator, self.noise, self.labels))


@dataclass(frozen=True)
class ProbeImages:
    """The real images a probe judges by: the training split (the classifier learns all of it; diversity and train
    coverage compare with the rows at `coverage_keep`, all if None) and the held-out reference, named (e.g.
    "val split (4 images)"); x_ref None or empty: the training images serve as the reference."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_ref: np.ndarray | None
    y_ref: np.ndarray | None
    reference: str
    coverage_keep: np.ndarray | None = None


@dataclass(frozen=True)
class ProbeSettings:
    """What a probe renders and where it scores: the generator's latent size, synthetic images per class, the seed
    (the noise is seed + 7919's, never the training noise), and KID/PRDC's feature space ("domain" or "vgg16")."""

    latent_dim: int
    n_per_class: int
    seed: int
    features: str = "domain"


def build_probe(class_names: Sequence[str], real: ProbeImages, settings: ProbeSettings,
                classifier_path: Path | None = None, baseline_path: Path | None = None) -> QualityProbe:
    """A probe for one run; the classifier is trained on the real train split (or loaded from classifier_path).

    features: the space of KID and PRDC, "domain" (the classifier's penultimate layer) or "vgg16" (ImageNet VGG16,
    features.vgg16_extractor; ExtractorUnavailable when its weights cannot be had).

    The classifier uses the whole train split; diversity and train coverage use the training images at
    `coverage_keep` (all if None). The trainer keeps n_per_class per class there (all of a smaller class): as many
    training images as synthetic ones, so a coverage score is neither saturated (many more synthetic images than
    training images) nor capped (a 3,100-image class cannot be covered by 128). Without a held-out reference (x_ref
    None or empty) the training images serve. The real-vs-real baseline (metrics.real_baseline) is read back from
    baseline_path when the classifier was too (a resume), else measured now and written there.
    """
    from ..metrics import real_baseline
    from ..metrics.features import domain_extractor, vgg16_extractor

    if settings.features not in ("domain", "vgg16"):
        raise ValueError(f"build_probe: features must be domain or vgg16, got {settings.features!r}")
    k, seed = len(class_names), settings.seed
    x_all, y_all = gray_images(real.x_train), np.asarray(real.y_train).astype(np.int64)
    held_out = real.x_ref is not None and len(real.x_ref) > 0
    x_ref, y_ref = (gray_images(real.x_ref), np.asarray(real.y_ref).astype(np.int64)) if held_out else (x_all, y_all)
    clf, loaded = _probe_classifier(classifier_path, x_all, y_all, (x_ref, y_ref) if held_out else None, k, seed)
    extractor = vgg16_extractor() if settings.features == "vgg16" else domain_extractor(clf)
    keep = np.arange(len(y_all)) if real.coverage_keep is None else np.asarray(real.coverage_keep)
    probe = QualityProbe(tuple(class_names), x_all[keep], y_all[keep], y_ref, extractor(x_ref), real.reference, clf,
                         extractor, noise_for(seed + 7919, k * settings.n_per_class, settings.latent_dim),  # never the training noise
                         np.repeat(np.arange(k, dtype=np.int32), settings.n_per_class), seed)
    # a baseline belongs to the classifier it was measured with: read back only alongside it
    probe.baseline = real_baseline.load_or_compute(baseline_path, loaded, probe, x_ref if held_out else None,
                                                   y_ref if held_out else None)
    return probe


def _probe_classifier(path: Path | None, x: np.ndarray, y: np.ndarray, held_out: tuple[np.ndarray, np.ndarray] | None,
                      num_classes: int, seed: int) -> tuple[Any, bool]:
    """(the probe's classifier, whether it was loaded from `path`): loaded when readable, else trained on (x, y) and
    saved there; it is a pure function of the data, so an unreadable file (e.g. an older format) is retrained."""
    import keras

    from ..metrics.features import train_domain_classifier

    if path is not None and path.is_file():
        try:
            return keras.models.load_model(path, safe_mode=True, compile=False), True
        except Exception:  # an unreadable file (e.g. an older format): retrain, it is a pure function of the data
            pass
    # the reference split doubles as the classifier's early-stopping set only when it is really held out and large
    # enough to choose an epoch (4 val images would stop a 10-image classifier at a constant guess)
    stop_on = held_out is not None and len(held_out[1]) >= MIN_EARLY_STOPPING
    x_val, y_val = held_out if stop_on else (None, None)
    clf = train_domain_classifier(x, y, x_val, y_val, epochs=15, seed=seed, num_classes=num_classes,
                                  min_steps=SMOKE_CLASSIFIER_STEPS if smoke_mode() else MIN_CLASSIFIER_STEPS)
    if path is not None:
        with cio.atomic_path(path) as tmp:
            clf.save(tmp)
    return clf, False


def balanced_kid(row: dict[str, Any], class_names: Sequence[str] | None = None) -> float | None:
    """The mean of a row's per-class KIDs (`kid_<class>`), None if a class has none.

    class_names None: the classes are read off the row's `kid_<class>` keys (a quality.csv row of any run)."""
    names = list(class_names) if class_names is not None else [
        k[4:] for k in row if k.startswith("kid_") and k not in ("kid_balanced", *REAL_COLUMNS)]
    vals = [finite(row.get(f"kid_{n}")) for n in names]
    if not vals or any(v is None for v in vals):
        return None
    return float(np.mean(vals))
