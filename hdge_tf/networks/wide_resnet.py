"""Wide ResNet backbone in the variant used by JEM and HDGE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from hdge_tf.networks import layers as nn_layers
from hdge_tf.networks.backbone import Backbone

_GROUP_STRIDES: tuple[int, int, int] = (1, 2, 2)
# Where a block's stride goes: on its second conv (the JEM/HDGE code) or its first.
LAYOUTS: tuple[str, ...] = ("published", "compact")
# What a config written before `layout` existed was built with.
_LEGACY_LAYOUT = "compact"


def _conv3x3(
    x: keras.KerasTensor,
    filters: int,
    strides: int,
    *,
    symmetric: bool,
    name: str,
) -> keras.KerasTensor:
    """3x3 conv `name`; strided and `symmetric`, it pads one pixel on every side
    (layer `{name}_pad`) and convolves "valid", as PyTorch's `padding=1` does.

    Keras' "same" pads a stride-2 conv on an even-sized input only at the
    bottom/right, centring its outputs on pixels 1, 3, 5, ... rather than on
    0, 2, 4, ..., the pixels the strided 1x1 shortcut picks. At stride 1 "same"
    is already symmetric. The kernel and bias are the same either way.
    """
    if strides == 1 or not symmetric:
        return nn_layers.conv2d(filters, 3, strides, name)(x)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return nn_layers.conv2d(filters, 3, strides, name, padding="valid")(x)


def _wide_basic_block(
    x: keras.KerasTensor,
    filters: int,
    strides: int,
    *,
    layout: str,
    norm: str,
    dropout: float,
    activation: str,
    leak: float,
    name: str,
) -> keras.KerasTensor:
    """Pre-activation basic block; the shortcut taps the un-normalized input.

    `strides` go on the second conv ("published") or the first ("compact"); the
    1x1 shortcut conv strides in both. Only "published" pads its strided conv
    symmetrically (see `_conv3x3`); "compact" keeps the "same" padding it was
    saved with.
    """
    published = layout == "published"
    conv1_strides, conv2_strides = (1, strides) if published else (strides, 1)
    in_channels = x.shape[-1]
    out = nn_layers.norm_layer(norm, in_channels, f"{name}_norm1")(x)
    out = nn_layers.activation_layer(activation, leak, f"{name}_act1")(out)
    out = _conv3x3(
        out, filters, conv1_strides, symmetric=published, name=f"{name}_conv1"
    )
    if dropout > 0.0:
        out = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = nn_layers.norm_layer(norm, filters, f"{name}_norm2")(out)
    out = nn_layers.activation_layer(activation, leak, f"{name}_act2")(out)
    out = _conv3x3(
        out, filters, conv2_strides, symmetric=published, name=f"{name}_conv2"
    )
    if strides != 1 or in_channels != filters:
        shortcut = nn_layers.conv2d(filters, 1, strides, f"{name}_shortcut")(x)
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


@keras.saving.register_keras_serializable(package="hdge_tf")
class WideResNet(Backbone):
    """WRN-`depth`-`width` classifier whose logits double as an energy model.

    Follows the JEM/HDGE reference rather than the original WRN: normalization
    is optional (and off by default, since batch norm destabilizes SGLD
    sampling), activations are leaky, convolutions keep their biases and
    kernels use PyTorch's default init so initial energies are near zero.
    Global average pooling makes any input size/channel count work.

    Two layouts share every weight shape but are different networks. The
    published code (JEM's and HDGE's `wideresnet.py`) strides the *second* conv
    of a group's first block, so its first conv runs at the input resolution:
    "published" is the network whose numbers the papers report. "compact"
    strides the first conv instead (our old default): fewer multiply-adds,
    22% fewer at WRN-16-4 and 12% at WRN-28-10 on 32x32 inputs. Configs saved before
    this argument existed have no `layout` key and load as "compact", the layout
    they were built with. "published" also pads its strided convs as PyTorch's
    `padding=1` does, one pixel on every side (a `ZeroPadding2D` named
    `<conv>_pad`), because Keras' "same" pads even-sized inputs only at the
    bottom/right, which would shift the strided conv's outputs one pixel off the
    pixels its 1x1 shortcut samples; "compact" keeps "same", as saved.

    Args:
        num_classes: Number of logits.
        depth: Total depth; `(depth - 4) / 6` blocks per group.
        width: Channel multiplier of the three groups (16, 32, 64 x width).
        norm: One of "none", "batch", "layer", "instance".
        dropout: Dropout rate between the two convs of each block.
        activation: "leaky_relu" or "swish".
        leak: Negative slope of leaky ReLU.
        image_shape: `(height, width, channels)` of the inputs.
        layout: "published" (stride on a block's second conv) or "compact"
            (stride on its first conv); see above.
        **kwargs: Passed to `keras.Model` (e.g. `name`).
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 28,
        width: int = 10,
        norm: str = "none",
        dropout: float = 0.0,
        activation: str = "leaky_relu",
        leak: float = 0.2,
        image_shape: Sequence[int] = (32, 32, 3),
        layout: str = "published",
        **kwargs: Any,
    ) -> None:
        nn_layers.validate_num_classes(num_classes)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                "WideResNet depth must be >= 10 with (depth - 4) % 6 == 0 "
                f"(e.g. 10, 16, 22, 28), got depth={depth!r}."
            )
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1, got width={width!r}.")
        nn_layers.validate_norm(norm)
        nn_layers.validate_activation(activation)
        nn_layers.validate_dropout(dropout)
        image_shape = nn_layers.validate_image_shape(image_shape)
        if layout not in LAYOUTS:
            raise ValueError(
                f"WideResNet layout must be one of {', '.join(map(repr, LAYOUTS))}, "
                f"got layout={layout!r}."
            )

        # === Functional model ===
        blocks_per_group = (depth - 4) // 6
        inputs = keras.Input(shape=image_shape, name="images")
        x = nn_layers.conv2d(16, 3, 1, "stem_conv")(inputs)
        for group, (multiplier, group_strides) in enumerate(
            zip((16, 32, 64), _GROUP_STRIDES, strict=True), start=1
        ):
            for block in range(blocks_per_group):
                x = _wide_basic_block(
                    x,
                    multiplier * width,
                    group_strides if block == 0 else 1,
                    layout=layout,
                    norm=norm,
                    dropout=dropout,
                    activation=activation,
                    leak=leak,
                    name=f"group{group}_block{block + 1}",
                )
        x = nn_layers.norm_layer(norm, x.shape[-1], "final_norm")(x)
        x = nn_layers.activation_layer(activation, leak, "final_act")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        # float32 head keeps logits (and hence energies) out of bfloat16.
        outputs = nn_layers.dense(num_classes, "logits", dtype="float32")(x)
        arguments = {
            "num_classes": num_classes,
            "depth": depth,
            "width": width,
            "norm": norm,
            "dropout": dropout,
            "activation": activation,
            "leak": leak,
            "image_shape": image_shape,
            "layout": layout,
        }
        super().__init__(inputs, outputs, arguments, **kwargs)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: Any = None
    ) -> WideResNet:
        """A config without `layout` predates it, so it was built "compact" (the
        kernel shapes match either layout, so a new default would load silently)."""
        config = {"layout": _LEGACY_LAYOUT, **config}
        return super().from_config(config, custom_objects=custom_objects)
