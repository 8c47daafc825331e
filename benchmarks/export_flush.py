"""What flushing a staged export costs per PNG: one fsync per file (the export before issue 21) vs one syncfs.

`python -m benchmarks.export_flush [--n 3000] [--dir FOLDER] [--repeats 3] [--out FILE.json]` writes N export-like 64 px PNGs (text
chunks included) into a staging folder under FOLDER, flushes them one way, deletes them, and alternates the two ways
`--repeats` times so a busy disk hurts both alike. Prints one JSON object (ms per PNG for encode, write and flush)
and writes it to FILE.json if given (the README's export-flush line is generated from assets/results/export_flush.json).
Run it with FOLDER on the file system you care about (a Drive mount on Colab, the local disk here).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import _cpuinfo, usable_cores
from cxr_utils.evaluation.synthetic import _StageFlush, _syncfs
from cxr_utils.files import atomic_write_json, fsync_file
from cxr_utils.gan.generate import png_bytes

MODES = ("fsync-each", "syncfs")


def _pngs(n: int) -> list[bytes]:
    """N distinct 64 px PNGs as large as an export's (structure + noise, the export's text chunks)."""
    rng = np.random.default_rng(0)
    _, xx = np.mgrid[0:64, 0:64]
    text = {"Synthetic": "true", "Description": "SYNTHETIC image made by a GAN, not a patient image " * 2,
            "Software": "cxr-utils", "Source-Run": "gan", "Generator-SHA256": "0" * 64, "Generator": "best (epoch 1)",
            "Class": "NORMAL", "Seed": "0"}
    return [png_bytes(np.clip(100 + 60 * np.sin(xx / (3 + i % 5)) + rng.normal(0, 20, (64, 64)), 0, 255)
                      .astype(np.uint8), text) for i in range(n)]


def _once(blobs: list[bytes], where: Path, mode: str) -> tuple[float, float]:
    """(write seconds, flush seconds) of one staged folder flushed by `mode`."""
    stage = Path(tempfile.mkdtemp(prefix=".bench.part-", dir=where))
    flush = _StageFlush(stage)
    try:
        (stage / "NORMAL").mkdir()
        t0 = time.perf_counter()
        for i, b in enumerate(blobs):
            (stage / "NORMAL" / f"syn-s0-{i:06d}.png").write_bytes(b)
        t1 = time.perf_counter()
        if mode == "syncfs":
            flush()
        else:
            for p in sorted(stage.rglob("*")):
                if p.is_file():
                    fsync_file(p)
        return t1 - t0, time.perf_counter() - t1
    finally:
        flush.close()
        shutil.rmtree(stage, ignore_errors=True)


def run(n: int = 3000, where: str | Path | None = None, repeats: int = 3) -> dict[str, Any]:
    """Median ms per PNG of encoding, writing and flushing N PNGs, for each flush mode."""
    where = Path(where or tempfile.gettempdir())
    t0 = time.perf_counter()
    blobs = _pngs(n)
    encode_ms = (time.perf_counter() - t0) / n * 1e3
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for r in range(repeats):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):
            times[mode].append(_once(blobs, where, mode))
    per = {m: {"write_ms_per_png": statistics.median(w for w, _ in t) / n * 1e3,
               "flush_ms_per_png": statistics.median(f for _, f in t) / n * 1e3,
               "flush_seconds_all": [round(f, 3) for _, f in t]} for m, t in times.items()}
    return {"n": n, "folder": str(where), "bytes_per_png": int(np.mean([len(b) for b in blobs])),
            "encode_ms_per_png": encode_ms, "repeats": repeats, "modes": per,
            "flush_ratio_fsync_each_over_syncfs": per["fsync-each"]["flush_ms_per_png"]
            / max(per["syncfs"]["flush_ms_per_png"], 1e-9),
            "syncfs_available": _syncfs() is not None, "kernel": platform.release(), "cpu": _cpuinfo()[0], "cores": usable_cores(),
            "note": "wall times on a machine that may be shared: compare the two modes of one run, not runs"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dir", default=None, help="folder on the file system to measure (default: the temp folder)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    result = {**run(args.n, args.dir, args.repeats),
              "command": "python -m benchmarks.export_flush " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
