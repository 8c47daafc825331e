"""ESTIMATES of how long each notebook takes on a T4 / L4 / A100 at the defaults, from counted FLOPs (never measured).

    python -m benchmarks.rehearsal_estimate --out FLOPS.json   count the FLOPs (run by benchmarks.rehearsal)

Method: FLOPs of one GAN train step of the default recipe at batch 64 and of the VGG16 classifier's train step per
image in each stage (TensorFlow's per-op FLOP registry over the traced step: benchmarks.profiling, as
benchmarks/train_step.step_flops), times the steps or image-epochs a notebook runs at its defaults (cxr_utils.gan.fit
plan_epochs; EvalConfig's 10 + 10 epochs, 3 seeds, 4 protocols at ratio 1), divided by the GPU's peak FLOP/s from
NVIDIA's data sheet at the precision the code runs there, times an achieved fraction (the one this project measured
for the same step on a CPU, benchmarks.json). Per-step launch and host overhead is not modelled, so the faster the GPU
the more the figure is a lower bound.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

# dense peaks (no structured sparsity) at the precision the code uses there: the GAN's `auto` precision is fp16 mixed
# on compute capability >= 7 (cxr_utils.gan.device.resolve_precision); the classifier trains in float32, which TensorFlow
# runs as TF32 on Ampere and Ada tensor cores (on by default) and as plain FP32 on Turing
GPUS: dict[str, dict[str, Any]] = {
    "T4": {"gan": (65e12, "FP16 mixed precision (Tensor Cores) 65 TFLOPS"),
           "classifier": (8.1e12, "FP32 8.1 TFLOPS (Turing has no TF32)"),
           "source": "NVIDIA T4 Tensor Core GPU data sheet (nvidia.com, t4-tensor-core-datasheet-951643.pdf)"},
    "L4": {"gan": (121e12, "FP16 Tensor Core 242 TFLOPS with sparsity = 121 dense"),
           "classifier": (60e12, "TF32 Tensor Core 120 TFLOPS with sparsity = 60 dense"),
           "source": "NVIDIA L4 Tensor Core GPU data sheet (nvidia.com, l4-gpu-datasheet)"},
    "A100": {"gan": (312e12, "FP16 Tensor Core 312 TFLOPS (dense)"),
             "classifier": (156e12, "TF32 Tensor Core 156 TFLOPS (dense)"),
             "source": "NVIDIA A100 Tensor Core GPU data sheet (nvidia.com, nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)"},
}
PROTOCOL_PHASES = {"trtr": (1,), "tstr": (1,), "augment": (2,), "pretrain": (1, 1)}  # x real training images, ratio 1
STUDY_SEEDS = 3  # study.run_study on the full data set
N_MEMO = 500  # notebook 03's synthetic images per class for the memorization check


def default_plan(n_train: int) -> dict[str, Any]:
    """Notebook 02's default run for n_train training images: batch (fit_batch_size), steps per epoch, epochs
    (plan_epochs) and the quality evaluations its auto interval makes."""
    from cxr_utils.gan.device import epoch_steps
    from cxr_utils.gan.fit import fit_batch_size, plan_epochs
    from cxr_utils.gan.tracker import eval_interval

    batch = fit_batch_size(n_train, 64)
    spe = epoch_steps(n_train, batch)
    epochs = plan_epochs(n_train, batch)
    return {"n_train": n_train, "batch": batch, "steps_per_epoch": spe, "epochs": epochs, "steps": spe * epochs,
            "quality_evaluations": math.ceil(epochs / eval_interval(0, spe))}


def count_flops(n_train: int) -> dict[str, Any]:
    """FLOPs of one default-recipe GAN step (batch 64), one generator image, and the classifier's train step per
    image in each stage plus its forward pass per image (EvalConfig defaults, batch 32, 64 px); with the default
    plan of notebook 02 for n_train training images (default_plan)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from cxr_utils.config import DEFAULT_RECIPE, GANConfig
    from cxr_utils.evaluation import classifier
    from cxr_utils.gan import device

    from .profiling import function_flops
    from .train_step import step_flops

    cfg = GANConfig().with_recipe(DEFAULT_RECIPE).replace(batch_size=64, precision="fp32")
    gan = device.build_gan(cfg, "fp32")
    g_step = step_flops(gan, cfg)
    z = tf.TensorSpec([256, cfg.latent_dim], tf.float32)
    lab = tf.TensorSpec([256], tf.int32)
    g_fwd = function_flops(lambda a, b: gan.ema_generator([a, b], training=False), z, lab)
    ecfg = classifier.EvalConfig()
    model, base = classifier.build_classifier(64, ecfg, None)
    x = tf.TensorSpec([ecfg.batch_size, 64, 64, 3], tf.float32)
    y = tf.TensorSpec([ecfg.batch_size], tf.float32)
    bce = keras.losses.BinaryCrossentropy()
    stages, raw = {}, {}
    for name, unfrozen in (("head", ()), ("finetune", ("block5",))):
        base.trainable = True  # as evaluation._fit_two_stage sets each stage
        for layer in base.layers:
            layer.trainable = layer.name.startswith(unfrozen) if unfrozen else False
        w = [v.value for v in model.trainable_weights]

        def needed(a: Any, b: Any, w: list[Any] = w) -> Any:  # the gradient of the trainable weights only
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(w)
                loss = bce(b, model(a, training=True)[:, 0])
            return tape.gradient(loss, w)

        stages[name] = function_flops(needed, x, y)["total"] / ecfg.batch_size
        # Keras's own traced train_step also holds backward ops of the frozen layers (an upper bound)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
        model.train_on_batch(np.zeros((ecfg.batch_size, 64, 64, 3), np.float32), np.zeros(ecfg.batch_size, np.float32))
        raw[name] = function_flops(lambda a, b: model.train_step((a, b)), x, y)["total"] / ecfg.batch_size
    fwd = function_flops(lambda a: model(a, training=False), tf.TensorSpec([256, 64, 64, 3], tf.float32))
    return {"recipe": DEFAULT_RECIPE, "gan_batch": 64, "gan_step": g_step["total"],
            "gan_step_matmul_conv": g_step["matmul_conv"], "generator_per_image": g_fwd["total"] / 256,
            "classifier_batch": ecfg.batch_size, "classifier_train_per_image": stages,
            "classifier_train_step_graph_per_image": raw,
            "classifier_forward_per_image": fwd["total"] / 256, "method": g_step["method"],
            "eval_config": {k: getattr(ecfg, k) for k in ("input_size", "batch_size", "epochs_head", "epochs_finetune")},
            "plan": default_plan(n_train)}


def measured_fractions(path: Path) -> dict[str, Any]:
    """The achieved fraction of the matmul peak this project measured for the GAN step on a CPU (benchmarks.json):
    bf16 (the reduced-precision path, used for fp16 on GPUs) and fp32 (used for the float32 classifier)."""
    from cxr_utils.files import read_json

    d = read_json(path)
    prec = d["train"]["precisions"]
    return {"reduced": prec["bf16"]["peak_fraction"], "fp32": prec["fp32"]["peak_fraction"],
            "cpu": d.get("machine", {}).get("cpu_model"), "source": f"{path.name}: train.precisions.<bf16|fp32>.peak_fraction"}


def estimate(flops: dict[str, Any], n_val: int, n_test: int, n_export: int, measured: dict[str, Any]) -> dict[str, Any]:
    """Seconds per notebook per GPU (ESTIMATES): counted FLOPs x default work / (data-sheet peak x achieved fraction)."""
    plan = flops["plan"]
    n_train, batch = plan["n_train"], plan["batch"]
    gan_flops = plan["steps"] * flops["gan_step"] * batch / flops["gan_batch"]
    export_flops = (n_export + 2 * N_MEMO) * flops["generator_per_image"]
    per = flops["classifier_train_per_image"]
    ec = flops["eval_config"]
    image_epochs = sum(sum(m) for m in PROTOCOL_PHASES.values()) * n_train
    fits = sum(len(m) for m in PROTOCOL_PHASES.values())
    clf_flops = STUDY_SEEDS * (image_epochs * (ec["epochs_head"] * per["head"] + ec["epochs_finetune"] * per["finetune"])
                               + fits * (ec["epochs_head"] + ec["epochs_finetune"]) * n_val
                               * flops["classifier_forward_per_image"]
                               + len(PROTOCOL_PHASES) * (n_val + n_test) * flops["classifier_forward_per_image"])
    rows = {}
    for gpu, g in GPUS.items():
        gan_rate = g["gan"][0] * measured["reduced"]
        clf_rate = g["classifier"][0] * measured["fp32"]
        rows[gpu] = {"notebook_02_seconds": gan_flops / gan_rate, "notebook_03_seconds": export_flops / gan_rate,
                     "notebook_04_seconds": clf_flops / clf_rate, "gan_peak": g["gan"][1],
                     "classifier_peak": g["classifier"][1], "source": g["source"]}
    return {"label": "ESTIMATES (FLOPs / (data-sheet peak x achieved fraction)); not measured on any GPU",
            "n_train": n_train, "n_val": n_val, "n_test": n_test, "n_export": n_export,
            "notebook_02": {**plan, "flops": gan_flops, "excluded": "quality evaluations, sample grids, checkpoints"},
            "notebook_03": {"images": n_export + 2 * N_MEMO, "flops": export_flops,
                            "excluded": "PNG encoding and writing (CPU and disk), figures"},
            "notebook_04": {"seeds": STUDY_SEEDS, "protocols": list(PROTOCOL_PHASES), "ratio": 1,
                            "image_epochs_per_stage": image_epochs, "fits": fits, "flops": clf_flops,
                            "upper_bound": "every stage runs its full 10 epochs (early stopping can only shorten it)",
                            "excluded": "generative metrics (FID/KID/PRDC), bootstrap, figures"},
            "notebook_01": "CPU work (JPEG decoding), not sped up by a GPU: see the prepare stage measured here",
            "fraction": measured, "gpus": rows}


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1:
        return "< 1 s"
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


def report_markdown(d: dict[str, Any]) -> str:
    """The README section: the LOAD TEST's stages measured here, then the per-GPU ESTIMATES with their method."""
    ms, me = d["machine_start"], d["machine_end"]
    lines = [f"`{d['command']}` (`assets/results/rehearsal.json`), a {d['load_test']}. Measured on "
             f"{ms['cpu']} ({ms['cores']} cores, shared with other work: wall times are inflated), load average "
             f"{ms['load_average'][0]:.2f} at the start ({ms['utc']}) and {me['load_average'][0]:.2f} at the end "
             f"({me['utc']}); every stage ran as its own child process. No accuracy or quality figure of this run means "
             "anything: its test images are transforms of the same 16 pictures as its training images, so the JSON "
             "keeps none.", "",
             "| Stage | Command | Handled | Seconds | Peak RSS: largest process (wait4) / all its processes (sampled "
             "every 0.5 s) | Grows with |",
             "|---|---|---|---|---|---|"]
    for name, r in d["stages"].items():
        lines.append(f"| {name} | `{r['command']}` | {_handled(name, r)} | {r['seconds']:.0f} | "
                     f"{r['peak_rss_mib']:,.0f} / {r['peak_rss_all_processes_mib']:,.0f} MiB | {r['grows_with']} |")
    lines.append(f"\nTotal {d['total_seconds']:.0f} s ({d['total_seconds'] / 60:.1f} min); all stages "
                 f"{'succeeded' if d['ok'] else 'did NOT all succeed'}.")
    e = d.get("estimates")
    if not e:
        return "\n".join(lines) + "\n"
    n2, n4, fr = e["notebook_02"], e["notebook_04"], e["fraction"]
    lines += ["", f"**How long each notebook takes on a T4 / L4 / A100 at the defaults: ESTIMATES, not measurements.** "
              f"Notebook 02: {n2['steps']:,} GAN steps ({n2['epochs']} epochs x {n2['steps_per_epoch']} steps at batch "
              f"{n2['batch']}, `plan_epochs` for {e['n_train']:,} training images) x {d['stages']['flops']['counted']['gan_step'] / 1e9:.1f} "
              f"GFLOP per step; notebook 03: {e['notebook_03']['images']:,} generator images; notebook 04: 3 seeds x 4 "
              f"protocols at ratio 1, {n4['image_epochs_per_stage']:,} training images per epoch summed over the "
              f"protocols, 10 + 10 epochs (an upper bound: early stopping shortens it), at {_gf(d, 'head')} GFLOP per image with "
              f"the base frozen and {_gf(d, 'finetune')} with block5 trained (the gradient of the trainable weights only; "
              f"Keras's traced `train_step` also holds the frozen layers' backward ops, {_gf(d, 'head', True)} GFLOP per "
              f"image, which the estimate does not count). Seconds = FLOPs / (data-sheet "
              f"peak x {fr['reduced']:.2f} for the GAN's fp16, x {fr['fp32']:.2f} for the float32 classifier): the "
              f"fractions of the matmul peak this project measured for the GAN step on a CPU ({fr['cpu']}, "
              f"`{fr['source']}`), used for lack of a GPU measurement. Not modelled: per-step launch and host overhead "
              f"(the arithmetic of one GAN step takes milliseconds on these GPUs, so launches and host work decide: "
              f"every row is a compute-bound FLOOR, likely several times below the real time; measure with "
              f"`python -m benchmarks --device-report` on the GPU), quality evaluations, PNG writing, FID/KID, "
              f"notebook 01's JPEG decoding (CPU work; see the prepare stage above)." + _achieved(d), "",
              "| GPU | Peak used (GAN / classifier) | Notebook 02 | Notebook 03 | Notebook 04 | Data sheet |",
              "|---|---|---|---|---|---|"]
    for gpu, r in e["gpus"].items():
        lines.append(f"| {gpu} | {r['gan_peak']} / {r['classifier_peak']} | {_fmt_s(r['notebook_02_seconds'])} | "
                     f"{_fmt_s(r['notebook_03_seconds'])} | {_fmt_s(r['notebook_04_seconds'])} | {r['source']} |")
    return "\n".join(lines) + "\n"


def _achieved(d: dict[str, Any]) -> str:
    """One sentence: the GAN FLOP/s this run's own training epoch reached (a check of the count), if measured."""
    a = d.get("achieved_here")
    if not a:
        return ""
    return (f" Check on this run's clock: its training epoch reached {a['gan_flops_per_second'] / 1e9:.0f} GFLOP/s "
            f"({a['how']}).")


def _gf(d: dict[str, Any], stage: str, graph: bool = False) -> str:
    """A classifier stage's counted GFLOP per image."""
    c = d["stages"]["flops"]["counted"]
    v = (c.get("classifier_train_step_graph_per_image") or {}).get(stage) if graph else c["classifier_train_per_image"][stage]
    return "n/a" if v is None else f"{v / 1e9:.2f}"


def _handled(name: str, r: dict[str, Any]) -> str:
    """What a stage handled, in words."""
    if r.get("exit_status") != 0:
        return f"FAILED (exit {r.get('exit_status')})"
    if name == "tree":
        s = r["spec"]
        return (f"{s['files']:,} LOAD-TEST JPEGs ({s['bytes'] / 2**20:,.0f} MiB, {s['megapixels_mean']:.1f} MP mean)"
                + (" (reused)" if s.get("reused") else ""))
    if name == "prepare":
        c = r["counts"]
        per = ", ".join(f"{s} {sum(c[s].values()):,}" for s in ("train", "val", "test"))
        return f"{r['files']:,} files -> {r['images']:,} images ({per}; {r['excluded']} excluded, {r['skipped']} skipped)"
    if name == "train":
        ep, q = r.get("epoch_seconds"), r.get("quality_eval_seconds")
        return (f"1 epoch: {r['steps']} steps x {r['batch_size']} of {r['images']:,} images ({r['precision']}"
                + (f"; the epoch itself {ep:.0f} s" if ep is not None else "") + f"), {r['quality_rows']} quality "
                f"evaluation(s)" + (f" of {r.get('eval_n_per_class')} images per class ({q:.1f} s)" if q is not None else ""))
    if name == "export":
        return f"{r['pngs']:,} PNGs ({' / '.join(f'{n:,}' for n in r['per_class'])} per class, generator: {r['which']})"
    if name == "study":
        per = ", ".join(f"{k} {v:,}" for k, v in (r.get("training_images_per_protocol") or {}).items())
        return f"smoke sizes: {r['synthetic_images']:,} synthetic PNGs read; classifier training images {per}"
    if name == "flops":
        return "one traced step of the GAN and of the classifier"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Count the FLOPs and write them as JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.rehearsal_estimate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, required=True, help="training images of notebook 02's default plan")
    a = p.parse_args(argv)
    from cxr_utils.files import atomic_write_json

    atomic_write_json(a.out, count_flops(a.n_train))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
