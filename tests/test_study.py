"""`python -m cxr_utils study` runs what notebook 04 runs: the same results.json and metrics.json on the same inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_noise_pngs

from cxr_utils import cli
from cxr_utils import files as io
from cxr_utils.errors import UserError
from cxr_utils.evaluation import classifier, protocols, study
from cxr_utils.metrics import classification, imagenet

ROOT = Path(__file__).resolve().parent.parent


def _without(d: dict) -> dict:
    """d without the fields that differ between the CLI and the notebook on the same inputs (how each was started,
    each classifier's seconds)."""
    return study.comparable(d)


def test_parse_protocols() -> None:
    assert study.parse_protocols("tstr, trtr,tstr") == ["tstr", "trtr"]
    assert study.parse_protocols(["augment"]) == ["augment"]
    for bad in ("trtr,foo", "", ","):
        with pytest.raises(UserError, match="--protocols .*: use a comma-separated list of trtr, tstr, augment, pretrain"):
            study.parse_protocols(bad)


def test_cli_study_bad_protocol_is_one_line_exit_2(sample_npz: Path, tmp_path: Path, capsys) -> None:
    syn = write_noise_pngs(tmp_path / "syn", n_per_class=2)
    code = cli.main(["study", "--data", str(sample_npz), "--synthetic", str(syn), "--protocols", "trtr,foo",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--protocols trtr,foo" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # 17-49 s; notebook 04 runs the same study under nbval in make test: make test-slow (CI's second stage) keeps it
def test_study_cli_writes_the_results_json_of_notebook_04(sample_npz: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 04 executed (papermill, smoke mode) and the CLI on the same inputs write equal JSON."""
    import papermill as pm

    monkeypatch.setenv("CXR_SMOKE", "1")  # the notebook's smoke switch; the CLI gets --smoke
    work = tmp_path / "work"
    syn = write_noise_pngs(work / "synthetic", n_per_class=6)  # the sample's real train: 5 per class; 5 are taken
    io.atomic_write_json(work / "gan" / "config.json", {"data": {"npz": str(sample_npz)}})  # what notebook 02 records
    protocols, extractor = ["trtr", "tstr"], "domain"  # two protocols keep it quick; domain: no download attempt
    ratios = [0, 1]  # ratio 0 trains nothing more (tstr has no ratio-0 point) and draws the ratio figure
    out = tmp_path / "cli"
    # the CLI in its own process, as a headless user runs it, while the notebook runs in its kernel
    proc = subprocess.Popen([sys.executable, "-m", "cxr_utils", "study", "--data", str(sample_npz), "--synthetic", str(syn),
                             "--protocols", ",".join(protocols), "--extractor", extractor, "--smoke", "--out", str(out),
                             "--synthetic-ratio", "0,1"],
                            cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / "04_evaluate_vgg16.ipynb"), str(tmp_path / "04.ipynb"),
                            parameters={"WORK_DIR": str(work), "PROTOCOLS": protocols, "EXTRACTOR": extractor,
                                        "SYNTHETIC_RATIOS": ratios},
                            cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
        stdout, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout

    nb, headless = io.read_json(work / "evaluation" / "results.json"), io.read_json(out / "results.json")
    assert [r["protocol"] for r in headless["protocols"]] == protocols
    assert headless["protocols"][0]["command"].startswith("python -m cxr_utils study --data ")
    assert nb["protocols"][0]["command"].startswith("notebooks/04_evaluate_vgg16.ipynb")
    assert headless["seed_claim_check"] == nb["seed_claim_check"]
    for a, b in zip(nb["protocols"], headless["protocols"], strict=True):
        assert _without(a) == _without(b), a["protocol"]
    for key in ("across_folders", "synthetic_folders", "synthetic_ratios", "headline_ratio", "paired_method"):
        assert nb[key] == headless[key], key
    assert headless["synthetic_ratios"] == [0.0, 1.0] and headless["headline_ratio"] == 1.0
    r = headless["protocols"][1]
    # tstr at ratio 1: per class exactly as many synthetic images as trtr's real ones (the folder holds 6 per class)
    assert r["n_train"] == {"synthetic": {"NORMAL": 5, "PNEUMONIA": 5}} and r["smoke"]
    assert r["synthetic_ratio"] == 1.0 and r["vs_trtr"]["difference"]["accuracy"] is not None
    # ImageNet where Keras's file or the offline copy can be had (named), else random init with the reason
    assert (r["weights"], r["weights_source"]) in {("imagenet", imagenet.KERAS_SOURCE), ("imagenet", imagenet.OFFLINE_SOURCE),
                                                   ("random init", "random init")}
    assert r["weights"] == "imagenet" or any(n.startswith("fallback: VGG16 ImageNet weights unavailable") for n in r["notes"])
    assert all(classification.counts_consistent(e) for p in headless["protocols"] for e in p["per_seed"])
    assert _without(io.read_json(work / "evaluation" / "metrics.json")) == _without(io.read_json(out / "metrics.json"))
    names = {"04_protocol_comparison.png", "04_roc.png", "04_closest_pairs.png", "04_paired_differences.png",
             "04_ratio_sweep.png", *(f"04_{k}_{p}.png" for k in ("history", "confusion") for p in protocols)}
    assert {p.name for p in (out / "figures").glob("*.png")} == names
    assert {p.name for p in (work / "figures").glob("04_*.png")} == names
    assert f"wrote {out / 'results.json'}" in stdout


def test_only_study_grade_results_publish_their_figures(tmp_path: Path) -> None:
    figs, assets = tmp_path / "figures", tmp_path / "assets"
    figs.mkdir()
    (figs / "04_roc.png").write_bytes(b"roc")
    grade = {"weights": "imagenet", "full_dataset": True, "smoke": False}
    assert study.publish_figures([grade, {**grade, "smoke": True}], figs, assets) is None and not assets.exists()
    assert study.publish_figures([grade], figs, assets) == list(study.CURATED)
    assert sorted(p.name for p in assets.iterdir()) == ["04_roc.png"]  # a figure that was not drawn is not invented
    assert (assets / "04_roc.png").read_bytes() == b"roc"


def test_the_study_resolves_the_vgg16_weights_once_for_all_protocols(sample_npz: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, every weight download attempt waits for the resolver (~15 s here): one attempt per study, not one per
    protocol; every protocol gets the same answer (and the same fallback note)."""
    asked, got = [], []

    def fake_resolve(weights):
        asked.append(weights)
        return None, classifier.RANDOM_INIT, "fallback: VGG16 ImageNet weights unavailable (test); using random init"

    class Stop(Exception):
        pass

    def fake_protocol(protocol, real, syn, ratio=1.0, folder=None, provenance=None, options=None):
        got.append((protocol, options.resolved))
        if len(got) == 3:
            raise Stop  # the wiring is what is tested; no classifier is trained
        return {"notes": []}

    monkeypatch.setattr(classifier, "resolve_weights", fake_resolve)
    monkeypatch.setattr(protocols, "run_protocol", fake_protocol)
    syn = write_noise_pngs(tmp_path / "synthetic", n_per_class=5)  # ratio 1 of the sample's 5 + 5 real train images
    with pytest.raises(Stop):
        study.run_study(sample_npz, syn, tmp_path / "out", protocols="trtr,tstr,augment", weights="auto", smoke=True,
                        log=lambda _: None)
    assert asked == ["auto"]
    assert [p for p, _ in got] == ["trtr", "tstr", "augment"] and len({id(r) for _, r in got}) == 1
    assert got[0][1][1] == classifier.RANDOM_INIT



def test_ratios_folders_and_the_plan_of_classifiers() -> None:
    assert study.parse_ratios("2, 0,0.5,1") == [0.0, 0.5, 1.0, 2.0] and study.parse_ratios(1) == [1.0]
    assert study.parse_ratios(["0", "1,2"]) == [0.0, 1.0, 2.0] and study.DEFAULT_RATIOS == (1.0,)
    for bad in ("-1", "a", "", "1,inf"):
        with pytest.raises(UserError, match="--synthetic-ratio .*: use numbers >= 0"):
            study.parse_ratios(bad)
    assert study.parse_folders("a,b") == ["a", "b"] == study.parse_folders([Path("a"), "b", "a"])
    with pytest.raises(UserError, match="--synthetic: name at least one synthetic folder"):
        study.parse_folders([])
    plan = study.plan_entries(["trtr", "tstr", "augment", "pretrain"], ["A", "B"], [0.0, 0.5, 1.0])
    assert plan == [("trtr", None, None),  # once, whatever the folders: it reads none
                    *[(p, f, r) for p in ("tstr", "augment", "pretrain") for f in ("A", "B") for r in (0.5, 1.0)]]
    assert study.plan_entries(["augment"], ["A"], [0.0]) == []  # ratio 0 of augment is trtr: nothing to train
    assert [study.headline_ratio(r) for r in ([0, 0.5, 1, 2], [0, 0.5, 2], [0, 2], [0])] == [1.0, 0.5, 2, None]


def _fake_study(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """run_protocol answers at once with planted predictions (no VGG16 is trained), the generative metrics too."""
    from _helpers import protocol_result

    from cxr_utils.evaluation import folder_metrics as generative

    y = np.r_[np.zeros(30, int), np.ones(50, int)]

    def fake_protocol(protocol, real, syn, ratio=1.0, folder=None, provenance=None, options=None):
        seeds = options.seeds
        calls.append((protocol, folder, ratio, syn is None))
        rng = np.random.default_rng(len(calls))
        skill = {"trtr": 0.4, "tstr": 0.1 * ratio, "augment": 0.4 + 0.05 * ratio, "pretrain": 0.4}[protocol]
        probs = [np.clip(y * skill + rng.normal(0.5 - skill / 2, 0.2, len(y)), 0, 1) for _ in range(seeds)]
        return protocol_result(protocol, y, probs, None if protocol == "trtr" else folder,
                               None if protocol == "trtr" else ratio, notes=[], **(provenance or {}))

    monkeypatch.setattr(classifier, "resolve_weights", lambda w: (None, classifier.RANDOM_INIT, None))
    monkeypatch.setattr(protocols, "run_protocol", fake_protocol)
    pairs = [{"synthetic": 0, "train": 0, "distance": 0.1}]
    monkeypatch.setattr(generative, "metrics_of", lambda *a, **k: {
        "notes": [], "extractors": {"random": {"overall": {"memorization": {"closest_pairs": pairs}}}}})


def test_the_sweep_trains_trtr_once_reuses_it_for_ratio_zero_and_reports_every_folder(
        sample_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    _fake_study(monkeypatch, calls)
    folders = [write_noise_pngs(tmp_path / f"gan{i}" / "synthetic", n_per_class=10, seed=i) for i in range(3)]
    res = study.run_study(sample_npz, folders, tmp_path / "out", protocols="trtr,tstr,augment", seeds=2, smoke=True,
                          ratios="0,0.5,1,2", bootstrap=100, log=lambda _: None)
    f = [str(x) for x in folders]
    # trtr once (no synthetic images), every other protocol per folder and ratio > 0: ratio 0 is never trained
    assert calls == [("trtr", None, 1.0, True),
                     *[(p, x, r, False) for p in ("tstr", "augment") for x in f for r in (0.5, 1.0, 2.0)]]
    saved = io.read_json(res.results_json)
    entries = saved["protocols"]
    keys = [(e["protocol"], e["synthetic"], e["synthetic_ratio"]) for e in entries]
    assert len(keys) == len(set(keys)) == 1 + 2 * 3 * 3 and ("augment", f[0], 0.0) not in keys
    assert all(len(e["per_seed"]) == 2 and [s["seed"] for s in e["per_seed"]] == [0, 1] for e in entries)
    assert entries[0]["vs_trtr"] is None and all(e["vs_trtr"]["ci95"]["accuracy"] for e in entries[1:])
    assert "trtr" in saved["ratio_zero"] and "not retrained" in saved["ratio_zero"]
    assert saved["synthetic_folders"] == f and saved["synthetic_ratios"] == [0.0, 0.5, 1.0, 2.0]
    # per (protocol, ratio): the spread across the three GAN runs beside that across classifier seeds
    aug1 = next(a for a in saved["across_folders"] if (a["protocol"], a["synthetic_ratio"]) == ("augment", 1.0))
    runs = [e for e in entries if e["protocol"] == "augment" and e["synthetic_ratio"] == 1.0]
    assert aug1["synthetic"] == f and aug1["seeds"] == [2, 2, 2]
    from cxr_utils.metrics import paired as stats

    assert aug1["metrics"]["accuracy"] == stats.spread_across_folders([[s["accuracy"] for s in e["per_seed"]] for e in runs])
    pooled = stats.paired_difference(entries[0]["test_labels"], [s["test_probs"] for e in runs for s in e["per_seed"]],
                                     [s["test_probs"] for s in entries[0]["per_seed"]], n_boot=100)
    assert aug1["vs_trtr_pooled"]["difference"] == pooled["difference"] and aug1["vs_trtr_pooled"]["n_a"] == 6
    assert [r["protocol"] for r in res.headline] == ["trtr", "tstr", "augment"]
    assert all(r["synthetic"] in (None, f[0]) and r["synthetic_ratio"] in (None, 1.0) for r in res.headline)
    assert {"04_ratio_sweep.png", "04_paired_differences.png"} <= set(res.figures)


def test_a_folder_with_too_few_images_stops_the_study_before_any_training(sample_npz: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    _fake_study(monkeypatch, calls)
    ok = write_noise_pngs(tmp_path / "ok", n_per_class=10)
    short = write_noise_pngs(tmp_path / "short", n_per_class=7)  # ratio 2 of the sample's 5 + 5 needs 10 + 10
    with pytest.raises(UserError, match=f"--synthetic {short}: too few synthetic images \\(NORMAL needs 10, it holds 7"):
        study.run_study(sample_npz, f"{ok},{short}", tmp_path / "out", protocols="trtr,augment", ratios=[1, 2],
                        smoke=True, log=lambda _: None)
    assert calls == [] and not (tmp_path / "out").exists()


def test_cli_study_passes_several_folders_and_ratios(sample_npz: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import types

    got = {}

    def fake(npz, synthetic, out, **kw):
        got.update(synthetic=synthetic, **kw)
        return types.SimpleNamespace(results=[], results_json="r.json", metrics_json="m.json",
                                     figures={"x": Path("figs/x.png")})

    monkeypatch.setattr(study, "run_study", fake)
    assert cli.main(["study", "--data", str(sample_npz), "--synthetic", "A", "B,C", "--synthetic-ratio", "0,0.5", "1",
                     "--out", str(tmp_path / "o")]) == 0
    assert study.parse_folders(got["synthetic"]) == ["A", "B", "C"] and study.parse_ratios(got["ratios"]) == [0, 0.5, 1]
    assert "--synthetic A,B,C" in got["command"] and "--synthetic-ratio 0,0.5,1" in got["command"]  # recorded, rerunnable
    assert (got["precision"], got["deterministic"], got["fresh"]) == (None, None, False)  # defaults: auto, resume
    assert cli.main(["study", "--data", str(sample_npz), "--synthetic", "A", "--precision", "bf16", "--deterministic",
                     "--fresh", "--out", str(tmp_path / "o")]) == 0
    assert (got["precision"], got["deterministic"], got["fresh"]) == ("bf16", True, True)


def test_cli_evaluate_passes_precision_and_deterministic(sample_npz: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    got = {}

    def fake(npz, protocol, synthetic, options=None, **kw):
        got["cfg"] = options.cfg
        return {"notes": [], "weights": "random init"}

    monkeypatch.setattr(protocols, "evaluate", fake)
    monkeypatch.setattr("cxr_utils.evaluation.tables.summary_line", lambda r: "summary")
    assert cli.main(["evaluate", "--data", str(sample_npz), "--protocol", "trtr", "--precision", "fp16",
                     "--deterministic", "--smoke", "--out", str(tmp_path / "r.json")]) == 0
    assert (got["cfg"].precision, got["cfg"].deterministic, got["cfg"].input_size) == ("fp16", True, 32)
