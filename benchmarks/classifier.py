"""The VGG16 classifier of notebook 04 on this machine: seconds per epoch in fp32 and bf16 mixed precision, and at
input sizes 64 / 128 / 224, for a fixed number of images; and the test accuracy of a short fit in each precision.

Data: scikit-learn's real digits (8x8, upsampled to 64 px, the X-ray cache's size; 10-way head), the only real data
here with enough images; the timings do not depend on what the images show. Each timing is one `fit` of 2 epochs
with the graph traced in the first; the second epoch is the figure. Both stages are timed: head (VGG16 frozen,
forward only through the base) and finetune (block5 trainable). The machine is shared with other helpers: compare
ratios within one run, not across runs.

    python -m benchmarks.classifier --out assets/results/classifier_precision.json
    python -m benchmarks.classifier --quick        # 64 images, sizes 64 and 128 only, 1 + 1 epoch fits
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

IMAGE_SIZE = 64  # the X-ray cache's size: the classifier upsamples from this inside the model


def _data(n_train: int, size: int = IMAGE_SIZE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed digits split (benchmarks.digits_tstr), train cut to n_train; uint8 images at `size`."""
    from benchmarks import digits_tstr as D

    xtr, ytr, xte, yte = D.digits_split(size)
    xf, yf, xv, yv = D.fit_val_split(xtr, ytr)
    return {"train": (xf[:n_train], yf[:n_train]), "val": (xv, yv), "test": (xte, yte)}


def epoch_seconds(x: np.ndarray, y: np.ndarray, input_size: int, precision: str, weights_path: Path | None) -> dict[str, float]:
    """Seconds of the second epoch of each stage (head, finetune) of a 10-way classifier, in `precision`."""
    import keras

    from cxr_utils.evaluation import classifier as C

    cfg = dataclasses.replace(C.EvalConfig(), input_size=input_size, run_eagerly="never")
    C.start_fit(0)
    model, base = C.build_classifier(int(x.shape[1]), cfg, weights_path, num_classes=10, precision=precision)
    out = {}
    for stage in ("head", "finetune"):
        C.compile_stage(model, base, stage, cfg, steps=10**6, precision=precision)
        times: list[float] = []
        stamp = lambda epoch, logs, times=times: times.append(time.perf_counter())  # noqa: E731
        cb = keras.callbacks.LambdaCallback(on_epoch_begin=stamp, on_epoch_end=stamp)
        model.fit(x, y.astype(np.float32), epochs=2, batch_size=cfg.batch_size, verbose=0, callbacks=[cb])
        out[stage] = round(times[3] - times[2], 3)
    keras.backend.clear_session()
    return out


def short_fit_accuracy(data: dict[str, tuple[np.ndarray, np.ndarray]], precision: str, epochs: int,
                       weights_path: Path | None, input_size: int = 64, seed: int = 0) -> dict[str, Any]:
    """Test accuracy of the two-stage fit (epochs per stage, early stopping on val) in `precision`."""
    import keras

    from cxr_utils.evaluation import classifier as C

    cfg = C.eval_config(False, epochs=epochs, input_size=input_size, precision=precision)
    t0 = time.perf_counter()
    val = (C.to_vgg_input(data["val"][0]), data["val"][1].astype(np.float32))
    model, stages = C.fit_classifier([("trtr", C.to_vgg_input(data["train"][0]), data["train"][1])], val, cfg,
                                     weights_path, num_classes=10, seed=seed)
    pred = model.predict(C.to_vgg_input(data["test"][0]), batch_size=256, verbose=0).argmax(axis=1)
    keras.backend.clear_session()
    return {"accuracy": float((pred == data["test"][1]).mean()), "n_test": int(len(pred)),
            "epochs_run": {s["stage"]: s["epochs_run"] for s in stages}, "seconds": round(time.perf_counter() - t0, 1)}


def vgg16_gflops(input_size: int) -> float:
    """Forward GFLOPs of VGG16's 13 conv layers per image at input_size (2 x MACs; the head is negligible)."""
    blocks = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    flops, c_in, s = 0.0, 3, input_size
    for c_out, n in blocks:
        for _ in range(n):
            flops += 2 * s * s * 9 * c_in * c_out
            c_in = c_out
        s //= 2
    return flops / 1e9


def run(quick: bool = False, weights: str = "auto", n_images: int = 128, log: Any = print) -> dict[str, Any]:
    """Every measurement above; the JSON-ready result."""
    from benchmarks.machine import machine_info
    from cxr_utils.evaluation import classifier as C
    from cxr_utils.gan import device as build
    from cxr_utils.metrics import imagenet

    path, label, note = C.resolve_weights(weights, log=log)
    n = 64 if quick else n_images
    sizes = (64, 128) if quick else (64, 128, 224)
    data = _data(n)
    x, y = C.to_vgg_input(data["train"][0]), data["train"][1]
    info = machine_info()
    out: dict[str, Any] = {
        "benchmark": "classifier", "machine": info, "load_average_before": os.getloadavg(),
        "note": "shared machine (other helpers' benchmarks and tests ran at the same time): wall times are inflated; "
                "compare ratios within this run",
        "weights": label, "weights_source": imagenet.weights_source(path), "weights_note": note,
        "data": f"scikit-learn digits (real), {n} training images upsampled to {IMAGE_SIZE} px, batch "
                f"{C.EvalConfig().batch_size}", "n_images": n,
        "auto_precision_here": build.resolve_precision("auto"), "timings": [],
    }
    plan = [(s, "fp32") for s in sizes] + [(s, "bf16") for s in sizes]
    for size, precision in plan:
        t = epoch_seconds(x, y, size, precision, path)
        rec = {"input_size": size, "precision": precision, "seconds_per_epoch": t,
               "images_per_second": {k: round(n / v, 1) for k, v in t.items()},
               "vgg16_forward_gflops_per_image": round(vgg16_gflops(size), 3)}
        out["timings"].append(rec)
        log(f"[classifier] {size} px {precision}: head {t['head']:.2f} s/epoch, finetune {t['finetune']:.2f} s/epoch "
            f"({n} images)")
    by = {(r["input_size"], r["precision"]): r["seconds_per_epoch"] for r in out["timings"]}
    out["bf16_speedup"] = {str(s): {k: round(by[(s, "fp32")][k] / by[(s, "bf16")][k], 3) for k in ("head", "finetune")}
                           for s in sizes}
    out["size_cost_vs_64"] = {str(s): {k: round(by[(s, "fp32")][k] / by[(64, "fp32")][k], 3) for k in ("head", "finetune")}
                              for s in sizes}
    epochs = 1 if quick else 3
    acc_data = _data(64 if quick else 512)
    out["short_fit"] = {"epochs_per_stage": epochs, "n_train": int(len(acc_data["train"][1])),
                        "fp32": short_fit_accuracy(acc_data, "fp32", epochs, path),
                        "bf16": short_fit_accuracy(acc_data, "bf16", epochs, path)}
    log(f"[classifier] short fit accuracy: fp32 {out['short_fit']['fp32']['accuracy']:.4f}, "
        f"bf16 {out['short_fit']['bf16']['accuracy']:.4f}")
    out["load_average_after"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: run and write the JSON."""
    from cxr_utils.files import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--weights", default="auto", choices=["imagenet", "auto", "none"])
    ap.add_argument("--n-images", type=int, default=128, help="training images per timed epoch (default 128)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = run(quick=args.quick, weights=args.weights, n_images=args.n_images)
    res["quick"] = bool(args.quick)
    res["command"] = "python -m benchmarks.classifier " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.out:
        atomic_write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
