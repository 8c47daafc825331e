"""Splits: class from a file name, patient id from a file name, and the grouped split that keeps each patient in one split.

A source with an official test split keeps it; the rest is redrawn grouped by patient and stratified by class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from ..config import CLASS_NAMES

SPLITS: tuple[str, ...] = ("train", "val", "test")

VAL_FRACTION = 0.2  # of the images that are not official test
TEST_FRACTION = 0.2  # only for sources without an official test split
SPLIT_ATTEMPTS = 64  # seeded shuffles tried by the grouped split; the most balanced wins
# What a patient id named both in the official test split and in train/val means. Kaggle's names hold one numbered
# series per diagnosis (personN_bacteria_*, personN_virus_*, IM-N, NORMAL2-IM-N); its test split took whole series
# blocks (virus persons 1-79 and 1608-1685, bacteria persons 78-175, IM-0001..0111, NORMAL2-IM-0007..0381), and the
# authors state the test patients are independent of the training ones (Kermany et al. 2018, Cell, STAR Methods): a
# shared number in another series is another child. "series" (the default) drops the train/val images of a series
# the test split also holds (the same number and diagnosis); "exclude" drops every shared number (format 1's rule);
# "keep" drops nothing. README "Data" gives the sources.
TEST_PATIENT_RULES: tuple[str, ...] = ("series", "keep", "exclude")
DEFAULT_TEST_PATIENTS = "series"

_PERSON_RE = re.compile(r"(person\d+)_", re.IGNORECASE)
_IM_RE = re.compile(r"(IM-\d+)", re.IGNORECASE)
_PERSON_SERIES_RE = re.compile(r"(person\d+_(?:bacteria|virus))", re.IGNORECASE)
_IM_SERIES_RE = re.compile(r"((?:NORMAL\d*-)?IM-\d+)", re.IGNORECASE)


def patient_id(filename: str) -> str | None:
    """Patient id from a Kaggle-style name: `personNNN` (pneumonia) or `IM-NNNN` (normal); None if absent."""
    name = PurePosixPath(filename).name
    m = _PERSON_RE.search(name)
    if m:
        return m.group(1).lower()
    m = _IM_RE.search(name)
    if m:
        # NORMAL2-IM-1427 and IM-1427 share the id on purpose: merging groups can only reduce leakage
        return m.group(1).upper()
    return None


def series_id(filename: str) -> str | None:
    """The numbered series a Kaggle name belongs to: `personNNN_bacteria` / `personNNN_virus`, `IM-NNNN` or
    `NORMAL2-IM-NNNN` (one number, one diagnosis list); the patient id when the name has no diagnosis word; None if
    neither."""
    name = PurePosixPath(filename).name
    m = _PERSON_SERIES_RE.search(name) or _IM_SERIES_RE.search(name)
    if m:
        return m.group(1).lower() if m.re is _PERSON_SERIES_RE else m.group(1).upper()
    return patient_id(filename)


def label_from_name(filename: str) -> int | None:
    """Class from a flat Kaggle file name: NORMAL* / IM-* -> 0, person*_bacteria|virus -> 1."""
    name = PurePosixPath(filename).name.upper()
    if name.startswith("PERSON") or "BACTERIA" in name or "VIRUS" in name:
        return 1
    if name.startswith("NORMAL") or name.startswith("IM-"):
        return 0
    return None


def _greedy_fill(order: np.ndarray, g_label: np.ndarray, g_size: np.ndarray, fr: np.ndarray,
                 n_per_stratum: dict[int, int], seeded: Sequence[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """One attempt: the first groups (in `order`) of each `seeded` class go one to each split, then every other group
    goes to the split with the largest deficit of its class."""
    assign = np.full(len(order), -1, dtype=np.int64)
    counts = {c: np.zeros(len(fr)) for c in n_per_stratum}
    for c in seeded:
        for k, g in enumerate(order[g_label[order] == c][:len(fr)]):
            assign[g] = k
            counts[c][k] += g_size[g]
    for g in order:
        if assign[g] >= 0:
            continue
        c = g_label[g]
        k = int(np.argmax(fr * n_per_stratum[c] - counts[c]))  # ties -> first split in `fractions` order
        assign[g] = k
        counts[c][k] += g_size[g]
    return assign, counts


def grouped_split(labels: Sequence[int], groups: Sequence[str], fractions: dict[str, float], seed: int = 0,
                  attempts: int = SPLIT_ATTEMPTS) -> np.ndarray:
    """Assign whole groups (patients) to splits, stratified by class, as close to `fractions` as possible.

    Each attempt shuffles the groups with the seeded RNG and fills, per class, the split with the largest deficit;
    the attempt closest to the targets wins, and a split lacking a class that has a group for every split is
    penalised. When even the best attempt lacks one (the greedy fill alone gives 3 patients at 60/20/20 train 2,
    val 1, test 0), as many attempts again seed every split with one group of each such class first; the penalty
    then prefers those. Deterministic for a given seed; splits that need no seeding are the ones format 1 drew.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups).astype(str)
    names = list(fractions)
    fr = np.array([fractions[n] for n in names], dtype=np.float64)
    fr = fr / fr.sum()
    uniq, inverse = np.unique(groups, return_inverse=True)
    g_size = np.bincount(inverse, minlength=len(uniq))
    # a patient's stratum is its majority class (ties -> lower label)
    n_cls = max(2, int(labels.max()) + 1) if len(labels) else 2
    per_group = np.bincount(inverse * n_cls + labels, minlength=len(uniq) * n_cls).reshape(len(uniq), n_cls)
    g_label = per_group.argmax(axis=1)  # one pass, not one scan of all labels per patient
    strata = sorted(set(g_label.tolist()))
    n_per_stratum = {c: int(g_size[g_label == c].sum()) for c in strata}
    can_fill = [c for c in strata if int((g_label == c).sum()) >= len(names)]  # a group for every split
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for seeded in ([], can_fill):
        if seeded and best_score < 1000.0:
            break  # the plain fill already gave every split each class that can have it
        for _ in range(max(1, attempts)):
            assign, counts = _greedy_fill(rng.permutation(len(uniq)), g_label, g_size, fr, n_per_stratum, seeded)
            score = sum(float(np.abs(counts[c] - fr * n_per_stratum[c]).sum()) for c in strata)
            score += 1000.0 * sum(int((counts[c] == 0).sum()) for c in can_fill)
            if score < best_score - 1e-9:
                best, best_score = assign, score
    assert best is not None
    return np.array(names, dtype=object)[best[inverse]].astype(str)


def split_counts(labels: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    """counts[split][class] from label and split arrays (every split and class listed, zeros included)."""
    return {s: {c: int(((split == s) & (labels == k)).sum()) for k, c in enumerate(CLASS_NAMES)} for s in SPLITS}


@dataclass
class SplitAssignment:
    """What `assign_splits` decided: split and keep mask per image, the stored patient ids, the policy text and
    the official-test overlap (ids and series shared by the official test and train/val, and what the rule did)."""

    split: np.ndarray
    keep: np.ndarray
    patient: np.ndarray
    policy: str
    test_overlap: dict[str, Any] | None


def describe_test_overlap(overlap: dict[str, Any] | None) -> str | None:
    """One line on the patient ids and series the official test split shares with train/val and what the rule did
    (None: no official test split)."""
    if overlap is None:
        return None
    o = overlap
    shared = (f"{o['shared_id_images']} train/val image(s) share one of {o['shared_ids']} patient number(s) with the "
              f"official test split, {o['shared_series_images']} of them one of {o['shared_series']} series (same "
              "number and diagnosis)")
    if o["rule"] == "keep":
        return f"test patients (keep): {shared}; all kept"
    return (f"test patients ({o['rule']}): {shared}; excluded {o['excluded_images']} image(s) of "
            f"{o['excluded_ids']} {'series' if o['rule'] == 'series' else 'patient number(s)'}")


_RULE_TEXT = {
    "series": ("train/val images of a series (patient number and diagnosis) the official test split also holds are "
               "dropped; other ids of the official test split are numbered apart (stored as test:<id>)"),
    "exclude": "train/val images whose patient id also occurs in the official test split are dropped",
    "keep": ("patient ids of the official test split are numbered apart from train/val (stored as test:<id>), so "
             "train/val images that share such an id are kept"),
}


def assign_splits(labels: np.ndarray, patients: np.ndarray, official: Sequence[str | None], seed: int,
                  test_patients: str = DEFAULT_TEST_PATIENTS, series: Sequence[str] | None = None) -> SplitAssignment:
    """Official test untouched, the rest grouped + stratified; `test_patients` (TEST_PATIENT_RULES) says which
    train/val images an official test image excludes: those of its series (`series`: one per image, default the
    patient ids), of its patient id, or none."""
    if test_patients not in TEST_PATIENT_RULES:
        raise ValueError(f"test_patients {test_patients!r}: choose one of {TEST_PATIENT_RULES}")
    official = np.array([o or "" for o in official], dtype=object)
    patients = np.asarray(patients, dtype=object).copy()
    series = np.asarray(series if series is not None else patients, dtype=object)
    keep = np.ones(len(labels), dtype=bool)
    split = np.empty(len(labels), dtype=object)
    if not (official == "test").any():
        fr = {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6), "val": VAL_FRACTION, "test": TEST_FRACTION}
        split[:] = grouped_split(labels, patients, fr, seed)
        policy = (f"no official test split: grouped (patient) stratified train/val/test split with fractions "
                  f"{fr} and seed {seed}")
        return SplitAssignment(split.astype(str), keep, patients.astype(str), policy, None)
    test = official == "test"
    split[test] = "test"
    shared_ids = set(patients[test].tolist()) & set(patients[~test].tolist())
    shared_series = set(series[test].tolist()) & set(series[~test].tolist())
    id_hit = ~test & np.isin(patients, list(shared_ids))
    series_hit = ~test & np.isin(series, list(shared_series))
    hit, n_ids = {"exclude": (id_hit, len(shared_ids)), "series": (series_hit, len(shared_series)),
                  "keep": (np.zeros_like(test), 0)}[test_patients]
    keep = ~hit
    overlap = {"rule": test_patients, "shared_ids": len(shared_ids), "shared_id_images": int(id_hit.sum()),
               "shared_series": len(shared_series), "shared_series_images": int(series_hit.sum()),
               "excluded_images": int(hit.sum()), "excluded_ids": n_ids}
    if test_patients != "exclude":
        patients[test] = np.array([f"test:{p}" for p in patients[test]], dtype=object)
    pool = ~test & keep
    if pool.any():
        split[pool] = grouped_split(labels[pool], patients[pool], {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION}, seed)
    policy = (f"official test split kept; train/val redrawn from official train+val grouped by patient and stratified "
              f"by class (val fraction {VAL_FRACTION}, seed {seed}); test patients {test_patients}: "
              f"{_RULE_TEXT[test_patients]}")
    return SplitAssignment(split.astype(str), keep, patients.astype(str), policy, overlap)
