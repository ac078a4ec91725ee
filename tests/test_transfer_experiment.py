"""Notebook 08's experiment (course_utils.transfer_experiment) and its committed table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from course_utils import experiments
from course_utils.checkpoints import load_checkpoint
from course_utils.cli import main
from course_utils.config import TrainConfig
from course_utils.data import CIFAR10_CLASSES, CIFAR10Arrays, Splits
from course_utils.experiments import NOTEBOOK_08_TABLES, read_table, seeds_in
from course_utils.transfer import ANIMALS, VEHICLES
from course_utils.transfer_experiment import (
    METHODS,
    TransferSizes,
    paired_gains,
    pretrain,
    split_tasks,
    summarize_transfer,
    train_and_test,
    transfer_claims,
    transfer_runs,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_split(per_class: int, seed: int) -> CIFAR10Arrays:
    """Random images, ``per_class`` of each of CIFAR-10's ten classes, shuffled."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10), per_class))
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return CIFAR10Arrays(images, labels, CIFAR10_CLASSES, "fake")


@pytest.fixture(scope="module")
def task():
    return split_tasks(Splits(fake_split(20, 0), fake_split(4, 1), fake_split(6, 2)))


@pytest.fixture(scope="module")
def pretrained(task, tmp_path_factory):
    cfg = TrainConfig(width=8, epochs=1, batch_size=40, eval_batch_size=50, patience=None,
                      schedule="none", num_workers=0, seed=0)  # fmt: skip
    return pretrain(task.animals, cfg, torch.device("cpu"), tmp_path_factory.mktemp("animals"))


def test_the_tasks_share_no_class_and_are_numbered_from_zero(task):
    assert task.animals.train.classes == ANIMALS and task.vehicles_test.classes == VEHICLES
    assert len(task.animals.train) == 6 * 20 and len(task.vehicles_train) == 4 * 20
    for part in (task.animals.train, task.animals.val, task.vehicles_train, task.vehicles_test):
        assert sorted(np.unique(part.labels)) == list(range(len(part.classes)))
    # the vehicle images are CIFAR-10's airplanes, automobiles, ships and trucks, in their order
    source = fake_split(20, 0)
    original = [CIFAR10_CLASSES.index(c) for c in VEHICLES]
    np.testing.assert_array_equal(task.vehicles_train.images,
                                  source.images[np.isin(source.labels, original)])  # fmt: skip


def test_pretraining_keeps_the_animal_statistics_and_its_best_epoch(task, pretrained):
    pixels = task.animals.train.images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(pretrained.mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(pretrained.std, pixels.std(0), atol=1e-6)
    state = load_checkpoint(pretrained.checkpoint)
    assert state["model"]["fc.weight"].shape == (len(ANIMALS), 8 * 8)  # width 8: 64 features
    assert 0 <= pretrained.val_accuracy <= 1 and pretrained.width == 8


def test_one_row_per_size_and_method_repeatable_from_the_seed(task, pretrained):
    sizes = TransferSizes(pretrain_epochs=1, labels_per_class=(16, 20), steps=3)
    table = transfer_runs(task, pretrained, 5, sizes, torch.device("cpu"))
    assert list(table["method"]) == list(METHODS) * 2
    assert list(table["labelled_per_class"]) == [16] * 3 + [20] * 3
    np.testing.assert_allclose(table["passes"], [3 * 64 / 64] * 3 + [3 * 64 / 80] * 3)
    for column in ("train_accuracy", "test_accuracy"):
        assert table[column].between(0, 1).all()
    # a test accuracy is a multiple of 1/24 (24 vehicle test images), a training one of 1/64, 1/80
    assert np.allclose(table["test_accuracy"] * 24, np.round(table["test_accuracy"] * 24))
    assert (table["seed"] == 5).all() and (table["pretrain_epochs"] == 1).all()
    again = transfer_runs(task, pretrained, 5, sizes, torch.device("cpu"))
    pd.testing.assert_frame_equal(table.drop(columns=["seconds", "pretrain_seconds"]),
                                  again.drop(columns=["seconds", "pretrain_seconds"]))  # fmt: skip


def test_too_few_labels_for_one_batch_is_an_error_not_a_hang(task, pretrained):
    few = task.vehicles_train.subset(np.arange(10))
    cfg = TrainConfig(width=8, batch_size=64, patience=None, num_workers=0)
    with pytest.raises(ValueError, match="10 labelled images do not fill one batch of 64"):
        train_and_test(cfg, few, task.vehicles_test, 3, pretrained, torch.device("cpu"))


def hand_table() -> pd.DataFrame:
    """Two seeds, one size: fine-tuning beats scratch by 0.10 and 0.20, the probe trails it by 0.05."""
    rows = []
    for seed, scratch in ((0, 0.50), (1, 0.40)):
        for method, gain in zip(METHODS, (0.0, 0.05 + 0.10 * seed, 0.10 + 0.10 * seed)):
            rows.append({"seed": seed, "labelled_per_class": 100, "method": method,
                         "train_accuracy": 1.0, "test_accuracy": scratch + gain})  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_gains_subtract_within_each_seed():
    gains = paired_gains(hand_table(), "fine-tuning", "from scratch")
    np.testing.assert_allclose(gains.loc[100, [0, 1]], [0.10, 0.20])
    gains = paired_gains(hand_table(), "linear probe", "fine-tuning")
    np.testing.assert_allclose(gains.loc[100, [0, 1]], [-0.05, -0.05])
    summary = summarize_transfer(hand_table())
    assert summary.loc[(100, "from scratch"), ("test_accuracy", "min")] == pytest.approx(0.40)
    assert summary.loc[(100, "from scratch"), ("test_accuracy", "max")] == pytest.approx(0.50)
    assert summary.loc[(100, "from scratch"), ("test_accuracy", "mean")] == pytest.approx(0.45)
    assert summary.loc[(100, "fine-tuning"), ("seeds", "")] == 2


def test_the_experiment_refuses_a_time_budget_before_any_work(capsys):
    assert main(["experiment", "transfer", "--minutes", "5"]) == 2
    assert "runs fixed epochs and steps" in capsys.readouterr().err


def test_notebook_08_reads_the_committed_table_and_its_claims_hold():
    notebook = (experiments.PROJECT_ROOT / "notebooks" / "08_transfer_learning.py").read_text()
    assert set(re.findall(r'read_table\("([^"]+)"\)', notebook)) == set(NOTEBOOK_08_TABLES)
    table = read_table("transfer")
    assert seeds_in(table) >= NOTEBOOK_08_TABLES["transfer"]
    assert table["command"].str.match(r"^python -m course_utils experiment transfer ").all()
    assert not table["command"].str.contains("--smoke").any()
    assert table["machine"].notna().all() and table["date"].notna().all()
    sizes = sorted(table["labelled_per_class"].unique())
    assert len(table) == seeds_in(table) * len(sizes) * len(METHODS)
    claims = transfer_claims(table)
    assert claims and all(claims.values()), claims


def test_the_claims_are_computed_so_a_table_where_fine_tuning_loses_fails_them():
    table = read_table("transfer")
    swapped = table.replace({"method": {"fine-tuning": "from scratch",
                                        "from scratch": "fine-tuning"}})  # fmt: skip
    assert not all(transfer_claims(swapped).values())
