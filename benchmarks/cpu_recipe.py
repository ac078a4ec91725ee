"""The search for the ``cpu`` preset's recipe, and its comparison with the anchor, one row at a time.

Each call trains once, alone, and appends one row to ``results/experiments/cpu-recipe.csv``: the
lever tried, the stage (``screen`` at 5 minutes and one seed, ``confirm`` at 15 minutes and two),
test accuracy, epochs, training images/s, the wall time of the whole process, the machine, the
kernels, the date and the command. Notebook 07 reads the table; benchmarks/README.md summarizes it.

    # the course's preset with extra flags, 5 minutes, seed 0, a laptop's kernels (AVX2)
    python benchmarks/cpu_recipe.py course --lever "label smoothing 0.2" --minutes 5 --seed 0 \\
        --isa AVX2 -- --label-smoothing 0.2
    # a finished run folder made by another command (seed, minutes and kernels as it ran)
    python benchmarks/cpu_recipe.py record --lever preset --stage confirm --minutes 15 --seed 0 \
        --isa AVX2 -- runs/experiments/preset/cpu_preset-seed0
    # the table so far, as the Markdown tables of benchmarks/README.md
    python benchmarks/cpu_recipe.py summary
    # the anchor (airbench94's recipe on the CPU; see ../shared/anchors/README.md)
    python benchmarks/cpu_recipe.py anchor --anchor ../shared/anchors/airbench_cpu.py \\
        --zip ../shared/data/cifar10-images.zip --minutes 15 --seed 0 --isa AVX2 -- --width-mult 0.5

Time it on an idle machine: a second busy process slows PyTorch's threads several times over.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from course_utils.experiments import RESULTS_DIR, epochs_trained, provenance

TABLE = RESULTS_DIR / "cpu-recipe.csv"
#: screen: --minutes 5, one seed; epochs: a fixed number of epochs (no budget), one seed, so the
#: accuracy measures the recipe alone; confirm: --minutes 15, two seeds
STAGES = ("screen", "epochs", "confirm")
COLUMNS = (
    "recipe", "lever", "stage", "minutes", "seed", "isa", "test_accuracy", "test_accuracy_no_tta",
    "epochs", "images_per_second", "wall_seconds", "machine", "date", "torch", "command",
)  # fmt: skip


def _environment(isa: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def run_course(args: argparse.Namespace) -> dict:
    """``python -m course_utils train --preset cpu`` with the lever's flags; its metrics.json."""
    name = re.sub(r"[^a-z0-9.]+", "-", args.lever.lower()).strip("-")
    budget = f"e{args.epochs}" if args.epochs else f"m{args.minutes:g}"
    out = Path("runs/cpu-recipe") / f"{name}-{args.isa or 'native'}-{budget}-s{args.seed}"
    length = ["--minutes", "0", "--epochs", str(args.epochs)] if args.epochs else [
        "--minutes", f"{args.minutes:g}"]  # fmt: skip
    command = ["python", "-m", "course_utils", "train", "--preset", "cpu", *length, "--seed",
               str(args.seed), "--no-progress", "--out", str(out), *args.flags]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, *command[1:]], check=True, env=_environment(args.isa))
    return course_row(out, time.perf_counter() - start, shlex.join(command))


def course_row(out: Path, wall: float | None, command: str) -> dict:
    """The columns a finished run folder of the course gives (``wall``: None to take the run's
    own, which starts after the interpreter and imports), with the machine as the run described
    it (its threads and kernel cap, not those of the process that records it)."""
    metrics = json.loads((out / "metrics.json").read_text())
    history = pd.read_csv(out / "history.csv")
    processes = metrics.get("processes", 1)  # torchrun: each process's threads, so many times
    machine = metrics["device_name"] + (f", {processes} processes" if processes > 1 else "")
    return {
        "recipe": "course",
        "test_accuracy": metrics["test_accuracy"],
        "test_accuracy_no_tta": None,
        "epochs": epochs_trained(metrics, len(history)),
        "images_per_second": round(metrics["images_per_second"]),
        "wall_seconds": round(metrics["wall_seconds"] if wall is None else wall),
        "machine": machine,
        "command": command,
    }


def record_run(args: argparse.Namespace) -> dict:
    """A run made by another command (``python -m course_utils experiment preset``)."""
    out = Path(args.flags[0])
    return course_row(out, None, json.loads((out / "metrics.json").read_text())["command"])


def run_anchor(args: argparse.Namespace) -> dict:
    """The anchor script, whose last line of output is its JSON result."""
    command = ["python", args.anchor, "--zip", args.zip, "--minutes", f"{args.minutes:g}",
               "--seed", str(args.seed), *args.flags]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *command[1:]], check=True, capture_output=True,
                          text=True, env=_environment(args.isa))  # fmt: skip
    wall = time.perf_counter() - start
    print(done.stdout)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "recipe": "anchor",
        "test_accuracy": result["test_acc_tta"],
        "test_accuracy_no_tta": result["test_acc_plain"],
        "epochs": result["epochs"],
        "images_per_second": result["img_per_s"],
        "wall_seconds": round(wall),
        "command": shlex.join(command),
    }


def markdown_tables(table: pd.DataFrame) -> str:
    """The screens, one row each, and the side-by-side means over seeds, as Markdown tables
    (what benchmarks/README.md shows)."""
    header = "| stage | recipe | lever | kernels | minutes | seed | test accuracy | epochs | img/s |"
    lines = [header + " wall s |", "| --- " * 10 + "|"]
    for r in table.itertuples():
        lines.append(f"| {r.stage} | {r.recipe} | {r.lever} | {r.isa} | {r.minutes:g} | {r.seed} "
                     f"| {100 * r.test_accuracy:.2f}% | {r.epochs:g} | {r.images_per_second:.0f} "
                     f"| {r.wall_seconds:.0f} |")  # fmt: skip
    confirm = table[table["stage"].str.startswith("confirm")]  # every round of 15-minute runs
    if len(confirm):
        means = "| stage | kernels | recipe | lever | seeds | mean test accuracy | spread |"
        lines += ["", means + " epochs | img/s |", "| --- " * 9 + "|"]
        groups = confirm.groupby(["stage", "isa", "recipe", "lever"], sort=False)
        for (stage, isa, recipe, lever), group in groups:
            accuracy = 100 * group["test_accuracy"]
            spread = f"{accuracy.max() - accuracy.min():.2f}" if len(group) > 1 else "-"
            lines.append(f"| {stage} | {isa} | {recipe} | {lever} | {len(group)} "
                         f"| {accuracy.mean():.2f}% | {spread} | {group['epochs'].mean():.2f} "
                         f"| {group['images_per_second'].mean():.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=("course", "anchor", "record", "summary"))
    parser.add_argument("--lever", default="anchor", help="what this row tries, in words")
    parser.add_argument("--stage", default="screen", choices=STAGES)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--epochs", type=int, help="(course) train exactly this many epochs, no time budget: "
        "accuracy that a busy machine cannot change (stage 'epochs')",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isa", help="ONEDNN_MAX_CPU_ISA for the run, e.g. AVX2 (default: native)")
    parser.add_argument("--anchor", default="../shared/anchors/airbench_cpu.py")
    parser.add_argument("--zip", default="../shared/data/cifar10-images.zip")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # after --: the run's own flags
    args = parser.parse_args(argv[:cut])
    args.flags = argv[cut + 1 :]
    if (args.stage == "epochs") != bool(args.epochs):
        parser.error("--stage epochs goes with --epochs N (and --epochs with --stage epochs)")
    if args.recipe == "summary":  # print the table as Markdown; train nothing
        print(markdown_tables(pd.read_csv(TABLE)))
        return 0
    result = {"course": run_course, "anchor": run_anchor, "record": record_run}[args.recipe](args)
    minutes = 0.0 if args.epochs else args.minutes
    row = {"lever": args.lever, "stage": args.stage, "minutes": minutes, "seed": args.seed,
           "isa": args.isa or "native", **provenance(result.pop("command")), **result}  # fmt: skip
    row["command"] = (f"ONEDNN_MAX_CPU_ISA={args.isa} " if args.isa else "") + row["command"]
    table = pd.read_csv(TABLE) if TABLE.exists() else pd.DataFrame(columns=list(COLUMNS))
    table = pd.concat([table, pd.DataFrame([row])[list(COLUMNS)]], ignore_index=True)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(TABLE, index=False)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
