"""prepare: the one entry point from a source to a current cache (locate, fetch if needed, decode, split, audit, write).

A cache whose fingerprint (source files, size, seed, split fractions, test-patient rule, format) still matches is
reused, not rebuilt; one built by an older format is rebuilt with a one-line note.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import CLASS_NAMES, SIZES, data_dir
from ..errors import UserError
from ..files import read_json
from . import sources
from .archive import KAGGLE_DATASET
from .audit import duplicate_audit
from .cache import cache_is_current, cache_key, format_note, recorded_test_patients, write_cache
from .decode import decode_files
from .folders import Scan, scan_folder
from .messages import log
from .splits import DEFAULT_TEST_PATIENTS, TEST_PATIENT_RULES, assign_splits, patient_id, series_id


@dataclass
class PrepareResult:
    """What `prepare` did: the cache path, the source used and why, and whether it was rebuilt."""

    path: Path
    source: str
    reason: str
    rebuilt: bool


def _build_from_scan(scan: Scan, source: str, size: int, seed: int, workers: int | None, progress: bool,
                     test_patients: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not scan.items:
        raise UserError(f"{scan.root}: empty dataset (no image files found); check the folder or pass another --path")
    results = decode_files([it.path for it in scan.items], size, workers=workers, progress=progress,
                           desc=f"{source} {size}px")
    images, entries, skipped = [], [], list(scan.skipped)
    methods: Counter[str] = Counter()
    for it, (pix, digest, how) in zip(scan.items, results, strict=True):
        if pix is None:
            skipped.append({"path": it.rel, "reason": how})
            continue
        methods[how] += 1
        pid = patient_id(it.path.name)
        images.append(pix)
        entries.append({"path": it.rel, "sha256": digest, "label": it.label, "class": CLASS_NAMES[it.label],
                        "patient": pid or f"file:{it.rel}", "patient_from_name": pid is not None,
                        "official_split": it.official})
    if not images:
        raise UserError(f"{scan.root}: empty dataset (no readable images; {len(skipped)} file(s) skipped)")
    labels = np.array([e["label"] for e in entries], dtype=np.int64)
    for k, cname in enumerate(CLASS_NAMES):
        if not (labels == k).any():
            raise UserError(f"{scan.root}: no readable {cname} images (all skipped); fix or replace that class folder")
    patients = np.array([e["patient"] for e in entries], dtype=object)
    series = [series_id(e["path"]) or e["patient"] for e in entries]
    a = assign_splits(labels, patients, [e["official_split"] for e in entries], seed, test_patients, series)
    keep = a.keep
    imgs = np.stack(images).astype(np.uint8)
    what = "series (patient number and diagnosis)" if test_patients == "series" else "patient id"
    excluded = [{"path": e["path"], "reason": f"{what} also in the official test split (test patients: {test_patients})"}
                for e, k in zip(entries, keep, strict=True) if not k]
    imgs, labels, patients, split = imgs[keep], labels[keep], a.patient[keep], a.split[keep]
    entries = [e for e, k in zip(entries, keep, strict=True) if k]
    for e, s, p in zip(entries, split, patients, strict=True):
        e["split"], e["patient"] = str(s), str(p)
    n_named = sum(e["patient_from_name"] for e in entries)
    arrays = {"images": imgs, "labels": labels, "split": split.astype(str), "patient": patients.astype(str)}
    meta = {"root": str(scan.root), "split_policy": a.policy, "excluded": excluded, "skipped": skipped,
            "test_overlap": a.test_overlap,
            "patient_ids": (f"parsed from file names (personNNN for pneumonia, IM-NNNN for normal) for {n_named} of "
                            f"{len(entries)} images" + ("; the others are each their own group" if n_named < len(entries) else "")
                            + ("; ids in the official test split are stored as test:<id>"
                               if a.test_overlap and test_patients != "exclude" else "")),
            "decode_methods": dict(sorted(methods.items())), "entries": entries,
            "file_sha256": [e["sha256"] for e in entries], "notes": scan.notes}
    return arrays, meta


def _write_cache(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], source: str, reason: str,
                 size: int, seed: int, key: str, origin: dict[str, Any], test_patients: str) -> None:
    meta["test_patients"] = test_patients  # recorded for every source, as it is part of every cache key
    dup = duplicate_audit(arrays["images"], arrays["split"], [e["path"] for e in meta["entries"]], meta.pop("file_sha256"))
    write_cache(out, arrays, meta, source, reason, size, seed, key, origin, dup)


def _prepare_one(source: str, reason: str, path: str | os.PathLike | None, size: int, out: Path | None,
                 workers: int | None, seed: int, force: bool, progress: bool, test_patients: str | None,
                 ) -> PrepareResult:
    out = Path(out) if out is not None else data_dir() / f"{source}-{size}.npz"
    # no rule given: the one this cache was built with (so notebooks 02-04 keep notebook 01's choice), else the default
    test_patients = test_patients or recorded_test_patients(out) or DEFAULT_TEST_PATIENTS
    old = format_note(out) if out.is_file() else None
    if old:  # said before any download: a cache of another format is never reused (nor mixed with a current one)
        log(f"{source}: cache {out} was built by {old}: rebuilding")
    origin: dict[str, Any] = {"source": source, "path": str(path) if path is not None else None}
    # 1) locate the raw input without downloading, to answer "is the cache current?" cheaply
    raw: Path | None = None
    if source == "sample":
        raw = sources.sample_root() if (sources.sample_root() / "SOURCE.json").is_file() else None
    elif source == "kaggle":
        raw = None  # decided after sources.fetch_kaggle (cheap when already extracted)
    elif source == "medmnist":
        cand = Path(path) if path is not None else sources.raw_dir() / "medmnist" / sources.MEDMNIST_FILE
        raw = cand if cand.is_file() else None
        if path is not None and raw is None:
            raise UserError(f"--path {cand}: file not found; pass {sources.MEDMNIST_FILE} or omit --path to download it")
    elif source == "folder":
        if path is None:
            raise UserError("--source folder needs --path FOLDER (holding NORMAL/ and PNEUMONIA/)")
        raw = Path(path)
        if not raw.is_dir():
            raise UserError(f"--path {raw}: folder not found; pass a folder holding NORMAL/ and PNEUMONIA/")
    if source == "kaggle":
        if path is None and sources.kaggle_local_tree() is None and not force \
                and cache_is_current(out, None, source, size, seed, test_patients):
            return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
        raw, stats = sources.fetch_kaggle(path, progress=progress)
        origin.update(dataset=KAGGLE_DATASET, archive=stats)
    if raw is None and not force and source in ("sample", "medmnist") and path is None \
            and cache_is_current(out, None, source, size, seed, test_patients):
        # the raw download is gone but it is pinned (sha256 / MD5): the cache built from it is still current
        return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
    # 2) fetch if needed
    if source == "sample":
        if raw is None:
            raw = sources.fetch_sample(path)
        origin.update(read_json(raw / "SOURCE.json"))
    elif source == "medmnist" and raw is None:
        raw = sources.fetch_medmnist()
        origin.update(url=sources.MEDMNIST_URL, md5_expected=sources.MEDMNIST_MD5)
    assert raw is not None
    fp = sources.fingerprint_file(raw) if source == "medmnist" else sources.fingerprint_tree(raw)
    key = cache_key(source, size, seed, fp, test_patients)
    if not force and cache_is_current(out, key, source, size, seed, test_patients):
        return PrepareResult(out, source, reason + "; cache is current", False)
    # 3) build
    if out.is_file() and not old:
        log(f"{source}: cache {out} {'was forced' if force else 'is stale (source files or settings changed)'}; rebuilding")
    if source == "medmnist":
        arrays, meta = sources.build_medmnist(raw, size)
    else:
        flag = "--path" if path is not None else source
        scan = scan_folder(raw, flag=flag)
        if source == "sample":
            scan.notes.append("all 16 images come from the Kaggle val split; the train/val/test split is redrawn (see the split policy)")
        arrays, meta = _build_from_scan(scan, source, size, seed, workers, progress, test_patients)
    _write_cache(out, arrays, meta, source, reason, size, seed, key, origin, test_patients)
    return PrepareResult(out, source, reason, True)


def prepare_verbose(source: str = "auto", path: str | os.PathLike | None = None, size: int = 64,
                    out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
                    force: bool = False, progress: bool = True, test_patients: str | None = None,
                    ) -> PrepareResult:
    """Like `prepare` but returns the source used, why, and whether the cache was rebuilt."""
    if test_patients is not None and test_patients not in TEST_PATIENT_RULES:
        raise UserError(f"--test-patients {test_patients}: unknown; choose {', '.join(TEST_PATIENT_RULES[:-1])} or "
                        f"{TEST_PATIENT_RULES[-1]}")
    if source not in sources.SOURCES:
        raise UserError(f"--source {source}: unknown; choose one of {', '.join(sources.SOURCES)}")
    if size not in SIZES:
        raise UserError(f"--size {size}: not supported; choose one of {', '.join(map(str, SIZES))}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1")
    outp = Path(out) if out is not None else None
    if outp is not None and outp.suffix != ".npz":
        raise UserError(f"--out {outp}: must end in .npz")
    if source != "auto":
        res = _prepare_one(source, f"--source {source}", path, size, outp, workers, seed, force, progress, test_patients)
    else:
        if path is not None:
            raise UserError("--path needs an explicit --source (kaggle, medmnist, folder or sample)")
        errors = []
        res = None
        for cand, why in sources.resolve_auto():
            log(f"auto: trying {cand}: {why}")
            try:
                res = _prepare_one(cand, f"auto: {why}", None, size, outp, workers, seed, force, progress, test_patients)
                break
            except sources.NetworkError as e:
                errors.append(str(e))
                log(f"auto: {cand} failed: {e}")
        if res is None:
            raise sources.NetworkError("auto: no source could be used (" + " | ".join(errors) + ")")
    log(f"source: {res.source} ({res.reason}) -> {res.path}")
    return res


def prepare(source: str = "auto", path: str | os.PathLike | None = None, size: int = 64,
            out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
            force: bool = False, progress: bool = True, test_patients: str | None = None) -> Path:
    """Build (or reuse, when current) the cached dataset from a source; returns the .npz path.

    test_patients: which train/val images an official test image excludes: "series" (those of the same numbered
    series, i.e. patient number and diagnosis; Kaggle numbers each diagnosis list apart), "exclude" (every image of a
    shared patient number) or "keep" (none); None: the rule the cache at `out` was built with, else "series". Part of
    the cache key; the manifest keeps the counts (`describe_test_overlap` words them).
    """
    return prepare_verbose(source, path, size, out, workers, seed, force, progress, test_patients).path
