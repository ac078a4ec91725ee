"""One training run, start to finish: the pipeline behind ``python -m course_utils train``.

:func:`train_and_report` loads the data, builds the model, fits it (within a time budget if the
configuration has one), tests the best checkpoint once, and writes the run folder: checkpoints,
``history.csv``, ``metrics.json`` and figures. :func:`config_from_preset` makes the configuration
from a preset and the fields to change. The command line (:mod:`course_utils.cli`) parses flags into
these two calls; the experiment grids (:mod:`course_utils.experiments`) make the same calls for
every run of a grid, without going through the command line.

Explained in notebook 05 (training) and 06 (evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from course_utils.checkpoints import load_checkpoint
from course_utils.config import (
    PRESETS,
    TrainConfig,
    cpu_has_native_bfloat16,
    is_smoke,
    runs_dir,
    set_seed,
    smoke_config,
)
from course_utils.data import (
    CIFAR10Arrays,
    Shard,
    Splits,
    build_loaders,
    cifar10_splits,
    normalization_stats,
)
from course_utils.distributed import (
    from_main_process,
    is_main_process,
    rank,
    world_size,
)
from course_utils.evaluation import (
    Predictions,
    classification_report,
    confusion_matrix,
    most_confident_mistakes,
    per_class_accuracy,
    predict,
)
from course_utils.machine import fit_to_budget, machine_name
from course_utils.models import count_parameters, describe_architecture, model_architecture
from course_utils.plotting import mistakes_gallery, plot_confusion, plot_history
from course_utils.training import FitResult, build_model, choose_threads, cpu_threads, fit


def config_from_preset(
    preset: str | None,
    changes: dict[str, Any],
    device: torch.device,
    *,
    smoke: bool = False,
) -> tuple[TrainConfig, str]:
    """A run's configuration and its label: the preset (default: ``full`` on a CUDA GPU, ``cpu``
    otherwise), shrunk in smoke mode, then ``changes`` (field -> value) on top.

    On a CPU, mixed precision follows the CPU (on only where it computes bfloat16 natively)
    unless ``changes`` sets ``amp``.

    Raises:
        ConfigError: a value is out of range (naming the field).
    """
    if preset is None:
        preset = "full" if device.type == "cuda" else "cpu"
        reason = "a CUDA GPU is available" if device.type == "cuda" else "no CUDA GPU was found"
        print(f"Using the '{preset}' preset: {reason} (choose with --preset).")
    cfg = PRESETS[preset]
    if smoke or is_smoke():
        cfg = smoke_config(cfg)
        preset = f"{preset}-smoke"
    if device.type == "cpu" and "amp" not in changes and cfg.amp != cpu_has_native_bfloat16():
        # bfloat16 pays on a CPU only where it is computed natively (benchmarks/README.md).
        cfg = dataclasses.replace(cfg, amp=not cfg.amp)
        has = "has" if cfg.amp else "has no"
        print(f"Mixed precision {'on' if cfg.amp else 'off'}: this CPU {has} native bfloat16 "
              f"(AMX or AVX512-BF16); choose with --amp / --no-amp.")  # fmt: skip
    return dataclasses.replace(cfg, **changes), preset


def resumed_config(resume: Path) -> tuple[TrainConfig, Path]:
    """The configuration a run saved, and its ``last.pt`` (``resume``: that file or its folder):
    a resumed run continues with exactly the configuration it started with."""
    last = resume / "last.pt" if resume.is_dir() else resume
    return TrainConfig.from_dict(load_checkpoint(last)["config"]), last


@dataclass
class RunSetup:
    """Everything a run needs before it trains: the data, its statistics, the loaders, the model."""

    splits: Splits
    mean: list[float]
    std: list[float]
    train_loader: Any
    val_loader: Any
    test_loader: Any
    model: nn.Module


def setup_run(
    cfg: TrainConfig,
    device: torch.device,
    *,
    data_dir: Path | None = None,
    resume: Path | None = None,
    download: bool = False,
    splits: Splits | None = None,
) -> RunSetup:
    """Seed, load the splits ``cfg`` asks for (``download``: with torchvision, if CIFAR-10 is
    missing; ``splits``: these instead, e.g. a subset of the classes), compute the normalization
    statistics of its training images (a resumed run keeps the ones it saved), and build the
    loaders and the model. Explained in notebook 05."""
    set_seed(cfg.seed)
    if device.type == "cuda":
        # The shapes never change, so let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    if splits is None:
        splits = cifar10_splits(data_dir, cfg.val_size, cfg.seed, smoke=cfg.smoke,
                                download=download, train_size=cfg.train_size)  # fmt: skip
    if resume is not None:  # the statistics the resumed run normalized with
        saved = load_checkpoint(resume)
        mean, std = saved["mean"], saved["std"]
    else:  # normally the statistics of this run's own training images, exact and cheap
        mean, std = normalization_stats(cfg.normalization, splits.train)
    loaders = build_loaders(splits, cfg, mean, std, device, Shard(rank(), world_size()))
    model = build_model(cfg, num_classes=len(splits.train.classes))
    return RunSetup(splits, list(mean), list(std), *loaders, model)


def train_and_report(
    cfg: TrainConfig,
    label: str,
    device: torch.device,
    *,
    out_dir: Path | None = None,
    data_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any] | None:
    """Train, test the best checkpoint once, write the run folder; return its metrics.

    ``cfg`` comes from :func:`config_from_preset` (or a resumed run), ``label`` names it in the
    report (the preset), and ``device`` is this process's (under torchrun, its own GPU, or the CPU).
    ``out_dir`` defaults to ``runs/LABEL-DATE-TIME``; ``resume`` is a ``last.pt`` to continue
    from; ``command`` is recorded in ``metrics.json``. Returns ``None`` in the processes other
    than rank 0 under torchrun (rank 0 alone writes the report).
    """
    start = time.perf_counter()
    cfg.per_process_batch_size(world_size())  # torchrun: the batch must split, checked before work
    out_dir = out_dir or runs_dir() / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = from_main_process(out_dir)  # torchrun: every process uses rank 0's folder
    run = setup_run(cfg, device, data_dir=data_dir, resume=resume)
    cfg = choose_threads(cfg, run.model, device)  # before the budget measures the speed
    with cpu_threads(cfg.threads):
        device_name = machine_name(device)  # with the threads it trains on
        print(f"Device: {device} ({device_name}). Run folder: {out_dir}")
        deadline = None
        if cfg.minutes is not None and resume is None:  # a resumed run keeps its planned steps
            # Every process measures its share; under torchrun all of them follow rank 0's plan.
            loaders = (run.train_loader, run.val_loader, run.test_loader)
            cfg, deadline = from_main_process(fit_to_budget(cfg, run.model, loaders, device, start))
        result = fit(run.model, run.train_loader, run.val_loader, cfg, device, out_dir=out_dir,
                     resume=resume, classes=run.splits.train.classes, mean=run.mean, std=run.std,
                     deadline=deadline, progress=progress and is_main_process())  # fmt: skip
        cfg = result.config  # with the steps it ran, if the machine's pace changed them

        # The test set, once, with the weights chosen on the validation set.
        load_checkpoint(result.best_checkpoint, run.model, map_location=device)
        pred = predict(run.model, run.test_loader, device, channels_last=cfg.channels_last,
                       amp=cfg.amp, tta=cfg.tta, tta_shift=cfg.tta_shift)  # fmt: skip
    if not is_main_process():  # torchrun: rank 0 alone writes the report
        return None
    test = run.splits.test
    _save_figures(Path(out_dir) / "figures", result, pred, test, run.mean, run.std)
    metrics = {
        **_test_metrics(pred, test.classes),
        **_run_metrics(result, cfg, time.perf_counter() - start),
        **_about(run, device, device_name),
        "preset": label,
        "config": cfg.to_dict(),
        "command": command,
    }
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(_summary(metrics, cfg, Path(out_dir)))
    return metrics


def _about(run: RunSetup, device: torch.device, device_name: str) -> dict[str, Any]:
    """What a run's metrics say about where it ran, its model and its data."""
    splits = run.splits
    return {
        "device": str(device),
        "device_name": device_name,
        "processes": world_size(),
        "torch_version": torch.__version__,
        "architecture": model_architecture(run.model),
        "parameters": count_parameters(run.model),
        "data": {
            "source": splits.train.source,
            "train": len(splits.train),
            "val": len(splits.val),
            "test": len(splits.test),
            "mean": run.mean,
            "std": run.std,
        },
    }


def _test_metrics(pred: Predictions, classes: Sequence[str]) -> dict[str, Any]:
    """What the test set says about the best checkpoint."""
    per_class = per_class_accuracy(pred, classes)
    return {
        "test_accuracy": pred.accuracy,
        "test_loss": pred.loss,
        "test_macro_f1": float(classification_report(pred, classes).loc["macro avg", "f1-score"]),
        "per_class_accuracy": {c: float(a) for c, a in per_class["accuracy"].items()},
        "confusion_matrix": confusion_matrix(pred, len(classes)).tolist(),
    }


def _run_metrics(result: FitResult, cfg: TrainConfig, wall_seconds: float) -> dict[str, Any]:
    """How training went: the best epoch, the epochs run, and the time it took."""
    return {
        "best_epoch": result.best_epoch,
        "best_" + cfg.monitor: result.best_score,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "wall_seconds": wall_seconds,
        "train_seconds": float(result.history["epoch_seconds"].sum()),
        "images_per_second": float(result.history["images_per_second"].mean()),
        "best_checkpoint": str(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
    }


def _save_figures(
    folder: Path,
    result: FitResult,
    pred: Predictions,
    test: CIFAR10Arrays,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    """figures/history.png, confusion.png and mistakes.png, each closed once saved."""
    cm: np.ndarray = confusion_matrix(pred, len(test.classes))
    mistakes: pd.DataFrame = most_confident_mistakes(pred, 16)
    figures = [
        plot_history(result.history, result.best_epoch, save=folder / "history.png"),
        plot_confusion(cm, test.classes, save=folder / "confusion.png"),
        mistakes_gallery(
            test.images, mistakes, test.classes, mean, std, save=folder / "mistakes.png"
        ),
    ]
    for fig in figures:
        plt.close(fig)


def _summary(metrics: dict[str, Any], cfg: TrainConfig, out_dir: Path) -> str:
    """The one-screen report printed at the end of a run."""
    minutes, seconds = divmod(metrics["wall_seconds"], 60)
    data, arch = metrics["data"], describe_architecture(metrics["architecture"])
    early = " (stopped early)" if metrics["stopped_early"] else ""
    per_class = ", ".join(f"{c} {a:.0%}" for c, a in metrics["per_class_accuracy"].items())
    best_score = metrics["best_" + cfg.monitor]
    lines = [
        "",
        f"{'=' * 30} run summary {'=' * 30}",
        f"preset {metrics['preset']} on {metrics['device']} ({metrics['device_name']})"
        + (f" x {metrics['processes']} processes" if metrics["processes"] > 1 else ""),
        f"model  {arch}: {metrics['parameters']:,} parameters",
        f"data   {data['train']:,} train / {data['val']:,} validation / {data['test']:,} test",
        (
            f"train  {metrics['epochs_run']} of {cfg.epochs} epochs{early}, {cfg.optimizer} "
            f"lr {cfg.lr:g} {cfg.schedule}, batch {cfg.batch_size}, "
            f"{metrics['images_per_second']:.0f} images/s"
        ),
        f"best   epoch {metrics['best_epoch']}: {cfg.monitor} {best_score:.4f} on validation",
        (
            f"TEST   accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}, "
            f"macro F1 {metrics['test_macro_f1']:.4f} (best checkpoint, evaluated once)"
        ),
        f"class  {per_class}",
        f"time   {int(minutes)} min {seconds:.0f} s in all",
        f"files  {out_dir}/: best.pt last.pt history.csv metrics.json figures/",
    ]
    return "\n".join(lines)
