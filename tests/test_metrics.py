"""Generative metrics against closed-form and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils.errors import UserError
from cxr_utils.metrics import distributions, fidelity, memorization
from cxr_utils.metrics.features import random_cnn_extractor


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_fid_from_stats_exact_commuting_covariances():
    r = _rotation(0.7)
    s1 = r @ np.diag([1.0, 4.0]) @ r.T
    s2 = r @ np.diag([9.0, 1.0]) @ r.T
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    # ||dmu||^2 = 5; Tr S1 + Tr S2 = 15; (S1 S2)^1/2 = R diag(3, 2) R^T -> trace 5 -> 15 - 10 = 5
    assert distributions.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(10.0, abs=1e-9)


def test_fid_from_stats_one_dimension_is_mean_and_std_gap():
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert distributions.fid_from_stats([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, abs=1e-12)


def test_fid_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert distributions.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_large_gaussian_samples_match_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(2), np.array([1.0, 1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    a = rng.multivariate_normal(mu1, s1, size=40_000)
    b = rng.multivariate_normal(mu2, s2, size=40_000)
    # closed form: 2 + (1 + 4 + 4 + 1) - 2 * (2 + 2) = 4
    assert distributions.fid(a, b) == pytest.approx(4.0, abs=0.1)


def test_fid_survives_more_dimensions_than_samples():
    x = np.random.default_rng(2).normal(size=(5, 12))
    assert np.isfinite(distributions.fid(x, x + 0.1))


def test_kid_hand_computed_case_is_exact():
    # d = 1, k(x, y) = (xy + 1)^3. X = {0, 1}: k(0,1) = 1. Y = {0, 2}: k(0,2) = 1.
    # cross terms k(0,0)=1, k(0,2)=1, k(1,0)=1, k(1,2)=27 -> mean 7.5.  MMD^2_u = 1 + 1 - 2 * 7.5 = -13
    mean, std = distributions.kid(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), n_subsets=3, subset_size=2, seed=0)
    assert mean == pytest.approx(-13.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_point_masses_closed_form():
    # all x = (1, 0), all y = (0, 1), d = 2: k(a,a) = k(b,b) = 1.5^3 = 3.375, k(a,b) = 1 -> 6.75 - 2 = 4.75
    x = np.tile([1.0, 0.0], (6, 1))
    y = np.tile([0.0, 1.0], (6, 1))
    mean, std = distributions.kid(x, y, n_subsets=4, subset_size=5, seed=3)
    assert mean == pytest.approx(4.75, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_the_same_distribution_and_not_for_a_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    same, _ = distributions.kid(a, b, n_subsets=20, subset_size=500, seed=0)
    shifted, _ = distributions.kid(a, b + 1.0, n_subsets=20, subset_size=500, seed=0)
    assert abs(same) < 0.02
    assert shifted > 50 * abs(same) and shifted > 0.5


def test_prdc_hand_computed_points():
    # 1-D, k = 1. Real {0, 1, 3.5, 7, 12}: radii 1, 1, 2.5, 3.5, 5. Fake {0.5, 5, 20, 20.5}: radii 4.5, 4.5, .5, .5.
    # precision: 0.5 (in ball of 0) and 5 (ball of 3.5) -> 2/4. density: 0.5 in 2 balls, 5 in 2 balls -> 4/(1*4).
    # recall: every real but 12 lies in the ball of 0.5 or 5 -> 4/5. coverage: nearest fake inside own ball
    # for 0, 1, 3.5, 7 but not 12 (7 > 5) -> 4/5.
    real = np.array([0.0, 1.0, 3.5, 7.0, 12.0])[:, None]
    fake = np.array([0.5, 5.0, 20.0, 20.5])[:, None]
    assert distributions.prdc(real, fake, k=1) == pytest.approx({"precision": 0.5, "recall": 0.8, "density": 1.0, "coverage": 0.8})


def test_prdc_same_set_is_perfect_in_precision_recall_coverage():
    x = np.random.default_rng(5).normal(size=(50, 4))
    r = distributions.prdc(x, x, k=3)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0


def test_memorization_hand_computed():
    train = np.array([[0.0], [10.0], [20.0]])
    test = np.array([[1.0], [12.0], [25.0], [16.0]])  # nearest train distances 1, 2, 5, 4 -> 50th percentile 3
    synth = np.array([[10.5], [19.0], [5.0], [0.0]])  # nearest 0.5 (train 1), 1 (train 2), 5 (train 0, first tie), 0 (train 0)
    r = memorization.memorization(train, synth, test, percentile=50, n_pairs=2)
    assert r["threshold"] == pytest.approx(3.0)
    assert r["fraction_below_threshold"] == pytest.approx(0.75)
    assert r["closest_pairs"] == [{"synthetic": 3, "train": 0, "distance": 0.0}, {"synthetic": 0, "train": 1, "distance": 0.5}]
    assert r["synth_to_train_median"] == pytest.approx(0.75)
    assert r["test_to_train_median"] == pytest.approx(3.0)


@pytest.mark.parametrize("pred", [np.array([0, 1, 1, 0]),
                                  np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]]),
                                  np.array([0.1, 0.8, 0.6, 0.3])])


def test_label_fidelity_accepts_preds_and_probs(pred):
    r = fidelity.label_fidelity(pred, np.array([0, 1, 0, 0]))
    assert r["overall"] == pytest.approx(0.75)
    assert r["per_class"] == pytest.approx({"NORMAL": 2 / 3, "PNEUMONIA": 1.0})
    assert r["n"] == 4


# ---------------------------------------------------------------- edges found by mutation testing (docs/testing.md)


def test_fid_validates_shapes_and_accepts_1d_features():
    with pytest.raises(ValueError, match="shapes differ"):
        distributions.fid_from_stats(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))  # covariances differ
    with pytest.raises(ValueError, match="shapes differ"):
        distributions.fid_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))  # means differ
    # 1-D features are N samples of one dimension: means 1 and 6, unbiased variances 2 and 8 -> 25 + (√2 - √8)^2 = 27
    assert distributions.fid([0.0, 2.0], [4.0, 8.0]) == pytest.approx(27.0, abs=1e-9)
    mu, cov = distributions.feature_stats(np.array([[0.0, 1.0], [2.0, 5.0]]))  # two vectors are enough
    assert mu.tolist() == [1.0, 3.0] and cov.tolist() == [[2.0, 4.0], [4.0, 8.0]]
    with pytest.raises(ValueError, match="at least 2"):
        distributions.feature_stats(np.ones((1, 3)))


def test_fid_regularises_a_singular_product_with_a_positive_offset(monkeypatch):
    """When sqrtm(S1 S2) is not finite, it is recomputed on (S1 + eps I)(S2 + eps I), as the reference code does."""
    real, seen = distributions.linalg.sqrtm, []

    def sqrtm(a):
        seen.append(np.array(a))
        return np.full_like(a, np.nan) if len(seen) == 1 else real(a)

    monkeypatch.setattr(distributions.linalg, "sqrtm", sqrtm)
    s = np.diag([1.0, 0.0])  # singular
    value = distributions.fid_from_stats([0.0, 0.0], s, [3.0, 0.0], s, eps=1e-3)
    assert len(seen) == 2 and np.allclose(seen[1], (s + 1e-3 * np.eye(2)) @ (s + 1e-3 * np.eye(2)))
    assert value == pytest.approx(9.0 - 4e-3, abs=1e-9)  # ||dmu||^2 + Tr(2S) - 2 Tr(S + eps I)


def test_kid_is_the_mean_and_std_of_unbiased_mmd_over_seeded_subsets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3)) + 0.5
    mean, std = distributions.kid(x, y, n_subsets=4, subset_size=5, seed=11)
    replay = np.random.default_rng(11)  # subsets of 5 drawn without replacement, x then y, per subset
    vals = [distributions.mmd2_unbiased(x[replay.choice(9, 5, replace=False)], y[replay.choice(7, 5, replace=False)]) for _ in range(4)]
    assert (mean, std) == pytest.approx((np.mean(vals), np.std(vals)), abs=1e-12)
    for a, b in ((x, y), (y, x)):  # subsets are capped at the smaller set (7), whichever side it is on
        one, _ = distributions.kid(a, b, n_subsets=1, subset_size=50, seed=11)
        replay = np.random.default_rng(11)
        sub_a, sub_b = a[replay.choice(len(a), 7, replace=False)], b[replay.choice(len(b), 7, replace=False)]
        assert one == pytest.approx(distributions.mmd2_unbiased(sub_a, sub_b))
    with pytest.raises(ValueError, match="at least 2 samples"):
        distributions.mmd2_unbiased(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        distributions.kid(np.zeros((4, 3)), np.zeros((4, 2)))


def test_prdc_density_divides_by_k_and_balls_are_strict():
    # 1-D, k = 2. Real {0, 1, 2, 10}: 2nd-neighbour radii 2, 1, 2, 9. Fake {1, 10, 30}: radii 20, 20, 29.
    # fake 1 lies in the balls of reals 0 and 2 (distance 1 < 2; real 1's ball has radius 1: 0 < 1, so also there):
    # 3 balls; fake 10: ball of real 10 (0 < 9) only: 1 ball; fake 30: none -> density (3 + 1 + 0) / (2 * 3)
    real = np.array([0.0, 1.0, 2.0, 10.0])[:, None]
    fake = np.array([1.0, 10.0, 30.0])[:, None]
    r = distributions.prdc(real, fake, k=2)
    assert r["density"] == pytest.approx(4 / 6) and r["precision"] == pytest.approx(2 / 3)
    # a point exactly on a ball's boundary is outside (strict '<', as in the reference implementation):
    # real {0, 1}, k = 1: radius 1 each; fake {2, 3}: radius 1 each. Fake 2 is at distance 1 from real 1: outside.
    edge = distributions.prdc(np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]]), k=1)
    assert edge == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    with pytest.raises(ValueError, match="need more than k=2 points"):
        distributions.prdc(real[:2], fake, k=2)


def test_memorization_defaults_ratio_and_strict_threshold():
    train = np.array([[0.0], [10.0], [20.0]])
    test = np.array([[1.0], [12.0], [25.0], [16.0]])  # nearest-train distances 1, 2, 5, 4
    synth = np.array([[9.0], [10.5], [19.0], [3.0], [0.0]])  # 1, 0.5, 1, 3, 0
    r = memorization.memorization(train, synth, test)  # percentile 5, 8 pairs by default
    assert r["percentile"] == 5.0 and r["threshold"] == pytest.approx(np.percentile([1, 2, 5, 4], 5))  # 1.15
    assert r["fraction_below_threshold"] == pytest.approx(4 / 5)  # 1, 0.5, 1, 0 are below 1.15; 3 is not
    assert len(r["closest_pairs"]) == 5 and r["n_synthetic"] == 5 and r["n_test"] == 4
    assert [p["synthetic"] for p in r["closest_pairs"]] == [4, 1, 0, 2, 3]  # ties keep their order (stable)
    assert r["median_ratio"] == pytest.approx(1.0 / 3.0)  # median 1 over median 3
    at = memorization.memorization(train, np.array([[1.0], [2.0]]), test, percentile=0)  # threshold = min test distance = 1
    assert at["threshold"] == 1.0 and at["fraction_below_threshold"] == 0.0  # a distance equal to it is not below
    same = memorization.memorization(train, synth, train)  # held-out images at distance 0: the ratio has no scale
    assert same["median_ratio"] == float("inf")


def test_label_fidelity_threshold_and_absent_class():
    r = fidelity.label_fidelity(np.array([0.5, 0.49, 0.51]), np.array([1, 1, 1]))  # a probability of exactly 0.5 is class 1
    assert r["overall"] == pytest.approx(2 / 3) and r["per_class"] == {"NORMAL": None, "PNEUMONIA": pytest.approx(2 / 3)}
    assert fidelity.label_fidelity(np.array([], np.int64), np.array([], np.int64))["overall"] is None  # nothing to agree on
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        fidelity.label_fidelity(np.array([0, 1, 1]), np.array([0, 1]))


def test_metrics_react_as_documented_on_real_digits():
    """Real offline images (sklearn digits, 8x8 -> 32x32): dropped modes cut recall/coverage, noise cuts precision,
    copies of the training set are flagged as memorized."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.kron(d.images, np.ones((4, 4))) * (255 / 16)).astype(np.uint8)
    y = d.target
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    a, b, t = idx[:500], idx[500:1000], idx[1000:1300]
    ex = random_cnn_extractor(32, seed=0)
    fa, fb, ft = ex(x[a]), ex(x[b]), ex(x[t])
    f_drop = fb[y[b] < 5]
    f_noise = ex(np.stack([rng.permutation(im.ravel()).reshape(32, 32) for im in x[b]]))
    same, drop, noise = distributions.prdc(fa, fb), distributions.prdc(fa, f_drop), distributions.prdc(fa, f_noise)
    assert same["precision"] > 0.85 and same["recall"] > 0.85
    # with k-NN recall the smaller fake set's wider balls soften the drop; coverage shows it plainly
    assert drop["recall"] < same["recall"] - 0.04 and drop["coverage"] < same["coverage"] - 0.15
    assert drop["precision"] > 0.85 and noise["precision"] < 0.05
    assert distributions.fid(fa, fb) < distributions.fid(fa, f_drop) < distributions.fid(fa, f_noise)
    assert memorization.memorization(fa, fa[:100], ft)["fraction_below_threshold"] == 1.0
    assert memorization.memorization(fa, fb, ft)["fraction_below_threshold"] < 0.15


def test_fid_warns_on_a_complex_square_root_and_notes_its_bias() -> None:
    import warnings

    from cxr_utils.metrics import distributions

    # sigma2 is not PSD (eigenvalues 3 and -1): sqrt(s1 s2) = V diag(sqrt 3, i) V^T has 0.5i on its diagonal
    with pytest.warns(distributions.FIDImaginaryWarning, match="imaginary component of 0.5 "):
        distributions.fid_from_stats(np.zeros(2), np.eye(2), np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", distributions.FIDImaginaryWarning)  # a proper pair of covariances does not warn
        assert distributions.fid_from_stats(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)) == pytest.approx(2 + 2 * (1 + 4 - 2 * 2))
    rng = np.random.default_rng(0)
    out = distributions.feature_metrics(rng.normal(size=(6, 8)), rng.normal(size=(3, 8)), rng.normal(size=(5, 8)), kid_subsets=2)
    assert out["feature_dim"] == 8 and out["n_real"] == 6 and out["n_synthetic"] == 5
    assert out["fid_note"].startswith("FID on 5 images per set < 8 feature dimensions: biased upward")


def test_nearest_real_closed_form() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 200, size=(6, 4, 4)).astype(np.uint8)
    syn = np.stack([real[2] + 51, real[5]]).astype(np.uint8)  # a shifted copy and an exact copy
    idx, dist = memorization.nearest_real(syn, real, chunk=1)
    assert idx.tolist() == [2, 5]
    assert dist[0] == pytest.approx(51 / 255, abs=1e-9)  # RMS of a constant shift is the shift
    assert dist[1] == pytest.approx(0.0, abs=1e-9)
    two = np.stack([np.zeros((2, 2)), np.full((2, 2), 255)]).astype(np.uint8)
    assert memorization.real_to_real_nn(two).tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(UserError, match="same size"):
        memorization.nearest_real(np.zeros((1, 3, 3), np.uint8), real)


# ---------------------------------------------------------------- the artefact score (issue 20)

def test_high_frequency_share_closed_forms() -> None:
    from cxr_utils.metrics.artefacts import high_frequency_share as hf

    s = 64
    i = np.arange(s, dtype=np.float64)
    checker = np.outer((-1.0) ** i, (-1.0) ** i)  # (-1)^(i+j): all its energy at (fy, fx) = (0.5, 0.5), r = 0.71
    stripes = np.tile(((-1.0) ** i)[:, None], (1, s))  # (-1)^i: r = 0.5 cycles/pixel, the Nyquist frequency itself
    smooth = np.tile(np.cos(2 * np.pi * 3 * i / s)[:, None], (1, s))  # 3 cycles across: r = 3/64
    edge = np.tile(np.cos(2 * np.pi * 24 * i / s)[:, None], (1, s))  # r = 24/64 = 0.375 = 3/4 Nyquist: not above
    past = np.tile(np.cos(2 * np.pi * 25 * i / s)[:, None], (1, s))  # r = 25/64 > 0.375: counted
    imgs = np.stack([checker, stripes, smooth, edge, past]) * 40 + 128  # any offset: the mean is removed
    np.testing.assert_allclose(hf(imgs), [1, 1, 0, 0, 1], atol=1e-12)
    # a mixture of orthogonal components: share = the checkerboard's energy / the total (sum of squares S^2 a^2 for
    # the checkerboard, S^2 b^2 / 2 for the cosine)
    a, b = 3.0, 5.0
    np.testing.assert_allclose(hf((a * checker + b * smooth)[None]), [a**2 / (a**2 + b**2 / 2)], rtol=1e-12)
    assert hf(np.full((2, 8, 8), 77.0)).tolist() == [0.0, 0.0]  # a constant image has no energy: 0, not nan
    rgb = np.repeat(imgs[..., None], 3, axis=-1)  # channels averaged, like every score here
    np.testing.assert_allclose(hf(rgb), hf(imgs), atol=1e-12)
    # white noise spreads its energy evenly over the S x S frequencies: the share is the band's share of them
    rng = np.random.default_rng(0)
    f = np.fft.fftfreq(s)
    band = (np.hypot(f[:, None], f[None, :]) > 0.375).mean()
    assert abs(hf(rng.normal(size=(200, s, s))).mean() - band) < 0.005
    with pytest.raises(ValueError, match="expected images"):
        hf(np.zeros(5))


def test_axis_spectrum_and_stripe_ratio_closed_forms() -> None:
    """axis_spectrum: each image's energy shares at each |fx| (row 0) and |fy| (row 1); stripe_ratio: the strongest
    bin at or above half Nyquist as a multiple of the reference's."""
    from cxr_utils.metrics.artefacts import axis_spectrum, balanced_axis_spectrum, stripe_ratio

    s = 16
    i = np.arange(s, dtype=np.float64)
    cols = np.tile(np.cos(2 * np.pi * 5 * i / s)[None, :], (s, 1))  # varies along x: all energy at |fx| = 5
    rows = np.tile(np.cos(2 * np.pi * 3 * i / s)[:, None], (1, s))  # varies along y: all energy at |fy| = 3
    spec = axis_spectrum(np.stack([cols, rows]) * 20 + 100)
    assert spec.shape == (2, 2, s // 2 + 1)
    np.testing.assert_allclose(spec.sum(axis=2), 1.0, atol=1e-12)  # each marginal holds all the energy
    assert spec[0, 0, 5] == pytest.approx(1.0) and spec[0, 1, 0] == pytest.approx(1.0)  # fy = 0 for column stripes
    assert spec[1, 1, 3] == pytest.approx(1.0) and spec[1, 0, 0] == pytest.approx(1.0)
    # two orthogonal parts: shares by energy (a^2 : b^2, both cosines)
    a, b = 1.0, 2.0
    mix = axis_spectrum((a * cols + b * rows)[None])[0]
    assert mix[0, 5] == pytest.approx(a**2 / (a**2 + b**2)) and mix[1, 3] == pytest.approx(b**2 / (a**2 + b**2))
    assert axis_spectrum(np.full((1, 8, 8), 9.0)).sum() == 0.0  # a constant image: no energy, no nan
    np.testing.assert_allclose(axis_spectrum(np.repeat(cols[None, ..., None], 3, -1)), axis_spectrum(cols[None]), atol=1e-12)
    with pytest.raises(ValueError, match="square images of an even side"):
        axis_spectrum(np.zeros((1, 8, 4)))
    with pytest.raises(ValueError, match="square images of an even side"):
        axis_spectrum(np.zeros((1, 9, 9)))  # an odd side has no Nyquist bin
    # the Nyquist bin: alternating columns put all their energy at |fx| = S / 2; any image's marginals hold all of it
    alternating = np.tile((-1.0) ** i, (s, 1))
    assert axis_spectrum(alternating[None])[0, 0, s // 2] == pytest.approx(1.0)
    noise = axis_spectrum(np.random.default_rng(0).normal(size=(5, s, s)))
    np.testing.assert_allclose(noise.sum(axis=2), 1.0, atol=1e-12)
    # the class-balanced mean: the mean of the class means, whatever the counts (3 of class 0, 1 of class 1)
    bal = balanced_axis_spectrum(np.stack([cols, cols, cols, rows]), np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(bal, (spec[0] + spec[1]) / 2, atol=1e-12)
    assert balanced_axis_spectrum(np.zeros((0, 8, 8)), np.zeros(0), 2) is None
    # stripe_ratio: bins k >= 0.5 * (S/2) = 4 of 8 (0.25 cycles/pixel); a bin below the band never counts
    ref = np.full((2, 9), 0.1)
    syn = ref.copy()
    syn[0, 3] = 0.9  # 9x, but at k = 3 < 4: outside the band
    assert stripe_ratio(syn, ref) == pytest.approx(1.0)
    syn[1, 6] = 0.25  # 2.5x at |fy| = 6
    assert stripe_ratio(syn, ref) == pytest.approx(2.5)
    ref[1, 6] = 0.0  # the reference holds nothing there: the bin is skipped, not infinite
    assert stripe_ratio(syn, ref) == pytest.approx(1.0)
    assert stripe_ratio(None, ref) is None and stripe_ratio(syn, None) is None
    with pytest.raises(ValueError, match="differ in shape"):
        stripe_ratio(syn, ref[:, :5])


def test_the_spectra_are_the_same_in_chunks(monkeypatch) -> None:
    """A training split's spectra are computed CHUNK images at a time (memory at full scale): same numbers."""
    from cxr_utils.metrics import artefacts

    x = np.random.default_rng(1).integers(0, 256, (11, 8, 8)).astype(np.uint8)
    whole = artefacts.axis_spectrum(x), artefacts.high_frequency_share(x)
    monkeypatch.setattr(artefacts, "CHUNK", 4)  # 4 + 4 + 3
    np.testing.assert_array_equal(artefacts.axis_spectrum(x), whole[0])
    np.testing.assert_array_equal(artefacts.high_frequency_share(x), whole[1])
