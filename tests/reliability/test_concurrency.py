"""Two trainers on one run folder: the second refuses. Two `prepare` processes writing one cache: the result is
never corrupt (the .npz loads and its manifest describes exactly that .npz)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cxr_utils import data
from cxr_utils.cli import main as cli_main

from .conftest import CliProcess, clone_run, good_tree, write_config


def test_second_trainer_on_a_locked_run_folder_refuses(tiny_run, tiny_npz, tmp_path, capsys):
    from cxr_utils.gan.checkpoints import RunLock

    run = clone_run(tiny_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"}
    args = ["train", "--data", str(tiny_npz), "--run-dir", str(run), "--config",
            str(write_config(tmp_path / "c.json", epochs=3)), "--resume"]
    with RunLock(run):  # the first trainer (its lock is an flock: even a second open file in one process conflicts)
        assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"another trainer (pid {os.getpid()})" in err and str(run) in err and "--run-dir" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "lock"} == before


def _consistent(npz: Path) -> dict:
    """Load a cache and check its manifest describes this very .npz; returns the manifest."""
    ds = data.load(npz)
    m = ds.manifest
    assert m["npz_size"] == npz.stat().st_size
    assert m["n_images"] == len(ds) == len(m["images"])
    assert [e["split"] for e in m["images"]] == ds.split.tolist(), "manifest splits are not the .npz splits"
    assert [e["label"] for e in m["images"]] == ds.labels.tolist()
    return m


def test_two_prepare_processes_on_one_cache_never_leave_it_corrupt(real_jpegs, tmp_path):
    tree = good_tree(tmp_path / "tree", real_jpegs, k=5)
    # two seeds whose grouped splits differ, so a .npz of one run beside the manifest of the other is detectable
    splits = {}
    for s in range(6):
        splits[s] = data.load(data.prepare("folder", path=tree, size=32, seed=s, out=tmp_path / f"s{s}.npz",
                                           workers=1, progress=False)).split
    a, b = next((x, y) for x in splits for y in splits if x < y and not np.array_equal(splits[x], splits[y]))
    out = tmp_path / "shared" / "folder-32.npz"
    cmd = ["prepare", "--source", "folder", "--path", str(tree), "--size", "32", "--out", str(out), "--workers", "1",
           "--force"]
    marker = tmp_path / "paused"
    # A stops for a few seconds inside its manifest write, after its .npz is in place; B runs whole meanwhile.
    # Without a lock around the pair, A's manifest would then land beside B's .npz.
    pa = CliProcess([*cmd, "--seed", str(a)], tmp_path, "prepare-a", CXR_TEST_PAUSE_FILE=data.manifest_path(out).name,
                    CXR_TEST_PAUSE_MARKER=str(marker), CXR_TEST_PAUSE_SECONDS="6")
    pa.wait_for(marker.exists, timeout=120, what="A inside its manifest write")
    pb = CliProcess([*cmd, "--seed", str(b)], tmp_path, "prepare-b")
    assert pb.finish(timeout=120) == 0, pb.logs()
    assert pa.finish(timeout=120) == 0, pa.logs()
    m = _consistent(out)
    assert m["seed"] in (a, b)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, data.manifest_path(out).name])
    # and the cache answers a later prepare correctly: asking for the other seed rebuilds, the same seed reuses
    res = data.prepare_verbose("folder", path=tree, size=32, seed=m["seed"], out=out, workers=1, progress=False)
    assert not res.rebuilt and np.array_equal(data.load(out).split, splits[m["seed"]])
    # several rounds of two free-running writers, no pause: always a consistent pair, no temp files
    for r in range(2):
        ps = [CliProcess([*cmd, "--seed", str(s)], tmp_path, f"free-{r}-{s}") for s in (a, b)]
        assert [p.finish(timeout=120) for p in ps] == [0, 0], [p.logs() for p in ps]
        _consistent(out)
        time.sleep(0.01)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, data.manifest_path(out).name])
