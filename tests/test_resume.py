"""A run killed with SIGKILL mid-training and started again with the same command
ends bitwise where an uninterrupted run does: weights, queue, replay buffer,
optimizer step and history; its final metrics to float32 rounding."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import hdge_tf  # noqa: F401  (registers the classes model.keras holds)
from hdge_tf.resume_check import _flatten  # nested metrics as {"a.b": value}

REPO = Path(__file__).resolve().parents[1]
# Fields that depend on when a run was started or stopped, not on what it computed.
_TIMING = {"train_seconds_this_call", "resumed_from_epoch"}


def _command(workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hdge_tf.bin.hdge_train",
        "--config=configs/mnist5k_hdge.py",
        f"--workdir={workdir}",
        "--config.deterministic=True",
        "--config.data.limit_train=448",
        "--config.data.validation_size=64",
        "--config.data.limit_test=64",
        "--config.backbone.filters=(4,8)",
        "--config.backbone.dropout=0.2",
        "--config.loss.queue_size=256",
        "--config.loss.px_sgld_weight=0.1",
        "--config.loss.sgld_steps=2",
        "--config.loss.replay_buffer_size=96",
        "--config.train.epochs=5",
        "--config.train.batch_size=32",
        "--config.eval.ood_sets=('noise',)",
    ]


def _rows(workdir: Path) -> list[dict]:
    with open(workdir / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """An uninterrupted run, and one killed in epoch 3 and started again."""
    tmp = tmp_path
    straight, killed = tmp / "straight", tmp / "killed"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The uninterrupted run and the one to kill at once: each spends much of its
    # time importing TensorFlow and tracing.
    log = tmp / "straight.log"
    with open(log, "w") as stderr:
        done = subprocess.Popen(
            _command(straight), cwd=REPO, env=env, stdout=stderr, stderr=stderr
        )
    process = subprocess.Popen(
        _command(killed),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 600
        # Kill during epoch 3: its checkpoint 2 exists, checkpoint 3 does not yet.
        while not (killed / "checkpoints" / "ckpt-2.index").exists():
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert not (killed / "metrics.json").exists()
        assert not (killed / "checkpoints" / "ckpt-5.index").exists()
        assert done.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        for running in (done, process):
            if running.poll() is None:
                running.kill()
                running.wait()

    resumed = subprocess.run(
        _command(killed), cwd=REPO, env=env, capture_output=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (straight, killed)]
    assert metrics[1]["resumed_from_epoch"] >= 2
    for key in _TIMING:
        for m in metrics:
            m.pop(key)
    # Weights, queue, buffer and history are bitwise equal (below); the final
    # evaluation in a fresh process may differ in the last float32 bit under
    # oneDNN (seen: test_loss 7.836587 vs 7.836586), so metrics match to 1e-6.
    flat = [_flatten(m) for m in metrics]
    assert flat[0].keys() == flat[1].keys()
    for key, value in flat[0].items():
        if isinstance(value, float):
            assert flat[1][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
        else:
            assert flat[1][key] == value, key
    assert _rows(straight) == _rows(killed)
    models = [keras.saving.load_model(d / "model.keras") for d in (straight, killed)]
    assert models[0].replay_buffer is not None
    for a, b in zip(models[0].weights, models[1].weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(models[1].queue.pointer.numpy()) == int(models[0].queue.pointer.numpy())
