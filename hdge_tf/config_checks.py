"""Every value of a config checked before anything is written, trained or evaluated.

`check_config(config)` raises ValueError naming the first bad key, its value and
what it expects. It runs before the trainer touches the run directory, so a typo
neither replaces a run's config.json nor fails after hours of training (an unknown
OOD set used to be found only by the final evaluation). The other programs check
the sections they read with the same rules (`check_config(config, sections)`:
hdge-eval its data and eval settings, hdge-export its data), so a value means the
same, and fails with the same message, in every program. Checks that need the
data or the network (image shapes, the loss's own arguments, data.name) run while
the data and model are built, still before the run directory is written.

The rules are data (`_RULES`, `_CHOICES`), one line per key; the checks of keys
that depend on each other are below them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from pathlib import Path

from hdge_tf import distribute, hardware
from hdge_tf.chain_starts import START_KINDS
from hdge_tf.data import ood as ood_data
from hdge_tf.data.pipeline import AUGMENTATIONS
from hdge_tf.evaluation import ood as ood_scores
from hdge_tf.evaluation.robustness import GRADIENTS, NORMS
from hdge_tf.optimization import OPTIMIZERS, WEIGHT_DECAY_MODES
from hdge_tf.sgld_settings import PASS_MODES

SELECTIONS = ("best_val_accuracy", "last")
# The Keras dtype policies a run trains and evaluates under (Keras knows more,
# e.g. float64 or float8 ones, that our steps do not support).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bool() -> tuple[Callable, str]:
    return (lambda v: isinstance(v, bool), "True or False")


def _path(*, optional: str) -> tuple[Callable, str]:
    """A path: a non-blank string, or the `optional` value meaning "none"."""
    none = "unset" if optional is None else repr(optional)
    return (
        lambda v: v == optional or (isinstance(v, str) and bool(v.strip())),
        f"a path (not empty or blank), or {none} for none",
    )


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


def _finite_tuple(low: float) -> tuple[Callable, str]:
    return (
        lambda v: (
            isinstance(v, tuple)
            and all(_number(e) and math.isfinite(e) and e >= low for e in v)
        ),
        f"a tuple of finite numbers >= {low:g}",
    )


# (dotted key, (predicate, what it expects)).
_RULES = (
    ("seed", _int_at_least(0)),
    ("deterministic", _bool()),
    ("train.epochs", _int_at_least(1)),
    ("train.batch_size", _int_at_least(1)),
    ("train.learning_rate", _finite(0, strict=True)),
    ("train.momentum", _finite(0, strict=False, high=1)),
    ("train.weight_decay", _finite(0, strict=False)),
    ("train.adam_epsilon", _finite(0, strict=True)),
    ("train.warmup_steps", _int_at_least(0)),
    ("train.decay_factor", _finite(0, strict=True)),
    ("train.keep_checkpoints", _int_at_least(1)),
    (
        "train.jit_compile",
        (
            lambda v: (
                v in hardware.JIT_COMPILE_VALUES
                or (isinstance(v, str) and v.lower() in ("auto", "true", "false"))
            ),
            f"one of {hardware.JIT_COMPILE_VALUES} (or the strings 'true'/'false')",
        ),
    ),
    ("train.init_from", _path(optional="")),
    ("train.validate", _bool()),
    ("train.retry_with_new_seed", _bool()),
    ("train.initial_loss_scale", _finite(0, strict=True)),
    ("train.divergence_retries", _int_at_least(0)),
    ("train.sample_every_epochs", _int_at_least(0)),
    ("data.data_dir", _path(optional=None)),
    ("data.download", _bool()),
    ("data.cache", _bool()),
    ("data.shuffle_buffer", (_integer, "an integer (<= 0: the whole split)")),
    ("data.autotune", _bool()),
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
    ("loss.sgld_clip", _bool()),
    ("loss.px_sgld_conditional_chains", _bool()),
    ("eval.batch_size", _int_at_least(1)),
    ("eval.max_examples", _int_at_least(0)),
    ("eval.input_noise_std", _finite(0, strict=False)),
    ("eval.ece_bins", _int_at_least(1)),
    ("eval.gate_tpr", _finite(0, strict=False, high=1)),
    ("eval.seed", _int_at_least(0)),
    ("eval.pgd.epsilons.linf", _finite_tuple(0)),
    ("eval.pgd.epsilons.l2", _finite_tuple(0)),
    ("eval.pgd.steps", _int_at_least(0)),
    ("eval.pgd.step_size", _finite(0, strict=True)),
    ("eval.pgd.random_start", _bool()),
    ("eval.pgd.restarts", _int_at_least(1)),
    ("eval.pgd.num_examples", _int_at_least(0)),
    ("eval.pgd.noisy_copies", _int_at_least(1)),
    ("eval.pgd.noise_std", _finite(0, strict=False)),
    ("eval.pgd.sgld_refine_steps", _int_at_least(0)),
    ("eval.pgd.sgld_step_size", _finite(0, strict=False)),
    ("eval.pgd.sgld_noise_std", _finite(0, strict=False)),
)
# (dotted key, the values it may take).
_CHOICES = (
    ("precision", PRECISIONS),
    ("strategy", distribute.STRATEGIES),
    ("data.augment", AUGMENTATIONS),
    ("train.optimizer", OPTIMIZERS),
    ("train.weight_decay_mode", WEIGHT_DECAY_MODES),
    ("train.select", SELECTIONS),
    ("loss.sgld_start", START_KINDS),
    ("loss.sgld_pass_mode", PASS_MODES),
    ("eval.pgd.gradient", GRADIENTS),
)

_ABSENT = object()


def _get(config, key: str):
    """The value at a dotted key, or _ABSENT (a config.json may predate a key)."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _fail(key: str, value, expected: str) -> None:
    raise ValueError(f"{key}={value!r}: expected {expected}.")


def check_config(config, sections: Collection[str] | None = None) -> None:
    """Raises ValueError naming the first key of `config` with a bad value.

    sections: the top-level keys to check (e.g. ("data", "eval") for a program
    that reads only those); None checks every key. Keys a config lacks (a run's
    config.json may predate them) are skipped.
    """

    def read(key: str) -> bool:
        return sections is None or key.split(".", 1)[0] in sections

    if sections is None:
        _check_keys(config)
    for key, (valid, expected) in _RULES:
        value = _get(config, key) if read(key) else _ABSENT
        if value is not _ABSENT and not valid(value):
            _fail(key, value, expected)
    for key, choices in _CHOICES:
        value = _get(config, key) if read(key) else _ABSENT
        if value is not _ABSENT and value not in choices:
            _fail(key, value, f"one of {tuple(choices)}")
    if read("train"):
        decay_epochs = _get(config, "train.decay_epochs")
        if decay_epochs is not _ABSENT and not (
            isinstance(decay_epochs, tuple | list)
            and all(_integer(e) and e >= 1 for e in decay_epochs)
        ):
            _fail(
                "train.decay_epochs", decay_epochs, "a tuple of epochs (integers >= 1)"
            )
        _check_init_from(_get(config, "train.init_from"))
    if read("eval"):
        _check_eval(config)
    if sections is None:
        _check_train_relations(config)


# Keys the trainer reads that no rule above covers (a name checked where it is
# used, a tuple checked below).
_NAMES = (
    "data.name",
    "backbone.name",
    "loss.formulation",
    "loss.queue_init",
    "train.decay_epochs",
    "eval.ood_sets",
    "eval.scores",
    "eval.pgd.norms",
)


def _check_keys(config) -> None:
    """A training config has every key the trainer reads (configs/base.py's):
    a config file not built on it fails here, not as an AttributeError later."""
    keys = [key for key, _ in (*_RULES, *_CHOICES)] + list(_NAMES)
    missing = [key for key in keys if _get(config, key) is _ABSENT]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ValueError(
            f"The config has no {shown} ({len(missing)} of the keys a training "
            "config has): build it on configs/base.py's get_config(), as the "
            "experiment configs in configs/ do."
        )


def _check_eval(config) -> None:
    """The evaluation's names: OOD sets, scores and the PGD norms."""
    ood_sets = _get(config, "eval.ood_sets")
    for name in () if ood_sets is _ABSENT else ood_sets:
        try:
            ood_data.check_ood_set_name(name)
        except ValueError as err:
            raise ValueError(f"eval.ood_sets: {err}") from None
    scores = _get(config, "eval.scores")
    if scores is not _ABSENT:
        try:
            ood_scores.check_scores(scores)
        except ValueError as err:
            raise ValueError(f"eval.scores: {err}") from None
    norms = _get(config, "eval.pgd.norms")
    if norms is not _ABSENT and not (
        isinstance(norms, tuple) and set(norms) <= set(NORMS)
    ):
        _fail("eval.pgd.norms", norms, f"a tuple of norms out of {NORMS}")
    epsilons = _get(config, "eval.pgd.epsilons")
    for norm in () if norms is _ABSENT or epsilons is _ABSENT else norms:
        if norm not in epsilons:
            _fail("eval.pgd.norms", norms, f"norms with eval.pgd.epsilons.{norm}")


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


def _check_init_from(source) -> None:
    """train.init_from is "" or a run directory with model.keras, or a .keras file."""
    if source is _ABSENT or not source:
        return
    path = Path(source)
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.is_file():
        where = f"{path} has no model.keras" if path.is_dir() else f"no file {path}"
        raise ValueError(
            f"train.init_from={source}: {where}; pass a trained run's directory or "
            "its .keras file as --config.train.init_from, or '' for no warm start."
        )
