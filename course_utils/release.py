"""Make the student notebooks from the solution notebooks.

    python -m course_utils.release            # write student/NN_topic.ipynb for every notebook
    python -m course_utils.release --check    # exit 1 if a committed student notebook is stale

For each ``notebooks/NN_topic.ipynb`` it writes ``student/NN_topic.ipynb`` in which:

- every region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (the nbgrader convention) is
  replaced by a line that raises ``NotImplementedError`` (in a markdown cell: by a prompt to answer);
  in code, every region must lie inside a function (or method) body, so that the ``raise`` runs
  only when the exercise's self-check calls the function, and the check catches it: an unsolved
  exercise never stops "Run All" (see :mod:`course_utils.exercises`);
- cells tagged ``instructor`` are removed;
- outputs and execution counts are stripped, and metadata is cut down to the kernel;
- Colab badges point at the student notebook instead of the solution.

Unbalanced or malformed markers, or a region outside a function, stop it with an error naming the
notebook and cell, before any file is written. Running it twice gives the same files byte for byte.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

from course_utils.config import COLAB_URL, PROJECT_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
INSTRUCTOR_TAG = "instructor"
PLACEHOLDER = 'raise NotImplementedError("Exercise: replace this line with your code, then run the check below.")'
MARKDOWN_PLACEHOLDER = "*Write your answer here.*"
SOLUTION_DIR, STUDENT_DIR = "notebooks", "student"
_MARKER = re.compile(r"^(\s*)#+\s*(BEGIN|END)\s+SOLUTION\b(.*)$", re.IGNORECASE)


class ReleaseError(ValueError):
    """A solution notebook's markers are unbalanced or malformed."""


def strip_solutions(source: str, where: str, *, markdown: bool = False) -> tuple[str, list[str]]:
    """Replace each solution region in one cell's source by a placeholder.

    Args:
        source: the cell's text.
        where: "notebook, cell N", for error messages.
        markdown: the cell is markdown (the placeholder is a prompt, not a ``raise``).

    Returns:
        ``(new_source, solution_lines)``: the student's text and the lines that were removed.

    Raises:
        ReleaseError: a marker without its partner, a nested region, or a marker written
            differently from ``### BEGIN SOLUTION`` / ``### END SOLUTION``.
    """
    out: list[str] = []
    removed: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        if match:
            indent, kind, rest = match.group(1), match.group(2).upper(), match.group(3)
            if line.strip() != (BEGIN if kind == "BEGIN" else END) or rest.strip():
                raise ReleaseError(
                    f"{where}, line {number}: malformed marker {line.strip()!r}; "
                    f"write exactly {BEGIN!r} or {END!r} on a line of its own"
                )
            if kind == "BEGIN":
                if inside:
                    raise ReleaseError(f"{where}, line {number}: {BEGIN!r} inside another region")
                inside = True
                out.append(MARKDOWN_PLACEHOLDER if markdown else indent + PLACEHOLDER)
            else:
                if not inside:
                    raise ReleaseError(f"{where}, line {number}: {END!r} without {BEGIN!r}")
                inside = False
        elif inside:
            removed.append(line)
        else:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    student = "\n".join(out)
    if not markdown and PLACEHOLDER in student:
        _check_placeholders_in_functions(student, where)
    return student, removed


def _check_placeholders_in_functions(source: str, where: str) -> None:
    """Raise ReleaseError if a placeholder would run when the cell runs (outside any function)."""
    # IPython's `%magic` and `!shell` lines are not Python; keep the line numbers, drop the text.
    source = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.MULTILINE)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ReleaseError(f"{where}: the student version of this cell is not valid Python "
                           f"({exc.msg}, line {exc.lineno})") from None
    inside_functions: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside_functions.update(id(child) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and id(node) not in inside_functions:
            text = ast.get_source_segment(source, node) or ""
            if text.strip() == PLACEHOLDER:
                raise ReleaseError(
                    f"{where}, line {node.lineno}: a solution region outside a function. Its "
                    "placeholder would raise as soon as the cell runs and stop 'Run All'; put the "
                    "exercise in a function that the self-check calls"
                )


def make_student_notebook(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of one solution notebook (see the module docstring)."""
    cells = []
    for index, cell in enumerate(notebook.cells):
        if INSTRUCTOR_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        where = f"{name}, cell {index}"
        source, _ = strip_solutions(cell.source, where, markdown=cell.cell_type == "markdown")
        if cell.cell_type == "markdown":
            source = source.replace(f"{COLAB_URL}/{SOLUTION_DIR}/", f"{COLAB_URL}/{STUDENT_DIR}/")
            new = nbformat.v4.new_markdown_cell(source)
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source)  # no outputs, no execution count
        else:
            new = nbformat.v4.new_raw_cell(source)
        new.id = cell.get("id", f"cell-{index}")
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != INSTRUCTOR_TAG]
        if tags:
            new.metadata["tags"] = tags
        cells.append(new)
    student = nbformat.v4.new_notebook(cells=cells)
    student.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return student


def _render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def release(root: Path = PROJECT_ROOT, *, check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) the student notebook of every solution notebook.

    Returns:
        With ``check=False``, the files written; with ``check=True``, the student files that are
        missing or differ from what would be written (empty when everything is up to date).
    """
    sources = sorted((root / SOLUTION_DIR).glob("[0-9][0-9]_*.ipynb"))
    rendered = {}
    for path in sources:  # build everything first: a bad marker anywhere writes nothing
        notebook = nbformat.read(path, as_version=4)
        rendered[root / STUDENT_DIR / path.name] = _render(make_student_notebook(notebook, path.name))
    if check:
        stale = [p for p, text in rendered.items() if not p.is_file() or p.read_text() != text]
        expected = set(rendered)
        stale += [p for p in (root / STUDENT_DIR).glob("*.ipynb") if p not in expected]
        return sorted(stale)
    (root / STUDENT_DIR).mkdir(exist_ok=True)
    for path, text in rendered.items():
        path.write_text(text)
    return sorted(rendered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make student notebooks from the solutions.")
    parser.add_argument("--check", action="store_true", help="only report stale student notebooks")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help="the course's folder")
    args = parser.parse_args(argv)
    try:
        paths = release(args.root, check=args.check)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for path in paths:
            print(f"stale: {path.relative_to(args.root)} (run: python -m course_utils.release)")
        return 1 if paths else 0
    for path in paths:
        print(f"wrote {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
