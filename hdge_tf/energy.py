"""What a classifier's logits say when read as energies (JEM, Sec. 3).

With p(x, y) = exp f(x)[y] / Z for the logits f(x):

    log p(x, y) = f(x)[y] - log Z
    log p(x)    = logsumexp_y f(x)[y] - log Z      (the energy E(x) = -logsumexp)
    p(y|x)      = softmax(f(x))[y]

The functions here drop the constant log Z. The model's SGLD terms, the sampler, the
OOD scores and the exported signatures all read these numbers from here, in float32
even when the network computes under a mixed-precision policy: a bfloat16 logsumexp
or softmax loses the small differences in log p(x) that sampling and OOD detection
use.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import input_checks


def logits(model: keras.Model, images, training: bool = False) -> tf.Tensor:
    """f(x) of `images` ([N, H, W, C]) as float32 [N, classes]."""
    return tf.cast(model(images, training=training), tf.float32)


def log_px(logits) -> tf.Tensor:
    """Unnormalized log p(x) = logsumexp_y f(x)[y] = -E(x), [N], from [N, C] logits.
    Higher means more in-distribution."""
    return tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=-1)


def log_pxy(logits, labels) -> tf.Tensor:
    """Unnormalized log p(x, y) = f(x)[y], [N], from [N, C] logits and [N] labels."""
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    return tf.gather(logits, labels[:, tf.newaxis], batch_dims=1)[:, 0]


def probabilities(logits) -> tf.Tensor:
    """p(y|x) = softmax(f(x)), [N, C]."""
    return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)


def max_softmax(logits) -> tf.Tensor:
    """max_y p(y|x), the classifier's confidence, [N]."""
    return tf.reduce_max(probabilities(logits), axis=-1)


def log_density(model: keras.Model, images, labels=None) -> tf.Tensor:
    """log p(x), or log p(x, y) for [N] int `labels`, of `images` ([N, H, W, C])
    with the network in inference mode. [N] float32. A model with a learned
    energy scale β (`HDGEClassifier.energy_scale`) gives β times these: the
    density its SGLD chains sample."""
    out = logits(model, images)
    density = log_px(out) if labels is None else log_pxy(out, labels)
    scale = getattr(model, "energy_scale", None)  # HDGEClassifier's learned β
    return density if scale is None else scale * density


# One function for every call: traced once per model (and once more for a smaller
# last batch, after which the batch dimension is relaxed).
_inference_logits = tf.function(logits, reduce_retracing=True)


def predict_logits(model: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """float32 logits in inference mode, batched, [N, classes]. Unlike
    `Model.predict` this also works on a model built under
    MultiWorkerMirroredStrategy. Images of another shape than the model's fail
    here, naming both shapes (not inside the traced function)."""
    input_checks.check_image_shape(
        np.shape(images), input_checks.model_image_shape(model)
    )
    batches = [
        _inference_logits(
            model, tf.convert_to_tensor(images[i : i + batch_size])
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)
