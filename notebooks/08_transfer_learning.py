# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Transfer learning: linear probe, fine-tuning and ImageNet weights
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/08_transfer_learning.ipynb)
#
# Notebooks 05 and 06 trained ResNet-18 from random weights on 45,000 labelled images. Most real
# projects have far fewer labels. The usual way out is **transfer learning**: start from a network
# that was trained on another, larger task, and adapt it. This notebook measures *why* that
# works, with numbers from cells that run offline on a CPU: we pretrain on the six animal classes
# of CIFAR-10, then learn the four vehicle classes, which the pretrained network has never seen,
# from 100 to 500 labelled images per class, in three ways. Then it shows *how* to do the same
# with the ImageNet weights that torchvision publishes.
#
# **Learning objectives.** After this notebook you can
# - explain why features learned on one task help on another, and measure how much, against the
#   number of labelled images;
# - replace a network's head, freeze its backbone for a **linear probe** (BatchNorm included), and
#   **fine-tune** it with a smaller learning rate for the backbone (optimizer parameter groups);
# - load torchvision's ImageNet weights into the course's ResNet, normalize with the constants
#   they were trained with, and weigh upsampling the images against the time it costs;
# - do all of it from the command line, `python -m course_utils train --init ...`.
#
# **Course map:** previous: [07 · The experiments lab](07_experiments_lab.ipynb). The
# functions used here live in `course_utils/transfer.py` (the class subsets and resized batches in
# `data.py`, the shipped checkpoints in `checkpoints.py`).

# %%
# Setup: on Google Colab, install the course's helper package and check for a GPU;
# elsewhere this does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    REPO = "https://github.com/resnet18-cifar10-course/resnet18-cifar10"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"course-utils @ git+{REPO}"], check=True
    )
    from course_utils.machine import warn_if_no_gpu

    warn_if_no_gpu()  # a CPU-only runtime: says so, with the measured minutes per epoch

# %%
import itertools
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from course_utils.budget import BudgetError, fit_to_budget, measure_throughput
from course_utils.checkpoints import PretrainedNotFoundError, load_checkpoint
from course_utils.config import get_device, is_smoke, set_seed
from course_utils.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_SIZE,
    VAL_SIZE,
    CIFAR10Arrays,
    Resized,
    Splits,
    TensorLoader,
    build_loaders,
    cifar10_splits,
    compute_mean_std,
    select_classes,
    set_loader_epoch,
    stratified_subset,
)
from course_utils.exercises.notebook08 import check_parameter_groups
from course_utils.models import count_parameters, resnet18
from course_utils.training import (
    TrainConfig,
    build_model,
    build_optimizer,
    build_scheduler,
    evaluate,
    fit,
    smoke_config,
    train_one_epoch,
)
from course_utils.transfer import (
    ANIMALS,
    IMAGENET_SIZE,
    VEHICLES,
    FrozenBatchNorm2d,
    imagenet_state_dict,
    replace_head,
)

device = get_device()
print(f"Device: {device}; smoke mode: {is_smoke()}")

# %% [markdown]
# Every size of this notebook in one place. Smoke mode (`COURSE_SMOKE=1`) shrinks them so that the
# whole notebook runs in about a minute; the full sizes are budgeted to fit in 15 minutes on a
# laptop's CPU (the time budgets below are measured against this machine's speed as it runs).

# %%
SMOKE_MODE = is_smoke()
PRETRAIN_MINUTES = 7  # time budget of the animal pretraining (full mode; smoke: 2 epochs)
LABELS_PER_CLASS = (20, 50) if SMOKE_MODE else (100, 250, 500)  # labelled vehicle images per class
TRANSFER_MINUTES = 0.2 if SMOKE_MODE else 4  # time budget of all the transfer runs together
MAX_STEPS = 10 if SMOKE_MODE else 300  # optimizer steps of a transfer run (batch 64), or fewer
BACKBONE_LR = 0.1  # fine-tuning: the backbone learns at this fraction of the head's lr
IMAGE_SIZES = (32, 128) if SMOKE_MODE else (32, 64, 128, IMAGENET_SIZE)  # the ImageNet part
IMAGENET_PER_CLASS = 10 if SMOKE_MODE else 100  # training images per class, ImageNet part
IMAGENET_MINUTES_PER_SIZE = 0.2 if SMOKE_MODE else 2  # skip a size whose training takes longer

# %% [markdown]
# ## 1. Two tasks from one dataset
#
# CIFAR-10's classes fall into two groups: six **animals** (bird, cat, deer, dog, frog, horse) and
# four **vehicles** (airplane, automobile, ship, truck). They make a clean transfer experiment:
# - the **source task** is the animals, with all of their 27,000 training images: the "large
#   labelled dataset" someone else trained on;
# - the **target task** is the vehicles, with only a few labelled images per class: your project.
#
# The pretrained network never sees a vehicle, in any split. What it can pass on is only what
# it learned about images in general: edges, textures, colours, shapes. `select_classes` keeps the
# images of some classes and numbers them from 0 again.

# %%
splits = cifar10_splits(download=True)  # smoke mode: a small stratified subset
animals = Splits(*(select_classes(getattr(splits, part), ANIMALS) for part in ("train", "val", "test")))
vehicles_train = select_classes(splits.train, VEHICLES)  # we will label only a few of these
vehicles_test = select_classes(splits.test, VEHICLES)
pd.DataFrame({
    "animals (source)": [len(animals.train), len(animals.val), len(animals.test)],
    "vehicles (target)": [len(vehicles_train), 0, len(vehicles_test)],
}, index=["train", "validation", "test"])

# %%
# Sanity check: the two tasks share no class, and the labels are renumbered 0..k-1.
assert not set(animals.train.classes) & set(vehicles_train.classes)
assert sorted(np.unique(animals.train.labels)) == list(range(len(ANIMALS)))
assert sorted(np.unique(vehicles_test.labels)) == list(range(len(VEHICLES)))

# %% [markdown]
# ## 2. Pretraining on the animals
#
# This is the part someone else usually does for you, on a much larger dataset. We train the
# network of the course's `cpu` preset (a width-16 ResNet-18) with a one-cycle schedule and label
# smoothing on the six animal classes, for as many epochs as fit in a few minutes on this
# machine, and keep the best checkpoint on the animals' validation images. The normalization
# statistics are the animal images': a network must later be fed images normalized the way it
# was trained.

# %%
pretrain_cfg = TrainConfig(width=16, minutes=PRETRAIN_MINUTES, batch_size=128, lr=0.2,
                           label_smoothing=0.1, patience=None, num_workers=0)
if SMOKE_MODE:
    pretrain_cfg = smoke_config(pretrain_cfg)
start = time.perf_counter()
mean, std = compute_mean_std(animals.train.images)  # the source task's statistics
set_seed(pretrain_cfg.seed)
animal_loaders = build_loaders(animals, pretrain_cfg, mean, std, device)
animal_model = build_model(pretrain_cfg, num_classes=len(ANIMALS))
deadline = None  # for fit: when training must end, if it has a budget
if pretrain_cfg.minutes is not None:
    try:
        pretrain_cfg, deadline = fit_to_budget(pretrain_cfg, animal_model, animal_loaders, device,
                                               start)
    except BudgetError as too_slow:  # a slow or busy machine: one epoch of the images that fit
        speed = measure_throughput(animal_model, *animal_loaders[:2], pretrain_cfg, device)
        fit_images = 60 * PRETRAIN_MINUTES / speed.train * pretrain_cfg.batch_size
        keep = stratified_subset(animals.train.labels, int(fit_images / len(ANIMALS)))
        animal_loaders = build_loaders(replace(animals, train=animals.train.subset(keep)),
                                       pretrain_cfg, mean, std, device)
        pretrain_cfg = replace(pretrain_cfg, epochs=1)
        print(f"{too_slow}\nSo: one epoch of {len(keep):,} of the animal images.")
out = Path(tempfile.mkdtemp(prefix="notebook08-animals-"))  # a throwaway folder of this session
pretraining = fit(animal_model, animal_loaders[0], animal_loaders[1], pretrain_cfg, device,
                  out_dir=out, classes=ANIMALS, mean=mean, std=std, deadline=deadline)
PRETRAINED = str(pretraining.best_checkpoint)  # what the transfer runs start from
print(f"pretrained on {len(animals.train):,} animal images in {time.perf_counter() - start:.0f} s: "
      f"validation accuracy {pretraining.best_score:.1%} on the 6 animal classes "
      f"(chance: {1 / len(ANIMALS):.0%}); saved as {PRETRAINED}")

# %% [markdown]
# ## 3. Three ways to start the vehicle task
#
# The pretrained network ends in a head for six animal classes. The vehicle task has four other
# classes, so every method below replaces the head (`model.fc`) with a new, randomly initialised
# 4-class linear layer, and differs in what happens to the rest, the **backbone**:
#
# | method | backbone starts from | backbone trains? | `TrainConfig` |
# | --- | --- | --- | --- |
# | from scratch | random weights | yes | `init="scratch"` |
# | linear probe | the pretrained weights | no: frozen | `init=PRETRAINED, freeze_backbone=True` |
# | fine-tuning | the pretrained weights | yes, 10x more slowly | `init=PRETRAINED, backbone_lr=0.1` |
#
# `build_model` reads these fields: with `init` it loads every weight of the checkpoint except
# the head's (`load_backbone`, which first checks that the backbones have the same architecture),
# so the new head keeps its fresh random weights.
#
# **Freezing is two things.** `requires_grad_(False)` on the backbone's parameters stops their
# updates, and also makes each step cheaper: the backward pass stops at the head. But BatchNorm
# layers also change in training mode, without any gradient: they normalize each batch with that
# batch's own statistics and update their running statistics towards the new data. A frozen
# backbone must compute the *same* features in training and in evaluation, so `freeze_backbone`
# replaces every BatchNorm of the backbone with a `FrozenBatchNorm2d`, a BatchNorm that stays in
# evaluation mode even inside a model put in training mode. It has the same parameters and
# buffers, so checkpoints keep the same keys and load into an unfrozen network.
#
# **Fine-tuning with a smaller learning rate for the backbone.** The new head starts from random
# weights and needs the full learning rate; the backbone is already good, and large steps would
# first wreck it with the gradients of a random head. Optimizers take **parameter groups**, each
# with its own learning rate:
#
# ```python
# torch.optim.SGD([{"params": head_parameters, "lr": 0.1},
#                  {"params": backbone_parameters, "lr": 0.01}], momentum=0.9)
# ```
#
# and the schedulers scale each group's rate in step. `build_optimizer` builds these groups when
# `backbone_lr` is below 1. The three models side by side:

# %%
transfer_cfg = TrainConfig(width=pretrain_cfg.width, batch_size=64, lr=0.1, label_smoothing=0.1,
                           patience=None, num_workers=0)
METHODS = {
    "from scratch": transfer_cfg,
    "linear probe": replace(transfer_cfg, init=PRETRAINED, freeze_backbone=True),
    "fine-tuning": replace(transfer_cfg, init=PRETRAINED, backbone_lr=BACKBONE_LR),
}
rows = {}
for method, cfg in METHODS.items():
    model = build_model(cfg, num_classes=len(VEHICLES))
    groups = build_optimizer(model, cfg).param_groups
    model.train()  # as in training: which BatchNorm layers still follow the batches?
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    rows[method] = {
        "trainable parameters": count_parameters(model),
        "of all": count_parameters(model, trainable_only=False),
        "optimizer groups (lr)": ", ".join(f"{g['name']} ({g['lr']:g})" for g in groups),
        "BatchNorm layers in train mode": f"{sum(m.training for m in batchnorms)} of {len(batchnorms)}",
        "frozen BatchNorm layers": sum(isinstance(m, FrozenBatchNorm2d) for m in batchnorms),
    }
pd.DataFrame(rows).transpose()

# %%
# Sanity check: the probe trains only the head (4 classes x (8 x width) features + 4 biases).
probe = build_model(METHODS["linear probe"], num_classes=len(VEHICLES))
assert count_parameters(probe) == len(VEHICLES) * (8 * transfer_cfg.width + 1)
assert all(not m.training for m in probe.train().modules() if isinstance(m, nn.BatchNorm2d))

# %% [markdown]
# ### Exercise: parameter groups
#
# Write `my_parameter_groups(model, lr, backbone_lr)`: the parameter groups for fine-tuning, a
# list of two dictionaries as in the `SGD` call above. The head (`model.fc`) learns at `lr`, every
# other parameter at `lr * backbone_lr`, and every parameter is in exactly one group. The check
# tries two pairs of `lr` and `backbone_lr` and compares the learning rate each named parameter
# gets from your groups with what `course_utils.transfer.parameter_groups` gives.

# %%
def my_parameter_groups(model: nn.Module, lr: float, backbone_lr: float) -> list[dict]:
    """Two parameter groups: model.fc at lr, everything else at lr * backbone_lr."""
    # Hint: compare parameters by identity, e.g. with a set of id(p) for p in model.fc.parameters().
    ### BEGIN SOLUTION
    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return [{"params": head, "lr": lr}, {"params": backbone, "lr": lr * backbone_lr}]
    ### END SOLUTION


# %%
demo = build_model(transfer_cfg, num_classes=len(VEHICLES))
rates = check_parameter_groups(my_parameter_groups, demo)  # lr 0.1, backbone_lr 0.1 shown below
pd.Series(rates).groupby(lambda name: name.split(".")[0], sort=False).agg(["min", "max", "count"])

# %% [markdown]
# ## 4. The experiment: accuracy against labelled images per class
#
# For each number of labelled vehicle images per class, each method trains with the same recipe
# and the same number of optimizer steps (so the same number of images seen, and for the
# trainable methods about the same time), then is tested once on the 4,000 vehicle test images.
# Nothing is chosen by looking at the test set: the recipe was fixed beforehand and the last
# weights are tested, so no validation split has to come out of the few labels.
#
# How many steps: as many as fit in `TRANSFER_MINUTES` for all the runs together, up to
# `MAX_STEPS`, timed on this machine the way `--minutes` does (notebook 05).

# %%
test_loader = TensorLoader(vehicles_test, 500, mean=mean, std=std, device=device)
labelled = {n: vehicles_train.subset(stratified_subset(vehicles_train.labels, n))
            for n in LABELS_PER_CLASS}  # n labelled images of each vehicle class
trial_loader = TensorLoader(labelled[LABELS_PER_CLASS[-1]], transfer_cfg.batch_size, shuffle=True,
                            augment=True, mean=mean, std=std, device=device)
speed = measure_throughput(build_model(transfer_cfg, len(VEHICLES)), trial_loader, test_loader,
                           transfer_cfg, device)
tests = len(LABELS_PER_CLASS) * len(METHODS) * len(test_loader) * speed.eval  # seconds, all tests
steps_per_size = 2 + 1 / 3  # from scratch and fine-tuning; a probe step costs about a third
affordable = (60 * TRANSFER_MINUTES - tests) / (len(LABELS_PER_CLASS) * steps_per_size * speed.train)
TRANSFER_STEPS = int(max(10, min(MAX_STEPS, affordable)))
print(f"{transfer_cfg.batch_size / speed.train:.0f} training images/s here: {TRANSFER_STEPS} steps "
      f"of {transfer_cfg.batch_size} images per run")
if TRANSFER_STEPS < MAX_STEPS:
    print("A slower (or busier) machine than this notebook was sized for: the runs are shorter, "
          "and the differences between the methods smaller and noisier.")

# %% [markdown]
# The loop is the one notebook 05 wrote, `train_one_epoch`, with the optimizer and schedule of
# `build_optimizer` and `build_scheduler`:

# %%
def batches(loader: TensorLoader, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of `loader`, pass after pass (each shuffled and augmented anew), without end."""
    for epoch in itertools.count(1):
        set_loader_epoch(loader, seed, epoch)
        yield from loader


def train_and_test(cfg: TrainConfig, train_data: CIFAR10Arrays) -> tuple[nn.Module, dict]:
    """Train a vehicle classifier as `cfg` says for TRANSFER_STEPS steps; test it once."""
    set_seed(cfg.seed)
    model = build_model(cfg, num_classes=len(VEHICLES))
    loader = TensorLoader(train_data, cfg.batch_size, shuffle=True, augment=True, mean=mean,
                          std=std, device=device, seed=cfg.seed, drop_last=True)
    optimizer = build_optimizer(model, cfg)
    cfg = replace(cfg, epochs=1)  # one "epoch" of TRANSFER_STEPS batches, for the schedule
    scheduler, per_batch = build_scheduler(optimizer, cfg, steps_per_epoch=TRANSFER_STEPS)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    start = time.perf_counter()
    train_one_epoch(model, itertools.islice(batches(loader, cfg.seed), TRANSFER_STEPS), criterion,
                    optimizer, device, scheduler=scheduler if per_batch else None)
    seconds = time.perf_counter() - start
    test = evaluate(model, test_loader, device)
    passes = TRANSFER_STEPS * cfg.batch_size / len(train_data)  # times each image was seen
    return model, {"test accuracy": test.accuracy, "passes": passes, "seconds": seconds}


pretrained_weights = load_checkpoint(PRETRAINED)["model"]
results = []
for per_class in LABELS_PER_CLASS:
    for method, cfg in METHODS.items():
        model, measured = train_and_test(cfg, labelled[per_class])
        results.append({"labelled per class": per_class, "method": method, **measured})
        print(f"{per_class:>4} per class, {method:<13} {measured['test accuracy']:.1%} "
              f"({measured['passes']:.0f} passes over the images, {measured['seconds']:.0f} s)")
        if method == "linear probe":  # frozen means frozen: weights and BatchNorm statistics
            assert all(torch.equal(value.cpu(), pretrained_weights[key])
                       for key, value in model.state_dict().items() if not key.startswith("fc."))
results = pd.DataFrame(results)
table = results.pivot(index="labelled per class", columns="method", values="test accuracy")
table = table[list(METHODS)]
table.style.format("{:.1%}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for method in METHODS:
    ax.plot(table.index, 100 * table[method], "o-", label=method)
ax.axhline(100 / len(VEHICLES), color="gray", ls=":", label="chance")
ax.set(xscale="log", xticks=table.index, xticklabels=table.index,
       xlabel="labelled vehicle images per class (log scale)", ylabel="test accuracy (%)",
       title="Vehicles, after pretraining on animals")
ax.legend()
plt.show()

# %% [markdown]
# ## 5. What the numbers say
#
# The statements below are computed from the table, for this run:

# %%
fewest, most = table.index.min(), table.index.max()
gain = table["fine-tuning"] - table["from scratch"]
print(f"Fine-tuning minus training from scratch: {100 * gain[fewest]:+.1f} points with {fewest} "
      f"labelled images per class, {100 * gain[most]:+.1f} with {most}.")
best_at = table.idxmax(axis=1)
print("Best method at each size:", ", ".join(f"{n}: {m}" for n, m in best_at.items()))
probe_gain = table["linear probe"].iloc[-1] - table["linear probe"].iloc[0]
scratch_gain = table["from scratch"].iloc[-1] - table["from scratch"].iloc[0]
print(f"From {fewest} to {most} per class, the linear probe gains {100 * probe_gain:+.1f} points, "
      f"training from scratch {100 * scratch_gain:+.1f}.")

# %% [markdown]
# How to read them (the exact figures move a little with the machine, because the pretraining's
# time budget buys more epochs on a faster one, and in smoke mode they mean little):
#
# - **Pretrained features help most when labels are scarce.** With few images per class, a
#   network trained from scratch has too little data to learn good features; the pretrained
#   backbone brings features learned from 27,000 other images. (Whether scratch mostly underfits
#   or overfits here, this table cannot say: it records no training accuracy, and every run gets
#   the same number of steps.)
# - **The linear probe is cheap and stable, but capped.** Only a linear layer learns, on features
#   that were shaped to tell a cat from a dog, not a ship from a truck. It improves little with
#   more labels, because the features stay as they are.
# - **Fine-tuning adapts the features** and is usually the best of the three: it starts from the
#   pretrained features and bends them towards the new classes, slowly enough not to destroy
#   them. With many more labels and longer training than here, training from scratch can close
#   the gap (He, Girshick and Dollár 2019, "Rethinking ImageNet Pre-training", found so for object
#   detection on COCO); the table stops at 500 labels per class and a fixed number of steps, so it
#   does not show that.
# - Transfer works because the source and target images share low-level structure (the same
#   camera, resolution and kind of scene). From a very different source (say, X-ray images) the
#   probe would do far worse, and fine-tuning would need more labels.
#
# ## 6. ImageNet weights with torchvision
#
# In practice the source task is ImageNet: 1.28 million images of 1,000 classes, on which
# torchvision trained ResNet-18 and published the weights (`ResNet18_Weights.IMAGENET1K_V1`). The
# course's ResNet with the ImageNet stem has torchvision's layer names (notebook 04), so the
# weights load into it as they are, and `build_model` does it for
# `TrainConfig(init="imagenet", stem="imagenet", width=64)`.
#
# **Normalize with ImageNet's constants.** The ImageNet weights were trained on images normalized
# with ImageNet's channel means and standard deviations, so inputs to those weights must be
# normalized the same way, just as section 4 normalized with the animal images' statistics. That
# is the one place those constants belong. A network trained *from scratch* on CIFAR-10 should be
# normalized with CIFAR-10's own statistics (notebook 01); copying ImageNet's constants into such
# a script, as some tutorials do, is a habit carried over from transfer learning where it has no
# reason.

# %%
cifar_mean, cifar_std = compute_mean_std(splits.train.images)
pd.DataFrame({"ImageNet (torchvision's weights)": IMAGENET_MEAN + IMAGENET_STD,
              "CIFAR-10 training images": cifar_mean + cifar_std},
             index=["mean R", "mean G", "mean B", "std R", "std G", "std B"]).round(3)

# %% [markdown]
# With internet (on Colab, say) torchvision downloads the weights once, about 45 MB, into torch
# hub's cache. Without it, the next cell says which file to put where, and the notebook goes on:
# the timing below does not need the weights, only their architecture.

# %%
try:
    imagenet_weights = imagenet_state_dict(18)
except PretrainedNotFoundError as error:
    imagenet_weights = None
    print(f"No ImageNet weights on this machine, so this section measures speed only.\n{error}")

if imagenet_weights is not None:
    imagenet_model = resnet18(stem="imagenet", num_classes=1000)
    imagenet_model.load_state_dict(imagenet_weights)  # every key and shape matches torchvision's
    print(f"ImageNet ResNet-18: {count_parameters(imagenet_model):,} parameters")
    assert count_parameters(imagenet_model) == 11_689_512  # torchvision's resnet18
    replace_head(imagenet_model, num_classes=10)  # CIFAR-10's classes instead of ImageNet's
    print(f"with a 10-class head: {count_parameters(imagenet_model):,} parameters")

# %% [markdown]
# ### The input size: 32 × 32 as is, or upsampled?
#
# ImageNet images are seen at 224 × 224, and the ImageNet stem shrinks an image 4× before the
# first stage (notebook 04): a 32 × 32 CIFAR image is 8 × 8 after it and 1 × 1 in the last stage,
# far smaller than anything the weights were trained on. Upsampling the images (`Resized`, bilinear
# interpolation of each batch) brings the objects to a familiar size, at a cost that grows with
# the number of pixels. For each size we measure the time of a training epoch over the 45,000
# training images on this device (timed on a few batches, as `--minutes` does), and, when the
# ImageNet weights are here, fine-tune on a small subset (all ten classes) and test.

# %%
imagenet_cfg = TrainConfig(init="imagenet" if imagenet_weights is not None else "scratch",
                           stem="imagenet", width=64, batch_size=8 if SMOKE_MODE else 16, lr=0.01,
                           backbone_lr=BACKBONE_LR, epochs=2, patience=None, num_workers=0)
few = splits.train.subset(stratified_subset(splits.train.labels, IMAGENET_PER_CLASS))
test_few = splits.test.subset(stratified_subset(splits.test.labels, 10 if SMOKE_MODE else 100))
few_loader = TensorLoader(few, imagenet_cfg.batch_size, shuffle=True, augment=True,
                          mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device, drop_last=True)
few_test = TensorLoader(test_few, 2 * imagenet_cfg.batch_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        device=device)
sizes = []
for size in IMAGE_SIZES:
    set_seed(0)
    model = build_model(imagenet_cfg, num_classes=10)  # ImageNet's weights if here, else random
    speed = measure_throughput(model, Resized(few_loader, size), Resized(few_test, size),
                               imagenet_cfg, device)
    epoch_seconds = (TRAIN_SIZE - VAL_SIZE) / imagenet_cfg.batch_size * speed.train  # 45,000 images
    training_seconds = imagenet_cfg.epochs * len(few_loader) * speed.train
    row = {"image size": size, "seconds per epoch (45,000 images)": epoch_seconds,
           "test accuracy": np.nan, "note": ""}
    if imagenet_weights is None:
        row["note"] = "no ImageNet weights here"
    elif training_seconds > 60 * IMAGENET_MINUTES_PER_SIZE:
        row["note"] = f"skipped: {training_seconds / 60:.0f} min of training here"
    else:  # fine-tune at a constant learning rate (a short run), then test
        optimizer = build_optimizer(model, imagenet_cfg)
        for epoch in range(1, imagenet_cfg.epochs + 1):
            set_loader_epoch(few_loader, imagenet_cfg.seed, epoch)
            train_one_epoch(model, Resized(few_loader, size), nn.CrossEntropyLoss(), optimizer,
                            device)
        row["test accuracy"] = evaluate(model, Resized(few_test, size), device).accuracy
    sizes.append(row)
sizes = pd.DataFrame(sizes).set_index("image size")
sizes.style.format({"seconds per epoch (45,000 images)": "{:,.0f}", "test accuracy": "{:.1%}"},
                   na_rep="-")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
if sizes["test accuracy"].notna().any():
    ax.plot(sizes["seconds per epoch (45,000 images)"], 100 * sizes["test accuracy"], "o-")
    for size, row in sizes.dropna(subset=["test accuracy"]).iterrows():
        ax.annotate(f"{size} px", (row["seconds per epoch (45,000 images)"],
                                   100 * row["test accuracy"]), xytext=(5, -12),
                    textcoords="offset points")
    ax.set(xscale="log", xlabel="seconds per training epoch (log scale)",
           ylabel="test accuracy (%)", title="ImageNet ResNet-18, fine-tuned: size against time")
else:
    ax.bar([f"{s} px" for s in sizes.index], sizes["seconds per epoch (45,000 images)"] / 60)
    ax.set(yscale="log", ylabel="minutes per training epoch (log scale)",
           title=f"ImageNet ResNet-18 on {device}: time per epoch by image size")
plt.show()

# %%
# Sanity check: larger images cost more time (a 7x larger side is ~49x the pixels).
seconds = sizes["seconds per epoch (45,000 images)"]
assert seconds.iloc[-1] > seconds.iloc[0]
print(f"{IMAGE_SIZES[-1]} px costs {seconds.iloc[-1] / seconds.iloc[0]:.0f}x the time of 32 px "
      f"per epoch here; the pixels grow {(IMAGE_SIZES[-1] / 32) ** 2:.0f}x")

# %% [markdown]
# With the weights (run this notebook on Colab to see them), the table answers the question with
# numbers measured where it runs. What to look for: at 32 × 32 the objects are a few pixels
# across after the ImageNet stem, far from the sizes the weights learned from, so upsampling
# should buy accuracy, while the time per epoch grows with the number of pixels, on a CPU to
# hours per epoch at 224. Without the weights, the time column alone shows the price. On a CPU,
# the course's width-16 network with the CIFAR stem (section 2) is the affordable choice; on a
# GPU, fine-tuning ImageNet weights on upsampled images is the usual way to the highest accuracy
# on CIFAR-10.
#
# ## 7. From the command line
#
# The same settings are flags of `python -m course_utils train` (which trains on all ten classes
# of CIFAR-10 and writes the usual report):
#
# ```bash
# # linear probe on a checkpoint (PRETRAINED above, say): only the new 10-class head trains
# python -m course_utils train --init /path/to/best.pt --freeze-backbone
# # fine-tune torchvision's ImageNet weights, the backbone at a tenth of the learning rate
# python -m course_utils train --preset full --init imagenet --stem imagenet --width 64 --backbone-lr 0.1
# ```
#
# `--init` also takes the name of a checkpoint shipped with the course (`course_utils.transfer.
# SHIPPED_CHECKPOINTS`) or a URL followed by `#sha256=` and the file's sha256; every file is
# checked against its sha256 before it is loaded, and loaded with the safe loader.
#
# ## Check your understanding
#
# 1. Why does a linear probe need the backbone's BatchNorm layers in evaluation mode, even though
#    their weights get no gradient?
# 2. You fine-tune with the same learning rate for all layers and the first epochs' accuracy is
#    worse than the linear probe's. What is happening, and what are two fixes?
# 3. Your target task has 50,000 labelled images, similar to the source task's. Do you expect
#    pretraining to matter much? And with 50 images per class of medical scans?
# 4. A colleague normalizes CIFAR-10 with ImageNet's mean and std and trains from scratch. Is that
#    wrong? What about fine-tuning the ImageNet weights with CIFAR-10's statistics?
#
# <details><summary>Answers</summary>
#
# 1. In training mode BatchNorm normalizes with each batch's statistics and updates its running
#    statistics, so the features change from batch to batch and drift towards the new data: the
#    "frozen" backbone would not be frozen, and the head would learn on features that differ
#    from those it is tested on.
# 2. The gradients that flow back from the randomly initialised head are large and noisy, and at
#    the full learning rate they wreck the pretrained features before the head has learned
#    anything. Give the backbone a smaller learning rate (parameter groups), or train the head
#    alone first (a linear probe) and then fine-tune everything; a warm-up helps too.
# 3. Much less, by what is reported elsewhere: with enough labels of a similar kind, training from
#    scratch closes most of the gap (section 4 stops at 500 labels per class, too few to show it).
#    With 50 images per class pretraining matters most, but transfer from
#    natural images to scans is weaker than between CIFAR classes: fine-tuning helps far more
#    than a probe there.
# 4. Not badly wrong (the constants are not far from CIFAR-10's), but without a reason: a network
#    trained from scratch should use its own data's statistics. With ImageNet weights it matters:
#    they expect ImageNet-normalized inputs, and other statistics shift every first-layer
#    activation the weights were tuned for.
#
# </details>
#
# ## What you learned
#
# - A network pretrained on one task passes on general image features; on a new task with few
#   labels they are worth far more than the same network trained from scratch on those labels.
# - Transfer replaces the head. A **linear probe** freezes the backbone (its weights *and* its
#   BatchNorm statistics: `FrozenBatchNorm2d`) and trains only the head: cheap, stable, capped.
#   **Fine-tuning** trains everything, the backbone with a smaller learning rate through optimizer
#   parameter groups, and usually wins.
# - torchvision's ImageNet weights load into the course's ResNet with the ImageNet stem unchanged;
#   they need ImageNet's normalization constants, and upsampled images, whose cost grows with the
#   pixels.
# - `TrainConfig(init=..., freeze_backbone=..., backbone_lr=...)` and the matching flags do it all
#   from code or from the command line, with every pretrained file checked against its sha256.
