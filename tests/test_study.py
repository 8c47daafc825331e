"""`python -m cxr_utils study` runs what notebook 04 runs: the same results.json and metrics.json on the same inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import write_noise_pngs

from cxr_utils import cli, evaluation, imagenet, io, study
from cxr_utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
# the only fields that differ between the CLI and the notebook on the same inputs: how each was started
DIFFERS = ("command",)


def _without(d: dict, keys: tuple[str, ...] = DIFFERS) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


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


def test_study_cli_writes_the_results_json_of_notebook_04(sample_npz: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 04 executed (papermill, smoke mode) and the CLI on the same inputs write equal JSON."""
    import papermill as pm

    monkeypatch.setenv("CXR_SMOKE", "1")  # the notebook's smoke switch; the CLI gets --smoke
    work = tmp_path / "work"
    syn = write_noise_pngs(work / "synthetic", n_per_class=4)
    io.atomic_write_json(work / "gan" / "config.json", {"data": {"npz": str(sample_npz)}})  # what notebook 02 records
    protocols, extractor = ["trtr", "tstr"], "domain"  # two protocols keep it quick; domain: no download attempt
    out = tmp_path / "cli"
    # the CLI in its own process, as a headless user runs it, while the notebook runs in its kernel
    proc = subprocess.Popen([sys.executable, "-m", "cxr_utils", "study", "--data", str(sample_npz), "--synthetic", str(syn),
                             "--protocols", ",".join(protocols), "--extractor", extractor, "--smoke", "--out", str(out)],
                            cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / "04_evaluate_vgg16.ipynb"), str(tmp_path / "04.ipynb"),
                            parameters={"WORK_DIR": str(work), "PROTOCOLS": protocols, "EXTRACTOR": extractor},
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
    r = headless["protocols"][1]
    assert r["n_train"] == {"synthetic": {"NORMAL": 4, "PNEUMONIA": 4}} and r["smoke"]
    # ImageNet where Keras's file or the offline copy can be had (named), else random init with the reason
    assert (r["weights"], r["weights_source"]) in {("imagenet", imagenet.KERAS_SOURCE), ("imagenet", imagenet.OFFLINE_SOURCE),
                                                   ("random init", "random init")}
    assert r["weights"] == "imagenet" or any(n.startswith("fallback: VGG16 ImageNet weights unavailable") for n in r["notes"])
    assert all(evaluation.counts_consistent(e) for p in headless["protocols"] for e in p["per_seed"])
    assert _without(io.read_json(work / "evaluation" / "metrics.json")) == _without(io.read_json(out / "metrics.json"))
    names = {"04_protocol_comparison.png", "04_roc.png", "04_closest_pairs.png",
             *(f"04_{k}_{p}.png" for k in ("history", "confusion") for p in protocols)}
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
        return None, evaluation.RANDOM_INIT, "fallback: VGG16 ImageNet weights unavailable (test); using random init"

    class Stop(Exception):
        pass

    def fake_protocol(protocol, real, syn, **kw):
        got.append((protocol, kw["resolved"]))
        if len(got) == 3:
            raise Stop  # the wiring is what is tested; no classifier is trained
        return {"notes": []}

    monkeypatch.setattr(evaluation, "resolve_weights", fake_resolve)
    monkeypatch.setattr(evaluation, "run_protocol", fake_protocol)
    syn = write_noise_pngs(tmp_path / "synthetic", n_per_class=4)
    with pytest.raises(Stop):
        study.run_study(sample_npz, syn, tmp_path / "out", protocols="trtr,tstr,augment", weights="auto", smoke=True,
                        log=lambda _: None)
    assert asked == ["auto"]
    assert [p for p, _ in got] == ["trtr", "tstr", "augment"] and len({id(r) for _, r in got}) == 1
    assert got[0][1][1] == evaluation.RANDOM_INIT

