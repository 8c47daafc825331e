"""Command-line front: `python -m cxr_utils {prepare,train,sample,evaluate,metrics,study}`.

Each subcommand is a thin wrapper over a function in the matching module. A UserError
becomes one line on stderr and exit status 2; any other failure exits 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from .config import DEFAULT_RECIPE, RECIPES
from .errors import TrainingDiverged, UserError

# subcommand -> (module, function); imported lazily so `--help` stays fast and TF loads only when needed
COMMANDS = {
    "prepare": ("cxr_utils.data", "cli_prepare"),
    "train": ("cxr_utils.train", "cli_train"),
    "sample": ("cxr_utils.sample", "cli_sample"),
    "evaluate": ("cxr_utils.evaluation", "cli_evaluate"),
    "metrics": ("cxr_utils.metrics", "cli_metrics"),
    "study": ("cxr_utils.cli", "cli_study"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree for every subcommand."""
    p = _Parser(prog="python -m cxr_utils", description="Conditional GAN for chest X-rays: prepare, train, sample, evaluate.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("prepare", help="build the cached dataset (.npz + manifest) from a source")
    s.add_argument("--source", default="auto", choices=["auto", "sample", "kaggle", "medmnist", "folder"])
    s.add_argument("--path", default=None, help="local archive (.zip), .npz or folder instead of downloading")
    s.add_argument("--size", type=int, default=64, choices=[32, 64, 128])
    s.add_argument("--out", default=None, help="output .npz (default: data/<source>-<size>.npz)")
    s.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    s.add_argument("--seed", type=int, default=0, help="seed of the grouped split")
    s.add_argument("--force", action="store_true", help="rebuild even if the cache is current")

    t = sub.add_parser("train", help="train the conditional GAN into a run folder")
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
    t.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check (same code path)")

    m = sub.add_parser("sample", help="export synthetic PNGs + manifest from a run's EMA generator")
    m.add_argument("--run-dir", required=True)
    m.add_argument("--n-per-class", type=int, required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--batch-size", type=int, default=256)
    m.add_argument("--which", default="best",
                   help="best (generator-best.keras, kept by the quality rule; the default), last (generator.keras), "
                        "or an epoch that has a checkpoint")

    e = sub.add_parser("evaluate", help="VGG16 protocols on the real test split")
    e.add_argument("--data", required=True)
    e.add_argument("--synthetic", default=None, help="folder written by `sample` (needed by tstr/augment/pretrain)")
    e.add_argument("--protocol", default="tstr", choices=["trtr", "tstr", "augment", "pretrain"])
    e.add_argument("--weights", default="imagenet", choices=["imagenet", "none", "auto"])
    e.add_argument("--seeds", type=int, default=1)
    e.add_argument("--epochs", type=int, default=None)
    e.add_argument("--input-size", type=int, default=None)
    e.add_argument("--bootstrap", type=int, default=None, help="test-set resamples (default 1000; 50 with --smoke)")
    e.add_argument("--smoke", action="store_true")
    e.add_argument("--out", required=True)

    g = sub.add_parser("metrics", help="FID/KID/PRDC/memorization/label fidelity of a synthetic folder")
    g.add_argument("--data", required=True)
    g.add_argument("--synthetic", required=True)
    g.add_argument("--extractor", default="auto", choices=["auto", "inception", "domain", "random"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--smoke", action="store_true")
    g.add_argument("--out", required=True)

    y = sub.add_parser("study", help="what notebook 04 runs: every protocol, results.json, metrics.json, figures")
    y.add_argument("--data", required=True, help="cached dataset .npz the GAN was trained on")
    y.add_argument("--synthetic", required=True, help="folder written by `sample`")
    y.add_argument("--protocols", default="trtr,tstr,augment,pretrain", help="comma-separated (default: all four)")
    y.add_argument("--weights", default=None, choices=["imagenet", "none", "auto"],
                   help="VGG16 start (default: auto; none with --smoke, as notebook 04)")
    y.add_argument("--seeds", type=int, default=None,
                   help="classifier seeds per protocol (default: 3 on the full data set; 1 on a small source or with --smoke)")
    y.add_argument("--epochs", type=int, default=None, help="per stage (default: 10 + 10 with early stopping)")
    y.add_argument("--input-size", type=int, default=None, help="VGG16 input size (default 64; 32 with --smoke)")
    y.add_argument("--bootstrap", type=int, default=None, help="test-set resamples (default 1000; 50 with --smoke)")
    y.add_argument("--extractor", default="auto", choices=["auto", "inception", "domain", "random"])
    y.add_argument("--smoke", action="store_true", help="tiny sizes for a quick check (same code path)")
    y.add_argument("--figures", default=None, help="figure folder (default: OUT/figures)")
    y.add_argument("--out", required=True, help="folder for results.json and metrics.json")
    return p


def cli_study(args: argparse.Namespace) -> int:
    """`python -m cxr_utils study`: the whole notebook-04 evaluation through study.run_study."""
    from .config import SMOKE
    from .evaluation import command_line, summary_line
    from .study import run_study

    smoke = bool(args.smoke or SMOKE)
    res = run_study(args.data, args.synthetic, args.out, protocols=args.protocols,
                    weights=args.weights or ("none" if smoke else "auto"),
                    seeds=args.seeds, epochs=args.epochs,
                    input_size=args.input_size, bootstrap=args.bootstrap, extractor=args.extractor, smoke=smoke,
                    figures_dir=args.figures, verbose=2 if not os.isatty(1) else 1,
                    command=command_line(args, "study"))
    print("\n".join(summary_line(r) for r in res.results))
    print(f"wrote {res.results_json}, {res.metrics_json} and {len(res.figures)} figures in "
          f"{next(iter(res.figures.values())).parent}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, dispatch, and map errors to exit statuses (2 user error, 1 internal failure)."""
    args = build_parser().parse_args(argv)
    module_name, func_name = COMMANDS[args.command]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
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
