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
# # 00 · Setup & imports
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/00_setup.ipynb)
#
# Before we touch a single image, we make sure the tools work and that we know what machine we
# are on: a full-width ResNet-18 needs many hours of a laptop's CPU for a usual recipe (below, we
# measure how many on yours); a GPU is far faster (this repository has no GPU timings yet).
#
# **Learning objectives.** After this notebook you can
# - say what each library of the course is for, and check which versions you have;
# - pick the fastest device PyTorch can use (CUDA GPU, Apple GPU, or CPU) and estimate what it
#   means for training time;
# - make a run repeatable with a seed, and show that it is;
# - switch the course to *smoke mode* for a quick test run, and find where the data lives.
#
# **Course map:** this is the first notebook. Next: [01 · CIFAR-10 & normalization statistics](01_cifar10_statistics.ipynb).

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

# %% [markdown]
# ## 1. The libraries and what each is for
#
# | library | what we use it for | first used in |
# | --- | --- | --- |
# | `torch` | tensors, automatic differentiation, optimizers: the engine of everything | 00 |
# | `torch.nn` | layers (`Conv2d`, `BatchNorm2d`, `Linear`) and losses; every model is an `nn.Module` | 03 |
# | `torchvision` | the CIFAR-10 download, image transforms for augmentation, reference ResNets | 01, 02 |
# | `numpy` | arrays for everything that is not a tensor: the raw images, statistics, simulations | 01 |
# | `pandas` | small tables (`DataFrame`) of results, so numbers are read side by side | 00 |
# | `matplotlib` | every figure: images, histograms, learning curves | 01 |
# | `seaborn` | statistical plots on top of matplotlib, such as the confusion-matrix heatmap | 06 |
# | `scikit-learn` | metrics (classification report, confusion matrix) and t-SNE, written by experts | 06 |
# | `tqdm` | progress bars, so a long loop tells you how long it still needs | 05 |
# | `torchinfo` | a layer-by-layer summary of a model: output shapes, parameters, operations | 04 |
# | `course_utils` | this course's helpers: each function points to the notebook that explains it | 00 |
#
# We import them all now, so a missing package shows up here and not halfway through training.

# %%
import platform
import random
import time
from dataclasses import asdict

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import sklearn
import torch
import torchinfo
import torchvision
import tqdm

import course_utils
from course_utils.config import (
    SMOKE,
    data_dir,
    default_num_workers,
    get_device,
    is_smoke,
    set_seed,
)
from course_utils.machine import environment_report, estimate_epoch_minutes

libraries = (torch, torchvision, np, pd, matplotlib, sns, sklearn, tqdm, torchinfo, course_utils)
pd.DataFrame(
    {"version": [lib.__version__ for lib in libraries]},
    index=[lib.__name__ for lib in libraries],
)

# %% [markdown]
# ## 2. Your environment
#
# `environment_report()` collects what is worth knowing about the machine in one table. Paste it
# into any question you ask about the course: most "it doesn't work" problems are a version or a
# device problem.

# %%
pd.Series(environment_report(), name="value").to_frame()

# %% [markdown]
# ## 3. Choosing a device
#
# PyTorch runs the same code on different hardware; a tensor lives on one **device** and every
# operation runs where its inputs are. `get_device()` picks the fastest one available, in this
# order:
#
# 1. `cuda`: an NVIDIA GPU (Colab: *Runtime → Change runtime type → GPU*);
# 2. `mps`: the GPU of an Apple-silicon Mac;
# 3. `cpu`: always there, and always the slowest for convolutions.
#
# Later notebooks move the model and each batch there with `.to(device)`.

# %%
device = get_device()
print(f"Training will run on: {device}")
if device.type == "cpu":
    print("No GPU found. Everything still works; the training notebooks will use small presets.")

# %% [markdown]
# What does the device mean for training time? Rather than guess, we **measure**:
# `estimate_epoch_minutes` (in `course_utils/machine.py`) times a few training steps (forward pass,
# loss, backward pass, optimizer step) of the ResNet-18 we build in notebook 04, on random inputs,
# with the same loop training uses and the same measurement as the time budget of notebook 05
# (`measure_throughput`), and scales them up to one epoch of the 45,000 training images (the other
# 5,000 are held out for validation, notebook 02). The first step is not timed, because it includes
# one-off costs (memory allocation, kernel selection); and since GPU work runs asynchronously, the
# loop reads its result back before the clock stops, so the time is the work done, not the work
# queued.
#
# We time the full network (width 64) and the narrow one (width 16) that smoke mode and the CPU
# presets use.

# %%
batch_size = 128 if device.type != "cpu" else (16 if is_smoke() else 64)
steps = 1 if is_smoke() else 3  # smoke mode: one timed step is enough to see the order of magnitude
estimates = {f"width {w}": estimate_epoch_minutes(w, batch_size, steps, device)
             for w in (64, SMOKE.width)}
pd.Series(estimates, name=f"minutes per epoch on {device}").round(2).to_frame()

# %% [markdown]
# Published training recipes report about 93-95% test accuracy for a CIFAR-10 ResNet-18 after 30
# to 200 epochs, depending on the learning-rate schedule; this repository has not measured that
# (it has no GPU measurements yet). Multiply the minutes per epoch above by those epochs: on a
# laptop CPU it is many hours, or days for the longer schedules. That is why the course has presets, and why the width-16 network exists: it needs
# about 16 times less computation (the cost of a convolution grows with the product of its input
# and output channels, and 64/16 = 4 for both) and still learns something real. The measured
# speed-up is usually smaller than 16, because a small network spends a larger share of its time
# on fixed costs per layer that do not shrink with the width.
#
# This estimate ignores data loading and evaluation, which notebook 02 measures; on a GPU, data
# loading is often what limits the speed.

# %% [markdown]
# ## 4. CPU threads
#
# On the CPU, PyTorch splits one big operation (a matrix multiplication, a convolution) across
# several **threads**, by default one per physical core. `torch.get_num_threads()` says how many.
# More threads only help while there are idle cores: on a 2-core machine, or one busy with other
# work, the gain is small and can even turn into a loss. Measure before you change it with
# `torch.set_num_threads(n)`. The course's training runs measure it for you: they time a few
# training steps at a few thread counts and keep the fastest (notebook 05).

# %%
a = torch.randn(1024, 1024)
default_threads = torch.get_num_threads()
gflops = {}
for n in sorted({1, default_threads}):
    torch.set_num_threads(n)
    a @ a  # warm-up
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    gflops[f"{n} thread(s)"] = 10 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9
torch.set_num_threads(default_threads)  # back to the default
pd.Series(gflops, name="matrix multiply, GFLOP/s").round(1).to_frame()

# %% [markdown]
# DataLoader *worker processes* (notebook 02) are a different kind of parallelism: whole
# processes that prepare the next batches while the main process trains. The course's default
# number of workers on this machine:

# %%
print(f"default_num_workers() = {default_num_workers()} on {platform.system()}")

# %% [markdown]
# ## 5. Seeds: making a run repeatable
#
# Training is full of randomness: the initial weights, the order of the images, every augmentation.
# The numbers come from *pseudo*-random generators: deterministic sequences that start from a
# **seed**. Same seed, same sequence. There are three generators to seed (Python's `random`,
# NumPy's, and PyTorch's), and `set_seed` seeds them all.
#
# Let us check the claim rather than believe it.

# %%
def draw() -> tuple[float, np.ndarray, torch.Tensor]:
    """One number from each of the three generators a training run uses."""
    return random.random(), np.random.rand(3), torch.rand(3)


set_seed(0)
first = draw()
set_seed(0)
again = draw()
set_seed(1)
other = draw()
print("seed 0:      ", first)
print("seed 0 again:", again)
print("seed 1:      ", other)

# %%
# Sanity check: the same seed repeats every generator exactly; another seed does not.
assert first[0] == again[0]
assert np.array_equal(first[1], again[1]) and torch.equal(first[2], again[2])
assert first[0] != other[0]
assert not np.array_equal(first[1], other[1]) and not torch.equal(first[2], other[2])

# %% [markdown]
# Two limits worth knowing:
# - On a GPU, some fast algorithms are not bit-for-bit deterministic.
#   `set_seed(seed, deterministic=True)` asks cuDNN for deterministic convolutions, at some cost in
#   speed, and that is not enough for a repeatable run: other operations have nondeterministic GPU
#   versions too. `torch.use_deterministic_algorithms(True)` makes PyTorch use deterministic
#   versions where they exist and raise an error where none does, and ResNet-18 hits one: the
#   backward pass of its global average pooling (`AdaptiveAvgPool2d`) has no deterministic GPU
#   version (`warn_only=True` turns the error into a warning). Matrix multiplications on the GPU
#   also need the environment variable `CUBLAS_WORKSPACE_CONFIG=:4096:8` (PyTorch's
#   "Reproducibility" notes). So a ResNet-18 run on a GPU is repeatable only up to small
#   differences. On the CPU, the operations this course uses repeat exactly, with the same number
#   of threads.
# - A DataLoader that shuffles has its *own* generator, and its worker processes need seeds too.
#   `make_loader` takes care of both; notebook 02 shows it.

# %% [markdown]
# ## 6. Smoke mode
#
# Every notebook at full size takes minutes to hours on a CPU (each says what it measured). To check that
# everything *works*, set the environment variable `COURSE_SMOKE=1`: every notebook then runs the
# same code on a small real subset of CIFAR-10, for a couple of epochs, with a narrower network.
# The results are worse, but
# every line runs. That is how the course tests itself: all notebooks in a few minutes on two CPU
# cores.
#
# Switch it on before starting Jupyter (`COURSE_SMOKE=1 jupyter lab`), or in the first cell of a
# notebook with `os.environ["COURSE_SMOKE"] = "1"`: course_utils reads the variable each time it
# is asked, never at import. All its sizes live in one place, `course_utils.config.SMOKE`:

# %%
print(f"Smoke mode is {'ON' if is_smoke() else 'off'} in this kernel.")
pd.Series(asdict(SMOKE), name="smoke-mode value").to_frame()

# %% [markdown]
# ## 7. How the course is laid out
#
# ```
# notebooks/      00-06: the core sequence, read and run in order; 07-09: the labs after it
# student/        the same notebooks with the exercises left for you to solve
# course_utils/   the helper package: config, data, models, training, evaluation, plotting
# checkpoints/    a trained model shipped with the course, with its metrics and command
# results/        the measured tables the labs (notebooks 07-09) read
# benchmarks/     scripts that measure speed and memory, with their recorded results
# tests/          checks that course_utils does what the notebooks say it does
# data/           CIFAR-10 (downloaded or copied here; never committed)
# ```
#
# The notebooks explain and show; the code they reuse lives in `course_utils`, where it is tested.
# Whenever a notebook calls a helper, you can read it (`course_utils.data.load_cifar10??` in
# Jupyter shows its source) and its docstring names the notebook that teaches it.
#
# **Where the data lives.** By default in `data/` at the top of the course. To use a copy
# elsewhere (a shared drive, a bigger disk), set `COURSE_DATA_DIR` to that folder. With internet,
# notebook 01 downloads CIFAR-10 (about 170 MB) there by itself. Offline, put either the official
# `cifar-10-python.tar.gz` or the `cifar10-images.zip` JPEG copy in that folder.

# %%
folder = data_dir()
print(f"Data directory: {folder}")
print("Contents:", sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "(none yet)")

# %% [markdown]
# ## Check your understanding
#
# 1. Your friend's notebook prints `device = cpu` on Colab. What did they forget, and roughly how
#    much longer will their training take?
# 2. You call `set_seed(0)` once at the top of a notebook, then run the training cell twice. Are the
#    two runs identical? Why or why not?
# 3. Why does `course_utils` read `COURSE_SMOKE` when a function is called, and not once when the
#    package is imported?
# 4. A colleague sets `torch.set_num_threads(16)` on a 4-core laptop "to go faster". What do you
#    expect, and how would you check?
#
# <details><summary>Answers</summary>
#
# 1. To pick a GPU runtime (*Runtime → Change runtime type*). The measurement above shows the
#    factor: typically one to two orders of magnitude for ResNet-18.
# 2. No. The generators keep advancing: the second run starts where the first one left them. Seed
#    right before each run you want to repeat.
# 3. So that setting the variable in a notebook (after importing) still takes effect, and so that
#    importing the package has no side effects at all.
# 4. No gain, probably a small loss: 16 threads compete for 4 cores. Time the same operation with
#    different settings, as in section 4.
#
# </details>
#
# ## What you learned
#
# - Each library has one job: `torch` computes, `torchvision` brings data and transforms, NumPy and
#   pandas hold numbers, matplotlib and seaborn draw, scikit-learn measures, tqdm and torchinfo report.
# - `get_device()` picks CUDA, then MPS, then the CPU, and the choice changes the training time by a
#   large factor that you can measure in a few seconds.
# - `set_seed` makes Python, NumPy and PyTorch repeat themselves; DataLoaders need their own seed.
# - `COURSE_SMOKE=1` runs the whole course quickly on a small real subset; its sizes live in `SMOKE`.
# - Data lives in `data/`, or wherever `COURSE_DATA_DIR` points.
#
# Next: [01 · CIFAR-10 & normalization statistics](01_cifar10_statistics.ipynb)
