"""Decoding: odd image modes to grey, the centre crop and reduced JPEG decode, worker processes, the model view."""

from __future__ import annotations

import io
import sys

import numpy as np
from _xray_fixtures import fake_xray, jpeg_bytes, make_folder, png_bytes
from PIL import Image

from cxr_utils import data


def test_odd_modes_are_converted_not_skipped(tmp_path):
    size = 32
    cases = {
        "cmyk.jpg": (lambda: _save(Image.new("CMYK", (40, 48), (0, 0, 0, 128)), "JPEG"), 127),
        "u16.png": (lambda: png_bytes(Image.fromarray(np.full((40, 40), 32896, np.uint16))), 128),
        "palette.png": (lambda: png_bytes(Image.new("RGB", (40, 40), (255, 0, 0)).convert("P")), 76),
        "rgba.png": (lambda: png_bytes(Image.new("RGBA", (40, 40), (200, 200, 200, 128))), 100),
        "la.png": (lambda: png_bytes(Image.new("LA", (40, 40), (200, 255))), 200),
        "bilevel.png": (lambda: png_bytes(Image.new("1", (40, 40), 1)), 255),
        "small_rgb.png": (lambda: png_bytes(Image.new("RGB", (12, 20), (10, 20, 30))), 18),
        "float.tif": (lambda: _save(Image.fromarray(np.full((40, 40), 0.5, np.float32)), "TIFF"), 128),
    }
    for name, (make, expected) in cases.items():
        p = tmp_path / name
        p.write_bytes(make())
        img = data.preprocess_image(p, size)
        assert img.shape == (size, size) and img.dtype == np.uint8, name
        assert abs(int(np.median(img)) - expected) <= 2, (name, int(np.median(img)), expected)


def _save(im: Image.Image, fmt: str) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt)
    return b.getvalue()


def test_center_crop_and_reduced_decode(tmp_path):
    # left half black, right half white, landscape 2:1: the centre crop keeps both halves equally
    a = np.zeros((512, 1024), np.uint8)
    a[:, 512:] = 255
    sq = data.square_resize(a, 64)
    assert sq.shape == (64, 64) and sq[:, :30].max() == 0 and sq[:, 34:].min() == 255
    # a large JPEG takes the 1/8 DCT path and matches a full decode + area resize closely
    big = np.kron(fake_xray(3, 128, 128), np.ones((8, 8), np.uint8))  # 1024 x 1024
    data_bytes = jpeg_bytes(big)
    reduced, method = data.decode_bytes(data_bytes, 64)
    assert method == "opencv/8"
    import cv2

    full = cv2.resize(cv2.imdecode(np.frombuffer(data_bytes, np.uint8), cv2.IMREAD_GRAYSCALE), (64, 64),
                      interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 2.0
    assert data.decode_bytes(data_bytes, 128)[1] == "opencv/8"  # 1024/8 = 128 >= 128
    assert data.decode_bytes(jpeg_bytes(fake_xray(1, 200, 150)), 64)[1] == "opencv/2"  # 150/2 = 75 >= 64


def test_workers_match_in_process(tmp_path, capsys):
    root = make_folder(tmp_path / "w", flat_k=6)
    files = sorted(root.rglob("*.jpeg"))
    one = data.decode_files(files, 64, workers=1, progress=False)
    two = data.decode_files(files, 64, workers=2, progress=False)
    assert "worker processes failed" not in capsys.readouterr().out  # the pool really decoded (no silent fallback)
    assert len(one) == len(two) == 12
    for (a, sa, ma), (b, sb, mb) in zip(one, two, strict=True):
        assert np.array_equal(a, b) and sa == sb and ma == mb


def test_model_view_round_trip():
    x = np.array([[[0, 255], [127, 128]]], np.uint8)
    v = data.to_model_view(x)
    assert v.shape == (1, 2, 2, 3) and v.dtype == np.float32
    assert v[0, 0, 0].tolist() == [-1.0, -1.0, -1.0] and v[0, 0, 1, 0] == 1.0
    assert np.isclose(v[0, 1, 0, 0], 127 / 127.5 - 1)
    assert data.to_model_view(x[..., None], channels=1).shape == (1, 2, 2, 1)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    assert np.array_equal(data.from_model_view(data.to_model_view(imgs)), imgs)


def test_pool_avoids_fork_once_tensorflow_is_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert data._pool_context().get_start_method() == "fork"
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert data._pool_context().get_start_method() == "forkserver"


def test_gray_images_averages_channels_and_keeps_grey() -> None:
    x = np.array([[[[0, 1, 2]], [[255, 255, 254]]]], np.uint8)  # (1, 2, 1, 3)
    assert data.gray_images(x).tolist() == [[[1], [255]]]  # means 1.0 and 254.67, rounded
    assert data.gray_images(x[..., :1]).tolist() == [[[0], [255]]]  # one channel: taken as is
    assert data.gray_images(x[..., 0]).dtype == np.uint8 and data.gray_images(x[..., 0]).shape == (1, 2, 1)
