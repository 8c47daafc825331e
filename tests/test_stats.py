"""Paired differences between protocols on the same test images, and the spread across GAN runs, on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cxr_utils.metrics import classification as E
from cxr_utils.metrics import paired as S


def _labels(n_neg: int, n_pos: int, seed: int = 0) -> np.ndarray:
    y = np.r_[np.zeros(n_neg, np.int64), np.ones(n_pos, np.int64)]
    return np.random.default_rng(seed).permutation(y)


def _right_on(y: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Probabilities that call image i right where correct[i], wrong elsewhere, with distinct, tied-free scores."""
    conf = np.linspace(0.55, 0.95, len(y))
    p = np.where(y == 1, conf, 1 - conf)
    return np.where(correct, p, 1 - p)


def test_metrics_of_a_resample_given_as_multiplicities_are_sklearns_on_the_resampled_images():
    rng = np.random.default_rng(1)
    y = _labels(7, 11)
    probs = np.round(rng.random((3, len(y))), 1)  # rounded: many ties between positives and negatives
    runs = S._Runs(y, probs, 0.5, auc=True)
    for _ in range(5):
        idx = np.r_[rng.choice(np.flatnonzero(y == 0), 7), rng.choice(np.flatnonzero(y == 1), 11)]  # with repeats
        got = runs.metrics(S._multiplicities(idx[None, :], len(y)))
        for r, p in enumerate(probs):
            yb, pb = y[idx], p[idx]
            assert got["accuracy"][r, 0] == pytest.approx(((pb >= 0.5) == yb).mean())
            assert got["f1"][r, 0] == pytest.approx(f1_score(yb, pb >= 0.5, zero_division=0))
            assert got["roc_auc"][r, 0] == pytest.approx(roc_auc_score(yb, pb))


def test_the_difference_is_that_of_the_seed_mean_metrics():
    rng = np.random.default_rng(2)
    y = _labels(30, 50)
    a = [rng.random(len(y)) * 0.6 + 0.4 * y for _ in range(2)]  # two classifier seeds
    b = [rng.random(len(y)) * 0.8 + 0.2 * y for _ in range(3)]  # three
    res = S.paired_difference(y, a, b, n_boot=0)
    for k in S.PAIRED_METRICS:
        ma = np.mean([E.classification_metrics(y, p)[k] for p in a])
        mb = np.mean([E.classification_metrics(y, p)[k] for p in b])
        assert res["difference"][k] == pytest.approx(ma - mb)
        assert (res["a"][k], res["b"][k]) == pytest.approx((ma, mb))
        assert res["ci95"][k] is None  # no resampling asked for
    assert (res["n_a"], res["n_b"], res["n_test"]) == (2, 3, {"NORMAL": 30, "PNEUMONIA": 50})


def test_a_planted_difference_gives_an_interval_that_excludes_zero():
    y = _labels(80, 120, seed=3)
    rng = np.random.default_rng(4)
    good = [_right_on(y, rng.random(len(y)) < 0.9) for _ in range(2)]  # about 90 % right
    poor = [_right_on(y, rng.random(len(y)) < 0.7) for _ in range(2)]  # about 70 % right
    res = S.paired_difference(y, good, poor, n_boot=500, seed=0)
    for k in S.PAIRED_METRICS:
        lo, hi = res["ci95"][k]
        assert 0 < lo <= res["difference"][k] <= hi, k
        assert S.excludes_zero(res["ci95"][k]) and res["interval_method"][k] == "BCa"
    assert res["difference"]["accuracy"] == pytest.approx(res["a"]["accuracy"] - res["b"]["accuracy"])
    worse = S.paired_difference(y, poor, good, n_boot=500, seed=0)  # the other way round: entirely below 0
    assert all(worse["ci95"][k][1] < 0 for k in S.PAIRED_METRICS)


def test_identical_predictions_give_exactly_zero():
    y = _labels(40, 60)
    p = [np.random.default_rng(5).random(len(y))]
    res = S.paired_difference(y, p, p, n_boot=300)
    assert res["difference"] == dict.fromkeys(S.PAIRED_METRICS, 0.0)
    assert res["ci95"] == dict.fromkeys(S.PAIRED_METRICS, [0.0, 0.0])  # every resample: 0; BCa is undefined there
    assert set(res["interval_method"].values()) == {"degenerate"} and not S.excludes_zero(res["ci95"]["accuracy"])


def test_exchangeable_protocols_give_intervals_around_zero():
    y = _labels(60, 90, seed=6)
    # swapped roles: A is right exactly where B is wrong, on equally many images of each class -> difference 0
    right = np.zeros(len(y), bool)
    for c in (0, 1):
        right[np.flatnonzero(y == c)[::2]] = True
    res = S.paired_difference(y, [_right_on(y, right)], [_right_on(y, ~right)], n_boot=500)
    for k in ("accuracy", "f1"):
        lo, hi = res["ci95"][k]
        assert res["difference"][k] == pytest.approx(0.0, abs=1e-12) and lo < 0 < hi, k
    # and drawn at random: each image's two predictions go to A or B by a coin flip (no protocol is better)
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        u, v = _right_on(y, rng.random(len(y)) < 0.8), _right_on(y, rng.random(len(y)) < 0.8)
        flip = rng.random(len(y)) < 0.5
        ci = S.paired_difference(y, [np.where(flip, u, v)], [np.where(flip, v, u)], n_boot=300, seed=seed)["ci95"]
        covered += ci["accuracy"][0] <= 0 <= ci["accuracy"][1]
    assert covered >= 17  # a 95 % interval: about 19 of 20 hold 0


def test_every_resample_holds_the_test_splits_class_counts(monkeypatch):
    y = _labels(5, 9)
    seen = []
    real = S._multiplicities

    def spy(idx, n):
        c = real(idx, n)
        seen.append(np.stack([c[:, y == 0].sum(1), c[:, y == 1].sum(1)], 1))
        return c

    monkeypatch.setattr(S, "_multiplicities", spy)
    res = S.paired_difference(y, [np.linspace(0, 1, 14)], [np.linspace(1, 0, 14)], n_boot=50)
    counts = np.concatenate(seen)
    resampled = counts[(counts.sum(1) == 14)]  # bootstrap resamples (the jackknife leaves one image out)
    assert len(resampled) >= 50 and (resampled == [5, 9]).all()  # stratified: AUC is defined in every resample
    assert res["ci95"]["roc_auc"] is not None


def test_where_an_interval_cannot_be_had_it_is_none():
    one_class = S.paired_difference([1, 1, 1, 1], [np.array([0.9, 0.2, 0.8, 0.7])], [np.array([0.9, 0.9, 0.1, 0.7])],
                                    n_boot=100)
    assert one_class["difference"]["roc_auc"] is None and one_class["ci95"]["roc_auc"] is None  # AUC needs both classes
    assert one_class["difference"]["accuracy"] == pytest.approx(0.0) and one_class["ci95"]["accuracy"] is not None
    tiny = S.paired_difference([0, 1], [np.array([0.2, 0.9])], [np.array([0.6, 0.9])], n_boot=100)
    assert tiny["difference"]["accuracy"] == pytest.approx(0.5)  # the point difference is still reported
    assert tiny["ci95"] == dict.fromkeys(S.PAIRED_METRICS)  # one test image per class: nothing to resample
    with pytest.raises(ValueError, match="3 / 2 probabilities for 2 test labels"):
        S.paired_difference([0, 1], [np.zeros(3)], [np.zeros(2)])


def test_the_interval_is_seeded():
    y = _labels(20, 30)
    rng = np.random.default_rng(7)
    a, b = [rng.random(50)], [rng.random(50)]
    assert S.paired_difference(y, a, b, n_boot=200, seed=1) == S.paired_difference(y, a, b, n_boot=200, seed=1)
    assert S.paired_difference(y, a, b, n_boot=200, seed=1)["ci95"] != S.paired_difference(y, a, b, n_boot=200,
                                                                                            seed=2)["ci95"]


def test_spread_across_folders_from_known_numbers():
    per_folder = [[0.80, 0.82], [0.70, 0.74], [0.90, 0.86]]  # three GAN runs x two classifier seeds
    s = S.spread_across_folders(per_folder)
    assert s["per_folder_mean"] == pytest.approx([0.81, 0.72, 0.88])
    assert s["mean"] == pytest.approx(np.mean([0.81, 0.72, 0.88]))
    assert s["std_across_folders"] == pytest.approx(np.std([0.81, 0.72, 0.88], ddof=1))  # 0.0802: GAN runs
    assert s["std_across_seeds"] == pytest.approx(np.mean([0.02 / np.sqrt(2), 0.04 / np.sqrt(2), 0.04 / np.sqrt(2)]))
    one_run = S.spread_across_folders([[0.8, 0.9]])
    assert one_run["std_across_folders"] is None and one_run["std_across_seeds"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    one_seed = S.spread_across_folders([[0.8], [0.9]])
    assert one_seed["std_across_seeds"] is None and one_seed["std_across_folders"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert S.spread_across_folders([[None], [0.5, 0.7]])["std_across_seeds"] is None  # a run without the metric
    assert S.excludes_zero(None) is None and S.excludes_zero([-0.1, 0.2]) is False and S.excludes_zero([0.01, 0.2])


def test_pairing_resolves_a_difference_that_two_separate_intervals_do_not():
    """A and B agree on every test image but 10, where only A is right: the same-image resamples see the 10 images'
    difference, while the per-protocol intervals (each over its own resamples) overlap widely."""
    y = _labels(100, 150, seed=8)
    b_right = np.random.default_rng(9).random(len(y)) < 0.8
    a_right = b_right.copy()
    a_right[np.flatnonzero(~b_right)[:10]] = True
    a, b = [_right_on(y, a_right)], [_right_on(y, b_right)]
    paired = S.paired_difference(y, a, b, n_boot=500)
    assert paired["difference"]["accuracy"] == pytest.approx(10 / 250) and paired["ci95"]["accuracy"][0] > 0
    ca, cb = E.bootstrap_ci(y, a, 500)["accuracy"], E.bootstrap_ci(y, b, 500)["accuracy"]
    assert ca[0] < cb[1]  # the separate intervals overlap: read side by side, they would say "no difference"
