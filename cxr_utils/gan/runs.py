"""The read side of a run folder: its config, the generator that best | last | an epoch names, its real images.

Everything here reads what `train` wrote (config.json, generator.keras, generator-best.keras + best.json,
checkpoints/) and never writes into the run; TensorFlow is imported only when a generator is loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import data
from .. import files as cio
from ..config import GANConfig, saved_fields
from ..errors import UserError
from . import tracker
from .checkpoints import Checkpoints, restore
from .run_folder import RunFolder

if TYPE_CHECKING:
    import keras


def config_of(saved: dict[str, Any]) -> GANConfig:
    """The GANConfig of a run's config.json (its fields sit at the top level, beside the "data" provenance); a field
    the file predates takes the value its run trained with (config.LEGACY_VALUES: label_prior "balanced")."""
    return GANConfig.from_dict(saved_fields(saved))


def generator_source(run_dir: str | os.PathLike, which: str | int | Path = "last") -> tuple[Path, str]:
    """The file holding the generator that `which` names, and a description of it.

    which: "last" (generator.keras, the EMA generator at the end of training), "best" (generator-best.keras, kept by
    the quality rule; generator.keras with a note when the run has none), an epoch with a checkpoint on disk, or a
    Path already resolved by this function (so a caller resolves once and loads exactly that file).
    """
    run_dir = Path(run_dir)
    if isinstance(which, Path):
        return which, which.name
    if isinstance(which, str) and which.isdigit():
        which = int(which)
    if isinstance(which, int):
        ckpts = Checkpoints(run_dir)
        p = ckpts.path(which)
        if not p.is_file():
            have = ", ".join(str(ckpts.epoch_of(f)) for f in reversed(ckpts.files())) or "none"
            raise UserError(f"--which {which}: {run_dir} has no checkpoint of epoch {which} (checkpoints on disk: {have}); "
                            f"use best, last or one of those epochs")
        return p, f"epoch {which} (EMA generator from {p.name})"
    if which not in ("best", "last"):
        raise UserError(f"--which {which!r}: use best, last or an epoch number")
    folder = RunFolder(run_dir)
    last = folder.generator
    if which == "best":
        best = tracker.load_best(run_dir)
        if best is not None and folder.best_generator.is_file():
            return folder.best_generator, f"best (epoch {best['epoch']}, {best['rule']})"
        if last.is_file():
            print(f"note: {run_dir} has no {tracker.BEST_FILE} (quality tracking was off, or the run predates it); "
                  f"using generator.keras (the last epoch)", file=sys.stderr)
    return last, "last (EMA generator at the end of training)"


def load_generator(run_dir: str | os.PathLike, which: str | int | Path = "last",
                   hint: str | None = None) -> tuple[keras.Model, GANConfig]:
    """The run's EMA generator named by `which` (see generator_source; safe_mode loading) and its GANConfig.

    Works on an unfinished run too (generator-best.keras and checkpoints exist before generator.keras does).
    hint: what a missing generator's error tells the user to do (default: the train command).
    """
    run_dir = Path(run_dir)
    cfg_path = RunFolder(run_dir).config
    src, _ = generator_source(run_dir, which)
    if hint is not None and not src.is_file():
        raise UserError(f"{run_dir}: no trained GAN here ({src.name} missing); {hint}")
    if not src.is_file() or not cfg_path.is_file():
        raise UserError(f"{run_dir}: no {src.name}/config.json; train first (python -m cxr_utils train --run-dir {run_dir} ...)")
    try:
        saved = cio.read_json(cfg_path)
    except (ValueError, OSError) as e:
        raise UserError(f"{cfg_path}: not readable JSON ({type(e).__name__}); restore it from the run's checkpoint folder "
                        f"or retrain") from None
    cfg = config_of(saved)
    if src.suffix == ".npz":
        return _generator_from_checkpoint(cfg, src), cfg
    import keras  # here, not at the top: reading a run's config or real images needs no TensorFlow

    from . import networks  # noqa: F401  registers the project's layers (ClassAffine): a new process knows them only so

    try:
        model = keras.models.load_model(src, safe_mode=True, compile=False)
    except Exception as e:  # any failure here means the file is not a generator that `train` wrote
        kind = "it holds a Lambda layer (code), which safe mode refuses to run" if "lambda" in str(e).lower() \
            else f"{type(e).__name__}"
        raise UserError(f"{src}: not a generator written by `train` ({kind}); retrain the run or restore the file") from None
    return model, cfg


def _generator_from_checkpoint(cfg: GANConfig, path: Path) -> keras.Model:
    """The EMA generator (float32) of one checkpoint file."""
    try:
        found = Checkpoints.read(path)
    except Exception as e:  # a damaged file
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); choose another --which") from None
    from .device import build_gan  # TensorFlow, only when a generator is read out of a checkpoint

    gan = build_gan(cfg, "fp32")
    restore(gan, found, "fp32", 1, {})  # any precision or device count that wrote it; a foreign file is a UserError
    return gan.ema_generator


def load_run(run_dir: str | os.PathLike, hint: str = "run notebooks/02_train_cgan.ipynb (or `python -m cxr_utils train`) first",
             which: str | int = "best") -> tuple[Any, Any]:
    """(EMA generator named by `which`: best | last | epoch, GANConfig) of a finished run; a missing run is one clear
    UserError with `hint`."""
    return load_generator(run_dir, which, hint=hint)


def cache_drift(run_dir: str | os.PathLike, npz: str | os.PathLike, digest: str | None = None) -> str | None:
    """One line if `npz` is not the cache the run was trained on (its sha256 differs from the one config.json
    recorded: rebuilt by a newer format, other files or another split rule since); None if it is, or if the run
    recorded none. `digest`: the npz's sha256 when the caller has it already."""
    cfg_path = RunFolder(run_dir).config
    recorded = ((cio.read_json(cfg_path) if cfg_path.is_file() else {}).get("data") or {}).get("npz_sha256")
    if not recorded:
        return None
    now = digest or cio.file_digest(npz)
    if now == recorded:
        return None
    return (f"{npz} is not the cache run {Path(run_dir).name} was trained on (sha256 {recorded[:12]}, now {now[:12]}): "
            "it was rebuilt since, so its train/val/test split may differ from the one the GAN saw")


def training_cache(run_dir: str | os.PathLike, source: str = "auto", size: int | None = None) -> Path:
    """The cache .npz a GAN run was trained on (named in its config.json), so real and synthetic images share size and
    split; if the run names none (or it moved), the one `data.prepare(source, size)` provides (size: the run's
    image_size, else 64). A cache that changed since the run (`cache_drift`) is returned with a one-line note on
    stderr: evaluating on it may test on images the GAN trained on."""
    cfg_path = RunFolder(run_dir).config
    saved = cio.read_json(cfg_path) if cfg_path.is_file() else {}
    npz = (saved.get("data") or {}).get("npz")
    if npz and Path(npz).is_file():
        found = Path(npz)
    else:
        found = data.prepare(source=source, size=int(size or saved.get("image_size", 64)), progress=False)
    drift = cache_drift(run_dir, found) if saved else None
    if drift:
        print(f"note: {drift}; an evaluation on it may test on images the GAN trained on (retrain the GAN on it for a "
              "clean one)", file=sys.stderr)
    return found


def real_images(run_dir: str | os.PathLike, split: str = "train", source: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Real images of one split of the cache a run was trained on -> (images uint8 (N,S,S), labels, where from).

    The cache is training_cache's, so the memorization check compares against exactly what the GAN saw.
    """
    npz = training_cache(run_dir, source)
    images, labels = data.load(npz).subset(split)
    # with max_per_class the GAN saw a seeded subset of the train split; all of it is the stricter check
    return images, labels, f"{Path(npz).name} ({split} split, {len(labels)} images)"
