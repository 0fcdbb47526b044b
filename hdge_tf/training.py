"""`train(config, workdir)`: data, model, fit with checkpoints, final metrics.

A workdir holds everything a run produces:

    config.json          the resolved config of the latest call
    checkpoints/         tf.train checkpoints (model incl. queue, optimizer, epoch)
    tensorboard/         TensorBoard logs
    history.csv          per-epoch metrics, appended across resumes
    curves.png           those metrics plotted
    metrics.json         final test metrics
    model.keras          the trained model (HDGEClassifier, queue included)
    samples/             SGLD sample grids every train.sample_every_epochs epochs

Calling `train` again on a workdir that holds a checkpoint resumes from it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import distribute, evaluation, hardware
from hdge_tf.data import ood as ood_data
from hdge_tf.generation import SampleGrid
from hdge_tf.model import HDGEClassifier
from hdge_tf.networks import build_backbone
from hdge_tf.optimization import build_optimizer
from hdge_tf.plots import plot_history


def build_model(config, num_classes: int, image_shape) -> HDGEClassifier:
    backbone_kwargs = dict(config.backbone)
    backbone = build_backbone(
        backbone_kwargs.pop("name"), num_classes, tuple(image_shape), **backbone_kwargs
    )
    return HDGEClassifier(backbone, **config.loss)


class TrainingDiverged(RuntimeError):
    """Training kept diverging after every allowed restart."""


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
    that diverged or ended with a non-finite loss (the last good state stays)."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self.manager, self.epoch = manager, epoch

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
        self.epoch.assign(epoch + 1)
        path = self.manager.save(checkpoint_number=epoch + 1)
        logging.info("Saved checkpoint %s", path)


def restore_latest(
    checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager
):
    """Restores the newest checkpoint, if any, with a clear error when unusable."""
    path = manager.latest_checkpoint
    if path is None:
        return
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    # The checkpoint reader fails with assorted types (OpError, IndexError,
    # ValueError, AssertionError) depending on what is wrong with the files.
    except Exception as err:
        raise RuntimeError(
            f"Cannot resume from checkpoint {path}: it is corrupt or was written by a "
            f"different model/config ({type(err).__name__}: {str(err)[:300]}). "
            "Use a new --workdir, or delete the checkpoints directory to start over."
        ) from err
    logging.info("Resumed from %s", path)


def train(config, workdir: str | Path) -> dict:
    """Trains (or resumes) experiment `config` in `workdir`; returns test metrics."""
    return train_model(config, workdir)[1]


def train_model(
    config, workdir: str | Path, extra_callbacks=()
) -> tuple[HDGEClassifier, dict]:
    """`train`, also returning the trained model; `extra_callbacks` join fit's."""
    strategy = distribute.build_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    workdir = Path(workdir)
    if chief:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.precision)
    hardware.warn_if_slow_precision(config.precision)

    train_cfg = config.train
    if train_cfg.batch_size > config.loss.queue_size:
        raise ValueError(
            f"train.batch_size={train_cfg.batch_size} exceeds "
            f"loss.queue_size={config.loss.queue_size}; the queue must hold a batch."
        )
    data = data_lib.build_datasets(config.data, train_cfg.batch_size, seed=config.seed)
    if data.num_labeled < data.num_train and not config.loss.px_sgld_weight:
        logging.warning(
            "data.labels_per_class=%d with loss.px_sgld_weight=0: the %d unlabeled "
            "images are not used by any loss term.",
            config.data.labels_per_class,
            data.num_train - data.num_labeled,
        )
    steps_per_epoch = math.ceil(data.num_train / train_cfg.batch_size)
    with strategy.scope():
        model = build_model(config, data.num_classes, data.image_shape)
        model.compile(optimizer=build_optimizer(train_cfg, steps_per_epoch))
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=epoch
    )
    manager = tf.train.CheckpointManager(
        checkpoint,
        distribute.writable_dir(str(workdir / "checkpoints"), strategy),
        max_to_keep=train_cfg.keep_checkpoints,
    )
    restore_latest(checkpoint, manager)
    if manager.latest_checkpoint is None:
        # A good state to return to should the first epoch diverge.
        manager.save(checkpoint_number=0)
    initial_epoch = int(epoch.numpy())

    # model.fit/evaluate fail under MultiWorkerMirroredStrategy (Keras 3.15).
    loop = None
    if config.strategy == "multi_worker":
        loop = distribute.CustomLoop(model, strategy)
    start = time.time()
    retries = 0
    if initial_epoch < train_cfg.epochs:
        callbacks = [EpochCheckpoint(manager, epoch)]  # every worker saves
        if chief:
            callbacks += [
                keras.callbacks.CSVLogger(workdir / "history.csv", append=True),
                keras.callbacks.TensorBoard(workdir / "tensorboard"),
            ]
            if train_cfg.sample_every_epochs:
                callbacks.append(_sample_grid(model, config, workdir))
        callbacks += list(extra_callbacks)
        while True:
            guard = DivergenceGuard()
            start_epoch = int(epoch.numpy())
            _fit(model, data, config, loop, start_epoch, [guard, *callbacks], chief)
            if guard.diverged_at is None:
                break
            retries = _restart_after_divergence(
                model, config, checkpoint, manager, guard, retries
            )
            if loop is not None:  # a fresh trace picks up the new seed
                loop = distribute.CustomLoop(model, strategy)
    else:
        logging.info("Workdir already trained to epoch %d; evaluating.", initial_epoch)
    train_seconds = time.time() - start

    metrics = evaluate(model, data, config, loop)
    metrics.update(
        epochs=int(epoch.numpy()),
        train_seconds_this_call=round(train_seconds, 1),
        resumed_from_epoch=initial_epoch,
        divergence_restarts=retries,
        labeled_examples=data.num_labeled,
    )
    if chief:
        (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        model.save(workdir / "model.keras")
        if (workdir / "history.csv").exists():
            plot_history(workdir / "history.csv", workdir / "curves.png")
    logging.info("Test metrics: %s", metrics)
    return model, metrics


def _sample_grid(model: HDGEClassifier, config, workdir: Path) -> SampleGrid:
    """Grids of what the model's own chains look like: the replay buffer's chains
    continued (one row per class when it is class-split), or conditional chains
    from noise for models trained without SGLD."""
    buffer = model.replay_buffer
    return SampleGrid(
        workdir / "samples",
        every_epochs=config.train.sample_every_epochs,
        steps=model.sgld_steps,
        conditional=buffer is None or buffer.num_classes is not None,
        seed=config.seed,
    )


def _fit(model, data, config, loop, initial_epoch, callbacks, verbose) -> None:
    """Epochs `initial_epoch`+1 .. config.train.epochs with `callbacks`."""
    train_cfg = config.train
    steps_per_epoch = math.ceil(data.num_train / train_cfg.batch_size)
    logging.info(
        "Training %s epochs %d-%d, %d steps each.",
        data.name,
        initial_epoch + 1,
        train_cfg.epochs,
        steps_per_epoch,
    )
    fit_kwargs = {
        "epochs": train_cfg.epochs,
        "initial_epoch": initial_epoch,
        "validation_data": data.test if train_cfg.validate else None,
        "callbacks": callbacks,
        # A progress bar on terminals; one line per epoch in log files, which also
        # spares a per-step wait for the metrics.
        "verbose": (1 if sys.stdout.isatty() else 2) if verbose else 0,
    }
    if loop is not None:
        loop.fit(data.train, steps_per_epoch=steps_per_epoch, **fit_kwargs)
    else:
        model.fit(data.train, shuffle=False, **fit_kwargs)


def _restart_after_divergence(
    model, config, checkpoint, manager, guard: DivergenceGuard, retries: int
) -> int:
    """Restores the last good checkpoint for another try (returns the new count of
    restarts), or raises `TrainingDiverged` once `train.divergence_retries` are
    used up. Checkpoints are never written from a diverged state, so the newest
    one is the last good state."""
    last_good = manager.latest_checkpoint
    epoch, step = guard.diverged_at
    if retries >= config.train.divergence_retries:
        raise TrainingDiverged(
            f"Training diverged in epoch {epoch} (seen at step {step}): non-finite "
            f"loss or gradients, or |loss| > loss.divergence_threshold="
            f"{model.divergence_threshold:g}; it had been restarted {retries} "
            f"time(s) (train.divergence_retries={config.train.divergence_retries}). "
            f"The last good state is {last_good}; re-running the same command "
            "resumes from it. Consider a lower train.learning_rate, a positive "
            "loss.energy_l2_weight, or fewer/smaller SGLD steps."
        )
    retries += 1
    checkpoint.restore(last_good).assert_existing_objects_matched()
    seed = config.seed + retries if config.train.retry_with_new_seed else config.seed
    logging.warning(
        "Restart %d/%d from %s with seed %d.",
        retries,
        config.train.divergence_retries,
        last_good,
        seed,
    )
    keras.utils.set_random_seed(seed)
    # Random ops get their seeds when traced: retrace so the new seed takes effect.
    model.train_function = None
    return retries


def evaluate(
    model: HDGEClassifier,
    data: data_lib.DataBundle,
    config,
    loop: distribute.CustomLoop | None = None,
) -> dict:
    """Test loss terms and accuracy; log p(x) OOD AUROC per `config.eval.ood_sets`.

    The OOD sets and the score are those of the full report (`hdge-eval`), without
    its test-time input noise, so these AUROCs are the noise-free ones. `loop`
    evaluates where `Model.evaluate` cannot (multi-worker).
    """
    if loop is not None:
        results = loop.evaluate(data.test)
    else:
        results = model.evaluate(data.test, verbose=0, return_dict=True)
    metrics = {f"test_{name}": float(value) for name, value in results.items()}
    metrics["test_nll"] = metrics["test_ce"]
    if config.eval.ood_sets:
        x_test, _ = data_lib.load_arrays(
            config.data.name,
            "test",
            config.data.data_dir,
            config.data.download,
            limit=config.data.limit_test,
        )
        in_scores = evaluation.log_px(evaluation.predict_logits(model, x_test))
        for name in config.eval.ood_sets:
            images = ood_data.load_ood_set(
                name,
                x_test,
                model.image_shape,
                config.data.data_dir,
                config.data.download,
                limit=len(x_test),
                seed=config.eval.seed,
            )
            out_scores = evaluation.log_px(evaluation.predict_logits(model, images))
            metrics[f"ood_auroc_log_px_{name}"] = evaluation.auroc(
                in_scores, out_scores
            )
    return {k: float(np.round(v, 6)) for k, v in metrics.items()}
