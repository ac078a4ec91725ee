"""Transfer learning: start from trained weights instead of random ones.

Two kinds of trained weights reach a course ResNet here:

- **checkpoints of the course** (written by :func:`course_utils.training.fit`): the shipped ones,
  those published at a URL with their sha256, or any local file, found and checked by
  :func:`course_utils.checkpoints.load_pretrained` (``TrainConfig.init`` names one);
- **torchvision's ImageNet weights** (:func:`imagenet_state_dict`): the course ResNet with the
  ImageNet stem has torchvision's layer names, so they load as they are.

Then three ways to use them on a new task, all keeping the state_dict keys of the plain network:
replace the head (:func:`replace_head`, :func:`load_backbone`), train the head alone on a frozen
backbone (:func:`freeze_backbone`, a *linear probe*), or fine-tune everything with a smaller
learning rate for the backbone (:func:`parameter_groups`). ``TrainConfig``'s ``init``,
``freeze_backbone`` and ``backbone_lr`` fields, and the matching command-line flags, use them.

Explained in notebook 08 (transfer learning).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from course_utils.checkpoints import (
    ArchitectureMismatchError,
    CheckpointError,
    PretrainedNotFoundError,
    load_pretrained,
    state_dict_differences,  # the one way the course compares state dicts
)
from course_utils.models import describe_architecture, model_architecture, replace_batchnorm

#: The image size torchvision's ImageNet weights were trained and evaluated at (224x224 crops).
IMAGENET_SIZE = 224

#: CIFAR-10 falls into two groups; notebook 08 pretrains on one and transfers to the other.
ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")
#: The name of the final linear layer (the "head") in every course network, as in torchvision.
HEAD = "fc"
#: What ``TrainConfig.init`` says for random weights, and for torchvision's ImageNet weights.
SCRATCH, IMAGENET = "scratch", "imagenet"


def imagenet_state_dict(depth: int = 18, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (``ResNet{depth}_Weights.IMAGENET1K_V1``) for a ResNet.

    Downloaded once by torch hub into its cache (about 45 MB for ResNet-18) and hash-checked; later
    calls read the cached file, offline too. Their keys are the course ResNet's with
    ``stem="imagenet"`` and ``width=64``; the head has ImageNet's 1,000 classes.

    Raises:
        PretrainedNotFoundError: not cached and not downloadable; the message names the file to
            put into torch hub's cache by hand.

    Explained in notebook 08.
    """
    from torchvision import models  # only here: the rest of the module does not need it

    weights = getattr(models, f"ResNet{depth}_Weights").IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except OSError as exc:
        raise PretrainedNotFoundError(
            f"Could not download torchvision's ImageNet weights for ResNet-{depth} ({exc}). "
            f"With internet (Colab, for example) they download by themselves. Without it: "
            f"download {weights.url} on a machine that has internet and put the file at {cached} "
            f"(torch hub's cache; the TORCH_HOME environment variable moves it), then run again."
        ) from exc
    except RuntimeError as exc:  # a damaged cached file, or a download with the wrong hash
        raise CheckpointError(
            f"torchvision's ImageNet weights at {cached} are unreadable or damaged ({exc}). Delete "
            f"that file and run again to download it anew."
        ) from exc


# --------------------------------------------------------------------------------------------------
# A new head on trained weights
# --------------------------------------------------------------------------------------------------


def head_of(model: nn.Module) -> nn.Linear:
    """The final linear layer, ``model.fc``, that maps features to class scores."""
    head = getattr(model, HEAD, None)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} has no linear head named {HEAD!r}: the transfer functions "
            f"work on the course's ResNets (the paper's CIFAR nets too) and torchvision's."
        )
    return head


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Give ``model`` a new, freshly initialised head with ``num_classes`` outputs.

    The features stay; only the layer that turns them into class scores is new, because the new
    task has other classes. Returns the new head (on the old one's device and dtype).
    """
    old = head_of(model)
    new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    setattr(model, HEAD, new)
    return new


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(HEAD + ".")}


def _without_head(architecture: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in architecture.items() if k != "num_classes"}


def load_backbone(
    model: nn.Module, weights: dict[str, Any], source: str = "the pretrained weights"
) -> None:
    """Copy every weight but the head's into ``model``; its own (new) head stays as it is.

    Args:
        model: the network to initialise; its head may have any number of classes.
        weights: a course checkpoint (its ``"model"`` entry is used, and its ``"architecture"``
            is checked) or a bare state dict such as torchvision's.
        source: where the weights came from, for the messages.

    Raises:
        ArchitectureMismatchError: the backbones differ (another width, depth or stem); the
            message says how.

    Explained in notebook 08.
    """
    state = weights.get("model", weights)
    saved, current = weights.get("architecture"), model_architecture(model)
    if saved is not None and _without_head(saved) != _without_head(current):
        raise ArchitectureMismatchError(
            f"{source} holds {describe_architecture(saved)} but the model is "
            f"{describe_architecture(current)}: build the model with the same depth, width and "
            f"stem (only the number of classes may differ)."
        )
    differences = state_dict_differences(_backbone(state), _backbone(model.state_dict()))
    if differences:
        raise ArchitectureMismatchError(
            f"{source} does not fit {describe_architecture(current)}: {differences}. For "
            f"torchvision's ImageNet weights, build ResNet-{{18, 34, ...}} with stem='imagenet' "
            f"and width=64."
        )
    model.load_state_dict(_backbone(state), strict=False)  # the keys agree, except the head's


def init_from(model: nn.Module, init: str) -> None:
    """Load the backbone ``TrainConfig.init`` names into ``model`` (nothing for ``"scratch"``).

    Args:
        model: a freshly built network.
        init: ``"scratch"``, ``"imagenet"`` (torchvision's weights for the model's depth), a shipped
            name, a checkpoint path, or a URL followed by ``#sha256=<hex>``.

    Explained in notebook 08.
    """
    if init == SCRATCH:
        return
    if init == IMAGENET:
        name = model_architecture(model)["name"]  # "resnet18", ...
        if not name.removeprefix("resnet").isdigit():
            raise ValueError(f"ImageNet weights exist for the ResNets 18 to 152, not for {name}")
        depth = int(name.removeprefix("resnet"))
        load_backbone(model, imagenet_state_dict(depth), f"torchvision's ImageNet ResNet-{depth}")
        return
    source, _, sha256 = init.partition("#sha256=")
    load_backbone(model, load_pretrained(source, sha256 or None), source)


# --------------------------------------------------------------------------------------------------
# Linear probe: a frozen backbone
# --------------------------------------------------------------------------------------------------


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that always stays in evaluation mode.

    It normalizes with its stored running statistics and never updates them, even when the model
    around it is put in training mode (``train_one_epoch`` calls ``model.train()``). It has the
    same parameters and buffers as ``nn.BatchNorm2d``, so state_dict keys do not change (unlike
    ``torchvision.ops.FrozenBatchNorm2d``, which drops ``num_batches_tracked``).
    """

    @classmethod
    def copy_of(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen layer with ``bn``'s settings, a copy of its parameters and statistics."""
        frozen = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        state = bn.state_dict()
        frozen.load_state_dict(state)
        return frozen.to(next(iter(state.values())).device)

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze everything but the head, for a linear probe; returns ``model``.

    Two things are needed, and a plain ``requires_grad_(False)`` does only the first:

    1. no gradients for the backbone's weights: they get no updates, and the backward pass stops
       at the head, which makes a step about three times cheaper;
    2. BatchNorm in evaluation mode: in training mode it would normalize with each batch's
       statistics and overwrite its running statistics with the new data's, changing the
       features the probe is meant to measure. Every BatchNorm of the backbone becomes a
       :class:`FrozenBatchNorm2d`.

    Call it before building the optimizer (the BatchNorm modules are new objects).

    Explained in notebook 08.
    """
    head = head_of(model)  # a Linear layer: no BatchNorm in it
    replace_batchnorm(
        model, FrozenBatchNorm2d.copy_of, which=lambda bn: not isinstance(bn, FrozenBatchNorm2d)
    )
    head_parameters = {id(p) for p in head.parameters()}
    for parameter in model.parameters():
        if id(parameter) not in head_parameters:
            parameter.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------------
# Fine-tuning: a smaller learning rate for the backbone
# --------------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, lr: float, backbone_lr: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr``.

    A pretrained backbone is already good, so fine-tuning moves it gently (``backbone_lr`` of 0.1,
    say) while the new head, which starts from random weights, learns at the full rate. Frozen
    parameters (``requires_grad`` off) are left out. With ``backbone_lr == 1`` there is one group
    of every trainable parameter, in the model's order, as ``model.parameters()`` would give.

    Returns:
        A list for ``torch.optim.SGD(groups, ...)``: each group a dict with ``params``, ``lr``
        and a ``name``; the head's group first, so ``param_groups[0]["lr"]`` is ``lr``.

    Explained in notebook 08.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if backbone_lr == 1.0:
        return [{"params": trainable, "lr": lr, "name": "trainable"}]
    head_ids = {id(p) for p in head_of(model).parameters()}
    head = [p for p in trainable if id(p) in head_ids]
    backbone = [p for p in trainable if id(p) not in head_ids]
    groups = [{"params": head, "lr": lr, "name": "head"}]
    if backbone:  # none when the backbone is frozen
        groups.append({"params": backbone, "lr": lr * backbone_lr, "name": "backbone"})
    return groups


def learning_rates(
    groups: torch.optim.Optimizer | Iterable[dict[str, Any]], model: nn.Module
) -> dict[str, float]:
    """The learning rate each of ``model``'s parameters gets, by parameter name.

    Reads an optimizer's ``param_groups`` or a list of groups as given to one; a parameter in no
    group (a frozen one, say) is left out, and one in two groups is an error, as in PyTorch.
    Explained in notebook 08.
    """
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    rates: dict[str, float] = {}
    for group in groups:
        for parameter in group["params"]:
            name = names.get(id(parameter), "a parameter that is not the model's")
            if name in rates:
                raise ValueError(f"{name} is in two parameter groups: put it in one only")
            rates[name] = float(group["lr"])
    return rates
