"""The evaluation report's stages, each a section of report.json: the model's
description, classification and calibration, OOD detection, the exported OOD gate
and PGD robustness. `report.run_evaluation` runs them in order; each takes the
already-loaded test split so the split is read (and noised) once.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import export
from hdge_tf.evaluation import calibration, figures, ood, robustness
from hdge_tf.evaluation.protocol import ood_set, protocol_ood_set
from hdge_tf.model import model_image_shape


def describe_model(model: keras.Model) -> dict:
    """What was evaluated: class, image shape, size and, for an HDGE classifier,
    the settings its scores depend on."""
    info = {
        "class": type(model).__name__,
        "image_shape": list(model_image_shape(model)),
        "num_parameters": int(model.count_params()),
    }
    if ood.has_logit_queue(model):
        info.update(
            num_classes=int(model.num_classes),
            formulation=getattr(model, "formulation", None),
            temperature=float(model.temperature),
            queue_size=int(model.queue.size),
        )
    return info


def classification(
    logits, labels, num_bins: int, output_dir: Path
) -> tuple[dict, dict]:
    """Classification metrics and the calibration section (ECE, reliability bins
    and their diagram) of the protocol's test logits."""
    metrics = calibration.classification_metrics(logits, labels)
    ece = calibration.expected_calibration_error(logits, labels, num_bins)
    bins = calibration.reliability_bins(logits, labels, num_bins)
    figures.reliability_diagram(bins, ece, output_dir / "reliability.png")
    metrics["num_examples"] = len(labels)
    return metrics, {
        "num_bins": num_bins,
        "ece": ece,
        "bins": {k: v.tolist() for k, v in bins.items()},
    }


def ood_detection(model, config, x_clean, x_noisy, logits, output_dir: Path) -> dict:
    """Every configured score of the test split (positives) against each OOD set,
    with histograms; a set that is not available is recorded, not fatal."""
    cfg = config.eval
    scores = list(cfg.scores)
    if "contrast" in scores and not ood.has_logit_queue(model):
        logging.warning("%s has no logit queue: skipping the contrast score.", model)
        scores.remove("contrast")
    in_scores = ood.compute_scores(model, x_noisy, scores, cfg.batch_size, logits)
    sets, out_scores = {}, {}
    for index, name in enumerate(cfg.ood_sets, start=1):
        start = time.time()
        try:
            noisy = protocol_ood_set(model, config, name, index, x_clean)
        except data_lib.DatasetUnavailableError as error:
            logging.error("OOD set %s skipped: %s", name, error)
            sets[name] = {"error": str(error)}
            continue
        out_scores[name] = ood.compute_scores(model, noisy, scores, cfg.batch_size)
        sets[name] = {
            "num_examples": len(noisy),
            "scores": {
                s: ood.detection_metrics(in_scores[s], out_scores[name][s])
                for s in scores
            },
        }
        logging.info(
            "OOD %s (%d images, %.1fs): AUROC %s",
            name,
            len(noisy),
            time.time() - start,
            {s: round(m["auroc"], 4) for s, m in sets[name]["scores"].items()},
        )
    for s in scores:
        if out_scores:
            figures.score_histograms(
                s,
                in_scores[s],
                {n: v[s] for n, v in out_scores.items()},
                {n: sets[n]["scores"][s]["auroc"] for n in out_scores},
                output_dir / f"ood_{s}.png",
            )
    return {
        "positive_class": "in-distribution (test split)",
        "scores": scores,
        "in_distribution_examples": len(x_noisy),
        "sets": sets,
    }


def ood_gate(model, config, x_test, sets: dict) -> dict:
    """The deployable OOD gate of `hdge-export`: its log p(x) bounds (the
    threshold at `eval.gate_tpr` on the validation split, the upper one at its
    `export.UPPER_QUANTILE`) and input checks, and what it accepts of the test
    split and of each OOD set (`export.gate_decision`, the signature's own
    decision). Raw inputs, as the exported signature sees them."""
    tpr = float(config.eval.gate_tpr)
    arrays = data_lib.load_validation_arrays(config.data) if tpr else None
    if arrays is None:
        return {"skipped": "no validation split" if tpr else "eval.gate_tpr = 0"}
    validation, _ = arrays
    gate = export.fit_gate(model, validation, tpr, int(config.eval.batch_size))

    density_only = dataclasses.replace(gate, flat_tolerance=0.0)

    def accepted(images, gate=gate) -> float:
        scores = ood.log_px(ood.predict_logits(model, images, config.eval.batch_size))
        in_distribution, _ = export.gate_decision(gate, images, scores)
        return float(np.mean(in_distribution.numpy()))

    sets = {
        name: ood_set(model, config, name, x_test)
        for name, entry in sets.items()
        if "error" not in entry
    }
    blank = blank_images(x_test.shape[1:], gate.input_range)

    return {
        "score": gate.score,
        "threshold": gate.threshold,
        "upper_threshold": gate.upper_threshold,
        "upper_quantile": gate.upper_quantile,
        "input_range": list(gate.input_range),
        "range_tolerance": gate.range_tolerance,
        "flat_tolerance": gate.flat_tolerance,
        "validation_tpr": gate.tpr,
        "validation_examples": gate.num_validation,
        "inputs": gate.inputs,
        "test_tpr": accepted(x_test),
        # All-black and all-white images: a gate must never take an empty canvas.
        "blank": accepted(blank),
        "fpr": {name: accepted(images) for name, images in sets.items()},
        # What log p(x)'s bounds alone accept, without the flatness check.
        "density_only": {
            "blank": accepted(blank, density_only),
            "fpr": {
                name: accepted(images, density_only) for name, images in sets.items()
            },
        },
    }


def blank_images(image_shape, input_range) -> np.ndarray:
    """One image at each end of the input range: [2, *image_shape]."""
    low, high = input_range
    return np.stack([np.full(image_shape, v, np.float32) for v in (low, high)])


def adversarial_robustness(model, config, x_test, y_test, output_dir: Path) -> dict:
    """Accuracy under PGD at each configured norm and epsilon, on a seeded subset
    of the test split, against the configured defence (SGLD refinement, noisy
    copies)."""
    cfg, pgd = config.eval, config.eval.pgd
    num = min(int(pgd.num_examples), len(y_test))
    if num <= 0 or not pgd.norms:
        return {"skipped": True}
    subset = np.sort(np.random.default_rng(cfg.seed).permutation(len(y_test))[:num])
    images, labels = x_test[subset], y_test[subset]
    refinement = robustness.Refinement(
        steps=int(pgd.sgld_refine_steps),
        step_size=float(pgd.sgld_step_size),
        noise_std=float(pgd.sgld_noise_std),
        noisy_copies=int(pgd.noisy_copies),
        copy_noise_std=float(pgd.noise_std),
    )
    gradient = str(pgd.gradient)
    progress = keras.utils.Progbar(
        sum(len(pgd.epsilons[n]) for n in pgd.norms), unit_name="epsilon"
    )
    curves = {}
    for norm in pgd.norms:
        if norm not in robustness.NORMS:
            raise ValueError(
                f"Unknown PGD norm {norm!r}; expected one of {robustness.NORMS}."
            )
        epsilons = [float(e) for e in pgd.epsilons[norm]]
        accuracies = robustness.robust_accuracy(
            model,
            images,
            labels,
            norm,
            epsilons,
            steps=int(pgd.steps),
            relative_step_size=float(pgd.step_size),
            random_start=bool(pgd.random_start),
            restarts=int(pgd.restarts),
            refinement=refinement,
            gradient=gradient,
            batch_size=int(cfg.batch_size),
            seed=int(cfg.seed),
            progress=progress,
        )
        curves[norm] = (epsilons, accuracies)
    figures.robustness_curves(curves, output_dir / "robustness.png")
    return {
        "num_examples": num,
        "steps": int(pgd.steps),
        "step_size_fraction_of_epsilon": float(pgd.step_size),
        "random_start": bool(pgd.random_start),
        "restarts": int(pgd.restarts),
        # JEM's defended model (attack_model.py) and its attack gradient.
        "defence": refinement._asdict(),
        "gradient": gradient,
        "epsilon_units": "[-1, 1] input scale (2x the [0, 1] scale)",
        "accuracy": {
            norm: [{"epsilon": e, "accuracy": a} for e, a in zip(*curve, strict=True)]
            for norm, curve in curves.items()
        },
    }
