"""hdge-* command lines from every test module, run in one background process.

Each program run started from a test pays ~5 s of CPU to import TensorFlow before
it does anything, and the suite is CPU-bound on two cores. So a test module
registers its command lines as a group (`group(...)`, at import), each with the
files it needs (`prepare`, run in this process at the session's start), and
every group's command lines run in one process, tests/cli_driver.py, as the
background job `program_runs`. A test marked with it takes its group's
outcomes with `outcomes(background_result, GROUP)`, and the directory they ran
in with `directory(background_result, GROUP)`.

A command line runs the program's own `run()` with sys.argv set, as its console
script would; what needs a fresh process (start-up notices, signals, locks,
kernels chosen at import) keeps starting one.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import background

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    started: float  # time.time() when the command line began
    seconds: float


def run_in_one_process(
    cases: Sequence[tuple[str, str, Sequence[str]]], tmp: Path, timeout: float = 1200
) -> dict[str, Outcome]:
    """{name: Outcome} of command lines `(name, program module, args)`, run in
    order in one tests/cli_driver.py process; its files go to `tmp`."""
    listed = [{"name": n, "program": p, "args": list(a)} for n, p, a in cases]
    (tmp / "cases.json").write_text(json.dumps(listed))
    out = tmp / "out"
    out.mkdir()
    driver = [sys.executable, str(REPO / "tests" / "cli_driver.py")]
    done = subprocess.run(
        [*driver, str(tmp / "cases.json"), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return {
        name: Outcome(
            int((out / f"{name}.status").read_text()),
            (out / f"{name}.stdout").read_text(),
            (out / f"{name}.stderr").read_text(),
            **json.loads((out / f"{name}.time.json").read_text()),
        )
        for name, _, _ in cases
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """Command lines `(name, program module of hdge_tf.bin, args)`; "{tmp}" in an
    argument is the group's directory, where `prepare` put its files."""

    name: str
    runs: tuple[tuple[str, str, tuple[str, ...]], ...]
    prepare: Callable[[Path], None] | None = None


_GROUPS: dict[str, Group] = {}
# The programs, in the order the driver runs their command lines: hdge-bench
# last, as it sets Keras's precision policies while it measures (and restores it).
_ORDER = ("hdge_train", "hdge_eval", "hdge_sample", "hdge_export", "hdge_bench")


def group(
    name: str,
    runs: Sequence[tuple[str, str, Sequence[str]]],
    prepare: Callable[[Path], None] | None = None,
) -> Group:
    """Registers a test module's command lines; `name` names its directory."""
    if name in _GROUPS:
        raise ValueError(f"Two groups of program runs named {name!r}")
    for _, program, _ in runs:
        if program not in _ORDER:
            raise ValueError(f"{program!r} is not one of {_ORDER}")
    _GROUPS[name] = Group(
        name, tuple((n, p, tuple(args)) for n, p, args in runs), prepare
    )
    return _GROUPS[name]


# Each group's prepare step's error, which fails only that group's tests.
_PREPARE_ERRORS: dict[str, Exception] = {}


def _prepare(tmp: Path) -> None:
    for g in _GROUPS.values():
        (tmp / g.name).mkdir()
        try:
            if g.prepare is not None:
                g.prepare(tmp / g.name)
        except Exception as error:
            _PREPARE_ERRORS[g.name] = error


@background.job(prepare=_prepare)
def program_runs(tmp: Path) -> tuple[Path, dict[str, dict[str, Outcome]]]:
    ready = [g for g in _GROUPS.values() if g.name not in _PREPARE_ERRORS]
    cases = [
        (f"{g.name}.{run}", program, [a.format(tmp=tmp / g.name) for a in args])
        for g in ready
        for run, program, args in g.runs
    ]
    cases.sort(key=lambda case: _ORDER.index(case[1]))
    outcomes = run_in_one_process(cases, tmp)
    return tmp, {
        g.name: {run: outcomes[f"{g.name}.{run}"] for run, _, _ in g.runs}
        for g in ready
    }


def directory(background_result, g: Group) -> Path:
    """The group's directory, where its command lines ran."""
    return background_result(program_runs)[0] / g.name


def outcomes(background_result, g: Group) -> dict[str, Outcome]:
    """{run name: Outcome} of the group's command lines; its prepare step's error
    is raised here."""
    groups = background_result(program_runs)[1]
    if g.name in _PREPARE_ERRORS:
        raise _PREPARE_ERRORS[g.name]
    return groups[g.name]
