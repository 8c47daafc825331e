"""Splits and audits: patient ids and classes from file names, the grouped split (pinned per seed), the official test
split kept, counts per split, patients shared across splits and exact duplicates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _xray_fixtures import fake_xray, jpeg_bytes, make_folder

from cxr_utils import data


def test_grouped_split_no_patient_in_two_splits():
    rng = np.random.default_rng(1)
    groups = np.repeat([f"p{i}" for i in range(120)], rng.integers(1, 5, 120))
    labels = np.array([int(g[1:]) % 3 == 0 for g in groups], dtype=np.int64)
    fr = {"train": 0.6, "val": 0.2, "test": 0.2}
    s = data.grouped_split(labels, groups, fr, seed=7)
    for g in np.unique(groups):
        assert len(set(s[groups == g])) == 1
    for k in (0, 1):
        n = (labels == k).sum()
        for name, f in fr.items():
            assert abs(((s == name) & (labels == k)).sum() - f * n) <= 3
    assert np.array_equal(s, data.grouped_split(labels, groups, fr, seed=7))
    assert not np.array_equal(s, data.grouped_split(labels, groups, fr, seed=8))


@pytest.mark.parametrize("name, patient, label", [
    ("person1_bacteria_1.jpeg", "person1", 1),
    ("PERSON12_virus_33.jpeg", "person12", 1),  # one patient whatever the case of the name
    ("train/PNEUMONIA/person3_bacteria_10.jpeg", "person3", 1),  # folders are not part of the name
    ("IM-0115-0001.jpeg", "IM-0115", 0),
    ("NORMAL2-IM-1427-0001.jpeg", "IM-1427", 0),  # shares IM-1427's id on purpose (merging can only cut leakage)
    ("im-0007-0001.jpeg", "IM-0007", 0),
    ("scan.png", None, None),
    ("bacteria_12.jpeg", None, 1), ("VIRUS-3.png", None, 1),  # the class word alone names pneumonia
    ("person7.jpeg", None, 1),  # a person* name is a pneumonia image even without the class word
])
def test_patient_id_and_label_from_kaggle_names(name, patient, label):
    """The patient id is the grouping key of the split: a wrong one puts one patient in train and test."""
    assert data.patient_id(name) == patient and data.label_from_name(name) == label


def _example_groups() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    groups = np.repeat([f"g{i}" for i in range(12)], rng.integers(1, 4, 12))
    return np.array([int(g[1:]) % 2 for g in groups]), groups


def test_grouped_split_is_pinned_for_a_seed():
    """Caches are keyed by (files, seed, FORMAT_VERSION): a change to the split's search must bump FORMAT_VERSION,
    so the split of a given seed is pinned here (and the fractions are relative: 3:1 is 0.75/0.25)."""
    labels, groups = _example_groups()
    fr = {"train": 0.6, "val": 0.2, "test": 0.2}
    t, v, e = "train", "val", "test"
    assert data.grouped_split(labels, groups, fr, seed=3).tolist() == \
        [t, t, t, t, t, t, v, e, e, e, v, v, t, t, e, e, v, t, t, t, v, t, t, t]
    assert data.grouped_split(labels, groups, fr, seed=3, attempts=1).tolist() == \
        [t, t, t, t, t, t, v, e, e, e, e, e, t, t, v, v, v, t, t, t, t, t, v, v]
    assert data.FORMAT_VERSION == 1, "the pinned splits above belong to format 1: update them with the version"
    assert np.array_equal(data.grouped_split(labels, groups, {"train": 3, "val": 1}, seed=3),
                          data.grouped_split(labels, groups, {"train": 0.75, "val": 0.25}, seed=3))


def test_flat_folder_is_split_60_20_20_by_patient_and_says_so(tmp_path):
    # 10 NORMAL patients (1 image each), 5 PNEUMONIA patients (2 each): 6/2/2 images per class is reachable exactly
    ds = data.load(data.prepare("folder", path=make_folder(tmp_path / "flat", flat_k=10), out=tmp_path / "f.npz",
                                progress=False))
    expected = {"train": {"NORMAL": 6, "PNEUMONIA": 6}, "val": {"NORMAL": 2, "PNEUMONIA": 2},
                "test": {"NORMAL": 2, "PNEUMONIA": 2}}
    assert data.counts(ds) == ds.manifest["counts"] == expected
    assert ds.manifest["split_policy"] == ("no official test split: grouped (patient) stratified train/val/test split "
                                           "with fractions {'train': 0.6, 'val': 0.2, 'test': 0.2} and seed 0")
    assert data.leakage_report(ds)["n_shared_patients"] == 0


def test_folder_with_official_splits_keeps_test(tmp_path):
    root = make_folder(tmp_path / "tree", splits={"train": 10, "val": 2, "test": 3})
    # a test patient also present in train: its train image must be dropped (no leakage)
    (root / "train" / "PNEUMONIA" / "person901_virus_1.jpeg").write_bytes(jpeg_bytes(fake_xray(4242)))
    out = data.prepare("folder", path=root, progress=False)
    assert out == Path(os.environ["CXR_DATA_DIR"]) / "folder-64.npz"
    ds = data.load(out)
    test_paths = sorted(e["path"] for e in ds.manifest["images"] if e["split"] == "test")
    assert test_paths == sorted(p.relative_to(root).as_posix() for p in (root / "test").rglob("*.jpeg"))
    assert ds.manifest["excluded"] == [{"path": "train/PNEUMONIA/person901_virus_1.jpeg",
                                         "reason": "patient also in the official test split"}]
    assert data.leakage_report(ds)["n_shared_patients"] == 0
    c = data.counts(ds)
    assert c["test"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert sum(c["train"].values()) + sum(c["val"].values()) == 24 and min(c["val"].values()) >= 1


@pytest.mark.xfail(strict=True, reason="grouped_split's greedy fill never tries a split that gives the small splits "
                                       "one group each, so its empty-split penalty cannot act (found by mutation testing)")
def test_grouped_split_gives_every_split_each_class_when_there_are_enough_patients():
    # 3 patients per class and 60/20/20: one patient per split and class is possible (and what the docstring promises)
    labels, groups = np.array([0, 0, 0, 1, 1, 1]), np.array(["n1", "n2", "n3", "p1", "p2", "p3"])
    s = data.grouped_split(labels, groups, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert sorted(s[labels == 0]) == sorted(s[labels == 1]) == ["test", "train", "val"]


def test_duplicate_audit_within_and_across(tmp_path):
    root = make_folder(tmp_path / "d", flat_k=8)
    src = (root / "NORMAL" / "IM-0000-0001.jpeg").read_bytes()
    for i in (90, 91, 92, 93, 94, 95):  # six copies under other patient ids: some land in another split
        (root / "NORMAL" / f"IM-{i:04d}-0001.jpeg").write_bytes(src)
    ds = data.load(data.prepare("folder", path=root, progress=False))
    rep = data.leakage_report(ds)
    assert len(rep["pixel_groups"]) == 1 and len(rep["pixel_groups"][0]["indices"]) == 7
    assert len(rep["file_groups"]) == 1
    g = rep["pixel_groups"][0]
    assert g["splits"] == ["train", "val"] and g["across_splits"] is True  # the seed-0 split puts copies in both
    assert rep["pixel_groups_across_splits"] == 1 and rep["pixel_groups_within_split"] == 0
    assert ds.manifest["duplicates"]["pixel_groups"][0]["indices"] == g["indices"]
