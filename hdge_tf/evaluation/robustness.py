"""Adversarial robustness: PGD under L∞ and L2, optionally against JEM's SGLD defence.

Units: images live in [-1, 1], and epsilons and step sizes are in those units, so an
L∞ epsilon of 8/255 on the usual [0, 1] scale is 16/255 here; L2 epsilons are norms of
the whole [-1, 1] perturbation (also 2x their [0, 1] value).

PGD (Madry et al. 2018) maximizes the cross-entropy of the true label within the
epsilon ball around each image and inside the valid range [-1, 1], starting from a
random point of the ball; each step moves by `step_size` (absolute) along the sign of
the gradient (L∞) or the normalized gradient (L2), then projects back onto the ball
and clips to [-1, 1]. Clipping after projecting stays inside the ball: the original
image is inside the box, so clipping only shrinks each coordinate of the
perturbation.

With `sgld_steps` > 0 the model classifies refine(x) instead of x, where refine runs
a few SGLD steps on log p(x) (JEM Sec. 5.3). The attack differentiates through the
refinement (as JEM does), including its sampled noise; the steps are unrolled, so
keep them few.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import sampling

NORMS = ("linf", "l2")
_TINY = 1e-12


class Refinement(NamedTuple):
    """JEM's test-time defence: `steps` SGLD steps on the input before classifying.

    Python numbers, so a compiled attack traces once per refinement setting.
    """

    steps: int = 0
    step_size: float = 1.0
    noise_std: float = 0.01


NO_REFINEMENT = Refinement()


def _per_example_norm(x: tf.Tensor) -> tf.Tensor:
    """L2 norm of each example, shaped [N, 1, 1, 1] to broadcast against x."""
    flat = tf.reshape(x, [tf.shape(x)[0], -1])
    norm = tf.norm(flat, axis=-1)
    return tf.reshape(norm, [-1] + [1] * (x.shape.rank - 1))


def project(delta: tf.Tensor, norm: str, epsilon) -> tf.Tensor:
    """Projects perturbations onto the `norm` ball of radius `epsilon`."""
    if norm == "linf":
        return tf.clip_by_value(delta, -epsilon, epsilon)
    length = _per_example_norm(delta)
    return delta * tf.minimum(1.0, epsilon / (length + _TINY))


def _ascent_direction(grad: tf.Tensor, norm: str) -> tf.Tensor:
    if norm == "linf":
        return tf.sign(grad)
    return grad / (_per_example_norm(grad) + _TINY)


def _random_start(shape, norm: str, epsilon, seed) -> tf.Tensor:
    """Uniform in the L∞ cube; for L2 a uniform direction at a uniform radius."""
    if norm == "linf":
        return tf.random.stateless_uniform(shape, seed, -epsilon, epsilon)
    direction_seed, radius_seed = tf.unstack(tf.random.split(seed, 2))
    direction = tf.random.stateless_normal(shape, direction_seed)
    radius = tf.random.stateless_uniform([shape[0], 1, 1, 1], radius_seed)
    return direction / (_per_example_norm(direction) + _TINY) * epsilon * radius


def _refine(model, images, refinement: Refinement, seed) -> tf.Tensor:
    """Unrolled SGLD (differentiable, including through the gradient step)."""
    for i in range(refinement.steps):
        noise = tf.random.stateless_normal(
            tf.shape(images), tf.random.experimental.stateless_fold_in(seed, i)
        )
        images = sampling.sgld_step(
            model, images, refinement.step_size, refinement.noise_std, noise
        )
    return images


def _classify(model, images, refinement: Refinement, seed) -> tf.Tensor:
    logits = model(_refine(model, images, refinement, seed), training=False)
    return tf.cast(logits, tf.float32)


@tf.function(reduce_retracing=True)
def _pgd(
    model,
    images,
    labels,
    epsilon,
    step_size,
    steps,
    seed,
    norm: str,
    random_start: bool,
    refinement: Refinement,
):
    start_seed, step_seed = tf.unstack(tf.random.split(seed, 2))
    delta = tf.zeros_like(images)
    if random_start:
        delta = _random_start(tf.shape(images), norm, epsilon, start_seed)
    adversarial = tf.clip_by_value(images + delta, -1.0, 1.0)

    def body(i, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = _classify(
                model,
                x,
                refinement,
                tf.random.experimental.stateless_fold_in(step_seed, i),
            )
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            )
        grad = tape.gradient(loss, x)
        x = x + step_size * _ascent_direction(grad, norm)
        x = images + project(x - images, norm, epsilon)
        return i + 1, tf.clip_by_value(x, -1.0, 1.0)

    _, adversarial = tf.while_loop(
        lambda i, _: i < steps, body, (tf.constant(0, tf.int32), adversarial)
    )
    return tf.stop_gradient(adversarial)


def pgd_attack(
    model: keras.Model,
    images,
    labels,
    norm: str,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    refinement: Refinement = NO_REFINEMENT,
    seed: int = 0,
) -> tf.Tensor:
    """Adversarial images (float32, same shape) for one batch.

    Args:
      images: [N, H, W, C] in [-1, 1]; labels: [N] int, the true classes.
      norm: "linf" or "l2"; epsilon: radius in [-1, 1] input units.
      step_size: absolute step per iteration; default 2.5 * epsilon / steps.
      refinement: the SGLD defence the attack differentiates through.
    """
    if norm not in NORMS:
        raise ValueError(f"Unknown PGD norm {norm!r}; expected one of {NORMS}.")
    if epsilon < 0 or steps < 0:
        raise ValueError(
            f"PGD needs epsilon >= 0 and steps >= 0, got {epsilon}, {steps}."
        )
    if step_size is None:
        step_size = 2.5 * epsilon / max(steps, 1)
    return _pgd(
        model,
        tf.convert_to_tensor(images, tf.float32),
        tf.convert_to_tensor(labels, tf.int32),
        tf.constant(epsilon, tf.float32),
        tf.constant(step_size, tf.float32),
        tf.constant(steps, tf.int32),
        tf.constant([seed, 1], tf.int32),
        norm,
        bool(random_start),
        refinement,
    )


@tf.function(reduce_retracing=True)
def _predict(model, images, seed, refinement: Refinement):
    return tf.argmax(_classify(model, images, refinement, seed), -1, tf.int32)


def predict_labels(
    model: keras.Model,
    images,
    refinement: Refinement = NO_REFINEMENT,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """argmax_y f(refine(x))[y] per image, batched. [N] int32."""
    images = np.asarray(images, np.float32)
    seed_pair = tf.constant([seed, 2], tf.int32)
    return np.concatenate(
        [
            _predict(
                model, tf.constant(images[i : i + batch_size]), seed_pair, refinement
            )
            for i in range(0, len(images), batch_size)
        ]
        or [np.zeros((0,), np.int32)]
    )


def robust_accuracy(
    model: keras.Model,
    images,
    labels,
    norm: str,
    epsilons: Sequence[float],
    steps: int = 10,
    relative_step_size: float = 0.25,
    random_start: bool = True,
    restarts: int = 1,
    refinement: Refinement = NO_REFINEMENT,
    batch_size: int = 256,
    seed: int = 0,
    progress: keras.utils.Progbar | None = None,
) -> list[float]:
    """Accuracy under PGD for each epsilon (an image counts as correct only if every
    restart fails). The step size is `relative_step_size * epsilon`."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    accuracies = []
    for epsilon in epsilons:
        correct = np.ones(len(labels), bool)
        for restart in range(max(restarts, 1) if random_start else 1):
            for start in range(0, len(labels), batch_size):
                batch = slice(start, start + batch_size)
                adversarial = images[batch]
                if epsilon > 0 and steps > 0:
                    adversarial = pgd_attack(
                        model,
                        images[batch],
                        labels[batch],
                        norm,
                        float(epsilon),
                        steps,
                        relative_step_size * float(epsilon),
                        random_start,
                        refinement,
                        seed=seed + 1000 * restart + start,
                    ).numpy()
                predicted = predict_labels(
                    model, adversarial, refinement, seed + restart, batch_size
                )
                correct[batch] &= predicted == labels[batch]
        accuracies.append(float(correct.mean()))
        if progress is not None:
            progress.add(1)
    return accuracies
