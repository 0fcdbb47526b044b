"""Scores, metrics and the evaluation report of a trained energy classifier.

    calibration  accuracy, NLL, Brier score, ECE, reliability bins
    ood          OOD scores (log_px, max_softmax, grad_norm, contrast) and detection
                 metrics (AUROC, AUPR-in/out, FPR at 95% TPR)
    robustness   PGD (L∞, L2) with optional SGLD refinement
    figures      the report's PNGs
    protocol     the evaluated images and their input noise; the trainer's
                 headline metrics under the same protocol
    stages       the report's sections: classification, OOD detection, the OOD
                 gate, PGD robustness
    report_markdown  report.md from report.json
    report       run_evaluation(model, config, output_dir): all of the above

The OOD sets themselves live in `hdge_tf.data.ood`, the SGLD sampler in
`hdge_tf.sampling`, the logits' read-outs (log p(x), max softmax, batched float32
logits) in `hdge_tf.energy`.
"""

from hdge_tf.energy import log_px, max_softmax, predict_logits
from hdge_tf.evaluation.calibration import (
    classification_metrics,
    expected_calibration_error,
    reliability_bins,
)
from hdge_tf.evaluation.ood import (
    SCORES,
    aupr,
    auroc,
    compute_scores,
    contrast,
    detection_metrics,
    fpr_at_tpr,
    grad_norm,
)
from hdge_tf.evaluation.report import run_evaluation
from hdge_tf.evaluation.robustness import (
    Refinement,
    pgd_attack,
    predict_labels,
    robust_accuracy,
)
from hdge_tf.run_dir import load_model

__all__ = [
    "SCORES",
    "Refinement",
    "aupr",
    "auroc",
    "classification_metrics",
    "compute_scores",
    "contrast",
    "detection_metrics",
    "expected_calibration_error",
    "fpr_at_tpr",
    "grad_norm",
    "load_model",
    "log_px",
    "max_softmax",
    "pgd_attack",
    "predict_labels",
    "predict_logits",
    "reliability_bins",
    "robust_accuracy",
    "run_evaluation",
]
