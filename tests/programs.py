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


def _prepare(tmp: Path) -> None:
    # A group whose files failed fails only its own tests (`outcomes`).
    for g in _GROUPS.values():
        (tmp / g.name).mkdir()
        try:
            if g.prepare is not None:
                g.prepare(tmp / g.name)
        except Exception as error:
            (tmp / g.name / "prepare_error").write_text(repr(error))


@background.job(prepare=_prepare)
def program_runs(tmp: Path) -> tuple[Path, dict[str, dict[str, Outcome] | Exception]]:
    cases = []
    for g in _GROUPS.values():
        if (tmp / g.name / "prepare_error").exists():
            continue
        for run, program, args in g.runs:
            args = [arg.format(tmp=tmp / g.name) for arg in args]
            cases.append({"name": f"{g.name}.{run}", "program": program, "args": args})
    cases.sort(key=lambda case: _ORDER.index(case["program"]))
    (tmp / "cases.json").write_text(json.dumps(cases))
    (tmp / "out").mkdir()
    driver = [sys.executable, str(REPO / "tests" / "cli_driver.py")]
    done = subprocess.run(
        [*driver, str(tmp / "cases.json"), str(tmp / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = {}
    for g in _GROUPS.values():
        error = tmp / g.name / "prepare_error"
        if error.exists():
            results[g.name] = RuntimeError(f"preparing {g.name}: {error.read_text()}")
            continue
        results[g.name] = {
            run: Outcome(
                int(_read(tmp, g, run, "status")),
                _read(tmp, g, run, "stdout"),
                _read(tmp, g, run, "stderr"),
            )
            for run, _, _ in g.runs
        }
    return tmp, results


def _read(tmp: Path, g: Group, run: str, what: str) -> str:
    return (tmp / "out" / f"{g.name}.{run}.{what}").read_text()


def directory(background_result, g: Group) -> Path:
    """The group's directory, where its command lines ran."""
    return background_result(program_runs)[0] / g.name


def outcomes(background_result, g: Group) -> dict[str, Outcome]:
    """{run name: Outcome} of the group's command lines; its prepare step's error
    is raised here."""
    result = background_result(program_runs)[1][g.name]
    if isinstance(result, Exception):
        raise result
    return result
