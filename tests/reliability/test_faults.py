"""Divergence, a full disk and a read-only run folder: a clear one-line error, the previous checkpoint intact and
resumable, nothing half-written left behind. Faults are injected in-process (tests run as root, chmod stops nothing)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

import keras
import pytest

from cxr_utils import io as cio
from cxr_utils.cli import main as cli_main
from cxr_utils.train import read_metrics

from .conftest import clone_run, write_config


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_line(err: str) -> str:
    """The one `error: ...` line the CLI printed (TF/Keras chatter on stderr is ignored)."""
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "internal error:"))]
    assert len(lines) == 1, err
    return lines[0]


def _train(tiny_npz: Path, run: Path, cfg: Path) -> list[str]:
    return ["train", "--data", str(tiny_npz), "--run-dir", str(run), "--config", str(cfg), "--resume"]


def _oserror(code: int, filename: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), *([filename] if filename else []))


def test_divergence_stops_with_message_and_keeps_last_good_checkpoint(tiny_run, tiny_npz, tmp_path, capsys):
    run = clone_run(tiny_run, tmp_path / "run")
    ckpts_before = _snapshot(run / "checkpoints")
    gen_before = (run / "generator.keras").read_bytes()
    boom = write_config(tmp_path / "boom.json", epochs=4, g_lr=1e30, d_lr=1e30)  # Adam steps of 1e30: inf at once
    assert cli_main(_train(tiny_npz, run, boom)) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("error: ") and "diverged" in line, line
    assert str(run / "checkpoints" / "ckpt-0002.npz") in line and "(epoch 2)" in line and "--resume" in line, line
    # nothing of the diverged epochs was recorded: checkpoints, pointer, generator and metrics are as before
    assert _snapshot(run / "checkpoints") == ckpts_before
    assert (run / "generator.keras").read_bytes() == gen_before
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2]
    # and the last good checkpoint resumes (learning rates may change on resume)
    sane = write_config(tmp_path / "sane.json", epochs=3)
    assert cli_main(_train(tiny_npz, run, sane)) == 0
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3]
    assert cio.read_json(run / "checkpoints" / "latest.json")["epoch"] == 3


def test_disk_full_during_checkpoint_write(tiny_run, tiny_npz, tmp_path, capsys, monkeypatch):
    run = clone_run(tiny_run, tmp_path / "run")
    ckpts_before = _snapshot(run / "checkpoints")
    real = cio.atomic_path

    @contextlib.contextmanager
    def disk_full(path, *a, **k):  # the checkpoint's bytes went into the temp file; flushing them hits a full disk
        with real(path, *a, **k) as tmp:
            yield tmp
            if Path(path).name.startswith("ckpt-"):
                assert tmp.stat().st_size > 0
                raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(cio, "atomic_path", disk_full)  # every atomic writer (npz, json, keras) goes through it
    cfg = write_config(tmp_path / "cfg.json", epochs=3)
    rc = cli_main(_train(tiny_npz, run, cfg))
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot write the run folder" in line and "--resume" in line, line  # train's own message
    assert str(run) in line and "No space left on device" in line, line
    assert _snapshot(run / "checkpoints") == ckpts_before  # previous checkpoints and pointer intact, no temp file
    from cxr_utils.train import Checkpoints

    found = Checkpoints(run).load_latest()  # what --resume starts from (a full resume is exercised by the kill test)
    assert found is not None and found[0] == 2
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3]  # trimmed to 2 on resume


def test_read_only_run_folder_is_a_clear_error(tiny_run, tiny_npz, tmp_path, capsys, monkeypatch):
    run = clone_run(tiny_run, tmp_path / "run")
    before = _snapshot(run)
    real = tempfile.mkstemp

    def read_only(*a, **k):  # every atomic write in the run folder starts with a temp file there
        d = Path(k.get("dir") or (a[2] if len(a) > 2 else tempfile.gettempdir())).resolve()
        if d == run.resolve() or run.resolve() in d.parents:
            raise _oserror(errno.EROFS, str(d / "tmpfile"))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc = cli_main(_train(tiny_npz, run, write_config(tmp_path / "cfg.json", epochs=3)))
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot write the run folder" in line and "--resume" in line, line  # train's own message
    assert str(run) in line and "Read-only file system" in line, line
    after = _snapshot(run)
    after.pop("lock", None), before.pop("lock", None)  # the lock file holds the last holder's pid
    assert after == before


def test_disk_full_while_saving_generator(tiny_run, tiny_npz, tmp_path, capsys, monkeypatch):
    run = clone_run(tiny_run, tmp_path / "run")
    gen_before = (run / "generator.keras").read_bytes()
    real = keras.Model.save

    def full(self, filepath, *a, **k):
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")
        raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(keras.Model, "save", full)
    cfg = write_config(tmp_path / "cfg.json", epochs=3)
    rc = cli_main(_train(tiny_npz, run, cfg))
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and "cannot write the run folder" in line and "--resume" in line, line  # train's own message
    assert str(run) in line and "No space left on device" in line, line
    assert (run / "generator.keras").read_bytes() == gen_before  # the previous generator is untouched
    assert not list(run.glob(".generator.keras.*"))  # the half-written temp file is gone
    assert cio.read_json(run / "checkpoints" / "latest.json")["epoch"] == 3  # the training itself was kept
    monkeypatch.setattr(keras.Model, "save", real)
    assert cli_main(_train(tiny_npz, run, cfg)) == 0  # resume: nothing left to train, the generator is written
    from cxr_utils.train import load_generator

    g, c = load_generator(run)
    assert c.epochs == 3 and g.output_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
def test_export_fault_keeps_previous_export(tiny_run, tmp_path, monkeypatch, fault):
    from cxr_utils import sample
    from cxr_utils.errors import UserError

    out = tmp_path / "synthetic"
    sample.export(tiny_run, 3, out, seed=1, progress=False)
    before = _snapshot(out)
    if fault == "disk_full":
        real = Path.write_bytes
        calls = []

        def full(self, data):
            calls.append(self)
            if len(calls) == 4:  # a few PNGs in, the disk is full
                real(self, data[:10])
                raise _oserror(errno.ENOSPC)
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", full)
        expect = "No space left on device"
    else:
        real_mkdtemp = tempfile.mkdtemp

        def read_only(*a, **k):
            if Path(k.get("dir", "")).resolve() == tmp_path.resolve():
                raise _oserror(errno.EROFS, str(tmp_path / ".synthetic.part-x"))
            return real_mkdtemp(*a, **k)

        monkeypatch.setattr(tempfile, "mkdtemp", read_only)
        expect = "Read-only file system"
    with pytest.raises(UserError) as ei:
        sample.export(tiny_run, 3, out, seed=2, progress=False)
    assert str(out) in str(ei.value) and expect in str(ei.value), str(ei.value)
    assert _snapshot(out) == before  # the previous export is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # no staged half-export left
