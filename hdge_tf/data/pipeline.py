"""Input pipelines: one entry point from a data config to batched datasets.

Embedded sets (mnist5k, digits) and TFDS image classification sets share one
format (float32 NHWC in [-1, 1], int32 labels), so training and evaluation
code never needs to know where the data came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hdge_tf.data import embedded, tfds_source
from hdge_tf.data.autotune import set_autotune

_AUGMENTATIONS = ("none", "crop", "crop_flip")
_CROP_PADDING = 4
# Fixed, so that runs with any seed and evaluation code see the same subset.
_SUBSET_SEED = 0
_ARRAY_BATCH = 1024

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Batched train/test pipelines and the facts models and loops need."""

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple[int, int, int]
    num_train: int
    num_test: int
    name: str
    # Semi-supervised runs (labels_per_class > 0) train on batches of
    # ({"images": labeled, "unlabeled": any training images}, labels).
    num_labeled: int = 0


def _check_name(name: str) -> None:
    if name in embedded.EMBEDDED_LOADERS:
        return
    base = name.split(":")[0].split("/")[0]  # Allow "name/config:version".
    if base in tfds.list_builders(with_community_datasets=False):
        return
    raise ValueError(
        f"Unknown dataset '{name}': use one of the embedded datasets "
        f"{sorted(embedded.EMBEDDED_LOADERS)} or any TFDS image classification "
        "dataset name (e.g. cifar10, cifar100, svhn_cropped, mnist)."
    )


def _subset_indices(num_examples: int, limit: int) -> np.ndarray:
    """A fixed random subset, in file order, so every class is represented."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0 = all), got {limit}.")
    if limit == 0 or limit >= num_examples:
        return np.arange(num_examples)
    order = np.random.default_rng(_SUBSET_SEED).permutation(num_examples)
    return np.sort(order[:limit])


def _embedded_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = embedded.EMBEDDED_LOADERS[name]()
    if split == "train":
        return arrays.x_train, arrays.y_train
    if split == "test":
        return arrays.x_test, arrays.y_test
    raise ValueError(f"Embedded dataset '{name}' has splits train and test.")


def _tfds_subset(ds: tf.data.Dataset, indices: np.ndarray) -> tf.data.Dataset:
    """Keeps the examples at sorted `indices` of any (image, label) dataset,
    reading no further than needed."""
    keep = np.zeros(indices[-1] + 1, dtype=bool)
    keep[indices] = True
    keep = tf.constant(keep)
    return (
        ds.take(len(keep))
        .enumerate()
        .filter(lambda index, _: tf.gather(keep, index))
        .map(lambda _, example: example)
        .apply(tf.data.experimental.assert_cardinality(len(indices)))
    )


def _load_split(
    name: str, split: str, data_dir: str | None, download: bool, limit: int
) -> tuple[tf.data.Dataset, int]:
    """(image, label) dataset of one split and its size, before batching."""
    if name in embedded.EMBEDDED_LOADERS:
        images, labels = _embedded_arrays(name, split)
        indices = _subset_indices(len(labels), limit)
        ds = tf.data.Dataset.from_tensor_slices((images[indices], labels[indices]))
        return ds, len(indices)
    ds = tfds_source.load_tfds(name, split, data_dir=data_dir, download=download)
    size = int(ds.cardinality())
    if size < 0:  # TFDS records sizes, but a custom builder may not.
        size = tfds_source.num_examples(name, split, data_dir=data_dir)
    indices = _subset_indices(size, limit)
    if len(indices) < size:
        ds = _tfds_subset(ds, indices)
    return ds, len(indices)


def load_arrays(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = True,
    limit: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as numpy (images, labels), for evaluation code.

    With `limit`, it holds the same examples as the pipeline built with the
    same `limit_train`/`limit_test`.
    """
    _check_name(name)
    if name in embedded.EMBEDDED_LOADERS:
        images, labels = _embedded_arrays(name, split)
        indices = _subset_indices(len(labels), limit)
        return images[indices], labels[indices]
    ds, _ = _load_split(name, split, data_dir, download, limit)
    images, labels = [], []
    for image_batch, label_batch in ds.batch(_ARRAY_BATCH).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    image_shape = ds.element_spec[0].shape
    if not images:
        return np.zeros((0, *image_shape), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels)


def _split_labels(name: str, ds: tf.data.Dataset, config: Any) -> np.ndarray:
    """Every label of the (limited) training split, in order."""
    if name in embedded.EMBEDDED_LOADERS:
        _, labels = _embedded_arrays(name, "train")
        return labels[_subset_indices(len(labels), getattr(config, "limit_train", 0))]
    labels = ds.map(lambda _, label: label).batch(_ARRAY_BATCH)
    return np.concatenate(list(labels.as_numpy_iterator()))


def _num_classes(name: str, data_dir: str | None) -> int:
    if name in embedded.EMBEDDED_LOADERS:
        return int(embedded.EMBEDDED_LOADERS[name]().y_train.max()) + 1
    return tfds_source.num_classes(name, data_dir=data_dir)


def _augmenter(kind: str) -> Augmenter | None:
    """Batch augmentation driven by a stateless [2] seed, or None.

    Whole batches at once (gathers with per-image offsets): per-image maps cost
    0.3-0.4 s of CPU per mnist5k epoch, 8% of the epoch on 2 cores.
    """
    if kind not in _AUGMENTATIONS:
        raise ValueError(f"Unknown augment '{kind}': use one of {_AUGMENTATIONS}.")
    if kind == "none":
        return None
    flip = kind == "crop_flip"
    pad = _CROP_PADDING

    def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
        batch = tf.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        padded = tf.pad(
            images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT"
        )
        offsets = tf.random.stateless_uniform(
            [batch, 2], crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
        )
        rows = offsets[:, :1] + tf.range(height)
        cols = offsets[:, 1:] + tf.range(width)
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
        if flip:
            mirror = tf.random.stateless_uniform([batch], flip_seed) < 0.5
            images = tf.where(
                mirror[:, None, None, None], tf.reverse(images, axis=[2]), images
            )
        return images

    return augment


def _batches(
    ds: tf.data.Dataset,
    num_examples: int,
    batch_size: int,
    seed: int,
    augment: Augmenter | None,
    cache: bool,
    shuffle_buffer: int,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Cached, (repeated,) shuffled, batched and augmented examples. Repeated
    pipelines drop a last partial batch; one-epoch ones keep it, so that every
    example is seen once per epoch."""
    if cache:
        ds = ds.cache()  # Before the random ops, so each epoch differs.
    if repeat:
        ds = ds.repeat()
    buffer = num_examples if shuffle_buffer <= 0 else min(shuffle_buffer, num_examples)
    ds = ds.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=repeat)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds.batch(2)).map(
            lambda batch, pair: (augment(batch[0], pair), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds


def _semi_supervised_pipeline(
    all_examples: tf.data.Dataset,
    labeled: tf.data.Dataset,
    num_examples: int,
    num_labeled: int,
    batch_size: int,
    seed: int,
    augment: Augmenter | None,
    cache: bool,
    shuffle_buffer: int,
) -> tf.data.Dataset:
    """An epoch of batches of every training image (their labels unused), each
    paired with a batch drawn from the labeled subset, cycled as often as needed
    (as JEM's code does)."""
    unlabeled = _batches(
        all_examples, num_examples, batch_size, seed, augment, cache, shuffle_buffer
    ).map(lambda images, _: images)
    labeled = _batches(
        labeled,
        num_labeled,
        batch_size,
        seed + 1,
        augment,
        cache,
        shuffle_buffer,
        repeat=True,
    )
    ds = tf.data.Dataset.zip(unlabeled, labeled)
    ds = ds.map(lambda u, batch: ({"images": batch[0], "unlabeled": u}, batch[1]))
    return ds.prefetch(tf.data.AUTOTUNE)


def _labeled_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """`per_class` examples of every class, a fixed random choice, in file order."""
    rng = np.random.default_rng(_SUBSET_SEED)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"labels_per_class={per_class} but class {label} has only "
                f"{len(members)} training examples."
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def _eval_pipeline(
    ds: tf.data.Dataset, batch_size: int, cache: bool
) -> tf.data.Dataset:
    if cache:
        ds = ds.cache()
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def build_datasets(config: Any, batch_size: int, seed: int = 0) -> DataBundle:
    """Train and test pipelines for `config.name` as described by `config`.

    Args:
      config: a data ConfigDict (or any object with the same attributes):
        name, data_dir, download, augment ("none", "crop", "crop_flip"),
        cache, shuffle_buffer (<= 0 means the whole split), limit_train and
        limit_test (0 = all), labels_per_class (0 = all labeled; otherwise a
        fixed subset of that many labeled images per class, see DataBundle),
        autotune (tf.data autotuning; off by default, see `data.autotune`).
      batch_size: examples per batch; the last batch of an epoch may be
        smaller so that every example is seen once per epoch.
      seed: drives shuffling and augmentation; the limited subsets do not
        depend on it.

    Raises:
      ValueError: unknown dataset name or augmentation.
      DatasetUnavailableError: a TFDS dataset is neither prepared nor
        downloadable.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    name = config.name
    augment = _augmenter(getattr(config, "augment", "none"))
    _check_name(name)
    data_dir = getattr(config, "data_dir", None) or None
    download = bool(getattr(config, "download", True))
    cache = bool(getattr(config, "cache", True))

    train, num_train = _load_split(
        name, "train", data_dir, download, getattr(config, "limit_train", 0)
    )
    test, num_test = _load_split(
        name, "test", data_dir, download, getattr(config, "limit_test", 0)
    )
    shuffle_buffer = int(getattr(config, "shuffle_buffer", 0))
    per_class = int(getattr(config, "labels_per_class", 0) or 0)
    if per_class < 0:
        raise ValueError(f"labels_per_class must be >= 0, got {per_class}.")
    if per_class:
        labels = _split_labels(name, train, config)
        indices = _labeled_indices(labels, per_class)
        num_labeled = len(indices)
        if num_labeled < batch_size:
            raise ValueError(
                f"labels_per_class={per_class} gives {num_labeled} labeled images, "
                f"fewer than one batch of {batch_size}."
            )
        train_batches = _semi_supervised_pipeline(
            train,
            _tfds_subset(train, indices),
            num_train,
            num_labeled,
            batch_size,
            seed,
            augment,
            cache,
            shuffle_buffer,
        )
    else:
        num_labeled = num_train
        train_batches = _batches(
            train, num_train, batch_size, seed, augment, cache, shuffle_buffer
        ).prefetch(tf.data.AUTOTUNE)
    autotune = bool(getattr(config, "autotune", False))
    return DataBundle(
        train=set_autotune(train_batches, autotune),
        test=set_autotune(_eval_pipeline(test, batch_size, cache), autotune),
        num_classes=_num_classes(name, data_dir),
        image_shape=tuple(train.element_spec[0].shape.as_list()),
        num_train=num_train,
        num_test=num_test,
        name=name,
        num_labeled=num_labeled,
    )
