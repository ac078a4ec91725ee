"""Self-checks of notebook 05: the epoch loop, and the stopping rule."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from course_utils.exercises.core import (
    Wrong,
    forbid,
    results_match,
    self_check,
)
from course_utils.models import resnet


def _epoch(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    train_mode: bool = True,
    zero_grad: bool = True,
) -> dict[str, Any]:
    """One epoch written out here, with switches for the mistakes; per-batch losses recorded."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if train_mode:
        model.train()
    losses, hits, sizes = [], [], []
    for images, labels in batches:
        if zero_grad:
            optimizer.zero_grad()
        logits = model(images)
        loss = criterion(logits, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        hits.append((logits.argmax(dim=1) == labels).sum().item())
        sizes.append(len(labels))
    return {
        "losses": np.array(losses),
        "hits": np.array(hits),
        "sizes": np.array(sizes),
        "state": _flat_state(model),
    }


def _flat_state(model: nn.Module) -> torch.Tensor:
    """Every weight and BatchNorm statistic of ``model``, in one vector."""
    return torch.cat([v.detach().flatten().double() for v in model.state_dict().values()])


def _flat_weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().double() for p in model.parameters()])


def _judge_weights(
    net: nn.Module,
    start: nn.Module,
    start_weights: torch.Tensor,
    state: torch.Tensor,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
) -> None:
    """Raise :class:`Wrong`, naming the mistake, if the student's epoch left other weights."""
    got_state = _flat_state(net)
    if torch.equal(_flat_weights(net), start_weights):
        raise Wrong(
            "the weights did not change: for every batch call loss.backward() and then "
            "optimizer.step(), with optimizer.zero_grad() before the backward pass (not "
            "between backward and step, which throws the gradients away)."
        )
    if not results_match(got_state, state):
        piled = _epoch(copy.deepcopy(start), batches, lr, zero_grad=False)
        if results_match(got_state, piled["state"]):
            raise Wrong(
                "the gradients pile up from batch to batch: call optimizer.zero_grad() "
                "before every backward pass."
            )
        raise Wrong(
            "the weights after the epoch differ from the reference loop's: per batch, "
            "zero_grad, forward, loss, backward, step, in that order."
        )


def _judge_numbers(
    got_loss: float, got_accuracy: float, loss: float, accuracy: float, per_batch: dict
) -> None:
    """Raise :class:`Wrong`, naming the mistake, if the epoch's loss or accuracy is off."""
    if not results_match(got_loss, loss):
        if results_match(got_loss, per_batch["losses"].mean()):
            raise Wrong(
                "your loss is the average of the batch means; the last batch is smaller, "
                "so weight each batch's loss by its size and divide by the images seen."
            )
        raise Wrong(
            f"your mean loss is {got_loss:.5f}, expected {loss:.5f} (the loss of every "
            "image, averaged over the epoch)."
        )
    if not results_match(got_accuracy, accuracy):
        if results_match(got_accuracy, 100 * accuracy):
            raise Wrong("the accuracy should be a fraction in [0, 1], not a percentage.")
        if results_match(got_accuracy, (per_batch["hits"] / per_batch["sizes"]).mean()):
            raise Wrong(
                "your accuracy averages the batches' accuracies: count the correct "
                "predictions over all images and divide by the images seen."
            )
        raise Wrong(f"your accuracy is {got_accuracy:.4f}, expected {accuracy:.4f}.")


def _judge_source(student: Callable[..., Any], result: Sequence[Any]) -> None:
    """Raise :class:`Wrong` for the two mistakes a CPU-only check cannot see in the numbers: the
    batches never moved to ``device`` (harmless here, a crash on a GPU), and the loss added up as
    a tensor (every batch's graph then stays in memory until the epoch ends)."""
    if any(isinstance(v, torch.Tensor) and v.requires_grad for v in result):
        raise Wrong(
            "you return a tensor that still holds the autograd graph: add up loss.item() (a "
            "Python number), not the loss tensor, or every batch's graph stays in memory."
        )
    try:
        source = inspect.getsource(student)
    except (OSError, TypeError):  # defined where Python keeps no source: judge the numbers only
        return
    if not re.search(r"\.to\(\s*(device\b|device=)", source):
        raise Wrong(
            "your loop never moves the batches to `device`: call .to(device) on the images and "
            "the labels, or on a GPU the model and the data sit on different devices."
        )
    names = re.findall(r"(\w+)\s*=\s*criterion\(", source)
    if names and not any(re.search(rf"\b{n}\.(item|detach)\(|float\(\s*{n}\b", source)
                         for n in names):  # fmt: skip
        raise Wrong(
            f"you add up the loss tensor `{names[0]}`: add {names[0]}.item() (a Python number) "
            "instead, or every batch's autograd graph stays in memory until the epoch ends."
        )


def _reference_epoch(
    start: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], lr: float
) -> tuple[float, float, torch.Tensor]:
    """Loss, accuracy and weights after one epoch of :func:`course_utils.training.train_one_epoch`
    on a copy of ``start``."""
    from course_utils import training  # lazy: see exercises/__init__.py

    net = copy.deepcopy(start)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    stats = training.train_one_epoch(
        net, batches, nn.CrossEntropyLoss(), opt, "cpu", channels_last=False
    )
    return stats.loss, stats.accuracy, _flat_state(net)


def _student_epoch(
    student: Callable[..., Any],
    start: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
) -> tuple[nn.Module, Any]:
    """A copy of ``start`` after one epoch of the student's function, and what the function
    returned; ``train_one_epoch`` is disabled meanwhile."""
    from course_utils import training  # lazy: see exercises/__init__.py

    net = copy.deepcopy(start)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    with forbid(
        student,
        [(training, "train_one_epoch")],
        "your function calls course_utils' train_one_epoch; write the loop yourself.",
    ):
        result = student(net, batches, nn.CrossEntropyLoss(), opt, "cpu")
    return net, result


def check_train_one_epoch(
    student: Callable[..., Any],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float = 0.05,
) -> tuple[float, float]:
    """Notebook 05, exercise 1: ``student(model, loader, criterion, optimizer, device)``.

    A small ResNet-18 (width 4), left in evaluation mode on purpose, is trained for one epoch over
    ``batches`` (of different sizes, so a loss averaged per batch shows) by the student's function
    and by :func:`course_utils.training.train_one_epoch`; the returned loss and accuracy and the
    weights and BatchNorm statistics afterwards are compared. ``train_one_epoch`` is disabled while
    the student's function runs.

    Returns:
        ``(mean loss, accuracy)`` of the epoch.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        start = resnet(18, width=4).eval()  # eval on purpose: a missing model.train() must show
    start_weights = _flat_weights(start)

    def attempt() -> tuple[float, float]:
        loss, accuracy, state = _reference_epoch(start, batches, lr)
        net, result = _student_epoch(student, start, batches, lr)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise Wrong("return two numbers: (mean loss per image, accuracy).")
        got_loss, got_accuracy = (float(v) for v in result)
        if not net.training:
            raise Wrong(
                "the model is still in evaluation mode: call model.train() first, so that "
                "BatchNorm normalizes with each batch's statistics and updates its running ones."
            )
        _judge_weights(net, start, start_weights, state, batches, lr)
        _judge_numbers(
            got_loss, got_accuracy, loss, accuracy, _epoch(copy.deepcopy(start), batches, lr)
        )
        _judge_source(student, result)
        return got_loss, got_accuracy

    return self_check(
        "training loop",
        attempt,
        lambda: _reference_epoch(start, batches, lr)[:2],
        hint="model.train() first; per batch: zero_grad, forward, loss, backward, step; add up "
        "loss.item() * len(labels) and the correct predictions; divide both by the images seen.",
        uses="your loop's numbers",
    )


#: name -> (validation accuracy per epoch, patience, min_delta): the runs notebook 05's stopping
#: rule is checked on (each one tells a common mistake apart from the right rule).
STOPPING_RUNS: dict[str, tuple[list[float], int, float]] = {
    "steady progress": ([0.30, 0.45, 0.55, 0.61, 0.66, 0.70], 2, 0.0),
    "plateau": ([0.40, 0.52, 0.58, 0.58, 0.57, 0.58, 0.59, 0.60], 3, 0.0),
    "gains below min_delta": ([0.50, 0.55, 0.553, 0.556, 0.558, 0.559], 3, 0.01),
    "slow creep past min_delta": ([0.500, 0.505, 0.509, 0.513, 0.516, 0.519, 0.520], 3, 0.01),
    "dip and partial recovery": ([0.60, 0.50, 0.55, 0.59, 0.58, 0.61, 0.57], 2, 0.0),
    "long plateau": ([0.50, 0.60, 0.60, 0.60, 0.60, 0.60], 2, 0.0),
    # The best moves only on a gain above min_delta: 0.509 does not move it, so 0.515 is a gain
    # on 0.50. A rule over the last `patience` epochs against the best before them stops here.
    "a small gain, then a larger one": ([0.50, 0.509, 0.515, 0.516], 2, 0.01),
}


def stop_decisions(rule: Callable[..., Any], runs: dict = STOPPING_RUNS) -> dict[str, list[bool]]:
    """For every run: ``rule(history_so_far, patience, min_delta)`` after each epoch."""
    return {
        name: [bool(rule(list(values[:n]), patience, min_delta)) for n in range(1, len(values) + 1)]
        for name, (values, patience, min_delta) in runs.items()
    }


def early_stopping_decision(history: list[float], patience: int, min_delta: float = 0.0) -> bool:
    """The stopping question answered by :class:`course_utils.training.EarlyStopping`."""
    from course_utils.training import EarlyStopping  # lazy: see exercises/__init__.py

    stopper = EarlyStopping(patience, min_delta, mode="max")
    for value in history:
        stopper.step(value)
    return stopper.should_stop


def _rule(
    history: list[float],
    patience: int,
    min_delta: float,
    *,
    against: str = "best",
    tie_improves: bool = False,
    use_delta: bool = True,
    higher: bool = True,
    strict: bool = False,
) -> bool:
    """A stopping rule with switches for the common mistakes (the defaults give the right rule)."""
    delta = min_delta if use_delta else 0.0
    compared_with, since = None, 0  # the best value so far (or, mistakenly, the previous one)
    for value in history:
        score = value if higher else -value
        if compared_with is None:
            better = True
        else:
            better = (
                score >= compared_with + delta if tie_improves else score > compared_with + delta
            )
        since = 0 if better else since + 1
        if better or against == "previous":
            compared_with = score
    return since > patience if strict else since >= patience


def _windowed_rule(history: list[float], patience: int, min_delta: float) -> bool:
    """A plausible wrong rule: no gain above min_delta in the last ``patience`` epochs over the
    best value before them."""
    if len(history) <= patience:
        return False
    return max(history[-patience:]) - max(history[:-patience]) <= min_delta


#: (message, rule) for each common mistake, as a stopping rule that makes it: a student's rule
#: whose decisions on every one of :data:`STOPPING_RUNS` equal a mistake's is told that message.
STOPPING_MISTAKES: list[tuple[str, Callable[[list[float], int, float], bool]]] = [
    (
        (
            "you stop one epoch late: stop as soon as the epochs without improvement reach "
            "patience (>=, not >)."
        ),
        lambda h, p, d: _rule(h, p, d, strict=True),
    ),
    (
        (
            "you compare each epoch with the previous one; compare with the best value so far, "
            "or a dip followed by a partial recovery counts as progress."
        ),
        lambda h, p, d: _rule(h, p, d, against="previous"),
    ),
    (
        (
            "a tie with the best counts as an improvement in your rule: only a value above "
            "best + min_delta is one."
        ),
        lambda h, p, d: _rule(h, p, d, tie_improves=True),
    ),
    (
        "your rule ignores min_delta: an improvement must beat the best by more than that.",
        lambda h, p, d: _rule(h, p, d, use_delta=False),
    ),
    (
        "your rule treats lower as better; these are accuracies, higher is better.",
        lambda h, p, d: _rule(h, p, d, higher=False),
    ),
    (
        (
            "you compare the best of the last `patience` epochs with the best before them; the "
            "best moves only when a value beats it by more than min_delta, so count the epochs "
            "since it last moved."
        ),
        _windowed_rule,
    ),
]


def _first_disagreement(got: dict[str, list[bool]], expected: dict[str, list[bool]]) -> str:
    """The first run and epoch where the student's decision differs from the right one, said."""
    name = next(n for n in expected if got[n] != expected[n])
    epoch = next(i for i, (a, b) in enumerate(zip(got[name], expected[name])) if a != b) + 1
    values, patience, min_delta = STOPPING_RUNS[name]
    return (
        f"on {values} with patience {patience} and min_delta {min_delta}, after epoch "
        f"{epoch} you say stop={got[name][epoch - 1]}, the right answer is "
        f"{expected[name][epoch - 1]}."
    )


def check_should_stop(student: Callable[[list[float], int, float], bool]) -> dict[str, list[bool]]:
    """Notebook 05, exercise 2: ``student(history, patience, min_delta)`` says whether to stop.

    Its decision after every epoch of the :data:`STOPPING_RUNS` is compared with
    :class:`course_utils.training.EarlyStopping`'s (disabled while the student's function runs).

    Returns:
        The decisions for every run, from the student's rule when it is right.
    """
    from course_utils import training  # lazy: see exercises/__init__.py

    expected = stop_decisions(early_stopping_decision)

    def attempt() -> dict[str, list[bool]]:
        with forbid(
            student,
            [(training, "EarlyStopping")],
            "your function uses course_utils' EarlyStopping; write the rule yourself.",
        ):
            got = stop_decisions(student)
        if got == expected:
            return got
        found = next((m for m, rule in STOPPING_MISTAKES if stop_decisions(rule) == got), None)
        raise Wrong(found or _first_disagreement(got, expected))

    return self_check(
        "early stopping rule",
        attempt,
        lambda: expected,
        hint="Keep the best value and the epochs since it; a value counts as an improvement only "
        "if it is above best + min_delta; stop once the epochs since the best reach patience (>=).",
        uses="your rule's decisions",
    )
