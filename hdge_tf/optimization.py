"""Optimizers and the learning-rate schedule of the HDGE/JEM recipes."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

OPTIMIZERS = ("adam", "sgd")
# "l2": PyTorch's `weight_decay` (coupled: wd * w is added to the gradient before the
# optimizer's update, so Adam rescales it like any gradient). "decoupled": Keras's
# `weight_decay` (w -= lr * wd * w beside the update, AdamW-style).
WEIGHT_DECAY_MODES = ("l2", "decoupled")


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


class CoupledL2Mixin:
    """Adds PyTorch-style coupled L2 weight decay to a Keras optimizer.

    Every variable's gradient becomes g + coupled_weight_decay * w before the
    optimizer's own update rule, as `torch.optim.SGD/Adam(weight_decay=...)` do, on
    all trainable variables (biases and normalization scales included, as torch
    applies it to every parameter it is given).

    It is added in `update_step`, which Keras calls per variable after everything
    that touches the raw gradients: a LossScaleOptimizer's unscaling (it then calls
    this optimizer's `apply`), gradient clipping, and the all-reduce across replicas
    under a tf.distribute strategy (so the term is added once, not once per
    replica). Keras's decoupled `weight_decay` still works beside it.
    """

    def __init__(self, *args, coupled_weight_decay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.coupled_weight_decay = float(coupled_weight_decay)
        if self.coupled_weight_decay < 0:
            raise ValueError(
                f"coupled_weight_decay must be >= 0, got {coupled_weight_decay}."
            )

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay:
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(
                    ops.cast(self.coupled_weight_decay, variable.dtype), variable
                ),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config


class TorchAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam with torch.optim.Adam's placement of epsilon.

    Keras adds `epsilon` to sqrt(v) and folds the bias corrections into the step
    size; torch adds it to sqrt(v̂) = sqrt(v / (1 - β₂^t)):

        θ -= lr / (1 - β₁^t) · m / (sqrt(v) / sqrt(1 - β₂^t) + ε)

    Keras's form acts as torch's with ε / sqrt(1 - β₂^t): ~32x at the first step,
    ~3x after 100, ~1.3x after 1,000. That is not negligible: at the torch-default
    init of a WRN-16-2 on MNIST, 22% of the gradient entries are below 1e-5 and
    3% below 1e-6, whose first updates Keras's form shrinks by 3% and 24%. The
    moments (and so checkpoints) are the same variables as Keras's Adam.
    """

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        bias_1 = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        bias_2 = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(
            v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2)
        )
        if self.amsgrad:  # torch keeps the running maximum of v, as Keras does
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        denominator = ops.add(
            ops.divide(ops.sqrt(v), ops.sqrt(bias_2)),
            ops.cast(self.epsilon, variable.dtype),
        )
        self.assign_sub(
            variable, ops.divide(ops.multiply(m, ops.divide(lr, bias_1)), denominator)
        )


@keras.saving.register_keras_serializable(package="hdge_tf")
class CoupledL2Adam(CoupledL2Mixin, TorchAdam):
    """torch.optim.Adam in Keras: `TorchAdam` (torch's epsilon placement) plus
    `coupled_weight_decay` (see `CoupledL2Mixin`)."""


@keras.saving.register_keras_serializable(package="hdge_tf")
class CoupledL2SGD(CoupledL2Mixin, keras.optimizers.SGD):
    """keras.optimizers.SGD plus `coupled_weight_decay` (see `CoupledL2Mixin`).

    Keras's momentum buffer holds -lr * Σ μ^k g (torch's holds Σ μ^k g and
    multiplies by the current lr); the updates agree while the learning rate is
    constant, and differ for ~1/(1 - μ) steps after it changes.
    """


def build_optimizer(config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """From `config.train`: optimizer, learning_rate, momentum, weight_decay,
    weight_decay_mode, adam_epsilon, warmup_steps, decay_epochs, decay_factor.

    weight_decay_mode "l2" adds weight_decay * w to the gradients (PyTorch's
    coupled `weight_decay`, what the published code uses); "decoupled" is Keras's
    `weight_decay`.
    """
    if config.weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(
            f"Unknown weight_decay_mode {config.weight_decay_mode!r}; expected one "
            f"of {WEIGHT_DECAY_MODES}."
        )
    schedule = WarmupStepDecay(
        config.learning_rate,
        config.warmup_steps,
        [int(e) * steps_per_epoch for e in config.decay_epochs],
        config.decay_factor,
    )
    coupled = decoupled = None
    if config.weight_decay:
        if config.weight_decay_mode == "l2":
            coupled = config.weight_decay
        else:
            decoupled = config.weight_decay
    if config.optimizer == "adam":
        return CoupledL2Adam(
            schedule,
            epsilon=config.adam_epsilon,
            weight_decay=decoupled,
            coupled_weight_decay=coupled or 0.0,
        )
    if config.optimizer == "sgd":
        return CoupledL2SGD(
            schedule,
            momentum=config.momentum,
            nesterov=False,
            weight_decay=decoupled,
            coupled_weight_decay=coupled or 0.0,
        )
    raise ValueError(
        f"Unknown optimizer {config.optimizer!r}; expected one of {OPTIMIZERS}."
    )
