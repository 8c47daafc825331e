"""How long and with which batch a run trains when the notebook leaves it to the package."""

from __future__ import annotations

from cxr_utils.gan import fit


def test_fit_batch_size_never_exceeds_the_training_images() -> None:
    assert fit.fit_batch_size(10, 64) == 10
    assert fit.fit_batch_size(4200, 64) == 64
    assert fit.fit_batch_size(1, 64) == 2  # the trainer's own minimum; it then refuses 1 image with a clear line


def test_plan_is_600_passes_within_3000_and_50000_steps() -> None:
    assert fit.plan_epochs(10, 10) == 3000  # the sample: one step per epoch, the 3,000-step floor (make run)
    assert (fit.plan_steps(4180, 64), fit.plan_epochs(4180, 64)) == (39_000, 600)  # Kaggle: 65 steps per epoch
    assert (fit.plan_steps(4708, 64), fit.plan_epochs(4708, 64)) == (43_200, 600)  # PneumoniaMNIST: 72 per epoch (build.epoch_steps)
    assert fit.plan_steps(1069, 64) == 9_600  # the digits benchmark's 1,069 images: 16 steps per epoch
    assert (fit.plan_steps(300, 64), fit.plan_epochs(300, 64)) == (3000, 750)  # 4 steps per epoch: the floor
    assert (fit.plan_steps(20_000, 64), fit.plan_epochs(20_000, 64)) == (50_000, 161)  # 312 per epoch: the cap
    assert fit.plan_epochs(10, 10, 5) == 5  # an explicit number always wins
    assert fit.plan_epochs(4180, 64, None, min_steps=100, passes=2) == 2  # the knobs, for callers that plan otherwise


def test_cli_train_without_sizes_fits_the_run_to_the_data(sample_npz, tmp_path, monkeypatch) -> None:
    from cxr_utils.cli import main
    from cxr_utils.config import DEFAULT_RECIPE, RECIPES

    seen = {}

    def fake_train(cfg, run_dir, images, labels, **kw):  # the wiring only: what train() would be asked to do
        seen["cfg"] = cfg
        return {"metrics": {}, "epochs": cfg.epochs, "step": 0, "precision": "fp32", "generator": "-"}

    monkeypatch.setattr(fit, "train", fake_train)
    assert main(["train", "--data", str(sample_npz), "--run-dir", str(tmp_path / "a")]) == 0
    cfg = seen["cfg"]
    assert (cfg.batch_size, cfg.epochs) == (10, 3000)  # 10 training images: batch 10, 3,000 one-step epochs
    assert {k: getattr(cfg, k) for k in RECIPES[DEFAULT_RECIPE]} == RECIPES[DEFAULT_RECIPE]
    assert main(["train", "--data", str(sample_npz), "--run-dir", str(tmp_path / "b"), "--epochs", "5",
                 "--batch-size", "4"]) == 0
    assert (seen["cfg"].batch_size, seen["cfg"].epochs) == (4, 5)  # given sizes are kept
