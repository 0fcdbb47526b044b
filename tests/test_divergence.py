"""A diverging training step is not applied: weights, optimizer, queue and buffer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import smoke_config, tiny_backbone

from hdge_tf import training
from hdge_tf.callbacks import DivergenceGuard
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import SGLDSettings


def _model(strategy=None, **kwargs):
    kwargs.setdefault("queue_size", 40)
    kwargs.setdefault("queue_init", "data")
    with (strategy or tf.distribute.get_strategy()).scope():
        model = HDGEClassifier(tiny_backbone(), **kwargs)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def _state(model) -> list[np.ndarray]:
    """Every variable the step may write: weights, optimizer slots, queue, buffer."""
    variables = [*model.weights, *model.optimizer.variables]
    return [np.array(v.numpy()) for v in variables]


def _assert_same(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def _fit_one_step(model, images, labels):
    return model.fit(
        images, labels, batch_size=len(images), epochs=1, shuffle=False, verbose=0
    ).history


def test_a_loss_above_the_threshold_changes_nothing(separable_data):
    images, labels = separable_data
    model = _model(
        divergence_threshold=1e-3, px_sgld_weight=1.0, sgld=SGLDSettings(steps=2)
    )
    model.replay_buffer.images.assign(
        np.random.default_rng(0).uniform(-1, 1, model.replay_buffer.images.shape)
    )
    before = _state(model)
    history = _fit_one_step(model, images[:16], labels[:16])
    _assert_same(before, _state(model))
    assert history["skipped_steps"] == [1.0]
    assert int(model.optimizer.iterations.numpy()) == 0
    assert int(model.queue.pointer.numpy()) == 0
    # The skipped step leaves the epoch's loss and accuracy out.
    assert history["loss"] == [0.0] and history["accuracy"] == [0.0]


def test_an_injected_nan_is_skipped_and_later_steps_still_train(separable_data):
    images, labels = separable_data
    model = _model(pxy_sgld_weight=1.0, sgld=SGLDSettings(steps=2, buffer_size=40))
    kernel = model.backbone.layers[-1].kernel
    good = kernel.numpy()
    poisoned = good.copy()
    poisoned[0, 0] = np.nan
    kernel.assign(poisoned)
    before = _state(model)
    history = _fit_one_step(model, images[:16], labels[:16])
    _assert_same(before, _state(model))  # NaN == NaN for assert_array_equal
    assert history["skipped_steps"] == [1.0]

    kernel.assign(good)
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0).history
    assert history["skipped_steps"] == [0.0, 0.0]
    assert history["ce"][1] < history["ce"][0]
    assert int(model.optimizer.iterations.numpy()) == 12
    assert int(model.queue.pointer.numpy()) == (12 * 16) % 40


def test_one_replica_diverging_stops_every_replica(separable_data, mirrored):
    """The second replica's half of the batch has huge inputs, so only its loss
    exceeds the threshold; both replicas must skip, and stay identical."""
    images, labels = separable_data
    batch = images[:16].copy()
    batch[8:] *= 1e5
    model = _model(mirrored, divergence_threshold=1e3)
    before = _state(model)
    history = _fit_one_step(model, batch, labels[:16])
    assert history["skipped_steps"] == [1.0]
    _assert_same(before, _state(model))
    # A healthy batch is applied as usual.
    history = _fit_one_step(model, images[:16], labels[:16])
    assert history["skipped_steps"] == [0.0]
    assert int(model.optimizer.iterations.numpy()) == 1
    weights = model.backbone.layers[-1].kernel.value.values
    np.testing.assert_array_equal(weights[0].numpy(), weights[1].numpy())


def test_the_guard_stops_fit_at_its_first_check_after_a_skip(separable_data):
    images, labels = separable_data
    model = _model(divergence_threshold=1e-6)
    guard, steps = DivergenceGuard(check_every=2), []
    count = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(batch)
    )
    model.fit(
        images, labels, batch_size=8, epochs=3, verbose=0, callbacks=[guard, count]
    )
    assert guard.diverged_at == (1, 2) and steps == [0, 1]
    assert int(model.optimizer.iterations.numpy()) == 0


def test_the_threshold_is_validated_and_saved():
    model = HDGEClassifier(tiny_backbone(), queue_size=40, divergence_threshold=50.0)
    assert HDGEClassifier.from_config(model.get_config()).divergence_threshold == 50.0
    with pytest.raises(ValueError, match="divergence_threshold must be positive"):
        HDGEClassifier(tiny_backbone(), divergence_threshold=0.0)


# The trainer: restart from the last good checkpoint, give up with a clear message.


def _checkpoint_bytes(workdir, number: int) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in (workdir / "checkpoints").glob(f"ckpt-{number}.*")
    }


class _PoisonOnce(keras.callbacks.Callback):
    """Sets the last kernel to NaN before one step of the first fit call."""

    def __init__(self, epoch: int, step: int, workdir):
        super().__init__()
        self.when, self.done, self.epoch = (epoch, step), False, None
        self.workdir = workdir
        self.starts: list[list[np.ndarray]] = []  # weights when each fit call began
        self.checkpoint_1: list[dict[str, bytes]] = []  # its files at each begin

    def on_train_begin(self, logs=None):
        self.starts.append([w.numpy().copy() for w in self.model.backbone.weights])
        self.checkpoint_1.append(_checkpoint_bytes(self.workdir, 1))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if not self.done and (self.epoch, batch) == self.when:
            kernel = self.model.backbone.trainable_weights[-2]
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))
            self.done = True


def _last(epochs: int):
    """The smoke run keeping its last epoch: the kept model (and its optimizer)
    is then the one the steps below count."""
    config = smoke_config(epochs)
    config.train.select = "last"
    return config


@pytest.mark.slow
def test_trainer_restarts_from_the_last_good_checkpoint(tmp_path):
    training.train(_last(epochs=1), tmp_path)
    good = keras.saving.load_model(tmp_path / "model.keras").backbone.get_weights()
    saved = _checkpoint_bytes(tmp_path, 1)

    poison = _PoisonOnce(epoch=1, step=1, workdir=tmp_path)  # epoch 2, step 2
    model, metrics = training.train_model(_last(epochs=3), tmp_path, callbacks=[poison])
    assert metrics["divergence_restarts"] == 1 and metrics["epochs"] == 3
    # The restart began from checkpoint 1's weights, not from the poisoned ones.
    assert len(poison.starts) == 2
    for start, want in zip(poison.starts[1], good, strict=True):
        np.testing.assert_array_equal(start, want)
    assert all(np.isfinite(w).all() for w in model.backbone.get_weights())
    assert int(model.optimizer.iterations.numpy()) == 3 * 3
    # The diverged epoch was not checkpointed: epochs 2 and 3 come from the rerun.
    with open(tmp_path / "history.csv") as f:
        rows = f.read().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1", "1", "2"]
    assert saved and poison.checkpoint_1 == [saved, saved]  # intact at the restart
    assert len(list((tmp_path / "checkpoints").glob("ckpt-3.*"))) >= 2


@pytest.mark.slow
def test_trainer_gives_up_with_the_last_good_state_named(tmp_path):
    training.train(smoke_config(epochs=1), tmp_path)
    saved = _checkpoint_bytes(tmp_path, 1)
    config = smoke_config(epochs=2)
    config.loss.divergence_threshold = 1e-6  # every step "diverges"
    config.train.divergence_retries = 1
    with pytest.raises(
        training.TrainingDiverged,
        match=r"epoch 2 \(seen at step end\).*restarted 1 time"
        r".*last good state is .*ckpt-1",
    ):
        training.train(config, tmp_path)
    assert _checkpoint_bytes(tmp_path, 1) == saved
    assert not list((tmp_path / "checkpoints").glob("ckpt-2.*"))
    manager_file = (tmp_path / "checkpoints" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-1"' in manager_file


@pytest.fixture
def float16_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_a_float16_overflow_lowers_the_loss_scale_and_training_goes_on(
    separable_data, float16_policy
):
    """Scaled float16 gradients overflow at a huge scale; each such step halves
    the scale, writes nothing else and is not a divergence."""
    images, labels = separable_data
    model = HDGEClassifier(tiny_backbone(), queue_size=40, queue_init="data")
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(1e-2), initial_scale=2.0**40
    )
    model.compile(optimizer=optimizer)
    before = [np.array(w) for w in model.backbone.get_weights()]
    history = _fit_one_step(model, images[:16], labels[:16])
    assert history["loss_scale_overflows"] == [1.0]
    assert history["skipped_steps"] == [0.0]
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**39
    _assert_same(before, model.backbone.get_weights())
    assert int(model.queue.pointer.numpy()) == 0

    start_ce = model.evaluate(images, labels, verbose=0, return_dict=True)["ce"]
    history = model.fit(images, labels, batch_size=16, epochs=8, verbose=0).history
    overflows = sum(history["loss_scale_overflows"])
    scale = float(optimizer.dynamic_scale.numpy())
    assert overflows >= 10 and scale == 2.0 ** (39 - overflows) and scale < 2.0**30
    assert sum(history["skipped_steps"]) == 0
    applied = 8 * 6 - overflows
    assert int(model.optimizer.iterations.numpy()) == applied
    assert int(model.queue.pointer.numpy()) == (applied * 16) % 40
    assert history["ce"][-1] < start_ce - 0.3


@pytest.mark.slow
def test_float16_trainer_survives_overflows_but_not_divergence(tmp_path):
    config = smoke_config(epochs=2)
    config.precision = "mixed_float16"
    config.train.initial_loss_scale = 2.0**40
    model, metrics = training.train_model(config, tmp_path / "overflow")
    assert metrics["divergence_restarts"] == 0 and metrics["epochs"] == 2
    assert float(model.optimizer.dynamic_scale.numpy()) < 2.0**40
    # The trainer sets config.precision for its models and restores the caller's.
    assert model.backbone.dtype_policy.name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    config.loss.divergence_threshold = 1e-6  # now every step diverges
    config.train.divergence_retries = 1
    with pytest.raises(training.TrainingDiverged, match="restarted 1 time"):
        training.train(config, tmp_path / "diverged")
    assert keras.mixed_precision.global_policy().name == "float32"
