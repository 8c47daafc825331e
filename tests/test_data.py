"""The data layer on the real sample source (fetch, cache, load), and caches built by an older format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _xray_fixtures import make_folder

from cxr_utils import data


def test_sample_fetch_gives_16_real_images(sample_npz):
    ds = data.load(sample_npz)
    assert ds.images.shape == (16, 64, 64) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [8, 8]
    assert set(ds.split.tolist()) == {"train", "val", "test"}
    assert ds.manifest["source"] == "sample"
    assert len(ds.manifest["images"]) == 16
    assert ds.manifest["origin"]["wheel_sha256"] == data.SAMPLE_WHEEL_SHA256
    # real X-rays, not blanks: plenty of grey levels and contrast
    assert all(len(np.unique(im)) > 100 for im in ds.images)
    assert ds.images.std() > 30


def _as_format_1(npz: Path) -> None:
    """Rewrite a cache's manifest as format 1 wrote it (no test-patient rule), as a cache built before the bump."""
    mp = data.manifest_path(npz)
    m = json.loads(mp.read_text())
    m["format"] = 1
    m.pop("test_patients"), m.pop("test_overlap")
    mp.write_text(json.dumps(m))


def test_a_cache_of_an_older_format_is_rebuilt_with_one_line_and_loads_with_a_note(tmp_path, capsys):
    root = make_folder(tmp_path / "flat", flat_k=6)
    out = tmp_path / "c" / "f.npz"
    data.prepare("folder", path=root, out=out, progress=False)
    _as_format_1(out)
    capsys.readouterr()
    # load: still readable (a run trained on it stays evaluable on it), but never silently
    ds = data.load(out)
    assert len(ds) == 12 and data.cache_format(out) == 1
    err = capsys.readouterr().err
    assert err == (f"note: {out} was built by an older format (1 < 2): its split follows that format's rule; "
                   "`python -m cxr_utils prepare` (the same --source/--out) rebuilds it\n")
    # prepare: one line, then rebuilt (not reused, not reported as merely stale)
    r = data.prepare_verbose("folder", path=root, out=out, progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert r.rebuilt and lines[0] == f"folder: cache {out} was built by an older format (1 < 2): rebuilding"
    assert not any("stale" in ln for ln in lines)
    assert data.cache_format(out) == data.FORMAT_VERSION == 2
    assert data.load(out).manifest["test_patients"] == "series" and capsys.readouterr().err == ""
    # a newer format (another branch of the code) is not trusted either
    m = json.loads(data.manifest_path(out).read_text())
    data.manifest_path(out).write_text(json.dumps({**m, "format": 3}))
    assert data.prepare_verbose("folder", path=root, out=out, progress=False).rebuilt
    assert f"folder: cache {out} was built by a newer format (3 > 2): rebuilding" in capsys.readouterr().out
