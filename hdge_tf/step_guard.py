"""A training update applied only when the step is healthy on every replica.

A diverged step (non-finite or too large a loss, non-finite gradients) changes no
variable and no optimizer state, on every replica alike, so a run can stop or
restart from its last good checkpoint instead of training on from a broken state.
Under mixed_float16 loss scaling an overflow is told apart from a divergence and
left to Keras's `LossScaleOptimizer`.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf


class StepOutcome(NamedTuple):
    """What became of one training step, each a bool scalar, the same on every
    replica: `applied` (the update was applied), `converged` (False: the step
    diverged) and `overflow` (the mixed_float16 loss scale overflowed)."""

    applied: tf.Tensor
    converged: tf.Tensor
    overflow: tf.Tensor


def scales_loss(optimizer) -> bool:
    """Whether `optimizer` is Keras's mixed_float16 `LossScaleOptimizer`."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def apply_if_healthy(
    optimizer: keras.optimizers.Optimizer,
    grads,
    variables,
    loss: tf.Tensor,
    divergence_threshold: float,
) -> StepOutcome:
    """Applies `grads` to `variables` unless the step is unhealthy on any replica.

    A step diverged when its (unscaled) loss is non-finite or larger in magnitude
    than `divergence_threshold`, or its gradients are non-finite; then nothing is
    applied. Under mixed_float16 loss scaling, non-finite gradients with a converged
    loss are an overflow of the loss scale instead: the `LossScaleOptimizer` sees
    them, lowers the scale and applies nothing else.
    """
    converged, finite_grads = _step_health(loss, grads, divergence_threshold)
    if scales_loss(optimizer):
        # The loss scale optimizer lowers the scale on non-finite gradients
        # (and applies nothing), so an overflow must reach it.
        _apply_if(optimizer, converged, grads, variables)
        overflow = converged & tf.logical_not(finite_grads)
    else:
        _apply_if(optimizer, converged & finite_grads, grads, variables)
        converged, overflow = converged & finite_grads, tf.constant(False)
    return StepOutcome(converged & tf.logical_not(overflow), converged, overflow)


def _step_health(
    loss: tf.Tensor, grads, divergence_threshold: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """(converged, finite gradients), each the same on every replica.

    converged: the (unscaled) loss is finite and |loss| <= divergence_threshold
    on every replica; finite gradients: no replica's gradient is non-finite.
    """
    converged = tf.math.is_finite(loss) & (tf.abs(loss) <= divergence_threshold)
    finite = tf.math.is_finite(tf.linalg.global_norm(grads))
    failed = tf.cast(
        tf.stack([tf.logical_not(converged), tf.logical_not(finite)]), tf.float32
    )
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        failed = replica.all_reduce("sum", failed)
    return tf.equal(failed[0], 0.0), tf.equal(failed[1], 0.0)


def _apply_if(
    optimizer: keras.optimizers.Optimizer, healthy: tf.Tensor, grads, variables
) -> None:
    """Applies `grads` only when `healthy`; a skipped step leaves the variables and
    the optimizer state (moments, iteration count) untouched.

    Distribution strategies cannot run a replica-context `cond` whose branch
    merges across replicas (the optimizer's update does), so the `cond` runs in
    cross-replica context, as Keras's LossScaleOptimizer does it.
    """

    def in_cross_replica(strategy, healthy, grads):
        healthy = strategy.experimental_local_results(healthy)[0]

        def apply():
            strategy.extended.call_for_each_replica(
                optimizer.apply, args=(grads, variables)
            )

        tf.cond(healthy, apply, lambda: None)

    tf.distribute.get_replica_context().merge_call(
        in_cross_replica, args=(healthy, grads)
    )
