"""Transfer learning: start from trained weights instead of random ones.

Two kinds of trained weights reach a course ResNet here:

- **checkpoints of the course** (written by :func:`course_utils.training.fit`): the ones shipped in
  ``checkpoints/``, loaded by name (``load_pretrained("cpu")``) after their sha256 is checked
  against :data:`SHIPPED_CHECKPOINTS`; larger ones published at a URL with their sha256, cached
  and checked by torch hub; or any local file;
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

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.checkpoints import (
    ArchitectureMismatchError,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_dict_differences,  # the one way the course compares state dicts
)
from course_utils.config import PROJECT_ROOT, REPOSITORY
from course_utils.data import CIFAR10Arrays
from course_utils.models import describe_architecture, model_architecture


class Shipped(NamedTuple):
    """A checkpoint that ships with the course: where it lies under ``checkpoints/``, and the
    sha256 of its bytes (``sha256sum checkpoints/<path>`` prints it)."""

    path: str
    sha256: str


#: The checkpoints shipped in ``checkpoints/``, by name. One line per checkpoint; retraining one
#: changes its bytes, so its sha256 here must be updated in the same commit.
SHIPPED_CHECKPOINTS: dict[str, Shipped] = {
    # The `cpu` preset, seed 0: its command and measured metrics lie beside it in checkpoints/cpu/.
    "cpu": Shipped(
        "cpu/best.pt", "4f969cda4ad85e5798b00a8ba407fa7e3afc2743b6b61bc9660a6be9bdc9bfc2"
    ),
}
#: Where shipped checkpoints lie in a checkout of the course.
CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
#: Where a shipped checkpoint is downloaded from when the course was installed without its
#: ``checkpoints/`` folder (``pip install`` on Colab): the same file in the course's repository.
SHIPPED_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/main/checkpoints"

#: The image size torchvision's ImageNet weights were trained and evaluated at (224x224 crops).
IMAGENET_SIZE = 224

#: CIFAR-10 falls into two groups; notebook 08 pretrains on one and transfers to the other.
ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")
#: The name of the final linear layer (the "head") in every course network, as in torchvision.
HEAD = "fc"
#: What ``TrainConfig.init`` says for random weights, and for torchvision's ImageNet weights.
SCRATCH, IMAGENET = "scratch", "imagenet"


class ChecksumError(CheckpointError):
    """A file's sha256 is not the one it should have: it was changed, damaged or replaced."""


class PretrainedNotFoundError(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable (no internet)."""


# --------------------------------------------------------------------------------------------------
# Finding and checking pretrained files
# --------------------------------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (what ``sha256sum`` prints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, fix: str) -> None:
    """Raise :class:`ChecksumError` unless ``path``'s sha256 starts with ``expected``.

    Args:
        path: the file.
        expected: its sha256 (all 64 hex digits, or a prefix of at least 8, as torch hub uses).
        fix: what to do about a mismatch, for the message.
    """
    expected = expected.lower()
    if len(expected) < 8:
        raise ValueError(f"a sha256 needs at least 8 hex digits, got {expected!r}")
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise ChecksumError(
            f"{path} has sha256 {actual}, but {expected} was expected: the file was changed, "
            f"damaged or replaced since it was published. {fix}"
        )


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "ftp", "file")


def _cache_path(url: str, sha256: str) -> Path:
    """Where torch hub keeps a downloaded file: ``<hub dir>/checkpoints/<name>``, the name carrying
    the start of its sha256 (torch hub's convention, as in ``resnet18-f37072fd.pth``)."""
    name = Path(urlparse(url).path).name or "checkpoint.pt"
    if sha256[:8].lower() not in name:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem}-{sha256[:8].lower()}.{suffix}" if dot else f"{name}-{sha256[:8].lower()}"
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _download(url: str, sha256: str, progress: bool = True) -> Path:
    """The file at ``url``, downloaded once into torch hub's cache and checked against
    ``sha256``."""
    cached = _cache_path(url, sha256)
    fix = f"Delete {cached} and run again to download it anew, or check the sha256 you gave."
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch hub writes to a temporary file and checks the hash before renaming it
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256, progress=progress)
        except OSError as exc:  # no network, DNS failure, HTTP error, ...
            raise PretrainedNotFoundError(
                f"Could not download {url} ({exc}). Without internet: download that file on a "
                f"machine that has it and put it at {cached} (torch hub's cache; the TORCH_HOME "
                f"environment variable moves it), or give the file's local path instead of the URL."
            ) from exc
        except RuntimeError as exc:  # torch hub's "invalid hash value"
            raise ChecksumError(
                f"The download of {url} does not have sha256 {sha256} ({exc})."
            ) from exc
    check_sha256(cached, sha256, fix)
    return cached


def pretrained_file(source: str | os.PathLike[str], sha256: str | None = None) -> Path:
    """The local file of a pretrained checkpoint, its sha256 checked.

    Args:
        source: the name of a shipped checkpoint (a key of :data:`SHIPPED_CHECKPOINTS`), a URL
            (downloaded once into torch hub's cache), or a local path.
        sha256: the file's expected sha256; required for a URL, optional for a path, and for a
            shipped name taken from the table.

    Raises:
        ChecksumError: the file's sha256 is not the expected one.
        PretrainedNotFoundError: a URL (or a shipped file missing from this installation) could
            not be downloaded; the message says where to put the file by hand.
        FileNotFoundError: ``source`` is neither a shipped name, a URL nor a file.

    Explained in notebook 08.
    """
    text = os.fspath(source)
    if text in SHIPPED_CHECKPOINTS:
        shipped = SHIPPED_CHECKPOINTS[text]
        path = CHECKPOINTS_DIR / shipped.path
        if not path.is_file():  # installed without the checkpoints/ folder (as on Colab)
            return _download(f"{SHIPPED_URL}/{shipped.path}", shipped.sha256)
        check_sha256(
            path,
            sha256 or shipped.sha256,
            f"Restore the shipped file (git checkout -- checkpoints/{shipped.path}). If you "
            f"retrained it on purpose, put its new sha256 (sha256sum checkpoints/{shipped.path}) "
            f"into SHIPPED_CHECKPOINTS in course_utils/transfer.py.",
        )
        return path
    if _is_url(text):
        if sha256 is None:
            raise ValueError(
                f"A URL needs the sha256 of its file, so that a changed or damaged download is "
                f"caught: load_pretrained({text!r}, sha256=...) (sha256sum FILE prints it)."
            )
        return _download(text, sha256)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"No shipped checkpoint named {text!r} (shipped: {sorted(SHIPPED_CHECKPOINTS) or 'none'}) "
            f"and no file at {path}. Give a shipped name, a checkpoint file (such as "
            f"runs/<run>/best.pt), or a URL with its sha256."
        )
    if sha256 is not None:
        check_sha256(path, sha256, "Use the file that was published with this sha256.")
    return path


def load_pretrained(
    source: str | os.PathLike[str],
    sha256: str | None = None,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a pretrained checkpoint by shipped name, URL or path: sha256 first, then safely.

    The file is found and checked by :func:`pretrained_file`, then read by
    :func:`course_utils.checkpoints.load_checkpoint` (``weights_only``: it cannot run code).

    Args:
        source: a shipped name such as ``"cpu"``, a URL, or a local path.
        sha256: the expected sha256 (required for a URL).
        model: load the weights into it, after checking that it is the network they came from.
        map_location: where to put the tensors.

    Returns:
        The checkpoint dictionary (weights, configuration, classes, normalization statistics).

    Example: the network a checkpoint describes, with its weights::

        state = load_pretrained("cpu")
        model = build_model(TrainConfig.from_dict(state["config"]), len(state["classes"]))
        model.load_state_dict(state["model"])

    Explained in notebook 08; notebook 06 evaluates the shipped ``cpu`` checkpoint with it.
    """
    return load_checkpoint(pretrained_file(source, sha256), model, map_location=map_location)


#: What a shipped checkpoint drops: the state that only resuming a run needs (``last.pt``'s).
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "ema", "early_stopping", "history", "rng")
#: The files of a run folder that ship beside the checkpoint.
SHIPPED_FILES = ("metrics.json", "history.csv")


def ship_checkpoint(
    run_dir: str | os.PathLike[str], name: str, checkpoints_dir: Path = CHECKPOINTS_DIR
) -> Shipped:
    """Copy a finished run's best checkpoint into ``checkpoints/<name>/``, for instructors.

    Keeps the weights, in float32, and the metadata that describes them, without the state that
    only resuming needs (:data:`TRAINING_STATE`); beside them the run's ``metrics.json`` and
    ``history.csv``, and in a file named ``command`` the command that trained it. Returns the line
    to put into :data:`SHIPPED_CHECKPOINTS` (``python -m course_utils ship RUN --name NAME``
    prints it).

    Raises:
        FileNotFoundError: the run has not finished (no ``best.pt`` or ``metrics.json``).
    """
    run = Path(run_dir)
    missing = [f for f in ("best.pt", *SHIPPED_FILES) if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{run} lacks {', '.join(missing)}: ship a run that has finished (its metrics.json "
            f"is written after the test)."
        )
    state = load_checkpoint(run / "best.pt")
    state = {key: value for key, value in state.items() if key not in TRAINING_STATE}
    state["model"] = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state["model"].items()
    }
    target = Path(checkpoints_dir) / name
    save_checkpoint(target / "best.pt", **state)
    for file in SHIPPED_FILES:
        (target / file).write_bytes((run / file).read_bytes())
    metrics = json.loads((run / "metrics.json").read_text())
    command = metrics.get("command", "(not recorded: see config in metrics.json)")
    (target / "command").write_text(command + "\n")
    return Shipped(f"{name}/best.pt", sha256_of(target / "best.pt"))


def imagenet_state_dict(depth: int = 18, progress: bool = True) -> dict[str, torch.Tensor]:
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
            f"work on the course's networks (ResNet, CifarResNet) and torchvision's ResNets."
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
    head = head_of(model)
    for module in list(model.modules()):
        if module is head:
            continue
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
                frozen = FrozenBatchNorm2d(
                    child.num_features, child.eps, child.momentum, child.affine,
                    child.track_running_stats,
                )  # fmt: skip
                state = child.state_dict()
                frozen.load_state_dict(state)
                setattr(module, name, frozen.to(next(iter(state.values())).device))
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


# --------------------------------------------------------------------------------------------------
# Data for the transfer experiments
# --------------------------------------------------------------------------------------------------


def select_classes(data: CIFAR10Arrays, classes: Sequence[str]) -> CIFAR10Arrays:
    """The images of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in that order.

    ``select_classes(train, VEHICLES)`` is a four-class dataset: airplane 0, automobile 1, ship 2,
    truck 3. Explained in notebook 08.
    """
    unknown = [c for c in classes if c not in data.classes]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; the data has {list(data.classes)}")
    old = [data.classes.index(c) for c in classes]
    keep = np.flatnonzero(np.isin(data.labels, old))
    subset = data.subset(keep)
    relabel = np.full(len(data.classes), -1, dtype=np.int64)
    relabel[old] = np.arange(len(classes))
    subset.labels = relabel[subset.labels]
    subset.classes = tuple(classes)
    return subset


class Resized:
    """The batches of ``loader``, resized to ``size`` x ``size`` pixels (bilinear).

    ImageNet networks were trained on 224x224 images; their stem shrinks an image 4x, so a 32x32
    CIFAR-10 image is only 8x8 after it. Upsampling the batches (after normalization, which
    commutes with interpolation) trades time for accuracy. Explained in notebook 08.
    """

    def __init__(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int) -> None:
        self.loader, self.size = loader, size

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:  # (B, 3, 32, 32)
            if images.shape[-1] != self.size:
                images = F.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                       align_corners=False)  # (B, 3, size, size)  # fmt: skip
            yield images, labels
