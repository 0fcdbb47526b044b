"""Normalization/activation factories and argument checks shared by backbones.

Kept in one place so every backbone accepts exactly the same `norm` and
`activation` strings and fails with the same messages.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import keras

NORMS: tuple[str, ...] = ("none", "batch", "layer", "instance")
ACTIVATIONS: tuple[str, ...] = ("leaky_relu", "swish")

# PyTorch's default, so hyper-parameters from the JEM/HDGE reference code carry
# over unchanged (Keras defaults to 1e-3).
_NORM_EPSILON = 1e-5


def validate_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; expected one of {', '.join(NORMS)}.")


def validate_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {activation!r}; expected one of "
            f"{', '.join(ACTIVATIONS)}."
        )


def validate_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an integer >= 2, got num_classes={num_classes!r}."
        )


def validate_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got dropout={dropout!r}.")


def validate_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Returns `image_shape` as a tuple; JSON configs hand it back as a list."""
    shape = tuple(image_shape)
    if len(shape) != 3 or any(
        not isinstance(d, numbers.Integral) or d < 1 for d in shape
    ):
        raise ValueError(
            "image_shape must be (height, width, channels) with positive "
            f"integers, got image_shape={image_shape!r}."
        )
    return tuple(int(d) for d in shape)


def norm_layer(norm: str, channels: int, name: str) -> keras.layers.Layer:
    """Builds the normalization selected by `norm` for a `channels`-wide input.

    "none" still yields a (weightless) layer so every variant has the same graph
    topology and layer names.
    """
    validate_norm(norm)
    if norm == "none":
        return keras.layers.Identity(name=name)
    if norm == "batch":
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=_NORM_EPSILON, name=name
        )
    groups = 1 if norm == "layer" else channels
    return keras.layers.GroupNormalization(
        groups=groups, epsilon=_NORM_EPSILON, name=name
    )


def activation_layer(activation: str, leak: float, name: str) -> keras.layers.Layer:
    """Builds the nonlinearity; `leak` is the negative slope of leaky ReLU.

    Energy-based training needs non-zero input gradients everywhere, hence
    leaky ReLU / swish rather than plain ReLU.
    """
    validate_activation(activation)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=leak, name=name)
    return keras.layers.Activation("swish", name=name)


def torch_default_initializer() -> keras.initializers.Initializer:
    """PyTorch's default Conv/Linear kernel init, U(+-1/sqrt(fan_in)).

    The JEM/HDGE reference relies on it: without normalization, he_normal makes
    a fresh WRN-28-10 emit logits of magnitude ~30 (so huge energies and SGLD
    gradients), whereas this init starts them near zero.
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_default_bias_initializer(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default Conv/Linear bias init, U(+-1/sqrt(fan_in)), fan_in being
    the kernel's inputs per output unit (in_channels * kernel area for a conv)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def conv2d(
    filters: int, kernel_size: int, strides: int, name: str, padding: str = "same"
) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """A convolution to apply to a tensor, "same"-padded unless told otherwise;
    biases kept as in the JEM reference code, kernel and bias initialized as
    PyTorch does.

    The bias bound needs the input channels, so the layer is made when applied.
    It is a stock `Conv2D`: a subclass would store its weights under another
    path in `.keras` files, and files saved before would no longer load.
    "same" pads a stride-2 conv on an even-sized input only at the bottom/right,
    unlike PyTorch's symmetric `padding=1`; callers wanting PyTorch's alignment
    put a `ZeroPadding2D` in front and pass `padding="valid"`.
    """

    def apply(x):
        fan_in = int(x.shape[-1]) * kernel_size * kernel_size
        layer = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=True,
            kernel_initializer=torch_default_initializer(),
            bias_initializer=torch_default_bias_initializer(fan_in),
            name=name,
        )
        return layer(x)

    return apply


def dense(
    units: int, name: str, dtype: str | None = None
) -> Callable[[keras.KerasTensor], keras.KerasTensor]:
    """A stock `Dense` to apply to a tensor, with PyTorch's default kernel and
    bias init (nn.Linear's); made when applied, as `conv2d`."""

    def apply(x):
        layer = keras.layers.Dense(
            units,
            kernel_initializer=torch_default_initializer(),
            bias_initializer=torch_default_bias_initializer(int(x.shape[-1])),
            dtype=dtype,
            name=name,
        )
        return layer(x)

    return apply
