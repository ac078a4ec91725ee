"""The public repository's GitHub workflows (.github/workflows/) are valid, and run the same
commands a reader runs locally. They cannot run here, so actionlint checks them: their syntax,
expressions, job and step keys, and the inputs of the actions they use.

actionlint comes with the [docs] extra; without it the test is skipped, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from course_utils.config import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def _actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        reason = (
            "actionlint not found: install the [docs] extra (`make book` does), "
            "or put actionlint on PATH"
        )
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason} (CI=true, so this check may not be skipped)")
        pytest.skip(reason)
    return found


def _lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_actionlint(), "-no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_ROOT,
    )


def _run_steps(workflow: Path) -> list[str]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job.get("steps", []) if "run" in step]


def test_there_are_a_test_and_a_website_workflow():
    names = {path.name for path in WORKFLOWS}
    assert {"test.yml", "pages.yml"} <= names, f"workflows found: {sorted(names)}"


def test_workflows_pass_actionlint():
    result = _lint(*WORKFLOWS)
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """The check above can fail: a misspelt key and an unknown expression are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs_on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nothing }}\n"
    )
    result = _lint(broken)
    assert result.returncode != 0, "actionlint accepted a broken workflow"
    assert "runs_on" in result.stdout or "runs-on" in result.stdout, result.stdout


def test_workflows_run_the_local_commands():
    """Every step that runs a command runs a make target or the project's .venv, as readers do."""
    for workflow in WORKFLOWS:
        for command in _run_steps(workflow):
            assert "make " in command or ".venv/bin/python" in command, (
                f"{workflow.name}: step {command!r} is not a command of the project (make ..., or "
                ".venv/bin/python ...)"
            )
    test_steps = " ".join(_run_steps(PROJECT_ROOT / ".github/workflows/test.yml"))
    for target in ("ONEDNN_MAX_CPU_ISA=AVX2 make test", "make test-train"):
        assert target in test_steps, f"test.yml does not run `{target}`"
    pages = (PROJECT_ROOT / ".github/workflows/pages.yml").read_text()
    assert "make book" in pages and "actions/deploy-pages" in pages
