"""VGG16 protocols: counts-consistent numbers, honest weight labels, clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import write_noise_pngs

from cxr_utils import cli
from cxr_utils import evaluation as E
from cxr_utils.errors import UserError


def test_metrics_from_counts_closed_form():
    m = E.metrics_from_counts(tn=50, fp=10, fn=5, tp=35)
    assert m == pytest.approx({"accuracy": 0.85, "precision": 35 / 45, "recall": 0.875, "f1": 70 / 85})
    assert E.counts_consistent({**m, "tn": 50, "fp": 10, "fn": 5, "tp": 35})
    assert not E.counts_consistent({**m, "accuracy": 0.86, "tn": 50, "fp": 10, "fn": 5, "tp": 35})
    assert E.confusion_counts([0, 0, 1, 1, 1], [0, 1, 0, 1, 1]) == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}


def test_no_confusion_matrix_gives_the_seed_headline():
    r = E.search_confusion_matrices(93.90, 92.62, 99.12, 95.76, n_neg=234, n_pos=390)
    assert r["matches"] == []
    # recall must be tp/390: 386/390 = 98.97, 387/390 = 99.23, so 99.12 is unreachable on its own
    assert {k: r["closest"][k] for k in ("tn", "fp", "fn", "tp")} == {"tn": 202, "fp": 32, "fn": 4, "tp": 386}
    assert "No confusion matrix" in r["statement"] and "tn=202 fp=32 fn=4 tp=386" in r["statement"]


def test_search_finds_a_matrix_that_exists():
    m = E.metrics_from_counts(tn=200, fp=34, fn=5, tp=385)
    claim = {k: round(100 * v, 2) for k, v in m.items()}
    r = E.search_confusion_matrices(**claim, n_neg=234, n_pos=390)
    assert {"tn": 200, "fp": 34, "fn": 5, "tp": 385}.items() <= r["matches"][0].items()


def test_classification_metrics_and_bootstrap_on_perfect_predictions():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.7])
    m = E.classification_metrics(y, p)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (2, 0, 0, 3) and m["accuracy"] == 1.0 and m["roc_auc"] == 1.0
    ci = E.bootstrap_ci(y, [p, p], n_boot=30, seed=0)
    assert ci["accuracy"] == [1.0, 1.0] and ci["f1"] == [1.0, 1.0]
    # an imperfect classifier: resampling the test images must spread the interval around the point estimate
    q = np.array([0.1, 0.6, 0.9, 0.4, 0.7])  # accuracy 3/5
    lo, hi = E.bootstrap_ci(y, [q], n_boot=200, seed=0)["accuracy"]
    assert E.classification_metrics(y, q)["accuracy"] == pytest.approx(0.6) and lo < 0.6 < hi


def test_protocol_phases():
    real = (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]))
    syn = (np.ones((2, 8, 8), np.uint8), np.array([0, 1]))
    assert [n for n, *_ in E.train_set("pretrain", real, syn)] == ["synthetic", "real"]
    assert len(E.train_set("augment", real, syn)[0][1]) == 6
    with pytest.raises(UserError, match="--synthetic: protocol tstr needs"):
        E.train_set("tstr", real, None)


def test_weights_resolution_offline(offline_keras):
    with pytest.raises(UserError, match="--weights imagenet: the VGG16 ImageNet weights could not be downloaded"):
        E.resolve_weights("imagenet")
    path, label, note = E.resolve_weights("auto")
    assert path is None and label == "random init" and "random init" in note
    assert E.resolve_weights("none")[:2] == (None, "random init")


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case, message", [
    ("missing_class", "class folder missing"),
    ("wrong_size", "but 64x64 was expected"),
    ("empty", "no .png images"),
    ("no_folder", "--synthetic: protocol tstr needs"),
    ("input_size", "--input-size 16"),
])
def test_cli_bad_input_exits_2(case, message, sample_npz, tmp_path, capsys):
    syn = tmp_path / "syn"
    if case == "missing_class":
        write_noise_pngs(syn, classes=("NORMAL",))
    elif case == "wrong_size":
        write_noise_pngs(syn, size=32)
    elif case == "empty":
        (syn / "NORMAL").mkdir(parents=True)
        (syn / "PNEUMONIA").mkdir()
    else:
        write_noise_pngs(syn)
    argv = ["evaluate", "--data", str(sample_npz), "--protocol", "tstr", "--weights", "none", "--smoke",
            "--out", str(tmp_path / "r.json")]
    if case != "no_folder":
        argv += ["--synthetic", str(syn)]
    if case == "input_size":
        argv += ["--input-size", "16"]
    code, _, err = _run_cli(argv, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_cli_weights_imagenet_offline_exits_2(sample_npz, tmp_path, capsys, offline_keras):
    code, _, err = _run_cli(["evaluate", "--data", str(sample_npz), "--protocol", "trtr", "--smoke",
                             "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "--weights imagenet" in err and "--weights auto" in err


def test_cli_tstr_writes_counts_consistent_json_labelled_random_init(sample_npz, tmp_path, capsys, offline_keras):
    syn = write_noise_pngs(tmp_path / "syn", n_per_class=3)
    out = tmp_path / "eval" / "tstr.json"
    code, stdout, err = _run_cli(["evaluate", "--data", str(sample_npz), "--synthetic", str(syn), "--protocol", "tstr",
                                  "--weights", "auto", "--seeds", "2", "--smoke", "--out", str(out)], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["weights"] == "random init" and res["weights_requested"] == "auto"
    assert res["n_train"] == {"synthetic": {"NORMAL": 3, "PNEUMONIA": 3}}
    assert res["n_test"] == {"NORMAL": 1, "PNEUMONIA": 1} and res["source"] == "sample" and not res["full_dataset"]
    assert res["seeds"] == [0, 1] and len(res["per_seed"]) == 2
    assert res["command"].startswith("python -m cxr_utils evaluate --data ") and "--protocol tstr" in res["command"]
    for e in res["per_seed"]:
        assert e["tn"] + e["fp"] + e["fn"] + e["tp"] == 2 and len(e["test_probs"]) == 2
        implied = E.metrics_from_counts(e["tn"], e["fp"], e["fn"], e["tp"])
        assert {k: e[k] for k in E.HEADLINE} == implied  # exactly the numbers the counts imply
        # and the counts are those of the stored test labels against the stored probabilities (no misalignment)
        preds = (np.asarray(e["test_probs"]) >= res["threshold"]).astype(int)
        assert E.confusion_counts(np.asarray(res["test_labels"]), preds) == {k: e[k] for k in E.COUNTS}
        assert [s["stage"] for s in e["stages"]] == ["synthetic:head", "synthetic:finetune"]
    for k in E.HEADLINE:
        assert res["mean"][k] == pytest.approx(np.mean([e[k] for e in res["per_seed"]]))
    lines = [ln for ln in stdout.splitlines() if ln.strip() and not ln.startswith(("Epoch", "1/1"))]
    summary = [ln for ln in lines if ln.startswith(("[tstr", "tstr", "fallback", "wrote"))]
    assert len(summary) == 5 and all("random init" in ln for ln in summary)
    md = E.results_markdown(out, seed_check=False)
    assert "No study result yet" in md and "random init" in md and "`sample` data source" in md
    assert "|" not in md  # no table: pipeline-check numbers are not presented as results
    assert res["smoke"] is True


def test_results_markdown_tabulates_only_study_grade_runs(tmp_path):
    per = {"tn": 200, "fp": 34, "fn": 5, "tp": 385}
    m = {**E.metrics_from_counts(**per), "roc_auc": 0.97}
    study = {"protocol": "trtr", "protocol_text": E.PROTOCOL_TEXT["trtr"], "weights": "imagenet", "full_dataset": True,
             "smoke": False, "source": "kaggle", "seeds": [0], "mean": {**m, **per}, "std": {k: 0.0 for k in m},
             "ci95": {k: None for k in m}, "per_seed": [{**m, **per}]}
    (tmp_path / "a.json").write_text(json.dumps({"protocols": [study]}))
    md = E.results_markdown(tmp_path / "a.json")
    assert "| trtr (train on real, test on real) | kaggle | 1 | 93.75 +- 0.00 |" in md
    assert "200/34/5/385" in md and "No confusion matrix" in md and "No study result yet" not in md
