"""`train(config, workdir)`: data, model, fit with checkpoints, final metrics.

The workdir's layout (config.json, checkpoints/, model.keras, metrics.json, ...) is
`hdge_tf.run_dir.RunDir`'s; the callbacks (checkpoints, the divergence guard,
sample grids) are in `hdge_tf.callbacks`. This module puts them together.

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
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from hdge_tf import data as data_lib
from hdge_tf import distribute, hardware, interrupts, run_lock
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
from hdge_tf.sgld_settings import split_flat


def build_model(config, num_classes: int, image_shape) -> HDGEClassifier:
    backbone_kwargs = dict(config.backbone)
    backbone = build_backbone(
        backbone_kwargs.pop("name"), num_classes, tuple(image_shape), **backbone_kwargs
    )
    # The config's flat loss.sgld_* keys (and co.) are the model's `sgld` settings.
    loss, sgld = split_flat(config.loss)
    return HDGEClassifier(backbone, sgld=sgld, seed=config.seed, **loss)


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
        return _train(config, RunDir(workdir), list(callbacks))


def _train(config, run: RunDir, extra_callbacks: list) -> tuple[HDGEClassifier, dict]:
    strategy = distribute.build_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    if run.path.exists() and not run.path.is_dir():
        run.create()  # its error: the workdir is a file
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    hardware.warn_if_slow_precision(config.precision)

    train_cfg = config.train
    jit_compile = _jit_compile(config)
    data = data_lib.build_datasets(config.data, train_cfg.batch_size, seed=config.seed)
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
    _warn_if_capped(model)
    if train_cfg.init_from and not run.has_checkpoint():
        # Before the workdir is touched: the source may fail to load or to fit.
        warm_start(model, train_cfg.init_from)
    # Only the chief writes the run directory (other workers checkpoint elsewhere).
    with run_lock.hold(run.path) if chief else contextlib.nullcontext():
        try:
            return _train_locked(
                config, run, strategy, data, model, state, extra_callbacks
            )
        except Exception as err:
            if interrupts.is_disk_full(err):
                raise interrupts.DiskFullError(run.path) from err
            raise


def _open_run(config, run: RunDir, strategy, model, state: RunState):
    """Checkpoint, its managers (the run's, the best epoch's or None) and the
    epochs done, from the run's newest intact checkpoint or a new start; writes
    config.json only once nothing is left to refuse the config."""
    train_cfg = config.train
    chief = distribute.is_chief(strategy)
    check_resume(run, config)
    checkpoint = state.checkpoint(model)
    checkpoint_dir = distribute.writable_dir(str(run.checkpoint_dir), strategy)
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_dir, max_to_keep=train_cfg.keep_checkpoints
    )
    best = None
    if train_cfg.select == "best_val_accuracy":
        best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model),
            str(Path(checkpoint_dir) / run.best_checkpoint_dir.name),
            max_to_keep=1,
        )
    resumed = restore_latest(checkpoint, manager)
    done = int(state.epoch.numpy())
    _check_epochs(config, run, done)
    if chief:
        write_atomic(run.config_file, config.to_json_best_effort(indent=2))
        repair_history(run.history_file, done)
    if resumed is None:
        if model.chain_starts is not None:
            _fit_chain_starts(model, config)
        # A good state to return to should the first epoch diverge.
        manager.save(checkpoint_number=0)
    return checkpoint, manager, best, done


def _train_locked(
    config, run, strategy, data, model, state, extra_callbacks
) -> tuple[HDGEClassifier, dict]:
    train_cfg = config.train
    chief = distribute.is_chief(strategy)
    checkpoint, manager, best, initial_epoch = _open_run(
        config, run, strategy, model, state
    )
    model.seed = _run_seed(config, state)
    validation = _validation_data(data, config)

    # model.fit/evaluate fail under MultiWorkerMirroredStrategy (Keras 3.15).
    loop = None
    if config.strategy == "multi_worker":
        loop = distribute.CustomLoop(model, strategy)
    start = time.time()
    if initial_epoch < train_cfg.epochs:
        callbacks = []
        if chief:  # before the checkpoint: a resume drops rows past it
            callbacks += [
                keras.callbacks.CSVLogger(run.history_file, append=True),
                keras.callbacks.TensorBoard(run.tensorboard_dir),
            ]
            if train_cfg.sample_every_epochs:
                callbacks.append(_sample_grid(model, config, run))
        callbacks += extra_callbacks
        callbacks.append(EpochCheckpoint(manager, state, best))  # every worker saves
        while True:
            guard = DivergenceGuard()
            health = BrokenRunGuard(model.num_classes, model.loss_weights_)
            guards = [guard, health, *callbacks]
            _fit(model, data, config, loop, state, validation, guards, chief)
            if health.broken:
                raise TrainingBroken(
                    f"The model broke in {health.broken}. Stopped without writing "
                    f"{run.model_file.name}; a new workdir starts over."
                )
            if guard.diverged_at is None:
                break
            _restart_after_divergence(model, config, checkpoint, manager, guard, state)
            if loop is not None:  # a fresh trace picks up the new seed
                loop = distribute.CustomLoop(model, strategy)
    else:
        logging.info("Workdir already trained to epoch %d; evaluating.", initial_epoch)
    train_seconds = time.time() - start
    interrupts.set_phase(f"while evaluating epoch {int(state.epoch.numpy())}")

    metrics = evaluate(model, data, config, loop)
    selected_epoch = int(state.epoch.numpy())
    if best is not None and best.latest_checkpoint is not None:
        selected_epoch = int(state.best_epoch.numpy())
        if selected_epoch != int(state.epoch.numpy()):
            last = metrics
            best.checkpoint.restore(best.latest_checkpoint).expect_partial()
            metrics = evaluate(model, data, config, loop)
            metrics["last_epoch"] = last
    metrics.setdefault("last_epoch", dict(metrics))
    metrics.update(
        selection=train_cfg.select,
        selected_epoch=selected_epoch,
        selected_val_accuracy=float(state.best_value.numpy())
        if best is not None and best.latest_checkpoint is not None
        else None,
        epochs=int(state.epoch.numpy()),
        train_seconds_this_call=round(train_seconds, 1),
        resumed_from_epoch=initial_epoch,
        divergence_restarts=int(state.restarts.numpy()),
        labeled_examples=data.num_labeled,
        validation_examples=data.num_validation,
        protocol=_protocol(config),
    )
    if chief:
        write_atomic(run.metrics_file, json.dumps(metrics, indent=2))
        save_model_atomic(model, run.model_file)
        if run.history_file.exists():
            plot_history(run.history_file, run.curves_file)
    logging.info("Test metrics: %s", metrics)
    return model, metrics


def _fit_chain_starts(model: HDGEClassifier, config) -> None:
    """Fits `loss.sgld_start="class_gaussian"`'s Gaussians to the training split
    (without the validation images)."""
    images, labels = data_lib.load_training_arrays(config.data)
    model.fit_chain_starts(images, labels)
    logging.info("Chain starts: class Gaussians fitted to %d images.", len(labels))


def _warn_if_capped(model: HDGEClassifier) -> None:
    """Warns when the energy penalty keeps a right example's p(y|x) below 99%:
    always (its labelled logit capped below the log(99 (C - 1)) that needs, the
    other logits near 0), or once the SGLD samples look like the data."""
    needed = float(np.log(99.0 * (model.num_classes - 1)))
    cap, settled = model.energy_cap, model.settled_confidence
    if cap < needed or settled < 0.99:
        logging.warning(
            "loss.energy_l2_weight caps the data's labelled logit near %.1f "
            "((SGLD weight + CE weight) / (2 * energy_l2_weight); %.1f gives 99%% "
            "confidence), and once samples look like the data it settles where "
            "p(y|x) = %.3f: expect an under-confident model (high ECE). Lower "
            "loss.energy_l2_weight.",
            cap,
            needed,
            settled,
        )
    elif np.isfinite(cap):
        logging.info(
            "Energy L2 penalty: labelled logits capped near %.1f, settling at "
            "p(y|x) = %.3f.",
            cap,
            settled,
        )


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


def _fit(model, data, config, loop, state, validation, callbacks, verbose) -> None:
    """Epochs state.epoch+1 .. config.train.epochs with `callbacks`; each epoch's
    batches depend on (seed + restarts, epoch) only."""
    train_cfg = config.train
    initial_epoch = int(state.epoch.numpy())
    seed = _run_seed(config, state)
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
        "callbacks": callbacks,
        # A progress bar on terminals; one line per epoch in log files, which also
        # spares a per-step wait for the metrics.
        "verbose": (1 if sys.stdout.isatty() else 2) if verbose else 0,
    }
    batches = data.train_epochs(initial_epoch, train_cfg.epochs, seed)
    fit_kwargs["callbacks"] = [interrupts.StopOnSignal(), *callbacks]
    with interrupts.deferred(f"in epoch {initial_epoch + 1}"):
        if loop is not None:
            loop.fit(batches, **fit_kwargs)
        else:
            model.fit(batches, shuffle=False, **fit_kwargs)


def _restart_after_divergence(
    model, config, checkpoint, manager, guard: DivergenceGuard, state: RunState
) -> None:
    """Restores the last good checkpoint for another try with seed + restarts, or
    raises `TrainingDiverged` once `train.divergence_retries` are used up.
    Checkpoints are never written from a diverged state, so the newest one is the
    last good state."""
    last_good = manager.latest_checkpoint
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
    checkpoint.restore(last_good).assert_existing_objects_matched()
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
