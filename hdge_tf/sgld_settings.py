"""The SGLD chain's settings as one object: `SGLDSettings`.

JEM's SGLD term is described by its chain (steps, step size, noise), the
persistent buffer it starts from and how chains restart; `HDGEClassifier` holds
these as one value, `model.sgld`, next to the paper's other hyperparameters
(queue, temperature, loss weights). The trainer's config keeps flat `loss.*`
keys, and models saved before the settings were one object carry those flat
keys in their Keras config: `FLAT_KEYS` maps both onto the fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import keras

from hdge_tf.chain_starts import START_KINDS
from hdge_tf.flat_keyed import FlatKeyed

# Flat key (trainer config `loss.*`, older model configs) -> SGLDSettings field.
FLAT_KEYS = {
    "sgld_steps": "steps",
    "sgld_step_size": "step_size",
    "sgld_noise_std": "noise_std",
    "replay_buffer_size": "buffer_size",
    "reinit_freq": "reinit_freq",
    "sgld_clip": "clip",
    "sgld_batch_size": "batch_size",
    "sgld_start": "start",
    "sgld_start_uniform_fraction": "start_uniform_fraction",
    "px_sgld_conditional_chains": "px_conditional_chains",
    "sgld_every": "every",
    "sgld_pass_mode": "pass_mode",
}
# How the SGLD terms run the network (`SGLDSettings.pass_mode`).
PASS_MODES = ("auto", "training", "inference", "sample_batch", "data_batch")


@keras.saving.register_keras_serializable(package="hdge_tf")
@dataclasses.dataclass(frozen=True)
class SGLDSettings(FlatKeyed):
    """How JEM's SGLD chains run, restart and are kept (used only when an SGLD
    loss weight is > 0).

    Args:
      steps, step_size, noise_std: each training step's chain,
        x <- x + step_size * ∇x log p(x) + noise_std * N(0, I) (JEM: 20, 1, 0.01).
      buffer_size: chain states kept in the replay buffer (divisible by the
        classes when the buffer is class-split).
      reinit_freq: fraction of chains restarted (from `start`) each step.
      clip: clip every chain step to the data range [-1, 1] (JEM's and HDGE's
        code leave chains unclipped; then samples drift to values no image has).
      batch_size: chains per step (global batch), independent of the
        classification batch as in HDGE's code; 0 = one chain per batch image.
        With it, log p(x|y) chains get uniformly drawn labels.
      start: where restarted chains (and the first buffer) start: "uniform"
        noise (JEM) or "class_gaussian" (JEM++: per-class Gaussians fitted to the
        training images by `HDGEClassifier.fit_chain_starts`, see `chain_starts`).
      start_uniform_fraction: with "class_gaussian", the share of fresh starts
        that are uniform noise all the same.
      px_conditional_chains: the log p(x) term's chains sample p(x|y) for
        uniformly drawn labels from a class-split buffer (HDGE's
        `--class_cond_p_x_sample`); the term itself stays on log p(x), which
        leaves p(y|x) alone where a log p(x|y) term would lower it.
      every: the SGLD terms (chains, samples' passes, energy penalty) run on one
        training step in `every`, weighted `every` times, so their expected
        gradient is unchanged while their cost is divided by `every` (our
        addition; JEM and HDGE run them on every step: 1).
      pass_mode: how the SGLD terms' network passes treat BatchNorm (the same
        for a backbone without it): "training" (JEM's: samples in training
        mode, so their batches move the running statistics); "inference" (data
        and samples scored with the running statistics, one more pass of the
        data batch); "sample_batch" (samples normalized by their own batch's
        statistics, the running statistics left to the data); "data_batch"
        (samples normalized by the data batch's statistics, so data and samples
        are scored by one function); "auto": "sample_batch" for a backbone with
        BatchNormalization layers (JEM's passes without its failure of the
        running statistics), "training" otherwise. None of them trains HDGE +
        JEM with BatchNorm to full quality yet: docs/hdge_jem.md ("BatchNorm
        backbones") has what each gave.
    """

    FLAT_KEYS = FLAT_KEYS

    steps: int = 20
    step_size: float = 1.0
    noise_std: float = 0.01
    buffer_size: int = 10000
    reinit_freq: float = 0.05
    clip: bool = False
    batch_size: int = 0
    start: str = "uniform"
    start_uniform_fraction: float = 0.1
    px_conditional_chains: bool = False
    every: int = 1
    pass_mode: str = "auto"

    def __post_init__(self):
        # Normalized here (ints from floats, Python types from NumPy's), so that
        # equal settings compare equal and serialize to plain JSON.
        for name, value in (
            ("steps", _integer(self, "steps", low=0)),
            ("step_size", _real(self, "step_size")),
            ("noise_std", _real(self, "noise_std")),
            ("buffer_size", _integer(self, "buffer_size", low=1)),
            ("reinit_freq", _real(self, "reinit_freq", high=1.0)),
            ("clip", _flag(self, "clip")),
            ("batch_size", _integer(self, "batch_size", low=0)),
            ("start", _choice(self, "start", START_KINDS)),
            ("start_uniform_fraction", _real(self, "start_uniform_fraction", 1.0)),
            ("px_conditional_chains", _flag(self, "px_conditional_chains")),
            ("every", _integer(self, "every", low=1)),
            ("pass_mode", _choice(self, "pass_mode", PASS_MODES)),
        ):
            object.__setattr__(self, name, value)


def split_flat(kwargs: Mapping) -> tuple[dict, SGLDSettings]:
    """(kwargs without the flat SGLD keys, the settings those keys name): what a
    trainer config's `loss` section or an older model config holds, in the form
    `HDGEClassifier(..., sgld=...)` takes."""
    rest = {k: v for k, v in kwargs.items() if k not in FLAT_KEYS}
    return rest, SGLDSettings.from_flat(kwargs)


def moved_argument_error(names) -> TypeError:
    """The error for flat SGLD keyword arguments, naming their new form."""
    fields = ", ".join(f"{FLAT_KEYS[n]}=..." for n in names)
    return TypeError(
        f"{', '.join(names)} moved: pass sgld=hdge_tf.SGLDSettings({fields}) to "
        "HDGEClassifier (hdge_tf.sgld_settings.split_flat converts flat keys)."
    )


def _bad(settings, name: str, rule: str) -> ValueError:
    value = getattr(settings, name)
    return ValueError(f"SGLDSettings.{name} must be {rule}, got {value!r}.")


def _integer(settings, name: str, low: int) -> int:
    value = getattr(settings, name)
    try:
        integral = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        integral = False
    if not integral or value < low:
        raise _bad(settings, name, f"an integer >= {low}")
    return int(value)


def _real(settings, name: str, high: float = math.inf) -> float:
    value = getattr(settings, name)
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= high or math.isinf(number):  # NaN fails too
        raise _bad(
            settings,
            name,
            "finite and >= 0" if high == math.inf else f"in [0, {high:g}]",
        )
    return number


def _flag(settings, name: str) -> bool:
    value = getattr(settings, name)
    if value not in (True, False):  # bools, NumPy's and 0/1 (JSON, configs)
        raise _bad(settings, name, "True or False")
    return bool(value)


def _choice(settings, name: str, choices: tuple) -> str:
    value = getattr(settings, name)
    if value not in choices:
        raise _bad(settings, name, f"one of {choices}")
    return value
