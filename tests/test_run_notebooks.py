"""`make run` (scripts/run_notebooks.py) writes an HTML rendering beside each executed notebook; the README's
notebook UI command works."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _executed_notebook(path: Path, title: str, png: str) -> Path:
    """A tiny notebook as papermill leaves it: a title, a printed line and an inline figure."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"),
                nbformat.v4.new_code_cell("print('hello'); display(fig)", execution_count=1, outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="hello from the kernel\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})])]
    nbformat.write(nb, path)
    return path


def test_html_embeds_the_figures(tmp_path: Path) -> None:
    png = _png()
    html = _script().write_html(_executed_notebook(tmp_path / "tiny.ipynb", "Tiny notebook", png))
    assert html == tmp_path / "tiny.html"
    text = html.read_text(encoding="utf-8")
    assert "Tiny notebook" in text and "hello from the kernel" in text
    assert f"data:image/png;base64,{png}" in text  # the figure travels inside the file: no side files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.html", "tiny.ipynb"]


def test_make_run_writes_html_beside_each_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import papermill as pm

    mod, png, ran = _script(), _png(), []

    def fake_execute(src: str, dst: str, **kw: object) -> None:  # stands in for the kernel: an executed copy
        ran.append(Path(src).name)
        _executed_notebook(Path(dst), Path(src).stem, png)
        if Path(src).name == "03_samples.ipynb" and kw.get("parameters", {}).get("fail"):
            raise pm.PapermillExecutionError(4, 5, "x", "ValueError", "boom", [])

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    assert mod.main(["--work-dir", str(tmp_path / "run")]) == 0
    names = [p.stem for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert ran == [f"{n}.ipynb" for n in names]
    for n in names:
        assert f"data:image/png;base64,{png}" in (tmp_path / "run" / f"{n}.html").read_text(encoding="utf-8")
    assert "their .html renderings" in capsys.readouterr().out

    # a failing notebook still leaves its HTML (the cells up to the failure), and the message points at it
    monkeypatch.setattr(pm, "execute_notebook", lambda s, d, **kw: fake_execute(s, d, parameters={"fail": True}))
    assert mod.main(["--work-dir", str(tmp_path / "run2")]) == 1
    err = capsys.readouterr().err
    assert (tmp_path / "run2" / "03_samples.html").is_file() and not (tmp_path / "run2" / "04_evaluate_vgg16.ipynb").exists()
    assert f"open {tmp_path / 'run2' / '03_samples.html'}" in err and "ValueError: boom" in err


def test_readme_notebook_command_works() -> None:
    """The README tells users to open the notebooks with `.venv/bin/jupyter lab notebooks/`: JupyterLab must be there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cmd = re.search(r"`(\.venv/bin/jupyter lab notebooks/)`", readme)
    assert cmd, "README no longer names `.venv/bin/jupyter lab notebooks/`; update this test with it"
    exe = ROOT / ".venv" / "bin" / "jupyter"
    # the same command, asked for its version instead of starting a server
    r = subprocess.run([str(exe), "lab", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"4\.\d+\.\d+\s*", r.stdout), r.stdout
