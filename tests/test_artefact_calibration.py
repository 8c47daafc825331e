"""benchmarks/artefact_calibration.py: the artefact bar's calibration on real images."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import artefact_calibration as AC
from cxr_utils.metrics.artefacts import balanced_share, high_frequency_share


def test_the_share_is_class_balanced() -> None:
    """3 NORMAL images and 1 PNEUMONIA image: the mean of the two class means, not of the four images."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 16, 16)).astype(np.uint8)
    x[3] = np.rint(128 + 60 * np.cos(np.arange(16) * 2 * np.pi / 16))[None, :]  # smooth: almost no high frequency
    y = np.array([0, 0, 0, 1])
    h = high_frequency_share(x)
    v, per = balanced_share(x, y, ("NORMAL", "PNEUMONIA"))
    assert per == {"NORMAL": pytest.approx(h[:3].mean()), "PNEUMONIA": pytest.approx(h[3])}
    assert v == pytest.approx((h[:3].mean() + h[3]) / 2) and v != pytest.approx(h.mean())


def test_halves_of_real_digits_score_about_one() -> None:
    from cxr_utils.gan.tracker import STRIPE_MAX

    d = AC.digits_part(draws=30, half=200, seed=1, probe_count=64)
    q = d["ratio_percentiles"]
    assert d["images"] == 1797 and d["probe_count"] == 64 and q["p5"] <= q["p50"] <= q["p95"]
    assert 0.85 < q["p5"] and q["p95"] < 1.15  # real images of one kind: far inside the 1.5x gate
    # the stripe score is a maximum over frequency bins: never much below 1 (some bin is at least as strong), and for
    # real images of one kind inside its line, at the halves' size and at the probe's count per class
    for key in ("stripe_percentiles", "stripe_probe_count_percentiles"):
        s = d[key]
        assert 0.95 < s["p5"] <= s["p50"] <= s["p95"] < STRIPE_MAX


def test_the_calibration_section_reads_the_stripe_part(tmp_path, monkeypatch) -> None:
    """docs/results.md's calibration sentence comes from the JSON's keys, the stripe part included (and a JSON from
    before the stripe score gets no stripe sentence)."""
    import json

    import scripts.update_readme as U

    per = {"NORMAL": 1.0, "PNEUMONIA": 1.0}
    d = {"artefact_max": 1.5, "stripe_max": 1.5, "command": "python -m benchmarks.artefact_calibration --out x.json",
         "sample": {"train": {"images": 10}, "val": {"images": 4, "vs_train": 0.86, "per_class_vs_train": per,
                                                     "stripe_vs_train": 1.27},
                    "test": {"images": 2, "vs_train": 1.19, "per_class_vs_train": per, "stripe_vs_train": 1.57}},
         "digits": {"images": 1797, "half": 300, "draws": 200, "probe_count": 128,
                    "ratio_percentiles": {"p5": 0.94, "p50": 1.0, "p95": 1.05},
                    "stripe_percentiles": {"p5": 1.0, "p50": 1.05, "p95": 1.12},
                    "stripe_probe_count_percentiles": {"p5": 1.01, "p50": 1.06, "p95": 1.15}}}
    (tmp_path / "artefact_calibration.json").write_text(json.dumps(d))
    monkeypatch.setattr(U, "RESULTS", tmp_path)
    monkeypatch.setattr(U, "_rel", lambda p: p.name)
    text = U.section_artefact_calibration()
    assert "val X-rays score 1.27x and its test X-rays 1.57x" in text and "halves 1.00-1.12x" in text
    assert "up to 128 digits per class (the quality probe's count) against 300 1.01-1.15x" in text
    assert "The stripe line is 1.5x (shown, not a gate" in text
    old = {k: v for k, v in d.items() if k != "stripe_max"}
    (tmp_path / "artefact_calibration.json").write_text(json.dumps(old))
    assert "stripe" not in U.section_artefact_calibration()
