"""Diagnosing a network: before training (which learning rate?) and after (can its confidence be
trusted? what does it look at?).

- :func:`lr_range_test`: Smith's learning-rate range test (2017; fast.ai's ``lr_find``);
- :func:`reliability_table`, :func:`expected_calibration_error`, :func:`fit_temperature`:
  calibration and temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
  Networks");
- :func:`grad_cam`: Grad-CAM heat maps (Selvaraju et al. 2017).

Explained in notebook 09.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from course_utils.data import batches_forever
from course_utils.training import TrainConfig, build_optimizer, placement_for

#: Equal-width confidence bins of the calibration error, as in Guo et al. (2017).
ECE_BINS = 15
#: Temperatures :func:`fit_temperature` searches between.
TEMPERATURE_RANGE = (0.05, 20.0)


# --------------------------------------------------------------------------------------------------
# The learning-rate range test
# --------------------------------------------------------------------------------------------------


@dataclass
class RangeTest:
    """What :func:`lr_range_test` measured, one entry per step.

    Attributes:
        lrs: the learning rate of each step.
        losses: the training loss of each step's batch.
        smoothed: ``losses`` smoothed (an exponential moving average, bias-corrected).
        diverged: whether the run stopped because the smoothed loss blew up.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    diverged: bool

    @property
    def lr_at_minimum(self) -> float:
        """The learning rate where the smoothed loss was lowest."""
        return float(self.lrs[np.argmin(self.smoothed)])

    @property
    def suggestion(self) -> float:
        """A peak learning rate to try: a tenth of :attr:`lr_at_minimum` (fast.ai's rule). At
        the minimum the loss already stops falling; a tenth of it is safely on the descent."""
        return self.lr_at_minimum / 10


def lr_range_test(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    device: torch.device | str,
    *,
    lr_range: tuple[float, float] = (1e-4, 10.0),
    steps: int = 300,
    beta: float = 0.95,
    blow_up: float = 4.0,
) -> RangeTest:
    """Train a copy of ``model`` for ``steps`` batches while the learning rate grows
    exponentially across ``lr_range`` (first, last); record the loss of every step.

    The optimizer, momentum, weight decay and label smoothing are ``cfg``'s, so the curve belongs
    to the recipe it will be used with. The run stops early once the smoothed loss exceeds
    ``blow_up`` times its lowest value: the learning rate has diverged. ``model`` itself is not
    changed. The loader is cycled if it has fewer than ``steps`` batches. Runs in float32 (a
    measurement, not a run to be fast).
    """
    trial = copy.deepcopy(model)
    place = placement_for(trial, device, channels_last=cfg.channels_last)  # float32: no amp
    optimizer = build_optimizer(trial, cfg)
    relative = [group["lr"] / cfg.lr for group in optimizer.param_groups]  # e.g. a backbone's
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lr_min, lr_max = lr_range
    lrs = lr_min * (lr_max / lr_min) ** (np.arange(steps) / max(steps - 1, 1))
    losses, smoothed, average, diverged = [], [], 0.0, False
    trial.train()
    for step, (images, labels) in zip(range(steps), batches_forever(loader)):
        for group, factor in zip(optimizer.param_groups, relative):
            group["lr"] = lrs[step] * factor
        images = images.to(place.device, memory_format=place.memory_format)
        loss = criterion(trial(images), labels.to(place.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # one number per step: this is a measurement, not a run
        average = beta * average + (1 - beta) * losses[-1]
        smoothed.append(average / (1 - beta ** (step + 1)))  # bias-corrected, as in Adam
        if not math.isfinite(smoothed[-1]) or smoothed[-1] > blow_up * min(smoothed):
            diverged = True
            break
    n = len(losses)
    return RangeTest(lrs[:n], np.array(losses), np.array(smoothed), diverged)


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------


def reliability_table(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Predictions grouped by confidence into ``bins`` equal-width bins ``((m-1)/M, m/M]``.

    The confidence of a prediction is the softmax probability of the predicted class. Columns:
    ``lower``, ``upper`` (the bin's edges), ``count``, ``confidence`` (mean confidence in the bin)
    and ``accuracy`` (fraction correct in the bin); an empty bin has NaN in the last two. A
    calibrated model has accuracy equal to confidence in every bin.
    """
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == np.asarray(labels)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (lo, hi]
    rows = []
    for m in range(bins):
        inside = which == m
        rows.append({
            "lower": m / bins,
            "upper": (m + 1) / bins,
            "count": int(inside.sum()),
            "confidence": float(confidence[inside].mean()) if inside.any() else math.nan,
            "accuracy": float(correct[inside].mean()) if inside.any() else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def expected_calibration_error(
    logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the gap between accuracy and confidence in each bin of :func:`reliability_table`,
    averaged with the bins' shares of the predictions as weights. In [0, 1]; 0 is calibrated."""
    table = reliability_table(logits, labels, bins).dropna()
    gaps = (table["accuracy"] - table["confidence"]).abs()
    return float((table["count"] * gaps).sum() / table["count"].sum())


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against the true classes."""
    scaled = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(scaled, torch.as_tensor(labels, dtype=torch.int64)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` for which ``softmax(logits / T)`` has the lowest negative
    log-likelihood on these (validation) images: a 1-D search over ``log T`` in
    :data:`TEMPERATURE_RANGE`. ``T > 1`` softens an overconfident model; predictions (the
    argmax) do not change, so accuracy does not either."""
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=(low, high), method="bounded", options={"xatol": 1e-5},
    )  # fmt: skip
    return math.exp(found.x)


# --------------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------------


def activations_and_gradients(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``layer``'s output ``A`` ``(B, C, h, w)`` for ``images``, and the gradient of each image's
    class score with respect to it, same shape (``classes``: default, the predicted ones).

    The model runs in evaluation mode; a forward hook catches ``A``, and ``torch.autograd.grad``
    differentiates only with respect to it, so no weight's ``.grad`` is touched.
    """
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(images)  # (B, num_classes)
            chosen = logits.argmax(1) if classes is None else torch.as_tensor(classes)
            score = logits.gather(1, chosen.view(-1, 1).to(logits.device)).sum()  # images apart
            (gradients,) = torch.autograd.grad(score, captured[0])
    finally:
        hook.remove()
    return captured[0].detach(), gradients


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grad-CAM maps ``(B, h, w)`` at the resolution of ``layer``'s output.

    For each image, the score of class ``c`` (``classes``, default: the predicted one) is
    differentiated with respect to the layer's feature maps ``A`` ``(C, h, w)``. Each channel's
    weight is its gradient averaged over the positions, ``alpha_k = mean_ij dS/dA_kij``, and the
    map is ``ReLU(sum_k alpha_k A_k)``: where features that raise the class's score are active.
    """
    activations, gradients = activations_and_gradients(model, images, layer, classes)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return F.relu((weights * activations).sum(dim=1))  # (B, h, w)


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Maps ``(B, h, w)`` resized to ``(B, size, size)`` (bilinear) and scaled to [0, 1] each
    (a map that is zero everywhere stays zero)."""
    big = F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear",
                        align_corners=False)[:, 0]  # fmt: skip
    peak = big.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return big / peak[:, None, None]
