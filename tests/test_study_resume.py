"""A study rerun with the same inputs trains nothing it has already tested and writes the same results.json; a changed
synthetic folder retrains only the classifiers that read it. (The kill -9 test is tests/reliability/test_study_kill.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import write_noise_pngs

from cxr_utils import files as io
from cxr_utils.evaluation import protocols, study


def test_a_rerun_reuses_the_entries_and_a_changed_folder_retrains_only_its_classifiers(
        sample_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real_build = protocols.build_classifier

    def counting_build(*a, **k):
        built.append(1)
        return real_build(*a, **k)

    monkeypatch.setattr(protocols, "build_classifier", counting_build)
    syn = write_noise_pngs(tmp_path / "syn", n_per_class=5)
    out = tmp_path / "out"
    lines: list[str] = []
    kw = dict(protocols="trtr,tstr", weights="none", extractor="random", smoke=True, log=lines.append, ratios="1",
              deterministic=True)
    first = study.run_study(sample_npz, syn, out, **kw)
    entries = sorted(p.name for p in (out / "entries").glob("*.json"))
    assert len(built) == 2 and len(entries) == 2 and entries[0].startswith("trtr-seed0-")
    assert any(ln.startswith(f"study: 2 result(s) to train; each is saved to {out / 'entries'} as soon as it is tested")
               for ln in lines)
    reference = io.read_json(out / "results.json")
    # recorded: the precision used (deterministic resolves auto to fp32) and the request
    assert [(r["precision"], r["config"]["precision"], r["config"]["deterministic"]) for r in reference["protocols"]] \
        == [("fp32", "auto", True)] * 2

    # the same study again: nothing is trained, results.json is rebuilt from the entries, equal but for VARIES
    lines.clear()
    (out / "results.json").unlink()
    again = study.run_study(sample_npz, syn, out, **kw)
    assert len(built) == 2, "a finished classifier was trained again"
    assert f"study: all 2 results already done in {out / 'entries'} (same inputs); nothing to train" in lines
    assert study.comparable(io.read_json(out / "results.json")) == study.comparable(reference)
    assert [r["per_seed"] for r in again.results] == [r["per_seed"] for r in first.results]  # seconds included
    assert again.resume is not None and len(again.resume.done) == 2

    # other images in the synthetic folder: the tstr entry is set aside (not mixed), trtr is reused
    write_noise_pngs(syn, n_per_class=5, seed=1)
    lines.clear()
    changed = study.run_study(sample_npz, syn, out, **kw)
    assert len(built) == 3, "only tstr reads the folder: one classifier retrained"
    stale = [ln for ln in lines if "were made with other inputs" in ln]
    assert len(stale) == 1 and f"other images in the synthetic folder {syn}" in stale[0]
    assert f"study: 1 of 2 results already done in {out / 'entries'} (same inputs); training the other 1" in lines
    assert changed.resume is not None and [p.name for p in changed.resume.stale_dir.iterdir()] == [entries[1]]
    assert changed.results[0]["per_seed"] == first.results[0]["per_seed"]  # trtr: the entry as it was
    assert changed.results[1]["per_seed"][0]["test_probs"] != first.results[1]["per_seed"][0]["test_probs"]

