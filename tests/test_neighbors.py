"""The one nearest-neighbour routine: closed-form distances, chunk edges, self-exclusion, exact zeros."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils.metrics import neighbors


def test_pairwise_distances_in_chunks_and_on_integer_features():
    a = np.arange(10.0).reshape(5, 2)
    b = np.array([[0.0, 0.0], [3.0, 4.0], [-1.0, 2.0]])
    brute = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(neighbors.pairwise_distances(a, b, chunk=2), brute, atol=1e-9)  # 3 chunks, the last one short
    u8 = np.array([[0], [255]], np.uint8)  # features as uint8: no wrap-around in the differences
    np.testing.assert_allclose(neighbors.pairwise_distances(u8, u8), [[0.0, 255.0], [255.0, 0.0]])


def test_nearest_matches_brute_force_across_chunks_and_reads_copies_as_exactly_zero():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, 5)) * 100.0
    q = np.concatenate([ref[[3, 0]], rng.normal(size=(4, 5)) * 100.0])  # two exact copies first
    brute = np.sqrt(((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    idx, dist = neighbors.nearest(q, ref, chunk=4)  # 2 chunks, the last one short
    assert idx.tolist() == brute.argmin(1).tolist()
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-12)
    assert dist[:2].tolist() == [0.0, 0.0] and idx[:2].tolist() == [3, 0]


def test_nearest_exclude_self_skips_the_diagonal_in_every_chunk():
    pts = np.array([[0.0], [1.0], [3.0], [7.0], [7.5]])
    idx, dist = neighbors.nearest(pts, pts, chunk=2, exclude_self=True)
    assert idx.tolist() == [1, 0, 1, 4, 3]
    assert dist.tolist() == [1.0, 1.0, 2.0, 0.5, 0.5]


def test_nearest_refuses_rows_of_different_length():
    with pytest.raises(ValueError, match="query rows have 3 values, reference rows 2"):
        neighbors.nearest(np.zeros((1, 3)), np.zeros((2, 2)))
