"""Evaluation figures: the confusion heatmap shows each count in its cell (rows true, columns predicted), and every
figure of a random-init VGG16 result says "random init" in its title."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils import drawing
from cxr_utils.config import CLASS_NAMES
from cxr_utils.evaluation import charts
from cxr_utils.metrics import classification as E

RANDOM = "VGG16 random init"
IMAGENET = "VGG16 ImageNet"


def _result(model: str, protocol: str = "tstr", counts=(5, 1, 2, 7), seed: int = 3) -> dict:
    """A results dict shaped like evaluation.run_protocol's (one seed), with distinct counts tn, fp, fn, tp."""
    tn, fp, fn, tp = counts
    labels = [0] * (tn + fp) + [1] * (fn + tp)
    probs = [0.2] * tn + [0.8] * fp + [0.3] * fn + [0.9] * tp
    m = E.classification_metrics(np.array(labels), np.array(probs))
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == counts
    history = {"loss": [0.7, 0.6], "accuracy": [0.5, 0.6], "val_loss": [0.8, 0.7], "val_accuracy": [0.5, 0.5]}
    stages = [{"stage": f"synthetic:{s}", "epochs_run": 2, "history": history} for s in ("head", "finetune")]
    return {"protocol": protocol, "model": model, "weights": "random init" if "random" in model else "imagenet",
            "seeds": [seed], "mean": {k: m[k] for k in (*E.METRICS, *E.COUNTS)}, "std": {k: 0.0 for k in E.METRICS},
            "per_seed": [{"seed": seed, **m, "stages": stages, "test_probs": probs}], "test_labels": labels}


def _title(fig) -> str:
    """The figure's own title: its suptitle, else the title of its one axes (panel names like "loss" are not titles)."""
    if fig._suptitle is not None and fig._suptitle.get_text():
        return fig._suptitle.get_text()
    assert len(fig.axes) == 1, "a figure of several panels names itself in a suptitle"
    return fig.axes[0].get_title()


def test_confusion_heatmap_cells_rows_true_columns_predicted():
    fig = charts.confusion_heatmap(_result(RANDOM, counts=(5, 1, 2, 7)))
    ax = fig.axes[0]
    # seaborn writes each count at the centre of its cell: (column + 0.5, row + 0.5) in data coordinates
    cells = {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert rows == cols == ["NORMAL", "PNEUMONIA"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    # (true, predicted): NORMAL->NORMAL tn, NORMAL->PNEUMONIA fp, PNEUMONIA->NORMAL fn, PNEUMONIA->PNEUMONIA tp
    assert cells == {(0, 0): "5", (0, 1): "1", (1, 0): "2", (1, 1): "7"}
    assert "random init" in ax.get_title() and "seed 3" in ax.get_title() and ax.get_title().startswith("tstr")
    drawing.close(fig)


@pytest.mark.parametrize("figure", ["confusion_heatmap", "roc_curves", "classifier_history", "protocol_comparison"])
def test_every_evaluation_figure_says_random_init_when_the_result_does(figure):
    def draw(*results):
        if figure in ("roc_curves", "protocol_comparison"):
            return getattr(charts, figure)(list(results))
        return getattr(charts, figure)(results[0])

    rnd = draw(_result(RANDOM), _result(RANDOM, protocol="trtr"))
    assert "random init" in _title(rnd), _title(rnd)
    img = draw(_result(IMAGENET), _result(IMAGENET, protocol="trtr"))
    assert _title(img) and "random init" not in _title(img), _title(img)
    if figure in ("roc_curves", "protocol_comparison"):  # one random-init result among ImageNet ones is still named
        mixed = draw(_result(IMAGENET), _result(RANDOM, protocol="trtr"))
        assert "random init" in _title(mixed) and "ImageNet" in _title(mixed), _title(mixed)
        drawing.close(mixed)
    drawing.close(rnd)
    drawing.close(img)


def test_nearest_figure_pairs_each_synthetic_with_its_neighbour() -> None:
    real = np.stack([np.zeros((4, 4)), np.full((4, 4), 255)]).astype(np.uint8)
    syn = np.stack([real[1], np.full((4, 4), 51)]).astype(np.uint8)
    fig = charts.nearest_figure(syn, np.array([1, 0]), real, np.array([0, 1]), CLASS_NAMES, reference=1.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4
    assert titles[:2] == ["syn PNEUMONIA\nd=0.000", "syn NORMAL\nd=0.200"]
    assert titles[2:] == ["real #1\nPNEUMONIA", "real #0\nNORMAL"]
    assert "real-to-real nearest distance median 1.000" in fig._suptitle.get_text()


def _study(model: str = RANDOM, ratios=(0.5, 1.0)):
    from _helpers import study_results

    from cxr_utils.evaluation import study

    results = study_results(model=model, ratios=ratios)
    return results, study.compare_to_trtr(results, n_boot=100)


def test_paired_differences_draws_each_entry_and_the_pooled_runs_with_their_intervals():
    results, across = _study()
    fig = charts.paired_differences(results, across)
    ax = fig.axes[0]  # accuracy
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["tstr x0.5 [run 1]", "tstr x0.5 [run 2]", "tstr x0.5, 2 runs pooled",
                      "augment x0.5 [run 1]", "augment x0.5 [run 2]", "augment x0.5, 2 runs pooled",
                      "tstr x1 [run 1]", "tstr x1 [run 2]", "tstr x1, 2 runs pooled",
                      "augment x1 [run 1]", "augment x1 [run 2]", "augment x1, 2 runs pooled"]
    expected = [r["vs_trtr"] for r in results[1:]]
    folders = list(dict.fromkeys(r["synthetic"] for r in results[1:]))
    by_label = {charts.entry_label(r, folders): r["vs_trtr"] for r in results[1:]}
    by_label.update({f"{a['protocol']} x{a['synthetic_ratio']:g}, 2 runs pooled": a["vs_trtr_pooled"] for a in across})
    drawn = {}
    ticks = {round(t, 6): lab for t, lab in zip(ax.get_yticks(), labels, strict=True)}
    for c in ax.containers:  # one errorbar per row: the point at the difference, the bar from lo to hi (points)
        (x,), (y,) = c.lines[0].get_xdata(), c.lines[0].get_ydata()
        (lo, _), (hi, _) = c.lines[2][0].get_segments()[0]
        drawn[ticks[round(y, 6)]] = (x, lo, hi)
    assert len(drawn) == len(labels) == len(expected) + len(across)
    for label, vs in by_label.items():
        d, (lo, hi) = vs["difference"]["accuracy"], vs["ci95"]["accuracy"]
        assert drawn[label] == pytest.approx((100 * d, 100 * lo, 100 * hi)), label
    assert "random init" in _title(fig) and "paired bootstrap 95% interval" in _title(fig)
    drawing.close(fig)
    img = charts.paired_differences(*_study(IMAGENET))
    assert "ImageNet" in _title(img) and "random init" not in _title(img)
    drawing.close(img)


def test_ratio_sweep_puts_trtr_at_ratio_zero_of_augment_and_no_tstr_point_there():
    results, across = _study(ratios=(0.5, 1.0, 2.0))
    fig = charts.ratio_sweep(results, across)
    top, bottom = fig.axes[0], fig.axes[2]  # accuracy: levels, then difference from trtr
    lines = {ln.get_label(): ln for ln in top.get_lines() if not ln.get_label().startswith("_")}
    trtr = results[0]["mean"]["accuracy"]
    assert lines["trtr (real only)"].get_ydata()[0] == pytest.approx(100 * trtr)
    aug, tstr = lines["augment"], lines["tstr"]
    assert list(aug.get_xdata()) == [0.0, 0.5, 1.0, 2.0] and list(tstr.get_xdata()) == [0.5, 1.0, 2.0]
    assert aug.get_ydata()[0] == pytest.approx(100 * trtr)  # ratio 0 of augment is the trtr entry itself
    pooled = {a["synthetic_ratio"]: a["metrics"]["accuracy"]["mean"] for a in across if a["protocol"] == "augment"}
    assert list(aug.get_ydata()[1:]) == pytest.approx([100 * pooled[r] for r in (0.5, 1.0, 2.0)])
    diffs = [ln for ln in bottom.get_lines() if len(ln.get_xdata()) > 1 and ln.get_color() == aug.get_color()]
    assert diffs[-1].get_ydata()[0] == 0.0  # its difference from trtr there: 0 by construction
    assert "random init" in _title(fig)
    drawing.close(fig)
