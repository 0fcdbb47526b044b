"""Runs a plan's jobs with `hdge_tf.process_runner`, each its command line in a
process of its own, dependencies first, `parallel` at a time, with one progress
line per job. Finished jobs (their record exists) are skipped; a failed job's
dependents are not started; the rest go on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from hdge_tf.process_runner import BLOCKED, DONE, Outcome, Task, run_tasks
from hdge_tf.reproduce.plan import Job

# A job finished by an earlier call, beside the runner's DONE, FAILED and BLOCKED.
CACHED = "cached"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def describe(job: Job) -> str:
    """A finished job's headline numbers, for its progress line."""
    record = json.loads(job.record.read_text())
    metrics = record["metrics"]
    parts = [f"accuracy {100 * metrics['accuracy']:.1f}%", f"ECE {metrics['ece']:.3f}"]
    log_px = metrics["auroc"].get("log_px", {})
    if log_px:
        name, value = next(iter(log_px.items()))
        parts.append(f"log p(x) AUROC {name} {value:.3f}")
    # Conditional samples after the longest chains, from each start.
    for start, by_steps in record.get("samples", {}).get("conditional", {}).items():
        final = by_steps[max(by_steps, key=int)]
        parts.append(f"{start} samples' class agreement {final['class_agreement']:.2f}")
    if "ceiling" in record:
        parts.append(
            f"judge agreement on test {record['ceiling']['class_agreement']:.3f}"
        )
    return ", ".join(parts)


def thread_env(threads: int) -> dict[str, str]:
    """The environment variables that limit a run to `threads` TF threads (none
    for 0: TF's default)."""
    if threads <= 0:
        return {}
    names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
    return dict.fromkeys(names, str(threads))


def run_jobs(
    jobs: list[Job],
    parallel: int = 1,
    threads: int = 0,
    progress: Callable[[str], None] = print,
) -> dict[str, str]:
    """Runs `jobs`; returns {job name: DONE, CACHED, FAILED or BLOCKED}."""
    total, status, began, durations = len(jobs), {}, time.time(), []

    def report(job: Job, text: str) -> None:
        left = total - len(status)
        eta = ""
        if durations and left:
            per_job = sum(durations) / len(durations)
            eta = f", about {_duration(per_job * left / parallel)} left"
        progress(
            f"[{len(status)}/{total}] {job.name}: {text} "
            f"({_duration(time.time() - began)} elapsed{eta})"
        )

    todo, by_name = [], {job.name: job for job in jobs}
    for job in jobs:
        if job.finished:
            status[job.name] = CACHED
            report(job, f"finished earlier, skipped: {describe(job)}")
        else:
            todo.append(
                Task(
                    job.name,
                    job.command,
                    tuple(job.after),
                    thread_env(threads),
                    job.log,
                    check=lambda job=job: job.finished,
                )
            )

    def finished(task: Task, outcome: Outcome) -> None:
        job = by_name[task.name]
        status[job.name] = outcome.status
        if outcome.status == BLOCKED:
            report(job, "not run: a run it needs failed")
        elif outcome.status == DONE:
            durations.append(outcome.seconds)
            report(job, f"{describe(job)} in {_duration(outcome.seconds)}")
        else:
            report(job, f"FAILED (exit {outcome.exit_code}); see {Path(job.log)}")

    run_tasks(
        todo,
        parallel,
        done=[n for n, s in status.items() if s == CACHED],
        on_finish=finished,
    )
    return status
