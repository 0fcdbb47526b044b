"""Reproduces the paper's experiment families at embedded scale, over seeds.

    hdge-reproduce --workdir=runs/reproduce [--seeds=5] [--parallel=2 --threads=1]
    hdge-reproduce --workdir=runs/reproduce --config.queue_sizes="(64, 1024, 65536)"
    hdge-reproduce --workdir=runs/reproduce --only=ce,hdge   # and what they need
    hdge-reproduce --workdir=runs/reproduce --report_only

Classification and OOD detection (CE, HDGE in both formulations, HDGE + JEM), the
queue-size ablation and generative quality, each variant at --seeds seeds
(configs/reproduce_mnist5k.py lists them). Every run has its own directory under
WORKDIR/runs and log under WORKDIR/logs; runs that finished are skipped, an
interrupted one resumes from its checkpoint. Writes WORKDIR/report.md, report.json
and the figures, with the paper's numbers and a verdict per claim.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

from hdge_tf import configs
from hdge_tf.bin import arguments, cli
from hdge_tf.reproduce import (
    ExperimentConfigs,
    build_plan,
    build_report,
    plan,
    run_jobs,
)

# The experiment configs the variants name: the ones shipped with the package.
EXPERIMENTS = ExperimentConfigs(Path(configs.__file__).parent)
# One run (train, evaluate, sample), with each job's flags after it.
JOB_PROGRAM = (sys.executable, "-m", "hdge_tf.bin.hdge_reproduce_job")

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_CONFIG = arguments.DEFINE_config_file(
    "config",
    str(EXPERIMENTS.file("reproduce_mnist5k")),
    "The reproduction's config (variants, seeds, queue sizes, sampling).",
    flag_values=FLAGS,
)
_WORKDIR = arguments.DEFINE_path(
    "workdir", None, "Where runs, logs and the report go.", flag_values=FLAGS
)
_SEEDS = flags.DEFINE_integer(
    "seeds",
    None,
    "Seeds per variant (default: the config's, 3).",
    lower_bound=1,
    flag_values=FLAGS,
)
_PARALLEL = flags.DEFINE_integer(
    "parallel",
    1,
    "Runs at once (each its own process).",
    lower_bound=1,
    flag_values=FLAGS,
)
_THREADS = flags.DEFINE_integer(
    "threads",
    0,
    "TF threads per run (0: TF's default, all cores).",
    lower_bound=0,
    flag_values=FLAGS,
)
_ONLY = flags.DEFINE_list(
    "only",
    None,
    "Run only these variants (e.g. ce,hdge; 'ablation' = the queue-size runs) and "
    "the runs they need; the report covers every finished run.",
    flag_values=FLAGS,
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only",
    False,
    "Only rebuild the report from finished runs.",
    flag_values=FLAGS,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, root = _CONFIG.value, Path(_WORKDIR.value)
    plan.check_config(config)
    jobs = build_plan(config, root, EXPERIMENTS, JOB_PROGRAM, _SEEDS.value)
    chosen = plan.select(jobs, _ONLY.value)
    if not _REPORT_ONLY.value:
        plan.check_runs(chosen)  # every run's config, before any starts
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"The workdir {root} is a file; pass a directory.")
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(config.to_json_best_effort(indent=2))
    status = {}
    if not _REPORT_ONLY.value:
        logging.info("%d runs; logs in %s", len(jobs), root / "logs")
        status = run_jobs(chosen, _PARALLEL.value, _THREADS.value)
    report = build_report(config, jobs, root, EXPERIMENTS)
    print(f"Wrote {root / 'report.md'}")
    failed = [name for name, s in status.items() if s not in ("done", "cached")]
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) did not finish: {', '.join(failed)}; the report "
            f"covers the rest ({len(report['missing_runs'])} missing). Their logs are "
            f"in {root / 'logs'}; run the same command again to retry them."
        )


PROGRAM = cli.Program("hdge-reproduce", main, FLAGS, required=("workdir",))


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
