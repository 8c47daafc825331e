"""Generator and discriminator builders for the class-conditional GAN (ACGAN), generic in size, channels, classes."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from ..config import GANConfig

# the widest feature map, in multiples of the base filters: keeps 128 px models from exploding in size
MAX_FILTER_MULT = 8


def _n_blocks(image_size: int) -> int:
    """Number of 2x resampling blocks between 4x4 and image_size."""
    n = int(round(math.log2(image_size / 4)))
    if 4 * 2**n != image_size:
        raise ValueError(f"image_size must be 4 * 2**n, got {image_size}")
    return n


def generator_filters(cfg: GANConfig) -> list[int]:
    """Filters of the 4x4 projection and of each upsampling block up to S/2 (DCGAN layout: the last is g_base_filters).

    The final layer upsamples S/2 -> S straight to the C image channels, so no full-resolution wide block is paid for.
    """
    n = _n_blocks(cfg.image_size)
    return [cfg.g_base_filters * min(2 ** (n - 1 - i), MAX_FILTER_MULT) for i in range(n)]


def discriminator_filters(cfg: GANConfig) -> list[int]:
    """Output filters of each discriminator block, from image_size down to 4x4."""
    n = _n_blocks(cfg.image_size)
    return [cfg.d_base_filters * min(2**i, MAX_FILTER_MULT) for i in range(n)]


@keras.saving.register_keras_serializable(package="cxr_utils")
class MinibatchStdDev(layers.Layer):
    """ProGAN's minibatch standard deviation: appends one channel holding the batch's mean feature std.

    (B, H, W, C) -> (B, H, W, C + 1). The std of every feature over the batch, averaged to one number, lets D
    see how varied a batch is, so a generator that collapses within a class is penalised (Karras et al. 2018).
    Statistics over the whole (per-replica) batch; real and generated batches go through D separately.
    """

    def call(self, x):
        xf = ops.cast(x, "float32")
        mean = ops.mean(xf, axis=0, keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(xf - mean), axis=0) + 1e-8)  # (H, W, C); eps keeps the gradient finite
        s = ops.mean(std)
        extra = ops.ones_like(xf[..., :1]) * s
        return ops.concatenate([x, ops.cast(extra, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] + 1)


@keras.saving.register_keras_serializable(package="cxr_utils")
class ClassAffine(layers.Layer):
    """The class-conditional gain and bias of a conditional normalization: [x, e] -> x * (1 + e Wg + bg) + (e Wb + bb).

    x: (B, ..., C) features normalized without a gain and bias of their own; e: (B, E) the class embedding. Each
    sample gets one gain and one bias per channel, computed from its class and broadcast over H and W: the
    class-conditional normalization of the projection cGAN's and BigGAN's generators (Miyato & Koyama 2018; Brock et
    al. 2019), after a LayerNormalization here. Zero-initialised, so training starts from plain normalization (gain
    1, bias 0) and the class moves it from there.
    """

    def build(self, input_shape):
        x_shape, e_shape = input_shape
        c, e = int(x_shape[-1]), int(e_shape[-1])
        self.gamma_kernel = self.add_weight(shape=(e, c), initializer="zeros", name="gamma_kernel")
        self.gamma_bias = self.add_weight(shape=(c,), initializer="zeros", name="gamma_bias")
        self.beta_kernel = self.add_weight(shape=(e, c), initializer="zeros", name="beta_kernel")
        self.beta_bias = self.add_weight(shape=(c,), initializer="zeros", name="beta_bias")

    def call(self, inputs):
        x, e = inputs
        shape = (-1, *([1] * (len(x.shape) - 2)), x.shape[-1])  # (B, 1, 1, C): one value per sample and channel
        gamma = ops.reshape(1.0 + ops.matmul(e, self.gamma_kernel) + self.gamma_bias, shape)
        beta = ops.reshape(ops.matmul(e, self.beta_kernel) + self.beta_bias, shape)
        return x * ops.cast(gamma, x.dtype) + ops.cast(beta, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


G_NORMS = ("layer", "batch", "none", "class_layer")  # class_layer: LayerNormalization + ClassAffine (G only)


def _norm(x, kind: str, name: str, dtype: str | None, emb=None):
    """x through the configured normalization; unchanged for "none" (D then gets spectral normalization).

    "class_layer" (G only): keras LayerNormalization without its own gain and bias, then the class-conditional gain
    and bias of `emb` (ClassAffine)."""
    if kind == "layer":
        return layers.LayerNormalization(name=name, dtype=dtype)(x)
    if kind == "class_layer":
        x = layers.LayerNormalization(center=False, scale=False, name=name, dtype=dtype)(x)
        return ClassAffine(name=f"{name}_class", dtype=dtype)([x, emb])
    if kind == "batch":
        return layers.BatchNormalization(name=name, momentum=0.9, dtype=dtype)(x)
    return x


def g_norm_of(cfg: GANConfig) -> str:
    """The generator's normalization: `g_norm` when set, else the shared `norm`."""
    return cfg.g_norm or cfg.norm


def build_generator(cfg: GANConfig, dtype: str | None = None, name: str = "generator") -> keras.Model:
    """G([noise (B, latent_dim) float32, labels (B,) int32]) -> images (B, S, S, C) float32 in [-1, 1]."""
    noise = keras.Input(shape=(cfg.latent_dim,), dtype="float32", name="noise")
    label = keras.Input(shape=(), dtype="int32", name="label")
    filters = generator_filters(cfg)
    gn = g_norm_of(cfg)
    emb = layers.Embedding(cfg.num_classes, cfg.embed_dim, name="label_embedding", dtype=dtype)(label)
    x = layers.Concatenate(name="noise_and_label", dtype=dtype)([noise, emb])
    x = layers.Dense(4 * 4 * filters[0], use_bias=gn == "none", name="project", dtype=dtype)(x)
    x = layers.Reshape((4, 4, filters[0]), name="to_4x4", dtype=dtype)(x)
    x = _norm(x, gn, "project_norm", dtype, emb)
    x = layers.ReLU(name="project_relu", dtype=dtype)(x)

    def up(x, f: int, name: str, out_dtype: str | None, bias: bool, image: bool = False):
        if cfg.g_upsample == "transpose":
            return layers.Conv2DTranspose(f, 4, strides=2, padding="same", use_bias=bias, name=name, dtype=out_dtype)(x)
        # resize, then convolve (Odena et al. 2016): every output pixel gets the same number of kernel taps, so no
        # checkerboard; "upsample" = nearest neighbour, "bilinear" = bilinear interpolation everywhere, "antialias" =
        # nearest in the blocks and bilinear before the image layer. A nearest 2x resize repeats the map's spectrum
        # mirrored about half the new Nyquist (content at f cycles/pixel also appears at 0.5 - f); the blocks' convs
        # have the filters to remove those images, the image layer's one 3x3 conv to one channel has not, and they
        # stay in the image as fine periodic stripes. A 2x bilinear resize is zero insertion then the binomial
        # [1, 3, 3, 1] / 4 low-pass (StyleGAN2's upsampling filter): it damps them (by ~13x in amplitude at 0.41).
        smooth = cfg.g_upsample == "bilinear" or (image and cfg.g_upsample == "antialias")
        x = layers.UpSampling2D(2, interpolation="bilinear" if smooth else "nearest", name=f"{name}_resize",
                                dtype=dtype)(x)
        return layers.Conv2D(f, 3, padding="same", use_bias=bias, name=name, dtype=out_dtype)(x)

    for i, f in enumerate(filters[1:]):
        x = up(x, f, f"up{i}_conv", dtype, gn == "none")
        x = _norm(x, gn, f"up{i}_norm", dtype, emb)
        x = layers.ReLU(name=f"up{i}_relu", dtype=dtype)(x)
    # the last upsampling makes the image (float32 so mixed precision never quantises the output), or with
    # g_full_res_filters one more block at full resolution, then a plain 3x3 conv makes it
    if cfg.g_full_res_filters:
        x = up(x, cfg.g_full_res_filters, "full_res_conv", dtype, gn == "none", image=True)
        x = _norm(x, gn, "full_res_norm", dtype, emb)
        x = layers.ReLU(name="full_res_relu", dtype=dtype)(x)
        x = layers.Conv2D(cfg.channels, 3, padding="same", name="to_image", dtype="float32")(x)
    else:
        x = up(x, cfg.channels, "to_image", "float32", True, image=True)
    out = layers.Activation("tanh", name="tanh", dtype="float32")(x)
    return keras.Model([noise, label], out, name=name)


class _DiscriminatorLayers:
    """The discriminator's layer makers, spectrally normalized per cfg: the convolutions with norm "none", and with
    spectral_all also the heads and the label embeddings (each then an SN'd bias-free Dense on the one-hot label)."""

    def __init__(self, cfg: GANConfig, dtype: str | None, label: keras.KerasTensor):
        self.cfg, self.dtype, self.label = cfg, dtype, label
        self.spectral = cfg.norm == "none"
        self.sn_all = self.spectral and cfg.spectral_all
        self.one_hot = layers.CategoryEncoding(cfg.num_classes, output_mode="one_hot", name="label_one_hot",
                                               dtype="float32")(label) if self.sn_all else None

    @staticmethod
    def sn(layer: layers.Layer, dtype_: str | None) -> layers.Layer:
        return layers.SpectralNormalization(layer, name=f"{layer.name}_sn", dtype=dtype_)

    def conv(self, f: int, n: str) -> layers.Layer:
        c = layers.Conv2D(f, 4, strides=2, padding="same", name=n, dtype=self.dtype)
        return self.sn(c, self.dtype) if self.spectral else c

    def embed(self, n_out: int, n: str, dtype_: str | None):
        """The label embedded to n_out values: an Embedding, or under spectral_all an SN'd bias-free Dense on the one-hot."""
        if self.sn_all:
            return self.sn(layers.Dense(n_out, use_bias=False, name=n, dtype=dtype_), dtype_)(self.one_hot)
        return layers.Embedding(self.cfg.num_classes, n_out, name=n, dtype=dtype_)(self.label)

    def head(self, units: int, n: str) -> layers.Layer:
        # heads in float32: losses and accuracies must not see bf16/fp16 rounding
        d = layers.Dense(units, name=n, dtype="float32")
        return self.sn(d, "float32") if self.sn_all else d


def _d_blocks(x, cfg: GANConfig, dtype: str | None, parts: _DiscriminatorLayers):
    """The strided conv blocks from the image-and-label input down to D's features (before the heads)."""
    s = cfg.image_size
    for i, f in enumerate(discriminator_filters(cfg)):
        x = parts.conv(f, f"down{i}_conv")(x)
        if i > 0:  # no norm on the first block (DCGAN practice): it would wash out the image statistics
            x = _norm(x, cfg.norm, f"down{i}_norm", dtype)
        x = layers.LeakyReLU(0.2, name=f"down{i}_lrelu", dtype=dtype)(x)
        if i == 0 and cfg.label_into_features:
            # seed variant: the label also enters as a map beside the first feature maps
            h = s // 2
            fmap = parts.embed(h * h, "label_feature_embedding", dtype)
            fmap = layers.Reshape((h, h, 1), name="label_feature_map", dtype=dtype)(fmap)
            x = layers.Concatenate(name="features_and_label", dtype=dtype)([x, fmap])
    if cfg.minibatch_std:
        x = MinibatchStdDev(name="minibatch_std", dtype=dtype)(x)
    return layers.Flatten(name="flatten", dtype=dtype)(x)


def build_discriminator(cfg: GANConfig, dtype: str | None = None, name: str = "discriminator") -> keras.Model:
    """D([images (B, S, S, C), labels (B,) int32]) -> [score (B, 1) float32, class logits (B, K) float32].

    With cfg.spectral_all every layer that sees the image or the label is spectrally normalized, as in SNGAN and the
    projection discriminator (Miyato et al. 2018; Miyato & Koyama 2018): the convolutions, the score and class heads,
    and the label embeddings, each a bias-free Dense on the one-hot label (the same function as an Embedding, with a
    `kernel` that keras's SpectralNormalization wraps). Without it only the convolutions are (norm "none").
    The layers are made in a fixed order (names and weight order are what saved .keras files and checkpoints hold).
    """
    s = cfg.image_size
    image = keras.Input(shape=(s, s, cfg.channels), dtype="float32", name="image")
    label = keras.Input(shape=(), dtype="int32", name="label")
    parts = _DiscriminatorLayers(cfg, dtype, label)
    lmap = parts.embed(s * s, "label_map_embedding", dtype)
    lmap = layers.Reshape((s, s, 1), name="label_map", dtype=dtype)(lmap)
    x = layers.Concatenate(name="image_and_label", dtype=dtype)([image, lmap])
    x = _d_blocks(x, cfg, dtype, parts)
    score = parts.head(1, "score")(x)
    if cfg.projection:
        # projection discriminator (Miyato & Koyama 2018): the score also asks "do these features match this
        # label?", which conditions G without pulling it towards the class head's most typical images
        y_emb = parts.embed(x.shape[-1], "projection_embedding", "float32")
        proj = layers.Dot(axes=1, name="projection", dtype="float32")([x, y_emb])
        score = layers.Add(name="projected_score", dtype="float32")([score, proj])
    logits = parts.head(cfg.num_classes, "class_logits")(x)
    return keras.Model([image, label], [score, logits], name=name)
