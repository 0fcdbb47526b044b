"""XLA (`train.jit_compile`): the XLA-compiled training step and SGLD chain compute
what the uncompiled ones do, on one device and under MirroredStrategy (two CPU
replicas), and XLA is really used when asked for."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import quadrant_data, smoke_config, tiny_backbone

from hdge_tf import hardware, sampling, training
from hdge_tf.distribute import CustomLoop
from hdge_tf.model import HDGEClassifier
from hdge_tf.sgld_settings import SGLDSettings

PLAIN = {"input_noise_std": 0.03}  # CE + contrastive log p(x|y)
# + JEM's log p(x) term: 3 SGLD steps from a small buffer, re-initialized often.
SGLD = {
    **PLAIN,
    "px_sgld_weight": 1.0,
    "energy_l2_weight": 0.1,
    "sgld": SGLDSettings(steps=3, buffer_size=64, reinit_freq=0.3),
}
RTOL, ATOL = 1e-4, 1e-5


def _model(kwargs, jit_compile, strategy=None, weights=None):
    with (strategy or tf.distribute.get_strategy()).scope():
        model = HDGEClassifier(tiny_backbone(), queue_size=64, **kwargs)
        # SGD: an update linear in the gradient (Adam's first step is about
        # lr * sign(g), which would turn a rounding difference into lr).
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
        if weights is not None:
            model.set_weights(weights)
    assert model.step_jit_compile is jit_compile
    return model


def _dataset():
    images, labels = quadrant_data(32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)


def _assert_same_training(got, want, got_history, want_history):
    """Equal logged loss terms and equal weights (backbone, queue, replay buffer)
    after the same two steps."""
    assert sorted(got_history) == sorted(want_history)
    for name, values in want_history.items():
        np.testing.assert_allclose(
            got_history[name], values, rtol=RTOL, atol=ATOL, err_msg=name
        )
    assert int(got.optimizer.iterations.numpy()) == 2
    for a, b in zip(got.get_weights(), want.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [PLAIN, SGLD], ids=["hdge", "hdge_sgld"])
def test_xla_step_matches_the_uncompiled_step(kwargs):
    plain = _model(kwargs, False)
    xla = _model(kwargs, True, weights=plain.get_weights())
    # Two steps: the second reads the queue (and buffer) the first wrote.
    want = plain.fit(_dataset(), epochs=1, shuffle=False, verbose=0).history
    got = xla.fit(_dataset(), epochs=1, shuffle=False, verbose=0).history
    _assert_same_training(xla, plain, got, want)
    if "px_sgld_weight" in kwargs:
        assert want["px_sgld"][0] != 0 and want["energy_l2"][0] > 0


def _replica_batches(strategy):
    """The two global batches of `_dataset()`, split over the replicas as a
    distributed dataset splits them (replica r: rows 8r to 8r + 8 of a batch)."""
    images, labels = quadrant_data(32)
    for start in (0, 16):

        def rows(context, start=start):
            first = start + 8 * context.replica_id_in_sync_group
            return images[first : first + 8], labels[first : first + 8]

        yield strategy.experimental_distribute_values_from_function(rows)


@pytest.mark.slow
def test_xla_step_matches_under_mirrored_strategy(mirrored):
    """Keras's compiled train function (the one `fit` runs) on per-replica batches.
    Not `fit` itself: on these CPUs, deleting the first distributed-dataset
    iterator after XLA steps stalls for 4-30 s with every thread idle."""
    plain = _model(SGLD, False, mirrored)
    xla = _model(SGLD, True, mirrored, plain.get_weights())
    history = {}
    for model in (plain, xla):
        model.make_train_function()
        for batch in _replica_batches(mirrored):
            logs = model.train_function(iter([batch]))
            for name, value in logs.items():
                history.setdefault(model, {}).setdefault(name, []).append(float(value))
    _assert_same_training(xla, plain, history[xla], history[plain])
    assert history[plain]["px_sgld"][0] != 0
    # Both replicas kept identical queues and buffers.
    for variable in (xla.queue.logits, xla.replay_buffer.images):
        first, second = (v.numpy() for v in variable.value.values)
        np.testing.assert_array_equal(first, second)


def test_xla_chain_matches_the_uncompiled_chain():
    """A class-conditional chain (the unconditional one runs in the SGLD step of
    `test_xla_step_matches_the_uncompiled_step`)."""
    model = tiny_backbone()
    starts = tf.random.stateless_uniform([8, 8, 8, 1], [1, 2], -1.0, 1.0)
    labels = np.arange(8) % 4
    args = (model, starts, 5, 1.0, 0.01, labels, 3)
    want = sampling.sgld(*args).numpy()
    got = sampling.sgld(*args, jit_compile=True).numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # The noise is part of what is compared: without it the chain ends elsewhere.
    noiseless = sampling.sgld(model, starts, 5, 1.0, 0.0, labels, 3).numpy()
    assert np.abs(want - noiseless).max() > 1e-3


def test_random_draws_are_the_same_inside_and_outside_xla():
    """TF's own float draws and, for seeds outside [0, 2^31), its default seed
    handling differ under XLA; the step's draws must not."""

    def draws(seed):
        folded = sampling.fold_in(seed, 7)
        return (
            folded,
            sampling.uniform_noise([1000], folded, -1.0, 1.0),
            sampling.normal_noise([100, 100], folded),
        )

    uncompiled, compiled = tf.function(draws), tf.function(draws, jit_compile=True)
    for seed in ([3, 4], [-3, 2**40]):  # fold_in results take any int64 value
        seed = tf.constant(seed, tf.int64)
        want, got = uncompiled(seed), compiled(seed)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[2], want[2], atol=1e-6)
    uniform, normal = want[1].numpy(), want[2].numpy()
    assert -1 <= uniform.min() and uniform.max() < 1 and abs(uniform.mean()) < 0.05
    assert abs(normal.mean()) < 0.03 and abs(normal.std() - 1) < 0.03


def _fake_gpus(monkeypatch):
    real = tf.config.list_physical_devices

    def devices(device_type=None):
        if device_type == "GPU":
            return [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")]
        return real(device_type)

    monkeypatch.setattr(tf.config, "list_physical_devices", devices)


def test_auto_is_on_with_a_gpu_only(monkeypatch):
    assert not tf.config.list_physical_devices("GPU")  # this CPU-only host
    assert hardware.resolve_jit_compile("auto", deterministic=False) is False
    assert HDGEClassifier(tiny_backbone()).step_jit_compile is False
    model = _model(PLAIN, False)
    model.compile(optimizer="sgd")  # "auto" by default
    assert model.step_jit_compile is False
    _fake_gpus(monkeypatch)
    assert hardware.resolve_jit_compile("auto", deterministic=False) is True
    model.compile(optimizer="sgd")
    assert model.step_jit_compile is True
    # TF op determinism does not cover XLA: auto stays off, True is an error.
    assert hardware.resolve_jit_compile("auto", deterministic=True) is False
    with pytest.raises(ValueError, match="determinism"):
        hardware.resolve_jit_compile(True, deterministic=True)


@pytest.mark.parametrize(
    "value, expected",
    [("auto", False), (True, True), (False, False), ("True", True), ("false", False)],
)
def test_config_values(value, expected):
    """absl's --config.train.jit_compile=True gives the string "True" (the field is
    a string); Python bools come from code calling compile()."""
    assert hardware.resolve_jit_compile(value, deterministic=False) is expected


@pytest.mark.parametrize("bad", ["yes", "1", 1, None, "on"])
def test_a_bad_value_is_named(bad):
    with pytest.raises(ValueError, match=f"jit_compile value {bad!r}"):
        hardware.resolve_jit_compile(bad, deterministic=False)


def test_the_trainer_rejects_a_bad_value_before_loading_data(tmp_path):
    config = smoke_config()
    config.train.jit_compile = "maybe"
    with pytest.raises(ValueError, match=r"train.jit_compile='maybe': expected one of"):
        training.train(config, tmp_path / "run")
    config.train.jit_compile = "True"
    assert training._jit_compile(config) is True


def _xla_compiled_ops(graph: tf.Graph) -> list[set[str]]:
    """For each function call in `graph` marked for XLA (`_XlaMustCompile`, what
    tf.function(jit_compile=True) sets), the op types XLA compiles: the called
    function's and those of every function it calls (loop bodies, nested
    tf.functions)."""
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}

    def ops(name, seen):
        if name in seen:
            return set()
        seen.add(name)
        found = set()
        for node in library[name].node_def:
            found.add(node.op)
            for value in node.attr.values():
                if value.func.name in library:
                    found |= ops(value.func.name, seen)
        return found

    def must_compile(attrs):
        return "_XlaMustCompile" in attrs and attrs["_XlaMustCompile"].b

    calls = [n for n in graph.as_graph_def().node if must_compile(n.attr)]
    assert all(must_compile(library[n.attr["f"].func.name].attr) for n in calls)
    return [ops(n.attr["f"].func.name, set()) for n in calls]


def _assert_xla_runs_the_computation(compiled, replicas):
    """One XLA function per replica, holding the forward and backward passes and
    the SGLD chain; the input checks, the cross-replica merges and the optimizer
    update outside it."""
    assert len(compiled) == replicas
    for ops in compiled:
        assert {"Conv2D", "Conv2DBackpropFilter", "MatMul"} <= ops
        assert ops & {"While", "StatelessWhile"}  # the chain's loop
        assert "StatelessRandomUniformFullIntV2" in ops  # its noise
        # XLA would drop Assert ops; collectives cannot be in a replica's cluster.
        assert not ops & {"Assert", "CollectiveReduceV2", "CollectiveGatherV2"}
        assert "ResourceApplyGradientDescent" not in ops
        assert "AssignSubVariableOp" not in ops  # SGD's update


def test_the_traced_step_runs_its_computation_in_xla():
    """What Keras's train function traces, `strategy.run(train_step)`."""
    strategy = tf.distribute.get_strategy()
    images, labels = quadrant_data(16)
    specs = (tf.TensorSpec(images.shape), tf.TensorSpec(labels.shape, tf.int32))
    for jit_compile in (True, False):
        model = _model(SGLD if jit_compile else PLAIN, jit_compile)

        @tf.function
        def step(x, y, model=model):
            return strategy.run(model.train_step, args=((x, y),))

        compiled = _xla_compiled_ops(step.get_concrete_function(*specs).graph)
        if jit_compile:
            _assert_xla_runs_the_computation(compiled, 1)
        else:
            assert compiled == []


def test_the_custom_loop_runs_the_computation_in_xla_on_each_replica(mirrored):
    """The multi-worker loop's own tf.function, under two replicas."""
    loop = CustomLoop(_model(SGLD, True, mirrored), mirrored)
    spec = mirrored.experimental_distribute_dataset(_dataset()).element_spec
    graph = loop._train.get_concrete_function(spec).graph
    _assert_xla_runs_the_computation(_xla_compiled_ops(graph), 2)
