"""Keras callbacks of the trainer: checkpoints, the divergence guard, sample grids.

    EpochCheckpoint  saves the run (model, queue, replay buffer, optimizer and the
                     `RunState` beside them) after every epoch that did not
                     diverge, and the best validation epoch's model
    DivergenceGuard  stops `fit` once a step was skipped as diverged, so the
                     trainer can restart from the last good checkpoint
    SampleGrid       writes a grid of SGLD samples every few epochs

`hdge_tf.training` assembles them; each also works in a plain `model.fit`.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import tensorflow as tf
from absl import logging

from hdge_tf import plots
from hdge_tf.generation import STARTS, default_start, draw_samples, num_classes
from hdge_tf.run_state import RunState


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` once the model has skipped a step as diverged.

    The model itself refuses to apply such a step (`HDGEClassifier`'s
    `divergence_threshold`); stopping lets the trainer restart from the last good
    checkpoint instead of training on from the state that produced it. The epoch's
    `skipped_steps` is read every `check_every` steps and at the epoch's end, not
    every step: reading a metric waits for the step to finish, which would stop
    TF from dispatching the next step early, and steps after a diverged one are
    skipped too, so a late check loses only time.
    """

    def __init__(self, check_every: int = 20):
        super().__init__()
        self.check_every = check_every
        self.diverged_at: tuple[int, int] | None = None  # (epoch, step), 1-based
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None):
        if (batch + 1) % self.check_every == 0:
            self._check(logs, batch + 1)

    def on_epoch_end(self, epoch: int, logs=None):
        if self.diverged_at is None:
            self._check(logs, "end")

    def _check(self, logs, step) -> None:
        if float((logs or {}).get("skipped_steps", 0.0)) > 0:
            self.diverged_at = (self._epoch + 1, step)
            logging.warning(
                "Epoch %d had a diverged step by step %s (non-finite loss or "
                "gradients, or |loss| above loss.divergence_threshold); it was not "
                "applied. Stopping.",
                self._epoch + 1,
                step,
            )
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, queue, buffer and optimizer after every epoch; never an epoch
    that diverged or ended with a non-finite loss (the last good state stays).

    With `best` (a manager of a model-only checkpoint), an epoch whose
    `val_accuracy` beats the best so far is saved there first, so the run state
    written next always names a best checkpoint that exists.
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        state: RunState,
        best: tf.train.CheckpointManager | None = None,
    ):
        super().__init__()
        self.manager, self.state, self.best = manager, state, best

    def on_epoch_end(self, epoch: int, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if logs.get("skipped_steps") or (loss is not None and not math.isfinite(loss)):
            logging.error(
                "Epoch %d diverged (loss %s, skipped steps %s); not checkpointing it.",
                epoch + 1,
                loss,
                logs.get("skipped_steps"),
            )
            self.model.stop_training = True
            return
        value = logs.get("val_accuracy")
        if self.best is not None and value is not None:
            if value > float(self.state.best_value.numpy()):
                self.best.save(checkpoint_number=epoch + 1)
                self.state.best_value.assign(value)
                self.state.best_epoch.assign(epoch + 1)
        self.state.epoch.assign(epoch + 1)
        path = self.manager.save(checkpoint_number=epoch + 1)
        logging.info("Saved checkpoint %s", path)


class SampleGrid(keras.callbacks.Callback):
    """Writes `output_dir/samples_epoch{NNN}.png` (1-based epochs) every
    `every_epochs` epochs: `num_per_class` samples per class, one row per class when
    conditional (else as many in a square grid), from `draw_samples`.

    `start` None picks "buffer" if the model has a replay buffer, else "fresh". The
    seed is the same every epoch, so the grids follow the same chains (or the same
    noise) through training. The model's weights and buffer are left unchanged.
    """

    def __init__(
        self,
        output_dir: str | Path,
        every_epochs: int = 1,
        num_per_class: int = 8,
        steps: int = 20,
        conditional: bool = True,
        start: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}.")
        if start is not None and start not in STARTS:
            raise ValueError(f"Unknown start {start!r}; expected one of {STARTS}.")
        self.output_dir = Path(output_dir)
        self.every_epochs = int(every_epochs)
        self.num_per_class = int(num_per_class)
        self.steps = int(steps)
        self.conditional = bool(conditional)
        self.start = start
        self.seed = seed

    def on_epoch_end(self, epoch: int, logs=None):
        if (epoch + 1) % self.every_epochs:
            return
        start = self.start or default_start(self.model)
        classes = num_classes(self.model)
        num = self.num_per_class * (1 if self.conditional else classes)
        samples, _ = draw_samples(
            self.model, num, self.conditional, self.steps, start, seed=self.seed
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"samples_epoch{epoch + 1:03d}.png"
        plots.plot_image_grid(
            samples,
            path,
            row_labels=[f"class {c}" for c in range(classes)]
            if self.conditional
            else None,
            title=f"epoch {epoch + 1}: {self.steps} SGLD steps from {start}",
        )
        logging.info("Wrote %s", path)
