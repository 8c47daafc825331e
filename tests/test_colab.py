"""Colab: the work folder and caches on a (faked) Google Drive with raw downloads on local disk, a setup that adds only
what a (faked) runtime lacks, and one honest line on a TPU runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest
from _xray_fixtures import FakeKagglehub, fake_kaggle_api, make_kaggle_zip

from cxr_utils import colab, config, data
from cxr_utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# distributions of a Colab GPU runtime (names and versions as `pip list` shows them there), minus two of ours
COLAB_RUNTIME = {"tensorflow": "2.22.0", "keras": "3.10.0", "tensorboard": "2.22.0", "numpy": "2.0.2",
                 "opencv-python": "4.12.0.88", "pillow": "11.3.0", "scikit-learn": "1.6.1", "scipy": "1.16.2",
                 "pandas": "2.2.2", "matplotlib": "3.10.0", "tqdm": "4.67.1", "jax": "0.5.3", "pip": "24.1.2"}


@pytest.fixture
def fake_colab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """A google.colab module whose drive.mount creates <mount>/MyDrive (as Colab's does); returns the mount calls."""
    calls: list[str] = []

    def mount(mountpoint: str, force_remount: bool = False, **_: object) -> None:
        calls.append(mountpoint)
        (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)

    drive = types.ModuleType("google.colab.drive")
    drive.mount = mount
    pkg = types.ModuleType("google.colab")
    pkg.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", pkg)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    return calls


def test_off_colab_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    before = os.environ["CXR_DATA_DIR"]
    assert not colab.in_colab()
    assert colab.setup_workdir(None, root=tmp_path) == tmp_path / "runs" / "notebooks"
    assert colab.setup_workdir(None, smoke=True, root=tmp_path) == tmp_path / "runs" / "notebooks-smoke"
    assert colab.setup_workdir(str(tmp_path / "w"), root=tmp_path) == tmp_path / "w"
    assert os.environ["CXR_DATA_DIR"] == before


def test_on_colab_the_work_and_the_cache_live_on_drive(fake_colab: list[str], tmp_path: Path, capsys) -> None:
    mnt = tmp_path / "content" / "drive"
    assert colab.in_colab()
    work = colab.setup_workdir(None, root=tmp_path / "repo", mount_point=str(mnt))
    base = mnt / "MyDrive" / "cxr-cgan"
    assert work == base / "notebooks" and work.is_dir()
    assert fake_colab == [str(mnt)]
    assert os.environ["CXR_DATA_DIR"] == str(base / "data") and config.data_dir() == base / "data"
    assert os.environ["CXR_RAW_DIR"] == colab.LOCAL_RAW == "/content/cxr-raw"  # raw downloads: the runtime's disk
    assert data.sources.raw_dir() == Path("/content/cxr-raw")
    assert not (tmp_path / "repo").exists()  # nothing in the runtime's /content clone
    out = capsys.readouterr().out
    assert "Google Drive" in out and str(work) in out and "raw data    : /content/cxr-raw (CXR_RAW_DIR, the " in out
    # a runtime reset wipes /content but not Drive: the rerun finds what the first run wrote
    (work / "gan" / "checkpoints").mkdir(parents=True)
    (work / "gan" / "checkpoints" / "ckpt-0007.npz").write_bytes(b"x")
    assert colab.setup_workdir(None, root=tmp_path / "other-clone", mount_point=str(mnt)) == work
    assert (work / "gan" / "checkpoints" / "ckpt-0007.npz").is_file()
    assert colab.setup_workdir(None, smoke=True, mount_point=str(mnt)) == base / "notebooks-smoke"
    assert colab.setup_workdir(None, drive_dir=str(tmp_path / "abs"), mount_point=str(mnt)) == tmp_path / "abs" / "notebooks"
    assert os.environ["CXR_DATA_DIR"] == str(tmp_path / "abs" / "data")


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("client", ["kagglehub", "kaggle-api"])
def test_on_colab_raw_downloads_stay_local_and_a_reset_reuses_the_cache_on_drive(
        fake_colab: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, client: str) -> None:
    """Where each file lands: archive, extracted tree and kagglehub's cache on local disk; cache + manifest on Drive."""
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mnt, local = tmp_path / "drive", tmp_path / "content" / "cxr-raw"
    fixture = make_kaggle_zip(tmp_path / "fixture.zip")
    if client == "kagglehub":
        hub = FakeKagglehub(fixture, default_cache=tmp_path / "home" / ".cache" / "kagglehub")
        monkeypatch.setitem(sys.modules, "kagglehub", hub)
    else:  # no kagglehub: the kaggle API with a token downloads the zip
        monkeypatch.setenv("KAGGLE_USERNAME", "u")
        monkeypatch.setenv("KAGGLE_KEY", "k")
        api_calls, zips_seen = fake_kaggle_api(monkeypatch, fixture)
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    colab.setup_workdir(None, mount_point=str(mnt), local_raw=local)
    drive = mnt / "MyDrive" / "cxr-cgan"
    first = data.prepare_verbose("kaggle", size=32, progress=False)
    assert first.rebuilt and first.path == drive / "data" / "kaggle-32.npz"
    assert _files(drive) == ["data/kaggle-32.manifest.json", "data/kaggle-32.npz"]  # nothing raw on Drive
    if client == "kagglehub":  # kagglehub's own cache was sent to local disk too (KAGGLEHUB_CACHE)
        assert os.environ["KAGGLEHUB_CACHE"] == str(local / "kagglehub") and hub.calls[0]["cache"] == local / "kagglehub"
        tree = local / "kagglehub" / "datasets" / data.KAGGLE_DATASET / "versions" / "2" / "chest_xray"
        assert (local / "kaggle" / "kagglehub.json").is_file()
    else:  # the zip was downloaded into, and extracted on, local disk, then deleted
        assert zips_seen and zips_seen[0].is_relative_to(local) and not zips_seen[0].exists()
        tree = local / "kaggle" / "download"
    assert len([p for p in tree.glob("*/*/*.jpeg") if not p.name.startswith("._")]) == 20
    assert data.load(first.path).manifest["root"] == str(tree)
    # a runtime reset: /content (with the raw folder) is gone, Drive is not; a fresh runtime sets up again
    import shutil

    shutil.rmtree(tmp_path / "content")
    monkeypatch.delenv("KAGGLEHUB_CACHE", raising=False)
    colab.setup_workdir(None, mount_point=str(mnt), local_raw=local)
    if client == "kagglehub":
        hub.error = ConnectionError("a new download would be an error here")
    capsys.readouterr()
    again = data.prepare_verbose("kaggle", size=32, progress=False)
    assert not again.rebuilt and again.path == first.path and again.reason.endswith("cached (raw files not present)")
    assert "downloading" not in capsys.readouterr().out and not local.exists()
    assert len(hub.calls) == 1 if client == "kagglehub" else api_calls == ["auth", data.KAGGLE_DATASET]  # no 2nd download


def test_on_colab_work_dir_and_use_drive_false_skip_the_mount(fake_colab: list[str], tmp_path: Path, capsys) -> None:
    before = os.environ["CXR_DATA_DIR"]
    assert colab.setup_workdir(str(tmp_path / "w"), mount_point=str(tmp_path / "m")) == tmp_path / "w"
    assert colab.setup_workdir(None, use_drive=False, root=tmp_path, mount_point=str(tmp_path / "m")) == \
        tmp_path / "runs" / "notebooks"
    assert fake_colab == [] and os.environ["CXR_DATA_DIR"] == before
    assert "a runtime reset deletes it" in capsys.readouterr().out


def test_a_refused_mount_is_one_line_that_says_what_to_do(fake_colab: list[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(mountpoint: str, **_: object) -> None:
        raise ValueError("mount failed")

    monkeypatch.setattr(sys.modules["google.colab.drive"], "mount", refuse)
    with pytest.raises(UserError, match=r"could not mount it .* set USE_DRIVE = False") as e:
        colab.setup_workdir(None, mount_point=str(tmp_path / "m"))
    assert "\n" not in str(e.value)


def test_plan_keeps_the_runtime_stack_and_adds_only_what_is_missing() -> None:
    reqs = colab.runtime_requirements(ROOT)
    plan = colab.plan_install(reqs, COLAB_RUNTIME)
    assert plan.missing == [r for r in reqs if colab.requirement_name(r) in ("seaborn", "kaggle")] and len(plan.missing) == 2
    assert plan.kept["opencv-python-headless"] == "opencv-python 4.12.0.88"  # cv2 is there: no second OpenCV
    assert plan.kept["tensorflow"] == "tensorflow 2.22.0" and plan.kept["numpy"] == "numpy 2.0.2"
    assert any(n.startswith("tensorflow 2.22.0 is outside the tested range") for n in plan.notes)
    assert {"tensorflow==2.22.0", "keras==3.10.0", "numpy==2.0.2", "opencv-python==4.12.0.88", "jax==0.5.3"} <= \
        set(plan.constraints)
    assert plan.install_package
    # a headless or contrib OpenCV, or tensorflow-cpu, counts too; a name spelled differently is the same distribution
    other = colab.plan_install(["opencv-python-headless>=4.9", "tensorflow>=2.20", "Scikit_Learn>=1.4"],
                               {"opencv-contrib-python": "4.10.0", "tensorflow-cpu": "2.21.0", "scikit-learn": "1.6",
                                "CXR_Utils": "0.1.0"})
    assert other.missing == [] and not other.install_package


def test_install_runs_pip_for_the_missing_only_with_the_runtime_pinned(capsys) -> None:
    calls: list[tuple[list[str], str | None]] = []

    def fake_pip(args: list[str]) -> None:  # records each pip command and the constraints it was given
        pins = Path(args[args.index("-c") + 1]).read_text() if "-c" in args else None
        calls.append((list(args), pins))

    plan = colab.install_missing(ROOT, installed=COLAB_RUNTIME, pip=fake_pip)
    assert [a for a, _ in calls] == [["-c", calls[0][0][1], *plan.missing], ["--no-deps", "-e", str(ROOT)]]
    pins = calls[0][1].splitlines()
    assert "tensorflow==2.22.0" in pins and "opencv-python==4.12.0.88" in pins and "numpy==2.0.2" in pins
    installed_names = {colab.requirement_name(x) for args, _ in calls for x in args if not x.startswith(("-", "/"))}
    assert installed_names == {"seaborn", "kaggle"}  # never tensorflow, keras, numpy or any OpenCV
    out = capsys.readouterr().out
    assert "opencv-python 4.12.0.88 (for opencv-python-headless)" in out
    assert "installed seaborn>=0.13, kaggle>=1.6" in out and "installed cxr-utils from" in out


def test_install_on_a_complete_runtime_installs_nothing(capsys) -> None:
    full = {**COLAB_RUNTIME, "seaborn": "0.13.2", "kaggle": "1.7.4", "cxr-utils": "0.1.0"}

    def no_pip(args: list[str]) -> None:
        raise AssertionError(f"pip called: {args}")

    plan = colab.install_missing(ROOT, installed=full, pip=no_pip)
    assert plan.missing == [] and not plan.install_package
    assert "nothing to install" in capsys.readouterr().out


def test_a_pip_failure_is_one_line(capsys) -> None:
    def failing(args: list[str]) -> None:
        raise subprocess.CalledProcessError(1, ["pip", *args])

    with pytest.raises(UserError, match=r"could not add seaborn>=0.13, kaggle>=1.6 without changing the runtime"):
        colab.install_missing(ROOT, installed=COLAB_RUNTIME, pip=failing)


def test_pyproject_dependencies_are_requirements_txt_lines() -> None:
    """The Colab setup reads pyproject's dependencies: they must be the runtime lines of requirements.txt."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [ln.split("#")[0].replace(" ", "") for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert [d.replace(" ", "") for d in deps] == lines[: len(deps)]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["notebooks"]
    assert [d.replace(" ", "") for d in extras] == lines[len(deps):]


PRELUDE = r"""
import json, shutil, subprocess, sys, types
from pathlib import Path
LOG, REPO = Path(sys.argv[1]), Path(sys.argv[2])
colab_mod = types.ModuleType("google.colab")
sys.modules["google.colab"] = colab_mod
def fake_run(cmd, check=False, **kw):  # git clone copies the package; pip only records
    with LOG.open("a") as fh:
        fh.write(json.dumps(cmd) + "\n")
    if cmd[:2] == ["git", "clone"]:
        shutil.copytree(REPO / "cxr_utils", Path(cmd[-1]) / "cxr_utils", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", Path(cmd[-1]) / "pyproject.toml")
    return subprocess.CompletedProcess(cmd, 0)
subprocess.run = fake_run
"""


def test_setup_cell_clones_then_installs_before_the_package_is_importable(tmp_path: Path) -> None:
    cells = {p.name: "".join(json.loads(p.read_text())["cells"][1]["source"]) for p in NOTEBOOKS}
    assert len(set(cells.values())) == 1, "the four Setup cells differ"
    cell = next(iter(cells.values()))
    clone = tmp_path / "content" / "cxr-cgan"
    assert cell.count('"/content/cxr-cgan"') == 1
    script = PRELUDE + cell.replace('"/content/cxr-cgan"', repr(str(clone))) + \
        "\nimport cxr_utils\nprint('imported from', cxr_utils.__file__)\n"
    log = tmp_path / "commands.jsonl"
    env = {**os.environ, "CXR_REPO_URL": "https://github.com/someone/cxr-cgan.git"}
    # -S: no site-packages, so cxr_utils (and everything else) is importable only from the clone
    r = subprocess.run([sys.executable, "-S", "-c", script, str(log), str(ROOT)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cmds = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert cmds[0] == ["git", "clone", "-q", "https://github.com/someone/cxr-cgan.git", str(clone)]
    assert cmds[-1][-3:] == ["--no-deps", "-e", str(clone)] and len(cmds) == 3  # clone, missing requirements, package
    assert f"imported from {clone / 'cxr_utils' / '__init__.py'}" in r.stdout
    assert f"repo root: {clone}" in r.stdout and "Colab setup: installed cxr-utils" in r.stdout


def _pci(root: Path, devices: dict[str, tuple[str, str]]) -> Path:
    """A fake /sys/bus/pci/devices: {slot: (vendor, device)}."""
    for slot, (vendor, device) in devices.items():
        (root / slot).mkdir(parents=True)
        (root / slot / "vendor").write_text(vendor + "\n")
        (root / slot / "device").write_text(device + "\n")
    return root


def test_a_tpu_runtime_gets_one_line_saying_what_it_gives_and_what_to_pick(tmp_path: Path, capsys) -> None:
    tpu = _pci(tmp_path / "tpu", {"0000:00:04.0": ("0x1ae0", "0x0063"),  # a TPU v5e chip
                                  "0000:00:05.0": ("0x1ae0", "0x0042"),  # another Google device (a NIC): not a TPU
                                  "0000:00:06.0": ("0x10de", "0x1eb8")})  # an NVIDIA T4: not a TPU
    gpu = _pci(tmp_path / "gpu", {"0000:00:04.0": ("0x10de", "0x1eb8")})
    assert colab.tpu_chips(tpu) == (1, "v5e") and colab.tpu_chips(gpu) == (0, None)
    assert colab.tpu_chips(tmp_path / "no-sysfs") == (0, None)
    assert colab.tpu_note(gpu) is None
    note = colab.tpu_note(tpu)
    assert note.startswith("TPU runtime (1 TPU v5e chip): this project's TensorFlow code connects no TPU")
    assert "googlecolab/colabtools#5164" in note and "tensorflow/tensorflow#96203" in note
    assert note.endswith("training would run on this machine's CPU; pick Runtime > Change runtime type > T4 GPU instead")
    _pci(tmp_path / "tpu", {"0000:00:07.0": ("0x1ae0", "0x0063")})
    assert colab.tpu_note(tpu).startswith("TPU runtime (2 TPU v5e chips)")
    # the Setup cell (install_missing) says it first, before any pip run; on a GPU runtime it says nothing of TPUs
    full = {**COLAB_RUNTIME, "seaborn": "0.13.2", "kaggle": "1.7.4", "cxr-utils": "0.1.0"}
    colab.install_missing(ROOT, installed=full, pip=lambda a: None, pci_root=tpu)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Colab setup: {colab.tpu_note(tpu)}" and "nothing to install" in lines[-1]
    colab.install_missing(ROOT, installed=full, pip=lambda a: None, pci_root=gpu)
    assert "TPU" not in capsys.readouterr().out

