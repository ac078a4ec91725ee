"""The machinery every self-check shares: verdicts, the fallback, and the trap that keeps a
student's answer from calling the reference implementation. See ``course_utils.exercises``."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")

CORRECT, NOT_SOLVED, NOT_RIGHT = "correct", "not solved yet", "not right yet"
FALLBACK = "the rest of this notebook uses the reference implementation."
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's
_PACKAGE = str(Path(__file__).resolve().parent.parent)  # course_utils/


#: Environment variable that makes every self-check demand "correct": set while the *solution*
#: notebooks run in ``make test`` (``notebooks/conftest.py``), so a solution that fails its own
#: check fails the test run instead of printing "not right yet".
CHECK_SOLUTIONS_ENV = "COURSE_CHECK_SOLUTIONS"


class Wrong(Exception):
    """Raised inside a check when the student's answer is wrong; the message says what is wrong."""


class SolutionCheckError(AssertionError):
    """A solution notebook's own answer did not pass its check (``COURSE_CHECK_SOLUTIONS=1``)."""


# --------------------------------------------------------------------------------------------------
# The machinery every check shares
# --------------------------------------------------------------------------------------------------


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


def self_check(
    name: str,
    attempt: Callable[[], T],
    reference: Callable[[], T],
    hint: str = "",
    uses: str = "your result",
) -> T:
    """Run ``attempt`` (the student's code and its checks), report, and return the result to use.

    Args:
        name: the exercise, as the notebook calls it; every line printed starts with it.
        attempt: runs the student's code; returns its result, or raises :class:`Wrong` with a
            diagnosis. A ``NotImplementedError`` means "not solved yet".
        reference: computes the reference result, used when the attempt does not pass.
        hint: shown with a wrong or missing answer.
        uses: what the notebook goes on with when the answer is correct.

    Returns:
        The attempt's result when it passes, otherwise the reference result.
    """
    try:
        result = attempt()
    except NotImplementedError:
        verdict, detail = NOT_SOLVED, FALLBACK
    except Wrong as wrong:
        verdict, detail = NOT_RIGHT, f"{wrong} So {FALLBACK}"
    except Exception as exc:  # noqa: BLE001 - a student's bug: report it, go on
        verdict = NOT_RIGHT
        detail = f"your code raised {type(exc).__name__}: {exc}{_where(exc)}. So {FALLBACK}"
    else:
        _say(name, CORRECT, f"the rest of this notebook uses {uses}.")
        return result
    _say(name, verdict, detail, hint)
    if os.environ.get(CHECK_SOLUTIONS_ENV, "").strip().lower() in {"1", "true", "yes"}:
        raise SolutionCheckError(f"[{name}] the solution's answer is {verdict!r}: {detail}")
    return reference()


def check_exercise(
    name: str,
    student: Callable[[], T],
    reference: Callable[[], T],
    hint: str = "",
    compare: Callable[[T, T], bool] | None = None,
) -> T:
    """The generic check: ``student()`` against ``reference()`` (default :func:`results_match`).

    The notebooks' own checks below go further (several inputs, named mistakes); this one is for
    an exercise added quickly.
    """
    expected = reference()

    def attempt() -> T:
        actual = student()
        if not (compare or results_match)(actual, expected):
            raise Wrong("your result differs from the reference.")
        return actual

    return self_check(name, attempt, lambda: expected, hint)


def _say(name: str, verdict: str, detail: str, hint: str = "") -> None:
    print(f"[{name}] {verdict}: {detail}")
    if hint and verdict != CORRECT:
        print(f"    hint: {hint}")


def _where(exc: BaseException) -> str:
    """' (line N of your code)' for the innermost frame outside course_utils and the libraries."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_PACKAGE)
        and "site-packages" not in f.filename
        and "/lib/python" not in f.filename
    ]
    return f" (line {frames[-1].lineno} of your code)" if frames else ""


def first_match(
    actual: Any, candidates: Iterable[tuple[str, Callable[[], Any]]], **tol: float
) -> str | None:
    """The message of the first candidate wrong answer that ``actual`` reproduces."""
    for message, compute in candidates:
        try:
            if results_match(actual, compute(), **tol):
                return message
        except Exception:  # noqa: BLE001, S112 - a candidate that does not apply to this input
            continue
    return None


class _UsedReference(Wrong):
    pass


@contextmanager
def forbid(student: Any, targets: Sequence[tuple[Any, str]], message: str) -> Iterator[None]:
    """While the student's code runs, make each ``getattr(owner, name)`` raise :class:`Wrong`.

    The reference is replaced on its owner (a class or a module) and under any name the
    student's namespace binds it to, so ``block(x)``, ``BasicBlock.forward(block, x)`` and a
    directly imported function are all caught.
    """

    def trap(*args: Any, **kwargs: Any) -> Any:
        raise _UsedReference(message)

    originals = [
        (owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name))
        for owner, name in targets
    ]
    namespace = _namespace_of(student)
    aliases = [
        (key, value)
        for key, value in namespace.items()
        if any(value is original for _, _, original in originals)
    ]
    try:
        for owner, name, _ in originals:
            setattr(owner, name, trap)
        for key, _ in aliases:
            namespace[key] = trap
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
        for key, value in aliases:
            namespace[key] = value


def _namespace_of(student: Any) -> dict[str, Any]:
    """The global namespace a function or class was defined in (a notebook's, usually)."""
    if isinstance(student, type):
        for member in vars(student).values():
            if hasattr(member, "__globals__"):
                return member.__globals__
        module = sys.modules.get(student.__module__)
        return vars(module) if isinstance(module, ModuleType) else {}
    return getattr(student, "__globals__", {})


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize_batchnorm(module: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm random statistics and scales, as after training, so that a missing or
    misplaced BatchNorm changes the result; returns the module in evaluation mode."""
    generator = seeded(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                c = bn.num_features
                bn.running_mean.copy_(torch.randn(c, generator=generator))
                bn.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                bn.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                bn.bias.copy_(torch.randn(c, generator=generator))
    return module.eval()
