"""Data-layer figures: first and cached load time of the training split, and the peak memory of
computing the normalization statistics streamed (course_utils) versus as one float tensor (the
task statement's way).

    python benchmarks/data_benchmarks.py [--data-dir DIR]

Each measurement runs in a fresh Python process so that its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
from course_utils.data import load_cifar10, compute_mean_std

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

what, root = sys.argv[1], sys.argv[2]
start = time.perf_counter()
train = load_cifar10("train", root)
load_s = time.perf_counter() - start
before = peak_mb()
start = time.perf_counter()
if what == "streamed":
    mean, std = compute_mean_std(train.images)
elif what == "whole":  # the task statement's way: all 50,000 images as one float tensor
    x = torch.from_numpy(train.images).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, 32, 32)
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3), unbiased=False).tolist()
else:
    mean = std = None
print(json.dumps({"load_s": load_s, "stats_s": time.perf_counter() - start,
                  "extra_peak_mb": peak_mb() - before, "mean": mean, "std": std}))
"""


def run_child(what: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("COURSE_DATA_DIR", "data"))
    args = parser.parse_args()
    zip_path = Path(args.data_dir) / "cifar10-images.zip"
    if not zip_path.is_file():
        sys.exit(f"{zip_path} not found: point --data-dir at a folder holding cifar10-images.zip")

    with tempfile.TemporaryDirectory() as tmp:  # an empty cache, so the first load really decodes
        root = Path(tmp)
        (root / zip_path.name).symlink_to(zip_path.resolve())
        first = run_child("load", root)
        cached = run_child("load", root)
        streamed = run_child("streamed", root)
        whole = run_child("whole", root)
        shutil.rmtree(root / "cache", ignore_errors=True)

    print(f"torch threads: {os.cpu_count()} cores on this machine")
    print(f"load train split, first (decode JPEGs, write cache): {first['load_s']:6.2f} s")
    print(f"load train split, cached:                            {cached['load_s']:6.2f} s")
    print(f"statistics, streamed (compute_mean_std): {streamed['stats_s']:5.2f} s, "
          f"extra peak memory {streamed['extra_peak_mb']:6.0f} MB")
    print(f"statistics, one float tensor:            {whole['stats_s']:5.2f} s, "
          f"extra peak memory {whole['extra_peak_mb']:6.0f} MB")
    ratio = whole["extra_peak_mb"] / max(streamed["extra_peak_mb"], 1.0)
    print(f"memory ratio whole/streamed: {ratio:.1f}x")
    print(f"streamed mean {tuple(round(v, 4) for v in streamed['mean'])} "
          f"std {tuple(round(v, 4) for v in streamed['std'])}")
    print(f"whole    mean {tuple(round(v, 4) for v in whole['mean'])} "
          f"std {tuple(round(v, 4) for v in whole['std'])}")


if __name__ == "__main__":
    main()
