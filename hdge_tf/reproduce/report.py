"""report.md, report.json and figures of `hdge-reproduce`: each number beside the
paper's and a verdict per claim.

`build` reads the finished runs' records and writes the report under the
reproduction's directory: the claims and targets (claims.py), the Markdown
(report_markdown.py), the figures (figures.py) and copies of sample grids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hdge_tf.reproduce import plan, summary
from hdge_tf.reproduce.claims import PAPER, claims, queue_cells, targets
from hdge_tf.reproduce.experiments import ExperimentConfigs
from hdge_tf.reproduce.figures import draw_figures
from hdge_tf.reproduce.report_markdown import markdown


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
    figures = draw_figures(config, cells, by_k, root)
    figures += _copy_sample_grids(jobs, root)
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


def _copy_sample_grids(jobs: list[plan.Job], root: Path) -> list[str]:
    """Copies the first seed's sample grids of each sampled variant next to
    report.md, so the report shows them; returns their names."""
    names = []
    for job in jobs:
        if job.seed != 0 or not job.finished:
            continue
        for grid in sorted((job.workdir / "samples").glob("*.png")):
            name = f"samples_{job.variant}_{grid.name}"
            shutil.copyfile(grid, root / name)
            names.append(name)
    return names
