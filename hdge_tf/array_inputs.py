"""`fit`, `evaluate` and `predict` on in-memory arrays, through a tf.data pipeline
without autotuning.

Keras turns arrays into a pipeline that ends in `prefetch(AUTOTUNE)`. With TF 2.21,
deleting such an iterator waits for the autotuner's thread to wake from a sleep
that grows with the iterator's age (hdge_tf/data/autotune.py). Keras makes a new
iterator every epoch, so `HDGEClassifier.fit(x, y)` on the 4,000 mnist5k training
images (batches of 64, 2-core Xeon) started epochs 2-5 about 5 s late: 10 s
epochs instead of 5 s. The same arrays through `as_dataset` give what Keras's
arrays give (every example once per epoch, reshuffled each epoch unless
`shuffle=False`, the last batch partial), without the wait. Calls this does not
cover (sample or class weights, `validation_split`, `steps_per_epoch`,
`shuffle="batch"`, inputs other than one array) go to Keras unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hdge_tf.data.autotune import set_autotune

# Keras's batch size when a call gives none.
DEFAULT_BATCH_SIZE = 32


def is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | tf.Tensor)


def as_dataset(
    x, y=None, batch_size: int | None = None, shuffle: bool = False
) -> tf.data.Dataset:
    """Batches of `x` (and `y`), each example once per pass, reshuffled on every
    pass when `shuffle`, without tf.data autotuning. Indices are shuffled and the
    rows gathered, as Keras does, so the shuffle holds no copy of the data."""
    arrays = tuple(tf.convert_to_tensor(a) for a in ((x,) if y is None else (x, y)))
    ds = tf.data.Dataset.range(len(arrays[0]))
    if shuffle:
        ds = ds.shuffle(len(arrays[0]), reshuffle_each_iteration=True)

    def rows(indices):
        batch = tuple(tf.gather(a, indices) for a in arrays)
        return batch[0] if y is None else batch

    ds = ds.batch(batch_size or DEFAULT_BATCH_SIZE).map(rows).prefetch(1)
    options = tf.data.Options()
    # As Keras's arrays: each worker of a multi-worker strategy its share of rows.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return set_autotune(ds.with_options(options))


_FIT = inspect.signature(keras.Model.fit)
_EVALUATE = inspect.signature(keras.Model.evaluate)
_PREDICT = inspect.signature(keras.Model.predict)


def _arguments(signature, model, args, kwargs) -> dict[str, Any] | None:
    try:
        bound = signature.bind(model, *args, **kwargs)
    except TypeError:
        return None  # Keras names the problem
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self")
    arguments.update(arguments.pop("kwargs", {}))
    return arguments


def _unweighted_arrays(a: dict[str, Any] | None) -> bool:
    """Whether a call's bound arguments are arrays `x` and `y` without sample
    weights."""
    return (
        a is not None
        and is_array(a["x"])
        and is_array(a["y"])
        and a["sample_weight"] is None
    )


def fit_arguments(model, args, kwargs) -> dict[str, Any] | None:
    """`model.fit`'s arguments with arrays `x`, `y` (and `validation_data=(x, y)`)
    as datasets; None for a call to leave to Keras."""
    a = _arguments(_FIT, model, args, kwargs)
    if (
        not _unweighted_arrays(a)
        or a["class_weight"] is not None
        or a["validation_split"]
        or a["steps_per_epoch"] is not None
        or a["shuffle"] not in (True, False)
    ):
        return None
    validation = a["validation_data"]
    if validation is not None:
        if not (
            isinstance(validation, tuple | list)
            and len(validation) == 2
            and all(is_array(v) for v in validation)
        ):
            return None
        batch = a["validation_batch_size"] or a["batch_size"]
        a["validation_data"] = as_dataset(*validation, batch_size=batch)
        a["validation_batch_size"] = None
    a["x"] = as_dataset(a["x"], a.pop("y"), a.pop("batch_size"), a["shuffle"])
    a["shuffle"] = False  # the dataset's own (Keras warns of any other value)
    return a


def evaluate_arguments(model, args, kwargs) -> dict[str, Any] | None:
    """`model.evaluate`'s arguments with arrays `x`, `y` as a dataset; None for a
    call to leave to Keras."""
    a = _arguments(_EVALUATE, model, args, kwargs)
    if not _unweighted_arrays(a) or a["steps"] is not None:
        return None
    a["x"] = as_dataset(a["x"], a.pop("y"), a.pop("batch_size"))
    return a


def predict_arguments(model, args, kwargs) -> dict[str, Any] | None:
    """`model.predict`'s arguments with an array `x` as a dataset; None for a
    call to leave to Keras."""
    a = _arguments(_PREDICT, model, args, kwargs)
    if a is None or not is_array(a["x"]) or a["steps"] is not None:
        return None
    a["x"] = as_dataset(a["x"], batch_size=a.pop("batch_size"))
    return a
