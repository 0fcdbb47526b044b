"""Trains an energy classifier with HDGE from an ml_collections config.

    hdge-train --config=configs/mnist5k_hdge.py --workdir=/tmp/hdge/demo \
        [--config.train.epochs=3 ...]

Re-running with the same --workdir resumes from its last checkpoint; config values
that differ from the run's config.json are named in a warning, or are an error for
those that change the model (hdge_tf.workdir.check_resume). The run directory's
layout is described in hdge_tf/workdir.py.
"""

from absl import app, flags
from ml_collections import config_flags

from hdge_tf import training
from hdge_tf.bin import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints and outputs."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    training.train(_CONFIG.value, _WORKDIR.value)


def run():
    cli.run(main, "hdge-train")


if __name__ == "__main__":
    run()
