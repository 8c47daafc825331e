"""The shared figure helpers: save and show a figure, image grids (a figure, or pixels for a PNG), class balance.

No matplotlib backend is chosen at import: `_plt()` picks it when the first figure is drawn (headless: Agg;
a notebook keeps its inline backend), so importing a module that can draw costs nothing until it draws.
Training figures live in cxr_utils.gan.curves, evaluation figures in cxr_utils.evaluation.charts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import atomic_path

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


def _plt() -> Any:
    """matplotlib.pyplot, the backend chosen on first use as it was at import before: headless -> Agg."""
    import matplotlib

    if not os.environ.get("DISPLAY") and "ipykernel" not in os.environ.get("MPLBACKEND", "") and os.environ.get("JPY_PARENT_PID") is None:
        matplotlib.use("Agg")  # headless CLI: no GUI backend needed; notebooks keep their inline backend
    import matplotlib.pyplot as plt

    return plt


def close(fig: plt.Figure) -> None:
    """Close a figure (pyplot's close: frees its memory; a notebook no longer shows it again)."""
    _plt().close(fig)


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
    close(fig)
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
    fig, axes = _plt().subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + 1.2, cell_inches * n_rows + 0.4), squeeze=False)
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


def class_balance(counts: dict[str, dict[str, int]], title: str = "Images per split and class") -> plt.Figure:
    """Bar chart of counts[split][class] (seaborn)."""
    import pandas as pd
    import seaborn as sns

    rows = [{"split": s, "class": c, "images": n} for s, per in counts.items() for c, n in per.items()]
    df = pd.DataFrame(rows)
    fig, ax = _plt().subplots(figsize=(6, 3.2))
    sns.barplot(data=df, x="split", y="images", hue="class", ax=ax)
    for cont in ax.containers:
        ax.bar_label(cont, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- evaluation figures
# Each takes a results dict from cxr_utils.evaluation.protocols and titles itself with res["model"], so a figure of a
# random-init VGG16 always says "random init".
