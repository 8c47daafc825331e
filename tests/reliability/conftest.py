"""Fixtures of the reliability suite: a tiny 32 px cache from the real sample X-rays, a tiny GAN config, one
trained tiny run per session, and helpers to run the real CLI trainer in a subprocess that can be killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KILLABLE_CLI = HERE / "_killable_cli.py"

# small enough that a CLI run is dominated by TensorFlow's start-up, same code path as a real run
# (a checkpoint and a sample grid every epoch: the kill tests wait for them and resume from them)
TINY: dict[str, Any] = dict(image_size=32, g_base_filters=8, d_base_filters=8, latent_dim=16, embed_dim=8,
                            batch_size=4, n_fixed_noise=2, precision="fp32", deterministic=True, seed=7, epochs=2,
                            checkpoint_every=1, checkpoint_minutes=0, sample_every=1)


def tiny_config(**over: Any):
    """A tiny GANConfig (32 px, 8-32 filters, batch 4) with overrides."""
    from cxr_utils.config import GANConfig

    return GANConfig.from_dict({**TINY, **over})


def write_config(path: Path, **over: Any) -> Path:
    """Write a tiny config JSON for `train --config`."""
    path.write_text(json.dumps({**TINY, **over}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sample_raw_dir(sample_data_dir: Path) -> Path:
    """The 16 real sample JPEGs as extracted by the data layer (raw/sample/{NORMAL,PNEUMONIA}/*.jpeg)."""
    d = sample_data_dir / "raw" / "sample"
    assert (d / "SOURCE.json").is_file(), d
    return d


@pytest.fixture(scope="session")
def real_jpegs(sample_raw_dir: Path) -> list[Path]:
    """The 16 real sample X-ray JPEG files, NORMAL first."""
    files = sorted((sample_raw_dir / "NORMAL").iterdir()) + sorted((sample_raw_dir / "PNEUMONIA").iterdir())
    assert len(files) == 16
    return files


@pytest.fixture(scope="session")
def tiny_npz(sample_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real sample source prepared at 32 px (10 train images: 5 NORMAL + 5 PNEUMONIA)."""
    from cxr_utils import data

    out = tmp_path_factory.mktemp("tiny-data") / "sample-32.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXR_DATA_DIR", str(sample_data_dir))  # the raw sample images are already there
        mp.delenv("CXR_RAW_DIR", raising=False)
        data.prepare(source="sample", size=32, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run trained in-process for 2 epochs (read-only for tests: copy it with clone_run before changing it)."""
    from cxr_utils.gan import fit

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    fit.train_from_npz(tiny_npz, run, tiny_config(epochs=2), progress=0, show_samples=False)
    return run


def good_tree(root: Path, real_jpegs: list[Path], k: int = 3) -> Path:
    """k real JPEGs per class (their original Kaggle names) under root/NORMAL and root/PNEUMONIA."""
    for cls, files in (("NORMAL", real_jpegs[:8]), ("PNEUMONIA", real_jpegs[8:])):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for f in files[:k]:
            shutil.copyfile(f, root / cls / f.name)
    return root


def clone_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder."""
    shutil.copytree(src, dst)
    return dst


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: the repo importable, TF quiet, plus extras."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


class CliProcess:
    """`python -m cxr_utils ...` (through _killable_cli.py, which can pause inside one file write) in a subprocess."""

    def __init__(self, args: list[str], logdir: Path, name: str, **env: str):
        self.name = name
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen([sys.executable, str(KILLABLE_CLI), *args], stdout=o, stderr=e,
                                         env=cli_env(**env), cwd=str(logdir))

    def logs(self) -> str:
        return f"--- {self.name} stdout ---\n{self.out.read_text(errors='replace')}\n--- stderr ---\n" \
               f"{self.err.read_text(errors='replace')[-4000:]}"

    def wait_for(self, cond: Callable[[], bool], timeout: float = 240.0, what: str = "") -> None:
        """Poll cond() until true; fail (with the logs) if the process exits first or the timeout passes."""
        t0 = time.monotonic()
        while not cond():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.proc.returncode}) before {what}\n{self.logs()}")
            if time.monotonic() - t0 > timeout:
                self.kill()
                pytest.fail(f"{self.name}: timeout waiting for {what}\n{self.logs()}")
            time.sleep(0.02)

    def kill(self) -> int:
        """kill -9 and reap; returns the exit status (-9 if the kill landed while it ran)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=60)

    def finish(self, timeout: float = 300.0) -> int:
        """Wait for a normal exit."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name}: did not finish in {timeout} s\n{self.logs()}")
            raise


@pytest.fixture
def kaggle_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real Kaggle credentials and no kagglehub visible: HOME and KAGGLE_CONFIG_DIR point into tmp_path."""
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # and no kagglehub, whether or not this machine has it
    return home
