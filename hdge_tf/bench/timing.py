"""Timers and memory readings: what one measurement is.

Steps are timed on a fixed batch of uniform [-1, 1] noise through the model's own
train function (the one `fit` runs): `warmup` steps (tracing included), then
`repeats` steps, each synced by fetching the loss. The SGLD chain a jem step runs
is timed alone too (`time_sgld_chain`). Trace counts say whether the step
retraced; peak RSS is the process's `ru_maxrss`.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from hdge_tf import sampling
from hdge_tf.evaluation import ood, robustness

PGD_NORM = "linf"
PGD_EPSILON = 16 / 255  # 8/255 on the [0, 1] scale


def random_batch(
    batch_size: int, image_shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images uniform in [-1, 1] (never all zeros, which could take fast paths)
    [N, H, W, C] float32, and labels uniform over the classes [N] int32."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch_size, *image_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
    return images, labels


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KB


def release_models() -> None:
    """Frees what TF and Keras still hold of models the caller has deleted, so
    the next measurement in this process starts from a clean state."""
    gc.collect()
    keras.backend.clear_session()


class TraceCounter:
    """Counts traces of a model's train step.

    Keras does not expose its train function's `tf.function`, so the Python
    `train_step` is wrapped instead: inside `tf.function` it only runs when the
    function traces, so the count is the number of traces (eagerly, one per step).
    """

    def __init__(self, model: keras.Model):
        if model.train_function is not None:
            raise ValueError(
                "Attach the TraceCounter before the train function is made "
                "(before fit or make_train_function)."
            )
        self.count = 0
        step = model.train_step

        def counted_train_step(data):
            self.count += 1
            return step(data)

        model.train_step = counted_train_step


def timed(
    fn: Callable[[], object], warmup: int, repeats: int
) -> tuple[list[float], float]:
    """Seconds of each of `repeats` calls after `warmup` calls, and their median
    (robust to this shared VM's slow spells); `fn` must sync."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds, statistics.median(seconds)


def time_train_steps(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    warmup: int = 3,
    repeats: int = 10,
    counter: TraceCounter | None = None,
) -> dict:
    """Times the model's train function (the one `fit` runs) on one fixed batch.

    The batch comes from a repeated `tf.data` dataset, as in `fit`, so each step
    pays the same input and dispatch costs. `counter` must be attached before the
    train function was made; without one, one is attached here.
    """
    if counter is None:
        counter = TraceCounter(model)
    model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    def step():
        # Fetching a value ends the step: the time covers the whole update.
        return model.train_function(iterator)["loss"].numpy()

    for _ in range(warmup):
        step()
    traces_after_warmup = counter.count
    seconds, median = timed(step, 0, repeats)
    return {
        "step_seconds": seconds,
        "median_step_seconds": median,
        "images_per_second": len(images) / median,
        "traces": counter.count,
        "retraces_while_timing": counter.count - traces_after_warmup,
    }


def time_evaluation(
    model: keras.Model,
    images: np.ndarray,
    batch_size: int = 256,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Images/s of the evaluation scores: `ood.predict_logits` then `ood.log_px`.

    `first_call_seconds` includes tracing; `predict_logits` traces on every call,
    so `one_batch_seconds` (a call on one batch) shows that fixed cost.
    """

    def scores(x):
        return ood.log_px(ood.predict_logits(model, x, batch_size)).numpy()

    start = time.perf_counter()
    scores(images)
    first = time.perf_counter() - start
    seconds, median = timed(lambda: scores(images), max(warmup - 1, 0), repeats)
    _, one_batch = timed(lambda: scores(images[:batch_size]), 0, repeats)
    return {
        "images": len(images),
        "batch_size": batch_size,
        "first_call_seconds": first,
        "seconds": seconds,
        "median_seconds": median,
        "images_per_second": len(images) / median,
        "one_batch_seconds": one_batch,
    }


def time_pgd(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int = 5,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Seconds per PGD iteration (L∞, ε = 16/255 in [-1, 1] units) on one batch:
    the median time of a `robustness.pgd_attack` call over its `steps`."""
    if steps < 1:
        raise ValueError(f"PGD needs steps >= 1, got {steps}.")

    def attack():
        return robustness.pgd_attack(
            model, images, labels, PGD_NORM, PGD_EPSILON, steps
        ).numpy()

    seconds, median = timed(attack, warmup, repeats)
    return {
        "batch_size": len(images),
        "steps": steps,
        "call_seconds": seconds,
        "median_call_seconds": median,
        "iteration_seconds": median / steps,
    }


def time_sgld_chain(
    model: keras.Model,
    starts: np.ndarray,
    steps: int,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Seconds of one SGLD chain of `steps` steps from `starts` ([N, H, W, C]),
    through the function `JEMTerms.chains` calls in a training step
    (`sampling.sgld_chain`, or its XLA twin with `model.step_jit_compile`) with
    the model's step size and noise: the median of `repeats` calls after `warmup`
    (the first traces). Each call syncs by fetching the samples."""
    chain = sampling.sgld_chain_xla if model.step_jit_compile else sampling.sgld_chain
    starts = tf.constant(starts, tf.float32)
    numbers = (
        tf.constant(steps, tf.int32),
        tf.constant(model.sgld.step_size, tf.float32),
        tf.constant(model.sgld.noise_std, tf.float32),
        sampling.seed_pair(0),
    )
    seconds, median = timed(
        lambda: chain(model, starts, *numbers).numpy(), warmup, repeats
    )
    return {
        "sgld_chain_call_seconds": seconds,
        "sgld_chain_seconds": median,
        "sgld_step_seconds": median / steps if steps else None,
    }


class EpochTimer(keras.callbacks.Callback):
    """Wall time and train-step traces of each epoch (the counter is attached when
    `fit` hands over the model, before it makes its train function)."""

    def __init__(self):
        super().__init__()
        self.counter: TraceCounter | None = None
        self.seconds: list[float] = []
        self.traces: list[int] = []

    def set_model(self, model):
        super().set_model(model)
        if self.counter is None:
            self.counter = TraceCounter(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._traces = time.perf_counter(), self.counter.count

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.traces.append(self.counter.count - self._traces)


class FitEndTimer(EpochTimer):
    """Also notes when the last epoch ended (Keras deletes the epoch's iterator
    only after that, when `fit` returns)."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.last_epoch_end = time.perf_counter()
