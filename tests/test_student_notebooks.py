"""The student notebooks run like "Run All" in JupyterLab: top to bottom, stopping at the first
error.

nbclient executes cells in order and, with ``allow_errors=False`` (its default), stops at the first
cell that raises and fails the test with that cell's traceback: the same semantics as JupyterLab's
"Run All", which stops at the first error. Two runs per notebook, in smoke mode on real data:

1. as released, every exercise unsolved: the whole notebook must run, and every self-check must
   say "not solved yet" (and the rest of the notebook runs on the reference implementation);
2. with the solution notebook's exercise cells pasted in (as a student who solved everything):
   every self-check must say "correct". This run stops after the last self-check: the cells after
   it are the solution notebook's, which the smoke website build executes (tests/test_book.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from course_utils import release as R
from course_utils.config import PROJECT_ROOT
from course_utils.exercises import CORRECT, NOT_RIGHT, NOT_SOLVED

STUDENT_DIR = PROJECT_ROOT / R.STUDENT_DIR
SOLUTION_DIR = PROJECT_ROOT / R.SOLUTION_DIR
STUDENTS = sorted(STUDENT_DIR.glob("[0-9][0-9]_*.ipynb"))
VERDICT = re.compile(
    rf"^\[(?P<name>[^\]]+)\] (?P<verdict>{CORRECT}|{NOT_SOLVED}|{NOT_RIGHT}):", re.MULTILINE
)
CELL_TIMEOUT_S = 300  # one cell; a hang fails here instead of eating CI's time


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _exercise_and_check_cells(notebook: nbformat.NotebookNode) -> list[tuple[int, int]]:
    """(exercise, self-check) cell indices: a cell with a placeholder, and the next code cell."""
    pairs = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and R.PLACEHOLDER in cell.source:
            following = next(
                i
                for i in range(index + 1, len(notebook.cells))
                if notebook.cells[i].cell_type == "code"
            )
            pairs.append((index, following))
    return pairs


def _execute(notebook: nbformat.NotebookNode, cifar_root: Path, monkeypatch) -> None:
    """Run every cell in a fresh kernel, as Run All does; the first error fails the test."""
    from nbclient import NotebookClient

    monkeypatch.setenv("COURSE_SMOKE", "1")
    monkeypatch.setenv("COURSE_DATA_DIR", str(cifar_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        kernel_name="python3",
        resources={"metadata": {"path": str(STUDENT_DIR)}},
    ).execute()


def _verdicts(cell: nbformat.NotebookNode) -> list[tuple[str, str]]:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return [(m["name"], m["verdict"]) for m in VERDICT.finditer(text)]


def test_every_notebook_with_exercises_has_a_student_version():
    names = [p.name for p in STUDENTS]
    assert names == [p.name for p in sorted(SOLUTION_DIR.glob("[0-9][0-9]_*.ipynb"))]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", STUDENTS, ids=_ids(STUDENTS))
def test_run_all_with_every_exercise_unsolved(path: Path, cifar_root, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    _execute(notebook, cifar_root, monkeypatch)  # raises at the first failing cell
    for exercise, check in _exercise_and_check_cells(notebook):
        verdicts = _verdicts(notebook.cells[check])
        assert verdicts, (
            f"{path.name} cell {check}: the self-check of cell {exercise} printed no verdict"
        )
        for name, verdict in verdicts:
            assert verdict == NOT_SOLVED, f"{path.name} cell {check}: [{name}] says {verdict!r}"


def _with_solutions_pasted(path: Path) -> tuple[nbformat.NotebookNode, list[tuple[int, int]]]:
    """The student notebook, each exercise cell replaced by the solution's, up to the last check."""
    student = nbformat.read(path, as_version=4)
    solutions = {
        cell.id: cell for cell in nbformat.read(SOLUTION_DIR / path.name, as_version=4).cells
    }
    pairs = _exercise_and_check_cells(student)
    for exercise, _ in pairs:
        cell = student.cells[exercise]
        assert R.BEGIN in solutions[cell.id].source, f"{path.name}: cell {cell.id} has no solution"
        cell.source = solutions[cell.id].source
    if pairs:
        student.cells = student.cells[: pairs[-1][1] + 1]
    return student, pairs


EXERCISE_STUDENTS = [
    p for p in STUDENTS if _exercise_and_check_cells(nbformat.read(p, as_version=4))
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", EXERCISE_STUDENTS, ids=_ids(EXERCISE_STUDENTS))
def test_pasted_solutions_are_correct(path: Path, cifar_root, monkeypatch):
    notebook, pairs = _with_solutions_pasted(path)
    _execute(notebook, cifar_root, monkeypatch)
    for exercise, check in pairs:
        verdicts = _verdicts(notebook.cells[check])
        assert verdicts, (
            f"{path.name} cell {check}: the self-check of cell {exercise} printed no verdict"
        )
        for name, verdict in verdicts:
            assert verdict == CORRECT, f"{path.name} cell {check}: [{name}] says {verdict!r}"
