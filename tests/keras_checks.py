"""Reusable contract checks for the Keras models and layers of hdge_tf.

Import from a test module as `from keras_checks import run_backbone_checks`
(pytest puts `tests/` on `sys.path` because it is not a package).

    run_backbone_checks  a backbone: output, training, config, `.keras` round trip
    run_layer_checks     a stateful layer (LogitQueue, ReplayBuffer): config, its
                         state in `.keras`, state dtypes under every precision policy
The pieces (`check_config_round_trip`, `check_save_load`, `check_precision`, ...)
serve models such as HDGEClassifier that train with their own loss.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence

import keras
import numpy as np

from hdge_tf.hardware import precision_policy

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


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


def _as_json(config: dict) -> dict:
    """`config` as a `.keras` file stores it (tuples become lists)."""
    return json.loads(json.dumps(config))


def check_layer_config(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The config survives JSON and rebuilds an equal config, and the registered
    name alone (no custom_objects) deserializes the layer. Returns the clone."""
    config = layer.get_config()
    json.dumps(config)
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(layer)
    assert again.get_config() == config
    return clone


def assert_same_weights(got: keras.layers.Layer, want: keras.layers.Layer) -> None:
    """Every weight, trainable or not (state, statistics), equal in order. Seed
    generator states are variables but no weights: `.keras` files do not keep them
    (training checkpoints do)."""
    assert len(got.weights) == len(want.weights)
    for restored, saved in zip(got.weights, want.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored),
            keras.ops.convert_to_numpy(saved),
            err_msg=saved.path,
        )


def check_state_saved(
    layer: keras.layers.Layer, tmp_path: pathlib.Path
) -> keras.layers.Layer:
    """A `.keras` file of `layer` (or model) loads with every weight as it was
    saved. Returns the loaded layer."""
    path = tmp_path / f"{layer.name}.keras"
    keras.saving.save_model(layer, path)
    # No custom_objects: registration alone must be enough to deserialize.
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(layer)
    assert _as_json(loaded.get_config()) == _as_json(layer.get_config())
    assert_same_weights(loaded, layer)
    return loaded


def check_precision(
    make: Callable[[], keras.layers.Layer],
    policies: Sequence[str] = MIXED_POLICIES,
    x: np.ndarray | None = None,
) -> None:
    """Under each dtype policy, `make()`'s non-trainable state keeps the dtypes it
    has under float32 (state never follows a compute dtype), and with inputs `x`
    its call returns float32."""
    with precision_policy("float32"):
        expected = [(v.name, v.dtype) for v in make().non_trainable_weights]
    for policy in policies:
        with precision_policy(policy):
            layer = make()
            state = [(v.name, v.dtype) for v in layer.non_trainable_weights]
            assert state == expected, policy
            if x is not None:
                out = layer(x, training=False)
                assert keras.backend.standardize_dtype(out.dtype) == "float32", policy
                assert np.all(np.isfinite(keras.ops.convert_to_numpy(out))), policy


def check_save_load(model: keras.Model, x: np.ndarray, tmp_path: pathlib.Path) -> None:
    """`check_state_saved`, and the loaded model computes the same outputs and
    carries the optimizer state."""
    loaded = check_state_saved(model, tmp_path)
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


def _gradient_reaches(model: keras.Model, x: np.ndarray, y: np.ndarray) -> list[bool]:
    """Per trainable variable: whether the loss has a gradient for it that is not
    exactly zero. A conv bias right before an instance (or batch) norm has a true
    gradient of zero, only float noise (~1e-9); from PyTorch's non-zero bias init
    one SGD step of that size rounds away in float32, so the variable may stay put
    although it is connected."""
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return [
        g is not None and bool(np.any(keras.ops.convert_to_numpy(g))) for g in grads
    ]


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
    reaches = _gradient_reaches(model, x, y)
    first = model.fit(x, y, batch_size=x.shape[0], epochs=1, shuffle=False, verbose=0)
    unchanged = [
        v.path
        for v, old, reached in zip(
            model.trainable_variables, before, reaches, strict=True
        )
        if np.array_equal(keras.ops.convert_to_numpy(v), old) and not reached
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


def run_layer_checks(
    make: Callable[[], keras.layers.Layer],
    tmp_path: pathlib.Path,
    update: Callable[[keras.layers.Layer], None] | None = None,
    policies: Sequence[str] = (*MIXED_POLICIES, "bfloat16"),
) -> keras.layers.Layer:
    """Runs the layer checks on `make()`; returns it.

    `update(layer)` moves its state away from the initial values first, so a save
    that dropped the state (or reinitialized it on load) is caught. `policies`
    include the plain "bfloat16" policy, under which a layer that did not pin its
    state's dtype would store it in bfloat16.
    """
    check_precision(make, policies)
    layer = make()
    initial = [keras.ops.convert_to_numpy(v).copy() for v in layer.weights]
    if update is not None:
        update(layer)
        changed = [
            not np.array_equal(keras.ops.convert_to_numpy(v), old)
            for v, old in zip(layer.weights, initial, strict=True)
        ]
        assert any(changed), "update() left the state as it was"
    check_layer_config(layer)
    check_state_saved(layer, tmp_path)
    return layer
