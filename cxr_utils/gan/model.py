"""ConditionalGAN: an ACGAN `keras.Model` whose every random draw is keyed by (seed, step), with an EMA generator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ..config import GANConfig

# independent random streams inside one train step; the key of stream k at step t is (seed, t * N_STREAMS + k)
N_STREAMS = 16
S_NOISE_D, S_LABELS_D, S_AUG_REAL, S_AUG_FAKE, S_NOISE_G, S_LABELS_G, S_AUG_G = range(7)
# key used for the fixed sample-grid noise: no training step ever uses a negative counter
FIXED_NOISE_KEY = -1


def rng_key(seed: int, step: tf.Tensor | int, stream: int) -> tf.Tensor:
    """Stateless RNG key (int64 shape [2]) for one stream of one training step."""
    step = tf.cast(step, tf.int64)
    return tf.stack([tf.constant(seed, tf.int64), step * N_STREAMS + stream])


# ---------------------------------------------------------------- losses (per example, float32)

def adversarial_d_loss(kind: str, real_score: tf.Tensor, fake_score: tf.Tensor) -> tf.Tensor:
    """Per-example discriminator adversarial loss for lsgan | bce | hinge; scores (B, 1) -> (B,)."""
    r = tf.reshape(tf.cast(real_score, tf.float32), [-1])
    f = tf.reshape(tf.cast(fake_score, tf.float32), [-1])
    if kind == "lsgan":  # least squares: real -> 1, fake -> 0 (the seed's MSE)
        return tf.square(r - 1.0) + tf.square(f)
    if kind == "bce":  # logits; softplus(-x) = -log(sigmoid(x)) without overflow
        return tf.nn.softplus(-r) + tf.nn.softplus(f)
    if kind == "hinge":
        return tf.nn.relu(1.0 - r) + tf.nn.relu(1.0 + f)
    raise ValueError(f"unknown adversarial loss {kind!r}")


def adversarial_g_loss(kind: str, fake_score: tf.Tensor) -> tf.Tensor:
    """Per-example generator adversarial loss (non-saturating for bce); scores (B, 1) -> (B,)."""
    f = tf.reshape(tf.cast(fake_score, tf.float32), [-1])
    if kind == "lsgan":
        return tf.square(f - 1.0)
    if kind == "bce":
        return tf.nn.softplus(-f)
    if kind == "hinge":
        return -f
    raise ValueError(f"unknown adversarial loss {kind!r}")


def class_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example sparse softmax cross-entropy from logits -> (B,)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def mode_seeking_loss(images: tf.Tensor, noise: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """MSGAN's term (Mao et al. 2019) over same-class pairs of a batch: 1 / (mean |dG| / mean |dz| + 1e-5).

    Pairs are neighbours in label-sorted order (each image with the next one of its class), so every class of the
    batch contributes; minimising the term pushes two noise vectors of one class to different images.
    """
    order = tf.argsort(labels, stable=True)
    partner = tf.roll(order, 1, axis=0)
    same = tf.cast(tf.equal(tf.gather(labels, order), tf.gather(labels, partner)), tf.float32)
    x = tf.cast(images, tf.float32)
    d_img = tf.reduce_mean(tf.abs(tf.gather(x, order) - tf.gather(x, partner)), axis=[1, 2, 3])
    d_z = tf.reduce_mean(tf.abs(tf.gather(noise, order) - tf.gather(noise, partner)), axis=1)
    ratio = tf.reduce_sum(same * d_img / (d_z + 1e-8)) / tf.maximum(tf.reduce_sum(same), 1.0)
    return 1.0 / (ratio + 1e-5)


def real_threshold(kind: str) -> float:
    """Score above which D calls an image real (0.5 for least squares, 0 for logit-like scores)."""
    return 0.5 if kind == "lsgan" else 0.0


# ---------------------------------------------------------------- stateless draws

def balanced_labels(n: int, num_classes: int, key: tf.Tensor) -> tf.Tensor:
    """n labels, each class n // K or n // K + 1 times, in an order keyed by `key` -> int32 (n,) (label_prior "balanced")."""
    base = tf.range(n, dtype=tf.int32) % num_classes
    # the remainder classes rotate with the key, so no class is favoured over many steps
    shift = tf.random.stateless_uniform([], key, 0, num_classes, dtype=tf.int32)
    base = (base + shift) % num_classes
    order = tf.argsort(tf.random.stateless_uniform([n], key + tf.constant([0, 1], tf.int64)))
    return tf.gather(base, order)


def systematic_labels(n: int, counts: tuple[int, ...], v: tf.Tensor) -> tf.Tensor:
    """The sorted labels of one systematic draw: positions (v / N + i) / n, i < n, through the cumulative prior.

    counts: the prior as integers (class k has probability counts[k] / N, N their sum); v in [0, N) is the draw's
    offset. Integer arithmetic: position i is in class k iff C[k-1] * n <= v + i * N < C[k] * n (C the cumulative
    counts), so class k gets floor or ceil of n * p_k labels, and averaged over the N offsets exactly n * p_k.
    """
    total = sum(counts)
    x = tf.cast(v, tf.int64) + tf.range(n, dtype=tf.int64) * total
    bounds = tf.constant(np.cumsum(counts[:-1], dtype=np.int64) * n)
    return tf.reduce_sum(tf.cast(x[:, None] >= bounds[None, :], tf.int32), axis=1)


def prior_labels(n: int, counts: tuple[int, ...], key: tf.Tensor) -> tf.Tensor:
    """n labels following the prior counts[k] / sum(counts), in an order keyed by `key` -> int32 (n,).

    Systematic sampling (one uniform offset per draw): each class appears floor or ceil of n * p_k times, and exactly
    n * p_k times on average over draws (the offset is a uniform integer in [0, N); TF's bounded integer draw is
    biased by at most N / 2**64). A pure function of (n, counts, key), as balanced_labels.
    """
    v = tf.random.stateless_uniform([], key, 0, sum(counts), dtype=tf.int64)
    base = systematic_labels(n, counts, v)
    order = tf.argsort(tf.random.stateless_uniform([n], key + tf.constant([0, 1], tf.int64)))
    return tf.gather(base, order)


def diff_augment(x: tf.Tensor, policy: str, key: tf.Tensor, offset: tf.Tensor | int = 0,
                 global_batch: int | None = None) -> tf.Tensor:
    """DiffAugment (Zhao et al. 2020): color, translation, cutout on images in [-1, 1], differentiable.

    Parameters are drawn for `global_batch` images from `key` and rows [offset, offset + B) are used, so a
    replica of a multi-device run augments its slice exactly as a single device would.
    """
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    if not policies:
        return x
    x = tf.cast(x, tf.float32)
    b = tf.shape(x)[0]
    n = global_batch if global_batch is not None else b
    s = x.shape[1]

    def draw(i: int, shape: list, lo: float = 0.0, hi: float = 1.0, dtype: tf.DType = tf.float32) -> tf.Tensor:
        k = key + tf.constant([0, 1000 + i], tf.int64)
        v = tf.random.stateless_uniform([n, *shape], k, lo, hi, dtype=dtype)
        return v[offset:offset + b]

    for p in policies:
        if p == "color":
            x = x + (draw(0, [1, 1, 1]) - 0.5)  # brightness
            m = tf.reduce_mean(x, axis=3, keepdims=True)
            x = (x - m) * (draw(1, [1, 1, 1]) * 2.0) + m  # saturation (a no-op on grey 1-channel images)
            m = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = (x - m) * (draw(2, [1, 1, 1]) + 0.5) + m  # contrast
        elif p == "translation":
            pad = int(s * 0.125 + 0.5)
            ty = draw(3, [], -pad, pad + 1, tf.int32)
            tx = draw(4, [], -pad, pad + 1, tf.int32)
            xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            grid = tf.range(s, dtype=tf.int32)[None, :]
            rows = grid + pad - ty[:, None]
            cols = grid + pad - tx[:, None]
            x = tf.gather(xp, rows, axis=1, batch_dims=1)
            x = tf.gather(x, cols, axis=2, batch_dims=1)
        elif p == "cutout":
            size = int(s * 0.5 + 0.5)
            cy = draw(5, [], 0, s + (1 - size % 2), tf.int32)
            cx = draw(6, [], 0, s + (1 - size % 2), tf.int32)
            grid = tf.range(s, dtype=tf.int32)[None, :]
            in_y = (grid >= (cy - size // 2)[:, None]) & (grid < (cy - size // 2 + size)[:, None])
            in_x = (grid >= (cx - size // 2)[:, None]) & (grid < (cx - size // 2 + size)[:, None])
            hole = tf.cast(in_y[:, :, None] & in_x[:, None, :], x.dtype)
            x = x * (1.0 - hole)[..., None]
        else:
            raise ValueError(f"unknown DiffAugment policy {p!r}; use color, translation, cutout")
    return x


# ---------------------------------------------------------------- the model

# the running means train_step reports (train.METRIC_COLUMNS builds metrics.csv from them)
METRIC_NAMES = ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_class_acc_real", "d_class_acc_fake")

def _replica_id() -> tf.Tensor | int:
    ctx = tf.distribute.get_replica_context()
    return 0 if ctx is None else ctx.replica_id_in_sync_group


@dataclass(frozen=True)
class _StepDraws:
    """The random draws of one train step on one replica: each keyed by (seed, step, stream) and drawn for the
    GLOBAL batch, of which the replica takes rows [offset, offset + local), as a single device would."""

    cfg: GANConfig
    class_counts: tuple[int, ...]
    step: tf.Tensor
    offset: tf.Tensor
    local: tf.Tensor

    def noise(self, stream: int) -> tf.Tensor:
        """The generator's input noise (local, latent_dim)."""
        z = tf.random.stateless_normal([self.cfg.batch_size, self.cfg.latent_dim], rng_key(self.cfg.seed, self.step, stream))
        return z[self.offset:self.offset + self.local]

    def labels(self, stream: int) -> tf.Tensor:
        """The generated images' labels (local,): balanced_labels or the data prior's prior_labels."""
        key = rng_key(self.cfg.seed, self.step, stream)
        if self.cfg.label_prior == "balanced":
            drawn = balanced_labels(self.cfg.batch_size, self.cfg.num_classes, key)
        else:
            drawn = prior_labels(self.cfg.batch_size, self.class_counts, key)
        return drawn[self.offset:self.offset + self.local]

    def augment(self, x: tf.Tensor, stream: int) -> tf.Tensor:
        """DiffAugment per cfg.diffaugment, this replica's rows of the global batch's parameters."""
        return diff_augment(x, self.cfg.diffaugment, rng_key(self.cfg.seed, self.step, stream), self.offset,
                            self.cfg.batch_size)


class _DStep(NamedTuple):
    """What the discriminator step hands on: the per-example loss, the global loss, D's outputs, the fake labels."""

    per_ex: tf.Tensor
    loss: tf.Tensor
    r_score: tf.Tensor
    r_logits: tf.Tensor
    f_score: tf.Tensor
    f_logits: tf.Tensor
    fake_labels: tf.Tensor


class ConditionalGAN(keras.Model):
    """ACGAN: G(noise, label) vs D(image, label) -> (real score, class logits), trained by `fit`.

    Call `compile(d_optimizer=..., g_optimizer=...)`, then `fit` on batches `(images float32 [-1, 1], labels int32)`
    of exactly `cfg.batch_size` images (global batch). The EMA generator is what sampling uses.

    class_counts: the training labels' per-class counts (any positive multiple); with cfg.label_prior "data" the
    generated labels of both training steps follow counts[k] / sum(counts) (prior_labels). None: a uniform prior.
    With "balanced" the labels are balanced_labels' (1/K each; the draw of runs that predate label_prior).
    """

    def __init__(self, cfg: GANConfig, generator: keras.Model, discriminator: keras.Model,
                 ema_generator: keras.Model | None = None, class_counts: tuple[int, ...] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        counts = (1,) * cfg.num_classes if class_counts is None else tuple(int(c) for c in class_counts)
        if len(counts) != cfg.num_classes or min(counts) < 0 or sum(counts) <= 0:
            raise ValueError(f"class_counts must be {cfg.num_classes} non-negative counts with a positive sum, got {counts}")
        g = int(np.gcd.reduce(counts))
        # the smallest integers of the prior: the draws depend on the prior, not on how it was counted
        self.class_counts = tuple(c // g for c in counts)
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator if ema_generator is not None else generator
        if self.ema_generator is not generator:
            self.ema_generator.set_weights(generator.get_weights())
        # the only RNG state: every random draw of a step is keyed by (seed, step)
        self.step = keras.Variable(0, dtype="int64", trainable=False, name="gan_step", aggregation="only_first_replica")
        # the in-graph NaN guard: the first step (1-based) whose losses were not finite, and those losses
        self.bad_step = keras.Variable(0, dtype="int64", trainable=False, name="bad_step", aggregation="only_first_replica")
        self.bad_losses = keras.Variable(np.zeros(2, np.float32), trainable=False, name="bad_losses",
                                         aggregation="only_first_replica")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in METRIC_NAMES}
        self.built = True

    def call(self, inputs, training=False):
        """EMA generator forward: [noise, labels] -> images."""
        return self.ema_generator(inputs, training=training)

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kwargs) -> None:
        """Attach both optimizers (wrap them in LossScaleOptimizer for fp16)."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def build_optimizers(self) -> None:
        """Create both optimizers' slot variables now, so a checkpoint can be restored into them."""
        if not self.d_optimizer.built:
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if not self.g_optimizer.built:
            self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    def train_step(self, data):
        """One D update and one G update on a (real images, labels) batch; returns the running metrics."""
        real, labels = data
        real = tf.cast(real, tf.float32)
        labels = tf.cast(labels, tf.int32)
        local = tf.shape(real)[0]
        draws = _StepDraws(self.cfg, self.class_counts, self.step.value, tf.cast(_replica_id(), tf.int32) * local, local)
        d = self._discriminator_step(real, labels, draws)
        g_per_ex, g_loss = self._generator_step(draws)
        self._guard(draws.step, d.loss, g_loss)
        self._update_ema(draws.step)
        self.step.assign_add(1)
        return self._record(local, labels, d, g_per_ex)

    def _discriminator_step(self, real: tf.Tensor, labels: tf.Tensor, draws: _StepDraws) -> _DStep:
        """D's update on real images and G's images of fresh noise and labels (R1 and the fake class loss per cfg)."""
        cfg, gb = self.cfg, self.cfg.batch_size
        z, fake_labels = draws.noise(S_NOISE_D), draws.labels(S_LABELS_D)
        fake = self.generator([z, fake_labels], training=True)
        real_in = draws.augment(real, S_AUG_REAL)
        with tf.GradientTape() as tape:
            with tf.GradientTape(watch_accessed_variables=False) as r1_tape:
                r1_tape.watch(real_in)
                r_score, r_logits = self.discriminator([real_in, labels], training=True)
            f_score, f_logits = self.discriminator([draws.augment(fake, S_AUG_FAKE), fake_labels], training=True)
            per_ex = adversarial_d_loss(cfg.adv_loss, r_score, f_score) + cfg.class_loss_weight * class_loss(labels, r_logits)
            if cfg.r1_gamma > 0:  # Mescheder et al. 2018: penalise D's gradient on real images (double backprop)
                grad = r1_tape.gradient(r_score, real_in)  # a non-scalar target: the gradient of its sum
                per_ex = per_ex + 0.5 * cfg.r1_gamma * tf.reduce_sum(tf.square(grad), axis=[1, 2, 3])
            if cfg.d_class_on_fake:
                per_ex = per_ex + cfg.class_loss_weight * class_loss(fake_labels, f_logits)
            # divide by the GLOBAL batch: replicas' gradients are summed
            d_loss = tf.reduce_sum(per_ex) / gb
            # scale_loss is the identity except under LossScaleOptimizer (fp16), which unscales in apply()
            d_scaled = self.d_optimizer.scale_loss(d_loss)
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply(tape.gradient(d_scaled, d_vars), d_vars)
        return _DStep(per_ex, d_loss, r_score, r_logits, f_score, f_logits, fake_labels)

    def _generator_step(self, draws: _StepDraws) -> tuple[tf.Tensor, tf.Tensor]:
        """G's update on fresh noise and labels: (per-example loss, the replica's share of the global loss)."""
        cfg, gb = self.cfg, self.cfg.batch_size
        z2, labels2 = draws.noise(S_NOISE_G), draws.labels(S_LABELS_G)
        with tf.GradientTape() as tape:
            fake2 = self.generator([z2, labels2], training=True)
            g_score, g_logits = self.discriminator([draws.augment(fake2, S_AUG_G), labels2], training=True)
            g_w = cfg.class_loss_weight if cfg.g_class_loss_weight is None else cfg.g_class_loss_weight
            per_ex_g = adversarial_g_loss(cfg.adv_loss, g_score) + g_w * class_loss(labels2, g_logits)
            g_loss = tf.reduce_sum(per_ex_g) / gb
            if cfg.mode_seeking_weight > 0:  # a batch-level term: each replica adds its share of the mean
                n_rep = tf.distribute.get_strategy().num_replicas_in_sync
                g_loss = g_loss + cfg.mode_seeking_weight * mode_seeking_loss(fake2, z2, labels2) / n_rep
            g_scaled = self.g_optimizer.scale_loss(g_loss)
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(g_scaled, g_vars), g_vars)
        return per_ex_g, g_loss

    def _record(self, local: tf.Tensor, labels: tf.Tensor, d: _DStep, g_per_ex: tf.Tensor) -> dict[str, tf.Tensor]:
        """Update the running means (METRIC_NAMES) with this replica's batch; returns their values."""
        thr = real_threshold(self.cfg.adv_loss)
        n_local = tf.cast(local, tf.float32)
        t = self.trackers
        t["d_loss"].update_state(tf.reduce_sum(d.per_ex) / n_local, sample_weight=n_local)
        t["g_loss"].update_state(tf.reduce_sum(g_per_ex) / n_local, sample_weight=n_local)
        t["d_acc_real"].update_state(tf.cast(tf.reshape(d.r_score, [-1]) > thr, tf.float32))
        t["d_acc_fake"].update_state(tf.cast(tf.reshape(d.f_score, [-1]) <= thr, tf.float32))
        t["d_class_acc_real"].update_state(tf.cast(tf.argmax(d.r_logits, -1, output_type=tf.int32) == labels, tf.float32))
        t["d_class_acc_fake"].update_state(tf.cast(tf.argmax(d.f_logits, -1, output_type=tf.int32) == d.fake_labels,
                                                   tf.float32))
        return {name: m.result() for name, m in t.items()}

    def _guard(self, step: tf.Tensor, d_loss: tf.Tensor, g_loss: tf.Tensor) -> None:
        """Record the first step whose (global) losses are not finite, in the graph: no step waits for the host.

        The trainer reads bad_step once per epoch and discards a diverged epoch (no metrics row, no checkpoint).
        """
        totals = tf.stack([tf.cast(d_loss, tf.float32), tf.cast(g_loss, tf.float32)])
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and tf.distribute.has_strategy():  # each replica holds its share of the global losses
            totals = ctx.all_reduce(tf.distribute.ReduceOp.SUM, totals)
        first = tf.logical_and(tf.equal(self.bad_step.value, 0), tf.logical_not(tf.reduce_all(tf.math.is_finite(totals))))
        self.bad_step.assign(tf.where(first, tf.cast(step, tf.int64) + 1, self.bad_step.value))
        self.bad_losses.assign(tf.where(first, totals, self.bad_losses.value))

    def _update_ema(self, step: tf.Tensor) -> None:
        """ema <- d * ema + (1 - d) * G on trainable weights; non-trainable ones (BatchNorm statistics) are copied.

        d = min(ema_decay, (1 + t) / (10 + t)) with t the steps since ema_start_step (0 before it: a plain copy).
        The warm-up (as tf.train.ExponentialMovingAverage's num_updates) keeps short runs from averaging in the
        random initial weights for thousands of steps.
        """
        if self.ema_generator is self.generator:
            return
        t = tf.cast(step - self.cfg.ema_start_step, tf.float32)
        warm = (1.0 + t) / (10.0 + t)
        decay = tf.where(t < 0, 0.0, tf.minimum(float(self.cfg.ema_decay), warm))
        pairs = list(zip(self.ema_generator.trainable_variables, self.generator.trainable_variables, strict=True))
        copies = list(zip(self.ema_generator.non_trainable_variables, self.generator.non_trainable_variables, strict=True))

        def ema_fn(avg, var):
            return avg.assign(decay * avg + (1.0 - decay) * tf.cast(var, avg.dtype))

        def copy_fn(avg, var):
            return avg.assign(tf.cast(var, avg.dtype))

        ctx = tf.distribute.get_replica_context()
        if ctx is None or not tf.distribute.has_strategy():
            for a, v in pairs:
                ema_fn(a, v)
            for a, v in copies:
                copy_fn(a, v)
            return

        def merged(strategy):  # cross-replica: update each mirrored copy from its device's G weights
            for a, v in pairs:
                strategy.extended.update(a.value, ema_fn, args=(v.value,), group=False)
            for a, v in copies:
                strategy.extended.update(a.value, copy_fn, args=(v.value,), group=False)

        ctx.merge_call(merged)

    def fixed_noise(self, n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        """The run's fixed sample-grid inputs: noise (K * n, latent) and labels, one block of n per class."""
        k = self.cfg.num_classes
        z = tf.random.stateless_normal([k * n_per_class, self.cfg.latent_dim], rng_key(self.cfg.seed, FIXED_NOISE_KEY, 0))
        labels = np.repeat(np.arange(k, dtype=np.int32), n_per_class)
        return z.numpy(), labels
