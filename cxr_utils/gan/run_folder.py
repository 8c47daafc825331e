"""The one owner of a run folder's layout: every file name `train` writes and `runs`, the quality tracker, the CLI
and the notebooks read.

    config.json               GANConfig fields at the top level, provenance under "data"
    metrics.csv               one row per epoch
    generator.keras           the EMA generator after the last epoch
    generator-best.keras      the EMA generator the quality rule kept, described by best.json
    quality.csv               one row per quality evaluation
    quality-baseline.json     the real-vs-real baseline the quality scores sit beside
    quality-classifier.keras  the quality probe's classifier (a resume scores alike)
    checkpoints/              ckpt-EEEE.npz (all training state) + latest.json
    samples/                  epoch-EEEE.png sample grids
    tb/                       TensorBoard event files
    lock                      the trainer's flock (checkpoints.RunLock)

Plain pathlib, no TensorFlow: anything may ask it (`RunFolder(RUN).metrics_csv`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.csv"
GENERATOR = "generator.keras"
BEST_GENERATOR = "generator-best.keras"
BEST_JSON = "best.json"
QUALITY = "quality.csv"
BASELINE = "quality-baseline.json"
CLASSIFIER = "quality-classifier.keras"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
SAMPLES = "samples"
TENSORBOARD = "tb"
LOCK = "lock"
# per-epoch files: one (prefix, suffix) each, from which the name of an epoch, the glob and owns()'s pattern follow
_CHECKPOINT = ("ckpt-", ".npz")
_GRID = ("epoch-", ".png")


def _epoch_name(kind: tuple[str, str], epoch: int) -> str:
    return f"{kind[0]}{epoch:04d}{kind[1]}"


def _epoch_pattern(kind: tuple[str, str]) -> str:
    return re.escape(kind[0]) + r"\d{4,}" + re.escape(kind[1])


def checkpoint_epoch(path: str | os.PathLike) -> int | None:
    """The epoch in a checkpoint file's name (ckpt-EEEE.npz), None for any other name."""
    m = re.fullmatch(re.escape(_CHECKPOINT[0]) + r"(\d+)" + re.escape(_CHECKPOINT[1]), Path(path).name)
    return int(m.group(1)) if m else None


CHECKPOINT_GLOB = "*".join(_CHECKPOINT)
GRID_GLOB = "*".join(_GRID)

# the files directly in the run folder, and the name patterns of the files in its sub-folders (tb/: TensorBoard's own)
FILES = (CONFIG, METRICS, GENERATOR, BEST_GENERATOR, BEST_JSON, QUALITY, BASELINE, CLASSIFIER, LOCK)
_IN_FOLDER = {CHECKPOINTS: re.compile(f"{_epoch_pattern(_CHECKPOINT)}|{re.escape(LATEST)}"),
              SAMPLES: re.compile(_epoch_pattern(_GRID)), TENSORBOARD: re.compile(r".+")}


class RunFolder:
    """The paths of one run folder's files; nothing is read or written here."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS

    @property
    def generator(self) -> Path:
        return self.path / GENERATOR

    @property
    def best_generator(self) -> Path:
        return self.path / BEST_GENERATOR

    @property
    def best_json(self) -> Path:
        return self.path / BEST_JSON

    @property
    def quality_csv(self) -> Path:
        return self.path / QUALITY

    @property
    def baseline(self) -> Path:
        return self.path / BASELINE

    @property
    def classifier(self) -> Path:
        return self.path / CLASSIFIER

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def latest_json(self) -> Path:
        return self.checkpoints / LATEST

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    def checkpoint(self, epoch: int) -> Path:
        """checkpoints/ckpt-EEEE.npz of one epoch."""
        return self.checkpoints / _epoch_name(_CHECKPOINT, epoch)

    def grid(self, epoch: int) -> Path:
        """samples/epoch-EEEE.png of one epoch."""
        return self.samples / _epoch_name(_GRID, epoch)

    def grids(self) -> list[Path]:
        """The sample grids on disk, oldest epoch first."""
        return sorted(self.samples.glob(GRID_GLOB))

    def owns(self, path: str | os.PathLike) -> bool:
        """True if `path` (inside the run folder) is one of the files this layout names."""
        rel = Path(path).resolve().relative_to(self.path.resolve()).parts
        if len(rel) == 1:
            return rel[0] in FILES or rel[0] in _IN_FOLDER
        return rel[0] in _IN_FOLDER and bool(_IN_FOLDER[rel[0]].fullmatch(rel[-1]))
