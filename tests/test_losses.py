"""The contrastive terms against a slow, independent numpy computation."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp, softmax

from hdge_tf import losses

N, C, K, TAU = 6, 5, 37, 0.1


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_contrast(logits, label_weights, queue_kc, tau, formulation):
    """-log p(x|y) as the published code builds it: a full [N, C, K] tensor, the
    positive appended in front of the K negatives, and a (1 + K)-way softmax."""
    z = _unit_rows(logits)  # [N, C]
    out = np.zeros(len(z))
    for i in range(len(z)):
        w = label_weights[i]
        if formulation == "reference":
            pos = logsumexp(w * z[i])
            neg = logsumexp(w[None, :] * queue_kc, axis=1)  # [K]
            scores = np.concatenate([[pos], neg]) / tau
            out[i] = -np.log(softmax(scores)[0])
        else:  # paper: expected (1+K)-way CE under the label weights
            for c in range(len(w)):
                scores = np.concatenate([[z[i, c]], queue_kc[:, c]]) / tau
                out[i] += w[c] * -np.log(softmax(scores)[0])
    return out


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(N, C)).astype(np.float32) * 3
    labels = rng.integers(0, C, N).astype(np.int32)
    queue_kc = _unit_rows(rng.normal(size=(K, C))).astype(np.float32)
    return logits, labels, queue_kc


@pytest.mark.parametrize("formulation", ["paper", "reference"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_log_px_given_y_matches_numpy(batch, formulation, smoothing):
    logits, labels, queue_kc = batch
    weights = np.eye(C)[labels] * (1 - smoothing) + smoothing / C
    expected = numpy_contrast(logits, weights, queue_kc, TAU, formulation)
    got = losses.contrastive_log_px_given_y(
        logits, labels, queue_kc.T, TAU, formulation, smoothing
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_reference_one_hot_positive_counts_masked_classes(batch):
    """Queue entries equal to the positive give log(1 + K) in both scorings."""
    logits, labels, _ = batch
    # A queue that scores -inf-like keeps only the positive: loss -> 0. A queue whose
    # entries equal the positive's score gives loss log(1 + K).
    same = np.tile(_unit_rows(logits)[:1], (K, 1)).astype(np.float32)
    one_label = np.full(N, labels[0], np.int32)
    got = losses.contrastive_log_px_given_y(
        logits[:1], one_label[:1], same.T, TAU, "reference"
    )
    np.testing.assert_allclose(got.numpy(), [np.log(1 + K)], rtol=1e-5)


def test_masked_slots_are_ignored(batch):
    logits, labels, queue_kc = batch
    valid = np.arange(K) < 10
    for formulation in ("paper", "reference"):
        got = losses.contrastive_log_px_given_y(
            logits, labels, queue_kc.T, TAU, formulation, valid=valid
        )
        want = numpy_contrast(
            logits, np.eye(C)[labels], queue_kc[:10], TAU, formulation
        )
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    empty = losses.contrastive_log_px_given_y(
        logits, labels, queue_kc.T, TAU, valid=np.zeros(K, bool)
    )
    np.testing.assert_allclose(empty.numpy(), 0.0, atol=1e-7)


def test_log_px_matches_numpy(batch):
    logits, _, queue_kc = batch
    z = _unit_rows(logits)
    pos = logsumexp(z, axis=1) / TAU
    neg = logsumexp(queue_kc, axis=1) / TAU
    expected = [-np.log(softmax(np.concatenate([[p], neg]))[0]) for p in pos]
    got = losses.contrastive_log_px(logits, queue_kc.T, TAU)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_gradient_flows_through_batch_only(batch, formulation):
    logits, labels, queue_kc = batch
    logits = tf.Variable(logits)
    queue = tf.Variable(queue_kc.T)
    with tf.GradientTape(persistent=True) as tape:
        pxy = tf.reduce_sum(
            losses.contrastive_log_px_given_y(logits, labels, queue, TAU, formulation)
        )
        px = tf.reduce_sum(losses.contrastive_log_px(logits, queue, TAU))
    for loss in (pxy, px):
        grad_logits, grad_queue = tape.gradient(loss, [logits, queue])
        assert grad_queue is None
        assert np.abs(grad_logits.numpy()).max() > 1e-4


def test_cross_entropy_matches_numpy(batch):
    logits, labels, _ = batch
    expected = -np.log(softmax(logits, axis=1)[np.arange(N), labels])
    np.testing.assert_allclose(
        losses.cross_entropy(labels, logits).numpy(), expected, rtol=1e-5
    )
    smooth = np.eye(C)[labels] * 0.8 + 0.2 / C
    expected = -(smooth * np.log(softmax(logits, axis=1))).sum(1)
    np.testing.assert_allclose(
        losses.cross_entropy(labels, logits, 0.2).numpy(), expected, rtol=1e-5
    )


def test_unknown_formulation(batch):
    logits, labels, queue_kc = batch
    with pytest.raises(ValueError, match="formulation 'moco'"):
        losses.contrastive_log_px_given_y(logits, labels, queue_kc.T, TAU, "moco")


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_each_class_column_matches_numpy(batch, formulation):
    logits, _, queue_kc = batch
    got = losses.contrastive_log_px_given_each_y(logits, queue_kc.T, TAU, formulation)
    for c in range(C):
        expected = numpy_contrast(
            logits, np.eye(C)[[c] * N], queue_kc, TAU, formulation
        )
        np.testing.assert_allclose(got.numpy()[:, c], expected, rtol=1e-5, atol=1e-5)
