"""Fit a training run into a time budget: measure this machine, then choose the number of steps.

A recipe tuned to one machine is wrong on the next: two laptops with the same number of cores can
differ twofold in speed. So ``python -m course_utils train --minutes 15`` first times a few
real training and evaluation batches here (time that counts against the budget), then picks the
largest number of optimizer steps whose training, validation after every epoch, final test and
figures fit in what is left: whole epochs, and then as much of one more epoch as fits. The schedule
is built for exactly those steps (one-cycle needs its total length up front), and the choice is
saved in the run's configuration, so ``--resume`` continues the same schedule on any machine.

A few batches cannot predict everything: a machine can slow down mid-run (another program, a
warmer CPU). So the plan also gives a deadline, and :func:`course_utils.training.fit` watches its
own pace against it, running fewer steps if it must (see ``fit``'s ``deadline``).

Explained in notebook 05 (training).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from course_utils.training import (
    TrainConfig,
    build_optimizer,
    evaluate,
    placement_for,
    train_one_epoch,
)

#: Batches run before timing: the first ones allocate memory and pick kernels, and run slower.
WARMUP_BATCHES = 3
#: Batches timed for each measurement, after the warm-up (more: steadier, but slower).
TIMED_BATCHES = 8
#: The least of an epoch a budget must leave room for (a run may end inside an epoch).
MIN_EPOCHS = 0.5
#: Seconds reserved for writing the figures and the report at the end of a run.
REPORT_SECONDS = 10.0
#: Fraction of the remaining budget kept free for what a few batches cannot predict (the first
#: epoch's slower start, a busier machine).
SAFETY_MARGIN = 0.05
#: Fraction of the whole budget left between the training deadline and the planned end of the
#: test and report, for the run's pace to vary after its last check.
DEADLINE_MARGIN = 0.02


class BudgetError(ValueError):
    """Too little of an epoch fits in the time budget to be worth training."""


class BudgetPlan(NamedTuple):
    """What :func:`fit_to_budget` decided."""

    cfg: TrainConfig  # the configuration with ``steps`` and ``epochs`` chosen
    deadline: float  # the clock reading by which training and validation must end (for ``fit``)


class Throughput(NamedTuple):
    """Seconds per batch on this machine, measured."""

    train: float  # one training step (forward, backward, optimizer step)
    eval: float  # one evaluation batch (forward only)


def measure_throughput(
    model: nn.Module,
    train_loader: Any,
    eval_loader: Any,
    cfg: TrainConfig,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> Throughput:
    """Time a few real training and evaluation batches on a throwaway copy of ``model``.

    The copy, its optimizer and the global random state are discarded afterwards, so measuring
    does not change the run that follows.
    """
    trial = copy.deepcopy(model)
    place = placement_for(trial, device, amp=cfg.amp, channels_last=cfg.channels_last)  # as fit
    optimizer = build_optimizer(trial, cfg)
    criterion = nn.CrossEntropyLoss()

    def train(batches: Iterable[Any]) -> None:
        train_one_epoch(trial, batches, criterion, optimizer, place)

    def validate(batches: Iterable[Any]) -> None:
        evaluate(trial, batches, place, tta=cfg.tta)  # TTA: 2 passes

    def seconds_per_batch(run: Callable[[Iterable[Any]], None], loader: Any) -> float:
        run(itertools.islice(loader, WARMUP_BATCHES))  # the first batches are slower
        timed = _Counted(itertools.islice(loader, TIMED_BATCHES))  # a small loader has fewer
        start = clock()
        run(timed)
        return (clock() - start) / max(1, timed.count)

    with torch.random.fork_rng(devices=[]):
        return Throughput(
            seconds_per_batch(train, train_loader), seconds_per_batch(validate, eval_loader)
        )


class _Counted:
    """An iterable that counts the items it has served."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.count += 1
            yield item


def plan_epochs(
    budget_seconds: float,
    spent_seconds: float,
    speed: Throughput,
    train_batches: int,
    val_batches: int,
    test_batches: int,
) -> int:
    """The most epochs that fit: each costs its training and validation batches; the test and
    the report are paid once, at the end. Returns 0 when not even one epoch fits."""
    return plan_steps(budget_seconds, spent_seconds, speed, train_batches, val_batches,
                      test_batches) // train_batches  # whole epochs of the steps that fit


def plan_steps(
    budget_seconds: float,
    spent_seconds: float,
    speed: Throughput,
    train_batches: int,
    val_batches: int,
    test_batches: int,
) -> int:
    """The most optimizer steps that fit, counting a validation pass after every epoch begun
    (the last epoch may be partial); the test and the report are paid once, at the end. Returns 0
    when not even one step fits."""
    left = (budget_seconds - spent_seconds) * (1 - SAFETY_MARGIN)
    left -= test_batches * speed.eval + REPORT_SECONDS
    steps = 0
    for epochs in itertools.count(1):  # with this many validation passes, how many steps fit?
        fits = math.floor((left - epochs * val_batches * speed.eval) / speed.train)
        if fits <= (epochs - 1) * train_batches:  # not one step of this epoch: stop before it
            return max(0, steps)
        steps = min(fits, epochs * train_batches)
        if fits <= epochs * train_batches:
            return steps
    raise AssertionError("unreachable")


def fit_to_budget(
    cfg: TrainConfig,
    model: nn.Module,
    loaders: tuple[Any, Any, Any],
    device: torch.device,
    started: float,
    clock: Callable[[], float] = time.perf_counter,
) -> BudgetPlan:
    """``cfg`` with ``steps`` and ``epochs`` chosen so the whole run ends within ``cfg.minutes``
    of ``started``, and the deadline for training (pass it to ``fit``).

    Prints the measurement and the decision. Raises :class:`BudgetError`, saying what to change,
    when less than ``MIN_EPOCHS`` of an epoch fits.
    """
    train_loader, val_loader, test_loader = loaders
    speed = measure_throughput(model, train_loader, val_loader, cfg, device, clock)
    per_epoch = len(train_loader)
    steps = plan_steps(
        cfg.minutes * 60, clock() - started, speed, per_epoch, len(val_loader), len(test_loader)
    )
    images_per_second = cfg.batch_size / speed.train
    if steps < per_epoch * MIN_EPOCHS:
        raise BudgetError(
            f"Not even {MIN_EPOCHS:.0%} of an epoch fits in {cfg.minutes:g} minutes here "
            f"({images_per_second:.0f} training images/s). Give more time (--minutes), a smaller "
            f"network (--width), the small subset (--smoke), or use a GPU."
        )
    epochs = steps / per_epoch
    print(
        f"Time budget {cfg.minutes:g} min: measured {images_per_second:.0f} training images/s "
        f"here, so {steps} steps of {cfg.batch_size} images fit, {epochs:.2f} epochs (the "
        f"schedule is built for {steps} steps)."
    )
    budget = cfg.minutes * 60
    end = len(test_loader) * speed.eval + REPORT_SECONDS  # the test and the report, after training
    deadline = started + budget * (1 - DEADLINE_MARGIN) - end
    return BudgetPlan(
        dataclasses.replace(cfg, steps=steps, epochs=math.ceil(epochs)), deadline
    )
