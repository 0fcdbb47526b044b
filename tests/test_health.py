"""Silent breaks: `health.diagnose` on hand-made epoch logs, and runs broken on
purpose that the guard stops."""

import keras
import numpy as np
import pytest
from conftest import quadrant_data, smoke_config

from hdge_tf import health, training

WEIGHTS = {"ce": 3.0, "px_sgld": 0.1, "energy_l2": 5e-4}  # the demo JEM recipe's


@pytest.mark.parametrize(
    "logs",
    [
        {"accuracy": 0.98, "val_accuracy": 0.97},  # healthy
        {"accuracy": 0.13, "val_accuracy": 0.19},  # epoch 1: nothing learned yet
        {"accuracy": 1.0, "val_accuracy": 0.7},  # few labels: overfit, not broken
        {"accuracy": 0.98},  # no validation split
        # The shipped recipe's energies at epoch 20: data and samples close.
        {"px_data_energy": -5.04, "px_sample_energy": -4.54},
    ],
)
def test_healthy_epochs_are_not_flagged(logs):
    assert health.diagnose(logs, 10, WEIGHTS) is None


def test_validation_near_chance_under_high_training_accuracy_is_flagged():
    # The run: BatchNorm statistics moved by SGLD samples.
    finding = health.diagnose({"accuracy": 0.95, "val_accuracy": 0.14}, 10, WEIGHTS)
    assert "validation accuracy 0.1400 against training accuracy 0.9500" in finding
    assert "chance 0.1000" in finding and "backbone.norm='none'" in finding
    # Half of the way from chance to the training accuracy is the line.
    assert health.diagnose({"accuracy": 0.9, "val_accuracy": 0.49}, 10, {})
    assert health.diagnose({"accuracy": 0.9, "val_accuracy": 0.51}, 10, {}) is None


def test_chains_that_lost_the_data_are_flagged_only_with_the_penalty():
    # Sample and data energies at about ±w / (2λ) = ±100.
    logs = {"px_data_energy": -95.4, "px_sample_energy": 98.5}
    finding = health.diagnose(logs, 10, WEIGHTS)
    assert "px_sgld chains lost the data" in finding and "±100" in finding
    assert "loss.sgld_steps" in finding
    # Half of w / λ = 200 is the line; without λ nothing bounds the energies,
    # and a real divergence is DivergenceGuard's.
    near = {"px_data_energy": -49.0, "px_sample_energy": 49.0}
    assert health.diagnose(near, 10, WEIGHTS) is None
    assert health.diagnose(logs, 10, {**WEIGHTS, "energy_l2": 0.0}) is None


class _BreakRunningStatistics(keras.callbacks.Callback):
    """After `after` epochs, blows up every BatchNorm's running variance after
    each step: training mode (batch statistics) stays as good, inference mode
    sees almost-constant features."""

    def __init__(self, after: int = 1):
        super().__init__()
        self.after, self.epoch = after, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch < self.after:
            return
        for layer in self.model.backbone._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_variance.assign(1e8 * np.ones(layer.moving_variance.shape))


def test_the_guard_stops_fit_after_two_broken_epochs():
    from hdge_tf.model import HDGEClassifier

    images, labels = quadrant_data(192)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(keras.layers.LeakyReLU(0.2)(h))
    model = HDGEClassifier(keras.Model(inputs, keras.layers.Dense(4)(h)), 64)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    guard = health.BrokenRunGuard(4, model.loss_weights)
    history = model.fit(
        images[:128],
        labels[:128],
        validation_data=(images[128:], labels[128:]),
        batch_size=32,
        epochs=20,
        callbacks=[_BreakRunningStatistics(after=3), guard],
        verbose=0,
    ).history
    accuracy, val = history["accuracy"], history["val_accuracy"]
    assert val[2] > 0.7  # learned while healthy
    assert len(accuracy) == 5  # broken from epoch 4 on, stopped at epoch 5
    assert accuracy[-1] > 0.7 and max(val[3:]) < 0.4
    assert guard.broken.startswith("epoch 5: validation accuracy")


@pytest.mark.slow
def test_the_trainer_stops_a_broken_run_without_a_model(tmp_path):
    config = smoke_config(epochs=10)  # stops at the second broken epoch
    config.data.name = "digits"  # 8x8: learned in a few epochs of 30 steps
    config.data.limit_train = 992
    config.backbone.update(norm="batch", filters=(16, 32), dense_units=64)
    config.loss.pxy_contrast_weight = 0.0  # CE alone learns fastest
    config.train.learning_rate = 5e-3
    with pytest.raises(
        health.TrainingBroken, match=r"The model broke in epoch \d+: validation acc"
    ):
        training.train(config, tmp_path, callbacks=[_BreakRunningStatistics(after=1)])
    assert not (tmp_path / "model.keras").exists()
    assert not (tmp_path / "metrics.json").exists()
