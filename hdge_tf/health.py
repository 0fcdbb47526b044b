"""Runs that break while their training loss looks fine, told from what every
epoch already logs.

The explosive failures (a non-finite or huge loss) are caught step by step
(`callbacks.DivergenceGuard`). Two silent ones are not, and both were seen on the
demo:

- **The model predicts well only in training mode.** Training accuracy is high
  while validation accuracy sits near chance, e.g. when SGLD samples moved
  BatchNorm's running statistics (JEM's `--norm batch` failure): the training
  batch is normalized by its own statistics, validation by the corrupted running
  ones.
- **The chains lost the data.** With the energy penalty λ, a term of weight w
  pushes the samples' energy towards +w / (2λ) and the data's towards -w / (2λ)
  once the chains no longer reach where the data is; the SGLD term then looks
  fine (it is at its floor) while the samples are noise.

`diagnose` names either from one epoch's logs; `BrokenRunGuard` stops `fit` once
a sign persists, and the trainer raises `TrainingBroken`.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

# Validation accuracy closer to chance than this share of the way from chance
# to the training accuracy: the two modes of the network disagree. (Half: a
# BatchNorm run that swung between 10% and 46% validation accuracy under 93%
# training accuracy stays flagged; few-label runs at 100% / 70% do not.)
CHANCE_SHARE = 0.5
# Checked only once training accuracy is this far above chance.
MIN_TRAINING_LEAD = 0.3
# Sample energy above data energy by more than this share of w / λ (the gap
# where both settle once the chains lost the data).
ENERGY_GAP_SHARE = 0.5
# Consecutive epochs a sign must last.
PATIENCE = 2
# Monitor names of each SGLD term's data and sample energies
# (jem_terms.SGLD_MONITORS).
_ENERGIES = {
    "px_sgld": ("px_data_energy", "px_sample_energy"),
    "pxy_sgld": ("pxy_data_energy", "pxy_sample_energy"),
}


class TrainingBroken(RuntimeError):
    """A run whose model broke while its loss looked fine (`diagnose`)."""


def diagnose(
    logs: dict, num_classes: int, loss_weights: Mapping[str, float]
) -> str | None:
    """What broke according to one epoch's `logs` (the model's metrics, `val_*`
    included), in words with the option to change; None if nothing did.
    `loss_weights`: the model's `loss_weights` (any mapping of term to weight)."""
    chance = 1.0 / num_classes
    train, val = logs.get("accuracy"), logs.get("val_accuracy")
    if train is not None and val is not None and train - chance >= MIN_TRAINING_LEAD:
        if val - chance < CHANCE_SHARE * (train - chance):
            return (
                f"validation accuracy {val:.4f} against training accuracy "
                f"{train:.4f} (chance {chance:.4f}): the network predicts well only "
                "in training mode, as BatchNorm backbones do under SGLD terms "
                "(docs/hdge_jem.md, 'BatchNorm backbones'); use a backbone "
                "without BatchNorm (e.g. backbone.norm='none' or 'layer'), or "
                "another loss.sgld_pass_mode"
            )
    penalty = loss_weights.get("energy_l2", 0.0)
    for term, (data_name, sample_name) in _ENERGIES.items():
        weight = loss_weights.get(term, 0.0)
        if not (weight and penalty) or sample_name not in logs:
            continue
        gap = logs[sample_name] - logs[data_name]
        if gap > ENERGY_GAP_SHARE * weight / penalty:
            return (
                f"the {term} chains lost the data: sample energy "
                f"{logs[sample_name]:.1f} against data energy {logs[data_name]:.1f} "
                f"(they settle at ±{weight / (2 * penalty):g} = ±w / (2λ) once "
                "samples no longer look like data); give the chains more work "
                "(loss.sgld_steps, loss.sgld_batch_size, a lower loss.sgld_every "
                "or a smaller loss.replay_buffer_size) or lower the SGLD weight"
            )
    return None


class BrokenRunGuard(keras.callbacks.Callback):
    """Stops `fit` once `diagnose` finds the same kind of break for `patience`
    epochs in a row; `broken` then holds "epoch N: what broke"."""

    def __init__(
        self, num_classes: int, loss_weights: Mapping, patience: int = PATIENCE
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.loss_weights = dict(loss_weights)
        self.patience = int(patience)
        self.broken: str | None = None
        self._streak = 0

    def on_epoch_end(self, epoch: int, logs=None):
        finding = diagnose(logs or {}, self.num_classes, self.loss_weights)
        self._streak = self._streak + 1 if finding else 0
        if finding and self._streak >= self.patience:
            self.broken = f"epoch {epoch + 1}: {finding}"
            self.model.stop_training = True
