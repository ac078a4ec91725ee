"""Tests of course_utils.evaluation against scikit-learn and hand-built references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics

from course_utils.evaluation import (
    Predictions,
    classification_report,
    confusion_matrix,
    extract_features,
    most_confident_mistakes,
    per_class_accuracy,
    predict,
    tsne_embedding,
)
from course_utils.models import resnet18

pytestmark = pytest.mark.usefixtures("one_thread")


CLASSES = ("a", "b", "c", "d")


@pytest.fixture
def known() -> Predictions:
    """Random logits for 200 examples of 4 classes; class 3 is never predicted correctly."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4)).astype(np.float32)
    logits[np.arange(200), labels] += 1.0  # better than chance
    logits[labels == 3, 3] = -10.0
    return Predictions(logits, labels)


def test_accuracy_and_loss_match_sklearn(known: Predictions):
    assert known.preds.shape == (200,) and known.preds.dtype == np.int64
    assert known.accuracy == pytest.approx(metrics.accuracy_score(known.labels, known.preds))
    probs = np.exp(known.logits.astype(np.float64))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(known.probs, probs, rtol=1e-5)
    assert known.loss == pytest.approx(metrics.log_loss(known.labels, probs), rel=1e-5)


def test_per_class_accuracy_is_per_class_recall(known: Predictions):
    table = per_class_accuracy(known, CLASSES)
    assert list(table.index) == list(CLASSES)
    recall = metrics.recall_score(known.labels, known.preds, average=None, labels=[0, 1, 2, 3])
    np.testing.assert_allclose(table["accuracy"], recall)
    assert table.loc["d", "accuracy"] == 0.0
    assert table["total"].sum() == 200 and list(table["total"]) == list(
        np.bincount(known.labels, minlength=4)
    )


def test_classification_report_matches_sklearn(known: Predictions):
    table = classification_report(known, CLASSES)
    reference = metrics.classification_report(
        known.labels, known.preds, target_names=list(CLASSES), output_dict=True, zero_division=0
    )
    for name in (*CLASSES, "macro avg", "weighted avg"):
        for column in ("precision", "recall", "f1-score", "support"):
            assert table.loc[name, column] == pytest.approx(reference[name][column]), (name, column)
    assert table.loc["accuracy", "f1-score"] == pytest.approx(reference["accuracy"])
    assert table.loc["accuracy", "support"] == 200


def test_confusion_matrix_against_counting_by_hand(known: Predictions):
    expected = np.zeros((5, 5), dtype=int)  # a fifth class absent from the data still gets a row
    np.add.at(expected, (known.labels, known.preds), 1)
    np.testing.assert_array_equal(confusion_matrix(known, num_classes=5), expected)
    np.testing.assert_array_equal(
        confusion_matrix(known, 4), metrics.confusion_matrix(known.labels, known.preds)
    )
    normalized = confusion_matrix(known, 4, normalize="true")
    np.testing.assert_allclose(normalized.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(normalized), per_class_accuracy(known, CLASSES)["accuracy"])


def test_most_confident_mistakes_against_brute_force(known: Predictions):
    table = most_confident_mistakes(known, k=10)
    assert list(table.columns) == ["index", "label", "pred", "confidence"]
    probs = known.probs
    candidates = sorted(
        (float(probs[i].max()), i) for i in range(len(known)) if known.preds[i] != known.labels[i]
    )[::-1][:10]
    assert list(table["index"]) == [i for _, i in candidates]
    assert table["confidence"].is_monotonic_decreasing
    assert (table["label"] != table["pred"]).all()


def loader_of(images: torch.Tensor, labels: torch.Tensor, batch: int = 16):
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(labels), batch)]


def test_predict_and_extract_features_use_eval_mode():
    torch.manual_seed(0)
    model = resnet18(width=4)
    images, labels = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
    model.train()
    pred = predict(model, loader_of(images, labels), "cpu", channels_last=True)
    assert not model.training
    with torch.no_grad():
        expected = model(images).numpy()  # eval mode: independent of the batching
    np.testing.assert_allclose(pred.logits, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, labels.numpy())

    features, feature_labels = extract_features(model, loader_of(images, labels), "cpu")
    assert features.shape == (40, 8 * 4) and features.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(
            features, model.forward_features(images).numpy(), rtol=1e-4, atol=1e-5
        )
        # the features are exactly what the final linear layer sees
        np.testing.assert_allclose(
            model.fc(torch.from_numpy(features)).numpy(), expected, rtol=1e-4, atol=1e-5
        )
    np.testing.assert_array_equal(feature_labels, labels.numpy())


def test_tsne_sample_is_balanced_seeded_and_capped_by_the_rarest_class():
    rng = np.random.default_rng(0)
    balanced = np.repeat(np.arange(10), 50)
    features = rng.normal(size=(len(balanced), 8)).astype(np.float32)
    _, labels, chosen = tsne_embedding(features, balanced, n_samples=200, seed=1)
    assert list(np.bincount(labels, minlength=10)) == [20] * 10
    np.testing.assert_array_equal(labels, balanced[chosen])
    np.testing.assert_array_equal(chosen, tsne_embedding(features, balanced, 200, seed=1)[2])
    assert not np.array_equal(chosen, tsne_embedding(features, balanced, 200, seed=2)[2])

    rare = np.repeat(np.arange(10), [50] * 9 + [5])  # the last class has only 5 images
    _, labels, _ = tsne_embedding(features[: len(rare)], rare, n_samples=200, seed=1)
    assert list(np.bincount(labels, minlength=10)) == [5] * 10  # still balanced


@pytest.mark.parametrize("n_samples", [20, 120])
def test_tsne_embedding_shapes_and_repeatability(n_samples: int):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    features = (
        rng.normal(size=(240, 64)).astype(np.float32) + 3 * labels[:, None]
    )  # separable classes
    embedding, sample_labels, indices = tsne_embedding(
        features, labels, n_samples=n_samples, seed=0
    )
    assert embedding.shape == (n_samples, 2) and np.isfinite(embedding).all()
    np.testing.assert_array_equal(sample_labels, labels[indices])
    assert list(np.bincount(sample_labels)) == [n_samples // 4] * 4
    again, _, _ = tsne_embedding(features, labels, n_samples=n_samples, seed=0)
    np.testing.assert_allclose(embedding, again)
