"""A `keras.applications` network as the backbone, untrained, with logits out.

Most Keras users' networks come from `keras.applications` or look like them
(BatchNorm after every conv). This wraps one so a config can name it:
`backbone.name = "keras_application"`, `backbone.application = "ResNet50V2"`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from hdge_tf.networks import layers as nn_layers
from hdge_tf.networks.backbone import Backbone

# The smallest input side keras.applications' CNNs accept.
MIN_SIDE = 32


@keras.saving.register_keras_serializable(package="hdge_tf")
class KerasApplication(Backbone):
    """`keras.applications.<application>` with random weights and a linear head.

    Images smaller than `MIN_SIDE` are resized up to it (bilinear) in front of
    the network; the application's own preprocessing is off, as our images are
    already in [-1, 1].

    Args:
        num_classes: Number of logits.
        application: A class name in `keras.applications` (e.g. "ResNet50V2",
            "MobileNetV3Small", "EfficientNetB0").
        application_kwargs: More keyword arguments for it (e.g. {"alpha": 0.5}).
        image_shape: `(height, width, channels)` of the inputs.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        num_classes: int,
        application: str = "ResNet50V2",
        application_kwargs: Mapping[str, Any] | None = None,
        image_shape: Sequence[int] = (32, 32, 3),
        **kwargs: Any,
    ) -> None:
        nn_layers.validate_num_classes(num_classes)
        build = getattr(keras.applications, str(application), None)
        if not callable(build) or not str(application)[:1].isupper():
            raise ValueError(
                f"Unknown keras.applications network {application!r}; use a class "
                "name such as 'ResNet50V2', 'MobileNetV3Small' or 'EfficientNetB0'."
            )
        arguments = dict(application_kwargs or {})
        height, width, channels = (int(d) for d in image_shape)
        side = (max(height, MIN_SIDE), max(width, MIN_SIDE))
        inputs = keras.Input((height, width, channels))
        x = inputs
        if side != (height, width):
            x = keras.layers.Resizing(*side, name="resize_to_application")(x)
        if "include_preprocessing" in build.__code__.co_varnames:
            arguments.setdefault("include_preprocessing", False)
        network = build(
            weights=None,
            include_top=True,
            input_shape=(*side, channels),
            classes=num_classes,
            classifier_activation=None,
            **arguments,
        )
        super().__init__(
            inputs,
            network(x),
            {
                "num_classes": num_classes,
                "application": str(application),
                "application_kwargs": arguments,
                "image_shape": (height, width, channels),
            },
            **kwargs,
        )
