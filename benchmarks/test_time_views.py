"""How much do test-time views add, on the same trained weights?

For each run folder given, rebuilds its best checkpoint (``training.model_from_checkpoint``) and
measures it on the 10,000 test images three ways: one view (the image), the 2 views of flip TTA
(the image and its mirror) and the 6 views of ``--tta-shift 1`` (also the image shifted one pixel
up-left and one pixel down-right, each with its mirror). The weights are the same in all three, so
the differences are the views' alone, with no seed noise. Prints one line per run and appends the
rows to ``results/experiments/tta-views.csv`` (notebook 07 reads it).

    COURSE_DATA_DIR=... python benchmarks/test_time_views.py \\
        runs/experiments/preset/cpu_preset-seed0 runs/experiments/preset/cpu_preset-seed1
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from course_utils.config import TrainConfig
from course_utils.data import build_loaders, cifar10_splits
from course_utils.evaluation import predict
from course_utils.experiments import RESULTS_DIR, provenance
from course_utils.training import model_from_checkpoint

TABLE = RESULTS_DIR / "tta-views.csv"
#: (name, tta, tta_shift): the views compared, as ``predict`` takes them
VIEWS = (("1 view", False, 0), ("2 views (flip)", True, 0), ("6 views (flip, shift 1)", True, 1))


def measure(folder: Path, data_dir: Path | None) -> list[dict]:
    """One row per way of viewing, for the run in ``folder``."""
    model, state = model_from_checkpoint(folder / "best.pt")
    cfg = TrainConfig.from_dict(state["config"])
    splits = cifar10_splits(data_dir, cfg.val_size, cfg.seed, smoke=cfg.smoke)
    *_, test_loader = build_loaders(splits, cfg, state["mean"], state["std"], torch.device("cpu"))
    rows = []
    for name, tta, shift in VIEWS:
        pred = predict(model, test_loader, "cpu", channels_last=cfg.channels_last, amp=cfg.amp,
                       tta=tta, tta_shift=shift)  # fmt: skip
        rows.append({"run": str(folder), "seed": cfg.seed, "views": name,
                     "test_accuracy": pred.accuracy})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with a best.pt")
    parser.add_argument("--data-dir", type=Path, help="CIFAR-10's folder (default: as the course)")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/test_time_views.py", *(argv or sys.argv[1:])])
    rows = []
    for folder in args.runs:
        measured = measure(folder, args.data_dir)
        print(f"{folder}: " + ", ".join(f"{r['views']} {r['test_accuracy']:.2%}" for r in measured))
        rows += [{**row, **provenance(command)} for row in measured]
    earlier = [pd.read_csv(TABLE)] if TABLE.exists() else []
    table = pd.concat([*earlier, pd.DataFrame(rows)], ignore_index=True)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(TABLE, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
