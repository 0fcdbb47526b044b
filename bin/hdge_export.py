"""Exports a trained energy classifier as a TF SavedModel for serving.

    hdge-export --workdir=/tmp/hdge/demo [--model=path.keras] [--output=DIR]
    hdge-export --model=path/model.keras --config=configs/mnist5k_hdge.py

Reads `WORKDIR/model.keras` (written by `hdge-train`), or --model, and writes
`export/saved_model` beside it (the run directory, or the model file's directory)
unless --output is given. The signatures (`serving_default`, `energy`, and `gate`)
are documented in `hdge_tf.export.export_saved_model`. The `gate` signature's
log p(x) threshold is chosen at --gate_tpr on the validation split of the run's
config.json (its data.validation_size) or, for a model without one, of the config
file --config names (with any --config.data.* overrides); a model with neither, or
a config without a validation split, is exported without it.
"""

from pathlib import Path

from absl import app, flags, logging

from hdge_tf import data, export
from hdge_tf.bin import arguments, cli
from hdge_tf.config_checks import check_config
from hdge_tf.configs import base
from hdge_tf.run_config import resolve_config
from hdge_tf.run_dir import RunDir, load_model, run_paths

# This program's flags (absl's own are added when it parses, bin/cli.py).
FLAGS = flags.FlagValues()
_WORKDIR = arguments.DEFINE_path(
    "workdir", None, "Training run directory.", flag_values=FLAGS
)
_MODEL = arguments.DEFINE_path(
    "model",
    None,
    "The .keras model to export; default WORKDIR/model.keras.",
    flag_values=FLAGS,
)
_OUTPUT = arguments.DEFINE_path(
    "output",
    None,
    "SavedModel directory; default export/saved_model in the run directory (or "
    "the model file's directory).",
    flag_values=FLAGS,
)
_CONFIG = arguments.DEFINE_config_file(
    "config",
    None,
    "Config file whose data section names the validation split the OOD gate is "
    "set on, for a model without a run's config.json (e.g. the experiment file it "
    "was trained with); a run's config.json takes precedence over it.",
    flag_values=FLAGS,
)
_GATE_TPR = flags.DEFINE_float(
    "gate_tpr",
    0.95,
    "True-positive rate on the validation split at which the OOD gate's log p(x) "
    "threshold is set; 0 exports no gate.",
    lower_bound=0.0,
    upper_bound=1.0,
    flag_values=FLAGS,
)
# The config section the export reads: the gate's validation split.
SECTIONS = ("data",)


def _gate_config(run: RunDir):
    """The config whose validation split sets the gate: the run's config.json over
    --config's (or the defaults), with the --config.* overrides, checked; None when
    there is neither a config.json nor a --config."""
    run_config = run.read_config()
    if run_config is None and _CONFIG.value is None:
        return None
    overrides = _CONFIG.overrides
    defaults = base.get_config() if _CONFIG.value is None else _CONFIG.value
    config = resolve_config(defaults, run_config, overrides)
    check_config(config, {*SECTIONS, *(key.split(".")[0] for key in overrides)})
    return config


def _validation_images(config):
    """The config's held-out validation images, or None (with the reason logged)."""
    validation = data.load_validation_arrays(config.data)
    if validation is None:
        logging.warning(
            "The config has no validation split (data.validation_size=0): exporting "
            "without an OOD gate, whose threshold is set on held-out images."
        )
        return None
    return validation[0]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir, model_path = run_paths(_WORKDIR.value, _MODEL.value)
    output = Path(_OUTPUT.value or run_dir.saved_model_dir)
    config = _gate_config(run_dir)  # checked before any work, gate or not
    if config is None and _GATE_TPR.value:
        logging.warning(
            "No %s and no --config: exporting without an OOD gate; pass "
            "--config=FILE (the model's experiment config) to set it on that "
            "config's validation split.",
            run_dir.config_file,
        )
    # The optimizer is not exported, so there is no need to rebuild it.
    model = load_model(model_path)
    gate = None
    images = None
    if config is not None and _GATE_TPR.value:
        images = _validation_images(config)
    if images is not None:
        gate = export.fit_gate(model, images, _GATE_TPR.value)
        logging.info(
            "OOD gate: log p(x) >= %.4f keeps %.0f%% of %d validation images.",
            gate.threshold,
            100 * gate.tpr,
            gate.num_validation,
        )
    export.export_saved_model(model, output, gate)
    logging.info(
        "Exported %s to %s with signatures:\n%s",
        model_path,
        output,
        export.describe_signatures(output),
    )


PROGRAM = cli.Program("hdge-export", main, FLAGS)


def run(argv: list[str] | None = None) -> None:
    """The console script; `argv` (the program first) defaults to sys.argv."""
    PROGRAM.run(argv)


if __name__ == "__main__":
    run()
