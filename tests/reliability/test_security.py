"""Archives cannot write outside their folder, Kaggle tokens never leak, nothing is unpickled, models load in safe mode."""

from __future__ import annotations

import ast
import logging
import os
import shutil
import stat
import subprocess
import sys
import types
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxr_utils import data
from cxr_utils.cli import main as cli_main
from cxr_utils.errors import UserError

from .conftest import REPO, clone_run, tiny_config

# ------------------------------------------------------------------------------------------------ archives


def _kaggle_zip(path: Path, real_jpegs: list[Path], evil: zipfile.ZipInfo | None, payload: bytes = b"") -> Path:
    """A Kaggle-layout zip of real X-rays (chest_xray/{train,test}/{NORMAL,PNEUMONIA}/) plus one evil member."""
    with zipfile.ZipFile(path, "w") as zf:
        for split, k0 in (("train", 0), ("test", 3)):
            for cls, files in (("NORMAL", real_jpegs[:8]), ("PNEUMONIA", real_jpegs[8:])):
                for f in files[k0:k0 + 3]:
                    zf.writestr(f"chest_xray/{split}/{cls}/{f.name}", f.read_bytes())
        if evil is not None:
            zf.writestr(evil, payload)
    return path


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): (p.lstat().st_size if p.is_file() else -1) for p in root.rglob("*")}


@pytest.mark.parametrize("member", [
    "../escaped.jpeg",
    "chest_xray/train/NORMAL/../../../../escaped.jpeg",
    "chest_xray\\train\\..\\..\\..\\escaped.jpeg",
    "/ABS/escaped.jpeg",
    "C:/escaped.jpeg",
    "symlink",
])
def test_zip_members_cannot_escape_the_target(real_jpegs, tmp_path, member, capsys):
    outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    if member == "symlink":  # a link to a folder outside, then a file written "through" it
        link = zipfile.ZipInfo("chest_xray/train/NORMAL/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z = tmp_path / "evil.zip"
        _kaggle_zip(z, real_jpegs, link, str(outside).encode())
        with zipfile.ZipFile(z, "a") as zf:
            zf.writestr("chest_xray/train/NORMAL/link/escaped.jpeg", real_jpegs[0].read_bytes())
        shown = "chest_xray/train/NORMAL/link"
    else:
        name = member.replace("/ABS", str(outside))
        z = _kaggle_zip(tmp_path / "evil.zip", real_jpegs, zipfile.ZipInfo(name), real_jpegs[0].read_bytes())
        shown = name
    # a previous good extraction and cache of this archive name must survive the refusal
    data_dir = Path(os.environ["CXR_DATA_DIR"])
    before = _tree(tmp_path)
    with pytest.raises(UserError) as ei:
        data.prepare("kaggle", path=z, size=32, progress=False)
    assert repr(shown) in str(ei.value) or shown in str(ei.value), str(ei.value)
    assert cli_main(["prepare", "--source", "kaggle", "--path", str(z), "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    new = set(_tree(tmp_path)) - set(before)
    # only empty bookkeeping folders may appear (data/raw/kaggle), never a file, never outside the data dir
    assert all((tmp_path / p).is_dir() and (tmp_path / p).resolve().is_relative_to(data_dir.resolve()) for p in new), new
    assert not list(outside.iterdir())
    assert not (tmp_path / "escaped.jpeg").exists() and not Path("/escaped.jpeg").exists()
    assert not Path("C:").exists() and not (Path.cwd() / "C:").exists()


# ------------------------------------------------------------------------------------------------ credentials


def _fake_kaggle(monkeypatch: pytest.MonkeyPatch, key: str) -> list[str]:
    """Replace the kaggle package: authentication works, the network does not, and its error carries the key."""
    calls: list[str] = []

    class KaggleApi:
        def authenticate(self):
            calls.append("auth")
            logging.getLogger("kaggle").debug("authenticating")

        def dataset_download_files(self, dataset, path, unzip, quiet):
            calls.append(dataset)
            raise ConnectionError(f"HTTPSConnectionPool(host='www.kaggle.com'): Max retries (Authorization: Basic {key})")

    for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["kaggle.api.kaggle_api_extended"].KaggleApi = KaggleApi
    return calls


def _files_containing(root: Path, needle: bytes, max_bytes: int = 50_000_000) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.stat().st_size <= max_bytes and needle in p.read_bytes():
            hits.append(str(p))
    return hits


def test_kaggle_token_is_never_printed_logged_or_written(kaggle_isolated, sample_raw_dir, tiny_npz, tmp_path,
                                                         monkeypatch, capfd, caplog):
    from cxr_utils.gan import fit

    caplog.set_level(logging.DEBUG)
    marker = f"SECRETMARK{uuid.uuid4().hex}"
    monkeypatch.setenv("KAGGLE_USERNAME", f"user-{marker}")
    monkeypatch.setenv("KAGGLE_KEY", f"key-{marker}")
    calls = _fake_kaggle(monkeypatch, os.environ["KAGGLE_KEY"])
    monkeypatch.setattr(data.sources, "medmnist_reachable", lambda timeout=0: (False, "zenodo.org unreachable (test)"))
    data_dir = Path(os.environ["CXR_DATA_DIR"])
    shutil.copytree(sample_raw_dir, data_dir / "raw" / "sample")  # the offline fallback needs no pip download

    assert cli_main(["prepare", "--source", "auto", "--size", "32"]) == 0  # kaggle fails, auto falls back to sample
    assert cli_main(["prepare", "--source", "kaggle", "--size", "32"]) == 2  # explicit kaggle: one clear error
    assert calls == ["auth", data.KAGGLE_DATASET] * 2
    run = tmp_path / "run"
    fit.train_from_npz(data_dir / "sample-32.npz", run, tiny_config(epochs=1), progress=0, show_samples=False)
    out, err = capfd.readouterr()
    assert "kaggle" in out + err  # the attempt is reported...
    for text, where in ((out, "stdout"), (err, "stderr"), (caplog.text, "log")):
        assert marker not in text, f"token in {where}"  # ...without the token
    for root in (data_dir, run, kaggle_isolated):
        assert not _files_containing(root, marker.encode()), root
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    leaked = [f for f in tracked if f and (REPO / f).is_file() and marker.encode() in (REPO / f).read_bytes()]
    assert not leaked
    assert not list(kaggle_isolated.rglob("kaggle.json"))  # env credentials are never copied into a file


def test_kaggle_json_written_by_the_tool_is_private_from_the_first_byte(kaggle_isolated, monkeypatch, capfd):
    marker = f"SECRETMARK{uuid.uuid4().hex}"
    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=lambda k: {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": f"key-{marker}"}[k])
    monkeypatch.setitem(sys.modules, "google", sys.modules.get("google") or types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    _fake_kaggle(monkeypatch, f"key-{marker}")
    modes: list[int] = []
    real_write_text = Path.write_text

    def spy(self, text, *a, **k):  # the mode of the file at the moment the secret goes in
        if marker in text:
            modes.append(stat.S_IMODE(self.stat().st_mode))
        return real_write_text(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", spy)
    old = os.umask(0)  # even with a permissive umask
    try:
        with pytest.raises(UserError):
            data.prepare("kaggle", size=32, progress=False)
    finally:
        os.umask(old)
    kj = kaggle_isolated / ".kaggle" / "kaggle.json"
    assert stat.S_IMODE(kj.stat().st_mode) == 0o600
    assert modes and all(m == 0o600 for m in modes), modes
    out, err = capfd.readouterr()
    assert marker not in out + err
    assert [p.name for p in kj.parent.iterdir()] == ["kaggle.json"]  # no temp copy of the secret left


# ------------------------------------------------------------------------------------------------ loading


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_npz(path: Path, marker: Path, **extra: np.ndarray) -> Path:
    np.savez(path, images=np.array([_Evil(marker)], dtype=object), labels=np.zeros(1, np.int64),
             split=np.array(["train"]), **extra)
    return path


def test_object_arrays_are_refused_never_unpickled(tiny_run, tmp_path, capsys):
    from cxr_utils.gan.checkpoints import Checkpoints

    marker = tmp_path / "UNPICKLED"
    evil = _evil_npz(tmp_path / "evil.npz", marker)
    with pytest.raises(UserError, match="evil.npz"):
        data.load(evil)
    assert cli_main(["train", "--data", str(evil), "--run-dir", str(tmp_path / "r"), "--smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data ") and str(evil) in err and err.count("\n") == 1, err
    assert cli_main(["prepare", "--source", "medmnist", "--path", str(evil), "--size", "32"]) == 2
    # a checkpoint with an object array is skipped (with a warning), the previous one is used
    run = clone_run(tiny_run, tmp_path / "run")
    _evil_npz(run / "checkpoints" / "ckpt-0003.npz", marker, meta_epoch=np.int64(3))
    found = Checkpoints(run).load_latest()
    assert found is not None and found[0] == 2
    assert "skipping unreadable checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_generator_with_lambda_layer_is_refused(tiny_run, tmp_path, capsys, monkeypatch):
    import keras

    from cxr_utils.gan.runs import load_generator

    run = clone_run(tiny_run, tmp_path / "run")
    marker = tmp_path / "LAMBDA_RAN"
    monkeypatch.setenv("CXR_TEST_LAMBDA_MARKER", str(marker))  # the path reaches the lambda without a default argument,
    # which Keras could not load back even unsafely (its defaults come back from JSON as a list)
    noise = keras.Input((16,), name="noise")
    label = keras.Input((), dtype="int32", name="label")
    x = keras.layers.Lambda(lambda t: (__import__("pathlib").Path(__import__("os").environ["CXR_TEST_LAMBDA_MARKER"]).touch(),
                                       t)[1])(noise)
    # both inputs reach the output, as in a real generator: Keras 3.13 (Colab's) refuses a model with an unused input
    x = keras.layers.Concatenate()([x, keras.layers.Embedding(2, 4)(label)])
    x = keras.layers.Dense(32 * 32 * 3)(x)
    model = keras.Model([noise, label], keras.layers.Reshape((32, 32, 3))(x))
    marker.unlink(missing_ok=True)  # building the model above ran the lambda once, here in the test
    (run / "generator.keras").unlink()
    model.save(run / "generator.keras")
    with pytest.raises(UserError, match="(?i)lambda|safe mode|safe_mode") as ei:
        load_generator(run)
    assert str(run / "generator.keras") in str(ei.value)
    # a foreign model file is bad input: one line naming it, exit 2 (not an "internal error" that suggests safe_mode=False)
    capsys.readouterr()
    rc = cli_main(["sample", "--run-dir", str(run), "--n-per-class", "2", "--out", str(tmp_path / "syn"), "--which", "last"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(run / "generator.keras") in err and "safe_mode=False" not in err, err
    assert not marker.exists() and not (tmp_path / "syn").exists()
    # the kept generator (sample's default) is loaded the same way
    best = run / "generator-best.keras"
    assert best.is_file()
    best.unlink()
    model.save(best)
    rc = cli_main(["sample", "--run-dir", str(run), "--n-per-class", "2", "--out", str(tmp_path / "syn")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(best) in err, err
    assert not marker.exists() and not (tmp_path / "syn").exists()
    # the file does carry the code: loaded without safe mode and called, the Lambda runs (what safe mode prevented)
    unsafe = keras.saving.load_model(best, safe_mode=False)
    unsafe([np.zeros((1, 16), np.float32), np.zeros((1,), np.int32)])
    assert marker.exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def test_static_no_pickle_anywhere_in_the_package():
    files = sorted((REPO / "cxr_utils").rglob("*.py"))
    assert len(files) >= 10
    problems = []
    n_np_load = n_load_model = 0
    for f in files:
        tree = ast.parse(f.read_text(encoding="utf-8"), filename=str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                bad = [m for m in mods if m.split(".")[0] in {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve",
                                                                "cloudpickle", "marshal"}]
                if bad:
                    problems.append(f"{f.name}:{node.lineno}: imports {bad}")
        for c in _calls(tree):
            name = _name(c.func)
            if name in ("np.load", "numpy.load"):
                n_np_load += 1
                if not _kw_is(c, "allow_pickle", False):
                    problems.append(f"{f.name}:{c.lineno}: {name} without allow_pickle=False")
            if name.endswith("load_model"):
                n_load_model += 1
                if not _kw_is(c, "safe_mode", True):
                    problems.append(f"{f.name}:{c.lineno}: {name} without safe_mode=True")
            if name.endswith(("read_pickle", "torch.load", "enable_unsafe_deserialization")):
                problems.append(f"{f.name}:{c.lineno}: {name}")
            if _kw_is(c, "allow_pickle", True) or _kw_is(c, "safe_mode", False):
                problems.append(f"{f.name}:{c.lineno}: {name} with pickle/unsafe mode on")
    assert not problems, problems
    assert n_np_load >= 1 and n_load_model >= 1  # the check really saw the loaders (all .npz reads: io.load_npz)


def test_npz_written_by_the_package_hold_no_object_arrays(tiny_run, tiny_npz):
    for p in [tiny_npz, *sorted((tiny_run / "checkpoints").glob("ckpt-*.npz"))]:
        with np.load(p, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files), p  # loads without pickle, so no object arrays
    with zipfile.ZipFile(tiny_run / "generator.keras") as zf:  # a Keras v3 archive: JSON config + HDF5 weights
        assert {"config.json", "model.weights.h5"} <= set(zf.namelist())
        assert all(not n.endswith((".pkl", ".pickle")) for n in zf.namelist())
