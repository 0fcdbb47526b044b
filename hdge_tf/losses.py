"""The loss terms of HDGE, one function each, all in float32.

Every term is a loss to minimize and is named for what it returns: `cross_entropy`
is -log p(y|x), `contrastive_nll_x_given_y` -log p(x|y), `contrastive_nll_x`
-log p(x), `sgld_nll_x` JEM's SGLD surrogate of -log p(x), and
`energy_l2` JEM's energy penalty.

Notation (paper, Sec. 3): f(x) are the logits of the classifier read as energies,
ẑ = f(x) / ‖f(x)‖ its L2-normalized version, q̂_k the normalized logits of the K past
inputs held in the logit queue, τ the temperature.

The contrastive terms approximate the normalizer of p(x|y) with the queue:

    log p(x|y) ≈ s(x, y) - log(exp s(x, y) + Σ_k exp s(x_k, y))

i.e. a (1 + K)-way cross-entropy with the input as the positive. Two scorings s:

- ``paper``:      s(x, y) = ẑ_y / τ
- ``reference``:  s(x, y) = logsumexp_c(w_c · ẑ_c) / τ with w the label vector; for a
  one-hot label this is log(exp(ẑ_y) + C - 1) / τ, because the C - 1 zeroed classes
  still contribute exp(0) each. This is what the published PyTorch code computes.

With one-hot labels the negatives only depend on the label, so the sum over the queue
reduces to one logsumexp per class (a C-vector), and the loss costs O(N·C + C·K)
memory: no N×K, let alone N×C×K, tensor is formed. The paper scoring keeps this cost
for soft labels too (the loss is linear in the label weights). The reference scoring
with soft labels (label smoothing) has negatives that depend on each example's label
vector and costs O(N·C·K) memory; that is the price of that formulation.
"""

from __future__ import annotations

import math

import tensorflow as tf

FORMULATIONS = ("paper", "reference")


def normalize_logits(logits: tf.Tensor) -> tf.Tensor:
    """L2-normalizes each row in float32; the queue stores rows in this form."""
    return tf.math.l2_normalize(tf.cast(logits, tf.float32), axis=-1)


def cross_entropy(
    labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0
) -> tf.Tensor:
    """Per-example -log p(y|x). labels: [N] int; logits: [N, C]. Returns [N].

    With `label_smoothing` s the target is `smooth_labels` (1 - s on the true class,
    s / (C - 1) on the others), as in the published code.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if label_smoothing:
        targets = smooth_labels(targets, label_smoothing)
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def smooth_labels(one_hot: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """The published code's label smoothing: 1 - s on the true class and s / (C - 1)
    on each of the other C - 1 classes (rows still sum to 1).

    This is not Keras's form (1 - s + s/C on the true class, s/C elsewhere). The same
    targets feed the cross-entropy and the label weights of the contrastive
    log p(x|y) term. Needs C >= 2 and 0 <= s < 1.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    num_classes = tf.cast(tf.shape(one_hot)[-1], one_hot.dtype)
    off_value = label_smoothing / (num_classes - 1.0)
    return one_hot * (1.0 - label_smoothing) + (1.0 - one_hot) * off_value


def _masked_queue_logsumexp(scores: tf.Tensor, valid: tf.Tensor | None) -> tf.Tensor:
    """logsumexp over the last (queue) axis, ignoring slots not yet written."""
    if valid is not None:
        scores = tf.where(valid, scores, tf.constant(-math.inf, scores.dtype))
    return tf.reduce_logsumexp(scores, axis=-1)


def _contrast(positive: tf.Tensor, log_negatives: tf.Tensor) -> tf.Tensor:
    """-log softmax of the positive among [positive, negatives], given the
    negatives' logsumexp: -(p - log(exp p + exp n))."""
    return tf.math.softplus(log_negatives - positive)


def contrastive_nll_x_given_each_y(
    logits: tf.Tensor,
    queue: tf.Tensor,
    temperature: float,
    formulation: str = "paper",
    valid: tf.Tensor | None = None,
) -> tf.Tensor:
    """-log p(x|c) for every class c, [N, C], with one-hot label scoring.

    Row c of the queue gives the negatives of class c; they do not depend on the
    example, so each class needs one logsumexp over the queue.
    """
    check_formulation(formulation)
    queue = tf.stop_gradient(tf.cast(queue, tf.float32))
    z = normalize_logits(logits)
    inv_tau = 1.0 / temperature
    if formulation == "reference":
        # logsumexp_c'(onehot(c)_c' · v_c') = logaddexp(v_c, log(C - 1)).
        log_rest = tf.math.log(tf.cast(tf.shape(z)[-1] - 1, tf.float32))
        z = tf.math.reduce_logsumexp(
            tf.stack([z, tf.broadcast_to(log_rest, tf.shape(z))]), axis=0
        )
        queue = tf.math.reduce_logsumexp(
            tf.stack([queue, tf.broadcast_to(log_rest, tf.shape(queue))]), axis=0
        )
    log_neg = _masked_queue_logsumexp(queue * inv_tau, valid)  # [C]
    return _contrast(z * inv_tau, log_neg[tf.newaxis, :])


def contrastive_nll_x_given_y(
    logits: tf.Tensor,
    labels: tf.Tensor,
    queue: tf.Tensor,
    temperature: float,
    formulation: str = "paper",
    label_smoothing: float = 0.0,
    valid: tf.Tensor | None = None,
) -> tf.Tensor:
    """HDGE's contrastive estimate of -log p(x|y), per example.

    Args:
      logits: [N, C] raw logits of the current batch (gradients flow through these).
      labels: [N] int class indices.
      queue: [C, K] normalized logits of past inputs, class-major (row c holds q̂_{·,c}).
        Treated as a constant.
      temperature: τ.
      formulation: "paper" or "reference" (see module docstring).
      label_smoothing: smooths the label vector used for weighting
        (`smooth_labels`: 1 - s on y, s / (C - 1) on the other classes).
      valid: optional [K] bool, False for queue slots that hold no data yet.

    Returns:
      [N] float32 loss.
    """
    check_formulation(formulation)
    num_classes = tf.shape(logits)[-1]
    weights = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if formulation == "reference" and label_smoothing:
        # Negatives depend on each example's full label vector: N×C×K.
        weights = smooth_labels(weights, label_smoothing)
        queue = tf.stop_gradient(tf.cast(queue, tf.float32))
        inv_tau = 1.0 / temperature
        positive = tf.reduce_logsumexp(weights * normalize_logits(logits), axis=-1)
        scores = tf.reduce_logsumexp(
            weights[:, :, tf.newaxis] * queue[tf.newaxis], axis=1
        )  # [N, K]
        log_neg = _masked_queue_logsumexp(scores * inv_tau, valid)  # [N]
        return _contrast(positive * inv_tau, log_neg)
    per_class = contrastive_nll_x_given_each_y(
        logits, queue, temperature, formulation, valid
    )
    if label_smoothing:  # paper: the loss is linear in the label weights
        weights = smooth_labels(weights, label_smoothing)
    return tf.reduce_sum(weights * per_class, axis=-1)


def contrastive_nll_x(
    logits: tf.Tensor,
    queue: tf.Tensor,
    temperature: float,
    valid: tf.Tensor | None = None,
) -> tf.Tensor:
    """The unconditional variant, a contrastive estimate of -log p(x), per example.

    Scores an input by logsumexp over all classes of its normalized logits (log p(x)
    of the normalized energies), against the same score of each queue entry. Both
    formulations agree here: with an all-ones label vector nothing is masked.

    Args: as `contrastive_nll_x_given_y`. Returns: [N] float32.
    """
    queue = tf.stop_gradient(tf.cast(queue, tf.float32))
    inv_tau = 1.0 / temperature
    positive = tf.reduce_logsumexp(normalize_logits(logits), axis=-1) * inv_tau
    log_neg = _masked_queue_logsumexp(
        tf.reduce_logsumexp(queue, axis=0) * inv_tau, valid
    )  # scalar
    return _contrast(positive, log_neg)


def check_formulation(formulation: str) -> None:
    """Raises ValueError naming the choices unless `formulation` is one of them."""
    if formulation not in FORMULATIONS:
        raise ValueError(
            f"Unknown contrastive formulation {formulation!r}; expected one of "
            f"{FORMULATIONS}."
        )


def sgld_nll_x(log_density_data: tf.Tensor, log_density_samples: tf.Tensor):
    """JEM's maximum-likelihood term, a scalar whose gradient estimates that of
    the negative log-likelihood -E_data[log p(x)] (or of -log p(x|y)).

    With E(x) = -log_density(x), the gradient of -E_data[log p(x)] is
    E_data[∇E] - E_model[∇E]; the model expectation is estimated with SGLD samples:

        loss = -(mean log_density(x_data) - mean log_density(x_sample))

    log_density_*: [N] and [M] unnormalized log densities, logsumexp_y f(x)[y]
    (or f(x)[y] for the class-conditional term). The samples must be
    stop-gradient; only the network's parameters are differentiated.
    """
    data = tf.cast(log_density_data, tf.float32)
    samples = tf.cast(log_density_samples, tf.float32)
    return -(tf.reduce_mean(data) - tf.reduce_mean(samples))


def energy_l2(log_density_data: tf.Tensor, log_density_samples: tf.Tensor):
    """mean(E_data²) + mean(E_sample²), a scalar: the L2 penalty JEM users add to
    keep energies from drifting when SGLD training diverges."""
    data = tf.cast(log_density_data, tf.float32)
    samples = tf.cast(log_density_samples, tf.float32)
    return tf.reduce_mean(tf.square(data)) + tf.reduce_mean(tf.square(samples))
