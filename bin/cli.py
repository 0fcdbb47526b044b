"""What every hdge-* program shares: `run(main, program)`, absl's `app.run` with
user errors reported in one line.

A user error (a bad flag or config value, a missing or unreadable file, a run that
cannot be resumed, a dataset that is not available, training that kept diverging)
ends the program with exit status 1 and, as the last line on stderr,

    hdge-train: error: <what is wrong, and how to fix it where we know>

without a traceback; `--verbosity=1` (or higher) shows the traceback too. Other
exceptions are bugs and keep their traceback. The command line is checked by our
own code (`arguments.parse`) before absl parses it, so its errors are ours, not
absl's or ml_collections' rewritten. A run stopped by SIGINT/SIGTERM
(`hdge_tf.interrupts`) ends with `hdge-train: interrupted in epoch N; run the same
command to resume` and exit status 130/143.

TensorFlow's start-up notices appear only with `--verbosity=1` or higher
(`hdge_tf.startup`); a program that prints its own progress (hdge-train) keeps INFO
logs for `--verbosity=1` too (`quiet_info_logs`). Warnings and errors always show.
"""

from __future__ import annotations

import functools
import logging as std_logging
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from hdge_tf import interrupts, startup
from hdge_tf.bin import arguments

# What the library raises for bad inputs (DatasetUnavailableError and
# TrainingDiverged are RuntimeErrors, missing files OSErrors); TensorFlow's OpError
# too (an unreadable file, a dataset that fails to read), checked by name so this
# module does not import TensorFlow.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError, app.UsageError)


def _is_user_error(err: BaseException) -> bool:
    tf_errors = getattr(sys.modules.get("tensorflow"), "errors", None)
    return isinstance(err, USER_ERRORS) or (
        tf_errors is not None and isinstance(err, tf_errors.OpError)
    )


def _one_line(err: BaseException | str) -> str:
    text = str(err) if not isinstance(err, KeyError) else str(err.args[0])
    return " ".join(text.split()) or type(err).__name__


def _exit(program: str, message: str):
    print(f"{program}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _parse_flags(program: str, required: Sequence[str], argv: list[str]) -> list[str]:
    """Our checks of the command line (`arguments.parse`: flags, paths, config
    files and overrides), then absl's parsing of what they passed."""
    try:
        args = arguments.parse(argv, required)
    except ValueError as err:
        if _verbose_argv(argv):
            raise
        _exit(program, _one_line(err))
    try:
        return flags.FLAGS(args)
    except flags.Error as err:  # a case our checks do not know: absl's words
        _exit(program, _one_line(err))


def _verbose_argv(argv: list[str]) -> bool:
    """--verbosity=N (or -v N) >= 1 on a command line whose parsing failed."""
    return (startup.verbosity(argv[1:]) or 0) >= 1


def _verbose() -> bool:
    return flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1


def quiet_info_logs() -> None:
    """Below --verbosity=1, keeps absl's and TensorFlow's Python INFO lines (a
    checkpoint saved, the saver's timings) off the console, for a program that
    prints what its user reads itself (absl's default shows INFO). Below
    --verbosity=2, also matplotlib's DEBUG lines (its font matching, 140 lines
    per figure), which --verbosity=1 would otherwise show."""
    verbosity = flags.FLAGS["verbosity"].value
    if verbosity < 1:
        logging.set_verbosity(min(verbosity, logging.WARNING))
    if verbosity < 2:
        std_logging.getLogger("matplotlib").setLevel(std_logging.INFO)


def _main_with_errors(main, program: str, argv: list[str]):
    try:
        return main(argv)
    except interrupts.Interrupted as err:
        if _verbose():
            raise
        print(f"{program}: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_status)
    except Exception as err:
        if not _is_user_error(err) or _verbose():
            raise
        _exit(program, _one_line(err))


def run(
    main, program: str, argv: list[str] | None = None, required: Sequence[str] = ()
) -> None:
    """`app.run(main)` for the program called `program` in error messages, whose
    flags `required` must be given."""
    app.run(
        functools.partial(_main_with_errors, main, program),
        argv=argv,
        flags_parser=functools.partial(_parse_flags, program, tuple(required)),
    )
