"""The learning-rate schedule and optimizer factory of the training recipes."""

import keras
import ml_collections
import numpy as np
import pytest

from hdge_tf.optimization import WarmupStepDecay, build_optimizer


def test_warmup_then_step_decay():
    schedule = WarmupStepDecay(
        1e-3, warmup_steps=10, boundaries=[50, 80], decay_factor=0.3
    )
    rates = [float(schedule(step)) for step in (0, 4, 9, 10, 49, 50, 79, 80, 1000)]
    expected = [1e-4, 5e-4, 1e-3, 1e-3, 1e-3, 3e-4, 3e-4, 9e-5, 9e-5]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    restored = WarmupStepDecay.from_config(schedule.get_config())
    assert float(restored(55)) == pytest.approx(3e-4)


def _train_config(**overrides):
    config = ml_collections.ConfigDict(
        {
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "warmup_steps": 0,
            "decay_epochs": (160, 180),
            "decay_factor": 0.3,
        }
    )
    config.update(overrides)
    return config


def test_build_optimizer_converts_epochs_to_steps():
    optimizer = build_optimizer(_train_config(), steps_per_epoch=100)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == 0.9 and optimizer.weight_decay == pytest.approx(5e-4)
    assert optimizer._learning_rate.boundaries == [16000, 18000]
    adam = build_optimizer(_train_config(optimizer="adam", weight_decay=0.0), 10)
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay is None
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        build_optimizer(_train_config(optimizer="rmsprop"), 10)
