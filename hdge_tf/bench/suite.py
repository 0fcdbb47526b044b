"""The benchmark suite: each configuration timed (in a fresh process with
`isolate`), then the epoch check and tf.data autotuning on a trainer config passed
in, then the targets checked.

A fresh process per configuration gives each its own peak RSS and a clean TF state;
the child runs `python -m hdge_tf.bench JOB_FILE OUT` (bench/__main__.py) on a job
(see `run_job`) pickled, so a trainer config reaches it exactly (tuples, types).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import ml_collections
import tensorflow as tf
from absl import logging

from hdge_tf import hardware
from hdge_tf.bench.config import BenchConfig, TimingOptions, build_model
from hdge_tf.bench.epochs import (
    EPOCH_CHECK_EPOCHS,
    FIT_END_EPOCHS,
    autotune_fit,
    epoch_overhead,
)
from hdge_tf.bench.targets import checks
from hdge_tf.bench.timing import (
    peak_rss_mb,
    random_batch,
    release_models,
    time_evaluation,
    time_pgd,
    time_train_steps,
)
from hdge_tf.hardware import precision_policy

_DEFAULT_TIMING = TimingOptions()  # frozen, so one instance serves every call


def run_configuration(
    config: BenchConfig,
    options: TimingOptions = _DEFAULT_TIMING,
    evaluate: bool = False,
    pgd: bool = False,
    seed: int = 0,
) -> dict:
    """Times one configuration in this process.

    Returns the configuration's fields plus the train-step timing, peak RSS after
    building (`peak_rss_build_mb`) and after the timed steps (`peak_rss_train_mb`),
    and with `evaluate`/`pgd` the `eval`/`pgd` timings.
    """
    keras.utils.set_random_seed(seed)
    logging.info("Benchmarking %s (%s).", config.name, config.network)
    images, labels = random_batch(
        config.batch_size, config.image_shape, config.num_classes, seed
    )
    result = dataclasses.asdict(config)
    result["model_queue_size"] = config.model_kwargs()["queue_size"]
    with precision_policy(config.precision):
        model = build_model(config, seed)
        result["jit_compile"] = bool(model.step_jit_compile)  # as resolved
        result["peak_rss_build_mb"] = peak_rss_mb()
        result.update(
            time_train_steps(model, images, labels, options.warmup, options.repeats)
        )
        result["peak_rss_train_mb"] = peak_rss_mb()
        result["step_extra_rss_mb"] = (
            result["peak_rss_train_mb"] - result["peak_rss_build_mb"]
        )
        result["eval"] = result["pgd"] = None
        if evaluate and options.eval_images:
            eval_images, _ = random_batch(
                options.eval_images, config.image_shape, config.num_classes, seed + 1
            )
            result["eval"] = time_evaluation(
                model, eval_images, options.eval_batch_size, 1, options.eval_repeats
            )
        if pgd and options.pgd_steps:
            result["pgd"] = time_pgd(
                model, images, labels, options.pgd_steps, 1, options.eval_repeats
            )
    del model
    release_models()
    return result


def run_job(job: dict) -> dict:
    """Runs a job in this process: {"kind": "configuration", "config":
    BenchConfig fields, "options": TimingOptions fields, "evaluate": bool, "pgd":
    bool}, {"kind": "epoch", "config": trainer ConfigDict, "epochs": int,
    "warmup": int} or {"kind": "autotune", "config": trainer ConfigDict,
    "autotune": bool, "epochs": int}."""
    if job["kind"] == "configuration":
        return run_configuration(
            BenchConfig(**job["config"]),
            TimingOptions(**job["options"]),
            evaluate=job["evaluate"],
            pgd=job["pgd"],
        )
    if job["kind"] == "epoch":
        return epoch_overhead(job["config"], epochs=job["epochs"], warmup=job["warmup"])
    if job["kind"] == "autotune":
        return autotune_fit(job["autotune"], job["config"], epochs=job["epochs"])
    raise ValueError(f"Unknown benchmark job kind {job['kind']!r}.")


def run_isolated(job: dict) -> dict:
    """Runs `job` (see `run_job`) in a fresh Python process; returns its result."""
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out = Path(tmp) / "job.pkl", Path(tmp) / "result.json"
        job_file.write_bytes(pickle.dumps(job))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        process = subprocess.run(
            [sys.executable, "-m", "hdge_tf.bench", str(job_file), str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        if process.returncode != 0 or not out.exists():
            # A trainer config would fill the screen; its job's kind says which.
            shown = {
                k: v
                for k, v in job.items()
                if not isinstance(v, ml_collections.ConfigDict)
            }
            raise RuntimeError(
                f"Benchmark job {shown} failed (exit {process.returncode}):\n"
                f"{process.stderr[-3000:]}"
            )
        return json.loads(out.read_text())


def run_benchmark(
    configs: Sequence[BenchConfig],
    options: TimingOptions = _DEFAULT_TIMING,
    evaluate: bool = True,
    pgd: bool = True,
    epoch: bool = True,
    isolate: bool = True,
    autotune: bool = True,
    fit_config: ml_collections.ConfigDict | None = None,
) -> dict:
    """Times every configuration (each in a fresh process with `isolate`), then
    the epoch check and `fit` with tf.data autotuning on and off, both on
    `fit_config` (a trainer config; hdge-bench passes configs/mnist5k_hdge.py);
    returns the JSON-able report with its `checks`.

    Evaluation and PGD depend on the network and precision, not on the training
    loss, so they run on the first mode of each precision and batch size.
    """
    if (epoch or autotune) and fit_config is None:
        raise ValueError(
            "The epoch check and the autotuning comparison train a model: pass "
            "fit_config (e.g. hdge_tf.configs.mnist5k_hdge.get_config()), or "
            "epoch=False, autotune=False."
        )
    run = run_isolated if isolate else run_job
    results, seen = [], set()
    for config in configs:
        group = (config.precision, config.batch_size)
        first = group not in seen
        seen.add(group)
        job = {
            "kind": "configuration",
            "config": dataclasses.asdict(config),
            "options": dataclasses.asdict(options),
            "evaluate": evaluate and first,
            "pgd": pgd and first,
        }
        result = run(job)
        result["isolated"] = isolate
        results.append(result)
        logging.info(
            "%s: %.4f s/step, %.1f images/s, %d trace(s), peak RSS %.0f MB.",
            config.name,
            result["median_step_seconds"],
            result["images_per_second"],
            result["traces"],
            result["peak_rss_train_mb"],
        )
    epoch_result = None
    if epoch:
        epoch_result = run(
            {
                "kind": "epoch",
                "config": fit_config,
                "epochs": EPOCH_CHECK_EPOCHS,
                "warmup": options.warmup,
            }
        )
    autotune_results = [
        run(
            {
                "kind": "autotune",
                "config": fit_config,
                "autotune": enabled,
                "epochs": FIT_END_EPOCHS,
            }
        )
        for enabled in ((True, False) if autotune else ())
    ]
    return {
        "environment": environment(),
        "options": dataclasses.asdict(options),
        "isolated": isolate,
        "configurations": results,
        "epoch": epoch_result,
        "autotune": autotune_results,
        "checks": checks(results, epoch_result),
    }


def environment() -> dict:
    """Versions and hardware, to read the numbers against."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "cpu_native_bf16": hardware.cpu_has_native_bf16(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
