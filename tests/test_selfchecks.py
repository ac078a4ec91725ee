"""Every exercise's self-check accepts the solution and rejects the plausible wrong answers, each
with a message that names the mistake.

The right answers are the solution notebooks' own exercise cells; the wrong ones are written here,
one list per exercise. A rejected answer must print "[name] not right yet: ..." with the phrase
given beside it, and the check must return the reference result so that the notebook goes on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jupytext
import numpy as np
import pytest
import torch
from sklearn import metrics
from torch import nn

from course_utils import exercises as E
from course_utils import release as R
from course_utils.config import PROJECT_ROOT
from course_utils.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    compute_mean_std,
    denormalize,
    mean_of_per_image_std,
    train_val_split,
)
from course_utils.evaluation import confusion_matrix as course_confusion_matrix
from course_utils.exercises.notebook01 import _probe_images
from course_utils.exercises.notebook05 import _epoch, _flat_state, _rule
from course_utils.models import BasicBlock, Bottleneck, ResNet, conv1x1, conv3x3
from course_utils.training import EarlyStopping, train_one_epoch

_SOLUTIONS: dict[str, dict[str, Any]] = {}


def solution(notebook: str, name: str) -> Any:
    """The function or class `name` as the solution notebook `notebook` defines it."""
    if notebook not in _SOLUTIONS:
        namespace: dict[str, Any] = {
            "np": np,
            "torch": torch,
            "nn": nn,
            "F": torch.nn.functional,
            "Sequence": Sequence,
            "BasicBlock": BasicBlock,
            "Bottleneck": Bottleneck,
            "conv1x1": conv1x1,
            "conv3x3": conv3x3,
        }
        path = next((PROJECT_ROOT / "notebooks").glob(f"{notebook}_*.py"))
        for cell in jupytext.read(path).cells:
            if cell.cell_type == "code" and R.BEGIN in cell.source:
                exec(compile(cell.source, f"{path.name}", "exec"), namespace)  # noqa: S102
        _SOLUTIONS[notebook] = namespace
    return _SOLUTIONS[notebook][name]


def verdict(capsys: pytest.CaptureFixture, name: str) -> str:
    out = capsys.readouterr().out
    assert out.startswith(f"[{name}] "), out
    return out


def assert_correct(capsys, name: str) -> None:
    out = verdict(capsys, name)
    assert out.startswith(f"[{name}] {E.CORRECT}:"), out


def assert_rejected(capsys, name: str, phrase: str) -> str:
    out = verdict(capsys, name)
    assert out.startswith(f"[{name}] {E.NOT_RIGHT}:"), out
    assert phrase in out, f"expected {phrase!r} in the message, got:\n{out}"
    assert E.FALLBACK in out
    return out


def not_solved(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError(
        "Exercise: replace this line with your code, then run the check below."
    )


# --------------------------------------------------------------------------------------------------
# Notebook 01
# --------------------------------------------------------------------------------------------------

TRAIN = _probe_images(60, 32, seed=11)  # stand-ins for the training and test images
TEST = _probe_images(20, 32, seed=12)


def _float_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float64) / 255
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


def _per_batch_stds(images: np.ndarray, batch_size: int = 5_000):
    batches = [
        images[i : i + batch_size].astype(np.float64) / 255
        for i in range(0, len(images), batch_size)
    ]
    return (
        np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0),
        np.mean([b.std(axis=(0, 1, 2)) for b in batches], axis=0),
    )


MEAN_STD_WRONG = {
    "no / 255": (
        lambda images, batch_size=5_000: tuple(255 * v for v in _float_stats(images)),
        "0-255 scale",
    ),
    "variance": (
        lambda images, batch_size=5_000: (_float_stats(images)[0], _float_stats(images)[1] ** 2),
        "variance",
    ),
    "mean of per-image stds (0.2023)": (
        lambda images, batch_size=5_000: (
            _float_stats(images)[0],
            (images / 255).std(axis=(1, 2)).mean(axis=0),
        ),
        "0.2023",
    ),
    "average of per-batch stds": (_per_batch_stds, "averaged the batches"),
    "test-set statistics": (lambda images, batch_size=5_000: _float_stats(TEST), "test set"),
    "published numbers": (
        lambda images, batch_size=5_000: (CIFAR10_MEAN, CIFAR10_STD),
        "published",
    ),
    "BGR order": (
        lambda images, batch_size=5_000: tuple(v[::-1] for v in _float_stats(images)),
        "order",
    ),
    "one number for all channels": (
        lambda images, batch_size=5_000: ((images / 255).mean(), (images / 255).std()),
        "three numbers",
    ),
    "calls the reference": (
        lambda images, batch_size=5_000: compute_mean_std(images),
        "compute_mean_std",
    ),
    "the whole array at once": (
        lambda images, batch_size=5_000: _float_stats(images),
        "not `batch_size`",
    ),
    "the whole array through torch": (
        lambda images, batch_size=5_000: (
            (x := torch.from_numpy(np.asarray(images)).double().reshape(-1, 3) / 255).mean(0),
            x.std(0, correction=0),
        ),
        "without a slice",
    ),
    "one slice larger than the batch": (
        lambda images, batch_size=5_000: _float_stats(images[: len(images)]),
        "in a slice of",
    ),
}


def test_mean_std_accepts_the_solution(capsys):
    mean, std = E.check_mean_std(solution("01", "my_mean_std"), TRAIN, test_images=TEST)
    assert_correct(capsys, "channel mean and std")
    assert np.allclose(mean, compute_mean_std(TRAIN)[0]) and np.allclose(
        std, compute_mean_std(TRAIN)[1]
    )


def test_mean_std_accepts_a_streamed_torch_answer(capsys):
    def with_torch(images, batch_size=5_000):
        sums, squares, n = torch.zeros(3, dtype=torch.float64), 0.0, 0
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).double().reshape(-1, 3) / 255
            sums, squares, n = sums + x.sum(0), squares + (x**2).sum(0), n + len(x)
        mean = sums / n
        return mean, (squares / n - mean**2).sqrt()

    E.check_mean_std(with_torch, TRAIN)
    assert_correct(capsys, "channel mean and std")


@pytest.mark.parametrize("wrong", MEAN_STD_WRONG, ids=list(MEAN_STD_WRONG))
def test_mean_std_rejects(wrong, capsys):
    answer, phrase = MEAN_STD_WRONG[wrong]
    result = E.check_mean_std(answer, TRAIN, test_images=TEST)
    assert_rejected(capsys, "channel mean and std", phrase)
    assert result == compute_mean_std(TRAIN)  # the notebook goes on with the reference


def test_not_solved_is_reported_and_falls_back(capsys):
    result = E.check_mean_std(not_solved, TRAIN)
    out = verdict(capsys, "channel mean and std")
    assert out.startswith(f"[channel mean and std] {E.NOT_SOLVED}: {E.FALLBACK}")
    assert result == compute_mean_std(TRAIN)


PER_IMAGE_WRONG = {
    "dataset std": (lambda images: (images / 255).std(axis=(0, 1, 2)), "whole dataset"),
    "sqrt of mean variance": (
        lambda images: np.sqrt((images / 255).var(axis=(1, 2)).mean(axis=0)),
        "variances",
    ),
    "std across images": (lambda images: (images / 255).std(axis=0).mean(axis=(0, 1)), "axis 0"),
    "no / 255": (lambda images: images.astype(float).std(axis=(1, 2)).mean(axis=0), "0-255"),
    "per image over all channels": (
        lambda images: (images / 255).std(axis=(1, 2, 3)).mean(),
        "three numbers",
    ),
    "mean of means": (lambda images: (images / 255).mean(axis=(1, 2)).mean(axis=0), "means"),
    "calls the reference": (
        lambda images: np.array(mean_of_per_image_std(images)),
        "mean_of_per_image_std",
    ),
}


def test_per_image_std_accepts_the_solution_and_torch(capsys):
    E.check_mean_of_per_image_std(solution("01", "my_mean_of_per_image_std"), TRAIN)
    assert_correct(capsys, "mean of per-image stds")
    E.check_mean_of_per_image_std(  # torch.std divides by n - 1: within the tolerance
        lambda images: (torch.from_numpy(images).double() / 255).std(dim=(1, 2)).mean(dim=0), TRAIN
    )
    assert_correct(capsys, "mean of per-image stds")


@pytest.mark.parametrize("wrong", PER_IMAGE_WRONG, ids=list(PER_IMAGE_WRONG))
def test_per_image_std_rejects(wrong, capsys):
    answer, phrase = PER_IMAGE_WRONG[wrong]
    E.check_mean_of_per_image_std(answer, TRAIN)
    assert_rejected(capsys, "mean of per-image stds", phrase)


# --------------------------------------------------------------------------------------------------
# Notebook 02
# --------------------------------------------------------------------------------------------------

NORMALIZED = (
    torch.rand(3, 3, 32, 32) - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def _stats(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values).view(1, 3, 1, 1)


DENORMALIZE_WRONG = {
    "/ 2 + 0.5": (lambda x, m, s: (x / 2 + 0.5).clamp(0, 1), "img / 2 + 0.5"),
    "/ 2 + 0.5 unclamped": (lambda x, m, s: x / 2 + 0.5, "img / 2 + 0.5"),
    "mean and std swapped": (lambda x, m, s: (x * _stats(m) + _stats(s)).clamp(0, 1), "swapped"),
    "normalizes again": (lambda x, m, s: ((x - _stats(m)) / _stats(s)).clamp(0, 1), "second time"),
    "no clamp": (lambda x, m, s: x * _stats(s) + _stats(m), "clamp"),
    "ImageNet statistics": (
        lambda x, m, s: (x * _stats(E.IMAGENET_STD) + _stats(E.IMAGENET_MEAN)).clamp(0, 1),
        "ImageNet",
    ),
    "ignores its arguments": (
        lambda x, m, s: (x * _stats(CIFAR10_STD) + _stats(CIFAR10_MEAN)).clamp(0, 1),
        "ignores its mean and std",
    ),
    "broadcast over the width": (
        lambda x, m, s: (x * torch.tensor(s) + torch.tensor(m)).clamp(0, 1),
        "(1, 3, 1, 1)",
    ),
    "returns a list": (
        lambda x, m, s: (x * _stats(s) + _stats(m)).clamp(0, 1).tolist(),
        "return a tensor",
    ),
    "calls the reference": (
        lambda x, m, s: denormalize(x, m, s),
        "calls course_utils' denormalize",
    ),
}


def test_denormalize_accepts_the_solution(capsys):
    result = E.check_denormalize(solution("02", "my_denormalize"), NORMALIZED)
    assert_correct(capsys, "un-normalize")
    assert torch.allclose(result, denormalize(NORMALIZED))


@pytest.mark.parametrize("wrong", DENORMALIZE_WRONG, ids=list(DENORMALIZE_WRONG))
def test_denormalize_rejects(wrong, capsys):
    answer, phrase = DENORMALIZE_WRONG[wrong]
    result = E.check_denormalize(answer, NORMALIZED)
    assert_rejected(capsys, "un-normalize", phrase)
    assert torch.equal(result, denormalize(NORMALIZED))


LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 60))  # 600 shuffled labels


def _split_with(draw: Callable[[np.random.Generator, np.ndarray, int], np.ndarray]):
    def split(labels, val_per_class, seed):
        rng = np.random.default_rng(seed)
        val = np.concatenate(
            [draw(rng, np.flatnonzero(labels == c), val_per_class) for c in np.unique(labels)]
        )
        return np.setdiff1d(np.arange(len(labels)), val), val

    return split


def _first_n(labels, val_per_class, seed):
    n = val_per_class * len(np.unique(labels))
    return np.arange(n, len(labels)), np.arange(n)


def _unstratified(labels, val_per_class, seed):
    n = val_per_class * len(np.unique(labels))
    val = np.random.default_rng(seed).choice(len(labels), n, replace=False)
    return np.setdiff1d(np.arange(len(labels)), val), val


def _overlapping(labels, val_per_class, seed):
    return np.arange(len(labels)), _split_with(lambda r, idx, k: r.choice(idx, k, replace=False))(
        labels, val_per_class, seed
    )[1]


def _unseeded(labels, val_per_class, seed):
    return _split_with(lambda r, idx, k: np.random.choice(idx, k, replace=False))(
        labels, val_per_class, seed
    )


def _loses_images(labels, val_per_class, seed):
    train, val = _split_with(lambda r, idx, k: r.choice(idx, k, replace=False))(
        labels, val_per_class, seed
    )
    return train[:-5], val


SPLIT_WRONG = {
    "first indices": (_first_n, "first indices"),
    "not stratified": (_unstratified, "not stratified"),
    "with replacement": (
        _split_with(lambda r, idx, k: r.choice(idx, k, replace=True)),
        "replace=False",
    ),
    "training keeps the validation images": (_overlapping, "both parts"),
    "training loses images": (_loses_images, "neither part"),
    "not reproducible": (_unseeded, "same seed"),
    "first of each class (ignores the seed)": (
        _split_with(lambda r, idx, k: idx[:k]),
        "another seed",
    ),
    "one class short": (
        lambda labels, k, seed: _split_with(lambda r, idx, n: r.choice(idx, n, replace=False))(
            np.where(labels == 9, 8, labels), k, seed
        ),
        "expected",
    ),
    "calls the reference": (
        lambda labels, k, seed: train_val_split(labels, val_size=10 * k, seed=seed),
        "train_val_split",
    ),
}


def test_split_accepts_the_solution(capsys):
    train_idx, val_idx = E.check_train_val_split(solution("02", "my_train_val_split"), LABELS, 20)
    assert_correct(capsys, "stratified train/validation split")
    assert (np.bincount(LABELS[val_idx]) == 20).all() and len(train_idx) == 400


@pytest.mark.parametrize("wrong", SPLIT_WRONG, ids=list(SPLIT_WRONG))
def test_split_rejects(wrong, capsys):
    answer, phrase = SPLIT_WRONG[wrong]
    E.check_train_val_split(answer, LABELS, 20)
    assert_rejected(capsys, "stratified train/validation split", phrase)


# --------------------------------------------------------------------------------------------------
# Notebook 03
# --------------------------------------------------------------------------------------------------


def _shortcut(block, x):
    return x if block.downsample is None else block.downsample(x)


FORWARD_WRONG = {
    "return block(x)": (lambda block, x: block(x), "block's own forward"),
    "block.forward(x)": (lambda block, x: block.forward(x), "block's own forward"),
    "BasicBlock.forward(block, x)": (
        lambda block, x: BasicBlock.forward(block, x),
        "block's own forward",
    ),
    "no skip connection": (
        lambda b, x: torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))),
        "shortcut",
    ),
    "ReLU before the addition": (
        lambda b, x: torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))) + _shortcut(b, x),
        "after the addition",
    ),
    "no final ReLU": (
        lambda b, x: b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x))))) + _shortcut(b, x),
        "ends with a ReLU",
    ),
    "missing bn2": (
        lambda b, x: torch.relu(b.conv2(torch.relu(b.bn1(b.conv1(x)))) + _shortcut(b, x)),
        "bn2",
    ),
    "missing bn1": (
        lambda b, x: torch.relu(b.bn2(b.conv2(torch.relu(b.conv1(x)))) + _shortcut(b, x)),
        "bn1",
    ),
    "no ReLU between the convolutions": (
        lambda b, x: torch.relu(b.bn2(b.conv2(b.bn1(b.conv1(x)))) + _shortcut(b, x)),
        "between the two",
    ),
    "always x as the shortcut": (
        lambda b, x: torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x))))) + x),
        "projection",
    ),
    "always downsample(x)": (
        lambda b, x: torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x))))) + b.downsample(x)),
        "NoneType",
    ),
    "a new convolution instead of the block's": (
        lambda b, x: torch.relu(
            b.bn2(
                nn.Conv2d(b.conv2.in_channels, b.conv2.out_channels, 3, padding=1, bias=False)(
                    torch.relu(b.bn1(b.conv1(x)))
                )
            )
            + _shortcut(b, x)
        ),
        "never uses block.conv2",
    ),
}


def test_basic_block_forward_accepts_the_solution(capsys):
    forward = E.check_basic_block_forward(solution("03", "my_basic_block_forward"))
    assert_correct(capsys, "BasicBlock forward")
    assert forward is solution("03", "my_basic_block_forward")
    assert BasicBlock(4, 4)(torch.zeros(1, 4, 2, 2)).shape == (1, 4, 2, 2)  # forward restored


@pytest.mark.parametrize("wrong", FORWARD_WRONG, ids=list(FORWARD_WRONG))
def test_basic_block_forward_rejects(wrong, capsys):
    answer, phrase = FORWARD_WRONG[wrong]
    forward = E.check_basic_block_forward(answer)
    assert_rejected(capsys, "BasicBlock forward", phrase)
    block = BasicBlock(8, 8).eval()
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(forward(block, x), block(x))  # the reference, with BasicBlock.forward back


def test_basic_block_forward_trap_catches_an_imported_alias(capsys):
    namespace = {"reference_forward": BasicBlock.forward}
    exec("def sneaky(block, x):\n    return reference_forward(block, x)", namespace)  # noqa: S102
    E.check_basic_block_forward(namespace["sneaky"])
    assert_rejected(capsys, "BasicBlock forward", "block's own forward")
    assert namespace["reference_forward"] is BasicBlock.forward  # restored


def _bottleneck(**changes: Any) -> type[nn.Module]:
    """A Bottleneck class with torchvision's names and one thing changed (see BOTTLENECK_WRONG)."""
    opts = {
        "skip": True,
        "relu_before_add": False,
        "final_relu": True,
        "stride_on": "conv2",
        "projection_bn": True,
        "projection_when": "either",
        "expansion": 4,
        "bn3": True,
        "inner_relu": True,
        "names": True,
    }
    opts.update(changes)

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            out = planes * opts["expansion"]
            s1, s2 = (stride, 1) if opts["stride_on"] == "conv1" else (1, stride)
            self.conv1, self.bn1 = conv1x1(inplanes, planes, s1), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes, s2), nn.BatchNorm2d(planes)
            self.conv3 = conv1x1(planes, out)
            self.bn3 = nn.BatchNorm2d(out) if opts["bn3"] else nn.Identity()
            needs = {
                "either": stride != 1 or inplanes != out,
                "stride": stride != 1,
                "always": True,
            }[opts["projection_when"]]
            layers = [conv1x1(inplanes, out, stride)] + (
                [nn.BatchNorm2d(out)] if opts["projection_bn"] else []
            )
            self.downsample = nn.Sequential(*layers) if needs else None
            if not opts["names"]:
                self.reduce = self.conv1
                del self.conv1

        def forward(self, x):
            conv1 = self.conv1 if opts["names"] else self.reduce
            act = torch.relu if opts["inner_relu"] else (lambda t: t)
            out = act(self.bn1(conv1(x)))
            out = act(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if opts["relu_before_add"]:
                out = torch.relu(out)
            if opts["skip"]:
                out = out + (x if self.downsample is None else self.downsample(x))
            return torch.relu(out) if opts["final_relu"] else out

    return Block


class _Delegates(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.block = Bottleneck(inplanes, planes, stride)

    def forward(self, x):
        return self.block(x)


class _Subclass(Bottleneck):
    pass


class _BorrowedForward(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.__dict__.update(Bottleneck(inplanes, planes, stride).__dict__)

    forward = Bottleneck.forward


BOTTLENECK_WRONG = {
    "no skip connection": (_bottleneck(skip=False), "no skip connection"),
    "ReLU before the addition": (_bottleneck(relu_before_add=True), "after the addition"),
    "no final ReLU": (_bottleneck(final_relu=False), "ends with a ReLU"),
    "stride on the 1x1 reduce": (_bottleneck(stride_on="conv1"), "stride belongs on the 3x3"),
    "projection without BatchNorm": (_bottleneck(projection_bn=False), "needs its BatchNorm"),
    "projection only when striding": (_bottleneck(projection_when="stride"), "needs a projection"),
    "projection always": (_bottleneck(projection_when="always"), "the identity"),
    "no expansion": (_bottleneck(expansion=1), "has shape"),
    "missing bn3": (_bottleneck(bn3=False), "bn3"),
    "no ReLU inside the branch": (_bottleneck(inner_relu=False), "ReLU is missing"),
    "other layer names": (_bottleneck(names=False), "torchvision"),
    "wraps the reference": (_Delegates, "course_utils' Bottleneck"),
    "subclasses the reference": (_Subclass, "derives from"),
    "borrows the reference forward": (_BorrowedForward, "course_utils' Bottleneck"),
}


def test_bottleneck_accepts_the_solution(capsys):
    cls = E.check_bottleneck(solution("03", "MyBottleneck"))
    assert_correct(capsys, "Bottleneck")
    assert cls is solution("03", "MyBottleneck")
    E.check_bottleneck(_bottleneck())  # the test's own builder, with nothing changed
    assert_correct(capsys, "Bottleneck")


@pytest.mark.parametrize("wrong", BOTTLENECK_WRONG, ids=list(BOTTLENECK_WRONG))
def test_bottleneck_rejects(wrong, capsys):
    answer, phrase = BOTTLENECK_WRONG[wrong]
    assert E.check_bottleneck(answer) is Bottleneck
    assert_rejected(capsys, "Bottleneck", phrase)
    assert Bottleneck(8, 2)(torch.zeros(1, 8, 2, 2)).shape == (1, 8, 2, 2)  # restored


# --------------------------------------------------------------------------------------------------
# Notebook 04
# --------------------------------------------------------------------------------------------------


def _stage(
    first_stride: bool = True,
    others_stride: bool = False,
    others_in: str = "expanded",
    extra: int = 0,
    wrap: Callable = nn.Sequential,
):
    def make(block, inplanes, planes, blocks, stride):
        first = block(inplanes, planes, stride if first_stride else 1)
        width = {"expanded": planes * block.expansion, "planes": planes, "inplanes": inplanes}[
            others_in
        ]
        others = [
            block(width, planes, stride if others_stride else 1) for _ in range(blocks - 1 + extra)
        ]
        return wrap(first, *others)

    return make


def _stride_on_last(block, inplanes, planes, blocks, stride):
    stage = [block(inplanes, planes)] + [
        block(planes * block.expansion, planes) for _ in range(blocks - 2)
    ]
    return nn.Sequential(*stage, block(planes * block.expansion, planes, stride))


def _uses_resnet(block, inplanes, planes, blocks, stride):
    return ResNet(block, (blocks, 1, 1, 1), width=planes).layer1


def _calls_make_layer(block, inplanes, planes, blocks, stride):
    class Holder:
        pass

    holder = Holder()
    holder.inplanes = inplanes
    return ResNet._make_layer(holder, block, planes, blocks, stride)


MAKE_LAYER_WRONG = {
    "stride on every block": (
        _stage(others_stride=True),
        "the first block, and only the first, takes the stride",
    ),
    "no stride": (
        _stage(first_stride=False),
        "the first block, and only the first, takes the stride",
    ),
    "later blocks get planes (no expansion)": (_stage(others_in="planes"), "later blocks"),
    "later blocks get inplanes": (_stage(others_in="inplanes"), "later blocks"),
    "one block too many": (_stage(extra=1), "expected"),
    "one block too few": (_stage(extra=-1), "expected"),
    "stride on the last block": (
        _stride_on_last,
        "the first block, and only the first, takes the stride",
    ),
    "a list, not nn.Sequential": (_stage(wrap=lambda *blocks: list(blocks)), "nn.Sequential"),
    "builds a ResNet": (_uses_resnet, "ResNet class"),
    "calls ResNet._make_layer": (_calls_make_layer, "ResNet class"),
}


def test_make_layer_accepts_the_solution(capsys):
    results = E.check_make_layer(solution("04", "my_make_layer"))
    assert_correct(capsys, "_make_layer")
    assert results["ResNet-50 layer2"][1] == (2, 128, 4, 4)


@pytest.mark.parametrize("wrong", MAKE_LAYER_WRONG, ids=list(MAKE_LAYER_WRONG))
def test_make_layer_rejects(wrong, capsys):
    answer, phrase = MAKE_LAYER_WRONG[wrong]
    E.check_make_layer(answer)
    assert_rejected(capsys, "_make_layer", phrase)
    assert ResNet(BasicBlock, (1, 1, 1, 1), width=4).layer1 is not None  # _make_layer restored


def _conv_functions() -> tuple[Callable, Callable, Callable]:
    return (
        solution("04", "conv_output_size"),
        solution("04", "conv_parameters"),
        solution("04", "conv_macs"),
    )


SIZE_WRONG = {
    "true division": (
        lambda n, k, stride=1, padding=0: (n + 2 * padding - k) / stride + 1,
        "floor division",
    ),
    "rounds up": (
        lambda n, k, stride=1, padding=0: -(-(n + 2 * padding - k) // stride) + 1,
        "Round down",
    ),
    "no padding": (lambda n, k, stride=1, padding=0: (n - k) // stride + 1, "padding is missing"),
    "padding on one side": (
        lambda n, k, stride=1, padding=0: (n + padding - k) // stride + 1,
        "both sides",
    ),
    "no + 1": (lambda n, k, stride=1, padding=0: (n + 2 * padding - k) // stride, "+ 1 is missing"),
    "float result": (
        lambda n, k, stride=1, padding=0: float((n + 2 * padding - k) // stride + 1),
        "whole number",
    ),
}
PARAMETERS_WRONG = {
    "no bias": (lambda c_in, c_out, k, bias=False: c_out * c_in * k * k, "bias adds one"),
    "bias per input channel": (
        lambda c_in, c_out, k, bias=False: c_out * c_in * k * k + c_in * bias,
        "output* channel",
    ),
    "k instead of k * k": (
        lambda c_in, c_out, k, bias=False: c_out * (c_in * k + bias),
        "k * k weights",
    ),
}
MACS_WRONG = {
    "FLOPs": (lambda c_in, c_out, k, out: 2 * c_out * out * out * c_in * k * k, "FLOPs"),
    "no c_in": (lambda c_in, c_out, k, out: c_out * out * out * k * k, "c_in is missing"),
    "no k * k": (lambda c_in, c_out, k, out: c_out * out * out * c_in, "k * k is missing"),
    "out not squared": (lambda c_in, c_out, k, out: c_out * out * c_in * k * k, "square the size"),
}


def test_conv_arithmetic_accepts_the_solution(capsys):
    facts = E.check_conv_arithmetic(*_conv_functions())
    out = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in out] == [
        "[conv_output_size",
        "[conv_parameters",
        "[conv_macs",
    ]
    assert all(f"] {E.CORRECT}:" in line for line in out), out
    assert facts[0] == (32, 1728, 1728 * 32 * 32)


@pytest.mark.parametrize(
    "which, wrong",
    [("size", w) for w in SIZE_WRONG]
    + [("parameters", w) for w in PARAMETERS_WRONG]
    + [("macs", w) for w in MACS_WRONG],
)
def test_conv_arithmetic_rejects(which, wrong, capsys):
    size, parameters, macs = _conv_functions()
    table = {"size": SIZE_WRONG, "parameters": PARAMETERS_WRONG, "macs": MACS_WRONG}[which]
    answer, phrase = table[wrong]
    functions = {
        "size": (answer, parameters, macs),
        "parameters": (size, answer, macs),
        "macs": (size, parameters, answer),
    }[which]
    facts = E.check_conv_arithmetic(*functions)
    lines = capsys.readouterr().out
    name = {"size": "conv_output_size", "parameters": "conv_parameters", "macs": "conv_macs"}[which]
    verdicts = {line.split("]")[0][1:]: line for line in lines.splitlines() if line.startswith("[")}
    assert verdicts[name].startswith(f"[{name}] {E.NOT_RIGHT}:") and phrase in lines, lines
    assert all(f"] {E.CORRECT}:" in v for n, v in verdicts.items() if n != name)  # the others pass
    assert facts == [E.measure_conv(case) for case in E.CONV_CASES]


def test_conv_arithmetic_reports_each_unsolved_function(capsys):
    size, _, macs = _conv_functions()
    E.check_conv_arithmetic(size, not_solved, macs)
    out = capsys.readouterr().out
    assert f"[conv_output_size] {E.CORRECT}" in out and f"[conv_macs] {E.CORRECT}" in out
    assert f"[conv_parameters] {E.NOT_SOLVED}" in out


# --------------------------------------------------------------------------------------------------
# Notebook 05
# --------------------------------------------------------------------------------------------------


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(40, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (40,), generator=generator)
    return [(images[a:b], labels[a:b]) for a, b in ((0, 16), (16, 32), (32, 40))]


BATCHES = _batches()


def _loop(
    train_mode=True,
    zero_grad="before",
    step=True,
    loss_per_batch=False,
    acc_per_batch=False,
    percent=False,
):
    def loop(model, loader, criterion, optimizer, device):
        if train_mode:
            model.train()
        losses, accs, total_loss, hits, seen = [], [], 0.0, 0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if zero_grad == "before":
                optimizer.zero_grad()
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            if zero_grad == "between":
                optimizer.zero_grad()
            if step:
                optimizer.step()
            losses.append(loss.item())
            accs.append((logits.argmax(1) == y).float().mean().item())
            total_loss += loss.item() * len(y)
            hits += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        mean_loss = np.mean(losses) if loss_per_batch else total_loss / seen
        accuracy = np.mean(accs) if acc_per_batch else hits / seen
        return mean_loss, 100 * accuracy if percent else accuracy

    return loop


def _never_moves(model, loader, criterion, optimizer, device):
    model.train()
    total, hits, seen = 0.0, 0, 0
    for x, y in loader:  # on the CPU this computes the right numbers; on a GPU it would crash
        optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        hits += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total / seen, hits / seen


def _sums_tensors(model, loader, criterion, optimizer, device):
    model.train()
    total, hits, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        optimizer.step()
        total = total + loss * len(y)  # keeps every batch's graph alive
        hits += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return float(total) / seen, hits / seen


def _returns_the_graph(model, loader, criterion, optimizer, device):
    loss, accuracy = _sums_tensors(model, loader, criterion, optimizer, device)
    return torch.tensor(loss, requires_grad=True), accuracy


def _calls_reference(model, loader, criterion, optimizer, device):
    stats = train_one_epoch(model, loader, criterion, optimizer, device)
    return stats.loss, stats.accuracy


LOOP_WRONG = {
    "no model.train()": (_loop(train_mode=False), "model.train()"),
    "no zero_grad": (_loop(zero_grad="never"), "zero_grad"),
    "zero_grad between backward and step": (_loop(zero_grad="between"), "did not change"),
    "no optimizer.step()": (_loop(step=False), "optimizer.step()"),
    "loss averaged per batch": (_loop(loss_per_batch=True), "average of the batch means"),
    "accuracy averaged per batch": (_loop(acc_per_batch=True), "averages the batches' accuracies"),
    "accuracy in percent": (_loop(percent=True), "not a percentage"),
    "calls train_one_epoch": (_calls_reference, "train_one_epoch"),
    "never moves the batches to the device": (_never_moves, "to(device)"),
    "adds up the loss tensor": (_sums_tensors, "loss.item()"),
    "returns a tensor with its graph": (_returns_the_graph, "autograd graph"),
    "returns one number": (lambda *args: 0.5, "two numbers"),
}


def test_training_loop_accepts_the_solution(capsys, one_thread):
    loss, accuracy = E.check_train_one_epoch(solution("05", "my_train_one_epoch"), BATCHES)
    assert_correct(capsys, "training loop")
    assert 0 < loss and 0 <= accuracy <= 1


def test_training_loop_reference_matches_the_checks_own_loop(one_thread):
    """The loop the check uses to recognise mistakes is, without them, train_one_epoch itself."""
    start = ResNet(BasicBlock, (2, 2, 2, 2), width=4).eval()
    a, b = __import__("copy").deepcopy(start), __import__("copy").deepcopy(start)
    mine = _epoch(a, BATCHES, lr=0.05)
    opt = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    stats = train_one_epoch(b, BATCHES, nn.CrossEntropyLoss(), opt, "cpu", channels_last=False)
    assert torch.allclose(mine["state"], _flat_state(b), atol=1e-6)
    assert np.isclose((mine["losses"] * mine["sizes"]).sum() / 40, stats.loss, atol=1e-5)


@pytest.mark.parametrize("wrong", LOOP_WRONG, ids=list(LOOP_WRONG))
def test_training_loop_rejects(wrong, capsys, one_thread):
    answer, phrase = LOOP_WRONG[wrong]
    E.check_train_one_epoch(answer, BATCHES)
    assert_rejected(capsys, "training loop", phrase)


def _stop_rule(**switches: Any) -> Callable[[list[float], int, float], bool]:
    return lambda history, patience, min_delta=0.0: _rule(
        history, patience, min_delta, **switches
    )


def _with_early_stopping(history, patience, min_delta=0.0):
    stopper = EarlyStopping(patience, min_delta)
    for value in history:
        stopper.step(value)
    return stopper.should_stop


def _len_minus_argmax(history, patience, min_delta=0.0):
    return len(history) - int(np.argmax(history)) >= patience  # counts the best epoch too


STOP_WRONG = {
    "off-by-one patience (>)": (_stop_rule(strict=True), "one epoch late"),
    "compares with the previous epoch": (_stop_rule(against="previous"), "previous one"),
    "a tie counts as an improvement": (_stop_rule(tie_improves=True), "tie"),
    "ignores min_delta": (_stop_rule(use_delta=False), "ignores min_delta"),
    "lower is better": (_stop_rule(higher=False), "lower as better"),
    "counts the best epoch itself": (_len_minus_argmax, "the right answer is"),
    "a window over the last epochs": (
        lambda h, p, d=0.0: len(h) > p and max(h[-p:]) - max(h[:-p]) <= d,
        "the epochs since it last moved",
    ),
    "uses EarlyStopping": (_with_early_stopping, "EarlyStopping"),
}


def test_stopping_rule_accepts_the_solution(capsys):
    decisions = E.check_should_stop(solution("05", "my_should_stop"))
    assert_correct(capsys, "early stopping rule")
    assert decisions == E.stop_decisions(E.early_stopping_decision)
    assert E.stop_decisions(_rule) == decisions  # the mistakes' rule, with no mistake, is right


@pytest.mark.parametrize("wrong", STOP_WRONG, ids=list(STOP_WRONG))
def test_stopping_rule_rejects(wrong, capsys):
    answer, phrase = STOP_WRONG[wrong]
    E.check_should_stop(answer)
    assert_rejected(capsys, "early stopping rule", phrase)


# --------------------------------------------------------------------------------------------------
# Notebook 06
# --------------------------------------------------------------------------------------------------

Y_TRUE = np.random.default_rng(1).integers(0, 10, 300)
Y_PRED = np.where(
    np.random.default_rng(2).random(300) < 0.6,
    Y_TRUE,
    np.random.default_rng(3).integers(0, 10, 300),
)


def _fancy_index(y_true, y_pred, num_classes):
    cm = np.zeros((num_classes, num_classes), dtype=int)
    cm[y_true, y_pred] += 1  # repeats are counted once
    return cm


def _transposed(y_true, y_pred, num_classes):
    return solution("06", "my_confusion_matrix")(y_pred, y_true, num_classes)


def _size_from_data(y_true, y_pred, num_classes):
    return solution("06", "my_confusion_matrix")(
        y_true, y_pred, int(max(y_true.max(), y_pred.max())) + 1
    )


def _floats(y_true, y_pred, num_classes):
    return np.histogram2d(y_true, y_pred, bins=num_classes, range=[[0, num_classes]] * 2)[0]


CM_WRONG = {
    "transposed": (_transposed, "transposed"),
    "fancy-index += 1": (_fancy_index, "np.add.at"),
    "size from the data": (_size_from_data, "never occurs"),
    "float counts": (_floats, "whole numbers"),
    "scikit-learn's confusion_matrix": (
        lambda t, p, k: metrics.confusion_matrix(t, p, labels=list(range(k))),
        "library's confusion_matrix",
    ),
    "course_utils' confusion_matrix": (
        lambda t, p, k: course_confusion_matrix(
            __import__("types").SimpleNamespace(labels=t, preds=p), k
        ),
        "library's confusion_matrix",
    ),
    "a list": (
        lambda t, p, k: solution("06", "my_confusion_matrix")(t, p, k).tolist(),
        "NumPy array",
    ),
}


def test_confusion_matrix_accepts_the_solution(capsys):
    cm = E.check_confusion_matrix(solution("06", "my_confusion_matrix"), Y_TRUE, Y_PRED, 10)
    assert_correct(capsys, "confusion matrix")
    assert (cm == metrics.confusion_matrix(Y_TRUE, Y_PRED)).all()


@pytest.mark.parametrize("wrong", CM_WRONG, ids=list(CM_WRONG))
def test_confusion_matrix_rejects(wrong, capsys):
    answer, phrase = CM_WRONG[wrong]
    E.check_confusion_matrix(answer, Y_TRUE, Y_PRED, 10)
    assert_rejected(capsys, "confusion matrix", phrase)
    assert metrics.confusion_matrix([0, 1], [0, 1]).shape == (2, 2)  # restored


CM = metrics.confusion_matrix(Y_TRUE, Y_PRED)


def _prf(matrix, swap=False, arithmetic=False, divide=np.divide, rows=True):
    hits = np.diag(matrix).astype(float)
    cols, row_sums = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, r = divide(hits, cols), divide(hits, row_sums)
        if swap:
            p, r = r, p
        f = (p + r) / 2 if arithmetic else divide(2 * p * r, p + r)
    out = np.stack([p, r, f], axis=1)
    return out if rows else out.T


def _safe(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


PRF_WRONG = {
    "precision and recall swapped": (lambda m: _prf(m, swap=True, divide=_safe), "swapped"),
    "F1 as the average": (lambda m: _prf(m, arithmetic=True, divide=_safe), "harmonic mean"),
    "NaN where nothing was predicted": (lambda m: _prf(m), "NaN"),
    "one column per class": (lambda m: _prf(m, divide=_safe, rows=False), "one row per class"),
    "ignores its argument": (lambda m: _prf(CM, divide=_safe), "shape"),
}


def test_precision_recall_f1_accepts_the_solution(capsys):
    prf = E.check_precision_recall_f1(solution("06", "my_precision_recall_f1"), CM)
    assert_correct(capsys, "precision, recall and F1 from the matrix")
    assert prf.shape == (10, 3)


@pytest.mark.parametrize("wrong", PRF_WRONG, ids=list(PRF_WRONG))
def test_precision_recall_f1_rejects(wrong, capsys):
    answer, phrase = PRF_WRONG[wrong]
    E.check_precision_recall_f1(answer, CM)
    assert_rejected(capsys, "precision, recall and F1 from the matrix", phrase)


# --------------------------------------------------------------------------------------------------
# Notebook 07: mean and spread over seeds
# --------------------------------------------------------------------------------------------------

SEED_ACCURACIES = {"plain-20": [0.52, 0.55], "resnet-20": [0.58, 0.57], "three": [0.1, 0.4, 0.5]}


def _spread(values, std=lambda v: float(np.std(v, ddof=1)), mean=np.mean):
    return {k: (float(mean(v)), std(v)) for k, v in values.items()}


SPREAD_WRONG = {
    "population std (NumPy's default)": (
        lambda v: _spread(v, std=lambda x: float(np.std(x))), "divide by n - 1"
    ),
    "the variance": (lambda v: _spread(v, std=lambda x: float(np.var(x, ddof=1))), "variance"),
    "the median": (lambda v: _spread(v, mean=np.median), "the mean of"),
    "a bare mean": (lambda v: {k: float(np.mean(x)) for k, x in v.items()}, "pair (mean, std)"),
    "one configuration left out": (
        lambda v: dict(list(_spread(v).items())[:-1]), "one (mean, std) pair per configuration"
    ),
}


def test_mean_and_spread_accepts_the_solution(capsys):
    got = E.check_mean_and_spread(solution("07", "my_mean_and_spread"), SEED_ACCURACIES)
    assert_correct(capsys, "mean and spread")
    assert got["three"] == pytest.approx((1 / 3, float(np.std([0.1, 0.4, 0.5], ddof=1))))


@pytest.mark.parametrize("wrong", SPREAD_WRONG, ids=list(SPREAD_WRONG))
def test_mean_and_spread_rejects(wrong, capsys):
    answer, phrase = SPREAD_WRONG[wrong]
    got = E.check_mean_and_spread(answer, SEED_ACCURACIES)
    assert_rejected(capsys, "mean and spread", phrase)
    assert got["plain-20"] == pytest.approx((0.535, 0.03 / np.sqrt(2)))  # the reference


# --------------------------------------------------------------------------------------------------
# Notebook 09: the calibration error, the temperature, a Grad-CAM map
# --------------------------------------------------------------------------------------------------

_CAL_RNG = np.random.default_rng(9)
CONFIDENCES = np.concatenate([_CAL_RNG.uniform(0.1, 1.0, 300), np.ones(20)])  # with exact 1.0s
CORRECT = _CAL_RNG.uniform(size=320) < CONFIDENCES ** 2  # overconfident at mid confidences


def _bins(conf, n_bins, closed_right=True):
    if closed_right:
        return np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    return np.floor(conf * n_bins).astype(int)  # [lower, upper): 1.0 falls out of the last bin


def _ece_variant(conf, right, n_bins, signed=False, weighted=True, closed_right=True):
    which = _bins(conf, n_bins, closed_right)
    gaps, weights = [], []
    for m in range(n_bins):
        inside = which == m
        if inside.any():
            gap = right[inside].mean() - conf[inside].mean()
            gaps.append(gap if signed else abs(gap))
            weights.append(inside.mean() if weighted else 1 / n_bins)
    return float(np.dot(gaps, weights) if weighted else np.mean(gaps))


def _ece_with_nan(conf, right, n_bins):
    which = _bins(conf, n_bins)
    with warnings.catch_warnings():  # the mean of an empty bin: the mistake being made
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sum((which == m).mean() * abs(np.mean(right[which == m])
                                                   - np.mean(conf[which == m]))
                         for m in range(n_bins)))  # fmt: skip


ECE_WRONG = {
    "1.0 dropped ([lower, upper) bins)": (
        lambda c, r, n: _ece_variant(c, r, n, closed_right=False), "exactly 1.0"),
    "bins weighted equally": (lambda c, r, n: _ece_variant(c, r, n, weighted=False), "share"),
    "signed gaps": (lambda c, r, n: _ece_variant(c, r, n, signed=True), "within each bin"),
    "one bin for all": (lambda c, r, n: abs(r.mean() - c.mean()), "within each bin"),
    "NaN from empty bins": (_ece_with_nan, "NaN"),
    "course_utils' ECE": (
        lambda c, r, n: __import__("course_utils.diagnostics").diagnostics
        .expected_calibration_error(np.log(np.stack([c, 1 - c + 1e-12], 1)), np.where(r, 0, 1), n),
        "course_utils' ECE",
    ),
}


def test_ece_accepts_the_solution(capsys):
    got = E.check_ece(solution("09", "my_ece"), CONFIDENCES, CORRECT, 15)
    assert_correct(capsys, "expected calibration error")
    assert got == pytest.approx(_ece_variant(CONFIDENCES, CORRECT, 15))


@pytest.mark.parametrize("wrong", ECE_WRONG, ids=list(ECE_WRONG))
def test_ece_rejects(wrong, capsys):
    answer, phrase = ECE_WRONG[wrong]
    got = E.check_ece(answer, CONFIDENCES, CORRECT, 15)
    assert_rejected(capsys, "expected calibration error", phrase)
    assert got == pytest.approx(_ece_variant(CONFIDENCES, CORRECT, 15))  # the reference


_Z = torch.from_numpy(np.random.default_rng(3).normal(size=(500, 10)) * 2)
_Y = torch.multinomial(torch.softmax(_Z, 1), 1, generator=torch.Generator().manual_seed(3))[:, 0]
LOGITS = 2.5 * _Z  # overconfident: the best temperature is near 2.5


def _grid_temperature(logits, labels, grid):
    nll = [torch.nn.functional.cross_entropy(logits / t, labels).item() for t in grid]
    return float(grid[int(np.argmin(nll))])


TEMPERATURE_WRONG = {
    "the inverse": (lambda z, y: 1 / solution("09", "my_temperature")(z, y), "inverse"),
    "a coarse grid": (lambda z, y: _grid_temperature(z, y, np.array([0.5, 1.0, 2.0, 4.0])),
                      "negative log-likelihood"),
    "always 1": (lambda z, y: 1.0, "negative log-likelihood"),
    "negative": (lambda z, y: -solution("09", "my_temperature")(z, y), "positive"),
    "course_utils' fit_temperature": (
        lambda z, y: __import__("course_utils.diagnostics").diagnostics.fit_temperature(
            z.numpy(), y.numpy()), "fit_temperature"),
}


def test_temperature_accepts_the_solution(capsys):
    got = E.check_temperature(solution("09", "my_temperature"), LOGITS, _Y)
    assert_correct(capsys, "temperature scaling")
    assert got == pytest.approx(2.5, rel=0.15)


@pytest.mark.parametrize("wrong", TEMPERATURE_WRONG, ids=list(TEMPERATURE_WRONG))
def test_temperature_rejects(wrong, capsys):
    answer, phrase = TEMPERATURE_WRONG[wrong]
    got = E.check_temperature(answer, LOGITS, _Y)
    assert_rejected(capsys, "temperature scaling", phrase)
    assert got == pytest.approx(2.5, rel=0.15)  # the reference


_CAM_GEN = torch.Generator().manual_seed(5)
CAM_A = torch.relu(torch.randn(8, 4, 4, generator=_CAM_GEN))
CAM_G = torch.randn(8, 4, 4, generator=_CAM_GEN)


def _weights(g):
    return g.mean(dim=(1, 2))[:, None, None]


CAM_WRONG = {
    "no ReLU": (lambda a, g: (_weights(g) * a).sum(0), "negative values"),
    "weights summed": (lambda a, g: torch.relu((g.sum(dim=(1, 2))[:, None, None] * a).sum(0)),
                       "*mean*"),
    "gradient x activation": (lambda a, g: torch.relu((g * a).sum(0)), "averages each channel"),
    "scaled to [0, 1]": (
        lambda a, g: (m := torch.relu((_weights(g) * a).sum(0))) / m.max(), "scaled to [0, 1]"),
    "channels not summed": (lambda a, g: torch.relu(_weights(g) * a), "one value per position"),
    "weights from the activations": (
        lambda a, g: torch.relu((a.mean(dim=(1, 2))[:, None, None] * a).sum(0)), "differs"),
}


def test_grad_cam_map_accepts_the_solution(capsys):
    got = E.check_grad_cam_map(solution("09", "my_grad_cam_map"), CAM_A, CAM_G)
    assert_correct(capsys, "Grad-CAM map")
    assert torch.allclose(got, torch.relu((_weights(CAM_G) * CAM_A).sum(0)).double())


@pytest.mark.parametrize("wrong", CAM_WRONG, ids=list(CAM_WRONG))
def test_grad_cam_map_rejects(wrong, capsys):
    answer, phrase = CAM_WRONG[wrong]
    got = E.check_grad_cam_map(answer, CAM_A, CAM_G)
    assert_rejected(capsys, "Grad-CAM map", phrase)
    assert torch.allclose(got, torch.relu((_weights(CAM_G) * CAM_A).sum(0)))  # the reference


# --------------------------------------------------------------------------------------------------
# The shared machinery
# --------------------------------------------------------------------------------------------------


def test_a_crash_is_reported_with_the_line_and_falls_back(capsys):
    def crashes(images, batch_size=5_000):
        return 1 / 0

    result = E.check_mean_std(crashes, TRAIN)
    out = assert_rejected(capsys, "channel mean and std", "ZeroDivisionError")
    assert "line" in out and result == compute_mean_std(TRAIN)


def test_every_check_says_not_solved_for_the_placeholder(capsys):
    """What each self-check prints, in a student notebook, before the exercise is done."""
    calls = {
        "channel mean and std": lambda: E.check_mean_std(not_solved, TRAIN),
        "mean of per-image stds": lambda: E.check_mean_of_per_image_std(not_solved, TRAIN),
        "un-normalize": lambda: E.check_denormalize(not_solved, NORMALIZED),
        "stratified train/validation split": lambda: E.check_train_val_split(
            not_solved, LABELS, 20
        ),
        "BasicBlock forward": lambda: E.check_basic_block_forward(not_solved),
        "Bottleneck": lambda: E.check_bottleneck(_not_solved_class()),
        "_make_layer": lambda: E.check_make_layer(not_solved),
        "training loop": lambda: E.check_train_one_epoch(not_solved, BATCHES),
        "early stopping rule": lambda: E.check_should_stop(not_solved),
        "confusion matrix": lambda: E.check_confusion_matrix(not_solved, Y_TRUE, Y_PRED, 10),
        "precision, recall and F1 from the matrix": lambda: E.check_precision_recall_f1(
            not_solved, CM
        ),
        "mean and spread": lambda: E.check_mean_and_spread(not_solved, SEED_ACCURACIES),
        "expected calibration error": lambda: E.check_ece(not_solved, CONFIDENCES, CORRECT, 15),
        "temperature scaling": lambda: E.check_temperature(not_solved, LOGITS, _Y),
        "Grad-CAM map": lambda: E.check_grad_cam_map(not_solved, CAM_A, CAM_G),
    }
    for name, call in calls.items():
        call()
        out = capsys.readouterr().out
        assert out.startswith(f"[{name}] {E.NOT_SOLVED}: {E.FALLBACK}"), out


def _not_solved_class() -> type[nn.Module]:
    class MyBottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            raise NotImplementedError

    return MyBottleneck
