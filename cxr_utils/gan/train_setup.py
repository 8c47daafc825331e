"""The one way from (recipe, field overrides, data, run folder) to a GANConfig and the plan of a run.

The CLI (`python -m cxr_utils train`) and notebook 02 both call `assemble`, so the same inputs give the same config:

1. the base: a --config file if given; else, when an existing run folder is resumed, its config.json (fields it
   predates take the value its run trained with: config.LEGACY_VALUES); else GANConfig's defaults with a recipe
   (DEFAULT_RECIPE unless one is named). A resumed run keeps its own recipe: a named one that differs is a note.
2. smoke sizes (config.smoke_overrides) when `smoke` is true: the caller reads the switch (the CLI's --smoke or
   CXR_SMOKE, the notebook's SMOKE) and passes it;
3. the explicit field overrides (None = not given);
4. the data: image_size set to the cache's; for a new run without --config or smoke sizes, the batch size lowered to
   the training images (unless given) and the epochs planned (train.plan_epochs, unless given).

A field override that contradicts a resumed run's config.json is refused by `train` with one line naming the field.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import data
from .. import files as cio
from ..config import DEFAULT_RECIPE, GANConfig, recipe, saved_fields, smoke_overrides
from .checkpoints import Checkpoints
from .device import epoch_steps
from .fit import fit_batch_size, plan_epochs
from .run_folder import RunFolder


@dataclass(frozen=True)
class TrainPlan:
    """A run's config and what it will do on its data; `resume` goes to train.train_from_npz."""

    cfg: GANConfig
    resume: bool
    resumed_config: bool  # the base was the run folder's config.json
    recipe: str | None  # the recipe applied over the defaults (None: --config alone, or a resumed run's own)
    planned: bool  # batch size and epochs fitted to the data (a new run that named neither)
    per_class: dict[str, int]  # training images per class

    @property
    def n_train(self) -> int:
        return sum(self.per_class.values())

    @property
    def steps_per_epoch(self) -> int:
        return epoch_steps(self.n_train, self.cfg.batch_size)

    def describe(self) -> str:
        """One line: where the config came from, batch size, epochs and generator steps."""
        where = "the run's saved config.json" if self.resumed_config else f"recipe {self.recipe}" if self.recipe \
            else "the given config"
        plan = f" (planned for {self.n_train} training images)" if self.planned else ""
        return (f"{where}: batch size {self.cfg.batch_size}, {self.cfg.epochs:,} epochs = "
                f"{self.cfg.epochs * self.steps_per_epoch:,} generator steps{plan}")


def assemble(npz: str | os.PathLike, run_dir: str | os.PathLike, recipe_name: str | None = None,
             fields: dict[str, Any] | None = None, *, config_file: str | os.PathLike | None = None,
             smoke: bool = False, resume: bool | None = None) -> TrainPlan:
    """The GANConfig and plan of a run of the cache `npz` in `run_dir` (see the module docstring for the order).

    fields: GANConfig field overrides (None values are "not given"); resume: continue the run folder (None: if it
    holds a checkpoint, as notebook 02 does); smoke: the smoke sizes, read by the caller at call time.
    """
    fields = {k: v for k, v in (fields or {}).items() if v is not None}
    run = RunFolder(run_dir)
    if resume is None:
        resume = bool(Checkpoints(run.path).files())  # names only: the trainer itself loads the checkpoint
    saved = cio.read_json(run.config) if resume and run.config.is_file() else None
    cfg, used = _base(run, saved, recipe_name, config_file)
    if smoke:
        cfg = cfg.replace(**smoke_overrides())
    cfg = cfg.replace(**fields)
    images, labels = data.load(npz).subset("train")
    if images.ndim >= 3 and len(images) and images.shape[1] != cfg.image_size:
        print(f"note: image_size set to {images.shape[1]} to match {Path(npz).name}", file=sys.stderr)
        cfg = cfg.replace(image_size=int(images.shape[1]))
    planned = not (config_file or saved is not None or smoke)
    if planned and "batch_size" not in fields:
        cfg = cfg.replace(batch_size=fit_batch_size(len(labels), cfg.batch_size))
    if planned and "epochs" not in fields:
        cfg = cfg.replace(epochs=plan_epochs(len(labels), cfg.batch_size))
    counts = np.bincount(np.asarray(labels, np.int64), minlength=cfg.num_classes) if len(labels) else \
        np.zeros(cfg.num_classes, np.int64)
    per_class = {c: int(n) for c, n in zip(cfg.class_names, counts, strict=True)}
    return TrainPlan(cfg, bool(resume), saved is not None and not config_file, used,
                     planned and not {"batch_size", "epochs"} <= set(fields), per_class)


def _base(run: RunFolder, saved: dict[str, Any] | None, recipe_name: str | None,
          config_file: str | os.PathLike | None) -> tuple[GANConfig, str | None]:
    """(the config before smoke sizes and overrides, the recipe applied)."""
    if config_file:
        cfg = GANConfig.from_file(config_file)
        return (cfg.with_recipe(recipe_name), recipe_name) if recipe_name else (cfg, None)
    if saved is None:
        name = recipe_name or DEFAULT_RECIPE
        return GANConfig().with_recipe(name), name
    cfg = GANConfig.from_dict(saved_fields(saved))  # the run's own config.json wins over any recipe
    if recipe_name:
        differ = {k: v for k, v in recipe(recipe_name).items() if getattr(cfg, k) != v}
        if differ:
            print(f"note: {run.path} is resumed with its saved {run.config.name}; recipe {recipe_name} ("
                  + ", ".join(f"{k}={v!r}" for k, v in differ.items()) + ") applies to new runs only", file=sys.stderr)
    return cfg, None
