"""`python -m cxr_utils metrics`: every extractor named offline, one-line errors for a bad synthetic folder."""

from __future__ import annotations

from _helpers import write_noise_pngs


def test_cli_metrics_offline_names_every_extractor(sample_npz, tmp_path, capsys, offline_keras):
    import json

    from cxr_utils import cli

    syn = write_noise_pngs(tmp_path / "syn", n_per_class=4, seed=1)
    out = tmp_path / "m" / "metrics.json"
    code = cli.main(["metrics", "--data", str(sample_npz), "--synthetic", str(syn), "--smoke", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert any(n.startswith("fallback: InceptionV3") for n in res["notes"])
    names = list(res["extractors"])
    assert len(names) == 2 and names[0].startswith("domain classifier") and names[1].startswith("random-init CNN")
    for entry in res["extractors"].values():
        assert entry["overall"]["n_synthetic"] == 8 and entry["overall"]["n_real"] == 10  # sample: 5 + 5 train
        assert {k: v["n_synthetic"] for k, v in entry["per_class"].items()} == {"NORMAL": 4, "PNEUMONIA": 4}
        assert entry["overall"]["fid"] >= 0 and set(entry["overall"]["prdc"]) == {"precision", "recall", "density", "coverage"}
        assert entry["overall"]["memorization"]["n_test"] == 2
    assert res["label_fidelity"]["n"] == 8 and set(res["label_fidelity"]["per_class"]) == {"NORMAL", "PNEUMONIA"}
    assert "random-init CNN" in capsys.readouterr().out


def test_cli_metrics_bad_synthetic_exits_2(sample_npz, tmp_path, capsys):
    from cxr_utils import cli

    syn = write_noise_pngs(tmp_path / "syn", n_per_class=4, classes=("PNEUMONIA",), seed=1)
    code = cli.main(["metrics", "--data", str(sample_npz), "--synthetic", str(syn), "--smoke", "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2 and "NORMAL: class folder missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()
