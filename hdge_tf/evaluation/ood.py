"""Out-of-distribution scores: higher means "more in-distribution"."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score


def log_px(logits) -> np.ndarray:
    """log p(x) up to a constant: logsumexp of the logits read as energies. [N]."""
    return tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=-1).numpy()


def max_softmax(logits) -> np.ndarray:
    """max_y p(y|x), the classifier's confidence. [N]."""
    return tf.reduce_max(tf.nn.softmax(tf.cast(logits, tf.float32)), axis=-1).numpy()


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve with in-distribution inputs as the positive class,
    as in the JEM/HDGE papers: 1.0 when every in-distribution score is higher."""
    in_scores, out_scores = np.asarray(in_scores), np.asarray(out_scores)
    labels = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    return float(roc_auc_score(labels, np.concatenate([in_scores, out_scores])))
