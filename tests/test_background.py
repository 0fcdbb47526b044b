"""tests/background.py: a job's result or error reaches the tests marked with it,
and those tests run after every unmarked one."""

from pathlib import Path

import background
import pytest


def _broken_prepare(tmp: Path) -> None:
    raise RuntimeError("prepare broke")


@background.job(prepare=_broken_prepare)
def never_runs(tmp: Path) -> None:
    raise AssertionError("a job whose prepare step failed must not run")


def _write_input(tmp: Path) -> None:
    (tmp / "input.txt").write_text("prepared")


@background.job(prepare=_write_input)
def reads_its_input(tmp: Path) -> tuple[str, str]:
    return tmp.name, (tmp / "input.txt").read_text()


@pytest.mark.background(reads_its_input)
def test_a_job_gets_its_own_directory_after_its_prepare_step(background_result):
    name = "test_background.reads_its_input"
    assert background_result(reads_its_input) == (name, "prepared")


@pytest.mark.background(never_runs)
def test_a_failed_prepare_step_fails_only_its_tests(background_result):
    with pytest.raises(RuntimeError, match="prepare broke"):
        background_result(never_runs)


@pytest.mark.background(reads_its_input)
def test_marked_tests_run_after_every_unmarked_one(request, background_result):
    marked = [
        bool(list(item.iter_markers("background"))) for item in request.session.items
    ]
    assert marked == sorted(marked)
    with pytest.raises(LookupError, match="not a job of a selected test"):
        background_result(background.Job(_write_input))
