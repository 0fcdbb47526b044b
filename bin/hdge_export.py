"""Exports a trained energy classifier as a TF SavedModel for serving.

    hdge-export --workdir=/tmp/hdge/demo [--model=path.keras] [--output=DIR]

Reads `WORKDIR/model.keras` (written by `hdge-train`) unless --model is given and
writes `WORKDIR/export/saved_model` unless --output is given. The signatures
(`serving_default`, `energy`) are documented in `hdge_tf.export.export_saved_model`.
"""

from pathlib import Path

import keras
from absl import app, flags, logging

import hdge_tf  # noqa: F401  (registers the custom classes for load_model)
from hdge_tf import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.")
_MODEL = flags.DEFINE_string(
    "model", None, "The .keras model to export; default WORKDIR/model.keras."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "SavedModel directory; default WORKDIR/export/saved_model."
)
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = Path(_WORKDIR.value)
    model_path = Path(_MODEL.value or workdir / "model.keras")
    output = Path(_OUTPUT.value or workdir / "export" / "saved_model")
    if not model_path.is_file():
        raise app.UsageError(f"No model file {model_path}; train first or --model.")
    # The optimizer is not exported, so there is no need to rebuild it.
    model = keras.saving.load_model(model_path, compile=False)
    export.export_saved_model(model, output)
    logging.info(
        "Exported %s to %s with signatures:\n%s",
        model_path,
        output,
        export.describe_signatures(output),
    )


def run():
    app.run(main)


if __name__ == "__main__":
    run()
