"""Tests of course_utils.plotting on the Agg backend (set in conftest.py).

Every figure is returned as a Figure and saved as a PNG; images are un-normalized with the
statistics that normalized them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from course_utils.data import CIFAR10_CLASSES, CIFAR10Arrays, train_transform
from course_utils.diagnostics import reliability_table
from course_utils.plotting import (
    MISTAKE_COLOR,
    augmentation_grid,
    class_balance,
    heatmap_gallery,
    image_grid,
    mistakes_gallery,
    plot_confusion,
    plot_experiment,
    plot_history,
    plot_range_test,
    reliability_diagram,
    tsne_scatter,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def arrays() -> CIFAR10Arrays:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    return CIFAR10Arrays(images, np.arange(12) % 10)


def assert_png(fig: Figure, path: Path) -> None:
    assert isinstance(fig, Figure)
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_image_grid_undoes_the_normalization(arrays: CIFAR10Arrays, tmp_path: Path):
    original = (
        torch.from_numpy(arrays.images[:4]).permute(0, 3, 1, 2).float() / 255
    )  # (4, 3, 32, 32)
    normalized = (original - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    labels, preds = np.array([0, 1, 2, 3]), np.array([0, 5, 2, 3])
    fig = image_grid(
        normalized, labels, preds=preds, stats=(MEAN, STD), ncols=2, save=tmp_path / "g.png"
    )
    assert_png(fig, tmp_path / "g.png")
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, arrays.images[0] / 255, atol=1e-5)
    titles = [ax.title for ax in fig.axes]
    assert titles[1].get_color() == MISTAKE_COLOR and "automobile" in titles[1].get_text()
    assert titles[0].get_color() != MISTAKE_COLOR and titles[0].get_text() == CIFAR10_CLASSES[0]
    # uint8 images as loaded are shown as they are
    fig = image_grid(arrays.images[:3], arrays.labels[:3])
    np.testing.assert_allclose(
        np.asarray(fig.axes[0].images[0].get_array()), arrays.images[0] / 255
    )


def test_image_grid_shows_float_images_as_they_are_without_stats(arrays: CIFAR10Arrays):
    in_unit_range = torch.from_numpy(arrays.images[:2]).permute(0, 3, 1, 2).float() / 255
    fig = image_grid(in_unit_range, arrays.labels[:2], stats=None)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, arrays.images[0] / 255, atol=1e-6)


def test_augmentation_grid_leaves_the_global_rng_alone(arrays: CIFAR10Arrays, tmp_path: Path):
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    fig = augmentation_grid(
        arrays,
        train_transform(MEAN, STD),
        n=3,
        n_views=2,
        mean=MEAN,
        std=STD,
        save=tmp_path / "a.png",
    )
    assert torch.equal(torch.rand(1), expected_next)
    assert_png(fig, tmp_path / "a.png")
    assert len(fig.axes) == 3 * 3
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), arrays.images[0])


def test_class_balance_counts(arrays: CIFAR10Arrays, tmp_path: Path):
    fig = class_balance(
        {"train": arrays.labels, "test": arrays.labels[:5]}, save=tmp_path / "c.png"
    )
    assert_png(fig, tmp_path / "c.png")
    heights = sorted(round(p.get_height()) for p in fig.axes[0].patches if p.get_height() > 0)
    assert sum(heights) == 12 + 5
    assert_png(class_balance(arrays.labels, save=tmp_path / "one.png"), tmp_path / "one.png")


def test_plot_history_has_four_panels_and_marks_the_best_epoch(tmp_path: Path):
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [2.0, 1.5, 1.2],
            "val_loss": [1.9, 1.6, 1.7],
            "train_acc": [0.3, 0.5, 0.6],
            "val_acc": [0.35, 0.5, 0.45],
            "lr": [0.1, 0.05, 0.01],
        }
    )
    fig = plot_history(history, best_epoch=2, save=tmp_path / "h.png")
    assert_png(fig, tmp_path / "h.png")
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines), ax.get_title()
    gap = [p.get_height() for p in fig.axes[3].patches]
    np.testing.assert_allclose(gap, [-5, 0, 15], atol=1e-9)


def test_plot_confusion_counts_and_row_normalized(tmp_path: Path):
    cm = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    fig = plot_confusion(cm, ["x", "y", "z"], save=tmp_path / "cm.png")
    assert_png(fig, tmp_path / "cm.png")
    counts, fractions = ([t.get_text() for t in ax.texts] for ax in fig.axes)
    assert counts[:3] == ["5", "1", "0"]
    assert fractions[:6] == ["0.83", "0.17", "0.00", "0.50", "0.50", "0.00"]  # an empty row stays 0
    assert len(plot_confusion(cm, ["x", "y", "z"], normalize="true").axes) == 1
    with pytest.raises(ValueError):
        plot_confusion(cm, ["x", "y", "z"], normalize="pred")


def test_mistakes_gallery_and_tsne_scatter(arrays: CIFAR10Arrays, tmp_path: Path):
    mistakes = pd.DataFrame(
        {"index": [3, 7], "label": [3, 7], "pred": [5, 4], "confidence": [0.9, 0.8]}
    )
    fig = mistakes_gallery(arrays.images, mistakes, save=tmp_path / "m.png")
    assert_png(fig, tmp_path / "m.png")
    np.testing.assert_allclose(
        np.asarray(fig.axes[0].images[0].get_array()), arrays.images[3] / 255
    )
    assert to_rgba(fig.axes[0].title.get_color()) == to_rgba(MISTAKE_COLOR)
    assert "dog (90%)" in fig.axes[0].title.get_text()

    rng = np.random.default_rng(0)
    fig = tsne_scatter(rng.normal(size=(50, 2)), rng.integers(0, 10, 50), save=tmp_path / "t.png")
    assert_png(fig, tmp_path / "t.png")


def test_plot_experiment_draws_means_spreads_and_every_seed(tmp_path: Path):
    import json

    table = pd.DataFrame(
        {
            "configuration": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "test_accuracy": [0.60, 0.64, 0.70, 0.71],
            "train_error_per_epoch": [
                json.dumps(e) for e in ([0.5, 0.3], [0.7, 0.5], [0.4, 0.2], [0.4, 0.2])
            ],
            "val_error_per_epoch": [json.dumps([0.6, 0.5])] * 4,
        }
    )
    fig = plot_experiment(table, "t", save=tmp_path / "e.png")
    assert_png(fig, tmp_path / "e.png")
    ax_test, ax_curves = fig.axes
    means = [c.lines[0].get_xdata()[0] for c in ax_test.containers]
    np.testing.assert_allclose(means, [62, 70.5])
    bar = ax_test.containers[0].lines[2][0].get_segments()[0]  # the whisker of "a"
    np.testing.assert_allclose(bar[:, 0], [62 - 100 * np.std([0.6, 0.64], ddof=1),
                                           62 + 100 * np.std([0.6, 0.64], ddof=1)])
    seed_dots = [line for line in ax_test.lines if line.get_linestyle() == "None"
                 and line.get_marker() == "."]
    seeds = sorted(x for line in seed_dots for x in line.get_xdata())
    assert seeds == pytest.approx([60, 64, 70, 71])
    solid_a = ax_curves.lines[0]
    np.testing.assert_allclose(solid_a.get_ydata(), [60, 40])  # mean of a's two training curves
    assert [t.get_text() for t in ax_test.get_yticklabels()] == ["a", "b"]


def test_plot_experiment_averages_each_epoch_over_the_seeds_that_reached_it():
    """A time budget can end seeds after different numbers of epochs."""
    import json

    table = pd.DataFrame({
        "configuration": ["a", "a"], "seed": [0, 1], "test_accuracy": [0.5, 0.6],
        "train_error_per_epoch": [json.dumps([0.5, 0.3]), json.dumps([0.7, 0.5, 0.2])],
        "val_error_per_epoch": [json.dumps([0.6, 0.4]), json.dumps([0.6, 0.4, 0.3])],
    })  # fmt: skip
    solid, dashed = plot_experiment(table).axes[1].lines
    np.testing.assert_allclose(solid.get_ydata(), [60, 40, 20])
    np.testing.assert_allclose(dashed.get_ydata(), [60, 40, 30])


def test_range_test_plot_marks_the_minimum_the_suggestion_and_a_divergence(tmp_path: Path):
    lrs = np.geomspace(1e-4, 10, 50)
    losses = 2.3 - np.log10(lrs / 1e-4) * 0.1
    losses[-5:] += np.arange(1, 6)  # blows up at the end
    fig = plot_range_test(lrs, losses, losses, 0.05, marks={"preset": 0.2}, diverged=True,
                          save=tmp_path / "range.png")  # fmt: skip
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("diverged") for label in labels)
    assert "suggestion (lr 0.05)" in labels and "preset (lr 0.2)" in labels
    assert (tmp_path / "range.png").read_bytes()[:8] == PNG_MAGIC
    calm = plot_range_test(lrs, losses, losses, 0.05)
    assert "no divergence" in calm.axes[0].get_title()


def test_reliability_diagram_has_one_panel_per_table():
    logits = np.log(np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    table = reliability_table(logits, np.array([0, 1, 1, 1]), bins=5)
    fig = reliability_diagram({"a": table, "b": table})
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == ["a", "b"]
    heights = [p.get_height() for p in titled[0].patches[:5]]  # the accuracy bars
    assert np.allclose(heights, table["accuracy"].fillna(0))


def test_heatmap_gallery_shows_each_image_twice_with_its_map():
    images = torch.rand(3, 3, 32, 32)
    maps = torch.rand(3, 32, 32)
    fig = heatmap_gallery(images, maps, ["x", "y", "z"], mean=None, std=None, ncols=2)
    assert len(fig.axes) == 2 * 2 * 2  # 2 rows of images, each above its row of maps
    assert sum(len(ax.images) for ax in fig.axes) == 3 + 2 * 3  # image, image + map

