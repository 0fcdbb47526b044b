"""The trainer end to end on a tiny mnist5k run: outputs, resume, errors, the CLI."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from hdge_tf import data as data_lib
from hdge_tf import training
from hdge_tf.configs import mnist5k_hdge

REPO = Path(__file__).resolve().parents[1]


def smoke_config(epochs: int = 1):
    config = mnist5k_hdge.get_config()
    config.data.limit_train = 96
    config.data.limit_test = 64
    config.backbone.filters = (4, 8)
    config.backbone.dense_units = 16
    config.loss.queue_size = 128
    config.train.epochs = epochs
    config.train.batch_size = 32
    config.train.warmup_steps = 0
    config.train.validate = False
    return config


def _history_rows(workdir):
    with open(workdir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_train_writes_outputs_and_resumes(tmp_path):
    metrics = training.train(smoke_config(epochs=1), tmp_path)
    for name in ("config.json", "metrics.json", "model.keras", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "checkpoint").is_file()
    assert len(_history_rows(tmp_path)) == 1
    assert metrics["epochs"] == 1 and metrics["resumed_from_epoch"] == 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    # The saved model reproduces the reported test metrics.
    model = keras.saving.load_model(tmp_path / "model.keras")
    x_test, y_test = data_lib.load_arrays("mnist5k", "test", limit=64)
    result = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    np.testing.assert_allclose(metrics["test_accuracy"], result["accuracy"], atol=1e-6)
    np.testing.assert_allclose(metrics["test_ce"], result["ce"], rtol=1e-4)
    assert 0 <= metrics["ood_auroc_log_px_digits"] <= 1
    assert int(model.queue.pointer.numpy()) == 96 % 128

    # Asking for more epochs continues from the checkpoint: optimizer steps and the
    # queue pointer carry on instead of restarting.
    metrics = training.train(smoke_config(epochs=2), tmp_path)
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 2
    assert [r["epoch"] for r in _history_rows(tmp_path)] == ["0", "1"]
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 2 * 3
    assert int(model.queue.pointer.numpy()) == (2 * 96) % 128

    # A finished workdir is evaluated, not retrained.
    before = model.get_weights()
    metrics = training.train(smoke_config(epochs=2), tmp_path)
    assert metrics["resumed_from_epoch"] == 2
    after = keras.saving.load_model(tmp_path / "model.keras").get_weights()
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    training.train(smoke_config(epochs=1), tmp_path)
    for shard in (tmp_path / "checkpoints").glob("ckpt-1.data-*"):
        shard.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="Cannot resume from checkpoint .*ckpt-1"):
        training.train(smoke_config(epochs=2), tmp_path)


def test_checkpoint_from_another_model_is_a_clear_error(tmp_path):
    training.train(smoke_config(epochs=1), tmp_path)
    config = smoke_config(epochs=2)
    config.backbone.filters = (4, 8, 16)
    with pytest.raises(RuntimeError, match="different model/config"):
        training.train(config, tmp_path)


def test_bad_config_values_name_the_problem(tmp_path):
    config = smoke_config()
    config.data.name = "no_such_dataset"
    with pytest.raises(ValueError, match="no_such_dataset"):
        training.train(config, tmp_path / "a")
    config = smoke_config()
    config.train.batch_size = 256
    with pytest.raises(ValueError, match="batch_size=256 exceeds loss.queue_size=128"):
        training.train(config, tmp_path / "b")
    config = smoke_config()
    config.train.optimizer = "rmsprop"
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        training.train(config, tmp_path / "c")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hdge_tf.bin.hdge_train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_applies_overrides_and_rejects_unknown_keys(tmp_path):
    overrides = [
        "--config=configs/mnist5k_hdge.py",
        f"--workdir={tmp_path}",
        "--config.data.limit_train=64",
        "--config.data.limit_test=32",
        "--config.backbone.filters=(4,)",
        "--config.loss.queue_size=64",
        "--config.loss.formulation=reference",
        "--config.train.epochs=1",
        "--config.train.batch_size=32",
        "--config.eval.ood_sets=()",
    ]
    result = _cli(*overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["loss"]["formulation"] == "reference"
    assert config["backbone"]["filters"] == [4]
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.formulation == "reference" and model.queue.size == 64

    result = _cli(*overrides, "--config.train.no_such_key=1")
    assert result.returncode != 0
    assert "no_such_key" in result.stderr
