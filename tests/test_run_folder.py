"""RunFolder owns every file name of a run folder: a real smoke run writes nothing it does not name, and the modules
that read and write a run (train, quality, checkpoints, runs) use its names."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_utils.gan import checkpoints, run_folder, tracker
from cxr_utils.gan.run_folder import RunFolder


def _cfg(**over):
    from cxr_utils.config import GANConfig

    base = dict(image_size=64, g_base_filters=8, d_base_filters=8, latent_dim=16, embed_dim=8, batch_size=4,
                n_fixed_noise=2, precision="fp32", deterministic=True, seed=3, epochs=4, eval_every=2,
                eval_n_per_class=8, sample_every=2, checkpoint_minutes=0)
    return GANConfig.from_dict({**base, **over})


def test_a_smoke_run_writes_only_files_run_folder_names(sample_npz: Path, tmp_path: Path) -> None:
    """Train a tiny run with quality tracking on the real sample; every file on disk is one RunFolder names, at the
    path its property gives, and every name of the layout a finished tracked run has is on disk."""
    from cxr_utils.gan import fit

    run = RunFolder(tmp_path / "run")
    out = fit.train_from_npz(sample_npz, run.path, _cfg(), progress=0, show_samples=False)
    on_disk = {p for p in run.path.rglob("*") if p.is_file()}
    assert on_disk and {p for p in on_disk if not run.owns(p)} == set()
    named = {run.config, run.metrics_csv, run.generator, run.best_generator, run.best_json, run.quality_csv,
             run.baseline, run.classifier, run.lock, run.latest_json, run.checkpoint(3), run.checkpoint(4),  # the newest two are kept
             run.grid(2), run.grid(4)}
    assert named <= on_disk, sorted(str(p) for p in named - on_disk)
    # the rest is TensorBoard's own event files, in tb/
    assert {p.parent for p in on_disk - named} == {run.tensorboard}
    assert out["generator"] == str(run.generator) and run.grids() == [run.grid(2), run.grid(4)]
    assert [p.name for p in checkpoints.Checkpoints(run.path).files()] == [run.checkpoint(4).name, run.checkpoint(3).name]


def test_run_folder_names_are_the_ones_the_modules_use(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert (tracker.QUALITY_FILE, tracker.BEST_FILE, tracker.BEST_JSON, tracker.CLASSIFIER_FILE,
            tracker.BASELINE_FILE) == (run.quality_csv.name, run.best_generator.name, run.best_json.name,
                                                run.classifier.name, run.baseline.name)
    assert (run.config.name, run.metrics_csv.name, run.generator.name, run.lock.name) == \
        ("config.json", "metrics.csv", "generator.keras", "lock")
    assert checkpoints.RunLock(tmp_path).path == run.lock
    ck = checkpoints.Checkpoints(tmp_path)
    assert ck.dir == run.checkpoints and ck.path(7) == run.checkpoint(7) == tmp_path / "checkpoints" / "ckpt-0007.npz"
    assert run.grid(12) == tmp_path / "samples" / "epoch-0012.png" and run.latest_json.parent == run.checkpoints


@pytest.mark.parametrize(("rel", "owned"), [
    ("config.json", True), ("checkpoints/ckpt-0003.npz", True), ("checkpoints/latest.json", True),
    ("samples/epoch-0010.png", True), ("tb/events.out.tfevents.1.host", True), ("notes.txt", False),
    ("checkpoints/.ckpt-0004.npz.part1.npz", False), ("samples/other.png", False), ("exports/a.png", False),
])
def test_owns_knows_the_layout(tmp_path: Path, rel: str, owned: bool) -> None:
    assert RunFolder(tmp_path).owns(tmp_path / rel) is owned
    assert run_folder.CONFIG in run_folder.FILES
