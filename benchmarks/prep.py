"""Benchmark a: images/s of cxr_utils.data.prepare on full-size real X-ray JPEGs vs keras.utils.image_dataset_from_directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cxr_utils.errors import UserError

TARGET_VS_KERAS = 1.0  # issue 14: at least as fast as image_dataset_from_directory (the 4x of issue 5 is retired: both decode at the JPEG floor)


def _label_of(path: Path) -> str:
    """NORMAL or PNEUMONIA from a Kaggle file name or its class folder."""
    if "NORMAL" in (path.parent.name.upper(), path.name.upper()[:6]):
        return "NORMAL"
    if path.parent.name.upper() == "PNEUMONIA" or path.name.lower().startswith("person"):
        return "PNEUMONIA"
    raise UserError(f"{path}: cannot tell NORMAL from PNEUMONIA by its name or folder")


def sample_jpegs() -> list[Path]:
    """The 16 real sample-source JPEGs (8 NORMAL, 8 PNEUMONIA), fetched and verified by cxr_utils.data.fetch_sample."""
    from cxr_utils import data

    root = data.fetch_sample()
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg"))
    if len(paths) < 2:
        raise UserError(f"{root}: no sample JPEGs found; delete the folder and rerun to fetch them again")
    return paths


def build_folder(jpegs: list[Path], out: Path, n_files: int = 600) -> dict[str, int]:
    """Copy the real JPEGs round-robin into out/NORMAL and out/PNEUMONIA until n_files exist; unique Kaggle-style names."""
    if out.exists():
        shutil.rmtree(out)
    by_class: dict[str, list[Path]] = {"NORMAL": [], "PNEUMONIA": []}
    for p in jpegs:
        by_class[_label_of(p)].append(p)
    if not all(by_class.values()):
        raise UserError(f"{out}: need real JPEGs of both classes to build the benchmark folder")
    counts = {}
    per_class = (n_files + 1) // 2
    for cls, srcs in by_class.items():
        d = out / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            src = srcs[i % len(srcs)]
            # a distinct patient id per copy keeps grouped splitting meaningful; contents are byte copies
            name = f"IM-{i:04d}-0001.jpeg" if cls == "NORMAL" else f"person{i}_bacteria_{i}.jpeg"
            shutil.copyfile(src, d / name)
        counts[cls] = per_class
    return counts


def _warm_page_cache(folder: Path) -> int:
    """Read every file once so all contenders start from the same (warm) page cache."""
    total = 0
    for p in folder.rglob("*"):
        if p.is_file():
            total += len(p.read_bytes())
    return total


def time_keras(folder: Path, size: int, batch_size: int = 64) -> dict[str, Any]:
    """Seconds to build and fully iterate image_dataset_from_directory (decode + resize happen while iterating)."""
    import keras

    t0 = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        str(folder), labels="inferred", color_mode="grayscale", image_size=(size, size),
        batch_size=batch_size, shuffle=False, verbose=False,
    )
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "images_per_second": n / seconds,
            "call": f"image_dataset_from_directory(color_mode='grayscale', image_size=({size},{size}), batch_size={batch_size}, shuffle=False), iterated once"}


def time_decode_floor(folder: Path, reduced: bool) -> dict[str, Any]:
    """One core, OpenCV decode only (no resize, hash or cache): the floor any preparation code stands on."""
    import cv2
    import numpy as np

    flag = cv2.IMREAD_REDUCED_GRAYSCALE_8 if reduced else cv2.IMREAD_GRAYSCALE
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    for f in files:
        cv2.imdecode(np.frombuffer(f.read_bytes(), np.uint8), flag)
    seconds = time.perf_counter() - t0
    return {"images": len(files), "seconds": seconds, "images_per_second": len(files) / seconds,
            "call": f"cv2.imdecode(..., {'IMREAD_REDUCED_GRAYSCALE_8' if reduced else 'IMREAD_GRAYSCALE'}) in a loop, 1 core"}


def time_cxr(folder: Path, size: int, workers: int | None, out: Path) -> dict[str, Any]:
    """cxr_utils.data.prepare(source='folder', force=True) end to end (decode, hash, split, cache write), in a fresh process.

    A fresh process is what `python -m cxr_utils prepare` is, and keeps this process's TensorFlow threads from
    changing how the worker pool starts (cxr_utils.data forks only when no ML framework is loaded).
    """
    cmd = [sys.executable, "-m", "benchmarks.prep", "--folder", str(folder), "--size", str(size), "--out", str(out)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))})
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"cxr_utils prepare benchmark failed: {last}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _time_cxr_here(folder: Path, size: int, workers: int | None, out: Path) -> dict[str, Any]:
    """The timed body of time_cxr (run in the child process)."""
    from cxr_utils import data

    t0 = time.perf_counter()
    npz = data.prepare(source="folder", path=folder, size=size, out=out, workers=workers, force=True, progress=False)
    seconds = time.perf_counter() - t0
    n = int(data.load(npz).images.shape[0])
    import multiprocessing

    return {"images": n, "seconds": seconds, "images_per_second": n / seconds,
            "workers": workers if workers is not None else f"{data._default_workers(n)} (default)",
            "tensorflow_loaded": "tensorflow" in sys.modules, "start_methods": multiprocessing.get_all_start_methods()[:1]}


def run(work: Path, quick: bool = True, n_files: int = 600, size: int = 64, repeats: int | None = None) -> dict[str, Any]:
    """Benchmark a end to end: returns the JSON section (best of `repeats` for each contender)."""
    repeats = repeats or (3 if quick else 5)
    work.mkdir(parents=True, exist_ok=True)
    jpegs = sample_jpegs()
    folder = work / "xray-folder"
    counts = build_folder(jpegs, folder, n_files)
    nbytes = _warm_page_cache(folder)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs: dict[str, list[dict[str, Any]]] = {"cxr_utils": [], "cxr_utils_1_worker": [], "keras": [],
                                             "opencv_reduced_decode_1_core": [], "opencv_full_decode_1_core": []}
    for _ in range(repeats):  # interleaved, so a burst of outside load hits one round, not one contender
        runs["cxr_utils"].append(time_cxr(folder, size, None, work / "all.npz"))
        runs["cxr_utils_1_worker"].append(time_cxr(folder, size, 1, work / "one.npz"))
        runs["keras"].append(time_keras(folder, size))
        runs["opencv_reduced_decode_1_core"].append(time_decode_floor(folder, True))
        runs["opencv_full_decode_1_core"].append(time_decode_floor(folder, False))
    best = {k: max(v, key=lambda r: r["images_per_second"]) for k, v in runs.items()}
    ratio = best["cxr_utils"]["images_per_second"] / best["keras"]["images_per_second"]
    return {
        "input": {"files": sum(counts.values()), "per_class": counts, "bytes": nbytes, "size": size,
                  "distinct_real_images": len(jpegs),
                  "note": f"the {len(jpegs)} real sample-source X-rays (full size) copied round-robin; page cache warm"},
        "repeats": repeats,
        "cxr_utils": best["cxr_utils"],
        "cxr_utils_1_worker": best["cxr_utils_1_worker"],
        "keras": best["keras"],
        "decode_floor": {"opencv_reduced_decode_1_core": best["opencv_reduced_decode_1_core"],
                         "opencv_full_decode_1_core": best["opencv_full_decode_1_core"],
                         "note": "decode alone on one core; entropy (Huffman) decoding is paid in full even at 1/8 DCT scale"},
        "all_runs": runs,
        "ratios": {
            "cxr_vs_keras": {"value": ratio, "target": TARGET_VS_KERAS, "met": ratio >= TARGET_VS_KERAS},
            "workers_speedup": {"value": best["cxr_utils"]["images_per_second"] / best["cxr_utils_1_worker"]["images_per_second"],
                                "target": None, "met": None},
        },
    }


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="time cxr_utils.data.prepare on a folder (child process of benchmark a)")
    p.add_argument("--folder", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    print(json.dumps(_time_cxr_here(Path(a.folder), a.size, a.workers, Path(a.out))))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
