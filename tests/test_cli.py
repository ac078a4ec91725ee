"""Tests of ``python -m course_utils train``: a smoke run end to end on real data, resume, flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from course_utils.cli import build_parser, main, resolve_config
from course_utils.config import PROJECT_ROOT, SMOKE
from course_utils.data import CIFAR10_CLASSES
from course_utils.training import PRESETS, TrainConfig, load_checkpoint

METRICS_KEYS = {
    "test_accuracy",
    "test_loss",
    "best_epoch",
    "epochs_run",
    "wall_seconds",
    "config",
    "device",
    "per_class_accuracy",
    "stopped_early",
    "architecture",
    "data",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_run(cifar_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One smoke run through the real command line, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli") / "run"
    # One thread, as in one_thread(): the smoke model is small, and a busy machine slows it less.
    env = {**os.environ, "COURSE_DATA_DIR": str(cifar_root), "OMP_NUM_THREADS": "1"}
    env.pop("COURSE_SMOKE", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "course_utils",
            "train",
            "--smoke",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_smoke_run_writes_the_run_folder(smoke_run: tuple[Path, str]):
    out, stdout = smoke_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRICS_KEYS <= set(metrics)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["epochs_run"] == SMOKE.epochs and 1 <= metrics["best_epoch"] <= SMOKE.epochs
    assert metrics["device"] == "cpu" or torch.cuda.is_available()
    assert set(metrics["per_class_accuracy"]) == set(CIFAR10_CLASSES)
    assert metrics["data"]["test"] == 10 * SMOKE.test_per_class
    cfg = TrainConfig.from_dict(metrics["config"])
    assert cfg.smoke and cfg.epochs == SMOKE.epochs and cfg.width == SMOKE.width

    history = pd.read_csv(out / "history.csv")
    assert len(history) == SMOKE.epochs and list(history["epoch"]) == [1, 2]
    for name in ("history.png", "confusion.png", "mistakes.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    assert best["score"] == pytest.approx(history["val_acc"].max())  # chosen on validation
    assert "no CUDA GPU" in stdout or torch.cuda.is_available()
    assert "TEST" in stdout and "Device:" in stdout


def test_resuming_a_finished_run_trains_no_more(
    smoke_run: tuple[Path, str], cifar_root: Path, capsys
):
    out, _ = smoke_run
    before = json.loads((out / "metrics.json").read_text())
    assert (
        main(["train", "--resume", str(out), "--data-dir", str(cifar_root), "--no-progress"]) == 0
    )
    after = json.loads((out / "metrics.json").read_text())
    assert after["epochs_run"] == before["epochs_run"]
    assert after["test_accuracy"] == pytest.approx(before["test_accuracy"])
    assert "TEST" in capsys.readouterr().out


def test_resume_refuses_overrides(tmp_path: Path):
    with pytest.raises(SystemExit, match="keeps the configuration"):
        main(["train", "--resume", str(tmp_path / "last.pt"), "--lr", "0.5"])


def test_flags_override_the_preset(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    args = build_parser().parse_args(
        [
            "train",
            "--preset",
            "full",
            "--epochs",
            "3",
            "--lr",
            "0.01",
            "--no-amp",
            "--milestones",
            "1,2",
        ]
    )
    cfg, preset = resolve_config(args, torch.device("cpu"))
    expected = TrainConfig.from_dict(
        {**PRESETS["full"].to_dict(), "epochs": 3, "lr": 0.01, "amp": False, "milestones": [1, 2]}
    )
    assert preset == "full" and cfg == expected

    args = build_parser().parse_args(["train", "--smoke", "--width", "8"])
    cfg, preset = resolve_config(args, torch.device("cpu"))
    assert preset == "cpu-smoke" and cfg.width == 8 and cfg.epochs == SMOKE.epochs and cfg.smoke


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in PRESETS)


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path: Path, capsys):
    status = main(["train", "--smoke", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    assert status == 2
    assert f"CIFAR-10 not found in {tmp_path}" in capsys.readouterr().err
