"""Stopping a training run: SIGINT and SIGTERM sent to a real hdge-train process
end it with one line and the shell's exit status, and the same command resumes it;
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

import background
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


@background.job
def interrupted_and_resumed(tmp: Path) -> dict[int, dict]:
    """One hdge-train per signal, at once: each runs until its checkpoint 2 exists
    and gets the signal; what it left is noted; then the same command resumes it."""
    runs = {signum: {"workdir": tmp / signum.name} for signum in SIGNALS}
    processes = {signum: _start(run["workdir"]) for signum, run in runs.items()}
    deadline = time.time() + 600
    waiting = dict(processes)
    try:
        while waiting:
            for signum, process in list(waiting.items()):
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read()[-3000:])
                if (runs[signum]["workdir"] / "checkpoints" / "ckpt-2.index").exists():
                    process.send_signal(signum)
                    del waiting[signum]
            assert time.time() < deadline
            time.sleep(0.02)
    finally:  # a run that ended early or hung leaves no process behind
        for process in waiting.values():
            process.kill()
    for signum, process in processes.items():
        run, workdir = runs[signum], runs[signum]["workdir"]
        run["status"], run["stderr"] = process.wait(timeout=120), process.stderr.read()
        run["checkpointed"] = _checkpointed_epoch(workdir)
        run["left"] = [p.name for p in (workdir / "metrics.json", workdir / ".lock")]
        run["left"] = [name for name in run["left"] if (workdir / name).exists()]
    resumed = {signum: _start(run["workdir"]) for signum, run in runs.items()}
    for signum, process in resumed.items():
        runs[signum]["resumed"] = process.wait(timeout=600), process.stderr.read()
    return runs


@pytest.mark.slow
@pytest.mark.background(interrupted_and_resumed)
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signum.name)
def test_a_signal_ends_training_in_one_line_and_the_run_resumes(
    background_result, signum
):
    run = background_result(interrupted_and_resumed)[signum]
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

    status, stderr = run["resumed"]
    assert status == 0, stderr[-3000:]
    metrics = json.loads((run["workdir"] / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == done and metrics["epochs"] == EPOCHS
    with open(run["workdir"] / "history.csv") as f:
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
