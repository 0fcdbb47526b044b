"""The learning-rate schedule, the optimizer factory, and coupled (PyTorch) L2."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from hdge_tf.optimization import (
    CoupledL2Adam,
    CoupledL2SGD,
    WarmupStepDecay,
    build_optimizer,
)

LR, WD, MOMENTUM = 0.1, 0.05, 0.9
W0 = np.array([[0.5, -1.5, 2.0], [1.0, 0.25, -0.75]], np.float32)
G1 = np.array([[0.3, -0.2, 1.1], [-0.7, 0.4, 0.05]], np.float32)
G2 = np.array([[-0.5, 0.6, 0.2], [0.9, -0.1, 0.3]], np.float32)


def test_warmup_then_step_decay():
    schedule = WarmupStepDecay(
        1e-3, warmup_steps=10, boundaries=[50, 80], decay_factor=0.3
    )
    rates = [float(schedule(step)) for step in (0, 4, 9, 10, 49, 50, 79, 80, 1000)]
    expected = [1e-4, 5e-4, 1e-3, 1e-3, 1e-3, 3e-4, 3e-4, 9e-5, 9e-5]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    restored = WarmupStepDecay.from_config(schedule.get_config())
    assert float(restored(55)) == pytest.approx(3e-4)


def _train_config(**overrides):
    config = ml_collections.ConfigDict(
        {
            "optimizer": "sgd",
            "learning_rate": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "weight_decay_mode": "l2",
            "adam_epsilon": 1e-8,
            "warmup_steps": 0,
            "decay_epochs": (160, 180),
            "decay_factor": 0.3,
        }
    )
    config.update(overrides)
    return config


def _rates_at(optimizer, steps) -> list[float]:
    """The learning rate the optimizer applies at each optimizer step."""
    rates = []
    for step in steps:
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    optimizer.iterations.assign(0)
    return rates


def test_build_optimizer_converts_epochs_to_steps():
    """decay_epochs (160, 180) at 100 steps per epoch: ×0.3 from step 16,000 and
    again from 18,000; SGD with (heavy-ball) momentum; Adam without decay leaves
    a weight with a zero gradient where it is."""
    optimizer = build_optimizer(_train_config(), steps_per_epoch=100)
    rates = _rates_at(optimizer, [0, 15999, 16000, 17999, 18000, 10**6])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.03, 0.03, 0.009, 0.009], 1e-6)
    assert_torch_sgd_update(optimizer, 0.1, 0.9, 5e-4)
    adam = build_optimizer(_train_config(optimizer="adam", weight_decay=0.0), 10)
    assert isinstance(adam, keras.optimizers.Adam)
    np.testing.assert_array_equal(_run(adam, [np.zeros_like(G1)] * 2), W0)
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        build_optimizer(_train_config(optimizer="rmsprop"), 10)


def test_build_optimizer_weight_decay_modes():
    """Each mode's update, not its attributes: "l2" is torch's coupled decay for
    SGD and Adam, "decoupled" Keras's w - lr·wd·w beside the SGD step."""
    grads = [G1.astype(np.float64), G2.astype(np.float64)]
    coupled = build_optimizer(_train_config(weight_decay_mode="l2"), 10)
    assert_torch_sgd_update(coupled, 0.1, 0.9, 5e-4)
    decoupled = build_optimizer(_train_config(weight_decay_mode="decoupled"), 10)
    np.testing.assert_allclose(
        _run(decoupled, [G1]), W0 - 0.1 * 5e-4 * W0 - 0.1 * G1, rtol=1e-6
    )
    adam = build_optimizer(
        _train_config(optimizer="adam", learning_rate=1e-2, weight_decay=WD), 10
    )
    np.testing.assert_allclose(
        _run(adam, [G1, G2]),
        torch_adam(W0.astype(np.float64), grads, 1e-2, WD),
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="weight_decay_mode 'L2'.*'l2', 'decoupled'"):
        build_optimizer(_train_config(weight_decay_mode="L2"), 10)


def _first_adam_step(optimizer, gradient: float) -> float:
    """The first update of a zero weight (no decay to add) by `gradient`."""
    var = keras.Variable(np.zeros((1,), np.float32))
    optimizer.apply([tf.constant([gradient], tf.float32)], [var])
    return float(var.numpy()[0])


def test_the_base_config_defaults_to_coupled_l2_and_torch_epsilon():
    """epsilon 1e-8 reaches the update where torch puts it: with a gradient of 1e-8
    the first step is torch.optim.Adam's (lr * 1e-8 / (1e-8 + 1e-8) = lr / 2), 5.5x
    that with epsilon 1e-7, and twice Keras's own Adam's (epsilon on sqrt(v))."""
    from hdge_tf.configs import base

    train = base.get_config().train
    assert train.weight_decay_mode == "l2" and train.adam_epsilon == 1e-8
    adam = build_optimizer(train.copy_and_resolve_references(), 10)
    assert isinstance(adam, CoupledL2Adam)
    rate = float(adam.learning_rate)

    def torch_step(lr, eps):
        return float(torch_adam(np.zeros(1), [np.array([1e-8])], lr, 0.0, eps=eps)[0])

    step = _first_adam_step(adam, 1e-8)
    np.testing.assert_allclose(step, torch_step(rate, 1e-8), rtol=1e-5)
    assert abs(step) > 5 * abs(torch_step(rate, 1e-7))
    keras_form = _first_adam_step(keras.optimizers.Adam(rate, epsilon=1e-8), 1e-8)
    assert abs(step) > 1.5 * abs(keras_form)
    other = build_optimizer(_train_config(optimizer="adam", adam_epsilon=1e-3), 10)
    np.testing.assert_allclose(
        _first_adam_step(other, 1e-8), torch_step(0.1, 1e-3), rtol=1e-5
    )


def test_adam_matches_torch_for_gradients_near_epsilon():
    """Gradients of 1e-5 to 1e-8 (a fifth of a fresh WRN's gradient entries are
    below 1e-5): five steps of CoupledL2Adam are torch.optim.Adam's, while Keras's
    Adam, whose epsilon acts as epsilon / sqrt(1 - beta_2^t), moves them less."""
    scales = np.array([[1e-5, -3e-6, 1e-6], [-3e-7, 1e-7, 1e-8]])
    grads = [scales * (1.0 + 0.1 * k) * (-1) ** k for k in range(5)]
    w0 = np.zeros((2, 3), np.float32)
    want = torch_adam(w0.astype(np.float64), grads, 1e-3, 0.0)
    got = _run(
        CoupledL2Adam(1e-3, epsilon=1e-8), [g.astype(np.float32) for g in grads], w0
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-10)
    keras_form = _run(
        keras.optimizers.Adam(1e-3, epsilon=1e-8),
        [g.astype(np.float32) for g in grads],
        w0,
    )
    assert np.abs(keras_form - want).max() > 0.1 * np.abs(want).max()


def test_the_sgd_recipe_config():
    """The SGD recipe's schedule (0.1, ×0.3 at epochs 160 and 180, no warmup) and
    its coupled-L2 momentum update, read off what the optimizer does."""
    from hdge_tf.configs import cifar10_hdge_sgd

    config = cifar10_hdge_sgd.get_config()
    assert (config.backbone.norm, config.backbone.dropout) == ("batch", 0.3)
    assert config.train.batch_size == 128 and config.train.epochs == 200
    optimizer = build_optimizer(config.train, steps_per_epoch=351)
    first, second = 160 * 351, 180 * 351
    rates = _rates_at(optimizer, [0, first - 1, first, second - 1, second])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.03, 0.03, 0.009], rtol=1e-6)
    assert_torch_sgd_update(optimizer, 0.1, 0.9, 5e-4)


# A hand-written numpy version of torch.optim.SGD / torch.optim.Adam's documented
# update with weight_decay (coupled): g' = g + wd * w, then the usual rule.


def torch_sgd(w, grads, lr, momentum, wd):
    buf = None
    for g in grads:
        g = g + wd * w
        buf = g if buf is None else momentum * buf + g
        w = w - lr * buf
    return w


def torch_adam(w, grads, lr, wd, beta1=0.9, beta2=0.999, eps=1e-8):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g + wd * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def _run(optimizer, grads, w0=W0):
    var = keras.Variable(w0)
    for g in grads:
        optimizer.apply([tf.constant(g)], [var])
    return var.numpy()


def assert_torch_sgd_update(optimizer, lr, momentum, wd) -> np.ndarray:
    """Two steps of `optimizer` from W0 by G1 then G2 are torch.optim.SGD's with
    these settings. Returns the weights after them."""
    grads = [G1.astype(np.float64), G2.astype(np.float64)]
    got = _run(optimizer, [G1, G2])
    want = torch_sgd(W0.astype(np.float64), grads, lr, momentum, wd)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    return got


def test_coupled_l2_sgd_matches_torch_formula():
    """Two steps so that the momentum buffer carries the decayed gradient."""
    grads = [G1.astype(np.float64), G2.astype(np.float64)]
    opt = CoupledL2SGD(LR, momentum=MOMENTUM, coupled_weight_decay=WD)
    got = assert_torch_sgd_update(opt, LR, MOMENTUM, WD)
    without = torch_sgd(W0.astype(np.float64), grads, LR, MOMENTUM, 0.0)
    assert np.abs(got - without).max() > 1e-3  # the decay is visible


def test_coupled_l2_adam_matches_torch_formula():
    """Gradients well above epsilon, with coupled decay. atol is float32's
    resolution at |w| ~ 2; the decay moves w by > 1e-3."""
    grads = [G1.astype(np.float64), G2.astype(np.float64)]
    want = torch_adam(W0.astype(np.float64), grads, 1e-2, WD)
    opt = CoupledL2Adam(1e-2, epsilon=1e-8, coupled_weight_decay=WD)
    got = _run(opt, [G1, G2])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    without = torch_adam(W0.astype(np.float64), grads, 1e-2, 0.0)
    assert np.abs(got - without).max() > 1e-3


def test_decoupled_still_works_and_differs_from_coupled():
    """Keras's decoupled decay on one SGD step: w ← w - lr·wd·w, then w ← w - lr·g.
    Coupled with Adam differs: there the decay term is rescaled by 1/sqrt(v̂)."""
    decoupled = _run(CoupledL2SGD(LR, weight_decay=WD), [G1])
    np.testing.assert_allclose(decoupled, W0 - LR * WD * W0 - LR * G1, rtol=1e-6)
    adam_coupled = _run(CoupledL2Adam(1e-2, coupled_weight_decay=WD), [G1, G2])
    adam_decoupled = _run(keras.optimizers.Adam(1e-2, weight_decay=WD), [G1, G2])
    plain = _run(keras.optimizers.Adam(1e-2), [G1, G2])
    np.testing.assert_allclose(
        adam_decoupled,
        _run_decoupled_adam_by_hand(1e-2, WD, [G1, G2]),
        rtol=1e-5,
        atol=1e-7,
    )
    assert np.abs(adam_coupled - adam_decoupled).max() > 1e-3
    assert np.abs(adam_coupled - plain).max() > 1e-3
    assert np.abs(adam_decoupled - plain).max() > 1e-5


def _run_decoupled_adam_by_hand(lr, wd, grads):
    w = W0.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-7)
    return w


def test_coupled_l2_get_config_round_trip():
    """A restored optimizer (from its config, or serialized) makes the updates the
    original makes: the same schedule and the same coupled decay."""
    schedule = WarmupStepDecay(0.1, 5, [100], 0.3)
    for cls, extra in ((CoupledL2SGD, {"momentum": 0.9}), (CoupledL2Adam, {})):
        opt = cls(schedule, coupled_weight_decay=WD, **extra)
        config = opt.get_config()
        want = _run(cls.from_config(config), [G1, G2])
        without = _run(cls(schedule, **extra), [G1, G2])
        assert np.abs(want - without).max() > 1e-4  # the decay is in the update
        again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
        assert type(again) is cls
        np.testing.assert_array_equal(_run(again, [G1, G2]), want)
        np.testing.assert_array_equal(_run(opt, [G1, G2]), want)
        assert _rates_at(again, [0, 4, 99, 100]) == _rates_at(opt, [0, 4, 99, 100])
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        CoupledL2SGD(0.1, coupled_weight_decay=-1.0)


def _dense_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(inputs))


def _zero_loss(y_true, y_pred):
    """Zero gradients, so a step changes the weights by the decay alone."""
    return 0.0 * keras.ops.sum(y_pred)


def test_compiled_model_saves_and_loads(tmp_path):
    model = _dense_model()
    model.compile(CoupledL2SGD(LR, momentum=MOMENTUM, coupled_weight_decay=WD), "mse")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is CoupledL2SGD
    assert int(loaded.optimizer.iterations) == 1
    np.testing.assert_allclose(loaded.get_weights()[0], model.get_weights()[0])
    # Training goes on as it would have: the momentum and the decay came back.
    for trained in (model, loaded):
        trained.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(
        loaded.get_weights()[0], model.get_weights()[0], rtol=1e-6
    )


def test_coupled_l2_under_loss_scaling():
    """mixed_float16 wraps the optimizer in a LossScaleOptimizer, which unscales the
    gradients and then calls our `apply`: the decay must see unscaled gradients (one
    SGD step with zero gradients: w ← w - lr·wd·w, not lr·wd·w / scale)."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _dense_model()
        w0 = model.get_weights()[0]
        model.compile(
            CoupledL2SGD(LR, momentum=MOMENTUM, coupled_weight_decay=WD),
            loss=_zero_loss,
        )
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert type(model.optimizer.inner_optimizer) is CoupledL2SGD
        x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        np.testing.assert_allclose(
            model.get_weights()[0], w0 * (1 - LR * WD), rtol=1e-6
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The wrapper directly, with gradients scaled as a scaled loss gives them.
    lso = keras.optimizers.LossScaleOptimizer(
        CoupledL2SGD(LR, momentum=MOMENTUM, coupled_weight_decay=WD)
    )
    var = keras.Variable(W0)
    lso.build([var])
    assert float(lso.dynamic_scale) > 1000
    lso.apply([tf.constant(G1) * lso.dynamic_scale], [var])
    np.testing.assert_allclose(
        var.numpy(), W0 - LR * (G1 + WD * W0), rtol=1e-5, atol=1e-7
    )


def test_coupled_l2_is_added_once_across_replicas(mirrored):
    """Gradients are all-reduced (summed) across replicas before `update_step`, so
    two replicas with zero gradients still decay by lr·wd·w, not 2·lr·wd·w."""
    with mirrored.scope():
        var = keras.Variable(W0)
        opt = CoupledL2SGD(LR, momentum=MOMENTUM, coupled_weight_decay=WD)
        opt.build([var])

    @tf.function
    def step():
        mirrored.run(lambda: opt.apply([tf.zeros_like(W0)], [var]))

    step()
    np.testing.assert_allclose(var.numpy(), W0 * (1 - LR * WD), rtol=1e-6)
