"""Notebook 02's "run it again after a disconnect" path: with FRESH=False a rerun resumes the run folder instead of
starting over (smoke mode deletes the run first, so the nbval pass of `make test` never takes this path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_train_cgan.ipynb"


def _run(out: Path, **parameters) -> tuple[str, dict]:
    """Execute notebook 02 with papermill; (its printed text, the training summary it printed)."""
    import papermill as pm

    nb = pm.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, cwd=str(NOTEBOOK.parent),
                             kernel_name="python3", progress_bar=False)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    start = text.index('{\n "step"')
    return text, json.loads(text[start:text.index("}", start) + 1])


def test_rerunning_notebook_02_resumes_the_run(sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cxr_utils.train import Checkpoints, read_metrics

    monkeypatch.setenv("CXR_SMOKE", "1")  # smoke sizes, same code path
    monkeypatch.setenv("CXR_DATA_DIR", str(sample_data_dir))  # the real sample cache, already built
    work = tmp_path / "work"
    # a session that ends after epoch 1 (a disconnect), then the notebook run again as it is, asking for 2 epochs
    text1, first = _run(tmp_path / "02-first.ipynb", WORK_DIR=str(work), FRESH=False, EPOCHS=1)
    assert "starting a new run" in text1 and first["resumed_from_epoch"] is None
    steps_per_epoch = first["step"]
    text2, second = _run(tmp_path / "02-rerun.ipynb", WORK_DIR=str(work), FRESH=False, EPOCHS=2)
    assert "resuming from the last checkpoint" in text2
    assert second["resumed_from_epoch"] == 1 and second["step"] == 2 * steps_per_epoch
    run = work / "gan"
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2]  # epoch 1 kept, not re-trained
    assert [p.name for p in Checkpoints(run).files()] == ["ckpt-0002.npz", "ckpt-0001.npz"]
