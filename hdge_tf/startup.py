"""A quiet start for the hdge-* programs: TensorFlow's notices only on request.

Importing TensorFlow prints notices (oneDNN is on, no CUDA driver, CPU features)
through absl's C++ logging before any setting can reach it (TF_CPP_MIN_LOG_LEVEL
does not silence them), and probing for a GPU logs an error where no CUDA driver
is installed. None of it is something a user of `hdge-train` acts on. So while an
hdge-* program imports TensorFlow and lists its devices (`import_tensorflow`, run
when `hdge_tf/__init__` imports this module, before anything else imports
TensorFlow), file descriptor 2 goes to a temporary file; the lines of
`START_UP_NOISE` are dropped and every other line is written back to stderr.
`TF_CPP_MIN_LOG_LEVEL=2` (unless set) keeps TensorFlow's later C++ INFO and
WARNING lines out too; its ERROR lines are still shown. `--verbosity=1` (or
higher) shows everything, as TensorFlow prints it.

A program that only imports `hdge_tf` (a user's script, the tests) is left alone:
its loggers, absl's verbosity, flags, stderr and environment stay as they were
(tests/test_import.py). Outside an hdge-* program, importing this module must not
import TensorFlow (`hdge_tf.cpu_kernels` must still be able to choose its kernels).

Why this is not in `bin/` with the rest of the programs' log settings
(`bin/cli.py`): the programs are the modules `hdge_tf.bin.*`, so Python imports
the package `hdge_tf`, and TensorFlow with it, before any program code runs
(`python -m hdge_tf.bin.hdge_train` and the console scripts alike), and the
notices are printed while TensorFlow is imported, whatever TF_CPP_MIN_LOG_LEVEL
says (measured with it unset, 1 and 2, TensorFlow 2.21).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

# What TensorFlow prints while it loads and looks for GPUs on a host without them.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit"
)


def program_args(
    argv: Sequence[str] | None = None, orig_argv: Sequence[str] | None = None
) -> list[str] | None:
    """The command-line arguments of the hdge-* program this process runs (its
    console script, or `python -m hdge_tf.bin.<program>`), or None for any other
    program."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(argv[0]).startswith("hdge-"):
        return list(argv[1:])
    for i, arg in enumerate(orig_argv[:-1]):
        if arg == "-m":
            if not orig_argv[i + 1].startswith("hdge_tf.bin."):
                return None
            return list(orig_argv[i + 2 :])
    return None


def verbosity(args: Sequence[str]) -> int | None:
    """absl's --verbosity=N (also --verbosity N, -v N, --v=N) among `args`, read
    before flags are parsed; None if not given or not a number."""
    args = list(args)
    for i, arg in enumerate(args):
        name, separator, value = arg.partition("=")
        if name.lstrip("-") in ("verbosity", "v") and name.startswith("-"):
            if not separator and i + 1 < len(args):
                value = args[i + 1]
            try:
                return int(value)
            except ValueError:
                return None
    return None


@contextlib.contextmanager
def stderr_filtered(noise: re.Pattern) -> Iterator[None]:
    """Holds back what is written to file descriptor 2 (C++ logs included) and,
    on leaving, writes back the lines that do not match `noise`."""
    _flush_stderr()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().decode(errors="replace").splitlines(True)
                if not noise.search(line)
            ]
            if kept:
                os.write(2, "".join(kept).encode())


def _flush_stderr() -> None:
    for stream in {sys.stderr, sys.__stderr__} - {None}:
        stream.flush()


def import_tensorflow() -> None:
    """In an hdge-* program below --verbosity=1 that has not imported TensorFlow
    yet: imports it and lists its devices (where it probes for GPUs) with
    `START_UP_NOISE` dropped, and TF_CPP_MIN_LOG_LEVEL=2 unless set. Does nothing
    in any other program."""
    args = program_args()
    if args is None or "tensorflow" in sys.modules or (verbosity(args) or 0) >= 1:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_filtered(START_UP_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices()


import_tensorflow()
