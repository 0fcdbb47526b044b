"""The logit queue and loss under MirroredStrategy with two CPU replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone

from hdge_tf.distribute import CustomLoop
from hdge_tf.model import HDGEClassifier


def _model(strategy, weights=None):
    with strategy.scope():
        model = HDGEClassifier(
            tiny_backbone(), queue_size=24, queue_init="data", px_contrast_weight=0.5
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        if weights is not None:
            model.backbone.set_weights(weights)
    return model


def _replica_values(variable):
    return [v.numpy() for v in variable.value.values]


def test_one_step_matches_a_single_device(separable_data, mirrored):
    images, labels = separable_data
    single = _model(tf.distribute.get_strategy())
    replicated = _model(mirrored, single.backbone.get_weights())
    # Two steps of a global batch of 16 (8 per replica): the second wraps nothing
    # yet, the third (below) wraps around K = 24.
    kwargs = {"batch_size": 16, "epochs": 1, "shuffle": False, "verbose": 0}
    for start in (0, 16, 32):
        batch = (images[start : start + 16], labels[start : start + 16])
        loss_single = single.fit(*batch, **kwargs).history["loss"][0]
        loss_mirrored = replicated.fit(*batch, **kwargs).history["loss"][0]
        np.testing.assert_allclose(loss_mirrored, loss_single, rtol=1e-5, atol=1e-5)

    copies = _replica_values(replicated.queue.logits)
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], single.queue.logits.numpy(), atol=1e-5)
    assert [int(p) for p in _replica_values(replicated.queue.pointer)] == [48 % 24] * 2
    for got, want in zip(
        replicated.backbone.get_weights(), single.backbone.get_weights(), strict=True
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_short_fit_converges_under_the_strategy(separable_data, mirrored):
    images, labels = separable_data
    model = _model(mirrored)
    before = model.evaluate(images, labels, verbose=0, return_dict=True)
    model.fit(images, labels, batch_size=16, epochs=3, verbose=0)
    result = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert before["accuracy"] < 0.5 and result["accuracy"] > 0.8
    copies = _replica_values(model.queue.logits)
    np.testing.assert_array_equal(copies[0], copies[1])


@pytest.mark.slow
def test_custom_loop_matches_keras_fit(separable_data, mirrored):
    """The loop used for multi-worker runs computes what `fit` computes."""
    images, labels = separable_data
    with_fit = _model(mirrored)
    with_loop = _model(mirrored, with_fit.backbone.get_weights())
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    history = with_fit.fit(dataset, epochs=2, verbose=0)
    loop_history = CustomLoop(with_loop, mirrored).fit(dataset, epochs=2, verbose=0)
    for name in ("loss", "ce", "pxy_contrast", "accuracy"):
        np.testing.assert_allclose(
            loop_history.history[name], history.history[name], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(
        with_loop.queue.logits.numpy(), with_fit.queue.logits.numpy(), atol=1e-5
    )
    assert int(with_loop.optimizer.iterations.numpy()) == 2 * 6
