"""benchmarks/quality_bars.py: the calibration on real digits through the trainer's own code, the runner's row f
mapped from the cost, and the README section generated from the JSON."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    from cxr_utils.config import project_root

    monkeypatch.syspath_prepend(str(project_root()))


def test_calibration_on_real_digits_orders_the_generators_of_known_quality() -> None:
    from benchmarks import quality_bars as B

    cal = B.calibration(reps=1, counts=((20, 20, 20),))
    rows = {r["generator"]: r for r in cal["rows"]}
    assert list(rows) == list(B.GENERATORS) and all(r["of"] == 1 and r["judged_by_real_bars"] for r in rows.values())
    cov = [rows[g]["train_coverage_vs_real"]["mean"] for g in B.GENERATORS]
    assert cov == sorted(cov, reverse=True)  # perfect > half the variety > two images > one image
    assert abs(cov[0] - 1.0) < 0.2 and rows["perfect"]["learned"] == 1 and rows["perfect"]["alarm"] == 0
    assert rows["one image"]["diversity_vs_real"]["mean"] == 0.0 and rows["one image"]["alarm"] == 1
    assert 0 < rows["perfect"]["baseline_train_coverage"] < 1  # real images do not cover all training images


def test_the_runners_row_f_is_the_default_count_of_the_cost(monkeypatch) -> None:
    from benchmarks import quality_bars as B
    from benchmarks.report import performance_markdown  # noqa: F401 - the reader of these keys

    fake = {"recipe": "xray", "n_train": 4200, "n_val": 1050, "batch_size": 64, "precision": "bf16", "step_seconds": 0.2,
            "steps_between_evals": 500, "target_share": 0.1, "note": "timing only",
            "by_n_per_class": [{"eval_n_per_class": 128, "probe_build_seconds": 60.0, "eval_seconds": 2.0, "met": True,
                                "share_of_training": 0.0196, "coverage_train_per_class": [128, 128]}]}
    monkeypatch.setattr(B, "cost", lambda **kw: fake)
    row = B.quality_cost(repeats=1)
    assert row["eval_seconds"] == 2.0 and row["share_of_training"] == 0.0196 and row["n_val"] == 1050
    assert row["coverage_train_per_class"] == [128, 128] and row["steps_between_evals"] == 500


def test_readme_quality_section_comes_from_the_json(tmp_path, monkeypatch) -> None:
    import scripts.update_readme as U

    row = {"train_per_class": 55, "held_out_per_class": 55, "synthetic_per_class": 55, "generator": "perfect",
           "diversity_vs_real": {"mean": 0.99, "min": 0.97, "max": 1.01},
           "train_coverage_vs_real": {"mean": 0.93, "min": 0.9, "max": 0.96}, "learned": 5, "alarm": 0, "of": 5,
           "baseline_train_coverage": 0.57, "judged_by_real_bars": True}
    d = {"quick": False, "command": "python -m benchmarks.quality_bars", "machine": {"cpu_model": "CPU X", "cores": 2},
         "calibration": {"data": "digits", "reps": 5, "generators": {"perfect": "unseen real images"},
                         "bars": {"learned_diversity": 0.4, "learned_coverage": 0.7, "alarm_diversity": 0.2,
                                  "alarm_coverage": 0.3, "min_held_out_per_class": 10},
                         "rows": [row, {**row, "held_out_per_class": 2, "judged_by_real_bars": False}]},
         "cost": {"recipe": "xray", "n_train": 4200, "n_val": 1050, "per_class": {"train": [1050, 3150], "val": [263, 787]},
                  "image_size": 64, "note": "timing only", "precision": "bf16", "steps_between_evals": 500,
                  "batch_size": 64, "step_seconds": 0.2, "target_share": 0.1,
                  "by_n_per_class": [{"eval_n_per_class": 128, "coverage_train_per_class": [128, 128],
                                      "stand_ins_per_class": {"train": [128, 128], "reference": [128, 128]},
                                      "eval_seconds": 2.5, "share_of_training": 0.0244, "probe_build_seconds": 61.0,
                                      "classifier_trained": True,
                                      "baseline_seconds": 0.8}]}}
    (tmp_path / "quality_bars.json").write_text(json.dumps(d))
    monkeypatch.setattr(U, "RESULTS", tmp_path)
    monkeypatch.setattr(U, "_rel", lambda p: p.name)
    text = U.section_quality()
    assert "| 55 / 55 / 55 | perfect | 0.99x (0.97-1.01) | 0.93x (0.90-0.96) | 5 / 5 | 0 / 5 |" in text
    assert "| 55 / 2 / 55 (fewer than 10 held out: the trainer uses the fixed bars; the verdicts shown are those the " \
           "ratios would give) | perfect |" in text
    assert "| 128 | 128 + 128 | 128 + 128 / 128 + 128 | 2.5 s | 2.4% of 100 s (target <= 10%) | 61 s (classifier " \
           "trained, baseline 0.8 s) |" in text
    assert "CPU X, 2 cores" in text and "JSON: `quality_bars.json`." in text
