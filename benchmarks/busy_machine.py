"""Training speed on a busy CPU: PyTorch's threads against another program that keeps a core busy.

PyTorch runs each operation of a CPU run on one thread per core, and the threads wait for each
other at the end of it. This script measures what that costs when another program is running:

  for each thread count from one per core down to 1, the training images per second of the `cpu`
  preset's network (ResNet-18 at width 16, batch 128, float32, random images), first on the idle
  machine, then with ``--busy`` programs spinning beside it (``python -c "while True: pass"``);

and what ``course_utils.training.choose_threads`` (used by ``fit`` and the command line) picks in
each case. It prints a table and the slowdown of each count against the idle machine.

    .venv/bin/python benchmarks/busy_machine.py              # about a minute on 2 cores
    .venv/bin/python benchmarks/busy_machine.py --busy 1 --steps 20

Run it on an otherwise idle machine: the point is to control the load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from course_utils.machine import machine_name
from course_utils.training import (
    PRESETS,
    build_model,
    build_optimizer,
    choose_threads,
    thread_candidates,
    train_one_epoch,
)


@contextmanager
def busy_programs(count: int) -> Iterator[None]:
    """``count`` Python processes spinning on the CPU while the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)
    ]
    try:
        time.sleep(1.0)  # let them start
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def images_per_second(threads: int, steps: int, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Training images per second of the cpu preset's network on ``threads`` threads."""
    torch.set_num_threads(threads)
    cfg = PRESETS["cpu"]
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss()
    train_one_epoch(model, [batch] * 2, criterion, optimizer, "cpu")  # warm-up
    stats = train_one_epoch(model, [batch] * steps, criterion, optimizer, "cpu")
    return stats.images / stats.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=1, help="busy programs beside training")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed per count")
    args = parser.parse_args()

    cfg = PRESETS["cpu"]
    batch = (torch.randn(cfg.batch_size, 3, 32, 32), torch.randint(0, 10, (cfg.batch_size,)))
    default = torch.get_num_threads()
    counts = thread_candidates(default)
    print(f"{machine_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    rows, chosen = {}, {}
    for load, busy in (("idle", 0), (f"{args.busy} busy", args.busy)):
        with busy_programs(busy):
            rows[load] = {n: images_per_second(n, args.steps, batch) for n in counts}
            torch.set_num_threads(default)
            chosen[load] = choose_threads(cfg, build_model(cfg), "cpu").threads
    table = pd.DataFrame(rows).rename_axis("threads")
    table["slowdown when busy"] = table["idle"] / table[f"{args.busy} busy"]
    print("training images/s (ResNet-18 width 16, batch 128, float32):")
    print(table.round(2).to_string())
    print(f"choose_threads picks: {chosen}")
    best_busy = table[f"{args.busy} busy"].max()
    print(f"with {args.busy} busy program(s): all {default} threads run at "
          f"{table.loc[default, f'{args.busy} busy']:.0f} images/s, the chosen count at "
          f"{table.loc[chosen[f'{args.busy} busy'], f'{args.busy} busy']:.0f}; the best count at "
          f"{best_busy:.0f} ({table.loc[default, 'idle'] / best_busy:.1f} times slower than idle)")


if __name__ == "__main__":
    main()
