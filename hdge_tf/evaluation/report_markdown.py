"""report.md of the evaluation report: its report.json content as tables, in words
and with links to the figures. Reads the JSON dict only, so a report can be
re-rendered from report.json alone."""

from __future__ import annotations

import json

from hdge_tf import markdown


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
        f"{gate['range_tolerance']:g}"
        + (
            f", and flat images (pixel spread below {gate['flat_tolerance']:g})"
            if gate.get("flat_tolerance")
            else ""
        )
        + "; the signature's `reason` output names the check an input failed.",
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
                + (
                    [
                        [
                            "blank: all-black, all-white (false-positive rate)",
                            _fmt(gate["blank"]),
                        ]
                    ]
                    if "blank" in gate
                    else []
                )
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
