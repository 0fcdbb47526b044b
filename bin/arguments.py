"""A program's command line checked by our code before absl parses it.

absl words its errors for a flag's author ("flag --workdir=None: Flag --workdir must
have a value other than None", Python's "invalid literal for int()"), and
ml_collections' config_flags puts a traceback or a KeyError inside its messages.
So `parse(argv)` reads the command line as absl would and raises `ArgumentError`
with one line naming the flag for:

  - an unknown flag (with the nearest name), a flag without its value;
  - a value the flag's type refuses: not an integer or a finite number, outside
    the flag's bounds, not one of an enum's values, not true/false;
  - an empty or blank value of a path flag (`DEFINE_path`), a missing required flag;
  - a config file that gives no config, and each `--config.KEY=VALUE` override of
    a field the config does not have or with text not of the field's type
    (`hdge_tf.config_files`).

It returns the arguments for absl, flag files expanded and the config overrides
taken out: a config flag (`DEFINE_config_file`) is a path flag for absl, and its
`.value` is the config with the overrides applied, built here. What the values
mean (a batch size >= 1, an OOD set that exists) each program checks with
`hdge_tf.config_checks` before it does any work.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags

from hdge_tf import config_files

# absl's flags that print help (or check the flags) and exit while absl parses:
# with one of them given, nothing else is checked.
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml", "only_check_flags")


class ArgumentError(ValueError):
    """A bad command line; the message is one line naming the flag."""


class PathParser(flags.ArgumentParser):
    """A file or directory path: any text but an empty or blank one."""

    def parse(self, argument: str) -> str:
        if not str(argument).strip():
            raise ValueError("expected a path, got an empty or blank value")
        return argument

    def flag_type(self) -> str:
        return "path"


def DEFINE_path(
    name: str,
    default: str | None,
    help: str,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> flags.FlagHolder:
    """A string flag holding a path; an empty or blank value is refused."""
    return flags.DEFINE(PathParser(), name, default, help, flag_values=flag_values)


class ConfigFile:
    """`--NAME=FILE[:ARG]` with `--NAME.KEY=VALUE` overrides: `.value` is the
    config file's ConfigDict with the overrides applied, `.overrides` the
    {dotted key: value} given on the command line (both set by `parse`).

    Both are kept on the absl Flag object (its `_PARSED` attribute), not here:
    `absl.testing.flagsaver` saves and restores a flag's attributes, so a
    program run again in one process (`hdge_tf.bin.cli.call`) never sees the
    config of the command line before."""

    def __init__(
        self,
        name: str,
        default: str | None,
        help: str,
        flag_values: flags.FlagValues = flags.FLAGS,
    ):
        self.name = name
        self.default = default
        help = f"{help} Override a value with --{name}.KEY=VALUE."
        DEFINE_path(name, default, help, flag_values)
        self.flag = flag_values[name]
        _CONFIG_FILES[id(self.flag)] = self

    def _parsed(self) -> tuple[ml_collections.ConfigDict | None, dict[str, Any]]:
        parsed = getattr(self.flag, _PARSED, None)
        if parsed is None:
            raise RuntimeError(f"--{self.name} is read before flags were parsed.")
        return parsed

    @property
    def value(self) -> ml_collections.ConfigDict | None:
        """The config (None when no file was given: a flag without a default)."""
        return self._parsed()[0]

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self._parsed()[1])


# The attribute of a config flag's absl Flag holding (config, overrides).
_PARSED = "hdge_parsed_config"


# Every config flag defined, by the id of its absl Flag (`_config_files` finds
# those of the FlagValues being parsed).
_CONFIG_FILES: dict[int, ConfigFile] = {}


def DEFINE_config_file(
    name: str,
    default: str | None,
    help: str,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> ConfigFile:
    """A config file flag with `--NAME.KEY=VALUE` overrides (`ConfigFile`)."""
    return ConfigFile(name, default, help, flag_values)


def _config_files(flag_values: flags.FlagValues) -> dict[str, ConfigFile]:
    """{name: ConfigFile} of the config flags defined in `flag_values`."""
    found = {}
    for name in flag_values:
        flag = flag_values[name]
        holder = _CONFIG_FILES.get(id(flag))
        if holder is not None and holder.flag is flag and flag.name == name:
            found[name] = holder
    return found


def _flagfiles(args: Sequence[str]) -> None:
    """Each `--flagfile=FILE` names a readable file (absl reads them)."""
    for i, arg in enumerate(args):
        name, eq, value = arg.lstrip("-").partition("=")
        if name != "flagfile" or not arg.startswith("-"):
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        if not value.strip():
            raise ArgumentError("--flagfile: expected a path, got an empty value.")
        try:
            open(value).close()
        except OSError as err:
            raise ArgumentError(
                f"--flagfile={value}: cannot read it ({err.strerror})."
            ) from err


def _finite_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _check_value(flag: flags.Flag, shown: str, text: str) -> None:
    """Raises ArgumentError when absl's parser of `flag` would refuse `text`, or
    when a number is not finite; `shown` is the flag as the user typed it."""
    parser = flag.parser
    if isinstance(parser, PathParser):
        if not text.strip():
            raise ArgumentError(
                f"--{shown}={text}: expected a path, got an empty or blank value."
            )
        return
    if isinstance(parser, flags.EnumParser):
        values = parser.enum_values
        matches = text in values or (
            not parser.case_sensitive and text.lower() in (v.lower() for v in values)
        )
        if not matches:
            raise ArgumentError(
                f"--{shown}={text}: expected one of {', '.join(values)}."
            )
        return
    if flag.boolean:
        if text.lower() not in ("true", "t", "1", "false", "f", "0"):
            raise ArgumentError(f"--{shown}={text}: expected true or false.")
        return
    if isinstance(parser, flags.IntegerParser):
        kind, convert = "an integer", config_files._integer
    elif isinstance(parser, flags.FloatParser):
        kind, convert = "a finite number", _finite_number
    else:
        return
    low, high = parser.lower_bound, parser.upper_bound
    bounds = [
        "" if low is None else f">= {low}",
        "" if high is None else f"<= {high}",
    ]
    expected = " and ".join(b for b in bounds if b)
    expected = f"{kind} {expected}".strip()
    try:
        value = convert(text.strip())
    except ValueError:
        raise ArgumentError(f"--{shown}={text}: expected {expected}.") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ArgumentError(f"--{shown}={text}: expected {expected}.")


def _config_specs(args: Sequence[str], names) -> dict[str, str]:
    """{config flag name: its FILE[:ARG]} as given in `args` (the last one)."""
    specs = {}
    for i, arg in enumerate(args):
        name, eq, value = arg.lstrip("-").partition("=")
        if name in names and arg.startswith("-"):
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else None
            if value is not None:
                specs[name] = value
    return specs


def _is_value(text: str | None) -> bool:
    """Whether `text`, the argument after a flag written without `=VALUE`, can be
    its value: not another flag (a negative number can)."""
    if text is None:
        return False
    if not text.startswith("-"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _override_of(name: str, configs) -> tuple[str, str, bool] | None:
    """(config flag, dotted key, negated) of `--[no]CONFIG.KEY`, else None."""
    negated = name.startswith("no") and name[2:].split(".")[0] in configs
    head, dot, key = (name[2:] if negated else name).partition(".")
    return (head, key, negated) if dot and head in configs else None


def _unknown(names: Sequence[str], undefok: set[str], flag_values) -> None:
    for name in names:
        if name not in undefok and name.removeprefix("no") not in undefok:
            close = difflib.get_close_matches(name, list(flag_values), n=1)
            hint = f"; did you mean --{close[0]}?" if close else "."
            raise ArgumentError(f"Unknown flag --{name}{hint}")


def parse(
    argv: Sequence[str],
    required: Sequence[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
) -> list[str]:
    """Checks `argv` (the program first); returns what absl should parse, or
    raises ArgumentError / config_files.ConfigFileError (both ValueErrors)."""
    program, args = argv[0], list(argv[1:])
    _flagfiles(args)
    args = flag_values.read_flags_from_files(args, force_gnu=False)
    if any(a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in args if a[:1] == "-"):
        return [program, *args]
    configs = _config_files(flag_values)
    specs = {name: h.default for name, h in configs.items() if h.default is not None}
    specs.update(_config_specs(args, configs))
    loaded = {}
    for name, spec in specs.items():
        _check_value(configs[name].flag, name, spec)  # an empty path
        loaded[name] = config_files.load(spec)
    overrides: dict[str, dict[str, Any]] = {name: {} for name in configs}
    kept, given, unknown, undefok = [], set(), [], set()
    position = 0
    while position < len(args):
        arg = args[position]
        after = args[position + 1] if position + 1 < len(args) else None
        position += 1
        if arg == "--":
            kept.extend(args[position - 1 :])
            break
        if not arg.startswith("-") or not arg.strip("-"):
            kept.append(arg)  # a positional argument: main() refuses it
            continue
        name, eq, text = arg.lstrip("-").partition("=")
        value = text if eq else None
        override = _override_of(name, configs)
        if override:  # ours alone: absl never sees it
            head, key, negated = override
            if head not in loaded:
                raise ArgumentError(f"--{name}: no config to override; pass --{head}.")
            config = loaded[head]
            # Bare, it is a true/false field's True; else its value follows.
            if value is None and not negated and _is_value(after):
                if config_files.field_type(config, key, head) is not bool:
                    value, position = after, position + 1
            if negated and value is not None:
                raise ArgumentError(f"--{name}={value}: the --no form takes no value.")
            parsed = config_files.override_value(
                config, key, value, negated=negated, flag=head
            )
            if isinstance(parsed, tuple) and f"{head}.{key}" in given:
                parsed = (*overrides[head][key], *parsed)  # a repeated tuple flag
            overrides[head][key] = parsed
            given.add(f"{head}.{key}")
            continue
        kept.append(arg)
        if name == "undefok" or name in flag_values:
            flag = None if name == "undefok" else flag_values[name]
            if value is None and (flag is None or not flag.boolean):
                if not _is_value(after):
                    raise ArgumentError(f"--{name} needs a value: --{name}=VALUE.")
                kept.append(after)
                value, position = after, position + 1
            if flag is None:
                undefok.update(v.strip() for v in value.split(","))
                continue
            if value is not None:
                _check_value(flag, name, value)
            given.add(flag.name)
        elif name.startswith("no") and name[2:] in flag_values:
            flag = flag_values[name[2:]]
            if not flag.boolean:
                raise ArgumentError(
                    f"--{name}: --{name[2:]} is not a true/false flag; pass "
                    f"--{name[2:]}=VALUE."
                )
            if value is not None:
                raise ArgumentError(f"--{name}={value}: the --no form takes no value.")
            given.add(flag.name)
        else:
            unknown.append(name)
    _unknown(unknown, undefok, flag_values)
    for name in required:
        if name not in given and flag_values[name].default is None:
            what = flag_values[name].help.split(".")[0]
            raise ArgumentError(f"--{name} is required: {what}.")
    for name, holder in configs.items():
        config = loaded.get(name)
        if config is not None:
            config = config_files.with_overrides(config, overrides[name])
        setattr(holder.flag, _PARSED, (config, overrides[name]))
    return [program, *kept]
