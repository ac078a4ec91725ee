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

from course_utils import cli
from course_utils.checkpoints import load_checkpoint
from course_utils.cli import build_parser, main, resolve_config
from course_utils.config import PROJECT_ROOT, SMOKE
from course_utils.data import CIFAR10_CLASSES
from course_utils.distributed import TORCHRUN_VARIABLES
from course_utils.training import PRESETS, TrainConfig

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

    args = build_parser().parse_args(["train", "--width", "8", "--stage-multiples", "1,4,12,16"])
    cfg, _ = resolve_config(args, torch.device("cpu"))
    assert cfg.stage_multiples == (1, 4, 12, 16) and cfg.width == 8

    args = build_parser().parse_args(["train", "--smoke", "--width", "8"])
    cfg, preset = resolve_config(args, torch.device("cpu"))
    assert preset == "cpu-smoke" and cfg.width == 8 and cfg.epochs == SMOKE.epochs and cfg.smoke


def test_the_recorded_command_names_torchrun_where_it_started_the_run(monkeypatch):
    for name in TORCHRUN_VARIABLES + ("LOCAL_WORLD_SIZE",):
        monkeypatch.delenv(name, raising=False)
    assert cli.launcher() == ["python", "-m"]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for name, value in zip(TORCHRUN_VARIABLES, ("1", "1", "2", "127.0.0.1", "29500")):
        monkeypatch.setenv(name, value)  # RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    assert cli.launcher() == ["torchrun", "--nproc_per_node=2", "-m"]
    monkeypatch.setenv("WORLD_SIZE", "8")  # 4 machines of 2 processes
    assert cli.launcher() == ["torchrun", "--nnodes=4", "--nproc_per_node=2", "-m"]


def test_presets_command(capsys):
    assert main(["presets"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in PRESETS)


def test_missing_data_is_a_clear_error_not_a_traceback(tmp_path: Path, capsys):
    status = main(["train", "--smoke", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])
    assert status == 2
    assert f"CIFAR-10 not found in {tmp_path}" in capsys.readouterr().err


def test_an_analysis_without_its_runs_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
):
    from course_utils import experiments

    monkeypatch.setitem(experiments.EXPERIMENTS, "never-run", {"one": {}})
    monkeypatch.setitem(experiments.ANALYSES, "of-never-run", (("never-run",), len))
    status = main(["experiment", "of-never-run"])
    assert status == 2
    error = capsys.readouterr().err
    assert "python -m course_utils experiment never-run" in error and "run that first" in error


def test_every_setting_has_one_flag_with_its_help():
    """The flags are generated from TrainConfig: a new field cannot be forgotten on the command
    line, and its help text is the one written beside the field."""
    import dataclasses

    from course_utils.config import flag_name

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # the `train` subcommand
    actions = {flag: action for action in train._actions for flag in action.option_strings}
    help_text = train.format_help()
    for f in dataclasses.fields(TrainConfig):
        flag = flag_name(f.name)
        assert flag in actions, f"TrainConfig.{f.name} has no command-line flag"
        assert f.metadata["help"], f"TrainConfig.{f.name} has no help text"
        assert " ".join(f.metadata["help"].split()[:3]) in " ".join(help_text.split())
        if f.metadata["choices"] is not None and f.type != "bool":
            assert list(actions[flag].choices) == list(f.metadata["choices"])


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--lr", "-1"], "--lr"),
        (["--schedule", "warp"], "--schedule"),
        (["--depth", "19"], "--depth"),
        (["--width", "0"], "--width"),
        (["--patience", "0"], "--patience"),
        (["--label-smoothing", "1.5"], "--label-smoothing"),
        (["--batch-size", "many"], "--batch-size"),
        (["--minutes", "-5"], "--minutes"),
        (["--train-size", "50001"], "--train-size"),  # more than there are
        (["--normalization", "cifar100"], "--normalization"),
        # the cpu preset's augmentation needs the tensor loader, which does not rotate
        (["--preset", "cpu", "--rotation", "15"], "--rotation"),
        (["--preset", "cpu", "--loader", "torch"], "--alternate-flip"),
        (["--stage-multiples", "1,2,4"], "--stage-multiples"),
        (["--ghost-batch", "1"], "--ghost-batch"),
        (["--stage-multiples", "1,0,4,8"], "--stage-multiples"),
        (["--stage-multiples", "1,two,4,8"], "--stage-multiples"),
        (["--arch", "cifar_resnet", "--depth", "20", "--stage-multiples", "1,4,12,16"],
         "--stage-multiples"),
    ],
)
def test_bad_values_are_rejected_before_any_work(
    tmp_path: Path, flags: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Exit status 2 and one line that names the flag, before the data is even looked for (the
    data folder here is empty: reaching it would print "CIFAR-10 not found" instead). In-process:
    the one subprocess of this module, `smoke_run`, checks `python -m course_utils` itself."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_SMOKE", raising=False)  # the full-size limits
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--device", "cpu", *flags])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert named in last and "Traceback" not in err, err
    assert "not found" not in err and not (tmp_path / "cache").exists()


def test_cpu_mixed_precision_follows_native_bfloat16(monkeypatch: pytest.MonkeyPatch, capsys):
    from course_utils import run

    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    cpu = torch.device("cpu")
    monkeypatch.setattr(run, "cpu_has_native_bfloat16", lambda: True)
    cfg, _ = resolve_config(build_parser().parse_args(["train", "--preset", "cpu"]), cpu)
    assert cfg.amp and "has native bfloat16" in capsys.readouterr().out
    args = build_parser().parse_args(["train", "--preset", "cpu", "--no-amp"])
    assert not resolve_config(args, cpu)[0].amp  # the user's word wins
    monkeypatch.setattr(run, "cpu_has_native_bfloat16", lambda: False)
    assert not resolve_config(build_parser().parse_args(["train", "--preset", "full"]), cpu)[0].amp
    assert PRESETS["full"].amp  # on a GPU the preset keeps float16


def test_native_bfloat16_respects_the_onednn_cap(monkeypatch: pytest.MonkeyPatch):
    """With oneDNN capped below AVX512-BF16 (AVX2: a laptop's kernels), bfloat16 is emulated, and
    a training step took 10 times longer here: mixed precision must then stay off."""
    from course_utils import config

    monkeypatch.delenv(config.ONEDNN_ISA_ENV, raising=False)
    hardware = config.cpu_has_native_bfloat16()
    for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI", "AVX2_VNNI"):
        monkeypatch.setenv(config.ONEDNN_ISA_ENV, cap)
        assert not config.cpu_has_native_bfloat16(), cap
    for cap in ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX", "ALL"):
        monkeypatch.setenv(config.ONEDNN_ISA_ENV, cap)
        assert config.cpu_has_native_bfloat16() == hardware, cap


def test_minutes_zero_means_no_budget(
    monkeypatch: pytest.MonkeyPatch, cifar_root: Path, tmp_path: Path
):
    """`--minutes 0` turns the cpu preset's budget off: the run trains for --epochs (the
    experiments compare networks at equal epochs this way)."""
    from course_utils import cli, run

    class Fit(Exception):
        """fit() was reached."""

    def budget(*args, **kwargs):
        raise AssertionError("fit_to_budget was called")

    def fit(model, train_loader, val_loader, cfg, *args, **kwargs):
        raise Fit(cfg.epochs)

    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    monkeypatch.setenv("COURSE_DATA_DIR", str(cifar_root))
    monkeypatch.setattr(run, "fit_to_budget", budget)
    monkeypatch.setattr(run, "fit", fit)
    flags = ["train", "--preset", "cpu", "--epochs", "3", "--out", str(tmp_path / "run")]
    args = build_parser().parse_args([*flags, "--minutes", "0"])
    with pytest.raises(Fit, match="3"):  # straight to training, for the epochs given
        cli.train_command(args, torch.device("cpu"))
    with pytest.raises(AssertionError, match="fit_to_budget"):  # the preset's 15 minutes
        cli.train_command(build_parser().parse_args(flags), torch.device("cpu"))
