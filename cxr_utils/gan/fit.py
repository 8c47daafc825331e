"""Train a ConditionalGAN into a run folder: the fit loop, exact resume, NaN guard, sample grids, quality tracking.

Run folder: config.json, checkpoints/ (ckpt-EEEE.npz + latest.json, the last 2 kept; every checkpoint_every epochs
but at most once per checkpoint_minutes, after the last epoch and on an interruption between epochs),
samples/epoch-NNNN.png (every sample_every epochs), metrics.csv, tb/, generator.keras (the EMA generator), lock.
The GAN is built for the machine by `build`, checkpoints and the lock are `checkpoints`'; `runs` reads a run back.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .. import data
from .. import files as cio
from ..config import GANConfig, saved_fields
from ..errors import TrainingDiverged, UserError
from . import runs
from . import tracker as quality
from .checkpoints import Checkpoints, RunLock, get_state, restore
from .device import build_gan, epoch_steps, make_strategy, resolve_precision, steps_per_execution
from .generate import png_bytes
from .model import METRIC_NAMES, ConditionalGAN

METRIC_COLUMNS = ["epoch", *METRIC_NAMES, "seconds", "images_per_second"]
# config fields that may change when resuming; everything else defines the run and must match config.json
RESUMABLE_CHANGES = {"epochs", "checkpoint_every", "checkpoint_minutes", "sample_every", "g_lr", "d_lr", "deterministic",
                     "precision", "jit", "eval_every", "eval_n_per_class"}
METRICS_SECONDS = 30.0  # metrics.csv is rewritten at least this often (and before every grid and checkpoint)


# ---------------------------------------------------------------- data

def cap_per_class(labels: np.ndarray, max_per_class: int | None, seed: int) -> np.ndarray:
    """Indices keeping at most max_per_class images of each class (a seeded choice), in original order."""
    labels = np.asarray(labels)
    if not max_per_class:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 7])
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > max_per_class:
            idx = np.sort(rng.choice(idx, max_per_class, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def fit_batch_size(n_train: int, batch_size: int) -> int:
    """The batch size a data set allows: at most its number of training images (the 16-image sample has 10)."""
    return max(2, min(int(batch_size), int(n_train)))


# The plan of a run that names no epochs (issue 20): PLAN_EPOCHS passes over the training images, at least MIN_PLAN_STEPS
# and at most MAX_PLAN_STEPS generator steps. Measured: the digits benchmark's validation-kept generator came at 470-560
# passes of its 1,070 digits (steps 7,488-8,992 at batch 64, assets/results/digits_tstr-seed*.json), the sample's kept
# X-ray generator after 1,000-3,000 passes of its 10 images. Published small-data GANs train for thousands of passes:
# DiffAugment-stylegan2 trains its 100-shot sets for 300 kimg (3,000 passes) and CIFAR-10 at 10 % (5,000 images) for
# 25,000 kimg (5,000 passes; mit-han-lab/data-efficient-gans, run_few_shot.py / run_cifar.py defaults), StyleGAN2-ADA's
# configurations run 25,000 kimg (stylegan2-ada-pytorch train.py, cfg_specs). 600 passes is the low end of that, and
# the quality tracker's kept generator (generator-best.keras: lowest class-balanced KID) answers when to stop: a longer
# run can only add candidates. On the Kaggle set (~4,180 training images, batch 64): 39,000 steps, 2,496 kimg.
PLAN_EPOCHS = 600
MIN_PLAN_STEPS = 3000  # the 10-image sample (one step per epoch): 200 steps leave grey noise
MAX_PLAN_STEPS = 50_000  # larger sets (or 128 px): cap the cost; the kept generator is usually earlier


def plan_steps(n_train: int, batch_size: int, min_steps: int = MIN_PLAN_STEPS, passes: int = PLAN_EPOCHS,
               max_steps: int = MAX_PLAN_STEPS) -> int:
    """Generator steps of a planned run: `passes` epochs of the training images, within [min_steps, max_steps]."""
    spe = max(1, epoch_steps(n_train, batch_size))  # the steps an epoch really runs (whole host syncs)
    return int(min(max(passes * spe, int(min_steps)), max(int(max_steps), int(min_steps))))


def plan_epochs(n_train: int, batch_size: int, epochs: int | None = None, min_steps: int = MIN_PLAN_STEPS,
                passes: int = PLAN_EPOCHS, max_steps: int = MAX_PLAN_STEPS) -> int:
    """Epochs to train: `epochs` if given, else the epochs that hold plan_steps generator steps (rounded up).

    The Kaggle set (~4,180 training images, batch 64, 65 steps per epoch): 600 epochs, 39,000 steps; the 10-image
    sample (one step per epoch): 3,000 epochs; PneumoniaMNIST (4,708 images, 72 steps per epoch: build.epoch_steps): 600 epochs, 43,200 steps.
    """
    if epochs is not None:
        return int(epochs)
    spe = max(1, epoch_steps(n_train, batch_size))
    return -(-plan_steps(n_train, batch_size, min_steps, passes, max_steps) // spe)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def make_dataset(images_u8: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, first_epoch: int,
                 epochs: int, channels: int = 1, steps: int | None = None) -> tf.data.Dataset:
    """Batches (float32 [-1, 1] (B,S,S,channels), int32) of grey uint8 images (N,S,S[,1]) for epochs
    [first_epoch, epochs): `steps` batches per epoch (default build.epoch_steps), taken from the front of each epoch's
    epoch_order(); pixels from data.to_model_view."""
    images_u8 = np.asarray(images_u8)
    labs = np.asarray(labels, np.int32)
    n, size = len(images_u8), images_u8.shape[1]
    steps = epoch_steps(n, batch_size) if steps is None else int(steps)
    if steps * batch_size > n:
        raise ValueError(f"{steps} steps of {batch_size} need {steps * batch_size} images, got {n}")
    # the whole index stream is computed up front: it is tiny (epochs * N ints) and makes resume trivially exact
    order = np.concatenate([epoch_order(seed, e, n)[: steps * batch_size] for e in range(first_epoch, epochs)]) \
        if epochs > first_epoch else np.zeros((0,), np.int64)

    def fetch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # per batch, on the host: the cache stays uint8 with one channel (a 128 px float copy in 3 channels would be
        # 12 times its size); the model view is the one data.to_model_view defines
        return data.to_model_view(images_u8[idx], channels), labs[idx]

    def fetch_tf(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(fetch, [idx], (tf.float32, tf.int32), stateful=False)
        x.set_shape((batch_size, size, size, channels))
        y.set_shape((batch_size,))
        return x, y

    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64)).batch(batch_size, drop_remainder=True)
    return ds.map(fetch_tf, num_parallel_calls=1, deterministic=True).prefetch(2)


# ---------------------------------------------------------------- run folder pieces

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

    def __init__(self, run_dir: Path, gan: ConditionalGAN, ckpts: Checkpoints, rows: list[dict[str, Any]],
                 steps_per_epoch: int, last_good: tuple[int, Path], show_samples: bool, meta: dict[str, Any]):
        super().__init__()
        self.run_dir, self.gan, self.ckpts, self.rows = run_dir, gan, ckpts, rows
        self.cfg = gan.cfg
        self.steps_per_epoch = steps_per_epoch
        self.last_good = last_good
        self.show_samples = show_samples
        self.meta = meta  # precision and replicas, stored in each checkpoint
        self.bad: dict[str, Any] | None = None
        # flushed every 10 s and at the end, not after every (possibly fraction-of-a-second) epoch
        self.writer = tf.summary.create_file_writer(str(run_dir / "tb"), flush_millis=10_000)
        self.fixed = gan.fixed_noise(self.cfg.n_fixed_noise)
        self._render = None  # the EMA generator on the fixed noise, traced once
        self.display = None  # the notebook's one sample-grid output, updated in place
        self.t0 = time.perf_counter()
        self.last_checkpoint_time = self.metrics_written = time.monotonic()
        self.images_seen = 0
        self.train_seconds = 0.0
        self.epoch_ends: list[float] = []  # wall clock after each epoch's own work (steady-state speed)
        self.tracker: quality.QualityTracker | None = None  # set by train() when quality tracking is on

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
        # state that a resume could lose (see quality.QualityTracker)
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
        write_metrics(self.run_dir / "metrics.csv", self.rows)
        self.metrics_written = time.monotonic()

    def grid_path(self, e: int) -> Path:
        return self.run_dir / "samples" / f"epoch-{e:04d}.png"

    def sample_grid(self, e: int) -> Path:
        """samples/epoch-EEEE.png: the EMA generator on the fixed noise, one row per class, composed from pixels."""
        from .. import drawing as plots  # matplotlib: only when a grid is drawn

        if self._render is None:
            z, labels = (tf.constant(a) for a in self.fixed)
            ema = self.gan.ema_generator
            self._render = tf.function(lambda: ema([z, labels], training=False))
        imgs = self._render().numpy()
        n = self.cfg.n_fixed_noise
        rows = [imgs[i * n:(i + 1) * n] for i in range(self.cfg.num_classes)]
        grid = plots.pixel_grid(rows, row_titles=list(self.cfg.class_names),
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
        return quality.is_eval_epoch(e, self.cfg.sample_every, self.cfg.epochs)

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


# ---------------------------------------------------------------- the public entry points
def _steady_speed(epoch_ends: list[float], images_per_epoch: int) -> float | None:
    """Images/s between the first and the last epoch end: training plus every epoch's own work, without tracing."""
    if len(epoch_ends) < 2:
        return None
    return (len(epoch_ends) - 1) * images_per_epoch / max(epoch_ends[-1] - epoch_ends[0], 1e-9)


def _run_steps(n: int, batch_size: int, saved_data: dict[str, Any] | None) -> int:
    """Steps per epoch: build.epoch_steps for a new run; a resumed run keeps the steps it was started with (one started
    before config.json recorded them took every full batch), so its epochs hold the same batches as before."""
    if not saved_data or saved_data.get("n_train") != n:
        return epoch_steps(n, batch_size)  # a new run, or other data (the checkpoint's step check then says so)
    return int(saved_data.get("steps_per_epoch", n // batch_size))


def _check_resumable(saved: dict[str, Any], cfg: GANConfig, run_dir: Path) -> None:
    now = cfg.to_dict()
    for k, v in saved_fields(saved).items():  # a field config.json predates counts with the value its run used
        if k in RESUMABLE_CHANGES or k not in now:  # "data" (provenance) is not a config field
            continue
        if now[k] != v:
            raise UserError(f"{run_dir / 'config.json'}: the run was trained with {k}={v!r}, now {k}={now[k]!r}; "
                            f"resume with the same settings or choose another --run-dir")


def train(cfg: GANConfig, run_dir: str | os.PathLike, images: np.ndarray, labels: np.ndarray, resume: bool = False,
          progress: str | bool | int = "auto", *, data_info: dict[str, Any] | None = None, distribute: str = "auto",
          show_samples: bool | None = None, reference: tuple[np.ndarray, np.ndarray, str] | None = None) -> dict[str, Any]:
    """Train (or resume) a ConditionalGAN on uint8 images (N,S,S[,C]) and int labels into run_dir; returns a summary.

    `reference` = (images, labels, name) of real images the GAN never trains on (the val split), against which the
    quality evaluations measure KID and PRDC; without it they use the training images and say so.
    """
    cfg = cfg.validate()
    run_dir = Path(run_dir)
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[1:3] != (cfg.image_size, cfg.image_size):
        raise UserError(f"images: expected uint8 (N, {cfg.image_size}, {cfg.image_size}[, C]), got {images.dtype} "
                        f"{images.shape}; set image_size to the data's size")
    if len(labels) != len(images) or (len(labels) and (labels.min() < 0 or labels.max() >= cfg.num_classes)):
        raise UserError(f"labels: expected {len(images)} ints in [0, {cfg.num_classes}), got {len(labels)} "
                        f"in [{labels.min() if len(labels) else '-'}, {labels.max() if len(labels) else '-'}]")
    keep = cap_per_class(labels, cfg.max_per_class, cfg.seed)
    x, y = data.gray_images(images[keep]), labels[keep]  # the dataset makes the model view (channels) per batch
    if len(x) < cfg.batch_size:
        raise UserError(f"data: {len(x)} training images is fewer than batch_size={cfg.batch_size}; lower --batch-size")

    with RunLock(run_dir):
        try:
            return _train_locked(cfg, run_dir, x, y, resume, progress, data_info, distribute, show_samples, reference)
        except OSError as e:  # disk full, read-only folder: every write is atomic, so the last checkpoint is intact
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise UserError(f"{run_dir}: cannot write the run folder{where}: {e.strerror or e}; free disk space or make "
                            f"it writable, then rerun with --resume (the last complete checkpoint is kept)") from None


def quality_probe(cfg: GANConfig, x: np.ndarray, y: np.ndarray, reference: tuple[np.ndarray, np.ndarray, str] | None,
                  run_dir: Path | None = None, features: str = "domain") -> quality.QualityProbe:
    """The run's quality probe; its classifier and real-vs-real baseline are kept in run_dir (if given) so that a
    resume scores alike (features: KID/PRDC's feature space, quality.build_probe). Diversity and train coverage
    compare with eval_n_per_class training images per class (all
    of a smaller class): as many as the synthetic images, so coverage is neither capped nor saturated."""
    if reference is not None and len(reference[0]):
        x_ref, y_ref, name = reference
        ref_name = f"{name} ({len(y_ref)} images)"
    else:
        x_ref, y_ref, ref_name = None, None, f"train split ({len(y)} images; no held-out split was given)"
    keep = cap_per_class(y, max(1, cfg.eval_n_per_class), cfg.seed)
    return quality.build_probe(cfg.class_names, x, y, x_ref, y_ref, ref_name, cfg.latent_dim, cfg.eval_n_per_class,
                               cfg.seed, classifier_path=run_dir / quality.CLASSIFIER_FILE if run_dir else None,
                               coverage_keep=keep, baseline_path=run_dir / quality.BASELINE_FILE if run_dir else None,
                               features=features)


def _train_locked(cfg: GANConfig, run_dir: Path, x: np.ndarray, y: np.ndarray, resume: bool, progress: Any,
                  data_info: dict[str, Any] | None, distribute: str, show_samples: bool | None,
                  reference: tuple[np.ndarray, np.ndarray, str] | None = None) -> dict[str, Any]:
    ckpts = Checkpoints(run_dir)
    found = ckpts.load_latest()
    if found is not None and not resume:
        raise UserError(f"{run_dir}: already holds a run (checkpoint {found.path.name}); pass --resume to continue it "
                        f"or choose another --run-dir")
    cfg_path = run_dir / "config.json"
    saved = cio.read_json(cfg_path) if cfg_path.is_file() else None
    if found is not None and saved is not None:
        _check_resumable(saved, cfg, run_dir)

    steps = _run_steps(len(x), cfg.batch_size, saved.get("data") if found is not None and saved else None)
    interval = quality.eval_interval(cfg.eval_every, steps)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = resolve_precision(cfg.precision, cfg.deterministic)
    strategy = make_strategy(distribute)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {replicas} devices")

    class_counts = tuple(int(c) for c in np.bincount(y, minlength=cfg.num_classes))
    counts = dict(zip(cfg.class_names, class_counts, strict=True))
    info = dict(data_info or {})
    info.update(n_train=int(len(y)), per_class=counts)
    # the prior of the labels the GAN trains on (after max_per_class), and the one its generated labels follow
    prior = {c: n / len(y) for c, n in counts.items()}
    info.update(class_prior=prior, generated_label_prior=prior if cfg.label_prior == "data"
                else {c: 1.0 / cfg.num_classes for c in cfg.class_names})
    # GANConfig fields at the top level (GANConfig.from_dict reads them back); provenance under "data"
    per_call = steps_per_execution(steps, replicas)
    info.update(precision_resolved=precision, replicas=replicas, steps_per_epoch=steps, steps_per_execution=per_call)
    if found is not None and saved is not None and "data" in saved:
        info = {**saved["data"], **info}
    meta = {"precision": precision, "replicas": replicas}
    with strategy.scope():
        gan = build_gan(cfg, precision, per_call, class_counts=class_counts)
        note = None
        if found is not None:
            start_epoch, state, ckpt_path = found.epoch, found.state, found.path
            note = restore(gan, found, precision, replicas, (saved or {}).get("data", {}))
            if int(state["step"]) != start_epoch * steps:
                raise UserError(f"{ckpt_path}: step {int(state['step'])} does not match epoch {start_epoch} x {steps} "
                                f"steps; the data or batch size changed since the run started")
            if note:
                print(note, file=sys.stderr)
    probe = None
    if interval:
        # after the checkpoint is accepted (a refused resume changes nothing) and after the GAN is built (its random
        # draws are keyed by (seed, step), so the classifier's training cannot change them); outside the strategy
        # scope, so the classifier is an ordinary one-device model. A fresh run never reuses another run's classifier.
        if found is None:
            (run_dir / quality.CLASSIFIER_FILE).unlink(missing_ok=True)
        probe = quality_probe(cfg, x, y, reference, run_dir)
        info.update(quality_reference=probe.reference, quality_features=probe.extractor.name)
    with strategy.scope():
        # written only once the checkpoint restored: a refused resume leaves the run's config.json untouched
        cio.atomic_write_json(cfg_path, {**cfg.to_dict(), "data": info})
        if found is None:
            start_epoch = 0
            ckpt_path = ckpts.save(0, get_state(gan), meta)  # a fresh run is resumable (and has a last good state) at once
        rows = read_metrics(run_dir / "metrics.csv", start_epoch)
        write_metrics(run_dir / "metrics.csv", rows)  # drop epochs after the checkpoint (a kill after metrics, before ckpt)

        if show_samples is None:
            show_samples = cio.in_notebook()
        if progress == "auto":
            # a progress bar on a terminal; one line per epoch elsewhere, notebooks included: a saved notebook keeps
            # every redraw of a bar, so a 200-epoch run of many steps would weigh megabytes
            verbose = 1 if (sys.stdout.isatty() and not cio.in_notebook()) else 2
        else:
            verbose = int(progress) if not isinstance(progress, bool) else (1 if progress else 0)
        cb = RunCallback(run_dir, gan, ckpts, rows, steps, (start_epoch, ckpt_path), show_samples, meta)
        if probe is not None:
            cb.tracker = quality.QualityTracker(run_dir, probe, interval, cfg.epochs, writer=cb.writer)
            cb.tracker.reconcile(start_epoch, int(gan.step.numpy()), gan.ema_generator)
        t0 = time.perf_counter()
        try:
            if start_epoch < cfg.epochs:
                ds = make_dataset(x, y, cfg.batch_size, cfg.seed, start_epoch, cfg.epochs, cfg.channels, steps)
                gan.fit(ds, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=steps, verbose=verbose,
                        shuffle=False, callbacks=[cb])
        except KeyboardInterrupt:  # Ctrl-C, or a notebook's "interrupt kernel": keep the last completed epoch
            print(cb.on_interrupt(), file=sys.stderr)
            raise
        finally:
            cb.writer.close()
        seconds = time.perf_counter() - t0
        if cb.bad is not None:
            cb.write_metrics()  # the good epochs since the last write, for reading (a resume trims them to the checkpoint)
            e, p = cb.last_good
            b = cb.bad
            raise TrainingDiverged(f"{run_dir}: training diverged: {b['name']}={b['value']} at epoch {b['epoch']}, step "
                                   f"{b['step']}; the last good checkpoint is {p} (epoch {e}); lower g_lr/d_lr and "
                                   f"rerun with --resume")
        gen_path = run_dir / "generator.keras"
        with cio.atomic_path(gen_path) as tmp:
            gan.ema_generator.save(tmp)
    last = rows[-1] if rows else {}
    q_rows = cb.tracker.rows if cb.tracker is not None else []
    return {
        "run_dir": str(run_dir), "epochs": cfg.epochs, "resumed_from_epoch": start_epoch if found else None,
        "step": int(gan.step.numpy()), "seconds": seconds, "train_seconds": cb.train_seconds,
        "images_per_second": cb.images_seen / cb.train_seconds if cb.train_seconds else None,
        "wall_images_per_second": _steady_speed(cb.epoch_ends, steps * cfg.batch_size),
        "precision": precision, "replicas": replicas, "jit": bool(gan.jit_compile), "resume_note": note,
        "generator": str(gen_path),
        "metrics": {k: float(v) for k, v in last.items() if k != "epoch"} | ({"epoch": int(last["epoch"])} if last else {}),
        "quality": q_rows[-1] if q_rows else None, "best": quality.load_best(run_dir),
        "alarm": next((r["alarm"] for r in reversed(q_rows) if r.get("alarm")), None) if q_rows else None,
    }


def train_from_npz(npz: str | os.PathLike, run_dir: str | os.PathLike, cfg: GANConfig, resume: bool = False,
                   plan: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Train on the `train` split of a cached dataset .npz (see cxr_utils.data); records its provenance.

    plan=True fits the run to the data: the batch lowered to the training images (fit_batch_size) and the epochs
    from plan_epochs (600 passes over the training images, 3,000 to 50,000 steps), as notebook 02 does.
    """
    npz = Path(npz)
    ds = data.load(npz)
    images, labels = ds.subset("train")
    x_val, y_val = ds.subset("val")
    if not len(images):
        raise UserError(f"--data {npz}: no images in the 'train' split")
    if images.ndim >= 3 and images.shape[1] != cfg.image_size:
        print(f"note: image_size set to {images.shape[1]} to match {npz.name}", file=sys.stderr)
        cfg = cfg.replace(image_size=int(images.shape[1]))
    if plan:
        cfg = cfg.replace(batch_size=fit_batch_size(len(labels), cfg.batch_size))
        cfg = cfg.replace(epochs=plan_epochs(len(labels), cfg.batch_size))
        print(f"note: batch size {cfg.batch_size}, {cfg.epochs} epochs (planned for {len(labels)} training images)",
              file=sys.stderr)
    manifest = data.manifest_path(npz)
    info = {"npz": str(npz.resolve()), "npz_sha256": cio.file_digest(npz), "manifest": str(manifest) if manifest.is_file() else None,
            "manifest_sha256": cio.file_digest(manifest) if manifest.is_file() else None, "split": "train"}
    drift = runs.cache_drift(run_dir, npz, info["npz_sha256"]) if resume else None
    if drift:  # one GAN trained on two different splits would be neither
        raise UserError(f"--data {drift}; resuming would mix the two: start a new run folder (notebook 02: FRESH = True) "
                        "or resume with the cache it was trained on")
    kwargs.setdefault("reference", (x_val, y_val, "val split") if len(y_val) else None)
    return train(cfg, run_dir, images, labels, resume=resume, data_info=info, **kwargs)
