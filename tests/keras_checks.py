"""Reusable contract checks for Keras models built by hdge_tf.

Import from a test module as `from keras_checks import run_backbone_checks`
(pytest puts `tests/` on `sys.path` because it is not a package).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence

import keras
import numpy as np


def random_images(
    batch_size: int, input_shape: Sequence[int], seed: int = 0
) -> np.ndarray:
    """Inputs in [-1, 1], the range the HDGE data pipeline produces."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(batch_size, *input_shape)).astype("float32")


def check_output(model: keras.Model, x: np.ndarray, num_classes: int) -> np.ndarray:
    logits = model(x, training=False)
    assert tuple(logits.shape) == (x.shape[0], num_classes)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = keras.ops.convert_to_numpy(logits)
    assert np.all(np.isfinite(logits))
    return logits


def check_config_round_trip(model: keras.Model, x: np.ndarray) -> None:
    config = model.get_config()
    json.dumps(config)  # Must survive the .keras file's JSON.
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )


def check_save_load(model: keras.Model, x: np.ndarray, tmp_path: pathlib.Path) -> None:
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    # No custom_objects: registration alone must be enough to deserialize.
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )
    if model.optimizer is not None and model.optimizer.built:
        assert loaded.optimizer is not None
        for saved, restored in zip(
            model.optimizer.variables, loaded.optimizer.variables, strict=True
        ):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(restored),
                keras.ops.convert_to_numpy(saved),
            )


def check_trains(
    model: keras.Model,
    x: np.ndarray,
    num_classes: int,
    steps: int = 8,
    learning_rate: float = 0.1,
) -> None:
    """One step moves every trainable weight; a few steps fit a fixed batch.

    Plain SGD on purpose: with Adam the first (tracing) `fit` call of a small
    WRN takes ~6 s instead of ~1 s on CPU, and SGD moves every weight that gets
    a gradient, which is exactly what the first check needs.
    """
    rng = np.random.default_rng(1)
    y = rng.integers(0, num_classes, size=x.shape[0])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    first = model.fit(x, y, batch_size=x.shape[0], epochs=1, shuffle=False, verbose=0)
    unchanged = [
        v.path
        for v, old in zip(model.trainable_variables, before, strict=True)
        if np.array_equal(keras.ops.convert_to_numpy(v), old)
    ]
    assert not unchanged, f"Variables not updated by one fit step: {unchanged}"

    rest = model.fit(
        x, y, batch_size=x.shape[0], epochs=steps, shuffle=False, verbose=0
    )
    initial_loss = first.history["loss"][0]
    final_loss = rest.history["loss"][-1]
    assert np.isfinite(final_loss)
    assert final_loss < initial_loss, (initial_loss, final_loss)


def run_backbone_checks(
    model_fn: Callable[[], keras.Model],
    input_shape: Sequence[int],
    num_classes: int,
    tmp_path: pathlib.Path,
    batch_size: int = 8,
    seed: int = 0,
) -> keras.Model:
    """Runs every check above on a fresh `model_fn()`; returns the trained model.

    Serialization is checked after training so non-trainable state (e.g. batch
    norm moving statistics) and the optimizer state differ from their initial
    values and a round trip that drops them would be caught.
    """
    keras.utils.set_random_seed(seed)
    model = model_fn()
    x = random_images(batch_size, input_shape, seed)
    check_output(model, x, num_classes)
    check_trains(model, x, num_classes)
    check_config_round_trip(model, x)
    check_save_load(model, x, tmp_path)
    return model
