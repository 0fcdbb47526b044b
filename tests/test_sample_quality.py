"""The sample-quality judge: IS analogue, Fréchet distance and class agreement
against hand values and a scipy reference; the judge's features and p(y|x)
against the same network read independently."""

import keras
import numpy as np
import pytest
import scipy.linalg
from conftest import tiny_backbone

from hdge_tf import HDGEClassifier
from hdge_tf.evaluation.sample_quality import (
    SampleJudge,
    class_agreement,
    class_agreement_per_class,
    frechet_distance,
    inception_score,
    value_range,
)

# Inception score -------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_inception_score_of_confident_even_predictions_is_the_class_count(classes):
    """One-hot rows, each class equally often: p(y) is uniform, every KL is
    log C, so IS = C."""
    probs = np.tile(np.eye(classes), (4, 1))
    assert inception_score(probs) == pytest.approx(classes, rel=1e-9)


def test_inception_score_of_identical_predictions_is_one():
    """Every image gets the same prediction: p(y|x) = p(y), KL 0, IS 1."""
    probs = np.tile([[0.2, 0.5, 0.3]], (7, 1))
    assert inception_score(probs) == pytest.approx(1.0, abs=1e-12)


def test_inception_score_on_a_hand_example():
    """Two images, [.9, .1] and [.1, .9]: p(y) = [.5, .5], each
    KL = .9 log 1.8 + .1 log .2, IS = exp(KL)."""
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert inception_score(probs) == pytest.approx(np.exp(kl), rel=1e-12)


# Fréchet distance ------------------------------------------------------------------


def _correlated_features(rng, n, dim):
    mixing = rng.normal(size=(dim, dim))
    return rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim)


def _reference_frechet(a, b):
    """FID's formula with scipy's general matrix square root, written apart from
    the code under test (which uses an eigendecomposition)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    return float(
        np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2.0 * np.real(root))
    )


def test_frechet_distance_of_a_set_with_itself_is_zero():
    """Same mean, same covariance: distance 0 (up to round-off)."""
    a = _correlated_features(np.random.default_rng(0), 200, 6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift():
    """Shifting every feature moves the mean and keeps the covariance, so only
    |shift|² remains: here 1 + 4 + 0 + 9 = 14."""
    a = _correlated_features(np.random.default_rng(1), 150, 4)
    shift = np.array([1.0, -2.0, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(14.0, rel=1e-6)


@pytest.mark.parametrize("seed", [2, 3])
def test_frechet_distance_matches_a_scipy_reference(seed):
    """Different correlated Gaussians, compared with the sqrtm formula."""
    rng = np.random.default_rng(seed)
    a = _correlated_features(rng, 300, 5)
    b = 0.7 * _correlated_features(rng, 250, 5) + 0.5
    expected = _reference_frechet(a, b)
    assert expected > 1.0  # a nontrivial case
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_rejects_mismatched_shapes():
    """Different feature widths cannot be compared; the error names both shapes."""
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(12, 4\)"):
        frechet_distance(np.zeros((10, 3)), np.zeros((12, 4)))
    with pytest.raises(ValueError, match=r"\(10,\)"):
        frechet_distance(np.zeros(10), np.zeros((10, 1)))


# Class agreement -------------------------------------------------------------------


def test_class_agreement_on_a_hand_example():
    """argmaxes 1, 0, 2, 2 against labels 1, 1, 2, 0: two of four agree."""
    probs = np.array(
        [[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]]
    )
    assert class_agreement(probs, [1, 1, 2, 0]) == pytest.approx(0.5)
    assert class_agreement(probs, [1, 0, 2, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="4 predictions for 3 labels"):
        class_agreement(probs, [1, 0, 2])


# The judge -------------------------------------------------------------------------


def _judge_network():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(5, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(3)(h)
    return keras.Model(inputs, outputs)


def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _images(n=12, scale=0.9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-scale, scale, (n, 8, 8, 1)).astype(np.float32)


def test_judge_features_are_the_hidden_layer_and_probabilities_its_softmax():
    """Features = output of the layer feeding the logits, read with a Model cut
    at that layer; p(y|x) = softmax of the full network's logits."""
    network = _judge_network()
    judge = SampleJudge(network, batch_size=5)  # batches of 5, 5 and 2
    x = _images()
    hidden = keras.Model(network.input, network.get_layer("hidden").output)
    expected_features = np.asarray(hidden(x))
    assert expected_features.shape == (12, 5)
    np.testing.assert_allclose(judge.features(x), expected_features, atol=1e-6)
    expected_probs = _softmax(network(x))
    probs = judge.probabilities(x)
    assert probs.shape == (12, 3)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def test_judge_clips_inputs_to_the_data_range():
    """SGLD samples outside [-1, 1] are judged as their clipped selves, which
    differ from the unclipped network output."""
    network = _judge_network()
    judge = SampleJudge(network)
    x = _images(scale=1.0, seed=1) * 5.0
    clipped = np.clip(x, -1.0, 1.0)
    assert np.abs(x).max() > 1.0
    np.testing.assert_allclose(
        judge.probabilities(x), _softmax(network(clipped)), atol=1e-6
    )
    np.testing.assert_allclose(judge.features(x), judge.features(clipped), atol=1e-6)
    # Not clipping would have changed the answer (so the check above can fail).
    assert not np.allclose(_softmax(network(x)), _softmax(network(clipped)), atol=1e-4)


def test_judge_score_combines_the_three_numbers():
    """score() = the module's functions applied to the judge's own outputs."""
    network = _judge_network()
    judge = SampleJudge(network)
    x, reference = _images(seed=2), _images(n=20, seed=3)
    labels = np.array([0, 1, 2] * 4)
    probs = _softmax(network(x))
    hidden = keras.Model(network.input, network.get_layer("hidden").output)
    result = judge.score(x, labels, np.asarray(hidden(reference), np.float64))
    assert result["num_images"] == 12
    assert result["inception_score"] == pytest.approx(inception_score(probs), rel=1e-5)
    assert result["class_agreement"] == pytest.approx(
        np.mean(probs.argmax(axis=1) == labels)
    )
    assert result["frechet_distance"] == pytest.approx(
        _reference_frechet(
            np.asarray(hidden(x), np.float64), np.asarray(hidden(reference))
        ),
        rel=1e-4,
        abs=1e-6,
    )
    per_class = [np.mean(probs[labels == c].argmax(axis=1) == c) for c in range(3)]
    assert result["class_agreement_per_class"] == pytest.approx(per_class)
    assert result["worst_class_agreement"] == pytest.approx(min(per_class))
    assert set(judge.score(x)) == {
        "num_images",
        "inception_score",
        "min_value",
        "max_value",
        "in_range_fraction",
    }


def test_judge_reads_an_hdge_classifiers_backbone():
    """An HDGEClassifier is judged through its backbone's last Dense layer."""
    backbone = tiny_backbone(num_classes=4, seed=4)
    judge = SampleJudge(HDGEClassifier(backbone, queue_size=32))
    x = _images(n=6, seed=5)
    np.testing.assert_allclose(judge.probabilities(x), _softmax(backbone(x)), atol=1e-6)
    flatten = keras.Model(backbone.input, backbone.layers[-1].input)
    np.testing.assert_allclose(judge.features(x), np.asarray(flatten(x)), atol=1e-6)


def test_judge_needs_a_dense_head():
    """Without a Dense logits layer there is no feature space: ValueError."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(3)(h)
    outputs = keras.layers.Activation("linear")(h)
    with pytest.raises(ValueError, match="Activation"):
        SampleJudge(keras.Model(inputs, outputs))


def test_per_class_agreement_and_value_range_on_hand_examples():
    probs = np.array(
        [[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]]
    )
    # Class 0: image 4 (argmax 2): 0/1; class 1: images 1, 2: 1/2; class 2: 1/1.
    assert class_agreement_per_class(probs, [1, 1, 2, 0]) == [0.0, 0.5, 1.0]
    images = np.zeros((3, 2, 2, 1), np.float32)
    images[1, 0, 0, 0] = 1.5
    images[2, 1, 1, 0] = -1.0
    assert value_range(images) == {
        "min_value": -1.0,
        "max_value": 1.5,
        "in_range_fraction": pytest.approx(2 / 3),
    }
