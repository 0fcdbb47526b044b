"""One process per run directory: `RUN/.lock`, holding the owner's PID and host.

Two trainers on one workdir would interleave history.csv rows and overwrite each
other's checkpoints, so `hold(run_dir)` refuses a workdir whose lock names a live
process. A lock left behind by a process that died (SIGKILL, a crash, a reboot) is
taken over with a warning: its PID no longer exists on this host. A lock written on
another host cannot be checked from here and is always respected.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from absl import logging

LOCK_NAME = ".lock"
# An empty lock this young is a process between creating and writing it.
_WRITING_SECONDS = 5.0


class WorkdirInUseError(RuntimeError):
    """Another live process holds the run directory's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _read(path: Path) -> dict:
    """The lock's {"pid", "host"}; {} for a lock cut short while being written."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _create(path: Path) -> bool:
    """Writes our lock unless one exists. The lock is written whole to a file of
    our own first and then hard-linked into place, which fails if a lock exists:
    of two processes starting together exactly one wins, and the other never
    reads a lock its owner has not finished writing."""
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    own = path.with_name(f"{path.name}.{os.getpid()}")
    own.write_text(owner)
    try:
        os.link(own, path)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(owner)
    finally:
        own.unlink(missing_ok=True)
    return True


def _live_holder(path: Path, owner: dict) -> str | None:
    """ "PID N on host H" of a lock whose owner may be alive, else None (stale)."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int):
        # Empty while its owner is between creating and writing it; else debris.
        young = _age(path) < _WRITING_SECONDS
        return "a process that is starting (PID not yet written)" if young else None
    if host != socket.gethostname() or _alive(pid):
        return f"PID {pid} on host {host}"
    return None


def acquire(run_dir: str | Path) -> Path:
    """Takes `run_dir`'s lock (creating the directory); returns the lock file.

    Raises WorkdirInUseError naming the holder's PID and host while it is alive.
    """
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock removed by us, then raced for
        if _create(path):
            return path
        owner = _read(path)
        holder = _live_holder(path, owner)
        if holder is not None:
            raise WorkdirInUseError(
                f"The workdir {path.parent} is in use by {holder} (lock file "
                f"{path}); wait for that run to finish or stop it, or pass another "
                "--workdir."
            )
        logging.warning(
            "Taking over the stale lock %s of PID %s on host %s: that process no "
            "longer exists.",
            path,
            owner.get("pid"),
            owner.get("host"),
        )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise WorkdirInUseError(f"Could not take the lock {path}; try again.")


def release(path: Path) -> None:
    """Removes the lock if it is still ours."""
    if _read(path).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def hold(run_dir: str | Path) -> Iterator[Path]:
    """`acquire` for the duration of a `with` block."""
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
