"""Tests of the student-notebook generator on notebooks written here."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course_utils import release as R
from course_utils.config import COLAB_URL

SOLUTION_CELL = """def channel_means(images):
    # Hint: average over every axis but the last.
    ### BEGIN SOLUTION
    flat = images.reshape(-1, 3)
    return flat.mean(axis=0)
    ### END SOLUTION

channel_means(sample)"""


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "jupytext": {"formats": "ipynb,py:percent"}, "widgets": {"state": {}}}
    return nb


def test_region_becomes_indented_placeholder():
    source, removed = R.strip_solutions(SOLUTION_CELL, "nb, cell 1")
    assert removed == ["    flat = images.reshape(-1, 3)", "    return flat.mean(axis=0)"]
    assert "flat.mean" not in source and "BEGIN SOLUTION" not in source
    assert "    " + R.PLACEHOLDER in source.splitlines()
    assert "    # Hint: average over every axis but the last." in source.splitlines()
    assert source.splitlines()[-1] == "channel_means(sample)"
    compile(source, "student", "exec")  # still valid Python


def test_placeholder_raises_not_implemented():
    source, _ = R.strip_solutions(SOLUTION_CELL, "nb, cell 1")
    with pytest.raises(NotImplementedError, match="Exercise"):
        exec(source, {"sample": None})  # noqa: S102 - the generated placeholder, run on purpose


def test_several_regions_and_markdown():
    source = ("def f():\n    a = 1\n    ### BEGIN SOLUTION\n    b = 2\n    ### END SOLUTION\n\n\n"
              "class C:\n    def g(self):\n        ### BEGIN SOLUTION\n        d = 4\n        ### END SOLUTION")
    out, removed = R.strip_solutions(source, "x")
    assert removed == ["    b = 2", "        d = 4"] and out.count(R.PLACEHOLDER) == 2
    compile(out, "student", "exec")
    md, removed = R.strip_solutions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "x", markdown=True)
    assert md == "Why?\n" + R.MARKDOWN_PLACEHOLDER and removed == ["Because."]


@pytest.mark.parametrize(
    "source",
    [
        "### BEGIN SOLUTION\nmy_mean = 0.5\n### END SOLUTION",  # at the top level of the cell
        "class Block:\n    ### BEGIN SOLUTION\n    size = 3\n    ### END SOLUTION",  # class body
        "%matplotlib inline\nfor i in range(3):\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION",
    ],
)
def test_region_outside_a_function_is_refused(source):
    """Its placeholder would raise when the cell runs and stop Run All: the exercise must be a
    function that the self-check calls."""
    with pytest.raises(R.ReleaseError, match="outside a function") as info:
        R.strip_solutions(source, "01_topic.ipynb, cell 4")
    assert "01_topic.ipynb, cell 4" in str(info.value)


def test_student_cell_that_only_defines_functions_runs():
    """Running an exercise cell of a student notebook defines the function and raises nothing."""
    source, _ = R.strip_solutions(SOLUTION_CELL.rsplit("\n", 1)[0], "nb, cell 1")
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - defining the function must not raise
    with pytest.raises(NotImplementedError):
        namespace["channel_means"](None)


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("x = 1\n### END SOLUTION", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside another region"),
        ("### BEGIN SOLUTION here\nx\n### END SOLUTION", "malformed marker"),
        ("## BEGIN SOLUTION\nx\n### END SOLUTION", "malformed marker"),
        ("### begin solution\nx\n### END SOLUTION", "malformed marker"),
    ],
)
def test_bad_markers_name_notebook_and_cell(source, message):
    with pytest.raises(R.ReleaseError, match=message) as info:
        R.strip_solutions(source, "03_blocks.ipynb, cell 7")
    assert "03_blocks.ipynb, cell 7" in str(info.value)


def _write_course(root: Path, cells) -> Path:
    (root / "notebooks").mkdir(parents=True)
    path = root / "notebooks" / "01_topic.ipynb"
    nbformat.write(_notebook(*cells), path)
    return path


def test_release_writes_clean_student_notebook(tmp_path):
    code = nbformat.v4.new_code_cell(SOLUTION_CELL, execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="0.49\n")])
    code.metadata = {"tags": ["exercise"], "scrolled": True}
    secret = nbformat.v4.new_code_cell("print('instructor only: the answers')")
    secret.metadata = {"tags": ["instructor"]}
    badge = nbformat.v4.new_markdown_cell(f"[![Open](badge.svg)]({COLAB_URL}/notebooks/01_topic.ipynb)")
    _write_course(tmp_path, [badge, code, secret])

    written = R.release(tmp_path)
    assert written == [tmp_path / "student" / "01_topic.ipynb"]
    student = nbformat.read(written[0], as_version=4)
    assert [c.cell_type for c in student.cells] == ["markdown", "code"]
    assert f"{COLAB_URL}/student/01_topic.ipynb" in student.cells[0].source
    cell = student.cells[1]
    assert cell.outputs == [] and cell.execution_count is None
    assert cell.metadata == {"tags": ["exercise"]}
    assert set(student.metadata) == {"kernelspec", "language_info"}
    text = written[0].read_text()
    assert "flat.mean" not in text and "instructor only" not in text and "0.49" not in text


def test_release_is_idempotent_and_check_detects_staleness(tmp_path):
    source = _write_course(tmp_path, [nbformat.v4.new_code_cell(SOLUTION_CELL)])
    R.release(tmp_path)
    first = (tmp_path / "student" / "01_topic.ipynb").read_bytes()
    R.release(tmp_path)
    assert (tmp_path / "student" / "01_topic.ipynb").read_bytes() == first
    assert R.release(tmp_path, check=True) == []

    nb = nbformat.read(source, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A new cell."))
    nbformat.write(nb, source)
    assert R.release(tmp_path, check=True) == [tmp_path / "student" / "01_topic.ipynb"]
    assert R.main(["--check", "--root", str(tmp_path)]) == 1


def test_bad_marker_writes_nothing(tmp_path, capsys):
    _write_course(tmp_path, [nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1")])
    assert R.main(["--root", str(tmp_path)]) == 2
    assert "01_topic.ipynb, cell 0" in capsys.readouterr().err
    assert not (tmp_path / "student").exists()
