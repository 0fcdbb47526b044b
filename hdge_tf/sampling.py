"""Stochastic gradient Langevin dynamics (SGLD) on the classifier's energy.

JEM reads the logits f(x) as energies: log p(x) = logsumexp_y f(x)[y] - log Z and
log p(x, y) = f(x)[y] - log Z, i.e. the energy is E(x) = -logsumexp_y f(x)[y]. SGLD
climbs the unnormalized log density (descends the energy):

    x <- x + step_size * ∇x log p(x) + noise_std * N(0, I)

with JEM's defaults step_size = 1, noise_std = 0.01 (not the textbook step²/2 pairing).

`sgld_chain` is one compiled function with every number a tensor, so chains of any
length, step size or batch size reuse its trace; a replay-buffer sampler can call it on
the buffer's rows. The network runs in inference mode and the chain, the gradient and
the logsumexp stay in float32 even under a mixed-precision policy (bfloat16 would
round a 0.01 step on a pixel of 1.0 away).
"""

from __future__ import annotations

import keras
import tensorflow as tf

_SEED_MAX = 2**31 - 1


def log_density(model: keras.Model, images: tf.Tensor, labels=None) -> tf.Tensor:
    """Unnormalized log p(x) = logsumexp_y f(x)[y] = -E(x), or log p(x, y) = f(x)[y]
    when `labels` ([N] int) are given. images: [N, H, W, C]. Returns [N] float32."""
    logits = tf.cast(model(images, training=False), tf.float32)
    if labels is None:
        return tf.reduce_logsumexp(logits, axis=-1)
    labels = tf.cast(labels, tf.int32)
    return tf.gather(logits, labels[:, tf.newaxis], batch_dims=1)[:, 0]


def log_density_gradient(
    model: keras.Model, images: tf.Tensor, labels=None
) -> tuple[tf.Tensor, tf.Tensor]:
    """(log density [N], its gradient with respect to the images [N, H, W, C]).

    The gradient of the batch sum is each example's own gradient: in inference mode
    no layer mixes examples. Called under an outer tape, the outer tape records this
    gradient too, so it can be differentiated again (e.g. by an attack).
    """
    images = tf.cast(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        density = log_density(model, images, labels)
    return density, tape.gradient(density, images)


def sgld_step(
    model: keras.Model,
    images: tf.Tensor,
    step_size,
    noise_std,
    noise: tf.Tensor,
    labels=None,
) -> tf.Tensor:
    """One Langevin step, given standard-normal `noise` of the images' shape."""
    _, grad = log_density_gradient(model, images, labels)
    return images + step_size * grad + noise_std * noise


@tf.function(reduce_retracing=True)
def sgld_chain(
    model: keras.Model,
    images: tf.Tensor,
    steps: tf.Tensor,
    step_size: tf.Tensor,
    noise_std: tf.Tensor,
    seed: tf.Tensor,
    labels: tf.Tensor | None = None,
) -> tf.Tensor:
    """`steps` SGLD steps from `images` (float32 [N, H, W, C]); returns the last state.

    All numbers are tensors (steps int32, step_size/noise_std float32, seed int32 [2]
    for the stateless noise, step i using fold_in(seed, i)), so a new chain length
    or step size does not retrace. Traces once per model, per labels/no labels, and
    (relaxed) per image shape.
    """

    def body(i, x):
        noise = tf.random.stateless_normal(
            tf.shape(x), seed=tf.random.experimental.stateless_fold_in(seed, i)
        )
        return i + 1, sgld_step(model, x, step_size, noise_std, noise, labels)

    _, images = tf.while_loop(
        lambda i, _: i < steps, body, (tf.constant(0, tf.int32), images)
    )
    return images


def sgld(
    model: keras.Model,
    images,
    steps: int,
    step_size: float = 1.0,
    noise_std: float = 0.01,
    labels=None,
    seed: int | None = None,
) -> tf.Tensor:
    """Runs an SGLD chain from `images` ([N, H, W, C] in [-1, 1]); returns float32
    samples of the same shape. With `labels` ([N] int) the chain samples p(x|y) ∝
    exp f(x)[y]; without, p(x) ∝ Σ_y exp f(x)[y]. Samples are not clipped.

    `seed` fixes the noise; None draws one from TF's global generator (seeded by
    `keras.utils.set_random_seed`).
    """
    if steps < 0:
        raise ValueError(f"SGLD steps must be >= 0, got {steps}.")
    if seed is None:
        seed_pair = tf.random.uniform([2], 0, _SEED_MAX, dtype=tf.int32)
    else:
        seed_pair = tf.constant([seed, 0], tf.int32)
    return sgld_chain(
        model,
        tf.convert_to_tensor(images, tf.float32),
        tf.constant(steps, tf.int32),
        tf.constant(step_size, tf.float32),
        tf.constant(noise_std, tf.float32),
        seed_pair,
        None if labels is None else tf.convert_to_tensor(labels, tf.int32),
    )
