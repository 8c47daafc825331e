"""Atomic writes: complete file or the old one, never a half-written file; ordinary permissions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from cxr_utils import io as cio


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "x.json"
    cio.atomic_write_json(p, {"a": 1})
    cio.atomic_write_json(p, {"a": 2, "b": [1, 2]})
    assert cio.read_json(p) == {"a": 2, "b": [1, 2]}
    assert sorted(os.listdir(p.parent)) == ["x.json"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    p = tmp_path / "x.txt"
    cio.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), cio.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


def test_files_get_the_mode_open_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        p = cio.atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_npz_round_trip_without_pickle(tmp_path):
    p = cio.atomic_save_npz(tmp_path / "c.npz", images=np.arange(12, dtype=np.uint8).reshape(3, 2, 2), split=np.array(["a", "b", "c"]))
    z = cio.load_npz(p)
    assert z["images"].dtype == np.uint8 and z["images"].sum() == 66 and z["split"].tolist() == ["a", "b", "c"]
    cio.atomic_write_bytes(tmp_path / "o.npz", b"")
    np.savez(tmp_path / "o.npz", obj=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        cio.load_npz(tmp_path / "o.npz")


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        cio.atomic_write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()
