"""Runs a plan's jobs as subprocesses, dependencies first, `parallel` at a time,
with one progress line per job. Finished jobs (their record exists) are skipped;
a failed job's dependents are not started; the rest go on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from hdge_tf.reproduce.plan import Job

DONE, CACHED, FAILED, BLOCKED = "done", "cached", "failed", "blocked"


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
    """The environment of a job limited to `threads` TF threads (0: TF's default)."""
    env = dict(os.environ)
    if threads > 0:
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_jobs(
    jobs: list[Job],
    parallel: int = 1,
    threads: int = 0,
    progress: Callable[[str], None] = print,
    poll_seconds: float = 0.5,
) -> dict[str, str]:
    """Runs `jobs`; returns {job name: DONE, CACHED, FAILED or BLOCKED}."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}.")
    names = {job.name for job in jobs}
    for job in jobs:
        unknown = set(job.after) - names
        if unknown:
            raise ValueError(
                f"Job {job.name} waits for unknown jobs {sorted(unknown)}."
            )
    total, status, began = len(jobs), {}, time.time()
    pending, running, durations = [], {}, []

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

    for job in jobs:
        if job.finished:
            status[job.name] = CACHED
            report(job, f"finished earlier, skipped: {describe(job)}")
        else:
            pending.append(job)
    while pending or running:
        for job in list(pending):
            waits = [status.get(name) for name in job.after]
            if any(s in (FAILED, BLOCKED) for s in waits):
                pending.remove(job)
                status[job.name] = BLOCKED
                report(job, "not run: a run it needs failed")
            elif len(running) < parallel and all(s in (DONE, CACHED) for s in waits):
                pending.remove(job)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                log = open(job.log, "ab")
                process = subprocess.Popen(
                    job.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=thread_env(threads),
                )
                running[job.name] = (job, process, time.time(), log)
        if not running:
            if pending:  # waiting on nothing that can finish
                raise RuntimeError(
                    f"Jobs wait on each other: {[j.name for j in pending]}"
                )
            break
        time.sleep(poll_seconds)
        for name, (job, process, started, log) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            log.close()
            del running[name]
            seconds = time.time() - started
            if code == 0 and job.finished:
                durations.append(seconds)
                status[name] = DONE
                report(job, f"{describe(job)} in {_duration(seconds)}")
            else:
                status[name] = FAILED
                report(job, f"FAILED (exit {code}); see {Path(job.log)}")
    return status
