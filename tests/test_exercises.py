"""Tests of the generic self-check machinery: correct, missing, wrong and crashing solutions.

(Each notebook exercise's own check, with its list of wrong answers: tests/test_selfchecks.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.exercises import (
    CHECK_SOLUTIONS_ENV,
    SolutionCheckError,
    check_exercise,
    results_match,
)
from course_utils.exercises.core import forbid


def test_results_match_against_numpy_and_torch():
    assert results_match(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    assert not results_match(np.array([1.0, 2.0]), np.array([1.0, 2.1]))
    assert not results_match(np.zeros(3), np.zeros(4))
    assert results_match(torch.ones(2, 3), torch.ones(2, 3))
    assert not results_match(torch.ones(2, 3), torch.ones(3, 2))
    assert results_match((0.49, 0.48), (0.49, 0.48))
    assert not results_match((0.49,), (0.49, 0.48))
    assert results_match({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]})
    assert not results_match({"a": 1}, {"b": 1})
    assert results_match("cat", "cat") and not results_match("cat", "dog")
    assert not results_match("abc", 1.0)


def test_passing_solution_is_used(capsys):
    result = check_exercise("sum", student=lambda: np.array([3.0]), reference=lambda: np.array([3.0]))
    assert result[0] == 3.0
    assert capsys.readouterr().out.startswith("[sum] correct: ")


def test_missing_solution_falls_back_with_hint(capsys):
    def student():
        raise NotImplementedError

    result = check_exercise("sum", student, reference=lambda: 7, hint="add them up")
    out = capsys.readouterr().out
    assert result == 7 and "hint: add them up" in out
    assert out.startswith("[sum] not solved yet: the rest of this notebook uses the reference")


def test_wrong_solution_falls_back(capsys):
    result = check_exercise("sum", student=lambda: 6, reference=lambda: 7, hint="off by one?")
    out = capsys.readouterr().out
    assert result == 7 and out.startswith("[sum] not right yet: ") and "off by one?" in out


def test_crashing_solution_is_reported_and_falls_back(capsys):
    result = check_exercise("sum", student=lambda: 1 / 0, reference=lambda: 7)
    out = capsys.readouterr().out
    assert result == 7 and out.startswith("[sum] not right yet: ") and "ZeroDivisionError" in out


def test_custom_comparison():
    result = check_exercise("shape", student=lambda: torch.zeros(2, 5), reference=lambda: torch.ones(2, 5),
                            compare=lambda a, b: a.shape == b.shape)
    assert torch.equal(result, torch.zeros(2, 5))


def test_forbidden_reference_is_trapped_and_restored():
    import types

    from course_utils import exercises as E

    owner = types.SimpleNamespace(reference=lambda: 1)
    original = owner.reference
    namespace = {"alias": original}
    exec("def student():\n    return alias()", namespace)  # noqa: S102
    try:
        with forbid(namespace["student"], [(owner, "reference")], "no peeking"):
            namespace["student"]()
    except E.Wrong as wrong:
        assert str(wrong) == "no peeking"
    else:
        raise AssertionError("the alias of the reference was not trapped")
    assert owner.reference is original and namespace["alias"] is original


@pytest.mark.parametrize("answer", ["missing", "wrong", "crash"])
def test_solution_notebooks_demand_correct(answer: str, monkeypatch: pytest.MonkeyPatch, capsys):
    """With COURSE_CHECK_SOLUTIONS=1 (the solution notebooks under `make test`), any verdict but
    "correct" raises, so a solution that fails its own check fails the run."""

    def student():
        if answer == "missing":
            raise NotImplementedError
        if answer == "crash":
            raise KeyError("oops")
        return 8

    monkeypatch.setenv(CHECK_SOLUTIONS_ENV, "1")
    with pytest.raises(SolutionCheckError, match=r"\[sum\] the solution's answer is 'not"):
        check_exercise("sum", student, reference=lambda: 7)
    assert "[sum] not" in capsys.readouterr().out  # the verdict is printed first, as always
    assert check_exercise("sum", lambda: 7, reference=lambda: 7) == 7  # correct passes
