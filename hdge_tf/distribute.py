"""Strategies, which process writes a run's outputs, and a compiled training loop
for strategies where `model.fit` fails.

`model.fit` fails under MultiWorkerMirroredStrategy in Keras 3.15 (an open upstream
bug), so `CustomLoop` runs the model's own `train_step`/`test_step` through
`strategy.run` in a `tf.function`, driving the usual Keras callbacks. The model's
logic (loss, queue writes, metrics) is the same code either way.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def build_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all local GPUs, or the CPU) or
    `multi_worker` (MultiWorkerMirroredStrategy configured by TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multi_worker' needs the TF_CONFIG environment variable "
                "describing the cluster and this worker's task."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def writable_dir(path: str, strategy: tf.distribute.Strategy) -> str:
    """`path` on the chief; a scratch directory on other workers, which must still
    take part in saving (reading synced variables is a collective op)."""
    if is_chief(strategy):
        return path
    return tempfile.mkdtemp(prefix="hdge_worker_")


class CustomLoop:
    """`fit` for a compiled model under any strategy, without `Model.fit`.

    Its step function is a plain `tf.function`: with the model's
    `step_jit_compile`, `train_step` runs its own XLA-compiled part inside each
    replica, as under `Model.fit`. (One XLA function around `strategy.run` cannot
    work: a cluster cannot span the replicas' devices or their collectives.)
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.model, self.strategy = model, strategy

        @tf.function
        def train(batch):
            strategy.run(model.train_step, args=(batch,))

        @tf.function
        def test(batch):
            strategy.run(model.test_step, args=(batch,))

        self._train, self._test = train, test

    def _results(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{m.name}": float(m.result()) for m in self.model.metrics}

    def _reset(self) -> None:
        for metric in self.model.metrics:
            metric.reset_state()

    def evaluate(self, dataset: tf.data.Dataset) -> dict[str, float]:
        self._reset()
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            self._test(batch)
        return self._results()

    def fit(
        self,
        dataset: tf.data.Dataset,
        epochs: int,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_data: tf.data.Dataset | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        verbose: int = 1,
    ) -> keras.callbacks.History:
        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose > 0,
            model=self.model,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch,
        )
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        # With steps_per_epoch, one iterator runs through every epoch (the dataset
        # holds them back to back), as in Model.fit.
        iterator = iter(distributed) if steps_per_epoch else None
        self.model.stop_training = False
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            self._reset()
            callback_list.on_epoch_begin(epoch)
            batches = (
                distributed
                if iterator is None
                else itertools.islice(iterator, steps_per_epoch)
            )
            for step, batch in enumerate(batches):
                callback_list.on_train_batch_begin(step)
                self._train(batch)
                # Tensors, not floats: reading a value would wait for the step and
                # keep the next one from being dispatched early.
                callback_list.on_train_batch_end(
                    step, {m.name: m.result() for m in self.model.metrics}
                )
                if self.model.stop_training:
                    break
            logs = self._results()
            if validation_data is not None:
                logs.update(
                    {f"val_{k}": v for k, v in self.evaluate(validation_data).items()}
                )
            callback_list.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callback_list.on_train_end()
        return self.model.history
