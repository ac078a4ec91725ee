"""What each recipe option buys inside the same time budget: the ablation behind the `cpu` preset.

Runs `python -m course_utils train --preset cpu --minutes M` once per configuration and seed, each
into its own run folder (a finished run is skipped, so an interrupted ablation resumes), then
prints one table: test accuracy mean and spread over the seeds, the epochs the budget chose, and
images per second.

    COURSE_DATA_DIR=... .venv/bin/python benchmarks/recipe_ablation.py --minutes 15 --seeds 0 1
    COURSE_DATA_DIR=... .venv/bin/python benchmarks/recipe_ablation.py --smoke   # the code path only

Run it on an idle machine: other work on the cores changes the epochs the budget can afford. The
measured tables are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

#: Each configuration: the flags it adds to `--preset cpu`. "preset" is the preset as it is.
CONFIGURATIONS: dict[str, list[str]] = {
    "preset": [],
    "no label smoothing": ["--label-smoothing", "0"],
    "label smoothing 0.2": ["--label-smoothing", "0.2"],
    "mixup 0.2": ["--mixup", "0.2"],
    "cutmix 1.0": ["--cutmix", "1.0"],
    "ema 0.99": ["--ema", "0.99"],
    "flip tta": ["--tta"],
    "cyclic lr": ["--schedule", "cyclic"],
    "warm-up + cosine": ["--schedule", "warmup_cosine"],
    "width 24": ["--width", "24"],
    "batch 256, lr 0.4": ["--batch-size", "256", "--lr", "0.4"],
}


def run(name: str, flags: list[str], seed: int, args: argparse.Namespace) -> dict:
    """One training run (or its saved result), as one row of the table."""
    folder = args.out / f"{name.replace(' ', '_').replace(',', '')}-seed{seed}"
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        command = [sys.executable, "-m", "course_utils", "train", "--preset", "cpu",
                   "--seed", str(seed), "--out", str(folder), "--no-progress", *flags]  # fmt: skip
        command += ["--smoke"] if args.smoke else ["--minutes", str(args.minutes)]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    metrics = json.loads(metrics_file.read_text())
    return {
        "configuration": name,
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "epochs": metrics["epochs_run"],
        "images_per_second": metrics["images_per_second"],
        "wall_minutes": metrics["wall_seconds"] / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="budget of every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGURATIONS), help="a subset")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--smoke", action="store_true", help="tiny runs: check the code path")
    args = parser.parse_args()
    names = args.only or list(CONFIGURATIONS)
    rows = [run(name, CONFIGURATIONS[name], seed, args) for name in names for seed in args.seeds]
    table = (
        pd.DataFrame(rows)
        .groupby("configuration", sort=False)
        .agg(
            accuracy_mean=("test_accuracy", "mean"),
            accuracy_std=("test_accuracy", "std"),
            seeds=("seed", "count"),
            epochs=("epochs", "mean"),
            images_per_second=("images_per_second", "mean"),
            wall_minutes=("wall_minutes", "max"),
        )
    )
    pd.DataFrame(rows).to_csv(args.out / "ablation.csv", index=False)
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
