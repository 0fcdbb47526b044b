"""BatchNorm's running statistics around the SGLD terms' network passes.

JEM's samples pass through the network in training mode, so their batches move
BatchNorm's running statistics, and the network then predicts with statistics of
noise (JEM's `--norm batch` does not train). `SGLDSettings.pass_mode` picks how
the samples are scored instead; the modes that keep the running statistics the
data's need to read and restore them inside a traced training step, or to
normalize samples with the data batch's statistics, which is what these helpers
do. Reads and assigns run in program order (automatic control dependencies of
`tf.function`).
"""

from __future__ import annotations

import contextlib
import functools

import keras
import tensorflow as tf


def batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested ones included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def read(layers) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """The (moving mean, moving variance) of each layer, as tensors now."""
    return [
        (tf.identity(layer.moving_mean.value), tf.identity(layer.moving_variance.value))
        for layer in layers
    ]


def restore(layers, saved) -> None:
    """Sets each layer's running statistics back to `read`'s values."""
    for layer, (mean, variance) in zip(layers, saved, strict=True):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


@contextlib.contextmanager
def statistics_of_first_rows(layers, rows):
    """Within: a training-mode pass normalizes its whole batch with the
    statistics of its first `rows` rows, and only those move the running
    statistics, e.g. data and samples in one pass where the data's statistics
    normalize both (gradients flow through them for both). Keras's
    BatchNormalization takes its batch statistics from its `_moments` method;
    each layer gets one that reads the first rows, and its own back on exit."""
    for layer in layers:
        own = layer._moments
        layer._moments = functools.partial(_first_rows_moments, own, rows)
    try:
        yield
    finally:
        for layer in layers:
            del layer._moments  # the class's method again


def _first_rows_moments(moments, rows, inputs, mask):
    return moments(inputs[:rows], None if mask is None else mask[:rows])
