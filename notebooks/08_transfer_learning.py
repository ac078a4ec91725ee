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
# `data.py`, the shipped checkpoints in `checkpoints.py`), and the experiment of sections 2-5 in
# `course_utils/transfer_experiment.py`. Next: [09 · Diagnostics](09_diagnostics.ipynb).

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
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from course_utils.machine import measure_throughput
from course_utils.checkpoints import PretrainedNotFoundError, load_checkpoint
from course_utils.config import get_device, is_smoke, set_seed
from course_utils.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRAIN_SIZE,
    VAL_SIZE,
    Resized,
    TensorLoader,
    cifar10_splits,
    compute_mean_std,
    set_loader_epoch,
    stratified_subset,
)
from course_utils.exercises.notebook08 import check_parameter_groups
from course_utils.experiments import read_table
from course_utils.models import count_parameters, resnet18
from course_utils.training import (
    TrainConfig,
    build_model,
    build_optimizer,
    evaluate,
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
from course_utils.transfer_experiment import (
    BACKBONE_LR,
    method_configs,
    paired_gains,
    pretrain,
    pretrain_config,
    sizes_for,
    split_tasks,
    summarize_transfer,
    train_and_test,
    transfer_claims,
    transfer_runs,
)

device = get_device()
print(f"Device: {device}; smoke mode: {is_smoke()}")

# %% [markdown]
# Every size of this notebook in one place. The transfer experiment counts its work in epochs and
# optimizer steps (`course_utils.transfer_experiment.FULL`), so that it does not depend on the
# machine's speed; the whole notebook took 9 minutes on 2 cores of the machine that measured the
# table of section 5. Smoke mode (`COURSE_SMOKE=1`) shrinks it to about a minute.

# %%
SMOKE_MODE = is_smoke()
SIZES = sizes_for(smoke=SMOKE_MODE)  # pretraining epochs, labelled images per class, transfer steps
SEED = 0  # the committed table's first seed
IMAGE_SIZES = (32, 128) if SMOKE_MODE else (32, 64, 128, IMAGENET_SIZE)  # the ImageNet part
IMAGENET_PER_CLASS = 10 if SMOKE_MODE else 100  # training images per class, ImageNet part
IMAGENET_MINUTES_PER_SIZE = 0.2 if SMOKE_MODE else 2  # skip a size whose training takes longer
print(SIZES)

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
task = split_tasks(splits)
animals, vehicles_train, vehicles_test = task
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
# network of the course's `cpu` preset (a width-16 ResNet-18) on the six animal classes for a
# fixed number of epochs (4; about 5 minutes on one core of the machine that measured the table of
# section 5), with a one-cycle schedule and label smoothing, and keep the best epoch
# on the animals' validation images (`pretrain` in `course_utils/transfer_experiment.py`, which
# calls `fit` from notebook 05). The normalization statistics are the animal images': a network
# must later be fed images normalized the way it was trained.

# %%
pretrain_cfg = pretrain_config(SEED, smoke=SMOKE_MODE)
out = Path(tempfile.mkdtemp(prefix="notebook08-animals-"))  # a throwaway folder of this session
pretrained = pretrain(animals, pretrain_cfg, device, out, progress=True)
PRETRAINED = str(pretrained.checkpoint)  # what the transfer runs start from
print(f"pretrained for {pretrain_cfg.epochs} epochs on {len(animals.train):,} animal images in "
      f"{pretrained.seconds:.0f} s: validation accuracy {pretrained.val_accuracy:.1%} on the 6 "
      f"animal classes (chance: {1 / len(ANIMALS):.0%}); saved as {PRETRAINED}")
print("the animal images' statistics, which every transfer run normalizes with: mean",
      np.round(pretrained.mean, 4), "std", np.round(pretrained.std, 4))

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
METHODS = method_configs(PRETRAINED, SEED, pretrained.width)  # name -> TrainConfig
transfer_cfg = METHODS["from scratch"]  # batch 64, lr 0.1, label smoothing 0.1
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
# for the same number of optimizer steps (so the same number of images seen, and for the two
# trainable methods about the same time). Then it is measured once on the labelled images it
# trained on (its **training accuracy**, without augmentation) and once on the 4,000 vehicle test
# images. Nothing is chosen by looking at the test set: the recipe was fixed beforehand and the
# last weights are tested, so no validation split has to come out of the few labels.
#
# The loop is `train_and_test` in `course_utils/transfer_experiment.py`: notebook 05's
# `train_one_epoch` over `steps` batches drawn pass after pass from the few labelled images, with
# the optimizer and schedule of `build_optimizer` and `build_scheduler`. `transfer_runs` calls it
# for every size and method; the labelled images are a stratified sample drawn with the seed.

# %%
start = time.perf_counter()
results = transfer_runs(task, pretrained, SEED, SIZES, device)
print(f"{len(results)} runs of {SIZES.steps} steps in {time.perf_counter() - start:.0f} s")
columns = pd.MultiIndex.from_product([["train_accuracy", "test_accuracy"], list(METHODS)])
results.pivot(index="labelled_per_class", columns="method",
              values=["train_accuracy", "test_accuracy"])[columns].style.format("{:.1%}")

# %%
# Sanity check: a linear probe changes only the head. Its backbone (weights and BatchNorm
# statistics) after a few steps is exactly the pretrained one.
labelled = vehicles_train.subset(stratified_subset(vehicles_train.labels, SIZES.labels_per_class[0]))
probe, _ = train_and_test(METHODS["linear probe"], labelled, vehicles_test, 5, pretrained, device)
pretrained_weights = load_checkpoint(PRETRAINED)["model"]
assert all(torch.equal(value.cpu(), pretrained_weights[key])
           for key, value in probe.state_dict().items() if not key.startswith("fc."))

# %% [markdown]
# ## 5. What the numbers say, over three seeds
#
# One run is one draw: another seed gives another pretraining, other labelled images and other
# batches, and one accuracy on 4,000 test images has a standard error of up to 0.8 points by
# itself. So the course ran the same experiment for three seeds,
# `python -m course_utils experiment transfer --seeds 0 1 2`, and committed the table to
# `results/experiments/transfer.csv`. The cells below read it. Your run above used its seed 0: the
# same labelled images and the same initial weights, but another machine, or only another number
# of threads, adds up the floating-point sums in another order, and after a few hundred steps the
# runs differ about as much as two seeds do (on the machine that made the table, with 2 threads
# instead of 1, fine-tuning's lead at 100 labels per class came out 5 points instead of 10). In
# smoke mode your run is a much smaller version whose numbers mean little.

# %%
committed = read_table("transfer")  # the course's own table (downloaded if it is not here)
print(f"{committed['seed'].nunique()} seeds, measured on {committed['machine'].iloc[0]}, "
      f"{committed['date'].iloc[0]}:\n  {committed['command'].iloc[0]}")
summary = summarize_transfer(committed)
summary.style.format("{:.1%}", subset=[c for c in summary.columns if c[0] != "seeds"])

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, column in zip(axes, ("test_accuracy", "train_accuracy")):
    for method, colour in zip(METHODS, ("tab:blue", "tab:orange", "tab:green")):
        rows = summary.xs(method, level="method")[column]
        ax.plot(rows.index, 100 * rows["mean"], "o-", color=colour, label=f"{method} (3 seeds)")
        ax.fill_between(rows.index, 100 * rows["min"], 100 * rows["max"], color=colour, alpha=0.2)
        mine = results[results["method"] == method]
        if not SMOKE_MODE:  # your run, at the table's sizes
            ax.plot(mine["labelled_per_class"], 100 * mine[column], "x", color=colour, ms=9)
    ax.axhline(100 / len(VEHICLES), color="gray", ls=":", label="chance")
    ax.set(xscale="log", xticks=rows.index, xticklabels=rows.index,
           xlabel="labelled vehicle images per class (log scale)",
           title=("test accuracy" if column == "test_accuracy" else
                  "training accuracy (on the labelled images)"))
axes[0].set_ylabel("accuracy (%): mean, band from lowest to highest seed")
axes[0].legend(fontsize=8)
fig.suptitle("Vehicles, after pretraining on animals" + ("" if SMOKE_MODE else "; x: your run"))
plt.tight_layout()
plt.show()

# %% [markdown]
# Differences between methods are best read **within a seed**: the two runs then share the
# pretraining and the labelled images, and only the method differs. `paired_gains` gives them,
# one column per seed:

# %%
gains = pd.concat({
    "fine-tuning minus from scratch": paired_gains(committed, "fine-tuning", "from scratch"),
    "linear probe minus fine-tuning": paired_gains(committed, "linear probe", "fine-tuning"),
}, names=["comparison"])
(100 * gains).round(1)

# %% [markdown]
# The statements this notebook makes are computed from the table by `transfer_claims`, each with
# its margin, and asserted, so a table that no longer supports one fails here (and in the test
# suite) instead of leaving a wrong sentence. The same function on your run is shown, not asserted:
# one seed, on another machine, may differ.

# %%
claims = transfer_claims(committed)
yours = transfer_claims(results)  # the same statements, in the same order, for your one seed
for (statement, holds), in_yours in zip(claims.items(), yours.values()):
    print(f"[table: {'yes' if holds else 'NO'}; your run: {'yes' if in_yours else 'no'}] "
          f"{statement}")
assert all(claims.values()), "the committed table no longer supports a statement above"

# %% [markdown]
# How to read them (the figures in brackets are the table's means over its three seeds; the
# asserted statements above hold in each seed):
#
# - **Pretrained features help most when labels are scarce.** With 100 labelled images per
#   class, fine-tuning beat training from scratch by 9-12 points (72% against 62%); with 500, by
#   3-6 (77% against 72%). The pretrained backbone brings features learned from 27,000 other
#   images; a network trained from scratch must learn its features from the few labels alone.
# - **With few labels, training from scratch overfits.** At 100 per class it ends near 99% on its
#   400 training images and near 62% on the test images: it has learned those images, not
#   vehicles. At 500 per class, with the same 300 steps, the gap is about 4 points. The training
#   accuracy column is what tells overfitting (a large gap) from under-training (both low).
# - **The linear probe is cheap and stable, but capped.** It stays near 60% at every size (from
#   100 to 500 labels it moves by less than 2 points), and its training accuracy (62-66%) is only
#   a few points above its test accuracy: it *underfits*. Only a linear layer learns, on features shaped to tell a
#   cat from a dog, not a ship from a truck, and more labels cannot change those features.
# - **Fine-tuning adapts the features** and was the best of the three at every size here: it
#   starts from the pretrained features and bends them towards the new classes, slowly enough not
#   to destroy them. Its lead shrinks as labels grow. With many more labels and longer training,
#   training from scratch can close the gap (He, Girshick and Dollár 2019, "Rethinking ImageNet
#   Pre-training", found so for object detection on COCO); this table stops at 500 labels per
#   class and 300 steps, so it does not show that.
# - Transfer works because the source and target images share low-level structure (the same
#   camera, resolution and kind of scene). From a very different source (say, X-ray images) the
#   probe would do far worse, and fine-tuning would need more labels. (Not measured here.)
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
imagenet_stats = (IMAGENET_MEAN, IMAGENET_STD)
few_loader = TensorLoader(few, imagenet_cfg.batch_size, shuffle=True, augment=True,
                          stats=imagenet_stats, drop_last=True).to(device)
few_test = TensorLoader(test_few, 2 * imagenet_cfg.batch_size, stats=imagenet_stats).to(device)
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
#    scratch closes most of the gap. Section 5 shows the trend (fine-tuning's lead fell from about
#    10 points at 100 labels per class to about 5 at 500) but stops at 500, too few to show the
#    end of it. With 50 images per class pretraining matters most, but transfer from natural
#    images to scans is weaker than between CIFAR classes: fine-tuning helps far more than a
#    probe there.
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
#   labels they are worth far more than the same network trained from scratch on those labels
#   (here about 10 points at 100 labels per class, measured over three seeds), and the lead
#   shrinks as labels grow.
# - Record the training accuracy beside the test accuracy: it tells overfitting (training from
#   scratch on 100 labels per class: near 99% against 62%) from underfitting (the linear probe:
#   both near 60%).
# - Transfer replaces the head. A **linear probe** freezes the backbone (its weights *and* its
#   BatchNorm statistics: `FrozenBatchNorm2d`) and trains only the head: cheap, stable, capped.
#   **Fine-tuning** trains everything, the backbone with a smaller learning rate through optimizer
#   parameter groups, and won at every size here.
# - One run is one draw: a claim about methods is read from several seeds, compared within each
#   seed, and checked with a margin (`transfer_claims`).
# - torchvision's ImageNet weights load into the course's ResNet with the ImageNet stem unchanged;
#   they need ImageNet's normalization constants, and upsampled images, whose cost grows with the
#   pixels.
# - `TrainConfig(init=..., freeze_backbone=..., backbone_lr=...)` and the matching flags do it all
#   from code or from the command line, with every pretrained file checked against its sha256.
