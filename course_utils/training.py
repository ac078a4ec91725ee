"""Training: the configuration, the loop, early stopping and checkpoints.

Everything notebook 05 teaches lives here, written as plain functions a student can read top to
bottom:

- :class:`TrainConfig`, every hyperparameter of a run in one dataclass (with units), and
  :data:`PRESETS`, the named recipes (``full`` for a GPU, ``cpu`` for a laptop);
- :func:`build_optimizer` and :func:`build_scheduler` (which says whether its scheduler steps after
  every *batch* or after every *epoch*: getting that wrong is a classic bug);
- :func:`train_one_epoch` and :func:`evaluate`, the loop itself;
- :class:`EarlyStopping`, which watches the *validation* metric, never the test set;
- :func:`save_checkpoint` / :func:`load_checkpoint`, atomic and safe to load;
- :func:`fit`, which ties them together, keeps a best and a last checkpoint, and resumes exactly.

Explained in notebook 05 (training with early stopping).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import random
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm, trange

from course_utils.config import DEFAULT_SEED, SMOKE
from course_utils.data import CIFAR10_CLASSES, set_loader_epoch

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cosine", "multistep", "step", "none")
#: What early stopping and the best checkpoint can watch, and which direction is better.
MONITOR_MODES = {"val_acc": "max", "val_loss": "min"}
#: Columns of the history table, one row per epoch.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_seconds",
    "images_per_second",
)
#: Columns that measure time, so they differ between two otherwise identical runs.
TIMING_COLUMNS = ("epoch_seconds", "images_per_second")
#: Batches between two checks for a non-finite loss (each check waits for the device once).
NONFINITE_CHECK_EVERY = 50
#: Version of the checkpoint layout written by :func:`save_checkpoint` in :func:`fit`.
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every setting of a training run, with its unit. Saved inside each checkpoint.

    The defaults are a sound starting point for ResNet-18 on CIFAR-10; :data:`PRESETS` holds the
    tuned recipes. Explained in notebook 05.
    """

    # Model
    depth: int = 18  # ResNet depth: 18, 34, 50, 101 or 152
    width: int = 64  # channels of the first stage (64 is the paper's ResNet-18)
    stem: str = "cifar"  # "cifar" (3x3 conv, keeps 32x32) or "imagenet" (7x7 conv + max-pool)
    zero_init_residual: bool = False  # start each block as the identity (Goyal et al., 2017)
    # Data
    val_size: int = 5_000  # images held out of the 50,000 training images for validation
    smoke: bool = False  # use the small smoke subset (sizes in config.SMOKE)
    batch_size: int = 128  # training images per optimizer step
    eval_batch_size: int = 500  # images per batch when evaluating (no gradients: can be larger)
    rotation: float = 0.0  # max random rotation in degrees; 0 = crop + flip only
    loader: str = "auto"  # "tensor" (batched augmentation), "torch" (DataLoader), "auto"
    num_workers: int | None = None  # DataLoader worker processes; None = config default
    # Optimization
    epochs: int = 30  # passes over the training split
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam"
    lr: float = 0.1  # learning rate; the peak learning rate for "onecycle"
    momentum: float = 0.9  # SGD momentum (Adam uses its betas instead)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty per step, multiplied by the learning rate
    label_smoothing: float = 0.0  # probability mass spread over all classes (0 = plain CE)
    # Learning-rate schedule
    schedule: str = (
        "onecycle"  # "onecycle" (per batch), "cosine"/"multistep"/"step" (per epoch), "none"
    )
    warmup: float = 0.25  # onecycle: fraction of all steps spent warming up to lr
    div_factor: float = 25.0  # onecycle: the start lr is lr / div_factor
    final_div_factor: float = 1e4  # onecycle: the final lr is start lr / final_div_factor
    min_lr: float = 0.0  # cosine: lr reached at the last epoch
    milestones: tuple[int, ...] = (
        15,
        25,
    )  # multistep: epochs after which lr is multiplied by gamma
    step_size: int = 10  # step: epochs between two multiplications by gamma
    gamma: float = 0.1  # multistep / step: factor applied to the lr at each decay
    # Early stopping and the best checkpoint (on the validation split, never the test set)
    monitor: str = "val_acc"  # "val_acc" (higher is better) or "val_loss" (lower is better)
    patience: int | None = 10  # epochs without improvement before stopping; None = never stop
    min_delta: float = 0.0  # smallest change that counts as an improvement (in monitor's units)
    # Speed and reproducibility
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPUs and tensor cores
    amp: bool = False  # mixed precision: float16 on CUDA, bfloat16 on the CPU
    seed: int = DEFAULT_SEED  # seeds the split, the initial weights, the shuffles and augmentation
    out_dir: str | None = None  # where checkpoints and the history go

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.monitor not in MONITOR_MODES:
            raise ValueError(f"monitor must be one of {tuple(MONITOR_MODES)}, got {self.monitor!r}")
        if self.loader not in ("auto", "tensor", "torch"):
            raise ValueError(f"loader must be 'auto', 'tensor' or 'torch', got {self.loader!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be at least 1, and lr positive")
        self.milestones = tuple(int(m) for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain Python values (lists, numbers, strings), for JSON and
        checkpoints that ``torch.load(weights_only=True)`` can read."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild a configuration saved with :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


#: The named training recipes, in one place. ``python -m course_utils train --preset NAME`` runs
#: one; command-line flags override single fields. Both use a one-cycle schedule, which reaches its
#: small learning rates only at the end: validation accuracy can stall mid-run and then climb, so
#: early stopping is off (``patience=None``) and the best checkpoint is still chosen on validation.
PRESETS: dict[str, TrainConfig] = {
    # The GPU recipe. The paper's ResNet-18 (width 64, CIFAR stem); SGD with Nesterov momentum 0.9
    # and weight decay 5e-4, the usual CIFAR-10 ResNet settings (He et al. 2016, Sec. 4.2, used
    # wd 1e-4 for 160+ epochs; 5e-4 suits short schedules); batch 512 with the peak lr 0.1 at
    # batch 128 scaled linearly to 0.4 (Goyal et al. 2017), reached after a 25% warm-up; a
    # one-cycle schedule (Smith & Topin 2019, "Super-Convergence") and label smoothing 0.1
    # (Szegedy et al. 2016), with which ResNets reach 94% on CIFAR-10 in about 20-30 epochs (Page
    # 2018, "How to train your ResNet": a ResNet-9 at batch 512 in 24 epochs; ResNet-18 is a larger
    # network). Mixed precision and channels_last keep a GPU epoch to seconds. (Not yet measured
    # on a GPU in this repository.)
    "full": TrainConfig(
        width=64,
        epochs=30,
        batch_size=512,
        lr=0.4,
        schedule="onecycle",
        warmup=0.25,
        label_smoothing=0.1,
        patience=None,
        amp=True,
        channels_last=True,
    ),
    # The 2-core CPU recipe: the best accuracy in under 15 minutes. Measured on 2 Xeon cores, idle
    # (the training loop with augmentation, batch 128, channels_last, float32): width 16 trains at
    # about 780 images/s, width 24 at 350, width 32 at 230, width 64 at 67. At equal compute,
    # width 16 for 3 epochs beat width 24 for 2 (74.7% vs 71.6% test accuracy), so the narrow
    # network (700,000 parameters instead of 11 million) with more epochs wins. An epoch takes
    # 60 s (57.5 s of training, 2.5 s of validation); start-up, the test and the figures add 14 s:
    # 14 epochs make about 14 minutes. channels_last was 1.2x faster than NCHW. --amp (bfloat16)
    # trained 1.5x faster on this CPU, which has bfloat16 units (AMX); most laptop CPUs lack them.
    "cpu": TrainConfig(
        width=16,
        epochs=14,
        batch_size=128,
        lr=0.2,
        schedule="onecycle",
        warmup=0.25,
        label_smoothing=0.1,
        patience=None,
        amp=False,
        channels_last=True,
        num_workers=0,  # (DataLoader path only) a worker process would take one of the 2 cores
    ),
}


def smoke_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` shrunk to the smoke-mode sizes of ``config.SMOKE`` (a copy; ``cfg`` is unchanged)."""
    return dataclasses.replace(
        cfg,
        smoke=True,
        epochs=SMOKE.epochs,
        batch_size=SMOKE.batch_size,
        width=SMOKE.width,
        num_workers=SMOKE.num_workers,
    )


def build_model(cfg: TrainConfig, num_classes: int = len(CIFAR10_CLASSES)) -> nn.Module:
    """The ResNet that ``cfg`` describes (depth, width, stem), freshly initialised."""
    from course_utils.models import resnet

    return resnet(
        cfg.depth,
        num_classes=num_classes,
        stem=cfg.stem,
        width=cfg.width,
        zero_init_residual=cfg.zero_init_residual,
    )


# --------------------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule
# --------------------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, or Adam, over all of the model's parameters.

    Explained in notebook 05.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


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
    lr_sched = torch.optim.lr_scheduler
    if cfg.schedule == "onecycle":
        # Warm up linearly from lr/div_factor to lr, then anneal (cosine) to nearly 0. Momentum is
        # left alone (cycle_momentum=False) so that cfg.momentum means what it says.
        scheduler = lr_sched.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=cfg.epochs * steps_per_epoch,
            pct_start=cfg.warmup,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            cycle_momentum=False,
        )
        return Schedule(scheduler, per_batch=True)
    if cfg.schedule == "cosine":
        return Schedule(lr_sched.CosineAnnealingLR(optimizer, cfg.epochs, cfg.min_lr), False)
    if cfg.schedule == "multistep":
        late = [m for m in cfg.milestones if m >= cfg.epochs]
        if late:
            warnings.warn(
                f"milestones {late} are not before the last epoch ({cfg.epochs}): the lr never "
                f"decays there. Choose milestones smaller than epochs.",
                stacklevel=2,
            )
        return Schedule(lr_sched.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma), False)
    if cfg.schedule == "step":
        return Schedule(lr_sched.StepLR(optimizer, cfg.step_size, cfg.gamma), False)
    return Schedule(None, per_batch=False)


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


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision that mixed precision uses on ``device``: float16 on CUDA (with a
    gradient scaler), bfloat16 elsewhere (same range as float32, so no scaler is needed)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _raise_non_finite(loss_sum: torch.Tensor, batches: int) -> None:
    if not torch.isfinite(loss_sum):  # one sync with the device
        raise NonFiniteLossError(
            f"The training loss became {loss_sum.item()} within the first {batches} batches of "
            f"this epoch: training diverged. Try a lower learning rate (--lr), a longer warm-up, "
            f"gradient-friendly settings (label smoothing, weight decay), or turn off mixed "
            f"precision (--no-amp)."
        )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> EpochStats:
    """One pass over the training data: for every batch, zero_grad, forward, loss, backward, step.

    The running loss and the number of correct predictions are summed *on the device*; reading a
    number back (``.item()``) makes the CPU wait for the GPU, so it happens once per epoch (plus one
    cheap non-finite check every ``NONFINITE_CHECK_EVERY`` batches), not once per batch.

    Args:
        model: the network; put in training mode here (BatchNorm uses and updates batch statistics).
        loader: yields ``(images (B, 3, H, W), labels (B,))``.
        criterion: the loss, e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``; must average over
            the batch.
        optimizer: updates the weights.
        device: where the model is.
        scheduler: a *per-batch* scheduler (one-cycle), stepped after every optimizer step. Leave
            ``None`` for per-epoch schedules and step those after the epoch (see :class:`Schedule`).
        scaler: a ``torch.amp.GradScaler`` for float16 mixed precision on CUDA, or ``None``.
        amp: run the forward pass in mixed precision (see :func:`autocast_dtype`).
        channels_last: feed the images in NHWC layout (use with a ``channels_last`` model).
        progress: show a progress bar over the batches.

    Returns:
        The epoch's mean loss and accuracy over all images seen, the image count and the time.

    Raises:
        NonFiniteLossError: the loss became ``inf`` or ``nan``.

    Explained in notebook 05.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)  # summed over images, stays on the device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    images_seen = 0
    batches = tqdm(loader, desc="train", leave=False, disable=not progress)
    for step, (images, labels) in enumerate(batches, start=1):
        images = images.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, H, W)
        labels = labels.to(device, non_blocking=True)  # (B,)

        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
            logits = model(images)  # (B, num_classes)
            loss = criterion(logits, labels)  # mean over the batch
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:  # float16: scale the loss up so small gradients do not underflow to 0
            scaler.scale(loss).backward()
            scaler.step(optimizer)  # unscales, and skips the step if a gradient overflowed
            scaler.update()
        if scheduler is not None:
            scheduler.step()

        loss_sum += loss.detach().float() * labels.size(0)
        correct += (logits.argmax(dim=1) == labels).sum()
        images_seen += labels.size(0)
        if step % NONFINITE_CHECK_EVERY == 0:
            _raise_non_finite(loss_sum, step)
    if images_seen == 0:
        raise ValueError("the training loader yielded no batches")
    _raise_non_finite(loss_sum, step)
    return EpochStats(
        loss_sum.item() / images_seen,
        correct.item() / images_seen,
        images_seen,
        time.perf_counter() - start,
    )


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: nn.Module,
    device: torch.device | str,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> EpochStats:
    """Mean loss and accuracy of ``model`` on ``loader``, without changing the model.

    ``model.eval()`` makes BatchNorm use its running statistics (and stop updating them), and
    ``torch.inference_mode()`` skips building the autograd graph. Forgetting ``model.eval()`` is a
    common bug: the scores then depend on the batch and the "evaluation" changes the model.

    Args:
        model: the network; left in evaluation mode.
        loader: yields ``(images (B, 3, H, W), labels (B,))``, without augmentation.
        criterion: the loss, averaged over the batch (plain cross-entropy to compare runs).
        device: where the model is.
        amp: run in mixed precision (see :func:`autocast_dtype`).
        channels_last: feed the images in NHWC layout.
        progress: show a progress bar over the batches.

    Returns:
        Mean loss and accuracy over all images, the image count and the time.

    Explained in notebook 05.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    images_seen = 0
    with torch.inference_mode():
        for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
                logits = model(images)  # (B, num_classes)
                loss = criterion(logits, labels)
            loss_sum += loss.float() * labels.size(0)
            correct += (logits.argmax(dim=1) == labels).sum()
            images_seen += labels.size(0)
    if images_seen == 0:
        raise ValueError("the evaluation loader yielded no batches")
    return EpochStats(
        loss_sum.item() / images_seen,
        correct.item() / images_seen,
        images_seen,
        time.perf_counter() - start,
    )


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
# Checkpoints
# --------------------------------------------------------------------------------------------------


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, unsafe to load, or does not fit the model."""


class ArchitectureMismatchError(CheckpointError):
    """The checkpoint was saved from a different network than the one it is loaded into."""


def model_architecture(model: nn.Module) -> dict[str, Any]:
    """A short, comparable description of a network, stored in checkpoints.

    For a course ResNet: ``{"name": "resnet18", "width": 16, "stem": "cifar", "num_classes": 10}``;
    for another module: its class name and parameter count.
    """
    from course_utils.models import RESNET_SPECS, ResNet

    if isinstance(model, ResNet):
        block = type(model.layer1[0])
        layers = tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
        depth = next(
            (d for d, (b, n) in RESNET_SPECS.items() if b is block and tuple(n) == layers), None
        )
        name = f"resnet{depth}" if depth else f"resnet({block.__name__}, {list(layers)})"
        if not model.shortcut:
            name = f"plain_{name}"
        return {
            "name": name,
            "width": model.width,
            "stem": model.stem,
            "num_classes": model.fc.out_features,
        }
    return {"name": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}


def describe_architecture(arch: dict[str, Any] | None) -> str:
    """``{"name": "resnet18", "width": 16, ...}`` -> ``"resnet18(width=16, ...)"``."""
    if not arch:
        return "an unknown architecture"
    rest = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "name")
    return f"{arch.get('name', '?')}({rest})"


def save_checkpoint(path: str | os.PathLike[str], **state: Any) -> Path:
    """Save ``state`` to ``path`` atomically: a crash mid-save never leaves a broken file.

    The state is written to a temporary file in the same folder, flushed to disk, and only then
    renamed over ``path`` (``os.replace`` is atomic), so ``path`` always holds either the old or the
    new checkpoint, whole. Store only tensors and plain Python values (dicts, lists, numbers,
    strings), so that :func:`load_checkpoint` can use the safe ``torch.load(weights_only=True)``.

    Returns:
        ``path`` as a ``Path``. Explained in notebook 05.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them visible
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes the file private; give it normal rights
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint safely and load its parts into the objects given.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain Python values; a file that
    holds any other pickled object (which could run arbitrary code when loaded) is refused.

    Args:
        path: the checkpoint file.
        model: load the weights (``state["model"]``) into it, after checking the architecture.
        optimizer, scheduler, scaler: load their states too, when given and present.
        map_location: where to put the tensors (``"cpu"`` works everywhere).

    Returns:
        The whole checkpoint dictionary.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is corrupt, truncated, or holds objects that are unsafe to load.
        ArchitectureMismatchError: ``model`` is not the network the checkpoint was saved from.

    Explained in notebook 05.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Check the path, or train first to create it."
        )
    try:
        with warnings.catch_warnings():
            # A damaged file can look like an unusual pickle protocol; the error below says more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged file can fail in any part of the parser
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise CheckpointError(
                f"Refusing to load {path}: it holds pickled Python objects other than tensors and "
                f"plain values, and loading those can run arbitrary code. Load only checkpoints "
                f"written by save_checkpoint(); if you trust this file, read it yourself with "
                f"torch.load(path, weights_only=False)."
            ) from exc
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated: {exc}). Delete it and use "
            f"another checkpoint (best.pt or last.pt), or train again."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint dictionary."
        )

    if model is not None:
        _load_model_state(path, state, model)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return state


def _load_model_state(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    if "model" not in state:
        raise CheckpointError(f"{path} holds no model weights (no 'model' entry).")
    saved, current = state.get("architecture"), model_architecture(model)
    mismatch = (
        f"{path} holds {describe_architecture(saved)} but the model is "
        f"{describe_architecture(current)}. Build the model the checkpoint describes"
    )
    if saved is not None and saved != current:
        raise ArchitectureMismatchError(f"{mismatch} (see its 'architecture' entry).")
    differences = _state_dict_differences(state["model"], model.state_dict())
    if differences:
        raise ArchitectureMismatchError(f"{mismatch}: {differences}.")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # anything else load_state_dict objects to
        raise ArchitectureMismatchError(f"{mismatch}. PyTorch reports: {str(exc)[:500]}") from exc


def _state_dict_differences(saved: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor]) -> str:
    """A one-line summary of how two state dicts differ ("" if their keys and shapes agree)."""
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in wanted]
    shapes = [
        f"{k}: {tuple(saved[k].shape)} in the file, {tuple(wanted[k].shape)} in the model"
        for k in wanted
        if k in saved and saved[k].shape != wanted[k].shape
    ]
    parts = [
        f"{len(found)} {what} (first: {found[0]})"
        for what, found in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if found
    ]
    return "; ".join(parts)


def rng_states() -> dict[str, Any]:
    """The states of every random generator a run uses (Python, NumPy, PyTorch CPU and CUDA), as
    tensors so that a ``weights_only`` checkpoint can hold them."""
    version, mt_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": torch.tensor(mt_state, dtype=torch.int64),  # 625 words of the Mersenne Twister
        "python_gauss": gauss,  # None or a float
        "python_version": version,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),  # 624 words
        "numpy_pos": int(np_pos),
        "numpy_gauss": (int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generators saved with :func:`rng_states`."""
    mt_state = tuple(int(v) for v in states["python"].tolist())
    random.setstate((states["python_version"], mt_state, states["python_gauss"]))
    np_keys = states["numpy"].numpy().astype(np.uint32)
    has_gauss, gauss = states["numpy_gauss"]
    np.random.set_state(("MT19937", np_keys, states["numpy_pos"], has_gauss, gauss))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


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
    epochs_run: int = field(init=False)  # epochs in the history (including resumed ones)

    def __post_init__(self) -> None:
        self.epochs_run = len(self.history)


#: Configuration fields that may differ between a run and its resumption (they do not change
#: the arithmetic of training).
_RESUME_FREE_FIELDS = ("out_dir", "num_workers", "eval_batch_size")


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    device: torch.device | str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    classes: Sequence[str] = CIFAR10_CLASSES,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs, keeping the best (on validation) and the last checkpoints.

    Every epoch: train, step a per-epoch schedule, evaluate on the *validation* loader, record a
    history row, save ``best.pt`` if the monitored metric improved, save ``last.pt`` (the full
    state: model, optimizer, scheduler, scaler, early stopping, history, random generators,
    configuration), and write ``history.csv``. The test set is not touched here.

    Args:
        model: the network, freshly built (or any state when resuming).
        train_loader: training batches; a ``DataLoader`` from ``data.make_loader`` or a
            ``data.TensorLoader``. It is reseeded before each epoch (``data.set_loader_epoch``), so
            epoch ``e``'s shuffle and augmentation depend only on ``(cfg.seed, e)``.
        val_loader: validation batches, without augmentation.
        cfg: the run's configuration.
        device: where to train.
        out_dir: where to write checkpoints and ``history.csv``; default ``cfg.out_dir``.
        resume: a ``last.pt`` to continue from, exactly where it stopped.
        classes: class names, stored in the checkpoints.
        mean, std: the normalization statistics the loaders use, stored in the checkpoints so the
            model can be used later on new images.
        stop_after_epoch: stop after this (1-based) epoch as if interrupted, e.g. to split a long
            run over several sessions; continue later with ``resume=``.
        progress: show progress bars.

    Returns:
        A :class:`FitResult`. The model is left with the weights of the *last* epoch; load
        ``best_checkpoint`` to use the best one.

    Raises:
        NonFiniteLossError: the loss diverged; ``last.pt`` and ``best.pt`` keep the last good state.

    Explained in notebook 05.
    """
    device = torch.device(device)
    target = out_dir if out_dir is not None else cfg.out_dir
    if not target:
        raise ValueError(
            "fit() needs a folder for its checkpoints: pass out_dir= or set cfg.out_dir"
        )
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out / "best.pt", out / "last.pt"

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg)
    schedule = build_scheduler(optimizer, cfg, steps_per_epoch=len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    train_criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()  # plain cross-entropy, comparable across runs
    stopper = EarlyStopping(cfg.patience, cfg.min_delta, MONITOR_MODES[cfg.monitor])
    history: dict[str, list] = {column: [] for column in HISTORY_COLUMNS}
    start_epoch = 0

    if resume is not None:
        state = load_checkpoint(
            resume, model, optimizer, schedule.scheduler, scaler, map_location=device
        )
        _check_resumable(Path(resume), state, cfg)
        stopper.load_state_dict(state["early_stopping"])
        history = {column: list(values) for column, values in state["history"].items()}
        start_epoch = int(state["epoch"])
        set_rng_states(state["rng"])

    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "architecture": model_architecture(model),
        "classes": list(classes),
        "mean": None if mean is None else [float(m) for m in mean],
        "std": None if std is None else [float(s) for s in std],
        "monitor": cfg.monitor,
    }

    epochs = trange(
        start_epoch + 1,
        cfg.epochs + 1,
        initial=start_epoch,
        total=cfg.epochs,
        desc="epochs",
        disable=not progress,
    )
    for epoch in epochs:
        if stopper.should_stop:  # a resumed run that had already stopped early
            break
        set_loader_epoch(train_loader, cfg.seed, epoch)
        lr = optimizer.param_groups[0]["lr"]  # the lr at the start of the epoch
        epoch_start = time.perf_counter()
        try:
            train = train_one_epoch(
                model,
                train_loader,
                train_criterion,
                optimizer,
                device,
                scheduler=schedule.scheduler if schedule.per_batch else None,
                scaler=scaler,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                progress=progress,
            )
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(
                f"Epoch {epoch}: {exc} {_kept_message(last_path, best_path)}"
            ) from None
        if schedule.scheduler is not None and not schedule.per_batch:
            schedule.scheduler.step()  # per-epoch schedules count epochs
        val = evaluate(model, val_loader, eval_criterion, device, cfg.amp, cfg.channels_last)
        if not math.isfinite(val.loss):
            raise NonFiniteLossError(
                f"Epoch {epoch}: the validation loss is {val.loss}: the weights diverged. Try a "
                f"lower learning rate (--lr). {_kept_message(last_path, best_path)}"
            )

        row = {
            "epoch": epoch,
            "train_loss": train.loss,
            "train_acc": train.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            "lr": lr,
            "epoch_seconds": time.perf_counter() - epoch_start,
            "images_per_second": train.images / train.seconds,
        }
        for column in HISTORY_COLUMNS:
            history[column].append(row[column])

        if stopper.step(row[cfg.monitor]):
            save_checkpoint(
                best_path, model=model.state_dict(), epoch=epoch, score=row[cfg.monitor], **metadata
            )
        save_checkpoint(
            last_path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=None if schedule.scheduler is None else schedule.scheduler.state_dict(),
            scaler=None if scaler is None else scaler.state_dict(),
            early_stopping=stopper.state_dict(),
            history=history,
            rng=rng_states(),
            epoch=epoch,
            **metadata,
        )
        pd.DataFrame(history).to_csv(out / "history.csv", index=False)
        epochs.set_postfix(
            train_acc=f"{train.accuracy:.3f}",
            val_acc=f"{val.accuracy:.3f}",
            val_loss=f"{val.loss:.3f}",
        )
        if stopper.should_stop or epoch == stop_after_epoch:
            break
    epochs.close()

    return FitResult(
        history=pd.DataFrame(history, columns=list(HISTORY_COLUMNS)),
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        best_epoch=stopper.best_epoch,
        best_score=stopper.best,
        stopped_early=stopper.should_stop,
    )


def _kept_message(last_path: Path, best_path: Path) -> str:
    kept = [str(p) for p in (last_path, best_path) if p.is_file()]
    if not kept:
        return "No checkpoint had been saved yet."
    return f"The last good checkpoints are kept unchanged: {', '.join(kept)}."


def _check_resumable(path: Path, state: dict[str, Any], cfg: TrainConfig) -> None:
    """A resumed run must continue with the configuration it started with."""
    missing = [
        k
        for k in ("optimizer", "early_stopping", "history", "rng", "epoch", "config")
        if k not in state
    ]
    if missing:
        raise CheckpointError(
            f"{path} cannot be resumed from: it lacks {missing}. Resume from a last.pt written by "
            f"fit(); best.pt holds only the weights."
        )
    saved, current = state["config"], cfg.to_dict()
    differences = {
        k: (saved.get(k), current[k])
        for k in current
        if k not in _RESUME_FREE_FIELDS and saved.get(k) != current[k]
    }
    if differences:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differences.items())
        raise ValueError(
            f"Cannot resume {path} with a different configuration ({details}). Resume with the "
            f"saved configuration (TrainConfig.from_dict(state['config'])), or start a new run."
        )


# --------------------------------------------------------------------------------------------------
# How long will an epoch take here?
# --------------------------------------------------------------------------------------------------

#: Training images per epoch with the course's 45,000 / 5,000 split.
TRAIN_IMAGES_PER_EPOCH = 45_000


def estimate_epoch_minutes(
    width: int = 64,
    batch_size: int = 128,
    batches: int = 3,
    device: torch.device | str | None = None,
) -> float:
    """Minutes one training epoch of ResNet-18 at ``width`` takes on ``device``, measured.

    Times a few training steps on random images with a throwaway model (after one warm-up step)
    and scales up to 45,000 images. A rough figure, to decide between a GPU and the ``cpu`` preset.

    Explained in notebook 00 (setup).
    """
    from course_utils.config import get_device

    device = get_device() if device is None else torch.device(device)
    cfg = TrainConfig(width=width, batch_size=batch_size, schedule="none")
    with torch.random.fork_rng(devices=[]):  # a measurement must not change the random state
        model = build_model(cfg).to(device, memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg)
        images = torch.randn(batch_size, 3, 32, 32)
        labels = torch.randint(0, len(CIFAR10_CLASSES), (batch_size,))
        criterion = nn.CrossEntropyLoss()
        train_one_epoch(model, [(images, labels)], criterion, optimizer, device, channels_last=True)
        timed = train_one_epoch(
            model, [(images, labels)] * batches, criterion, optimizer, device, channels_last=True
        )
    return timed.seconds / timed.images * TRAIN_IMAGES_PER_EPOCH / 60


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
