"""What the VGG16 study's results say: the one-line summary, the comparison table, the README Results section, and
the seed repository's headline checked against every confusion matrix of the Kaggle test split.

Reads the result dictionaries that cxr_utils.evaluation.protocols writes (results JSON); trains nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASS_NAMES
from ..files import read_json
from ..metrics.classification import COUNTS, HEADLINE, METRICS
from ..metrics.paired import PAIRED_METRICS
from .classifier import IMAGENET

# the seed repository's headline (percent) and the Kaggle test split it was measured on
SEED_CLAIM = {"accuracy": 93.90, "precision": 92.62, "recall": 99.12, "f1": 95.76}
KAGGLE_TEST = {"n_neg": 234, "n_pos": 390}


def search_confusion_matrices(accuracy: float, precision: float, recall: float, f1: float,
                              n_neg: int = KAGGLE_TEST["n_neg"], n_pos: int = KAGGLE_TEST["n_pos"], decimals: int = 2) -> dict[str, Any]:
    """Every confusion matrix of a test set with n_neg/n_pos images whose four percentages round to the claim.

    Checks all (n_pos + 1) x (n_neg + 1) matrices; `closest` minimises the largest gap to the claimed figures.
    """
    claimed = np.array([accuracy, precision, recall, f1], np.float64)
    tp = np.arange(n_pos + 1, dtype=np.float64)[:, None] * np.ones((1, n_neg + 1))
    tn = np.ones((n_pos + 1, 1)) * np.arange(n_neg + 1, dtype=np.float64)[None, :]
    fn, fp = n_pos - tp, n_neg - tn
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.stack([(tp + tn) / (n_pos + n_neg), np.where(tp + fp > 0, tp / (tp + fp), 0.0), tp / n_pos,
                      np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)], axis=-1) * 100.0
    gap = np.abs(m - claimed)
    half = 0.5 * 10.0 ** (-decimals) + 1e-9  # "rounds to" under either rounding convention
    ok = (gap <= half).all(axis=-1)
    worst = gap.max(axis=-1)
    i, j = np.unravel_index(int(np.argmin(worst)), worst.shape)

    def as_dict(a: int, b: int) -> dict[str, Any]:
        v = m[a, b]
        return {"tn": int(b), "fp": int(n_neg - b), "fn": int(n_pos - a), "tp": int(a),
                **{k: round(float(x), 4) for k, x in zip(HEADLINE, v, strict=True)}}

    matches = [as_dict(int(a), int(b)) for a, b in zip(*np.nonzero(ok), strict=True)]
    closest = {**as_dict(int(i), int(j)), "max_abs_gap": round(float(worst[i, j]), 4)}
    claim_txt = "/".join(f"{x:.{decimals}f}" for x in claimed)
    if matches:
        statement = f"{len(matches)} confusion matrices of a {n_neg}/{n_pos} test set give {claim_txt} at {decimals}-decimal rounding."
    else:
        c = closest
        statement = (f"No confusion matrix of a test set with {n_neg} NORMAL / {n_pos} PNEUMONIA images gives accuracy/"
                     f"precision/recall/F1 = {claim_txt} at {decimals}-decimal rounding (all {(n_pos + 1) * (n_neg + 1):,} "
                     f"checked). The closest, tn={c['tn']} fp={c['fp']} fn={c['fn']} tp={c['tp']}, gives "
                     f"{c['accuracy']:.2f}/{c['precision']:.2f}/{c['recall']:.2f}/{c['f1']:.2f} "
                     f"(largest gap {c['max_abs_gap']:.2f} points).")
    return {"claimed": dict(zip(HEADLINE, map(float, claimed), strict=True)), "n_neg": n_neg, "n_pos": n_pos,
            "decimals": decimals, "matches": matches, "closest": closest, "statement": statement}


def summary_line(res: dict[str, Any]) -> str:
    """One line: protocol, weights (says 'random init' when used), mean +- std of the headline metrics."""
    parts = []
    for k in METRICS:
        m, s = res["mean"].get(k), res["std"].get(k)
        parts.append(f"{k} {100 * m:.2f}+-{100 * s:.2f}" if m is not None else f"{k} n/a")
    mt = res.get("mean_tuned")
    if mt:
        parts.append(f"val-tuned threshold {mt['threshold']:.3f}: accuracy {100 * mt['accuracy']:.2f}, f1 {100 * mt['f1']:.2f}")
    vs = res.get("vs_trtr") or {}
    d, ci = (vs.get("difference") or {}).get("accuracy"), (vs.get("ci95") or {}).get("accuracy")
    if d is not None:
        parts.append(f"accuracy vs trtr {100 * d:+.2f} points" + (f" (paired 95% CI {_ci(ci, signed=True)})" if ci else ""))
    name = res["protocol"] if res.get("synthetic_ratio") is None else f"{res['protocol']} x{res['synthetic_ratio']:g}"
    return f"{name} [{res['model']}, {len(res['seeds'])} seed(s), data {res.get('source', '?')}]: " + ", ".join(parts)


def per_class_report(r: dict[str, Any], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """scikit-learn's per-class report of a protocol's first seed on the real test split, at its threshold."""
    from sklearn.metrics import classification_report

    pred = [int(p >= r["threshold"]) for p in r["per_seed"][0]["test_probs"]]
    return classification_report(r["test_labels"], pred, labels=list(range(len(class_names))),
                                 target_names=list(class_names), digits=3, zero_division=0)


def _pct(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(100 * v, digits)


def _ci(ci: Sequence[float] | None, signed: bool = False) -> str | None:
    return None if not ci else (f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if signed
                                else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")


def folder_labels(results: Sequence[dict[str, Any]]) -> dict[str | None, str]:
    """A short name per synthetic folder: its folder name if those are distinct, else 'run 1', 'run 2', ..."""
    folders = list(dict.fromkeys(r.get("synthetic") for r in results if r.get("synthetic_ratio") is not None))
    names = [Path(f).name if f else "" for f in folders]
    short = names if len(set(names)) == len(names) else [f"run {i + 1}" for i in range(len(folders))]
    return {None: "", **dict(zip(folders, short, strict=True))}


def comparison_table(results: Sequence[dict[str, Any]]) -> Any:
    """pandas table, one row per entry (protocol, synthetic folder, ratio): mean, std and 95% interval (percent), mean
    counts, and the paired difference from trtr on the same test images with its 95% interval (points)."""
    import pandas as pd

    labels = folder_labels(results)
    rows = []
    for r in results:
        row: dict[str, Any] = {"protocol": r["protocol"], "synthetic": labels.get(r.get("synthetic"), r.get("synthetic")),
                               "ratio": r.get("synthetic_ratio"), "model": r["model"], "seeds": len(r["seeds"])}
        for k in METRICS:
            row[k] = _pct(r["mean"].get(k))
            row[f"{k}_std"] = _pct(r["std"].get(k))
            row[f"{k}_ci95"] = _ci(r["ci95"].get(k))
        vs = r.get("vs_trtr") or {}
        for k in PAIRED_METRICS:
            row[f"{k}_vs_trtr"] = _pct((vs.get("difference") or {}).get(k))
            row[f"{k}_vs_trtr_ci95"] = _ci((vs.get("ci95") or {}).get(k), signed=True)
        for k in COUNTS:
            row[k] = r["mean"][k]
        mt = r.get("mean_tuned") or {}
        row["tuned_threshold"] = None if not mt else round(mt["threshold"], 3)
        for k in ("accuracy", "f1"):
            row[f"{k}_tuned"] = None if mt.get(k) is None else round(100 * mt[k], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def spread_table(across: Sequence[dict[str, Any]], metrics: Sequence[str] = ("accuracy", "roc_auc")) -> Any:
    """pandas table, one row per (protocol, ratio): the mean over synthetic folders (GAN runs), the spread across them
    (std of the per-folder means), the spread across classifier seeds (mean within-folder std), all in percent, and
    the difference from trtr pooled over the folders with its paired 95% interval (points)."""
    import pandas as pd

    rows = []
    for a in across:
        row: dict[str, Any] = {"protocol": a["protocol"], "ratio": a["synthetic_ratio"], "gan_runs": len(a["synthetic"]),
                               "seeds_per_run": min(a["seeds"])}
        pooled = a.get("vs_trtr_pooled") or {}
        for k in metrics:
            m = a["metrics"][k]
            row[k] = _pct(m["mean"])
            row[f"{k}_std_gan_runs"] = _pct(m["std_across_folders"])
            row[f"{k}_std_classifier_seeds"] = _pct(m["std_across_seeds"])
            row[f"{k}_vs_trtr"] = _pct((pooled.get("difference") or {}).get(k))
            row[f"{k}_vs_trtr_ci95"] = _ci((pooled.get("ci95") or {}).get(k), signed=True)
        rows.append(row)
    return pd.DataFrame(rows)


def is_study_grade(r: dict[str, Any]) -> bool:
    """True for a run worth tabulating: ImageNet weights, the full data set, not smoke mode."""
    return r.get("weights") == IMAGENET and bool(r.get("full_dataset")) and not r.get("smoke")


def _entry_name(r: dict[str, Any], labels: dict[str | None, str]) -> str:
    if r.get("synthetic_ratio") is None:
        return r["protocol"]
    run = labels.get(r.get("synthetic"), "")
    return f"{r['protocol']} x{r['synthetic_ratio']:g}" + (f", {run}" if run and len(labels) > 2 else "")


def _vs_cell(vs: dict[str, Any] | None) -> str:
    """'accuracy +1.20 [-0.3, +2.7]; AUC ...; F1 ...' (points) of a paired difference from trtr, '' for trtr."""
    if not vs:
        return ""
    cells = []
    for k, name in zip(PAIRED_METRICS, ("accuracy", "AUC", "F1"), strict=True):
        d = (vs.get("difference") or {}).get(k)
        if d is not None:
            cells.append(f"{name} {100 * d:+.2f}" + (f" {_ci(vs['ci95'][k], signed=True)}" if vs["ci95"].get(k) else ""))
    return "; ".join(cells)


def results_markdown(*paths: str | os.PathLike, seed_check: bool = True) -> str:
    """The README Results section from results JSON files; runs without ImageNet weights or the full data set are
    described, not tabulated, so pipeline checks are never presented as the study's result."""
    results, across = _read_results(paths)
    grade = [(p, r) for p, r in results if is_study_grade(r)]
    other = [(p, r) for p, r in results if not is_study_grade(r)]
    lines: list[str] = []
    if grade:
        lines += _study_table([r for _, r in grade])
        if across:
            lines += _across_table(across)
    else:
        lines += ["**No study result yet.** The VGG16 study has not been run with ImageNet weights on the full data set, "
                  "so no numbers are shown here.", ""]
    lines += _pipeline_checks(other)
    if seed_check:
        chk = search_confusion_matrices(**SEED_CLAIM, **KAGGLE_TEST)
        lines += ["The seed repository reported accuracy/precision/recall/F1 = " + "/".join(f"{v:.2f}" for v in SEED_CLAIM.values()) + " for VGG16 trained on "
                  "GAN images and tested on the Kaggle test split, without confusion counts. " + chk["statement"], ""]
    return "\n".join(lines).rstrip() + "\n"


def _read_results(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, Any]]]:
    """Every protocol result of the files (a study's results.json, a list, or one evaluate JSON) with its file, and
    the across-GAN-runs entries (several folders) of the files whose every result is study-grade."""
    results = []
    across: list[dict[str, Any]] = []
    for p in paths:
        r = read_json(p)
        items = r if isinstance(r, list) else r.get("protocols", [r]) if isinstance(r, dict) else []
        results += [(Path(p), it) for it in items]
        if isinstance(r, dict) and items and all(is_study_grade(it) for it in items):
            across += [a for a in r.get("across_folders", []) if len(a["synthetic"]) > 1]
    return results, across


def _study_table(grade: Sequence[dict[str, Any]]) -> list[str]:
    """The results table of the study-grade results: one row per protocol entry, its paired difference from trtr."""
    labels = folder_labels(list(grade))
    lines = ["VGG16 (ImageNet weights) on the real test split; mean +- std over classifier seeds, 95% bootstrap "
             "interval of the mean over test images. `xR`: R synthetic images per real training image of each "
             "class. Last column: the difference from trtr on the same test images (percentage points) with a "
             "paired, class-stratified bootstrap 95% interval (BCa); an interval that excludes 0 is a difference "
             "the test images resolve. Positive class = PNEUMONIA.", "",
             "| Protocol | Data | Seeds | Accuracy | Precision | Recall | F1 | ROC AUC | tn/fp/fn/tp (first seed) "
             "| vs trtr (paired 95% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in grade:
        cells = []
        for k in METRICS:
            m, s, ci = r["mean"].get(k), r["std"].get(k), r["ci95"].get(k)
            cells.append("n/a" if m is None else f"{100 * m:.2f} +- {100 * s:.2f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""))
        c = r["per_seed"][0]
        lines.append(f"| {_entry_name(r, labels)} ({r['protocol_text']}) | {r.get('source')} | {len(r['seeds'])} | "
                     + " | ".join(cells) + f" | {c['tn']}/{c['fp']}/{c['fn']}/{c['tp']} | {_vs_cell(r.get('vs_trtr'))} |")
    lines.append("")
    return lines


def _across_table(across: Sequence[dict[str, Any]]) -> list[str]:
    """The spread across GAN runs beside the spread across classifier seeds, and the pooled difference from trtr."""
    lines = ["Across GAN runs (synthetic folders from GANs trained with different seeds): the spread across GAN "
             "runs (std of the per-run means) beside the spread across classifier seeds (mean within-run std), "
             "percent; the difference from trtr pools every run's classifiers.", "",
             "| Protocol | GAN runs | Accuracy | std across GAN runs | std across seeds | ROC AUC "
             "| std across GAN runs | std across seeds | vs trtr, pooled (paired 95% CI) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}"

    for a in across:
        m = [a["metrics"][k] for k in ("accuracy", "roc_auc")]
        lines.append(f"| {a['protocol']} x{a['synthetic_ratio']:g} | {len(a['synthetic'])} | "
                     + " | ".join(f"{f(x['mean'])} | {f(x['std_across_folders'])} | {f(x['std_across_seeds'])}"
                                  for x in m) + f" | {_vs_cell(a.get('vs_trtr_pooled'))} |")
    lines.append("")
    return lines


def _pipeline_checks(other: Sequence[tuple[Path, dict[str, Any]]]) -> list[str]:
    """One line per file and reason for the results that are not study-grade: why their numbers are not shown."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p, r in other:
        why = []
        if r.get("weights") != IMAGENET:
            why.append("VGG16 random init (" + ("--weights none" if r.get("weights_requested") == "none"
                                                else "ImageNet weights were not available") + ")")
        if not r.get("full_dataset"):
            n = r.get("n_images")
            why.append(f"the `{r.get('source', 'unknown')}` data source" + (f" ({n} images)" if n else "") + " instead of the full data set")
        if r.get("smoke"):
            why.append("smoke-mode sizes")
        groups.setdefault((p.name, ", ".join(why)), []).append(_entry_name(r, {}))
    lines = [f"- `{name}` ({', '.join(dict.fromkeys(protocols))}): ran with {why}; these numbers only show that the pipeline "
             f"runs and are not the study's result, so they are not shown here (they stay in the JSON)."
             for (name, why), protocols in groups.items()]
    return lines + ([""] if other else [])
