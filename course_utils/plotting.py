"""The figures of the course: image grids, learning curves, confusion matrices, t-SNE maps.

Every function builds one matplotlib figure, returns it, and saves it as well when given
``save=path``. None of them calls ``plt.show()``: a notebook shows a returned figure by itself
(assign it, ``fig = plot_history(...)``, to show it only once), and a script saves it and closes it
with ``plt.close(fig)``.

Explained alongside the notebooks that use them: 01 (class balance, sample grid), 02 (augmentation),
05 (learning curves), 06 (confusion matrix, mistakes, t-SNE), 07 (experiment tables) and 09
(range test, reliability diagrams, Grad-CAM heat maps).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from course_utils.config import DEFAULT_SEED
from course_utils.data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CIFAR10Arrays, denormalize

CORRECT_COLOR = "tab:green"
MISTAKE_COLOR = "tab:red"
SAVE_DPI = 120  # resolution of saved PNGs: sharp on screen, small on disk


def _finish(fig: Figure, save: str | os.PathLike[str] | None) -> Figure:
    """Tighten the layout and save the figure if asked."""
    fig.tight_layout()
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight")
    return fig


def _to_display(
    images: np.ndarray | torch.Tensor,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> np.ndarray:
    """Images as float ``(N, H, W, 3)`` in [0, 1], ready for ``imshow``.

    Accepts uint8 ``(N, H, W, 3)`` arrays as loaded, or float ``(N, 3, H, W)`` tensors as a loader
    yields them; the latter are un-normalized with the statistics that normalized them.
    """
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0  # already (N, H, W, 3)
    x = torch.as_tensor(images).detach().cpu()
    if x.dtype == torch.uint8:  # (N, 3, H, W) uint8 tensors
        return (x.float() / 255.0).permute(0, 2, 3, 1).numpy()
    x = x.float()
    if mean is not None and std is not None:
        x = denormalize(x, mean, std)  # x * std + mean, clamped to [0, 1]
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (N, 3, H, W) -> (N, H, W, 3)


def _grid(n: int, ncols: int, cell: float = 1.4) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.3), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def image_grid(
    images: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    classes: Sequence[str] = CIFAR10_CLASSES,
    preds: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    stats: tuple[Sequence[float], Sequence[float]] | None = (CIFAR10_MEAN, CIFAR10_STD),
    ncols: int = 8,
    title: str | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """A grid of images titled with their class; with ``preds``, mistakes are titled in red.

    Args:
        images: uint8 ``(N, H, W, 3)`` as loaded, or normalized float ``(N, 3, H, W)`` from a
            loader (un-normalized with ``stats`` for display).
        labels: true classes ``(N,)``.
        classes: class names.
        preds: predicted classes ``(N,)``; titles then read "pred (true)" when they differ.
        stats: the ``(mean, std)`` the images were normalized with, as
            :func:`~course_utils.data.normalization_stats` gives them; ``None`` if they were not.
        ncols: images per row.
        title: figure title.
        save: also save the figure there (PNG).

    Explained in notebook 01 (samples) and 06 (predictions).
    """
    mean, std = (None, None) if stats is None else stats
    shown = _to_display(images, mean, std)
    labels = np.asarray(labels)
    preds = None if preds is None else np.asarray(preds)
    fig, axes = _grid(len(shown), ncols)
    for i, ax in enumerate(axes.flat[: len(shown)]):
        ax.imshow(shown[i])
        if preds is None:
            ax.set_title(classes[labels[i]], fontsize=8)
        elif preds[i] == labels[i]:
            ax.set_title(classes[preds[i]], fontsize=8, color=CORRECT_COLOR)
        else:
            ax.set_title(
                f"{classes[preds[i]]}\n({classes[labels[i]]})", fontsize=8, color=MISTAKE_COLOR
            )
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def augmentation_grid(
    data: CIFAR10Arrays,
    transform: Callable[[torch.Tensor], torch.Tensor],
    n: int = 6,
    n_views: int = 4,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
    seed: int = DEFAULT_SEED,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """The same images before and after augmentation: one row per image, the original first.

    Args:
        data: the split to draw from; its first ``n`` images are shown.
        transform: a training transform on uint8 ``(3, H, W)`` tensors (``data.train_transform()``).
        n: images (rows).
        n_views: augmented versions of each (columns after the original).
        mean, std: the statistics ``transform`` normalizes with, to undo them for display.
        seed: makes the random augmentations repeatable (the global RNG is left as it was).
        save: also save the figure there (PNG).

    Explained in notebook 02.
    """
    fig, axes = plt.subplots(
        n, n_views + 1, figsize=(1.4 * (n_views + 1), 1.4 * n + 0.3), squeeze=False
    )
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random stream
        torch.manual_seed(seed)
        for row in range(n):
            image = torch.from_numpy(data.images[row]).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            views = torch.stack([transform(image) for _ in range(n_views)])  # (n_views, 3, H, W)
            axes[row, 0].imshow(data.images[row])
            axes[row, 0].set_ylabel(data.classes[data.labels[row]], fontsize=8)
            for col, view in enumerate(_to_display(views, mean, std), start=1):
                axes[row, col].imshow(view)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("original", fontsize=9)
    for col in range(1, n_views + 1):
        axes[0, col].set_title(f"augmented {col}", fontsize=9)
    return _finish(fig, save)


def class_balance(
    labels: Mapping[str, np.ndarray] | np.ndarray,
    classes: Sequence[str] = CIFAR10_CLASSES,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """Bar chart of images per class, for one split or several side by side.

    Args:
        labels: int labels ``(N,)``, or ``{"train": labels, "test": labels, ...}``.
        classes: class names.
        save: also save the figure there (PNG).

    Explained in notebook 01.
    """
    splits = labels if isinstance(labels, Mapping) else {"images": labels}
    counts = pd.DataFrame(
        {name: np.bincount(np.asarray(y), minlength=len(classes)) for name, y in splits.items()},
        index=pd.Index(classes, name="class"),
    )
    long = counts.reset_index().melt(id_vars="class", var_name="split", value_name="count")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    sns.barplot(data=long, x="class", y="count", hue="split", ax=ax)
    ax.set_ylabel("images")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    if len(splits) == 1:
        ax.get_legend().remove()
    return _finish(fig, save)


def plot_history(
    history: pd.DataFrame,
    best_epoch: int | None = None,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """Learning curves in four panels: loss, accuracy, learning rate, and the train-val gap.

    Args:
        history: one row per epoch with columns ``epoch, train_loss, val_loss, train_acc, val_acc,
            lr`` (as ``training.fit`` returns).
        best_epoch: mark the epoch of the best checkpoint with a dashed line.
        save: also save the figure there (PNG).

    Note that with label smoothing the training loss includes the smoothing term, so it sits above
    a plain cross-entropy; the accuracy gap is the cleaner sign of overfitting.

    Explained in notebook 05.
    """
    epoch = history["epoch"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    (ax_loss, ax_acc), (ax_lr, ax_gap) = axes
    ax_loss.plot(epoch, history["train_loss"], "o-", label="train")
    ax_loss.plot(epoch, history["val_loss"], "o-", label="validation")
    ax_loss.set(title="loss", ylabel="cross-entropy")
    ax_acc.plot(epoch, 100 * history["train_acc"], "o-", label="train")
    ax_acc.plot(epoch, 100 * history["val_acc"], "o-", label="validation")
    ax_acc.set(title="accuracy", ylabel="%")
    ax_lr.plot(epoch, history["lr"], "o-", color="tab:purple")
    ax_lr.set(title="learning rate (at the start of each epoch)", ylabel="lr")
    gap = 100 * (history["train_acc"] - history["val_acc"])
    ax_gap.bar(epoch, gap, color=np.where(gap >= 0, "tab:orange", "tab:blue"))
    ax_gap.axhline(0, color="black", linewidth=0.8)
    ax_gap.set(title="generalization gap (train - validation accuracy)", ylabel="percentage points")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        if best_epoch:
            ax.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch ({best_epoch})")
    ax_loss.legend()
    ax_acc.legend()
    return _finish(fig, save)


def plot_confusion(
    cm: np.ndarray,
    classes: Sequence[str] = CIFAR10_CLASSES,
    normalize: str = "both",
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """Confusion-matrix heatmap(s): rows are true classes, columns predicted classes.

    Args:
        cm: ``(C, C)`` matrix of counts (e.g. ``evaluation.confusion_matrix(pred)``).
        classes: class names.
        normalize: ``"both"`` (counts and row-normalized side by side), ``"counts"`` or ``"true"``
            (each row divided by its total: the diagonal is then the per-class accuracy).
        save: also save the figure there (PNG).

    Explained in notebook 06.
    """
    if normalize not in ("both", "counts", "true"):
        raise ValueError(f"normalize must be 'both', 'counts' or 'true', got {normalize!r}")
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    normalized = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    panels = {
        "counts": (cm, "d", "counts"),
        "true": (normalized, ".2f", "fraction of each true class"),
    }
    chosen = ["counts", "true"] if normalize == "both" else [normalize]
    fig, axes = plt.subplots(1, len(chosen), figsize=(7.5 * len(chosen), 6.2), squeeze=False)
    for ax, name in zip(axes.flat, chosen):
        values, fmt, title = panels[name]
        sns.heatmap(
            values,
            annot=True,
            fmt=fmt,
            cmap="Blues",
            square=True,
            cbar=False,
            ax=ax,
            xticklabels=classes,
            yticklabels=classes,
            annot_kws={"fontsize": 7},
        )
        ax.set(title=title, xlabel="predicted", ylabel="true")
        ax.tick_params(axis="x", rotation=45)
        ax.tick_params(axis="y", rotation=0)
    return _finish(fig, save)


def mistakes_gallery(
    images: np.ndarray | torch.Tensor,
    mistakes: pd.DataFrame,
    classes: Sequence[str] = CIFAR10_CLASSES,
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
    ncols: int = 8,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """The model's most confident mistakes, titled "predicted (confidence) / true".

    Args:
        images: the whole split the predictions were made on: uint8 ``(N, H, W, 3)`` or normalized
            float ``(N, 3, H, W)``.
        mistakes: from ``evaluation.most_confident_mistakes`` (columns ``index, label, pred,
            confidence``).
        classes: class names.
        mean, std: normalization statistics of float images.
        ncols: images per row.
        save: also save the figure there (PNG).

    Explained in notebook 06.
    """
    idx = mistakes["index"].to_numpy()
    shown = _to_display(images[idx], mean, std)
    fig, axes = _grid(max(1, len(idx)), ncols, cell=1.6)
    for ax, image, (_, row) in zip(axes.flat, shown, mistakes.iterrows()):
        ax.imshow(image)
        ax.set_title(
            f"{classes[int(row['pred'])]} ({row['confidence']:.0%})\n"
            f"true: {classes[int(row['label'])]}",
            fontsize=7,
            color=MISTAKE_COLOR,
        )
    fig.suptitle("most confident mistakes")
    return _finish(fig, save)


def tsne_scatter(
    embedding: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str] = CIFAR10_CLASSES,
    title: str = "t-SNE of penultimate features",
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """Scatter plot of a 2-D embedding, one colour per class.

    Args:
        embedding: float ``(n, 2)`` from ``evaluation.tsne_embedding``.
        labels: int ``(n,)``.
        classes: class names.
        title: axes title.
        save: also save the figure there (PNG).

    Explained in notebook 06.
    """
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    sns.scatterplot(
        x=embedding[:, 0],
        y=embedding[:, 1],
        hue=np.asarray(classes)[np.asarray(labels)],
        hue_order=list(classes),
        palette="tab10",
        s=12,
        linewidth=0,
        ax=ax,
    )
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=1.5)
    return _finish(fig, save)


def plot_experiment(
    table: pd.DataFrame, title: str = "", save: str | os.PathLike[str] | None = None
) -> Figure:
    """One experiment table at a glance, never a single run: two panels.

    Left, each configuration's test accuracy: a dot and a whisker for the mean and the sample
    standard deviation over seeds, small black dots for the seeds themselves. Right, its error
    per epoch, averaged over the seeds that reached that epoch (with a time budget, seeds can run
    different numbers of epochs): solid on the training batches, dashed on validation (the two
    apart: overfitting; together and high: underfitting).

    Args:
        table: rows as ``course_utils.experiments.run_experiment`` writes them (``configuration``,
            ``seed``, ``test_accuracy``, ``train_error_per_epoch``, ``val_error_per_epoch``).
        title: the figure's title.
        save: also save the figure there (PNG).

    Explained in notebook 07.
    """
    groups = table.groupby("configuration", sort=False)
    fig, (ax_test, ax_curves) = plt.subplots(1, 2, figsize=(12, 0.5 * groups.ngroups + 2.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, group) in enumerate(groups):
        color = colors[i % len(colors)]
        accuracy = 100 * group["test_accuracy"]
        spread = accuracy.std() if len(accuracy) > 1 else 0.0
        ax_test.errorbar(accuracy.mean(), i, xerr=spread, fmt="o", color=color, capsize=4)
        ax_test.plot(accuracy, [i] * len(accuracy), "k.", alpha=0.6)
        for column, style in (("train_error_per_epoch", "-"), ("val_error_per_epoch", "--")):
            runs = [json.loads(errors) for errors in group[column]]
            curves = np.full((len(runs), max(map(len, runs))), np.nan)  # (seeds, epochs)
            for row, errors in zip(curves, runs):  # a time budget can give seeds unequal epochs
                row[: len(errors)] = errors
            epochs = np.arange(1, curves.shape[1] + 1)
            label = name if style == "-" else None
            mean = np.nanmean(curves, axis=0)  # over the seeds that reached each epoch
            marker = "o" if len(epochs) == 1 else None  # one epoch: a point, not a line
            ax_curves.plot(epochs, 100 * mean, style, color=color, label=label, marker=marker)
    ax_test.set_yticks(range(groups.ngroups), list(groups.groups))
    ax_test.invert_yaxis()  # the grid's order, top to bottom
    ax_test.set(xlabel="test accuracy (%)", title="test accuracy: mean ± std, dots: seeds")
    ax_curves.set(xlabel="epoch", ylabel="error (%)",
                  title="error per epoch, mean over seeds\n(solid: training, dashed: validation)")  # fmt: skip
    ax_curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curves.legend(fontsize="small")
    for ax in (ax_test, ax_curves):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def plot_range_test(
    lrs: np.ndarray,
    losses: np.ndarray,
    smoothed: np.ndarray,
    suggestion: float,
    marks: Mapping[str, float] | None = None,
    diverged: bool = False,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """The learning-rate range test (``diagnostics.lr_range_test``): loss against learning rate
    (log scale), raw and smoothed, with the lowest smoothed loss, the ``suggestion``, any other
    learning rates (``marks``, label -> lr), and where the loss diverged (the last step, if
    ``diverged``). Explained in notebook 09."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(lrs, losses, color="lightgray", lw=1, label="loss of each batch")
    ax.plot(lrs, smoothed, color="tab:blue", lw=2, label="smoothed")
    low = int(np.argmin(smoothed))
    ax.scatter([lrs[low]], [smoothed[low]], color="tab:red", zorder=3,
               label=f"lowest smoothed loss (lr {lrs[low]:.2g})")  # fmt: skip
    ax.axvline(suggestion, color="tab:green", lw=1.5, label=f"suggestion (lr {suggestion:.2g})")
    for (name, lr), color in zip((marks or {}).items(), ("tab:purple", "tab:orange", "tab:brown")):
        ax.axvline(lr, color=color, ls="--", lw=1.5, label=f"{name} (lr {lr:g})")
    top = max(smoothed[0], smoothed[low]) * 1.6  # a diverged loss would squash the rest
    if diverged:  # the step that stopped the test
        ax.axvline(lrs[-1], color="black", lw=1.5, label=f"diverged (lr {lrs[-1]:.2g})")
    ending = "" if diverged else f": no divergence up to lr {lrs[-1]:.2g}"
    title = "learning-rate range test" + ending
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", ylim=(None, top),
           title=title)  # fmt: skip
    ax.legend(fontsize=8)
    return _finish(fig, save)


def reliability_diagram(
    tables: Mapping[str, pd.DataFrame],
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """One reliability diagram per table of ``diagnostics.reliability_table`` (title -> table):
    accuracy in each bin of confidence (blue bars), the gap from it to the bin's mean confidence
    (red hatching: above the bar, overconfident; inside it, underconfident), the diagonal a
    calibrated model follows, and the share of the images in each bin (gray, right axis).
    Explained in notebook 09."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 4), squeeze=False)
    for ax, (title, table) in zip(axes.flat, tables.items()):
        width = table["upper"] - table["lower"]
        accuracy, confidence = table["accuracy"].fillna(0), table["confidence"].fillna(0)
        ax.bar(table["lower"], accuracy, width=width, align="edge", color="tab:blue",
               edgecolor="white", label="accuracy in the bin")  # fmt: skip
        ax.bar(table["lower"], confidence - accuracy, bottom=accuracy, width=width, align="edge",
               fill=False, hatch="//", edgecolor="tab:red", lw=0.5,
               label="gap to the mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
        share = ax.twinx()
        share.plot(table["lower"] + width / 2, table["count"] / table["count"].sum(), "o-",
                   color="gray", ms=3, lw=1)  # fmt: skip
        share.set_ylabel("share of images", color="gray")
        share.set_ylim(0, 1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top softmax probability)",
               ylabel="accuracy", title=title)  # fmt: skip
        ax.legend(fontsize=7, loc="upper left")
    return _finish(fig, save)


def heatmap_gallery(
    images: np.ndarray | torch.Tensor,
    maps: torch.Tensor,
    titles: Sequence[str],
    mean: Sequence[float] | None = CIFAR10_MEAN,
    std: Sequence[float] | None = CIFAR10_STD,
    ncols: int = 8,
    save: str | os.PathLike[str] | None = None,
) -> Figure:
    """Each image above the same image with its heat map (``maps``: ``(N, H, W)`` in [0, 1] at
    the images' size) laid over it, titled. Explained in notebook 09 (Grad-CAM)."""
    shown = _to_display(images, mean, std)
    ncols = max(1, min(ncols, len(shown)))
    rows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(2 * rows, ncols, figsize=(1.5 * ncols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, heat, title) in enumerate(zip(shown, maps, titles)):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        top.imshow(image)
        top.set_title(title, fontsize=7)
        bottom.imshow(image)
        bottom.imshow(heat.cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    return _finish(fig, save)
