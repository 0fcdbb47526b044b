"""The circular queue of past inputs' normalized logits (MoCo-style, no encoder)."""

from __future__ import annotations

import keras
import tensorflow as tf

from hdge_tf.losses import normalize_logits

QUEUE_INITS = ("random", "data")


@keras.saving.register_keras_serializable(package="hdge_tf")
class LogitQueue(keras.layers.Layer):
    """K slots of L2-normalized C-dimensional logits, stored class-major as [C, K].

    The state lives in non-trainable weights so `.keras` files and checkpoints carry
    it. Class-major storage makes the per-class reductions of the contrastive loss
    read contiguous rows.

    Args:
      size: K, the number of queue slots.
      num_classes: C.
      init: "random" starts from normalized N(0, 1) rows, as the published code does;
        "data" starts empty and the loss only contrasts against slots written so far.
    """

    def __init__(self, size: int, num_classes: int, init: str = "random", **kwargs):
        kwargs.setdefault("dtype", "float32")  # never follows a mixed policy
        super().__init__(**kwargs)
        if size < 1:
            raise ValueError(f"Queue size must be positive, got {size}.")
        if init not in QUEUE_INITS:
            raise ValueError(
                f"Unknown queue init {init!r}; expected one of {QUEUE_INITS}."
            )
        self.size = int(size)
        self.num_classes = int(num_classes)
        self.init = init
        self.logits = self._state(
            "logits", (self.num_classes, self.size), self._initial_logits, "float32"
        )
        self.pointer = self._state("pointer", (), "zeros", "int64")
        # Slots holding data; all K for a random start, counted up for a data start.
        filled = self.size if init == "random" else 0
        self.num_filled = self._state(
            "num_filled", (), keras.initializers.Constant(filled), "int64"
        )
        self.built = True

    def _state(self, name, shape, initializer, dtype):
        # Every replica writes identical values (see `enqueue`), so the first
        # replica's write is the one to keep.
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=False,
            dtype=dtype,
            aggregation="only_first_replica",
        )

    def _initial_logits(self, shape, dtype=None):
        if self.init == "data":
            return tf.zeros(shape, dtype)
        noise = keras.random.normal(
            shape, dtype=dtype, seed=keras.random.SeedGenerator()
        )
        return tf.math.l2_normalize(noise, axis=0)  # each slot (column) unit length

    def valid_mask(self) -> tf.Tensor | None:
        """[K] bool of slots that hold data, or None when every slot does."""
        if self.init == "random":
            return None
        return tf.range(self.size, dtype=tf.int64) < self.num_filled

    def check_batch_size(self, batch: tf.Tensor) -> tf.Tensor:
        """Returns `batch` once its size is known to fit in the queue.

        Raises at trace time when the batch size is static, otherwise the returned
        tensor depends on a runtime check, so a step cannot run past it.
        """
        message = (
            f"exceeds the logit queue size K={self.size}: one step would overwrite its "
            "own entries. Use a queue at least as large as the (global) batch."
        )
        if batch.shape[0] is not None:
            if batch.shape[0] > self.size:
                raise ValueError(f"Batch size {batch.shape[0]} {message}")
            return batch
        check = tf.debugging.assert_less_equal(
            tf.shape(batch, out_type=tf.int64)[0],
            tf.constant(self.size, tf.int64),
            f"Batch size {message}",
        )
        with tf.control_dependencies([check]):
            return tf.identity(batch)

    def enqueue(self, logits: tf.Tensor, keep=True) -> None:
        """Writes the batch's normalized logits at the pointer, wrapping modulo K.

        `keep` (a bool scalar, identical on every replica) False leaves the queue as
        it was: a skipped training step must not write its possibly non-finite
        logits. Under a multi-replica strategy every replica gathers the whole global
        batch (in replica order, i.e. the global batch's order) and writes the same
        rows, so the queue stays identical across replicas and equal to what one device
        would hold after the same global batch.
        """
        rows = normalize_logits(logits)  # [N, C]
        replica = tf.distribute.get_replica_context()
        distributed = replica is not None and replica.num_replicas_in_sync > 1
        if distributed:
            rows = replica.all_gather(rows, axis=0)
        rows = self.check_batch_size(rows)
        n = tf.shape(rows, out_type=tf.int64)[0]
        slots = (self.pointer + tf.range(n, dtype=tf.int64)) % self.size  # [N]
        classes = tf.range(self.num_classes, dtype=tf.int64)
        # Index [C, N, 2] pairs (class, slot) so one scatter writes the C×N block.
        index = tf.stack(tf.meshgrid(classes, slots, indexing="ij"), axis=-1)
        keep = tf.convert_to_tensor(keep, tf.bool)
        block = tf.where(keep, tf.transpose(rows), tf.gather_nd(self.logits, index))
        n = tf.where(keep, n, tf.zeros_like(n))
        if distributed:
            # Mirrored variables cannot scatter in replica context; the [C, K]
            # copy is small next to a training step.
            self.logits.assign(
                tf.tensor_scatter_nd_update(self.logits.value, index, block)
            )
        else:
            self.logits.value.scatter_nd_update(index, block)
        self.pointer.assign((self.pointer + n) % self.size)
        self.num_filled.assign(tf.minimum(self.num_filled + n, self.size))

    def call(self, inputs=None):
        return self.logits

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(size=self.size, num_classes=self.num_classes, init=self.init)
        return config
