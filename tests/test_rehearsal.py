"""The full-scale rehearsal (benchmarks/rehearsal*.py): the LOAD-TEST tree builder, the child-process meter and the
report with its per-GPU ESTIMATES, without running the rehearsal itself (about 30 minutes)."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import rehearsal, rehearsal_estimate, rehearsal_tree
from benchmarks.rehearsal_tree import KAGGLE_COUNTS, NAME_PATTERNS, build_tree, counts, plan, summary


def test_full_plan_has_kaggle_split_sizes_names_and_several_images_per_person():
    files = plan(seed=0, scale=1.0)
    s = summary(files)
    assert s["counts"] == KAGGLE_COUNTS and len(files) == 5856
    for f in files:
        assert NAME_PATTERNS[f.cls].match(f.name), f.name
    names = [f.name for f in files]
    assert len(set(names)) == len(names)  # Kaggle's names are unique across the whole tree
    per_patient = Counter((f.split, f.patient) for f in files)
    assert s["max_images_per_patient"] == 4 and sum(n > 1 for n in per_patient.values()) > 500
    kinds = Counter(re.sub(r"\d+", "N", f.name) for f in files)
    assert set(kinds) == {"IM-N-N.jpeg", "NORMALN-IM-N-N.jpeg", "personN_bacteria_N.jpeg", "personN_virus_N.jpeg"}
    # every image of one patient is in one split (the names carry the patient), and the numbers of a split are apart
    splits_of = {}
    for f in files:
        splits_of.setdefault(f.patient, set()).add(f.split)
    assert all(len(v) == 1 for v in splits_of.values())


def test_plan_is_a_function_of_the_seed_and_scale_shrinks_every_cell():
    assert plan(3, 0.1) == plan(3, 0.1)
    assert [f.name for f in plan(3, 0.1)] != [f.name for f in plan(4, 0.1)]
    small = counts(0.01)
    assert small["train"] == {"NORMAL": 13, "PNEUMONIA": 39} and small["val"] == {"NORMAL": 1, "PNEUMONIA": 1}
    with pytest.raises(ValueError, match="--scale 0"):
        counts(0)


def _sources(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (300, 400), dtype=np.uint8), "L").save(folder / cls / f"{i}.jpeg")
    return folder


def test_tree_has_the_counts_on_disk_realistic_jpegs_and_is_deterministic(tmp_path):
    src = _sources(tmp_path / "src")
    spec = build_tree(tmp_path / "a", src, seed=1, scale=0.004, progress=False)
    root = tmp_path / "a" / "chest_xray"
    on_disk = {s: {c: len(list((root / s / c).glob("*.jpeg"))) for c in ("NORMAL", "PNEUMONIA")} for s in KAGGLE_COUNTS}
    assert on_disk == counts(0.004) == spec["counts"] and spec["files"] == sum(sum(v.values()) for v in on_disk.values())
    assert "LOAD TEST" in spec["load_test"] and (tmp_path / "a" / rehearsal_tree.SPEC_FILE).is_file()
    for p in sorted(root.rglob("*.jpeg"))[:6]:
        with Image.open(p) as im:
            w, h = im.size
            assert im.format == "JPEG" and im.mode == "L"
            assert 0.95e6 <= w * h <= 2.05e6, (p.name, w, h)  # about 1-2 megapixels, as the Kaggle films
            assert b"LOAD TEST" in im.info.get("comment", b"")
    again = build_tree(tmp_path / "b", src, seed=1, scale=0.004, progress=False)
    a = sorted(p.relative_to(tmp_path / "a") for p in root.rglob("*.jpeg"))
    b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "chest_xray").rglob("*.jpeg"))
    assert a == b and all((tmp_path / "a" / r).read_bytes() == (tmp_path / "b" / r).read_bytes() for r in a)
    assert again["bytes"] == spec["bytes"] and not again["reused"]
    assert build_tree(tmp_path / "a", src, seed=1, scale=0.004, progress=False)["reused"]  # same spec: kept


def test_run_child_reports_exit_status_seconds_and_peak_memory(tmp_path):
    code = "import numpy as np, sys; a = np.ones(150 * 2**20 // 8); a += 1; sys.exit(3)"
    r = rehearsal.run_child([sys.executable, "-c", code], tmp_path / "x.log", poll=0.05)
    assert r["exit_status"] == 3 and r["seconds"] > 0
    assert r["peak_rss_mib"] >= 150  # the 150 MiB array, whatever the interpreter adds
    assert r["command"].startswith("python -c")


FLOPS = {"gan_step": 6.4e10, "gan_batch": 64, "generator_per_image": 1e8, "classifier_train_per_image": {"head": 1e9,
         "finetune": 2e9}, "classifier_forward_per_image": 5e8, "method": "test",
         "eval_config": {"input_size": 64, "batch_size": 32, "epochs_head": 10, "epochs_finetune": 10},
         # the 200-epoch plan of before issue 20 (today's: test_default_plan_is_notebook_02s)
         "plan": {"n_train": 4160, "batch": 64, "steps_per_epoch": 65, "epochs": 200, "steps": 13000,
                  "quality_evaluations": 25}}
MEASURED = {"reduced": 0.25, "fp32": 0.5, "cpu": "test CPU", "source": "test"}


def test_estimate_is_flops_times_default_work_over_peak_times_fraction():
    e = rehearsal_estimate.estimate(FLOPS, n_val=1000, n_test=624, n_export=8320, measured=MEASURED)
    assert e["notebook_02"]["steps"] == 13000 and e["n_train"] == 4160
    t4 = e["gpus"]["T4"]
    assert t4["notebook_02_seconds"] == pytest.approx(13000 * 6.4e10 / (65e12 * 0.25))
    assert t4["notebook_03_seconds"] == pytest.approx((8320 + 1000) * 1e8 / (65e12 * 0.25))
    # 3 seeds x (6 x N image-epochs x (10 x head + 10 x finetune) + 5 fits x 20 epochs of val + 4 x (val + test))
    clf = 3 * (6 * 4160 * (10 * 1e9 + 10 * 2e9) + 5 * 20 * 1000 * 5e8 + 4 * 1624 * 5e8)
    assert t4["notebook_04_seconds"] == pytest.approx(clf / (8.1e12 * 0.5))
    assert e["gpus"]["A100"]["notebook_04_seconds"] == pytest.approx(clf / (156e12 * 0.5))
    assert "ESTIMATES" in e["label"]


def test_report_assembles_stages_machine_and_estimates(tmp_path):
    ok = {"command": "python -m cxr_utils x", "seconds": 12.0, "exit_status": 0, "peak_rss_mib": 900.0,
          "peak_rss_all_processes_mib": 1000.0}
    stages = {"tree": {**ok, "files": 5856, "spec": {"files": 5856, "bytes": 2**30, "megapixels_mean": 1.5}},
              "prepare": {**ok, "files": 5856, "images": 5856, "excluded": 0, "skipped": 0,
                          "counts": {"train": {"NORMAL": 1000, "PNEUMONIA": 3160}, "val": {"NORMAL": 300, "PNEUMONIA": 700},
                                     "test": {"NORMAL": 234, "PNEUMONIA": 390}}},
              "train": {**ok, "images": 4160, "steps": 65, "batch_size": 64, "precision": "bf16", "quality_rows": 1},
              "study": {**ok, "exit_status": 1, "seconds": 5.0},
              "flops": {**ok, "counted": FLOPS}}
    m = {"cpu": "AMD EPYC", "cores": 2, "load_average": [3.0, 2.0, 1.0], "uptime": "up", "utc": "now"}
    d = rehearsal.assemble(stages, m, m, 1.0, 0, tmp_path)
    assert d["ok"] is False and d["total_seconds"] == pytest.approx(53.0)
    assert d["estimates"]["n_train"] == 4160 and d["estimates"]["n_val"] == 1000 and d["estimates"]["n_test"] == 624
    assert all("grows_with" in r for r in d["stages"].values())
    md = rehearsal_estimate.report_markdown(d)
    assert "a LOAD TEST" in md and "ESTIMATES, not measurements" in md and "FAILED (exit 1)" in md
    assert "5,856 files -> 5,856 images (train 4,160, val 1,000, test 624" in md
    assert md.count("\n| T4 |") == 1 and "65 TFLOPS" in md and "did NOT all succeed" in md


def test_default_plan_is_notebook_02s():
    from cxr_utils.gan.device import epoch_steps
    from cxr_utils.gan.fit import plan_epochs

    p = rehearsal_estimate.default_plan(4160)
    assert p == {**FLOPS["plan"], "epochs": 600, "steps": 39_000, "quality_evaluations": 75}  # 600 passes (issue 20)
    assert p["steps_per_epoch"] == epoch_steps(4160, 64) and p["epochs"] == plan_epochs(4160, 64)
    small = rehearsal_estimate.default_plan(10)  # the sample: batch 10, one step an epoch, 3,000 steps
    assert (small["batch"], small["steps_per_epoch"], small["epochs"]) == (10, 1, 3000)


def test_benchmarks_section_writes_the_rehearsal_json_and_keeps_its_totals(tmp_path, monkeypatch):
    from benchmarks import __main__ as bench

    stage = {"seconds": 2.0, "peak_rss_mib": 10.0, "exit_status": 0}
    fake = {"load_test": "LOAD TEST", "ok": True, "total_seconds": 4.0, "stages": {"tree": stage, "train": stage},
            "nan": float("nan")}
    monkeypatch.setattr(rehearsal, "run", lambda work: fake if work == tmp_path / "w" else None)
    r = bench.rehearsal_section(tmp_path / "w", tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["nan"] is None  # written whole, as JSON
    assert r["ok"] and r["total_seconds"] == 4.0 and r["stages"]["train"] == {"seconds": 2.0, "peak_rss_mib": 10.0}
    assert "rehearsal" in bench.SECTIONS


def test_stage_counts_are_read_from_the_run_and_study_folders(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"batch_size": 64, "g_base_filters": 32, "eval_n_per_class": 128, "data": {
        "n_train": 4185, "per_class": {"NORMAL": 1079, "PNEUMONIA": 3106}, "steps_per_epoch": 65,
        "precision_resolved": "bf16"}}))
    (run / "metrics.csv").write_text("epoch,d_loss,seconds\n1,1.7,43.5\n")
    (run / "quality.csv").write_text("epoch,step,seconds\n1,65,2.5\n")
    t = rehearsal._train_counts(run)
    assert (t["images"], t["steps"], t["epoch_seconds"], t["quality_rows"], t["quality_eval_seconds"]) == (4185, 65, 43.5, 1, 2.5)
    study = tmp_path / "study"
    study.mkdir()
    real = {"NORMAL": 10, "PNEUMONIA": 30}
    syn = {"NORMAL": 10, "PNEUMONIA": 30}
    none = {"NORMAL": 0, "PNEUMONIA": 0}
    (study / "results.json").write_text(json.dumps({"protocols": [
        {"protocol": "trtr", "counts": {"real": {"real": real, "synthetic": none}}, "n_test": {"NORMAL": 2, "PNEUMONIA": 3}},
        {"protocol": "pretrain", "counts": {"synthetic": {"real": none, "synthetic": syn},
                                            "real": {"real": real, "synthetic": none}}}]}))
    s = rehearsal._study_counts(study)
    assert s["training_images_per_protocol"] == {"trtr": 40, "pretrain": 80} and s["test_images"] == 5
    assert rehearsal._study_counts(tmp_path / "none") == {"results_json": None}
