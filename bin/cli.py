"""What every hdge-* program shares: `run(main, program)`, absl's `app.run` with
user errors reported in one line.

A user error (a bad flag or config value, a missing or unreadable file, a run that
cannot be resumed, a dataset that is not available, training that kept diverging)
ends the program with exit status 1 and, as the last line on stderr,

    hdge-train: error: <what is wrong, and how to fix it where we know>

without a traceback; `--verbosity=1` (or higher) shows the traceback too. Other
exceptions are bugs and keep their traceback. A run stopped by SIGINT/SIGTERM
(`hdge_tf.interrupts`) ends with `hdge-train: interrupted in epoch N; run the same
command to resume` and exit status 130/143.

TensorFlow's start-up notices appear only with `--verbosity=1` or higher
(`hdge_tf.startup`); a program that prints its own progress (hdge-train) keeps INFO
logs for `--verbosity=1` too (`quiet_info_logs`). Warnings and errors always show.
"""

from __future__ import annotations

import functools
import logging as std_logging
import re
import sys

from absl import app, flags, logging

from hdge_tf import interrupts, startup

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


def _unknown_config_field(err: BaseException, argv: list[str]) -> str:
    """What config_flags' AttributeError(KeyError(...)) for an override of a field
    the config does not have says, with the flag that asked for it."""
    while err.args and isinstance(err.args[0], BaseException):
        err = err.args[0]
    field, _, hint = str(err.args[0] if err.args else err).partition("\n")
    field = field.strip("'\"")
    names = [arg.split("=", 1)[0].lstrip("-") for arg in argv[1:]]
    flag = next((n for n in names if f".{field}." in f"{n}."), None)
    message = f"the config has no field {field!r}"
    if flag:
        message = f"--{flag}: {message}"
    return f"{message}. {hint}".strip()


_NOT_A_NUMBER = re.compile(
    r"flag (--\S+?)=(.*?): (invalid literal for (int|float)\(\)|could not convert "
    r"string to float)"
)


def _expected_type(message: str) -> str:
    """Python's "invalid literal for int()" of a flag's value, with the type the
    flag expects said in words first."""
    match = _NOT_A_NUMBER.match(message)
    if not match:
        return message
    expected = "an integer" if match.group(4) == "int" else "a number"
    return f"{match.group(1)}={match.group(2)}: expected {expected} ({message})"


def _load_config_files() -> None:
    """Uses every flag's value once: config_flags defers the error of a config file
    that failed to load (e.g. does not exist) to the config's first use."""
    for name in flags.FLAGS:
        getattr(flags.FLAGS[name].value, "lock", None)


def _parse_flags(program: str, argv: list[str]) -> list[str]:
    """absl's flag parsing, with every error as one line."""
    try:
        args = flags.FLAGS(argv)
        _load_config_files()
        return args
    except flags.Error as err:
        _exit(program, _expected_type(_one_line(err)))
    except (AttributeError, KeyError) as err:
        # config_flags' error for an override of a field the config does not have.
        if isinstance(err.__context__ or err, KeyError):
            _exit(program, _unknown_config_field(err, argv))
        if _verbose_argv(argv):
            raise
        _exit(program, _config_file_error(err, argv))
    except OSError as err:
        # config_flags' error for a config file that does not load: the paths it
        # tried, then why (e.g. "[Errno 2] No such file or directory: 'x.py'").
        reason = str(err.__cause__ or err).strip().splitlines()[-1].strip()
        _exit(program, f"cannot load the config file: {reason}")
    except Exception as err:
        # Anything else raised while flags are parsed comes from running a config
        # file's code: a syntax error, no get_config, an error in get_config.
        if _verbose_argv(argv):
            raise
        _exit(program, _config_file_error(err, argv))


def _config_file_error(err: Exception, argv: list[str]) -> str:
    """One line for an exception raised by loading or running a config file."""
    files = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")]
    where = f"the config file {files[0]}" if files else "the config file"
    if isinstance(err, SyntaxError):
        return f"cannot load {where}: {err.msg} at line {err.lineno}: " + (
            (err.text or "").strip()
        )
    if isinstance(err, AttributeError) and "get_config" in str(err):
        return (
            f"cannot load {where}: it defines no get_config(); a config file's "
            "get_config() returns an ml_collections.ConfigDict (see configs/base.py)."
        )
    return f"cannot load {where}: {type(err).__name__}: {_one_line(err)}"


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


def run(main, program: str, argv: list[str] | None = None) -> None:
    """`app.run(main)` for the program called `program` in error messages."""
    app.run(
        functools.partial(_main_with_errors, main, program),
        argv=argv,
        flags_parser=functools.partial(_parse_flags, program),
    )
