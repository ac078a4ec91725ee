"""course_utils.diagnostics: the range test, calibration and Grad-CAM, against answers worked out
by hand or by brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import diagnostics as D
from course_utils.training import PRESETS


def _logits_with_confidence(confidences):
    """Two-class logits whose softmax gives each confidence to class 0: [log c, log(1 - c)]."""
    c = np.asarray(confidences, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.stack([np.log(c), np.where(c < 1, np.log1p(-c), -50.0)], axis=1)


def test_ece_matches_a_hand_computed_example():
    # Ten bins of width 0.1. Confidences and whether class 0 (the prediction) is right:
    #   0.55 right, 0.58 wrong        -> bin (0.5, 0.6]: accuracy 0.5, confidence 0.565, gap 0.065
    #   0.72 right                    -> bin (0.7, 0.8]: accuracy 1.0, confidence 0.72,  gap 0.28
    #   0.9 right, 0.9 right, 0.9 wrong, and 1.0 right
    #     -> 0.9 is in (0.8, 0.9]: accuracy 2/3, confidence 0.9, gap 0.2333...
    #     -> 1.0 is in (0.9, 1.0]: accuracy 1, confidence 1, gap 0
    # ECE = (2 * 0.065 + 1 * 0.28 + 3 * 0.23333 + 1 * 0) / 7 = 1.11 / 7
    confidences = [0.55, 0.58, 0.72, 0.9, 0.9, 0.9, 1.0]
    right = [1, 0, 1, 1, 1, 0, 1]
    labels = np.where(right, 0, 1)
    logits = _logits_with_confidence(confidences)
    assert D.expected_calibration_error(logits, labels, bins=10) == pytest.approx(1.11 / 7)
    table = D.reliability_table(logits, labels, bins=10)
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 1, 3, 1]
    assert table.loc[8, "accuracy"] == pytest.approx(2 / 3)
    assert table.loc[5, "confidence"] == pytest.approx(0.565)
    assert table[table["count"] == 0][["confidence", "accuracy"]].isna().all().all()


def test_a_calibrated_model_has_small_ece():
    # Labels drawn from the model's own probabilities: calibrated by construction.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 10)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probs])
    assert D.expected_calibration_error(logits, labels) < 0.02
    assert D.expected_calibration_error(3 * logits, labels) > 0.1  # overconfident


def test_fit_temperature_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3000, 10)) * 1.5
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probs])
    for scale in (3.0, 0.5):
        logits = scale * z
        grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20_001))
        nll = [D.negative_log_likelihood(logits, labels, t) for t in grid[::10]]
        coarse = grid[::10][int(np.argmin(nll))]
        fine = grid[(grid > coarse / 1.01) & (grid < coarse * 1.01)]
        best = fine[int(np.argmin([D.negative_log_likelihood(logits, labels, t) for t in fine]))]
        fitted = D.fit_temperature(logits, labels)
        assert fitted == pytest.approx(best, rel=2e-3)
        assert fitted == pytest.approx(scale, rel=0.1)  # the labels came from softmax(z)
        assert D.negative_log_likelihood(logits, labels, fitted) <= (
            D.negative_log_likelihood(logits, labels, best) + 1e-9
        )
        # temperature scaling never changes a prediction
        assert (np.argmax(logits / fitted, 1) == np.argmax(logits, 1)).all()


class _TinyCam(nn.Module):
    """x (1 channel) -> 1x1 conv to 2 channels [x, -x] -> global average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1, bias=False)
        self.head = nn.Linear(2, 2, bias=True)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[0.5, 0.25], [0.25, 0.5]]))
            self.head.bias.copy_(torch.tensor([0.3, -0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_matches_a_hand_computed_network():
    # Score_c = sum_k W_ck mean_ij A_kij + b_c, so dScore_c / dA_kij = W_ck / (h w) and
    # alpha_k = W_ck / 4 on a 2x2 map. With A_0 = x, A_1 = -x:
    #   class 0: alpha = (0.125, 0.0625): ReLU(0.125 x - 0.0625 x) = 0.0625 x
    #   class 1: alpha = (0.0625, 0.125): ReLU(-0.0625 x) = 0 for positive x
    model = _TinyCam()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    cam0 = D.grad_cam(model, x, model.features, classes=torch.tensor([0]))
    assert torch.allclose(cam0, 0.0625 * x[:, 0])
    cam1 = D.grad_cam(model, x, model.features, classes=torch.tensor([1]))
    assert torch.equal(cam1, torch.zeros(1, 2, 2))
    default = D.grad_cam(model, x, model.features)  # the predicted class: 0 (its bias is higher)
    assert torch.allclose(default, cam0)
    assert not model.features.weight.requires_grad or model.features.weight.grad is None
    assert model.features._forward_hooks == {}  # the hook is removed


def test_upsample_maps_scales_each_map_to_one_and_keeps_zeros():
    maps = torch.stack([torch.arange(16.0).view(4, 4), torch.zeros(4, 4)])
    big = D.upsample_maps(maps, 32)
    assert big.shape == (2, 32, 32)
    assert big[0].max() == pytest.approx(1.0)
    assert big[0].min() >= 0
    assert torch.equal(big[1], torch.zeros(32, 32))


def _tiny_setup(n=64):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))  # fmt: skip
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, n, 16)]
    return model, batches


def test_range_test_grows_the_lr_geometrically_and_leaves_the_model_alone():
    model, batches = _tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = D.lr_range_test(model, batches, PRESETS["cpu"], "cpu", lr_range=(1e-3, 1e-1),
                             steps=20, blow_up=1e9)  # fmt: skip
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 20  # loader cycled
    assert result.lrs[0] == pytest.approx(1e-3) and result.lrs[-1] == pytest.approx(1e-1)
    ratios = result.lrs[1:] / result.lrs[:-1]
    assert np.allclose(ratios, ratios[0])
    # the first smoothed value is the first loss (bias correction), the rest an average
    assert result.smoothed[0] == pytest.approx(result.losses[0])
    assert result.suggestion == pytest.approx(result.lr_at_minimum / 10)
    assert not result.diverged
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_range_test_stops_when_the_loss_diverges():
    model, batches = _tiny_setup()
    result = D.lr_range_test(model, batches, PRESETS["cpu"], "cpu", lr_range=(1e-2, 1e8),
                             steps=200)  # fmt: skip
    assert result.diverged
    assert len(result.lrs) < 200
    assert not math.isfinite(result.smoothed[-1]) or result.smoothed[-1] > 4 * min(result.smoothed)
