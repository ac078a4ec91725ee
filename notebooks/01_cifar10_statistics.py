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
# # 01 · CIFAR-10 & normalization statistics
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/01_cifar10_statistics.ipynb)
#
# Before training on a dataset, look at it. This notebook loads CIFAR-10, checks what is in it,
# and computes the two numbers per colour channel that every CIFAR-10 training script uses to
# normalize its inputs, exactly and with little memory. It also explains why a "std" copied into
# countless scripts, `(0.2023, 0.1994, 0.2010)`, is not the standard deviation of the dataset.
#
# **Learning objectives.** After this notebook you can
# - load CIFAR-10 as arrays and check its size, types, value range and class balance;
# - explain what per-channel normalization does and why its statistics come from the training split;
# - compute the channel mean and std exactly by streaming over batches, and check the result
#   against an independent computation;
# - explain with the law of total variance why the mean of per-image stds is smaller than the
#   dataset std, and what normalizing with the wrong number (or with ImageNet's) does.
#
# **Course map:** previous: [00 · Setup & imports](00_setup.ipynb).
# Next: [02 · Augmentation & DataLoaders](02_augmentation_dataloaders.ipynb).

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
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from course_utils.config import get_device
from course_utils.exercises import check_mean_of_per_image_std, check_mean_std
from course_utils.plotting import class_balance, image_grid
from course_utils.data import (
    CIFAR10_JPEG_MEAN,
    CIFAR10_JPEG_STD,
    CIFAR10_MEAN,
    CIFAR10_STD,
    WRONG_CIFAR10_STD,
    compute_mean_std,
    load_cifar10,
    mean_of_per_image_std,
    stratified_subset,
    eval_transform,
)

print(f"Device: {get_device()} (this notebook only needs the CPU)")

# %% [markdown]
# ## 1. The dataset
#
# CIFAR-10 (Krizhevsky, 2009) holds 60,000 colour photographs of 32 × 32 pixels in ten classes:
# airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck. The classes do not overlap
# ("automobile" is cars, "truck" is big trucks; pickups are in neither). The images are split into
# 50,000 for training and 10,000 for testing.
#
# It exists in two common forms, and the course reads both:
# - the **official release** (Python pickles), which torchvision downloads;
# - the **CIFAR-10-images** copy, one JPEG file per image in `train/<class>/` and `test/<class>/`
#   folders. JPEG compression is lossy, so its pixels differ slightly from the official ones.
#
# `load_cifar10` looks for a local copy in the data directory first (either form) and lets
# torchvision download the official release there only if none is found. It returns plain arrays,
# not a torchvision `Dataset`: images as `uint8` (whole numbers 0 to 255), channels last, exactly as
# stored. We compute on them directly here, and wrap them for training in notebook 02.

# %%
train = load_cifar10("train", download=True)
test = load_cifar10("test", download=True)
print("Loaded from:", train.source)

pd.DataFrame(
    {
        split: {
            "images": f"{data.images.shape} {data.images.dtype}",
            "labels": f"{data.labels.shape} {data.labels.dtype}",
            "pixel range": f"{data.images.min()} .. {data.images.max()}",
            "label range": f"{data.labels.min()} .. {data.labels.max()}",
            "memory": f"{data.images.nbytes / 1e6:.1f} MB",
        }
        for split, data in {"train": train, "test": test}.items()
    }
)

# %%
# Sanity check: the sizes and types every later notebook relies on.
assert len(train) == 50_000 and len(test) == 10_000
assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
assert set(np.unique(train.labels)) == set(range(10))
classes = train.classes
print(dict(enumerate(classes)))

# %% [markdown]
# The shape `(50000, 32, 32, 3)` reads as *N × height × width × channels* (NHWC). PyTorch's
# convolutions want *N × channels × height × width* (NCHW); the `CIFAR10Dataset` of notebook 02
# makes that switch for us.
#
# ### Class balance
#
# A classifier's accuracy only means something next to the class frequencies: on a dataset that is
# 90% cats, "always cat" scores 90%. CIFAR-10 is perfectly balanced.

# %%
fig = class_balance({"train": train.labels, "test": test.labels}, classes)

# %%
# Sanity check: 5,000 training and 1,000 test images in every class, so chance level is 10%.
assert (train.class_counts() == 5_000).all() and (test.class_counts() == 1_000).all()

# %% [markdown]
# ### What the images look like
#
# Eight random training images of each class. Notice how small 32 × 32 pixels is: many images are
# hard to name even for us, objects appear at different sizes and positions, and the background
# often says more than the object (ships on water, planes in the sky).

# %%
picks = stratified_subset(train.labels, per_class=8, seed=0)  # 80 random indices
picks = picks[np.argsort(train.labels[picks], kind="stable")]  # one class per row of 8
fig = image_grid(train.images[picks], train.labels[picks], classes, ncols=8,
                 title="CIFAR-10 training images, 8 per class")

# %% [markdown]
# ### Pixel values per channel
#
# How are the 51.2 million values of each channel (50,000 images × 32 × 32 pixels) distributed?
# `np.bincount` counts how often each value 0..255 occurs, without copying the data.

# %%
fig, ax = plt.subplots(figsize=(9, 3.5))
for channel, color in enumerate(("red", "green", "blue")):
    histogram = np.bincount(train.images[..., channel].ravel(), minlength=256)  # (256,)
    ax.plot(np.arange(256), histogram / histogram.sum(), color=color, label=color)
ax.set(xlabel="pixel value (0-255)", ylabel="fraction of pixels", title="Training pixel values")
ax.legend(loc="upper center")
plt.show()

# %% [markdown]
# The distributions are broad, with spikes at 0 and 255 where the camera saturated or the image was
# clipped. Blue is shaped differently from red and green: most of its values are lower, but it has
# more very bright ones (sky, water), so a lower mean and a larger spread. None of the channels is
# "centred at zero with unit spread", which is what the next section fixes.
#
# ## 2. Normalization: what and why
#
# We feed the network, for every channel $c$ and pixel value $x$ (scaled to $[0, 1]$),
#
# $$ x' = \frac{x - \mu_c}{\sigma_c}, $$
#
# where $\mu_c$ and $\sigma_c$ are the mean and standard deviation of channel $c$ over **all pixels
# of all training images**. Afterwards every channel has mean 0 and standard deviation 1 over the
# training set. Why bother?
# - Weight initialisation (notebook 04) is designed for inputs of about unit variance; far larger or
#   smaller inputs start the network in a badly scaled state.
# - All channels arrive on the same scale, so no channel dominates the first layer's gradients just
#   because its values are larger.
#
# Two rules:
# 1. Compute the statistics on the **training** data only. The test set stands in for data we have
#    never seen; nothing about it may shape the model or its preprocessing.
# 2. Apply the **same** numbers everywhere: training, validation, test, and later in deployment.
#
# ## 3. Computing the statistics exactly, with little memory
#
# A common recipe (the task statement uses it) loads the whole training set as one batch of float
# tensors and calls `.mean()` and `.std()`. It works, but it needs the entire dataset as 32-bit
# floats in memory at once. Let us put numbers on it:

# %%
n, h, w, c = train.images.shape
pd.DataFrame(
    {
        "MB": [
            n * h * w * c * 4 / 1e6,  # float32: 4 bytes per value
            train.images.nbytes / 1e6,  # uint8: 1 byte per value
            5_000 * h * w * c * 8 / 1e6,  # float64: 8 bytes per value
        ]
    },
    index=[
        "all 50,000 images as float32 (the one-big-batch recipe)",
        "all 50,000 images as uint8 (how they are stored)",
        "one batch of 5,000 images as float64 or int64 (streaming)",
    ],
).round(1)

# %% [markdown]
# About 614 MB for CIFAR-10 is fine on many machines; for ImageNet (1.28 million images of
# 224 × 224) the same recipe would need about 770 GB. The streaming way scales to any size. The
# variance needs only two running sums per channel, because
#
# $$ \sigma^2 = \mathbb{E}[x^2] - \mathbb{E}[x]^2 . $$
#
# So `compute_mean_std` walks over the images a batch at a time, adds up $\sum x$ and $\sum x^2$ per
# channel on the raw pixel values 0..255, and combines them at the end. It keeps the sums as 64-bit
# **integers** (`int64`), so they are **exact**: the pixels are whole numbers, and even
# $\sum x^2 \le 5.12 \cdot 10^7 \cdot 255^2 \approx 3.3 \cdot 10^{12}$ is far below the
# largest `int64`, about $9.2 \cdot 10^{18}$. The last step, $n \sum x^2 - (\sum x)^2$, is done
# in Python's unlimited integers, and only the final division and square root are in floating
# point. (The formula above loses precision when the sums are 32-bit floats; with exact sums it is
# safe.)
#
# Float64 sums would be exact here too, which is what the exercise uses: float64 represents every
# whole number up to $2^{53} \approx 9 \cdot 10^{15}$, and our sums stay below $3.3 \cdot 10^{12}$.
#
# ### Exercise 1: stream the statistics
#
# Write `my_mean_std(images, batch_size)`: the mean and std of each channel of `images` (uint8,
# shape (N, H, W, 3)), with the pixels scaled to [0, 1], going over the images `batch_size` at a
# time and keeping nothing but two float64 running sums per channel. Return `(mean, std)`, three
# numbers each, in RGB order.
#
# Hints: `batch.reshape(-1, 3)` turns a batch of shape (B, H, W, 3) into one row per pixel;
# `.astype(np.float64)` before summing. The cell after yours runs your function on nine small
# images in batches of 4 (so the last batch is smaller), then on `train.images` in batches of
# 5,000, and compares with `course_utils.data.compute_mean_std`. Until your function works, the
# notebook goes on with that.

# %%
def my_mean_std(images: np.ndarray, batch_size: int = 5_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, H, W, 3), pixels scaled to [0, 1]."""
    ### BEGIN SOLUTION
    sum_x = np.zeros(3)  # running sum of x per channel (x in 0..255)
    sum_x2 = np.zeros(3)  # running sum of x**2 per channel
    for start in range(0, len(images), batch_size):
        pixels = images[start : start + batch_size].reshape(-1, 3).astype(np.float64)  # (B*H*W, 3)
        sum_x += pixels.sum(axis=0)
        sum_x2 += (pixels**2).sum(axis=0)
    n_pixels = images.shape[0] * images.shape[1] * images.shape[2]  # per channel
    channel_mean = sum_x / n_pixels
    channel_std = np.sqrt(sum_x2 / n_pixels - channel_mean**2)  # sqrt(E[x^2] - E[x]^2)
    return channel_mean / 255, channel_std / 255
    ### END SOLUTION


# %%
mean, std = check_mean_std(my_mean_std, train.images, test_images=test.images)

# %% [markdown]
# Here is your result next to the published values of both releases:

# %%
is_official = train.kind == "official"  # or "jpeg": which copy of CIFAR-10 was loaded
ref_mean, ref_std = train.published_stats()
stats = pd.DataFrame(
    {
        "your mean": mean,
        "your std": std,
        "published mean (official)": CIFAR10_MEAN,
        "published std (official)": CIFAR10_STD,
        "published mean (JPEG copy)": CIFAR10_JPEG_MEAN,
        "published std (JPEG copy)": CIFAR10_JPEG_STD,
    },
    index=["red", "green", "blue"],
).T
stats.round(4)

# %%
# Sanity check: your copy agrees with the published statistics of the same release.
print("Compared with the", "official release" if is_official else "JPEG copy", "values")
assert np.allclose(mean, ref_mean, atol=0.002) and np.allclose(std, ref_std, atol=0.002)

# %% [markdown]
# The means of the two releases differ by at most 0.0001; the stds differ in the third decimal, because JPEG
# compression smooths away a little fine detail (variance). A training run does not take either
# pair from here: it computes the statistics of its own training images, from whichever copy it
# loaded (notebook 05, and `python -m course_utils train`), and stores them in its checkpoints. The
# checkpoint shipped with the course was trained on the JPEG copy, so it holds that copy's
# statistics; `CIFAR10_MEAN` and `CIFAR10_STD` are the official release's, for comparison.
#
# Streaming in batches must not change the answer, whatever the batch size:

# %%
small_batches = compute_mean_std(train.images, batch_size=500)
large_batches = compute_mean_std(train.images, batch_size=5_000)
assert np.allclose(small_batches, large_batches, rtol=0, atol=1e-12)
print("Batches of 500 and of 5,000 images give the same numbers, to 12 decimals.")

# %% [markdown]
# ### An independent check
#
# Our function should agree with the obvious computation: convert to float64, then NumPy's `mean`
# and `std` over all pixels. That needs the whole array in memory, so we do it on a random subset
# of 5,000 training images (500 per class), about 123 MB.

# %%
subset = train.images[stratified_subset(train.labels, per_class=500, seed=0)]  # (5000, 32, 32, 3)
x = subset.astype(np.float64) / 255.0
numpy_mean, numpy_std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))  # population std (ddof=0)
stream_mean, stream_std = compute_mean_std(subset)
print("NumPy:    ", numpy_mean.round(6), numpy_std.round(6))
print("streamed: ", np.round(stream_mean, 6), np.round(stream_std, 6))
assert np.allclose(stream_mean, numpy_mean, atol=1e-9)
assert np.allclose(stream_std, numpy_std, atol=1e-9)

# %% [markdown]
# ## 4. The 0.2023 pitfall
#
# Search the web for CIFAR-10 normalization and you will find, in many popular repositories and
# tutorials, `Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))`. The means are right.
# The "stds" are not the dataset's standard deviation: we just measured about 0.247, 0.243, 0.261.
# Where do 0.2023, 0.1994, 0.2010 come from? They match the **average over images of each image's
# own standard deviation**.

# %% [markdown]
# ### Exercise 2: the mean of per-image stds
#
# Check the claim yourself. Write `my_mean_of_per_image_std(images)`: for uint8 images of shape
# (N, H, W, 3), scale the pixels to [0, 1], compute each image's own std per channel (over its
# H × W pixels), then average over the images, and return the three numbers. The check runs it on
# a few small images and then on the 5,000-image `subset` of section 3, and we compare the result
# with the dataset std of the same subset, `numpy_std`.

# %%
def my_mean_of_per_image_std(images: np.ndarray) -> np.ndarray:
    """The average over images of each image's own std, per channel: three numbers."""
    ### BEGIN SOLUTION
    pixels = images.astype(np.float64) / 255  # (N, H, W, 3) in [0, 1]
    stds_per_image = pixels.std(axis=(1, 2))  # (N, 3): one std per image and channel
    return stds_per_image.mean(axis=0)  # (3,)
    ### END SOLUTION


# %%
per_image_subset = check_mean_of_per_image_std(my_mean_of_per_image_std, subset)
print("mean of per-image stds:", np.round(per_image_subset, 4))
print("dataset std:           ", numpy_std.round(4))

# %% [markdown]
# On all 50,000 training images, with `course_utils`:

# %%
per_image = mean_of_per_image_std(train.images)
pd.DataFrame(
    {
        "dataset std (what Normalize needs)": std,
        "mean of per-image stds": per_image,
        "widely copied 'std'": WRONG_CIFAR10_STD,
    },
    index=["red", "green", "blue"],
).T.round(4)

# %%
# Sanity check: the copied figure is the mean of per-image stds, clearly below the dataset std.
assert np.allclose(per_image, WRONG_CIFAR10_STD, atol=0.003)
assert all(s - p > 0.04 for s, p in zip(std, per_image))

# %% [markdown]
# (On the official release the match is to four decimals; the JPEG copy lands within 0.002.)
#
# ### Why the per-image std is smaller: the law of total variance
#
# Think of picking a random pixel value $X$ from the training set by first picking a random image
# $I$, then a random pixel in it. The **law of total variance** splits the variance of $X$ in two:
#
# $$ \underbrace{\operatorname{Var}(X)}_{\text{dataset variance}}
#    = \underbrace{\mathbb{E}\big[\operatorname{Var}(X \mid I)\big]}_{\text{spread within images}}
#    + \underbrace{\operatorname{Var}\big(\mathbb{E}[X \mid I]\big)}_{\text{spread of image brightness}} . $$
#
# An image's own std only sees the first term, the spread *inside* that image. It is blind to the
# second: that some images are dark (night, a black cat) and others bright (sky, snow). Averaging
# per-image stds therefore misses a whole term. (Averaging *stds* rather than variances loses a
# little more, since the average of square roots is below the square root of the average.)
#
# Let us check the identity on the 5,000-image subset, where it must hold exactly:

# %%
within = x.var(axis=(1, 2)).mean(axis=0)  # E[Var(X | image)], per channel
between = x.mean(axis=(1, 2)).var(axis=0)  # Var(E[X | image]), per channel
total = x.var(axis=(0, 1, 2))  # Var(X)
assert np.allclose(total, within + between)  # the law of total variance, to rounding error
pd.DataFrame(
    {
        "Var(X)": total,
        "within images": within,
        "between images": between,
        "between share": between / total,
        "sqrt(Var(X))": np.sqrt(total),
        "sqrt(within)": np.sqrt(within),
        "mean per-image std": per_image_subset,
    },
    index=["red", "green", "blue"],
).T.round(4)

# %% [markdown]
# A quarter to a third of the variance of CIFAR-10 pixels is the difference in brightness
# *between* images (most in blue: whole images of sky or sea), and the per-image figure leaves
# exactly that out.
#
# ### What normalizing with the wrong std does
#
# Dividing by about 0.20 instead of the true 0.24-0.26 makes the normalized inputs 1.2 to 1.3 times
# too spread out (0.2470 / 0.2023 ≈ 1.22 for red, 0.2616 / 0.2010 ≈ 1.30 for blue). Let us normalize the same 5,000 images both ways with the course's evaluation
# transform (notebook 02) and measure the result:

# %%
batch = torch.from_numpy(subset).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W), uint8
right = eval_transform(mean, std)(batch)  # (5000, 3, 32, 32) float32
wrong = eval_transform(mean, WRONG_CIFAR10_STD)(batch)
pd.DataFrame(
    {
        "std after normalizing with the dataset std": right.std(dim=(0, 2, 3)).numpy(),
        "std after normalizing with 0.2023...": wrong.std(dim=(0, 2, 3)).numpy(),
    },
    index=["red", "green", "blue"],
).T.round(3)

# %%
# Sanity check: the right statistics give unit std; the copied ones give 1.2 to 1.3.
assert torch.allclose(right.std(dim=(0, 2, 3)), torch.ones(3), atol=0.03)
assert ((wrong.std(dim=(0, 2, 3)) > 1.15) & (wrong.std(dim=(0, 2, 3)) < 1.35)).all()

# %% [markdown]
# Is this a disaster? No: many models trained with 0.2023 reach good accuracy, because the first
# convolution and its batch normalization adapt to a 20-30% difference in scale. But it is a number
# that does not mean what its name says, copied without a source, and the harm shows up when two
# pieces of code disagree: a model trained with one normalization and evaluated or deployed with
# the other sees inputs on the wrong scale. The cure is cheap: compute the statistics yourself, as
# above, and write down where each number comes from.
#
# ### Another borrowed pair: ImageNet's statistics
#
# Many tutorials, one of the documents this course started from among them, normalize CIFAR-10
# with `Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))` and train the network
# from scratch. Those are the channel statistics of **ImageNet**'s training photos. They belong
# with a network *pretrained on ImageNet*: its first layer learned on inputs normalized that way,
# so fine-tuning it keeps them. A network trained from scratch on CIFAR-10 has never seen an
# ImageNet image, and for it these are simply the statistics of another dataset. How far off are
# they? We normalize the same 5,000 images with them:

# %%
#: The statistics torchvision's pretrained ImageNet models expect (torchvision's documentation).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
imagenet_normalized = eval_transform(IMAGENET_MEAN, IMAGENET_STD)(batch)  # (5000, 3, 32, 32)
pd.DataFrame(
    {
        "CIFAR-10 mean": mean,
        "ImageNet mean": IMAGENET_MEAN,
        "CIFAR-10 std": std,
        "ImageNet std": IMAGENET_STD,
        "mean after normalizing with CIFAR-10's": right.mean(dim=(0, 2, 3)).numpy(),
        "mean after normalizing with ImageNet's": imagenet_normalized.mean(dim=(0, 2, 3)).numpy(),
        "std after normalizing with ImageNet's": imagenet_normalized.std(dim=(0, 2, 3)).numpy(),
    },
    index=["red", "green", "blue"],
).T.round(3)

# %%
# Sanity check: ImageNet's statistics leave CIFAR-10's inputs off-centre and too spread out.
shift, spread = imagenet_normalized.mean(dim=(0, 2, 3)), imagenet_normalized.std(dim=(0, 2, 3))
assert ((shift > 0.0) & (shift < 0.25)).all() and shift[2] > 0.1  # blue: far off centre
assert ((spread > 1.03) & (spread < 1.22)).all()

# %% [markdown]
# CIFAR-10's pixels are brighter on average than ImageNet's and more spread out, most of all in
# blue. Normalized with ImageNet's numbers, the inputs are no longer centred (a mean of about 0.03
# in red, 0.12 in green and 0.18 in blue, instead of 0) and are 8-16% too spread out. As with
# 0.2023, the first convolution and its BatchNorm adapt during training to an offset and scale this
# size, so the accuracy need not suffer much; the mistake is in the reasoning. Normalization
# statistics describe the data a network is trained on: compute them from your training images,
# unless you start from weights that were trained on other data with other statistics. On data
# further from ImageNet (greyscale X-rays, satellite images) the borrowed numbers are much further
# off. Section 8 of [07 · The experiments lab](07_experiments_lab.ipynb) trains networks with
# both borrowed pairs and with the right statistics, over seeds, and compares their accuracy.

# %% [markdown]
# ## Check your understanding
#
# 1. Why are the normalization statistics computed on the training split and not on all 60,000
#    images?
# 2. `torch.Tensor.std()` divides by $n - 1$ (Bessel's correction) unless told otherwise, while
#    `compute_mean_std` divides by $n$. How much does that change the result here?
# 3. Imagine a dataset in which every image is a single flat colour (each image uniform, different
#    images different colours). What are the mean of per-image stds and the dataset std?
# 4. How much memory would the "one big float32 batch" recipe need for 1.28 million ImageNet
#    images of 224 × 224 × 3? What does `compute_mean_std` need?
#
# <details><summary>Answers</summary>
#
# 1. The test set stands in for unseen data. Any information taken from it, even two numbers per
#    channel, makes the test score less honest. Here the effect would be tiny, but the rule keeps the
#    habit right for cases where it is not.
# 2. By a factor $\sqrt{n / (n-1)}$ with $n = 51{,}200{,}000$ pixels per channel: about $10^{-8}$
#    relative. Irrelevant here; it matters only for small samples.
# 3. Every per-image std is 0, so their mean is 0, while the dataset std is the spread of the image
#    colours, all of it "between images". The per-image figure can be arbitrarily wrong.
# 4. $1.28 \cdot 10^6 \times 150{,}528 \times 4$ bytes $\approx 770$ GB. `compute_mean_std` needs one
#    batch plus six running sums, whatever the dataset size.
#
# </details>
#
# ## What you learned
#
# - CIFAR-10: 50,000 training and 10,000 test images, 32 × 32 RGB, ten classes, perfectly balanced;
#   loaded here as `uint8` arrays of shape (N, 32, 32, 3).
# - Normalization subtracts each channel's mean and divides by its std, computed on the training
#   split and applied unchanged everywhere.
# - Mean and std can be computed exactly by streaming: two running sums per channel (integers in
#   `compute_mean_std`, float64 in your version; both exact here), one batch in memory, checked
#   against NumPy.
# - The widely copied `(0.2023, 0.1994, 0.2010)` is the mean of per-image stds; it misses the
#   between-image term of the law of total variance, and leaves inputs 1.2-1.3 times too spread.
# - ImageNet's `(0.485, 0.456, 0.406)` / `(0.229, 0.224, 0.225)` belong with ImageNet-pretrained
#   weights; a network trained from scratch on CIFAR-10 should use CIFAR-10's own statistics.
# - CIFAR-10's statistics: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616) for the
#   official release; later notebooks take them from `course_utils.data`.
#
# Next: [02 · Augmentation & DataLoaders](02_augmentation_dataloaders.ipynb)
