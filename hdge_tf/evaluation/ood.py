"""Out-of-distribution scores and detection metrics.

Every score is "higher = more in-distribution", and every metric treats the
in-distribution inputs as the positive class, as the JEM/HDGE papers do (AUROC is
symmetric under swapping the convention together with the score's sign; AUPR is not,
so both AUPR-in and AUPR-out are reported).

Scores (JEM Sec. 5.2, HDGE Sec. 4.2):
  log_px       logsumexp_y f(x)[y], log p(x) up to the constant log Z
  max_softmax  max_y p(y|x)
  grad_norm    -‖∇x log p(x)‖, JEM's "approximate mass"
  contrast     max_c log p(x|c) of HDGE's contrastive estimate against the logit
               queue, i.e. -min_c contrastive_nll_x_given_each_y

log_px and max_softmax are `hdge_tf.energy`'s read-outs, the ones the exported
model serves.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from hdge_tf import losses, sampling
from hdge_tf.energy import log_px, max_softmax, predict_logits

SCORES = ("log_px", "max_softmax", "grad_norm", "contrast")
# Scores that are a function of the logits alone (one forward pass).
_LOGIT_SCORES = ("log_px", "max_softmax", "contrast")


# Scores ---------------------------------------------------------------------------


def contrast(
    logits,
    queue,
    temperature: float,
    formulation: str = "paper",
    valid=None,
) -> np.ndarray:
    """HDGE's similarity score max_c log p(x|c) against a [C, K] logit queue. [N]."""
    nll_x_given_c = losses.contrastive_nll_x_given_each_y(
        tf.cast(logits, tf.float32), queue, temperature, formulation, valid
    )
    return (-tf.reduce_min(nll_x_given_c, axis=-1)).numpy()


@tf.function(reduce_retracing=True)
def _grad_norm_batch(model: keras.Model, images: tf.Tensor) -> tf.Tensor:
    _, grad = sampling.log_density_gradient(model, images)
    return tf.norm(tf.reshape(grad, [tf.shape(grad)[0], -1]), axis=-1)


def grad_norm(model: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """-‖∇x logsumexp_y f(x)[y]‖₂ per image (flattened), batched. [N]."""
    images = np.asarray(images, np.float32)
    norms = [
        _grad_norm_batch(model, tf.constant(images[i : i + batch_size])).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return -np.concatenate(norms) if norms else np.zeros((0,), np.float32)


def check_scores(scores: Sequence[str]) -> None:
    """Raises ValueError naming the valid scores unless every one of `scores` is."""
    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise ValueError(f"Unknown OOD scores {unknown}; valid scores: {SCORES}.")


def has_logit_queue(model: keras.Model) -> bool:
    return hasattr(model, "queue") and hasattr(model, "temperature")


def compute_scores(
    model: keras.Model,
    images,
    scores: Sequence[str] = SCORES,
    batch_size: int = 256,
    logits=None,
) -> dict[str, np.ndarray]:
    """The requested scores of `images` ([N, H, W, C] in [-1, 1]), each [N].

    `contrast` needs a model with a logit queue (an HDGEClassifier); pass `logits`
    when they are already computed to save a forward pass.
    """
    check_scores(scores)
    if "contrast" in scores and not has_logit_queue(model):
        raise ValueError(
            "The 'contrast' score needs a model with a logit queue (HDGEClassifier); "
            f"{type(model).__name__} has none. Drop it from the scores."
        )
    result = {}
    if logits is None and any(s in _LOGIT_SCORES for s in scores):
        logits = predict_logits(model, images, batch_size)
    for name in scores:
        if name == "log_px":
            result[name] = log_px(logits).numpy()
        elif name == "max_softmax":
            result[name] = max_softmax(logits).numpy()
        elif name == "contrast":
            result[name] = contrast(
                logits,
                model.queue.logits,
                model.temperature,
                getattr(model, "formulation", "paper"),
                model.queue.valid_mask(),
            )
        elif name == "grad_norm":
            result[name] = grad_norm(model, images, batch_size)
    return result


# Metrics --------------------------------------------------------------------------


def _labelled(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    """(is_in_distribution, score) over both sets: in-distribution is label 1."""
    in_scores = np.asarray(in_scores, np.float64).ravel()
    out_scores = np.asarray(out_scores, np.float64).ravel()
    if not len(in_scores) or not len(out_scores):
        raise ValueError("Both the in-distribution and the OOD set need scores.")
    labels = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    return labels, np.concatenate([in_scores, out_scores])


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve with in-distribution inputs as the positive class,
    as in the JEM/HDGE papers: 1.0 when every in-distribution score is higher."""
    labels, scores = _labelled(in_scores, out_scores)
    return float(roc_auc_score(labels, scores))


def aupr(in_scores, out_scores, positive: str = "in") -> float:
    """Area under the precision-recall curve (average precision).

    positive="in" (AUPR-in, the papers' convention): in-distribution inputs are the
    positives, ranked by the score. positive="out" (AUPR-out): OOD inputs are the
    positives, ranked by the negated score.
    """
    labels, scores = _labelled(in_scores, out_scores)
    if positive == "in":
        return float(average_precision_score(labels, scores))
    if positive == "out":
        return float(average_precision_score(1 - labels, -scores))
    raise ValueError(f"positive must be 'in' or 'out', got {positive!r}.")


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    """Fraction of OOD inputs accepted at the highest threshold that accepts at least
    `tpr` of the in-distribution inputs (accept = score >= threshold)."""
    labels, scores = _labelled(in_scores, out_scores)
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(fprs[np.searchsorted(tprs, tpr, side="left")])


def detection_metrics(in_scores, out_scores) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR, in-distribution = positive."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "aupr_in": aupr(in_scores, out_scores, "in"),
        "aupr_out": aupr(in_scores, out_scores, "out"),
        "fpr_at_95_tpr": fpr_at_tpr(in_scores, out_scores, 0.95),
    }
