"""Config files and their `--config.KEY=VALUE` overrides, read by our own code.

A config file is a Python file whose `get_config()` returns an
`ml_collections.ConfigDict` (configs/base.py); `FILE:ARG` calls `get_config("ARG")`
(configs/reproduce_mnist5k.py:tiny). `load(spec)` runs it and fails with one line
naming the file and what went wrong, whatever the file does: a syntax error, an
exception of any type while it runs or in `get_config`, no `get_config`, a return
that is not a ConfigDict. `override_value` reads one override's text as the type
of the field it sets (an unknown field, or text that is not of the field's type,
is one line naming the flag); the value rules themselves are `config_checks`'.

These used to be left to ml_collections' `config_flags`, whose errors are written
for the author of a flag (a traceback inside the message, a KeyError inside an
AttributeError), and were rewritten with regular expressions over their text.
"""

from __future__ import annotations

import ast
import difflib
import traceback
import types
from pathlib import Path
from typing import Any

import ml_collections

# Fields that hold a path: set on the command line, an empty or blank value is a
# mistake (an unset shell variable), not a choice; leave the flag out instead.
PATH_FIELDS = ("data.data_dir", "train.init_from")


class ConfigFileError(ValueError):
    """A config file that cannot give a config; the message names the file."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(err: BaseException) -> str:
    """`Type: message` of an exception raised by a config file's code, with the
    file's line where the traceback passes through it."""
    text = _one_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _line_in(err: BaseException, path: str) -> str:
    """ " (line N)" of the innermost frame of `err` in the file `path`, or ""."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == path]
    return f" (line {frames[-1].lineno})" if frames else ""


def load(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of the config file `spec` (FILE or FILE:ARG), locked as
    config_flags locked it (no new fields); ConfigFileError otherwise."""
    path, _, argument = spec.partition(":")
    if not path.strip():
        raise ConfigFileError(
            "the config file is empty; pass a config file, e.g. "
            "--config=configs/mnist5k_hdge.py"
        )
    file = Path(path)
    if not file.exists():
        raise ConfigFileError(f"{path}: no such config file")
    if not file.is_file():
        raise ConfigFileError(f"{path}: not a file; pass a config file (a .py file)")
    try:
        source = file.read_bytes()
        code = compile(source, path, "exec")
    except SyntaxError as err:
        text = (err.text or "").strip()
        raise ConfigFileError(
            f"{path}: SyntaxError: {err.msg} at line {err.lineno}"
            + (f": {text}" if text else "")
        ) from err
    except (OSError, ValueError) as err:  # unreadable; NUL bytes; not text
        raise ConfigFileError(f"{path}: {_describe(err)}") from err
    module = types.ModuleType(f"_hdge_config_{file.stem}")
    module.__file__ = path
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as err:
        raise ConfigFileError(f"{path}: {_describe(err)}{_line_in(err, path)}") from err
    get_config = module.__dict__.get("get_config")
    if not callable(get_config):
        missing = AttributeError(f"module {path!r} has no attribute 'get_config'")
        raise ConfigFileError(
            f"{path}: defines no get_config(); a config file's get_config() returns "
            "an ml_collections.ConfigDict (see configs/base.py)"
        ) from missing
    try:
        config = get_config(argument) if argument else get_config()
    except (Exception, SystemExit) as err:
        raise ConfigFileError(f"{path}: {_describe(err)}{_line_in(err, path)}") from err
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFileError(
            f"{path}: TypeError: get_config() returned {type(config).__name__}, not "
            "an ml_collections.ConfigDict (see configs/base.py)"
        )
    config.lock()
    return config


def _field(config: ml_collections.ConfigDict, key: str, flag: str):
    """(the ConfigDict holding `key`'s field, the field's name); ValueError naming
    the flag for a field the config does not have."""
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        section = isinstance(node, ml_collections.ConfigDict)
        if not section or part not in node:
            known = list(node.keys()) if section else []
            close = difflib.get_close_matches(part, known, n=1)
            hint = ""
            if close:
                hint = f" Did you mean {'.'.join([*parts[:depth], close[0]])!r}?"
            raise ValueError(f"--{flag}.{key}: the config has no field {part!r}.{hint}")
        if depth < len(parts) - 1:
            node = node[part]
    return node, parts[-1]


def _integer(text: str) -> int:
    """An integer as absl writes one: decimal, or 0x / 0o prefixed."""
    base = 10
    if len(text) > 2 and text[0] == "0" and text[1] in "xo":
        base = 16 if text[1] == "x" else 8
    return int(text, base)


def _tuple(text: str) -> tuple:
    """A tuple as config_flags reads one: a Python literal, or one bare string."""
    try:
        value = ast.literal_eval(text)
    except ValueError:
        value = text  # a bare word, e.g. digits
    except SyntaxError:
        if "," in text or " " in text:
            raise
        value = text  # e.g. a path
    if isinstance(value, tuple | list):
        return tuple(value)
    return (value,)


_EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    tuple: "a tuple, e.g. \"('a', 'b')\" or one value (repeat the flag for more)",
}


def field_type(config: ml_collections.ConfigDict, key: str, flag: str = "config"):
    """The type of the field `key` (dotted) of `config`; ValueError naming the
    flag `--FLAG.KEY` for a field the config does not have."""
    holder, leaf = _field(config, key, flag)
    return holder.get_type(leaf)


def override_value(
    config: ml_collections.ConfigDict,
    key: str,
    text: str | None,
    *,
    negated: bool = False,
    flag: str = "config",
) -> Any:
    """The value `--FLAG.KEY=TEXT` (TEXT None for a bare `--FLAG.KEY`, `negated`
    for `--noFLAG.KEY`) sets, typed as the field it sets; ValueError naming the
    flag otherwise."""
    holder, leaf = _field(config, key, flag)
    kind = holder.get_type(leaf)
    shown = f"--{'no' if negated else ''}{flag}.{key}"
    if negated and kind is not bool:
        raise ValueError(
            f"{shown}: only true/false fields take the --no form; pass "
            f"--{flag}.{key}=VALUE"
        )
    if text is None:
        if kind is not bool:
            raise ValueError(f"{shown} needs a value: {shown}=VALUE")
        return not negated
    if key in PATH_FIELDS and not text.strip():
        raise ValueError(
            f"{shown}={text}: expected a path, got an empty or blank value (leave "
            "the flag out for the config's value)"
        )
    if issubclass(kind, ml_collections.ConfigDict):
        fields = ", ".join(holder[leaf].keys())
        raise ValueError(
            f"{shown}={text}: {key} is a section of the config; set its fields "
            f"({fields}) one by one, e.g. --{flag}.{key}.FIELD=VALUE"
        )
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "t", "1", "false", "f", "0"):
                raise ValueError(text)
            return lowered in ("true", "t", "1")
        if kind is int:
            return _integer(text)
        if kind is float:
            return float(text)
        if kind is tuple:
            return _tuple(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"{shown}={text}: expected {_EXPECTED[kind]}.") from None
    if kind is str:
        return text
    raise ValueError(
        f"{shown}={text}: the field {key} holds a {kind.__name__}, which cannot be "
        "set from the command line"
    )


def with_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """`config` with each {dotted key: value} of `overrides` set (keys and values
    as `override_value` returned them)."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
