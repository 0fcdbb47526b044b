"""BatchNorm's running statistics around the SGLD terms' network passes.

JEM's samples pass through the network in training mode, so their batches move
BatchNorm's running statistics, and the network then predicts with statistics of
noise (JEM's `--norm batch` does not train). `SGLDSettings.pass_mode` picks how
the samples are scored instead; the two modes that keep the running statistics
the data's need to read, set and restore them inside a traced training step,
which is what these helpers do. Reads and assigns run in program order
(automatic control dependencies of `tf.function`).
"""

from __future__ import annotations

import contextlib

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
def data_batch_statistics(layers):
    """Within: the one training-mode pass (the data batch's) leaves its batch's
    statistics as the running ones (momentum 0), so inference-mode passes after
    it (the samples') normalize with exactly the data batch's statistics. On
    exit the running statistics become what that pass would have made of them
    with each layer's own momentum."""
    before = read(layers)
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        batch = read(layers)
        restore(
            layers,
            [
                (m * mean0 + (1 - m) * mean, m * var0 + (1 - m) * var)
                for m, (mean0, var0), (mean, var) in zip(
                    momenta, before, batch, strict=True
                )
            ],
        )
