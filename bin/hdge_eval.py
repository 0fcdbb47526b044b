"""Evaluates a trained run: classification, calibration, OOD detection, robustness.

    hdge-eval --workdir=/tmp/hdge/mnist5k_hdge \
        [--config.eval.ood_sets="('digits', 'interp')" --config.eval.pgd.steps=20 ...]
    hdge-eval --model=path/model.keras --output_dir=/tmp/eval [--config.data.name=...]

The model is RUN/model.keras (or --model). The data and eval settings are the run's
config.json, on top of the defaults of --config (configs/base.py unless given; pass
the run's experiment file, e.g. --config=configs/mnist5k_hdge.py, for runs whose
config.json predates an eval option), with any --config.* flags given on the command
line applied last (hdge_tf.run_config.load_run_config). Writes report.json, report.md
and figures to RUN/eval/ (or --output_dir); see hdge_tf.evaluation.report.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging

from hdge_tf.bin import arguments, cli
from hdge_tf.config_checks import check_config
from hdge_tf.configs import base
from hdge_tf.evaluation import report
from hdge_tf.run_config import load_run_config
from hdge_tf.run_dir import load_model, run_paths

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_CONFIG = arguments.DEFINE_config_file(
    "config",
    str(Path(base.__file__)),
    "Config file with defaults for fields the run's config.json lacks; "
    "--config.eval.* (etc.) flags override the run's values.",
    flag_values=FLAGS,
)
_WORKDIR = arguments.DEFINE_path(
    "workdir",
    None,
    "Run directory holding config.json and model.keras.",
    flag_values=FLAGS,
)
_MODEL = arguments.DEFINE_path(
    "model",
    None,
    "A .keras file to evaluate instead of WORKDIR/model.keras.",
    flag_values=FLAGS,
)
_OUTPUT_DIR = arguments.DEFINE_path(
    "output_dir",
    None,
    "Where the report goes; default WORKDIR/eval.",
    flag_values=FLAGS,
)
# The config sections the evaluation reads.
SECTIONS = ("data", "eval")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir, model_path = run_paths(_WORKDIR.value, _MODEL.value)
    # The flag's value already holds the overrides; they are applied again last so
    # that they also win over the run's config.json.
    overrides = _CONFIG.overrides
    config = load_run_config(run_dir, _CONFIG.value, overrides)
    # What it reads, and any value given on the command line, before any work.
    check_config(config, {*SECTIONS, *(key.split(".")[0] for key in overrides)})
    model = load_model(model_path)
    output_dir = Path(_OUTPUT_DIR.value or run_dir.eval_dir)
    logging.info("Evaluating %s into %s.", model_path, output_dir)
    result = report.run_evaluation(model, config, output_dir)
    print(f"Report: {output_dir / report.REPORT_MD} ({result['seconds']['total']}s)")


PROGRAM = cli.Program("hdge-eval", main, FLAGS)


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
