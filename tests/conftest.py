"""Shared fixtures: tiny backbones and data so every test runs in seconds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

# Two logical CPUs, set before TensorFlow initializes its devices, so that tests can
# run MirroredStrategy replicas; single-device code keeps running on /cpu:0.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)


def tiny_backbone(num_classes: int = 4, image_shape=(8, 8, 1), seed: int = 0):
    """A conv + dense classifier small enough for many fit steps per second."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(image_shape)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes)(h)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def mirrored():
    """One two-replica MirroredStrategy for the whole session: separate strategies
    over the same devices reuse collective instance keys, and TF then mixes up
    their collectives (seen as "Collective instance N expected type ...")."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def quadrant_data(n: int = 96, seed: int = 0):
    """8x8 images whose class is the brighter quadrant: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.int32)
    images = rng.uniform(-0.3, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for i, y in enumerate(labels):
        images[i, (y // 2) * 4 : (y // 2) * 4 + 4, (y % 2) * 4 : (y % 2) * 4 + 4] += 0.7
    return images, labels


@pytest.fixture
def separable_data():
    return quadrant_data()
