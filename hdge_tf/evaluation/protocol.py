"""The evaluation protocol: which images are scored and with what input noise.

Every evaluated input gets Gaussian noise of std `config.eval.input_noise_std`,
seeded by `config.eval.seed` and the set's stream, as in the published HDGE/JEM
code; the trainer's selection metrics (`headline_metrics`), the report's stages and
hdge-reproduce all read their images from here, so their numbers agree.
"""

from __future__ import annotations

import keras
import numpy as np

from hdge_tf import data as data_lib
from hdge_tf.data import ood as ood_data
from hdge_tf.evaluation import calibration, ood
from hdge_tf.model import model_image_shape


def add_input_noise(images: np.ndarray, std: float, seed) -> np.ndarray:
    """images + std * N(0, I), float32; unclipped, as in the published code."""
    images = np.asarray(images, np.float32)
    if not std:
        return images
    noise = np.random.default_rng(seed).standard_normal(images.shape, np.float32)
    return images + np.float32(std) * noise


# Noise streams of the evaluation protocol: the test split is stream 0, the OOD sets
# 1, 2, ... in config order, the validation split this one.
VALIDATION_STREAM = 10_000


def protocol_inputs(images: np.ndarray, eval_config, stream: int) -> np.ndarray:
    """`images` as every evaluation scores them: with the protocol's Gaussian noise
    (`eval.input_noise_std`, seeded by `eval.seed` and the set's stream)."""
    return add_input_noise(
        images, float(eval_config.input_noise_std), [int(eval_config.seed), stream]
    )


def protocol_test_arrays(config) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated test images: `eval.max_examples` of them, else the run's
    `data.limit_test` (0 = all)."""
    return data_lib.load_arrays(
        config.data.name,
        "test",
        config.data.data_dir,
        config.data.download,
        limit=int(config.eval.max_examples) or int(config.data.limit_test),
    )


def ood_set(model, config, name: str, x_clean) -> np.ndarray:
    """OOD set `name`, capped at the size of the in-distribution set."""
    return ood_data.load_ood_set(
        name,
        x_clean,
        model_image_shape(model),
        config.data.data_dir,
        config.data.download,
        limit=len(x_clean),
        seed=config.eval.seed,
    )


def protocol_ood_set(model, config, name: str, index: int, x_clean) -> np.ndarray:
    """OOD set `name` (the `index`-th of `eval.ood_sets`, from 1) with the
    protocol's noise, capped at the size of the in-distribution set."""
    return protocol_inputs(ood_set(model, config, name, x_clean), config.eval, index)


def headline_metrics(model: keras.Model, config, x_test, y_test) -> dict[str, float]:
    """Accuracy, NLL, Brier score, ECE and the log p(x) AUROC of each OOD set, under
    the protocol of `run_evaluation` (same inputs, noise and bins): the numbers
    the trainer writes to metrics.json, equal to those of the full report."""
    cfg = config.eval
    logits = ood.predict_logits(
        model, protocol_inputs(x_test, cfg, 0), int(cfg.batch_size)
    )
    metrics = calibration.classification_metrics(logits, y_test)
    metrics["ece"] = calibration.expected_calibration_error(
        logits, y_test, int(cfg.ece_bins)
    )
    in_scores = ood.log_px(logits)
    for index, name in enumerate(cfg.ood_sets, start=1):
        images = protocol_ood_set(model, config, name, index, x_test)
        out_scores = ood.log_px(ood.predict_logits(model, images, int(cfg.batch_size)))
        metrics[f"ood_auroc_log_px_{name}"] = ood.auroc(in_scores, out_scores)
    return metrics
