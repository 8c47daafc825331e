"""Small builders shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_noise_pngs(folder: Path, n_per_class: int = 3, size: int = 64, classes=("NORMAL", "PNEUMONIA"),
                     seed: int = 0) -> Path:
    """A synthetic-layout folder (<class>/*.png) of random-noise images: clearly not X-rays, fine for I/O tests."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(folder / c / f"{i:04d}.png")
    return folder
