"""kill -9 of `python -m cxr_utils study` half-way through writing its second classifier's entry, then the same command
again: it reuses the first classifier, trains the second, and writes the results.json of an uninterrupted
--deterministic run (equal apart from study.VARIES: the recorded command and each classifier's seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_utils import files as cio
from cxr_utils.cli import main as cli_main
from cxr_utils.evaluation import study

from .conftest import CliProcess


@pytest.mark.slow  # two CLI processes (TensorFlow start-up each) and three smoke VGG16 fits: about a minute
@pytest.mark.timeout(600)
def test_a_study_killed_mid_entry_write_resumes_to_the_uninterrupted_results(tiny_npz: Path, tmp_path: Path) -> None:
    from _helpers import write_noise_pngs

    syn = write_noise_pngs(tmp_path / "syn", n_per_class=5, size=32)
    args = ["study", "--data", str(tiny_npz), "--synthetic", str(syn), "--protocols", "trtr,tstr", "--weights", "none",
            "--extractor", "random", "--smoke", "--deterministic", "--synthetic-ratio", "1"]
    out = tmp_path / "killed"
    marker = tmp_path / "paused"
    # paused half-way through the atomic write of the tstr entry: trtr is on disk, tstr is not
    p1 = CliProcess([*args, "--out", str(out)], tmp_path, "p1", CXR_TEST_PAUSE_FILE="tstr-*.json",
                    CXR_TEST_PAUSE_MARKER=str(marker))
    # meanwhile, in this process: the uninterrupted reference (in-process == CLI, same code path)
    ref = tmp_path / "reference"
    assert cli_main([*args, "--out", str(ref)]) == 0
    p1.wait_for(marker.exists, what="the paused tstr entry write")
    assert p1.kill() == -9
    entries = out / "entries"
    done = sorted(p.name for p in entries.glob("*.json") if not p.name.startswith("."))
    half = [p for p in entries.iterdir() if p.name.startswith(".tstr-")]
    assert len(done) == 1 and done[0].startswith("trtr-seed0-"), done
    assert len(half) == 1, "the kill landed inside the tstr entry write: its temp file is there, half written"
    assert not (out / "results.json").exists()

    p2 = CliProcess([*args, "--out", str(out)], tmp_path, "p2")
    assert p2.finish() == 0, p2.logs()
    log = p2.out.read_text()
    assert f"study: 1 of 2 results already done in {entries} (same inputs); training the other 1" in log, p2.logs()
    assert "(finished earlier, not retrained)" in log and "were made with other inputs" not in log
    assert sorted(p.name for p in entries.glob("*.json") if not p.name.startswith(".")) == \
        sorted(p.name for p in (ref / "entries").glob("*.json"))
    got, want = cio.read_json(out / "results.json"), cio.read_json(ref / "results.json")
    assert study.comparable(got) == study.comparable(want)
    assert got["protocols"][0]["per_seed"][0]["test_probs"] == want["protocols"][0]["per_seed"][0]["test_probs"]
    assert got != want  # the commands differ (the out folders), so the comparison above did exclude something
