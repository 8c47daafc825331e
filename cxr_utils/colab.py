"""Colab: keep the work folder on Google Drive (raw downloads on local disk), add to the runtime only what it lacks,
and say plainly what a TPU runtime gives.

The notebooks' Setup cell imports this module straight from a fresh clone, before the package is installed, so it
uses the standard library only (and `packaging` if present, for version notes). Off Colab nothing here changes
anything: `setup_workdir` returns the usual `<repo>/runs/notebooks` folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import project_root
from .errors import UserError

DRIVE_MOUNT = "/content/drive"
DRIVE_DIR = "MyDrive/cxr-cgan"  # relative to the mount point (or an absolute path)
# Raw downloads (the 2.3 GB Kaggle archive, its 5,856 extracted JPEGs, kagglehub's cache) stay on the runtime's local
# disk: on Drive they would be slow to write and re-scan and would fill a free Drive; a reset deletes them, and the
# caches on Drive, built from them, are then reused without a new download.
LOCAL_RAW = "/content/cxr-raw"
PACKAGE = "cxr-utils"

# Google's PCI vendor id and the device ids of TPU chips, as JAX's own detection lists them
# (jax-ml/jax, jax/_src/hardware_utils.py): a TPU is seen without importing any framework.
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = {"0x0027": "v2/v3", "0x0056": "plc", "0x005e": "v4", "0x0062": "v5p", "0x0063": "v5e",
                   "0x006f": "v6e", "0x0076": "7x"}
PCI_DEVICES = "/sys/bus/pci/devices"

# A requirement is met by any one of these distributions: they install the same module (cv2, tensorflow).
# Colab ships opencv-python; adding our opencv-python-headless beside it would make two packages write one cv2,
# which OpenCV's install notes say never to do.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "opencv-python-headless": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                               "opencv-contrib-python-headless"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-tpu", "tf-nightly"),
}


def in_colab() -> bool:
    """True inside a Google Colab runtime (its kernel imports google.colab at start-up)."""
    return "google.colab" in sys.modules


def normalize(name: str) -> str:
    """PEP 503 form of a distribution name (Scikit_Learn -> scikit-learn)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """The normalized distribution name of a requirement line such as 'numpy>=1.26,<3'."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not m:
        raise ValueError(f"not a requirement: {spec!r}")
    return normalize(m.group(1))


def runtime_requirements(repo: str | os.PathLike) -> list[str]:
    """The package's runtime requirements ([project].dependencies of REPO/pyproject.toml).

    These, not requirements.txt, are what `pip install -e` would pull in: requirements.txt also lists the tools
    that run notebooks headless and the JupyterLab UI, which Colab has its own of.
    """
    with open(Path(repo) / "pyproject.toml", "rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def installed_distributions() -> dict[str, str]:
    """{normalized name: version} of every distribution the running interpreter can import."""
    out: dict[str, str] = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"] if d.metadata else None
        if name:
            out.setdefault(normalize(name), d.version)
    return out


@dataclass
class InstallPlan:
    """What the Colab setup keeps, installs and pins."""

    kept: dict[str, str] = field(default_factory=dict)  # requirement -> "dist version" already in the runtime
    missing: list[str] = field(default_factory=list)  # requirement specs to install
    constraints: list[str] = field(default_factory=list)  # name==version of everything installed: pip may add, not change
    install_package: bool = True  # cxr-utils itself (editable, --no-deps)
    notes: list[str] = field(default_factory=list)


def _outside_range(spec: str, version: str) -> bool:
    """True if `version` does not satisfy `spec` (False when `packaging` is unavailable to tell)."""
    try:
        from packaging.requirements import Requirement

        return not Requirement(spec).specifier.contains(version, prereleases=True)
    except Exception:  # no packaging, or an odd version string: no note rather than a wrong one
        return False


def _pinnable(version: str) -> bool:
    """False for a version pip cannot parse (one such line would make pip reject the whole constraints file)."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return True
    try:
        Version(version)
        return True
    except InvalidVersion:
        return False


def plan_install(requirements: Sequence[str], installed: Mapping[str, str], package: str = PACKAGE) -> InstallPlan:
    """Decide, without side effects, what to add to a runtime whose distributions are `installed`."""
    have = {normalize(k): v for k, v in installed.items()}
    plan = InstallPlan(install_package=normalize(package) not in have)
    for spec in requirements:
        name = requirement_name(spec)
        provider = next((p for p in PROVIDERS.get(name, (name,)) if p in have), None)
        if provider is None:
            plan.missing.append(spec.strip())
            continue
        plan.kept[name] = f"{provider} {have[provider]}"
        if provider == name and _outside_range(spec, have[provider]):
            plan.notes.append(f"{provider} {have[provider]} is outside the tested range ({spec.strip()}); "
                              f"kept the runtime's version")
    plan.constraints = [f"{n}=={v}" for n, v in sorted(have.items()) if _pinnable(v)]
    return plan


def _pip(args: Sequence[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def install_missing(repo: str | os.PathLike, installed: Mapping[str, str] | None = None,
                    pip: Callable[[Sequence[str]], None] = _pip, log: Callable[[str], None] = print,
                    pci_root: str | os.PathLike = PCI_DEVICES) -> InstallPlan:
    """Colab Setup: install what REPO's package needs and the runtime lacks; never replace what it has.

    On a TPU runtime it first says, in one line, that the TPU goes unused and what to pick instead (`tpu_note`).

    Missing requirements are installed with every installed distribution pinned (a pip constraints file), so pip
    can add packages but not upgrade, downgrade or duplicate TensorFlow, Keras, NumPy or OpenCV. The package itself
    goes in with `--no-deps -e` so its own ranges (`tensorflow<2.22`, ...) never make pip touch the runtime.
    """
    repo = Path(repo)
    note = tpu_note(pci_root)
    if note:
        log(f"Colab setup: {note}")
    plan = plan_install(runtime_requirements(repo), installed_distributions() if installed is None else installed)
    if plan.kept:
        log("Colab setup: the runtime already has " + ", ".join(
            v if n == v.split()[0] else f"{v} (for {n})" for n, v in plan.kept.items()) + " (left as they are)")
    for note in plan.notes:
        log(f"Colab setup: note: {note}")
    if plan.missing:
        with tempfile.TemporaryDirectory() as tmp:
            pins = Path(tmp) / "runtime-constraints.txt"
            pins.write_text("\n".join(plan.constraints) + "\n", encoding="utf-8")
            try:
                pip(["-c", str(pins), *plan.missing])
            except subprocess.CalledProcessError:
                raise UserError(f"Colab setup: pip could not add {', '.join(plan.missing)} without changing the "
                                f"runtime's packages (see pip's message above); install them by hand, then rerun "
                                f"this cell") from None
        log(f"Colab setup: installed {', '.join(plan.missing)}")
    if plan.install_package:
        pip(["--no-deps", "-e", str(repo)])
        log(f"Colab setup: installed {PACKAGE} from {repo} (editable, without dependencies)")
    if not plan.missing and not plan.install_package:
        log("Colab setup: nothing to install")
    return plan


def setup_workdir(work_dir: str | os.PathLike | None, smoke: bool = False, use_drive: bool = True,
                  drive_dir: str = DRIVE_DIR, root: str | os.PathLike | None = None, mount_point: str = DRIVE_MOUNT,
                  local_raw: str | os.PathLike = LOCAL_RAW, log: Callable[[str], None] = print) -> Path:
    """The notebooks' WORK folder (run folders, synthetic images, results, figures).

    WORK_DIR if given (papermill, `make run`); on Colab with use_drive, a folder on Google Drive (mounted here), with
    the data cache beside it (CXR_DATA_DIR) and the raw downloads on the runtime's local disk (CXR_RAW_DIR, and
    KAGGLEHUB_CACHE unless already set), so a runtime reset loses nothing that cannot be had again; otherwise
    <repo>/runs/notebooks (or notebooks-smoke), exactly as off Colab.
    """
    leaf = "notebooks-smoke" if smoke else "notebooks"
    if work_dir:
        work = Path(work_dir)
    elif in_colab() and use_drive:
        from google.colab import drive  # only importable on Colab

        try:
            drive.mount(mount_point)
        except Exception as e:  # the user declined access, or Drive is unreachable
            raise UserError(f"Google Drive: could not mount it at {mount_point} ({type(e).__name__}: {e}); allow "
                            f"access when asked, or set USE_DRIVE = False (the work then stays in /content and a "
                            f"runtime reset deletes it)") from None
        base = Path(drive_dir) if Path(drive_dir).is_absolute() else Path(mount_point) / drive_dir
        work = base / leaf
        raw = Path(local_raw)
        os.environ["CXR_DATA_DIR"] = str(base / "data")
        os.environ["CXR_RAW_DIR"] = str(raw)
        os.environ.setdefault("KAGGLEHUB_CACHE", str(raw / "kagglehub"))
        log(f"work folder : {work} (Google Drive: survives a runtime reset; rerun the notebook to resume)")
        log(f"data cache  : {base / 'data'} (CXR_DATA_DIR, on Drive)")
        log(f"raw data    : {raw} (CXR_RAW_DIR, the runtime's local disk: downloads and extracted archives; a reset "
            f"deletes them and the cache on Drive is reused)")
    else:
        work = Path(root or project_root()) / "runs" / leaf
        if in_colab():
            log(f"work folder : {work} (USE_DRIVE = False: a runtime reset deletes it)")
    work.mkdir(parents=True, exist_ok=True)
    return work


def tpu_chips(pci_root: str | os.PathLike = PCI_DEVICES) -> tuple[int, str | None]:
    """(number of TPU chips on this machine's PCI bus, their generation) from sysfs; (0, None) anywhere else."""
    n, kind = 0, None
    for dev in sorted(Path(pci_root).glob("*")):
        try:
            vendor = (dev / "vendor").read_text().strip()
            device = (dev / "device").read_text().strip()
        except OSError:
            continue
        if vendor == GOOGLE_PCI_VENDOR and device in TPU_PCI_DEVICES:
            n, kind = n + 1, TPU_PCI_DEVICES[device]
    return n, kind


def tpu_note(pci_root: str | os.PathLike = PCI_DEVICES) -> str | None:
    """One line for a TPU runtime: what it gives this TensorFlow code (its host CPU) and what to pick instead."""
    n, kind = tpu_chips(pci_root)
    if not n:
        return None
    return (f"TPU runtime ({n} TPU {kind} chip{'s' if n > 1 else ''}): this project's TensorFlow code connects no TPU "
            f"(Colab's TPU runtimes ship no TensorFlow since March 2025, googlecolab/colabtools#5164, and tensorflow-tpu "
            f"installed there has been reported not to find the TPU, tensorflow/tensorflow#96203), so training would run "
            f"on this machine's CPU; pick Runtime > Change runtime type > T4 GPU instead")
