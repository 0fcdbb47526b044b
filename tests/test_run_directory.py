"""What the trainer does to a run directory it is given: nothing before the config
has validated, never a finished run's model replaced by an older one, a damaged
history.csv or newest checkpoint repaired from what is intact, and one trainer at a
time (two real hdge-train processes)."""

import csv
import math
import re
import shutil
import socket
from pathlib import Path

import pytest
from conftest import smoke_config, start_hdge_train

from hdge_tf import run_lock, training

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("config.json", "metrics.json", "model.keras", "history.csv")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A smoke run trained for 2 epochs (checkpoints 1 and 2 kept)."""
    path = tmp_path_factory.mktemp("finished") / "run"
    training.train(smoke_config(epochs=2), path)
    return path


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run for one test to change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _outputs(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in OUTPUTS}


def _history_epochs(run: Path) -> list[str]:
    with open(run / "history.csv") as f:
        return [row["epoch"] for row in csv.DictReader(f)]


def _with(key: str, value):
    config = smoke_config(epochs=2)
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    return config


BAD_VALUES = [
    ("train.select", "best", "train.select='best': expected one of"),
    ("train.epochs", -1, "train.epochs=-1: expected an integer >= 1."),
    ("train.epochs", 0, "train.epochs=0: expected an integer >= 1."),
    ("train.learning_rate", math.nan, "train.learning_rate=nan: expected a finite"),
    ("train.decay_epochs", (5, -1), "train.decay_epochs=(5, -1): expected a tuple"),
    ("eval.ood_sets", ("noise", "no_such_set"), "eval.ood_sets: Unknown OOD set"),
    ("eval.scores", ("log_px", "energyy"), "eval.scores: Unknown OOD scores"),
    ("train.init_from", "/no/such/run", "train.init_from=/no/such/run: no file"),
    ("loss.temperature", 0.0, "loss.temperature=0.0: expected a finite number > 0."),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_a_bad_value_changes_nothing(run, tmp_path, key, value, message):
    before = _outputs(run)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        training.train(_with(key, value), run)
    assert _outputs(run) == before
    assert not (run / ".lock").exists()
    # Nor is a new workdir created for a config that cannot run.
    with pytest.raises(ValueError):
        training.train(_with(key, value), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_an_init_from_that_does_not_load_is_named_before_the_workdir_exists(tmp_path):
    (tmp_path / "garbage.keras").write_bytes(b"garbage")
    config = smoke_config(epochs=1)
    config.train.init_from = str(tmp_path / "garbage.keras")
    with pytest.raises(
        ValueError,
        match=f"^train.init_from={tmp_path}/garbage.keras: {tmp_path}/garbage.keras "
        "is not a .keras model archive",
    ):
        training.train(config, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_fewer_epochs_than_done_refuse_to_replace_the_model(run):
    before = _outputs(run)
    with pytest.raises(
        ValueError,
        match=r"^train.epochs=1, but the run in .*run has already trained 2 epochs; "
        r"pass --config.train.epochs=2 to evaluate it again",
    ):
        training.train(smoke_config(epochs=1), run)
    assert _outputs(run) == before


def test_a_damaged_history_and_newest_checkpoint_resume_from_what_is_intact(
    run, caplog
):
    # As left by two trainers at once, then a kill while writing checkpoint 2.
    history = (run / "history.csv").read_text().splitlines(keepends=True)
    (run / "history.csv").write_text("".join([history[0], *history, "2,0.1"]))
    for shard in (run / "checkpoints").glob("ckpt-2.data-*"):
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])

    metrics = training.train(smoke_config(epochs=3), run)
    checkpoints = run / "checkpoints"
    assert (
        f"The newest checkpoint {checkpoints}/ckpt-2 cannot be read" in caplog.text
        and f"resuming from {checkpoints}/ckpt-1, the newest intact one" in caplog.text
    )
    assert "history.csv had 2 damaged line(s)" in caplog.text
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs"] == 3
    assert _history_epochs(run) == ["0", "1", "2"]

    # With no intact checkpoint left, the error says how to start over.
    for shard in checkpoints.glob("ckpt-*.data-*"):
        shard.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"ckpt-3 \(nor from any older one\)"):
        training.train(smoke_config(epochs=4), run)


@pytest.mark.slow
def test_two_trainers_on_one_workdir_one_refuses(tmp_path):
    """Two hdge-train processes on one workdir at once."""
    workdir = tmp_path / "run"
    processes = [start_hdge_train(workdir) for _ in range(2)]
    outcomes = [(p.wait(timeout=600), p.stderr.read(), p.pid) for p in processes]
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses == [0, 1], [stderr[-2000:] for _, stderr, _ in outcomes]
    (_, _, winner_pid), (_, stderr, _) = sorted(outcomes, key=lambda o: o[0])
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"hdge-train: error: The workdir {workdir} is in use by PID "
        f"{winner_pid} on host {socket.gethostname()} (lock file "
        f"{workdir}/.lock); wait for that run to finish or stop it, or pass another "
        "--workdir."
    )
    assert _history_epochs(workdir) == ["0"]
    # The winner let go of the workdir: it has no lock, and the next run gets it.
    assert not (workdir / ".lock").exists()
    with run_lock.hold(workdir):
        assert (workdir / ".lock").exists()
