"""Publishing: one command writes the repository URL into every notebook's Colab badge and Setup cell."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "set_repo_url.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _script():
    spec = importlib.util.spec_from_file_location("set_repo_url", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _repo_copy(tmp_path: Path, remote: str | None) -> Path:
    """A git repository holding a copy of the four notebooks, with `remote` as origin (or no remote)."""
    root = tmp_path / "clone"
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if remote:
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", remote], check=True)
    return root


def test_all_notebooks_name_the_same_repository() -> None:
    mod = _script()
    assert len(NOTEBOOKS) == 4
    repos = set()
    for p in NOTEBOOKS:
        u = mod.notebook_urls(p)
        assert len(u["badges"]) == 1 and len(u["clone"]) == 1, p.name
        owner, repo, branch, file = u["badges"][0]
        assert file == p.name, f"{p.name}: its badge opens {file}"
        assert mod.https_url(u["clone"][0]) == f"https://github.com/{owner}/{repo}.git", p.name
        repos.add((owner, repo, branch, u["clone"][0]))
    assert len(repos) == 1, f"the notebooks name different repositories: {sorted(repos)}"


@pytest.mark.parametrize("remote", ["git@github.com:someone/cxr-fork.git", "ssh://git@github.com/someone/cxr-fork.git",
                                    "https://github.com/someone/cxr-fork", "https://github.com/someone/cxr-fork.git/"])
def test_remote_forms_become_https(remote: str) -> None:
    assert _script().https_url(remote) == "https://github.com/someone/cxr-fork.git"


def test_rewrites_every_badge_and_setup_cell_of_a_copy(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path, remote=None)
    r = _run("git@github.com:someone/cxr-fork.git", "--branch", "dev", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "https://github.com/someone/cxr-fork.git (branch dev) in 4 notebooks; changed" in r.stdout
    mod = _script()
    for p in sorted((root / "notebooks").glob("*.ipynb")):
        u = mod.notebook_urls(p)
        assert u["badges"] == [("someone", "cxr-fork", "dev", p.name)] and u["clone"] == ["https://github.com/someone/cxr-fork.git"]
        before = [ln for c in json.loads((ROOT / "notebooks" / p.name).read_text())["cells"] for ln in c["source"]]
        after = [ln for c in json.loads(p.read_text())["cells"] for ln in c["source"]]
        assert sum(a != b for a, b in zip(before, after, strict=True)) == 2  # the badge line and the REPO_URL line only
        assert p.read_text().endswith("}\n") and "\n  {\n   \"cell_type\"" in p.read_text()  # Jupyter's layout kept
    again = _run("https://github.com/someone/cxr-fork", "--branch", "dev", "--root", str(root))
    assert again.returncode == 0 and "nothing changed" in again.stdout


def test_default_url_is_the_origin_remote(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path, remote="git@github.com:origin-owner/cxr-cgan.git")
    r = _run("--root", str(root))
    assert r.returncode == 0, r.stderr
    assert _script().notebook_urls(root / "notebooks" / "02_train_cgan.ipynb")["clone"] == \
        ["https://github.com/origin-owner/cxr-cgan.git"]


def test_no_remote_and_no_argument_is_one_line_exit_2(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path, remote=None)
    r = _run("--root", str(root))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "git remote get-url origin" in r.stderr and "set_repo_url.py https://" in r.stderr
    bad = _run("https://gitlab.com/someone/cxr-cgan.git", "--root", str(root))
    assert bad.returncode == 2 and "not a GitHub repository URL" in bad.stderr and bad.stderr.count("\n") == 1
    assert [p.read_bytes() for p in sorted((root / "notebooks").glob("*.ipynb"))] == [p.read_bytes() for p in NOTEBOOKS]


def test_a_bad_notebook_or_branch_leaves_every_notebook_as_it_was(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path, None)
    before = {p.name: p.read_bytes() for p in sorted((root / "notebooks").glob("*.ipynb"))}
    r = subprocess.run([sys.executable, str(SCRIPT), "https://github.com/me/cxr-cgan.git", "--branch", "feature/x",
                        "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: --branch 'feature/x'") and r.stderr.count("\n") == 1
    # the last notebook (in sorted order) loses its badge: the check fails before the first three are rewritten
    last = sorted((root / "notebooks").glob("*.ipynb"))[-1]
    last.write_text(last.read_text(encoding="utf-8").replace("colab.research.google.com/github", "example.org"),
                    encoding="utf-8")
    before[last.name] = last.read_bytes()
    r = subprocess.run([sys.executable, str(SCRIPT), "https://github.com/me/cxr-cgan.git", "--root", str(root)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "expected one Colab badge" in r.stderr
    assert {p.name: p.read_bytes() for p in sorted((root / "notebooks").glob("*.ipynb"))} == before
