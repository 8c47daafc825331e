"""Issue 18: the class-balanced rule for the kept generator, and the real-vs-real baseline of the quality scores.

Constructed cases with known answers: Gaussian classes at the Kaggle val prior (the overall KID keeps the wrong
generator, the class-balanced one the faithful one); real images scored as synthetic give ratios of exactly 1; the
equal-count comparison by hand; the alarm and the learned bar as fractions of a baseline; the fallback to the fixed
bars. (Runs from before the change: tests/test_quality.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils.gan import probe as gan_probe
from cxr_utils.gan import tracker
from cxr_utils.metrics import real_baseline as QB
from cxr_utils.metrics.features import Extractor

NAMES = ("NORMAL", "PNEUMONIA")
S = 16


# ------------------------------------------------------------------------------------------ the kept generator

D = 64  # feature dimensions: the probe's extractor is the identity on 8 x 8 "images"
SEPARATION = 10.0  # class means this many standard deviations apart: an (almost) perfect classifier exists


class _LinearClassifier:
    """P(PNEUMONIA) from the projection on the line between the class means (the Bayes rule of the two Gaussians)."""

    def predict(self, x, **_):
        z = np.asarray(x, np.float64).reshape(len(x), -1).sum(axis=1) / np.sqrt(D)  # along the unit mean direction
        return 1.0 / (1.0 + np.exp(-4.0 * (z - SEPARATION / 2)))[:, None]


def _gaussian_probe(seed: int) -> tuple[gan_probe.QualityProbe, callable]:
    """A probe of two 64-d Gaussian classes with the reference at the Kaggle val prior (270 NORMAL / 776 PNEUMONIA)."""
    rng = np.random.default_rng(seed)
    mu = np.full(D, SEPARATION / np.sqrt(D))

    def draw(c: int, n: int) -> np.ndarray:
        return (rng.standard_normal((n, D)) + (mu if c else 0.0)).reshape(n, 8, 8)

    ref = np.concatenate([draw(0, 270), draw(1, 776)])
    y_ref = np.repeat([0, 1], [270, 776])
    x_tr = np.concatenate([draw(0, 64), draw(1, 64)])
    ex = Extractor("identity (64-d test features)", lambda x: np.asarray(x, np.float64).reshape(len(x), -1))
    labels = np.repeat(np.arange(2, dtype=np.int32), 128)
    probe = gan_probe.QualityProbe(NAMES, x_tr, np.repeat([0, 1], 64), y_ref, ex(ref), "val (270 + 776)", _LinearClassifier(),
                           ex, np.zeros((256, 1), np.float32), labels, seed=seed)
    return probe, draw


def test_the_class_balanced_kid_keeps_the_faithful_generator_where_the_overall_kid_did_not() -> None:
    """Issue 18's case: balanced synthetic images (128 + 128) against a 26 % / 74 % reference. A generator that draws
    half of its NORMAL images from the PNEUMONIA distribution matches the reference's class mix, so its overall KID
    is lower than a faithful generator's; it still passes the fidelity gate. The rule keeps the faithful one."""
    for seed in range(5):
        probe, draw = _gaussian_probe(seed)
        faithful = probe.score_images(np.concatenate([draw(0, 128), draw(1, 128)]))
        half_wrong = probe.score_images(np.concatenate([draw(0, 64), draw(1, 64), draw(1, 128)]))
        assert faithful["fidelity"] == 1.0 and half_wrong["fidelity_NORMAL"] == 0.5
        assert half_wrong["fidelity"] == 0.75 >= tracker.min_fidelity(2)  # it passes the gate
        assert half_wrong["kid"] < faithful["kid"]  # the overall KID prefers the wrong generator ...
        assert faithful["kid_balanced"] < half_wrong["kid_balanced"]  # ... the class-balanced one the faithful one
        assert faithful["kid_balanced"] == pytest.approx((faithful["kid_NORMAL"] + faithful["kid_PNEUMONIA"]) / 2)
        rows = [{**faithful, "epoch": 1, "alarm": ""}, {**half_wrong, "epoch": 2, "alarm": ""}]
        assert tracker.select_best(rows, class_names=NAMES)["epoch"] == 1
        # the rule before issue 18 (the overall KID; what rows without per-class KIDs fall back to) kept epoch 2 (shown
        # at one fidelity: since issue 20 the fidelity bar, 0.85, also keeps the faithful one over the half-wrong 0.75)
        overall_only = [{**{k: v for k, v in r.items() if not k.startswith("kid_")}, "fidelity": 0.9} for r in rows]
        assert tracker.select_best(overall_only)["epoch"] == 2
        assert tracker.select_best([{k: v for k, v in r.items() if not k.startswith("kid_")} for r in rows])["epoch"] == 1


def test_rows_before_the_kid_balanced_column_are_ranked_by_their_per_class_kids() -> None:
    old = {"epoch": 1, "kid": 0.001, "kid_NORMAL": 0.05, "kid_PNEUMONIA": 0.01, "fidelity": 0.8, "alarm": ""}  # mean 0.03
    new = {"epoch": 2, "kid": 0.02, "kid_balanced": 0.02, "kid_NORMAL": 0.03, "kid_PNEUMONIA": 0.01, "fidelity": 0.8,
           "alarm": ""}
    assert tracker.ranking_kid(old) == pytest.approx(0.03) and tracker.ranking_kid({**old, "kid_balanced": ""}) == pytest.approx(0.03)
    assert tracker.select_best([old, new])["epoch"] == 2  # 0.02 < 0.03, though the old row's overall KID is lowest
    assert tracker.select_best([{k: str(v) for k, v in r.items()} for r in (old, new)])["epoch"] == "2"  # read from the CSV
    # a class without a KID (too few reference images of it): the overall KID ranks
    assert tracker.ranking_kid({"kid": 0.5, "kid_NORMAL": "", "kid_PNEUMONIA": 0.1}) == 0.5
    assert gan_probe.balanced_kid({"kid_NORMAL": 0.1, "kid_PNEUMONIA": 0.3, "kid_real": 9.0, "kid_balanced_real": 9.0}) == \
        pytest.approx(0.2)


# ------------------------------------------------------------------------------------------ the baseline


class _BrightnessClassifier:
    """A fixed 'classifier' (numpy, no training): PNEUMONIA if brighter than mid-grey."""

    def predict(self, x, **_):
        m = np.asarray(x, np.float64).reshape(len(x), -1).mean(axis=1) / 255
        return 1.0 / (1.0 + np.exp(-(25.5 * m - 12.75)))[:, None]


BRIGHTNESS = Extractor("mean brightness (test feature)", lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
                       .mean(axis=1, keepdims=True) / 255)


def _images(rng: np.random.Generator, n: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n[0] dark (NORMAL) and n[1] bright (PNEUMONIA) textured images, all different."""
    dark = rng.integers(0, 100, (n[0], S, S)).astype(np.uint8)
    bright = rng.integers(156, 256, (n[1], S, S)).astype(np.uint8)
    return np.concatenate([dark, bright]), np.repeat([0, 1], n)


def _probe(x_tr, y_tr, x_val, y_val, n_per_class: int, seed: int = 0) -> gan_probe.QualityProbe:
    """A probe as build_probe makes it, with the fixed classifier (no training) and its baseline computed."""
    labels = np.repeat(np.arange(2, dtype=np.int32), n_per_class)
    p = gan_probe.QualityProbe(NAMES, x_tr, y_tr, y_val, BRIGHTNESS(x_val), "val (test)", _BrightnessClassifier(), BRIGHTNESS,
                       np.zeros((len(labels), 4), np.float32), labels, seed=seed)
    p.baseline = QB.compute(p, x_val, y_val)
    return p


def test_real_images_scored_as_synthetic_reach_exactly_the_baseline() -> None:
    """The baseline is the synthetic-image code run on real stand-ins: the stand-ins themselves, scored as synthetic,
    give ratios of exactly 1 (against the training images: val stand-ins; against the reference: half of the val
    images, against the other half)."""
    from cxr_utils.metrics.distributions import kid

    rng = np.random.default_rng(1)
    x_tr, y_tr = _images(rng, (10, 12))
    x_val, y_val = _images(rng, (20, 23))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=10)
    b = p.baseline
    assert b["fallback"] is None and QB.bars_label(b) == "real baseline"
    train, ref = b["sides"]["train"], b["sides"]["reference"]
    assert train["per_class"] == {"NORMAL": 10, "PNEUMONIA": 10}  # min(10 synthetic, 20 / 23 held out)
    assert ref["per_class"] == {"NORMAL": 10, "PNEUMONIA": 10}  # min(10, half of 20 / 23)
    assert ref["reference_per_class"] == {"NORMAL": 10, "PNEUMONIA": 13}
    assert not set(ref["indices"]) & set(ref["reference_indices"]) and len(ref["reference_indices"]) == 23
    assert list(y_val[train["indices"]]) == [0] * 10 + [1] * 10 and b["scores"]["train_images"] == 22
    val_row = p.score_images(x_val[train["indices"]])
    for k in QB.TRAIN_SIDE:
        if k != "hf_share":  # the artefact score divides by the training images' value (its own test below)
            assert val_row[f"{k}_vs_real"] == 1.0, k
    assert val_row["hf_share_vs_real"] == pytest.approx(b["artefact"]["held_out_vs_train"], rel=1e-12)
    assert val_row["bars"] == "real baseline"
    half_row = p.score_images(x_val[ref["indices"]])
    for k in QB.REFERENCE_SIDE:
        assert half_row[f"{k}_vs_real"] == 1.0, k
    # the KID baseline: one half of the val images against the other, with the probe's KID settings
    f = BRIGHTNESS(x_val)
    assert b["scores"]["kid"] == kid(f[ref["reference_indices"]], f[ref["indices"]], 50, 1000, 0)[0]
    assert half_row["kid_real"] == b["scores"]["kid"] and half_row["kid_balanced_real"] == b["scores"]["kid_balanced"]
    assert QB.describe(b).startswith("real-vs-real baseline (quality-baseline.json): held-out val images (10 NORMAL + "
                                     "10 PNEUMONIA) against the training images: diversity")
    assert "held-out val images (10 NORMAL + 10 PNEUMONIA) against the held-out reference (10 NORMAL + 13 PNEUMONIA " \
           "other val images): KID" in QB.describe(b)


def test_synthetic_scores_are_compared_at_the_baselines_image_count() -> None:
    """2 held-out images per class, 4 synthetic ones: the synthetic score beside the baseline is the mean over the two
    chunks of 2 per class. Chunk 1 = the stand-ins (= the baseline), chunk 2 = one training image twice per class
    (diversity 0, covers exactly that image), so diversity is 0.5x and coverage (B + 2) / 2B of the baseline's B.
    (2 per class are too few to judge by: the ratios are recorded, the fixed bars judge.)"""
    rng = np.random.default_rng(2)
    x_tr, y_tr = _images(rng, (5, 5))
    x_val, y_val = _images(rng, (2, 2))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=4)
    b = p.baseline
    assert b["sides"]["train"]["per_class"] == {"NORMAL": 2, "PNEUMONIA": 2}
    # 1 + 1 are too few to split into stand-ins and a reference: no KID / PRDC baseline
    assert b["sides"]["reference"]["missing"] == ("too few held-out images of NORMAL (2 images) and PNEUMONIA (2 "
                                                  "images): fewer than 4 per class to split into stand-ins and a reference")
    val = x_val[b["sides"]["train"]["indices"]]
    syn = np.concatenate([val[:2], x_tr[[0, 0]], val[2:], x_tr[[5, 5]]])  # per class: stand-ins, then a copy twice
    row = p.score_images(syn)
    covered = b["scores"]["train_covered"]
    assert row["diversity_vs_real"] == pytest.approx(0.5)
    assert row["train_coverage_vs_real"] == pytest.approx((covered + 2) / (2 * covered))
    # the usual score (all 4 per class at once) is another number: more images cover more training images
    assert row["train_covered"] != (covered + 2) / 2
    assert row["bars"].startswith("fixed: only 2 NORMAL and 2 PNEUMONIA held-out images, fewer than 10")
    # at full scale (as many held-out images as synthetic ones) the comparison is the usual score itself
    probs, feats = p.predict(syn)
    full = p.measure(syn, p.labels, probs, feats)
    assert QB.at_count(p, syn, p.labels, probs, feats, "train", {"per_class": {"N": 4, "P": 4}}, full) is full


def test_alarm_and_learned_bar_are_fractions_of_the_baseline() -> None:
    base = {"epoch": 3, "diversity": 0.1, "train_coverage": 0.2, "train_covered": 2, "train_images": 10,
            "diversity_vs_real": tracker.ALARM_DIVERSITY_VS_REAL, "train_coverage_vs_real": tracker.ALARM_COVERAGE_VS_REAL,
            "bars": QB.REAL_BARS}
    # absolute values under the fixed bars, but at the real images' level: no alarm (the bars are at 0.2x, 0.3x)
    assert tracker.collapse_alarm(base) is None
    low = tracker.collapse_alarm({**base, "diversity_vs_real": 0.19})
    assert "diversity 0.10 of the real images' = 0.19x what held-out real images reach (alarm below 0.2x)" in low
    low = tracker.collapse_alarm({**base, "train_coverage_vs_real": 0.29})
    assert "only 2 of 10 training images are a synthetic image's nearest neighbour, 0.29x" in low and "0.3x" in low
    # absolute values over the fixed bars, far below what real images reach: the alarm
    assert tracker.collapse_alarm({**base, "diversity": 0.5, "train_coverage": 0.8, "diversity_vs_real": 0.1})

    ok, line = tracker.learned_check({**base, "diversity_vs_real": 0.4, "train_coverage_vs_real": 0.7})
    assert ok and line == ("learned: within-class diversity 0.10 of the real images', 0.40x what held-out real images "
                           "reach (bar 0.4x); 2 of 10 training images covered by a same-class synthetic nearest "
                           "neighbour, 0.70x what as many held-out real images cover (bar 0.7x)")
    assert not tracker.learned_check({**base, "diversity_vs_real": 0.39, "train_coverage_vs_real": 1.5})[0]
    assert not tracker.learned_check({**base, "diversity_vs_real": 2.0, "train_coverage_vs_real": 0.69})[0]
    # ratios of a baseline too small to judge by (the row's bars are fixed): the fixed bars decide
    fixed = {**base, "diversity_vs_real": 2.0, "train_coverage_vs_real": 2.0, "bars": "fixed: only 2 NORMAL ..."}
    assert "a fixed bar" in tracker.collapse_alarm(fixed) and not tracker.learned_check(fixed)[0]
    # no baseline: the fixed bars, and the line says so
    ok, line = tracker.learned_check({"diversity": 0.45, "train_coverage": 0.7, "train_covered": 7, "train_images": 10})
    assert ok and line.endswith("(bar 70%); fixed bars: no real-vs-real baseline")


def test_a_tiny_or_missing_held_out_split_falls_back_to_the_fixed_bars_and_says_so() -> None:
    rng = np.random.default_rng(3)
    x_tr, y_tr = _images(rng, (5, 5))
    x_val, y_val = _images(rng, (1, 8))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=4)
    b = p.baseline
    why = "too few held-out images of NORMAL (1 image): fewer than 2 per class to stand in"
    assert b["fallback"] == why and b["scores"] == {}
    assert b["sides"]["reference"]["missing"].startswith("too few held-out images of NORMAL (1 image): fewer than 4")
    row = p.score_images(np.concatenate([x_tr[:4], x_tr[5:9]]))
    assert row["bars"] == "fixed: " + why
    # no stand-ins, no ratios; only the artefact scores, whose reference is the training images
    artefact_cols = ("hf_share_vs_real", "stripe_vs_real")
    assert all(row[c] is None for c in (*QB.VS_REAL_COLUMNS, *QB.REAL_COLUMNS) if c not in artefact_cols)
    assert row["stripe_vs_real"] is not None and b["artefact"]["stripe_held_out_vs_train"] is None
    assert row["hf_share_vs_real"] == pytest.approx(row["hf_share"] / b["artefact"]["hf_share"], rel=1e-12)
    assert tracker.learned_check(row)[1].endswith("fixed bars: " + why)
    alarm = tracker.collapse_alarm({"epoch": 1, "diversity": 0.1, "train_coverage": 0.5})
    assert "(alarm below 0.2, a fixed bar)" in alarm
    assert QB.describe(b).endswith("Fallback to the fixed bars: " + why)

    x_val, y_val = _images(rng, (6, 12))  # enough for a baseline, too few to judge by
    few = _probe(x_tr, y_tr, x_val, y_val, n_per_class=4)
    assert few.baseline["fallback"] == ("only 4 NORMAL and 4 PNEUMONIA held-out images, fewer than 10 per class: too "
                                        "few to judge by (the ratios are recorded)")
    assert few.baseline["sides"]["reference"]["per_class"] == {"NORMAL": 3, "PNEUMONIA": 4}  # half of 6, min(4, 6)
    row = few.score_images(np.concatenate([x_tr[:4], x_tr[5:9]]))
    assert row["diversity_vs_real"] > 0 and row["kid_real"] == few.baseline["scores"]["kid"]
    assert row["bars"].startswith("fixed: only 4 NORMAL") and not tracker.relative_scores(row)

    none = QB.compute(p, None, None)
    assert none["fallback"].startswith("no held-out split") and none["scores"] == {} and none["sides"] == {}
    assert QB.bars_label(none).startswith("fixed: no held-out split")


# ------------------------------------------------------------------------------------------ calibration on digits


def test_on_real_digits_a_perfect_generator_scores_about_1x_and_a_mode_dropping_one_fails_the_bar() -> None:
    """Real handwritten digits (scikit-learn), three classes; per class 50 training, 50 held-out and 50 more real
    images that stand in for a perfect generator; a generator that draws only one half of each class (split at the
    median of the class's first principal component: half its variety gone) and one that repeats two images per
    class. The bars sit between them (benchmarks/quality_bars.py measures the same on all ten digits).
    With only 2 held-out images per class the same two-image generator looks as good as real: why the bars need
    MIN_FOR_BARS held-out images per class."""
    from sklearn.datasets import load_digits

    x, y = load_digits(n_class=3, return_X_y=True)
    x = (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)

    class Uniform:  # fidelity is not under test here
        def predict(self, a, **_):
            return np.full((len(a), 3), 1 / 3)

    ex = Extractor("pixels", lambda a: np.asarray(a, np.float64).reshape(len(a), -1))

    def probe(tr: np.ndarray, va: np.ndarray, seed: int) -> gan_probe.QualityProbe:
        p = gan_probe.QualityProbe(("0", "1", "2"), x[tr], y[tr], y[va], ex(x[va]), "val", Uniform(), ex,
                           np.zeros((150, 1), np.float32), np.repeat(np.arange(3, dtype=np.int32), 50), seed=seed)
        p.baseline = QB.compute(p, x[va], y[va])
        return p

    got: dict[str, list] = {}
    for rep in range(3):
        rng = np.random.default_rng(rep)
        parts = [rng.permutation(np.flatnonzero(y == c)) for c in range(3)]
        half = []
        for p in parts:
            f = x[p].reshape(len(p), -1).astype(float)
            f -= f.mean(axis=0)
            z = f @ np.linalg.svd(f, full_matrices=False)[2][0]
            keep = np.intersect1d(p[100:], p[z < np.median(z)])  # unseen images of one half of the class
            half.append(rng.choice(keep, 50, replace=len(keep) < 50))
        gens = {"perfect": np.concatenate([p[100:150] for p in parts]), "half the variety": np.concatenate(half),
                "two images": np.concatenate([np.resize(p[100:102], 50) for p in parts])}
        full = probe(np.concatenate([p[:50] for p in parts]), np.concatenate([p[50:100] for p in parts]), rep)
        small = probe(np.concatenate([p[:5] for p in parts]), np.concatenate([p[50:52] for p in parts]), rep)
        for name, idx in gens.items():
            row = full.score_images(x[idx])
            got.setdefault(name, []).append((row["diversity_vs_real"], row["train_coverage_vs_real"],
                                             tracker.learned_check(row)[0], tracker.collapse_alarm({**row, "epoch": 1}) is not None))
        row = small.score_images(x[gens["two images"]])
        got.setdefault("two images, 2 held out", []).append((row["train_coverage_vs_real"], row["bars"]))
    perfect, half, two = (np.array(got[k], float) for k in ("perfect", "half the variety", "two images"))
    assert np.all(np.abs(perfect[:, :2] - 1.0) < 0.2) and perfect[:, 2].all() and not perfect[:, 3].any()
    assert np.all(half[:, 1] < tracker.LEARNED_COVERAGE_VS_REAL) and not half[:, 2].any()
    assert np.all(two[:, 1] < tracker.ALARM_COVERAGE_VS_REAL) and two[:, 3].all()
    small_two = got["two images, 2 held out"]
    assert np.mean([c for c, _ in small_two]) > tracker.LEARNED_COVERAGE_VS_REAL  # would pass a bar set on 2 held-out images
    assert all(b.startswith("fixed: only 2 0 and 2 1 and 2 2 held-out images") for _, b in small_two)


# ------------------------------------------------------------------------------------------ the artefact score (issue 20)


def test_the_artefact_score_sits_beside_what_the_training_images_hold(tmp_path) -> None:
    """hf_share (metrics.high_frequency_share) per class and overall in every row; hf_share_vs_real divides it by the
    training images' class-balanced value (real_baseline.artefact_reference): a checkerboard laid over real images
    scores far above 1, a blurred copy below; the held-out stand-ins' own ratio is recorded as the calibration."""
    from cxr_utils.metrics.artefacts import high_frequency_share

    rng = np.random.default_rng(2)
    x_tr, y_tr = _images(rng, (10, 12))
    x_val, y_val = _images(rng, (20, 23))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=10)
    stand_ins = x_val[p.baseline["sides"]["train"]["indices"]]
    assert p.baseline["scores"]["hf_share"] == pytest.approx(high_frequency_share(stand_ins).mean(), rel=1e-12)
    h = high_frequency_share(x_tr)
    real_hf = (h[y_tr == 0].mean() + h[y_tr == 1].mean()) / 2  # class-balanced: 10 NORMAL, 12 PNEUMONIA
    art = p.baseline["artefact"]
    assert art["hf_share"] == pytest.approx(real_hf, rel=1e-12) and art["images"] == 22
    assert art["per_class"]["PNEUMONIA"] == pytest.approx(h[y_tr == 1].mean(), rel=1e-12)
    assert art["held_out_vs_train"] == pytest.approx(high_frequency_share(stand_ins).mean() / real_hf, rel=1e-12)
    assert 0.8 < art["held_out_vs_train"] < 1.25  # real images of the same kind: near 1
    # smooth images (each stand-in's mean brightness and one slow cosine), then a +-30 checkerboard over them
    i = np.arange(S)
    wave = np.tile(10 * np.cos(2 * np.pi * i / S)[:, None], (1, S))
    smooth = stand_ins.mean(axis=(1, 2), keepdims=True) + wave
    checker = np.rint(smooth + 30 * np.outer((-1.0) ** i, (-1.0) ** i)).astype(np.uint8)
    row = p.score_images(checker)
    labels = p.labels
    assert row["hf_share"] == pytest.approx(high_frequency_share(checker).mean())
    for c, n in enumerate(NAMES):
        assert row[f"hf_share_{n}"] == pytest.approx(high_frequency_share(checker[labels == c]).mean())
    assert row["hf_share_vs_real"] == pytest.approx(row["hf_share"] / real_hf)
    assert row["hf_share_vs_real"] > 1.0
    assert p.score_images(np.rint(smooth).astype(np.uint8))["hf_share_vs_real"] < 0.01  # only rounding up there
    assert "high-frequency share" in QB.describe(p.baseline)
    assert "hf_share" in tracker.columns(NAMES) and "hf_share_PNEUMONIA" in tracker.columns(NAMES) and \
        "hf_share_vs_real" in tracker.columns(NAMES)


def test_the_stripe_score_sees_fine_stripes_the_band_share_averages_away(tmp_path) -> None:
    """stripe_vs_real (metrics.artefacts.stripe_ratio against the training images' class-balanced axis spectrum):
    the training images scored as if synthetic give exactly 1.0x; faint stripes at 0.41 cycles/pixel laid over them
    (the banding of a nearest-neighbour upsample) leave hf_share_vs_real under its gate but push the stripe score past
    its line."""
    from cxr_utils.metrics.artefacts import axis_spectrum, balanced_axis_spectrum

    rng = np.random.default_rng(3)
    x_tr, y_tr = _images(rng, (10, 10))
    x_val, y_val = _images(rng, (20, 20))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=10)
    art = p.baseline["artefact"]
    np.testing.assert_allclose(art["axis_spectrum"], balanced_axis_spectrum(x_tr, y_tr, 2), rtol=1e-12)
    stand = p.baseline["sides"]["train"]["indices"]
    held = QB.stripe_vs_real(art, x_val[stand], y_val[stand], 2)
    assert art["stripe_held_out_vs_train"] == pytest.approx(held, rel=1e-12) and 0.9 < held < tracker.STRIPE_MAX
    assert QB.stand_in_count(p.baseline) == len(stand) == 20  # 10 stand-ins per class, the probe's count
    spec = balanced_axis_spectrum(x_val[stand], y_val[stand], 2)  # the ratio by hand: strongest bin in the upper half
    by_hand = (spec / np.asarray(art["axis_spectrum"]))[:, S // 4:].max()
    assert held == pytest.approx(by_hand, rel=1e-12)
    assert "stripe score of 20 held-out real images" in QB.describe(p.baseline)
    assert "the synthetic rows score 20 images" in QB.describe(p.baseline)
    order = np.concatenate([np.flatnonzero(y_tr == c) for c in range(2)])  # the probe's labels: 10 of 0, then 10 of 1
    same = p.score_images(x_tr[order])
    assert same["stripe_vs_real"] == pytest.approx(1.0, rel=1e-9)
    k = round(0.41 * S)
    stripes = 30 * np.cos(2 * np.pi * k * np.arange(S) / S)[None, None, :]  # energy: half the texture's
    banded = np.clip(np.rint(x_tr[order] + stripes), 0, 255).astype(np.uint8)
    row = p.score_images(banded)
    assert row["stripe_vs_real"] > 2 * tracker.STRIPE_MAX
    assert row["hf_share_vs_real"] < tracker.ARTEFACT_MAX  # what the band share alone would let through
    assert axis_spectrum(banded)[:, 0, k].mean() > axis_spectrum(x_tr)[:, 0, k].mean()
    assert tracker.stripes_ok(row) is False and tracker.stripes_ok(same) and tracker.artefact_ok(row)
    assert "stripe_vs_real" in tracker.columns(NAMES) and f"(over the {tracker.STRIPE_MAX}x line)" in tracker.summary(row)
    assert "over the" not in tracker.summary(same)


def test_a_baseline_file_of_the_earlier_format_is_measured_again(tmp_path) -> None:
    """A resumed run whose quality-baseline.json predates the artefact score (format 1) gets a fresh baseline (the
    same numbers for the earlier scores: a pure function of the data and the classifier) with hf_share in it."""
    rng = np.random.default_rng(3)
    x_tr, y_tr = _images(rng, (10, 12))
    x_val, y_val = _images(rng, (20, 23))
    p = _probe(x_tr, y_tr, x_val, y_val, n_per_class=10)
    path = tmp_path / tracker.BASELINE_FILE
    old = {**p.baseline, "version": 1, "scores": {k: v for k, v in p.baseline["scores"].items() if k != "hf_share"}}
    del old["artefact"]
    from cxr_utils import files as cio

    cio.atomic_write_json(path, old)
    again = QB.load_or_compute(path, True, p, x_val, y_val)
    assert again["version"] == QB.FORMAT_VERSION == 4 and "hf_share" in again["scores"] and "artefact" in again
    assert len(again["artefact"]["axis_spectrum"]) == 2  # format 4: the stripe score's reference
    assert {k: again["scores"][k] for k in old["scores"]} == pytest.approx(old["scores"])
    assert cio.read_json(path)["version"] == 4
    assert QB.load_or_compute(path, True, p, x_val, y_val) == cio.read_json(path)  # read back, not recomputed


def test_without_a_held_out_split_the_artefact_score_still_has_its_real_reference() -> None:
    """No val split: no stand-ins and the fixed bars, but the artefact reference needs only the training images."""
    rng = np.random.default_rng(4)
    x_tr, y_tr = _images(rng, (6, 6))
    p = _probe(x_tr, y_tr, x_tr, y_tr, n_per_class=6)  # as build_probe: the training images are the reference
    p.baseline = QB.compute(p, None, None)
    assert p.baseline["fallback"].startswith("no held-out split") and p.baseline["artefact"]["held_out_vs_train"] is None
    row = p.score_images(x_tr)
    assert row["hf_share_vs_real"] == pytest.approx(row["hf_share"] / p.baseline["artefact"]["hf_share"], rel=1e-12)
    assert "artefact score against the 12 training images" in QB.describe(p.baseline)
