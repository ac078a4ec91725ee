"""The experiment runner: a grid of real (smoke-sized) runs, one table, and resuming."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from near_ties import assert_accuracy_agrees

from course_utils import experiments
from course_utils.checkpoints import load_checkpoint
from course_utils.data import cifar10_splits
from course_utils.experiments import (
    ANALYSES,
    NOTEBOOK_07_TABLES,
    NOTEBOOK_09_TABLES,
    RESULTS_DIR,
    finished_runs,
    read_table,
    run_analysis,
    run_experiment,
    run_flags,
    seeds_in,
    summarize,
)
from course_utils.training import TrainConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flags_of_a_configuration():
    assert run_flags({"schedule": "cyclic", "tta": True, "amp": False, "depth": 56}) == [
        "--schedule", "cyclic", "--tta", "--no-amp", "--depth", "56",
    ]  # fmt: skip


def test_every_configuration_is_a_valid_run(monkeypatch: pytest.MonkeyPatch):
    """Every grid builds a valid configuration of the cpu preset (a typo fails here, not hours
    into an experiment), at full size as the runs use it."""
    from course_utils.cli import build_parser, resolve_config

    monkeypatch.delenv("COURSE_SMOKE", raising=False)

    for grid in experiments.EXPERIMENTS.values():
        for changes in grid.values():
            args = build_parser().parse_args(["train", "--preset", "cpu", *run_flags(changes)])
            cfg, _ = resolve_config(args, __import__("torch").device("cpu"))
            # `--minutes 0` switches the preset's budget off, stored as None (one "off" value)
            expected = {**changes, **({"minutes": None} if changes.get("minutes") == 0 else {})}
            assert all(getattr(cfg, k) == v for k, v in expected.items())


def test_a_configuration_two_grids_share_is_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The regularization grid's "label smoothing 0.1" and the schedules grid's "one-cycle" are
    the same run (both the preset's choice); the second grid reads the first one's folder."""
    from course_utils.cli import build_parser, resolve_config

    monkeypatch.delenv("COURSE_SMOKE", raising=False)  # full-size runs, as the grids make them

    def args(grid: str, configuration: str, seed: int) -> tuple[TrainConfig, Path]:
        """The configuration the command line gives the run, and the run's folder."""
        folder = experiments.run_folder(grid, configuration, seed, runs_root=tmp_path)
        changes = experiments.EXPERIMENTS[grid][configuration]
        flags = ["train", "--preset", "cpu", "--seed", str(seed), "--out", str(folder)]
        cfg, _ = resolve_config(build_parser().parse_args(flags + run_flags(changes)), cpu)
        return cfg, folder

    cpu = torch.device("cpu")
    cfg, folder = args("regularization", "label smoothing 0.1", 0)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"config": cfg.to_dict()}))
    assert experiments.finished_twin(*args("schedules", "one-cycle", 0)) == folder
    assert experiments.finished_twin(*args("schedules", "one-cycle", 1)) is None  # other seed
    assert experiments.finished_twin(*args("schedules", "cosine", 0)) is None


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
    metrics = runs / "tiny-smoke" / "resnet-8-seed0" / "metrics.json"  # smoke runs kept apart
    before = metrics.stat().st_mtime_ns
    again = run_experiment("tiny", [0], smoke=True, runs_root=runs, results_dir=results)
    assert metrics.stat().st_mtime_ns == before  # finished runs are read, not repeated
    pd.testing.assert_frame_equal(again.drop(columns="date"), table.drop(columns="date"))
    summary = summarize(table)
    assert list(summary["seeds"]) == [1, 1]


# --- the analyses: finished runs evaluated again -------------------------------------------------


def _probabilities(folder: Path, root: Path, flip: bool = False) -> torch.Tensor:
    """A run's test softmax computed here by hand: NumPy normalization, a plain forward pass."""
    state = load_checkpoint(folder / "best.pt")
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg, 10)
    model.load_state_dict(state["model"])
    test = cifar10_splits(root, cfg.val_size, cfg.seed, smoke=True).test
    images = (test.images / 255.0 - np.array(state["mean"])) / np.array(state["std"])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2)).float()
    with torch.no_grad():
        probs = model.eval()(x).softmax(1)
        return (probs + model(x.flip(-1)).softmax(1)) / 2 if flip else probs


@pytest.mark.timeout(600)
def test_the_analyses_evaluate_finished_runs_again(
    cifar_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COURSE_DATA_DIR", str(cifar_root))
    monkeypatch.setitem(
        experiments.EXPERIMENTS, "tiny", {"resnet-8": {"arch": "cifar_resnet", "depth": 8}}
    )
    for name, (_, analysis) in list(ANALYSES.items()):
        monkeypatch.setitem(ANALYSES, name, (("tiny",), analysis))
    runs, results = tmp_path / "runs", tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="python -m course_utils experiment tiny --smoke"):
        run_analysis("ensembles", smoke=True, runs_root=runs, results_dir=results)
    # float32 throughout, on CPUs with bfloat16 too, to compare with the float32 reference below
    monkeypatch.setattr("course_utils.run.cpu_has_native_bfloat16", lambda: False)
    run_experiment("tiny", [0, 1], smoke=True, runs_root=runs, results_dir=results)
    folders = finished_runs(["tiny"], smoke=True, runs_root=runs)
    assert [f.name for f in folders] == ["resnet-8-seed0", "resnet-8-seed1"]
    recorded = [json.loads((f / "metrics.json").read_text())["test_accuracy"] for f in folders]
    labels = torch.from_numpy(cifar10_splits(cifar_root, smoke=True).test.labels)
    # Each step below evaluates with other batches or kernels than this reference does, so the
    # accuracies may differ by the reference's near ties (tests/near_ties.py), and no more.
    probs = {tta: [_probabilities(f, cifar_root, flip=tta) for f in folders] for tta in (0, 1)}

    # model.eval(): the accuracy each run's own test pass recorded, measured again
    modes = run_analysis("eval-mode", smoke=True, runs_root=runs, results_dir=results)
    in_eval = modes[modes["mode"] == "model.eval()"].set_index("seed")["test_accuracy"]
    for seed in (0, 1):
        assert_accuracy_agrees(recorded[seed], probs[False][seed], labels)
        assert_accuracy_agrees(in_eval[seed], probs[False][seed], labels)
    assert sorted(modes[modes["mode"] == "training mode"]["batch_size"]) == [1, 1, 16, 16, 1000, 1000]
    assert (results / "eval-mode-smoke.csv").is_file() and modes["command"].str.contains("eval-mode").all()

    # ensembles: the averaged softmax, computed here by hand, with and without flips
    table = run_analysis("ensembles", smoke=True, runs_root=runs, results_dir=results)
    for tta in (False, True):
        rows = table[table["tta"] == tta].set_index("seeds")["test_accuracy"]
        for seeds, members in (("0", [0]), ("1", [1]), ("0 1", [0, 1])):
            mean = torch.stack([probs[tta][i] for i in members]).mean(0)
            assert_accuracy_agrees(rows[seeds], mean, labels)

    # selection: choosing on half A maximizes the A score; each half pair averages to the whole
    selection = run_analysis("test-selection", smoke=True, runs_root=runs, results_dir=results)
    assert len(selection) == 2 * experiments.SELECTION_SPLITS and (selection["candidates"] == 2).all()
    by_rule = selection.pivot(index="split", columns="chosen_by", values="accuracy_a")
    assert (by_rule["test half A"] >= by_rule["validation"]).all()
    for _, row in selection.iterrows():  # two halves of 250 images: their mean is the whole's
        whole = (row["accuracy_a"] + row["accuracy_b"]) / 2
        assert_accuracy_agrees(whole, probs[False][int(row["run"][-1])], labels)
    assert np.allclose(selection["optimism"], selection["accuracy_a"] - selection["accuracy_b"])


# --- the committed tables notebook 07 reads ------------------------------------------------------


def test_read_table_says_what_is_missing_or_too_thin(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="python -m course_utils experiment eval-mode"):
        read_table("eval-mode", tmp_path)
    pd.DataFrame({"seed": [0, 0], "test_accuracy": [0.5, 0.6]}).to_csv(tmp_path / "eval-mode.csv")
    with pytest.raises(ValueError, match="holds 1 seeds, but notebook 07 relies on at least 2"):
        read_table("eval-mode", tmp_path)
    assert seeds_in(pd.DataFrame({"seeds": ["0", "1", "0 1 2"]})) == 3
    timings = pd.DataFrame({"measurement": ["a", "a", "b", "b", "b"], "repeat": [1, 2, 1, 2, 3]})
    assert seeds_in(timings) == 2  # the fewest repeats of one measurement


def test_every_table_notebook_07_reads_is_committed_with_enough_seeds():
    notebook = (experiments.PROJECT_ROOT / "notebooks" / "07_experiments_lab.py").read_text()
    assert set(re.findall(r'read_table\("([^"]+)"\)', notebook)) == set(NOTEBOOK_07_TABLES)
    for name, needed in NOTEBOOK_07_TABLES.items():
        table = read_table(name)  # raises if missing or too thin
        assert seeds_in(table) >= needed
        # the course's command (in one process, or in several under torchrun), (cpu-recipe) the
        # anchor's or (tta-views) the benchmark's, each maybe with the kernels it used
        command = (r"^(?:ONEDNN_MAX_CPU_ISA=\S+ )?(?:torchrun (?:--\S+ )+-m course_utils|python "
                   r"(?:-m course_utils|\S*airbench_cpu\.py|benchmarks/test_time_views\.py|"
                   r"benchmarks/train_throughput\.py)) ")  # fmt: skip
        assert table["command"].str.contains(command).all(), name
        assert table["machine"].notna().all() and table["date"].notna().all(), name
        assert not table["command"].str.contains("--smoke").any(), f"{name}: a smoke table"
    assert (RESULTS_DIR / "degradation-cpu.csv").is_file()


def test_every_table_notebook_09_reads_is_committed_with_enough_seeds():
    notebook = (experiments.PROJECT_ROOT / "notebooks" / "09_diagnostics.py").read_text()
    assert set(re.findall(r'read_table\("([^"]+)"\)', notebook)) == set(NOTEBOOK_09_TABLES)
    for name, needed in NOTEBOOK_09_TABLES.items():
        table = read_table(name)
        assert seeds_in(table) >= needed
        command = r"^python (?:-m course_utils |benchmarks/lr_range_test\.py )"
        assert table["command"].str.contains(command).all(), name
        assert table["machine"].notna().all() and table["date"].notna().all(), name
        assert not table["command"].str.contains("--smoke").any(), f"{name}: a smoke table"
    calibration = read_table("calibration")  # two runs that differ only in label smoothing
    assert sorted(calibration["label_smoothing"].unique()) == [0.0, 0.2]


def test_installed_without_tables_read_table_fetches_the_courses_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """As on Colab (pip install: no results/ folder), the committed table comes from the course's
    repository; here a file:// folder stands in for it."""
    published = tmp_path / "published"
    published.mkdir()
    pd.DataFrame({"seed": [0, 1], "test_accuracy": [0.5, 0.6]}).to_csv(published / "eval-mode.csv")
    monkeypatch.setattr(experiments, "PROJECT_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(experiments, "RESULTS_URL", published.as_uri())
    table = read_table("eval-mode", tmp_path / "nowhere")
    assert list(table["seed"]) == [0, 1]
    with pytest.raises(FileNotFoundError, match="Could not download .*ensembles.csv"):
        read_table("ensembles", tmp_path / "nowhere")


def test_compare_with_states_differences_and_their_standard_error():
    errors = json.dumps([0.5, 0.4])
    table = pd.DataFrame(
        {
            "configuration": ["base", "base", "better", "better", "same", "same"],
            "seed": [0, 1, 0, 1, 0, 1],
            "test_accuracy": [0.70, 0.72, 0.80, 0.81, 0.69, 0.74],
            "train_error_per_epoch": errors,
            "val_error_per_epoch": json.dumps([0.6, 0.45]),
        }
    )
    out = experiments.compare_with(table, "base")
    base, better, same = (np.array(v) for v in ([0.70, 0.72], [0.80, 0.81], [0.69, 0.74]))
    se = np.sqrt(base.var(ddof=1) / 2 + better.var(ddof=1) / 2)
    assert out.loc["better", "difference"] == pytest.approx(better.mean() - base.mean())
    assert out.loc["better", "standard_error"] == pytest.approx(se)
    assert out.loc["same", "test_std"] == pytest.approx(same.std(ddof=1))
    assert list(out["verdict"]) == ["baseline", "higher", "not told apart"]
    assert out.loc["same", "train_error"] == 0.4 and out.loc["same", "val_error"] == 0.45
    with pytest.raises(ValueError, match="no configuration 'none'"):
        experiments.compare_with(table, "none")
