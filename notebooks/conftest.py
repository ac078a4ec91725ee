"""`make test` executes every solution notebook here with nbval (``pytest --nbval-lax``), one cell
a test item, in smoke mode.

While a solution notebook runs, every exercise's self-check must say "correct": a solution that
fails its own check raises instead of printing "not right yet" (``COURSE_CHECK_SOLUTIONS``, see
``course_utils.exercises``). nbval starts each notebook's kernel while the notebook's first cell is
set up, and the kernel inherits this process's environment at that moment; the variable is removed
again after every cell, so unit tests that this worker runs later see the normal checks.
"""

from __future__ import annotations

import os

import pytest

from course_utils.exercises import CHECK_SOLUTIONS_ENV


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    os.environ[CHECK_SOLUTIONS_ENV] = "1"


def pytest_runtest_teardown(item: pytest.Item) -> None:
    os.environ.pop(CHECK_SOLUTIONS_ENV, None)
