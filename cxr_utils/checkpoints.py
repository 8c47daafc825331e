"""The run's checkpoints and its lock: checkpoints/ckpt-EEEE.npz keyed by variable path, latest.json, restore.

A checkpoint holds all training state (G, D, EMA, both optimizers, the step) as one uncompressed .npz, written
atomically; the newest KEEP_CHECKPOINTS are kept. `restore` loads one into a GAN whatever precision, device count
or key format (the positional keys of older runs) wrote it. `RunLock` keeps two trainers out of one run folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import io as cio
from .errors import RunLocked, UserError
from .run_folder import CHECKPOINT_GLOB, RunFolder

if TYPE_CHECKING:
    from .gan import ConditionalGAN

KEEP_CHECKPOINTS = 2
LEGACY_KEY = re.compile(r"(g|d|ema|gopt|dopt)/\d{4}")  # the positional checkpoint keys written before issue 11


class RunLock:
    """An exclusive flock on run_dir/lock; the OS drops it when the process dies, even on kill -9."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = RunFolder(run_dir).lock
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{self.path.parent}: cannot create the run folder ({e.strerror}); choose another --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunLocked(f"{self.path.parent}: another trainer (pid {holder}) is using this run folder; "
                                f"wait for it to finish or choose another --run-dir") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Found(NamedTuple):
    """A checkpoint read back: its epoch, state (key -> array), file and meta data (precision, replicas)."""

    epoch: int
    state: dict[str, np.ndarray]
    path: Path
    meta: dict[str, Any]


class Checkpoints:
    """ckpt-EEEE.npz files (all state, written atomically) + latest.json; the newest KEEP_CHECKPOINTS are kept."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run = RunFolder(run_dir)
        self.dir = self.run.checkpoints

    def path(self, epoch: int) -> Path:
        return self.run.checkpoint(epoch)

    def save(self, epoch: int, state: dict[str, np.ndarray], meta: dict[str, str | int] | None = None) -> Path:
        """Write one checkpoint, then point latest.json at it, then prune old ones (each step atomic)."""
        p = self.path(epoch)
        arrays = {k.replace("/", "."): v for k, v in state.items()}
        arrays.update({f"meta_{k}": np.asarray(v) for k, v in (meta or {}).items()})  # str -> a unicode array, no pickle
        # uncompressed: zlib spends seconds on float weights for a few percent
        cio.atomic_save_npz(p, compress=False, meta_epoch=np.int64(epoch), **arrays)
        cio.atomic_write_json(self.run.latest_json, {"file": p.name, "epoch": epoch, "step": int(state["step"])})
        for old in self.files()[KEEP_CHECKPOINTS:]:
            with contextlib.suppress(OSError):
                old.unlink()
        return p

    def files(self) -> list[Path]:
        """Checkpoint files, newest epoch first (temp files of interrupted writes are ignored)."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.glob(CHECKPOINT_GLOB) if p.stem[5:].isdigit()]
        return sorted(found, key=self.epoch_of, reverse=True)

    @staticmethod
    def epoch_of(path: Path) -> int:
        """The epoch of a checkpoint file name (ckpt-EEEE.npz)."""
        return int(path.stem[5:])

    def load_latest(self) -> Found | None:
        """The newest readable checkpoint (epoch, state, path, meta), or None if there is none."""
        # newest first, whatever latest.json says: a kill between the checkpoint and its pointer leaves a newer,
        # complete file (latest.json is for people and tools; final names are only ever whole files)
        for p in self.files():
            try:
                return self.read(p)
            except Exception as e:  # a damaged file: fall back to the previous one
                print(f"warning: skipping unreadable checkpoint {p} ({type(e).__name__})", file=sys.stderr)
        return None

    @staticmethod
    def read(p: Path) -> Found:
        """One checkpoint file (epoch, state, path, meta); raises on a damaged file."""
        raw = cio.load_npz(p)
        epoch = int(raw.pop("meta_epoch"))
        meta = {k[5:]: raw.pop(k).item() for k in [k for k in raw if k.startswith("meta_")]}
        return Found(epoch, {k.replace(".", "/"): v for k, v in raw.items()}, p, meta)


def restore(gan: ConditionalGAN, found: Found, precision: str, replicas: int, saved_info: dict[str, Any]) -> str | None:
    """Load a checkpoint into `gan` whatever precision, device count or key format wrote it.

    Returns one line saying what changed ("resume: precision bf16 -> fp16: loss scale state created (initial
    scale 32768)"), or None when nothing did. A checkpoint that does not fit the model is a UserError naming it.
    """
    state, path, notes = found.state, found.path, []
    try:
        if any(LEGACY_KEY.fullmatch(k) for k in state):  # written before checkpoints were keyed by variable path
            mapping = gan.legacy_keys(state)
            state = {mapping.get(k, k): v for k, v in state.items()}
            notes.append("old positional checkpoint format, mapped onto today's variables by their order")
        diff = gan.set_state(state)
    except ValueError as e:
        raise UserError(f"{path}: {e}; resume with the run's own config or choose another --run-dir") from None
    was = found.meta.get("precision") or saved_info.get("precision_resolved") or "?"
    if diff["dropped"] or diff["created"] or was not in ("?", precision):
        change = f"precision {was} -> {precision}"
        if diff["created"]:
            change += f": loss scale state created (initial scale {_scales(diff['created'])})"
        if diff["dropped"]:
            change += f": loss scale state dropped (last scale {_scales(diff['dropped'])})"
        notes.append(change)
    was_replicas = found.meta.get("replicas") or saved_info.get("replicas")
    if was_replicas and int(was_replicas) != replicas:
        notes.append(f"devices {int(was_replicas)} -> {replicas}")
    return f"resume: {'; '.join(notes)}" if notes else None


def _scales(state: dict[str, np.ndarray]) -> str:
    """The loss scales in a state: "32768" when D's and G's agree, else "D 1024, G 2048"."""
    found = {k.split("_")[0].upper(): float(v) for k, v in sorted(state.items()) if k.endswith("/loss_scale/dynamic_scale")}
    if len(set(found.values())) == 1:
        return f"{next(iter(found.values())):g}"
    return ", ".join(f"{k} {v:g}" for k, v in found.items())
