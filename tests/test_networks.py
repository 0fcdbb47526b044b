"""Tests for hdge_tf.networks backbones."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator

import keras
import numpy as np
import pytest
from keras_checks import random_images, run_backbone_checks

from hdge_tf.networks import (
    BACKBONES,
    KerasApplication,
    SmallCNN,
    WideResNet,
    build_backbone,
)

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
    ("norm", "image_shape", "activation", "dropout", "layout"),
    [
        ("none", (32, 32, 3), "leaky_relu", 0.0, "published"),
        ("batch", (28, 28, 1), "leaky_relu", 0.0, "compact"),
        ("layer", (32, 32, 1), "swish", 0.0, "compact"),
        ("instance", (28, 28, 3), "leaky_relu", 0.1, "published"),
    ],
)
def test_wide_resnet_contract(norm, image_shape, activation, dropout, layout, tmp_path):
    run_backbone_checks(
        lambda: WideResNet(
            num_classes=5,
            depth=10,
            width=1,
            norm=norm,
            dropout=dropout,
            activation=activation,
            image_shape=image_shape,
            layout=layout,
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


@pytest.mark.slow
def test_keras_application_contract(tmp_path):
    """A keras.applications network (BatchNorm throughout) with logits out:
    28x28 digits resized to its 32x32 minimum, and its own preprocessing off."""
    model = run_backbone_checks(
        lambda: KerasApplication(
            num_classes=10,
            application="MobileNetV3Small",
            application_kwargs={"minimalistic": True, "alpha": 0.75},
            image_shape=(28, 28, 1),
        ),
        input_shape=(28, 28, 1),
        num_classes=10,
        tmp_path=tmp_path,
    )
    names = [layer.name for layer in model.layers]
    assert "resize_to_application" in names
    network = model.layers[-1]
    assert network.input_shape == (None, 32, 32, 1)
    assert not any(isinstance(x, keras.layers.Rescaling) for x in network.layers)
    assert model.get_config()["application_kwargs"]["include_preprocessing"] is False


def test_keras_application_names_a_bad_network():
    for name in ("resnet", "NoSuchNet", "imagenet_utils"):
        with pytest.raises(ValueError, match=rf"Unknown keras.applications .*{name}"):
            KerasApplication(num_classes=10, application=name)


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
        lambda: WideResNet(10, depth=10, width=2, image_shape=(32, 32, 1)),
        lambda: SmallCNN(10, filters=(16, 32), dense_units=128),
    ],
    ids=["wrn", "small_cnn"],
)
def test_kernels_and_biases_start_as_torch_defaults(model_fn):
    """Every conv/dense kernel AND bias starts U(+-1/sqrt(fan_in)), as torch's
    nn.Conv2d / nn.Linear do in the published code (it never re-initializes
    them); Keras's default zero biases made our CE baseline differ from it."""
    keras.utils.set_random_seed(0)
    model = model_fn()
    layers = [
        layer for layer in model.layers if getattr(layer, "bias", None) is not None
    ]
    assert len(layers) >= 4
    pooled = []
    for layer in layers:
        kernel, bias = (
            keras.ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias)
        )
        fan_in = int(np.prod(kernel.shape[:-1]))  # (kh, kw, in, out) or (in, out)
        bound = 1.0 / np.sqrt(fan_in)
        for values in (kernel, bias):
            assert np.abs(values).max() <= bound * (1 + 1e-6), layer.name
        if bias.size >= 10:  # not zeros, and spread over the whole interval
            assert np.abs(bias).max() > 0.5 * bound, layer.name
            assert np.unique(bias).size == bias.size, layer.name
        pooled.append(bias / bound)
    pooled = np.concatenate(pooled)  # U(-1, 1): mean 0, std 1/sqrt(3) = 0.577
    assert pooled.size >= 200
    assert abs(pooled.mean()) < 0.1
    assert 0.5 < pooled.std() < 0.65


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
        ({"layout": "torch"}, r"one of 'published', 'compact', got layout='torch'"),
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
    wrn = build_backbone(
        "wrn", 7, (28, 28, 1), depth=10, width=1, norm="batch", layout="compact"
    )
    assert isinstance(wrn, WideResNet)
    assert (wrn.depth, wrn.width, wrn.norm, wrn.layout) == (10, 1, "batch", "compact")
    assert wrn.get_layer("group2_block1_conv1").strides == (2, 2)
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


# Layouts ----------------------------------------------------------------------------
# "published" strides a block's second conv (JEM/HDGE's wideresnet.py), "compact"
# its first; the 1x1 shortcut strides in both.


def _conv_output_shapes(model: keras.Model) -> dict[str, tuple]:
    """(H, W, C) out of every conv and residual add, by layer name."""
    return {
        layer.name: tuple(layer.output.shape[1:])
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Add)
    }


@pytest.mark.parametrize("layout", ["published", "compact"])
def test_wrn_layout_block_output_shapes(layout):
    model = WideResNet(
        num_classes=3, depth=10, width=2, image_shape=(32, 32, 3), layout=layout
    )
    # The first conv of a strided block keeps its input's resolution when published.
    g2, g3 = {"published": ((32, 32), (16, 16)), "compact": ((16, 16), (8, 8))}[layout]
    assert _conv_output_shapes(model) == {
        "stem_conv": (32, 32, 16),
        "group1_block1_conv1": (32, 32, 32),
        "group1_block1_conv2": (32, 32, 32),
        "group1_block1_shortcut": (32, 32, 32),
        "group1_block1_add": (32, 32, 32),
        "group2_block1_conv1": (*g2, 64),
        "group2_block1_conv2": (16, 16, 64),
        "group2_block1_shortcut": (16, 16, 64),
        "group2_block1_add": (16, 16, 64),
        "group3_block1_conv1": (*g3, 128),
        "group3_block1_conv2": (8, 8, 128),
        "group3_block1_shortcut": (8, 8, 128),
        "group3_block1_add": (8, 8, 128),
    }


def _counted_conv_multiply_adds(model: keras.Model) -> int:
    """Sum over the model's convs of output pixels x kernel size (biases aside)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            total += height * width * int(np.prod(layer.kernel.shape))
    return total


def _closed_form_wrn_multiply_adds(
    depth: int, k: int, image_shape: tuple[int, int, int], layout: str
) -> int:
    """Conv multiply-adds of WRN-depth-k on H x W x C0 inputs, written from the
    architecture (n = (depth - 4) / 6 blocks of widths 16k, 32k, 64k at the pixel
    counts p1 = HW, p2 = ceil(H/2) ceil(W/2), p3 = ceil(H/4) ceil(W/4))."""
    h, w, c0 = image_shape
    n = (depth - 4) // 6
    c1, c2, c3 = 16 * k, 32 * k, 64 * k
    p1, p2, p3 = h * w, -(-h // 2) * -(-w // 2), -(-h // 4) * -(-w // 4)
    stem = 9 * c0 * 16 * p1
    # All 3x3 convs but each group's first (the widening one) map c -> c.
    same_width = 9 * (2 * n - 1) * (c1 * c1 * p1 + c2 * c2 * p2 + c3 * c3 * p3)
    # The widening convs of groups 2 and 3 run before the stride when published.
    q2, q3 = (p1, p2) if layout == "published" else (p2, p3)
    widening = 9 * (16 * c1 * p1 + c1 * c2 * q2 + c2 * c3 * q3)
    shortcuts = (16 * c1 * p1 if k != 1 else 0) + c1 * c2 * p2 + c2 * c3 * p3
    return stem + same_width + widening + shortcuts


@pytest.mark.parametrize("layout", ["published", "compact"])
@pytest.mark.parametrize(
    ("depth", "k", "image_shape"),
    [(10, 1, (32, 32, 3)), (16, 2, (28, 28, 1)), (16, 4, (32, 32, 3))],
)
def test_wrn_multiply_adds_match_closed_form(depth, k, image_shape, layout):
    model = WideResNet(
        num_classes=10, depth=depth, width=k, image_shape=image_shape, layout=layout
    )
    expected = _closed_form_wrn_multiply_adds(depth, k, image_shape, layout)
    assert _counted_conv_multiply_adds(model) == expected


def test_wrn_multiply_adds_of_the_reported_networks():
    # WRN-16-4 (counted above too) and JEM/HDGE's WRN-28-10 at 32 x 32 x 3.
    counts = {
        (depth, k, layout): _closed_form_wrn_multiply_adds(
            depth, k, (32, 32, 3), layout
        )
        for depth, k in ((16, 4), (28, 10))
        for layout in ("published", "compact")
    }
    assert counts == {
        (16, 4, "published"): 505_856_000,
        (16, 4, "compact"): 392_609_792,
        (28, 10, "published"): 5_951_111_168,
        (28, 10, "compact"): 5_243_322_368,
    }


def _layer_outputs(model: keras.Model, names: tuple[str, ...], x) -> list:
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return [keras.ops.convert_to_numpy(y) for y in probe(x, training=False)]


def test_wrn_layouts_share_weights_but_not_outputs():
    kwargs = {"num_classes": 5, "depth": 10, "width": 1, "image_shape": (16, 16, 3)}
    keras.utils.set_random_seed(0)
    compact = WideResNet(layout="compact", **kwargs)
    published = WideResNet(layout="published", **kwargs)
    assert [w.shape for w in published.weights] == [w.shape for w in compact.weights]
    assert [w.path for w in published.weights] == [w.path for w in compact.weights]
    published.set_weights(compact.get_weights())
    x = random_images(4, (16, 16, 3))
    names = ("group1_block1_add", "group2_block1_add", "logits")
    same, differs, logits = (
        np.abs(a - b).max()
        for a, b in zip(
            _layer_outputs(compact, names, x),
            _layer_outputs(published, names, x),
            strict=True,
        )
    )
    assert same == 0.0  # nothing strides before group 2
    assert differs > 1e-3
    assert logits > 1e-6


# Padding of strided convs ---------------------------------------------------------
# PyTorch's padding=1 pads a stride-2 3x3 conv symmetrically; Keras' "same" pads an
# even-sized input only at the bottom/right. "published" must match PyTorch.

_TORCH_PADDING = [[0, 0], [1, 1], [1, 1], [0, 0]]


def _strided_conv_io(layout: str, block: str) -> tuple[str, str]:
    """(layer feeding the strided 3x3 conv, that conv) of a block, by name."""
    if layout == "published":
        return f"{block}_act2", f"{block}_conv2"
    return f"{block}_act1", f"{block}_conv1"


@pytest.mark.parametrize(
    ("layout", "padding"), [("published", _TORCH_PADDING), ("compact", "SAME")]
)
@pytest.mark.parametrize(
    # (16, 16): every strided conv sees an even size; (14, 14): group 3's published
    # conv sees 7 x 7, where "same" happens to be symmetric too.
    "image_shape",
    [(16, 16, 3), (14, 14, 3)],
)
@pytest.mark.parametrize("block", ["group2_block1", "group3_block1"])
def test_wrn_strided_conv_padding(layout, padding, image_shape, block):
    import tensorflow as tf

    model = WideResNet(
        num_classes=3, depth=10, width=1, image_shape=image_shape, layout=layout
    )
    source, conv_name = _strided_conv_io(layout, block)
    conv = model.get_layer(conv_name)
    assert conv.strides == (2, 2)
    assert tuple(conv.kernel.shape[:2]) == (3, 3)
    conv_in, conv_out = _layer_outputs(
        model, (source, conv_name), random_images(2, image_shape)
    )
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (conv.kernel, conv.bias))
    expected = tf.nn.conv2d(conv_in, kernel, strides=2, padding=padding) + bias
    np.testing.assert_allclose(conv_out, expected.numpy(), rtol=1e-5, atol=1e-5)

    if conv_in.shape[1] % 2 == 0:  # the two paddings differ here, so both matter
        other = "SAME" if layout == "published" else _TORCH_PADDING
        wrong = tf.nn.conv2d(conv_in, kernel, strides=2, padding=other) + bias
        assert np.abs(conv_out - wrong.numpy()).max() > 1e-3


@pytest.mark.parametrize(("layout", "offset"), [("published", 0), ("compact", 1)])
def test_wrn_strided_conv_centres(layout, offset):
    # With a centre-tap kernel the strided conv returns the pixels it is centred
    # on: 0, 2, 4, ... when published (those the 1x1 shortcut picks), 1, 3, 5, ...
    # under "same".
    model = WideResNet(
        num_classes=3, depth=10, width=1, image_shape=(16, 16, 3), layout=layout
    )
    source, conv_name = _strided_conv_io(layout, "group2_block1")
    conv = model.get_layer(conv_name)
    in_channels, out_channels = conv.kernel.shape[2:]
    centre_tap = np.zeros(conv.kernel.shape, "float32")
    centre_tap[1, 1] = np.eye(in_channels, out_channels)
    conv.set_weights([centre_tap, np.zeros(out_channels, "float32")])
    conv_in, conv_out = _layer_outputs(
        model, (source, conv_name), random_images(2, (16, 16, 3))
    )
    channels = min(in_channels, out_channels)
    np.testing.assert_array_equal(
        conv_out[..., :channels], conv_in[:, offset::2, offset::2, :channels]
    )


def test_wrn_only_published_strided_convs_are_padded():
    def paddings(layout: str) -> list[tuple[str, tuple]]:
        model = WideResNet(
            num_classes=3, depth=16, width=1, image_shape=(16, 16, 3), layout=layout
        )
        return [
            (layer.name, layer.padding)
            for layer in model.layers
            if isinstance(layer, keras.layers.ZeroPadding2D)
        ]

    assert paddings("compact") == []
    assert paddings("published") == [
        ("group2_block1_conv2_pad", ((1, 1), (1, 1))),
        ("group3_block1_conv2_pad", ((1, 1), (1, 1))),
    ]


def _legacy_config(model: WideResNet) -> dict:
    config = model.get_config()
    del config["layout"]
    return config


def _assert_same_network(model: keras.Model, clone: keras.Model, x) -> None:
    assert _conv_output_shapes(clone) == _conv_output_shapes(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )


def test_wrn_config_without_layout_loads_compact(tmp_path):
    image_shape = (16, 16, 3)
    model = WideResNet(
        num_classes=5, depth=10, width=1, image_shape=image_shape, layout="compact"
    )
    x = random_images(4, image_shape)

    clone = WideResNet.from_config(_legacy_config(model))
    assert clone.layout == "compact"
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    _assert_same_network(model, clone, x)

    # The path a nested backbone (HDGEClassifier's) takes.
    serialized = keras.saving.serialize_keras_object(model)
    del serialized["config"]["layout"]
    revived = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(revived, WideResNet)
    assert revived.layout == "compact"

    # A .keras file written before `layout` existed: same archive, key removed.
    new_path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    model.save(new_path)
    with zipfile.ZipFile(new_path) as src, zipfile.ZipFile(old_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                saved = json.loads(data)
                del saved["config"]["layout"]
                data = json.dumps(saved).encode()
            dst.writestr(item, data)
    with zipfile.ZipFile(old_path) as archive:
        assert "layout" not in json.loads(archive.read("config.json"))["config"]
    loaded = keras.saving.load_model(old_path)
    assert isinstance(loaded, WideResNet)
    assert loaded.layout == "compact"
    _assert_same_network(model, loaded, x)


def test_wrn_default_layout_is_published_and_saved():
    model = WideResNet(num_classes=3, depth=10, width=1, image_shape=(8, 8, 1))
    assert model.layout == "published"
    assert model.get_config()["layout"] == "published"
    # An explicit layout wins over the legacy default.
    clone = WideResNet.from_config(model.get_config())
    assert clone.layout == "published"
    assert clone.get_layer("group2_block1_conv1").strides == (1, 1)
    assert clone.get_layer("group2_block1_conv2").strides == (2, 2)


def test_base_config_builds_the_published_layout():
    from hdge_tf.configs import base

    kwargs = dict(base.get_config().backbone)
    assert kwargs["layout"] == "published"
    kwargs.update(depth=10, width=1)  # WRN-28-10 itself is slow to build here
    wrn = build_backbone(kwargs.pop("name"), 10, (32, 32, 3), **kwargs)
    assert wrn.layout == "published"


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: WideResNet(10, depth=10, width=1, image_shape=(32, 32, 1)),
        lambda: SmallCNN(10, filters=(4, 8), dense_units=8),
    ],
    ids=["wrn", "small_cnn"],
)
def test_backbones_hold_only_stock_keras_layers(model_fn):
    """`.keras` files store a layer's weights under a path named for its class:
    a subclass of Conv2D or Dense (e.g. to set the bias init) would move them,
    and every file saved before would fail to load ("expected 2 variables, but
    received 0"). The torch-default biases come from initializers instead."""
    for layer in model_fn().layers:
        assert type(layer).__module__.startswith("keras."), (layer.name, type(layer))
