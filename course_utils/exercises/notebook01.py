"""Self-checks of notebook 01: the channel statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from course_utils import data as data_module
from course_utils.data import CIFAR10_MEAN, CIFAR10_STD, compute_mean_std
from course_utils.exercises.core import (
    Wrong,
    first_match,
    forbid,
    results_match,
    self_check,
)


def _probe_images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 images (n, size, size, 3) that differ a lot in brightness and in contrast, and whose
    channels differ, so that most slips give visibly different statistics."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 235, size=(n, 1, 1, 3))  # each image its own colour
    spread = rng.uniform(0, 60, size=(n, 1, 1, 1)) * (np.arange(n) % 3 != 0)[:, None, None, None]
    pixels = base + spread * rng.standard_normal((n, size, size, 3))  # every third image flat
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


class _Watched(np.ndarray):
    """The images, as an array that notes how it is read: the size of every slice taken from it,
    and any computation on all of it at once (which the streaming exercise is meant to avoid)."""

    def watch(self) -> _Watched:
        self.slices: list[int] = []
        self.whole: list[str] = []
        return self

    def __getitem__(self, key: Any) -> Any:
        part = np.asarray(super().__getitem__(key))  # a plain array: only the whole is watched
        if hasattr(self, "slices"):
            self.slices.append(len(part) if part.ndim == self.ndim else 1)
        return part

    def _noted(self, what: str) -> np.ndarray:
        if hasattr(self, "whole"):
            self.whole.append(what)
        return self.view(np.ndarray)

    def astype(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self._noted("astype").astype(*args, **kwargs)

    def reshape(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self._noted("reshape").reshape(*args, **kwargs)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [x._noted(ufunc.__name__) if isinstance(x, _Watched) else x for x in inputs]
        return getattr(ufunc, method)(*plain, **kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        views = func.__name__ in ("array_split", "split", "shape", "ndim", "size")  # no copies
        plain = [
            (x.view(np.ndarray) if views else x._noted(func.__name__))
            if isinstance(x, _Watched) else x
            for x in args
        ]  # fmt: skip
        return func(*plain, **kwargs)


def _judge_streaming(images: _Watched, batch_size: int) -> None:
    """Raise :class:`Wrong` if the answer read more than ``batch_size`` images at once."""
    unsliced = len(images) > batch_size and not images.slices  # e.g. torch.from_numpy(images)
    if images.whole or unsliced or max(images.slices, default=0) > batch_size:
        if images.whole:
            done = f"`{images.whole[0]}` on all of them"
        elif unsliced:
            done = "all at once, without a slice"
        else:
            done = f"in a slice of {max(images.slices):,} images"
        raise Wrong(
            f"your numbers are right, but your function reads the images {done}, not "
            f"`batch_size` ({batch_size:,}) at a time: on the 50,000 training images as float64 "
            f"that is 1.2 GB at once. Loop over slices images[start:start + batch_size]."
        )


def _three_numbers(value: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(
            value.cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64
        )
    except (TypeError, ValueError) as exc:
        raise Wrong(f"{what} should be three numbers (red, green, blue), got {value!r}.") from exc
    if array.shape != (3,):
        raise Wrong(
            f"{what} should be three numbers, one per channel (red, green, blue), but has "
            f"shape {array.shape}: average over the images and pixels, not the channels."
        )
    return array


def _mean_std_answer(value: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise Wrong("return two things, (mean, std), each three numbers.")
    return _three_numbers(value[0], "the mean"), _three_numbers(value[1], "the std")


def _per_batch(
    images: np.ndarray, batch_size: int, statistic: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    batches = [
        images[i : i + batch_size].astype(np.float64) / 255
        for i in range(0, len(images), batch_size)
    ]
    return np.mean([statistic(b) for b in batches], axis=0)


def _mean_std_mistakes(images: np.ndarray, batch_size: int, test_images: np.ndarray | None):
    """(message, (mean, std)) for each plausible wrong answer on ``images``."""
    mean, std = (np.array(s) for s in compute_mean_std(images))
    x = images.astype(np.float64) / 255
    candidates = [
        (
            "your numbers are on the 0-255 scale of the pixels: divide by 255.",
            lambda: (mean * 255, std * 255),
        ),
        ("your 'std' is the variance: take the square root.", lambda: (mean, std**2)),
        (
            (
                "your std is the mean of the per-image stds, the widely copied 0.2023-style "
                "number (section 4): it misses how much whole images differ in brightness. Use "
                "all pixels of all images."
            ),
            lambda: (mean, x.std(axis=(1, 2)).mean(axis=0)),
        ),
        (
            (
                "you averaged the batches' own stds (or means): that misses the differences "
                "between batches, and weighs a smaller last batch like a full one. Keep running "
                "sums of x and x**2 over all batches and combine them once at the end."
            ),
            lambda: (
                _per_batch(images, batch_size, lambda b: b.mean(axis=(0, 1, 2))),
                _per_batch(images, batch_size, lambda b: b.std(axis=(0, 1, 2))),
            ),
        ),
        (
            (
                "your std averages the batches' own stds: that misses the differences between "
                "batches. Keep running sums of x and x**2 over all batches and combine them once "
                "at the end."
            ),
            lambda: (mean, _per_batch(images, batch_size, lambda b: b.std(axis=(0, 1, 2)))),
        ),
        (
            "your channels are in the wrong order: images are stored as RGB, channel last.",
            lambda: (mean[::-1], std[::-1]),
        ),
        (
            (
                "these are the published CIFAR-10 statistics, not computed from the images your "
                "function was given."
            ),
            lambda: (np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)),
        ),
    ]
    if test_images is not None:
        from_test_set = (
            "these are the statistics of the test set: compute them from the images your "
            "function is given (the training images). The test set must not shape anything about "
            "the model."
        )
        candidates.insert(
            0, (from_test_set, lambda: tuple(np.array(s) for s in compute_mean_std(test_images)))
        )
    return candidates


def check_mean_std(
    student: Callable[..., Any],
    images: np.ndarray,
    test_images: np.ndarray | None = None,
    batch_size: int = 5_000,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Notebook 01, exercise 1: the streamed channel mean and std.

    Runs ``student(images, batch_size=...)`` first on a few small images in batches of 4 (so the
    last batch is smaller), then on ``images``, and compares with
    :func:`course_utils.data.compute_mean_std` to a relative 1e-4.

    Returns:
        ``(mean, std)`` of ``images``: the student's when correct, else the reference.
    """
    probe = _probe_images(9, 32, seed=1)

    def attempt() -> tuple[tuple[float, ...], tuple[float, ...]]:
        for data, size in ((probe, 4), (images, batch_size)):
            watched = data.view(_Watched).watch()
            with forbid(
                student,
                [(data_module, "compute_mean_std")],
                "your function calls course_utils' compute_mean_std; write the loop.",
            ):
                got = _mean_std_answer(student(watched, batch_size=size))
            expected = tuple(np.array(s) for s in compute_mean_std(data))
            if not results_match(got, expected, atol=1e-7):
                mistakes = _mean_std_mistakes(data, size, test_images)
                raise Wrong(
                    first_match(got, mistakes, atol=1e-6)
                    or (
                        f"on {len(data):,} images in batches of {size} you get mean "
                        f"{np.round(got[0], 5)}"
                        f" and std {np.round(got[1], 5)}; the right values are "
                        f"{np.round(expected[0], 5)} "
                        f"and {np.round(expected[1], 5)}."
                    )
                )
            _judge_streaming(watched, size)
        return tuple(map(float, got[0])), tuple(map(float, got[1]))

    return self_check(
        "channel mean and std",
        attempt,
        lambda: compute_mean_std(images),
        hint="In every batch add up x and x**2 per channel (float64); at the end mean = sum / n, "
        "var = E[x^2] - E[x]^2, and divide both mean and std by 255.",
        uses="your statistics",
    )


def _per_image_std_mistakes(data: np.ndarray) -> list[tuple[str, Callable[[], Any]]]:
    """(message, result) for each plausible wrong answer on ``data``."""
    x = data.astype(np.float64) / 255
    expected = x.std(axis=(1, 2)).mean(axis=0)
    return [
        (
            "your numbers are on the 0-255 scale: divide the pixels by 255.",
            lambda: expected * 255,
        ),
        (
            (
                "that is the std of the whole dataset, over all pixels of all images; the "
                "exercise asks for each image's own std, averaged over the images."
            ),
            lambda: x.std(axis=(0, 1, 2)),
        ),
        (
            (
                "you averaged the per-image *variances* and took the square root: average "
                "the per-image stds themselves."
            ),
            lambda: np.sqrt(x.var(axis=(1, 2)).mean(axis=0)),
        ),
        (
            (
                "you took each pixel's std across the images (axis 0): take each image's std "
                "over its own pixels (axes 1 and 2), then the mean over images."
            ),
            lambda: x.std(axis=0).mean(axis=(0, 1)),
        ),
        (
            "you took the mean of the images' means, not of their stds.",
            lambda: x.mean(axis=(1, 2)).mean(axis=0),
        ),
    ]


def check_mean_of_per_image_std(
    student: Callable[[np.ndarray], Any], images: np.ndarray
) -> np.ndarray:
    """Notebook 01, exercise 2: the average over images of each image's own std per channel.

    Runs ``student(images)`` on small probe images and on ``images`` (uint8, (N, H, W, 3)) and
    compares with NumPy's std per image (population std; ``n - 1`` is tolerated).

    Returns:
        Three numbers: the student's when correct, else the reference.
    """

    def reference_for(data: np.ndarray) -> np.ndarray:
        return (data.astype(np.float64) / 255).std(axis=(1, 2)).mean(axis=0)  # (N, 3) -> (3,)

    def attempt() -> np.ndarray:
        for data in (_probe_images(6, 32, seed=2), images):
            with forbid(
                student,
                [(data_module, "mean_of_per_image_std")],
                "your function calls course_utils' mean_of_per_image_std; compute it.",
            ):
                got = _three_numbers(student(data), "your result")
            expected = reference_for(data)
            if not results_match(got, expected, atol=1e-6, rtol=2e-3):
                mistakes = _per_image_std_mistakes(data)
                raise Wrong(
                    first_match(got, mistakes, atol=1e-6, rtol=2e-3)
                    or (
                        f"on {len(data):,} images you get {np.round(got, 5)}, the right values are "
                        f"{np.round(expected, 5)}."
                    )
                )
        return got

    return self_check(
        "mean of per-image stds",
        attempt,
        lambda: reference_for(images),
        hint="x.std(axis=(1, 2)) gives one std per image and channel, shape (N, 3); then "
        ".mean(axis=0). Scale the pixels to [0, 1] first.",
        uses="your numbers",
    )
