"""Training figures of a run folder: the losses and accuracies of metrics.csv, the quality scores of quality.csv."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..drawing import _plt

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    import pandas as pd


def training_curves(metrics_csv: str | os.PathLike, title: str = "GAN training") -> plt.Figure:
    """Losses and discriminator accuracies per epoch from a run's metrics.csv."""
    import pandas as pd

    df = pd.read_csv(metrics_csv)
    x = df["epoch"] if "epoch" in df else np.arange(1, len(df) + 1)
    loss_cols = [c for c in df.columns if c.endswith("loss")]
    acc_cols = [c for c in df.columns if "acc" in c]
    fig, axes = _plt().subplots(1, 2, figsize=(11, 3.4))
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


def quality_curves(run_dir: str | os.PathLike, title: str = "Generator quality") -> plt.Figure | None:
    """Per evaluated epoch of a run folder: variety (diversity, train coverage), fidelity and KID, each beside what
    held-out real images reach (quality-baseline.json: a grey line per score), with the learned bar and the collapse
    alarm, and the artefact scores beside their lines (the high-frequency share's a gate, the stripes' shown only); the
    kept generator's epoch dashed. Without a baseline (no held-out split, an older run) the variety panel
    shows the absolute scores against the fixed bars. None when the run has no quality evaluation (eval_every -1)."""
    import pandas as pd

    from . import tracker
    from .run_folder import RunFolder

    path = RunFolder(run_dir).quality_csv
    df = pd.read_csv(path) if path.is_file() and path.stat().st_size else None
    if df is None or df.empty:
        return None
    best_epoch = (tracker.load_best(run_dir) or {}).get("epoch")
    base = tracker.load_baseline(run_dir) or {}
    fig, axes = _plt().subplots(1, 4, figsize=(17, 3.4))
    _variety_panel(axes[0], df)
    _fidelity_panel(axes[1], df, base)
    _kid_panel(axes[2], df, base.get("scores") or {})
    _artefact_panel(axes[3], df, base)
    for a in axes:
        a.set_xlabel("epoch")
        if best_epoch is not None:
            a.axvline(best_epoch, color="grey", lw=0.8, ls="--")
        a.legend(fontsize=6, loc="best")
    fig.suptitle(title + (f" (dashed: generator-best.keras, epoch {best_epoch})" if best_epoch is not None else ""), fontsize=10)
    fig.tight_layout()
    return fig


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """A quality.csv column as numbers (NaN where empty, all NaN when a run's rows predate it)."""
    import pandas as pd

    return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, index=df.index)


def _variety_panel(ax: plt.Axes, df: pd.DataFrame) -> None:
    """Diversity and train coverage with the bars that judge the run: fractions of the real-vs-real baseline, or the
    fixed bars (and why)."""
    import textwrap

    from ..metrics import real_baseline
    from ..metrics.real_baseline import REAL_BARS
    from . import tracker

    x, last = df["epoch"], df.iloc[-1]
    bars = str(last.get("bars")) if "bars" in df and isinstance(last.get("bars"), str) else ""
    ratios = bars == REAL_BARS and _column(df, "diversity_vs_real").notna().any() \
        and _column(df, "train_coverage_vs_real").notna().any()
    n, of = real_baseline.finite(last.get("train_covered")), real_baseline.finite(last.get("train_images"))
    covered = f"{n:.0f} of {of:.0f}" if n is not None and of is not None else "n/a"
    if ratios:
        div, cov = _column(df, "diversity_vs_real"), _column(df, "train_coverage_vs_real")
        ax.plot(x, div, "o-", ms=3, label=f"within-class diversity (last {real_baseline.finite(last.get('diversity')) or 0:.2f})")
        ax.plot(x, cov, "s-", ms=3, label=f"training images covered (last {covered})")
        ax.axhline(1.0, color="grey", lw=1.2, label="held-out real images (= 1)")
        for v, c, what in ((tracker.LEARNED_DIVERSITY_VS_REAL, "C0", "learned"), (tracker.LEARNED_COVERAGE_VS_REAL, "C1", "learned"),
                           (tracker.ALARM_DIVERSITY_VS_REAL, "C0", "alarm"), (tracker.ALARM_COVERAGE_VS_REAL, "C1", "alarm")):
            ax.axhline(v, color=c, ls="--" if what == "learned" else ":", lw=0.8, label=f"{what} bar {v}x")
        ax.set_ylabel("x what held-out real images reach", fontsize=8)
        ax.set_title("variety vs held-out real images (pixel space)", fontsize=9)
    else:
        div, cov = _column(df, "diversity"), _column(df, "train_coverage")
        ax.plot(x, div, "o-", ms=3, label="within-class diversity / real")
        ax.plot(x, cov, "s-", ms=3, label=f"training images covered (share; last {covered})")
        for v, c, what in ((tracker.LEARNED_DIVERSITY, "C0", "learned"), (tracker.LEARNED_TRAIN_COVERAGE, "C1", "learned"),
                           (tracker.ALARM_DIVERSITY, "C0", "alarm"), (tracker.ALARM_TRAIN_COVERAGE, "C1", "alarm")):
            ax.axhline(v, color=c, ls="--" if what == "learned" else ":", lw=0.8, label=f"{what} bar {v}")
        why = bars[len("fixed: "):] if bars.startswith("fixed: ") else "no real-vs-real baseline"
        ax.set_title(f"variety vs the training images (fixed bars:\n{textwrap.shorten(why, 70)})", fontsize=8)
    top = np.nanmax(div.tolist() + cov.tolist() + [1.0])
    ax.set_ylim(0, float(top) + 0.08)


def _fidelity_panel(ax: plt.Axes, df: pd.DataFrame, base: dict) -> None:
    """Label fidelity beside the held-out real images', the kept generator's bar and its fallback gate ((1 + 1/K) / 2)."""
    from ..metrics import real_baseline
    from . import tracker

    real = base.get("scores") or {}
    ax.plot(df["epoch"], _column(df, "fidelity"), "o-", ms=3, color="C2", label="synthetic")
    if real_baseline.finite(real.get("fidelity")) is not None:
        ax.axhline(real["fidelity"], color="grey", lw=1.2, label=f"held-out real images ({real['fidelity']:.2f})")
    classes = base.get("class_names") or [c for c in df if c.startswith("fidelity_") and c != "fidelity_vs_real"]
    k = max(1, len(classes))
    bar, gate = tracker.fidelity_bar(k), tracker.min_fidelity(k)
    ax.axhline(bar, color="C2", ls="--", lw=0.8, label=f"bar of the kept generator ({bar:.2f})")
    ax.axhline(gate, color="C2", ls=":", lw=0.8, label=f"its fallback gate ({gate:.2f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("class fidelity (real-trained classifier agrees)", fontsize=9)


def _kid_panel(ax: plt.Axes, df: pd.DataFrame, real: dict) -> None:
    """The class-balanced KID (what ranks the kept generator) and the KID of all images, beside the real images'."""
    import pandas as pd

    from ..metrics import real_baseline
    from . import tracker

    x = df["epoch"]
    kid_b = _column(df, "kid_balanced")
    if kid_b.isna().all():  # rows written before the column: the same mean of the per-class KIDs
        kid_b = pd.Series([tracker.ranking_kid(r.to_dict()) for _, r in df.iterrows()], index=df.index, dtype=float)
    ax.plot(x, kid_b, "o-", ms=3, color="C3", label="class-balanced KID (ranks the kept generator)")
    ax.plot(x, _column(df, "kid"), ".-", ms=2, lw=0.8, color="C4", alpha=0.7, label="KID of all images")
    for key, ls in (("kid_balanced", "-"), ("kid", "--")):
        v = real_baseline.finite(real.get(key))
        if v is not None:
            ax.axhline(v, color="grey", lw=1.2 if ls == "-" else 0.8, ls=ls,
                       label=f"held-out real images ({'balanced' if key == 'kid_balanced' else 'all'}: {v:.4f})")
    ref = str(df["reference"].iloc[-1]) if "reference" in df and len(df) else "?"
    ax.set_title(f"KID vs {ref} (lower is closer)", fontsize=9)


def _artefact_panel(ax: plt.Axes, df: pd.DataFrame, base: dict) -> None:
    """The two artefact scores (x the training images'), their lines (the share's a gate of the kept generator, the
    stripes' not) and where held-out real images land (the stripe line's count said: a small set scores higher)."""
    from ..metrics import real_baseline
    from . import tracker

    x, art = df["epoch"], base.get("artefact") or {}
    ax.plot(x, _column(df, "hf_share_vs_real"), "o-", ms=3, color="C5", label="high-frequency share (checkerboard)")
    ax.plot(x, _column(df, "stripe_vs_real"), "s-", ms=3, color="C6", label="stripes (strongest row/column frequency)")
    ax.axhline(1.0, color="grey", lw=1.2, label="training images (= 1)")
    for key, c, what in (("held_out_vs_train", "C5", "share"), ("stripe_held_out_vs_train", "C6", "stripes")):
        v = real_baseline.finite(art.get(key))
        if v is not None:
            n = real_baseline.stand_in_count(base) if what == "stripes" else None
            ax.plot(x.iloc[[0, -1]], [v, v], color=c, lw=0.8, alpha=0.5,
                    label=f"held-out real images{f' ({n})' if n else ''}, {what} ({v:.2f})")
    ax.axhline(tracker.ARTEFACT_MAX, color="C5", ls=":", lw=0.9,
               label=f"gate of the kept generator, share ({tracker.ARTEFACT_MAX}x)")
    ax.axhline(tracker.STRIPE_MAX, color="C6", ls="-.", lw=0.9, label=f"line, stripes ({tracker.STRIPE_MAX}x; not a gate)")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("x the training images'", fontsize=8)
    ax.set_title("artefacts (share: gate, dotted; stripes: shown, dash-dot)", fontsize=9)
