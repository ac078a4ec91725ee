"""Tests of course_utils.data: every source on tiny fixtures, statistics against NumPy, splits,
transforms, loaders, error messages, and the real CIFAR-10 copy."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils import data as D
from course_utils.config import SMOKE

PER_CLASS_TRAIN, PER_CLASS_TEST = 3, 2


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _write_folder_layout(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write PNG images (lossless, so pixels can be compared exactly) in the CIFAR-10-images layout.

    Returns the expected (images, labels) per split, in label-then-file-name order.
    """
    expected = {}
    for split, per_class in (("train", PER_CLASS_TRAIN), ("test", PER_CLASS_TEST)):
        images = _random_images(per_class * 10, seed=len(split))
        labels = np.repeat(np.arange(10), per_class)
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / D.CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
        expected[split] = (images, labels)
    return expected


def _zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())


@pytest.fixture
def folder_data(tmp_path: Path):
    root = tmp_path / "data"
    expected = _write_folder_layout(root / "cifar10-images")
    return root, expected


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def _assert_same_examples(data: D.CIFAR10Arrays, images: np.ndarray, labels: np.ndarray) -> None:
    """The same (image, label) pairs, in whatever order (the JPEG copy is put in a shuffled order)."""
    assert data.images.shape == images.shape and data.labels.shape == labels.shape

    def canonical(imgs, labs):
        keys = [labs[i].tobytes() + imgs[i].tobytes() for i in range(len(labs))]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return imgs[order], labs[order]

    got, want = canonical(data.images, data.labels), canonical(images, labels)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("split", D.SPLITS)
def test_folder_layout_loads_exact_pixels(folder_data, split):
    root, expected = folder_data
    data = D.load_cifar10(split, root)
    images, labels = expected[split]
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64
    _assert_same_examples(data, images, labels)
    assert data.classes == D.CIFAR10_CLASSES
    assert not np.array_equal(data.labels, labels), "the class-by-class order should be shuffled"
    np.testing.assert_array_equal(D.load_cifar10(split, root).labels, data.labels)  # a fixed order


@pytest.mark.parametrize("prefix", ["", "CIFAR-10-images-master/"])
def test_zip_layout_matches_folder(folder_data, tmp_path, prefix):
    root, expected = folder_data
    zip_root = tmp_path / "zipped"
    zip_root.mkdir()
    _zip_folder(root / "cifar10-images", zip_root / D.JPEG_ZIP, prefix)
    for split in D.SPLITS:
        from_zip, from_folder = D.load_cifar10(split, zip_root), D.load_cifar10(split, root)
        _assert_same_examples(from_zip, *expected[split])
        np.testing.assert_array_equal(from_zip.images, from_folder.images)  # same order too
        np.testing.assert_array_equal(from_zip.labels, from_folder.labels)


def test_jpeg_images_decode_like_pillow(tmp_path):
    """Real CIFAR-10-images files are JPEG: the loader must give exactly what Pillow decodes."""
    root = tmp_path / "cifar10-images"
    for split in D.SPLITS:
        for label, name in enumerate(D.CIFAR10_CLASSES):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(_random_images(1, label)[0]).save(root / split / name / "0000.jpg")
    data = D.load_cifar10("train", tmp_path)
    for label, name in enumerate(D.CIFAR10_CLASSES):
        reference = np.asarray(Image.open(root / "train" / name / "0000.jpg").convert("RGB"))
        (index,) = np.flatnonzero(data.labels == label)
        np.testing.assert_array_equal(data.images[index], reference)


def test_decoded_arrays_are_cached_and_reused(folder_data, monkeypatch):
    root, _ = folder_data
    first = D.load_cifar10("train", root)
    assert list((root / D.CACHE_FOLDER).glob("*.npz")), "first load should write a cache"

    def fail(*args, **kwargs):
        raise AssertionError("second load decoded the images again instead of using the cache")

    monkeypatch.setattr(D, "_decode_jpeg_split", fail)
    second = D.load_cifar10("train", root)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert "cached" in second.source and second.kind == first.kind == "jpeg"


def test_unwritable_cache_only_warns(folder_data, monkeypatch):
    root, expected = folder_data

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(D.np, "savez", refuse)
    with pytest.warns(UserWarning, match="Could not cache"):
        data = D.load_cifar10("test", root)
    _assert_same_examples(data, *expected["test"])


def _write_official_batches(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny copy of the official python release: five training batches, a test batch, meta."""
    folder = root / D.OFFICIAL_FOLDER
    folder.mkdir(parents=True)
    expected = {}
    train_parts = []
    for i in range(1, 6):
        images = _random_images(4, seed=100 + i)
        labels = np.random.default_rng(i).integers(0, 10, size=4)
        train_parts.append((images, labels))
        _pickle_batch(folder / f"data_batch_{i}", images, labels)
    expected["train"] = (
        np.concatenate([p[0] for p in train_parts]),
        np.concatenate([p[1] for p in train_parts]),
    )
    test_images, test_labels = _random_images(5, seed=7), np.arange(5)
    _pickle_batch(folder / "test_batch", test_images, test_labels)
    expected["test"] = (test_images, test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(D.CIFAR10_CLASSES)}, f)
    return expected


def _pickle_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    # The official format stores each image as 3072 bytes: all red, then green, then blue, row-major.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3 * 32 * 32)
    with open(path, "wb") as f:
        pickle.dump({"data": rows, "labels": [int(x) for x in labels]}, f)


def test_official_format_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    # Our tiny batch files cannot match the MD5 sums of the real release; everything else is real.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    expected = _write_official_batches(tmp_path)
    _write_folder_layout(tmp_path / "cifar10-images")  # present too: the official format wins
    for split in D.SPLITS:
        data = D.load_cifar10(split, tmp_path)
        np.testing.assert_array_equal(data.images, expected[split][0])
        np.testing.assert_array_equal(data.labels, expected[split][1])
        assert data.kind == "official" and "official" in data.source


def test_data_dir_from_environment(folder_data, monkeypatch):
    root, expected = folder_data
    monkeypatch.setenv("COURSE_DATA_DIR", str(root))
    _assert_same_examples(D.load_cifar10("test"), *expected["test"])


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(D.DataNotFoundError) as info:
        D.load_cifar10("train", tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "download=True" in message and D.JPEG_ZIP in message and "COURSE_DATA_DIR" in message


def test_download_without_internet_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(D.DataNotFoundError, match="Could not download CIFAR-10"):
        D.load_cifar10("train", tmp_path, download=True)


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        D.load_cifar10("validation", tmp_path)


def test_corrupt_image_is_named(folder_data):
    root, _ = folder_data
    bad = root / "cifar10-images" / "train" / "cat" / "0010.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(D.DataFormatError, match=r"train/cat/0010\.png.*corrupt"):
        D.load_cifar10("train", root)


def test_missing_class_folder_is_named(folder_data):
    root, _ = folder_data
    for path in (root / "cifar10-images" / "test" / "frog").iterdir():
        path.unlink()
    (root / "cifar10-images" / "test" / "frog").rmdir()
    with pytest.raises(D.DataFormatError, match=r"'test' split has no images for class.*frog"):
        D.load_cifar10("test", root)


def test_wrong_image_size_is_named(folder_data):
    root, _ = folder_data
    Image.new("RGB", (64, 48)).save(root / "cifar10-images" / "train" / "dog" / "0099.png")
    with pytest.raises(D.DataFormatError, match=r"0099\.png.*64x48.*32x32 RGB"):
        D.load_cifar10("train", root)


def test_corrupt_zip_is_named(tmp_path):
    (tmp_path / D.JPEG_ZIP).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(D.DataFormatError, match=r"cifar10-images\.zip is not a readable zip"):
        D.load_cifar10("train", tmp_path)


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, batch_size", [(1, 7), (37, 5), (64, 64), (100, 1000)])
def test_mean_std_matches_float64_numpy(n, batch_size):
    images = _random_images(n, seed=n)
    scaled = images.astype(np.float64) / 255.0
    mean, std = D.compute_mean_std(images, batch_size=batch_size)
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    assert isinstance(mean, tuple) and len(mean) == 3 and all(isinstance(v, float) for v in mean)


def test_mean_std_accepts_tensors_and_rejects_floats():
    images = _random_images(10, seed=1)
    assert D.compute_mean_std(torch.from_numpy(images)) == D.compute_mean_std(images)
    with pytest.raises(ValueError, match="uint8"):
        D.compute_mean_std(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        D.compute_mean_std(images.transpose(0, 3, 1, 2))


def test_mean_of_per_image_std_against_numpy():
    images = _random_images(20, seed=3)
    scaled = images.astype(np.float64) / 255.0
    reference = scaled.std(axis=(1, 2)).mean(axis=0)
    np.testing.assert_allclose(D.mean_of_per_image_std(images, batch_size=6), reference, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Subsets and splits
# --------------------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), 50)  # 500 labels, 50 per class


def test_stratified_subset():
    idx = D.stratified_subset(LABELS, per_class=7, seed=1)
    assert len(np.unique(idx)) == 70
    np.testing.assert_array_equal(np.bincount(LABELS[idx], minlength=10), np.full(10, 7))
    np.testing.assert_array_equal(idx, D.stratified_subset(LABELS, per_class=7, seed=1))
    assert not np.array_equal(idx, D.stratified_subset(LABELS, per_class=7, seed=2))
    with pytest.raises(ValueError, match="fewer than"):
        D.stratified_subset(LABELS, per_class=51)


def test_train_val_split_is_stratified_disjoint_and_seeded():
    train, val = D.train_val_split(LABELS, val_size=100, seed=0)
    assert len(val) == 100 and len(train) == 400
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(500))
    np.testing.assert_array_equal(np.bincount(LABELS[val]), np.full(10, 10))
    again = D.train_val_split(LABELS, val_size=100, seed=0)
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, D.train_val_split(LABELS, val_size=100, seed=1)[1])
    with pytest.raises(ValueError, match="multiple of"):
        D.train_val_split(LABELS, val_size=95)


def test_subset_copies_images_and_labels():
    data = D.CIFAR10Arrays(_random_images(20, 0), np.arange(20) % 10)
    sub = data.subset([3, 5])
    np.testing.assert_array_equal(sub.images, data.images[[3, 5]])
    np.testing.assert_array_equal(sub.labels, [3, 5])


# --------------------------------------------------------------------------------------------------
# Transforms, datasets and loaders
# --------------------------------------------------------------------------------------------------


def test_eval_transform_normalizes_exactly():
    image = torch.from_numpy(_random_images(1, 0)[0]).permute(2, 0, 1)  # (3, 32, 32)
    out = D.eval_transform()(image)
    expected = (image.double() / 255.0 - torch.tensor(D.CIFAR10_MEAN).double().view(3, 1, 1)) / (
        torch.tensor(D.CIFAR10_STD).double().view(3, 1, 1)
    )
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(D.denormalize(out).double(), image.double() / 255.0, atol=1e-6, rtol=0)


def test_train_transform_shapes_ranges_and_randomness():
    torch.manual_seed(0)
    image = torch.from_numpy(_random_images(1, 0)[0]).permute(2, 0, 1)
    transform = D.train_transform(rotation=10)
    outs = torch.stack([transform(image) for _ in range(20)])  # (20, 3, 32, 32)
    assert outs.shape == (20, 3, 32, 32) and outs.dtype == torch.float32
    low = (0 - max(D.CIFAR10_MEAN)) / min(D.CIFAR10_STD)
    high = (1 - min(D.CIFAR10_MEAN)) / min(D.CIFAR10_STD)
    assert outs.min() >= low - 1e-5 and outs.max() <= high + 1e-5
    assert len({o.sum().item() for o in outs}) > 1, "augmentation should differ between draws"


def test_denormalize_batch_shape():
    x = torch.randn(4, 3, 32, 32)
    out = D.denormalize(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_dataset_items():
    data = D.CIFAR10Arrays(_random_images(6, 0), np.arange(6, dtype=np.int64))
    image, label = D.CIFAR10Dataset(data)[4]
    assert image.shape == (3, 32, 32) and label == 4
    torch.testing.assert_close(image, torch.from_numpy(data.images[4]).permute(2, 0, 1).float() / 255)
    assert D.CIFAR10Dataset(data, D.eval_transform())[0][0].dtype == torch.float32


def _first_batch_labels(loader) -> list[int]:
    return next(iter(loader))[1].tolist()


def test_make_loader_is_reproducible_and_reseeds_per_epoch():
    data = D.CIFAR10Arrays(_random_images(64, 0), np.arange(64, dtype=np.int64))
    dataset = D.CIFAR10Dataset(data)
    a = D.make_loader(dataset, batch_size=16, shuffle=True, seed=3, num_workers=0)
    b = D.make_loader(dataset, batch_size=16, shuffle=True, seed=3, num_workers=0)
    assert _first_batch_labels(a) == _first_batch_labels(b)
    D.set_loader_epoch(a, seed=3, epoch=1)
    epoch1 = _first_batch_labels(a)
    D.set_loader_epoch(a, seed=3, epoch=2)
    assert _first_batch_labels(a) != epoch1
    D.set_loader_epoch(a, seed=3, epoch=1)
    assert _first_batch_labels(a) == epoch1
    ordered = D.make_loader(dataset, batch_size=16, shuffle=False, num_workers=0)
    assert _first_batch_labels(ordered) == list(range(16))
    assert not a.pin_memory  # only with CUDA


def test_make_loader_with_workers_is_reproducible():
    data = D.CIFAR10Arrays(_random_images(32, 0), np.arange(32, dtype=np.int64))
    dataset = D.CIFAR10Dataset(data, D.train_transform())
    batches = []
    for _ in range(2):
        loader = D.make_loader(dataset, batch_size=8, shuffle=True, seed=5, num_workers=2)
        batches.append(next(iter(loader))[0])
    torch.testing.assert_close(batches[0], batches[1], atol=0, rtol=0)


def _find_crop(original: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``out`` (3, 32, 32) is some 4-pixel-padded crop of ``original``, maybe flipped."""
    padded = np.pad(original, ((0, 0), (4, 4), (4, 4)))
    for flip in (False, True):
        candidate = out[:, :, ::-1] if flip else out
        for dy in range(9):
            for dx in range(9):
                if np.array_equal(padded[:, dy : dy + 32, dx : dx + 32], candidate):
                    return True
    return False


def test_tensor_loader_matches_reference_augmentation():
    data = D.CIFAR10Arrays(_random_images(40, 0), np.arange(40, dtype=np.int64) % 10)
    mean, std = (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)  # "normalize" back to 0..255
    loader = D.TensorLoader(data, batch_size=16, shuffle=True, augment=True, stats=(mean, std))
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        seen += y.tolist()
    assert len(loader) == 3 and sorted(seen) == sorted(data.labels.tolist())
    # Labels travel with their images: check every image against its own original.
    loader = D.TensorLoader(data, batch_size=40, shuffle=False, augment=True, stats=(mean, std))
    x, y = next(iter(loader))
    moved = 0
    for k in range(40):
        original = data.images[k].transpose(2, 0, 1)
        out = x[k].round().to(torch.uint8).numpy()
        assert _find_crop(original, out), f"image {k} is not a padded crop/flip of its original"
        moved += not np.array_equal(original, out)
    assert moved > 30, "almost every image should be moved or flipped"


def test_tensor_loader_to_moves_data_and_keeps_batches():
    data = D.CIFAR10Arrays(_random_images(10, 0), np.arange(10, dtype=np.int64))
    loader = D.TensorLoader(data, batch_size=5, shuffle=True, seed=1)
    moved = D.TensorLoader(data, batch_size=5, shuffle=True, seed=1).to("cpu")
    assert moved.device == torch.device("cpu") and moved.images.device == torch.device("cpu")
    for (x, y), (mx, my) in zip(loader, moved, strict=True):
        assert torch.equal(x, mx) and torch.equal(y, my)


def test_shard_rejects_a_rank_outside_the_processes():
    assert D.Shard() == D.Shard(0, 1)
    with pytest.raises(ValueError, match="rank 2 is not one of 0 .. 1"):
        D.Shard(2, 2)


def test_tensor_loader_plain_matches_eval_transform():
    data = D.CIFAR10Arrays(_random_images(10, 0), np.arange(10, dtype=np.int64))
    x, y = next(iter(D.TensorLoader(data, batch_size=10)))
    reference = torch.stack([D.CIFAR10Dataset(data, D.eval_transform())[i][0] for i in range(10)])
    torch.testing.assert_close(x, reference, atol=1e-6, rtol=0)
    assert y.tolist() == list(range(10))


def test_tensor_loader_resizes_like_torchvision_before_normalization():
    """image_size (the seeds' Resize(227)) resizes after normalizing; torchvision's resize before
    it must give the same batch, because both steps are linear."""
    from torchvision.transforms import v2

    data = D.CIFAR10Arrays(_random_images(4, 1), np.arange(4, dtype=np.int64))
    x, _ = next(iter(D.TensorLoader(data, batch_size=4, image_size=227)))
    assert x.shape == (4, 3, 227, 227)
    pixels = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255  # (4, 3, 32, 32)
    resized = v2.functional.resize(pixels, [227, 227], interpolation=v2.InterpolationMode.BILINEAR,
                                   antialias=False)  # fmt: skip
    reference = v2.functional.normalize(resized, list(D.CIFAR10_MEAN), list(D.CIFAR10_STD))
    torch.testing.assert_close(x, reference, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------
# The real CIFAR-10 copy (CI fails, rather than skips, when it is missing)
# --------------------------------------------------------------------------------------------------

# Values measured on the JPEG copy and on the official release (shared/data/README.md).
README_JPEG_MEAN, README_JPEG_STD = (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)
README_OFFICIAL_MEAN, README_OFFICIAL_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def test_real_cifar10_sizes_and_balance(cifar_root):
    train, test = D.load_cifar10("train", cifar_root), D.load_cifar10("test", cifar_root)
    assert train.images.shape == (50_000, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(train.class_counts(), np.full(10, 5_000))
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 1_000))
    # Mixed order, as in the official release: the first 100 images cover every class.
    assert len(np.unique(train.labels[:100])) == 10 and len(np.unique(test.labels[:100])) == 10


def test_real_cifar10_statistics(cifar_root):
    train = D.load_cifar10("train", cifar_root)
    mean, std = D.compute_mean_std(train.images)
    jpeg = train.kind == "jpeg"
    assert train.kind in ("jpeg", "official")
    assert train.published_stats() == ((D.CIFAR10_JPEG_MEAN, D.CIFAR10_JPEG_STD) if jpeg else (D.CIFAR10_MEAN, D.CIFAR10_STD))
    ref_mean, ref_std = (
        (README_JPEG_MEAN, README_JPEG_STD) if jpeg else (README_OFFICIAL_MEAN, README_OFFICIAL_STD)
    )
    np.testing.assert_allclose(mean, ref_mean, atol=0.002)
    np.testing.assert_allclose(std, ref_std, atol=0.002)
    # And against a float64 NumPy reference on a slice (the whole set in float64 would need 1.2 GB).
    part = train.images[:5_000].astype(np.float64) / 255.0
    part_mean, part_std = D.compute_mean_std(train.images[:5_000], batch_size=999)
    np.testing.assert_allclose(part_mean, part.mean(axis=(0, 1, 2)), atol=1e-10)
    np.testing.assert_allclose(part_std, part.std(axis=(0, 1, 2)), atol=1e-10)
    # The course's named constants agree with what this copy gives.
    named = (D.CIFAR10_JPEG_MEAN, D.CIFAR10_JPEG_STD) if jpeg else (D.CIFAR10_MEAN, D.CIFAR10_STD)
    np.testing.assert_allclose(mean, named[0], atol=1e-4)
    np.testing.assert_allclose(std, named[1], atol=1e-4)


def test_real_splits_full_and_smoke(cifar_root):
    full = D.cifar10_splits(cifar_root, smoke=False)
    assert (len(full.train), len(full.val), len(full.test)) == (45_000, 5_000, 10_000)
    np.testing.assert_array_equal(full.val.class_counts(), np.full(10, 500))
    smoke = D.cifar10_splits(cifar_root, smoke=True)
    np.testing.assert_array_equal(smoke.train.class_counts(), np.full(10, SMOKE.train_per_class))
    np.testing.assert_array_equal(smoke.val.class_counts(), np.full(10, SMOKE.val_per_class))
    np.testing.assert_array_equal(smoke.test.class_counts(), np.full(10, SMOKE.test_per_class))
    other_seed = D.cifar10_splits(cifar_root, seed=1, smoke=True)
    np.testing.assert_array_equal(other_seed.test.images, smoke.test.images)  # one test set
    assert not np.array_equal(other_seed.train.labels, smoke.train.labels)


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_train_size_keeps_a_stratified_subset_of_the_training_split(cifar_root):
    full = D.cifar10_splits(cifar_root, smoke=False)
    small = D.cifar10_splits(cifar_root, smoke=False, train_size=1_000)
    np.testing.assert_array_equal(small.train.class_counts(), np.full(10, 100))
    assert _rows(small.train.images) <= _rows(full.train.images)  # drawn from training only
    np.testing.assert_array_equal(small.val.images, full.val.images)  # validation untouched
    np.testing.assert_array_equal(small.test.images, full.test.images)
    again = D.cifar10_splits(cifar_root, smoke=False, train_size=1_000)
    np.testing.assert_array_equal(again.train.images, small.train.images)  # seeded
    for bad in (1_005, 45_010):
        with pytest.raises(ValueError, match="multiple of the 10 classes and at most the 45000"):
            D.cifar10_splits(cifar_root, smoke=False, train_size=bad)


def test_normalization_stats_by_name(folder_data):
    root, _ = folder_data
    train = D.cifar10_splits(root, val_size=10, smoke=False).train
    pixels = train.images.astype(np.float64) / 255  # (N, H, W, 3)
    mean, std = D.normalization_stats("dataset", train)
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 1, 2)), atol=1e-6)
    assert D.normalization_stats("imagenet", train) == (D.IMAGENET_MEAN, D.IMAGENET_STD)
    assert D.normalization_stats("per-image-std", train) == (D.CIFAR10_MEAN, D.WRONG_CIFAR10_STD)
    with pytest.raises(ValueError, match="normalization must be one of"):
        D.normalization_stats("cifar100", train)


def test_batches_forever_reseeds_each_pass_as_its_epoch_and_refuses_an_empty_loader():
    import itertools

    from course_utils.data import CIFAR10Arrays, TensorLoader, batches_forever, set_loader_epoch

    rng = np.random.default_rng(0)
    data = CIFAR10Arrays(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.arange(8) % 10,
                         tuple(str(i) for i in range(10)), "fake")  # fmt: skip
    loader = TensorLoader(data, 4, shuffle=True, augment=True, drop_last=True, seed=3)
    got = list(itertools.islice(batches_forever(loader, seed=3), 6))  # 3 passes of 2 batches
    expected = []
    for epoch in (1, 2, 3):  # what fit's epochs see
        set_loader_epoch(loader, 3, epoch)
        expected += list(loader)
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert not torch.equal(got[0][0], got[2][0])  # each pass shuffled and augmented anew
    with pytest.raises(ValueError, match="no batch"):
        next(batches_forever(TensorLoader(data, 16, drop_last=True)))
