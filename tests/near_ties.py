"""Comparing two evaluations of one model that ran on different code paths.

A different kernel (AVX2 or AVX-512, oneDNN or not), batch size, memory layout or precision sums
the same products in another order, so the logits differ in their last bits, or more in bfloat16.
Where the two largest scores of an image are closer than that noise, the predicted class can flip:
a near-random smoke model has many such near ties. So an accuracy measured one way may differ from
one computed another way by the near ties, and by no more: a tolerance of "one image" holds on
one machine and fails on the next.

The margins below are the gap between an image's two largest scores under which it counts as a
near tie. In float32 the scores of the course's networks differ between code paths by about 1e-5
or less; 1e-3 leaves a hundredfold margin and still counts almost no image of a trained model.
bfloat16 keeps 8 bits of mantissa (a relative error of 2**-8, about 0.4%, per rounding), so its
scores move by up to a few hundredths; 0.1 leaves a margin of several times that.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT32_MARGIN = 1e-3
BFLOAT16_MARGIN = 0.1


def near_ties(scores: torch.Tensor | np.ndarray, margin: float) -> np.ndarray:
    """Which rows of ``scores`` (N, C) have their two largest values less than ``margin`` apart."""
    top2 = torch.as_tensor(scores).double().topk(2, dim=1).values  # (N, 2)
    return (top2[:, 0] - top2[:, 1] < margin).numpy()


def assert_accuracy_agrees(
    accuracy: float,
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    margin: float = FLOAT32_MARGIN,
) -> None:
    """``accuracy``, measured on some code path, against the accuracy of the reference ``scores``
    (N, C) on ``labels``: they may differ by the near ties of ``scores``, and by no more."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    reference = float((scores.argmax(1) == labels).double().mean())
    ties = int(near_ties(scores, margin).sum())
    allowed = ties / len(labels) + 1e-6  # 1e-6: an accuracy computed as a float32 mean
    assert abs(accuracy - reference) <= allowed, (
        f"accuracy {accuracy} against {reference} computed here: more than the {ties} near ties "
        f"(top-two gap < {margin}) of {len(labels)} images can explain"
    )
