"""cxr_utils.gan.generate: noise from a seed, batched generation, interpolation and class-swap strips, uint8 and grey views."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _helpers import tiny_generator  # noqa: E402

from cxr_utils.gan import generate  # noqa: E402

S, C, LATENT = 32, 3, 8


def _tiny_generator(seed: int = 0):
    """A generator with the contract's interface: [noise (B, latent) f32, labels (B,) i32] -> (B, S, S, C) in [-1, 1]."""
    return tiny_generator(seed, S, C, LATENT)


def test_slerp_interpolation_and_class_swap() -> None:
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    p = generate.slerp(a, b, np.array([0.0, 0.5, 1.0]))
    assert np.allclose(p[0], a) and np.allclose(p[2], b)
    assert np.allclose(generate.slerp(a, a * 3, np.array([0.5]))[0], 2 * a)  # parallel: straight line
    unit = generate.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.linspace(0, 1, 5))
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0)  # stays on the sphere

    gen = _tiny_generator()
    strip = generate.interpolation_strip(gen, label=1, n_steps=5, seed=2)
    z = generate.noise_for(2, 2, LATENT)
    ends = generate.generate(gen, z, np.array([1, 1]))
    assert strip.shape == (5, S, S) and strip.dtype == np.uint8
    assert np.abs(strip[[0, -1]].astype(int) - ends.astype(int)).max() <= 1

    swap = generate.class_swap(gen, n=3, num_classes=2, seed=4)
    z = generate.noise_for(4, 3, LATENT)
    assert swap.shape == (2, 3, S, S)
    for k in range(2):
        assert np.abs(swap[k].astype(int) - generate.generate(gen, z, np.full(3, k)).astype(int)).max() <= 1
    assert not np.array_equal(swap[0], swap[1])  # the label changes the image
    g = generate.gallery(gen, 4, 2, seed=0)
    assert g.shape == (2, 4, S, S)


def test_to_uint8_closed_form() -> None:
    x = np.array([[[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]]], np.float32)
    assert generate.to_uint8(x).tolist() == [[[0, 255], [128, 128]]]  # 127.5 rounds to even 128
    assert generate.to_uint8(np.array([[[[5.0]]]])).tolist() == [[[255]]]  # out of range is clipped
