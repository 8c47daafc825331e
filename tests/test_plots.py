"""Evaluation figures: the confusion heatmap shows each count in its cell (rows true, columns predicted), and every
figure of a random-init VGG16 result says "random init" in its title."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_utils import evaluation as E
from cxr_utils import plots
from cxr_utils.config import CLASS_NAMES

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
    fig = plots.confusion_heatmap(_result(RANDOM, counts=(5, 1, 2, 7)))
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
    plots.plt.close(fig)


@pytest.mark.parametrize("figure", ["confusion_heatmap", "roc_curves", "classifier_history", "protocol_comparison"])
def test_every_evaluation_figure_says_random_init_when_the_result_does(figure):
    def draw(*results):
        if figure in ("roc_curves", "protocol_comparison"):
            return getattr(plots, figure)(list(results))
        return getattr(plots, figure)(results[0])

    rnd = draw(_result(RANDOM), _result(RANDOM, protocol="trtr"))
    assert "random init" in _title(rnd), _title(rnd)
    img = draw(_result(IMAGENET), _result(IMAGENET, protocol="trtr"))
    assert _title(img) and "random init" not in _title(img), _title(img)
    if figure in ("roc_curves", "protocol_comparison"):  # one random-init result among ImageNet ones is still named
        mixed = draw(_result(IMAGENET), _result(RANDOM, protocol="trtr"))
        assert "random init" in _title(mixed) and "ImageNet" in _title(mixed), _title(mixed)
        plots.plt.close(mixed)
    plots.plt.close(rnd)
    plots.plt.close(img)


def test_nearest_figure_pairs_each_synthetic_with_its_neighbour() -> None:
    real = np.stack([np.zeros((4, 4)), np.full((4, 4), 255)]).astype(np.uint8)
    syn = np.stack([real[1], np.full((4, 4), 51)]).astype(np.uint8)
    fig = plots.nearest_figure(syn, np.array([1, 0]), real, np.array([0, 1]), CLASS_NAMES, reference=1.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4
    assert titles[:2] == ["syn PNEUMONIA\nd=0.000", "syn NORMAL\nd=0.200"]
    assert titles[2:] == ["real #1\nPNEUMONIA", "real #0\nNORMAL"]
    assert "real-to-real nearest distance median 1.000" in fig._suptitle.get_text()
