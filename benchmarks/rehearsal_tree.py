"""A LOAD-TEST tree shaped like the Kaggle chest-xray set, made from the 16 sample X-rays by seeded transforms.

    python -m benchmarks.rehearsal_tree --out DIR [--scale 0.05] [--seed 0]

DIR/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/ holds the Kaggle split sizes (train 1,341 / 3,875, val 8 / 8,
test 234 / 390 = 5,856 files at --scale 1) under Kaggle's file-name patterns (IM-NNNN-NNNN.jpeg,
NORMAL2-IM-NNNN-NNNN.jpeg, personN_bacteria_M.jpeg, personN_virus_M.jpeg; several images per person), as JPEGs of
about 1-2 megapixels. Every image is a crop / flip / small rotation / brightness change / resize of one of the 16
real sample images of its class: a LOAD TEST of file counts, sizes and names. It says nothing about image quality
and is never data: no result trained or evaluated on it means anything about X-rays.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LOAD_TEST = ("LOAD TEST: made from the 16 sample X-rays by seeded crops, flips, rotations, brightness changes and "
             "resizes; says nothing about image quality; not data")
# the Kaggle set's official split sizes (paultimothymooney/chest-xray-pneumonia, as downloaded): 5,856 JPEGs
KAGGLE_COUNTS: dict[str, dict[str, int]] = {"train": {"NORMAL": 1341, "PNEUMONIA": 3875},
                                            "val": {"NORMAL": 8, "PNEUMONIA": 8},
                                            "test": {"NORMAL": 234, "PNEUMONIA": 390}}
# patient numbers start apart per split (as Kaggle's test split took whole numbered blocks), so the grouped split's
# "series" rule finds no test patient in train/val here; Kaggle's own tree shares a few (README "Data")
FIRST_PATIENT = {"test": 1, "train": 1000, "val": 9000}
IMAGES_PER_PERSON = {"NORMAL": (1, 2), "PNEUMONIA": (1, 4)}  # inclusive range drawn per patient
MEGAPIXELS = (1.0, 2.0)  # drawn per image (e.g. 1,000 x 1,000 to 1,650 x 1,200 px)
JPEG_QUALITY = 85
NAME_PATTERNS = {"NORMAL": re.compile(r"^(NORMAL2-)?IM-\d{4}-\d{4}\.jpeg$"),
                 "PNEUMONIA": re.compile(r"^person\d+_(bacteria|virus)_\d+\.jpeg$")}
SPEC_FILE = "LOAD_TEST.json"


@dataclass(frozen=True)
class Planned:
    """One file of the tree: where it goes and which sample image (and patient) it is made from."""

    split: str
    cls: str
    name: str
    patient: str
    source: int  # index into that class's sorted sample images
    index: int  # position in the whole tree (the per-image seed)


def counts(scale: float) -> dict[str, dict[str, int]]:
    """Files per split and class at `scale` (1 = Kaggle's 5,856; every cell keeps at least 1 file)."""
    if not 0 < scale <= 1:
        raise ValueError(f"--scale {scale}: must be in (0, 1]")
    return {s: {c: max(1, round(n * scale)) for c, n in per.items()} for s, per in KAGGLE_COUNTS.items()}


def plan(seed: int, scale: float = 1.0, n_sources: int = 8) -> list[Planned]:
    """Every file of the tree, in a fixed order, from one seed: names, patients and source images."""
    rng = np.random.default_rng(seed)
    out: list[Planned] = []
    image_no = {"bacteria": 1, "virus": 1}  # Kaggle numbers the M of personN_<kind>_M per diagnosis list
    for split in ("test", "train", "val"):
        for cls, n in counts(scale)[split].items():
            patient, left = FIRST_PATIENT[split], n
            while left > 0:
                lo, hi = IMAGES_PER_PERSON[cls]
                k = min(left, int(rng.integers(lo, hi + 1)))
                src = int(rng.integers(n_sources))
                if cls == "NORMAL":
                    prefix = "NORMAL2-" if rng.random() < 0.5 else ""
                    names = [f"{prefix}IM-{patient:04d}-{j + 1:04d}.jpeg" for j in range(k)]
                    pid = f"{prefix}IM-{patient:04d}"
                else:
                    kind = "bacteria" if rng.random() < 2 / 3 else "virus"  # Kaggle train: 2,530 bacteria, 1,345 virus
                    names = [f"person{patient}_{kind}_{image_no[kind] + j}.jpeg" for j in range(k)]
                    image_no[kind] += k
                    pid = f"person{patient}_{kind}"
                out += [Planned(split, cls, nm, pid, src, len(out) + j) for j, nm in enumerate(names)]
                patient += 1
                left -= k
    return out


def make_image(src: Any, seed: int, index: int) -> Any:
    """One load-test JPEG's pixels: a seeded crop, horizontal flip, +-5 degree rotation, brightness x0.85-1.15 and
    resize (to MEGAPIXELS) of a grey PIL image."""
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng([seed, index])
    w, h = src.size
    fw, fh = rng.uniform(0.8, 1.0, 2)
    cw, ch = int(w * fw), int(h * fh)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = src.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:  # a mirrored chest (heart on the right) is fine for a load test, wrong for anything else
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    f = float(np.sqrt(rng.uniform(*MEGAPIXELS) * 1e6 / (cw * ch)))
    im = im.resize((max(1, round(cw * f)), max(1, round(ch * f))), Image.Resampling.BILINEAR)
    im = im.rotate(float(rng.uniform(-5, 5)), resample=Image.Resampling.BILINEAR, fillcolor=0)
    return ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.85, 1.15)))


def load_sources(folder: str | Path) -> dict[str, list[Any]]:
    """The sample images per class (grey PIL images, sorted by name) from a folder holding NORMAL/ and PNEUMONIA/."""
    from PIL import Image

    out: dict[str, list[Any]] = {}
    for cls in KAGGLE_COUNTS["train"]:
        files = sorted(p for p in (Path(folder) / cls).glob("*.jp*g"))
        if not files:
            raise ValueError(f"{folder}/{cls}: no JPEGs; pass the sample folder (cxr_utils.data.fetch_sample())")
        out[cls] = []
        for p in files:
            with Image.open(p) as im:
                out[cls].append(im.convert("L"))
    return out


def build_tree(out: str | Path, sources: str | Path, seed: int = 0, scale: float = 1.0,
               progress: bool = True) -> dict[str, Any]:
    """Write the tree under out/chest_xray (reused when out/LOAD_TEST.json records the same seed, scale and files);
    returns the spec: counts, bytes, pixels, seconds."""
    out = Path(out)
    spec_path = out / SPEC_FILE
    srcs = load_sources(sources)
    files = plan(seed, scale, min(len(v) for v in srcs.values()))
    if spec_path.is_file():
        old = json.loads(spec_path.read_text(encoding="utf-8"))
        if old.get("seed") == seed and old.get("scale") == scale and old.get("files") == len(files) \
                and all((out / "chest_xray" / f.split / f.cls / f.name).is_file() for f in files):
            return {**old, "reused": True}
    t0 = time.perf_counter()
    total_bytes, pixels = 0, []
    for i, f in enumerate(files):
        im = make_image(srcs[f.cls][f.source], seed, f.index)
        dest = out / "chest_xray" / f.split / f.cls / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        im.save(dest, "JPEG", quality=JPEG_QUALITY, comment=LOAD_TEST.encode())
        total_bytes += dest.stat().st_size
        pixels.append(im.size[0] * im.size[1])
        if progress and (i + 1) % 500 == 0:
            print(f"[rehearsal tree] {i + 1}/{len(files)} LOAD-TEST JPEGs", file=sys.stderr, flush=True)
    spec = {"load_test": LOAD_TEST, "seed": seed, "scale": scale, "files": len(files), "counts": counts(scale),
            "patients": len({(f.split, f.patient) for f in files}), "bytes": total_bytes,
            "megapixels_mean": float(np.mean(pixels)) / 1e6, "megapixels_min": min(pixels) / 1e6,
            "megapixels_max": max(pixels) / 1e6, "seconds": time.perf_counter() - t0, "reused": False,
            "made_from": f"{sum(len(v) for v in srcs.values())} sample images in {sources}"}
    out.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return spec


def summary(files: Sequence[Planned]) -> dict[str, Any]:
    """Files per split and class, and the largest number of images one patient has (for checks and the report)."""
    per: dict[str, dict[str, int]] = {}
    by_patient: dict[tuple[str, str], int] = {}
    for f in files:
        per.setdefault(f.split, {}).setdefault(f.cls, 0)
        per[f.split][f.cls] += 1
        by_patient[(f.split, f.patient)] = by_patient.get((f.split, f.patient), 0) + 1
    return {"counts": per, "patients": len(by_patient), "max_images_per_patient": max(by_patient.values())}


def main(argv: list[str] | None = None) -> int:
    """Build the tree and print its spec as JSON."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.rehearsal_tree", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write chest_xray/ and LOAD_TEST.json into")
    p.add_argument("--sources", default=None, help="folder with NORMAL/ and PNEUMONIA/ (default: the sample source)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of Kaggle's file counts (0 < scale <= 1)")
    a = p.parse_args(argv)
    if not 0 < a.scale <= 1:
        print(f"error: --scale {a.scale}: must be in (0, 1]", file=sys.stderr)
        return 2
    if a.sources is None:
        from cxr_utils import data

        a.sources = str(data.fetch_sample())
    print(f"[rehearsal tree] {LOAD_TEST}", file=sys.stderr)
    spec = build_tree(a.out, a.sources, a.seed, a.scale)
    print(json.dumps(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
