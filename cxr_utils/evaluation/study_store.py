"""A study's finished classifiers on disk, so that a study killed at any moment resumes with what is done.

Every classifier seed a study tests is written at once, atomically, to `OUT/entries/<name>.json`, one file per
(protocol, synthetic training images, synthetic ratio, seed). A rerun with the same inputs reads them back instead of
training again, and `results.json` is assembled from them, so a resumed study writes what an uninterrupted one does.

An entry is reused only if every input that decides its classifier is the same (its `identity`):
- the real data: a sha256 of the train/val/test images and labels the study reads (not of the .npz file, whose zip
  headers change when the same cache is rebuilt);
- the synthetic images it trains on: a sha256 of the exact per-class subset its ratio takes from the folder (so a
  larger re-export of the same generator and seed keeps the entries, other images in the folder do not);
- the classifier settings (`EvalConfig`, with the precision resolved on this machine, without `bootstrap`, which only
  the summary reads, and without the base `seed`: the entry's own seed is part of it);
- the VGG16 weights (ImageNet or random init, and which copy);
- the protocol, the ratio and the seed.
Entries made with other inputs are never mixed in: they are moved to `OUT/entries-stale/<UTC time>/` with one line
saying what changed. Entries with the same inputs that this run does not ask for (fewer seeds, another ratio, a
synthetic folder this study does not read) stay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_json, read_json

ENTRIES = "entries"
STALE = "entries-stale"
FORMAT = 1
NOT_IN_IDENTITY = ("bootstrap", "seed")  # EvalConfig fields no single classifier depends on


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays' dtypes, shapes and bytes, in order (content, not file, identity)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def shared_inputs(real: Mapping[str, tuple[np.ndarray, np.ndarray]], cfg: Any, precision: str, weights: str,
                  weights_source: str) -> dict[str, Any]:
    """The inputs every entry of a study shares: format, real data digest, classifier settings, weights."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_IDENTITY}
    settings["precision"] = precision  # resolved: "auto" on a GPU and on this CPU are different classifiers
    return {"format": FORMAT,
            "real_sha256": array_digest(*(a for s in ("train", "val", "test") for a in real[s])),
            "classifier": settings, "weights": {"weights": weights, "weights_source": weights_source}}


def identity(shared: Mapping[str, Any], protocol: str, ratio: float | None, seed: int,
             synthetic_sha256: str | None) -> dict[str, Any]:
    """Everything that decides one classifier seed's result (see the module docstring)."""
    return {**shared, "protocol": protocol, "synthetic_ratio": ratio, "synthetic_sha256": synthetic_sha256,
            "seed": int(seed)}


def entry_name(ident: Mapping[str, Any]) -> str:
    """'tstr-x1-seed0-<12 hex>.json': readable, and unique per identity."""
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    ratio = f"-x{ident['synthetic_ratio']:g}" if ident["synthetic_ratio"] is not None else ""
    return f"{ident['protocol']}{ratio}-seed{ident['seed']}-{digest}.json"


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], folder: str | None, folders: Mapping[str, str]) -> list[str]:
    """What differs between an old entry's shared inputs and this study's, in words."""
    if old.get("format") != new["format"]:
        return [f"entry format {old.get('format')} (this version writes {new['format']})"]
    out = []
    if old.get("real_sha256") != new["real_sha256"]:
        out.append("the real data (another cache, or other images in it)")
    oc, nc = old.get("classifier") or {}, new["classifier"]
    diff = [f"{k} {oc.get(k)} -> {nc.get(k)}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
    if diff:
        out.append("classifier settings: " + ", ".join(diff))
    if old.get("weights") != new["weights"]:
        out.append(f"VGG16 weights: {(old.get('weights') or {}).get('weights_source')} -> {new['weights']['weights_source']}")
    if folder is not None and not out:
        out.append(f"other images in the synthetic folder {folder}")
    return out


@dataclasses.dataclass
class Resume:
    """What a study found in OUT/entries before training."""

    done: dict[str, dict[str, Any]]  # entry name -> the per-seed result (evaluation.run_protocol's entry)
    planned: int  # classifier seeds this study needs
    stale: list[str]  # entry files set aside (made with other inputs)
    stale_dir: Path | None
    reasons: list[str]  # what changed, for the stale ones
    kept: int  # entries with the same inputs this study does not ask for (left in place)

    def line(self, entries_dir: Path) -> str:
        """The one line a study prints about resuming."""
        n = len(self.done)
        if n == 0:
            return (f"study: {self.planned} result(s) to train; each is saved to {entries_dir} as soon as it is tested "
                    f"(rerun the same study to resume after an interruption)")
        if n == self.planned:
            return f"study: all {n} results already done in {entries_dir} (same inputs); nothing to train"
        return (f"study: {n} of {self.planned} results already done in {entries_dir} (same inputs); "
                f"training the other {self.planned - n}")


class EntryStore:
    """OUT/entries: read back the finished seeds, set aside the stale ones, write new ones atomically."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.dir = self.out / ENTRIES

    def files(self) -> list[Path]:
        """Entry files (a temp file a kill left inside a write starts with '.' and is ignored)."""
        return sorted(p for p in self.dir.glob("*.json") if not p.name.startswith(".")) if self.dir.is_dir() else []

    def clear(self) -> int:
        """Delete every entry (a fresh study); returns how many there were."""
        n = len(self.files())
        shutil.rmtree(self.dir, ignore_errors=True)
        return n

    def scan(self, planned: Mapping[str, Mapping[str, Any]], shared: Mapping[str, Any],
             folders: Mapping[str, str], now: Callable[[], dt.datetime] | None = None) -> Resume:
        """Match the files against the planned identities (entry name -> identity); move the stale ones aside.

        folders: synthetic folder (as the study names it) -> digest of all its images, to tell an entry of a folder
        whose images changed (stale) from one of the same folder at a ratio this study does not run (kept)."""
        done: dict[str, dict[str, Any]] = {}
        stale: list[Path] = []
        reasons: list[str] = []
        kept = 0
        for p in self.files():
            try:
                rec = read_json(p)
                ident, entry = rec["identity"], rec["entry"]
            except (OSError, ValueError, KeyError, TypeError):
                stale.append(p)
                reasons.append(f"unreadable entry file {p.name}")
                continue
            if p.name in planned and ident == planned[p.name]:
                done[p.name] = entry
                continue
            same_shared = all(ident.get(k) == v for k, v in shared.items())
            folder, fsha = rec.get("synthetic"), rec.get("synthetic_folder_sha256")
            # kept: the same inputs, a classifier this run does not ask for (another seed or ratio, or a folder this study
            # does not read: reusing it later still needs its exact synthetic subset, so keeping it never mixes)
            if same_shared and (ident.get("synthetic_sha256") is None or fsha in folders.values() or folder not in folders) \
                    and p.name == entry_name(ident):
                kept += 1
                continue
            stale.append(p)
            changed = _changes(ident, shared, folder, folders) or [f"entry {p.name} does not match its inputs"]
            reasons += [r for r in changed if r not in reasons]  # one reason for many entries is said once
        stale_dir = None
        if stale:
            stamp = (now or (lambda: dt.datetime.now(dt.UTC)))().strftime("%Y%m%d-%H%M%S")
            stale_dir = self.out / STALE / stamp
            stale_dir.mkdir(parents=True, exist_ok=True)
            for p in stale:
                os.replace(p, stale_dir / p.name)
        return Resume(done, len(planned), [p.name for p in stale], stale_dir, reasons, kept)

    def write(self, ident: Mapping[str, Any], entry: Mapping[str, Any], synthetic: str | None,
              synthetic_folder_sha256: str | None) -> Path:
        """One finished classifier seed, atomically (a kill leaves the old state or the whole file)."""
        return atomic_write_json(self.dir / entry_name(ident), {
            "identity": dict(ident), "synthetic": synthetic, "synthetic_folder_sha256": synthetic_folder_sha256,
            "entry": dict(entry)})


def stale_line(res: Resume, entries_dir: Path) -> str | None:
    """The one line about entries set aside, or None."""
    if not res.stale:
        return None
    return (f"study: {len(res.stale)} result(s) in {entries_dir} were made with other inputs "
            f"({'; '.join(res.reasons)}); set aside in {res.stale_dir}, never mixed with this study "
            f"(delete that folder when you no longer need them)")


def planned_identities(shared: Mapping[str, Any], plan: Sequence[tuple[str, str | None, float | None]], seeds: Sequence[int],
                       subset_sha: Mapping[tuple[str, float], str]) -> dict[tuple[str, str | None, float | None, int], dict[str, Any]]:
    """(protocol, folder, ratio, seed) -> identity for every classifier seed of a plan (study.plan_entries)."""
    return {(p, f, r, s): identity(shared, p, r, s, subset_sha[(f, r)] if f is not None else None)  # type: ignore[index]
            for p, f, r in plan for s in seeds}
