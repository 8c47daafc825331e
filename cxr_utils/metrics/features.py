"""Feature extractors: uint8 images (N, S, S) -> feature arrays (N, D) for the metrics of cxr_utils.metrics.distributions.

InceptionV3 (ImageNet weights, fetched by fetch_keras_weights; ExtractorUnavailable offline), VGG16 (ImageNet weights:
Keras's file or the verified offline copy of cxr_utils.metrics.imagenet), a small domain classifier trained on the real train
split (also the label-fidelity judge), and a fixed random-init CNN. Every extractor carries a name, and every result
names it: numbers from different extractors are not comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from . import imagenet
from .imagenet import fetch_keras_weights


class ExtractorUnavailable(RuntimeError):
    """The extractor's weights cannot be had here (e.g. no internet for the ImageNet store)."""


@dataclass
class Extractor:
    """A named function uint8 images (N, S, S) -> features (N, D)."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 grayscale images."""
        return np.asarray(self.fn(images), dtype=np.float64)


INCEPTION_NOTOP = ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                   "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   "bcbd6486424b2319ff4ef7d526e38f63")


def gray_to_rgb_float(images: np.ndarray) -> np.ndarray:
    """uint8 grey (N, S, S) or (N, S, S, C) -> float32 (N, S, S, 3) in 0..255: the input ImageNet networks expect."""
    x = np.asarray(images)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    return np.repeat(x[..., None].astype(np.float32), 3, axis=-1)  # 0..255


def inception_extractor(batch_size: int = 64) -> Extractor:
    """InceptionV3 ImageNet pooled features (2048-d) at 299x299; ExtractorUnavailable when weights can't be had."""
    import keras

    try:
        weights = fetch_keras_weights(*INCEPTION_NOTOP)
    except Exception as e:  # offline: URLError, hash mismatch, permission...
        raise ExtractorUnavailable(f"InceptionV3 ImageNet weights could not be obtained ({type(e).__name__}: {e})") from e
    net = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg", input_shape=(299, 299, 3))
    net.load_weights(str(weights))

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            x = keras.ops.image.resize(gray_to_rgb_float(images[i:i + batch_size]), (299, 299), interpolation="bilinear")
            out.append(keras.ops.convert_to_numpy(net(keras.applications.inception_v3.preprocess_input(x), training=False)))
        return np.concatenate(out)

    return Extractor("InceptionV3 ImageNet pool3 (2048-d)", fn)


VGG16_FEATURE_SIZE = 64  # px: 64 px X-rays enter at their own size (block5 is 4x4 before its pool); see vgg16_extractor


def vgg16_extractor(weights_path: Path | None = None, input_size: int = VGG16_FEATURE_SIZE, batch_size: int = 64) -> Extractor:
    """ImageNet VGG16 features: block5 average-pooled (512-d) at input_size px (bilinear from S), VGG16's own
    preprocessing. weights_path None resolves the weights (Keras's file, else the offline copy; ExtractorUnavailable
    when neither can be had); the name says which copy."""
    import keras

    if weights_path is None:
        try:
            weights_path, _, _ = imagenet.vgg16_weights()
        except imagenet.WeightsUnavailable as e:
            raise ExtractorUnavailable(f"VGG16 ImageNet weights could not be obtained ({e})") from e
    net = keras.applications.VGG16(include_top=False, weights=str(weights_path), pooling="avg",
                                   input_shape=(input_size, input_size, 3))

    def fn(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            x = gray_to_rgb_float(images[i:i + batch_size])
            if x.shape[1] != input_size:
                x = keras.ops.image.resize(x, (input_size, input_size), interpolation="bilinear")
            out.append(keras.ops.convert_to_numpy(net(keras.applications.vgg16.preprocess_input(x), training=False)))
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)

    where = imagenet.weights_source(weights_path).removeprefix("ImageNet VGG16, ")
    return Extractor(f"VGG16 ImageNet block5 avg-pooled (512-d, {input_size} px; {where})", fn)


def random_cnn_extractor(image_size: int, seed: int = 0, width: int = 32) -> Extractor:
    """A fixed random-init CNN (seeded initialisers, never trained): a weak but reproducible offline extractor."""
    import keras

    layers = keras.layers
    inp = keras.Input((image_size, image_size, 1))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    for i, f in enumerate((width, width * 2, width * 4)):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu",
                          kernel_initializer=keras.initializers.HeNormal(seed=seed + i))(x)
    x = layers.GlobalAveragePooling2D()(x)
    net = keras.Model(inp, x)

    def fn(images: np.ndarray) -> np.ndarray:
        return net.predict(np.asarray(images, np.float32)[..., None], batch_size=256, verbose=0)

    return Extractor(f"random-init CNN (seed {seed}, {width * 4}-d, untrained)", fn)


def train_domain_classifier(images: np.ndarray, labels: np.ndarray, val_images: np.ndarray | None = None,
                            val_labels: np.ndarray | None = None, epochs: int = 15, seed: int = 0, *,
                            width: int = 16, num_classes: int = 2, min_steps: int = 0) -> Any:
    """A small CNN trained on real uint8 images (N, S, S) (NORMAL vs PNEUMONIA, or `num_classes` classes); classes
    weighted by their inverse frequency (Kaggle train is 1:3 NORMAL:PNEUMONIA); early stopping on the real val split
    if given. Small sets are repeated within each epoch until the run has at least `min_steps` steps (10 images are
    one batch: 15 epochs would be 15 steps).

    Nine parameters: the training pair, the optional val pair, and independent knobs with defaults that each caller
    sets by name (folder metrics: epochs, seed; the quality probe: also num_classes, min_steps); no two travel together.
    """
    import keras

    keras.utils.set_random_seed(seed)
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    reps = max(1, -(-min_steps * 32 // (max(1, epochs) * max(1, len(labels)))))
    images, labels = np.tile(images, (reps, 1, 1)), np.tile(labels, reps)
    model = _domain_cnn(images.shape[1], width, num_classes)
    steps = -(-len(images) // 32) * epochs
    binary = num_classes == 2
    # a handful of steps runs faster eagerly than the graph takes to trace (same train_step)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=steps <= 16)
    val = None
    callbacks = []
    if val_images is not None and val_labels is not None and len(val_images) > 0:
        val = (np.asarray(val_images, np.float32)[..., None], np.asarray(val_labels, np.float32))
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True))
    model.fit(np.asarray(images, np.float32)[..., None], labels.astype(np.float32), epochs=epochs,
              batch_size=32, validation_data=val, callbacks=callbacks, verbose=0, shuffle=True,
              class_weight=balanced_class_weight(labels, num_classes))
    return model


def _domain_cnn(size: int, width: int, num_classes: int) -> Any:
    """The domain classifier's network: three conv-pool blocks, a 64-d `features` layer, a sigmoid (2 classes) or
    softmax head; uint8-range input (N, S, S, 1)."""
    import keras

    layers = keras.layers
    inp = keras.Input((size, size, 1))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    for f in (width, width * 2, width * 4):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    feats = layers.Dense(64, activation="relu", name="features")(x)
    binary = num_classes == 2
    out = layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax")(layers.Dropout(0.2)(feats))
    return keras.Model(inp, out)


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """n / (K * n_c) per class (scikit-learn's "balanced"): each class weighs as much in the loss; absent classes 1."""
    y = np.asarray(labels).astype(np.int64)
    counts = np.bincount(y, minlength=num_classes)
    return {c: (len(y) / (num_classes * counts[c]) if counts[c] else 1.0) for c in range(num_classes)}


def domain_extractor(model: Any) -> Extractor:
    """Penultimate-layer (64-d) features of a domain classifier trained on the real train split."""
    import keras

    feat_model = keras.Model(model.inputs, model.get_layer("features").output)

    def fn(images: np.ndarray) -> np.ndarray:
        return feat_model.predict(np.asarray(images, np.float32)[..., None], batch_size=256, verbose=0)

    return Extractor("domain classifier trained on real train split (penultimate 64-d)", fn)


def predict_proba(model: Any, images: np.ndarray) -> np.ndarray:
    """Positive-class (PNEUMONIA) probabilities (N,) of a 2-class domain classifier; (N, K) for K classes."""
    p = model.predict(np.asarray(images, np.float32)[..., None], batch_size=256, verbose=0)
    return p.ravel() if p.shape[-1] == 1 else p


def build_extractors(kind: str, image_size: int, train_images: np.ndarray | None = None,
                     domain_model: Any = None, seed: int = 0) -> tuple[list[Extractor], list[str]]:
    """Extractors for --extractor {auto,inception,vgg16,domain,random}, plus notes naming any fallback taken.

    auto: InceptionV3; where its weights cannot be had, ImageNet VGG16 (its offline copy works without the internet)
    and the domain classifier; without either ImageNet network, the domain classifier and the random-init CNN."""
    notes: list[str] = []
    exs: list[Extractor] = []
    if kind in ("auto", "inception"):
        try:
            exs.append(inception_extractor())
        except ExtractorUnavailable as e:
            if kind == "inception":
                raise UserError(f"--extractor inception: {e}; connect to the internet or use --extractor auto") from None
            notes.append(f"fallback: {e}")
    if kind == "vgg16" or (kind == "auto" and not exs):
        try:
            exs.append(vgg16_extractor())
            if kind == "auto":
                notes.append(f"using {exs[-1].name} and the domain classifier instead of InceptionV3")
        except ExtractorUnavailable as e:
            if kind == "vgg16":
                raise UserError(f"--extractor vgg16: {e}; connect to the internet or the package index, or use "
                                "--extractor auto") from None
            notes.append(f"fallback: {e}; using the offline extractors (domain classifier + random-init CNN) instead")
    if kind == "domain" or (kind == "auto" and not any("Inception" in e.name for e in exs)):
        if domain_model is None:
            raise ValueError("build_extractors: the domain extractor needs a trained domain_model")
        exs.append(domain_extractor(domain_model))
    if kind == "random" or (kind == "auto" and len(exs) == 1 and "domain" in exs[0].name):
        exs.append(random_cnn_extractor(image_size, seed=seed))
    return exs, notes
