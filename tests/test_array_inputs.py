"""fit, evaluate and predict on arrays through a pipeline without tf.data
autotuning (hdge_tf/array_inputs.py): the batches Keras's arrays give, and the
calls it leaves to Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import quadrant_data, tiny_backbone

from hdge_tf import array_inputs
from hdge_tf.model import HDGEClassifier


def _passes(ds, n=2):
    return [[b.numpy() for b, _ in ds] for _ in range(n)]


def test_every_example_once_per_pass_reshuffled_last_batch_partial():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.int32)
    ds = array_inputs.as_dataset(x, y, batch_size=4, shuffle=True)
    assert ds.options().autotune.enabled is False
    first, second = _passes(ds)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate(first)[:, 0]) == list(range(10))
    assert sorted(np.concatenate(second)[:, 0]) == list(range(10))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    for images, labels in ds:  # pairs stay pairs
        np.testing.assert_array_equal(images.numpy()[:, 0], labels.numpy())


def test_without_shuffle_the_order_is_kept_and_the_batch_defaults_to_keras():
    x = np.arange(40, dtype=np.float32)
    ds = array_inputs.as_dataset(x)
    batches = [b.numpy() for b in ds]
    assert [len(b) for b in batches] == [32, 8]
    np.testing.assert_array_equal(np.concatenate(batches), x)


def _model():
    model = HDGEClassifier(tiny_backbone(), queue_size=40)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    return model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_weight": np.ones(96)},
        {"class_weight": {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}},
        {"validation_split": 0.25},
        {"steps_per_epoch": 2},
        {"shuffle": "batch"},
        {"validation_data": (np.zeros((4, 8, 8, 1)), np.zeros(4), np.ones(4))},
    ],
    ids=lambda k: next(iter(k)),
)
def test_calls_it_does_not_cover_go_to_keras(kwargs):
    images, labels = quadrant_data()
    assert array_inputs.fit_arguments(_model(), (images, labels), kwargs) is None


def test_fit_arguments_become_datasets_and_the_rest_is_kept():
    images, labels = quadrant_data()
    callback = keras.callbacks.History()
    arguments = array_inputs.fit_arguments(
        _model(),
        (images, labels, 16),
        {"epochs": 3, "callbacks": [callback], "validation_data": (images, labels)},
    )
    assert "y" not in arguments and "batch_size" not in arguments
    assert arguments["shuffle"] is False  # the dataset reshuffles itself
    assert (arguments["epochs"], arguments["callbacks"]) == (3, [callback])
    for name in ("x", "validation_data"):
        ds = arguments[name]
        assert isinstance(ds, tf.data.Dataset) and not ds.options().autotune.enabled
        assert [len(x) for x, _ in ds] == [16] * 6
    assert array_inputs.fit_arguments(_model(), ({"image": images}, labels), {}) is None


def test_the_model_trains_evaluates_and_predicts_arrays_as_keras_does():
    """The same fit on arrays and on the same batches by hand, unshuffled, ends
    with the same weights; evaluate and predict on arrays match the model's
    own call."""
    images, labels = quadrant_data()
    ours, by_hand = _model(), _model()
    ours.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    by_hand.fit(batches, epochs=2, verbose=0)
    for a, b in zip(ours.weights, by_hand.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)
    logits = ours(images).numpy()
    np.testing.assert_allclose(ours.predict(images, verbose=0), logits, atol=1e-5)
    result = ours.evaluate(images, labels, batch_size=7, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels))
