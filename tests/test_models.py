"""Generator/discriminator builders: shapes, dtypes, ranges and filter plans for every size, channel count and norm."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from cxr_utils.config import GANConfig
from cxr_utils.models import build_discriminator, build_generator, discriminator_filters, generator_filters


def _cfg(**kw) -> GANConfig:
    base = dict(g_base_filters=4, d_base_filters=4, latent_dim=8, embed_dim=3)
    return GANConfig(**{**base, **kw})


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(size: int, channels: int) -> None:
    cfg = _cfg(image_size=size, channels=channels)
    g, d = build_generator(cfg), build_discriminator(cfg)
    labels = ops.convert_to_tensor(np.array([0, 1, 1], np.int32))
    z = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) * 50)
    x = ops.convert_to_numpy(g([z, labels]))
    assert x.shape == (3, size, size, channels) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0  # tanh output
    score, logits = d([ops.convert_to_tensor(x), labels])
    assert tuple(score.shape) == (3, 1) and tuple(logits.shape) == (3, 2)


def test_filter_plan_doubles_towards_4x4_and_caps() -> None:
    assert generator_filters(_cfg(image_size=64, g_base_filters=64)) == [512, 256, 128, 64]
    assert generator_filters(_cfg(image_size=128, g_base_filters=64)) == [512, 512, 256, 128, 64]  # capped at 8x
    assert discriminator_filters(_cfg(image_size=32, d_base_filters=16)) == [16, 32, 64]


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_norm_switch(norm: str) -> None:
    cfg = _cfg(image_size=32, channels=1, norm=norm)
    g, d = build_generator(cfg), build_discriminator(cfg)
    g_types = {type(layer).__name__ for layer in g.layers}
    d_types = {type(layer).__name__ for layer in d.layers}
    expected = {"layer": "LayerNormalization", "batch": "BatchNormalization"}.get(norm)
    if expected:
        assert expected in g_types and expected in d_types and "SpectralNormalization" not in d_types
    else:
        assert "SpectralNormalization" in d_types
        assert not ({"LayerNormalization", "BatchNormalization"} & (g_types | d_types))


def test_label_conditioning_changes_outputs_and_feature_option() -> None:
    cfg = _cfg(image_size=32, channels=1, label_into_features=True)
    g, d = build_generator(cfg), build_discriminator(cfg)
    names = {layer.name for layer in d.layers}
    assert {"label_map", "label_feature_map", "features_and_label"} <= names
    # the label map is S x S and joins the image as an extra channel
    assert tuple(d.get_layer("image_and_label").output.shape) == (None, 32, 32, 2)
    z = ops.convert_to_tensor(np.ones((2, 8), np.float32))
    x = ops.convert_to_numpy(g([z, ops.convert_to_tensor(np.array([0, 1], np.int32))]))
    assert not np.allclose(x[0], x[1])  # same noise, different label -> different image
    assert "features_and_label" not in {layer.name for layer in build_discriminator(_cfg(image_size=32)).layers}


def test_mixed_precision_keeps_outputs_float32() -> None:
    cfg = _cfg(image_size=32, channels=3)
    g = build_generator(cfg, dtype="mixed_bfloat16")
    d = build_discriminator(cfg, dtype="mixed_bfloat16")
    labels = ops.convert_to_tensor(np.array([0, 1], np.int32))
    x = g([ops.convert_to_tensor(np.zeros((2, 8), np.float32)), labels])
    score, logits = d([x, labels])
    assert x.dtype == "float32" and score.dtype == "float32" and logits.dtype == "float32"
    assert g.get_layer("up0_conv").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in g.weights)  # master weights stay float32
    assert isinstance(g, keras.Model)


def test_minibatch_std_layer_closed_form_and_safe_mode_roundtrip(tmp_path) -> None:
    from cxr_utils.models import MinibatchStdDev

    x = np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 2.0)]).astype("float32")  # per-feature std over batch = 1
    y = ops.convert_to_numpy(MinibatchStdDev()(x))
    assert y.shape == (2, 2, 2, 4)
    assert np.allclose(y[..., :3], x) and np.allclose(y[..., 3], 1.0, atol=1e-6)
    cfg = GANConfig(image_size=16, channels=1, num_classes=3, class_names=("a", "b", "c"), d_base_filters=8,
                    minibatch_std=True)
    d = build_discriminator(cfg)
    assert d.get_layer("minibatch_std").output.shape[-1] == 8 * 2 + 1
    assert "minibatch_std" not in [lay.name for lay in build_discriminator(GANConfig(image_size=16, d_base_filters=8)).layers]
    imgs = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 1)).astype("float32")
    labels = np.array([0, 1, 2, 0], "int32")
    d.save(tmp_path / "d.keras")
    d2 = keras.models.load_model(tmp_path / "d.keras", safe_mode=True, compile=False)
    for a, b in zip(d([imgs, labels]), d2([imgs, labels]), strict=True):
        assert np.array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_projection_discriminator_score_is_linear_head_plus_label_embedding_dot_features() -> None:
    cfg = _cfg(image_size=16, channels=1, projection=True)
    d = build_discriminator(cfg)
    feats = keras.Model(d.inputs, d.get_layer("flatten").output)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    labels = np.array([0, 1, 1, 0], np.int32)
    h = ops.convert_to_numpy(feats([x, labels]))
    w, b = (ops.convert_to_numpy(v) for v in d.get_layer("score").weights)
    emb = ops.convert_to_numpy(d.get_layer("projection_embedding").embeddings)
    assert emb.shape == (2, h.shape[1])
    expected = h @ w + b + np.sum(h * emb[labels], axis=1, keepdims=True)
    score, _ = d([x, labels])
    np.testing.assert_allclose(ops.convert_to_numpy(score), expected, rtol=1e-4, atol=1e-4)
    assert "projection_embedding" not in [lay.name for lay in build_discriminator(_cfg(image_size=16)).layers]
