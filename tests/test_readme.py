"""The README's numbers come from JSON the code wrote: hand edits or stale JSON fail here."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_generated_sections_match_the_json():
    mod = _load_script("update_readme")
    docs = mod.render_all()
    assert mod.README in docs  # the README keeps generated sections of its own
    for doc, (old, new) in docs.items():
        assert new == old, f"{doc.name} is stale: run `python scripts/update_readme.py`"


def test_every_generated_section_lives_in_exactly_one_document(tmp_path, monkeypatch):
    mod = _load_script("update_readme")
    a, b = tmp_path / "README.md", tmp_path / "page.md"
    a.write_text("<!-- generated:results -->\nold\n<!-- /generated:results -->\n")
    b.write_text("<!-- generated:results -->\nold\n<!-- /generated:results -->\n")
    monkeypatch.setattr(mod, "DOCUMENTS", (a, b))
    monkeypatch.setattr(mod, "_rel", lambda p: p.name)
    with pytest.raises(SystemExit, match=r"exactly one document: \{.*'results': \['README.md', 'page.md'\]"):
        mod.render_all()


def test_seed_claim_json_is_what_the_search_computes():
    from cxr_utils.evaluation.tables import KAGGLE_TEST, SEED_CLAIM, search_confusion_matrices

    stored = json.loads((ROOT / "assets" / "results" / "seed_claim.json").read_text())
    fresh = search_confusion_matrices(**SEED_CLAIM, **KAGGLE_TEST)
    assert stored["statement"] == fresh["statement"]
    assert stored["matches"] == [] and fresh["matches"] == []
    c = stored["closest"]
    assert c["tn"] + c["fp"] == 234 and c["fn"] + c["tp"] == 390


def test_quickstart_has_exactly_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.S).group(1)
    cmds = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    assert cmds == ["make run", "make test"]


def test_links_of_a_section_on_a_docs_page_are_relative_to_the_page():
    mod = _load_script("update_readme")
    md = "![grid](assets/x.png) [a](https://e.org/a) [b](#top) see [t](docs/testing.md)"
    assert mod.relink(md, mod.README) == md
    assert mod.relink(md, mod.ROOT / "docs" / "results.md") == \
        "![grid](../assets/x.png) [a](https://e.org/a) [b](#top) see [t](../docs/testing.md)"
