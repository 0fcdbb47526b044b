"""`run_evaluation(model, config, output_dir)`: the evaluation report of a model.

It writes to `output_dir` (a run's `eval/` by default in `hdge-eval`):

    report.json        every number, plus the settings used
    report.md          tables of the same numbers, linking the figures
    reliability.png    reliability diagram of p(y|x)
    ood_<score>.png    histograms of each OOD score, in-distribution vs each set
    robustness.png     accuracy under PGD against epsilon

The stages follow the published HDGE/JEM protocol: classification and
calibration on the test split, OOD detection of the test split (positives) against
each set in `config.eval.ood_sets` with every score in `config.eval.scores`, and PGD
on a subset of the test split. Gaussian noise of std `config.eval.input_noise_std` is
added to every input of the first two stages, seeded by `config.eval.seed`
(`protocol.py`). The stages are `stages.py`, report.md's text `report_markdown.py`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
from absl import logging

from hdge_tf import input_checks
from hdge_tf.data import ood as ood_data
from hdge_tf.evaluation import ood, robustness, stages
from hdge_tf.evaluation.protocol import protocol_inputs, protocol_test_arrays
from hdge_tf.evaluation.report_markdown import markdown_report

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/Inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def run_evaluation(model: keras.Model, config, output_dir: str | Path) -> dict:
    """Evaluates `model` as configured by `config.data` and `config.eval`; writes the
    report files to `output_dir` and returns the report.json content.

    Raises ValueError before any computation for an unknown OOD set or score, and
    before writing anything for test images of another shape than the model's.
    """
    cfg = config.eval
    for name in cfg.ood_sets:
        ood_data.check_ood_set_name(name)
    ood.check_scores(cfg.scores)
    if cfg.pgd.gradient not in robustness.GRADIENTS:
        raise ValueError(
            f"Unknown PGD gradient {cfg.pgd.gradient!r}; expected one of "
            f"{robustness.GRADIENTS}."
        )
    output_dir = Path(output_dir)
    seconds, start = {}, time.time()

    logging.info("Loading the %s test split.", config.data.name)
    x_test, y_test = protocol_test_arrays(config)
    input_checks.check_image_shape(
        x_test.shape,
        input_checks.model_image_shape(model),
        f"The test images of data.name={config.data.name!r}",
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    x_noisy = protocol_inputs(x_test, cfg, 0)
    logits = ood.predict_logits(model, x_noisy, cfg.batch_size)
    metrics, calibration_report = stages.classification(
        logits, y_test, int(cfg.ece_bins), output_dir
    )
    seconds["classification"] = time.time() - start
    logging.info("Classification (%.1fs): %s", seconds["classification"], metrics)

    stage = time.time()
    logging.info("OOD detection against %s.", list(cfg.ood_sets))
    ood_report = stages.ood_detection(
        model, config, x_test, x_noisy, logits, output_dir
    )
    seconds["ood"] = time.time() - stage

    stage = time.time()
    gate_report = stages.ood_gate(model, config, x_test, ood_report["sets"])
    seconds["gate"] = time.time() - stage

    stage = time.time()
    logging.info("PGD on %d test images.", min(cfg.pgd.num_examples, len(y_test)))
    robustness_report = stages.adversarial_robustness(
        model, config, x_test, y_test, output_dir
    )
    seconds["robustness"] = time.time() - stage
    seconds["total"] = time.time() - start

    report = _plain(
        {
            "model": stages.describe_model(model),
            "data": {"name": config.data.name, "split": "test"},
            "settings": cfg.to_dict(),
            "classification": metrics,
            "calibration": calibration_report,
            "ood": ood_report,
            "gate": gate_report,
            "robustness": robustness_report,
            "figures": sorted(p.name for p in output_dir.glob("*.png")),
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
        }
    )
    (output_dir / REPORT_JSON).write_text(json.dumps(report, indent=2))
    (output_dir / REPORT_MD).write_text(markdown_report(report))
    logging.info("Wrote %s in %.1fs.", output_dir / REPORT_MD, seconds["total"])
    return report
