"""Exports a trained energy classifier as a TF SavedModel for serving.

    hdge-export --workdir=/tmp/hdge/demo [--model=path.keras] [--output=DIR]

Reads `WORKDIR/model.keras` (written by `hdge-train`) unless --model is given and
writes `WORKDIR/export/saved_model` unless --output is given. The signatures
(`serving_default`, `energy`, and `gate`) are documented in
`hdge_tf.export.export_saved_model`. The `gate` signature's log p(x) threshold is
chosen on the run's validation split (its config.json's data.validation_size) at
--gate_tpr; runs without a validation split are exported without it.
"""

from pathlib import Path

from absl import app, flags, logging

from hdge_tf import data, export
from hdge_tf.bin import cli
from hdge_tf.configs import base
from hdge_tf.run_config import resolve_config
from hdge_tf.run_dir import RunDir, load_model, run_paths

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.")
_MODEL = flags.DEFINE_string(
    "model", None, "The .keras model to export; default WORKDIR/model.keras."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "SavedModel directory; default WORKDIR/export/saved_model."
)
_GATE_TPR = flags.DEFINE_float(
    "gate_tpr",
    0.95,
    "True-positive rate on the validation split at which the OOD gate's log p(x) "
    "threshold is set; 0 exports no gate.",
)
flags.mark_flag_as_required("workdir")


def _validation_images(run: RunDir):
    """The run's held-out validation images, or None (with the reason logged)."""
    run_config = run.read_config()
    if run_config is None:
        logging.warning("No %s: exporting without an OOD gate.", run.config_file)
        return None
    validation = data.load_validation_arrays(
        resolve_config(base.get_config(), run_config).data
    )
    if validation is None:
        logging.warning(
            "The run has no validation split (data.validation_size=0): exporting "
            "without an OOD gate, whose threshold is set on held-out images."
        )
        return None
    return validation[0]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_dir, model_path = run_paths(_WORKDIR.value, _MODEL.value)
    output = Path(_OUTPUT.value or run_dir.saved_model_dir)
    # The optimizer is not exported, so there is no need to rebuild it.
    model = load_model(model_path)
    gate = None
    if _GATE_TPR.value:
        images = _validation_images(run_dir)
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


def run():
    cli.run(main, "hdge-export")


if __name__ == "__main__":
    run()
