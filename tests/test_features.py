"""Feature extractors: seeded random CNN, offline InceptionV3 fallback, balanced class weights of the domain classifier."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils import features as F


def test_random_cnn_extractor_is_fixed_by_its_seed():
    imgs = np.random.default_rng(6).integers(0, 256, size=(4, 32, 32), dtype=np.uint8)
    a = F.random_cnn_extractor(32, seed=7)(imgs)
    b = F.random_cnn_extractor(32, seed=7)(imgs)
    c = F.random_cnn_extractor(32, seed=8)(imgs)
    assert a.shape == (4, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert "random-init" in F.random_cnn_extractor(32, seed=7).name


def test_inception_unavailable_offline_falls_back_with_a_note(monkeypatch, tmp_path):
    import keras

    def no_network(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(F.ExtractorUnavailable, match="InceptionV3 ImageNet weights could not be obtained"):
        F.inception_extractor()
    from cxr_utils.errors import UserError

    with pytest.raises(UserError, match="--extractor inception"):
        F.build_extractors("inception", 32)
    exs, notes = F.build_extractors("random", 32)
    assert [e.name.startswith("random-init") for e in exs] == [True]


def test_balanced_class_weight_closed_form() -> None:
    from cxr_utils.features import balanced_class_weight

    assert balanced_class_weight(np.array([0, 1, 1, 1]), 2) == {0: 2.0, 1: pytest.approx(4 / 6)}
    # three classes, one absent: the present ones weigh n / (K n_c), the absent one 1 (it never occurs in the loss)
    assert balanced_class_weight(np.array([0, 0, 2]), 3) == {0: pytest.approx(0.5), 1: 1.0, 2: 1.0}
