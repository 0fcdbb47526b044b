"""Checks of the images a model meets, and of the batches an `HDGEClassifier`
trains and evaluates on.

A batch is (images, labels), or for semi-supervised training
({"images": labeled images, "unlabeled": images}, labels). Every check fails with a
message naming the problem and, where there is one, the fix; the checks that can only
run on values (NaN, label range, a dynamic image size) run inside the compiled step
and hold back everything downstream of a failing batch.

Wherever a model meets images outside a training step (evaluation, the export's
gate, sampling, `predict`), `check_image_shape` compares their shape with the
model's before anything is computed, so a mismatch is one line naming both shapes
rather than an error from inside a traced graph. `warn_if_outside_range` looks at
the first batch `fit`/`evaluate` get, once per call, for images that are not in
the [-1, 1] every part of the model assumes (0..255 pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

_AXES = ("height", "width", "channels")
# The range images are expected in, and how far outside it the range check lets
# a first batch go (resampling overshoot, mild noise) before it warns.
IMAGE_RANGE = (-1.0, 1.0)
RANGE_TOLERANCE = 0.1


def model_image_shape(model) -> tuple[int | None, ...] | None:
    """(H, W, C) of the images `model` takes (None for a free axis), or None for a
    model that does not say (a subclassed model never built)."""
    shape = getattr(model, "image_shape", None)
    if shape is None:
        try:
            shape = model.input_shape[1:]
        except (AttributeError, ValueError, TypeError):
            return None
    return tuple(None if d is None else int(d) for d in shape)


def shape_text(shape: Sequence[int | None]) -> str:
    """A shape as a user reads it: (batch, 28, 28, 1) for a free batch axis."""
    dims = ["batch" if i == 0 and d is None else str(d) for i, d in enumerate(shape)]
    return f"({', '.join(dims)})"


def check_image_shape(received, image_shape, what: str = "Images") -> None:
    """Raises ValueError naming both shapes unless images of shape `received`
    ([N, H, W, C]) fit a model of `image_shape` ((H, W, C), None for a free axis;
    None: a model that does not say, nothing to check)."""
    if image_shape is None or received is None:
        return
    received = tuple(None if d is None else int(d) for d in received)
    fits = len(received) == 4 and all(
        want is None or got is None or got == want
        for got, want in zip(received[1:], image_shape, strict=True)
    )
    if not fits:
        raise ValueError(
            f"{what} have shape {shape_text(received)}, but the model takes images "
            f"of shape {shape_text((None, *image_shape))} [batch, height, width, "
            "channels]."
        )


def _first_images(x, batch_size: int | None):
    """The images of the first batch of `fit`/`evaluate`'s `x` as a numpy array,
    or None where there is nothing to look at without using the data up (a
    Python generator)."""
    if isinstance(x, tf.data.Dataset):
        x = next(iter(x.take(1)), None)
    elif isinstance(x, keras.utils.PyDataset):
        x = x[0] if len(x) else None
    elif not isinstance(x, dict | tuple | list | np.ndarray | tf.Tensor):
        return None
    if isinstance(x, tuple | list):  # (images, labels[, weights])
        x = x[0] if x else None
    if isinstance(x, dict):  # semi-supervised: {"images": ..., "unlabeled": ...}
        x = x.get("images")
    if not isinstance(x, np.ndarray | tf.Tensor):
        return None
    images = np.asarray(x[: batch_size or 32])
    return images if images.dtype.kind == "f" else None


def warn_if_outside_range(x, batch_size: int | None = None) -> bool:
    """Logs one warning, and returns True, when the first batch of `x` (what
    `fit`/`evaluate` were given) has pixels outside `IMAGE_RANGE` widened by
    `RANGE_TOLERANCE`: e.g. 0..255 floats, on which the input noise, the SGLD
    chains and the OOD gate, all made for [-1, 1], act as if on a flat image.
    Reads one batch, once per call; the training steps are untouched."""
    images = _first_images(x, batch_size)
    finite = None if images is None else images[np.isfinite(images)]
    if finite is None or not finite.size:  # NaN/Inf fail the step's own check
        return False
    low, high = float(finite.min()), float(finite.max())
    if low >= IMAGE_RANGE[0] - RANGE_TOLERANCE and high <= (
        IMAGE_RANGE[1] + RANGE_TOLERANCE
    ):
        return False
    logging.warning(
        "The first batch's images range over [%g, %g], but HDGEClassifier expects "
        "images in [%g, %g] (its input noise, SGLD chains and OOD gate assume it): "
        "convert uint8 pixels with x / 127.5 - 1.",
        low,
        high,
        *IMAGE_RANGE,
    )
    return True


def check_range_once(model: keras.Model, x, batch_size: int | None = None) -> None:
    """`warn_if_outside_range` on the first `fit`/`evaluate` of `model` only (its
    `input_range_checked` then True); a trainer whose pipeline makes [-1, 1]
    images sets it beforehand."""
    if getattr(model, "input_range_checked", False):
        return
    model.input_range_checked = True
    warn_if_outside_range(x, batch_size)


class Batch(NamedTuple):
    """A checked batch: float32 images [N, H, W, C], int32 labels [N], and the
    unlabeled images of a semi-supervised batch (float32 [M, H, W, C]) or None."""

    images: tf.Tensor
    labels: tf.Tensor
    unlabeled: tf.Tensor | None


def unpack_batch(data, image_shape, num_classes: int) -> Batch:
    """Splits what `fit`/`evaluate` pass to a step into a checked `Batch`.

    image_shape: (H, W, C) the backbone expects (None for a free axis).
    """
    images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if labels is None:
        raise ValueError("HDGEClassifier needs (images, labels) to train/evaluate.")
    if sample_weight is not None:
        raise ValueError(
            "HDGEClassifier does not support sample weights: fit's class_weight= "
            "and sample_weight= (and (x, y, weight) datasets) weight a single "
            "loss, and its loss has several terms, of which the contrastive ones "
            "pair each image with the whole logit queue. Balance the classes in "
            "the data instead (e.g. by resampling)."
        )
    unlabeled = None
    if isinstance(images, dict):
        unknown = set(images) - {"images", "unlabeled"}
        if "images" not in images or unknown:
            raise ValueError(
                'Semi-supervised inputs are a dict {"images": labeled images, '
                f'"unlabeled": images}}; got keys {sorted(images)}.'
            )
        if images.get("unlabeled") is not None:
            unlabeled = check_images(images["unlabeled"], image_shape)
        images = images["images"]
    return Batch(
        check_images(images, image_shape),
        check_labels(labels, num_classes),
        unlabeled,
    )


def check_images(images, image_shape) -> tf.Tensor:
    """`images` as float32 [N, H, W, C]; fails with a message naming the problem for
    inputs that are not floating point, not of `image_shape` (H, W, C; None for a
    free axis) or that hold NaN/Inf."""
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise TypeError(
            "Images must be floating point in [-1, 1], got dtype "
            f"{images.dtype.name}; convert with x / 127.5 - 1."
        )
    if images.shape.rank is None:  # a retraced step with relaxed shapes
        tf.debugging.assert_rank(
            images, 4, "Images must have rank 4 [batch, height, width, channels]."
        )
        images = tf.ensure_shape(images, (None, None, None, None))
    if images.shape.rank != 4:
        raise ValueError(
            f"Images must have rank 4 [batch, height, width, channels]: the backbone "
            f"expects shape {shape_text((None, *image_shape))}, received shape "
            f"{shape_text(images.shape)}."
        )
    expected = tuple(image_shape)
    dynamic = []
    for axis, (name, got, want) in enumerate(
        zip(_AXES, images.shape[1:], expected, strict=True), start=1
    ):
        if want is None:
            continue
        if got is None:
            # Keras relaxes shapes when it retraces for a new input shape, so
            # the static check alone would let another image size through.
            dynamic.append(
                tf.debugging.assert_equal(
                    tf.shape(images)[axis],
                    want,
                    f"Images have the wrong {name}: the backbone expects "
                    f"{want} (image shape {expected}).",
                )
            )
        elif got != want:
            raise ValueError(
                f"Images have {name} {got} but the backbone expects {want}: expected "
                f"shape {shape_text((None, *expected))}, received shape "
                f"{shape_text(images.shape)}."
            )
    if dynamic:
        with tf.control_dependencies(dynamic):
            images = tf.identity(images)
    # check_numerics passes the tensor through, so nothing downstream (the
    # update, the queue write) can run on a batch that fails the check.
    return tf.debugging.check_numerics(
        tf.cast(images, tf.float32), "Input images contain NaN or Inf."
    )


def check_labels(labels, num_classes: int) -> tf.Tensor:
    """`labels` as int32 class indices in [0, num_classes), [N] (an [N, 1] column
    is squeezed)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank is None:
        # A step Keras retraced with relaxed shapes (labels [N] in one fit, [N, 1]
        # in the next): either is N values, one per image, whatever the rank.
        checks = [
            tf.debugging.assert_rank_in(
                labels, [1, 2], "Labels must have shape [batch] or [batch, 1]."
            ),
            tf.debugging.assert_equal(
                tf.size(labels),
                tf.shape(labels)[0],
                "Labels must have shape [batch] or [batch, 1].",
            ),
        ]
        with tf.control_dependencies(checks):
            labels = tf.reshape(labels, [-1])
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if labels.shape.rank != 1:
        raise ValueError(
            f"Labels must be integer class indices of shape [batch], got shape "
            f"{labels.shape}."
        )
    if not labels.dtype.is_integer:
        raise TypeError(
            f"Labels must be integer class indices, got dtype {labels.dtype.name}."
        )
    labels = tf.cast(labels, tf.int32)
    checks = [
        tf.debugging.assert_non_negative(labels, "Labels must be >= 0."),
        tf.debugging.assert_less(
            labels, num_classes, f"Labels must be < num_classes={num_classes}."
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)
