"""The device report: what the trainer chooses on this machine and the measured step, as a pasteable table."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import device_report  # noqa: E402
from benchmarks.__main__ import main as bench_main  # noqa: E402
from cxr_utils import build  # noqa: E402
from cxr_utils.config import DEFAULT_RECIPE  # noqa: E402


def test_plan_is_what_train_would_choose_on_this_cpu() -> None:
    p = device_report.plan(DEFAULT_RECIPE)
    assert p["precision"] == ("bf16" if build.cpu_supports_bf16() else "fp32")  # no GPU here
    assert p["xla"] is False and p["replicas"] == 1 and p["strategy"] != "MirroredStrategy"
    assert p["steps_per_epoch"] == 4200 // 64 == 65
    assert p["steps_per_execution"] == 13  # the largest divisor of 65 up to 16: fit calls never straddle an epoch
    assert any(d.endswith("CPU:0") for d in p["devices"])


def test_measured_report_has_both_precisions_and_a_consistent_speedup() -> None:
    rep = device_report.report(recipes=("seed",), batch_size=4, image_size=32, rounds=1, chunk=3,
                               g_base_filters=8, d_base_filters=8)
    (p,) = rep["recipes"]
    m = p["measured"]
    assert set(m) >= {"fp32"} and all(m[k]["seconds_per_step"] > 0 for k in m if k != "speedup_vs_fp32")
    if p["precision"] != "fp32":
        assert m["speedup_vs_fp32"] == m["fp32"]["seconds_per_step"] / m[p["precision"]]["seconds_per_step"]
    for k in ("fp32", p["precision"]):
        assert m[k]["images_per_second"] == 4 / m[k]["seconds_per_step"]
    md = device_report.markdown(rep)
    assert md.startswith("Machine: ") and "| seed (batch 4, 32 px) |" in md
    assert f"| {p['precision']} | off | 8 of 8 per epoch |" not in md  # steps are planned for the full data set
    assert f"| {p['precision']} | off | {p['steps_per_execution']} of {p['steps_per_epoch']} per epoch |" in md


def test_cli_without_measuring_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "device.json"
    assert bench_main(["--device-report", "--no-measure", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(f"| {DEFAULT_RECIPE} ") or line.startswith("| seed ")]
    assert len(rows) == 2 and all("not measured" in r for r in rows)
    rep = json.loads(out.read_text())
    assert [p["recipe"] for p in rep["recipes"]] == [DEFAULT_RECIPE, "seed"] and "measured" not in rep["recipes"][0]
