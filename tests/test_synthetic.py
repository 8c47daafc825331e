"""cxr_utils.evaluation.synthetic: export PNGs + manifest from a run, read a synthetic folder back."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from _helpers import tiny_generator  # noqa: E402
from PIL import Image  # noqa: E402

from cxr_utils import cli  # noqa: E402
from cxr_utils.config import CLASS_NAMES, SYNTHETIC_TAG, GANConfig  # noqa: E402
from cxr_utils.errors import UserError  # noqa: E402
from cxr_utils.evaluation import synthetic
from cxr_utils.files import file_digest  # noqa: E402
from cxr_utils.gan import generate as sample
from cxr_utils.gan import runs

S, C, LATENT = 32, 3, 8


def _tiny_generator(seed: int = 0):
    """A generator with the contract's interface: [noise (B, latent) f32, labels (B,) i32] -> (B, S, S, C) in [-1, 1]."""
    return tiny_generator(seed, S, C, LATENT)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run folder with generator.keras, loaded through the same safe_mode=True path as runs.load_generator."""
    rd = tmp_path / "runs" / "toy-run"
    rd.mkdir(parents=True)
    _tiny_generator().save(rd / "generator.keras")
    cfg = GANConfig(image_size=S, channels=C, latent_dim=LATENT)

    def fake_load(run: Path, which="best"):
        # the file export resolved (it passes a Path), loaded the way runs.load_generator loads it
        src = which if isinstance(which, Path) else Path(run) / "generator.keras"
        return keras.models.load_model(src, safe_mode=True, compile=False), cfg

    monkeypatch.setattr(runs, "load_generator", fake_load)
    return rd


def _read_csv(p: Path) -> list[dict[str, str]]:
    with open(p, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_export_writes_tagged_pngs_and_manifest(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "syn"
    assert synthetic.export(run_dir, 5, out, seed=3, batch_size=4, progress=False) == out
    for name in CLASS_NAMES:
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == [f"syn-s3-{i:06d}.png" for i in range(1, 6)]
    rows = _read_csv(out / "manifest.csv")
    assert list(rows[0]) == ["file", "class", "label", "seed", "run", "generator_sha256", "synthetic", "generator"]
    # no quality evaluation in this run: "best" falls back to the last generator and says so
    assert {r["generator"] for r in rows} == {"last (EMA generator at the end of training)"}
    assert len(rows) == 10
    assert [r["label"] for r in rows] == ["0"] * 5 + ["1"] * 5
    sha = file_digest(run_dir / "generator.keras")
    assert {r["generator_sha256"] for r in rows} == {sha} and len(sha) == 64
    assert {r["synthetic"] for r in rows} == {"true"} and {r["run"] for r in rows} == {"toy-run"}
    assert {r["seed"] for r in rows} == {"3"}
    with Image.open(out / rows[7]["file"]) as im:
        assert im.mode == "L" and im.size == (S, S)
        assert im.text["Synthetic"] == "true"
        assert im.text["Description"] == SYNTHETIC_TAG
        assert im.text["Generator-SHA256"] == sha
        assert im.text["Source-Run"] == "toy-run"
        assert im.text["Software"].startswith("cxr-utils")
    # pixels are exactly the generator's output for the seed's noise, channels averaged
    gen = keras.models.load_model(run_dir / "generator.keras", safe_mode=True, compile=False)
    expect = sample.to_uint8(keras.ops.convert_to_numpy(
        gen([sample.noise_for(3, 10, LATENT), np.repeat(np.arange(2), 5).astype(np.int32)], training=False)))
    images, labels = synthetic.load_synthetic(out, expected_size=S)
    assert images.dtype == np.uint8 and images.shape == (10, S, S)
    assert labels.dtype == np.int64 and labels.tolist() == [0] * 5 + [1] * 5
    assert np.abs(images.astype(int) - expect.astype(int)).max() <= 1  # batch size may move float sums by 1 ulp
    # nothing is left behind in the parent folder (the staging folder was renamed into place)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "syn"]


def test_export_uses_the_kept_generator_by_default_and_names_it(run_dir: Path, tmp_path: Path) -> None:
    from cxr_utils.files import atomic_write_json
    from cxr_utils.gan import tracker as quality

    best = _tiny_generator(seed=5)  # other weights than generator.keras
    best.save(run_dir / quality.BEST_FILE)
    atomic_write_json(run_dir / quality.BEST_JSON, {"epoch": 40, "rule": "the rule"})
    rows = _read_csv(synthetic.export(run_dir, 2, tmp_path / "best", seed=1, progress=False) / "manifest.csv")
    assert {r["generator"] for r in rows} == {"best (epoch 40, the rule)"}
    assert {r["generator_sha256"] for r in rows} == {file_digest(run_dir / quality.BEST_FILE)}
    images, _ = synthetic.load_synthetic(tmp_path / "best", expected_size=S)
    expect = sample.to_uint8(keras.ops.convert_to_numpy(
        best([sample.noise_for(1, 4, LATENT), np.repeat(np.arange(2), 2).astype(np.int32)], training=False)))
    assert np.abs(images.astype(int) - expect.astype(int)).max() <= 1  # the pixels come from the kept generator
    last = _read_csv(synthetic.export(run_dir, 2, tmp_path / "last", seed=1, progress=False, which="last") / "manifest.csv")
    assert {r["generator_sha256"] for r in last} == {file_digest(run_dir / "generator.keras")}


def test_export_is_a_pure_function_of_the_seed(run_dir: Path, tmp_path: Path) -> None:
    a = synthetic.export(run_dir, 3, tmp_path / "a", seed=7, progress=False)
    b = synthetic.export(run_dir, 3, tmp_path / "b", seed=7, progress=False)
    c = synthetic.export(run_dir, 3, tmp_path / "c", seed=8, progress=False)
    ia, _ = synthetic.load_synthetic(a)
    ib, _ = synthetic.load_synthetic(b)
    ic, _ = synthetic.load_synthetic(c)
    assert np.array_equal(ia, ib)
    assert not np.array_equal(ia, ic)
    assert (a / "NORMAL" / "syn-s7-000001.png").read_bytes() == (b / "NORMAL" / "syn-s7-000001.png").read_bytes()


def test_export_writes_a_count_per_class_and_a_subset_rule_takes_the_first_in_file_order(run_dir: Path,
                                                                                          tmp_path: Path) -> None:
    out = synthetic.export(run_dir, [2, 5], tmp_path / "per-class", seed=3, progress=False)
    assert [sorted(p.name for p in (out / c).iterdir()) for c in CLASS_NAMES] == [
        [f"syn-s3-{i:06d}.png" for i in range(1, 3)], [f"syn-s3-{i:06d}.png" for i in range(1, 6)]]
    rows = _read_csv(out / "manifest.csv")
    assert [r["label"] for r in rows] == ["0"] * 2 + ["1"] * 5
    images, labels = synthetic.load_synthetic(out, expected_size=S)
    gen = keras.models.load_model(run_dir / "generator.keras", safe_mode=True, compile=False)
    expect = sample.to_uint8(keras.ops.convert_to_numpy(
        gen([sample.noise_for(3, 7, LATENT), np.array([0, 0, 1, 1, 1, 1, 1], np.int32)], training=False)))
    assert np.abs(images.astype(int) - expect.astype(int)).max() <= 1  # noise row i -> image i, in file order
    sub, sub_y = synthetic.first_per_class(images, labels, [1, 3], out)
    assert np.array_equal(sub, images[[0, 2, 3, 4]]) and sub_y.tolist() == [0, 1, 1, 1]
    with pytest.raises(UserError, match=r"too few synthetic images \(NORMAL needs 3, it holds 2\); .*--n-per-class 3,5 "):
        synthetic.first_per_class(images, labels, [3, 5], out)
    with pytest.raises(UserError, match="--n-per-class 1,2,3: give one count, or one per class"):
        synthetic.export(run_dir, [1, 2, 3], tmp_path / "bad", progress=False)
    assert synthetic.per_class_for_ratio([1080, 3100, 5], 0.5) == [540, 1550, 3]  # half an image rounds up
    assert synthetic.per_class_for_ratio([7, 3], 0.1) == [1, 0] and synthetic.per_class_for_ratio([3], 0) == [0]


def test_export_refuses_foreign_folder_and_replaces_own_previous_export(run_dir: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"mine: folder is not empty and is not an export of run 'toy-run'"):
        synthetic.export(run_dir, 2, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"

    out = tmp_path / "syn"
    synthetic.export(run_dir, 4, out, seed=1, progress=False)
    synthetic.export(run_dir, 2, out, seed=2, progress=False)  # same run: replaced cleanly, no stale files
    assert sorted(p.name for p in (out / "NORMAL").iterdir()) == ["syn-s2-000001.png", "syn-s2-000002.png"]
    assert len(_read_csv(out / "manifest.csv")) == 4

    (out / "NORMAL" / "extra.png").write_bytes(b"user file")  # not listed in the manifest: refuse, don't delete
    with pytest.raises(UserError, match="not an export of run"):
        synthetic.export(run_dir, 2, out, progress=False)
    assert (out / "NORMAL" / "extra.png").exists()

    other = tmp_path / "runs" / "other-run"
    other.mkdir()
    (other / "generator.keras").write_bytes((run_dir / "generator.keras").read_bytes())
    (out / "NORMAL" / "extra.png").unlink()
    with pytest.raises(UserError, match="not an export of run 'other-run'"):
        synthetic.export(other, 2, out, progress=False)

    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        synthetic.export(run_dir, 2, afile, progress=False)


def test_export_flushes_its_files_with_one_syncfs_not_one_fsync_per_png(run_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic._syncfs()
    assert real is not None  # Linux >= 5.8 here: the one-call path is the one that runs
    syncfs_calls: list[list[str]] = []
    fsynced: list[str] = []

    def counting_syncfs(fd: int) -> int:  # the real call, recording what the folder held when it ran
        syncfs_calls.append(sorted(p.relative_to(stage[0]).as_posix() for p in stage[0].rglob("*.png")))
        return real(fd)

    stage: list[Path] = []
    real_init = synthetic._StageFlush.__init__

    def init(self, folder: Path) -> None:
        stage.append(folder)
        real_init(self, folder)

    monkeypatch.setattr(synthetic._StageFlush, "__init__", init)
    monkeypatch.setattr(synthetic, "_syncfs", lambda: counting_syncfs)
    monkeypatch.setattr(synthetic, "fsync_file", lambda p, report_as=None: fsynced.append(str(p)))
    out = synthetic.export(run_dir, 3, tmp_path / "syn", seed=0, progress=False)
    assert len(syncfs_calls) == 1 and len(syncfs_calls[0]) == 6 and fsynced == []  # every PNG written, then one call
    assert not stage[0].exists() and len(list(out.rglob("*.png"))) == 6  # ... and then the folder was renamed in
    # where syncfs is missing (or too old to report errors), every file is fsynced as before
    monkeypatch.setattr(synthetic, "_syncfs", lambda: None)
    synthetic.export(run_dir, 3, tmp_path / "syn", seed=1, progress=False)
    assert sorted(Path(p).name for p in fsynced) == ["manifest.csv"] + [f"syn-s1-{i:06d}.png" for i in (1, 1, 2, 2, 3, 3)]


def test_a_failed_syncfs_leaves_nothing_half_written(run_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(synthetic, "_syncfs", lambda: failing)
    with pytest.raises(UserError, match=r"syn: cannot write the export \(Input/output error\); .*nothing was left "
                                        r"half-written"):
        synthetic.export(run_dir, 2, tmp_path / "syn", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["runs"]  # no export, no staging folder
    # a file system that cannot syncfs (EINVAL) falls back to one fsync per file and succeeds
    monkeypatch.setattr(synthetic, "_syncfs", lambda: lambda fd: (ctypes.set_errno(errno.EINVAL), -1)[1])
    assert len(list(synthetic.export(run_dir, 2, tmp_path / "syn", progress=False).rglob("*.png"))) == 4


def test_export_removes_the_staging_folders_an_interrupted_export_left(run_dir: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "syn"
    abandoned = tmp_path / ".syn.part-k1ll3d"  # what a Colab reset mid-export leaves beside OUT (on Drive)
    (abandoned / "NORMAL").mkdir(parents=True)
    (abandoned / "NORMAL" / "syn-s0-000001.png").write_bytes(b"half")
    live = tmp_path / ".syn.part-l1ve"  # another export still writing into its stage: left alone
    live.mkdir()
    other = tmp_path / ".other.part-x"  # a different OUT's stage: not ours to touch
    other.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        synthetic.export(run_dir, 2, out, progress=False)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == [".other.part-x", ".syn.part-l1ve", "runs", "syn"]
    synthetic.export(run_dir, 2, out, progress=False)  # the other export has ended (its lock is gone)
    assert sorted(os.listdir(tmp_path)) == [".other.part-x", "runs", "syn"]


def test_export_user_errors(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(UserError, match="--run-dir .*nope: folder not found"):
        synthetic.export(tmp_path / "nope", 2, tmp_path / "o")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(UserError, match="no generator.keras"):
        synthetic.export(empty, 2, tmp_path / "o")
    with pytest.raises(UserError, match="--n-per-class: must be >= 1"):
        synthetic.export(run_dir, 0, tmp_path / "o")
    with pytest.raises(UserError, match="--batch-size: must be >= 1"):
        synthetic.export(run_dir, 1, tmp_path / "o", batch_size=0)


def test_cli_sample(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-out"
    assert cli.main(["sample", "--run-dir", str(run_dir), "--n-per-class", "3", "--out", str(out), "--seed", "4"]) == 0
    assert "wrote 6 synthetic PNGs" in capsys.readouterr().out
    assert len(synthetic.read_manifest(out)) == 6
    assert cli.main(["sample", "--run-dir", str(run_dir), "--n-per-class", "1,2", "--out", str(out), "--seed", "4"]) == 0
    assert "wrote 3 synthetic PNGs" in capsys.readouterr().out
    assert [r["class"] for r in synthetic.read_manifest(out)] == ["NORMAL", "PNEUMONIA", "PNEUMONIA"]
    with pytest.raises(SystemExit) as bad:  # argparse's one line, exit 2
        cli.main(["sample", "--run-dir", str(run_dir), "--n-per-class", "x", "--out", str(out)])
    assert bad.value.code == 2 and "give a whole number, or one per class" in capsys.readouterr().err
    assert cli.main(["sample", "--run-dir", str(tmp_path / "missing"), "--n-per-class", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: folder not found" in err


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_load_synthetic_errors(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with pytest.raises(UserError, match="synthetic folder not found"):
        synthetic.load_synthetic(root)
    _png(root / "NORMAL" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(UserError, match=r"PNEUMONIA: class folder missing"):
        synthetic.load_synthetic(root)
    (root / "PNEUMONIA").mkdir()
    with pytest.raises(UserError, match=r"PNEUMONIA: no \.png images"):
        synthetic.load_synthetic(root)
    _png(root / "PNEUMONIA" / "b.png", np.full((8, 8), 200, np.uint8))
    imgs, labels = synthetic.load_synthetic(root)
    assert imgs.shape == (2, 8, 8) and labels.tolist() == [0, 1] and imgs[1, 0, 0] == 200
    with pytest.raises(UserError, match=r"a\.png: image is 8x8 but 16x16 was expected"):
        synthetic.load_synthetic(root, expected_size=16)
    _png(root / "PNEUMONIA" / "c.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(UserError, match=r"c\.png: image is 16x16 but .*a\.png is 8x8"):
        synthetic.load_synthetic(root)
    (root / "PNEUMONIA" / "c.png").unlink()
    _png(root / "PNEUMONIA" / "d.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(UserError, match=r"d\.png: image is 6x8, not square"):
        synthetic.load_synthetic(root)
    (root / "PNEUMONIA" / "d.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(UserError, match=r"d\.png: unreadable PNG"):
        synthetic.load_synthetic(root)


def test_load_synthetic_colour_and_16bit(tmp_path: Path) -> None:
    root = tmp_path / "s"
    rgb = np.zeros((4, 4, 3), np.uint8)
    # the package's one grey conversion (data.to_gray, as for real images): ITU-R 601 luma, 0.299*30 + 0.587*60 +
    # 0.114*91 = 54.56 -> 55 (before issue 13 a synthetic folder had its own channel mean, 60)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 91
    _png(root / "A" / "rgb.png", rgb)
    _png(root / "B" / "x16.png", np.full((4, 4), 65535, np.uint16))  # PIL writes uint16 as a 16-bit PNG
    imgs, labels = synthetic.load_synthetic(root, class_names=("A", "B"))
    assert imgs[0].tolist() == [[55] * 4] * 4
    assert imgs[1].tolist() == [[255] * 4] * 4
    assert labels.tolist() == [0, 1]


# (disk full / read-only during an export: tests/reliability/test_faults.py)


def test_export_flush_benchmark_measures_both_ways_and_leaves_nothing(tmp_path: Path) -> None:
    from benchmarks import export_flush

    r = export_flush.run(n=12, where=tmp_path, repeats=2)
    assert r["n"] == 12 and r["repeats"] == 2 and r["syncfs_available"] is True
    assert set(r["modes"]) == {"fsync-each", "syncfs"}
    assert all(len(m["flush_seconds_all"]) == 2 and m["flush_ms_per_png"] > 0 for m in r["modes"].values())
    assert 3000 < r["bytes_per_png"] < 6000  # export-sized PNGs (64 px, text chunks)
    assert list(tmp_path.iterdir()) == []  # every staging folder removed
