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
# # 09 · Diagnostics: the learning rate before training, calibration and Grad-CAM after
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/09_diagnostics.ipynb)
#
# You can now train and evaluate a ResNet-18. This notebook answers three questions a
# practitioner asks next, each with a tool and a measurement:
#
# 1. **What learning rate should I use?** The *learning-rate range test* finds a candidate in a
#    few hundred steps; a small sweep, committed as a table, checks whether the candidate trains
#    well.
# 2. **Can I trust the confidence the model prints?** A *reliability diagram* and the *expected
#    calibration error* say how far the softmax probabilities are from the frequencies they
#    claim; *temperature scaling* corrects them with one number.
# 3. **What is the network looking at when it is wrong?** *Grad-CAM* maps which regions of an
#    image raised the score of the predicted class.
#
# Most of it runs on the model shipped with the course (`checkpoints/cpu`), so it costs little
# compute: on 2 CPU cores the range test is the slowest cell, at about two minutes.
#
# **Learning objectives.** After this notebook you can
# - run a learning-rate range test, read its curve, and say what it cannot tell you;
# - measure a classifier's calibration (reliability diagram, ECE with its binning, negative
#   log-likelihood) and fix it with temperature scaling, fitted on validation data;
# - say what label smoothing does to calibration, from a measurement;
# - compute Grad-CAM by hand from a layer's activations and gradients, and say what a 4x4 map
#   can and cannot show.
#
# **Course map:** previous: [08 · Transfer learning](08_transfer_learning.ipynb). The functions
# used here live in `course_utils/diagnostics.py`; their figures in `course_utils/plotting.py`.

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
import math
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display

from course_utils.checkpoints import pretrained_file
from course_utils.config import PRESETS, TrainConfig, get_device, is_smoke, smoke_config
from course_utils.data import build_loaders, cifar10_splits, eval_transform
from course_utils.diagnostics import (
    ECE_BINS,
    activations_and_gradients,
    expected_calibration_error,
    fit_temperature,
    grad_cam,
    lr_range_test,
    negative_log_likelihood,
    reliability_table,
    upsample_maps,
)
from course_utils.evaluation import most_confident_mistakes, predict
from course_utils.exercises import check_ece, check_grad_cam_map, check_temperature
from course_utils.experiments import RECIPE_2026_12, read_table
from course_utils.models import to_device
from course_utils.plotting import heatmap_gallery, plot_range_test, reliability_diagram
from course_utils.run import setup_run
from course_utils.training import model_from_checkpoint

device = get_device()
SMOKE = is_smoke()  # COURSE_SMOKE=1: a small real subset and few steps (CI), same code path
print(f"device: {device}, smoke mode: {SMOKE}")

# %% [markdown]
# ## 1. The learning-rate range test
#
# The learning rate is the setting that matters most, and the one most often guessed. Smith
# (2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3) proposed a cheap
# test, which fast.ai made popular as `lr_find`:
#
# - start from the untrained network and train for a few hundred batches;
# - at each step, multiply the learning rate by the same factor, so that it grows
#   *exponentially*, here from $10^{-4}$ to $10$;
# - record the loss of every batch.
#
# While the learning rate is tiny, the loss barely moves. Then it starts to fall: the steps are
# large enough to learn. Further on, the steps overshoot, the loss stops falling, turns noisy and
# finally blows up. A single batch's loss is noisy, so the curve is smoothed with an exponential
# moving average (with the same bias correction as Adam's, so its first values are not pulled
# towards 0). The run stops once the smoothed loss exceeds 4 times its lowest value.
#
# A common rule reads a *peak* learning rate off the curve: **a tenth of the learning rate at
# the lowest smoothed loss**. At the minimum the loss has already stopped improving; a tenth of it
# is safely on the part of the curve where larger steps still help. It is a rule of thumb, which
# is why section 2 checks it.
#
# The test uses everything of the recipe except the schedule: the `cpu` preset's network, batch
# size, SGD with Nesterov momentum, weight decay and label smoothing, with the recipe pinned as
# `experiments.RECIPE_2026_12` (the recipe of the sweep below).

# %%
cfg = replace(PRESETS["cpu"], **RECIPE_2026_12)
range_steps = 300
if SMOKE:
    cfg, range_steps = smoke_config(cfg), 40
setup = setup_run(cfg, device, download=True)  # seed, data, statistics, loaders, a fresh model

start = time.perf_counter()
range_test = lr_range_test(setup.model, setup.train_loader, cfg, device, steps=range_steps)
print(f"{len(range_test.lrs)} steps in {time.perf_counter() - start:.0f} s; lowest smoothed loss "
      f"at lr {range_test.lr_at_minimum:.3g}, so the suggestion is {range_test.suggestion:.3g}"
      + (" (the loss diverged, which stopped the test)" if range_test.diverged else ""))
fig = plot_range_test(range_test.lrs, range_test.losses, range_test.smoothed,
                      range_test.suggestion, marks={"the preset's peak": PRESETS["cpu"].lr},
                      diverged=range_test.diverged)

# %% [markdown]
# Read the curve from left to right: flat (the steps are too small to matter), then falling, then
# flat again and noisy, and at the right end, if the test got that far, rising. The gray line is
# what the smoothing hides: one batch's loss jumps by several tenths from step to step. On this
# network the curve is not that clean: between about 0.1 and 0.3 it rises a little and then falls
# again, to a lowest point near lr 2 that is barely below the level it had already reached near
# 0.05. The rule takes the lowest point, wherever it is.
#
# The same test on two seeds, run on a machine with the full data (`python
# benchmarks/lr_range_test.py --seeds 0 1`), is committed as a table. Its curves show how much of
# the shape is noise, and its suggestions are the ones section 2 checks:

# %%
committed_range = read_table("lr-range-test")
fig, ax = plt.subplots(figsize=(7, 4))
for seed, run in committed_range.groupby("seed"):
    line, = ax.plot(run["lr"], run["smoothed"], label=f"seed {seed} (smoothed)")
    ax.axvline(run["suggestion"].iloc[0], color=line.get_color(), ls=":",
               label=f"seed {seed}: suggestion {run['suggestion'].iloc[0]:.2g}")
ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
       title="range test, committed: " + committed_range["machine"].iloc[0][:40])
ax.legend(fontsize=8)
plt.show()
suggestions = committed_range.groupby("seed")["suggestion"].first()
print("suggested peak learning rates:", {int(s): round(v, 3) for s, v in suggestions.items()})

# %% [markdown]
# ### What the range test cannot tell you
#
# It measures one thing, how the loss of an *untrained* network responds to the size of its
# first few hundred steps. So:
#
# - **not the schedule.** The network that reaches the end of a schedule is not the untrained one
#   of the test. Warm-up, the shape of the decay and the final learning rate are other choices.
# - **not the weight decay.** Decay acts over thousands of steps; a few hundred do not show it.
#   Change it, and the good learning rate changes with it (their product sets how fast weights
#   shrink), so the test must be run again.
# - **not the batch size.** A larger batch averages its gradient over more images and tolerates a
#   larger step (roughly in proportion, Goyal et al. 2017). Each batch size needs its own test.
# - **not how long to train**, nor whether a run will overfit.
#
# And its rule is a rule of thumb: a tenth of the minimum is a habit, not a law. Hence a sweep.
#
# ## 2. Does the suggestion train well? A sweep
#
# The check is a small experiment: the same recipe with four peak learning rates around the
# suggestions, each trained for 2 epochs on all 45,000 training images, with two seeds each
# (`python -m course_utils experiment lr-sweep --seeds 0 1`, about 4 minutes a run on 2 CPU
# cores). Validation accuracy is what one would choose on; the test accuracy is shown as well.

# %%
sweep = read_table("lr-sweep")
sweep["peak_lr"] = sweep["configuration"].str.replace("peak lr ", "").astype(float)
by_lr = sweep.groupby("peak_lr").agg(
    val_mean=("best_val_accuracy", "mean"), val_std=("best_val_accuracy", "std"),
    test_mean=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
    seeds=("seed", "nunique"),
)
print(f"measured on: {sweep['machine'].iloc[0]}, {sweep['date'].iloc[0]}")
display(by_lr.round(4))

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.errorbar(by_lr.index, 100 * by_lr["val_mean"], yerr=100 * by_lr["val_std"], marker="o",
            capsize=4, label="validation (mean ± std over seeds)")
ax.errorbar(by_lr.index, 100 * by_lr["test_mean"], yerr=100 * by_lr["test_std"], marker="s",
            capsize=4, alpha=0.6, label="test")
for seed, value in suggestions.items():
    ax.axvline(value, color="tab:green", ls=":", label=f"range test, seed {seed}")
ax.set(xscale="log", xlabel="peak learning rate (log scale)",
       ylabel="accuracy after 2 epochs (%)", title="the sweep that checks the range test")
ax.set_xticks(by_lr.index, [f"{lr:g}" for lr in by_lr.index])
ax.minorticks_off()
ax.legend(fontsize=8)
plt.show()

# %%
best_lr = by_lr["val_mean"].idxmax()
closest = min(by_lr.index, key=lambda lr: abs(math.log(lr / suggestions.mean())))
gap = by_lr.loc[best_lr, "val_mean"] - by_lr.loc[closest, "val_mean"]
ends = by_lr.loc[best_lr, "val_mean"] - by_lr["val_mean"].iloc[[0, -1]]
print(f"best peak lr on validation: {best_lr:g}; the sweep's lr closest to the suggestions "
      f"({suggestions.mean():.2g} on average): {closest:g}, {100 * gap:.2f} points below the best; "
      f"the smallest and largest lr: {100 * ends.iloc[0]:.1f} and {100 * ends.iloc[1]:.1f} points "
      "below the best")
# What the committed table supports, with a margin:
assert best_lr not in (by_lr.index.min(), by_lr.index.max())  # the sweep brackets the best
assert gap < 0.01  # the suggestion is within a point of the best (measured: under 0.2)
assert (ends > 0.01).all()  # both ends lose more than a point (measured: about 2 each)

# %% [markdown]
# **What the sweep shows.** After 2 epochs, the peak learning rates 0.2 and 0.4 train equally well
# (within a few tenths of a point on validation, less than the spread between two seeds); halving to
# 0.1 or doubling again to 0.8 costs about 2 points. The range test's suggestions land at the lower
# edge of that flat top, next to the preset's 0.2: here the rule of thumb picked a good learning
# rate in a few hundred steps, where the sweep needed eight runs of two epochs. A flat top a factor
# of 2 wide is not unusual with BatchNorm: it makes a layer's output independent of the scale of the
# weights before it, and the weights' own growth then shrinks the effective step by itself (Arora,
# Li and Lyu 2019, "Theoretical Analysis of Auto Rate-Tuning by Batch Normalization").
#
# Note what the sweep held fixed: the schedule (warm-up for 23% of the steps, then a linear
# decay), the weight decay, the batch size and the length of the run. At 15 minutes instead of 2
# epochs, or with another batch size, the best peak could move.
#
# ## 3. Can the confidence be trusted? Calibration
#
# A classifier that says "90%" should be right 9 times out of 10 *among the images it says 90%
# for*. That property is **calibration**. It matters whenever a probability is used as one: to
# defer uncertain images to a person, to combine models, to decide with costs. Accuracy does not
# measure it: a model can be accurate and badly calibrated.
#
# The measure used here follows Guo et al. (2017, "On Calibration of Modern Neural Networks"):
#
# - the **confidence** of a prediction is the softmax probability of the predicted class;
# - the predictions are sorted into $M$ **equal-width bins** of confidence, bin $m$ holding the
#   confidences in $\left(\frac{m-1}{M}, \frac{m}{M}\right]$; here $M = 15$;
# - the **reliability diagram** plots, for each bin, its accuracy against its mean confidence. A
#   calibrated model lies on the diagonal; bars below it are overconfident;
# - the **expected calibration error** is the gap averaged over the bins, each weighted by its
#   share of the images: $\mathrm{ECE} = \sum_m \frac{|B_m|}{n}\,\left|\mathrm{acc}(B_m) -
#   \mathrm{conf}(B_m)\right|$.
#
# ECE depends on the binning (the number of bins, equal-width or equal-count), so an ECE is only
# comparable with another computed the same way. The **negative log-likelihood** (NLL, the mean
# cross-entropy of the true class) needs no bins and also rewards calibration, so we report both.
#
# The model is the one shipped with the course; its validation split is rebuilt from the seed
# stored in the checkpoint, so it holds exactly the images it never trained on (1,000 of them,
# as many as the `cpu` preset holds out: notebook 07, section 9).

# %%
checkpoint_path = pretrained_file("cpu")  # the shipped checkpoint, its sha256 checked
model, checkpoint = model_from_checkpoint(checkpoint_path)  # network, weights, architecture check
model_cfg = TrainConfig.from_dict(checkpoint["config"])
to_device(model, device, channels_last=model_cfg.channels_last)
mean, std = checkpoint["mean"], checkpoint["std"]  # the training images' statistics
model_splits = cifar10_splits(val_size=model_cfg.val_size, seed=model_cfg.seed, download=True)
_, val_loader, test_loader = build_loaders(model_splits, model_cfg, mean, std, device)


def predictions(loader):
    """The shipped model's predictions, with the flip TTA it was trained to be tested with."""
    return predict(model, loader, device, channels_last=model_cfg.channels_last,
                   amp=model_cfg.amp, tta=model_cfg.tta)


val_pred = predictions(val_loader)
val_ece = expected_calibration_error(val_pred.logits, val_pred.labels)
val_nll = negative_log_likelihood(val_pred.logits, val_pred.labels)
print(f"validation ({len(val_pred):,} images): accuracy {val_pred.accuracy:.2%}, "
      f"ECE {val_ece:.4f} ({ECE_BINS} equal-width bins), NLL {val_nll:.4f}")
fig = reliability_diagram({"shipped model, validation": reliability_table(val_pred.logits,
                                                                          val_pred.labels)})

# %% [markdown]
# ### Exercise 1: the calibration error
#
# Write `my_ece(confidences, correct, n_bins)`: `confidences` holds the top softmax probability
# of each image, `correct` whether its prediction was right (booleans), and the result is the
# ECE with `n_bins` equal-width bins, $\left(\frac{m-1}{M}, \frac{m}{M}\right]$. Skip empty bins.
# Mind the confidence of exactly 1.0, which float32 softmax produces: it belongs to the last bin.
# The check compares your function with the reference on two small cases and on the model's
# validation predictions.

# %%
def my_ece(confidences: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Expected calibration error with n_bins equal-width bins (lower, upper]."""
    # Hint: np.ceil(confidences * n_bins) - 1 is each prediction's bin (clip it to 0..n_bins-1).
    ### BEGIN SOLUTION
    which = np.clip(np.ceil(confidences * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for m in range(n_bins):
        inside = which == m
        if inside.any():  # an empty bin has weight 0
            gap = abs(correct[inside].mean() - confidences[inside].mean())
            total += inside.mean() * gap  # weight: the bin's share of the images
    return total
    ### END SOLUTION


# %%
val_confidence = val_pred.probs.max(axis=1).astype(np.float64)
ece = check_ece(my_ece, val_confidence, val_pred.preds == val_pred.labels, ECE_BINS)
print(f"ECE on validation: {ece:.4f}")

# %% [markdown]
# ### Temperature scaling
#
# The simplest fix is one number. Divide every logit by a **temperature** $T > 0$ before the
# softmax: $T > 1$ flattens the probabilities (less confident), $T < 1$ sharpens them. The
# predicted class, the largest logit, does not change, so neither does the accuracy. $T$ is chosen
# to minimize the NLL on the **validation** split: choosing it on the test set would make the
# test set part of training, the mistake notebook 06 warns about.
#
# The NLL of $\mathrm{softmax}(z / T)$ has a single minimum in $T$ here, so a 1-D search finds it
# (`diagnostics.fit_temperature` searches over $\log T$ with SciPy's bounded scalar minimizer).
#
# ### Exercise 2: the temperature
#
# Write `my_temperature(logits, labels)` that returns the $T$ with the lowest
# `F.cross_entropy(logits / T, labels)`. A fine grid of candidates, evenly spaced in $\log T$,
# is enough; the check wants your $T$ within 1% of a brute-force search, on an overconfident
# and an underconfident synthetic case and on the model's validation logits.

# %%
def my_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimizes the cross-entropy of softmax(logits / T)."""
    # Hint: np.exp(np.linspace(np.log(0.05), np.log(20), 2000)) gives candidates for T.
    ### BEGIN SOLUTION
    candidates = np.exp(np.linspace(np.log(0.05), np.log(20.0), 4000))
    losses = [F.cross_entropy(logits / t, labels).item() for t in candidates]
    return float(candidates[int(np.argmin(losses))])
    ### END SOLUTION


# %%
temperature = check_temperature(my_temperature, torch.from_numpy(val_pred.logits),
                                torch.from_numpy(val_pred.labels))
print(f"fitted temperature T = {temperature:.3f} ("
      + ("T > 1: the model was overconfident)" if temperature > 1 else
         "T < 1: the model was underconfident)"))
assert abs(math.log(temperature / fit_temperature(val_pred.logits, val_pred.labels))) < 0.01

# %% [markdown]
# The reliability diagram on validation, before and after, and then **the test set, once**, with
# the temperature fitted on validation:

# %%
scaled_val = val_pred.logits / temperature
fig = reliability_diagram({
    f"validation, T = 1 (ECE {val_ece:.3f})": reliability_table(val_pred.logits, val_pred.labels),
    f"validation, T = {temperature:.2f} (ECE "
    f"{expected_calibration_error(scaled_val, val_pred.labels):.3f})":
        reliability_table(scaled_val, val_pred.labels),
})

test_pred = predictions(test_loader)
test_table = pd.DataFrame([
    {"temperature": t, "accuracy": (np.argmax(test_pred.logits / t, 1) == test_pred.labels).mean(),
     "ECE": expected_calibration_error(test_pred.logits / t, test_pred.labels),
     "NLL": negative_log_likelihood(test_pred.logits, test_pred.labels, t)}
    for t in (1.0, temperature)
], index=["before (T = 1)", "after (T fitted on validation)"])
display(test_table.round(4))
assert test_table["accuracy"].nunique() == 1  # temperature scaling never changes a prediction

if not SMOKE:  # the full validation split: what the text below reads
    assert temperature < 1, "the shipped model was expected to be underconfident"

# %% [markdown]
# **What this shows.** The shipped model is **underconfident**. In the reliability diagram the
# bars rise above the diagonal: in the bin of confidence 0.80-0.87, which holds more images than
# any other, almost every prediction is right. Almost no prediction gets a confidence above
# 0.9, however easy the image. So the fitted temperature is *below* 1: it sharpens the
# probabilities. In full mode, on the course's copy of the data, the test ECE falls from about
# 0.16 to about 0.02 and the test NLL from about 0.57 to about 0.45 (your figures are printed
# above), while the accuracy does not move by a single image.
#
# This is the opposite of what Guo et al. found for large networks trained long: those are
# *overconfident*, and need $T > 1$. The cause here is the next section's subject.
#
# ## 4. Label smoothing and calibration
#
# The shipped model was trained with **label smoothing 0.2**: its target for the true class is
# $0.8 + 0.2/10 = 0.82$, not 1, and $0.02$ for each other class. A network trained towards 0.82
# learns not to put much more than that on any class. Müller, Kornblith and Hinton (2019, "When
# does label smoothing help?") found that label smoothing often improves calibration, as
# temperature scaling does. Does it here? Two runs that differ only in it, two seeds each, the
# same 2-epoch recipe as the sweep (`python -m course_utils experiment label-smoothing --seeds 0
# 1`, then `python -m course_utils experiment calibration`, which fits a temperature on each
# run's validation split and measures both splits):

# %%
calibration = read_table("calibration")
print(f"measured on: {calibration['machine'].iloc[0]}, {calibration['date'].iloc[0]}")
test_rows = calibration[calibration["split"] == "test"]
summary = test_rows.groupby(["label_smoothing", "scaled"]).agg(
    accuracy=("accuracy", "mean"), ece=("ece", "mean"), ece_std=("ece", "std"),
    nll=("nll", "mean"), temperature=("temperature", "mean"), seeds=("seed", "nunique"),
)
display(summary.round(4))

fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for ax, metric in zip(axes, ("ece", "nll")):
    table = summary[metric].unstack("scaled")
    table.columns = ["T = 1", "T fitted on validation"]
    table.index = [f"label smoothing {ls:g}" for ls in table.index]
    table.plot.bar(ax=ax, rot=0)
    ax.set(title=f"test {metric.upper()} (mean of seeds)", ylabel=metric.upper())
plt.show()

# %%
# What the committed table supports, with a margin (test split, means over the seeds):
before, after = (summary.xs(scaled, level="scaled") for scaled in (False, True))
assert before.loc[0.2, "ece"] > before.loc[0.0, "ece"] + 0.05  # measured: 0.135 against 0.015
assert after.loc[0.2, "temperature"] < 0.85 < 0.9 < after.loc[0.0, "temperature"] < 1.1
assert after.loc[0.2, "ece"] < 0.05  # temperature scaling repairs most of it (measured: 0.025)
assert after.loc[0.2, "nll"] > after.loc[0.0, "nll"] + 0.01  # but not all (measured: 0.04)
assert abs(before.loc[0.2, "accuracy"] - before.loc[0.0, "accuracy"]) < 0.01  # same accuracy

# %% [markdown]
# **What the table shows.** After 2 epochs, the network trained without label smoothing is
# already well calibrated: its ECE is under 0.02, and its fitted temperature is 1 within a few
# percent. With label smoothing 0.2, at the same accuracy, its ECE is about 9 times larger and the
# fitted temperature about 0.65: it is underconfident, as the shipped model is. Temperature
# scaling repairs most of that (ECE back to about 0.02-0.03), but not all: its NLL stays above the
# unsmoothed network's.
#
# Why: with label smoothing the loss is lowest when the network gives the true class 0.82, so it
# learns never to be much surer than that, even on images it gets right every time. Müller et
# al. found label smoothing *improves* calibration, in networks that are otherwise overconfident,
# where its pull towards lower confidence corrects the overconfidence. A small network trained
# for a few epochs is not overconfident, so here the same pull overshoots.
#
# The lesson is not "label smoothing is bad": it cost no accuracy here, and notebook 07 shows
# what it did to accuracy elsewhere. It is that a probability from a network trained with label
# smoothing is not a frequency. If you use the probabilities, fit a temperature on validation
# data, and check.
#
# ## 5. What is the network looking at? Grad-CAM
#
# Notebook 06 showed the model's most confident mistakes. Grad-CAM (Selvaraju et al. 2017) asks
# which parts of such an image drove the decision. Take the feature maps $A$ of a late layer, $C$
# channels of $h \times w$ positions, and the score $S_c$ of a class (its logit):
#
# 1. the gradient $\partial S_c / \partial A$ says how the score would change if each feature at
#    each position grew;
# 2. averaging it over the positions gives one weight per channel, $\alpha_k = \frac{1}{hw}
#    \sum_{i,j} \partial S_c / \partial A_{kij}$: how much channel $k$ as a whole speaks for the
#    class;
# 3. the map is $\mathrm{ReLU}\left(\sum_k \alpha_k A_k\right)$: positions where the features that
#    speak for the class are active. The ReLU keeps the evidence *for* the class.
#
# We use the last stage, `layer4`. Its feature maps are **4x4** for a 32x32 image (the CIFAR stem
# keeps 32x32 in `layer1`, and each later stage halves it), so each value covers an 8x8-pixel
# block, and its receptive field is larger still. The map is upsampled to 32x32 for display; the
# smooth look comes from the interpolation, not from the network.
#
# ### Exercise 3: one Grad-CAM map by hand
#
# `activations_and_gradients` returns the two ingredients for a batch. Write
# `my_grad_cam_map(activations, gradients)` for one image, both of shape `(C, h, w)`, returning
# the `(h, w)` map, not rescaled.

# %%
def my_grad_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """(h, w) Grad-CAM map: ReLU(sum_k alpha_k A_k), alpha_k = the mean of channel k's gradient."""
    # Hint: average the gradients over the positions (dims 1 and 2) first.
    ### BEGIN SOLUTION
    alpha = gradients.mean(dim=(1, 2))  # (C,): one weight per channel
    return torch.relu((alpha[:, None, None] * activations).sum(dim=0))  # (h, w)
    ### END SOLUTION


# %%
test_images = eval_transform(mean, std)(torch.from_numpy(model_splits.test.images).permute(0, 3,
                                                                                          1, 2))
mistakes = most_confident_mistakes(test_pred, k=8)
first = torch.tensor(mistakes["index"].to_numpy()[:1])  # the most confident mistake
A, G = activations_and_gradients(model, test_images[first].to(device), model.layer4)
print(f"layer4 for one image: activations {tuple(A.shape)}, gradients {tuple(G.shape)}")
cam_map = check_grad_cam_map(my_grad_cam_map, A[0].cpu(), G[0].cpu())
reference = grad_cam(model, test_images[first].to(device), model.layer4)[0].cpu()
assert torch.allclose(cam_map.float(), reference, rtol=1e-3, atol=1e-5)

# %% [markdown]
# Now the eight most confident mistakes, each with the map of the class it **predicted**, and,
# for comparison, a correctly classified test image of the same true class with the map of its
# (correct) prediction.

# %%
classes = list(checkpoint["classes"])
wrong_idx = mistakes["index"].to_numpy()
correct_idx = []
for label in mistakes["label"]:  # a correct, confident image of the same true class
    right = np.flatnonzero((test_pred.preds == label) & (test_pred.labels == label))
    confidence = test_pred.probs[right, label]
    correct_idx.append(int(right[np.argsort(-confidence)[len(correct_idx)]]))
shown = np.concatenate([wrong_idx, correct_idx])
maps = grad_cam(model, test_images[shown].to(device), model.layer4).cpu()
titles = ([f"said {classes[p]}\n(true {classes[t]})" for p, t in zip(mistakes["pred"],
                                                                      mistakes["label"])]
          + [f"said {classes[test_pred.preds[i]]}\n(correct)" for i in correct_idx])
print(f"confidence of these mistakes: {mistakes['confidence'].min():.2f} to "
      f"{mistakes['confidence'].max():.2f}")
fig = heatmap_gallery(test_images[shown], upsample_maps(maps, 32), titles, mean, std, ncols=8)

# %% [markdown]
# **Reading the maps.** Each map is one blob or two, a quarter to half of the image across: that
# is the 4x4 grid, blurred by the upsampling. Compare the rows:
#
# - For the correct images, the blob sits on the object: on a cat's face, on the body of a plane.
# - For most of the mistakes it also sits on the object, not on the background: the network
#   looked at the right place and drew the wrong conclusion, from a shape or a colour that
#   belongs to another class (a cat on grass in a pose or colour of a frog or a deer). Where a
#   blob covers the background instead (sky, grass, a floor), the background may have driven
#   the decision: a shortcut, worth checking on more images of that class.
# - These are the *most* confident mistakes, yet their confidences (printed above the maps) are
#   modest, under 0.9 on the course's copy of the data: the underconfidence of sections 3 and 4.
#
# What a 4x4 map cannot show: which part of the object (an ear, a wheel), or a thin detail. An
# earlier stage has a finer grid. `layer3` works on 8x8 maps, at the price of features that say
# less about the class (Selvaraju et al. chose the last convolutional layer for that reason):

# %%
maps_8x8 = grad_cam(model, test_images[shown].to(device), model.layer3).cpu()
print(f"layer3 maps: {tuple(maps_8x8.shape[1:])} (layer4: {tuple(maps.shape[1:])})")
fig = heatmap_gallery(test_images[shown], upsample_maps(maps_8x8, 32), titles, mean, std, ncols=8)

# %% [markdown]
# The 8x8 maps pick out smaller regions (a face, a wheel, the antlers of a deer) and are noisier:
# several spots, some on the background, where the 4x4 maps had one blob. Neither is the "true"
# explanation. Grad-CAM shows where the features that raised one score were active in one layer,
# measured by a gradient, which describes a small change around this image and nothing more.
#
# ## Check your understanding
#
# 1. You double the batch size. Can you keep the peak learning rate the range test suggested for
#    the old one?
# 2. A model has ECE 0.02 and another 0.08, computed by two different papers. Which is better
#    calibrated?
# 3. Temperature scaling changed the test accuracy of your model by 0.3 points. What went wrong?
# 4. Why fit the temperature on the validation split rather than on the test set, when the test
#    set is larger?
# 5. The Grad-CAM map of a "ship" prediction lights up the water, not the ship. What does that say
#    about the model, and what does it not say?
#
# <details><summary>Answers</summary>
#
# 1. Not without checking: a larger batch averages its gradient over more images and usually
#    tolerates a larger step (Goyal et al. 2017 scale it in proportion). Run the test again with the
#    new batch size.
# 2. Neither can be told from these numbers: ECE depends on the number of bins and on how they
#    are chosen (equal width or equal count), and on the test set. Compare ECEs computed the same
#    way on the same images, or compare the NLL.
# 3. Something other than the temperature: dividing the logits by one positive number keeps their
#    order, so no prediction can change. Look for a second change (a different checkpoint, other
#    test-time augmentation, images in another order).
# 4. Anything fitted on the test set, even one number, makes the test score optimistic and no
#    longer an honest estimate (notebook 06). The validation split was held out from training and is
#    meant for such choices.
# 5. That the score of "ship" rose with features at the water's position: the model may rely on
#    the background, a shortcut that fails on ships out of water. It does not say the model ignores
#    the ship entirely: a 4x4 map is coarse, and the ReLU hides evidence against the class.
#
# </details>
#
# ## What you learned
#
# - The **range test** turns a guess into a measurement in a few hundred steps; its rule of thumb
#   is a candidate, to be checked by a small sweep over seeds. It says nothing about the schedule,
#   the weight decay, the batch size or how long to train.
# - **Calibration** is a property apart from accuracy: the reliability diagram shows it, the ECE
#   (with its binning stated) and the NLL measure it, and **temperature scaling**, fitted on
#   validation, changes it without changing a single prediction.
# - **Label smoothing** changes how confident a network is, measured here on two runs that differ
#   only in it.
# - **Grad-CAM** combines a layer's activations with the gradient of a class score; at the last
#   stage of a CIFAR ResNet its map has 4x4 cells, enough to say *where*, not *what shape*.
