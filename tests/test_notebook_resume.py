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


@pytest.mark.slow  # 17-49 s; the CLI and notebook resume paths are unit-tested in test_train and test_train_setup: make test-slow (CI's second stage) keeps it
def test_rerunning_notebook_02_resumes_the_run(sample_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from cxr_utils.gan.checkpoints import Checkpoints
    from cxr_utils.gan.fit import read_metrics

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


NOTEBOOK_04 = ROOT / "notebooks" / "04_evaluate_vgg16.ipynb"


@pytest.mark.slow  # one kernel, two smoke studies of notebook 04 (two VGG16 fits, two generative-metric passes)
def test_rerunning_notebook_04_after_an_interrupt_resumes_the_study(sample_npz: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    """A session that ended after the study's first classifier (its entry on disk, the second's not, no results.json),
    then notebook 04 run again as it is: it trains only the second and writes the uninterrupted run's results.json."""
    from _helpers import write_noise_pngs
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from cxr_utils import files as io
    from cxr_utils.evaluation import study

    monkeypatch.setenv("CXR_SMOKE", "1")
    work = tmp_path / "work"
    write_noise_pngs(work / "synthetic", n_per_class=5)
    io.atomic_write_json(work / "gan" / "config.json", {"data": {"npz": str(sample_npz)}})  # what notebook 02 records
    params = dict(WORK_DIR=str(work), FRESH=False, PROTOCOLS=["trtr", "tstr"], SYNTHETIC_RATIOS=[1], WEIGHTS="none",
                  EXTRACTOR="random")
    source = load_notebook_node(str(NOTEBOOK_04))
    passes = [parameterize_notebook(copy.deepcopy(source), params) for _ in range(2)]
    client = NotebookClient(passes[0], kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK_04.parent)}})
    entries, results = work / "evaluation" / "entries", work / "evaluation" / "results.json"
    with client.setup_kernel():
        for k, nb in enumerate(passes):
            client.nb = nb
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
            if k == 0:  # the interrupt: the tstr classifier was never saved, results.json never written
                reference = io.read_json(results)
                (tstr,) = entries.glob("tstr-*.json")
                tstr.unlink()
                results.unlink()
    text = [_printed_text(nb) for nb in passes]
    assert f"study: 2 result(s) to train; each is saved to {entries}" in text[0]
    assert f"study: 1 of 2 results already done in {entries} (same inputs); training the other 1" in text[1]
    assert "(finished earlier, not retrained)" in text[1] and "(finished earlier" not in text[0]
    resumed = io.read_json(results)
    assert study.comparable(resumed["protocols"][0]) == study.comparable(reference["protocols"][0])  # trtr: reused
    assert resumed["protocols"][0]["per_seed"] == reference["protocols"][0]["per_seed"]
    assert resumed["protocols"][1]["per_seed"][0]["seed"] == 0 and len(list(entries.glob("*.json"))) == 2


def _printed_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
