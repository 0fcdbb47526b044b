"""report.md of `hdge-reproduce`: the claims and targets, classification and
calibration, OOD detection, the queue-size ablation and generative quality, each
number with its spread over seeds."""

from __future__ import annotations

import functools
from pathlib import Path

from hdge_tf.markdown import table
from hdge_tf.reproduce.claims import ood_sets, sample_path
from hdge_tf.reproduce.summary import fmt

SCORES = ("log_px", "max_softmax", "contrast")


def markdown(config, report: dict, cells, labels, by_k) -> str:
    main = [v for v in config.variants if v in cells]
    lines = [
        "# hdge-reproduce: the paper's experiment families at embedded scale",
        "",
        "Mean ± sample standard deviation over seeds (n = seeds); per-seed values "
        "are in report.json. A verdict needs the difference of means to exceed "
        "twice its standard error. The paper's values are CIFAR-10 with a "
        "WRN-28-10; ours are the embedded MNIST digits with the demo CNN.",
        "",
    ]
    if report["missing_runs"]:
        lines += [f"Runs not finished: {', '.join(report['missing_runs'])}.", ""]
    lines += ["## Claims", ""]
    lines += table(
        ["claim", "paper (CIFAR-10)", "ours", "verdict"],
        [[c["claim"], c["paper"], c["ours"], c["verdict"]] for c in report["claims"]],
    )
    if report["targets"]:
        lines += ["", "HDGE + JEM targets:", ""]
        lines += table(
            ["target", "ours", "verdict"],
            [[t["target"], t["ours"], t["verdict"]] for t in report["targets"]],
        )
    lines += ["", *_time_to_quality(config, cells, labels, main)]
    lines += ["", "## Classification and calibration", ""]
    lines += table(
        ["variant", "accuracy %", "NLL", "ECE (20 bins)", "Brier", "kept epoch"],
        [
            [
                labels[v],
                fmt(cells[v].get("accuracy"), percent=True),
                *(fmt(cells[v].get(m)) for m in ("nll", "ece", "brier")),
                fmt(cells[v].get("kept_epoch"), 1),
            ]
            for v in main
        ],
    )
    sets = ood_sets(cells)
    lines += ["", "## OOD detection (AUROC, in-distribution = test split)", ""]
    for score in SCORES:
        rows = [
            [labels[v], *(fmt(cells[v].get(f"auroc.{score}.{s}")) for s in sets)]
            for v in main
            if any(f"auroc.{score}.{s}" in cells[v] for s in sets)
        ]
        if rows:
            lines += [f"Score `{score}`:", ""]
            lines += [*table(["variant", *sets], rows), ""]
    gated = [v for v in main if "gate.test_tpr" in cells[v]]
    if gated:
        lines += [
            "OOD gate of `hdge-export` (log p(x) bounds set on the validation "
            "split, input checks): share admitted of the test split (TPR) and of "
            "each OOD set (FPR).",
            "",
        ]
        lines += table(
            ["variant", "test TPR", *(f"FPR {s}" for s in sets)],
            [
                [
                    labels[v],
                    fmt(cells[v].get("gate.test_tpr")),
                    *(fmt(cells[v].get(f"gate.fpr.{s}")) for s in sets),
                ]
                for v in gated
            ],
        )
        lines += [""]
    if "ood_auroc.png" in report["figures"]:
        lines += ["![log p(x) AUROC per variant](ood_auroc.png)", ""]
    if by_k:
        lines += ["## Queue size K (paper Table 3): log p(x) AUROC", ""]
        lines += table(
            ["K", "accuracy %", *sets],
            [
                [
                    f"{k:,}",
                    fmt(c.get("accuracy"), percent=True),
                    *(fmt(c.get(f"auroc.log_px.{s}")) for s in sets),
                ]
                for k, c in sorted(by_k.items())
            ],
        )
        lines += [""]
        if "k_ablation.png" in report["figures"]:  # drawn from two sizes on
            lines += ["![K ablation](k_ablation.png)", ""]
    lines += _generative_section(config, report, cells, labels)
    return "\n".join(lines) + "\n"


def _time_to_quality(config, cells, labels, variants) -> list[str]:
    """Each variant's training time (hdge-train's `train_seconds_this_call`)
    beside its headline quality, and against the first variant's time."""
    timed = [v for v in variants if "train_seconds" in cells[v]]
    if not timed:
        return []
    first = cells[timed[0]]["train_seconds"].mean
    steps = config.sampling.steps
    rows = []
    for v in timed:
        c = cells[v]
        rows.append(
            [
                labels[v],
                fmt(c["train_seconds"], 0),
                f"{c['train_seconds'].mean / first:.2f}x",
                fmt(c.get("accuracy"), percent=True),
                fmt(c.get("ece")),
                fmt(c.get("auroc.log_px.noise")),
                *(
                    fmt(_sample_cell(c, "conditional", start, metric, steps))
                    for start in ("fresh", "buffer")
                    for metric in ("class_agreement", "worst_class_agreement")
                ),
            ]
        )
    return [
        "## Time to quality",
        "",
        f"Training time of each run (its epochs, validation included; runs of one "
        f"reproduction share the host) against {labels[timed[0]]}'s, beside what it "
        f"reached; samples: conditional, {steps} SGLD steps from uniform noise "
        "(fresh) and from the replay buffer, agreement with the judge and its "
        "worst class.",
        "",
        *table(
            [
                "variant",
                "training s",
                "time",
                "accuracy %",
                "ECE",
                "log p(x) AUROC noise",
                "fresh",
                "fresh worst",
                "buffer",
                "buffer worst",
            ],
            rows,
        ),
    ]


def _sample_cell(cells, mode: str, start: str, metric: str, steps: int):
    return cells.get(sample_path(mode, start, steps, metric))


def _generative_section(config, report: dict, cells, labels) -> list[str]:
    """One row per sampled variant, mode and start: the judge's agreement at 0
    steps (what the start alone gives) beside the numbers after the chains."""
    steps = config.sampling.steps
    rows = []
    for v, c in cells.items():
        for mode in ("conditional", "unconditional"):
            for start in ("fresh", "buffer", "gaussian"):
                get = functools.partial(_sample_cell, c, mode, start)
                if get("inception_score", steps) is None:
                    continue
                conditional = mode == "conditional"
                rows.append(
                    [
                        labels.get(v, v),
                        mode,
                        start,
                        fmt(get("class_agreement", 0)) if conditional else "—",
                        fmt(get("class_agreement", steps)) if conditional else "—",
                        fmt(get("worst_class_agreement", steps))
                        if conditional
                        else "—",
                        fmt(get("inception_score", steps)),
                        fmt(get("frechet_distance", steps), 1),
                        fmt(get("in_range_fraction", steps)),
                    ]
                )
    if not rows:
        return []
    ceiling = (report["judge"] or {}).get("ceiling")
    if ceiling:
        rows.append(
            [
                "real test images (ceiling)",
                "—",
                "—",
                "—",
                f"{ceiling['class_agreement']:.3f}",
                "—",
                f"{ceiling['inception_score']:.3f}",
                f"{ceiling['frechet_distance']:.1f}",
                "—",
            ]
        )
    lines = [
        "## Generative quality (judged by an independent CE classifier)",
        "",
        f"SGLD chains of {steps} steps from each start a model has: fresh = "
        "uniform noise, buffer = the replay buffer's chains, gaussian = the class "
        "Gaussians. Agreement = conditional samples the judge assigns to their "
        "class, at 0 steps (the starts alone) and after the chains; worst class = "
        "the lowest per-class agreement; IS-analogue = exp(E KL(p(y|x) || p(y))) "
        "of the judge (10 at best); Fréchet = distance between the judge's "
        "penultimate features of the samples and of the training split (lower "
        "is better); in range = share of samples inside [-1, 1]. Real test "
        "images give the ceiling.",
        "",
    ]
    lines += table(
        [
            "model",
            "mode",
            "start",
            "agreement, 0 steps",
            f"agreement, {steps} steps",
            "worst class",
            "IS-analogue",
            "Fréchet",
            "in range",
        ],
        rows,
    )
    lines += [""] + [
        f"![{Path(f).stem}]({f})" for f in report["figures"] if "samples_" in f
    ]
    return lines
