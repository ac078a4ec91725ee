"""The first cell's check for a missing GPU: a measured estimate, and silence on a GPU."""

from __future__ import annotations

import math

import torch

from course_utils import machine


def test_estimate_epoch_minutes_is_a_measurement_that_scales_with_width():
    state = torch.get_rng_state()
    narrow = machine.estimate_epoch_minutes(width=8, batch_size=16, batches=2, device="cpu")
    wide = machine.estimate_epoch_minutes(width=64, batch_size=16, batches=2, device="cpu")
    assert math.isfinite(narrow) and narrow > 0
    assert wide > narrow  # 64x the multiply-adds per image: far beyond timing noise
    assert torch.equal(state, torch.get_rng_state()), "the estimate must not touch the global RNG"


def test_warns_without_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "estimate_epoch_minutes", lambda **kwargs: 17.4)
    assert machine.warn_if_no_gpu() is True
    out = capsys.readouterr().out
    assert "No GPU found" in out and "about 17 minutes" in out and "Change runtime type" in out


def test_silent_with_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert machine.warn_if_no_gpu() is False
    assert capsys.readouterr().out == ""
