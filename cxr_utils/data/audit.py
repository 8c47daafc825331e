"""Audits of a dataset: counts per split and class, patients shared across splits, exact duplicates (pixels and files)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import CLASS_NAMES
from .cache import CXRDataset
from .splits import describe_test_overlap, split_counts


def _pixel_hash(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes(), usedforsecurity=False).hexdigest()


def _duplicate_groups(keys: Sequence[str], split: Sequence[str], paths: Sequence[str]) -> list[dict[str, Any]]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k:
            by[k].append(i)
    groups = []
    for k, idx in by.items():
        if len(idx) > 1:
            splits = sorted({str(split[i]) for i in idx})
            groups.append({"hash": k, "indices": idx, "paths": [paths[i] for i in idx], "splits": splits,
                           "across_splits": len(splits) > 1})
    return sorted(groups, key=lambda g: g["indices"][0])


def duplicate_audit(images: np.ndarray, split: Sequence[str], paths: Sequence[str],
                    file_sha256: Sequence[str] | None = None) -> dict[str, Any]:
    """Exact duplicates by cached-pixel hash (and by file sha256), within and across splits."""
    pix = _duplicate_groups([_pixel_hash(im) for im in images], split, paths)
    out: dict[str, Any] = {
        "method": "sha1 of the cached S x S uint8 pixels (exact duplicates after preprocessing)",
        "pixel_groups": pix,
        "pixel_groups_within_split": sum(not g["across_splits"] for g in pix),
        "pixel_groups_across_splits": sum(g["across_splits"] for g in pix),
    }
    if file_sha256 is not None:
        fg = _duplicate_groups(file_sha256, split, paths)
        out.update(file_groups=fg, file_groups_within_split=sum(not g["across_splits"] for g in fg),
                   file_groups_across_splits=sum(g["across_splits"] for g in fg))
    return out


def counts(ds: CXRDataset) -> dict[str, dict[str, int]]:
    """counts[split][class] -> number of images (every split and class listed, zeros included)."""
    return split_counts(ds.labels, ds.split)


def leakage_report(ds: CXRDataset) -> dict[str, Any]:
    """Patients shared across splits (must be none) and exact-duplicate groups within/across splits."""
    by_patient: dict[str, set[str]] = defaultdict(set)
    for p, s in zip(ds.patient.tolist(), ds.split.tolist(), strict=True):
        by_patient[p].add(s)
    shared = {p: sorted(s) for p, s in sorted(by_patient.items()) if len(s) > 1}
    entries = ds.manifest.get("images") or []
    paths = [e["path"] for e in entries] if len(entries) == len(ds) else [f"#{i}" for i in range(len(ds))]
    shas = [e.get("sha256", "") for e in entries] if len(entries) == len(ds) and ds.manifest.get("source") != "medmnist" else None
    dup = duplicate_audit(ds.images, ds.split, paths, shas)
    rep = {"n_images": len(ds), "n_patients": len(by_patient), "shared_patients": shared,
           "n_shared_patients": len(shared), **dup}
    rep["summary"] = (f"{len(ds)} images, {len(by_patient)} patient groups; patients in more than one split: {len(shared)}; "
                      f"duplicate pixel groups within a split: {dup['pixel_groups_within_split']}, "
                      f"across splits: {dup['pixel_groups_across_splits']}")
    return rep


def counts_table(c: dict[str, dict[str, int]]) -> str:
    """A plain-text table of counts[split][class] with totals."""
    head = ["split", *CLASS_NAMES, "total"]
    rows = [[s, *[str(c[s].get(k, 0)) for k in CLASS_NAMES], str(sum(c[s].values()))] for s in c]
    tot = [sum(c[s].get(k, 0) for s in c) for k in CLASS_NAMES]
    rows.append(["total", *map(str, tot), str(sum(tot))])
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt: Callable[[list[str]], str] = lambda r: "  ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(r))  # noqa: E731
    return "\n".join([fmt(head), *map(fmt, rows)])


def patient_rule_line(manifest: dict[str, Any]) -> str:
    """What the cache's test-patient rule did, in one line (`prepare` and notebook 01 print it)."""
    return describe_test_overlap(manifest.get("test_overlap")) or (
        f"test patients ({manifest.get('test_patients', 'not recorded')}): no official test split in this source, so "
        "nothing to act on")
