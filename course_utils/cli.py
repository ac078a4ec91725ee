"""The command line: ``python -m course_utils train`` runs a whole training run and reports it.

    python -m course_utils train                   # full preset on a GPU, cpu preset otherwise
    python -m course_utils train --preset cpu --epochs 3 --width 8
    python -m course_utils train --smoke --out /tmp/run    # a small real subset, 2 epochs
    python -m course_utils train --resume runs/cpu-20250101-120000/last.pt
    python -m course_utils presets                 # show the presets

A run trains ResNet-18 on the 45,000 training images, picks the best epoch on the 5,000 validation
images, evaluates that best checkpoint once on the 10,000 test images, and writes a run folder::

    best.pt, last.pt      checkpoints (best on validation; last = full state, for --resume)
    history.csv           one row per epoch
    metrics.json          test accuracy and loss, per-class accuracy, best epoch, timings, config
    figures/*.png         learning curves, confusion matrix, most confident mistakes

Every field of ``TrainConfig`` is a flag (``--batch-size`` sets ``batch_size``), generated from the
dataclass with its help text, so the two can never disagree. Invalid values are rejected before
anything is loaded. Explained in notebook 05 (training) and 06 (evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from course_utils.budget import BudgetError, fit_to_budget
from course_utils.checkpoints import CheckpointError, load_checkpoint
from course_utils.config import cpu_has_native_bfloat16, get_device, is_smoke, runs_dir, set_seed
from course_utils.data import (
    CIFAR10Arrays,
    DataFormatError,
    DataNotFoundError,
    build_loaders,
    cifar10_splits,
    normalization_stats,
)
from course_utils.distributed import (
    DistributedSetupError,
    from_main_process,
    gather_predictions,
    is_main_process,
    process_group,
    quiet_unless_main,
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
from course_utils.experiments import (
    ANALYSES,
    EXPERIMENTS,
    run_analysis,
    run_experiment,
    summarize,
)
from course_utils.models import count_parameters, describe_architecture, model_architecture
from course_utils.training import (
    PRESETS,
    ConfigError,
    FitResult,
    NonFiniteLossError,
    TrainConfig,
    build_model,
    choose_threads,
    cpu_threads,
    fit,
    smoke_config,
)
from course_utils.transfer import ship_checkpoint

#: TrainConfig fields whose flag is not the generated one: ``--smoke`` also shrinks the preset.
OWN_FLAGS = {"smoke": "--smoke"}


def flag_name(field_name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field: ``batch_size`` -> ``--batch-size``."""
    return OWN_FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _parse_optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


#: How a flag's text becomes a field's value, and what ``--help`` shows for it, by the field's type.
_PARSERS: dict[Any, tuple[Callable[[str], Any], str]] = {
    int: (int, "N"),
    float: (float, "X"),
    str: (str, "NAME"),
    int | None: (_parse_optional_int, "N|none"),
    float | None: (_parse_optional_float, "X|none"),
    tuple[int, ...]: (_parse_int_tuple, "N,N,..."),
}


def _add_config_flags(group: argparse._ArgumentGroup) -> None:
    """One flag per :class:`TrainConfig` field, with the field's help and choices. Its default is
    ``None``: keep the preset's value."""
    types = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in OWN_FLAGS:
            continue
        flag, kind, text = flag_name(f.name), types[f.name], f.metadata["help"]
        if kind is bool:  # --amp and --no-amp
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=text)
            continue
        parse, metavar = _PARSERS[kind]
        choices = f.metadata["choices"]
        group.add_argument(
            flag,
            dest=f.name,
            type=parse,
            choices=choices,
            help=text,
            metavar=None if choices else metavar,
        )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m course_utils``: ``train``, ``presets``, ``experiment``, ``ship``."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train ResNet-18 on CIFAR-10, report on the test set")
    train.add_argument(
        "--preset", choices=sorted(PRESETS), help="recipe (default: full on CUDA, cpu otherwise)"
    )
    smoke_help = next(f for f in dataclasses.fields(TrainConfig) if f.name == "smoke")
    train.add_argument(
        "--smoke", action="store_true", help=f"{smoke_help.metadata['help']} (as COURSE_SMOKE=1)"
    )
    train.add_argument("--out", type=Path, help="run folder (default: runs/<preset>-<date>-<time>)")
    train.add_argument("--resume", type=Path, help="continue a run from its last.pt (or folder)")
    train.add_argument(
        "--data-dir", type=Path, help="CIFAR-10 folder (default: $COURSE_DATA_DIR or data/)"
    )
    train.add_argument(
        "--device", choices=("cpu", "cuda", "mps"), help="default: the fastest available"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_flags(train.add_argument_group("settings (each overrides one field of the preset)"))
    commands.add_parser("presets", help="print the training presets")
    experiment = commands.add_parser(
        "experiment", help="run a named grid of runs over seeds, or evaluate one's runs again"
    )
    experiment.add_argument(
        "name", choices=[*EXPERIMENTS, *ANALYSES], help="a grid, or an analysis of finished runs"
    )
    experiment.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="default: 0 1")
    experiment.add_argument("--minutes", type=float, help="time budget of every run")
    experiment.add_argument("--smoke", action="store_true", help="tiny runs: the code path only")
    ship = commands.add_parser(
        "ship", help="(instructors) copy a finished run's best checkpoint into checkpoints/NAME/"
    )
    ship.add_argument("run", type=Path, help="the run folder, with best.pt and metrics.json")
    ship.add_argument("--name", required=True, help="the shipped name, such as cpu")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m course_utils``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in metrics.json
    if args.command == "experiment":
        return experiment_command(args)
    if args.command == "ship":
        return ship_command(args.run, args.name)
    if args.command == "presets":
        for name, cfg in PRESETS.items():
            print(f"{name}: {json.dumps(cfg.to_dict())}")
        return 0
    try:
        # Under torchrun: join the other processes, one device each; rank 0 alone prints.
        with process_group(get_device(args.device)) as device, quiet_unless_main():
            return train_command(args, device)
    except ConfigError as exc:  # a flag's value, caught before any data is loaded
        parser.exit(2, f"error: {flag_name(exc.field)}: {exc}\n")
    except (
        DataNotFoundError,
        DataFormatError,
        CheckpointError,
        BudgetError,
        DistributedSetupError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)  # these messages say what to do; no traceback
        return 2
    except NonFiniteLossError as exc:
        print(f"Training stopped: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - every branch above returns or exits


def experiment_command(args: argparse.Namespace) -> int:
    """``python -m course_utils experiment NAME``: a grid of runs, or an analysis of them."""
    if args.name in ANALYSES:
        try:
            table = run_analysis(args.name, args.smoke)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            table.drop(columns=["machine", "date", "torch", "command"])
            .round(4)
            .to_string(max_rows=20)
        )
        return 0
    table = run_experiment(args.name, args.seeds, args.minutes, args.smoke)
    print(summarize(table).round(4).to_string())
    return 0


def ship_command(run: Path, name: str) -> int:
    """``python -m course_utils ship RUN --name NAME``: the instructor's step that makes a run's
    best checkpoint a shipped one (README, "Shipped checkpoints")."""
    try:
        shipped = ship_checkpoint(run, name)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote checkpoints/{name}/ (best.pt, metrics.json, history.csv, command). Put this "
          f"line into SHIPPED_CHECKPOINTS in course_utils/transfer.py and commit both:\n"
          f"    {name!r}: Shipped({shipped.path!r}, {shipped.sha256!r}),")  # fmt: skip
    return 0


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the user set on the command line."""
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in OWN_FLAGS]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def resolve_config(args: argparse.Namespace, device: torch.device) -> tuple[TrainConfig, str]:
    """The run's configuration: the preset, shrunk in smoke mode, then the flags on top.

    Raises:
        ConfigError: a flag's value is out of range (naming the field).
    """
    preset = args.preset or ("full" if device.type == "cuda" else "cpu")
    if args.preset is None:
        reason = "a CUDA GPU is available" if device.type == "cuda" else "no CUDA GPU was found"
        print(f"Using the '{preset}' preset: {reason} (choose with --preset).")
    cfg = PRESETS[preset]
    if args.smoke or is_smoke():
        cfg = smoke_config(cfg)
        preset = f"{preset}-smoke"
    if device.type == "cpu" and args.amp is None and cfg.amp != cpu_has_native_bfloat16():
        # bfloat16 pays on a CPU only where it is computed natively (benchmarks/README.md).
        cfg = dataclasses.replace(cfg, amp=not cfg.amp)
        has = "has" if cfg.amp else "has no"
        print(f"Mixed precision {'on' if cfg.amp else 'off'}: this CPU {has} native bfloat16 "
              f"(AMX or AVX512-BF16); choose with --amp / --no-amp.")  # fmt: skip
    return dataclasses.replace(cfg, **_overrides(args)), preset


def _resumed_config(args: argparse.Namespace) -> tuple[TrainConfig, str, Path, dict[str, Any]]:
    """For ``--resume``: the saved configuration, a label, the ``last.pt`` path and its contents."""
    resume = args.resume / "last.pt" if args.resume.is_dir() else args.resume
    overrides = _overrides(args)
    if overrides or args.preset or args.smoke:
        raise SystemExit(
            f"A resumed run keeps the configuration saved in {resume}; drop "
            f"{sorted(overrides) or '--preset/--smoke'}, or start a new run to change them."
        )
    saved = load_checkpoint(resume)
    return TrainConfig.from_dict(saved["config"]), f"resumed {resume}", resume, saved


def train_command(args: argparse.Namespace, device: torch.device) -> int:
    """``python -m course_utils train``: train, test the best checkpoint once, write the report.

    ``device`` is this process's device: under torchrun, its own GPU (or the CPU).
    """
    start = time.perf_counter()
    if args.resume is not None:
        cfg, preset, resume, saved = _resumed_config(args)
        out_dir, mean, std = args.out or resume.parent, saved["mean"], saved["std"]
    else:  # every value is checked here, before any data is loaded
        (cfg, preset), resume = resolve_config(args, device), None
        out_dir = args.out or runs_dir() / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        mean = std = None
    cfg.per_process_batch_size(world_size())  # torchrun: the batch must split, checked before work
    out_dir = from_main_process(out_dir)  # torchrun: every process uses rank 0's folder
    threads = torch.get_num_threads()
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{threads} CPU thread{'s' if threads != 1 else ''}"
    )
    print(f"Device: {device} ({device_name}). Run folder: {out_dir}")

    set_seed(cfg.seed)
    if device.type == "cuda":
        # The shapes never change, so let cuDNN time its kernels once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    splits = cifar10_splits(
        args.data_dir, cfg.val_size, cfg.seed, cfg.smoke, train_size=cfg.train_size
    )
    if mean is None:  # normally the statistics of this run's own training images, exact and cheap
        mean, std = normalization_stats(cfg.normalization, splits.train)
    loaders = build_loaders(splits, cfg, mean, std, device, rank(), world_size())
    model = build_model(cfg, num_classes=len(splits.train.classes))
    train_loader, val_loader, test_loader = loaders
    cfg = choose_threads(cfg, model, device)  # before the budget measures the speed
    with cpu_threads(cfg.threads):
        deadline = None
        if cfg.minutes and resume is None:  # a resumed run keeps its planned steps; 0: no budget
            # Every process measures its share; under torchrun all of them follow rank 0's plan.
            cfg, deadline = from_main_process(fit_to_budget(cfg, model, loaders, device, start))
        result = fit(model, train_loader, val_loader, cfg, device, out_dir=out_dir, resume=resume,
                     classes=splits.train.classes, mean=mean, std=std, deadline=deadline,
                     progress=not args.no_progress and is_main_process())  # fmt: skip
        cfg = result.config  # with the steps it ran, if the machine's pace changed them

        # The test set, once, with the weights chosen on the validation set.
        load_checkpoint(result.best_checkpoint, model, map_location=device)
        pred = predict(model, test_loader, device, cfg.channels_last, cfg.amp, cfg.tta)
        pred = gather_predictions(pred)  # torchrun: every process's slice of the test set
    if not is_main_process():  # torchrun: rank 0 alone writes the report
        return 0
    _save_figures(Path(out_dir) / "figures", result, pred, splits.test, mean, std)
    metrics = {
        **_test_metrics(pred, splits.test.classes),
        **_run_metrics(result, cfg, time.perf_counter() - start),
        "preset": preset,
        "device": str(device),
        "device_name": device_name,
        "processes": world_size(),
        "torch_version": torch.__version__,
        "architecture": model_architecture(model),
        "parameters": count_parameters(model),
        "data": {
            "source": splits.train.source,
            "train": len(splits.train),
            "val": len(splits.val),
            "test": len(splits.test),
            "mean": list(mean),
            "std": list(std),
        },
        "config": cfg.to_dict(),
        "command": shlex.join(["python", "-m", "course_utils", *getattr(args, "argv", [])]),
    }
    (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(_summary(metrics, cfg, Path(out_dir)))
    return 0


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
    import matplotlib.pyplot as plt

    from course_utils.plotting import mistakes_gallery, plot_confusion, plot_history

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
