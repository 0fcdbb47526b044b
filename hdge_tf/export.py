"""SavedModel export of a trained energy classifier for serving.

Only the classifier (the backbone) is written: the logit queue, replay buffer and
optimizer are training state and stay behind. Reload with `tf.saved_model.load`, or
serve with TF Serving; `saved_model_cli show --all --dir DIR` lists the signatures.

With an `OODGate` (beyond the published code) a third signature, `gate`, flags
inputs as in-distribution when log p(x) >= a threshold chosen on held-out
validation images at a stated true-positive rate; the threshold is a constant of
the SavedModel and is also written to `assets.extra/gate.json`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import energy
from hdge_tf.model import HDGEClassifier

SIGNATURES = {
    "serving_default": ("logits", "probabilities"),
    "energy": ("log_px", "max_softmax"),
}
GATE_SIGNATURE = (
    "gate",
    ("logits", "probabilities", "log_px", "in_distribution", "threshold"),
)


@dataclasses.dataclass(frozen=True)
class OODGate:
    """Accepts an input as in-distribution when log p(x) >= `threshold`, the
    log p(x) that a fraction `tpr` of `num_validation` held-out images reach."""

    threshold: float
    tpr: float
    num_validation: int
    score: str = "log_px"
    inputs: str = "raw images, no test-time noise (as the signature receives them)"


def fit_gate(
    model: keras.Model, validation_images, tpr: float = 0.95, batch_size: int = 256
) -> OODGate:
    """The gate whose threshold is the (1 - tpr) quantile of log p(x) over
    `validation_images` (in-distribution images the model did not train on)."""
    logits = energy.predict_logits(model, validation_images, batch_size)
    threshold = threshold_at_tpr(energy.log_px(logits), tpr)
    return OODGate(threshold, float(tpr), len(validation_images))


def threshold_at_tpr(in_scores, tpr: float = 0.95) -> float:
    """The score above which a fraction `tpr` of `in_scores` lies: their (1 - tpr)
    quantile (linear interpolation), the threshold of an OOD gate that accepts
    score >= threshold."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"The gate's true-positive rate must be in (0, 1], got {tpr}.")
    scores = np.asarray(in_scores, np.float64).ravel()
    if not len(scores):
        raise ValueError("The gate's threshold needs in-distribution scores.")
    return float(np.quantile(scores, 1.0 - tpr))


def export_saved_model(
    model: keras.Model, export_dir: str | Path, gate: OODGate | None = None
) -> str:
    """Writes `model`'s classifier as a TF SavedModel in `export_dir`; returns it.

    `model` is an `HDGEClassifier` (only its `.backbone` is exported) or a bare
    backbone: a Keras model with one [N, H, W, C] image input and [N, classes]
    logits output.

    Every signature takes one input, `images`: float32 [batch, H, W, C] with a
    dynamic batch size and pixel values in [-1, 1] (x / 127.5 - 1 for uint8
    pixels), the range the model was trained on. Outputs, all float32 even when the
    model computes under a mixed-precision policy (`hdge_tf.energy`'s read-outs):

      serving_default:
        logits         [batch, classes]  f(x)[y], the negated energies E(x, y).
        probabilities  [batch, classes]  p(y|x), softmax of the logits.
      energy:
        log_px         [batch]  log p(x) up to a constant: logsumexp_y f(x)[y].
                                Higher means more in-distribution.
        max_softmax    [batch]  max_y p(y|x), the classifier's confidence.
      gate (only with `gate`):
        logits, probabilities, log_px  as above.
        in_distribution  [batch] bool  log_px >= threshold.
        threshold        [batch]  the gate's threshold, repeated per input.
    """
    backbone = model.backbone if isinstance(model, HDGEClassifier) else model
    image_shape = _image_shape(backbone)
    export_dir = str(export_dir)

    def serving_default(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `logits` [batch, classes] and `probabilities` = softmax of
        the logits, p(y|x), [batch, classes].
        """
        logits = energy.logits(backbone, images)
        return {"logits": logits, "probabilities": energy.probabilities(logits)}

    def energy_fn(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `log_px` [batch], logsumexp of the logits: the energy model's
        unnormalized log p(x), higher = more in-distribution; and `max_softmax`
        [batch], max_y p(y|x).
        """
        logits = energy.logits(backbone, images)
        return {
            "log_px": energy.log_px(logits),
            "max_softmax": energy.max_softmax(logits),
        }

    spec = tf.TensorSpec((None, *image_shape), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    # Tracking the backbone alone keeps the queue and optimizer out of the archive.
    archive.track(backbone)
    archive.add_endpoint("serving_default", serving_default, [spec])
    archive.add_endpoint("energy", energy_fn, [spec])
    if gate is not None:
        threshold = tf.constant(gate.threshold, tf.float32)

        def gate_fn(images):
            """images: float32 [batch, H, W, C] in [-1, 1]. Returns logits,
            probabilities, log_px, `in_distribution` = log_px >= threshold (bool),
            and the threshold (per input)."""
            logits = energy.logits(backbone, images)
            density = energy.log_px(logits)
            return {
                "logits": logits,
                "probabilities": energy.probabilities(logits),
                "log_px": density,
                "in_distribution": density >= threshold,
                "threshold": tf.fill(tf.shape(density), threshold),
            }

        archive.add_endpoint(GATE_SIGNATURE[0], gate_fn, [spec])
    archive.write_out(export_dir, verbose=False)
    if gate is not None:
        extra = Path(export_dir) / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "gate.json").write_text(json.dumps(dataclasses.asdict(gate), indent=2))
    return export_dir


def read_gate(export_dir: str | Path) -> OODGate | None:
    """The gate a SavedModel was exported with, or None."""
    path = Path(export_dir) / "assets.extra" / "gate.json"
    if not path.is_file():
        return None
    return OODGate(**json.loads(path.read_text()))


def describe_signatures(export_dir: str | Path) -> str:
    """One line per signature of a SavedModel: its inputs and outputs with shapes."""
    loaded = tf.saved_model.load(str(export_dir))
    lines = []
    for name, fn in loaded.signatures.items():
        _, inputs = fn.structured_input_signature
        outputs = fn.structured_outputs
        lines.append(f"{name}: {_specs(inputs)} -> {_specs(outputs)}")
    return "\n".join(lines)


def _specs(specs: dict[str, tf.TensorSpec]) -> str:
    return ", ".join(
        f"{key} {spec.dtype.name}{spec.shape.as_list()}"
        for key, spec in sorted(specs.items())
    )


def _image_shape(backbone) -> tuple:
    """(H, W, C) of a backbone's single 4D input; fails naming what is wrong."""
    expected = (
        "export_saved_model needs an HDGEClassifier or a Keras model (functional "
        "or Sequential) with one [N, H, W, C] image input and [N, classes] logits"
    )
    if not isinstance(backbone, keras.Model):
        raise TypeError(f"{expected}; got {type(backbone).__name__}.")
    try:
        inputs, outputs = backbone.inputs, backbone.outputs
    except AttributeError as err:
        raise ValueError(
            f"{expected}; {backbone.name!r} has no defined inputs (a subclassed or "
            "unbuilt model)."
        ) from err
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [tuple(x.shape) for x in inputs]
        raise ValueError(f"{expected}; {backbone.name!r} has inputs {shapes}.")
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        shapes = [tuple(x.shape) for x in outputs]
        raise ValueError(f"{expected}; {backbone.name!r} has outputs {shapes}.")
    return tuple(inputs[0].shape[1:])
