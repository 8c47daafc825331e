"""Notebook 03's checks as functions: gallery rows, class-swap difference, memorization table, export size."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils.evaluation import checks as review
from cxr_utils.evaluation import synthetic
from cxr_utils.metrics import memorization as metrics


def test_gallery_rows_put_each_synthetic_row_under_real_images_of_its_class() -> None:
    real_x = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    real_y = np.array([1, 0, 1, 1, 0])
    syn = np.full((2, 3, 2, 2), 7, np.uint8)  # a sample.gallery: (K, n, S, S)
    rows, titles = review.real_vs_synthetic_rows(real_x, real_y, syn, ["NORMAL", "PNEUMONIA"], 2)
    assert titles == ["real NORMAL\n(train)", "SYNTHETIC\nNORMAL", "real PNEUMONIA\n(train)", "SYNTHETIC\nPNEUMONIA"]
    np.testing.assert_array_equal(rows[0], real_x[[1, 4]])
    np.testing.assert_array_equal(rows[2], real_x[[0, 2]])  # the first n of the class, in order
    np.testing.assert_array_equal(rows[1], syn[0])
    assert [len(r) for r in rows] == [2, 3, 2, 3]


def test_class_swap_difference_is_the_mean_absolute_pixel_gap_per_column() -> None:
    swap = np.zeros((3, 2, 2, 2), np.uint8)
    swap[-1, 0] = 255  # column 0: the last class is white, the first black
    swap[-1, 1, 0, 0] = 40  # column 1: one pixel of four differs by 40
    swap[1] = 200  # a middle class does not count
    assert review.class_swap_difference(swap).tolist() == [255.0, 10.0]


def test_memorization_table_shows_medians_and_counts_of_a_pixel_memorization() -> None:
    rng = np.random.default_rng(0)
    train, syn, held = (rng.integers(0, 256, (n, 4, 4), dtype=np.uint8) for n in (6, 5, 3))
    memo = metrics.pixel_memorization(train, syn, held)
    t = review.memorization_table(memo)
    assert list(t.columns) == ["synthetic -> train", "held-out real -> train"]
    assert list(t.index) == ["median nearest distance (RMS, pixels in [0, 1])", "images"]
    assert t.iloc[0].tolist() == pytest.approx([memo["synth_to_train_median"], memo["test_to_train_median"]])
    assert t.iloc[1].tolist() == [5, 3]


def test_export_size_is_per_class_the_ratio_times_its_real_images_at_least_16() -> None:
    kaggle = np.array([0] * 1080 + [1] * 3100)  # about the Kaggle train split after the grouped re-split (1 : 3)
    # the default covers notebook 04's sweep up to 2 x real, in each class's own proportion
    assert review.export_size(None, kaggle, 2) == [2160, 6200] and review.EXPORT_RATIO == 2
    assert review.export_size(None, kaggle, 2, ratio=1) == [1080, 3100]  # = what tstr / augment at ratio 1 take
    assert review.export_size(None, kaggle, 2, ratio=0.5) == [540, 1550]
    # enough for every ratio up to the export's: synthetic.per_class_for_ratio is the rule notebook 04 applies
    for r in (0.25, 0.5, 1, 1.5, 2):
        assert all(n >= k for n, k in zip(review.export_size(None, kaggle, 2), synthetic.per_class_for_ratio([1080, 3100], r),
                                          strict=True))
    assert review.export_size(None, np.array([0, 1, 1]), 2) == [16, 16] and review.MIN_EXPORT == 16  # a tiny source
    assert review.export_size(5, kaggle, 2) == [5, 5]  # an explicit count wins, for every class
    assert review.export_size(None, np.array([0, 0, 0]), 3) == [16, 16, 16]  # an absent class counts as zero
