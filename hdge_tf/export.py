"""SavedModel export of a trained energy classifier for serving.

Only the classifier (the backbone) is written: the logit queue, replay buffer and
optimizer are training state and stay behind. Reload with `tf.saved_model.load`, or
serve with TF Serving; `saved_model_cli show --all --dir DIR` lists the signatures.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from hdge_tf.evaluation import ood
from hdge_tf.model import HDGEClassifier

SIGNATURES = {
    "serving_default": ("logits", "probabilities"),
    "energy": ("log_px", "max_softmax"),
}


def export_saved_model(model: keras.Model, export_dir: str | Path) -> str:
    """Writes `model`'s classifier as a TF SavedModel in `export_dir`; returns it.

    `model` is an `HDGEClassifier` (only its `.backbone` is exported) or a bare
    backbone: a Keras model with one [N, H, W, C] image input and [N, classes]
    logits output.

    Every signature takes one input, `images`: float32 [batch, H, W, C] with a
    dynamic batch size and pixel values in [-1, 1] (x / 127.5 - 1 for uint8
    pixels), the range the model was trained on. Outputs, all float32 even when the
    model computes under a mixed-precision policy:

      serving_default:
        logits         [batch, classes]  f(x)[y], the negated energies E(x, y).
        probabilities  [batch, classes]  p(y|x), softmax of the logits.
      energy:
        log_px         [batch]  log p(x) up to a constant: logsumexp_y f(x)[y].
                                Higher means more in-distribution.
        max_softmax    [batch]  max_y p(y|x), the classifier's confidence.
    """
    backbone = model.backbone if isinstance(model, HDGEClassifier) else model
    image_shape = _image_shape(backbone)
    export_dir = str(export_dir)

    def logits_fn(images):
        # Scores are computed from float32 logits: a bfloat16 logsumexp/softmax
        # would lose the small differences in log p(x) that OOD detection uses.
        return tf.cast(backbone(images, training=False), tf.float32)

    def serving_default(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `logits` [batch, classes] and `probabilities` = softmax of
        the logits, p(y|x), [batch, classes].
        """
        logits = logits_fn(images)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def energy(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `log_px` [batch], logsumexp of the logits: the energy model's
        unnormalized log p(x), higher = more in-distribution; and `max_softmax`
        [batch], max_y p(y|x).
        """
        logits = logits_fn(images)
        return {"log_px": ood.log_px(logits), "max_softmax": ood.max_softmax(logits)}

    spec = tf.TensorSpec((None, *image_shape), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    # Tracking the backbone alone keeps the queue and optimizer out of the archive.
    archive.track(backbone)
    archive.add_endpoint("serving_default", serving_default, [spec])
    archive.add_endpoint("energy", energy, [spec])
    archive.write_out(export_dir, verbose=False)
    return export_dir


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
