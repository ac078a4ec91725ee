"""What this machine can do: an environment report, a measured epoch time, the no-GPU warning.

The first cell of every notebook uses these on Colab, where a CPU-only runtime is an easy mistake,
and notebook 00 shows the report. Nothing here runs at import: each function measures when called.

Explained in notebook 00 (setup & imports).
"""

from __future__ import annotations

import platform

import numpy as np
import torch
from torch import nn

from course_utils.config import data_dir, get_device, is_smoke
from course_utils.data import TRAIN_SIZE, VAL_SIZE
from course_utils.models import NUM_CLASSES, resnet18
from course_utils.training import placement_for, train_one_epoch


def environment_report() -> dict[str, str]:
    """Versions, device and thread count, for the first cell of the course (notebook 00)."""
    import torchvision  # imported here, not at module import, to keep importing cheap

    device = get_device()
    report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cpu threads used by torch": str(torch.get_num_threads()),
        "smoke mode": str(is_smoke()),
        "data directory": str(data_dir()),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    return report


def estimate_epoch_minutes(
    width: int = 64,
    batch_size: int = 128,
    batches: int = 3,
    device: torch.device | str | None = None,
) -> float:
    """Minutes one training epoch of ResNet-18 at ``width`` takes on ``device``, measured.

    Times a few training steps on random images with a throwaway model (after one warm-up step)
    and scales up to the 45,000 training images of an epoch. A rough figure, to decide between a
    GPU and the ``cpu`` preset.
    """
    device = get_device() if device is None else torch.device(device)
    with torch.random.fork_rng(devices=[]):  # a measurement must not change the random state
        model = resnet18(width=width)
        place = placement_for(model, device)  # moved once, in the layout training uses
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        images = torch.randn(batch_size, 3, 32, 32)  # (B, 3, 32, 32)
        labels = torch.randint(0, NUM_CLASSES, (batch_size,))
        criterion = nn.CrossEntropyLoss()
        train_one_epoch(model, [(images, labels)], criterion, optimizer, place)  # warm-up
        timed = train_one_epoch(model, [(images, labels)] * batches, criterion, optimizer, place)
    return timed.seconds / timed.images * (TRAIN_SIZE - VAL_SIZE) / 60


def warn_if_no_gpu(width: int = 64) -> bool:
    """On a machine without a CUDA GPU, say so, with the measured minutes per epoch.

    Called by every notebook's first cell on Colab, where a CPU-only runtime is an easy mistake.

    Returns:
        ``True`` if a warning was printed.
    """
    if torch.cuda.is_available():
        return False
    minutes = estimate_epoch_minutes(width=width, batches=2)
    print(
        f"No GPU found: one epoch of ResNet-18 (width {width}) would take about {minutes:.0f} "
        "minutes here.\nOn Colab choose Runtime > Change runtime type > GPU, then run this cell "
        "again; without a GPU the course uses its smaller `cpu` preset."
    )
    return True
