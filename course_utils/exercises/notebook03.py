"""Self-checks of notebook 03: the BasicBlock's forward pass, and the Bottleneck."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from course_utils.exercises.core import (
    Wrong,
    _where,
    first_match,
    forbid,
    randomize_batchnorm,
    results_match,
    seeded,
    self_check,
)
from course_utils.models import BasicBlock, Bottleneck


def _basic_block_variants(block: BasicBlock, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The right output of ``block`` and (message, output) for plausible mistakes, computed from
    its layers without calling its ``forward``."""
    relu = torch.relu  # never block.relu: it works in place
    shortcut = x if block.downsample is None else block.downsample(x)
    c1 = block.bn1(block.conv1(x))
    branch = block.bn2(block.conv2(relu(c1)))
    relu_first = (
        "the ReLU comes after the addition, not before it: relu(F(x) + shortcut). With a "
        "ReLU before, the branch could only ever add to its input."
    )
    return relu(branch + shortcut), [
        (
            (
                "your output is the residual branch alone: add the shortcut (x, or "
                "block.downsample(x)) "
                "before the last ReLU."
            ),
            relu(branch),
        ),
        (relu_first, relu(branch) + shortcut),
        (relu_first, relu(relu(branch) + shortcut)),
        ("the block ends with a ReLU after the addition.", branch + shortcut),
        (
            "a BatchNorm is missing: block.bn2 comes right after block.conv2.",
            relu(block.conv2(relu(c1)) + shortcut),
        ),
        (
            "a BatchNorm is missing: block.bn1 comes right after block.conv1.",
            relu(block.bn2(block.conv2(relu(block.conv1(x)))) + shortcut),
        ),
        (
            "the ReLU between the two convolutions is missing.",
            relu(block.bn2(block.conv2(c1)) + shortcut),
        ),
        (
            (
                "the shortcut must be the block's input x (or its projection), not the output of "
                "the "
                "first convolution."
            ),
            relu(branch + c1) if block.downsample is None else branch,
        ),
    ]


def _judge_block_forward(student: Callable, block: BasicBlock, x: torch.Tensor) -> None:
    """Run ``student(block, x)`` with the block's own forward disabled and its layers watched;
    raise :class:`Wrong`, naming the mistake, unless the output is right."""
    with torch.no_grad():
        right, mistakes = _basic_block_variants(block, x.clone())
    used: set[str] = set()
    hooks = [
        module.register_forward_hook(lambda *_, name=name, used=used: used.add(name))
        for name, module in block.named_children()
        if name != "relu"
    ]
    kind = "an identity" if block.downsample is None else "a projection"
    try:
        with (
            torch.no_grad(),
            forbid(
                student,
                [(BasicBlock, "forward")],
                "your function calls the block's own forward (block(x) "
                "or block.forward(x)): compute the output from "
                "block.conv1, block.bn1, ... yourself.",
            ),
        ):
            got = student(block, x.clone())
    except (NotImplementedError, Wrong):
        raise
    except Exception as exc:  # say on which block it failed
        raise Wrong(
            f"on the block with {kind} shortcut your function raised "
            f"{type(exc).__name__}: {exc}{_where(exc)}."
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(got, torch.Tensor):
        raise Wrong(
            f"return the output tensor (on the block with {kind} shortcut, "
            f"your function returned {type(got).__name__})."
        )
    if results_match(got, right):
        return
    unused = sorted(
        {"conv1", "bn1", "conv2", "bn2", "downsample"}
        & {name for name, _ in block.named_children()} - used
    )
    message = first_match(got, [(m, lambda v=v: v) for m, v in mistakes])
    if message is None and unused:
        message = f"your function never uses block.{', block.'.join(unused)}."
    raise Wrong(
        f"on the block with {kind} shortcut: "
        + (message or "your output differs from relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut).")
    )


def check_basic_block_forward(
    student: Callable[[BasicBlock, torch.Tensor], torch.Tensor],
) -> Callable:
    """Notebook 03, exercise 1: ``student(block, x)`` must compute the block's output.

    The check makes two blocks (identity and projection shortcut) whose BatchNorms have random
    statistics and scales, in evaluation mode, so that a forgotten or misplaced BatchNorm changes
    the result. It compares the student's output with one it computes from the block's layers, and
    while the student's function runs, ``BasicBlock.forward`` is disabled: ``return block(x)``
    is reported, not accepted. Hooks record which of the block's layers were used.

    Returns:
        The forward function to use: the student's when correct, else ``lambda block, x: block(x)``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        blocks = [
            randomize_batchnorm(BasicBlock(16, 16), seed=1),
            randomize_batchnorm(BasicBlock(16, 32, stride=2), seed=2),
        ]
    x = torch.randn(2, 16, 8, 8, generator=seeded(4))  # (B, C, H, W)

    def attempt() -> Callable:
        for block in blocks:
            _judge_block_forward(student, block, x)
        return student

    return self_check(
        "BasicBlock forward",
        attempt,
        lambda: lambda block, x: block(x),
        hint="out = relu(bn1(conv1(x))); out = bn2(conv2(out)); shortcut = x if "
        "block.downsample is None else block.downsample(x); return relu(out + shortcut).",
        uses="your forward function",
    )


BOTTLENECK_CASES = ((64, 64, 1), (256, 64, 1), (256, 128, 2))  # (inplanes, planes, stride)
_BOTTLENECK_NAMES = "conv1, bn1, conv2, bn2, conv3, bn3 and downsample"


def compare_layers(
    got: dict[str, torch.Tensor],
    want: dict[str, torch.Tensor],
    what: str,
    shapes: str = "1x1 reduce to planes, 3x3 at planes, 1x1 expand to planes * 4",
) -> str | None:
    """What differs between two state_dicts' layer names and shapes, said for a student, or None."""
    got = {k: v for k, v in got.items() if not k.endswith("num_batches_tracked")}
    want = {k: v for k, v in want.items() if not k.endswith("num_batches_tracked")}
    for key in sorted(set(got) & set(want)):
        if got[key].shape != want[key].shape:
            return (
                f"{what}: {key} has shape {tuple(got[key].shape)}, expected "
                f"{tuple(want[key].shape)} ({shapes})."
            )
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if any(k.startswith("downsample.1") for k in missing) and not any(
        k.startswith("downsample.0") for k in missing
    ):
        return (
            f"{what}: the projection shortcut needs its BatchNorm: "
            "nn.Sequential(conv1x1(...), nn.BatchNorm2d(...))."
        )
    if missing and all(k.startswith("downsample") for k in missing) and not extra:
        return (
            f"{what}: this block needs a projection shortcut (self.downsample = 1x1 conv with the "
            "stride + BatchNorm), because its input and output differ in channels or size."
        )
    if extra and all(k.startswith("downsample") for k in extra) and not missing:
        return (
            f"{what}: input and output have the same shape here, so the shortcut is the identity: "
            "no projection (downsample = None)."
        )
    if missing or extra:
        return (
            f"{what}: your layers are {', '.join(sorted({k.rsplit('.', 1)[0] for k in got}))}; "
            f"expected {', '.join(sorted({k.rsplit('.', 1)[0] for k in want}))}. Use the names "
            f"{_BOTTLENECK_NAMES} (torchvision's), and exactly these layers."
        )
    return None


def _bottleneck_variants(
    ref: Bottleneck, x: torch.Tensor
) -> list[tuple[str, Callable[[], torch.Tensor]]]:
    relu = torch.relu
    shortcut = x if ref.downsample is None else ref.downsample(x)
    h1 = relu(ref.bn1(ref.conv1(x)))
    branch = ref.bn3(ref.conv3(relu(ref.bn2(ref.conv2(h1)))))
    stride = ref.conv2.stride

    def stride_on_conv1() -> torch.Tensor:
        h = relu(ref.bn1(nn.functional.conv2d(x, ref.conv1.weight, stride=stride)))
        h = relu(ref.bn2(nn.functional.conv2d(h, ref.conv2.weight, padding=1)))
        return relu(ref.bn3(ref.conv3(h)) + shortcut)

    def branch_with(relu1: Callable, relu2: Callable) -> torch.Tensor:
        h = relu1(ref.bn1(ref.conv1(x)))
        return relu(ref.bn3(ref.conv3(relu2(ref.bn2(ref.conv2(h))))) + shortcut)

    missing_relu = "a ReLU is missing inside the branch: one after bn1 and one after bn2."
    return [
        (
            (
                "your forward has no skip connection: add the shortcut (x or self.downsample(x)) "
                "before "
                "the last ReLU."
            ),
            lambda: relu(branch),
        ),
        ("the ReLU comes after the addition, not before it.", lambda: relu(branch) + shortcut),
        (
            "the ReLU comes after the addition, not before it.",
            lambda: relu(relu(branch) + shortcut),
        ),
        ("the block ends with a ReLU after the addition.", lambda: branch + shortcut),
        (
            (
                "the stride belongs on the 3x3 convolution (conv2), as in torchvision; a strided "
                "1x1 conv "
                "skips three quarters of the pixels."
            ),
            stride_on_conv1,
        ),
        (missing_relu, lambda: branch_with(relu, lambda t: t)),
        (missing_relu, lambda: branch_with(lambda t: t, relu)),
        (missing_relu, lambda: branch_with(lambda t: t, lambda t: t)),
    ]


#: What a student's block is told when it uses course_utils' Bottleneck instead of its own layers.
_OWN_BOTTLENECK = (
    "your block uses course_utils' Bottleneck; build it from convolutions and BatchNorms."
)


def _judge_bottleneck_class(student: type[nn.Module]) -> None:
    """Raise :class:`Wrong` unless ``student`` is an nn.Module class of its own, not ours."""
    if not (isinstance(student, type) and issubclass(student, nn.Module)):
        raise Wrong("MyBottleneck should be a class derived from nn.Module.")
    if issubclass(student, (Bottleneck, BasicBlock)):
        raise Wrong(
            "your class derives from course_utils' block: derive from nn.Module and "
            "build the layers yourself."
        )
    if vars(student).get("forward") is vars(Bottleneck)["forward"]:
        raise Wrong(_OWN_BOTTLENECK)


def _judge_bottleneck_case(student: type[nn.Module], index: int) -> None:
    """Build case ``index`` of :data:`BOTTLENECK_CASES` with the student's class and with
    ``Bottleneck``; raise :class:`Wrong`, naming the mistake, unless layers and output agree."""
    inplanes, planes, stride = BOTTLENECK_CASES[index]
    what = f"MyBottleneck({inplanes}, {planes}, stride={stride})"
    with torch.random.fork_rng():
        torch.manual_seed(index)
        ref = randomize_batchnorm(Bottleneck(inplanes, planes, stride), seed=10 + index)
    x = torch.randn(2, inplanes, 8, 8, generator=seeded(20 + index))
    with torch.no_grad():
        expected = ref(x)
        variants = [(m, (lambda f=f: f())) for m, f in _bottleneck_variants(ref, x)]
    with forbid(student, [(Bottleneck, "forward"), (Bottleneck, "__init__")], _OWN_BOTTLENECK):
        block = student(inplanes, planes, stride)
        problem = compare_layers(block.state_dict(), ref.state_dict(), what)
        if problem:
            raise Wrong(problem)
        block.load_state_dict(ref.state_dict())
        with torch.no_grad():
            got = block.eval()(x.clone())
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise Wrong(f"{what}: the output is {shape}, expected {tuple(expected.shape)}.")
    if not results_match(got, expected):
        with torch.no_grad():
            found = first_match(got, variants)
        raise Wrong(
            f"{what}: "
            + (
                found
                or "your output differs from relu(bn3(conv3(relu("
                "bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut)."
            )
        )


def check_bottleneck(student: type[nn.Module]) -> type[nn.Module]:
    """Notebook 03, exercise 2: a Bottleneck block class with torchvision's layer names.

    For each case of :data:`BOTTLENECK_CASES` it builds the student's block, compares its layers
    (names and shapes) with ``course_utils``'s ``Bottleneck``, loads the same weights and random
    BatchNorm statistics into both, and compares their outputs: a forward with no skip, a ReLU
    before the addition or the stride on the wrong convolution gives another output and is named.
    Subclassing or calling ``Bottleneck`` is reported.

    Returns:
        The block class to use: the student's when correct, else :class:`Bottleneck`.
    """

    def attempt() -> type[nn.Module]:
        _judge_bottleneck_class(student)
        for index in range(len(BOTTLENECK_CASES)):
            _judge_bottleneck_case(student, index)
        return student

    return self_check(
        "Bottleneck",
        attempt,
        lambda: Bottleneck,
        hint="conv1 = conv1x1(inplanes, planes), conv2 = conv3x3(planes, planes, stride), conv3 = "
        "conv1x1(planes, 4 * planes), each followed by its BatchNorm; downsample = 1x1 conv + BN "
        "when stride != 1 or inplanes != 4 * planes, else None.",
        uses="your MyBottleneck",
    )
