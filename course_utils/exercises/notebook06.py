"""Self-checks of notebook 06: the confusion matrix, and precision / recall / F1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from course_utils.exercises.core import (
    Wrong,
    forbid,
    self_check,
)

#: (y_true, y_pred, num_classes) with repeated pairs and a class that never occurs.
CONFUSION_PROBE = (np.array([0, 0, 1, 2, 2, 2, 1, 0, 0]), np.array([0, 1, 1, 2, 0, 2, 1, 0, 0]), 4)
#: Confusion matrices whose precision, recall or F1 divide by zero somewhere.
PRF_PROBES = (
    np.array([[5, 1, 0, 1], [2, 3, 0, 0], [1, 0, 0, 0], [0, 1, 0, 2]]),  # 2: never predicted
    np.array([[3, 0, 1], [0, 0, 0], [1, 0, 2]]),  # class 1 has no images
)


def _reference_confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's confusion matrix, rows the true class and columns the predicted one."""
    from sklearn import metrics  # lazy: see exercises/__init__.py

    return metrics.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def _judge_confusion(
    got: Any, expected: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray
) -> None:
    """Raise :class:`Wrong`, naming the mistake, unless ``got`` is the matrix ``expected``."""
    if not isinstance(got, np.ndarray):
        raise Wrong(f"return a NumPy array, got {type(got).__name__}.")
    if got.shape != expected.shape:
        raise Wrong(
            f"your matrix has shape {got.shape}, expected {expected.shape}: make it "
            "num_classes x num_classes, even when a class never occurs."
        )
    if (got == expected).all():
        if not np.issubdtype(got.dtype, np.integer):
            raise Wrong(
                f"right counts, but stored as {got.dtype}: counts are whole numbers, "
                "make the matrix with dtype=int (or .astype(int))."
            )
        return
    once = np.zeros_like(expected)
    once[y_true, y_pred] = 1
    if (got == expected.T).all():
        raise Wrong(
            "your matrix is transposed: the row is the true class, the column the "
            "predicted one."
        )
    if (got == once).all():
        raise Wrong(
            "each (true, predicted) pair is counted once however often it occurs: "
            "cm[t, p] += 1 with index arrays does not add up repeats; loop over the "
            "images, or use np.add.at(cm, (y_true, y_pred), 1)."
        )
    raise Wrong("your counts differ from scikit-learn's confusion_matrix.")


def check_confusion_matrix(
    student: Callable[..., Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """Notebook 06, exercise 1: ``student(y_true, y_pred, num_classes)`` counts the pairs.

    Checked against scikit-learn on a small case (with repeated pairs and a class that never
    occurs) and on the real predictions; scikit-learn's and ``course_utils``' confusion matrices are
    disabled while the student's function runs.

    Returns:
        The ``(num_classes, num_classes)`` matrix of counts.
    """
    from sklearn import metrics  # lazy: see exercises/__init__.py

    from course_utils import evaluation  # lazy: see exercises/__init__.py

    def attempt() -> np.ndarray:
        for t, p, k in (CONFUSION_PROBE, (y_true, y_pred, num_classes)):
            expected = _reference_confusion(t, p, k)
            with forbid(
                student,
                [(metrics, "confusion_matrix"), (evaluation, "confusion_matrix")],
                "your function calls a library's confusion_matrix; count the pairs yourself.",
            ):
                got = student(t.copy(), p.copy(), k)
            _judge_confusion(got, expected, t, p)
        return got

    return self_check(
        "confusion matrix",
        attempt,
        lambda: _reference_confusion(y_true, y_pred, num_classes),
        hint="cm = np.zeros((num_classes, num_classes), dtype=int); for every image add 1 at "
        "[true class, predicted class].",
        uses="your matrix",
    )


def _reference_prf(matrix: np.ndarray) -> np.ndarray:
    """Precision, recall and F1 of every class, ``(C, 3)``, by scikit-learn (``zero_division=0``)
    on the labels that ``matrix`` counts."""
    from sklearn import metrics  # lazy: see exercises/__init__.py

    k = len(matrix)
    true, pred = (np.repeat(idx.ravel(), matrix.ravel()) for idx in np.indices(matrix.shape))
    p, r, f, _ = metrics.precision_recall_fscore_support(
        true, pred, labels=list(range(k)), zero_division=0
    )
    return np.stack([p, r, f], axis=1)  # (C, 3)


def _judge_prf(got: np.ndarray, expected: np.ndarray, matrix: np.ndarray) -> None:
    """Raise :class:`Wrong`, naming the mistake, unless ``got`` is ``expected``, the precision,
    recall and F1 of ``matrix``."""
    if got.shape == expected.T.shape and got.shape != expected.shape:
        raise Wrong(f"your array has shape {got.shape}: one row per class, (C, 3).")
    if got.shape != expected.shape:
        raise Wrong(
            f"for a {len(matrix)} x {len(matrix)} matrix your array has shape "
            f"{got.shape}, expected {expected.shape}: compute from the matrix the "
            "function is given, one row per class."
        )
    if np.allclose(got, expected):
        return
    if np.isnan(got).any():
        raise Wrong(
            "your result has NaN where a denominator is 0 (a class never predicted, "
            "or with no images): use 0 there, as zero_division=0 does."
        )
    p, r = expected[:, 0], expected[:, 1]
    if np.allclose(got[:, :2], expected[:, [1, 0]]):
        raise Wrong(
            "precision and recall are swapped: precision divides by the column sums "
            "(predictions), recall by the row sums (true images)."
        )
    arithmetic = np.where(p + r > 0, (p + r) / 2, 0)
    if np.allclose(got[:, 2], arithmetic):
        raise Wrong("F1 is the harmonic mean 2PR / (P + R), not the average (P + R) / 2.")
    raise Wrong(
        f"on the matrix {matrix.tolist()} you get {np.round(got, 3).tolist()}, "
        f"expected {np.round(expected, 3).tolist()}."
    )


def check_precision_recall_f1(student: Callable[[np.ndarray], Any], cm: np.ndarray) -> np.ndarray:
    """Notebook 06, exercise 2: ``student(cm)`` gives a ``(C, 3)`` array of precision, recall, F1.

    Checked against scikit-learn (``zero_division=0``) on two small matrices, one with a class that
    is never predicted and one with a class that has no images, and on ``cm``.

    Returns:
        The ``(C, 3)`` array for ``cm``.
    """

    def attempt() -> np.ndarray:
        for matrix in (*PRF_PROBES, cm):
            expected = _reference_prf(matrix)
            got = np.asarray(student(matrix.copy()), dtype=np.float64)
            _judge_prf(got, expected, matrix)
        return got

    return self_check(
        "precision, recall and F1 from the matrix",
        attempt,
        lambda: _reference_prf(cm),
        hint="precision = diagonal / column sums, recall = diagonal / row sums, "
        "F1 = 2PR / (P + R); where a denominator is 0, the result is 0.",
        uses="your numbers",
    )
