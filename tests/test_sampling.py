"""SGLD on a tiny fixed classifier: the update rule, its direction, and one trace."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone

from hdge_tf import energy, sampling


@pytest.fixture(scope="module")
def model():
    return tiny_backbone(num_classes=4, image_shape=(8, 8, 1), seed=0)


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(-1, 1, (12, 8, 8, 1)).astype(np.float32)


def test_one_noiseless_step_is_gradient_ascent(model, images):
    _, grad = sampling.log_density_gradient(model, images)
    assert np.abs(grad.numpy()).max() > 0
    stepped = sampling.sgld(model, images, steps=1, step_size=0.5, noise_std=0.0)
    np.testing.assert_allclose(stepped, images + 0.5 * grad.numpy(), atol=1e-6)
    # The noise term is noise_std * N(0, I): zero step size leaves only it.
    noisy = sampling.sgld(model, images, 1, step_size=0.0, noise_std=0.1, seed=3)
    assert 0.08 < np.std(noisy.numpy() - images) < 0.12


@pytest.mark.parametrize("steps", [0, 3, sampling.UNROLL, 2 * sampling.UNROLL + 2])
def test_chain_is_its_steps_one_by_one(model, images, steps):
    """The chain groups `UNROLL` steps per loop iteration (and a remainder one
    by one); step i still draws fold_in(seed, i): the same as single steps."""
    seed = sampling.seed_pair(5)
    x = tf.constant(images)
    for i in range(steps):
        noise = sampling.normal_noise(tf.shape(x), sampling.fold_in(seed, i))
        x = tf.clip_by_value(sampling.sgld_step(model, x, 1.0, 0.01, noise), -1, 1)
    chain = sampling.sgld(model, images, steps, seed=5, clip=True)
    np.testing.assert_allclose(chain.numpy(), x.numpy(), atol=1e-5)


def test_chain_raises_the_log_density(model, images):
    """Unconditional chains climb logsumexp f(x) (lower JEM energy); conditional
    chains climb f(x)[y]."""
    before = energy.log_density(model, images).numpy()
    after = energy.log_density(model, sampling.sgld(model, images, 20, seed=0))
    assert after.numpy().mean() > before.mean() + 0.5
    assert np.mean(after.numpy() > before) > 0.9

    labels = np.full(len(images), 2)
    before = energy.log_density(model, images, labels).numpy()
    samples = sampling.sgld(model, images, 20, labels=labels, seed=0)
    after = energy.log_density(model, samples, labels).numpy()
    assert after.mean() > before.mean() + 0.5


def test_chain_does_not_retrace(model, images):
    sampling.sgld(model, images, steps=2, seed=0)  # trace for this model and shape
    traces = sampling.sgld_chain.experimental_get_tracing_count()
    for steps, step_size, noise_std, seed in [(5, 1.0, 0.01, 1), (1, 0.1, 0.0, None)]:
        sampling.sgld(model, images, steps, step_size, noise_std, seed=seed)
    assert sampling.sgld_chain.experimental_get_tracing_count() == traces


def test_seed_fixes_the_noise(model, images):
    a = sampling.sgld(model, images, 3, seed=7).numpy()
    b = sampling.sgld(model, images, 3, seed=7).numpy()
    c = sampling.sgld(model, images, 3, seed=8).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        sampling.sgld(model, images, -1)


def test_chain_stays_float32_under_mixed_precision(images):
    """A 1e-3 step on a pixel of 1.0 survives: bfloat16 would round it away."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_backbone(num_classes=4, image_shape=(8, 8, 1), seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model(images).dtype == tf.bfloat16
    start = np.ones_like(images)
    _, grad = sampling.log_density_gradient(model, start)
    samples = sampling.sgld(model, start, 1, step_size=1e-3, noise_std=0.0)
    assert samples.dtype == tf.float32
    moved = np.abs(samples.numpy() - 1.0)
    assert moved.max() > 0
    np.testing.assert_allclose(moved, np.abs(1e-3 * grad.numpy()), atol=1e-7)


def test_chain_does_not_retrace_for_new_data_or_buffer_starts(model, images):
    buffer = sampling.ReplayBuffer(size=40, image_shape=(8, 8, 1), num_classes=4)
    labels = np.arange(len(images)) % 4
    sampling.sgld(model, images, steps=2, labels=labels, seed=0)
    traces = sampling.sgld_chain.experimental_get_tracing_count()
    for seed in range(3):
        starts, _ = buffer.sample(labels=labels, seed=seed)
        sampling.sgld(model, starts, steps=2, labels=(labels + seed) % 4, seed=seed)
        sampling.sgld(model, images * (seed + 1) / 4, 2, labels=labels, seed=seed)
    assert sampling.sgld_chain.experimental_get_tracing_count() == traces


def test_clip_keeps_every_step_in_the_data_range(model, images):
    """Large noiseless steps leave [-1, 1]; clipped, the chain ends at the clipped
    gradient steps (each step clipped, not only the last)."""
    free = sampling.sgld(model, images, 3, step_size=50.0, noise_std=0.0).numpy()
    assert np.abs(free).max() > 1.5
    clipped = sampling.sgld(model, images, 3, 50.0, 0.0, clip=True).numpy()
    assert clipped.min() >= -1.0 and clipped.max() <= 1.0
    x = images
    for _ in range(3):
        _, grad = sampling.log_density_gradient(model, x)
        x = np.clip(x + 50.0 * grad.numpy(), -1.0, 1.0)
    np.testing.assert_allclose(clipped, x, atol=1e-5)
