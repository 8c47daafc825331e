"""Notebook 02's "run it again after a disconnect" path: with FRESH=False a rerun resumes the run folder instead of
starting over (smoke mode deletes the run first, so the nbval pass of `make test` never takes this path)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "02_train_cgan.ipynb"


def _printed(nb) -> tuple[str, dict]:
    """(the text the notebook printed, the training summary it printed as JSON)."""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    start = text.index('{\n "step"')
    return text, json.loads(text[start:text.index("}", start) + 1])


def test_rerunning_notebook_02_resumes_the_run(sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from cxr_utils.checkpoints import Checkpoints
    from cxr_utils.train import read_metrics

    monkeypatch.setenv("CXR_SMOKE", "1")  # smoke sizes, same code path
    data_dir = tmp_path / "data"
    shutil.copytree(sample_data_dir / "raw" / "sample", data_dir / "raw" / "sample")  # the real sample images, no download
    monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
    work = tmp_path / "work"
    source = load_notebook_node(str(NOTEBOOK))  # as papermill reads it (every cell gets a tags list)
    # a session that ends after epoch 1 (a disconnect), then the notebook run again as it is, asking for 2 epochs.
    # One kernel runs both passes (TensorFlow is imported once); the resume itself only reads the run folder.
    passes = [parameterize_notebook(copy.deepcopy(source), dict(WORK_DIR=str(work), FRESH=False, SIZE=32, EPOCHS=e))
              for e in (1, 2)]
    client = NotebookClient(passes[0], kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    with client.setup_kernel():
        for nb in passes:
            client.nb = nb
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
    text1, first = _printed(passes[0])
    assert "starting a new run" in text1 and first["resumed_from_epoch"] is None
    text2, second = _printed(passes[1])
    assert "resuming from the last checkpoint" in text2
    assert second["resumed_from_epoch"] == 1 and second["step"] == 2 * first["step"]
    run = work / "gan"
    assert [int(r["epoch"]) for r in read_metrics(run / "metrics.csv")] == [1, 2]  # epoch 1 kept, not re-trained
    assert [p.name for p in Checkpoints(run).files()] == ["ckpt-0002.npz", "ckpt-0001.npz"]
