"""Artefacts: the share of an image's spectral energy near Nyquist (a transposed-convolution checkerboard stands out)."""

from __future__ import annotations

import numpy as np

HIGH_BAND = 0.75  # of Nyquist: where high_frequency_share starts counting


def high_frequency_share(images: np.ndarray, band: float = HIGH_BAND) -> np.ndarray:
    """Per image: the share of its spectral energy at radial frequencies above `band` x Nyquist -> float64 (N,).

    For an image x (S x S, grey; channels averaged), mean removed: P = |FFT2(x)|^2 over the S x S frequencies
    (fy, fx) in cycles per pixel (numpy.fft.fftfreq; Nyquist 0.5), r = sqrt(fy^2 + fx^2), and the share is
    sum(P where r > band * 0.5) / sum(P): 0 for a constant image. A stride-2 checkerboard ((-1)^(i+j), r = 0.71) scores
    1, a smooth image ~0; a 64 px X-ray, area-downsampled from a large JPEG, holds little energy up there, which is
    why a transposed-convolution checkerboard stands out. No window: the same edges are in real and synthetic images.
    """
    x = np.asarray(images, np.float64)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3:
        raise ValueError(f"expected images (N, H, W[, C]), got shape {x.shape}")
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2
    fy, fx = np.fft.fftfreq(x.shape[1]), np.fft.fftfreq(x.shape[2])
    high = np.hypot(fy[:, None], fx[None, :]) > band * 0.5
    total = power.sum(axis=(1, 2))
    share = np.divide(power[:, high].sum(axis=1), total, out=np.zeros(len(x)), where=total > 0)
    return share


def balanced_share(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str],
                   band: float = HIGH_BAND) -> tuple[float | None, dict[str, float]]:
    """(the class-balanced mean of high_frequency_share, per class: class name -> mean) of labelled images; classes
    without images are left out (None overall when none has any): every class weighs alike, whatever its share."""
    y = np.asarray(labels)
    hf = high_frequency_share(images, band) if len(y) else np.zeros(0)
    per = {n: float(hf[y == c].mean()) for c, n in enumerate(class_names) if (y == c).any()}
    return (float(np.mean(list(per.values()))) if per else None), per
