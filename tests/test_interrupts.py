"""Stopping a training run: SIGINT and SIGTERM sent to a real hdge-train process
end it with one line and the shell's exit status, and the same command resumes it
(one run, stopped by each signal in turn);
a full disk (a real one: a small tmpfs) ends it naming the workdir, with the
earlier checkpoints intact."""

import contextlib
import errno
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import keras
import pytest
from conftest import smoke_config, start_hdge_train

from hdge_tf import interrupts, training

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 8  # ~0.3 s each: a signal sent after epoch 2 lands mid-run
# The signals and the exit status a shell reports for each.
SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _start(workdir: Path) -> subprocess.Popen:
    return start_hdge_train(workdir, "--config.train.select=last", epochs=EPOCHS)


def _checkpointed_epoch(workdir: Path) -> int:
    state = (workdir / "checkpoints" / "checkpoint").read_text()
    return int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state).group(1))


def _stop_at_checkpoint(workdir: Path, checkpoint: int, signum) -> dict:
    """Starts hdge-train on `workdir`, sends it `signum` once its checkpoint
    `checkpoint` exists, and notes what the stopped run left."""
    process = _start(workdir)
    deadline = time.time() + 600
    try:
        path = workdir / "checkpoints" / f"ckpt-{checkpoint}.index"
        while not path.exists():
            if process.poll() is not None:
                raise AssertionError(process.stderr.read()[-3000:])
            assert time.time() < deadline
            time.sleep(0.02)
        process.send_signal(signum)
    except BaseException:  # a run that ended early or hung leaves no process behind
        process.kill()
        raise
    status = process.wait(timeout=120)
    left = [p for p in (workdir / "metrics.json", workdir / ".lock") if p.exists()]
    return {
        "status": status,
        "stderr": process.stderr.read(),
        "checkpointed": _checkpointed_epoch(workdir),
        "left": [p.name for p in left],
    }


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory) -> dict:
    """One run stopped by each signal in turn, each time resumed by the same
    command: SIGINT once its checkpoint 2 exists, SIGTERM once the resumed process
    has written a checkpoint of its own; then the same command finishes it."""
    workdir, stops = tmp_path_factory.mktemp("interrupted") / "run", {}
    checkpoint = 2
    for signum in SIGNALS:
        stops[signum] = _stop_at_checkpoint(workdir, checkpoint, signum)
        checkpoint = stops[signum]["checkpointed"] + 1
    final = _start(workdir)
    return {
        "workdir": workdir,
        "stops": stops,
        "finished": (final.wait(timeout=600), final.stderr.read()),
    }


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signum.name)
def test_a_signal_ends_training_in_one_line(interrupted_and_resumed, signum):
    run = interrupted_and_resumed["stops"][signum]
    assert run["status"] == SIGNALS[signum], run["stderr"][-3000:]
    assert "Traceback" not in run["stderr"]
    last = run["stderr"].splitlines()[-1]
    match = re.fullmatch(
        r"hdge-train: interrupted in epoch (\d+); run the same command to resume",
        last,
    )
    assert match, run["stderr"][-3000:]
    # The epoch in progress: the one after the last checkpoint, which is whole.
    done = run["checkpointed"]
    assert int(match.group(1)) == done + 1 and 2 <= done < EPOCHS
    assert run["left"] == []  # no metrics.json, no lock


@pytest.mark.slow
def test_the_same_command_resumes_after_each_signal(interrupted_and_resumed):
    """Two stops and two resumes leave one history row per epoch, in order."""
    result = interrupted_and_resumed
    stops = [result["stops"][signum]["checkpointed"] for signum in SIGNALS]
    assert stops[0] < stops[1]  # the second stop came after progress of its own
    status, stderr = result["finished"]
    assert status == 0, stderr[-3000:]
    metrics = json.loads((result["workdir"] / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == stops[1] and metrics["epochs"] == EPOCHS
    with open(result["workdir"] / "history.csv") as f:
        epochs = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert epochs == [str(e) for e in range(EPOCHS)]


@contextlib.contextmanager
def _small_disk(path: Path, size: str):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        # Lazily: the interrupted fit's TensorBoard and CSV writers still hold files.
        subprocess.run(["umount", "-l", str(path)], check=True)


class _FillDisk(keras.callbacks.Callback):
    """Fills the disk at the end of epoch 2, before its checkpoint is written."""

    def __init__(self, filler: Path):
        super().__init__()
        self.filler = filler

    def on_epoch_end(self, epoch, logs=None):
        if epoch != 1:
            return
        with open(self.filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC


def test_a_full_disk_ends_training_naming_the_workdir(tmp_path, caplog):
    with _small_disk(tmp_path / "disk", "8m") as disk:
        run, filler = disk / "run", disk / "filler"
        config = smoke_config(epochs=3)
        config.train.select = "last"
        with pytest.raises(interrupts.DiskFullError) as info:
            training.train(config, run, callbacks=[_FillDisk(filler)])
        assert str(info.value) == (
            f"No space left on device writing to {run}: free space there (or move "
            "the run to a larger disk) and run the same command to resume; the "
            "checkpoints written before are intact."
        )
        assert _checkpointed_epoch(run) == 1

        filler.unlink()
        metrics = training.train(config, run)
        assert "cannot be read" not in caplog.text
        assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 3
