"""Checks of the notebooks as files: jupytext pairs in sync, no outputs in git, Colab badges and setup
cells that use the one repository URL, exercises with self-checks, and student versions that are up
to date and leak no solution.

(Executing the solution notebooks is nbval's job in `make test`, with every self-check required to
say "correct" (notebooks/conftest.py); a failing cell fails the run. Executing the student
notebooks, unsolved: tests/test_student_notebooks.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from course_utils import release as R
from course_utils.config import COLAB_URL, PROJECT_ROOT, REPOSITORY_URL

NOTEBOOK_DIR = PROJECT_ROOT / R.SOLUTION_DIR
STUDENT_DIR = PROJECT_ROOT / R.STUDENT_DIR
SOLUTIONS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
STUDENTS = sorted(STUDENT_DIR.glob("[0-9][0-9]_*.ipynb"))
EXERCISE_NOTEBOOKS = [p for p in SOLUTIONS if not p.name.startswith("00_")]


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


#: The numbered notebooks: the core sequence 00-06 and the labs after it (07-09).
NOTEBOOK_NUMBERS = [f"{i:02d}" for i in range(10)]


def test_numbered_notebooks():
    assert [p.name[:2] for p in SOLUTIONS] == NOTEBOOK_NUMBERS


@pytest.mark.parametrize("path", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_pair_in_sync(path: Path):
    paired = path.with_suffix(".py")
    assert paired.is_file(), f"{path.name} has no paired {paired.name}: run jupytext --sync {path}"
    from_ipynb = jupytext.read(path)
    from_py = jupytext.read(paired)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]
    assert cells(from_ipynb) == cells(from_py), f"run: jupytext --sync {path.relative_to(PROJECT_ROOT)}"


@pytest.mark.parametrize("path", SOLUTIONS + STUDENTS, ids=_ids(SOLUTIONS) + ["student-" + s for s in _ids(STUDENTS)])
def test_no_outputs_committed(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has outputs: strip them"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_structure_badge_and_setup_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]}")
    assert f"{COLAB_URL}/{R.SOLUTION_DIR}/{path.name}" in first.source, "Colab badge missing or stale"
    setup = notebook.cells[1]
    assert setup.cell_type == "code" and "google.colab" in setup.source
    assert REPOSITORY_URL in setup.source, "the setup cell must install from config.REPOSITORY_URL"
    assert "warn_if_no_gpu()" in setup.source, "on Colab, the setup cell must warn when there is no GPU"
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "What you learned" in markdown and "Check your understanding" in markdown
    # Every URL to the course's own repository is the one in config.py.
    for url in re.findall(r"https://(?:github\.com|colab\.research\.google\.com/github)/[\w.-]+/[\w.-]+", json.dumps(notebook.cells)):
        assert url in (REPOSITORY_URL, COLAB_URL.rsplit("/blob", 1)[0]), f"stray repository URL {url}"


def _solution_regions(path: Path) -> list[tuple[int, list[str]]]:
    notebook = nbformat.read(path, as_version=4)
    regions = []
    for index, cell in enumerate(notebook.cells):
        _, removed = R.strip_solutions(cell.source, f"{path.name}, cell {index}", markdown=cell.cell_type == "markdown")
        if cell.source.count(R.BEGIN):
            regions.append((index, removed))
    return regions


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=_ids(EXERCISE_NOTEBOOKS))
def test_exercises_have_self_checks(path: Path):
    notebook = nbformat.read(path, as_version=4)
    exercise_cells = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and R.BEGIN in c.source]
    wanted = 2 if path.name < "07" else 1  # the labs after the core sequence: at least one
    assert len(exercise_cells) >= wanted, f"{path.name} needs at least {wanted} exercises"
    for index in exercise_cells:
        following = [c for c in notebook.cells[index + 1 :] if c.cell_type == "code"][:1]
        assert following and re.search(r"\bcheck_\w+\(", following[0].source), (
            f"{path.name} cell {index}: the next code cell must be the exercise's self-check"
        )


def test_student_notebooks_up_to_date():
    assert R.release(PROJECT_ROOT, check=True) == [], "run: python -m course_utils.release"


def _all_text(path: Path) -> str:
    """Everything in a notebook file a student could read: sources, outputs, metadata."""
    notebook = nbformat.read(path, as_version=4)
    parts = [json.dumps(notebook.metadata)]
    for cell in notebook.cells:
        parts += [cell.source, json.dumps(cell.get("outputs", [])), json.dumps(cell.metadata)]
    return "\n".join(parts)


def test_no_solution_line_in_any_student_file():
    student_text = {p.name: _all_text(p) for p in STUDENTS}
    assert student_text, "no student notebooks: run python -m course_utils.release"
    for path in SOLUTIONS:
        for index, removed in _solution_regions(path):
            for line in removed:
                line = line.strip()
                if len(line) < 6 or not re.search(r"[A-Za-z]", line):
                    continue  # a bracket or a bare `x = 1` says nothing of the solution
                for name, text in student_text.items():
                    assert line not in text, f"solution line of {path.name} cell {index} leaks into student/{name}: {line!r}"


def test_readme_maps_every_notebook_with_both_badges():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for path in SOLUTIONS:
        assert f"]({R.SOLUTION_DIR}/{path.name})" in readme, f"README does not link {path.name}"
        for folder in (R.SOLUTION_DIR, R.STUDENT_DIR):
            assert f"({COLAB_URL}/{folder}/{path.name})" in readme, f"README lacks the {folder} badge of {path.name}"
