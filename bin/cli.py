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

A program is a module of `hdge_tf.bin` with its own `flags.FlagValues` (so that
programs whose flags share names, --config and --workdir, can be imported in one
process), a `main(argv)`, and `PROGRAM = cli.Program(...)` naming the three. Its
console script `run()` is `PROGRAM.run()`: absl's `app.run`, with the program's
flags added to absl's FLAGS for the parse (absl's own --verbosity, --flagfile and
--help are parsed with them, and --help lists them).

Tests run a program in process with `call(hdge_train, ["--config=...", ...])`,
which returns its exit status and what it printed, and can be called again and
again in one process: the same checks, parsing and error handling as the console
script, with every flag (config files and their overrides too) back at its
default afterwards (`absl.testing.flagsaver`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging as std_logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import NamedTuple

from absl import app, flags, logging
from absl.testing import flagsaver

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


@dataclasses.dataclass(frozen=True)
class Program:
    """An hdge-* program: `name` in its messages, its own `flags`, its `main`
    (absl's: the arguments left after the flags), the flags it `required`."""

    name: str
    main: Callable[[list[str]], object]
    flags: flags.FlagValues
    required: tuple[str, ...] = ()

    def run(self, argv: list[str] | None = None) -> None:
        """The console script: `app.run(main)` on `argv` (the program first;
        default sys.argv), user errors in one line."""
        main_module = sys.modules["__main__"]
        if not main_module.__doc__:  # a console script's: absl's --help shows it
            main_module.__doc__ = sys.modules[self.main.__module__].__doc__
        app.run(
            functools.partial(_main_with_errors, self.main, self.name),
            argv=argv,
            flags_parser=functools.partial(_parse_flags, self),
        )


def _add_to_absl_flags(program: Program) -> None:
    """Puts the program's flags into absl's FLAGS, as the main module's (what
    --help lists); the Flag objects are shared, so the program reads the values
    absl parses."""
    for name in program.flags:
        flag = program.flags[name]
        if name != flag.name or (name in flags.FLAGS and flags.FLAGS[name] is flag):
            continue
        flags.FLAGS[name] = flag  # a flag of that name already there: absl refuses
        flags.FLAGS.register_flag_by_module(sys.argv[0], flag)


def _parse_flags(program: Program, argv: list[str]) -> list[str]:
    """Our checks of the command line (`arguments.parse`: flags, paths, config
    files and overrides), then absl's parsing of what they passed."""
    _add_to_absl_flags(program)
    try:
        args = arguments.parse(argv, program.required)
    except ValueError as err:
        if _verbose_argv(argv):
            raise
        _exit(program.name, _one_line(err))
    try:
        args = flags.FLAGS(args)
    except flags.Error as err:  # a case our checks do not know: absl's words
        _exit(program.name, _one_line(err))
    program.flags.mark_as_parsed()
    return args


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


class Outcome(NamedTuple):
    """What a program run by `call` did: its exit status and what it printed."""

    status: int
    stdout: str
    stderr: str


def call(program: ModuleType, args: Sequence[str]) -> Outcome:
    """Runs the program `program` (a module of hdge_tf.bin, e.g. hdge_train) on
    the command-line arguments `args` (without the program's name) in this
    process, as its console script would, and returns its Outcome: a user error
    is status 1 with the one line on stderr, an uncaught exception status 1 with
    its traceback, a SystemExit its code.

    Call it again and again: every flag is restored afterwards (absl's and the
    program's, config files and their overrides with them), and so are the log
    levels the program sets. absl's logs go to the captured stderr. What app.run
    does once per process (a log handler kept on the root logger, faulthandler,
    the process's name) is left out; TensorFlow's C++ logs are not captured."""
    spec: Program = program.PROGRAM
    out, err = io.StringIO(), io.StringIO()
    app.define_help_flags()  # once, outside the flagsaver, as app.run would
    with (
        _process_state_restored(spec),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        status = _status_of(spec, [spec.name, *args])
    return Outcome(status, out.getvalue(), err.getvalue())


def _status_of(program: Program, argv: list[str]) -> int:
    try:
        args = _parse_flags(program, argv)
        if startup.verbosity(argv[1:]) is None:
            # INFO, as app.run sets it in a fresh process. Not "if the flag has
            # its default": TensorFlow's SavedModel writer sets the flag (and
            # leaves it set) whenever it saves, in this process or a test's.
            flags.FLAGS.verbosity = 0
        _main_with_errors(program.main, program.name, args)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else int(code is not None)
    except app.UsageError as error:  # re-raised with --verbosity >= 1
        print(f"{program.name}: {error}", file=sys.stderr)
        return error.exitcode
    except Exception:  # as the interpreter reports an uncaught exception
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _process_state_restored(program: Program) -> Iterator[None]:
    """absl's flags and the program's as they were, and the log levels
    (`quiet_info_logs`), after the block; absl's log handler on the root logger
    for it, writing to sys.stderr (--logtostderr)."""
    saved = flagsaver.save_flag_values(program.flags)
    loggers = [std_logging.getLogger(n) for n in ("", "absl", "matplotlib")]
    levels = [logger.level for logger in loggers]
    handler = logging.get_absl_handler()
    added = handler not in std_logging.root.handlers
    try:
        with flagsaver.flagsaver(logtostderr=True):
            if added:
                std_logging.root.addHandler(handler)
            try:
                yield
            finally:
                if added:
                    std_logging.root.removeHandler(handler)
    finally:
        flagsaver.restore_flag_values(saved, program.flags)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
