"""report.md, report.json and figures of `hdge-reproduce`: each number beside the
paper's and a verdict per claim.

The paper's values (CIFAR-10, WRN-28-10) are HDGE's Tables 1-4; ours are at
embedded scale (MNIST digits, a small CNN), so the comparison is of directions
and gaps, not of values.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from hdge_tf.markdown import table
from hdge_tf.plots import new_figure
from hdge_tf.reproduce import plan, summary
from hdge_tf.reproduce.experiments import ExperimentConfigs
from hdge_tf.reproduce.summary import Cell

# Paper values, CIFAR-10 (HDGE Tables 1-4).
PAPER = {
    "accuracy": "HDGE 96.7 vs CE 95.8 (Table 1, with BatchNorm)",
    "auroc": "log p(x) AUROC HDGE vs a plain WRN: SVHN .96 vs .46, interp .82 vs "
    ".41, CIFAR-100 .91 vs .47, CelebA .80 vs .49 (Table 2)",
    "ece": "better calibrated than CE (shown as a figure; no number in our notes)",
    "queue": "SVHN AUROC .89 at K = 64, .96 at K = 65,536 (Table 3)",
    "jem_accuracy": "HDGE + JEM 94.4 vs HDGE 94.6 (Table 4, no BatchNorm)",
    "jem_samples": "HDGE + JEM IS 9.19, FID 37.6 (Table 4)",
}
SCORES = ("log_px", "max_softmax", "contrast")
# The start whose samples the claims compare: uniform noise, the one start every
# model has (a replay buffer or fitted Gaussians would credit the initializer).
CLAIM_START = "fresh"


def sample_path(mode: str, start: str, steps: int, metric: str) -> str:
    """Where `job.score_samples`' number sits among a variant's cells."""
    return f"samples.{mode}.{start}.{steps}.{metric}"


HEADLINE = ("accuracy", "nll", "ece", "brier")


def fmt(cell: Cell | None, digits: int = 3, percent: bool = False) -> str:
    if cell is None:
        return "—"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else digits
    return (
        f"{cell.mean * scale:.{digits}f} ± {cell.std * scale:.{digits}f} (n={cell.n})"
    )


def ood_sets(cells: dict[str, dict[str, Cell]]) -> list[str]:
    names = []
    for metrics in cells.values():
        for path in metrics:
            if path.startswith("auroc.log_px."):
                name = path.split(".", 2)[2]
                if name not in names:
                    names.append(name)
    return names


def queue_cells(config, cells, base_k: int) -> dict[int, dict[str, Cell]]:
    """{K: the ablated variant's cells at K}, the base variant at its own K
    (`base_k`, `plan.base_queue_size`)."""
    out = {}
    for k in config.queue_sizes:
        k = int(k)
        name = config.ablation_variant if k == base_k else plan.ablation_variant(k)
        if name in cells:
            out[k] = cells[name]
    return out


def claims(config, cells, by_k: dict[int, dict[str, Cell]]) -> list[dict]:
    """The paper's claims, each with our numbers (`by_k`: `queue_cells`) and a
    verdict."""
    out = []

    def get(variant, path):
        return cells.get(variant, {}).get(path)

    def add(claim, paper, a, b, result, shown=None):
        out.append(
            {
                "claim": claim,
                "paper": paper,
                "ours": shown or f"{fmt(a)} vs {fmt(b)}",
                **result,
            }
        )

    if get("hdge", "accuracy") and get("ce", "accuracy"):
        a, b = get("hdge", "accuracy"), get("ce", "accuracy")
        add(
            "HDGE is more accurate than CE",
            PAPER["accuracy"],
            a,
            b,
            summary.compare(a, b),
            f"{fmt(a, percent=True)} vs {fmt(b, percent=True)}",
        )
    for name in ood_sets(cells):
        path = f"auroc.log_px.{name}"
        a, b = get("hdge", path), get("ce", path)
        if a and b:
            add(
                f"HDGE's log p(x) detects {name} better than CE's",
                PAPER["auroc"],
                a,
                b,
                summary.compare(a, b),
            )
    if get("hdge", "ece") and get("ce", "ece"):
        a, b = get("hdge", "ece"), get("ce", "ece")
        add(
            "HDGE is better calibrated (lower ECE) than CE",
            PAPER["ece"],
            a,
            b,
            summary.compare(a, b, higher_is_better=False),
        )
    if len(by_k) >= 2:
        small, large = min(by_k), max(by_k)
        for name in ood_sets(cells):
            path = f"auroc.log_px.{name}"
            a, b = by_k[large].get(path), by_k[small].get(path)
            if a and b:
                add(
                    f"A larger queue detects {name} better "
                    f"(K = {large:,} vs {small:,})",
                    PAPER["queue"],
                    a,
                    b,
                    summary.compare(a, b),
                )
    a, b = get("hdge_jem", "accuracy"), get("hdge", "accuracy")
    if a and b:
        add(
            "HDGE + JEM keeps HDGE's accuracy (within 0.5 points)",
            PAPER["jem_accuracy"],
            a,
            b,
            summary.within(a, b, 0.005),
            f"{fmt(a, percent=True)} vs {fmt(b, percent=True)}",
        )
    path = sample_path(
        "conditional", CLAIM_START, config.sampling.steps, "class_agreement"
    )
    a, b = get("hdge_jem", path), get("hdge", path)
    if a and b:
        add(
            "HDGE + JEM's conditional samples are more recognizable than HDGE's",
            PAPER["jem_samples"],
            a,
            b,
            summary.compare(a, b),
        )
    return out


def targets(config, cells) -> list[dict]:
    """The bar HDGE + JEM is held to on the demo: HDGE's classifier kept,
    calibrated without post-hoc scaling, an OOD gate that noise cannot pass,
    samples of every class recognizable from noise and from the replay buffer,
    inside the data range; the paper's log p(x) variant generating too."""
    jem, hdge = cells.get("hdge_jem", {}), cells.get("hdge", {})
    steps = config.sampling.steps
    rows = []

    def add(what, cell, result):
        rows.append({"target": what, "ours": fmt(cell), **result})

    if "accuracy" in jem and "accuracy" in hdge:
        add(
            "accuracy within 0.5 points of HDGE's",
            jem["accuracy"],
            summary.within(jem["accuracy"], hdge["accuracy"], 0.005),
        )
    if "nll" in jem and "nll" in hdge:
        add(
            "NLL <= 1.3x HDGE's",
            jem["nll"],
            summary.at_least(jem["nll"], 1.3 * hdge["nll"].mean, False),
        )
    for what, path, target, higher in (
        ("ECE <= 0.02 (no post-hoc scaling)", "ece", 0.02, False),
        ("log p(x) AUROC noise >= 0.99", "auroc.log_px.noise", 0.99, True),
        ("log p(x) AUROC constant >= 0.97", "auroc.log_px.constant", 0.97, True),
        ("log p(x) AUROC digits >= 0.99", "auroc.log_px.digits", 0.99, True),
        ("no divergence restart", "divergence_restarts", 0.0, False),
    ):
        if path in jem:
            cell = jem[path]
            if path == "divergence_restarts":  # every seed, not the mean
                cell = Cell((max(cell.values),), cell.seeds[:1])
            add(what, cell, summary.at_least(cell, target, higher))
    for start in ("fresh", "buffer"):
        for metric, target, what in (
            ("class_agreement", 0.9, "judged to their class >= 90%"),
            ("worst_class_agreement", 0.7, "every class >= 70%"),
        ):
            path = sample_path("conditional", start, steps, metric)
            if path in jem:
                add(
                    f"conditional samples from {start} starts ({steps} steps) {what}",
                    jem[path],
                    summary.at_least(jem[path], target),
                )
    in_range = [c for p, c in jem.items() if p.endswith(".in_range_fraction")]
    if in_range:
        worst = min(in_range, key=lambda c: min(c.values))
        add(
            "every sample inside the data range",
            Cell((min(worst.values),), worst.seeds[:1]),
            summary.at_least(Cell((min(worst.values),), (0,)), 1.0),
        )
    path = sample_path("unconditional", "fresh", steps, "inception_score")
    if path in jem:
        add(
            f"unconditional samples' IS-analogue from fresh starts ({steps} steps) "
            ">= 5",
            jem[path],
            summary.at_least(jem[path], 5.0),
        )
    return rows


def build(
    config, jobs: list[plan.Job], root: str | Path, experiments: ExperimentConfigs
) -> dict:
    """Reads every finished job's record; writes report.json, report.md and the
    figures under `root`; returns the report. `experiments`: the config files the
    variants name, as the plan was built with."""
    root = Path(root)
    records, missing, judge = [], [], None
    for job in jobs:
        if not job.finished:
            missing.append(job.name)
            continue
        record = json.loads(job.record.read_text())
        if job.variant == plan.JUDGE:
            judge = record
        else:
            records.append(record)
    cells = summary.aggregate(records)
    labels = {name: spec.label for name, spec in config.variants.items()}
    for k in config.queue_sizes:
        labels.setdefault(plan.ablation_variant(int(k)), f"HDGE, K = {int(k):,}")
    by_k = queue_cells(config, cells, plan.base_queue_size(config, experiments))
    figures = _figures(config, cells, by_k, jobs, root)
    report = {
        "variants": {
            v: {"label": labels.get(v, v), **{p: c.as_dict() for p, c in m.items()}}
            for v, m in cells.items()
        },
        "judge": judge,
        "claims": claims(config, cells, by_k),
        "targets": targets(config, cells),
        "queue_sizes": sorted(by_k),
        "missing_runs": missing,
        "figures": figures,
        "paper": PAPER,
    }
    (root / "report.json").write_text(json.dumps(report, indent=2))
    (root / "report.md").write_text(markdown(config, report, cells, labels, by_k))
    return report


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


def _figures(config, cells, by_k, jobs, root: Path) -> list[str]:
    names = []
    sets = ood_sets(cells)
    if len(by_k) >= 2 and sets:
        fig = new_figure(figsize=(6, 4))
        ax = fig.subplots()
        ks = sorted(by_k)
        for name in sets:
            path = f"auroc.log_px.{name}"
            points = [(k, by_k[k][path]) for k in ks if path in by_k[k]]
            ax.errorbar(
                [k for k, _ in points],
                [c.mean for _, c in points],
                yerr=[c.std for _, c in points],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queue size K")
        ax.set_ylabel("log p(x) AUROC (mean ± std over seeds)")
        ax.set_title("HDGE: OOD detection vs K (paper Table 3)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(root / "k_ablation.png", dpi=120)
        names.append("k_ablation.png")
    main = [v for v in config.variants if v in cells]
    if main and sets:
        fig = new_figure(figsize=(7, 4))
        ax = fig.subplots()
        width = 0.8 / len(main)
        for i, v in enumerate(main):
            values = [cells[v].get(f"auroc.log_px.{s}") for s in sets]
            ax.bar(
                [j + i * width for j in range(len(sets))],
                [c.mean if c else 0 for c in values],
                width,
                yerr=[c.std if c else 0 for c in values],
                capsize=2,
                label=config.variants[v].label,
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sets))], sets)
        ax.set_ylabel("log p(x) AUROC")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(root / "ood_auroc.png", dpi=120)
        names.append("ood_auroc.png")
    for job in jobs:  # the first seed's grids of each sampled variant
        if job.seed != 0 or not job.finished:
            continue
        for grid in sorted((job.workdir / "samples").glob("*.png")):
            name = f"samples_{job.variant}_{grid.name}"
            shutil.copyfile(grid, root / name)
            names.append(name)
    return names
