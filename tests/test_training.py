"""Tests of course_utils.training: early stopping, schedules, the loop, checkpoints, fit, resume."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from near_ties import BFLOAT16_MARGIN, FLOAT32_MARGIN, assert_accuracy_agrees
from sklearn.metrics import accuracy_score, log_loss
from torch import nn

from course_utils.checkpoints import (
    ArchitectureMismatchError,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from course_utils.config import SCHEDULES, set_seed
from course_utils.data import (
    CIFAR10Dataset,
    TensorLoader,
    cifar10_splits,
    eval_transform,
    make_loader,
    train_transform,
)
from course_utils.models import model_architecture, resnet18, resnet34
from course_utils.training import (
    HISTORY_COLUMNS,
    PER_BATCH_SCHEDULES,
    PER_EPOCH_SCHEDULES,
    PRESETS,
    TIMING_COLUMNS,
    ConfigError,
    EarlyStopping,
    NonFiniteLossError,
    Placement,
    StepExtras,
    TrainConfig,
    _warn_if_slowed_down,
    build_ema,
    build_model,
    build_optimizer,
    build_scheduler,
    choose_threads,
    evaluate,
    fit,
    learning_rates,
    model_from_checkpoint,
    pick_threads,
    placement_for,
    smoke_config,
    thread_candidates,
    train_one_epoch,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# Early stopping, on scripted metric sequences worked out by hand
# --------------------------------------------------------------------------------------------------


def run_stopper(stopper: EarlyStopping, values: list[float]) -> tuple[list[bool], int | None]:
    """Feed values until the stopper says stop; returns the improved flags and the stop step."""
    improved = []
    for step, value in enumerate(values, start=1):
        improved.append(stopper.step(value))
        if stopper.should_stop:
            return improved, step
    return improved, None


def test_early_stopping_max_mode_patience():
    stopper = EarlyStopping(patience=2, mode="max")
    improved, stop = run_stopper(stopper, [0.5, 0.6, 0.6, 0.55, 0.9])
    assert improved == [True, True, False, False]  # an equal value is no improvement
    assert stop == 4
    assert stopper.best == 0.6 and stopper.best_epoch == 2


def test_early_stopping_improvement_resets_the_count():
    stopper = EarlyStopping(patience=2, mode="max")
    improved, stop = run_stopper(stopper, [0.5, 0.4, 0.75, 0.7, 0.6, 0.9])
    assert improved == [True, False, True, False, False]
    assert stop == 5 and stopper.best == 0.75 and stopper.best_epoch == 3


def test_early_stopping_min_delta_and_min_mode():
    # Binary fractions, so that best - min_delta is exact.
    stopper = EarlyStopping(patience=3, min_delta=0.25, mode="min")
    improved, stop = run_stopper(stopper, [2.0, 1.875, 1.75, 1.8, 1.0])
    # 2.0 first; 1.875 and 1.8 do not beat 2.0 - 0.25 = 1.75, and 1.75 only equals it; 1.0 comes
    # after the stop.
    assert improved == [True, False, False, False]
    assert stop == 4
    stopper = EarlyStopping(patience=3, min_delta=0.25, mode="min")
    improved, stop = run_stopper(stopper, [2.0, 1.875, 1.5, 1.25, 1.125, 1.0, 0.75])
    # 1.5 beats 1.75; 1.25 only equals 1.5 - 0.25; 1.125 beats it; 1.0 is not below 0.875; 0.75 is.
    assert improved == [True, False, True, False, True, False, True]
    assert stop is None and stopper.best == 0.75 and stopper.best_epoch == 7


def test_early_stopping_never_stops_without_patience_and_nan_never_improves():
    stopper = EarlyStopping(patience=None, mode="max")
    improved, stop = run_stopper(stopper, [0.5] + [0.1] * 50 + [float("nan")])
    assert stop is None and improved[0] and not any(improved[1:])
    assert stopper.best == 0.5 and stopper.best_epoch == 1 and stopper.wait == 51


def test_early_stopping_state_round_trip_continues_identically():
    values = [0.3, 0.5, 0.45, 0.5, 0.625, 0.6, 0.55, 0.5]
    whole = EarlyStopping(patience=3, min_delta=0.01, mode="max")
    expected = run_stopper(whole, values)

    first = EarlyStopping(patience=3, min_delta=0.01, mode="max")
    flags = [first.step(v) for v in values[:4]]
    second = EarlyStopping()
    second.load_state_dict(first.state_dict())
    flags2, stop = run_stopper(second, values[4:])
    assert flags + flags2 == expected[0]
    assert stop + 4 == expected[1]
    assert (second.best, second.best_epoch) == (whole.best, whole.best_epoch)


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="maximum")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


# --------------------------------------------------------------------------------------------------
# Configuration, optimizer and schedules
# --------------------------------------------------------------------------------------------------


def test_config_round_trip_and_validation():
    cfg = TrainConfig(schedule="multistep", milestones=(3, 6), width=8)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert isinstance(cfg.to_dict()["milestones"], list)  # plain values only
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="exponential")
    for preset in PRESETS.values():
        assert TrainConfig.from_dict(preset.to_dict()) == preset
    assert smoke_config(PRESETS["cpu"]).smoke and not PRESETS["cpu"].smoke
    with pytest.raises(ValueError, match="at most the 45000 training images"):
        TrainConfig(train_size=45_010)
    with pytest.raises(ValueError, match="at most the 1000 training images there are in smoke"):
        TrainConfig(train_size=2_000, smoke=True)
    assert TrainConfig(train_size=1_000, smoke=True).train_size == 1_000


def test_build_optimizer_settings():
    model = nn.Linear(4, 2)
    sgd = build_optimizer(
        model, TrainConfig(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    )
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.05,
        0.9,
        True,
        1e-4,
    )
    adam = build_optimizer(model, TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam)


def test_batchnorm_shifts_get_their_own_rate_and_the_same_decay_per_step():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    cfg = TrainConfig(lr=0.1, weight_decay=5e-4, bn_bias_lr=64.0, freeze_bn_scale=True)
    optimizer = build_optimizer(model, cfg)
    slow, fast = optimizer.param_groups
    assert {id(p) for p in fast["params"]} == {id(model[1].bias)}
    assert {id(p) for p in slow["params"]} == {id(p) for p in model.parameters()} - {id(model[1].bias)}
    assert fast["lr"] == pytest.approx(6.4) and fast["lr"] * fast["weight_decay"] == pytest.approx(
        slow["lr"] * slow["weight_decay"]
    )  # the decay per step, lr x weight decay, is unchanged
    net = build_model(dataclasses.replace(cfg, width=8))
    scales = [m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert scales and not any(w.requires_grad for w in scales)  # frozen at 1
    assert all(m.bias.requires_grad for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_no_decay_on_norms_leaves_only_weight_matrices_and_kernels_decayed():
    """--no-decay-norms: every BatchNorm scale and shift and every bias in a group without weight
    decay, every convolution and linear weight decayed as before; SGD then leaves an undecayed
    parameter with no gradient where it is, and shrinks a decayed one by lr x weight decay."""
    model = build_model(TrainConfig(width=8))
    cfg = TrainConfig(lr=0.1, weight_decay=5e-4, momentum=0.0, decay_norms=False)
    optimizer = build_optimizer(model, cfg)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay) == len(list(model.parameters()))  # each parameter in exactly one group
    for name, p in model.named_parameters():
        kind = "weight" if name.endswith("weight") and p.ndim > 1 else "vector"
        assert decay[id(p)] == (5e-4 if kind == "weight" else 0.0), name
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    # One SGD step with zero gradients: only the decayed parameters move, by lr x decay x value.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * decay[id(p)])
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    with_decay = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=5e-4))
    assert [g["weight_decay"] for g in with_decay.param_groups] == [5e-4]  # the default: one group


def lrs_over_epochs(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The lr at the start of every epoch, stepping the schedule the way fit() does."""
    return list(learning_rates(cfg, steps_per_epoch)[::steps_per_epoch])


def test_a_per_epoch_schedule_stepped_every_batch_runs_ahead():
    """The classic bug, which notebook 05 plots: StepLR(step_size=3) stepped after each batch
    decays every 3 batches instead of every 3 epochs."""
    cfg = TrainConfig(schedule="step", lr=1.0, step_size=3, gamma=0.5, epochs=2)
    wrong_cfg = dataclasses.replace(cfg, schedule_every_batch=True)
    right, wrong = learning_rates(cfg, 10), learning_rates(wrong_cfg, 10)
    assert right.shape == wrong.shape == (20,)
    np.testing.assert_allclose(right, 1.0)
    np.testing.assert_allclose(wrong, 0.5 ** (np.arange(20) // 3))


def test_schedule_every_batch_is_the_mistake_only_where_it_is_one():
    """``schedule_every_batch`` makes fit step an epoch schedule per batch (notebook 07 measures the
    damage); a schedule that already counts batches refuses it, since it would change nothing."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for schedule in ("step", "multistep", "cosine"):
        cfg = TrainConfig(schedule=schedule, milestones=(1,), epochs=2)
        assert not build_scheduler(optimizer, cfg, 10).per_batch
        slip = dataclasses.replace(cfg, schedule_every_batch=True)
        assert build_scheduler(optimizer, slip, 10).per_batch
    with pytest.raises(ConfigError, match="'linear' already steps as it should"):
        TrainConfig(schedule="linear", schedule_every_batch=True)


def test_cosine_schedule_steps_per_epoch_and_follows_the_formula():
    cfg = TrainConfig(schedule="cosine", lr=0.1, min_lr=0.001, epochs=10)
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert lrs_over_epochs(cfg, steps_per_epoch=7) == pytest.approx(expected)


def test_step_schedules_count_epochs_not_batches():
    cfg = TrainConfig(schedule="multistep", lr=1.0, milestones=(2, 4), gamma=0.1, epochs=6)
    assert lrs_over_epochs(cfg, steps_per_epoch=50) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cfg = TrainConfig(schedule="step", lr=1.0, step_size=3, gamma=0.5, epochs=6)
    assert lrs_over_epochs(cfg, steps_per_epoch=50) == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5])
    assert lrs_over_epochs(TrainConfig(schedule="none", lr=0.3, epochs=3), 5) == [0.3] * 3


def test_multistep_milestones_after_the_last_epoch_warn():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.warns(UserWarning, match="never decays"):
        build_scheduler(
            optimizer, TrainConfig(schedule="multistep", milestones=(60, 80), epochs=1), 10
        )


def test_onecycle_steps_per_batch_and_peaks_after_warmup():
    cfg = TrainConfig(schedule="onecycle", lr=0.4, warmup=0.25, div_factor=25, epochs=4)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr, momentum=0.9)
    schedule = build_scheduler(optimizer, cfg, steps_per_epoch=10)
    assert schedule.per_batch
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.scheduler.step()
    assert lrs[0] == pytest.approx(0.4 / 25)
    assert max(lrs) == pytest.approx(0.4) and 9 <= int(np.argmax(lrs)) <= 10  # 25% of 40 steps
    assert lrs[-1] < 1e-4
    assert optimizer.param_groups[0]["momentum"] == 0.9  # momentum is not cycled


def test_every_schedule_steps_per_batch_or_per_epoch_as_its_list_says():
    """Only a schedule in neither list (``"none"``) leaves the lr constant."""
    per_batch, per_epoch = set(PER_BATCH_SCHEDULES), set(PER_EPOCH_SCHEDULES)
    assert not per_batch & per_epoch and per_batch | per_epoch <= set(SCHEDULES)
    for name in SCHEDULES:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        schedule = build_scheduler(optimizer, TrainConfig(schedule=name, epochs=30), 10)
        assert schedule.per_batch == (name in per_batch), name
        assert (schedule.scheduler is None) == (name not in per_batch | per_epoch), name


# --------------------------------------------------------------------------------------------------
# The loop: train_one_epoch and evaluate against hand-written references
# --------------------------------------------------------------------------------------------------


class NaNAfter(nn.Module):
    """Wraps a model and returns NaN logits after a number of training-mode calls."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.calls = model, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.training:
            self.calls -= 1
            if self.calls < 0:
                return out * float("nan")
        return out


def synthetic_batches(
    n_batches: int = 4, batch: int = 8, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g))
        for _ in range(n_batches)
    ]


class TinyNet(nn.Module):
    """A small conv net with BatchNorm, enough to see train/eval differences."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_train_one_epoch_matches_a_plain_loop():
    torch.manual_seed(0)
    model = TinyNet()
    reference = copy.deepcopy(model)
    batches = synthetic_batches()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.eval()  # train_one_epoch must switch to training mode itself
    stats = train_one_epoch(model, batches, criterion, optimizer, "cpu")
    assert model.training

    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    reference.train()
    losses, correct = [], 0
    for x, y in batches:
        ref_opt.zero_grad()
        out = reference(x)
        loss = criterion(out, y)
        loss.backward()
        ref_opt.step()
        losses.append(loss.item())
        correct += (out.argmax(1) == y).sum().item()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert stats.loss == pytest.approx(np.mean(losses), rel=1e-6)
    assert stats.accuracy == correct / 32 and stats.images == 32


def test_evaluate_agrees_with_sklearn_and_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = resnet18(width=4)
    model.train()
    train_one_epoch(
        model,
        synthetic_batches(2),
        nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        "cpu",
    )
    model.train()  # as a training loop leaves it
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    batches = synthetic_batches(3, seed=1)
    stats = evaluate(model, batches, "cpu")
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), f"evaluate() changed {key}"

    with torch.no_grad():  # the reference: eval-mode logits, then scikit-learn's metrics
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches]).numpy()
    probs = torch.softmax(logits.double(), 1).numpy()
    assert stats.accuracy == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert stats.loss == pytest.approx(log_loss(labels, probs, labels=list(range(10))), rel=1e-5)


def test_non_finite_loss_raises_with_advice():
    torch.manual_seed(0)
    model = NaNAfter(TinyNet(), calls=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match="nan.*lower learning rate"):
        train_one_epoch(model, synthetic_batches(6), nn.CrossEntropyLoss(), optimizer, "cpu")


# --------------------------------------------------------------------------------------------------
# Placement: where and how a run computes, decided once
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amp", [False, True])
def test_placement_for_moves_the_model_and_fixes_layout_and_precision(amp: bool):
    wide, narrow = resnet18(width=8), resnet18(width=4)  # width 4: a narrow strided 1x1 conv
    place = placement_for(wide, "cpu", amp=amp)
    assert place.device == torch.device("cpu") and place.amp == amp
    assert place.memory_format == torch.channels_last and place.channels_last
    assert wide.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # moved
    assert not place.scaler.is_enabled()  # loss scaling is for float16, on CUDA only
    with place.autocast():
        out = nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if amp else torch.float32)
    # The CPU guard of models.memory_format_for: NCHW for a network with a narrow strided 1x1.
    assert placement_for(narrow, "cpu").memory_format == torch.contiguous_format
    assert placement_for(resnet18(width=8), "cpu", channels_last=False).memory_format == (
        torch.contiguous_format
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        place.amp = not amp  # decided once: a run cannot change it halfway


def test_train_one_epoch_given_a_placement_or_a_device_trains_alike():
    torch.manual_seed(0)
    by_device, by_placement = TinyNet(), TinyNet()
    by_placement.load_state_dict(by_device.state_dict())
    batches, criterion = synthetic_batches(), nn.CrossEntropyLoss()
    first = train_one_epoch(by_device, batches, criterion,
                            torch.optim.SGD(by_device.parameters(), lr=0.1), "cpu")  # fmt: skip
    place = placement_for(by_placement, "cpu")
    second = train_one_epoch(by_placement, batches, criterion,
                             torch.optim.SGD(by_placement.parameters(), lr=0.1), place)  # fmt: skip
    assert (first.loss, first.accuracy, first.images) == (second.loss, second.accuracy,
                                                          second.images)  # fmt: skip
    for key, value in by_device.state_dict().items():
        assert torch.equal(value, by_placement.state_dict()[key]), key


def test_step_extras_lookahead_copies_the_average_back_every_kth_update():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    extras = StepExtras(ema=build_ema(model, decay=0.5), lookahead=2)
    extras.update_average(model)  # update 1: the average starts at the weights, 1.0
    with torch.no_grad():
        model.weight.fill_(3.0)
    extras.update_average(model)  # update 2: average 0.5 * 1 + 0.5 * 3 = 2, copied back
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))
    StepExtras().update_average(model)  # no average: nothing happens
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = resnet18(width=4)
    optimizer = build_optimizer(model, TrainConfig())
    train_one_epoch(model, synthetic_batches(2), nn.CrossEntropyLoss(), optimizer, "cpu")
    cfg = TrainConfig(width=4)
    path = save_checkpoint(
        tmp_path / "run" / "ckpt.pt",
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        config=cfg.to_dict(),
        architecture=model_architecture(model),
        history={"epoch": [1]},
    )
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file

    torch.manual_seed(1)
    other = resnet18(width=4)
    other_opt = build_optimizer(other, TrainConfig())
    state = load_checkpoint(path, other, other_opt)
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    saved_momentum = optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"], saved_momentum)
    assert TrainConfig.from_dict(state["config"]) == cfg
    assert state["architecture"] == {
        "name": "resnet18",
        "width": 4,
        "stem": "cifar",
        "num_classes": 10,
    }


def test_interrupted_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "last.pt"
    save_checkpoint(path, epoch=1, weights=torch.arange(5.0))
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # garbage reaches the file, then the process "dies"
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, epoch=2, weights=torch.zeros(5))
    monkeypatch.setattr(torch, "save", real_save)

    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(5.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary file is gone


def test_model_from_checkpoint_rebuilds_the_saved_network(tmp_path: Path):
    cfg = dataclasses.replace(PRESETS["cpu"], width=8, depth=34)
    original = build_model(cfg, num_classes=4)
    path = save_checkpoint(
        tmp_path / "best.pt", model=original.state_dict(), config=cfg.to_dict(),
        architecture=model_architecture(original), classes=["a", "b", "c", "d"],
    )  # fmt: skip
    model, state = model_from_checkpoint(path)
    assert model_architecture(model) == model_architecture(resnet34(width=8, num_classes=4))
    assert state["classes"] == ["a", "b", "c", "d"]
    saved = torch.load(path, weights_only=True)["model"]  # the file itself, read independently
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # a file whose description disagrees with its weights is refused, not loaded halfway
    wrong = save_checkpoint(
        tmp_path / "wrong.pt", model=original.state_dict(), classes=["a", "b", "c", "d"],
        config=dataclasses.replace(cfg, depth=18).to_dict(),
        architecture=model_architecture(original),
    )  # fmt: skip
    with pytest.raises(ArchitectureMismatchError):
        model_from_checkpoint(wrong)


def test_mismatched_architecture_names_both(tmp_path: Path):
    small = resnet18(width=8)
    path = save_checkpoint(
        tmp_path / "best.pt", model=small.state_dict(), architecture=model_architecture(small)
    )
    with pytest.raises(ArchitectureMismatchError) as info:
        load_checkpoint(path, resnet34(width=8))
    message = str(info.value)
    assert "resnet18(width=8, stem=cifar, num_classes=10)" in message
    assert "resnet34(width=8, stem=cifar, num_classes=10)" in message
    with pytest.raises(ArchitectureMismatchError, match="width=16"):
        load_checkpoint(path, resnet18(width=16))
    # the same depth and width with the channels spent otherwise is another network
    with pytest.raises(ArchitectureMismatchError, match=r"stage_multiples=\[1, 4, 12, 16\]"):
        load_checkpoint(path, resnet18(width=8, stage_multiples=(1, 4, 12, 16)))

    # A bare state dict (no description): PyTorch's error is caught and explained.
    bare = save_checkpoint(tmp_path / "bare.pt", model=small.state_dict())
    with pytest.raises(
        ArchitectureMismatchError, match="resnet34.*missing keys.*shape mismatches"
    ) as info:
        load_checkpoint(bare, resnet34(width=16))
    assert "conv1.weight: (8, 3, 3, 3) in the file, (16, 3, 3, 3) in the model" in str(info.value)
    assert len(str(info.value)) < 1000  # a readable message, not a wall of keys


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    # Random bytes fail in many different places inside the unpickler (bad opcode, empty stack,
    # end of file, ...); every one of them must come out as the same clear error.
    generator = np.random.default_rng(0)
    garbage = tmp_path / "garbage.pt"
    for _ in range(300):
        garbage.write_bytes(generator.integers(0, 256, size=1000, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="garbage.pt") as info:
            load_checkpoint(garbage)
        assert "corrupt or truncated" in str(info.value)  # not "unsafe": it is a damaged file
        assert "arbitrary code" not in str(info.value)
    good = save_checkpoint(tmp_path / "good.pt", weights=torch.randn(1000))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)


MARKER = "pwned.txt"


class Payload:
    """An object whose unpickling would run code: what weights_only loading must refuse."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __reduce__(self):
        return (Path(os.path.join(self.folder, MARKER)).write_text, ("code ran",))


def test_pickled_objects_are_refused_and_never_run(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload(str(tmp_path))}, path)
    with pytest.raises(CheckpointError, match="Refusing to load .*evil.pt"):
        load_checkpoint(path)
    assert not (tmp_path / MARKER).exists()


# --------------------------------------------------------------------------------------------------
# fit: resume equivalence, the NaN guard, checkpoints chosen on validation
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(cifar_root: Path):
    """200 training and 100 validation images of real CIFAR-10."""
    splits = cifar10_splits(cifar_root, smoke=True)
    return splits.train.subset(np.arange(200)), splits.val.subset(np.arange(100))


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(
        width=4,
        epochs=4,
        batch_size=50,
        eval_batch_size=100,
        lr=0.05,
        schedule="onecycle",
        label_smoothing=0.1,
        patience=None,
        channels_last=True,
        num_workers=0,
    )
    return TrainConfig.from_dict({**base.to_dict(), **changes})


def tiny_loaders(data, cfg: TrainConfig, kind: str):
    train, val = data
    if kind == "tensor":
        return (
            TensorLoader(
                train, cfg.batch_size, shuffle=True, augment=True, seed=cfg.seed, drop_last=True
            ),
            TensorLoader(val, cfg.eval_batch_size),
        )
    # A DataLoader with per-image transforms draws its augmentation from the global torch RNG,
    # which a resumed run must therefore restore.
    return (
        make_loader(
            CIFAR10Dataset(train, train_transform(rotation=10)),
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            num_workers=0,
            drop_last=True,
        ),
        make_loader(CIFAR10Dataset(val, eval_transform()), cfg.eval_batch_size, num_workers=0),
    )


@pytest.mark.parametrize(
    ("kind", "changes"), [("torch", {}), ("tensor", {}), ("tensor", {"small_crops": 0.5})]
)
def test_resume_gives_the_same_weights_and_history(
    tiny_data, tmp_path: Path, kind: str, changes: dict
):
    cfg = tiny_config(**changes)  # small_crops: progressive resizing, half the steps

    set_seed(0)
    whole_model = resnet18(width=4)
    whole = fit(
        whole_model,
        *tiny_loaders(tiny_data, cfg, kind),
        cfg,
        "cpu",
        out_dir=tmp_path / "whole",
        progress=False,
    )

    set_seed(0)
    part_model = resnet18(width=4)
    first = fit(
        part_model,
        *tiny_loaders(tiny_data, cfg, kind),
        cfg,
        "cpu",
        out_dir=tmp_path / "part",
        stop_after_epoch=2,
        progress=False,
    )
    assert first.epochs_run == 2

    set_seed(12345)  # a new session: other random state, other initial weights, fresh loaders
    resumed_model = resnet18(width=4)
    resumed = fit(
        resumed_model,
        *tiny_loaders(tiny_data, cfg, kind),
        cfg,
        "cpu",
        out_dir=tmp_path / "part",
        resume=first.last_checkpoint,
        progress=False,
    )

    assert resumed.epochs_run == whole.epochs_run == 4
    small = [bool(cfg.small_crops)] * 2 + [False] * 2  # the first two of 4 epochs of 4 steps
    assert list(whole.history["small_crops"]) == list(resumed.history["small_crops"]) == small
    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    columns = [c for c in HISTORY_COLUMNS if c not in TIMING_COLUMNS]
    assert whole.history[columns].equals(resumed.history[columns])
    assert resumed.best_epoch == whole.best_epoch
    best_whole = load_checkpoint(whole.best_checkpoint)
    best_resumed = load_checkpoint(resumed.best_checkpoint)
    assert best_whole["epoch"] == best_resumed["epoch"]
    for key, value in best_whole["model"].items():
        assert torch.equal(value, best_resumed["model"][key])


def test_fit_keeps_the_best_validation_checkpoint_and_a_full_last_one(tiny_data, tmp_path: Path):
    cfg = tiny_config(epochs=3, schedule="cosine")
    set_seed(0)
    model = resnet18(width=4)
    result = fit(
        model,
        *tiny_loaders(tiny_data, cfg, "tensor"),
        cfg,
        "cpu",
        out_dir=tmp_path,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        progress=False,
    )
    history = result.history
    assert list(history.columns) == list(HISTORY_COLUMNS) and list(history["epoch"]) == [1, 2, 3]
    assert history[["train_acc", "val_acc"]].stack().between(0, 1).all()
    # cosine is stepped once per epoch: the lr column follows the formula at epoch starts
    expected_lr = [cfg.lr * (1 + math.cos(math.pi * t / 3)) / 2 for t in range(3)]
    assert list(history["lr"]) == pytest.approx(expected_lr)

    best_epoch = int(history["val_acc"].to_numpy().argmax()) + 1  # first maximum, on validation
    assert result.best_epoch == best_epoch
    best = load_checkpoint(result.best_checkpoint)
    assert best["epoch"] == best_epoch and best["score"] == history["val_acc"].max()
    last = load_checkpoint(result.last_checkpoint)
    assert last["epoch"] == 3
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "early_stopping",
        "history",
        "rng",
        "config",
        "architecture",
        "classes",
        "mean",
        "std",
    ):
        assert key in last, key
    assert last["mean"] == [0.5, 0.5, 0.5] and len(last["classes"]) == 10
    assert (tmp_path / "history.csv").is_file()


def test_non_finite_loss_stops_fit_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path: Path):
    cfg = tiny_config(epochs=3)
    set_seed(0)
    model = NaNAfter(resnet18(width=4), calls=5)  # 4 batches per epoch: NaN in epoch 2
    with pytest.raises(NonFiniteLossError, match=r"Epoch 2.*lower learning rate.*last\.pt"):
        fit(
            model,
            *tiny_loaders(tiny_data, cfg, "tensor"),
            cfg,
            "cpu",
            out_dir=tmp_path,
            progress=False,
        )
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 1 and len(last["history"]["epoch"]) == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_resume_refuses_a_changed_configuration(tiny_data, tmp_path: Path):
    cfg = tiny_config(epochs=2)
    set_seed(0)
    first = fit(
        resnet18(width=4),
        *tiny_loaders(tiny_data, cfg, "tensor"),
        cfg,
        "cpu",
        out_dir=tmp_path,
        stop_after_epoch=1,
        progress=False,
    )
    changed = tiny_config(epochs=2, lr=0.5)
    with pytest.raises(ValueError, match="lr: saved 0.05, now 0.5"):
        fit(
            resnet18(width=4),
            *tiny_loaders(tiny_data, changed, "tensor"),
            changed,
            "cpu",
            out_dir=tmp_path,
            resume=first.last_checkpoint,
            progress=False,
        )


@pytest.mark.parametrize("amp", [False, True])
def test_validation_in_fit_agrees_with_a_plain_forward_pass(tiny_data, tmp_path: Path, amp: bool):
    """The validation accuracy and loss fit() records for its last epoch, against an independent
    reference: one eval-mode forward pass over the whole validation split, scored with
    scikit-learn, with and without mixed precision (bfloat16 on the CPU). The loader's batches
    and the one big batch round differently, so predictions may differ on near ties only."""
    cfg = tiny_config(epochs=2, amp=amp)
    set_seed(0)
    model = resnet18(width=cfg.width)
    train_loader, val_loader = tiny_loaders(tiny_data, cfg, "tensor")
    result = fit(model, train_loader, val_loader, cfg, "cpu", out_dir=tmp_path, progress=False)
    last = result.history.iloc[-1]
    with torch.no_grad():
        images = torch.cat([x for x, _ in val_loader])
        labels = torch.cat([y for _, y in val_loader])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model.eval()(images).float()  # (N, 10)
    margin = BFLOAT16_MARGIN if amp else FLOAT32_MARGIN
    assert_accuracy_agrees(last["val_acc"], logits, labels, margin)
    reference_loss = log_loss(labels.numpy(), logits.double().softmax(1).numpy(), labels=range(10))
    assert last["val_loss"] == pytest.approx(reference_loss, rel=0.02 if amp else 1e-4)


# --------------------------------------------------------------------------------------------------
# CPU threads: chosen by measuring, kept on resume, a slowdown said out loud
# --------------------------------------------------------------------------------------------------


def test_pick_threads_keeps_the_most_unless_fewer_are_clearly_faster():
    assert thread_candidates(8) == [8, 7, 4, 1]
    assert thread_candidates(2) == [2, 1] and thread_candidates(1) == [1]
    busy = {2: 1.5, 1: 0.2}  # another program on one of two cores: two threads wait on it
    assert pick_threads(busy.__getitem__, [2, 1]).threads == 1
    idle = {2: 0.11, 1: 0.2}
    assert pick_threads(idle.__getitem__, [2, 1]) == (2, idle)
    within_noise = {2: 0.100, 1: 0.095}  # 5% faster: not enough to leave the default
    assert pick_threads(within_noise.__getitem__, [2, 1]).threads == 2


def test_pick_threads_is_not_fooled_by_one_stalled_timing():
    """A moment's stall during the first timing of two threads (it happened at the start of a
    15-minute run here: one thread was chosen on an idle machine, and the run trained 40% slower)
    slows that timing only; the second round times the counts again, and each keeps its fastest.
    A core kept busy slows every timing of two threads, so one is still chosen then."""
    def timings(per_round: list[dict[int, float]]) -> tuple[Callable[[int], float], list[int]]:
        calls: list[int] = []

        def seconds_per_step(threads: int) -> float:
            calls.append(threads)
            return per_round[calls.count(threads) - 1][threads]

        return seconds_per_step, calls

    stalled, calls = timings([{2: 0.5, 1: 0.2}, {2: 0.11, 1: 0.2}])
    choice = pick_threads(stalled, [2, 1])
    assert choice == (2, {2: 0.11, 1: 0.2}) and calls == [2, 1, 2, 1]  # interleaved, twice
    busy, _ = timings([{2: 1.5, 1: 0.2}, {2: 1.4, 1: 0.21}])
    assert pick_threads(busy, [2, 1]) == (1, {2: 1.4, 1: 0.2})
    one_round, _ = timings([{2: 0.5, 1: 0.2}])
    assert pick_threads(one_round, [2, 1], rounds=1).threads == 1  # one timing each: fooled


def test_choose_threads_measures_a_copy_and_restores_everything():
    cfg = tiny_config()
    model = resnet18(width=4)
    weights = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    torch.set_num_threads(2)
    try:
        chosen = choose_threads(cfg, model, "cpu")
        assert chosen.threads in (1, 2) and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert chosen == dataclasses.replace(cfg, threads=chosen.threads)  # nothing else changed
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    given = tiny_config(threads=3)
    assert choose_threads(given, model, "cpu") is given  # a count given is not measured


def test_every_thread_count_is_timed_from_the_same_weights(monkeypatch: pytest.MonkeyPatch):
    """Timing one count after another on the same copy kept training it (constant labels, the
    preset's learning rate), its later steps ran up to 35 times slower, and one thread always
    looked slower than two, on a busy machine too."""
    from course_utils import training

    model, seen = resnet18(width=4), []

    def recording(trial, batches, *args, **kwargs):
        seen.append((torch.get_num_threads(), trial.conv1.weight.detach().clone()))
        return train_one_epoch(trial, batches, *args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", recording)
    torch.set_num_threads(2)
    try:
        choose_threads(tiny_config(), model, "cpu")
    finally:
        torch.set_num_threads(1)
    first_steps = {}
    for threads, weight in seen:
        first_steps.setdefault(threads, weight)
    assert sorted(first_steps) == [1, 2]
    for weight in first_steps.values():
        assert torch.equal(weight, model.conv1.weight)


def test_fit_decides_its_placement_once_and_trains_and_validates_with_it(
    tiny_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from course_utils import training

    decided, used = [], []

    def deciding(*args, **kwargs):
        decided.append(placement_for(*args, **kwargs))
        return decided[-1]

    def recording(function):
        def wrapper(model, loader, *args, **kwargs):
            used.append([a for a in args if isinstance(a, Placement)])
            return function(model, loader, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(training, "placement_for", deciding)
    monkeypatch.setattr(training, "train_one_epoch", recording(train_one_epoch))
    monkeypatch.setattr(training, "evaluate", recording(evaluate))
    cfg = tiny_config(epochs=2, threads=1)
    fit(resnet18(width=4), *tiny_loaders(tiny_data, cfg, "tensor"), cfg, "cpu", out_dir=tmp_path,
        progress=False)  # fmt: skip
    assert len(decided) == 1 and len(used) == 4  # two epochs: train, validate, train, validate
    assert all(len(found) == 1 and found[0] is decided[0] for found in used)


def test_fit_names_an_unknown_option():
    with pytest.raises(TypeError, match="stop_after"):
        fit(nn.Linear(1, 1), [], [], TrainConfig(), "cpu", out_dir="unused", stop_after=2)


def test_a_resumed_run_keeps_the_thread_count_it_chose(tiny_data, tmp_path: Path, monkeypatch):
    cfg = tiny_config(epochs=2)  # threads=0: choose (one thread here, so nothing to time)
    set_seed(0)
    first = fit(resnet18(width=4), *tiny_loaders(tiny_data, cfg, "tensor"), cfg, "cpu",
                out_dir=tmp_path, stop_after_epoch=1, progress=False)  # fmt: skip
    assert load_checkpoint(first.last_checkpoint)["config"]["threads"] == 1

    def measured(*args):
        raise AssertionError("a resumed run measured its threads again")

    monkeypatch.setattr("course_utils.training.pick_threads", measured)
    torch.set_num_threads(2)  # another machine, or another default: the saved count still wins
    try:
        fit(resnet18(width=4), *tiny_loaders(tiny_data, cfg, "tensor"), cfg, "cpu",
            out_dir=tmp_path, resume=first.last_checkpoint, progress=False)  # fmt: skip
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(1)
    assert load_checkpoint(first.last_checkpoint)["config"]["threads"] == 1


def test_an_epoch_several_times_slower_than_the_fastest_is_reported():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_slowed_down([300.0])
        _warn_if_slowed_down([300.0, 120.0, 250.0])  # 2.5 times slower: within the noise
    with pytest.warns(RuntimeWarning, match="trained at 90 images/s, 3 times slower .*--threads 1"):
        _warn_if_slowed_down([300.0, 280.0, 90.0])


def test_a_budget_of_zero_minutes_is_no_budget_one_off_value():
    assert TrainConfig(minutes=0).minutes is None and TrainConfig().minutes is None
    assert TrainConfig(minutes=2.5).minutes == 2.5
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "minutes": 0}).minutes is None
