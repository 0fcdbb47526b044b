"""What `hdge-train` prints: the run's start, one line per epoch, the final metrics.

    EpochLog     a Keras callback printing one line per epoch (loss terms,
                 accuracy, validation, time, ETA) in place of Keras's progress bar
    start_line   data, network, device and run directory, before training
    final_lines  the kept model's test metrics and where they were written

A progress bar redraws per step and, in a log file, leaves a line per epoch that
lists every monitor; a user reads the losses, the accuracies and how long is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from hdge_tf.model import LOSS_TERMS
from hdge_tf.run_dir import RunDir

# Counters shown only when not zero: a skipped step is news, zero is not.
COUNTERS = {
    "skipped_steps": "skipped steps",
    "loss_scale_overflows": "loss-scale overflows",
}


def duration(seconds: float) -> str:
    """Seconds as "42s", "3m05s" or "1h02m"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _terms(logs: dict, prefix: str, terms: Sequence[str]) -> str | None:
    """The `prefix`ed loss, its terms and accuracy: "loss 1.2 (ce 0.5, ...),
    accuracy 0.9"; None without that loss."""
    if f"{prefix}loss" not in logs:
        return None
    text = f"loss {logs[prefix + 'loss']:.4f}"
    parts = [f"{t} {logs[prefix + t]:.4f}" for t in terms if prefix + t in logs]
    if parts:
        text += f" ({', '.join(parts)})"
    if f"{prefix}accuracy" in logs:
        text += f", accuracy {logs[prefix + 'accuracy']:.4f}"
    return text


def epoch_line(
    epoch: int,
    epochs: int,
    logs: dict,
    seconds: float,
    eta_seconds: float | None,
    terms: Sequence[str] = LOSS_TERMS,
) -> str:
    """One epoch (1-based `epoch` of `epochs`) as one line."""
    width = len(str(epochs))
    parts = [_terms(logs, "", terms), _terms(logs, "val_", terms)]
    if parts[1] is not None:
        parts[1] = f"validation {parts[1]}"
    for name, label in COUNTERS.items():
        if float(logs.get(name) or 0) > 0:
            parts.append(f"{label} {int(logs[name])}")
    timing = duration(seconds)
    if eta_seconds is not None and epoch < epochs:
        timing += f", ETA {duration(eta_seconds)}"
    parts.append(timing)
    return f"epoch {epoch:>{width}}/{epochs}: " + "; ".join(
        p for p in parts if p is not None
    )


class EpochLog(keras.callbacks.ProgbarLogger):
    """Prints one line per epoch instead of Keras's progress bar.

    A `ProgbarLogger`, so that `fit` uses it in place of the bar it would add;
    nothing is printed per step or for validation. The ETA is the remaining
    epochs times the mean epoch time of this `fit` call, leaving out its first
    epoch once there are others (the first also traces the step functions).
    """

    def __init__(
        self,
        print_fn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        terms: Sequence[str] = LOSS_TERMS,
    ):
        keras.callbacks.Callback.__init__(self)  # none of the progress bar's state
        self.print_fn = print_fn or (lambda line: print(line, flush=True))
        self.clock, self.terms = clock, tuple(terms)
        self._seconds: list[float] = []
        self._began = 0.0

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        self._seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._began = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        self._seconds.append(self.clock() - self._began)
        epochs = int(self.params.get("epochs") or epoch + 1)
        timed = self._seconds[1:] or self._seconds
        eta = (epochs - epoch - 1) * sum(timed) / len(timed)
        logs = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        self.print_fn(
            epoch_line(epoch + 1, epochs, logs, self._seconds[-1], eta, self.terms)
        )

    # The progress bar's other hooks are Callback's no-ops again: nothing per step
    # or for validation, and Keras may keep dispatching steps asynchronously.
    _base = keras.callbacks.Callback
    on_test_begin = _base.on_test_begin
    on_predict_begin = _base.on_predict_begin
    on_train_batch_end = _base.on_train_batch_end
    on_test_batch_end = _base.on_test_batch_end
    on_predict_batch_end = _base.on_predict_batch_end
    on_test_end = _base.on_test_end
    on_predict_end = _base.on_predict_end
    del _base


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _device() -> str:
    # Physical, not logical, devices: listing these leaves TensorFlow's runtime
    # uninitialized, as a multi-worker strategy built later needs.
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"{len(gpus)} GPU" + ("s" if len(gpus) > 1 else "")
    return f"CPU ({os.cpu_count()} cores)"


def start_line(config, run_path: str | Path, resumed_epoch: int = 0) -> str:
    """The run at a glance: data, network, schedule, device, run directory."""
    data, train = config.data, config.train
    held_out = data.get("validation_size") or 0
    text = (
        f"Training {config.backbone.name} on {data.name}"
        + (f" ({held_out} images held out for validation)" if held_out else "")
        + f", {train.epochs} epochs of batches of {train.batch_size}, on {_device()}"
    )
    if resumed_epoch:
        text += f", resuming after epoch {resumed_epoch}"
    return f"{text}; run directory {run_path}"


def final_lines(metrics: dict, run_path: str | Path) -> list[str]:
    """The kept model's test metrics (and which epoch it is), then the files."""
    selected, epochs = metrics.get("selected_epoch"), metrics.get("epochs")
    which = f"epoch {selected} of {epochs}"
    if metrics.get("selected_val_accuracy") is not None:
        which += f", best validation accuracy {metrics['selected_val_accuracy']:.4f}"
    named = {"accuracy": "accuracy", "nll": "NLL", "brier": "Brier", "ece": "ECE"}
    values = [
        f"{label} {metrics[f'test_{key}']:.4f}"
        for key, label in named.items()
        if f"test_{key}" in metrics
    ]
    lines = [f"Test ({which}): " + ", ".join(values)]
    prefix = "ood_auroc_log_px_"
    aurocs = [
        f"{k[len(prefix) :]} {v:.3f}"
        for k, v in metrics.items()
        if k.startswith(prefix)
    ]
    if aurocs:
        lines.append("log p(x) OOD AUROC: " + ", ".join(aurocs))
    run = RunDir(run_path)
    files = [run.metrics_file, run.model_file, run.curves_file]
    lines.append("Wrote " + ", ".join(str(f) for f in files if f.exists()))
    return lines
