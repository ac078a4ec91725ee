"""The experiment runner: a grid of real (smoke-sized) runs, one table, and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from course_utils import experiments
from course_utils.experiments import run_experiment, run_flags, summarize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flags_of_a_configuration():
    assert run_flags({"schedule": "cyclic", "tta": True, "amp": False, "depth": 56}) == [
        "--schedule", "cyclic", "--tta", "--no-amp", "--depth", "56",
    ]  # fmt: skip


def test_every_configuration_is_a_valid_run():
    """Every grid builds a valid configuration of the cpu preset (a typo fails here, not hours
    into an experiment)."""
    from course_utils.cli import build_parser, resolve_config

    for grid in experiments.EXPERIMENTS.values():
        for changes in grid.values():
            args = build_parser().parse_args(["train", "--preset", "cpu", *run_flags(changes)])
            cfg, _ = resolve_config(args, __import__("torch").device("cpu"))
            assert all(getattr(cfg, k) == v for k, v in changes.items())


@pytest.mark.timeout(600)
def test_a_grid_runs_writes_its_table_and_resumes(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COURSE_DATA_DIR", str(cifar_root))
    monkeypatch.setitem(
        experiments.EXPERIMENTS,
        "tiny",
        {"plain-8": {"arch": "cifar_resnet", "depth": 8, "shortcut": "none"},
         "resnet-8": {"arch": "cifar_resnet", "depth": 8, "shortcut": "A"}},
    )  # fmt: skip
    runs, results = tmp_path / "runs", tmp_path / "results"
    table = run_experiment("tiny", [0], smoke=True, runs_root=runs, results_dir=results)
    assert list(table["configuration"]) == ["plain-8", "resnet-8"]
    saved = pd.read_csv(results / "tiny-smoke.csv")
    assert len(saved) == 2 and set(saved["seed"]) == {0}
    for _, row in saved.iterrows():
        errors = json.loads(row["train_error_per_epoch"])
        assert len(errors) == row["epochs"] and all(0 <= e <= 1 for e in errors)
        assert "--shortcut" in row["command"] and row["machine"]
    metrics = runs / "tiny" / "resnet-8-seed0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    again = run_experiment("tiny", [0], smoke=True, runs_root=runs, results_dir=results)
    assert metrics.stat().st_mtime_ns == before  # finished runs are read, not repeated
    pd.testing.assert_frame_equal(again.drop(columns="date"), table.drop(columns="date"))
    summary = summarize(table)
    assert list(summary["seeds"]) == [1, 1]
