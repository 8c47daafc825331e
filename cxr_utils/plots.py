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
