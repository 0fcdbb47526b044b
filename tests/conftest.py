"""Shared fixtures: tiny backbones, data and runs so every test runs in seconds."""

# First, as in a user's program: importing hdge_tf before TensorFlow loads
# prefers TF's oneDNN CPU kernels (hdge_tf/cpu_kernels.py), so tests run them too.
import hdge_tf  # noqa: F401

# isort: split
import keras
import numpy as np
import pytest
import tensorflow as tf

from hdge_tf import run_config
from hdge_tf.configs import mnist5k_hdge


def pytest_configure(config):
    # Two logical CPUs, set before TensorFlow initializes its devices, so that tests
    # can run MirroredStrategy replicas; single-device code keeps running on
    # /cpu:0. A hook rather than import-time code: helper processes that import
    # this module (multi_worker_worker.py) keep their one CPU device. Under
    # pytest-xdist each worker is a process of its own and sets them for itself.
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )


def pytest_collection_modifyitems(items):
    """Modules holding a `slow` test first, each module's tests in their order:
    pytest-xdist (`--dist loadfile --no-loadscope-reorder`, setup.cfg) hands out
    whole modules in this order, so the long ones start early and the short ones
    even out the two workers' ends."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


# The smoke run: configs/mnist5k_hdge.py made tiny, in-process (`smoke_config`) and
# on hdge-train's command line (`smoke_flags`).
SMOKE_CONFIG_FILE = "configs/mnist5k_hdge.py"
SMOKE_OVERRIDES = {
    "data.limit_train": 128,
    "data.validation_size": 32,  # 96 training images: 3 steps of 32
    "data.limit_test": 64,
    "backbone.filters": (4, 8),
    "loss.queue_size": 128,
    "train.batch_size": 32,
    "train.warmup_steps": 0,
}


def smoke_config(epochs: int = 1):
    overrides = {**SMOKE_OVERRIDES, "train.epochs": epochs}
    config = run_config.resolve_config(mnist5k_hdge.get_config(), None, overrides)
    # A field the config file leaves to SmallCNN's default (128), so that no
    # --config.* flag can set it: smoke_flags' network keeps the default.
    config.backbone.dense_units = 16
    return config


def smoke_flags(epochs: int = 1) -> list[str]:
    """The smoke run's flags for hdge-train, from the repository root (its network
    has SmallCNN's default dense layer, see `smoke_config`)."""
    overrides = {**SMOKE_OVERRIDES, "train.epochs": epochs}
    return [f"--config={SMOKE_CONFIG_FILE}"] + [
        f"--config.{name}={value}" for name, value in overrides.items()
    ]


def start_hdge_train(workdir, *flags: str, epochs: int = 1):
    """A real `hdge-train` process on the smoke run (stdout dropped, stderr piped),
    for tests of what another process sees: locks, signals, resumes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hdge_tf.bin.hdge_train",
            *smoke_flags(epochs=epochs),
            *flags,
            f"--workdir={workdir}",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
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
