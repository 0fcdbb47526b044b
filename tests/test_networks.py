"""Tests for hdge_tf.networks backbones."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import pytest
from keras_checks import random_images, run_backbone_checks

from hdge_tf.networks import BACKBONES, SmallCNN, WideResNet, build_backbone

NORMS = ("none", "batch", "layer", "instance")


@pytest.fixture
def mixed_bfloat16() -> Iterator[None]:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# Each norm paired with a different input size / channel count / activation so
# all options are covered without the full (slow) cross product.
@pytest.mark.parametrize(
    ("norm", "image_shape", "activation", "dropout"),
    [
        ("none", (32, 32, 3), "leaky_relu", 0.0),
        ("batch", (28, 28, 1), "leaky_relu", 0.0),
        ("layer", (32, 32, 1), "swish", 0.0),
        ("instance", (28, 28, 3), "leaky_relu", 0.1),
    ],
)
def test_wide_resnet_contract(norm, image_shape, activation, dropout, tmp_path):
    run_backbone_checks(
        lambda: WideResNet(
            num_classes=5,
            depth=10,
            width=1,
            norm=norm,
            dropout=dropout,
            activation=activation,
            image_shape=image_shape,
        ),
        input_shape=image_shape,
        num_classes=5,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize(
    ("kwargs", "image_shape"),
    [
        ({}, (32, 32, 1)),
        ({"filters": (8, 16), "norm": "batch", "dropout": 0.2}, (28, 28, 1)),
        ({"filters": (8,), "norm": "instance", "activation": "swish"}, (32, 32, 3)),
    ],
)
def test_small_cnn_contract(kwargs, image_shape, tmp_path):
    run_backbone_checks(
        lambda: SmallCNN(num_classes=10, image_shape=image_shape, **kwargs),
        input_shape=image_shape,
        num_classes=10,
        tmp_path=tmp_path,
    )


def _conv_params(kernel_size: int, in_channels: int, out_channels: int) -> int:
    return kernel_size * kernel_size * in_channels * out_channels + out_channels


def _norm_params(norm: str, channels: int) -> int:
    # gamma/beta, plus moving mean/variance for batch norm.
    return {"none": 0, "batch": 4, "layer": 2, "instance": 2}[norm] * channels


def _expected_wrn_params(
    depth: int, width: int, num_classes: int, in_channels: int, norm: str = "none"
) -> int:
    blocks = (depth - 4) // 6
    total = _conv_params(3, in_channels, 16)
    channels = 16
    group_channels = (16 * width, 32 * width, 64 * width)
    for out_channels, stride in zip(group_channels, (1, 2, 2), strict=True):
        for block in range(blocks):
            block_stride = stride if block == 0 else 1
            total += _norm_params(norm, channels)
            total += _conv_params(3, channels, out_channels)
            total += _norm_params(norm, out_channels)
            total += _conv_params(3, out_channels, out_channels)
            if block_stride != 1 or channels != out_channels:
                total += _conv_params(1, channels, out_channels)
            channels = out_channels
    total += _norm_params(norm, channels)
    return total + channels * num_classes + num_classes


def test_wrn_28_10_param_count():
    expected = _expected_wrn_params(28, 10, num_classes=10, in_channels=3)
    # The figure reported for JEM's WRN-28-10 (biases kept, no norm).
    assert expected == pytest.approx(36.5e6, rel=0.005)
    model = WideResNet(num_classes=10, depth=28, width=10, image_shape=(32, 32, 3))
    assert model.count_params() == expected


@pytest.mark.parametrize("norm", NORMS)
def test_wrn_param_count_per_norm(norm):
    # depth 16 gives two blocks per group, so identity shortcuts are covered too.
    model = WideResNet(
        num_classes=3, depth=16, width=2, norm=norm, image_shape=(8, 8, 2)
    )
    assert model.count_params() == _expected_wrn_params(16, 2, 3, 2, norm)


def test_small_cnn_param_count():
    model = SmallCNN(num_classes=10, filters=(4, 8), dense_units=16, norm="layer")
    expected = (
        _conv_params(3, 1, 4)
        + _conv_params(3, 4, 4)
        + _conv_params(3, 4, 8)
        + _conv_params(3, 8, 8)
        + 2 * (_norm_params("layer", 4) + _norm_params("layer", 8))
        + (8 * 16 + 16)
        + (16 * 10 + 10)
    )
    assert model.count_params() == expected


@pytest.mark.parametrize(
    "model_fn",
    [
        *(
            lambda norm=norm: WideResNet(3, depth=10, width=1, norm=norm)
            for norm in NORMS
        ),
        lambda: SmallCNN(3, filters=(8, 16), norm="batch"),
    ],
    ids=[*(f"wrn-{norm}" for norm in NORMS), "small_cnn"],
)
def test_mixed_bfloat16_logits_are_float32(mixed_bfloat16, model_fn):
    model = model_fn()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs
    assert all(conv.compute_dtype == "bfloat16" for conv in convs)
    assert model.get_layer("logits").compute_dtype == "float32"

    x = random_images(4, model.input_shape[1:])
    logits = model(x, training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


def test_wide_resnet_contract_mixed_bfloat16(mixed_bfloat16, tmp_path):
    # Training and serialization must also hold with bfloat16 activations.
    run_backbone_checks(
        lambda: WideResNet(num_classes=5, depth=10, width=1, norm="batch"),
        input_shape=(32, 32, 3),
        num_classes=5,
        tmp_path=tmp_path,
    )


def test_mixed_bfloat16_policy_restored():
    # Runs after the mixed-precision tests; a leaked policy would break others.
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 27}, r"depth"),
        ({"depth": 4}, r"depth"),
        ({"width": 0}, r"width"),
        ({"norm": "group"}, r"norm 'group'"),
        ({"activation": "relu"}, r"activation 'relu'"),
        ({"num_classes": 1}, r"num_classes"),
        ({"dropout": 1.0}, r"dropout"),
        ({"image_shape": (32, 32)}, r"image_shape"),
    ],
)
def test_wide_resnet_rejects_bad_arguments(kwargs, match):
    kwargs = {"num_classes": 10, "depth": 10, "width": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        WideResNet(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filters": ()}, r"filters"),
        ({"dense_units": 0}, r"dense_units"),
        ({"norm": "group"}, r"norm 'group'"),
        ({"activation": "gelu"}, r"activation 'gelu'"),
        ({"num_classes": 0}, r"num_classes"),
    ],
)
def test_small_cnn_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SmallCNN(**{"num_classes": 10, **kwargs})


def test_build_backbone_dispatches_and_forwards_kwargs():
    wrn = build_backbone("wrn", 7, (28, 28, 1), depth=10, width=1, norm="batch")
    assert isinstance(wrn, WideResNet)
    assert (wrn.depth, wrn.width, wrn.norm) == (10, 1, "batch")
    assert wrn.output_shape == (None, 7)
    cnn = build_backbone("small_cnn", 4, (32, 32, 1), filters=(8,))
    assert isinstance(cnn, SmallCNN)
    assert cnn.input_shape == (None, 32, 32, 1)


def test_build_backbone_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet50") as excinfo:
        build_backbone("resnet50", 10, (32, 32, 3))
    for name in BACKBONES:
        assert name in str(excinfo.value)


def test_backbones_are_registered_serializables():
    for cls in (WideResNet, SmallCNN):
        name = keras.saving.get_registered_name(cls)
        assert name == f"hdge_tf>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls
