"""Figures: image grids, class balance, training curves (evaluation figures live at the end)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and "ipykernel" not in os.environ.get("MPLBACKEND", "") and os.environ.get("JPY_PARENT_PID") is None:
    matplotlib.use("Agg")  # headless CLI: no GUI backend needed; notebooks keep their inline backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure atomically (PNG by extension) and return its path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def show(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a figure atomically, close it and display the saved PNG inline (what you see is what was written)."""
    from IPython.display import Image, display

    path = save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    display(Image(filename=str(path)))
    return path


def _as_display(img: np.ndarray) -> np.ndarray:
    """uint8 or [-1, 1] float, (S,S) or (S,S,C) -> float image in [0, 1] for imshow."""
    a = np.asarray(img)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else (a.astype(np.float32) + 1.0) / 2.0
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a.mean(axis=-1)  # X-rays are grey; channels are copies (real) or near-copies (generated)
    return np.clip(a, 0.0, 1.0)


def image_grid(rows: Sequence[np.ndarray], row_titles: Sequence[str] | None = None, title: str | None = None,
               cell_inches: float = 1.1) -> plt.Figure:
    """One row per array of images (e.g. one row per class); images uint8 or in [-1, 1]."""
    n_rows = len(rows)
    n_cols = max(1, max((len(r) for r in rows), default=1))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + 1.2, cell_inches * n_rows + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row):
                ax.imshow(_as_display(row[j]), cmap="gray", vmin=0.0, vmax=1.0)
        if row_titles is not None:
            axes[i][0].set_ylabel(row_titles[i], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pixel_grid(rows: Sequence[np.ndarray], row_titles: Sequence[str] | None = None, title: str | None = None,
               pad: int = 2) -> np.ndarray:
    """One row per array of images (uint8 or [-1, 1]) composed into one uint8 grey picture (H, W), no matplotlib.

    Row titles go into a left strip and the title into a header line, drawn with PIL's built-in font: as a PNG the
    grid is a few tens of KB, where a matplotlib figure of the same images is ~300 KB and far slower to render.
    """
    from PIL import Image, ImageDraw, ImageFont

    cells = [[np.rint(_as_display(im) * 255.0).astype(np.uint8) for im in row] for row in rows]
    s = max((c.shape[0] for row in cells for c in row), default=8)
    n_cols = max((len(r) for r in cells), default=1)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left = max((int(probe.textlength(t, font=font)) for t in row_titles or []), default=-2 * pad) + 2 * pad
    top = (int(probe.textbbox((0, 0), "Ag", font=font)[3]) + 2 * pad) if title else 0
    h = top + len(cells) * (s + pad) + pad
    w = left + n_cols * (s + pad) + pad
    if title:
        w = max(w, int(probe.textlength(title, font=font)) + 2 * pad)
    out = np.full((h, w), 255, np.uint8)
    for i, row in enumerate(cells):
        y = top + pad + i * (s + pad)
        for j, c in enumerate(row):
            x = left + pad + j * (s + pad)
            out[y:y + c.shape[0], x:x + c.shape[1]] = c
    img = Image.fromarray(out, mode="L")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), title, fill=0, font=font)
    for i, t in enumerate(row_titles or []):
        draw.text((pad, top + pad + i * (s + pad) + s // 2), t, fill=0, font=font, anchor="lm")
    return np.asarray(img)


def nearest_figure(synthetic: np.ndarray, syn_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                   class_names: Sequence[str], reference: float | None = None, title: str | None = None) -> plt.Figure:
    """Pairs (synthetic above, its nearest real training image below) with RMS distances: a memorization check."""
    from .metrics import nearest_real

    idx, dist = nearest_real(synthetic, real)
    n = len(synthetic)
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n + 1.4, 3.2), squeeze=False)
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


def class_balance(counts: dict[str, dict[str, int]], title: str = "Images per split and class") -> plt.Figure:
    """Bar chart of counts[split][class] (seaborn)."""
    import pandas as pd
    import seaborn as sns

    rows = [{"split": s, "class": c, "images": n} for s, per in counts.items() for c, n in per.items()]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.barplot(data=df, x="split", y="images", hue="class", ax=ax)
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def training_curves(metrics_csv: str | os.PathLike, title: str = "GAN training") -> plt.Figure:
    """Losses and discriminator accuracies per epoch from a run's metrics.csv."""
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    x = df["epoch"] if "epoch" in df else np.arange(1, len(df) + 1)
    loss_cols = [c for c in df.columns if c.endswith("loss")]
    acc_cols = [c for c in df.columns if "acc" in c]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for c in loss_cols:
        axes[0].plot(x, df[c], label=c)
    axes[0].set_title("losses")
    axes[0].set_xlabel("epoch")
    for c in acc_cols:
        axes[1].plot(x, df[c], label=c)
    axes[1].set_title("discriminator accuracies")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(-0.02, 1.02)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- evaluation figures
# Each takes a results dict from cxr_utils.evaluation and titles itself with res["model"], so a figure of a
# random-init VGG16 always says "random init".

PROTOCOL_ORDER = ("trtr", "tstr", "augment", "pretrain")  # fixed colours per protocol across figures


def _eval_title(res: dict, what: str) -> str:
    return f"{entry_label(res)} [{res['model']}]: {what}"


def confusion_heatmap(res: dict, seed_index: int = 0, class_names: Sequence[str] = ("NORMAL", "PNEUMONIA")) -> plt.Figure:
    """Seaborn heatmap of one seed's test confusion counts (rows true, columns predicted)."""
    import seaborn as sns

    e = res["per_seed"][seed_index]
    cm = np.array([[e["tn"], e["fp"]], [e["fn"], e["tp"]]])
    fig, ax = plt.subplots(figsize=(3.8, 3.3))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, xticklabels=class_names, yticklabels=class_names, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_eval_title(res, f"test confusion (seed {e['seed']})"), fontsize=9)
    fig.tight_layout()
    return fig


def roc_curves(results: Sequence[dict], title: str | None = None) -> plt.Figure:
    """ROC curve on the real test split of every protocol (each seed a line), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
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
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
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
    fig, ax = plt.subplots(figsize=(8, 3.4))
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
    fig, axes = plt.subplots(1, len(PAIRED), figsize=(11, 0.9 + 0.32 * max(1, len(rows))), sharey=True, squeeze=False)
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
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
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


def quality_curves(run_dir: str | os.PathLike, title: str = "Generator quality") -> plt.Figure | None:
    """Per evaluated epoch of a run folder: variety (diversity, train coverage), fidelity and KID, each beside what
    held-out real images reach (quality-baseline.json: a grey line per score), with the learned bar and the collapse
    alarm; the kept generator's epoch dashed. Without a baseline (no held-out split, an older run) the variety panel
    shows the absolute scores against the fixed bars. None when the run has no quality evaluation (eval_every -1)."""
    import textwrap

    import pandas as pd

    from . import quality as Q
    from .quality_baseline import REAL_BARS
    from .run_folder import RunFolder

    path = RunFolder(run_dir).quality_csv
    df = pd.read_csv(path) if path.is_file() and path.stat().st_size else None
    if df is None or df.empty:
        return None
    best_epoch = (Q.load_best(run_dir) or {}).get("epoch")
    base = Q.load_baseline(run_dir) or {}
    real = base.get("scores") or {}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    x = df["epoch"]
    last = df.iloc[-1]

    def col(name: str) -> pd.Series:
        return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, index=df.index)

    ax = axes[0]
    # the panel shows the bars that judge the run: fractions of the baseline, or the fixed bars (and why)
    bars = str(last.get("bars")) if "bars" in df and isinstance(last.get("bars"), str) else ""
    ratios = bars == REAL_BARS and col("diversity_vs_real").notna().any() and col("train_coverage_vs_real").notna().any()
    n, of = Q.finite(last.get("train_covered")), Q.finite(last.get("train_images"))
    covered = f"{n:.0f} of {of:.0f}" if n is not None and of is not None else "n/a"
    if ratios:
        ax.plot(x, col("diversity_vs_real"), "o-", ms=3, label=f"within-class diversity (last {Q.finite(last.get('diversity')) or 0:.2f})")
        ax.plot(x, col("train_coverage_vs_real"), "s-", ms=3, label=f"training images covered (last {covered})")
        ax.axhline(1.0, color="grey", lw=1.2, label="held-out real images (= 1)")
        for v, c, what in ((Q.LEARNED_DIVERSITY_VS_REAL, "C0", "learned"), (Q.LEARNED_COVERAGE_VS_REAL, "C1", "learned"),
                           (Q.ALARM_DIVERSITY_VS_REAL, "C0", "alarm"), (Q.ALARM_COVERAGE_VS_REAL, "C1", "alarm")):
            ax.axhline(v, color=c, ls="--" if what == "learned" else ":", lw=0.8, label=f"{what} bar {v}x")
        ax.set_ylabel("x what held-out real images reach", fontsize=8)
        ax.set_title("variety vs held-out real images (pixel space)", fontsize=9)
        top = np.nanmax(col("diversity_vs_real").tolist() + col("train_coverage_vs_real").tolist() + [1.0])
    else:
        ax.plot(x, col("diversity"), "o-", ms=3, label="within-class diversity / real")
        ax.plot(x, col("train_coverage"), "s-", ms=3, label=f"training images covered (share; last {covered})")
        for v, c, what in ((Q.LEARNED_DIVERSITY, "C0", "learned"), (Q.LEARNED_TRAIN_COVERAGE, "C1", "learned"),
                           (Q.ALARM_DIVERSITY, "C0", "alarm"), (Q.ALARM_TRAIN_COVERAGE, "C1", "alarm")):
            ax.axhline(v, color=c, ls="--" if what == "learned" else ":", lw=0.8, label=f"{what} bar {v}")
        why = bars[len("fixed: "):] if bars.startswith("fixed: ") else "no real-vs-real baseline"
        ax.set_title(f"variety vs the training images (fixed bars:\n{textwrap.shorten(why, 70)})", fontsize=8)
        top = np.nanmax(col("diversity").tolist() + col("train_coverage").tolist() + [1.0])
    ax.set_ylim(0, float(top) + 0.08)
    axes[1].plot(x, col("fidelity"), "o-", ms=3, color="C2", label="synthetic")
    if Q.finite(real.get("fidelity")) is not None:
        axes[1].axhline(real["fidelity"], color="grey", lw=1.2, label=f"held-out real images ({real['fidelity']:.2f})")
    classes = base.get("class_names") or [c for c in df if c.startswith("fidelity_") and c != "fidelity_vs_real"]
    gate = Q.min_fidelity(max(1, len(classes)))
    axes[1].axhline(gate, color="C2", ls=":", lw=0.8, label=f"gate of the kept generator ({gate:.2f})")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("class fidelity (real-trained classifier agrees)", fontsize=9)
    kid_b = col("kid_balanced")
    if kid_b.isna().all():  # rows written before the column: the same mean of the per-class KIDs
        kid_b = pd.Series([Q.ranking_kid(r.to_dict()) for _, r in df.iterrows()], index=df.index, dtype=float)
    axes[2].plot(x, kid_b, "o-", ms=3, color="C3", label="class-balanced KID (ranks the kept generator)")
    axes[2].plot(x, col("kid"), ".-", ms=2, lw=0.8, color="C4", alpha=0.7, label="KID of all images")
    for key, ls in (("kid_balanced", "-"), ("kid", "--")):
        v = Q.finite(real.get(key))
        if v is not None:
            axes[2].axhline(v, color="grey", lw=1.2 if ls == "-" else 0.8, ls=ls,
                            label=f"held-out real images ({'balanced' if key == 'kid_balanced' else 'all'}: {v:.4f})")
    ref = str(df["reference"].iloc[-1]) if "reference" in df and len(df) else "?"
    axes[2].set_title(f"KID vs {ref} (lower is closer)", fontsize=9)
    for a in axes:
        a.set_xlabel("epoch")
        if best_epoch is not None:
            a.axvline(best_epoch, color="grey", lw=0.8, ls="--")
        a.legend(fontsize=6, loc="best")
    fig.suptitle(title + (f" (dashed: generator-best.keras, epoch {best_epoch})" if best_epoch is not None else ""), fontsize=10)
    fig.tight_layout()
    return fig
