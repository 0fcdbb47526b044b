"""HDGEClassifier: Keras workflow, queue updates, saving, and input errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_backbone
from keras_checks import (
    MIXED_POLICIES,
    check_config_round_trip,
    check_output,
    check_precision,
    check_save_load,
)

from hdge_tf import energy, energy_penalty, input_checks, losses
from hdge_tf.loss_weights import LossWeights
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import FLAT_KEYS, SGLDSettings


def _model(**kwargs):
    kwargs.setdefault("queue_size", 40)
    model = HDGEClassifier(tiny_backbone(), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    return model


def test_fit_lowers_loss_and_learns(separable_data):
    images, labels = separable_data
    model = _model(px_contrast_weight=0.5)
    before = model.evaluate(images, labels, verbose=0, return_dict=True)
    history = model.fit(images, labels, batch_size=16, epochs=8, verbose=0)
    after = model.evaluate(images, labels, verbose=0, return_dict=True)
    assert set(history.history) == {
        "loss",
        "ce",
        "pxy_contrast",
        "px_contrast",
        "top_logit",
        "second_logit",
        "accuracy",
        "skipped_steps",
    }
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after["ce"] < before["ce"] - 0.3
    assert after["accuracy"] > 0.8


def test_train_step_writes_the_batch_logits_to_the_queue(separable_data):
    images, labels = separable_data
    model = _model(queue_size=40, queue_init="data")
    model.fit(
        images[:16], labels[:16], batch_size=16, epochs=1, shuffle=False, verbose=0
    )
    # After one step the weights have moved; the queue holds the logits computed
    # before the update, so recompute them from a model with the old weights.
    fresh = _model(queue_size=40, queue_init="data")
    expected = losses.normalize_logits(fresh(images[:16])).numpy()
    np.testing.assert_allclose(
        model.queue.logits.numpy()[:, :16].T, expected, atol=1e-5
    )
    assert int(model.queue.pointer.numpy()) == 16
    np.testing.assert_array_equal(model.queue.logits.numpy()[:, 16:], 0.0)


def test_total_loss_is_the_weighted_sum(separable_data):
    images, labels = separable_data
    model = _model(ce_weight=0.5, pxy_contrast_weight=2.0, px_contrast_weight=0.25)
    result = model.evaluate(images, labels, batch_size=96, verbose=0, return_dict=True)
    weighted = (
        0.5 * result["ce"] + 2.0 * result["pxy_contrast"] + 0.25 * result["px_contrast"]
    )
    np.testing.assert_allclose(result["loss"], weighted, rtol=1e-5)


def test_passes_the_keras_checks_with_its_training_state(separable_data, tmp_path):
    """Config round trip, and a `.keras` file that carries the weights, the queue
    (rows and pointer), the replay buffer and the optimizer state, after training
    moved them all; float32 logits and state under mixed precision."""
    images, labels = separable_data
    kwargs = {
        "formulation": "reference",
        "input_noise_std": 0.03,
        "px_sgld_weight": 1.0,
        "energy_scale_rate": 2.0,  # its θ is saved, restored and cast like weights
        "sgld": SGLDSettings(steps=2, buffer_size=40),
    }
    model = _model(**kwargs)
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    x = images[:8]
    check_output(model, x, num_classes=4)
    check_config_round_trip(model, x)
    check_save_load(model, x, tmp_path)
    assert int(model.queue.pointer.numpy()) == 96 % 40
    assert int(model.optimizer.iterations.numpy()) == 6
    check_precision(
        lambda: HDGEClassifier(tiny_backbone(), queue_size=40, **kwargs),
        MIXED_POLICIES,
        x,
    )


def test_bad_inputs_name_the_problem(separable_data):
    images, labels = separable_data
    model = _model()
    with pytest.raises(ValueError, match="rank 4"):
        model.fit(images[..., 0], labels, verbose=0)
    with pytest.raises(ValueError, match="channels 3 but the backbone expects 1"):
        model.fit(np.repeat(images, 3, axis=-1), labels, verbose=0)
    with pytest.raises(TypeError, match="floating point"):
        model.fit((images * 100).astype(np.uint8), labels, verbose=0)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="Labels must be < num_classes=4"
    ):
        model.fit(images, np.full_like(labels, 4), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Labels must be >= 0"):
        model.fit(images, np.full_like(labels, -1), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        model.fit(np.full_like(images, np.nan), labels, verbose=0)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="exceeds the logit queue size K=40"
    ):
        model.fit(images, labels, batch_size=48, verbose=0)
    # A failed call leaves the model usable.
    assert np.isfinite(model.fit(images, labels, verbose=0).history["loss"][0])
    with pytest.raises(ValueError, match="formulation 'moco'"):
        HDGEClassifier(tiny_backbone(), formulation="moco")
    with pytest.raises(ValueError, match="without `loss=`"):
        _model().compile(optimizer="adam", loss="mse")


@pytest.mark.parametrize(
    "shape", [(4, 8, 8), (4, 6, 8, 1), (4, 8, 8, 3), (4, 8, 8, 1, 1)]
)
def test_images_of_another_shape_name_both_shapes(shape):
    """fit, evaluate, predict and the energy read-outs, before any graph runs:
    one line with the expected and the received shape."""
    model = _model()
    images, labels = np.zeros(shape, np.float32), np.zeros(4, np.int32)
    # fit's traced batch may have no size yet: the image axes are what differ.
    received = ", " + ", ".join(str(d) for d in shape[1:]) + ")"
    for call in (
        lambda: model.fit(images, labels, verbose=0),
        lambda: model.evaluate(images, labels, verbose=0),
        lambda: model.predict(images, verbose=0),
        lambda: energy.predict_logits(model, images),
    ):
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message and "in user code" not in message
        assert "(batch, 8, 8, 1)" in message and received in message, message


def test_sgld_settings_are_in_the_config_and_old_configs_load():
    sgld = SGLDSettings(steps=7, buffer_size=80, reinit_freq=0.1)
    model = HDGEClassifier(
        tiny_backbone(),
        queue_size=40,
        px_sgld_weight=0.5,
        energy_l2_weight=0.2,
        sgld=sgld,
    )
    config = model.get_config()
    weights = config["loss_weights"]["config"]
    assert (weights["px_sgld"], weights["pxy_sgld"], weights["energy_l2"]) == (
        0.5,
        0.0,
        0.2,
    )
    assert config["sgld"]["config"] == sgld.get_config()
    assert not set(FLAT_KEYS) & set(config)
    clone = HDGEClassifier.from_config(config)
    assert clone.sgld == sgld
    assert clone.replay_buffer.images.shape == (80, 8, 8, 1)
    # A config saved before the SGLD terms existed builds the same model as before.
    old = {k: v for k, v in config.items() if k not in ("sgld", "loss_weights")}
    old.update(ce_weight=1.0, pxy_contrast_weight=1.0, px_contrast_weight=0.0)
    before_sgld = HDGEClassifier.from_config(old)
    assert before_sgld.replay_buffer is None and before_sgld.sgld == SGLDSettings()
    assert before_sgld.loss_weights == LossWeights()
    with pytest.raises(ValueError, match="SGLDSettings.reinit_freq must be in"):
        HDGEClassifier(tiny_backbone(), sgld={"reinit_freq": 2.0})
    with pytest.raises(ValueError, match="SGLDSettings.steps must be an integer >= 0"):
        HDGEClassifier(tiny_backbone(), sgld=SGLDSettings(steps=-1))


def test_another_image_size_fails_after_a_retrace(separable_data):
    """Keras retraces with relaxed shapes for a new input shape; the height/width
    check must hold there too, for a backbone that would accept any size."""
    images, labels = separable_data
    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, padding="same")(inputs)
    )
    model = HDGEClassifier(keras.Model(inputs, keras.layers.Dense(4)(pooled)), 40)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    bigger = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="height"):
        model.fit(bigger, labels, batch_size=16, epochs=1, verbose=0)
    # The relaxed trace still checks: a third size after two traces fails too.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="height"):
        model.fit(bigger[:, 1:, 1:], labels, batch_size=16, epochs=1, verbose=0)
    relaxed = tf.TensorSpec((None, None, None, 1), tf.float32)
    check = tf.function(
        lambda images: input_checks.check_images(images, model.image_shape),
        input_signature=[relaxed],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="wrong height"):
        check(tf.zeros((2, 12, 8, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="wrong width"):
        check(tf.zeros((2, 8, 12, 1)))
    assert check(tf.zeros((2, 8, 8, 1))).shape == (2, 8, 8, 1)


@pytest.mark.parametrize(
    "head",
    [
        lambda: keras.layers.Dense(4, activation="softmax"),
        lambda: keras.layers.Dense(4, activation="sigmoid"),
        keras.layers.Softmax,
        lambda: keras.layers.Activation("softmax"),
    ],
)
def test_a_probability_head_is_rejected(head):
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    layer = head()
    outputs = layer(hidden)
    with pytest.raises(ValueError, match="needs raw logits"):
        HDGEClassifier(keras.Model(inputs, outputs), 40)


@pytest.mark.parametrize("penalty", [0.1, 0.003, 0.0005])
def test_energy_cap_and_settled_confidence_match_their_closed_forms(penalty):
    """cap = (w + α) / (2λ); the settled logit solves α(1 - p) = 2λf with
    p = 1 / (1 + (C - 1) e^-f), here by scipy's root finder."""
    from scipy.optimize import brentq

    model = HDGEClassifier(
        tiny_backbone(num_classes=10),
        queue_size=64,
        ce_weight=1.5,
        pxy_sgld_weight=0.2,
        energy_l2_weight=penalty,
    )
    cap = energy_penalty.energy_cap(model)
    assert cap == pytest.approx((0.2 + 1.5) / (2 * penalty))

    def confidence(logit):
        return 1.0 / (1.0 + 9.0 * np.exp(-logit))

    logit = brentq(lambda f: 1.5 * (1 - confidence(f)) - 2 * penalty * f, 0, 100)
    settled = energy_penalty.settled_confidence(model)
    assert settled == pytest.approx(confidence(logit), abs=1e-6)
    no_penalty = HDGEClassifier(tiny_backbone(), queue_size=64, pxy_sgld_weight=0.2)
    assert energy_penalty.energy_cap(no_penalty) == np.inf
    assert energy_penalty.settled_confidence(no_penalty) == 1.0


def test_a_learned_energy_scale_is_trained_by_the_sgld_terms_only(separable_data):
    """β = exp(rate·θ) scales the generative energy: CE has no gradient on θ, the
    SGLD term has; training moves β; the sampler's density is β·logsumexp f; and
    the SGLD terms are unchanged when the head's logits grow by c and β shrinks
    by 1/c, which is why they no longer resist a confident classifier (exactly
    for log p(x|y) = f_y; for log p(x) as far as logsumexp is a max)."""
    from hdge_tf import energy

    images, labels = separable_data
    sgld = SGLDSettings(steps=2, buffer_size=40)
    model = _model(
        pxy_sgld_weight=1.0, energy_l2_weight=0.1, energy_scale_rate=5.0, sgld=sgld
    )
    assert model.get_config()["energy_scale_rate"] == 5.0
    assert float(model.energy_scale) == 1.0
    assert energy_penalty.energy_cap(model) == np.inf
    assert energy_penalty.settled_confidence(model) == 1.0
    chains = {"pxy_sgld": (tf.constant(images[48:]), None, labels[48:])}

    def sgld_loss():
        logits = model(images[:48], training=True)
        terms = model.jem.terms(logits, labels[:48], chains)
        return terms["pxy_sgld"] + 0.1 * terms["energy_l2"]

    theta = model._log_energy_scale
    with tf.GradientTape(persistent=True) as tape:
        ce = model.loss_terms(model(images[:48], training=True), labels[:48])["ce"]
        generative = sgld_loss()
    assert tape.gradient(ce, theta) is None
    assert abs(float(tape.gradient(generative, theta))) > 1e-4

    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    beta = float(model.energy_scale)
    assert beta != pytest.approx(1.0, abs=1e-3)
    # history holds each epoch's mean β, which training moves too
    assert history.history["energy_scale"][-1] != pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(
        energy.log_density(model, images[:8], labels[:8]).numpy(),
        beta * energy.log_pxy(model(images[:8]), labels[:8]).numpy(),
        rtol=1e-5,
    )

    before = float(sgld_loss())
    head = model.backbone.layers[-1]
    head.kernel.assign(head.kernel * 3.0)
    head.bias.assign(head.bias * 3.0)
    theta.assign(theta - np.log(3.0) / 5.0)
    assert float(sgld_loss()) == pytest.approx(before, rel=1e-4)
    theta.assign(theta + np.log(3.0) / 5.0)  # a fixed β would see the logits grow
    assert abs(float(sgld_loss()) - before) > 1e-3


def test_the_energy_scale_rate_is_checked():
    with pytest.raises(ValueError, match="energy_scale_rate must be finite and >= 0"):
        HDGEClassifier(tiny_backbone(), queue_size=40, energy_scale_rate=-1.0)
    # Without an SGLD term there is no generative energy to scale.
    assert HDGEClassifier(tiny_backbone(), energy_scale_rate=2.0).energy_scale is None
