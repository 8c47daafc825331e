"""Command-line front: `python -m cxr_utils {prepare,train,sample,evaluate,metrics,study}`.

The whole command line lives here: argument parsing, and one small handler per subcommand that turns the
arguments into calls of plain, typed package functions (no domain module sees an argparse.Namespace). A UserError
becomes one line on stderr and exit status 2; any other failure exits 1.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import DEFAULT_RECIPE, RECIPES, smoke_mode
from .errors import TrainingDiverged, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every subcommand (each subcommand's arguments in its own function below)."""
    p = _Parser(prog="python -m cxr_utils", description="Conditional GAN for chest X-rays: prepare, train, sample, evaluate.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _prepare_args(sub.add_parser("prepare", help="build the cached dataset (.npz + manifest) from a source"))
    _train_args(sub.add_parser("train", help="train the conditional GAN into a run folder"))
    _sample_args(sub.add_parser("sample", help="export synthetic PNGs + manifest from a run's EMA generator"))
    _evaluate_args(sub.add_parser("evaluate", help="VGG16 protocols on the real test split"))
    _metrics_args(sub.add_parser("metrics", help="FID/KID/PRDC/memorization/label fidelity of a synthetic folder"))
    _study_args(sub.add_parser("study", help="what notebook 04 runs: every protocol, results.json, metrics.json, figures"))
    return p


def _prepare_args(s: argparse.ArgumentParser) -> None:
    """`prepare`: the source, the image size and the split rule of the cache."""
    s.add_argument("--source", default="auto", choices=["auto", "sample", "kaggle", "medmnist", "folder"])
    s.add_argument("--path", default=None, help="local archive (.zip), .npz or folder instead of downloading")
    s.add_argument("--size", type=int, default=64, choices=[32, 64, 128])
    s.add_argument("--out", default=None, help="output .npz (default: data/<source>-<size>.npz)")
    s.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    s.add_argument("--seed", type=int, default=0, help="seed of the grouped split")
    s.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    s.add_argument("--test-patients", default=None, choices=["series", "keep", "exclude"],
                   help="train/val images an official test image excludes: series (same patient number and diagnosis, "
                        "as Kaggle numbers each diagnosis apart; see README 'Data'), exclude (any shared patient number) "
                        "or keep (none); default: the rule the existing cache was built with, else series")


def _train_args(t: argparse.ArgumentParser) -> None:
    """`train`: the data, the run folder, the recipe and the GANConfig overrides."""
    t.add_argument("--data", required=True, help="cached dataset .npz from `prepare`")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--config", default=None, help="JSON file with GANConfig fields")
    t.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help=f"named GANConfig fields over the defaults or --config (default without --config: {DEFAULT_RECIPE}; "
                        "seed = the original ACGAN)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--deterministic", action="store_true", help="bit-identical CPU runs (slower)")
    t.add_argument("--jit", default=None, choices=["auto", "on", "off"],
                   help="XLA-compile the train step (auto: on for GPUs, off on CPU where it is slower)")
    t.add_argument("--checkpoint-every", type=int, default=None, help="epochs between checkpoints (default 1)")
    t.add_argument("--checkpoint-minutes", type=float, default=None,
                   help="but at most one checkpoint per this many minutes (default 5; 0: no limit)")
    t.add_argument("--sample-every", type=int, default=None, help="epochs between sample grids (default 10)")
    t.add_argument("--max-per-class", type=int, default=None, help="cap real training images per class")
    t.add_argument("--label-prior", default=None, choices=["data", "balanced"],
                   help="class prior of the generated labels in training (default data: the training labels' "
                        "frequencies; balanced: 1/K each, as runs before it; a resumed run keeps its own)")
    t.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check (same code path)")


def _sample_args(m: argparse.ArgumentParser) -> None:
    """`sample`: the run folder, how many PNGs per class and which generator."""
    m.add_argument("--run-dir", required=True)
    m.add_argument("--n-per-class", type=_counts, required=True,
                   help="PNGs per class: one count for every class, or one per class in class order (e.g. 2160,6200)")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--batch-size", type=int, default=256)
    m.add_argument("--which", default="best",
                   help="best (generator-best.keras, kept by the quality rule; the default), last (generator.keras), "
                        "or an epoch that has a checkpoint")


def _evaluate_args(e: argparse.ArgumentParser) -> None:
    """`evaluate`: one VGG16 protocol at one synthetic ratio."""
    e.add_argument("--data", required=True)
    e.add_argument("--synthetic", default=None, help="folder written by `sample` (needed by tstr/augment/pretrain)")
    e.add_argument("--protocol", default="tstr", choices=["trtr", "tstr", "augment", "pretrain"])
    e.add_argument("--synthetic-ratio", type=float, default=1.0,
                   help="synthetic images per class = this x that class's real training images (default 1; the first "
                        "ones of the folder in file order); paired differences from trtr: use `study`")
    e.add_argument("--weights", default="imagenet", choices=["imagenet", "none", "auto"])
    e.add_argument("--seeds", type=int, default=1)
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--input-size", type=int, default=None)
    e.add_argument("--bootstrap", type=int, default=None, help="test-set resamples (default 1000; 50 with --smoke)")
    _classifier_precision_args(e)
    e.add_argument("--smoke", action="store_true")
    e.add_argument("--out", required=True)


def _metrics_args(g: argparse.ArgumentParser) -> None:
    """`metrics`: the generative metrics of one synthetic folder."""
    g.add_argument("--data", required=True)
    g.add_argument("--synthetic", required=True)
    g.add_argument("--extractor", default="auto", choices=["auto", "inception", "vgg16", "domain", "random"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--smoke", action="store_true")
    g.add_argument("--out", required=True)


def _study_args(y: argparse.ArgumentParser) -> None:
    """`study`: every protocol, ratio and synthetic folder, as notebook 04."""
    y.add_argument("--data", required=True, help="cached dataset .npz the GAN was trained on")
    y.add_argument("--synthetic", required=True, nargs="+",
                   help="folder(s) written by `sample`: several (space- or comma-separated) are GAN runs with different "
                        "seeds, and the study reports the spread across them")
    y.add_argument("--protocols", default="trtr,tstr,augment,pretrain", help="comma-separated (default: all four)")
    y.add_argument("--synthetic-ratio", nargs="+", default=["1"],
                   help="synthetic images per class = R x that class's real training images; a list (e.g. 0,0.5,1,2) "
                        "runs the sweep and draws accuracy and AUC against R (default 1; ratio 0 of augment/pretrain "
                        "is trtr, not retrained)")
    y.add_argument("--weights", default=None, choices=["imagenet", "none", "auto"],
                   help="VGG16 start (default: auto, as notebook 04: ImageNet from Keras's file or the offline copy, else random init)")
    y.add_argument("--seeds", type=int, default=None,
                   help="classifier seeds per protocol (default: 3 on the full data set; 1 on a small source or with --smoke)")
    y.add_argument("--epochs", type=int, default=None, help="per stage (default: 10 + 10 with early stopping)")
    y.add_argument("--input-size", type=int, default=None, help="VGG16 input size (default 64; 32 with --smoke)")
    y.add_argument("--bootstrap", type=int, default=None, help="test-set resamples (default 1000; 50 with --smoke)")
    y.add_argument("--extractor", default="auto", choices=["auto", "inception", "vgg16", "domain", "random"])
    _classifier_precision_args(y)
    y.add_argument("--fresh", action="store_true",
                   help="delete the finished classifiers in OUT/entries first (default: a rerun with the same inputs "
                        "resumes, reusing them)")
    y.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check (same code path)")
    y.add_argument("--figures", default=None, help="figure folder (default: OUT/figures)")
    y.add_argument("--out", required=True, help="folder for results.json and metrics.json")


def _classifier_precision_args(p: argparse.ArgumentParser) -> None:
    """--precision and --deterministic of the VGG16 classifier (evaluate, study), as `train` has them for the GAN."""
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="classifier precision (default auto: fp16 mixed on GPUs of compute capability >= 7, bf16 mixed "
                        "on CPUs with AVX512-BF16 or AMX, else fp32; the output layer stays float32)")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-identical classifier fits on CPU (op determinism; auto precision becomes fp32; slower)")


def _counts(text: str) -> int | list[int]:
    """'16' -> 16, '2160,6200' -> [2160, 6200] (argparse type of --n-per-class)."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, or one per class separated by commas")
    return vals[0] if len(vals) == 1 else vals


def command_line(args: argparse.Namespace, sub: str) -> str:
    """The `python -m cxr_utils SUB ...` command equivalent to parsed args (recorded in the JSON it writes)."""
    parts = ["python", "-m", "cxr_utils", sub]
    for k, v in vars(args).items():
        if k == "command" or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, list):
            parts += [flag, ",".join(map(str, v))]
        else:
            parts += [flag, str(v)]
    return shlex.join(parts)


def _verbosity() -> int:
    """Keras fit logs: a progress bar on a terminal, one line per epoch in a log file."""
    return 2 if not os.isatty(1) else 1


def run_prepare(args: argparse.Namespace) -> int:
    """`prepare`: build or reuse the cache and print counts, source, skips and output path."""
    from . import data

    res = data.prepare_verbose(source=args.source, path=args.path, size=args.size, out=args.out, workers=args.workers,
                               seed=args.seed, force=args.force, progress=sys.stderr.isatty(),
                               test_patients=args.test_patients)
    ds = data.load(res.path)
    m = ds.manifest
    # the source used and why was already printed by prepare_verbose
    print(f"split policy: {m.get('split_policy', '?')}")
    print(data.counts_table(data.counts(ds)))
    skipped = m.get("skipped", [])
    print(f"skipped: {len(skipped)} file(s)")
    for s in skipped:
        print(f"  {s['path']}: {s['reason']}")
    print(data.patient_rule_line(m))
    rep = data.leakage_report(ds)
    print(f"audit: {rep['summary']}")
    for note in m.get("notes", []):
        print(f"note: {note}")
    print(f"{'built' if res.rebuilt else 'cache reused'}: {res.path} (+ {data.manifest_path(res.path).name})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """`train`: train_setup.assemble (config file or the run's saved config, recipe, --smoke sizes, flags, the data's
    plan), then fit.train_from_npz."""
    from .gan import fit, train_setup
    from .gan.run_folder import RunFolder

    run_dir = Path(args.run_dir)
    if args.recipe and args.resume and not args.config and RunFolder(run_dir).config.is_file():
        raise UserError(f"--recipe: {run_dir} is resumed with its saved config.json; drop --recipe (or start a new --run-dir)")
    fields = dict(epochs=args.epochs, batch_size=args.batch_size, precision=args.precision, seed=args.seed,
                  max_per_class=args.max_per_class, label_prior=args.label_prior,
                  deterministic=True if args.deterministic else None, jit=args.jit,
                  checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
                  sample_every=args.sample_every)
    setup = train_setup.assemble(args.data, run_dir, args.recipe, fields, config_file=args.config,
                                 smoke=args.smoke, resume=args.resume)
    if setup.planned:
        print(f"note: {setup.describe()}", file=sys.stderr)
    cfg = setup.cfg
    out = fit.train_from_npz(args.data, run_dir, cfg, resume=args.resume)
    m = out["metrics"]
    print(f"trained {run_dir}: epoch {m.get('epoch', out['epochs'])}/{out['epochs']}, step {out['step']}, "
          f"{out['precision']}, d_loss {m.get('d_loss', float('nan')):.4f}, g_loss {m.get('g_loss', float('nan')):.4f}; "
          f"generator: {out['generator']}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """`sample`: export PNGs + manifest and print where they went."""
    from .evaluation import synthetic

    t0 = time.perf_counter()
    out = synthetic.export(args.run_dir, args.n_per_class, args.out, seed=args.seed, batch_size=args.batch_size,
                           which=args.which)
    dt = time.perf_counter() - t0
    rows = synthetic.read_manifest(out)
    n = len(rows)
    print(f"generator: {(rows or [{}])[0].get('generator', '?')}")
    print(f"wrote {n} synthetic PNGs + {synthetic.MANIFEST_NAME} to {out} in {dt:.1f} s "
          f"({n / max(dt, 1e-9):.0f} img/s, model load included)")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """`evaluate`: one protocol, results JSON written atomically."""
    from .evaluation import classifier, protocols, tables

    smoke = bool(args.smoke or smoke_mode())
    cfg = classifier.eval_config(smoke, args.epochs, args.input_size, args.bootstrap, precision=args.precision,
                                 deterministic=True if args.deterministic else None)
    options = protocols.RunOptions(weights=args.weights, seeds=args.seeds, cfg=cfg, verbose=_verbosity())
    res = protocols.evaluate(args.data, args.protocol, args.synthetic, ratio=args.synthetic_ratio, out=args.out,
                             extra={"command": command_line(args, "evaluate"), "smoke": smoke}, options=options)
    for note in res["notes"]:
        print(note)
    print(tables.summary_line(res))
    print(f"wrote {args.out} (weights: {res['weights']})")
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """`metrics`: write generative metrics JSON for a synthetic folder."""
    from .evaluation import folder_metrics

    res = folder_metrics.run_metrics(args.data, args.synthetic, extractor=args.extractor, seed=args.seed,
                                    smoke=bool(args.smoke or smoke_mode()), out=args.out,
                                    command=command_line(args, "metrics"))
    for note in res["notes"]:
        print(note)
    for ex, entry in res["extractors"].items():
        o = entry["overall"]
        fid_txt = f"{o['fid']:.3f}" if o.get("fid") is not None else "n/a"
        per = ", ".join(f"{c} {m['n_real']} real / {m['n_synthetic']} synthetic" for c, m in entry["per_class"].items())
        kid_txt = f"{o['kid_mean']:.4f}" if o.get("kid_mean") is not None else "n/a"
        print(f"[{ex}] FID {fid_txt}  KID {kid_txt}  PRDC {o.get('prdc')}  "
              f"(images per class: {per})")
        for w in [o.get("fid_note"), *(o.get("fid_warnings") or [])]:
            if w:
                print(f"  note: {w}")
    lf = res["label_fidelity"]
    print(f"label fidelity ({lf['classifier']}): {lf['overall']:.3f}")
    print(f"wrote {Path(args.out)}")
    return 0


def run_study(args: argparse.Namespace) -> int:
    """`study`: the whole notebook-04 evaluation through study.run_study."""
    from .evaluation import study
    from .evaluation.tables import summary_line

    smoke = bool(args.smoke or smoke_mode())
    res = study.run_study(args.data, args.synthetic, args.out, protocols=args.protocols,
                          weights=args.weights or "auto",
                          seeds=args.seeds, epochs=args.epochs,
                          input_size=args.input_size, bootstrap=args.bootstrap, extractor=args.extractor, smoke=smoke,
                          figures_dir=args.figures, verbose=_verbosity(), command=command_line(args, "study"),
                          ratios=args.synthetic_ratio, precision=args.precision,
                          deterministic=True if args.deterministic else None, fresh=args.fresh)
    print("\n".join(summary_line(r) for r in res.results))
    print(f"wrote {res.results_json}, {res.metrics_json} and {len(res.figures)} figures in "
          f"{next(iter(res.figures.values())).parent}")
    return 0


# subcommand -> handler; each imports its domain module when called, so `--help` stays fast and TF loads only when needed
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": run_prepare, "train": run_train, "sample": run_sample,
    "evaluate": run_evaluate, "metrics": run_metrics, "study": run_study,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and map errors to exit statuses (2 user error, 1 internal failure)."""
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only folder, ...: the machine's problem, not a bug; say what to do
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check that the folder exists and is writable"
        print(f"error: cannot write{where}: {e.strerror or e} ({hint}, then rerun)",
              file=sys.stderr)
        return 1
    except Exception as e:  # internal failure: one line by default, the traceback on request
        if os.environ.get("CXR_DEBUG") == "1":
            raise
        print(f"internal error: {type(e).__name__}: {e} (set CXR_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
