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

The model under attack can be JEM's test-time defence (JEM Sec. 5.3 and its
attack_model.py), described by a `Refinement`: each image is copied `noisy_copies`
times, each copy gets its own x + copy_noise_std * N(0, I), each noisy copy is refined
by `steps` SGLD steps on log p(x), and the logits of the refined copies are averaged.
The same defended model classifies the clean and the adversarial images, and its
randomness is drawn afresh for every attack step (a new seed per step).

Two gradients through the refinement:

- "bpda" (JEM's): the forward pass runs the refinement, the backward pass treats it
  as the identity (backward-pass differentiable approximation), i.e. the gradient of
  the loss at the refined copies is handed to the noisy copies unchanged. JEM gets this
  by updating the chain in place through `.data`, which autograd does not record.
- "unrolled": differentiates through the unrolled SGLD chain (second derivatives of
  the network, and the chain's sampled noise as constants); the steps are unrolled,
  so keep them few.

Both differentiate through the copies' noise (an additive constant, so the identity)
and average over the copies; with no refinement steps they coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import sampling

NORMS = ("linf", "l2")
GRADIENTS = ("bpda", "unrolled")
_TINY = 1e-12


class Refinement(NamedTuple):
    """JEM's test-time defence: logits averaged over `noisy_copies` copies of each
    image, copy k being x + copy_noise_std * N(0, I) refined by `steps` SGLD steps
    (x <- x + step_size * grad log p(x) + noise_std * N(0, I)) before classifying.

    The defaults are the plain model (one copy, no noise, no steps); JEM's
    attack_model.py defaults are 5 copies at copy_noise_std 0.03 (in [-1, 1] units)
    with SGLD step 1 and noise 0.01, and its published runs use 1 step.
    Python numbers, so a compiled attack traces once per setting, not per batch.
    """

    steps: int = 0
    step_size: float = 1.0
    noise_std: float = 0.01
    noisy_copies: int = 1
    copy_noise_std: float = 0.0


NO_REFINEMENT = Refinement()


def _check_defence(refinement: Refinement, gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(
            f"Unknown PGD gradient {gradient!r}; expected one of {GRADIENTS}."
        )
    if refinement.steps < 0 or refinement.noisy_copies < 1:
        raise ValueError(
            "A refinement needs steps >= 0 and noisy_copies >= 1, got "
            f"{refinement.steps} and {refinement.noisy_copies}."
        )
    if refinement.copy_noise_std < 0:
        raise ValueError(
            f"copy_noise_std must be >= 0, got {refinement.copy_noise_std}."
        )


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
    """Unrolled SGLD (differentiable, including through the gradient step); step i
    draws its noise from fold_in(seed, i)."""
    for i in range(refinement.steps):
        noise = tf.random.stateless_normal(
            tf.shape(images), tf.random.experimental.stateless_fold_in(seed, i)
        )
        images = sampling.sgld_step(
            model, images, refinement.step_size, refinement.noise_std, noise
        )
    return images


def _defended_logits(model, images, refinement: Refinement, gradient: str, seed):
    copies = refinement.noisy_copies
    copy_seed, sgld_seed = tf.unstack(tf.random.split(seed, 2))
    images = tf.cast(images, tf.float32)
    noisy = tf.repeat(images, copies, axis=0) if copies > 1 else images
    if refinement.copy_noise_std > 0:
        noisy = noisy + refinement.copy_noise_std * tf.random.stateless_normal(
            tf.shape(noisy), copy_seed
        )
    if gradient == "bpda" and refinement.steps > 0:
        # Forward: the refined copies; backward: the identity. The chain runs on a
        # stopped input, so an outer tape does not record it (no second derivatives).
        refined = _refine(model, tf.stop_gradient(noisy), refinement, sgld_seed)
        refined = noisy + tf.stop_gradient(refined - noisy)
    else:
        refined = _refine(model, noisy, refinement, sgld_seed)
    logits = tf.cast(model(refined, training=False), tf.float32)
    if copies == 1:
        return logits
    logits = tf.reshape(logits, [tf.shape(images)[0], copies, tf.shape(logits)[-1]])
    return tf.reduce_mean(logits, axis=1)


def defended_logits(
    model: keras.Model,
    images,
    refinement: Refinement = NO_REFINEMENT,
    gradient: str = "bpda",
    seed=0,
) -> tf.Tensor:
    """Logits [N, K] of the defended model, differentiable (under a tape) with the
    chosen `gradient`. images: [N, H, W, C] in [-1, 1].

    Randomness, from the int32 [2] seed pair (an int s means [s, 0]):
    `copy_seed, sgld_seed = tf.random.split(seed, 2)`; the copies' noise is one
    stateless_normal([N * noisy_copies, H, W, C], copy_seed) draw, the copies of image
    n being rows n * noisy_copies ... (n + 1) * noisy_copies - 1; SGLD step i uses
    fold_in(sgld_seed, i).
    """
    _check_defence(refinement, gradient)
    return _defended_logits(
        model, images, refinement, gradient, sampling.seed_pair(seed)
    )


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
    gradient: str,
):
    start_seed, step_seed = tf.unstack(tf.random.split(seed, 2))
    delta = tf.zeros_like(images)
    if random_start:
        delta = _random_start(tf.shape(images), norm, epsilon, start_seed)
    adversarial = tf.clip_by_value(images + delta, -1.0, 1.0)

    def body(i, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = _defended_logits(
                model,
                x,
                refinement,
                gradient,
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
    gradient: str = "bpda",
    seed: int = 0,
) -> tf.Tensor:
    """Adversarial images (float32, same shape) for one batch.

    Args:
      images: [N, H, W, C] in [-1, 1]; labels: [N] int, the true classes.
      norm: "linf" or "l2"; epsilon: radius in [-1, 1] input units.
      step_size: absolute step per iteration; default 2.5 * epsilon / steps.
      refinement: the defended model (noisy copies, SGLD refinement) attacked.
      gradient: "bpda" (JEM's: the refinement is the identity in the backward
        pass) or "unrolled" (differentiate through the SGLD chain).
    """
    _check_defence(refinement, gradient)
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
        gradient,
    )


@tf.function(reduce_retracing=True)
def _predict(model, images, seed, refinement: Refinement):
    logits = _defended_logits(model, images, refinement, "bpda", seed)
    return tf.argmax(logits, -1, tf.int32)


def predict_labels(
    model: keras.Model,
    images,
    refinement: Refinement = NO_REFINEMENT,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """argmax of the defended model's logits per image, batched. [N] int32.
    Each batch runs batch_size * noisy_copies copies through the network."""
    _check_defence(refinement, "bpda")
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
    gradient: str = "bpda",
    batch_size: int = 256,
    seed: int = 0,
    progress: keras.utils.Progbar | None = None,
) -> list[float]:
    """Accuracy under PGD for each epsilon (an image counts as correct only if every
    restart fails). The step size is `relative_step_size * epsilon`. The defended
    model (`refinement`) classifies both the clean and the adversarial images."""
    _check_defence(refinement, gradient)
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
                        gradient,
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
