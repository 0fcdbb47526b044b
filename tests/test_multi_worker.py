"""Two worker processes on 127.0.0.1 train with MultiWorkerMirroredStrategy."""

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_identical(tmp_path):
    tmp = tmp_path
    ports = [str(p) for p in _free_ports(2)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "multi_worker_worker.py"),
                *ports,
                str(i),
                str(tmp / f"run{i}"),
                str(tmp / f"state{i}.npz"),
            ],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-3000:]
    states = [np.load(tmp_path / f"state{i}.npz") for i in range(2)]
    assert set(states[0].files) == set(states[1].files)
    for key in states[0].files:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    # The smoke run: 96 images in global batches of 32, two epochs.
    assert int(states[0]["iterations"]) == 6
    assert int(states[0]["pointer"]) == (2 * 96) % 128
    assert not np.allclose(states[0]["queue"], 0)
    # Only the chief (worker 0) writes the run's outputs.
    assert (tmp_path / "run0" / "model.keras").is_file()
    assert (tmp_path / "run0" / "checkpoints" / "checkpoint").is_file()
    assert not (tmp_path / "run1").exists()
