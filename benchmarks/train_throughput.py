"""How fast does the course train, and how much faster than the task statement's pipeline?

Measures training throughput (images per second) of three things, on the same machine in one run:

  (a) the bare model step: forward, backward and optimizer step on one fixed batch, over and over,
      with full-width ResNet-18 (CIFAR stem, 32x32) in the memory layout training uses. The ceiling.
  (b) the course's whole training loop: ``training.train_one_epoch`` over real CIFAR-10 from the
      loader the CLI uses on this device (loading, augmentation, metrics included), same model and
      batch size, timed by ``machine.measure_throughput``, the measurement the time budget plans
      with. Target: b/a >= 0.9 (the loop adds little to the model's own cost).
  (c) the task statement's pipeline: PIL images through ``Resize((227, 227))``, flips, rotation,
      ``ToTensor`` and ``Normalize`` one image at a time in a DataLoader, into a ResNet-18 with the
      7x7 stem and max-pool at 227x227, default memory layout, Adam, and ``loss.item()`` every step.
      Target: b/c >= 4.

    python benchmarks/train_throughput.py        # about 2 minutes on 2 idle CPU cores
    python benchmarks/train_throughput.py --batches 12 --seed-batches 4 --data-dir /path/to/data
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py   # steady figures on a busy machine
    python benchmarks/train_throughput.py --width 16 --stage-multiples 1,2,6,8 --batches 30 \
        --no-seed-pipeline --record results/experiments/stage-throughput.csv   # another shape

Timings on a shared machine are noisy: run it when the machine is otherwise idle. With one thread
(``OMP_NUM_THREADS=1``) the images per CPU-second it also prints do not depend on other processes,
which makes them the steadier figure for the ratios.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from course_utils.config import autocast_dtype, get_device, set_seed
from course_utils.data import CIFAR10Arrays, Splits, build_loaders, cifar10_splits, compute_mean_std
from course_utils.experiments import provenance
from course_utils.machine import machine_name, measure_throughput
from course_utils.models import DOUBLING, resnet18, to_device
from course_utils.training import TrainConfig, build_model, build_optimizer

SEED_IMAGE_SIZE = 227  # the task statement's Resize((227, 227)), left over from AlexNet
SEED_ROTATION = 15  # degrees, the task statement's RandomRotation(15)
SEED_BATCH = 64  # the task statement's training batch size
SEED_LR = 1e-3  # the task statement's Adam learning rate


class Rate:
    """Images per second of wall-clock time, and per second of this process's CPU time.

    The CPU-time rate is what a run would reach on an idle machine when the process uses one
    thread (``OMP_NUM_THREADS=1``): other processes then slow the wall clock but not the CPU time.
    """

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, images: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return images / wall, images / cpu


class WallAndCpuClock:
    """A wall clock for ``measure_throughput`` that also notes this process's CPU time at each
    reading, so the timed stretch (its last two readings) has both."""

    def __init__(self) -> None:
        self.cpu: list[float] = []

    def __call__(self) -> float:
        self.cpu.append(time.process_time())
        return time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_image(cfg: TrainConfig) -> float:
    """Floating-point operations of one training step per image (forward and backward), as
    PyTorch's own ``FlopCounterMode`` counts them (a multiply-add counts as 2)."""
    model = build_model(cfg)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / 2


def bare_step(
    cfg: TrainConfig, device: torch.device, batches: int, warmup: int
) -> tuple[float, float]:
    """(a) images/s of forward + backward + step on one fixed batch."""
    model = build_model(cfg)
    memory_format = to_device(model, device, channels_last=cfg.channels_last)
    optimizer = build_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    x = torch.randn(cfg.batch_size, 3, 32, 32, device=device).contiguous(
        memory_format=memory_format
    )
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    model.train()
    rate = Rate()
    for step in range(warmup + batches):
        if step == warmup:
            sync(device)
            rate.start()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=cfg.amp):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()  # a disabled scaler passes everything through
        scaler.step(optimizer)
        scaler.update()
    sync(device)
    return rate.stop(batches * cfg.batch_size)


def course_loop(
    cfg: TrainConfig, splits: Splits, device: torch.device, batches: int, warmup: int
) -> tuple[float, float]:
    """(b) images/s of train_one_epoch over real data, ``batches`` batches after ``warmup``: the
    course's own measurement, the one ``--minutes`` plans with."""
    mean, std = compute_mean_std(splits.train.images)
    loader = build_loaders(splits, cfg, mean, std, device)[0]
    clock = WallAndCpuClock()
    speed = measure_throughput(build_model(cfg), loader, None, cfg, device, clock,
                               warmup=warmup, timed=batches)  # fmt: skip
    cpu_seconds_per_batch = (clock.cpu[-1] - clock.cpu[-2]) / batches
    return cfg.batch_size / speed.train, cfg.batch_size / cpu_seconds_per_batch


class PILDataset(Dataset):
    """CIFAR-10 as PIL images, as ``torchvision.datasets.CIFAR10`` serves them."""

    def __init__(self, data: CIFAR10Arrays, transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.data.images[index])), int(
            self.data.labels[index]
        )


def seed_pipeline(
    train: CIFAR10Arrays, device: torch.device, batches: int, warmup: int
) -> tuple[float, float]:
    """(c) images/s of the task statement's training loop, written as it is there."""
    mean, std = compute_mean_std(train.images)
    train_augment = transforms.Compose(
        [
            transforms.Resize((SEED_IMAGE_SIZE, SEED_IMAGE_SIZE)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(SEED_ROTATION),
            transforms.ToTensor(),
            transforms.Normalize(mean=mean, std=std),
        ]
    )
    part = train.subset(np.arange((warmup + batches) * SEED_BATCH))
    loader = DataLoader(PILDataset(part, train_augment), batch_size=SEED_BATCH, shuffle=True)
    model = resnet18(stem="imagenet").to(device)  # 7x7 stem + max-pool, default memory format
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=SEED_LR)
    model.train()
    rate = Rate()
    images = 0
    for step, (data, label) in enumerate(loader):
        if step == warmup:
            sync(device)
            rate.start()
        data, label = data.to(device), label.to(device)
        model.zero_grad()
        loss = criterion(model(data), label)
        loss.backward()
        optimizer.step()
        _ = loss.item()  # the task statement reads the loss back every step
        if step >= warmup:
            images += label.size(0)
    return rate.stop(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="timed batches for (a) and (b)")
    parser.add_argument("--seed-batches", type=int, default=3, help="timed batches for (c)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed batches before each measurement"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="batch size of (a) and (b)")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width of (a) and (b)")
    parser.add_argument(
        "--stage-multiples", default="1,2,4,8",
        help="each stage's channels as a multiple of --width, as in training (default: 1,2,4,8)",
    )  # fmt: skip
    parser.add_argument(
        "--ghost-batch", type=int, help="ghost BatchNorm over groups of this many images, as in "
        "training (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--no-channels-last", action="store_true", help="(a) and (b) in NCHW layout"
    )
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        help="mixed precision in (a) and (b) (default: on CUDA only, as in the presets)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="CIFAR-10 folder (default: $COURSE_DATA_DIR or data/)"
    )
    parser.add_argument("--device", help="cpu or cuda (default: the fastest available)")
    parser.add_argument(
        "--record", type=Path,
        help="append the figures of (a) and (b) as one row to this CSV file, with the machine, "
        "date and command (e.g. results/experiments/stage-throughput.csv)",
    )  # fmt: skip
    parser.add_argument(
        "--no-seed-pipeline", action="store_true", help="skip (c), the slowest measurement"
    )
    args = parser.parse_args()

    device = get_device(args.device)
    cfg = TrainConfig(
        width=args.width,
        stage_multiples=tuple(int(m) for m in args.stage_multiples.split(",")),
        ghost_batch=args.ghost_batch,
        batch_size=args.batch_size,
        channels_last=not args.no_channels_last,
        amp=device.type == "cuda" if args.amp is None else args.amp,
        num_workers=0,
        label_smoothing=0.1,
    )
    print(f"machine: {machine_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device {device}")  # fmt: skip
    print(
        f"load average before: {os.getloadavg()[0]:.2f} (timings are noisy on a busy machine;"
        " img/CPU-s with OMP_NUM_THREADS=1 are not)"
    )
    set_seed(0)
    splits = cifar10_splits(args.data_dir)

    layout = ("channels_last" if cfg.channels_last else "NCHW") + (" amp" if cfg.amp else "")
    multiples = cfg.stage_multiples
    shape = "" if multiples == DOUBLING else " x" + ",".join(map(str, multiples))
    shape += f" ghost {cfg.ghost_batch}" if cfg.ghost_batch else ""
    names = {
        "a": f"(a) bare step: ResNet-18 w{cfg.width}{shape}, 32x32, b{cfg.batch_size}, {layout}",
        "b": "(b) course loop: train_one_epoch, real data + augmentation",
        "c": f"(c) task statement: PIL, Resize 227, 7x7 stem, b{SEED_BATCH}, NCHW",
    }
    flops = training_flops_per_image(cfg)
    print(f"training step: {flops / 1e6:.0f} MFLOP per image (forward + backward, "
          f"FlopCounterMode; forward multiply-adds: about {flops / 6e6:.0f} M)")  # fmt: skip
    print(f"{'':62s} {'img/s':>8s} {'img/CPU-s':>10s} {'GFLOP/s':>8s}")
    rates = {}
    measures = {
        "a": lambda: bare_step(cfg, device, args.batches, args.warmup),
        "b": lambda: course_loop(cfg, splits, device, args.batches, args.warmup),
        "c": lambda: seed_pipeline(splits.train, device, args.seed_batches, args.warmup),
    }
    if args.no_seed_pipeline:
        del measures["c"]
    for key, measure in measures.items():
        rates[key] = measure()
        gflops = f"{rates[key][0] * flops / 1e9:8.1f}" if key != "c" else f"{'':8s}"
        print(f"{names[key]:62s} {rates[key][0]:8.1f} {rates[key][1]:10.1f} {gflops}", flush=True)
    for column, unit in ((0, "wall clock"), (1, "CPU time")):
        a, b = rates["a"][column], rates["b"][column]
        line = f"{unit:>10s}: b/a = {b / a:.2f} (target >= 0.9)"
        if "c" in rates:
            line += f", b/c = {b / rates['c'][column]:.1f} (target >= 4)"
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.record:
        record(args.record, cfg, flops, rates)


def record(path: Path, cfg: TrainConfig, flops: float, rates: dict[str, tuple[float, float]]):
    """Append one row (the network, the batch, (a) and (b) in images/s and GFLOP/s) to ``path``."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    command = " ".join(["python", *map(shlex.quote, sys.argv)])
    measurement = (f"width {cfg.width} x{','.join(map(str, cfg.stage_multiples))}, batch "
                   f"{cfg.batch_size}, ghost BatchNorm {cfg.ghost_batch or 'off'}, "
                   f"kernels {isa or 'native'}, {machine_name()}")  # fmt: skip
    table = pd.read_csv(path) if path.exists() else pd.DataFrame({"measurement": []}, dtype=str)
    row = {
        "measurement": measurement,
        "repeat": int((table["measurement"] == measurement).sum()) + 1,
        "width": cfg.width,
        "stage_multiples": ",".join(map(str, cfg.stage_multiples)),
        "batch_size": cfg.batch_size,
        "ghost_batch": cfg.ghost_batch or 0,  # 0: off
        "threads": torch.get_num_threads(),
        "isa": isa or "native",
        "mflop_per_image": round(flops / 1e6, 1),
        "bare_step_images_per_second": round(rates["a"][0], 1),
        "loop_images_per_second": round(rates["b"][0], 1),
        "loop_gflop_per_second": round(rates["b"][0] * flops / 1e9, 1),
        **provenance((f"ONEDNN_MAX_CPU_ISA={isa} " if isa else "") + command),
    }
    new = pd.DataFrame([row])
    (pd.concat([table, new], ignore_index=True) if len(table) else new).to_csv(path, index=False)
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
