"""Generator/discriminator builders: shapes, dtypes, ranges and filter plans for every size, channel count and norm."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from cxr_utils.config import GANConfig
from cxr_utils.gan.networks import build_discriminator, build_generator, discriminator_filters, generator_filters


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
    from cxr_utils.gan.networks import MinibatchStdDev

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


# ---------------------------------------------------------------- issue 20: the G and D of the literature

SEED_G_LAYERS = [("label", "InputLayer"), ("noise", "InputLayer"), ("label_embedding", "Embedding"),
                 ("noise_and_label", "Concatenate"), ("project", "Dense"), ("to_4x4", "Reshape"),
                 ("project_norm", "LayerNormalization"), ("project_relu", "ReLU"),
                 *[(f"up{i}_{k}", t) for i in range(3) for k, t in (("conv", "Conv2DTranspose"),
                                                                    ("norm", "LayerNormalization"), ("relu", "ReLU"))],
                 ("to_image", "Conv2DTranspose"), ("tanh", "Activation")]
SEED_D_LAYERS = [("label", "InputLayer"), ("label_map_embedding", "Embedding"), ("image", "InputLayer"),
                 ("label_map", "Reshape"), ("image_and_label", "Concatenate"), ("down0_conv", "Conv2D"),
                 ("down0_lrelu", "LeakyReLU"),
                 *[(f"down{i}_{k}", t) for i in range(1, 4) for k, t in (("conv", "Conv2D"), ("norm", "LayerNormalization"),
                                                                       ("lrelu", "LeakyReLU"))],
                 ("flatten", "Flatten"), ("score", "Dense"), ("class_logits", "Dense")]


def _layers(model: keras.Model) -> list[tuple[str, str]]:
    return [(lay.name, type(lay).__name__) for lay in model.layers]


def test_the_seed_recipe_still_builds_the_seeds_acgan_exactly() -> None:
    """Pinned to the layer list and parameter counts of the seed's ACGAN before issue 20 (3 channels, transposed
    convolutions, plain LayerNorm with its own gain and bias, Embedding label map, no spectral norm)."""
    cfg = GANConfig().with_recipe("seed")
    assert (cfg.channels, cfg.g_upsample, cfg.norm, cfg.g_norm, cfg.spectral_all) == (3, "transpose", "layer", None, False)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert _layers(g) == SEED_G_LAYERS and _layers(d) == SEED_D_LAYERS
    assert (g.count_params(), d.count_params()) == (4_215_783, 2_792_131)
    assert g.get_layer("up0_norm").center and g.get_layer("up0_norm").scale
    assert GANConfig().with_recipe("seed") == GANConfig()  # the seed recipe is GANConfig's own defaults


def test_xray_v1_is_the_default_of_before_issue_20() -> None:
    """What `train` built before issue 20 (pinned): an old run's config.json rebuilds it."""
    cfg = GANConfig().with_recipe("xray-v1")
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert (g.count_params(), d.count_params()) == (1_423_175, 719_811)
    assert [t for _, t in _layers(g)].count("Conv2DTranspose") == 4 and g.output.shape[-1] == 3
    assert "LayerNormalization" not in {t for _, t in _layers(g)}
    sn = [n for n, t in _layers(d) if t == "SpectralNormalization"]
    assert sn == [f"down{i}_conv_sn" for i in range(4)]  # the convolutions only
    assert {"projection_embedding", "label_map_embedding"} <= {n for n, t in _layers(d) if t == "Embedding"}


def test_the_default_recipe_conditions_every_generator_block_on_the_class() -> None:
    from cxr_utils.config import DEFAULT_RECIPE

    cfg = GANConfig().with_recipe(DEFAULT_RECIPE)
    g = build_generator(cfg)
    norms = [lay for lay in g.layers if isinstance(lay, keras.layers.LayerNormalization)]
    assert [n.name for n in norms] == ["project_norm", "up0_norm", "up1_norm", "up2_norm"]  # every block
    assert all(not n.center and not n.scale for n in norms)  # no gain or bias of its own: the class gives them
    names = [lay.name for lay in g.layers]
    for n in norms:  # each followed by its class-conditional gain and bias, fed by the label embedding
        affine = g.get_layer(f"{n.name}_class")
        assert type(affine).__name__ == "ClassAffine" and names.index(affine.name) == names.index(n.name) + 1
    assert "Conv2DTranspose" not in {type(lay).__name__ for lay in g.layers}  # resize + convolution
    assert all(g.get_layer(f"{p}_resize").interpolation == "nearest" for p in ("up0_conv", "up1_conv", "up2_conv", "to_image"))
    assert g.output.shape[-1] == 1 and cfg.channels == 1  # one grey channel
    # SNGAN's D normalised throughout is an option, not the default: on the sample it drew no ribs, heart or diaphragm
    assert cfg.spectral_all is False
    sn = [lay.name for lay in build_discriminator(cfg).layers if isinstance(lay, keras.layers.SpectralNormalization)]
    assert sn == [f"down{i}_conv_sn" for i in range(4)]


def test_class_affine_closed_form_starts_as_identity_and_survives_safe_mode(tmp_path) -> None:
    from cxr_utils.gan.networks import ClassAffine

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 4, 5)).astype("float32")
    e = rng.normal(size=(3, 2)).astype("float32")
    layer = ClassAffine()
    np.testing.assert_array_equal(ops.convert_to_numpy(layer([x, e])), x)  # zero init: gain 1, bias 0
    wg, bg, wb, bb = (rng.normal(size=s).astype("float32") for s in ((2, 5), (5,), (2, 5), (5,)))
    layer.set_weights([wg, bg, wb, bb])
    gamma, beta = 1 + e @ wg + bg, e @ wb + bb  # one gain and bias per sample and channel, broadcast over H, W
    expected = x * gamma[:, None, None, :] + beta[:, None, None, :]
    np.testing.assert_allclose(ops.convert_to_numpy(layer([x, e])), expected, rtol=1e-5, atol=1e-5)
    cfg = _cfg(image_size=16, channels=1, g_norm="class_layer", norm="none", g_upsample="upsample")
    g = build_generator(cfg)
    for w in g.get_layer("up0_norm_class").weights:  # non-zero class gains, so the class changes the image
        w.assign(rng.normal(size=w.shape).astype("float32"))
    g.save(tmp_path / "g.keras")
    g2 = keras.models.load_model(tmp_path / "g.keras", safe_mode=True, compile=False)  # no Lambda: loads safely
    z = np.tile(rng.normal(size=(1, 8)).astype("float32"), (2, 1))
    y = np.array([0, 1], "int32")
    a, b = ops.convert_to_numpy(g([z, y])), ops.convert_to_numpy(g2([z, y]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


def test_bilinear_resize_is_an_option() -> None:
    g = build_generator(_cfg(image_size=16, channels=1, g_upsample="bilinear"))
    assert g.get_layer("to_image_resize").interpolation == "bilinear"


def _resizes(g: keras.Model) -> dict[str, str]:
    return {layer.name: layer.interpolation for layer in g.layers if layer.name.endswith("_resize")}


def test_antialias_smooths_only_the_image_layers_resize_and_a_full_resolution_block_is_an_option() -> None:
    """antialias: nearest in the blocks, bilinear before the image layer (whose single 3x3 conv cannot remove the
    spectral images of a nearest resize); g_full_res_filters: one more block at full size, then a plain conv."""
    g = build_generator(_cfg(image_size=32, channels=1, g_upsample="antialias"))
    assert _resizes(g) == {"up0_conv_resize": "nearest", "up1_conv_resize": "nearest", "to_image_resize": "bilinear"}
    plain = build_generator(_cfg(image_size=32, channels=1, g_upsample="upsample"))
    assert set(_resizes(plain).values()) == {"nearest"} and plain.count_params() == g.count_params()
    full = build_generator(_cfg(image_size=32, channels=1, g_upsample="upsample", g_full_res_filters=4, g_norm="layer"))
    assert full.get_layer("full_res_conv").output.shape == (None, 32, 32, 4)
    assert full.get_layer("full_res_norm").output.shape == (None, 32, 32, 4)
    to_image = full.get_layer("to_image")
    assert to_image.kernel.shape == (3, 3, 4, 1) and to_image.output.shape == (None, 32, 32, 1)
    assert "to_image_resize" not in _resizes(full) and full.output.shape == (None, 32, 32, 1)
    from cxr_utils.errors import UserError

    with pytest.raises(UserError, match="g_full_res_filters must be >= 0"):
        GANConfig(g_full_res_filters=-1).validate()


def _sn_discriminator(dtype: str | None = None, **kw) -> keras.Model:
    return build_discriminator(_cfg(image_size=16, channels=1, norm="none", projection=True, spectral_all=True, **kw),
                               dtype=dtype)


def test_spectral_all_normalises_every_layer_that_sees_the_image_or_the_label() -> None:
    d = _sn_discriminator(label_into_features=True)
    kinds = {type(lay).__name__ for lay in d.layers}
    assert "Embedding" not in kinds and "Dense" not in kinds and "Conv2D" not in kinds  # all inside a wrapper
    wrapped = {lay.name: type(lay.layer).__name__ for lay in d.layers if isinstance(lay, keras.layers.SpectralNormalization)}
    assert wrapped == {"label_map_embedding_sn": "Dense", "label_feature_embedding_sn": "Dense",
                       "projection_embedding_sn": "Dense", "score_sn": "Dense", "class_logits_sn": "Dense",
                       **{f"down{i}_conv_sn": "Conv2D" for i in range(2)}}
    assert not d.get_layer("label_map_embedding_sn").layer.use_bias  # an embedding: no bias
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 1)).astype("float32")
    y = np.array([0, 1, 1, 0], "int32")
    for _ in range(30):  # keras's SpectralNormalization rescales its kernel by the power-iteration sigma in training
        d([x, y], training=True)
    for name in wrapped:
        k = ops.convert_to_numpy(d.get_layer(name).layer.kernel)
        sigma = np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)[0]
        assert abs(sigma - 1.0) < 0.05, (name, sigma)


def test_spectral_all_projection_score_is_the_one_hot_dense_embedding_dot_features() -> None:
    d = _sn_discriminator()
    feats = keras.Model(d.inputs, d.get_layer("flatten").output)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    labels = np.array([0, 1, 1, 0], np.int32)
    h = ops.convert_to_numpy(feats([x, labels]))
    w, b = (ops.convert_to_numpy(v) for v in (d.get_layer("score_sn").layer.kernel, d.get_layer("score_sn").layer.bias))
    emb = ops.convert_to_numpy(d.get_layer("projection_embedding_sn").layer.kernel)  # (K, F): row k embeds class k
    expected = h @ w + b + np.sum(h * emb[labels], axis=1, keepdims=True)
    score, _ = d([x, labels])
    np.testing.assert_allclose(ops.convert_to_numpy(score), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_spectral_all_heads_stay_float32_under_mixed_precision(policy: str) -> None:
    d = _sn_discriminator(dtype=policy)
    for name in ("score_sn", "class_logits_sn", "projection_embedding_sn"):
        assert d.get_layer(name).compute_dtype == "float32" and d.get_layer(name).layer.compute_dtype == "float32"
    assert d.get_layer("down1_conv_sn").compute_dtype == policy.split("_")[1]
    x = np.zeros((2, 16, 16, 1), "float32")
    score, logits = d([x, np.array([0, 1], "int32")], training=True)
    assert score.dtype == "float32" and logits.dtype == "float32"
    assert all(v.dtype == "float32" for v in d.weights)  # master weights (and SN's u vectors) stay float32


def test_new_fields_are_validated() -> None:
    from cxr_utils.errors import UserError

    with pytest.raises(UserError, match="spectral_all needs norm none"):
        GANConfig(spectral_all=True).validate()
    with pytest.raises(UserError, match=r"g_upsample must be transpose\|upsample\|bilinear\|antialias, got cubic"):
        GANConfig(g_upsample="cubic").validate()
    with pytest.raises(UserError, match=r"g_norm must be layer\|batch\|none\|class_layer, got instance"):
        GANConfig(g_norm="instance").validate()
    with pytest.raises(UserError, match=r"^config: norm must be layer\|batch\|none, got class_layer"):
        GANConfig(norm="class_layer").validate()  # D has no class-conditional norm
