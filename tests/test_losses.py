"""Every loss term against a slow, independent numpy computation or a closed form."""

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


def published_smoothing(labels, num_classes, smoothing):
    """The published code's smoothed targets, written out entry by entry: 1 - s on
    the label, s / (C - 1) on every other class."""
    out = np.empty((len(labels), num_classes))
    for i, label in enumerate(labels):
        for c in range(num_classes):
            out[i, c] = 1 - smoothing if c == label else smoothing / (num_classes - 1)
    return out


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smooth_labels_is_the_published_form(smoothing):
    labels = np.array([0, 3, 4, 1])
    got = losses.smooth_labels(tf.one_hot(labels, C), smoothing).numpy()
    on = got[np.arange(len(labels)), labels]
    off = got[np.eye(C, dtype=bool)[labels] == 0]
    np.testing.assert_allclose(on, 1 - smoothing, rtol=1e-6)
    np.testing.assert_allclose(off, smoothing / (C - 1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(got, published_smoothing(labels, C, smoothing), 1e-6)
    if smoothing:  # not Keras's 1 - s + s/C and s/C
        assert not np.allclose(on, 1 - smoothing + smoothing / C)


def test_smooth_labels_rejects_out_of_range():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            losses.smooth_labels(tf.one_hot([0], C), bad)


@pytest.mark.parametrize("formulation", ["paper", "reference"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_nll_x_given_y_matches_numpy(batch, formulation, smoothing):
    logits, labels, queue_kc = batch
    weights = published_smoothing(labels, C, smoothing)
    expected = numpy_contrast(logits, weights, queue_kc, TAU, formulation)
    got = losses.contrastive_nll_x_given_y(
        logits, labels, queue_kc.T, TAU, formulation, smoothing
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_reference_counts_the_masked_classes_as_exp_0(batch):
    """Closed form, no oracle: the query's normalized logits point at its class
    (ẑ = e_y) and every queue entry at another class (q̂_y = 0). Published code
    (logsumexp of onehot · ẑ): positive log(e + C - 1), negatives log(1 + C - 1), so
    the loss is log(1 + K (C / (e + C - 1))^(1/τ)). The paper scoring gives
    log(1 + K exp(-1/τ)); a scoring that dropped the C - 1 exp(0) terms would too.
    """
    _, labels, _ = batch
    y = int(labels[0])
    logits = 3.0 * np.eye(C, dtype=np.float32)[[y]]
    other = (y + 1) % C
    queue_kc = np.tile(np.eye(C, dtype=np.float32)[[other]], (K, 1))
    reference = losses.contrastive_nll_x_given_y(
        logits, [y], queue_kc.T, TAU, "reference"
    ).numpy()
    paper = losses.contrastive_nll_x_given_y(
        logits, [y], queue_kc.T, TAU, "paper"
    ).numpy()
    want_reference = np.log1p(K * (C / (np.e + C - 1)) ** (1 / TAU))
    want_paper = np.log1p(K * np.exp(-1 / TAU))
    np.testing.assert_allclose(reference, [want_reference], rtol=1e-5)
    np.testing.assert_allclose(paper, [want_paper], rtol=1e-4)
    assert want_reference > 100 * want_paper  # 1.07 vs 0.0017: the test can tell


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_smoothed_contrast_closed_form(formulation):
    """One example, one queue entry, smoothing s, written out by hand with the
    published targets (a = 1 - s on y, b = s / (C - 1) elsewhere); ẑ = e_0, q̂ = e_1.

    reference: scores are logsumexp(w · v) over classes, w the smoothed label:
      positive log(e^a + (C - 1)), negative log(1 + e^b + (C - 2))
    paper: Σ_c w_c · (-log softmax([ẑ_c, q̂_c] / τ)[0]).
    """
    s = 0.2
    a, b = 1 - s, s / (C - 1)
    logits = np.eye(C, dtype=np.float32)[[0]]
    queue_kc = np.eye(C, dtype=np.float32)[[1]]
    got = losses.contrastive_nll_x_given_y(
        logits, [0], queue_kc.T, TAU, formulation, s
    ).numpy()
    if formulation == "reference":
        pos = np.log(np.exp(a) + C - 1) / TAU
        neg = np.log(1 + np.exp(b) + C - 2) / TAU
        want = np.log1p(np.exp(neg - pos))
    else:

        def ce(p, n):
            return np.log1p(np.exp((n - p) / TAU))

        # class 0: ẑ=1, q̂=0; class 1: ẑ=0, q̂=1; the other C - 2: 0 vs 0.
        want = a * ce(1, 0) + b * ce(0, 1) + (C - 2) * b * ce(0, 0)
    np.testing.assert_allclose(got, [want], rtol=1e-5)


def test_masked_slots_are_ignored(batch):
    logits, labels, queue_kc = batch
    valid = np.arange(K) < 10
    for formulation in ("paper", "reference"):
        got = losses.contrastive_nll_x_given_y(
            logits, labels, queue_kc.T, TAU, formulation, valid=valid
        )
        want = numpy_contrast(
            logits, np.eye(C)[labels], queue_kc[:10], TAU, formulation
        )
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    empty = losses.contrastive_nll_x_given_y(
        logits, labels, queue_kc.T, TAU, valid=np.zeros(K, bool)
    )
    np.testing.assert_allclose(empty.numpy(), 0.0, atol=1e-7)


def test_nll_x_matches_numpy(batch):
    logits, _, queue_kc = batch
    z = _unit_rows(logits)
    pos = logsumexp(z, axis=1) / TAU
    neg = logsumexp(queue_kc, axis=1) / TAU
    expected = [-np.log(softmax(np.concatenate([[p], neg]))[0]) for p in pos]
    got = losses.contrastive_nll_x(logits, queue_kc.T, TAU)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_gradient_flows_through_batch_only(batch, formulation):
    logits, labels, queue_kc = batch
    logits = tf.Variable(logits)
    queue = tf.Variable(queue_kc.T)
    with tf.GradientTape(persistent=True) as tape:
        pxy = tf.reduce_sum(
            losses.contrastive_nll_x_given_y(logits, labels, queue, TAU, formulation)
        )
        px = tf.reduce_sum(losses.contrastive_nll_x(logits, queue, TAU))
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


@pytest.mark.parametrize("smoothing", [0.1, 0.2])
def test_smoothed_cross_entropy_matches_numpy(batch, smoothing):
    """-(1 - s) log p(y|x) - s/(C - 1) Σ_{c≠y} log p(c|x), per example."""
    logits, labels, _ = batch
    log_p = np.log(softmax(logits.astype(np.float64), axis=1))
    expected = np.array(
        [
            -(1 - smoothing) * log_p[i, y]
            - smoothing / (C - 1) * (log_p[i].sum() - log_p[i, y])
            for i, y in enumerate(labels)
        ]
    )
    got = losses.cross_entropy(labels, logits, smoothing).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    keras_style = np.eye(C)[labels] * (1 - smoothing) + smoothing / C
    assert not np.allclose(got, -(keras_style * log_p).sum(1), rtol=1e-4)


def test_unknown_formulation(batch):
    logits, labels, queue_kc = batch
    with pytest.raises(ValueError, match="formulation 'moco'"):
        losses.contrastive_nll_x_given_y(logits, labels, queue_kc.T, TAU, "moco")


@pytest.mark.parametrize("formulation", ["paper", "reference"])
def test_each_class_column_matches_numpy(batch, formulation):
    logits, _, queue_kc = batch
    got = losses.contrastive_nll_x_given_each_y(logits, queue_kc.T, TAU, formulation)
    for c in range(C):
        expected = numpy_contrast(
            logits, np.eye(C)[[c] * N], queue_kc, TAU, formulation
        )
        np.testing.assert_allclose(got.numpy()[:, c], expected, rtol=1e-5, atol=1e-5)


def test_sgld_nll_x_matches_numpy():
    """-(mean log p(x_data) - mean log p(x_sample)) for 6 data points and 9
    samples; its gradient is -1/6 on each data density, +1/9 on each sample's."""
    rng = np.random.default_rng(3)
    data = tf.Variable(rng.normal(size=6) * 4)
    samples = tf.Variable(rng.normal(size=9) * 4)
    with tf.GradientTape() as tape:
        term = losses.sgld_nll_x(data, samples)
    assert term.dtype == tf.float32
    want = -(data.numpy().mean() - samples.numpy().mean())
    np.testing.assert_allclose(term, want, rtol=1e-5)
    grad_data, grad_samples = tape.gradient(term, [data, samples])
    np.testing.assert_allclose(grad_data, np.full(6, -1 / 6), rtol=1e-6)
    np.testing.assert_allclose(grad_samples, np.full(9, 1 / 9), rtol=1e-6)


def test_energy_l2_matches_numpy():
    """mean(E_data²) + mean(E_sample²): each set averaged on its own (4 data
    points, 10 samples)."""
    rng = np.random.default_rng(4)
    data, samples = rng.normal(size=4) * 3, rng.normal(size=10) * 3
    got = losses.energy_l2(data, samples)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got, np.mean(data**2) + np.mean(samples**2), rtol=1e-5)
