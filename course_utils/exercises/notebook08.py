"""Self-check of notebook 08: optimizer parameter groups for fine-tuning."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from course_utils.exercises.core import Wrong, forbid, self_check

#: ``(lr, backbone_lr)`` pairs the check tries: two, so that a hard-coded 0.01 shows up.
GROUP_CASES = ((0.1, 0.1), (0.2, 0.5))


def _rates(groups: Any, model: nn.Module) -> dict[str, float]:
    """``transfer.learning_rates`` of the student's groups, with the slips named."""
    from course_utils.transfer import learning_rates  # lazy: see exercises/__init__.py

    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        raise Wrong(
            f"return a list of dictionaries, one per group, got {type(groups).__name__}: "
            '[{"params": [...], "lr": ...}, {"params": [...], "lr": ...}].'
        )
    for group in groups:
        if "params" not in group or "lr" not in group:
            raise Wrong(f'every group needs "params" and "lr"; one has only {sorted(group)}.')
    try:
        return learning_rates(groups, model)
    except ValueError as exc:  # a parameter in two groups
        raise Wrong(
            f"{exc}: the backbone's group must leave out the head's weight and bias (compare "
            "parameters by id(p))."
        ) from exc


def _head_without_bias(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose head has no bias: its last two parameters are then the head's
    weight and a backbone parameter, so a head taken by position shows."""
    other = copy.deepcopy(model)
    other.fc = nn.Linear(model.fc.in_features, model.fc.out_features, bias=False)
    return other


def _judge_rates(
    got: dict[str, float], expected: dict[str, float], head: set[str], lr: float, backbone_lr: float
) -> None:
    """Raise :class:`Wrong`, naming the mistake, unless every parameter learns at the expected
    rate; ``head`` names the head's parameters."""
    missing = sorted(set(expected) - set(got))
    if missing:
        where = "the head's" if set(missing) <= head else "some backbone"
        raise Wrong(
            f"{len(missing)} parameters are in no group ({where}, such as {missing[0]}): "
            "they would never be trained."
        )
    wrong = [n for n in expected if abs(got[n] - expected[n]) > 1e-12 * expected[n]]
    if not wrong:
        return
    head_lr = {got[n] for n in head}
    backbone_lrs = {got[n] for n in expected if n not in head}
    if head_lr == {lr * backbone_lr} and backbone_lrs == {lr}:
        raise Wrong("the two learning rates are swapped: the head learns at lr, the "
                    "backbone at lr * backbone_lr.")  # fmt: skip
    if backbone_lrs == {lr / backbone_lr}:
        raise Wrong("the backbone's rate is lr / backbone_lr; it should be "
                    "lr * backbone_lr, smaller than lr.")  # fmt: skip
    if head_lr == backbone_lrs:
        raise Wrong("every parameter gets the same learning rate: the backbone needs "
                    "its own group at lr * backbone_lr.")  # fmt: skip
    raise Wrong(
        f"{wrong[0]} learns at {got[wrong[0]]:g}, expected {expected[wrong[0]]:g} "
        f"(lr={lr}, backbone_lr={backbone_lr})."
    )


def _judge_groups(
    student: Callable[[nn.Module, float, float], Any], model: nn.Module
) -> list[dict[str, float]]:
    """The learning rate of each parameter in the student's groups for ``model``, for every pair
    of :data:`GROUP_CASES`, each checked against :func:`course_utils.transfer.parameter_groups`
    (which is disabled while the student's function runs)."""
    from course_utils import transfer  # lazy: see exercises/__init__.py

    head = {name for name, _ in model.named_parameters() if name.startswith("fc.")}
    results = []
    for lr, backbone_lr in GROUP_CASES:
        with forbid(student, [(transfer, "parameter_groups")],
                     "your function calls course_utils' parameter_groups; build the groups "
                     "yourself."):  # fmt: skip
            got = _rates(student(model, lr, backbone_lr), model)
        expected = transfer.learning_rates(transfer.parameter_groups(model, lr, backbone_lr), model)
        _judge_rates(got, expected, head, lr, backbone_lr)
        results.append(got)
    return results


def check_parameter_groups(
    student: Callable[[nn.Module, float, float], Any], model: nn.Module
) -> dict[str, float]:
    """Notebook 08: ``student(model, lr, backbone_lr)`` returns the fine-tuning parameter groups.

    Every parameter of ``model`` must get exactly one learning rate: ``lr`` for the head
    (``model.fc``) and ``lr * backbone_lr`` for the rest, checked for two ``(lr, backbone_lr)``
    pairs against :func:`course_utils.transfer.parameter_groups`, which is disabled while the
    student's function runs.

    Returns:
        The learning rate of each named parameter (``transfer.learning_rates``) for the first pair.
    """
    from course_utils import transfer  # lazy: see exercises/__init__.py

    def attempt() -> dict[str, float]:
        results = _judge_groups(student, model)
        try:
            _judge_groups(student, _head_without_bias(model))
        except Wrong:
            raise Wrong(
                "your groups are right for this model only: on the same network with a head "
                "without a bias, they are wrong. Take the head by name, model.fc.parameters(), "
                "not by its position among the parameters."
            ) from None
        return results[0]

    first = GROUP_CASES[0]
    return self_check(
        "Exercise: parameter groups",
        attempt,
        lambda: transfer.learning_rates(transfer.parameter_groups(model, *first), model),
        hint="model.fc's weight and bias at lr; every other parameter, once, at lr * backbone_lr.",
    )
