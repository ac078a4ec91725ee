"""Fit a training run into a time budget: measure this machine, then choose the number of epochs.

A recipe tuned to one machine is wrong on the next: two laptops with the same number of cores can
differ twofold in speed. So ``python -m course_utils train --minutes 15`` first times a few
real training and evaluation batches here (time that counts against the budget), then picks the
largest number of epochs whose training, validation every epoch, final test and figures fit in
what is left. The schedule is then built for exactly those epochs (one-cycle needs its total length
up front), and the choice is saved in the run's configuration, so ``--resume`` continues the same
schedule on any machine.

Explained in notebook 05 (training).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from course_utils.training import TrainConfig, build_optimizer, evaluate, train_one_epoch

#: Batches timed for each measurement, after one warm-up batch (more: steadier, but slower).
TIMED_BATCHES = 3
#: Seconds reserved for writing the figures and the report at the end of a run.
REPORT_SECONDS = 10.0
#: Fraction of the remaining budget kept free for what a few batches cannot predict (the first
#: epoch's slower start, a busier machine).
SAFETY_MARGIN = 0.05


class BudgetError(ValueError):
    """Not even one epoch fits in the time budget."""


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
    optimizer = build_optimizer(trial, cfg)
    criterion = nn.CrossEntropyLoss()

    def train(n: int) -> None:
        batches = itertools.islice(train_loader, n)
        train_one_epoch(trial, batches, criterion, optimizer, device, amp=cfg.amp,
                        channels_last=cfg.channels_last)  # fmt: skip

    def validate(n: int) -> None:
        evaluate(trial, itertools.islice(eval_loader, n), device, cfg.amp, cfg.channels_last)

    def seconds_per_batch(run: Callable[[int], None]) -> float:
        run(1)  # warm-up: the first batch allocates memory and picks kernels
        start = clock()
        run(TIMED_BATCHES)
        return (clock() - start) / TIMED_BATCHES

    with torch.random.fork_rng(devices=[]):
        return Throughput(seconds_per_batch(train), seconds_per_batch(validate))


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
    left = (budget_seconds - spent_seconds) * (1 - SAFETY_MARGIN)
    left -= test_batches * speed.eval + REPORT_SECONDS
    epoch_seconds = train_batches * speed.train + val_batches * speed.eval
    return max(0, math.floor(left / epoch_seconds))


def fit_to_budget(
    cfg: TrainConfig,
    model: nn.Module,
    loaders: tuple[Any, Any, Any],
    device: torch.device,
    started: float,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainConfig:
    """``cfg`` with ``epochs`` chosen so the whole run ends within ``cfg.minutes`` of ``started``.

    Prints the measurement and the decision. Raises :class:`BudgetError`, saying what to change,
    when not even one epoch fits.
    """
    train_loader, val_loader, test_loader = loaders
    speed = measure_throughput(model, train_loader, val_loader, cfg, device, clock)
    epochs = plan_epochs(
        cfg.minutes * 60,
        clock() - started,
        speed,
        len(train_loader),
        len(val_loader),
        len(test_loader),
    )
    images_per_second = cfg.batch_size / speed.train
    if epochs < 1:
        raise BudgetError(
            f"Not even one epoch fits in {cfg.minutes:g} minutes here ({images_per_second:.0f} "
            f"training images/s). Give more time (--minutes), a smaller network (--width), the "
            f"small subset (--smoke), or use a GPU."
        )
    print(
        f"Time budget {cfg.minutes:g} min: measured {images_per_second:.0f} training images/s "
        f"here, so {epochs} epoch{' fits' if epochs == 1 else 's fit'} (the schedule is built for "
        f"{epochs})."
    )
    return dataclasses.replace(cfg, epochs=epochs)
