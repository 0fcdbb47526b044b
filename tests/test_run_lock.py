"""One process per run directory: a live holder is refused by name, a dead one's
lock is taken over. The holder is a real second process."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from hdge_tf import run_lock

# Takes the lock, says so, and holds it until killed; imports no TensorFlow.
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[2])
run_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
run_lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), run_lock.__file__],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "held\n"
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_live_holder_is_refused_by_pid_and_host(tmp_path, holder):
    with pytest.raises(run_lock.WorkdirInUseError) as info:
        run_lock.acquire(tmp_path)
    assert str(info.value) == (
        f"The workdir {tmp_path} is in use by PID {holder.pid} on host "
        f"{socket.gethostname()} (lock file {tmp_path}/.lock); wait for that run to "
        "finish or stop it, or pass another --workdir."
    )
    # The refused process left the holder's lock as it was.
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path, holder, caplog):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock.hold(tmp_path) as path:
        assert json.loads(path.read_text()) == {
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        assert (
            f"Taking over the stale lock {path} of PID {holder.pid} on host "
            f"{socket.gethostname()}: that process no longer exists." in caplog.text
        )
        with pytest.raises(run_lock.WorkdirInUseError, match=r"in use by PID \d+"):
            run_lock.acquire(tmp_path)  # ours now, and alive
    assert not path.exists()  # released on leaving the block


def test_a_lock_from_another_host_is_respected(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(run_lock.WorkdirInUseError, match="PID 1 on host elsewhere"):
        run_lock.acquire(tmp_path)
