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
from .cache import CacheWrite, cache_is_current, cache_key, format_note, recorded_test_patients, write_cache
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


@dataclass(frozen=True)
class _Request:
    """One prepare call's settings, checked by prepare_verbose; the same for every source `auto` tries."""

    size: int
    seed: int
    workers: int | None
    force: bool
    progress: bool
    test_patients: str | None  # None: the rule the cache was built with, else DEFAULT_TEST_PATIENTS


@dataclass
class _Provenance:
    """What one source's cache is built from and recorded with: the source and why, the settings, the raw input,
    the cache key and the origin the manifest states (filled in as _prepare_one locates and fetches the input)."""

    source: str
    reason: str
    size: int
    seed: int
    test_patients: str
    origin: dict[str, Any]
    raw: Path | None = None
    key: str = ""


def _write_cache(out: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], w: _Provenance) -> None:
    meta["test_patients"] = w.test_patients  # recorded for every source, as it is part of every cache key
    dup = duplicate_audit(arrays["images"], arrays["split"], [e["path"] for e in meta["entries"]], meta.pop("file_sha256"))
    write_cache(out, CacheWrite(arrays, meta, w.source, w.reason, w.size, w.seed, w.key, w.origin, dup))


def _locate_raw(source: str, path: str | os.PathLike | None) -> Path | None:
    """The raw input already on disk, found without downloading (None: not here; kaggle: decided by fetch_kaggle)."""
    if source == "sample":
        return sources.sample_root() if (sources.sample_root() / "SOURCE.json").is_file() else None
    if source == "medmnist":
        cand = Path(path) if path is not None else sources.raw_dir() / "medmnist" / sources.MEDMNIST_FILE
        if path is not None and not cand.is_file():
            raise UserError(f"--path {cand}: file not found; pass {sources.MEDMNIST_FILE} or omit --path to download it")
        return cand if cand.is_file() else None
    if source == "folder":
        if path is None:
            raise UserError("--source folder needs --path FOLDER (holding NORMAL/ and PNEUMONIA/)")
        raw = Path(path)
        if not raw.is_dir():
            raise UserError(f"--path {raw}: folder not found; pass a folder holding NORMAL/ and PNEUMONIA/")
        return raw
    return None


def _fetch_raw(p: _Provenance, path: str | os.PathLike | None) -> Path:
    """Download the raw input of sample or medmnist if it is not here; the origin records where it came from."""
    raw = p.raw
    if p.source == "sample":
        if raw is None:
            raw = sources.fetch_sample(path)
        p.origin.update(read_json(raw / "SOURCE.json"))
    elif p.source == "medmnist" and raw is None:
        raw = sources.fetch_medmnist()
        p.origin.update(url=sources.MEDMNIST_URL, md5_expected=sources.MEDMNIST_MD5)
    assert raw is not None
    return raw


def _build(p: _Provenance, path: str | os.PathLike | None, req: _Request) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode, split and describe the raw input: the arrays and meta a cache is written from."""
    assert p.raw is not None
    if p.source == "medmnist":
        return sources.build_medmnist(p.raw, p.size)
    scan = scan_folder(p.raw, flag="--path" if path is not None else p.source)
    if p.source == "sample":
        scan.notes.append("all 16 images come from the Kaggle val split; the train/val/test split is redrawn (see the split policy)")
    return _build_from_scan(scan, p.source, p.size, p.seed, req.workers, req.progress, p.test_patients)


def _prepare_one(source: str, reason: str, path: str | os.PathLike | None, out: Path | None, req: _Request,
                 ) -> PrepareResult:
    out = Path(out) if out is not None else data_dir() / f"{source}-{req.size}.npz"
    # no rule given: the one this cache was built with (so notebooks 02-04 keep notebook 01's choice), else the default
    tp = req.test_patients or recorded_test_patients(out) or DEFAULT_TEST_PATIENTS
    p = _Provenance(source, reason, req.size, req.seed, tp, {"source": source, "path": str(path) if path is not None else None})
    old = format_note(out) if out.is_file() else None
    if old:  # said before any download: a cache of another format is never reused (nor mixed with a current one)
        log(f"{source}: cache {out} was built by {old}: rebuilding")
    # 1) locate the raw input without downloading, to answer "is the cache current?" cheaply
    p.raw = _locate_raw(source, path)
    if source == "kaggle":
        if path is None and sources.kaggle_local_tree() is None and not req.force \
                and cache_is_current(out, None, source, req.size, req.seed, tp):
            return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
        p.raw, stats = sources.fetch_kaggle(path, progress=req.progress)
        p.origin.update(dataset=KAGGLE_DATASET, archive=stats)
    if p.raw is None and not req.force and source in ("sample", "medmnist") and path is None \
            and cache_is_current(out, None, source, req.size, req.seed, tp):
        # the raw download is gone but it is pinned (sha256 / MD5): the cache built from it is still current
        return PrepareResult(out, source, reason + "; cached (raw files not present)", False)
    # 2) fetch if needed
    p.raw = _fetch_raw(p, path)
    fp = sources.fingerprint_file(p.raw) if source == "medmnist" else sources.fingerprint_tree(p.raw)
    p.key = cache_key(source, req.size, req.seed, fp, tp)
    if not req.force and cache_is_current(out, p.key, source, req.size, req.seed, tp):
        return PrepareResult(out, source, reason + "; cache is current", False)
    # 3) build
    if out.is_file() and not old:
        log(f"{source}: cache {out} {'was forced' if req.force else 'is stale (source files or settings changed)'}; rebuilding")
    arrays, meta = _build(p, path, req)
    _write_cache(out, arrays, meta, p)
    return PrepareResult(out, source, reason, True)


def _check_request(source: str, size: int, out: str | os.PathLike | None, workers: int | None,
                   test_patients: str | None) -> Path | None:
    """One clear line for a bad flag; the --out path (None: the default per source)."""
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
    return outp


def prepare_verbose(source: str = "auto", path: str | os.PathLike | None = None, size: int = 64,
                    out: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
                    force: bool = False, progress: bool = True, test_patients: str | None = None,
                    ) -> PrepareResult:
    """Like `prepare` but returns the source used, why, and whether the cache was rebuilt.

    Nine parameters: one per `prepare` flag of the CLI (`python -m cxr_utils prepare --help`), as notebook 01 passes
    them; inside they travel as one _Request."""
    outp = _check_request(source, size, out, workers, test_patients)
    req = _Request(size, seed, workers, force, progress, test_patients)
    if source != "auto":
        res = _prepare_one(source, f"--source {source}", path, outp, req)
    else:
        if path is not None:
            raise UserError("--path needs an explicit --source (kaggle, medmnist, folder or sample)")
        errors = []
        res = None
        for cand, why in sources.resolve_auto():
            log(f"auto: trying {cand}: {why}")
            try:
                res = _prepare_one(cand, f"auto: {why}", None, outp, req)
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

    Nine parameters: one per `prepare` flag of the CLI, the public face notebooks and scripts call by keyword.
    test_patients: which train/val images an official test image excludes: "series" (those of the same numbered
    series, i.e. patient number and diagnosis; Kaggle numbers each diagnosis list apart), "exclude" (every image of a
    shared patient number) or "keep" (none); None: the rule the cache at `out` was built with, else "series". Part of
    the cache key; the manifest keeps the counts (`describe_test_overlap` words them).
    """
    return prepare_verbose(source, path, size, out, workers, seed, force, progress, test_patients).path
