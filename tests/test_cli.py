"""Every hdge-* program ends a user error with one line on stderr, `PROGRAM: error:
MESSAGE`, and exit status 1, without a traceback unless --verbosity=1 (bin/cli.py).

The bad inputs a new user tries: one process runs every case (tests/programs.py),
so TensorFlow is imported once, not per case.
"""

import os
import socket
from pathlib import Path

import keras
import programs
import pytest
from conftest import SMOKE_OVERRIDES, smoke_flags, tiny_backbone

from hdge_tf import HDGEClassifier, run_config, run_lock
from hdge_tf.configs import mnist5k_hdge

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


def _prepare(tmp: Path) -> None:
    """The files the cases point at."""
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
    run_lock.acquire(tmp / "in_use")
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


# Every case in one process (tests/programs.py), as if each were a new one.
CLI_CASES = programs.group(
    "cli_cases",
    [
        (f"{module}.{name}", module, args)
        for module, name, args, _ in [
            *CASES,
            (*VERBOSE_CASE, None),
            (*VERBOSE_CONFIG_CASE, None),
        ]
    ],
    prepare=_prepare,
)


@pytest.fixture
def outcomes(background_result) -> dict[tuple[str, str], tuple[int, str]]:
    """{(program module, case): (exit status, stderr)} of every case."""
    tmp = programs.directory(background_result, CLI_CASES)
    return {
        tuple(run.split(".", 1)): (o.status, o.stderr.replace(str(tmp), "{tmp}"))
        for run, o in programs.outcomes(background_result, CLI_CASES).items()
    }


@pytest.mark.slow
@pytest.mark.background(programs.program_runs)
@pytest.mark.parametrize(
    ("module", "name", "message"),
    [(module, name, message) for module, name, _, message in CASES],
    ids=[f"{PROGRAMS[module]}-{name}" for module, name, _, _ in CASES],
)
def test_a_user_error_ends_with_one_line(outcomes, module, name, message):
    status, stderr = outcomes[module, name]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.splitlines()[-1]
    assert last.startswith(f"{PROGRAMS[module]}: error: "), stderr[-3000:]
    assert message in last
    assert status == 1


@pytest.mark.slow
@pytest.mark.background(programs.program_runs)
@pytest.mark.parametrize(("module", "name"), list(NOT_WRITTEN))
def test_a_user_error_writes_nothing(background_result, outcomes, module, name):
    assert outcomes[module, name][0] == 1
    tmp = programs.directory(background_result, CLI_CASES)
    assert not (tmp / NOT_WRITTEN[module, name]).exists()


@pytest.mark.slow
@pytest.mark.background(programs.program_runs)
def test_verbosity_1_adds_the_traceback(outcomes):
    status, stderr = outcomes[VERBOSE_CASE[:2]]
    assert status == 1
    assert "Traceback" in stderr
    assert "FileNotFoundError: No model file {tmp}/empty/model.keras" in stderr


@pytest.mark.slow
@pytest.mark.background(programs.program_runs)
def test_verbosity_1_keeps_a_config_file_traceback(outcomes):
    status, stderr = outcomes[VERBOSE_CONFIG_CASE[:2]]
    assert status == 1
    assert "Traceback" in stderr
    assert "has no attribute 'get_config'" in stderr
