"""Ending a training run on SIGINT/SIGTERM, and on a full disk, in one line.

Python's default SIGINT raises KeyboardInterrupt wherever the main thread happens
to be, which inside TensorFlow and Keras can be a place that swallows it (seen: a
run that went on to the end and exited 0) or one that prints a long traceback;
SIGTERM ends the process without a word. `signals_stop_training()` makes both
raise `Interrupted`, which `hdge_tf.bin.cli` reports as

    hdge-train: interrupted in epoch N; run the same command to resume

with exit status 128 + the signal number (130, 143), the shell's convention. While
`fit` runs (`deferred`) the signal is only recorded, and `StopOnSignal` (a Keras
callback) raises at the next batch or epoch boundary: never between an epoch's end
and its checkpoint, so the run resumes from its last complete epoch. `Interrupted` is a
BaseException, like KeyboardInterrupt, so `except Exception` blocks (a checkpoint
reader's, a retry's) let it through.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import keras

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Training was stopped by a signal; its checkpoints are intact."""

    def __init__(self, signum: int, where: str):
        self.signum = int(signum)
        super().__init__(f"interrupted {where}; run the same command to resume")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class DiskFullError(OSError):
    """A write failed for lack of space; says where, and that earlier files stay."""

    def __init__(self, directory: str | Path):
        super().__init__(
            f"No space left on device writing to {directory}: free space there (or "
            "move the run to a larger disk) and run the same command to resume; the "
            "checkpoints written before are intact."
        )
        self.errno = errno.ENOSPC


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` is ENOSPC: an OSError, or TensorFlow's error of an op that
    writes files (SaveV2, a summary writer), which only says so in its text."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(err) and not isinstance(err, OSError)


class _State:
    """The signal received (None before one), and where training is."""

    def __init__(self):
        self.signum: int | None = None
        self.in_fit = False
        self.where = "before training"


_state = _State()


def _handler(signum, frame):
    if _state.signum is None:
        _state.signum = signum
    if not _state.in_fit:
        raise Interrupted(signum, _state.where)
    # In fit: StopOnSignal raises at the next batch boundary.


@contextlib.contextmanager
def signals_stop_training() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the block (main thread only;
    elsewhere signals cannot be handled and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state.__init__()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def set_phase(where: str) -> None:
    """What "interrupted ..." says: "in epoch 3", "while evaluating"."""
    _state.where = where


def _raise_if_signalled() -> None:
    if _state.signum is not None:
        raise Interrupted(_state.signum, _state.where)


@contextlib.contextmanager
def deferred(where: str) -> Iterator[None]:
    """For `fit`: a signal in the block is recorded, and raised by `StopOnSignal`
    at the next boundary, or at the block's end."""
    set_phase(where)
    _raise_if_signalled()
    _state.in_fit = True
    try:
        yield
    finally:
        _state.in_fit = False
    _raise_if_signalled()


class StopOnSignal(keras.callbacks.Callback):
    """Raises `Interrupted` at the first batch or epoch boundary after a signal
    received in `deferred`, naming the epoch in progress (1-based)."""

    def on_epoch_begin(self, epoch: int, logs=None):
        set_phase(f"in epoch {epoch + 1}")
        _raise_if_signalled()

    def on_train_batch_end(self, batch: int, logs=None):
        _raise_if_signalled()

    def on_test_batch_end(self, batch: int, logs=None):
        _raise_if_signalled()
