"""Whole epochs through the trainer and `fit`, on a trainer config passed in
(bin/hdge_bench.py passes the mnist5k demo, configs/mnist5k_hdge.py).

`epoch_overhead` compares `hdge-train`'s epochs with pure step time x steps;
`autotune_fit` times a plain `fit` with tf.data autotuning on or off;
`array_fit` a Keras user's `fit(x, y)` on arrays, Keras's pipeline against ours.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import keras
import ml_collections

from hdge_tf import data as data_lib
from hdge_tf import training
from hdge_tf.bench.timing import (
    EpochTimer,
    FitEndTimer,
    random_batch,
    release_models,
    time_train_steps,
)
from hdge_tf.hardware import precision_policy
from hdge_tf.optimization import build_optimizer

EPOCH_CHECK_EPOCHS = 4
FIT_END_EPOCHS = 6  # of the autotuning comparison


def _training_only(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A resolved copy of `config` without a validation split: the timed epochs
    are training steps only."""
    config = config.copy_and_resolve_references()
    config.data.validation_size = 0
    return config


def _datasets(config: ml_collections.ConfigDict) -> data_lib.DataBundle:
    """The trainer's pipeline of `config`, as `hdge-train` builds it."""
    return data_lib.build_datasets(
        config.data, config.train.batch_size, seed=config.seed
    )


def epoch_overhead(
    config: ml_collections.ConfigDict,
    epochs: int = EPOCH_CHECK_EPOCHS,
    warmup: int = 3,
    pure_epochs: int = 3,
) -> dict:
    """Median wall time of `hdge-train`'s epochs after the first (which traces)
    against pure step time x steps.

    Runs `training.train_model` (the trainer behind `hdge-train`: its pipeline,
    checkpoint, CSV, TensorBoard and progress-bar callbacks) on `config` in a
    temporary workdir, without per-epoch validation, OOD scoring or sample grids,
    which are separate passes over other data. The pure time is then measured on
    the trained model with `time_train_steps`: the median over `pure_epochs` runs
    of steps-per-epoch back-to-back steps on one fixed batch, so both sides span
    seconds and this VM's slow spells hit them alike.
    """
    config = _training_only(config)
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 (the first one traces), got {epochs}.")
    config.train.epochs = epochs
    config.train.validate, config.train.select = False, "last"
    config.train.sample_every_epochs = 0
    config.eval.ood_sets = ()
    batch_size = config.train.batch_size
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as workdir:
        model, _ = training.train_model(config, workdir, callbacks=[timer])
    data = _datasets(config)
    steps = data.steps_per_epoch
    images, labels = random_batch(
        batch_size, data.image_shape, data.num_classes, config.seed
    )
    with precision_policy(config.precision):
        step = time_train_steps(
            model, images, labels, warmup, steps * pure_epochs, timer.counter
        )
    per_step = step["step_seconds"]
    pure = [sum(per_step[i * steps : (i + 1) * steps]) for i in range(pure_epochs)]
    expected = statistics.median(pure)
    epoch_seconds = statistics.median(timer.seconds[1:])
    result = {
        "dataset": data.name,
        "network": config.backbone.name,
        "num_train": data.num_train,
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "epoch_seconds": timer.seconds,
        "epoch_traces": timer.traces,
        "median_step_seconds": step["median_step_seconds"],
        "pure_epoch_seconds": pure,
        "expected_epoch_seconds": expected,
        "median_epoch_seconds": epoch_seconds,
        "ratio": epoch_seconds / expected,
    }
    del model
    release_models()
    return result


def autotune_fit(
    autotune: bool, config: ml_collections.ConfigDict, epochs: int = FIT_END_EPOCHS
) -> dict:
    """Epoch times of a plain `model.fit` on `config`'s data and model with
    tf.data autotuning on or off, and how long `fit` takes to return after its
    last epoch, when Keras deletes its iterator: with autotuning on, that waits
    for the autotuner's thread, longer the older the iterator is
    (hdge_tf/data/autotune.py). The iterator lives through the whole fit
    (repeated data, `steps_per_epoch`) so that its age is the fit's length."""
    config = _training_only(config)
    config.data.autotune = autotune
    keras.utils.set_random_seed(config.seed)
    data = _datasets(config)
    model = training.build_model(config, data.num_classes, data.image_shape)
    steps = data.steps_per_epoch
    model.compile(optimizer=build_optimizer(config.train, steps))
    timed = _timed_fit(
        model.fit, data.train.repeat(), steps_per_epoch=steps, epochs=epochs
    )
    return {"autotune": autotune, **timed}


def _timed_fit(fit, *args, **kwargs) -> dict:
    """`fit(*args, **kwargs)`'s epoch times and how long it took to return after
    its last epoch (when Keras deletes the epoch's iterator); its model is then
    released."""
    timer = FitEndTimer()
    fit(*args, callbacks=[timer], verbose=0, **kwargs)
    fit_return = time.perf_counter() - timer.last_epoch_end
    release_models()
    return {"epoch_seconds": timer.seconds, "fit_return_seconds": fit_return}


def array_fit(
    keras_arrays: bool, config: ml_collections.ConfigDict, epochs: int = FIT_END_EPOCHS
) -> dict:
    """Epoch times of `fit(x, y)` on `config`'s training images as arrays:
    through Keras's own array pipeline (`keras.Model.fit`, autotuned) when
    `keras_arrays`, else through `HDGEClassifier.fit`'s (hdge_tf/array_inputs.py),
    and how long `fit` takes to return after its last epoch."""
    config = _training_only(config)
    keras.utils.set_random_seed(config.seed)
    x, y = data_lib.load_arrays(
        config.data.name, "train", limit=config.data.limit_train
    )
    model = training.build_model(config, int(y.max()) + 1, x.shape[1:])
    model.compile(
        optimizer=build_optimizer(config.train, len(x) // config.train.batch_size)
    )
    fit = keras.Model.fit if keras_arrays else type(model).fit
    timed = _timed_fit(
        fit, model, x, y, batch_size=config.train.batch_size, epochs=epochs
    )
    return {"pipeline": "keras" if keras_arrays else "hdge_tf", **timed}


def recipe_epochs(
    recipes: dict[str, ml_collections.ConfigDict],
    epochs: int = 3,
    rounds: int = 3,
) -> dict:
    """Training epochs of whole recipes side by side: what a recipe costs against
    another, as `hdge-train` spends it (chains every `loss.sgld_every` steps
    included), e.g. HDGE + JEM's demo against HDGE's.

    Each round trains every recipe in turn for `epochs` epochs through the
    trainer (training only, as `epoch_overhead`), so the host's slow spells hit
    them alike; an epoch's time is the median of a run's epochs after the first
    (which traces). Returns {"recipes": {name: {"epoch_seconds": per round}},
    "ratios": {name: per round, against the first recipe}}.
    """
    if epochs < 2:
        raise ValueError(f"epochs must be >= 2 (the first one traces), got {epochs}.")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    seconds: dict[str, list[float]] = {name: [] for name in recipes}
    for _ in range(rounds):
        for name, config in recipes.items():
            config = _training_only(config)
            config.train.epochs = epochs
            config.train.validate, config.train.select = False, "last"
            config.train.sample_every_epochs = 0
            config.eval.ood_sets = ()
            timer = EpochTimer()
            with tempfile.TemporaryDirectory() as workdir:
                training.train_model(config, workdir, callbacks=[timer])
            seconds[name].append(statistics.median(timer.seconds[1:]))
            release_models()
    first = next(iter(recipes))
    return {
        "epochs": epochs,
        "rounds": rounds,
        "recipes": {name: {"epoch_seconds": s} for name, s in seconds.items()},
        "ratios": {
            name: [a / b for a, b in zip(s, seconds[first], strict=True)]
            for name, s in seconds.items()
        },
    }
