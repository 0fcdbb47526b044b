"""The SGLD replay buffer: init, sampling (reinit, per-class slices), write-back,
saving; and HDGEClassifier training with JEM's SGLD log p(x) terms (the loss
functions themselves are tested in test_losses)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone
from keras_checks import run_layer_checks
from scipy.special import logsumexp

from hdge_tf.model import HDGEClassifier
from hdge_tf.sampling import ReplayBuffer
from hdge_tf.sgld_settings import SGLDSettings


def _is_buffer_row(starts, buffer, indices):
    """[N] bool: start i is exactly the buffer row it was drawn from."""
    return np.all((starts == buffer[indices]).reshape(len(starts), -1), axis=-1)


def test_init_is_uniform_in_minus_one_one():
    buffer = ReplayBuffer(size=200, image_shape=(4, 4, 3))
    rows = buffer.images.numpy()
    assert rows.shape == (200, 4, 4, 3) and rows.dtype == np.float32
    assert rows.min() >= -1 and rows.max() <= 1
    # Uniform on [-1, 1]: mean 0, std 1/sqrt(3), both quartiles used.
    assert abs(rows.mean()) < 0.05 and abs(rows.std() - 3**-0.5) < 0.02
    assert (rows < -0.5).mean() > 0.2 and (rows > 0.5).mean() > 0.2


def test_write_then_sample_reads_back_what_was_written():
    buffer = ReplayBuffer(size=30, image_shape=(2, 2, 1))
    expected = buffer.images.numpy().copy()
    rng = np.random.default_rng(0)
    write = tf.function(buffer.write)  # as in train_step
    for _ in range(3):
        indices = rng.choice(30, size=8, replace=False).astype(np.int32)
        rows = rng.normal(size=(8, 2, 2, 1)).astype(np.float32) * 3
        write(indices, rows)
        expected[indices] = rows
    np.testing.assert_array_equal(buffer.images.numpy(), expected)
    starts, indices = buffer.sample(50, reinit_freq=0.0, seed=1)
    assert indices.numpy().min() >= 0 and indices.numpy().max() < 30
    np.testing.assert_array_equal(starts.numpy(), expected[indices.numpy()])
    # Eager writes take the same path.
    buffer.write(np.array([4]), np.full((1, 2, 2, 1), 7.0, np.float32))
    np.testing.assert_array_equal(buffer.images.numpy()[4], 7.0)


def test_reinit_fraction_is_binomial():
    buffer = ReplayBuffer(size=100, image_shape=(3, 3, 1))
    rows = buffer.images.numpy()
    n, p = 4000, 0.05
    starts, indices = buffer.sample(n, reinit_freq=p, seed=3)
    starts, indices = starts.numpy(), indices.numpy()
    fresh = ~_is_buffer_row(starts, rows, indices)
    # 4 binomial standard deviations: ~0.014 around 0.05.
    assert abs(fresh.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert starts[fresh].min() >= -1 and starts[fresh].max() <= 1
    # Fresh noise is new: not a copy of any buffer row.
    flat = rows.reshape(len(rows), -1)
    assert not any((flat == s.reshape(-1)).all(-1).any() for s in starts[fresh][:20])
    all_fresh, _ = buffer.sample(50, reinit_freq=1.0, seed=3)
    none_fresh, idx = buffer.sample(50, reinit_freq=0.0, seed=3)
    assert not _is_buffer_row(all_fresh.numpy(), rows, idx.numpy()).any()
    assert _is_buffer_row(none_fresh.numpy(), rows, idx.numpy()).all()
    # Same seed, same draw; the indices cover the buffer.
    again, again_idx = buffer.sample(n, reinit_freq=p, seed=3)
    np.testing.assert_array_equal(again.numpy(), starts)
    np.testing.assert_array_equal(again_idx.numpy(), indices)
    assert len(np.unique(indices)) == 100
    with pytest.raises(ValueError, match="reinit_freq"):
        buffer.sample(4, reinit_freq=1.5)


def test_class_conditional_indices_fall_in_the_labels_slice():
    buffer = ReplayBuffer(size=60, image_shape=(2, 2, 1), num_classes=3)
    assert buffer.class_size == 20
    labels = np.random.default_rng(0).integers(0, 3, 3000).astype(np.int32)
    _, indices = buffer.sample(labels=labels, reinit_freq=0.0, seed=5)
    indices = indices.numpy()
    np.testing.assert_array_equal(indices // 20, labels)
    for c in range(3):  # each slice is used whole
        np.testing.assert_array_equal(
            np.unique(indices[labels == c]), np.arange(20 * c, 20 * c + 20)
        )
    with pytest.raises(ValueError, match="not divisible by num_classes=3"):
        ReplayBuffer(size=61, image_shape=(2, 2, 1), num_classes=3)
    with pytest.raises(ValueError, match="needs a buffer built with num_classes"):
        ReplayBuffer(size=61, image_shape=(2, 2, 1)).sample(labels=labels)
    with pytest.raises(ValueError, match="not divisible by num_classes=4"):
        HDGEClassifier(
            tiny_backbone(), pxy_sgld_weight=1.0, sgld=SGLDSettings(buffer_size=10)
        )


def _sgld_model(sgld: dict | None = None, **kwargs):
    """A model with `kwargs`, and SGLD settings `sgld` over small defaults."""
    kwargs.setdefault("queue_size", 40)
    settings = SGLDSettings(**{"buffer_size": 40, "steps": 3, **(sgld or {})})
    model = HDGEClassifier(tiny_backbone(), sgld=settings, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


@pytest.mark.parametrize("term", ["px_sgld", "pxy_sgld", "px_sgld_conditional"])
def test_train_step_sgld_term_matches_a_manual_computation(separable_data, term):
    """With 0 SGLD steps and every chain re-initialized, the samples are the fresh
    noise the step writes back; recompute the term from those rows and the
    pre-step weights (a twin model: same seed, same weights). Conditional
    chains of the log p(x) term live in a class-split buffer, and the term is
    still on log p(x)."""
    images, labels = separable_data
    images, labels = images[:8], labels[:8]
    conditional = term == "px_sgld_conditional"
    term = term.removesuffix("_conditional")
    kwargs = {
        f"{term}_weight": 1.0,
        "energy_l2_weight": 0.1,
        "sgld": {
            "px_conditional_chains": conditional,
            "steps": 0,
            "reinit_freq": 1.0,
            "buffer_size": 4000,  # 8 draws: a repeated row is unlikely
        },
    }
    model, twin = _sgld_model(**kwargs), _sgld_model(**kwargs)
    split = term == "pxy_sgld" or conditional
    assert model.replay_buffer.num_classes == (4 if split else None)
    before = model.replay_buffer.images.numpy().copy()
    logs = model.train_on_batch(images, labels, return_dict=True)
    after = model.replay_buffer.images.numpy()
    rows = np.flatnonzero((after != before).reshape(len(after), -1).any(-1))
    assert len(rows) == 8
    samples = after[rows]
    assert samples.min() >= -1 and samples.max() <= 1
    data_logits = twin(images).numpy().astype(np.float64)
    sample_logits = twin(samples).numpy().astype(np.float64)
    if term == "px_sgld":
        data_density = logsumexp(data_logits, axis=-1)
        sample_density = logsumexp(sample_logits, axis=-1)
    else:  # each chain ran in its label's slice of 1000 rows
        np.testing.assert_array_equal(np.sort(rows // 1000), np.sort(labels))
        data_density = data_logits[np.arange(8), labels]
        sample_density = sample_logits[np.arange(8), rows // 1000]
    expected = -(data_density.mean() - sample_density.mean())
    np.testing.assert_allclose(logs[term], expected, rtol=1e-4, atol=1e-5)
    # The energy monitors: mean E = -log p̃ of the data and of the samples.
    prefix = term.removesuffix("_sgld")
    np.testing.assert_allclose(
        logs[f"{prefix}_data_energy"], -data_density.mean(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        logs[f"{prefix}_sample_energy"], -sample_density.mean(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        logs["energy_l2"],
        np.mean(data_density**2) + np.mean(sample_density**2),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        logs["loss"],
        logs["ce"] + logs["pxy_contrast"] + logs[term] + 0.1 * logs["energy_l2"],
        rtol=1e-4,
    )


def test_fit_with_px_sgld_reports_the_term_and_changes_the_buffer(separable_data):
    images, labels = separable_data
    model = _sgld_model(px_sgld_weight=1.0, energy_l2_weight=0.1)
    assert model.replay_buffer.num_classes is None
    before = model.replay_buffer.images.numpy().copy()
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    assert set(history.history) == {
        "loss",
        "ce",
        "pxy_contrast",
        "px_sgld",
        "energy_l2",
        "px_data_energy",
        "px_sample_energy",
        "top_logit",
        "second_logit",
        "accuracy",
        "skipped_steps",
    }
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(history.history["px_sgld"]))
    after = model.replay_buffer.images.numpy()
    assert np.isfinite(after).all()
    assert (after != before).reshape(40, -1).any(-1).mean() > 0.5
    # Evaluation runs no chains and reports no SGLD terms, but the top two logits.
    result = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert "px_sgld" not in result and np.isfinite(result["loss"])
    top_two = np.sort(model.predict(images, verbose=0), axis=-1)[:, -2:]
    np.testing.assert_allclose(result["top_logit"], top_two[:, 1].mean(), rtol=1e-5)
    np.testing.assert_allclose(result["second_logit"], top_two[:, 0].mean(), rtol=1e-5)


def _changed_rows(before, after) -> np.ndarray:
    return np.flatnonzero((after != before).reshape(len(after), -1).any(-1))


@pytest.mark.parametrize("term", ["px_sgld", "pxy_sgld"])
def test_sgld_batch_size_sets_the_chains_per_step(separable_data, term):
    """24 chains for a batch of 32: 24 buffer rows rewritten (0 steps, every chain
    restarted, a buffer large enough that two draws rarely share a row); the
    class-conditional chains draw their own labels, so their rows spread over
    every class slice, not only over the batch's classes."""
    images, labels = separable_data
    images, labels = images[:32], labels[:32]
    model = _sgld_model(
        {"steps": 0, "reinit_freq": 1.0, "buffer_size": 40000, "batch_size": 24},
        **{f"{term}_weight": 1.0},
    )
    before = model.replay_buffer.images.numpy().copy()
    model.train_on_batch(images, labels)
    assert len(_changed_rows(before, model.replay_buffer.images.numpy())) == 24


def test_sgld_batch_size_draws_labels_for_pxy_chains(separable_data):
    images, labels = separable_data
    images, labels = images[:32], np.zeros(32, np.int32)  # one class in the batch
    model = _sgld_model(
        {"steps": 0, "reinit_freq": 1.0, "buffer_size": 40000, "batch_size": 40},
        pxy_sgld_weight=1.0,
    )
    before = model.replay_buffer.images.numpy().copy()
    model.train_on_batch(images, labels)
    rows = _changed_rows(before, model.replay_buffer.images.numpy())
    assert set(rows // 10000) == {0, 1, 2, 3}


class _Outward(keras.layers.Layer):
    """Logits growing with the image's sum: SGLD pushes every pixel upwards."""

    def call(self, images):
        total = keras.ops.sum(images, axis=(1, 2, 3))[:, None]
        return keras.ops.concatenate([5.0 * total, -5.0 * total], axis=-1)


@pytest.mark.parametrize("clip", [True, False])
def test_sgld_clip_keeps_training_chains_in_the_data_range(separable_data, clip):
    images, labels = separable_data
    inputs = keras.Input((8, 8, 1))
    backbone = keras.Model(inputs, _Outward()(inputs))
    model = HDGEClassifier(
        backbone,
        queue_size=64,
        pxy_contrast_weight=0.0,
        px_sgld_weight=1.0,
        sgld=SGLDSettings(steps=3, buffer_size=100, clip=clip),
    )
    model.compile(optimizer="sgd")
    before = model.replay_buffer.images.numpy().copy()
    model.train_on_batch(images[:16], labels[:16] % 2)
    after = model.replay_buffer.images.numpy()
    written = after[_changed_rows(before, after)]
    assert len(written) > 0
    if clip:
        assert written.min() >= -1.0 and written.max() == 1.0
    else:
        assert written.max() > 2.0


def test_default_model_has_no_buffer():
    model = HDGEClassifier(tiny_backbone(), queue_size=40)
    assert model.replay_buffer is None
    assert all("replay_buffer" not in w.path for w in model.weights)


def test_keras_round_trip_and_checkpoint_keep_the_buffer(separable_data, tmp_path):
    images, labels = separable_data
    model = _sgld_model({"reinit_freq": 0.2, "step_size": 0.5}, pxy_sgld_weight=1.0)
    model.fit(images[:32], labels[:32], batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    config, loaded_config = model.get_config(), loaded.get_config()
    del config["backbone"], loaded_config["backbone"]  # compared via the weights
    assert loaded_config == config
    assert loaded.replay_buffer.num_classes == 4
    assert loaded.sgld.reinit_freq == 0.2 and loaded.sgld.step_size == 0.5
    np.testing.assert_array_equal(
        loaded.replay_buffer.images.numpy(), model.replay_buffer.images.numpy()
    )
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    # tf.train.Checkpoint reaches the buffer through the model.
    saved = model.replay_buffer.images.numpy().copy()
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    model.replay_buffer.images.assign(np.zeros_like(saved))
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    np.testing.assert_array_equal(model.replay_buffer.images.numpy(), saved)


def test_buffer_passes_the_keras_layer_checks(tmp_path):
    """Config round trip, the chain states in `.keras`, float32 under any policy."""

    def write(buffer):
        rows = np.full((2, 2, 3, 1), 5.0, np.float32)
        buffer.write(np.array([1, 7]), rows)

    buffer = run_layer_checks(
        lambda: ReplayBuffer(size=12, image_shape=(2, 3, 1), num_classes=4, name="rb"),
        tmp_path,
        update=write,
    )
    assert buffer.images.shape == (12, 2, 3, 1) and buffer.class_size == 3


@pytest.mark.slow
def test_replicas_write_the_same_rows_under_mirrored_strategy(separable_data, mirrored):
    images, labels = separable_data
    with mirrored.scope():
        model = _sgld_model({"steps": 2}, px_sgld_weight=1.0, pxy_sgld_weight=1.0)
    before = model.replay_buffer.images.numpy().copy()
    history = model.fit(images[:16], labels[:16], batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["pxy_sgld"]).all()
    copies = [v.numpy() for v in model.replay_buffer.images.value.values]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1])
    # One step, both replicas' chains landed: more rows changed than one replica's
    # 8 + 8 chains could change (32 writes into 40 rows: ~22 distinct expected).
    changed = (copies[0] != before).reshape(40, -1).any(-1).sum()
    assert changed > 16, changed


def test_sgld_every_runs_the_terms_on_one_step_in_n_weighted_n_times(separable_data):
    """every=3: steps 0 and 3 run the chains (their rows are rewritten) and
    count the SGLD terms three times in the loss; the other steps write no row,
    add only CE and the contrastive term, and leave the SGLD metrics where the
    last step that ran them put them."""
    images, labels = separable_data
    images, labels = images[:16], labels[:16]
    sgld = {"every": 3, "steps": 0, "reinit_freq": 1.0, "buffer_size": 4000}
    model = _sgld_model(sgld, px_sgld_weight=1.0, energy_l2_weight=0.1)
    ran = []
    for _ in range(6):
        before = model.replay_buffer.images.numpy().copy()
        logs = model.train_on_batch(images, labels, return_dict=True)
        rows = _changed_rows(before, model.replay_buffer.images.numpy())
        ran.append(len(rows) > 0)
        rest = logs["ce"] + logs["pxy_contrast"]
        if ran[-1]:
            assert len(rows) == 16
            expected = rest + 3 * (logs["px_sgld"] + 0.1 * logs["energy_l2"])
            np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
        else:
            np.testing.assert_allclose(logs["loss"], rest, rtol=1e-5)
            assert logs["px_sgld"] == 0.0  # a reset tracker that got no update
    assert ran == [True, False, False, True, False, False]


def test_an_epoch_reports_the_sgld_terms_of_the_steps_that_ran_them(separable_data):
    """every=2 over an epoch of two equal batches: the epoch's px_sgld is the
    first step's alone (a twin model's one step), not its mean with a zero."""
    images, labels = separable_data
    images, labels = images[:16], labels[:16]
    sgld = {"every": 2, "steps": 0, "reinit_freq": 1.0, "buffer_size": 4000}
    model, twin = (_sgld_model(sgld, px_sgld_weight=1.0) for _ in range(2))
    first = twin.train_on_batch(images, labels, return_dict=True)
    history = model.fit(
        np.concatenate([images, images]),
        np.concatenate([labels, labels]),
        batch_size=16,
        shuffle=False,
        verbose=0,
    ).history
    np.testing.assert_allclose(history["px_sgld"][0], first["px_sgld"], rtol=1e-5)
    assert first["px_sgld"] != 0.0


def _batch_norm_backbone(momentum: float = 0.5):
    """tiny_backbone with a BatchNormalization after its conv."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    h = keras.layers.BatchNormalization(momentum=momentum, name="bn")(h)
    h = keras.layers.Flatten()(keras.layers.LeakyReLU(0.2)(h))
    return keras.Model(inputs, keras.layers.Dense(4)(h))


def _bn_model(pass_mode: str, momentum: float = 0.5, **sgld):
    """A BatchNorm model whose chains take 2 steps from fresh noise."""
    sgld = {"steps": 2, "reinit_freq": 1.0, "pass_mode": pass_mode, **sgld}
    model = HDGEClassifier(
        _batch_norm_backbone(momentum), queue_size=40, px_sgld_weight=1.0, sgld=sgld
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


@pytest.mark.parametrize(
    "pass_mode", ["auto", "inference", "sample_batch", "data_batch", "training"]
)
def test_samples_move_batch_norm_statistics_only_in_training_mode(
    separable_data, pass_mode
):
    """After one SGLD step, BatchNorm's running statistics are what the data
    batch's training-mode pass alone makes of them (a twin backbone's one
    call), unless the samples run in training mode as JEM's do, where their
    batch moves them too."""
    images, labels = separable_data
    images, labels = images[:16], labels[:16]
    model = _bn_model(pass_mode)
    resolved = {"auto": "sample_batch"}.get(pass_mode, pass_mode)
    assert model.jem.pass_mode == resolved
    twin = _batch_norm_backbone()
    twin(images, training=True)
    model.train_on_batch(images, labels)
    bn, data_only = model.backbone.get_layer("bn"), twin.get_layer("bn")
    assert np.abs(data_only.moving_mean.numpy()).max() > 1e-3  # the data moved it
    if pass_mode == "training":
        assert (
            np.abs(bn.moving_mean.numpy() - data_only.moving_mean.numpy()).max() > 1e-3
        )
    else:
        for name in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(
                getattr(bn, name).numpy(),
                getattr(data_only, name).numpy(),
                rtol=1e-5,
                atol=1e-6,
            )


def test_data_batch_mode_scores_samples_with_the_data_batch_statistics(
    separable_data,
):
    """With 0 SGLD steps and fresh starts, the samples are the rows the step
    writes to the buffer; their energy in the step's px_sgld is the backbone's
    with the data batch's own mean and variance (a hand-made normalization)."""
    images, labels = separable_data
    images, labels = images[:16], labels[:16]
    model = _bn_model("data_batch", momentum=0.9, steps=0, buffer_size=4000)
    twin = _batch_norm_backbone(0.9)
    before = model.replay_buffer.images.numpy().copy()
    logs = model.train_on_batch(images, labels, return_dict=True)
    after = model.replay_buffer.images.numpy()
    samples = after[_changed_rows(before, after)]
    assert len(samples) == 16

    conv, bn = twin.layers[1], twin.get_layer("bn")
    features = conv(images).numpy()
    mean, variance = features.mean((0, 1, 2)), features.var((0, 1, 2))
    head = keras.Sequential(twin.layers[3:])

    def logits(x):
        h = (conv(x).numpy() - mean) / np.sqrt(variance + bn.epsilon)
        return head(h * bn.gamma.numpy() + bn.beta.numpy()).numpy()

    expected = -(
        logsumexp(logits(images), -1).mean() - logsumexp(logits(samples), -1).mean()
    )
    np.testing.assert_allclose(logs["px_sgld"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pass_mode", ["auto", "inference", "data_batch"])
def test_every_pass_mode_is_jems_without_batch_norm(pass_mode):
    sgld = {"pass_mode": pass_mode}
    model = HDGEClassifier(tiny_backbone(), 40, px_sgld_weight=1.0, sgld=sgld)
    assert model.sgld.pass_mode == pass_mode and model.jem.pass_mode == "training"
