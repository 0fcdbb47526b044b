"""Every value of a training config checked before anything is written or trained.

`check_config(config)` raises ValueError naming the first bad key, its value and
what it expects. It runs before the trainer touches the run directory, so a typo
neither replaces a run's config.json nor fails after hours of training (an unknown
OOD set used to be found only by the final evaluation). Checks that need the data
or the network (image shapes, the loss's own arguments), and those with a check of
their own elsewhere (data.name, data.augment, precision, train.jit_compile) run
while the data and model are built, still before the run directory is written.

The numeric rules are data (`_RULES`), one line per key; the checks of names
against a list of choices are below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from hdge_tf import distribute
from hdge_tf.chain_starts import START_KINDS
from hdge_tf.data import ood as ood_data
from hdge_tf.evaluation import ood as ood_scores
from hdge_tf.optimization import OPTIMIZERS, WEIGHT_DECAY_MODES
from hdge_tf.sgld_settings import PASS_MODES

SELECTIONS = ("best_val_accuracy", "last")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_at_least(low: int) -> tuple[Callable, str]:
    return (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
        f"an integer >= {low}",
    )


def _finite(low: float, *, strict: bool, high: float = math.inf) -> tuple:
    bound = f"> {low:g}" if strict else f">= {low:g}"
    upper = f" and <= {high:g}" if high < math.inf else ""
    return (
        lambda v: (
            _number(v)
            and math.isfinite(v)
            and (v > low if strict else v >= low)
            and v <= high
        ),
        f"a finite number {bound}{upper}",
    )


# (dotted key, (predicate, what it expects)).
_RULES = (
    ("seed", _int_at_least(0)),
    ("train.epochs", _int_at_least(1)),
    ("train.batch_size", _int_at_least(1)),
    ("train.learning_rate", _finite(0, strict=True)),
    ("train.momentum", _finite(0, strict=False, high=1)),
    ("train.weight_decay", _finite(0, strict=False)),
    ("train.adam_epsilon", _finite(0, strict=True)),
    ("train.warmup_steps", _int_at_least(0)),
    ("train.decay_factor", _finite(0, strict=True)),
    ("train.keep_checkpoints", _int_at_least(1)),
    ("train.initial_loss_scale", _finite(0, strict=True)),
    ("train.divergence_retries", _int_at_least(0)),
    ("train.sample_every_epochs", _int_at_least(0)),
    ("data.limit_train", _int_at_least(0)),
    ("data.limit_test", _int_at_least(0)),
    ("data.validation_size", _int_at_least(0)),
    ("data.labels_per_class", _int_at_least(0)),
    ("loss.queue_size", _int_at_least(1)),
    ("loss.temperature", _finite(0, strict=True)),
    ("loss.ce_weight", _finite(0, strict=False)),
    ("loss.pxy_contrast_weight", _finite(0, strict=False)),
    ("loss.px_contrast_weight", _finite(0, strict=False)),
    ("loss.px_sgld_weight", _finite(0, strict=False)),
    ("loss.pxy_sgld_weight", _finite(0, strict=False)),
    ("loss.label_smoothing", _finite(0, strict=False, high=1)),
    ("loss.input_noise_std", _finite(0, strict=False)),
    ("loss.sgld_steps", _int_at_least(0)),
    ("loss.sgld_step_size", _finite(0, strict=False)),
    ("loss.sgld_noise_std", _finite(0, strict=False)),
    ("loss.replay_buffer_size", _int_at_least(1)),
    ("loss.reinit_freq", _finite(0, strict=False, high=1)),
    ("loss.energy_l2_weight", _finite(0, strict=False)),
    ("loss.energy_scale_rate", _finite(0, strict=False)),
    ("loss.sgld_batch_size", _int_at_least(0)),
    ("loss.sgld_every", _int_at_least(1)),
    ("loss.sgld_start_uniform_fraction", _finite(0, strict=False, high=1)),
    ("loss.divergence_threshold", _finite(0, strict=True)),
    ("eval.batch_size", _int_at_least(1)),
    ("eval.max_examples", _int_at_least(0)),
    ("eval.input_noise_std", _finite(0, strict=False)),
    ("eval.ece_bins", _int_at_least(1)),
    ("eval.gate_tpr", _finite(0, strict=False, high=1)),
)

_ABSENT = object()


def _get(config, key: str):
    """The value at a dotted key, or _ABSENT (a config.json may predate a key)."""
    node = config
    for part in key.split("."):
        if part not in node:
            return _ABSENT
        node = node[part]
    return node


def _fail(key: str, value, expected: str) -> None:
    raise ValueError(f"{key}={value!r}: expected {expected}.")


def _check_choice(config, key: str, choices) -> None:
    value = _get(config, key)
    if value is not _ABSENT and value not in choices:
        _fail(key, value, f"one of {tuple(choices)}")


def check_config(config) -> None:
    """Raises ValueError naming the first key of `config` with a bad value."""
    for key, (valid, expected) in _RULES:
        value = _get(config, key)
        if value is not _ABSENT and not valid(value):
            _fail(key, value, expected)
    decay_epochs = _get(config, "train.decay_epochs")
    if decay_epochs is not _ABSENT and not all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 1 for e in decay_epochs
    ):
        _fail("train.decay_epochs", decay_epochs, "a tuple of epochs (integers >= 1)")
    _check_choice(config, "train.optimizer", OPTIMIZERS)
    _check_choice(config, "train.weight_decay_mode", WEIGHT_DECAY_MODES)
    _check_choice(config, "train.select", SELECTIONS)
    _check_choice(config, "strategy", distribute.STRATEGIES)
    _check_choice(config, "loss.sgld_start", START_KINDS)
    _check_choice(config, "loss.sgld_pass_mode", PASS_MODES)
    _check_train_relations(config)
    for name in config.eval.ood_sets:
        try:
            ood_data.check_ood_set_name(name)
        except ValueError as err:
            raise ValueError(f"eval.ood_sets: {err}") from None
    try:
        ood_scores.check_scores(config.eval.scores)
    except ValueError as err:
        raise ValueError(f"eval.scores: {err}") from None
    _check_init_from(config.train.get("init_from", ""))


def _check_train_relations(config) -> None:
    """Keys whose valid values depend on each other."""
    train_cfg = config.train
    if train_cfg.batch_size > config.loss.queue_size:
        raise ValueError(
            f"train.batch_size={train_cfg.batch_size} exceeds "
            f"loss.queue_size={config.loss.queue_size}; the queue must hold a batch."
        )
    if _get(config, "loss.sgld_start") == "class_gaussian" and (
        config.data.labels_per_class
    ):
        raise ValueError(
            "loss.sgld_start='class_gaussian' fits its Gaussians to labelled "
            "training images, which data.labels_per_class > 0 hides: use "
            "loss.sgld_start='uniform' for semi-supervised runs."
        )
    if train_cfg.select == "best_val_accuracy" and not (
        config.data.validation_size and train_cfg.validate
    ):
        raise ValueError(
            "train.select='best_val_accuracy' needs a validation split: set "
            "data.validation_size > 0 and train.validate=True, or train.select='last'."
        )


def _check_init_from(source: str) -> None:
    """train.init_from is "" or a run directory with model.keras, or a .keras file."""
    if not source:
        return
    path = Path(source)
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.is_file():
        where = f"{path} has no model.keras" if path.is_dir() else f"no file {path}"
        raise ValueError(
            f"train.init_from={source}: {where}; pass a trained run's directory or "
            "its .keras file as --config.train.init_from, or '' for no warm start."
        )
