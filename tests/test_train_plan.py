"""How long and with which batch a run trains when the notebook leaves it to the package."""

from __future__ import annotations

from cxr_utils import train


def test_fit_batch_size_never_exceeds_the_training_images() -> None:
    assert train.fit_batch_size(10, 64) == 10
    assert train.fit_batch_size(4200, 64) == 64
    assert train.fit_batch_size(1, 64) == 2  # the trainer's own minimum; it then refuses 1 image with a clear line


def test_plan_epochs_gives_small_data_enough_steps() -> None:
    assert train.plan_epochs(10, 10, None, min_steps=3000) == 3000  # the sample: one step per epoch
    assert train.plan_epochs(4200, 64, None, min_steps=3000) == 200  # Kaggle: 65 steps per epoch, 13,000 steps
    assert train.plan_epochs(300, 64, None, min_steps=3000) == 750  # 4 steps per epoch
    assert train.plan_epochs(10, 10, 5) == 5  # an explicit number always wins
