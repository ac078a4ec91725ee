"""Tests of training in several processes (course_utils.distributed): Gloo on the CPU.

The tests that train start two processes with torch.multiprocessing and give them the environment
torchrun gives (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so they go through the
same process-group setup as ``torchrun --nproc_per_node=2 -m course_utils train``. They train a
narrow ResNet-18 (width 8) on a small real subset of CIFAR-10 and write what the tests check to
files. The references are runs without the thing under test: one process at the same global batch,
the other process, or the same two processes without an interruption.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from course_utils.checkpoints import RESUME_KEYS, load_checkpoint
from course_utils.config import PROJECT_ROOT
from course_utils.data import (
    Shard,
    Splits,
    TensorLoader,
    build_loaders,
    cifar10_splits,
    compute_mean_std,
    make_loader,
    set_loader_epoch,
)
from course_utils.distributed import process_group
from course_utils.training import ConfigError, TrainConfig, build_model, fit

WORLD = 2
#: Training images of the small real subset: 8 steps of 64 per epoch.
TRAIN_IMAGES = 512
#: The first of them, for the runs in float64 (slower): 6 steps of 64.
UNAUGMENTED_IMAGES = 384
CONFIG = TrainConfig(width=8, epochs=2, batch_size=64, lr=0.1, patience=None, seed=0)


@pytest.fixture(scope="module")
def smoke_splits(cifar_root: Path) -> tuple[Splits, tuple[Any, Any]]:
    """A small real subset (the smoke split, fewer training images) and its statistics, loaded
    once and sent to the processes."""
    splits = cifar10_splits(cifar_root, seed=0, smoke=True)
    splits = dataclasses.replace(splits, train=splits.train.subset(np.arange(TRAIN_IMAGES)))
    return splits, compute_mean_std(splits.train.images)


# --------------------------------------------------------------------------------------------------
# Two processes, as torchrun starts them
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(rank: int, port: int, worker: Callable[..., None], args: tuple) -> None:
    """One of the processes: torchrun's environment, the process group, then ``worker``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)  # two processes on a two-core machine
    with process_group(torch.device("cpu")) as device:
        worker(rank, device, *args)


def run_two_processes(worker: Callable[..., None], *args: Any) -> None:
    """``worker(rank, device, *args)`` in two processes joined by Gloo; raises what they raise."""
    mp.spawn(_process, args=(_free_port(), worker, args), nprocs=WORLD, join=True)


def _train(
    rank: int,
    device: torch.device,
    splits: Splits,
    stats: tuple,
    cfg: TrainConfig,
    out: Path,
    resume: Path | None = None,
    stop_after_epoch: int | None = None,
) -> None:
    """Train with ``fit`` as the command line does; save this rank's weights and history."""
    mean, std = stats
    train, val, _ = build_loaders(splits, cfg, mean, std, device, Shard(rank, WORLD))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    result = fit(model, train, val, cfg, device, out_dir=out / f"run-rank{rank}",
                 resume=resume, mean=mean, std=std, stop_after_epoch=stop_after_epoch,
                 progress=False)  # fmt: skip
    torch.save(model.state_dict(), out / f"weights-rank{rank}.pt")
    result.history.to_csv(out / f"history-rank{rank}.csv", index=False)


class _InFloat64:
    """A loader whose images come in float64; in every other respect the loader itself."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return ((images.double(), labels) for images, labels in self.loader)

    def __getattr__(self, name: str) -> Any:  # generator, sampler, dataset
        return getattr(self.loader, name)


def _fit_in_float64(cfg: TrainConfig, train: Any, val: Any, device: torch.device | str,
                    out: Path) -> dict[str, torch.Tensor]:  # fmt: skip
    """Train in float64, without augmentation, and return the final weights.

    A narrow network at the start of training magnifies rounding enormously: in one process, a
    change of the initial weights by 1e-7 of their size changes gradients of at most 0.25 by 2e-2
    within three steps (measured). Two processes add up the same numbers in another order, so in
    float32 their rounding alone would exceed the tolerance; in float64 it cannot, and what
    remains is the difference in the computation itself.
    """
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).double()
    fit(model, _InFloat64(train), _InFloat64(val), cfg, device, out_dir=out, progress=False)
    return model.state_dict()


def _unaugmented_loader(splits: Splits, stats: tuple, batch_size: int, rank: int = 0,
                        world_size: int = 1) -> TensorLoader:  # fmt: skip
    """The first UNAUGMENTED_IMAGES training images, shuffled, not augmented."""
    return TensorLoader(splits.train.subset(np.arange(UNAUGMENTED_IMAGES)), batch_size,
                        shuffle=True, augment=False, stats=stats, seed=0, drop_last=True,
                        shard=Shard(rank, world_size))  # fmt: skip


def _first_runs(rank: int, device: torch.device, splits: Splits, stats: tuple, tmp: Path) -> None:
    """A whole run, the same run stopped after epoch 1, and unaugmented runs in float64 with and
    without --sync-bn."""
    _train(rank, device, splits, stats, CONFIG, tmp / "whole")
    _train(rank, device, splits, stats, CONFIG, tmp / "cut", stop_after_epoch=1)
    for sync_bn in (True, False):
        cfg = dataclasses.replace(CONFIG, epochs=1, sync_bn=sync_bn)
        _, val, _ = build_loaders(splits, cfg, *stats, device, Shard(rank, WORLD))
        train = _unaugmented_loader(splits, stats, cfg.batch_size // WORLD, rank, WORLD)
        weights = _fit_in_float64(cfg, train, val, device, tmp / f"sync_bn={sync_bn}-rank{rank}")
        torch.save(weights, tmp / f"sync_bn={sync_bn}-rank{rank}.pt")


def _resumed(rank: int, device: torch.device, splits: Splits, stats: tuple, tmp: Path) -> None:
    _train(rank, device, splits, stats, CONFIG, tmp / "resumed",
           resume=tmp / "cut" / "run-rank0" / "last.pt")  # fmt: skip


@pytest.fixture(scope="module")
def two_process_runs(smoke_splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs the tests below check, in two processes: first the whole, interrupted and
    unaugmented runs, then the interrupted one resumed in two new processes, as after a kill."""
    splits, stats = smoke_splits
    tmp = tmp_path_factory.mktemp("ddp")
    run_two_processes(_first_runs, splits, stats, tmp)
    run_two_processes(_resumed, splits, stats, tmp)
    return tmp


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.timeout(300)
def test_both_processes_end_with_bit_identical_weights_and_metrics(two_process_runs: Path):
    whole = two_process_runs / "whole"
    # DDP averages the gradients, so both processes take the same steps; both end with the same
    # BatchNorm statistics too (rank 0's, given to every process after each epoch).
    assert _max_difference(*(_weights(whole / f"weights-rank{r}.pt") for r in range(WORLD))) == 0
    # Both report the same training and validation numbers, over all of the data.
    histories = [pd.read_csv(whole / f"history-rank{r}.csv") for r in range(WORLD)]
    metrics = ["train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(histories[0][metrics], histories[1][metrics])
    assert list(histories[0]["epoch"]) == [1, 2]


@pytest.mark.timeout(300)
def test_rank_0_alone_writes_checkpoints_a_plain_model_loads(two_process_runs: Path):
    whole = two_process_runs / "whole"
    written = {path.name for path in (whole / "run-rank0").iterdir()}
    assert {"best.pt", "last.pt", "history.csv"} <= written
    assert not any((whole / "run-rank1").iterdir())
    plain = build_model(CONFIG)  # no DistributedDataParallel: keys without "module."
    state = load_checkpoint(whole / "run-rank0" / "last.pt", plain)
    assert set(RESUME_KEYS) <= set(state)
    assert _max_difference(plain.state_dict(), _weights(whole / "weights-rank0.pt")) == 0


@pytest.mark.timeout(300)
def test_a_run_stopped_after_an_epoch_resumes_in_two_processes_to_the_same_weights(
    two_process_runs: Path,
):
    whole = _weights(two_process_runs / "whole" / "weights-rank0.pt")
    for rank in range(WORLD):
        resumed = _weights(two_process_runs / "resumed" / f"weights-rank{rank}.pt")
        assert _max_difference(resumed, whole) == 0


@pytest.mark.timeout(300)
def test_two_processes_with_sync_bn_match_one_process_at_the_same_global_batch(
    two_process_runs: Path, smoke_splits, tmp_path: Path, one_thread
):
    splits, stats = smoke_splits
    # The reference: one process, the same batches of 64 in the same order.
    cfg = dataclasses.replace(CONFIG, epochs=1)
    _, val, _ = build_loaders(splits, cfg, *stats, torch.device("cpu"))
    one = _fit_in_float64(cfg, _unaugmented_loader(splits, stats, 64), val, "cpu", tmp_path)

    synced = _weights(two_process_runs / "sync_bn=True-rank0.pt")
    assert _max_difference(synced, _weights(two_process_runs / "sync_bn=True-rank1.pt")) == 0
    assert _max_difference(synced, one) < 1e-4
    # Without --sync-bn each process normalises its 32 images alone: a different computation.
    unsynced = _weights(two_process_runs / "sync_bn=False-rank0.pt")
    assert _max_difference(unsynced, one) > 1e-3


@pytest.mark.timeout(300)
def test_a_batch_size_that_does_not_divide_is_refused_before_any_work(tmp_path: Path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "course_utils", "train", "--smoke", "--device", "cpu", "--batch-size", "99",
         "--data-dir", str(tmp_path / "no-data"), "--out", str(out)],
        cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--batch-size: batch_size 99 is the global batch" in done.stderr, done.stderr[-3000:]
    assert "use --batch-size 98 or 100" in done.stderr
    assert not out.exists()  # refused before any data was looked for or any folder made


def test_the_batch_size_message_suggests_multiples():
    assert CONFIG.per_process_batch_size(1) == 64 and CONFIG.per_process_batch_size(4) == 16
    with pytest.raises(ConfigError, match="must divide by 3: use --batch-size 63 or 66") as info:
        CONFIG.per_process_batch_size(3)
    assert info.value.field == "batch_size"
    with pytest.raises(ConfigError, match="use --batch-size 8 or 16"):
        dataclasses.replace(CONFIG, batch_size=5).per_process_batch_size(8)


# --------------------------------------------------------------------------------------------------
# Sharding the training data, for both loaders (no processes needed: rank and world size are given)
# --------------------------------------------------------------------------------------------------


def test_tensor_loader_shards_are_the_one_process_batches_augmented_alike(smoke_splits):
    splits, (mean, std) = smoke_splits
    kwargs: dict[str, Any] = {"shuffle": True, "augment": True, "stats": (mean, std),
                              "seed": 3, "drop_last": True}  # fmt: skip
    one = TensorLoader(splits.train, 64, **kwargs)
    shards = [TensorLoader(splits.train, 32, shard=Shard(r, WORLD), **kwargs) for r in (0, 1)]
    for epoch in (1, 2):
        for loader in (one, *shards):
            set_loader_epoch(loader, seed=3, epoch=epoch)
        assert len(one) == len(shards[0]) == len(shards[1]) == len(splits.train) // 64
        for (x, y), (x0, y0), (x1, y1) in zip(one, *shards):
            # Rank r holds images r, r + 2, r + 4, ... of the one-process batch, augmented alike.
            assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
            assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    with pytest.raises(ValueError, match="drop_last=True"):
        TensorLoader(splits.train, 32, shard=Shard(0, WORLD))


class _Indices(torch.utils.data.Dataset):
    """Serves each index itself, to see which examples a loader hands out."""

    def __len__(self) -> int:
        return 103

    def __getitem__(self, index: int) -> int:
        return index


def _epoch_batches(loader: Any, epoch: int) -> list[np.ndarray]:
    set_loader_epoch(loader, seed=5, epoch=epoch)
    return [batch.numpy() for batch in loader]


def test_dataloader_shards_partition_each_epoch_and_reshuffle_from_seed_and_epoch():
    def shards() -> list[Any]:
        return [make_loader(_Indices(), 10, shuffle=True, seed=5, num_workers=0, drop_last=True,
                            shard=Shard(r, WORLD)) for r in (0, 1)]  # fmt: skip

    first, again = shards(), shards()
    seen = {}
    for epoch in (1, 2):
        batches = [_epoch_batches(loader, epoch) for loader in first]
        assert len(batches[0]) == len(batches[1]) == 103 // WORLD // 10  # same steps everywhere
        both = np.concatenate([np.concatenate(b) for b in batches])
        assert len(set(both)) == len(both) == 100  # disjoint shares, 51 per rank, 5 batches of 10
        # The same (seed, epoch) gives the same shares in new loaders: a resumed run sees them.
        for loader, expected in zip(again, batches):
            np.testing.assert_array_equal(np.concatenate(_epoch_batches(loader, epoch)),
                                          np.concatenate(expected))  # fmt: skip
        seen[epoch] = np.concatenate(batches[0])
    assert not np.array_equal(seen[1], seen[2])  # reshuffled every epoch


def test_build_loaders_slices_validation_and_test_in_order(smoke_splits):
    splits, (mean, std) = smoke_splits
    for loader_kind in ("tensor", "torch"):
        cfg = dataclasses.replace(CONFIG, loader=loader_kind, num_workers=0, eval_batch_size=64)
        parts = [build_loaders(splits, cfg, mean, std, torch.device("cpu"), Shard(r, WORLD))
                 for r in (0, 1)]  # fmt: skip
        for split, index in ((splits.val, 1), (splits.test, 2)):
            labels = np.concatenate([y.numpy() for p in parts for _, y in p[index]])
            np.testing.assert_array_equal(labels, split.labels)  # rank 0's slice, then rank 1's
        assert len(parts[0][0]) == len(parts[1][0]) == len(splits.train) // CONFIG.batch_size
