"""Notebooks are committed without outputs or execution counts (outputs live in run folders, not in git)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def dirty_cells(nb: dict) -> list[str]:
    """Descriptions of code cells that carry outputs or an execution count."""
    bad = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            bad.append(f"cell {i}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            bad.append(f"cell {i}: execution_count {cell['execution_count']}")
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_no_outputs(path: Path) -> None:
    bad = dirty_cells(json.loads(path.read_text(encoding="utf-8")))
    assert not bad, f"{path.name} is committed with outputs ({'; '.join(bad)}); clear them: " \
                    f"jupyter nbconvert --clear-output --inplace notebooks/{path.name}"


def test_checker_catches_outputs() -> None:
    clean = {"cells": [{"cell_type": "code", "outputs": [], "execution_count": None, "source": "1"},
                       {"cell_type": "markdown", "source": "# t"}]}
    dirty = {"cells": [{"cell_type": "code", "execution_count": 3,
                        "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}], "source": "1"}]}
    assert dirty_cells(clean) == []
    assert dirty_cells(dirty) == ["cell 0: 1 output(s)", "cell 0: execution_count 3"]
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"
