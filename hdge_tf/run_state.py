"""What a run checkpoints beside its model and optimizer, so a resumed run goes on
where it stopped: epochs done, divergence restarts, the best validation epoch.

`hdge_tf.training` restores it when it resumes; `callbacks.EpochCheckpoint`
advances it and saves it after every epoch.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class RunState:
    """What a run checkpoints beside the model and optimizer: the epochs done,
    divergence restarts so far, and the best validation epoch so far."""

    def __init__(self):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.restarts = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_value = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def checkpoint(self, model: keras.Model) -> tf.train.Checkpoint:
        # Keras seed generators (dropout) are not tracked by tf.train.Checkpoint
        # through the model; without them a resumed run would drop other units.
        seed_states = [
            v.value
            for v in model.non_trainable_variables
            if v.path.endswith("seed_generator_state")
        ]
        return tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            epoch=self.epoch,
            restarts=self.restarts,
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            seed_states=seed_states,
        )
