"""Train a ConditionalGAN into a run folder: exact resume, atomic checkpoints, NaN guard, lock, precision, devices.

Run folder: config.json, checkpoints/ (ckpt-EEEE.npz + latest.json, the last 2 kept; every checkpoint_every epochs
but at most once per checkpoint_minutes, after the last epoch and on an interruption between epochs),
samples/epoch-NNNN.png (every sample_every epochs), metrics.csv, tb/, generator.keras (the EMA generator), lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from . import data, quality
from . import io as cio
from .config import GANConfig
from .errors import RunLocked, TrainingDiverged, UserError
from .gan import METRIC_NAMES, ConditionalGAN
from .models import build_discriminator, build_generator

METRIC_COLUMNS = ["epoch", *METRIC_NAMES, "seconds", "images_per_second"]
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# config fields that may change when resuming; everything else defines the run and must match config.json
RESUMABLE_CHANGES = {"epochs", "checkpoint_every", "checkpoint_minutes", "sample_every", "g_lr", "d_lr", "deterministic",
                     "precision", "jit", "eval_every", "eval_n_per_class"}
KEEP_CHECKPOINTS = 2
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bf16 math on x86 CPUs
METRICS_SECONDS = 30.0  # metrics.csv is rewritten at least this often (and before every grid and checkpoint)
MAX_STEPS_PER_EXECUTION = 16  # steps between two host syncs of fit (see steps_per_execution)
LEGACY_KEY = re.compile(r"(g|d|ema|gopt|dopt)/\d{4}")  # the positional checkpoint keys written before issue 11


# ---------------------------------------------------------------- precision and devices

def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """True if /proc/cpuinfo lists avx512_bf16 or amx_bf16 (fast bf16 matmuls on CPU)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & BF16_CPU_FLAGS)
    return False


def resolve_precision(requested: str, deterministic: bool = False) -> str:
    """auto -> fp16 on GPUs with compute capability >= 7, bf16 on TPUs and bf16-capable CPUs, else fp32."""
    if requested != "auto":
        return requested
    if deterministic:
        return "fp32"  # bit-identical runs are only promised in fp32
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return "fp16" if tuple(cc) >= (7, 0) else "fp32"
    if tf.config.list_physical_devices("TPU"):
        return "bf16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def resolve_jit(requested: str) -> bool:
    """auto -> XLA on when a GPU is visible; on CPU the XLA-compiled step measured slower than TF's own kernels."""
    if requested == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return requested == "on"


def make_strategy(distribute: str = "auto") -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all GPUs when there are several, else the default strategy.

    "mirrored" forces MirroredStrategy over the logical GPUs, or over the logical CPUs when there are no GPUs
    (used by the tests with 2 logical CPU devices); "default" forces one device.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if distribute == "default" or (distribute == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    if distribute not in ("auto", "mirrored"):
        raise UserError(f"distribute: expected auto|mirrored|default, got {distribute!r}")
    devices = [d.name for d in gpus] if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


# ---------------------------------------------------------------- building

def steps_per_execution(steps_per_epoch: int, limit: int | None = None) -> int:
    """How many steps `fit` runs per call before Python sees the logs: the largest divisor of the epoch's steps up to
    `limit`. Keras converts the logs to floats after every call (a wait for the device); a divisor keeps each call
    inside one epoch, so epochs hold the same batches whatever the value."""
    limit = limit or MAX_STEPS_PER_EXECUTION
    return max(k for k in range(1, min(limit, steps_per_epoch) + 1) if steps_per_epoch % k == 0)


def build_gan(cfg: GANConfig, precision: str = "fp32", steps_per_execution: int = 1) -> ConditionalGAN:
    """A compiled ConditionalGAN with both optimizers built (call inside the strategy scope); XLA per cfg.jit."""
    policy = POLICIES[precision]
    g = build_generator(cfg, dtype=policy, name="generator")
    d = build_discriminator(cfg, dtype=policy, name="discriminator")
    ema = build_generator(cfg, dtype="float32", name="ema_generator") if cfg.ema_decay > 0 else None
    gan = ConditionalGAN(cfg, g, d, ema)
    d_opt = keras.optimizers.Adam(cfg.d_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="d_adam")
    g_opt = keras.optimizers.Adam(cfg.g_lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, name="g_adam")
    if precision == "fp16":  # fp16 gradients underflow without loss scaling; each optimizer keeps its own scale
        d_opt = keras.optimizers.LossScaleOptimizer(d_opt, name="d_loss_scale")
        g_opt = keras.optimizers.LossScaleOptimizer(g_opt, name="g_loss_scale")
    gan.compile(d_optimizer=d_opt, g_optimizer=g_opt, jit_compile=resolve_jit(cfg.jit),
                steps_per_execution=steps_per_execution)
    gan.build_optimizers()
    return gan


# ---------------------------------------------------------------- data

def _model_view(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N,S,S) or (N,S,S,C) -> uint8 (N,S,S,1) for grey data (the dataset copies it into `channels` per batch,
    so a 128 px cache is not held three times), else (N,S,S,channels)."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[..., None]
    if a.shape[-1] not in (1, channels):
        a = a.mean(axis=-1, keepdims=True).round().astype(np.uint8)
    return np.ascontiguousarray(a)


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


def plan_epochs(n_train: int, batch_size: int, epochs: int | None = None, min_steps: int = 3000) -> int:
    """Epochs to train: `epochs` if given, else 200 epochs and at least `min_steps` generator steps.

    200 epochs of the Kaggle set (~4,200 training images, batch 64) are ~13,000 steps; on the 10-image sample an
    epoch is one step, and 200 steps leave grey noise, so small data sets get more epochs.
    """
    if epochs is not None:
        return int(epochs)
    spe = max(1, int(n_train) // max(1, int(batch_size)))
    return max(200, -(-int(min_steps) // spe))


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def make_dataset(images_u8: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, first_epoch: int,
                 epochs: int, channels: int | None = None) -> tf.data.Dataset:
    """Batches (float32 [-1, 1] (B,S,S,channels), int32) for epochs [first_epoch, epochs); order from epoch_order()."""
    n = len(images_u8)
    steps = n // batch_size
    # the whole index stream is computed up front: it is tiny (epochs * N ints) and makes resume trivially exact
    order = np.concatenate([epoch_order(seed, e, n)[: steps * batch_size] for e in range(first_epoch, epochs)]) \
        if epochs > first_epoch else np.zeros((0,), np.int64)
    imgs = tf.constant(images_u8)
    labs = tf.constant(np.asarray(labels, np.int32))

    def fetch(idx):
        x = tf.cast(tf.gather(imgs, idx), tf.float32) / 127.5 - 1.0
        if channels is not None and x.shape[-1] != channels:
            x = tf.repeat(x, channels, axis=-1)  # grey -> C identical channels
        return x, tf.gather(labs, idx)

    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64)).batch(batch_size, drop_remainder=True)
    return ds.map(fetch, num_parallel_calls=1, deterministic=True).prefetch(2)


# ---------------------------------------------------------------- run folder pieces

class RunLock:
    """An exclusive flock on run_dir/lock; the OS drops it when the process dies, even on kill -9."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "lock"
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
        self.dir = Path(run_dir) / "checkpoints"

    def path(self, epoch: int) -> Path:
        return self.dir / f"ckpt-{epoch:04d}.npz"

    def save(self, epoch: int, state: dict[str, np.ndarray], meta: dict[str, str | int] | None = None) -> Path:
        """Write one checkpoint, then point latest.json at it, then prune old ones (each step atomic)."""
        p = self.path(epoch)
        arrays = {k.replace("/", "."): v for k, v in state.items()}
        arrays.update({f"meta_{k}": np.asarray(v) for k, v in (meta or {}).items()})  # str -> a unicode array, no pickle
        # uncompressed: zlib spends seconds on float weights for a few percent
        cio.atomic_save_npz(p, compress=False, meta_epoch=np.int64(epoch), **arrays)
        cio.atomic_write_json(self.dir / "latest.json", {"file": p.name, "epoch": epoch, "step": int(state["step"])})
        for old in self.files()[KEEP_CHECKPOINTS:]:
            with contextlib.suppress(OSError):
                old.unlink()
        return p

    def files(self) -> list[Path]:
        """Checkpoint files, newest epoch first (temp files of interrupted writes are ignored)."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.glob("ckpt-*.npz") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[5:]), reverse=True)

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


def read_metrics(path: Path, max_epoch: int | None = None) -> list[dict[str, str]]:
    """Rows of metrics.csv (epoch <= max_epoch if given)."""
    return cio.read_epoch_csv(path, max_epoch)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv atomically."""
    cio.atomic_write_csv(path, rows, METRIC_COLUMNS)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


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
        from . import plots
        from .sample import png_bytes

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
        p = self.ckpts.save(e, self.gan.get_state(), self.meta)
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


def _steady_speed(epoch_ends: list[float], images_per_epoch: int) -> float | None:
    """Images/s between the first and the last epoch end: training plus every epoch's own work, without tracing."""
    if len(epoch_ends) < 2:
        return None
    return (len(epoch_ends) - 1) * images_per_epoch / max(epoch_ends[-1] - epoch_ends[0], 1e-9)


def _check_resumable(saved: dict[str, Any], cfg: GANConfig, run_dir: Path) -> None:
    now = cfg.to_dict()
    for k, v in saved.items():
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
    x, y = _model_view(images[keep], cfg.channels), labels[keep]
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
                  run_dir: Path | None = None) -> quality.QualityProbe:
    """The run's quality probe; its classifier is kept in run_dir (if given) so that a resume scores alike."""
    if reference is not None and len(reference[0]):
        x_ref, y_ref, name = reference
        ref_name = f"{name} ({len(y_ref)} images)"
    else:
        x_ref, y_ref, ref_name = None, None, f"train split ({len(y)} images; no held-out split was given)"
    keep = cap_per_class(y, max(1, cfg.eval_n_per_class // 4), cfg.seed)
    return quality.build_probe(cfg.class_names, x, y, x_ref, y_ref, ref_name, cfg.latent_dim, cfg.eval_n_per_class,
                               cfg.seed, classifier_path=run_dir / quality.CLASSIFIER_FILE if run_dir else None,
                               coverage_keep=keep)


def _train_locked(cfg: GANConfig, run_dir: Path, x: np.ndarray, y: np.ndarray, resume: bool, progress: Any,
                  data_info: dict[str, Any] | None, distribute: str, show_samples: bool | None,
                  reference: tuple[np.ndarray, np.ndarray, str] | None = None) -> dict[str, Any]:
    ckpts = Checkpoints(run_dir)
    found = ckpts.load_latest()
    if found is not None and not resume:
        raise UserError(f"{run_dir}: already holds a run (checkpoint {found[2].name}); pass --resume to continue it "
                        f"or choose another --run-dir")
    cfg_path = run_dir / "config.json"
    saved = cio.read_json(cfg_path) if cfg_path.is_file() else None
    if found is not None and saved is not None:
        _check_resumable(saved, cfg, run_dir)

    steps = len(x) // cfg.batch_size
    interval = quality.eval_interval(cfg.eval_every, steps)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = resolve_precision(cfg.precision, cfg.deterministic)
    strategy = make_strategy(distribute)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {replicas} devices")

    counts = {cfg.class_names[c]: int((y == c).sum()) for c in range(cfg.num_classes)}
    info = dict(data_info or {})
    info.update(n_train=int(len(y)), per_class=counts)
    # GANConfig fields at the top level (GANConfig.from_dict reads them back); provenance under "data"
    info.update(precision_resolved=precision, replicas=replicas)
    if found is not None and saved is not None and "data" in saved:
        info = {**saved["data"], **info}
    meta = {"precision": precision, "replicas": replicas}
    with strategy.scope():
        # several steps per call fail under MirroredStrategy in TF 2.21 (a placeholder inside Keras's while loop is
        # left unfed): one step per call there
        gan = build_gan(cfg, precision, steps_per_execution(steps) if replicas == 1 else 1)
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
            ckpt_path = ckpts.save(0, gan.get_state(), meta)  # a fresh run is resumable (and has a last good state) at once
        rows = read_metrics(run_dir / "metrics.csv", start_epoch)
        write_metrics(run_dir / "metrics.csv", rows)  # drop epochs after the checkpoint (a kill after metrics, before ckpt)

        if show_samples is None:
            show_samples = _in_notebook()
        if progress == "auto":
            # a progress bar on a terminal; one line per epoch elsewhere, notebooks included: a saved notebook keeps
            # every redraw of a bar, so a 200-epoch run of many steps would weigh megabytes
            verbose = 1 if (sys.stdout.isatty() and not _in_notebook()) else 2
        else:
            verbose = int(progress) if not isinstance(progress, bool) else (1 if progress else 0)
        cb = RunCallback(run_dir, gan, ckpts, rows, steps, (start_epoch, ckpt_path), show_samples, meta)
        if probe is not None:
            cb.tracker = quality.QualityTracker(run_dir, probe, interval, cfg.epochs, writer=cb.writer)
            cb.tracker.reconcile(start_epoch, int(gan.step.numpy()), gan.ema_generator)
        t0 = time.perf_counter()
        try:
            if start_epoch < cfg.epochs:
                ds = make_dataset(x, y, cfg.batch_size, cfg.seed, start_epoch, cfg.epochs, cfg.channels)
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
    from plan_epochs (200, and at least 3,000 steps on small data), as notebook 02 does.
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
    kwargs.setdefault("reference", (x_val, y_val, "val split") if len(y_val) else None)
    return train(cfg, run_dir, images, labels, resume=resume, data_info=info, **kwargs)


def config_of(saved: dict[str, Any]) -> GANConfig:
    """The GANConfig of a run's config.json (its fields sit at the top level, beside the "data" provenance)."""
    return GANConfig.from_dict({k: v for k, v in saved.items() if k != "data"})


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
        p = Checkpoints(run_dir).path(which)
        if not p.is_file():
            have = ", ".join(str(int(f.stem[5:])) for f in reversed(Checkpoints(run_dir).files())) or "none"
            raise UserError(f"--which {which}: {run_dir} has no checkpoint of epoch {which} (checkpoints on disk: {have}); "
                            f"use best, last or one of those epochs")
        return p, f"epoch {which} (EMA generator from {p.name})"
    if which not in ("best", "last"):
        raise UserError(f"--which {which!r}: use best, last or an epoch number")
    last = run_dir / "generator.keras"
    if which == "best":
        best = quality.load_best(run_dir)
        if best is not None and (run_dir / quality.BEST_FILE).is_file():
            return run_dir / quality.BEST_FILE, f"best (epoch {best['epoch']}, {best['rule']})"
        if last.is_file():
            print(f"note: {run_dir} has no {quality.BEST_FILE} (quality tracking was off, or the run predates it); "
                  f"using generator.keras (the last epoch)", file=sys.stderr)
    return last, "last (EMA generator at the end of training)"


def load_generator(run_dir: str | os.PathLike, which: str | int | Path = "last") -> tuple[keras.Model, GANConfig]:
    """The run's EMA generator named by `which` (see generator_source; safe_mode loading) and its GANConfig.

    Works on an unfinished run too (generator-best.keras and checkpoints exist before generator.keras does).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    src, _ = generator_source(run_dir, which)
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
    gan = build_gan(cfg, "fp32")
    restore(gan, found, "fp32", 1, {})  # any precision or device count that wrote it; a foreign file is a UserError
    return gan.ema_generator
