"""The evaluation's inputs: the real splits of a cache .npz and the synthetic images of an exported folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASS_NAMES
from ..errors import UserError


def load_real(npz: str | os.PathLike) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Real splits of a cache .npz and its provenance (path, source, whether it is the full data set)."""
    from .. import data

    p = Path(npz)
    if not p.is_file():
        raise UserError(f"--data {p}: file not found; build it with `python -m cxr_utils prepare`")
    ds = data.load(p)
    real = {sp: ds.subset(sp) for sp in ("train", "val", "test")}
    source = str(ds.manifest.get("source", "unknown"))  # data.load gives {} when the manifest is missing
    return real, {"data": str(p), "source": source, "full_dataset": source in FULL_SOURCES,
                  "n_images": int(len(ds.labels))}


def load_synthetic_folder(folder: str | os.PathLike, image_size: int) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """Synthetic images of a `sample` folder checked against the real image size, and their provenance."""
    from . import synthetic

    x, y = synthetic.load_synthetic(folder, expected_size=image_size)
    return (x, y), {"synthetic": str(folder), "n_synthetic": _class_counts(y), "generator": synthetic.generators_of(folder)}


FULL_SOURCES = ("kaggle", "medmnist")  # sources that hold the whole 5,856-image chest X-ray set


def _class_counts(y: np.ndarray, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, int]:
    y = np.asarray(y).astype(np.int64)
    return {n: int((y == c).sum()) for c, n in enumerate(class_names)}
