"""Evaluation figures: confusion matrices, ROC curves, classifier histories, protocol comparisons, paired
differences, the ratio sweep, and the nearest-real-image pairs of notebook 03."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..drawing import _as_display, _plt

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


def nearest_figure(synthetic: np.ndarray, syn_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                   class_names: Sequence[str], reference: float | None = None, title: str | None = None) -> plt.Figure:
    """Pairs (synthetic above, its nearest real training image below) with RMS distances: a memorization check."""
    from ..metrics.memorization import nearest_real

    idx, dist = nearest_real(synthetic, real)
    n = len(synthetic)
    fig, axes = _plt().subplots(2, n, figsize=(1.25 * n + 1.4, 3.2), squeeze=False)
    for j in range(n):
        for i, (img, cap) in enumerate(((synthetic[j], f"syn {class_names[int(syn_labels[j])]}\nd={dist[j]:.3f}"),
                                        (real[idx[j]], f"real #{int(idx[j])}\n{class_names[int(real_labels[idx[j]])]}"))):
            ax = axes[i][j]
            ax.imshow(_as_display(img), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(cap, fontsize=7)
    axes[0][0].set_ylabel("synthetic", fontsize=9)
    axes[1][0].set_ylabel("nearest real\n(train)", fontsize=9)
    ref = f"; real-to-real nearest distance median {reference:.3f}" if reference is not None else ""
    fig.suptitle(title or f"Nearest real training image in pixel space (RMS distance, pixels in [0, 1]{ref})", fontsize=9)
    fig.tight_layout()
    return fig


PROTOCOL_ORDER = ("trtr", "tstr", "augment", "pretrain")  # fixed colours per protocol across figures


def _eval_title(res: dict, what: str) -> str:
    return f"{entry_label(res)} [{res['model']}]: {what}"


def confusion_heatmap(res: dict, seed_index: int = 0, class_names: Sequence[str] = ("NORMAL", "PNEUMONIA")) -> plt.Figure:
    """Seaborn heatmap of one seed's test confusion counts (rows true, columns predicted)."""
    import seaborn as sns

    e = res["per_seed"][seed_index]
    cm = np.array([[e["tn"], e["fp"]], [e["fn"], e["tp"]]])
    fig, ax = _plt().subplots(figsize=(3.8, 3.3))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_eval_title(res, f"test confusion (seed {e['seed']})"), fontsize=9)
    fig.tight_layout()
    return fig


def roc_curves(results: Sequence[dict], title: str | None = None) -> plt.Figure:
    """ROC curve on the real test split of every protocol (each seed a line), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _plt().subplots(figsize=(4.6, 4.2))
    for res in results:
        y = np.asarray(res["test_labels"])
        if len(np.unique(y)) < 2:
            continue
        for k, e in enumerate(res["per_seed"]):
            fpr, tpr, _ = roc_curve(y, e["test_probs"])
            label = f"{entry_label(res)} (AUC {roc_auc_score(y, e['test_probs']):.3f})" if k == 0 else None
            ax.plot(fpr, tpr, color=_color(res["protocol"]), alpha=0.9 if k == 0 else 0.4, label=label)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (PNEUMONIA)")
    models = sorted({r["model"] for r in results})
    ax.set_title(title or f"ROC on the real test split [{', '.join(models)}]", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def classifier_history(res: dict, seed_index: int = 0) -> plt.Figure:
    """Loss and accuracy per epoch (train and real val) across the training stages of one seed."""
    e = res["per_seed"][seed_index]
    fig, axes = _plt().subplots(1, 2, figsize=(10, 3.2))
    start = 0
    for st in e["stages"]:
        h = st["history"]
        x = np.arange(start + 1, start + st["epochs_run"] + 1)
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(x, h.get(key, []), "o-", color="C0", ms=3, label=f"train {key}" if start == 0 else None)
            if f"val_{key}" in h:
                ax.plot(x, h[f"val_{key}"], "s--", color="C1", ms=3, label=f"real val {key}" if start == 0 else None)
            ax.axvline(start + 0.5, color="grey", lw=0.6)
            ax.text(start + 0.6, 1.0, st["stage"], transform=ax.get_xaxis_transform(), fontsize=6, va="top")
        start += st["epochs_run"]
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch (all stages)")
        ax.set_title(key, fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(_eval_title(res, f"classifier training (seed {e['seed']})"), fontsize=10)
    fig.tight_layout()
    return fig


def entry_label(res: dict, folders: Sequence[str | None] = ()) -> str:
    """'trtr', 'augment x1' or, when several synthetic folders (GAN runs) were compared, 'augment x1 [run 2]'."""
    if res.get("synthetic_ratio") is None:
        return res["protocol"]
    run = f" [run {list(folders).index(res.get('synthetic')) + 1}]" if len(folders) > 1 else ""
    return f"{res['protocol']} x{res['synthetic_ratio']:g}{run}"


def _folders(results: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("synthetic") for r in results if r.get("synthetic_ratio") is not None))


def _color(protocol: str) -> str:
    return f"C{PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else 0}"


def protocol_comparison(results: Sequence[dict], metrics: Sequence[str] = ("accuracy", "precision", "recall", "f1", "roc_auc")) -> plt.Figure:
    """Grouped bars (percent) of each protocol's seed-mean metrics with std error bars."""
    fig, ax = _plt().subplots(figsize=(8, 3.4))
    width = 0.8 / max(1, len(results))
    xs = np.arange(len(metrics))
    folders = _folders(results)
    for i, res in enumerate(results):
        means = [100 * (res["mean"].get(m) or 0.0) for m in metrics]
        stds = [100 * (res["std"].get(m) or 0.0) for m in metrics]
        bars = ax.bar(xs + (i - (len(results) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                      label=f"{entry_label(res, folders)} ({len(res['seeds'])} seed{'s' if len(res['seeds']) > 1 else ''})")
        ax.bar_label(bars, fmt="%.0f", fontsize=6)
    ax.set_xticks(xs, metrics)
    ax.set_ylim(0, 105)
    ax.set_ylabel("percent (real test split)")
    models = sorted({r["model"] for r in results})
    ax.set_title(f"Protocol comparison [{', '.join(models)}]", fontsize=10)
    ax.legend(fontsize=7, ncol=len(results), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


PAIRED = (("accuracy", "accuracy"), ("roc_auc", "ROC AUC"), ("f1", "F1"))


def paired_differences(results: Sequence[dict], across: Sequence[dict] = ()) -> plt.Figure:
    """Forest plot: each entry's difference from trtr (percentage points) on the same test images with its paired
    bootstrap 95% interval, per metric; pooled rows for a protocol and ratio run on several synthetic folders."""
    folders = _folders(results)

    def row(r: dict) -> tuple[str, str, dict, bool]:
        return entry_label(r, folders), r["protocol"], r["vs_trtr"], False

    rows = [] if across else [row(r) for r in results if r.get("vs_trtr")]
    for a in across:  # each (protocol, ratio): its runs, then their pooled difference
        rows += [row(r) for r in results if r.get("vs_trtr") and r["protocol"] == a["protocol"]
                 and r.get("synthetic_ratio") == a["synthetic_ratio"]]
        if len(a["synthetic"]) > 1 and a.get("vs_trtr_pooled"):
            rows.append((f"{a['protocol']} x{a['synthetic_ratio']:g}, {len(a['synthetic'])} runs pooled", a["protocol"],
                         a["vs_trtr_pooled"], True))
    fig, axes = _plt().subplots(1, len(PAIRED), figsize=(11, 0.9 + 0.32 * max(1, len(rows))), sharey=True, squeeze=False)
    ys = np.arange(len(rows))[::-1]
    for ax, (key, name) in zip(axes[0], PAIRED, strict=True):
        for y, (_label, protocol, vs, pooled) in zip(ys, rows, strict=True):
            d, ci = vs["difference"].get(key), vs["ci95"].get(key)
            if d is None:
                continue
            err = None if not ci else [[100 * (d - ci[0])], [100 * (ci[1] - d)]]
            ax.errorbar(100 * d, y, xerr=err, fmt="D" if pooled else "o", color=_color(protocol), ms=5 if pooled else 4,
                        capsize=2, lw=1.6 if pooled else 1)
        ax.axvline(0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{name}: protocol - trtr (points)", fontsize=8)
    axes[0][0].set_yticks(ys, [r[0] for r in rows], fontsize=7)
    models = sorted({r["model"] for r in results})
    fig.suptitle("Difference from trtr on the same real test images (paired bootstrap 95% interval) "
                 f"[{', '.join(models)}]", fontsize=10)
    fig.tight_layout()
    return fig


def ratio_sweep(results: Sequence[dict], across: Sequence[dict]) -> plt.Figure:
    """Accuracy and ROC AUC against the synthetic ratio (top: levels with each run's 95% interval, trtr as a band;
    bottom: difference from trtr with the paired 95% interval, pooled over synthetic folders). Ratio 0 of augment and
    pretrain is the trtr entry itself."""
    trtr = next((r for r in results if r["protocol"] == "trtr"), None)
    folders = _folders(results)
    fig, axes = _plt().subplots(2, 2, figsize=(10, 6.4), sharex=True)
    for col, (key, name) in enumerate((("accuracy", "accuracy"), ("roc_auc", "ROC AUC"))):
        top, bottom = axes[0][col], axes[1][col]
        if trtr is not None and trtr["mean"].get(key) is not None:
            top.axhline(100 * trtr["mean"][key], color=_color("trtr"), lw=1, label="trtr (real only)")
            ci = trtr["ci95"].get(key)
            if ci:
                top.axhspan(100 * ci[0], 100 * ci[1], color=_color("trtr"), alpha=0.12)
        for protocol in [p for p in PROTOCOL_ORDER if p != "trtr"]:
            groups = sorted((a for a in across if a["protocol"] == protocol), key=lambda a: a["synthetic_ratio"])
            if not groups:
                continue
            c = _color(protocol)
            for r in (r for r in results if r["protocol"] == protocol and r["mean"].get(key) is not None):
                off = 0.02 * (folders.index(r.get("synthetic")) - (len(folders) - 1) / 2) if r.get("synthetic") in folders else 0
                ci = r["ci95"].get(key)
                err = None if not ci else [[100 * (r["mean"][key] - ci[0])], [100 * (ci[1] - r["mean"][key])]]
                top.errorbar(r["synthetic_ratio"] + off, 100 * r["mean"][key], yerr=err, fmt="o", ms=3, color=c,
                             capsize=2, alpha=0.7)
            xs = [a["synthetic_ratio"] for a in groups]
            ms = [a["metrics"][key]["mean"] for a in groups]
            ds = [(a.get("vs_trtr_pooled") or {}) for a in groups]
            zero = protocol != "tstr" and trtr is not None and trtr["mean"].get(key) is not None
            if zero:  # ratio 0 of augment / pretrain is trtr: its own point, difference 0 by construction
                xs, ms, ds = [0.0, *xs], [trtr["mean"][key], *ms], [{"difference": {key: 0.0}, "ci95": {}}, *ds]
            keep = [i for i, m in enumerate(ms) if m is not None]
            top.plot([xs[i] for i in keep], [100 * ms[i] for i in keep], "-", color=c, label=protocol)
            for x, d in zip(xs, ds, strict=True):
                v, ci = (d.get("difference") or {}).get(key), (d.get("ci95") or {}).get(key)
                if v is not None:
                    err = None if not ci else [[100 * (v - ci[0])], [100 * (ci[1] - v)]]
                    bottom.errorbar(x, 100 * v, yerr=err, fmt="o", color=c, capsize=3, ms=4)
            pts = [(x, (d.get("difference") or {}).get(key)) for x, d in zip(xs, ds, strict=True)]
            pts = [(x, v) for x, v in pts if v is not None]
            bottom.plot([x for x, _ in pts], [100 * v for _, v in pts], "-", color=c, lw=0.8)
        bottom.axhline(0, color="grey", lw=0.8, ls="--")
        ratios = sorted({0.0, *(a["synthetic_ratio"] for a in across)})
        bottom.set_xticks(ratios, [f"{r:g}" for r in ratios])
        runs = max((len(a["synthetic"]) for a in across), default=1)
        bottom.set_title(f"difference from trtr, paired 95% interval{f' (pooled over {runs} GAN runs)' if runs > 1 else ''}",
                         fontsize=9)
        top.set_title(f"{name} on the real test split", fontsize=9)
        top.set_ylabel("percent")
        bottom.set_ylabel(f"{name}: protocol - trtr (points)", fontsize=8)
        bottom.set_xlabel("synthetic images per real training image (per class)")
        top.legend(fontsize=7)
    models = sorted({r["model"] for r in results})
    fig.suptitle(f"Does more synthetic data help? [{', '.join(models)}] (top: each classifier's mean over seeds with its "
                 f"95% interval, lines through the mean over GAN runs; band: trtr's interval)", fontsize=9)
    fig.tight_layout()
    return fig
