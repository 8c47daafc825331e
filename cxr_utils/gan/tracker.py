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

Every score also sits beside what held-out real images reach when scored the same way (cxr_utils.metrics.real_baseline:
`<score>_vs_real`, 1.0 = as good as real images); the collapse alarm and the "learned" bar are fractions of that
baseline, or the fixed bars below when the held-out split is missing or too small (each row's `bars` says which).

Rows go to the run folder's quality.csv (one per evaluated epoch; trimmed to the checkpoint on resume like
metrics.csv) and to TensorBoard. `select_best` is the rule that keeps generator-best.keras (see its docstring).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import files as cio
from ..config import CLASS_NAMES
from ..metrics.real_baseline import REAL_BARS, REAL_COLUMNS, VS_REAL_COLUMNS, finite
from ..metrics.real_baseline import describe as describe_baseline
from . import run_folder
from .probe import MIN_CLASSIFIER_STEPS as MIN_CLASSIFIER_STEPS
from .probe import MIN_EARLY_STOPPING as MIN_EARLY_STOPPING
from .probe import QualityProbe as QualityProbe
from .probe import balanced_kid as balanced_kid
from .probe import build_probe as build_probe
from .probe import diversity as diversity
from .probe import train_coverage as train_coverage
from .run_folder import RunFolder

# The bars, as fractions of the real-vs-real baseline (metrics.real_baseline: a perfect generator scores ~1.0x). The
# alarm: far below real images' variety. "Learned" (the make-run check of issue 10): at least 40 % of the spread of
# held-out real images, and 70 % of the training images that as many held-out real images cover. Why these numbers:
# on real digits (benchmarks/quality_bars.py, tests/test_quality_baseline.py) unseen real images standing in for a
# perfect generator score about 1.0x (within 0.2), one that draws only half of each class's variety scores about
# 0.5-0.65x coverage and fails the learned bar, one repeating two images per class scores < 0.1x and trips the alarm;
# diversity was already a ratio to the real spread, so its fractions are the numbers set on it before.
ALARM_DIVERSITY_VS_REAL = 0.2
ALARM_COVERAGE_VS_REAL = 0.3
LEARNED_DIVERSITY_VS_REAL = 0.4
LEARNED_COVERAGE_VS_REAL = 0.7
# The fixed bars (absolute values), used without a baseline to judge by (no held-out split, or fewer than
# real_baseline.MIN_FOR_BARS held-out images of a class): set on the 10-image sample (the seed recipe reaches 0.10
# diversity and 2 of 10 training images covered; a learning generator 0.4+), where they read "diversity >= 0.4 of
# the real spread, >= 7 of 10 covered"
ALARM_DIVERSITY = 0.2
ALARM_TRAIN_COVERAGE = 0.3
LEARNED_DIVERSITY = 0.4
LEARNED_TRAIN_COVERAGE = 0.7
# The artefact gate of select_best: at most this much of the training images' high-frequency energy (hf_share_vs_real,
# real_baseline.artefact_reference). Real images stay well inside it: random halves of real digits 0.94-1.05x (5-95 %
# of 200 draws of 300 against 300), the sample's 4 held-out X-rays 0.86x and its 2 test X-rays 1.19x of its 10 training
# ones (benchmarks/artefact_calibration.py); the 1.5x of issue 20, above which a checkerboard is visible in the grids
# (make run galleries at 2.5x before resize + convolution). Fine banding it misses: see STRIPE_MAX
ARTEFACT_MAX = 1.5
# The stripe line: no row or column frequency in the upper half of the band (0.25-0.5 cycles/pixel) should hold more
# than this multiple of the training images' share there (stripe_vs_real, metrics.artefacts.stripe_ratio): the fine
# periodic banding of a nearest-neighbour upsample, which hf_share misses (a make-run generator at 1.13x hf_share had
# 2.7x at 0.41 cycles/pixel). Calibrated on real images by benchmarks/artefact_calibration.py (real digits at the
# probe's count 1.0-1.2x; but the sample's 2 real test X-rays reach 1.57x against its 10 training X-rays: with so few
# training images the line is a guide, not a verdict). Shown in quality.csv,
# the summaries and notebook 02's figure, NOT a gate of select_best: used as one on the sample (issue 20), it kept
# step-500 generators of grey blobs on 2 of 6 runs, the only evaluations without banding; a blurred image has no
# stripes, and no score here yet tells an unfinished image from a finished one (fidelity rated those blobs 0.97+)
STRIPE_MAX = 1.5


def fidelity_bar(num_classes: int) -> float:
    """The fidelity select_best prefers: FIDELITY_BAR, or min_fidelity(K) if that is higher (never for K >= 2)."""
    return max(FIDELITY_BAR, min_fidelity(num_classes))


def reaches_fidelity_bar(row: dict[str, Any], num_classes: int) -> bool:
    """Whether a row's fidelity reaches fidelity_bar(K), or, when the real-vs-real baseline judges the row (`bars`
    "real baseline"), at least what the held-out real images reach (fidelity_vs_real >= 1)."""
    if (finite(row.get("fidelity")) or 0.0) >= fidelity_bar(num_classes):
        return True
    fx = finite(row.get("fidelity_vs_real"))
    return row.get("bars") == REAL_BARS and fx is not None and fx >= 1.0


def min_fidelity(num_classes: int) -> float:
    """The fidelity gate of select_best for K classes: halfway from chance to perfect, (1 + 1/K) / 2.

    A generator whose images a classifier of the real ones cannot tell apart by class is not "best", whatever its KID
    says. (At 0.5, chance for two classes, the rule kept a step-500 generator of blurred blobs on the sample, fidelity
    0.57, because 4 val images make KID noisy: benchmarks/xray_recipes.py, issue 14.)
    """
    return (1.0 + 1.0 / max(1, int(num_classes))) / 2.0


MIN_FIDELITY = min_fidelity(len(CLASS_NAMES))  # 0.75 for NORMAL vs PNEUMONIA
# The fidelity the kept generator should reach (issue 20's bar for the default recipe): select_best keeps an evaluation
# at or above it when any passes the other gates, and falls back to min_fidelity(K) only when none does. Why: on the
# sample the class-balanced KID rests on 4 held-out X-rays, one of which the quality classifier itself labels as the
# other class (the real images' own fidelity is 0.75), so the per-class KIDs favour a generator that draws the same
# confusion: on 3 of 5 runs of the default and its antialias variant (make run; benchmarks/xray_recipes.py seeds 0
# and 1) the lowest KID fell on an evaluation at fidelity 0.78-0.82 between evaluations at 0.89-1.0. 0.85 is a fixed
# bar, not measured on real images (the sample's 4 held-out X-rays reach 0.75), so where the real-vs-real baseline
# judges (enough held-out images: Kaggle's val split, digits) an evaluation that reaches the held-out real images' own
# fidelity passes too (reaches_fidelity_bar): a bar above what real images reach would favour caricatures of the
# classes. Digits generators score 0.97+ (benchmarks/generator_upgrade.py curves) and real digits about as much
FIDELITY_BAR = 0.85
# auto eval_every: about this many generator steps between evaluations
AUTO_EVAL_STEPS = 500
# the run folder's names (run_folder owns them; these aliases are what tests and plots import)
QUALITY_FILE = run_folder.QUALITY
BEST_FILE = run_folder.BEST_GENERATOR
BEST_JSON = run_folder.BEST_JSON
CLASSIFIER_FILE = run_folder.CLASSIFIER
BASELINE_FILE = run_folder.BASELINE
# hf_share: the artefact score (quality_scores; high-frequency energy, 1.0x = as much as held-out real images)
SUMMARY_KEYS = ("diversity", "train_coverage", "fidelity", "kid", "precision", "recall", "density", "coverage", "hf_share")


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


# ------------------------------------------------------------------------------------------ rule and alarm


def relative_scores(row: dict[str, Any]) -> tuple[float, float] | None:
    """(diversity, train coverage) as fractions of the real-vs-real baseline when the row is judged by it (`bars`
    "real baseline"); else None: the fixed bars judge (no held-out split, too few held-out images, or a row written
    before baselines)."""
    d, c = finite(row.get("diversity_vs_real")), finite(row.get("train_coverage_vs_real"))
    return None if d is None or c is None or row.get("bars") != REAL_BARS else (d, c)


def collapse_alarm(row: dict[str, Any]) -> str | None:
    """One line when diversity or train coverage is far below what held-out real images reach (fractions above;
    the fixed bars without a baseline), else None."""
    why = []
    d, c = finite(row.get("diversity")), finite(row.get("train_coverage"))
    covered = f"{row.get('train_covered')} of {row.get('train_images')}"
    rel = relative_scores(row)
    if rel is not None:
        dx, cx = rel
        if dx < ALARM_DIVERSITY_VS_REAL:
            why.append(f"within-class diversity {_f2(d)} of the real images' = {dx:.2f}x what held-out real images reach "
                       f"(alarm below {ALARM_DIVERSITY_VS_REAL}x)")
        if cx < ALARM_COVERAGE_VS_REAL:
            why.append(f"only {covered} training images are a synthetic image's nearest neighbour, {cx:.2f}x what as many "
                       f"held-out real images cover (alarm below {ALARM_COVERAGE_VS_REAL}x)")
    else:
        if d is not None and d < ALARM_DIVERSITY:
            why.append(f"within-class diversity {d:.2f} of the real images' (alarm below {ALARM_DIVERSITY}, a fixed bar)")
        if c is not None and c < ALARM_TRAIN_COVERAGE:
            why.append(f"only {covered} training images are a synthetic image's nearest neighbour (alarm below "
                       f"{ALARM_TRAIN_COVERAGE:.0%}, a fixed bar)")
    if not why:
        return None
    return (f"quality alarm at epoch {row.get('epoch')}: " + " and ".join(why) + ": the generator has collapsed (or "
            "has not learned yet). Try another recipe (--recipe / RECIPE), fewer epochs (generator-best.keras keeps the "
            "best evaluation so far) or more augmentation (diffaugment).")


def learned_check(scores: dict[str, Any] | None) -> tuple[bool, str]:
    """(passed, one line) for the "learned" bar: within-class diversity >= 0.4x and train coverage >= 0.7x what
    held-out real images reach (the real-vs-real baseline); without one, the fixed bars: diversity >= 0.4 of the real
    spread and >= 70 % of the training images covered by a same-class synthetic nearest neighbour. The line keeps the
    absolute values (diversity, covered n of N) beside the ratios."""
    if not scores:
        return False, "no quality evaluation recorded (quality tracking off?)"
    d, c = finite(scores.get("diversity")), finite(scores.get("train_coverage"))
    n, of = scores.get("train_covered"), scores.get("train_images")
    dtxt = "n/a" if d is None else f"{d:.2f}"
    ntxt = f"{int(float(n))} of {int(float(of))}" if n not in (None, "") and of not in (None, "") else "n/a"
    rel = relative_scores(scores)
    if rel is not None:
        dx, cx = rel
        ok = dx >= LEARNED_DIVERSITY_VS_REAL and cx >= LEARNED_COVERAGE_VS_REAL
        return ok, (f"{'learned' if ok else 'NOT learned'}: within-class diversity {dtxt} of the real images', {dx:.2f}x "
                    f"what held-out real images reach (bar {LEARNED_DIVERSITY_VS_REAL}x); {ntxt} training images covered "
                    f"by a same-class synthetic nearest neighbour, {cx:.2f}x what as many held-out real images cover "
                    f"(bar {LEARNED_COVERAGE_VS_REAL}x)")
    ok = d is not None and c is not None and d >= LEARNED_DIVERSITY and c >= LEARNED_TRAIN_COVERAGE
    bars = str(scores.get("bars") or "")
    why = bars[len("fixed: "):] if bars.startswith("fixed: ") else "no real-vs-real baseline"
    return ok, (f"{'learned' if ok else 'NOT learned'}: within-class diversity {dtxt} of the real images' (bar "
                f"{LEARNED_DIVERSITY}), {ntxt} training images covered by a same-class synthetic nearest neighbour "
                f"(bar {LEARNED_TRAIN_COVERAGE:.0%}); fixed bars: {why}")


def ranking_kid(row: dict[str, Any], class_names: Sequence[str] | None = None) -> float | None:
    """The KID select_best ranks by: the row's class-balanced KID, recomputed from its per-class KIDs when the row
    predates the kid_balanced column (a resumed older run is ranked on the same scale), else its overall KID."""
    v = finite(row.get("kid_balanced"))
    if v is None:
        v = balanced_kid(row, class_names)
    return v if v is not None else finite(row.get("kid"))


def rule_text(num_classes: int) -> str:
    """The best-generator rule in words (best.json's `rule`)."""
    return ("lowest class-balanced KID (the mean of the per-class KIDs against the held-out reference) among "
            f"evaluations without a collapse alarm, with fidelity >= {fidelity_bar(num_classes):.3g} (else >= "
            f"{min_fidelity(num_classes):.3g} when no evaluation reaches it; the held-out real images' own fidelity "
            "reaches it where the real-vs-real baseline judges) and an artefact score (high-frequency energy) at most "
            f"{ARTEFACT_MAX}x the training images' (cxr_utils.gan.tracker.select_best)")


def artefact_ok(row: dict[str, Any]) -> bool:
    """True unless the row's artefact score is over ARTEFACT_MAX x the training images' (a row without one passes).
    The stripe score is not gated (see STRIPE_MAX)."""
    hf = finite(row.get("hf_share_vs_real"))
    return hf is None or hf <= ARTEFACT_MAX


def stripes_ok(row: dict[str, Any]) -> bool | None:
    """Whether the row's stripe score is at most STRIPE_MAX x the training images' (None: not measured)."""
    v = finite(row.get("stripe_vs_real"))
    return None if v is None else v <= STRIPE_MAX


def select_best(rows: Sequence[dict[str, Any]], num_classes: int = len(CLASS_NAMES),
                class_names: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The evaluation whose generator is kept as generator-best.keras.

    Rule: among evaluations without a collapse alarm, with fidelity >= fidelity_bar(K) (FIDELITY_BAR, 0.85, or the
    held-out real images' own fidelity where the baseline judges: reaches_fidelity_bar) and an artefact score at most ARTEFACT_MAX x the training images' (artefact_ok), the lowest class-balanced KID: the mean
    over classes of each class's KID (synthetic images of class c against the reference images of class c); a tie goes
    to the later epoch; with no such evaluation, the same with fidelity >= min_fidelity(K) (halfway from chance), then
    without the artefact gate, then the lowest of all. Rows without per-class KIDs
    fall back to the overall KID. The stripe score is recorded, not gated (STRIPE_MAX says why).
    Why KID: it is unbiased at small sample sizes (FID is not when images < feature dimensions) and is what
    keras-io's gan_ada monitors; it compares whole distributions, so it rewards fidelity and variety together.
    Why class-balanced, and why the mean of per-class KIDs rather than a KID against a class-balanced reference: the
    probe draws the same number of images per class while the reference (val) follows the data's prior (Kaggle: 26 %
    NORMAL), so the overall KID rewards a generator whose class mix matches the reference, e.g. one that draws half of
    its NORMAL images from the PNEUMONIA distribution, over a faithful one (tests/test_quality_baseline.py builds that case). A
    class-balanced reference fixes the mix but still scores the pooled images, so a generator that swaps whole classes
    (NORMAL asked, PNEUMONIA drawn, and back) would look perfect; the per-class KIDs compare each class with itself,
    weigh every class alike whatever its share of the data, and are already in every quality.csv row, so rows written
    before this rule are ranked on the same scale. The price: each class's KID rests on that class's images only
    (noisier for a small class).
    The gates stop it from preferring images a person would reject: a collapsed generator (one image per class), one
    that draws the wrong class, or one whose images carry a checkerboard can still sit close to the reference
    in a feature space built from a handful of real images (on the sample, KID from 4 val images kept a step-1500
    generator at 2.4x the real high-frequency energy over one at 1.46x: benchmarks/xray_recipes.py, issue 20).
    """
    scored = [r for r in rows if ranking_kid(r, class_names) is not None]
    if not scored:
        return None
    gate = min_fidelity(num_classes)
    ok = [r for r in scored if not r.get("alarm") and (finite(r.get("fidelity")) or 0.0) >= gate]
    clean = [r for r in ok if artefact_ok(r)]
    pool = [r for r in clean if reaches_fidelity_bar(r, num_classes)] or clean or ok or scored
    return min(pool, key=lambda r: (ranking_kid(r, class_names), -int(r["epoch"])))


def _f2(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


# ------------------------------------------------------------------------------------------ quality.csv


def columns(class_names: Sequence[str]) -> list[str]:
    """quality.csv columns: epoch, step, the overall scores (and the class-balanced KID the rule ranks by), per-class
    scores, the scores beside the real-vs-real baseline, bookkeeping."""
    cols = ["epoch", "step", *SUMMARY_KEYS, "kid_balanced", "train_covered", "train_images"]
    cols += [f"{m}_{n}" for n in class_names for m in SUMMARY_KEYS]
    return [*cols, *VS_REAL_COLUMNS, *REAL_COLUMNS, "bars", "n_per_class", "reference", "features", "seconds", "alarm"]


def read_rows(path: Path, max_epoch: int | None = None) -> list[dict[str, str]]:
    """Rows of quality.csv (epoch <= max_epoch if given)."""
    return cio.read_epoch_csv(path, max_epoch)


def write_rows(path: Path, rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    """Rewrite quality.csv atomically (a kill mid-write leaves the previous whole file)."""
    cio.atomic_write_csv(path, rows, columns(class_names))


def summary(row: dict[str, Any]) -> str:
    """One line of an evaluation's headline scores (with x real: the fraction of what held-out real images reach)."""
    parts = []
    for k in (*SUMMARY_KEYS[:4], "kid_balanced", *SUMMARY_KEYS[4:]):
        v = finite(row.get(k))
        if v is None:
            continue
        x = finite(row.get(f"{k}_vs_real"))
        parts.append((f"{k} {v:.4f}" if k.startswith("kid") or k == "hf_share" else f"{k} {v:.3f}")
                     + (f" ({x:.2f}x real)" if x is not None else ""))
    stripe = finite(row.get("stripe_vs_real"))
    if stripe is not None:
        parts.append(f"stripes {stripe:.2f}x real" + ("" if stripes_ok(row) else f" (over the {STRIPE_MAX}x line)"))
    cov = f" ({row.get('train_covered')}/{row.get('train_images')} training images covered)" if row.get("train_images") else ""
    return f"quality @ epoch {row.get('epoch')}: " + ", ".join(parts) + cov


def describe_run(run_dir: str | os.PathLike) -> list[str]:
    """Lines for a person: the kept generator (epoch, scores, rule), the last alarm if any, and the learned verdict."""
    rows = read_rows(RunFolder(run_dir).quality_csv)
    if not rows:
        return ["no quality evaluation in this run (quality tracking off: eval_every -1)"]
    best = load_best(run_dir)
    lines = []
    if best is not None:
        lines.append(f"kept generator: epoch {best['epoch']} (step {best['step']}) of {len(rows)} evaluations; "
                     f"rule: {best['rule']}")
        lines.append("its scores: " + ", ".join(f"{k} {v:.3g}" for k, v in best["scores"].items()
                                                if v is not None and not isinstance(v, str)))
    alarm = rows[-1].get("alarm")
    if alarm:
        lines.append(alarm)
    lines.append(describe_baseline(load_baseline(run_dir)))
    lines.append(learned_check(best["scores"] if best else None)[1])
    return lines


def load_baseline(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """quality-baseline.json of a run (the real-vs-real baseline its scores sit beside), or None."""
    p = RunFolder(run_dir).baseline
    return cio.read_json(p) if p.is_file() else None


def load_best(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """best.json of a run (epoch and scores of generator-best.keras), or None."""
    p = RunFolder(run_dir).best_json
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
        self.path = RunFolder(run_dir).quality_csv
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
        best = select_best(self.rows, self.num_classes, self.probe.class_names)
        want = None if best is None else int(best["epoch"])
        saved = load_best(self.run_dir) or {}
        saved_epoch = saved.get("epoch")
        if saved_epoch == want:
            return
        if want == start_epoch:  # the kill came between the row and the best-save: the state is at hand
            self._save_best(best, generator)
            return
        kept = saved_epoch is not None and any(int(r["epoch"]) == int(saved_epoch) for r in self.rows)
        if kept and want is not None:
            # a run started under an earlier rule (best.json says which): its evaluations are all here, the rule now
            # prefers another whose generator is gone (only the newest checkpoints are kept): keep the file, say so
            self.log(f"quality: today's rule ({rule_text(self.num_classes)}) prefers epoch {want}; {BEST_FILE} stays "
                     f"epoch {saved_epoch}, kept by the earlier rule ({saved.get('rule')}), until an evaluation beats "
                     f"epoch {want}")
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
        best = select_best(self.rows, self.num_classes, self.probe.class_names)
        if best is not None and int(best["epoch"]) == int(epoch):
            self._save_best(row, generator)
        return row

    def _save_best(self, row: dict[str, Any], generator: Any) -> None:
        with cio.atomic_path(RunFolder(self.run_dir).best_generator) as tmp:
            generator.save(tmp)
        keys = (*SUMMARY_KEYS, "kid_balanced", "train_covered", "train_images", *VS_REAL_COLUMNS, *REAL_COLUMNS)
        scores: dict[str, Any] = {k: finite(row.get(k)) for k in keys}
        if scores["kid_balanced"] is None:  # a row written before the column: from its per-class KIDs
            scores["kid_balanced"] = balanced_kid(row, self.probe.class_names)
        # which bars judge these scores (learned_check reads it)
        scores["bars"] = row.get("bars") or "fixed: the row predates the real-vs-real baseline"
        cio.atomic_write_json(RunFolder(self.run_dir).best_json, {
            "epoch": int(row["epoch"]), "step": int(row["step"]), "file": BEST_FILE, "scores": scores,
            "reference": row.get("reference"), "features": row.get("features"),
            "rule": rule_text(self.num_classes)})

    def _tensorboard(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        import tensorflow as tf

        with self.writer.as_default():
            for k, v in row.items():
                f = finite(v) if not isinstance(v, str) else None
                if f is not None and k not in ("epoch", "step"):
                    tf.summary.scalar(f"quality/{k}", f, step=int(row["epoch"]))
        self.writer.flush()
