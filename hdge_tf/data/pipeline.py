"""Input pipelines: one entry point from a data config to batched datasets.

Embedded sets (mnist5k, digits) and TFDS image classification sets share one
format (float32 NHWC in [-1, 1], int32 labels), so training and evaluation
code never needs to know where the data came from.

Training epochs are reproducible one by one: epoch e's order and augmentation are
a function of (seed, e) alone, so a run resumed at epoch e sees the batches an
uninterrupted run would have. As in the published loaders, a last partial training
batch is dropped; a stratified validation split can be held out of the training
split with a fixed seed (independent of the run's seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from hdge_tf.data import embedded, tfds_source
from hdge_tf.data.autotune import set_autotune

AUGMENTATIONS = ("none", "crop", "crop_flip")
_CROP_PADDING = 4
# Fixed, so that runs with any seed and evaluation code see the same subset.
_SUBSET_SEED = 0
# Fixed too: every run of an experiment holds out the same validation images.
_VALIDATION_SEED = 1234
_ARRAY_BATCH = 1024
_MAX_SEED = 2**31 - 1

Augmenter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Batched train/test pipelines and the facts models and loops need.

    `train` is the first epoch; `train_epochs(first, end, seed)` the epochs
    first..end-1 back to back, `steps_per_epoch` full batches each.
    """

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
    steps_per_epoch: int = 0
    train_epochs: Callable[[int, int, int], tf.data.Dataset] | None = None
    # Held out of the training split (data.validation_size), or None.
    validation: tf.data.Dataset | None = None
    num_validation: int = 0


def _check_name(name: str) -> None:
    if name in embedded.EMBEDDED_LOADERS or tfds_source.is_tfds_name(name):
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


def validation_indices(labels: np.ndarray, size: int) -> np.ndarray:
    """`size` indices of `labels`, stratified by class (each class's share of the
    split, largest remainders first) and drawn with a fixed seed; sorted."""
    if size < 0 or size >= len(labels):
        raise ValueError(
            f"validation_size must be in [0, {len(labels)}) for a training split of "
            f"{len(labels)} images, got {size}."
        )
    if size == 0:
        return np.zeros((0,), np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = size * counts / len(labels)
    taken = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - taken), kind="stable")[: size - taken.sum()]
    taken[extra] += 1
    rng = np.random.default_rng(_VALIDATION_SEED)
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:k]
        for c, k in zip(classes, taken, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def load_arrays(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = True,
    limit: int = 0,
    validation_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as numpy (images, labels), for evaluation code.

    With `limit`, it holds the same examples as the pipeline built with the
    same `limit_train`/`limit_test`. Split "validation" is the held-out part of
    the (limited) training split for `validation_size`, "train" the rest.
    """
    _check_name(name)
    if split == "validation" or (split == "train" and validation_size):
        images, labels = load_arrays(name, "train", data_dir, download, limit)
        held_out = np.zeros(len(labels), bool)
        held_out[validation_indices(labels, validation_size)] = True
        keep = held_out if split == "validation" else ~held_out
        return images[keep], labels[keep]
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


def load_validation_arrays(config: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The validation split held out of the training split by a data config
    (`data.validation_size`, of the `limit_train` subset), or None without one."""
    size = int(getattr(config, "validation_size", 0) or 0)
    if not size:
        return None
    return load_arrays(
        config.name,
        "validation",
        getattr(config, "data_dir", None),
        bool(getattr(config, "download", True)),
        limit=int(getattr(config, "limit_train", 0) or 0),
        validation_size=size,
    )


def load_training_arrays(config: Any) -> tuple[np.ndarray, np.ndarray]:
    """The images a run trains on, by a data config: the (`limit_train`) training
    split without its validation hold-out."""
    return load_arrays(
        config.name,
        "train",
        getattr(config, "data_dir", None),
        bool(getattr(config, "download", True)),
        limit=int(getattr(config, "limit_train", 0) or 0),
        validation_size=int(getattr(config, "validation_size", 0) or 0),
    )


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
    if kind not in AUGMENTATIONS:
        raise ValueError(f"Unknown augment '{kind}': use one of {AUGMENTATIONS}.")
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


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of one epoch's shuffle and augmentation, from (seed, epoch)."""
    return ((seed * 1_000_003 + stream) * 10_007 + epoch) % _MAX_SEED + 1


def _epoch_batches(
    ds: tf.data.Dataset,
    num_examples: int,
    batch_size: int,
    epoch_seed: int,
    augment: Augmenter | None,
    shuffle_buffer: int,
    repeat: bool = False,
) -> tf.data.Dataset:
    """One epoch of shuffled, batched and augmented examples, drawn from
    `epoch_seed` alone; a last partial batch is dropped. With `repeat`, endless
    passes, each shuffled anew (still a function of `epoch_seed`)."""
    buffer = num_examples if shuffle_buffer <= 0 else min(shuffle_buffer, num_examples)
    buffer = max(buffer, 1)
    if repeat:
        source = ds

        def passes(_: tf.Tensor) -> tf.data.Dataset:
            return source.shuffle(
                buffer, seed=epoch_seed, reshuffle_each_iteration=True
            ).repeat()

        # Built anew for each iteration of the epoch: a reshuffling dataset keeps its
        # shuffle state between iterations, so reading the same epoch twice would
        # otherwise give other passes the second time.
        ds = (
            tf.data.Dataset.range(1)
            .flat_map(passes)
            .apply(
                tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
            )
        )
    else:
        ds = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=True)
    if augment is not None:
        ds = ds.enumerate().map(
            lambda index, batch: (
                augment(batch[0], tf.stack([tf.constant(epoch_seed, tf.int64), index])),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds


def _concatenate(datasets: list[tf.data.Dataset]) -> tf.data.Dataset:
    """The datasets one after another, concatenated as a balanced tree (a chain of
    hundreds of epochs would be as deep)."""
    if len(datasets) == 1:
        return datasets[0]
    middle = len(datasets) // 2
    return _concatenate(datasets[:middle]).concatenate(_concatenate(datasets[middle:]))


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
        autotune (tf.data autotuning; off by default, see `data.autotune`),
        validation_size (0 = none; otherwise that many training images held
        out as `validation`, see `validation_indices`).
      batch_size: examples per batch; a last partial training batch is
        dropped (test and validation batches keep theirs).
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
    validation, num_validation = None, int(getattr(config, "validation_size", 0) or 0)
    labels = None
    if num_validation:
        labels = _split_labels(name, train, config)
        held_out = validation_indices(labels, num_validation)
        kept = np.setdiff1d(np.arange(len(labels)), held_out)
        validation = _tfds_subset(train, held_out)
        train, labels, num_train = _tfds_subset(train, kept), labels[kept], len(kept)
    if cache:
        train = train.cache()  # before the random ops, so each epoch differs
    if num_train < batch_size:
        raise ValueError(
            f"The training split has {num_train} images, fewer than one batch of "
            f"{batch_size}; a last partial batch is dropped, so no step would run."
        )
    shuffle_buffer = int(getattr(config, "shuffle_buffer", 0))
    per_class = int(getattr(config, "labels_per_class", 0) or 0)
    if per_class < 0:
        raise ValueError(f"labels_per_class must be >= 0, got {per_class}.")
    num_labeled, labeled = num_train, None
    if per_class:
        if labels is None:
            labels = _split_labels(name, train, config)
        indices = _labeled_indices(labels, per_class)
        num_labeled = len(indices)
        if num_labeled < batch_size:
            raise ValueError(
                f"labels_per_class={per_class} gives {num_labeled} labeled images, "
                f"fewer than one batch of {batch_size}."
            )
        labeled = _tfds_subset(train, indices)
        if cache:
            labeled = labeled.cache()
    autotune = bool(getattr(config, "autotune", False))

    def one_epoch(epoch: int, seed_value: int) -> tf.data.Dataset:
        batches = _epoch_batches(
            train,
            num_train,
            batch_size,
            _epoch_seed(seed_value, epoch),
            augment,
            shuffle_buffer,
        )
        if labeled is None:
            return batches
        # The labeled subset is cycled as often as the epoch needs, as in JEM.
        cycle = _epoch_batches(
            labeled,
            num_labeled,
            batch_size,
            _epoch_seed(seed_value, epoch, stream=1),
            augment,
            shuffle_buffer,
            repeat=True,
        )
        return tf.data.Dataset.zip(batches, cycle).map(
            lambda u, batch: ({"images": batch[0], "unlabeled": u[0]}, batch[1])
        )

    def train_epochs(first: int, end: int, seed_value: int = seed) -> tf.data.Dataset:
        if not first < end:
            raise ValueError(f"No epochs in [{first}, {end}).")
        epochs = _concatenate([one_epoch(e, seed_value) for e in range(first, end)])
        return set_autotune(epochs.prefetch(tf.data.AUTOTUNE), autotune)

    eval_data = [
        None
        if ds is None
        else set_autotune(_eval_pipeline(ds, batch_size, cache), autotune)
        for ds in (test, validation)
    ]
    return DataBundle(
        train=train_epochs(0, 1),
        test=eval_data[0],
        num_classes=_num_classes(name, data_dir),
        image_shape=tuple(train.element_spec[0].shape.as_list()),
        num_train=num_train,
        num_test=num_test,
        name=name,
        num_labeled=num_labeled,
        steps_per_epoch=num_train // batch_size,
        train_epochs=train_epochs,
        validation=eval_data[1],
        num_validation=num_validation,
    )
