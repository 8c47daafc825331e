"""The run's checkpoints and its lock: checkpoints/ckpt-EEEE.npz keyed by variable path, latest.json, restore.

A checkpoint holds all training state (G, D, EMA, both optimizers, the step) as one uncompressed .npz, written
atomically; the newest KEEP_CHECKPOINTS are kept. `restore` loads one into a GAN whatever precision, device count
or key format (the positional keys of older runs) wrote it. `RunLock` keeps two trainers out of one run folder.
The key mapping lives here too: `state_variables` names every variable of a ConditionalGAN by a stable path,
`get_state` / `set_state` move that state as numpy arrays, `legacy_keys` maps the positional format onto it.
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

from .. import files as cio
from ..errors import RunLocked, UserError
from .run_folder import CHECKPOINT_GLOB, RunFolder, checkpoint_epoch

if TYPE_CHECKING:
    import keras

    from .model import ConditionalGAN

KEEP_CHECKPOINTS = 2
LEGACY_KEY = re.compile(r"(g|d|ema|gopt|dopt)/\d{4}")  # the positional checkpoint keys written before issue 11


# ------------------------------------------------------------ the key of every variable of a checkpoint


def _models(gan: ConditionalGAN) -> tuple[tuple[str, keras.Model], ...]:
    """(role, model) pairs; a role names the model in checkpoint keys whatever the model's own name."""
    return (("generator", gan.generator), ("discriminator", gan.discriminator), ("ema_generator", gan.ema_generator))


def _optimizer_entries(prefix: str, opt: keras.optimizers.Optimizer,
                       model: keras.Model, role: str) -> list[tuple[str | None, keras.Variable]]:
    """(key, variable) for every variable of `opt` in its `variables` order; key None for learning rates.

    Keys: <prefix>/iteration, <prefix>/<role>/<variable path>/<slot> (Adam's momentum, velocity) and, under a
    LossScaleOptimizer (fp16), <prefix>/loss_scale/<name> for its own iteration, step_counter and dynamic_scale.
    """
    inner = getattr(opt, "inner_optimizer", None)
    base = inner if inner is not None else opt
    own = opt.variables[: len(opt.variables) - len(base.variables)] if inner is not None else []
    entries: list[tuple[str | None, keras.Variable]] = [
        (None if v.name == "learning_rate" else f"{prefix}/loss_scale/{v.name}", v) for v in own]
    # Keras names a slot "<reference path with / -> _>_<slot>": the longest matching reference owns it
    refs = sorted(((v.path.replace("/", "_") + "_", v.path) for v in model.trainable_variables), key=lambda r: -len(r[0]))
    for v in base.variables:
        if v.name == "learning_rate":
            entries.append((None, v))
        elif v.name == "iteration":
            entries.append((f"{prefix}/iteration", v))
        else:
            owner = next(((m, path) for m, path in refs if v.name.startswith(m)), None)
            if owner is None:
                raise ValueError(f"optimizer variable {v.path} belongs to no variable of the {role}")
            entries.append((f"{prefix}/{role}/{owner[1]}/{v.name[len(owner[0]):]}", v))
    return entries


def _optimizers(gan: ConditionalGAN) -> tuple[tuple[str, keras.optimizers.Optimizer, keras.Model, str], ...]:
    return (("g_opt", gan.g_optimizer, gan.generator, "generator"),
            ("d_opt", gan.d_optimizer, gan.discriminator, "discriminator"))


def state_variables(gan: ConditionalGAN) -> dict[str, keras.Variable]:
    """Every variable a bit-exact resume needs, keyed by its stable path (learning rates excluded: config rules).

    Model weights: <role>/<variable path> (generator/up0_conv/kernel); optimizer state: see _optimizer_entries.
    Keys do not depend on list order, so a checkpoint moves between precisions and device counts.
    """
    out: dict[str, keras.Variable] = {"step": gan.step}
    for role, model in _models(gan):
        for v in model.variables:
            key = f"{role}/{v.path}"
            if key in out and out[key] is not v:
                raise ValueError(f"two variables of the {role} share the path {v.path}; give their layers unique names")
            out[key] = v
    for prefix, opt, model, role in _optimizers(gan):
        out.update((k, v) for k, v in _optimizer_entries(prefix, opt, model, role) if k is not None)
    bad = [k for k in out if "." in k]
    if bad:  # checkpoint files store "/" as "."
        raise ValueError(f"variable paths must not contain '.': {bad[:3]}")
    return out


def legacy_keys(gan: ConditionalGAN, state: dict[str, np.ndarray]) -> dict[str, str]:
    """For a checkpoint of the positional format (g/0000, gopt/0003, ...): old key -> today's key.

    The old format numbered model.variables and optimizer.variables in list order (skipping learning rates), so
    the positions map onto today's models; an optimizer's layout (plain Adam, or Adam under a LossScaleOptimizer)
    is told apart by its number of positions. Raises ValueError when the counts fit no layout.
    """
    out: dict[str, str] = {}
    for old, (role, model) in zip(("g", "d", "ema"), _models(gan), strict=True):
        n_old = sum(1 for k in state if k.startswith(f"{old}/"))
        if n_old != len(model.variables):
            raise ValueError(f"old-format checkpoint has {n_old} {role} variables, the model has {len(model.variables)}")
        out.update({f"{old}/{i:04d}": f"{role}/{v.path}" for i, v in enumerate(model.variables)})
    for old, (prefix, opt, model, role) in zip(("gopt", "dopt"), _optimizers(gan), strict=True):
        base = getattr(opt, "inner_optimizer", opt)
        entries = _optimizer_entries(prefix, base, model, role)
        slots = [k for k, _ in entries if k is not None and k != f"{prefix}/iteration"]
        plain = [f"{prefix}/iteration", None, *slots]
        scaled = [f"{prefix}/loss_scale/iteration", None, f"{prefix}/loss_scale/step_counter",
                  f"{prefix}/loss_scale/dynamic_scale", f"{prefix}/iteration", None, *slots]
        idx = [int(k.split("/")[1]) for k in state if k.startswith(f"{old}/")]
        n_old = max(idx) + 1 if idx else 0
        layout = plain if n_old == len(plain) else scaled if n_old == len(scaled) else None
        if layout is None:
            raise ValueError(f"old-format checkpoint has {n_old} {role} optimizer positions, expected {len(plain)} "
                             f"(Adam) or {len(scaled)} (loss-scaled Adam)")
        out.update({f"{old}/{i:04d}": k for i, k in enumerate(layout) if k is not None})
    return out


def get_state(gan: ConditionalGAN) -> dict[str, np.ndarray]:
    """All state as named numpy arrays."""
    return {k: np.asarray(v.numpy()) for k, v in state_variables(gan).items()}


def set_state(gan: ConditionalGAN, state: dict[str, np.ndarray]) -> dict[str, Any]:
    """Restore from get_state() output (of any precision or device count); returns what differed.

    Loss-scale state (fp16) missing from the checkpoint keeps its initial values ("created"), loss-scale state this
    model has no optimizer for is ignored ("dropped", with its saved values); any other missing, extra or
    misshapen array is a ValueError. Values are cast to each variable's dtype.
    """
    import tensorflow as tf

    variables = state_variables(gan)
    is_scale = lambda k: "/loss_scale/" in k  # noqa: E731
    missing = sorted(k for k in set(variables) - set(state) if not is_scale(k))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} variables (e.g. {missing[:3]}): it was written by another model")
    extra = sorted(k for k in set(state) - set(variables) if not is_scale(k))
    if extra:
        raise ValueError(f"checkpoint has {len(extra)} variables this model lacks (e.g. {extra[:3]}): it was "
                         f"written by another model")
    for k, v in variables.items():
        if k not in state:
            continue
        a = np.asarray(state[k])
        if tuple(a.shape) != tuple(v.shape):
            raise ValueError(f"checkpoint variable {k} has shape {a.shape}, model expects {tuple(v.shape)}")
        v.assign(a if a.dtype.name == v.dtype else tf.cast(a, v.dtype))
    return {"created": {k: np.asarray(variables[k].numpy()) for k in variables if k not in state},
            "dropped": {k: np.asarray(state[k]) for k in state if k not in variables}}


# ------------------------------------------------------------ the files


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
        found = [p for p in self.dir.glob(CHECKPOINT_GLOB) if checkpoint_epoch(p) is not None]
        return sorted(found, key=self.epoch_of, reverse=True)

    @staticmethod
    def epoch_of(path: Path) -> int:
        """The epoch of a checkpoint file name (ckpt-EEEE.npz)."""
        epoch = checkpoint_epoch(path)
        if epoch is None:
            raise ValueError(f"not a checkpoint file name: {Path(path).name}")
        return epoch

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
            mapping = legacy_keys(gan, state)
            state = {mapping.get(k, k): v for k, v in state.items()}
            notes.append("old positional checkpoint format, mapped onto today's variables by their order")
        diff = set_state(gan, state)
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
