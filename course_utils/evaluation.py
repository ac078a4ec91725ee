"""Evaluation: predictions, metrics, confusion matrix, penultimate features and t-SNE.

The model is run once over a loader (:func:`predict`) and everything else is computed from those
predictions with scikit-learn, the library a practitioner would use. All results are NumPy arrays
or pandas DataFrames, ready to print, plot or save.

Explained in notebook 06 (evaluation, t-SNE & confusion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn import metrics
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from torch import nn

from course_utils.config import DEFAULT_SEED
from course_utils.data import CIFAR10_CLASSES

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
    channels_last: bool = False,
) -> Predictions:
    """Run ``model`` over ``loader`` in evaluation mode and collect logits and labels.

    Args:
        model: the trained network; left in evaluation mode.
        loader: yields ``(images (B, 3, H, W), labels (B,))`` in a fixed order (no shuffling), so
            row ``i`` of the result is image ``i`` of the dataset.
        device: where the model is.
        channels_last: feed the images in NHWC layout.

    Returns:
        :class:`Predictions` with NumPy arrays on the CPU.

    Explained in notebook 06.
    """
    logits, labels = _run_in_eval_mode(model, model, loader, device, channels_last)
    return Predictions(logits, labels)  # logits (N, num_classes)


def _run_in_eval_mode(
    model: nn.Module,
    function: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str,
    channels_last: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``function(images)`` for every batch, with ``model`` in eval mode and no gradients.

    Returns the outputs stacked as float32 and the labels as int64, NumPy arrays on the CPU.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.eval()
    outputs, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            outputs.append(function(images).float().cpu())  # (B, ...)
            labels.append(torch.as_tensor(targets).cpu())
    return torch.cat(outputs).numpy(), torch.cat(labels).numpy().astype(np.int64)


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
    channels_last: bool = False,
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
    return _run_in_eval_mode(model, model.forward_features, loader, device, channels_last)


def stratified_sample(labels: np.ndarray, n_samples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Indices of about ``n_samples`` examples, the same number from each class where possible.

    Returns sorted indices; classes with fewer examples than their share give all they have.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n_samples // len(classes))
    chosen = [
        rng.choice(members, size=min(per_class, len(members)), replace=False)
        for members in (np.flatnonzero(labels == c) for c in classes)
    ]
    return np.sort(np.concatenate(chosen))


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
        n_samples: points to embed (split evenly over the classes).
        seed: fixes the sample, the PCA and the t-SNE optimisation.
        perplexity: t-SNE's perplexity before the small-sample adjustment.

    Returns:
        ``(embedding, labels, indices)``: float ``(n, 2)``, the labels of those points ``(n,)``,
        and their rows in ``features`` ``(n,)``.

    Explained in notebook 06.
    """
    indices = stratified_sample(labels, n_samples, seed)
    x = np.asarray(features, dtype=np.float32)[indices]  # (n, F)
    if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:
        x = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(x)  # (n, 50)
    perplexity = min(perplexity, max(1.0, (len(x) - 1) / 3))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    )
    return tsne.fit_transform(x), np.asarray(labels)[indices], indices
