"""Benchmark b: images/s of the full D+G train step (fp32 vs bf16), FLOPs per step, fraction of matmul peak, input overhead."""

from __future__ import annotations

import json
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
    """A compiled ConditionalGAN in `precision` (fp32 | bf16 | fp16), built by cxr_utils.gan.device.build_gan."""
    from cxr_utils.gan import device as build

    return build.build_gan(cfg.replace(precision=precision), precision), f"cxr_utils.gan.device.build_gan(cfg, {precision!r})"


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
    """The training tf.data pipeline exactly as cxr_utils.gan.fit builds it from a real cache's train split, `steps` batches."""
    from cxr_utils import data
    from cxr_utils.gan import device as build
    from cxr_utils.gan import fit as train

    images, labels = data.load(npz).subset("train")
    x = data.gray_images(images)  # make_dataset turns uint8 batches into the model view, as train() feeds it
    per_epoch = build.epoch_steps(len(x), cfg.batch_size)  # the batches make_dataset gives per epoch
    if per_epoch < 1:
        raise RuntimeError(f"{npz}: {len(x)} train images is fewer than one batch of {cfg.batch_size}")
    epochs = -(-steps // per_epoch)
    ds = train.make_dataset(x, labels, cfg.batch_size, cfg.seed, 0, epochs, channels=cfg.channels).take(steps)
    return ds, f"cxr_utils.gan.fit.make_dataset on the {len(x)} train images of the cache"


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


# ---------------------------------------------------------------- the training loop around the step (issue 11)

TARGET_LOOP_FRACTION = 0.80  # train() on the 10-image sample: >= 80% of the bare step's images/s
LOOP_AB = Path(__file__).resolve().parent.parent / "assets" / "results" / "loop-before-after.json"


def bare_step(cfg: Any, precision: str, rounds: int = 4, chunk: int = 6) -> dict[str, Any]:
    """Seconds per bare D+G train step (fit on one in-memory batch, no run-folder callback), best round of `rounds`."""
    import keras

    keras.utils.set_random_seed(0)
    model, built_by = build_gan(cfg, precision)
    model.fit(synthetic_dataset(cfg, 2), epochs=1, verbose=0, shuffle=False)  # trace once before timing
    per_round = [time_fit(model, synthetic_dataset(cfg, chunk), warmup=1) for _ in range(rounds)]
    sec = min(per_round)
    del model
    keras.backend.clear_session()
    return {"built_by": built_by, "precision": precision, "batch_size": cfg.batch_size, "seconds_per_step": sec,
            "images_per_second": cfg.batch_size / sec, "seconds_per_step_by_round": per_round}


def loop(npz: Path, work: Path, rounds: int = 4, epochs_per_round: int = 12, chunk: int = 6, cfg: Any = None,
         jit: bool = False) -> dict[str, Any]:
    """Per-epoch overhead: images/s of train() on a cache's train split vs the bare step (GANConfig() unless `cfg`:
    the seed-recipe model, which older checkouts also have, so before/after compare the same model).

    In each of `rounds` rounds, `chunk` bare steps (fit on one in-memory batch) and then `epochs_per_round` more
    epochs of one train() run (resumed from the previous round) are timed; the per-epoch time is the mean interval
    between two epoch ends (the step and all the epoch's own work: metrics row, sample grids, checkpoints), leaving
    out the first epoch of a round (tracing) and its last (the end-of-run checkpoint). Each contender keeps its best
    round: alternating them keeps a burst of someone else's load from favouring one. Only RunCallback.on_epoch_end,
    train / build_gan and data.load are used, so the same function measures an older checkout (main --before).
    """
    import shutil

    import keras

    from cxr_utils import data
    from cxr_utils.config import GANConfig
    from cxr_utils.gan import fit as train

    try:
        from cxr_utils.gan import device as build
    except ImportError:  # a checkout from before build.py left train.py
        build = train

    images, labels = data.load(npz).subset("train")
    cfg = (cfg or GANConfig()).replace(image_size=int(images.shape[1]))
    cfg = cfg.replace(batch_size=min(cfg.batch_size, len(images)))  # train.fit_batch_size, which older checkouts lack
    precision = build.resolve_precision(cfg.precision, cfg.deterministic)
    # the steps train() runs per epoch (every full batch in checkouts before build.epoch_steps)
    steps = getattr(build, "epoch_steps", lambda n, b: n // b)(len(images), cfg.batch_size)
    out: dict[str, Any] = {"cache": str(npz), "n_train": int(len(images)), "steps_per_epoch": steps,
                           "config": {k: cfg.to_dict()[k] for k in ("image_size", "batch_size", "g_base_filters",
                                                                    "d_base_filters", "checkpoint_every",
                                                                    "sample_every", "checkpoint_minutes")
                                      if k in cfg.to_dict()}}
    if jit:  # the same step XLA-compiled (GANConfig.jit, added with this measurement): what `--jit auto` decides on
        out["bare_step_jit"] = bare_step(cfg.replace(jit="on"), precision, rounds, chunk)
    keras.utils.set_random_seed(0)
    model, built_by = build_gan(cfg, precision)
    model.fit(synthetic_dataset(cfg, 2), epochs=1, verbose=0, shuffle=False)  # trace once before timing
    run = Path(work) / "loop"
    shutil.rmtree(run, ignore_errors=True)
    stamps: list[float] = []
    original = train.RunCallback.on_epoch_end

    def timed(self: Any, epoch: int, logs: Any = None) -> None:
        original(self, epoch, logs)
        stamps.append(time.perf_counter())

    bare_rounds, epoch_rounds = [], []
    train.RunCallback.on_epoch_end = timed
    try:
        for r in range(rounds):
            bare_rounds.append(time_fit(model, synthetic_dataset(cfg, chunk), warmup=1))
            stamps.clear()
            train.train(cfg.replace(epochs=(r + 1) * epochs_per_round), run, images, labels, resume=r > 0,
                        progress=0, show_samples=False)
            epoch_rounds.append((stamps[-2] - stamps[0]) / (len(stamps) - 2))
    finally:
        train.RunCallback.on_epoch_end = original
    folder_bytes = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    shutil.rmtree(run, ignore_errors=True)
    del model
    keras.backend.clear_session()
    bare, per_epoch = min(bare_rounds), min(epoch_rounds)
    out["bare_step"] = {"built_by": built_by, "precision": precision, "batch_size": cfg.batch_size,
                        "seconds_per_step": bare, "images_per_second": cfg.batch_size / bare,
                        "seconds_per_step_by_round": bare_rounds}
    ips = steps * cfg.batch_size / per_epoch
    out["train"] = {"rounds": rounds, "epochs_per_round": epochs_per_round, "seconds_per_epoch": per_epoch,
                    "seconds_per_epoch_by_round": epoch_rounds, "images_per_second": ips,
                    "run_folder_bytes": folder_bytes,
                    "timing": "train() resumed each round; mean interval between epoch ends (without a round's first and "
                              "last epoch); best round"}
    v = ips / out["bare_step"]["images_per_second"]
    out["ratios"] = {"loop_vs_bare_step": {"value": v, "target": TARGET_LOOP_FRACTION, "met": v >= TARGET_LOOP_FRACTION}}
    if "bare_step_jit" in out:
        out["jit_vs_no_jit"] = out["bare_step"]["seconds_per_step"] / out["bare_step_jit"]["seconds_per_step"]
    return out


def before_after(path: Path = LOOP_AB) -> dict[str, Any]:
    """Step time and per-epoch overhead before and after issue 11, from the A/B file `main --before` wrote: the older
    commit and this one measured alternately in fresh processes; per version the best of its rounds."""
    from cxr_utils.files import read_json

    if not path.is_file():
        return {"note": f"not measured: {path.name} is missing"}
    ab = read_json(path)
    out: dict[str, Any] = {"file": path.name, "command": ab.get("command"), "rounds": ab.get("rounds")}
    for label in ("before", "after"):
        runs = ab[label]["runs"]
        bare = min(r["loop"]["bare_step"]["seconds_per_step"] for r in runs)
        per_epoch = min(r["loop"]["train"]["seconds_per_epoch"] for r in runs)
        steps = runs[0]["loop"]["steps_per_epoch"]
        out[label] = {"commit": ab[label].get("commit"), "precision": runs[0]["loop"]["bare_step"]["precision"],
                      "bare_step_sample_config_seconds": bare,
                      "bare_step_default_batch_seconds": min(r["bare_step_default_batch"]["seconds_per_step"] for r in runs),
                      "train_seconds_per_epoch": per_epoch, "loop_vs_bare_step": steps * bare / per_epoch}
    return out


def _ab(args: Any, argv: list[str]) -> dict[str, Any]:
    """Measure the cxr_utils in args.before and this checkout's alternately, each run in a fresh process."""
    import os
    import subprocess
    import sys

    from cxr_utils.files import read_json

    repo = Path(__file__).resolve().parent.parent
    work = Path(args.work_dir).resolve()
    res: dict[str, Any] = {"command": "python -m benchmarks.train_step " + " ".join(argv), "rounds": args.rounds,
                           "before": {"commit": args.before_commit, "cxr_utils": str(Path(args.before).resolve()), "runs": []},
                           "after": {"commit": None, "cxr_utils": str(repo), "runs": []}}
    for r in range(args.rounds):
        for label in ("before", "after"):
            src = Path(res[label]["cxr_utils"])
            out = work / f"{label}-{r}.json"
            cmd = [sys.executable, "-m", "benchmarks.train_step", "--loop", str(Path(args.loop).resolve()), "--out",
                   str(out), "--work-dir", str(work / label), "--default-batch"]
            if res[label]["commit"]:
                cmd += ["--commit", res[label]["commit"]]
            # the working folder comes first on sys.path: the measured cxr_utils is the one in `src`
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(repo)])}
            subprocess.run(cmd, env=env, cwd=str(src), check=True)
            res[label]["runs"].append(read_json(out))
    res["after"]["commit"] = res["after"]["runs"][0].get("commit")
    return res


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.train_step --loop CACHE --out FILE.json`: the loop measurement alone; with
    `--before DIR` (an older cxr_utils/ extracted there, e.g. `git archive REV cxr_utils | tar -x -C DIR`), that one
    and this checkout's alternately (assets/results/loop-before-after.json)."""
    import argparse
    import subprocess
    import sys

    from cxr_utils.files import atomic_write_json

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--loop", required=True, help="cache .npz whose train split train() runs on (the 10-image sample)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work-dir", default="runs/benchmarks/work/loop")
    ap.add_argument("--default-batch", action="store_true", help="also time the bare step at the default batch size")
    ap.add_argument("--commit", default=None, help="commit of the measured cxr_utils (default: git rev-parse of its folder)")
    ap.add_argument("--before", default=None, help="folder holding an older cxr_utils/ to measure against this one")
    ap.add_argument("--before-commit", default=None, help="the commit that folder was extracted from")
    ap.add_argument("--rounds", type=int, default=2, help="with --before: alternating rounds per version")
    args = ap.parse_args(argv)
    if args.before and not args.before_commit:
        # a folder extracted inside this repository would report this checkout's HEAD as the "before" commit
        ap.error("--before needs --before-commit (the commit the folder was extracted from)")
    if args.before:
        res = _ab(args, argv)
        atomic_write_json(args.out, res)
        print(json.dumps(before_after(Path(args.out)), indent=1))
        return 0
    import cxr_utils
    from cxr_utils.config import GANConfig

    src = Path(cxr_utils.__file__).resolve().parent.parent
    rev = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    res = {"command": "python -m benchmarks.train_step " + " ".join(argv), "cxr_utils": str(src),
           "commit": args.commit or rev or None, "loop": loop(Path(args.loop), Path(args.work_dir))}
    if args.default_batch:
        from cxr_utils.gan import device as build

        cfg = GANConfig()
        res["bare_step_default_batch"] = bare_step(cfg, build.resolve_precision(cfg.precision), rounds=4, chunk=4)
    atomic_write_json(args.out, res)
    print(json.dumps({"loop": res["loop"]["ratios"], "bare": res["loop"]["bare_step"]["seconds_per_step"],
                      "train_s_per_epoch": res["loop"]["train"]["seconds_per_epoch"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
