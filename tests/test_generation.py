"""Sample generation: chain starts (fresh, replay buffer slices), seeds, defaults,
the sample grid figure, the SampleGrid callback and the hdge-sample CLI."""

from pathlib import Path

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from conftest import quadrant_data, tiny_backbone

from hdge_tf import plots, run_dir, sampling
from hdge_tf.bin import cli, hdge_sample
from hdge_tf.callbacks import SampleGrid
from hdge_tf.generation import draw_samples
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import SGLDSettings

REPO = Path(__file__).resolve().parents[1]


def jem_model(seed: int = 0, **sgld) -> HDGEClassifier:
    """4 classes of 8x8x1 images, a class-split buffer of 10 rows per class;
    `sgld`: SGLD settings besides those."""
    settings = SGLDSettings(**{"buffer_size": 40, "steps": 2, **sgld})
    return HDGEClassifier(
        tiny_backbone(4, (8, 8, 1), seed),
        queue_size=16,
        pxy_sgld_weight=1.0,
        sgld=settings,
    )


@pytest.fixture(scope="module")
def model():
    return jem_model()


def _snapshot(model) -> list[np.ndarray]:
    return [v.numpy().copy() for v in model.weights]


def _assert_unchanged(model, snapshot):
    for variable, before in zip(model.weights, snapshot, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before, err_msg=variable.path)


def test_buffer_starts_are_rows_of_each_class_slice(model):
    rows = model.replay_buffer.images.numpy()
    # batch_size 5 splits the classes across chunks.
    samples, labels = draw_samples(model, 3, True, 0, "buffer", batch_size=5, seed=1)
    assert samples.shape == (12, 8, 8, 1) and samples.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    flat = rows.reshape(4, 10, -1)  # [class, row in slice, pixels]
    for sample, label in zip(samples, labels, strict=True):
        matches = (flat == sample.reshape(-1)).all(-1)
        assert matches[label].any(), f"class {label} start is not from its slice"
        assert matches.sum() == 1
    # Unconditional starts come from anywhere in the buffer, not all one slice.
    samples, labels = draw_samples(model, 30, False, 0, "buffer", seed=1)
    assert labels is None
    found = (rows.reshape(1, 40, -1) == samples.reshape(30, 1, -1)).all(-1)
    assert found.any(-1).all()
    assert len(np.unique(found.argmax(-1) // 10)) > 1


def test_fresh_starts_are_uniform_and_seeded(model):
    a, _ = draw_samples(model, 50, False, 0, seed=0)
    assert a.min() >= -1 and a.max() <= 1
    assert abs(a.mean()) < 0.05 and abs(a.std() - 3**-0.5) < 0.02
    np.testing.assert_array_equal(draw_samples(model, 50, False, 0, seed=0)[0], a)
    assert not np.allclose(draw_samples(model, 50, False, 0, seed=1)[0], a)
    # Chunks get their own seeds: no two chunks repeat the same noise.
    b, _ = draw_samples(model, 50, False, 0, batch_size=25, seed=0)
    assert not np.allclose(b[:25], b[25:])
    # Chains (noise included) are seeded too.
    c = draw_samples(model, 3, True, 4, seed=2)[0]
    np.testing.assert_array_equal(draw_samples(model, 3, True, 4, seed=2)[0], c)
    assert not np.allclose(draw_samples(model, 3, True, 4, seed=3)[0], c)


def test_sampling_leaves_global_generators_model_and_buffer_alone(model):
    snapshot = _snapshot(model)
    keras.utils.set_random_seed(5)
    expected = tf.random.uniform([4]).numpy(), np.random.rand(4)
    keras.utils.set_random_seed(5)
    draw_samples(model, 2, True, 3, "buffer", seed=0)
    draw_samples(model, 5, False, 3, "buffer", seed=0)
    draw_samples(model, 2, True, 3, "fresh", seed=0)
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected[0])
    np.testing.assert_array_equal(np.random.rand(4), expected[1])
    _assert_unchanged(model, snapshot)


def test_chains_raise_the_log_density(model):
    """Unconditional chains climb logsumexp f(x); conditional chains climb f(x)[y]
    of their own rows' labels, which then win the argmax."""
    before, _ = draw_samples(model, 24, False, 0, seed=0)
    after, _ = draw_samples(model, 24, False, 20, seed=0)
    gain = sampling.log_density(model, after) - sampling.log_density(model, before)
    assert gain.numpy().mean() > 0.5

    before, labels = draw_samples(model, 6, True, 0, seed=0)
    after, _ = draw_samples(model, 6, True, 20, seed=0)
    gain = sampling.log_density(model, after, labels) - sampling.log_density(
        model, before, labels
    )
    assert gain.numpy().mean() > 0.5
    assert np.mean(model(after).numpy().argmax(-1) == labels) > 0.9


def test_step_size_and_noise_default_to_the_models():
    """One noiseless step is starts + step_size * ∇ log p(x|y): the model's
    sgld.step_size for an HDGEClassifier, JEM's 1.0 for a plain classifier."""
    backbone = tiny_backbone(4, (8, 8, 1), seed=1)
    for model, step_size in [(backbone, 1.0), (jem_model(step_size=0.25), 0.25)]:
        starts, labels = draw_samples(model, 2, True, 0, seed=4)
        _, grad = sampling.log_density_gradient(model, starts, labels)
        stepped, _ = draw_samples(model, 2, True, 1, noise_std=0.0, seed=4)
        np.testing.assert_allclose(
            stepped, starts + step_size * grad.numpy(), atol=1e-6
        )
    # With no step, only noise of the default std 0.01 moves the starts.
    starts, _ = draw_samples(backbone, 100, False, 0, seed=4)
    noisy, _ = draw_samples(backbone, 100, False, 1, step_size=0.0, seed=4)
    assert 0.009 < np.std(noisy - starts) < 0.011
    quiet = jem_model(step_size=0.0, noise_std=0.0)
    starts, _ = draw_samples(quiet, 3, True, 0, seed=4)
    np.testing.assert_array_equal(draw_samples(quiet, 3, True, 5, seed=4)[0], starts)


def test_errors_name_the_problem(model):
    plain = HDGEClassifier(tiny_backbone(4, (8, 8, 1)), queue_size=16)
    assert plain.replay_buffer is None
    with pytest.raises(ValueError, match="px_sgld_weight > 0 or pxy_sgld_weight > 0"):
        draw_samples(plain, 2, True, 1, start="buffer")
    with pytest.raises(ValueError, match="Unknown start 'replay'"):
        draw_samples(model, 2, True, 1, start="replay")
    with pytest.raises(ValueError, match="num must be >= 1"):
        draw_samples(model, 0, True, 1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        draw_samples(model, 2, True, -1)
    with pytest.raises(ValueError, match="every_epochs"):
        SampleGrid("unused", every_epochs=0)


def _grid_content(png) -> np.ndarray:
    """The RGB pixels of a grid PNG, white margins and labels included."""
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[-1] in (3, 4)
    return image[..., :3]


def test_plot_image_grid_shapes_and_colours(tmp_path):
    # 12 black images, near-square: 4 columns x 3 rows of 80 px tiles.
    plots.plot_image_grid(np.full((12, 8, 8, 1), -1.0), tmp_path / "a.png")
    grid = _grid_content(tmp_path / "a.png")
    height, width = grid.shape[:2]
    assert 3 * 80 <= height < 3 * 80 + 80 and 4 * 80 <= width < 4 * 80 + 80
    assert 0.5 < (grid < 0.05).all(-1).mean() < 0.95  # black tiles, white gaps

    # One row per class, labelled on the left: 4 rows x 3 columns, plus the labels
    # (80 px) and the title (30 px).
    # Values beyond [-1, 1] are clipped, not an error; red stays red.
    rgb = np.zeros((12, 8, 8, 3), np.float32)
    rgb[..., 0] = 5.0
    rgb[..., 1:] = -3.0
    plots.plot_image_grid(
        rgb,
        tmp_path / "b.png",
        row_labels=[f"class {c}" for c in range(4)],
        title="samples",
    )
    grid = _grid_content(tmp_path / "b.png")
    height, width = grid.shape[:2]
    assert 4 * 80 + 30 <= height < 4 * 80 + 110
    assert 3 * 80 + 80 <= width < 3 * 80 + 140
    red = (grid[..., 0] > 0.95) & (grid[..., 1:] < 0.05).all(-1)
    assert 0.3 < red.mean() < 0.8
    # The labels sit left of the tiles: the left strip holds no tile pixels but
    # some dark (text) pixels.
    assert not red[:, :70].any() and (grid[:, :70] < 0.3).all(-1).any()
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plots.plot_image_grid(np.zeros((2, 8, 8, 2)), tmp_path / "c.png")


def test_callback_writes_grids_and_leaves_the_model_alone(tmp_path, separable_data):
    model = jem_model(seed=2)
    model.compile(keras.optimizers.Adam(1e-3))
    callback = SampleGrid(tmp_path / "every", every_epochs=1, num_per_class=2, steps=2)
    model.fit(
        *separable_data,
        batch_size=16,
        epochs=2,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[
            callback,
            SampleGrid(tmp_path / "second", every_epochs=2, conditional=False),
        ],
    )
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == [
        "samples_epoch001.png",
        "samples_epoch002.png",
    ]
    assert [p.name for p in (tmp_path / "second").iterdir()] == ["samples_epoch002.png"]
    grid = _grid_content(tmp_path / "every" / "samples_epoch002.png")
    assert grid.std() > 0.1
    # Outside fit: the callback draws from the buffer without touching it.
    snapshot = _snapshot(model)
    callback.on_epoch_end(2)
    _assert_unchanged(model, snapshot)
    assert (tmp_path / "every" / "samples_epoch003.png").is_file()


@pytest.mark.slow
def test_cli_writes_the_samples_of_draw_samples(tmp_path):
    model = jem_model(seed=3)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(*quadrant_data(), batch_size=16, steps_per_epoch=2, verbose=0)
    model.save(tmp_path / "model.keras")
    result = cli.call(hdge_sample, [f"--workdir={tmp_path}", "--steps=2", "--num=2"])
    assert result.status == 0, result.stderr[-3000:]
    out = tmp_path / "samples"
    paths = [out / n for n in ("conditional_buffer.png", "conditional_buffer.npy")]
    paths.append(out / "conditional_buffer_labels.npy")
    assert result.stdout.split() == [str(p) for p in paths]
    # The defaults: conditional, from the buffer, the model's SGLD settings, seed 0.
    expected, labels = draw_samples(
        run_dir.load_model(tmp_path / "model.keras"), 2, True, 2, "buffer"
    )
    samples = np.load(paths[1])
    assert samples.shape == (8, 8, 8, 1) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, expected, atol=1e-5)
    np.testing.assert_array_equal(np.load(paths[2]), labels)
    assert _grid_content(paths[0]).std() > 0.1
