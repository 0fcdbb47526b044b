"""The run state a checkpoint holds beside the model: it comes back on restore,
dropout's seed generator included (without it a resumed run drops other units)."""

import keras
import numpy as np
import tensorflow as tf

from hdge_tf.run_state import RunState


def _model_with_dropout() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dropout(0.5, seed=1)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_checkpoint_restores_the_state_and_dropout_seeds(tmp_path):
    model = _model_with_dropout()
    state = RunState()
    state.epoch.assign(3)
    state.restarts.assign(1)
    state.best_value.assign(0.75)
    state.best_epoch.assign(2)
    [seed] = [
        v
        for v in model.non_trainable_variables
        if v.path.endswith("seed_generator_state")
    ]
    saved_seed = np.array(seed.value)
    path = state.checkpoint(model).save(str(tmp_path / "ckpt"))

    seed.assign(saved_seed + 7)
    fresh = RunState()
    fresh.checkpoint(model).restore(path).assert_existing_objects_matched()
    assert int(fresh.epoch.numpy()) == 3 and int(fresh.restarts.numpy()) == 1
    assert float(fresh.best_value.numpy()) == 0.75
    assert int(fresh.best_epoch.numpy()) == 2
    np.testing.assert_array_equal(seed.numpy(), saved_seed)
    assert fresh.best_value.dtype == tf.float64  # validation accuracy, unrounded
