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


def protocol_result(protocol: str, y, probs_per_seed, folder: str | None = None, ratio: float | None = None,
                    model: str = "VGG16 random init", **extra) -> dict:
    """A result shaped like evaluation.run_protocol's, from test labels and one probability vector per seed."""
    from cxr_utils.evaluation import protocols
    from cxr_utils.metrics import classification

    y = np.asarray(y)
    per = [{"seed": s, **classification.classification_metrics(y, np.asarray(p)), "stages": [], "test_probs": list(map(float, p))}
           for s, p in enumerate(probs_per_seed)]
    mean, std = protocols._seed_stats(per, (*classification.METRICS, *classification.COUNTS))
    return {"protocol": protocol, "protocol_text": protocols.PROTOCOL_TEXT[protocol], "model": model,
            "weights": "random init" if "random" in model else "imagenet", "synthetic": folder,
            "synthetic_ratio": ratio, "seeds": list(range(len(per))), "mean": mean, "std": std, "threshold": 0.5,
            "ci95": classification.bootstrap_ci(y, [np.asarray(p) for p in probs_per_seed], 100), "per_seed": per,
            "test_labels": y.tolist(), **extra}


def study_results(n_neg: int = 30, n_pos: int = 50, folders=("runs/a/synthetic", "runs/b/synthetic"),
                  ratios=(0.5, 1.0), seeds: int = 2, **extra) -> list[dict]:
    """trtr once, then tstr and augment per folder and ratio, with planted, distinct predictions (seeded)."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]

    def probs(skill: float) -> list:
        return [np.clip(y * skill + rng.normal(0.5 - skill / 2, 0.2, len(y)), 0, 1) for _ in range(seeds)]

    out = [protocol_result("trtr", y, probs(0.4), **extra)]
    for f in folders:
        for r in ratios:
            out.append(protocol_result("tstr", y, probs(0.1 + 0.1 * r), f, r, **extra))
            out.append(protocol_result("augment", y, probs(0.45 + 0.05 * r), f, r, **extra))
    return out
