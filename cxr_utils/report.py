"""What the VGG16 study's results say: the one-line summary, the comparison table, the README Results section, and
the seed repository's headline checked against every confusion matrix of the Kaggle test split.

Reads the result dictionaries that cxr_utils.evaluation writes (results JSON); trains nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import CLASS_NAMES
from .evaluation import COUNTS, HEADLINE, IMAGENET, METRICS
from .io import read_json

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
    return f"{res['protocol']} [{res['model']}, {len(res['seeds'])} seed(s), data {res.get('source', '?')}]: " + ", ".join(parts)


def per_class_report(r: dict[str, Any], class_names: Sequence[str] = CLASS_NAMES) -> str:
    """scikit-learn's per-class report of a protocol's first seed on the real test split, at its threshold."""
    from sklearn.metrics import classification_report

    pred = [int(p >= r["threshold"]) for p in r["per_seed"][0]["test_probs"]]
    return classification_report(r["test_labels"], pred, labels=list(range(len(class_names))),
                                 target_names=list(class_names), digits=3, zero_division=0)


def comparison_table(results: Sequence[dict[str, Any]]) -> Any:
    """pandas table, one row per protocol: mean, std and 95% interval (percent) plus mean counts."""
    import pandas as pd

    rows = []
    for r in results:
        row: dict[str, Any] = {"protocol": r["protocol"], "model": r["model"], "seeds": len(r["seeds"])}
        for k in METRICS:
            m, s, ci = r["mean"].get(k), r["std"].get(k), r["ci95"].get(k)
            row[k] = None if m is None else round(100 * m, 2)
            row[f"{k}_std"] = None if s is None else round(100 * s, 2)
            row[f"{k}_ci95"] = None if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        for k in COUNTS:
            row[k] = r["mean"][k]
        mt = r.get("mean_tuned") or {}
        row["tuned_threshold"] = None if not mt else round(mt["threshold"], 3)
        for k in ("accuracy", "f1"):
            row[f"{k}_tuned"] = None if mt.get(k) is None else round(100 * mt[k], 2)
        rows.append(row)
    return pd.DataFrame(rows)


def is_study_grade(r: dict[str, Any]) -> bool:
    """True for a run worth tabulating: ImageNet weights, the full data set, not smoke mode."""
    return r.get("weights") == IMAGENET and bool(r.get("full_dataset")) and not r.get("smoke")


def results_markdown(*paths: str | os.PathLike, seed_check: bool = True) -> str:
    """The README Results section from results JSON files; runs without ImageNet weights or the full data set are
    described, not tabulated, so pipeline checks are never presented as the study's result."""
    results = []
    for p in paths:
        r = read_json(p)
        items = r if isinstance(r, list) else r.get("protocols", [r]) if isinstance(r, dict) else []
        results += [(Path(p), it) for it in items]
    lines: list[str] = []
    grade = [(p, r) for p, r in results if is_study_grade(r)]
    other = [(p, r) for p, r in results if not is_study_grade(r)]
    if grade:
        lines += ["VGG16 (ImageNet weights) on the real test split; mean +- std over seeds, 95% bootstrap interval of the "
                  "mean over test images. Positive class = PNEUMONIA.", "",
                  "| Protocol | Data | Seeds | Accuracy | Precision | Recall | F1 | ROC AUC | tn/fp/fn/tp (first seed) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _p, r in grade:
            cells = []
            for k in METRICS:
                m, s, ci = r["mean"].get(k), r["std"].get(k), r["ci95"].get(k)
                cells.append("n/a" if m is None else f"{100 * m:.2f} +- {100 * s:.2f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""))
            c = r["per_seed"][0]
            lines.append(f"| {r['protocol']} ({r['protocol_text']}) | {r.get('source')} | {len(r['seeds'])} | " + " | ".join(cells)
                         + f" | {c['tn']}/{c['fp']}/{c['fn']}/{c['tp']} |")
        lines.append("")
    else:
        lines += ["**No study result yet.** The VGG16 study has not been run with ImageNet weights on the full data set, "
                  "so no numbers are shown here.", ""]
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
        groups.setdefault((p.name, ", ".join(why)), []).append(r["protocol"])
    for (name, why), protocols in groups.items():
        lines.append(f"- `{name}` ({', '.join(protocols)}): ran with {why}; these numbers only show that the pipeline "
                     f"runs and are not the study's result, so they are not shown here (they stay in the JSON).")
    if other:
        lines.append("")
    if seed_check:
        chk = search_confusion_matrices(**SEED_CLAIM, **KAGGLE_TEST)
        lines += ["The seed repository reported accuracy/precision/recall/F1 = " + "/".join(f"{v:.2f}" for v in SEED_CLAIM.values()) + " for VGG16 trained on "
                  "GAN images and tested on the Kaggle test split, without confusion counts. " + chk["statement"], ""]
    return "\n".join(lines).rstrip() + "\n"
