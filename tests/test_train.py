"""The trainer: run folder, exact resume (in process and after kill -9 of the CLI), NaN guard, lock, devices, precision."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cxr_utils import drawing
from cxr_utils import files as cio
from cxr_utils.cli import main as cli_main
from cxr_utils.config import GANConfig
from cxr_utils.errors import RunLocked, TrainingDiverged, UserError
from cxr_utils.gan import checkpoints as CK
from cxr_utils.gan import device, fit, runs
from cxr_utils.gan.checkpoints import get_state, legacy_keys, set_state, state_variables

ROOT = Path(__file__).resolve().parent.parent


def tiny_cfg(**kw) -> GANConfig:
    """A seconds-sized model: 32 px, 1 channel, 4-8 filters; a checkpoint and a sample grid every epoch."""
    base = dict(image_size=32, channels=1, g_base_filters=8, d_base_filters=8, latent_dim=16, embed_dim=4, epochs=2,
                batch_size=8, precision="fp32", deterministic=True, n_fixed_noise=3, seed=7, checkpoint_every=1,
                checkpoint_minutes=0, sample_every=1)
    return GANConfig(**{**base, **kw})


def tiny_data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Smooth class-dependent blobs (not noise) so losses move like on images."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    labels = np.arange(n) % 2
    imgs = []
    for lab in labels:
        cy, cx = rng.uniform(10, 22, 2)
        r = 6 if lab == 0 else 11
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        imgs.append(np.clip(255 * blob + rng.normal(0, 8, blob.shape), 0, 255).astype(np.uint8))
    return np.stack(imgs), labels


def _same_state(a: Path, b: Path) -> list[str]:
    """Names of checkpoint arrays that differ (empty = bit-identical)."""
    x, y = cio.load_npz(a), cio.load_npz(b)
    assert set(x) == set(y)
    return [k for k in x if not np.array_equal(x[k], y[k])]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ref_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One uninterrupted deterministic 2-epoch run shared by the read-only tests."""
    run = tmp_path_factory.mktemp("ref") / "run"
    x, y = tiny_data()
    out = fit.train(tiny_cfg(), run, x, y, progress=False, source=fit.TrainSource({"npz": "in-memory"}))
    return run, out


# ---------------------------------------------------------------- run folder and generator

def test_run_folder_contents(ref_run: tuple[Path, dict]) -> None:
    run, out = ref_run
    assert out["step"] == 2 * (40 // 8) and out["precision"] == "fp32" and out["replicas"] == 1
    cfgd = cio.read_json(run / "config.json")
    assert GANConfig.from_dict({k: v for k, v in cfgd.items() if k != "data"}) == tiny_cfg()
    assert cfgd["data"]["npz"] == "in-memory" and cfgd["data"]["n_train"] == 40
    assert cfgd["data"]["per_class"] == {"NORMAL": 20, "PNEUMONIA": 20}
    # new runs draw generated labels from the training labels' prior, recorded beside the counts
    assert cfgd["label_prior"] == "data"
    assert cfgd["data"]["class_prior"] == cfgd["data"]["generated_label_prior"] == {"NORMAL": 0.5, "PNEUMONIA": 0.5}
    rows = _rows(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == fit.METRIC_COLUMNS
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in fit.METRIC_COLUMNS)
        assert all(0.0 <= float(r[k]) <= 1.0 for k in fit.METRIC_COLUMNS if "acc" in k)
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["epoch-0001.png", "epoch-0002.png"]
    with Image.open(run / "samples" / "epoch-0002.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]  # 3 columns x 2 class rows + titles
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    ck = CK.Checkpoints(run)
    assert [p.name for p in ck.files()] == ["ckpt-0002.npz", "ckpt-0001.npz"]  # the last 2 are kept
    assert cio.read_json(ck.dir / "latest.json") == {"file": "ckpt-0002.npz", "epoch": 2, "step": 10}
    assert not list(run.rglob("*.part*"))  # no temp files left behind


def test_generator_loads_safe_mode_and_is_the_ema(ref_run: tuple[Path, dict]) -> None:
    run, _ = ref_run
    g, cfg = runs.load_generator(run)
    assert cfg == tiny_cfg()
    z = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    x = g.predict([z, np.array([0, 1, 0, 1, 1], np.int32)], verbose=0)
    assert x.shape == (5, 32, 32, 1) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    ck = cio.load_npz(run / "checkpoints" / "ckpt-0002.npz")
    # checkpoint keys are the variables' paths: the loaded model's variables find their arrays by name
    ema = [ck["ema_generator." + v.path.replace("/", ".")] for v in g.variables]
    assert len(ema) == sum(1 for k in ck if k.startswith("ema_generator."))
    assert all(np.array_equal(a, np.asarray(v)) for a, v in zip(ema, g.variables, strict=True))
    assert not np.array_equal(ck["ema_generator.project.kernel"], ck["generator.project.kernel"])  # EMA differs from G


def test_load_generator_missing_or_foreign_file_is_a_user_error(ref_run: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no generator.keras"):
        runs.load_generator(tmp_path / "nothing")
    run = tmp_path / "run"
    shutil.copytree(ref_run[0], run)
    (run / "generator.keras").write_bytes(b"PK\x03\x04 not a keras archive")
    with pytest.raises(UserError, match="generator.keras: not a generator written by `train`"):
        runs.load_generator(run)


# ---------------------------------------------------------------- exact resume

def test_resume_in_process_is_bit_identical_and_truncates_metrics(ref_run: tuple[Path, dict], tmp_path: Path) -> None:
    ref, _ = ref_run
    run = tmp_path / "run"
    x, y = tiny_data()
    fit.train(tiny_cfg(epochs=1), run, x, y, progress=False)
    # an existing run needs --resume, and the settings that define it cannot change
    with pytest.raises(UserError, match="already holds a run .*--resume"):
        fit.train(tiny_cfg(epochs=2), run, x, y, progress=False)
    with pytest.raises(UserError, match="trained with latent_dim=16, now latent_dim=32"):
        fit.train(tiny_cfg(epochs=2, latent_dim=32), run, x, y, resume=True, progress=False)
    assert cio.read_json(run / "config.json")["latent_dim"] == 16  # a refused resume leaves config.json alone
    # a kill after metrics.csv got epoch 2's row but before its checkpoint: resume must drop that row
    with open(run / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write("2,9,9,0,0,0,0,1,1\n")
    out = fit.train(tiny_cfg(epochs=2), run, x, y, resume=True, progress=False)
    assert out["resumed_from_epoch"] == 1
    assert _same_state(ref / "checkpoints" / "ckpt-0002.npz", run / "checkpoints" / "ckpt-0002.npz") == []
    a, b = _rows(ref / "metrics.csv"), _rows(run / "metrics.csv")
    assert [r["epoch"] for r in b] == ["1", "2"]
    assert [r["d_loss"] for r in a] == [r["d_loss"] for r in b] and [r["g_loss"] for r in a] == [r["g_loss"] for r in b]
    out = fit.train(tiny_cfg(epochs=2), run, x, y, resume=True, progress=False)  # already complete: nothing to train
    assert out["step"] == 10 and out["resumed_from_epoch"] == 2 and out["train_seconds"] == 0.0


def _imbalanced_data() -> tuple[np.ndarray, np.ndarray]:
    """12 NORMAL and 36 PNEUMONIA blobs (1 : 3, as the Kaggle set)."""
    x, y = tiny_data(80)
    keep = np.concatenate([np.flatnonzero(y == 0)[:12], np.flatnonzero(y == 1)[:36]])
    return x[keep], y[keep]


@pytest.mark.parametrize("label_prior", ["data", "balanced"])
def test_the_prior_is_the_capped_training_labels_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                label_prior: str) -> None:
    """max_per_class=24 leaves 12 / 24 of the 12 / 36 images: the GAN gets those counts (prior 1/3, 2/3) and
    config.json records them under "data"; its generated labels follow them with "data", 1/2 each with "balanced"."""
    x, y = _imbalanced_data()
    got: list[tuple] = []
    real_build = device.build_gan

    def build(*args, **kwargs):
        gan = real_build(*args, **kwargs)
        got.append((kwargs.get("class_counts"), gan.class_counts))
        return gan

    monkeypatch.setattr(fit, "build_gan", build)
    run = tmp_path / "run"
    fit.train(tiny_cfg(epochs=1, max_per_class=24, label_prior=label_prior, sample_every=5), run, x, y, progress=False)
    assert got == [((12, 24), (1, 2))]  # passed as counted, kept as the smallest integers of that prior
    info = cio.read_json(run / "config.json")["data"]
    assert info["per_class"] == {"NORMAL": 12, "PNEUMONIA": 24}
    assert info["class_prior"] == {"NORMAL": 12 / 36, "PNEUMONIA": 24 / 36}
    assert info["generated_label_prior"] == (info["class_prior"] if label_prior == "data"
                                             else {"NORMAL": 0.5, "PNEUMONIA": 0.5})


def test_a_config_json_without_label_prior_resumes_as_balanced_bit_identically(
        sample_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run whose config.json predates label_prior trained with balanced labels: the CLI resumes it so, bit for bit
    against an uninterrupted "balanced" run, and refuses a --config that says otherwise."""
    def cfg_file(name: str, **kw) -> str:
        d = tiny_cfg(image_size=64, batch_size=4, eval_every=-1, sample_every=5, **kw).to_dict()
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d), encoding="utf-8")
        return str(path)

    def train(run: Path, *args: str) -> int:
        return cli_main(["train", "--data", str(sample_npz), "--run-dir", str(run), *args])

    legacy = tmp_path / "legacy"
    assert train(legacy, "--config", cfg_file("bal1", epochs=1, label_prior="balanced")) == 0
    saved = cio.read_json(legacy / "config.json")
    del saved["label_prior"]  # as every run before the field wrote it
    cio.atomic_write_json(legacy / "config.json", saved)
    assert runs.config_of(saved).label_prior == "balanced"
    capsys.readouterr()
    assert train(legacy, "--resume", "--config", cfg_file("data2", epochs=2)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained with label_prior='balanced', now label_prior='data'" in err
    assert train(legacy, "--resume", "--epochs", "2") == 0  # the saved config.json defines the run
    assert cio.read_json(legacy / "config.json")["label_prior"] == "balanced"  # now written out
    ref = tmp_path / "ref"
    assert train(ref, "--config", cfg_file("bal2", epochs=2, label_prior="balanced")) == 0
    # bit-identical to the uninterrupted balanced run; a "data" run draws other labels (tests/test_gan.py
    # test_the_train_step_draws_its_labels_from_the_prior), so resuming with "data" would not be
    last = Path("checkpoints") / "ckpt-0002.npz"
    assert _same_state(ref / last, legacy / last) == []


def test_checkpoints_fall_back_past_damaged_files(tmp_path: Path) -> None:
    ck = CK.Checkpoints(tmp_path)
    for e in (1, 2, 3):
        ck.save(e, {"step": np.int64(e * 5), "g/0000": np.full(3, e, np.float32)})
    assert [p.name for p in ck.files()] == ["ckpt-0003.npz", "ckpt-0002.npz"]
    (ck.dir / ".ckpt-0004.npz.part123.npz").write_bytes(b"half")  # an interrupted write's temp file
    p3 = ck.path(3)
    p3.write_bytes(p3.read_bytes()[:50])  # a damaged newest file (cannot happen via atomic writes, but disks fail)
    epoch, state, path, meta = ck.load_latest()
    assert (epoch, path.name, state["g/0000"].tolist(), meta) == (2, "ckpt-0002.npz", [2.0, 2.0, 2.0], {})


def _cli_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")


# (kill -9 + --resume bit-exactness: tests/reliability/test_kill_resume.py, four kills in one run)


# ---------------------------------------------------------------- guards

def test_nan_guard_stops_names_the_loss_and_keeps_the_last_good_checkpoint(ref_run: tuple[Path, dict],
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ref_run[0], run)
    x, y = tiny_data()
    with pytest.raises(TrainingDiverged) as ei:
        fit.train(tiny_cfg(epochs=4, g_lr=1e30, d_lr=1e30), run, x, y, resume=True, progress=False)
    msg = str(ei.value)
    assert "diverged" in msg and "_loss=nan" in msg and "at epoch 3, step 11" in msg
    assert "ckpt-0002.npz (epoch 2)" in msg and "--resume" in msg
    epoch, state, _, _ = CK.Checkpoints(run).load_latest()
    assert epoch == 2 and all(np.isfinite(v).all() for v in state.values())
    assert [r["epoch"] for r in _rows(run / "metrics.csv")] == ["1", "2"]
    assert not (run / "samples" / "epoch-0003.png").exists()
    # the kept checkpoint resumes: sane learning rates finish the run
    out = fit.train(tiny_cfg(epochs=3), run, x, y, resume=True, progress=False)
    assert out["metrics"]["epoch"] == 3 and np.isfinite(out["metrics"]["d_loss"])


def test_lock_refuses_a_second_trainer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    x, y = tiny_data()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cxr_utils.gan.checkpoints import RunLock
        with RunLock({str(run)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], env=_cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"another trainer \\(pid {holder.pid}\\)") as ei:
            fit.train(tiny_cfg(epochs=1), run, x, y, progress=False)
        assert str(run) in str(ei.value)
        assert not (run / "checkpoints").exists()  # refused before touching anything
    finally:
        holder.kill()
        holder.wait()
    with CK.RunLock(run) as lock:  # the OS released the killed holder's lock
        assert (run / "lock").read_text().strip() == str(os.getpid()) and lock.fd is not None


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    x, y = tiny_data()
    with pytest.raises(UserError, match=r"images: expected uint8 \(N, 64, 64"):
        fit.train(tiny_cfg(image_size=64), tmp_path / "a", x, y, progress=False)
    with pytest.raises(UserError, match="labels"):
        fit.train(tiny_cfg(), tmp_path / "b", x, y + 5, progress=False)
    with pytest.raises(UserError, match="fewer than batch_size"):
        fit.train(tiny_cfg(batch_size=64), tmp_path / "c", x, y, progress=False)
    with pytest.raises(UserError, match="--data .*not found"):
        fit.train_from_npz(tmp_path / "missing.npz", tmp_path / "d", tiny_cfg())
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot create the run folder"):
        fit.train(tiny_cfg(), tmp_path / "file" / "run", x, y, progress=False)


def test_cap_per_class_and_epoch_order() -> None:
    labels = np.array([0] * 10 + [1] * 3)
    keep = fit.cap_per_class(labels, 4, seed=1)
    assert np.bincount(labels[keep]).tolist() == [4, 3]
    assert np.array_equal(keep, fit.cap_per_class(labels, 4, seed=1))
    assert np.array_equal(fit.epoch_order(3, 5, 100), fit.epoch_order(3, 5, 100))
    assert not np.array_equal(fit.epoch_order(3, 5, 100), fit.epoch_order(3, 6, 100))


# ---------------------------------------------------------------- precision and devices

def test_precision_resolution() -> None:
    assert device.cpu_supports_bf16("flags\t: fpu sse avx512f avx512_bf16\n")
    assert device.cpu_supports_bf16("flags\t: fpu amx_bf16 amx_tile\n")
    assert not device.cpu_supports_bf16("flags\t: fpu sse avx2\n")
    assert device.resolve_precision("fp16") == "fp16" and device.resolve_precision("auto", deterministic=True) == "fp32"
    expected = "bf16" if device.cpu_supports_bf16() else "fp32"  # this machine has no GPU
    assert device.resolve_precision("auto") == expected


def test_precision_auto_has_no_tpu_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TPU that TensorFlow lists is not used (no TPUStrategy connects it): the CPU decides, as on a Colab TPU runtime."""
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["/physical_device:TPU:0"]
                        if kind == "TPU" else [])
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda cpuinfo=None: False)
    assert device.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(device, "cpu_supports_bf16", lambda cpuinfo=None: True)
    assert device.resolve_precision("auto") == "bf16"


def test_bf16_and_fp16_build_and_train_one_step(tmp_path: Path) -> None:
    x, y = tiny_data(16)
    for prec in ("bf16", "fp16"):
        out = fit.train(tiny_cfg(epochs=1, precision=prec, deterministic=False), tmp_path / prec, x, y, progress=False)
        assert out["precision"] == prec and np.isfinite(out["metrics"]["g_loss"])
    fp16 = cio.load_npz(tmp_path / "fp16" / "checkpoints" / "ckpt-0001.npz")
    bf16 = cio.load_npz(tmp_path / "bf16" / "checkpoints" / "ckpt-0001.npz")
    # the same keys, plus the loss-scale state of each optimizer
    assert sorted(set(fp16) - set(bf16)) == [f"{o}.loss_scale.{k}" for o in ("d_opt", "g_opt")
                                             for k in ("dynamic_scale", "iteration", "step_counter")]
    assert set(bf16) - set(fp16) == set() and (str(fp16["meta_precision"]), str(bf16["meta_precision"])) == ("fp16", "bf16")
    g, _ = runs.load_generator(tmp_path / "bf16")
    assert g.get_layer("up0_conv").compute_dtype == "float32"  # the exported EMA generator is plain float32


TWO_DEVICES = """
import json, shutil, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
sys.path.insert(0, {tests!r})
from test_train import tiny_cfg, tiny_data
from cxr_utils import files as cio
from cxr_utils.gan import checkpoints as CK
from cxr_utils.gan import device
from cxr_utils.gan import fit
from cxr_utils.gan.checkpoints import get_state
x, y = tiny_data(32)
cfg = tiny_cfg(epochs=2, deterministic=False)
out = {out!r}
one = fit.train(cfg, out + "/one", x, y, progress=False, distribute="default")
two = fit.train(cfg, out + "/two", x, y, progress=False, distribute="mirrored")

def diff(p, q):
    a, b = cio.load_npz(p), cio.load_npz(q)
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a if a[k].size and not k.startswith("meta"))

res = {{"replicas": [one["replicas"], two["replicas"]], "diff": diff(out + "/one/checkpoints/ckpt-0002.npz",
        out + "/two/checkpoints/ckpt-0002.npz"), "steps": [one["step"], two["step"]], "m1": one["metrics"],
        "m2": two["metrics"], "resume": {{}}}}
# resume across device counts: epoch 1 on one layout, epoch 2 on the other
for first, second, ref in (("default", "mirrored", "one"), ("mirrored", "default", "two")):
    run = out + "/" + first + "-then-" + second
    shutil.copytree(out + "/" + ref, run)
    for p in ("ckpt-0002.npz", "latest.json"):  # back to epoch 1
        (fit.Path(run) / "checkpoints" / p).unlink()
    # the weights right after restore equal the checkpoint's, on the new layout
    found = CK.Checkpoints(run).load_latest()
    strategy = device.make_strategy(second)
    with strategy.scope():
        gan = device.build_gan(cfg, "fp32")
        note = CK.restore(gan, found, "fp32", strategy.num_replicas_in_sync, {{}})
    restored = get_state(gan)
    exact = all(np.array_equal(restored[k], found.state[k]) for k in restored)
    r = fit.train(cfg, run, x, y, resume=True, progress=False, distribute=second)
    res["resume"][first + "->" + second] = {{"note": note, "train_note": r["resume_note"], "exact": exact,
        "step": r["step"], "replicas": r["replicas"], "diff_to_uninterrupted": diff(run + "/checkpoints/ckpt-0002.npz",
        out + "/" + ref + "/checkpoints/ckpt-0002.npz")}}
print(json.dumps(res))
"""


@pytest.mark.slow  # ~1 min (two logical devices in a subprocess): make test-slow, which CI runs after make test
@pytest.mark.timeout(600)
def test_two_devices_match_one_device_and_resume_across_device_counts(tmp_path: Path) -> None:
    code = TWO_DEVICES.format(tests=str(ROOT / "tests"), out=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["replicas"] == [1, 2] and res["steps"] == [8, 8]
    # same global batch, same per-example draws: only the summation order differs between 1 and 2 devices
    assert res["diff"] < 1e-4, res
    for k in ("d_loss", "g_loss"):
        assert abs(res["m1"][k] - res["m2"][k]) < 1e-4, res
    for (a, b), rec in zip([(1, 2), (2, 1)], res["resume"].values(), strict=True):
        assert rec["note"] == rec["train_note"] == f"resume: devices {a} -> {b}", rec
        assert rec["exact"] and rec["step"] == 8 and rec["replicas"] == b, rec
        assert rec["diff_to_uninterrupted"] < 1e-4, rec  # it trained on: epoch 2 as the uninterrupted run's


def test_cli_bad_data_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(["train", "--data", str(tmp_path / "none.npz"), "--run-dir", str(tmp_path / "run"), "--smoke"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--data" in err and "prepare" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros(3))
    assert cli_main(["train", "--data", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert "has no 'images' array" in capsys.readouterr().err


def test_train_from_npz_on_the_real_sample_records_provenance(sample_npz: Path, tmp_path: Path) -> None:
    import hashlib

    from cxr_utils import data
    from cxr_utils.config import smoke_overrides

    cfg = GANConfig(**{**smoke_overrides(), "epochs": 1, "batch_size": 4, "precision": "fp32"})
    out = fit.train_from_npz(sample_npz, tmp_path / "run", cfg, progress=False)
    ds = data.load(sample_npz)
    _, y = ds.subset("train")
    info = cio.read_json(tmp_path / "run" / "config.json")["data"]
    manifest = sample_npz.with_name("sample-64.manifest.json")
    assert info["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert info["npz_sha256"] == hashlib.sha256(sample_npz.read_bytes()).hexdigest() and info["split"] == "train"
    assert info["per_class"] == {"NORMAL": int((y == 0).sum()), "PNEUMONIA": int((y == 1).sum())}
    assert out["step"] == len(y) // 4
    g, _ = runs.load_generator(tmp_path / "run")
    assert g.output_shape == (None, 64, 64, 3)


def test_dataset_order_is_a_pure_function_of_seed_and_epoch() -> None:
    x = (np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 32, 32), np.uint8) * 20)[..., None]  # value = 20 * index
    y = np.arange(10) % 2
    batches = list(fit.make_dataset(x, y, 4, seed=3, first_epoch=1, epochs=3, channels=3).as_numpy_iterator())
    assert len(batches) == 2 * (10 // 4) and batches[0][0].shape == (4, 32, 32, 3) and batches[0][0].dtype == np.float32
    seen = np.concatenate([np.rint((b[0][:, 0, 0, 0] + 1.0) * 127.5 / 20).astype(int) for b in batches])
    expected = np.concatenate([fit.epoch_order(3, e, 10)[:8] for e in (1, 2)])
    assert seen.tolist() == expected.tolist()
    assert np.concatenate([b[1] for b in batches]).tolist() == (expected % 2).tolist()
    assert all(np.array_equal(b[0][..., 0], b[0][..., 2]) for b in batches)  # grey copied into 3 channels
    tail = list(fit.make_dataset(x, y, 4, seed=3, first_epoch=2, epochs=3, channels=3).as_numpy_iterator())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches[2:], tail, strict=True))  # resume = same batches


def test_cli_recipe_projection_trains_and_is_saved_and_resume_refuses_a_new_recipe(
        sample_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cxr_utils.config import RECIPES, recipe

    run = tmp_path / "run"
    args = ["train", "--data", str(sample_npz), "--run-dir", str(run), "--smoke", "--epochs", "1", "--batch-size", "4",
            "--precision", "fp32"]
    assert cli_main([*args, "--recipe", "projection"]) == 0
    saved = cio.read_json(run / "config.json")
    assert {k: saved[k] for k in RECIPES["projection"]} == {"norm": "none", "adv_loss": "hinge", "projection": True,
                                                            "g_class_loss_weight": 0.0}
    assert saved["g_base_filters"] == 16  # --smoke still applies on top of the recipe
    g, cfg = runs.load_generator(run)
    assert cfg.projection and g.output_shape == (None, 64, 64, 3)
    capsys.readouterr()
    assert cli_main([*args, "--resume", "--recipe", "seed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--recipe" in err and "saved config.json" in err
    # the seed recipe restores the defaults, None included
    assert GANConfig(projection=True, g_class_loss_weight=0.0).with_recipe("seed") == GANConfig()
    with pytest.raises(UserError, match=r"recipe 'sngan': unknown; choose one of \['projection', 'seed', 'xray', 'xray-ln', 'xray-v1'\]"):
        recipe("sngan")


def test_label_prior_is_validated_and_no_recipe_sets_it() -> None:
    from cxr_utils.config import LEGACY_VALUES, RECIPES, saved_fields

    with pytest.raises(UserError, match="label_prior must be data|balanced, got 'uniform'"):
        GANConfig(label_prior="uniform").validate()
    # the data's prior is a correction, not a recipe trait: every recipe (seed included) trains with the default
    assert all("label_prior" not in fields for fields in RECIPES.values())
    assert {GANConfig().with_recipe(r).label_prior for r in RECIPES} == {"data"}
    # config.json without the field: the value its run trained with; with it: its own value; "data" is provenance
    assert LEGACY_VALUES == {"label_prior": "balanced"}
    assert saved_fields({"seed": 3, "data": {"n_train": 4}}) == {"label_prior": "balanced", "seed": 3}
    assert saved_fields({"label_prior": "data"}) == {"label_prior": "data"}


# ---------------------------------------------------------------- resume across precisions and key formats

PRECISIONS = ("fp32", "bf16", "fp16")


def tiny16(**kw) -> GANConfig:
    """The smallest model (16 px, 4 filters, batch 4): fp16 runs on CPU, slowly."""
    return tiny_cfg(**{**dict(image_size=16, g_base_filters=4, d_base_filters=4, latent_dim=8, embed_dim=2, batch_size=4,
                              n_fixed_noise=2, deterministic=False), **kw})


def data16() -> tuple[np.ndarray, np.ndarray]:
    x, y = tiny_data(8)
    return np.ascontiguousarray(x[:, ::2, ::2]), y


@pytest.fixture(scope="module")
def one_epoch_per_precision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished epoch in each precision (runs/<precision>)."""
    base = tmp_path_factory.mktemp("precisions")
    x, y = data16()
    for p in PRECISIONS:
        fit.train(tiny16(epochs=1, precision=p), base / p, x, y, progress=False)
    return base


@pytest.mark.parametrize(("was", "now"), [(a, b) for a in PRECISIONS for b in PRECISIONS if a != b])
def test_resume_across_precisions(one_epoch_per_precision: Path, tmp_path: Path, was: str, now: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(one_epoch_per_precision / was, run)
    found = CK.Checkpoints(run).load_latest()
    assert found.meta == {"precision": was, "replicas": 1}
    # right after restore, every weight and optimizer slot equals the checkpoint's (cast to the variable's dtype)
    gan = device.build_gan(tiny16(precision=now), now)
    note = CK.restore(gan, found, now, 1, {})
    restored = get_state(gan)
    common = set(restored) & set(found.state)
    assert common == {k for k in restored if "/loss_scale/" not in k}
    assert all(np.array_equal(restored[k], found.state[k].astype(restored[k].dtype)) for k in common)
    if now == "fp16":
        expected = f"resume: precision {was} -> fp16: loss scale state created (initial scale 32768)"
        assert float(restored["g_opt/loss_scale/dynamic_scale"]) == 2.0**15
    elif was == "fp16":
        expected = f"resume: precision fp16 -> {now}: loss scale state dropped (last scale {CK._scales(found.state)})"
    else:
        expected = f"resume: precision {was} -> {now}"
    assert note == expected
    # and the resumed run trains on, in the new precision (6 steps: fp16 skips its first steps while the loss scale
    # comes down from 32768 to a value whose gradients are finite)
    x, y = data16()
    out = fit.train(tiny16(epochs=4, precision=now), run, x, y, resume=True, progress=False)
    assert out["resume_note"] == expected and out["precision"] == now and out["step"] == 8
    assert np.isfinite(out["metrics"]["d_loss"]) and np.isfinite(out["metrics"]["g_loss"])
    after = CK.Checkpoints(run).load_latest()
    assert after.epoch == 4 and after.meta["precision"] == now
    assert any("/loss_scale/" in k for k in after.state) == (now == "fp16")
    for k in ("generator/project/kernel", "discriminator/down0_conv/kernel"):
        assert not np.array_equal(after.state[k], found.state[k]), k


def _positional(state: dict[str, np.ndarray], gan) -> dict[str, np.ndarray]:
    """A state in the checkpoint format before issue 11: g/0000 ... numbered by each list's order (learning rates
    skipped but counted), as the old ConditionalGAN.state_variables wrote it."""
    key_of = {id(v): k for k, v in state_variables(gan).items()}
    old = {"step": state["step"]}
    for prefix, model in (("g", gan.generator), ("d", gan.discriminator), ("ema", gan.ema_generator)):
        old.update({f"{prefix}/{i:04d}": state[key_of[id(v)]] for i, v in enumerate(model.variables)})
    for prefix, opt in (("gopt", gan.g_optimizer), ("dopt", gan.d_optimizer)):
        old.update({f"{prefix}/{i:04d}": state[key_of[id(v)]] for i, v in enumerate(opt.variables)
                    if not v.path.endswith("learning_rate")})
    return old


def test_old_positional_checkpoints_still_resume_bit_identical(ref_run: tuple[Path, dict], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    ref, _ = ref_run
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    ck = CK.Checkpoints(run)
    for p in ck.dir.iterdir():
        p.unlink()
    epoch1 = {k.replace(".", "/"): v for k, v in cio.load_npz(ref / "checkpoints" / "ckpt-0001.npz").items()
              if not k.startswith("meta")}
    gan = device.build_gan(tiny_cfg(), "fp32")
    cio.atomic_save_npz(ck.path(1), compress=False, meta_epoch=np.int64(1),
                        **{k.replace("/", "."): v for k, v in _positional(epoch1, gan).items()})
    x, y = tiny_data()
    capsys.readouterr()
    out = fit.train(tiny_cfg(epochs=2), run, x, y, resume=True, progress=False)
    line = "resume: old positional checkpoint format, mapped onto today's variables by their order"
    assert out["resume_note"] == line and capsys.readouterr().err.count(line) == 1
    assert _same_state(ref / "checkpoints" / "ckpt-0002.npz", run / "checkpoints" / "ckpt-0002.npz") == []
    # an old checkpoint of another model: one line naming the file
    other = tmp_path / "other"
    shutil.copytree(run, other)
    for p in (other / "checkpoints").iterdir():
        p.unlink()
    small = _positional(epoch1, gan)
    n = len(gan.generator.variables)
    del small[f"g/{n - 1:04d}"]
    cio.atomic_save_npz(CK.Checkpoints(other).path(1), compress=False, meta_epoch=np.int64(1),
                        **{k.replace("/", "."): v for k, v in small.items()})
    with pytest.raises(UserError, match=rf"ckpt-0001.npz: old-format checkpoint has {n - 1} generator variables, the "
                                        rf"model has {n}; resume with the run's own config") as ei:
        fit.train(tiny_cfg(epochs=2), other, x, y, resume=True, progress=False)
    assert "\n" not in str(ei.value)


def test_old_positional_layouts_map_for_both_optimizer_kinds() -> None:
    cfg = tiny16()
    for was, now in (("fp16", "fp32"), ("fp32", "fp16")):
        src = device.build_gan(cfg, was)
        rng = np.random.default_rng(0)
        for v in state_variables(src).values():  # distinct values, so a wrong mapping cannot pass
            if v.dtype == "float32":
                v.assign(rng.normal(size=v.shape).astype(np.float32))
        state = get_state(src)
        dst = device.build_gan(cfg, now)
        mapping = legacy_keys(dst, _positional(state, src))
        mapped = {mapping.get(k, k): v for k, v in _positional(state, src).items()}
        assert mapped.keys() == state.keys() and all(np.array_equal(mapped[k], state[k]) for k in state)
        set_state(dst, mapped)


# ---------------------------------------------------------------- the loop: cadence, interruption, display, guard

def test_checkpoint_and_sample_cadence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[int] = []
    real = CK.Checkpoints.save

    def spy(self, epoch, state, meta=None):
        saved.append(epoch)
        return real(self, epoch, state, meta)

    monkeypatch.setattr(CK.Checkpoints, "save", spy)
    x, y = data16()
    # every 2 epochs; every epoch once a (tiny) time has passed; every epoch but at most every 10 minutes: the end only
    for every, minutes, expected in ((2, 0.0, [0, 2, 3]), (1, 1e-9, [0, 1, 2, 3]), (1, 10.0, [0, 3])):
        saved.clear()
        run = tmp_path / f"{every}-{minutes}"
        fit.train(tiny16(epochs=3, checkpoint_every=every, checkpoint_minutes=minutes, sample_every=2), run, x, y,
                progress=False)
        assert saved == expected, (every, minutes)
        assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch-0002.png", "epoch-0003.png"]
    assert GANConfig().checkpoint_minutes >= 1  # by default no 100 MB write after every short epoch


def test_interrupt_between_epochs_checkpoints_the_last_epoch(ref_run: tuple[Path, dict], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    ref, _ = ref_run
    run = tmp_path / "run"
    x, y = tiny_data()
    real = fit.RunCallback.record

    def interrupted_record(self, e, *a, **k):  # Ctrl-C while epoch 2's end work runs: its row is recorded, its
        row = real(self, e, *a, **k)  # weights final, its sample grid and checkpoint not written yet
        if e == 2:
            raise KeyboardInterrupt
        return row

    monkeypatch.setattr(fit.RunCallback, "record", interrupted_record)
    # one step per fit call (the reference ran 5): the same state, bit for bit, and a mid-epoch moment to interrupt
    monkeypatch.setattr(device, "MAX_STEPS_PER_EXECUTION", 1)
    cfg = tiny_cfg(epochs=3, checkpoint_every=10, checkpoint_minutes=0)
    with pytest.raises(KeyboardInterrupt):
        fit.train(cfg, run, x, y, progress=False)
    ckpt = run / "checkpoints" / "ckpt-0002.npz"
    assert f"interrupted: wrote checkpoint {ckpt} (epoch 2); rerun with --resume" in capsys.readouterr().err
    assert _same_state(ref / "checkpoints" / "ckpt-0002.npz", ckpt) == []  # exactly the end of epoch 2
    assert [r["epoch"] for r in _rows(run / "metrics.csv")] == ["1", "2"]
    # the rest of epoch 2's end work was done first: its grid is the uninterrupted run's
    assert (run / "samples" / "epoch-0002.png").read_bytes() == (ref / "samples" / "epoch-0002.png").read_bytes()
    monkeypatch.setattr(fit.RunCallback, "record", real)

    def mid_epoch(self, batch, logs=None):  # Ctrl-C during epoch 3: the state is between epochs, not saved
        if batch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit.RunCallback, "on_train_batch_begin", mid_epoch, raising=False)
    with pytest.raises(KeyboardInterrupt):
        fit.train(cfg, run, x, y, resume=True, progress=False)
    assert f"interrupted: the last checkpoint is {ckpt} (epoch 2)" in capsys.readouterr().err
    assert CK.Checkpoints(run).load_latest().epoch == 2 and len(_rows(run / "metrics.csv")) == 2
    monkeypatch.undo()
    out = fit.train(cfg, run, x, y, resume=True, progress=False)
    assert out["resumed_from_epoch"] == 2 and out["step"] == 15


def test_notebook_shows_one_sample_grid_updated_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display as ipd

    calls: list[tuple[str, object]] = []

    class Handle:
        def update(self, obj):
            calls.append(("update", obj.data))

    def fake_display(obj, display_id=None):
        calls.append(("display", display_id))
        return Handle()

    monkeypatch.setattr(ipd, "display", fake_display)
    x, y = data16()
    fit.train(tiny16(epochs=3), tmp_path / "run", x, y, progress=False, show_samples=True)
    assert [c[0] for c in calls] == ["display", "update", "update"] and calls[0][1] is True
    last = (tmp_path / "run" / "samples" / "epoch-0003.png").read_bytes()
    assert calls[-1][1] == last and len(last) < 40_000  # a small PNG composed from pixels, not a figure


def test_pixel_grid_places_each_image_and_titles() -> None:
    rows = [np.full((2, 4, 4, 1), -1.0, np.float32), np.zeros((1, 4, 4, 3), np.float32)]
    g = drawing.pixel_grid(rows)  # no titles: 2 px padding around 4 px cells
    expected = np.full((14, 14), 255, np.uint8)
    expected[2:6, 2:6] = expected[2:6, 8:12] = 0  # -1 -> black
    expected[8:12, 2:6] = 128  # 0 -> mid grey (3 channels averaged)
    assert np.array_equal(g, expected)
    titled = drawing.pixel_grid(rows, row_titles=["NORMAL", "PNEUMONIA"], title="epoch 3")
    assert titled.dtype == np.uint8 and titled.shape[0] > 14 and titled.shape[1] > 14 + 40  # a left strip and a header
    assert (titled[:, :40] < 128).any()  # the row titles are drawn


def test_every_training_set_size_syncs_at_most_every_8_steps_and_drops_at_most_3_batches() -> None:
    # PneumoniaMNIST's 4,708 training images at batch 64: 73 full batches, no divisor in 8..16 -> 72 steps, 12 per call
    assert (device.epoch_steps(4708, 64), device.steps_per_execution(device.epoch_steps(4708, 64))) == (72, 12)
    # Kaggle-sized train sets of 58, 59, 61, 62, 65, 67 full batches (a divisor alone gave 2, 1, 1, 2, 13, 1 per call)
    assert [device.epoch_steps(s * 64, 64) for s in (58, 59, 61, 62, 65, 67)] == [56, 56, 60, 60, 65, 66]
    assert [device.steps_per_execution(device.epoch_steps(s * 64, 64)) for s in (58, 59, 61, 62, 65, 67)] == [14, 14, 15, 15, 13, 11]
    for n in range(10, 6001):  # every size the notebooks plan for (the batch lowered to the images when fewer)
        b = fit.fit_batch_size(n, 64)
        full, steps = n // b, device.epoch_steps(n, b)
        per_call = device.steps_per_execution(steps)
        assert steps % per_call == 0 and per_call <= 16, n  # every call stays inside one epoch
        assert per_call >= min(8, steps), n  # the host waits at most every 8 steps unless an epoch is shorter
        assert 0 <= full - steps <= 3 and (full > 16 or steps == full), n  # at most 3 batches of an epoch dropped
    drops = [s - device.epoch_steps(s, 1) for s in range(1, 20_000)]
    assert max(drops) == 7 and drops.index(7) + 1 == 359  # at any size, at most 7 (359 full batches -> 352)


def test_fit_sees_the_index_stream_when_the_epoch_drops_its_remainder_and_resumes_bit_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """38 images at batch 2: 19 full batches, 18 kept, 9 per fit call. A spy inside the compiled train step records the
    images each step trains on: exactly epoch_order()'s first 36 per epoch, in order, whether resumed or not."""
    import tensorflow as tf

    from cxr_utils.gan.model import ConditionalGAN

    n, epochs = 38, 3
    x, y = tiny_data(n)
    x = np.ascontiguousarray(x[:, ::2, ::2])
    x[:, 0, 0] = np.arange(n) * 6  # the corner pixel names the image
    # no quality probe, sample grids or checkpoints but the last (the final epoch's is always written)
    cfg = tiny16(batch_size=2, epochs=epochs, deterministic=True, eval_every=-1, sample_every=100, checkpoint_every=100)
    seen = tf.Variable(tf.fill([2 * epochs * 18, 2], -1.0))
    k = tf.Variable(0)
    real_step = ConditionalGAN.train_step

    def spy(self, data):
        seen.scatter_nd_update([[k]], [data[0][:, 0, 0, 0]])
        k.assign_add(1)
        return real_step(self, data)

    monkeypatch.setattr(ConditionalGAN, "train_step", spy)
    out = fit.train(cfg, tmp_path / "straight", x, y, progress=False)
    fit.train(cfg.replace(epochs=1), tmp_path / "resumed", x, y, progress=False)
    res = fit.train(cfg, tmp_path / "resumed", x, y, resume=True, progress=False)
    assert out["step"] == res["step"] == epochs * 18 and res["resumed_from_epoch"] == 1
    info = cio.read_json(tmp_path / "resumed" / "config.json")["data"]
    assert (info["steps_per_epoch"], info["steps_per_execution"]) == (18, 9)
    stream = np.concatenate([fit.epoch_order(cfg.seed, e, n)[:36] for e in range(epochs)])
    got = np.rint((seen.numpy() + 1.0) * 127.5 / 6).astype(int).reshape(2, -1)
    assert got[0].tolist() == stream.tolist() and got[1].tolist() == stream.tolist()
    assert [r["epoch"] for r in _rows(tmp_path / "resumed" / "metrics.csv")] == ["1", "2", "3"]
    assert _same_state(tmp_path / "straight" / "checkpoints" / "ckpt-0003.npz",
                       tmp_path / "resumed" / "checkpoints" / "ckpt-0003.npz") == []


def test_a_run_started_with_every_full_batch_resumes_with_every_full_batch(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # runs started before build.epoch_steps took all 19 full batches of 38 images and did not record steps_per_epoch
    x, y = tiny_data(38)
    x = np.ascontiguousarray(x[:, ::2, ::2])
    cfg = tiny16(batch_size=2, epochs=1, eval_every=-1, sample_every=100, checkpoint_every=100)
    with monkeypatch.context() as m:
        m.setattr(fit, "epoch_steps", lambda n, b: n // b)
        fit.train(cfg, tmp_path / "run", x, y, progress=False)
    saved = cio.read_json(tmp_path / "run" / "config.json")
    for key in ("steps_per_epoch", "steps_per_execution"):
        del saved["data"][key]
    cio.atomic_write_json(tmp_path / "run" / "config.json", saved)
    out = fit.train(cfg.replace(epochs=2), tmp_path / "run", x, y, resume=True, progress=False)
    assert out["step"] == 2 * 19 and cio.read_json(tmp_path / "run" / "config.json")["data"]["steps_per_epoch"] == 19
    out = fit.train(cfg.replace(epochs=3), tmp_path / "run", x, y, resume=True, progress=False)  # and keeps them
    assert out["step"] == 3 * 19


def test_loop_does_not_sync_per_step_and_jit_is_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    # no batch-end hook, and fit runs up to 16 steps per call: Keras waits for the device (to turn the logs into floats)
    # once per call; a divisor of the epoch's steps, so every call stays inside one epoch
    assert fit.RunCallback.on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    assert [device.steps_per_execution(n) for n in (1, 5, 7, 17, 80, 81, 163)] == [1, 5, 7, 1, 16, 9, 1]
    assert device.steps_per_execution(80, replicas=2) == 1  # one step per call under MirroredStrategy
    assert device.build_gan(tiny16(), "fp32", 5).steps_per_execution == 5
    assert device.resolve_jit("on") and not device.resolve_jit("off")
    import tensorflow as tf

    gpu = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
    with monkeypatch.context() as m:  # auto follows the devices TensorFlow sees, on any machine
        m.setattr(tf.config, "list_physical_devices", lambda kind=None: gpu if kind == "GPU" else [])
        assert device.resolve_jit("auto")
        m.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
        assert not device.resolve_jit("auto")
    seen = []
    real = keras.Model.compile
    monkeypatch.setattr(keras.Model, "compile", lambda self, **kw: (seen.append(kw["jit_compile"]), real(self, **kw))[1])
    device.build_gan(tiny16(jit="on"))
    device.build_gan(tiny16(jit="off"))
    assert seen == [True, False]  # (Keras itself turns XLA off again while op determinism is enabled)
    with pytest.raises(UserError, match="jit must be auto|on|off"):
        tiny_cfg(jit="yes").validate()
    from cxr_utils.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "x.npz", "--run-dir", "r", "--jit", "on", "--checkpoint-every",
                                      "3", "--checkpoint-minutes", "2.5", "--sample-every", "4"])
    assert (args.jit, args.checkpoint_every, args.checkpoint_minutes, args.sample_every) == ("on", 3, 2.5, 4)
