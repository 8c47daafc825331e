"""Benchmark b: images/s of the full D+G train step (fp32 vs bf16), FLOPs per step, fraction of matmul peak, input overhead."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import profiling

TARGET_BF16_SPEEDUP = 2.0  # bf16 >= 2x fp32 on CPUs with AMX
TARGET_PEAK_FRACTION = 0.40  # >= 40% of the measured bf16 matmul peak
TARGET_INPUT_OVERHEAD = 0.05  # real tf.data pipeline within 5% of in-memory batches

def build_gan(cfg: Any, precision: str) -> tuple[Any, str]:
    """A compiled ConditionalGAN in `precision` (fp32 | bf16 | fp16), built by cxr_utils.train.build_gan."""
    from cxr_utils import train

    return train.build_gan(cfg.replace(precision=precision), precision), f"cxr_utils.train.build_gan(cfg, {precision!r})"


class _StepClock:
    """Keras callback: wall-clock time at the end of every train batch."""

    def __init__(self) -> None:
        import keras

        clock = self

        class _CB(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                clock.stamps.append(time.perf_counter())

        self.stamps: list[float] = []
        self.callback = _CB()

    def seconds_per_step(self, warmup: int) -> float:
        """Mean seconds per step after `warmup` steps (the first steps include tracing)."""
        s = self.stamps[warmup:]
        if len(s) < 2:
            raise RuntimeError("need at least warmup + 2 timed steps")
        return (s[-1] - s[0]) / (len(s) - 1)


def synthetic_dataset(cfg: Any, steps: int, seed: int = 0) -> Any:
    """An in-memory batch repeated `steps` times: the cost of the input pipeline is ~0 by construction."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (cfg.batch_size, cfg.image_size, cfg.image_size, cfg.channels)).astype("float32")
    y = (np.arange(cfg.batch_size) % cfg.num_classes).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat(steps)


def real_dataset(cfg: Any, npz: Path, steps: int) -> tuple[Any, str]:
    """The training tf.data pipeline exactly as cxr_utils.train builds it from a real cache's train split, `steps` batches."""
    from cxr_utils import data, train

    images, labels = data.load(npz).subset("train")
    x = train._model_view(images, cfg.channels)  # what train.train does before make_dataset
    per_epoch = len(x) // cfg.batch_size
    if per_epoch < 1:
        raise RuntimeError(f"{npz}: {len(x)} train images is fewer than one batch of {cfg.batch_size}")
    epochs = -(-steps // per_epoch)
    ds = train.make_dataset(x, labels, cfg.batch_size, cfg.seed, 0, epochs, channels=cfg.channels).take(steps)
    return ds, f"cxr_utils.train.make_dataset on the {len(x)} train images of the cache"


def time_fit(model: Any, dataset: Any, warmup: int) -> float:
    """Seconds per step of model.fit over `dataset` (steps after `warmup`)."""
    clock = _StepClock()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    return clock.seconds_per_step(warmup)


def step_flops(model: Any, cfg: Any) -> dict[str, Any]:
    """FLOPs of one ConditionalGAN.train_step at the config's batch and image size."""
    import tensorflow as tf

    spec = (tf.TensorSpec([cfg.batch_size, cfg.image_size, cfg.image_size, cfg.channels], tf.float32),
            tf.TensorSpec([cfg.batch_size], tf.int32))
    r = profiling.function_flops(lambda x, y: model.train_step((x, y)), *spec)
    r.pop("by_name", None)
    return r


def run(peaks: dict[str, dict[str, Any]], npz: Path | None, quick: bool = True, info: dict[str, Any] | None = None,
        precisions: tuple[str, ...] | None = None, cfg: Any = None, rounds: int | None = None, chunk: int | None = None,
        profile_steps: int | None = None, between_rounds: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Benchmark b, side by side: rounds of `chunk` steps per contender (fp32, bf16 in-memory, bf16 real pipeline).

    Interleaving the contenders in rounds and taking each one's best round keeps the ratios honest on a shared,
    noisy machine: a burst of someone else's load hits one round, not one contender.
    """
    import keras

    from cxr_utils.config import GANConfig

    cfg = cfg or GANConfig()  # the default model at 64x64, batch 64
    gpus = (info or {}).get("gpus") or []
    precisions = precisions or (("fp32", "bf16", "fp16") if gpus else ("fp32", "bf16"))
    fast = "bf16" if "bf16" in precisions else precisions[-1]  # the precision `auto` picks on this CPU
    # many short rounds beat few long ones on a shared machine: each contender gets more chances at a quiet moment
    rounds = rounds or (4 if quick else 8)
    chunk = chunk or (3 if quick else 6)
    profile_steps = profile_steps or (3 if quick else 8)
    out: dict[str, Any] = {
        "config": {k: cfg.to_dict()[k] for k in ("image_size", "batch_size", "channels", "latent_dim", "g_base_filters",
                                                 "d_base_filters", "norm", "adv_loss", "diffaugment", "ema_decay")},
        "rounds": rounds, "steps_per_round": chunk,
        "timing": "model.fit; seconds between consecutive train-batch ends (the first batch of each round, which may "
                  "include iterator start-up, is excluded); best round per contender",
        "precisions": {},
    }
    models: dict[str, Any] = {}
    built_by: dict[str, str] = {}
    for p in precisions:
        keras.utils.set_random_seed(0)
        models[p], built_by[p] = build_gan(cfg, p)
    contenders: dict[str, tuple[Any, Any]] = {p: (models[p], lambda n: synthetic_dataset(cfg, n)) for p in precisions}
    real_how = None
    if npz is not None:
        real_how = real_dataset(cfg, npz, 1)[1]
        contenders[f"{fast}_real_pipeline"] = (models[fast], lambda n: real_dataset(cfg, npz, n)[0])
    t0 = time.perf_counter()
    for model, make in contenders.values():  # trace and warm every contender once before timing any
        model.fit(make(2), epochs=1, verbose=0, shuffle=False)
    warm_seconds = time.perf_counter() - t0
    per_round: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, (model, make) in contenders.items():
            per_round[name].append(time_fit(model, make(chunk), warmup=1))
        if between_rounds is not None:  # e.g. re-measure the matmul peak under the same load as this round
            between_rounds()
    best = {k: min(v) for k, v in per_round.items()}
    out["warmup_seconds"] = warm_seconds
    flops = step_flops(models[precisions[0]], cfg)
    out["flops"] = flops
    for p in precisions:
        sec = best[p]
        rec: dict[str, Any] = {"built_by": built_by[p], "seconds_per_step": sec, "images_per_second": cfg.batch_size / sec,
                               "seconds_per_step_by_round": per_round[p]}
        peak_key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[p]
        if peak_key in peaks:
            peak = peaks[peak_key]["flops_per_second"]
            rec["achieved_flops_per_second"] = flops["total"] / sec
            rec["peak_fraction"] = flops["total"] / sec / peak
            rec["peak_fraction_matmul_conv_only"] = flops["matmul_conv"] / sec / peak
        out["precisions"][p] = rec
    if real_how is not None:
        name = f"{fast}_real_pipeline"
        out["precisions"][fast]["real_pipeline"] = {
            "built_by": real_how, "cache": str(npz), "seconds_per_step": best[name],
            "seconds_per_step_by_round": per_round[name], "overhead": best[name] / best[fast] - 1.0}
    for p in precisions if not quick else (fast,):
        model = models[p]
        times = profiling.trace_op_times(lambda m=model: m.fit(synthetic_dataset(cfg, profile_steps), epochs=1, verbose=0, shuffle=False))
        if times.get("available"):
            times["top"] = profiling.join_flops_and_time(flops["by_type"], times, profile_steps)
            times["steps"] = profile_steps
            times.pop("by_type")
        out["precisions"][p]["op_profile"] = times
    models.clear()
    keras.backend.clear_session()
    out["ratios"] = _ratios(out, info or {})
    return out


def _ratios(out: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Each ratio with its target and a met flag (None where the target does not apply here)."""
    from .machine import has_fast_bf16

    pr = out["precisions"]
    r: dict[str, Any] = {}
    if "fp32" in pr and "bf16" in pr:
        v = pr["bf16"]["images_per_second"] / pr["fp32"]["images_per_second"]
        applies = has_fast_bf16(info) if info else True
        r["bf16_vs_fp32"] = {"value": v, "target": TARGET_BF16_SPEEDUP, "met": (v >= TARGET_BF16_SPEEDUP) if applies else None}
    if "bf16" in pr and "peak_fraction" in pr["bf16"]:
        v = pr["bf16"]["peak_fraction"]
        r["bf16_peak_fraction"] = {"value": v, "target": TARGET_PEAK_FRACTION, "met": v >= TARGET_PEAK_FRACTION}
    for p in pr.values():
        if "real_pipeline" in p:
            v = p["real_pipeline"]["overhead"]
            r["input_overhead"] = {"value": v, "target": TARGET_INPUT_OVERHEAD, "met": v < TARGET_INPUT_OVERHEAD,
                                   "lower_is_better": True}
    return r
