"""tf.data autotuning, off unless asked for.

With autotuning on (tf.data's default), deleting an iterator can wait for the
autotuner's background thread to wake from a sleep that grows with the
iterator's age (TF 2.21, seen with Keras `fit`'s iterators). Measured on the
2-core CPU with the mnist5k demo (5 s epochs): the first step of an epoch,
when Keras replaces the previous epoch's iterator, took up to 5 s instead of
75 ms, and `fit` returned 32-34 s after the end of a 50 s run; with autotuning
off, 2 ms. `num_parallel_calls=AUTOTUNE` maps still run in parallel (one call
per core), so our pipelines lose nothing here. `hdge-bench` measures both
(bench.autotune_fit).
"""

from __future__ import annotations

import tensorflow as tf


def set_autotune(ds: tf.data.Dataset, enabled: bool = False) -> tf.data.Dataset:
    """`ds` with tf.data autotuning `enabled` (these options override any set
    upstream, e.g. by TFDS)."""
    options = tf.data.Options()
    options.autotune.enabled = enabled
    return ds.with_options(options)
