"""Experiments: named grids of training runs, repeated over seeds, collected into one tidy table.

    python -m course_utils experiment degradation --seeds 0 1 --minutes 5
    python -m course_utils experiment schedules --seeds 0 1

Each run is an ordinary ``python -m course_utils train`` run with its own folder under
``runs/experiments/NAME/``; a run whose ``metrics.json`` exists is not repeated, so an interrupted
experiment resumes where it stopped. The table, one row per run, goes to
``results/experiments/NAME.csv``: configuration, seed, test and validation accuracy, the training
error of every epoch, epochs, wall time, and the machine, date and command that produced it.

Three *analyses* (:data:`ANALYSES`) evaluate finished runs again without training anything more:
``eval-mode`` (the forgotten ``model.eval()``), ``ensembles`` (seeds averaged, with and without
flip TTA) and ``test-selection`` (choosing a run on the test set against choosing on validation).
:func:`read_table` reads a committed table and checks it holds the seeds notebook 07 (or 09)
relies on.

Explained in notebook 07 (the experiments lab).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from course_utils.config import (
    CROP_PADDING,
    PROJECT_ROOT,
    REPOSITORY,
    VAL_SIZE,
    TrainConfig,
    flag_name,
    get_device,
)
from course_utils.data import cifar10_splits, eval_transform
from course_utils.diagnostics import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from course_utils.evaluation import Predictions, predict
from course_utils.machine import machine_name
from course_utils.run import config_from_preset, train_and_report
from course_utils.training import choose_threads, cpu_threads, model_from_checkpoint
from course_utils.transfer_experiment import transfer_table

#: The ``cpu`` preset's recipe when the regularization, schedules, normalization and
#: degradation tables were measured (2026-11-23): one-cycle to its peak after a quarter of the
#: steps, label smoothing 0.1, no test-time flips. Pinned in those grids, so that a re-run repeats
#: what their committed tables hold, whatever the preset has become since.
RECIPE_2026_11: dict[str, Any] = {
    "schedule": "onecycle",
    "warmup": 0.25,
    "div_factor": 25.0,
    "final_div_factor": 1e4,
    "label_smoothing": 0.1,
    "tta": False,
    "tta_shift": 0,
    "val_size": VAL_SIZE,
    "small_crops": 0.0,
    "crop_padding": CROP_PADDING,
    "alternate_flip": False,
}
#: The small-data setting of the regularization, schedule and normalization grids: a stratified
#: 4,000 of the training images, 8 epochs, no time budget.
SMALL_DATA: dict[str, Any] = {**RECIPE_2026_11, "train_size": 4_000, "minutes": 0, "epochs": 8}

#: The ``cpu`` preset's recipe when notebook 09's learning-rate sweep and label-smoothing runs were
#: measured (2026-12-06), pinned for the same reason, with the length of those runs: 2 epochs of
#: all the training images, no time budget.
RECIPE_2026_12: dict[str, Any] = {
    "schedule": "linear",
    "warmup": 0.23,
    "div_factor": 5.0,
    "final_div_factor": 14.0,
    "label_smoothing": 0.2,
    "tta": True,
    "tta_shift": 0,  # the flip's 2 views
    "val_size": VAL_SIZE,
    "small_crops": 0.0,
    "crop_padding": CROP_PADDING,
    "alternate_flip": False,
    "amp": False,  # float32 everywhere, also where the CPU has native bfloat16
    "minutes": 0,
    "epochs": 2,
}
#: The peak learning rates of the sweep that checks the range test's suggestion (notebook 09).
LR_SWEEP = (0.1, 0.2, 0.4, 0.8)

#: Each experiment: configuration name -> the TrainConfig fields it changes in the ``cpu`` preset.
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    # He et al. 2016, Fig. 1 and 6: a deeper *plain* network has higher *training* error than a
    # shallower one; with shortcuts (option A, as in the paper's CIFAR runs) depth helps instead.
    "degradation": {
        "plain-20": {"arch": "cifar_resnet", "depth": 20, "shortcut": "none"},
        "plain-56": {"arch": "cifar_resnet", "depth": 56, "shortcut": "none"},
        "resnet-20": {"arch": "cifar_resnet", "depth": 20, "shortcut": "A"},
        "resnet-56": {"arch": "cifar_resnet", "depth": 56, "shortcut": "A"},
    },
    # The same question at a CPU's scale, compared at equal *epochs* as in the paper (a time budget
    # would give the deeper nets fewer steps): 20 and 32 layers, the paper's two shallowest, one
    # epoch each, because a 56-layer network has 2.8 times a 20-layer one's conv layers to run.
    "degradation-cpu": {
        name: {
            **RECIPE_2026_11,
            "arch": "cifar_resnet",
            "depth": depth,
            "shortcut": shortcut,
            "minutes": 0,
            "epochs": 1,
        }
        for name, depth, shortcut in [
            ("plain-20", 20, "none"),
            ("plain-32", 32, "none"),
            ("resnet-20", 20, "A"),
            ("resnet-32", 32, "A"),
        ]
    },
    # The `cpu` preset as it is, over seeds: the runs the analyses below evaluate.
    "preset": {"cpu preset": {}},
    # Notebook 09: does the learning-rate range test's suggestion train well? Peak learning rates
    # around it, everything else the preset's.
    "lr-sweep": {f"peak lr {lr:g}": {**RECIPE_2026_12, "lr": lr} for lr in LR_SWEEP},
    # Notebook 09: what label smoothing does to calibration, two runs that differ only in it.
    "label-smoothing": {
        f"label smoothing {ls:g}": {**RECIPE_2026_12, "lr": 0.2, "label_smoothing": ls}
        for ls in (0.0, 0.2)
    },
    # Regularization, schedules and input normalization, at a scale this CPU affords: 4,000
    # training images (400 per class) for 8 epochs, the same for every configuration (equal epochs,
    # not a time budget, so that a slower option is not also given fewer steps). The full
    # validation and test sets are kept, so the accuracies are measured on 5,000 and 10,000 images.
    "regularization": {
        name: {**SMALL_DATA, "label_smoothing": 0.0, **changes}
        for name, changes in [
            ("none", {}),
            ("label smoothing 0.1", {"label_smoothing": 0.1}),
            ("mixup 0.2", {"mixup": 0.2}),
            ("cutmix 1.0", {"cutmix": 1.0}),
            ("rotation 15", {"rotation": 15.0}),
        ]
    },
    "schedules": {
        name: {**SMALL_DATA, **changes}
        for name, changes in [
            ("constant", {"schedule": "none"}),  # the peak lr of the others, throughout
            ("step", {"schedule": "step", "step_size": 4, "gamma": 0.1}),  # /10 after epoch 4
            ("cosine", {"schedule": "cosine"}),
            ("one-cycle", {"schedule": "onecycle"}),
            ("cyclic", {"schedule": "cyclic", "cycle_epochs": 4.0}),  # two whole cycles
            ("warm-up + cosine", {"schedule": "warmup_cosine"}),
        ]
    },
    # Seed 002's slip: StepLR (a schedule of epochs) stepped after every batch, against the same
    # schedule stepped once per epoch (the "step" run of the schedules grid, again).
    "step-per-batch": {
        name: {**SMALL_DATA, "schedule": "step", "step_size": 4, "gamma": 0.1, **changes}
        for name, changes in [
            ("stepped every epoch", {}),
            ("stepped every batch", {"schedule_every_batch": True}),
        ]
    },
    # The seeds' Resize(227) with the ImageNet stem (7x7 convolution, stride 2, and max-pooling),
    # against the course's 32x32 pipeline with the CIFAR stem, at equal wall-clock time: the same
    # 5-minute budget, each choosing its own steps. Everything else is the 2026-12 recipe, with one
    # test view and 1,000 images held out: evaluation at 227x227 is slow too, and with the budget's
    # share it takes, not even half an epoch of the resized images would fit in 5 minutes.
    "resize-227": {
        name: {**RECIPE_2026_12, "minutes": 5, "tta": False, "val_size": 1_000, **changes}
        for name, changes in [
            ("32x32, CIFAR stem", {}),
            ("Resize(227), ImageNet stem", {"image_size": 227, "stem": "imagenet"}),
        ]
    },
    # The seeds' normalization slips: ImageNet's statistics, and the 0.2023 "std" (notebook 01).
    "normalization": {
        name: {**SMALL_DATA, "normalization": kind}
        for name, kind in [
            ("own statistics", "dataset"),
            ("ImageNet's", "imagenet"),
            ("0.2023 std", "per-image-std"),
        ]
    },
}
#: Where the tables go: committed, so notebook 07 reads measurements rather than typed numbers.
RESULTS_DIR = PROJECT_ROOT / "results" / "experiments"
#: Where the committed tables are read from when the course was installed without them (Colab).
RESULTS_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/main/results/experiments"


def run_flags(changes: dict[str, Any]) -> list[str]:
    """``{"schedule": "cyclic", "tta": True}`` -> ``["--schedule", "cyclic", "--tta"]``."""
    flags: list[str] = []
    for name, value in changes.items():
        flag = flag_name(name)
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def run_experiment(
    name: str,
    seeds: Sequence[int],
    minutes: float | None = None,
    *,
    smoke: bool = False,
    runs_root: Path | None = None,
    results_dir: Path = RESULTS_DIR,
) -> pd.DataFrame:
    """Run every configuration of experiment ``name`` for every seed; return and save the table.

    Args:
        seeds: one run per configuration and seed.
        minutes: each run's time budget (``--minutes``); ``None`` keeps the grid's epochs (or the
            preset's budget).
        smoke: tiny runs on the smoke subset, to check the code path.
        runs_root: parent of the run folders (default ``runs/experiments``).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    device = get_device()
    rows = []
    for configuration, changes in EXPERIMENTS[name].items():
        for seed in seeds:
            folder = run_folder(name, configuration, seed, smoke=smoke, runs_root=runs_root)
            if smoke:  # the smoke subset is already small
                changes = {k: v for k, v in changes.items() if k != "train_size"}
            elif minutes is not None:
                changes = {**changes, "minutes": minutes}
            args = ["train", "--preset", "cpu", "--seed", str(seed), "--out", str(folder),
                    "--no-progress", *run_flags(changes)]  # fmt: skip
            args += ["--smoke"] if smoke else []
            cfg, label = config_from_preset("cpu", {**changes, "seed": seed}, device, smoke=smoke)
            twin = None if (folder / "metrics.json").is_file() else finished_twin(cfg, folder)
            if twin is None and (folder / SAME_RUN).is_file():  # found as a twin before
                twin = _same_run(folder)
            if twin is not None:  # the same run was made for another grid: read it
                print(f"[{name}] {configuration}, seed {seed}: the same run as {twin}, reused")
                folder.mkdir(parents=True, exist_ok=True)  # where the analyses look for it
                (folder / SAME_RUN).write_text(json.dumps({"run": os.path.relpath(twin, folder)}))
                folder = twin
            elif not (folder / "metrics.json").is_file():
                print(f"[{name}] {configuration}, seed {seed}", flush=True)
                train_and_report(cfg, label, device, out_dir=folder, progress=False,
                                 command=_command(args))  # fmt: skip
            rows.append(_row(folder, configuration, seed, args))
    table = pd.DataFrame(rows)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / f"{name}{'-smoke' if smoke else ''}.csv", index=False)
    return table


#: Notebook 08's experiment: not a grid of ``train`` runs, but a pretraining and the transfer runs
#: that start from it, per seed (course_utils.transfer_experiment). Counted in epochs and steps.
TRANSFER = "transfer"


def run_transfer_experiment(
    seeds: Sequence[int],
    *,
    smoke: bool = False,
    results_dir: Path = RESULTS_DIR,
    runs_root: Path | None = None,
) -> pd.DataFrame:
    """Notebook 08's table, ``results/experiments/transfer.csv``: every seed's pretraining on the
    animals and its transfer runs to the vehicles, with the machine, date and command."""
    splits = cifar10_splits(smoke=smoke, download=True)
    work = (runs_root or PROJECT_ROOT / "runs" / "experiments") / (TRANSFER + "-smoke" * smoke)
    table = transfer_table(splits, seeds, get_device(), smoke=smoke, work_dir=work)
    command = (f"python -m course_utils experiment {TRANSFER} --seeds {' '.join(map(str, seeds))}"
               f"{' --smoke' if smoke else ''}")  # fmt: skip
    table = table.assign(**provenance(command))
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / f"{TRANSFER}{'-smoke' if smoke else ''}.csv", index=False)
    return table


#: In a grid's run folder, instead of a run: the folder of the same run made for another grid.
SAME_RUN = "same-run.json"


def _same_run(folder: Path) -> Path | None:
    """The run a ``same-run.json`` in ``folder`` points to, if it is finished."""
    target = (folder / json.loads((folder / SAME_RUN).read_text())["run"]).resolve()
    return target if (target / "metrics.json").is_file() else None


def run_folder(
    name: str, configuration: str, seed: int, *, smoke: bool = False, runs_root: Path | None = None
) -> Path:
    """Where one run of an experiment lives: ``runs/experiments/NAME[-smoke]/CONFIG-seedN``
    (smoke runs apart, so that they are never taken for real ones)."""
    runs_root = runs_root or PROJECT_ROOT / "runs" / "experiments"
    grid = f"{name}-smoke" if smoke else name
    return runs_root / grid / f"{configuration.replace(' ', '_')}-seed{seed}"


def finished_twin(cfg: TrainConfig, folder: Path) -> Path | None:
    """A finished run of the same experiments folder as ``folder``, trained with exactly the
    configuration ``cfg``, if one exists (grids share configurations: the regularization grid's
    label smoothing 0.1 is the schedules grid's one-cycle)."""

    def recipe(config: dict[str, Any]) -> dict[str, Any]:  # threads: each machine chooses its own
        # an older run lacks the newer fields (their defaults) and stored minutes 0 (now None)
        config = json.loads(json.dumps(TrainConfig.from_dict(config).to_dict()))
        return {k: v for k, v in config.items() if k != "threads"}

    wanted = recipe(cfg.to_dict())
    for metrics in sorted(folder.parent.parent.glob("*/*/metrics.json")):
        if recipe(json.loads(metrics.read_text()).get("config", {})) == wanted:
            return metrics.parent
    return None


def provenance(command: str) -> dict[str, str]:
    """The columns every table carries: machine, date, torch version and the command."""
    return {
        "machine": machine_name(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "command": command,
    }


def epochs_trained(metrics: dict[str, Any], epochs_run: int) -> float:
    """How many epochs' worth of batches a run trained, from its ``metrics.json``: a time budget
    cuts the last epoch short, so 2.56 rather than the 3 epochs it started."""
    steps = metrics["config"]["steps"]
    per_epoch = metrics["data"]["train"] // metrics["config"]["batch_size"]  # drop_last batches
    return round(steps / per_epoch, 2) if steps else epochs_run


def _row(folder: Path, configuration: str, seed: int, args: list[str]) -> dict[str, Any]:
    """One line of the table, read from a finished run folder."""
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    return {
        "configuration": configuration,
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "best_val_accuracy": float(history["val_acc"].max()),
        "train_error_per_epoch": json.dumps([round(1 - a, 5) for a in history["train_acc"]]),
        "val_error_per_epoch": json.dumps([round(1 - a, 5) for a in history["val_acc"]]),
        "epochs": epochs_trained(metrics, metrics["epochs_run"]),
        "parameters": metrics["parameters"],
        "images_per_second": round(metrics["images_per_second"]),  # training
        "wall_seconds": round(metrics["wall_seconds"], 1),
        "machine": metrics["device_name"],  # as the run described it (threads, kernel cap)
        "date": time.strftime(
            "%Y-%m-%d", time.localtime((folder / "metrics.json").stat().st_mtime)
        ),
        "torch": metrics["torch_version"],
        "command": _command(args),
    }


def _command(args: list[str]) -> str:
    """The command line of a grid's run, with paths inside the course written as the course's own
    (relative), not as this machine spells them."""
    return " ".join(["python -m course_utils", *args]).replace(f"{PROJECT_ROOT}/", "")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of each configuration: what a notebook may state."""
    return table.groupby("configuration", sort=False).agg(
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        seeds=("seed", "nunique"),
        epochs=("epochs", "mean"),
        wall_minutes=("wall_seconds", lambda s: s.mean() / 60),
    )


def compare_with(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each configuration's test accuracy against ``baseline``'s, with what the seeds can tell.

    Columns: ``test_mean`` and ``test_std`` (sample std over ``seeds``); ``difference`` from the
    baseline's mean; its standard error, ``sqrt(s_a^2 / n_a + s_b^2 / n_b)``; ``verdict``: "higher"
    or "lower" when the difference is at least twice its standard error, else "not told apart"
    (a rough rule: with two or three seeds a standard error is itself uncertain); and the last
    epoch's ``train_error`` and ``val_error``, means over seeds, to tell under- from overfitting.
    """
    last = {name: table[f"{name}_per_epoch"].map(lambda errors: json.loads(errors)[-1])
            for name in ("train_error", "val_error")}  # fmt: skip
    groups = table.assign(**last).groupby("configuration", sort=False)
    out = groups.agg(
        test_mean=("test_accuracy", "mean"),
        test_std=("test_accuracy", "std"),
        seeds=("seed", "nunique"),
        train_error=("train_error", "mean"),
        val_error=("val_error", "mean"),
    )
    if baseline not in out.index:
        raise ValueError(f"no configuration {baseline!r} in the table; it has {list(out.index)}")
    base = out.loc[baseline]
    out.insert(3, "difference", out["test_mean"] - base["test_mean"])
    squared = out["test_std"] ** 2 / out["seeds"] + base["test_std"] ** 2 / base["seeds"]
    out.insert(4, "standard_error", np.sqrt(squared))
    clear = out["difference"].abs() >= 2 * out["standard_error"]
    verdict = np.where(out["difference"] > 0, "higher", "lower")
    out.insert(5, "verdict", np.where(clear, verdict, "not told apart"))
    out.loc[baseline, "verdict"] = "baseline"
    return out


# --------------------------------------------------------------------------------------------------
# Analyses: what finished runs show when evaluated again, without training anything more
# --------------------------------------------------------------------------------------------------

#: Batch sizes for evaluating in training mode (the forgotten ``model.eval()``).
TRAIN_MODE_BATCH_SIZES = (1, 16, 1000)
#: Random halvings of the test set for the selection experiment.
SELECTION_SPLITS = 200


def finished_runs(
    grids: Sequence[str], *, smoke: bool = False, runs_root: Path | None = None
) -> list[Path]:
    """Every finished run folder (one with ``metrics.json``) of the named grids, in grid order,
    following the runs a grid reused from another (``same-run.json``)."""
    folders = []
    for name in grids:
        for configuration in EXPERIMENTS[name]:
            first = run_folder(name, configuration, 0, smoke=smoke, runs_root=runs_root)
            for found in sorted(first.parent.glob(first.name.replace("-seed0", "-seed*"))):
                if (found / "metrics.json").is_file():
                    folders.append(found)
                elif (found / SAME_RUN).is_file() and _same_run(found) is not None:
                    folders.append(_same_run(found))  # made for another grid
    return folders


class _TrainedRun:
    """A finished run folder's best checkpoint, rebuilt, with its test images ready to use."""

    def __init__(self, folder: Path, data_dir: Path | None = None) -> None:
        self.model, state = model_from_checkpoint(folder / "best.pt")
        self.folder, self.cfg = folder, TrainConfig.from_dict(state["config"])
        self.weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        splits = cifar10_splits(data_dir, self.cfg.val_size, self.cfg.seed, smoke=self.cfg.smoke)
        normalize = eval_transform(state["mean"], state["std"])
        self.splits = {  # normalized images (N, 3, 32, 32) and labels (N,)
            name: (normalize(torch.from_numpy(part.images).permute(0, 3, 1, 2)),
                   torch.from_numpy(part.labels))
            for name, part in (("test", splits.test), ("validation", splits.val))
        }  # fmt: skip
        self.images, self.labels = self.splits["test"]
        self.val_accuracy = float(pd.read_csv(folder / "history.csv")["val_acc"].max())

    def predictions(
        self, split: str = "test", *, tta: bool = False, batch_size: int = 1000
    ) -> Predictions:
        """``evaluation.Predictions`` on ``split`` ("test" or "validation") in evaluation mode,
        through the course's one eval loop."""
        images, labels = self.splits[split]
        batches = [(images[i : i + batch_size], labels[i : i + batch_size])
                   for i in range(0, len(labels), batch_size)]  # fmt: skip
        return predict(self.model, batches, "cpu", channels_last=self.cfg.channels_last, tta=tta)

    def probabilities(self, *, tta: bool = False) -> torch.Tensor:
        """Softmax ``(N, classes)`` on the test images."""
        return torch.from_numpy(self.predictions("test", tta=tta).probs)

    def accuracy_in_training_mode(self, batch_size: int) -> float:
        """Test accuracy with ``model.eval()`` forgotten: BatchNorm normalizes every batch with
        that batch's own statistics (and overwrites its running ones: restored afterwards)."""
        self.model.train()  # the mistake being measured
        correct = 0
        with torch.no_grad():
            for start in range(0, len(self.labels), batch_size):
                logits = self.model(self.images[start : start + batch_size])
                correct += int((logits.argmax(1) == self.labels[start : start + batch_size]).sum())
        self.model.load_state_dict(self.weights)
        self.model.eval()
        return correct / len(self.labels)


def eval_mode_table(runs: Sequence[_TrainedRun]) -> pd.DataFrame:
    """Each run's test accuracy in evaluation mode and, without ``model.eval()``, in training mode
    at each of :data:`TRAIN_MODE_BATCH_SIZES`."""
    rows = []
    for run in runs:
        accuracy = float((run.probabilities().argmax(1) == run.labels).float().mean())
        rows.append({"seed": run.cfg.seed, "mode": "model.eval()", "batch_size": 1000,
                     "test_accuracy": accuracy})  # fmt: skip
        for batch_size in TRAIN_MODE_BATCH_SIZES:
            rows.append({"seed": run.cfg.seed, "mode": "training mode", "batch_size": batch_size,
                         "test_accuracy": run.accuracy_in_training_mode(batch_size)})  # fmt: skip
    return pd.DataFrame(rows)


def ensemble_table(runs: Sequence[_TrainedRun]) -> pd.DataFrame:
    """Test accuracy of every ensemble of k runs (k = 1, 2, ...: their softmax averaged), each
    without and with flip test-time augmentation."""
    probs = {tta: [run.probabilities(tta=tta) for run in runs] for tta in (False, True)}
    labels = runs[0].labels
    rows = []
    for k in range(1, len(runs) + 1):
        for members in itertools.combinations(range(len(runs)), k):
            for tta in (False, True):
                mean = torch.stack([probs[tta][i] for i in members]).mean(0)
                rows.append({
                    "members": k,
                    "seeds": " ".join(str(runs[i].cfg.seed) for i in members),
                    "tta": tta,
                    "test_accuracy": float((mean.argmax(1) == labels).float().mean()),
                })  # fmt: skip
    return pd.DataFrame(rows)


def selection_table(runs: Sequence[_TrainedRun], splits: int = SELECTION_SPLITS) -> pd.DataFrame:
    """Choosing the best of several runs on the test set, against choosing on validation.

    For each of ``splits`` random halvings of the test set into A and B: the run with the best
    accuracy on A, and the run with the best validation accuracy, each with its accuracy on A and
    on B. For the run picked on A, its A score is the number one would report after choosing on
    the test set, and B is an honest estimate of it: their difference is the optimism.
    """
    correct = torch.stack([run.probabilities().argmax(1) == run.labels for run in runs]).float()
    by_validation = int(np.argmax([run.val_accuracy for run in runs]))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for split in range(splits):
        order = torch.randperm(correct.shape[1], generator=generator)
        half_a, half_b = order[: len(order) // 2], order[len(order) // 2 :]
        score_a, score_b = correct[:, half_a].mean(1), correct[:, half_b].mean(1)
        for rule, chosen in (("test half A", int(score_a.argmax())), ("validation", by_validation)):
            rows.append({"split": split, "chosen_by": rule, "run": runs[chosen].folder.name,
                         "candidates": len(runs), "accuracy_a": float(score_a[chosen]),
                         "accuracy_b": float(score_b[chosen])})  # fmt: skip
    table = pd.DataFrame(rows)
    table["optimism"] = table["accuracy_a"] - table["accuracy_b"]
    return table


def calibration_table(runs: Sequence[_TrainedRun]) -> pd.DataFrame:
    """Each run's calibration before and after temperature scaling (notebook 09).

    The temperature is fitted on the validation split (``diagnostics.fit_temperature``); the
    accuracy, expected calibration error (15 equal-width bins) and negative log-likelihood are
    measured on validation and on test, with the run's own test-time augmentation.
    """
    rows = []
    for run in runs:
        preds = {split: run.predictions(split, tta=run.cfg.tta) for split in ("validation", "test")}
        fitted = fit_temperature(preds["validation"].logits, preds["validation"].labels)
        for (split, pred), (scaled, temperature) in itertools.product(
            preds.items(), ((False, 1.0), (True, fitted))
        ):
            rows.append({
                "label_smoothing": run.cfg.label_smoothing,
                "seed": run.cfg.seed,
                "split": split,
                "scaled": scaled,
                "temperature": temperature,
                "accuracy": pred.accuracy,
                "ece": expected_calibration_error(pred.logits / temperature, pred.labels),
                "nll": negative_log_likelihood(pred.logits, pred.labels, temperature),
            })  # fmt: skip
    return pd.DataFrame(rows)


#: The analyses: name -> (the grids whose finished runs they evaluate, the function).
ANALYSES: dict[str, tuple[tuple[str, ...], Callable[[Sequence[_TrainedRun]], pd.DataFrame]]] = {
    "eval-mode": (("preset",), eval_mode_table),
    "ensembles": (("preset",), ensemble_table),
    "test-selection": (("preset", "degradation-cpu"), selection_table),
    "calibration": (("label-smoothing",), calibration_table),
}


def run_analysis(
    name: str,
    *,
    smoke: bool = False,
    data_dir: Path | None = None,
    results_dir: Path = RESULTS_DIR,
    runs_root: Path | None = None,
) -> pd.DataFrame:
    """Evaluate the finished runs an analysis needs; return and save its table (with the
    machine, date and command, like the grids' tables).

    Raises:
        FileNotFoundError: the grids it reads have no finished runs; the message says which
            ``python -m course_utils experiment`` commands make them.
    """
    grids, analysis = ANALYSES[name]
    folders = finished_runs(grids, smoke=smoke, runs_root=runs_root)
    if not folders:
        commands = "; ".join(f"python -m course_utils experiment {g}" for g in grids)
        raise FileNotFoundError(f"the analysis {name!r} evaluates the runs of {commands} "
                                f"{'--smoke ' if smoke else ''}: run that first.")  # fmt: skip
    runs = [_TrainedRun(folder, data_dir) for folder in folders]
    # As many threads as a run would choose here: beside a busy program, fewer threads than cores
    # are far faster, above all for the batches of one image (training.choose_threads).
    threads = choose_threads(dataclasses.replace(runs[0].cfg, threads=0), runs[0].model, "cpu")
    with cpu_threads(threads.threads):
        table = analysis(runs)
    command = f"python -m course_utils experiment {name}{' --smoke' if smoke else ''}"
    table = table.assign(**provenance(command))
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / f"{name}{'-smoke' if smoke else ''}.csv", index=False)
    return table


# --------------------------------------------------------------------------------------------------
# Reading the committed tables
# --------------------------------------------------------------------------------------------------

#: The tables notebook 07 reads, and the fewest seeds each must hold (for ``test-selection``: the
#: fewest candidate runs). The notebook's text relies on these counts; the tests check them.
NOTEBOOK_07_TABLES = {
    "degradation-cpu": 2,
    "regularization": 2,
    "schedules": 2,
    "normalization": 2,
    "step-per-batch": 2,
    "resize-227": 2,
    "eval-mode": 2,
    "ensembles": 3,
    "test-selection": 8,
    "cpu-recipe": 2,
    "tta-views": 2,
    "stage-throughput": 2,
}
#: The same for notebook 08 (transfer learning) and 09 (diagnostics).
NOTEBOOK_08_TABLES = {TRANSFER: 3}
NOTEBOOK_09_TABLES = {"lr-range-test": 2, "lr-sweep": 2, "calibration": 2}
#: Tables made by a script rather than by ``python -m course_utils experiment NAME``.
TABLE_MAKERS = {
    "cpu-recipe": "python benchmarks/cpu_recipe.py (see benchmarks/README.md)",
    "lr-range-test": "python benchmarks/lr_range_test.py --seeds 0 1",
    "tta-views": "python benchmarks/test_time_views.py RUN_FOLDER ... (see benchmarks/README.md)",
    "stage-throughput": "python benchmarks/train_throughput.py ... --record "
    "results/experiments/stage-throughput.csv (see benchmarks/README.md)",
}


def _notebook_of(name: str) -> str:
    """Which notebook reads the committed table ``name``."""
    return "08" if name in NOTEBOOK_08_TABLES else "09" if name in NOTEBOOK_09_TABLES else "07"


def seeds_in(table: pd.DataFrame) -> int:
    """How many seeds a table holds (for a selection table: how many candidate runs; for a table
    of timings: how many times each was measured)."""
    if "seed" in table:
        return int(table["seed"].nunique())
    if "repeat" in table:  # timings: the fewest repeats of any one measurement
        return int(table.groupby("measurement")["repeat"].nunique().min())
    if "seeds" in table:  # ensembles: "0 1" lists the members' seeds
        return len({s for members in table["seeds"].astype(str) for s in members.split()})
    return int(table["candidates"].min())


def read_table(name: str, results_dir: Path = RESULTS_DIR) -> pd.DataFrame:
    """The committed table ``results/experiments/NAME.csv``, checked against what notebook 07
    needs of it (:data:`NOTEBOOK_07_TABLES`, :data:`NOTEBOOK_09_TABLES`). Installed without the
    tables (``pip install`` on Colab), it reads the course's own from its repository.

    Raises:
        FileNotFoundError: the table is missing; the message gives the command that makes it.
        ValueError: it holds fewer seeds than the notebook relies on.
    """
    path = results_dir / f"{name}.csv"
    make = TABLE_MAKERS.get(name, f"python -m course_utils experiment {name}")
    if path.is_file():
        table = pd.read_csv(path)
    elif not (PROJECT_ROOT / "pyproject.toml").is_file():  # pip-installed (Colab): the course's
        try:  # committed table, from its repository
            table = pd.read_csv(f"{RESULTS_URL}/{name}.csv")
        except OSError as exc:
            raise FileNotFoundError(
                f"Could not download {RESULTS_URL}/{name}.csv ({exc}); without internet, "
                f"`{make}` makes the table (see notebook {_notebook_of(name)})."
            ) from exc
    else:
        raise FileNotFoundError(
            f"{path} is missing: `{make}` makes it (see notebook {_notebook_of(name)})."
        )
    needed = {**NOTEBOOK_07_TABLES, **NOTEBOOK_08_TABLES, **NOTEBOOK_09_TABLES}.get(name, 1)
    if seeds_in(table) < needed:
        raise ValueError(
            f"{path} holds {seeds_in(table)} seeds, but notebook "
            f"{_notebook_of(name)} relies on at least {needed}: "
            f"run `{make}` with more seeds (--seeds 0 1 ...)."
        )
    return table
