"""`train(config, workdir)`: data, model, fit with checkpoints, final metrics.

The workdir's layout (config.json, checkpoints/, model.keras, metrics.json, ...) is
`hdge_tf.run_dir.RunDir`'s; the callbacks (checkpoints, the divergence guard,
sample grids) are in `hdge_tf.callbacks`. This module puts them together, around
one run object (`_Run`): prepare it (strategy, data, compiled model), open it
(resume or a new start), train its epochs, finish it (test metrics, model.keras).

SIGINT/SIGTERM stop training at the next batch boundary with `interrupts.Interrupted`
(the CLI's one line and exit status 130/143); a full disk ends it with
`interrupts.DiskFullError` naming the workdir. Either way the checkpoints written
so far are intact.

Calling `train` again on a workdir that holds a checkpoint resumes from it (a config
that differs from the run's config.json is checked first: `resume_check.check_resume`).
Every random draw is a function of (seed, epoch, step): data order and augmentation
per epoch (`hdge_tf.data`), input noise and SGLD chains per step (`HDGEClassifier`),
so a run killed at any moment and resumed replays its interrupted epoch exactly as
an uninterrupted run would (bitwise with `config.deterministic` on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import (
    distribute,
    energy_penalty,
    hardware,
    interrupts,
    loss_weights,
    run_lock,
    sgld_settings,
)
from hdge_tf.atomic_files import save_model_atomic, write_atomic
from hdge_tf.callbacks import DivergenceGuard, EpochCheckpoint, SampleGrid
from hdge_tf.config_checks import check_config
from hdge_tf.evaluation import protocol
from hdge_tf.health import BrokenRunGuard, TrainingBroken
from hdge_tf.history_repair import repair_history
from hdge_tf.model import HDGEClassifier
from hdge_tf.networks import build_backbone
from hdge_tf.optimization import build_optimizer
from hdge_tf.plots import plot_history
from hdge_tf.resume_check import check_resume
from hdge_tf.run_dir import RunDir, load_model
from hdge_tf.run_state import RunState


def build_model(config, num_classes: int, image_shape) -> HDGEClassifier:
    backbone_kwargs = dict(config.backbone)
    backbone = build_backbone(
        backbone_kwargs.pop("name"), num_classes, tuple(image_shape), **backbone_kwargs
    )
    # The config's flat loss.sgld_* keys (and co.) are the model's `sgld` settings,
    # its loss.*_weight keys the model's `loss_weights`.
    loss, sgld = sgld_settings.split_flat(config.loss)
    loss, weights = loss_weights.split_flat(loss)
    return HDGEClassifier(
        backbone, loss_weights=weights, sgld=sgld, seed=config.seed, **loss
    )


def warm_start(model: HDGEClassifier, source: str | Path) -> None:
    """Copies the backbone and logit queue of a trained model (a run directory or a
    .keras file) into `model`, e.g. to add JEM's SGLD term to a trained HDGE
    classifier. The optimizer, schedule and any replay buffer start fresh."""
    path = Path(source)
    if path.is_dir():
        path = RunDir(path).model_file
    try:
        trained = load_model(path)
    except (OSError, ValueError) as err:  # named by the key that asked for it
        raise ValueError(f"train.init_from={source}: {err}") from err
    for part in ("backbone", "queue"):
        ours, theirs = getattr(model, part), getattr(trained, part, None)
        if theirs is None or [w.shape for w in ours.weights] != [
            w.shape for w in theirs.weights
        ]:
            raise ValueError(
                f"train.init_from={source}: its {part} does not match this config's "
                "(a different network, class count or queue size)."
            )
        ours.set_weights(theirs.get_weights())
    logging.info("Warm start: backbone and queue from %s", path)


class TrainingDiverged(RuntimeError):
    """Training kept diverging after every allowed restart."""


def restore_latest(
    checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager
) -> str | None:
    """Restores the newest intact checkpoint, if any; returns its path.

    A newest checkpoint that cannot be read (a process killed while writing it, a
    full disk) falls back to the next newest, with a warning naming both; only when
    none can be read is it an error.
    """
    unreadable = []
    # The state file's newest first; `checkpoints` omits it when the file has no
    # timestamps (one written by hand or by an older TF).
    newest_first = [manager.latest_checkpoint, *reversed(manager.checkpoints)]
    for path in dict.fromkeys(p for p in newest_first if p is not None):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        # The checkpoint reader fails with assorted types (OpError, IndexError,
        # ValueError, AssertionError) depending on what is wrong with the files.
        except Exception as err:
            unreadable.append((path, f"{type(err).__name__}: {str(err)[:300]}"))
            continue
        if unreadable:
            logging.warning(
                "The newest checkpoint %s cannot be read (%s); resuming from %s, "
                "the newest intact one.",
                unreadable[0][0],
                unreadable[0][1],
                path,
            )
        else:
            logging.info("Resumed from %s", path)
        return path
    if unreadable:
        newest, reason = unreadable[0]
        raise RuntimeError(
            f"Cannot resume from checkpoint {newest} (nor from any older one): it "
            f"is corrupt or was written by a different model/config ({reason}). "
            "Use a new --workdir, or delete the checkpoints directory to start over."
        )
    return None


def train(config, workdir: str | Path, callbacks=()) -> dict:
    """Trains (or resumes) experiment `config` in `workdir`; returns test metrics.

    `callbacks` (Keras callbacks) join the trainer's own in every `fit` call.
    Every config value is checked (`config_checks`), and the data and model are
    built, before anything is written to `workdir`; while training, the workdir is
    locked against a second trainer (`run_lock`).
    """
    return train_model(config, workdir, callbacks)[1]


def train_model(
    config, workdir: str | Path, callbacks=()
) -> tuple[HDGEClassifier, dict]:
    """`train`, also returning the kept model."""
    check_config(config)
    # The policy holds while models are built; the caller's is restored after.
    with (
        hardware.precision_policy(config.precision),
        interrupts.signals_stop_training(),
    ):
        interrupts.set_phase("while preparing the run")
        run = _prepare(config, RunDir(workdir), list(callbacks))
        # Only the chief writes the run directory (other workers checkpoint
        # elsewhere).
        with run_lock.hold(run.workdir.path) if run.chief else contextlib.nullcontext():
            try:
                _open(run)
                train_seconds = _train_epochs(run)
                return run.model, _finish(run, train_seconds)
            except Exception as err:
                if interrupts.is_disk_full(err):
                    raise interrupts.DiskFullError(run.workdir.path) from err
                raise


@dataclasses.dataclass
class _Run:
    """One call of `train_model`: what its stages (`_prepare`, `_open`,
    `_train_epochs`, `_finish`) share."""

    config: ml_collections.ConfigDict
    workdir: RunDir
    strategy: tf.distribute.Strategy
    chief: bool  # only the chief writes the run directory
    data: data_lib.DataBundle
    state: RunState
    model: HDGEClassifier
    callbacks: list  # the caller's, beside the trainer's own in every fit
    # Set by `_open`: the run's checkpoint and its managers (the best epoch's
    # with train.select="best_val_accuracy"), the epochs done before this call.
    checkpoint: tf.train.Checkpoint | None = None
    manager: tf.train.CheckpointManager | None = None
    best: tf.train.CheckpointManager | None = None
    initial_epoch: int = 0
    # model.fit/evaluate fail under MultiWorkerMirroredStrategy (Keras 3.15).
    loop: distribute.CustomLoop | None = None

    def has_best(self) -> bool:
        """Whether a best-epoch checkpoint was kept."""
        return self.best is not None and self.best.latest_checkpoint is not None


def _prepare(config, workdir: RunDir, callbacks: list) -> _Run:
    """The strategy, data and compiled model of `config`, before anything is
    written to the run directory."""
    strategy = distribute.build_strategy(config.strategy)
    if workdir.path.exists() and not workdir.path.is_dir():
        workdir.create()  # its error: the workdir is a file
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    hardware.warn_if_slow_precision(config.precision)

    jit_compile = _jit_compile(config)
    data = data_lib.build_datasets(
        config.data, config.train.batch_size, seed=config.seed
    )
    if data.num_labeled < data.num_train and not config.loss.px_sgld_weight:
        logging.warning(
            "data.labels_per_class=%d with loss.px_sgld_weight=0: the %d unlabeled "
            "images are not used by any loss term.",
            config.data.labels_per_class,
            data.num_train - data.num_labeled,
        )
    state = RunState()
    with strategy.scope():
        model = build_model(config, data.num_classes, data.image_shape)
        model.compile(
            optimizer=_optimizer(config, data.steps_per_epoch), jit_compile=jit_compile
        )
    # Its pipeline makes [-1, 1] images: no look at a first batch (input_checks).
    model.input_range_checked = True
    energy_penalty.warn_if_capped(model)
    if config.train.init_from and not workdir.has_checkpoint():
        # Before the workdir is touched: the source may fail to load or to fit.
        warm_start(model, config.train.init_from)
    return _Run(
        config=config,
        workdir=workdir,
        strategy=strategy,
        chief=distribute.is_chief(strategy),
        data=data,
        state=state,
        model=model,
        callbacks=callbacks,
    )


def _open(run: _Run) -> None:
    """Sets the run's checkpoint, its managers and the epochs done, from the
    run's newest intact checkpoint or a new start; writes config.json only once
    nothing is left to refuse the config."""
    config, model = run.config, run.model
    check_resume(run.workdir, config)
    run.checkpoint = run.state.checkpoint(model)
    checkpoint_dir = distribute.writable_dir(
        str(run.workdir.checkpoint_dir), run.strategy
    )
    run.manager = tf.train.CheckpointManager(
        run.checkpoint, checkpoint_dir, max_to_keep=config.train.keep_checkpoints
    )
    if config.train.select == "best_val_accuracy":
        run.best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model),
            str(Path(checkpoint_dir) / run.workdir.best_checkpoint_dir.name),
            max_to_keep=1,
        )
    resumed = restore_latest(run.checkpoint, run.manager)
    run.initial_epoch = int(run.state.epoch.numpy())
    _check_epochs(config, run.workdir, run.initial_epoch)
    if run.chief:
        write_atomic(run.workdir.config_file, config.to_json_best_effort(indent=2))
        repair_history(run.workdir.history_file, run.initial_epoch)
    if resumed is None:
        if model.chain_starts is not None:
            _fit_chain_starts(model, config)
        # A good state to return to should the first epoch diverge.
        run.manager.save(checkpoint_number=0)
    model.seed = _run_seed(config, run.state)
    if config.strategy == "multi_worker":
        run.loop = distribute.CustomLoop(model, run.strategy)


def _train_epochs(run: _Run) -> float:
    """Trains the epochs left, restarting from the last good checkpoint after a
    divergence; returns the seconds it took."""
    config, model = run.config, run.model
    validation = _validation_data(run.data, config)
    start = time.time()
    if run.initial_epoch >= config.train.epochs:
        logging.info(
            "Workdir already trained to epoch %d; evaluating.", run.initial_epoch
        )
        return time.time() - start
    callbacks = []
    if run.chief:  # before the checkpoint: a resume drops rows past it
        callbacks += [
            keras.callbacks.CSVLogger(run.workdir.history_file, append=True),
            keras.callbacks.TensorBoard(run.workdir.tensorboard_dir),
        ]
        if config.train.sample_every_epochs:
            callbacks.append(_sample_grid(model, config, run.workdir))
    callbacks += run.callbacks
    # Every worker saves.
    callbacks.append(EpochCheckpoint(run.manager, run.state, run.best))
    while True:
        guard = DivergenceGuard()
        health = BrokenRunGuard(model.num_classes, model.loss_weights)
        _fit(run, validation, [guard, health, *callbacks])
        if health.broken:
            raise TrainingBroken(
                f"The model broke in {health.broken}. Stopped without writing "
                f"{run.workdir.model_file.name}; a new workdir starts over."
            )
        if guard.diverged_at is None:
            return time.time() - start
        _restart_after_divergence(run, guard)
        if run.loop is not None:  # a fresh trace picks up the new seed
            run.loop = distribute.CustomLoop(model, run.strategy)


def _finish(run: _Run, train_seconds: float) -> dict:
    """Test metrics of the kept epoch (the best validation epoch's with
    train.select="best_val_accuracy", the last one's beside them); the chief
    writes them, the model and the curves."""
    config, model, state, data = run.config, run.model, run.state, run.data
    interrupts.set_phase(f"while evaluating epoch {int(state.epoch.numpy())}")
    metrics = evaluate(model, data, config, run.loop)
    selected_epoch = int(state.epoch.numpy())
    if run.has_best():
        selected_epoch = int(state.best_epoch.numpy())
        if selected_epoch != int(state.epoch.numpy()):
            last = metrics
            run.best.checkpoint.restore(run.best.latest_checkpoint).expect_partial()
            metrics = evaluate(model, data, config, run.loop)
            metrics["last_epoch"] = last
    metrics.setdefault("last_epoch", dict(metrics))
    metrics.update(
        selection=config.train.select,
        selected_epoch=selected_epoch,
        selected_val_accuracy=float(state.best_value.numpy())
        if run.has_best()
        else None,
        epochs=int(state.epoch.numpy()),
        train_seconds_this_call=round(train_seconds, 1),
        resumed_from_epoch=run.initial_epoch,
        divergence_restarts=int(state.restarts.numpy()),
        labeled_examples=data.num_labeled,
        validation_examples=data.num_validation,
        protocol=_protocol(config),
    )
    if run.chief:
        write_atomic(run.workdir.metrics_file, json.dumps(metrics, indent=2))
        save_model_atomic(model, run.workdir.model_file)
        if run.workdir.history_file.exists():
            plot_history(run.workdir.history_file, run.workdir.curves_file)
    logging.info("Test metrics: %s", metrics)
    return metrics


def _fit_chain_starts(model: HDGEClassifier, config) -> None:
    """Fits `loss.sgld_start="class_gaussian"`'s Gaussians to the training split
    (without the validation images)."""
    images, labels = data_lib.load_training_arrays(config.data)
    model.fit_chain_starts(images, labels)
    logging.info("Chain starts: class Gaussians fitted to %d images.", len(labels))


def _check_epochs(config, run: RunDir, done: int) -> None:
    """A run is continued or evaluated, never wound back: fewer epochs than its
    checkpoint has would replace its model by an older one."""
    if config.train.epochs < done:
        raise ValueError(
            f"train.epochs={config.train.epochs}, but the run in {run.path} has "
            f"already trained {done} epochs; pass --config.train.epochs={done} to "
            "evaluate it again (or more to continue it), or use a new --workdir."
        )


def _jit_compile(config) -> bool:
    """`train.jit_compile` resolved (`hardware.resolve_jit_compile`): whether the
    training steps run XLA-compiled, also under MirroredStrategy and in the
    multi-worker loop (see `HDGEClassifier.compile`). A config.json from before
    the key means "auto"."""
    value = config.train.get("jit_compile", "auto")
    jit = hardware.resolve_jit_compile(
        value, deterministic=config.deterministic, name="train.jit_compile"
    )
    logging.info("train.jit_compile=%s: XLA-compiled training steps %s.", value, jit)
    return jit


def _optimizer(config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer; under mixed_float16 wrapped for loss scaling
    with `train.initial_loss_scale` (compile would wrap it with Keras's default)."""
    optimizer = build_optimizer(config.train, steps_per_epoch)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=float(config.train.initial_loss_scale)
        )
    return optimizer


def _protocol(config) -> str:
    cfg = config.eval
    return (
        f"inputs + {cfg.input_noise_std:g} * N(0, I) noise (eval.seed {cfg.seed}); "
        f"ECE with {cfg.ece_bins} bins; as hdge-eval"
    )


def _validation_data(data: data_lib.DataBundle, config):
    """The validation split as the protocol scores it (with its input noise), or
    None without a validation split or per-epoch validation."""
    if data.validation is None or not config.train.validate:
        return None
    # The held-out images the data bundle already split off, not a second read of
    # the training split; the noise is the protocol's, drawn over the whole array.
    batches = list(data.validation.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    noisy = protocol.protocol_inputs(images, config.eval, protocol.VALIDATION_STREAM)
    return tf.data.Dataset.from_tensor_slices((noisy, labels)).batch(
        config.eval.batch_size
    )


def _sample_grid(model: HDGEClassifier, config, run: RunDir) -> SampleGrid:
    """Grids of what the model's own chains look like: the replay buffer's chains
    continued (one row per class when it is class-split), or conditional chains
    from noise for models trained without SGLD."""
    buffer = model.replay_buffer
    return SampleGrid(
        run.samples_dir,
        every_epochs=config.train.sample_every_epochs,
        steps=model.sgld.steps,
        conditional=buffer is None or buffer.num_classes is not None,
        seed=config.seed,
    )


def _run_seed(config, state: RunState) -> int:
    """The seed of every random draw: config.seed, plus the restarts so far when
    train.retry_with_new_seed (it is checkpointed, so a resume keeps it)."""
    if not config.train.retry_with_new_seed:
        return int(config.seed)
    return int(config.seed) + int(state.restarts.numpy())


def _fit(run: _Run, validation, callbacks: list) -> None:
    """Epochs state.epoch+1 .. config.train.epochs with `callbacks`; each epoch's
    batches depend on (seed + restarts, epoch) only."""
    train_cfg, data = run.config.train, run.data
    initial_epoch = int(run.state.epoch.numpy())
    seed = _run_seed(run.config, run.state)
    logging.info(
        "Training %s epochs %d-%d, %d steps each.",
        data.name,
        initial_epoch + 1,
        train_cfg.epochs,
        data.steps_per_epoch,
    )
    fit_kwargs = {
        "epochs": train_cfg.epochs,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": data.steps_per_epoch,
        "validation_data": validation,
        "callbacks": [interrupts.StopOnSignal(), *callbacks],
        # A progress bar on terminals; one line per epoch in log files, which also
        # spares a per-step wait for the metrics. Only the chief shows it.
        "verbose": (1 if sys.stdout.isatty() else 2) if run.chief else 0,
    }
    batches = data.train_epochs(initial_epoch, train_cfg.epochs, seed)
    with interrupts.deferred(f"in epoch {initial_epoch + 1}"):
        if run.loop is not None:
            run.loop.fit(batches, **fit_kwargs)
        else:
            run.model.fit(batches, shuffle=False, **fit_kwargs)


def _restart_after_divergence(run: _Run, guard: DivergenceGuard) -> None:
    """Restores the last good checkpoint for another try with seed + restarts, or
    raises `TrainingDiverged` once `train.divergence_retries` are used up.
    Checkpoints are never written from a diverged state, so the newest one is the
    last good state."""
    config, model, state = run.config, run.model, run.state
    last_good = run.manager.latest_checkpoint
    epoch, step = guard.diverged_at
    retries = int(state.restarts.numpy())
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
    run.checkpoint.restore(last_good).assert_existing_objects_matched()
    state.restarts.assign(retries + 1)
    seed = _run_seed(config, state)
    logging.warning(
        "Restart %d/%d from %s with seed %d.",
        retries + 1,
        config.train.divergence_retries,
        last_good,
        seed,
    )
    model.seed = seed
    # The step's random draws fold in the seed when traced: retrace.
    model.train_function = None


def evaluate(
    model: HDGEClassifier,
    data: data_lib.DataBundle,
    config,
    loop: distribute.CustomLoop | None = None,
) -> dict:
    """Test metrics under the evaluation protocol of `hdge-eval` (its inputs and
    input noise, `protocol.headline_metrics`): accuracy, NLL of the true label,
    Brier score, ECE, log p(x) AUROC per `config.eval.ood_sets`, and the loss
    terms. `loop` evaluates where `Model.evaluate` cannot (multi-worker).
    """
    x_test, y_test = protocol.protocol_test_arrays(config)
    noisy = protocol.protocol_inputs(x_test, config.eval, 0)
    batches = tf.data.Dataset.from_tensor_slices((noisy, y_test)).batch(
        config.train.batch_size
    )
    if loop is not None:
        results = loop.evaluate(batches)
    else:
        results = model.evaluate(batches, verbose=0, return_dict=True)
    metrics = {f"test_{name}": float(value) for name, value in results.items()}
    for name, value in protocol.headline_metrics(model, config, x_test, y_test).items():
        metrics[name if name.startswith("ood_") else f"test_{name}"] = value
    return {k: float(np.round(v, 6)) for k, v in metrics.items()}
