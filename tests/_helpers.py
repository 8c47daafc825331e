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


def tiny_generator(seed: int = 0, size: int = 32, channels: int = 3, latent: int = 8):
    """A keras generator with the contract's interface: [noise (B, latent) f32, labels (B,) i32] -> (B, S, S, C) in
    [-1, 1]."""
    import keras

    keras.utils.set_random_seed(seed)
    z = keras.Input((latent,), dtype="float32", name="noise")
    y = keras.Input((), dtype="int32", name="labels")
    e = keras.layers.Embedding(2, 4)(y)
    h = keras.layers.Concatenate()([z, e])
    h = keras.layers.Dense(size * size * channels, activation="tanh")(h)
    return keras.Model([z, y], keras.layers.Reshape((size, size, channels))(h))
