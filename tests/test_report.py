"""The study's report: the seed-claim search over every confusion matrix, study-grade gating, the README section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_utils.evaluation import protocols
from cxr_utils.evaluation import tables as R
from cxr_utils.metrics import classification


def test_no_confusion_matrix_gives_the_seed_headline():
    r = R.search_confusion_matrices(93.90, 92.62, 99.12, 95.76, n_neg=234, n_pos=390)
    assert r["matches"] == []
    # recall must be tp/390: 386/390 = 98.97, 387/390 = 99.23, so 99.12 is unreachable on its own
    assert {k: r["closest"][k] for k in ("tn", "fp", "fn", "tp")} == {"tn": 202, "fp": 32, "fn": 4, "tp": 386}
    assert "No confusion matrix" in r["statement"] and "tn=202 fp=32 fn=4 tp=386" in r["statement"]


def test_search_finds_a_matrix_that_exists():
    m = classification.metrics_from_counts(tn=200, fp=34, fn=5, tp=385)
    claim = {k: round(100 * v, 2) for k, v in m.items()}
    r = R.search_confusion_matrices(**claim, n_neg=234, n_pos=390)
    assert {"tn": 200, "fp": 34, "fn": 5, "tp": 385}.items() <= r["matches"][0].items()


def test_only_imagenet_full_data_non_smoke_runs_are_study_grade():
    grade = {"weights": "imagenet", "full_dataset": True, "smoke": False}
    assert R.is_study_grade(grade)
    for k, v in (("weights", "random init"), ("full_dataset", False), ("smoke", True)):
        assert not R.is_study_grade({**grade, k: v}), k


@pytest.mark.parametrize("counts", [
    dict(tn=200, fp=30, fn=5, tp=10),  # precision below 50 % (tp < fp)
    dict(tn=10, fp=0, fn=5, tp=0),  # nothing predicted positive: precision and F1 are 0 by convention
    dict(tn=3, fp=0, fn=2, tp=1),  # a single positive prediction: precision 100 %
    dict(tn=3, fp=1, fn=1, tp=1),  # a single true positive: F1 50 %
])
def test_search_finds_every_reachable_matrix(counts):
    n_neg, n_pos = counts["tn"] + counts["fp"], counts["fn"] + counts["tp"]
    claim = {k: round(100 * v, 2) for k, v in classification.metrics_from_counts(**counts).items()}
    r = R.search_confusion_matrices(**claim, n_neg=n_neg, n_pos=n_pos)
    assert counts in [{k: m[k] for k in classification.COUNTS} for m in r["matches"]]
    assert r["claimed"] == claim and (r["n_neg"], r["n_pos"], r["decimals"]) == (n_neg, n_pos, 2)
    assert r["statement"].startswith(f"{len(r['matches'])} confusion matrices of a {n_neg}/{n_pos} test set give "
                                     + "/".join(f"{claim[k]:.2f}" for k in classification.HEADLINE))


def test_search_rounding_tolerance_is_half_a_unit_either_way():
    counts = dict(tn=4, fp=0, fn=1, tp=399)  # recall 399/400 = 99.75 %: exactly half-way between 99.7 and 99.8
    ok = {"accuracy": 99.8, "precision": 100.0, "f1": 99.9}
    for recall, found in ((99.7, True), (99.8, True), (99.6, False), (99.9, False)):
        r = R.search_confusion_matrices(**ok, recall=recall, n_neg=4, n_pos=400, decimals=1)
        assert (counts in [{k: m[k] for k in classification.COUNTS} for m in r["matches"]]) is found, recall


def test_search_reports_the_closest_matrix_with_its_values():
    r = R.search_confusion_matrices(93.90, 92.62, 99.12, 95.76)  # the defaults are the Kaggle test split, 234 / 390
    assert (r["n_neg"], r["n_pos"]) == (234, 390) and r["claimed"]["recall"] == 99.12
    implied = classification.metrics_from_counts(tn=202, fp=32, fn=4, tp=386)
    assert {k: r["closest"][k] for k in classification.HEADLINE} == {k: round(100 * v, 4) for k, v in implied.items()}
    gaps = [abs(100 * implied[k] - c) for k, c in zip(classification.HEADLINE, (93.90, 92.62, 99.12, 95.76), strict=True)]
    assert r["closest"]["max_abs_gap"] == round(max(gaps), 4) == 0.3308  # accuracy 94.2308 vs 93.90
    assert "(all 91,885 checked)" in r["statement"] and "94.23/92.34/98.97/95.54" in r["statement"]


def test_results_markdown_tabulates_only_study_grade_runs(tmp_path):
    per = {"tn": 200, "fp": 34, "fn": 5, "tp": 385}
    m = {**classification.metrics_from_counts(**per), "roc_auc": 0.97}
    study = {"protocol": "trtr", "protocol_text": protocols.PROTOCOL_TEXT["trtr"], "weights": "imagenet", "full_dataset": True,
             "smoke": False, "source": "kaggle", "seeds": [0], "mean": {**m, **per}, "std": {k: 0.0 for k in m},
             "ci95": {k: None for k in m}, "per_seed": [{**m, **per}]}
    (tmp_path / "a.json").write_text(json.dumps({"protocols": [study]}))
    md = R.results_markdown(tmp_path / "a.json")
    assert "| trtr (train on real, test on real) | kaggle | 1 | 93.75 +- 0.00 |" in md
    assert "200/34/5/385" in md and "No confusion matrix" in md and "No study result yet" not in md


def test_per_class_report_is_sklearns_report_of_the_first_seed_at_its_threshold():
    r = {"threshold": 0.5, "test_labels": [0, 0, 1, 1],
         "per_seed": [{"test_probs": [0.2, 0.6, 0.5, 0.9]}, {"test_probs": [0.9, 0.9, 0.1, 0.1]}]}
    text = R.per_class_report(r)
    rows = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.strip().startswith(("NORMAL", "PNEUMONIA"))}
    # first seed at 0.5: predictions 0, 1, 1, 1 -> NORMAL precision 1, recall 0.5; PNEUMONIA precision 2/3, recall 1
    assert rows == {"NORMAL": ["1.000", "0.500", "0.667", "2"], "PNEUMONIA": ["0.667", "1.000", "0.800", "2"]}


def test_comparison_and_spread_tables_show_paired_differences_and_both_spreads():
    from _helpers import study_results

    from cxr_utils.evaluation import study
    from cxr_utils.metrics import paired as stats

    results = study_results()
    across = study.compare_to_trtr(results, n_boot=200)
    t = R.comparison_table(results)
    assert t["protocol"].tolist() == ["trtr"] + ["tstr", "augment"] * 4
    assert t["synthetic"].tolist() == [""] + ["run 1"] * 4 + ["run 2"] * 4  # both folders are named "synthetic"
    named = R.comparison_table(study_results(folders=("runs/a/syn-a", "runs/b/syn-b")))["synthetic"].tolist()
    assert named == [""] + ["syn-a"] * 4 + ["syn-b"] * 4  # distinct folder names are shown as they are
    assert t["ratio"].tolist()[1:] == [0.5, 0.5, 1.0, 1.0] * 2
    row, r = t.iloc[3], results[3]  # augment x0.5, folder a
    expect = stats.paired_difference(r["test_labels"], [e["test_probs"] for e in r["per_seed"]],
                                     [e["test_probs"] for e in results[0]["per_seed"]], n_boot=200)
    assert row["accuracy_vs_trtr"] == round(100 * expect["difference"]["accuracy"], 2)
    lo, hi = expect["ci95"]["roc_auc"]
    assert row["roc_auc_vs_trtr_ci95"] == f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    assert t.iloc[0]["accuracy_vs_trtr"] is None or np.isnan(t.iloc[0]["accuracy_vs_trtr"])  # trtr against itself: none
    s = R.spread_table(across)
    assert s[["protocol", "ratio", "gan_runs", "seeds_per_run"]].values.tolist() == [
        ["tstr", 0.5, 2, 2], ["augment", 0.5, 2, 2], ["tstr", 1.0, 2, 2], ["augment", 1.0, 2, 2]]
    per_run = [[e["accuracy"] for e in x["per_seed"]] for x in (results[1], results[5])]  # tstr x0.5, both folders
    assert s.iloc[0]["accuracy_std_gan_runs"] == round(100 * np.std([np.mean(v) for v in per_run], ddof=1), 2)
    assert s.iloc[0]["accuracy_std_classifier_seeds"] == round(100 * np.mean([np.std(v, ddof=1) for v in per_run]), 2)


def test_results_markdown_adds_paired_differences_and_the_gan_run_spread(tmp_path):
    from _helpers import study_results

    from cxr_utils.evaluation import study

    grade = {"weights": "imagenet", "full_dataset": True, "smoke": False, "source": "kaggle"}
    results = study_results(model="VGG16 ImageNet", **grade)
    across = study.compare_to_trtr(results, n_boot=200)
    (tmp_path / "r.json").write_text(json.dumps({"protocols": results, "across_folders": across}))
    md = R.results_markdown(tmp_path / "r.json", seed_check=False)
    vs = results[3]["vs_trtr"]
    d, (lo, hi) = vs["difference"]["accuracy"], vs["ci95"]["accuracy"]
    assert "| augment x0.5, run 1 (train on real + synthetic, test on real) | kaggle | 2 |" in md
    assert f"accuracy {100 * d:+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" in md
    assert "paired, class-stratified bootstrap 95% interval (BCa)" in md and "Across GAN runs" in md
    a = across[0]["metrics"]["accuracy"]
    assert f"| tstr x0.5 | 2 | {100 * a['mean']:.2f} | {100 * a['std_across_folders']:.2f} | " \
           f"{100 * a['std_across_seeds']:.2f} |" in md
    (tmp_path / "smoke.json").write_text(json.dumps({"protocols": study_results(), "across_folders": across}))
    other = R.results_markdown(tmp_path / "smoke.json", seed_check=False)
    assert "Across GAN runs" not in other and "(trtr, tstr x0.5, augment x0.5, tstr x1, augment x1)" in other
