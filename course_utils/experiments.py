"""Experiments: named grids of training runs, repeated over seeds, collected into one tidy table.

    python -m course_utils experiment degradation --seeds 0 1 --minutes 5
    python -m course_utils experiment cpu-recipe --seeds 0 1 --minutes 15

Each run is an ordinary ``python -m course_utils train`` run with its own folder under
``runs/experiments/NAME/``; a run whose ``metrics.json`` exists is not repeated, so an interrupted
experiment resumes where it stopped. The table, one row per run, goes to
``results/experiments/NAME.csv``: configuration, seed, test and validation accuracy, the training
error of every epoch, epochs, wall time, and the machine, date and command that produced it.

Explained in notebook 07 (the experiments lab).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from course_utils.config import PROJECT_ROOT

#: Each experiment: configuration name -> the TrainConfig fields it changes in the ``cpu`` preset.
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    # He et al. 2016, Fig. 1 and 6: a deeper *plain* network has higher *training* error than a
    # shallower one; with shortcuts (option A, as in the paper's CIFAR runs) depth helps instead.
    "degradation": {
        "plain-20": {"arch": "cifar_resnet", "depth": 20, "shortcut": "none"},
        "plain-56": {"arch": "cifar_resnet", "depth": 56, "shortcut": "none"},
        "resnet-20": {"arch": "cifar_resnet", "depth": 20, "shortcut": "A"},
        "resnet-56": {"arch": "cifar_resnet", "depth": 56, "shortcut": "A"},
    },
    "regularization": {
        "none": {"label_smoothing": 0.0},
        "label smoothing 0.1": {"label_smoothing": 0.1},
        "mixup 0.2": {"label_smoothing": 0.0, "mixup": 0.2},
        "cutmix 1.0": {"label_smoothing": 0.0, "cutmix": 1.0},
        "rotation 15": {"label_smoothing": 0.0, "rotation": 15.0},
    },
    # Schedules that need no epoch numbers chosen in advance (the budget picks the epochs).
    "schedules": {
        "constant": {"schedule": "none", "lr": 0.05},
        "cosine": {"schedule": "cosine"},
        "onecycle": {"schedule": "onecycle"},
        "cyclic": {"schedule": "cyclic"},
        "warm-up + cosine": {"schedule": "warmup_cosine"},
    },
    # What each option of the recipe buys inside the same time budget (the `cpu` preset's choice).
    "cpu-recipe": {
        "preset": {},
        "label smoothing 0.2": {"label_smoothing": 0.2},
        "mixup 0.2": {"mixup": 0.2},
        "cutmix 1.0": {"cutmix": 1.0},
        "ema 0.99": {"ema": 0.99},
        "flip tta": {"tta": True},
        "cyclic lr": {"schedule": "cyclic"},
        "warm-up + cosine": {"schedule": "warmup_cosine"},
        "width 24": {"width": 24},
    },
}
#: Where the tables go: committed, so notebook 07 reads measurements rather than typed numbers.
RESULTS_DIR = PROJECT_ROOT / "results" / "experiments"


def run_flags(changes: dict[str, Any]) -> list[str]:
    """``{"schedule": "cyclic", "tta": True}`` -> ``["--schedule", "cyclic", "--tta"]``."""
    from course_utils.cli import flag_name

    flags: list[str] = []
    for name, value in changes.items():
        flag = flag_name(name)
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def machine_name() -> str:
    """The machine a table was measured on, in words: the GPU, or the CPU and its threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:  # the model name, where Linux says it
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads ({torch.backends.cpu.get_cpu_capability()})"


def run_experiment(
    name: str,
    seeds: Sequence[int],
    minutes: float | None = None,
    smoke: bool = False,
    runs_root: Path | None = None,
    results_dir: Path = RESULTS_DIR,
) -> pd.DataFrame:
    """Run every configuration of experiment ``name`` for every seed; return and save the table.

    Args:
        seeds: one run per configuration and seed.
        minutes: each run's time budget (``--minutes``); ``None`` keeps the preset's.
        smoke: tiny runs on the smoke subset, to check the code path.
        runs_root: parent of the run folders (default ``runs/experiments``).
    """
    from course_utils.cli import main as command_line

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    runs_root = runs_root or PROJECT_ROOT / "runs" / "experiments"
    rows = []
    for configuration, changes in EXPERIMENTS[name].items():
        for seed in seeds:
            folder = runs_root / name / f"{configuration.replace(' ', '_')}-seed{seed}"
            args = ["train", "--preset", "cpu", "--seed", str(seed), "--out", str(folder),
                    "--no-progress", *run_flags(changes)]  # fmt: skip
            args += ["--smoke"] if smoke else [] if minutes is None else ["--minutes", str(minutes)]
            if not (folder / "metrics.json").is_file():
                print(f"[{name}] {configuration}, seed {seed}", flush=True)
                if command_line(args) != 0:
                    raise RuntimeError(f"the run {folder} failed: see the messages above")
            rows.append(_row(folder, configuration, seed, args))
    table = pd.DataFrame(rows)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / f"{name}{'-smoke' if smoke else ''}.csv", index=False)
    return table


def _row(folder: Path, configuration: str, seed: int, args: list[str]) -> dict[str, Any]:
    """One line of the table, read from a finished run folder."""
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    return {
        "configuration": configuration,
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "best_val_accuracy": float(history["val_acc"].max()),
        "train_error_per_epoch": json.dumps([round(1 - a, 5) for a in history["train_acc"]]),
        "val_error_per_epoch": json.dumps([round(1 - a, 5) for a in history["val_acc"]]),
        "epochs": metrics["epochs_run"],
        "parameters": metrics["parameters"],
        "wall_seconds": round(metrics["wall_seconds"], 1),
        "machine": machine_name(),
        "date": time.strftime(
            "%Y-%m-%d", time.localtime((folder / "metrics.json").stat().st_mtime)
        ),
        "torch": metrics["torch_version"],
        "command": " ".join(["python -m course_utils", *args]),
    }


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of each configuration: what a notebook may state."""
    return table.groupby("configuration", sort=False).agg(
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        seeds=("seed", "nunique"),
        epochs=("epochs", "mean"),
        wall_minutes=("wall_seconds", lambda s: s.mean() / 60),
    )
