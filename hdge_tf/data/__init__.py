"""Datasets for HDGE: embedded offline sets and TFDS, in one image format."""

from hdge_tf.data.embedded import Split, load_digits, load_mnist5k
from hdge_tf.data.pipeline import (
    DataBundle,
    build_datasets,
    load_arrays,
    load_training_arrays,
    load_validation_arrays,
)
from hdge_tf.data.tfds_source import DatasetUnavailableError

__all__ = [
    "DataBundle",
    "DatasetUnavailableError",
    "Split",
    "build_datasets",
    "load_arrays",
    "load_digits",
    "load_mnist5k",
    "load_training_arrays",
    "load_validation_arrays",
]
