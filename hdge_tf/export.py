"""SavedModel export of a trained energy classifier for serving.

Only the classifier (the backbone) is written: the logit queue, replay buffer and
optimizer are training state and stay behind. Reload with `tf.saved_model.load`, or
serve with TF Serving; `saved_model_cli show --all --dir DIR` lists the signatures.

With an `OODGate` (beyond the published code) a third signature, `gate`, calls an
input in-distribution only when all of these hold, and says which failed in its
`reason` output:

  finite               every pixel is finite ("non_finite_input"; a NaN pixel
                       makes log p(x) NaN or +inf, which no threshold rejects)
  in the data range    every pixel within `input_range` (-1, 1) widened by
                       `range_tolerance` ("outside_data_range": e.g. 0..255 pixels)
  not flat             its pixels spread over more than `flat_tolerance`
                       ("flat_input": a blank or one-colour image shows nothing to
                       classify, though a digit model's density may rate an
                       all-background image highly)
  log p(x) >= threshold  the log p(x) that a fraction `tpr` of held-out
                       validation images reach ("log_px_below_threshold")
  log p(x) <= upper_threshold  the `upper_quantile` (99.5%) of the validation
                       log p(x): inputs scored above nearly all real images are
                       not typical of them ("log_px_above_validation_range"); it
                       costs at most 0.5 point of validation TPR.

The thresholds are constants of the SavedModel and are also written to
`assets.extra/gate.json`. Every signature checks that its images are
[batch, H, W, C] of the model's H, W and C, and fails naming the expected shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import energy, input_checks
from hdge_tf.model import HDGEClassifier

SIGNATURES = {
    "serving_default": ("logits", "probabilities"),
    "energy": ("log_px", "max_softmax"),
}
GATE_SIGNATURE = (
    "gate",
    (
        "logits",
        "probabilities",
        "log_px",
        "in_distribution",
        "reason",
        "threshold",
        "upper_threshold",
    ),
)
# The `reason` output of the gate, in the order the checks apply.
REASONS = (
    "non_finite_input",
    "outside_data_range",
    "flat_input",
    "log_px_above_validation_range",
    "log_px_below_threshold",
    "in_distribution",
)
# The validation quantile of log p(x) above which the gate rejects.
UPPER_QUANTILE = 0.995
# The smallest pixel spread (max - min) of an input not called flat: 1% of the
# input range, about 2.5 of 255 grey levels; no photograph or digit is flatter.
FLAT_TOLERANCE = 0.02


@dataclasses.dataclass(frozen=True)
class OODGate:
    """Accepts an input as in-distribution when its pixels are finite and within
    `input_range` +- `range_tolerance`, and `threshold` <= log p(x) <=
    `upper_threshold`: the log p(x) that a fraction `tpr`, and the `upper_quantile`
    of `num_validation` held-out images reach (module docstring)."""

    threshold: float
    tpr: float
    num_validation: int
    score: str = "log_px"
    inputs: str = "raw images, no test-time noise (as the signature receives them)"
    # Defaults of a gate.json written before these checks: no upper bound.
    upper_threshold: float = math.inf
    upper_quantile: float = 1.0
    input_range: tuple[float, float] = (-1.0, 1.0)
    # Pixels of images converted from uint8 are within the range exactly; the
    # tolerance admits resampling overshoot and mild noise, not 0..255 pixels.
    range_tolerance: float = 0.1
    # 0 (no flatness check) in a gate.json written before the check.
    flat_tolerance: float = 0.0


def gate_decision(gate: OODGate, images, log_px) -> tuple[tf.Tensor, tf.Tensor]:
    """(in_distribution [batch] bool, reason [batch] string, one of `REASONS`) of
    float32 `images` [batch, H, W, C] with their `log_px` [batch]: the one
    implementation the exported signature and the evaluation report share."""
    images = tf.convert_to_tensor(images, tf.float32)
    log_px = tf.convert_to_tensor(log_px, tf.float32)
    low = gate.input_range[0] - gate.range_tolerance
    high = gate.input_range[1] + gate.range_tolerance
    pixels = tf.reshape(images, (tf.shape(images)[0], -1))
    finite = tf.reduce_all(tf.math.is_finite(pixels), axis=-1)
    in_range = tf.reduce_all((pixels >= low) & (pixels <= high), axis=-1)
    spread = tf.reduce_max(pixels, axis=-1) - tf.reduce_min(pixels, axis=-1)
    flat = spread < tf.constant(gate.flat_tolerance, tf.float32)
    too_high = log_px > tf.constant(gate.upper_threshold, tf.float32)
    # NaN compares False: a NaN log p(x) is below the threshold, not accepted.
    high_enough = log_px >= tf.constant(gate.threshold, tf.float32)
    failed = [~finite, ~in_range, flat, too_high, ~high_enough]
    reason = tf.fill(tf.shape(log_px), REASONS[-1])
    for fails, name in reversed(list(zip(failed, REASONS[:-1], strict=True))):
        reason = tf.where(fails, name, reason)
    return reason == REASONS[-1], reason


def fit_gate(
    model: keras.Model, validation_images, tpr: float = 0.95, batch_size: int = 256
) -> OODGate:
    """The gate whose threshold is the (1 - tpr) quantile of log p(x) over
    `validation_images` (in-distribution images the model did not train on), and
    whose upper threshold is their `UPPER_QUANTILE`."""
    input_checks.check_image_shape(
        np.shape(validation_images),
        input_checks.model_image_shape(model),
        "The validation images",
    )
    logits = energy.predict_logits(model, validation_images, batch_size)
    scores = np.asarray(energy.log_px(logits), np.float64)
    threshold = threshold_at_tpr(scores, tpr)
    return OODGate(
        threshold,
        float(tpr),
        len(validation_images),
        upper_threshold=float(np.quantile(scores, UPPER_QUANTILE)),
        upper_quantile=UPPER_QUANTILE,
        flat_tolerance=FLAT_TOLERANCE,
    )


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
        in_distribution  [batch] bool  every check of `gate_decision` passed.
        reason           [batch] string  the first check that failed (`REASONS`),
                                 "in_distribution" when none did.
        threshold, upper_threshold  [batch]  the gate's log p(x) bounds, repeated.

    Images of another height, width or channel count fail with an error naming
    the expected shape (a signature call does not check its input's shape).
    """
    if isinstance(model, HDGEClassifier):
        # Its image shape, also for a subclassed backbone without defined inputs.
        backbone, image_shape = model.backbone, model.image_shape
    else:
        backbone, image_shape = model, _image_shape(model)
    export_dir = str(export_dir)

    def logits_of(images):
        return energy.logits(backbone, _check_shape(images, image_shape))

    def serving_default(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `logits` [batch, classes] and `probabilities` = softmax of
        the logits, p(y|x), [batch, classes].
        """
        logits = logits_of(images)
        return {"logits": logits, "probabilities": energy.probabilities(logits)}

    def energy_fn(images):
        """images: float32 [batch, H, W, C] in [-1, 1] (uint8 pixels: x / 127.5 - 1).

        Returns float32 `log_px` [batch], logsumexp of the logits: the energy model's
        unnormalized log p(x), higher = more in-distribution; and `max_softmax`
        [batch], max_y p(y|x).
        """
        logits = logits_of(images)
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

        def gate_fn(images):
            """images: float32 [batch, H, W, C] in [-1, 1]. Returns logits,
            probabilities, log_px, `in_distribution` (bool), its `reason`, and the
            log p(x) bounds (per input); see `gate_decision`."""
            logits = logits_of(images)
            density = energy.log_px(logits)
            accepted, reason = gate_decision(gate, images, density)
            return {
                "logits": logits,
                "probabilities": energy.probabilities(logits),
                "log_px": density,
                "in_distribution": accepted,
                "reason": reason,
                "threshold": tf.fill(tf.shape(density), float(gate.threshold)),
                "upper_threshold": tf.fill(
                    tf.shape(density), float(gate.upper_threshold)
                ),
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
    fields = json.loads(path.read_text())
    if "input_range" in fields:
        fields["input_range"] = tuple(fields["input_range"])
    return OODGate(**fields)


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


def _check_shape(images, image_shape) -> tf.Tensor:
    """`images` once their [batch, H, W, C] is checked against `image_shape` (None
    for a free axis) at run time: a signature's input spec is not enforced on its
    callers. The error names the expected and the received shape."""
    expected = ", ".join("any" if d is None else str(int(d)) for d in image_shape)
    axes = [axis for axis, d in enumerate(image_shape, start=1) if d is not None]
    want = tf.constant([int(image_shape[a - 1]) for a in axes], tf.int32)
    shape = tf.shape(images, out_type=tf.int32)
    # The shape padded with zeros, as its length (the rank) is known only at run
    # time: a batch without the channel axis must fail this check, not a gather
    # of an axis it lacks. Rank 4: axes 1-3 present (> 0), no axis 4 (zero).
    padded = tf.concat([shape, tf.zeros([5], tf.int32)], 0)
    fits = (
        tf.reduce_all(padded[1:4] > 0)
        & tf.equal(padded[4], 0)
        & tf.reduce_all(tf.equal(tf.gather(padded, axes), want))
    )
    check = tf.debugging.Assert(
        fits,
        [
            f"images must have shape [batch, {expected}] (height, width, channels) "
            "for this model; received shape",
            shape,
        ],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


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
