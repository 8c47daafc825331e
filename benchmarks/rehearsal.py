"""`python -m benchmarks.rehearsal [--scale S]`: a LOAD TEST of the four notebooks' work at the Kaggle set's size.

Builds a Kaggle-shaped tree of 5,856 JPEGs from the 16 sample X-rays (benchmarks/rehearsal_tree.py: seeded crops,
flips, rotations, brightness and resizes; a LOAD TEST that says nothing about image quality, never data), then runs
each stage in its own child process through the real CLI and records its seconds, peak memory and file counts:
  1. `prepare --source folder --path TREE/chest_xray` at 64 px (notebook 01; the code path of an extracted Kaggle tree),
  2. `train --epochs 1 --batch-size 64`: one epoch of the default recipe with its quality evaluation (notebook 02),
  3. `sample` at notebook 03's export size (review.export_size: 2 x real per class),
  4. `study` in smoke sizes (CXR_SMOKE=1 for this stage only) on that export (notebook 04),
  5. FLOPs of one GAN step and of one classifier epoch (benchmarks/rehearsal_estimate.py), for the per-GPU ESTIMATES.
Writes assets/results/rehearsal.json at --scale 1 (else runs/rehearsal/rehearsal-scale<S>.json); the work folder
(runs/rehearsal/ by default) is never in git.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cxr_utils.config import project_root
from cxr_utils.files import atomic_write_json, read_json
from cxr_utils.gan.run_folder import RunFolder

from .rehearsal_tree import LOAD_TEST

STAGES = ("tree", "prepare", "train", "export", "study", "flops")
GROWTH = {
    "tree": "files and megapixels (JPEG encoding): linear in the number of files",
    "prepare": "JPEG decoding: linear in files x megapixels (2 worker processes here); the cache itself is small "
               "(N x 64 x 64 bytes)",
    "train": "steps per epoch = training images / 64; the quality evaluation trains its domain classifier on the "
             "training images and scores 128 synthetic images per class (fixed)",
    "export": "PNGs = 2 x real training images per class (notebook 03's EXPORT_RATIO)",
    "study": "classifier image-epochs: real training images x (1 + synthetic ratio) per protocol, x seeds; the "
             "synthetic folder is read whole",
    "flops": "fixed (one traced step of each model)",
}


def machine_state() -> dict[str, Any]:
    """CPU model (lscpu), cores and the load average now (`uptime`)."""
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        pass
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        up = ""
    return {"cpu": model, "cores": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()],
            "uptime": up, "utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}


def run_child(cmd: list[str], log: Path, env: dict[str, str] | None = None, poll: float = 0.5) -> dict[str, Any]:
    """Run one stage as a child process (output to `log`); its wall seconds, exit status and peak memory: the
    largest single process (wait4's ru_maxrss, the child and the descendants it waited for) and, sampled every
    `poll` s with psutil, the peak RSS summed over the child and its worker processes."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             cwd=project_root())
        tree_peak = 0
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            try:
                proc = psutil.Process(p.pid)
                tree_peak = max(tree_peak, sum(q.memory_info().rss for q in [proc, *proc.children(recursive=True)]
                                               if q.is_running()))
            except psutil.Error:  # a process ended between the listing and the reading
                pass
            time.sleep(poll)
        p.returncode = os.waitstatus_to_exitcode(status)
    out = {"command": " ".join(_shown(c) for c in cmd), "seconds": time.perf_counter() - t0,
           "exit_status": p.returncode, "peak_rss_mib": usage.ru_maxrss / 1024,
           "peak_rss_all_processes_mib": tree_peak / 2**20, "log": _shown(str(log))}
    if env:
        out["env"] = {k: _shown(v) for k, v in env.items()}
    if p.returncode != 0:
        out["error_tail"] = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
    return out


def _shown(text: str) -> str:
    """An argument as the report shows it: paths inside the project relative to it, the interpreter as `python`."""
    if text == sys.executable:
        return "python"
    root = str(project_root()) + os.sep
    return text.replace(root, "")


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def export_counts(npz: Path) -> list[int]:
    """Notebook 03's export size for the cache's training split (review.export_size at its default ratio)."""
    from cxr_utils import data
    from cxr_utils.evaluation import checks as review

    _, labels = data.load(npz).subset("train")
    return review.export_size(None, labels, 2)


def run(work: Path, scale: float = 1.0, seed: int = 0, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Every stage in turn (a failed stage stops the ones that need its output); the assembled report."""
    from cxr_utils import data

    work.mkdir(parents=True, exist_ok=True)
    (work / "LOAD_TEST.txt").write_text(LOAD_TEST + "\n", encoding="utf-8")
    tree, npz, run_dir = work / "tree", work / "data" / "loadtest-64.npz", work / "run"
    syn, study_dir, logs = work / "synthetic", work / "study", work / "logs"
    env = {"CXR_DATA_DIR": str(work / "data"), "CXR_RAW_DIR": str(work / "raw"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = machine_state()
    print(f"[rehearsal] {LOAD_TEST}; scale {scale}, seed {seed}, work {work}; {start['cpu']}, load {start['load_average']}",
          file=sys.stderr, flush=True)
    res: dict[str, dict[str, Any]] = {}

    def stage(name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> bool:
        if name not in stages:
            return True
        print(f"[rehearsal] {name}: {' '.join(_shown(c) for c in cmd)}", file=sys.stderr, flush=True)
        res[name] = run_child(cmd, logs / f"{name}.log", {**env, **(extra_env or {})})
        r = res[name]
        print(f"[rehearsal] {name}: {r['seconds']:.0f} s, exit {r['exit_status']}, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(all processes {r['peak_rss_all_processes_mib']:.0f} MiB)", file=sys.stderr, flush=True)
        return r["exit_status"] == 0

    ok = stage("tree", _py("-m", "benchmarks.rehearsal_tree", "--out", str(tree), "--scale", str(scale), "--seed", str(seed),
                           "--sources", str(data.fetch_sample())))
    if ok and "tree" in res:
        res["tree"]["spec"] = read_json(tree / "LOAD_TEST.json")
        res["tree"]["files"] = res["tree"]["spec"]["files"]
    ok = ok and stage("prepare", _py("-m", "cxr_utils", "prepare", "--source", "folder", "--path", str(tree / "chest_xray"),
                                     "--size", "64", "--out", str(npz), "--force"))
    if ok and "prepare" in res:
        ds = data.load(npz)
        m = ds.manifest
        res["prepare"].update(files=res["tree"]["files"] if "tree" in res else None, images=len(ds),
                              counts=data.counts(ds), excluded=len(m.get("excluded", [])),
                              skipped=len(m.get("skipped", [])), cache_bytes=npz.stat().st_size)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: `train` refuses a folder that holds one
    ok = ok and stage("train", _py("-m", "cxr_utils", "train", "--data", str(npz), "--run-dir", str(run_dir),
                                   "--epochs", "1", "--batch-size", "64"))
    if ok and "train" in res:
        res["train"].update(_train_counts(run_dir))
    if ok and "export" in stages:
        n_export = export_counts(npz)
        which = "best" if RunFolder(run_dir).best_generator.is_file() else "last"
        ok = stage("export", _py("-m", "cxr_utils", "sample", "--run-dir", str(run_dir), "--n-per-class",
                                 ",".join(map(str, n_export)), "--out", str(syn), "--which", which))
        if ok:
            res["export"].update(images=sum(n_export), per_class=n_export, which=which,
                                 pngs=sum(1 for _ in syn.rglob("*.png")))
    ok = ok and stage("study", _py("-m", "cxr_utils", "study", "--data", str(npz), "--synthetic", str(syn),
                                   "--out", str(study_dir)), {"CXR_SMOKE": "1"})
    if ok and "study" in res:
        res["study"].update(smoke="CXR_SMOKE=1 for this stage only: 1 seed, 1 + 1 epochs, VGG16 input 32 px, "
                                  "50 bootstrap resamples",
                            synthetic_images=sum(1 for _ in syn.rglob("*.png")),
                            **_study_counts(study_dir))
    n_train = (res.get("train") or {}).get("images")
    if n_train:  # notebook 02's default plan needs the training images the grouped split left
        stage("flops", _py("-m", "benchmarks.rehearsal_estimate", "--out", str(work / "flops.json"),
                           "--n-train", str(n_train)))
    if "flops" in res and res["flops"]["exit_status"] == 0:
        res["flops"]["counted"] = read_json(work / "flops.json")
    end = machine_state()
    # the raw measurements first: a report that fails to assemble must not lose a 30-minute run
    atomic_write_json(work / "stages.json", {"stages": res, "machine_start": start, "machine_end": end})
    return assemble(res, start, end, scale, seed, work)


def _train_counts(run_dir: Path) -> dict[str, Any]:
    """What the training stage handled, from its run folder: images, steps, precision, the epoch's own seconds (its
    metrics.csv) and the quality evaluation's (quality.csv)."""
    import csv

    run = RunFolder(run_dir)
    cfg = read_json(run.config)

    def rows(p: Path) -> list[dict[str, str]]:
        return list(csv.DictReader(p.open(encoding="utf-8"))) if p.is_file() else []

    epoch, quality = rows(run.metrics_csv), rows(run.quality_csv)
    return {"images": cfg["data"]["n_train"], "per_class": cfg["data"]["per_class"],
            "steps": cfg["data"]["steps_per_epoch"], "batch_size": cfg["batch_size"],
            "precision": cfg["data"].get("precision_resolved"), "g_base_filters": cfg["g_base_filters"],
            "epoch_seconds": float(epoch[-1]["seconds"]) if epoch else None,
            "quality_rows": len(quality), "eval_n_per_class": cfg["eval_n_per_class"],
            "quality_eval_seconds": float(quality[-1]["seconds"]) if quality else None}


def _study_counts(study_dir: Path) -> dict[str, Any]:
    """Per protocol, the classifier's training images (real + synthetic over its phases), from the study's results.json."""
    p = study_dir / "results.json"
    if not p.is_file():
        return {"results_json": None}
    rows = read_json(p).get("protocols") or []
    train = {r["protocol"]: sum(sum(c.values()) for ph in (r.get("counts") or {}).values() for c in ph.values())
             for r in rows}
    test = next((sum(r["n_test"].values()) for r in rows if r.get("n_test")), None)
    return {"results_json": _shown(str(p)), "training_images_per_protocol": train, "test_images": test,
            "weights": next((r.get("weights_source") for r in rows), None)}


def assemble(stages: dict[str, dict[str, Any]], start: dict[str, Any], end: dict[str, Any], scale: float, seed: int,
             work: Path) -> dict[str, Any]:
    """The report: LOAD-TEST label, machine at start and end, stages with what grows, totals and the estimates."""
    from . import rehearsal_estimate

    for name, r in stages.items():
        r["grows_with"] = GROWTH[name]
    flops = (stages.get("flops") or {}).get("counted")
    d: dict[str, Any] = {
        "benchmark": "full-scale rehearsal (issue 21 item 7)", "load_test": LOAD_TEST, "scale": scale, "seed": seed,
        "command": "python -m benchmarks.rehearsal" + (f" --scale {scale:g}" if scale != 1 else ""),
        "work_dir": _shown(str(work)), "machine_start": start, "machine_end": end,
        "shared_machine": "2 cores shared with other work: wall times are inflated and comparable only within this run",
        "stages": stages, "total_seconds": sum(r.get("seconds", 0.0) for r in stages.values()),
        "ok": all(r.get("exit_status") == 0 for r in stages.values()),
    }
    tr = stages.get("train") or {}
    if flops and tr.get("epoch_seconds"):  # a check of the FLOP count against this run's own clock
        d["achieved_here"] = {"gan_flops_per_second": tr["steps"] * flops["gan_step"] * tr["batch_size"]
                              / flops["gan_batch"] / tr["epoch_seconds"],
                              "how": "training stage: steps x counted FLOPs per step / the epoch's own seconds "
                                     f"(tracing included; {tr.get('precision')}; a shared CPU)"}
    if flops:
        val = ((stages.get("prepare") or {}).get("counts") or {}).get("val") or {}
        test = ((stages.get("prepare") or {}).get("counts") or {}).get("test") or {}
        d["estimates"] = rehearsal_estimate.estimate(
            flops, n_val=sum(val.values()), n_test=sum(test.values()),
            n_export=(stages.get("export") or {}).get("images") or 2 * flops["plan"]["n_train"],
            measured=rehearsal_estimate.measured_fractions(project_root() / "assets" / "results" / "benchmarks.json"))
    return d


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.rehearsal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the Kaggle set's 5,856 files (e.g. 0.05 for a quick check; 1 = full size)")
    p.add_argument("--seed", type=int, default=0, help="seed of the load-test tree")
    p.add_argument("--work-dir", default=None, help="scratch folder (default runs/rehearsal/scale-<S>; never in git)")
    p.add_argument("--out", default=None,
                   help="JSON (default assets/results/rehearsal.json at --scale 1, else runs/rehearsal/rehearsal-scale<S>.json)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--reassemble", action="store_true",
                   help="run nothing: rebuild the report from the work folder's stages.json (the raw measurements of "
                        "the last run) and its study folder")
    return p


def reassemble(work: Path, scale: float, seed: int) -> dict[str, Any]:
    """The report of the last run in `work`, from its stages.json (measurements unchanged; counts read again)."""
    raw = read_json(work / "stages.json")
    st = raw["stages"]
    for r in st.values():  # paths as the report shows them (runs before this rule recorded absolute ones)
        r["env"] = {k: _shown(v) for k, v in (r.get("env") or {}).items()}
    if (st.get("train") or {}).get("exit_status") == 0:
        st["train"].update(_train_counts(work / "run"))
    if (st.get("study") or {}).get("exit_status") == 0:
        st["study"].update(_study_counts(work / "study"))
    d = assemble(st, raw["machine_start"], raw["machine_end"], scale, seed, work)
    d["reassembled"] = ("report rebuilt from the run's stages.json by `python -m benchmarks.rehearsal --reassemble` "
                        "(measurements unchanged; counts read again from the run and study folders)")
    return d


def main(argv: list[str] | None = None) -> int:
    """Run the rehearsal, write its JSON atomically, print the table."""
    a = build_parser().parse_args(argv)
    if not 0 < a.scale <= 1:
        print(f"error: --scale {a.scale}: must be in (0, 1]", file=sys.stderr)
        return 2
    stages = tuple(s.strip() for s in a.stages.split(",") if s.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        print(f"error: --stages {','.join(unknown)}: unknown; choose from {','.join(STAGES)}", file=sys.stderr)
        return 2
    root = project_root()
    work = Path(a.work_dir) if a.work_dir else root / "runs" / "rehearsal" / f"scale-{a.scale:g}"
    out = Path(a.out) if a.out else (root / "assets" / "results" / "rehearsal.json" if a.scale == 1
                                     else root / "runs" / "rehearsal" / f"rehearsal-scale{a.scale:g}.json")
    d = reassemble(work, a.scale, a.seed) if a.reassemble else run(work, a.scale, a.seed, stages)
    atomic_write_json(out, d)
    from .rehearsal_estimate import report_markdown

    print(report_markdown(d))
    print(f"\n[rehearsal] wrote {out} ({LOAD_TEST})", file=sys.stderr)
    return 0 if d["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
