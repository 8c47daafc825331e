"""Sampling from a generator: noise from a seed, batched generation to uint8, galleries, interpolations, PNG bytes.

The bottom of the generation side: it knows a generator only as a model [noise, labels] -> images in [-1, 1], never
a run folder (`gan.runs` finds and loads generators, `evaluation.synthetic` exports them, `gan.tracker` scores them).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..data import from_model_view as to_uint8  # generator output [-1, 1] -> uint8, channels averaged


def latent_dim_of(generator: Any) -> int:
    """The noise length the generator expects (its first input)."""
    return int(generator.inputs[0].shape[-1])


def generate(generator: Any, noise: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run the generator on (noise, labels) in batches -> uint8 (N, S, S)."""
    import keras

    noise = np.asarray(noise, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32)
    out = []
    for i in range(0, len(noise), batch_size):
        y = generator([noise[i:i + batch_size], labels[i:i + batch_size]], training=False)
        out.append(to_uint8(keras.ops.convert_to_numpy(y)))
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.uint8)


def noise_for(seed: int, n: int, latent_dim: int) -> np.ndarray:
    """Standard-normal noise (n, latent_dim) that is a pure function of the seed."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def gallery(generator: Any, n_per_class: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """n_per_class images per class -> uint8 (K, n, S, S); row k uses fresh noise per image."""
    z = noise_for(seed, num_classes * n_per_class, latent_dim_of(generator))
    labels = np.repeat(np.arange(num_classes), n_per_class)
    imgs = generate(generator, z, labels)
    return imgs.reshape(num_classes, n_per_class, *imgs.shape[1:])


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between noise vectors a and b at fractions t (keeps Gaussian-like norms)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:  # (anti)parallel vectors: the sphere formula divides by ~0, a straight line is exact enough
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def interpolation_strip(generator: Any, label: int, n_steps: int = 8, seed: int = 0) -> np.ndarray:
    """Same label, noise slerped between two random points -> uint8 (n_steps, S, S)."""
    z = noise_for(seed, 2, latent_dim_of(generator))
    path = slerp(z[0], z[1], np.linspace(0.0, 1.0, n_steps))
    return generate(generator, path, np.full(n_steps, label))


def class_swap(generator: Any, n: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """Same n noise vectors rendered as every class -> uint8 (K, n, S, S): column j shares noise j."""
    z = noise_for(seed, n, latent_dim_of(generator))
    noise = np.tile(z, (num_classes, 1))
    labels = np.repeat(np.arange(num_classes), n)
    imgs = generate(generator, noise, labels)
    return imgs.reshape(num_classes, n, *imgs.shape[1:])

def png_bytes(img: np.ndarray, text: dict[str, str]) -> bytes:
    """Encode a uint8 (S, S) image as an 8-bit grayscale PNG with the given tEXt chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="L").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
