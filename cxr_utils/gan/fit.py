"""Train a ConditionalGAN into a run folder: the fit loop, exact resume, NaN guard, sample grids, quality tracking.

The run folder's files (config.json, checkpoints/, samples/, metrics.csv, tb/, generator.keras, lock, the quality
files) are named by `run_folder`. Checkpoints are written every checkpoint_every epochs but at most once per
checkpoint_minutes, after the last epoch and on an interruption between epochs; the per-epoch work is
`callback`'s. The GAN is built for the machine by `device`, checkpoints and the lock are `checkpoints`'; `runs`
reads a run back; `train_setup` assembles the config the CLI and notebook 02 pass in.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .. import data
from .. import files as cio
from ..config import GANConfig, saved_fields
from ..errors import TrainingDiverged, UserError
from . import runs, tracker
from .callback import METRIC_COLUMNS as METRIC_COLUMNS
from .callback import METRICS_SECONDS as METRICS_SECONDS
from .callback import RunCallback, read_metrics, write_metrics
from .checkpoints import Checkpoints, Found, RunLock, get_state, restore
from .device import build_gan, epoch_steps, make_strategy, resolve_precision, steps_per_execution
from .model import ConditionalGAN
from .probe import ProbeImages, ProbeSettings, QualityProbe, build_probe
from .run_folder import RunFolder

# config fields that may change when resuming; everything else defines the run and must match config.json
RESUMABLE_CHANGES = {"epochs", "checkpoint_every", "checkpoint_minutes", "sample_every", "g_lr", "d_lr", "deterministic",
                     "precision", "jit", "eval_every", "eval_n_per_class"}


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
    sample (one step per epoch): 3,000 epochs; PneumoniaMNIST (4,708 images, 72 steps per epoch: device.epoch_steps): 600 epochs, 43,200 steps.
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
    [first_epoch, epochs): `steps` batches per epoch (default device.epoch_steps), taken from the front of each epoch's
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


# ---------------------------------------------------------------- the public entry points

@dataclass(frozen=True)
class TrainSource:
    """Where the training images come from: `info` is config.json's "data" record (provenance: npz, digests, split);
    `reference` = (images, labels, name) of real images the GAN never trains on (the val split), against which the
    quality evaluations measure KID and PRDC (without it they use the training images and say so)."""

    info: dict[str, Any] | None = None
    reference: tuple[np.ndarray, np.ndarray, str] | None = None


@dataclass
class _Session:
    """One call of `train`, the run folder locked: what it trains on and how it runs, then what it builds."""

    cfg: GANConfig
    run: RunFolder
    x: np.ndarray
    y: np.ndarray
    resume: bool
    progress: Any
    distribute: str
    show_samples: bool | None
    source: TrainSource
    found: Found | None = None  # the checkpoint resumed from
    saved: dict[str, Any] | None = None  # the run's config.json before this call
    steps: int = 0  # per epoch
    precision: str = "fp32"
    replicas: int = 1
    note: str | None = None  # what restore() changed


def _steady_speed(epoch_ends: list[float], images_per_epoch: int) -> float | None:
    """Images/s between the first and the last epoch end: training plus every epoch's own work, without tracing."""
    if len(epoch_ends) < 2:
        return None
    return (len(epoch_ends) - 1) * images_per_epoch / max(epoch_ends[-1] - epoch_ends[0], 1e-9)


def _run_steps(n: int, batch_size: int, saved_data: dict[str, Any] | None) -> int:
    """Steps per epoch: device.epoch_steps for a new run; a resumed run keeps the steps it was started with (one started
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
            raise UserError(f"{RunFolder(run_dir).config}: the run was trained with {k}={v!r}, now {k}={now[k]!r}; "
                            f"resume with the same settings or choose another --run-dir")


def _checked_data(cfg: GANConfig, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grey training images and labels after max_per_class; a shape, label or count the run cannot use is a
    UserError."""
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
    return x, y


def train(cfg: GANConfig, run_dir: str | os.PathLike, images: np.ndarray, labels: np.ndarray, resume: bool = False,
          progress: str | bool | int = "auto", *, distribute: str = "auto", show_samples: bool | None = None,
          source: TrainSource | None = None) -> dict[str, Any]:
    """Train (or resume) a ConditionalGAN on uint8 images (N,S,S[,C]) and int labels into run_dir; returns a summary.

    progress: "auto" (a bar on a terminal, a line per epoch elsewhere), or Keras's verbosity; distribute: the device
    strategy (device.make_strategy); show_samples: the sample grid as one notebook output (None: in a notebook);
    source: the data's provenance and held-out reference (TrainSource). Nine parameters: the data, the run folder and
    the knobs the CLI, notebook 02 and the tests turn, passed on as one _Session.
    """
    cfg = cfg.validate()
    run = RunFolder(run_dir)
    x, y = _checked_data(cfg, images, labels)
    s = _Session(cfg, run, x, y, resume, progress, distribute, show_samples, source or TrainSource())
    with RunLock(run.path):
        try:
            return _train_locked(s)
        except OSError as e:  # disk full, read-only folder: every write is atomic, so the last checkpoint is intact
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise UserError(f"{run.path}: cannot write the run folder{where}: {e.strerror or e}; free disk space or "
                            f"make it writable, then rerun with --resume (the last complete checkpoint is kept)") from None


def quality_probe(cfg: GANConfig, x: np.ndarray, y: np.ndarray, reference: tuple[np.ndarray, np.ndarray, str] | None,
                  run_dir: Path | None = None, features: str = "domain") -> QualityProbe:
    """The run's quality probe; its classifier and real-vs-real baseline are kept in run_dir (if given) so that a
    resume scores alike (features: KID/PRDC's feature space, probe.build_probe). Diversity and train coverage
    compare with eval_n_per_class training images per class (all
    of a smaller class): as many as the synthetic images, so coverage is neither capped nor saturated."""
    if reference is not None and len(reference[0]):
        x_ref, y_ref, name = reference
        ref_name = f"{name} ({len(y_ref)} images)"
    else:
        x_ref, y_ref, ref_name = None, None, f"train split ({len(y)} images; no held-out split was given)"
    keep = cap_per_class(y, max(1, cfg.eval_n_per_class), cfg.seed)
    run = RunFolder(run_dir) if run_dir else None
    real = ProbeImages(x, y, x_ref, y_ref, ref_name, coverage_keep=keep)
    return build_probe(cfg.class_names, real, ProbeSettings(cfg.latent_dim, cfg.eval_n_per_class, cfg.seed, features),
                       classifier_path=run.classifier if run else None, baseline_path=run.baseline if run else None)


def _open(s: _Session) -> None:
    """Find the checkpoint to resume and the saved config.json; refuse a run folder that holds another run."""
    found = Checkpoints(s.run.path).load_latest()
    if found is not None and not s.resume:
        raise UserError(f"{s.run.path}: already holds a run (checkpoint {found.path.name}); pass --resume to continue "
                        f"it or choose another --run-dir")
    saved = cio.read_json(s.run.config) if s.run.config.is_file() else None
    if found is not None and saved is not None:
        _check_resumable(saved, s.cfg, s.run.path)
    s.found, s.saved = found, saved
    s.steps = _run_steps(len(s.x), s.cfg.batch_size, saved.get("data") if found is not None and saved else None)


def _data_record(s: _Session, per_call: int) -> dict[str, Any]:
    """config.json's "data": the caller's provenance, the class counts and priors, how the run executes."""
    cfg = s.cfg
    counts = dict(zip(cfg.class_names, (int(c) for c in np.bincount(s.y, minlength=cfg.num_classes)), strict=True))
    info = dict(s.source.info or {})
    info.update(n_train=int(len(s.y)), per_class=counts)
    # the prior of the labels the GAN trains on (after max_per_class), and the one its generated labels follow
    prior = {c: n / len(s.y) for c, n in counts.items()}
    info.update(class_prior=prior, generated_label_prior=prior if cfg.label_prior == "data"
                else {c: 1.0 / cfg.num_classes for c in cfg.class_names})
    info.update(precision_resolved=s.precision, replicas=s.replicas, steps_per_epoch=s.steps,
                steps_per_execution=per_call)
    if s.found is not None and s.saved is not None and "data" in s.saved:
        info = {**s.saved["data"], **info}
    return info


def _build(s: _Session, strategy: tf.distribute.Strategy, per_call: int) -> ConditionalGAN:
    """The GAN in the strategy's scope, the resumed checkpoint restored into it (a step that does not match the
    epoch is a UserError)."""
    class_counts = tuple(int(c) for c in np.bincount(s.y, minlength=s.cfg.num_classes))
    with strategy.scope():
        gan = build_gan(s.cfg, s.precision, per_call, class_counts=class_counts)
        if s.found is not None:
            f = s.found
            s.note = restore(gan, f, s.precision, s.replicas, (s.saved or {}).get("data", {}))
            if int(f.state["step"]) != f.epoch * s.steps:
                raise UserError(f"{f.path}: step {int(f.state['step'])} does not match epoch {f.epoch} x {s.steps} "
                                f"steps; the data or batch size changed since the run started")
            if s.note:
                print(s.note, file=sys.stderr)
    return gan


def _verbosity(progress: Any) -> int:
    """Keras's verbose for `progress`: "auto" is a progress bar on a terminal, one line per epoch elsewhere,
    notebooks included (a saved notebook keeps every redraw of a bar: a long run would weigh megabytes)."""
    if progress == "auto":
        return 1 if (sys.stdout.isatty() and not cio.in_notebook()) else 2
    return int(progress) if not isinstance(progress, bool) else (1 if progress else 0)


def _train_locked(s: _Session) -> dict[str, Any]:
    """Open the run, build (or restore) the GAN, write config.json and the first checkpoint, fit, save the generator."""
    cfg, run = s.cfg, s.run
    _open(s)
    interval = tracker.eval_interval(cfg.eval_every, s.steps)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    s.precision = resolve_precision(cfg.precision, cfg.deterministic)
    strategy = make_strategy(s.distribute)
    s.replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % s.replicas:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {s.replicas} devices")
    per_call = steps_per_execution(s.steps, s.replicas)
    info = _data_record(s, per_call)
    gan = _build(s, strategy, per_call)
    probe = None
    if interval:
        # after the checkpoint is accepted (a refused resume changes nothing) and after the GAN is built (its random
        # draws are keyed by (seed, step), so the classifier's training cannot change them); outside the strategy
        # scope, so the classifier is an ordinary one-device model. A fresh run never reuses another run's classifier.
        if s.found is None:
            run.classifier.unlink(missing_ok=True)
        probe = quality_probe(cfg, s.x, s.y, s.source.reference, run.path)
        info.update(quality_reference=probe.reference, quality_features=probe.extractor.name)
    meta = {"precision": s.precision, "replicas": s.replicas}
    with strategy.scope():
        # written only once the checkpoint restored: a refused resume leaves the run's config.json untouched
        cio.atomic_write_json(run.config, {**cfg.to_dict(), "data": info})
        if s.found is None:  # a fresh run is resumable (and has a last good state) at once
            start_epoch, ckpt_path = 0, Checkpoints(run.path).save(0, get_state(gan), meta)
        else:
            start_epoch, ckpt_path = s.found.epoch, s.found.path
        rows = read_metrics(run.metrics_csv, start_epoch)
        write_metrics(run.metrics_csv, rows)  # drop epochs after the checkpoint (a kill after metrics, before ckpt)
        show = cio.in_notebook() if s.show_samples is None else s.show_samples
        cb = RunCallback(run.path, gan, rows, s.steps, (start_epoch, ckpt_path), meta, show)
        if probe is not None:
            cb.tracker = tracker.QualityTracker(run.path, probe, interval, cfg.epochs, writer=cb.writer)
            cb.tracker.reconcile(start_epoch, int(gan.step.numpy()), gan.ema_generator)
        seconds = _fit(s, gan, cb, start_epoch)
        with cio.atomic_path(run.generator) as tmp:
            gan.ema_generator.save(tmp)
    return _summary(s, gan, cb, start_epoch, seconds)


def _fit(s: _Session, gan: ConditionalGAN, cb: RunCallback, start_epoch: int) -> float:
    """Keras fit from start_epoch to cfg.epochs; the seconds it took. An interrupt keeps the last completed epoch
    (RunCallback.on_interrupt); a divergence is TrainingDiverged naming the last good checkpoint."""
    cfg = s.cfg
    t0 = time.perf_counter()
    try:
        if start_epoch < cfg.epochs:
            ds = make_dataset(s.x, s.y, cfg.batch_size, cfg.seed, start_epoch, cfg.epochs, cfg.channels, s.steps)
            gan.fit(ds, epochs=cfg.epochs, initial_epoch=start_epoch, steps_per_epoch=s.steps,
                    verbose=_verbosity(s.progress), shuffle=False, callbacks=[cb])
    except KeyboardInterrupt:  # Ctrl-C, or a notebook's "interrupt kernel": keep the last completed epoch
        print(cb.on_interrupt(), file=sys.stderr)
        raise
    finally:
        cb.writer.close()
    if cb.bad is not None:
        cb.write_metrics()  # the good epochs since the last write, for reading (a resume trims them to the checkpoint)
        e, p = cb.last_good
        b = cb.bad
        raise TrainingDiverged(f"{s.run.path}: training diverged: {b['name']}={b['value']} at epoch {b['epoch']}, "
                               f"step {b['step']}; the last good checkpoint is {p} (epoch {e}); lower g_lr/d_lr and "
                               f"rerun with --resume")
    return time.perf_counter() - t0


def _summary(s: _Session, gan: ConditionalGAN, cb: RunCallback, start_epoch: int, seconds: float) -> dict[str, Any]:
    """What `train` returns: steps, speeds, precision, the last metrics row, the last quality row and the best."""
    last = cb.rows[-1] if cb.rows else {}
    q_rows = cb.tracker.rows if cb.tracker is not None else []
    return {
        "run_dir": str(s.run.path), "epochs": s.cfg.epochs, "resumed_from_epoch": start_epoch if s.found else None,
        "step": int(gan.step.numpy()), "seconds": seconds, "train_seconds": cb.train_seconds,
        "images_per_second": cb.images_seen / cb.train_seconds if cb.train_seconds else None,
        "wall_images_per_second": _steady_speed(cb.epoch_ends, s.steps * s.cfg.batch_size),
        "precision": s.precision, "replicas": s.replicas, "jit": bool(gan.jit_compile), "resume_note": s.note,
        "generator": str(s.run.generator),
        "metrics": {k: float(v) for k, v in last.items() if k != "epoch"} | ({"epoch": int(last["epoch"])} if last else {}),
        "quality": q_rows[-1] if q_rows else None, "best": tracker.load_best(s.run.path),
        "alarm": next((r["alarm"] for r in reversed(q_rows) if r.get("alarm")), None) if q_rows else None,
    }


def train_from_npz(npz: str | os.PathLike, run_dir: str | os.PathLike, cfg: GANConfig, resume: bool = False,
                   **kwargs: Any) -> dict[str, Any]:
    """Train on the `train` split of a cached dataset .npz (see cxr_utils.data); records its provenance and holds
    out its val split as the quality reference. Fit cfg to the data first with train_setup.assemble (the CLI and
    notebook 02 do); kwargs go to `train`."""
    npz = Path(npz)
    ds = data.load(npz)
    images, labels = ds.subset("train")
    x_val, y_val = ds.subset("val")
    if not len(images):
        raise UserError(f"--data {npz}: no images in the 'train' split")
    if images.ndim >= 3 and images.shape[1] != cfg.image_size:
        print(f"note: image_size set to {images.shape[1]} to match {npz.name}", file=sys.stderr)
        cfg = cfg.replace(image_size=int(images.shape[1]))
    manifest = data.manifest_path(npz)
    info = {"npz": str(npz.resolve()), "npz_sha256": cio.file_digest(npz), "manifest": str(manifest) if manifest.is_file() else None,
            "manifest_sha256": cio.file_digest(manifest) if manifest.is_file() else None, "split": "train"}
    drift = runs.cache_drift(run_dir, npz, info["npz_sha256"]) if resume else None
    if drift:  # one GAN trained on two different splits would be neither
        raise UserError(f"--data {drift}; resuming would mix the two: start a new run folder (notebook 02: FRESH = True) "
                        "or resume with the cache it was trained on")
    source = TrainSource(info, (x_val, y_val, "val split") if len(y_val) else None)
    return train(cfg, run_dir, images, labels, resume=resume, source=source, **kwargs)
