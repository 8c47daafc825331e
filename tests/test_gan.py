"""ConditionalGAN pieces: closed-form losses, generated labels (balanced, data prior), DiffAugment, EMA math, stateless (seed, step) RNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from cxr_utils.config import GANConfig
from cxr_utils.gan import model as G
from cxr_utils.gan.checkpoints import get_state, set_state, state_variables
from cxr_utils.gan.device import build_gan


def _cfg(**kw) -> GANConfig:
    base = dict(image_size=32, channels=1, g_base_filters=4, d_base_filters=4, latent_dim=8, embed_dim=3, batch_size=4,
                precision="fp32")
    return GANConfig(**{**base, **kw})


def _np(t) -> np.ndarray:
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t)


# ---------------------------------------------------------------- losses

def test_lsgan_losses_closed_form() -> None:
    r = tf.constant([[1.0], [0.0], [0.5]])
    f = tf.constant([[0.0], [1.0], [0.5]])
    np.testing.assert_allclose(_np(G.adversarial_d_loss("lsgan", r, f)), [0.0, 2.0, 0.5])
    np.testing.assert_allclose(_np(G.adversarial_g_loss("lsgan", f)), [1.0, 0.0, 0.25])


def test_bce_losses_closed_form_and_stable() -> None:
    z = tf.zeros((2, 1))
    np.testing.assert_allclose(_np(G.adversarial_d_loss("bce", z, z)), [2 * math.log(2)] * 2, rtol=1e-6)
    np.testing.assert_allclose(_np(G.adversarial_g_loss("bce", z)), [math.log(2)] * 2, rtol=1e-6)
    big = tf.constant([[1000.0]])
    assert _np(G.adversarial_d_loss("bce", big, -big))[0] == 0.0  # softplus: no overflow for confident D
    np.testing.assert_allclose(_np(G.adversarial_g_loss("bce", -big)), [1000.0])


def test_hinge_losses_closed_form() -> None:
    r = tf.constant([[0.5], [2.0]])
    f = tf.constant([[-0.5], [-3.0]])
    np.testing.assert_allclose(_np(G.adversarial_d_loss("hinge", r, f)), [1.0, 0.0])
    np.testing.assert_allclose(_np(G.adversarial_g_loss("hinge", f)), [0.5, 3.0])


def test_class_loss_uniform_logits_is_log_k() -> None:
    np.testing.assert_allclose(_np(G.class_loss(tf.constant([0, 2]), tf.zeros((2, 3)))), [math.log(3)] * 2, rtol=1e-6)


def test_unknown_loss_is_an_error() -> None:
    with pytest.raises(ValueError, match="wasserstein"):
        G.adversarial_g_loss("wasserstein", tf.zeros((1, 1)))


# ---------------------------------------------------------------- stateless draws

@pytest.mark.parametrize(("n", "k"), [(10, 2), (7, 3), (64, 2)])
def test_balanced_labels(n: int, k: int) -> None:
    key = G.rng_key(5, 3, G.S_LABELS_D)
    labels = _np(G.balanced_labels(n, k, key))
    counts = np.bincount(labels, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    assert np.array_equal(labels, _np(G.balanced_labels(n, k, key)))  # pure function of the key


# balanced_labels' output before label_prior existed (recorded from commit 4ef659e): "balanced" runs and every run
# older than the field draw exactly these, so they resume bit-identically
BALANCED_BEFORE = {
    (8, 2, 7, 0, G.S_LABELS_D): [0, 0, 1, 0, 0, 1, 1, 1],
    (10, 3, 1234, 5, G.S_LABELS_G): [1, 0, 0, 1, 1, 0, 2, 1, 2, 2],
    (64, 2, 0, 123456, G.S_LABELS_D): [1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0,
                                       1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1,
                                       0, 1, 1, 1, 1, 0, 0, 1],
}


@pytest.mark.parametrize("args", sorted(BALANCED_BEFORE))
def test_balanced_labels_are_bit_identical_to_before(args: tuple[int, ...]) -> None:
    n, k, seed, step, stream = args
    assert _np(G.balanced_labels(n, k, G.rng_key(seed, step, stream))).tolist() == BALANCED_BEFORE[args]


@pytest.mark.parametrize(("n", "counts"), [(10, (1, 3)), (7, (2, 3, 5)), (64, (1080, 3100)), (5, (0, 1, 1))])
def test_systematic_draw_gives_floor_or_ceil_and_exactly_the_prior_on_average(n: int, counts: tuple[int, ...]) -> None:
    """Over all N offsets (the offset is uniform on them) the mean count of class k is exactly n * p_k, and each single
    draw gives floor or ceil of it; integer arithmetic, so exact, not approximately."""
    total = sum(counts)
    sums = np.zeros(len(counts), np.int64)
    for v in range(total):
        labels = _np(G.systematic_labels(n, counts, tf.constant(v, tf.int64)))
        c = np.bincount(labels, minlength=len(counts))
        assert c.sum() == n and np.array_equal(labels, np.sort(labels))
        expect = n * np.array(counts) / total
        assert np.all((c == np.floor(expect)) | (c == np.ceil(expect))), (v, c, expect)
        sums += c
    assert sums.tolist() == [n * ck for ck in counts]  # sum over offsets / N = n * counts / N exactly
    assert sums[np.array(counts) == 0].sum() == 0  # a class without training images is never drawn


def test_prior_labels_per_batch_and_long_run_frequencies() -> None:
    """1 : 3 prior, batch 10 (2.5 / 7.5 expected): every batch has 2 or 3 of class 0 and the frequency over 1,000
    keyed draws is 0.25 within 4 standard deviations of the count's Bernoulli(0.5) rounding (0.0013)."""
    n, steps = 10, 1000
    zeros = []
    for step in range(steps):
        labels = _np(G.prior_labels(n, (1, 3), G.rng_key(3, step, G.S_LABELS_D)))
        assert labels.dtype == np.int32 and labels.shape == (n,)
        zeros.append(int((labels == 0).sum()))
    assert set(zeros) == {2, 3}
    sd = math.sqrt(steps * 0.25) / (n * steps)
    assert abs(sum(zeros) / (n * steps) - 0.25) < 4 * sd
    key = G.rng_key(3, 7, G.S_LABELS_G)
    assert np.array_equal(_np(G.prior_labels(n, (1, 3), key)), _np(G.prior_labels(n, (1, 3), key)))  # pure in the key
    # the order is shuffled by the key: not all draws put the minority class first
    orders = {tuple(_np(G.prior_labels(n, (1, 3), G.rng_key(3, s, 1)))) for s in range(20)}
    assert len(orders) > 10


def test_class_counts_are_checked_and_reduced() -> None:
    gan = build_gan(_cfg(), class_counts=(1080, 3100))
    assert gan.class_counts == (54, 155)  # the same prior, smallest integers: draws depend on the prior only
    assert build_gan(_cfg()).class_counts == (1, 1)  # no counts: uniform
    for bad in ((1, 2, 3), (0, 0), (-1, 3)):
        with pytest.raises(ValueError, match="class_counts must be 2 non-negative counts"):
            build_gan(_cfg(), class_counts=bad)


@pytest.mark.parametrize("label_prior", ["data", "balanced"])
def test_the_train_step_draws_its_labels_from_the_prior(label_prior: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels the generator actually receives in fit's D and G steps (a spy on its calls, fit run eagerly) on a
    1 : 3 data set: "data" gives 2 or 3 of 10 minority labels per step, exactly prior_labels' draw of the step's key;
    "balanced" gives balanced_labels' draw, as before the field existed."""
    import keras

    from cxr_utils.gan.fit import make_dataset

    cfg = _cfg(batch_size=10, label_prior=label_prior, diffaugment="")
    y = np.array([0] * 10 + [1] * 30)
    gan = build_gan(cfg, class_counts=tuple(np.bincount(y)))
    gan.run_eagerly = True  # so the spy sees each step's concrete labels
    seen: list[np.ndarray] = []
    real_call = keras.Model.__call__

    def spy(self, inputs, *args, **kwargs):
        if self is gan.generator:
            seen.append(np.asarray(inputs[1]))
        return real_call(self, inputs, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "__call__", spy)
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 1), dtype=np.uint8)
    steps = 8
    gan.fit(make_dataset(images, y, 10, cfg.seed, 0, 2, channels=1), epochs=2, steps_per_epoch=4, verbose=0)
    assert len(seen) == 2 * steps and int(gan.step.numpy()) == steps  # one D-step and one G-step draw per step
    for step in range(steps):
        for stream, labels in ((G.S_LABELS_D, seen[2 * step]), (G.S_LABELS_G, seen[2 * step + 1])):
            key = G.rng_key(cfg.seed, step, stream)
            want = G.prior_labels(10, (1, 3), key) if label_prior == "data" else G.balanced_labels(10, 2, key)
            assert labels.tolist() == _np(want).tolist(), (step, stream)
            assert (labels == 0).sum() in ((2, 3) if label_prior == "data" else (5,))


def test_rng_keys_differ_by_step_and_stream() -> None:
    keys = {tuple(_np(G.rng_key(1, s, k))) for s in range(4) for k in range(G.N_STREAMS)}
    assert len(keys) == 4 * G.N_STREAMS


def test_diff_augment_properties() -> None:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32))
    key = G.rng_key(0, 0, G.S_AUG_REAL)
    a1 = _np(G.diff_augment(x, "color,translation,cutout", key))
    a2 = _np(G.diff_augment(x, "color,translation,cutout", key))
    assert a1.shape == (8, 32, 32, 1) and np.array_equal(a1, a2)
    assert not np.array_equal(a1, _np(G.diff_augment(x, "color,translation,cutout", G.rng_key(0, 1, G.S_AUG_REAL))))
    assert np.array_equal(_np(G.diff_augment(x, "", key)), _np(x))
    # cutout on ones: values stay in {0, 1}; each hole covers at most a quarter of the image (16 x 16 of 32 x 32)
    c = _np(G.diff_augment(tf.ones((8, 32, 32, 1)), "cutout", key))
    assert set(np.unique(c)) <= {0.0, 1.0}
    zeros = (c == 0).reshape(8, -1).sum(1)
    assert (zeros <= 256).all() and (zeros > 0).all()
    # translation moves content by at most 1/8 of the size, padding with 0
    t = _np(G.diff_augment(x, "translation", key))
    assert set(np.round(np.unique(t), 6)) <= set(np.round(np.unique(_np(x)), 6)) | {0.0}
    # a replica's slice is augmented exactly as the same rows of the global batch
    part = _np(G.diff_augment(x[4:], "color,translation,cutout", key, offset=4, global_batch=8))
    assert np.array_equal(part, a1[4:])
    with pytest.raises(ValueError, match="blur"):
        G.diff_augment(x, "blur", key)


# ---------------------------------------------------------------- EMA and train_step

def test_ema_update_math() -> None:
    gan = build_gan(_cfg(ema_decay=0.9, ema_start_step=2))
    for v in gan.generator.trainable_variables:
        v.assign(np.ones(v.shape, np.float32))
    for v in gan.ema_generator.trainable_variables:
        v.assign(np.zeros(v.shape, np.float32))
    gan._update_ema(tf.constant(1002, tf.int64))  # warm-up over: d = 0.9, so 0.9 * 0 + 0.1 * 1
    for v in gan.ema_generator.trainable_variables:
        np.testing.assert_allclose(_np(v), 0.1, rtol=1e-6)
    gan._update_ema(tf.constant(1003, tf.int64))  # 0.9 * 0.1 + 0.1
    np.testing.assert_allclose(_np(gan.ema_generator.trainable_variables[0]), 0.19, rtol=1e-6)
    gan._update_ema(tf.constant(7, tf.int64))  # warm-up: t = 5, d = 6 / 15 = 0.4 -> 0.4 * 0.19 + 0.6
    np.testing.assert_allclose(_np(gan.ema_generator.trainable_variables[0]), 0.4 * 0.19 + 0.6, rtol=1e-6)
    gan._update_ema(tf.constant(1, tf.int64))  # before ema_start_step: a plain copy
    np.testing.assert_allclose(_np(gan.ema_generator.trainable_variables[0]), 1.0)


def test_fit_keeps_the_ema_generator_the_decayed_average_of_g() -> None:
    """After real `fit` steps the EMA weights equal the average recomputed here in numpy from G's weights after each
    step: a plain copy before ema_start_step, then warm-up d = (1 + t) / (10 + t), then ema_decay."""
    import keras

    from cxr_utils.gan.fit import make_dataset

    decay, start = 0.3, 1  # warm-up d: t=0 -> 0.1, 1 -> 0.18, 2 -> 0.25, then capped at 0.3 (t=3: 4/13 > 0.3)
    cfg = _cfg(ema_decay=decay, ema_start_step=start, g_lr=5e-3)  # steps large enough that the lag (~decay x step) shows
    gan = build_gan(cfg)

    def by_name(model) -> dict[str, keras.Variable]:  # paired by layer/variable path, not by position
        return {v.path.split("/", 1)[1]: v for v in model.trainable_variables}

    g, ema = by_name(gan.generator), by_name(gan.ema_generator)
    assert g.keys() == ema.keys() and len(g) > 4
    avg = {k: np.asarray(v.numpy(), np.float64) for k, v in ema.items()}
    assert all(np.array_equal(avg[k], g[k].numpy()) for k in g)  # the EMA starts as a copy of G
    g_after_step: list[dict[str, np.ndarray]] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            g_after_step.append({k: np.asarray(v.numpy(), np.float64) for k, v in g.items()})

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    ds = make_dataset(images, np.arange(8) % 2, cfg.batch_size, cfg.seed, 0, 3, channels=1)
    gan.fit(ds, epochs=3, steps_per_epoch=2, verbose=0, callbacks=[Record()])
    assert len(g_after_step) == 6 and int(gan.step.numpy()) == 6
    decays = []
    for step, weights in enumerate(g_after_step):
        t = step - start
        d = 0.0 if t < 0 else min(decay, (1 + t) / (10 + t))
        decays.append(d)
        avg = {k: d * avg[k] + (1 - d) * weights[k] for k in avg}
    assert decays == pytest.approx([0.0, 0.1, 2 / 11, 0.25, 0.3, 0.3])
    for k, v in ema.items():
        np.testing.assert_allclose(v.numpy(), avg[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # and the test has teeth: the average differs from G now and from G's starting weights
    assert any(not np.allclose(avg[k], g_after_step[-1][k], atol=1e-4) for k in avg)
    assert any(not np.allclose(avg[k], g_after_step[0][k], atol=1e-4) for k in avg)
    for a, b in zip(gan.ema_generator.non_trainable_variables, gan.generator.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # statistics (if any) are copied, not averaged


def test_ema_disabled_samples_from_the_generator() -> None:
    gan = build_gan(_cfg(ema_decay=0.0))
    assert gan.ema_generator is gan.generator


def _batch(cfg: GANConfig):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(-1, 1, (cfg.batch_size, 32, 32, 1)).astype(np.float32))
    y = tf.constant(np.arange(cfg.batch_size, dtype=np.int32) % 2)
    return x, y


def test_train_step_is_a_pure_function_of_state_and_step() -> None:
    cfg = _cfg()
    gan = build_gan(cfg)
    start = get_state(gan)
    batch = _batch(cfg)
    logs1 = {k: float(v) for k, v in gan.train_step(batch).items()}
    after1 = get_state(gan)
    assert int(after1["step"]) == 1 and int(start["step"]) == 0
    assert not np.array_equal(after1["generator/project/kernel"], start["generator/project/kernel"])
    set_state(gan, start)
    for m in gan.metrics:
        m.reset_state()
    logs2 = {k: float(v) for k, v in gan.train_step(batch).items()}
    after2 = get_state(gan)
    assert logs1 == logs2
    assert all(np.array_equal(after1[k], after2[k]) for k in after1)  # same noise, labels and augmentation
    # another step number draws differently: same weights, same batch, only the step changed -> other losses
    set_state(gan, {**start, "step": np.int64(1)})
    for m in gan.metrics:
        m.reset_state()
    logs3 = {k: float(v) for k, v in gan.train_step(batch).items()}
    assert logs3["d_loss"] != logs1["d_loss"] or logs3["g_loss"] != logs1["g_loss"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_state_is_keyed_by_path_and_covers_every_variable(precision: str) -> None:
    gan = build_gan(_cfg(), precision)
    variables = state_variables(gan)
    # every model and optimizer variable exactly once (learning rates excluded: the config rules them)
    models = [v for m in (gan.generator, gan.discriminator, gan.ema_generator) for v in m.variables]
    opts = [v for o in (gan.g_optimizer, gan.d_optimizer) for v in o.variables if v.name != "learning_rate"]
    assert sorted(map(id, variables.values())) == sorted(map(id, [gan.step, *models, *opts]))
    # keys name the variable, not its position: model paths, and slots by the path of the weight they belong to
    conv = gan.generator.get_layer("up0_conv").kernel
    assert variables["generator/up0_conv/kernel"] is conv
    adam = getattr(gan.g_optimizer, "inner_optimizer", gan.g_optimizer)
    for slot, store in (("momentum", adam._momentums), ("velocity", adam._velocities)):
        assert variables[f"g_opt/generator/up0_conv/kernel/{slot}"] is store[adam._get_variable_index(conv)]
    assert variables["g_opt/iteration"] is adam.iterations
    scale = {k for k in variables if "/loss_scale/" in k}
    assert scale == (set() if precision == "fp32" else
                     {f"{o}/loss_scale/{n}" for o in ("g_opt", "d_opt") for n in ("iteration", "step_counter", "dynamic_scale")})
    assert not any(k[-4:].isdigit() for k in variables)


def test_set_state_rejects_other_models_and_reports_loss_scale_changes() -> None:
    gan = build_gan(_cfg())
    state = get_state(gan)
    other = build_gan(_cfg(g_base_filters=8))
    with pytest.raises(ValueError, match="shape"):
        set_state(other, state)
    with pytest.raises(ValueError, match="lacks 1 variables .*generator/project/kernel"):
        set_state(gan, {k: v for k, v in state.items() if k != "generator/project/kernel"})
    with pytest.raises(ValueError, match="has 1 variables this model lacks .*generator/extra/kernel"):
        set_state(gan, {**state, "generator/extra/kernel": np.zeros(3, np.float32)})
    # fp32 state into an fp16 model: the loss-scale state is created; back: it is dropped, with its values
    fp16 = build_gan(_cfg(), "fp16")
    diff = set_state(fp16, state)
    assert diff["dropped"] == {} and float(diff["created"]["g_opt/loss_scale/dynamic_scale"]) == 2.0**15
    back = get_state(fp16)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    assert set(set_state(gan, back)["dropped"]) == {k for k in back if "/loss_scale/" in k}


def test_fixed_noise_is_fixed_and_class_blocked() -> None:
    gan = build_gan(_cfg(num_classes=3, class_names=("a", "b", "c")))
    z1, l1 = gan.fixed_noise(4)
    gan.step.assign(5)  # the grid noise must not follow training
    z2, _ = gan.fixed_noise(4)
    assert z1.shape == (12, 8) and np.array_equal(z1, z2)
    assert l1.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_mode_seeking_loss_closed_form_pairs_only_same_class_neighbours() -> None:
    from cxr_utils.gan.model import mode_seeking_loss

    # labels 1, 0, 1, 0 -> sorted order (1, 3, 0, 2); partner = roll by 1 -> (2, 1, 3, 0);
    # same-class pairs: (3, 1) and (2, 0); (1, 2) and (0, 3) cross classes and are masked out
    labels = tf.constant([1, 0, 1, 0], tf.int32)
    images = tf.reshape(tf.constant([0.0, 0.2, 0.5, 0.8]), [4, 1, 1, 1]) * tf.ones([4, 2, 2, 1])
    noise = tf.constant([[0.0, 0.0], [1.0, 1.0], [0.0, 0.5], [2.0, 3.0]])
    # pair (3, 1): |0.8 - 0.2| / mean(|1|, |2|) = 0.6 / 1.5 = 0.4; pair (2, 0): 0.5 / mean(0, 0.5) = 2.0
    expected = 1.0 / ((0.4 + 2.0) / 2 + 1e-5)
    np.testing.assert_allclose(float(mode_seeking_loss(images, noise, labels)), expected, rtol=1e-5)
    # identical images for different noise: no diversity, the largest penalty
    assert float(mode_seeking_loss(tf.zeros([4, 2, 2, 1]), noise, labels)) == pytest.approx(1e5, rel=1e-6)


def test_r1_penalty_adds_half_gamma_times_mean_squared_input_gradient_to_d_loss() -> None:
    cfg = _cfg(diffaugment="")  # D sees the batch as given, so the penalty can be recomputed outside
    x, y = _batch(cfg)
    plain = build_gan(cfg)
    start = get_state(plain)
    d_loss_plain = float(plain.train_step((x, y))["d_loss"])
    penalised = build_gan(cfg.replace(r1_gamma=10.0))
    set_state(penalised, start)
    # the penalty, computed independently on the starting discriminator
    set_state(plain, start)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score, _ = plain.discriminator([x, y], training=True)
    grad = tape.gradient(score, x).numpy()
    expected = 0.5 * 10.0 * float(np.mean(np.sum(grad.astype(np.float64) ** 2, axis=(1, 2, 3))))
    assert expected > 0
    d_loss_pen = float(penalised.train_step((x, y))["d_loss"])
    assert d_loss_pen - d_loss_plain == pytest.approx(expected, rel=1e-4)


def test_guard_records_the_first_non_finite_step_in_the_graph() -> None:
    cfg = _cfg()
    gan = build_gan(cfg)
    batch = _batch(cfg)
    step = tf.function(gan.train_step)  # as fit runs it: no Python between the loss and the record
    step(batch)
    assert int(gan.bad_step.numpy()) == 0
    kernel = gan.discriminator.get_layer("down0_conv").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))  # D's scores and so both losses become NaN
    step(batch)
    step(batch)
    assert int(gan.bad_step.numpy()) == 2  # the first bad step (1-based), not the last
    assert np.isnan(gan.bad_losses.numpy()).all() and int(gan.step.numpy()) == 3


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_issue_20_models_have_unique_checkpoint_keys_and_round_trip(precision: str) -> None:
    """Class-conditional LayerNorm in G and spectral norm on every layer of D: every variable (SN's kernels and u
    vectors, the class gains) has its own key once in every precision, and a trained state restores into a fresh GAN
    bit for bit."""
    cfg = _cfg(norm="none", projection=True, spectral_all=True, g_norm="class_layer", g_upsample="upsample",
               adv_loss="hinge", g_class_loss_weight=0.0)
    gan = build_gan(cfg, precision)
    variables = state_variables(gan)
    models = [v for m in (gan.generator, gan.discriminator, gan.ema_generator) for v in m.variables]
    opts = [v for o in (gan.g_optimizer, gan.d_optimizer) for v in o.variables if v.name != "learning_rate"]
    assert sorted(map(id, variables.values())) == sorted(map(id, [gan.step, *models, *opts]))
    for key in ("discriminator/score_sn/score/kernel", "discriminator/score_sn/vector_u",
                "discriminator/projection_embedding_sn/projection_embedding/kernel",
                "discriminator/label_map_embedding_sn/label_map_embedding/kernel", "discriminator/class_logits_sn/vector_u",
                "generator/up0_norm_class/gamma_kernel", "ema_generator/project_norm_class/beta_bias",
                "g_opt/generator/up1_norm_class/beta_kernel/momentum",
                "d_opt/discriminator/score_sn/score/kernel/velocity"):
        assert key in variables, key
    if precision != "bf16":  # one trained round trip is enough (the step's tracing is the slow part)
        return
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 1)).astype("float32")
    gan.fit(tf.data.Dataset.from_tensors((x, np.array([0, 1, 0, 1], "int32"))).repeat(2), epochs=1, verbose=0)
    state = get_state(gan)
    fresh = build_gan(cfg, precision)
    set_state(fresh, state)
    assert all(np.array_equal(state[k], v) for k, v in get_state(fresh).items())
