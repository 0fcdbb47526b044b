"""Draws SGLD samples from a trained energy classifier and saves them as a grid.

    hdge-sample --workdir=/tmp/hdge/mnist5k_jem [--steps=200 --num=10]
    hdge-sample --workdir=/tmp/hdge/mnist5k_hdge --mode=unconditional --start=fresh
    hdge-sample --model=path/model.keras --output_dir=/tmp/samples --seed=1

The model is RUN/model.keras (or --model). Conditional mode samples p(x|y), --num
per class, one grid row per class; unconditional mode samples p(x), --num in all.
Chains start from the model's replay buffer when it has one (runs trained with
loss.px_sgld_weight or loss.pxy_sgld_weight > 0), else from uniform noise; --start
overrides ("gaussian": the class Gaussians of runs with
loss.sgld_start=class_gaussian). Step size, noise and clipping to [-1, 1] default
to the run's SGLD settings; the grid's title names the start and the steps. Writes, to
RUN/samples/ (or --output_dir), MODE_START.png, MODE_START.npy (raw float32 samples,
unclipped) and for conditional mode MODE_START_labels.npy; see
hdge_tf.generation.draw_samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import app, flags, logging

from hdge_tf import generation, plots
from hdge_tf.bin import arguments, cli
from hdge_tf.run_dir import load_model, run_paths

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_WORKDIR = arguments.DEFINE_path(
    "workdir", None, "Run directory holding model.keras.", flag_values=FLAGS
)
_MODEL = arguments.DEFINE_path(
    "model",
    None,
    "A .keras file to sample from instead of WORKDIR/model.keras.",
    flag_values=FLAGS,
)
_OUTPUT_DIR = arguments.DEFINE_path(
    "output_dir",
    None,
    "Where the files go; default WORKDIR/samples (or MODEL's dir).",
    flag_values=FLAGS,
)
_MODE = flags.DEFINE_enum(
    "mode",
    "conditional",
    ["conditional", "unconditional"],
    "p(x|y) or p(x).",
    flag_values=FLAGS,
)
_NUM = flags.DEFINE_integer(
    "num",
    None,
    "Samples per class (conditional, default 10) or in all (unconditional, 64).",
    lower_bound=1,
    flag_values=FLAGS,
)
_STEPS = flags.DEFINE_integer(
    "steps", 100, "SGLD steps per chain.", lower_bound=0, flag_values=FLAGS
)
_START = flags.DEFINE_enum(
    "start",
    None,
    list(generation.STARTS),
    "Chain starts; default buffer when the model has a replay buffer, else fresh.",
    flag_values=FLAGS,
)
_STEP_SIZE = flags.DEFINE_float(
    "step_size",
    None,
    "SGLD step size; default the model's sgld.step_size (or 1).",
    lower_bound=0.0,
    flag_values=FLAGS,
)
_NOISE_STD = flags.DEFINE_float(
    "noise_std",
    None,
    "SGLD noise std; default the model's sgld.noise_std (or 0.01).",
    lower_bound=0.0,
    flag_values=FLAGS,
)
_CLIP = flags.DEFINE_bool(
    "clip",
    None,
    "Clip every step to [-1, 1]; default the model's sgld.clip.",
    flag_values=FLAGS,
)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the starts and the chains' noise.", flag_values=FLAGS
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    256,
    "Chains run at once.",
    lower_bound=1,
    flag_values=FLAGS,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir, model_path = run_paths(_WORKDIR.value, _MODEL.value)
    output_dir = Path(_OUTPUT_DIR.value or run_dir.samples_dir)
    model = load_model(model_path)
    mode = _MODE.value
    conditional = mode == "conditional"
    start = _START.value or generation.default_start(model)
    num = _NUM.value or (10 if conditional else 64)
    logging.info(
        "Sampling %s (%s, from %s) into %s.", model_path, mode, start, output_dir
    )
    samples, labels = generation.draw_samples(
        model,
        num,
        conditional,
        _STEPS.value,
        start,
        step_size=_STEP_SIZE.value,
        noise_std=_NOISE_STD.value,
        batch_size=_BATCH_SIZE.value,
        seed=_SEED.value,
        clip=_CLIP.value,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    stem = output_dir / f"{mode}_{start}"
    paths = [stem.with_suffix(".png"), stem.with_suffix(".npy")]
    np.save(paths[1], samples)
    if conditional:
        paths.append(output_dir / f"{stem.name}_labels.npy")
        np.save(paths[2], labels)
    plots.plot_image_grid(
        samples,
        paths[0],
        row_labels=[f"class {c}" for c in np.unique(labels)] if conditional else None,
        title=f"{mode} samples: {_STEPS.value} SGLD steps from {start}",
    )
    for path in paths:
        print(path)


PROGRAM = cli.Program("hdge-sample", main, FLAGS)


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
