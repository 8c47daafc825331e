"""Splits: class from a file name, patient id from a file name, and the grouped split that keeps each patient in one split.

A source with an official test split keeps it; the rest is redrawn grouped by patient and stratified by class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

from ..config import CLASS_NAMES

SPLITS: tuple[str, ...] = ("train", "val", "test")

VAL_FRACTION = 0.2  # of the images that are not official test
TEST_FRACTION = 0.2  # only for sources without an official test split
SPLIT_ATTEMPTS = 64  # seeded shuffles tried by the grouped split; the most balanced wins

_PERSON_RE = re.compile(r"(person\d+)_", re.IGNORECASE)
_IM_RE = re.compile(r"(IM-\d+)", re.IGNORECASE)


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


def label_from_name(filename: str) -> int | None:
    """Class from a flat Kaggle file name: NORMAL* / IM-* -> 0, person*_bacteria|virus -> 1."""
    name = PurePosixPath(filename).name.upper()
    if name.startswith("PERSON") or "BACTERIA" in name or "VIRUS" in name:
        return 1
    if name.startswith("NORMAL") or name.startswith("IM-"):
        return 0
    return None


def grouped_split(labels: Sequence[int], groups: Sequence[str], fractions: dict[str, float], seed: int = 0,
                  attempts: int = SPLIT_ATTEMPTS) -> np.ndarray:
    """Assign whole groups (patients) to splits, stratified by class, as close to `fractions` as possible.

    Each attempt shuffles the groups with the seeded RNG and fills, per class, the split with the largest
    deficit; the attempt closest to the targets wins (a split lacking a class that could have it is penalised).
    Deterministic for a given seed.
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
    groups_per_stratum = {c: int((g_label == c).sum()) for c in strata}
    rng = np.random.default_rng(seed)
    best, best_score = None, np.inf
    for _ in range(max(1, attempts)):
        order = rng.permutation(len(uniq))
        assign = np.empty(len(uniq), dtype=np.int64)
        counts = {c: np.zeros(len(names)) for c in strata}
        for g in order:
            c = g_label[g]
            deficit = fr * n_per_stratum[c] - counts[c]
            k = int(np.argmax(deficit))  # ties -> first split in `fractions` order
            assign[g] = k
            counts[c][k] += g_size[g]
        score = 0.0
        for c in strata:
            score += float(np.abs(counts[c] - fr * n_per_stratum[c]).sum())
            if groups_per_stratum[c] >= len(names):
                score += 1000.0 * int((counts[c] == 0).sum())
        if score < best_score - 1e-9:
            best, best_score = assign.copy(), score
    assert best is not None
    return np.array(names, dtype=object)[best[inverse]].astype(str)


def split_counts(labels: np.ndarray, split: np.ndarray) -> dict[str, dict[str, int]]:
    """counts[split][class] from label and split arrays (every split and class listed, zeros included)."""
    return {s: {c: int(((split == s) & (labels == k)).sum()) for k, c in enumerate(CLASS_NAMES)} for s in SPLITS}


def assign_splits(labels: np.ndarray, patients: np.ndarray, official: Sequence[str | None], seed: int,
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """(split per image, keep mask, policy text): official test untouched, the rest grouped + stratified."""
    official = np.array([o or "" for o in official], dtype=object)
    keep = np.ones(len(labels), dtype=bool)
    split = np.empty(len(labels), dtype=object)
    has_test = bool((official == "test").any())
    if has_test:
        test = official == "test"
        split[test] = "test"
        # a patient already in the official test split must not reappear in train/val
        test_patients = set(patients[test].tolist())
        pool = ~test & np.array([p not in test_patients for p in patients])
        keep = test | pool
        if pool.any():
            split[pool] = grouped_split(labels[pool], patients[pool], {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION}, seed)
        policy = (f"official test split kept; train/val redrawn from official train+val grouped by patient and stratified "
                  f"by class (val fraction {VAL_FRACTION}, seed {seed}); images of patients in the official test are "
                  "dropped from train/val")
    else:
        fr = {"train": round(1 - VAL_FRACTION - TEST_FRACTION, 6), "val": VAL_FRACTION, "test": TEST_FRACTION}
        split[:] = grouped_split(labels, patients, fr, seed)
        policy = (f"no official test split: grouped (patient) stratified train/val/test split with fractions "
                  f"{fr} and seed {seed}")
    return split.astype(str), keep, policy
