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
# # 04 · ResNet-18
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/04_resnet18.ipynb)
#
# Notebook 03 built the residual blocks. Here we stack them into the network the course trains,
# ResNet-18, and take it apart again: where its parameters live, how large its feature maps are,
# how much computation each part costs, and how it relates to its bigger siblings ResNet-34 to
# ResNet-152. Along the way we measure what two popular shortcuts cost: feeding 32 × 32 images to
# the ImageNet version unchanged, and upscaling them to 227 × 227 first.
#
# **Learning objectives.** After this notebook you can
# - draw ResNet-18 as a table (stem, four stages, pooling, classifier) and explain `_make_layer`;
# - explain why CIFAR-10 needs a different *stem* from ImageNet, and show it with feature-map sizes;
# - compute a convolution's output size, parameters and multiply-adds by hand, and count them for a
#   whole network with `torchinfo` and PyTorch's `FlopCounterMode`;
# - derive the ResNet-18 to ResNet-152 family from one table, and check it against torchvision;
# - choose the `width` of the network for the hardware you have, and say what `zero_init_residual`
#   does.
#
# **Course map:** previous: [03 · Residual blocks](03_residual_blocks.ipynb).
# Next: [05 · Training with early stopping](05_training.ipynb).

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
from course_utils.config import get_device

print(f"Device: {get_device()}")
print("This notebook only counts and inspects; it runs on the CPU in a few seconds.")

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torchinfo
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from course_utils.config import set_seed
from course_utils.exercises import CONV_CASES, check_conv_arithmetic, check_make_layer
from course_utils.models import (
    RESNET_SPECS,
    BasicBlock,
    Bottleneck,
    ResNet,
    count_parameters,
    parameters_per_stage,
    resnet,
    resnet18,
)

# %% [markdown]
# ## 1. The architecture at a glance
#
# ResNet-18 for CIFAR-10 has four parts:
#
# | part | layers | output for one 32 × 32 image (C × H × W) |
# | --- | --- | --- |
# | stem | 3 × 3 conv, 64 channels, stride 1; BatchNorm; ReLU | 64 × 32 × 32 |
# | `layer1` | 2 `BasicBlock`s, 64 channels | 64 × 32 × 32 |
# | `layer2` | 2 `BasicBlock`s, 128 channels, the first with stride 2 | 128 × 16 × 16 |
# | `layer3` | 2 `BasicBlock`s, 256 channels, the first with stride 2 | 256 × 8 × 8 |
# | `layer4` | 2 `BasicBlock`s, 512 channels, the first with stride 2 | 512 × 4 × 4 |
# | pooling | global average over the 4 × 4 positions | 512 |
# | `fc` | linear layer, 512 → 10 | 10 class scores |
#
# Each stage after the first halves the height and width and doubles the channels. The "18"
# counts the layers with weights on the main path: 1 stem convolution, 4 stages × 2 blocks × 2
# convolutions, and the final linear layer (the three 1 × 1 projection shortcuts are not counted).
#
# Let us check the table against the code. `model.stage_outputs(x)` runs the network and keeps the
# output of every part; `parameters_per_stage` counts the parameters of each. Two random "images"
# are enough to follow the shapes.

# %%
set_seed(0)
model = resnet18()  # CIFAR stem, width 64, 10 classes
x = torch.randn(2, 3, 32, 32)  # (B, 3, H, W)
with torch.no_grad():
    outputs = model.eval().stage_outputs(x)
params = parameters_per_stage(model)
architecture = pd.DataFrame(
    {
        "output shape (C, H, W)": {name: tuple(t.shape[1:]) for name, t in outputs.items()},
        "parameters": {name: params.get(name, 0) for name in outputs},
    }
)
share = architecture["parameters"] / count_parameters(model)
architecture["share of parameters"] = share.map("{:.2%}".format)
architecture

# %%
# Sanity check: the shapes of the table, the parameter count of the widely used CIFAR ResNet-18
# (kuangliu's pytorch-cifar has the same 11,173,962), and the "18".
expected = {"stem": (64, 32, 32), "layer1": (64, 32, 32), "layer2": (128, 16, 16),
            "layer3": (256, 8, 8), "layer4": (512, 4, 4), "pool": (512,), "fc": (10,)}
assert {name: tuple(t.shape[1:]) for name, t in outputs.items()} == expected
assert count_parameters(model) == 11_173_962 == sum(params.values())
main_path = [name for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name]
assert len(main_path) == 18
print(f"{count_parameters(model):,} parameters; {len(main_path)} weighted layers on the main path")

# %% [markdown]
# Three quarters of the parameters sit in `layer4`: a 3 × 3 convolution from 512 to 512 channels
# alone has $9 \cdot 512^2 \approx 2.4$ million weights. The stem and the classifier are tiny.
#
# ## 2. Building a stage: `_make_layer`
#
# The four stages differ only in their numbers, so `ResNet` builds each with one method,
# `_make_layer(block, planes, blocks, stride)`:
#
# - the **first** block receives the channels of the previous stage (`self.inplanes`) and the
#   stride: it is the one that may halve the resolution and change the channel count, and so the
#   one that gets a projection shortcut;
# - the **other** `blocks - 1` blocks receive `planes * block.expansion` channels (the first
#   block's output) and have stride 1: input and output shapes agree, so their shortcut is the
#   identity;
# - the stage is returned as an `nn.Sequential`, and `self.inplanes` is updated for the next stage.
#
# `ResNet.__init__` then calls it four times, with `planes` = width, 2 × width, 4 × width,
# 8 × width and strides 1, 2, 2, 2.
#
# ### Exercise 1: write `_make_layer`
#
# Write it as a function of its inputs (instead of reading `self.inplanes`): a stage of `blocks`
# blocks of type `block` (`BasicBlock` or `Bottleneck`; both are called as
# `block(inplanes, planes, stride)`), the first one with `inplanes` input channels and the stride.
#
# The check builds the first two stages of a ResNet-18 and of a ResNet-50 (all at width 16, to be
# quick) with your function, compares them block by block with the real stages, copies the real
# weights into them, and compares the outputs on a random input.

# %%
def my_make_layer(
    block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """A stage: (B, inplanes, H, W) -> (B, planes * block.expansion, H / stride, W / stride)."""
    # Hint: read the three bullet points above; block.expansion is 1 or 4.
    ### BEGIN SOLUTION
    first = block(inplanes, planes, stride)
    others = [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(first, *others)
    ### END SOLUTION


# %%
stage_check = check_make_layer(my_make_layer)
for name, (n_params, shape) in stage_check.items():
    print(f"{name}: {n_params:,} parameters, output {shape} for an 8 x 8 input")

# %% [markdown]
# Compare with the course's version, which also keeps `self.inplanes` up to date:
# `ResNet._make_layer??` in Jupyter shows its source.
#
# ## 3. Two stems: CIFAR and ImageNet
#
# The **stem** is what comes before the first stage. ResNet was designed for ImageNet photos of
# 224 × 224 pixels, and its ImageNet stem shrinks them fast: a 7 × 7 convolution with stride 2
# (224 → 112) and a 3 × 3 max-pool with stride 2 (112 → 56). The stages then work at 56, 28, 14
# and 7 pixels. The task statement this course follows uses that stem as is.
#
# CIFAR-10 images are 32 × 32. The same stem takes them to 8 × 8 before the first block, and
# `layer4` ends at **1 × 1**. For CIFAR-10, He et al. (section 4.2) designed different, much
# thinner networks: a single 3 × 3 convolution of stride 1 and no pooling, then three stages of 16,
# 32 and 64 channels working at 32, 16 and 8 pixels. Those are ResNet-20, -32, -44, -56 and -110,
# with 0.27 to 1.7 million parameters. The network this course trains is not one of them: it is
# the ImageNet ResNet-18 (four stages, 64 to 512 channels, 11 million parameters) with its stem
# replaced by that single 3 × 3, stride-1 convolution. This adaptation is widely used for CIFAR-10
# (for example in kuangliu's `pytorch-cifar`, a popular collection of CIFAR training scripts); its
# stages work at 32, 16, 8 and 4 pixels. `ResNet(stem="cifar")` (the course's default) and
# `ResNet(stem="imagenet")` build the two versions of ResNet-18.

# %%
stems = {}
for stem in ("cifar", "imagenet"):
    set_seed(0)
    with torch.no_grad():
        stems[stem] = resnet18(stem=stem).eval().stage_outputs(x)
sizes = pd.DataFrame(
    {f"{stem} stem": {name: "x".join(map(str, t.shape[1:])) for name, t in outs.items()}
     for stem, outs in stems.items()}
)
sizes

# %%
stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
side = pd.DataFrame(
    {f"{stem} stem": [outs[s].shape[-1] for s in stages] for stem, outs in stems.items()},
    index=stages,
)
ax = side.plot.bar(figsize=(8, 3.5), rot=0, color=["tab:blue", "tab:orange"])
ax.set(ylabel="height = width (pixels)", ylim=(0, 36),
       title="Feature-map size after each part, 32 x 32 input")
for container in ax.containers:
    ax.bar_label(container)
plt.show()

# %%
# Sanity check: the CIFAR stem keeps 32x32 into layer1; the ImageNet stem leaves layer4 at 1x1.
assert stems["cifar"]["layer4"].shape[1:] == (512, 4, 4)
assert stems["imagenet"]["stem"].shape[1:] == (64, 8, 8)
assert stems["imagenet"]["layer4"].shape[1:] == (512, 1, 1)

# %% [markdown]
# What does a 1 × 1 feature map mean for `layer4`? A 3 × 3 convolution (padding 1) on a 1 × 1
# input sees the one real pixel with its **centre** weight; the other eight weights only ever
# multiply the zero padding. So in the ImageNet-stem network on CIFAR images, 8/9 of the weights of
# most `layer4` convolutions, which hold the bulk of the network's parameters, can never learn
# anything. The gradient shows it:

# %%
set_seed(0)
imagenet_model = resnet18(stem="imagenet")
nn.functional.cross_entropy(imagenet_model(torch.randn(8, 3, 32, 32)), torch.arange(8)).backward()
grad = imagenet_model.layer4[1].conv1.weight.grad  # (512, 512, 3, 3)
print("gradient magnitude at each of the 3x3 kernel positions:")
print(grad.abs().sum(dim=(0, 1)))

# %%
# Sanity check: only the centre of the kernel gets a gradient.
border = torch.ones(3, 3, dtype=torch.bool)
border[1, 1] = False
assert grad[:, :, border].abs().sum() == 0 and grad[:, :, 1, 1].abs().sum() > 0

# %% [markdown]
# The stems also differ in parameters, but only a little: the first convolution has
# $7 \cdot 7 \cdot 3 \cdot 64 = 9{,}408$ weights instead of $3 \cdot 3 \cdot 3 \cdot 64 = 1{,}728$.
# Everything else is the same network. Where the stems really differ is in the computation, which
# we count next.

# %%
per_stage_params = pd.DataFrame(
    {f"{stem} stem": parameters_per_stage(resnet18(stem=stem)) for stem in ("cifar", "imagenet")}
)
per_stage_params

# %%
# Sanity check: the two stems change the first convolution and nothing else.
difference = per_stage_params["imagenet stem"] - per_stage_params["cifar stem"]
assert difference["stem"] == 7 * 7 * 3 * 64 - 3 * 3 * 3 * 64
assert (difference.drop("stem") == 0).all()

# %% [markdown]
# ## 4. Counting operations
#
# A convolution with $C_\text{in}$ input channels, $C_\text{out}$ output channels and a $k \times k$
# kernel computes, for each of its $C_\text{out}$ output channels and each output position, a sum
# of $C_\text{in} \cdot k^2$ products. One multiplication followed by one addition is a
# **multiply-add** (MAC), so
#
# $$ \text{MACs} = C_\text{out} \cdot H_\text{out} \cdot W_\text{out} \cdot C_\text{in} \cdot k^2,
# \qquad \text{parameters} = C_\text{out} \cdot (C_\text{in} \cdot k^2 + 1_\text{bias}), $$
#
# and the output size along each axis, for input size $n$, padding $p$ and stride $s$, is
# $\lfloor (n + 2p - k) / s \rfloor + 1$. (Many papers and torchvision's model tables say "FLOPs"
# but count multiply-adds; a multiply-add is two floating-point operations.)
#
# ### Exercise 2: a convolution by hand
#
# Write the three formulas as functions. The check runs them on seven convolutions (those of this
# notebook and two more) and compares with a real `nn.Conv2d`: its output shape,
# `count_parameters`, and the operations PyTorch's own `FlopCounterMode` counts while the
# convolution runs (it reports FLOPs, so the check halves them). Each function gets its own verdict.

# %%
def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Height (or width) of a convolution's output for an input of height `size`."""
    ### BEGIN SOLUTION
    return (size + 2 * padding - kernel) // stride + 1
    ### END SOLUTION


def conv_parameters(c_in: int, c_out: int, kernel: int, bias: bool = False) -> int:
    """Number of parameters of a k x k convolution."""
    ### BEGIN SOLUTION
    return c_out * (c_in * kernel * kernel + (1 if bias else 0))
    ### END SOLUTION


def conv_macs(c_in: int, c_out: int, kernel: int, out_size: int) -> int:
    """Multiply-adds of a k x k convolution (without the bias) for one image, square output."""
    ### BEGIN SOLUTION
    return c_out * out_size * out_size * c_in * kernel * kernel
    ### END SOLUTION



# %%
conv_facts = check_conv_arithmetic(conv_output_size, conv_parameters, conv_macs)
names = [f"{c[0]}->{c[1]}, {c[2]}x{c[2]}, stride {c[3]}, on {c[5]}x{c[5]}" for c in CONV_CASES]
pd.DataFrame(conv_facts, columns=["output size", "parameters", "multiply-adds"], index=names)

# %% [markdown]
# ### Operations per stage
#
# The same counter works on a whole network, and remembers which module each operation came from.
# A small helper adds them up per part of a ResNet:

# %%
def macs_per_stage(model: ResNet, image_size: int = 32) -> dict[str, int]:
    """Multiply-adds of one image's forward pass, per part of `model` (convs and linear layer)."""
    device = next(model.parameters()).device
    model.eval()  # BatchNorm in training mode cannot normalize a single image's 1x1 maps
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    counts = counter.get_flop_counts()  # {"ResNet.layer1": {operation: FLOPs}, ...}
    parts = {"stem": "conv1", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3",
             "layer4": "layer4", "fc": "fc"}
    prefix = type(model).__name__
    return {
        part: int(sum(counts.get(f"{prefix}.{name}", {}).values())) // 2
        for part, name in parts.items()
    }


def total_macs(model: ResNet, image_size: int = 32) -> int:
    """Multiply-adds of one image's forward pass through the whole of `model`."""
    return sum(macs_per_stage(model, image_size).values())


macs = pd.DataFrame(
    {f"{stem} stem": macs_per_stage(resnet18(stem=stem)) for stem in ("cifar", "imagenet")}
)
macs.loc["total"] = macs.sum()
(macs / 1e6).round(1).rename(columns=lambda c: f"{c}, millions of MACs")

# %% [markdown]
# `torchinfo`, which we use for the summary below, counts the same total independently (it adds
# the few operations of BatchNorm's scale and shift, a rounding error here):

# %%
torchinfo_total = torchinfo.summary(model, input_size=(1, 3, 32, 32), verbose=0).total_mult_adds
print(f"FlopCounterMode: {macs.loc['total', 'cifar stem']:,} MACs")
print(f"torchinfo:       {torchinfo_total:,} MACs")
assert abs(torchinfo_total - macs.loc["total", "cifar stem"]) / torchinfo_total < 1e-4

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
(macs.drop("total") / 1e6).plot.bar(ax=axes[0], rot=0, color=["tab:blue", "tab:orange"])
axes[0].set(ylabel="millions of multiply-adds", ylim=(0, 200),
            title="Computation per part, one 32 x 32 image")
axes[0].legend(loc="upper center", ncol=2)
(per_stage_params["cifar stem"] / 1e6).plot.bar(ax=axes[1], rot=0, color="tab:gray")
axes[1].set(ylabel="millions of parameters", title="Parameters per part (both stems)")
plt.tight_layout()
plt.show()

# %%
# Sanity check: with the CIFAR stem, the four stages cost about the same.
stage_macs = macs.loc[["layer1", "layer2", "layer3", "layer4"], "cifar stem"]
assert stage_macs.max() / stage_macs.min() < 1.2
assert per_stage_params["cifar stem"]["layer4"] > 0.7 * count_parameters(model)

# %% [markdown]
# Two pictures that look nothing alike. Each stage halves the height and width (4 times fewer
# positions) and doubles both channel counts (4 times more work per position), so the
# **computation** per stage stays about constant. That is by design: He et al. double the
# filters whenever they halve the feature map "so as to preserve the time complexity per layer".
# The
# **parameters**, which do not depend on the image size, grow 4 times per stage. So `layer4` holds
# three quarters of the parameters but does only a quarter of the work. The ImageNet stem, on a
# 32 × 32 image, cuts every stage's work by 16: cheap, because every stage then works on 16 times
# fewer positions, which is exactly the resolution the CIFAR stem keeps.
#
# ## 5. The summary table
#
# `torchinfo.summary` prints all of this for any model in one call: the output shape of every
# layer, its parameters and its multiply-adds. `depth=2` shows the blocks without their layers.

# %%
print(torchinfo.summary(model, input_size=(1, 3, 32, 32), depth=2,
                        col_names=("output_size", "num_params", "mult_adds"), verbose=0))

# %% [markdown]
# The footer gives the memory of one forward and backward pass for one image; multiply it by the
# batch size for a first estimate of what training needs.
#
# ## 6. The family: ResNet-18 to ResNet-152
#
# The deeper ResNets come from the same code: a block type and four numbers of blocks per stage
# (He et al., Table 1), which `course_utils` keeps in `RESNET_SPECS`. Depths 50 and up use the
# bottleneck block, whose output is 4 times wider, so their final features have 2048 channels
# instead of 512.
#
# To compare with torchvision we also build each network in its ImageNet form (ImageNet stem,
# 1000 classes). Building five large networks twice takes time and memory; on the `meta` device,
# PyTorch creates every parameter's *shape* but no numbers at all, instantly, which is all that
# counting needs. The multiply-adds are checked against the numbers torchvision publishes for
# 224 × 224 images (its model table's "GFLOPS" column, which counts multiply-adds).

# %%
#: Multiply-adds per 224 x 224 image, in billions: torchvision's model documentation, "GFLOPS".
TORCHVISION_GMACS_224 = {18: 1.814, 34: 3.664, 50: 4.089, 101: 7.801, 152: 11.514}

family = {}
for depth, (block, layers) in RESNET_SPECS.items():
    with torch.device("meta"):
        cifar = resnet(depth)  # CIFAR stem, 10 classes: what this course trains
        imagenet = resnet(depth, stem="imagenet", num_classes=1000)
        reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    layers_with_weights = [n for n, m in cifar.named_modules()
                           if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in n]
    family[f"ResNet-{depth}"] = {
        "block": block.__name__,
        "blocks per stage": tuple(layers),
        "layers with weights": len(layers_with_weights),
        "features": cifar.num_features,
        "parameters (CIFAR-10)": count_parameters(cifar),
        "MACs at 32x32, CIFAR stem (millions)": total_macs(cifar, 32) / 1e6,
        "parameters (ImageNet form)": count_parameters(imagenet),
        "parameters (torchvision)": count_parameters(reference),
        "GMACs at 224x224, ImageNet form": total_macs(imagenet, 224) / 1e9,
    }
family = pd.DataFrame.from_dict(family, orient="index")
family.round(3)

# %%
# Sanity check: the names mean what they say, and the ImageNet forms match torchvision exactly.
for depth in RESNET_SPECS:
    row = family.loc[f"ResNet-{depth}"]
    assert row["layers with weights"] == depth
    assert row["parameters (ImageNet form)"] == row["parameters (torchvision)"]
    assert round(row["GMACs at 224x224, ImageNet form"], 3) == TORCHVISION_GMACS_224[depth]

# %% [markdown]
# Notice ResNet-34 → ResNet-50: 16 more layers and 4 times wider features, for about 12% more
# computation and 10% more parameters (CIFAR-10 form), thanks to the bottleneck (notebook 03). On
# CIFAR-10, ResNet-18 is the usual choice: widely used public training scripts report the deeper
# models within about a point of it there, at two to three times its cost. This course has not
# measured that.
#
# ## 7. The cost of `Resize((227, 227))`
#
# The task statement resizes every CIFAR-10 image to 227 × 227 pixels (a number left over from
# AlexNet) before feeding it to the ImageNet-stem ResNet-18. Upscaling adds no information: the
# 32 × 32 pixels are interpolated, nothing more. What does it cost?

# %%
with torch.device("meta"):  # counting only: no weights needed
    imagenet_stem, cifar_stem = resnet18(stem="imagenet"), resnet18()
costs = pd.Series(
    {
        "ImageNet stem, 227 x 227 (task statement)": total_macs(imagenet_stem, 227),
        "CIFAR stem, 32 x 32 (this course)": total_macs(cifar_stem, 32),
        "ImageNet stem, 32 x 32": total_macs(imagenet_stem, 32),
    },
    name="multiply-adds per image",
)
ratios = pd.DataFrame({
    "billions of MACs": costs / 1e9,
    "relative to the course's setup": costs / costs["CIFAR stem, 32 x 32 (this course)"],
})
ratios.round(3)

# %%
ax = (costs / 1e9).plot.barh(figsize=(9, 2.6), color=["tab:red", "tab:blue", "tab:orange"])
ax.set(xlabel="billions of multiply-adds per image", xlim=(0, 2.4),
       title="ResNet-18, one forward pass")
ax.bar_label(ax.containers[0], fmt="%.3f")
ax.invert_yaxis()
plt.show()

# %%
# Sanity check: the upscaled pipeline costs about (227 / 32)^2 ~ 50 times the same network on 32x32
# images, and several times the CIFAR-stem network.
upscaled, same_net_small = costs.iloc[0], costs.iloc[2]
print(f"(227 / 32)^2 = {(227 / 32) ** 2:.1f};  measured ratio: {upscaled / same_net_small:.1f}")
assert 45 < upscaled / same_net_small < 60
assert upscaled > 3.5 * costs.iloc[1]

# %% [markdown]
# Compared with the same network on the original images, the resize multiplies the work by about
# 50, the ratio of the pixel counts (the rest comes from rounding in the strided layers), and the
# backward pass and the memory for activations grow in step. Compared with the CIFAR-stem ResNet-18
# the course uses, which keeps the full 32 × 32 resolution and has 4 × 4 maps in `layer4`, it is
# still about 3.7 times more work per image, spent on interpolated pixels. Train on CIFAR-10 at its
# own resolution, with a stem made for it. Section 8 of
# [07 · The experiments lab](07_experiments_lab.ipynb) gives both pipelines the same 5 minutes of
# real training and measures what each reaches.
#
# ## 8. Width: one knob for the hardware
#
# `width` sets the channels of the first stage; the stages use width, 2 ×, 4 × and 8 × width. The
# structure (depth, strides, feature-map sizes) does not change. A convolution's parameters and
# operations grow with $C_\text{in} \cdot C_\text{out}$, so halving the width divides both by
# about 4. Width 16, the course's CPU preset, gives a network about 16 times smaller and faster.

# %%
widths = {}
for width in (8, 16, 32, 64):
    with torch.device("meta"):
        net = resnet18(width=width).eval()
        layer4 = net.stage_outputs(torch.zeros(1, 3, 32, 32))["layer4"]  # (1, 8 * width, 4, 4)
    widths[width] = {
        "parameters": count_parameters(net),
        "millions of MACs at 32x32": total_macs(net) / 1e6,
        "layer4 output (C, H, W)": tuple(layer4.shape[1:]),
    }
widths = pd.DataFrame.from_dict(widths, orient="index").rename_axis("width")
widths["times fewer parameters than width 64"] = widths.loc[64, "parameters"] / widths["parameters"]
widths.round(1)

# %%
# Sanity check: width 16 has about 1/16 of the parameters of width 64.
assert abs(widths.loc[16, "parameters"] / widths.loc[64, "parameters"] - 1 / 16) < 0.002

# %% [markdown]
# ## 9. Initialisation, and `zero_init_residual`
#
# `ResNet` initialises all its layers in one place, `_init_weights`. Convolutions get **Kaiming
# normal** weights (He et al., 2015): standard deviation $\sqrt{2 / \text{fan}}$. The factor 2
# makes up for the ReLU, which zeroes half of the values. The fan is a number of connections, and
# which one decides what is kept at a steady scale from layer to layer:
# - "fan_in", $C_\text{in} \cdot k^2$, the inputs of each output value: the variance of the
#   activations in the **forward** pass;
# - "fan_out", $C_\text{out} \cdot k^2$, the mode used here, like torchvision: the variance of the
#   gradients in the **backward** pass.
#
# He et al. show that either one is enough to keep both signals from exploding or vanishing with
# depth, and inside a stage, where $C_\text{in} = C_\text{out}$, the two are the same. In a ResNet
# the BatchNorm after every convolution re-normalizes the forward signal anyway. BatchNorm layers
# start as the identity (scale 1, shift 0).

# %%
weight = model.layer3[1].conv1.weight  # (256, 256, 3, 3)
kaiming_std = math.sqrt(2 / (256 * 3 * 3))
print(f"std of the weights: {weight.std().item():.5f}")
print(f"Kaiming: sqrt(2 / (256 * 9)) = {kaiming_std:.5f}")
assert abs(weight.std().item() / kaiming_std - 1) < 0.02

# %% [markdown]
# `zero_init_residual=True` goes one step further: it sets the scale of the **last BatchNorm of
# every block** to zero. Then each block's residual branch outputs exactly 0 at the start, and a
# block with an identity shortcut computes $\operatorname{ReLU}(0 + x) = x$ (its input comes out
# of a ReLU, so it is never negative). The whole network starts out as if it were shallow, and the
# blocks switch themselves on as training grows those scales. Goyal et al. ("Accurate, Large
# Minibatch SGD", 2017) found that this makes the first steps of training easier, especially with
# large batches. It is a switch in the training configuration of notebook 05, off by default.

# %%
set_seed(0)
zero_init = resnet18(width=16, zero_init_residual=True).eval()
block_input = torch.relu(torch.randn(2, 16, 32, 32))  # what a block receives: the output of a ReLU
with torch.no_grad():
    assert torch.equal(zero_init.layer1[0](block_input), block_input)  # the block is the identity
print("first values of layer1[0].bn2.weight:", zero_init.layer1[0].bn2.weight.detach()[:4].tolist())

# %% [markdown]
# ## Check your understanding
#
# 1. Why does the first block of `layer2` need a projection shortcut, and the second block not?
# 2. ResNet-18 with the CIFAR stem is given 64 × 64 images. What are the shapes after `layer4` and
#    after the pooling, and does the model still work?
# 3. How many parameters and multiply-adds does the CIFAR stem's convolution have (3 → 64
#    channels, 3 × 3, stride 1, no bias, 32 × 32 output)?
# 4. Where would you cut parameters if a ResNet-18 had to fit a small device, and where would you
#    cut computation?
#
# <details><summary>Answers</summary>
#
# 1. It receives 64 channels at 32 × 32 and produces 128 channels at 16 × 16, so `x` cannot be
#    added to its output as is. The second block receives and produces 128 × 16 × 16, so the
#    identity fits.
# 2. `layer4` gives 512 × 8 × 8 and the pooling still gives 512 values, because it averages over
#    however many positions there are. The model works unchanged; it just costs 4 times more.
# 3. $64 \cdot 3 \cdot 9 = 1{,}728$ parameters and $1{,}728 \cdot 32 \cdot 32 = 1{,}769{,}472$
#    multiply-adds: under 0.4% of the network's total.
# 4. Parameters: `layer4` holds three quarters of them. Computation: every stage costs the same,
#    so only a smaller `width` (or input resolution) cuts it across the board.
#
# </details>
#
# ## What you learned
#
# - ResNet-18 = stem + 4 stages of 2 basic blocks + global average pooling + a linear layer;
#   18 weighted layers and 11,173,962 parameters in the CIFAR-10 version the course trains, an
#   adaptation of the ImageNet network (He et al.'s own CIFAR-10 ResNets are much thinner).
# - `_make_layer` builds a stage: the first block takes the stride and the channel change (and
#   the projection), the others keep the shape.
# - On 32 × 32 images the ImageNet stem leaves `layer4` at 1 × 1, where 8/9 of its 3 × 3 weights
#   never learn; the CIFAR stem (3 × 3, stride 1, no pooling) keeps the resolution.
# - Each stage costs about the same computation, while parameters grow 4 times per stage; count
#   them with the formulas, `torchinfo`, or `FlopCounterMode`.
# - ResNet-18 to -152 come from one table; ours match torchvision's parameter and operation counts.
#   Upscaling CIFAR-10 to 227 × 227 costs about 50 times the work for no new information.
# - `width=16` gives the same network at about 1/16 of the size and work, for CPUs.
#
# Next: [05 · Training with early stopping](05_training.ipynb)
