"""The process runner of hdge-bench and hdge-reproduce: order, parallelism,
failures and what they block, each task's environment and log; Python calls in
spawned processes (a result back, an exception, a process that dies)."""

import multiprocessing
import os
import sys

import pytest

from hdge_tf.process_runner import BLOCKED, DONE, FAILED, Call, Task, run_tasks


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def _run(tasks, **kwargs):
    seen = []
    outcomes = run_tasks(tasks, on_finish=lambda t, o: seen.append(t.name), **kwargs)
    return outcomes, seen


def test_commands_run_in_order_with_their_environment_and_log(tmp_path):
    """`after` holds even when listed first; each command sees its env; its
    output is appended to its log."""
    log = tmp_path / "logs" / "second.log"
    log.parent.mkdir()
    log.write_text("earlier\n")
    first = Task("first", _python(f"open({str(tmp_path / 'a')!r}, 'w').close()"))
    second = Task(
        "second",
        _python(
            "import os, pathlib\n"
            f"assert pathlib.Path({str(tmp_path / 'a')!r}).exists()\n"
            "print('value', os.environ['HDGE_RUNNER_TEST'])"
        ),
        after=("first",),
        env={"HDGE_RUNNER_TEST": "42"},
        log=log,
    )
    outcomes, seen = _run([second, first], parallel=2)
    assert seen == ["first", "second"]
    assert {n: (o.status, o.exit_code) for n, o in outcomes.items()} == {
        "first": (DONE, 0),
        "second": (DONE, 0),
    }
    assert log.read_text() == "earlier\nvalue 42\n"
    assert "HDGE_RUNNER_TEST" not in os.environ
    assert outcomes["second"].seconds > 0


def test_a_failure_blocks_what_waits_for_it_and_nothing_else(tmp_path):
    """Exit status 3, and an exit 0 whose `check` fails, are failures; their
    dependents (transitively) are blocked, never run; unrelated tasks run."""
    marker = tmp_path / "ran"
    touch = _python(f"open({str(marker)!r}, 'a').write('x')")
    tasks = [
        Task("bad", _python("raise SystemExit(3)")),
        Task("unchecked", _python("pass"), check=lambda: False),
        Task("child", touch, after=("bad",)),
        Task("grandchild", touch, after=("child",)),
        Task("other", touch, after=("done_before",)),
        Task("of_unchecked", touch, after=("unchecked",)),
    ]
    outcomes, seen = _run(tasks, done=["done_before"])
    assert {n: (o.status, o.exit_code) for n, o in outcomes.items()} == {
        "bad": (FAILED, 3),
        "unchecked": (FAILED, 0),
        "child": (BLOCKED, None),
        "grandchild": (BLOCKED, None),
        "other": (DONE, 0),
        "of_unchecked": (BLOCKED, None),
    }
    assert sorted(seen) == sorted(outcomes)
    assert marker.read_text() == "x"  # "other" only


def test_tasks_run_in_parallel(tmp_path):
    """Two tasks that each wait for the other to have started finish only when
    they run at the same time."""

    def waits_for(me: str, other: str) -> tuple[str, ...]:
        return _python(
            "import pathlib, time\n"
            f"pathlib.Path({str(tmp_path / me)!r}).touch()\n"
            "deadline = time.time() + 60\n"
            f"while not pathlib.Path({str(tmp_path / other)!r}).exists():\n"
            "    assert time.time() < deadline, 'not run in parallel'\n"
            "    time.sleep(0.05)"
        )

    outcomes, _ = _run(
        [Task("left", waits_for("l", "r")), Task("right", waits_for("r", "l"))],
        parallel=2,
    )
    assert [o.status for o in outcomes.values()] == [DONE, DONE]


def test_bad_arguments_are_errors_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    touch = _python(f"open({str(marker)!r}, 'w').close()")
    with pytest.raises(ValueError, match=r"unknown tasks \['nobody'\]"):
        run_tasks([Task("a", touch), Task("b", touch, after=("nobody",))])
    with pytest.raises(ValueError, match="parallel must be >= 1"):
        run_tasks([Task("a", touch)], parallel=0)
    assert not marker.exists()
    with pytest.raises(RuntimeError, match="wait on each other"):
        run_tasks([Task("a", touch, after=("b",)), Task("b", touch, after=("a",))])
    assert not marker.exists()


# Run in the spawned processes, which import this module by name.

if multiprocessing.parent_process() is not None:
    # Before the call starts (while the child unpickles it): in the log too.
    print("imported in the child", flush=True)


def report_environment(label: str) -> dict:
    print(f"child {label} says hello", flush=True)
    return {"label": label, "value": os.environ["HDGE_RUNNER_TEST"], "pid": os.getpid()}


def raise_value_error() -> None:
    raise ValueError("no such configuration")


def die() -> None:
    os._exit(7)


@pytest.mark.slow
def test_calls_run_in_spawned_processes(tmp_path):
    """A call's return value comes back from a process of its own that saw the
    task's env; an exception is exit status 1 with its traceback in the log; a
    process that dies is a failure without a status, and blocks its dependents."""
    logs = {name: tmp_path / f"{name}.log" for name in ("ok", "raises", "dies")}
    tasks = [
        Task(
            "ok",
            Call(report_environment, ("a",)),
            env={"HDGE_RUNNER_TEST": "7"},
            log=logs["ok"],
        ),
        Task("raises", Call(raise_value_error), log=logs["raises"]),
        Task("dies", Call(die), log=logs["dies"]),
        Task("after_dies", Call(report_environment, ("b",)), after=("dies",)),
    ]
    outcomes, _ = _run(tasks, parallel=2)
    ok = outcomes["ok"]
    assert (ok.status, ok.exit_code) == (DONE, 0)
    assert ok.result["label"] == "a" and ok.result["value"] == "7"
    assert ok.result["pid"] != os.getpid()
    assert logs["ok"].read_text().splitlines()[-2:] == [
        "imported in the child",
        "child a says hello",
    ]
    assert "HDGE_RUNNER_TEST" not in os.environ
    assert (outcomes["raises"].status, outcomes["raises"].exit_code) == (FAILED, 1)
    assert "ValueError: no such configuration" in logs["raises"].read_text()
    assert (outcomes["dies"].status, outcomes["dies"].exit_code) == (FAILED, None)
    assert outcomes["after_dies"].status == BLOCKED
