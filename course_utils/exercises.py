"""Self-checks for the notebooks' exercises, with a fallback so a student is never stuck.

Every exercise in a notebook is followed by a cell like::

    stats = check_exercise(
        "channel statistics",
        student=lambda: my_mean_std(train.images),
        reference=lambda: compute_mean_std(train.images),
        hint="Keep running sums of x and x**2 per channel; var = E[x^2] - E[x]^2.",
    )

It runs the student's code and compares the result with the reference implementation in
``course_utils``. If they agree, the student's result is used from then on; if the student's code is
missing (``NotImplementedError``), fails, or disagrees, the check says so, shows the hint, and
returns the reference result, so the rest of the notebook still runs.

Used by notebooks 01-06; the student versions are made by :mod:`course_utils.release`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def results_match(actual: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Whether two results agree: numbers, arrays and tensors within tolerance, containers
    element by element, anything else by ``==``."""
    if isinstance(expected, torch.Tensor) or isinstance(actual, torch.Tensor):
        try:
            a = torch.as_tensor(actual).detach().cpu().double()
            e = torch.as_tensor(expected).detach().cpu().double()
        except (TypeError, ValueError, RuntimeError):
            return False
        return a.shape == e.shape and bool(torch.allclose(a, e, atol=atol, rtol=rtol))
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        try:
            a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        except (TypeError, ValueError):
            return False
        return a.shape == e.shape and bool(np.allclose(a, e, atol=atol, rtol=rtol))
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return isinstance(actual, (int, float, np.number)) and bool(
            np.isclose(float(actual), float(expected), atol=atol, rtol=rtol)
        )
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(results_match(a, e, atol, rtol) for a, e in zip(actual, expected))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(results_match(actual[k], expected[k], atol, rtol) for k in expected)
        )
    return bool(actual == expected)


def check_exercise(
    name: str,
    student: Callable[[], T],
    reference: Callable[[], T],
    hint: str = "",
    compare: Callable[[T, T], bool] | None = None,
) -> T:
    """Run a student's solution, compare it with the reference, and return the result to use.

    Args:
        name: the exercise, as the notebook calls it.
        student: runs the student's code and returns its result.
        reference: runs ``course_utils``'s implementation on the same input.
        hint: shown when the student's result is missing or wrong.
        compare: ``compare(student_result, reference_result) -> bool``; default
            :func:`results_match`.

    Returns:
        The student's result when it passes, otherwise the reference result.
    """
    expected = reference()
    try:
        actual = student()
    except NotImplementedError:
        print(f"[{name}] not solved yet: using the reference implementation from course_utils.")
        _show_hint(hint)
        return expected
    except Exception as exc:  # noqa: BLE001 - a student's bug: report it, go on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        print(
            f"[{name}] your code raised {type(exc).__name__}: {exc} (line {last.lineno}). "
            "Using the reference implementation for now."
        )
        _show_hint(hint)
        return expected
    if (compare or results_match)(actual, expected):
        print(f"[{name}] passed: your result matches the reference. The notebook now uses yours.")
        return actual
    print(f"[{name}] not quite: your result differs from the reference. Using the reference for now.")
    _show_hint(hint)
    return expected


def _show_hint(hint: str) -> None:
    if hint:
        print(f"    hint: {hint}")
