"""The VGG16 classifier for the machine at hand: precision policies (float32 output), the GAN's precision rule, loss
scaling for fp16, seeded fits that do not depend on what ran before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cxr_utils.errors import UserError
from cxr_utils.evaluation import classifier
from cxr_utils.gan import device as build


def test_precision_follows_the_gans_rule_and_deterministic_means_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = classifier.EvalConfig.smoke()
    assert classifier.resolve_precision(dataclasses.replace(cfg, precision="bf16")) == "bf16"
    assert classifier.resolve_precision(dataclasses.replace(cfg, precision="auto", deterministic=True)) == "fp32"
    monkeypatch.setattr(build, "cpu_supports_bf16", lambda cpuinfo=None: True)
    assert classifier.resolve_precision(cfg) == build.resolve_precision("auto") == "bf16"  # no GPU here
    monkeypatch.setattr(build, "cpu_supports_bf16", lambda cpuinfo=None: False)
    assert classifier.resolve_precision(cfg) == "fp32"
    with pytest.raises(UserError, match="--precision fp8: use one of auto, fp32, bf16, fp16"):
        classifier.eval_config(True, precision="fp8")
    got = classifier.eval_config(True, precision="fp16", deterministic=True)
    assert (got.precision, got.deterministic, got.input_size) == ("fp16", True, 32)


@pytest.mark.parametrize("precision, compute", [("bf16", "bfloat16"), ("fp16", "float16")])  # fp32: every other test
def test_the_classifier_computes_in_its_precision_with_a_float32_output(precision: str, compute: str) -> None:
    import keras

    cfg = classifier.EvalConfig.smoke()
    before = keras.mixed_precision.global_policy().name
    classifier.start_fit(0)
    model, base = classifier.build_classifier(32, cfg, None, precision=precision)
    assert keras.mixed_precision.global_policy().name == before  # the policy is set only while building
    assert base.get_layer("block5_conv3").compute_dtype == compute
    assert base.get_layer("block5_conv3").variable_dtype == "float32"  # mixed: weights stay float32
    assert model.get_layer("pneumonia").compute_dtype == "float32"
    x = classifier.to_vgg_input(np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8))
    out = model.predict(x, verbose=0)
    assert out.dtype == np.float32 and out.shape == (4, 1) and np.all((out >= 0) & (out <= 1))
    classifier.compile_stage(model, base, "finetune", cfg, steps=1, precision=precision)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "fp16")
    assert [w.path.split("/")[0] for w in base.trainable_weights][:1] == ["block5_conv1"]
    keras.backend.clear_session()


def test_a_seeded_fit_does_not_depend_on_what_ran_before() -> None:
    """start_fit clears Keras's session before seeding: the same seed gives the same weights after other work."""
    cfg = classifier.EvalConfig.smoke()

    def first_kernel() -> np.ndarray:
        classifier.start_fit(3)
        model, _ = classifier.build_classifier(32, cfg, None)
        return np.asarray(model.get_layer("pneumonia").kernel)

    import keras

    a = first_kernel()
    keras.layers.Dense(7, name="pneumonia").build((None, 5))  # other draws and a taken layer name in between
    keras.random.normal((3,))
    np.testing.assert_array_equal(first_kernel(), a)
