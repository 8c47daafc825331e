"""Nearest neighbours: the one routine behind PRDC, memorization, train coverage and the nearest-real figure.

Distances are Euclidean in float64 (near-copies differ by a few grey levels; float32 cancellation would blur that),
computed in row chunks so memory stays bounded by chunk x len(reference).
"""

from __future__ import annotations

import numpy as np


def as_rows(a: np.ndarray, name: str) -> np.ndarray:
    """A (N, D) float64 view of features or flattened-elsewhere data; a 1-D array is N scalars."""
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature array, got shape {x.shape}")
    return x


def pairwise_distances(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) in float64, computed in chunks to bound memory."""
    a, b = as_rows(a, "a"), as_rows(b, "b")
    bb = (b * b).sum(axis=1)
    out = np.empty((len(a), len(b)), np.float64)
    for i in range(0, len(a), chunk):
        ai = a[i:i + chunk]
        d2 = (ai * ai).sum(axis=1)[:, None] + bb[None, :] - 2.0 * ai @ b.T
        out[i:i + chunk] = np.sqrt(np.maximum(d2, 0.0))
    return out


def nearest(query: np.ndarray, reference: np.ndarray, chunk: int = 512,
            exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For each query row its nearest reference row -> (indices, Euclidean distances).

    exclude_self: query and reference are the same set and a row may not be its own neighbour. The winner's
    distance is recomputed directly (the |q|^2 - 2qr + |r|^2 expansion cancels badly near 0), so a copy reads exactly 0.
    """
    q, r = as_rows(query, "query"), as_rows(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"nearest: query rows have {q.shape[1]} values, reference rows {r.shape[1]}")
    r2 = (r * r).sum(1)
    idx = np.empty(len(q), np.int64)
    dist = np.empty(len(q), np.float64)
    for i in range(0, len(q), chunk):
        c = q[i:i + chunk]
        d2 = (c * c).sum(1)[:, None] - 2.0 * (c @ r.T) + r2[None, :]
        if exclude_self:
            d2[np.arange(len(c)), np.arange(i, i + len(c))] = np.inf
        j = d2.argmin(1)
        idx[i:i + chunk] = j
        dist[i:i + chunk] = np.sqrt(((c - r[j]) ** 2).sum(1))
    return idx, dist
