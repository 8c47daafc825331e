"""Issue 14's time to quality: before / after pairs per seed, the ratio over the seeds, an upper bound when a
'before' run never reached the bar, and the rows the README shows from the JSON."""

from __future__ import annotations

import pytest


def _run(seed, which, seconds, reached=True):
    return {"seed": seed, "which": which, "seconds": seconds, "reached": reached}


def test_summary_is_total_after_over_total_before() -> None:
    from benchmarks.time_to_quality import TARGET_RATIO, summarize

    s = summarize([_run(0, "before", 100.0), _run(0, "after", 40.0), _run(1, "after", 30.0), _run(1, "before", 100.0)])
    assert [p["seed"] for p in s["per_seed"]] == [0, 1]
    assert [p["ratio"] for p in s["per_seed"]] == [0.4, 0.3]
    assert s["before_seconds"] == 200.0 and s["after_seconds"] == 70.0
    assert s["ratio"] == {"value": 0.35, "target": TARGET_RATIO, "met": True, "lower_is_better": True, "upper_bound": False}
    s = summarize([_run(0, "before", 100.0), _run(0, "after", 60.0)])
    assert s["ratio"]["value"] == 0.6 and s["ratio"]["met"] is False


def test_a_before_run_that_never_reached_makes_the_ratio_an_upper_bound() -> None:
    from benchmarks.time_to_quality import summarize

    s = summarize([_run(0, "before", 250.0, reached=False), _run(0, "after", 50.0)])
    assert s["ratio"]["value"] == 0.2 and s["ratio"]["upper_bound"] is True and s["before_all_reached"] is False
    assert s["per_seed"][0]["before_reached"] is False


def test_an_after_run_that_never_reached_has_no_ratio() -> None:
    from benchmarks.time_to_quality import summarize

    s = summarize([_run(0, "before", 100.0), _run(0, "after", 300.0, reached=False)])
    assert s["ratio"]["value"] is None and s["ratio"]["met"] is None
    assert s["per_seed"][0]["ratio"] is None


def test_run_pairs_before_and_after_per_seed_with_the_old_settings_only_before(monkeypatch) -> None:
    from benchmarks import time_to_quality as T

    calls = []

    def fake(bench):
        def f(seed, overrides, *a):
            calls.append((bench, seed, dict(overrides)))
            before = bool(overrides)
            return {"reached": True, "seconds": 100.0 if before else 45.0, "step": 10, "precision": "x", "curve": [],
                    "held_reached": True, "held_seconds": 200.0 if before else 120.0}
        return f

    monkeypatch.setattr(T, "digits_time", fake("digits"))
    monkeypatch.setattr(T, "xray_time", fake("xray"))
    res = T.run(seeds=(0, 1), quick=True, progress=False)
    # seed 0: before first; seed 1: after first (alternating order), for each benchmark
    assert calls == [("digits", 0, T.BEFORE["digits"]), ("digits", 0, {}), ("digits", 1, {}), ("digits", 1, T.BEFORE["digits"]),
                     ("xray", 0, T.BEFORE["xray"]), ("xray", 0, {}), ("xray", 1, {}), ("xray", 1, T.BEFORE["xray"])]
    for bench in ("digits", "xray"):
        assert res[bench]["ratio"]["value"] == pytest.approx(0.45) and res[bench]["ratio"]["met"] is True
        assert [(r["seed"], r["which"]) for r in res[bench]["runs"]] == [(0, "before"), (0, "after"), (1, "after"), (1, "before")]
    assert res["quick"] is True and res["digits"]["plan"]["steps"] == 400
    assert res["xray"]["held"]["ratio"]["value"] == pytest.approx(0.6) and "held" not in res["digits"]


def test_before_differs_from_today_in_what_issue_14_changed() -> None:
    """BEFORE must name settings that today's configurations no longer use, else 'before' is 'after'."""
    from benchmarks import digits_tstr
    from benchmarks.time_to_quality import BEFORE
    from cxr_utils.config import DEFAULT_RECIPE, GANConfig

    today = {"digits": digits_tstr.digits_config(16, 0).to_dict(), "xray": GANConfig().with_recipe(DEFAULT_RECIPE).to_dict()}
    for bench, old in BEFORE.items():
        assert any(today[bench][k] != v for k, v in old.items()), bench


def test_report_rows_show_before_after_and_the_target(tmp_path) -> None:
    from benchmarks.report import time_to_quality_rows
    from benchmarks.time_to_quality import summarize

    d = {"seeds": [0, 1], "source": "read from assets/results/time_to_quality.json",
         "digits": summarize([_run(0, "before", 200.0, reached=False), _run(0, "after", 60.0)]),
         "xray": summarize([_run(0, "before", 100.0), _run(0, "after", 70.0)])}
    d["xray"]["held"] = {"evaluations": 3, **summarize([{**_run(0, "before", 0), "held_seconds": 300.0, "held_reached": False},
                                                        {**_run(0, "after", 0), "held_seconds": 90.0, "held_reached": True}],
                                                       "held_seconds", "held_reached")}
    rows = time_to_quality_rows(d)
    assert len(rows) == 3
    assert "holds at 3 evaluations in a row" in rows[2][0] and rows[2][1].endswith("after 90 s = 0.30x") and rows[2][3] == "met"
    assert "before 200 s (not reached: the ratio is an upper bound) / after 60 s" in rows[0][1] and "0.30x" in rows[0][1]
    assert rows[0][2] == "<= 0.50x" and rows[0][3] == "met"
    assert rows[1][1].endswith("= 0.70x") and rows[1][3] == "**missed**"
    assert time_to_quality_rows({"error": "RuntimeError: x"})[0][1].startswith("failed: RuntimeError")


def test_digits_time_counts_the_epochs_own_seconds_and_keeps_the_restarts_beside(tmp_path) -> None:
    """The real path on a tiny model: two measurements, the seconds of the point that reached (or of the last)."""
    from benchmarks.time_to_quality import digits_time

    r = digits_time(3, {"g_base_filters": 8, "d_base_filters": 8, "precision": "fp32"}, 32, 2, 12)
    assert [p["step"] for p in r["curve"]] == [16, 32]
    at = next(p for p in r["curve"] if p["step"] == r["step"])
    assert r["seconds"] == at["fit_seconds"] and r["train_seconds_with_restarts"] == at["train_seconds"]
    assert 0 < r["seconds"] <= r["train_seconds_with_restarts"]
    assert r["precision"] == "fp32" and r["reached"] == (r["ratio"] is not None)
    if not r["reached"]:  # a tiny model rarely reaches 0.97: then the whole run counts
        assert r["step"] == 32 and r["kept_step"] is None


@pytest.mark.slow  # 17-49 s; a benchmark's end-to-end smoke run: make test-slow (CI's second stage) keeps it
def test_xray_time_runs_the_default_recipe_with_the_given_settings(sample_data_dir, tmp_path, monkeypatch) -> None:
    from benchmarks.time_to_quality import xray_time

    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))
    r = xray_time(0, {"g_base_filters": 8, "d_base_filters": 8, "d_lr": 1e-4}, 4, 2, tmp_path / "w")
    assert [p["step"] for p in r["curve"]] == [2, 4]  # a quality evaluation every 2 steps
    secs = [p["train_seconds"] for p in r["curve"]]
    assert all(s > 0 for s in secs) and secs == sorted(secs)
    if r["reached"]:  # the seconds of the first evaluation over the bar
        assert r["seconds"] == next(p["train_seconds"] for p in r["curve"] if p["step"] == r["step"])
    else:  # the whole run (the trainer's own epoch seconds)
        assert r["step"] == 4 and r["seconds"] >= secs[-1] - 0.1
    import json

    cfg = json.loads((tmp_path / "w" / "xray" / "config.json").read_text())
    assert cfg["d_lr"] == 1e-4 and cfg["g_base_filters"] == 8 and cfg["projection"] is True


def test_held_needs_the_bar_at_consecutive_evaluations() -> None:
    from benchmarks.time_to_quality import held

    def pt(step, div, cov):
        return {"step": step, "train_seconds": step / 10, "diversity": div, "train_coverage": cov}

    ok, low = (0.45, 0.7), (0.45, 0.6)
    curve = [pt(100, *ok), pt(200, *low), pt(300, *ok), pt(400, *ok), pt(500, *ok), pt(600, *ok)]
    assert held(curve, 3) == {"step": 500, "seconds": 50.0}  # the lucky first crossing at 100 does not count
    assert held(curve, 1) == {"step": 100, "seconds": 10.0}
    assert held(curve[:5], 4) is None
    assert held([pt(100, 0.39, 0.9), pt(200, 0.4, 0.7)], 1) == {"step": 200, "seconds": 20.0}  # bars inclusive
