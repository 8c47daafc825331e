"""The GAN compiled for the machine at hand: precision policy, XLA, device strategy and steps per host sync.

`train` builds its GAN here, and so does `runs` when it reads a generator out of a checkpoint file.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from ..config import GANConfig
from ..errors import UserError
from .model import ConditionalGAN
from .networks import build_discriminator, build_generator

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bf16 math on x86 CPUs
# steps between two host syncs of fit: at least MIN unless an epoch is shorter, at most MAX (see epoch_steps)
MIN_STEPS_PER_EXECUTION, MAX_STEPS_PER_EXECUTION = 8, 16


# ---------------------------------------------------------------- precision and devices

def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True if /proc/cpuinfo lists avx512_bf16 or amx_bf16 (fast bf16 matmuls on CPU)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & BF16_CPU_FLAGS)
    return False


def resolve_precision(requested: str, deterministic: bool = False) -> str:
    """auto -> fp16 on GPUs with compute capability >= 7, bf16 on bf16-capable CPUs, else fp32.

    No TPU branch: the trainer never connects a TPU (no TPUStrategy), so on a TPU machine it runs on the CPU and the
    CPU decides (see `colab.tpu_note` for what Colab's TPU runtimes offer TensorFlow).
    """
    if requested != "auto":
        return requested
    if deterministic:
        return "fp32"  # bit-identical runs are only promised in fp32
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return "fp16" if tuple(cc) >= (7, 0) else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def resolve_jit(requested: str) -> bool:
    """auto -> XLA on when a GPU is visible; on CPU the XLA-compiled step measured slower than TF's own kernels."""
    if requested == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return requested == "on"


def make_strategy(distribute: str = "auto") -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all GPUs when there are several, else the default strategy.

    "mirrored" forces MirroredStrategy over the logical GPUs, or over the logical CPUs when there are no GPUs
    (used by the tests with 2 logical CPU devices); "default" forces one device.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if distribute == "default" or (distribute == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    if distribute not in ("auto", "mirrored"):
        raise UserError(f"distribute: expected auto|mirrored|default, got {distribute!r}")
    devices = [d.name for d in gpus] if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)



# ---------------------------------------------------------------- building

def epoch_steps(n_train: int, batch_size: int) -> int:
    """The steps of one epoch: every full batch, less the few that would leave a host sync of fewer than 8 steps.

    Keras's `fit` runs `steps_per_execution` steps per call and waits for the device after each call; the steps of an
    epoch must be a multiple of it (with a data stream that spans epochs, as `train.make_dataset`'s, a last call that
    does not fit runs on into the next epoch's batches). So an epoch of more than MAX_STEPS_PER_EXECUTION full batches
    keeps the largest number of them that some k in [MIN, MAX] divides: 73 (PneumoniaMNIST's 4,708 images at batch
    64) -> 72, 12 per call; 59 -> 56, 14 per call. That drops at most 3 batches below 6,000 images at batch 64 (7 at
    any size; 1 of 17, 5.9 %, at worst); each epoch is a fresh permutation, so every image is still drawn alike
    across epochs. Shorter epochs keep every full batch and run in one call.
    """
    full = int(n_train) // max(1, int(batch_size))
    if full <= MAX_STEPS_PER_EXECUTION:
        return full
    ks = range(min(MIN_STEPS_PER_EXECUTION, MAX_STEPS_PER_EXECUTION), MAX_STEPS_PER_EXECUTION + 1)
    return next(s for s in range(full, 0, -1) if any(s % k == 0 for k in ks))


def steps_per_execution(steps_per_epoch: int, replicas: int = 1) -> int:
    """How many steps `fit` runs per call before Python sees the logs: the largest divisor of the epoch's steps up to
    MAX_STEPS_PER_EXECUTION (at least MIN_STEPS_PER_EXECUTION for an epoch of epoch_steps() steps, unless it is
    shorter). Keras converts the logs to floats after every call (a wait for the device); a divisor keeps each call
    inside one epoch, so epochs hold the same batches whatever the value. With several replicas one step per call:
    several fail under MirroredStrategy (a placeholder inside Keras's while loop is left unfed; re-checked on TF 2.21 /
    Keras 3.15.1 and on Colab's TF 2.20 / Keras 3.13.2 with 2 logical CPUs: 4 and 8 fail, 1 trains)."""
    if replicas > 1 or steps_per_epoch < 1:
        return 1
    return max(k for k in range(1, min(MAX_STEPS_PER_EXECUTION, steps_per_epoch) + 1) if steps_per_epoch % k == 0)


def build_gan(cfg: GANConfig, precision: str = "fp32", steps_per_execution: int = 1,
              class_counts: tuple[int, ...] | None = None) -> ConditionalGAN:
    """A compiled ConditionalGAN with both optimizers built (call inside the strategy scope); XLA per cfg.jit.

    class_counts: the training labels' per-class counts, the prior of the generated labels (ConditionalGAN)."""
    policy = POLICIES[precision]
    g = build_generator(cfg, dtype=policy, name="generator")
    d = build_discriminator(cfg, dtype=policy, name="discriminator")
    ema = build_generator(cfg, dtype="float32", name="ema_generator") if cfg.ema_decay > 0 else None
    gan = ConditionalGAN(cfg, g, d, ema, class_counts=class_counts)
    d_opt = keras.optimizers.Adam(cfg.d_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="d_adam")
    g_opt = keras.optimizers.Adam(cfg.g_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="g_adam")
    if precision == "fp16":  # fp16 gradients underflow without loss scaling; each optimizer keeps its own scale
        d_opt = keras.optimizers.LossScaleOptimizer(d_opt, name="d_loss_scale")
        g_opt = keras.optimizers.LossScaleOptimizer(g_opt, name="g_loss_scale")
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt, jit_compile=resolve_jit(cfg.jit),
                steps_per_execution=steps_per_execution)
    gan.build_optimizers()
    return gan
