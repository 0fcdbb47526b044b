"""Trains an energy classifier with HDGE from an ml_collections config.

    hdge-train --config=configs/mnist5k_hdge.py --workdir=/tmp/hdge/demo \
        [--config.train.epochs=3 ...]

Re-running with the same --workdir resumes from its last checkpoint; config values
that differ from the run's config.json are named in a warning, or are an error for
those that change the model (hdge_tf.resume_check.check_resume). The run directory's
layout is described in hdge_tf/run_dir.py.

The console shows the run's start, one line per epoch and the test metrics
(`hdge_tf.progress`); `--verbosity=1` adds the INFO logs (checkpoints, the saver)
and TensorFlow's start-up notices.
"""

import re

import tensorflow as tf
from absl import app, flags

from hdge_tf import progress, training
from hdge_tf.bin import arguments, cli
from hdge_tf.config_checks import check_config
from hdge_tf.run_dir import RunDir

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_CONFIG = arguments.DEFINE_config_file(
    "config", None, "Experiment config file.", flag_values=FLAGS
)
_WORKDIR = arguments.DEFINE_path(
    "workdir",
    None,
    "Directory for checkpoints and outputs.",
    flag_values=FLAGS,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_info_logs()
    config, run = _CONFIG.value, RunDir(_WORKDIR.value)
    check_config(config)  # before the start line; train() checks it again
    print(progress.start_line(config, run.path, _epochs_done(run)), flush=True)
    metrics = training.train(config, run.path, callbacks=[progress.EpochLog()])
    print("\n".join(progress.final_lines(metrics, run.path)), flush=True)


def _epochs_done(run: RunDir) -> int:
    """The epoch of the run's newest checkpoint (ckpt-N after epoch N), 0 if none."""
    if not run.has_checkpoint():
        return 0
    latest = tf.train.latest_checkpoint(str(run.checkpoint_dir)) or ""
    match = re.search(r"ckpt-(\d+)$", latest)
    return int(match.group(1)) if match else 0


PROGRAM = cli.Program("hdge-train", main, FLAGS, required=("config", "workdir"))


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
