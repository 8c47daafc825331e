"""The device report: what the trainer chooses on this machine and the measured step, as a pasteable table."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import device_report  # noqa: E402
from benchmarks.__main__ import main as bench_main  # noqa: E402
from cxr_utils.config import DEFAULT_RECIPE  # noqa: E402
from cxr_utils.gan import device  # noqa: E402


def test_plan_is_what_train_would_choose_on_this_cpu() -> None:
    p = device_report.plan(DEFAULT_RECIPE)
    assert p["precision"] == ("bf16" if device.cpu_supports_bf16() else "fp32")  # no GPU here
    assert p["xla"] is False and p["replicas"] == 1 and p["strategy"] != "MirroredStrategy"
    assert p["steps_per_epoch"] == 4200 // 64 == 65
    assert p["steps_per_execution"] == 13  # the largest divisor of 65 up to 16: fit calls never straddle an epoch
    assert any(d.endswith("CPU:0") for d in p["devices"])


def test_host_sync_table_at_the_sizes_users_run() -> None:
    rows = {r["n_train"]: r for r in device_report.host_sync()}
    keys = ("full_batches", "steps_per_epoch", "steps_per_execution", "syncs_per_epoch", "images_left_out")
    assert [rows[4708][k] for k in keys] == [73, 72, 12, 6, 100]  # PneumoniaMNIST: 1 batch dropped, 12 steps a sync
    assert [rows[4186][k] for k in keys] == [65, 65, 13, 5, 26]
    assert [rows[4200][k] for k in keys] == [65, 65, 13, 5, 40]
    assert all(r["steps_per_execution"] == 1 for r in device_report.host_sync(replicas=2))  # MirroredStrategy
    table = device_report.markdown({"machine": {}, "recipes": [], "host_sync": device_report.host_sync()})
    assert "| 4,708 (PneumoniaMNIST train (1,214 + 3,494); batch 64) | 73 | 72 | 12 | 6 | 100 |" in table


def test_measured_report_times_fp32_and_the_chosen_precision_and_puts_each_in_its_cell(monkeypatch) -> None:
    from benchmarks import train_step

    calls = []

    def scripted(cfg, precision, rounds, chunk):  # the timing is bare_step's own test; here: who is measured, where shown
        calls.append((cfg.batch_size, cfg.image_size, cfg.g_base_filters, precision))
        sec = {"fp32": 0.2, "bf16": 0.1}[precision]
        return {"seconds_per_step": sec, "images_per_second": cfg.batch_size / sec}

    monkeypatch.setattr(train_step, "bare_step", scripted)
    monkeypatch.setattr(device_report, "plan", lambda recipe, b, s: {**real_plan(recipe, b, s), "precision": "bf16"})
    rep = device_report.report(recipes=("seed",), batch_size=4, image_size=32, g_base_filters=8)
    assert calls == [(4, 32, 8, "fp32"), (4, 32, 8, "bf16")]
    m = rep["recipes"][0]["measured"]
    assert m["speedup_vs_fp32"] == 2.0 and m["fp32"]["images_per_second"] == 20.0 and m["bf16"]["images_per_second"] == 40.0
    row = next(line for line in device_report.markdown(rep).splitlines() if line.startswith("| seed (batch 4, 32 px) |"))
    assert row.endswith("| bf16 | off | 15 of 1050 per epoch | 0.200 s (20 img/s) | 0.100 s (40 img/s) | 2.00x |")
    # a machine where the choice is fp32 measures once and shows no speed-up
    calls.clear()
    monkeypatch.setattr(device_report, "plan", lambda recipe, b, s: {**real_plan(recipe, b, s), "precision": "fp32"})
    m = device_report.report(recipes=("seed",), batch_size=4, image_size=32)["recipes"][0]["measured"]
    assert [c[3] for c in calls] == ["fp32"] and "speedup_vs_fp32" not in m


real_plan = device_report.plan


def test_cli_without_measuring_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "device.json"
    assert bench_main(["--device-report", "--no-measure", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith(f"| {DEFAULT_RECIPE} ") or line.startswith("| seed ")]
    assert len(rows) == 2 and all("not measured" in r for r in rows)
    rep = json.loads(out.read_text())
    assert [p["recipe"] for p in rep["recipes"]] == [DEFAULT_RECIPE, "seed"] and "measured" not in rep["recipes"][0]
    assert [r["n_train"] for r in rep["host_sync"]] == [4200, 4186, 4708]
    assert "| 4,186 (a Kaggle-sized train split; batch 64) | 65 | 65 | 13 | 5 | 26 |" in text
