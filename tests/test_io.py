"""Atomic writes: complete file or the old one, never a half-written file; ordinary permissions."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from cxr_utils import files as cio


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


def _fail_fsync_on_files(monkeypatch, code: int) -> list[str]:
    """os.fsync raises OSError(code) on regular files (the flush of a written file); folders still sync."""
    real = os.fsync
    hits: list[str] = []

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            hits.append(os.readlink(f"/proc/self/fd/{fd}"))
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hits


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_failed_flush_is_a_failed_write(tmp_path, monkeypatch, code):
    """A write whose fsync fails (delayed allocation hits a full disk, an I/O error) is never renamed into place."""
    p = tmp_path / "x.json"
    cio.atomic_write_json(p, {"old": 1})
    hits = _fail_fsync_on_files(monkeypatch, code)
    with pytest.raises(OSError) as ei:
        cio.atomic_write_json(p, {"new": 2})
    assert ei.value.errno == code and ei.value.filename == str(p)  # the message names the file the user asked for
    assert len(hits) == 1 and ".x.json." in hits[0]  # the fault hit the flush of the temp file
    assert cio.read_json(p) == {"old": 1}  # the previous file is whole
    assert sorted(os.listdir(tmp_path)) == ["x.json"]  # and the temp file is gone
    with pytest.raises(OSError):
        cio.atomic_save_npz(tmp_path / "new.npz", a=np.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["x.json"]  # a new file never appears half-flushed


def test_fsync_refused_as_unsupported_is_tolerated(tmp_path, monkeypatch):
    """EINVAL from fsync means "this file system cannot sync" (some mounts; many refuse it on folders): not a loss."""
    calls: list[bool] = []

    def fsync(fd: int) -> None:
        calls.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(os, "fsync", fsync)
    p = cio.atomic_write_text(tmp_path / "x.txt", "new")
    assert p.read_text() == "new" and calls == [False, True]  # the file, then its folder; both refused, both fine


def test_json_is_indented_in_insertion_order_with_a_final_newline(tmp_path):
    """Results JSON is read by people and diffed in reviews: 2-space indent, keys as written, one trailing newline."""
    p = cio.atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1, 2], "é": "ü"})
    assert p.read_bytes() == b'{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ],\n  "\\u00e9": "\\u00fc"\n}\n'  # ASCII-only
    assert cio.read_json(p) == {"b": 1, "a": [1, 2], "é": "ü"}


def test_npz_compression_is_the_callers_choice(tmp_path):
    import zipfile

    a = np.zeros((64, 64), np.float32)
    for compress, kind in ((True, zipfile.ZIP_DEFLATED), (False, zipfile.ZIP_STORED)):
        p = cio.atomic_save_npz(tmp_path / f"{compress}.npz", compress=compress, a=a)
        with zipfile.ZipFile(p) as z:
            assert {i.compress_type for i in z.infolist()} == {kind}
    assert cio.atomic_save_npz(tmp_path / "d.npz", a=a).stat().st_size < a.nbytes / 10  # compressed by default


def test_fsync_error_keeps_the_reason_and_names_the_file(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x")
    _fail_fsync_on_files(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as ei:
        cio.fsync_file(p)
    assert (ei.value.errno, ei.value.strerror, ei.value.filename) == (errno.EIO, os.strerror(errno.EIO), str(p))
