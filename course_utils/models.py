"""ResNet for CIFAR-10 (and ImageNet), written out block by block.

The residual blocks (``BasicBlock``, ``Bottleneck``) are taught in notebook 03 and the whole
network (``ResNet``, ``resnet18``) in notebook 04. Attribute names follow torchvision's
``models/resnet.py`` (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample``, ``fc``), so a
state dict saved from one loads into the other and students can read both side by side. The
paper's own, thinner CIFAR-10 networks (``cifar_resnet``) are the same ``ResNet`` class with three
stages and zero-padding shortcuts.

Shape comments use ``B`` for the batch, ``C`` for channels, ``H, W`` for the input's height and
width, ``E`` for ``block.expansion`` and ``w`` for the base ``width`` (64 in the paper).

Reference: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Base width of the first stage in He et al. (2016); the stages then use w, 2w, 4w and 8w.
DEFAULT_WIDTH = 64
#: Each stage's channels as a multiple of the width, as in He et al. (2016): each stage doubles
#: them while it halves the resolution, so every stage does about the same work.
DOUBLING = (1, 2, 4, 8)
#: The default number of outputs of every model here: CIFAR-10 has ten classes.
NUM_CLASSES = 10
#: Fewest input channels for which a strided 1x1 convolution may run in channels_last on the CPU
#: (see :func:`memory_format_for`).
MIN_CHANNELS_LAST_1X1_STRIDED = 8
#: The stems ``ResNet`` knows: a 3x3 stride-1 conv for 32x32 CIFAR images (Sec. 4.2 of He et al.
#: keeps the full resolution), or the 7x7 stride-2 conv + 3x3 stride-2 max-pool of the ImageNet
#: model (Table 1), which shrinks the image 4x before the first stage.
STEMS = ("cifar", "imagenet")
#: The shortcuts ``ResNet`` knows, as the paper compares them (Sec. 3.3 and 4.2): where a block
#: changes the shape, "A" adds the input back subsampled and padded with zero channels (no
#: parameters; the paper's CIFAR networks), "B" adds a projection of it (1x1 conv + BatchNorm;
#: torchvision's and the ImageNet networks); "none" adds nothing anywhere: the plain network.
CIFAR_SHORTCUTS = ("A", "B", "none")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 and no bias (the BatchNorm after it has one).

    With padding 1, stride 1 keeps H and W and stride 2 halves them.
    """
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A 1x1 convolution with no bias: mixes channels at each pixel, used to change C cheaply."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """The projection shortcut (option B of He et al.): a strided 1x1 conv + BatchNorm.

    Used only where the identity cannot be added as is, because the block changes H, W or C.
    """
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class PadShortcut(nn.Module):
    """Option A of He et al.: the identity, subsampled by ``stride`` and padded with zero channels.

    It adds no parameters: the extra channels of the block's output get nothing added to them.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C + extra, H/stride, W/stride)."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros after the last channel


def _changes_shape(in_planes: int, out_planes: int, stride: int) -> bool:
    """Whether a block's output differs from its input in C or in H, W: then x cannot be added."""
    return stride != 1 or in_planes != out_planes


def _block_downsample(
    inplanes: int, out_planes: int, stride: int, shortcut: bool, downsample: nn.Module | None
) -> nn.Module | None:
    """What a block keeps as ``downsample``: the module it was given, else option B's projection
    where the shape changes, else ``None`` (the identity, or no shortcut at all)."""
    if not shortcut:  # a plain block adds nothing, so it has no projection either
        if downsample is not None:
            raise ValueError("a plain block (shortcut=False) adds nothing: pass no downsample")
        return None
    if downsample is None and _changes_shape(inplanes, out_planes, stride):
        return _projection(inplanes, out_planes, stride)
    return downsample


class BasicBlock(nn.Module):
    """The ResNet-18/34 block: two 3x3 convs, and the input added back before the last ReLU.

    The block learns a change F(x) to its input instead of a whole new mapping, so the output is
    ``relu(F(x) + x)``; gradients flow straight through the ``+ x`` and very deep networks still
    train. Some tutorials call a block of two 3x3 convs "BottleNeck": that is this block. The real
    bottleneck (``Bottleneck``) squeezes channels with 1x1 convs around a single 3x3.

    Args:
        inplanes: input channels.
        planes: output channels (``planes * expansion``, and ``expansion`` is 1 here).
        stride: stride of the first conv; 2 halves H and W at the start of a stage.
        shortcut: add the input back (a residual block). ``False`` gives the plain block of the
            same shape, ``relu(F(x))``, used in notebook 03 to show why the skip matters.
        downsample: what maps the input to the output's shape before the addition, chosen by
            ``ResNet._make_layer`` (as in torchvision), e.g. a ``PadShortcut``. ``None``: a
            projection where the shape changes, the input itself where it does not.

    Explained in notebook 03 (residual blocks).
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: bool = True,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.shortcut = shortcut
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out_planes)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.downsample = _block_downsample(inplanes, out_planes, stride, shortcut, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/stride, W/stride)
        out = self.bn2(self.conv2(out))
        if self.shortcut:
            identity = x if self.downsample is None else self.downsample(x)  # same shape as out
            out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """The ResNet-50/101/152 block: 1x1 reduce, 3x3, 1x1 expand, and the input added back.

    Squeezing the channels 4x before the 3x3 conv makes a deep block about as cheap as a
    ``BasicBlock`` while its output is 4x wider. The stride sits on the 3x3 conv, as in
    torchvision ("ResNet v1.5"), which is slightly more accurate than striding the first 1x1.

    Args:
        inplanes: input channels.
        planes: channels inside the block; the output has ``planes * expansion`` (4x).
        stride: stride of the 3x3 conv; 2 halves H and W at the start of a stage.
        shortcut: add the input back; ``False`` gives the plain block (see ``BasicBlock``).
        downsample: the shortcut's module where the shape changes (see ``BasicBlock``).

    Explained in notebook 03 (residual blocks).
    """

    #: Output channels per ``planes``: Table 1 of He et al. (e.g. 64 inside, 256 out).
    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: bool = True,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.shortcut = shortcut
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _block_downsample(inplanes, out_planes, stride, shortcut, downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H/stride, W/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/stride, W/stride)
        out = self.bn3(self.conv3(out))  # (B, 4 * planes, H/stride, W/stride)
        if self.shortcut:
            identity = x if self.downsample is None else self.downsample(x)  # same shape as out
            out = out + identity
        return self.relu(out)


#: The ResNet family, from Table 1 of He et al. (2016): depth -> (block type, blocks per stage).
RESNET_SPECS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _check_resnet_arguments(
    layers: Sequence[int],
    stem: str,
    shortcut: str,
    zero_init_residual: bool,
    stage_multiples: Sequence[int],
) -> None:
    """Raise a ``ValueError`` that says what to pass instead, before anything is built."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if len(layers) not in (3, 4):
        raise ValueError(
            "layers must give the number of blocks of 4 stages (the ImageNet family) or of 3 (the "
            f"paper's CIFAR networks), got {layers!r}"
        )
    if shortcut not in CIFAR_SHORTCUTS:
        raise ValueError(
            f"shortcut must be one of {CIFAR_SHORTCUTS} (or True for 'B', False for 'none'), "
            f"got {shortcut!r}"
        )
    if len(stage_multiples) != len(layers) or any(
        isinstance(m, bool) or int(m) != m or m < 1 for m in stage_multiples
    ):
        raise ValueError(
            f"stage_multiples must give one whole number >= 1 for each of the {len(layers)} "
            f"stages (each stage's channels as a multiple of width), got {tuple(stage_multiples)!r}"
        )
    if zero_init_residual and shortcut == "none":
        raise ValueError(
            "zero_init_residual=True needs shortcut=True ('A' or 'B'): without the skip, a "
            "block whose last BatchNorm is zero outputs zeros, and so would the whole network"
        )


class ResNet(nn.Module):
    """A ResNet: a stem, four stages of residual blocks, global average pooling and a linear head.

    Each stage doubles the channels and (after the first) halves H and W, so the work per stage
    stays about the same while the features get more abstract (``stage_multiples`` spreads the
    channels otherwise). The paper's CIFAR-10 networks (``cifar_resnet``) are the same design with
    three thin stages (16, 32, 64 channels).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: how many blocks in each stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18; four stages,
            or three as in the paper's CIFAR networks (``(3, 3, 3)`` for ResNet-20).
        num_classes: outputs of the final linear layer.
        stem: ``"cifar"`` (3x3 stride-1 conv, no max-pool: 32x32 images keep their resolution) or
            ``"imagenet"`` (7x7 stride-2 conv and 3x3 stride-2 max-pool, as in torchvision).
        width: channels of the stem and the base of every stage's width. 64 is the paper's
            ImageNet network (16 its CIFAR networks); smaller widths train much faster on a CPU.
        stage_multiples: each stage's channels as a multiple of ``width``; the paper's
            ``(1, 2, 4, 8)`` by default (``(1, 2, 4)`` for three stages). Other multiples move the
            channels, and the work, between stages: ``(1, 4, 12, 16)`` at width 8 gives 8, 32, 96
            and 128 channels (notebook 07 measures such shapes).
        zero_init_residual: start the last BatchNorm of every block at zero, so every block
            starts as the identity.
        shortcut: where a block changes the shape, ``"B"`` (or ``True``) adds a projection of the
            input, ``"A"`` the input padded with zeros; ``"none"`` (or ``False``) builds the
            plain network (no skip connections) of notebook 03. See ``CIFAR_SHORTCUTS``.
        in_channels: channels of the input images (3 for RGB).

    Explained in notebook 04 (ResNet-18).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = NUM_CLASSES,
        stem: str = "cifar",
        width: int = DEFAULT_WIDTH,
        *,
        zero_init_residual: bool = False,
        shortcut: bool | str = True,
        in_channels: int = 3,
        stage_multiples: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(shortcut, bool):
            shortcut = "B" if shortcut else "none"  # torchvision's projections, or the plain net
        if stage_multiples is None:
            stage_multiples = DOUBLING[: len(layers)]
        _check_resnet_arguments(layers, stem, shortcut, zero_init_residual, stage_multiples)
        self.stem = stem
        self.width = width
        self.stage_multiples = tuple(int(m) for m in stage_multiples)
        self.shortcut_type = shortcut  # "A", "B" or "none"
        self.shortcut = shortcut != "none"  # whether the blocks add their input back
        self.num_stages = len(layers)
        self.inplanes = width  # channels flowing into the next block; _make_layer updates it

        if stem == "cifar":
            self.conv1 = conv3x3(in_channels, width)
            self.maxpool: nn.Module = nn.Identity()  # kept so the attribute names match
        else:
            self.conv1 = nn.Conv2d(
                in_channels, width, kernel_size=7, stride=2, padding=3, bias=False
            )
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        planes = [m * width for m in self.stage_multiples]  # w, 2w, 4w, 8w unless told otherwise
        self.layer1 = self._make_layer(block, planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        if self.num_stages == 4:  # the paper's CIFAR networks stop after layer3
            self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = self.inplanes  # the last stage's channels: 8 * width * E by default
        self.fc = nn.Linear(self.num_features, num_classes)

        self._init_weights(zero_init_residual)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        """One stage: a first block that may stride and widen, then ``blocks - 1`` that keep shape.

        As in torchvision, the stage decides the first block's shortcut and passes it in.

        Args:
            block: the block type.
            planes: the ``planes`` of every block; the stage outputs ``planes * expansion``.
            blocks: number of blocks in the stage.
            stride: stride of the first block (1 or 2).

        Returns:
            The stage as an ``nn.Sequential``.
        """
        out_planes = planes * block.expansion
        downsample = self._downsample(self.inplanes, out_planes, stride)
        first = block(self.inplanes, planes, stride, shortcut=self.shortcut, downsample=downsample)
        stage = [first]
        self.inplanes = out_planes
        for _ in range(1, blocks):
            stage.append(block(self.inplanes, planes, shortcut=self.shortcut))
        return nn.Sequential(*stage)

    def _downsample(self, inplanes: int, out_planes: int, stride: int) -> nn.Module | None:
        """The first block's shortcut module: ``None`` where the input can be added as it is (or
        nothing is added), else option A's zero padding or option B's projection."""
        if self.shortcut_type == "none" or not _changes_shape(inplanes, out_planes, stride):
            return None
        if self.shortcut_type == "A":
            return PadShortcut(inplanes, out_planes, stride)  # no parameters
        return _projection(inplanes, out_planes, stride)  # 1x1 conv + BatchNorm

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Initialise every layer in one place.

        Convs get Kaiming-normal weights (He et al. 2015, "Delving Deep into Rectifiers"), scaled
        for ReLU so the signal neither shrinks nor blows up with depth; BatchNorm starts as the
        identity (weight 1, bias 0); the linear head keeps PyTorch's default.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Zero the last BN of each block, so each block starts as the identity (its residual
            # branch outputs 0). Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training
            # ImageNet in 1 Hour", Sec. 5.1: this eases early training, most of all at large batch.
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def stages(self) -> dict[str, nn.Sequential]:
        """``{"layer1": ..., "layer4": ...}``: the stages in order (to ``layer3`` with three)."""
        return {f"layer{i}": getattr(self, f"layer{i}") for i in range(1, self.num_stages + 1)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features: everything but the final linear layer.

        These are what the classifier sees, so a t-SNE plot of them shows what the network learned.

        Args:
            x: images, (B, in_channels, H, W).

        Returns:
            (B, num_features) features: 8 * width * expansion, so 512 for ResNet-18 and 2048 for
            ResNet-50; 64 for the paper's three-stage CIFAR networks.
        """
        # s is the stem's stride: 1 for the "cifar" stem, 4 for the "imagenet" stem.
        x = self.relu(self.bn1(self.conv1(x)))  # (B, w, H, W) cifar | (B, w, H/2, W/2) imagenet
        x = self.maxpool(x)  # (B, w, H/s, W/s)
        x = self.layer1(x)  # (B, w*E, H/s, W/s)
        x = self.layer2(x)  # (B, 2w*E, H/2s, W/2s)
        x = self.layer3(x)  # (B, 4w*E, H/4s, W/4s): the last stage of the CIFAR networks
        if self.num_stages == 4:
            x = self.layer4(x)  # (B, 8w*E, H/8s, W/8s)
        x = self.avgpool(x)  # (B, num_features, 1, 1)
        return torch.flatten(x, 1)  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits), (B, num_classes), for images (B, in_channels, H, W)."""
        return self.fc(self.forward_features(x))  # (B, num_classes)

    def stage_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output of every stage, in order, for the shape walk-through of notebook 04.

        Computes the same thing as ``forward`` but keeps each intermediate tensor.

        Args:
            x: images, (B, in_channels, H, W).

        Returns:
            ``{"stem", "layer1", "layer2", "layer3", "layer4", "pool", "fc"}`` -> tensor, in the
            order the input flows through them (no ``"layer4"`` with three stages); ``"pool"`` is
            ``forward_features(x)`` and ``"fc"`` is ``forward(x)``.
        """
        outputs: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H/s, W/s)
        outputs["stem"] = x
        for name, stage in self.stages().items():
            x = stage(x)  # C doubles and H, W halve at each stage after layer1
            outputs[name] = x
        x = torch.flatten(self.avgpool(x), 1)  # (B, num_features)
        outputs["pool"] = x
        outputs["fc"] = self.fc(x)  # (B, num_classes)
        return outputs


def resnet(depth: int, **kwargs: Any) -> ResNet:
    """Build the ResNet of a given depth from ``RESNET_SPECS``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        **kwargs: passed to ``ResNet`` (``num_classes``, ``stem``, ``width``, ...).

    Returns:
        The network, freshly initialised.

    Explained in notebook 04 (ResNet-18).
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
    block, layers = RESNET_SPECS[depth]
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18: ``BasicBlock`` x (2, 2, 2, 2). The course's model (notebook 04)."""
    return resnet(18, **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34: ``BasicBlock`` x (3, 4, 6, 3). See ``resnet`` for the arguments."""
    return resnet(34, **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50: ``Bottleneck`` x (3, 4, 6, 3). See ``resnet`` for the arguments."""
    return resnet(50, **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101: ``Bottleneck`` x (3, 4, 23, 3). See ``resnet`` for the arguments."""
    return resnet(101, **kwargs)


def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152: ``Bottleneck`` x (3, 8, 36, 3). See ``resnet`` for the arguments."""
    return resnet(152, **kwargs)


def plain_resnet(depth: int = 18, **kwargs: Any) -> ResNet:
    """``resnet(depth, **kwargs)`` with every skip connection removed (no additions, no
    ``downsample``): the control of He et al. (Fig. 1 and 4), where deeper plain networks train
    *worse*. Explained in notebook 03 (residual blocks)."""
    return resnet(depth, shortcut=False, **kwargs)


# --------------------------------------------------------------------------------------------------
# The paper's own CIFAR-10 networks (He et al. 2016, Sec. 4.2)
# --------------------------------------------------------------------------------------------------

#: Channels of the first stage of the paper's CIFAR networks: the three stages have 16, 32 and 64
#: channels, on feature maps of 32, 16 and 8 pixels.
CIFAR_WIDTH = 16


def cifar_resnet(depth: int = 20, shortcut: str = "A", **kwargs: Any) -> ResNet:
    """The ResNets of the paper's CIFAR-10 experiments: ResNet-20, 32, 44, 56 and 110.

    A 3x3 conv with 16 channels, three stages of ``n`` BasicBlocks with 16, 32 and 64 channels,
    global average pooling and a linear head: ``6n + 2`` weighted layers. ResNet-20 has 0.27 M
    parameters, 40 times fewer than the "CIFAR ResNet-18" the rest of the course trains, which
    is the ImageNet network with a 3x3 stem (a widely used adaptation, not a network of the paper).

    Args:
        depth: ``6n + 2``: 20, 32, 44, 56, 110, ...
        shortcut: ``"A"`` (zero-padding identity, the paper's CIFAR choice), ``"B"`` (projection
            where the shape changes) or ``"none"`` (the plain network).
        **kwargs: passed to ``ResNet`` (``num_classes``, ...).

    Returns:
        ``ResNet(BasicBlock, (n, n, n), width=16, shortcut=shortcut)``, freshly initialised.

    Described in notebook 04 (the stems); trained in the degradation experiment of notebook 07.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth!r}")
    n = (depth - 2) // 6  # blocks per stage: 3 stages x n blocks x 2 convs, + the stem and the fc
    return ResNet(BasicBlock, (n, n, n), width=CIFAR_WIDTH, shortcut=shortcut, **kwargs)


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from groups of ``ghost_batch`` images, not the
    whole batch (ghost BatchNorm: Hoffer, Hubara and Soudry, 2017).

    Each group is normalized with its own mean and variance, and updates the running statistics as
    a batch of its own would (so with ``momentum`` once per group). Smaller groups make the
    statistics noisier, a regularizer that Page ("How to train your ResNet", 2018) found worth one
    or two epochs of ResNet-9's training to 94%. In evaluation it is an ordinary ``BatchNorm2d``,
    and its state dict is one too, so checkpoints load either way. Measured in notebook 07.
    """

    def __init__(self, num_features: int, ghost_batch: int, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        if ghost_batch < 2:
            raise ValueError(f"ghost_batch must be at least 2 images, got {ghost_batch}")
        self.ghost_batch = ghost_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = len(x) // self.ghost_batch
        if not self.training or groups <= 1:
            return super().forward(x)
        normalize = super().forward  # BatchNorm2d's, on each group in turn
        # torch.chunk: `groups` nearly equal groups, none smaller than ghost_batch
        return torch.cat([normalize(group) for group in x.chunk(groups)])


def replace_batchnorm(
    model: nn.Module,
    make: Callable[[nn.BatchNorm2d], nn.Module],
    which: Callable[[nn.BatchNorm2d], bool] = lambda layer: type(layer) is nn.BatchNorm2d,
) -> nn.Module:
    """Replace each BatchNorm layer of ``model`` by ``make(layer)``, in place; returns ``model``.

    ``which`` picks the layers to replace among the ``nn.BatchNorm2d`` (subclasses included)
    anywhere in the model; by default only plain ``nn.BatchNorm2d``, so a layer already replaced
    stays as it is. The new layer takes the old one's place and name, so if ``make`` returns a
    BatchNorm, the ``state_dict`` keeps its keys. Used for ghost BatchNorm (here), synchronised
    BatchNorm (``distributed.sync_batchnorm``) and frozen BatchNorm (``transfer.freeze_backbone``).
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d) and which(child):
                setattr(module, name, make(child))
    return model


def scale_conv_init(model: nn.Module, scale: float) -> nn.Module:
    """Multiply the weights of every convolution of ``model`` by ``scale``, in place; returns it.

    In a ResNet, BatchNorm follows every convolution and divides out the scale of its output, so
    the network computes the same function (up to BatchNorm's ``eps``). Training does change: the
    gradient of such a weight shrinks as the weight grows (by ``1/scale``), so one SGD step turns
    it by ``1/scale**2`` times as much, relative to its size (van Laarhoven 2017; Hoffer et al.
    2018, "Norm matters"). A smaller start is a larger effective learning rate for these weights
    early in training, until weight decay and the updates settle their size. Notebook 07
    measures it on the ``cpu`` preset.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(scale)
    return model


def use_ghost_batchnorm(model: nn.Module, ghost_batch: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` by a ``GhostBatchNorm2d`` with the same
    parameters and running statistics (copies; in place; returns ``model``)."""

    def ghost(bn: nn.BatchNorm2d) -> GhostBatchNorm2d:
        layer = GhostBatchNorm2d(bn.num_features, ghost_batch, eps=bn.eps, momentum=bn.momentum)
        layer.to(bn.weight.device).load_state_dict(bn.state_dict())
        layer.weight.requires_grad_(bn.weight.requires_grad)
        layer.bias.requires_grad_(bn.bias.requires_grad)
        return layer.train(bn.training)

    return replace_batchnorm(model, ghost)


@torch.no_grad()
def whitening_init(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set ``conv``'s filters to the principal components of the patches it sees in ``images``.

    The covariance of all ``k x k`` patches of ``images`` (normalized, ``(N, C, H, W)``) has
    eigenvectors ordered by how much of the images' variance they carry: low spatial frequencies
    first. Each of the top ``n`` becomes a filter, scaled by one over the square root of its
    eigenvalue (so every output has unit variance: the patches are *whitened*), and so does its
    negative (so that a ReLU after it loses neither sign). ``n`` is half the filters, or the patch
    size ``C * k * k`` if smaller; the other filters keep their random start. The network then
    starts from features that separate images well, instead of from noise (Coates and Ng 2011;
    airbench, Jordan 2024, uses it for its first layer). Measured in notebook 07.
    """
    c, kh, kw = conv.in_channels, *conv.kernel_size
    covariance, count = torch.zeros(c * kh * kw, c * kh * kw, dtype=torch.float64), 0
    for chunk in images.split(500):  # 500 images at a time: all the patches at once take GBs
        patches = F.unfold(chunk.double().cpu(), (kh, kw))  # (n, C*kh*kw, patches per image)
        patches = patches.transpose(1, 2).reshape(-1, c * kh * kw)  # (n * L, C*kh*kw)
        covariance += patches.T @ patches
        count += len(patches)
    covariance /= count  # (C*kh*kw, C*kh*kw); the inputs are normalized, so about centred
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    n = min(conv.out_channels // 2, len(eigenvalues))
    top = eigenvectors[:, -n:].flip(1) / torch.sqrt(eigenvalues[-n:].flip(0) + eps)  # (D, n)
    filters = top.T.reshape(n, c, kh, kw).to(conv.weight.dtype).to(conv.weight.device)
    conv.weight[: 2 * n] = torch.cat([filters, -filters])


def count_parameters(module: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of single numbers in ``module``'s parameters (11,173,962 for ``resnet18()``); with
    ``trainable_only``, only those with ``requires_grad`` (what the optimizer updates). Notebook 04.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameters_per_stage(model: ResNet, *, trainable_only: bool = True) -> dict[str, int]:
    """Where a ResNet's parameters live: the stem, each stage and the head.

    Shows that the deep, wide stages hold almost all of them (layer4 alone about 75% of
    ResNet-18) while the stem and the head are tiny.

    Args:
        model: a ``ResNet``.
        trainable_only: as in ``count_parameters``.

    Returns:
        ``{"stem", "layer1", "layer2", "layer3", "layer4", "fc"}`` -> count (no ``"layer4"`` with
        three stages); the values add up to ``count_parameters(model, trainable_only)``.

    Explained in notebook 04 (ResNet-18).
    """
    stages = {
        "stem": [model.conv1, model.bn1],
        **{name: [stage] for name, stage in model.stages().items()},  # layer1, ..., layer4
        "fc": [model.fc],
    }
    return {
        name: sum(count_parameters(m, trainable_only=trainable_only) for m in modules)
        for name, modules in stages.items()
    }


def gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The gradient norm of every conv weight after one cross-entropy backward pass.

    Comparing a residual and a plain network of the same depth (``resnet(34, width=16)`` vs
    ``plain_resnet(34, width=16)``, or deeper stacks such as ``ResNet(BasicBlock, (8, 8, 8, 8),
    shortcut=False)``) shows how the skips keep the gradient steady from the last layer to the
    first. The model's existing gradients are cleared first; its mode (train/eval) is left as is.

    Args:
        model: a classifier, e.g. a ``ResNet``.
        x: a batch of images, (B, C, H, W).
        y: their class labels, (B,).

    Returns:
        ``{conv name: L2 norm of its weight's gradient}``, ordered from input to output.

    Explained in notebook 03 (residual blocks).
    """
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {
        name: module.weight.grad.norm().item()
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.weight.grad is not None
    }


# --------------------------------------------------------------------------------------------------
# Describing a network, and laying it out in memory
# --------------------------------------------------------------------------------------------------


def model_architecture(model: nn.Module) -> dict[str, Any]:
    """A short, comparable description of a network, stored in checkpoints.

    For a course ResNet: ``{"name": "resnet18", "width": 16, "stem": "cifar", "num_classes": 10}``;
    for one of the paper's CIFAR networks: ``{"name": "resnet20_cifar", "shortcut": "A", ...}``;
    for another module: its class name and parameter count.
    """
    if not isinstance(model, ResNet):
        total = count_parameters(model, trainable_only=False)
        return {"name": type(model).__name__, "parameters": total}
    block = type(model.layer1[0])
    layers = tuple(len(stage) for stage in model.stages().values())
    plain = model.shortcut_type == "none"
    if _is_cifar_resnet(model):
        return {
            "name": f"{'plain' if plain else 'resnet'}{2 * sum(layers) + 2}_cifar",  # 6n + 2
            "shortcut": model.shortcut_type,
            "num_classes": model.fc.out_features,
        }
    depth = next(
        (d for d, (b, n) in RESNET_SPECS.items() if b is block and tuple(n) == layers), None
    )
    name = f"resnet{depth}" if depth else f"resnet({block.__name__}, {list(layers)})"
    arch = {
        "name": f"plain_{name}" if plain else name,
        "width": model.width,
        "stem": model.stem,
        "num_classes": model.fc.out_features,
    }
    if model.shortcut_type == "A":  # the zero-padding shortcut, outside the CIFAR networks
        arch["shortcut"] = "A"
    if model.stage_multiples != DOUBLING[: model.num_stages]:  # only where it differs, so that
        arch["stage_multiples"] = list(model.stage_multiples)  # older checkpoints still match
    return arch


def _is_cifar_resnet(model: ResNet) -> bool:
    """Whether ``model`` is shaped as ``cifar_resnet`` builds it: a 3x3 stem for RGB images, then
    three stages of ``n`` BasicBlocks each, at width 16."""
    layers = {len(stage) for stage in model.stages().values()}
    return (
        model.num_stages == 3
        and len(layers) == 1
        and type(model.layer1[0]) is BasicBlock
        and model.width == CIFAR_WIDTH
        and model.stage_multiples == DOUBLING[:3]
        and model.stem == "cifar"
        and model.conv1.in_channels == 3
    )


def describe_architecture(arch: dict[str, Any] | None) -> str:
    """``{"name": "resnet18", "width": 16, ...}`` -> ``"resnet18(width=16, ...)"``."""
    if not arch:
        return "an unknown architecture"
    rest = ", ".join(f"{k}={v}" for k, v in arch.items() if k != "name")
    return f"{arch.get('name', '?')}({rest})"


def _has_narrow_strided_1x1(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.stride != (1, 1)
        and m.in_channels < MIN_CHANNELS_LAST_1X1_STRIDED
        for m in model.modules()
    )


def memory_format_for(
    model: nn.Module, device: torch.device | str, *, channels_last: bool = True
) -> torch.memory_format:
    """The memory layout to run ``model`` in on ``device``: NHWC when asked for and safe.

    ``channels_last`` (NHWC) makes convolutions faster on CPUs and on tensor cores. Every place in
    the course that moves a model or a batch to its device asks this function, so the one exception
    below is decided here and nowhere else.

    The exception: PyTorch 2.14's oneDNN (3.12) on CPUs with AVX2 but no AVX-512 (most laptops)
    computes the weight gradient of a *strided 1x1 convolution with fewer than 8 input channels* in
    channels_last with its ``jit_1x1:avx2`` kernel, which corrupts memory: the process crashes
    ("double free or corruption", a segfault) or hangs. ``resnet18(width=4)`` has such a
    convolution (the projection shortcut of ``layer2``). Such a network runs in the default
    (NCHW) layout on the CPU, where that kernel is not used. ``tests/test_models.py`` runs the
    reproduction in a subprocess.

    Args:
        model: the network (its convolutions decide).
        device: where it runs.
        channels_last: whether NHWC is wanted.

    Returns:
        ``torch.channels_last`` or ``torch.contiguous_format``: pass it to ``model.to`` and to
        ``images.to`` alike.

    Explained in notebook 05 (training).
    """
    if not channels_last:
        return torch.contiguous_format
    if torch.device(device).type == "cpu" and _has_narrow_strided_1x1(model):
        return torch.contiguous_format
    return torch.channels_last


def to_device(
    model: nn.Module, device: torch.device | str, *, channels_last: bool = True
) -> torch.memory_format:
    """Move ``model`` to ``device`` in the layout :func:`memory_format_for` picks, and return it.

    The training and evaluation loops call this first and give every batch the returned layout, so
    the model and its inputs always agree. Moving a model that is already in place costs nothing.
    """
    memory_format = memory_format_for(model, device, channels_last=channels_last)
    model.to(device, memory_format=memory_format)
    return memory_format
