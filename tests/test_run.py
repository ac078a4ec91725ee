"""course_utils.run: the set-up of a run, against the steps it gathers, done by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils.config import PRESETS, smoke_config
from course_utils.data import cifar10_splits
from course_utils.models import model_architecture, resnet18
from course_utils.run import config_from_preset, setup_run


def test_setup_run_gives_the_splits_statistics_loaders_and_model(cifar_root: Path):
    cfg = smoke_config(PRESETS["cpu"])
    run = setup_run(cfg, torch.device("cpu"), data_dir=cifar_root)
    by_hand = cifar10_splits(cifar_root, cfg.val_size, cfg.seed, smoke=True)
    assert np.array_equal(run.splits.train.labels, by_hand.train.labels)
    assert np.array_equal(run.splits.val.images, by_hand.val.images)
    pixels = by_hand.train.images.reshape(-1, 3).astype(np.float64) / 255  # NumPy's statistics
    assert np.allclose(run.mean, pixels.mean(0), atol=1e-6)
    assert np.allclose(run.std, pixels.std(0), atol=1e-6)
    images, labels = next(iter(run.train_loader))
    assert images.shape == (cfg.batch_size, 3, 32, 32) and labels.shape == (cfg.batch_size,)
    expected = model_architecture(resnet18(width=cfg.width, num_classes=10))
    assert model_architecture(run.model) == expected


def test_config_from_preset_applies_the_changes_on_the_preset(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    cfg, label = config_from_preset("cpu", {"lr": 0.05, "amp": False}, torch.device("cpu"))
    assert label == "cpu" and cfg.lr == 0.05 and not cfg.amp
    assert cfg.width == PRESETS["cpu"].width  # everything else is the preset's
    smoke, label = config_from_preset("cpu", {}, torch.device("cpu"), smoke=True)
    assert label == "cpu-smoke" and smoke.smoke
