"""The conda environment and the pip package declare the same dependencies, and importing the
package has no side effects."""

from __future__ import annotations

import re
import subprocess
import sys

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
        "import course_utils, course_utils.config, course_utils.data, course_utils.models,"
        " course_utils.training, course_utils.evaluation, course_utils.plotting, course_utils.cli,"
        " course_utils.exercises, course_utils.release;"
        "assert torch.equal(state, torch.get_rng_state()), 'import changed the RNG state'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
