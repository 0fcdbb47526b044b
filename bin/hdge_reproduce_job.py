"""One run of `hdge-reproduce` (`hdge_tf.reproduce.job.run_job`), as the command
line the plan gives each job, so a run can be repeated by hand:

    python -m hdge_tf.bin.hdge_reproduce_job --config=configs/mnist5k_hdge.py \
        --workdir=runs/reproduce/runs/hdge/seed0 --variant=hdge \
        [--samples --judge=runs/reproduce/runs/judge] [--config.seed=0 ...]
"""

from __future__ import annotations

from absl import app, flags

from hdge_tf.bin import arguments, cli
from hdge_tf.reproduce import job

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_CONFIG = arguments.DEFINE_config_file(
    "config", None, "Experiment config file.", flag_values=FLAGS
)
_WORKDIR = arguments.DEFINE_path(
    "workdir", None, "The run's directory.", flag_values=FLAGS
)
_VARIANT = flags.DEFINE_string(
    "variant", None, "The variant's name in the plan.", flag_values=FLAGS
)
_ROLE = flags.DEFINE_enum(
    "role", "run", list(job.ROLES), "A variant or the judge.", flag_values=FLAGS
)
_SAMPLES = flags.DEFINE_bool(
    "samples", False, "Draw and score sample grids.", flag_values=FLAGS
)
_JUDGE = arguments.DEFINE_path(
    "judge", None, "The judge's run directory.", flag_values=FLAGS
)
_SAMPLING = flags.DEFINE_string(
    "sampling",
    job.DEFAULT_SAMPLING,
    "Sample counts, SGLD steps and seed, as k=v pairs.",
    flag_values=FLAGS,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _SAMPLES.value and not _JUDGE.value:
        raise app.UsageError("--samples needs --judge=JUDGE_RUN_DIR.")
    job.run_job(
        _CONFIG.value,
        _WORKDIR.value,
        _VARIANT.value,
        role=_ROLE.value,
        sampling=job.parse_sampling(_SAMPLING.value),
        judge_dir=_JUDGE.value if _SAMPLES.value else None,
    )


PROGRAM = cli.Program(
    "hdge-reproduce job", main, FLAGS, required=("config", "workdir", "variant")
)


def run(argv: list[str] | None = None) -> None:
    """The program; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
