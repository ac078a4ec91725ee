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
# # 03 · Residual blocks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/03_residual_blocks.ipynb)
#
# A ResNet is a stack of one small module repeated many times: the **residual block**. This
# notebook builds it from single layers, checking the shape of the tensor after every step, and
# then measures why the one addition at its end matters so much.
#
# **Learning objectives.** After this notebook you can
# - describe the *degradation problem*: deeper plain networks reach a higher **training** loss,
#   which is an optimization failure and not overfitting;
# - explain the residual idea $y = F(x) + x$ and what it does to the gradient;
# - build a `BasicBlock` (two 3 × 3 convolutions) step by step, including the projection shortcut
#   (1 × 1 conv + BatchNorm) needed when the block changes the resolution or the channel count;
# - recognise a common mistake: a two-convolution block called "BottleNeck", and tell it apart from
#   the true `Bottleneck` (1 × 1 reduce, 3 × 3, 1 × 1 expand by 4);
# - compare the two blocks' parameters and operations, and read a plot of gradient norms per layer.
#
# **Course map:** previous: [02 · Augmentation & DataLoaders](02_augmentation_dataloaders.ipynb).
# Next: [04 · ResNet-18](04_resnet18.ipynb).

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
print("Everything in this notebook is small, so it runs on the CPU: same numbers on every machine.")

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torchinfo
from torch import nn

from course_utils.config import is_smoke, set_seed
from course_utils.data import load_cifar10, stratified_subset, eval_transform
from course_utils.exercises import (
    BOTTLENECK_CASES,
    check_basic_block_forward,
    check_bottleneck,
)
from course_utils.models import (
    BasicBlock,
    Bottleneck,
    ResNet,
    conv1x1,
    conv3x3,
    count_parameters,
    gradient_norms,
    plain_resnet,
    resnet,
)

# %% [markdown]
# ## 1. The degradation problem
#
# By 2015, stacking more layers was the surest way to a better image classifier: AlexNet had 8
# weighted layers, VGG 19, GoogLeNet 22. Two obstacles to going deeper had been largely solved:
# careful initialisation (notebook 04) and **batch normalization** keep the signal
# at a sensible scale through dozens of layers at the start of training.
#
# Yet He, Zhang, Ren and Sun ("Deep Residual Learning for Image Recognition", 2016) saw something
# odd. A plain 56-layer network (convolutions, BatchNorm, ReLU, nothing else) ended with a
# **higher training error** than a 20-layer one on CIFAR-10. Not a higher *test* error, which
# would point to overfitting: a higher error on the very images it was trained on.
#
# (Those CIFAR-10 networks of the paper are thin: three stages of 16, 32 and 64 channels, which
# with shortcuts became ResNet-20, -32, -44, -56 and -110, with 0.27 to 1.7 million parameters.
# The ResNet-18 this course trains, with four stages of 64 to 512 channels and 11 million
# parameters, is the paper's ImageNet ResNet-18 with a stem adapted to 32 × 32 images, a version
# widely used for CIFAR-10, for example in kuangliu's `pytorch-cifar`. Notebook 04 builds it.)
#
# That cannot be a lack of capacity. Take the trained 20-layer network and add 36 layers that
# compute the identity: the result is a 56-layer network with exactly the same training error. So
# a solution at least as good *exists*; gradient descent simply does not find it. Deeper plain
# networks are harder to **optimise**. The authors called this the *degradation problem*; section 7
# looks at a small version of it.
#
# ## 2. The residual idea
#
# If the identity is hard for a stack of layers to learn, build it in. A residual block computes
#
# $$ y = \operatorname{ReLU}\big(F(x) + x\big), $$
#
# where $F$ is a small stack of layers (two 3 × 3 convolutions with BatchNorm), and the $+\,x$ is
# the **shortcut** or **skip connection**. The layers now learn only the *change* $F(x) = H(x) - x$
# to their input, not the whole mapping $H(x)$. Two consequences:
#
# - **Doing nothing is easy.** A block that is not needed only has to make $F$ output zero.
#   Learning $H(x) = x$ through convolutions and ReLUs is much harder. Our branch ends with a
#   BatchNorm, so shrinking the convolution weights would not do it (BatchNorm rescales whatever
#   it receives to unit variance); what sends $F$ to zero is the scale (and shift) of that last
#   BatchNorm going to zero, a handful of numbers per channel. Notebook 04's
#   `zero_init_residual` starts every block in exactly that state.
# - **The gradient has a direct path.** Ignoring the final ReLU, $\dfrac{\partial y}{\partial x} =
#   \dfrac{\partial F}{\partial x} + I$: whatever $F$ does, the identity term passes the
#   gradient back through the addition as it is, without multiplying it by the block's weights.
#   The final ReLU does act on it: where $F(x) + x$ is negative, it blocks the gradient on both
#   paths. So the gradient is not carried unchanged through every block; but the part that gets
#   through reaches the early layers without passing through every layer's weights on the way.
#   (A later variant, in the answers at the end, removes the ReLU from the shortcut's path.)
#
# Let us build a block and see both at work.

# %% [markdown]
# ## 3. The BasicBlock, step by step
#
# We follow one batch of feature maps through a block, as the first stage of ResNet-18 would see
# it: 64 channels at 32 × 32 pixels. Shapes read `(B, C, H, W)`: batch, channels, height, width.
# The block's layers are made with the course's two helpers: `conv3x3` (a 3 × 3 convolution with
# padding 1, so stride 1 keeps the size) and `conv1x1`. Neither has a bias, because the BatchNorm
# right after each one has its own.

# %%
set_seed(0)
x = torch.randn(2, 64, 32, 32)  # (B, C, H, W)

conv_a, bn_a = conv3x3(64, 64), nn.BatchNorm2d(64)
conv_b, bn_b = conv3x3(64, 64), nn.BatchNorm2d(64)

# Step 1: 3x3 convolution, BatchNorm, ReLU.
h = torch.relu(bn_a(conv_a(x)))  # (2, 64, 32, 32)
assert h.shape == (2, 64, 32, 32)

# Step 2: a second 3x3 convolution and BatchNorm. This is F(x). No ReLU yet.
residual = bn_b(conv_b(h))  # (2, 64, 32, 32)
assert residual.shape == x.shape

# Step 3: the shortcut. Here, with the same shape in and out, it is the input itself.
identity = x  # (2, 64, 32, 32)
assert identity.shape == residual.shape

# Step 4: add. Step 5: the ReLU.
total = residual + identity  # (2, 64, 32, 32)
assert total.shape == x.shape
y = torch.relu(total)  # (2, 64, 32, 32)
assert y.shape == x.shape
for name, t in {"x": x, "h": h, "F(x)": residual, "y": y}.items():
    print(f"{name:>4}: {tuple(t.shape)}")

# %% [markdown]
# Why is there no ReLU between the second BatchNorm and the addition? A ReLU would make $F(x) \ge
# 0$: the block could only ever *add* to its input. Without it, $F$ can push each value up or down,
# and the one ReLU comes after the sum.
#
# ### When the shapes change: the projection shortcut
#
# The first block of every later stage halves the resolution (its first conv has stride 2) and
# doubles the channels. Then $F(x)$ and $x$ no longer have the same shape, and the addition fails:

# %%
conv_s, bn_s = conv3x3(64, 128, stride=2), nn.BatchNorm2d(128)
conv_t, bn_t = conv3x3(128, 128), nn.BatchNorm2d(128)
residual_down = bn_t(conv_t(torch.relu(bn_s(conv_s(x)))))  # (2, 128, 16, 16)
assert residual_down.shape == (2, 128, 16, 16)
try:
    residual_down + x  # (2, 128, 16, 16) + (2, 64, 32, 32)
except RuntimeError as error:
    print("RuntimeError:", error)

# %% [markdown]
# The fix is a **projection shortcut**: a 1 × 1 convolution with the same stride maps $x$ to the
# new shape (it mixes the 64 channels into 128 at every second pixel), followed by its own
# BatchNorm. This is "option B" of He et al., from their ImageNet networks (their thin CIFAR-10
# networks used "option A": the identity, with the extra channels filled with zeros). torchvision's
# ResNets, and the CIFAR ResNet-18 this course trains, use option B. Only the first block of a
# stage needs it; every other shortcut stays the plain identity, which costs nothing.

# %%
projection = nn.Sequential(conv1x1(64, 128, stride=2), nn.BatchNorm2d(128))
shortcut = projection(x)  # (2, 128, 16, 16)
assert shortcut.shape == residual_down.shape
y_down = torch.relu(residual_down + shortcut)  # (2, 128, 16, 16)
assert y_down.shape == (2, 128, 16, 16)
print(f"{count_parameters(projection):,} parameters in the projection")

# %% [markdown]
# **Why does the projection have a BatchNorm?** A tempting argument goes: the residual branch
# ends in a BatchNorm, so $F(x)$ arrives at a controlled scale, while a bare 1 × 1 convolution
# passes on whatever scale its input has, so the shortcut would grow with its input and drown out
# $F(x)$. Let us measure, and put the identity shortcut, which most blocks use, beside it:

# %%
bare_projection = conv1x1(64, 128, stride=2)  # the projection without its BatchNorm
rows = {}
for scale in (1, 5, 25):
    xs = scale * x
    rows[f"input std {xs.std():.0f}"] = {
        "F(x), ends in BatchNorm": bn_t(conv_t(torch.relu(bn_s(conv_s(xs))))).std().item(),
        "identity shortcut (x itself)": xs.std().item(),
        "1x1 conv alone": bare_projection(xs).std().item(),
        "1x1 conv + BatchNorm": projection(xs).std().item(),
    }
shortcut_scales = pd.DataFrame(rows).T
shortcut_scales.round(2)

# %%
# Sanity check: the identity and the bare 1x1 conv both grow with the input (25x here); with its
# BatchNorm the projection stays at unit scale.
growth = shortcut_scales.iloc[-1] / shortcut_scales.iloc[0]
assert 20 < growth["identity shortcut (x itself)"] < 30 and 20 < growth["1x1 conv alone"] < 30
assert growth["1x1 conv + BatchNorm"] < 1.1

# %% [markdown]
# The identity shortcut grows with its input exactly like the bare convolution, and identity
# blocks are what most of a ResNet is made of. Carrying the input forward at full scale is the
# shortcut's job, so "the shortcut grows with its input" cannot be why the projection needs a
# BatchNorm. The reason is simpler: He et al. put a BatchNorm right after *every* convolution
# (section 3.4 of the paper), and the projection is a convolution. It then behaves like every other
# conv-BN pair in the network: its output is normalized per channel and scaled and shifted by
# learned parameters (the convolution has no bias; the shift comes from the BatchNorm), so the
# shortcut's scale is set by those learned parameters rather than by however large the
# convolution's weights drift. torchvision's ResNets have it too, and their pretrained weights
# include it. How much it matters for accuracy is not measured in this course. (In training mode
# BatchNorm normalizes with the batch's own statistics; that is the mode every new module starts
# in, and the one used here.)
#
# ### The same block as a module
#
# `course_utils.models.BasicBlock` packages these steps and the optional projection. Its
# layers have torchvision's names: `conv1`, `bn1`, `relu`, `conv2`, `bn2`, and `downsample` for
# the projection (`None` when the shortcut is the identity).

# %%
block = BasicBlock(64, 64)
block_down = BasicBlock(64, 128, stride=2)
print(block_down)
assert block(x).shape == (2, 64, 32, 32) and block.downsample is None
assert block_down(x).shape == (2, 128, 16, 16) and block_down.downsample is not None

# %% [markdown]
# ### Exercise 1: the BasicBlock's forward pass
#
# Write the forward pass of a `BasicBlock` as a function: given a block and an input, use the
# block's own layers (`block.conv1`, `block.bn1`, `block.relu`, `block.conv2`, `block.bn2`,
# `block.downsample`) to compute its output. Remember: the shortcut is `x` itself when
# `block.downsample` is `None`, and the projection of `x` otherwise.
#
# The check runs your function on two blocks, one with the identity shortcut and one with a
# projection, and compares the result with an output it computes from the same layers. A trained
# network's BatchNorm layers have their own statistics and scales, so the check gives every
# BatchNorm random ones and switches the blocks to evaluation mode: a forgotten or misplaced
# BatchNorm then changes the result. While your function runs, the block's own `forward` is
# switched off, so `return block(x)` does not count as an answer.

# %%
def my_basic_block_forward(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """The output of `block` for input x, (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
    # Hint: two conv-BN pairs with a ReLU between them, then add the shortcut, then a ReLU.
    ### BEGIN SOLUTION
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    identity = x if block.downsample is None else block.downsample(x)
    return block.relu(out + identity)
    ### END SOLUTION


# %%
basic_block_forward = check_basic_block_forward(my_basic_block_forward)
with torch.no_grad():
    print("output of block_down:", tuple(basic_block_forward(block_down, x).shape))

# %% [markdown]
# ## 4. A common mistake: the "BottleNeck" that is not one
#
# The task statement this course follows defines its block under the name `BottleNeck`. Three
# things are wrong with it, and each is common enough in tutorials to be worth recognising:
#
# 1. **It is a basic block, not a bottleneck.** Two 3 × 3 convolutions with the same channel count
#    are exactly the `BasicBlock` of ResNet-18 and ResNet-34. The bottleneck is a different design
#    (section 5). The name is wrong, so anyone who reads "ResNet-18 built from bottlenecks" learns
#    the wrong architecture.
# 2. **Its shortcut projection has no BatchNorm**, where He et al. and torchvision put one after
#    every convolution, the projection included (section 3).
# 3. **Its `forward` never runs.** The class subclasses `nn.Sequential`, and its `forward` is
#    indented one level too deep: it is a local function *inside* `__init__`, defined and then
#    forgotten. Python raises no error, because `nn.Sequential` already has a `forward`: it calls
#    the registered submodules one after the other, in the order they were assigned.
#
# Point 3 is the nastiest, because nothing complains. Here is a block written in the same way (our
# code, reduced to what matters), and what it really computes:

# %%
class MisIndentedBlock(nn.Sequential):
    """Two 3x3 convs and a skip, written so that the skip is silently lost. Do not copy."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or inplanes != planes
        self.projection = conv1x1(inplanes, planes, stride) if changes_shape else None

        def forward(x):  # indented inside __init__: a local function that nobody calls
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


mistaken = MisIndentedBlock(64, 64)
print("nn.Sequential will run, in order:", [name for name, _ in mistaken.named_children()])
chain = mistaken.bn2(mistaken.conv2(mistaken.relu(mistaken.bn1(mistaken.conv1(x)))))
assert torch.equal(mistaken(x), chain)  # no skip connection, and no ReLU at the end
print("Same channels: the block is a plain conv-BN-ReLU-conv-BN chain, with no skip at all.")

try:
    MisIndentedBlock(64, 128, stride=2)(x)
except RuntimeError as error:  # the 1x1 projection is run *after* bn2, on 128 channels
    print("Channels change: RuntimeError:", error)

# %% [markdown]
# So a "ResNet" built from such blocks is a plain network wherever the channels stay the same,
# and crashes where they change. The lesson is general: in a custom `nn.Module`, subclass
# `nn.Module` (not `nn.Sequential`) when you write your own `forward`, and check that a module
# computes what you think with a small test like the `assert` above.
#
# ## 5. The true Bottleneck
#
# ResNet-50, -101 and -152 use a different block. A 3 × 3 convolution from $C$ to $C$ channels
# costs $9C^2$ weights, so wide stages get expensive fast. The **bottleneck** block does its 3 × 3
# work on 4 times fewer channels:
#
# 1. a 1 × 1 convolution **reduces** the channels (256 → 64 in the first stage of ResNet-50);
# 2. a 3 × 3 convolution works at the reduced width (64 → 64); in the first block of a stage it
#    also carries the stride;
# 3. a 1 × 1 convolution **expands** again, by the block's `expansion` of 4 (64 → 256);
#
# each followed by BatchNorm, with ReLUs after the first two and after the addition, as before.
# The shape walk-through, for a block inside the first stage of ResNet-50:

# %%
x256 = torch.randn(2, 256, 16, 16)  # (B, 4 * 64, H, W)
reduce, bn_r = conv1x1(256, 64), nn.BatchNorm2d(64)
spatial, bn_sp = conv3x3(64, 64), nn.BatchNorm2d(64)
expand, bn_e = conv1x1(64, 256), nn.BatchNorm2d(256)

squeezed = torch.relu(bn_r(reduce(x256)))  # (2, 64, 16, 16): 4x fewer channels
assert squeezed.shape == (2, 64, 16, 16)
mixed = torch.relu(bn_sp(spatial(squeezed)))  # (2, 64, 16, 16): the 3x3 work, on 64 channels
assert mixed.shape == (2, 64, 16, 16)
widened = bn_e(expand(mixed))  # (2, 256, 16, 16): back to 4 * 64
assert widened.shape == x256.shape
out256 = torch.relu(widened + x256)  # the identity shortcut fits: (2, 256, 16, 16)
assert out256.shape == x256.shape
print(" -> ".join(str(tuple(t.shape[1:])) for t in (x256, squeezed, mixed, widened, out256)))

# %% [markdown]
# In the arguments of `course_utils`'s `Bottleneck(inplanes, planes, stride)`, `planes` is the
# *inner* width (64 here) and the output has `planes * 4` channels. The first block of a stage
# needs a projection shortcut whenever its input does not already have `planes * 4` channels at
# the output resolution, which includes the very first block of ResNet-50 (64 channels in, 256
# out, stride 1).
#
# ### Exercise 2: build a Bottleneck
#
# Complete `MyBottleneck`: the three conv-BN steps above (with `inplanes`, `planes` and `stride`
# instead of fixed numbers), the ReLUs, and a projection shortcut (1 × 1 conv with the stride,
# then BatchNorm) exactly when the stride is not 1 or the input channels differ from the output
# channels. Give the layers torchvision's names: `conv1`, `bn1`, `conv2`, `bn2`, `conv3`, `bn3`,
# and `downsample` for the projection (`None` when the shortcut is the identity). With the same
# names, weights can be copied between your block, `course_utils`' and torchvision's.
#
# The check builds your block for three cases, copies the weights of `course_utils`' `Bottleneck`
# into it (with random BatchNorm statistics, as in exercise 1), and compares the two outputs, so a
# missing skip connection, a misplaced ReLU or the stride on the wrong convolution shows.

# %%
class MyBottleneck(nn.Module):
    """1x1 reduce, 3x3 (with the stride), 1x1 expand by 4, each with BatchNorm; plus a shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        # Hint: the output has planes * self.expansion channels.
        ### BEGIN SOLUTION
        width_out = planes * self.expansion
        self.conv1, self.bn1 = conv1x1(inplanes, planes), nn.BatchNorm2d(planes)  # reduce
        self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv1x1(planes, width_out), nn.BatchNorm2d(width_out)  # expand
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None  # the identity shortcut, unless the shapes differ:
        if stride != 1 or inplanes != width_out:
            projection = conv1x1(inplanes, width_out, stride)  # (B, 4 * planes, H / s, W / s)
            self.downsample = nn.Sequential(projection, nn.BatchNorm2d(width_out))
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        ### BEGIN SOLUTION
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H / stride, W / stride)
        out = self.bn3(self.conv3(out))  # (B, 4 * planes, H / stride, W / stride)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)
        ### END SOLUTION


# %%
bottleneck_class = check_bottleneck(MyBottleneck)
rows = {}
for inplanes, planes, stride in BOTTLENECK_CASES:
    module = bottleneck_class(inplanes, planes, stride)
    out = module(torch.randn(2, inplanes, 16, 16))  # (B, 4 * planes, 16 / stride, 16 / stride)
    rows[f"({inplanes}, {planes}, stride={stride})"] = {
        "output shape": tuple(out.shape), "parameters": count_parameters(module)}
pd.DataFrame.from_dict(rows, orient="index").rename_axis(bottleneck_class.__name__)

# %% [markdown]
# The reference module, for the record: note `downsample` on a block that keeps the resolution
# but changes the channel count (64 → 256).

# %%
print(Bottleneck(64, 64))

# %% [markdown]
# ### BasicBlock or Bottleneck: what each costs
#
# Compare three blocks on a 32 × 32 input. Parameters come from `count_parameters`; the number of
# multiply-adds (the operations of a forward pass) from `torchinfo`, which we meet properly in
# notebook 04.

# %%
candidates = {  # name: (block, input channels, output channels)
    "BasicBlock(64, 64)": (BasicBlock(64, 64), 64, 64),
    "Bottleneck(256, 64)": (Bottleneck(256, 64), 256, 256),
    "BasicBlock(256, 256)": (BasicBlock(256, 256), 256, 256),
}
rows = {}
for name, (module, c_in, c_out) in candidates.items():
    stats = torchinfo.summary(module, input_size=(1, c_in, 32, 32), verbose=0)
    assert stats.summary_list[0].output_size == [1, c_out, 32, 32]
    rows[name] = {
        "in channels": c_in,
        "out channels": c_out,
        "3x3 conv works on": module.conv2.in_channels,
        "parameters": count_parameters(module),
        "mult-adds (millions)": stats.total_mult_adds / 1e6,
    }
block_costs = pd.DataFrame.from_dict(rows, orient="index")
block_costs.round(1)

# %%
# Sanity check: a basic block's parameters are two 3x3 convs plus two BatchNorms (weight and bias).
assert count_parameters(BasicBlock(64, 64)) == 2 * (9 * 64 * 64) + 2 * (2 * 64)
# The bottleneck: 1x1 + 3x3 + 1x1 convs, and BatchNorms on 64, 64 and 256 channels.
convs, batchnorms = 256 * 64 + 9 * 64 * 64 + 64 * 256, 2 * (64 + 64 + 256)
assert count_parameters(Bottleneck(256, 64)) == convs + batchnorms

# %% [markdown]
# The bottleneck costs about the same as the 64-channel basic block (a little less, even) while
# its input and output are **four times wider**. A basic block of that width would need 17 times
# the parameters and operations. This is what lets ResNet-50 have 50 layers and 2048 output
# features for roughly the operations of ResNet-34. For a 10-class problem on 32 × 32 images,
# ResNet-18's basic blocks are plenty, which is why the course trains it.
#
# ## 6. Gradients with and without the skip
#
# Section 2 claimed that the shortcut gives the gradient a direct path. We can look. We take a real
# batch of CIFAR-10 images, compute the loss of a freshly initialised network, backpropagate, and
# read the size (L2 norm) of the gradient of every convolution's weights, from the input end to
# the output end. `gradient_norms` does exactly that. We compare each residual network with its
# *plain* twin: the same layers, built with `shortcut=False`, so no additions and no projections.

# %%
train = load_cifar10("train", download=True)
subset = train.subset(stratified_subset(train.labels, per_class=20, seed=0))  # 200 images
images = eval_transform()(torch.from_numpy(subset.images).permute(0, 3, 1, 2))  # (N, 3, 32, 32)
labels = torch.from_numpy(subset.labels)  # (N,)
batch_size = 16 if is_smoke() else 64  # smoke mode only checks that the code runs
batch = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:batch_size]
x_batch, y_batch = images[batch], labels[batch]  # (B, 3, 32, 32), (B,)
print(f"{len(labels)} images loaded; a batch of {len(y_batch)} for the gradients")

# %% [markdown]
# Two depths: ResNet-34 at width 16 (a quarter of the ImageNet ResNet-34's 64, to be quick) and a
# 50-layer network (6 blocks per stage) at width 8. We keep only the convolutions on the main path,
# so that both twins have the same layers to compare; the networks are in training mode, as during
# training.

# %%
def main_path_norms(model: nn.Module) -> np.ndarray:
    """Gradient norm of each conv weight on the main path (no projections), input to output."""
    model.train()
    norms = gradient_norms(model, x_batch, y_batch)
    return np.array([value for name, value in norms.items() if "downsample" not in name])


twins = {
    "34 layers (ResNet-34, width 16)": (
        lambda: resnet(34, width=16),
        lambda: plain_resnet(34, width=16),
    ),
    "50 layers (6 blocks per stage, width 8)": (
        lambda: ResNet(BasicBlock, (6, 6, 6, 6), width=8),
        lambda: ResNet(BasicBlock, (6, 6, 6, 6), width=8, shortcut=False),
    ),
}
norms = {}
for title, (make_residual, make_plain) in twins.items():
    set_seed(0)
    norms[title, "residual"] = main_path_norms(make_residual())
    set_seed(0)
    norms[title, "plain"] = main_path_norms(make_plain())

fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, title in zip(axes, twins):
    for kind, color in (("plain", "tab:red"), ("residual", "tab:blue")):
        ax.plot(norms[title, kind], marker=".", color=color, label=kind)
    ax.set(yscale="log", title=title, xlabel="conv layer (0 = next to the input)")
    ax.legend()
axes[0].set_ylabel("gradient norm of the conv weights")
fig.suptitle("Gradient size per layer at initialisation, one batch of CIFAR-10")
plt.tight_layout()
plt.show()

# %%
spread = {key: value.max() / value.min() for key, value in norms.items()}
pd.Series({f"{title}, {kind}": s for (title, kind), s in spread.items()},
          name="largest / smallest gradient norm").round(1).to_frame()

# %%
# Sanity check: without the skips the gradient sizes spread much further, and more so when deeper.
deep, shallow = list(twins)[1], list(twins)[0]
assert spread[shallow, "plain"] > 2 * spread[shallow, "residual"]
assert spread[deep, "plain"] > 10 * spread[deep, "residual"]
assert spread[deep, "plain"] > spread[shallow, "plain"]

# %% [markdown]
# What the plot shows, honestly: the gradients do **not** vanish in the plain networks. BatchNorm
# prevents that. Instead they **grow** towards the input, layer after layer: in the 50-layer plain
# network the first convolutions get gradients many times larger than the last ones, as the
# table above shows (Yang et al., "A Mean Field Theory of Batch Normalization", 2019, explain
# why plain networks with BatchNorm do this). In the residual networks the sizes stay within a
# much narrower band. (Early layers get larger gradients in both networks partly for a harmless
# reason: each of their weights is used at every one of the 32 × 32 positions, and the gradient
# sums over all of them.)
#
# Why does a wide spread hurt? Gradient descent uses one learning rate for all layers. If the first
# layers' gradients are many times larger than the last ones', a step size that moves the
# last layers usefully throws the first ones around, and a step that suits the first ones leaves
# the last ones frozen. He et al. checked that the gradients of their plain networks did not
# vanish ("healthy norms", in their words), yet those networks trained badly; they conjectured
# that deep plain networks converge exponentially slowly. The shortcuts keep every layer close to
# the loss, and the problem mostly disappears.
#
# ## 7. The degradation problem, in miniature
#
# Now the experiment of section 1, scaled down to run in a few minutes on a CPU: three networks of
# width 8, each trained for 50 SGD steps with the same settings (one learning rate, 0.03, for all
# three) on the same batches, drawn from the 200 images loaded above:
#
# - a plain network with 1 block per stage (10 layers);
# - a plain network with 6 blocks per stage (50 layers);
# - the residual network with 6 blocks per stage (50 layers).
#
# What this measures is narrow: how far each network's training loss falls in 50 steps at that one
# learning rate. It does not isolate "how easy each network is to optimise": a learning rate tuned
# for each network, or a longer run, could change the picture, and 50 steps say nothing about
# where the training loss would end. He et al. trained every network to the end. What it does
# show: with everything else equal, whether adding plain layers slows training down, and whether
# adding the same layers with shortcuts does. If depth only helped, the 50-layer plain network
# would do at least as well as the 10-layer one. Notebook 07, section 2, runs the comparison with
# the paper's own CIFAR networks on the whole training set, over several seeds:
# [07 · The experiments lab](07_experiments_lab.ipynb).

# %%
FULL_STEPS = 50
steps = 2 if is_smoke() else FULL_STEPS  # smoke mode: too few steps to compare, see the check


def training_losses(model: nn.Module, steps: int, batch_size: int, lr: float = 0.03) -> list[float]:
    """Train `model` for `steps` SGD steps on random batches of the images; each step's loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(0)  # the same batches for every model
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(labels), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


contenders = {
    "plain, 10 layers": lambda: ResNet(BasicBlock, (1, 1, 1, 1), width=8, shortcut=False),
    "plain, 50 layers": lambda: ResNet(BasicBlock, (6, 6, 6, 6), width=8, shortcut=False),
    "residual, 50 layers": lambda: ResNet(BasicBlock, (6, 6, 6, 6), width=8),
}
curves = {}
for name, make in contenders.items():
    set_seed(0)
    curves[name] = training_losses(make(), steps, batch_size)

smoothing = min(10, steps)
fig, ax = plt.subplots(figsize=(9, 4))
for (name, losses), color in zip(curves.items(), ("tab:green", "tab:red", "tab:blue")):
    ax.plot(losses, color=color, alpha=0.25)
    smooth = pd.Series(losses).rolling(smoothing, min_periods=1).mean()
    ax.plot(smooth, color=color, label=name)
ax.axhline(math.log(10), color="gray", ls=":", label="chance: ln 10")
ax.set(xlabel="SGD step", ylabel="training loss (batch)",
       title="Training on 200 images: depth hurts the plain network")
ax.legend()
plt.show()

final = pd.Series({name: np.mean(losses[-smoothing:]) for name, losses in curves.items()},
                  name=f"mean training loss, last {smoothing} steps")
final.round(3).to_frame()

# %%
# Sanity check. In both modes: every loss is a finite number.
assert all(np.isfinite(losses).all() for losses in curves.values())
if steps >= FULL_STEPS:
    # After 50 steps with the same settings, the deep plain network's training loss is the
    # highest of the three: above the shallow plain network's and above its residual twin's.
    assert final["plain, 50 layers"] > final["plain, 10 layers"]
    assert final["plain, 50 layers"] > final["residual, 50 layers"]
    print("Checked: after 50 steps the 50-layer plain network has the highest training loss.")
else:
    print(f"Smoke mode: {steps} steps are far too few to compare the networks, so only the code "
          f"path was checked. Run without COURSE_SMOKE for the {FULL_STEPS}-step comparison.")

# %% [markdown]
# In the 50-step run, the 50-layer plain network's loss falls least: after 50 steps it is the
# highest of the three, above the 10-layer plain network's and above its residual twin's (the
# check above asserts exactly that; the table gives the values, to compare with chance,
# $\ln 10 \approx 2.30$, a uniform guess over 10 classes). That is degradation, in the narrow
# sense measured here: with the same settings, more plain layers give a *training* loss that
# falls more slowly. The residual network of the same depth does learn; whether it ends above or
# below the shallow plain network is not checked, and in so short a run may depend on the seed
# (change `set_seed(0)` in the cell above and see). With full training, He et al.'s deeper residual networks on CIFAR-10 kept getting better
# up to 110 layers, where deeper plain ones got worse.
#
# (The residual network's loss stays above chance for its first steps: its output adds up the
# branches of all 24 blocks, so at the start its outputs are larger and its first steps bumpier.
# Notebook 04 shows an initialisation, `zero_init_residual`, that starts every block's branch at
# zero by setting the scale of its last BatchNorm to zero.)
#
# Notebook 04 stacks these blocks into ResNet-18, and notebook 05 trains it properly.

# %% [markdown]
# ## Check your understanding
#
# 1. A 56-layer plain network has a higher *test* error than a 20-layer one. Why is that, on its
#    own, not enough to call it the degradation problem? What else do you need to see?
# 2. Which blocks of ResNet-18 need a projection shortcut, and which use the identity? (ResNet-18
#    has four stages of two blocks; the first stage keeps 64 channels and 32 × 32.)
# 3. In the block, the ReLU comes *after* the addition. Where, then, does the gradient of the loss
#    with respect to $x$ pass unchanged, and where is it blocked?
# 4. How many parameters do the convolutions of `Bottleneck(512, 128)` have, and of a basic block
#    with two 3 × 3 convolutions from 512 to 512 channels?
#
# <details><summary>Answers</summary>
#
# 1. A higher test error can be overfitting: more parameters, memorised training images. The
#    degradation problem is about the **training** error: the deeper plain network fits its own
#    training data worse, although it could represent everything the shallower one does.
# 2. The first block of stages 2, 3 and 4 (stride 2, channels doubled): three projections in all.
#    Every other block, including both blocks of the first stage, uses the identity.
# 3. Through the final ReLU, the gradient passes only where the sum $F(x) + x$ is positive; there,
#    $\partial y / \partial x = \partial F / \partial x + I$ and the identity term carries it
#    unchanged. Where the sum is negative, the ReLU blocks both paths. He et al.'s follow-up
#    ("Identity Mappings in Deep Residual Networks", 2016) moves BatchNorm and ReLU *before* the
#    convolutions ("pre-activation"), so the shortcut path is a pure identity from block to block;
#    that version trains even a 1001-layer network well.
# 4. $512 \cdot 128 + 9 \cdot 128 \cdot 128 + 128 \cdot 512 = 278{,}528$, against
#    $2 \cdot 9 \cdot 512 \cdot 512 = 4{,}718{,}592$: about 17 times more for the basic block.
#
# </details>
#
# ## What you learned
#
# - The degradation problem: deeper plain networks reach a *higher training loss*, an optimisation
#   failure, not overfitting; a 50-step run with 10 and 50 plain layers showed the same direction.
# - A residual block outputs $\operatorname{ReLU}(F(x) + x)$: its layers learn a change to the
#   input, and the addition gives the gradient a path around the block's weights (gated by the
#   ReLU that follows it).
# - The `BasicBlock` is conv-BN-ReLU-conv-BN plus the shortcut; when the stride or the channels
#   change, the shortcut is a 1 × 1 conv **with** BatchNorm.
# - A two-conv block is a basic block, whatever a tutorial calls it; the true `Bottleneck` is
#   1 × 1 reduce, 3 × 3, 1 × 1 expand by 4, and is 4 times wider for the same cost.
# - Subclassing `nn.Sequential` and mis-indenting `forward` silently drops the skip: test a
#   module against what it should compute.
# - Without skips, BatchNorm networks' gradients blow up towards the input; with them, every
#   layer's gradient stays in a narrow range.
#
# Next: [04 · ResNet-18](04_resnet18.ipynb)
