"""Artefacts: the share of an image's spectral energy near Nyquist (a transposed-convolution checkerboard stands out)."""

from __future__ import annotations

import numpy as np

HIGH_BAND = 0.75  # of Nyquist: where high_frequency_share starts counting
# images per FFT batch: the float64 spectra of a whole training split (Kaggle: ~4,200 images; 1.7 GB per copy at
# 224 px) are never held at once
CHUNK = 256


def _normalised_power(images: np.ndarray):
    """Yield (start, P) per chunk of CHUNK images: P (n, H, W) float64, each image's power spectrum |FFT2(x)|^2 (x grey:
    channels averaged in the chunk; mean removed) divided by its total (a constant image: zeros)."""
    x_all = np.asarray(images)
    for i in range(0, len(x_all), CHUNK):
        x = np.asarray(x_all[i:i + CHUNK], np.float64)
        x = x.mean(axis=-1) if x.ndim == 4 else x
        x = x - x.mean(axis=(1, 2), keepdims=True)
        power = np.abs(np.fft.fft2(x)) ** 2
        total = power.sum(axis=(1, 2), keepdims=True)
        yield i, np.divide(power, total, out=np.zeros_like(power), where=total > 0)


def _spatial_shape(images: np.ndarray) -> tuple[int, ...]:
    shape = np.shape(images)
    if len(shape) not in (3, 4):
        raise ValueError(f"expected images (N, H, W[, C]), got shape {shape}")
    return shape[1:3]


def high_frequency_share(images: np.ndarray, band: float = HIGH_BAND) -> np.ndarray:
    """Per image: the share of its spectral energy at radial frequencies above `band` x Nyquist -> float64 (N,).

    For an image x (S x S, grey; channels averaged), mean removed: P = |FFT2(x)|^2 over the S x S frequencies
    (fy, fx) in cycles per pixel (numpy.fft.fftfreq; Nyquist 0.5), r = sqrt(fy^2 + fx^2), and the share is
    sum(P where r > band * 0.5) / sum(P): 0 for a constant image. A stride-2 checkerboard ((-1)^(i+j), r = 0.71) scores
    1, a smooth image ~0; a 64 px X-ray, area-downsampled from a large JPEG, holds little energy up there, which is
    why a transposed-convolution checkerboard stands out. No window: the same edges are in real and synthetic images.
    """
    h, w = _spatial_shape(images)
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    high = np.hypot(fy[:, None], fx[None, :]) > band * 0.5
    out = np.zeros(len(images))
    for i, power in _normalised_power(images):
        out[i:i + len(power)] = power[:, high].sum(axis=1)
    return out


def class_means(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[int, np.ndarray]:
    """Per-image values (N, ...) averaged within each class: class index -> mean (classes without images left out).
    The mean of these is the class-balanced mean both artefact scores use: every class weighs alike, whatever its
    share of the data (Kaggle: 1 NORMAL to 3 PNEUMONIA)."""
    y = np.asarray(labels)
    return {c: np.asarray(values)[y == c].mean(axis=0) for c in range(num_classes) if (y == c).any()}


def balanced_share(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str],
                   band: float = HIGH_BAND) -> tuple[float | None, dict[str, float]]:
    """(the class-balanced mean of high_frequency_share, per class: class name -> mean) of labelled images; classes
    without images are left out (None overall when none has any): every class weighs alike, whatever its share."""
    hf = high_frequency_share(images, band) if len(labels) else np.zeros(0)
    per = {class_names[c]: float(v) for c, v in class_means(hf, labels, len(class_names)).items()}
    return (float(np.mean(list(per.values()))) if per else None), per


STRIPE_BAND = 0.5  # of Nyquist: where stripe_ratio looks (0.25-0.5 cycles/pixel: the spectral images of a 2x upsample)


def axis_spectrum(images: np.ndarray) -> np.ndarray:
    """Per image: the share of its spectral energy at each horizontal and each vertical frequency -> float64
    (N, 2, S // 2 + 1); [:, 0, k] = energy at |fx| = k / S summed over every fy, [:, 1, k] = at |fy| = k / S.

    The two 1-D marginals of the power spectrum P = |FFT2(x)|^2 (x grey, channels averaged, mean removed), each image's
    P divided by its total first (a constant image: zeros). Stripes along rows or columns, the banding of a
    nearest-neighbour upsample, put their energy at a few k of one marginal, which a radial band share
    (high_frequency_share) averages with the quiet rest of its ring. Images must be square with an even side (every
    size the generator makes), so bin k is k / S cycles/pixel and the last is Nyquist.
    """
    h, w = _spatial_shape(images)
    if h != w or h % 2:
        raise ValueError(f"expected square images of an even side (N, S, S[, C]), got shape {np.shape(images)}")
    s = h
    k = np.abs(np.round(np.fft.fftfreq(s) * s)).astype(np.int64)  # |frequency index| of each FFT bin: 0..S/2
    out = np.zeros((len(images), 2, s // 2 + 1))
    for i, power in _normalised_power(images):
        part = out[i:i + len(power)]
        np.add.at(part[:, 0].T, k, power.sum(axis=1).T)  # sum over fy, binned by |fx|
        np.add.at(part[:, 1].T, k, power.sum(axis=2).T)  # sum over fx, binned by |fy|
    return out


def balanced_axis_spectrum(images: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """The class-balanced mean axis_spectrum of labelled images (2, S // 2 + 1): the mean over classes of each class's
    mean (classes without images left out; None when none has any)."""
    if not len(labels):
        return None
    per = class_means(axis_spectrum(images), labels, num_classes)
    return np.mean(list(per.values()), axis=0) if per else None


def stripe_ratio(spectrum: np.ndarray | None, reference: np.ndarray | list | None,
                 band: float = STRIPE_BAND) -> float | None:
    """The stripe score: the most any single horizontal or vertical frequency at or above `band` x Nyquist holds of the
    spectrum, as a multiple of what the reference holds there: max over the axes and k >= band * S / 2 of
    spectrum[a, k] / reference[a, k] (bins where the reference holds nothing are skipped; spectra of axis_spectrum,
    S // 2 + 1 bins of an even side S). 1.0 = no frequency stronger than in the real images; None without both
    spectra. For real images of the reference's kind it lands at or a little above 1.0 (the maximum of noisy ratios);
    a blurred image can score far below 1."""
    if spectrum is None or reference is None:
        return None
    s, r = np.asarray(spectrum, np.float64), np.asarray(reference, np.float64)
    if s.shape != r.shape:
        raise ValueError(f"spectrum {s.shape} and reference {r.shape} differ in shape")
    k0 = int(np.ceil(round(band * (s.shape[1] - 1), 9)))  # bins k >= band * S / 2 (S = 2 * (bins - 1))
    s, r = s[:, k0:], r[:, k0:]
    ok = r > 0
    return float((s[ok] / r[ok]).max()) if ok.any() else None
