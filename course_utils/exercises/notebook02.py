"""Self-checks of notebook 02: un-normalizing, and the stratified split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from course_utils import data as data_module
from course_utils.data import CIFAR10_MEAN, CIFAR10_STD, denormalize
from course_utils.exercises.core import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Wrong,
    first_match,
    forbid,
    results_match,
    seeded,
    self_check,
)


def _denormalize_mistakes(
    x: torch.Tensor, m: Sequence[float], s: Sequence[float]
) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    """(message, result) for each plausible wrong way to undo Normalize(m, s) on ``x``."""
    m_t, s_t = torch.tensor(m).view(1, 3, 1, 1), torch.tensor(s).view(1, 3, 1, 1)
    return [
        (
            (
                "img / 2 + 0.5 undoes Normalize(0.5, 0.5) only; these images were normalized with "
                "the dataset's mean and std: x * std + mean."
            ),
            lambda: (x / 2 + 0.5).clamp(0, 1),
        ),
        (
            "img / 2 + 0.5 undoes Normalize(0.5, 0.5) only: use x * std + mean, and clamp.",
            lambda: x / 2 + 0.5,
        ),
        (
            "mean and std are swapped: multiply by the std, then add the mean.",
            lambda: (x * m_t + s_t).clamp(0, 1),
        ),
        (
            "that normalizes a second time ((x - mean) / std); undo it instead: x * std + mean.",
            lambda: ((x - m_t) / s_t).clamp(0, 1),
        ),
        (
            "those are ImageNet's statistics; use the mean and std you were given.",
            lambda: denormalize(x, IMAGENET_MEAN, IMAGENET_STD),
        ),
        (
            (
                "your function ignores its mean and std arguments (it used CIFAR-10's): use "
                "the ones it is given."
            ),
            lambda: denormalize(x),
        ),
        (
            (
                "the statistics broadcast over the image width, not the channels: reshape them "
                "to (1, 3, 1, 1) (or (3, 1, 1)) so that they line up with dimension 1."
            ),
            lambda: (x * torch.tensor(s) + torch.tensor(m)).clamp(0, 1),
        ),
        (
            "right formula, but values outside [0, 1] remain: .clamp(0, 1) for display.",
            lambda: x * s_t + m_t,
        ),
    ]


def check_denormalize(
    student: Callable[..., Any],
    normalized: torch.Tensor,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> torch.Tensor:
    """Notebook 02, exercise 1: ``x * std + mean`` per channel, clamped to [0, 1].

    Runs ``student(x, mean, std)`` on a small probe batch with other statistics (and a width of 3,
    so that statistics broadcast over the wrong axis cannot hide), then on ``normalized``.

    Returns:
        The images of ``normalized`` restored: the student's when correct, else the reference.
    """
    probe = 2.5 * torch.randn(2, 3, 4, 3, generator=seeded(3))  # (B, C, H, W); W = 3 on purpose
    probe_mean, probe_std = (0.2, 0.5, 0.7), (0.3, 0.1, 0.2)

    def attempt() -> torch.Tensor:
        for x, m, s in ((probe, probe_mean, probe_std), (normalized, mean, std)):
            expected = denormalize(x, m, s)
            with forbid(
                student,
                [(data_module, "denormalize")],
                "your function calls course_utils' denormalize; write the formula.",
            ):
                got = student(x.clone(), m, s)
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"return a tensor, got {type(got).__name__}.")
            if got.shape != expected.shape:
                raise Wrong(
                    f"your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}: "
                    "reshape the statistics to (1, 3, 1, 1), not the images."
                )
            if results_match(got, expected):
                continue
            mistakes = _denormalize_mistakes(x, m, s)
            raise Wrong(
                first_match(got, mistakes)
                or "your result differs from x * std + mean, clamped to [0, 1]."
            )
        return got

    return self_check(
        "un-normalize",
        attempt,
        lambda: denormalize(normalized, mean, std),
        hint="torch.tensor(std).view(1, 3, 1, 1) broadcasts over batch, height and width; "
        "x * std + mean, then .clamp(0, 1).",
        uses="your restored images",
    )


def _split_problem(split: Any, labels: np.ndarray, val_per_class: int) -> str | None:
    """What is wrong with a (train, val) split of ``labels``, or None."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        return "return two index arrays, (train_idx, val_idx)."
    try:
        train_idx, val_idx = (np.asarray(part).astype(np.int64, casting="safe") for part in split)
    except (TypeError, ValueError):
        return "the two parts should be arrays of integer indices."
    classes = np.unique(labels)
    n_val, n = val_per_class * len(classes), len(labels)
    if len(np.unique(val_idx)) < len(val_idx):
        return (
            "the validation part holds some images twice: draw without replacement (replace=False)."
        )
    overlap = len(np.intersect1d(train_idx, val_idx))
    if overlap:
        return (
            f"{overlap:,} images are in both parts: training must get only the images that are "
            "not held out (np.setdiff1d)."
        )
    if len(val_idx) != n_val:
        return (
            f"the validation part has {len(val_idx):,} images; expected {val_per_class} per "
            f"class, {n_val:,} in all."
        )
    missing = n - len(np.union1d(train_idx, val_idx))
    if missing or len(train_idx) != n - n_val:
        return f"{missing:,} images are in neither part: training gets every image not held out."
    counts = np.array([(labels[val_idx] == c).sum() for c in classes])
    if (counts != val_per_class).any():
        first = (
            " (it looks like the first indices, not a random draw)"
            if np.array_equal(np.sort(val_idx), np.arange(n_val))
            else ""
        )
        return (
            f"not stratified{first}: the validation part has {counts.min()} to {counts.max()} "
            f"images per class, expected exactly {val_per_class} of each. Draw per class."
        )
    return None


def check_train_val_split(
    student: Callable[..., Any],
    labels: np.ndarray,
    val_per_class: int = 500,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Notebook 02, exercise 2: a stratified, random, reproducible train/validation split.

    Calls ``student(labels, val_per_class, seed)`` on labels sorted by class (so that taking the
    first indices is caught), on ``labels``, and again with the same and with another seed.

    Returns:
        ``(train_idx, val_idx)`` of ``labels``: the student's when correct, else
        :func:`course_utils.data.train_val_split`'s.
    """
    from course_utils.data import train_val_split  # lazy: see exercises/__init__.py

    sorted_labels = np.repeat(np.arange(10), 12)  # 0,0,...,1,1,...: the first indices are one class

    def trap() -> Any:  # a fresh context manager each time
        return forbid(
            student,
            [(data_module, "train_val_split")],
            "your function calls course_utils' train_val_split; draw the split yourself.",
        )

    def attempt() -> tuple[np.ndarray, np.ndarray]:
        for data, per_class in ((sorted_labels, 3), (labels, val_per_class)):
            with trap():
                split = student(data, per_class, seed)
            problem = _split_problem(split, data, per_class)
            if problem:
                raise Wrong(problem)
        with trap():
            same = student(labels, val_per_class, seed)
        if not np.array_equal(np.sort(split[1]), np.sort(same[1])):
            raise Wrong(
                "two calls with the same seed give different splits: draw with "
                "np.random.default_rng(seed), so that the split can be repeated."
            )
        with trap():
            other = student(labels, val_per_class, seed + 1)
        if np.array_equal(np.sort(split[1]), np.sort(other[1])):
            raise Wrong(
                "another seed gives the same validation images: pick them at random with "
                "a generator made from the seed, not the first ones of each class."
            )
        return np.asarray(split[0]), np.asarray(split[1])

    return self_check(
        "stratified train/validation split",
        attempt,
        lambda: train_val_split(labels, val_size=val_per_class * len(np.unique(labels)), seed=seed),
        hint="rng = np.random.default_rng(seed); for each class c draw rng.choice("
        "np.flatnonzero(labels == c), val_per_class, replace=False); training gets the rest.",
        uses="your split",
    )
