"""cxr_utils.gan.runs: the read side of a run folder (a missing run is one clear line; real images of the run's cache)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cxr_utils import files as io
from cxr_utils.errors import UserError
from cxr_utils.gan import runs


def test_load_run_and_real_images(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope: no trained GAN here \(generator.keras missing\); run 02 first"):
        runs.load_run(tmp_path / "nope", hint="run 02 first")
    from cxr_utils.files import atomic_save_npz, atomic_write_json

    imgs = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    npz = atomic_save_npz(tmp_path / "cache.npz", images=imgs, labels=np.array([0, 1, 0, 1, 1]),
                          split=np.array(["train", "train", "val", "test", "train"]))
    run = tmp_path / "run"
    atomic_write_json(run / "config.json", {"image_size": 4, "data": {"npz": str(npz), "split": "train"}})
    x, y, where = runs.real_images(run, "train")
    assert np.array_equal(x, imgs[[0, 1, 4]]) and y.tolist() == [0, 1, 1]
    assert where == "cache.npz (train split, 3 images)"
    x, y, _ = runs.real_images(run, "val")
    assert np.array_equal(x, imgs[[2]]) and y.dtype == np.int64


def test_training_cache_is_the_one_the_run_names_else_prepared(sample_npz: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cxr_utils import data

    asked = []
    monkeypatch.setattr(data, "prepare", lambda **kw: asked.append(kw) or tmp_path / "prepared.npz")
    run = tmp_path / "gan"
    io.atomic_write_json(run / "config.json", {"data": {"npz": str(sample_npz)}})
    assert runs.training_cache(run, source="sample", size=32) == sample_npz and asked == []
    io.atomic_write_json(run / "config.json", {"data": {"npz": str(tmp_path / "moved.npz")}})  # named, but gone
    assert runs.training_cache(run, source="sample", size=32) == tmp_path / "prepared.npz"
    assert runs.training_cache(tmp_path / "no-run") == tmp_path / "prepared.npz"  # no config.json at all
    assert asked == [{"source": "sample", "size": 32, "progress": False}, {"source": "auto", "size": 64, "progress": False}]


def test_a_cache_rebuilt_since_the_run_is_named_in_one_line_and_refused_on_resume(tmp_path: Path, capsys) -> None:
    """A GAN trained on one split and evaluated (or resumed) on another would leak: the run's recorded sha256 of its
    cache is compared with the file it is about to use."""
    from _xray_fixtures import make_folder

    from cxr_utils import data
    from cxr_utils.config import GANConfig
    from cxr_utils.gan import fit

    root = make_folder(tmp_path / "flat", flat_k=6)
    npz = data.prepare("folder", path=root, out=tmp_path / "c.npz", progress=False)
    run = tmp_path / "gan"
    io.atomic_write_json(run / "config.json", {"image_size": 64, "data": {"npz": str(npz), "npz_sha256": io.file_digest(npz)}})
    capsys.readouterr()
    assert runs.cache_drift(run, npz) is None
    assert runs.training_cache(run) == npz and capsys.readouterr().err == ""  # the same cache: nothing to say
    recorded = io.file_digest(npz)
    data.prepare("folder", path=root, out=npz, seed=1, progress=False)  # rebuilt since: another seed, another split
    now = io.file_digest(npz)
    line = runs.cache_drift(run, npz)
    assert line == (f"{npz} is not the cache run gan was trained on (sha256 {recorded[:12]}, now {now[:12]}): it was "
                    "rebuilt since, so its train/val/test split may differ from the one the GAN saw")
    capsys.readouterr()
    assert runs.training_cache(run) == npz  # still the run's cache path, but said in one line
    assert capsys.readouterr().err == (f"note: {line}; an evaluation on it may test on images the GAN trained on "
                                       "(retrain the GAN on it for a clean one)\n")
    with pytest.raises(UserError, match=r"^--data .* is not the cache run gan was trained on .*; resuming would mix the "
                                        r"two: start a new run folder \(notebook 02: FRESH = True\)"):
        fit.train_from_npz(npz, run, GANConfig(), resume=True)
    io.atomic_write_json(run / "config.json", {"data": {"npz": str(npz)}})  # a run that recorded no sha256: no claim
    assert runs.cache_drift(run, npz) is None


def test_a_run_of_the_default_before_issue_20_loads_and_resumes_with_its_own_config(
        sample_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run folder the xray recipe wrote before issue 20 (3 channels, transposed convolutions, no norm in G, spectral
    norm on D's convolutions only; its config.json has no spectral_all, its label_prior predates that too): config_of
    rebuilds that architecture, its generator.keras loads in safe mode, an epoch's checkpoint gives the same
    generator, and the CLI resumes it from its checkpoint."""
    import json

    import keras

    from cxr_utils.cli import main as cli_main
    from cxr_utils.config import GANConfig

    cfg = GANConfig().with_recipe("xray-v1").replace(
        image_size=64, g_base_filters=8, d_base_filters=8, latent_dim=16, embed_dim=4, epochs=1, batch_size=4,
        precision="fp32", deterministic=True, eval_every=-1, checkpoint_minutes=0, sample_every=5)
    cfg_file = tmp_path / "old.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    run = tmp_path / "old-run"
    assert cli_main(["train", "--data", str(sample_npz), "--run-dir", str(run), "--config", str(cfg_file)]) == 0
    saved = io.read_json(run / "config.json")
    for key in ("spectral_all", "label_prior"):  # as a run of that time wrote its config.json
        del saved[key]
    io.atomic_write_json(run / "config.json", saved)
    old = runs.config_of(saved)
    assert (old.channels, old.g_upsample, old.g_norm, old.norm, old.spectral_all) == (3, "transpose", None, "none", False)
    g, got = runs.load_generator(run)  # generator.keras, safe mode
    assert got == old and g.output.shape[-1] == 3
    assert {type(lay).__name__ for lay in g.layers} >= {"Conv2DTranspose"} and "ClassAffine" not in \
        {type(lay).__name__ for lay in g.layers}
    from_ckpt, _ = runs.load_generator(run, which=1)  # the same generator rebuilt from the epoch-1 checkpoint
    z = np.random.default_rng(0).normal(size=(2, 16)).astype("float32")
    y = np.array([0, 1], "int32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(g([z, y])), keras.ops.convert_to_numpy(from_ckpt([z, y])))
    capsys.readouterr()
    # resumed with its own config.json (no --config): today's default recipe would not even restore the checkpoint
    assert cli_main(["train", "--data", str(sample_npz), "--run-dir", str(run), "--resume", "--epochs", "2"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    again = io.read_json(run / "config.json")
    assert again["spectral_all"] is False and again["channels"] == 3 and again["label_prior"] == "balanced"


@pytest.mark.slow  # a new Python process has to import TensorFlow: the only way to see a missing registration
def test_a_default_generator_loads_in_a_new_process_that_imported_only_runs(tmp_path: Path) -> None:
    """generator.keras of the default recipe holds ClassAffine layers: `runs.load_generator` must register them itself
    (notebook 03 and `sample`/`export` load a run in a process that never built a model)."""
    import subprocess
    import sys

    from cxr_utils.config import GANConfig
    from cxr_utils.gan import networks

    cfg = GANConfig().with_recipe("xray").replace(image_size=16, g_base_filters=4, d_base_filters=4, latent_dim=8,
                                                 embed_dim=4)
    assert cfg.g_norm == "class_layer"
    g = networks.build_generator(cfg)
    run = tmp_path / "run"
    run.mkdir()
    g.save(run / "generator.keras")
    io.atomic_write_json(run / "config.json", cfg.to_dict())
    code = ("import sys; from cxr_utils.gan import runs; g, _ = runs.load_generator(sys.argv[1]); "
            "print(sorted({type(x).__name__ for x in g.layers} & {'ClassAffine', 'LayerNormalization'}))")
    out = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['ClassAffine', 'LayerNormalization']"
