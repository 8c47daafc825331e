"""The run folder's side of `fit`: once per epoch the divergence check, the metrics row (metrics.csv, TensorBoard),
the sample grid (samples/epoch-EEEE.png), the checkpoint and the quality evaluation; the checkpoint on an interrupt.

The file names are run_folder's; `train` builds the GAN and hands it here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .. import files as cio
from . import tracker
from .checkpoints import Checkpoints, get_state
from .generate import png_bytes
from .model import METRIC_NAMES, ConditionalGAN
from .run_folder import RunFolder

METRIC_COLUMNS = ["epoch", *METRIC_NAMES, "seconds", "images_per_second"]
METRICS_SECONDS = 30.0  # metrics.csv is rewritten at least this often (and before every grid and checkpoint)


def read_metrics(path: Path, max_epoch: int | None = None) -> list[dict[str, str]]:
    """Rows of metrics.csv (epoch <= max_epoch if given)."""
    return cio.read_epoch_csv(path, max_epoch)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv atomically."""
    cio.atomic_write_csv(path, rows, METRIC_COLUMNS)


class RunCallback(keras.callbacks.Callback):
    """The run folder's side of `fit`, once per epoch and in this order (see on_epoch_end): the divergence check,
    the metrics row, the sample grid, the checkpoint. Nothing runs per batch: the NaN guard lives in the train step's
    graph (ConditionalGAN._guard), so no step waits for the host."""

    def __init__(self, run_dir: Path, gan: ConditionalGAN, rows: list[dict[str, Any]], steps_per_epoch: int,
                 last_good: tuple[int, Path], meta: dict[str, Any], show_samples: bool = False):
        super().__init__()
        self.run_dir, self.gan, self.rows = run_dir, gan, rows
        self.run = RunFolder(run_dir)
        self.ckpts = Checkpoints(run_dir)
        self.cfg = gan.cfg
        self.steps_per_epoch = steps_per_epoch
        self.last_good = last_good
        self.show_samples = show_samples
        self.meta = meta  # precision and replicas, stored in each checkpoint
        self.bad: dict[str, Any] | None = None
        # flushed every 10 s and at the end, not after every (possibly fraction-of-a-second) epoch
        self.writer = tf.summary.create_file_writer(str(self.run.tensorboard), flush_millis=10_000)
        self.fixed = gan.fixed_noise(self.cfg.n_fixed_noise)
        self._render = None  # the EMA generator on the fixed noise, traced once
        self.display = None  # the notebook's one sample-grid output, updated in place
        self.t0 = time.perf_counter()
        self.last_checkpoint_time = self.metrics_written = time.monotonic()
        self.images_seen = 0
        self.train_seconds = 0.0
        self.epoch_ends: list[float] = []  # wall clock after each epoch's own work (steady-state speed)
        self.tracker: tracker.QualityTracker | None = None  # set by train() when quality tracking is on

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        e = epoch + 1
        secs = time.perf_counter() - self.t0
        if self.diverged():
            return  # never record or checkpoint a diverged state
        grid = self.grid_due(e)
        evaluate = self.tracker is not None and self.tracker.due(e)
        # an evaluated epoch is always checkpointed: its quality row and generator-best.keras then never describe a
        # state that a resume could lose (see tracker.QualityTracker)
        ckpt = self.checkpoint_due(e) or evaluate
        # order matters for kill -9: the row, then the samples, then the checkpoint (resume truncates metrics.csv to
        # it), then the quality evaluation; metrics.csv is on disk before every grid and checkpoint, and at least every
        # METRICS_SECONDS
        self.record(e, secs, logs or {}, write=grid or ckpt)
        self.after_record(e, grid, ckpt)
        if evaluate:  # after its checkpoint (an interrupted evaluation is caught up on resume: QualityTracker.reconcile)
            self.tracker.evaluate(e, int(self.gan.step.numpy()), self.gan.ema_generator)
        self.epoch_ends.append(time.perf_counter())

    def after_record(self, e: int, grid: bool, ckpt: bool) -> None:
        """The steps after epoch e's row is recorded, in order (also run by on_interrupt): sample grid, checkpoint."""
        if grid:
            self.sample_grid(e)
        if ckpt:
            self.checkpoint(e)

    # ------------------------------------------------------------ the steps of an epoch end

    def diverged(self) -> bool:
        """Read the in-graph guard (the one host read per epoch); on a non-finite step, stop training."""
        bad_step = int(self.gan.bad_step.numpy())
        if not bad_step:
            return False
        values = [float(v) for v in self.gan.bad_losses.numpy()]
        name, value = next(((n, v) for n, v in zip(("d_loss", "g_loss"), values, strict=True) if not np.isfinite(v)),
                           ("d_loss", values[0]))
        self.bad = {"name": name, "value": value, "step": bad_step, "epoch": (bad_step - 1) // self.steps_per_epoch + 1}
        self.model.stop_training = True
        return True

    def record(self, e: int, secs: float, logs: dict[str, Any], write: bool = True) -> dict[str, Any]:
        """Add epoch e's row to TensorBoard and the rows; rewrite metrics.csv (atomically, so with two fsyncs) if
        `write` or METRICS_SECONDS have passed since it was last written."""
        n_img = self.steps_per_epoch * self.cfg.batch_size
        self.train_seconds += secs
        self.images_seen += n_img
        row: dict[str, Any] = {"epoch": e}
        for k in METRIC_NAMES:
            row[k] = f"{float(np.asarray(logs[k])):.6g}"
        row["seconds"] = f"{secs:.3f}"
        row["images_per_second"] = f"{n_img / max(secs, 1e-9):.2f}"
        self.rows.append(row)
        if write or time.monotonic() - self.metrics_written >= METRICS_SECONDS:
            self.write_metrics()
        with self.writer.as_default():
            for k in METRIC_COLUMNS[1:]:
                tf.summary.scalar(k, float(row[k]), step=e)
        return row

    def write_metrics(self) -> None:
        """metrics.csv with every recorded row."""
        write_metrics(self.run.metrics_csv, self.rows)
        self.metrics_written = time.monotonic()

    def grid_path(self, e: int) -> Path:
        return self.run.grid(e)

    def sample_grid(self, e: int) -> Path:
        """samples/epoch-EEEE.png: the EMA generator on the fixed noise, one row per class, composed from pixels."""
        from .. import drawing  # matplotlib: only when a grid is drawn

        if self._render is None:
            z, labels = (tf.constant(a) for a in self.fixed)
            ema = self.gan.ema_generator
            self._render = tf.function(lambda: ema([z, labels], training=False))
        imgs = self._render().numpy()
        n = self.cfg.n_fixed_noise
        rows = [imgs[i * n:(i + 1) * n] for i in range(self.cfg.num_classes)]
        grid = drawing.pixel_grid(rows, row_titles=list(self.cfg.class_names),
                                title=f"epoch {e}, EMA generator, fixed noise")
        png = png_bytes(grid, {"Description": f"epoch {e}: sample grid, one row per class "
                                                    f"({', '.join(self.cfg.class_names)})"})
        path = self.grid_path(e)
        cio.atomic_write_bytes(path, png)
        if self.show_samples:  # one output in the notebook, replaced each time: a 200-epoch notebook stays small
            from IPython.display import Image, display

            if self.display is None:
                self.display = display(Image(data=png), display_id=True)
            else:
                self.display.update(Image(data=png))
        return path

    def grid_due(self, e: int) -> bool:
        """Every sample_every epochs and after the last one."""
        return tracker.is_eval_epoch(e, self.cfg.sample_every, self.cfg.epochs)

    def checkpoint_due(self, e: int) -> bool:
        """After the last epoch, and every checkpoint_every epochs once checkpoint_minutes have passed since the last
        checkpoint: ~100 MB are not written after every fraction-of-a-second epoch of a small data set, while a long
        run loses at most a few minutes (plus an epoch) to a kill."""
        if e == self.cfg.epochs:
            return True
        waited = time.monotonic() - self.last_checkpoint_time >= 60.0 * self.cfg.checkpoint_minutes
        return e % self.cfg.checkpoint_every == 0 and waited

    def checkpoint(self, e: int) -> Path:
        """Write epoch e's checkpoint (all state) and make it the last good one."""
        p = self.ckpts.save(e, get_state(self.gan), self.meta)
        self.last_good = (e, p)
        self.last_checkpoint_time = time.monotonic()
        return p

    def on_interrupt(self) -> str:
        """After a KeyboardInterrupt: checkpoint the last recorded epoch if the model is still exactly at its end.

        The interrupt may land mid-epoch (the state is then between epochs: not saved) or in an epoch's end work
        (its row is recorded and the weights are those of its last step: the rest of that work is done, then the
        checkpoint written). Returns the line to show.
        """
        e = int(self.rows[-1]["epoch"]) if self.rows else self.last_good[0]
        consistent = self.bad is None and e > self.last_good[0] and int(self.gan.step.numpy()) == e * self.steps_per_epoch
        if consistent:
            self.write_metrics()  # the row may not be on disk yet
            grid = self.grid_due(e) and not self.grid_path(e).is_file()
            self.after_record(e, grid, ckpt=True)
            p = self.last_good[1]
            return f"interrupted: wrote checkpoint {p} (epoch {e}); rerun with --resume to continue"
        e, p = self.last_good
        return f"interrupted: the last checkpoint is {p} (epoch {e}); rerun with --resume to continue from it"
