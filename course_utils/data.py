"""CIFAR-10 for the course: loading, normalization statistics, augmentation and DataLoaders.

Every source ends in the same in-memory form, a :class:`CIFAR10Arrays` holding uint8 images
``(N, 32, 32, 3)`` and int64 labels ``(N,)``, so the rest of the course never cares where the data
came from. Sources, tried in this order:

1. torchvision's official format (``cifar-10-batches-py``, or its archive ``cifar-10-python.tar.gz``)
   under the data directory; torchvision downloads it there when ``download=True`` and online;
2. the CIFAR-10-images JPEG layout (``train/<class>/*.jpg``, ``test/<class>/*.jpg``), as a folder or
   as ``cifar10-images.zip``; decoded once, then cached as ``.npy`` arrays for fast reloads;
3. otherwise a :class:`DataNotFoundError` that says what to put where.

Explained in notebooks 01 (dataset & statistics) and 02 (augmentation & DataLoaders).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import random
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms import v2

from course_utils.config import (
    CROP_PADDING,
    DEFAULT_SEED,
    NORMALIZATIONS,
    SMALL_CROP,
    SMOKE,
    TRAIN_SIZE,  # noqa: F401 (the split sizes belong to config; importable from here too)
    VAL_SIZE,
    TrainConfig,
    data_dir,
    default_num_workers,
    is_smoke,
)

#: The ten classes in the standard order of the official release (label i is CIFAR10_CLASSES[i]).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)  # height, width, RGB channels

# Per-channel statistics of the 50,000 training images, pixels scaled to [0, 1] (population std).
#: Official python release (torchvision's download), computed with :func:`compute_mean_std`.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: The CIFAR-10-images JPEG copy: JPEG is lossy, so the std comes out slightly lower.
CIFAR10_JPEG_MEAN = (0.4913, 0.4821, 0.4465)
CIFAR10_JPEG_STD = (0.2452, 0.2428, 0.2606)
#: Widely copied "std" that is really the mean of per-image stds, not the dataset std (notebook 01).
WRONG_CIFAR10_STD = (0.2023, 0.1994, 0.2010)
#: The normalization that torchvision's ImageNet weights were trained with (its
#: ``ResNet18_Weights.IMAGENET1K_V1.transforms()``): inputs to those weights must be normalized
#: with these, and a network trained from scratch on CIFAR-10 with CIFAR-10's own (notebook 01).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OFFICIAL_FOLDER = "cifar-10-batches-py"  # what torchvision extracts
OFFICIAL_ARCHIVE = "cifar-10-python.tar.gz"  # what torchvision downloads
JPEG_ZIP = "cifar10-images.zip"
JPEG_FOLDERS = ("cifar10-images", "CIFAR-10-images", ".")  # folder layouts looked for, in order
CACHE_FOLDER = "cache"  # decoded arrays are kept in <data dir>/cache/
CACHE_VERSION = 2  # bump when the decoded layout changes, so old caches are not reused
#: The JPEG copy is stored class by class; it is put in a fixed shuffled order (this seed), as the
#: official release is, so that the first n images are a mix of classes and not all airplanes.
JPEG_ORDER_SEED = 10



class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 is in none of the places the course looks."""


class DataFormatError(ValueError):
    """A CIFAR-10 file or folder exists but is not what it should be."""


@dataclass
class CIFAR10Arrays:
    """One split of CIFAR-10 in memory.

    Attributes:
        images: uint8 array ``(N, 32, 32, 3)``, height x width x RGB.
        labels: int64 array ``(N,)`` with values 0..9.
        classes: the class names; ``classes[label]`` names a label.
        source: where the arrays came from (a path and its format), for the record.
        kind: ``"official"`` (the python release) or ``"jpeg"`` (the CIFAR-10-images copy, whose
            pixels differ slightly because JPEG is lossy); ``""`` for arrays made by hand.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = CIFAR10_CLASSES
    source: str = ""
    kind: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | Sequence[int]) -> CIFAR10Arrays:
        """The images and labels at ``indices``, as a new (copied) :class:`CIFAR10Arrays`."""
        indices = np.asarray(indices, dtype=np.int64)
        return CIFAR10Arrays(
            self.images[indices], self.labels[indices], self.classes, self.source, self.kind
        )

    def published_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The published ``(mean, std)`` of the training split of this copy of CIFAR-10."""
        if self.kind == "jpeg":
            return CIFAR10_JPEG_MEAN, CIFAR10_JPEG_STD
        return CIFAR10_MEAN, CIFAR10_STD

    def class_counts(self) -> np.ndarray:
        """Images per class, ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=len(self.classes))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_cifar10(
    split: str, root: str | os.PathLike[str] | None = None, *, download: bool = False
) -> CIFAR10Arrays:
    """Load one split of CIFAR-10 from the first source found under the data directory.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000 images).
        root: data directory; default ``$COURSE_DATA_DIR`` or ``<project>/data``.
        download: let torchvision download the official release into ``root`` when no local copy
            is found (needs internet).

    Returns:
        The split as uint8 images and int64 labels, in the standard class order.

    Raises:
        DataNotFoundError: no source found (the message says how to provide one).
        DataFormatError: a source exists but is corrupt or laid out wrongly (the message names it).

    Explained in notebook 01.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = data_dir(root)

    if (root / OFFICIAL_FOLDER).is_dir() or (root / OFFICIAL_ARCHIVE).is_file():
        return _load_official(root, split, download=False)
    jpeg_source = _find_jpeg_source(root)
    if jpeg_source is not None:
        return _load_jpeg_cached(jpeg_source, root, split)
    if download:
        return _load_official(root, split, download=True)
    raise DataNotFoundError(
        f"CIFAR-10 not found in {root}. Provide it in one of these ways:\n"
        f"  - with internet: load_cifar10({split!r}, download=True) lets torchvision download the "
        f"official release into that folder;\n"
        f"  - offline: put {OFFICIAL_ARCHIVE} (or the extracted {OFFICIAL_FOLDER}/) or "
        f"{JPEG_ZIP} (the CIFAR-10-images layout) into that folder;\n"
        f"  - or set COURSE_DATA_DIR to the folder that already holds one of them."
    )


def _load_official(root: Path, split: str, download: bool) -> CIFAR10Arrays:
    """The official python release through torchvision (it extracts a present archive itself)."""
    from torchvision.datasets import CIFAR10  # only here: the JPEG copy does not need it

    have_archive = (root / OFFICIAL_ARCHIVE).is_file() and not (root / OFFICIAL_FOLDER).is_dir()
    try:
        # With the archive present, torchvision checks its MD5 and extracts it without downloading.
        dataset = CIFAR10(str(root), train=(split == "train"), download=download or have_archive)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise DataFormatError(
            f"The official CIFAR-10 files in {root} are incomplete or corrupt ({exc}). Delete "
            f"{root / OFFICIAL_FOLDER} (and {OFFICIAL_ARCHIVE}) and download again, or provide "
            f"{JPEG_ZIP} instead."
        ) from exc
    except OSError as exc:  # no network, DNS failure, ...
        raise DataNotFoundError(
            f"Could not download CIFAR-10 into {root} ({exc}). Without internet, put "
            f"{OFFICIAL_ARCHIVE} or {JPEG_ZIP} into that folder, or set COURSE_DATA_DIR."
        ) from exc
    images = np.ascontiguousarray(dataset.data, dtype=np.uint8)  # (N, 32, 32, 3)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    classes = tuple(dataset.classes)
    if classes != CIFAR10_CLASSES or images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(f"{root / OFFICIAL_FOLDER} does not hold CIFAR-10 as expected.")
    return CIFAR10Arrays(images, labels, classes, f"{root / OFFICIAL_FOLDER} (official)", "official")


def _find_jpeg_source(root: Path) -> Path | None:
    """The CIFAR-10-images zip or folder under ``root``, if there is one."""
    if (root / JPEG_ZIP).is_file():
        return root / JPEG_ZIP
    for name in JPEG_FOLDERS:
        folder = (root / name).resolve()
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
    return None


def _cache_path(source: Path, root: Path, split: str) -> Path:
    """Cache file for a decoded split, named after the source's path, size and modification time,
    so that replacing the source invalidates the cache."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v{CACHE_VERSION}".encode()
    return root / CACHE_FOLDER / f"cifar10-jpeg-{split}-{hashlib.sha1(key).hexdigest()[:12]}.npz"


def _load_jpeg_cached(source: Path, root: Path, split: str) -> CIFAR10Arrays:
    cache = _cache_path(source, root, split)
    if cache.is_file():
        try:
            with np.load(cache) as arrays:
                return CIFAR10Arrays(
                    arrays["images"], arrays["labels"], source=f"{source} (JPEG, cached)", kind="jpeg"
                )
        except Exception:  # noqa: BLE001 - a damaged cache only costs a re-decode
            warnings.warn(f"Ignoring unreadable cache {cache}; decoding the images again.")
    data = _decode_jpeg_split(source, split)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=data.images, labels=data.labels)  # uncompressed: loads in ~0.1 s
        tmp.replace(cache)  # atomic: a crash mid-write never leaves a half-written cache
    except OSError as exc:
        warnings.warn(f"Could not cache decoded CIFAR-10 in {cache.parent} ({exc}); continuing.")
    return data


def _decode_jpeg_split(source: Path, split: str) -> CIFAR10Arrays:
    """Decode every image of one split from the CIFAR-10-images layout (a zip or a folder)."""
    if source.suffix == ".zip":
        try:
            archive = zipfile.ZipFile(source)
        except zipfile.BadZipFile as exc:
            raise DataFormatError(
                f"{source} is not a readable zip file ({exc}). Download it again or remove it."
            ) from exc
        with archive:
            names = [n for n in archive.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png"))]
            files = _group_by_class(names, split, where=str(source), sep="/")
            # ZipFile is not thread-safe for concurrent reads, so read bytes here, decode in threads.
            blobs = [(name, archive.read(name)) for name, _ in files]
    else:
        names = [
            p.relative_to(source).as_posix()
            for p in (source / split).rglob("*")
            if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        ]
        files = _group_by_class(names, split, where=str(source), sep="/")
        blobs = [(name, (source / name).read_bytes()) for name, _ in files]

    labels = np.array([label for _, label in files], dtype=np.int64)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow releases the GIL
        images = np.stack(list(pool.map(lambda nb: _decode_image(*nb, where=source), blobs)))
    order = np.random.default_rng(JPEG_ORDER_SEED).permutation(len(labels))
    return CIFAR10Arrays(
        images[order], labels[order], CIFAR10_CLASSES, f"{source} (JPEG, {split})", "jpeg"
    )


def _group_by_class(names: list[str], split: str, where: str, sep: str) -> list[tuple[str, int]]:
    """``(file name, label)`` for the files of ``split``, sorted by label then name (a fixed order,
    whatever order the zip or the file system lists them in).

    Accepts one leading folder above ``train/`` and ``test/`` (as in a zip of the GitHub repository).
    """
    by_class: dict[str, list[str]] = {c: [] for c in CIFAR10_CLASSES}
    unknown: set[str] = set()
    for name in names:
        parts = name.split(sep)
        if len(parts) >= 3 and parts[-3] == split:
            cls = parts[-2]
            if cls in by_class:
                by_class[cls].append(name)
            else:
                unknown.add(cls)
    missing = [c for c, files in by_class.items() if not files]
    if missing:
        raise DataFormatError(
            f"{where}: the {split!r} split has no images for class folder(s) {missing}. Expected "
            f"{split}/<class>/*.jpg for each of {list(CIFAR10_CLASSES)}."
            + (f" Found unexpected folders {sorted(unknown)}." if unknown else "")
        )
    if unknown:
        raise DataFormatError(
            f"{where}: unexpected class folder(s) {sorted(unknown)} in {split!r}; expected only "
            f"{list(CIFAR10_CLASSES)}."
        )
    return [(n, label) for label, c in enumerate(CIFAR10_CLASSES) for n in sorted(by_class[c])]


def _decode_image(name: str, blob: bytes, where: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            mode, size = img.mode, img.size
            array = np.asarray(img.convert("RGB") if mode == "L" else img, dtype=np.uint8)
    except Exception as exc:  # PIL reports damaged files in many different ways
        raise DataFormatError(
            f"Cannot decode image {name} in {where} ({exc}): the file is corrupt. Replace it "
            f"(or the whole archive) with a good copy."
        ) from exc
    if array.shape != IMAGE_SHAPE:
        raise DataFormatError(
            f"Image {name} in {where} is {size[0]}x{size[1]} {mode}; CIFAR-10 images are 32x32 RGB."
        )
    return array


# --------------------------------------------------------------------------------------------------
# Subsets and splits
# --------------------------------------------------------------------------------------------------


def stratified_subset(labels: np.ndarray, per_class: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Indices of ``per_class`` randomly chosen examples of every class, in ascending order.

    Args:
        labels: int labels ``(N,)``.
        per_class: how many to take from each class.
        seed: makes the choice repeatable.

    Explained in notebook 02.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if per_class > len(members):
            raise ValueError(f"class {cls} has {len(members)} examples, fewer than {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def train_val_split(
    labels: np.ndarray, val_size: int = VAL_SIZE, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into training and validation parts with the same class proportions.

    The validation part is what early stopping and checkpoint selection look at, so the test set
    is touched only once, at the very end.

    Args:
        labels: int labels ``(N,)``.
        val_size: number of validation examples; must divide evenly among the classes.
        seed: makes the split repeatable.

    Returns:
        ``(train_indices, val_indices)``, each sorted, disjoint, together covering all of ``labels``.

    Explained in notebook 02.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if val_size % len(classes):
        raise ValueError(f"val_size={val_size} must be a multiple of the {len(classes)} classes")
    val = stratified_subset(labels, val_size // len(classes), seed)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


@dataclass
class Splits:
    """The three parts a training run uses: train, validation (held out of train), and test."""

    train: CIFAR10Arrays
    val: CIFAR10Arrays
    test: CIFAR10Arrays


def cifar10_splits(
    root: str | os.PathLike[str] | None = None,
    val_size: int = VAL_SIZE,
    seed: int = DEFAULT_SEED,
    *,
    smoke: bool | None = None,
    download: bool = False,
    train_size: int | None = None,
) -> Splits:
    """Train / validation / test parts of CIFAR-10; in smoke mode, small stratified subsets.

    Args:
        root: data directory (see :func:`load_cifar10`).
        val_size: validation images held out of the 50,000 training images.
        seed: makes the split (and the smoke subsets) repeatable.
        smoke: shrink to the sizes in ``config.SMOKE``; default: read ``COURSE_SMOKE``.
        download: allow torchvision to download the official release.
        train_size: keep only this many training images (a stratified subset, drawn with
            ``seed``); ``None`` keeps all. Validation and test are unchanged.

    Explained in notebook 02.
    """
    smoke = is_smoke() if smoke is None else smoke
    train_full = load_cifar10("train", root, download=download)
    test = load_cifar10("test", root, download=download)
    if smoke:
        n_classes = len(train_full.classes)
        val_size = SMOKE.val_per_class * n_classes
        keep = stratified_subset(train_full.labels, SMOKE.train_per_class + SMOKE.val_per_class, seed)
        train_full = train_full.subset(keep)
        # The same test images whatever the seed, so that runs (and ensembles of them) compare.
        test = test.subset(stratified_subset(test.labels, SMOKE.test_per_class, DEFAULT_SEED))
    train_idx, val_idx = train_val_split(train_full.labels, val_size, seed)
    if train_size is not None:
        n_classes, available = len(train_full.classes), len(train_idx)
        if train_size % n_classes or train_size > available:
            raise ValueError(
                f"train_size={train_size}: it must be a multiple of the {n_classes} classes and "
                f"at most the {available} training images there are; use e.g. "
                f"{min(available, max(n_classes, train_size - train_size % n_classes))}."
            )
        per_class = train_size // n_classes
        train_idx = train_idx[stratified_subset(train_full.labels[train_idx], per_class, seed)]
    return Splits(train_full.subset(train_idx), train_full.subset(val_idx), test)


# --------------------------------------------------------------------------------------------------
# Normalization statistics
# --------------------------------------------------------------------------------------------------


def compute_mean_std(
    images: np.ndarray | torch.Tensor, batch_size: int = 1_000
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Exact per-channel mean and (population) std of uint8 images scaled to [0, 1], streamed.

    Only two running sums per channel are kept, of the pixel values and of their squares, as
    integers, so they are exact; memory stays at one batch however large the dataset is, whereas
    all 50,000 images as one float tensor need about 600 MB. Then ``var = E[x^2] - E[x]^2``.

    Args:
        images: uint8 ``(N, H, W, 3)`` array or tensor (channels last, as loaded).
        batch_size: images per step.

    Returns:
        ``(mean, std)``, each a 3-tuple of floats, RGB order.

    Explained in notebook 01.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {tuple(images.shape)}")
    if isinstance(images, torch.Tensor):
        images = images.numpy()
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (0..255), got {images.dtype}")
    total = np.zeros(3, dtype=np.int64)
    total_sq = np.zeros(3, dtype=np.int64)  # at most 255^2 per pixel: no overflow below 10^14 pixels
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].reshape(-1, 3).astype(np.int64)  # (B*H*W, 3)
        total += batch.sum(axis=0)
        total_sq += (batch * batch).sum(axis=0)
    n = images.shape[0] * images.shape[1] * images.shape[2]  # pixels per channel
    mean, std = [], []
    for s, sq in zip(total.tolist(), total_sq.tolist()):  # Python ints: exact to the last step
        mean.append(s / n / 255.0)
        std.append(((n * sq - s * s) / (n * n)) ** 0.5 / 255.0)  # sqrt(E[x^2] - E[x]^2)
    return tuple(mean), tuple(std)  # type: ignore[return-value]


def mean_of_per_image_std(images: np.ndarray, batch_size: int = 5_000) -> tuple[float, ...]:
    """Average over images of each image's own per-channel std: what the 0.2023 figure measures.

    It ignores how much the image *means* vary across the dataset, so it comes out smaller than the
    dataset std that normalization needs. Notebook 01 shows the two side by side.
    """
    sums = np.zeros(3, dtype=np.float64)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float64) / 255.0  # (B, H, W, 3)
        sums += batch.std(axis=(1, 2)).sum(axis=0)
    return tuple(float(s) for s in sums / len(images))


# --------------------------------------------------------------------------------------------------
# Transforms, datasets and loaders
# --------------------------------------------------------------------------------------------------


def train_transform(
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    rotation: float = 0.0,
) -> v2.Compose:
    """Training augmentation on uint8 ``(3, 32, 32)`` tensors, ending in normalized floats.

    Random 32x32 crop of the image padded by 4 pixels, random horizontal flip, optionally a small
    random rotation (degrees; the task statement uses one), then scale to [0, 1] and normalize.

    Explained in notebook 02.
    """
    steps: list[Callable] = [
        v2.RandomCrop(32, padding=CROP_PADDING),
        v2.RandomHorizontalFlip(),
    ]
    if rotation:
        steps.append(v2.RandomRotation(rotation))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


def eval_transform(
    mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD
) -> v2.Compose:
    """Evaluation preprocessing: scale to [0, 1] and normalize, nothing random.

    Validation and test images must be seen as they are, so that the score measures the model and
    not the luck of an augmentation draw. Explained in notebook 02.
    """
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def normalization_stats(
    kind: str, train: CIFAR10Arrays
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` a run normalizes its inputs with, by ``TrainConfig.normalization``.

    ``"dataset"`` (right): the per-channel statistics of the run's own training images.
    ``"imagenet"``: ImageNet's, as code copied from an ImageNet example uses.
    ``"per-image-std"``: CIFAR-10's mean with the widely copied ``(0.2023, 0.1994, 0.2010)``,
    which is the mean of per-image stds, about 18% below the real std (notebook 01).
    Notebook 07 measures what the two wrong ones cost in accuracy.
    """
    if kind == "dataset":
        return compute_mean_std(train.images)
    if kind == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if kind == "per-image-std":
        return CIFAR10_MEAN, WRONG_CIFAR10_STD
    raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {kind!r}")


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD
) -> torch.Tensor:
    """Undo :func:`~torchvision.transforms.v2.Normalize` for display: ``x * std + mean``, in [0, 1].

    Works on ``(3, H, W)`` and ``(B, 3, H, W)``. Use the *same* statistics that normalized the
    images (``img / 2 + 0.5`` is only right for mean = std = 0.5). Explained in notebook 02.
    """
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (3, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std_t + mean_t).clamp(0.0, 1.0)


class CIFAR10Dataset(Dataset):
    """A torch ``Dataset`` over in-memory uint8 images that applies a torchvision transform.

    Args:
        data: the split to serve.
        transform: applied to each uint8 ``(3, 32, 32)`` tensor; ``None`` gives floats in [0, 1].

    Explained in notebook 02.
    """

    def __init__(self, data: CIFAR10Arrays, transform: Callable | None = None) -> None:
        self.data = data
        self.classes = data.classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.data.images[index]).permute(2, 0, 1)  # (32, 32, 3) -> (3, 32, 32)
        if self.transform is None:
            return image.float() / 255.0, int(self.data.labels[index])
        return self.transform(image), int(self.data.labels[index])


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from the seed PyTorch gave that worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass(frozen=True)
class Shard:
    """This process's share of every batch when ``world_size`` processes train together under
    torchrun: process ``rank`` (0 to ``world_size - 1``) takes every ``world_size``-th image.
    ``Shard()`` is the whole batch, for a single process. Explained in notebook 05."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not one of 0 .. {self.world_size - 1}")


def make_loader(
    dataset: Dataset,
    batch_size: int = 128,
    *,
    shuffle: bool = False,
    seed: int = DEFAULT_SEED,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    drop_last: bool = False,
    shard: Shard | None = None,
) -> DataLoader:
    """A DataLoader with reproducible shuffling and worker seeding, and safe defaults.

    Args:
        dataset: what to load.
        batch_size: examples per batch (of this process, when several train together).
        shuffle: reshuffle every epoch (training) or keep the order (evaluation).
        seed: seeds the loader's own generator, which drives the shuffling and the workers' seeds.
        num_workers: worker processes; default :func:`~course_utils.config.default_num_workers`
            (0 on Windows, macOS and in smoke mode, where workers in notebooks are fragile).
        device: where the batches go; memory is pinned only for CUDA, where it speeds copies.
        drop_last: drop a final incomplete batch.
        shard: under torchrun, this process's share (:class:`Shard`). PyTorch's
            ``DistributedSampler`` then deals each process every ``world_size``-th image of a
            shuffle that is the same in every process, so together the processes see every image
            once per epoch (see :mod:`course_utils.distributed`).

    Call :func:`set_loader_epoch` before each epoch to make epoch ``e``'s order depend only on
    ``(seed, e)``, so that a resumed run sees the same batches. Explained in notebook 02.
    """
    workers = default_num_workers() if num_workers is None else num_workers
    pin = torch.device(device).type == "cuda" if device is not None else False
    sampler, shard = None, shard or Shard()
    if shard.world_size > 1:  # seeded so that epoch e shuffles from _epoch_seed(seed, e)
        sampler = DistributedSampler(dataset, shard.world_size, shard.rank, shuffle=shuffle,
                                     seed=_epoch_seed(seed, 0), drop_last=drop_last)  # fmt: skip
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )


def set_loader_epoch(loader: DataLoader | TensorLoader, seed: int, epoch: int) -> None:
    """Reseed a loader's generator for ``epoch``, so the shuffle of each epoch is fixed in advance.

    A ``DistributedSampler`` (several processes, :func:`make_loader`) is told the epoch too: it
    shuffles from its own generator, seeded the same way.
    """
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(_epoch_seed(seed, epoch))
    if isinstance(loader, TensorLoader):
        loader.epoch = epoch  # for alternate_flip
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)  # it seeds with its seed + epoch = _epoch_seed(seed, epoch)


def batches_forever(
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]], seed: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``loader``, pass after pass, without end (``itertools.cycle`` would keep them
    all in memory). With ``seed``, pass ``e`` is reshuffled and augmented as epoch ``e`` of that
    seed (:func:`set_loader_epoch`); without, the loader's generator simply goes on. For a fixed
    number of steps rather than epochs: a few labelled images (notebook 08), a range test (09).

    Raises:
        ValueError: the loader has no batch at all (which would loop forever).
    """
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError("the loader has no batch: fewer images than one batch (with drop_last)")
    for epoch in itertools.count(1):
        if seed is not None:
            set_loader_epoch(loader, seed, epoch)
        yield from loader


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffle: different for every (seed, epoch) pair of a course."""
    return seed * 1_000_003 + epoch  # 1,000,003 is a prime above any number of epochs


@dataclass(frozen=True)
class Augmentation:
    """How a :class:`TensorLoader` augments: a random crop of the zero-padded image, then a flip.

    ``TensorLoader(..., augment=True)`` uses the defaults, the standard CIFAR-10 recipe: pad by
    ``CROP_PADDING`` pixels, crop back to the image's size, flip half the images at random.

    Attributes:
        crop_padding: pixels of zero padding on each side before the random crop (0: no crop).
        crop_size: side of the random crop (``None``: the images' own). Smaller crops are cheaper
            to train on; the network, whose global pooling takes any size, is still evaluated on
            whole images. (Measured in benchmarks/README.md: they did not pay off for the preset.)
        alternate_flip: instead of flipping each image with probability 1/2 in every epoch, flip a
            fixed random half of the images in odd epochs and the other half in even ones, so that
            every two epochs show each image once each way (Jordan 2024, airbench). The loader's
            ``epoch`` (set by :func:`set_loader_epoch`) says which half.

    Explained in notebook 02.
    """

    crop_padding: int = CROP_PADDING
    crop_size: int | None = None
    alternate_flip: bool = False

    def crop_side(self, image_side: int) -> int:
        """The side of the crops taken from images ``image_side`` pixels wide, checked to fit."""
        side = self.crop_size or image_side
        if not 0 < side <= image_side + 2 * self.crop_padding:
            raise ValueError(f"crop_size {self.crop_size} does not fit in an image padded by "
                             f"{self.crop_padding} pixels on each side")  # fmt: skip
        return side


class TensorLoader:
    """A fast loader for the whole dataset held as one uint8 tensor, augmented in batches.

    Instead of transforming images one at a time, it crops and flips a whole batch with a few tensor
    operations, on whatever device the data lives on. Same augmentation as :func:`train_transform`
    (without rotation): zero-padded random crop and horizontal flip, then normalization.

    Args:
        data: the split to serve.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch.
        augment: ``True`` for the usual random crop and flip, an :class:`Augmentation` for other
            crops or flips, ``False`` for none.
        stats: the per-channel ``(mean, std)`` that normalize the images, as
            :func:`compute_mean_std` returns them.
        seed: seeds the generator that drives shuffling and augmentation.
        drop_last: drop a final incomplete batch.
        image_size: serve the images resized to this side (bilinear, after the crop), as the
            seeds' ``Resize(227)`` does; ``None``: as stored (32x32, or the crop's size).
        shard: under torchrun, this process's share (:class:`Shard`). Each step then takes a
            global batch of ``batch_size * world_size`` images from a shuffle that is the same in
            every process, draws the crops and flips of all of them, and serves this process every
            ``world_size``-th image (as ``DistributedSampler`` deals them): together the processes
            see the batches, augmented alike, that one process sees at the global batch size.
            Needs ``drop_last=True``, so that every process takes the same number of steps.

    The data starts on the CPU; ``.to(device)`` moves it, as it moves a model (on a GPU the images
    then never leave it, and the batches are cropped and flipped there).

    Explained in notebook 02.
    """

    def __init__(
        self,
        data: CIFAR10Arrays,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        augment: bool | Augmentation = False,
        stats: tuple[Sequence[float], Sequence[float]] = (CIFAR10_MEAN, CIFAR10_STD),
        seed: int = DEFAULT_SEED,
        drop_last: bool = False,
        image_size: int | None = None,
        shard: Shard | None = None,
    ) -> None:
        shard = shard or Shard()
        if shard.world_size > 1 and not drop_last:
            raise ValueError(
                "a TensorLoader shared by several processes needs drop_last=True, so that every "
                "process takes the same number of steps"
            )
        self.rank, self.world_size = shard.rank, shard.world_size
        self.device = torch.device("cpu")
        self.images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()  # uint8
        self.labels = torch.from_numpy(data.labels)  # (N,)
        self.classes = data.classes
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.image_size = image_size
        self.mean = torch.tensor(stats[0]).view(1, 3, 1, 1)
        self.std = torch.tensor(stats[1]).view(1, 3, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: works for every device
        self.epoch = 1  # set_loader_epoch sets it, for alternate_flip
        self.augmentation = Augmentation() if augment is True else (augment or None)
        self.crop_size = self.images.shape[-1]  # whole images, unless the augmentation crops
        self.built_augmentation = self.augmentation  # use_small_crops switches away and back
        self.small_side: int | None = None  # use_small_crops(scaled=True) serves this side
        self.flipped_in_odd_epochs = None
        if self.augmentation is not None:
            self.crop_size = self.augmentation.crop_side(self.images.shape[-1])
            if self.augmentation.alternate_flip:  # drawn once, from the seed: same in every process
                draw = torch.rand(len(self.labels), generator=torch.Generator().manual_seed(seed))
                self.flipped_in_odd_epochs = draw < 0.5  # (N,) bool
        self.dataset = data  # for len(loader.dataset), like a DataLoader

    def to(self, device: torch.device | str) -> TensorLoader:
        """Keep the data on ``device`` and produce the batches there; returns the loader."""
        self.device = torch.device(device)
        self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        return self

    def use_small_crops(self, small: bool, *, scaled: bool = False) -> None:
        """Progressive resizing: from the next batch on, random ``SMALL_CROP``-pixel crops of the
        unpadded images (``small``), or the crops the loader was built with. With ``scaled``,
        small images instead: the loader's own crops and flips, each whole crop then scaled down
        to ``SMALL_CROP`` pixels (bilinear), so the network sees all of every image, smaller."""
        if self.built_augmentation is None:
            raise ValueError("a loader that does not augment takes no crops: use augment=True")
        small_crops = dataclasses.replace(
            self.built_augmentation, crop_padding=0, crop_size=SMALL_CROP
        )
        self.augmentation = small_crops if small and not scaled else self.built_augmentation
        self.crop_size = self.augmentation.crop_side(self.images.shape[-1])
        self.small_side = SMALL_CROP if small and scaled else None

    def __len__(self) -> int:
        n, step = len(self.labels), self.batch_size * self.world_size  # images per step, all ranks
        return n // step if self.drop_last else -(-n // step)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        step = self.batch_size * self.world_size  # the global batch: one batch of every process
        mine = slice(self.rank, None, self.world_size)  # this process's share of it
        for start in range(0, len(self) * step, step):
            batch = order[start : start + step]  # the same in every process
            idx = batch[mine].to(self.device)
            x = self.images[idx]  # (B, 3, 32, 32) uint8
            if self.augmentation is not None:
                x = self._crop_and_flip(x, batch, keep=mine)
            x = (x.float() / 255.0 - self.mean) / self.std  # (B, 3, 32, 32) float32
            size = self.small_side or self.image_size
            if size is not None:
                x = resize_batch(x, size)  # (B, 3, S, S)
            yield x, self.labels[idx]

    def _crop_and_flip(self, x: torch.Tensor, batch_ids: torch.Tensor, keep: slice) -> torch.Tensor:
        """Random crops and flips, drawn for all the images ``batch_ids`` of the global batch (the
        same draws in every process), of which ``keep`` are this process's images ``x``."""
        b, _, h, w = x.shape
        drawn, p, c = len(batch_ids), self.augmentation.crop_padding, self.crop_size
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, 3, H+2p, W+2p), zeros
        dy = torch.randint(0, h + 2 * p - c + 1, (drawn,), generator=self.generator)[keep].to(x.device)
        dx = torch.randint(0, w + 2 * p - c + 1, (drawn,), generator=self.generator)[keep].to(x.device)
        rows = (dy[:, None] + torch.arange(c, device=x.device))[:, None, :, None]  # (B, 1, C, 1)
        cols = (dx[:, None] + torch.arange(c, device=x.device))[:, None, None, :]  # (B, 1, 1, C)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        channel = torch.arange(3, device=x.device)[None, :, None, None]
        x = padded[batch, channel, rows, cols]  # (B, 3, C, C)
        if self.flipped_in_odd_epochs is None:
            flip = (torch.rand(drawn, generator=self.generator) < 0.5)[keep].to(x.device)
        else:
            odd_epoch = self.epoch % 2 == 1
            flip = self.flipped_in_odd_epochs[batch_ids] == odd_epoch
            flip = flip[keep].to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


def build_loaders(
    splits: Splits,
    cfg: TrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    shard: Shard | None = None,
) -> tuple[Any, Any, Any]:
    """Train, validation and test loaders for a run's configuration.

    ``cfg.loader="auto"`` picks the :class:`TensorLoader`, which keeps the whole dataset as one
    uint8 tensor on the device and crops and flips whole batches at once (its speed against a
    ``DataLoader``: benchmarks/README.md); on a GPU the data never leaves the device. Random
    rotation needs the per-image torchvision path (:func:`make_loader`), which "auto" then picks.

    Under torchrun (``shard``: this process's share), ``cfg.batch_size`` is the global batch: each
    process's training loader serves its share of every step, and the validation and test splits
    are cut into one contiguous slice per process, which
    :func:`course_utils.evaluation.predict` joins back in order.

    Explained in notebook 05 (training).
    """
    shard = shard or Shard()
    batch_size = cfg.per_process_batch_size(shard.world_size)  # cfg.batch_size without torchrun
    val_split = _slice_for(splits.val, shard)  # all of it for a single process
    test_split = _slice_for(splits.test, shard)
    if cfg.loader_kind == "tensor":
        augmentation = Augmentation(cfg.crop_padding, cfg.crop_size, cfg.alternate_flip)
        size = None if cfg.image_size == 32 else cfg.image_size  # the seeds' Resize(227)
        train = TensorLoader(
            splits.train, batch_size, shuffle=True, augment=augmentation, stats=(mean, std),
            seed=cfg.seed, drop_last=True, image_size=size, shard=shard,
        ).to(device)
        val, test = (
            TensorLoader(part, cfg.eval_batch_size, stats=(mean, std), image_size=size).to(device)
            for part in (val_split, test_split)
        )
        return train, val, test
    train_images = CIFAR10Dataset(splits.train, train_transform(mean, std, cfg.rotation))
    train = make_loader(
        train_images, batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
        device=device, drop_last=True, shard=shard,
    )  # fmt: skip
    val, test = (
        make_loader(CIFAR10Dataset(part, eval_transform(mean, std)), cfg.eval_batch_size,
                    num_workers=cfg.num_workers, device=device)
        for part in (val_split, test_split)
    )
    return train, val, test


def _slice_for(data: CIFAR10Arrays, shard: Shard) -> CIFAR10Arrays:
    """The process's contiguous slice of ``data`` (all of it for a single process); the slices of
    ranks 0, 1, ... follow each other in order."""
    if shard.world_size == 1:
        return data
    return data.subset(np.array_split(np.arange(len(data)), shard.world_size)[shard.rank])


# --------------------------------------------------------------------------------------------------
# Class subsets and resized batches (the transfer experiments of notebook 08)
# --------------------------------------------------------------------------------------------------


def select_classes(data: CIFAR10Arrays, classes: Sequence[str]) -> CIFAR10Arrays:
    """The images of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in that order.

    ``select_classes(train, VEHICLES)`` is a four-class dataset: airplane 0, automobile 1, ship 2,
    truck 3. Explained in notebook 08.
    """
    unknown = [c for c in classes if c not in data.classes]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; the data has {list(data.classes)}")
    old = [data.classes.index(c) for c in classes]
    keep = np.flatnonzero(np.isin(data.labels, old))
    subset = data.subset(keep)
    relabel = np.full(len(data.classes), -1, dtype=np.int64)
    relabel[old] = np.arange(len(classes))
    subset.labels = relabel[subset.labels]
    subset.classes = tuple(classes)
    return subset


class Resized:
    """The batches of ``loader``, resized to ``size`` x ``size`` pixels (bilinear).

    ImageNet networks were trained on 224x224 images; their stem shrinks an image 4x, so a 32x32
    CIFAR-10 image is only 8x8 after it. Upsampling the batches (after normalization, which
    commutes with interpolation) trades time for accuracy. Explained in notebook 08.
    """

    def __init__(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int) -> None:
        self.loader, self.size = loader, size

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:  # (B, 3, 32, 32)
            yield resize_batch(images, self.size), labels  # (B, 3, size, size)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch ``(B, C, H, W)`` resized to ``(B, C, size, size)``, bilinear (as ``Resize(size)`` on
    a square image, antialiased when it shrinks); unchanged if it already has that size.
    Normalized images may be resized: normalization and interpolation are both linear, so their
    order does not matter."""
    if images.shape[-2:] == (size, size):
        return images
    shrinks = size < images.shape[-1]
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinks
    )
