"""Generative metrics on feature arrays: FID, KID, PRDC, memorization, label fidelity, pixel-space neighbours.

Every metric is a pure numpy/scipy function of arrays, so it can be checked against closed-form cases. The features
come from cxr_utils.metrics.features; every result names the extractor it used, because numbers from different extractors
are not comparable (an offline random-init CNN is not InceptionV3).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import linalg

from .memorization import memorization
from .neighbors import as_rows, pairwise_distances

IMAG_TOLERANCE = 1e-3  # relative size of sqrtm's imaginary diagonal still taken as round-off (as pytorch-fid's atol)


class FIDImaginaryWarning(UserWarning):
    """FID's matrix square root came out complex beyond round-off: the value is not trustworthy."""


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of a feature array (N, D), in float64."""
    x = as_rows(feats, "feats")
    if len(x) < 2:
        raise ValueError("feature_stats needs at least 2 feature vectors")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance ||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"fid_from_stats: shapes differ: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # singular products (fewer samples than dimensions) warn; the finiteness check below handles them
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise, as the reference implementation does
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        # the square root of a product of two PSD matrices is real; a large imaginary part means the covariances are
        # too poorly estimated (too few images for the feature dimension) for the number to mean anything
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > IMAG_TOLERANCE * max(1.0, float(np.max(np.abs(np.diagonal(covmean).real)))):
            warnings.warn(f"FID: the matrix square root has an imaginary component of {imag:.3g} (beyond round-off); "
                          f"the covariances are ill-conditioned, use more images per set", FIDImaginaryWarning, stacklevel=2)
        covmean = covmean.real
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # the distance is >= 0; a tiny negative value is round-off


def fid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """Frechet Inception Distance between two feature sets (lower is closer)."""
    mu1, s1 = feature_stats(real_feats)
    mu2, s2 = feature_stats(fake_feats)
    return fid_from_stats(mu1, s1, mu2, s2)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The KID kernel k(x, y) = (x.y / d + 1)^3."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (n, D) with the cubic polynomial kernel."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("mmd2_unbiased needs at least 2 samples on each side")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(real_feats: np.ndarray, fake_feats: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD^2 over random subsets (without replacement)."""
    x, y = as_rows(real_feats, "real_feats"), as_rows(fake_feats, "fake_feats")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"kid: feature dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
            for _ in range(max(1, n_subsets))]
    return float(np.mean(vals)), float(np.std(vals))


def _kth_neighbour_radius(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point in the same set."""
    if len(feats) <= k:
        raise ValueError(f"prdc: need more than k={k} points per set, got {len(feats)}")
    d = pairwise_distances(feats, feats)
    # column 0 of the sorted row is the point itself (distance 0)
    return np.partition(d, k, axis=1)[:, k]


def prdc(real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020, k-NN balls; strict '<' as in the reference code)."""
    real, fake = as_rows(real_feats, "real_feats"), as_rows(fake_feats, "fake_feats")
    real_r = _kth_neighbour_radius(real, k)
    fake_r = _kth_neighbour_radius(fake, k)
    d = pairwise_distances(real, fake)  # (n_real, n_fake)
    inside_real = d < real_r[:, None]  # fake j inside the k-NN ball of real i
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d < fake_r[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < real_r).mean()),
    }


def kid_and_prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """KID (mean, std) and PRDC with k lowered to what the smaller set allows; None where a set is too small."""
    out: dict[str, Any] = {"kid_mean": None, "kid_std": None}
    if min(len(real), len(fake)) >= 2:
        out["kid_mean"], out["kid_std"] = kid(real, fake, kid_subsets, kid_subset_size, seed)
    kk = min(k, len(real) - 1, len(fake) - 1)
    out["prdc_k"] = int(kk)
    out["prdc"] = prdc(real, fake, kk) if kk >= 1 else None
    return out


def feature_metrics(real_train: np.ndarray, real_test: np.ndarray, synth: np.ndarray, k: int = 5,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """FID, KID, PRDC (against real train) and memorization (train vs test) for one feature space."""
    dim = int(as_rows(real_train, "real_train").shape[1]) if len(real_train) else 0
    n = min(len(real_train), len(synth))
    out: dict[str, Any] = {"n_real": int(len(real_train)), "n_synthetic": int(len(synth)), "feature_dim": dim, "fid": None}
    if n >= 2:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FIDImaginaryWarning)
            out["fid"] = fid(real_train, synth)
        out["fid_warnings"] = [str(w.message) for w in caught if issubclass(w.category, FIDImaginaryWarning)]
        for w in caught:  # recorded only to keep FID's own warning in the result: every other one is passed on
            if not issubclass(w.category, FIDImaginaryWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if n < dim:
        # FID estimates a dim x dim covariance: with fewer images than dimensions it is biased upward (Chong & Forsyth
        # 2020), so values are only comparable at equal image counts
        out["fid_note"] = f"FID on {n} images per set < {dim} feature dimensions: biased upward, compare only at equal image counts"
    out.update(kid_and_prdc(real_train, synth, k, kid_subsets, kid_subset_size, seed))
    out["memorization"] = memorization(real_train, synth, real_test) if len(real_test) and len(real_train) else None
    return out
