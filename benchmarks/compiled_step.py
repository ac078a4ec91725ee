"""Does ``torch.compile`` speed up the ``cpu`` preset's training step on this machine?

Times the bare training step (forward, backward, Nesterov SGD step on one fixed batch; width-16
ResNet-18, batch 128, channels_last, float32, label smoothing 0.2) without and with
``torch.compile``, in separate processes, and prints the compile time (the first step) and three
10-second timings each. Then a ``torch.profiler`` table of where the eager step spends its time.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/compiled_step.py

(the two variables give oneDNN's convolutions and inductor's generated code a laptop's AVX2
kernels). Run it on an otherwise idle machine: a second busy process slows every figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
from torch import nn

from course_utils.models import resnet18

BATCH, WIDTH, SECONDS, REPEATS = 128, 16, 10.0, 3


def time_steps(compiled: bool) -> None:
    """Print the first step's time (it includes compiling) and REPEATS timings in images/s."""
    torch.manual_seed(0)
    model = resnet18(width=WIDTH, num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)  # fmt: skip
    criterion = nn.CrossEntropyLoss(label_smoothing=0.2)
    forward = torch.compile(model) if compiled else model
    x = torch.randn(BATCH, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(forward(x), y).backward()
        optimizer.step()

    name = "compiled" if compiled else "eager"
    start = time.perf_counter()
    step()
    print(f"{name}: first step {time.perf_counter() - start:.1f} s", flush=True)
    for _ in range(3):
        step()
    for _ in range(REPEATS):
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < SECONDS:
            step()
            steps += 1
        print(f"{name}: {steps * BATCH / (time.perf_counter() - start):.0f} images/s", flush=True)


def profile_eager() -> None:
    """The operations the eager step spends its time in, largest first."""
    from torch.profiler import ProfilerActivity, profile  # only this part needs the profiler

    model = resnet18(width=WIDTH, num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x = torch.randn(BATCH, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,))
    for warmup in (True, False):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5 if warmup else 10):
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("eager", "compiled", "profile"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only == "profile":
        profile_eager()
    elif args.only:
        time_steps(args.only == "compiled")
    else:  # each in a fresh process, so that one cannot warm the other's caches
        for part in ("eager", "compiled", "profile"):
            subprocess.run([sys.executable, __file__, "--only", part], check=True)


if __name__ == "__main__":
    main()
