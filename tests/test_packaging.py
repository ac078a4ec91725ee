"""The conda environment and the pip package declare the same dependencies, importing the package
has no side effects, a hung test fails within its timeout, and `make lab` keeps students' work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest
import tomllib
import yaml

from course_utils.config import PROJECT_ROOT

CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge/pytorch channel names that differ from PyPI's


def _normalize(requirement: str) -> tuple[str, str]:
    """``"Scikit_Learn >= 1.3"`` -> ``("scikit-learn", ">=1.3")``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert match, f"cannot read requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return CONDA_TO_PIP.get(name, name), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalize(r) for r in project["dependencies"]}
    declared |= {_normalize(r) for r in project["optional-dependencies"]["dev"]}
    python_requirement = project["requires-python"]

    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip |= {_normalize(r) for r in entry["pip"] if not r.startswith("-e")}
        else:
            conda.add(_normalize(entry))
    assert ("python", python_requirement) in conda
    conda -= {("python", python_requirement), ("pip", "")}
    assert conda | pip == declared, (
        f"only in environment.yml: {sorted((conda | pip) - declared)}; "
        f"only in pyproject.toml: {sorted(declared - (conda | pip))}"
    )


def test_import_has_no_side_effects():
    """Importing every module prints nothing and leaves the global RNG untouched."""
    code = (
        "import torch; state = torch.get_rng_state();"
        "import importlib, pkgutil, course_utils;"
        "[importlib.import_module(f'course_utils.{m.name}') for m in"
        " pkgutil.iter_modules(course_utils.__path__) if m.name != '__main__'];"
        "assert torch.equal(state, torch.get_rng_state()), 'import changed the RNG state'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_a_hang_in_native_code_fails_within_its_timeout(tmp_path):
    """pytest-timeout, as configured in pyproject.toml, ends a test stuck in native code (as a
    oneDNN kernel stuck in an OpenMP barrier is) and prints its stack; a per-test limit overrides
    the default.
    A torch Future that nobody completes waits forever in C++, with the GIL released."""
    (tmp_path / "test_hang.py").write_text(
        "import pytest, torch\n\n"
        "@pytest.mark.timeout(3)\n"
        "def test_stuck():\n"
        "    torch.futures.Future().wait()\n"
    )
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
             "-c", str(PROJECT_ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a hung test was not stopped by pytest-timeout within 120 s: check "
                    "timeout_method in pyproject.toml ('thread' ends hangs in native code)")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Timeout" in output and "test_hang.py" in output, f"no timeout stack dump:\n{output}"
    assert time.monotonic() - started < 60, "the 3 s per-test limit did not apply"


def test_make_lab_copies_student_notebooks_and_never_overwrites(tmp_path):
    """`make lab` gives students a working folder that course updates never touch: it copies the
    student notebooks they do not have yet, keeps the ones they have, and opens JupyterLab there."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    venv, work = tmp_path / "venv", tmp_path / "work"
    (venv / "bin").mkdir(parents=True)
    jupyter = venv / "bin" / "jupyter"  # stands in for JupyterLab: records where it was opened
    jupyter.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/opened"\n')
    jupyter.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: make does not set .venv up again
    students = sorted(p.name for p in (PROJECT_ROOT / "student").glob("*.ipynb"))
    assert students, "no student notebooks in student/"

    def lab() -> None:
        subprocess.run(["make", "-s", "lab", f"VENV={venv}", f"WORK={work}"], cwd=PROJECT_ROOT,
                       check=True, capture_output=True, timeout=60)

    lab()
    assert sorted(p.name for p in work.glob("*.ipynb")) == students
    assert (tmp_path / "opened").read_text().split() == ["lab", f"{work}/"]
    (work / students[0]).write_text("my answers")
    (work / students[-1]).unlink()  # as if the course had added this notebook since
    lab()
    assert (work / students[0]).read_text() == "my answers", "make lab overwrote a notebook"
    assert (work / students[-1]).is_file(), "make lab did not copy a new notebook"
