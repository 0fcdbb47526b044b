"""Runs the subprocess part of the slow tests on worker threads, beside the
in-process tests.

A subprocess test spends its time in other processes (importing TensorFlow,
tracing, training) while pytest's own process waits, and pytest's own tests leave
one of the two cores mostly idle. So a test names that part a job and marks itself
`@pytest.mark.background(job)`. At the session's first test every selected test's
job starts, one at a time while in-process tests run, two at a time once only
marked tests are left (they run last); each test takes its job's result, or the
error it raised, with `background_result(job)`.

A job is a function of one argument, a fresh directory for its files. Its
`prepare` step, if any, runs first on the main thread (for work in this
process: saving a model for a program to load); the job's function then runs on
a worker thread and must only start processes and read files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_WAIT_SECONDS = 1800
# (job name, when it started in seconds since the jobs were submitted, seconds it
# ran) in the order jobs finished; `pytest --durations` lists them
# (`pytest_terminal_summary`).
TIMINGS: list[tuple[str, float, float]] = []
# When the first marked test started (the unmarked ones are done), likewise.
WIDENED: list[float] = []


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    run: Callable[[Path], Any]
    prepare: Callable[[Path], None] | None = None

    @property
    def name(self) -> str:
        return f"{self.run.__module__}.{self.run.__name__}"


def job(
    run: Callable[[Path], Any] | None = None, *, prepare=None
) -> Job | Callable[[Callable[[Path], Any]], Job]:
    """`@job` or `@job(prepare=fn)`: the decorated function becomes a Job."""
    if run is None:
        return lambda fn: Job(fn, prepare)
    return Job(run, prepare)


def _jobs_of(item: pytest.Item) -> list[Job]:
    return [m.args[0] for m in item.iter_markers("background")]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marked tests last (stable otherwise): their jobs then have the whole
    # in-process part of the session to finish in.
    items.sort(key=lambda item: bool(_jobs_of(item)))


class _Runner:
    """Jobs in submission order, one at a time until `widen`, then two.

    A job starts when a slot is free and every job submitted before it has
    started (a semaphore would let a thread that just finished a job take the
    next slot ahead of one already waiting, and a job could wait out the session).
    """

    def __init__(self, jobs: list[Job], root: Path):
        self._lock = threading.Lock()
        self._free_slots = 1
        self._widened = False
        self._waiting: collections.deque = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(2, "background-job")
        self.futures: dict[Job, concurrent.futures.Future] = {}
        self._submitted = time.perf_counter()
        for j in jobs:
            directory = root / j.name  # module and function: unique
            directory.mkdir()
            self.futures[j] = concurrent.futures.Future()
            try:
                if j.prepare is not None:
                    j.prepare(directory)
            except Exception as error:  # fails the job's tests, not the session
                self.futures[j].set_exception(error)
                continue
            with self._lock:
                self._waiting.append((j, directory))
            self._start_waiting()

    def _start_waiting(self) -> None:
        with self._lock:
            while self._free_slots and self._waiting:
                self._free_slots -= 1
                self._pool.submit(self._run, *self._waiting.popleft())

    def _run(self, j: Job, directory: Path) -> None:
        future = self.futures[j]
        start = time.perf_counter()
        try:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(j.run(directory))
                except BaseException as error:
                    future.set_exception(error)
        finally:
            end = time.perf_counter()
            TIMINGS.append((j.name, start - self._submitted, end - start))
            with self._lock:
                self._free_slots += 1
            self._start_waiting()

    def widen(self) -> None:
        with self._lock:
            if self._widened:
                return
            self._widened = True
            self._free_slots += 1
            WIDENED.append(time.perf_counter() - self._submitted)
        self._start_waiting()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.widen()
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="session", autouse=True)
def _background_runner(request: pytest.FixtureRequest, tmp_path_factory):
    jobs: list[Job] = []
    for item in request.session.items:
        jobs += [j for j in _jobs_of(item) if j not in jobs]
    runner = _Runner(jobs, tmp_path_factory.mktemp("background"))
    yield runner
    runner.close()


@pytest.fixture
def background_result(_background_runner: _Runner) -> Callable[[Job], Any]:
    """`background_result(job)`: the job's return value; its error is raised here."""
    _background_runner.widen()

    def result(j: Job) -> Any:
        if j not in _background_runner.futures:
            raise LookupError(f"{j.name} is not a job of a selected test")
        return _background_runner.futures[j].result(timeout=_WAIT_SECONDS)

    return result


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """With `--durations`: how long each background job ran (its tests' own
    durations count only the wait for it)."""
    if config.option.durations is None or not TIMINGS:
        return
    terminalreporter.section("background jobs (started after submission, ran)")
    if WIDENED:
        terminalreporter.write_line(f"{WIDENED[0]:8.1f}s the first marked test")
    for name, started, seconds in sorted(TIMINGS, key=lambda t: -t[2]):
        terminalreporter.write_line(f"{started:8.1f}s {seconds:8.2f}s {name}")
