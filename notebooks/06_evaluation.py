# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Evaluation, confusion & t-SNE
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/resnet18-cifar10-course/resnet18-cifar10/blob/main/notebooks/06_evaluation.ipynb)
#
# Notebook 05 trained ResNet-18 and kept the weights of its best epoch on the validation set. Now
# the test set gets its one look at them, and we go beyond a single accuracy: which classes the
# model finds hard, what it confuses with what, which mistakes it makes with confidence, and what
# its learned features look like.
#
# **Learning objectives.** After this notebook you can
# - rebuild a trained model from a self-describing checkpoint (architecture, weights and
#   normalization statistics) and measure it once on the test set;
# - read a classification report: precision, recall, F1 and support per class, and their averages;
# - compute a confusion matrix and per-class precision and recall from it by hand, and read its
#   heatmap;
# - inspect the most confident mistakes, and map the penultimate features with t-SNE;
# - turn the plots into specific, checked statements about a model.
#
# **Course map:** previous: [05 · Training with early stopping](05_training.ipynb); next: the
# labs, [07 · The experiments lab](07_experiments_lab.ipynb) and
# [08 · Transfer learning](08_transfer_learning.ipynb).

# %%
# Setup: on Google Colab, install the course's helper package and check for a GPU;
# elsewhere this does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    REPO = "https://github.com/resnet18-cifar10-course/resnet18-cifar10"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"course-utils @ git+{REPO}"], check=True
    )
    from course_utils.machine import warn_if_no_gpu

    warn_if_no_gpu()  # a CPU-only runtime: says so, with the measured minutes per epoch

# %%
import json
import math
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn import metrics
from sklearn.neighbors import NearestNeighbors

from course_utils.checkpoints import load_checkpoint
from course_utils.config import (
    PRESETS,
    SMOKE,
    TrainConfig,
    get_device,
    is_smoke,
    runs_dir,
    smoke_config,
)
from course_utils.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    build_loaders,
    cifar10_splits,
)
from course_utils.evaluation import (
    classification_report,
    confusion_matrix,
    extract_features,
    most_confident_mistakes,
    per_class_accuracy,
    predict,
    tsne_embedding,
)
from course_utils.exercises import check_confusion_matrix, check_precision_recall_f1
from course_utils.models import (
    count_parameters,
    describe_architecture,
    model_architecture,
    to_device,
)
from course_utils.plotting import mistakes_gallery, plot_confusion, tsne_scatter
from course_utils.run import setup_run
from course_utils.training import build_model, fit, model_from_checkpoint

device = get_device()
print(f"Device: {device}; smoke mode: {is_smoke()}")

# %% [markdown]
# ## 1. Which model? Finding the checkpoint
#
# We evaluate a **best** checkpoint: the weights of the epoch with the best validation accuracy.
# This notebook looks, in order, for
# 1. notebook 05's run, `runs/notebook05/best.pt`;
# 2. otherwise the most recent other run folder under `runs/`, such as one written by
#    `python -m course_utils train`;
# 3. otherwise the model shipped with the course, `checkpoints/cpu/best.pt` (the `cpu` preset,
#    trained on a laptop's CPU; the command that made it and its metrics lie beside it), after
#    `course_utils.transfer` has checked its sha256;
# 4. otherwise it trains a quick model itself, and says so.
#
# Among several runs it takes the most recent, not the one with the best test accuracy: picking a
# model by its test score is the selection-on-the-test-set mistake of notebooks 02 and 05, one
# level up. If you want to compare runs, compare their validation scores.

# %%
from course_utils.checkpoints import SHIPPED_CHECKPOINTS, pretrained_file


def find_checkpoint(runs: Path) -> Path | None:
    """Notebook 05's best checkpoint if there is one, else the most recent other run's."""
    notebook_run = runs / "notebook05" / "best.pt"
    if notebook_run.is_file():
        return notebook_run
    others = sorted(runs.glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return others[-1] if others else None


checkpoint_path = find_checkpoint(runs_dir())
if checkpoint_path is not None:
    print(f"Evaluating a run found under {runs_dir()}: {checkpoint_path}")
elif "cpu" in SHIPPED_CHECKPOINTS:
    checkpoint_path = pretrained_file("cpu")  # the shipped checkpoint, its sha256 checked
    print(f"No run of yours under {runs_dir()}: evaluating the model shipped with the course, "
          f"{checkpoint_path}. Notebook 05 or `python -m course_utils train` trains your own.")
else:
    if is_smoke():
        quick = smoke_config(PRESETS["cpu"])
    elif device.type == "cuda":
        quick = replace(PRESETS["full"], epochs=10)
    else:
        quick = replace(PRESETS["cpu"], epochs=1)
    print(f"No trained model found under {runs_dir()}. Training a quick one now "
          f"({quick.epochs} epoch(s) at width {quick.width}) so that this notebook has something "
          "to evaluate. It is far weaker than a real run: run notebook 05 or "
          "`python -m course_utils train` for that.")
    quick_setup = setup_run(quick, device, download=True)  # data, statistics, loaders, model
    quick_run = fit(quick_setup.model, quick_setup.train_loader, quick_setup.val_loader, quick,
                    device, out_dir=runs_dir() / "notebook06-quick", mean=quick_setup.mean,
                    classes=quick_setup.splits.train.classes, std=quick_setup.std)
    checkpoint_path = quick_run.best_checkpoint
    print(f"Evaluating the quick model: {checkpoint_path}")

# %% [markdown]
# ## 2. A checkpoint describes its model
#
# A bare `state_dict` is a bag of tensors: to use it you must know which network to build, with
# which width and stem, and how the images were normalized during training. The course's
# checkpoints carry all of that. We read the file first, build the network it describes, and only
# then load the weights.

# %%
checkpoint = load_checkpoint(checkpoint_path)  # read only: no model yet
cfg = TrainConfig.from_dict(checkpoint["config"])
classes = list(checkpoint["classes"])
mean = checkpoint.get("mean") or list(CIFAR10_MEAN)  # the training images' statistics
std = checkpoint.get("std") or list(CIFAR10_STD)
pd.Series({
    "architecture": describe_architecture(checkpoint["architecture"]),
    "best epoch (of the planned)": f"{checkpoint['epoch']} (of {cfg.epochs})",
    f"best {checkpoint['monitor']}, on validation": round(checkpoint["score"], 4),
    "training data": ("the smoke subset" if cfg.smoke
                      else f"{50_000 - cfg.val_size:,} training images"),
    "optimizer, schedule": f"{cfg.optimizer}, lr {cfg.lr:g}, {cfg.schedule}",
    "normalization mean": np.round(mean, 4).tolist(),
    "normalization std": np.round(std, 4).tolist(),
    "classes": ", ".join(classes),
}, name="checkpoint").to_frame()

# %%
model = build_model(cfg, num_classes=len(classes))
load_checkpoint(checkpoint_path, model)  # checks the architecture, then loads the weights
to_device(model, device, channels_last=cfg.channels_last)  # the layout predict() will use
n_parameters = count_parameters(model)
print(f"rebuilt {describe_architecture(model_architecture(model))}: {n_parameters:,} parameters")
assert model_architecture(model) == checkpoint["architecture"]  # the network the file came from

# %% [markdown]
# `course_utils` does these steps in one call, `model_from_checkpoint(path)`: it reads the file,
# builds the network of its configuration, checks the architecture and loads the weights. Notebooks
# 05 and 09 use it; it gives the same network:

# %%
same, _ = model_from_checkpoint(checkpoint_path)
pairs = zip(same.state_dict().values(), model.state_dict().values(), strict=True)
assert all(torch.equal(a, b.cpu()) for a, b in pairs)

# %% [markdown]
# The test images are normalized with the statistics stored in the checkpoint, which come from the
# *training* images. Recomputing them on the test set would be a small leak of its own, and would
# feed the network inputs scaled differently from what it was trained on.
#
# ## 3. The test set, once
#
# The test accuracy is an estimate of how the model will do on images it has never seen. It stays
# an honest estimate only as long as nothing was chosen by looking at it: not the epoch, not the
# learning rate, not which run to keep. So it is measured once, at the end, for the one model that
# was chosen on validation data. Looking at the same number twice is harmless; going back to
# change the model because of it turns the test set into a validation set, and then a new test
# set would be needed for an honest number.
#
# The test loader is built the way the command line builds it (no augmentation, fixed order, so
# that row `i` of the predictions is test image `i`):

# %%
splits = cifar10_splits(val_size=cfg.val_size, seed=cfg.seed, download=True)  # smoke: 500 test
_, _, test_loader = build_loaders(splits, cfg, mean, std, device)  # only the test loader is used
pred = predict(model, test_loader, device, channels_last=cfg.channels_last, amp=cfg.amp,
               tta=cfg.tta, tta_shift=cfg.tta_shift)
n_test = len(pred)
standard_error = math.sqrt(pred.accuracy * (1 - pred.accuracy) / n_test)
print(f"TEST accuracy {pred.accuracy:.2%} ± {standard_error:.2%} (one standard error), "
      f"cross-entropy {pred.loss:.3f}, on {n_test:,} images")
if checkpoint["monitor"] == "val_acc":
    print("validation accuracy of the same weights, measured during training: "
          f"{checkpoint['score']:.2%}")
recorded = checkpoint_path.parent / "metrics.json"  # written by `python -m course_utils train`
if recorded.is_file():
    run_metrics = json.loads(recorded.read_text())
    run_copy = "official" if "(official)" in run_metrics["data"]["source"] else "jpeg"
    if run_metrics["data"]["test"] != n_test:
        why = " (another set of test images: smoke mode tests on a subset)"
    elif run_copy != splits.test.kind:
        why = (f" (another copy of CIFAR-10: the run tested on the {run_copy} one, this pass on "
               f"the {splits.test.kind} one)")
    else:  # other kernels or batch sizes may flip an image whose two top scores are nearly tied
        why = " (the same weights, images and copy of CIFAR-10: the same number, up to near ties)"
    print(f"the run's own test pass, recorded in {recorded}: {run_metrics['test_accuracy']:.2%} "
          f"on {run_metrics['data']['test']:,} images{why}")

# %% [markdown]
# The ± is the sampling uncertainty of a test set of this size: with 10,000 images it is a few
# tenths of a percentage point, so differences between two models smaller than that say little.
#
# Which CIFAR-10? There are two copies of the same 60,000 images: the official release, which
# torchvision downloads (`download=True` above), and the CIFAR-10-images copy, the same images
# saved as JPEG files, slightly altered by the compression (notebook 01 compares their
# statistics). The course's own figures, the checkpoint it ships and every table of notebook 07,
# were measured on the JPEG copy (each run's `metrics.json` says which, under `data.source`), so a
# model evaluated on the official release can score a little differently.
# Validation and test accuracy should be close; a test accuracy far below the validation accuracy
# is the sign of a validation set that was overused (or of a bug in one of the two loaders).
#
# ## 4. Per-class metrics: the classification report
#
# For each class $c$:
# - **precision**: of the images the model *called* $c$, the fraction that really are $c$ (how
#   much to trust a prediction of $c$);
# - **recall**: of the images that really *are* $c$, the fraction the model found (this is the
#   per-class accuracy);
# - **F1**: the harmonic mean of the two, $2PR/(P+R)$, high only when both are;
# - **support**: how many test images of $c$ there are.
#
# The **macro** average weighs every class equally; the **weighted** average weighs them by
# support. CIFAR-10's test set has 1,000 images of every class, so the two coincide here, and the
# macro recall equals the accuracy. On an imbalanced dataset they would not, and accuracy alone
# could hide a class the model never gets right.

# %%
report = classification_report(pred, classes)
report.round(3)

# %%
per_class = per_class_accuracy(pred, classes)
order = per_class["accuracy"].sort_values()
fig, ax = plt.subplots(figsize=(7, 3.8))
ax.barh(order.index, 100 * order.to_numpy(), color="tab:blue")
ax.axvline(100 * pred.accuracy, color="black", ls="--", label=f"overall: {pred.accuracy:.1%}")
ax.set(xlabel="test accuracy of the class (%)", xlim=(0, 100), title="Per-class accuracy")
ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %%
# Sanity check: per-class accuracy is the recall column of the report, and their mean over these
# equally sized classes is the overall accuracy.
assert np.allclose(per_class["accuracy"], report.loc[classes, "recall"])
if len(set(per_class["total"])) == 1:  # every class has the same number of test images
    assert math.isclose(per_class["accuracy"].mean(), pred.accuracy)

# %% [markdown]
# ## 5. The confusion matrix
#
# A 10 × 10 table of counts: row = the true class, column = the predicted class. The diagonal
# holds the correct predictions; everything off the diagonal is a mistake, and *where* it sits
# says what was mistaken for what. A row sums to the number of test images of that class, a column
# to the number of times the model predicted that class.
#
# ### Exercise 1: count it yourself
#
# Write `my_confusion_matrix(y_true, y_pred, num_classes)` returning the `(num_classes,
# num_classes)` matrix of counts as integers. The check compares it with scikit-learn's
# `confusion_matrix` on a small example (with repeated pairs and a class that never occurs) and on
# the test predictions. Try it on a small example of your own first, in a new cell:
# `my_confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), num_classes=3)`.

# %%
def my_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    # Hint: start from a matrix of zeros and add one for every image, in its (true, predicted) cell.
    ### BEGIN SOLUTION
    tally = np.zeros((num_classes, num_classes), dtype=np.int64)
    for true_class, predicted_class in zip(y_true, y_pred):
        tally[true_class, predicted_class] += 1  # one image: row = truth, column = prediction
    return tally
    ### END SOLUTION


# %%
cm = check_confusion_matrix(my_confusion_matrix, pred.labels, pred.preds, len(classes))

# %%
# Sanity checks: rows sum to the images of each class, columns to the predictions of each class,
# the diagonal over the total is the accuracy, and scikit-learn, called directly, agrees.
n_classes = len(classes)
assert (cm.sum(axis=1) == np.bincount(pred.labels, minlength=n_classes)).all()
assert (cm.sum(axis=0) == np.bincount(pred.preds, minlength=n_classes)).all()
assert math.isclose(np.trace(cm) / cm.sum(), pred.accuracy)
sklearn_cm = metrics.confusion_matrix(pred.labels, pred.preds, labels=list(range(n_classes)))
assert (cm == sklearn_cm).all()
print(f"{cm.sum():,} images: {np.trace(cm):,} on the diagonal, {cm.sum() - np.trace(cm):,} off it")

# %% [markdown]
# As a heatmap, in counts and divided by each row's total. In the normalized version every row
# sums to 1, the diagonal is the per-class accuracy, and an off-diagonal cell reads "this share of
# the true class was called that".

# %%
fig = plot_confusion(cm, classes)

# %% [markdown]
# ## 6. Precision and recall, from the matrix
#
# Every number in the classification report can be read off the confusion matrix: the diagonal
# entry of class $c$ divided by its **column** sum is its precision, divided by its **row** sum its
# recall.
#
# ### Exercise 2: the report from the matrix
#
# Write `my_precision_recall_f1(cm)` returning a `(C, 3)` array whose row $c$ holds the precision,
# recall and F1 of class $c$. When a denominator is zero (a class that is never predicted has no
# precision), use 0, as scikit-learn does with `zero_division=0`. The check compares your numbers
# with scikit-learn's on two small matrices (one with a class that is never predicted, one with a
# class that has no images) and on `cm`.

# %%
def my_precision_recall_f1(cm: np.ndarray) -> np.ndarray:
    """(C, 3): precision, recall and F1 of each class, from a confusion matrix (rows = truth)."""
    # Hint: np.diag(cm) holds the hits; cm.sum(axis=0) counts predictions, cm.sum(axis=1) images.
    ### BEGIN SOLUTION
    hits = np.diag(cm).astype(np.float64)  # correctly classified images of each class
    predicted_as = cm.sum(axis=0)  # column sums: how often each class was predicted
    truly_are = cm.sum(axis=1)  # row sums: how many images each class has
    precision = np.divide(hits, predicted_as, out=np.zeros_like(hits), where=predicted_as > 0)
    recall = np.divide(hits, truly_are, out=np.zeros_like(hits), where=truly_are > 0)
    p_plus_r = precision + recall
    f1 = np.divide(2 * precision * recall, p_plus_r, out=np.zeros_like(hits), where=p_plus_r > 0)
    return np.stack([precision, recall, f1], axis=1)  # (C, 3)
    ### END SOLUTION


# %%
prf = check_precision_recall_f1(my_precision_recall_f1, cm)

# %% [markdown]
# Precision against recall, one point per class. On the diagonal, a class is predicted about as
# often as it occurs. Below it (recall above precision), the model predicts that class too often:
# it is where doubtful images end up. Above it, the model is reluctant to predict the class and
# right when it does.

# %%
precision, recall = prf[:, 0], prf[:, 1]
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.scatter(recall, precision)
for name, r, p in zip(classes, recall, precision):
    ax.annotate(name, (r, p), xytext=(4, 3), textcoords="offset points", fontsize=8)
low = min(recall.min(), precision.min(), 0.9) - 0.05
ax.plot([low, 1], [low, 1], color="gray", lw=0.8)
ax.set(xlabel="recall", ylabel="precision", xlim=(low, 1.05), ylim=(low, 1.05),
       title="Precision vs recall per class")
plt.show()

predicted_share = cm.sum(axis=0) / cm.sum(axis=1)  # predictions of a class / images of it
print("predicted most often relative to its size:", classes[predicted_share.argmax()],
      f"({predicted_share.max():.2f} predictions per true image)")
print("predicted least often relative to its size:", classes[predicted_share.argmin()],
      f"({predicted_share.min():.2f})")

# %% [markdown]
# ## 7. The most confident mistakes
#
# Averages hide individual images. The mistakes the model made *with the highest confidence* are
# worth a look: some are genuinely ambiguous at 32 × 32 pixels, some are look-alikes (a deer-
# coloured horse, a truck seen like a car), and a few are errors in the dataset's labels. A model
# that is very confident about many clearly wrong answers is overconfident, which label smoothing
# (notebook 05) counteracts.

# %%
mistakes = most_confident_mistakes(pred, k=16)
fig = mistakes_gallery(splits.test.images, mistakes, classes)
mistakes.assign(label=[classes[i] for i in mistakes["label"]],
                pred=[classes[i] for i in mistakes["pred"]]).round(3)

# %% [markdown]
# ## 8. What the network sees: t-SNE of the penultimate features
#
# The last layer of ResNet-18 is a linear classifier. What it classifies are the **penultimate
# features**: the output of global average pooling, one vector per image (512 numbers at width 64,
# 8 × width in general). If training worked, images of the same class should have similar
# features, so that a linear layer can separate them.
#
# **t-SNE** (van der Maaten & Hinton, 2008) draws such high-dimensional points in 2-D, trying to
# keep each point's nearest neighbours near it. It is good at showing clusters, and easy to
# over-read:
# - the distances *between* clusters and the sizes of clusters mean little;
# - the picture changes with the random seed and the perplexity (roughly, how many neighbours each
#   point cares about);
# - it is a picture of a sample (here up to 2,000 test images; in smoke mode 300), not a metric.
#
# First the features of every test image, and a check that they are what the last layer sees:

# %%
features, feature_labels = extract_features(model, test_loader, device,
                                            channels_last=cfg.channels_last)
print(f"features: {features.shape} (images, feature dimensions)")

# Sanity check: same order as the predictions, and the final linear layer applied to the features
# gives back the logits of a plain float32 pass. (A run with --tta or --amp predicted above with
# view-averaged or bfloat16 passes, whose outputs are not these logits: it gets one plain pass.)
plain = pred if not (cfg.tta or cfg.amp) else predict(model, test_loader, device,
                                                      channels_last=cfg.channels_last)
with torch.inference_mode():
    fc_logits = model.fc(torch.from_numpy(features).to(device)).float().cpu().numpy()
assert (feature_labels == pred.labels).all()
assert np.allclose(fc_logits, plain.logits, atol=1e-3)

# %%
n_points = SMOKE.tsne_samples if is_smoke() else 2_000
embedding, tsne_labels, tsne_rows = tsne_embedding(features, feature_labels, n_samples=n_points)
fig = tsne_scatter(embedding, tsne_labels, classes,
                   title=f"t-SNE of penultimate features: {len(embedding):,} test images")

# %% [markdown]
# To put a number on what the map suggests, without t-SNE's distortions: for each of the same
# images, which fraction of its 10 nearest neighbours **in the original feature space** belong to
# its class? Classes whose neighbourhoods are mixed are the ones a linear layer struggles to
# separate.

# %%
K = 10
sample_features = features[tsne_rows]  # (n, F): the images on the map
neighbours = NearestNeighbors(n_neighbors=K).fit(sample_features).kneighbors(return_distance=False)
same_class = (tsne_labels[neighbours] == tsne_labels[:, None]).mean(axis=1)  # (n,), self excluded
neighbourhoods = pd.DataFrame({
    "neighbours of the same class": pd.Series(same_class).groupby(tsne_labels).mean()
    .reindex(range(n_classes)).to_numpy(),
    "test accuracy": per_class["accuracy"].to_numpy(),
}, index=pd.Index(classes, name="class")).sort_values("test accuracy")
correlation = neighbourhoods.corr().iloc[0, 1]
print(f"correlation between the two columns over the classes: {correlation:.2f}")
neighbourhoods.round(3)

# %% [markdown]
# ## 9. What the plots say about this model
#
# Everything above was computed for the checkpoint you loaded, so the statements below are
# computed too, rather than written down in advance. CIFAR-10's classes fall into two groups:
# four **vehicles** (airplane, automobile, ship, truck) and six **animals**.

# %%
accuracy_by_class = per_class["accuracy"]
print(f"easiest class: {accuracy_by_class.idxmax()} ({accuracy_by_class.max():.0%}); "
      f"hardest: {accuracy_by_class.idxmin()} ({accuracy_by_class.min():.0%})")

both_ways = cm + cm.T  # confusions in either direction
np.fill_diagonal(both_ways, 0)
a, b = np.unravel_index(both_ways.argmax(), both_ways.shape)
n_mistakes = cm.sum() - np.trace(cm)
print(f"most confused pair: {classes[a]} and {classes[b]}: {cm[a, b]} {classes[a]} images called "
      f"{classes[b]}, {cm[b, a]} the other way round; {both_ways[a, b] / n_mistakes:.0%} of all "
      f"{n_mistakes:,} mistakes")

VEHICLES = ("airplane", "automobile", "ship", "truck")
is_vehicle = np.array([name in VEHICLES for name in classes])
wrong = pred.preds != pred.labels
stays_in_group = is_vehicle[pred.labels[wrong]] == is_vehicle[pred.preds[wrong]]
# If a wrong answer were any of the other 9 classes at random, it would stay in its group with
# probability (group size - 1) / 9.
group_size = np.where(is_vehicle[pred.labels[wrong]], is_vehicle.sum(), (~is_vehicle).sum())
by_chance = ((group_size - 1) / (n_classes - 1)).mean()
print(f"mistakes that stay within their group (animal for animal, vehicle for vehicle): "
      f"{stays_in_group.mean():.0%}; if the wrong answers were random: {by_chance:.0%}")

same_group = (is_vehicle[tsne_labels[neighbours]] == is_vehicle[tsne_labels][:, None]).mean()
print(f"feature-space neighbours of the same class: {same_class.mean():.0%}; "
      f"of the same group: {same_group:.0%}")

# %% [markdown]
# How to read these lines, for any reasonably trained model:
#
# - **The hardest classes are usually animals, and the most confused pair is usually cat and
#   dog**, followed by pairs such as automobile and truck, or deer and horse: classes that share
#   shape, texture and background at 32 × 32 pixels. The first two lines say whether your model
#   follows the pattern.
# - **If the share of mistakes that stay within their group is well above the random share**, the
#   network has learned the coarse split between vehicles (straight edges, uniform colours, sky,
#   road and water around them) and animals (fur, feathers, natural backgrounds), and its errors
#   are mostly between fine classes of the same kind. In the t-SNE map this shows as vehicle
#   clusters and animal clusters on different sides, and in the last line as a same-group share
#   of neighbours far above the same-class share.
# - **A weak model** (a smoke-mode or one-epoch checkpoint) gets little of this: a few classes
#   absorb most predictions (the precision-recall plot shows them below the diagonal), the t-SNE
#   map is one blurred cloud, and mistakes are spread more evenly. Train longer and rerun the
#   notebook to watch the structure appear.
# - **Confident mistakes** point to where more data, augmentation or a larger model could help,
#   and sometimes to labels that are simply wrong; no model should be expected to reach 100%.
#
# ## Check your understanding
#
# 1. Your model has 95% precision and 70% recall for "cat". What does it do with cat images, and
#    what does a "cat" prediction tell you?
# 2. Why is the row-normalized confusion matrix easier to compare between classes than the counts?
#    When would the two look the same?
# 3. Two runs score 93.1% and 93.4% on the 10,000 test images. Is the second one better? What would
#    you check before saying so?
# 4. Two clusters are far apart in a t-SNE map. Can you conclude that the network finds those
#    classes very different?
#
# <details><summary>Answers</summary>
#
# 1. It misses 30% of the cats (calling them something else, often dog), but when it says "cat" it
#    is right 95% of the time.
# 2. Each row is divided by the class's size, so every row shows shares of its own class, even when
#    classes differ in size. On CIFAR-10's test set, where every class has 1,000 images, the two
#    differ only by that factor of 1,000.
# 3. Not necessarily: the standard error of each is about 0.25 percentage points, and a 0.3-point
#    difference is within the noise (and seed-to-seed variation of training is of the same order).
#    Compare several seeds, and choose between the runs on validation accuracy, not test accuracy.
# 4. No. t-SNE keeps neighbourhoods, not large distances; the gap between clusters depends on the
#    perplexity and the random seed. Measure in the feature space itself (as the nearest-neighbour
#    shares above do).
#
# </details>
#
# ## What you learned
#
# - A good checkpoint describes its model: architecture, configuration, classes and normalization
#   statistics travel with the weights, so evaluation rebuilds exactly the trained network.
# - The test set is measured once, for the model chosen on validation data, and its accuracy comes
#   with a standard error.
# - Precision, recall and F1 per class, and the confusion matrix they are computed from, show
#   which classes are hard and what they are mistaken for.
# - The most confident mistakes show ambiguity, look-alike classes and label noise.
# - t-SNE of the penultimate features pictures what the network has learned; check what the picture
#   suggests with numbers computed in the feature space.
#
# ## Where to go from here
#
# This is the end of the core sequence. The labs go further: notebook 07 measures over seeds what
# each choice of the recipe buys, notebook 08 starts from pretrained weights, and notebook 09
# diagnoses a run (learning-rate range test, calibration, Grad-CAM);
# [the README](../README.md) lists every notebook and the command that trains and reports a full
# run. Some next steps of your own:
# - train the `full` preset on a GPU (Colab's free GPU works) and rerun this notebook on the result;
#   or, on a CPU, `python -m course_utils train --preset cpu` for the whole preset;
# - try ResNet-34 (`--depth 34`), a cosine schedule, or no label smoothing, and compare the runs
#   **on validation accuracy**;
# - add stronger augmentation (mixup, cutmix), or average the predictions for
#   an image and its mirror image (test-time augmentation);
# - test the model on images from elsewhere: CIFAR-10.1, a newer test set built the same way,
#   shows how much accuracy survives a small shift in the data.
