"""train_setup.assemble: the one way from (recipe, overrides, data, run folder) to a GANConfig and plan, shared by the
CLI and notebook 02; a resumed run's config.json (legacy values filled in) wins over the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr_utils import files as cio
from cxr_utils.cli import main as cli_main
from cxr_utils.config import DEFAULT_RECIPE, GANConfig, smoke_overrides
from cxr_utils.errors import UserError
from cxr_utils.gan import fit, train_setup

ROOT = Path(__file__).resolve().parent.parent
NB02 = ROOT / "notebooks" / "02_train_cgan.ipynb"


def _notebook_fields(**over) -> dict:
    """Notebook 02's parameters cell with its defaults (outside smoke mode), as its cell 5 passes them."""
    return {**dict(image_size=64, epochs=None, batch_size=None, precision="auto", seed=1234, eval_every=0), **over}


def _cli_cfg(monkeypatch: pytest.MonkeyPatch, *argv: str) -> GANConfig:
    """The GANConfig the CLI's `train` hands the trainer (fit.train replaced: the wiring only)."""
    seen = {}

    def fake_train(cfg, run_dir, images, labels, **kw):
        seen["cfg"] = cfg
        return {"metrics": {}, "epochs": cfg.epochs, "step": 0, "precision": "fp32", "generator": "-"}

    monkeypatch.setattr(fit, "train", fake_train)
    assert cli_main(["train", *argv]) == 0
    return seen["cfg"]


def test_the_cli_and_notebook_02_get_the_same_config(sample_npz: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # defaults: the default recipe, the batch lowered to the sample's 10 training images, 3,000 planned epochs
    cli = _cli_cfg(monkeypatch, "--data", str(sample_npz), "--run-dir", str(tmp_path / "cli"))
    nb = train_setup.assemble(sample_npz, tmp_path / "nb", DEFAULT_RECIPE, _notebook_fields())
    assert nb.cfg == cli and (cli.batch_size, cli.epochs) == (10, 3000)
    assert not nb.resume and nb.planned and nb.per_class == {"NORMAL": 5, "PNEUMONIA": 5}
    assert nb.describe() == ("recipe xray: batch size 10, 3,000 epochs = 3,000 generator steps "
                             "(planned for 10 training images)")
    # the same choices made in each: another recipe, seed and sizes
    cli = _cli_cfg(monkeypatch, "--data", str(sample_npz), "--run-dir", str(tmp_path / "cli2"), "--recipe", "seed",
                   "--seed", "5", "--epochs", "7", "--batch-size", "4")
    nb = train_setup.assemble(sample_npz, tmp_path / "nb2", "seed", _notebook_fields(seed=5, epochs=7, batch_size=4))
    assert nb.cfg == cli and (cli.batch_size, cli.epochs, cli.channels) == (4, 7, 3)
    # smoke: the CLI's --smoke and the notebook's SMOKE (EPOCHS 2, BATCH_SIZE 8)
    cli = _cli_cfg(monkeypatch, "--data", str(sample_npz), "--run-dir", str(tmp_path / "cli3"), "--smoke")
    nb = train_setup.assemble(sample_npz, tmp_path / "nb3", DEFAULT_RECIPE, _notebook_fields(epochs=2, batch_size=8),
                              smoke=True)
    assert nb.cfg == cli and not nb.planned
    assert {k: getattr(cli, k) for k in smoke_overrides()} == smoke_overrides()


def test_notebook_02_assembles_its_config_with_train_setup() -> None:
    code = "".join("".join(c["source"]) for c in json.loads(NB02.read_text(encoding="utf-8"))["cells"]
                   if c["cell_type"] == "code")
    assert code.count("train_setup.assemble(") == 1 and "resume=setup.resume" in code
    for gone in ("plan_epochs", "fit_batch_size", "smoke_overrides", "GANConfig("):  # no second way to a config
        assert gone not in code


def test_resuming_a_run_without_label_prior_through_the_notebook_path(sample_npz: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """A run whose config.json predates label_prior (issue 18), resumed as notebook 02's cells do: its config.json
    with label_prior "balanced" wins over the recipe (a note says the recipe differs), the run continues, and a field
    that contradicts the saved run is refused in one line."""
    tiny = dict(image_size=64, channels=1, g_base_filters=8, d_base_filters=8, latent_dim=16, embed_dim=4,
                batch_size=4, precision="fp32", deterministic=True, n_fixed_noise=2, seed=7, eval_every=-1,
                sample_every=5, checkpoint_minutes=0)
    run = tmp_path / "legacy"
    fit.train_from_npz(sample_npz, run, GANConfig(**tiny, epochs=1, label_prior="balanced"), progress=0,
                         show_samples=False)
    saved = cio.read_json(run / "config.json")
    del saved["label_prior"]  # as every run before the field wrote it
    cio.atomic_write_json(run / "config.json", saved)
    capsys.readouterr()
    fields = _notebook_fields(epochs=2, precision="fp32", seed=7, eval_every=-1)
    setup = train_setup.assemble(sample_npz, run, DEFAULT_RECIPE, fields)  # resume: None = a checkpoint is there
    err = capsys.readouterr().err
    assert setup.resume and setup.cfg.label_prior == "balanced" and not setup.planned
    assert setup.cfg == GANConfig(**{**tiny, "epochs": 2, "label_prior": "balanced"})
    assert f"note: {run} is resumed with its saved config.json; recipe {DEFAULT_RECIPE} (" in err
    assert setup.describe().startswith("the run's saved config.json: batch size 4, 2 epochs")
    out = fit.train_from_npz(sample_npz, run, setup.cfg, resume=setup.resume, progress=0, show_samples=False)
    assert out["resumed_from_epoch"] == 1 and out["step"] == 2 * setup.steps_per_epoch
    assert cio.read_json(run / "config.json")["label_prior"] == "balanced"  # now written out
    # a parameter that contradicts the saved run: the existing one-line refusal
    setup = train_setup.assemble(sample_npz, run, DEFAULT_RECIPE, {**fields, "epochs": 3, "seed": 8})
    with pytest.raises(UserError, match=r"trained with seed=7, now seed=8; resume with the same settings"):
        fit.train_from_npz(sample_npz, run, setup.cfg, resume=setup.resume, progress=0, show_samples=False)
