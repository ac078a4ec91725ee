"""Training: the optimizer, the schedule, the loop, early stopping and ``fit``.

Everything notebook 05 teaches lives here, written as plain functions a student can read top to
bottom (the run's settings, :class:`~course_utils.config.TrainConfig` and the presets, live in
:mod:`course_utils.config`):

- :func:`build_optimizer` and :func:`build_scheduler` (which says whether its scheduler steps after
  every *batch* or after every *epoch*: getting that wrong is a classic bug);
- :func:`placement_for`, which decides once where and how a run computes (device, memory
  layout, mixed precision) and returns it as a :class:`Placement` for every loop to follow;
- :func:`train_one_epoch` and :func:`evaluate`, the loop itself;
- :class:`EarlyStopping`, which watches the *validation* metric, never the test set;
- :func:`fit`, which ties them together, keeps a best and a last checkpoint (saved with
  :mod:`course_utils.checkpoints`), and resumes exactly.

Explained in notebook 05 (training with early stopping).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from course_utils.checkpoints import (
    CHECKPOINT_FORMAT,
    check_resumable,
    kept_message,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from course_utils.config import (  # PRESETS, ConfigError, smoke_config: importable from here too
    MONITOR_MODES,
    PER_EPOCH_SCHEDULES,
    PRESETS,  # noqa: F401
    SMALL_CROP_COST,
    ConfigError,  # noqa: F401
    TrainConfig,
    autocast_dtype,
    rng_states,
    set_rng_states,
    smoke_config,  # noqa: F401
)
from course_utils.data import CIFAR10_CLASSES, set_loader_epoch
from course_utils.distributed import (
    barrier,
    broadcast_buffers,
    from_main_process,
    is_main_process,
    sum_over_ranks,
    world_size,
    wrap_model,
)
from course_utils.evaluation import predict
from course_utils.models import (
    cifar_resnet,
    model_architecture,
    resnet,
    scale_conv_init,
    to_device,
    use_ghost_batchnorm,
    whitening_init,
)
from course_utils.transfer import freeze_backbone, init_from, parameter_groups

#: Columns of the history table, one row per epoch.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "small_crops",
    "epoch_seconds",
    "images_per_second",
)
#: Columns that measure time, so they differ between two otherwise identical runs.
TIMING_COLUMNS = ("epoch_seconds", "images_per_second")
#: mixup or CutMix: ``(images, labels (B,)) -> (mixed images, soft labels (B, num_classes))``.
BatchMixing = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: Batches between two checks for a non-finite loss (each check waits for the device once).
NONFINITE_CHECK_EVERY = 50
#: Fewer CPU threads are chosen only when they are at least this much faster (a smaller gain is
#: within the noise of timing a few steps).
THREADS_MIN_GAIN = 0.10
#: Training steps timed for each candidate thread count, after one warm-up step.
THREADS_TIMED_STEPS = 2
#: Times each candidate is timed, the candidates in turn; each keeps its fastest timing.
THREADS_ROUNDS = 2
#: An epoch that trains this many times slower than the run's fastest epoch gets a warning.
SLOWDOWN_WARNING = 3.0


def build_model(cfg: TrainConfig, num_classes: int = len(CIFAR10_CLASSES)) -> nn.Module:
    """The network ``cfg`` describes: a ResNet of the ImageNet family (depth, width, stage
    multiples, stem), or one of the paper's CIFAR ResNets (``arch="cifar_resnet"``), freshly
    initialised; with ``cfg.init``, pretrained weights everywhere but a new ``num_classes`` head,
    and with ``cfg.freeze_backbone`` only that head trainable (notebook 08)."""
    if cfg.arch == "cifar_resnet":
        model: nn.Module = cifar_resnet(cfg.depth, cfg.shortcut, num_classes=num_classes)
    else:
        model = resnet(
            cfg.depth,
            num_classes=num_classes,
            stem=cfg.stem,
            width=cfg.width,
            stage_multiples=cfg.stage_multiples,
            zero_init_residual=cfg.zero_init_residual,
            shortcut=cfg.shortcut != "none",
        )
    init_from(model, cfg.init)  # nothing for init="scratch"
    if cfg.conv_init_scale != 1.0:  # (TrainConfig allows it only with init="scratch")
        scale_conv_init(model, cfg.conv_init_scale)
    if cfg.ghost_batch:
        use_ghost_batchnorm(model, cfg.ghost_batch)
    if cfg.freeze_bn_scale:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.requires_grad_(False)
    return freeze_backbone(model) if cfg.freeze_backbone else model


def model_from_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The network a checkpoint describes, rebuilt from its saved configuration and loaded with
    its weights once the architecture check passes; and the checkpoint itself (its classes,
    normalization statistics, configuration). The network is built without its ``init`` (the
    checkpoint's own weights replace any pretrained ones). Explained in notebook 06."""
    state = load_checkpoint(path, map_location=map_location)
    cfg = dataclasses.replace(TrainConfig.from_dict(state["config"]), init="scratch")
    model = build_model(cfg, num_classes=len(state["classes"]))
    load_model_state(path, state, model)  # checks the architecture first
    return model, state


# --------------------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule
# --------------------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, or Adam, over the model's trainable parameters.

    With ``cfg.backbone_lr`` below 1, two parameter groups: the head at ``cfg.lr`` and the
    backbone at ``cfg.lr * cfg.backbone_lr`` (:func:`course_utils.transfer.parameter_groups`).
    Explained in notebook 05; the groups in notebook 08.
    """
    groups = parameter_groups(model, cfg.lr, cfg.backbone_lr)
    if cfg.bn_bias_lr != 1.0:
        groups = _batchnorm_shifts_apart(model, groups, cfg.bn_bias_lr, cfg.weight_decay)
    if not cfg.decay_norms:
        groups = _without_decay_on_norms(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _batchnorm_shifts_apart(
    model: nn.Module, groups: list[dict[str, Any]], factor: float, weight_decay: float
) -> list[dict[str, Any]]:
    """``groups`` with every BatchNorm shift (bias) moved to a group of its own, at ``factor``
    times the learning rate and weight decay divided by ``factor``: the same decay per step
    (lr x weight decay), larger steps, as airbench (Jordan 2024) does for its short runs. For the
    ``cpu`` preset at 64 times it cost about 3 points (notebook 07, section 9), so it stays off."""
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    return _split_off(groups, lambda p: id(p) in shifts, "BatchNorm shifts",
                      lambda group: {"lr": group["lr"] * factor,
                                     "weight_decay": weight_decay / factor})  # fmt: skip


def _without_decay_on_norms(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``groups`` with every one-dimensional parameter (BatchNorm scales and shifts, biases) moved
    to a group of its own without weight decay: the "no bias decay" of He et al. (2019, Bag of
    Tricks). On a convolution followed by BatchNorm, decay only shrinks a scale that BatchNorm
    removes again; on BatchNorm's own scales and shifts it shrinks what the layer outputs, the
    residual branch against its shortcut. Notebook 07, section 9, measures it on the ``cpu``
    preset."""
    return _split_off(groups, lambda p: p.ndim <= 1, "no weight decay",
                      lambda group: {"weight_decay": 0.0})  # fmt: skip


def _split_off(
    groups: list[dict[str, Any]],
    chosen: Callable[[nn.Parameter], bool],
    name: str,
    settings: Callable[[dict[str, Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """``groups`` with the parameters ``chosen`` picks moved out of each group into one of their
    own, named after it with ``: name`` added and with ``settings(group)`` in place of the group's
    own; a group left with no parameters is dropped."""
    split = []
    for group in groups:
        rest = [p for p in group["params"] if not chosen(p)]
        moved = [p for p in group["params"] if chosen(p)]
        if rest:
            split.append({**group, "params": rest})
        if moved:
            split.append({**group, **settings(group), "params": moved,
                          "name": f"{group['name']}: {name}"})  # fmt: skip
    return split


class Schedule(NamedTuple):
    """A learning-rate scheduler and when to step it.

    Attributes:
        scheduler: the PyTorch scheduler, or ``None`` for a constant learning rate.
        per_batch: ``True``: call ``scheduler.step()`` after every optimizer step (one-cycle counts
            batches). ``False``: call it once after every epoch (cosine, multistep and step count
            epochs; stepping them every batch would decay the lr hundreds of times too fast).
    """

    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The optimizer steps of a whole run: ``cfg.steps`` if set (a time budget sets it, and the
    last epoch is then cut short), otherwise ``cfg.epochs`` full epochs."""
    full = cfg.epochs * steps_per_epoch
    return full if cfg.steps is None else min(cfg.steps, full)


class WarmupLinearDecay:
    """The learning rate as a fraction of the peak, at each step: a straight line from ``start``
    up to 1 over the first ``warmup`` fraction of ``total`` steps, then a straight line down to
    ``end`` at the last step (Li et al. 2020: for a fixed budget, decaying linearly to about zero
    is robust). For ``LambdaLR``.

    ``total`` may change mid-run (:class:`Pacer` lowers it when the machine slows down and the run
    would overrun its time budget, and raises it when the run goes faster than planned): the rest
    of the line is then steeper or flatter, and still ends at ``end``. A plain object, so
    ``LambdaLR.state_dict`` saves ``total`` with the checkpoint.
    """

    def __init__(self, total: int, warmup: float, start: float, end: float) -> None:
        self.total, self.warmup, self.start, self.end = total, warmup, start, end

    def __call__(self, step: int) -> float:
        warm = max(1, round(self.warmup * self.total))
        if step < warm:
            return self.start + (1 - self.start) * step / warm
        done = min(1.0, (step - warm) / max(1, self.total - 1 - warm))
        return 1 + (self.end - 1) * done


#: Schedules that count optimizer steps: stepped after every batch.
PER_BATCH_SCHEDULES = ("onecycle", "linear", "cyclic", "warmup_cosine")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> Schedule:
    """The learning-rate schedule ``cfg.schedule`` names, and whether it steps per batch or epoch.

    Args:
        optimizer: the optimizer whose learning rate is scheduled.
        cfg: the run's configuration (``schedule``, ``epochs``, ``lr``, the schedule's own fields).
        steps_per_epoch: batches per epoch, ``len(train_loader)``; one-cycle needs the total.

    Returns:
        A :class:`Schedule`: the scheduler (``None`` for ``"none"``) and its ``per_batch`` flag.

    Explained in notebook 05.
    """
    if cfg.schedule in PER_BATCH_SCHEDULES:
        return Schedule(_per_batch_scheduler(optimizer, cfg, steps_per_epoch), per_batch=True)
    if cfg.schedule in PER_EPOCH_SCHEDULES:  # (schedule_every_batch: the mistake, on purpose)
        return Schedule(_per_epoch_scheduler(optimizer, cfg), per_batch=cfg.schedule_every_batch)
    return Schedule(None, per_batch=False)  # "none": a constant learning rate


def _per_epoch_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedules of :data:`PER_EPOCH_SCHEDULES`, whose steps are epochs."""
    lr_sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return lr_sched.CosineAnnealingLR(optimizer, cfg.epochs, cfg.min_lr)
    if cfg.schedule == "multistep":
        late = [m for m in cfg.milestones if m >= cfg.epochs]
        if late:
            warnings.warn(
                f"milestones {late} are not before the last epoch ({cfg.epochs}): the lr never "
                f"decays there. Choose milestones smaller than epochs.",
                stacklevel=3,  # the caller of build_scheduler
            )
        return lr_sched.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    return lr_sched.StepLR(optimizer, cfg.step_size, cfg.gamma)


def _per_batch_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedules that count optimizer steps: one-cycle, linear, cyclic, warm-up + cosine."""
    lr_sched = torch.optim.lr_scheduler
    # Every parameter group peaks at its own lr (fine-tuning gives the backbone a smaller one).
    peaks = [group["lr"] for group in optimizer.param_groups]
    total = total_steps(cfg, steps_per_epoch)
    if cfg.schedule == "onecycle":
        # Rise from lr/div_factor to lr, then fall to nearly 0; both phases follow a half cosine
        # (OneCycleLR's default anneal_strategy="cos"), not a straight line. Momentum is left
        # alone (cycle_momentum=False) so that cfg.momentum means what it says.
        return lr_sched.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total, pct_start=cfg.warmup,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
            cycle_momentum=False,
        )  # fmt: skip
    if cfg.schedule == "linear":
        start = 1 / cfg.div_factor
        shape = WarmupLinearDecay(total, cfg.warmup, start, start / cfg.final_div_factor)
        return lr_sched.LambdaLR(optimizer, shape)
    if cfg.schedule == "cyclic":
        # Triangular cyclical lr (Smith 2017, seed 002's CyclicLR): straight up from
        # lr/div_factor to lr and straight back down, once every cycle_epochs epochs.
        half_cycle = max(1, round(cfg.cycle_epochs * steps_per_epoch / 2))
        return lr_sched.CyclicLR(
            optimizer, [p / cfg.div_factor for p in peaks], peaks, step_size_up=half_cycle,
            mode="triangular", cycle_momentum=False,
        )  # fmt: skip
    # warmup_cosine: a straight line from lr/div_factor up to lr over the warm-up, then a half
    # cosine down to min_lr (Goyal et al. 2017's warm-up; Loshchilov & Hutter 2017's cosine).
    warm = max(1, round(cfg.warmup * total))
    return lr_sched.SequentialLR(
        optimizer,
        [
            lr_sched.LinearLR(optimizer, 1 / cfg.div_factor, 1.0, total_iters=warm),
            lr_sched.CosineAnnealingLR(optimizer, max(1, total - warm), cfg.min_lr),
        ],
        milestones=[warm],
    )


def learning_rates(cfg: TrainConfig, steps_per_epoch: int) -> np.ndarray:
    """The learning rate of every batch of a run with ``cfg``'s schedule, ``(total_steps,)``.

    Nothing is trained: a stand-in parameter and an optimizer are stepped through the run, and the
    scheduler is stepped as :func:`build_scheduler` says (per batch or per epoch; with
    ``cfg.schedule_every_batch``, the classic bug: a per-epoch schedule stepped after every batch).
    Explained in notebook 05; notebook 07 plots the schedules it compares.
    """
    stand_in = torch.zeros(1, requires_grad=True)  # one dummy parameter: only the lr matters here
    optimizer = torch.optim.SGD([stand_in], lr=cfg.lr)
    scheduler, per_batch = build_scheduler(optimizer, cfg, steps_per_epoch)
    lrs: list[float] = []
    total = total_steps(cfg, steps_per_epoch)
    for _epoch in range(math.ceil(total / steps_per_epoch)):
        for _batch in range(min(steps_per_epoch, total - len(lrs))):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # no gradient, so nothing changes; schedulers expect a step first
            if scheduler is not None and per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
    return np.array(lrs)


def build_mixing(cfg: TrainConfig, num_classes: int) -> BatchMixing | None:
    """mixup and CutMix on whole batches (torchvision's ``v2.MixUp`` and ``v2.CutMix``), or None.

    mixup (Zhang et al. 2018) blends two images and their labels with one weight drawn from
    Beta(a, a); CutMix (Yun et al. 2019) pastes a patch of one image into another and mixes the
    labels by area. Either returns soft labels ``(B, num_classes)`` that sum to one per image. With
    both on, each batch gets one of the two, chosen at random. Explained and measured in
    notebook 07 (section 6).
    """
    mixes = []
    if cfg.mixup > 0:
        mixes.append(v2.MixUp(alpha=cfg.mixup, num_classes=num_classes))
    if cfg.cutmix > 0:
        mixes.append(v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class AverageDecay:
    """The decay of the weight average at each update: ``decay`` throughout, or with ``ramp``,
    ``decay * (step / total) ** 3``: from 0 at the start up to ``decay`` at the run's last step.

    The ramp is airbench's schedule for its Lookahead (Jordan 2024). Early on, the weights still
    travel far and an average would only lag behind them, so the average simply follows them; near
    the end, where they hover around a minimum, it smooths out their noise. ``total`` is the run's
    planned number of steps (``fit`` keeps it equal to the :class:`Pacer`'s plan). An instance is
    the ``multi_avg_fn`` of the :class:`AveragedModel` that :func:`build_ema` makes; the step is
    the average's own count of updates, so a resumed run picks the ramp up where it was.
    """

    def __init__(self, decay: float, *, ramp: bool = False, total: int = 1) -> None:
        self.decay, self.ramp, self.total = decay, ramp, total

    def at(self, step: int) -> float:
        """The decay of the update that follows ``step`` earlier ones (the first copies)."""
        if not self.ramp:
            return self.decay
        return self.decay * min(1.0, step / max(1, self.total)) ** 3

    def __call__(self, averages: list[torch.Tensor], weights: list[torch.Tensor],
                 n_averaged: torch.Tensor | int) -> None:  # fmt: skip
        """``average = decay * average + (1 - decay) * weights``, with this update's decay."""
        decay = self.at(int(n_averaged)) if self.ramp else self.decay  # int(): a GPU sync, ramp only
        get_ema_multi_avg_fn(decay)(averages, weights, n_averaged)


def build_ema(model: nn.Module, decay: float, *, ramp: bool = False) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics, or None.

    After every step, ``average = decay * average + (1 - decay) * weights``: the average smooths
    out the noise of the last steps. (Polyak & Juditsky 1992 average all the iterates uniformly;
    this exponential version forgets old ones.) With ``ramp``, the decay grows over the run
    (:class:`AverageDecay`). ``fit`` validates, keeps and tests the average. Explained, with a
    picture, in notebook 07 (section 9), whose screens measured Lookahead built on it
    (``lookahead``) and, with the ramp, the average alone.
    """
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=AverageDecay(decay, ramp=ramp), use_buffers=True)


@torch.no_grad()
def copy_average_into(model: nn.Module, ema: AveragedModel) -> None:
    """Lookahead's step back: the network's weights and BatchNorm statistics become the average's.

    Close to airbench's variant of Lookahead when the average's decay ramps up (``ema_ramp``):
    airbench moves its slow weights once every 5 steps, by a decay that grows as the cube of the
    run done, where this average follows every step. Zhang et al. 2019 (Lookahead itself) move the
    slow weights once every K steps by a constant fraction."""
    average = itertools.chain(ema.module.parameters(), ema.module.buffers())
    current = itertools.chain(model.parameters(), model.buffers())
    for slow, fast in zip(average, current, strict=True):
        fast.copy_(slow)


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """The loss became ``inf`` or ``nan``: training diverged."""


class EpochStats(NamedTuple):
    """What one pass over a loader measured."""

    loss: float  # mean loss per image
    accuracy: float  # fraction of images classified correctly, in [0, 1]
    images: int  # images seen
    seconds: float  # wall-clock time of the pass


def _raise_non_finite(loss_sum: torch.Tensor, batches: int) -> None:
    if not torch.isfinite(loss_sum):  # one sync with the device
        raise NonFiniteLossError(
            f"The training loss became {loss_sum.item()} within the first {batches} batches of "
            f"this epoch: training diverged. Try a lower learning rate (--lr), a longer warm-up, "
            f"gradient-friendly settings (label smoothing, weight decay), or turn off mixed "
            f"precision (--no-amp)."
        )


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes: its device, the memory layout of the model and its batches,
    and the precision of the forward pass. Decided once (:func:`placement_for`), then passed to
    every loop, so training and validation cannot disagree.

    Attributes:
        device: where the model and every batch live.
        memory_format: ``torch.channels_last`` (NHWC) or ``torch.contiguous_format``, as
            ``models.memory_format_for`` chose for this model on this device.
        amp: run the forward pass in mixed precision, in ``amp_dtype``.
        amp_dtype: ``config.autocast_dtype(device)``: float16 on CUDA, bfloat16 elsewhere.
        scaler: float16 needs its loss scaled up so small gradients do not underflow to 0; the
            scaler unscales before the step and skips a step whose gradients overflowed. Enabled
            with ``amp`` on CUDA only; disabled (float32, bfloat16), it passes everything through.
            The object stays the same, its state changes (``fit`` saves it in ``last.pt``).
    """

    device: torch.device
    memory_format: torch.memory_format
    amp: bool
    amp_dtype: torch.dtype
    scaler: torch.amp.GradScaler

    @property
    def channels_last(self) -> bool:
        """Whether the model runs in NHWC layout."""
        return self.memory_format == torch.channels_last

    def autocast(self) -> torch.autocast:
        """The forward pass's precision: ``amp_dtype`` with ``amp``, float32 without."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)


def placement_for(
    model: nn.Module, device: torch.device | str, *, amp: bool = False, channels_last: bool = True
) -> Placement:
    """Decide where and how ``model`` computes, and move it there: to ``device``, in the layout
    ``models.memory_format_for`` picks (NHWC when ``channels_last`` and safe), with mixed
    precision if ``amp``. ``fit`` calls it once per run. Explained in notebook 05."""
    device = torch.device(device)
    memory_format = to_device(model, device, channels_last=channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    return Placement(device, memory_format, amp, autocast_dtype(device), scaler)


@dataclass(frozen=True)
class StepExtras:
    """The recipe's optional parts of a training step (notebook 07); none by default.

    Attributes:
        mix: mixup or CutMix (:func:`build_mixing`), before the forward pass: mixes the batch and
            returns soft targets ``(B, num_classes)``. Accuracy still counts the true labels.
        ema: an average of the weights (:func:`build_ema`), updated after every step.
        lookahead: with ``ema``, copy the average back into the model after every
            ``lookahead``-th update (0: never): Lookahead (Zhang et al. 2019), in airbench's
            variant when the average's decay ramps up (:class:`AverageDecay`).
    """

    mix: BatchMixing | None = None
    ema: AveragedModel | None = None
    lookahead: int = 0

    def update_average(self, model: nn.Module) -> None:
        """After a step: average ``model`` in, and at every ``lookahead``-th update copy the
        average back into it (:func:`copy_average_into`). Nothing without an average."""
        if self.ema is None:
            return
        self.ema.update_parameters(model)
        if self.lookahead and int(self.ema.n_averaged) % self.lookahead == 0:
            copy_average_into(model, self.ema)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str | Placement,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    channels_last: bool = True,
    extras: StepExtras = StepExtras(),
) -> EpochStats:
    """One pass over the training data: for every batch, zero_grad, forward, loss, backward, step.

    The running loss and the number of correct predictions are summed *on the device*; reading a
    number back (``.item()``) makes the CPU wait for the GPU, so it happens once per epoch (plus one
    cheap non-finite check every ``NONFINITE_CHECK_EVERY`` batches), not once per batch.

    Args:
        model: put in training mode here (BatchNorm uses and updates batch statistics).
        loader: yields ``(images (B, 3, H, W), labels (B,))``.
        device: where to train, in float32, in NHWC layout where safe (unless ``channels_last`` is
            False); or the :class:`Placement` that ``fit`` decided, mixed precision included.
        scheduler: a *per-batch* scheduler (one-cycle), stepped after every optimizer step. Leave
            ``None`` for per-epoch schedules and step those after the epoch (see :class:`Schedule`).
        extras: mixup or CutMix, the weight average and Lookahead (:class:`StepExtras`).

    Returns the epoch's mean loss and accuracy per image, its image count and time; raises
    :class:`NonFiniteLossError` if the loss becomes ``inf`` or ``nan``. Explained in notebook 05.
    """
    place = device if isinstance(device, Placement) else placement_for(model, device,
                                                                      channels_last=channels_last)
    model.train()
    start, images_seen = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=place.device)  # summed over images, stays on the device
    correct = torch.zeros((), dtype=torch.int64, device=place.device)
    for step, (images, labels) in enumerate(loader, start=1):
        images = images.to(place.device, non_blocking=True, memory_format=place.memory_format)
        labels = labels.to(place.device, non_blocking=True)  # (B,); images (B, 3, H, W)
        images, targets = (images, labels) if extras.mix is None else extras.mix(images, labels)

        optimizer.zero_grad(set_to_none=True)
        with place.autocast():  # mixed precision, if the placement says so
            logits = model(images)  # (B, num_classes)
            loss = criterion(logits, targets)  # mean over the batch
        place.scaler.scale(loss).backward()  # float16: scaled, see Placement.scaler
        place.scaler.step(optimizer)
        place.scaler.update()
        if scheduler is not None:
            scheduler.step()
        extras.update_average(model)  # the weight average and Lookahead, if any
        loss_sum += loss.detach().float() * labels.size(0)
        correct += (logits.argmax(dim=1) == labels).sum()
        images_seen += labels.size(0)
        if step % NONFINITE_CHECK_EVERY == 0:
            _raise_non_finite(loss_sum, step)
    if images_seen == 0:
        raise ValueError("the training loader yielded no batches")
    _raise_non_finite(loss_sum, step)
    return EpochStats(loss_sum.item() / images_seen, correct.item() / images_seen, images_seen,
                      time.perf_counter() - start)  # fmt: skip


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str | Placement,
    *,
    channels_last: bool = True,
    amp: bool = False,
    tta: bool = False,
) -> EpochStats:
    """Mean cross-entropy and accuracy of ``model`` on ``loader``, without changing the model.

    A thin summary of :func:`course_utils.evaluation.predict`, the course's one loop that runs a
    model in evaluation mode: validation during training and the final test go through the same
    code, so they cannot drift apart. The loss is plain cross-entropy (no label smoothing), so
    runs with different training losses stay comparable. Under torchrun, ``loader`` holds this
    process's slice of the split and ``predict`` gathers the slices, so every process gets the
    same numbers. ``device`` may be the :class:`Placement` ``fit`` decided: its layout and precision
    then replace ``channels_last`` and ``amp``.

    Explained in notebook 05.
    """
    if isinstance(device, Placement):
        device, channels_last, amp = device.device, device.channels_last, device.amp
    start = time.perf_counter()
    pred = predict(model, loader, device, channels_last=channels_last, amp=amp, tta=tta)
    return EpochStats(pred.loss, pred.accuracy, len(pred), time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# CPU threads: how many to use, measured
# --------------------------------------------------------------------------------------------------


class ThreadChoice(NamedTuple):
    """The thread count :func:`pick_threads` chose, and what it measured."""

    threads: int
    seconds_per_step: dict[int, float]  # candidate thread count -> seconds per training step


def thread_candidates(threads: int) -> list[int]:
    """The counts worth timing, from ``threads`` (PyTorch's default: one per core) down to 1."""
    return sorted({threads, threads - 1, threads // 2, 1} - {0}, reverse=True)


def pick_threads(
    seconds_per_step: Callable[[int], float],
    candidates: Sequence[int],
    rounds: int = THREADS_ROUNDS,
) -> ThreadChoice:
    """Time a training step at each candidate count, the candidates in turn, ``rounds`` times
    over, and keep each count's fastest time: a moment's stall (another program starting, say)
    slows one timing, while a core kept busy slows them all. Keep the first candidate (the most
    threads) unless another is at least ``THREADS_MIN_GAIN`` faster."""
    times: dict[int, float] = {}
    for _ in range(rounds):
        for threads in candidates:
            times[threads] = min(seconds_per_step(threads), times.get(threads, math.inf))
    first, fastest = candidates[0], min(times, key=times.__getitem__)
    chosen = fastest if times[fastest] < (1 - THREADS_MIN_GAIN) * times[first] else first
    return ThreadChoice(chosen, times)


def choose_threads(cfg: TrainConfig, model: nn.Module, device: torch.device | str) -> TrainConfig:
    """``cfg`` with ``threads`` fixed: as given, or the fastest count measured on this machine.

    PyTorch runs each operation on one thread per core, and the threads wait for each other at
    the end of it. When another program keeps one core busy, the thread there gets only part of
    its time and every operation waits for it: fewer threads than cores are then faster (one
    thread trained about twice as fast as two beside one busy program on 2 cores;
    ``benchmarks/busy_machine.py`` measures it). So with ``threads=0`` a few
    training steps of a throwaway copy of ``model``, on a batch of random 32x32 images, are timed
    at each of :func:`thread_candidates` (the run's own loader is not touched), and the count is
    saved in the run's configuration, so that ``--resume`` computes with the same one. On a GPU,
    and under torchrun (which gives each process one thread), nothing is measured. Explained in
    notebook 05.
    """
    device = torch.device(device)
    if device.type != "cpu" or world_size() > 1 or cfg.threads:
        return cfg
    default = torch.get_num_threads()
    if default == 1:
        return dataclasses.replace(cfg, threads=1)

    def seconds_per_step(threads: int) -> float:
        torch.set_num_threads(threads)
        trial = copy.deepcopy(model)  # each count starts from the same weights
        optimizer = build_optimizer(trial, cfg)
        place = placement_for(trial, device, amp=cfg.amp, channels_last=cfg.channels_last)
        step = lambda n: train_one_epoch(trial, [batch] * n, nn.CrossEntropyLoss(), optimizer,
                                         place)  # fmt: skip
        step(1)  # warm-up: a new thread count starts its threads and picks its kernels
        return step(THREADS_TIMED_STEPS).seconds / THREADS_TIMED_STEPS

    with torch.random.fork_rng(devices=[]):  # measuring must not change the run that follows
        images = torch.randn(cfg.batch_size, 3, 32, 32)  # (B, 3, 32, 32)
        batch = (images, torch.zeros(cfg.batch_size, dtype=torch.int64))  # class 0: any head has it
        try:
            choice = pick_threads(seconds_per_step, thread_candidates(default))
        finally:
            torch.set_num_threads(default)
    if choice.threads != default:
        times = ", ".join(
            f"{n} thread{'s' if n > 1 else ''} {s:.2f} s" for n, s in choice.seconds_per_step.items()
        )
        print(f"CPU threads: {choice.threads} of {default}, the fastest here (seconds per training "
              f"step: {times}). Another program is probably keeping a core busy.")  # fmt: skip
    return dataclasses.replace(cfg, threads=choice.threads)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run the block with PyTorch on ``threads`` CPU threads (0: as it is), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------
# Early stopping
# --------------------------------------------------------------------------------------------------


class EarlyStopping:
    """Stop when a validation metric has not improved for ``patience`` epochs.

    Watch the *validation* split: choosing when to stop (and which checkpoint to keep) by the test
    score leaks the test set into training, and the test score is then no longer an honest estimate.

    Args:
        patience: epochs without improvement before :attr:`should_stop` turns true; ``None`` never
            stops (the best epoch is still tracked).
        min_delta: an improvement must beat the best by more than this (in the metric's units).
        mode: ``"max"`` for accuracy, ``"min"`` for loss.

    Call :meth:`step` once per epoch with the new value; it returns whether the value improved
    (the moment to save the best checkpoint). Explained in notebook 05.
    """

    def __init__(
        self, patience: int | None = 10, min_delta: float = 0.0, mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1 (or None), got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: float | None = None  # best value seen so far
        self.best_epoch = 0  # 1-based number of the step that gave it (0: none yet)
        self.epochs = 0  # steps taken
        self.wait = 0  # steps since the last improvement

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def step(self, value: float) -> bool:
        """Record one epoch's metric; returns whether it improved on the best."""
        value = float(value)
        self.epochs += 1
        improved = self.is_improvement(value)
        if improved:
            self.best, self.best_epoch, self.wait = value, self.epochs, 0
        else:
            self.wait += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without improvement."""
        return self.patience is not None and self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The state as plain values, to store in a checkpoint."""
        return {
            k: getattr(self, k)
            for k in ("patience", "min_delta", "mode", "best", "best_epoch", "epochs", "wait")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved with :meth:`state_dict`."""
        for key, value in state.items():
            setattr(self, key, value)


# --------------------------------------------------------------------------------------------------
# fit: the whole run
# --------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    history: pd.DataFrame  # one row per epoch, columns HISTORY_COLUMNS
    best_checkpoint: Path  # weights of the best epoch on the validation metric
    last_checkpoint: Path  # full state after the last epoch, to resume from
    best_epoch: int  # 1-based epoch of the best validation metric
    best_score: float | None  # that metric's value
    stopped_early: bool  # early stopping ended the run
    config: TrainConfig  # the run's configuration, with the steps it ran if a deadline changed them
    epochs_run: int = field(init=False)  # epochs in the history (including resumed ones)

    def __post_init__(self) -> None:
        self.epochs_run = len(self.history)


#: Configuration fields that may differ between a run and its resumption (they do not change the
#: arithmetic of training; ``threads`` does, so a resumed run takes the count saved in last.pt).
RESUME_FREE_FIELDS = ("num_workers", "eval_batch_size", "threads")


@dataclass(frozen=True)
class FitOptions:
    """:func:`fit`'s optional settings, passed to it by name (``fit(..., resume=path)``).

    Attributes:
        resume: a ``last.pt`` to continue from, exactly where it stopped.
        classes: the class names, stored in the checkpoints (mixup and CutMix make soft targets
            over this many).
        mean, std: the normalization statistics, stored in the checkpoints: with ``classes``,
            what it takes to use the model later on new images.
        stop_after_epoch: stop after this (1-based) epoch as if interrupted; ``resume=`` goes on.
        deadline: a ``time.perf_counter()`` reading by which training and validation must end
            (``machine.fit_to_budget`` gives it). If the machine slows down and the planned steps
            would not fit, fewer are run, and a ``linear`` schedule is shortened to match; if it
            speeds up, a ``linear`` run gets more (:class:`Pacer`).
    """

    resume: str | os.PathLike[str] | None = None
    classes: Sequence[str] = CIFAR10_CLASSES
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    stop_after_epoch: int | None = None
    deadline: float | None = None


@dataclass
class _Run:
    """The objects of a run whose state ``last.pt`` saves and ``resume`` restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    placement: Placement  # decided once by fit; its gradient scaler has state
    stopper: EarlyStopping
    criterion: nn.Module
    mix: BatchMixing | None
    ema: AveragedModel | None
    trained: nn.Module  # the module the loop calls: under torchrun, model in DistributedDataParallel
    history: dict[str, list] = field(default_factory=lambda: {c: [] for c in HISTORY_COLUMNS})

    @property
    def eval_model(self) -> nn.Module:
        """What is validated, kept as best.pt and tested: the average of the weights, if any."""
        return self.model if self.ema is None else self.ema.module


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    device: torch.device | str,
    *,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    **options: Any,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs (or ``cfg.steps`` steps), keeping the best (on validation)
    and the last checkpoints.

    Every epoch: train, step a per-epoch schedule, evaluate on the *validation* loader, save
    ``best.pt`` if the monitored metric improved, then ``last.pt`` (the full state, to resume from)
    and ``history.csv``. The test set is not touched here. Under torchrun (see ``distributed``)
    rank 0 alone writes them.

    Args:
        train_loader: reseeded before each epoch (``data.set_loader_epoch``), so epoch ``e``'s
            shuffle and augmentation depend only on ``(cfg.seed, e)``.
        options: any of :class:`FitOptions`, by name: ``resume``, ``classes``, ``mean``, ``std``,
            ``stop_after_epoch``, ``deadline``.

    Returns a :class:`FitResult`; the model keeps the *last* epoch's weights. A diverged loss raises
    :class:`NonFiniteLossError`; ``last.pt`` and ``best.pt`` keep the last good state. Notebook 05.
    """
    opts, out = FitOptions(**options), Path(out_dir)
    if cfg.small_crops and not hasattr(train_loader, "use_small_crops"):
        raise ValueError(
            "small_crops (progressive resizing) needs a data.TensorLoader for training (as "
            "data.build_loaders makes it); with another loader, set small_crops=0"
        )
    out.mkdir(parents=True, exist_ok=True)
    if cfg.whiten_stem and opts.resume is None:
        _whiten_stem(model, train_loader)
    # Where and how the whole run computes (device, memory layout, precision): decided once.
    place = placement_for(model, device, amp=cfg.amp, channels_last=cfg.channels_last)
    run = _start_run(model, cfg, place, len(train_loader), num_classes=len(opts.classes))
    epoch, cfg = (0, cfg) if opts.resume is None else _resume(Path(opts.resume), run, cfg)
    cfg = choose_threads(cfg, model, place.device)  # a resumed run keeps the count it chose
    metadata = _describe_run(model, cfg, opts)  # saved in both checkpoints
    pacer = Pacer(cfg, len(train_loader), opts.deadline, run.schedule.scheduler)
    bar = tqdm(total=pacer.epochs, initial=epoch, desc="epochs", disable=not progress)
    with cpu_threads(cfg.threads):
        while epoch < pacer.epochs and not run.stopper.should_stop:  # (resumed: may have stopped)
            epoch += 1
            set_loader_epoch(train_loader, cfg.seed, epoch)
            small_crops = pacer.small_crops(epoch, run.history["small_crops"])
            if cfg.small_crops:  # progressive resizing (the tensor loader)
                train_loader.use_small_crops(small_crops, scaled=cfg.small_scaled)
            if run.ema is not None:  # the average's decay ramps over the steps planned now
                run.ema.multi_avg_fn.total = pacer.total
            try:
                row = _epoch(run, epoch, pacer.batches(train_loader, epoch), val_loader, cfg,
                             progress=progress)  # fmt: skip
            except NonFiniteLossError as exc:
                kept = kept_message(out / "last.pt", out / "best.pt")
                raise NonFiniteLossError(f"Epoch {epoch}: {exc} {kept}") from None
            row["small_crops"] = small_crops
            pacer.validated(row["val_seconds"])
            cfg = _follow_plan(cfg, pacer, metadata)
            _save_epoch(out, run, row, metadata, improved=run.stopper.step(row[cfg.monitor]))
            _warn_if_slowed_down(run.history["images_per_second"])
            _show_epoch(bar, pacer.epochs, row)
            if epoch == opts.stop_after_epoch:
                break
    bar.close()
    barrier()  # under torchrun, wait until rank 0 has written the last files
    return _fit_result(run, out, cfg)


def _show_epoch(bar: tqdm, epochs: int, row: dict[str, float]) -> None:
    """The epochs bar after an epoch: one more done, out of ``epochs`` (a deadline can change
    them), and the epoch's accuracies."""
    bar.total = epochs
    bar.update()
    bar.set_postfix(train_acc=f"{row['train_acc']:.3f}", val_acc=f"{row['val_acc']:.3f}")


def _fit_result(run: _Run, out: Path, cfg: TrainConfig) -> FitResult:
    """What :func:`fit` returns at the end of a run in the folder ``out``."""
    return FitResult(
        history=pd.DataFrame(run.history, columns=list(HISTORY_COLUMNS)),
        best_checkpoint=out / "best.pt",
        last_checkpoint=out / "last.pt",
        best_epoch=run.stopper.best_epoch,
        best_score=run.stopper.best,
        stopped_early=run.stopper.should_stop,
        config=cfg,
    )


#: Training images whose patches set the first convolution (``whiten_stem``).
WHITENING_IMAGES = 5_000


def _whiten_stem(model: nn.Module, train_loader: Iterable[tuple[torch.Tensor, Any]]) -> None:
    """``models.whitening_init`` on ``model.conv1``, from the first training batches (their
    order is redrawn before the first epoch, so this changes nothing else)."""
    images, count = [], 0
    for batch, _ in train_loader:
        images.append(batch.float().cpu())
        count += len(batch)
        if count >= WHITENING_IMAGES:
            break
    whitening_init(model.conv1, torch.cat(images)[:WHITENING_IMAGES])


#: Batches between two checks of a run's pace against its deadline.
PACE_CHECK_EVERY = 10


class Pacer:
    """Serves the steps of a run's plan, epoch by epoch, and keeps the run on its deadline.

    Every ``PACE_CHECK_EVERY`` batches it compares the pace so far with the time left: when the
    planned steps (and a validation pass per epoch left) would end after ``deadline``, it lowers
    ``total`` to what still fits. A ``linear`` schedule (:class:`WarmupLinearDecay`) is shortened
    with it, so the learning rate still reaches its end; other schedules are cut where the time
    runs out. With a ``linear`` schedule (or none), a run that goes faster than planned also gets
    the steps that now fit. Without a deadline it only stops the last epoch at ``total`` steps.

    With progressive resizing (``cfg.small_crops``) it also says which epochs train on small crops
    (:meth:`small_crops`), and counts their steps at ``SMALL_CROP_COST`` of a whole-image step.
    """

    def __init__(
        self, cfg: TrainConfig, steps_per_epoch: int, deadline: float | None, scheduler: Any
    ) -> None:
        self.total, self.per_epoch = total_steps(cfg, steps_per_epoch), steps_per_epoch
        self.deadline = deadline
        lambdas = getattr(scheduler, "lr_lambdas", [])
        self.shapes = [f for f in lambdas if isinstance(f, WarmupLinearDecay)]
        only_lines = bool(self.shapes) and len(self.shapes) == len(lambdas)
        self.can_grow = scheduler is None or only_lines
        self.val_seconds: float | None = None  # one validation pass, measured after the first
        self.small_fraction, self.in_small_crops = cfg.small_crops, False

    @property
    def epochs(self) -> int:
        """Epochs begun by the plan: the last may be partial."""
        return math.ceil(self.total / self.per_epoch)

    def small_crops(self, epoch: int, earlier: Sequence[bool]) -> bool:
        """Whether 1-based ``epoch`` trains on small crops: it starts within the first
        ``cfg.small_crops`` of the planned steps, and no epoch before it trained on whole images
        (``earlier``: the history's ``small_crops`` column, so a plan that grows never goes back)."""
        start = (epoch - 1) * self.per_epoch
        self.in_small_crops = all(earlier) and start < self.small_fraction * self.total
        return self.in_small_crops

    def validated(self, seconds: float) -> None:
        """Record how long the last validation pass took."""
        self.val_seconds = seconds

    def batches(self, loader: Iterable[Any], epoch: int) -> Iterator[Any]:
        """The batches of 1-based ``epoch`` that the plan still has room for."""
        first, start = (epoch - 1) * self.per_epoch, time.perf_counter()
        for i, batch in enumerate(loader):
            if self.deadline is not None and i and i % PACE_CHECK_EVERY == 0:
                self._replan(first + i, (time.perf_counter() - start) / i, epoch)
            if first + i >= self.total:
                return
            yield batch

    def _replan(self, done: int, seconds_per_step: float, epoch: int) -> None:
        # Before the first validation, guess it from the training pace (a forward pass over
        # a tenth of the training split is about a thirtieth of an epoch: generous).
        val = self.val_seconds
        if val is None:
            val = self.per_epoch * seconds_per_step / 30
        whole = seconds_per_step / (SMALL_CROP_COST if self.in_small_crops else 1)
        fits = self.total
        for _ in range(2):  # the number of validation passes depends on the steps, and back
            validations = math.ceil(fits / self.per_epoch) - epoch + 1  # this epoch's, and later
            left = self.deadline - time.perf_counter() - validations * val
            fits = done + self._steps_in(left, done, fits, whole)
        fits = from_main_process(fits)  # torchrun: every process takes the same number of steps
        if fits < self.total or (fits > self.total and self.can_grow):
            self.total = fits
            for shape in self.shapes:
                shape.total = fits

    def _steps_in(self, seconds: float, done: int, total: int, whole: float) -> int:
        """Steps after the ``done`` that fit in ``seconds``, at ``whole`` seconds a whole-image step;
        while this epoch trains on small crops, the plan's (of ``total`` steps) small-crop epochs
        still to come are cheaper."""
        if not self.in_small_crops:
            return max(0, math.floor(seconds / whole))
        small_epochs = math.ceil(self.small_fraction * total / self.per_epoch)
        small, cheap = max(0, small_epochs * self.per_epoch - done), whole * SMALL_CROP_COST
        if seconds <= small * cheap:
            return max(0, math.floor(seconds / cheap))
        return small + math.floor((seconds - small * cheap) / whole)


def _follow_plan(cfg: TrainConfig, pacer: Pacer, metadata: dict[str, Any]) -> TrainConfig:
    """``cfg`` with the steps the pacer now plans (saved in the checkpoints' metadata too, so
    that ``--resume`` follows the new plan); says so when they changed."""
    planned = total_steps(cfg, pacer.per_epoch)
    if pacer.total == planned:
        return cfg
    pace = "slower" if pacer.total < planned else "faster"
    print(f"\nTraining runs {pace} than measured at the start: {pacer.total} steps in all "
          f"instead of {planned}, to end on time.")  # fmt: skip
    cfg = dataclasses.replace(cfg, steps=pacer.total, epochs=pacer.epochs)
    metadata["config"] = cfg.to_dict()
    return cfg


def _start_run(
    model: nn.Module, cfg: TrainConfig, place: Placement, steps_per_epoch: int, num_classes: int
) -> _Run:
    """A fresh optimizer, schedule, stopper, loss, batch mixing and weight average for ``model``
    (already placed: :func:`placement_for`), and its DistributedDataParallel wrapper under
    torchrun."""
    optimizer = build_optimizer(model, cfg)
    return _Run(
        model,
        optimizer,
        build_scheduler(optimizer, cfg, steps_per_epoch),
        place,
        EarlyStopping(cfg.patience, cfg.min_delta, MONITOR_MODES[cfg.monitor]),
        nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        build_mixing(cfg, num_classes),
        build_ema(model, cfg.ema, ramp=cfg.ema_ramp),
        wrap_model(model, place.device, sync_bn=cfg.sync_bn),  # the model itself without torchrun
    )


def _describe_run(model: nn.Module, cfg: TrainConfig, opts: FitOptions) -> dict[str, Any]:
    """What every checkpoint of a run says about it: enough to rebuild and use the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "architecture": model_architecture(model),
        "classes": list(opts.classes),
        "mean": None if opts.mean is None else [float(m) for m in opts.mean],
        "std": None if opts.std is None else [float(s) for s in opts.std],
        "monitor": cfg.monitor,
    }


def _epoch(
    run: _Run,
    epoch: int,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    *,
    progress: bool,
) -> dict[str, float]:
    """One epoch: train, step a per-epoch schedule, validate. Returns the epoch's history row."""
    lr = run.optimizer.param_groups[0]["lr"]  # the lr at the start of the epoch
    start = time.perf_counter()
    scheduler, per_batch = run.schedule
    batches = tqdm(train_loader, desc="train", leave=False, disable=not progress)
    train = train_one_epoch(
        run.trained, batches, run.criterion, run.optimizer, run.placement,
        scheduler=scheduler if per_batch else None,  # one-cycle counts batches
        extras=StepExtras(run.mix, run.ema, cfg.lookahead),
    )  # fmt: skip
    train = _over_all_processes(train)
    if scheduler is not None and not per_batch:
        scheduler.step()  # the other schedules count epochs
    broadcast_buffers(run.model, run.ema)  # torchrun: rank 0's BatchNorm statistics everywhere
    validation_start = time.perf_counter()
    val = evaluate(run.eval_model, val_loader, run.placement, tta=cfg.tta)
    if not math.isfinite(val.loss):
        raise NonFiniteLossError(
            f"the validation loss is {val.loss}: the weights diverged. Try a lower learning "
            f"rate (--lr)."
        )
    return {
        "epoch": epoch,
        "train_loss": train.loss,
        "train_acc": train.accuracy,
        "val_loss": val.loss,
        "val_acc": val.accuracy,
        "lr": lr,
        "epoch_seconds": time.perf_counter() - start,
        "images_per_second": train.images / train.seconds,
        "val_seconds": time.perf_counter() - validation_start,
    }


def _warn_if_slowed_down(images_per_second: list[float]) -> None:
    """Say so when the last epoch trained ``SLOWDOWN_WARNING`` times slower than the fastest."""
    if len(images_per_second) > 1 and images_per_second[-1] * SLOWDOWN_WARNING < max(
        images_per_second
    ):
        warnings.warn(
            f"This epoch trained at {images_per_second[-1]:.0f} images/s, "
            f"{max(images_per_second) / images_per_second[-1]:.0f} times slower than this run's "
            f"fastest epoch: another program is probably using the CPU, and PyTorch's threads "
            f"wait for each other. Close that program, or start the run again on one thread "
            f"(--threads 1, or threads=1 in its TrainConfig).",
            RuntimeWarning,
            stacklevel=3,
        )


def _over_all_processes(stats: EpochStats) -> EpochStats:
    """Under torchrun, an epoch's training loss and accuracy over the images of every process
    (each measured its own share); a single process's numbers unchanged."""
    if world_size() == 1:
        return stats
    loss_sum, correct, images = sum_over_ranks(
        stats.loss * stats.images, stats.accuracy * stats.images, stats.images
    )
    return stats._replace(loss=loss_sum / images, accuracy=correct / images, images=int(images))


def _resume(path: Path, run: _Run, cfg: TrainConfig) -> tuple[int, TrainConfig]:
    """Load ``last.pt`` into ``run`` (weights, optimizer, schedule, scaler, early stopping,
    history, random generators); returns the number of epochs it had finished, and ``cfg`` with
    the thread count the run chose (the same count computes the same numbers)."""
    scaler, device = run.placement.scaler, run.placement.device
    state = load_checkpoint(
        path, run.model, run.optimizer, run.schedule.scheduler, scaler, map_location=device
    )
    # A checkpoint from an older course_utils lacks the newer fields: they take their defaults.
    state["config"] = TrainConfig.from_dict(state["config"]).to_dict()
    check_resumable(path, state, cfg.to_dict(), RESUME_FREE_FIELDS)
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.stopper.load_state_dict(state["early_stopping"])
    saved = state["history"]
    epochs = len(saved["epoch"])  # an older run's history lacks the newer columns: their defaults
    run.history = {c: list(saved.get(c, [False] * epochs)) for c in HISTORY_COLUMNS}
    set_rng_states(state["rng"])
    return int(state["epoch"]), dataclasses.replace(cfg, threads=state["config"]["threads"])


def _save_epoch(
    out: Path, run: _Run, row: dict[str, float], metadata: dict[str, Any], *, improved: bool
) -> None:
    """After an epoch: append its row, save ``best.pt`` if it improved, then ``last.pt`` and
    ``history.csv``. Each file is replaced atomically, so an interruption never breaks one."""
    for column in HISTORY_COLUMNS:
        run.history[column].append(row[column])
    if not is_main_process():  # under torchrun, rank 0 alone writes (every process is the same)
        return
    epoch = int(row["epoch"])
    if improved:  # the weights that were validated: the average, if there is one
        save_checkpoint(out / "best.pt", model=run.eval_model.state_dict(), epoch=epoch,
                        score=run.stopper.best, **metadata)  # fmt: skip
    scheduler = run.schedule.scheduler
    save_checkpoint(
        out / "last.pt",
        model=run.model.state_dict(),
        ema=None if run.ema is None else run.ema.state_dict(),
        optimizer=run.optimizer.state_dict(),
        scheduler=None if scheduler is None else scheduler.state_dict(),
        scaler=run.placement.scaler.state_dict(),
        early_stopping=run.stopper.state_dict(),
        history=run.history,
        rng=rng_states(),
        epoch=epoch,
        **metadata,
    )
    pd.DataFrame(run.history).to_csv(out / "history.csv", index=False)
