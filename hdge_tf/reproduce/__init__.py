"""hdge-reproduce: the paper's experiment families over seeds, with error bars.

plan.py says what runs (one job per variant and seed, plus the judge), job.py is
one run (train, evaluate, sample), scheduler.py runs the jobs, summary.py turns
seeds into means, spreads and verdicts, claims.py holds the paper's claims and the
HDGE + JEM targets with their verdicts, and report.py writes report.json, report.md
(report_markdown.py) and the figures (figures.py).
experiments.py reads the experiment config files the variants name, from the
directory the caller passes (hdge-reproduce: the configs it ships).
"""

from hdge_tf.reproduce.experiments import ExperimentConfigs
from hdge_tf.reproduce.plan import Job, build_plan
from hdge_tf.reproduce.report import build as build_report
from hdge_tf.reproduce.scheduler import run_jobs

__all__ = ["ExperimentConfigs", "Job", "build_plan", "build_report", "run_jobs"]
