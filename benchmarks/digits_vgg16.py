"""The seed's protocol on real digits: VGG16 (ImageNet) fine-tuned on GAN-generated digits, tested on real ones.

The GAN part is benchmarks/digits_tstr.py's `run` as it is (the same split, the generator kept by validation TSTR, its
class-balanced PNGs exported and read back); its logistic-regression TSTR/TRTR are reported beside. Then the project's
own VGG16 classifier (`classifier.fit_classifier`: the two-stage fine-tuning of the X-ray protocols with a 10-way
softmax head) is trained on the synthetic digits (TSTR) and on the real digits the GAN saw (TRTR), early-stopped on
the real validation part, and tested once on the real held-out 30 %. ImageNet weights (Keras's file or the verified
offline copy, named in the JSON) and random init side by side show what the ImageNet start buys.

Input size: the digits are 8x8 upsampled to 16 px for the GAN; VGG16 needs at least 32 px (five 2x2 poolings), and 32
is where its five blocks still see a digit stroke as a few pixels (64 px costs 4x the compute for the same 8x8 of
information). See `--input-size`.

    python benchmarks/digits_vgg16.py --seed 0 --out assets/results/digits_vgg16.json
    python benchmarks/digits_vgg16.py --quick      # a pipeline check: short GAN, 1 + 1 classifier epochs
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

WEIGHTS = ("imagenet", "none")
INPUT_SIZE = 32


def vgg16_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], cfg: Any, weights_path: Path | None, seed: int,
                   name: str) -> dict[str, Any]:
    """Train the project's VGG16 classifier (10-way) on `train`, early-stopped on `val`; its accuracy on `test`."""
    import keras

    from cxr_utils.evaluation import classifier

    t0 = time.perf_counter()
    model, stages = classifier.fit_classifier([(name, classifier.to_vgg_input(train[0]), train[1])],
                                              (classifier.to_vgg_input(val[0]), val[1].astype(np.float32)),
                                              cfg, weights_path, num_classes=10, seed=seed)
    pred = model.predict(classifier.to_vgg_input(test[0]), batch_size=256, verbose=0).argmax(axis=1)
    val_pred = model.predict(classifier.to_vgg_input(val[0]), batch_size=256, verbose=0).argmax(axis=1)
    keras.backend.clear_session()
    return {"accuracy": float((pred == test[1]).mean()), "val_accuracy": float((val_pred == val[1]).mean()),
            "epochs_run": {s["stage"]: s["epochs_run"] for s in stages}, "seconds": round(time.perf_counter() - t0, 1)}


def run(seed: int = 0, plan: Any = None, input_size: int = INPUT_SIZE, epochs: int | None = None,
        work: Path | None = None, weights: tuple[str, ...] = WEIGHTS, log: Any = print) -> dict[str, Any]:
    """Train the digits GAN (digits_tstr.run), then VGG16 TSTR and TRTR per weights; the JSON-ready result."""
    from benchmarks import digits_tstr as D
    from cxr_utils.evaluation import classifier, synthetic
    from cxr_utils.metrics import imagenet

    cfg = classifier.eval_config(False, epochs=epochs, input_size=input_size)
    resolved = {w: classifier.resolve_weights(w, log=log) for w in weights}  # first: a missing copy fails before any work
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="digits-vgg16-")) if own else Path(work)
    t0 = time.perf_counter()
    try:
        gan = D.run(seed, plan, work / "digits", progress=True)
        size = gan["size"]
        syn = synthetic.load_synthetic(work / "digits" / "synthetic", expected_size=size, class_names=D.DIGIT_NAMES)
        xtr, ytr, xte, yte = D.digits_split(size)
        xfit, yfit, xval, yval = D.fit_val_split(xtr, ytr)
        vgg: dict[str, Any] = {}
        for w, (path, label, note) in resolved.items():
            entry: dict[str, Any] = {"weights": label, "weights_source": imagenet.weights_source(path),
                                     "model": imagenet.model_tag(path), "note": note}
            for proto, train in (("tstr", syn), ("trtr", (xfit, yfit))):
                log(f"[digits-vgg16] {entry['model']}: {proto} on {len(train[1])} images ...")
                entry[proto] = vgg16_accuracy(train, (xval, yval), (xte, yte), cfg, path, seed, proto)
                log(f"[digits-vgg16] {entry['model']}: {proto} test accuracy {entry[proto]['accuracy']:.4f} "
                    f"({entry[proto]['seconds']:.0f} s)")
            entry["ratio"] = entry["tstr"]["accuracy"] / entry["trtr"]["accuracy"]
            vgg[w] = entry
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "digits_vgg16",
        "protocol": "the seed's: VGG16 fine-tuned on GAN-generated digits (TSTR), tested on the real held-out 30 %; "
                    "TRTR trains the same classifier on the real digits the GAN trained on",
        "data": gan["data"], "n_train_real": gan["n_train_real"], "n_val_real": gan["n_val_real"],
        "n_test_real": gan["n_test_real"], "n_synthetic": int(len(syn[1])), "size": size, "seed": seed,
        "classifier": f"cxr_utils.evaluation.classifier VGG16 (include_top=False, input {input_size} px, GAP, Dense {cfg.head_units}, "
                      f"10-way softmax), head {cfg.epochs_head} epochs on a frozen base then block5 {cfg.epochs_finetune} "
                      f"epochs, early stopping on the real validation part (patience {cfg.patience})",
        "input_size": input_size, "eval_config": dataclasses.asdict(cfg),
        "vgg16": vgg,
        "logistic_regression": {"tstr": gan["tstr"], "trtr": gan["trtr"], "ratio": gan["ratio"],
                                "classifier": gan["classifier"]},
        "gan": {k: gan[k] for k in ("selected_step", "selected_epoch", "selected_tstr_val", "steps", "train_seconds",
                                    "seconds", "config")},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: run the benchmark and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="GAN and classifier seed (the data split is fixed)")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    ap.add_argument("--input-size", type=int, default=INPUT_SIZE, help="VGG16 input size (>= 32)")
    ap.add_argument("--epochs", type=int, default=None, help="classifier epochs per stage (default: EvalConfig's 10 + 10)")
    ap.add_argument("--quick", action="store_true", help="pipeline check: 500 GAN steps, 1 + 1 classifier epochs")
    ap.add_argument("--work-dir", default=None, help="keep the GAN run and PNGs here (default: temp, deleted)")
    args = ap.parse_args(argv)
    from benchmarks.digits_tstr import Plan
    from benchmarks.machine import machine_info
    from cxr_utils.errors import UserError
    from cxr_utils.files import atomic_write_json

    plan = Plan()
    epochs = args.epochs
    if args.quick:
        plan.steps, plan.chunks, epochs = 500, 1, 1
    try:
        res = run(args.seed, plan, args.input_size, epochs, Path(args.work_dir) if args.work_dir else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res.update(quick=bool(args.quick), machine=machine_info(),
               command="python benchmarks/digits_vgg16.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.out:
        atomic_write_json(args.out, res)
    for e in res["vgg16"].values():
        print(f"{e['model']}: TSTR {e['tstr']['accuracy']:.4f}  TRTR {e['trtr']['accuracy']:.4f}  ratio {e['ratio']:.4f}")
    lr = res["logistic_regression"]
    print(f"logistic regression: TSTR {lr['tstr']:.4f}  TRTR {lr['trtr']:.4f}  ratio {lr['ratio']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
