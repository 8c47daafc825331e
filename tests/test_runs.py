"""cxr_utils.runs: the read side of a run folder (a missing run is one clear line; real images of the run's cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_utils import io, runs
from cxr_utils.errors import UserError


def test_load_run_and_real_images(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope: no trained GAN here \(generator.keras missing\); run 02 first"):
        runs.load_run(tmp_path / "nope", hint="run 02 first")
    from cxr_utils.io import atomic_save_npz, atomic_write_json

    imgs = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    npz = atomic_save_npz(tmp_path / "cache.npz", images=imgs, labels=np.array([0, 1, 0, 1, 1]),
                          split=np.array(["train", "train", "val", "test", "train"]))
    run = tmp_path / "run"
    atomic_write_json(run / "config.json", {"image_size": 4, "data": {"npz": str(npz), "split": "train"}})
    x, y, where = runs.real_images(run, "train")
    assert np.array_equal(x, imgs[[0, 1, 4]]) and y.tolist() == [0, 1, 1]
    assert where == "cache.npz (train split, 3 images)"
    x, y, _ = runs.real_images(run, "val")
    assert np.array_equal(x, imgs[[2]]) and y.dtype == np.int64


def test_training_cache_is_the_one_the_run_names_else_prepared(sample_npz: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cxr_utils import data

    asked = []
    monkeypatch.setattr(data, "prepare", lambda **kw: asked.append(kw) or tmp_path / "prepared.npz")
    run = tmp_path / "gan"
    io.atomic_write_json(run / "config.json", {"data": {"npz": str(sample_npz)}})
    assert runs.training_cache(run, source="sample", size=32) == sample_npz and asked == []
    io.atomic_write_json(run / "config.json", {"data": {"npz": str(tmp_path / "moved.npz")}})  # named, but gone
    assert runs.training_cache(run, source="sample", size=32) == tmp_path / "prepared.npz"
    assert runs.training_cache(tmp_path / "no-run") == tmp_path / "prepared.npz"  # no config.json at all
    assert asked == [{"source": "sample", "size": 32, "progress": False}, {"source": "auto", "size": 64, "progress": False}]
