"""Every hdge-* program ends a user error with one line on stderr, `PROGRAM: error:
MESSAGE`, and exit status 1, without a traceback unless --verbosity=1 (bin/cli.py).

The bad inputs a new user tries, each run in process with `cli.call` (BUILD.md,
"Testing a program"), which also gets tests of its own here: one call's flags and
config never reach the next. Each program also runs once as a real command.
"""

import importlib
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import keras
import pytest
from absl import flags, logging
from conftest import SMOKE_OVERRIDES, smoke_flags, tiny_backbone

from hdge_tf import HDGEClassifier, run_config, run_lock
from hdge_tf.bin import arguments, cli, hdge_eval, hdge_sample, hdge_train
from hdge_tf.configs import mnist5k_hdge

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {
    "hdge_train": "hdge-train",
    "hdge_bench": "hdge-bench",
    "hdge_eval": "hdge-eval",
    "hdge_export": "hdge-export",
    "hdge_sample": "hdge-sample",
}
# A CheckpointManager's state file naming checkpoint 1.
_CHECKPOINT_STATE = (
    'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n'
)


def _train(name: str, *flags: str) -> list[str]:
    return [*smoke_flags(), f"--workdir={{tmp}}/runs/{name}", *flags]


# (program module, case, arguments with {tmp} for the inputs, text of the message)
CASES = [
    (
        "hdge_train",
        "unknown_key",
        _train("unknown_key", "--config.train.no_such_key=1"),
        "--config.train.no_such_key: the config has no field 'no_such_key'.",
    ),
    (
        "hdge_train",
        "bad_value",
        _train("bad_value", "--config.train.batch_size=abc"),
        "--config.train.batch_size=abc: expected an integer.",
    ),
    (
        "hdge_train",
        "bad_tuple_value",
        _train("bad_tuple", "--config.train.decay_epochs=abc"),
        "train.decay_epochs=('abc',): expected a tuple of epochs (integers >= 1).",
    ),
    (
        "hdge_train",
        "nan_learning_rate",
        _train("nan_lr", "--config.train.learning_rate=nan"),
        "train.learning_rate=nan: expected a finite number > 0.",
    ),
    (
        "hdge_train",
        "missing_init_from",
        _train("init_from", "--config.train.init_from={tmp}/MISSING"),
        "train.init_from={tmp}/MISSING: no file {tmp}/MISSING; pass a trained run's "
        "directory or its .keras file as --config.train.init_from, or '' for no "
        "warm start.",
    ),
    (
        "hdge_train",
        "config_syntax_error",
        ["--config={tmp}/syntax_error.py", "--workdir={tmp}/runs/x"],
        "{tmp}/syntax_error.py: SyntaxError: invalid syntax at line 2: "
        "def get_config(:",
    ),
    (
        "hdge_train",
        "config_without_get_config",
        ["--config={tmp}/no_get_config.py", "--workdir={tmp}/runs/x"],
        "{tmp}/no_get_config.py: defines no get_config(); a config file's "
        "get_config() returns an ml_collections.ConfigDict",
    ),
    (
        "hdge_train",
        "config_get_config_fails",
        ["--config={tmp}/get_config_fails.py", "--workdir={tmp}/runs/x"],
        "{tmp}/get_config_fails.py: NameError: name 'no_such_name' is not defined "
        "(line 2)",
    ),
    (
        "hdge_bench",
        "unsupported_precision",
        ["--precisions=float32,float64"],
        "--precisions=float32,float64: unknown float64; allowed values: float32, "
        "mixed_bfloat16, mixed_float16 (comma-separated).",
    ),
    (
        "hdge_bench",
        "unknown_mode",
        ["--modes=ce,jem2"],
        "--modes=ce,jem2: unknown jem2; allowed values: ce, hdge, jem",
    ),
    (
        "hdge_bench",
        "bad_batch_size",
        ["--batch_sizes=64,abc"],
        "--batch_sizes=64,abc: expected positive integers, comma-separated",
    ),
    (
        "hdge_train",
        "missing_config_file",
        ["--config={tmp}/no_such_config.py", "--workdir={tmp}/runs/x"],
        "{tmp}/no_such_config.py: no such config file",
    ),
    (
        "hdge_train",
        "no_workdir",
        smoke_flags(),
        "--workdir is required: Directory for checkpoints and outputs.",
    ),
    (
        "hdge_train",
        "unexpected_argument",
        [*_train("unexpected"), "extra"],
        "Unexpected arguments: ['extra']",
    ),
    (
        "hdge_train",
        "unknown_dataset",
        _train("unknown_dataset", "--config.data.name=no_such_dataset"),
        "Unknown dataset 'no_such_dataset'",
    ),
    (
        "hdge_train",
        "tfds_set_offline",
        _train(
            "tfds_set_offline",
            "--config.data.name=cifar10",
            "--config.data.download=False",
            "--config.data.data_dir={tmp}/tfds",
        ),
        "TFDS dataset 'cifar10' is not available",
    ),
    (
        "hdge_train",
        "queue_smaller_than_batch",
        _train("queue", "--config.loss.queue_size=16"),
        "train.batch_size=32 exceeds loss.queue_size=16",
    ),
    (
        "hdge_train",
        "zero_temperature",
        _train("temperature", "--config.loss.temperature=0.0"),
        "loss.temperature=0.0: expected a finite number > 0.",
    ),
    (
        "hdge_train",
        "zero_batch",
        _train("batch", "--config.train.batch_size=0"),
        "train.batch_size=0: expected an integer >= 1.",
    ),
    (
        "hdge_train",
        "unknown_formulation",
        _train("formulation", "--config.loss.formulation=no_such"),
        "Unknown contrastive formulation 'no_such'",
    ),
    (
        "hdge_train",
        "unknown_backbone",
        _train("backbone", "--config.backbone.name=no_such"),
        "Unknown backbone 'no_such'",
    ),
    (
        "hdge_train",
        "workdir_is_a_file",
        [*smoke_flags(), "--workdir={tmp}/a_file"],
        "The workdir {tmp}/a_file is a file",
    ),
    (
        "hdge_train",
        "corrupt_checkpoint",
        [*smoke_flags(), "--workdir={tmp}/corrupt"],
        "Cannot resume from checkpoint {tmp}/corrupt/checkpoints/ckpt-1",
    ),
    (
        "hdge_train",
        "workdir_in_use",
        [*smoke_flags(), "--workdir={tmp}/in_use"],
        # Held by this test's process, alive on this host.
        f"The workdir {{tmp}}/in_use is in use by PID {os.getpid()} on host "
        f"{socket.gethostname()} (lock file {{tmp}}/in_use/.lock); wait for that "
        "run to finish or stop it, or pass another --workdir.",
    ),
    (
        "hdge_train",
        "another_network",
        [*smoke_flags(), "--workdir={tmp}/other_network"],
        "in keys that change the model: backbone.filters [4, 8, 16] -> [4, 8]. Pass",
    ),
    (
        "hdge_eval",
        "missing_model",
        ["--workdir={tmp}/empty"],
        "No model file {tmp}/empty/model.keras",
    ),
    (
        "hdge_eval",
        "garbage_keras",
        ["--model={tmp}/garbage.keras"],
        "{tmp}/garbage.keras is not a .keras model archive",
    ),
    (
        "hdge_eval",
        "not_a_keras_file",
        ["--model={tmp}/notes.txt"],
        "{tmp}/notes.txt is not a .keras model archive",
    ),
    ("hdge_eval", "no_run", [], "Pass --workdir=RUN or --model=path.keras."),
    (
        "hdge_export",
        "missing_model",
        ["--workdir={tmp}/empty"],
        "No model file {tmp}/empty/model.keras",
    ),
    (
        "hdge_export",
        "garbage_keras",
        ["--workdir={tmp}/empty", "--model={tmp}/garbage.keras"],
        "is not a .keras model archive",
    ),
    (
        "hdge_sample",
        "missing_model",
        ["--workdir={tmp}/empty"],
        "No model file {tmp}/empty/model.keras",
    ),
    (
        "hdge_sample",
        "garbage_keras",
        ["--model={tmp}/garbage.keras"],
        "is not a .keras model archive",
    ),
]
# Issue 29's classes, each across the programs: a config file that gives no
# config, an empty or blank path, a config value a program reads, and a model
# whose images are not the data's.
_MNIST = "--config=configs/mnist5k_hdge.py"
_SHAPE = "but the model takes images of shape (batch, 8, 8, 1) [batch, height, "
CASES += [
    (
        "hdge_train",
        "config_raises",
        ["--config={tmp}/raises.py", "--workdir={tmp}/runs/x"],
        "{tmp}/raises.py: ValueError: no config for you (line 2)",
    ),
    (
        "hdge_train",
        "config_returns_a_dict",
        ["--config={tmp}/returns_dict.py", "--workdir={tmp}/runs/x"],
        "{tmp}/returns_dict.py: TypeError: get_config() returned dict, not an "
        "ml_collections.ConfigDict",
    ),
    (
        "hdge_eval",
        "config_raises",
        ["--config={tmp}/raises.py", "--workdir={tmp}/empty"],
        "{tmp}/raises.py: ValueError: no config for you (line 2)",
    ),
    (
        "hdge_train",
        "empty_workdir",
        [*smoke_flags(), "--workdir="],
        "--workdir=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_train",
        "blank_data_dir",
        _train("blank_data_dir", "--config.data.data_dir= "),
        "--config.data.data_dir= : expected a path, got an empty or blank value",
    ),
    (
        "hdge_eval",
        "empty_model",
        ["--model="],
        "--model=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_eval",
        "blank_output_dir",
        ["--workdir={tmp}/empty", "--output_dir= "],
        "--output_dir= : expected a path, got an empty or blank value.",
    ),
    (
        "hdge_eval",
        "empty_config",
        ["--config=", "--workdir={tmp}/empty"],
        "--config=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_sample",
        "empty_workdir",
        ["--workdir="],
        "--workdir=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_export",
        "empty_output",
        ["--workdir={tmp}/empty", "--output="],
        "--output=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_bench",
        "empty_output",
        ["--output="],
        "--output=: expected a path, got an empty or blank value.",
    ),
    (
        "hdge_eval",
        "negative_pgd_steps",
        ["--workdir={tmp}/empty", "--config.eval.pgd.steps=-1"],
        "eval.pgd.steps=-1: expected an integer >= 0.",
    ),
    (
        "hdge_eval",
        "float8",
        ["--workdir={tmp}/empty", "--config.precision=float8"],
        "precision='float8': expected one of ('float32', 'mixed_bfloat16', "
        "'mixed_float16').",
    ),
    (
        "hdge_train",
        "float8",
        _train("float8", "--config.precision=float8"),
        "precision='float8': expected one of ('float32', 'mixed_bfloat16', "
        "'mixed_float16').",
    ),
    (
        "hdge_eval",
        "misspelt_field",
        ["--workdir={tmp}/empty", "--config.eval.pgd.stepz=3"],
        "--config.eval.pgd.stepz: the config has no field 'stepz'. Did you mean "
        "'eval.pgd.steps'?",
    ),
    (
        "hdge_export",
        "negative_validation_size",
        ["--model={tmp}/garbage.keras", _MNIST, "--config.data.validation_size=-1"],
        "data.validation_size=-1: expected an integer >= 0.",
    ),
    (
        "hdge_sample",
        "nan_step_size",
        ["--workdir={tmp}/empty", "--step_size=nan"],
        "--step_size=nan: expected a finite number >= 0.0.",
    ),
    (
        "hdge_bench",
        "no_rounds",
        ["--rounds=0"],
        "--rounds=0: expected an integer >= 1.",
    ),
    (
        "hdge_eval",
        "model_for_other_images",
        ["--model={tmp}/small.keras", _MNIST, "--output_dir={tmp}/small_eval"],
        "The test images of data.name='mnist5k' have shape (1000, 32, 32, 1), "
        + _SHAPE,
    ),
    (
        "hdge_export",
        "model_for_other_images",
        [
            "--model={tmp}/small.keras",
            _MNIST,
            "--config.data.validation_size=32",
            "--output={tmp}/small_export",
        ],
        "The validation images have shape (32, 32, 32, 1), " + _SHAPE,
    ),
    (
        "hdge_sample",
        "model_of_any_image_size",
        ["--model={tmp}/any_size.keras", "--output_dir={tmp}/any_size_samples"],
        "Sampling draws images of the model's (height, width, channels), and "
        "HDGEClassifier 'any_size' does not fix them (its image shape: (None, None, "
        "1))",
    ),
]
# What the cases above must not have written.
NOT_WRITTEN = {
    ("hdge_train", "config_raises"): "runs/x",
    ("hdge_train", "float8"): "runs/float8",
    ("hdge_train", "blank_data_dir"): "runs/blank_data_dir",
    ("hdge_eval", "config_raises"): "empty/eval",
    ("hdge_eval", "negative_pgd_steps"): "empty/eval",
    ("hdge_eval", "model_for_other_images"): "small_eval",
    ("hdge_export", "model_for_other_images"): "small_export",
    ("hdge_sample", "model_of_any_image_size"): "any_size_samples",
}

# Errors with --verbosity=1, which keeps the traceback.
VERBOSE_CASE = ("hdge_eval", "verbose", ["--workdir={tmp}/empty", "--verbosity=1"])
VERBOSE_CONFIG_CASE = (
    "hdge_train",
    "verbose_config",
    ["--config={tmp}/no_get_config.py", "--workdir={tmp}/runs/x", "--verbosity=1"],
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The files the cases point at."""
    tmp = tmp_path_factory.mktemp("cli_cases")
    (tmp / "a_file").write_text("not a directory\n")
    (tmp / "empty").mkdir()
    (tmp / "tfds").mkdir()
    (tmp / "garbage.keras").write_bytes(b"garbage")
    (tmp / "notes.txt").write_text("not a model\n")
    (tmp / "syntax_error.py").write_text("import ml_collections\ndef get_config(:\n")
    (tmp / "no_get_config.py").write_text("import ml_collections\nCONFIG = 1\n")
    (tmp / "get_config_fails.py").write_text("def get_config():\n    no_such_name\n")
    (tmp / "raises.py").write_text(
        "def get_config():\n    raise ValueError('no config for you')\n"
    )
    (tmp / "returns_dict.py").write_text("def get_config():\n    return {'seed': 1}\n")
    # Models for 8x8 images (the data's are 32x32), and for images of any size.
    HDGEClassifier(tiny_backbone(), queue_size=16).save(tmp / "small.keras")
    inputs = keras.Input((None, None, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    backbone = keras.Model(inputs, keras.layers.Dense(4)(pooled))
    HDGEClassifier(backbone, queue_size=16, name="any_size").save(
        tmp / "any_size.keras"
    )
    # Held by this process, alive, which is also the one hdge-train runs in.
    lock = run_lock.acquire(tmp / "in_use")
    # A checkpoint that cannot be read, in a run without config.json.
    checkpoints = tmp / "corrupt" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "checkpoint").write_text(_CHECKPOINT_STATE)
    for name in ("ckpt-1.index", "ckpt-1.data-00000-of-00001"):
        (checkpoints / name).write_bytes(b"not a checkpoint")
    # A run of another network than smoke_flags' (only its config.json is read).
    overrides = {**SMOKE_OVERRIDES, "train.epochs": 1, "backbone.filters": (4, 8, 16)}
    config = run_config.resolve_config(mnist5k_hdge.get_config(), None, overrides)
    run = tmp / "other_network"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(config.to_json_best_effort())
    (run / "checkpoints" / "checkpoint").write_text(_CHECKPOINT_STATE)
    yield tmp
    run_lock.release(lock)


def _call(module: str, args, tmp: Path) -> cli.Outcome:
    """`cli.call` of the program module hdge_tf.bin.MODULE on `args`, "{tmp}"
    being `tmp`; its stderr with `tmp` written "{tmp}" again."""
    program = importlib.import_module(f"hdge_tf.bin.{module}")
    outcome = cli.call(program, [a.format(tmp=tmp) for a in args])
    return outcome._replace(stderr=outcome.stderr.replace(str(tmp), "{tmp}"))


@pytest.mark.parametrize(
    ("module", "name", "args", "message"),
    CASES,
    ids=[f"{PROGRAMS[module]}-{name}" for module, name, _, _ in CASES],
)
def test_a_user_error_ends_with_one_line(inputs, module, name, args, message):
    status, _, stderr = _call(module, args, inputs)
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.splitlines()[-1]
    assert last.startswith(f"{PROGRAMS[module]}: error: "), stderr[-3000:]
    assert message in last
    assert status == 1
    # ... and writes nothing.
    if (module, name) in NOT_WRITTEN:
        assert not (inputs / NOT_WRITTEN[module, name]).exists()


def test_verbosity_1_adds_the_traceback(inputs):
    status, _, stderr = _call(*VERBOSE_CASE[::2], inputs)
    assert status == 1
    assert "Traceback" in stderr
    assert "FileNotFoundError: No model file {tmp}/empty/model.keras" in stderr


def test_verbosity_1_keeps_a_config_file_traceback(inputs):
    status, _, stderr = _call(*VERBOSE_CONFIG_CASE[::2], inputs)
    assert status == 1
    assert "Traceback" in stderr
    assert "has no attribute 'get_config'" in stderr


# cli.call itself --------------------------------------------------------------------


def _recording_program(seen: list) -> types.ModuleType:
    """A program module whose main records its config, overrides, flag and
    arguments; its config flag is the module's CONFIG."""
    module = types.ModuleType("recording_program")
    values = flags.FlagValues()
    module.CONFIG = arguments.DEFINE_config_file("config", None, "A config.", values)
    steps = flags.DEFINE_integer("steps", 1, "Steps.", flag_values=values)

    def main(argv):
        config = module.CONFIG
        seen.append((config.value.to_dict(), config.overrides, steps.value, argv))
        logging.info("ran %d steps", steps.value)

    module.PROGRAM = cli.Program("recording", main, values, required=("config",))
    return module


def test_consecutive_calls_do_not_see_each_others_flags_or_config(tmp_path):
    """A config file's values and --config.* overrides, a flag given once, and
    absl's --verbosity are the next call's defaults again, not the last call's."""
    for name, rate in (("a", 0.5), ("b", 0.25)):
        (tmp_path / f"{name}.py").write_text(
            textwrap.dedent(
                f"""
                import ml_collections

                def get_config():
                    return ml_collections.ConfigDict({{"rate": {rate}, "seed": 0}})
                """
            )
        )
    seen = []
    program = _recording_program(seen)
    verbosity = flags.FLAGS["verbosity"].value
    first = cli.call(
        program,
        [f"--config={tmp_path}/a.py", "--config.seed=7", "--steps=5", "--verbosity=1"],
    )
    second = cli.call(program, [f"--config={tmp_path}/b.py"])
    assert (first.status, second.status) == (0, 0), first.stderr + second.stderr
    assert seen == [
        ({"rate": 0.5, "seed": 7}, {"seed": 7}, 5, ["recording"]),
        ({"rate": 0.25, "seed": 0}, {}, 1, ["recording"]),
    ]
    # absl's logs are the call's stderr, at INFO as in a new process.
    assert "ran 5 steps" in first.stderr and "ran 1 steps" in second.stderr
    # Nothing is left behind: absl's flags and the program's as they were.
    assert flags.FLAGS["verbosity"].value == verbosity
    assert "steps" not in flags.FLAGS and "config" not in flags.FLAGS
    assert program.PROGRAM.flags["steps"].value == 1
    with pytest.raises(RuntimeError, match="read before flags were parsed"):
        _ = program.CONFIG.value


@pytest.mark.parametrize("before", [logging.WARNING, logging.ERROR, logging.DEBUG])
def test_a_call_logs_info_whatever_set_the_verbosity_before(before, tmp_path):
    """TensorFlow's SavedModel writer (and any library) may leave absl's
    --verbosity set in the process; a call without --verbosity still logs INFO,
    as the program would in a new process, and one with it obeys it."""
    (tmp_path / "c.py").write_text(
        "import ml_collections\n"
        "def get_config():\n    return ml_collections.ConfigDict({'seed': 0})\n"
    )
    program = _recording_program([])
    saved = flags.FLAGS["verbosity"].value
    try:
        logging.set_verbosity(before)
        plain = cli.call(program, [f"--config={tmp_path}/c.py"])
        quiet = cli.call(program, [f"--config={tmp_path}/c.py", "--verbosity=-1"])
        after = flags.FLAGS["verbosity"].value
    finally:
        flags.FLAGS.verbosity = saved
    assert (plain.status, quiet.status) == (0, 0), plain.stderr + quiet.stderr
    assert "ran 1 steps" in plain.stderr
    assert "ran 1 steps" not in quiet.stderr
    assert after == before  # the flag as it was before the call


def test_a_real_program_called_twice_reads_only_its_own_overrides(tmp_path):
    """hdge-train's config checks see the second command line's override alone:
    with the first one's kept, its batch size of 0 would be named."""
    first = cli.call(
        hdge_train,
        [*smoke_flags(), f"--workdir={tmp_path}", "--config.train.batch_size=0"],
    )
    second = cli.call(
        hdge_train,
        [*smoke_flags(), f"--workdir={tmp_path}", "--config.loss.temperature=0.0"],
    )
    assert first.stderr.splitlines()[-1] == (
        "hdge-train: error: train.batch_size=0: expected an integer >= 1."
    )
    assert second.stderr.splitlines()[-1] == (
        "hdge-train: error: loss.temperature=0.0: expected a finite number > 0."
    )
    assert (first.status, second.status) == (1, 1)
    assert not (tmp_path / "config.json").exists()


def test_programs_with_flags_of_the_same_name_share_a_process():
    """hdge-eval's --config defaults to configs/base.py, hdge-train's to none:
    each program has its own flags, and each call adds them to absl's FLAGS only
    while it runs."""
    assert hdge_eval.FLAGS["config"] is not hdge_train.FLAGS["config"]
    assert hdge_eval.FLAGS["config"].default.endswith("base.py")
    assert hdge_train.FLAGS["config"].default is None
    status, _, stderr = cli.call(hdge_eval, ["--config=", "--workdir=w"])
    assert status == 1 and stderr.endswith(
        "hdge-eval: error: --config=: expected a path, got an empty or blank value.\n"
    )
    assert "config" not in flags.FLAGS


def test_help_lists_the_programs_flags():
    status, stdout, _ = cli.call(hdge_sample, ["--help"])
    assert status == 1  # absl's --help
    for name in hdge_sample.FLAGS:
        assert f"--{name}" in stdout or f"--[no]{name}" in stdout, name


# Each program once as the command a user runs (hdge-train's is test_console.py's).


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory hdge-eval, hdge-export and hdge-sample read quickly: an
    untrained model for mnist5k's 32x32 images and a config.json of a small
    evaluation."""
    run = tmp_path_factory.mktemp("tiny_run")
    config = mnist5k_hdge.get_config()
    config.data.validation_size = 64
    config.eval.update(ood_sets=("noise",), max_examples=64)
    config.eval.pgd.num_examples = 0
    (run / "config.json").write_text(config.to_json_best_effort())
    HDGEClassifier(tiny_backbone(10, (32, 32, 1)), queue_size=64).save(
        run / "model.keras"
    )
    return run


# (console script, its arguments, the start of a line it prints, a file it writes);
# hdge-reproduce's tiny run is test_reproduce.py's (in process; its runs are
# processes of their own): here, its --help.
COMMANDS = {
    "hdge-eval": (
        ["--workdir={run}"],
        "Report: {run}/eval/report.md (",
        "eval/report.json",
    ),
    "hdge-export": (["--workdir={run}"], None, "export/saved_model/saved_model.pb"),
    "hdge-sample": (
        ["--workdir={run}", "--steps=1", "--num=1"],
        "{run}/samples/conditional_fresh.png",
        "samples/conditional_fresh.npy",
    ),
    "hdge-bench": (
        [
            "--network=small_cnn",
            "--image_size=8",
            "--classes=4",
            "--batch_sizes=8",
            "--queue_size=32",
            "--modes=ce",
            "--precisions=float32",
            "--warmup=1",
            "--repeats=1",
            "--noeval",
            "--nopgd",
            "--noepoch",
            "--noautotune",
            "--recipes=",
            "--noisolate",
            "--matmul_size=64",
            "--output={run}/bench.json",
        ],
        "Wrote {run}/bench.json",
        "bench.json",
    ),
}


@pytest.mark.slow  # a process importing TensorFlow each
@pytest.mark.parametrize("command", COMMANDS)
def test_each_program_runs_as_its_command(tiny_run, command):
    args, line, written = COMMANDS[command]
    done = _command(command, *(a.format(run=tiny_run) for a in args), cwd=tiny_run)
    assert done.returncode == 0, done.stderr[-3000:]
    if line is not None:
        lines = done.stdout.splitlines()
        assert any(x.startswith(line.format(run=tiny_run)) for x in lines), lines
    assert (tiny_run / written).is_file()


@pytest.mark.slow
def test_a_commands_help_shows_its_docstring_and_flags(tmp_path):
    """absl's --help (exit status 1) of the console script: the program's
    docstring and its flags."""
    from hdge_tf.bin import hdge_reproduce

    done = _command("hdge-reproduce", "--help", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert hdge_reproduce.__doc__.splitlines()[0] in done.stdout
    for name in hdge_reproduce.FLAGS:
        assert f"--{name}" in done.stdout or f"--[no]{name}" in done.stdout, name


def _command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script `name` (installed beside this Python) on `args`."""
    return subprocess.run(
        [str(Path(sys.executable).with_name(name)), *args],
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
