"""Self-check of notebook 07: the mean and spread of a measurement over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from course_utils.exercises.core import Wrong, self_check

#: A small case the check always tries: two seeds (where the slips differ most) and three.
SPREAD_PROBE = {"a": [0.61, 0.65], "b": [0.70, 0.71, 0.75]}


def mean_and_spread(values: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    """The reference: each configuration's mean and sample standard deviation (n - 1 in the
    denominator), from Python's ``statistics`` module."""
    return {k: (statistics.fmean(v), statistics.stdev(v)) for k, v in values.items()}


def _diagnose(got: Any, values: Mapping[str, Sequence[float]]) -> None:
    """Raise :class:`Wrong` naming the slip, unless ``got`` is the reference result."""
    expected = mean_and_spread(values)
    if not isinstance(got, dict) or set(got) != set(expected):
        raise Wrong(
            f"return a dict with one (mean, std) pair per configuration: {sorted(expected)}."
        )
    for name, (mean, std) in expected.items():
        pair = got[name]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise Wrong(f"{name!r}: give a pair (mean, std), got {pair!r}.")
        got_mean, got_std = (float(x) for x in pair)
        if not math.isclose(got_mean, mean, rel_tol=1e-6):
            raise Wrong(
                f"{name!r}: the mean of {list(values[name])} is {mean:.4f}, not {got_mean:.4f}."
            )
        if math.isclose(got_std, std, rel_tol=1e-6):
            continue
        n = len(values[name])
        if math.isclose(got_std, std * math.sqrt((n - 1) / n), rel_tol=1e-6):
            raise Wrong(
                f"{name!r}: that is the population standard deviation (divide by n, NumPy's default). "
                "A few seeds are a sample of all the seeds one could run: divide by n - 1 "
                "(np.std(x, ddof=1)); with 2 seeds the difference is a factor of 1.4."
            )
        if math.isclose(got_std, std**2, rel_tol=1e-6):
            raise Wrong(f"{name!r}: that is the variance; the spread is its square root.")
        raise Wrong(
            f"{name!r}: the standard deviation of {list(values[name])} is {std:.4f}, not {got_std:.4f}."
        )


def check_mean_and_spread(
    student: Callable[[dict[str, list[float]]], Any], values: Mapping[str, Sequence[float]]
) -> dict[str, tuple[float, float]]:
    """Notebook 07: ``student(values)`` gives each configuration's (mean, standard deviation) of
    its per-seed accuracies, checked against Python's ``statistics`` on a small case and on
    ``values`` (a measured table's accuracies).

    Returns:
        ``{configuration: (mean, std)}`` for ``values``.
    """

    def attempt() -> dict[str, tuple[float, float]]:
        for case in (SPREAD_PROBE, values):
            got = student({k: list(v) for k, v in case.items()})
            _diagnose(got, case)
        return {k: (float(m), float(s)) for k, (m, s) in got.items()}

    return self_check(
        "mean and spread",
        attempt,
        lambda: mean_and_spread(values),
        hint="np.mean(x) and np.std(x, ddof=1) for each configuration's list of accuracies.",
        uses="your means and spreads for the error bars",
    )
