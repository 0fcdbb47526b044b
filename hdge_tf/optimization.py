"""Optimizers and the learning-rate schedule of the HDGE/JEM recipes."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

OPTIMIZERS = ("adam", "sgd")


@keras.saving.register_keras_serializable(package="hdge_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `learning_rate`, then ×`decay_factor` at each boundary step.

    The published recipe: warm up over 1,000 iterations, ×0.3 at epochs 160 and 180.
    """

    def __init__(
        self,
        learning_rate: float,
        warmup_steps: int = 0,
        boundaries: Sequence[int] = (),
        decay_factor: float = 0.3,
    ):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.boundaries = [int(b) for b in boundaries]
        self.decay_factor = float(decay_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.learning_rate, "float32")
        if self.warmup_steps:
            rate = rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        for boundary in self.boundaries:
            rate = ops.where(step >= boundary, rate * self.decay_factor, rate)
        return rate

    def get_config(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "boundaries": self.boundaries,
            "decay_factor": self.decay_factor,
        }


def build_optimizer(config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """From `config.train`: optimizer, learning_rate, momentum, weight_decay,
    warmup_steps, decay_epochs, decay_factor. Weight decay is Keras's decoupled form."""
    schedule = WarmupStepDecay(
        config.learning_rate,
        config.warmup_steps,
        [int(e) * steps_per_epoch for e in config.decay_epochs],
        config.decay_factor,
    )
    weight_decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            schedule,
            momentum=config.momentum,
            nesterov=False,
            weight_decay=weight_decay,
        )
    raise ValueError(
        f"Unknown optimizer {config.optimizer!r}; expected one of {OPTIMIZERS}."
    )
