"""Scores and metrics of a trained energy classifier."""

from hdge_tf.evaluation.ood import auroc, log_px, max_softmax

__all__ = ["auroc", "log_px", "max_softmax"]
