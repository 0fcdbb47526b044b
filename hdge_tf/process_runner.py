"""Tasks in fresh processes, several at a time, each after the tasks it needs.

hdge-bench times each configuration in a process of its own (its own peak RSS, a
clean TensorFlow), and hdge-reproduce runs its training runs `parallel` at a
time with a TF thread count each; both go through `run_tasks`.

A task's target is either a Python call (`Call`), run in a new process started
with multiprocessing's spawn method through a one-worker ProcessPoolExecutor per
task (so a process that dies takes no other task with it), or a program's command
line, run with subprocess: a program is a process already, and a spawned Python
around it would first import this process's main module (TensorFlow included)
for nothing. A task's environment is this process's plus its `env`; its standard
output and error are appended to its `log`. A task none of whose `after` tasks
failed starts once they are done; the others are not run (BLOCKED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

DONE, FAILED, BLOCKED = "done", "failed", "blocked"

_SPAWN = multiprocessing.get_context("spawn")


@dataclasses.dataclass(frozen=True)
class Call:
    """`function(*args)` in a new process: both must pickle, and `function` must
    be importable by name (a module-level function)."""

    function: Callable[..., Any]
    args: tuple = ()


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work. `target` is a `Call` or a command line; `check`, when
    given, must also hold for a task that exited with status 0 to count as done
    (e.g. the file it writes exists)."""

    name: str
    target: Call | tuple[str, ...]
    after: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    log: Path | None = None
    check: Callable[[], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """DONE, FAILED or BLOCKED, with the exit status (None when the task did not
    run or its process died without one), a `Call`'s return value and the
    seconds it ran."""

    status: str
    exit_code: int | None = None
    result: Any = None
    seconds: float = 0.0


def run_tasks(
    tasks: Sequence[Task],
    parallel: int = 1,
    done: Iterable[str] = (),
    on_finish: Callable[[Task, Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Runs `tasks`, at most `parallel` at once, each after its `after` tasks
    (names of `tasks`, or of `done`: finished before); starts them in list order
    as they become ready. Calls `on_finish` as each one ends or is blocked, and
    returns {task name: Outcome}."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}.")
    finished = set(done)
    names = {task.name for task in tasks} | finished
    for task in tasks:
        unknown = set(task.after) - names
        if unknown:
            raise ValueError(
                f"Task {task.name} waits for unknown tasks {sorted(unknown)}."
            )
    outcomes: dict[str, Outcome] = {}
    pending = list(tasks)
    running: dict[futures.Future, tuple[Task, float]] = {}

    def end(task: Task, outcome: Outcome) -> None:
        outcomes[task.name] = outcome
        if outcome.status == DONE:
            finished.add(task.name)
        if on_finish is not None:
            on_finish(task, outcome)

    with futures.ThreadPoolExecutor(parallel) as commands:
        while pending or running:
            for task in list(pending):
                if any(
                    name in outcomes and outcomes[name].status != DONE
                    for name in task.after
                ):
                    pending.remove(task)
                    end(task, Outcome(BLOCKED))
                elif len(running) < parallel and finished.issuperset(task.after):
                    pending.remove(task)
                    running[_start(task, commands)] = (task, time.time())
            if not running:
                if pending:
                    names = [task.name for task in pending]
                    raise RuntimeError(f"Tasks wait on each other: {names}")
                break
            ready, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in [f for f in running if f in ready]:
                task, started = running.pop(future)
                end(task, _outcome(task, future, time.time() - started))
    return outcomes


def _start(task: Task, commands: futures.Executor) -> futures.Future:
    if task.log is not None:
        task.log.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(task.target, Call):
        return commands.submit(_run_command, task.target, task.env, task.log)
    executor = futures.ProcessPoolExecutor(1, mp_context=_SPAWN)
    # The worker process is spawned inside submit(): it starts with the task's
    # environment and output, so even what it prints while it imports this
    # process's main module (TensorFlow's notices) goes to the log.
    with _inherited(task.env, task.log):
        future = executor.submit(_call, task.target)
    executor.shutdown(wait=False)  # its one worker ends after the call
    return future


def _outcome(task: Task, future: futures.Future, seconds: float) -> Outcome:
    try:
        exit_code, result = future.result()
    except futures.BrokenExecutor:  # the process died mid-call
        return Outcome(FAILED, None, None, seconds)
    ok = exit_code == 0 and (task.check is None or task.check())
    return Outcome(DONE if ok else FAILED, exit_code, result, seconds)


@contextlib.contextmanager
def _inherited(env: Mapping[str, str], log: Path | None) -> Iterator[None]:
    """For a child started in this block: `env` added to this process's
    environment, and file descriptors 1 and 2 on `log` (appended), both put back
    when the block ends."""
    saved_env = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    saved_fds = []
    try:
        if log is not None:
            _flush_output()
            with open(log, "ab") as out:
                for fd in (1, 2):
                    saved_fds.append((fd, os.dup(fd)))
                    os.dup2(out.fileno(), fd)
        yield
    finally:
        _flush_output()
        for fd, saved in saved_fds:
            os.dup2(saved, fd)
            os.close(saved)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _flush_output() -> None:
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__} - {None}:
        stream.flush()


def _run_command(
    command: tuple[str, ...], env: Mapping[str, str], log: Path | None
) -> tuple[int, None]:
    with open(log, "ab") if log is not None else contextlib.nullcontext() as out:
        process = subprocess.run(
            command,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            env={**os.environ, **env},
        )
    return process.returncode, None


def _call(call: Call) -> tuple[int, Any]:
    """In the new process: the call as (exit status, return value); an exception
    is printed (to the task's log) and is exit status 1, as an uncaught
    exception is for a Python program."""
    try:
        return 0, call.function(*call.args)
    except SystemExit as exit_:
        code = exit_.code
        return (code if isinstance(code, int) else int(code is not None)), None
    except BaseException:
        traceback.print_exc()
        return 1, None
    finally:
        _flush_output()
