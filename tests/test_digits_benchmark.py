"""benchmarks/digits_tstr.py: a tiny end-to-end run (same code path) and its JSON; TRTR checked independently."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    """The benchmark script as a module (it is a script, not part of the package)."""
    if "digits_tstr" in sys.modules:
        return sys.modules["digits_tstr"]
    spec = importlib.util.spec_from_file_location("digits_tstr", ROOT / "benchmarks" / "digits_tstr.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["digits_tstr"] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    return mod


def _independent_split(size: int, fit_part_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's real split rebuilt from scratch with sklearn + cv2 (not its helpers): (x_train, y_train, x_test,
    y_test), x as [0, 1] pixel rows. fit_part_only: the 85 % of the 70 % split that the GAN trains on."""
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.images, d.target, test_size=0.3, stratify=d.target, random_state=0)

    def up(a: np.ndarray) -> np.ndarray:
        r = [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in a.astype(np.float32) * (255.0 / 16.0)]
        return np.clip(np.rint(np.stack(r)), 0, 255).astype(np.uint8).reshape(len(a), -1) / 255.0

    if fit_part_only:
        xtr, _, ytr, _ = train_test_split(xtr, ytr, test_size=0.15, stratify=ytr, random_state=0)
    return up(xtr), ytr, up(xte), yte


def _independent_trtr(size: int, fit_part_only: bool = True) -> float:
    """TRTR recomputed from scratch (see _independent_split)."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = _independent_split(size, fit_part_only)
    return float(LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte))


def _independent_tstr(folder: Path, size: int, test_every: int = 1) -> float:
    """TSTR recomputed from the exported PNGs on disk (read with PIL, digit folders 0-9, files in name order), on
    every `test_every`-th real test digit."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    x, y = [], []
    for digit in range(10):
        for p in sorted((folder / str(digit)).glob("*.png")):
            with Image.open(p) as im:
                assert im.mode == "L" and im.size == (size, size), p
                x.append(np.asarray(im, np.float64).ravel() / 255.0)
            y.append(digit)
    _, _, xte, yte = _independent_split(size)
    return float(LogisticRegression(max_iter=2000).fit(np.stack(x), y).score(xte[::test_every], yte[::test_every]))


def test_digits_split_is_fixed_stratified_and_upsampled() -> None:
    b = _bench()
    xtr, ytr, xte, yte = b.digits_split(16)
    assert xtr.shape == (1257, 16, 16) and xte.shape == (540, 16, 16) and xtr.dtype == np.uint8
    n_all = np.bincount(np.concatenate([ytr, yte]))
    assert np.all(np.abs(np.bincount(yte) - 0.3 * n_all) <= 1)  # stratified: 30 % of every digit held out
    assert xtr.max() == 255 and xtr.min() == 0  # 0..16 mapped onto the full 8-bit range
    xtr2, _, _, _ = b.digits_split(16)
    assert np.array_equal(xtr, xtr2)
    assert b.upsample(np.full((1, 8, 8), 16.0), 32).tolist() == np.full((1, 32, 32), 255).tolist()


def test_tiny_benchmark_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = _bench()
    out = tmp_path / "res.json"
    # 2 chunks of 1 epoch (16 steps: 1,068 GAN-training digits // 64) planned, but a 1 s budget: the first chunk always runs, the second is skipped.
    # Tiny filters; otherwise the same code path as the real run (train, EMA generator, export, probe)
    rc = b.main(["--seed", "3", "--out", str(out), "--steps", "38", "--chunks", "2", "--n-per-class", "12", "--budget-seconds", "1",
                 "--work-dir", str(tmp_path / "work"), "--set", "g_base_filters=8", "--set", "d_base_filters=8",
                 "--grid", str(tmp_path / "grid.png")])
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("tstr", "trtr", "ratio", "seconds", "seed", "steps", "config", "curve", "train_seconds"):
        assert key in res
    assert res["seed"] == 3 and res["steps"] == 16 and res["epochs"] == 1 and res["size"] == 16
    assert res["command"].startswith("python benchmarks/digits_tstr.py --seed 3 ")
    assert res["plan"]["steps"] == 38 and res["plan"]["chunks"] == 2
    assert res["budget_seconds"] == 1.0 and res["stopped_by_budget"] is True
    assert res["config"]["image_size"] == 16 and res["config"]["channels"] == 1 and res["config"]["g_base_filters"] == 8
    assert res["seconds"] > 0
    assert res["ratio"] == pytest.approx(res["tstr"] / res["trtr"])
    assert res["trtr"] == pytest.approx(_independent_trtr(16), abs=1e-12)
    # the whole-70 % TRTR is what earlier versions reported as "trtr" (524 of 540; recomputed by _independent_trtr(16,
    # fit_part_only=False), not refitted here: each fit costs 5-10 s on the shared 2 cores)
    assert res["trtr_full_train"] == pytest.approx(524 / 540, abs=1e-12)
    assert 0.93 <= res["trtr"] <= 1.0
    assert res["n_train_real"] + res["n_val_real"] == 1257 and res["n_val_real"] == 189 and res["n_test_real"] == 540
    assert [c["step"] for c in res["curve"]] == [16]
    # the checkpoint is chosen on the validation part (the only curve point here), never on the test set
    assert res["selection"] == "real validation split" and res["selected_step"] == 16
    assert res["selected_tstr_val"] == res["curve"][0]["tstr_val"]
    assert 0.0 <= res["curve"][0]["tstr"] <= 1.0 and res["curve"][0]["train_seconds"] <= res["seconds"]
    # the epochs' own seconds (metrics.csv) are part of the training call's wall time, never more
    assert 0.0 < res["curve"][0]["fit_seconds"] <= res["curve"][0]["train_seconds"]
    assert 0.0 <= res["curve"][0]["fidelity"] <= 1.0 and res["curve"][0]["spread"] > 0
    # the reported TSTR went through real PNG export: the folder holds 10 classes x 12 tagged images
    syn = tmp_path / "work" / "synthetic"
    assert sorted(p.name for p in syn.iterdir()) == sorted([str(d) for d in range(10)] + ["manifest.csv"])
    assert len(list((syn / "7").glob("syn-s3-*.png"))) == 12
    assert res["tstr"] == pytest.approx(_independent_tstr(syn, 16), abs=1e-12)  # the PNGs on disk give that TSTR
    assert "TSTR" in capsys.readouterr().err
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:  # 20 rows (real / SYNTHETIC per digit) of 8 cells
        assert im.format == "PNG" and im.height > 200 and im.width > 150


def test_spread_ratio_closed_form() -> None:
    b = _bench()
    real = np.array([[0, 0], [2, 2], [5, 5], [5, 9]], np.uint8).reshape(4, 1, 2)  # class 0: std 1 per pixel; class 1: 0 and 2
    y = np.array([0, 0, 1, 1])
    syn = np.array([[0, 1], [1, 0], [5, 6], [5, 6]], np.uint8).reshape(4, 1, 2)  # class 0: std 0.5 / 0.5; class 1: 0 / 0
    # class 0: mean std 0.5 / 1 = 0.5; class 1: 0 / 1 = 0 -> 0.25
    assert b.spread_ratio(syn, y, real, y) == pytest.approx(0.25)
    assert b.spread_ratio(real, y, real, y) == pytest.approx(1.0)


def test_selection_takes_the_best_validation_score_and_the_later_point_on_a_tie() -> None:
    b = _bench()
    assert b.select_index([0.90, 0.95, 0.95, 0.94]) == 2
    assert b.select_index([0.97, 0.95]) == 0
    assert b.select_index([0.5]) == 0


def test_time_to_target_follows_the_generator_the_validation_split_would_have_kept() -> None:
    b = _bench()
    pt = lambda s, v, r: {"train_seconds": s, "fit_seconds": s - 1, "step": s * 10, "tstr_val": v, "ratio": r}  # noqa: E731
    # at 20 s the best-val point (10 s) is still below the target although the 20 s point is above it (test split:
    # not used for selection); at 30 s the validation split moves to the 30 s point, which reaches it
    curve = [pt(10, 0.95, 0.96), pt(20, 0.94, 0.99), pt(30, 0.96, 0.975), pt(40, 0.97, 0.98)]
    assert b.time_to_target(curve) == {"train_seconds": 30, "fit_seconds": 29, "step": 300, "kept_step": 300, "ratio": 0.975}
    # a later tie on val moves the kept generator to the later point (select_index): the earlier one never counted
    assert b.time_to_target([pt(10, 0.95, 0.96), pt(20, 0.95, 0.98)]) == {"train_seconds": 20, "fit_seconds": 19,
                                                                          "step": 200, "kept_step": 200, "ratio": 0.98}
    assert b.time_to_target([pt(10, 0.95, 0.96)]) is None


def test_the_validation_split_chooses_the_exported_generator_when_the_test_split_disagrees(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """Two real chunks; the curve's probe scores are scripted so that validation prefers chunk 1 and test chunk 2:
    chunk 1's generator must be the one exported, and the reported TSTR must come from its PNGs."""
    from cxr_utils.files import file_digest

    b = _bench()
    work = tmp_path / "work"
    real = b.probe_accuracies
    scripted = iter([(0.90, 0.50), (0.60, 0.95)])  # (validation, test) TSTR of chunks 1 and 2
    generator_at_point: list[str] = []

    def probe_accuracies(x, y, evals):
        if len(evals) == 2:  # a curve point scores (validation, test) of the generator just trained
            generator_at_point.append(file_digest(work / "gan" / "generator.keras"))
            return list(next(scripted))
        return real(x, y, evals)

    monkeypatch.setattr(b, "probe_accuracies", probe_accuracies)
    full_split = b.digits_split
    # every 5th digit (stratified enough: 251 train, 108 test): the real-data probes cost a fifth, selection is the same
    monkeypatch.setattr(b, "digits_split", lambda size: tuple(a[::5] for a in full_split(size)))
    plan = b.Plan(size=16, steps=6, chunks=2, n_per_class=4, budget_seconds=None)  # 213 GAN digits: 3 steps per chunk
    res = b.run(seed=1, plan=plan, work=work, g_base_filters=8, d_base_filters=8)
    assert [(c["step"], c["tstr_val"], c["tstr"]) for c in res["curve"]] == [(3, 0.90, 0.50), (6, 0.60, 0.95)]
    assert res["selected_step"] == 3 and res["selected_epoch"] == 1 and res["selected_tstr_val"] == 0.90
    assert len(generator_at_point) == 2 and generator_at_point[0] != generator_at_point[1]
    from cxr_utils.evaluation.synthetic import read_manifest

    exported = {r["generator_sha256"] for r in read_manifest(work / "synthetic")}
    assert exported == {generator_at_point[0]}  # chunk 1's generator made the PNGs, not the last (test-best) one
    assert res["tstr"] == pytest.approx(_independent_tstr(work / "synthetic", 16, test_every=5), abs=1e-12)


def test_chunk_schedule() -> None:
    b = _bench()
    assert b.chunk_schedule(1500, 5, 19) == [16, 32, 47, 63, 79]  # 1500 steps ~ 79 epochs of 19 steps
    assert b.chunk_schedule(19, 3, 19) == [1]  # never a zero-epoch chunk, never a repeated one
    assert b.chunk_schedule(400, 2, 19) == [10, 21]


def test_bad_override_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    b = _bench()
    assert b.main(["--set", "g_lrr=1"]) == 2
    assert "unknown keys ['g_lrr']" in capsys.readouterr().err
    assert b.main(["--set", "nokey"]) == 2
    assert "--set nokey: expected KEY=VALUE" in capsys.readouterr().err


# ---------------------------------------------------------------- the imbalanced option (issue 18)

def test_imbalance_cuts_every_odd_digit_to_a_third_by_a_fixed_choice() -> None:
    b = _bench()
    xtr, ytr, _, _ = b.digits_split(16)
    x, y = b.imbalance(xtr, ytr)
    before, after = np.bincount(ytr), np.bincount(y)
    assert before.tolist() == [124, 127, 124, 128, 127, 127, 127, 125, 122, 126]
    assert after.tolist() == [124, 42, 124, 43, 127, 42, 127, 42, 122, 42]  # odd: round(n / 3); even untouched
    assert after[1::2].sum() / after[0::2].sum() == pytest.approx(1 / 3, abs=0.01)
    # kept images are original ones (rows of the train split), in their original order, chosen the same every time
    rows = {xtr[i].tobytes(): i for i in range(len(xtr))}
    idx = [rows[im.tobytes()] for im in x]
    assert idx == sorted(idx) and np.array_equal(ytr[idx], y)
    x2, y2 = b.imbalance(xtr, ytr)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(b.imbalance(xtr, ytr, seed=1)[0], x)  # the seed is what fixes the choice
    assert "odd digits (1, 3, 5, 7, 9) keep round(n / 3)" in b.IMBALANCE_NOTE


def test_matched_subset_and_recalls_closed_form() -> None:
    b = _bench()
    y_syn = np.array([0, 1, 0, 1, 0, 1, 2])
    assert b.matched_subset(y_syn, [2, 1, 5]).tolist() == [0, 1, 2, 6]  # the first n of each class (all if fewer)

    class Fixed:  # predicts 0 for dark images, 1 otherwise
        def predict(self, px):
            return (px.mean(axis=1) > 0.5).astype(int)

    x = np.array([0, 0, 255, 255, 255, 0], np.uint8).reshape(6, 1, 1)
    y = np.array([0, 0, 0, 1, 1, 1])
    assert b.recalls(Fixed(), x, y, 2) == pytest.approx([2 / 3, 2 / 3])


def test_imbalanced_run_reports_per_digit_and_the_count_matched_tstr(tmp_path: Path, monkeypatch) -> None:
    """A tiny --imbalance run (every 5th digit of the split, 2 steps): the GAN's real digits are 1 : 3, the test split
    is untouched, and tstr_matched is recomputed from the exported PNGs: the first n_real of each digit."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    b = _bench()
    full_split = b.digits_split
    monkeypatch.setattr(b, "digits_split", lambda size: tuple(a[::5] for a in full_split(size)))
    work = tmp_path / "work"
    plan = b.Plan(size=16, steps=2, chunks=1, n_per_class=24, budget_seconds=None, imbalance=True)
    res = b.run(seed=2, plan=plan, work=work, g_base_filters=8, d_base_filters=8, label_prior="data")
    counts = res["n_train_real_per_class"]
    xtr, ytr, xte, yte = (a[::5] for a in full_split(16))
    _, y_cut = b.imbalance(xtr, ytr)
    xf, yf, _, _ = b.fit_val_split(*b.imbalance(xtr, ytr))
    assert counts == np.bincount(yf, minlength=10).tolist() and sum(counts) == res["n_train_real"] < len(y_cut)
    assert sum(counts[1::2]) / sum(counts[0::2]) == pytest.approx(1 / 3, abs=0.06)
    assert res["n_test_real"] == len(yte) and res["imbalance"] == b.IMBALANCE_NOTE and res["plan"]["imbalance"]
    assert res["config"]["label_prior"] == "data"
    rows = res["per_class"]
    assert [r["digit"] for r in rows] == list(range(10)) and [r["n_real"] for r in rows] == counts
    assert [r["n_synthetic_matched"] for r in rows] == [min(c, 24) for c in counts]
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("fidelity", "tstr_recall", "tstr_matched_recall", "trtr_recall"))
    # TRTR's per-digit recall averages (weighted by the test digits) to TRTR
    n_test = np.bincount(yte, minlength=10)
    assert sum(r["trtr_recall"] * n for r, n in zip(rows, n_test, strict=True)) / n_test.sum() == pytest.approx(res["trtr"])
    assert sum(r["tstr_recall"] * n for r, n in zip(rows, n_test, strict=True)) / n_test.sum() == pytest.approx(res["tstr"])
    x, y = [], []
    for digit in range(10):
        for p in sorted((work / "synthetic" / str(digit)).glob("*.png"))[: counts[digit]]:
            with Image.open(p) as im:
                x.append(np.asarray(im, np.float64).ravel() / 255.0)
            y.append(digit)
    pix = xte.reshape(len(xte), -1) / 255.0
    assert res["tstr_matched"] == pytest.approx(LogisticRegression(max_iter=2000).fit(np.stack(x), y).score(pix, yte),
                                                abs=1e-12)
    assert res["ratio_matched"] == pytest.approx(res["tstr_matched"] / res["trtr"])


def _runner():
    from benchmarks import digits_imbalanced

    return digits_imbalanced


def test_the_imbalanced_runner_alternates_arms_and_averages_per_digit(tmp_path: Path, monkeypatch) -> None:
    """Both arms per seed, balanced first on even seeds, data first on odd ones, each with label_prior and the
    imbalanced plan; the JSON is written after every run; the summary averages each digit over seeds."""
    from benchmarks import digits_tstr

    r = _runner()
    calls = []

    def fake_run(seed, plan, label_prior, **over):
        calls.append((seed, label_prior, plan.imbalance, plan.budget_seconds, over))
        v = 0.1 * seed + (0.5 if label_prior == "data" else 0.0)
        per_class = [{"digit": c, "n_real": 10 if c % 2 else 30, "n_synthetic_matched": 10, "fidelity": v + c / 100,
                      "spread": v, "tstr_recall": v, "tstr_matched_recall": v, "trtr_recall": 0.9} for c in range(10)]
        return {"seed": seed, "tstr": v, "tstr_matched": v, "trtr": 0.9, "ratio": v / 0.9, "ratio_matched": v / 0.9,
                "selected_step": 5, "steps": 6, "seconds": 1.0, "train_seconds": 0.5, "n_train_real": 200,
                "n_val_real": 30, "n_test_real": 540, "n_train_real_per_class": [30, 10] * 5, "per_class": per_class,
                "curve": [{"step": 6, "fit_seconds": 0.4, "tstr_val": v, "tstr": v, "fidelity": v, "spread": v, "x": 0}],
                "config": {"seed": seed, "label_prior": label_prior, "epochs": 3, "g_lr": 2e-4}}

    monkeypatch.setattr(digits_tstr, "run", fake_run)
    out = tmp_path / "res.json"
    writes = []
    real_write = __import__("cxr_utils.files", fromlist=["atomic_write_json"]).atomic_write_json
    monkeypatch.setattr("cxr_utils.files.atomic_write_json", lambda p, d: (writes.append(len(d["runs"])), real_write(p, d)))
    res = r.run((0, 1), steps=6, chunks=1, n_per_class=10, out_path=out, progress=False, g_base_filters=8)
    assert [(c[0], c[1]) for c in calls] == [(0, "balanced"), (0, "data"), (1, "data"), (1, "balanced")]
    assert all(c[2] is True and c[3] is None and c[4] == {"g_base_filters": 8} for c in calls)
    assert writes == [1, 2, 3, 4] and json.loads(out.read_text())["seeds"] == [0, 1]
    assert res["config"] == {"g_lr": 2e-4} and [x["label_prior"] for x in res["runs"]] == ["balanced", "data", "data",
                                                                                         "balanced"]
    assert "x" not in res["runs"][0]["curve"][0]
    s = res["summary"]
    assert s["balanced"]["seeds"] == [0, 1] and s["data"]["seeds"] == [0, 1]
    assert s["balanced"]["tstr"] == pytest.approx(0.05) and s["data"]["tstr"] == pytest.approx(0.55)
    row = s["data"]["per_class"][3]
    assert row["digit"] == 3 and row["n_real"] == 10
    assert row["fidelity"] == pytest.approx(0.58) and row["fidelity_range"] == pytest.approx([0.53, 0.63])
    assert s["data"]["groups"]["odd"]["fidelity"] == pytest.approx(0.55 + 0.05)  # digits 1,3,5,7,9: mean 5 / 100
    assert s["data"]["groups"]["even"]["fidelity"] == pytest.approx(0.55 + 0.04)


def test_the_imbalanced_runner_refuses_to_override_the_arms(capsys: pytest.CaptureFixture[str]) -> None:
    r = _runner()
    assert r.main(["--set", "label_prior=data"]) == 2
    assert "--set label_prior: the two arms set it" in capsys.readouterr().err
    assert r.main(["--seeds", "a,b"]) == 2
    assert "--seeds a,b: expected comma-separated integers" in capsys.readouterr().err
