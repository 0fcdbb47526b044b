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

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_WAIT_SECONDS = 1800
# (job name, seconds it ran) in the order jobs finished; `pytest --durations`
# lists them (`pytest_terminal_summary`).
TIMINGS: list[tuple[str, float]] = []


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
    """Jobs in submission order on two threads; the second only after `widen`."""

    def __init__(self, jobs: list[Job], root: Path):
        self._slots = threading.Semaphore(1)
        self._widened = False
        self._pool = concurrent.futures.ThreadPoolExecutor(2, "background-job")
        self.futures = {}
        for j in jobs:
            directory = root / j.name  # module and function: unique
            directory.mkdir()
            try:
                if j.prepare is not None:
                    j.prepare(directory)
            except Exception as error:  # fails the job's tests, not the session
                self.futures[j] = concurrent.futures.Future()
                self.futures[j].set_exception(error)
                continue
            self.futures[j] = self._pool.submit(self._run, j, directory)

    def _run(self, j: Job, directory: Path) -> Any:
        with self._slots:
            start = time.perf_counter()
            try:
                return j.run(directory)
            finally:
                TIMINGS.append((j.name, time.perf_counter() - start))

    def widen(self) -> None:
        if not self._widened:
            self._widened = True
            self._slots.release()

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
    terminalreporter.section("background jobs")
    for name, seconds in sorted(TIMINGS, key=lambda t: -t[1]):
        terminalreporter.write_line(f"{seconds:8.2f}s {name}")
