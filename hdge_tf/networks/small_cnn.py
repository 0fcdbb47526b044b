"""A small VGG-style CNN for fast CPU experiments (e.g. MNIST)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from hdge_tf.networks import layers as nn_layers
from hdge_tf.networks.backbone import Backbone


@keras.saving.register_keras_serializable(package="hdge_tf")
class SmallCNN(Backbone):
    """Stacks of two 3x3 convs + max-pool, then a one-hidden-layer head.

    Meant as a drop-in, CPU-friendly stand-in for `WideResNet` so the whole
    HDGE pipeline can be exercised in minutes; it takes the same `norm` and
    `activation` options. Global average pooling keeps it input-size agnostic.

    Args:
        num_classes: Number of logits.
        filters: Conv channels of each stage; each stage halves the resolution.
        dense_units: Width of the hidden dense layer.
        convs_per_stage: 3x3 convolutions before each pooling; 1 is about 4x
            cheaper than 2 and enough for digits.
        dropout: Dropout rate before the logits layer.
        activation: "leaky_relu" or "swish".
        leak: Negative slope of leaky ReLU.
        norm: One of "none", "batch", "layer", "instance", applied after convs.
        image_shape: `(height, width, channels)` of the inputs.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        num_classes: int,
        filters: Sequence[int] = (32, 64, 128),
        dense_units: int = 128,
        convs_per_stage: int = 2,
        dropout: float = 0.0,
        activation: str = "leaky_relu",
        leak: float = 0.2,
        norm: str = "none",
        image_shape: Sequence[int] = (32, 32, 1),
        **kwargs: Any,
    ) -> None:
        nn_layers.validate_num_classes(num_classes)
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(
                "SmallCNN filters must be a non-empty sequence of positive "
                f"integers, got filters={filters!r}."
            )
        if convs_per_stage < 1:
            raise ValueError(
                f"SmallCNN convs_per_stage must be >= 1, got {convs_per_stage!r}."
            )
        if dense_units < 1:
            raise ValueError(
                f"SmallCNN dense_units must be >= 1, got dense_units={dense_units!r}."
            )
        nn_layers.validate_norm(norm)
        nn_layers.validate_activation(activation)
        nn_layers.validate_dropout(dropout)
        image_shape = nn_layers.validate_image_shape(image_shape)

        # === Functional model ===
        inputs = keras.Input(shape=image_shape, name="images")
        x = inputs
        for stage, stage_filters in enumerate(filters, start=1):
            for conv in range(1, convs_per_stage + 1):
                prefix = f"stage{stage}_{conv}"
                x = nn_layers.conv2d(stage_filters, 3, 1, f"{prefix}_conv")(x)
                x = nn_layers.norm_layer(norm, stage_filters, f"{prefix}_norm")(x)
                x = nn_layers.activation_layer(activation, leak, f"{prefix}_act")(x)
            pool = keras.layers.MaxPooling2D(
                2, padding="same", name=f"stage{stage}_pool"
            )
            x = pool(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = nn_layers.dense(dense_units, "hidden")(x)
        x = nn_layers.activation_layer(activation, leak, "hidden_act")(x)
        if dropout > 0.0:
            x = keras.layers.Dropout(dropout, name="hidden_dropout")(x)
        # float32 head keeps logits (and hence energies) out of bfloat16.
        outputs = nn_layers.dense(num_classes, "logits", dtype="float32")(x)
        arguments = {
            "num_classes": num_classes,
            "filters": filters,
            "dense_units": dense_units,
            "convs_per_stage": convs_per_stage,
            "dropout": dropout,
            "activation": activation,
            "leak": leak,
            "norm": norm,
            "image_shape": image_shape,
        }
        super().__init__(inputs, outputs, arguments, **kwargs)
