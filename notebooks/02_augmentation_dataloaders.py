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
# # 02 · Augmentation & DataLoaders
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/02_augmentation_dataloaders.ipynb)
#
# A network that sees the same 50,000 images again and again starts to memorise them. Data
# augmentation shows it a slightly different version of each image every time. This notebook builds
# the training and evaluation transforms, holds out a validation set, and feeds everything to the
# model in batches with PyTorch's `DataLoader`.
#
# **Learning objectives.** After this notebook you can
# - build the standard CIFAR-10 augmentation (padded random crop, horizontal flip) and explain why
#   the test set gets none;
# - un-normalize images correctly for display;
# - split 5,000 validation images off the training set, and explain why early stopping must never
#   look at the test set;
# - configure a `DataLoader` (batch size, shuffling, workers, pinned memory, seeds) and measure how
#   fast it delivers images.
#
# **Course map:** previous: [01 · CIFAR-10 & normalization statistics](01_cifar10_statistics.ipynb).
# Next: [03 · Residual blocks](03_residual_blocks.ipynb).

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
import time
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils.config import get_device, is_smoke, set_seed
from course_utils.exercises import check_denormalize, check_train_val_split
from course_utils.plotting import augmentation_grid
from course_utils.data import (
    Augmentation,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10Dataset,
    TensorLoader,
    cifar10_splits,
    denormalize,
    load_cifar10,
    make_loader,
    eval_transform,
    set_loader_epoch,
    train_transform,
    train_val_split,
)

device = get_device()
print(f"Device: {device}; smoke mode: {is_smoke()}")

# %% [markdown]
# ## 1. Data augmentation
#
# Augmentation changes an image in ways that **do not change its label**: a cat shifted a few
# pixels, or seen in a mirror, is still a cat. The network gets a fresh variant of each image in
# every epoch, so it has to learn what makes a cat rather than the exact pixels of 5,000 cat photos.
# The standard recipe for CIFAR-10 (He et al., 2016, section 4.2):
#
# - **padded random crop**: pad the 32 × 32 image with 4 pixels of zeros on every side, then cut a
#   random 32 × 32 window out of the 40 × 40 result. The object moves by up to 4 pixels in each
#   direction, and a black strip may enter at the edge.
# - **random horizontal flip**, with probability ½. Not vertical: an upside-down truck is not a
#   CIFAR-10 photo.
# - optionally a **small random rotation** (the task statement uses up to 15°). It leaves black
#   corners. Notebook 07 (section 6) measured it on top of crop and flip, on 4,000 training
#   images over two seeds: it did not change the test accuracy by more than the seeds' spread.
#   The course leaves it off by default.
#
# Then the image is scaled to floats in [0, 1] and normalized with the statistics of notebook 01.
#
# What we do **not** do: resize to 227 × 227 (or 224). That size belongs to networks built for
# ImageNet photos. Upsampling a 32 × 32 image adds no information, but multiplies the work of every
# convolution by about (227 / 32)² ≈ 50. (Notebook 04 counts the cost per image; section 8 of
# [07 · The experiments lab](07_experiments_lab.ipynb) measures what the resize reaches in the
# same training time.)

# %%
augment = train_transform()  # the course's default: crop + flip, no rotation
evaluate = eval_transform()
print(augment)
print(evaluate)

# %% [markdown]
# Both transforms take an image as a `uint8` tensor of shape (3, 32, 32), which is what
# `CIFAR10Dataset` hands them, and return normalized `float32`. To *look* at the result,
# `augmentation_grid` undoes the normalization with `denormalize` (section 3 explains why that
# matters).
#
# Here are six random training images (left) and five draws of the augmentation for each:

# %%
train = load_cifar10("train", download=True)
rng = np.random.default_rng(1)
some = train.subset(rng.choice(len(train), 6, replace=False))  # six random training images
fig = augmentation_grid(some, augment, n=6, n_views=5)

# %% [markdown]
# And with the optional 15° rotation added, for comparison. Notice the black corners: the network
# would have to learn to ignore them too. (What rotation, mixup and CutMix do to the accuracy of
# real training runs, measured over seeds: section 6 of
# [07 · The experiments lab](07_experiments_lab.ipynb).)

# %%
fig = augmentation_grid(some, train_transform(rotation=15), n=3, n_views=5)

# %% [markdown]
# ## 2. Why the test set gets no augmentation
#
# Augmentation is a training trick. A test score has a different job: to measure the model, the
# same way every time, on images as they really come. Random augmentation at test time would
# - make the score random: evaluate twice, get two answers;
# - measure the model on shifted, cropped images with black borders instead of real ones.
#
# So validation and test images go through `eval_transform`: scale and normalize, nothing random.
# (Test-time augmentation, a deliberate technique that averages predictions over a *fixed* set of
# variants such as the image and its mirror, is another matter: it stays deterministic.)
#
# Let us check that the training transform really is random and the test transform is not, on
# 1,000 random training images passed through each transform twice:

# %%
picks = rng.choice(len(train), 1_000, replace=False)
images = torch.from_numpy(train.images[picks]).permute(0, 3, 1, 2)  # (1000, 3, 32, 32) uint8
differs_train = np.mean([not torch.equal(augment(im), augment(im)) for im in images])
differs_test = np.mean([not torch.equal(evaluate(im), evaluate(im)) for im in images])
print(f"Two passes give different tensors: training transform {differs_train:.1%}, "
      f"test transform {differs_test:.1%}")

# %%
# Sanity check: augmentation is random (nearly every image changes between passes); evaluation not.
assert differs_train > 0.95 and differs_test == 0

# %% [markdown]
# Why not 100%? Two passes agree when they happen to draw the same crop position (1 chance in 81)
# and the same flip decision (1 in 2): about 0.6% of images.
#
# ## 3. Showing normalized images: `denormalize`, not `img / 2 + 0.5`
#
# After normalization the values lie roughly between -2 and +2, and `imshow` expects [0, 1]. Many
# tutorials un-normalize with `img / 2 + 0.5`. That inverts `Normalize(mean=0.5, std=0.5)` and
# nothing else. With the CIFAR-10 statistics the inverse is `img * std + mean`, channel by channel,
# which is what `denormalize` does.

# %%
originals = torch.from_numpy(some.images).permute(0, 3, 1, 2)  # section 1's six: (6, 3, 32, 32)
normalized = torch.stack([evaluate(im) for im in originals])  # (6, 3, 32, 32) float32
print(f"normalized values range from {normalized.min():.2f} to {normalized.max():.2f}")

# %% [markdown]
# ### Exercise 1: un-normalize by hand
#
# Write `my_denormalize(x, mean, std)`, which undoes `Normalize(mean, std)` on a batch `x` of shape
# (B, 3, H, W): multiply each channel by its std and add its mean (three numbers each), then clamp
# to [0, 1] for display. Hint: make the statistics tensors of shape (1, 3, 1, 1) so that they
# broadcast over batch, height and width. The check runs it on a small batch with other
# statistics, then on `normalized` with the CIFAR-10 ones.

# %%
def my_denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo Normalize(mean, std) on images (B, 3, H, W), clamped to [0, 1] for display."""
    ### BEGIN SOLUTION
    channel_std = torch.tensor(std).view(1, 3, 1, 1)  # broadcasts over (B, 3, H, W)
    channel_mean = torch.tensor(mean).view(1, 3, 1, 1)
    return (x * channel_std + channel_mean).clamp(0, 1)
    ### END SOLUTION


# %%
restored = check_denormalize(my_denormalize, normalized, CIFAR10_MEAN, CIFAR10_STD)

# %% [markdown]
# The same six images shown four ways:

# %%
rows = {
    "original": originals.float() / 255,
    "normalized,\nshown as is": normalized.clamp(0, 1),
    "img / 2 + 0.5\n(wrong)": (normalized / 2 + 0.5).clamp(0, 1),
    "x * std + mean\n(right)": restored,
}
fig, axes = plt.subplots(len(rows), len(originals), figsize=(7.5, 5.5))
for row, (name, batch) in zip(axes, rows.items()):
    for ax, image in zip(row, batch):
        ax.imshow(image.permute(1, 2, 0))  # (3, 32, 32) -> (32, 32, 3)
        ax.set_xticks([]), ax.set_yticks([])
    row[0].set_ylabel(name, rotation=0, ha="right", va="center")
plt.tight_layout()
plt.show()

# %%
# Sanity check: denormalize recovers the original pixels; img / 2 + 0.5 does not.
error_right = (denormalize(normalized) - originals / 255).abs().max().item()
error_wrong = ((normalized / 2 + 0.5).clamp(0, 1) - originals / 255).abs().max().item()
print(f"largest pixel error: denormalize {error_right:.1e}, img / 2 + 0.5 {error_wrong:.2f}")
assert error_right < 1e-5 and error_wrong > 0.1

# %% [markdown]
# The wrong version has far too much contrast: it spreads the values by 0.5 where the true std is
# about 0.25, twice too much, around 0.5 instead of the channel means, so dark and bright areas
# clip to black and white and the colours shift. Nothing crashes, which is exactly why the mistake
# survives in so many notebooks; but every figure it draws misrepresents what the network sees.
#
# ## 4. A validation set: 45,000 / 5,000
#
# Training involves decisions made by looking at results: when to stop (early stopping), which
# epoch's weights to keep (the best checkpoint), which learning rate to use. Every such decision
# needs data the model did not train on. It must **not** be the test set: a test set that has
# been used to choose anything no longer gives an unbiased estimate (section 5 shows why).
#
# So we hold out a **validation set** of 5,000 of the 50,000 training images, 500 per class
# (a *stratified* split: the same class proportions in both parts), and keep the test set for one
# final measurement at the very end.
#
# ### Exercise 2: a stratified split
#
# Write `my_train_val_split(labels, val_per_class, seed)`: split the indices 0..N-1 of `labels`
# into training and validation indices so that the validation part holds exactly `val_per_class`
# images of each class, chosen at random with a generator made from `seed` (the same seed must give
# the same split). Return `(train_idx, val_idx)`. Hints: `rng = np.random.default_rng(seed)`;
# `np.flatnonzero(labels == c)` lists the indices of class `c`; `rng.choice(indices, size,
# replace=False)` draws without repeats; `np.setdiff1d(a, b)` keeps what is in `a` but not in `b`.
# Any random stratified split passes the check, not only the one `train_val_split` draws.

# %%
def my_train_val_split(
    labels: np.ndarray, val_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices), with val_per_class random images of each class
    held out for validation."""
    ### BEGIN SOLUTION
    generator = np.random.default_rng(seed)  # the same seed gives the same split
    per_class_val = [
        generator.choice(np.flatnonzero(labels == c), val_per_class, replace=False)
        for c in np.unique(labels)
    ]
    val_idx = np.concatenate(per_class_val)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)  # every image not held out
    return train_idx, val_idx
    ### END SOLUTION


# %%
train_idx, val_idx = check_train_val_split(my_train_val_split, train.labels, val_per_class=500,
                                           seed=0)
pd.DataFrame(
    {
        "train": np.bincount(train.labels[train_idx], minlength=10),
        "validation": np.bincount(train.labels[val_idx], minlength=10),
    },
    index=list(train.classes),
).T

# %%
# Sanity check: 45,000 / 5,000, stratified, disjoint, covering every image, and repeatable.
assert len(train_idx) == 45_000 and len(val_idx) == 5_000
assert (np.bincount(train.labels[val_idx]) == 500).all()
assert (np.bincount(train.labels[train_idx]) == 4_500).all()
assert len(np.intersect1d(train_idx, val_idx)) == 0
assert len(np.union1d(train_idx, val_idx)) == 50_000
first_split, second_split = (train_val_split(train.labels, seed=0) for _ in range(2))
assert np.array_equal(first_split[1], second_split[1])  # same seed, same validation images

# %% [markdown]
# `cifar10_splits` does all of this in one call and returns the three parts the training notebooks
# use. In smoke mode it takes small stratified subsets of each, with the sizes from `SMOKE`.

# %%
splits = cifar10_splits(download=True)
sizes = {part: len(getattr(splits, part)) for part in ("train", "val", "test")}
print(sizes)
assert sizes == ({"train": 1_000, "val": 200, "test": 500} if is_smoke()
                 else {"train": 45_000, "val": 5_000, "test": 10_000})

# %% [markdown]
# ## 5. Why early stopping must not look at the test set: a simulation
#
# Choosing the best of many candidates by their test score makes the winner's test score
# optimistic, even when none of them is any good. Here is the extreme case: 200 "classifiers" that
# guess at random among 10 classes. Each has a true accuracy of exactly 10%. We measure all of them
# on a test set of 1,000 images, pick the best, and then measure the winner on 1,000 fresh images.
# (Notebook 07, section 4, measures the same optimism on real trained networks instead of random
# guessers: [07 · The experiments lab](07_experiments_lab.ipynb).)

# %%
rng = np.random.default_rng(0)
n_models, n_images, n_classes = 200, 1_000, 10
y_test, y_fresh = rng.integers(0, n_classes, (2, n_images))  # true labels
guesses_test = rng.integers(0, n_classes, (n_models, n_images))  # each row: one model's guesses
guesses_fresh = rng.integers(0, n_classes, (n_models, n_images))
acc_test = (guesses_test == y_test).mean(axis=1)  # (200,)
acc_fresh = (guesses_fresh == y_fresh).mean(axis=1)
best = acc_test.argmax()

fig, ax = plt.subplots(figsize=(8, 3.5))
bins = np.arange(0.07, 0.135, 0.002)  # accuracies are multiples of 0.001: two values per bin
ax.hist(acc_test, bins=bins, color="lightgray", label="test accuracy of the 200 random models")
ax.axvline(acc_test[best], color="red", label=f"winner on the test set: {acc_test[best]:.1%}")
ax.axvline(acc_fresh[best], color="blue", ls="--",
           label=f"winner on fresh data: {acc_fresh[best]:.1%}")
ax.axvline(0.1, color="black", ls=":", label="true accuracy: 10%")
ax.set(xlabel="accuracy", ylabel="models")
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# How surprising is the winner's score? For one model of true accuracy $p = 0.1$ measured on
# $n = 1000$ images, the measured accuracy has a standard error of $\sqrt{p(1-p)/n} \approx 0.95$
# percentage points, so a single honest measurement above 11.9% (two standard errors) happens only
# about 2% of the time. Among 200 models, the best one gets there easily.

# %%
# Sanity check: picking on the test set inflates the score; fresh data tells the truth.
standard_error = np.sqrt(0.1 * 0.9 / n_images)
assert acc_test[best] > 0.1 + 2 * standard_error  # the winner looks better than chance...
assert abs(acc_fresh[best] - 0.1) < 2 * standard_error  # ...and is chance on fresh data

# %% [markdown]
# The winner "beats chance" by about two points on the test set and is exactly as bad as the others
# on fresh data. Real training is a milder version of the same thing: every epoch's weights are a
# candidate, and early stopping with checkpointing picks one of them. Pick by test accuracy and the
# test score you report is biased upwards; add a few rounds of hyperparameter tuning on the test set
# and the bias grows. Picking by **validation** accuracy keeps the test set untouched, so that its
# single measurement at the end stays honest.
#
# ## 6. DataLoaders
#
# A `Dataset` answers "give me example *i*". A `DataLoader` turns it into batches for training:
#
# | option | what it does | course choice |
# | --- | --- | --- |
# | `batch_size` | examples per gradient step | 128 is typical for CIFAR-10 (smoke mode: 100) |
# | `shuffle` | new random order every epoch | on for training; off for validation and test |
# | `generator` | the random generator behind the shuffling | seeded, so the order repeats |
# | `num_workers` | processes that prepare batches in parallel with training | 0 in notebooks on Windows/macOS and in smoke mode; up to 4 on Linux |
# | `worker_init_fn` | runs in every new worker | seeds NumPy and `random` in the worker |
# | `pin_memory` | page-locked memory, for faster copies to a CUDA GPU | on only when training on CUDA |
# | `drop_last` | drop a final, smaller batch | off for validation and test (every image counts); on for training (notebook 05's `build_loaders`) |
#
# `make_loader` sets all of these, with `drop_last` off unless asked. The training loaders of
# notebook 05 (`build_loaders`) turn it on: 45,000 images make 351 full batches of 128 and a last
# one of 72, and dropping it means every step sees a full batch, so BatchNorm never normalizes with
# the statistics of a handful of images. (BatchNorm averages over the images *and* the positions of
# a batch, so even one image gives it 32 x 32 values per channel; it fails only where a batch of
# one has 1 x 1 feature maps, a single value per channel, as in the last stage of a network with
# the ImageNet stem on a 32 x 32 image, notebook 04.) Each epoch reshuffles, so the dropped images differ from epoch
# to epoch.

# %%
train_data = CIFAR10Dataset(splits.train, train_transform())
val_data = CIFAR10Dataset(splits.val, eval_transform())  # validation: no augmentation
train_loader = make_loader(train_data, batch_size=128, shuffle=True, seed=0, device=device)
val_loader = make_loader(val_data, batch_size=512, shuffle=False, device=device)

x, y = next(iter(train_loader))
print(f"one batch: images {tuple(x.shape)} {x.dtype}, labels {tuple(y.shape)} {y.dtype}")
print(f"batches per epoch: train {len(train_loader)}, validation {len(val_loader)}")
assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64

# %% [markdown]
# ### Reproducible shuffling
#
# Two sources of randomness meet in a training batch: the **order** of the images (from the
# loader's own generator, seeded by `make_loader`) and the **augmentation** (with `num_workers=0`,
# from PyTorch's global generator, seeded by `set_seed`; in worker processes, from seeds the loader
# derives from its own generator). Seed both, and the first batch repeats exactly:

# %%
def first_batch(loader_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    set_seed(0)
    loader = make_loader(train_data, batch_size=16, shuffle=True, seed=loader_seed, num_workers=0)
    return next(iter(loader))


(xa, ya), (xb, yb), (xc, yc) = first_batch(0), first_batch(0), first_batch(1)
print("seed 0:      ", ya.tolist())
print("seed 0 again:", yb.tolist())
print("seed 1:      ", yc.tolist())

# %%
# Sanity check: same seeds, same batch (labels and augmented pixels); another seed, another order.
assert torch.equal(ya, yb) and torch.equal(xa, xb)
assert not torch.equal(ya, yc)

# %% [markdown]
# Iterating over the same loader again starts a new epoch with a new order, as it should. To make
# epoch *e*'s order depend only on the seed and *e* (so that a run resumed from a checkpoint sees
# the same batches as an uninterrupted one), notebook 05 calls `set_loader_epoch(loader, seed, e)`
# before each epoch.
#
# ### How fast are the loaders?
#
# The GPU can only train as fast as images arrive. We time how many images per second each loader
# delivers, with no training at all, over the full training set of 50,000 (smoke mode: 20 batches):
#
# - `make_loader` with 0, 1 and 2 worker processes: each image goes through the transform one at
#   a time, in Python (smoke mode, which starts no processes, times 0 workers only);
# - `TensorLoader`: the whole dataset as one `uint8` tensor, cropped and flipped a whole batch at a
#   time with tensor operations, on `device` (on a GPU, with no copying per batch).

# %%
def images_per_second(loader, max_batches: int | None = None) -> float:
    """Images per second delivered by `loader`, after a short warm-up."""
    for _ in zip(range(2), loader):  # warm-up: two batches, to start workers and touch memory
        pass
    start, seen = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        seen += len(x)
        if max_batches is not None and i + 1 >= max_batches:
            break
    return seen / (time.perf_counter() - start)


max_batches = 20 if is_smoke() else None
full_train = CIFAR10Dataset(train, train_transform())
speeds = {}
for workers in (0,) if is_smoke() else (0, 1, 2):  # smoke mode starts no worker processes
    loader = make_loader(
        full_train, batch_size=256, shuffle=True, num_workers=workers, device=device
    )
    speeds[f"DataLoader, {workers} worker{'s' if workers != 1 else ''}"] = images_per_second(
        loader, max_batches
    )
tensor_loader = TensorLoader(train, batch_size=256, shuffle=True, augment=True).to(device)
speeds[f"TensorLoader on {device}"] = images_per_second(tensor_loader, max_batches)

ax = pd.Series(speeds).plot.barh(figsize=(7, 2.5), color="tab:blue")
ax.set(xlabel="images per second (higher is better)", title="Loader throughput with augmentation")
plt.show()
pd.Series(speeds, name="images/s").round(0).to_frame()

# %% [markdown]
# What to take from it (your numbers depend on your machine):
# - Workers pay off when there are idle CPU cores and the transform is the bottleneck. Each epoch
#   starts them again, and on a machine with only two cores they compete with the main process, so
#   more workers may even be slower here. On a GPU machine with many cores, 2-8 workers let the CPU
#   prepare the next batches while the GPU trains on the current one.
# - `TensorLoader` augments whole batches with a few tensor operations instead of one Python call
#   per image. On a GPU that is by far the fastest path: the data never leaves the GPU and the
#   arithmetic is trivial for it. On a CPU it does the same arithmetic as the per-image path and
#   need not be faster; on a busy machine, multi-threaded tensor operations can even be slower.
#
# **Why 0 workers is the safe default in notebooks on Windows and macOS.** There, Python starts
# worker processes with *spawn*: a fresh interpreter that must re-import your code and receive a
# pickled copy of the dataset and transform. Anything defined in a notebook cell (a custom
# transform, a lambda) cannot be found by the new process, and the loader fails with a confusing
# error such as `Can't get attribute ... on <module '__main__'>`, or hangs. On Linux, workers are
# made with *fork*, a cheap copy of the running process, and just work. That is why
# `default_num_workers()` returns 0 on Windows and macOS (and in smoke mode), and why everything a
# worker needs lives in `course_utils`, an importable module.
#
# **`pin_memory`.** Copies from ordinary memory to a CUDA GPU go through a page-locked staging
# buffer. Pinned batches skip that step and can be copied while the GPU computes
# (`x.to(device, non_blocking=True)`). It only helps with CUDA, so `make_loader` pins only then.
#
# ### Two refinements for short training: smaller shifts and alternating flips
#
# The `cpu` preset trains for only about a dozen epochs, and it changes two details of section 1's
# recipe, both taken from Keller Jordan's airbench (2024) and both measured on this course's own
# runs in notebook 07, section 9. `TensorLoader` takes them as an `Augmentation`:
#
# - **2 pixels of padding instead of 4** (`crop_padding=2`): each image moves by at most 2 pixels
#   (airbench fills the padding by mirroring the image's border; the course keeps section 1's
#   zeros).
#   Training images then stay closer to the test images. A long training needs the variety of
#   larger shifts against overfitting; a short one overfits less. That is the usual reading:
#   notebook 07 measures the gain, not its reason.
# - **alternating flips** (`alternate_flip=True`): a coin flip per image and epoch shows half the
#   images the same way round in two epochs running. Instead, a random half of the images is
#   mirrored in the odd epochs and the other half in the even ones, so every two epochs show each
#   image once each way: both orientations are balanced for every image, not only on average.
#
# We check the second claim by counting. The loader below neither pads nor crops
# (`crop_padding=0`), so an output image either equals the stored one or its mirror, and we can
# read off which images each epoch mirrored:

# %%
few = train.subset(range(min(2_000, len(train))))  # enough for the fractions below, and quick


def mirrored(augmentation: Augmentation, epochs: int, seed: int = 0) -> torch.Tensor:
    """(epochs, N) bool: which of `few`'s images the loader served mirrored in each epoch."""
    loader = TensorLoader(few, batch_size=500, augment=augmentation, seed=seed)  # no shuffle
    plain = TensorLoader(few, batch_size=500)  # the same images, normalized, untouched
    rows = []
    for epoch in range(1, epochs + 1):
        set_loader_epoch(loader, seed, epoch)
        served = torch.cat([x for x, _ in loader])
        rows.append(~torch.isclose(served, torch.cat([x for x, _ in plain])).all(dim=(1, 2, 3)))
    return torch.stack(rows)


counts = {}
for name, flips in [("random flip (p = 1/2)", Augmentation(crop_padding=0)),
                    ("alternating flip", Augmentation(crop_padding=0, alternate_flip=True))]:
    m = mirrored(flips, epochs=4)
    counts[name] = {
        "mirrored in epoch 1": m[0].float().mean().item(),
        "same way round in epochs 1 and 2": (m[0] == m[1]).float().mean().item(),
        "never mirrored in epochs 1-4": (~m.any(dim=0)).float().mean().item(),
    }
counts = pd.DataFrame(counts).T
assert counts.loc["alternating flip", "same way round in epochs 1 and 2"] == 0
counts.style.format("{:.1%}")

# %% [markdown]
# Both mirror about half the images in an epoch. With a coin per epoch, about half of them are
# shown the same way round twice in a row, and about 1 in 16 is never mirrored in four epochs
# ($(1/2)^4$). With alternating flips, neither happens. (The first
# column differs from 50% only by the draw of which half.)

# %% [markdown]
# ## Check your understanding
#
# 1. Why is a vertical flip not part of the CIFAR-10 augmentation, while a horizontal flip is?
# 2. You evaluate your model twice on the test set and get 93.1% and 92.7%. What is the most likely
#    bug?
# 3. In the simulation, would the winner's inflated test score grow or shrink with 2,000 candidate
#    models? With a test set of 10,000 images?
# 4. A student's loader works on Linux but fails on a Mac with
#    `Can't get attribute 'MyTransform' on <module '__main__'>`. What are two fixes?
#
# <details><summary>Answers</summary>
#
# 1. A mirrored car is still a plausible car photo; an upside-down one is not something the test
#    set contains, so learning it wastes capacity and can blur what the classes look like.
# 2. The test data goes through the training (random) transform, so every evaluation sees other
#    crops and flips. A missing `model.eval()` (notebook 05) is a bug too, but on its own it does
#    not make two evaluations differ: with the images in the same order, training-mode BatchNorm
#    normalizes each batch with that batch's own statistics and gives the same (wrong) outputs both
#    times, since nothing else in this network is random. What it does is make each prediction
#    depend on which images share its batch and on the batch size, and update the running
#    statistics with test images. If the test loader also shuffles, then the batches differ and a
#    missing `model.eval()` does change the result from one evaluation to the next.
# 3. Grow with more candidates (a more extreme maximum); shrink with a larger test set (each
#    model's score is less noisy, by a factor of about $\sqrt{10}$).
# 4. Use `num_workers=0`, or move `MyTransform` into a `.py` module and import it, so the spawned
#    worker can import it too.
#
# </details>
#
# ## What you learned
#
# - The CIFAR-10 training transform pads by 4 pixels, crops a random 32 × 32 window and flips
#   horizontally at random; rotation is optional; resizing to 227 × 227 only costs compute.
# - For short training, the `cpu` preset shifts by at most 2 pixels and alternates each image's
#   flip from one epoch to the next, so that every two epochs show it once each way.
# - Validation and test images get no augmentation, so a score is repeatable and measures real
#   images.
# - Display normalized images with `denormalize` (`img * std + mean`); `img / 2 + 0.5` is only right
#   for mean = std = 0.5.
# - Hold out a stratified 45,000 / 5,000 train / validation split; choose epochs, checkpoints and
#   hyperparameters on validation, and touch the test set once, at the end.
# - `make_loader` gives seeded shuffling and safe worker defaults; measure throughput before adding
#   workers, and consider whole-batch tensor augmentation on a GPU.
#
# Next: [03 · Residual blocks](03_residual_blocks.ipynb)
