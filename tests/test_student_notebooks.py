"""The student notebooks run like "Run All" in JupyterLab, with every exercise unsolved.

nbclient executes cells in order and, with ``allow_errors=False`` (its default), stops at the first
cell that raises and fails the test with that cell's traceback: the same semantics as JupyterLab's
"Run All". Each student notebook runs in smoke mode on real data, every exercise unsolved, up to and
including its last self-check: the whole notebook must run that far, and every self-check must say
"not solved yet" and hand the rest of the notebook the reference result.

What this does not repeat, because `make test` proves it already:
- the solved exercises: nbval runs every solution notebook with each self-check required to say
  "correct" (``notebooks/conftest.py``);
- the cells after the last self-check: they are the solution notebook's cells, word for word, and
  :func:`test_later_cells_use_only_what_the_checks_return` shows that none of them reads a name an
  exercise cell defines, so they run on the same state as in the solution notebook, which nbval
  executes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from course_utils import release as R
from course_utils.config import PROJECT_ROOT
from course_utils.exercises import CHECK_SOLUTIONS_ENV, CORRECT, NOT_RIGHT, NOT_SOLVED

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
    monkeypatch.delenv(CHECK_SOLUTIONS_ENV, raising=False)  # unsolved checks must not raise here
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


EXERCISE_STUDENTS = [
    p for p in STUDENTS if _exercise_and_check_cells(nbformat.read(p, as_version=4))
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", EXERCISE_STUDENTS, ids=_ids(EXERCISE_STUDENTS))
def test_run_all_with_every_exercise_unsolved(path: Path, cifar_root, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    pairs = _exercise_and_check_cells(notebook)
    notebook.cells = notebook.cells[: pairs[-1][1] + 1]  # up to the last self-check (see above)
    _execute(notebook, cifar_root, monkeypatch)  # raises at the first failing cell
    for exercise, check in pairs:
        verdicts = _verdicts(notebook.cells[check])
        assert verdicts, (
            f"{path.name} cell {check}: the self-check of cell {exercise} printed no verdict"
        )
        for name, verdict in verdicts:
            assert verdict == NOT_SOLVED, f"{path.name} cell {check}: [{name}] says {verdict!r}"


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython's ``%magics`` and ``!commands`` translated)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _defined(source: str) -> set[str]:
    """The names a cell binds at its top level: functions, classes, assignments, imports."""
    names = set()
    for node in ast.parse(_python(source)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _read(source: str) -> set[str]:
    return {
        n.id
        for n in ast.walk(ast.parse(_python(source)))
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


@pytest.mark.parametrize("path", STUDENTS, ids=_ids(STUDENTS))
def test_later_cells_use_only_what_the_checks_return(path: Path):
    """After its self-check, no cell reads a name an exercise cell defines (the student's function,
    or a helper beside it): the rest of the notebook goes on with what the check returned, the
    student's result or the reference one, so it computes what the solution notebook computes."""
    notebook = nbformat.read(path, as_version=4)
    code = {i: c.source for i, c in enumerate(notebook.cells) if c.cell_type == "code"}
    for exercise, check in _exercise_and_check_cells(notebook):
        names = _defined(code[exercise])
        assert names, f"{path.name} cell {exercise}: the exercise defines nothing"
        for index in (i for i in code if i > check):
            leaked = names & _read(code[index])
            assert not leaked, (
                f"{path.name} cell {index} reads {sorted(leaked)}, defined by exercise cell "
                f"{exercise}: use what the self-check (cell {check}) returned instead"
            )


def test_student_code_is_the_solution_code_without_the_solutions():
    """Every student code cell is the solution notebook's cell of the same id, and only exercise
    cells differ (course_utils.release replaces their solutions), so nbval's run of the solution
    notebooks covers the cells the student run above does not execute."""
    for path in STUDENTS:
        student = nbformat.read(path, as_version=4)
        solution = nbformat.read(SOLUTION_DIR / path.name, as_version=4)
        assert [c.id for c in student.cells] == [c.id for c in solution.cells], path.name
        for mine, theirs in zip(student.cells, solution.cells):
            if mine.cell_type == "code" and R.BEGIN not in theirs.source:
                assert mine.source == theirs.source, f"{path.name} cell {mine.id} differs"
