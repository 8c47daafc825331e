"""The data layer on the real sample source: fetch, cache, load, model view."""

from __future__ import annotations

import numpy as np

from cxr_utils import data


def test_sample_fetch_gives_16_real_images(sample_npz):
    ds = data.load(sample_npz)
    assert ds.images.shape == (16, 64, 64) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [8, 8]
    assert set(ds.split.tolist()) == {"train", "val", "test"}
    assert ds.manifest["source"] == "sample"
    assert len(ds.manifest["images"]) == 16
    assert ds.manifest["origin"]["wheel_sha256"] == data.SAMPLE_WHEEL_SHA256
    # real X-rays, not blanks: plenty of grey levels and contrast
    assert all(len(np.unique(im)) > 100 for im in ds.images)
    assert ds.images.std() > 30
