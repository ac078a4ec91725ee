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
# # 05 · Training with early stopping
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/05_training.ipynb)
#
# Notebook 04 built ResNet-18; its weights are still random. This notebook trains it. Training
# means choosing a loss to minimise, an optimizer that takes the steps and a schedule for the step
# size, then running the loop that goes over the data again and again. The validation set
# decides when to stop and which weights to keep. Along the way we meet the mistakes that show up
# again and again in training scripts, and see each one happen in a plot or a number.
#
# **Learning objectives.** After this notebook you can
# - explain cross-entropy and label smoothing, SGD with Nesterov momentum and weight decay versus
#   Adam, and the common learning-rate schedules, including *when* each scheduler must be stepped;
# - read and write the training loop (zero_grad, forward, loss, backward, step), and explain why
#   evaluation needs `model.eval()`;
# - stop training early on the *validation* set, and keep a best and a last checkpoint;
# - read learning curves: loss, accuracy, learning rate and the train-validation gap;
# - resume an interrupted run exactly, and recognise a diverged run and a checkpoint that does not
#   fit the model.
#
# **Course map:** previous: [04 · ResNet-18](04_resnet18.ipynb). Next:
# [06 · Evaluation, confusion & t-SNE](06_evaluation.ipynb), which evaluates the checkpoint this
# notebook saves.

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
import copy
import inspect
import math
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from torch import nn

from course_utils.checkpoints import ArchitectureMismatchError, load_checkpoint
from course_utils.config import VAL_SIZE, get_device, is_smoke, runs_dir, set_seed
from course_utils.data import (
    CIFAR10Dataset,
    Splits,
    build_loaders,
    cifar10_splits,
    compute_mean_std,
    eval_transform,
    make_loader,
    stratified_subset,
)
from course_utils.exercises import STOPPING_RUNS, check_should_stop, check_train_one_epoch
from course_utils.machine import measure_throughput, plan_steps
from course_utils.plotting import plot_history
from course_utils.run import setup_run
from course_utils.training import (
    HISTORY_COLUMNS,
    PRESETS,
    TIMING_COLUMNS,
    EarlyStopping,
    NonFiniteLossError,
    TrainConfig,
    build_model,
    build_optimizer,
    choose_threads,
    cpu_threads,
    evaluate,
    fit,
    learning_rates,
    model_from_checkpoint,
    smoke_config,
    train_one_epoch,
)

device = get_device()
print(f"Device: {device}; smoke mode: {is_smoke()}")

# %% [markdown]
# The data, as in notebook 02: 45,000 training and 5,000 validation images split off the official
# training set, and the 10,000 test images, which this notebook never looks at. The normalization
# statistics are computed from the training images (notebook 01) and later stored in every
# checkpoint, so that the model can be used on new images without this notebook.

# %%
splits = cifar10_splits(download=True)  # smoke mode: 1,000 / 200 / 500 images
mean, std = compute_mean_std(splits.train.images)  # exact, from the training images only
print({part: len(getattr(splits, part)) for part in ("train", "val", "test")})
print("mean", np.round(mean, 4), "std", np.round(std, 4))

# %% [markdown]
# ## 1. The loss: cross-entropy, and label smoothing
#
# The network outputs ten numbers per image, the **logits**. Softmax turns them into probabilities
# $p_1, \dots, p_{10}$ that sum to one, and **cross-entropy** is minus the log of the probability
# given to the true class, $-\log p_y$, averaged over the batch. It is 0 for a certain and correct
# prediction, $\log 10 \approx 2.30$ for a uniform guess, and large for a confident wrong answer.
# `nn.CrossEntropyLoss` takes the raw logits and does the softmax itself, in a numerically stable
# way: do not put a softmax layer at the end of the network.
#
# Cross-entropy is never quite satisfied: $-\log p_y$ keeps shrinking as $p_y \to 1$, so the
# network keeps pushing the true logit further above the others on images it already gets right.
# **Label smoothing** (Szegedy et al., 2016) trains towards a softened target instead: the true
# class gets $1 - \varepsilon + \varepsilon/K$ and every other class $\varepsilon/K$ (with $K = 10$
# classes and typically $\varepsilon = 0.1$). The loss becomes
#
# $$\text{loss} = (1 - \varepsilon)\,(-\log p_y)
#   + \varepsilon \cdot \tfrac{1}{K}\textstyle\sum_k (-\log p_k),$$
#
# which is smallest at $p_y = 0.91$, not at 1: the network is discouraged from becoming
# overconfident, a mild regularizer. What it bought here is measured in notebook 07: on 4,000
# training images (section 6) and, with ε = 0.2, in the `cpu` preset's screens (section 9). The
# `full` preset uses $\varepsilon = 0.1$, the `cpu` preset 0.2. One side effect: the smoothed
# training loss cannot go below the entropy of the smoothed target (about 0.50 for ε = 0.1), so
# for validation `fit` reports plain cross-entropy, comparable between runs with and without
# smoothing.
#
# First a check that the formulas above are what PyTorch computes:

# %%
torch.manual_seed(0)
logits = 3 * torch.randn(8, 10)  # 8 images, 10 classes
labels = torch.randint(0, 10, (8,))
log_probs = torch.log_softmax(logits, dim=1)  # (8, 10): log p_k for every image and class
eps = 0.1
plain = -log_probs[torch.arange(8), labels].mean()  # -log p_y, averaged over the batch
smoothed = (1 - eps) * plain + eps * (-log_probs.mean(dim=1)).mean()
print(f"cross-entropy {plain:.4f}; with label smoothing {smoothed:.4f}")

# Sanity check: the formulas agree with nn.CrossEntropyLoss.
assert torch.allclose(plain, nn.CrossEntropyLoss()(logits, labels))
assert torch.allclose(smoothed, nn.CrossEntropyLoss(label_smoothing=eps)(logits, labels))

# %% [markdown]
# And how the two losses treat one image as the network grows more confident. We raise the true
# class's logit $z$ while the other nine stay at 0, so that $p_y = e^z / (e^z + 9)$:

# %%
z = torch.linspace(-3, 12, 601)
curve_logits = torch.zeros(len(z), 10)  # (601, 10)
curve_logits[:, 0] = z  # the true class is class 0
target = torch.zeros(len(z), dtype=torch.int64)
p_true = torch.softmax(curve_logits, dim=1)[:, 0]
loss_plain = nn.CrossEntropyLoss(reduction="none")(curve_logits, target)
loss_smooth = nn.CrossEntropyLoss(reduction="none", label_smoothing=eps)(curve_logits, target)

best = loss_smooth.argmin()
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(p_true, loss_plain, label="cross-entropy")
ax.plot(p_true, loss_smooth, label=f"label smoothing, ε = {eps}")
ax.plot(p_true[best], loss_smooth[best], "o", color="tab:orange")
ax.annotate(f"minimum at p = {p_true[best]:.2f}", (p_true[best], loss_smooth[best]),
            xytext=(-150, 25), textcoords="offset points", arrowprops={"arrowstyle": "->"})
ax.set(xlabel="probability given to the true class", ylabel="loss", ylim=(0, 3))
ax.legend()
plt.show()

# %%
# Sanity check: the smoothed loss is smallest where p_y equals the smoothed target 1 - eps + eps/K,
# and its minimum is that target's entropy.
soft_target = torch.full((10,), eps / 10)
soft_target[0] += 1 - eps
entropy = -(soft_target * soft_target.log()).sum()
print(f"best p_y {p_true[best]:.3f}; lowest smoothed loss {loss_smooth[best]:.3f}; "
      f"entropy of the target {entropy:.3f}")
assert abs(p_true[best] - (1 - eps + eps / 10)) < 0.01
assert abs(loss_smooth[best] - entropy) < 1e-3

# %% [markdown]
# ## 2. The optimizer: SGD with Nesterov momentum, or Adam
#
# Each step moves every weight a little against its gradient. How:
#
# - **SGD with momentum** keeps a running direction $v \leftarrow \mu v + g$ (momentum
#   $\mu = 0.9$: about the last ten gradients) and steps along it, $w \leftarrow w - \eta\, v$.
#   The noise of single batches averages out, and progress along consistent directions speeds up.
#   **Nesterov** momentum evaluates the step as if the momentum had already been applied, a small
#   look-ahead that often makes it a little more stable.
# - **Weight decay** adds $\lambda w$ to every gradient, pulling weights towards zero: a
#   regularizer, and with BatchNorm it also keeps the effective step size from shrinking as the
#   weights grow. He et al. used $\lambda = 10^{-4}$, on CIFAR-10 and on ImageNet. The course's
#   default, $5 \times 10^{-4}$, is the value common in shorter CIFAR-10 schedules (kuangliu's
#   `pytorch-cifar` uses it, for example): a common choice there, not the paper's value.
# - **Adam** gives every weight its own step size from running averages of its gradient and of
#   the gradient's square. It needs little tuning (the task statement uses `lr=0.001` with no
#   schedule) and is the default for many models. For ResNets on CIFAR-10, SGD with momentum and
#   a good schedule usually reaches a somewhat higher test accuracy, which is why the original
#   paper and the course presets use it. (With Adam, `weight_decay` is folded into the adaptive
#   step and acts differently; `torch.optim.AdamW` decouples it, if you try Adam seriously.)
#
# `build_optimizer` reads these choices from a `TrainConfig`:

# %%
net = build_model(TrainConfig(width=8))
optimizers = {
    "SGD + Nesterov (course default)": build_optimizer(net, TrainConfig()),
    "Adam (the task statement's choice)": build_optimizer(
        net, TrainConfig(optimizer="adam", lr=1e-3)
    ),
}
pd.DataFrame({
    name: {k: v for k, v in opt.param_groups[0].items()
           if k in ("lr", "momentum", "nesterov", "weight_decay", "betas")}
    for name, opt in optimizers.items()
}).T

# %% [markdown]
# ## 3. Learning-rate schedules, and when to step them
#
# A large learning rate makes fast progress but cannot settle into a minimum; a small one settles
# but crawls. Schedules start large and end small:
#
# - **one-cycle** (Smith & Topin, 2019): warm up from a small lr to the peak over the first 25% of
#   the steps, then anneal along a cosine to almost zero. It counts **batches**: step it after
#   every optimizer step. The `full` preset uses it; it trains fast in a few epochs.
# - **linear**: a straight line up to the peak over the warm-up, then a straight line down to
#   nearly zero at the last step. Also per batch. For a fixed budget of steps, decaying linearly to
#   about zero is a robust choice (Li, Yumer & Ramanan, 2020). The `cpu` preset uses it, for a
#   second reason as well: its end can be moved while the run is under way (section 7).
# - **cosine**: from the initial lr to `min_lr` along half a cosine. It counts **epochs**.
# - **multistep**: multiply the lr by `gamma` (0.1) after the listed epochs ("milestones"), the
#   original ResNet recipe. Counts epochs.
# - **step**: multiply by `gamma` every `step_size` epochs. Counts epochs.
# - **cyclic** (Smith, 2017): straight up from lr/`div_factor` to lr and straight back down, every
#   `cycle_epochs` epochs, again and again. Counts batches.
# - **warm-up + cosine**: a straight warm-up from lr/`div_factor` over the first `warmup` fraction
#   of the steps (Goyal et al., 2017, warm up so that the first large steps do not throw the fresh
#   weights around), then half a cosine down to `min_lr`. Counts batches.
#
# A scheduler does not know what its steps mean: it counts calls to `scheduler.step()`. Step a
# per-epoch scheduler after every batch and it runs through its whole schedule hundreds of times
# too fast. `build_scheduler` therefore returns the scheduler *and* a flag, `per_batch`, saying
# when to step it, and `fit` obeys the flag.
#
# To see the schedules we replay a fake run, without any training: 30 epochs of 100 batches, and
# at every batch we record the learning rate the optimizer would use.

# %%
STEPS_PER_EPOCH = 100  # a real run at batch 128 has 351 batches per epoch; the shapes are the same


def lr_curve(cfg: TrainConfig) -> np.ndarray:
    """The lr used at each batch of a run with `cfg`'s schedule; nothing is trained.

    `learning_rates` steps a stand-in parameter through the run and steps the scheduler as
    `build_scheduler` says (per batch or per epoch; `schedule_every_batch=True` makes the
    classic bug on purpose).
    """
    return learning_rates(cfg, STEPS_PER_EPOCH)


fake_run = TrainConfig(epochs=30, lr=0.1)
schedules = {
    "one-cycle (per batch)": replace(fake_run, schedule="onecycle"),
    "linear (per batch)": replace(fake_run, schedule="linear", warmup=0.2, div_factor=5),
    "cosine (per epoch)": replace(fake_run, schedule="cosine"),
    "multistep at 15 and 25 (per epoch)": replace(
        fake_run, schedule="multistep", milestones=(15, 25)
    ),
    "step every 10 epochs (per epoch)": replace(fake_run, schedule="step", step_size=10),
    "cyclic, 10-epoch cycles (per batch)": replace(fake_run, schedule="cyclic", cycle_epochs=10),
    "warm-up + cosine (per batch)": replace(fake_run, schedule="warmup_cosine", warmup=0.1),
    "constant": replace(fake_run, schedule="none"),
}
epoch_axis = np.arange(fake_run.epochs * STEPS_PER_EPOCH) / STEPS_PER_EPOCH
fig, ax = plt.subplots(figsize=(9, 4.5))
for name, cfg_s in schedules.items():
    ax.plot(epoch_axis, lr_curve(cfg_s), label=name)
ax.set(xlabel="epoch", ylabel="learning rate", title="Eight schedules over the same 30-epoch run")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Which schedule trains the best network? Section 7 of
# [07 · The experiments lab](07_experiments_lab.ipynb) compares six of them on real training
# runs, over seeds.
#
# ### Two bugs that fail silently
#
# Both come from widely read tutorials, and neither raises an error; the lr curve shows them at a
# glance.
#
# 1. **Milestones beyond the end of the run.** A recipe written for 100 epochs uses
#    `MultiStepLR(milestones=[60, 80])`. Copied into a shorter run, the decays never happen, and
#    the whole run trains at the initial lr. (`build_scheduler` warns about it; PyTorch does not.)
# 2. **A per-epoch scheduler stepped per batch.** `StepLR(step_size=7, gamma=0.1)` is meant to
#    divide the lr by 10 every 7 *epochs*. Call `scheduler.step()` inside the batch loop and it
#    divides every 7 *batches*: after one epoch of 100 batches the lr has fallen by a factor of
#    $10^{14}$ and training has stopped moving. Section 7 of
#    [07 · The experiments lab](07_experiments_lab.ipynb) trains a network both ways and measures
#    what the slip costs.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    late_milestones = lr_curve(replace(fake_run, schedule="multistep", milestones=(60, 80)))
for warning in caught:
    print("build_scheduler warns:", warning.message)
good_milestones = lr_curve(replace(fake_run, schedule="multistep", milestones=(15, 25)))

step7 = replace(fake_run, schedule="step", step_size=7)
step_per_epoch = lr_curve(step7)
step_per_batch = lr_curve(replace(step7, schedule_every_batch=True))  # the bug

FLOOR = 1e-20  # a log scale cannot show the zeros the bug underflows to
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
left.plot(epoch_axis, good_milestones, label="milestones 15, 25")
left.plot(epoch_axis, late_milestones, "--", label="milestones 60, 80 (never reached)")
left.set(xlabel="epoch", ylabel="learning rate", title="MultiStepLR in a 30-epoch run")
left.legend(fontsize=8)
right.semilogy(epoch_axis, np.maximum(step_per_epoch, FLOOR), label="stepped once per epoch")
right.semilogy(epoch_axis, np.maximum(step_per_batch, FLOOR), "--",
               label="stepped every batch (bug)")
right.set(xlabel="epoch", ylabel="learning rate (log scale)", ylim=(FLOOR / 10, 1),
          title="StepLR(step_size=7, gamma=0.1)")
right.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
# Sanity check: late milestones leave the lr constant (and are warned about); stepping StepLR
# per batch reaches after 7 batches the lr that should come after 7 epochs, and then vanishes.
assert (late_milestones == fake_run.lr).all()
assert any("never decays" in str(w.message) for w in caught)
assert math.isclose(step_per_batch[7], 0.01)
assert math.isclose(step_per_epoch[7 * STEPS_PER_EPOCH], 0.01)
assert step_per_batch[STEPS_PER_EPOCH] < 1e-14 and step_per_epoch[STEPS_PER_EPOCH] == fake_run.lr

# %% [markdown]
# ## 4. The training loop
#
# Here is the course's loop, `train_one_epoch`, exactly as it is in `course_utils/training.py`.
# Read it top to bottom; the five lines that do the learning are `zero_grad`, the forward pass,
# the loss, `backward` and `step`.

# %%
display(Markdown(f"```python\n{inspect.getsource(train_one_epoch)}\n```"))

# %% [markdown]
# Things to notice:
#
# - `model.train()` first: BatchNorm normalizes with the statistics of the current batch and
#   updates its running averages (section 9 shows why that matters).
# - `optimizer.zero_grad()` before each backward pass: PyTorch *adds* new gradients to old ones,
#   so without it every step would use the sum of all gradients so far.
# - The loss is the mean over the batch; to get the mean over the epoch it is weighted by the batch
#   size, because the last batch may be smaller. Dividing a sum of batch means by the number of
#   batches (as the task statement's loop does) is slightly off.
# - Nothing is printed per batch. Printing the loss every batch (as some tutorials do) floods the
#   output with thousands of lines, and each `.item()` makes the CPU wait for the GPU. The sums
#   stay on the device and are read once per epoch; a progress bar (`fit` wraps the loader in one)
#   shows that the loop is alive.
# - `place` says where and how to compute: the device, the memory layout, and whether to use mixed
#   precision. `fit` decides it once for the whole run (`placement_for`) and passes it in; given a
#   plain device, the loop decides it here, in float32.
# - The optional parts (mixed precision with a gradient scaler, a per-batch scheduler, the check
#   for a non-finite loss every 50 batches) are covered later in this notebook or in the docstring.
#
# And `evaluate`, which measures loss and accuracy on the validation set:

# %%
display(Markdown(f"```python\n{inspect.getsource(evaluate)}\n```"))

# %% [markdown]
# `model.eval()` switches BatchNorm to its running statistics (and Dropout off, for models that
# have it), and `torch.inference_mode()` stops PyTorch from recording the operations for a
# backward pass that will never come, which saves memory and time. The task statement's
# `evaluate()` uses `torch.no_grad()` but never calls `model.eval()`; section 9 measures what that
# costs.
#
# ### Exercise 1: write the epoch loop
#
# Write `my_train_one_epoch(model, loader, criterion, optimizer, device)`: one pass over `loader`
# that trains `model` and returns `(mean loss per image, accuracy)`, both plain floats. No mixed
# precision, no scheduler, no progress bar: just the loop.
#
# The check trains two identical copies of a small network (a width-4 ResNet-18) on the same three
# fixed batches of real images, one with your function and one with `train_one_epoch`, and
# compares the losses, accuracies and the resulting weights and BatchNorm statistics. The batches
# have 16, 16 and 8 images, so a loss averaged per batch instead of per image shows up, and the
# network starts in evaluation mode, so a missing `model.train()` shows up too. (While your
# function runs, `train_one_epoch` is switched off: calling it is not an answer.)

# %%
some_40 = splits.train.subset(np.random.default_rng(0).choice(len(splits.train), 40, replace=False))
loader_40 = make_loader(CIFAR10Dataset(some_40, eval_transform(mean, std)), batch_size=40,
                        num_workers=0)
images_40, labels_40 = next(iter(loader_40))  # 40 random training images, not augmented
fixed_batches = [(images_40[a:b], labels_40[a:b]) for a, b in ((0, 16), (16, 32), (32, 40))]


# %%
def my_train_one_epoch(model, loader, criterion, optimizer, device):
    """One training pass over `loader`; returns (mean loss per image, accuracy in [0, 1])."""
    # Hint: start with model.train(); per batch: move to device, zero_grad, forward, loss,
    # backward, step; add up loss * batch size, correct predictions and images seen.
    ### BEGIN SOLUTION
    model.train()  # BatchNorm: normalize with batch statistics and update the running ones
    total_loss, total_correct, total_seen = 0.0, 0, 0
    for batch_images, batch_labels in loader:
        batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
        optimizer.zero_grad()  # clear the gradients of the previous step
        scores = model(batch_images)  # (B, 10) logits
        batch_loss = criterion(scores, batch_labels)  # the mean over this batch
        batch_loss.backward()  # gradients of the batch loss with respect to every weight
        optimizer.step()  # move the weights against their gradients
        total_loss += batch_loss.item() * len(batch_labels)  # weighted: batches may differ in size
        total_correct += (scores.argmax(dim=1) == batch_labels).sum().item()
        total_seen += len(batch_labels)
    return total_loss / total_seen, total_correct / total_seen
    ### END SOLUTION


# %%
exercise_1 = check_train_one_epoch(my_train_one_epoch, fixed_batches)
print(f"mean loss {exercise_1[0]:.4f}, accuracy {exercise_1[1]:.3f} after one epoch of 40 images")

# %% [markdown]
# ## 5. Early stopping, on the validation set
#
# After every epoch we measure the validation accuracy. Once it stops improving, more epochs mostly
# fit the training images more closely without helping on new ones (or, with a constant learning
# rate, just waste time). **Early stopping** ends the run when the validation metric has not
# improved for `patience` epochs in a row; the **best checkpoint** keeps the weights of the best
# epoch, so stopping a few epochs late costs nothing.
#
# What counts as an improvement: beating the best value so far by more than `min_delta`. With
# 5,000 validation images, one more correct image is +0.02 percentage points; a small `min_delta`
# such as 0.001 (0.1 points, 5 images) keeps changes of a handful of images from resetting the
# count. Compare with the **best** value, not with the previous epoch: otherwise a slow creep of
# small gains is never recognised as progress, while a dip followed by a recovery to the old level
# wrongly is.
#
# Here `EarlyStopping` watches a scripted sequence with `patience=3` and `min_delta=0.005`:

# %%
scripted = [0.42, 0.55, 0.61, 0.60, 0.635, 0.63, 0.634, 0.62, 0.643]
stopper = EarlyStopping(patience=3, min_delta=0.005, mode="max")
rows = []
for epoch, value in enumerate(scripted, start=1):
    improved = stopper.step(value)
    rows.append({"epoch": epoch, "val_acc": value, "improved": improved,
                 "best so far": stopper.best, "epochs without improvement": stopper.wait,
                 "stop": stopper.should_stop})
    if stopper.should_stop:
        break
pd.DataFrame(rows).set_index("epoch")

# %%
# Sanity check: the best epoch is 5 (0.634 at epoch 7 is not 0.005 better than 0.635), and three
# epochs without improvement (6, 7, 8) stop the run after epoch 8.
assert stopper.best_epoch == 5 and stopper.best == 0.635
assert stopper.should_stop and stopper.epochs == 8

# %% [markdown]
# The 0.643 of epoch 9 is never seen: that is the price of patience, and why patience should be
# generous when each epoch is cheap. The task statement's loop stops when `counter > patience`,
# one epoch later than its `patience` says; and it watches the *test* accuracy, the subject of
# section 6.
#
# ### Exercise 2: the stopping rule
#
# Write `my_should_stop(history, patience, min_delta=0.0)`: given the validation accuracies of the
# epochs so far (higher is better), return `True` if training should stop after the last one. Walk
# through the history as `EarlyStopping` does: the first value is the best so far; a later value
# is an improvement if it beats the best so far by more than `min_delta`, and only then becomes the
# new best; stop once the last `patience` epochs in a row were not improvements. (The best moves
# only on improvements, so a few small gains, each under `min_delta`, can together beat it.) The
# check compares your decisions with `EarlyStopping`'s after every epoch of the scripted runs
# `STOPPING_RUNS`, each of which catches a common slip.

# %%
def my_should_stop(history: list[float], patience: int, min_delta: float = 0.0) -> bool:
    """Whether to stop after the last epoch of `history`, a list of validation accuracies."""
    # Hint: walk through the history keeping the best value and a count of epochs since it.
    ### BEGIN SOLUTION
    best_value, since_best = None, 0
    for value in history:
        if best_value is None or value > best_value + min_delta:  # a real improvement
            best_value, since_best = value, 0
        else:
            since_best += 1
    return since_best >= patience
    ### END SOLUTION


# %%
decisions = check_should_stop(my_should_stop)  # try it: my_should_stop([0.5, 0.62, 0.61], 2)

# %%
rows = math.ceil(len(STOPPING_RUNS) / 4)  # every scripted run gets a panel
fig, axes = plt.subplots(rows, 4, figsize=(15, 3 * rows), sharey=True, squeeze=False)
for ax in axes.flat[len(STOPPING_RUNS):]:
    ax.set_visible(False)  # an empty panel
for ax, (name, (values, patience, min_delta)) in zip(axes.flat, STOPPING_RUNS.items()):
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, values, "o-")
    if any(decisions[name]):
        stop = decisions[name].index(True) + 1
        ax.axvline(stop, color="tab:red", ls="--", label=f"stop after epoch {stop}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set(title=f"{name}\npatience {patience}, min_delta {min_delta}", xlabel="epoch")
    ax.title.set_fontsize(9)
for row in axes:
    row[0].set_ylabel("validation accuracy")
plt.tight_layout()
plt.show()

# %% [markdown]
# In "slow creep", no single epoch gains 0.01, yet epoch 4 is more than 0.01 above the best
# (epoch 1) and resets the count; a rule that compared with the previous epoch would have stopped
# there.
#
# ## 6. Why the validation set, and never the test set
#
# The task statement's `train()`, like many tutorials, keeps the checkpoint with the best
# *test* accuracy, and stops when the *test* accuracy stops improving. Notebook 02's simulation
# showed what that does: among 200 classifiers that guess at random, the one with the best test
# score looked clearly better than chance on that test set, and was exactly at chance on fresh
# images. Every epoch of a training run is such a candidate; choosing among them by test accuracy
# makes the reported test accuracy optimistic, and the test set stops being a fair judge.
#
# So the roles are:
# - **training set** (45,000 images): the gradients come from it;
# - **validation set** (5,000 images held out of the training set): early stopping, the best
#   checkpoint, and any hyperparameter you tune look at it;
# - **test set** (10,000 images): looked at once, at the end, with the chosen weights
#   (notebook 06).
#
# `fit` takes a training and a validation loader and nothing else. `build_loaders`, the function the
# command line uses, also returns a test loader; here it is discarded on purpose.
#
# ## 7. A training run
#
# The recipe depends on the machine. The course keeps its recipes in one place, `PRESETS`:
# - a CUDA GPU gets the **`full`** preset: ResNet-18 at full width (64), a large batch, one-cycle,
#   label smoothing and mixed precision (its accuracy has not been measured in this repository
#   yet: `benchmarks/README.md` says where each choice comes from);
# - a CPU gets the **`cpu`** preset: the same network at width 16 (about 700,000 parameters
#   instead of 11 million), trained for as many steps as fit in a time budget on the machine that
#   runs it (`python -m course_utils train --preset cpu` gives it 15 minutes; this notebook gives it
#   `CPU_BUDGET_MINUTES`). Its recipe was chosen by measurement, one lever at a time, in 5-minute
#   runs on the same machine as a fast reference recipe (section 9 of notebook 07 has the table).
#   Label smoothing 0.2 (section 1 above) with flip test-time augmentation (notebook 07, section
#   5), then the `linear` schedule (section 3), each raised its accuracy there; the other levers
#   tried did not, and were left out. Later, six test views instead of two (`tta_shift=1`: each
#   test image also shifted by one pixel up-left and one down-right, each with its mirror) added
#   about 0.3 points on the same trained weights (notebook 07, section 9). And it holds out only
#   1,000 images for validation (`val_size`), not notebook 02's 5,000: with the `linear`
#   schedule the last epoch was the best one in every run measured, so validation only has to
#   confirm it, and the other 4,000 images train (notebook 07, section 9). Last, **progressive
#   resizing** (`small_crops=0.5`): the epochs in the first half of the steps train on random
#   24x24 crops of the images, 56% of their pixels, so those steps cost less and more epochs
#   fit (`benchmarks/README.md` has the measured speeds); the later epochs, and validation and
#   test, see whole 32x32 images (the network's global average pooling takes any size). At about
#   equal compute it gained a point (notebook 07, section 9). And two details of the
#   augmentation are meant for short training (notebook 02, section 6): shifts of at most 2
#   pixels (`crop_padding=2`) and **alternating flips** (`alternate_flip=True`). At a fixed number
#   of epochs they gained 0.55 points (one seed) and 0.40 (two seeds); in 15-minute runs their
#   gain was smaller than the spread between seeds (notebook 07, section 9, rounds 6 and 7);
# - smoke mode shrinks the `cpu` preset to a couple of epochs on 1,000 images, to check that
#   everything runs.

# %%
pd.DataFrame({name: recipe.to_dict() for name, recipe in PRESETS.items()}).loc[
    ["width", "epochs", "batch_size", "optimizer", "lr", "schedule", "label_smoothing", "tta",
     "tta_shift", "weight_decay", "val_size", "small_crops", "crop_padding", "alternate_flip",
     "amp"]
]

# %% [markdown]
# We add early stopping (`patience=5`). With one-cycle or linear decay, whose lr only gets small
# near the end, the validation accuracy tends to improve until the last epochs, so it rarely
# triggers; it is a safety net that pays off with constant or step schedules and long runs.

# %%
CPU_BUDGET_MINUTES = 10  # full mode without a GPU: train as many of the preset's epochs as fit
run_dir = runs_dir() / "notebook05"  # notebook 06 looks for the best checkpoint here

if is_smoke():
    preset, cfg = "cpu, shrunk to smoke sizes", smoke_config(PRESETS["cpu"])
elif device.type == "cuda":
    preset, cfg = "full", PRESETS["full"]
else:
    preset, cfg = "cpu", PRESETS["cpu"]
# The budget is planned below, where it applies. This notebook keeps the split of notebook 02
# (5,000 validation images), whose early stopping it shows; the preset itself holds out 1,000.
cfg = replace(cfg, patience=5, minutes=None, val_size=VAL_SIZE)
assert cfg.val_size == 5_000 and cfg.seed == 0 and cfg.smoke == is_smoke()

train_loader, val_loader, _ = build_loaders(splits, cfg, mean, std, device)  # _: test, unused
print(f"preset: {preset}; {len(train_loader)} training batches of {cfg.batch_size} per epoch, "
      f"{len(val_loader)} validation batches")
pd.Series(cfg.to_dict(), name="value").to_frame()

# %% [markdown]
# The command line and the experiments make these steps (seed, splits, statistics, loaders,
# model) with one call, `course_utils.run.setup_run(cfg, device)`. On the same configuration it
# gives the same statistics and the same first batch as the steps above:

# %%
setup = setup_run(cfg, device)
assert np.allclose(setup.mean, mean) and np.allclose(setup.std, std)
ours, our_labels = next(iter(train_loader))
theirs, their_labels = next(iter(setup.train_loader))
assert torch.equal(ours, theirs) and torch.equal(our_labels, their_labels)
print(f"setup_run: {len(setup.train_loader)} training batches, the same first batch of "
      f"{len(ours)} images; its model: {type(setup.model).__name__}")
del setup  # this notebook goes on with its own pieces

# %% [markdown]
# **How many CPU threads?** On a CPU, PyTorch runs each operation on one thread per core, and the
# threads wait for each other at the end of it. When another program keeps one of those cores busy
# (a browser, a second notebook), the thread there gets only part of its time, and every operation
# waits for it: fewer threads than cores can then be faster (on 2 cores beside one busy program,
# one thread trained about twice as fast as two: `benchmarks/README.md`). So `fit`, and
# `python -m course_utils train`, first time a few training steps at a few thread counts, each
# count twice and in turn, so that a moment's stall spoils one timing and not the choice, and keep
# the fastest (`choose_threads`), unless `cfg.threads` names a count; the count goes into the
# checkpoints, so a resumed run computes with the same one, and `fit` warns if an epoch later
# trains 3 times slower than the fastest one. Here, once explicitly (on a GPU there is nothing to
# choose):

# %%
cfg = choose_threads(cfg, build_model(cfg), device)
print(f"CPU threads for this run: {cfg.threads}" if device.type == "cpu" else "GPU: no threads to choose")

# %% [markdown]
# Before committing to a run, a measurement, the same one `python -m course_utils train --minutes M`
# makes: `measure_throughput` times a few real training and validation batches on a throwaway copy
# of the network. Without a GPU, `plan_steps` then picks the most optimizer steps that fit in the
# budget (whole epochs, then as much of one more epoch as fits), and the schedule is built for
# exactly those. A budget, not a number of epochs, is what keeps a run to its time on laptops
# that differ twofold in speed.
#
# A few batches cannot predict a whole run: a CPU can slow down once it is warm, another program
# can start. So `fit` also takes a **deadline** and checks its own pace every 10 batches (the
# `Pacer`): when the planned steps would end late, it runs fewer, and a `linear` schedule is
# shortened with them, so the learning rate still reaches its end; when they would end early, a
# `linear` run gets the steps that now fit. One-cycle's length is fixed once it is built: cut
# short, it never reaches its small learning rates. That is one reason the `cpu` preset uses
# `linear`.

# %%
with cpu_threads(cfg.threads):  # 0 on a GPU: as it is
    speed = measure_throughput(build_model(cfg), train_loader, val_loader, cfg, device)
epoch_seconds = len(train_loader) * speed.train + len(val_loader) * speed.eval
print(f"about {cfg.batch_size / speed.train:,.0f} training images/s here: "
      f"{epoch_seconds / 60:.1f} min per epoch with validation")
deadline = None  # fit's deadline: only for a budgeted run
if device.type != "cuda" and not is_smoke():
    steps = max(len(train_loader), plan_steps(CPU_BUDGET_MINUTES * 60, 0, speed,
                                              len(train_loader), len(val_loader), test_batches=0))
    deadline = time.perf_counter() + CPU_BUDGET_MINUTES * 60
    print(f"{steps} steps ({steps / len(train_loader):.2f} epochs) fit in {CPU_BUDGET_MINUTES} "
          f"minutes: the schedule is built for {steps}.")
    cfg = replace(cfg, steps=steps, epochs=math.ceil(steps / len(train_loader)),
                  minutes=CPU_BUDGET_MINUTES)

# %% [markdown]
# Now the run. `fit` trains for `cfg.epochs` epochs (or `cfg.steps` steps, the last epoch then
# cut short) and after each one: steps a per-epoch schedule, evaluates on the validation set,
# writes a row of the history, saves `best.pt` when the validation accuracy improved and `last.pt`
# always, and asks the early stopper whether to go on.
#
# **To skip the wait:** the course ships a trained model, the best checkpoint of a whole `cpu`
# preset run, in `checkpoints/cpu/` (with its `metrics.json`, `history.csv` and the `command` that
# trained it). Notebook 06 evaluates it when it finds no run of yours, and
# `course_utils.checkpoints.load_pretrained("cpu")` loads it anywhere, after checking its sha256. The
# rest of this notebook inspects its own run, so it trains one anyway.

# %%
set_seed(cfg.seed)
model = build_model(cfg, num_classes=len(splits.train.classes))
result = fit(model, train_loader, val_loader, cfg, device, out_dir=run_dir,
             classes=splits.train.classes, mean=mean, std=std, deadline=deadline)
print(f"{result.epochs_run} epochs{' (stopped early)' if result.stopped_early else ''}; "
      f"best: epoch {result.best_epoch}, validation accuracy {result.best_score:.2%}")
result.history.round(4)

# %% [markdown]
# ## 8. Learning curves
#
# Four panels, one row per epoch of the history: the losses, the accuracies, the learning rate
# at the start of each epoch, and the **generalization gap**, training minus validation accuracy.
# The dashed line marks the best epoch.

# %%
fig = plot_history(result.history, result.best_epoch, save=run_dir / "history.png")

# %% [markdown]
# How to read them:
# - **Both losses falling**: still learning; more epochs (or a longer schedule) would help. A short
#   CPU run usually ends here.
# - **Validation loss rising while training loss keeps falling**, and the gap panel growing:
#   overfitting. The best checkpoint keeps the weights from before it set in.
# - **Validation accuracy above training accuracy** (a negative gap) is normal early on: training
#   accuracy is measured on augmented images, while the weights were still changing during the
#   epoch, and validation accuracy on clean images with the weights at the end of the epoch.
# - **The training loss can sit above the validation loss** with label smoothing: the training
#   loss includes the smoothing term, which cannot go below about 0.50 for ε = 0.1 and 0.87 for the
#   `cpu` preset's 0.2 (the entropy of the smoothed target); the validation loss is plain
#   cross-entropy.
# - With a schedule that decays to nearly zero (one-cycle, linear) the big gains come at the end,
#   when the lr becomes small.
#
# ## 9. Why `evaluate()` calls `model.eval()`: a measurement
#
# In training mode, BatchNorm normalizes each batch with that batch's own mean and variance, and
# updates its running averages. `torch.no_grad()` changes none of that. So "evaluating" in
# training mode, as the task statement's `evaluate()` does right after training, has two
# consequences:
# - the prediction for an image depends on which other images share its batch (and on the batch
#   size);
# - the evaluation changes the model: the running statistics drift towards the validation data.
#
# We evaluate the trained network both ways, at two batch sizes, each time on a fresh copy.
# (Notebook 07, section 3, measures the same mistake on whole `cpu` preset runs, over seeds, with
# batches of 1, 16 and 1,000 test images: [07 · The experiments lab](07_experiments_lab.ipynb).)

# %%
def evaluate_without_eval_mode(net: nn.Module, loader) -> float:
    """The mistake: no model.eval(), only torch.no_grad(). Returns the accuracy."""
    hits, seen = 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            hits += (net(x).argmax(dim=1) == y).sum().item()
            seen += len(y)
    return hits / seen


def running_stats(net: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm running mean and variance."""
    return {k: v.detach().clone() for k, v in net.state_dict().items() if "running_" in k}


# Up to 100 validation images per class, a stratified subset: the first images of the split need
# not hold every class equally often.
demo_val = splits.val.subset(stratified_subset(splits.val.labels, min(100, len(splits.val) // 10)))
measurements = []
for batch_size in (200, 8):
    loader = make_loader(CIFAR10Dataset(demo_val, eval_transform(mean, std)), batch_size=batch_size,
                         num_workers=0)
    for method in ("evaluate()", "no model.eval()"):
        net = copy.deepcopy(model).train()  # as the model is right after a training epoch
        before = running_stats(net)
        if method == "evaluate()":
            accuracy = evaluate(net, loader, device).accuracy
        else:
            accuracy = evaluate_without_eval_mode(net, loader)
        after = running_stats(net)
        measurements.append({
            "method": method, "batch size": batch_size, "accuracy": accuracy,
            "BatchNorm statistics changed": any(not torch.equal(before[k], after[k])
                                                for k in before),
        })
measurements = pd.DataFrame(measurements).set_index(["method", "batch size"]).sort_index()
measurements

# %%
# Sanity check: evaluate() leaves BatchNorm alone and does not depend on the batch size (up to
# floating-point rounding: at most one image may flip); the mistaken version changes the model.
proper = measurements.xs("evaluate()")
assert not proper["BatchNorm statistics changed"].any()
assert abs(proper.loc[200, "accuracy"] - proper.loc[8, "accuracy"]) <= 1 / len(demo_val)
assert measurements.xs("no model.eval()")["BatchNorm statistics changed"].all()

# %% [markdown]
# The mistaken numbers depend on the batch size, and on a trained network they are usually lower
# (by a lot at small batch sizes, where each batch's statistics are noisy). Worse, the copy it ran
# on now has different running statistics: evaluating it "properly" afterwards would give yet
# another number.
#
# ## 10. Best and last checkpoints
#
# `fit` keeps two files, for two different jobs:
# - **`best.pt`**: the weights of the epoch with the best validation accuracy, and what is needed
#   to use them: the configuration, the architecture, the class names and the normalization
#   statistics. This is the model you evaluate and ship.
# - **`last.pt`**: the complete state after the latest epoch: weights, optimizer (its momentum
#   buffers), scheduler, early stopper, history, the state of every random generator. This is what
#   you resume from.
#
# Both are written atomically (to a temporary file, then renamed), so a crash in the middle of
# saving never leaves a broken checkpoint behind.

# %%
best = load_checkpoint(result.best_checkpoint)
last = load_checkpoint(result.last_checkpoint)
weights_mb = sum(v.numel() * v.element_size() for v in best["model"].values()) / 1e6
for name, state, path in (("best.pt", best, result.best_checkpoint),
                          ("last.pt", last, result.last_checkpoint)):
    print(f"{name}: epoch {state['epoch']}, {path.stat().st_size / 1e6:.2f} MB\n"
          f"    keys: {', '.join(state)}")
print(f"the weights alone: {weights_mb:.2f} MB; last.pt adds the optimizer's momentum buffer "
      "(one value per weight) and the rest of the training state")

# Sanity check: the best checkpoint is the epoch with the highest validation accuracy (the first
# such epoch, since a tie is no improvement), and only last.pt carries what resuming needs.
history = result.history
assert best["epoch"] == result.best_epoch == int(history["val_acc"].to_numpy().argmax()) + 1
assert best["score"] == history["val_acc"].max()
assert last["epoch"] == result.epochs_run
assert "optimizer" in last and "optimizer" not in best
assert result.last_checkpoint.stat().st_size > result.best_checkpoint.stat().st_size

# %% [markdown]
# The file really holds that epoch's weights: rebuilt from its own configuration
# (`model_from_checkpoint` builds the network the file describes, then loads its weights) and
# evaluated on the validation set, it scores what the history says.

# %%
rebuilt, _ = model_from_checkpoint(result.best_checkpoint)
rechecked = evaluate(rebuilt, val_loader, device, channels_last=cfg.channels_last, amp=cfg.amp,
                     tta=cfg.tta)
recorded = history.loc[history["epoch"] == best["epoch"], "val_acc"].item()
print(f"best.pt on the validation set: {rechecked.accuracy:.2%} (history: {recorded:.2%})")
assert abs(rechecked.accuracy - recorded) <= 2 / len(splits.val)  # equal, up to GPU float rounding

# %% [markdown]
# ## 11. Resuming an interrupted run, exactly
#
# Colab sessions end, laptops sleep, jobs get preempted. `fit(..., resume="last.pt")` continues
# where the run stopped. Because `last.pt` holds the complete state, including the random
# generators that drive augmentation, and the loader reseeds its shuffling each epoch, the
# continued run is not just similar to an uninterrupted one: it is identical.
#
# We check that on a small run (a width-8 network, 200 training and 100 validation images, 3
# epochs, on the CPU, where the arithmetic is exactly repeatable): once in one go, and once stopped
# after epoch 2 and resumed, from a different random state, in the role of a new session. (In 12
# steps the network learns next to nothing; what matters is that the two runs agree to the last
# digit.) Both runs use one CPU thread (`threads=1`): with another number of threads, PyTorch adds
# the same numbers in another order, and the last digits differ. That is why a run saves the count
# it chose (section 7) and a resumed run uses it again.

# %%
demo_splits = Splits(splits.train.subset(stratified_subset(splits.train.labels, 20)),  # 200
                     splits.val.subset(stratified_subset(splits.val.labels, 10)),  # 100
                     splits.test)  # (the test part is not used)
demo_cfg = TrainConfig(width=8, epochs=3, batch_size=50, eval_batch_size=100, lr=0.05,
                       label_smoothing=0.1, patience=None, num_workers=0, smoke=True, threads=1)
demo_dir = Path(tempfile.mkdtemp(prefix="notebook05-"))
cpu = torch.device("cpu")


def demo_fit(run_cfg: TrainConfig, folder: str, **kwargs):
    """fit() on the small demo data, on the CPU, into demo_dir / folder."""
    train_batches, val_batches, _ = build_loaders(demo_splits, run_cfg, mean, std, cpu)
    return fit(build_model(run_cfg), train_batches, val_batches, run_cfg, cpu,
               out_dir=demo_dir / folder, mean=mean, std=std, progress=False, **kwargs)


set_seed(0)
whole = demo_fit(demo_cfg, "uninterrupted")  # epochs 1, 2, 3
set_seed(0)
first_part = demo_fit(demo_cfg, "interrupted", stop_after_epoch=2)  # epochs 1, 2: the session ends
set_seed(1234)  # a new session: other random state and other initial weights, replaced on resume
resumed = demo_fit(demo_cfg, "interrupted", resume=first_part.last_checkpoint)  # epoch 3
print(f"first session: {first_part.epochs_run} epochs; after resuming: {resumed.epochs_run} epochs")

same = [c for c in HISTORY_COLUMNS if c not in TIMING_COLUMNS]  # timings differ, nothing else may
pd.concat({"uninterrupted": whole.history[same], "stopped and resumed": resumed.history[same]},
          axis=1)

# %%
# Sanity check: identical histories (except the timing columns) and identical final weights.
assert resumed.epochs_run == whole.epochs_run == demo_cfg.epochs
assert whole.history[same].equals(resumed.history[same])
final_whole = load_checkpoint(whole.last_checkpoint)["model"]
final_resumed = load_checkpoint(resumed.last_checkpoint)["model"]
assert all(torch.equal(final_whole[k], final_resumed[k]) for k in final_whole)

# %% [markdown]
# A resumed run must also keep its configuration: resuming with, say, another learning rate is
# refused with an error that lists what changed, because the result would be neither the old run
# nor a new one.
#
# ## 12. When training diverges: the non-finite loss guard
#
# With a learning rate far too large, weights grow until the loss becomes `inf` or `nan`, and from
# then on every number is `nan`. A single bad input does the same: one `nan` pixel (from a corrupt
# image, or a division by zero in preprocessing) makes the first convolution's output `nan` there,
# and BatchNorm, which averages over the batch, spreads it to every image. A loop that does not
# check keeps going for hours and overwrites good checkpoints with garbage. `train_one_epoch`
# checks the training loss every 50 batches and at the end of the epoch, and `fit` checks the
# validation loss after every epoch. Either way the run stops with a `NonFiniteLossError` that says
# what to try, and the checkpoints of the last good epoch stay untouched.
#
# To make a run fail in its second epoch on purpose, we wrap its training loader so that, from the
# second epoch on, every batch carries one `nan` pixel. (The error's advice is about learning
# rates, the usual cause; here the cure would be to find the bad image.)

# %%
class NaNFromSecondEpoch:
    """A training loader whose batches each get one NaN pixel from its second pass on."""

    def __init__(self, loader) -> None:
        self.loader, self.passes = loader, 0
        self.generator = getattr(loader, "generator", None)  # fit reseeds it every epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for images, labels in self.loader:
            if self.passes >= 2:
                images = images.clone()
                images[0, 0, 0, 0] = float("nan")  # one pixel of the first image
            yield images, labels


set_seed(0)
train_batches, val_batches, _ = build_loaders(demo_splits, demo_cfg, mean, std, cpu)
try:
    fit(build_model(demo_cfg), NaNFromSecondEpoch(train_batches), val_batches, demo_cfg, cpu,
        out_dir=demo_dir / "diverged", mean=mean, std=std, progress=False)
    raise AssertionError("this run was supposed to stop with a non-finite loss")
except NonFiniteLossError as err:
    print(f"{type(err).__name__}: {err}")

# %%
survivor = load_checkpoint(demo_dir / "diverged" / "last.pt")
print(f"last.pt still loads: epoch {survivor['epoch']}, "
      f"validation accuracy {survivor['history']['val_acc'][-1]:.2%}")
# Sanity check: the last good checkpoint is epoch 1, with finite weights.
assert survivor["epoch"] == 1
assert all(torch.isfinite(v).all() for v in survivor["model"].values() if v.is_floating_point())

# %% [markdown]
# ## 13. A checkpoint in the wrong network
#
# A checkpoint holds weights for one particular architecture. Load it into another (a different
# width, depth or stem) and PyTorch's own error is a long list of mismatched tensor names and
# shapes. `load_checkpoint` compares the architecture stored in the file with the model first and
# says what is wrong:

# %%
for label, wrong_cfg in {"twice as wide": replace(cfg, width=2 * cfg.width),
                         "ResNet-34": replace(cfg, depth=34)}.items():
    try:
        load_checkpoint(result.best_checkpoint, build_model(wrong_cfg))
        raise AssertionError("loading into the wrong architecture should fail")
    except ArchitectureMismatchError as err:
        print(f"{label}: {err}\n")

# %% [markdown]
# The fix is the one used in section 10: build the network the checkpoint describes,
# `build_model(TrainConfig.from_dict(state["config"]))`, then load; `model_from_checkpoint(path)`
# does both. Notebook 06 takes the two steps apart.
#
# The demonstrations' files were written to a temporary folder; the real run is in `run_dir`:

# %%
print(run_dir)
sorted(p.name for p in run_dir.iterdir())

# %% [markdown]
# ## 14. The same run on several GPUs
#
# With several GPUs, PyTorch's `torchrun` starts the run command once per GPU:
# `torchrun --nproc_per_node=4 -m course_utils train --preset full`. Each process holds a copy of
# the model and trains on its share of every batch (`--batch-size` is the whole batch; the share
# is a `Shard` of the loader, in `course_utils/data.py`);
# `DistributedDataParallel` averages the gradients during `backward()`, so every copy takes the
# same step and the loop of section 4 stays as it is. Process 0 alone writes the checkpoints, in
# the format of section 10. The README's "Several GPUs" section has the commands, and
# `course_utils/distributed.py` the details.

# %% [markdown]
# ## Check your understanding
#
# 1. You use `CosineAnnealingLR(optimizer, T_max=30)` for a 30-epoch run and call
#    `scheduler.step()` inside the batch loop (351 batches per epoch). What does the learning rate
#    do?
# 2. A training script reports a validation accuracy that changes when you change the evaluation
#    batch size. What is the most likely bug, and what else does that bug do to the model?
# 3. Why does `last.pt` take about twice the space of `best.pt` for SGD with momentum? What
#    would you lose by resuming from `best.pt`?
# 4. Early stopping with `patience=5` ends a run at epoch 17. Which epoch's weights does `best.pt`
#    hold, and which accuracy do you report in the paper?
#
# <details><summary>Answers</summary>
#
# 1. Cosine annealing has a period of `2 * T_max` steps: stepped per batch, the lr goes from its
#    peak to zero in 30 batches and back up in the next 30, oscillating about 175 times over the
#    run instead of decaying once. Step it once per epoch (`Schedule.per_batch` is `False`).
# 2. The evaluation runs in training mode (no `model.eval()`), so BatchNorm uses each batch's
#    statistics. It also updates the running statistics with the validation images, so the
#    "evaluation" changes the model.
# 3. `last.pt` also holds the optimizer's momentum buffer, one number per weight, plus the
#    scheduler, early stopping, history and random states. From `best.pt` you could only restart
#    from those weights with a fresh optimizer and schedule, at an earlier epoch: a different run,
#    not a continuation.
# 4. Epoch 12: the run stopped after five epochs without improvement, so the last improvement,
#    the best epoch, was 17 - 5 = 12. You report the test accuracy of those weights, measured once
#    (notebook 06), never the best test accuracy over epochs.
#
# </details>
#
# ## What you learned
#
# - Cross-entropy compares the softmax of the logits with the true class; label smoothing makes
#   its optimum $p_y = 0.91$ instead of 1, discouraging overconfidence.
# - SGD with momentum and weight decay, with a schedule, is the standard ResNet recipe (the course
#   adds Nesterov momentum and uses a weight decay of 5e-4 where the paper used 1e-4); Adam is the
#   low-tuning alternative.
# - A scheduler counts its `step()` calls: one-cycle per batch, cosine/multistep/step per epoch.
#   Milestones beyond the last epoch and per-epoch schedulers stepped per batch fail silently.
# - The loop: `model.train()`, then zero_grad, forward, loss, backward, step; evaluation needs
#   `model.eval()` and `torch.inference_mode()`.
# - Early stopping and the best checkpoint look at the validation set only; the test set is
#   measured once, at the end.
# - `best.pt` is for using the model, `last.pt` for resuming it exactly; divergence and
#   architecture mismatches stop with clear errors instead of silent garbage.
#
# Next: [06 · Evaluation, confusion & t-SNE](06_evaluation.ipynb)
