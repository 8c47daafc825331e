"""Issue 20's measurement: the before / after runner (arms, order, merging parts), the x-ray variants' names, and the
rows the README and the Performance table draw from its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _fake_digits(calls: list) -> callable:
    def fake_run(seed, plan, **over):
        calls.append((seed, plan.size, plan.imbalance, plan.budget_seconds, over))
        after = bool(over)
        v = 0.9 + 0.01 * seed + (0.05 if after else 0.0)
        return {"seed": seed, "size": plan.size, "tstr": v, "trtr": 0.96, "ratio": v / 0.96, "tstr_matched": v,
                "ratio_matched": v / 0.96, "selected_step": 6, "steps": 6, "seconds": 100.0 + seed, "train_seconds": 50.0,
                "stopped_by_budget": False, "target_met": v / 0.96 >= 0.97, "n_train_real": 200,
                "n_train_real_per_class": [20] * 10, "per_class": [{"digit": c} for c in range(10)],
                "curve": [{"step": 6, "fit_seconds": 0.4, "tstr_val": v, "tstr": v, "ratio": v / 0.96, "fidelity": 0.99,
                           "spread": 0.9 + after * 0.05, "x": 0}]}
    return fake_run


def test_the_runner_alternates_arms_merges_parts_and_summarises(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import digits_tstr
    from benchmarks import generator_upgrade as U

    calls: list = []
    monkeypatch.setattr(digits_tstr, "run", _fake_digits(calls))
    out = tmp_path / "g.json"
    out.write_text(json.dumps({"step": {"kept": True}, "commands": {"step": "earlier"}}))  # a part measured before
    assert U.main(["--parts", "digits16,imbalanced", "--out", str(out)]) == 0
    after = U.ARMS["after"]
    assert after == {"g_norm": "class_layer"}
    # the digits benchmark's own plan (600 s budget), both arms per seed, before first on even seeds
    assert [(c[0], c[1], c[2], c[4]) for c in calls] == [(0, 16, False, {}), (0, 16, False, after), (1, 16, False, after),
                                                         (1, 16, False, {}), (0, 16, True, {}), (0, 16, True, after)]
    assert {c[3] for c in calls} == {600.0}
    d = json.loads(out.read_text())
    assert d["step"] == {"kept": True} and d["commands"]["step"] == "earlier"  # parts not re-run are kept
    assert d["commands"]["digits16"].startswith("python -m benchmarks.generator_upgrade --parts digits16,imbalanced")
    runs = d["digits_runs"]
    assert [(r["part"], r["seed"], r["arm"]) for r in runs][:2] == [("digits16", 0, "before"), ("digits16", 0, "after")]
    assert "x" not in runs[0]["curve"][0] and "per_class" in runs[-1] and "per_class" not in runs[0]
    assert len(runs[0]["load_average_before"]) == 3
    s = d["digits"]["digits16"]
    assert s["before"]["seeds"] == [0, 1] and s["after"]["seeds"] == [0, 1]
    assert s["after"]["ratio"] == pytest.approx((0.95 + 0.96) / 2 / 0.96)
    assert s["before"]["ratio_min"] == pytest.approx(0.90 / 0.96) and s["before"]["all_met"] is False
    assert s["after"]["all_met"] is True and s["after"]["spread"] == pytest.approx(0.95)
    # a part run again replaces its own runs only
    calls.clear()
    assert U.main(["--parts", "imbalanced", "--out", str(out)]) == 0
    assert [r["part"] for r in json.loads(out.read_text())["digits_runs"]] == ["digits16"] * 4 + ["imbalanced"] * 2
    # a seed added later (--seeds) replaces that seed's runs only: the other seeds and the command that measured them
    # stay, and the summary covers every seed
    before = json.loads(out.read_text())
    assert U.main(["--parts", "digits16", "--seeds", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    key = lambda r: (r["part"], r["seed"], r["arm"])  # noqa: E731
    assert sorted(map(key, d["digits_runs"])) == sorted(map(key, before["digits_runs"]))
    assert [r for r in d["digits_runs"] if r["seed"] == 0] == [r for r in before["digits_runs"] if r["seed"] == 0]
    assert d["commands"]["digits16"] == before["commands"]["digits16"]
    assert d["commands"]["digits16 seeds 1"].endswith("--parts digits16 --seeds 1 --out " + str(out))
    assert d["digits"]["digits16"]["after"]["seeds"] == [0, 1]
    # and a run written by another process meanwhile is not lost: the JSON is read again before every write
    other = {**before["digits_runs"][-1], "part": "digits32", "seed": 5}
    U.update(out, {}, {"digits32 seeds 5": "elsewhere"}, run=other)
    assert U.main(["--parts", "imbalanced", "--seeds", "0", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert other in d["digits_runs"] and d["commands"]["digits32 seeds 5"] == "elsewhere"
    assert d["digits"]["digits32"][other["arm"]]["seeds"] == [5]


def test_the_runner_refuses_unknown_parts(tmp_path: Path, capsys) -> None:
    from benchmarks import generator_upgrade as U

    assert U.main(["--parts", "digits64", "--out", str(tmp_path / "x.json")]) == 2
    assert "--parts digits64: unknown; choose from digits16,digits32,imbalanced,step" in capsys.readouterr().err


def test_xray_variants_are_a_recipe_with_fields_changed(capsys) -> None:
    from benchmarks import xray_recipes as X
    from cxr_utils.config import recipe
    from cxr_utils.errors import UserError

    assert X.variant_fields("xray") == recipe("xray")
    v = X.variant_fields("xray:g_upsample=transpose+channels=3+spectral_all=false")
    assert v == {**recipe("xray"), "g_upsample": "transpose", "channels": 3, "spectral_all": False}
    with pytest.raises(UserError, match="expected RECIPE:FIELD=VALUE"):
        X.variant_fields("xray:g_norm")
    with pytest.raises(UserError, match="recipe 'nope': unknown"):
        X.variant_fields("nope:g_norm=none")
    assert X.main(["--recipes", "xray:g_norm=instance", "--out", "/nonexistent/x.json"]) == 2  # before any training
    assert "g_norm must be layer|batch|none|class_layer, got instance" in capsys.readouterr().err


def test_the_step_rows_and_the_readme_section_read_the_json(tmp_path: Path) -> None:
    from benchmarks.report import generator_step_rows

    step = {"recipes": {"before": "xray-v1", "after": "xray"}, "batch_size": 64, "image_size": 64, "rounds": 6,
            "seconds_per_step": {"before/fp32": 0.4, "after/fp32": 0.5, "before/bf16": 0.3, "after/bf16": 0.33},
            "flops_per_step": {"before": 52.0e9, "after": 66.9e9}, "load_average_before": [7.8, 5, 6],
            "load_average_after": [8.8, 6, 6]}
    p = tmp_path / "generator_upgrade.json"
    assert generator_step_rows(p) == []  # not measured: no row
    p.write_text(json.dumps({"step": step}))
    rows = generator_step_rows(p)
    assert [r[1] for r in rows] == ["0.400 s / 0.500 s = 1.25x", "0.300 s / 0.330 s = 1.10x", "52.0 / 66.9 GFLOP"]
    assert "`xray-v1` / `xray`, best of 6 alternating rounds, load average 7.8" in rows[0][0]


def test_the_readme_section_marks_budget_cut_digits_runs_and_carried_xray_rows(tmp_path: Path, monkeypatch) -> None:
    import scripts.update_readme as R
    from cxr_utils.config import recipe

    def digits(arm: str, ratio: float, cut: bool) -> dict:
        return {"part": "digits16", "arm": arm, "seed": 0, "ratio": ratio, "ratio_matched": ratio, "tstr": ratio,
                "fidelity": 0.97, "spread": 0.95, "seconds": 590.0, "steps": 6000, "target_met": True,
                "stopped_by_budget": cut}
    runs = [digits("before", 0.98, True), digits("after", 0.99, False)]
    machine = {"cpu_model": "AMD EPYC", "cores": 2}
    (tmp_path / "generator_upgrade.json").write_text(json.dumps({
        "machine": machine, "digits_runs": runs, "digits": _summary(runs), "digits_changes": {"g_norm": "class_layer"},
        "commands": {"digits16": "python -m benchmarks.generator_upgrade --parts digits16"}}))
    scores = {"diversity": 0.5, "train_covered": 7, "train_images": 10, "train_coverage": 0.7, "fidelity": 0.9,
              "hf_share": 0.01, "hf_share_vs_real": 1.2}
    entry = {"fields": recipe("xray"), "best": {"epoch": 1500, "scores": scores}, "seconds": 300.0}
    (tmp_path / "xray_recipes.json").write_text(json.dumps({"recipes": [
        {**entry, "recipe": "xray", "carried_over": "not re-run: measured earlier"},
        {**entry, "recipe": "xray-v1"}]}))  # its fields are today's xray, not xray-v1: not the before arm
    (tmp_path / "xray_recipes-seed1.json").write_text(json.dumps({"recipes": [
        {**entry, "recipe": "xray:g_upsample=transpose", "fields": {**recipe("xray"), "g_upsample": "transpose"}}]}))
    monkeypatch.setattr(R, "RESULTS", tmp_path)
    monkeypatch.setattr(R, "_rel", lambda p: p.name)
    text = R.section_generator_upgrade()
    assert "| 1 | variant (`xray:g_upsample=transpose`) | 1500 | 0.50 | 7 / 10 | 0.90 | 1.20x (0.0100); stripes n/a | met | 300 s |" \
        in text  # another seed's variants are listed (seed 0's are the recipe table)
    assert "| digits, 16 px | before | 0 | 0.9800 (0.9800) | 0.9800 | 0.970 | 0.950 | 6,000 (1 of 1 runs cut by the " \
           "600 s budget) | 590 s | yes |" in text
    assert "| digits, 16 px | after | 0 | 0.9900 (0.9900) | 0.9900 | 0.970 | 0.950 | 6,000 | 590 s | yes |" in text
    assert "| 0 (carried over from an earlier run) | after (`xray`) | 1500 | 0.50 | 7 / 10 | 0.90 | 1.20x (0.0100); stripes n/a |" \
        in text
    assert "before (`xray-v1`)" not in text and "Seed 1" not in text  # no seed-1 JSON: no seed-1 grid


def _summary(runs: list) -> dict:
    from benchmarks.generator_upgrade import summarize

    return summarize(runs)
