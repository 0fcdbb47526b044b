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
added to every input of the first two stages, seeded by `config.eval.seed`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import export, markdown
from hdge_tf.data import ood as ood_data
from hdge_tf.evaluation import calibration, figures, ood, robustness

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


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


def _ood_set(model, config, name: str, x_clean) -> np.ndarray:
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
    return protocol_inputs(_ood_set(model, config, name, x_clean), config.eval, index)


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


def model_image_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = getattr(model, "image_shape", None) or model.input_shape[1:]
    return tuple(int(d) for d in shape)


def _describe_model(model: keras.Model) -> dict:
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


# Stages ---------------------------------------------------------------------------


def _classification(
    logits, labels, num_bins: int, output_dir: Path
) -> tuple[dict, dict]:
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


def _ood(model, config, x_clean, x_noisy, logits, output_dir: Path) -> dict:
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


def _gate(model, config, x_test, sets: dict) -> dict:
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

    def accepted(images) -> float:
        scores = ood.log_px(ood.predict_logits(model, images, config.eval.batch_size))
        in_distribution, _ = export.gate_decision(gate, images, scores)
        return float(np.mean(in_distribution.numpy()))

    return {
        "score": gate.score,
        "threshold": gate.threshold,
        "upper_threshold": gate.upper_threshold,
        "upper_quantile": gate.upper_quantile,
        "input_range": list(gate.input_range),
        "range_tolerance": gate.range_tolerance,
        "validation_tpr": gate.tpr,
        "validation_examples": gate.num_validation,
        "inputs": gate.inputs,
        "test_tpr": accepted(x_test),
        "fpr": {
            name: accepted(_ood_set(model, config, name, x_test))
            for name, entry in sets.items()
            if "error" not in entry
        },
    }


def _robustness(model, config, x_test, y_test, output_dir: Path) -> dict:
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


# Entry point ----------------------------------------------------------------------


def run_evaluation(model: keras.Model, config, output_dir: str | Path) -> dict:
    """Evaluates `model` as configured by `config.data` and `config.eval`; writes the
    report files to `output_dir` and returns the report.json content.

    Raises ValueError before any computation for an unknown OOD set or score.
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
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds, start = {}, time.time()

    logging.info("Loading the %s test split.", config.data.name)
    x_test, y_test = protocol_test_arrays(config)
    x_noisy = protocol_inputs(x_test, cfg, 0)
    logits = ood.predict_logits(model, x_noisy, cfg.batch_size)
    metrics, calibration_report = _classification(
        logits, y_test, int(cfg.ece_bins), output_dir
    )
    seconds["classification"] = time.time() - start
    logging.info("Classification (%.1fs): %s", seconds["classification"], metrics)

    stage = time.time()
    logging.info("OOD detection against %s.", list(cfg.ood_sets))
    ood_report = _ood(model, config, x_test, x_noisy, logits, output_dir)
    seconds["ood"] = time.time() - stage

    stage = time.time()
    gate_report = _gate(model, config, x_test, ood_report["sets"])
    seconds["gate"] = time.time() - stage

    stage = time.time()
    logging.info("PGD on %d test images.", min(cfg.pgd.num_examples, len(y_test)))
    robustness_report = _robustness(model, config, x_test, y_test, output_dir)
    seconds["robustness"] = time.time() - stage
    seconds["total"] = time.time() - start

    report = _plain(
        {
            "model": _describe_model(model),
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


# Markdown -------------------------------------------------------------------------


def _gate_checks(gate: dict) -> list[str]:
    """The gate's other checks, in words (reports from before them have none)."""
    if "upper_threshold" not in gate:
        return []
    low, high = gate["input_range"]
    return [
        "",
        f"It also rejects {gate['score']} > {gate['upper_threshold']:.4f} (the "
        f"{100 * gate['upper_quantile']:g}% quantile of the validation images: "
        "higher than nearly every real image scores), any non-finite pixel, and "
        f"pixels outside [{low:g}, {high:g}] by more than "
        f"{gate['range_tolerance']:g}; the signature's `reason` output names the "
        "check an input failed.",
    ]


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown_report(report: dict) -> str:
    """report.md from a report.json dict."""
    cls, cal = report["classification"], report["calibration"]
    settings = report["settings"]
    lines = [
        f"# Evaluation of {report['model']['class']} on {report['data']['name']}",
        "",
        f"Test images: {cls['num_examples']}; Gaussian input noise std "
        f"{settings['input_noise_std']} on every evaluated input (the attacked "
        "model's noisy copies are part of the defence below).",
        "",
        "## Classification and calibration",
        "",
        *markdown.table(
            ["metric", "value"],
            [
                ["accuracy", _fmt(cls["accuracy"])],
                ["NLL", _fmt(cls["nll"])],
                ["Brier score (sum over classes)", _fmt(cls["brier"])],
                [f"ECE ({cal['num_bins']} equal-width bins)", _fmt(cal["ece"])],
            ],
        ),
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    ood_report = report["ood"]
    if ood_report["sets"]:
        scores = ood_report["scores"]
        lines += [
            "## OOD detection",
            "",
            "In-distribution test images are the positive class (AUPR-in); AUPR-out "
            "takes the OOD set as positive. Higher scores mean more in-distribution.",
            "",
            "AUROC:",
            "",
        ]
        rows, details = [], []
        for name, entry in ood_report["sets"].items():
            if "error" in entry:
                rows.append([name] + ["unavailable"] * len(scores))
                continue
            metrics = entry["scores"]
            rows.append([name] + [_fmt(metrics[s]["auroc"]) for s in scores])
            for s in scores:
                m = metrics[s]
                details.append(
                    [name, s]
                    + [_fmt(m[k]) for k in ("auroc", "aupr_in", "aupr_out")]
                    + [_fmt(m["fpr_at_95_tpr"])]
                )
        lines += markdown.table(["set", *scores], rows)
        lines += ["", "All metrics:", ""]
        lines += markdown.table(
            ["set", "score", "AUROC", "AUPR-in", "AUPR-out", "FPR@95%TPR"], details
        )
        lines += [""]
        lines += [f"![{s} histograms](ood_{s}.png)" for s in scores]
        lines += [""]
    gate = report.get("gate", {})
    if "threshold" in gate:
        lines += [
            "## OOD gate (`hdge-export`'s `gate` signature)",
            "",
            f"Accepts an input when {gate['score']} >= {gate['threshold']:.4f}, the "
            f"threshold that keeps {100 * gate['validation_tpr']:.0f}% of "
            f"{gate['validation_examples']} validation images; {gate['inputs']}.",
            *_gate_checks(gate),
            "",
            *markdown.table(
                ["set", "accepted"],
                [["test (true-positive rate)", _fmt(gate["test_tpr"])]]
                + [
                    [f"{name} (false-positive rate)", _fmt(rate)]
                    for name, rate in gate["fpr"].items()
                ],
            ),
            "",
        ]
    rob = report["robustness"]
    if not rob.get("skipped"):
        defence, parts = rob["defence"], []
        if defence["noisy_copies"] > 1 or defence["copy_noise_std"] > 0:
            parts.append(
                f"logits averaged over {defence['noisy_copies']} copies x + "
                f"{defence['copy_noise_std']} N(0, I) of each image"
            )
        if defence["steps"]:
            parts.append(
                f"refined by {defence['steps']} SGLD step(s) on log p(x) (step "
                f"{defence['step_size']}, noise {defence['noise_std']}) before "
                "classifying"
            )
        gradient = (
            "BPDA (JEM's: the refinement is the identity in the backward pass)"
            if rob["gradient"] == "bpda"
            else "through the unrolled SGLD chain"
        )
        lines += [
            "## Adversarial robustness (PGD)",
            "",
            f"{rob['num_examples']} test images, {rob['steps']} steps of "
            f"{rob['step_size_fraction_of_epsilon']} x epsilon, random start "
            f"{rob['random_start']}, {rob['restarts']} restart(s). "
            f"Epsilons in {rob['epsilon_units']}.",
            "",
            "Attacked and evaluated model (JEM's defence, see its attack_model.py): "
            f"{', '.join(parts) or 'the plain classifier'}; attack gradient "
            f"{gradient}.",
            "",
        ]
        rows = [
            [norm, f"{p['epsilon']:.4g}", _fmt(p["accuracy"])]
            for norm, points in rob["accuracy"].items()
            for p in points
        ]
        lines += markdown.table(["norm", "epsilon", "accuracy"], rows)
        lines += ["", "![robustness](robustness.png)", ""]
    lines += [
        "## Settings",
        "",
        "```json",
        json.dumps(settings, indent=2),
        "```",
        "",
        f"Time: {report['seconds']}",
        "",
    ]
    return "\n".join(lines)
