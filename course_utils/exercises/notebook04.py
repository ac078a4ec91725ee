"""Self-checks of notebook 04: _make_layer, and convolution arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from course_utils.exercises.core import (
    Wrong,
    forbid,
    results_match,
    seeded,
    self_check,
)
from course_utils.exercises.notebook03 import compare_layers
from course_utils.models import BasicBlock, Bottleneck, ResNet, count_parameters


def _reference_stages() -> dict[str, tuple[tuple, nn.Sequential]]:
    """name -> ((block, inplanes, planes, blocks, stride), that stage of a real ResNet)."""
    with torch.random.fork_rng():  # only the first two stages are used: the others get 1 block
        torch.manual_seed(0)
        net18 = ResNet(BasicBlock, (2, 2, 1, 1), width=16)  # ResNet-18's first two stages
        net50 = ResNet(Bottleneck, (3, 4, 1, 1), width=16)  # ResNet-50's
    return {
        "ResNet-18 layer1": ((BasicBlock, 16, 16, 2, 1), net18.layer1),  # identity shortcuts only
        "ResNet-18 layer2": ((BasicBlock, 16, 32, 2, 2), net18.layer2),
        "ResNet-50 layer1": ((Bottleneck, 16, 16, 3, 1), net50.layer1),  # 16 -> 64: a projection
        "ResNet-50 layer2": ((Bottleneck, 64, 32, 4, 2), net50.layer2),
    }


def _judge_blocks(stage: nn.Module, ref: nn.Sequential, spec: tuple, what: str) -> None:
    """Raise :class:`Wrong` unless ``stage`` holds the blocks of ``ref``, with the same layers."""
    block, _, _, blocks, _ = spec
    if not isinstance(stage, nn.Sequential):
        raise Wrong(f"return the blocks wrapped in nn.Sequential(...), got {type(stage).__name__}.")
    if len(stage) != blocks:
        raise Wrong(f"{what}: your stage has {len(stage)} blocks, expected {blocks}.")
    for i, (mine, theirs) in enumerate(zip(stage, ref)):
        if type(mine) is not block:
            raise Wrong(f"{what}: block {i} is a {type(mine).__name__}, expected {block.__name__}.")
        problem = compare_layers(mine.state_dict(), theirs.state_dict(), f"block {i}",
                                 shapes="check the channels each block receives")  # fmt: skip
        if problem:
            raise Wrong(
                f"{what}: {problem} "
                + (
                    "The first block takes `inplanes` channels and the stride."
                    if i == 0
                    else "The later blocks take planes * block.expansion channels and stride 1 "
                    "(the first block, and only the first, takes the stride), so their shortcut "
                    "is the identity."
                )
            )


def _judge_output(
    stage: nn.Sequential, ref: nn.Sequential, inplanes: int, what: str
) -> tuple[int, ...]:
    """Load ``ref``'s weights into ``stage`` and compare their outputs; the output shape if they
    agree, else :class:`Wrong`."""
    stage.load_state_dict(ref.state_dict())
    x = torch.randn(2, inplanes, 8, 8, generator=seeded(5))
    with torch.no_grad():
        got, expected = stage.eval()(x), ref.eval()(x)
    if got.shape != expected.shape or not results_match(got, expected):
        raise Wrong(
            f"{what}: same layers, different output {tuple(got.shape)} (expected "
            f"{tuple(expected.shape)}): the first block, and only the first, takes "
            "the stride."
        )
    return tuple(got.shape)


def check_make_layer(student: Callable[..., nn.Module]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Notebook 04, exercise 1: ``student(block, inplanes, planes, blocks, stride)`` builds a stage.

    Four stages of real ResNets (ResNet-18's and ResNet-50's first two, at width 16) are rebuilt
    with the student's function; the blocks are compared one by one (type and layers), the real
    stage's weights are loaded, and the outputs compared. ``ResNet._make_layer`` is disabled while
    the student's function runs.

    Returns:
        For each of the four stages, by name: ``(parameters, output shape)``.
    """
    stages = _reference_stages()
    message = "your function uses the ResNet class (its _make_layer); build the blocks yourself."

    def attempt() -> dict[str, tuple[int, tuple[int, ...]]]:
        results = {}
        for name, (spec, ref) in stages.items():
            block, inplanes, planes, blocks, stride = spec
            what = f"{block.__name__}, {blocks} blocks, {inplanes} -> {planes}, stride {stride}"
            with forbid(student, [(ResNet, "_make_layer")], message):
                stage = student(block, inplanes, planes, blocks, stride)
            _judge_blocks(stage, ref, spec, what)
            results[name] = (count_parameters(stage), _judge_output(stage, ref, inplanes, what))
        return results

    return self_check(
        "_make_layer",
        attempt,
        lambda: {
            name: (count_parameters(ref), tuple(ref.eval()(torch.zeros(2, spec[1], 8, 8)).shape))
            for name, (spec, ref) in stages.items()
        },
        hint="First block: block(inplanes, planes, stride); then blocks - 1 times "
        "block(planes * block.expansion, planes); return nn.Sequential(first, *others).",
        uses="your _make_layer",
    )


#: (c_in, c_out, kernel, stride, padding, input size, bias): the cases of notebook 04's exercise 2.
CONV_CASES = (
    (3, 64, 3, 1, 1, 32, False),  # CIFAR stem
    (3, 64, 7, 2, 3, 32, False),  # ImageNet stem on a CIFAR image
    (3, 64, 7, 2, 3, 227, False),  # ImageNet stem on a 227 x 227 image
    (64, 128, 3, 2, 1, 32, False),  # first conv of layer2
    (64, 128, 1, 2, 0, 32, False),  # projection shortcut of layer2
    (16, 10, 5, 1, 0, 12, True),  # something else, with a bias
    (8, 4, 5, 3, 2, 17, True),  # stride 3: the division leaves a remainder
)


def measure_conv(case: tuple) -> tuple[int, int, int]:
    """(output size, parameters, multiply-adds) of a real ``nn.Conv2d``, counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode  # lazy: see exercises/__init__.py

    c_in, c_out, k, s, p, n, bias = case
    conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=bias)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = conv(torch.zeros(1, c_in, n, n))  # (1, c_out, H_out, W_out)
    return out.shape[-1], count_parameters(conv), counter.get_total_flops() // 2


def _is_whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _size_mistakes(case: tuple, out: int) -> list[tuple[str, Any]]:
    _, _, k, s, p, n, _ = case
    return [
        (
            "Use floor division //: a window that does not fit is dropped.",
            (n + 2 * p - k) / s + 1,
        ),
        (
            "Round down, not up (//): a window that does not fit is dropped.",
            math.ceil((n + 2 * p - k) / s) + 1,
        ),
        ("The padding is missing: it adds p on both sides, 2p in all.", (n - k) // s + 1),
        ("The padding goes on both sides: n + 2p.", (n + p - k) // s + 1),
        ("The + 1 is missing: the first window starts at position 0.", (n + 2 * p - k) // s),
    ]


def _parameter_mistakes(case: tuple, out: int) -> list[tuple[str, Any]]:
    c_in, c_out, k, *_, bias = case
    return [
        (
            "The bias adds one parameter per output channel when bias=True.",
            c_out * c_in * k * k,
        ),
        ("The bias has one value per *output* channel.", c_out * c_in * k * k + c_in * bias),
        ("A k x k kernel has k * k weights per input channel.", c_out * (c_in * k + bias)),
    ]


def _mac_mistakes(case: tuple, out: int) -> list[tuple[str, Any]]:
    c_in, c_out, k, *_ = case
    macs = c_out * out * out * c_in * k * k
    return [
        (
            (
                "That counts FLOPs: a multiply-add (MAC) is one multiplication plus one "
                "addition, "
                "count it once."
            ),
            2 * macs,
        ),
        ("Every output value sums c_in * k * k products: c_in is missing.", macs // c_in),
        ("Every output value sums c_in * k * k products: k * k is missing.", macs // (k * k)),
        ("The output is out x out positions: square the size.", macs // out),
    ]


def _check_formula(
    measured: list[tuple[int, int, int]],
    name: str,
    column: int,
    call: Callable[[tuple, int], Any],
    mistakes: Callable[[tuple, int], list[tuple[str, Any]]],
    hint: str,
) -> list[int]:
    def attempt() -> list[int]:
        got = [call(case, truth[0]) for case, truth in zip(CONV_CASES, measured)]
        want = [truth[column] for truth in measured]
        if all(_is_whole(g) and g == w for g, w in zip(got, want)):
            return got
        candidates = [mistakes(case, truth[0]) for case, truth in zip(CONV_CASES, measured)]
        found = next(
            (
                message
                for j, (message, _) in enumerate(candidates[0])
                if all(g == c[j][1] for g, c in zip(got, candidates))
            ),
            None,
        )
        if found is None and all(g == w for g, w in zip(got, want)):
            found = "Return a whole number (int), not a float: use floor division //."
        i = next(i for i, (g, w) in enumerate(zip(got, want)) if not (_is_whole(g) and g == w))
        c_in, c_out, k, s, p, n, bias = CONV_CASES[i]
        raise Wrong(
            f"for {c_in} -> {c_out} channels, {k}x{k}, stride {s}, padding {p}, on "
            f"{n}x{n}{', with bias' if bias else ''}: you get {got[i]!r}, expected "
            f"{want[i]}. " + (found or "Check the formula above.")
        )

    return self_check(
        name, attempt, lambda: [truth[column] for truth in measured], hint, uses=f"your {name}"
    )


def check_conv_arithmetic(
    conv_output_size: Callable[..., int],
    conv_parameters: Callable[..., int],
    conv_macs: Callable[..., int],
) -> list[tuple[int, int, int]]:
    """Notebook 04, exercise 2: the three formulas, each checked on :data:`CONV_CASES` against a
    real convolution (its output shape, its parameters, and ``FlopCounterMode``'s count).

    Each function gets its own line; each is used where it is right.

    Returns:
        ``(output size, parameters, multiply-adds)`` for every case.
    """
    measured = [measure_conv(case) for case in CONV_CASES]

    sizes = _check_formula(
        measured,
        "conv_output_size",
        0,
        lambda c, out: conv_output_size(c[5], c[2], stride=c[3], padding=c[4]),
        _size_mistakes,
        "(n + 2p - k) // s + 1",
    )
    params = _check_formula(
        measured,
        "conv_parameters",
        1,
        lambda c, out: conv_parameters(c[0], c[1], c[2], bias=c[6]),
        _parameter_mistakes,
        "c_out * (c_in * k * k + (1 if bias else 0))",
    )
    macs = _check_formula(
        measured,
        "conv_macs",
        2,
        lambda c, out: conv_macs(c[0], c[1], c[2], out),
        _mac_mistakes,
        "c_out * out * out * c_in * k * k",
    )
    return list(zip(sizes, params, macs))
