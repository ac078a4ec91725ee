"""The learning-rate range test of notebook 09, over seeds, as a committed table.

For each seed: a fresh ``cpu``-preset network (the recipe of notebook 09's sweep,
``experiments.RECIPE_2026_12``) trained for ``--steps`` batches while the learning rate grows
exponentially from 1e-4 to 10 (``diagnostics.lr_range_test``). One row per step goes to
``results/experiments/lr-range-test.csv`` (seed, step, lr, loss, smoothed loss, the seed's
suggestion), with the machine, date and command. Notebook 09 reads it next to the sweep
(``python -m course_utils experiment lr-sweep``) that checks the suggestion.

    python benchmarks/lr_range_test.py --seeds 0 1     # about 2 minutes a seed on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

import pandas as pd
import torch

from course_utils.config import PRESETS, get_device
from course_utils.diagnostics import lr_range_test
from course_utils.experiments import RECIPE_2026_12, RESULTS_DIR, provenance
from course_utils.run import setup_run

TABLE = RESULTS_DIR / "lr-range-test.csv"


def range_test_rows(seed: int, steps: int, device: torch.device) -> list[dict]:
    """One seed's range test, one row per step."""
    cfg = dataclasses.replace(PRESETS["cpu"], **RECIPE_2026_12, seed=seed)
    run = setup_run(cfg, device)  # seed, data, statistics, loaders, a fresh model
    result = lr_range_test(run.model, run.train_loader, cfg, device, steps=steps)
    stopped = " (stopped: diverged)" if result.diverged else ""
    print(f"seed {seed}: lowest smoothed loss at lr {result.lr_at_minimum:.3g}, "
          f"suggestion {result.suggestion:.3g}{stopped}")  # fmt: skip
    steps = pd.DataFrame({"lr": result.lrs, "loss": result.losses, "smoothed": result.smoothed})
    return steps.assign(seed=seed, step=steps.index, suggestion=result.suggestion,
                        diverged=result.diverged).to_dict("records")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=300, help="batches per range test")
    args = parser.parse_args(argv)
    device = get_device()
    rows = [row for seed in args.seeds for row in range_test_rows(seed, args.steps, device)]
    command = shlex.join(["python", "benchmarks/lr_range_test.py", *sys.argv[1:]])
    table = pd.DataFrame(rows).assign(**provenance(command))
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(TABLE, index=False)
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
