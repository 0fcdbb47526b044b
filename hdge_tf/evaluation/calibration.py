"""Classification quality and calibration of p(y|x) = softmax(f(x)).

Confidence is max_y p(y|x). Bins are equal-width on [0, 1] and half-open,
[k/B, (k+1)/B), with a confidence of exactly 1 in the last bin; this is
`tfp.stats.expected_calibration_error`'s binning (the JEM/HDGE code uses
(k/B, (k+1)/B] with B = 20, which differs only for confidences on a bin edge).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hdge_tf import energy, losses


def classification_metrics(logits, labels) -> dict[str, float]:
    """Accuracy, NLL (mean -log p(y|x)) and the multi-class Brier score
    (mean over examples of Σ_c (p(c|x) - 1[c = y])², in [0, 2])."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    probs = energy.probabilities(logits)
    one_hot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=tf.float32)
    correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
    return {
        "accuracy": float(tf.reduce_mean(tf.cast(correct, tf.float32))),
        "nll": float(tf.reduce_mean(losses.cross_entropy(labels, logits))),
        "brier": float(
            tf.reduce_mean(tf.reduce_sum(tf.square(probs - one_hot), axis=-1))
        ),
    }


def expected_calibration_error(logits, labels, num_bins: int = 15) -> float:
    """ECE = Σ_bins (n_bin / N) |accuracy_bin - mean confidence_bin|."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    # Imported here: it costs seconds, and the trainer imports this package.
    import tensorflow_probability as tfp

    ece = tfp.stats.expected_calibration_error(
        num_bins,
        logits=tf.cast(logits, tf.float32),
        labels_true=tf.cast(labels, tf.int32),
    )
    return float(ece)


def reliability_bins(logits, labels, num_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin data of a reliability diagram, each [num_bins]: lower and upper edge,
    count, accuracy and mean confidence (NaN in empty bins)."""
    probs = energy.probabilities(logits).numpy()
    confidence = probs.max(-1)
    correct = probs.argmax(-1) == np.asarray(labels)
    index = np.clip(np.floor(confidence * num_bins).astype(int), 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct, num_bins) / count
        mean_confidence = np.bincount(index, confidence, num_bins) / count
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count,
        "accuracy": accuracy,
        "confidence": mean_confidence,
    }
