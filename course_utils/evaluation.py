"""Evaluation: predictions, metrics, confusion matrix, penultimate features and t-SNE.

The model is run once over a loader (:func:`predict`) and everything else is computed from those
predictions with scikit-learn, the library a practitioner would use. All results are NumPy arrays
or pandas DataFrames, ready to print, plot or save.

Explained in notebook 06 (evaluation, t-SNE & confusion).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn import metrics
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from course_utils.config import DEFAULT_SEED, autocast_dtype
from course_utils.data import CIFAR10_CLASSES, stratified_subset
from course_utils.models import to_device

#: Feature dimensions kept by PCA before t-SNE (the usual choice: van der Maaten & Hinton 2008
#: reduce to 30-50 dimensions first, which removes noise and speeds t-SNE up).
TSNE_PCA_DIMS = 50
#: t-SNE's default perplexity (roughly the number of neighbours each point attends to).
TSNE_PERPLEXITY = 30.0


@dataclass
class Predictions:
    """A model's outputs on a whole split, as NumPy arrays in the loader's order.

    Attributes:
        logits: float32 ``(N, num_classes)`` raw class scores.
        labels: int64 ``(N,)`` true classes.
    """

    logits: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def preds(self) -> np.ndarray:
        """int64 ``(N,)`` predicted classes: the highest logit."""
        return self.logits.argmax(axis=1)

    @property
    def probs(self) -> np.ndarray:
        """float32 ``(N, num_classes)`` softmax probabilities."""
        return torch.softmax(torch.from_numpy(self.logits).float(), dim=1).numpy()

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions, in [0, 1]."""
        return float(np.mean(self.preds == self.labels))

    @property
    def loss(self) -> float:
        """Mean cross-entropy (negative log-likelihood of the true class)."""
        logits = torch.from_numpy(self.logits).float()
        return float(nn.functional.cross_entropy(logits, torch.from_numpy(self.labels)))


def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
    *,
    channels_last: bool = True,
    amp: bool = False,
    tta: bool = False,
    tta_shift: int = 0,
) -> Predictions:
    """Run ``model`` over ``loader`` in evaluation mode and collect logits and labels.

    Args:
        model: the trained network; left in evaluation mode.
        loader: yields ``(images (B, 3, H, W), labels (B,))`` in a fixed order (no shuffling), so
            row ``i`` of the result is image ``i`` of the dataset.
        device: where to run.
        channels_last: run in NHWC layout where safe (see ``models.memory_format_for``).
        amp: run in mixed precision, as training did (see ``config.autocast_dtype``).
        tta: test-time augmentation: average the softmax of each image and its mirror image
            (:func:`views_averaged`).
        tta_shift: with ``tta``, also average over the image shifted by this many pixels up and
            left, and down and right, each with its mirror: 6 views (0: the 2 views of a flip).

    Returns:
        :class:`Predictions` with NumPy arrays on the CPU. Under torchrun, where ``loader`` holds
        this process's slice of the split (``data.build_loaders`` cuts them), the predictions of
        the whole split: every process must call it.

    Explained in notebook 06.
    """
    function = views_averaged(model, tta_shift) if tta else model
    logits, labels = run_in_eval_mode(model, loader, device, channels_last=channels_last, amp=amp,
                                      function=function)  # fmt: skip
    return _gathered(Predictions(logits, labels))  # logits (N, num_classes)


def _gathered(pred: Predictions) -> Predictions:
    """Under torchrun, every process's slice joined in rank order: the slices are contiguous, so
    that is the split's own order, and every process then holds the same predictions, bit for bit.
    Without torchrun, ``pred`` itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return pred
    parts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (pred.logits, pred.labels))
    logits, labels = zip(*parts)
    return Predictions(np.concatenate(logits), np.concatenate(labels))


def views_averaged(model: nn.Module, shift: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images -> log(mean of softmax(model(view)) over the views of images)``: see
    :func:`tta_views` for the views.

    A mirrored or slightly shifted photo shows the same class, and the training augmentation
    flips and shifts images, so the network has learned those views; averaging its answers
    removes part of its noise. The log of the averaged probabilities serves as logits: their
    softmax gives back that average. It is computed from the log-probabilities (``logsumexp``),
    which stays finite where a probability underflows to 0 (logits far apart, as early in
    training), where ``log(mean(softmax))`` would give ``-inf``.
    """

    def averaged(images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_classes)
        views = tta_views(images, shift)
        log_probs = torch.stack([model(v).float().log_softmax(1) for v in views])  # (V, B, K)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(views))

    return averaged


def views_per_image(*, tta: bool, tta_shift: int = 0) -> int:
    """Forward passes :func:`predict` makes for each image: 1, 2 (the flip) or 6 (shifts too)."""
    return (6 if tta_shift else 2) if tta else 1


def tta_views(images: torch.Tensor, shift: int = 0) -> list[torch.Tensor]:
    """The views test-time augmentation averages over: ``images`` and their mirror images, and
    with ``shift`` > 0 also the images moved ``shift`` pixels up and left and ``shift`` pixels
    down and right (the edge that comes into view mirrors the image's own border, as
    ``torch.nn.functional.pad(mode="reflect")`` does), each with its mirror image: 2 or 6 views of
    ``images``' shape."""
    views = [images]
    if shift:
        s, (h, w) = shift, images.shape[-2:]
        padded = nn.functional.pad(images, (s, s, s, s), mode="reflect")
        views += [padded[..., :h, :w], padded[..., 2 * s :, 2 * s :]]
    return [v for view in views for v in (view, view.flip(-1))]


def run_in_eval_mode(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
    *,
    channels_last: bool = True,
    amp: bool = False,
    function: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``function(images)`` (default: ``model(images)``) for every batch, in evaluation mode.

    The course's one evaluation loop: validation, the test report and feature extraction all run
    through it. ``model.eval()`` makes BatchNorm use its running statistics (and stop updating
    them), and ``torch.inference_mode()`` skips building the autograd graph. Outputs stay on the
    device until the end, so a GPU is never made to wait once per batch.

    Returns:
        The outputs stacked as float32 ``(N, ...)`` and the labels as int64 ``(N,)``, NumPy arrays
        on the CPU.
    """
    device = torch.device(device)
    memory_format = to_device(model, device, channels_last=channels_last)
    function = model if function is None else function
    model.eval()
    outputs, labels = [], []
    with torch.inference_mode(), torch.autocast(device.type, autocast_dtype(device), enabled=amp):
        for images, targets in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            outputs.append(function(images).float())  # (B, ...)
            labels.append(torch.as_tensor(targets))
    if not outputs:
        raise ValueError("the evaluation loader yielded no batches")
    return torch.cat(outputs).cpu().numpy(), torch.cat(labels).cpu().numpy().astype(np.int64)


def per_class_accuracy(pred: Predictions, classes: Sequence[str] = CIFAR10_CLASSES) -> pd.DataFrame:
    """Accuracy of each class (the recall of that class): which classes the model finds hard.

    Returns:
        A DataFrame indexed by class name with columns ``correct``, ``total`` and ``accuracy``.

    Explained in notebook 06.
    """
    n = len(classes)
    total = np.bincount(pred.labels, minlength=n)
    correct = np.bincount(pred.labels[pred.preds == pred.labels], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
    return pd.DataFrame(
        {"correct": correct, "total": total, "accuracy": accuracy},
        index=pd.Index(classes, name="class"),
    )


def classification_report(
    pred: Predictions, classes: Sequence[str] = CIFAR10_CLASSES
) -> pd.DataFrame:
    """scikit-learn's precision / recall / F1 / support per class, plus the averages, as a table.

    Returns:
        A DataFrame with one row per class and rows ``accuracy``, ``macro avg``, ``weighted avg``.

    Explained in notebook 06.
    """
    report = metrics.classification_report(
        pred.labels,
        pred.preds,
        labels=list(range(len(classes))),
        target_names=list(classes),
        output_dict=True,
        zero_division=0,
    )
    accuracy = report.pop("accuracy", None)
    table = pd.DataFrame(report).T
    if accuracy is not None:  # one number in sklearn's dict; a full row here
        table.loc["accuracy"] = [np.nan, np.nan, accuracy, table.loc["macro avg", "support"]]
    table["support"] = table["support"].astype(int)
    return table


def confusion_matrix(
    pred: Predictions, num_classes: int = len(CIFAR10_CLASSES), normalize: str | None = None
) -> np.ndarray:
    """The ``(num_classes, num_classes)`` confusion matrix: row = true class, column = predicted.

    Args:
        pred: the predictions.
        num_classes: size of the matrix (classes absent from ``pred`` still get a row).
        normalize: ``None`` for counts, ``"true"`` to divide each row by its total (each row then
            sums to 1 and its diagonal is the per-class accuracy), as in scikit-learn.

    Explained in notebook 06.
    """
    return metrics.confusion_matrix(
        pred.labels, pred.preds, labels=list(range(num_classes)), normalize=normalize
    )


def most_confident_mistakes(pred: Predictions, k: int = 16) -> pd.DataFrame:
    """The ``k`` wrong predictions the model was most sure about: often label noise or look-alikes.

    Returns:
        A DataFrame with columns ``index`` (row in the dataset), ``label``, ``pred`` and
        ``confidence`` (softmax probability of the predicted class), most confident first.

    Explained in notebook 06.
    """
    probs = pred.probs
    wrong = np.flatnonzero(pred.preds != pred.labels)
    confidence = probs[wrong, pred.preds[wrong]]
    order = np.argsort(-confidence, kind="stable")[:k]
    return pd.DataFrame(
        {
            "index": wrong[order],
            "label": pred.labels[wrong[order]],
            "pred": pred.preds[wrong[order]],
            "confidence": confidence[order],
        }
    )


def extract_features(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
    *,
    channels_last: bool = True,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features (what the final linear layer sees) of every image in ``loader``.

    Uses ``model.forward_features``, which a course ``ResNet`` provides.

    Returns:
        ``(features, labels)``: float32 ``(N, F)`` (F = 512 for ResNet-18 at width 64) and int64
        ``(N,)``, NumPy arrays on the CPU.

    Explained in notebook 06.
    """
    if not hasattr(model, "forward_features"):
        raise TypeError(f"{type(model).__name__} has no forward_features(); use a course ResNet")
    return run_in_eval_mode(model, loader, device, channels_last=channels_last, amp=amp,
                            function=model.forward_features)  # fmt: skip


def tsne_embedding(
    features: np.ndarray,
    labels: np.ndarray,
    n_samples: int = 2_000,
    seed: int = DEFAULT_SEED,
    perplexity: float = TSNE_PERPLEXITY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2-D t-SNE map of penultimate features, on a fixed, class-balanced sample.

    t-SNE costs grow quickly with the number of points, so a seeded stratified sample is embedded;
    features wider than 50 dimensions are first reduced with PCA. The perplexity is lowered for
    small samples (it must stay below the number of points).

    Args:
        features: float ``(N, F)`` from :func:`extract_features`.
        labels: int ``(N,)``.
        n_samples: points to embed, split evenly over the classes (at most the smallest class
            from each).
        seed: fixes the sample, the PCA and the t-SNE optimisation.
        perplexity: t-SNE's perplexity before the small-sample adjustment.

    Returns:
        ``(embedding, labels, indices)``: float ``(n, 2)``, the labels of those points ``(n,)``,
        and their rows in ``features`` ``(n,)``.

    Explained in notebook 06.
    """
    counts = np.unique(labels, return_counts=True)[1]  # images per class
    per_class = max(1, min(n_samples // len(counts), int(counts.min())))
    indices = stratified_subset(labels, per_class, seed)
    x = np.asarray(features, dtype=np.float32)[indices]  # (n, F)
    if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:
        x = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(x)  # (n, 50)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    )
    return tsne.fit_transform(x), np.asarray(labels)[indices], indices
