"""The logits' read-outs: against scipy, in float32 under any policy, one home."""

import ast
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone
from keras_checks import random_images
from scipy.special import logsumexp, softmax

from hdge_tf import energy
from hdge_tf.hardware import precision_policy

PACKAGE = pathlib.Path(energy.__file__).parent


def _model_and_images():
    """A 4-class network on 8x8x1 images and 12 images in [-1, 1]."""
    shape = (8, 8, 1)
    return tiny_backbone(num_classes=4, image_shape=shape), random_images(12, shape)


def test_read_outs_match_scipy():
    logits = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32) * 4
    labels = np.array([0, 4, 2, 2, 1, 3, 0])
    np.testing.assert_allclose(
        energy.log_px(logits), logsumexp(logits, axis=-1), rtol=1e-6
    )
    np.testing.assert_array_equal(
        energy.log_pxy(logits, labels), logits[np.arange(7), labels]
    )
    np.testing.assert_allclose(
        energy.probabilities(logits), softmax(logits, axis=-1), rtol=1e-5
    )
    np.testing.assert_allclose(
        energy.max_softmax(logits), softmax(logits, axis=-1).max(-1), rtol=1e-5
    )


def test_log_density_is_logsumexp_or_the_labels_logit():
    model, images = _model_and_images()
    logits = model(images).numpy()
    np.testing.assert_allclose(
        energy.log_density(model, images), logsumexp(logits, axis=-1), rtol=1e-5
    )
    labels = np.arange(len(images)) % 4
    np.testing.assert_allclose(
        energy.log_density(model, images, labels),
        logits[np.arange(len(images)), labels],
        rtol=1e-5,
    )


def test_read_outs_are_float32_from_bfloat16_logits():
    """The network computes in bfloat16; every read-out is float32."""
    with precision_policy("mixed_bfloat16"):
        model, images = _model_and_images()
    raw = model(images, training=False)
    assert raw.dtype == tf.bfloat16
    logits = energy.logits(model, images)
    assert logits.dtype == tf.float32
    np.testing.assert_array_equal(logits, tf.cast(raw, tf.float32))
    for read_out in (
        energy.log_px(raw),
        energy.log_pxy(raw, np.zeros(len(images), np.int32)),
        energy.probabilities(raw),
        energy.max_softmax(raw),
        energy.log_density(model, images),
    ):
        assert read_out.dtype == tf.float32
    np.testing.assert_allclose(
        energy.log_px(raw), logsumexp(logits.numpy(), axis=-1), rtol=1e-6
    )


def test_predict_logits_batches_like_one_call():
    model, images = _model_and_images()
    whole = energy.logits(model, images).numpy()
    for batch_size in (5, 12, 100):  # a last partial batch, one batch, one short
        got = energy.predict_logits(model, images, batch_size)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6)
    assert energy.predict_logits(model, images[:0]).size == 0


def _hdge_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / module).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("hdge_tf")}


@pytest.mark.parametrize(
    "module", ["energy.py", "model.py", "sampling.py", "losses.py", "export.py"]
)
def test_data_flows_one_way_to_evaluation(module):
    """The model, its parts and the export read the logits from `energy`, never
    from `evaluation` (which comes after them)."""
    imports = _hdge_imports(module)
    assert not {n for n in imports if n.startswith("hdge_tf.evaluation")}, imports
