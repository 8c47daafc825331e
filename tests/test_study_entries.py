"""study_entries: a study's finished classifiers on disk are reused only with the same inputs, and every changed input
(real cache, synthetic images, classifier settings, weights) sets them aside with one line saying what changed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from cxr_utils.evaluation import classifier
from cxr_utils.evaluation import study_store as study_entries
from cxr_utils.files import read_json

NOW = lambda: dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # noqa: E731  a fixed clock names the stale folder


def _real(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {s: (rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), np.array([0, 1] * (n // 2))) for s, n in
            (("train", 4), ("val", 2), ("test", 2))}


def _shared(real: dict | None = None, weights_source: str = "random init", **cfg_over) -> dict:
    import dataclasses

    cfg = dataclasses.replace(classifier.EvalConfig.smoke(), **cfg_over)
    return study_entries.shared_inputs(real or _real(), cfg, "fp32", "random init", weights_source)


PLAN = [("trtr", None, None), ("tstr", "syn", 1.0)]
SUBSET = {("syn", 1.0): "a" * 64}
FOLDERS = {"syn": "f" * 64}


def _study(tmp_path: Path, shared: dict, subset=SUBSET, folders=FOLDERS, seeds=(0,)) -> tuple[dict, study_entries.Resume]:
    """Write nothing; scan OUT/entries against a plan and return (identities, what the scan found)."""
    idents = study_entries.planned_identities(shared, PLAN, list(seeds), subset)
    res = study_entries.EntryStore(tmp_path).scan({study_entries.entry_name(k): k for k in idents.values()}, shared,
                                                  folders, now=NOW)
    return idents, res


def _write_all(tmp_path: Path, idents: dict) -> None:
    store = study_entries.EntryStore(tmp_path)
    for (protocol, folder, _ratio, seed), ident in idents.items():
        store.write(ident, {"seed": seed, "accuracy": 0.5, "protocol": protocol}, folder,
                    FOLDERS.get(folder) if folder else None)


def test_the_same_inputs_reuse_every_entry_and_say_so_in_one_line(tmp_path: Path) -> None:
    idents, first = _study(tmp_path, _shared(), seeds=(0, 1))
    assert first.done == {} and first.planned == 4 and first.stale == []
    assert first.line(tmp_path / "entries").startswith("study: 4 result(s) to train; each is saved to")
    _write_all(tmp_path, dict(list(idents.items())[:3]))  # killed before the 4th
    names = sorted(p.name for p in (tmp_path / "entries").iterdir())
    assert names == sorted(study_entries.entry_name(k) for k in list(idents.values())[:3])
    assert names[0].startswith("trtr-seed0-") and any(n.startswith("tstr-x1-seed0-") for n in names)
    (tmp_path / "entries" / ".tstr-x1-seed1.json.abc.part.json").write_text('{"half', encoding="utf-8")  # a killed write
    _, again = _study(tmp_path, _shared(), seeds=(0, 1))
    assert len(again.done) == 3 and again.stale == [] and again.kept == 0
    assert again.line(tmp_path / "entries") == (f"study: 3 of 4 results already done in {tmp_path / 'entries'} "
                                                "(same inputs); training the other 1")
    assert {e["seed"] for e in again.done.values()} == {0, 1}
    # fewer seeds asked for: the seed-1 entries stay (same inputs), the seed-0 ones are done
    _, fewer = _study(tmp_path, _shared(), seeds=(0,))
    assert len(fewer.done) == 2 and fewer.kept == 1 and fewer.stale == []
    assert fewer.line(tmp_path / "entries").startswith("study: all 2 results already done in")


def _stale_after(tmp_path: Path, **changed) -> study_entries.Resume:
    idents, _ = _study(tmp_path, _shared())
    _write_all(tmp_path, idents)
    shared = changed.pop("shared", _shared())
    _, res = _study(tmp_path, shared, **changed)
    return res


def test_another_cache_sets_every_entry_aside(tmp_path: Path) -> None:
    res = _stale_after(tmp_path, shared=_shared(_real(seed=1)))
    assert res.done == {} and len(res.stale) == 2
    assert res.stale_dir == tmp_path / "entries-stale" / "20260102-030405"
    assert sorted(p.name for p in res.stale_dir.iterdir()) == sorted(res.stale)
    assert list((tmp_path / "entries").iterdir()) == []  # nothing of the old inputs is left to be mixed in
    line = study_entries.stale_line(res, tmp_path / "entries")
    assert line == (f"study: 2 result(s) in {tmp_path / 'entries'} were made with other inputs (the real data (another "
                    f"cache, or other images in it)); set aside in {res.stale_dir}, never mixed with this study (delete "
                    "that folder when you no longer need them)")


def test_other_classifier_settings_or_weights_set_the_entries_aside_naming_the_change(tmp_path: Path) -> None:
    res = _stale_after(tmp_path / "a", shared=_shared(input_size=64, lr_head=0.01))
    assert res.done == {} and len(res.stale) == 2
    assert res.reasons == ["classifier settings: input_size 32 -> 64, lr_head 0.001 -> 0.01"]
    res = _stale_after(tmp_path / "b", shared=_shared(weights_source="ImageNet (offline copy)"))
    assert res.reasons == ["VGG16 weights: random init -> ImageNet (offline copy)"] and len(res.stale) == 2
    # the base seed and the bootstrap size decide no single classifier: the entries stay valid
    res = _stale_after(tmp_path / "c", shared=_shared(bootstrap=7, seed=0))
    assert len(res.done) == 2 and res.stale == []


def test_other_images_in_the_synthetic_folder_set_aside_only_its_entries(tmp_path: Path) -> None:
    res = _stale_after(tmp_path, subset={("syn", 1.0): "b" * 64}, folders={"syn": "g" * 64})
    assert [e["protocol"] for e in res.done.values()] == ["trtr"]  # trtr reads no synthetic image: kept
    assert len(res.stale) == 1 and res.stale[0].startswith("tstr-x1-seed0-")
    assert res.reasons == ["other images in the synthetic folder syn"]
    # the same images in the folder (e.g. a re-export that only added files): a ratio not run this time is kept
    idents = study_entries.planned_identities(_shared(), [("augment", "syn", 2.0)], [0], {("syn", 2.0): "c" * 64})
    _write_all(tmp_path / "k", idents)
    _, res = _study(tmp_path / "k", _shared())
    assert res.kept == 1 and res.stale == [] and res.done == {}
    # a folder this study does not read (another GAN run, left out this time): kept for when it is read again
    idents = study_entries.planned_identities(_shared(), [("tstr", "other-run", 1.0)], [0], {("other-run", 1.0): "d" * 64})
    store = study_entries.EntryStore(tmp_path / "o")
    store.write(idents[("tstr", "other-run", 1.0, 0)], {"seed": 0}, "other-run", "e" * 64)
    _, res = _study(tmp_path / "o", _shared())
    assert res.kept == 1 and res.stale == []


def test_an_unreadable_entry_is_set_aside_not_trusted(tmp_path: Path) -> None:
    idents, _ = _study(tmp_path, _shared())
    _write_all(tmp_path, idents)
    victim = tmp_path / "entries" / study_entries.entry_name(idents[("trtr", None, None, 0)])
    victim.write_text("{not json", encoding="utf-8")
    _, res = _study(tmp_path, _shared())
    assert [e["protocol"] for e in res.done.values()] == ["tstr"]
    assert res.stale == [victim.name] and res.reasons == [f"unreadable entry file {victim.name}"]


def test_an_entry_file_holds_its_identity_and_result(tmp_path: Path) -> None:
    idents, _ = _study(tmp_path, _shared())
    ident = idents[("tstr", "syn", 1.0, 0)]
    path = study_entries.EntryStore(tmp_path).write(ident, {"seed": 0, "accuracy": 0.75}, "syn", "f" * 64)
    rec = read_json(path)
    assert rec == {"identity": ident, "synthetic": "syn", "synthetic_folder_sha256": "f" * 64,
                   "entry": {"seed": 0, "accuracy": 0.75}}
    assert ident["synthetic_sha256"] == "a" * 64 and ident["protocol"] == "tstr" and ident["synthetic_ratio"] == 1.0
    assert "bootstrap" not in ident["classifier"] and ident["classifier"]["precision"] == "fp32"
    a = np.arange(6, dtype=np.uint8)
    assert study_entries.array_digest(a) != study_entries.array_digest(a.reshape(2, 3))  # shape is part of content
    assert study_entries.array_digest(a) != study_entries.array_digest(a.astype(np.int64))


def test_a_fresh_study_deletes_the_entries(tmp_path: Path) -> None:
    idents, _ = _study(tmp_path, _shared())
    _write_all(tmp_path, idents)
    assert study_entries.EntryStore(tmp_path).clear() == 2 and not (tmp_path / "entries").exists()
    _, res = _study(tmp_path, _shared())
    assert res.done == {} and res.stale == []
