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

from cxr_utils import files as cio
from cxr_utils.cli import main as cli_main
from cxr_utils.gan.fit import read_metrics

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
    from cxr_utils.gan.checkpoints import Checkpoints

    found = Checkpoints(run).load_latest()  # what --resume starts from
    assert found is not None and found[0] == 2
    failed_rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in failed_rows] == [1, 2, 3]  # epoch 3's row was written before its checkpoint
    monkeypatch.setattr(cio, "atomic_path", real)  # the disk has space again: resume
    assert cli_main(_train(tiny_npz, run, cfg)) == 0
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]  # the orphan row was trimmed and epoch 3 re-run, once
    assert rows[2]["d_loss"] == failed_rows[2]["d_loss"]  # --deterministic: the re-run epoch 3 is the same epoch 3
    assert cio.read_json(run / "checkpoints" / "latest.json")["epoch"] == 3


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1, code: int = errno.ENOSPC) -> list[str]:
    """The real os.fsync, except that the nth flush of a temp file of `name` (.NAME.*.part*) raises OSError(code):
    the bytes went into the file, then the disk refused to keep them (delayed allocation on a full disk, EIO)."""
    real = os.fsync
    seen: list[str] = []

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if target.startswith(f".{name}") and ".part" in target:
            seen.append(target)
            if len(seen) == nth:
                raise _oserror(code)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _fail_write(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1) -> list[str]:
    """The nth write of a temp file of `name` puts half its bytes on disk, then the disk is full."""
    real = Path.write_bytes
    seen: list[str] = []

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name.startswith(f".{name}") and ".part" in self.name:
            seen.append(self.name)
            if len(seen) == nth:
                real(self, data[: len(data) // 2])
                raise _oserror(errno.ENOSPC)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return seen


RUN_FILES = ("checkpoints", "config.json", "metrics.csv", "generator.keras")  # what a resume reads


@pytest.mark.parametrize("name, fault, nth", [
    ("ckpt-0003", "flush", 1),
    ("config.json", "flush", 1),  # written first, once the checkpoint restored
    ("config.json", "write", 1),
    ("metrics.csv", "write", 1),  # the 1st write trims the file to the checkpoint, before any training
    ("metrics.csv", "flush", 2),  # the 2nd adds epoch 3's row (after the train step is traced: the slow case)
])
def test_disk_full_while_training_writes_keeps_the_run_resumable(tiny_run, tiny_npz, tmp_path, capsys, monkeypatch,
                                                                  name, fault, nth):
    run = clone_run(tiny_run, tmp_path / "run")
    before = {k: v for k, v in _snapshot(run).items() if k.startswith(RUN_FILES)}
    seen = (_fail_fsync if fault == "flush" else _fail_write)(monkeypatch, name, nth)
    cfg = write_config(tmp_path / "cfg.json", epochs=3)
    rc = cli_main(_train(tiny_npz, run, cfg))
    line = _error_line(capsys.readouterr().err)
    assert len(seen) == nth, seen  # the fault landed where intended
    assert rc == 2 and "cannot write the run folder" in line and "--resume" in line, line  # train's own message
    assert str(run) in line and "No space left on device" in line, line
    if fault == "flush":
        assert f"{run}/{'checkpoints/' if name.startswith('ckpt') else ''}{name}" in line, line  # names the file
    after = {k: v for k, v in _snapshot(run).items() if k.startswith(RUN_FILES)}
    if name == "ckpt-0003":  # epoch 3's metrics row was written before its checkpoint; resume trims it
        assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2, 3]
        after.pop("metrics.csv"), before.pop("metrics.csv")
    if name != "config.json":  # config.json was rewritten (whole) before the fault, with the new epochs=3
        assert cio.read_json(run / "config.json")["epochs"] == 3
        after.pop("config.json"), before.pop("config.json")
    assert after == before  # checkpoints, latest.json, generator.keras (and the faulted file) as they were
    assert not [p for p in run.rglob(".*") if ".part" in p.name]  # no temp file left behind


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
    from cxr_utils.gan.runs import load_generator

    g, c = load_generator(run)
    assert c.epochs == 3 and g.output_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("fault", ["disk_full", "read_only", "flush_fails", "syncfs_fails"])
def test_export_fault_keeps_previous_export(tiny_run, tmp_path, monkeypatch, fault):
    from cxr_utils.errors import UserError
    from cxr_utils.evaluation import synthetic

    out = tmp_path / "synthetic"
    synthetic.export(tiny_run, 3, out, seed=1, progress=False)
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
    elif fault == "syncfs_fails":  # every PNG written whole, then the one flush of the staged folder fails (EIO)
        import ctypes

        def failing_syncfs(fd):
            ctypes.set_errno(errno.EIO)
            return -1

        monkeypatch.setattr(synthetic, "_syncfs", lambda: failing_syncfs)
        expect = "Input/output error"
    elif fault == "flush_fails":  # no syncfs here: every PNG written whole, then fsync of the 3rd one fails
        monkeypatch.setattr(synthetic, "_syncfs", lambda: None)
        real_fsync, flushed = os.fsync, []

        def fsync(fd):
            if Path(os.readlink(f"/proc/self/fd/{fd}")).suffix == ".png":
                flushed.append(fd)
                if len(flushed) == 3:
                    raise _oserror(errno.EIO)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        expect = "Input/output error"
    else:
        real_mkdtemp = tempfile.mkdtemp

        def read_only(*a, **k):
            if Path(k.get("dir", "")).resolve() == tmp_path.resolve():
                raise _oserror(errno.EROFS, str(tmp_path / ".synthetic.part-x"))
            return real_mkdtemp(*a, **k)

        monkeypatch.setattr(tempfile, "mkdtemp", read_only)
        expect = "Read-only file system"
    with pytest.raises(UserError) as ei:
        synthetic.export(tiny_run, 3, out, seed=2, progress=False)
    assert str(out) in str(ei.value) and expect in str(ei.value), str(ei.value)
    assert _snapshot(out) == before  # the previous export is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # no staged half-export left
