"""Class-Gaussian chain starts (JEM++): fit, draws, the model's use of them."""

import keras
import numpy as np
import pytest
from conftest import tiny_backbone

from hdge_tf import HDGEClassifier, SGLDSettings, generation
from hdge_tf.chain_starts import ClassGaussians

SHAPE = (8, 8, 1)


def _two_classes(n=400, seed=0):
    """Class 0 around -0.4, class 1 around +0.4; each varies mostly along one
    direction (std 0.3) plus a little isotropic noise (std 0.02)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=64)
    direction /= np.linalg.norm(direction)
    labels = np.repeat([0, 1], n)
    centers = np.where(labels[:, None] == 0, -0.4, 0.4)
    images = (
        centers
        + 0.3 * rng.normal(size=(2 * n, 1)) * direction
        + 0.02 * rng.normal(size=(2 * n, 64))
    )
    return images.reshape(-1, *SHAPE).astype(np.float32), labels, direction


def test_draws_match_each_class_mean_and_variances():
    images, labels, direction = _two_classes()
    starts = ClassGaussians(2, SHAPE, rank=4, uniform_fraction=0.0)
    starts.fit(images, labels)
    for c in (0, 1):
        draws = starts.sample(np.full(4000, c), [1, 2]).numpy().reshape(4000, -1)
        data = images[labels == c].reshape(-1, 64)
        np.testing.assert_allclose(draws.mean(0), data.mean(0), atol=0.03)
        # Variance along the main direction and in total, as in the data.
        np.testing.assert_allclose(
            np.var(draws @ direction), np.var(data @ direction), rtol=0.15
        )
        np.testing.assert_allclose(draws.var(0).sum(), data.var(0).sum(), rtol=0.15)


def test_uniform_fraction_mixes_in_uniform_noise_and_draws_are_clipped():
    images = np.full((20, *SHAPE), 0.95, np.float32)
    images += np.random.default_rng(0).normal(0, 0.1, images.shape).astype(np.float32)
    starts = ClassGaussians(1, SHAPE, rank=2, uniform_fraction=0.25)
    starts.fit(images, np.zeros(20))
    draws = starts.sample(np.zeros(4000, np.int32), [3, 4]).numpy()
    assert draws.min() >= -1.0 and draws.max() <= 1.0
    uniform = draws.reshape(4000, -1).min(-1) < 0.2  # far from the class
    assert abs(uniform.mean() - 0.25) < 0.03
    # A seed fixes the draws.
    np.testing.assert_array_equal(
        draws, starts.sample(np.zeros(4000, np.int32), [3, 4]).numpy()
    )


def test_fit_needs_two_images_per_class():
    with pytest.raises(ValueError, match="class 1: it has 1 training image"):
        ClassGaussians(2, SHAPE).fit(np.zeros((3, *SHAPE)), np.array([0, 0, 1]))


def _model(**sgld):
    """A log p(x|y) model whose SGLD settings are `sgld` over class Gaussian
    starts, 0 steps and a 400-row buffer."""
    backbone = tiny_backbone(num_classes=2, image_shape=SHAPE)
    sgld = {
        "steps": 0,
        "buffer_size": 400,
        "start": "class_gaussian",
        "start_uniform_fraction": 0.0,
        **sgld,
    }
    model = HDGEClassifier(
        backbone, queue_size=64, pxy_sgld_weight=1.0, sgld=SGLDSettings(**sgld)
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _class_means(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(len(rows), -1).mean(-1)


def test_fit_chain_starts_fills_each_class_slice_of_the_buffer():
    images, labels, _ = _two_classes()
    model = _model()
    model.fit_chain_starts(images, labels)
    buffer = model.replay_buffer.images.numpy()
    np.testing.assert_allclose(_class_means(buffer[:200]).mean(), -0.4, atol=0.02)
    np.testing.assert_allclose(_class_means(buffer[200:]).mean(), 0.4, atol=0.02)


def test_restarted_training_chains_start_from_the_class_gaussians():
    """Every chain restarted, 0 steps: the rows written back are Gaussian draws
    of the chain's class (the buffer was uniform noise, mean 0)."""
    images, labels, _ = _two_classes()
    model = _model(reinit_freq=1.0)
    model.fit_chain_starts(images, labels)
    model.replay_buffer.images.assign(
        np.random.default_rng(0).uniform(-1, 1, (400, *SHAPE)).astype(np.float32)
    )
    before = model.replay_buffer.images.numpy().copy()
    batch = np.concatenate([np.arange(16), 400 + np.arange(16)])
    model.train_on_batch(images[batch], labels[batch])
    after = model.replay_buffer.images.numpy()
    rows = np.flatnonzero((after != before).reshape(400, -1).any(-1))
    assert len(rows) >= 28
    means = _class_means(after[rows])
    np.testing.assert_allclose(means[rows < 200], -0.4, atol=0.1)
    np.testing.assert_allclose(means[rows >= 200], 0.4, atol=0.1)


def test_fit_without_fitted_starts_is_refused():
    images, labels, _ = _two_classes(n=8)
    with pytest.raises(ValueError, match="fit_chain_starts"):
        _model().fit(images, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="sgld.start='class_gaussian'"):
        _model(start="uniform").fit_chain_starts(images, labels)


def test_gaussian_start_for_sampling_and_the_keras_round_trip(tmp_path):
    images, labels, _ = _two_classes()
    model = _model()
    model.fit_chain_starts(images, labels)
    assert generation.available_starts(model) == ("fresh", "buffer", "gaussian")
    starts, drawn = generation.draw_samples(model, 50, True, 0, "gaussian", seed=1)
    np.testing.assert_allclose(_class_means(starts[drawn == 0]).mean(), -0.4, atol=0.03)
    np.testing.assert_allclose(_class_means(starts[drawn == 1]).mean(), 0.4, atol=0.03)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.chain_starts.fitted and loaded.sgld.start == "class_gaussian"
    np.testing.assert_array_equal(
        loaded.chain_starts.means.numpy(), model.chain_starts.means.numpy()
    )
    with pytest.raises(ValueError, match="fitted class Gaussians"):
        generation.draw_samples(_model(start="uniform"), 2, True, 0, "gaussian")
