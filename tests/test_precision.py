"""Mixed precision: losses stay close to float32 and float16 updates are unscaled."""

import keras
import numpy as np
import pytest
from conftest import tiny_backbone

from hdge_tf.model import HDGEClassifier

TOLERANCE = {"mixed_bfloat16": 0.05, "mixed_float16": 0.01}  # relative, on the loss


@pytest.fixture
def policy():
    previous = keras.mixed_precision.global_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def _model_with(weights, policy_name, set_policy):
    set_policy(policy_name)
    model = HDGEClassifier(tiny_backbone(), queue_size=40, queue_init="data")
    model.backbone.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def _one_step(model, images, labels):
    before = [w.copy() for w in model.backbone.get_weights()]
    loss = model.fit(images, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)
    after = model.backbone.get_weights()
    update = np.sqrt(
        sum(np.sum((a - b) ** 2) for a, b in zip(after, before, strict=True))
    )
    return loss.history["loss"][0], update


@pytest.mark.parametrize("policy_name", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_step_matches_float32(separable_data, policy, policy_name):
    images, labels = separable_data[0][:32], separable_data[1][:32]
    weights = tiny_backbone().get_weights()
    reference = _model_with(weights, "float32", policy)
    ref_loss, ref_update = _one_step(reference, images, labels)

    mixed = _model_with(weights, policy_name, policy)
    assert mixed.backbone.compute_dtype != "float32"
    assert mixed.queue.logits.dtype == "float32"
    loss, update = _one_step(mixed, images, labels)
    np.testing.assert_allclose(loss, ref_loss, rtol=TOLERANCE[policy_name])
    # Without unscaling, float16 updates would be 2**15 times too large or small.
    assert 0.8 < update / ref_update < 1.25
    if policy_name == "mixed_float16":
        assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
