"""Generated chest-X-ray-like fixtures for the data tests: images, Kaggle-named folders, a Kaggle-layout zip, and a
stand-in kagglehub that serves that zip."""

from __future__ import annotations

import io
import os
import types
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def fake_xray(seed: int, h: int = 96, w: int = 80) -> np.ndarray:
    """A generated grey image with structure (gradient + blobs + noise), different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 60 + 80 * (yy / h) + 40 * np.sin(xx / (3 + seed % 5))
    for _ in range(3):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 20)
        img += 60 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(arr: np.ndarray, mode: str = "L") -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(b, "JPEG", quality=95)
    return b.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def kaggle_names(split: str, k: int) -> list[tuple[str, str, int]]:
    """(class folder, file name, seed) in Kaggle's naming: IM-NNNN normals, personNNN pneumonias (2 per patient).

    As in the Kaggle set, the test split holds its own numbered series: NORMAL2-IM-0001.. and personN_virus (there
    test/PNEUMONIA/person1_virus_6.jpeg sits beside train/PNEUMONIA/person1_bacteria_1.jpeg, and test's
    NORMAL2-IM-0285 beside train's IM-0285). So test's person1 and IM-0001.. share their numbers with train's
    person1_bacteria_2/3 and IM-0001.. (k >= 2 in train), in another series."""
    base = {"train": 0, "val": 500, "test": 900}[split]
    out = []
    for i in range(k):
        if split == "test":
            out.append(("NORMAL", f"NORMAL2-IM-{1 + i:04d}-0001.jpeg", base + i))
            out.append(("PNEUMONIA", f"person{1 + i // 2}_virus_{base + i}.jpeg", 10_000 + base + i))
        else:
            out.append(("NORMAL", f"IM-{base + i:04d}-0001.jpeg", base + i))
            out.append(("PNEUMONIA", f"person{base + i // 2}_bacteria_{base + i}.jpeg", 10_000 + base + i))
    return out


def make_folder(root: Path, splits: dict[str, int] | None = None, flat_k: int = 6) -> Path:
    """A folder source: NORMAL/ PNEUMONIA/ either flat or under train/ val/ test/."""
    if splits is None:
        for cls, name, seed in kaggle_names("train", flat_k):
            p = root / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(jpeg_bytes(fake_xray(seed)))
        return root
    for s, k in splits.items():
        for cls, name, seed in kaggle_names(s, k):
            p = root / s / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(jpeg_bytes(fake_xray(seed)))
    return root


def make_kaggle_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A small Kaggle-layout archive: chest_xray/{train,val,test}, __MACOSX/._*, and the nested duplicate tree."""
    with zipfile.ZipFile(path, "w") as zf:
        for s, k in {"train": 6, "val": 2, "test": 2}.items():
            for cls, name, seed in kaggle_names(s, k):
                b = jpeg_bytes(fake_xray(seed))
                zf.writestr(f"chest_xray/{s}/{cls}/{name}", b)
                zf.writestr(f"chest_xray/chest_xray/{s}/{cls}/{name}", b)  # the nested duplicate tree
                zf.writestr(f"__MACOSX/chest_xray/{s}/{cls}/._{name}", b"\x00\x05\x16\x07mac")
                zf.writestr(f"chest_xray/__MACOSX/{s}/{cls}/._{name}", b"\x00\x05\x16\x07mac")
        zf.writestr("chest_xray/train/NORMAL/._IM-0000-0001.jpeg", b"\x00\x05\x16\x07mac")
        zf.writestr("chest_xray/.DS_Store", b"\x00\x00\x00\x01Bud1")
        for name, b in (extra or {}).items():
            zf.writestr(name, b)
    return path


class FakeKagglehub(types.ModuleType):
    """A stand-in `kagglehub` module (Kaggle is unreachable here): dataset_download extracts a fixture zip the way
    kagglehub does (everything, into <KAGGLEHUB_CACHE>/datasets/<owner>/<name>/versions/2) or raises `error`."""

    __version__ = "0.3.13-test"

    def __init__(self, archive: Path, default_cache: Path, error: BaseException | None = None) -> None:
        super().__init__("kagglehub")
        self.archive, self.default_cache, self.error = archive, default_cache, error
        self.calls: list[dict[str, object]] = []

    def dataset_download(self, handle: str, path: str | None = None) -> str:
        cache = Path(os.environ.get("KAGGLEHUB_CACHE") or self.default_cache)
        creds = bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
        self.calls.append({"handle": handle, "cache": cache, "credentials": creds})
        if self.error is not None:
            raise self.error
        out = cache / "datasets" / handle / "versions" / "2"
        if not out.is_dir():
            with zipfile.ZipFile(self.archive) as zf:
                zf.extractall(out)
        return str(out)


def fake_kaggle_api(monkeypatch, fixture_zip: Path) -> tuple[list[str], list[Path]]:
    """Replace the kaggle package's KaggleApi by one that 'downloads' FIXTURE_ZIP (Kaggle is unreachable here, and
    importing the real package without credentials prints help and exits); returns (its calls, the zips it wrote)."""
    import sys

    calls: list[str] = []
    zips: list[Path] = []

    class FakeApi:
        def authenticate(self) -> None:
            calls.append("auth")

        def dataset_download_files(self, dataset: str, path: str, unzip: bool, quiet: bool) -> None:
            calls.append(dataset)
            zips.append(Path(path) / "chest-xray-pneumonia.zip")
            zips[-1].write_bytes(fixture_zip.read_bytes())

    for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["kaggle.api.kaggle_api_extended"].KaggleApi = FakeApi
    return calls, zips
