"""`python -m benchmarks [--quick] [--out FILE.json]`: every performance number of issue 5, measured in one run.

Sections: a. data preparation vs Keras, b. the GAN train step (fp32 vs bf16, FLOPs, fraction of the matmul peak,
input-pipeline overhead), c. PNG export, d. digits TSTR against wall-clock time, e. `make test` stage times,
f. the cost of quality tracking, g. time to quality before / after issue 14 (read from benchmarks/time_to_quality.py's JSON),
h. without --quick: the full-scale rehearsal (benchmarks/rehearsal.py, a LOAD TEST; it writes its own
assets/results/rehearsal.json, and this JSON keeps its totals).
Each ratio is stored next to its target with a met flag; a section that fails records its error and the rest go on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cxr_utils.config import project_root  # noqa: E402
from cxr_utils.errors import UserError  # noqa: E402
from cxr_utils.files import atomic_write_json, read_json  # noqa: E402

SECTIONS = ("prep", "train", "export", "digits", "xray", "time_to_quality", "make_test", "rehearsal")
TARGET_MAKE_TEST_SECONDS = 600.0
TARGET_QUICK_SECONDS = 300.0


def _section(result: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one section; record its output and wall time, or its error (never silently dropped)."""
    t0 = time.perf_counter()
    print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
    try:
        out = fn()
    except Exception as e:  # a failing section must not hide the others; its error is in the JSON
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
    out["section_seconds"] = time.perf_counter() - t0
    result[name] = out
    print(f"[benchmarks] {name} done in {out['section_seconds']:.0f} s" + (f" (error: {out['error']})" if "error" in out else ""),
          file=sys.stderr, flush=True)


def measure_peaks(best: dict[str, dict[str, Any]], n: int = 2048, repeats: int = 3) -> dict[str, dict[str, Any]]:
    """Measure fp32 and bf16 matmul peaks now; keep the best seen so far per dtype (updated in place)."""
    from .machine import matmul_peak

    for dtype in ("float32", "bfloat16"):
        r = matmul_peak(dtype, n, repeats)
        old = best.get(dtype)
        r["measurements"] = (old["measurements"] if old else 0) + 1
        if old is None or r["flops_per_second"] > old["flops_per_second"]:
            best[dtype] = r
        else:
            old["measurements"] = r["measurements"]
    return best


def digits_section(quick: bool, json_path: str | None, budget: float) -> dict[str, Any]:
    """Quality against time: the digits TSTR curve from a JSON the digits benchmark wrote, or a short run here."""
    from . import digits_tstr

    root = project_root()
    found = glob.glob(str(root / "assets" / "results" / "digits_tstr-seed*.json")) + glob.glob(str(root / "runs" / "digits" / "*.json"))
    candidates = [json_path] if json_path else sorted(found, key=os.path.getmtime, reverse=True)
    for c in candidates:
        if c and Path(c).is_file():
            d = read_json(c)
            if isinstance(d, dict) and "curve" in d:
                return {"source": f"read from {_shown(Path(c))}", **_digits_summary(d)}
    if json_path:
        raise UserError(f"--digits-json {json_path}: not found or has no 'curve'; run benchmarks/digits_tstr.py --out FILE first")

    # digits_tstr's own --quick plan, cut off at the budget: a short run, labelled as such (not the 10-minute target run)
    plan = digits_tstr.Plan(steps=400 if quick else 1500, chunks=4 if quick else 5, n_per_class=100 if quick else 300,
                            budget_seconds=budget)
    d = digits_tstr.run(seed=0, plan=plan)
    return {"source": f"ran here: digits_tstr.run(seed=0, {plan})", "short_run": quick, **_digits_summary(d)}


def _shown(path: Path) -> Path:
    """A path as the report names it: relative to the project when inside it."""
    root = project_root()
    return path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path


def _digits_summary(d: dict[str, Any]) -> dict[str, Any]:
    """The figures of a digits_tstr result the report shows."""
    return {k: d.get(k) for k in ("tstr", "trtr", "ratio", "seconds", "steps", "seed", "curve")}


def xray_section(quick: bool) -> dict[str, Any]:
    """The cost of one quality evaluation at full-scale sizes against the training between two (issue 10's <= 10 %;
    benchmarks/quality_bars.py); the recipe table itself comes from benchmarks/xray_recipes.py."""
    from . import quality_bars

    return {"quality_cost": quality_bars.quality_cost(repeats=2 if quick else 3)}


def time_to_quality_section(path: Path) -> dict[str, Any]:
    """Issue 14's time to quality before / after, from the JSON benchmarks/time_to_quality.py wrote (it trains eight
    generators, about 35 minutes: too long for --quick), or 'not measured yet'."""
    if not path.is_file():
        return {"note": f"not measured yet ({path.name} does not exist; run python -m benchmarks.time_to_quality "
                        f"--out {_shown(path)})"}
    d = read_json(path)
    return {"source": f"read from {_shown(path)}", **{k: d.get(k) for k in ("seeds", "before", "command", "quick")},
            **{b: {k: v for k, v in d[b].items() if k != "runs"} for b in ("digits", "xray") if b in d}}


def make_test_section(path: Path) -> dict[str, Any]:
    """`make test` stage wall times recorded by scripts/timed.py, or 'not measured yet'."""
    if not path.is_file():
        return {"measured": False, "note": f"not measured yet ({path} does not exist; run `make test`)"}
    stages = read_json(path)
    total = sum(float(v.get("seconds", 0.0)) for v in stages.values())
    return {"measured": True, "file": str(path), "stages": stages, "total_seconds": total,
            "ratios": {"make_test_seconds": {"value": total, "target": TARGET_MAKE_TEST_SECONDS,
                                             "met": total < TARGET_MAKE_TEST_SECONDS, "lower_is_better": True}}}


def rehearsal_section(work: Path, out: Path) -> dict[str, Any]:
    """The full-scale LOAD TEST (benchmarks/rehearsal.py): its JSON written to `out`, its per-stage totals kept here."""
    from . import rehearsal

    d = rehearsal.run(work)
    atomic_write_json(out, _jsonable(d))
    return {"json": str(_shown(out)), "load_test": d["load_test"], "ok": d["ok"], "total_seconds": d["total_seconds"],
            "stages": {k: {"seconds": v["seconds"], "peak_rss_mib": v["peak_rss_mib"]} for k, v in d["stages"].items()}}


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds and images (under 5 minutes on 2 cores)")
    p.add_argument("--out", default=None, help="JSON file (default runs/benchmarks/benchmarks[-quick].json)")
    p.add_argument("--work-dir", default=None, help="scratch folder (default runs/benchmarks/work)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--digits-json", default=None, help="digits_tstr.py output to read (default: newest assets/results/digits_tstr-seed*.json or runs/digits/*.json)")
    p.add_argument("--n-files", type=int, default=600, help="JPEG files in the preparation benchmark folder (>= 600)")
    p.add_argument("--device-report", action="store_true",
                   help="only the device report (what the trainer chooses here and its step time; "
                        "benchmarks/device_report.py; takes --out, --no-measure, --rounds)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections, write the JSON atomically, print the markdown table."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--device-report" in argv:
        from . import device_report

        return device_report.main(argv)
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"error: --sections {','.join(unknown)}: unknown; choose from {','.join(SECTIONS)}", file=sys.stderr)
        return 2
    root = project_root()
    out = Path(args.out) if args.out else root / "runs" / "benchmarks" / ("benchmarks-quick.json" if args.quick else "benchmarks.json")
    work = Path(args.work_dir) if args.work_dir else root / "runs" / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "cxr-cgan performance (issue 5)", "quick": args.quick,
                              "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": "python -m benchmarks" + (" --quick" if args.quick else "")}
    try:
        # a. first: its cxr_utils contenders run in fresh processes, its Keras contender loads TensorFlow here
        if "prep" in sections:
            from . import prep

            _section(result, "prep", lambda: prep.run(work / "prep", quick=args.quick, n_files=max(600, args.n_files)))
        from .machine import machine_info

        result["machine"] = machine_info()
        peaks: dict[str, dict[str, Any]] = {}
        prep_npz = work / "prep" / "all.npz"
        real_npz = prep_npz if prep_npz.is_file() else None
        if "train" in sections:
            from . import train_step

            def train_run() -> dict[str, Any]:
                measure_peaks(peaks)
                r = train_step.run(peaks, real_npz, quick=args.quick, info=result["machine"],
                                   between_rounds=lambda: measure_peaks(peaks))
                if real_npz is None:
                    r["real_pipeline_note"] = "not measured: the preparation section built no real cache"
                # the loop around the step on notebook 02's default run (the 10-image sample), and before/after issue 11
                from cxr_utils import data

                sample = data.prepare(source="sample", size=64, progress=False)
                r["loop"] = train_step.loop(sample, work / "loop", jit=True)
                r["before_after"] = train_step.before_after()
                return r

            _section(result, "train", train_run)
        else:
            measure_peaks(peaks)
        result["matmul_peak"] = peaks
        if "export" in sections:
            from . import export

            _section(result, "export", lambda: export.run(work / "export", quick=args.quick))
        if "digits" in sections:
            _section(result, "digits", lambda: digits_section(args.quick, args.digits_json, 30.0 if args.quick else 600.0))
        if "xray" in sections:
            _section(result, "xray", lambda: xray_section(args.quick))
        if "time_to_quality" in sections:
            _section(result, "time_to_quality",
                     lambda: time_to_quality_section(root / "assets" / "results" / "time_to_quality.json"))
        if "make_test" in sections:
            _section(result, "make_test", lambda: make_test_section(root / "runs" / "make-test" / "timings.json"))
        if "rehearsal" in sections and not args.quick:  # about 30 minutes: never in --quick
            _section(result, "rehearsal", lambda: rehearsal_section(work / "rehearsal",
                                                                     root / "assets" / "results" / "rehearsal.json"))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t_start
    result["total_seconds"] = total
    if args.quick:
        result["quick_ratio"] = {"value": total, "target": TARGET_QUICK_SECONDS, "met": total < TARGET_QUICK_SECONDS,
                                 "lower_is_better": True}
    atomic_write_json(out, _jsonable(result))
    from .report import performance_markdown

    print(performance_markdown(out))
    print(f"\n[benchmarks] wrote {out} in {total:.0f} s", file=sys.stderr)
    return 0


def _jsonable(x: Any) -> Any:
    """Plain JSON types (numpy scalars -> Python, NaN/inf -> None: JSON has neither)."""
    import math

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


if __name__ == "__main__":
    sys.exit(main())
