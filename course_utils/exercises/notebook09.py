"""Self-checks of notebook 09: the calibration error, the temperature, a Grad-CAM map."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from course_utils.exercises.core import Wrong, forbid, seeded, self_check


def _ece(confidences: np.ndarray, correct: np.ndarray, n_bins: int, weighted: bool = True) -> float:
    """The reference ECE (and, unweighted, a wrong variant), bins ``((m-1)/M, m/M]``."""
    which = np.clip(np.ceil(confidences * n_bins).astype(int) - 1, 0, n_bins - 1)
    gaps, weights = [], []
    for m in range(n_bins):
        inside = which == m
        if inside.any():
            gap = correct[inside].mean() - confidences[inside].mean()
            gaps.append(abs(gap))
            weights.append(inside.mean() if weighted else 1.0)
    return float(np.dot(gaps, weights) / (1.0 if weighted else len(gaps)))


#: Small cases for the ECE exercise: a prediction of confidence exactly 1.0 (float32 softmax
#: gives it), bins that are empty, and bins whose gaps have opposite signs.
ECE_PROBES = [
    (np.array([0.12, 0.18, 0.35, 0.38, 0.62, 0.66, 0.67, 0.93, 0.97, 1.0]),
     np.array([0, 1, 1, 1, 1, 0, 1, 1, 1, 0], dtype=bool), 10),
    (np.array([0.55, 0.58, 0.71, 0.74, 0.76, 0.99, 1.0, 1.0]),
     np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool), 5),
]  # fmt: skip


def _diagnose_ece(got: float, conf: np.ndarray, right: np.ndarray, bins: int) -> None:
    """Raise :class:`Wrong`, naming the mistake, unless ``got`` is the ECE of the case."""
    expected = _ece(conf, right, bins)
    if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
        return
    if math.isnan(got):
        raise Wrong("your ECE is NaN: an empty bin has no mean; skip empty bins (weight 0).")
    kept = conf < 1.0
    without_ones = _ece(conf[kept], right[kept], bins)
    if any(math.isclose(got, v, rel_tol=1e-6) for v in (without_ones, without_ones * kept.mean())):
        raise Wrong(
            "a confidence of exactly 1.0 is left out: the bins are (lower, upper], so 1.0 "
            "belongs to the last one (np.digitize on [lower, upper) bins drops it)."
        )
    if math.isclose(got, _ece(conf, right, bins, weighted=False), rel_tol=1e-6):
        raise Wrong(
            "every bin counts the same: weight each bin's gap by its share of the images "
            "(count / total)."
        )
    if math.isclose(abs(got), abs(right.mean() - conf.mean()), rel_tol=1e-6):
        raise Wrong(
            "that is |accuracy - mean confidence| over all images at once (the same as adding "
            "the bins' gaps with their signs): over- and underconfident bins cancel. Compare "
            "within each bin, and add the absolute gaps."
        )
    raise Wrong(
        f"for confidences {np.round(conf, 2).tolist()} (correct: {right.astype(int).tolist()}) "
        f"and {bins} bins you get {got:.4f}, expected {expected:.4f}."
    )


def check_ece(
    student: Callable[[np.ndarray, np.ndarray, int], Any],
    confidences: np.ndarray,
    correct: np.ndarray,
    n_bins: int = 15,
) -> float:
    """Notebook 09, exercise 1: ``student(confidences, correct, n_bins)`` is the expected
    calibration error with ``n_bins`` equal-width bins.

    Checked on :data:`ECE_PROBES` and on the model's own predictions (``confidences``: the top
    softmax probability of each image, ``correct``: whether the prediction was right), against
    the reference; ``diagnostics.expected_calibration_error`` is disabled while it runs.

    Returns:
        The ECE of ``confidences`` and ``correct``.
    """
    from course_utils import diagnostics  # lazy: see exercises/__init__.py

    def attempt() -> float:
        for conf, right, bins in (*ECE_PROBES, (confidences, correct, n_bins)):
            with forbid(
                student,
                [(diagnostics, "expected_calibration_error"), (diagnostics, "reliability_table")],
                "your function calls course_utils' ECE; bin the predictions yourself.",
            ):
                got = float(student(conf.copy(), right.copy(), bins))
            _diagnose_ece(got, conf, right, bins)
        return got

    return self_check(
        "expected calibration error",
        attempt,
        lambda: _ece(confidences, correct, n_bins),
        hint="bin m holds the confidences in ((m-1)/M, m/M]; ECE = sum over non-empty bins of "
        "(count / total) * |accuracy in the bin - mean confidence in the bin|.",
        uses="your ECE",
    )


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits / temperature, labels))


def _best_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Brute force: the best of 4,001 temperatures spaced evenly in log T from 0.05 to 20, then
    refined once around it."""
    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 4001))
    best = min(grid, key=lambda t: _nll(logits, labels, t))
    fine = best * np.exp(np.linspace(-0.002, 0.002, 401))
    return float(min(fine, key=lambda t: _nll(logits, labels, t)))


def _temperature_probes() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An overconfident and an underconfident set of logits: labels drawn from softmax(z), the
    logits z scaled by 3 and by 0.4 (best temperatures near 3 and 0.4)."""
    generator = seeded(9)
    z = torch.randn(2000, 10, generator=generator, dtype=torch.float64) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=generator).squeeze(1)
    return [(3.0 * z, labels), (0.4 * z, labels)]


def check_temperature(
    student: Callable[[torch.Tensor, torch.Tensor], Any],
    logits: torch.Tensor,
    labels: torch.Tensor,
) -> float:
    """Notebook 09, exercise 2: ``student(logits, labels)`` returns the temperature ``T`` that
    minimizes the negative log-likelihood of ``softmax(logits / T)``.

    Checked on an overconfident and an underconfident synthetic case and on ``logits`` (the
    validation split's), against a brute-force search: the answer must be within 1% of the best
    temperature. ``diagnostics.fit_temperature`` is disabled while it runs.

    Returns:
        The temperature for ``logits``.
    """
    from course_utils import diagnostics  # lazy: see exercises/__init__.py

    logits, labels = logits.double(), labels.long()

    def attempt() -> float:
        for z, y in (*_temperature_probes(), (logits, labels)):
            best = _best_temperature(z, y)
            with forbid(
                student,
                [(diagnostics, "fit_temperature")],
                "your function calls course_utils' fit_temperature; search for T yourself.",
            ):
                got = float(student(z.clone(), y.clone()))
            if not got > 0:
                raise Wrong(f"a temperature must be positive, got {got}.")
            if abs(math.log(got / best)) <= 0.01:
                continue
            if abs(math.log(got * best)) <= 0.01:
                raise Wrong(
                    f"you return {got:.3f}, the inverse of the best temperature {best:.3f}: the "
                    "logits are divided by T, not multiplied."
                )
            raise Wrong(
                f"your temperature {got:.3f} gives a negative log-likelihood of "
                f"{_nll(z, y, got):.4f}; the best, T = {best:.3f}, gives {_nll(z, y, best):.4f}. "
                "Minimize the cross-entropy of logits / T over T (a fine 1-D search will do: "
                "accuracy does not change with T, so it cannot guide the search)."
            )
        return got

    return self_check(
        "temperature scaling",
        attempt,
        lambda: _best_temperature(logits, labels),
        hint="try many T (evenly spaced in log T, e.g. np.exp(np.linspace(np.log(0.05), "
        "np.log(20), 2000))) and keep the one with the lowest F.cross_entropy(logits / T, labels).",
        uses="your temperature",
    )


def _cam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    weights = gradients.mean(dim=(1, 2))  # (C,): each channel's gradient, averaged over positions
    return torch.relu((weights[:, None, None] * activations).sum(0))  # (h, w)


def _cam_probes() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two random cases with negative values in the map before the ReLU, the second not square."""
    generator = seeded(27)
    shapes = [(6, 4, 4), (5, 3, 7)]
    return [(torch.relu(torch.randn(s, generator=generator)), torch.randn(s, generator=generator))
            for s in shapes]  # fmt: skip


def check_grad_cam_map(
    student: Callable[[torch.Tensor, torch.Tensor], Any],
    activations: torch.Tensor,
    gradients: torch.Tensor,
) -> torch.Tensor:
    """Notebook 09, exercise 3: ``student(activations, gradients)``, both ``(C, h, w)`` (one
    image's feature maps and the class score's gradient with respect to them), returns the
    ``(h, w)`` Grad-CAM map ``ReLU(sum_k alpha_k A_k)``, ``alpha_k`` the mean of channel ``k``'s
    gradient over the positions. Not scaled to [0, 1]: the notebook's plot does that.

    Returns:
        The map for ``activations`` and ``gradients``.
    """

    def attempt() -> torch.Tensor:
        for a, g in (*_cam_probes(), (activations, gradients)):
            expected = _cam(a, g)
            got = torch.as_tensor(student(a.clone(), g.clone())).double()
            if got.shape != expected.shape:
                raise Wrong(
                    f"for feature maps of shape {tuple(a.shape)} your map has shape "
                    f"{tuple(got.shape)}, expected {tuple(expected.shape)}: one value per "
                    "position, the channels summed."
                )
            if torch.allclose(got, expected.double(), rtol=1e-4, atol=1e-6):
                continue
            raw = (g.mean(dim=(1, 2))[:, None, None] * a).sum(0).double()
            h, w = a.shape[1:]
            if (got < 0).any() and torch.allclose(got, raw, rtol=1e-4, atol=1e-6):
                raise Wrong(
                    "your map has negative values: Grad-CAM keeps only the positive evidence "
                    "for the class, ReLU(sum_k alpha_k A_k)."
                )
            if torch.allclose(got, expected.double() * h * w, rtol=1e-4, atol=1e-6):
                raise Wrong(
                    "the weights are summed over the positions: alpha_k is the *mean* of the "
                    f"gradient over them (your map is {h * w} = h x w times too large)."
                )
            if torch.allclose(got, torch.relu((g * a).sum(0)).double(), rtol=1e-4, atol=1e-6):
                raise Wrong(
                    "each position uses its own gradient: Grad-CAM first averages each "
                    "channel's gradient over all positions into one weight alpha_k."
                )
            peak = expected.max()
            if peak > 0 and torch.allclose(got, expected.double() / peak, rtol=1e-4, atol=1e-6):
                raise Wrong("your map is scaled to [0, 1]: return it unscaled, the plot scales it.")
            raise Wrong("your map differs from ReLU(sum_k alpha_k A_k).")
        return got

    return self_check(
        "Grad-CAM map",
        attempt,
        lambda: _cam(activations, gradients),
        hint="alpha = gradients.mean(dim=(1, 2)) gives one weight per channel; the map is "
        "torch.relu((alpha[:, None, None] * activations).sum(0)).",
        uses="your map",
    )
