"""bin/arguments.py: a command line checked by our code before absl parses it,
every error one line naming the flag (in process, on a FlagValues of its own)."""

import re
import textwrap

import pytest
from absl import flags

from hdge_tf.bin import arguments


@pytest.fixture
def program(tmp_path):
    """A program's flags: paths, a config file, numbers with bounds, an enum."""
    values = flags.FlagValues()
    config = tmp_path / "config.py"
    config.write_text(
        textwrap.dedent(
            """
            import ml_collections

            def get_config():
                return ml_collections.ConfigDict({
                    "seed": 0,
                    "rate": 0.5,
                    "data": {"download": True, "data_dir": "", "sets": ("a",)},
                })
            """
        )
    )
    holder = arguments.DEFINE_config_file("config", str(config), "A config.", values)
    arguments.DEFINE_path("workdir", None, "The run directory.", values)
    flags.DEFINE_integer("steps", 10, "Steps.", lower_bound=0, flag_values=values)
    flags.DEFINE_float("size", None, "Size.", lower_bound=0.0, flag_values=values)
    flags.DEFINE_enum("mode", "a", ["a", "b"], "Mode.", flag_values=values)
    flags.DEFINE_bool("clip", False, "Clip.", flag_values=values)

    def parse(*args, required=("workdir",)):
        return arguments.parse(["prog", *args], required, values)

    return parse, holder, tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workdir="], "--workdir=: expected a path, got an empty or blank value."),
        (["--workdir=  "], "--workdir=  : expected a path, got an empty or blank"),
        (["--workdir", "--steps=1"], "--workdir needs a value: --workdir=VALUE."),
        ([], "--workdir is required: The run directory."),
        (["--wrkdir=x"], "Unknown flag --wrkdir; did you mean --workdir?"),
        (["--workdir=w", "--steps=abc"], "--steps=abc: expected an integer >= 0."),
        (["--workdir=w", "--steps=-1"], "--steps=-1: expected an integer >= 0."),
        (["--workdir=w", "--size=nan"], "--size=nan: expected a finite number >= 0.0."),
        (["--workdir=w", "--mode=c"], "--mode=c: expected one of a, b."),
        (["--workdir=w", "--clip=maybe"], "--clip=maybe: expected true or false."),
        (["--workdir=w", "--nosteps"], "--nosteps: --steps is not a true/false flag"),
        (["--workdir=w", "--config="], "--config=: expected a path, got an empty"),
        (
            ["--workdir=w", "--config.data.downlod=1"],
            "--config.data.downlod: the config has no field 'downlod'. Did you mean "
            "'data.download'?",
        ),
        (["--workdir=w", "--config.seed=1.5"], "--config.seed=1.5: expected an int"),
        (["--workdir=w", "--config.rate=x"], "--config.rate=x: expected a number."),
        (
            ["--workdir=w", "--config.data.download=maybe"],
            "--config.data.download=maybe: expected true or false.",
        ),
        (["--workdir=w", "--noconfig.seed"], "--noconfig.seed: only true/false fields"),
        (["--workdir=w", "--config.seed"], "--config.seed needs a value"),
        (["--workdir=w", "--config.data=1"], "--config.data=1: data is a section"),
        (
            ["--workdir=w", "--config.data.data_dir= "],
            "--config.data.data_dir= : expected a path, got an empty or blank value",
        ),
        (["--workdir=w", "--flagfile=nowhere"], "--flagfile=nowhere: cannot read it"),
    ],
)
def test_a_bad_command_line_is_one_line_naming_the_flag(program, args, message):
    parse, _, _ = program
    with pytest.raises(ValueError) as error:
        parse(*args)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_overrides_are_typed_by_their_field_and_kept_from_absl(program):
    parse, config, _ = program
    rest = parse(
        "--workdir=w",
        "--config.seed",
        "3",
        "--noconfig.data.download",
        "--config.data.sets=b",
        "--config.data.sets=c",
        "--config.rate=1",
        "--steps",
        "0x10",
        "--clip",
    )
    assert rest == ["prog", "--workdir=w", "--steps", "0x10", "--clip"]
    assert config.overrides == {
        "seed": 3,
        "data.download": False,
        "data.sets": ("b", "c"),
        "rate": 1.0,
    }
    assert (config.value.seed, config.value.data.download) == (3, False)
    assert config.value.data.sets == ("b", "c")


def test_help_is_left_to_absl(program):
    parse, _, _ = program
    assert parse("--helpfull", "--workdir=") == ["prog", "--helpfull", "--workdir="]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def get_config():\n    raise ValueError('bad seed')\n",
            "FILE: ValueError: bad seed (line 2)",
        ),
        ("def get_config():\n    return {'seed': 1}\n", "FILE: TypeError: get_config"),
        ("def get_config():\n    return None\n", "FILE: TypeError: get_config() "),
        ("import sys\ndef get_config():\n    sys.exit(2)\n", "FILE: SystemExit: 2"),
        ("1 / 0\n", "FILE: ZeroDivisionError: division by zero (line 1)"),
        ("def get_config(:\n", "FILE: SyntaxError: invalid syntax at line 1"),
        ("CONFIG = 1\n", "FILE: defines no get_config()"),
    ],
    ids=["raises", "dict", "none", "exits", "at_import", "syntax", "no_get_config"],
)
def test_a_config_file_that_gives_no_config_is_named(program, source, message):
    parse, _, tmp_path = program
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ValueError) as error:
        parse("--workdir=w", f"--config={path}")
    text = str(error.value)
    assert text.startswith(message.replace("FILE", str(path))), text
    assert "\n" not in text and "Traceback" not in text


def test_a_config_file_that_is_not_there_is_named(program):
    parse, _, tmp_path = program
    for path, reason in ((tmp_path / "no.py", "no such config file"), (tmp_path, "")):
        with pytest.raises(ValueError, match=re.escape(f"{path}: {reason}")):
            parse("--workdir=w", f"--config={path}")
