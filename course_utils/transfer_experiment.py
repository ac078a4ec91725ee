"""Notebook 08's experiment: pretrain on CIFAR-10's animals, then learn its vehicles three ways.

    python -m course_utils experiment transfer --seeds 0 1 2   # -> results/experiments/transfer.csv

For each seed: pretrain the ``cpu`` preset's network (a width-16 ResNet-18) on the six animal
classes, then, for each number of labelled vehicle images per class, train a 4-class vehicle
classifier in each of three ways (:data:`METHODS`: from scratch, linear probe, fine-tuning) for the
same number of optimizer steps, and measure it once on the labelled images it trained on (its
*training accuracy*, without augmentation) and on the 4,000 vehicle test images.

Everything is counted in epochs and steps, not minutes: the table then does not depend on how fast
or how busy the machine was, and notebook 08 runs the same work as the table's seed 0 (the same
labelled images and initial weights; the floating-point sums, and so the numbers, vary with the
machine and its number of threads about as much as between seeds).
Nothing is chosen on the test images: the recipes are fixed beforehand, the transfer runs are
tested with their last weights, and the pretraining keeps its best epoch on the *animals'*
validation images.

Explained in notebook 08 (transfer learning).
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
from torch import nn

from course_utils.config import TrainConfig, set_seed, smoke_config
from course_utils.data import (
    CIFAR10Arrays,
    Splits,
    TensorLoader,
    batches_forever,
    select_classes,
    stratified_subset,
)
from course_utils.run import setup_run
from course_utils.training import (
    build_model,
    build_optimizer,
    build_scheduler,
    evaluate,
    fit,
    train_one_epoch,
)
from course_utils.transfer import ANIMALS, VEHICLES

#: The three ways to start the vehicle task, in the order the notebook shows them.
METHODS = ("from scratch", "linear probe", "fine-tuning")
#: Fine-tuning: the backbone learns at this fraction of the head's learning rate.
BACKBONE_LR = 0.1


@dataclass(frozen=True)
class TransferSizes:
    """How long the experiment trains: one place for its numbers."""

    pretrain_epochs: int  # epochs of pretraining on the 27,000 animal training images
    labels_per_class: tuple[int, ...]  # labelled vehicle images per class, one row of runs each
    steps: int  # optimizer steps of every transfer run (batch 64), whatever its number of labels


#: The committed table's sizes, and the smoke-mode sizes (the smoke subset has 100 images a class).
FULL = TransferSizes(pretrain_epochs=4, labels_per_class=(100, 250, 500), steps=300)
SMOKE = TransferSizes(pretrain_epochs=2, labels_per_class=(20, 50), steps=10)


def sizes_for(*, smoke: bool) -> TransferSizes:
    return SMOKE if smoke else FULL


def pretrain_config(seed: int, *, smoke: bool = False) -> TrainConfig:
    """The animal pretraining: the ``cpu`` preset's network, one-cycle, label smoothing 0.1."""
    cfg = TrainConfig(width=16, epochs=FULL.pretrain_epochs, batch_size=128, lr=0.2,
                      label_smoothing=0.1, patience=None, num_workers=0, seed=seed)  # fmt: skip
    return smoke_config(cfg) if smoke else cfg


def method_configs(pretrained: str | Path, seed: int, width: int = 16) -> dict[str, TrainConfig]:
    """The configuration of each method; ``pretrained`` is the animal checkpoint."""
    base = TrainConfig(width=width, batch_size=64, lr=0.1, label_smoothing=0.1, patience=None,
                       num_workers=0, seed=seed)  # fmt: skip
    return {
        "from scratch": base,
        "linear probe": dataclasses.replace(base, init=str(pretrained), freeze_backbone=True),
        "fine-tuning": dataclasses.replace(base, init=str(pretrained), backbone_lr=BACKBONE_LR),
    }


class TransferTask(NamedTuple):
    """The two tasks cut from CIFAR-10's splits."""

    animals: Splits  # the source task: all of its training, validation and test images
    vehicles_train: CIFAR10Arrays  # the target task's training images, of which a few are labelled
    vehicles_test: CIFAR10Arrays


def split_tasks(splits: Splits) -> TransferTask:
    """The animal and vehicle tasks of ``splits``, their labels numbered from 0 again."""
    animals = Splits(*(select_classes(getattr(splits, part), ANIMALS)
                       for part in ("train", "val", "test")))  # fmt: skip
    return TransferTask(animals, select_classes(splits.train, VEHICLES),
                        select_classes(splits.test, VEHICLES))  # fmt: skip


class Pretrained(NamedTuple):
    """A finished animal pretraining."""

    checkpoint: Path  # its best epoch on the animals' validation images
    mean: tuple[float, ...]  # the animal images' statistics: transfer runs normalize with them
    std: tuple[float, ...]
    val_accuracy: float  # on the 6 animal classes
    seconds: float
    width: int  # the network's width: the transfer runs build the same network


def pretrain(animals: Splits, cfg: TrainConfig, device: torch.device, out_dir: Path,
             *, progress: bool = False) -> Pretrained:  # fmt: skip
    """Train ``cfg`` on the animals into ``out_dir``; keep the best epoch on their validation."""
    start = time.perf_counter()
    run = setup_run(cfg, device, splits=animals)  # seed, the animals' own statistics, loaders
    result = fit(run.model, run.train_loader, run.val_loader, cfg, device, out_dir=out_dir,
                 classes=ANIMALS, mean=run.mean, std=run.std, progress=progress)  # fmt: skip
    return Pretrained(result.best_checkpoint, tuple(run.mean), tuple(run.std),
                      float(result.best_score), time.perf_counter() - start, cfg.width)  # fmt: skip


def train_and_test(
    cfg: TrainConfig,
    labelled: CIFAR10Arrays,
    test: CIFAR10Arrays,
    steps: int,
    pretrained: Pretrained,
    device: torch.device,
) -> tuple[nn.Module, dict[str, float]]:
    """Train a vehicle classifier as ``cfg`` says for ``steps`` steps on the ``labelled`` images;
    then measure its accuracy on them (no augmentation) and on ``test``, each once."""
    set_seed(cfg.seed)
    model = build_model(cfg, num_classes=len(VEHICLES))
    stats = (pretrained.mean, pretrained.std)
    loader = TensorLoader(labelled, cfg.batch_size, shuffle=True, augment=True, stats=stats,
                          seed=cfg.seed, drop_last=True).to(device)  # fmt: skip
    if len(loader) == 0:  # no full batch: say why, in this experiment's words
        raise ValueError(f"{len(labelled)} labelled images do not fill one batch of "
                         f"{cfg.batch_size}: label more images, or use a smaller batch_size")
    optimizer = build_optimizer(model, cfg)
    cfg = dataclasses.replace(cfg, epochs=1)  # one "epoch" of `steps` batches, for the schedule
    scheduler, per_batch = build_scheduler(optimizer, cfg, steps_per_epoch=steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    start = time.perf_counter()
    train_one_epoch(model, itertools.islice(batches_forever(loader, cfg.seed), steps), criterion,
                    optimizer, device, scheduler=scheduler if per_batch else None)  # fmt: skip
    seconds = time.perf_counter() - start
    train_part, test_part = (TensorLoader(part, 500, stats=stats).to(device)
                             for part in (labelled, test))  # fmt: skip
    return model, {
        "train_accuracy": evaluate(model, train_part, device).accuracy,
        "test_accuracy": evaluate(model, test_part, device).accuracy,
        "passes": steps * cfg.batch_size / len(labelled),  # times each labelled image was seen
        "seconds": seconds,
    }


def transfer_runs(
    task: TransferTask,
    pretrained: Pretrained,
    seed: int,
    sizes: TransferSizes,
    device: torch.device,
) -> pd.DataFrame:
    """Every method at every number of labels, from one pretraining: one row per run."""
    rows = []
    for per_class in sizes.labels_per_class:
        chosen = stratified_subset(task.vehicles_train.labels, per_class, seed=seed)
        labelled = task.vehicles_train.subset(chosen)
        for method, cfg in method_configs(pretrained.checkpoint, seed, pretrained.width).items():
            _, measured = train_and_test(cfg, labelled, task.vehicles_test, sizes.steps,
                                         pretrained, device)  # fmt: skip
            rows.append({"seed": seed, "labelled_per_class": per_class, "method": method,
                         **measured, "steps": sizes.steps})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.assign(pretrain_epochs=sizes.pretrain_epochs,
                        pretrain_val_accuracy=pretrained.val_accuracy,
                        pretrain_seconds=round(pretrained.seconds, 1))  # fmt: skip


def transfer_table(
    splits: Splits,
    seeds: Sequence[int],
    device: torch.device,
    *,
    smoke: bool = False,
    work_dir: Path | None = None,
) -> pd.DataFrame:
    """The whole experiment: for each seed, one pretraining and all its transfer runs."""
    task, sizes = split_tasks(splits), sizes_for(smoke=smoke)
    tables = []
    for seed in seeds:
        out = Path(work_dir or tempfile.mkdtemp(prefix="transfer-")) / f"animals-seed{seed}"
        print(f"[transfer] seed {seed}: pretraining on the animals", flush=True)
        pretrained = pretrain(task.animals, pretrain_config(seed, smoke=smoke), device, out)
        tables.append(transfer_runs(task, pretrained, seed, sizes, device))
    return pd.concat(tables, ignore_index=True)


def summarize_transfer(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, and smallest and largest over seeds, of each method's accuracies at each size."""
    grouped = table.groupby(["labelled_per_class", "method"], sort=False)
    summary = grouped[["train_accuracy", "test_accuracy"]].agg(["mean", "min", "max"])
    summary[("seeds", "")] = grouped["seed"].nunique()
    return summary


def paired_gains(table: pd.DataFrame, better: str, worse: str) -> pd.DataFrame:
    """Per size and seed, ``better``'s test accuracy minus ``worse``'s (the same pretraining and
    labelled images): positive where ``better`` won."""
    wide = table.pivot_table(index=["labelled_per_class", "seed"], columns="method",
                             values="test_accuracy")  # fmt: skip
    return (wide[better] - wide[worse]).unstack("seed")



#: How much a claimed difference must exceed in every seed to be stated (accuracy; 0.02 = 2 points).
CLAIM_MARGIN = 0.02


def transfer_claims(table: pd.DataFrame) -> dict[str, bool]:
    """The statements notebook 08 makes about a transfer table, each checked within every seed
    (paired: the same pretraining and labelled images) with a margin of :data:`CLAIM_MARGIN`.
    Returns ``{statement: holds in every seed}``, in the order the notebook discusses them."""
    sizes = sorted(table["labelled_per_class"].unique())
    fewest, most = sizes[0], sizes[-1]
    finetune_lead = paired_gains(table, "fine-tuning", "from scratch")
    lead_over_both = finetune_lead.clip(upper=paired_gains(table, "fine-tuning", "linear probe"))
    scratch = table[table["method"] == "from scratch"].set_index(["labelled_per_class", "seed"])
    overfit = (scratch["train_accuracy"] - scratch["test_accuracy"]).unstack("seed")
    test = table.pivot_table(index="labelled_per_class", columns=["method", "seed"],
                             values="test_accuracy")  # fmt: skip
    gain = test.loc[most] - test.loc[fewest]  # per method and seed, from the fewest labels
    m, points = CLAIM_MARGIN, f"{100 * CLAIM_MARGIN:.0f} points"
    return {
        f"At every number of labels, fine-tuning beats both other methods by more than {points}.":
            bool((lead_over_both > m).all().all()),
        f"Fine-tuning's lead over training from scratch is more than {points} smaller with the "
        f"most labels ({most} per class) than with the fewest ({fewest}).":
            bool((finetune_lead.loc[fewest] - finetune_lead.loc[most] > m).all()),
        f"With the fewest labels, training from scratch scores more than {1000 * m:.0f} points "
        f"higher on its training images than on the test images: it overfits the few it has.":
            bool((overfit.loc[fewest] > 10 * m).all()),
        f"From the fewest labels to the most, the linear probe gains more than {points} less "
        f"than training from scratch: its features stay as they are.":
            bool((gain["from scratch"] - gain["linear probe"] > m).all()),
    }
