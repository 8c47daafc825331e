"""The library stack the tests run on: `make test-colab-stack` sets CXR_STACK to a constraints file, and this checks that
the venv holds exactly its versions (so a green Colab stage really ran on Colab's TensorFlow, Keras and NumPy)."""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """{distribution: version} of the `name==version` lines of a constraints file."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s#;]+)\s*(#.*)?", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_colab_constraints_pin_tensorflow_keras_and_numpy_inside_the_admitted_ranges() -> None:
    from packaging.requirements import Requirement

    p = pins(ROOT / "constraints-colab.txt")
    assert {"tensorflow", "keras", "numpy"} <= p.keys()
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    ranges = {Requirement(d).name: Requirement(d).specifier for d in deps}
    outside = {n: v for n, v in p.items() if n in ranges and not ranges[n].contains(v)}
    assert not outside, f"constraints-colab.txt pins versions pyproject.toml does not admit: {outside}"


@pytest.mark.skipif(not os.environ.get("CXR_STACK"), reason="CXR_STACK names no constraints file (make test-colab-stack sets it)")
def test_the_venv_holds_the_constraints_file_versions() -> None:
    wanted = pins(ROOT / os.environ["CXR_STACK"])
    have = {n: importlib.metadata.version(n) for n in wanted}
    assert have == wanted
