"""This machine: what it is, how fast it trains, and how many steps fit in a time budget.

A recipe tuned to one machine is wrong on the next: two laptops with the same number of cores can
differ twofold in speed. So the course measures instead of guessing, with one measurement
(:func:`measure_throughput`: a few real training and evaluation batches, timed) behind two uses:

- notebook 00's estimate of an epoch's minutes, and the no-GPU warning of every notebook's first
  cell on Colab (:func:`estimate_epoch_minutes`, :func:`warn_if_no_gpu`);
- the time budget: ``python -m course_utils train --minutes 15`` times a few batches here (time that
  counts against the budget), then picks the largest number of optimizer steps whose training,
  validation after every epoch, final test and figures fit in what is left: whole epochs, and
  then as much of one more epoch as fits (:func:`fit_to_budget`). The schedule is built for
  exactly those steps (one-cycle needs its total length up front), and the choice is saved in the
  run's configuration, so ``--resume`` continues the same schedule on any machine. A few batches
  cannot predict everything (another program, a warmer CPU), so the plan also gives a deadline,
  and :func:`course_utils.training.fit` watches its own pace against it (its ``Pacer``).

It also describes the machine: :func:`environment_report` for notebook 00, and
:func:`machine_name` for the tables of results, which name the machine that measured them.

Nothing here runs at import: each function measures when called. Explained in notebooks 00 (the
report, an epoch's time) and 05 (the budget).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from course_utils.config import SMALL_CROP_COST, TrainConfig, data_dir, get_device, is_smoke
from course_utils.data import TRAIN_SIZE, VAL_SIZE
from course_utils.evaluation import views_per_image
from course_utils.models import NUM_CLASSES, resnet18
from course_utils.training import build_optimizer, evaluate, placement_for, train_one_epoch

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


# --------------------------------------------------------------------------------------------------
# What this machine is
# --------------------------------------------------------------------------------------------------


def environment_report() -> dict[str, str]:
    """Versions, device and thread count, for the first cell of the course (notebook 00)."""
    import torchvision  # imported here, not at module import, to keep importing cheap

    device = get_device()
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "machine": machine_name(device),
        "smoke mode": str(is_smoke()),
        "data directory": str(data_dir()),
    }
    return report


def machine_name(device: torch.device | str | None = None) -> str:
    """The machine, in words: the GPU, or the CPU, its threads and its kernels. ``device``: the
    one a run uses (``None``: the GPU if there is one)."""
    device = get_device() if device is None else torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:  # the model name, where Linux says it
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    except (OSError, StopIteration):
        pass
    kernels = torch.backends.cpu.get_cpu_capability()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")  # oneDNN's convolutions limited to these kernels
    kernels += f"; oneDNN capped at {cap}" if cap else ""
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} thread{'s' if threads > 1 else ''} ({kernels})"


# --------------------------------------------------------------------------------------------------
# How fast it trains: one measurement
# --------------------------------------------------------------------------------------------------


class Throughput(NamedTuple):
    """Seconds per batch on this machine, measured."""

    train: float  # one training step (forward, backward, optimizer step)
    eval: float | None  # one evaluation batch (forward only); None where not measured


def measure_throughput(
    model: nn.Module,
    train_loader: Any,
    eval_loader: Any | None,
    cfg: TrainConfig,
    device: torch.device | str,
    clock: Callable[[], float] = time.perf_counter,
    *,
    warmup: int = WARMUP_BATCHES,
    timed: int = TIMED_BATCHES,
) -> Throughput:
    """Time a few real training and evaluation batches on a throwaway copy of ``model``: ``warmup``
    batches untimed, then up to ``timed`` batches timed (``eval_loader=None``: training only).

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
        run(itertools.islice(loader, warmup))  # the first batches are slower
        counted = _Counted(itertools.islice(loader, timed))  # a small loader has fewer
        start = clock()
        run(counted)
        return (clock() - start) / max(1, counted.count)

    with torch.random.fork_rng(devices=[]):
        train_seconds = seconds_per_batch(train, train_loader)
        eval_seconds = None if eval_loader is None else seconds_per_batch(validate, eval_loader)
    return Throughput(train_seconds, eval_seconds)


class _Counted:
    """An iterable that counts the items it has served."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.count += 1
            yield item


def estimate_epoch_minutes(
    width: int = 64,
    batch_size: int = 128,
    batches: int = 3,
    device: torch.device | str | None = None,
) -> float:
    """Minutes one training epoch of ResNet-18 at ``width`` takes on ``device``, measured.

    :func:`measure_throughput` on random images (one warm-up step, then ``batches`` timed), scaled
    up to the 45,000 training images of an epoch. A rough figure, to decide between a GPU and the
    ``cpu`` preset.
    """
    device = get_device() if device is None else torch.device(device)
    with torch.random.fork_rng(devices=[]):  # a measurement must not change the random state
        images = torch.randn(batch_size, 3, 32, 32)  # (B, 3, 32, 32)
        labels = torch.randint(0, NUM_CLASSES, (batch_size,))
        cfg = TrainConfig(width=width, batch_size=batch_size)
        speed = measure_throughput(resnet18(width=width), [(images, labels)] * (1 + batches),
                                   None, cfg, device, warmup=1, timed=batches)  # fmt: skip
    return speed.train * (TRAIN_SIZE - VAL_SIZE) / batch_size / 60


def warn_if_no_gpu(width: int = 64) -> bool:
    """On a machine without a CUDA GPU, say so, with the measured minutes per epoch.

    Called by every notebook's first cell on Colab, where a CPU-only runtime is an easy mistake.

    Returns:
        ``True`` if a warning was printed.
    """
    if torch.cuda.is_available():
        return False
    minutes = estimate_epoch_minutes(width=width, batches=2)
    print(
        f"No GPU found: one epoch of ResNet-18 (width {width}) would take about {minutes:.0f} "
        "minutes here.\nOn Colab choose Runtime > Change runtime type > GPU, then run this cell "
        "again; without a GPU the course uses its smaller `cpu` preset."
    )
    return True


# --------------------------------------------------------------------------------------------------
# How many steps fit in a time budget
# --------------------------------------------------------------------------------------------------


class BudgetError(ValueError):
    """Too little of an epoch fits in the time budget to be worth training."""


class BudgetPlan(NamedTuple):
    """What :func:`fit_to_budget` decided."""

    cfg: TrainConfig  # the configuration with ``steps`` and ``epochs`` chosen
    deadline: float  # the clock reading by which training and validation must end (for ``fit``)


def plan_steps(
    budget_seconds: float,
    spent_seconds: float,
    speed: Throughput,
    train_batches: int,
    val_batches: int,
    test_batches: float,
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
    measured = measure_throughput(model, train_loader, val_loader, cfg, device, clock)
    images_per_second = cfg.batch_size / measured.train  # whole images
    # progressive resizing: the plan counts its share of small-crop steps at their smaller cost
    step = measured.train * (1 - cfg.small_crops * (1 - SMALL_CROP_COST))
    speed = measured._replace(train=step)
    per_epoch = len(train_loader)
    # validation batches were timed; the test may average over more views of each image
    views = views_per_image(tta=cfg.tta, tta_shift=cfg.tta_shift)
    extra_views = views / views_per_image(tta=cfg.tta)
    test_batches = len(test_loader) * extra_views
    steps = plan_steps(
        cfg.minutes * 60, clock() - started, speed, per_epoch, len(val_loader), test_batches
    )
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
        + (f" The epochs in the first {cfg.small_crops:.0%} of them train on small crops, planned "
           f"at {SMALL_CROP_COST:.0%} of a step's time." if cfg.small_crops else "")
    )  # fmt: skip
    budget = cfg.minutes * 60
    end = test_batches * speed.eval + REPORT_SECONDS  # the test and the report, after training
    deadline = started + budget * (1 - DEADLINE_MARGIN) - end
    return BudgetPlan(
        dataclasses.replace(cfg, steps=steps, epochs=math.ceil(epochs)), deadline
    )
