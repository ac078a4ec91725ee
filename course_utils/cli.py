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
import os
import shlex
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from course_utils.checkpoints import CheckpointError, ship_checkpoint
from course_utils.config import PRESETS, ConfigError, TrainConfig, flag_name, get_device
from course_utils.data import DataFormatError, DataNotFoundError
from course_utils.distributed import (
    DistributedSetupError,
    launched_by_torchrun,
    process_group,
    quiet_unless_main,
)
from course_utils.experiments import (
    ANALYSES,
    EXPERIMENTS,
    TRANSFER,
    run_analysis,
    run_experiment,
    run_transfer_experiment,
    summarize,
)
from course_utils.machine import BudgetError
from course_utils.run import config_from_preset, resumed_config, train_and_report
from course_utils.training import NonFiniteLossError
from course_utils.transfer_experiment import summarize_transfer

#: TrainConfig fields with a flag written by hand instead of generated: ``--smoke`` also shrinks
#: the preset (``smoke_config``), so it is more than a field's value.
HAND_WRITTEN_FLAGS = {"smoke"}


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
        if f.name in HAND_WRITTEN_FLAGS:
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
        "name", choices=[*EXPERIMENTS, *ANALYSES, TRANSFER],
        help="a grid, an analysis of finished runs, or notebook 08's transfer experiment",
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
    if args.command == "ship":
        return ship_command(args.run, args.name)
    if args.command == "presets":
        for name, cfg in PRESETS.items():
            print(f"{name}: {json.dumps(cfg.to_dict())}")
        return 0
    try:
        if args.command == "experiment":  # its runs fail with the same messages as train's
            return experiment_command(args)
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
        table = run_analysis(args.name, smoke=args.smoke)
        print(
            table.drop(columns=["machine", "date", "torch", "command"])
            .round(4)
            .to_string(max_rows=20)
        )
        return 0
    if args.name == TRANSFER:  # counted in epochs and steps: a time budget does not apply
        if args.minutes is not None:
            print(f"error: --minutes: the {TRANSFER} experiment runs fixed epochs and steps "
                  "(course_utils.transfer_experiment); leave --minutes out", file=sys.stderr)
            return 2
        table = run_transfer_experiment(args.seeds, smoke=args.smoke)
        print(summarize_transfer(table).round(4).to_string())
        return 0
    table = run_experiment(args.name, args.seeds, args.minutes, smoke=args.smoke)
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
          f"line into SHIPPED_CHECKPOINTS in course_utils/checkpoints.py and commit both:\n"
          f"    {name!r}: Shipped({shipped.path!r}, {shipped.sha256!r}),")  # fmt: skip
    return 0


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the user set on the command line."""
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in HAND_WRITTEN_FLAGS]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def resolve_config(args: argparse.Namespace, device: torch.device) -> tuple[TrainConfig, str]:
    """The run's configuration from the flags: :func:`course_utils.run.config_from_preset` with the
    preset and the fields set on the command line.

    Raises:
        ConfigError: a flag's value is out of range (naming the field).
    """
    return config_from_preset(args.preset, _overrides(args), device, smoke=args.smoke)


def _resumed_config(args: argparse.Namespace) -> tuple[TrainConfig, str, Path]:
    """For ``--resume``: the saved configuration, a label, and the ``last.pt`` path."""
    overrides = _overrides(args)
    if overrides or args.preset or args.smoke:
        raise SystemExit(
            f"A resumed run keeps the configuration saved in {args.resume}; drop "
            f"{sorted(overrides) or '--preset/--smoke'}, or start a new run to change them."
        )
    cfg, last = resumed_config(args.resume)
    return cfg, f"resumed {last}", last


def launcher() -> list[str]:
    """How this process was started, as a run's recorded command begins: ``python -m``, or under
    torchrun ``torchrun --nproc_per_node N -m`` (and ``--nnodes M`` on several machines)."""
    if not launched_by_torchrun():
        return ["python", "-m"]
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    nodes = int(os.environ["WORLD_SIZE"]) // per_node
    return ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []),
            f"--nproc_per_node={per_node}", "-m"]  # fmt: skip


def train_command(args: argparse.Namespace, device: torch.device) -> int:
    """``python -m course_utils train``: the configuration from the flags (or the resumed run),
    then :func:`course_utils.run.train_and_report`. ``device``: this process's (under torchrun,
    its own GPU, or the CPU)."""
    if args.resume is not None:
        cfg, label, resume = _resumed_config(args)
        out_dir = args.out or resume.parent
    else:  # every value is checked here, before any data is loaded
        (cfg, label), resume, out_dir = resolve_config(args, device), None, args.out
    command = shlex.join([*launcher(), "course_utils", *getattr(args, "argv", [])])
    train_and_report(cfg, label, device, out_dir=out_dir, data_dir=args.data_dir, resume=resume,
                     progress=not args.no_progress, command=command)  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
